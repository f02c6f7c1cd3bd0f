//! Blocking engines: a thread per connection, and one connection at a time.

use crate::conn::{admit, serve_blocking};
use crate::reactor::LoopStats;
use crate::shutdown::{ConnLimit, Shutdown};
use crate::Config;
use iomux_proto::Protocol;
use std::io;
use std::net::{TcpListener, TcpStream};
use std::os::fd::AsRawFd;
use std::time::Duration;

/// Accept on a blocking listener until shutdown, handing each connection to `serve`.
fn accept_loop(
    listener: TcpListener,
    shutdown: &Shutdown,
    max_conns: &ConnLimit,
    mut serve: impl FnMut(TcpStream),
) -> io::Result<LoopStats> {
    let guard = shutdown.watch_listener(listener.as_raw_fd());
    let mut stats = LoopStats::default();
    while !shutdown.is_triggered() {
        match listener.accept() {
            Ok((stream, _)) => {
                if admit(max_conns, shutdown.is_triggered(), &mut stats) {
                    serve(stream);
                }
            }
            Err(e) => match e.raw_os_error() {
                Some(libc::EMFILE | libc::ENFILE | libc::ENOBUFS | libc::ENOMEM) => {
                    // Out of resources: back off instead of spinning; the
                    // backlog holds the connection until descriptors free up.
                    std::thread::sleep(Duration::from_millis(20));
                }
                _ if shutdown.is_triggered() => break,
                Some(libc::EINTR | libc::ECONNABORTED | libc::EPROTO) => {}
                _ => {}
            },
        }
    }
    drop(guard);
    Ok(stats)
}

/// A thread per connection on blocking sockets.
pub(crate) fn run_threads<P, F>(
    listener: TcpListener,
    config: &Config,
    shutdown: &Shutdown,
    max_conns: &ConnLimit,
    new_protocol: F,
) -> io::Result<LoopStats>
where
    P: Protocol + Send + 'static,
    F: Fn() -> P + Send + Sync + Clone + 'static,
{
    let mut workers: Vec<std::thread::JoinHandle<()>> = Vec::new();
    let stats = accept_loop(listener, shutdown, max_conns, |stream| {
        let (config, shutdown, limit) = (config.clone(), shutdown.clone(), max_conns.clone());
        let proto = new_protocol();
        // Small stacks: the per-connection loop needs little, and thousands of
        // threads with the default 2 MiB would reserve gigabytes.
        let spawned = std::thread::Builder::new()
            .stack_size(128 * 1024)
            .spawn(move || {
                serve_blocking(stream, proto, &config, &shutdown);
                limit.release();
            });
        match spawned {
            Ok(handle) => workers.push(handle),
            Err(e) => {
                eprintln!("iomux: cannot start a connection thread: {e}; lower the load or use --backend epoll");
                max_conns.release();
            }
        }
        workers.retain(|h| !h.is_finished());
    })?;
    // Let in-flight connections finish; their reads were shut down.
    let deadline = std::time::Instant::now() + config.drain_timeout;
    for h in workers {
        while !h.is_finished() && std::time::Instant::now() < deadline {
            std::thread::sleep(Duration::from_millis(5));
        }
        if h.is_finished() {
            let _ = h.join();
        }
    }
    Ok(stats)
}

/// One connection at a time: the next waits in the backlog.
pub(crate) fn run_blocking<P, F>(
    listener: TcpListener,
    config: &Config,
    shutdown: &Shutdown,
    max_conns: &ConnLimit,
    new_protocol: F,
) -> io::Result<LoopStats>
where
    P: Protocol,
    F: Fn() -> P,
{
    accept_loop(listener, shutdown, max_conns, |stream| {
        serve_blocking(stream, new_protocol(), config, shutdown);
        max_conns.release();
    })
}
