//! Socket I/O shared by the engines: admitting an accepted connection, reads
//! into spare capacity, writes that never raise SIGPIPE, corking, and the
//! blocking per-connection loop.

use crate::reactor::LoopStats;
use crate::shutdown::{ConnLimit, Shutdown};
use crate::Config;
use iomux_proto::Protocol;
use std::io;
use std::net::{Shutdown as HalfClose, TcpStream};
use std::os::fd::{AsRawFd, RawFd};
use std::time::{Duration, Instant};

/// Size of one read.
pub(crate) const READ_CHUNK: usize = 64 * 1024;

/// Input a protocol may leave unconsumed before the connection is dropped;
/// protocols enforce their own, smaller limits, this is the engine's backstop.
pub(crate) const MAX_PENDING_INPUT: usize = 2 * 1024 * 1024;

/// How long a closing connection keeps draining its peer's input after our
/// FIN, so unread bytes do not turn the close into a reset that destroys the
/// response in flight.
pub(crate) const LINGER: Duration = Duration::from_secs(2);

/// Count a newly accepted connection and take a place for it under
/// `--max-conns`. False when it is refused (counted in `stats.refused`): the
/// server is `draining` or full. The caller then drops the socket, which
/// closes it; an admitted connection gives its place back with
/// [`ConnLimit::release`] when it closes.
pub(crate) fn admit(max_conns: &ConnLimit, draining: bool, stats: &mut LoopStats) -> bool {
    stats.accepts += 1;
    if draining || !max_conns.try_acquire() {
        stats.refused += 1;
        return false;
    }
    true
}

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

/// The send deadline of the non-blocking engines: after a send of `sent`
/// bytes in a pass that started at `now`, the connection counts as active
/// again (`last_active` moves to `now`) once its output is all sent, or once
/// the peer has taken `floor` bytes since it last counted as active (tracked
/// in `progress`); a peer reading a few bytes at a time (a slow-read attack)
/// does not extend its deadline.
///
/// The stamp never moves back: the read earlier in the same pass may have
/// stamped the fresh time its bytes were taken, and a pass that lost the CPU
/// (a stopped or starved server) would otherwise turn that stamp a whole
/// stall old and let a drain take a peer in mid-message for a quiet one (see
/// `shutdown::peer_quiet`).
pub(crate) fn note_send(
    progress: &mut usize,
    last_active: &mut Instant,
    now: Instant,
    sent: usize,
    all_sent: bool,
    floor: usize,
) {
    *progress += sent;
    if all_sent || *progress >= floor {
        *progress = 0;
        *last_active = (*last_active).max(now);
    }
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

/// Serve one connection on a blocking socket until it closes: the loop of the
/// thread-per-connection and one-at-a-time engines.
pub(crate) fn serve_blocking<P: Protocol>(
    stream: TcpStream,
    mut proto: P,
    config: &Config,
    shutdown: &Shutdown,
) {
    let guard = shutdown.watch_conn(stream.as_raw_fd());
    if config.nodelay {
        let _ = stream.set_nodelay(true);
    }
    // The send deadline: one blocked send lasts at most this long (see write_all).
    let _ = stream.set_write_timeout(Some(config.idle_timeout));
    let send_floor = config.output_high_water;
    let fd = stream.as_raw_fd();
    let mut input: Vec<u8> = Vec::with_capacity(READ_CHUNK);
    let mut out: Vec<u8> = Vec::new();
    // The deadline restarts whenever the protocol is between messages, so a
    // trickled request head cannot extend it.
    let mut deadline = Instant::now() + config.idle_timeout;
    let mut drained = false;
    loop {
        let now = Instant::now();
        if now >= deadline {
            proto.on_timeout(&mut out);
            let _ = write_all(&stream, &out, config.cork, send_floor);
            break;
        }
        match wait_readable(fd, deadline - now) {
            Ok(true) => {}
            Ok(false) => continue,
            Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
            Err(_) => return,
        }
        // Busy before the bytes leave the socket: until this mark a drain
        // sees them waiting there, from it on it sees a busy connection, so
        // it never takes a peer in mid-message for a quiet one.
        guard.mark(false);
        let _ = stream.set_read_timeout(Some(deadline - now));
        let was_idle = proto.is_idle();
        match read_append(fd, &mut input, READ_CHUNK) {
            Ok(0) => {
                proto.on_eof(&input, &mut out);
                let _ = write_all(&stream, &out, config.cork, send_floor);
                break;
            }
            Ok(_) => {}
            Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
            Err(e)
                if matches!(
                    e.kind(),
                    io::ErrorKind::WouldBlock | io::ErrorKind::TimedOut
                ) =>
            {
                // Nothing was there after all: as quiet as before.
                guard.mark(proto.is_idle() && input.is_empty());
                continue;
            }
            Err(_) => return,
        }
        if !drained && shutdown.is_triggered() {
            drained = true;
            proto.on_drain();
        }
        let step = proto.on_input(&input, &mut out);
        input.drain(..step.consumed);
        // Busy while output is owed: a drain must not count a blocked send as quiet.
        let idle = proto.is_idle() && input.is_empty();
        guard.mark(idle && out.is_empty());
        if was_idle || proto.is_idle() {
            deadline = Instant::now() + config.idle_timeout;
        }
        if write_all(&stream, &out, config.cork, send_floor).is_err() {
            return;
        }
        out.clear();
        if step.close || input.len() > MAX_PENDING_INPUT {
            break;
        }
        // A drain closes this connection once it is idle and quiet.
        guard.mark(idle);
    }
    drop(guard);
    linger_close(stream);
}

/// Wait until `fd` has input (or its end) to read, for at most `timeout`;
/// false when the time ran out. The bytes stay in the socket.
fn wait_readable(fd: RawFd, timeout: Duration) -> io::Result<bool> {
    let mut pfd = libc::pollfd {
        fd,
        events: libc::POLLIN,
        revents: 0,
    };
    // Rounded up to whole milliseconds, so the wait never ends early.
    let ms = timeout.as_nanos().div_ceil(1_000_000).min(i32::MAX as u128) as i32;
    // SAFETY: poll reads and writes one live pollfd.
    let n = unsafe { libc::poll(&mut pfd, 1, ms) };
    if n < 0 {
        Err(io::Error::last_os_error())
    } else {
        Ok(n > 0)
    }
}

/// Send all of `data` on a blocking socket whose send timeout is the send
/// deadline. A send that returns short (or EAGAIN) was blocked for the whole
/// deadline; if the peer took less than `floor` bytes in that time it is
/// reading too slowly to keep (a slow-read attack), and the send fails.
fn write_all(stream: &TcpStream, data: &[u8], cork: bool, floor: usize) -> io::Result<()> {
    if data.is_empty() {
        return Ok(());
    }
    let fd = stream.as_raw_fd();
    if cork {
        set_cork(fd, true);
    }
    let mut sent = 0;
    let result = loop {
        if sent == data.len() {
            break Ok(());
        }
        match send(fd, &data[sent..]) {
            Ok(n) => {
                sent += n;
                if sent < data.len() && n < floor {
                    break Err(io::Error::new(
                        io::ErrorKind::TimedOut,
                        "peer reads too slowly: send deadline passed",
                    ));
                }
            }
            Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
            Err(e) => break Err(e),
        }
    };
    if cork {
        set_cork(fd, false);
    }
    result
}

/// Send our FIN, then read and discard until the peer's FIN (or `LINGER`),
/// so the close does not reset a response the peer has not read yet.
fn linger_close(stream: TcpStream) {
    if stream.shutdown(HalfClose::Write).is_err() {
        return;
    }
    let until = Instant::now() + LINGER;
    let mut sink = [0u8; 4096];
    while let Some(left) = until
        .checked_duration_since(Instant::now())
        .filter(|d| !d.is_zero())
    {
        let _ = stream.set_read_timeout(Some(left));
        // SAFETY: reads into a live stack buffer of its own length.
        let n = unsafe { libc::read(stream.as_raw_fd(), sink.as_mut_ptr().cast(), sink.len()) };
        if n <= 0 {
            break;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn admit_counts_accepts_and_refuses_past_the_cap_or_while_draining() {
        let limit = Shutdown::new().conn_limit(Some(1));
        let mut stats = LoopStats::default();
        assert!(admit(&limit, false, &mut stats));
        assert!(!admit(&limit, false, &mut stats), "over --max-conns");
        limit.release();
        assert!(!admit(&limit, true, &mut stats), "draining");
        assert!(
            admit(&limit, false, &mut stats),
            "the released place is free"
        );
        assert_eq!((stats.accepts, stats.refused), (4, 2));
    }
}
