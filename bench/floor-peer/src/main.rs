//! The floor of a keep-alive HTTP server on this machine: what the kernel
//! alone costs per request when a server does the least any readiness-based
//! server can do: one `epoll_wait` per batch of events, one `recv` per
//! readable socket, one `send` of canned responses per `recv`.
//!
//! It is NOT a conforming server and never a competitor: it parses nothing
//! (a request is counted by its blank line), its response is one pre-rendered
//! buffer with a fixed `Date`, it has no limits, timeouts or error handling
//! beyond closing. bench/http-peers.sh runs it beside iomux and nginx so the
//! share of a server's CPU per request that no server can shed (TCP in and
//! out, the wake-up of the client, the readiness wait) is measured, not
//! guessed.
//!
//! Usage: `floor-peer [ADDR] [epoll|uring]` (default 127.0.0.1:8083, epoll);
//! prints `listening on ADDR` when ready. `uring` runs the same floor on
//! io_uring (src/uring.rs): no readiness wait, one `io_uring_enter` per pass.

use std::io::{self, Write};
use std::net::TcpListener;
use std::os::fd::{AsRawFd, RawFd};

mod uring;

/// The length iomux's own response has (same headers, fixed date).
pub(crate) const RESPONSE: &[u8] = b"HTTP/1.1 200 OK\r\nServer: floor\r\nDate: Wed, 25 Nov 2026 00:00:00 GMT\r\nContent-Type: text/plain\r\nContent-Length: 13\r\n\r\nHello, World!";

fn check(n: libc::c_int, what: &str) -> io::Result<libc::c_int> {
    if n < 0 {
        let e = io::Error::last_os_error();
        Err(io::Error::new(e.kind(), format!("{what}: {e}")))
    } else {
        Ok(n)
    }
}

fn watch(epfd: RawFd, fd: RawFd) -> io::Result<()> {
    let mut ev = libc::epoll_event {
        events: libc::EPOLLIN as u32,
        u64: fd as u64,
    };
    // SAFETY: epfd and fd are open descriptors; ev lives across the call.
    check(
        unsafe { libc::epoll_ctl(epfd, libc::EPOLL_CTL_ADD, fd, &mut ev) },
        "epoll_ctl",
    )?;
    Ok(())
}

/// Requests ended in `data`, counting a blank line split across reads by
/// carrying the last bytes over in `tail`.
pub(crate) fn count_requests(tail: &mut u32, data: &[u8]) -> usize {
    let mut n = 0;
    for &b in data {
        *tail = (*tail << 8) | u32::from(b);
        if *tail == u32::from_be_bytes(*b"\r\n\r\n") {
            n += 1;
        }
    }
    n
}

fn main() -> io::Result<()> {
    let addr = std::env::args()
        .nth(1)
        .unwrap_or_else(|| "127.0.0.1:8083".into());
    let mode = std::env::args().nth(2).unwrap_or_else(|| "epoll".into());
    let listener = TcpListener::bind(&addr)?;
    if mode == "uring" {
        println!("listening on {}", listener.local_addr()?);
        io::stdout().flush()?;
        return uring::run(listener);
    }
    if mode != "epoll" {
        return Err(io::Error::new(
            io::ErrorKind::InvalidInput,
            format!("unknown mode {mode:?}: use epoll or uring"),
        ));
    }
    listener.set_nonblocking(true)?;
    let lfd = listener.as_raw_fd();
    // SAFETY: plain syscall without pointers.
    let epfd = check(
        unsafe { libc::epoll_create1(libc::EPOLL_CLOEXEC) },
        "epoll_create1",
    )?;
    watch(epfd, lfd)?;
    println!("listening on {}", listener.local_addr()?);
    io::stdout().flush()?;

    // Per descriptor: the last bytes seen (blank-line detection across reads).
    let mut tails: Vec<u32> = Vec::new();
    let mut events = vec![libc::epoll_event { events: 0, u64: 0 }; 1024];
    let mut buf = vec![0u8; 64 * 1024];
    let mut out: Vec<u8> = Vec::with_capacity(64 * 1024);
    loop {
        // SAFETY: `events` is a live array of its length.
        let n = unsafe { libc::epoll_wait(epfd, events.as_mut_ptr(), events.len() as i32, -1) };
        if n < 0 {
            continue; // EINTR
        }
        for ev in &events[..n as usize] {
            let fd = ev.u64 as RawFd;
            if fd == lfd {
                loop {
                    // SAFETY: null address arguments are allowed.
                    let c = unsafe {
                        libc::accept4(
                            lfd,
                            std::ptr::null_mut(),
                            std::ptr::null_mut(),
                            libc::SOCK_NONBLOCK | libc::SOCK_CLOEXEC,
                        )
                    };
                    if c < 0 {
                        break;
                    }
                    if tails.len() <= c as usize {
                        tails.resize(c as usize + 1, 0);
                    }
                    tails[c as usize] = 0;
                    if watch(epfd, c).is_err() {
                        // SAFETY: c is ours and open.
                        unsafe { libc::close(c) };
                    }
                }
                continue;
            }
            // SAFETY: `buf` is writable memory of its length.
            let got = unsafe { libc::recv(fd, buf.as_mut_ptr().cast(), buf.len(), 0) };
            if got < 0 && io::Error::last_os_error().kind() == io::ErrorKind::WouldBlock {
                continue;
            }
            if got <= 0 {
                // SAFETY: fd is ours and open; close also removes it from epoll.
                unsafe { libc::close(fd) };
                continue;
            }
            let requests = count_requests(&mut tails[fd as usize], &buf[..got as usize]);
            out.clear();
            for _ in 0..requests {
                out.extend_from_slice(RESPONSE);
            }
            if !out.is_empty() {
                // Canned answers to a benchmark client that reads them: a short
                // send is not expected and not handled (this is a floor, not a server).
                // SAFETY: `out` is a live slice of its length.
                unsafe { libc::send(fd, out.as_ptr().cast(), out.len(), libc::MSG_NOSIGNAL) };
            }
        }
    }
}
