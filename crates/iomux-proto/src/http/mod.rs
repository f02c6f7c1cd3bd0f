//! HTTP/1.1 for applications: one sans-I/O core and the handler API that
//! applications are written on.
//!
//! The core ([`Http`], a [`Service`]) parses request heads (with
//! `httparse`, every header kept and handed out borrowed), frames bodies
//! (Content-Length, chunked), enforces the limits and the RFC 9112 rules,
//! and owns keep-alive, pipelining order, `Expect: 100-continue`, `Date` and
//! `Server`. For each request it calls a [`Handler`] (usually a [`Router`])
//! with a [`Request`] view and a [`Reply`]; the handler answers at once or
//! returns an [`Exchange`] that gets the body as it arrives, its timers and
//! the output's progress. Malformed or oversized requests get
//! 400/408/413/414/431/501/505 with `Connection: close`, and nothing after
//! them is read. See docs/http.md for the design.
//!
//! ```
//! use iomux_proto::http::{feed_in_reads, fixed_clock, Flow, HttpConfig, HttpLimits, Router, Status};
//! static CONFIG: HttpConfig = HttpConfig::new(HttpLimits::DEFAULT, fixed_clock);
//! let app = std::sync::Arc::new(Router::new().get("/items/{id}", |req, reply| {
//!     let body = format!("item {}", req.param("id").unwrap_or_default());
//!     reply.send(Status::OK, "text/plain", body.as_bytes());
//!     Flow::Done
//! }));
//! let (out, close) = feed_in_reads(&CONFIG, app, b"GET /items/7 HTTP/1.1\r\nHost: x\r\n\r\n", &[]);
//! assert!(!close);
//! assert!(out.starts_with(b"HTTP/1.1 200 OK\r\n"));
//! assert!(out.ends_with(b"\r\n\r\nitem 7"));
//! ```

#[cfg(test)]
mod api_tests;
mod chunked;
mod date;
pub mod files;
mod handler;
mod head;
pub mod hello;
mod limits;
mod request;
mod response;
mod router;
#[cfg(test)]
mod tests;

pub use chunked::{ChunkError, ChunkedDecoder, Progress};
pub use handler::{
    handler_fn, Exchange, Flow, FnHandler, Handler, Head, Prepared, PreparedHeaders, Reply,
    Upstream,
};
pub use hello::HELLO;
pub use limits::{
    fixed_clock, system_clock, HttpConfig, HttpCounters, HttpLimits, DEFAULT_CONFIG,
    MAX_CHUNK_EXTENSIONS, MAX_HEADERS, MAX_TRAILERS,
};
pub use request::{Request, Version};
pub use response::Status;
pub use router::{Router, MAX_PARAMS};

use crate::{ConnId, Context, Service, Step};
use handler::{tx, Sending, SliceCache, Tx};
use head::{read_head, Framing, HeadOutcome, HeadProgress, RequestHead, EXPECT_CONTINUE};
use response::CONTINUE;
use std::any::Any;
use std::panic::{catch_unwind, AssertUnwindSafe};

/// Run a fresh connection serving `handler` over `input` delivered in
/// reads cut at `cuts`, the way an engine does: unconsumed bytes are offered
/// again in front of the next read, and EOF follows the last. Returns the
/// output and whether the connection asked to close. Tests and fuzz targets
/// use it to check that the split never changes the output.
///
/// ```
/// use iomux_proto::http::{feed_in_reads, hello, HttpConfig, HttpLimits, fixed_clock};
/// static CONFIG: HttpConfig = HttpConfig::new(HttpLimits::DEFAULT, fixed_clock);
/// let routes = std::sync::Arc::new(hello::routes());
/// let req = b"GET / HTTP/1.1\r\nHost: x\r\n\r\n";
/// assert_eq!(
///     feed_in_reads(&CONFIG, routes.clone(), req, &[]),
///     feed_in_reads(&CONFIG, routes, req, &[3, 17])
/// );
/// ```
pub fn feed_in_reads<H: Handler>(
    config: &'static HttpConfig,
    handler: H,
    input: &[u8],
    cuts: &[usize],
) -> (Vec<u8>, bool) {
    crate::feed_protocol_in_reads(&mut Http::new(config, handler), input, cuts)
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Phase {
    /// Waiting for (the rest of) a request head.
    Head,
    /// Reading the body of the current request.
    Body,
    /// The body has ended; the answer has not: later input waits unparsed.
    Answering,
    /// Closing: no more input is read.
    Closed,
    /// A connection a handler opened ([`Reply::connect`]): what it reads
    /// goes to the asker ([`Body::ToAsker`]) as [`Upstream`] messages.
    Upstream,
}

/// How the current request's body is being read.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Body {
    /// Content-Length bytes left.
    Length(u64),
    Chunked(ChunkedDecoder),
    /// Not a request's: an outgoing connection's whole input, for the
    /// connection that opened it (kept here, unused otherwise, so the
    /// state stays small).
    ToAsker(ConnId),
}

mod flag {
    /// Part of a request head has arrived and waits unconsumed.
    pub const PARTIAL: u8 = 1;
    /// The waiting head's request line is complete and valid.
    pub const LINE_OK: u8 = 2;
    /// The server is shutting down: no response keeps the connection.
    pub const DRAINING: u8 = 4;
    /// The peer sent its FIN while an answer was owed: close once it is sent.
    pub const PEER_DONE: u8 = 8;
}

/// One connection's HTTP/1.1 state, serving `H`: no heap memory between
/// requests (an [`Exchange`] lives only while its request does).
pub struct Http<H> {
    config: &'static HttpConfig,
    handler: H,
    /// The rest of the current request's exchange, if its handler kept one.
    exchange: Option<Box<dyn Exchange>>,
    body: Body,
    tx: Tx,
    /// How far the waiting head has been searched.
    scanned: u32,
    phase: Phase,
    flags: u8,
}

impl<H> std::fmt::Debug for Http<H> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Http")
            .field("phase", &self.phase)
            .field("body", &self.body)
            .field("tx", &self.tx)
            .field("exchange", &self.exchange.is_some())
            .finish()
    }
}

/// What a step of the state machine says about the input.
enum Next {
    /// Go on with the input at this offset.
    Go,
    /// Stop here; the rest stays unconsumed.
    Wait,
    /// Close the connection; the rest of the input is dropped.
    Close,
}

impl<H: Handler> Http<H> {
    /// A connection's state sharing `config` and `handler` with the
    /// server's other connections.
    ///
    /// ```
    /// use iomux_proto::http::{hello, HttpConfig, HttpLimits};
    /// let config = HttpConfig::leak(HttpLimits::DEFAULT);
    /// let routes = std::sync::Arc::new(hello::routes());
    /// let factory = move || iomux_proto::Http::new(config, routes.clone());
    /// let _connection = factory();
    /// ```
    pub fn new(config: &'static HttpConfig, handler: H) -> Http<H> {
        Http {
            config,
            handler,
            exchange: None,
            body: Body::Length(0),
            tx: Tx::new(),
            scanned: 0,
            phase: Phase::Head,
            flags: 0,
        }
    }

    fn has(&self, f: u8) -> bool {
        self.flags & f != 0
    }

    /// Answer with an error status (unless an answer has begun), close, and
    /// read nothing more.
    fn fail(&mut self, status: Status, slice: &mut SliceCache, cx: &mut Context) {
        if self.tx.sending == Sending::Nothing {
            self.tx.flags = 0;
            let mut reply = Reply {
                tx: &mut self.tx,
                cx,
                slice,
                config: self.config,
            };
            reply
                .head(status)
                .header("Content-Type", "text/plain")
                .body(status.explanation());
        }
        self.close_now();
    }

    fn close_now(&mut self) {
        self.phase = Phase::Closed;
        self.tx.sending = Sending::Done;
        self.exchange = None;
    }

    /// Call `f` with a [`Reply`] for the current request, catching a panic:
    /// it is this request's fault only (`500` if its answer had not begun,
    /// then the connection closes). Returns `None` after a panic.
    fn guarded<R>(
        &mut self,
        slice: &mut SliceCache,
        cx: &mut Context,
        f: impl FnOnce(&H, &mut Option<Box<dyn Exchange>>, &mut Reply) -> R,
    ) -> Option<R> {
        let mark = cx.output_mark();
        let began = self.tx.sending != Sending::Nothing;
        let config = self.config;
        let (handler, exchange) = (&self.handler, &mut self.exchange);
        let mut reply = Reply {
            tx: &mut self.tx,
            cx: &mut *cx,
            slice: &mut *slice,
            config,
        };
        match catch_unwind(AssertUnwindSafe(|| f(handler, exchange, &mut reply))) {
            Ok(r) => Some(r),
            Err(_) => {
                config.counters.count_panic();
                // What this call wrote may be half a head or half a chunk.
                cx.take_back_output(mark);
                slice.forget_output();
                // An answer that began before this call cannot become a 500.
                self.tx.sending = if began {
                    Sending::Done
                } else {
                    Sending::Nothing
                };
                self.fail(Status::INTERNAL_SERVER_ERROR, slice, cx);
                None
            }
        }
    }

    /// A head is complete; `after` is the input that follows it.
    fn begin(
        &mut self,
        head: RequestHead<'_>,
        after: &[u8],
        slice: &mut SliceCache,
        cx: &mut Context,
    ) -> Next {
        self.tx.flags = head.flags & (tx::HEAD_ONLY | tx::HTTP10 | tx::KEEP_ALIVE);
        if self.has(flag::DRAINING) {
            self.tx.flags &= !tx::KEEP_ALIVE;
        }
        self.tx.sending = Sending::Nothing;
        self.tx.seq = self.tx.seq.wrapping_add(1);
        let (body_length, body_waiting) = match head.framing {
            Framing::Empty => (Some(0), false),
            Framing::Length(n) => {
                self.body = Body::Length(n);
                (Some(n), (after.len() as u64) < n)
            }
            Framing::Chunked => {
                self.body = Body::Chunked(ChunkedDecoder::new());
                (None, after.is_empty())
            }
        };
        // The client holds the body back until it hears from us.
        if head.flags & EXPECT_CONTINUE != 0 && body_waiting {
            cx.write(CONTINUE);
        }
        let (path, query) = request::split_target(head.target);
        let request = Request::parsed(
            head.method,
            head.target,
            path,
            query,
            if head.flags & tx::HTTP10 != 0 {
                Version::Http10
            } else {
                Version::Http11
            },
            head.headers,
            body_length,
            cx.peer_addr(),
            cx.id(),
        );
        let called = self.guarded(slice, cx, |handler, exchange, reply| {
            match handler.call(&request, reply) {
                Flow::Done => {
                    // A stream the handler started and left: it ends here.
                    reply.end();
                }
                Flow::Continue(ex) => *exchange = Some(ex),
            }
        });
        if called.is_none() {
            return Next::Close;
        }
        if self.exchange.is_none() && self.tx.sending == Sending::Nothing {
            self.config.counters.count_unanswered();
            self.fail(Status::INTERNAL_SERVER_ERROR, slice, cx);
            return Next::Close;
        }
        if head.framing == Framing::Empty {
            return self.body_ended(slice, cx);
        }
        self.phase = Phase::Body;
        self.settle()
    }

    /// The body has ended: tell the exchange, then see where the request stands.
    fn body_ended(&mut self, slice: &mut SliceCache, cx: &mut Context) -> Next {
        self.phase = Phase::Answering;
        if self.exchange.is_some() {
            let called = self.guarded(slice, cx, |_, exchange, reply| {
                if let Some(ex) = exchange {
                    ex.on_body_end(reply);
                }
            });
            if called.is_none() {
                return Next::Close;
            }
        }
        self.settle()
    }

    /// After any call into the handler: close on a fault; once the answer
    /// is complete and the body has ended, finish the request.
    fn settle(&mut self) -> Next {
        if self.tx.has(tx::BROKEN) {
            self.close_now();
            return Next::Close;
        }
        if self.phase != Phase::Answering || self.tx.sending != Sending::Done {
            return Next::Go;
        }
        self.exchange = None;
        if !self.tx.has(tx::KEEP_ALIVE) || self.has(flag::PEER_DONE) {
            self.phase = Phase::Closed;
            return Next::Close;
        }
        self.phase = Phase::Head;
        self.scanned = 0;
        self.flags &= !(flag::PARTIAL | flag::LINE_OK);
        Next::Go
    }

    /// Read body bytes from `input`; returns the bytes used and what next.
    fn read_body(
        &mut self,
        input: &[u8],
        slice: &mut SliceCache,
        cx: &mut Context,
    ) -> (usize, Next) {
        let limit = self.config.limits.max_body;
        let mut body = self.body;
        let mut held = false;
        let result = self.guarded(slice, cx, |_, exchange, reply| {
            let mut offer = |data: &[u8]| -> usize {
                let taken = match exchange {
                    Some(ex) => ex.on_body(data, reply).min(data.len()),
                    None => data.len(),
                };
                held |= taken < data.len();
                taken
            };
            match &mut body {
                Body::Length(left) => {
                    let take = (input.len() as u64).min(*left) as usize;
                    let taken = if take > 0 { offer(&input[..take]) } else { 0 };
                    *left -= taken as u64;
                    Ok((taken, *left == 0))
                }
                Body::Chunked(decoder) => decoder
                    .decode_until(input, limit, offer)
                    .map(|p| (p.consumed, p.done))
                    .map_err(|e| match e {
                        ChunkError::Malformed | ChunkError::ExtensionsTooLong => {
                            Status::BAD_REQUEST
                        }
                        ChunkError::TooLarge => Status::CONTENT_TOO_LARGE,
                        ChunkError::TrailersTooLong => Status::HEADER_FIELDS_TOO_LARGE,
                    }),
                // Never: an outgoing connection parses no requests.
                Body::ToAsker(_) => Ok((0, true)),
            }
        });
        self.body = body;
        let (used, done) = match result {
            None => return (input.len(), Next::Close),
            Some(Err(status)) => {
                self.fail(status, slice, cx);
                return (input.len(), Next::Close);
            }
            Some(Ok(r)) => r,
        };
        if held {
            // Backpressure: the rest waits, and reading stops near the input
            // cap, until the exchange asks for more.
            self.tx.flags |= tx::BODY_HELD;
            cx.hold_input();
        }
        match self.settle() {
            Next::Go if done => (used, self.body_ended(slice, cx)),
            Next::Go if held || used == input.len() => (used, Next::Wait),
            next => (used, next),
        }
    }

    /// Call `f` on the current exchange outside [`Service::on_data`] (a
    /// timer, a drain notice, a message, blocking work done), then close the
    /// connection on a fault or after its last answer; input held back is
    /// offered again once the exchange wants more body or its answer went
    /// out (the next pipelined request waits in it).
    fn callback(&mut self, cx: &mut Context, f: impl FnOnce(&mut dyn Exchange, &mut Reply)) {
        let mut slice = SliceCache::new(self.config.clock);
        let called = self.guarded(&mut slice, cx, |_, exchange, reply| {
            if let Some(ex) = exchange {
                f(&mut **ex, reply);
            }
        });
        if called.is_none() || matches!(self.settle(), Next::Close) {
            cx.close();
            return;
        }
        let resumed = self.tx.has(tx::BODY_RESUMED);
        if resumed || self.phase == Phase::Head {
            self.tx.flags &= !(tx::BODY_HELD | tx::BODY_RESUMED);
            cx.release_input();
        }
    }
}

impl<H: Handler> Service for Http<H> {
    fn on_open(&mut self, cx: &mut Context) {
        if let Some(asker) = cx.opened_by() {
            self.phase = Phase::Upstream;
            self.body = Body::ToAsker(asker);
        }
    }

    fn on_data(&mut self, input: &[u8], cx: &mut Context) -> Step {
        let mut slice = SliceCache::new(self.config.clock);
        let mut at = 0;
        loop {
            match self.phase {
                Phase::Closed => return Step::close(input.len()),
                Phase::Upstream => {
                    if let (Body::ToAsker(asker), false) = (self.body, input.is_empty()) {
                        cx.post(asker, Upstream::Data(input.to_vec()));
                    }
                    return Step::keep(input.len());
                }
                // Pipelined requests wait unparsed behind an unanswered one.
                Phase::Answering => {
                    if at < input.len() {
                        cx.hold_input();
                    }
                    return Step::keep(at);
                }
                Phase::Head => {
                    if cx.output_full() {
                        // Answers owed past the engine's high-water mark: the
                        // requests behind them wait, offered again as the peer reads.
                        return Step::keep(at);
                    }
                    if self.scanned == 0 {
                        // Empty lines before a request line are ignored (RFC 9112 §2.2).
                        loop {
                            match &input[at..] {
                                [b'\r', b'\n', ..] => at += 2,
                                [b'\n', ..] => at += 1,
                                [b'\r'] => {
                                    self.flags |= flag::PARTIAL;
                                    return Step::keep(at);
                                }
                                [b'\r', ..] => {
                                    self.fail(Status::BAD_REQUEST, &mut slice, cx);
                                    return Step::close(input.len());
                                }
                                _ => break,
                            }
                        }
                    }
                    let rest = &input[at..];
                    if rest.is_empty() {
                        self.flags &= !flag::PARTIAL;
                        return Step::keep(at);
                    }
                    let mut progress = HeadProgress {
                        scanned: self.scanned,
                        line_ok: self.has(flag::LINE_OK),
                    };
                    let config = self.config;
                    let limits = &config.limits;
                    let outcome = read_head(rest, &mut progress, limits, |len, head| {
                        (len, self.begin(head, &rest[len..], &mut slice, cx))
                    });
                    match outcome {
                        HeadOutcome::Partial => {
                            self.scanned = progress.scanned;
                            self.flags |= flag::PARTIAL;
                            if progress.line_ok {
                                self.flags |= flag::LINE_OK;
                            }
                            return Step::keep(at);
                        }
                        HeadOutcome::Reject(status) => {
                            self.fail(status, &mut slice, cx);
                            return Step::close(input.len());
                        }
                        HeadOutcome::Complete((len, next)) => {
                            at += len;
                            self.scanned = 0;
                            self.flags &= !(flag::PARTIAL | flag::LINE_OK);
                            match next {
                                Next::Go => {}
                                Next::Wait => return Step::keep(at),
                                // Bytes after a closing request are dropped.
                                Next::Close => return Step::close(input.len()),
                            }
                        }
                    }
                }
                Phase::Body => {
                    let (used, next) = self.read_body(&input[at..], &mut slice, cx);
                    at += used;
                    match next {
                        Next::Go => {}
                        Next::Wait => return Step::keep(at),
                        Next::Close => return Step::close(input.len()),
                    }
                }
            }
        }
    }

    fn on_eof(&mut self, pending: &[u8], cx: &mut Context) {
        if let (Phase::Upstream, Body::ToAsker(asker)) = (self.phase, self.body) {
            self.on_data(pending, cx);
            cx.post(asker, Upstream::Closed);
            self.phase = Phase::Closed;
            return;
        }
        // Complete requests still pending are answered (a half-closed client
        // waits for them); a truncated one is dropped silently.
        if self.phase != Phase::Closed
            && !self.on_data(pending, cx).close
            && self.phase == Phase::Answering
        {
            // An answer is owed: send it, then close.
            self.flags |= flag::PEER_DONE;
            cx.allow_half_close();
            return;
        }
        self.close_now();
    }

    fn on_timeout(&mut self, cx: &mut Context) {
        if let (Phase::Upstream, Body::ToAsker(asker)) = (self.phase, self.body) {
            cx.post(asker, Upstream::Closed);
        }
        let mid_request = match self.phase {
            Phase::Head => self.has(flag::PARTIAL),
            // Once an answer has begun a status cannot follow it.
            Phase::Body | Phase::Answering => self.tx.sending == Sending::Nothing,
            Phase::Closed | Phase::Upstream => false,
        };
        if mid_request {
            let mut slice = SliceCache::new(self.config.clock);
            self.fail(Status::REQUEST_TIMEOUT, &mut slice, cx);
        }
        self.close_now();
    }

    fn on_timer(&mut self, key: u64, cx: &mut Context) {
        if self.exchange.is_some() && key >> 32 == u64::from(self.tx.seq) {
            self.callback(cx, |ex, reply| ex.on_timer(key as u32, reply));
        } // else an earlier exchange's timer
    }

    fn on_drained(&mut self, cx: &mut Context) {
        if self.exchange.is_some() && self.tx.has(tx::WANTS_WRITABLE) {
            self.tx.flags &= !tx::WANTS_WRITABLE;
            self.callback(cx, |ex, reply| ex.on_writable(reply));
        }
    }

    fn on_message(&mut self, from: ConnId, message: Box<dyn Any + Send>, cx: &mut Context) {
        if self.exchange.is_some() {
            self.callback(cx, |ex, reply| ex.on_message(from, message, reply));
        } // else no request is waiting for it
    }

    fn on_connect(&mut self, tag: u64, result: std::io::Result<ConnId>, cx: &mut Context) {
        if self.exchange.is_some() && tag >> 32 == u64::from(self.tx.seq) {
            self.callback(cx, |ex, reply| ex.on_connect(tag as u32, result, reply));
        } else if let Ok(id) = result {
            cx.close_conn(id); // its exchange is gone: nobody wants it
        }
    }

    fn on_blocking_done(
        &mut self,
        key: u64,
        result: std::io::Result<Box<dyn Any + Send>>,
        cx: &mut Context,
    ) {
        if self.exchange.is_some() && key >> 32 == u64::from(self.tx.seq) {
            self.callback(cx, |ex, reply| {
                ex.on_blocking_done(key as u32, result, reply)
            });
        }
    }

    fn on_drain(&mut self) {
        // A request in flight is answered with `Connection: close` (or, when
        // its answer already began, the connection closes after it).
        self.flags |= flag::DRAINING;
        self.tx.flags &= !tx::KEEP_ALIVE;
    }

    fn is_idle(&self) -> bool {
        match self.phase {
            Phase::Head => !self.has(flag::PARTIAL),
            Phase::Body | Phase::Answering => false,
            Phase::Closed | Phase::Upstream => true,
        }
    }

    fn on_close(&mut self, _id: ConnId) {
        self.exchange = None;
    }
}
