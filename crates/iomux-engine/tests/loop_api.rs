//! The loop level of the engine API (`Handle::run_in_loop`, `LoopCx`): work
//! posted from another thread, an adopted stream, a watched descriptor, loop
//! timers. One test per engine that has a loop (named after it); the others
//! refuse. Socket pairs and loopback only, every wait bounded.

#[macro_use]
mod common;

use iomux::Interest;
use iomux_engine::{Config, Engine, Server, WatchId};
use iomux_proto::{Context, Service, Step};
use std::cell::Cell;
use std::io::{ErrorKind, Read, Write};
use std::net::TcpListener;
use std::os::unix::net::UnixStream;
use std::rc::Rc;
use std::sync::mpsc;
use std::time::Duration;

const WAIT: Duration = Duration::from_secs(5);

/// Says how it came in, then echoes.
struct Greeter;

impl Service for Greeter {
    fn on_open(&mut self, cx: &mut Context) {
        cx.write(if cx.adopted() {
            b"adopted\n"
        } else {
            b"accepted\n"
        });
    }

    fn on_data(&mut self, input: &[u8], cx: &mut Context) -> Step {
        cx.write(input);
        Step::keep(input.len())
    }
}

fn engine(name: &str) -> Engine {
    name.parse().unwrap()
}

fn start(name: &str, threads: usize) -> Server {
    let config = Config {
        addr: "127.0.0.1:0".parse().unwrap(),
        threads,
        idle_timeout: Duration::from_secs(10),
        ..Config::default()
    };
    Server::start(config, engine(name), || Greeter).unwrap_or_else(|e| panic!("{name}: {e}"))
}

fn a_job_runs_in_the_loop_it_was_posted_to(name: &str) {
    // sigio: one loop per process-wide signal owner is enough here.
    let threads = if name == "sigio" { 1 } else { 2 };
    let server = start(name, threads);
    let handle = server.handle();
    assert_eq!(handle.loops(), threads);
    let (tx, rx) = mpsc::channel();
    let last = threads - 1;
    let poster = std::thread::spawn(move || {
        handle
            .run_in_loop(last, move |loop_cx| tx.send(loop_cx.loop_index()).unwrap())
            .unwrap();
        handle.run_in_loop(threads, |_| {}).unwrap_err()
    });
    let err = poster.join().unwrap();
    assert_eq!(err.kind(), ErrorKind::InvalidInput, "{err}");
    assert_eq!(rx.recv_timeout(WAIT).expect("the job ran"), last);
}

/// Read as many bytes as `expected` has from `peer`, and check they are those.
fn assert_hears(peer: &mut impl Read, expected: &[u8], what: &str) {
    let mut got = vec![0u8; expected.len()];
    peer.read_exact(&mut got).unwrap();
    assert_eq!(got, expected, "{what}");
}

fn an_adopted_stream_is_served(name: &str) {
    let server = start(name, 1);
    let (ours, mut theirs) = UnixStream::pair().unwrap();
    theirs.set_read_timeout(Some(WAIT)).unwrap();
    let (tx, rx) = mpsc::channel();
    server
        .handle()
        .run_in_loop(0, move |loop_cx| {
            tx.send(loop_cx.adopt(ours).map(|id| id.loop_index()))
                .unwrap()
        })
        .unwrap();
    let adopted = rx.recv_timeout(WAIT).expect("the job ran");
    assert_eq!(adopted.expect("adopted"), 0);
    assert_hears(&mut theirs, b"adopted\n", "the greeting");
    theirs.write_all(b"ping over a socketpair").unwrap();
    assert_hears(&mut theirs, b"ping over a socketpair", "the echo");
}

fn a_watched_descriptor_fires_until_unwatched(name: &str) {
    let server = start(name, 1);
    let handle = server.handle();
    let (watched, mut writer) = UnixStream::pair().unwrap();
    // Open after the loop closes its end on unwatch: writing still works.
    let _kept = watched.try_clone().unwrap();
    let (tx, rx) = mpsc::channel::<Vec<u8>>();
    let (id_tx, id_rx) = mpsc::channel::<()>();
    handle
        .run_in_loop(0, move |loop_cx| {
            let mut reader = watched.try_clone().unwrap();
            reader.set_nonblocking(true).unwrap();
            let id = loop_cx
                .watch(watched, Interest::READABLE, move |_loop_cx, ready| {
                    assert!(ready.readable);
                    let mut got = Vec::new();
                    let mut buf = [0u8; 64];
                    // Until it would block: readiness may be reported once.
                    while let Ok(n @ 1..) = reader.read(&mut buf) {
                        got.extend_from_slice(&buf[..n]);
                    }
                    tx.send(got).unwrap();
                })
                .unwrap();
            // Kept on the loop's thread, to unwatch from a later job.
            UNWATCH.with(|slot| slot.set(Some(id)));
            id_tx.send(()).unwrap();
        })
        .unwrap();
    id_rx.recv_timeout(WAIT).expect("watching");
    writer.write_all(b"first").unwrap();
    assert_eq!(rx.recv_timeout(WAIT).expect("the callback ran"), b"first");
    let (done_tx, done_rx) = mpsc::channel();
    handle
        .run_in_loop(0, move |loop_cx| {
            let id = UNWATCH.with(|slot| slot.take()).expect("the watch's id");
            done_tx
                .send((loop_cx.unwatch(id), loop_cx.unwatch(id)))
                .unwrap();
        })
        .unwrap();
    assert_eq!(done_rx.recv_timeout(WAIT).unwrap(), (true, false));
    writer.write_all(b"second").unwrap();
    assert!(
        rx.recv_timeout(Duration::from_millis(300)).is_err(),
        "an unwatched descriptor's callback never runs"
    );
}

thread_local! {
    /// The loop thread's watch (jobs of one loop run on its thread).
    static UNWATCH: Cell<Option<WatchId>> = const { Cell::new(None) };
}

fn a_loop_timer_fires_once_and_a_cancelled_one_never(name: &str) {
    let server = start(name, 1);
    let (tx, rx) = mpsc::channel::<&'static str>();
    let (cancel_tx, cancel_rx) = mpsc::channel();
    server
        .handle()
        .run_in_loop(0, move |loop_cx| {
            let fired = Rc::new(Cell::new(0));
            let (tx2, count) = (tx.clone(), fired.clone());
            loop_cx.set_timer(Duration::from_millis(30), move |_| {
                count.set(count.get() + 1);
                tx2.send("kept").unwrap();
            });
            let cancelled = loop_cx.set_timer(Duration::from_millis(60), move |_| {
                tx.send("cancelled").unwrap();
            });
            cancel_tx
                .send((
                    loop_cx.cancel_timer(cancelled),
                    loop_cx.cancel_timer(cancelled),
                ))
                .unwrap();
        })
        .unwrap();
    assert_eq!(cancel_rx.recv_timeout(WAIT).unwrap(), (true, false));
    assert_eq!(rx.recv_timeout(WAIT).expect("the timer fired"), "kept");
    assert!(
        rx.recv_timeout(Duration::from_millis(300)).is_err(),
        "fired once, and the cancelled timer never"
    );
}

fn a_loop_connect_is_served_and_a_refused_one_reported(name: &str) {
    let server = start(name, 1);
    let upstream = TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = upstream.local_addr().unwrap();
    // A port nobody listens on any more: loopback refuses it at once.
    let closed = TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap();
    let (tx, rx) = mpsc::channel::<Result<(), ErrorKind>>();
    server
        .handle()
        .run_in_loop(0, move |loop_cx| {
            let refused = tx.clone();
            loop_cx.connect(addr, WAIT, move |_loop_cx, result| {
                tx.send(result.map(drop).map_err(|e| e.kind())).unwrap();
            });
            loop_cx.connect(closed, WAIT, move |_loop_cx, result| {
                refused
                    .send(result.map(drop).map_err(|e| e.kind()))
                    .unwrap();
            });
        })
        .unwrap();
    let mut outcomes = vec![
        rx.recv_timeout(WAIT).expect("told"),
        rx.recv_timeout(WAIT).expect("told"),
    ];
    outcomes.sort_by_key(|o| o.is_err());
    assert_eq!(outcomes, [Ok(()), Err(ErrorKind::ConnectionRefused)]);
    let (mut peer, _) = upstream.accept().unwrap();
    peer.set_read_timeout(Some(WAIT)).unwrap();
    assert_hears(
        &mut peer,
        b"accepted\n",
        "opened like any connection, not adopted",
    );
    peer.write_all(b"served").unwrap();
    assert_hears(&mut peer, b"served", "the echo");
}

fn run_in_loop_is_refused(name: &str) {
    let server = start(name, 1);
    let err = server.handle().run_in_loop(0, |_| {}).unwrap_err();
    assert_eq!(err.kind(), ErrorKind::Unsupported, "{err}");
    assert!(err.to_string().contains(name), "{err}");
}

loop_engines!(
    engine_tests,
    [
        a_job_runs_in_the_loop_it_was_posted_to,
        an_adopted_stream_is_served,
        a_watched_descriptor_fires_until_unwatched,
        a_loop_timer_fires_once_and_a_cancelled_one_never,
        a_loop_connect_is_served_and_a_refused_one_reported,
    ]
);
loopless_engines!(engine_tests, [run_in_loop_is_refused]);

/// The lists above are `Engine::ALL`'s engines with a loop and without: an
/// engine added there fails here until it is tested.
#[test]
fn every_engine_is_tested() {
    let with_loop: Vec<&str> = loop_engines!(engine_names);
    let without: Vec<&str> = loopless_engines!(engine_names);
    assert_eq!(with_loop, common::engines_with_loop(true));
    assert_eq!(without, common::engines_with_loop(false));
}
