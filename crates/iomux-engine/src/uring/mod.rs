//! The completion-based engine on io_uring: the kernel does the I/O and
//! reports it done, instead of reporting that it could be done.
//!
//! Per loop thread, one ring:
//! - a multishot accept on the listener (single-shot, re-issued, where the
//!   kernel lacks it);
//! - per connection one multishot receive that picks buffers from a
//!   registered provided-buffer ring (`IORING_REGISTER_PBUF_RING`); a buffer
//!   goes back to the ring as soon as the protocol has seen its bytes. It is
//!   capped at the connection's room under the output limit, so it ends by
//!   itself where backpressure must stop reading (see `RecvMode`);
//! - at most one send in flight per connection, so sends complete in order;
//!   what the protocol answers meanwhile queues behind it and goes out in one
//!   send when it completes;
//! - one timeout operation for the loop's next deadline (idle timers live in
//!   the same timer wheel as the reactor's);
//! - an outgoing connection is a non-blocking `connect(2)` and a poll for
//!   writability, its timeout in the timer wheel;
//! - closing cancels the connection's requests (`ASYNC_CANCEL` by descriptor)
//!   and frees it once their completions are in, since the kernel may still
//!   be reading a send buffer until then.
//!
//! Requests are queued in the submission ring during a pass and the next
//! pass submits them and waits in one `io_uring_enter` (`submit_and_wait`).

//!
//! Every rule of a connection (deadlines, caps, backpressure, drain, linger)
//! is the [`Session`]'s; this loop issues requests and hands their results to it.
//!
//! Files: `ring` (kernel probing, ring set-up, request tags), `bufring` (the
//! provided-buffer ring: the raw allocation and its unsafe code), this loop.

mod bufring;
mod ring;

use crate::buffer::BufPool;
use crate::hub::Dispatch;
use crate::life::{admit, admit_outgoing, LoopClock, LoopContext};
use crate::session::{Applied, Connecting, Deadline, Env, Fault, Finish, Rules, Session};
use crate::sock::{connect_nonblocking, connect_outcome, input_waiting, shutdown_write};
use crate::stats::LoopStats;
use crate::table::{Slab, Timers, IDLE};
use bufring::{BufRing, BUFFER_GROUP, BUFFER_SIZE};
use io_uring::{cqueue, opcode, squeue, types, IoUring};
use iomux::net::Listener;
use iomux::timer::TimerId;
use iomux::{Token, Waker};
use iomux_proto::{Command, ConnId, Service};
pub(crate) use ring::check_available;
use ring::{
    decode, kind, open_ring, set_total_len, timeout_token, user_data, RecvMode, TaskRun, NO_CONN,
};
use std::io;
use std::net::SocketAddr;
use std::os::fd::{AsFd, AsRawFd, FromRawFd, OwnedFd};
use std::time::{Duration, Instant};

/// The loop's [`Env`] for a session call, from its disjoint fields.
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

struct Conn<P> {
    fd: OwnedFd,
    session: Session<P>,
    /// The send in flight: the kernel reads it until its completion arrives.
    in_flight: Vec<u8>,
    in_flight_sent: usize,
    /// A send in flight (or, while connecting, the poll for the connect).
    sending: bool,
    receiving: bool,
    /// How the receive in flight was issued: a refusal moves the loop past
    /// that mode (others issued the same way before it moved are refused too).
    recv_mode: RecvMode,
    timer: TimerId,
    /// Closed: waiting for the cancelled requests' completions.
    dead: bool,
    /// Queued in `dirty` for a send at the end of the pass.
    dirty: bool,
}

/// What a receive completion asks of the loop.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Recv {
    Nothing,
    Process,
    Close,
    Free,
}

struct Loop<P, F> {
    ring: IoUring,
    bufs: BufRing,
    listener: Option<Listener>,
    multishot_accept: bool,
    recv_mode: RecvMode,
    accepting: bool,
    /// Connections, closed ones included until their requests complete.
    conns: Slab<Conn<P>>,
    /// Connections not closed.
    live: usize,
    dirty: Vec<Token>,
    rearm_recv: Vec<Token>,
    /// Spare lists swapped with `dirty` and `rearm_recv` while they are worked through.
    spare: Vec<Token>,
    cqes: Vec<cqueue::Entry>,
    timers: Timers,
    expired: Vec<(Token, u64)>,
    /// What protocols asked for during the current call.
    commands: Vec<Command>,
    /// Sorts protocols' commands: timers, this loop's, other loops'.
    dispatch: Dispatch,
    timeout_spec: Box<types::Timespec>,
    timeout_armed: Option<Instant>,
    timeout_generation: u32,
    waker: Waker,
    /// Where the waker's eventfd read lands (boxed: the loop moves, the kernel keeps the address).
    waker_buf: Box<u64>,
    pool: BufPool,
    cx: LoopContext<F>,
    rules: Rules,
    clock: LoopClock,
    stats: LoopStats,
    /// Tests: make the submission that follows this many fail, to show
    /// that an error exit still settles what the kernel holds.
    #[cfg(test)]
    fail_submit_after: Option<u64>,
}

/// Run one io_uring loop on `listener` until shutdown.
pub(crate) fn run<P, F>(listener: Listener, cx: LoopContext<F>) -> io::Result<LoopStats>
where
    P: Service,
    F: Fn() -> P,
{
    run_with(
        listener,
        cx,
        TaskRun::Deferred,
        RecvMode::CappedMultishot,
        None,
    )
}

/// `run` with the best task-run mode and receive mode to try (tests run
/// the weaker ones), and a submission failure to inject (tests only).
fn run_with<P, F>(
    listener: Listener,
    cx: LoopContext<F>,
    best: TaskRun,
    recv_mode: RecvMode,
    #[allow(unused_variables)] fail_submit_after: Option<u64>,
) -> io::Result<LoopStats>
where
    P: Service,
    F: Fn() -> P,
{
    // Built on the loop's own thread: with SINGLE_ISSUER only it may submit.
    let (ring, _) = open_ring(best)?;
    let bufs = BufRing::register(&ring)?;
    let waker = Waker::new()?;
    cx.shutdown.add_waker(waker.clone());
    cx.hub.set_waker(cx.index, waker.clone());
    let clock = LoopClock::new();
    let mut lp = Loop {
        ring,
        bufs,
        listener: Some(listener),
        multishot_accept: true,
        recv_mode,
        accepting: false,
        conns: Slab::new(),
        live: 0,
        dirty: Vec::new(),
        rearm_recv: Vec::new(),
        spare: Vec::new(),
        cqes: Vec::new(),
        timers: Timers::new(clock.now, cx.config.idle_timeout),
        expired: Vec::new(),
        commands: Vec::new(),
        dispatch: Dispatch::default(),
        timeout_spec: Box::new(types::Timespec::new()),
        timeout_armed: None,
        timeout_generation: 0,
        waker,
        waker_buf: Box::new(0),
        pool: BufPool::new(256, BUFFER_SIZE),
        rules: cx.rules,
        cx,
        clock,
        stats: LoopStats::default(),
        #[cfg(test)]
        fail_submit_after,
    };
    let result = lp
        .arm_waker()
        .and_then(|()| lp.arm_accept())
        .and_then(|()| lp.serve());
    // On every exit, an error's too: the kernel must be done with every
    // buffer the loop lent it before they are freed.
    lp.settle_in_flight();
    result.map(|()| lp.stats)
}

impl<P: Service, F: Fn() -> P> Loop<P, F> {
    fn push(&mut self, entry: squeue::Entry) -> io::Result<()> {
        // SAFETY: every request points only at memory that outlives it: the
        // buffer ring and `waker_buf` live as long as the loop (and are
        // leaked if the kernel may still hold them when it ends), a send's
        // buffer stays in its connection until the send's completion, and
        // the timeout's timespec is a field of the loop.
        if unsafe { self.ring.submission().push(&entry) }.is_err() {
            self.ring.submit()?;
            // SAFETY: as above.
            unsafe { self.ring.submission().push(&entry) }
                .map_err(|_| io::Error::other("io_uring submission ring full"))?;
        }
        Ok(())
    }

    fn submit_and_wait(&mut self) -> io::Result<usize> {
        #[cfg(test)]
        if let Some(n) = self.fail_submit_after.as_mut() {
            if *n == 0 {
                return Err(io::Error::other("injected submission failure"));
            }
            *n -= 1;
        }
        self.ring.submit_and_wait(1)
    }

    fn arm_waker(&mut self) -> io::Result<()> {
        let entry = opcode::Read::new(
            types::Fd(self.waker.as_raw_fd()),
            (&mut *self.waker_buf as *mut u64).cast(),
            8,
        )
        .build()
        .user_data(user_data(kind::WAKER, NO_CONN));
        self.push(entry)
    }

    fn arm_accept(&mut self) -> io::Result<()> {
        let Some(fd) = self.listener.as_ref().map(AsRawFd::as_raw_fd) else {
            return Ok(());
        };
        let ud = user_data(kind::ACCEPT, NO_CONN);
        let entry = if self.multishot_accept {
            opcode::AcceptMulti::new(types::Fd(fd))
                .flags(libc::SOCK_CLOEXEC)
                .build()
        } else {
            opcode::Accept::new(types::Fd(fd), std::ptr::null_mut(), std::ptr::null_mut())
                .flags(libc::SOCK_CLOEXEC)
                .build()
        };
        self.accepting = true;
        self.push(entry.user_data(ud))
    }

    fn arm_recv(&mut self, token: Token) -> io::Result<()> {
        let high_water = self.rules.output_high_water;
        let Some(conn) = self.conns.get_mut(token) else {
            return Ok(());
        };
        let lingering = conn.session.is_lingering();
        if conn.receiving || conn.dead || !conn.session.wants().read {
            return Ok(());
        }
        // What this receive may take before the loop looks again: the room
        // under the output limit (a lingering connection discards its input).
        let room = conn.session.read_budget(high_water);
        if room == 0 && !lingering {
            return Ok(());
        }
        let room = room.min(u32::MAX as usize) as u32;
        conn.receiving = true;
        conn.recv_mode = self.recv_mode;
        let fd = types::Fd(conn.fd.as_raw_fd());
        let mut entry = match self.recv_mode {
            RecvMode::CappedMultishot | RecvMode::Multishot => {
                opcode::RecvMulti::new(fd, BUFFER_GROUP).build()
            }
            RecvMode::SingleShot => {
                let len = if lingering {
                    BUFFER_SIZE as u32
                } else {
                    room.min(BUFFER_SIZE as u32)
                };
                opcode::Recv::new(fd, std::ptr::null_mut(), len)
                    .buf_group(BUFFER_GROUP)
                    .build()
                    .flags(squeue::Flags::BUFFER_SELECT)
            }
        };
        if self.recv_mode == RecvMode::CappedMultishot && !lingering {
            set_total_len(&mut entry, room);
        }
        self.push(entry.user_data(user_data(kind::RECV, token)))
    }

    /// Issue the next send of a connection if none is in flight.
    fn send_next(&mut self, token: Token) -> io::Result<()> {
        let Some(conn) = self.conns.get_mut(token) else {
            return Ok(());
        };
        if conn.sending || conn.dead {
            return Ok(());
        }
        if conn.in_flight_sent >= conn.in_flight.len() {
            conn.in_flight.clear();
            conn.in_flight_sent = 0;
            if conn.session.unsent().is_empty() {
                // Nothing owed: an idle connection holds no buffer.
                self.pool.put(&mut conn.in_flight);
                return Ok(());
            }
            conn.session.hand_out(&mut conn.in_flight);
        }
        let rest = &conn.in_flight[conn.in_flight_sent..];
        let entry = opcode::Send::new(
            types::Fd(conn.fd.as_raw_fd()),
            rest.as_ptr(),
            rest.len().min(u32::MAX as usize) as u32,
        )
        .flags(libc::MSG_NOSIGNAL)
        .build()
        .user_data(user_data(kind::SEND, token));
        conn.sending = true;
        self.stats.writes += 1;
        self.push(entry)
    }

    fn serve(&mut self) -> io::Result<()> {
        loop {
            self.arm_timeout()?;
            match self.submit_and_wait() {
                Ok(_) => {}
                Err(e) if matches!(e.raw_os_error(), Some(libc::EINTR | libc::EBUSY)) => {}
                Err(e) => return Err(e),
            }
            self.clock.tick();
            self.stats.waits += 1;
            // Buffers reused pass after pass: no allocation per pass.
            let mut cqes = std::mem::take(&mut self.cqes);
            cqes.clear();
            cqes.extend(self.ring.completion());
            self.stats.events += cqes.len() as u64;
            let mut returned = false;
            for cqe in cqes.drain(..) {
                returned |= self.on_completion(cqe)?;
            }
            self.cqes = cqes;
            if returned {
                self.bufs.publish();
            }
            // Receives that ran out of buffers, now that buffers are back.
            let mut tokens = std::mem::take(&mut self.spare);
            std::mem::swap(&mut tokens, &mut self.rearm_recv);
            for &token in &tokens {
                self.arm_recv(token)?;
            }
            tokens.clear();
            std::mem::swap(&mut tokens, &mut self.dirty);
            for &token in &tokens {
                self.after_input(token)?;
            }
            tokens.clear();
            self.spare = tokens;
            if self.clock.accept_resumes() {
                self.arm_accept()?;
            }
            if self.clock.draining() {
                self.close_quiet_idle()?;
                if self.live == 0 {
                    return Ok(());
                }
                if self.clock.drain_over() {
                    for token in self.conns.tokens() {
                        self.close(token)?;
                    }
                    if self.live == 0 {
                        return Ok(());
                    }
                }
            }
        }
    }

    /// Before the buffers go: cancel every request still in flight and wait
    /// (a bounded time) for their completions, so the kernel is done with
    /// every send buffer and provided buffer. What it may still hold after
    /// that is leaked on purpose: memory lost beats memory the kernel writes
    /// into after it was freed.
    fn settle_in_flight(&mut self) {
        let cancel = opcode::AsyncCancel2::new(types::CancelBuilder::any())
            .build()
            .user_data(user_data(kind::IGNORED, NO_CONN));
        let _ = self.push(cancel);
        let until = Instant::now() + Duration::from_secs(1);
        while self.conns.len() > 0 && Instant::now() < until {
            let _ = self.ring.submit_and_wait(1);
            let cqes: Vec<cqueue::Entry> = self.ring.completion().collect();
            for cqe in cqes {
                let (k, token) = decode(cqe.user_data());
                if !matches!(k, kind::RECV | kind::SEND | kind::CONNECT) {
                    continue;
                }
                let more = cqueue::more(cqe.flags());
                if let Some(conn) = self.conns.get_mut(token) {
                    if k != kind::RECV {
                        conn.sending = false;
                    } else if !more {
                        conn.receiving = false;
                    }
                }
            }
            for token in self.conns.tokens() {
                if self
                    .conns
                    .get_mut(token)
                    .is_some_and(|c| !c.sending && !c.receiving)
                {
                    self.free(token);
                }
            }
        }
        let mut unsettled = 0;
        for token in self.conns.tokens() {
            if let Some(conn) = self.conns.remove(token) {
                if conn.sending {
                    std::mem::forget(conn.in_flight);
                }
                unsettled += usize::from(conn.receiving || conn.sending);
            }
        }
        if unsettled > 0 {
            self.stats.leaked_buffers += unsettled as u64;
            self.bufs.leak();
        }
    }

    /// Keep one timeout request in flight for the loop's next deadline.
    fn arm_timeout(&mut self) -> io::Result<()> {
        let timer = self.timers.next_deadline(self.clock.now);
        let Some(wait) = self.clock.next_wait(timer) else {
            return Ok(());
        };
        let next = self.clock.now + wait;
        if let Some(armed) = self.timeout_armed {
            if armed <= next {
                return Ok(());
            }
            // An earlier deadline: replace the armed timeout.
            let remove = opcode::TimeoutRemove::new(user_data(
                kind::TIMEOUT,
                timeout_token(self.timeout_generation),
            ))
            .build()
            .user_data(user_data(kind::IGNORED, NO_CONN));
            self.push(remove)?;
        }
        let wait = next.saturating_duration_since(Instant::now());
        *self.timeout_spec = types::Timespec::new()
            // The kernel reads the seconds as signed.
            .sec(wait.as_secs().min(i64::MAX as u64))
            .nsec(wait.subsec_nanos());
        self.timeout_generation = self.timeout_generation.wrapping_add(1);
        let entry = opcode::Timeout::new(&*self.timeout_spec)
            .build()
            .user_data(user_data(
                kind::TIMEOUT,
                timeout_token(self.timeout_generation),
            ));
        self.timeout_armed = Some(next);
        self.push(entry)
    }

    /// Handle one completion; true when a provided buffer went back to the ring.
    fn on_completion(&mut self, cqe: cqueue::Entry) -> io::Result<bool> {
        let (k, token) = decode(cqe.user_data());
        let res = cqe.result();
        let more = cqueue::more(cqe.flags());
        match k {
            kind::ACCEPT => self.on_accept(res, more)?,
            kind::RECV => return self.on_recv(token, res, cqe.flags(), more),
            kind::SEND => self.on_send(token, res)?,
            kind::CONNECT => self.on_connect_poll(token, res)?,
            kind::TIMEOUT if token == timeout_token(self.timeout_generation) => {
                self.timeout_armed = None;
                self.expire_timers()?;
            }
            kind::WAKER => {
                self.take_mail()?;
                if self.cx.shutdown.is_triggered() && !self.clock.draining() {
                    self.begin_drain()?;
                } else if !self.cx.shutdown.is_triggered() {
                    self.arm_waker()?;
                }
            }
            _ => {}
        }
        Ok(false)
    }

    fn on_accept(&mut self, res: i32, more: bool) -> io::Result<()> {
        if !more {
            self.accepting = false;
        }
        if res == -libc::EINVAL && self.multishot_accept && !more {
            // No multishot accept on this kernel: one accept at a time.
            self.multishot_accept = false;
            return self.arm_accept();
        }
        if res >= 0 {
            // SAFETY: a successful accept returned a new descriptor we now own.
            let fd = unsafe { OwnedFd::from_raw_fd(res) };
            if admit(&self.cx.max_conns, self.clock.draining(), &mut self.stats) {
                self.add_conn(fd)?;
            }
        } else if matches!(
            -res,
            libc::EMFILE | libc::ENFILE | libc::ENOBUFS | libc::ENOMEM
        ) {
            self.stats.shed += 1;
            if !self.accepting {
                self.stats.accept_pauses += 1;
                self.clock.pause_accepting();
            }
            return Ok(());
        }
        if !self.accepting && self.listener.is_some() && !self.clock.accept_paused() {
            self.arm_accept()?;
        }
        Ok(())
    }

    /// A protocol asked for an outgoing connection: start a non-blocking
    /// connect and poll it for writability, its timeout in the timer wheel.
    /// A connect that cannot even start is reported to the asker at once.
    fn start_connect(
        &mut self,
        asker: Token,
        addr: SocketAddr,
        timeout: Duration,
        tag: u64,
    ) -> io::Result<()> {
        let asker_id = ConnId::new(self.cx.index, asker.0);
        let connect = Connecting::new(asker_id, tag, addr, timeout, self.clock.now);
        let started = admit_outgoing(&self.cx.max_conns)
            .and_then(|()| connect_nonblocking(addr).inspect_err(|_| self.cx.max_conns.release()));
        let fd = match started {
            Ok(fd) => fd,
            Err(e) => {
                self.stats.connect_failures += 1;
                return self.tell_asker(asker, tag, Err(connect.failed(e)));
            }
        };
        self.set_nodelay(&fd);
        let token = self.conns.next_token();
        let id = ConnId::new(self.cx.index, token.0);
        let session = Session::connecting((self.cx.new_protocol)(), id, self.clock.now, connect);
        let timer = self.timers.insert(connect.deadline, token);
        self.insert_conn(fd, session, timer);
        self.poll_connect(token)
    }

    /// Wait for a connecting socket to become writable (established or failed).
    fn poll_connect(&mut self, token: Token) -> io::Result<()> {
        let Some(conn) = self.conns.get_mut(token) else {
            return Ok(());
        };
        conn.sending = true;
        let entry = opcode::PollAdd::new(types::Fd(conn.fd.as_raw_fd()), libc::POLLOUT as u32)
            .build()
            .user_data(user_data(kind::CONNECT, token));
        self.push(entry)
    }

    /// The connecting socket's poll completed: established, failed, or not yet.
    fn on_connect_poll(&mut self, token: Token, res: i32) -> io::Result<()> {
        if !self.write_request_done(token) {
            return Ok(());
        }
        let conn = self.conns.get_mut(token).expect("live connection");
        let outcome = if res < 0 {
            Err(io::Error::from_raw_os_error(-res))
        } else {
            connect_outcome(conn.fd.as_fd())
        };
        match outcome {
            Ok(false) => self.poll_connect(token),
            // Blocking from now on, as accepted sockets are: the ring waits for them.
            Ok(true) => match socket2::SockRef::from(&conn.fd).set_nonblocking(false) {
                Ok(()) => self.connect_done(token, Ok(())),
                Err(e) => self.connect_done(token, Err(e)),
            },
            Err(e) => self.connect_done(token, Err(e)),
        }
    }

    /// A connect ended: on success the new connection opens and the asker
    /// learns its id; on failure it closes and the asker learns why. With
    /// the asker gone, the new connection is closed.
    fn connect_done(&mut self, token: Token, outcome: io::Result<()>) -> io::Result<()> {
        let Some(connect) = self
            .conns
            .get_mut(token)
            .and_then(|c| c.session.connect_details())
        else {
            return Ok(());
        };
        let asker = Token(connect.asker.token());
        if let Err(e) = outcome {
            self.stats.connect_failures += 1;
            self.close(token)?;
            return self.tell_asker(asker, connect.tag, Err(connect.failed(e)));
        }
        self.stats.connects += 1;
        if !self
            .conns
            .get_mut(asker)
            .is_some_and(|c| !c.dead && !c.session.is_closing())
        {
            return self.close(token); // nobody wants it any more
        }
        let conn = self.conns.get_mut(token).expect("live connection");
        let (_, opened) = conn.session.on_connected(&mut env!(self, self.clock.now));
        // Its idle deadline counts from now, not from the connect's.
        let deadline = conn.session.deadline(&self.rules);
        self.timers.reset(&mut conn.timer, deadline, token);
        let result = if self.after_call(token, opened) {
            self.close(token)?;
            let why = opened.map_or_else(|f| f.to_string(), |()| "a command it gave failed".into());
            Err(connect.open_failed(why))
        } else {
            self.mark_dirty(token);
            self.arm_recv(token)?;
            Ok(ConnId::new(self.cx.index, token.0))
        };
        self.tell_asker(asker, connect.tag, result)
    }

    /// Tell a connection how its connect went (if it is still there).
    fn tell_asker(&mut self, asker: Token, tag: u64, result: io::Result<ConnId>) -> io::Result<()> {
        let Some(conn) = self.conns.get_mut(asker).filter(|c| !c.dead) else {
            return Ok(());
        };
        let told = conn
            .session
            .on_connect(tag, result, &mut env!(self, self.clock.now));
        if self.after_call(asker, told) {
            return self.close(asker);
        }
        self.mark_dirty(asker);
        Ok(())
    }

    fn set_nodelay(&self, fd: &OwnedFd) {
        if self.cx.config.nodelay {
            let _ = socket2::SockRef::from(fd).set_nodelay(true);
        }
    }

    fn insert_conn(&mut self, fd: OwnedFd, session: Session<P>, timer: TimerId) {
        self.conns.insert(Conn {
            fd,
            session,
            in_flight: Vec::new(),
            in_flight_sent: 0,
            sending: false,
            receiving: false,
            recv_mode: self.recv_mode,
            timer,
            dead: false,
            dirty: false,
        });
        self.live += 1;
    }

    /// Take an admitted connection in and start receiving from it.
    fn add_conn(&mut self, fd: OwnedFd) -> io::Result<()> {
        self.set_nodelay(&fd);
        let token = self.conns.next_token();
        let id = ConnId::new(self.cx.index, token.0);
        let session = Session::new((self.cx.new_protocol)(), id, self.clock.now);
        let timer = self.timers.insert(session.deadline(&self.rules), token);
        self.insert_conn(fd, session, timer);
        let conn = self.conns.get_mut(token).expect("just inserted");
        let opened = conn.session.on_open(None, &mut env!(self, self.clock.now));
        if self.after_call(token, opened) {
            return self.close(token);
        }
        self.mark_dirty(token);
        self.arm_recv(token)
    }

    fn on_recv(&mut self, token: Token, res: i32, cflags: u32, more: bool) -> io::Result<bool> {
        let bid = cqueue::buffer_select(cflags);
        let action = self.take_input(token, res, bid, more);
        self.run_commands(token)?;
        if let Some(bid) = bid {
            // The protocol has seen (or copied) the bytes: the buffer goes back.
            self.bufs.push(bid);
        }
        match action {
            Recv::Nothing => {}
            Recv::Close => self.close(token)?,
            Recv::Free => self.free(token),
            Recv::Process => self.mark_dirty(token),
        }
        if !more && !matches!(action, Recv::Close | Recv::Free) {
            // A single-shot receive, or a multishot one the kernel ended
            // (out of buffers, cancelled for backpressure): arm again if the
            // connection still wants input (arm_recv checks).
            self.rearm_recv.push(token);
        }
        Ok(bid.is_some())
    }

    /// Hand a receive's bytes to the connection's session.
    fn take_input(&mut self, token: Token, res: i32, bid: Option<u16>, more: bool) -> Recv {
        let Loop {
            conns,
            bufs,
            pool,
            stats,
            rules,
            clock,
            recv_mode,
            commands,
            ..
        } = self;
        let Some(conn) = conns.get_mut(token) else {
            return Recv::Nothing;
        };
        if !more {
            conn.receiving = false;
        }
        if conn.dead {
            return if !conn.receiving && !conn.sending {
                Recv::Free
            } else {
                Recv::Nothing
            };
        }
        stats.reads += 1;
        if res < 0 {
            return match -res {
                // Every buffer was in use: they come back at the end of this pass.
                libc::ENOBUFS => {
                    stats.read_eagain += 1;
                    Recv::Nothing
                }
                libc::EINVAL if !more => match conn.recv_mode.next() {
                    // This kernel lacks the kind of receive it was issued as:
                    // the loop moves to the next kind (once, however many
                    // were refused), armed at the end of the pass.
                    Some(next) => {
                        *recv_mode = (*recv_mode).max(next);
                        Recv::Nothing
                    }
                    None => Recv::Close,
                },
                libc::ECANCELED | libc::EINTR | libc::EAGAIN => Recv::Nothing,
                _ => Recv::Close,
            };
        }
        let n = res as usize;
        if conn.session.is_lingering() {
            // Discarding until the peer's FIN.
            return if n == 0 { Recv::Close } else { Recv::Nothing };
        }
        let mut env = Env {
            now: clock.stamp(),
            rules,
            pool,
            commands,
        };
        let result = if n == 0 {
            conn.session.on_eof(None, &mut env)
        } else {
            let Some(bid) = bid else {
                return Recv::Close;
            };
            conn.session
                .on_received(bufs.buffer(bid, n), None, &mut env)
        };
        match result {
            Ok(()) => Recv::Process,
            Err(fault) => {
                stats.faults += 1;
                // An input cap reached closes gracefully: its last word is sent.
                if fault == Fault::InputCap {
                    Recv::Process
                } else {
                    Recv::Close
                }
            }
        }
    }

    fn mark_dirty(&mut self, token: Token) {
        if let Some(conn) = self.conns.get_mut(token) {
            if !conn.dirty {
                conn.dirty = true;
                self.dirty.push(token);
            }
        }
    }

    /// End of a pass for a connection that received: send what the protocol
    /// answered (one send for everything this pass produced), stop receiving
    /// from one that is closing or paused.
    fn after_input(&mut self, token: Token) -> io::Result<()> {
        let Some(conn) = self.conns.get_mut(token) else {
            return Ok(());
        };
        conn.dirty = false;
        if conn.dead {
            return Ok(());
        }
        if !conn.session.wants().read && conn.receiving {
            self.cancel_recv(token)?;
        }
        self.send_next(token)?;
        self.maybe_finish(token)
    }

    fn cancel_recv(&mut self, token: Token) -> io::Result<()> {
        let entry = opcode::AsyncCancel::new(user_data(kind::RECV, token))
            .build()
            .user_data(user_data(kind::IGNORED, NO_CONN));
        self.push(entry)
    }

    /// A send (or a connect's poll) completed: false when its connection
    /// is gone or closed (then freed once no request of it is left).
    fn write_request_done(&mut self, token: Token) -> bool {
        let Some(conn) = self.conns.get_mut(token) else {
            return false;
        };
        conn.sending = false;
        if conn.dead {
            if !conn.receiving {
                self.free(token);
            }
            return false;
        }
        true
    }

    fn on_send(&mut self, token: Token, res: i32) -> io::Result<()> {
        if !self.write_request_done(token) {
            return Ok(());
        }
        let conn = self.conns.get_mut(token).expect("live connection");
        if res < 0 {
            if res == -libc::EINTR || res == -libc::EAGAIN {
                return self.send_next(token);
            }
            return self.close(token);
        }
        let n = res as usize;
        conn.in_flight_sent += n;
        if conn.in_flight_sent >= conn.in_flight.len() {
            conn.in_flight.clear();
            conn.in_flight_sent = 0;
        }
        let sent = conn
            .session
            .on_sent(n, None, &mut env!(self, self.clock.now));
        if self.after_call(token, sent.map(|_| ())) {
            return self.close(token);
        }
        if sent.is_ok_and(|s| s.resumed) {
            self.arm_recv(token)?;
        }
        self.send_next(token)?;
        self.maybe_finish(token)
    }

    /// A closing connection whose output is all sent: send our FIN and
    /// discard the peer's input until its FIN (or LINGER), unless it already sent one.
    fn maybe_finish(&mut self, token: Token) -> io::Result<()> {
        let Some(conn) = self.conns.get_mut(token) else {
            return Ok(());
        };
        if conn.dead || conn.sending || !conn.session.ready_to_finish() {
            return Ok(());
        }
        match conn.session.finish(self.clock.now, &mut self.pool) {
            Finish::Close => self.close(token),
            Finish::Linger | Finish::ShutWrite if shutdown_write(conn.fd.as_raw_fd()).is_err() => {
                self.close(token)
            }
            // Half-closed: receiving goes on.
            Finish::ShutWrite => Ok(()),
            Finish::Linger => {
                // The linger period starts now, whatever the idle deadline was.
                let deadline = conn.session.deadline(&self.rules);
                self.timers.reset(&mut conn.timer, deadline, token);
                self.arm_recv(token)
            }
        }
    }

    /// Close a connection: cancel its requests; free it once none is in flight.
    fn close(&mut self, token: Token) -> io::Result<()> {
        let Some(conn) = self.conns.get_mut(token) else {
            return Ok(());
        };
        if conn.dead {
            return Ok(());
        }
        conn.dead = true;
        self.timers.cancel(conn.timer);
        self.cx.max_conns.release();
        self.stats.closed += 1;
        self.live -= 1;
        if !conn.receiving && !conn.sending {
            self.free(token);
            return Ok(());
        }
        let fd = conn.fd.as_raw_fd();
        let entry = opcode::AsyncCancel2::new(types::CancelBuilder::fd(types::Fd(fd)).all())
            .build()
            .user_data(user_data(kind::IGNORED, NO_CONN));
        self.push(entry)
    }

    /// Forget a closed connection whose requests have all completed.
    fn free(&mut self, token: Token) {
        if let Some(mut conn) = self.conns.remove(token) {
            for timer in conn.session.release(&mut self.pool, &mut self.commands) {
                self.timers.cancel(timer);
            }
            // Its links close, writers waiting for it read again.
            let route = self.cx.route();
            self.dispatch
                .route_all(&mut self.commands, route, &mut self.stats);
            self.pool.put(&mut conn.in_flight);
            // Dropping `conn.fd` closes the socket.
        }
    }

    fn expire_timers(&mut self) -> io::Result<()> {
        self.expired.clear();
        self.timers.expire(self.clock.now, &mut self.expired);
        for i in 0..self.expired.len() {
            let (token, key) = self.expired[i];
            let Some(conn) = self.conns.get_mut(token) else {
                continue;
            };
            if conn.dead {
                continue;
            }
            let now = self.clock.now;
            if key != IDLE {
                let fired = conn.session.on_timer(key, None, &mut env!(self, now));
                if self.after_call(token, fired) {
                    self.close(token)?;
                } else {
                    self.mark_dirty(token);
                }
                continue;
            }
            match conn.session.on_deadline(None, &mut env!(self, now)) {
                Deadline::Later(at) => conn.timer = self.timers.insert(at, token),
                Deadline::Close => self.close(token)?,
                Deadline::ConnectTimedOut => {
                    self.connect_done(token, Err(io::ErrorKind::TimedOut.into()))?
                }
                Deadline::TimedOut => {
                    self.stats.timeouts += 1;
                    conn.timer = self
                        .timers
                        .insert(conn.session.deadline(&self.rules), token);
                    self.run_commands(token)?;
                    self.mark_dirty(token);
                }
            }
        }
        Ok(())
    }

    /// After a call into a session: carry out what the protocol asked for;
    /// true when a fault means the connection must close now (an input cap
    /// reached closes gracefully instead).
    fn after_call(&mut self, caller: Token, result: Result<(), Fault>) -> bool {
        let failed = self.run_commands(caller).is_err();
        match result {
            Ok(()) => failed,
            Err(fault) => {
                self.stats.faults += 1;
                failed || fault != Fault::InputCap
            }
        }
    }

    /// Carry out what a protocol asked for during a call on `caller`.
    fn run_commands(&mut self, caller: Token) -> io::Result<()> {
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
        self.run_local()
    }

    /// Mail from other loops' connections.
    fn take_mail(&mut self) -> io::Result<()> {
        self.dispatch.take_mail(self.cx.route(), &mut self.stats);
        self.run_local()
    }

    /// Writes to and closes of this loop's connections that protocols asked
    /// for: sent (or finished) at the end of the pass, with everything else
    /// each got.
    fn run_local(&mut self) -> io::Result<()> {
        let mut result = Ok(());
        while !self.dispatch.local.is_empty() {
            let mut local = std::mem::take(&mut self.dispatch.local);
            for (token, command) in local.drain(..) {
                if let Err(e) = self.run_one(token, command) {
                    result = Err(e);
                }
            }
            if self.dispatch.local.is_empty() {
                self.dispatch.local = local;
            }
            // What followed from them: writers paused, links to gone connections.
            let route = self.cx.route();
            self.dispatch
                .route_all(&mut self.commands, route, &mut self.stats);
        }
        result
    }

    /// One command for connection `token` of this loop (a connect: `token` asked).
    fn run_one(&mut self, token: Token, command: Command) -> io::Result<()> {
        let live = self.conns.get_mut(token).is_some_and(|c| !c.dead);
        match command {
            Command::Connect { addr, timeout, tag } if live => {
                return self.start_connect(token, addr, timeout, tag)
            }
            // A link to a connection gone meanwhile closes its asker.
            Command::Link { from, .. } if !live => self.commands.push(Command::Close(from)),
            _ => {}
        }
        let Some(conn) = self.conns.get_mut(token).filter(|c| !c.dead) else {
            return Ok(()); // gone meanwhile
        };
        let now = self.clock.now;
        match conn.session.apply(command, &mut env!(self, now)) {
            Applied::Overflow => {
                self.stats.output_overflows += 1;
                return self.close(token);
            }
            Applied::Resumed => self.rearm_recv.push(token),
            Applied::Done => {}
        }
        self.mark_dirty(token);
        Ok(())
    }

    fn begin_drain(&mut self) -> io::Result<()> {
        self.clock.begin_drain(self.cx.config.drain_timeout);
        if self.listener.take().is_some() && self.accepting {
            let entry = opcode::AsyncCancel::new(user_data(kind::ACCEPT, NO_CONN))
                .build()
                .user_data(user_data(kind::IGNORED, NO_CONN));
            self.push(entry)?;
        }
        // Messages still in flight are answered as the last ones (HTTP: Connection: close).
        for token in self.conns.tokens() {
            if let Some(conn) = self.conns.get_mut(token) {
                conn.session.begin_drain();
            }
        }
        // Idle connections close at the end of this pass, not here: receive
        // completions later in the pass hold bytes the socket no longer shows.
        Ok(())
    }

    /// While draining: close connections the session says may close now.
    /// Not while completions wait unreaped: a receive among them holds bytes
    /// that have left the socket but not reached their connection yet.
    fn close_quiet_idle(&mut self) -> io::Result<()> {
        if !self.ring.completion().is_empty() {
            return Ok(());
        }
        let now = self.clock.now;
        for token in self.conns.tokens() {
            let Some(conn) = self.conns.get_mut(token) else {
                continue;
            };
            let fd = conn.fd.as_raw_fd();
            if !conn.dead && conn.session.closable_on_drain(now, || input_waiting(fd)) {
                self.close(token)?;
            }
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests;
