//! What the examples share: their flags (`--addr` and their own) and a non-blocking echo loop
//! that runs on any [`Selector`] in any triggering mode.
#![allow(dead_code)]

use iomux::net::{Accepted, Acceptor};
use iomux::{Events, Interest, Selector, Token, Trigger};
use std::io::{self, Read, Write};
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::os::fd::AsRawFd;

/// The listener's token; connection `i` uses `Token(i + 1)`.
pub const LISTENER: Token = Token(0);

/// The answer of the HTTP examples to every request.
pub const HELLO: &[u8] =
    b"HTTP/1.1 200 OK\r\nContent-Type: text/plain\r\nContent-Length: 13\r\n\r\nHello, world!";
/// Request heads longer than this are refused, so a client cannot grow a buffer without bound.
pub const MAX_HEAD: usize = 8192;
/// The answer to a request head longer than [`MAX_HEAD`].
pub const TOO_LARGE: &[u8] =
    b"HTTP/1.1 431 Request Header Fields Too Large\r\nContent-Length: 0\r\nConnection: close\r\n\r\n";

/// The length of the first complete request head in `input` (the examples
/// answer requests without bodies; iomux-proto has the real parser).
pub fn find_head_end(input: &[u8]) -> Option<usize> {
    input
        .windows(4)
        .position(|w| w == b"\r\n\r\n")
        .map(|i| i + 4)
}

/// An example's command line: `--addr HOST:PORT` and the flags it names,
/// each followed by its value. Anything else (an unknown flag, a flag
/// without its value) prints the usage and exits before the example starts.
pub struct Flags {
    given: Vec<(String, String)>,
}

impl Flags {
    /// Parse the command line; `extra` are the example's flags besides
    /// `--addr`, each with what its value looks like: `("--trigger", "level|edge|oneshot")`.
    pub fn parse(extra: &[(&str, &str)]) -> Flags {
        let known: Vec<(&str, &str)> = [("--addr", "HOST:PORT")]
            .into_iter()
            .chain(extra.iter().copied())
            .collect();
        let mut args = std::env::args();
        let program = args.next().unwrap_or_default();
        let usage = || {
            let program = program.rsplit('/').next().unwrap_or_default();
            let flags: Vec<String> = known.iter().map(|(n, v)| format!("[{n} {v}]")).collect();
            eprintln!("usage: {program} {}", flags.join(" "));
            std::process::exit(2)
        };
        let mut given = Vec::new();
        while let Some(name) = args.next() {
            if !known.iter().any(|(n, _)| *n == name) {
                eprintln!("unknown argument {name:?}");
                usage();
            }
            let Some(value) = args.next() else {
                eprintln!("{name} needs a value");
                usage()
            };
            given.push((name, value));
        }
        Flags { given }
    }

    /// The value of flag `name` (the last one given, else `default`),
    /// parsed; exits with the parse error, followed by `hint` when the
    /// error does not already say what to use.
    pub fn get<T: std::str::FromStr>(&self, name: &str, default: &str, hint: Option<&str>) -> T
    where
        T::Err: std::fmt::Display,
    {
        let text = self
            .given
            .iter()
            .rev()
            .find(|(n, _)| n == name)
            .map_or(default, |(_, v)| v.as_str());
        text.parse().unwrap_or_else(|e| {
            match hint {
                Some(hint) => eprintln!("{name} {text:?}: {e}; {hint}"),
                None => eprintln!("{name}: {e}"),
            }
            std::process::exit(2)
        })
    }

    /// `--addr HOST:PORT` (default 127.0.0.1:0, any free port).
    pub fn addr(&self) -> SocketAddr {
        self.get(
            "--addr",
            "127.0.0.1:0",
            Some("use HOST:PORT such as 127.0.0.1:8080 (port 0 picks one)"),
        )
    }

    /// Bind a non-blocking listener on `--addr` and print where it listens.
    pub fn listen(&self) -> io::Result<TcpListener> {
        let listener = iomux::net::ListenOptions::new(self.addr())
            .nonblocking(true)
            .bind()?;
        println!("listening on {}", listener.local_addr()?);
        Ok(listener)
    }
}

/// One connection of the echo-style examples: the bytes read but not yet written back.
pub struct Conn {
    pub stream: TcpStream,
    unsent: Vec<u8>,
}

impl Conn {
    pub fn new(stream: TcpStream) -> Conn {
        Conn {
            stream,
            unsent: Vec::new(),
        }
    }
}

/// Echo every connection of `listener` (already registered on `selector` as
/// [`LISTENER`] for readability) until an error. Reads until EAGAIN (needed by
/// edge triggering, harmless for level), writes directly and asks for
/// writability only when the kernel pushes back, and stops reading while bytes
/// are waiting to go out, so memory stays bounded by one read per connection.
pub fn echo_loop(selector: &mut impl Selector, listener: &TcpListener) -> io::Result<()> {
    let oneshot = selector.trigger() == Trigger::Oneshot;
    let mut acceptor = Acceptor::new()?;
    let mut conns: Vec<Option<Conn>> = Vec::new();
    let mut events = Events::with_capacity(256);
    let mut buf = vec![0u8; 64 * 1024];
    loop {
        selector.select(&mut events, None)?;
        for event in &events {
            if event.token() == LISTENER {
                accept_all(selector, listener, &mut acceptor, &mut conns)?;
                if oneshot {
                    selector.reregister(listener, LISTENER, Interest::READABLE)?;
                }
                continue;
            }
            let slot = event.token().0 - 1;
            let Some(conn) = conns[slot].as_mut() else {
                continue;
            };
            let fd = conn.stream.as_raw_fd();
            match pump(conn, &mut buf, |_| {}) {
                Ok(wanted) => {
                    let changed = selector.registration(fd).map(|r| r.interest) != Some(wanted);
                    if changed || oneshot {
                        selector.reregister(&conn.stream, event.token(), wanted)?;
                    }
                }
                // Peer closed or failed: deregister before the drop closes it.
                Err(_) => {
                    selector.deregister(&conn.stream)?;
                    conns[slot] = None;
                }
            }
        }
    }
}

fn accept_all(
    selector: &mut impl Selector,
    listener: &TcpListener,
    acceptor: &mut Acceptor,
    conns: &mut Vec<Option<Conn>>,
) -> io::Result<()> {
    loop {
        match acceptor.accept(listener)? {
            Accepted::Conn(stream) => {
                let slot = conns.iter().position(Option::is_none).unwrap_or_else(|| {
                    conns.push(None);
                    conns.len() - 1
                });
                selector.register(&stream, Token(slot + 1), Interest::READABLE)?;
                conns[slot] = Some(Conn::new(stream));
            }
            Accepted::Shed => continue,
            Accepted::Drained => return Ok(()),
        }
    }
}

/// Move bytes for one ready connection, sending back what it reads after
/// `transform`; returns the interest it needs next, or an error when it is
/// finished (EOF or a socket error).
pub fn pump(
    conn: &mut Conn,
    buf: &mut [u8],
    transform: impl Fn(&mut [u8]),
) -> io::Result<Interest> {
    loop {
        if !conn.unsent.is_empty() {
            match conn.stream.write(&conn.unsent) {
                Ok(n) => drop(conn.unsent.drain(..n)),
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => return Ok(Interest::WRITABLE),
                Err(e) => return Err(e),
            }
            continue;
        }
        match conn.stream.read(buf) {
            Ok(0) => return Err(io::ErrorKind::UnexpectedEof.into()),
            Ok(n) => {
                transform(&mut buf[..n]);
                conn.unsent.extend_from_slice(&buf[..n]);
            }
            Err(e) if e.kind() == io::ErrorKind::WouldBlock => return Ok(Interest::READABLE),
            Err(e) => return Err(e),
        }
    }
}
