//! The event loop: one thread, one selector, many non-blocking connections.
//!
//! The non-blocking discipline lives here, once: accept until EAGAIN (shedding
//! with a reserve descriptor when descriptors run out); read until the socket
//! is drained (a short read, or EAGAIN); write directly and ask for
//! writability only when the kernel pushes back; deregister before close.
//! Every rule of a connection (deadlines, caps, backpressure, drain, linger)
//! is the [`Session`]'s: this loop only moves bytes and readiness.

use crate::buffer::BufPool;
use crate::hub::Dispatch;
use crate::life::{LoopClock, LoopContext};
use crate::session::{Applied, Connecting, Deadline, Env, Fault, Finish, Rules, Session};
use crate::sock::{
    connect_nonblocking, connect_outcome, input_waiting, read_append, send_available, set_cork,
    shutdown_write,
};
use crate::stats::LoopStats;
use crate::table::{Slab, Timers, IDLE};
use iomux::net::{Accepted, Acceptor, Listener, Stream};
use iomux::selector::sigio::SigioSelector;
use iomux::selector::uring::UringSelector;
use iomux::timer::TimerId;
use iomux::{
    Backend, EpollSelector, Events, Interest, PollSelector, SelectSelector, Selector, Token,
    Trigger,
};
use iomux_proto::{Command, ConnId, Service};
use std::io;
use std::net::SocketAddr;
use std::os::fd::{AsFd, AsRawFd, RawFd};
use std::time::Duration;

/// The loop's [`Env`] for a session call, from its disjoint fields (so a
/// connection of `self.conns` may stay borrowed).
macro_rules! env {
    ($self:ident, $now:expr) => {
        Env {
            now: $now,
            rules: &$self.rules,
            pool: &mut $self.pool,
            commands: &mut $self.commands,
        }
    };
}

const LISTENER: Token = Token(0);
const WAKER: Token = Token(1);

/// A connection that wants neither direction now (its peer's FIN is in and
/// it owes nothing, or its reading is held): it is out of the selector,
/// since a level-triggered FIN or writable socket would wake the loop on
/// every pass. (Selectors refuse this interest; it is only a marker.)
const UNWATCHED: Interest = Interest::from_bits(0);

/// Size of one read.
const READ_CHUNK: usize = 64 * 1024;

/// Output gathered in the loop's shared buffer is sent once it reaches this
/// size, even in the middle of a read burst, so echoing megabytes does not
/// gather megabytes.
const FLUSH_AT: usize = 64 * 1024;

/// Events taken from the selector per wait.
const EVENTS_PER_WAIT: usize = 1024;

/// Run one loop until shutdown.
pub(crate) fn run<P, F>(
    backend: Backend,
    trigger: Trigger,
    listener: Listener,
    cx: LoopContext<F>,
) -> io::Result<LoopStats>
where
    P: Service,
    F: Fn() -> P,
{
    // Monomorphised per backend: the loop calls the selector directly.
    match backend {
        Backend::Epoll => start_and_run(EpollSelector::new(trigger), listener, cx),
        Backend::Poll => start_and_run(PollSelector::new(), listener, cx),
        Backend::Select => start_and_run(SelectSelector::new(), listener, cx),
        Backend::Uring => start_and_run(UringSelector::new(trigger), listener, cx),
        // Signal-driven readiness is edge-triggered: the loop's edge discipline applies as is.
        Backend::Sigio => start_and_run(SigioSelector::new(), listener, cx),
        _ => Err(io::Error::new(
            io::ErrorKind::Unsupported,
            format!("the event loop has no {backend} selector"),
        )),
    }
}

/// Set up a loop and report it (so `Server::start` fails, instead of leaving a
/// listener nobody accepts on, when descriptors run out during start-up), then run it.
fn start_and_run<S: Selector, P: Service, F: Fn() -> P>(
    selector: io::Result<S>,
    listener: Listener,
    cx: LoopContext<F>,
) -> io::Result<LoopStats> {
    let started = cx.started.clone();
    match selector.and_then(|s| Reactor::new(s, listener, cx)) {
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

struct Conn<P> {
    stream: Stream,
    session: Session<P>,
    timer: TimerId,
    registered: Interest,
    /// The selector reported the peer's FIN (or an error): read until EOF or
    /// EAGAIN, since no further edge will come to report it again.
    hup_seen: bool,
    /// Reading resumed after a pause: in edge mode the input waiting in the
    /// socket raises no new edge, so it is read at once.
    resumed: bool,
}

impl<P> Conn<P> {
    fn fd(&self) -> RawFd {
        self.stream.as_raw_fd()
    }
}

struct Reactor<S, P, F> {
    selector: S,
    trigger: Trigger,
    listener: Option<Listener>,
    acceptor: Acceptor,
    conns: Slab<Conn<P>>,
    timers: Timers,
    expired: Vec<(Token, u64)>,
    /// What protocols asked for during the current call.
    commands: Vec<Command>,
    /// Sorts protocols' commands: timers, this loop's, other loops'.
    dispatch: Dispatch,
    /// Connections given output by another connection: flushed at the end
    /// of the pass, all of one pass's output in one send.
    to_flush: Vec<Token>,
    /// Connections disconnected for output others sent them past the cap,
    /// closed at the end of the pass.
    overflowed: Vec<Token>,
    /// Shared read buffer: a connection keeps its own only for leftovers.
    rbuf: Vec<u8>,
    /// Shared output buffer: a connection keeps its own only for what the kernel refused.
    wbuf: Vec<u8>,
    pool: BufPool,
    cx: LoopContext<F>,
    rules: Rules,
    clock: LoopClock,
    stats: LoopStats,
}

impl<S: Selector, P: Service, F: Fn() -> P> Reactor<S, P, F> {
    fn new(mut selector: S, listener: Listener, cx: LoopContext<F>) -> io::Result<Self> {
        let trigger = selector.trigger();
        selector.register(listener.as_fd(), LISTENER, Interest::READABLE)?;
        let waker = selector.waker(WAKER)?;
        cx.hub.set_waker(cx.index, waker.clone());
        cx.shutdown.add_waker(waker);
        let clock = LoopClock::new();
        Ok(Reactor {
            selector,
            trigger,
            listener: Some(listener),
            acceptor: Acceptor::new()?,
            conns: Slab::new(),
            timers: Timers::new(clock.now, cx.config.idle_timeout),
            expired: Vec::new(),
            commands: Vec::new(),
            dispatch: Dispatch::default(),
            to_flush: Vec::new(),
            overflowed: Vec::new(),
            rbuf: Vec::with_capacity(READ_CHUNK),
            wbuf: Vec::with_capacity(2 * FLUSH_AT),
            pool: BufPool::new(256, READ_CHUNK),
            rules: cx.rules,
            cx,
            clock,
            stats: LoopStats::default(),
        })
    }

    fn run(mut self) -> io::Result<LoopStats> {
        let mut events = Events::with_capacity(EVENTS_PER_WAIT);
        loop {
            let timeout = self
                .clock
                .next_wait(self.timers.next_deadline(self.clock.now));
            self.selector.select(&mut events, timeout)?;
            self.clock.tick();
            self.stats.waits += 1;
            self.stats.events += events.len() as u64;
            for event in &events {
                match event.token() {
                    LISTENER => self.accept_all(),
                    WAKER => {
                        self.take_mail();
                        if self.cx.shutdown.is_triggered() && !self.clock.draining() {
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
            self.flush_delivered();
            if self.clock.accept_resumes() {
                if let Some(l) = self.listener.as_ref() {
                    let _ = self
                        .selector
                        .register(l.as_fd(), LISTENER, Interest::READABLE);
                }
            }
            if self.clock.draining() {
                self.close_quiet_idle();
                if self.conns.len() == 0 {
                    break;
                }
                if self.clock.drain_over() {
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
                Err(_) => {
                    // Descriptors exhausted with no reserve left: stop watching
                    // the listener for a moment instead of spinning on it.
                    self.stats.accept_pauses += 1;
                    let _ = self.selector.deregister(listener.as_fd());
                    self.clock.pause_accepting();
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

    fn add_conn(&mut self, stream: Stream) {
        if !self.cx.max_conns.try_acquire() {
            self.stats.refused += 1;
            return;
        }
        // Edge mode registers both directions once and never changes them;
        // the other modes ask for writability only when the kernel pushes back.
        let interest = if self.trigger == Trigger::Edge {
            Interest::BOTH
        } else {
            Interest::READABLE
        };
        let token = self.conns.next_token();
        if self.watch(&stream, token, interest).is_err() {
            self.stats.refused += 1;
            self.stats.unwatchable += 1;
            self.cx.max_conns.release();
            return;
        }
        let id = ConnId::new(self.cx.index, token.0);
        let session = Session::new((self.cx.new_protocol)(), id, self.clock.now);
        self.insert_conn(token, stream, session, interest);
        let conn = self.conns.get_mut(token).expect("just inserted");
        let opened = conn.session.on_open(None, &mut env!(self, self.clock.now));
        if self.after_call(token, opened).is_err() {
            self.close(token);
            return;
        }
        self.to_flush.push(token);
    }

    /// Set up a new connection's socket and register it.
    fn watch(&mut self, stream: &Stream, token: Token, interest: Interest) -> io::Result<()> {
        if self.cx.config.nodelay {
            let _ = stream.set_nodelay(true);
        }
        self.selector.register(stream.as_fd(), token, interest)?;
        Ok(())
    }

    /// A protocol asked for an outgoing connection: start a non-blocking
    /// connect, watched for writability until it is established, with its
    /// timeout in the timer wheel. A connect that cannot even start is
    /// reported to the asker at once.
    fn start_connect(&mut self, asker: Token, addr: SocketAddr, timeout: Duration, tag: u64) {
        let asker_id = ConnId::new(self.cx.index, asker.0);
        let connect = Connecting::new(asker_id, tag, addr, timeout, self.clock.now);
        let token = self.conns.next_token();
        let interest = if self.trigger == Trigger::Edge {
            Interest::BOTH
        } else {
            Interest::WRITABLE
        };
        let started = crate::life::admit_outgoing(&self.cx.max_conns).and_then(|()| {
            let stream = Stream::Tcp(std::net::TcpStream::from(connect_nonblocking(addr)?));
            self.watch(&stream, token, interest)
                .map(|()| stream)
                .inspect_err(|_| self.cx.max_conns.release())
        });
        let stream = match started {
            Ok(stream) => stream,
            Err(e) => {
                self.stats.connect_failures += 1;
                self.tell_asker(asker, tag, Err(connect.failed(e)));
                return;
            }
        };
        let id = ConnId::new(self.cx.index, token.0);
        let session = Session::connecting((self.cx.new_protocol)(), id, self.clock.now, connect);
        self.insert_conn(token, stream, session, interest);
    }

    /// Keep a registered connection under `token` (the slab's next), with
    /// its deadline's timer.
    fn insert_conn(
        &mut self,
        token: Token,
        stream: Stream,
        session: Session<P>,
        interest: Interest,
    ) {
        let timer = self.timers.insert(session.deadline(&self.rules), token);
        let inserted = self.conns.insert(Conn {
            stream,
            session,
            timer,
            registered: interest,
            hup_seen: false,
            resumed: false,
        });
        debug_assert_eq!(inserted, token);
    }

    /// A connecting socket's event: established, failed, or not yet.
    fn on_connect_event(&mut self, token: Token) {
        let conn = self.conns.get_mut(token).expect("live connection");
        match connect_outcome(conn.stream.as_fd()) {
            Ok(true) => self.connect_done(token, Ok(())),
            Ok(false) if self.trigger == Trigger::Oneshot => {
                // Not yet (a spurious wake): a one-shot registration went silent.
                let interest = conn.registered;
                let _ = self
                    .selector
                    .reregister(conn.stream.as_fd(), token, interest);
            }
            Ok(false) => {}
            Err(e) => self.connect_done(token, Err(e)),
        }
    }

    /// A connect ended: on success the new connection opens and the asker
    /// learns its id; on failure it closes and the asker learns why. With
    /// the asker gone, the new connection is closed.
    fn connect_done(&mut self, token: Token, outcome: io::Result<()>) {
        let conn = self.conns.get_mut(token).expect("live connection");
        let Some(connect) = conn.session.connect_details() else {
            return;
        };
        let asker = Token(connect.asker.token());
        if let Err(e) = outcome {
            self.stats.connect_failures += 1;
            self.close(token);
            self.tell_asker(asker, connect.tag, Err(connect.failed(e)));
            return;
        }
        self.stats.connects += 1;
        if !self
            .conns
            .get_mut(asker)
            .is_some_and(|c| !c.session.is_closing())
        {
            self.close(token); // nobody wants it any more
            return;
        }
        let conn = self.conns.get_mut(token).expect("live connection");
        let (_, opened) = conn.session.on_connected(&mut env!(self, self.clock.now));
        // Its idle deadline counts from now, not from the connect's.
        let deadline = conn.session.deadline(&self.rules);
        self.timers.reset(&mut conn.timer, deadline, token);
        // In edge mode bytes that came with the connect raise no new edge.
        conn.resumed = true;
        let result = match self.after_call(token, opened) {
            Ok(()) => {
                self.to_flush.push(token);
                Ok(ConnId::new(self.cx.index, token.0))
            }
            Err(e) => {
                self.close(token);
                Err(connect.open_failed(e))
            }
        };
        self.tell_asker(asker, connect.tag, result);
    }

    /// Tell a connection how its connect went (if it is still there).
    fn tell_asker(&mut self, asker: Token, tag: u64, result: io::Result<ConnId>) {
        let Some(conn) = self.conns.get_mut(asker) else {
            return;
        };
        let told = conn
            .session
            .on_connect(tag, result, &mut env!(self, self.clock.now));
        if self.after_call(asker, told).is_err() {
            self.close(asker);
            return;
        }
        self.to_flush.push(asker);
    }

    fn on_conn_event(&mut self, token: Token, readable: bool, writable: bool, hup: bool) {
        let Some(conn) = self.conns.get_mut(token) else {
            return;
        };
        if conn.session.is_connecting() {
            self.on_connect_event(token);
            return;
        }
        conn.hup_seen |= hup;
        if conn.session.is_lingering() {
            if readable {
                self.drain_lingering(token);
            }
            return;
        }
        if writable && conn.session.owed() > 0 && self.flush(token).is_err() {
            self.close(token);
            return;
        }
        if readable && self.read_and_process(token).is_err() {
            self.close(token);
            return;
        }
        self.settle(token);
    }

    /// Read until the socket is drained, hand the bytes to the session, and
    /// send what its protocol answers. Errors mean the connection is broken.
    ///
    /// A read shorter than asked means a TCP socket's receive queue is empty,
    /// so the EAGAIN read that would confirm it is skipped (one read per
    /// request instead of two): bytes arriving later raise a new event in
    /// every mode. Only a reported FIN or error is read on to its end, since
    /// in edge mode it is not reported twice.
    fn read_and_process(&mut self, token: Token) -> io::Result<()> {
        loop {
            let conn = self.conns.get_mut(token).expect("live connection");
            if !conn.session.reading() {
                break;
            }
            self.stats.reads += 1;
            let n = match read_append(conn.fd(), &mut self.rbuf, READ_CHUNK) {
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
            if n == 0 {
                let eof = conn
                    .session
                    .on_eof(Some(&mut self.wbuf), &mut env!(self, self.clock.now));
                self.after_call(token, eof)?;
                break;
            }
            let hup_seen = conn.hup_seen;
            let received = conn.session.on_received(
                &self.rbuf,
                Some(&mut self.wbuf),
                &mut env!(self, self.clock.stamp()),
            );
            self.rbuf.clear();
            self.after_call(token, received)?;
            let drained = n < READ_CHUNK && !hup_seen;
            if self.wbuf.len() >= FLUSH_AT {
                self.flush(token)?;
            }
            if drained {
                break;
            }
        }
        self.flush(token)
    }

    /// Send the loop's gathered output (or the connection's unsent output);
    /// whatever the kernel refuses stays with the connection.
    fn flush(&mut self, token: Token) -> io::Result<()> {
        let conn = self.conns.get_mut(token).expect("live connection");
        let fd = conn.fd();
        let from_shared = conn.session.owed() == 0;
        let pending = if from_shared {
            &self.wbuf[..]
        } else {
            conn.session.unsent()
        };
        if pending.is_empty() {
            return Ok(());
        }
        let cork = self.cx.config.cork;
        if cork {
            set_cork(fd, true);
        }
        self.stats.writes += 1;
        let result = send_available(fd, pending);
        if cork {
            set_cork(fd, false);
        }
        let total = pending.len();
        let sent = match result {
            Ok(sent) => sent,
            Err(e) => {
                // The shared buffer held this connection's output: it must not
                // reach the next connection flushed.
                self.wbuf.clear();
                return Err(e);
            }
        };
        if sent < total {
            self.stats.write_blocked += 1;
        }
        let now = self.clock.now;
        let session = &mut conn.session;
        let outcome = if from_shared {
            let outcome = session.on_sent(sent, Some(total), &mut env!(self, now));
            session.keep_unsent(&self.wbuf[sent..], &mut env!(self, now));
            self.wbuf.clear();
            outcome
        } else {
            session.on_sent(sent, None, &mut env!(self, now))
        };
        if let Ok(outcome) = outcome {
            conn.resumed |= outcome.resumed;
        }
        self.after_call(token, outcome.map(|_| ()))
    }

    /// After an event: resume a paused reader, finish a closing connection,
    /// and keep the registered interest in step with what the session wants.
    fn settle(&mut self, token: Token) {
        let Some(conn) = self.conns.get_mut(token) else {
            return;
        };
        // In edge mode unread input raises no new edge once reading resumes: read it now.
        if std::mem::take(&mut conn.resumed)
            && self.trigger == Trigger::Edge
            && self.read_and_process(token).is_err()
        {
            self.close(token);
            return;
        }
        let conn = self.conns.get_mut(token).expect("live connection");
        if conn.session.ready_to_finish() {
            self.finish(token);
            return;
        }
        self.update_interest(token);
    }

    fn update_interest(&mut self, token: Token) {
        if self.trigger == Trigger::Edge {
            return;
        }
        let conn = self.conns.get_mut(token).expect("live connection");
        if conn.session.is_connecting() {
            return; // watched for the connect's end until then
        }
        let wants = conn.session.wants();
        // Only what is wanted: a peer's FIN reported on every pass while
        // reading is off would spin a level-triggered loop.
        let wanted = match (wants.read, wants.write) {
            (true, true) => Interest::BOTH,
            (false, true) => Interest::WRITABLE,
            (true, false) => Interest::READABLE,
            (false, false) => UNWATCHED,
        };
        // One-shot registrations go silent when they fire: re-armed every time.
        let rearm = self.trigger == Trigger::Oneshot && wanted != UNWATCHED;
        if wanted != conn.registered || rearm {
            let fd = conn.stream.as_fd();
            let changed = if wanted == UNWATCHED {
                self.selector.deregister(fd)
            } else if conn.registered == UNWATCHED {
                self.selector.register(fd, token, wanted)
            } else {
                self.selector.reregister(fd, token, wanted)
            }
            .map(drop);
            conn.registered = wanted;
            if changed.is_err() {
                self.close(token);
            }
        }
    }

    /// The output is sent and the connection is closing: send our FIN and
    /// drain the peer until its FIN, unless it already sent one.
    fn finish(&mut self, token: Token) {
        let conn = self.conns.get_mut(token).expect("live connection");
        match conn.session.finish(self.clock.now, &mut self.pool) {
            Finish::Close => self.close(token),
            Finish::Linger | Finish::ShutWrite if shutdown_write(conn.fd()).is_err() => {
                self.close(token)
            }
            // Half-closed: reading goes on.
            Finish::ShutWrite => self.update_interest(token),
            Finish::Linger => {
                // The linger period starts now, whatever the idle deadline was.
                let deadline = conn.session.deadline(&self.rules);
                self.timers.reset(&mut conn.timer, deadline, token);
                self.drain_lingering(token);
            }
        }
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
        if conn.registered != UNWATCHED {
            let _ = self.selector.deregister(conn.stream.as_fd());
        }
        // Whatever the shared buffers still hold is this connection's: never another's.
        self.wbuf.clear();
        self.rbuf.clear();
        self.timers.cancel(conn.timer);
        for timer in conn.session.release(&mut self.pool, &mut self.commands) {
            self.timers.cancel(timer);
        }
        // Its links close, writers waiting for it read again (at the end of the pass).
        let route = self.cx.route();
        self.dispatch
            .route_all(&mut self.commands, route, &mut self.stats);
        self.cx.max_conns.release();
        self.stats.closed += 1;
    }

    /// Fire due deadlines. A connection that was active since its timer was
    /// set gets a new timer instead (one re-insert per timeout period, not per read).
    fn expire_timers(&mut self) {
        self.expired.clear();
        self.timers.expire(self.clock.now, &mut self.expired);
        for i in 0..self.expired.len() {
            let (token, key) = self.expired[i];
            let Some(conn) = self.conns.get_mut(token) else {
                continue;
            };
            let shared = (conn.session.owed() == 0).then_some(&mut self.wbuf);
            let now = self.clock.now;
            if key != IDLE {
                let fired = conn.session.on_timer(key, shared, &mut env!(self, now));
                if self
                    .after_call(token, fired)
                    .and_then(|()| self.flush(token))
                    .is_err()
                {
                    self.close(token);
                    continue;
                }
                self.settle(token);
                continue;
            }
            match conn.session.on_deadline(shared, &mut env!(self, now)) {
                Deadline::Later(at) => conn.timer = self.timers.insert(at, token),
                Deadline::Close => self.close(token),
                Deadline::ConnectTimedOut => {
                    self.connect_done(token, Err(io::ErrorKind::TimedOut.into()))
                }
                Deadline::TimedOut => {
                    self.stats.timeouts += 1;
                    conn.timer = self
                        .timers
                        .insert(conn.session.deadline(&self.rules), token);
                    if self
                        .after_call(token, Ok(()))
                        .and_then(|()| self.flush(token))
                        .is_err()
                    {
                        self.close(token);
                        continue;
                    }
                    self.settle(token);
                }
            }
        }
    }

    /// After a call into a session: carry out what the protocol asked for,
    /// and count a fault (an input cap reached closes gracefully, the others
    /// at once: the error says why).
    fn after_call(&mut self, caller: Token, result: Result<(), Fault>) -> io::Result<()> {
        self.run_commands(caller);
        match result {
            Ok(()) => Ok(()),
            Err(fault) => {
                self.stats.faults += 1;
                if fault == Fault::InputCap {
                    return Ok(());
                }
                // Output gathered for this connection goes with it.
                self.wbuf.clear();
                Err(io::Error::new(
                    io::ErrorKind::InvalidData,
                    fault.to_string(),
                ))
            }
        }
    }

    /// Carry out what a protocol asked for during a call on `caller`.
    fn run_commands(&mut self, caller: Token) {
        if !self.commands.is_empty() {
            let session = self.conns.get_mut(caller).map(|c| &mut c.session);
            let route = self.cx.route();
            let (now, timers, stats) = (self.clock.now, &mut self.timers, &mut self.stats);
            self.dispatch.sort(
                &mut self.commands,
                caller,
                session,
                timers,
                now,
                route,
                stats,
            );
        }
        self.run_local();
    }

    /// Mail from other loops' connections.
    fn take_mail(&mut self) {
        self.dispatch.take_mail(self.cx.route(), &mut self.stats);
        self.run_local();
    }

    /// Commands for this loop's connections (writes, closes, half-closes,
    /// pauses, links) and connects: output is sent at the end of the pass,
    /// with everything else each got.
    fn run_local(&mut self) {
        while !self.dispatch.local.is_empty() {
            let mut local = std::mem::take(&mut self.dispatch.local);
            for (token, command) in local.drain(..) {
                if let Command::Connect { addr, timeout, tag } = command {
                    if self.conns.get_mut(token).is_some() {
                        self.start_connect(token, addr, timeout, tag);
                    }
                    continue;
                }
                let Some(conn) = self.conns.get_mut(token) else {
                    // Gone meanwhile: a link to it closes its asker.
                    if let Command::Link { from, .. } = command {
                        self.commands.push(Command::Close(from));
                    }
                    continue;
                };
                let now = self.clock.now;
                match conn.session.apply(command, &mut env!(self, now)) {
                    Applied::Overflow => {
                        // Closed at the end of the pass, not now: the loop's
                        // shared buffer may hold the caller's output (a
                        // publisher's answer), which a close here would drop.
                        self.stats.output_overflows += 1;
                        conn.session.request_close();
                        self.overflowed.push(token);
                        continue;
                    }
                    Applied::Resumed => conn.resumed = true,
                    Applied::Done => {}
                }
                self.to_flush.push(token);
            }
            if self.dispatch.local.is_empty() {
                self.dispatch.local = local;
            }
            // What followed from them: writers paused, links to gone connections.
            let route = self.cx.route();
            self.dispatch
                .route_all(&mut self.commands, route, &mut self.stats);
        }
    }

    /// Close the connections whose output from others overflowed, then send
    /// what other connections gave this pass, one send per connection.
    fn flush_delivered(&mut self) {
        // Closes here may give others commands (links): until none is left.
        loop {
            self.run_local();
            while let Some(token) = self.overflowed.pop() {
                self.close(token);
            }
            if self.to_flush.is_empty() && self.dispatch.local.is_empty() {
                break;
            }
            let mut tokens = std::mem::take(&mut self.to_flush);
            for &token in &tokens {
                if self.conns.get_mut(token).is_none() {
                    continue;
                }
                if self.flush(token).is_err() {
                    self.close(token);
                    continue;
                }
                self.settle(token);
            }
            tokens.clear();
            if self.to_flush.is_empty() {
                self.to_flush = tokens;
            }
        }
    }

    /// Stop accepting, tell every protocol, close idle connections, let the others finish.
    fn begin_drain(&mut self) {
        self.clock.begin_drain(self.cx.config.drain_timeout);
        if let Some(listener) = self.listener.take() {
            let _ = self.selector.deregister(listener.as_fd());
        }
        for token in self.conns.tokens() {
            if let Some(conn) = self.conns.get_mut(token) {
                conn.session.begin_drain();
            }
        }
        self.close_quiet_idle();
    }

    /// While draining: close connections the session says may close now.
    fn close_quiet_idle(&mut self) {
        let now = self.clock.now;
        for token in self.conns.tokens() {
            let conn = self.conns.get_mut(token).expect("live connection");
            let fd = conn.fd();
            if conn.session.closable_on_drain(now, || input_waiting(fd)) {
                self.close(token);
            }
        }
    }
}
