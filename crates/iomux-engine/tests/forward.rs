//! The TCP forwarder of the `forward` example (its protocol, shared through
//! `examples/forwarder/mod.rs`) in front of an iomux echo server, on every
//! engine that carries out commands: each test here expands to one test per
//! engine, named after it. Loopback only, ephemeral ports.

#[macro_use]
mod common;
#[path = "../examples/forwarder/mod.rs"]
mod forwarder;

use iomux_engine::{Config, Engine, LoopStats, Server};
use iomux_proto::Echo;
use std::io::{self, Read, Write};
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::sync::{Arc, Mutex};
use std::thread;
use std::time::{Duration, Instant};

/// The forwarder's output high-water mark (the engine's default).
const HIGH_WATER: usize = 256 * 1024;

/// Errors the forwarder's protocol was told about (failed upstream connects).
type Errors = Arc<Mutex<Vec<io::Error>>>;

fn config() -> Config {
    Config {
        addr: "127.0.0.1:0".parse().unwrap(),
        idle_timeout: Duration::from_secs(20),
        drain_timeout: Duration::from_millis(500),
        output_high_water: HIGH_WATER,
        ..Config::default()
    }
}

/// A forwarder on `engine` in front of `upstream`.
fn forwarder(engine: Engine, upstream: SocketAddr, connect_timeout: Duration) -> (Server, Errors) {
    let errors = Errors::default();
    let seen = errors.clone();
    let on_error: forwarder::OnError = Arc::new(move |e| seen.lock().unwrap().push(e));
    let factory = forwarder::factory(upstream, connect_timeout, on_error);
    let server =
        Server::start(config(), engine, factory).unwrap_or_else(|e| panic!("{engine}: {e}"));
    (server, errors)
}

/// An iomux echo server on `engine`, and the forwarder in front of it.
fn echo_pair(engine: Engine) -> (Server, Server, Errors) {
    let upstream = Server::start(config(), engine, Echo::plain).unwrap();
    let (forward, errors) = forwarder(engine, upstream.local_addr(), Duration::from_secs(5));
    (upstream, forward, errors)
}

fn stop(server: Server) -> LoopStats {
    server.shutdown();
    server.join().unwrap()
}

fn connect(server: &Server) -> TcpStream {
    let stream = TcpStream::connect(server.local_addr()).unwrap();
    stream
        .set_read_timeout(Some(Duration::from_secs(10)))
        .unwrap();
    stream
}

/// `len` bytes that differ from their neighbours and with `seed`, so a
/// lost, repeated or swapped chunk shows.
fn payload(len: usize, seed: u8) -> Vec<u8> {
    (0..len)
        .map(|i| (i as u32).wrapping_mul(2654435761).to_le_bytes()[1] ^ seed)
        .collect()
}

/// Send `data` from another thread, shut down the sending side, and read
/// everything that comes back until EOF.
fn round_trip(stream: TcpStream, data: Vec<u8>) -> Vec<u8> {
    let mut writer = stream.try_clone().unwrap();
    let sender = thread::spawn(move || {
        writer.write_all(&data).unwrap();
        writer.shutdown(std::net::Shutdown::Write).unwrap();
    });
    let mut back = Vec::new();
    let mut reader = stream;
    reader.read_to_end(&mut back).expect("the echo, then EOF");
    sender.join().unwrap();
    back
}

fn echoes_small_and_large_payloads_byte_for_byte(engine: Engine) {
    let (upstream, forward, errors) = echo_pair(engine);
    let mut small = connect(&forward);
    small.write_all(b"hello\n").unwrap();
    let mut back = [0; 6];
    small.read_exact(&mut back).unwrap();
    assert_eq!(&back, b"hello\n", "{engine}");
    for (len, seed) in [(1, 1), (64 * 1024 + 7, 2), (6 * 1024 * 1024 + 3, 3)] {
        let data = payload(len, seed);
        let back = round_trip(connect(&forward), data.clone());
        assert!(
            back == data,
            "{engine}: {len} bytes: got {} back, first difference at {:?}",
            back.len(),
            back.iter().zip(&data).position(|(a, b)| a != b)
        );
    }
    drop(small);
    let stats = stop(forward);
    assert_eq!(
        (stats.connects, stats.connect_failures),
        (4, 0),
        "{engine}: {stats}"
    );
    assert_eq!(stats.output_overflows, 0, "{engine}: {stats}");
    assert!(errors.lock().unwrap().is_empty(), "{engine}");
    stop(upstream);
}

fn many_concurrent_connections(engine: Engine) {
    let (upstream, forward, _errors) = echo_pair(engine);
    let clients: Vec<_> = (0..40u8)
        .map(|i| {
            let stream = connect(&forward);
            thread::spawn(move || {
                let data = payload(100_000 + usize::from(i) * 997, i);
                (round_trip(stream, data.clone()) == data, i)
            })
        })
        .collect();
    for client in clients {
        let (same, i) = client.join().unwrap();
        assert!(same, "{engine}: client {i} got other bytes back");
    }
    let stats = stop(forward);
    assert_eq!(stats.connects, 40, "{engine}: {stats}");
    stop(upstream);
}

/// The client's FIN reaches the upstream (the echo server ends its side
/// after its last echo), whose FIN comes back after every echoed byte.
fn a_half_close_passes_through_both_ways(engine: Engine) {
    let (upstream, forward, _errors) = echo_pair(engine);
    let mut client = connect(&forward);
    let data = payload(1024 * 1024, 9);
    let mut writer = client.try_clone().unwrap();
    let sent = data.clone();
    let sender = thread::spawn(move || writer.write_all(&sent).unwrap());
    let mut back = vec![0; data.len()];
    client.read_exact(&mut back).unwrap();
    sender.join().unwrap();
    assert!(back == data, "{engine}: the echo before the half-close");
    // Our side ends; the other direction still flows.
    client.shutdown(std::net::Shutdown::Write).unwrap();
    let mut rest = Vec::new();
    client
        .read_to_end(&mut rest)
        .expect("EOF after the half-close");
    assert!(
        rest.is_empty(),
        "{engine}: {} bytes after the echo",
        rest.len()
    );
    // Upstream first: its side of the pair closing is what the FIN returned from.
    let upstream_stats = stop(upstream);
    assert_eq!(upstream_stats.closed, 1, "{engine}: {upstream_stats}");
    let stats = stop(forward);
    assert_eq!(
        stats.closed, 2,
        "{engine}: both sides of the pair closed: {stats}"
    );
}

/// A client of `forward` whose upstream connect fails: its connection is
/// closed, and the protocol was told once, with an error of `kind`. Returns
/// that error's text and the forwarder's counters.
fn the_client_is_closed_and_the_protocol_told(
    engine: Engine,
    (forward, errors): (Server, Errors),
    kind: io::ErrorKind,
) -> (String, LoopStats) {
    let mut client = connect(&forward);
    let end = client.read_to_end(&mut Vec::new());
    assert!(matches!(end, Ok(0)) || end.is_err(), "{engine}: {end:?}");
    let stats = stop(forward);
    let errors = errors.lock().unwrap();
    assert_eq!(errors.len(), 1, "{engine}: {errors:?}");
    assert_eq!(errors[0].kind(), kind, "{engine}: {}", errors[0]);
    (errors[0].to_string(), stats)
}

fn an_upstream_that_refuses_closes_the_client(engine: Engine) {
    let closed = TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap();
    let forward = forwarder(engine, closed, Duration::from_secs(5));
    let (text, stats) = the_client_is_closed_and_the_protocol_told(
        engine,
        forward,
        io::ErrorKind::ConnectionRefused,
    );
    assert!(text.contains(&closed.to_string()), "{engine}: {text}");
    assert_eq!(
        (stats.connects, stats.connect_failures),
        (0, 1),
        "{engine}: {stats}"
    );
}

/// A loopback listener whose accept queue is full: the kernel drops further
/// SYNs, so a connect to it hangs until its timeout (Linux; loopback only).
/// Returns it with the connection that fills it.
fn full_listener() -> (socket2::Socket, TcpStream) {
    use socket2::{Domain, Socket, Type};
    let listener = Socket::new(Domain::IPV4, Type::STREAM, None).unwrap();
    listener
        .bind(&SocketAddr::from(([127, 0, 0, 1], 0)).into())
        .unwrap();
    listener.listen(0).unwrap();
    let addr = listener.local_addr().unwrap().as_socket().unwrap();
    // A backlog of 0 holds one connection: this one fills it.
    let fill = TcpStream::connect_timeout(&addr, Duration::from_secs(2)).unwrap();
    (listener, fill)
}

fn a_connect_that_takes_too_long_times_out(engine: Engine) {
    let (listener, _fill) = full_listener();
    let addr = listener.local_addr().unwrap().as_socket().unwrap();
    let timeout = Duration::from_millis(300);
    let started = Instant::now();
    let forward = forwarder(engine, addr, timeout);
    let (text, stats) =
        the_client_is_closed_and_the_protocol_told(engine, forward, io::ErrorKind::TimedOut);
    let took = started.elapsed();
    assert!(text.contains("timed out after 300ms"), "{engine}: {text}");
    // Not before its time (the wheel may fire it a tick late, never early).
    assert!(took >= timeout, "{engine}: closed after {took:?}");
    assert_eq!(
        (stats.connects, stats.connect_failures),
        (0, 1),
        "{engine}: {stats}"
    );
}

/// Bytes held in kernel socket queues (sent but not acknowledged, received
/// but not read) by the TCP connections with an end on one of `ports`, once
/// the count holds still: /proc/net/tcp is read one socket after another, so
/// bytes still moving between two of them (a loop that lost the CPU for the
/// writer's whole quiet period) can be missed, or counted twice, by one
/// read. At most ten looks, 100 ms apart, then the last one (bytes the
/// servers truly hold are in no queue: they show in every look).
fn kernel_queued(ports: &[u16]) -> usize {
    let mut seen = kernel_queued_once(ports);
    for _ in 0..10 {
        thread::sleep(Duration::from_millis(100));
        let now = kernel_queued_once(ports);
        if now == seen {
            break;
        }
        seen = now;
    }
    seen
}

/// One read of [`kernel_queued`]'s count.
fn kernel_queued_once(ports: &[u16]) -> usize {
    let table = std::fs::read_to_string("/proc/net/tcp").unwrap();
    let port = |addr: &str| u16::from_str_radix(addr.rsplit(':').next().unwrap(), 16).unwrap();
    table
        .lines()
        .skip(1)
        .filter_map(|line| {
            let f: Vec<&str> = line.split_whitespace().collect();
            let (local, remote, state) = (port(f[1]), port(f[2]), f[3]);
            // Listening sockets (0A) hold no bytes of a connection.
            if state == "0A" || !(ports.contains(&local) || ports.contains(&remote)) {
                return None;
            }
            let (tx, rx) = f[4].split_once(':').unwrap();
            Some(usize::from_str_radix(tx, 16).unwrap() + usize::from_str_radix(rx, 16).unwrap())
        })
        .sum()
}

/// Write `pattern` bytes without blocking until the path is full: no byte
/// taken for `quiet` (bounded: panics past `cap`). Returns the bytes taken.
fn fill_until_stalled(stream: &mut TcpStream, seed: u8, cap: usize) -> usize {
    stream.set_nonblocking(true).unwrap();
    let chunk = payload(64 * 1024, seed);
    let (mut sent, mut last_progress) = (0usize, Instant::now());
    while last_progress.elapsed() < Duration::from_millis(700) {
        assert!(
            sent < cap,
            "more than {cap} bytes taken: nothing pushes back"
        );
        let offset = sent % chunk.len();
        match stream.write(&chunk[offset..]) {
            Ok(n) => {
                sent += n;
                last_progress = Instant::now();
            }
            Err(e) if e.kind() == io::ErrorKind::WouldBlock => {
                thread::sleep(Duration::from_millis(10))
            }
            Err(e) => panic!("the forwarder dropped the writer after {sent} bytes: {e}"),
        }
    }
    stream.set_nonblocking(false).unwrap();
    sent
}

/// Read `len` bytes of the pattern `fill_until_stalled` sent.
fn read_pattern(stream: &mut TcpStream, len: usize, seed: u8) -> bool {
    let chunk = payload(64 * 1024, seed);
    let mut buf = vec![0; 64 * 1024];
    let mut got = 0;
    while got < len {
        let want = (len - got).min(buf.len() - got % buf.len());
        let n =
            common::read_some(stream, &mut buf[..want]).expect("the rest within the read timeout");
        assert!(n > 0, "EOF after {got} of {len} bytes");
        let offset = got % chunk.len();
        if buf[..n] != chunk[offset..offset + n] {
            return false;
        }
        got += n;
    }
    true
}

/// Most the forwarder and the echo server may hold between them once the
/// path is stalled: each connection's output stops at the high-water mark
/// plus one read (64 KiB; io_uring: one capped multishot receive, at most one
/// buffer more), three of them (forwarder to client, forwarder to upstream,
/// the echo server's). Measured against the bytes taken less what the kernel
/// queues hold.
const HELD_BY_PROCESSES: usize = 3 * (HIGH_WATER + 2 * 64 * 1024);

/// The client sends megabytes and reads nothing: the echoes fill the
/// forwarder's output to the client, the forwarder stops reading the
/// upstream, the upstream stops reading it, and the forwarder stops reading
/// the client. Then the client reads, and every byte arrives.
fn a_client_that_stops_reading_is_pushed_back_on(engine: Engine) {
    let (upstream, forward, _errors) = echo_pair(engine);
    let mut client = connect(&forward);
    let taken = fill_until_stalled(&mut client, 5, 1 << 30);
    let ports = [forward.local_addr().port(), upstream.local_addr().port()];
    let queued = kernel_queued(&ports);
    let held = taken.saturating_sub(queued);
    assert!(
        held <= HELD_BY_PROCESSES,
        "{engine}: {taken} bytes taken, {queued} in kernel queues: {held} held by the servers (at most {HELD_BY_PROCESSES})"
    );
    let mut reader = client.try_clone().unwrap();
    let check = thread::spawn(move || read_pattern(&mut reader, taken, 5));
    assert!(
        check.join().unwrap(),
        "{engine}: the bytes came back changed"
    );
    let stats = stop(forward);
    assert_eq!(stats.output_overflows, 0, "{engine}: {stats}");
    stop(upstream);
}

/// An upstream that accepts and reads nothing: the forwarder stops reading
/// the client once its output to the upstream passes the high-water mark.
/// Then the upstream reads, and every byte arrives, then the client's FIN.
fn an_upstream_that_stops_reading_is_pushed_back_on(engine: Engine) {
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let upstream_addr = listener.local_addr().unwrap();
    let (forward, _errors) = forwarder(engine, upstream_addr, Duration::from_secs(5));
    let mut client = connect(&forward);
    let (mut upstream, _) = listener.accept().unwrap();
    upstream
        .set_read_timeout(Some(Duration::from_secs(10)))
        .unwrap();
    let taken = fill_until_stalled(&mut client, 6, 1 << 30);
    let queued = kernel_queued(&[forward.local_addr().port(), upstream_addr.port()]);
    let held = taken.saturating_sub(queued);
    let limit = HIGH_WATER + 2 * 64 * 1024;
    assert!(
        held <= limit,
        "{engine}: {taken} bytes taken, {queued} in kernel queues: {held} held by the forwarder (at most {limit})"
    );
    client.shutdown(std::net::Shutdown::Write).unwrap();
    assert!(
        read_pattern(&mut upstream, taken, 6),
        "{engine}: changed bytes"
    );
    let mut rest = Vec::new();
    upstream
        .read_to_end(&mut rest)
        .expect("the client's FIN, passed on");
    assert!(rest.is_empty(), "{engine}: {} bytes more", rest.len());
    stop(forward);
}

/// Asks for a connection as it opens, then closes at once: the connection
/// it asked for must not outlive it.
struct Quitter {
    upstream: SocketAddr,
}

impl iomux_proto::Service for Quitter {
    fn on_open(&mut self, cx: &mut iomux_proto::Context) {
        if cx.opened_by().is_none() {
            cx.connect(self.upstream, Duration::from_secs(5), 1);
            cx.close();
        }
    }
    fn on_data(&mut self, input: &[u8], _cx: &mut iomux_proto::Context) -> iomux_proto::Step {
        iomux_proto::Step::keep(input.len())
    }
}

/// The asker closed before its connect ended: the upstream sees the new
/// connection closed (its EOF within seconds, not the idle timeout's 20 s).
fn a_connection_whose_asker_is_gone_is_closed(engine: Engine) {
    let upstream = TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = upstream.local_addr().unwrap();
    let server = Server::start(config(), engine, move || Quitter { upstream: addr }).unwrap();
    let client = connect(&server);
    let (mut opened, _) = upstream.accept().unwrap();
    opened
        .set_read_timeout(Some(Duration::from_secs(5)))
        .unwrap();
    let end = common::read_some(&mut opened, &mut [0; 16]);
    assert!(
        matches!(end, Ok(0)),
        "{engine}: the upstream saw {end:?}, not its EOF"
    );
    drop(client);
    let stats = stop(server);
    assert_eq!(stats.connects, 1, "{engine}: {stats}");
}

/// Engines that carry out no commands tell the asker its connect is
/// unsupported rather than leave it waiting in silence.
#[test]
fn engines_without_commands_answer_connects_unsupported() {
    let upstream = TcpListener::bind("127.0.0.1:0").unwrap();
    for &engine in Engine::ALL.iter().filter(|e| !e.carries_out_commands()) {
        let (forward, errors) = forwarder(
            engine,
            upstream.local_addr().unwrap(),
            Duration::from_secs(1),
        );
        let client = connect(&forward);
        let deadline = Instant::now() + Duration::from_secs(10);
        while errors.lock().unwrap().is_empty() && Instant::now() < deadline {
            thread::sleep(Duration::from_millis(10));
        }
        drop(client);
        let stats = stop(forward);
        let errors = errors.lock().unwrap();
        assert_eq!(errors.len(), 1, "{engine}: {errors:?}");
        assert_eq!(errors[0].kind(), io::ErrorKind::Unsupported, "{engine}");
        assert!(
            errors[0].to_string().contains("event-loop engine"),
            "{engine}: {}",
            errors[0]
        );
        assert!(stats.refused_commands >= 2, "{engine}: {stats}");
    }
}

/// One `#[test]` per named scenario, on the module's `engine()`.
macro_rules! scenarios {
    ($($test:ident),* $(,)?) => {
        $(
            #[test]
            fn $test() {
                super::$test(engine());
            }
        )*
    };
}

macro_rules! per_engine {
    ($($module:ident => $name:literal),* $(,)?) => {
        $(
            mod $module {
                fn engine() -> iomux_engine::Engine {
                    $name.parse().unwrap()
                }
                scenarios! {
                    echoes_small_and_large_payloads_byte_for_byte,
                    many_concurrent_connections,
                    a_half_close_passes_through_both_ways,
                    an_upstream_that_refuses_closes_the_client,
                    a_connect_that_takes_too_long_times_out,
                    a_client_that_stops_reading_is_pushed_back_on,
                    an_upstream_that_stops_reading_is_pushed_back_on,
                    a_connection_whose_asker_is_gone_is_closed,
                }
            }
        )*
        /// The modules above cover every engine of `Engine::ALL` that
        /// carries out commands: an engine added there fails here until it
        /// is tested.
        #[test]
        fn every_engine_that_carries_out_commands_is_tested() {
            assert_eq!([$($name),*].to_vec(), common::engines_with_loop(true));
        }
    };
}

loop_engines!(per_engine);
