//! The request as a handler sees it: borrowed views into the head bytes the
//! core parsed, valid for one call (copy what a deferred answer needs).

use crate::ConnId;
use std::net::SocketAddr;

/// The HTTP version of a request.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Version {
    /// HTTP/1.0: no chunked framing, close unless `Connection: keep-alive`.
    Http10,
    /// HTTP/1.1.
    Http11,
}

/// A parsed request head. Method, target and header values borrow the
/// connection's input; nothing is copied to build it.
///
/// ```
/// use iomux_proto::http::{Request, Version};
/// let headers = [("Host", &b"example.com"[..]), ("Accept", b"*/*")];
/// let req = Request::new("GET", "/items/7?full=1&x", Version::Http11, &headers);
/// assert_eq!(req.path(), "/items/7");
/// assert_eq!(req.query(), Some("full=1&x"));
/// assert_eq!(req.query_param("full"), Some("1"));
/// assert_eq!(req.query_param("x"), Some(""));
/// assert_eq!(req.header("host"), Some(&b"example.com"[..]));
/// let params = [("id", "7")];
/// assert_eq!(req.with_params(&params).param("id"), Some("7"));
/// ```
#[derive(Debug, Clone, Copy)]
pub struct Request<'a> {
    method: &'a str,
    target: &'a str,
    path: &'a str,
    query: Option<&'a str>,
    version: Version,
    headers: Headers<'a>,
    params: &'a [(&'a str, &'a str)],
    body_length: Option<u64>,
    peer: Option<SocketAddr>,
    id: ConnId,
}

/// Where the header fields are: the parser's array, or pairs a caller made.
#[derive(Debug, Clone, Copy)]
enum Headers<'a> {
    Parsed(&'a [httparse::Header<'a>]),
    Pairs(&'a [(&'a str, &'a [u8])]),
}

impl<'a> Request<'a> {
    /// A request view made by hand (tests, and handlers that call others):
    /// `target` is split into path and query as the core does.
    pub fn new(
        method: &'a str,
        target: &'a str,
        version: Version,
        headers: &'a [(&'a str, &'a [u8])],
    ) -> Request<'a> {
        let (path, query) = split_target(target);
        let parsed = Request::parsed(
            method,
            target,
            path,
            query,
            version,
            &[],
            None,
            None,
            ConnId::new(0, 0),
        );
        Request {
            headers: Headers::Pairs(headers),
            ..parsed
        }
    }

    #[allow(clippy::too_many_arguments)]
    pub(crate) fn parsed(
        method: &'a str,
        target: &'a str,
        path: &'a str,
        query: Option<&'a str>,
        version: Version,
        headers: &'a [httparse::Header<'a>],
        body_length: Option<u64>,
        peer: Option<SocketAddr>,
        id: ConnId,
    ) -> Request<'a> {
        Request {
            method,
            target,
            path,
            query,
            version,
            headers: Headers::Parsed(headers),
            params: &[],
            body_length,
            peer,
            id,
        }
    }

    /// The method as sent (`GET`, `HEAD`, `POST`, ...; case-sensitive).
    /// A `HEAD` request answered by a `GET` route still says `HEAD`.
    pub fn method(&self) -> &'a str {
        self.method
    }

    /// Whether this is a `HEAD` request: whatever body the handler gives,
    /// the core sends only the head.
    pub fn is_head(&self) -> bool {
        self.method == "HEAD"
    }

    /// The request target as sent (origin-form `/p?q`, or absolute-form).
    pub fn target(&self) -> &'a str {
        self.target
    }

    /// The path, without the query; for an absolute-form target
    /// (`http://host/p`) the path part. Not percent-decoded.
    pub fn path(&self) -> &'a str {
        self.path
    }

    /// The query after `?`, not decoded; `None` without a `?`.
    pub fn query(&self) -> Option<&'a str> {
        self.query
    }

    /// The raw value of the first query parameter `name` (`a=1&b` gives
    /// `"1"` for `a` and `""` for `b`); not percent-decoded.
    pub fn query_param(&self, name: &str) -> Option<&'a str> {
        self.query?.split('&').find_map(|pair| {
            let (key, value) = pair.split_once('=').unwrap_or((pair, ""));
            (key == name).then_some(value)
        })
    }

    /// HTTP/1.0 or HTTP/1.1.
    pub fn version(&self) -> Version {
        self.version
    }

    /// The value of the first header field named `name` (any case).
    pub fn header(&self, name: &str) -> Option<&'a [u8]> {
        self.headers()
            .find(|(n, _)| n.eq_ignore_ascii_case(name))
            .map(|(_, v)| v)
    }

    /// Every header field in order, names as sent, values as bytes
    /// (RFC 9110 allows any octet but CR, LF and NUL in them).
    pub fn headers(&self) -> impl Iterator<Item = (&'a str, &'a [u8])> + 'a {
        let (parsed, pairs): (&'a [httparse::Header<'a>], &'a [(&'a str, &'a [u8])]) =
            match self.headers {
                Headers::Parsed(h) => (h, &[]),
                Headers::Pairs(p) => (&[], p),
            };
        parsed
            .iter()
            .map(|h| (h.name, h.value))
            .chain(pairs.iter().copied())
    }

    /// The value of path parameter `name` of the route that matched
    /// (`{id}` in `/items/{id}`); not percent-decoded.
    pub fn param(&self, name: &str) -> Option<&'a str> {
        self.params
            .iter()
            .find(|(n, _)| *n == name)
            .map(|(_, v)| *v)
    }

    /// Every path parameter, in the order of the pattern.
    pub fn params(&self) -> &'a [(&'a str, &'a str)] {
        self.params
    }

    /// The same request with `params` as its path parameters (routers).
    pub fn with_params<'b>(&self, params: &'b [(&'b str, &'b str)]) -> Request<'b>
    where
        'a: 'b,
    {
        Request { params, ..*self }
    }

    /// The body's announced length: `Some(0)` with no body, `None` when
    /// chunked (its length is known at its end).
    pub fn body_length(&self) -> Option<u64> {
        self.body_length
    }

    /// The client's address, where the engine knows it.
    pub fn peer_addr(&self) -> Option<SocketAddr> {
        self.peer
    }

    /// The connection the request came on.
    pub fn conn(&self) -> ConnId {
        self.id
    }
}

/// Split a target into path and query: origin-form at `?`; the path and
/// query of an absolute-form target (`http://host:port/path?q`, which a
/// server must accept, RFC 9112 §3.2.2; without a path it is `/`). Other
/// forms (`*`, authority-form, an authority cut by a `#`: a request target
/// has no fragment) come back whole as the path: it does not start with `/`,
/// so it matches no route and names no file. The one answer to "which path"
/// for routes and static files alike ([`Request::path`]).
pub(crate) fn split_target(target: &str) -> (&str, Option<&str>) {
    let mut path = target;
    if !target.starts_with('/') {
        if let Some((scheme, rest)) = target.split_once("://") {
            if scheme.eq_ignore_ascii_case("http") || scheme.eq_ignore_ascii_case("https") {
                path = match rest.find(['/', '?', '#']).map(|i| (i, rest.as_bytes()[i])) {
                    Some((i, b'/')) => &rest[i..],
                    Some((i, b'?')) => return ("/", Some(&rest[i + 1..])),
                    Some(_) => return (target, None),
                    None => "/",
                };
            }
        }
    }
    match memchr::memchr(b'?', path.as_bytes()) {
        Some(q) => (&path[..q], Some(&path[q + 1..])),
        None => (path, None),
    }
}

#[cfg(test)]
mod tests {
    use super::split_target;

    #[test]
    fn targets_split_into_path_and_query() {
        for (target, path, query) in [
            ("/a/b?x=1", "/a/b", Some("x=1")),
            ("/a/b", "/a/b", None),
            ("/?", "/", Some("")),
            ("/a#b", "/a#b", None),
            ("http://h/a?q", "/a", Some("q")),
            ("HTTPS://h:8443/a/", "/a/", None),
            ("http://h", "/", None),
            ("http://h?q", "/", Some("q")),
            ("http:///etc/x", "/etc/x", None),
            ("http://h/../x", "/../x", None),
            // Not origin- or absolute-form: whole, and not a path.
            ("http://h#/x", "http://h#/x", None),
            ("http://h#x?q", "http://h#x?q", None),
            ("file:///etc/passwd", "file:///etc/passwd", None),
            ("*", "*", None),
            ("example.com:80", "example.com:80", None),
            ("", "", None),
        ] {
            assert_eq!(split_target(target), (path, query), "{target:?}");
        }
    }
}
