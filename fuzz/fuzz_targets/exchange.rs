//! The handler API under any order of events: pipelined requests to
//! handlers that answer at once, from a timer, from a message, from blocking
//! work, stream with backpressure, hold their body, answer twice or too much,
//! or panic; input cut anywhere; timers, drain notices, messages and blocking
//! results delivered in any order (stale ones included). The core must never
//! panic, never answer out of request order, keep every response well framed
//! (Content-Length or chunked, exactly), and read nothing after a close.
#![no_main]

use arbitrary::Arbitrary;
use iomux_fuzz::DEFAULT;
use iomux_proto::http::{Exchange, Flow, Reply, Router, Status};
use iomux_proto::{Command, ConnId, Context, Http, Service};
use libfuzzer_sys::fuzz_target;
use std::any::Any;
use std::sync::{Arc, OnceLock};
use std::time::Duration;

#[derive(Debug, Arbitrary)]
enum Route {
    Now,
    Timer,
    Message,
    Blocking,
    Stream(u8),
    Sized(u8, u8),
    SlowBody(u8),
    Twice,
    Panic,
    PanicLater,
    Missing,
}

#[derive(Debug, Arbitrary)]
enum Op {
    /// A request (its sequence number in `X-Seq`), optionally HTTP/1.0 or closing.
    Request { route: Route, close: bool },
    /// Raw bytes.
    Bytes(Vec<u8>),
    /// Offer the waiting input cut after this many bytes.
    Cut(u16),
    /// Fire a timer set earlier (any, even stale).
    FireTimer(u8),
    /// Tell the connection its output drained.
    Drained,
    /// Deliver a message from another connection.
    Message,
    /// Deliver a blocking result for a key seen (or a made-up one).
    Blocking(u8),
    /// The peer's FIN.
    Eof,
}

/// Writes the request's `X-Seq` back, so order can be checked.
fn seq(req: &iomux_proto::http::Request) -> String {
    req.query_param("seq").unwrap_or("0").to_string()
}

struct Later {
    seq: String,
}

impl Later {
    fn answer(&self, reply: &mut Reply, body: &[u8]) {
        if !reply.is_started() {
            reply.head(Status::OK).header("X-Seq", &self.seq).body(body);
        }
    }
}

impl Exchange for Later {
    fn on_timer(&mut self, _key: u32, reply: &mut Reply) {
        self.answer(reply, b"timer");
    }
    fn on_message(&mut self, _from: ConnId, _message: Box<dyn Any + Send>, reply: &mut Reply) {
        self.answer(reply, b"message");
    }
    fn on_blocking_done(
        &mut self,
        _key: u32,
        _r: std::io::Result<Box<dyn Any + Send>>,
        reply: &mut Reply,
    ) {
        self.answer(reply, b"blocking");
    }
}

/// Streams `left` pieces, one per drain notice.
struct Stream {
    left: u8,
}

impl Exchange for Stream {
    fn on_writable(&mut self, reply: &mut Reply) {
        if self.left == 0 {
            reply.end();
            return;
        }
        self.left -= 1;
        reply.write(b"piece");
        reply.notify_when_writable();
    }
}

/// A sized body written in pieces of `piece` bytes (maybe past its length).
struct Sized {
    piece: u8,
}

impl Exchange for Sized {
    fn on_writable(&mut self, reply: &mut Reply) {
        reply.write(&vec![b'x'; usize::from(self.piece)]);
        if !reply.is_finished() {
            reply.notify_when_writable();
        }
    }
}

/// Takes at most `take` body bytes per offer, more after each timer.
struct SlowBody {
    seq: String,
    take: u8,
    waiting: bool,
}

impl Exchange for SlowBody {
    fn on_body(&mut self, data: &[u8], reply: &mut Reply) -> usize {
        if self.waiting {
            return 0;
        }
        self.waiting = true;
        reply.set_timer(1, Duration::ZERO);
        data.len().min(usize::from(self.take))
    }
    fn on_timer(&mut self, _key: u32, reply: &mut Reply) {
        self.waiting = false;
        reply.resume_body();
    }
    fn on_body_end(&mut self, reply: &mut Reply) {
        reply
            .head(Status::OK)
            .header("X-Seq", &self.seq)
            .body(b"body");
    }
}

struct PanicLater;

impl Exchange for PanicLater {
    fn on_timer(&mut self, _key: u32, _reply: &mut Reply) {
        panic!("a deferred panic");
    }
}

fn router() -> Arc<Router> {
    static ROUTER: OnceLock<Arc<Router>> = OnceLock::new();
    ROUTER
        .get_or_init(|| {
            Arc::new(
                Router::new()
                    .get("/now", |req, reply| {
                        reply
                            .head(Status::OK)
                            .header("X-Seq", seq(req))
                            .body(b"now");
                        Flow::Done
                    })
                    .get("/timer", |req, reply| {
                        reply.set_timer(0, Duration::from_millis(5));
                        Flow::continue_with(Later { seq: seq(req) })
                    })
                    .get("/message", |req, _reply| {
                        Flow::continue_with(Later { seq: seq(req) })
                    })
                    .get("/blocking", |req, reply| {
                        // No pool in a plain context: the error is answered at once.
                        match reply.spawn_blocking(2, || 7u8) {
                            Ok(()) => Flow::continue_with(Later { seq: seq(req) }),
                            Err(_) => {
                                reply
                                    .head(Status::SERVICE_UNAVAILABLE)
                                    .header("X-Seq", seq(req))
                                    .body(b"busy");
                                Flow::Done
                            }
                        }
                    })
                    .get("/stream/{n}", |req, reply| {
                        let left = req.param("n").and_then(|n| n.parse().ok()).unwrap_or(0);
                        reply.head(Status::OK).header("X-Seq", seq(req)).stream();
                        reply.notify_when_writable();
                        Flow::continue_with(Stream { left })
                    })
                    .get("/sized/{len}/{piece}", |req, reply| {
                        let len: u64 = req.param("len").and_then(|n| n.parse().ok()).unwrap_or(0);
                        let piece = req.param("piece").and_then(|n| n.parse().ok()).unwrap_or(1);
                        reply.head(Status::OK).header("X-Seq", seq(req)).sized(len);
                        reply.notify_when_writable();
                        Flow::continue_with(Sized { piece })
                    })
                    .post("/slow/{take}", |req, _reply| {
                        let take = req.param("take").and_then(|n| n.parse().ok()).unwrap_or(1);
                        Flow::continue_with(SlowBody {
                            seq: seq(req),
                            take,
                            waiting: false,
                        })
                    })
                    .get("/twice", |req, reply| {
                        reply
                            .head(Status::OK)
                            .header("X-Seq", seq(req))
                            .body(b"one");
                        reply.send(Status::OK, "text/plain", b"two"); // a handler fault: 500 impossible, close
                        Flow::Done
                    })
                    .get("/panic", |_req, _reply| panic!("a handler panic"))
                    .get("/panic-later", |_req, reply| {
                        reply.set_timer(0, Duration::ZERO);
                        Flow::continue_with(PanicLater)
                    }),
            )
        })
        .clone()
}

fn request(route: &Route, seq: u32, close: bool) -> Vec<u8> {
    let (method, path, body): (&str, String, &[u8]) = match route {
        Route::Now => ("GET", "/now".into(), b""),
        Route::Timer => ("GET", "/timer".into(), b""),
        Route::Message => ("GET", "/message".into(), b""),
        Route::Blocking => ("GET", "/blocking".into(), b""),
        Route::Stream(n) => ("GET", format!("/stream/{}", n % 4), b""),
        Route::Sized(len, piece) => ("GET", format!("/sized/{}/{}", len % 16, piece % 8), b""),
        Route::SlowBody(take) => ("POST", format!("/slow/{}", take % 5), b"0123456789"),
        Route::Twice => ("GET", "/twice".into(), b""),
        Route::Panic => ("GET", "/panic".into(), b""),
        Route::PanicLater => ("GET", "/panic-later".into(), b""),
        Route::Missing => ("GET", "/missing".into(), b""),
    };
    let connection = if close { "Connection: close\r\n" } else { "" };
    let mut r = format!(
        "{method} {path}?seq={seq} HTTP/1.1\r\nHost: x\r\n{connection}Content-Length: {}\r\n\r\n",
        body.len()
    )
    .into_bytes();
    r.extend_from_slice(body);
    r
}

struct Driver {
    http: Http<Arc<Router>>,
    pending: Vec<u8>,
    out: Vec<u8>,
    timers: Vec<u64>,
    closed: bool,
}

impl Driver {
    fn call(&mut self, f: impl FnOnce(&mut Http<Arc<Router>>, &mut Context)) {
        if self.closed {
            return;
        }
        let id = ConnId::new(0, 1);
        let mut commands = Vec::new();
        let mut cx = Context::new(id, std::time::Instant::now(), &mut self.out, &mut commands);
        f(&mut self.http, &mut cx);
        for command in commands {
            match command {
                Command::SetTimer { key, .. } => self.timers.push(key),
                Command::Close(c) if c == id => self.closed = true,
                _ => {}
            }
        }
    }

    fn offer(&mut self, upto: usize) {
        if self.closed {
            return;
        }
        let upto = upto.min(self.pending.len());
        let input = self.pending[..upto].to_vec();
        let mut consumed = 0;
        let mut close = false;
        self.call(|http, cx| {
            let step = http.on_data(&input, cx);
            consumed = step.consumed;
            close = step.close;
        });
        assert!(consumed <= input.len());
        self.pending.drain(..consumed);
        self.closed |= close;
    }
}

/// Parse `out` as responses; return their `X-Seq` values (0 for answers
/// the core or the router wrote: errors, 404) and panic on a badly framed
/// one. Only the last body may be incomplete (a stream or a sized body still
/// being written, or cut short by a close).
fn check(mut out: &[u8]) -> Vec<u32> {
    let mut seqs = Vec::new();
    while !out.is_empty() {
        let mut headers = [httparse::EMPTY_HEADER; 16];
        let mut response = httparse::Response::new(&mut headers);
        let head = match response.parse(out) {
            Ok(httparse::Status::Complete(n)) => n,
            other => panic!(
                "bad response head {other:?}: {:?}",
                String::from_utf8_lossy(out)
            ),
        };
        let code = response.code.unwrap();
        let get = |name: &str| {
            response
                .headers
                .iter()
                .find(|h| h.name.eq_ignore_ascii_case(name))
                .map(|h| std::str::from_utf8(h.value).unwrap().to_string())
        };
        if code != 100 {
            seqs.push(get("x-seq").map_or(0, |s| s.parse().unwrap()));
        }
        let rest = &out[head..];
        if code == 100 || code == 204 || code == 304 {
            out = rest;
            continue;
        }
        if get("transfer-encoding").as_deref() == Some("chunked") {
            let mut at = 0;
            loop {
                let Some(line) = rest[at..].windows(2).position(|w| w == b"\r\n") else {
                    assert!(
                        rest[at..].iter().all(u8::is_ascii_hexdigit),
                        "a bad chunk size line"
                    );
                    return seqs;
                };
                let size =
                    usize::from_str_radix(std::str::from_utf8(&rest[at..at + line]).unwrap(), 16)
                        .unwrap();
                let end = at + line + 2 + size + 2;
                if end > rest.len() {
                    return seqs;
                }
                assert_eq!(&rest[end - 2..end], b"\r\n");
                at = end;
                if size == 0 {
                    break;
                }
            }
            out = &rest[at..];
        } else {
            let length: usize = get("content-length")
                .expect("a framed response")
                .parse()
                .unwrap();
            if rest.len() < length {
                return seqs;
            }
            out = &rest[length..];
        }
    }
    seqs
}

/// The panics this target's handlers cause on purpose (the core catches
/// them); libFuzzer's panic hook would abort on them, any other still does.
const DELIBERATE: &[&str] = &[
    "a handler panic",
    "a deferred panic",
    "a response was already started for this request",
];

fn let_deliberate_panics_unwind() {
    static HOOK: std::sync::Once = std::sync::Once::new();
    HOOK.call_once(|| {
        let abort = std::panic::take_hook();
        std::panic::set_hook(Box::new(move |info| {
            let payload = info.payload();
            let message = payload
                .downcast_ref::<&str>()
                .copied()
                .or_else(|| payload.downcast_ref::<String>().map(String::as_str));
            if !message.is_some_and(|m| DELIBERATE.contains(&m)) {
                abort(info);
            }
        }));
    });
}

fuzz_target!(|ops: Vec<Op>| {
    let_deliberate_panics_unwind();
    let mut d = Driver {
        http: Http::new(&DEFAULT, router()),
        pending: Vec::new(),
        out: Vec::new(),
        timers: Vec::new(),
        closed: false,
    };
    let mut next_seq = 1;
    let mut sent = Vec::new();
    for op in ops.iter().take(64) {
        match op {
            Op::Request { route, close } => {
                let r = request(route, next_seq, *close);
                sent.push(next_seq);
                next_seq += 1;
                d.pending.extend_from_slice(&r);
                d.offer(usize::MAX);
            }
            Op::Bytes(bytes) => {
                d.pending.extend_from_slice(&bytes[..bytes.len().min(256)]);
                d.offer(usize::MAX);
            }
            Op::Cut(n) => d.offer(usize::from(*n)),
            Op::FireTimer(i) => {
                if !d.timers.is_empty() {
                    let key = d.timers.remove(usize::from(*i) % d.timers.len());
                    d.call(|http, cx| http.on_timer(key, cx));
                    d.offer(usize::MAX);
                }
            }
            Op::Drained => {
                d.call(|http, cx| http.on_drained(cx));
                d.offer(usize::MAX);
            }
            Op::Message => {
                d.call(|http, cx| http.on_message(ConnId::new(0, 9), Box::new(()), cx));
                d.offer(usize::MAX);
            }
            Op::Blocking(k) => {
                let key = (u64::from(*k % 4) << 32) | 2;
                d.call(|http, cx| http.on_blocking_done(key, Ok(Box::new(7u8)), cx));
                d.offer(usize::MAX);
            }
            Op::Eof => {
                let pending = std::mem::take(&mut d.pending);
                d.call(|http, cx| http.on_eof(&pending, cx));
                d.closed = true;
            }
        }
    }
    let seqs = check(&d.out);
    // Answers in request order: the sequence numbers seen rise.
    let numbered: Vec<u32> = seqs.iter().copied().filter(|&s| s != 0).collect();
    assert!(
        numbered.windows(2).all(|w| w[0] < w[1]),
        "out of order: {seqs:?}"
    );
    assert!(numbered.iter().all(|s| sent.contains(s)));
});
