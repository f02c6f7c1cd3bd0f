//! The handler API: what an application writes on the HTTP core.
//!
//! A [`Handler`] is called once per request with the parsed [`Request`] and a
//! [`Reply`] to answer through. It answers at once (and returns
//! [`Flow::Done`]) or hands back an [`Exchange`] that carries the rest of the
//! request: its body as it arrives, its timers, the moments the client has
//! taken the output sent so far. The core writes the status line, `Server`,
//! `Date`, the framing (`Content-Length` or chunked) and `Connection`, and
//! enforces the rules a handler could break: no body on HEAD, 204 or 304,
//! and exactly the announced length (more or less closes the connection and
//! is counted, never a corrupt stream).

use super::date::DATE_LEN;
use super::limits::HttpConfig;
use super::request::Request;
use super::response::{is_core_header, is_tchar, is_value_byte, Persist, Status, SERVER};
use crate::{ConnId, Context, FileRegion};
use std::any::Any;
use std::io;
use std::sync::Arc;
use std::time::Duration;

/// Answers requests. One handler serves every connection of a server (it
/// is shared across loop threads: keep state behind a lock or atomics).
///
/// ```
/// use iomux_proto::http::{Flow, Handler, Reply, Request, Status};
/// struct Hello;
/// impl Handler for Hello {
///     fn call(&self, req: &Request, reply: &mut Reply) -> Flow {
///         let body = format!("hello from {}", req.path());
///         reply.send(Status::OK, "text/plain", body.as_bytes());
///         Flow::Done
///     }
/// }
/// ```
pub trait Handler: Send + Sync + 'static {
    /// A request head arrived. Answer through `reply` and return
    /// [`Flow::Done`], or return [`Flow::Continue`] with what carries the
    /// exchange on (to read the body, answer later, or stream).
    fn call(&self, req: &Request<'_>, reply: &mut Reply<'_, '_>) -> Flow;
}

impl<H: Handler + ?Sized> Handler for Arc<H> {
    fn call(&self, req: &Request<'_>, reply: &mut Reply<'_, '_>) -> Flow {
        (**self).call(req, reply)
    }
}

impl<H: Handler + ?Sized> Handler for Box<H> {
    fn call(&self, req: &Request<'_>, reply: &mut Reply<'_, '_>) -> Flow {
        (**self).call(req, reply)
    }
}

/// A closure as a [`Handler`] (see [`handler_fn`]).
pub struct FnHandler<F>(F);

impl<F> Handler for FnHandler<F>
where
    F: Fn(&Request<'_>, &mut Reply<'_, '_>) -> Flow + Send + Sync + 'static,
{
    fn call(&self, req: &Request<'_>, reply: &mut Reply<'_, '_>) -> Flow {
        (self.0)(req, reply)
    }
}

/// Make a [`Handler`] of a closure.
///
/// ```
/// use iomux_proto::http::{handler_fn, Flow, Status};
/// let ok = handler_fn(|_req, reply| {
///     reply.send(Status::OK, "text/plain", b"ok");
///     Flow::Done
/// });
/// # let _ = ok;
/// ```
pub fn handler_fn<F>(f: F) -> FnHandler<F>
where
    F: Fn(&Request<'_>, &mut Reply<'_, '_>) -> Flow + Send + Sync + 'static,
{
    FnHandler(f)
}

/// What a handler's call leaves behind.
pub enum Flow {
    /// The handler is done with this request: its answer is complete (or,
    /// for a stream it started, ends now). A body it did not read is read
    /// and discarded by the core. Returning `Done` without answering is a
    /// handler fault: the client gets `500` and the connection closes.
    Done,
    /// The exchange goes on in this object: it gets the body, its timers and
    /// the output's progress until it has answered and the body has ended.
    Continue(Box<dyn Exchange>),
}

impl Flow {
    /// [`Flow::Continue`] with `exchange` boxed.
    pub fn continue_with(exchange: impl Exchange + 'static) -> Flow {
        Flow::Continue(Box::new(exchange))
    }
}

/// The rest of one request's exchange, after its handler returned
/// [`Flow::Continue`]. Each method is called on the connection's loop; the
/// next pipelined request is not parsed until this one's answer is complete
/// and its body has ended (so answers stay in request order).
pub trait Exchange: Send {
    /// Body bytes, as they arrive (decoded, for a chunked body). Return how
    /// many were taken: taking fewer leaves the rest in the connection's
    /// input and stops reading it; call [`Reply::resume_body`] when ready
    /// for more. The default takes and drops everything.
    fn on_body(&mut self, data: &[u8], reply: &mut Reply<'_, '_>) -> usize {
        let _ = reply;
        data.len()
    }

    /// The body ended (at once for a request without one).
    fn on_body_end(&mut self, reply: &mut Reply<'_, '_>) {
        let _ = reply;
    }

    /// A timer set with [`Reply::set_timer`] fired.
    fn on_timer(&mut self, key: u32, reply: &mut Reply<'_, '_>) {
        let _ = (key, reply);
    }

    /// The client has taken the output sent so far, after
    /// [`Reply::notify_when_writable`]: the moment to write more of a stream.
    fn on_writable(&mut self, reply: &mut Reply<'_, '_>) {
        let _ = reply;
    }

    /// A value another connection posted to this one
    /// ([`Context::post`]): an event for a long-poll or a stream. The
    /// default drops it.
    fn on_message(
        &mut self,
        from: ConnId,
        message: Box<dyn Any + Send>,
        reply: &mut Reply<'_, '_>,
    ) {
        let _ = (from, message, reply);
    }

    /// A connection asked for with [`Reply::connect`] opened (`Ok` with its
    /// id: write to it with [`Context::send_to`] through
    /// [`Reply::context`]) or failed. What it then reads comes to
    /// [`Exchange::on_message`] as [`Upstream`] messages from that id.
    fn on_connect(&mut self, tag: u32, result: io::Result<ConnId>, reply: &mut Reply<'_, '_>) {
        let _ = (tag, result, reply);
    }

    /// Work started with [`Reply::spawn_blocking`] finished: its result
    /// (`downcast` it to the work's type), or why it failed (it panicked).
    fn on_blocking_done(
        &mut self,
        key: u32,
        result: io::Result<Box<dyn Any + Send>>,
        reply: &mut Reply<'_, '_>,
    ) {
        let _ = (key, result, reply);
    }
}

/// How the current response's body goes out.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Sending {
    /// Nothing written yet.
    Nothing,
    /// Head written; this many announced body bytes still to write.
    Sized(u64),
    /// Head written; chunks until [`Reply::end`].
    Chunked,
    /// Head written; bytes until the connection closes (an HTTP/1.0 stream).
    UntilClose,
    /// Complete.
    Done,
}

pub(crate) mod tx {
    /// HEAD request: the head only.
    pub const HEAD_ONLY: u8 = 1;
    /// HTTP/1.0 request.
    pub const HTTP10: u8 = 2;
    /// The connection persists after this response.
    pub const KEEP_ALIVE: u8 = 4;
    /// Close the connection now: a fault (a panic, a length mismatch).
    pub const BROKEN: u8 = 8;
    /// The exchange asked to hear when output drains.
    pub const WANTS_WRITABLE: u8 = 16;
    /// The exchange took less body than offered and waits to be asked again.
    pub const BODY_HELD: u8 = 32;
    /// The exchange asked for more body after holding it.
    pub const BODY_RESUMED: u8 = 64;
    /// The response has no body (HEAD, 204, 304): body writes are dropped.
    pub const NO_BODY: u8 = 128;
}

/// The current request's response, as the core and its [`Reply`] see it.
#[derive(Debug)]
pub(crate) struct Tx {
    pub sending: Sending,
    pub flags: u8,
    /// The request's number on its connection: timers of an earlier
    /// exchange never reach a later one.
    pub seq: u32,
}

impl Tx {
    pub(crate) fn new() -> Tx {
        Tx {
            sending: Sending::Nothing,
            flags: 0,
            seq: 0,
        }
    }

    pub(crate) fn has(&self, f: u8) -> bool {
        self.flags & f != 0
    }

    fn persist(&self) -> Persist {
        match (self.has(tx::KEEP_ALIVE), self.has(tx::HTTP10)) {
            (false, _) => Persist::Close,
            (true, true) => Persist::KeepAlive,
            (true, false) => Persist::Default,
        }
    }

    /// A handler broke the framing it announced: close, count.
    fn mismatch(&mut self, config: &HttpConfig) {
        config.counters.count_length_mismatch();
        self.flags |= tx::BROKEN;
        self.flags &= !tx::KEEP_ALIVE;
        self.sending = Sending::Done;
    }
}

/// What the responses to one input slice share: the `Date` value, fetched
/// at most once per slice, and where the slice's first [`Prepared`]
/// response lies in the output, so that the same one pipelined behind it is
/// copied rather than rendered again (byte for byte the same within one
/// slice, Date included).
pub(crate) struct SliceCache {
    clock: fn() -> u64,
    date: Option<[u8; DATE_LEN]>,
    /// `out[range]` is `prepared` sent whole with `Persist::Default`.
    copied: Option<(*const Prepared, std::ops::Range<usize>)>,
}

impl SliceCache {
    pub(crate) fn new(clock: fn() -> u64) -> SliceCache {
        SliceCache {
            clock,
            date: None,
            copied: None,
        }
    }

    /// Output was taken back: nothing in it may be copied any more.
    pub(crate) fn forget_output(&mut self) {
        self.copied = None;
    }

    pub(crate) fn date(&mut self) -> &[u8; DATE_LEN] {
        let clock = self.clock;
        self.date
            .get_or_insert_with(|| super::date::http_date(clock()))
    }
}

/// How a handler answers: the response head, then the body as bytes, a
/// sized stream or a chunked stream; plus the connection's timers and
/// [`Context`]. Output goes straight into the connection's output buffer.
pub struct Reply<'r, 'c> {
    pub(crate) tx: &'r mut Tx,
    pub(crate) cx: &'r mut Context<'c>,
    pub(crate) slice: &'r mut SliceCache,
    pub(crate) config: &'static HttpConfig,
}

impl<'r, 'c> Reply<'r, 'c> {
    /// Start the response with `status` (not 1xx: the core sends
    /// `100 Continue` itself). Add headers to the [`Head`], then finish it
    /// with a body.
    ///
    /// # Panics
    /// If the response was already started, or `status` is 1xx (handler
    /// faults: the connection gets `500`, or closes if its answer began).
    pub fn head(&mut self, status: Status) -> Head<'_, 'r, 'c> {
        assert!(
            self.tx.sending == Sending::Nothing,
            "a response was already started for this request"
        );
        assert!(
            status.code() >= 200,
            "1xx responses are sent by the HTTP core, not by handlers"
        );
        let out = self.cx.out();
        let start = out.len();
        status.write_line(out);
        out.extend_from_slice(SERVER);
        Head {
            reply: self,
            status,
            start,
            finished: false,
        }
    }

    /// The whole response at once: `status`, a `Content-Type`, and `body`.
    pub fn send(&mut self, status: Status, content_type: &str, body: &[u8]) {
        self.head(status)
            .header("Content-Type", content_type)
            .body(body);
    }

    /// Send a [`Prepared`] response: its status line, headers and body
    /// were rendered once; only `Date` and `Connection` are added (and the
    /// body left out for HEAD). The cheapest way to send a constant answer.
    pub fn send_prepared(&mut self, prepared: &Prepared) {
        assert!(
            self.tx.sending == Sending::Nothing,
            "a response was already started for this request"
        );
        self.tx.sending = Sending::Done;
        let persist = self.tx.persist();
        let with_body = !self.tx.has(tx::HEAD_ONLY) && !prepared.status.forbids_body();
        if !with_body {
            self.tx.flags |= tx::NO_BODY;
        }
        let copyable = persist == Persist::Default && with_body;
        let identity: *const Prepared = prepared;
        if let (true, Some((first, range))) = (copyable, &self.slice.copied) {
            if *first == identity {
                let range = range.clone();
                self.cx.out().extend_from_within(range);
                return;
            }
        }
        let date = *self.slice.date();
        let out = self.cx.out();
        let start = out.len();
        let persist = persist.header();
        out.reserve(prepared.bytes.len() + DATE_LEN + 10 + persist.len());
        out.extend_from_slice(&prepared.bytes[..prepared.head_len]);
        out.extend_from_slice(b"Date: ");
        out.extend_from_slice(&date);
        out.extend_from_slice(b"\r\n");
        out.extend_from_slice(persist);
        out.extend_from_slice(b"\r\n");
        if with_body {
            out.extend_from_slice(&prepared.bytes[prepared.head_len..]);
        }
        if copyable && self.slice.copied.is_none() {
            let end = out.len();
            self.slice.copied = Some((identity, start..end));
        }
    }

    /// Write body bytes of a response started with [`Head::sized`] or
    /// [`Head::stream`]. Bytes past an announced length are not sent: the
    /// connection closes after the announced ones, counted. Ignored for a
    /// HEAD request (which has no body).
    pub fn write(&mut self, data: &[u8]) {
        match self.tx.sending {
            Sending::Sized(left) => {
                let take = (data.len() as u64).min(left);
                self.cx.out().extend_from_slice(&data[..take as usize]);
                if take < data.len() as u64 {
                    self.tx.mismatch(self.config);
                } else if take == left {
                    self.tx.sending = Sending::Done;
                } else {
                    self.tx.sending = Sending::Sized(left - take);
                }
            }
            Sending::Chunked if data.is_empty() => {}
            Sending::Chunked => {
                let out = self.cx.out();
                write_hex(data.len() as u64, out);
                out.extend_from_slice(b"\r\n");
                out.extend_from_slice(data);
                out.extend_from_slice(b"\r\n");
            }
            Sending::UntilClose => self.cx.out().extend_from_slice(data),
            Sending::Done if self.tx.has(tx::NO_BODY) || data.is_empty() => {}
            Sending::Nothing | Sending::Done => self.tx.mismatch(self.config),
        }
    }

    /// Write `region` of a file as part of the body, after the bytes written
    /// so far: it counts against a sized body's length as [`Reply::write`]
    /// does (a chunked body gets it as one chunk), and the connection core
    /// sends it without copying it where the engine can (`sendfile`). A
    /// HEAD request sends nothing.
    pub fn write_file(&mut self, region: FileRegion) {
        let len = region.len();
        match self.tx.sending {
            Sending::Sized(left) if len <= left => {
                self.cx.send_file(region);
                self.tx.sending = if len == left {
                    Sending::Done
                } else {
                    Sending::Sized(left - len)
                };
            }
            Sending::Chunked if len == 0 => {}
            Sending::Chunked => {
                let out = self.cx.out();
                write_hex(len, out);
                out.extend_from_slice(b"\r\n");
                self.cx.send_file(region);
                self.cx.out().extend_from_slice(b"\r\n");
            }
            Sending::UntilClose => self.cx.send_file(region),
            Sending::Done if self.tx.has(tx::NO_BODY) || len == 0 => {}
            Sending::Sized(_) | Sending::Nothing | Sending::Done => self.tx.mismatch(self.config),
        }
    }

    /// End a streamed response: the last chunk of a chunked one; the close
    /// of a close-delimited one. A sized one that is short of its length
    /// closes the connection, counted. Nothing for a finished response.
    pub fn end(&mut self) {
        match self.tx.sending {
            Sending::Sized(_) => self.tx.mismatch(self.config),
            Sending::Chunked => {
                self.cx.out().extend_from_slice(b"0\r\n\r\n");
                self.tx.sending = Sending::Done;
            }
            Sending::UntilClose => {
                self.tx.flags &= !tx::KEEP_ALIVE;
                self.tx.sending = Sending::Done;
            }
            Sending::Nothing | Sending::Done => {}
        }
    }

    /// Whether the response head has been written.
    pub fn is_started(&self) -> bool {
        self.tx.sending != Sending::Nothing
    }

    /// Whether the response is complete.
    pub fn is_finished(&self) -> bool {
        self.tx.sending == Sending::Done
    }

    /// The body bytes still owed by a sized response (`None` otherwise).
    pub fn remaining(&self) -> Option<u64> {
        match self.tx.sending {
            Sending::Sized(left) => Some(left),
            _ => None,
        }
    }

    /// Close the connection after this response (`Connection: close` if
    /// its head is not written yet).
    pub fn close_after(&mut self) {
        self.tx.flags &= !tx::KEEP_ALIVE;
    }

    /// Call [`Exchange::on_timer`] with `key` once `after` has passed
    /// (replacing a timer of the same key); timers die with the exchange.
    pub fn set_timer(&mut self, key: u32, after: Duration) {
        let key = timer_key(self.tx.seq, key);
        self.cx.set_timer(key, after);
    }

    /// Cancel timer `key`.
    pub fn cancel_timer(&mut self, key: u32) {
        let key = timer_key(self.tx.seq, key);
        self.cx.cancel_timer(key);
    }

    /// Call [`Exchange::on_writable`] once the client has taken everything
    /// sent so far (a stream's producer writes its next piece then, so a
    /// slow reader holds at most one piece of it in memory).
    pub fn notify_when_writable(&mut self) {
        self.tx.flags |= tx::WANTS_WRITABLE;
        self.cx.notify_when_drained();
    }

    /// Run `work` on the server's worker threads, off the event loop (a
    /// database call, a disk read), and call [`Exchange::on_blocking_done`]
    /// with `key` and its result back on the loop. Errors at once when the
    /// pool's queue is full (answer "busy", or try later) or the engine has
    /// no pool (see [`Context::spawn_blocking`]).
    pub fn spawn_blocking<T: Any + Send>(
        &mut self,
        key: u32,
        work: impl FnOnce() -> T + Send + 'static,
    ) -> io::Result<()> {
        let key = timer_key(self.tx.seq, key);
        self.cx.spawn_blocking(key, work)
    }

    /// Open a TCP connection to `addr` (a backend to call), within
    /// `timeout`; [`Exchange::on_connect`] gets `tag` and the outcome. The
    /// HTTP core serves that connection as a pipe: its input comes to this
    /// exchange as [`Upstream`] messages. Close it with
    /// [`Context::close_conn`] when done (it also closes when this
    /// connection does not want it any more: its messages are then dropped).
    /// Its end is told as [`Upstream::Closed`] when the backend closes or
    /// times out; a reset or a server shutdown ends it without a word, so an
    /// exchange that must answer anyway sets a timer too.
    pub fn connect(&mut self, addr: std::net::SocketAddr, timeout: Duration, tag: u32) {
        let tag = timer_key(self.tx.seq, tag);
        self.cx.connect(addr, timeout, tag);
    }

    /// After [`Exchange::on_body`] took less than it was offered: offer the
    /// rest (and read more) again.
    pub fn resume_body(&mut self) {
        if self.tx.has(tx::BODY_HELD) {
            self.tx.flags |= tx::BODY_RESUMED;
        }
    }

    /// The connection's [`Context`]: its id and addresses, messages to
    /// other connections, outgoing connections. Write the response through
    /// this `Reply`, not through the context, and use [`Reply::set_timer`]
    /// rather than the context's timers (the core owns their keys).
    pub fn context(&mut self) -> &mut Context<'c> {
        self.cx
    }
}

/// What a connection opened with [`Reply::connect`] read, delivered to the
/// asking exchange's [`Exchange::on_message`] (`downcast::<Upstream>()`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Upstream {
    /// Bytes as they arrived, in order.
    Data(Vec<u8>),
    /// The other side closed (after its last `Data`).
    Closed,
}

/// A timer (or blocking work, or connect) key of the connection: the exchange's request
/// number and the handler's key.
pub(crate) fn timer_key(seq: u32, key: u32) -> u64 {
    (u64::from(seq) << 32) | u64::from(key)
}

fn write_hex(mut n: u64, out: &mut Vec<u8>) {
    let mut digits = [0u8; 16];
    let mut i = digits.len();
    loop {
        i -= 1;
        digits[i] = b"0123456789abcdef"[(n & 15) as usize];
        n >>= 4;
        if n == 0 {
            break;
        }
    }
    out.extend_from_slice(&digits[i..]);
}

/// A constant response rendered once (status line, `Server`, the given
/// headers, `Content-Length` and the body), sent with
/// [`Reply::send_prepared`].
///
/// ```
/// use iomux_proto::http::{Flow, Prepared, Router, Status};
/// let hello = Prepared::new(Status::OK, &[("Content-Type", "text/plain")], b"Hello");
/// let router = Router::new().get("/", move |_req, reply| {
///     reply.send_prepared(&hello);
///     Flow::Done
/// });
/// # let _ = router;
/// ```
#[derive(Debug, Clone)]
pub struct Prepared {
    status: Status,
    /// The head without `Date`, `Connection` and the empty line; then the body.
    bytes: Box<[u8]>,
    head_len: usize,
}

impl Prepared {
    /// Render `status`, `headers` and `body`.
    ///
    /// # Panics
    /// On a 1xx status or a header [`Head::header`] refuses.
    pub fn new(status: Status, headers: &[(&str, &str)], body: &[u8]) -> Prepared {
        assert!(
            status.code() >= 200,
            "1xx responses are sent by the HTTP core, not by handlers"
        );
        let mut bytes = Vec::new();
        status.write_line(&mut bytes);
        bytes.extend_from_slice(SERVER);
        for (name, value) in headers {
            write_header(&mut bytes, name, value.as_bytes());
        }
        if !status.forbids_body() {
            bytes.extend_from_slice(b"Content-Length: ");
            bytes.extend_from_slice(itoa::Buffer::new().format(body.len()).as_bytes());
            bytes.extend_from_slice(b"\r\n");
        }
        let head_len = bytes.len();
        if !status.forbids_body() {
            bytes.extend_from_slice(body);
        }
        Prepared {
            status,
            bytes: bytes.into_boxed_slice(),
            head_len,
        }
    }
}

/// Header fields checked and rendered once, then added to many responses
/// with [`Head::headers`] at the cost of one copy (a static file's type and
/// validators, kept with the file while it is unchanged).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct PreparedHeaders {
    bytes: Box<[u8]>,
}

impl PreparedHeaders {
    /// Render `fields` in order.
    ///
    /// # Panics
    /// On a field [`Head::header`] refuses.
    pub fn new<'n, 'v>(fields: impl IntoIterator<Item = (&'n str, &'v [u8])>) -> PreparedHeaders {
        let mut bytes = Vec::new();
        for (name, value) in fields {
            write_header(&mut bytes, name, value);
        }
        PreparedHeaders {
            bytes: bytes.into_boxed_slice(),
        }
    }

    /// The rendered fields, each `name: value` CRLF.
    pub fn as_bytes(&self) -> &[u8] {
        &self.bytes
    }
}

/// Append `name: value` CRLF after checking the field is one a handler may
/// send (see [`Head::header`]).
fn write_header(out: &mut Vec<u8>, name: &str, value: &[u8]) {
    let name_ok = !name.is_empty() && name.bytes().all(is_tchar);
    assert!(name_ok, "invalid response header name {name:?}");
    assert!(
        !is_core_header(name.as_bytes()),
        "the HTTP core writes {name} itself: give the body (or its length) instead"
    );
    assert!(
        value.iter().all(|&b| is_value_byte(b)),
        "response header {name} has a CR, LF or NUL in its value"
    );
    out.reserve(name.len() + value.len() + 4);
    out.extend_from_slice(name.as_bytes());
    out.extend_from_slice(b": ");
    out.extend_from_slice(value);
    out.extend_from_slice(b"\r\n");
}

/// A response head being written: add headers, then finish it with one of
/// [`Head::body`], [`Head::file`], [`Head::sized`] or [`Head::stream`]. Dropped unfinished,
/// it takes back what it wrote.
#[must_use = "finish the head with body(), sized() or stream()"]
pub struct Head<'h, 'r, 'c> {
    reply: &'h mut Reply<'r, 'c>,
    status: Status,
    start: usize,
    finished: bool,
}

/// How a finished head frames its body.
enum Framing {
    Length(u64),
    Chunked,
    UntilClose,
}

impl Head<'_, '_, '_> {
    /// Add a header field. `Content-Length`, `Transfer-Encoding`,
    /// `Connection`, `Date` and `Server` are the core's.
    ///
    /// # Panics
    /// On a name that is not a token or is one of the core's, or a value
    /// with CR, LF or NUL (handler faults, answered with `500`).
    pub fn header(self, name: &str, value: impl AsRef<[u8]>) -> Self {
        write_header(self.reply.cx.out(), name, value.as_ref());
        self
    }

    /// Add every field of `headers`, as [`Head::header`] would one by one.
    pub fn headers(self, headers: &PreparedHeaders) -> Self {
        self.reply.cx.out().extend_from_slice(&headers.bytes);
        self
    }

    /// Finish with `body` (its `Content-Length` computed); a HEAD request,
    /// 204 and 304 get no body.
    pub fn body(mut self, body: &[u8]) {
        let with_body = self.finish(Framing::Length(body.len() as u64));
        if with_body {
            self.reply.cx.out().extend_from_slice(body);
        }
        self.reply.tx.sending = Sending::Done;
    }

    /// Finish with `Content-Length: length`; write the body with
    /// [`Reply::write`] (it completes when `length` bytes are written).
    pub fn sized(mut self, length: u64) {
        let with_body = self.finish(Framing::Length(length));
        self.reply.tx.sending = if with_body && length > 0 {
            Sending::Sized(length)
        } else {
            Sending::Done
        };
    }

    /// Finish with `region` of a file as the body (`Content-Length` its
    /// length), sent by the connection core after the head without copying
    /// it where the engine can (`sendfile`); a HEAD request, 204 and 304 get
    /// no body.
    pub fn file(mut self, region: FileRegion) {
        let length = region.len();
        let with_body = self.finish(Framing::Length(length));
        if with_body && length > 0 {
            self.reply.cx.send_file(region);
        }
        self.reply.tx.sending = Sending::Done;
    }

    /// Finish with a body of unknown length, written with [`Reply::write`]
    /// and ended with [`Reply::end`]: chunked on HTTP/1.1, delimited by the
    /// connection's close on HTTP/1.0.
    pub fn stream(mut self) {
        let http10 = self.reply.tx.has(tx::HTTP10);
        let framing = if http10 {
            Framing::UntilClose
        } else {
            Framing::Chunked
        };
        let with_body = self.finish(framing);
        self.reply.tx.sending = match (with_body, http10) {
            (false, _) => Sending::Done,
            (true, true) => Sending::UntilClose,
            (true, false) => Sending::Chunked,
        };
    }

    /// Write the framing, `Date`, `Connection` and the empty line; returns
    /// whether a body follows.
    fn finish(&mut self, framing: Framing) -> bool {
        self.finished = true;
        let no_body = self.status.forbids_body();
        let reply = &mut *self.reply;
        if let Framing::UntilClose = framing {
            reply.tx.flags &= !tx::KEEP_ALIVE;
        }
        let persist = reply.tx.persist().header();
        let date = *reply.slice.date();
        let out = reply.cx.out();
        let mut length = itoa::Buffer::new();
        match framing {
            _ if no_body => {}
            Framing::Length(n) => {
                out.extend_from_slice(b"Content-Length: ");
                out.extend_from_slice(length.format(n).as_bytes());
                out.extend_from_slice(b"\r\n");
            }
            Framing::Chunked => out.extend_from_slice(b"Transfer-Encoding: chunked\r\n"),
            Framing::UntilClose => {}
        }
        out.reserve(DATE_LEN + 10 + persist.len());
        out.extend_from_slice(b"Date: ");
        out.extend_from_slice(&date);
        out.extend_from_slice(b"\r\n");
        out.extend_from_slice(persist);
        out.extend_from_slice(b"\r\n");
        let with_body = !no_body && !reply.tx.has(tx::HEAD_ONLY);
        if !with_body {
            reply.tx.flags |= tx::NO_BODY;
        }
        with_body
    }
}

impl Drop for Head<'_, '_, '_> {
    fn drop(&mut self) {
        if !self.finished {
            self.reply.cx.out().truncate(self.start);
        }
    }
}
