//! HTTP/1.1 hello-world server as a sans-I/O state machine.
//!
//! Routes: `GET`/`HEAD` `/` and `/plaintext` answer `Hello, World!`; `POST
//! /echo` answers its body (Content-Length or chunked); other paths 404; other
//! methods on those paths 405 with `Allow`. Keep-alive and pipelining follow
//! RFC 9112: every complete request in one input slice is answered in that
//! call, in order, into the same output buffer, so the engine writes once.
//! Malformed or oversized requests get 400/408/413/414/431/501/505 with
//! `Connection: close`, and nothing after them is read.
//!
//! ```
//! use iomux_proto::{Http, Protocol};
//! let mut http = Http::default();
//! let mut out = Vec::new();
//! let step = http.on_input(b"GET / HTTP/1.1\r\nHost: x\r\n\r\n", &mut out);
//! assert!(!step.close);
//! assert!(out.starts_with(b"HTTP/1.1 200 OK\r\n"));
//! assert!(out.ends_with(b"\r\n\r\nHello, World!"));
//! ```

mod chunked;
mod date;
pub mod files;
mod head;
mod limits;
mod response;
#[cfg(test)]
mod tests;

pub use chunked::{ChunkError, ChunkedDecoder, Progress};
pub use limits::{
    fixed_clock, system_clock, HttpConfig, HttpLimits, DEFAULT_CONFIG, MAX_CHUNK_EXTENSIONS,
    MAX_HEADERS, MAX_TRAILERS,
};
pub use response::Status;

use crate::{Protocol, Step};
use date::{http_date, DATE_LEN};
use head::{read_head, Framing, HeadOutcome, HeadProgress, RequestHead, Route};
use response::{Persist, Response, CONTINUE};
use std::ops::Range;

/// Run a fresh connection over `input` delivered in reads cut at `cuts`, the
/// way an engine does: unconsumed bytes are offered again in front of the
/// next read, and EOF follows the last. Returns the output and whether the
/// protocol asked to close. Tests and fuzz targets use it to check that the
/// split never changes the output.
///
/// ```
/// use iomux_proto::http::{feed_in_reads, HttpConfig, HttpLimits, fixed_clock};
/// static CONFIG: HttpConfig = HttpConfig { limits: HttpLimits::DEFAULT, clock: fixed_clock };
/// let req = b"GET / HTTP/1.1\r\nHost: x\r\n\r\n";
/// assert_eq!(feed_in_reads(&CONFIG, req, &[]), feed_in_reads(&CONFIG, req, &[3, 17]));
/// ```
pub fn feed_in_reads(config: &'static HttpConfig, input: &[u8], cuts: &[usize]) -> (Vec<u8>, bool) {
    crate::feed_protocol_in_reads(&mut Http::new(config), input, cuts)
}

/// The body of the hello-world routes.
pub const HELLO: &[u8] = b"Hello, World!";

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Phase {
    /// Waiting for (the rest of) a request head.
    Head,
    /// Reading the body of the current request.
    Body,
    /// Closing: no more input is read.
    Closed,
}

/// How the current request's body is being read.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Body {
    /// Content-Length bytes left.
    Length(u64),
    Chunked(ChunkedDecoder),
}

mod flag {
    /// Part of a request head has arrived and waits unconsumed.
    pub const PARTIAL: u8 = 1;
    /// The waiting head's request line is complete and valid.
    pub const LINE_OK: u8 = 2;
    /// HEAD request: headers only.
    pub const HEAD_ONLY: u8 = 4;
    /// HTTP/1.0 request.
    pub const HTTP10: u8 = 8;
    /// The connection persists after this response.
    pub const KEEP_ALIVE: u8 = 16;
    /// This request's response headers are already out (streamed echo).
    pub const STARTED: u8 = 32;
    /// The request asks for `100 Continue` (in a parsed head only).
    pub const EXPECT_CONTINUE: u8 = 64;
}

/// One connection's HTTP/1.1 state: 64 bytes, and no heap memory between
/// requests (a chunked `/echo` body is buffered only while it arrives).
#[derive(Debug)]
pub struct Http {
    config: &'static HttpConfig,
    /// A chunked `/echo` body, gathered until its length is known.
    echo_body: Vec<u8>,
    body: Body,
    /// How far the waiting head has been searched.
    scanned: u32,
    phase: Phase,
    route: Route,
    flags: u8,
    /// The server is shutting down: no response keeps the connection.
    draining: bool,
}

impl Default for Http {
    /// Default limits and the system clock.
    fn default() -> Self {
        Http::new(&DEFAULT_CONFIG)
    }
}

/// What the responses to one input slice share: the `Date` value, fetched
/// at most once, and where the slice's first hello response lies in `out`,
/// so that the other pipelined ones are copied from it rather than rendered
/// again (they are byte for byte the same within one slice, Date included).
struct SliceCache {
    clock: fn() -> u64,
    date: Option<[u8; DATE_LEN]>,
    /// `out[hello]` is a complete `200` hello response with `Persist::Default`.
    hello: Option<Range<usize>>,
}

impl SliceCache {
    fn new(clock: fn() -> u64) -> SliceCache {
        SliceCache {
            clock,
            date: None,
            hello: None,
        }
    }

    fn date(&mut self) -> &[u8; DATE_LEN] {
        let clock = self.clock;
        self.date.get_or_insert_with(|| http_date(clock()))
    }
}

impl Http {
    /// A connection's state sharing `config` with the server's other connections.
    ///
    /// ```
    /// use iomux_proto::http::{HttpConfig, HttpLimits};
    /// let config = HttpConfig::leak(HttpLimits::DEFAULT);
    /// let factory = move || iomux_proto::Http::new(config);
    /// let _connection = factory();
    /// ```
    pub fn new(config: &'static HttpConfig) -> Http {
        Http {
            config,
            echo_body: Vec::new(),
            body: Body::Length(0),
            scanned: 0,
            phase: Phase::Head,
            route: Route::NotFound,
            flags: 0,
            draining: false,
        }
    }

    fn has(&self, f: u8) -> bool {
        self.flags & f != 0
    }

    fn persist(&self) -> Persist {
        match (self.has(flag::KEEP_ALIVE), self.has(flag::HTTP10)) {
            (false, _) => Persist::Close,
            (true, true) => Persist::KeepAlive,
            (true, false) => Persist::Default,
        }
    }

    /// Answer with an error status, close, and read nothing more.
    fn fail(&mut self, status: Status, slice: &mut SliceCache, out: &mut Vec<u8>) {
        let body = status.explanation();
        Response {
            status,
            persist: Persist::Close,
            extra: b"",
            content_length: body.len() as u64,
            body,
        }
        .write(slice.date(), out);
        self.phase = Phase::Closed;
        self.flags = 0;
        self.echo_body = Vec::new();
    }

    /// A head is complete; `after` is the input that follows it. Returns
    /// false if the request has no body, so it is to be answered now.
    fn begin(
        &mut self,
        head: RequestHead,
        after: &[u8],
        slice: &mut SliceCache,
        out: &mut Vec<u8>,
    ) -> bool {
        self.route = head.route;
        self.flags = head.flags & (flag::HEAD_ONLY | flag::HTTP10 | flag::KEEP_ALIVE);
        if self.draining {
            self.flags &= !flag::KEEP_ALIVE;
        }
        let (body, body_waiting) = match head.framing {
            Framing::Empty => return false,
            Framing::Length(n) => (Body::Length(n), (after.len() as u64) < n),
            Framing::Chunked => (Body::Chunked(ChunkedDecoder::new()), after.is_empty()),
        };
        self.body = body;
        // The client holds the body back until it hears from us.
        if head.flags & flag::EXPECT_CONTINUE != 0 && body_waiting {
            out.extend_from_slice(CONTINUE);
        }
        if let (Route::Echo, Framing::Length(n)) = (head.route, head.framing) {
            // The length is known: stream the body back as it arrives.
            self.write_head_of(Status::Ok, b"", n, slice, out);
            self.flags |= flag::STARTED;
        }
        self.phase = Phase::Body;
        true
    }

    fn write_head_of(
        &self,
        status: Status,
        extra: &[u8],
        content_length: u64,
        slice: &mut SliceCache,
        out: &mut Vec<u8>,
    ) {
        Response {
            status,
            persist: self.persist(),
            extra,
            content_length,
            body: b"",
        }
        .write(slice.date(), out);
    }

    /// The request is fully read: answer it. Returns true if the connection closes.
    fn finish(&mut self, slice: &mut SliceCache, out: &mut Vec<u8>) -> bool {
        let head_only = self.has(flag::HEAD_ONLY);
        if self.has(flag::STARTED) {
            // The head went out before the body.
        } else if self.route == Route::Hello && self.persist() == Persist::Default {
            self.write_hello(head_only, slice, out);
        } else {
            let (status, extra, body): (Status, &[u8], &[u8]) = match self.route {
                Route::Hello => (Status::Ok, b"", HELLO),
                Route::Echo => (Status::Ok, b"", &self.echo_body),
                Route::NotFound => (Status::NotFound, b"", Status::NotFound.explanation()),
                Route::OnlyGetHead => (
                    Status::MethodNotAllowed,
                    b"Allow: GET, HEAD\r\n",
                    Status::MethodNotAllowed.explanation(),
                ),
                Route::OnlyPost => (
                    Status::MethodNotAllowed,
                    b"Allow: POST\r\n",
                    Status::MethodNotAllowed.explanation(),
                ),
            };
            Response {
                status,
                persist: self.persist(),
                extra,
                content_length: body.len() as u64,
                body: if head_only { b"" } else { body },
            }
            .write(slice.date(), out);
        }
        // Idle connections keep no heap memory.
        self.echo_body = Vec::new();
        let close = !self.has(flag::KEEP_ALIVE);
        self.phase = if close { Phase::Closed } else { Phase::Head };
        self.flags = 0;
        self.scanned = 0;
        close
    }

    /// Append the hello response (without its body for HEAD): rendered
    /// the first time in an input slice, then copied from that first one.
    fn write_hello(&self, head_only: bool, slice: &mut SliceCache, out: &mut Vec<u8>) {
        if let Some(first) = slice.hello.clone() {
            let end = if head_only {
                first.end - HELLO.len()
            } else {
                first.end
            };
            out.extend_from_within(first.start..end);
            return;
        }
        let start = out.len();
        self.write_head_of(Status::Ok, b"", HELLO.len() as u64, slice, out);
        if !head_only {
            out.extend_from_slice(HELLO);
            slice.hello = Some(start..out.len());
        }
    }

    /// Read body bytes from `input`; returns the bytes used and whether the body ended.
    fn read_body(&mut self, input: &[u8], out: &mut Vec<u8>) -> Result<(usize, bool), Status> {
        let echo = self.route == Route::Echo;
        match &mut self.body {
            Body::Length(left) => {
                let take = (input.len() as u64).min(*left) as usize;
                if echo {
                    out.extend_from_slice(&input[..take]);
                }
                *left -= take as u64;
                Ok((take, *left == 0))
            }
            Body::Chunked(decoder) => {
                let echo_body = &mut self.echo_body;
                let progress = decoder
                    .decode(input, self.config.limits.max_body, |data| {
                        if echo {
                            echo_body.extend_from_slice(data);
                        }
                    })
                    .map_err(|e| match e {
                        ChunkError::Malformed | ChunkError::ExtensionsTooLong => Status::BadRequest,
                        ChunkError::TooLarge => Status::ContentTooLarge,
                        ChunkError::TrailersTooLong => Status::HeaderFieldsTooLarge,
                    })?;
                Ok((progress.consumed, progress.done))
            }
        }
    }
}

impl Protocol for Http {
    fn on_input(&mut self, input: &[u8], out: &mut Vec<u8>) -> Step {
        let mut slice = SliceCache::new(self.config.clock);
        let mut at = 0;
        loop {
            match self.phase {
                Phase::Closed => return Step::close(input.len()),
                Phase::Head => {
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
                                    self.fail(Status::BadRequest, &mut slice, out);
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
                    match read_head(rest, &mut progress, &self.config.limits) {
                        HeadOutcome::Partial => {
                            self.scanned = progress.scanned;
                            self.flags |= flag::PARTIAL;
                            if progress.line_ok {
                                self.flags |= flag::LINE_OK;
                            }
                            return Step::keep(at);
                        }
                        HeadOutcome::Reject(status) => {
                            self.fail(status, &mut slice, out);
                            return Step::close(input.len());
                        }
                        HeadOutcome::Complete { len, head } => {
                            at += len;
                            self.scanned = 0;
                            if !self.begin(head, &input[at..], &mut slice, out)
                                && self.finish(&mut slice, out)
                            {
                                // Bytes after a closing request are dropped.
                                return Step::close(input.len());
                            }
                        }
                    }
                }
                Phase::Body => {
                    let (used, done) = match self.read_body(&input[at..], out) {
                        Ok(r) => r,
                        Err(status) => {
                            self.fail(status, &mut slice, out);
                            return Step::close(input.len());
                        }
                    };
                    at += used;
                    if !done {
                        return Step::keep(at);
                    }
                    if self.finish(&mut slice, out) {
                        // Bytes after a closing request are dropped.
                        return Step::close(input.len());
                    }
                }
            }
        }
    }

    fn on_eof(&mut self, pending: &[u8], out: &mut Vec<u8>) {
        // Complete requests still pending are answered (a half-closed client
        // waits for them); a truncated one is dropped silently.
        if self.phase != Phase::Closed {
            self.on_input(pending, out);
        }
        self.phase = Phase::Closed;
    }

    fn on_timeout(&mut self, out: &mut Vec<u8>) {
        let mid_request = match self.phase {
            Phase::Head => self.has(flag::PARTIAL),
            // Once a streamed response has begun a status cannot follow it.
            Phase::Body => !self.has(flag::STARTED),
            Phase::Closed => false,
        };
        if mid_request {
            let mut slice = SliceCache::new(self.config.clock);
            self.fail(Status::RequestTimeout, &mut slice, out);
        }
        self.phase = Phase::Closed;
    }

    fn on_drain(&mut self) {
        // A request in flight is answered with `Connection: close` (or, when
        // its streamed answer already began, the connection closes after it).
        self.draining = true;
        self.flags &= !flag::KEEP_ALIVE;
    }

    fn is_idle(&self) -> bool {
        match self.phase {
            Phase::Head => !self.has(flag::PARTIAL),
            Phase::Body => false,
            Phase::Closed => true,
        }
    }
}
