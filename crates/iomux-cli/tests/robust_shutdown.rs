//! Graceful shutdown on every engine: SIGTERM stops accepting, closes idle
//! connections at once, lets a message being echoed finish, and exits 0; a
//! second signal exits at once.

#[macro_use]
mod common;

use common::{eventually, push_until_the_server_stops_reading, LoggedServer, Rng};
use std::io::{ErrorKind, Read, Write};
use std::net::{Shutdown, SocketAddr, TcpStream};
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

/// Closing an idle connection "at once": the drain's quiet period plus slack
/// for a loaded machine.
const AT_ONCE: Duration = Duration::from_millis(1500);

/// A busy-polling server burns a core, and a client starved of CPU for longer
/// than the drain's quiet period looks idle: that engine's scenarios run
/// alone, the others beside each other.
static BUSY_POLLER_ALONE: std::sync::RwLock<()> = std::sync::RwLock::new(());

/// A scenario's turn on the CPU, held while it runs: the busy poller's alone,
/// the others' shared.
#[allow(dead_code)] // held for its drop only
enum CpuTurn {
    Alone(std::sync::RwLockWriteGuard<'static, ()>),
    Shared(std::sync::RwLockReadGuard<'static, ()>),
}

fn share_the_cpu_with(engine: &[&str]) -> CpuTurn {
    if engine.contains(&"nonblocking") {
        CpuTurn::Alone(BUSY_POLLER_ALONE.write().unwrap_or_else(|p| p.into_inner()))
    } else {
        CpuTurn::Shared(BUSY_POLLER_ALONE.read().unwrap_or_else(|p| p.into_inner()))
    }
}

fn start(engine: &[&str]) -> LoggedServer {
    let mut args = vec!["--proto", "echo"];
    args.extend_from_slice(engine);
    LoggedServer::start(&args, None)
}

/// A connection that has had one echo (the server has seen it move bytes).
fn connect_and_echo_hello(server: &LoggedServer) -> TcpStream {
    let mut stream = server.server.connect();
    stream.write_all(b"hello").unwrap();
    let mut back = [0u8; 5];
    stream.read_exact(&mut back).unwrap();
    assert_eq!(&back, b"hello");
    stream
}

fn sigterm(server: &LoggedServer) {
    // SAFETY: kill(2) on our own child's pid.
    unsafe { libc::kill(server.server.pid() as i32, libc::SIGTERM) };
}

/// Wait (bounded) for the server to exit after the signal already sent, and
/// assert it exited 0 without a panic.
fn exits_cleanly(server: &mut LoggedServer, within: Duration, engine: &[&str]) {
    let status = server.server.stop_with(0, within);
    let err = server.stderr();
    assert!(status.success(), "{engine:?}: exit {status:?}:\n{err}");
    assert!(!err.contains("panicked"), "{engine:?}:\n{err}");
}

fn refuses_new_connections(addr: SocketAddr) -> bool {
    match TcpStream::connect_timeout(&addr, Duration::from_millis(300)) {
        Err(e) => e.kind() == ErrorKind::ConnectionRefused,
        Ok(_) => false,
    }
}

/// An idle keep-alive connection is closed at once, new connections are
/// refused, and the server exits 0 without waiting out the drain deadline.
fn sigterm_closes_idle_connections_at_once_and_exits_0(engine: &[&str]) {
    let _cpu = share_the_cpu_with(engine);
    let mut server = start(engine);
    let mut idle = connect_and_echo_hello(&server);
    // Quiet for longer than the drain's quiet period.
    std::thread::sleep(Duration::from_millis(400));

    let signalled = Instant::now();
    sigterm(&server);
    idle.set_read_timeout(Some(AT_ONCE)).unwrap();
    let mut buf = [0u8; 1];
    match idle.read(&mut buf) {
        Ok(0) => {}
        other => panic!("{engine:?}: idle connection not closed at once: {other:?}"),
    }
    let closed_after = signalled.elapsed();
    assert!(
        eventually(Duration::from_secs(2), || refuses_new_connections(
            server.server.addr
        )),
        "{engine:?}: still accepting after SIGTERM"
    );
    exits_cleanly(&mut server, Duration::from_secs(2), engine);
    eprintln!(
        "{engine:?}: idle connection closed {closed_after:?} after SIGTERM, exit after {:?}",
        signalled.elapsed()
    );
}
for_engines!(sigterm_closes_idle_connections_at_once_and_exits_0);

/// Send the next `len` bytes of the endless stream that repeats `pattern`;
/// `sent` counts the stream's bytes so far.
fn send_pattern(
    w: &mut TcpStream,
    pattern: &[u8],
    sent: &mut usize,
    len: usize,
) -> std::io::Result<()> {
    let end = *sent + len;
    while *sent < end {
        let at = *sent % pattern.len();
        let n = (end - *sent).min(pattern.len() - at);
        w.write_all(&pattern[at..at + n])?;
        *sent += n;
    }
    Ok(())
}

/// A message streaming in when SIGTERM arrives is echoed to its end.
///
/// The client sends paced chunks until the server has observably begun its
/// drain (it refuses new connections), then the rest at full speed, and reads
/// the echo all along. So the message is mid-stream when the drain starts
/// however late this thread gets the CPU, and what is left moves in well
/// under the drain deadline: no fixed pace has to fit in it on a loaded
/// machine. The bytes repeat a pattern made beforehand, so the sender never
/// stops to make them (a gap would be a quiet peer, rightly closed).
fn in_flight_completes(engine: &[&str], pattern: &Arc<Vec<u8>>) {
    const CHUNK: usize = 32 * 1024;
    /// Sent at full speed once the drain is under way: many reads' worth, and
    /// little enough for a starved server to echo well within the drain
    /// deadline (3 s).
    const REST: usize = 1024 * 1024;
    /// Streaming before SIGTERM: the message is under way.
    const BEFORE_SIGTERM: usize = 256 * 1024;
    let mut server = start(engine);
    let stream = server.server.connect();
    let mut writer = stream.try_clone().unwrap();
    let sent_so_far = Arc::new(AtomicUsize::new(0));
    let draining = Arc::new(AtomicBool::new(false));
    let (progress, drain_seen, bytes) = (sent_so_far.clone(), draining.clone(), pattern.clone());
    let sender = std::thread::spawn(move || -> std::io::Result<usize> {
        let mut sent = 0;
        // Paced, so the server sees a peer in mid-message (not one flooding
        // it); bounded in case the drain is never seen (the test fails then).
        let pacing_since = Instant::now();
        while !drain_seen.load(Ordering::Acquire)
            && pacing_since.elapsed() < Duration::from_secs(20)
        {
            send_pattern(&mut writer, &bytes, &mut sent, CHUNK)?;
            progress.store(sent, Ordering::Release);
            std::thread::sleep(Duration::from_millis(5));
        }
        send_pattern(&mut writer, &bytes, &mut sent, REST)?;
        writer.shutdown(Shutdown::Write)?;
        Ok(sent)
    });
    let reader = std::thread::spawn(move || {
        let mut back = Vec::new();
        let mut r = stream;
        r.read_to_end(&mut back).map(|_| back)
    });
    assert!(
        eventually(Duration::from_secs(10), || sent_so_far
            .load(Ordering::Acquire)
            >= BEFORE_SIGTERM),
        "{engine:?}: the message never got under way"
    );
    let signalled = Instant::now();
    sigterm(&server);
    let drain_started = eventually(Duration::from_secs(10), || {
        refuses_new_connections(server.server.addr)
    });
    draining.store(true, Ordering::Release);
    assert!(drain_started, "{engine:?}: still accepting after SIGTERM");
    let before_drain = sent_so_far.load(Ordering::Acquire);
    let sent = sender.join().unwrap();
    let back = reader.join().unwrap();
    let sent = sent.unwrap_or_else(|e| panic!("{engine:?}: sending failed: {e}"));
    let back = back.unwrap_or_else(|e| panic!("{engine:?}: reading the echo failed: {e}"));
    assert_eq!(
        back.len(),
        sent,
        "{engine:?}: echo cut short by the shutdown ({before_drain} bytes sent before the drain was seen)"
    );
    assert!(
        back.chunks(pattern.len()).all(|c| c == &pattern[..c.len()]),
        "{engine:?}: echo differs"
    );
    exits_cleanly(&mut server, Duration::from_secs(5), engine);
    eprintln!(
        "{engine:?}: in-flight echo of {sent} bytes ({before_drain} before the drain was seen) finished; exit {:?} after SIGTERM",
        signalled.elapsed()
    );
}

/// Whether every thread of process `pid` is stopped (state `T` in its stat).
fn all_threads_stopped(pid: i32) -> bool {
    let Ok(tasks) = std::fs::read_dir(format!("/proc/{pid}/task")) else {
        return false;
    };
    tasks.flatten().all(|task| {
        std::fs::read_to_string(task.path().join("stat")).is_ok_and(|stat| {
            // The state follows the command name, which may hold spaces.
            stat.rfind(')')
                .and_then(|end| stat[end + 1..].split_whitespace().next())
                == Some("T")
        })
    })
}

/// Bytes that reached the server while it could not run (stopped here; on a
/// loaded machine, starved of CPU) are not silence: when the drain starts as
/// it resumes, it reads and echoes them instead of taking a peer whose last
/// bytes it has not read yet for an idle one.
fn sigterm_while_the_server_is_stalled_still_echoes_the_bytes_waiting(engine: &[&str]) {
    let _cpu = share_the_cpu_with(engine);
    let mut server = start(engine);
    let mut stream = connect_and_echo_hello(&server);
    let message = Rng::new(7).bytes(64 * 1024);
    let (waiting, rest) = message.split_at(16 * 1024);
    let pid = server.server.pid() as i32;
    // SAFETY: kill(2) on our own child's pid.
    unsafe { libc::kill(pid, libc::SIGSTOP) };
    // kill(2) returns before the threads stop; bytes sent sooner would be
    // read at once, and the peer would then really be quiet.
    assert!(
        eventually(Duration::from_secs(5), || all_threads_stopped(pid)),
        "{engine:?}: the server did not stop"
    );
    stream.write_all(waiting).unwrap();
    // The scenario itself: the server stays stopped for longer than the
    // drain's quiet period while bytes wait for it.
    std::thread::sleep(Duration::from_millis(600));
    sigterm(&server);
    // SAFETY: as above.
    unsafe { libc::kill(pid, libc::SIGCONT) };
    let reader = {
        let mut r = stream.try_clone().unwrap();
        std::thread::spawn(move || {
            let mut back = Vec::new();
            r.read_to_end(&mut back).map(|_| back)
        })
    };
    // A pause well inside the drain's quiet period, long enough for the
    // server to see the SIGTERM first: the echo of the waiting bytes is
    // activity, so the peer is not quiet yet (a pass that lost the CPU once
    // stamped that echo with its stale start and closed the peer here).
    std::thread::sleep(Duration::from_millis(20));
    let sent = stream
        .write_all(rest)
        .and_then(|()| stream.shutdown(Shutdown::Write));
    let back = reader.join().unwrap();
    assert!(
        sent.is_ok(),
        "{engine:?}: sending after the stall failed: {sent:?}"
    );
    let back = back.unwrap_or_else(|e| panic!("{engine:?}: reading the echo failed: {e}"));
    assert_eq!(
        back.len(),
        message.len(),
        "{engine:?}: the bytes that waited out the stall were taken for silence"
    );
    assert!(back == message, "{engine:?}: echo differs");
    exits_cleanly(&mut server, Duration::from_secs(5), engine);
}
for_engines!(sigterm_while_the_server_is_stalled_still_echoes_the_bytes_waiting);

/// With work still in flight (a client that never reads its echo), a second
/// signal ends the server at once instead of after the drain deadline.
fn a_second_signal_exits_at_once(engine: &[&str]) {
    let _cpu = share_the_cpu_with(engine);
    let mut server = start(engine);
    let stuck = server.server.connect();
    // Push until the server stops taking bytes (its output to us is stuck).
    let (pushed, _) = push_until_the_server_stops_reading(&stuck, Duration::from_millis(300));
    sigterm(&server);
    std::thread::sleep(Duration::from_millis(200));
    let second = Instant::now();
    // The exit status tells "at once" (130) from a drain that ran out its
    // deadline (0), so the bound only has to cover a slow, loaded machine.
    let status = server
        .server
        .stop_with(libc::SIGTERM, Duration::from_secs(5));
    assert!(
        !status.success(),
        "{engine:?}: the second signal should end the server at once, not drain ({status:?}); pushed {pushed}; stderr:\n{}",
        server.stderr()
    );
    eprintln!(
        "{engine:?}: exited {:?} after the second signal",
        second.elapsed()
    );
    drop(stuck);
}
for_engines!(a_second_signal_exits_at_once);

fn sigterm_lets_an_in_flight_echo_finish(engine: &[&str]) {
    let _cpu = share_the_cpu_with(engine);
    // Not a multiple of the chunk size, so chunks do not repeat in step.
    let pattern = Arc::new(Rng::new(5).bytes(1024 * 1024 + 7));
    in_flight_completes(engine, &pattern);
}
for_engines!(sigterm_lets_an_in_flight_echo_finish);

/// HTTP: an idle keep-alive connection closes at once, and a request whose
/// head is still arriving when SIGTERM comes is answered with
/// `Connection: close`, then the connection closes and the server exits 0.
fn sigterm_answers_an_in_flight_http_request_with_connection_close(engine: &[&str]) {
    let _cpu = share_the_cpu_with(engine);
    let mut args = vec!["--proto", "http"];
    args.extend_from_slice(engine);
    let mut server = LoggedServer::start(&args, None);
    let one_at_a_time = engine.contains(&"blocking");
    let idle = (!one_at_a_time).then(|| {
        let mut s = server.server.connect();
        s.write_all(b"GET / HTTP/1.1\r\nHost: idle\r\n\r\n")
            .unwrap();
        let mut buf = [0u8; 1024];
        let n = s.read(&mut buf).unwrap();
        assert!(buf[..n].starts_with(b"HTTP/1.1 200"), "{engine:?}");
        s
    });
    let mut in_flight = server.server.connect();
    in_flight
        .write_all(b"GET /plaintext HTTP/1.1\r\nHost: in-flight\r\n")
        .unwrap();
    std::thread::sleep(Duration::from_millis(400));
    let signalled = Instant::now();
    sigterm(&server);
    if let Some(mut idle) = idle {
        idle.set_read_timeout(Some(AT_ONCE)).unwrap();
        let mut buf = [0u8; 1];
        match idle.read(&mut buf) {
            Ok(0) => {}
            other => panic!("{engine:?}: idle HTTP connection not closed at once: {other:?}"),
        }
    }
    std::thread::sleep(Duration::from_millis(100));
    in_flight.write_all(b"\r\n").unwrap();
    let mut response = Vec::new();
    in_flight
        .read_to_end(&mut response)
        .unwrap_or_else(|e| panic!("{engine:?}: in-flight request: {e}"));
    let text = String::from_utf8_lossy(&response);
    assert!(text.starts_with("HTTP/1.1 200"), "{engine:?}: {text:?}");
    assert!(
        text.to_ascii_lowercase()
            .contains("\r\nconnection: close\r\n"),
        "{engine:?}: the in-flight answer does not say Connection: close: {text:?}"
    );
    assert!(text.ends_with("Hello, World!"), "{engine:?}: {text:?}");
    // Our FIN ends the server's lingering close.
    drop(in_flight);
    exits_cleanly(&mut server, Duration::from_secs(5), engine);
    eprintln!(
        "{engine:?}: HTTP in-flight request answered with Connection: close; exit {:?} after SIGTERM",
        signalled.elapsed()
    );
}
for_engines!(sigterm_answers_an_in_flight_http_request_with_connection_close);
