//! The event loop: one thread, one selector, many non-blocking connections.
//!
//! The non-blocking discipline lives here, once: accept until EAGAIN (shedding
//! with a reserve descriptor when descriptors run out); read until the socket
//! is drained (a short read, or EAGAIN); write directly and ask for
//! writability only when the kernel pushes back; deregister before close.
//! Every rule of a connection (deadlines, caps, backpressure, drain, linger)
//! is the [`Session`]'s: this loop only moves bytes and readiness.

use crate::buffer::BufPool;
use crate::life::{LoopSetup, SEND_PIECE};
use crate::loop_api::{Readiness, Watch};
use crate::loop_core::{LoopConn, LoopCore, LoopEngine};
use crate::session::{Connecting, Finish, Session};
use crate::sock::{
    connect_outcome, is_file_cut_short, read_append, send_available, send_front, set_cork,
    shutdown_write,
};
use crate::stats::LoopStats;
use iomux::net::{Accepted, Acceptor, Listener, Stream};
use iomux::selector::sigio::SigioSelector;
use iomux::selector::uring::UringSelector;
use iomux::timer::TimerId;
use iomux::{
    Backend, EpollSelector, Events, Interest, PollSelector, SelectSelector, Selector, Token,
    Trigger,
};
use iomux_proto::Service;
use std::io;
use std::os::fd::{AsFd, AsRawFd, OwnedFd, RawFd};
use std::time::Duration;

const LISTENER: Token = Token(0);
/// Marks a user's watched descriptor's token (`LoopCore::watches`' token
/// with this bit): connections' slots never reach it.
const WATCH_BIT: usize = 1 << 31;
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
    setup: LoopSetup<F>,
) -> io::Result<LoopStats>
where
    P: Service,
    F: Fn() -> P,
{
    // Monomorphised per backend: the loop calls the selector directly.
    match backend {
        Backend::Epoll => start_and_run(EpollSelector::new(trigger), listener, setup),
        Backend::Poll => start_and_run(PollSelector::new(), listener, setup),
        Backend::Select => start_and_run(SelectSelector::new(), listener, setup),
        Backend::Uring => start_and_run(UringSelector::new(trigger), listener, setup),
        // Signal-driven readiness is edge-triggered: the loop's edge discipline applies as is.
        Backend::Sigio => start_and_run(SigioSelector::new(), listener, setup),
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
    setup: LoopSetup<F>,
) -> io::Result<LoopStats> {
    let started = setup.started.clone();
    match selector.and_then(|s| Reactor::new(s, listener, setup)) {
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
    /// TCP_NODELAY is on (configured, or set to copy a file in pieces).
    nodelay: bool,
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
    core: LoopCore<Conn<P>, F>,
    /// Connections given output by another connection: flushed at the end
    /// of the pass, all of one pass's output in one send.
    to_flush: Vec<Token>,
    /// Connections disconnected for output others sent them past the cap,
    /// closed at the end of the pass.
    overflowed: Vec<Token>,
    /// Edge mode: connections that stopped sending a file at the pass's
    /// cap with the socket still writable (no new edge will come): they go
    /// on after the next wait, which does not block.
    capped: Vec<Token>,
    /// Shared read buffer: a connection keeps its own only for leftovers.
    rbuf: Vec<u8>,
}

impl<S: Selector, P: Service, F: Fn() -> P> Reactor<S, P, F> {
    fn new(mut selector: S, listener: Listener, setup: LoopSetup<F>) -> io::Result<Self> {
        let trigger = selector.trigger();
        selector.register(listener.as_fd(), LISTENER, Interest::READABLE)?;
        let waker = selector.waker(WAKER)?;
        setup.hub.set_waker(setup.index, waker.clone());
        setup.shutdown.add_waker(waker);
        Ok(Reactor {
            selector,
            trigger,
            listener: Some(listener),
            acceptor: Acceptor::new()?,
            core: LoopCore::new(setup, 2 * FLUSH_AT, BufPool::new(256, READ_CHUNK)),
            to_flush: Vec::new(),
            overflowed: Vec::new(),
            capped: Vec::new(),
            rbuf: Vec::with_capacity(READ_CHUNK),
        })
    }

    fn run(mut self) -> io::Result<LoopStats> {
        let mut events = Events::with_capacity(EVENTS_PER_WAIT);
        loop {
            let timeout = match self.capped.is_empty() {
                true => self.core.next_wait(),
                false => Some(Duration::ZERO),
            };
            self.selector.select(&mut events, timeout)?;
            self.core.clock().tick();
            self.core.stats().waits += 1;
            self.core.stats().events += events.len() as u64;
            for event in &events {
                match event.token() {
                    LISTENER => self.accept_all(),
                    WAKER => {
                        let _ = self.take_mail();
                        if self.core.setup().shutdown.is_triggered()
                            && !self.core.clock().draining()
                        {
                            self.begin_drain();
                        }
                    }
                    token if token.0 & WATCH_BIT != 0 => {
                        let ready = Readiness {
                            readable: event.is_readable()
                                || event.is_read_closed()
                                || event.is_error(),
                            writable: event.is_writable(),
                        };
                        let _ = self.fire_watch(Token(token.0 & !WATCH_BIT), ready);
                    }
                    token => self.on_conn_event(
                        token,
                        event.is_readable() || event.is_read_closed() || event.is_error(),
                        event.is_writable(),
                        event.is_read_closed() || event.is_error(),
                    ),
                }
            }
            let _ = self.expire_timers();
            let _ = self.run_due();
            self.flush_capped();
            self.flush_delivered();
            if self.core.clock().accept_resumes() {
                if let Some(l) = self.listener.as_ref() {
                    let _ = self
                        .selector
                        .register(l.as_fd(), LISTENER, Interest::READABLE);
                }
            }
            if self.core.clock().draining() {
                let _ = self.close_quiet_idle();
                if self.core.conn_count() == 0 {
                    break;
                }
                if self.core.clock().drain_over() {
                    for token in self.core.conn_tokens() {
                        self.close_now(token);
                    }
                    break;
                }
            }
        }
        self.core.stats().shed = self.acceptor.shed;
        self.core.stats().selector_overflows = self.selector.overflows();
        Ok(self.core.into_stats())
    }

    fn accept_all(&mut self) {
        let Some(listener) = self.listener.take() else {
            return;
        };
        loop {
            match self.acceptor.accept(&listener) {
                Ok(Accepted::Conn(stream)) => self.add_conn(stream),
                Ok(Accepted::Shed) => continue,
                Ok(Accepted::Drained) => break,
                Err(_) => {
                    // Descriptors exhausted with no reserve left: stop watching
                    // the listener for a moment instead of spinning on it.
                    self.core.stats().accept_pauses += 1;
                    let _ = self.selector.deregister(listener.as_fd());
                    self.core.clock().pause_accepting();
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

    /// An accepted connection: admitted (counted, under `max_conns`), then opened.
    fn add_conn(&mut self, stream: Stream) {
        if !self.core.admit() {
            return;
        }
        if self.open_conn(stream, false).is_err() {
            self.core.stats().refused += 1;
            self.core.stats().unwatchable += 1;
            self.core.setup().max_conns.release();
        }
    }

    /// Watch a connection's stream and open its protocol (accepted, or
    /// adopted from the user). An error means it was not taken in.
    fn open_conn(&mut self, stream: Stream, adopted: bool) -> io::Result<Token> {
        // Edge mode registers both directions once and never changes them;
        // the other modes ask for writability only when the kernel pushes back.
        let interest = if self.trigger == Trigger::Edge {
            Interest::BOTH
        } else {
            Interest::READABLE
        };
        let token = self.core.next_token();
        self.watch(&stream, token, interest)?;
        let mut session = self.core.new_session(token, None);
        if adopted {
            session.mark_adopted();
        }
        self.insert_conn(token, stream, session, interest);
        let opened = self
            .core
            .call(token, |session, env| session.on_open(None, env))
            .expect("just inserted");
        if self.after_call(token, opened).is_err() {
            self.close_now(token);
        } else {
            self.to_flush.push(token);
        }
        Ok(token)
    }

    /// Set up a new connection's socket and register it.
    fn watch(&mut self, stream: &Stream, token: Token, interest: Interest) -> io::Result<()> {
        if self.core.setup().config.nodelay {
            let _ = stream.set_nodelay(true);
        }
        self.selector.register(stream.as_fd(), token, interest)?;
        Ok(())
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
        let nodelay = self.core.setup().config.nodelay;
        let kept = self.core.keep_conn(session, |session, timer| Conn {
            stream,
            session,
            timer,
            registered: interest,
            hup_seen: false,
            resumed: false,
            nodelay,
        });
        debug_assert_eq!(kept, token);
    }

    /// A connecting socket's event: established, failed, or not yet.
    fn on_connect_event(&mut self, token: Token) {
        let conn = self.core.conn(token).expect("live connection");
        match connect_outcome(conn.stream.as_fd()) {
            Ok(true) => {
                let _ = self.finish_connect(token, Ok(()));
            }
            Ok(false) if self.trigger == Trigger::Oneshot => {
                // Not yet (a spurious wake): a one-shot registration went silent.
                let interest = conn.registered;
                let _ = self
                    .selector
                    .reregister(conn.stream.as_fd(), token, interest);
            }
            Ok(false) => {}
            Err(e) => {
                let _ = self.finish_connect(token, Err(e));
            }
        }
    }

    fn on_conn_event(&mut self, token: Token, readable: bool, writable: bool, hup: bool) {
        let Some(conn) = self.core.conn(token) else {
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
            self.close_now(token);
            return;
        }
        if readable && self.read_and_process(token).is_err() {
            self.close_now(token);
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
            let conn = self.core.conn(token).expect("live connection");
            if !conn.session.reading() {
                break;
            }
            let (fd, hup_seen, kernel_tls) = (conn.fd(), conn.hup_seen, conn.session.kernel_tls());
            self.core.stats().reads += 1;
            let n = match read_append(fd, &mut self.rbuf, READ_CHUNK) {
                Ok(n) => n,
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => {
                    self.core.stats().read_eagain += 1;
                    break;
                }
                Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
                // Under kernel TLS, a record that is not data (the peer's
                // close_notify, a KeyUpdate we cannot follow): its end.
                Err(e) if kernel_tls && crate::tls::is_control_record(&e) => 0,
                Err(e) => {
                    // Output gathered before the error belongs to this connection only.
                    self.core.clear_wbuf();
                    return Err(e);
                }
            };
            if n == 0 {
                let eof = self
                    .core
                    .with_conn(token, self.core.now(), |conn, shared, env| {
                        conn.session.on_eof(Some(shared), env)
                    })
                    .expect("live connection");
                self.after_call(token, eof)?;
                break;
            }
            let (rbuf, now) = (&self.rbuf, self.core.clock().stamp());
            let received = self
                .core
                .with_conn(token, now, |conn, shared, env| {
                    conn.session.on_received(rbuf, Some(shared), env)
                })
                .expect("live connection");
            self.rbuf.clear();
            self.after_call(token, received)?;
            let drained = n < READ_CHUNK && !hup_seen;
            if self.core.gathered().len() >= FLUSH_AT {
                self.flush(token)?;
            }
            if drained {
                break;
            }
        }
        self.flush(token)
    }

    /// Send the loop's gathered output (or the connection's own queue);
    /// whatever the kernel refuses stays with the connection.
    fn flush(&mut self, token: Token) -> io::Result<()> {
        let corking = self.core.setup().config.cork;
        let conn = self.core.conn(token).expect("live connection");
        let (fd, owed) = (conn.fd(), conn.session.owed());
        let cork = corking && !conn.session.queues_file();
        if owed > 0 {
            if cork {
                set_cork(fd, true);
            }
            let result = self.send_queue(token, fd);
            if cork {
                set_cork(fd, false);
            }
            return result;
        }
        let total = self.core.gathered().len();
        if total == 0 {
            return Ok(());
        }
        if cork {
            set_cork(fd, true);
        }
        let result = send_available(fd, self.core.gathered());
        self.core.stats().writes += 1;
        if cork {
            set_cork(fd, false);
        }
        let sent = match result {
            Ok(sent) => sent,
            Err(e) => {
                // The shared buffer held this connection's output: it must not
                // reach the next connection flushed.
                self.core.clear_wbuf();
                return Err(e);
            }
        };
        if sent < total {
            self.core.stats().write_blocked += 1;
        }
        let outcome = self
            .core
            .with_conn(token, self.core.now(), |conn, shared, env| {
                let outcome = conn.session.on_sent(sent, Some(total), env);
                conn.session.keep_unsent(&shared[sent..], env);
                if let Ok(outcome) = &outcome {
                    conn.resumed |= outcome.resumed;
                }
                outcome
            })
            .expect("live connection");
        self.core.clear_wbuf();
        self.after_call(token, outcome.map(|_| ()))
    }

    /// Send a connection's own queue, segment after segment, until the
    /// kernel pushes back, the queue is empty, or a piece is spent when the
    /// pass is no longer young ([`SEND_PIECE`]).
    fn send_queue(&mut self, token: Token, fd: RawFd) -> io::Result<()> {
        let mut budget = SEND_PIECE;
        loop {
            let conn = self.core.conn(token).expect("live connection");
            let Some(front) = conn.session.front() else {
                return Ok(());
            };
            if budget == 0 {
                // The socket may still be writable: in edge mode no event says so again.
                if self.trigger == Trigger::Edge {
                    self.capped.push(token);
                }
                return Ok(());
            }
            let mut nodelay = conn.nodelay;
            let sent = send_front(fd, front, budget, &mut nodelay);
            self.core.stats().writes += 1;
            let (sent, tried) = match sent {
                Ok(sent) => sent,
                Err(e) => {
                    if is_file_cut_short(&e) {
                        self.core.stats().files_cut_short += 1;
                    }
                    return Err(e);
                }
            };
            budget = budget.saturating_sub(sent);
            let outcome = self
                .core
                .with_conn(token, self.core.now(), |conn, _, env| {
                    conn.nodelay = nodelay;
                    let outcome = conn.session.on_sent(sent, None, env);
                    if let Ok(outcome) = &outcome {
                        conn.resumed |= outcome.resumed;
                    }
                    outcome
                })
                .expect("live connection");
            self.after_call(token, outcome.map(|_| ()))?;
            if sent < tried {
                self.core.stats().write_blocked += 1;
                return Ok(());
            }
            budget = self.core.clock().piece_left(budget);
        }
    }

    /// Edge mode: go on with the files of connections that reached the
    /// last pass's cap.
    fn flush_capped(&mut self) {
        for token in std::mem::take(&mut self.capped) {
            let Some(conn) = self.core.conn(token) else {
                continue;
            };
            if conn.session.owed() == 0 || conn.session.is_lingering() {
                continue;
            }
            if self.flush(token).is_err() {
                self.close_now(token);
                continue;
            }
            self.settle(token);
        }
    }

    /// After an event: resume a paused reader, finish a closing connection,
    /// and keep the registered interest in step with what the session wants.
    fn settle(&mut self, token: Token) {
        let Some(mut conn) = self.core.conn(token) else {
            return;
        };
        // In edge mode unread input raises no new edge once reading resumes:
        // read it now, and again while that read resumes it once more (its
        // own output paused it, then the send that ended it unpaused it), or
        // the input left in the socket waits for an edge that never comes.
        while std::mem::take(&mut conn.resumed) && self.trigger == Trigger::Edge {
            if self.read_and_process(token).is_err() {
                self.close_now(token);
                return;
            }
            conn = self.core.conn(token).expect("live connection");
        }
        if conn.session.kernel_tls_due() && self.hand_over_tls(token).is_err() {
            self.close_now(token);
            return;
        }
        let conn = self.core.conn(token).expect("live connection");
        if conn.session.ready_to_finish() {
            self.finish(token);
            return;
        }
        self.update_interest(token);
        self.core.queue_due(token);
    }

    /// The TLS handshake is done and all its records are on the socket:
    /// the kernel takes the record layer over (or declines, and the
    /// connection stays in user space). A failure past the secrets'
    /// extraction closes the connection, counted.
    fn hand_over_tls(&mut self, token: Token) -> io::Result<()> {
        let conn = self.core.conn(token).expect("live connection");
        let fd = conn.fd();
        let handed = conn.session.hand_over_tls(
            || crate::tls::attach(fd),
            |version, secrets| crate::tls::install(fd, version, secrets),
        );
        if handed == Ok(true) {
            self.core.stats().tls_kernel += 1;
        }
        self.after_call(token, handed.map(drop))
    }

    fn update_interest(&mut self, token: Token) {
        if self.trigger == Trigger::Edge {
            return;
        }
        let conn = self.core.conn(token).expect("live connection");
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
                self.close_now(token);
            }
        }
    }

    /// The output is sent and the connection is closing: send our FIN and
    /// drain the peer until its FIN, unless it already sent one.
    fn finish(&mut self, token: Token) {
        let (finish, fd, kernel_tls) = self
            .core
            .with_conn(token, self.core.now(), |conn, _, env| {
                let kernel_tls = conn.session.kernel_tls();
                (
                    conn.session.finish(env.now, env.pool),
                    conn.fd(),
                    kernel_tls,
                )
            })
            .expect("live connection");
        if kernel_tls && matches!(finish, Finish::Close | Finish::Linger | Finish::ShutWrite) {
            // Our close_notify before our FIN, encrypted by the kernel (best
            // effort: the socket may be gone already).
            let _ = crate::tls::send_close_notify(fd);
        }
        match finish {
            Finish::Close => self.close_now(token),
            // TLS's close_notify first; then finish again.
            Finish::Flush => match self.flush(token) {
                Ok(()) => self.settle(token),
                Err(_) => self.close_now(token),
            },
            Finish::Linger | Finish::ShutWrite if shutdown_write(fd).is_err() => {
                self.close_now(token)
            }
            // Half-closed: reading goes on.
            Finish::ShutWrite => self.update_interest(token),
            Finish::Linger => {
                // The linger period starts now, whatever the idle deadline was.
                self.core.restart_deadline(token);
                self.drain_lingering(token);
            }
        }
    }

    fn drain_lingering(&mut self, token: Token) {
        let conn = self.core.conn(token).expect("live connection");
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
        self.close_now(token);
    }

    fn close_now(&mut self, token: Token) {
        self.core.end_conn(token);
        let Some(conn) = self.core.remove_conn(token) else {
            return;
        };
        // Deregister before close: the descriptor number may be reused at once.
        if conn.registered != UNWATCHED {
            let _ = self.selector.deregister(conn.stream.as_fd());
        }
        // Whatever the shared buffers still hold is this connection's: never another's.
        self.core.clear_wbuf();
        self.rbuf.clear();
    }

    /// Close the connections whose output from others overflowed, then send
    /// what other connections gave this pass, one send per connection.
    fn flush_delivered(&mut self) {
        // Closes here may give others commands (links): until none is left.
        loop {
            let _ = self.run_local();
            while let Some(token) = self.overflowed.pop() {
                self.close_now(token);
            }
            if self.to_flush.is_empty() && !self.core.has_local_commands() {
                break;
            }
            let mut tokens = std::mem::take(&mut self.to_flush);
            for &token in &tokens {
                if self.core.conn(token).is_none() {
                    continue;
                }
                if self.flush(token).is_err() {
                    self.close_now(token);
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
        self.core.begin_drain();
        if let Some(listener) = self.listener.take() {
            let _ = self.selector.deregister(listener.as_fd());
        }
        let _ = self.close_quiet_idle();
    }
}

impl<P: Service> LoopConn for Conn<P> {
    type Service = P;
    fn slot(&mut self) -> (&mut Session<P>, &mut TimerId) {
        (&mut self.session, &mut self.timer)
    }
    fn raw_fd(&self) -> RawFd {
        self.fd()
    }
    /// A reactor's connection leaves the slab as it closes.
    fn live(&self) -> bool {
        true
    }
}

impl<S: Selector, P: Service, F: Fn() -> P> LoopEngine for Reactor<S, P, F> {
    type Conn = Conn<P>;
    type Factory = F;

    fn core(&mut self) -> &mut LoopCore<Conn<P>, F> {
        &mut self.core
    }

    fn close(&mut self, token: Token) -> io::Result<()> {
        self.close_now(token);
        Ok(())
    }

    fn mark_ready(&mut self, token: Token) {
        self.to_flush.push(token);
    }

    fn on_resumed(&mut self, token: Token) {
        if let Some(conn) = self.core.conn(token) {
            conn.resumed = true;
        }
    }

    fn on_overflow(&mut self, token: Token) -> io::Result<()> {
        // Closed at the end of the pass, not now: the loop's shared buffer
        // may hold the caller's output (a publisher's answer), which a close
        // here would drop.
        if let Some(conn) = self.core.conn(token) {
            conn.session.request_close();
            self.overflowed.push(token);
        }
        Ok(())
    }

    fn on_fault(&mut self) {
        // Output gathered for this connection goes with it.
        self.core.clear_wbuf();
    }

    fn after_timer(&mut self, token: Token) -> io::Result<()> {
        if self.flush(token).is_err() {
            self.close_now(token);
        } else {
            self.settle(token);
        }
        Ok(())
    }

    fn start_connect(&mut self, fd: OwnedFd, connect: Connecting) -> io::Result<()> {
        let token = self.core.next_token();
        // Watched for writability until the connect ends (edge mode: both, once).
        let interest = if self.trigger == Trigger::Edge {
            Interest::BOTH
        } else {
            Interest::WRITABLE
        };
        let stream = Stream::Tcp(std::net::TcpStream::from(fd));
        self.watch(&stream, token, interest)?;
        let session = self.core.new_session(token, Some(connect));
        self.insert_conn(token, stream, session, interest);
        Ok(())
    }

    fn serve_outgoing(&mut self, token: Token) -> io::Result<()> {
        // In edge mode bytes that came with the connect raise no new edge.
        self.on_resumed(token);
        self.to_flush.push(token);
        Ok(())
    }

    fn adopt_stream(&mut self, stream: Stream) -> io::Result<Token> {
        stream.set_nonblocking(true)?;
        self.open_conn(stream, true)
    }

    fn watch_fd(&mut self, token: Token) -> io::Result<()> {
        let watch = self.core.watch(token).expect("just inserted");
        let (fd, interest) = (watch.fd.as_fd(), watch.interest);
        let selector_token = Token(token.0 | WATCH_BIT);
        // Level-triggered where the selector has it: readiness left unread is
        // reported again, as libuv's poll handles do.
        let registered = self
            .selector
            .register_with_trigger(fd, selector_token, interest, Trigger::Level)
            .or_else(|_| self.selector.register(fd, selector_token, interest))?;
        watch.rearm = registered.trigger == Trigger::Oneshot;
        Ok(())
    }

    fn unwatch_fd(&mut self, _token: Token, watch: Watch) {
        // Deregistered before it closes (dropped here).
        let _ = self.selector.deregister(watch.fd.as_fd());
    }

    fn rearm_watch(&mut self, token: Token) -> io::Result<()> {
        let Some(watch) = self.core.watch(token).filter(|w| w.rearm) else {
            return Ok(());
        };
        self.selector
            .reregister(watch.fd.as_fd(), Token(token.0 | WATCH_BIT), watch.interest)
            .map(drop)
    }
}
