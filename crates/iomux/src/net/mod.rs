//! Socket set-up and the accept discipline shared by every engine.

mod socket;

pub use socket::{Accept, ListenAddr, Listener, Stream};

use crate::sys::{context, cvt, owned};
use socket2::{Domain, Protocol, Socket, Type};
use std::io;
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::os::fd::{OwnedFd, RawFd};

/// How to open a listening socket.
///
/// ```
/// use iomux::net::ListenOptions;
/// let l = ListenOptions::new("127.0.0.1:0".parse().unwrap()).nonblocking(true).bind().unwrap();
/// assert!(l.local_addr().unwrap().port() != 0);
/// ```
#[derive(Debug, Clone)]
pub struct ListenOptions {
    addr: SocketAddr,
    backlog: i32,
    reuse_port: bool,
    nonblocking: bool,
}

impl ListenOptions {
    /// Listen on `addr` with a backlog of 1024, blocking, without SO_REUSEPORT.
    ///
    /// ```
    /// let o = iomux::net::ListenOptions::new("127.0.0.1:0".parse().unwrap());
    /// ```
    pub fn new(addr: SocketAddr) -> ListenOptions {
        ListenOptions {
            addr,
            backlog: 1024,
            reuse_port: false,
            nonblocking: false,
        }
    }

    /// The listen backlog (the kernel caps it at `net.core.somaxconn`).
    ///
    /// ```
    /// let o = iomux::net::ListenOptions::new("127.0.0.1:0".parse().unwrap()).backlog(16);
    /// ```
    pub fn backlog(mut self, backlog: i32) -> ListenOptions {
        self.backlog = backlog;
        self
    }

    /// Set SO_REUSEPORT so several listeners (one per event loop) share the
    /// port and the kernel spreads connections between them.
    ///
    /// ```
    /// let o = iomux::net::ListenOptions::new("127.0.0.1:0".parse().unwrap()).reuse_port(true);
    /// ```
    pub fn reuse_port(mut self, on: bool) -> ListenOptions {
        self.reuse_port = on;
        self
    }

    /// Put the listener in non-blocking mode (event loops need it).
    ///
    /// ```
    /// let o = iomux::net::ListenOptions::new("127.0.0.1:0".parse().unwrap()).nonblocking(true);
    /// ```
    pub fn nonblocking(mut self, on: bool) -> ListenOptions {
        self.nonblocking = on;
        self
    }

    /// Bind and listen, naming the address in any error.
    ///
    /// ```
    /// let l = iomux::net::ListenOptions::new("127.0.0.1:0".parse().unwrap()).bind().unwrap();
    /// ```
    pub fn bind(&self) -> io::Result<TcpListener> {
        let socket = Socket::new(
            Domain::for_address(self.addr),
            Type::STREAM.cloexec(),
            Some(Protocol::TCP),
        )
        .map_err(|e| context(e, format_args!("cannot open a socket for {}", self.addr)))?;
        socket.set_reuse_address(true)?;
        if self.reuse_port {
            socket.set_reuse_port(true)?;
        }
        socket.bind(&self.addr.into()).map_err(|e| {
            let hint = bind_hint(e.kind());
            io::Error::new(
                e.kind(),
                format!("cannot listen on {}: {e}{hint}", self.addr),
            )
        })?;
        socket
            .listen(self.backlog)
            .map_err(|e| context(e, format_args!("listen on {}", self.addr)))?;
        socket.set_nonblocking(self.nonblocking)?;
        Ok(socket.into())
    }
}

/// What one accept attempt on a non-blocking listener produced.
///
/// ```
/// use iomux::net::{Accepted, Acceptor, ListenOptions};
/// let l = ListenOptions::new("127.0.0.1:0".parse().unwrap()).nonblocking(true).bind().unwrap();
/// // Nobody connected: the queue is empty.
/// assert!(matches!(Acceptor::new().unwrap().accept(&l).unwrap(), Accepted::Drained));
/// ```
#[derive(Debug)]
pub enum Accepted<C = TcpStream> {
    /// A new connection, already non-blocking and close-on-exec.
    Conn(C),
    /// The queue is empty (EAGAIN): wait for readability again.
    Drained,
    /// The descriptor limit is reached (EMFILE/ENFILE) and a pending connection
    /// was accepted and closed with the reserve descriptor, so the listener does
    /// not stay readable and spin the loop.
    Shed,
}

/// Accepts connections following the non-blocking discipline: transient errors
/// (ECONNABORTED, EPROTO, EINTR and the network errors accept(2) passes on) are
/// skipped, and when descriptors run out a reserve descriptor is given up to
/// accept-and-close the waiting connection, so a level-triggered listener does
/// not spin and an edge-triggered one is drained.
///
/// ```
/// use iomux::net::{Acceptor, Accepted, ListenOptions};
/// let l = ListenOptions::new("127.0.0.1:0".parse().unwrap()).nonblocking(true).bind().unwrap();
/// let mut acceptor = Acceptor::new().unwrap();
/// let _c = std::net::TcpStream::connect(l.local_addr().unwrap()).unwrap();
/// let mut got = None;
/// for _ in 0..1000 {
///     match acceptor.accept(&l).unwrap() {
///         Accepted::Conn(s) => { got = Some(s); break }
///         _ => std::thread::sleep(std::time::Duration::from_millis(1)),
///     }
/// }
/// assert!(got.is_some());
/// ```
#[derive(Debug)]
pub struct Acceptor {
    reserve: Option<OwnedFd>,
    /// Connections shed because descriptors ran out.
    pub shed: u64,
}

fn open_reserve() -> Option<OwnedFd> {
    std::fs::File::open("/dev/null").ok().map(OwnedFd::from)
}

impl Acceptor {
    /// An acceptor holding one reserve descriptor.
    ///
    /// ```
    /// let a = iomux::net::Acceptor::new().unwrap();
    /// ```
    pub fn new() -> io::Result<Acceptor> {
        Ok(Acceptor {
            reserve: open_reserve(),
            shed: 0,
        })
    }

    /// Try one accept on a non-blocking `listener`; call it until
    /// [`Accepted::Drained`] after each readiness report. A blocking listener
    /// is refused (`InvalidInput`) rather than left to block the event loop.
    ///
    /// ```
    /// use iomux::net::{Accepted, Acceptor, ListenOptions};
    /// let l = ListenOptions::new("127.0.0.1:0".parse().unwrap()).nonblocking(true).bind().unwrap();
    /// let mut acceptor = Acceptor::new().unwrap();
    /// while let Accepted::Conn(_) | Accepted::Shed = acceptor.accept(&l).unwrap() {}
    /// ```
    ///
    /// Any [`Accept`] listener: `TcpListener`, `UnixListener`, or a
    /// [`Listener`] of either family.
    pub fn accept<L: Accept>(&mut self, listener: &L) -> io::Result<Accepted<L::Conn>> {
        self.check_nonblocking(listener.as_raw_fd())?;
        loop {
            match accept_raw(listener.as_raw_fd()) {
                Ok(fd) => {
                    let stream = socket::adopt_accepted(listener, fd);
                    if self.reserve.is_none() {
                        self.reserve = open_reserve();
                    }
                    return Ok(Accepted::Conn(stream));
                }
                Err(e) => match e.raw_os_error() {
                    Some(libc::EAGAIN) => return Ok(Accepted::Drained),
                    Some(
                        libc::EINTR
                        | libc::ECONNABORTED
                        | libc::EPROTO
                        | libc::ENETDOWN
                        | libc::ENOPROTOOPT
                        | libc::EHOSTDOWN
                        | libc::ENONET
                        | libc::EHOSTUNREACH
                        | libc::EOPNOTSUPP
                        | libc::ENETUNREACH
                        | libc::EPERM,
                    ) => continue,
                    Some(libc::EMFILE | libc::ENFILE) => {
                        if self.reserve.take().is_none() {
                            // No reserve to give up: report it so the caller pauses accepting.
                            return Err(io::Error::new(
                                e.kind(),
                                format!("accept: {e}; raise the descriptor limit (`ulimit -n`) or admit fewer connections"),
                            ));
                        }
                        let shed = accept_raw(listener.as_raw_fd());
                        if let Ok(fd) = shed {
                            drop(owned(fd));
                            self.shed += 1;
                        }
                        self.reserve = open_reserve();
                        if shed.is_err() {
                            return Ok(Accepted::Drained);
                        }
                        return Ok(Accepted::Shed);
                    }
                    _ => return Err(context(e, "accept")),
                },
            }
        }
    }

    /// Refuse a blocking listener: a blocking one would make `accept` wait
    /// for a connection instead of reporting `Drained`. The flag is read
    /// from the descriptor on every call (one `fcntl`): a remembered
    /// descriptor number could since name another listener, and the flag of
    /// the same one can be changed.
    fn check_nonblocking(&mut self, listener: RawFd) -> io::Result<()> {
        // SAFETY: F_GETFL only reads the descriptor's flags.
        let flags = cvt(unsafe { libc::fcntl(listener, libc::F_GETFL) })
            .map_err(|e| context(e, format_args!("accept on descriptor {listener}")))?;
        if flags & libc::O_NONBLOCK == 0 {
            return Err(io::Error::new(
                io::ErrorKind::InvalidInput,
                format!("the listener on descriptor {listener} is blocking, so accept would wait for a connection; bind it with ListenOptions::nonblocking(true) or call set_nonblocking first"),
            ));
        }
        Ok(())
    }
}

/// What to do about a failed bind, appended to its error.
fn bind_hint(kind: io::ErrorKind) -> &'static str {
    match kind {
        io::ErrorKind::AddrInUse => {
            "; another process holds it: pick another address, or port 0 for any free one"
        }
        io::ErrorKind::PermissionDenied => "; ports below 1024 need privileges: pick a higher port",
        io::ErrorKind::AddrNotAvailable => {
            "; no interface of this machine has that address: use 127.0.0.1, \
             0.0.0.0 (every interface) or one of its own addresses"
        }
        _ => "",
    }
}

fn accept_raw(listener: RawFd) -> io::Result<RawFd> {
    // SAFETY: null address pointers are allowed; the flags make the new socket
    // non-blocking and close-on-exec atomically.
    cvt(unsafe {
        libc::accept4(
            listener,
            std::ptr::null_mut(),
            std::ptr::null_mut(),
            libc::SOCK_NONBLOCK | libc::SOCK_CLOEXEC,
        )
    })
}

/// Raise the soft descriptor limit to the hard one; returns the new soft limit.
///
/// ```
/// let n = iomux::net::raise_fd_limit().unwrap();
/// assert!(n > 0);
/// ```
pub fn raise_fd_limit() -> io::Result<u64> {
    let mut lim = libc::rlimit {
        rlim_cur: 0,
        rlim_max: 0,
    };
    // SAFETY: getrlimit writes into the live struct.
    cvt(unsafe { libc::getrlimit(libc::RLIMIT_NOFILE, &mut lim) })?;
    if lim.rlim_cur < lim.rlim_max {
        lim.rlim_cur = lim.rlim_max;
        // SAFETY: setrlimit reads the live struct.
        cvt(unsafe { libc::setrlimit(libc::RLIMIT_NOFILE, &lim) })?;
    }
    Ok(lim.rlim_cur)
}

pub use crate::sys::set_nonblocking;

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_port_in_use_is_named_with_what_to_do() {
        let first = ListenOptions::new("127.0.0.1:0".parse().unwrap())
            .bind()
            .unwrap();
        let taken = first.local_addr().unwrap();
        let err = ListenOptions::new(taken).bind().unwrap_err();
        assert_eq!(err.kind(), io::ErrorKind::AddrInUse);
        let text = err.to_string();
        assert!(
            text.contains(&taken.to_string()) && text.contains("pick another address"),
            "{text}"
        );
    }

    #[test]
    fn a_blocking_listener_is_refused_instead_of_blocking() {
        let blocking = ListenOptions::new("127.0.0.1:0".parse().unwrap())
            .bind()
            .unwrap();
        // In a thread, bounded: an accept that blocked would never return.
        let (tx, rx) = std::sync::mpsc::channel();
        std::thread::spawn(move || {
            let mut acceptor = Acceptor::new().unwrap();
            let refused = acceptor.accept(&blocking).map(drop);
            set_nonblocking(&blocking).unwrap();
            let drained = matches!(acceptor.accept(&blocking), Ok(Accepted::Drained));
            let _ = tx.send((refused, drained));
        });
        let (refused, drained) = rx
            .recv_timeout(std::time::Duration::from_secs(10))
            .expect("accept blocked on a blocking listener");
        let err = refused.unwrap_err();
        assert_eq!(err.kind(), io::ErrorKind::InvalidInput);
        assert!(err.to_string().contains("nonblocking(true)"), "{err}");
        assert!(drained, "once non-blocking, the empty queue is Drained");
    }

    /// A listener checked once and made blocking since (as one that reused a
    /// checked descriptor number would be) is refused, not blocked on.
    #[test]
    fn a_listener_made_blocking_after_a_check_is_refused() {
        let (tx, rx) = std::sync::mpsc::channel();
        std::thread::spawn(move || {
            let mut acceptor = Acceptor::new().unwrap();
            let listener = ListenOptions::new("127.0.0.1:0".parse().unwrap())
                .nonblocking(true)
                .bind()
                .unwrap();
            let first = matches!(acceptor.accept(&listener), Ok(Accepted::Drained));
            listener.set_nonblocking(false).unwrap();
            let _ = tx.send((first, acceptor.accept(&listener).map(drop)));
        });
        let (first, accepted) = rx
            .recv_timeout(std::time::Duration::from_secs(10))
            .expect("accept blocked on a listener made blocking after its first check");
        assert!(first, "non-blocking at first: the empty queue is Drained");
        let err = accepted.unwrap_err();
        assert_eq!(err.kind(), io::ErrorKind::InvalidInput, "{err}");
    }

    #[test]
    fn every_bind_failure_a_user_can_fix_has_a_hint() {
        for kind in [
            io::ErrorKind::AddrInUse,
            io::ErrorKind::PermissionDenied,
            io::ErrorKind::AddrNotAvailable,
        ] {
            assert!(bind_hint(kind).starts_with("; "), "{kind:?}");
        }
        assert_eq!(bind_hint(io::ErrorKind::Other), "");
    }
}
