//! The busy-polling engine: non-blocking sockets in one thread, each tried in
//! turn. It works, and burns a core doing it: the model that shows why
//! multiplexing exists.

use crate::conn::{
    admit, note_send, read_append, send_available, LINGER, MAX_PENDING_INPUT, READ_CHUNK,
};
use crate::reactor::LoopStats;
use crate::shutdown::{peer_quiet, ConnLimit, Shutdown};
use crate::Config;
use iomux::net::{Accepted, Acceptor};
use iomux_proto::Protocol;
use std::io;
use std::net::TcpListener;
use std::net::TcpStream;
use std::os::fd::AsRawFd;
use std::time::Instant;

struct Conn<P> {
    stream: TcpStream,
    proto: P,
    input: Vec<u8>,
    output: Vec<u8>,
    last_active: Instant,
    /// Bytes sent since `last_active` while output was pending (the send deadline).
    send_progress: usize,
    closing: bool,
}

pub(crate) fn run<P, F>(
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
    let mut acceptor = Acceptor::new()?;
    let mut conns: Vec<Conn<P>> = Vec::new();
    let mut stats = LoopStats::default();
    let mut listener = Some(listener);
    let mut drain_until = None;
    loop {
        let now = Instant::now();
        if shutdown.is_triggered() && drain_until.is_none() {
            listener = None;
            drain_until = Some(now + config.drain_timeout);
            for c in conns.iter_mut() {
                c.proto.on_drain();
            }
        }
        if let Some(until) = drain_until {
            // Close connections between messages, with nothing buffered, whose
            // peer has been quiet a moment (a message still streaming in goes on).
            // This runs before the pass reads: what arrived while this loop
            // waited for the CPU is still in the socket, and is not quiet.
            let before = conns.len();
            conns.retain(|c| {
                !(c.proto.is_idle()
                    && c.input.is_empty()
                    && c.output.is_empty()
                    && peer_quiet(c.stream.as_raw_fd(), c.last_active, now))
            });
            for _ in conns.len()..before {
                max_conns.release();
                stats.closed += 1;
            }
            if conns.is_empty() || now >= until {
                break;
            }
        }
        if let Some(l) = listener.as_ref() {
            loop {
                let stream = match acceptor.accept(l) {
                    Ok(Accepted::Conn(stream)) => stream,
                    Ok(Accepted::Shed) => continue,
                    Ok(Accepted::Drained) | Err(_) => break,
                };
                if !admit(max_conns, shutdown.is_triggered(), &mut stats) {
                    continue;
                }
                if config.nodelay {
                    let _ = stream.set_nodelay(true);
                }
                conns.push(Conn {
                    stream,
                    proto: new_protocol(),
                    input: Vec::new(),
                    output: Vec::new(),
                    last_active: now,
                    send_progress: 0,
                    closing: false,
                });
            }
        }
        let before = conns.len();
        let mut moved = false;
        conns.retain_mut(|c| poll_conn(c, now, config, &mut stats, &mut moved));
        for _ in conns.len()..before {
            max_conns.release();
            stats.closed += 1;
        }
        // Nothing to wait on: that is the point of this engine. After a pass
        // that moved nothing, yield so a machine with one core still runs the
        // clients; not after one that did: on a loaded machine a yield can
        // cost a whole round of the other tasks, and one chunk per round is
        // too slow to finish a message within the drain deadline.
        if !moved {
            std::thread::yield_now();
        }
    }
    for _ in 0..conns.len() {
        max_conns.release();
    }
    stats.shed = acceptor.shed;
    Ok(stats)
}

/// Try one read and one write on a connection; false when it is done.
/// `moved` is set when bytes (or the peer's FIN) moved.
fn poll_conn<P: Protocol>(
    c: &mut Conn<P>,
    now: Instant,
    config: &Config,
    stats: &mut LoopStats,
    moved: &mut bool,
) -> bool {
    let fd = c.stream.as_raw_fd();
    if !c.closing && c.output.len() < config.output_high_water {
        let was_idle = c.proto.is_idle();
        stats.reads += 1;
        match read_append(fd, &mut c.input, READ_CHUNK) {
            Ok(0) => {
                *moved = true;
                c.proto.on_eof(&c.input, &mut c.output);
                c.input.clear();
                c.closing = true;
            }
            Ok(_) => {
                *moved = true;
                // A peer that leaves its output untaken cannot keep its
                // connection alive by sending more (slow read).
                let owed = !c.output.is_empty();
                let step = c.proto.on_input(&c.input, &mut c.output);
                c.input.drain(..step.consumed);
                if (was_idle || c.proto.is_idle()) && !owed {
                    // The time the bytes were taken, not the pass's start:
                    // this loop loses the CPU often (it never blocks), and a
                    // stale stamp would make a drain take the peer for quiet.
                    c.last_active = Instant::now();
                }
                if step.close {
                    c.closing = true;
                    c.input = Vec::new();
                }
                if c.input.len() > MAX_PENDING_INPUT {
                    return false;
                }
            }
            Err(e) if e.kind() == io::ErrorKind::WouldBlock => stats.read_eagain += 1,
            Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
            Err(_) => return false,
        }
    }
    if !c.closing && now.duration_since(c.last_active) >= config.idle_timeout {
        c.proto.on_timeout(&mut c.output);
        c.closing = true;
        // The last output (an HTTP 408) gets its own LINGER to be taken.
        c.last_active = now;
        stats.timeouts += 1;
    }
    if !c.output.is_empty() {
        stats.writes += 1;
        match send_available(fd, &c.output) {
            Ok(n) => {
                *moved |= n > 0;
                if n < c.output.len() {
                    stats.write_blocked += 1;
                }
                let all_sent = n == c.output.len();
                c.output.drain(..n);
                note_send(
                    &mut c.send_progress,
                    &mut c.last_active,
                    now,
                    n,
                    all_sent,
                    config.output_high_water,
                );
            }
            Err(_) => return false,
        }
    }
    if c.input.capacity() > 0 && c.input.is_empty() {
        c.input = Vec::new();
    }
    if c.output.capacity() > 0 && c.output.is_empty() {
        c.output = Vec::new();
    }
    // A closing connection whose peer will not take its last output is dropped.
    let stuck = c.closing && now.duration_since(c.last_active) >= LINGER;
    let finished = c.closing && c.output.is_empty();
    !(finished || stuck)
}
