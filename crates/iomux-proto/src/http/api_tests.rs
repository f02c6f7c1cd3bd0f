//! The handler API over the core, without sockets: what a handler sees of
//! each request (at every split of the input), the rules the core enforces
//! on answers, faults isolated and counted, deferred answers in order.

use super::*;
use crate::Command;
use std::any::Any;
use std::sync::{Arc, Mutex};
use std::time::Duration;

/// What a handler saw of one request.
#[derive(Debug, Clone, PartialEq, Eq)]
struct Seen {
    method: String,
    path: String,
    params: Vec<(String, String)>,
    query: Option<String>,
    headers: Vec<(String, Vec<u8>)>,
    version: Version,
    body: Vec<u8>,
}

type Log = Arc<Mutex<Vec<Seen>>>;

/// Records each request, reads its body whole, answers with its length.
struct Recorder(Log);

struct Collect {
    seen: Seen,
    log: Log,
}

impl Handler for Recorder {
    fn call(&self, req: &Request<'_>, _reply: &mut Reply<'_, '_>) -> Flow {
        let seen = Seen {
            method: req.method().into(),
            path: req.path().into(),
            params: req
                .params()
                .iter()
                .map(|(k, v)| (k.to_string(), v.to_string()))
                .collect(),
            query: req.query().map(Into::into),
            headers: req.headers().map(|(n, v)| (n.into(), v.to_vec())).collect(),
            version: req.version(),
            body: Vec::new(),
        };
        Flow::continue_with(Collect {
            seen,
            log: self.0.clone(),
        })
    }
}

impl Exchange for Collect {
    fn on_body(&mut self, data: &[u8], _reply: &mut Reply<'_, '_>) -> usize {
        self.seen.body.extend_from_slice(data);
        data.len()
    }

    fn on_body_end(&mut self, reply: &mut Reply<'_, '_>) {
        let body = format!("{} bytes", self.seen.body.len());
        reply.send(Status::OK, "text/plain", body.as_bytes());
        self.log.lock().unwrap().push(self.seen.clone());
    }
}

fn recording_router(log: &Log) -> Arc<Router> {
    Arc::new(
        Router::new()
            .route("GET", "/items/{id}", Recorder(log.clone()))
            .route("PUT", "/items/{id}", Recorder(log.clone()))
            .route("POST", "/upload", Recorder(log.clone()))
            .route("GET", "/files/{*path}", Recorder(log.clone()))
            .route("DELETE", "/a/{x}/b/{y}", Recorder(log.clone())),
    )
}

fn seen(
    method: &str,
    path: &str,
    params: &[(&str, &str)],
    query: Option<&str>,
    headers: &[(&str, &str)],
    body: &[u8],
) -> Seen {
    Seen {
        method: method.into(),
        path: path.into(),
        params: params
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect(),
        query: query.map(Into::into),
        headers: headers
            .iter()
            .map(|(n, v)| (n.to_string(), v.as_bytes().to_vec()))
            .collect(),
        version: Version::Http11,
        body: body.to_vec(),
    }
}

/// Requests and exactly what their handler must see.
fn table() -> Vec<(&'static [u8], Seen)> {
    vec![
        (
            b"GET /items/42 HTTP/1.1\r\nHost: x\r\n\r\n",
            seen("GET", "/items/42", &[("id", "42")], None, &[("Host", "x")], b""),
        ),
        (
            b"GET /items/7?full=1&tag=a%20b HTTP/1.1\r\nHost: x\r\nAccept: */*\r\nX-Empty:\r\n\r\n",
            seen(
                "GET",
                "/items/7",
                &[("id", "7")],
                Some("full=1&tag=a%20b"),
                &[("Host", "x"), ("Accept", "*/*"), ("X-Empty", "")],
                b"",
            ),
        ),
        (
            b"PUT /items/9 HTTP/1.1\r\nHost: x\r\nContent-Length: 15\r\n\r\n{\"name\":\"pen\"}\n",
            seen(
                "PUT",
                "/items/9",
                &[("id", "9")],
                None,
                &[("Host", "x"), ("Content-Length", "15")],
                b"{\"name\":\"pen\"}\n",
            ),
        ),
        (
            b"POST /upload HTTP/1.1\r\nhost: x\r\ntransfer-encoding: chunked\r\n\r\n4\r\nabcd\r\n3;e=1\r\nefg\r\n0\r\nT: 1\r\n\r\n",
            seen(
                "POST",
                "/upload",
                &[],
                None,
                &[("host", "x"), ("transfer-encoding", "chunked")],
                b"abcdefg",
            ),
        ),
        (
            b"GET /files/a/b/c.txt?v=2 HTTP/1.1\r\nHost: x\r\nRange: bytes=0-1\r\n\r\n",
            seen(
                "GET",
                "/files/a/b/c.txt",
                &[("path", "a/b/c.txt")],
                Some("v=2"),
                &[("Host", "x"), ("Range", "bytes=0-1")],
                b"",
            ),
        ),
        (
            b"DELETE http://x:80/a/1/b/2 HTTP/1.1\r\nHost: x:80\r\nX-Bin: \xff\xfe\r\n\r\n",
            Seen {
                headers: vec![("Host".into(), b"x:80".to_vec()), ("X-Bin".into(), vec![0xff, 0xfe])],
                ..seen("DELETE", "/a/1/b/2", &[("x", "1"), ("y", "2")], None, &[], b"")
            },
        ),
        (
            b"HEAD /items/3 HTTP/1.1\r\nHost: x\r\n\r\n",
            seen("HEAD", "/items/3", &[("id", "3")], None, &[("Host", "x")], b""),
        ),
        (
            b"GET /items/5 HTTP/1.0\r\nConnection: keep-alive\r\n\r\n",
            Seen {
                version: Version::Http10,
                ..seen(
                    "GET",
                    "/items/5",
                    &[("id", "5")],
                    None,
                    &[("Connection", "keep-alive")],
                    b"",
                )
            },
        ),
    ]
}

static FIXED: HttpConfig = HttpConfig::new(HttpLimits::DEFAULT, fixed_clock);

#[test]
fn handlers_see_exactly_what_was_sent_at_every_split() {
    let table = table();
    // Each alone, then all of them pipelined on one connection.
    let mut cases: Vec<(Vec<u8>, Vec<Seen>)> = table
        .iter()
        .map(|(req, seen)| (req.to_vec(), vec![seen.clone()]))
        .collect();
    cases.push((
        table.iter().flat_map(|(r, _)| r.iter().copied()).collect(),
        table.iter().map(|(_, s)| s.clone()).collect(),
    ));
    for (input, expected) in cases {
        let what = String::from_utf8_lossy(&input).into_owned();
        let mut splits: Vec<Vec<usize>> = vec![vec![], (1..input.len()).collect()];
        splits.extend((1..input.len()).map(|k| vec![k]));
        let mut first_output = None;
        for cuts in splits {
            let log = Log::default();
            let (out, closed) = feed_in_reads(&FIXED, recording_router(&log), &input, &cuts);
            assert!(!closed, "{what}");
            assert_eq!(*log.lock().unwrap(), expected, "{what} cut at {cuts:?}");
            let first = first_output.get_or_insert_with(|| out.clone());
            assert_eq!(*first, out, "{what}: the output changed with cuts {cuts:?}");
        }
    }
}

/// A connection driven the way an engine drives it: input kept unconsumed
/// and offered again, timers fired on demand, closes noted.
struct Driver<H: Handler> {
    http: Http<H>,
    pending: Vec<u8>,
    out: Vec<u8>,
    timers: Vec<u64>,
    closed: bool,
    /// Every other command, in order.
    commands: Vec<Command>,
}

impl<H: Handler> Driver<H> {
    fn new(config: &'static HttpConfig, handler: H) -> Driver<H> {
        Driver {
            http: Http::new(config, handler),
            pending: Vec::new(),
            out: Vec::new(),
            timers: Vec::new(),
            closed: false,
            commands: Vec::new(),
        }
    }

    fn call<R>(&mut self, f: impl FnOnce(&mut Http<H>, &mut Context) -> R) -> R {
        let id = ConnId::new(0, 1);
        let mut commands = Vec::new();
        let mut cx = Context::new(id, std::time::Instant::now(), &mut self.out, &mut commands);
        let r = f(&mut self.http, &mut cx);
        for command in commands {
            match command {
                Command::SetTimer { key, .. } => self.timers.push(key),
                Command::Close(c) if c == id => self.closed = true,
                other => self.commands.push(other),
            }
        }
        r
    }

    fn send(&mut self, bytes: &[u8]) {
        self.pending.extend_from_slice(bytes);
        self.offer();
    }

    fn offer(&mut self) {
        let pending = std::mem::take(&mut self.pending);
        let step = self.call(|http, cx| http.on_data(&pending, cx));
        self.pending = pending[step.consumed..].to_vec();
        self.closed |= step.close;
    }

    /// Fire the oldest timer, then offer held input again (as the engine
    /// does once the answer went out).
    fn fire_timer(&mut self) {
        let key = self.timers.remove(0);
        self.call(|http, cx| http.on_timer(key, cx));
        if !self.closed {
            self.offer();
        }
    }

    fn take_out(&mut self) -> String {
        String::from_utf8(std::mem::take(&mut self.out)).unwrap()
    }
}

/// `/wait/{ms}` answers `waited MS` from a timer; `/now` at once.
fn deferred_router() -> Arc<Router> {
    struct Wait(u32);
    impl Exchange for Wait {
        fn on_timer(&mut self, _key: u32, reply: &mut Reply<'_, '_>) {
            let body = format!("waited {}", self.0);
            reply.send(Status::OK, "text/plain", body.as_bytes());
        }
    }
    Arc::new(
        Router::new()
            .get("/wait/{ms}", |req, reply| {
                let ms: u32 = req.param("ms").and_then(|m| m.parse().ok()).unwrap_or(0);
                reply.set_timer(0, Duration::from_millis(u64::from(ms)));
                Flow::continue_with(Wait(ms))
            })
            .get("/now", |_req, reply| {
                reply.send(Status::OK, "text/plain", b"now");
                Flow::Done
            }),
    )
}

#[test]
fn pipelined_deferred_answers_keep_request_order() {
    let mut conn = Driver::new(&FIXED, deferred_router());
    let requests = b"GET /wait/30 HTTP/1.1\r\nHost: x\r\n\r\nGET /now HTTP/1.1\r\nHost: x\r\n\r\n\
                     GET /wait/10 HTTP/1.1\r\nHost: x\r\n\r\nGET /now HTTP/1.1\r\nHost: x\r\n\r\n";
    conn.send(requests);
    assert_eq!(
        conn.take_out(),
        "",
        "nothing may overtake the unanswered first request"
    );
    assert!(!conn.pending.is_empty(), "later requests wait unparsed");
    assert!(!conn.http.is_idle());
    conn.fire_timer();
    let out = conn.take_out();
    let order: Vec<&str> = ["waited 30", "now"]
        .into_iter()
        .filter(|b| out.contains(b))
        .collect();
    assert_eq!(order, ["waited 30", "now"]);
    assert!(out.find("waited 30") < out.find("now"), "{out}");
    assert!(!out.contains("waited 10"), "the second wait is still owed");
    conn.fire_timer();
    let out = conn.take_out();
    assert!(
        out.find("waited 10").unwrap() < out.find("now").unwrap(),
        "{out}"
    );
    assert!(conn.pending.is_empty() && conn.http.is_idle() && !conn.closed);
}

#[test]
fn a_timer_of_a_finished_exchange_never_reaches_a_later_one() {
    let mut conn = Driver::new(&FIXED, deferred_router());
    conn.send(b"GET /wait/5 HTTP/1.1\r\nHost: x\r\n\r\n");
    let stale = conn.timers[0];
    conn.fire_timer();
    conn.send(b"GET /wait/6 HTTP/1.1\r\nHost: x\r\n\r\n");
    conn.take_out();
    conn.call(|http, cx| http.on_timer(stale, cx));
    assert_eq!(conn.take_out(), "", "a stale key is ignored");
    conn.fire_timer();
    assert!(conn.take_out().ends_with("waited 6"));
}

/// Parse one response: status, headers (lower-case names), the rest.
fn response(out: &[u8]) -> (u16, Vec<(String, String)>, Vec<u8>) {
    let mut headers = [httparse::EMPTY_HEADER; 32];
    let mut r = httparse::Response::new(&mut headers);
    let n = match r.parse(out).expect("a well-formed head") {
        httparse::Status::Complete(n) => n,
        httparse::Status::Partial => panic!("partial head: {:?}", String::from_utf8_lossy(out)),
    };
    let headers = r
        .headers
        .iter()
        .map(|h| {
            (
                h.name.to_ascii_lowercase(),
                String::from_utf8_lossy(h.value).into_owned(),
            )
        })
        .collect();
    (r.code.unwrap(), headers, out[n..].to_vec())
}

fn header<'a>(headers: &'a [(String, String)], name: &str) -> Option<&'a str> {
    headers
        .iter()
        .find(|(n, _)| n == name)
        .map(|(_, v)| v.as_str())
}

#[test]
fn head_is_answered_by_the_get_route_without_its_body() {
    let router = Arc::new(
        Router::new()
            .get("/bytes", |req, reply| {
                let body = format!("asked for {}", req.path());
                reply.send(Status::OK, "text/plain", body.as_bytes());
                Flow::Done
            })
            .get("/stream", |_req, reply| {
                reply.head(Status::OK).stream();
                reply.write(b"never on HEAD");
                reply.end();
                Flow::Done
            })
            .get("/sized", |_req, reply| {
                reply.head(Status::OK).sized(5);
                reply.write(b"12345");
                Flow::Done
            }),
    );
    for (path, length) in [
        ("/bytes", Some("16")),
        ("/stream", None),
        ("/sized", Some("5")),
    ] {
        let get = format!("GET {path} HTTP/1.1\r\nHost: x\r\n\r\n");
        let head = format!("HEAD {path} HTTP/1.1\r\nHost: x\r\n\r\n");
        let (get_out, _) = feed_in_reads(&FIXED, router.clone(), get.as_bytes(), &[]);
        let (head_out, closed) = feed_in_reads(&FIXED, router.clone(), head.as_bytes(), &[]);
        assert!(!closed);
        let (code, head_headers, rest) = response(&head_out);
        let (_, get_headers, get_body) = response(&get_out);
        assert_eq!(code, 200);
        assert!(rest.is_empty(), "HEAD {path} sent a body: {rest:?}");
        assert!(!get_body.is_empty());
        assert_eq!(head_headers, get_headers, "HEAD {path} headers equal GET's");
        assert_eq!(header(&head_headers, "content-length"), length);
    }
}

#[test]
fn no_content_and_not_modified_carry_no_body() {
    let router = Arc::new(
        Router::new()
            .get("/204", |_req, reply| {
                reply.send(Status::NO_CONTENT, "text/plain", b"dropped");
                Flow::Done
            })
            .get("/304", |_req, reply| {
                reply
                    .head(Status::NOT_MODIFIED)
                    .header("ETag", "\"x\"")
                    .sized(7);
                reply.write(b"ignored");
                Flow::Done
            }),
    );
    let input = b"GET /204 HTTP/1.1\r\nHost: x\r\n\r\nGET /304 HTTP/1.1\r\nHost: x\r\n\r\n";
    let (out, closed) = feed_in_reads(&FIXED, router, input, &[]);
    assert!(!closed);
    let text = String::from_utf8_lossy(&out);
    assert!(
        !text.contains("dropped") && !text.contains("ignored"),
        "{text}"
    );
    assert!(
        !text.to_ascii_lowercase().contains("content-length"),
        "{text}"
    );
    assert_eq!(text.matches("HTTP/1.1 ").count(), 2, "{text}");
    assert!(text.contains("ETag: \"x\"\r\n"));
}

#[test]
fn a_length_mismatch_closes_the_connection_and_is_counted() {
    static CONFIG: HttpConfig = HttpConfig::new(HttpLimits::DEFAULT, fixed_clock);
    let router = Arc::new(
        Router::new()
            .get("/long", |_req, reply| {
                reply.head(Status::OK).sized(4);
                reply.write(b"123456");
                Flow::Done
            })
            .get("/short", |_req, reply| {
                reply.head(Status::OK).sized(4);
                reply.write(b"12");
                Flow::Done
            })
            .get("/fine", |_req, reply| {
                reply.head(Status::OK).sized(4);
                reply.write(b"12");
                reply.write(b"34");
                Flow::Done
            }),
    );
    let next = b"GET /fine HTTP/1.1\r\nHost: x\r\n\r\n";
    for (path, body) in [("/long", &b"1234"[..]), ("/short", b"12")] {
        let before = CONFIG.counters.length_mismatches();
        let input = [
            format!("GET {path} HTTP/1.1\r\nHost: x\r\n\r\n").as_bytes(),
            next,
        ]
        .concat();
        let (out, closed) = feed_in_reads(&CONFIG, router.clone(), &input, &[]);
        assert!(closed, "{path}: the connection closes");
        let (code, headers, rest) = response(&out);
        assert_eq!((code, header(&headers, "content-length")), (200, Some("4")));
        assert_eq!(
            rest, body,
            "{path}: never a byte past the announced length, nothing after"
        );
        assert_eq!(CONFIG.counters.length_mismatches(), before + 1, "{path}");
    }
    let before = CONFIG.counters.length_mismatches();
    let (out, closed) = feed_in_reads(&CONFIG, router, next, &[]);
    assert!(!closed);
    assert!(out.ends_with(b"\r\n\r\n1234"));
    assert_eq!(CONFIG.counters.length_mismatches(), before);
}

#[test]
fn a_panicking_handler_gets_500_and_closes_its_connection_only() {
    static CONFIG: HttpConfig = HttpConfig::new(HttpLimits::DEFAULT, fixed_clock);
    let router = Arc::new(
        Router::new()
            .get("/panic", |_req, reply| {
                // Half an answer is taken back before the 500.
                let _head = reply.head(Status::OK).header("X-Half", "yes");
                panic!("handler failure");
            })
            .get("/late-panic", |_req, reply| {
                reply.head(Status::OK).stream();
                reply.write(b"partial");
                struct Boom;
                impl Exchange for Boom {
                    fn on_timer(&mut self, _key: u32, reply: &mut Reply<'_, '_>) {
                        reply.write(b"half a chunk");
                        panic!("exchange failure");
                    }
                }
                reply.set_timer(1, Duration::from_millis(1));
                Flow::continue_with(Boom)
            })
            .get("/silent", |_req, _reply| Flow::Done)
            .get("/ok", |_req, reply| {
                reply.send(Status::OK, "text/plain", b"ok");
                Flow::Done
            }),
    );
    let ok = b"GET /ok HTTP/1.1\r\nHost: x\r\n\r\n";
    let input = [&b"GET /panic HTTP/1.1\r\nHost: x\r\n\r\n"[..], ok].concat();
    let (out, closed) = feed_in_reads(&CONFIG, router.clone(), &input, &[]);
    assert!(closed);
    let (code, headers, body) = response(&out);
    assert_eq!((code, header(&headers, "connection")), (500, Some("close")));
    assert_eq!(header(&headers, "x-half"), None);
    assert!(
        !String::from_utf8_lossy(&body).contains("ok"),
        "nothing after the 500"
    );
    assert_eq!(CONFIG.counters.handler_panics(), 1);
    // Another connection is served as ever.
    let (out, closed) = feed_in_reads(&CONFIG, router.clone(), ok, &[]);
    assert!(!closed && out.ends_with(b"\r\n\r\nok"));
    // A panic after the answer began: the connection just closes.
    let mut conn = Driver::new(&CONFIG, router.clone());
    conn.send(b"GET /late-panic HTTP/1.1\r\nHost: x\r\n\r\n");
    conn.fire_timer();
    let out = conn.take_out();
    assert!(conn.closed);
    assert!(
        out.ends_with("7\r\npartial\r\n"),
        "no half chunk, no 500: {out:?}"
    );
    assert_eq!(CONFIG.counters.handler_panics(), 2);
    // Returning without an answer: 500, counted apart.
    let (out, closed) = feed_in_reads(
        &CONFIG,
        router,
        b"GET /silent HTTP/1.1\r\nHost: x\r\n\r\n",
        &[],
    );
    assert!(closed);
    assert_eq!(response(&out).0, 500);
    assert_eq!(CONFIG.counters.unanswered(), 1);
}

#[test]
fn streams_are_chunked_on_1_1_and_close_delimited_on_1_0() {
    let router = Arc::new(Router::new().get("/s", |_req, reply| {
        reply
            .head(Status::OK)
            .header("Content-Type", "text/plain")
            .stream();
        reply.write(b"hello ");
        reply.write(b"");
        reply.write(b"world");
        reply.end();
        Flow::Done
    }));
    let (out, closed) = feed_in_reads(
        &FIXED,
        router.clone(),
        b"GET /s HTTP/1.1\r\nHost: x\r\n\r\n",
        &[],
    );
    assert!(!closed);
    let (_, headers, body) = response(&out);
    assert_eq!(header(&headers, "transfer-encoding"), Some("chunked"));
    assert_eq!(body, b"6\r\nhello \r\n5\r\nworld\r\n0\r\n\r\n");
    let (out, closed) = feed_in_reads(
        &FIXED,
        router,
        b"GET /s HTTP/1.0\r\nConnection: keep-alive\r\n\r\n",
        &[],
    );
    assert!(closed, "a close-delimited body ends with the connection");
    let (_, headers, body) = response(&out);
    assert_eq!(header(&headers, "transfer-encoding"), None);
    assert_eq!(header(&headers, "content-length"), None);
    assert_eq!(header(&headers, "connection"), Some("close"));
    assert_eq!(body, b"hello world");
}

#[test]
fn not_found_and_method_not_allowed() {
    let router = Arc::new(
        Router::new()
            .get("/r/{id}", |_req, reply| {
                reply.send(Status::OK, "text/plain", b"r");
                Flow::Done
            })
            .route(
                "PUT",
                "/r/{id}",
                handler_fn(|_req, reply| {
                    reply.send(Status::OK, "text/plain", b"put");
                    Flow::Done
                }),
            ),
    );
    let (out, _) = feed_in_reads(
        &FIXED,
        router.clone(),
        b"POST /r/1 HTTP/1.1\r\nHost: x\r\n\r\n",
        &[],
    );
    let (code, headers, _) = response(&out);
    assert_eq!(
        (code, header(&headers, "allow")),
        (405, Some("GET, HEAD, PUT"))
    );
    for path in ["/r", "/r/", "/r/1/2", "/other"] {
        let req = format!("GET {path} HTTP/1.1\r\nHost: x\r\n\r\n");
        let (out, closed) = feed_in_reads(&FIXED, router.clone(), req.as_bytes(), &[]);
        assert!(!closed);
        let (code, _, body) = response(&out);
        assert_eq!(code, 404, "{path}");
        assert!(
            !String::from_utf8_lossy(&body).contains("/r"),
            "the 404 names no paths"
        );
    }
}

#[test]
fn a_body_not_taken_stops_the_reading_until_resumed() {
    /// Takes at most 4 bytes per offer, and nothing more until resumed.
    struct Slow(Log, Vec<u8>, bool);
    impl Exchange for Slow {
        fn on_body(&mut self, data: &[u8], _reply: &mut Reply<'_, '_>) -> usize {
            if self.2 {
                return 0;
            }
            let n = data.len().min(4);
            self.1.extend_from_slice(&data[..n]);
            self.2 = true;
            n
        }
        fn on_timer(&mut self, _key: u32, reply: &mut Reply<'_, '_>) {
            self.2 = false;
            reply.resume_body();
            reply.set_timer(0, Duration::ZERO);
        }
        fn on_body_end(&mut self, reply: &mut Reply<'_, '_>) {
            reply.send(Status::OK, "text/plain", &self.1);
            self.0
                .lock()
                .unwrap()
                .push(seen("POST", "/", &[], None, &[], &self.1));
        }
    }
    let log = Log::default();
    let for_handler = log.clone();
    let router = Arc::new(Router::new().post("/", move |_req, reply| {
        reply.set_timer(0, Duration::ZERO);
        Flow::continue_with(Slow(for_handler.clone(), Vec::new(), false))
    }));
    let mut conn = Driver::new(&FIXED, router);
    conn.send(b"POST / HTTP/1.1\r\nHost: x\r\nContent-Length: 10\r\n\r\n0123456789");
    assert_eq!(conn.pending, b"456789", "the rest waits in the input");
    while log.lock().unwrap().is_empty() {
        conn.fire_timer();
    }
    assert!(conn.take_out().ends_with("\r\n\r\n0123456789"));
}

/// A handler that calls a backend: connect, send it a line, answer with
/// what it sent back once it closed.
fn backend_router(backend: std::net::SocketAddr) -> Arc<Router> {
    struct Call {
        backend: Option<ConnId>,
        got: Vec<u8>,
    }
    impl Exchange for Call {
        fn on_connect(
            &mut self,
            tag: u32,
            result: std::io::Result<ConnId>,
            reply: &mut Reply<'_, '_>,
        ) {
            assert_eq!(tag, 9);
            match result {
                Ok(id) => {
                    self.backend = Some(id);
                    reply.context().send_to(id, b"PING\r\n");
                }
                Err(e) => reply.send(Status::BAD_GATEWAY, "text/plain", e.to_string().as_bytes()),
            }
        }
        fn on_message(
            &mut self,
            from: ConnId,
            message: Box<dyn Any + Send>,
            reply: &mut Reply<'_, '_>,
        ) {
            let Ok(upstream) = message.downcast::<Upstream>() else {
                return;
            };
            assert_eq!(Some(from), self.backend);
            match *upstream {
                Upstream::Data(bytes) => self.got.extend_from_slice(&bytes),
                Upstream::Closed => reply.send(Status::OK, "text/plain", &self.got),
            }
        }
    }
    Arc::new(Router::new().get("/call", move |_req, reply| {
        reply.connect(backend, Duration::from_secs(1), 9);
        Flow::continue_with(Call {
            backend: None,
            got: Vec::new(),
        })
    }))
}

#[test]
fn a_handler_answers_from_an_outgoing_connection() {
    let backend_addr: std::net::SocketAddr = "127.0.0.1:6379".parse().unwrap();
    let router = backend_router(backend_addr);
    let mut conn = Driver::new(&FIXED, router.clone());
    conn.send(b"GET /call HTTP/1.1\r\nHost: x\r\n\r\n");
    let Some(Command::Connect { addr, tag, .. }) = conn.commands.pop() else {
        panic!("no connect asked: {:?}", conn.commands)
    };
    assert_eq!(addr, backend_addr);
    let backend = ConnId::new(0, 2);
    conn.call(|http, cx| http.on_connect(tag, Ok(backend), cx));
    assert_eq!(
        conn.commands.pop(),
        Some(Command::Send {
            to: backend,
            bytes: b"PING\r\n".to_vec()
        })
    );
    // The outgoing connection, served by the same core, hands what it reads
    // to the asker.
    let asker = ConnId::new(0, 1);
    let mut upstream = Http::new(&FIXED, router);
    let (mut out, mut commands) = (Vec::new(), Vec::new());
    let mut cx = Context::new(backend, std::time::Instant::now(), &mut out, &mut commands)
        .with_opener(Some(asker));
    upstream.on_open(&mut cx);
    assert_eq!(upstream.on_data(b"+PO", &mut cx).consumed, 3);
    assert_eq!(upstream.on_data(b"NG\r\n", &mut cx).consumed, 4);
    upstream.on_eof(&[], &mut cx);
    assert!(
        out.is_empty(),
        "an outgoing connection is not answered as HTTP"
    );
    assert_eq!(commands.len(), 3);
    assert_eq!(
        conn.take_out(),
        "",
        "not answered before the backend closed"
    );
    for command in commands {
        let Command::Post { from, to, message } = command else {
            panic!("{command:?}")
        };
        assert_eq!((from, to), (backend, asker));
        conn.call(|http, cx| http.on_message(from, message.0, cx));
    }
    let out = conn.take_out();
    assert!(
        out.starts_with("HTTP/1.1 200 OK\r\n") && out.ends_with("\r\n\r\n+PONG\r\n"),
        "{out}"
    );
    assert!(conn.http.is_idle() && !conn.closed);
}

#[test]
fn a_failed_or_stale_connect_is_the_exchange_s_or_nobody_s() {
    let mut conn = Driver::new(&FIXED, backend_router("127.0.0.1:1".parse().unwrap()));
    conn.send(b"GET /call HTTP/1.1\r\nHost: x\r\n\r\n");
    let Some(Command::Connect { tag, .. }) = conn.commands.pop() else {
        panic!()
    };
    let refused = std::io::Error::new(std::io::ErrorKind::ConnectionRefused, "connection refused");
    conn.call(|http, cx| http.on_connect(tag, Err(refused), cx));
    let out = conn.take_out();
    assert!(
        out.starts_with("HTTP/1.1 502 Bad Gateway\r\n") && out.ends_with("connection refused"),
        "{out}"
    );
    // The exchange is over: a late success for it closes what it opened.
    let late = ConnId::new(0, 7);
    conn.call(|http, cx| http.on_connect(tag, Ok(late), cx));
    assert_eq!(conn.commands.pop(), Some(Command::Close(late)));
    assert_eq!(conn.take_out(), "");
}

#[test]
fn a_panic_after_a_file_body_was_queued_takes_the_file_back() {
    let router = Arc::new(Router::new().get("/file", |_req, reply| {
        let file = Arc::new(std::fs::File::open("/dev/null").unwrap());
        reply
            .head(Status::OK)
            .file(crate::FileRegion::new(file, 0, 1000));
        panic!("after the file was queued");
    }));
    let mut http = Http::new(&FIXED, router);
    let (mut out, mut commands) = (Vec::new(), Vec::new());
    let mut cx = Context::new(
        ConnId::new(0, 1),
        std::time::Instant::now(),
        &mut out,
        &mut commands,
    );
    let step = http.on_data(b"GET /file HTTP/1.1\r\nHost: x\r\n\r\n", &mut cx);
    assert!(step.close);
    assert!(
        cx.take_file_regions().is_empty(),
        "the file region went out after the 500"
    );
    let text = String::from_utf8(out).unwrap();
    assert!(
        text.starts_with("HTTP/1.1 500 Internal Server Error\r\n"),
        "{text}"
    );
    assert_eq!(text.matches("HTTP/1.1").count(), 1, "{text}");
}
