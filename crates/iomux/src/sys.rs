//! Small wrappers shared by the backends: errno checks and timeout arithmetic.

use std::io;
use std::os::fd::{AsFd, AsRawFd, FromRawFd, OwnedFd, RawFd};
use std::time::{Duration, Instant};

/// Turn a libc return value into `io::Result`, reading errno on -1.
#[inline]
pub(crate) fn cvt(ret: libc::c_int) -> io::Result<libc::c_int> {
    if ret == -1 {
        Err(io::Error::last_os_error())
    } else {
        Ok(ret)
    }
}

/// Take ownership of a descriptor a syscall just returned.
pub(crate) fn owned(fd: RawFd) -> OwnedFd {
    // SAFETY: callers pass a descriptor that a successful syscall just created
    // and that nothing else owns.
    unsafe { OwnedFd::from_raw_fd(fd) }
}

/// Attach what was being attempted to an OS error, keeping its kind.
pub(crate) fn context(err: io::Error, what: impl std::fmt::Display) -> io::Error {
    io::Error::new(err.kind(), format!("{what}: {err}"))
}

/// Name the descriptor in a failed registration's error, with advice for a
/// descriptor that is not open (EBADF).
pub(crate) fn registration_error(fd: RawFd, what: &str, err: io::Error) -> io::Error {
    if err.raw_os_error() == Some(libc::EBADF) {
        io::Error::new(
            io::ErrorKind::InvalidInput,
            format!("descriptor {fd} is not open; register open descriptors and deregister them before closing"),
        )
    } else {
        context(err, format_args!("{what} fd {fd}"))
    }
}

/// Succeed when `fd` is an open descriptor (else the OS error, EBADF).
/// select and poll learn of a bad descriptor only when they wait (EBADF,
/// POLLNVAL), so they check when registering.
pub(crate) fn check_fd_open(fd: RawFd) -> io::Result<()> {
    // SAFETY: F_GETFD only reads the descriptor's flags.
    cvt(unsafe { libc::fcntl(fd, libc::F_GETFD) }).map(drop)
}

/// Run a waiting syscall until it reports something or its timeout has truly
/// passed: EINTR is retried with the remaining time, and a zero return before
/// the deadline (a rounding or spurious wake-up) waits again, so a wait never
/// ends early.
pub(crate) fn wait_honestly(
    timeout: Option<Duration>,
    mut wait: impl FnMut(Option<Duration>) -> io::Result<usize>,
) -> io::Result<usize> {
    let deadline = match timeout {
        Some(t) if !t.is_zero() => Instant::now().checked_add(t),
        _ => None,
    };
    let mut remaining = timeout;
    loop {
        match wait(remaining) {
            Ok(n) if n > 0 || remaining == Some(Duration::ZERO) => return Ok(n),
            Ok(_) => {}
            Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
            Err(e) => return Err(e),
        }
        if let Some(deadline) = deadline {
            let now = Instant::now();
            if now >= deadline {
                return Ok(0);
            }
            remaining = Some(deadline - now);
        }
    }
}

/// A duration as a `timespec`, saturating instead of overflowing.
pub(crate) fn timespec(d: Duration) -> libc::timespec {
    libc::timespec {
        tv_sec: d.as_secs().min(libc::time_t::MAX as u64) as libc::time_t,
        tv_nsec: d.subsec_nanos() as libc::c_long,
    }
}

/// The pointer a syscall takes for an optional timeout: null waits for ever.
pub(crate) fn timespec_ptr(ts: &Option<libc::timespec>) -> *const libc::timespec {
    ts.as_ref()
        .map_or(std::ptr::null(), |t| t as *const libc::timespec)
}

/// One `ppoll(2)` over `fds` (`None` waits for ever); returns how many have
/// events. The signal mask is left as it is.
pub(crate) fn ppoll(fds: &mut [libc::pollfd], timeout: Option<Duration>) -> io::Result<usize> {
    let ts = timeout.map(timespec);
    let ts_ptr = timespec_ptr(&ts);
    // SAFETY: `fds` is a live array of `fds.len()` pollfds; `ts_ptr` is null or
    // a live timespec; a null sigmask keeps the current mask.
    let n = unsafe {
        libc::ppoll(
            fds.as_mut_ptr(),
            fds.len() as libc::nfds_t,
            ts_ptr,
            std::ptr::null(),
        )
    };
    if n < 0 {
        Err(io::Error::last_os_error())
    } else {
        Ok(n as usize)
    }
}

/// Set `O_NONBLOCK` on a descriptor (a socket, a pipe, anything [`AsFd`]).
///
/// ```
/// let (a, _b) = std::os::unix::net::UnixStream::pair().unwrap();
/// iomux::net::set_nonblocking(&a).unwrap();
/// ```
pub fn set_nonblocking(fd: impl AsFd) -> io::Result<()> {
    let fd = fd.as_fd().as_raw_fd();
    let failed = |e| context(e, format_args!("setting O_NONBLOCK on descriptor {fd}"));
    // SAFETY: fcntl with F_GETFL/F_SETFL only reads and sets flags of `fd`,
    // a descriptor borrowed for this call.
    let flags = cvt(unsafe { libc::fcntl(fd, libc::F_GETFL) }).map_err(failed)?;
    if flags & libc::O_NONBLOCK == 0 {
        // SAFETY: as above.
        cvt(unsafe { libc::fcntl(fd, libc::F_SETFL, flags | libc::O_NONBLOCK) }).map_err(failed)?;
    }
    Ok(())
}
