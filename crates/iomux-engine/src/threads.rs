//! Blocking engines: a thread per connection, and one connection at a time.

use crate::buffer::BufPool;
use crate::life::{admit, LoopSetup};
use crate::session::{Deadline, Env, Fault, Finish, Front, Rules, Session, LINGER};
use crate::shutdown::{ConnLimit, Shutdown};
use crate::sock::{is_file_cut_short, read_append, send_flags, sendfile_once, set_cork};
use crate::stats::LoopStats;
use iomux::net::{Listener, Stream};
use iomux_proto::{ConnId, Service};
use std::io;
use std::net::Shutdown as HalfClose;
use std::os::fd::{AsRawFd, RawFd};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

/// Size of one read.
const READ_CHUNK: usize = 64 * 1024;

/// Accept on a blocking listener until shutdown, handing each connection to `serve`.
fn accept_loop(
    listener: Listener,
    shutdown: &Shutdown,
    max_conns: &ConnLimit,
    mut serve: impl FnMut(Stream),
) -> io::Result<LoopStats> {
    let guard = shutdown.watch_listener(listener.as_raw_fd());
    let mut stats = LoopStats::default();
    while !shutdown.is_triggered() {
        match listener.accept() {
            Ok(stream) => {
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
pub(crate) fn run_threads<P, F>(listener: Listener, setup: LoopSetup<F>) -> io::Result<LoopStats>
where
    P: Service + Send + 'static,
    F: Fn() -> P + Send + Sync + Clone + 'static,
{
    let mut workers: Vec<std::thread::JoinHandle<()>> = Vec::new();
    let mut spawn_failures = 0;
    let blocking = Blocking::new(&setup);
    let mut next_id = 0;
    let (shutdown, max_conns) = (&setup.shutdown, &setup.max_conns);
    let mut stats = accept_loop(listener, shutdown, max_conns, |stream| {
        let (blocking, limit) = (blocking.clone(), max_conns.clone());
        let proto = (setup.new_protocol)();
        next_id += 1;
        let id = ConnId::new(setup.index, next_id);
        // Small stacks: the per-connection loop needs little, and thousands of
        // threads with the default 2 MiB would reserve gigabytes.
        let spawned = std::thread::Builder::new()
            .stack_size(128 * 1024)
            .spawn(move || {
                serve_blocking(stream, proto, id, &blocking);
                limit.release();
            });
        match spawned {
            Ok(handle) => workers.push(handle),
            Err(_) => {
                // Counted (the connection is refused), not printed: a library
                // says nothing; the CLI reports the counters.
                spawn_failures += 1;
                max_conns.release();
            }
        }
        workers.retain(|h| !h.is_finished());
    })?;
    stats.refused += spawn_failures;
    stats.spawn_failures += spawn_failures;
    let config = &setup.config;
    // Let in-flight connections finish; their reads were shut down.
    let deadline = Instant::now() + config.drain_timeout;
    for h in workers {
        while !h.is_finished() && Instant::now() < deadline {
            std::thread::sleep(Duration::from_millis(5));
        }
        if h.is_finished() {
            let _ = h.join();
        }
    }
    blocking.count(&mut stats);
    Ok(stats)
}

/// One connection at a time: the next waits in the backlog.
pub(crate) fn run_blocking<P, F>(listener: Listener, setup: LoopSetup<F>) -> io::Result<LoopStats>
where
    P: Service,
    F: Fn() -> P,
{
    let blocking = Blocking::new(&setup);
    let mut next_id = 0;
    let mut stats = accept_loop(listener, &setup.shutdown, &setup.max_conns, |stream| {
        let proto = (setup.new_protocol)();
        next_id += 1;
        serve_blocking(stream, proto, ConnId::new(setup.index, next_id), &blocking);
        setup.max_conns.release();
    })?;
    blocking.count(&mut stats);
    Ok(stats)
}

/// What every blocking connection loop of one server thread shares.
#[derive(Clone)]
struct Blocking {
    rules: Rules,
    nodelay: bool,
    cork: bool,
    shutdown: Shutdown,
    /// What the connections counted (refused commands, faults, files cut
    /// short), added as it happens (see [`Blocking::publish`]).
    counted: Arc<Mutex<LoopStats>>,
}

impl Blocking {
    /// Add what its connections counted to the engine's stats.
    fn count(&self, stats: &mut LoopStats) {
        stats.add(&self.counted.lock().unwrap_or_else(|e| e.into_inner()));
    }

    fn new<F>(setup: &LoopSetup<F>) -> Blocking {
        Blocking {
            rules: setup.rules,
            nodelay: setup.config.nodelay,
            cork: setup.config.cork,
            shutdown: setup.shutdown.clone(),
            counted: Arc::default(),
        }
    }

    /// Add what a connection counted to the engine's counters now, as it
    /// happens: a stop does not wait for every connection to close (its
    /// drain has a deadline), and what was counted must be in its figures.
    fn publish(&self, counted: &mut LoopStats) {
        if *counted == LoopStats::default() {
            return;
        }
        self.counted
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .add(counted);
        *counted = LoopStats::default();
    }
}

/// Serve one connection on a blocking socket until it closes.
fn serve_blocking<P: Service>(stream: Stream, proto: P, id: ConnId, blocking: &Blocking) {
    let mut counted = LoopStats::default();
    serve_conn(stream, proto, id, blocking, &mut counted);
    blocking.publish(&mut counted);
}

/// The loop of the thread-per-connection and one-at-a-time engines: the
/// rules are the session's; this loop waits, reads and writes, and counts
/// in `stats` as the engines with a loop do (faults by [`Fault::count`]).
fn serve_conn<P: Service>(
    stream: Stream,
    proto: P,
    id: ConnId,
    blocking: &Blocking,
    stats: &mut LoopStats,
) {
    let Blocking {
        rules,
        nodelay,
        cork,
        shutdown,
        counted: _,
    } = blocking;
    let (rules, cork) = (rules, *cork);
    let guard = shutdown.watch_conn(stream.as_raw_fd());
    if *nodelay {
        let _ = stream.set_nodelay(true);
    }
    // The send deadline: one blocked send lasts at most this long (see write_all).
    let _ = stream.set_write_timeout(Some(rules.idle_timeout));
    let fd = stream.as_raw_fd();
    let mut pool = BufPool::new(1, READ_CHUNK);
    let mut commands = Vec::new();
    let mut rbuf: Vec<u8> = Vec::with_capacity(READ_CHUNK);
    let mut session = Session::new(proto, id, Instant::now());
    let mut drained = false;
    macro_rules! env {
        ($now:expr) => {
            Env {
                now: $now,
                rules,
                pool: &mut pool,
                commands: &mut commands,
                blocking: None,
            }
        };
    }
    let mut result = session.on_open(None, &mut env!(Instant::now()));
    loop {
        // Connects among them are answered `Unsupported`.
        let (refused, told) = session.refuse_commands(&mut env!(Instant::now()));
        stats.refused_commands += refused;
        let fault = result.and(told).err();
        if let Some(fault) = &fault {
            fault.count(stats);
        }
        blocking.publish(stats);
        // A graceful fault (the input cap reached) still sends its output.
        if fault.is_some_and(|f| !f.is_graceful()) {
            return;
        }
        result = Ok(());
        if let Some(front) = session.front() {
            let sent = match write_all(&stream, front, cork, rules.output_high_water) {
                Ok(sent) => sent,
                Err(e) => {
                    if is_file_cut_short(&e) {
                        Fault::FileCutShort.count(stats);
                        blocking.publish(stats);
                    }
                    return;
                }
            };
            result = session
                .on_sent(sent, None, &mut env!(Instant::now()))
                .map(|_| ());
            if result.is_ok() && session.take_due() {
                // Input the service stopped answering at the output mark
                // (or released) is answered on now that its peer read.
                result = session.run_due(None, &mut env!(Instant::now())).map(drop);
            }
            continue;
        }
        if session.ready_to_finish() {
            break;
        }
        // A drain closes this connection once it is idle and quiet.
        guard.mark(session.between_messages());
        let now = Instant::now();
        match session.on_deadline(None, &mut env!(now)) {
            Deadline::Later(deadline) => match wait_readable(fd, deadline - now) {
                Ok(true) => {}
                Ok(false) => continue,
                Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
                Err(_) => return,
            },
            Deadline::TimedOut => continue, // its last word is sent, then it closes
            // (No connects here: they were refused.)
            Deadline::Close | Deadline::ConnectTimedOut => break,
        }
        // Busy before the bytes leave the socket: until this mark a drain
        // sees them waiting there, from it on it sees a busy connection, so
        // it never takes a peer in mid-message for a quiet one.
        guard.mark(false);
        let _ =
            stream.set_read_timeout(Some(session.deadline(rules).saturating_duration_since(now)));
        rbuf.clear();
        result = match read_append(fd, &mut rbuf, READ_CHUNK) {
            Ok(0) => session.on_eof(None, &mut env!(Instant::now())),
            Ok(_) => {
                if !drained && shutdown.is_triggered() {
                    drained = true;
                    session.begin_drain();
                }
                session.on_received(&rbuf, None, &mut env!(Instant::now()))
            }
            Err(e) if e.kind() == io::ErrorKind::Interrupted => Ok(()),
            // Nothing was there after all: as quiet as before.
            Err(e)
                if matches!(
                    e.kind(),
                    io::ErrorKind::WouldBlock | io::ErrorKind::TimedOut
                ) =>
            {
                Ok(())
            }
            Err(_) => return,
        };
        // Busy while output is owed: a drain must not count a blocked send as quiet.
        guard.mark(session.between_messages() && session.owed() == 0);
    }
    drop(guard);
    if session.finish(Instant::now(), &mut pool) == Finish::Linger {
        linger_close(stream);
    }
    // It tells the protocol; the timer ids it returns belong to no wheel here.
    drop(session.release(&mut pool, &mut commands));
}

/// Wait until `fd` has input (or its end) to read, for at most `timeout`;
/// false when the time ran out. The bytes stay in the socket.
fn wait_readable(fd: RawFd, timeout: Duration) -> io::Result<bool> {
    let mut pfd = libc::pollfd {
        fd,
        events: libc::POLLIN,
        revents: 0,
    };
    // Rounded up to whole milliseconds, so the wait never ends early.
    let ms = timeout.as_nanos().div_ceil(1_000_000).min(i32::MAX as u128) as i32;
    // SAFETY: poll reads and writes one live pollfd.
    let n = unsafe { libc::poll(&mut pfd, 1, ms) };
    if n < 0 {
        Err(io::Error::last_os_error())
    } else {
        Ok(n > 0)
    }
}

/// Send all of the front of a connection's queue (bytes, or a file region
/// with blocking `sendfile`) on a blocking socket whose send timeout is the
/// send deadline; returns its length. A send that returns short (or EAGAIN)
/// was blocked for the whole deadline; if the peer took less than `floor`
/// bytes in that time it is reading too slowly to keep (a slow-read
/// attack), and the send fails.
fn write_all(stream: &Stream, front: Front, cork: bool, floor: usize) -> io::Result<usize> {
    let total = match front {
        Front::Bytes { bytes, .. } => bytes.len(),
        Front::File(region) => usize::try_from(region.len()).unwrap_or(usize::MAX),
    };
    let fd = stream.as_raw_fd();
    // A file and the head before it (MSG_MORE) go uncorked (Config::cork).
    let cork = cork && matches!(front, Front::Bytes { more: false, .. });
    if cork {
        set_cork(fd, true);
    }
    let mut sent = 0;
    // A short sendfile may be the file's end rather than the send timeout:
    // the next call tells (the end is an error at once).
    let mut short_file_step = false;
    let result = loop {
        if sent == total {
            break Ok(total);
        }
        let step = match front {
            // A head before a file goes with MSG_MORE: it shares a segment with the body.
            Front::Bytes { bytes, more } => {
                send_flags(fd, &bytes[sent..], if more { libc::MSG_MORE } else { 0 })
            }
            Front::File(region) => sendfile_once(fd, region, sent, total - sent),
        };
        match step {
            Ok(n) => {
                sent += n;
                let short = sent < total && n < floor;
                if short && matches!(front, Front::File(_)) && !short_file_step {
                    short_file_step = true;
                    continue;
                }
                short_file_step = false;
                if short {
                    break Err(io::Error::new(
                        io::ErrorKind::TimedOut,
                        "peer reads too slowly: send deadline passed",
                    ));
                }
            }
            Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
            Err(e) => break Err(e),
        }
    };
    if cork {
        set_cork(fd, false);
    }
    result
}

/// Send our FIN, then read and discard until the peer's FIN (or `LINGER`),
/// so the close does not reset a response the peer has not read yet.
fn linger_close(stream: Stream) {
    if stream.shutdown(HalfClose::Write).is_err() {
        return;
    }
    let until = Instant::now() + LINGER;
    let mut sink = [0u8; 4096];
    while let Some(left) = until
        .checked_duration_since(Instant::now())
        .filter(|d| !d.is_zero())
    {
        let _ = stream.set_read_timeout(Some(left));
        // SAFETY: reads into a live stack buffer of its own length.
        let n = unsafe { libc::read(stream.as_raw_fd(), sink.as_mut_ptr().cast(), sink.len()) };
        if n <= 0 {
            break;
        }
    }
}
