//! Peers that stop taking their output, on every engine: one that also
//! half-closes must not make the server spin while it waits for the peer to
//! read (issue 18, item 1), and one that never reads is closed about one idle
//! timeout after it stopped, plus the 2 s given to the last output, not two
//! idle timeouts (issue 18, item 2).

#[macro_use]
mod common;

use common::{cpu_share_over, push_until_the_server_stops_reading, tcp_queues, LoggedServer};
use std::io::Write;
use std::net::{Shutdown, TcpStream};
use std::time::{Duration, Instant};

/// Send 64 KiB at a time until the server stops reading, every byte sent
/// delivered: the server's receive queue holds bytes it leaves unread and our
/// send queue is empty, so a FIN sent now reaches the server at once instead
/// of waiting behind unsent bytes. Returns the bytes sent.
fn send_until_the_server_stops_reading_with_nothing_in_flight(stream: &TcpStream) -> usize {
    let chunk = vec![b'p'; 64 * 1024];
    let mut sent = 0;
    // Bounded: the server's output limit is 256 KiB, the kernel queues on the
    // way back take a few MB.
    while sent < 32 * 1024 * 1024 {
        (&*stream).write_all(&chunk).expect("send");
        sent += chunk.len();
        // Unread bytes that stay unread for 100 ms: the server stopped reading.
        std::thread::sleep(Duration::from_millis(10));
        let (_, server) = tcp_queues(stream);
        if server.receive == 0 {
            continue;
        }
        std::thread::sleep(Duration::from_millis(100));
        let (ours, server_later) = tcp_queues(stream);
        if server_later.receive >= server.receive && ours.send == 0 {
            return sent;
        }
    }
    panic!("the server kept reading {sent} bytes from a peer that reads nothing");
}

/// A CPU share that only a loop with nothing to do but spin exceeds: a
/// correct server sleeps in its wait while the peer takes nothing (0.0% here,
/// where one clock tick over the window is 0.7%); a spinning one gets what
/// the machine gives it (19-31% of a core with other tests beside it).
const MAX_IDLE_CPU_SHARE: f64 = 0.05;

/// A peer owed more output than the server's limit (so the server stopped
/// reading it) half-closes and never reads. Its FIN waits unread behind the
/// paused input: a level-triggered or one-shot wait that keeps reporting it
/// (RDHUP) while the send keeps failing with EAGAIN would loop at full CPU.
fn a_paused_half_closed_peer_does_not_make_the_server_spin(engine: &[&str]) {
    let mut args = vec!["--proto", "echo", "--idle-timeout", "30"];
    args.extend_from_slice(engine);
    let mut server = LoggedServer::start(&args, None);
    let pid = server.server.pid();
    std::thread::sleep(Duration::from_millis(100));
    let baseline_fds = server.server.fd_count();
    let stream = server.server.connect();
    let pushed = send_until_the_server_stops_reading_with_nothing_in_flight(&stream);
    stream.shutdown(Shutdown::Write).unwrap();
    std::thread::sleep(Duration::from_millis(200));
    let (ours, _) = tcp_queues(&stream);
    assert_eq!(
        ours.send, 0,
        "{engine:?}: our FIN is not delivered yet: the scenario did not happen"
    );
    let share = cpu_share_over(pid, Duration::from_millis(1500));
    let fds = server.server.fd_count();
    eprintln!(
        "{engine:?}: {:.1}% of a core over 1.5 s with a half-closed peer owed output ({pushed} bytes pushed); {fds} fds (baseline {baseline_fds})",
        share * 100.0
    );
    assert!(
        fds > baseline_fds,
        "{engine:?}: the server closed the connection before the measurement: the scenario did not happen"
    );
    assert!(
        share < MAX_IDLE_CPU_SHARE,
        "{engine:?}: the server used {:.0}% of a core while a half-closed peer owed output took nothing: it spins",
        share * 100.0
    );
    drop(stream);
    server.stop_cleanly(&format!("{engine:?}"));
}
for_engines!(
    a_paused_half_closed_peer_does_not_make_the_server_spin,
    sleeping_or_one_at_a_time
);

/// The idle timeout of the slow-reader test, in seconds: longer than the
/// 2 s given to a timed-out connection's last output, so that a connection
/// kept for a second idle timeout (2T) stands apart from one closed after
/// T plus those 2 s.
const IDLE_TIMEOUT_SECS: u64 = 4;
/// The time a timed-out connection is given for its last output
/// (iomux-engine's LINGER).
const LAST_OUTPUT: Duration = Duration::from_secs(2);
/// Scheduling slack on a loaded machine (the engines' timers are exact to a
/// few milliseconds).
const SLACK: Duration = Duration::from_millis(750);

/// A peer that sends and never reads: the send deadline (the idle timeout)
/// runs from the server's last progress, then the server gives the last
/// output 2 s and closes. So the server's descriptor for it is gone within
/// T + 2 s of the peer's last accepted write (the server's last progress was
/// no later than that).
fn a_slow_reader_is_closed_one_idle_timeout_after_it_stopped(engine: &[&str]) {
    let timeout = IDLE_TIMEOUT_SECS.to_string();
    let mut args = vec!["--proto", "echo", "--idle-timeout", &timeout];
    args.extend_from_slice(engine);
    let mut server = LoggedServer::start(&args, None);
    std::thread::sleep(Duration::from_millis(100));
    let baseline_fds = server.server.fd_count();
    let stream = server.server.connect();
    let (pushed, last_write) =
        push_until_the_server_stops_reading(&stream, Duration::from_millis(300));
    let promised = Duration::from_secs(IDLE_TIMEOUT_SECS) + LAST_OUTPUT;
    // Watch the server's descriptors (bounded: past 2T + 2 s plus slack).
    let give_up = last_write + 2 * promised;
    let closed_at = loop {
        if server.server.fd_count() <= baseline_fds {
            break Some(Instant::now());
        }
        if Instant::now() > give_up {
            break None;
        }
        std::thread::sleep(Duration::from_millis(20));
    };
    let lifetime = closed_at.map(|at| at - last_write);
    eprintln!(
        "{engine:?}: a peer that never reads ({pushed} bytes pushed) was closed {lifetime:?} after its last write; idle timeout {IDLE_TIMEOUT_SECS} s"
    );
    let lifetime = lifetime.unwrap_or_else(|| {
        panic!(
            "{engine:?}: the server still holds a peer that never reads {:?} after its last write",
            2 * promised
        )
    });
    assert!(
        lifetime <= promised + SLACK,
        "{engine:?}: a peer that never reads lived {lifetime:?} after its last write: more than the idle timeout ({IDLE_TIMEOUT_SECS} s) plus {LAST_OUTPUT:?} for the last output"
    );
    drop(stream);
    server.stop_cleanly(&format!("{engine:?}"));
}
for_engines!(a_slow_reader_is_closed_one_idle_timeout_after_it_stopped);
