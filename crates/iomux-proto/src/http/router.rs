//! Routing by method and path pattern: a [`Router`] is a [`Handler`] that
//! picks another handler, answers `404` when no pattern matches the path and
//! `405` with `Allow` when patterns match but none for the method.

use super::handler::{handler_fn, Flow, Handler, Reply};
use super::request::Request;
use super::response::Status;

/// Most `{name}` parameters in one pattern.
pub const MAX_PARAMS: usize = 8;

/// One piece of a pattern between slashes.
#[derive(Debug)]
enum Segment {
    Literal(String),
    /// `{name}`: any one non-empty segment.
    Param(String),
    /// `{*name}`: the rest of the path, slashes included (last only).
    Rest(String),
}

#[derive(Debug)]
enum Pattern {
    /// No parameters: the path must equal it.
    Exact(String),
    Segments(Vec<Segment>),
}

struct Route {
    method: String,
    pattern: Pattern,
    handler: Box<dyn Handler>,
}

/// Method + path-pattern routing. Patterns are `/`-separated literal
/// segments, `{name}` (one segment, read with [`Request::param`]) and a
/// last `{*name}` (the rest of the path). The first route whose pattern
/// and method match is called; a `HEAD` request with no `HEAD` route of its
/// own is answered by the `GET` route (without the body: the core sends the
/// head only). Paths are matched as sent (not percent-decoded).
///
/// ```
/// use iomux_proto::http::{Flow, Router, Status};
/// let router = Router::new()
///     .get("/items/{id}", |req, reply| {
///         let id = req.param("id").unwrap_or_default();
///         reply.send(Status::OK, "text/plain", id.as_bytes());
///         Flow::Done
///     })
///     .post("/items", |_req, reply| {
///         reply.send(Status::CREATED, "text/plain", b"made");
///         Flow::Done
///     });
/// # let _ = router;
/// ```
#[derive(Default)]
pub struct Router {
    routes: Vec<Route>,
}

impl std::fmt::Debug for Router {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_list()
            .entries(self.routes.iter().map(|r| (&r.method, &r.pattern)))
            .finish()
    }
}

fn parse_pattern(pattern: &str) -> Pattern {
    assert!(
        pattern.starts_with('/'),
        "a route pattern starts with '/': {pattern:?}"
    );
    if !pattern.contains('{') {
        return Pattern::Exact(pattern.to_string());
    }
    let pieces: Vec<&str> = pattern[1..].split('/').collect();
    let mut segments = Vec::new();
    for (i, piece) in pieces.iter().enumerate() {
        let segment = match piece.strip_prefix('{').and_then(|p| p.strip_suffix('}')) {
            Some(name) if name.starts_with('*') => {
                assert!(
                    i + 1 == pieces.len(),
                    "{{*name}} must be the last segment of {pattern:?}"
                );
                Segment::Rest(name[1..].to_string())
            }
            Some(name) => Segment::Param(name.to_string()),
            None => {
                assert!(
                    !piece.contains(['{', '}']),
                    "a parameter is a whole segment, {{name}}: {pattern:?}"
                );
                Segment::Literal(piece.to_string())
            }
        };
        segments.push(segment);
    }
    let params = segments
        .iter()
        .filter(|s| !matches!(s, Segment::Literal(_)))
        .count();
    assert!(
        params <= MAX_PARAMS,
        "at most {MAX_PARAMS} parameters in {pattern:?}"
    );
    Pattern::Segments(segments)
}

/// Byte equality without a `memcmp` call for the short strings routes and
/// methods are (a call per route was a twentieth of a pipelined request's
/// cost in `cargo bench -p iomux-proto --bench http`).
#[inline(always)]
fn same(a: &str, b: &str) -> bool {
    let (a, b) = (a.as_bytes(), b.as_bytes());
    let n = a.len();
    if n != b.len() {
        return false;
    }
    let word8 = |s: &[u8], i: usize| u64::from_ne_bytes(s[i..i + 8].try_into().unwrap_or_default());
    let word4 = |s: &[u8], i: usize| u32::from_ne_bytes(s[i..i + 4].try_into().unwrap_or_default());
    match n {
        0..=3 => a.iter().zip(b).all(|(x, y)| x == y),
        4..=7 => word4(a, 0) == word4(b, 0) && word4(a, n - 4) == word4(b, n - 4),
        8..=16 => word8(a, 0) == word8(b, 0) && word8(a, n - 8) == word8(b, n - 8),
        _ => a == b,
    }
}

impl Pattern {
    /// Whether `path` matches; its parameters go to `params`, returning how many.
    #[inline]
    fn matches<'p>(
        &'p self,
        path: &'p str,
        params: &mut [(&'p str, &'p str); MAX_PARAMS],
    ) -> Option<usize> {
        match self {
            Pattern::Exact(p) => same(p, path).then_some(0),
            Pattern::Segments(segments) => {
                let mut rest = path.strip_prefix('/')?;
                let mut n = 0;
                for (i, segment) in segments.iter().enumerate() {
                    let last = i + 1 == segments.len();
                    if let Segment::Rest(name) = segment {
                        params[n] = (name.as_str(), rest);
                        return Some(n + 1);
                    }
                    let (piece, after) = match rest.split_once('/') {
                        Some((piece, after)) if !last => (piece, after),
                        Some(_) => return None,
                        None if last => (rest, ""),
                        None => return None,
                    };
                    match segment {
                        Segment::Literal(l) if l == piece => {}
                        Segment::Param(name) if !piece.is_empty() => {
                            params[n] = (name.as_str(), piece);
                            n += 1;
                        }
                        _ => return None,
                    }
                    rest = after;
                }
                Some(n)
            }
        }
    }
}

/// `Router::get` and the like: a method's route with a closure.
macro_rules! shortcuts {
    ($($(#[$doc:meta])* $name:ident $method:literal,)*) => {
        $(
            $(#[$doc])*
            pub fn $name<F>(self, pattern: &str, f: F) -> Router
            where
                F: Fn(&Request<'_>, &mut Reply<'_, '_>) -> Flow + Send + Sync + 'static,
            {
                self.route($method, pattern, handler_fn(f))
            }
        )*
    };
}

impl Router {
    /// A router with no routes (everything is `404`).
    pub fn new() -> Router {
        Router::default()
    }

    /// Route `method` requests whose path matches `pattern` to `handler`.
    ///
    /// # Panics
    /// On a pattern that does not start with `/`, a `{` that is not a whole
    /// segment, `{*name}` before the end, or more than [`MAX_PARAMS`]
    /// parameters (mistakes in the program, found when it builds its router).
    pub fn route(mut self, method: &str, pattern: &str, handler: impl Handler) -> Router {
        self.routes.push(Route {
            method: method.to_string(),
            pattern: parse_pattern(pattern),
            handler: Box::new(handler),
        });
        self
    }

    shortcuts! {
        /// [`Router::route`] for `GET` (and `HEAD`) with a closure.
        get "GET",
        /// [`Router::route`] for `POST` with a closure.
        post "POST",
        /// [`Router::route`] for `PUT` with a closure.
        put "PUT",
        /// [`Router::route`] for `DELETE` with a closure.
        delete "DELETE",
        /// [`Router::route`] for `PATCH` with a closure.
        patch "PATCH",
    }

    /// Answer `405` with the methods the path allows (`HEAD` with `GET`).
    fn not_allowed(&self, path: &str, reply: &mut Reply<'_, '_>) {
        let mut allow = String::new();
        let mut params = [("", ""); MAX_PARAMS];
        for route in &self.routes {
            if route.pattern.matches(path, &mut params).is_none() {
                continue;
            }
            for method in [route.method.as_str()]
                .into_iter()
                .chain((route.method == "GET").then_some("HEAD"))
            {
                if !allow.split(", ").any(|m| m == method) {
                    if !allow.is_empty() {
                        allow.push_str(", ");
                    }
                    allow.push_str(method);
                }
            }
        }
        reply
            .head(Status::METHOD_NOT_ALLOWED)
            .header("Content-Type", "text/plain")
            .header("Allow", &allow)
            .body(Status::METHOD_NOT_ALLOWED.explanation());
    }
}

impl Handler for Router {
    fn call(&self, req: &Request<'_>, reply: &mut Reply<'_, '_>) -> Flow {
        let path = req.path();
        let method = req.method();
        let mut params = [("", ""); MAX_PARAMS];
        let mut path_matched = false;
        let mut get_for_head: Option<(&Route, usize)> = None;
        for route in &self.routes {
            let Some(n) = route.pattern.matches(path, &mut params) else {
                continue;
            };
            path_matched = true;
            if same(&route.method, method) {
                return route.handler.call(&req.with_params(&params[..n]), reply);
            }
            if method == "HEAD" && route.method == "GET" && get_for_head.is_none() {
                get_for_head = Some((route, n));
            }
        }
        if let Some((route, _)) = get_for_head {
            // Matched again: `params` may hold a later route's parameters.
            let n = route.pattern.matches(path, &mut params).unwrap_or(0);
            return route.handler.call(&req.with_params(&params[..n]), reply);
        }
        if path_matched {
            self.not_allowed(path, reply);
        } else {
            reply
                .head(Status::NOT_FOUND)
                .header("Content-Type", "text/plain")
                .body(Status::NOT_FOUND.explanation());
        }
        Flow::Done
    }
}
