//! The same floor on io_uring: one multishot accept, then per connection one
//! receive at a time and one send of canned responses per receive, all
//! submitted and reaped with one `io_uring_enter` per pass (single issuer,
//! deferred task work: the cheapest set-up this kernel offers).

use crate::{count_requests, RESPONSE};
use io_uring::{cqueue, opcode, squeue, types, IoUring};
use std::io;
use std::net::TcpListener;
use std::os::fd::AsRawFd;

const ACCEPT: u64 = u64::MAX;
const SEND: u64 = 1 << 32;
const READ_SIZE: usize = 64 * 1024;

pub fn run(listener: TcpListener) -> io::Result<()> {
    let mut ring: IoUring<squeue::Entry, cqueue::Entry> = IoUring::builder()
        .setup_single_issuer()
        .setup_defer_taskrun()
        .setup_cqsize(16 * 1024)
        .build(4096)?;
    let lfd = listener.as_raw_fd();
    // Enough canned responses for the most requests one read can hold.
    let canned: Vec<u8> = RESPONSE.repeat(READ_SIZE / 16);
    // Per descriptor: its read buffer and the last bytes seen.
    let mut bufs: Vec<Option<Box<[u8]>>> = Vec::new();
    let mut tails: Vec<u32> = Vec::new();
    let accept = opcode::AcceptMulti::new(types::Fd(lfd))
        .build()
        .user_data(ACCEPT);
    push(&mut ring, &accept)?;
    let mut done: Vec<cqueue::Entry> = Vec::with_capacity(4096);
    loop {
        match ring.submit_and_wait(1) {
            Ok(_) => {}
            Err(e) if e.raw_os_error() == Some(libc::EINTR) => continue,
            Err(e) => return Err(e),
        }
        done.clear();
        done.extend(ring.completion());
        for cqe in &done {
            let data = cqe.user_data();
            let res = cqe.result();
            if data == ACCEPT {
                if res >= 0 {
                    let fd = res as usize;
                    if bufs.len() <= fd {
                        bufs.resize_with(fd + 1, || None);
                        tails.resize(fd + 1, 0);
                    }
                    bufs[fd] = Some(vec![0u8; READ_SIZE].into_boxed_slice());
                    tails[fd] = 0;
                    push_recv(&mut ring, fd, &mut bufs)?;
                }
                if !cqueue::more(cqe.flags()) {
                    push(&mut ring, &accept)?;
                }
                continue;
            }
            if data & SEND != 0 {
                continue; // a floor does not handle short sends
            }
            let fd = data as usize;
            if res <= 0 {
                bufs[fd] = None;
                // SAFETY: fd is ours and open; no operation on it is in flight.
                unsafe { libc::close(fd as i32) };
                continue;
            }
            let got = &bufs[fd].as_ref().expect("receiving connection")[..res as usize];
            let requests = count_requests(&mut tails[fd], got).min(canned.len() / RESPONSE.len());
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
            push_recv(&mut ring, fd, &mut bufs)?;
        }
    }
}

fn push_recv(ring: &mut IoUring, fd: usize, bufs: &mut [Option<Box<[u8]>>]) -> io::Result<()> {
    let buf = bufs[fd].as_mut().expect("open connection");
    let recv = opcode::Recv::new(types::Fd(fd as i32), buf.as_mut_ptr(), buf.len() as u32)
        .build()
        .user_data(fd as u64);
    push(ring, &recv)
}

fn push(ring: &mut IoUring, entry: &squeue::Entry) -> io::Result<()> {
    loop {
        // SAFETY: every buffer an entry points to (a connection's boxed read
        // buffer, the canned responses) lives until its completion is reaped:
        // buffers are dropped only after their receive completed.
        if unsafe { ring.submission().push(entry) }.is_ok() {
            return Ok(());
        }
        ring.submit()?;
    }
}
