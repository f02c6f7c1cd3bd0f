//! Opening many connections: non-blocking connects completed through epoll,
//! with errors that say which limit was hit and what to do about it.

use iomux::{EpollSelector, Events, Interest, Selector, Token, Trigger};
use socket2::{Domain, Protocol, SockRef, Socket, Type};
use std::io;
use std::net::{SocketAddr, TcpStream};
use std::os::fd::AsFd;
use std::time::{Duration, Instant};

/// Start a non-blocking connect to `addr`; the socket is writable (or in
/// error) once it completes. TCP_NODELAY is set: requests are written whole,
/// and Nagle's algorithm would hold back a pipelined remainder.
pub(crate) fn start_connect(addr: SocketAddr) -> io::Result<TcpStream> {
    let socket = Socket::new(
        Domain::for_address(addr),
        Type::STREAM.nonblocking().cloexec(),
        Some(Protocol::TCP),
    )
    .map_err(|e| explain(e, addr))?;
    socket.set_nodelay(true)?;
    match socket.connect(&addr.into()) {
        Ok(()) => {}
        Err(e) if e.raw_os_error() == Some(libc::EINPROGRESS) => {}
        Err(e) => return Err(explain(e, addr)),
    }
    Ok(socket.into())
}

/// The outcome of a completed non-blocking connect (read from SO_ERROR).
pub(crate) fn finish_connect(stream: &TcpStream, addr: SocketAddr) -> io::Result<()> {
    match stream.take_error()? {
        None => Ok(()),
        Some(e) => Err(explain(e, addr)),
    }
}

/// Close without lingering in TIME_WAIT (an RST instead of a FIN), so that
/// connection-per-request load does not run out of ephemeral ports.
pub(crate) fn close_abortively(stream: TcpStream) {
    let _ = SockRef::from(&stream).set_linger(Some(Duration::ZERO));
    drop(stream);
}

/// Attach advice to the errors a user can fix.
pub(crate) fn explain(e: io::Error, addr: SocketAddr) -> io::Error {
    let advice = match e.raw_os_error() {
        Some(libc::EMFILE) | Some(libc::ENFILE) => format!(
            "out of file descriptors (limit {}); raise it with `ulimit -n` up to the hard limit, or ask for fewer --conns/--idle",
            fd_limit().map_or("unknown".into(), |l| l.to_string())
        ),
        Some(libc::EADDRNOTAVAIL) => format!(
            "out of ephemeral ports toward {addr} (net.ipv4.ip_local_port_range gives {}); widen it with `sysctl -w net.ipv4.ip_local_port_range=\"1024 65535\"`, wait for TIME_WAIT sockets to expire, or use fewer connections",
            ephemeral_ports().map_or("an unknown number".into(), |p| p.to_string())
        ),
        Some(libc::ECONNREFUSED) => format!("connection refused by {addr}: is a server listening there?"),
        Some(libc::ETIMEDOUT) => format!("connecting to {addr} timed out: the server's listen backlog may be full"),
        _ => format!("connect to {addr}"),
    };
    io::Error::new(e.kind(), format!("{advice} ({e})"))
}

/// The soft descriptor limit.
pub(crate) fn fd_limit() -> io::Result<u64> {
    let mut lim = libc::rlimit {
        rlim_cur: 0,
        rlim_max: 0,
    };
    // SAFETY: getrlimit writes into the live struct.
    if unsafe { libc::getrlimit(libc::RLIMIT_NOFILE, &mut lim) } != 0 {
        return Err(io::Error::last_os_error());
    }
    Ok(lim.rlim_cur)
}

/// How many local ports `net.ipv4.ip_local_port_range` allows.
pub(crate) fn ephemeral_ports() -> Option<u64> {
    let range = std::fs::read_to_string("/proc/sys/net/ipv4/ip_local_port_range").ok()?;
    let mut it = range.split_whitespace().map(|p| p.parse::<u64>().ok());
    let (lo, hi) = (it.next()??, it.next()??);
    Some(hi.saturating_sub(lo) + 1)
}

/// Fail early, with advice, when `count` connections cannot fit this
/// process's descriptor limit (raised to the hard limit first) or the
/// ephemeral port range.
pub(crate) fn check_capacity(count: usize, addr: SocketAddr) -> io::Result<()> {
    let limit = iomux::net::raise_fd_limit()?;
    // A few descriptors for stdio, the selectors and their wakers.
    let needed = count as u64 + 64;
    if needed > limit {
        return Err(io::Error::new(
            io::ErrorKind::InvalidInput,
            format!(
                "{count} connections need about {needed} descriptors but this process may open only {limit} (its hard limit); raise the hard limit (`ulimit -Hn`, /etc/security/limits.conf) or ask for fewer --conns/--idle"
            ),
        ));
    }
    if let Some(ports) = ephemeral_ports() {
        if count as u64 > ports {
            return Err(io::Error::new(
                io::ErrorKind::InvalidInput,
                format!(
                    "{count} connections to {addr} need {count} ephemeral ports but net.ipv4.ip_local_port_range allows only {ports}; widen it with `sysctl -w net.ipv4.ip_local_port_range=\"1024 65535\"` or ask for fewer connections"
                ),
            ));
        }
    }
    Ok(())
}

/// Open `count` connections to `addr`, at most `batch` connecting at once,
/// and return them once every one is established. Fails with the first
/// error, or when they are not all up within `timeout`.
pub(crate) fn connect_many(
    addr: SocketAddr,
    count: usize,
    timeout: Duration,
) -> io::Result<Vec<TcpStream>> {
    const BATCH: usize = 512;
    let deadline = Instant::now() + timeout;
    let mut selector = EpollSelector::new(Trigger::Level)?;
    let mut events = Events::with_capacity(BATCH);
    let mut done: Vec<TcpStream> = Vec::with_capacity(count);
    let mut pending: Vec<Option<TcpStream>> = Vec::new();
    let mut in_flight = 0;
    let mut started = 0;
    while done.len() < count {
        while in_flight < BATCH && started < count {
            let stream = start_connect(addr).map_err(|e| partial(e, done.len(), count))?;
            selector.register(stream.as_fd(), Token(pending.len()), Interest::WRITABLE)?;
            pending.push(Some(stream));
            in_flight += 1;
            started += 1;
        }
        let now = Instant::now();
        if now >= deadline {
            return Err(io::Error::new(
                io::ErrorKind::TimedOut,
                format!(
                    "only {} of {count} connections to {addr} were established within {timeout:?}: the server is not accepting fast enough or its listen backlog is full (raise --backlog / LISTENQ, or ask for fewer connections)",
                    done.len()
                ),
            ));
        }
        selector.select(
            &mut events,
            Some((deadline - now).min(Duration::from_millis(100))),
        )?;
        for event in &events {
            let Some(stream) = pending[event.token().0].take() else {
                continue;
            };
            selector.deregister(stream.as_fd())?;
            in_flight -= 1;
            finish_connect(&stream, addr).map_err(|e| partial(e, done.len(), count))?;
            done.push(stream);
        }
    }
    Ok(done)
}

fn partial(e: io::Error, opened: usize, count: usize) -> io::Error {
    io::Error::new(
        e.kind(),
        format!("could open only {opened} of the {count} connections asked for: {e}"),
    )
}
