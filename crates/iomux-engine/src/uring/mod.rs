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
mod submit;
use submit::connect_poll;

use crate::buffer::BufPool;
use crate::life::LoopSetup;
use crate::loop_api::{Readiness, Watch};
use crate::loop_core::{LoopConn, LoopCore, LoopEngine};
use crate::session::{Connecting, Finish, Session};
use crate::sock::{connect_outcome, shutdown_write};
use crate::stats::LoopStats;
use bufring::{BufRing, BUFFER_SIZE};
use io_uring::{cqueue, opcode, types, IoUring};
use iomux::net::{Listener, Stream};
use iomux::timer::TimerId;
use iomux::Interest;
use iomux::{Token, Waker};
use iomux_proto::Service;
pub(crate) use ring::check_available;
use ring::{decode, kind, open_ring, timeout_token, user_data, RecvMode, TaskRun, NO_CONN};
use std::io;
use std::os::fd::{AsFd, AsRawFd, FromRawFd, OwnedFd, RawFd};
use std::time::Instant;

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
    /// Bytes the last `sendfile` outside the ring sent: told to the session
    /// when the poll standing for its send completes.
    sendfile_sent: usize,
    /// TCP_NODELAY is on (configured, or set before a file region).
    nodelay: bool,
    /// O_NONBLOCK is on: set, for good, before its first file region is
    /// sent from the loop thread (`submit::send_outside_ring`).
    nonblocking: bool,
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
    core: LoopCore<Conn<P>, F>,
    /// Connections not closed.
    live: usize,
    dirty: Vec<Token>,
    rearm_recv: Vec<Token>,
    /// Spare lists swapped with `dirty` and `rearm_recv` while they are worked through.
    spare: Vec<Token>,
    cqes: Vec<cqueue::Entry>,
    timeout_spec: Box<types::Timespec>,
    timeout_armed: Option<Instant>,
    timeout_generation: u32,
    waker: Waker,
    /// Where the waker's eventfd read lands (boxed: the loop moves, the kernel keeps the address).
    waker_buf: Box<u64>,
    /// Unwatched descriptors whose cancelled poll has not completed yet:
    /// kept open until it has.
    unwatched: Vec<(Token, Box<dyn AsFd>)>,
    /// File regions go out from the loop thread
    /// (`submit::send_outside_ring`): only with deferred task work.
    sendfile_outside: bool,
    /// Tests: make the submission that follows this many fail, to show
    /// that an error exit still settles what the kernel holds.
    #[cfg(test)]
    fail_submit_after: Option<u64>,
}

/// Run one io_uring loop on `listener` until shutdown.
pub(crate) fn run<P, F>(listener: Listener, setup: LoopSetup<F>) -> io::Result<LoopStats>
where
    P: Service,
    F: Fn() -> P,
{
    run_with(
        listener,
        setup,
        TaskRun::Deferred,
        RecvMode::CappedMultishot,
        None,
    )
}

/// `run` with the best task-run mode and receive mode to try (tests run
/// the weaker ones), and a submission failure to inject (tests only).
fn run_with<P, F>(
    listener: Listener,
    setup: LoopSetup<F>,
    best: TaskRun,
    recv_mode: RecvMode,
    #[allow(unused_variables)] fail_submit_after: Option<u64>,
) -> io::Result<LoopStats>
where
    P: Service,
    F: Fn() -> P,
{
    // Built on the loop's own thread: with SINGLE_ISSUER only it may submit.
    let (ring, task_run) = open_ring(best)?;
    let bufs = BufRing::register(&ring)?;
    let waker = Waker::new()?;
    setup.shutdown.add_waker(waker.clone());
    setup.hub.set_waker(setup.index, waker.clone());
    let mut lp = Loop {
        ring,
        bufs,
        listener: Some(listener),
        multishot_accept: true,
        recv_mode,
        accepting: false,
        core: LoopCore::new(setup, 0, BufPool::new(256, BUFFER_SIZE)),
        live: 0,
        dirty: Vec::new(),
        rearm_recv: Vec::new(),
        spare: Vec::new(),
        cqes: Vec::new(),
        timeout_spec: Box::new(types::Timespec::new()),
        timeout_armed: None,
        timeout_generation: 0,
        waker,
        waker_buf: Box::new(0),
        unwatched: Vec::new(),
        sendfile_outside: task_run == TaskRun::Deferred,
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
    result.map(|()| lp.core.into_stats())
}

impl<P: Service, F: Fn() -> P> Loop<P, F> {
    fn serve(&mut self) -> io::Result<()> {
        loop {
            self.arm_timeout()?;
            match self.submit_and_wait() {
                Ok(_) => {}
                Err(e) if matches!(e.raw_os_error(), Some(libc::EINTR | libc::EBUSY)) => {}
                Err(e) => return Err(e),
            }
            self.core.clock().tick();
            self.core.stats().waits += 1;
            // Buffers reused pass after pass: no allocation per pass.
            let mut cqes = std::mem::take(&mut self.cqes);
            cqes.clear();
            cqes.extend(self.ring.completion());
            self.core.stats().events += cqes.len() as u64;
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
            self.run_due()?;
            std::mem::swap(&mut tokens, &mut self.dirty);
            for &token in &tokens {
                self.after_input(token)?;
            }
            tokens.clear();
            self.spare = tokens;
            if self.core.clock().accept_resumes() {
                self.arm_accept()?;
            }
            if self.core.clock().draining() {
                self.close_quiet_idle_reaped()?;
                if self.live == 0 {
                    return Ok(());
                }
                if self.core.clock().drain_over() {
                    for token in self.core.conn_tokens() {
                        self.close_conn(token)?;
                    }
                    if self.live == 0 {
                        return Ok(());
                    }
                }
            }
        }
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
            kind::SENDFILE => {
                // Room again (or an error): the sendfile before it completes now.
                let sent = self
                    .core
                    .conn(token)
                    .map_or(0, |c| std::mem::take(&mut c.sendfile_sent));
                self.on_send(token, if res < 0 { res } else { sent as i32 })?
            }
            kind::CONNECT => self.on_connect_poll(token, res)?,
            kind::WATCH => self.on_watch_poll(token, res)?,
            kind::TIMEOUT if token == timeout_token(self.timeout_generation) => {
                self.timeout_armed = None;
                self.expire_timers()?;
            }
            kind::WAKER => {
                self.take_mail()?;
                if self.core.setup().shutdown.is_triggered() && !self.core.clock().draining() {
                    self.begin_drain()?;
                } else if !self.core.setup().shutdown.is_triggered() {
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
            if self.core.admit() {
                self.add_conn(fd)?;
            }
        } else if matches!(
            -res,
            libc::EMFILE | libc::ENFILE | libc::ENOBUFS | libc::ENOMEM
        ) {
            self.core.stats().shed += 1;
            if !self.accepting {
                self.core.stats().accept_pauses += 1;
                self.core.clock().pause_accepting();
            }
            return Ok(());
        }
        if !self.accepting && self.listener.is_some() && !self.core.clock().accept_paused() {
            self.arm_accept()?;
        }
        Ok(())
    }

    /// The connecting socket's poll completed: established, failed, or not yet.
    fn on_connect_poll(&mut self, token: Token, res: i32) -> io::Result<()> {
        if !self.write_request_done(token) {
            return Ok(());
        }
        let conn = self.core.conn(token).expect("live connection");
        let outcome = if res < 0 {
            Err(io::Error::from_raw_os_error(-res))
        } else {
            connect_outcome(conn.fd.as_fd())
        };
        match outcome {
            Ok(false) => self.poll_connect(token),
            // Blocking from now on, as accepted sockets are: the ring waits for them.
            Ok(true) => match socket2::SockRef::from(&conn.fd).set_nonblocking(false) {
                Ok(()) => self.finish_connect(token, Ok(())),
                Err(e) => self.finish_connect(token, Err(e)),
            },
            Err(e) => self.finish_connect(token, Err(e)),
        }
    }

    fn set_nodelay(&self, fd: &OwnedFd) {
        if self.core.setup().config.nodelay {
            let _ = socket2::SockRef::from(fd).set_nodelay(true);
        }
    }

    fn insert_conn(&mut self, fd: OwnedFd, session: Session<P>) -> Token {
        let recv_mode = self.recv_mode;
        let nodelay = self.core.setup().config.nodelay;
        self.live += 1;
        self.core.keep_conn(session, |session, timer| Conn {
            fd,
            session,
            in_flight: Vec::new(),
            in_flight_sent: 0,
            sending: false,
            receiving: false,
            recv_mode,
            timer,
            dead: false,
            sendfile_sent: 0,
            dirty: false,
            nodelay,
            nonblocking: false,
        })
    }

    /// Take an admitted connection in and start receiving from it.
    fn add_conn(&mut self, fd: OwnedFd) -> io::Result<()> {
        self.open_conn(fd, false).map(drop)
    }

    /// Take a connection in (accepted, or adopted from the user), open its
    /// protocol and start receiving. An error is the ring's.
    fn open_conn(&mut self, fd: OwnedFd, adopted: bool) -> io::Result<Token> {
        self.set_nodelay(&fd);
        let token = self.core.next_token();
        let mut session = self.core.new_session(token, None);
        if adopted {
            session.mark_adopted();
        }
        let kept = self.insert_conn(fd, session);
        debug_assert_eq!(kept, token);
        let opened = self
            .core
            .call(token, |session, env| session.on_open(None, env))
            .expect("just inserted");
        if self.after_call(token, opened).is_err() {
            return self.close_conn(token).map(|()| token);
        }
        self.mark_dirty(token);
        self.arm_recv(token).map(|()| token)
    }

    /// A watched descriptor's poll completed: ready (or failed: reported as
    /// readable, so that the reading callback meets the error), or cancelled.
    fn on_watch_poll(&mut self, token: Token, res: i32) -> io::Result<()> {
        let Some(watch) = self.core.watch(token) else {
            // Unwatched: the kernel is done with the descriptor now.
            self.unwatched.retain(|(t, _)| *t != token);
            return Ok(());
        };
        watch.armed = false;
        if res == -libc::ECANCELED {
            return self.rearm_watch(token);
        }
        let events = if res < 0 { libc::POLLERR as i32 } else { res };
        let ready = Readiness {
            readable: events & (libc::POLLIN | libc::POLLHUP | libc::POLLERR) as i32 != 0,
            writable: events & libc::POLLOUT as i32 != 0,
        };
        self.fire_watch(token, ready)
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
            Recv::Close => self.close_conn(token)?,
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
        let Some(conn) = self.core.conn(token) else {
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
        let (lingering, issued_as) = (conn.session.is_lingering(), conn.recv_mode);
        self.core.stats().reads += 1;
        if res < 0 {
            return match -res {
                // Every buffer was in use: they come back at the end of this pass.
                libc::ENOBUFS => {
                    self.core.stats().read_eagain += 1;
                    Recv::Nothing
                }
                libc::EINVAL if !more => match issued_as.next() {
                    // This kernel lacks the kind of receive it was issued as:
                    // the loop moves to the next kind (once, however many
                    // were refused), armed at the end of the pass.
                    Some(next) => {
                        self.recv_mode = self.recv_mode.max(next);
                        Recv::Nothing
                    }
                    None => Recv::Close,
                },
                libc::ECANCELED | libc::EINTR | libc::EAGAIN => Recv::Nothing,
                _ => Recv::Close,
            };
        }
        let n = res as usize;
        if lingering {
            // Discarding until the peer's FIN.
            return if n == 0 { Recv::Close } else { Recv::Nothing };
        }
        if n > 0 && bid.is_none() {
            return Recv::Close;
        }
        let (bufs, now) = (&self.bufs, self.core.clock().stamp());
        let result = self
            .core
            .with_conn(token, now, |conn, _, env| match bid.filter(|_| n > 0) {
                None => conn.session.on_eof(None, env),
                Some(bid) => conn.session.on_received(bufs.buffer(bid, n), None, env),
            })
            .expect("live connection");
        match result {
            Ok(()) => Recv::Process,
            Err(fault) => {
                fault.count(self.core.stats());
                // An input cap reached (or a TLS alert) closes gracefully: its last word is sent.
                if fault.is_graceful() {
                    Recv::Process
                } else {
                    Recv::Close
                }
            }
        }
    }

    fn mark_dirty(&mut self, token: Token) {
        if let Some(conn) = self.core.conn(token) {
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
        let Some(conn) = self.core.conn(token) else {
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
        self.core.queue_due(token);
        self.maybe_finish(token)
    }

    /// A send (or a connect's poll) completed: false when its connection
    /// is gone or closed (then freed once no request of it is left).
    fn write_request_done(&mut self, token: Token) -> bool {
        let Some(conn) = self.core.conn(token) else {
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
        if res < 0 {
            if res == -libc::EINTR || res == -libc::EAGAIN {
                return self.send_next(token);
            }
            return self.close_conn(token);
        }
        let n = res as usize;
        let sent = self
            .core
            .with_conn(token, self.core.now(), |conn, _, env| {
                conn.in_flight_sent += n;
                if conn.in_flight_sent >= conn.in_flight.len() {
                    conn.in_flight.clear();
                    conn.in_flight_sent = 0;
                }
                conn.session.on_sent(n, None, env)
            })
            .expect("live connection");
        if self.after_call(token, sent.map(|_| ())).is_err() {
            return self.close_conn(token);
        }
        if sent.is_ok_and(|s| s.resumed) {
            self.arm_recv(token)?;
        }
        self.send_next(token)?;
        self.core.queue_due(token);
        self.maybe_finish(token)
    }

    /// A closing connection whose output is all sent: send our FIN and
    /// discard the peer's input until its FIN (or LINGER), unless it already sent one.
    fn maybe_finish(&mut self, token: Token) -> io::Result<()> {
        let Some(conn) = self.core.conn(token) else {
            return Ok(());
        };
        if conn.dead || conn.sending || !conn.session.ready_to_finish() {
            return Ok(());
        }
        let fd = conn.fd.as_raw_fd();
        let finish = self
            .core
            .with_conn(token, self.core.now(), |conn, _, env| {
                conn.session.finish(env.now, env.pool)
            })
            .expect("live connection");
        match finish {
            Finish::Close => self.close_conn(token),
            // TLS's close_notify first; its send's completion finishes again.
            Finish::Flush => self.send_next(token),
            Finish::Linger | Finish::ShutWrite if shutdown_write(fd).is_err() => {
                self.close_conn(token)
            }
            // Half-closed: receiving goes on.
            Finish::ShutWrite => Ok(()),
            Finish::Linger => {
                // The linger period starts now, whatever the idle deadline was.
                self.core.restart_deadline(token);
                self.arm_recv(token)
            }
        }
    }

    /// Close a connection: cancel its requests; free it once none is in flight.
    fn close_conn(&mut self, token: Token) -> io::Result<()> {
        let Some(conn) = self.core.conn(token) else {
            return Ok(());
        };
        if conn.dead {
            return Ok(());
        }
        conn.dead = true;
        let (in_flight, fd) = (conn.receiving || conn.sending, conn.fd.as_raw_fd());
        self.core.end_conn(token);
        self.live -= 1;
        if !in_flight {
            self.free(token);
            return Ok(());
        }
        let entry = opcode::AsyncCancel2::new(types::CancelBuilder::fd(types::Fd(fd)).all())
            .build()
            .user_data(user_data(kind::IGNORED, NO_CONN));
        self.push(entry)
    }

    /// Forget a closed connection whose requests have all completed.
    fn free(&mut self, token: Token) {
        if let Some(mut conn) = self.core.remove_conn(token) {
            self.core.pool().put(&mut conn.in_flight);
            // Dropping `conn.fd` closes the socket.
        }
    }

    fn begin_drain(&mut self) -> io::Result<()> {
        self.core.begin_drain();
        if self.listener.take().is_some() && self.accepting {
            let entry = opcode::AsyncCancel::new(user_data(kind::ACCEPT, NO_CONN))
                .build()
                .user_data(user_data(kind::IGNORED, NO_CONN));
            self.push(entry)?;
        }
        // Idle connections close at the end of this pass, not here: receive
        // completions later in the pass hold bytes the socket no longer shows.
        Ok(())
    }

    /// While draining: close connections the session says may close now.
    /// Not while completions wait unreaped: a receive among them holds bytes
    /// that have left the socket but not reached their connection yet.
    fn close_quiet_idle_reaped(&mut self) -> io::Result<()> {
        if !self.ring.completion().is_empty() {
            return Ok(());
        }
        self.close_quiet_idle()
    }
}

impl<P: Service> LoopConn for Conn<P> {
    type Service = P;
    fn slot(&mut self) -> (&mut Session<P>, &mut TimerId) {
        (&mut self.session, &mut self.timer)
    }
    fn live(&self) -> bool {
        !self.dead
    }
    fn raw_fd(&self) -> RawFd {
        self.fd.as_raw_fd()
    }
}

impl<P: Service, F: Fn() -> P> LoopEngine for Loop<P, F> {
    type Conn = Conn<P>;
    type Factory = F;

    fn core(&mut self) -> &mut LoopCore<Conn<P>, F> {
        &mut self.core
    }

    fn close(&mut self, token: Token) -> io::Result<()> {
        self.close_conn(token)
    }

    fn mark_ready(&mut self, token: Token) {
        self.mark_dirty(token);
    }

    fn on_resumed(&mut self, token: Token) {
        self.rearm_recv.push(token);
    }

    fn on_overflow(&mut self, token: Token) -> io::Result<()> {
        self.close_conn(token)
    }

    fn after_timer(&mut self, token: Token) -> io::Result<()> {
        self.mark_dirty(token);
        Ok(())
    }

    fn start_connect(&mut self, fd: OwnedFd, connect: Connecting) -> io::Result<()> {
        self.set_nodelay(&fd);
        let token = self.core.next_token();
        // Issued before the connection is kept: a refusal leaves nothing behind.
        self.push(connect_poll(fd.as_raw_fd(), token))?;
        // Its session's deadline is the connect's.
        let session = self.core.new_session(token, Some(connect));
        let kept = self.insert_conn(fd, session);
        debug_assert_eq!(kept, token);
        self.core.conn(token).expect("just inserted").sending = true;
        Ok(())
    }

    fn serve_outgoing(&mut self, token: Token) -> io::Result<()> {
        self.mark_dirty(token);
        self.arm_recv(token)
    }

    fn adopt_stream(&mut self, stream: Stream) -> io::Result<Token> {
        // Blocking, as accepted sockets are: the ring waits for them.
        stream.set_nonblocking(false)?;
        let fd = match stream {
            Stream::Tcp(s) => OwnedFd::from(s),
            Stream::Unix(s) => OwnedFd::from(s),
            _ => {
                return Err(io::Error::new(
                    io::ErrorKind::Unsupported,
                    "the io_uring engine cannot adopt this kind of stream",
                ))
            }
        };
        self.open_conn(fd, true)
    }

    fn watch_fd(&mut self, token: Token) -> io::Result<()> {
        self.rearm_watch(token)
    }

    fn unwatch_fd(&mut self, token: Token, watch: Watch) {
        if !watch.armed {
            return; // closed here: the kernel holds no request on it
        }
        let cancel = opcode::AsyncCancel::new(user_data(kind::WATCH, token))
            .build()
            .user_data(user_data(kind::IGNORED, NO_CONN));
        if self.push(cancel).is_ok() {
            self.unwatched.push((token, watch.fd));
        }
    }

    fn rearm_watch(&mut self, token: Token) -> io::Result<()> {
        let Some(watch) = self.core.watch(token).filter(|w| !w.armed) else {
            return Ok(());
        };
        let readable = watch.interest.bits() & Interest::READABLE.bits() != 0;
        let writable = watch.interest.bits() & Interest::WRITABLE.bits() != 0;
        let mask =
            (if readable { libc::POLLIN } else { 0 }) | (if writable { libc::POLLOUT } else { 0 });
        let entry = opcode::PollAdd::new(types::Fd(watch.fd.as_fd().as_raw_fd()), mask as u32)
            .build()
            .user_data(user_data(kind::WATCH, token));
        watch.armed = true;
        self.push(entry)
    }
}

#[cfg(test)]
mod tests;
