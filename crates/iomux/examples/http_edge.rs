//! An edge-triggered epoll HTTP responder answering "Hello, world!":
//! `cargo run -p iomux --example http_edge -- --addr 127.0.0.1:8080`, then `curl 127.0.0.1:8080`.
//!
//! Edge triggering reports a change once, so each connection is registered for
//! both directions once and every event runs it until the kernel says EAGAIN:
//! accept until EAGAIN, read until EAGAIN, write until done or EAGAIN.

mod common;

use common::{find_head_end, HELLO, LISTENER, MAX_HEAD, TOO_LARGE};
use iomux::net::{Accepted, Acceptor};
use iomux::{EpollSelector, Events, Interest, Selector, Token, Trigger};
use std::collections::HashMap;
use std::io::{self, Read, Write};
use std::net::TcpStream;

struct Conn {
    stream: TcpStream,
    input: Vec<u8>,
    output: Vec<u8>,
}

fn main() -> io::Result<()> {
    let listener = common::Flags::parse(&[]).listen()?;
    let mut selector = EpollSelector::new(Trigger::Edge)?;
    selector.register(&listener, LISTENER, Interest::READABLE)?;
    let mut acceptor = Acceptor::new()?;
    let mut conns: HashMap<Token, Conn> = HashMap::new();
    let mut next_token = 1;
    let mut events = Events::with_capacity(256);
    loop {
        selector.select(&mut events, None)?;
        for event in &events {
            if event.token() == LISTENER {
                loop {
                    match acceptor.accept(&listener)? {
                        Accepted::Conn(stream) => {
                            let token = Token(next_token);
                            next_token += 1;
                            selector.register(&stream, token, Interest::BOTH)?;
                            let conn = Conn {
                                stream,
                                input: Vec::new(),
                                output: Vec::new(),
                            };
                            conns.insert(token, conn);
                        }
                        Accepted::Shed => {}
                        Accepted::Drained => break,
                    }
                }
                continue;
            }
            let Some(conn) = conns.get_mut(&event.token()) else {
                continue;
            };
            if run(conn).is_err() {
                selector.deregister(&conn.stream)?;
                conns.remove(&event.token());
            }
        }
    }
}

/// Read, answer and write until the kernel has nothing more for us (EAGAIN
/// on the read, or on a write while output is pending). An error ends the
/// connection.
fn run(conn: &mut Conn) -> io::Result<()> {
    let mut buf = [0u8; 4096];
    loop {
        while !conn.output.is_empty() {
            match conn.stream.write(&conn.output) {
                Ok(n) => drop(conn.output.drain(..n)),
                // The next writable edge brings us back.
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => return Ok(()),
                Err(e) => return Err(e),
            }
        }
        match conn.stream.read(&mut buf) {
            Ok(0) => return Err(io::ErrorKind::UnexpectedEof.into()),
            Ok(n) => conn.input.extend_from_slice(&buf[..n]),
            Err(e) if e.kind() == io::ErrorKind::WouldBlock => return Ok(()),
            Err(e) => return Err(e),
        }
        while let Some(end) = find_head_end(&conn.input) {
            conn.output.extend_from_slice(HELLO);
            conn.input.drain(..end);
        }
        if conn.input.len() > MAX_HEAD {
            conn.stream.write_all(TOO_LARGE).ok();
            return Err(io::ErrorKind::InvalidData.into());
        }
    }
}
