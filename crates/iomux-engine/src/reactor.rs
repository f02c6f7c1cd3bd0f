//! The event loop: one thread, one selector, many non-blocking connections.
//!
//! The non-blocking discipline lives here, once: accept until EAGAIN (shedding
//! with a reserve descriptor when descriptors run out); read until the socket
//! is drained (a short read, or EAGAIN); write directly and ask for writability only when the kernel
//! pushes back; stop reading from a peer that is not reading its responses;
//! deregister before close; close by draining the peer's input after our FIN.

use crate::buffer::BufPool;
use crate::conn::{
    note_send, read_append, send_available, set_cork, LINGER, MAX_PENDING_INPUT, READ_CHUNK,
};
use crate::shutdown::{peer_quiet, ConnLimit, Shutdown, Started, DRAIN_QUIET};
use crate::table::{Slab, Timers};
use crate::Config;
use iomux::net::{Accepted, Acceptor};
use iomux::selector::sigio::SigioSelector;
use iomux::selector::uring::UringSelector;
use iomux::timer::TimerId;
use iomux::{
    Backend, EpollSelector, Events, Interest, PollSelector, SelectSelector, Selector, Token,
    Trigger,
};
use iomux_proto::Protocol;
use std::io;
use std::net::{Shutdown as HalfClose, TcpListener, TcpStream};
use std::os::fd::{AsFd, AsRawFd, RawFd};
use std::time::{Duration, Instant};

const LISTENER: Token = Token(0);
const WAKER: Token = Token(1);

/// Output gathered in the loop's shared buffer is sent once it reaches this
/// size, even in the middle of a read burst, so echoing megabytes does not
/// gather megabytes.
const FLUSH_AT: usize = 64 * 1024;

/// Events taken from the selector per wait.
const EVENTS_PER_WAIT: usize = 1024;

/// Counters of what one loop did, for the lab's explanations.
///
/// ```
/// let mut a = iomux_engine::LoopStats::default();
/// a.reads = 2;
/// let mut b = iomux_engine::LoopStats::default();
/// b.reads = 3;
/// a.add(&b);
/// assert_eq!(a.reads, 5);
/// ```
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct LoopStats {
    /// Selector waits.
    pub waits: u64,
    /// Events those waits reported.
    pub events: u64,
    /// Connections accepted.
    pub accepts: u64,
    /// Connections accepted and closed at once because of `--max-conns` or a
    /// selector that could not watch them.
    pub refused: u64,
    /// Connections shed because descriptors ran out.
    pub shed: u64,
    /// read(2) calls.
    pub reads: u64,
    /// Reads that found nothing (EAGAIN).
    pub read_eagain: u64,
    /// send(2) calls that moved bytes or pushed back.
    pub writes: u64,
    /// Writes the kernel pushed back on (EAGAIN or short).
    pub write_blocked: u64,
    /// Connections closed.
    pub closed: u64,
    /// Connections closed by their idle or request-head deadline.
    pub timeouts: u64,
    /// Times the selector lost track of readiness and checked every
    /// descriptor instead ([`iomux::Selector::overflows`]: sigio's signal queue).
    pub selector_overflows: u64,
}

/// One line of `name=value` counters, as `iomux serve` prints them when it
/// stops (the lab reads them back).
///
/// ```
/// let s = iomux_engine::LoopStats { waits: 2, reads: 5, ..Default::default() };
/// assert!(s.to_string().starts_with("accepts=0 refused=0"));
/// assert!(s.to_string().contains(" reads=5 "));
/// ```
impl std::fmt::Display for LoopStats {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let LoopStats {
            waits,
            events,
            accepts,
            refused,
            shed,
            reads,
            read_eagain,
            writes,
            write_blocked,
            closed,
            timeouts,
            selector_overflows,
        } = self;
        write!(
            f,
            "accepts={accepts} refused={refused} shed={shed} closed={closed} timeouts={timeouts} \
             reads={reads} read_eagain={read_eagain} writes={writes} write_blocked={write_blocked} \
             waits={waits} events={events} selector_overflows={selector_overflows}"
        )
    }
}

impl LoopStats {
    /// Add another loop's counters.
    pub fn add(&mut self, o: &LoopStats) {
        self.waits += o.waits;
        self.events += o.events;
        self.accepts += o.accepts;
        self.refused += o.refused;
        self.shed += o.shed;
        self.reads += o.reads;
        self.read_eagain += o.read_eagain;
        self.writes += o.writes;
        self.write_blocked += o.write_blocked;
        self.closed += o.closed;
        self.timeouts += o.timeouts;
        self.selector_overflows += o.selector_overflows;
    }
}

/// Run one loop on `listener` until shutdown.
// Everything one loop starts from, passed once per loop thread.
#[allow(clippy::too_many_arguments)]
pub(crate) fn run<P, F>(
    backend: Backend,
    trigger: Trigger,
    listener: TcpListener,
    config: &Config,
    shutdown: &Shutdown,
    max_conns: &ConnLimit,
    new_protocol: F,
    started: Started,
) -> io::Result<LoopStats>
where
    P: Protocol,
    F: Fn() -> P,
{
    // Monomorphised per backend: the loop calls the selector directly.
    let parts = (listener, config, shutdown, max_conns, new_protocol, started);
    match backend {
        Backend::Epoll => start_and_run(EpollSelector::new(trigger), parts),
        Backend::Poll => start_and_run(PollSelector::new(), parts),
        Backend::Select => start_and_run(SelectSelector::new(), parts),
        Backend::Uring => start_and_run(UringSelector::new(trigger), parts),
        // Signal-driven readiness is edge-triggered: the loop's edge discipline applies as is.
        Backend::Sigio => start_and_run(SigioSelector::new(), parts),
        _ => Err(io::Error::new(
            io::ErrorKind::Unsupported,
            format!("the event loop has no {backend} selector"),
        )),
    }
}

/// Set up a loop and report it (so `Server::start` fails, instead of leaving a
/// listener nobody accepts on, when descriptors run out during start-up), then run it.
fn start_and_run<S: Selector, P: Protocol, F: Fn() -> P>(
    selector: io::Result<S>,
    (listener, config, shutdown, max_conns, new_protocol, started): (
        TcpListener,
        &Config,
        &Shutdown,
        &ConnLimit,
        F,
        Started,
    ),
) -> io::Result<LoopStats> {
    let reactor =
        selector.and_then(|s| Reactor::new(s, listener, config, shutdown, max_conns, new_protocol));
    match reactor {
        Ok(reactor) => {
            started.report(Ok(()));
            reactor.run()
        }
        Err(e) => {
            started.report(Err(io::Error::new(e.kind(), e.to_string())));
            Err(e)
        }
    }
}

mod flag {
    pub use crate::table::flag::*;
    /// The selector reported the peer's FIN (or an error): read until EOF or
    /// EAGAIN, since no further edge will come to report it again.
    pub const HUP_SEEN: u8 = FIRST_OWN;
}

struct Conn<P> {
    stream: TcpStream,
    proto: P,
    /// Input the protocol has not consumed yet; unallocated when empty.
    input: Vec<u8>,
    /// Output the kernel has not taken yet; unallocated when empty.
    output: Vec<u8>,
    /// How much of `output` is already sent.
    sent: usize,
    /// The idle deadline counts from here.
    last_active: Instant,
    /// Bytes sent since `last_active` while output was pending (the send deadline).
    send_progress: usize,
    timer: TimerId,
    registered: Interest,
    flags: u8,
}

impl<P> Conn<P> {
    fn has(&self, f: u8) -> bool {
        self.flags & f != 0
    }

    fn pending_output(&self) -> usize {
        self.output.len() - self.sent
    }

    fn fd(&self) -> RawFd {
        self.stream.as_raw_fd()
    }
}

struct Reactor<'a, S, P, F> {
    selector: S,
    trigger: Trigger,
    listener: Option<TcpListener>,
    acceptor: Acceptor,
    /// While descriptors are exhausted and no reserve is left, accepting waits until then.
    accept_paused_until: Option<Instant>,
    conns: Slab<Conn<P>>,
    timers: Timers,
    expired: Vec<Token>,
    /// Shared read buffer: a connection keeps its own only for leftovers.
    rbuf: Vec<u8>,
    /// Shared output buffer: a connection keeps its own only for what the kernel refused.
    wbuf: Vec<u8>,
    pool: BufPool,
    config: &'a Config,
    shutdown: &'a Shutdown,
    max_conns: &'a ConnLimit,
    new_protocol: F,
    draining_until: Option<Instant>,
    now: Instant,
    stats: LoopStats,
    warned_refusal: bool,
}

impl<'a, S: Selector, P: Protocol, F: Fn() -> P> Reactor<'a, S, P, F> {
    fn new(
        mut selector: S,
        listener: TcpListener,
        config: &'a Config,
        shutdown: &'a Shutdown,
        max_conns: &'a ConnLimit,
        new_protocol: F,
    ) -> io::Result<Self> {
        let trigger = selector.trigger();
        selector.register(listener.as_fd(), LISTENER, Interest::READABLE)?;
        shutdown.add_waker(selector.waker(WAKER)?);
        let now = Instant::now();
        Ok(Reactor {
            selector,
            trigger,
            listener: Some(listener),
            acceptor: Acceptor::new()?,
            accept_paused_until: None,
            conns: Slab::new(),
            timers: Timers::new(now, config.idle_timeout),
            expired: Vec::new(),
            rbuf: Vec::with_capacity(READ_CHUNK),
            wbuf: Vec::with_capacity(2 * FLUSH_AT),
            pool: BufPool::new(256, READ_CHUNK),
            config,
            shutdown,
            max_conns,
            new_protocol,
            draining_until: None,
            now,
            stats: LoopStats::default(),
            warned_refusal: false,
        })
    }

    fn run(mut self) -> io::Result<LoopStats> {
        let mut events = Events::with_capacity(EVENTS_PER_WAIT);
        loop {
            let timeout = self.next_timeout();
            self.selector.select(&mut events, timeout)?;
            self.now = Instant::now();
            self.stats.waits += 1;
            self.stats.events += events.len() as u64;
            for event in &events {
                match event.token() {
                    LISTENER => self.accept_all(),
                    WAKER => {
                        if self.shutdown.is_triggered() && self.draining_until.is_none() {
                            self.begin_drain();
                        }
                    }
                    token => self.on_conn_event(
                        token,
                        event.is_readable() || event.is_read_closed() || event.is_error(),
                        event.is_writable(),
                        event.is_read_closed() || event.is_error(),
                    ),
                }
            }
            self.expire_timers();
            if self.accept_paused_until.is_some_and(|t| self.now >= t) {
                self.resume_accepting();
            }
            if let Some(until) = self.draining_until {
                self.close_quiet_idle();
                if self.conns.len() == 0 {
                    break;
                }
                if self.now >= until {
                    for token in self.conns.tokens() {
                        self.close(token);
                    }
                    break;
                }
            }
        }
        self.stats.shed = self.acceptor.shed;
        self.stats.selector_overflows = self.selector.overflows();
        Ok(self.stats)
    }

    fn next_timeout(&mut self) -> Option<Duration> {
        let mut next = self.timers.next_deadline(self.now);
        // While draining, look again soon for connections that went quiet.
        let drain_check = self.draining_until.map(|_| self.now + DRAIN_QUIET / 2);
        for t in [self.draining_until, self.accept_paused_until, drain_check]
            .into_iter()
            .flatten()
        {
            next = Some(next.map_or(t, |n| n.min(t)));
        }
        // From the loop's clock, read once per wait: a deadline is at most one
        // pass over the events late, and the fast path saves a clock read.
        next.map(|t| t.saturating_duration_since(self.now))
    }

    fn accept_all(&mut self) {
        let Some(listener) = self.listener.take() else {
            return;
        };
        loop {
            match self.acceptor.accept(&listener) {
                Ok(Accepted::Conn(stream)) => {
                    self.stats.accepts += 1;
                    self.add_conn(stream);
                }
                Ok(Accepted::Shed) => continue,
                Ok(Accepted::Drained) => break,
                Err(e) => {
                    // Descriptors exhausted with no reserve left: stop watching
                    // the listener for a moment instead of spinning on it.
                    eprintln!("iomux: {e}; pausing accepts for 100 ms");
                    let _ = self.selector.deregister(listener.as_fd());
                    self.accept_paused_until = Some(self.now + Duration::from_millis(100));
                    self.listener = Some(listener);
                    return;
                }
            }
        }
        // A one-shot registration went silent when it fired: re-arm the listener.
        if self.trigger == Trigger::Oneshot {
            let _ = self
                .selector
                .reregister(listener.as_fd(), LISTENER, Interest::READABLE);
        }
        self.listener = Some(listener);
    }

    fn resume_accepting(&mut self) {
        self.accept_paused_until = None;
        if let Some(l) = self.listener.as_ref() {
            let _ = self
                .selector
                .register(l.as_fd(), LISTENER, Interest::READABLE);
        }
    }

    fn add_conn(&mut self, stream: TcpStream) {
        if !self.max_conns.try_acquire() {
            self.stats.refused += 1;
            return;
        }
        if self.config.nodelay {
            let _ = stream.set_nodelay(true);
        }
        // Edge mode registers both directions once and never changes them;
        // the other modes ask for writability only when the kernel pushes back.
        let interest = if self.trigger == Trigger::Edge {
            Interest::BOTH
        } else {
            Interest::READABLE
        };
        let token = self.conns.next_token();
        if let Err(e) = self.selector.register(stream.as_fd(), token, interest) {
            self.stats.refused += 1;
            self.max_conns.release();
            if !self.warned_refusal {
                self.warned_refusal = true;
                eprintln!("iomux: refusing connections the selector cannot watch: {e}");
            }
            return;
        }
        let timer = self
            .timers
            .insert(self.now + self.config.idle_timeout, token);
        let conn = Conn {
            stream,
            proto: (self.new_protocol)(),
            input: Vec::new(),
            output: Vec::new(),
            sent: 0,
            last_active: self.now,
            send_progress: 0,
            timer,
            registered: interest,
            flags: 0,
        };
        self.conns.insert(conn);
    }

    fn on_conn_event(&mut self, token: Token, readable: bool, writable: bool, hup: bool) {
        let Some(conn) = self.conns.get_mut(token) else {
            return;
        };
        if hup {
            conn.flags |= flag::HUP_SEEN;
        }
        if conn.has(flag::LINGERING) {
            if readable {
                self.drain_lingering(token);
            }
            return;
        }
        if writable && conn.pending_output() > 0 && self.flush(token).is_err() {
            self.close(token);
            return;
        }
        if readable && self.read_and_process(token).is_err() {
            self.close(token);
            return;
        }
        self.settle(token);
    }

    /// Read until the socket is drained, hand the bytes to the protocol, and
    /// send what it answers. Errors mean the connection is broken.
    ///
    /// A read shorter than asked means a TCP socket's receive queue is empty,
    /// so the EAGAIN read that would confirm it is skipped (one read per
    /// request instead of two): bytes arriving later raise a new event in
    /// every mode. Only a reported FIN or error is read on to its end, since
    /// in edge mode it is not reported twice.
    fn read_and_process(&mut self, token: Token) -> io::Result<()> {
        let high_water = self.config.output_high_water;
        let draining = self.draining_until.is_some();
        loop {
            let conn = self.conns.get_mut(token).expect("live connection");
            if conn.has(flag::CLOSING | flag::READ_CLOSED | flag::PAUSED) {
                break;
            }
            if conn.pending_output() >= high_water {
                conn.flags |= flag::PAUSED;
                break;
            }
            let fd = conn.fd();
            let was_idle = conn.proto.is_idle();
            // A peer that leaves its output untaken cannot keep its connection
            // alive by sending more (slow read): only sends count then.
            let owed = conn.pending_output() > 0;
            let own = !conn.input.is_empty();
            let buf = if own { &mut conn.input } else { &mut self.rbuf };
            let before = buf.len();
            self.stats.reads += 1;
            let n = match read_append(fd, buf, READ_CHUNK) {
                Ok(n) => n,
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => {
                    self.stats.read_eagain += 1;
                    break;
                }
                Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
                Err(e) => {
                    // Output gathered before the error belongs to this connection only.
                    self.wbuf.clear();
                    return Err(e);
                }
            };
            let out = if conn.output.is_empty() {
                &mut self.wbuf
            } else {
                &mut conn.output
            };
            if n == 0 {
                conn.proto.on_eof(&buf[..before], out);
                buf.clear();
                conn.flags |= flag::READ_CLOSED | flag::CLOSING;
                break;
            }
            let step = conn.proto.on_input(buf, out);
            if own {
                conn.input.drain(..step.consumed);
                if conn.input.is_empty() {
                    self.pool.put(&mut conn.input);
                }
            } else {
                if step.consumed < self.rbuf.len() {
                    conn.input = self.pool.get();
                    conn.input.extend_from_slice(&self.rbuf[step.consumed..]);
                }
                self.rbuf.clear();
            }
            if (was_idle || conn.proto.is_idle()) && !owed {
                // While draining, the time the bytes were taken, not the
                // pass's start: a loop that lost the CPU in between would
                // otherwise look quiet a whole stall early.
                conn.last_active = if draining { Instant::now() } else { self.now };
            }
            if step.close {
                conn.flags |= flag::CLOSING;
                self.pool.put(&mut conn.input);
            } else if conn.input.len() > MAX_PENDING_INPUT {
                return Err(io::Error::new(
                    io::ErrorKind::InvalidData,
                    "protocol left too much input unconsumed",
                ));
            }
            let drained = n < READ_CHUNK && !conn.has(flag::HUP_SEEN);
            if self.wbuf.len() >= FLUSH_AT {
                self.flush(token)?;
            }
            if drained {
                break;
            }
        }
        self.flush(token)
    }

    /// Send the loop's gathered output (or the connection's pending output);
    /// whatever the kernel refuses stays with the connection.
    fn flush(&mut self, token: Token) -> io::Result<()> {
        let conn = self.conns.get_mut(token).expect("live connection");
        let fd = conn.fd();
        let pending = if conn.output.is_empty() {
            &self.wbuf[..]
        } else {
            &conn.output[conn.sent..]
        };
        if pending.is_empty() {
            return Ok(());
        }
        if self.config.cork {
            set_cork(fd, true);
        }
        self.stats.writes += 1;
        let result = send_available(fd, pending);
        if self.config.cork {
            set_cork(fd, false);
        }
        let sent = match result {
            Ok(sent) => sent,
            Err(e) => {
                // The shared buffer held this connection's output: it must not
                // reach the next connection flushed.
                self.wbuf.clear();
                return Err(e);
            }
        };
        let total = pending.len();
        note_send(
            &mut conn.send_progress,
            &mut conn.last_active,
            self.now,
            sent,
            sent == total,
            self.config.output_high_water,
        );
        if conn.output.is_empty() {
            if sent < total {
                self.stats.write_blocked += 1;
                conn.output = self.pool.get();
                conn.output.extend_from_slice(&self.wbuf[sent..]);
                conn.sent = 0;
            }
            self.wbuf.clear();
        } else {
            conn.sent += sent;
            if sent < total {
                self.stats.write_blocked += 1;
                // Reclaim the sent prefix once it dominates, so the buffer stays bounded.
                if conn.sent > conn.output.len() / 2 {
                    conn.output.drain(..conn.sent);
                    conn.sent = 0;
                }
            } else {
                conn.sent = 0;
                self.pool.put(&mut conn.output);
            }
        }
        Ok(())
    }

    /// After an event: resume a paused reader, close a finished connection,
    /// and keep the registered interest in step with what the connection needs.
    fn settle(&mut self, token: Token) {
        let Some(conn) = self.conns.get_mut(token) else {
            return;
        };
        if conn.has(flag::PAUSED) && conn.pending_output() == 0 {
            conn.flags &= !flag::PAUSED;
            // In edge mode the unread input will raise no new edge: read it now.
            if self.trigger == Trigger::Edge && self.read_and_process(token).is_err() {
                self.close(token);
                return;
            }
        }
        let Some(conn) = self.conns.get_mut(token) else {
            return;
        };
        if conn.has(flag::CLOSING) && conn.pending_output() == 0 {
            self.finish(token);
            return;
        }
        self.update_interest(token);
    }

    fn update_interest(&mut self, token: Token) {
        let conn = self.conns.get_mut(token).expect("live connection");
        let wanted = match self.trigger {
            Trigger::Edge => return,
            _ => {
                let read = !conn.has(flag::PAUSED | flag::READ_CLOSED | flag::CLOSING)
                    || conn.has(flag::LINGERING);
                let write = conn.pending_output() > 0;
                match (read, write) {
                    (true, true) => Interest::BOTH,
                    (false, true) => Interest::WRITABLE,
                    _ => Interest::READABLE,
                }
            }
        };
        if wanted != conn.registered || self.trigger == Trigger::Oneshot {
            conn.registered = wanted;
            if self
                .selector
                .reregister(conn.stream.as_fd(), token, wanted)
                .is_err()
            {
                self.close(token);
            }
        }
    }

    /// The output is sent and the connection is closing: send our FIN and
    /// drain the peer until its FIN, unless it already sent one.
    fn finish(&mut self, token: Token) {
        let conn = self.conns.get_mut(token).expect("live connection");
        if conn.has(flag::READ_CLOSED) || conn.stream.shutdown(HalfClose::Write).is_err() {
            self.close(token);
            return;
        }
        conn.flags |= flag::LINGERING;
        conn.last_active = self.now;
        self.drain_lingering(token);
    }

    fn drain_lingering(&mut self, token: Token) {
        let conn = self.conns.get_mut(token).expect("live connection");
        let fd = conn.fd();
        loop {
            self.rbuf.clear();
            match read_append(fd, &mut self.rbuf, READ_CHUNK) {
                Ok(0) => break,
                Ok(_) => continue,
                Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => {
                    self.rbuf.clear();
                    self.update_interest(token);
                    return;
                }
                Err(_) => break,
            }
        }
        self.rbuf.clear();
        self.close(token);
    }

    fn close(&mut self, token: Token) {
        let Some(mut conn) = self.conns.remove(token) else {
            return;
        };
        // Deregister before close: the descriptor number may be reused at once.
        let _ = self.selector.deregister(conn.stream.as_fd());
        // Whatever the shared buffers still hold is this connection's: never another's.
        self.wbuf.clear();
        self.rbuf.clear();
        self.timers.cancel(conn.timer);
        self.pool.put(&mut conn.input);
        self.pool.put(&mut conn.output);
        self.max_conns.release();
        self.stats.closed += 1;
    }

    /// Fire due deadlines. A connection that was active since its timer was
    /// set gets a new timer instead (one re-insert per timeout period, not per read).
    fn expire_timers(&mut self) {
        self.expired.clear();
        self.timers.expire(self.now, &mut self.expired);
        for i in 0..self.expired.len() {
            let token = self.expired[i];
            let Some(conn) = self.conns.get_mut(token) else {
                continue;
            };
            let limit = if conn.has(flag::LINGERING) {
                LINGER
            } else {
                self.config.idle_timeout
            };
            let deadline = conn.last_active + limit;
            if self.now < deadline {
                conn.timer = self.timers.insert(deadline, token);
                continue;
            }
            if conn.has(flag::LINGERING | flag::CLOSING) {
                // Our FIN is out, or the peer will not take its last output: give up.
                self.close(token);
                continue;
            }
            self.stats.timeouts += 1;
            let out = if conn.output.is_empty() {
                &mut self.wbuf
            } else {
                &mut conn.output
            };
            conn.proto.on_timeout(out);
            conn.flags |= flag::CLOSING;
            conn.last_active = self.now;
            conn.timer = self.timers.insert(self.now + LINGER, token);
            if self.flush(token).is_err() {
                self.close(token);
                continue;
            }
            self.settle(token);
        }
    }

    /// Stop accepting, close idle connections, let the others finish.
    fn begin_drain(&mut self) {
        self.draining_until = Some(self.now + self.config.drain_timeout);
        if let Some(listener) = self.listener.take() {
            let _ = self.selector.deregister(listener.as_fd());
        }
        self.accept_paused_until = None;
        for token in self.conns.tokens() {
            if let Some(conn) = self.conns.get_mut(token) {
                conn.proto.on_drain();
            }
        }
        self.close_quiet_idle();
    }

    /// While draining: close connections between messages with nothing
    /// buffered whose peer has been quiet for `DRAIN_QUIET` (lingering ones
    /// finish their close on their own).
    fn close_quiet_idle(&mut self) {
        for token in self.conns.tokens() {
            let conn = self.conns.get_mut(token).expect("live connection");
            if conn.proto.is_idle()
                && conn.input.is_empty()
                && conn.pending_output() == 0
                && !conn.has(flag::LINGERING)
                && peer_quiet(conn.fd(), conn.last_active, self.now)
            {
                self.close(token);
            }
        }
    }
}
