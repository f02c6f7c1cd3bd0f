//! The requests a loop issues to the ring: queueing and submitting them,
//! the waker's read, accepts, receives, sends, a connect's poll, the
//! loop's timeout, and settling what is in flight when the loop ends.

use super::bufring::{BUFFER_GROUP, BUFFER_SIZE};
use super::ring::{decode, kind, set_total_len, timeout_token, user_data, RecvMode, NO_CONN};
use super::{Conn, Loop};
use crate::life::SEND_PIECE;
use crate::loop_core::LoopEngine;
use crate::session::{Env, Fault, Front, Sent};
use crate::sock::{is_file_cut_short, nodelay_for_files, read_region, send_front};
use io_uring::{cqueue, opcode, squeue, types};
use iomux::Token;
use iomux_proto::Service;
use std::io;
use std::os::fd::{AsFd, AsRawFd, BorrowedFd, RawFd};
use std::time::{Duration, Instant};

/// Most bytes one receive takes before the loop looks at the connection
/// again (the reactor's read size): what arrives after a pause is decided
/// is at most this much.
const RECV_PER_ARM: usize = 64 * 1024;

/// Where file regions cannot go out from the loop thread (see
/// [`send_outside_ring`]), they are read into the connection's send buffer
/// and sent through the ring, this many bytes at a time.
const URING_READ_PIECE: usize = 256 * 1024;

impl<P: Service, F: Fn() -> P> Loop<P, F> {
    pub(super) fn push(&mut self, entry: squeue::Entry) -> io::Result<()> {
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

    pub(super) fn submit_and_wait(&mut self) -> io::Result<usize> {
        #[cfg(test)]
        if let Some(n) = self.fail_submit_after.as_mut() {
            if *n == 0 {
                return Err(io::Error::other("injected submission failure"));
            }
            *n -= 1;
        }
        // A callback due next pass: look at the completions without waiting.
        let wait = usize::from(!self.core.has_due());
        self.ring.submit_and_wait(wait)
    }

    pub(super) fn arm_waker(&mut self) -> io::Result<()> {
        let entry = opcode::Read::new(
            types::Fd(self.waker.as_raw_fd()),
            (&mut *self.waker_buf as *mut u64).cast(),
            8,
        )
        .build()
        .user_data(user_data(kind::WAKER, NO_CONN));
        self.push(entry)
    }

    pub(super) fn arm_accept(&mut self) -> io::Result<()> {
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

    pub(super) fn arm_recv(&mut self, token: Token) -> io::Result<()> {
        let high_water = self.core.rules().output_high_water;
        let Some(conn) = self.core.conn(token) else {
            return Ok(());
        };
        let lingering = conn.session.is_lingering();
        if conn.receiving || conn.dead || !conn.session.wants().read {
            return Ok(());
        }
        // What this receive may take before the loop looks again: the room
        // under the output limit (a lingering connection discards its input),
        // and no more than the reactor reads before it looks again: a
        // connection whose input goes elsewhere (forwarded) is paused by its
        // target's output, which its own room knows nothing of.
        let room = conn.session.read_budget(high_water).min(RECV_PER_ARM);
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

    /// Issue the next send of a connection if none is in flight. Where a
    /// file goes out from the loop thread, its head and body are sent there
    /// one after the other, as on the readiness engines, while the kernel
    /// takes all of each and the pass is young ([`SEND_PIECE`]); a poll for
    /// room stands for the send the kernel cut short (or the piece that
    /// ended the pass), and no request at all for what went.
    pub(super) fn send_next(&mut self, token: Token) -> io::Result<()> {
        let sendfile = self.sendfile_outside;
        let mut piece = SEND_PIECE;
        loop {
            let prepared = self.core.with_conn(token, self.core.now(), |conn, _, env| {
                next_send(conn, token, env, sendfile, piece)
            });
            let next = match prepared {
                None | Some(Ok(None)) => return Ok(()),
                Some(Ok(Some(next))) => next,
                Some(Err(e)) => {
                    if is_file_cut_short(&e) {
                        self.core.stats().files_cut_short += 1;
                    }
                    return self.close_conn(token);
                }
            };
            self.core.stats().writes += 1;
            let (n, outcome) = match next {
                NextSend::Request(entry) => return self.push(entry),
                NextSend::Sent { bytes, outcome } => (bytes, outcome),
            };
            if self.after_call(token, outcome.map(|_| ())).is_err() {
                return self.close_conn(token);
            }
            if outcome.is_ok_and(|s| s.resumed) {
                self.arm_recv(token)?;
            }
            piece = self.core.clock().piece_left(piece.saturating_sub(n));
        }
    }

    pub(super) fn cancel_recv(&mut self, token: Token) -> io::Result<()> {
        let entry = opcode::AsyncCancel::new(user_data(kind::RECV, token))
            .build()
            .user_data(user_data(kind::IGNORED, NO_CONN));
        self.push(entry)
    }

    /// Wait for a connecting socket to become writable (established or failed).
    pub(super) fn poll_connect(&mut self, token: Token) -> io::Result<()> {
        let Some(conn) = self.core.conn(token) else {
            return Ok(());
        };
        conn.sending = true;
        let entry = connect_poll(conn.fd.as_raw_fd(), token);
        self.push(entry)
    }

    /// Keep one timeout request in flight for the loop's next deadline.
    pub(super) fn arm_timeout(&mut self) -> io::Result<()> {
        let Some(wait) = self.core.timer_wait() else {
            return Ok(());
        };
        let next = self.core.now() + wait;
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

    /// Before the buffers go: cancel every request still in flight and wait
    /// (a bounded time) for their completions, so the kernel is done with
    /// every send buffer and provided buffer. What it may still hold after
    /// that is leaked on purpose: memory lost beats memory the kernel writes
    /// into after it was freed.
    pub(super) fn settle_in_flight(&mut self) {
        let cancel = opcode::AsyncCancel2::new(types::CancelBuilder::any())
            .build()
            .user_data(user_data(kind::IGNORED, NO_CONN));
        let _ = self.push(cancel);
        let until = Instant::now() + Duration::from_secs(1);
        while self.core.conn_count() > 0 && Instant::now() < until {
            let _ = self.ring.submit_and_wait(1);
            let cqes: Vec<cqueue::Entry> = self.ring.completion().collect();
            for cqe in cqes {
                let (k, token) = decode(cqe.user_data());
                if !matches!(k, kind::RECV | kind::SEND | kind::SENDFILE | kind::CONNECT) {
                    continue;
                }
                let more = cqueue::more(cqe.flags());
                if let Some(conn) = self.core.conn(token) {
                    if k != kind::RECV {
                        conn.sending = false;
                    } else if !more {
                        conn.receiving = false;
                    }
                }
            }
            for token in self.core.conn_tokens() {
                if self
                    .core
                    .conn(token)
                    .is_some_and(|c| !c.sending && !c.receiving)
                {
                    self.free(token);
                }
            }
        }
        let mut unsettled = 0;
        for token in self.core.conn_tokens() {
            if let Some(conn) = self.core.remove_conn(token) {
                if conn.sending {
                    std::mem::forget(conn.in_flight);
                }
                unsettled += usize::from(conn.receiving || conn.sending);
            }
        }
        if unsettled > 0 {
            self.core.stats().leaked_buffers += unsettled as u64;
            self.bufs.leak();
        }
    }
}

/// What [`next_send`] did.
enum NextSend {
    /// A request to push: a send through the ring, or a poll for room
    /// standing for a send from the loop thread that the kernel cut short.
    Request(squeue::Entry),
    /// Sent from the loop thread, all of what was tried; what telling the
    /// session did.
    Sent {
        bytes: usize,
        outcome: Result<Sent, Fault>,
    },
}

/// Connection `token`'s next send, if none is in flight and it owes
/// something: the rest of its send buffer, else the front of its queue
/// (a piece of a file read into the buffer). An error: the file could not
/// be read (the connection closes). With `sendfile` (see
/// [`send_outside_ring`]) a file region, and the bytes in front of one (a
/// response's head), go out from the loop thread instead, as on the
/// readiness engines, up to `piece` bytes: at 64 KiB that cost the server
/// 9 us per file against 15 us for a read and a send through the ring
/// (`bench/static-peers.sh`). A poll for room stands for such a send when
/// the kernel took less than was tried, or when `piece` is spent.
fn next_send<P: Service>(
    conn: &mut Conn<P>,
    token: Token,
    env: &mut Env,
    sendfile: bool,
    piece: usize,
) -> io::Result<Option<NextSend>> {
    let pool = &mut *env.pool;
    if conn.sending || conn.dead {
        return Ok(None);
    }
    if conn.in_flight_sent >= conn.in_flight.len() {
        conn.in_flight.clear();
        conn.in_flight_sent = 0;
        if pool.oversized(&conn.in_flight) {
            // A large answer's buffer is not kept (nor swapped into the session).
            conn.in_flight = Vec::new();
        }
        match conn.session.front() {
            None => {
                // Nothing owed: an idle connection holds no buffer.
                pool.put(&mut conn.in_flight);
                return Ok(None);
            }
            Some(front @ (Front::File(_) | Front::Bytes { more: true, .. })) if sendfile => {
                let fd = conn.fd.as_raw_fd();
                let mut sent = 0;
                if piece > 0 {
                    let tried;
                    (sent, tried) = send_outside_ring(
                        conn.fd.as_fd(),
                        front,
                        piece,
                        &mut conn.nodelay,
                        &mut conn.nonblocking,
                    )?;
                    if sent == tried {
                        let outcome = conn.session.on_sent(sent, None, env);
                        return Ok(Some(NextSend::Sent {
                            bytes: sent,
                            outcome,
                        }));
                    }
                }
                // Cut short, or the pass's pieces are spent: the poll stands
                // for this send and says when the socket has room again.
                conn.session.hand_out_sent(sent, pool);
                conn.sendfile_sent = sent;
                conn.sending = true;
                let entry = opcode::PollAdd::new(types::Fd(fd), libc::POLLOUT as u32)
                    .build()
                    .user_data(user_data(kind::SENDFILE, token));
                return Ok(Some(NextSend::Request(entry)));
            }
            Some(Front::Bytes { .. }) => conn.session.hand_out(&mut conn.in_flight),
            Some(Front::File(region)) => {
                // A piece of the file, read into the send buffer.
                nodelay_for_files(conn.fd.as_raw_fd(), &mut conn.nodelay)?;
                match read_region(region, &mut conn.in_flight, URING_READ_PIECE) {
                    Ok(n) => conn.session.hand_out_sent(n, pool),
                    Err(e) => return Err(e),
                }
            }
        }
    }
    // More queued behind this send (a file behind its head, the rest of
    // a file): MSG_MORE lets them share segments.
    let more = match conn.session.front() {
        Some(_) => libc::MSG_MORE,
        None => 0,
    };
    let rest = &conn.in_flight[conn.in_flight_sent..];
    let entry = opcode::Send::new(
        types::Fd(conn.fd.as_raw_fd()),
        rest.as_ptr(),
        rest.len().min(u32::MAX as usize) as u32,
    )
    .flags(libc::MSG_NOSIGNAL | more)
    .build()
    .user_data(user_data(kind::SEND, token));
    conn.sending = true;
    Ok(Some(NextSend::Request(entry)))
}

/// The front of a connection's queue sent to socket `fd` from the loop
/// thread, outside the ring, as the readiness engines send it
/// ([`send_front`]: bytes with MSG_MORE, up to `max` bytes of a file region
/// with `sendfile`); the bytes sent
/// and the bytes tried. A 100 MiB file costs the server about a third of
/// what reading it into the send buffer does, and a 1 MiB file about half
/// (docs/files.md).
/// `sendfile` has no per-call "don't wait" flag, so the socket (blocking as
/// accepted) is made non-blocking first, once and for good (`nonblocking`
/// says it is): the ring's receives and sends on it still wait in the ring,
/// polled for by the kernel, instead of completing with EAGAIN
/// (`ring_operations_on_non_blocking_sockets_wait_instead_of_failing`).
/// Turning it on and off around each call instead cost two `ioctl`s per
/// file response.
fn send_outside_ring(
    fd: BorrowedFd<'_>,
    front: Front<'_>,
    max: usize,
    nodelay: &mut bool,
    nonblocking: &mut bool,
) -> io::Result<(usize, usize)> {
    if !*nonblocking {
        socket2::SockRef::from(&fd).set_nonblocking(true)?;
        *nonblocking = true;
    }
    send_front(fd.as_raw_fd(), front, max, nodelay)
}

/// The poll that waits for a connecting socket to become writable.
pub(super) fn connect_poll(fd: RawFd, token: Token) -> squeue::Entry {
    opcode::PollAdd::new(types::Fd(fd), libc::POLLOUT as u32)
        .build()
        .user_data(user_data(kind::CONNECT, token))
}
