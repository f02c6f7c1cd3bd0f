//! Helpers shared by the conformance suites: the modes under test, socket
//! pairs, and a macro that turns one case into one test per mode.
#![allow(dead_code)]

use iomux::{AnySelector, Backend, Event, Events, Interest, Selector, Token, Trigger};
use std::io::{self, Read, Write};
use std::net::{TcpListener, TcpStream};
use std::os::fd::{BorrowedFd, RawFd};
use std::os::unix::net::UnixStream;
use std::time::Duration;

/// One backend in one triggering mode.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Mode {
    pub backend: Backend,
    pub trigger: Trigger,
}

impl Mode {
    pub fn open(self) -> AnySelector {
        self.backend
            .open(self.trigger)
            .unwrap_or_else(|e| panic!("{self:?}: open: {e}"))
    }

    pub fn is_level(self) -> bool {
        self.trigger == Trigger::Level
    }

    /// select reports a hang-up only as readability; the others say which.
    pub fn reports_hangups(self) -> bool {
        self.backend != Backend::Select
    }
}

/// The mode a generated test is named after.
pub fn mode(name: &str) -> Mode {
    let (backend, trigger) = match name {
        "select" => (Backend::Select, Trigger::Level),
        "poll" => (Backend::Poll, Trigger::Level),
        "epoll_level" => (Backend::Epoll, Trigger::Level),
        "epoll_edge" => (Backend::Epoll, Trigger::Edge),
        "epoll_oneshot" => (Backend::Epoll, Trigger::Oneshot),
        "sigio" => (Backend::Sigio, Trigger::Edge),
        "uring_level" => (Backend::Uring, Trigger::Level),
        "uring_edge" => (Backend::Uring, Trigger::Edge),
        "uring_oneshot" => (Backend::Uring, Trigger::Oneshot),
        _ => panic!("unknown mode {name}"),
    };
    Mode { backend, trigger }
}

/// True (after saying so on stderr) when the kernel refuses io_uring and
/// `mode` needs it: the test is skipped visibly, not passed silently.
pub fn skipped(mode: Mode) -> bool {
    if mode.backend != Backend::Uring {
        return false;
    }
    match iomux::selector::uring::probe() {
        Ok(()) => false,
        Err(e) => {
            eprintln!("SKIPPED {mode:?}: {e}");
            true
        }
    }
}

/// `for_modes!(case)` makes `case::select`, `case::poll`, `case::epoll_level`,
/// `case::epoll_edge`, `case::epoll_oneshot` and `case::sigio`, each calling `case(mode)`;
/// `for_modes!(case, [poll, epoll_level])` limits it to the modes named.
macro_rules! for_modes {
    ($case:ident, [$($mode:ident),+]) => {
        mod $case {
            $(
                #[test]
                fn $mode() {
                    let mode = crate::common::mode(stringify!($mode));
                    if crate::common::skipped(mode) {
                        return;
                    }
                    super::$case(mode);
                }
            )+
        }
    };
    ($case:ident) => {
        for_modes!(
            $case,
            [select, poll, epoll_level, epoll_edge, epoll_oneshot, sigio, uring_level, uring_edge, uring_oneshot]
        );
    };
}

/// A connected, non-blocking pair of Unix stream sockets.
pub fn pair() -> (UnixStream, UnixStream) {
    let (a, b) = UnixStream::pair().expect("socketpair");
    a.set_nonblocking(true).unwrap();
    b.set_nonblocking(true).unwrap();
    (a, b)
}

/// A selector in `mode` watching the second socket of a pair for
/// readability as `Token(1)`; returns the selector, the writer, the reader.
pub fn watched_pair(mode: Mode) -> (AnySelector, UnixStream, UnixStream) {
    let mut sel = mode.open();
    let (a, b) = pair();
    sel.register(&b, Token(1), Interest::READABLE).unwrap();
    (sel, a, b)
}

/// A connected, non-blocking pair of TCP sockets on 127.0.0.1.
pub fn tcp_pair() -> (TcpStream, TcpStream) {
    let listener = TcpListener::bind("127.0.0.1:0").expect("bind 127.0.0.1:0");
    let client = TcpStream::connect(listener.local_addr().unwrap()).expect("connect");
    let (server, _) = listener.accept().expect("accept");
    client.set_nonblocking(true).unwrap();
    server.set_nonblocking(true).unwrap();
    (client, server)
}

/// Wait once and return the events.
pub fn wait(sel: &mut impl Selector, timeout: Option<Duration>) -> Vec<Event> {
    let mut events = Events::with_capacity(1024);
    sel.select(&mut events, timeout)
        .unwrap_or_else(|e| panic!("{:?}/{:?}: select: {e}", sel.backend(), sel.trigger()));
    events.iter().copied().collect()
}

/// The tokens of `events`, sorted.
pub fn tokens(events: &[Event]) -> Vec<usize> {
    let mut t: Vec<usize> = events.iter().map(|e| e.token().0).collect();
    t.sort_unstable();
    t
}

/// The single event for `token`, failing if there is none or several.
pub fn only_event(events: &[Event], token: Token) -> Event {
    let mine: Vec<&Event> = events.iter().filter(|e| e.token() == token).collect();
    assert_eq!(
        mine.len(),
        1,
        "expected one event for {token:?}, got {events:?}"
    );
    *mine[0]
}

/// Read until the socket would block; returns how many bytes were read.
pub fn drain(mut s: impl Read) -> usize {
    let mut buf = [0u8; 4096];
    let mut total = 0;
    loop {
        match s.read(&mut buf) {
            Ok(0) => return total,
            Ok(n) => total += n,
            Err(e) if e.kind() == io::ErrorKind::WouldBlock => return total,
            Err(e) => panic!("read: {e}"),
        }
    }
}

pub fn send(mut s: impl Write, data: &[u8]) {
    s.write_all(data).expect("write");
}

/// Descriptor number `fd` as a selector argument. Most cases pass a
/// descriptor they keep open for the call; the cases that close one (or give
/// its number to another file) before deregistering it check that the
/// selector copes with a caller that broke I/O safety, or with a number that
/// was never open.
pub fn num(fd: RawFd) -> BorrowedFd<'static> {
    // SAFETY: the selectors only hand the number to the kernel, which
    // answers EBADF (or about another file) for a number not open, and those
    // answers are what the cases check.
    unsafe { BorrowedFd::borrow_raw(fd) }
}
