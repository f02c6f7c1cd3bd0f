//! The same floor on io_uring: one multishot accept, then per connection one
//! receive at a time and one send of canned responses per receive, all
//! submitted and reaped with one `io_uring_enter` per pass (single issuer,
//! deferred task work: the cheapest set-up this kernel offers).

use crate::resp::Hub;
use crate::{count_requests, RESPONSE};
use io_uring::{cqueue, opcode, squeue, types, IoUring};
use std::io;
use std::net::TcpListener;
use std::os::fd::AsRawFd;

const ACCEPT: u64 = u64::MAX;
const SEND: u64 = 1 << 32;
const READ_SIZE: usize = 64 * 1024;

fn new_ring() -> io::Result<IoUring<squeue::Entry, cqueue::Entry>> {
    IoUring::builder()
        .setup_single_issuer()
        .setup_defer_taskrun()
        .setup_cqsize(16 * 1024)
        .build(4096)
}

/// Waits for at least one completion and moves every completion into `done`.
fn reap(ring: &mut IoUring, done: &mut Vec<cqueue::Entry>) -> io::Result<()> {
    loop {
        match ring.submit_and_wait(1) {
            Ok(_) => break,
            Err(e) if e.raw_os_error() == Some(libc::EINTR) => continue,
            Err(e) => return Err(e),
        }
    }
    done.clear();
    done.extend(ring.completion());
    Ok(())
}

/// The ring with a multishot accept on `listener` submitted; returns the
/// accept too (to submit again when it ends).
fn start(listener: &TcpListener) -> io::Result<(IoUring, squeue::Entry)> {
    let mut ring = new_ring()?;
    let accept = opcode::AcceptMulti::new(types::Fd(listener.as_raw_fd()))
        .build()
        .user_data(ACCEPT);
    push(&mut ring, &accept)?;
    Ok((ring, accept))
}

/// The descriptor an accept completion brought, if any; submits the accept
/// again when the multishot one ended.
fn accepted(
    ring: &mut IoUring,
    cqe: &cqueue::Entry,
    accept: &squeue::Entry,
) -> io::Result<Option<usize>> {
    if !cqueue::more(cqe.flags()) {
        push(ring, accept)?;
    }
    Ok((cqe.result() >= 0).then_some(cqe.result() as usize))
}

/// Per descriptor: its read buffer and what the protocol keeps of it.
struct Conns<T> {
    bufs: Vec<Option<Box<[u8]>>>,
    state: Vec<T>,
}

impl<T: Clone + Default> Conns<T> {
    fn new() -> Self {
        Conns {
            bufs: Vec::new(),
            state: Vec::new(),
        }
    }

    /// A new connection on `fd`: a fresh buffer and state.
    fn adopt(&mut self, fd: usize) {
        if self.bufs.len() <= fd {
            self.bufs.resize_with(fd + 1, || None);
            self.state.resize(fd + 1, T::default());
        }
        self.bufs[fd] = Some(vec![0u8; READ_SIZE].into_boxed_slice());
        self.state[fd] = T::default();
    }
}

pub fn run(listener: TcpListener) -> io::Result<()> {
    let (mut ring, accept) = start(&listener)?;
    // Enough canned responses for the most requests one read can hold.
    let canned: Vec<u8> = RESPONSE.repeat(READ_SIZE / 16);
    // Per descriptor: the last bytes seen.
    let mut conns: Conns<u32> = Conns::new();
    let mut done: Vec<cqueue::Entry> = Vec::with_capacity(4096);
    loop {
        reap(&mut ring, &mut done)?;
        for cqe in &done {
            let data = cqe.user_data();
            let res = cqe.result();
            if data == ACCEPT {
                if let Some(fd) = accepted(&mut ring, cqe, &accept)? {
                    conns.adopt(fd);
                    push_recv(&mut ring, fd, &mut conns.bufs, 0)?;
                }
                continue;
            }
            if data & SEND != 0 {
                continue; // a floor does not handle short sends
            }
            let fd = data as usize;
            if res <= 0 {
                conns.bufs[fd] = None;
                // SAFETY: fd is ours and open; no operation on it is in flight.
                unsafe { libc::close(fd as i32) };
                continue;
            }
            let got = &conns.bufs[fd].as_ref().expect("receiving connection")[..res as usize];
            let requests =
                count_requests(&mut conns.state[fd], got).min(canned.len() / RESPONSE.len());
            if requests > 0 {
                let send = opcode::Send::new(
                    types::Fd(fd as i32),
                    canned.as_ptr(),
                    (requests * RESPONSE.len()) as u32,
                )
                .flags(libc::MSG_NOSIGNAL)
                .build()
                .user_data(SEND | fd as u64);
                push(&mut ring, &send)?;
            }
            push_recv(&mut ring, fd, &mut conns.bufs, 0)?;
        }
    }
}

/// The RESP floor (src/resp.rs) on io_uring: per connection one receive at a
/// time into its own buffer (after the incomplete command it holds), one send
/// of the replies per receive, one send per subscriber of the frames one
/// receive published. A send's bytes live in a slot of `Outbox` until every
/// send of them completed.
pub fn run_resp(listener: TcpListener) -> io::Result<()> {
    let (mut ring, accept) = start(&listener)?;
    // Per descriptor: how many bytes at the start of its buffer are an
    // incomplete command carried over.
    let mut conns: Conns<usize> = Conns::new();
    let mut hub = Hub::default();
    let mut outbox = Outbox::default();
    let mut done: Vec<cqueue::Entry> = Vec::with_capacity(4096);
    loop {
        reap(&mut ring, &mut done)?;
        for cqe in &done {
            let data = cqe.user_data();
            let res = cqe.result();
            if data == ACCEPT {
                if let Some(fd) = accepted(&mut ring, cqe, &accept)? {
                    conns.adopt(fd);
                    hub.renew(fd as i32);
                    crate::set_nodelay(fd as i32);
                    push_recv(&mut ring, fd, &mut conns.bufs, 0)?;
                }
                continue;
            }
            if data & SEND != 0 {
                outbox.sent(data as u32 as usize);
                continue; // a floor does not handle short sends
            }
            let fd = data as usize;
            // 0 is also what a receive into no room returns: a command longer
            // than the buffer ends its connection.
            if res <= 0 {
                conns.bufs[fd] = None;
                hub.renew(fd as i32);
                // SAFETY: fd is ours and open; no operation on it is in flight.
                unsafe { libc::close(fd as i32) };
                continue;
            }
            let buf = conns.bufs[fd].as_mut().expect("receiving connection");
            let kept = &mut conns.state[fd];
            let len = *kept + res as usize;
            let reply = outbox.take();
            let used = hub.serve(fd as i32, &buf[..len], &mut outbox.bufs[reply]);
            buf.copy_within(used..len, 0);
            *kept = len - used;
            let mut pushed = Ok(());
            hub.deliver(|frames, subscribers| {
                let slot = outbox.take();
                outbox.bufs[slot].extend_from_slice(frames);
                for s in subscribers {
                    outbox.hold(slot);
                    if pushed.is_ok() {
                        pushed = push_send(&mut ring, s.fd, &outbox.bufs[slot], slot);
                    }
                }
                outbox.sent(slot);
            });
            pushed?;
            if outbox.bufs[reply].is_empty() {
                outbox.sent(reply);
            } else {
                push_send(&mut ring, fd as i32, &outbox.bufs[reply], reply)?;
            }
            push_recv(&mut ring, fd, &mut conns.bufs, *kept)?;
        }
    }
}

fn push_send(ring: &mut IoUring, fd: i32, bytes: &[u8], slot: usize) -> io::Result<()> {
    let send = opcode::Send::new(types::Fd(fd), bytes.as_ptr(), bytes.len() as u32)
        .flags(libc::MSG_NOSIGNAL)
        .build()
        .user_data(SEND | slot as u64);
    push(ring, &send)
}

/// Send buffers by slot, each freed (kept for reuse) when its last send completed.
#[derive(Default)]
struct Outbox {
    bufs: Vec<Vec<u8>>,
    /// Per slot: sends in flight, plus one while it is being filled.
    holders: Vec<u32>,
    free: Vec<usize>,
}

impl Outbox {
    /// The slot of an empty buffer, held once by the caller.
    fn take(&mut self) -> usize {
        let slot = self.free.pop().unwrap_or_else(|| {
            self.bufs.push(Vec::new());
            self.holders.push(0);
            self.bufs.len() - 1
        });
        self.holders[slot] = 1;
        self.bufs[slot].clear();
        slot
    }

    fn hold(&mut self, slot: usize) {
        self.holders[slot] += 1;
    }

    fn sent(&mut self, slot: usize) {
        self.holders[slot] -= 1;
        if self.holders[slot] == 0 {
            self.free.push(slot);
        }
    }
}

/// A receive into the connection's buffer after its first `kept` bytes.
fn push_recv(
    ring: &mut IoUring,
    fd: usize,
    bufs: &mut [Option<Box<[u8]>>],
    kept: usize,
) -> io::Result<()> {
    let room = &mut bufs[fd].as_mut().expect("open connection")[kept..];
    let recv = opcode::Recv::new(types::Fd(fd as i32), room.as_mut_ptr(), room.len() as u32)
        .build()
        .user_data(fd as u64);
    push(ring, &recv)
}

fn push(ring: &mut IoUring, entry: &squeue::Entry) -> io::Result<()> {
    loop {
        // SAFETY: every buffer an entry points to (a connection's boxed read
        // buffer, the canned responses, an Outbox slot) lives until its
        // completion is reaped: read buffers are dropped only after their
        // receive completed, a slot is reused only after its last send did.
        if unsafe { ring.submission().push(entry) }.is_ok() {
            return Ok(());
        }
        ring.submit()?;
    }
}
