//! What the load client sends and how it counts what comes back: requests are
//! rendered once, responses are counted as they stream in without allocating
//! per response.

use std::fmt;

/// The protocol the load client speaks.
///
/// ```
/// assert_eq!("echo".parse::<iomux_lab::load::Proto>().unwrap(), iomux_lab::load::Proto::Echo);
/// ```
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Proto {
    /// HTTP/1.x requests as [`HttpRequest`] describes them (`GET /plaintext`
    /// by default); responses counted by status, whatever their framing.
    Http,
    /// Messages of a fixed size, each expected back byte for byte.
    Echo,
}

impl std::str::FromStr for Proto {
    type Err = String;
    fn from_str(s: &str) -> Result<Proto, String> {
        match s {
            "http" => Ok(Proto::Http),
            "echo" => Ok(Proto::Echo),
            _ => Err(format!("unknown load protocol {s:?}; use http or echo")),
        }
    }
}

impl fmt::Display for Proto {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Proto::Http => "http",
            Proto::Echo => "echo",
        })
    }
}

/// The HTTP request the load client sends, rendered once before the run.
///
/// ```
/// let mut r = iomux_lab::load::HttpRequest::default();
/// r.method = "POST".into();
/// r.target = "/api/items?id=3".into();
/// r.headers.push(("Content-Type".into(), "application/json".into()));
/// r.body = Some(b"{}".to_vec());
/// let bytes = r.render("example:80").unwrap();
/// assert!(bytes.starts_with(b"POST /api/items?id=3 HTTP/1.1\r\nHost: example:80\r\n"));
/// assert!(bytes.ends_with(b"Content-Length: 2\r\n\r\n{}"));
/// ```
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct HttpRequest {
    /// The method, e.g. `GET`.
    pub method: String,
    /// Path and query, e.g. `/api/items?id=3`.
    pub target: String,
    /// The `Host` header's value; `None`: the server's address.
    pub host: Option<String>,
    /// Extra headers, in order.
    pub headers: Vec<(String, String)>,
    /// A body, sent with `Content-Length` (`None`: no body and no Content-Length).
    pub body: Option<Vec<u8>>,
    /// Send HTTP/1.0 instead of HTTP/1.1.
    pub http10: bool,
    /// Keep connections open between requests (`false`: `Connection: close`, one request per connection).
    pub keepalive: bool,
}

impl Default for HttpRequest {
    /// `GET /plaintext`, HTTP/1.1, keep-alive.
    fn default() -> HttpRequest {
        HttpRequest {
            method: "GET".into(),
            target: "/plaintext".into(),
            host: None,
            headers: Vec::new(),
            body: None,
            http10: false,
            keepalive: true,
        }
    }
}

/// Characters RFC 9110 allows in a token (method, header name).
fn is_token(s: &str) -> bool {
    !s.is_empty()
        && s.bytes()
            .all(|b| b.is_ascii_alphanumeric() || b"!#$%&'*+-.^_`|~".contains(&b))
}

impl HttpRequest {
    /// A HEAD request's responses carry no body, whatever their headers say.
    pub(crate) fn is_head(&self) -> bool {
        self.method.eq_ignore_ascii_case("HEAD")
    }

    /// Check the request and render it, with `default_host` as `Host` unless
    /// one is set. Errors name the part that is wrong.
    pub fn render(&self, default_host: &str) -> Result<Vec<u8>, String> {
        if !is_token(&self.method) {
            return Err(format!(
                "method {:?} is not a valid HTTP method (letters such as GET, POST, PUT)",
                self.method
            ));
        }
        if !self.target.starts_with('/')
            || self
                .target
                .bytes()
                .any(|b| b <= b' ' || b == 0x7f || b == b'#')
        {
            return Err(format!(
                "request target {:?} must start with '/' and hold no spaces, control characters or '#' (percent-encode them, e.g. %20)",
                self.target
            ));
        }
        let host = self.host.as_deref().unwrap_or(default_host);
        let mut out = Vec::with_capacity(128);
        let version = if self.http10 { "HTTP/1.0" } else { "HTTP/1.1" };
        out.extend_from_slice(format!("{} {} {version}\r\n", self.method, self.target).as_bytes());
        let has = |name: &str| {
            self.headers
                .iter()
                .any(|(n, _)| n.eq_ignore_ascii_case(name))
        };
        if !has("host") {
            out.extend_from_slice(format!("Host: {host}\r\n").as_bytes());
        }
        for (name, value) in &self.headers {
            if !is_token(name) {
                return Err(format!(
                    "header name {name:?} is not valid: write 'Name: value' with a name of letters, digits and -"
                ));
            }
            if value.bytes().any(|b| (b < b' ' && b != b'\t') || b == 0x7f) {
                return Err(format!(
                    "header {name}'s value holds a control character (a line break?): give each header its own flag"
                ));
            }
            for framing in ["content-length", "transfer-encoding"] {
                if name.eq_ignore_ascii_case(framing) {
                    return Err(format!(
                        "header {name} is set by the load client from the body; drop it and give the body as such"
                    ));
                }
            }
            if name.eq_ignore_ascii_case("connection") {
                return Err(
                    "header Connection is set by the load client; ask for keep-alive or not as such".into(),
                );
            }
            out.extend_from_slice(format!("{name}: {value}\r\n").as_bytes());
        }
        match (self.keepalive, self.http10) {
            (false, _) => out.extend_from_slice(b"Connection: close\r\n"),
            (true, true) => out.extend_from_slice(b"Connection: keep-alive\r\n"),
            (true, false) => {}
        }
        if let Some(body) = &self.body {
            out.extend_from_slice(format!("Content-Length: {}\r\n\r\n", body.len()).as_bytes());
            out.extend_from_slice(body);
        } else {
            out.extend_from_slice(b"\r\n");
        }
        Ok(out)
    }
}

/// One request rendered `depth + 1` times back to back, so that any run of up
/// to `depth` requests starting at any byte of a request is one contiguous
/// slice: a connection sends all it owes in one write.
#[derive(Debug, Clone)]
pub(crate) struct Requests {
    bytes: Vec<u8>,
    len: usize,
}

impl Requests {
    /// An HTTP request, already rendered.
    pub(crate) fn http(one: &[u8], depth: usize) -> Requests {
        Requests::repeat(one, depth)
    }

    /// An echo message of `size` bytes (printable, position-dependent, so a
    /// byte echoed out of place is noticed).
    pub(crate) fn echo(size: usize, depth: usize) -> Requests {
        let one: Vec<u8> = (0..size).map(|i| b'a' + (i % 26) as u8).collect();
        Requests::repeat(&one, depth)
    }

    fn repeat(one: &[u8], depth: usize) -> Requests {
        Requests {
            bytes: one.repeat(depth + 1),
            len: one.len(),
        }
    }

    /// Bytes of one request.
    pub(crate) fn len(&self) -> usize {
        self.len
    }

    /// One request.
    pub(crate) fn one(&self) -> &[u8] {
        &self.bytes[..self.len]
    }

    /// The next bytes to send when `owed` bytes are due, starting `phase`
    /// bytes into a request (`phase < len`, `owed <= depth * len`).
    pub(crate) fn next(&self, phase: usize, owed: usize) -> &[u8] {
        let end = (phase + owed).min(self.bytes.len());
        &self.bytes[phase..end]
    }
}

/// Why a response stream was rejected.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct ProtocolError(pub(crate) String);

/// The longest response head (status line and headers), chunk-size line or
/// trailer line accepted: a server cannot make the client buffer more.
const MAX_HEAD: usize = 16 * 1024;
/// The most headers a response may carry.
const MAX_HEADERS: usize = 100;
/// Headers parsed on the stack first (a response with more is parsed again).
const FEW_HEADERS: usize = 24;
/// The longest final response head remembered per connection, so that a
/// head identical to the last one is not parsed again.
const REMEMBERED_HEAD: usize = 512;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum HttpState {
    Head,
    /// Body bytes still to skip.
    Body(u64),
    /// A body that ends when the server closes the connection.
    UntilClose,
    ChunkSize,
    /// Chunk bytes plus the CRLF after them still to skip.
    ChunkData(u64),
    Trailer,
    /// A response announced the connection's close and is complete: nothing more may follow.
    Closed,
}

/// Counts HTTP/1.x responses in a byte stream: parses each head with
/// `httparse`, then skips the body by Content-Length, chunk sizes or up to
/// the connection's close. Interim (1xx) responses are skipped. Only an
/// incomplete head or line is copied (into a buffer reused for the
/// connection's life, at most [`MAX_HEAD`] bytes).
///
/// ```text
/// let mut c = HttpCounter::new(false);
/// let mut codes = vec![];
/// c.feed(b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nhi", |s| codes.push(s)).unwrap();
/// assert_eq!(codes, [200]);
/// ```
#[derive(Debug)]
pub(crate) struct HttpCounter {
    state: HttpState,
    status: u16,
    /// The current response closes the connection once complete.
    closing: bool,
    /// Responses answer HEAD requests (no body).
    head_requests: bool,
    partial: Vec<u8>,
    /// The last final response head (at most [`REMEMBERED_HEAD`] bytes) and
    /// what parsing it gave: servers send the same head again and again
    /// (until their Date changes), and the same bytes parse the same way.
    last_head: Vec<u8>,
    last_outcome: (u16, HttpState, bool),
    /// Body bytes (payload, without chunk framing) seen since the last
    /// [`HttpCounter::take_body_bytes`].
    body_bytes: u64,
}

impl HttpCounter {
    pub(crate) fn new(head_requests: bool) -> HttpCounter {
        HttpCounter {
            state: HttpState::Head,
            status: 0,
            closing: false,
            head_requests,
            partial: Vec::new(),
            last_head: Vec::new(),
            last_outcome: (0, HttpState::Head, false),
            body_bytes: 0,
        }
    }

    /// Body bytes seen since the last call (bodies of interim and of
    /// incomplete responses included: they were received).
    pub(crate) fn take_body_bytes(&mut self) -> u64 {
        std::mem::take(&mut self.body_bytes)
    }

    /// Forget any half-received response (after a reconnect).
    pub(crate) fn reset(&mut self) {
        self.state = HttpState::Head;
        self.closing = false;
        self.partial.clear();
    }

    /// A response that announced the connection's close is complete: the
    /// connection carries nothing more.
    pub(crate) fn closed(&self) -> bool {
        self.state == HttpState::Closed
    }

    /// Between responses, with nothing half-received.
    pub(crate) fn at_boundary(&self) -> bool {
        self.state == HttpState::Head && self.partial.is_empty()
    }

    /// The server closed the connection: completes a body delimited by the
    /// close (calling `done`). Returns whether the stream ended cleanly
    /// (between responses); a close in the middle of a response is not clean.
    pub(crate) fn end_of_stream(&mut self, mut done: impl FnMut(u16)) -> bool {
        match self.state {
            HttpState::UntilClose => {
                self.state = HttpState::Closed;
                done(self.status);
                true
            }
            HttpState::Closed => true,
            _ => self.at_boundary(),
        }
    }

    /// Consume `data`, calling `done(status)` for every complete response.
    pub(crate) fn feed(
        &mut self,
        data: &[u8],
        mut done: impl FnMut(u16),
    ) -> Result<(), ProtocolError> {
        if self.partial.is_empty() {
            let used = self.parse(data, &mut done)?;
            self.keep(&data[used..])
        } else {
            let mut buf = std::mem::take(&mut self.partial);
            buf.extend_from_slice(data);
            let used = self.parse(&buf, &mut done);
            let result = used.and_then(|used| {
                buf.drain(..used);
                if buf.len() > MAX_HEAD {
                    return Err(too_long());
                }
                Ok(())
            });
            self.partial = buf;
            result
        }
    }

    fn keep(&mut self, rest: &[u8]) -> Result<(), ProtocolError> {
        if rest.len() > MAX_HEAD {
            return Err(too_long());
        }
        self.partial.extend_from_slice(rest);
        Ok(())
    }

    /// A response is complete: report it, and stop if it closes the connection.
    fn complete(&mut self, done: &mut impl FnMut(u16)) {
        self.state = if self.closing {
            HttpState::Closed
        } else {
            HttpState::Head
        };
        done(self.status);
    }

    /// Parse as much of `buf` as is complete; returns the bytes consumed
    /// (the rest is an incomplete head, chunk-size line or trailer line).
    fn parse(&mut self, buf: &[u8], done: &mut impl FnMut(u16)) -> Result<usize, ProtocolError> {
        let mut at = 0;
        loop {
            let input = &buf[at..];
            match self.state {
                HttpState::Body(left) | HttpState::ChunkData(left) => {
                    let skip = left.min(input.len() as u64);
                    at += skip as usize;
                    self.body_bytes += match self.state {
                        HttpState::Body(_) => skip,
                        // The last two bytes of a chunk are its CRLF.
                        _ => skip.min(left.saturating_sub(2)),
                    };
                    let left = left - skip;
                    if left > 0 {
                        self.state = match self.state {
                            HttpState::Body(_) => HttpState::Body(left),
                            _ => HttpState::ChunkData(left),
                        };
                        return Ok(at);
                    }
                    if let HttpState::Body(_) = self.state {
                        self.complete(done);
                    } else {
                        self.state = HttpState::ChunkSize;
                    }
                }
                HttpState::UntilClose => {
                    self.body_bytes += input.len() as u64;
                    return Ok(buf.len());
                }
                HttpState::Closed => {
                    if input.is_empty() {
                        return Ok(at);
                    }
                    return Err(ProtocolError(
                        "bytes after a response that announced Connection: close".into(),
                    ));
                }
                HttpState::Head => {
                    if input.is_empty() {
                        return Ok(at);
                    }
                    if !self.last_head.is_empty() && input.starts_with(&self.last_head) {
                        at += self.last_head.len();
                        (self.status, self.state, self.closing) = self.last_outcome;
                        if self.state == HttpState::Body(0) {
                            self.complete(done);
                        }
                        continue;
                    }
                    let mut headers = [httparse::EMPTY_HEADER; FEW_HEADERS];
                    let mut many_headers;
                    let mut response = httparse::Response::new(&mut headers);
                    let mut parsed = response.parse(input);
                    if parsed == Err(httparse::Error::TooManyHeaders) {
                        // Rare: pay for the larger array only when needed.
                        many_headers = [httparse::EMPTY_HEADER; MAX_HEADERS];
                        response = httparse::Response::new(&mut many_headers);
                        parsed = response.parse(input);
                    }
                    match parsed {
                        Ok(httparse::Status::Complete(n)) => {
                            at += n;
                            let status = response.code.unwrap_or(0);
                            if status == 101 {
                                return Err(ProtocolError(
                                    "the server switched protocols (101): the load client speaks HTTP/1.x only".into(),
                                ));
                            }
                            if (100..200).contains(&status) {
                                // An interim response (100 Continue, 103 Early Hints): the final one follows.
                                continue;
                            }
                            self.status = status;
                            (self.state, self.closing) = framing(&response, self.head_requests)?;
                            self.last_head.clear();
                            if n <= REMEMBERED_HEAD {
                                self.last_head.extend_from_slice(&input[..n]);
                                self.last_outcome = (status, self.state, self.closing);
                            }
                            if self.state == HttpState::Body(0) {
                                self.complete(done);
                            }
                        }
                        Ok(httparse::Status::Partial) => return Ok(at),
                        Err(e) => {
                            return Err(ProtocolError(format!("malformed HTTP response: {e}")))
                        }
                    }
                }
                HttpState::ChunkSize => match httparse::parse_chunk_size(input) {
                    Ok(httparse::Status::Complete((n, 0))) => {
                        at += n;
                        self.state = HttpState::Trailer;
                    }
                    Ok(httparse::Status::Complete((n, size))) => {
                        at += n;
                        self.state = HttpState::ChunkData(size.saturating_add(2));
                    }
                    Ok(httparse::Status::Partial) => return Ok(at),
                    Err(_) => return Err(ProtocolError("malformed chunk size".into())),
                },
                HttpState::Trailer => match input.windows(2).position(|w| w == b"\r\n") {
                    Some(0) => {
                        at += 2;
                        self.complete(done);
                    }
                    Some(line) => at += line + 2,
                    None => return Ok(at),
                },
            }
        }
    }
}

fn too_long() -> ProtocolError {
    ProtocolError(format!(
        "HTTP response head, chunk-size or trailer line longer than {MAX_HEAD} bytes"
    ))
}

/// How the body after a head is framed (RFC 9112 section 6.3), and whether
/// the server will close the connection after it (HTTP/1.1 with
/// `Connection: close`, HTTP/1.0 without `Connection: keep-alive`). One pass
/// over the headers.
fn framing(
    response: &httparse::Response,
    head_request: bool,
) -> Result<(HttpState, bool), ProtocolError> {
    let status = response.code.unwrap_or(0);
    let mut length: Option<u64> = None;
    let mut chunked = None;
    let (mut close, mut keep_alive) = (false, false);
    for h in response.headers.iter() {
        // Only three names matter; most headers differ in length from all of them.
        match h.name.len() {
            10 if h.name.eq_ignore_ascii_case("connection") => {
                for token in h.value.split(|&b| b == b',') {
                    let token = token.trim_ascii();
                    close |= token.eq_ignore_ascii_case(b"close");
                    keep_alive |= token.eq_ignore_ascii_case(b"keep-alive");
                }
            }
            14 if h.name.eq_ignore_ascii_case("content-length") => {
                let value = std::str::from_utf8(h.value)
                    .ok()
                    .and_then(|v| v.trim().parse::<u64>().ok())
                    .ok_or_else(|| ProtocolError("invalid Content-Length in response".into()))?;
                if length.is_some_and(|l| l != value) {
                    return Err(ProtocolError(
                        "conflicting Content-Length headers in response".into(),
                    ));
                }
                length = Some(value);
            }
            17 if h.name.eq_ignore_ascii_case("transfer-encoding") => {
                // Chunked must be the last coding.
                let last = h.value.rsplit(|&b| b == b',').next().unwrap_or(b"");
                chunked = Some(last.trim_ascii().eq_ignore_ascii_case(b"chunked"));
            }
            _ => {}
        }
    }
    let closes = if response.version == Some(0) {
        !keep_alive
    } else {
        close
    };
    let state = if head_request || status == 204 || status == 304 {
        HttpState::Body(0)
    } else {
        // Transfer-Encoding frames the body whatever Content-Length says; a
        // coding other than chunked runs to the close.
        match (chunked, length) {
            (Some(true), _) => HttpState::ChunkSize,
            (Some(false), _) | (None, None) => HttpState::UntilClose,
            (None, Some(length)) => HttpState::Body(length),
        }
    };
    Ok((state, closes))
}

/// Checks an echoed byte stream against the message sent and counts whole
/// messages.
#[derive(Debug, Default)]
pub(crate) struct EchoCounter {
    at: usize,
}

impl EchoCounter {
    pub(crate) fn reset(&mut self) {
        self.at = 0;
    }

    /// Between messages.
    pub(crate) fn at_boundary(&self) -> bool {
        self.at == 0
    }

    /// Consume `data`, calling `done(0)` for every complete message.
    pub(crate) fn feed(
        &mut self,
        message: &[u8],
        mut data: &[u8],
        mut done: impl FnMut(u16),
    ) -> Result<(), ProtocolError> {
        while !data.is_empty() {
            let n = (message.len() - self.at).min(data.len());
            if data[..n] != message[self.at..self.at + n] {
                return Err(ProtocolError(format!(
                    "echoed bytes differ from those sent (at byte {} of a message)",
                    self.at
                )));
            }
            self.at += n;
            data = &data[n..];
            if self.at == message.len() {
                self.at = 0;
                done(0);
            }
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn count_split(stream: &[u8], step: usize) -> Result<Vec<u16>, ProtocolError> {
        let mut c = HttpCounter::new(false);
        let mut codes = Vec::new();
        for chunk in stream.chunks(step) {
            c.feed(chunk, |s| codes.push(s))?;
        }
        Ok(codes)
    }

    #[test]
    fn counts_content_length_responses_split_anywhere() {
        let one = b"HTTP/1.1 200 OK\r\nContent-Length: 13\r\nServer: x\r\n\r\nHello, World!";
        let stream: Vec<u8> = [
            &one[..],
            b"HTTP/1.1 404 Not Found\r\ncontent-length: 0\r\n\r\n",
            one,
        ]
        .concat();
        for step in 1..stream.len() + 1 {
            assert_eq!(
                count_split(&stream, step).unwrap(),
                [200, 404, 200],
                "step {step}"
            );
        }
    }

    #[test]
    fn a_head_like_the_last_one_is_framed_by_its_own_bytes() {
        // The remembered head must match byte for byte: a head that differs
        // only in its Content-Length, or that announces a close, is parsed
        // afresh (reusing the last framing would count B's body, itself
        // shaped like a response, as a 500).
        let a = &b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nhi"[..];
        let b = b"HTTP/1.1 200 OK\r\nContent-Length: 24\r\n\r\nHTTP/1.1 500 X\r\nA: b\r\n\r\n";
        let c = b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\nConnection: close\r\n\r\nhi";
        let stream = [a, a, b, a, b, c].concat();
        for step in 1..stream.len() + 1 {
            let (codes, clean) = count_to_close(false, &stream, step).unwrap();
            assert_eq!((codes, clean), (vec![200; 6], true), "step {step}");
        }
        let mut counter = HttpCounter::new(false);
        let mut n = 0;
        counter.feed(&stream, |_| n += 1).unwrap();
        assert!(counter.closed(), "the last head announced a close");
        assert!(counter.feed(a, |_| n += 1).is_err());
    }

    #[test]
    fn body_bytes_are_payload_only_wherever_the_stream_is_split() {
        let stream = b"HTTP/1.1 200 OK\r\nContent-Length: 13\r\n\r\nHello, World!HTTP/1.1 100 Continue\r\n\r\nHTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n5;e=1\r\nhello\r\n3\r\nabc\r\n0\r\nT: v\r\n\r\nHTTP/1.1 204 No Content\r\n\r\nHTTP/1.0 200 OK\r\n\r\nto the close";
        for step in 1..stream.len() + 1 {
            let mut c = HttpCounter::new(false);
            let mut body = 0;
            for chunk in stream.chunks(step) {
                c.feed(chunk, |_| ()).unwrap();
                body += c.take_body_bytes();
            }
            assert_eq!(body, 13 + 8 + 12, "step {step}");
        }
    }

    #[test]
    fn counts_chunked_responses_with_trailers() {
        let stream = b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n5\r\nhello\r\n3;x=y\r\nabc\r\n0\r\nT: v\r\n\r\nHTTP/1.1 201 Created\r\nTransfer-Encoding: chunked\r\n\r\n0\r\n\r\n";
        for step in 1..stream.len() + 1 {
            assert_eq!(
                count_split(stream, step).unwrap(),
                [200, 201],
                "step {step}"
            );
        }
    }

    /// Feed `stream` in pieces of `step`, then end it: the statuses counted,
    /// and whether it ended cleanly.
    fn count_to_close(
        head_requests: bool,
        stream: &[u8],
        step: usize,
    ) -> Result<(Vec<u16>, bool), ProtocolError> {
        let mut c = HttpCounter::new(head_requests);
        let mut codes = Vec::new();
        for chunk in stream.chunks(step) {
            c.feed(chunk, |s| codes.push(s))?;
        }
        let clean = c.end_of_stream(|s| codes.push(s));
        Ok((codes, clean))
    }

    #[test]
    fn counts_close_delimited_bodies_at_the_close() {
        let stream = b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nhiHTTP/1.1 203 X\r\nServer: y\r\n\r\nthe body runs to the close\r\n\r\nHTTP/1.1 200 OK\r\n";
        for step in 1..stream.len() + 1 {
            assert_eq!(
                count_to_close(false, stream, step).unwrap(),
                (vec![200, 203], true),
                "step {step}"
            );
        }
        // A Transfer-Encoding other than chunked also runs to the close.
        let gzip = b"HTTP/1.1 200 OK\r\nTransfer-Encoding: gzip\r\n\r\nxyz";
        assert_eq!(count_to_close(false, gzip, 4).unwrap(), (vec![200], true));
    }

    #[test]
    fn interim_responses_precede_the_final_one() {
        let stream = b"HTTP/1.1 100 Continue\r\n\r\nHTTP/1.1 103 Early Hints\r\nLink: </a>\r\n\r\nHTTP/1.1 201 Created\r\nContent-Length: 0\r\n\r\n";
        for step in 1..stream.len() + 1 {
            assert_eq!(count_split(stream, step).unwrap(), [201], "step {step}");
        }
        assert!(count_split(b"HTTP/1.1 101 Switching Protocols\r\n\r\n", 100).is_err());
    }

    #[test]
    fn head_responses_and_204_304_have_no_body() {
        let head = b"HTTP/1.1 200 OK\r\nContent-Length: 13\r\n\r\nHTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n";
        assert_eq!(
            count_to_close(true, head, 7).unwrap(),
            (vec![200, 200], true)
        );
        let empty = b"HTTP/1.1 204 No Content\r\n\r\nHTTP/1.1 304 Not Modified\r\nContent-Length: 99\r\n\r\n";
        assert_eq!(
            count_to_close(false, empty, 7).unwrap(),
            (vec![204, 304], true)
        );
    }

    #[test]
    fn a_close_announced_ends_the_stream() {
        for (stream, closes) in [
            (
                &b"HTTP/1.1 200 OK\r\nConnection: close\r\nContent-Length: 1\r\n\r\nx"[..],
                true,
            ),
            (
                b"HTTP/1.1 200 OK\r\nConnection: Keep-Alive, Close\r\nContent-Length: 1\r\n\r\nx",
                true,
            ),
            (b"HTTP/1.0 200 OK\r\nContent-Length: 1\r\n\r\nx", true),
            (
                b"HTTP/1.0 200 OK\r\nConnection: keep-alive\r\nContent-Length: 1\r\n\r\nx",
                false,
            ),
            (b"HTTP/1.1 200 OK\r\nContent-Length: 1\r\n\r\nx", false),
        ] {
            let mut c = HttpCounter::new(false);
            let mut n = 0;
            c.feed(stream, |_| n += 1).unwrap();
            assert_eq!(
                (n, c.closed()),
                (1, closes),
                "{}",
                String::from_utf8_lossy(stream)
            );
            let more = c.feed(b"HTTP/1.1 200 OK\r\nContent-Length: 0\r\n\r\n", |_| n += 1);
            assert_eq!(more.is_err(), closes);
        }
    }

    #[test]
    fn a_close_inside_a_response_is_not_clean() {
        for cut in [
            &b"HTTP/1.1 200 OK\r\nContent-Le"[..],
            b"HTTP/1.1 200 OK\r\nContent-Length: 5\r\n\r\nab",
            b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n5\r\nab",
            b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n0\r\nTrailer: x\r\n",
        ] {
            let (codes, clean) = count_to_close(false, cut, 3).unwrap();
            assert!(
                codes.is_empty() && !clean,
                "{}",
                String::from_utf8_lossy(cut)
            );
        }
    }

    #[test]
    fn rejects_garbage_and_bounds_what_it_buffers() {
        assert!(count_split(b"XTTP/1.1 200 OK\r\n\r\n", 100).is_err());
        assert!(count_split(b"HTTP/1.1 200 OK\r\nContent-Length: x\r\n\r\n", 100).is_err());
        assert!(count_split(
            b"HTTP/1.1 200 OK\r\nContent-Length: 1\r\nContent-Length: 2\r\n\r\n",
            100
        )
        .is_err());
        assert!(count_split(
            b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\nzz\r\n",
            100
        )
        .is_err());
        // Chunk sizes past u64 are refused, not wrapped.
        assert!(count_split(
            b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\nfffffffffffffffffffff\r\n",
            100
        )
        .is_err());
        let endless = vec![b'a'; MAX_HEAD + 10];
        let chunked = b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n";
        for prefix in [
            &b"HTTP/1.1 200 OK\r\nX: "[..],
            &[&chunked[..], b"5;ext="].concat(),
            &[&chunked[..], b"0\r\nT: "].concat(),
        ] {
            let stream = [prefix, &endless[..]].concat();
            let err = count_split(&stream, 1000).unwrap_err();
            assert!(err.0.contains("longer than"), "{err:?}");
        }
        // Too many headers is an error, not a panic.
        let many: Vec<u8> = [
            &b"HTTP/1.1 200 OK\r\n"[..],
            &b"A: b\r\n".repeat(MAX_HEADERS + 1),
            b"\r\n",
        ]
        .concat();
        assert!(count_split(&many, 100).is_err());
    }

    #[test]
    fn requests_render_what_was_asked() {
        let mut r = HttpRequest {
            method: "PUT".into(),
            target: "/a/b?x=1&y=%20".into(),
            headers: vec![
                ("X-One".into(), "1".into()),
                ("host".into(), "named".into()),
            ],
            body: Some(b"{\"k\":1}".to_vec()),
            ..HttpRequest::default()
        };
        assert_eq!(
            String::from_utf8(r.render("1.2.3.4:80").unwrap()).unwrap(),
            "PUT /a/b?x=1&y=%20 HTTP/1.1\r\nX-One: 1\r\nhost: named\r\nContent-Length: 7\r\n\r\n{\"k\":1}"
        );
        r.http10 = true;
        r.body = None;
        r.headers.clear();
        let text = String::from_utf8(r.render("h:1").unwrap()).unwrap();
        assert_eq!(
            text,
            "PUT /a/b?x=1&y=%20 HTTP/1.0\r\nHost: h:1\r\nConnection: keep-alive\r\n\r\n"
        );
        r.keepalive = false;
        assert!(String::from_utf8(r.render("h:1").unwrap())
            .unwrap()
            .contains("Connection: close\r\n"));
        for (change, needle) in [
            (
                &(|r: &mut HttpRequest| r.method = "G T".into()) as &dyn Fn(&mut HttpRequest),
                "method",
            ),
            (&|r| r.target = "no-slash".into(), "start with '/'"),
            (&|r| r.target = "/a b".into(), "no spaces"),
            (
                &|r| r.headers = vec![("Bad Name".into(), "v".into())],
                "header name",
            ),
            (
                &|r| r.headers = vec![("X".into(), "a\r\nInjected: 1".into())],
                "control character",
            ),
            (
                &|r| r.headers = vec![("Content-Length".into(), "3".into())],
                "from the body",
            ),
            (
                &|r| r.headers = vec![("connection".into(), "close".into())],
                "keep-alive",
            ),
        ] {
            let mut bad = HttpRequest::default();
            change(&mut bad);
            let err = bad.render("h:1").unwrap_err();
            assert!(err.contains(needle), "{err}");
        }
    }

    #[test]
    fn echo_counts_messages_and_catches_wrong_bytes() {
        let req = Requests::echo(10, 3);
        let mut c = EchoCounter::default();
        let mut n = 0;
        for chunk in req.next(0, 30).chunks(7) {
            c.feed(req.one(), chunk, |_| n += 1).unwrap();
        }
        assert_eq!(n, 3);
        assert!(c.feed(req.one(), b"ab", |_| ()).is_ok());
        assert!(c.feed(req.one(), b"X", |_| ()).is_err());
    }

    #[test]
    fn requests_slice_from_any_phase() {
        let r = Requests::http(&HttpRequest::default().render("h").unwrap(), 4);
        let len = r.len();
        for phase in 0..len {
            let s = r.next(phase, 4 * len - phase);
            assert_eq!(s.len(), 4 * len - phase);
            assert_eq!(&s[len - phase..2 * len - phase], r.one());
        }
    }
}
