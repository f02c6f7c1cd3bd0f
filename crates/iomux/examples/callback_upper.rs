//! A callback-style server in the manner of Python's `selectors` module:
//! `register(fd, events, callback)`, and a loop that calls the callback of
//! every ready descriptor. It answers each connection with its bytes in upper case.
//! `cargo run -p iomux --example callback_upper -- --addr 127.0.0.1:7000 --backend poll`

mod common;

use common::Conn;
use iomux::net::{Accepted, Acceptor};
use iomux::{AnySelector, Backend, Event, Events, Interest, Selector, Token, Trigger};
use std::collections::HashMap;
use std::io;
use std::net::TcpStream;
use std::os::fd::{AsFd, AsRawFd, BorrowedFd, RawFd};

type Callback = Box<dyn FnMut(&mut Reactor, Event)>;

/// A selector plus one callback per registered descriptor (its token is the descriptor).
struct Reactor {
    selector: AnySelector,
    callbacks: HashMap<RawFd, Callback>,
}

impl Reactor {
    /// Watch `fd` for `interest`; `callback` runs whenever it is ready. The
    /// callback may own the descriptor's file (it is dropped after
    /// `unregister`), so it is given once the registration has borrowed it.
    fn register(
        &mut self,
        fd: BorrowedFd<'_>,
        interest: Interest,
    ) -> io::Result<impl FnOnce(&mut Reactor, Callback)> {
        let raw = fd.as_raw_fd();
        self.selector.register(fd, Token(raw as usize), interest)?;
        Ok(move |reactor: &mut Reactor, callback| {
            reactor.callbacks.insert(raw, callback);
        })
    }

    fn modify(&mut self, fd: BorrowedFd<'_>, interest: Interest) -> io::Result<()> {
        let raw = fd.as_raw_fd();
        if self.selector.registration(raw).map(|r| r.interest) != Some(interest) {
            self.selector
                .reregister(fd, Token(raw as usize), interest)?;
        }
        Ok(())
    }

    fn unregister(&mut self, fd: BorrowedFd<'_>) {
        let _ = self.selector.deregister(fd);
        self.callbacks.remove(&fd.as_raw_fd());
    }

    fn run(&mut self) -> io::Result<()> {
        let mut events = Events::with_capacity(256);
        let mut ready = Vec::new();
        loop {
            self.selector.select(&mut events, None)?;
            ready.clear();
            ready.extend(events.iter().copied());
            for &event in &ready {
                let fd = event.token().0 as RawFd;
                // Taken out while it runs, so it may register and unregister freely.
                let Some(mut callback) = self.callbacks.remove(&fd) else {
                    continue;
                };
                callback(self, event);
                if self.selector.registration(fd).is_some() {
                    self.callbacks.entry(fd).or_insert(callback);
                }
            }
        }
    }
}

fn main() -> io::Result<()> {
    let flags = common::Flags::parse(&[("--backend", "select|poll|epoll|sigio|uring")]);
    let backend: Backend = flags.get("--backend", "epoll", None);
    let listener = flags.listen()?;
    let mut reactor = Reactor {
        selector: backend.open(Trigger::Level)?,
        callbacks: HashMap::new(),
    };
    let mut acceptor = Acceptor::new()?;
    let on_ready = reactor.register(listener.as_fd(), Interest::READABLE)?;
    let accept = move |reactor: &mut Reactor, _| loop {
        match acceptor.accept(&listener) {
            Ok(Accepted::Conn(stream)) => {
                if let Err(e) = register_connection(reactor, stream) {
                    eprintln!("register a connection: {e}");
                }
            }
            Ok(Accepted::Shed) => {}
            Ok(Accepted::Drained) => break,
            Err(e) => {
                eprintln!("{e}");
                break;
            }
        }
    };
    on_ready(&mut reactor, Box::new(accept));
    reactor.run()
}

/// The connection's callback owns it: dropping the callback (after
/// `unregister`) closes the socket.
fn register_connection(reactor: &mut Reactor, stream: TcpStream) -> io::Result<()> {
    let on_ready = reactor.register(stream.as_fd(), Interest::READABLE)?;
    let mut conn = Conn::new(stream);
    let mut buf = vec![0u8; 16 * 1024];
    let serve = move |reactor: &mut Reactor, _| {
        let next = common::pump(&mut conn, &mut buf, |b| b.make_ascii_uppercase());
        let fd = conn.stream.as_fd();
        if next
            .and_then(|interest| reactor.modify(fd, interest))
            .is_err()
        {
            reactor.unregister(fd);
        }
    };
    on_ready(reactor, Box::new(serve));
    Ok(())
}
