//! One type for a listening socket and one for a connection, whatever their
//! family: a server listens on TCP or on a Unix-domain socket with the same
//! engine, and its connections are read, written and half-closed the same way.

use crate::sys::{context, cvt};
use std::fmt;
use std::io::{self, Read, Write};
use std::net::{Shutdown, SocketAddr, TcpListener, TcpStream};
use std::os::fd::{AsFd, AsRawFd, BorrowedFd, FromRawFd, OwnedFd, RawFd};
use std::os::unix::fs::FileTypeExt;
use std::os::unix::net::{UnixListener, UnixStream};
use std::path::{Path, PathBuf};

/// The same call on either family of socket, for [`Listener`] and [`Stream`].
macro_rules! either {
    ($self:expr, $Enum:ident, $s:ident => $e:expr) => {
        match $self {
            $Enum::Tcp($s) => $e,
            $Enum::Unix($s) => $e,
        }
    };
}

/// What [`Listener`] and [`Stream`] alike have from their two variants:
/// `From` each kind of socket, and the descriptor (`AsFd`, `AsRawFd`).
macro_rules! tcp_or_unix {
    ($Enum:ident, $Tcp:ty, $Unix:ty) => {
        impl From<$Tcp> for $Enum {
            fn from(s: $Tcp) -> $Enum {
                $Enum::Tcp(s)
            }
        }

        impl From<$Unix> for $Enum {
            fn from(s: $Unix) -> $Enum {
                $Enum::Unix(s)
            }
        }

        impl AsFd for $Enum {
            fn as_fd(&self) -> BorrowedFd<'_> {
                either!(self, $Enum, s => s.as_fd())
            }
        }

        impl AsRawFd for $Enum {
            fn as_raw_fd(&self) -> RawFd {
                self.as_fd().as_raw_fd()
            }
        }
    };
}

/// Where a listener listens.
///
/// ```
/// use iomux::net::ListenAddr;
/// let tcp = ListenAddr::Tcp("127.0.0.1:8080".parse().unwrap());
/// assert_eq!(tcp.to_string(), "127.0.0.1:8080");
/// let unix = ListenAddr::Unix("/run/app.sock".into());
/// assert_eq!(unix.to_string(), "unix:/run/app.sock");
/// assert_eq!(unix.tcp(), None);
/// ```
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum ListenAddr {
    /// A TCP address.
    Tcp(SocketAddr),
    /// The path of a Unix-domain stream socket.
    Unix(PathBuf),
}

impl ListenAddr {
    /// The TCP address, for a TCP listener.
    pub fn tcp(&self) -> Option<SocketAddr> {
        match self {
            ListenAddr::Tcp(addr) => Some(*addr),
            ListenAddr::Unix(_) => None,
        }
    }
}

/// `HOST:PORT` for TCP, `unix:PATH` for a Unix-domain socket.
impl fmt::Display for ListenAddr {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            ListenAddr::Tcp(addr) => write!(f, "{addr}"),
            ListenAddr::Unix(path) => write!(f, "unix:{}", path.display()),
        }
    }
}

/// A listening stream socket: TCP or Unix-domain.
///
/// ```
/// use iomux::net::{ListenAddr, Listener};
/// let l = Listener::from(std::net::TcpListener::bind("127.0.0.1:0").unwrap());
/// assert!(matches!(l.local_addr().unwrap(), ListenAddr::Tcp(a) if a.port() != 0));
/// ```
#[derive(Debug)]
#[non_exhaustive]
pub enum Listener {
    /// A TCP listener.
    Tcp(TcpListener),
    /// A Unix-domain stream listener.
    Unix(UnixListener),
}

impl Listener {
    /// Listen on the Unix-domain socket `path`, with `backlog`. A socket file
    /// left at `path` by a process that is gone (nobody accepts on it) is
    /// replaced; a live one, or any other kind of file, is an error
    /// (`AddrInUse`, `AlreadyExists`) and is left alone.
    ///
    /// ```
    /// let path = std::env::temp_dir().join(format!("iomux-doc-{}.sock", std::process::id()));
    /// let l = iomux::net::Listener::bind_unix(&path, 128).unwrap();
    /// let again = iomux::net::Listener::bind_unix(&path, 128).unwrap_err();
    /// assert_eq!(again.kind(), std::io::ErrorKind::AddrInUse);
    /// drop(l);
    /// // Nobody listens any more: the stale file is replaced.
    /// let _l = iomux::net::Listener::bind_unix(&path, 128).unwrap();
    /// std::fs::remove_file(&path).unwrap();
    /// ```
    pub fn bind_unix(path: &Path, backlog: i32) -> io::Result<Listener> {
        remove_stale_socket(path)?;
        let listener = UnixListener::bind(path)
            .map_err(|e| context(e, format_args!("cannot listen on unix:{}", path.display())))?;
        // std listens with a backlog of 128; apply the one asked for.
        // SAFETY: listen(2) on a socket this function owns; no memory is passed.
        cvt(unsafe { libc::listen(listener.as_raw_fd(), backlog) })
            .map_err(|e| context(e, format_args!("listen on unix:{}", path.display())))?;
        Ok(Listener::Unix(listener))
    }

    /// Where it listens.
    pub fn local_addr(&self) -> io::Result<ListenAddr> {
        match self {
            Listener::Tcp(l) => l.local_addr().map(ListenAddr::Tcp),
            Listener::Unix(l) => {
                let addr = l.local_addr()?;
                let path = addr.as_pathname().ok_or_else(|| {
                    io::Error::new(
                        io::ErrorKind::Unsupported,
                        "an unnamed Unix-domain listener",
                    )
                })?;
                Ok(ListenAddr::Unix(path.to_path_buf()))
            }
        }
    }

    /// Make accepts return at once (`WouldBlock`) or wait.
    pub fn set_nonblocking(&self, on: bool) -> io::Result<()> {
        either!(self, Listener, l => l.set_nonblocking(on))
    }

    /// Another handle to the same listening socket (several loops may accept
    /// on one Unix-domain socket, which has no SO_REUSEPORT).
    pub fn try_clone(&self) -> io::Result<Listener> {
        Ok(match self {
            Listener::Tcp(l) => Listener::Tcp(l.try_clone()?),
            Listener::Unix(l) => Listener::Unix(l.try_clone()?),
        })
    }

    /// Accept one connection, waiting for it if the listener is blocking.
    pub fn accept(&self) -> io::Result<Stream> {
        match self {
            Listener::Tcp(l) => l.accept().map(|(s, _)| Stream::Tcp(s)),
            Listener::Unix(l) => l.accept().map(|(s, _)| Stream::Unix(s)),
        }
    }
}

/// Replace a Unix-domain socket file nobody accepts on; refuse anything else.
fn remove_stale_socket(path: &Path) -> io::Result<()> {
    let Ok(meta) = std::fs::symlink_metadata(path) else {
        return Ok(()); // nothing there
    };
    if !meta.file_type().is_socket() {
        return Err(io::Error::new(
            io::ErrorKind::AlreadyExists,
            format!(
                "cannot listen on unix:{}: a file that is not a socket is there; remove it or pick another path",
                path.display()
            ),
        ));
    }
    match UnixStream::connect(path) {
        Ok(_) => Err(io::Error::new(
            io::ErrorKind::AddrInUse,
            format!(
                "cannot listen on unix:{}: another process accepts on it; stop it or pick another path",
                path.display()
            ),
        )),
        // Refused: a socket file left behind by a process that is gone.
        Err(e) if e.kind() == io::ErrorKind::ConnectionRefused => std::fs::remove_file(path)
            .map_err(|e| context(e, format_args!("remove the stale socket {}", path.display()))),
        Err(e) => Err(context(e, format_args!("cannot listen on unix:{}", path.display()))),
    }
}

tcp_or_unix!(Listener, TcpListener, UnixListener);

/// A connected stream socket: TCP or Unix-domain.
///
/// ```
/// use iomux::net::Stream;
/// use std::io::{Read, Write};
/// let (a, b) = std::os::unix::net::UnixStream::pair().unwrap();
/// let (mut a, mut b) = (Stream::from(a), Stream::from(b));
/// a.set_nodelay(true).unwrap(); // nothing to do on a Unix-domain socket
/// a.write_all(b"hi").unwrap();
/// let mut got = [0; 2];
/// b.read_exact(&mut got).unwrap();
/// assert_eq!(&got, b"hi");
/// assert_eq!(a.peer_addr(), None, "no IP address");
/// ```
#[derive(Debug)]
#[non_exhaustive]
pub enum Stream {
    /// A TCP connection.
    Tcp(TcpStream),
    /// A Unix-domain stream connection.
    Unix(UnixStream),
}

impl Stream {
    /// TCP_NODELAY, where the socket has it (TCP); a Unix-domain socket has
    /// no Nagle delay to turn off.
    pub fn set_nodelay(&self, on: bool) -> io::Result<()> {
        match self {
            Stream::Tcp(s) => s.set_nodelay(on),
            Stream::Unix(_) => Ok(()),
        }
    }

    /// Make reads and writes return at once (`WouldBlock`) or wait.
    pub fn set_nonblocking(&self, on: bool) -> io::Result<()> {
        either!(self, Stream, s => s.set_nonblocking(on))
    }

    /// Shut down one or both directions.
    pub fn shutdown(&self, how: Shutdown) -> io::Result<()> {
        either!(self, Stream, s => s.shutdown(how))
    }

    /// The peer's IP address (TCP only).
    pub fn peer_addr(&self) -> Option<SocketAddr> {
        match self {
            Stream::Tcp(s) => s.peer_addr().ok(),
            Stream::Unix(_) => None,
        }
    }

    /// The local IP address (TCP only).
    pub fn local_addr(&self) -> Option<SocketAddr> {
        match self {
            Stream::Tcp(s) => s.local_addr().ok(),
            Stream::Unix(_) => None,
        }
    }

    /// Wait at most `timeout` for a read (`None`: for ever).
    pub fn set_read_timeout(&self, timeout: Option<std::time::Duration>) -> io::Result<()> {
        either!(self, Stream, s => s.set_read_timeout(timeout))
    }

    /// Wait at most `timeout` for a write (`None`: for ever).
    pub fn set_write_timeout(&self, timeout: Option<std::time::Duration>) -> io::Result<()> {
        either!(self, Stream, s => s.set_write_timeout(timeout))
    }
}

tcp_or_unix!(Stream, TcpStream, UnixStream);

impl Read for &Stream {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        either!(self, Stream, s => (&*s).read(buf))
    }
}

impl Write for &Stream {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        either!(self, Stream, s => (&*s).write(buf))
    }

    fn flush(&mut self) -> io::Result<()> {
        Ok(())
    }
}

impl Read for Stream {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        (&*self).read(buf)
    }
}

impl Write for Stream {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        (&*self).write(buf)
    }

    fn flush(&mut self) -> io::Result<()> {
        Ok(())
    }
}

/// A listening socket [`crate::net::Acceptor`] can accept on, and what it
/// accepts. Implemented for `TcpListener`, `UnixListener` and [`Listener`].
pub trait Accept: AsRawFd {
    /// The connection type accepted.
    type Conn;

    /// Wrap a descriptor that accept4(2) just returned on this listener.
    fn adopt(&self, fd: OwnedFd) -> Self::Conn;
}

impl Accept for TcpListener {
    type Conn = TcpStream;

    fn adopt(&self, fd: OwnedFd) -> TcpStream {
        TcpStream::from(fd)
    }
}

impl Accept for UnixListener {
    type Conn = UnixStream;

    fn adopt(&self, fd: OwnedFd) -> UnixStream {
        UnixStream::from(fd)
    }
}

impl Accept for Listener {
    type Conn = Stream;

    /// An accepted socket has its listener's family: no system call asks.
    fn adopt(&self, fd: OwnedFd) -> Stream {
        match self {
            Listener::Tcp(l) => Stream::Tcp(l.adopt(fd)),
            Listener::Unix(l) => Stream::Unix(l.adopt(fd)),
        }
    }
}

/// Wrap a raw descriptor just returned by accept4(2) on `listener`.
pub(crate) fn adopt_accepted<L: Accept>(listener: &L, fd: RawFd) -> L::Conn {
    // SAFETY: accept4 just returned this descriptor and nothing else owns it.
    listener.adopt(unsafe { OwnedFd::from_raw_fd(fd) })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn temp_path(name: &str) -> PathBuf {
        std::env::temp_dir().join(format!("iomux-{}-{name}.sock", std::process::id()))
    }

    #[test]
    fn a_unix_listener_accepts_and_its_stream_reads_writes_and_half_closes() {
        let path = temp_path("accept");
        let listener = Listener::bind_unix(&path, 16).unwrap();
        assert_eq!(
            listener.local_addr().unwrap(),
            ListenAddr::Unix(path.clone())
        );
        let mut client = UnixStream::connect(&path).unwrap();
        let server = listener.accept().unwrap();
        assert!(matches!(server, Stream::Unix(_)));
        client.write_all(b"ping").unwrap();
        let mut got = [0; 4];
        (&server).read_exact(&mut got).unwrap();
        assert_eq!(&got, b"ping");
        server.shutdown(Shutdown::Write).unwrap();
        let mut rest = Vec::new();
        client.read_to_end(&mut rest).unwrap();
        assert!(rest.is_empty(), "our FIN reached the peer");
        std::fs::remove_file(&path).unwrap();
    }

    #[test]
    fn a_file_that_is_not_a_socket_is_left_alone() {
        let path = temp_path("plain-file");
        std::fs::write(&path, b"keep me").unwrap();
        let err = Listener::bind_unix(&path, 16).unwrap_err();
        assert_eq!(err.kind(), io::ErrorKind::AlreadyExists, "{err}");
        assert!(err.to_string().contains("not a socket"), "{err}");
        assert_eq!(std::fs::read(&path).unwrap(), b"keep me");
        std::fs::remove_file(&path).unwrap();
    }

    #[test]
    fn accepted_streams_keep_the_listeners_family() {
        let path = temp_path("family");
        let unix = UnixListener::bind(&path).unwrap();
        let _c = UnixStream::connect(&path).unwrap();
        let (s, _) = unix.accept().unwrap();
        let unix = Listener::from(unix);
        assert!(matches!(unix.adopt(OwnedFd::from(s)), Stream::Unix(_)));
        let tcp = TcpListener::bind("127.0.0.1:0").unwrap();
        let _c = TcpStream::connect(tcp.local_addr().unwrap()).unwrap();
        let (s, _) = tcp.accept().unwrap();
        assert!(matches!(
            Listener::from(tcp).adopt(OwnedFd::from(s)),
            Stream::Tcp(_)
        ));
        std::fs::remove_file(&path).unwrap();
    }
}
