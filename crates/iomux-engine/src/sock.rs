//! The few socket calls the non-blocking engines make, on raw descriptors:
//! reads into a buffer's spare capacity, sends that never raise SIGPIPE,
//! corking. libc only; no connection rules live here.

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
    // SAFETY: `spare` is writable memory of at least `want` bytes owned by `buf`.
    let n = unsafe { libc::recv(fd, spare.as_mut_ptr().cast(), want, 0) };
    if n < 0 {
        return Err(io::Error::last_os_error());
    }
    // SAFETY: the kernel initialised the first `n` spare bytes.
    unsafe { buf.set_len(buf.len() + n as usize) };
    Ok(n as usize)
}

/// One `send` with MSG_NOSIGNAL: a peer that went away is an error, not a signal.
pub(crate) fn send(fd: RawFd, data: &[u8]) -> io::Result<usize> {
    // SAFETY: `data` is a live slice of `data.len()` bytes.
    let n = unsafe { libc::send(fd, data.as_ptr().cast(), data.len(), libc::MSG_NOSIGNAL) };
    if n < 0 {
        Err(io::Error::last_os_error())
    } else {
        Ok(n as usize)
    }
}

/// Send as much of `data` as the kernel takes now; returns the bytes sent
/// (fewer than `data.len()` means the kernel pushed back).
pub(crate) fn send_available(fd: RawFd, data: &[u8]) -> io::Result<usize> {
    let mut sent = 0;
    while sent < data.len() {
        match send(fd, &data[sent..]) {
            Ok(n) => sent += n,
            Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
            Err(e) if e.kind() == io::ErrorKind::WouldBlock => break,
            Err(e) => return Err(e),
        }
    }
    Ok(sent)
}

/// TCP_CORK on or off.
pub(crate) fn set_cork(fd: RawFd, on: bool) {
    let v: libc::c_int = on.into();
    // SAFETY: passes a live c_int of the right size for TCP_CORK; a failure
    // only loses the batching hint.
    unsafe {
        libc::setsockopt(
            fd,
            libc::IPPROTO_TCP,
            libc::TCP_CORK,
            (&v as *const libc::c_int).cast(),
            4,
        );
    }
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
