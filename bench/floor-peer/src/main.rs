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
//! Usage: `floor-peer [ADDR] [epoll|uring] [http|resp|file PATH|file-MODE PATH]` (default
//! 127.0.0.1:8083, epoll, http); prints `listening on ADDR` when ready.
//! `uring` runs the same floor on io_uring (src/uring.rs): no readiness wait,
//! one `io_uring_enter` per pass. `resp` is the floor of a RESP server
//! (src/resp.rs, bench/redis-peers.sh): the same one recv and one send per
//! batch of commands, the least replies redis-benchmark `-t set,get` accepts,
//! and pub/sub fan-out with one send per subscriber per read. Two
//! experiments (epoll only), not floors: `resp-copy` copies each
//! subscriber's frames into that connection's own 16 KiB output buffer
//! first, as redis-server does (what touching per-subscriber memory costs);
//! `resp-nagle` leaves TCP_NODELAY off (what Nagle's coalescing of a
//! subscriber's frames saves).
//!
//! `file PATH` is the floor of a static-file server (src/file.rs, epoll):
//! a canned head and the body with `sendfile` (the cheapest way measured,
//! at every size: docs/files.md) for every request, whatever its path;
//! `file-sendfile` is the same, and `file-pieces`, `file-read`, `file-mem`,
//! `file-nagle` and `file-pieces-more` each send it another way (src/file.rs
//! says how).
//! On uring (src/uring_file.rs): `file-read` (a read into the connection's
//! buffer linked to a send), `file-splice` (splice file to pipe to socket),
//! `file-zc` (a read linked to a zero-copy send).

use std::io::{self, Write};
use std::net::TcpListener;
use std::os::fd::{AsRawFd, RawFd};

mod file;
mod resp;
mod uring;
mod uring_file;

/// The length iomux's own response has (same headers, fixed date).
pub(crate) const RESPONSE: &[u8] = b"HTTP/1.1 200 OK\r\nServer: floor\r\nDate: Wed, 25 Nov 2026 00:00:00 GMT\r\nContent-Type: text/plain\r\nContent-Length: 13\r\n\r\nHello, World!";

pub(crate) fn check(n: libc::c_int, what: &str) -> io::Result<libc::c_int> {
    if n < 0 {
        let e = io::Error::last_os_error();
        Err(io::Error::new(e.kind(), format!("{what}: {e}")))
    } else {
        Ok(n)
    }
}

pub(crate) fn watch(epfd: RawFd, fd: RawFd) -> io::Result<()> {
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

/// The nonblocking listener's descriptor and a new epoll instance watching it.
pub(crate) fn epoll_listening(listener: &TcpListener) -> io::Result<(RawFd, RawFd)> {
    listener.set_nonblocking(true)?;
    let lfd = listener.as_raw_fd();
    // SAFETY: plain syscall without pointers.
    let epfd = check(
        unsafe { libc::epoll_create1(libc::EPOLL_CLOEXEC) },
        "epoll_create1",
    )?;
    watch(epfd, lfd)?;
    Ok((lfd, epfd))
}

/// The events epoll reports next (none when interrupted by a signal).
pub(crate) fn wait(epfd: RawFd, events: &mut [libc::epoll_event]) -> &[libc::epoll_event] {
    // SAFETY: `events` is a live array of its length.
    let n = unsafe { libc::epoll_wait(epfd, events.as_mut_ptr(), events.len() as i32, -1) };
    &events[..n.max(0) as usize]
}

/// Accepts every connection waiting on `lfd`: `setup` readies the caller's
/// state for the new descriptor, then epoll watches it (or it is closed).
pub(crate) fn accept_all(epfd: RawFd, lfd: RawFd, mut setup: impl FnMut(RawFd)) {
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
        setup(c);
        if watch(epfd, c).is_err() {
            // SAFETY: c is ours and open.
            unsafe { libc::close(c) };
        }
    }
}

/// TCP_NODELAY, as redis-server sets on every client (and bench/redis_peers.py
/// runs iomux with --nodelay): without it Nagle holds a subscriber's next
/// frame until its previous one is acknowledged (delayed ACK) and sends them
/// as one segment; in the fan-out on a quiet machine that took 3.3 us of CPU
/// per delivered message instead of 5.75 (`resp-nagle`).
pub(crate) fn set_nodelay(fd: RawFd) {
    let on: libc::c_int = 1;
    // SAFETY: fd is an open socket; `on` lives across the call.
    unsafe {
        libc::setsockopt(
            fd,
            libc::IPPROTO_TCP,
            libc::TCP_NODELAY,
            (&on as *const libc::c_int).cast(),
            std::mem::size_of::<libc::c_int>() as libc::socklen_t,
        )
    };
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
    let proto = std::env::args().nth(3);
    if let Some(file_mode) = proto.as_deref().filter(|p| p.starts_with("file")) {
        let Some(path) = std::env::args().nth(4) else {
            return Err(io::Error::new(
                io::ErrorKind::InvalidInput,
                "the file floor needs the file: floor-peer ADDR epoll|uring file... PATH",
            ));
        };
        let run: Box<dyn FnOnce(TcpListener) -> io::Result<()>> = match (mode.as_str(), file_mode) {
            ("epoll", "file") => Box::new(move |l| file::run(l, &path, file::Body::Sendfile)),
            ("epoll", "file-sendfile") => Box::new(move |l| file::run(l, &path, file::Body::Sendfile)),
            ("epoll", "file-pieces") => Box::new(move |l| file::run(l, &path, file::Body::Pieces)),
            ("epoll", "file-nagle") => Box::new(move |l| file::run(l, &path, file::Body::SendfileNagle)),
            ("epoll", "file-pieces-more") => Box::new(move |l| file::run(l, &path, file::Body::PiecesMore)),
            ("epoll", "file-read") => Box::new(move |l| file::run(l, &path, file::Body::Pread)),
            ("epoll", "file-mem") => Box::new(move |l| file::run(l, &path, file::Body::Memory)),
            ("uring", "file-read") => Box::new(move |l| uring_file::run(l, &path, uring_file::Body::Read)),
            ("uring", "file-splice") => Box::new(move |l| uring_file::run(l, &path, uring_file::Body::Splice)),
            ("uring", "file-zc") => Box::new(move |l| uring_file::run(l, &path, uring_file::Body::ReadSendZc)),
            _ => {
                return Err(io::Error::new(
                    io::ErrorKind::InvalidInput,
                    format!(
                        "no file floor {file_mode:?} on {mode}: epoll has file, file-sendfile, file-pieces, file-read, file-mem, file-nagle, file-pieces-more; \
                         uring has file-read, file-splice, file-zc"
                    ),
                ))
            }
        };
        let listener = TcpListener::bind(&addr)?;
        println!("listening on {}", listener.local_addr()?);
        io::stdout().flush()?;
        return run(listener);
    }
    // (RESP, copy frames per subscriber, TCP_NODELAY)
    let (resp, copy_per_subscriber, nodelay) = match proto.as_deref() {
        None | Some("http") => (false, false, false),
        Some("resp") => (true, false, true),
        Some("resp-copy") if mode == "epoll" => (true, true, true),
        Some("resp-nagle") if mode == "epoll" => (true, false, false),
        Some(other) => return Err(io::Error::new(
            io::ErrorKind::InvalidInput,
            format!(
                "unknown protocol {other:?}: use http, resp or (epoll only) resp-copy, resp-nagle, file PATH, file-MODE PATH (see src/file.rs)"
            ),
        )),
    };
    let listener = TcpListener::bind(&addr)?;
    if mode == "uring" {
        println!("listening on {}", listener.local_addr()?);
        io::stdout().flush()?;
        return if resp {
            uring::run_resp(listener)
        } else {
            uring::run(listener)
        };
    }
    if mode != "epoll" {
        return Err(io::Error::new(
            io::ErrorKind::InvalidInput,
            format!("unknown mode {mode:?}: use epoll or uring"),
        ));
    }
    let (lfd, epfd) = epoll_listening(&listener)?;
    println!("listening on {}", listener.local_addr()?);
    io::stdout().flush()?;

    // Per descriptor: the last bytes seen (HTTP: blank-line detection across
    // reads), the start of an incomplete command (RESP).
    let mut tails: Vec<u32> = Vec::new();
    let mut carried: Vec<Vec<u8>> = Vec::new();
    let mut hub = resp::Hub::default();
    // resp-copy: per descriptor, its own output buffer.
    let mut outbufs: Vec<Vec<u8>> = Vec::new();
    let mut events = vec![libc::epoll_event { events: 0, u64: 0 }; 1024];
    let mut buf = vec![0u8; 64 * 1024];
    let mut out: Vec<u8> = Vec::with_capacity(64 * 1024);
    loop {
        for ev in wait(epfd, &mut events) {
            let fd = ev.u64 as RawFd;
            if fd == lfd {
                accept_all(epfd, lfd, |c| {
                    if tails.len() <= c as usize {
                        tails.resize(c as usize + 1, 0);
                        carried.resize_with(c as usize + 1, Vec::new);
                    }
                    tails[c as usize] = 0;
                    carried[c as usize].clear();
                    if resp {
                        hub.renew(c);
                    }
                    if nodelay {
                        set_nodelay(c);
                    }
                    if copy_per_subscriber {
                        if outbufs.len() <= c as usize {
                            outbufs.resize_with(c as usize + 1, Vec::new);
                        }
                        outbufs[c as usize] = Vec::with_capacity(16 * 1024);
                    }
                });
                continue;
            }
            // RESP: an incomplete command read before goes first (a command
            // longer than the buffer leaves no room and ends the connection).
            let carry = &mut carried[fd as usize];
            let kept = carry.len();
            buf[..kept].copy_from_slice(carry);
            carry.clear();
            let room = &mut buf[kept..];
            // SAFETY: `room` is writable memory of its length.
            let got = unsafe { libc::recv(fd, room.as_mut_ptr().cast(), room.len(), 0) };
            if got < 0 && io::Error::last_os_error().kind() == io::ErrorKind::WouldBlock {
                carry.extend_from_slice(&buf[..kept]);
                continue;
            }
            if got <= 0 {
                hub.renew(fd);
                // SAFETY: fd is ours and open; close also removes it from epoll.
                unsafe { libc::close(fd) };
                continue;
            }
            let data = &buf[..kept + got as usize];
            out.clear();
            if resp {
                let used = hub.serve(fd, data, &mut out);
                carry.extend_from_slice(&data[used..]);
                // One send per subscriber for every frame this read published.
                hub.deliver(|frames, subscribers| {
                    for s in subscribers {
                        let frames = if copy_per_subscriber {
                            let own = &mut outbufs[s.fd as usize];
                            own.clear();
                            own.extend_from_slice(frames);
                            own
                        } else {
                            frames
                        };
                        // SAFETY: `frames` is a live slice of its length.
                        unsafe {
                            libc::send(
                                s.fd,
                                frames.as_ptr().cast(),
                                frames.len(),
                                libc::MSG_NOSIGNAL,
                            )
                        };
                    }
                });
            } else {
                for _ in 0..count_requests(&mut tails[fd as usize], data) {
                    out.extend_from_slice(RESPONSE);
                }
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
