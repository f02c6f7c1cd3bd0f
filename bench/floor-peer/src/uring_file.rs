//! The static-file floor on io_uring, three ways to move the body, so that
//! the engine can keep the cheapest per size (docs/performance.md):
//! - `Read`: a read of the next piece of the file into the connection's
//!   buffer (behind the head for the first piece), linked to a send of it;
//! - `Splice`: the head sent with MSG_MORE, then per piece a splice from the
//!   file into the connection's pipe linked to a splice from the pipe into
//!   the socket (no copy through user space; io_uring runs splices that
//!   would block on its worker threads);
//! - `ReadSendZc`: as `Read`, with a zero-copy send (the buffer is reused
//!   only after its notification).
//!
//! As the other floors: no parsing (a request is counted by its blank
//! line), one file whatever the path, no limits, a short result ends the
//! connection except where the method must expect one (a splice into a
//! socket).

use crate::count_requests;
use crate::file::head;
use io_uring::{cqueue, opcode, squeue, types, IoUring};
use std::fs::File;
use std::io;
use std::net::TcpListener;
use std::os::fd::AsRawFd;

/// Bytes of the file moved per step (and the pipe's size in `Splice`).
const PIECE: usize = 256 * 1024;
const RECV_SIZE: usize = 4096;

#[derive(Clone, Copy, PartialEq, Eq, Debug)]
pub enum Body {
    Read,
    Splice,
    ReadSendZc,
}

// user_data: kind in the top byte, descriptor below.
const ACCEPT: u64 = 1 << 56;
const RECV: u64 = 2 << 56;
/// The first links of a chain (a read, a head): only their failures matter.
const LINK: u64 = 3 << 56;
/// A splice from the file into the pipe: how much it moved.
const PIPE_IN: u64 = 5 << 56;
/// The last link of a chain: the step is done when it completes.
const LAST: u64 = 4 << 56;
const KIND: u64 = 0xff << 56;

#[derive(Default)]
struct Conn {
    open: bool,
    recv_buf: Vec<u8>,
    tail: u32,
    queued: u64,
    /// Body bytes of the current response not yet handed to a step.
    left: u64,
    /// The current response's head is not sent yet.
    head_due: bool,
    /// A step is in flight.
    busy: bool,
    /// Bytes the step in flight moves (of the body).
    step: u64,
    /// Read modes: the send buffer.
    buf: Vec<u8>,
    /// Splice mode: the pipe (read end, write end) and the bytes in it.
    pipe: Option<(i32, i32)>,
    in_pipe: u64,
    /// Zero-copy: the send completed, its notification has not.
    zc_waiting: bool,
}

struct Floor {
    ring: IoUring,
    body: Body,
    file: File,
    len: u64,
    head: Vec<u8>,
    conns: Vec<Conn>,
}

impl Floor {
    fn push(&mut self, entry: &squeue::Entry) -> io::Result<()> {
        loop {
            // SAFETY: every buffer an entry points to (a connection's receive
            // or send buffer, the head) lives until its completion is reaped:
            // a connection's buffers are dropped only when it closes with no
            // operation in flight, and a send buffer is refilled only after
            // its step completed (and, zero-copy, was notified).
            if unsafe { self.ring.submission().push(entry) }.is_ok() {
                return Ok(());
            }
            self.ring.submit()?;
        }
    }

    fn recv(&mut self, fd: usize) -> io::Result<()> {
        let buf = &mut self.conns[fd].recv_buf;
        let entry = opcode::Recv::new(types::Fd(fd as i32), buf.as_mut_ptr(), buf.len() as u32)
            .build()
            .user_data(RECV | fd as u64);
        self.push(&entry)
    }

    /// Start the next step of `fd`'s output if none is in flight.
    fn step(&mut self, fd: usize) -> io::Result<()> {
        let conn = &mut self.conns[fd];
        if conn.busy || !conn.open {
            return Ok(());
        }
        if conn.left == 0 && !conn.head_due {
            if conn.queued == 0 {
                return Ok(());
            }
            conn.queued -= 1;
            conn.left = self.len;
            conn.head_due = true;
        }
        conn.busy = true;
        let offset = self.len - conn.left;
        let piece = conn.left.min(PIECE as u64);
        conn.step = piece;
        let sock = types::Fd(fd as i32);
        let file = types::Fd(self.file.as_raw_fd());
        match self.body {
            Body::Read | Body::ReadSendZc => {
                let head = if conn.head_due { &self.head[..] } else { &[] };
                conn.head_due = false;
                conn.buf.clear();
                conn.buf.extend_from_slice(head);
                let at = conn.buf.len();
                conn.buf.resize(at + piece as usize, 0);
                let more = if conn.left > piece { libc::MSG_MORE } else { 0 };
                let flags = libc::MSG_NOSIGNAL | libc::MSG_WAITALL | more;
                let (ptr, total) = (conn.buf.as_ptr(), conn.buf.len() as u32);
                let read_ptr = conn.buf[at..].as_mut_ptr();
                let send = match self.body {
                    Body::Read => opcode::Send::new(sock, ptr, total).flags(flags).build(),
                    _ => opcode::SendZc::new(sock, ptr, total).flags(flags).build(),
                };
                if piece > 0 {
                    let read = opcode::Read::new(file, read_ptr, piece as u32)
                        .offset(offset)
                        .build()
                        .flags(squeue::Flags::IO_LINK)
                        .user_data(LINK | fd as u64);
                    self.push(&read)?;
                }
                self.push(&send.user_data(LAST | fd as u64))?;
            }
            Body::Splice => {
                let (pipe_r, pipe_w) = conn.pipe.expect("a pipe per connection");
                if conn.head_due {
                    conn.head_due = false;
                    let more = if piece > 0 { libc::MSG_MORE } else { 0 };
                    let send = opcode::Send::new(sock, self.head.as_ptr(), self.head.len() as u32)
                        .flags(libc::MSG_NOSIGNAL | libc::MSG_WAITALL | more)
                        .build();
                    if piece == 0 {
                        return self.push(&send.user_data(LAST | fd as u64));
                    }
                    self.push(
                        &send
                            .flags(squeue::Flags::IO_LINK)
                            .user_data(LINK | fd as u64),
                    )?;
                }
                let into_pipe =
                    opcode::Splice::new(file, offset as i64, types::Fd(pipe_w), -1, piece as u32)
                        .build()
                        .flags(squeue::Flags::IO_LINK)
                        .user_data(PIPE_IN | fd as u64);
                let out = opcode::Splice::new(types::Fd(pipe_r), -1, sock, -1, piece as u32)
                    .build()
                    .user_data(LAST | fd as u64);
                self.push(&into_pipe)?;
                self.push(&out)?;
            }
        }
        Ok(())
    }

    /// The splice out of the pipe took `n` of the bytes in it: send the rest.
    fn drain_pipe(&mut self, fd: usize) -> io::Result<()> {
        let conn = &self.conns[fd];
        let (pipe_r, _) = conn.pipe.expect("a pipe per connection");
        let out = opcode::Splice::new(
            types::Fd(pipe_r),
            -1,
            types::Fd(fd as i32),
            -1,
            conn.in_pipe as u32,
        )
        .build()
        .user_data(LAST | fd as u64);
        self.push(&out)
    }

    fn close(&mut self, fd: usize) {
        let conn = &mut self.conns[fd];
        if !conn.open {
            return;
        }
        conn.open = false;
        if let Some((r, w)) = conn.pipe.take() {
            // SAFETY: the pipe is this connection's and open.
            unsafe {
                libc::close(r);
                libc::close(w);
            }
        }
        // SAFETY: fd is ours and open. An operation still in flight on it
        // fails; its buffers are kept until the slot is reused (a floor).
        unsafe { libc::close(fd as i32) };
    }

    fn adopt(&mut self, fd: usize) -> io::Result<()> {
        if self.conns.len() <= fd {
            self.conns.resize_with(fd + 1, Conn::default);
        }
        let pipe = if self.body == Body::Splice {
            let mut fds = [0; 2];
            // SAFETY: `fds` is a live array of two.
            crate::check(
                unsafe { libc::pipe2(fds.as_mut_ptr(), libc::O_CLOEXEC) },
                "pipe2",
            )?;
            // SAFETY: plain fcntl on our pipe.
            unsafe { libc::fcntl(fds[1], libc::F_SETPIPE_SZ, PIECE as libc::c_int) };
            Some((fds[0], fds[1]))
        } else {
            None
        };
        self.conns[fd] = Conn {
            open: true,
            recv_buf: vec![0; RECV_SIZE],
            pipe,
            ..Conn::default()
        };
        self.recv(fd)
    }

    fn complete(&mut self, cqe: &cqueue::Entry) -> io::Result<()> {
        let data = cqe.user_data();
        let fd = (data & !KIND) as usize;
        let res = cqe.result();
        match data & KIND {
            RECV => {
                if !self.conns[fd].open {
                    return Ok(());
                }
                if res <= 0 {
                    self.close(fd);
                    return Ok(());
                }
                let conn = &mut self.conns[fd];
                let n = count_requests(&mut conn.tail, &conn.recv_buf[..res as usize]);
                conn.queued += n as u64;
                self.recv(fd)?;
                self.step(fd)
            }
            LINK => {
                if res < 0 && res != -libc::ECANCELED {
                    self.close(fd);
                }
                Ok(())
            }
            PIPE_IN => {
                if res < 0 {
                    if res != -libc::ECANCELED {
                        self.close(fd);
                    }
                    return Ok(());
                }
                // Short or whole, what is in the pipe is owed to the socket.
                let conn = &mut self.conns[fd];
                conn.in_pipe = res as u64;
                conn.left -= res as u64;
                Ok(())
            }
            LAST => {
                let conn = &mut self.conns[fd];
                if !conn.open {
                    return Ok(());
                }
                if cqueue::notif(cqe.flags()) {
                    conn.zc_waiting = false;
                    conn.busy = false;
                    return self.step(fd);
                }
                if res == -libc::ECANCELED && conn.in_pipe > 0 {
                    // The splice into the pipe was short: send what it moved.
                    return self.drain_pipe(fd);
                }
                if res < 0 {
                    self.close(fd);
                    return Ok(());
                }
                if self.body == Body::Splice {
                    conn.in_pipe = conn.in_pipe.saturating_sub(res as u64);
                    if conn.in_pipe > 0 {
                        return self.drain_pipe(fd);
                    }
                } else {
                    conn.left -= conn.step;
                    if cqueue::more(cqe.flags()) {
                        // Zero-copy: the buffer is the kernel's until notified.
                        conn.zc_waiting = true;
                        return Ok(());
                    }
                }
                conn.busy = false;
                self.step(fd)
            }
            _ => Ok(()),
        }
    }
}

pub fn run(listener: TcpListener, path: &str, body: Body) -> io::Result<()> {
    let file = File::open(path).map_err(|e| io::Error::new(e.kind(), format!("{path}: {e}")))?;
    let len = file.metadata()?.len();
    let ring = IoUring::builder()
        .setup_single_issuer()
        .setup_defer_taskrun()
        .setup_cqsize(16 * 1024)
        .build(4096)?;
    let mut floor = Floor {
        ring,
        body,
        file,
        len,
        head: head(len),
        conns: Vec::new(),
    };
    let accept = opcode::AcceptMulti::new(types::Fd(listener.as_raw_fd()))
        .build()
        .user_data(ACCEPT);
    floor.push(&accept)?;
    let mut done: Vec<cqueue::Entry> = Vec::with_capacity(4096);
    loop {
        match floor.ring.submit_and_wait(1) {
            Ok(_) => {}
            Err(e) if e.raw_os_error() == Some(libc::EINTR) => continue,
            Err(e) => return Err(e),
        }
        done.clear();
        done.extend(floor.ring.completion());
        for cqe in &done {
            if cqe.user_data() == ACCEPT {
                if !cqueue::more(cqe.flags()) {
                    floor.push(&accept)?;
                }
                if cqe.result() >= 0 {
                    floor.adopt(cqe.result() as usize)?;
                }
                continue;
            }
            floor.complete(cqe)?;
        }
    }
}
