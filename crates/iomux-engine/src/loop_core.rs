//! What both event-loop engines (the reactor over a selector, and the
//! io_uring completion loop) keep and do beside moving bytes: the
//! connections and their timers, the protocols' commands and the mail from
//! other loops, outgoing connects, drain on shutdown. [`LoopCore`] holds the
//! state; [`LoopEngine`] carries out its rules once, calling back into the
//! engine only for what differs between them (how a connection closes, how
//! its output is sent, how an outgoing connect is watched).

use crate::buffer::BufPool;
use crate::hub::Dispatch;
use crate::life::{admit, admit_outgoing, LoopClock, LoopSetup};
use crate::loop_api::{
    BlockingDoneFn, BlockingResult, ConnectFn, Job, LoopCx, LoopOps, LoopTimer, Readiness, TimerFn,
    Watch, WatchId,
};
use crate::session::{Applied, Connecting, Deadline, Env, Fault, Rules, Session, LOOP_ASKER};
use crate::sock::{connect_nonblocking, input_waiting};
use crate::stats::LoopStats;
use crate::table::{Slab, Timers, IDLE};
use crate::tls::TlsSession;
use iomux::net::Stream;
use iomux::timer::TimerId;
use iomux::Token;
use iomux_proto::{BlockingPool, BlockingWork, Command, ConnId, Service};
use std::collections::HashMap;
use std::io;
use std::net::SocketAddr;
use std::os::fd::{OwnedFd, RawFd};
use std::panic::{catch_unwind, AssertUnwindSafe};
use std::time::{Duration, Instant};

/// The timer wheel's token for loop timers (their key is the timer's number).
const LOOP_TIMERS: Token = Token(usize::MAX);

/// The loop's [`Env`] for a session call, from the core's disjoint fields
/// (so a connection of its `conns` may stay borrowed).
macro_rules! env {
    ($core:expr, $now:expr) => {
        $crate::session::Env {
            now: $now,
            rules: &$core.rules,
            pool: &mut $core.pool,
            commands: &mut $core.commands,
            blocking: Some(&*$core.setup.workers),
        }
    };
}

/// An engine's connection, as the core sees it.
pub(crate) trait LoopConn {
    type Service: Service;
    /// Its session and its deadline's timer.
    fn slot(&mut self) -> (&mut Session<Self::Service>, &mut TimerId);
    /// Not closed (a completion engine keeps closed ones until their requests end).
    fn live(&self) -> bool;
    fn raw_fd(&self) -> RawFd;

    fn session(&mut self) -> &mut Session<Self::Service> {
        self.slot().0
    }
    fn timer(&mut self) -> &mut TimerId {
        self.slot().1
    }
}

/// The state both event loops keep beside what moves bytes, behind methods:
/// a connection's deadline timer, its place under `max_conns` and its
/// session's buffers come and go with it here, never by an engine's hand.
pub(crate) struct LoopCore<C, F> {
    conns: Slab<C>,
    timers: Timers,
    expired: Vec<(Token, u64)>,
    /// What protocols asked for during the current call.
    commands: Vec<Command>,
    /// Sorts protocols' commands: timers, this loop's, other loops'.
    dispatch: Dispatch,
    /// Output gathered for one connection during a call, when the engine
    /// gathers in a shared buffer (the reactor); a connection keeps its own
    /// only for what the kernel refused.
    wbuf: Vec<u8>,
    /// Whether the engine gathers output in `wbuf`.
    gathers_output: bool,
    /// `wbuf`'s usual capacity.
    gather: usize,
    pool: BufPool,
    setup: LoopSetup<F>,
    rules: Rules,
    clock: LoopClock,
    stats: LoopStats,
    /// Descriptors users watch in this loop.
    watches: Slab<Watch>,
    /// Loop timers: their wheel entry and callback, by number.
    loop_timers: HashMap<u64, (TimerId, TimerFn)>,
    /// Connects the loop itself asked for: who to tell, by the connect's tag.
    loop_connects: HashMap<u64, ConnectFn>,
    /// Blocking work the loop itself spawned: who to tell, by its key.
    loop_blocking: HashMap<u64, BlockingDoneFn>,
    /// Connections with a callback due in the next pass (input released,
    /// a drained notice): run once per pass, so none starves the others.
    due: Vec<Token>,
    /// Numbers loop timers and the loop's connects.
    next_loop_timer: u64,
    /// Work posted from other threads, reused pass after pass.
    jobs: Vec<Job>,
}

impl<C: LoopConn, F: Fn() -> C::Service> LoopCore<C, F> {
    /// A core whose shared output buffer holds `gather` bytes (0: the engine
    /// does not gather output).
    pub(crate) fn new(setup: LoopSetup<F>, gather: usize, pool: BufPool) -> Self {
        let clock = LoopClock::new();
        LoopCore {
            conns: Slab::new(),
            timers: Timers::new(clock.now, setup.config.idle_timeout),
            expired: Vec::new(),
            commands: Vec::new(),
            dispatch: Dispatch::default(),
            wbuf: Vec::with_capacity(gather),
            gathers_output: gather > 0,
            gather,
            pool,
            rules: setup.rules,
            setup,
            clock,
            stats: LoopStats::default(),
            watches: Slab::new(),
            loop_timers: HashMap::new(),
            loop_connects: HashMap::new(),
            loop_blocking: HashMap::new(),
            due: Vec::new(),
            next_loop_timer: 0,
            jobs: Vec::new(),
        }
    }

    /// When this pass started.
    pub(crate) fn now(&self) -> Instant {
        self.clock.now
    }

    /// The loop's clock: the pass's time, a pause in accepting, the drain.
    pub(crate) fn clock(&mut self) -> &mut LoopClock {
        &mut self.clock
    }

    /// The loop's counters.
    pub(crate) fn stats(&mut self) -> &mut LoopStats {
        &mut self.stats
    }

    /// The counters, once the loop has ended.
    pub(crate) fn into_stats(self) -> LoopStats {
        self.stats
    }

    /// What the loop was started with: the configuration, the connection
    /// limit, the shutdown it watches.
    pub(crate) fn setup(&self) -> &LoopSetup<F> {
        &self.setup
    }

    /// The connections' rules (deadlines, caps, high-water mark).
    pub(crate) fn rules(&self) -> &Rules {
        &self.rules
    }

    /// The loop's buffer pool.
    pub(crate) fn pool(&mut self) -> &mut BufPool {
        &mut self.pool
    }

    /// Count a newly accepted connection and take a place for it under
    /// `max_conns`; false when it is refused (draining, or full).
    pub(crate) fn admit(&mut self) -> bool {
        admit(
            &self.setup.max_conns,
            self.clock.draining(),
            &mut self.stats,
        )
    }

    /// The connection under `token`, if there is one (a completion engine
    /// keeps closed ones until their requests end: see [`LoopConn::live`]).
    pub(crate) fn conn(&mut self, token: Token) -> Option<&mut C> {
        self.conns.get_mut(token)
    }

    /// How many connections the loop holds.
    pub(crate) fn conn_count(&self) -> usize {
        self.conns.len()
    }

    /// The tokens of the connections the loop holds now.
    pub(crate) fn conn_tokens(&self) -> Vec<Token> {
        self.conns.tokens()
    }

    /// The token the next connection kept gets.
    pub(crate) fn next_token(&self) -> Token {
        self.conns.next_token()
    }

    /// Keep a new connection (built by `make` around its session and its
    /// deadline's timer, started now) under [`LoopCore::next_token`].
    pub(crate) fn keep_conn(
        &mut self,
        session: Session<C::Service>,
        make: impl FnOnce(Session<C::Service>, TimerId) -> C,
    ) -> Token {
        let token = self.conns.next_token();
        let timer = self.timers.insert(session.deadline(&self.rules), token);
        let kept = self.conns.insert(make(session, timer));
        debug_assert_eq!(kept, token);
        token
    }

    /// A connection closed: its deadline's timer is cancelled, its place
    /// under `max_conns` given back, and it is counted. Once per connection.
    pub(crate) fn end_conn(&mut self, token: Token) {
        let Some(conn) = self.conns.get_mut(token) else {
            return;
        };
        self.timers.cancel(*conn.timer());
        self.setup.max_conns.release();
        self.stats.closed += 1;
    }

    /// Forget a closed connection ([`LoopCore::end_conn`]): taken out, its
    /// session lets go of its buffers and protocol timers, its links close
    /// and writers waiting for it read again (at the end of the pass).
    pub(crate) fn remove_conn(&mut self, token: Token) -> Option<C> {
        let mut conn = self.conns.remove(token)?;
        if let Some(resumed) = conn.session().tls_handshake() {
            self.stats.tls_handshakes += 1;
            self.stats.tls_resumed += resumed as u64;
        }
        for timer in conn.session().release(&mut self.pool, &mut self.commands) {
            self.timers.cancel(timer);
        }
        self.route_commands();
        Some(conn)
    }

    /// Call into connection `token` (live or not) with the loop's shared
    /// output buffer and an [`Env`] at `now`: a call whose output may be
    /// gathered passes the buffer on (see `Session::call`).
    pub(crate) fn with_conn<R>(
        &mut self,
        token: Token,
        now: Instant,
        f: impl FnOnce(&mut C, &mut Vec<u8>, &mut Env) -> R,
    ) -> Option<R> {
        let conn = self.conns.get_mut(token)?;
        Some(f(conn, &mut self.wbuf, &mut env!(self, now)))
    }

    /// Output gathered in the shared buffer during the current connection's calls.
    pub(crate) fn gathered(&self) -> &[u8] {
        &self.wbuf
    }

    /// A user's watched descriptor under `token`.
    pub(crate) fn watch(&mut self, token: Token) -> Option<&mut Watch> {
        self.watches.get_mut(token)
    }

    /// Whether commands for this loop's connections wait to be carried out.
    pub(crate) fn has_local_commands(&self) -> bool {
        !self.dispatch.local.is_empty()
    }

    /// Empty the shared output buffer for the next connection; one that a
    /// large answer grew past the pool's bound is given back and started
    /// again at its usual size (a 256 MiB GET must not pin 256 MiB).
    pub(crate) fn clear_wbuf(&mut self) {
        if self.pool.oversized(&self.wbuf) {
            self.wbuf = Vec::with_capacity(self.gather);
        } else {
            self.wbuf.clear();
        }
    }

    /// The id a connection under `token` of this loop has.
    pub(crate) fn id(&self, token: Token) -> ConnId {
        ConnId::new(self.setup.index, token.0)
    }

    /// A new connection's session (an accepted one, or an outgoing one
    /// with its connect), under `token` (the slab's next).
    pub(crate) fn new_session(
        &self,
        token: Token,
        connect: Option<Connecting>,
    ) -> Session<C::Service> {
        let protocol = (self.setup.new_protocol)();
        match connect {
            None => {
                let session = Session::new(protocol, self.id(token), self.clock.now);
                let to_kernel = self.setup.config.kernel_tls;
                let tls = self.setup.config.tls.as_ref();
                match tls.map(|config| TlsSession::new(config, to_kernel)) {
                    // The configuration was tried at start: it makes connections.
                    Some(Ok(tls)) => session.with_tls(tls),
                    Some(Err(e)) => {
                        unreachable!("a TLS configuration checked at start failed: {e}")
                    }
                    None => session,
                }
            }
            // Outgoing connections are plain (the transport is server-side TLS).
            Some(connect) => Session::connecting(protocol, self.id(token), self.clock.now, connect),
        }
    }

    /// Call into the session of a live connection with the loop's [`Env`].
    pub(crate) fn call<R>(
        &mut self,
        token: Token,
        f: impl FnOnce(&mut Session<C::Service>, &mut Env) -> R,
    ) -> Option<R> {
        let conn = self.conns.get_mut(token).filter(|c| c.live())?;
        Some(f(conn.session(), &mut env!(self, self.clock.now)))
    }

    /// After a connection's output went out: if its service has a callback
    /// due (see `Session::take_due`), run it in the next pass.
    pub(crate) fn queue_due(&mut self, token: Token) {
        if let Some(conn) = self.conns.get_mut(token).filter(|c| c.live()) {
            if conn.session().take_due() {
                self.due.push(token);
            }
        }
    }

    /// Whether a callback is due: the next wait must not sleep.
    pub(crate) fn has_due(&self) -> bool {
        !self.due.is_empty()
    }

    /// How long the next wait may last: until the earliest timer, not at
    /// all while a callback is due.
    pub(crate) fn next_wait(&mut self) -> Option<Duration> {
        if self.has_due() {
            return Some(Duration::ZERO);
        }
        self.timer_wait()
    }

    /// How long until the earliest timer (of connections, of the loop, of
    /// the clock's accept pause and drain).
    pub(crate) fn timer_wait(&mut self) -> Option<Duration> {
        self.clock
            .next_wait(self.timers.next_deadline(self.clock.now))
    }

    /// A connection's deadline timer restarts from its session's deadline now.
    pub(crate) fn restart_deadline(&mut self, token: Token) {
        if let Some(conn) = self.conns.get_mut(token) {
            let deadline = conn.session().deadline(&self.rules);
            self.timers.reset(conn.timer(), deadline, token);
        }
    }

    /// Sort the commands a call on `caller` gave: timers set here, the rest
    /// left in `dispatch.local` or posted to other loops.
    fn sort_commands(&mut self, caller: Token) {
        if self.commands.is_empty() {
            return;
        }
        let session = self.conns.get_mut(caller).map(|c| c.session());
        let route = self.setup.route();
        self.dispatch.sort(
            &mut self.commands,
            caller,
            session,
            &mut self.timers,
            self.clock.now,
            route,
            &mut self.stats,
        );
    }

    /// Route the commands that followed from the engine's own work.
    pub(crate) fn route_commands(&mut self) {
        let route = self.setup.route();
        self.dispatch
            .route_all(&mut self.commands, route, &mut self.stats);
    }

    /// Start draining: every protocol is told (messages in flight are
    /// answered as the last ones); the engine stops accepting.
    pub(crate) fn begin_drain(&mut self) {
        self.clock.begin_drain(self.setup.config.drain_timeout);
        for token in self.conns.tokens() {
            if let Some(conn) = self.conns.get_mut(token) {
                conn.session().begin_drain();
            }
        }
    }
}

/// The rules of the loop, carried out once for both engines; each engine
/// supplies how a connection closes and how its output goes out.
pub(crate) trait LoopEngine: Sized {
    type Conn: LoopConn;
    type Factory: Fn() -> <Self::Conn as LoopConn>::Service;

    fn core(&mut self) -> &mut LoopCore<Self::Conn, Self::Factory>;
    /// Close a connection now.
    fn close(&mut self, token: Token) -> io::Result<()>;
    /// The connection was given output or changed state: send and settle
    /// it at the end of the pass.
    fn mark_ready(&mut self, token: Token);
    /// Its reading resumed after a pause.
    fn on_resumed(&mut self, token: Token);
    /// Others gave it output past the cap: it is disconnected.
    fn on_overflow(&mut self, token: Token) -> io::Result<()>;
    /// A fault closes a connection: drop what the engine gathered for it.
    fn on_fault(&mut self) {}
    /// A protocol timer fired or a deadline passed with output to send.
    fn after_timer(&mut self, token: Token) -> io::Result<()>;
    /// Take in a stream a user adopted (admitted under `max_conns`): watch it
    /// and open its protocol. An error means it was not taken in.
    fn adopt_stream(&mut self, stream: Stream) -> io::Result<Token>;
    /// Watch `core.watches[token]`'s descriptor for its interest.
    fn watch_fd(&mut self, token: Token) -> io::Result<()>;
    /// Stop watching a descriptor taken out of `core.watches`.
    fn unwatch_fd(&mut self, token: Token, watch: Watch);
    /// A watch's callback ran and it is still watched: watch on.
    fn rearm_watch(&mut self, token: Token) -> io::Result<()>;
    /// Take in a connecting socket (admitted under `max_conns`) and watch
    /// it until its connect ends. An error means it was not taken in.
    fn start_connect(&mut self, fd: OwnedFd, connect: Connecting) -> io::Result<()>;
    /// An outgoing connection opened: start reading it and send what it said.
    fn serve_outgoing(&mut self, token: Token) -> io::Result<()>;

    /// After a call into a session: carry out what the protocol asked for,
    /// and count a fault (an input cap reached closes gracefully, the others
    /// at once: the error says why, and the connection must close).
    fn after_call(&mut self, caller: Token, result: Result<(), Fault>) -> io::Result<()> {
        let ran = self.run_commands(caller);
        match result {
            Ok(()) => ran,
            Err(fault) => {
                fault.count(&mut self.core().stats);
                if fault.is_graceful() {
                    return ran;
                }
                self.on_fault();
                Err(io::Error::new(
                    io::ErrorKind::InvalidData,
                    fault.to_string(),
                ))
            }
        }
    }

    /// Carry out what a protocol asked for during a call on `caller`.
    fn run_commands(&mut self, caller: Token) -> io::Result<()> {
        self.core().sort_commands(caller);
        self.run_local()
    }

    /// Mail from other loops' connections, and work posted to this loop.
    fn take_mail(&mut self) -> io::Result<()> {
        let core = self.core();
        let route = core.setup.route();
        core.dispatch.take_mail(route, &mut core.stats);
        let mut jobs = std::mem::take(&mut core.jobs);
        route.hub.take_jobs(route.index, &mut jobs);
        for job in jobs.drain(..) {
            self.guarded(|loop_cx| job(loop_cx));
        }
        self.core().jobs = jobs;
        self.run_local()
    }

    /// The callbacks due this pass (queued by the previous one): held input
    /// offered again, drained notices. What they queue runs next pass.
    fn run_due(&mut self) -> io::Result<()> {
        let core = self.core();
        if core.due.is_empty() {
            return Ok(());
        }
        let mut due = std::mem::take(&mut core.due);
        for &token in &due {
            let core = self.core();
            let Some(conn) = core.conns.get_mut(token).filter(|c| c.live()) else {
                continue;
            };
            let session = conn.session();
            // Output goes to the shared buffer when nothing is owed before it.
            let gathering = core.gathers_output && session.owed() == 0;
            let shared = gathering.then_some(&mut core.wbuf);
            let ran = session.run_due(shared, &mut env!(core, core.clock.now));
            let resumed = ran == Ok(true);
            if self.after_call(token, ran.map(drop)).is_err() {
                self.close(token)?;
                continue;
            }
            if resumed {
                self.on_resumed(token);
            }
            self.after_timer(token)?;
        }
        due.clear();
        let core = self.core();
        if core.due.is_empty() {
            core.due = due;
        }
        Ok(())
    }

    /// Run a user's callback in the loop; a panic in it is counted and
    /// leaves the loop running. False when it panicked.
    fn guarded(&mut self, f: impl FnOnce(&mut LoopCx)) -> bool {
        let ran = catch_unwind(AssertUnwindSafe(|| f(&mut LoopCx::new(self))));
        if ran.is_err() {
            self.core().stats.faults += 1;
        }
        ran.is_ok()
    }

    /// A watched descriptor is ready: call its callback, then watch on.
    fn fire_watch(&mut self, token: Token, ready: Readiness) -> io::Result<()> {
        let Some(mut callback) = self
            .core()
            .watches
            .get_mut(token)
            .and_then(|w| w.callback.take())
        else {
            return Ok(());
        };
        if !self.guarded(|loop_cx| callback(loop_cx, ready)) {
            LoopOps::unwatch(self, WatchId(token.0));
            return Ok(());
        }
        // Unwatched meanwhile (its slot may even hold a new watch): dropped.
        match self.core().watches.get_mut(token) {
            Some(watch) if watch.callback.is_none() => watch.callback = Some(callback),
            _ => return Ok(()),
        }
        self.rearm_watch(token)
    }

    /// Commands for this loop's connections (writes, closes, half-closes,
    /// pauses, links) and connects: output is sent at the end of the pass,
    /// with everything else each got.
    fn run_local(&mut self) -> io::Result<()> {
        let mut result = Ok(());
        while !self.core().dispatch.local.is_empty() {
            let mut local = std::mem::take(&mut self.core().dispatch.local);
            let mut commands = local.drain(..).peekable();
            while let Some((token, command)) = commands.next() {
                let ran = match command {
                    Command::SendMany { to, bytes } => {
                        // Frames for the same receivers back to back (pipelined
                        // PUBLISH to one channel): one append for each receiver.
                        let mut joined: Option<Vec<u8>> = None;
                        while let Some((
                            _,
                            Command::SendMany {
                                to: next_to,
                                bytes: next,
                            },
                        )) = commands.peek()
                        {
                            if *next_to != to {
                                break;
                            }
                            joined
                                .get_or_insert_with(|| bytes.to_vec())
                                .extend_from_slice(next);
                            commands.next();
                        }
                        self.send_many(&to, joined.as_deref().unwrap_or(&bytes))
                    }
                    command => self.run_one(token, command),
                };
                if let Err(e) = ran {
                    result = Err(e);
                }
            }
            drop(commands);
            let core = self.core();
            if core.dispatch.local.is_empty() {
                core.dispatch.local = local;
            }
            // What followed from them: writers paused, links to gone connections.
            core.route_commands();
        }
        result
    }

    /// One command for connection `token` of this loop (a connect: `token` asked).
    fn run_one(&mut self, token: Token, command: Command) -> io::Result<()> {
        let core = self.core();
        let live = core.conns.get_mut(token).is_some_and(|c| c.live());
        match command {
            Command::Connect { addr, timeout, tag } if live => {
                return self.connect(token, addr, timeout, tag)
            }
            // A link to a connection gone meanwhile closes its asker.
            Command::Link { from, .. } if !live => core.commands.push(Command::Close(from)),
            Command::Post { from, message, .. } => {
                let Some(told) = core.call(token, |s, env| s.on_message(from, message.0, env))
                else {
                    return Ok(()); // gone meanwhile: dropped
                };
                if self.after_call(token, told).is_err() {
                    return self.close(token);
                }
                self.mark_ready(token);
                return Ok(());
            }
            _ => {}
        }
        let Some(applied) = core.call(token, |session, env| session.apply(command, env)) else {
            return Ok(()); // gone meanwhile
        };
        match applied {
            Applied::Overflow => {
                core.stats.output_overflows += 1;
                return self.on_overflow(token);
            }
            Applied::Resumed => self.on_resumed(token),
            Applied::Done => {}
        }
        self.mark_ready(token);
        Ok(())
    }

    /// One frame for many connections of this loop ([`Command::SendMany`]):
    /// appended to each one's output as a `Send` would be, copied from the
    /// shared frame with no command or buffer of its own per receiver. Each
    /// is marked ready once, when it first owes something: one with output
    /// owed already is due a send anyway (this pass, or when its socket
    /// takes more), so a pass of many messages flushes each receiver once.
    fn send_many(&mut self, to: &[ConnId], bytes: &[u8]) -> io::Result<()> {
        let mut result = Ok(());
        for &id in to {
            let token = Token(id.token());
            let core = self.core();
            let Some(conn) = core.conns.get_mut(token).filter(|c| c.live()) else {
                continue; // gone meanwhile
            };
            let session = conn.session();
            let owed_nothing = session.owed() == 0;
            if !session.push_output(bytes, &mut env!(core, core.clock.now)) {
                core.stats.output_overflows += 1;
                if let Err(e) = self.on_overflow(token) {
                    result = Err(e);
                }
            } else if owed_nothing {
                self.mark_ready(token);
            }
        }
        result
    }

    /// A protocol asked for an outgoing connection: a non-blocking connect,
    /// watched by the engine until it ends, its timeout in the timer wheel.
    /// A connect that cannot even start is reported to the asker at once.
    ///
    /// Its steps, one name each: `start_connect` (the engine watches it),
    /// `finish_connect` (it ended), `Session::open_outgoing` and
    /// `serve_outgoing` (the new connection opens and is served),
    /// `report_connect` (the asker is told, through `Session::on_connect`
    /// into `Service::on_connect`).
    fn connect(
        &mut self,
        asker: Token,
        addr: SocketAddr,
        timeout: Duration,
        tag: u64,
    ) -> io::Result<()> {
        let core = self.core();
        let connect = Connecting::new(core.id(asker), tag, addr, timeout, core.clock.now);
        let started = admit_outgoing(&core.setup.max_conns).and_then(|()| {
            connect_nonblocking(addr)
                .and_then(|fd| self.start_connect(fd, connect))
                .inspect_err(|_| self.core().setup.max_conns.release())
        });
        if let Err(e) = started {
            self.core().stats.connect_failures += 1;
            return self.report_connect(asker, tag, Err(connect.failed(e)));
        }
        Ok(())
    }

    /// A connect ended: on success the new connection opens and the asker
    /// learns its id; on failure it closes and the asker learns why. With
    /// the asker gone, the new connection is closed.
    fn finish_connect(&mut self, token: Token, outcome: io::Result<()>) -> io::Result<()> {
        let core = self.core();
        let Some(connect) = core
            .conns
            .get_mut(token)
            .filter(|c| c.live())
            .and_then(|c| c.session().connect_details())
        else {
            return Ok(());
        };
        let asker = Token(connect.asker.token());
        if let Err(e) = outcome {
            core.stats.connect_failures += 1;
            self.close(token)?;
            return self.report_connect(asker, connect.tag, Err(connect.failed(e)));
        }
        core.stats.connects += 1;
        let asker_here = asker.0 == LOOP_ASKER
            || core
                .conns
                .get_mut(asker)
                .is_some_and(|c| c.live() && !c.session().is_closing());
        if !asker_here {
            return self.close(token); // nobody wants it any more
        }
        let opened = core
            .call(token, |session, env| session.open_outgoing(env).1)
            .expect("live connection");
        // Its idle deadline counts from now, not from the connect's.
        core.restart_deadline(token);
        let result = match self.after_call(token, opened) {
            Ok(()) => {
                self.serve_outgoing(token)?;
                Ok(self.core().id(token))
            }
            Err(e) => {
                self.close(token)?;
                Err(connect.open_failed(e))
            }
        };
        self.report_connect(asker, connect.tag, result)
    }

    /// Tell a connection how its connect went (if it is still there).
    fn report_connect(
        &mut self,
        asker: Token,
        tag: u64,
        result: io::Result<ConnId>,
    ) -> io::Result<()> {
        let core = self.core();
        if asker.0 == LOOP_ASKER {
            if let Some(told) = core.loop_connects.remove(&tag) {
                self.guarded(|loop_cx| told(loop_cx, result));
                self.run_local()?;
            }
            return Ok(());
        }
        let Some(told) = core.call(asker, |session, env| session.on_connect(tag, result, env))
        else {
            return Ok(());
        };
        if self.after_call(asker, told).is_err() {
            return self.close(asker);
        }
        self.mark_ready(asker);
        Ok(())
    }

    /// Fire due deadlines and protocol timers. A connection that was active
    /// since its timer was set gets a new timer instead (one re-insert per
    /// timeout period, not per read).
    fn expire_timers(&mut self) -> io::Result<()> {
        let core = self.core();
        core.expired.clear();
        core.timers.expire(core.clock.now, &mut core.expired);
        for i in 0..core.expired.len() {
            let core = self.core();
            let (token, key) = core.expired[i];
            if token == LOOP_TIMERS {
                if let Some((_, callback)) = core.loop_timers.remove(&key) {
                    self.guarded(callback);
                    self.run_local()?;
                }
                continue;
            }
            let Some(conn) = core.conns.get_mut(token).filter(|c| c.live()) else {
                continue;
            };
            let now = core.clock.now;
            let session = conn.session();
            // Output goes to the shared buffer when nothing is owed before it.
            let gathering = core.gathers_output && session.owed() == 0;
            let shared = gathering.then_some(&mut core.wbuf);
            if key != IDLE {
                let fired = session.on_timer(key, shared, &mut env!(core, now));
                if self.after_call(token, fired).is_err() {
                    self.close(token)?;
                    continue;
                }
                self.after_timer(token)?;
                continue;
            }
            match session.on_deadline(shared, &mut env!(core, now)) {
                Deadline::Later(at) => *conn.timer() = core.timers.insert(at, token),
                Deadline::Close => self.close(token)?,
                Deadline::ConnectTimedOut => {
                    self.finish_connect(token, Err(io::ErrorKind::TimedOut.into()))?
                }
                Deadline::TimedOut => {
                    core.stats.timeouts += 1;
                    let deadline = session.deadline(&core.rules);
                    *conn.timer() = core.timers.insert(deadline, token);
                    self.run_commands(token)?;
                    self.after_timer(token)?;
                }
            }
        }
        Ok(())
    }

    /// While draining: close connections the session says may close now.
    fn close_quiet_idle(&mut self) -> io::Result<()> {
        let core = self.core();
        let now = core.clock.now;
        for token in core.conns.tokens() {
            let core = self.core();
            let Some(conn) = core.conns.get_mut(token).filter(|c| c.live()) else {
                continue;
            };
            let fd = conn.raw_fd();
            if conn.session().closable_on_drain(now, || input_waiting(fd)) {
                self.close(token)?;
            }
        }
        Ok(())
    }
}

/// Work running in the loop reaches it through these: the same on every
/// event-loop engine.
impl<E: LoopEngine> LoopOps for E {
    fn loop_index(&mut self) -> usize {
        self.core().setup.index
    }

    fn now(&mut self) -> Instant {
        self.core().clock.now
    }

    fn adopt(&mut self, stream: Stream) -> io::Result<ConnId> {
        let core = self.core();
        if !core.setup.max_conns.try_acquire() {
            core.stats.refused += 1;
            return Err(io::Error::new(
                io::ErrorKind::WouldBlock,
                "cannot adopt the stream: the server is at its connection limit (max_conns)",
            ));
        }
        let token = self.adopt_stream(stream).inspect_err(|_| {
            let core = self.core();
            core.setup.max_conns.release();
            core.stats.unwatchable += 1;
        })?;
        Ok(self.core().id(token))
    }

    fn watch(&mut self, watch: Watch) -> io::Result<WatchId> {
        let token = self.core().watches.insert(watch);
        if let Err(e) = self.watch_fd(token) {
            self.core().watches.remove(token);
            return Err(e);
        }
        Ok(WatchId(token.0))
    }

    fn unwatch(&mut self, id: WatchId) -> bool {
        let token = Token(id.0);
        match self.core().watches.remove(token) {
            Some(watch) => {
                self.unwatch_fd(token, watch);
                true
            }
            None => false,
        }
    }

    fn set_timer(&mut self, after: Duration, callback: TimerFn) -> LoopTimer {
        let core = self.core();
        let key = core.next_loop_timer;
        core.next_loop_timer += 1;
        let id = core
            .timers
            .insert_key(core.clock.now + after, LOOP_TIMERS, key);
        core.loop_timers.insert(key, (id, callback));
        LoopTimer(key)
    }

    fn cancel_timer(&mut self, timer: LoopTimer) -> bool {
        let core = self.core();
        match core.loop_timers.remove(&timer.0) {
            Some((id, _)) => {
                core.timers.cancel(id);
                true
            }
            None => false,
        }
    }

    fn connect_from_loop(&mut self, addr: SocketAddr, timeout: Duration, told: ConnectFn) {
        let core = self.core();
        let tag = core.next_loop_timer;
        core.next_loop_timer += 1;
        core.loop_connects.insert(tag, told);
        let _ = LoopEngine::connect(self, Token(LOOP_ASKER), addr, timeout, tag);
    }

    fn command(&mut self, command: Command) {
        let core = self.core();
        core.commands.push(command);
        core.route_commands();
        let _ = self.run_local();
    }

    fn spawn_blocking_from_loop(
        &mut self,
        work: BlockingWork,
        done: BlockingDoneFn,
    ) -> io::Result<()> {
        let core = self.core();
        let key = core.next_loop_timer;
        core.next_loop_timer += 1;
        let asker = ConnId::new(core.setup.index, LOOP_ASKER);
        core.setup.workers.spawn(asker, key, work)?;
        core.loop_blocking.insert(key, done);
        Ok(())
    }

    fn blocking_done(&mut self, conn: ConnId, key: u64, result: BlockingResult) {
        let token = Token(conn.token());
        if token.0 == LOOP_ASKER {
            if let Some(done) = self.core().loop_blocking.remove(&key) {
                self.guarded(|loop_cx| done(loop_cx, result));
                let _ = self.run_local();
            }
            return;
        }
        let core = self.core();
        let Some(told) = core.call(token, |s, env| s.on_blocking_done(key, result, env)) else {
            return; // closed meanwhile: the result is dropped
        };
        if self.after_call(token, told).is_err() {
            let _ = self.close(token);
            return;
        }
        self.mark_ready(token);
    }
}
