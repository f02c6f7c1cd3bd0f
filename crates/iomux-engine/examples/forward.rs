//! A TCP forwarder on the public API: every connection to LISTEN is paired
//! with a new one to UPSTREAM, made by the loop itself (`Context::connect`),
//! and bytes are copied both ways with backpressure in each direction
//! (`Context::forward_to`); half-closes pass through. The protocol is in
//! `forwarder/mod.rs`, which the tests run too.
//!
//! ```sh
//! cargo run --release -p iomux-engine --example forward -- 127.0.0.1:7001 127.0.0.1:6379
//! cargo run --release -p iomux-engine --example forward -- 127.0.0.1:7001 127.0.0.1:6379 uring
//! redis-cli -p 7001 ping
//! ```

mod forwarder;

use iomux_engine::{Config, Engine, Server, StopSignals};
use std::io;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

/// How long the upstream has to accept a connection.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(5);

fn main() {
    if let Err(e) = run() {
        eprintln!("forward: {e}");
        std::process::exit(1);
    }
}

fn run() -> io::Result<()> {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let usage = || io::Error::other("usage: forward LISTEN_ADDR UPSTREAM_ADDR [ENGINE]");
    if args.len() > 3 {
        return Err(usage());
    }
    let addr = |i: usize| -> io::Result<SocketAddr> {
        let text = args.get(i).ok_or_else(usage)?;
        text.parse().map_err(|e| {
            io::Error::other(format!(
                "'{text}' is not an address like 127.0.0.1:7001: {e}"
            ))
        })
    };
    let (listen, upstream) = (addr(0)?, addr(1)?);
    let engine: Engine = args
        .get(2)
        .map_or("epoll-edge", String::as_str)
        .parse()
        .map_err(io::Error::other)?;
    if !engine.carries_out_commands() {
        return Err(io::Error::other(format!(
            "{engine} cannot open upstream connections; try epoll-edge or uring"
        )));
    }
    let config = Config {
        addr: listen,
        nodelay: true,
        idle_timeout: Duration::from_secs(600),
        ..Config::default()
    };
    let report = Arc::new(|e: io::Error| eprintln!("forward: {e}"));
    let signals = StopSignals::block()?; // before the loops start: they inherit it
    let server = Server::start(
        config,
        engine,
        forwarder::factory(upstream, CONNECT_TIMEOUT, report),
    )?;
    println!(
        "forwarding {} to {upstream} ({engine}); Ctrl-C to stop",
        server.local_addr()
    );
    signals.wait();
    server.shutdown(); // stop accepting; what is in flight still goes through
    server.join().map(drop)
}
