//! Pub/sub on `iomux serve --proto resp`: thousands of raw RESP subscribers
//! each receive every message of a publisher, in order, on every engine that
//! carries out writes to other connections (with two loops on epoll, so
//! delivery crosses threads); a subscriber that stops reading is disconnected
//! past `--max-subscriber-output` while the others still receive everything;
//! redis-cli's SUBSCRIBE works unmodified; the engines that cannot deliver
//! refuse SUBSCRIBE with an error that says so.

#[macro_use]
mod common;

use common::{spawn_redis_tool, LoggedServer, ServerProcess};
use std::io::{BufRead, BufReader, ErrorKind, Read, Write};
use std::net::TcpStream;
use std::process::{Command, Stdio};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

/// Subscribers per server: the 2,000, except on select, which
/// watches descriptors below 1024 only (FD_SETSIZE): the server's listener,
/// waker and publisher come first, so 900 subscribers stay under it.
fn subscribers_for(engine: &[&str]) -> usize {
    if engine.contains(&"select") {
        900
    } else {
        2000
    }
}

const MESSAGES: usize = 20;
const READ_TIMEOUT: Duration = Duration::from_secs(20);

fn multibulk(args: &[&[u8]]) -> Vec<u8> {
    let mut out = format!("*{}\r\n", args.len()).into_bytes();
    for a in args {
        out.extend_from_slice(format!("${}\r\n", a.len()).as_bytes());
        out.extend_from_slice(a);
        out.extend_from_slice(b"\r\n");
    }
    out
}

/// The frame a subscriber of `channel` receives for `message`.
fn message_frame(channel: &str, message: &str) -> Vec<u8> {
    multibulk(&[b"message", channel.as_bytes(), message.as_bytes()])
}

fn subscribe_confirmation(channel: &str, count: usize) -> Vec<u8> {
    let mut out = format!(
        "*3\r\n$9\r\nsubscribe\r\n${}\r\n{channel}\r\n",
        channel.len()
    )
    .into_bytes();
    out.extend_from_slice(format!(":{count}\r\n").as_bytes());
    out
}

fn connect(server: &ServerProcess) -> TcpStream {
    let stream = server.connect();
    stream.set_read_timeout(Some(READ_TIMEOUT)).unwrap();
    stream.set_write_timeout(Some(READ_TIMEOUT)).unwrap();
    stream
}

/// Read exactly `expected.len()` bytes and compare them, naming `who`.
fn expect_bytes(stream: &mut TcpStream, expected: &[u8], who: &str) {
    let mut got = vec![0u8; expected.len()];
    if let Err(e) = stream.read_exact(&mut got) {
        panic!("{who}: reading {} bytes: {e}", expected.len());
    }
    assert_eq!(
        String::from_utf8_lossy(&got),
        String::from_utf8_lossy(expected),
        "{who}"
    );
}

/// PUBLISH `message` on `channel` from `publisher`; the receiver count.
fn publish(publisher: &mut TcpStream, channel: &str, message: &[u8]) -> usize {
    publisher
        .write_all(&multibulk(&[b"PUBLISH", channel.as_bytes(), message]))
        .unwrap();
    let mut line = Vec::new();
    let mut byte = [0u8; 1];
    while !line.ends_with(b"\r\n") {
        publisher.read_exact(&mut byte).expect("PUBLISH answer");
        line.push(byte[0]);
    }
    let text = String::from_utf8_lossy(&line);
    text.strip_prefix(':')
        .and_then(|n| n.trim_end().parse().ok())
        .unwrap_or_else(|| panic!("PUBLISH answered {text:?}"))
}

fn every_subscriber_receives_every_message_in_order(engine: &[&str]) {
    let count = subscribers_for(engine);
    let mut args = vec!["--proto", "resp", "--idle-timeout", "120"];
    args.extend_from_slice(engine);
    let mut server = LoggedServer::start(&args, None);
    let mut subscribers: Vec<TcpStream> = (0..count).map(|_| connect(&server.server)).collect();
    let subscribe = multibulk(&[b"SUBSCRIBE", b"news"]);
    for s in &mut subscribers {
        s.write_all(&subscribe).unwrap();
    }
    let confirmation = subscribe_confirmation("news", 1);
    for (i, s) in subscribers.iter_mut().enumerate() {
        expect_bytes(s, &confirmation, &format!("{engine:?} subscriber {i}"));
    }
    let mut publisher = connect(&server.server);
    let mut expected = Vec::new();
    for m in 0..MESSAGES {
        let message = format!("message {m} of {MESSAGES}");
        let reached = publish(&mut publisher, "news", message.as_bytes());
        assert_eq!(reached, count, "{engine:?}: PUBLISH {m} answered");
        expected.extend_from_slice(&message_frame("news", &message));
    }
    for (i, s) in subscribers.iter_mut().enumerate() {
        expect_bytes(s, &expected, &format!("{engine:?} subscriber {i}"));
    }
    // Nothing more than the messages arrived.
    subscribers[0]
        .set_read_timeout(Some(Duration::from_millis(100)))
        .unwrap();
    let mut extra = [0u8; 64];
    match subscribers[0].read(&mut extra) {
        Err(e) if matches!(e.kind(), ErrorKind::WouldBlock | ErrorKind::TimedOut) => {}
        other => panic!("{engine:?}: after the messages, read gave {other:?}"),
    }
    // Closed subscribers leave their channel: a PUBLISH counts (and
    // addresses) only the ones still connected.
    subscribers.truncate(10);
    let mut left = 0;
    let settled = common::eventually(Duration::from_secs(10), || {
        left = publish(&mut publisher, "news", b"after");
        left == 10
    });
    assert!(
        settled,
        "{engine:?}: PUBLISH still counts {left} subscribers, 10 remain"
    );
    let err = server.stop_cleanly(&format!("{engine:?}"));
    assert!(err.contains("output_overflows=0"), "{engine:?}: {err}");
}

for_delivering_engines!(every_subscriber_receives_every_message_in_order);

fn subscribe_is_refused_where_the_engine_cannot_deliver(engine: &[&str]) {
    let mut args = vec!["--proto", "resp"];
    args.extend_from_slice(engine);
    let server = ServerProcess::start(&args);
    let mut client = connect(&server);
    client
        .write_all(b"SUBSCRIBE news\r\nPUBLISH news x\r\nPING\r\n")
        .unwrap();
    let mut lines = BufReader::new(client);
    let mut error = String::new();
    lines.read_line(&mut error).unwrap();
    assert!(
        error.starts_with("-ERR SUBSCRIBE is not available on this server: its engine cannot deliver messages to other connections; run it on an event-loop engine"),
        "{engine:?}: {error:?}"
    );
    let mut rest = String::new();
    lines.read_line(&mut rest).unwrap();
    lines.read_line(&mut rest).unwrap();
    assert_eq!(
        rest, ":0\r\n+PONG\r\n",
        "{engine:?}: not in subscriber mode"
    );
}

for_engines!(
    subscribe_is_refused_where_the_engine_cannot_deliver,
    [threads, nonblocking, blocking]
);

/// A subscriber that never reads is disconnected once the output queued for
/// it passes --max-subscriber-output; a reading subscriber still receives
/// every message, in order.
fn a_subscriber_that_stops_reading_is_disconnected(engine: &[&str]) {
    const LIMIT: usize = 256 * 1024;
    const MESSAGE: usize = 4096;
    // Far more than the kernel buffers between the server and the stalled
    // reader (a few MiB on loopback) plus LIMIT.
    const COUNT: usize = 4000;
    let limit = LIMIT.to_string();
    let mut args = vec!["--proto", "resp", "--max-subscriber-output", &limit];
    args.extend_from_slice(engine);
    let mut server = LoggedServer::start(&args, None);
    let mut stalled = connect(&server.server);
    let mut reader = connect(&server.server);
    for s in [&mut stalled, &mut reader] {
        s.write_all(&multibulk(&[b"SUBSCRIBE", b"ch"])).unwrap();
        expect_bytes(s, &subscribe_confirmation("ch", 1), "subscribe");
    }
    let payload = |m: usize| format!("{m:08}").repeat(MESSAGE / 8);
    // The reader's progress: the publisher keeps at most AHEAD messages
    // beyond it, so a reader descheduled on a loaded machine never has
    // LIMIT queued for it (only the stalled one can reach it).
    const AHEAD: usize = 32;
    let received = Arc::new(AtomicUsize::new(0));
    let progress = received.clone();
    let reading = std::thread::spawn(move || {
        let mut reader = reader;
        for m in 0..COUNT {
            expect_bytes(
                &mut reader,
                &message_frame("ch", &payload(m)),
                &format!("reader, message {m}"),
            );
            progress.store(m + 1, Ordering::Release);
        }
    });
    let mut publisher = connect(&server.server);
    let mut last = 0;
    let started = Instant::now();
    for m in 0..COUNT {
        while m >= received.load(Ordering::Acquire) + AHEAD && !reading.is_finished() {
            assert!(
                started.elapsed() < Duration::from_secs(60),
                "the reader stopped at {}",
                received.load(Ordering::Acquire)
            );
            std::thread::sleep(Duration::from_micros(200));
        }
        last = publish(&mut publisher, "ch", payload(m).as_bytes());
    }
    reading
        .join()
        .expect("the reading subscriber got every message in order");
    assert_eq!(
        last, 1,
        "{engine:?}: the stalled subscriber is gone by the last PUBLISH"
    );
    // The stalled one finds the end of its stream after what the kernel held.
    let started = Instant::now();
    let mut got = 0usize;
    let mut chunk = vec![0u8; 1 << 16];
    let ended = loop {
        match stalled.read(&mut chunk) {
            Ok(0) => break true,
            Ok(n) => got += n,
            Err(e) if e.kind() == ErrorKind::ConnectionReset => break true,
            Err(_) => break false,
        }
        assert!(started.elapsed() < Duration::from_secs(30), "bounded");
    };
    assert!(ended, "{engine:?}: the stalled subscriber is disconnected");
    let whole = COUNT * message_frame("ch", &payload(0)).len();
    assert!(got < whole, "{engine:?}: it got {got} of {whole} bytes");
    let err = server.stop_cleanly(&format!("{engine:?}"));
    assert!(err.contains("output_overflows=1 "), "{engine:?}: {err}");
}

// On every engine that delivers (the reactor once closed the stalled
// subscriber inside the publisher's commands, and with it the publisher's own
// answer waiting in the loop's shared buffer: now such closes wait for the
// end of the pass).
for_delivering_engines!(a_subscriber_that_stops_reading_is_disconnected);

#[test]
fn redis_cli_subscribe_receives_a_published_message() {
    let server = ServerProcess::start(&["--proto", "resp"]);
    let port = server.addr.port().to_string();
    let mut cli = spawn_redis_tool(
        Command::new("redis-cli")
            .args(["-h", "127.0.0.1", "-p", &port, "subscribe", "ch"])
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::null()),
    );
    let stdout = cli.stdout.take().unwrap();
    let (lines_tx, lines) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        for line in BufReader::new(stdout).lines() {
            if lines_tx.send(line.unwrap_or_default()).is_err() {
                break;
            }
        }
    });
    // redis-cli prints one line per element: subscribe, ch, 1.
    let mut seen = Vec::new();
    while seen.len() < 3 {
        match lines.recv_timeout(Duration::from_secs(10)) {
            Ok(line) => seen.push(line),
            Err(_) => break,
        }
    }
    let mut publisher = connect(&server);
    let reached = publish(&mut publisher, "ch", b"hello from iomux");
    while seen.len() < 6 {
        match lines.recv_timeout(Duration::from_secs(10)) {
            Ok(line) => seen.push(line),
            Err(_) => break,
        }
    }
    let _ = cli.kill();
    let _ = cli.wait();
    assert_eq!(reached, 1);
    assert_eq!(
        seen,
        ["subscribe", "ch", "1", "message", "ch", "hello from iomux"],
        "what redis-cli printed"
    );
}

/// A subscriber that hears nothing for longer than the server's idle
/// timeout, then a message: (PUBLISH's count, what the subscriber got).
fn quiet_subscriber_then_publish(addr: std::net::SocketAddr, quiet: Duration) -> (usize, Vec<u8>) {
    let server = ServerProcess::for_address(addr);
    let mut subscriber = connect(&server);
    subscriber
        .write_all(&multibulk(&[b"SUBSCRIBE", b"quiet"]))
        .unwrap();
    expect_bytes(
        &mut subscriber,
        &subscribe_confirmation("quiet", 1),
        "subscribe",
    );
    std::thread::sleep(quiet);
    let mut publisher = connect(&server);
    let reached = publish(&mut publisher, "quiet", b"still there?");
    let expected = message_frame("quiet", "still there?");
    let mut got = vec![0u8; expected.len()];
    subscriber
        .set_read_timeout(Some(Duration::from_secs(5)))
        .unwrap();
    let mut filled = 0;
    while filled < got.len() {
        match subscriber.read(&mut got[filled..]) {
            Ok(0) | Err(_) => break,
            Ok(n) => filled += n,
        }
    }
    got.truncate(filled);
    (reached, got)
}

/// A subscriber is not idle: with `--idle-timeout 1` one that hears nothing
/// for 2.5 s is still subscribed, counted and delivered to, as on
/// redis-server with `timeout 1` (which never times out a pub/sub client).
fn a_quiet_subscriber_outlives_the_idle_timeout(engine: &[&str]) {
    let mut args = vec!["--proto", "resp", "--idle-timeout", "1"];
    args.extend_from_slice(engine);
    let server = ServerProcess::start(&args);
    let quiet = Duration::from_millis(2500);
    let (reached, got) = quiet_subscriber_then_publish(server.addr, quiet);
    let expected = message_frame("quiet", "still there?");
    assert_eq!(
        (reached, String::from_utf8_lossy(&got)),
        (1, String::from_utf8_lossy(&expected)),
        "{engine:?}"
    );
}

for_delivering_engines!(a_quiet_subscriber_outlives_the_idle_timeout);

#[test]
fn redis_server_keeps_a_quiet_subscriber_past_its_timeout_too() {
    let redis = common::RedisServer::start(&["--timeout", "1"]);
    let (reached, got) = quiet_subscriber_then_publish(redis.addr, Duration::from_millis(2500));
    let expected = message_frame("quiet", "still there?");
    assert_eq!(
        (reached, String::from_utf8_lossy(&got)),
        (1, String::from_utf8_lossy(&expected))
    );
}

/// A subscriber sends QUIT and reads `+OK` and the end of its stream, but
/// keeps its socket open (the server lingers on it): PUBLISH's count then.
fn publish_after_a_subscriber_quit(addr: std::net::SocketAddr) -> usize {
    let server = ServerProcess::for_address(addr);
    let mut subscriber = connect(&server);
    subscriber
        .write_all(&multibulk(&[b"SUBSCRIBE", b"gone"]))
        .unwrap();
    expect_bytes(
        &mut subscriber,
        &subscribe_confirmation("gone", 1),
        "subscribe",
    );
    subscriber.write_all(&multibulk(&[b"QUIT"])).unwrap();
    expect_bytes(&mut subscriber, b"+OK\r\n", "QUIT");
    let mut rest = [0u8; 16];
    assert!(
        matches!(subscriber.read(&mut rest), Ok(0)),
        "the server ends the stream after QUIT"
    );
    let mut publisher = connect(&server);
    let reached = publish(&mut publisher, "gone", b"anyone?");
    drop(subscriber);
    reached
}

/// A connection being closed is no longer a receiver: a subscriber whose
/// server has ended its stream (QUIT), while the server lingers for the
/// client's FIN, is not counted by PUBLISH (it would receive nothing), as
/// on redis-server.
fn a_closing_subscriber_is_not_counted(engine: &[&str]) {
    let mut args = vec!["--proto", "resp"];
    args.extend_from_slice(engine);
    let server = ServerProcess::start(&args);
    assert_eq!(
        publish_after_a_subscriber_quit(server.addr),
        0,
        "{engine:?}"
    );
}

for_delivering_engines!(a_closing_subscriber_is_not_counted);

#[test]
fn redis_server_does_not_count_a_subscriber_that_quit() {
    let redis = common::RedisServer::start(&[]);
    assert_eq!(publish_after_a_subscriber_quit(redis.addr), 0);
}
