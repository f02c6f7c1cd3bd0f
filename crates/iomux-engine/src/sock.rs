//! The few socket calls the non-blocking engines make, on raw descriptors:
//! reads into a buffer's spare capacity, sends that never raise SIGPIPE,
//! corking, the front of a connection's output queue (bytes, or a file
//! region with `sendfile`). The calls made for every request (`recv`,
//! `send`, `sendfile`) go through rustix, straight to the kernel: glibc's
//! wrappers of them are cancellation points, and switching cancellation off
//! and on around each call was about 60 ns of a 64 KiB file request's
//! 10 µs (`perf`). No connection rules live here.

use crate::session::Front;
use iomux_proto::FileRegion;
use rustix::net::{RecvFlags, SendFlags};
use socket2::{Domain, SockRef, Socket, Type};
use std::io;
use std::net::SocketAddr;
use std::os::fd::{BorrowedFd, OwnedFd, RawFd};

/// Append up to `max` bytes received from socket `fd` to `buf`.
///
/// `recv` rather than `read`: it skips the VFS layer (`vfs_read`,
/// `fdget_pos`: about 3% of the server's `perf` samples at 100 keep-alive
/// HTTP connections).
pub(crate) fn read_append(fd: RawFd, buf: &mut Vec<u8>, max: usize) -> io::Result<usize> {
    buf.reserve(max);
    let spare = buf.spare_capacity_mut();
    let want = spare.len().min(max);
    let ((filled, _), _) = rustix::net::recv(borrow(fd), &mut spare[..want], RecvFlags::empty())?;
    let n = filled.len();
    // SAFETY: the kernel initialised the first `n` spare bytes.
    unsafe { buf.set_len(buf.len() + n) };
    Ok(n)
}

/// `fd` for the length of one call.
fn borrow<'a>(fd: RawFd) -> BorrowedFd<'a> {
    // SAFETY: every caller passes a descriptor its connection holds open
    // across the call the borrow is made for.
    unsafe { BorrowedFd::borrow_raw(fd) }
}

/// One `send` with MSG_NOSIGNAL (a peer that went away is an error, not a
/// signal) and `flags` (MSG_MORE).
pub(crate) fn send_flags(fd: RawFd, data: &[u8], flags: libc::c_int) -> io::Result<usize> {
    let flags = SendFlags::from_bits_retain((libc::MSG_NOSIGNAL | flags) as u32);
    Ok(rustix::net::send(borrow(fd), data, flags)?)
}

/// Send as much of `data` as the kernel takes now; returns the bytes sent
/// (fewer than `data.len()` means the kernel pushed back).
pub(crate) fn send_available(fd: RawFd, data: &[u8]) -> io::Result<usize> {
    send_available_flags(fd, data, 0)
}

fn send_available_flags(fd: RawFd, data: &[u8], flags: libc::c_int) -> io::Result<usize> {
    let mut sent = 0;
    while sent < data.len() {
        match send_flags(fd, &data[sent..], flags) {
            Ok(n) => sent += n,
            Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
            Err(e) if e.kind() == io::ErrorKind::WouldBlock => break,
            Err(e) => return Err(e),
        }
    }
    Ok(sent)
}

/// The error of a file region whose file ended `skip` bytes into the
/// region, before the region did (it shrank while being sent): the
/// connection must close, since the peer was promised more bytes than exist.
pub(crate) fn file_cut_short(region: &FileRegion, skip: usize) -> io::Error {
    let mut region = region.clone();
    region.advance(skip as u64);
    io::Error::new(
        io::ErrorKind::UnexpectedEof,
        format!(
            "the file ended at byte {} with {} bytes of its region still to send (it shrank while being sent)",
            region.offset(),
            region.len()
        ),
    )
}

/// Whether a send failed because a file region's file ended early
/// ([`file_cut_short`]); engines count it.
pub(crate) fn is_file_cut_short(e: &io::Error) -> bool {
    e.kind() == io::ErrorKind::UnexpectedEof
}

/// One `sendfile` of up to `max` bytes of `region`, starting `skip` bytes
/// into it, to socket `fd`; returns the bytes sent. A file that has no
/// byte left there is [`file_cut_short`].
pub(crate) fn sendfile_once(
    fd: RawFd,
    region: &FileRegion,
    skip: usize,
    max: usize,
) -> io::Result<usize> {
    let left = region.len().saturating_sub(skip as u64);
    let want = max.min(usize::try_from(left).unwrap_or(usize::MAX));
    if want == 0 {
        return Ok(0);
    }
    let mut offset = region.offset() + skip as u64;
    loop {
        match rustix::fs::sendfile(borrow(fd), region.file(), Some(&mut offset), want) {
            Ok(0) => return Err(file_cut_short(region, skip)),
            Ok(n) => return Ok(n),
            Err(rustix::io::Errno::INTR) => {}
            Err(e) => return Err(e.into()),
        }
    }
}

/// Read up to `max` bytes of the front of `region` into `buf` (appended;
/// a positioned read, so the file's position is never shared); returns how
/// many. A file with no byte left there is [`file_cut_short`].
pub(crate) fn read_region(region: &FileRegion, buf: &mut Vec<u8>, max: usize) -> io::Result<usize> {
    let want = max.min(usize::try_from(region.len()).unwrap_or(usize::MAX));
    buf.reserve(want);
    let spare = &mut buf.spare_capacity_mut()[..want];
    let n = loop {
        match rustix::io::pread(region.file(), &mut *spare, region.offset()) {
            Ok((filled, _)) => break filled.len(),
            Err(rustix::io::Errno::INTR) => {}
            Err(e) => return Err(e.into()),
        }
    };
    if n == 0 && want > 0 {
        return Err(file_cut_short(region, 0));
    }
    // SAFETY: the kernel initialised the first `n` spare bytes.
    unsafe { buf.set_len(buf.len() + n) };
    Ok(n)
}

/// TCP_NODELAY on a socket about to send a file, unless `nodelay` says it
/// is on already. A file's body goes out in several sends, each ending in
/// a segment shorter than loopback's 64 KiB MSS; with Nagle on, the server
/// spent 17 us of CPU per 64 KiB file instead of 9 (`bench/file_paths.py`,
/// the floor's `file-nagle` against `file-sendfile`), and a file read into
/// a buffer piece by piece (where `sendfile` cannot serve) waited for the
/// peer's delayed ACK. Coalescing the pieces with MSG_MORE instead doubled
/// the server's CPU per 1 MiB.
pub(crate) fn nodelay_for_files(fd: RawFd, nodelay: &mut bool) -> io::Result<()> {
    if !*nodelay {
        rustix::net::sockopt::set_tcp_nodelay(borrow(fd), true)?;
        *nodelay = true;
    }
    Ok(())
}

/// `sendfile` from `region` to non-blocking socket `fd` until `max` bytes
/// are sent or the kernel pushes back; returns the bytes sent. A short
/// `sendfile` is tried again: it may mean a full socket or the file's end,
/// and only the next call tells which ([`file_cut_short`]).
fn sendfile_available(fd: RawFd, region: &FileRegion, max: usize) -> io::Result<usize> {
    let want = max.min(usize::try_from(region.len()).unwrap_or(usize::MAX));
    let mut sent = 0;
    while sent < want {
        match sendfile_once(fd, region, sent, want - sent) {
            Ok(n) => sent += n,
            Err(e) if e.kind() == io::ErrorKind::WouldBlock => break,
            Err(e) => return Err(e),
        }
    }
    Ok(sent)
}

/// Send the front of a connection's output queue: as many of its bytes as
/// the kernel takes now (with MSG_MORE when a file region follows, so a
/// response head and its body share segments), or up to `file_max` bytes
/// of its file region with `sendfile`, whatever its size (docs/files.md:
/// copying 512 KiB to 2 MiB through user space instead cost the server 3x
/// as much on a quiet machine), TCP_NODELAY on first
/// ([`nodelay_for_files`]; `nodelay` says whether it is). Returns the bytes
/// sent and the bytes tried: fewer sent than tried means the kernel pushed
/// back.
pub(crate) fn send_front(
    fd: RawFd,
    front: Front,
    file_max: usize,
    nodelay: &mut bool,
) -> io::Result<(usize, usize)> {
    match front {
        Front::Bytes { bytes, more } => {
            let flags = if more { libc::MSG_MORE } else { 0 };
            Ok((send_available_flags(fd, bytes, flags)?, bytes.len()))
        }
        Front::File(region) => {
            let tried = file_max.min(usize::try_from(region.len()).unwrap_or(usize::MAX));
            nodelay_for_files(fd, nodelay)?;
            Ok((sendfile_available(fd, region, tried)?, tried))
        }
    }
}

/// TCP_CORK on or off (a failure only loses the batching hint).
pub(crate) fn set_cork(fd: RawFd, on: bool) {
    let _ = rustix::net::sockopt::set_tcp_cork(borrow(fd), on);
}

/// Send our FIN (the peer reads the end of the stream).
pub(crate) fn shutdown_write(fd: RawFd) -> io::Result<()> {
    // SAFETY: shutdown on a descriptor the caller owns; a bad one only fails.
    if unsafe { libc::shutdown(fd, libc::SHUT_WR) } != 0 {
        return Err(io::Error::last_os_error());
    }
    Ok(())
}

/// Whether bytes from the peer wait unread in `fd`'s receive queue.
pub(crate) fn input_waiting(fd: RawFd) -> bool {
    let mut queued: libc::c_int = 0;
    // SAFETY: FIONREAD writes one int to a live local; a bad fd only fails.
    let rc = unsafe { libc::ioctl(fd, libc::FIONREAD, &mut queued) };
    rc == 0 && queued > 0
}

/// Start a non-blocking TCP connect to `addr`: the socket, connected or
/// connecting (see [`connect_outcome`]).
pub(crate) fn connect_nonblocking(addr: SocketAddr) -> io::Result<OwnedFd> {
    let socket = Socket::new(
        Domain::for_address(addr),
        Type::STREAM.nonblocking().cloexec(),
        None,
    )?;
    match socket.connect(&addr.into()) {
        Ok(()) => {}
        Err(e) if e.raw_os_error() == Some(libc::EINPROGRESS) => {}
        Err(e) => return Err(e),
    }
    Ok(socket.into())
}

/// Where a non-blocking connect stands once its socket reported an event:
/// established (true), still in progress (false, a spurious wake), or
/// failed (the socket's pending error: refused, unreachable, ...).
pub(crate) fn connect_outcome(fd: BorrowedFd) -> io::Result<bool> {
    let socket = SockRef::from(&fd);
    if let Some(e) = socket.take_error()? {
        return Err(e);
    }
    match socket.peer_addr() {
        Ok(_) => Ok(true),
        Err(e) if e.raw_os_error() == Some(libc::ENOTCONN) => Ok(false),
        Err(e) => Err(e),
    }
}
