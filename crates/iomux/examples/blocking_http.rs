//! The simplest server: blocking sockets, one connection at a time, answering
//! every request with "Hello, world!".
//! `cargo run -p iomux --example blocking_http -- --addr 127.0.0.1:8080`, then `curl 127.0.0.1:8080`.
//!
//! While one client is connected every other one waits: the problem the
//! other examples solve.

mod common;

use common::{find_head_end, HELLO, MAX_HEAD, TOO_LARGE};
use std::io::{self, Read, Write};
use std::net::{TcpListener, TcpStream};

fn main() -> io::Result<()> {
    let listener = TcpListener::bind(common::Flags::parse(&[]).addr())?;
    println!("listening on {}", listener.local_addr()?);
    for stream in listener.incoming() {
        match stream {
            Ok(stream) => {
                if let Err(e) = serve(stream) {
                    eprintln!("connection ended: {e}");
                }
            }
            Err(e) => eprintln!("accept: {e}"),
        }
    }
    Ok(())
}

/// Answer each request head (requests without bodies) until the client closes.
fn serve(mut stream: TcpStream) -> io::Result<()> {
    let mut input = Vec::new();
    let mut buf = [0u8; 4096];
    loop {
        while let Some(end) = find_head_end(&input) {
            stream.write_all(HELLO)?;
            input.drain(..end);
        }
        if input.len() > MAX_HEAD {
            stream.write_all(TOO_LARGE)?;
            return Ok(());
        }
        let n = stream.read(&mut buf)?;
        if n == 0 {
            return Ok(());
        }
        input.extend_from_slice(&buf[..n]);
    }
}
