//! The busy-polling engine: non-blocking sockets in one thread, each tried in
//! turn. It works, and burns a core doing it: the model that shows why
//! multiplexing exists. The connection rules are the [`Session`]'s.

use crate::buffer::BufPool;
use crate::life::{admit, LoopSetup};
use crate::session::{Deadline, Env, Fault, Finish, Session};
use crate::sock::{input_waiting, is_file_cut_short, read_append, send_front, shutdown_write};
use crate::stats::LoopStats;
use iomux::net::{Accepted, Acceptor, Listener, Stream};
use iomux_proto::{ConnId, Service};
use std::io;
use std::os::fd::AsRawFd;
use std::time::Instant;

/// Size of one read.
const READ_CHUNK: usize = 16 * 1024;

/// Most bytes of a file region one connection sends per pass, so one
/// download does not hold up the others.
const FILE_BYTES_PER_PASS: usize = 256 * 1024;

struct Conn<P> {
    stream: Stream,
    session: Session<P>,
    /// TCP_NODELAY is on (configured, or set to copy a file in pieces).
    nodelay: bool,
}

/// Busy-poll until shutdown.
pub(crate) fn run<P, F>(listener: Listener, setup: LoopSetup<F>) -> io::Result<LoopStats>
where
    P: Service,
    F: Fn() -> P,
{
    let mut acceptor = Acceptor::new()?;
    let mut conns: Vec<Conn<P>> = Vec::new();
    let mut stats = LoopStats::default();
    let mut pool = BufPool::new(64, READ_CHUNK);
    let mut rbuf = Vec::with_capacity(READ_CHUNK);
    let mut listener = Some(listener);
    let mut drain_until = None;
    let mut commands = Vec::new();
    let mut next_id = 0;
    loop {
        let now = Instant::now();
        if setup.shutdown.is_triggered() && drain_until.is_none() {
            listener = None;
            drain_until = Some(now + setup.config.drain_timeout);
            for c in conns.iter_mut() {
                c.session.begin_drain();
            }
        }
        if let Some(until) = drain_until {
            // This runs before the pass reads: what arrived while this loop
            // waited for the CPU is still in the socket, and is not quiet.
            let before = conns.len();
            conns.retain(|c| {
                let fd = c.stream.as_raw_fd();
                !c.session.closable_on_drain(now, || input_waiting(fd))
            });
            count_closed(&setup, &mut stats, before - conns.len());
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
                if !admit(&setup.max_conns, setup.shutdown.is_triggered(), &mut stats) {
                    continue;
                }
                if setup.config.nodelay {
                    let _ = stream.set_nodelay(true);
                }
                next_id += 1;
                let id = ConnId::new(setup.index, next_id);
                let mut session = Session::new((setup.new_protocol)(), id, now);
                let mut env = Env {
                    now,
                    rules: &setup.rules,
                    pool: &mut pool,
                    commands: &mut commands,
                    blocking: None,
                };
                let opened = session.on_open(None, &mut env);
                let opened = opened.and(refuse_commands(&mut session, &mut env, &mut stats));
                if let Err(fault) = opened {
                    fault.count(&mut stats);
                    count_closed(&setup, &mut stats, 1);
                    continue;
                }
                conns.push(Conn {
                    stream,
                    session,
                    nodelay: setup.config.nodelay,
                });
            }
        }
        let before = conns.len();
        let mut moved = false;
        conns.retain_mut(|c| {
            let mut env = Env {
                now,
                rules: &setup.rules,
                pool: &mut pool,
                commands: &mut commands,
                blocking: None,
            };
            let keep = poll_conn(c, &mut env, &mut rbuf, &mut stats, &mut moved);
            // Run even after a fault: the commands of the call are this
            // connection's, and must not reach the next one's.
            match refuse_commands(&mut c.session, &mut env, &mut stats) {
                Ok(()) => keep,
                Err(fault) => {
                    fault.count(&mut stats);
                    false
                }
            }
        });
        count_closed(&setup, &mut stats, before - conns.len());
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
        setup.max_conns.release();
    }
    stats.shed = acceptor.shed;
    Ok(stats)
}

/// This engine carries out no protocol commands (writes to other
/// connections, closes of others, timers): they are counted as refused, and
/// a connect is answered `Unsupported`. The fault, when that answer faulted.
fn refuse_commands<P: Service>(
    session: &mut Session<P>,
    env: &mut Env,
    stats: &mut LoopStats,
) -> Result<(), Fault> {
    let (refused, told) = session.refuse_commands(env);
    stats.refused_commands += refused;
    told
}

fn count_closed<F>(setup: &LoopSetup<F>, stats: &mut LoopStats, closed: usize) {
    for _ in 0..closed {
        setup.max_conns.release();
    }
    stats.closed += closed as u64;
}

/// Try one read and one write on a connection; false when it is done.
/// `moved` is set when bytes (or the peer's FIN) moved.
fn poll_conn<P: Service>(
    c: &mut Conn<P>,
    env: &mut Env,
    rbuf: &mut Vec<u8>,
    stats: &mut LoopStats,
    moved: &mut bool,
) -> bool {
    let fd = c.stream.as_raw_fd();
    if c.session.is_lingering() {
        // Our FIN is out: discard the peer's input until its FIN (or LINGER),
        // so unread bytes do not turn the close into a reset.
        rbuf.clear();
        return match read_append(fd, rbuf, READ_CHUNK) {
            Ok(0) => false,
            Ok(_) => {
                *moved = true;
                true
            }
            Err(e) if e.kind() == io::ErrorKind::WouldBlock => {
                !matches!(c.session.on_deadline(None, env), Deadline::Close)
            }
            Err(e) if e.kind() == io::ErrorKind::Interrupted => true,
            Err(_) => false,
        };
    }
    if c.session.reading() {
        stats.reads += 1;
        rbuf.clear();
        let result = match read_append(fd, rbuf, READ_CHUNK) {
            Ok(0) => {
                *moved = true;
                c.session.on_eof(None, env)
            }
            Ok(_) => {
                *moved = true;
                // The time the bytes were taken, not the pass's start: this
                // loop loses the CPU often (it never blocks), and a stale
                // stamp would make a drain take the peer for quiet.
                let pass_start = env.now;
                env.now = Instant::now();
                let received = c.session.on_received(rbuf, None, env);
                env.now = pass_start;
                received
            }
            Err(e) if e.kind() == io::ErrorKind::WouldBlock => {
                stats.read_eagain += 1;
                Ok(())
            }
            Err(e) if e.kind() == io::ErrorKind::Interrupted => Ok(()),
            Err(_) => return false,
        };
        if let Err(fault) = result {
            fault.count(stats);
            // A graceful fault (the input cap reached) still sends its output.
            if !fault.is_graceful() {
                return false;
            }
        }
    }
    match c.session.on_deadline(None, env) {
        Deadline::Later(_) => {}
        Deadline::TimedOut => stats.timeouts += 1,
        // A closing connection whose peer will not take its last output is dropped.
        Deadline::Close | Deadline::ConnectTimedOut => return false,
    }
    if let Some(front) = c.session.front() {
        stats.writes += 1;
        match send_front(fd, front, FILE_BYTES_PER_PASS, &mut c.nodelay) {
            Ok((n, tried)) => {
                *moved |= n > 0;
                if n < tried {
                    stats.write_blocked += 1;
                }
                if let Err(fault) = c.session.on_sent(n, None, env) {
                    fault.count(stats);
                    return false;
                }
                // Input the service stopped answering at the output mark
                // (or released) is answered on now that its peer read.
                if c.session.take_due() {
                    if let Err(fault) = c.session.run_due(None, env) {
                        fault.count(stats);
                        return false;
                    }
                }
            }
            Err(e) => {
                if is_file_cut_short(&e) {
                    Fault::FileCutShort.count(stats);
                }
                return false;
            }
        }
    }
    if !c.session.ready_to_finish() {
        return true;
    }
    match c.session.finish(env.now, env.pool) {
        // Flush: TLS's close_notify, which this engine does not serve.
        Finish::Close | Finish::Flush => false,
        // (No half-close here: its command was refused.)
        Finish::Linger | Finish::ShutWrite => shutdown_write(fd).is_ok(),
    }
}
