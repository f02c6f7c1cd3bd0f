//! `iomux load` against real servers on loopback: echo (ours), HTTP (a tiny
//! responder in this test), and the failures a user can hit.

mod common;

use common::{load, load_fails_saying, ServerProcess};
use iomux_lab::load::json_number;
use std::io::{Read, Write};
use std::net::{SocketAddr, TcpListener};
use std::time::Duration;

/// Run load with `--json` and `args` (split at spaces), check it succeeded,
/// and return its JSON line.
fn load_json(addr: impl std::fmt::Display, args: &str) -> String {
    let addr = addr.to_string();
    let mut all = vec!["--addr", &addr, "--json"];
    all.extend(args.split_whitespace());
    let out = load(&all);
    let stdout = String::from_utf8_lossy(&out.stdout).to_string();
    assert!(
        out.status.success(),
        "load {args:?} failed: {stdout} {}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert_eq!(stdout.lines().count(), 1, "one JSON line: {stdout:?}");
    for key in ["requests", "rps", "errors", "p50", "p90", "p99", "max"] {
        assert!(
            json_number(&stdout, key).is_some(),
            "{key} missing in {stdout}"
        );
    }
    assert!(stdout.contains("\"latency_us\":{"), "{stdout}");
    stdout
}

/// Start `iomux serve --proto <proto>` and run load against it with the
/// same protocol and `args`; returns load's JSON line.
fn load_serve(proto: &str, args: &str) -> String {
    let server = ServerProcess::start(&["--proto", proto]);
    load_json(server.addr, &format!("--proto {proto} {args}"))
}

fn num(json: &str, key: &str) -> f64 {
    json_number(json, key).unwrap_or_else(|| panic!("{key} missing in {json}"))
}

#[test]
fn echo_load_counts_requests_without_errors() {
    let json = load_serve("echo", "--conns 4 --duration 1 --size 100");
    assert!(num(&json, "requests") > 0.0, "{json}");
    assert_eq!(num(&json, "errors"), 0.0, "{json}");
    assert!(num(&json, "rps") > 0.0, "{json}");
    let (p50, p99, max) = (num(&json, "p50"), num(&json, "p99"), num(&json, "max"));
    assert!(0.0 < p50 && p50 <= p99 && p99 <= max, "{json}");
    // Every byte sent came back (minus the messages in flight at the end).
    let (sent, received) = (num(&json, "bytes_sent"), num(&json, "bytes_received"));
    assert!(received <= sent && sent - received <= 4.0 * 100.0, "{json}");
    // Echoed bytes are all body.
    assert_eq!(num(&json, "body_bytes"), received, "{json}");
    assert!(received >= num(&json, "requests") * 100.0, "{json}");
}

#[test]
fn echo_load_with_pipeline_threads_and_idle_connections() {
    let json = load_serve(
        "echo",
        "--conns 6 --threads 2 --pipeline 8 --idle 200 --duration 1",
    );
    assert!(num(&json, "requests") > 0.0, "{json}");
    assert_eq!(num(&json, "errors"), 0.0, "{json}");
    assert_eq!(num(&json, "idle"), 200.0, "{json}");
    assert_eq!(num(&json, "threads"), 2.0, "{json}");
}

#[test]
fn open_loop_rate_sends_on_schedule() {
    let json = load_serve("echo", "--conns 4 --rate 200 --duration 1");
    let requests = num(&json, "requests");
    // 200 due over the second; a few may still be in flight at the end.
    assert!((150.0..=201.0).contains(&requests), "{json}");
    assert_eq!(num(&json, "errors"), 0.0, "{json}");
}

#[test]
fn connection_per_request_counts_connects() {
    let json = load_serve("echo", "--conns 2 --connect-per-request --duration 1");
    let (requests, connects) = (num(&json, "requests"), num(&json, "connects"));
    assert!(requests > 0.0, "{json}");
    assert!(connects >= requests && connects <= requests + 2.0, "{json}");
    assert_eq!(num(&json, "errors"), 0.0, "{json}");
}

/// A minimal HTTP/1.1 responder: a thread per connection, answers every
/// request head with a fixed response; alternates Content-Length and chunked
/// framing so the client's counting of both is exercised. Stops after `conns`
/// connections have closed.
fn http_responder(conns: usize) -> SocketAddr {
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = listener.local_addr().unwrap();
    std::thread::spawn(move || {
        for stream in listener.incoming().take(conns) {
            let mut stream = stream.unwrap();
            stream
                .set_read_timeout(Some(Duration::from_secs(10)))
                .unwrap();
            std::thread::spawn(move || {
                let mut buf = vec![0u8; 65536];
                let mut pending = Vec::new();
                let mut n_served = 0u64;
                loop {
                    let n = match stream.read(&mut buf) {
                        Ok(0) | Err(_) => return,
                        Ok(n) => n,
                    };
                    pending.extend_from_slice(&buf[..n]);
                    let mut out = Vec::new();
                    while let Some(end) = pending.windows(4).position(|w| w == b"\r\n\r\n") {
                        pending.drain(..end + 4);
                        n_served += 1;
                        if n_served % 2 == 0 {
                            out.extend_from_slice(b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n5\r\nHello\r\n8\r\n, World!\r\n0\r\n\r\n");
                        } else {
                            out.extend_from_slice(b"HTTP/1.1 200 OK\r\nContent-Length: 13\r\nContent-Type: text/plain\r\n\r\nHello, World!");
                        }
                    }
                    if stream.write_all(&out).is_err() {
                        return;
                    }
                }
            });
        }
    });
    addr
}

#[test]
fn http_load_counts_pipelined_responses() {
    let addr = http_responder(4);
    let json = load_json(addr, "--proto http --conns 4 --pipeline 16 --duration 1");
    assert!(num(&json, "requests") > 0.0, "{json}");
    assert_eq!(num(&json, "errors"), 0.0, "{json}");
}

#[test]
fn http_load_against_iomux_serve() {
    let json = load_serve("http", "--conns 8 --pipeline 4 --threads 2 --duration 1");
    let requests = num(&json, "requests");
    assert!(requests > 0.0, "{json}");
    assert_eq!(num(&json, "errors"), 0.0, "{json}");
    assert_eq!(num(&json, "starved"), 0.0, "{json}");
    // Each response is at least a status line, Content-Length and the 13-byte body.
    assert!(num(&json, "bytes_received") >= requests * 50.0, "{json}");
}

#[test]
fn refused_connections_fail_with_a_clear_message() {
    // Bind then drop: nothing listens on this port any more.
    let addr = TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap();
    let addr = addr.to_string();
    let args = [
        "--addr",
        &addr,
        "--proto",
        "echo",
        "--conns",
        "2",
        "--duration",
        "1",
    ];
    load_fails_saying(&args, &["refused", "is a server listening"]);
}

#[test]
fn bad_flags_are_rejected_by_name() {
    for (args, needle) in [
        (&["--pipeline", "0"][..], "--pipeline"),
        (&["--duration", "0"][..], "--duration"),
        (&["--conns", "0"][..], "--conns"),
        (&["--rate=-5"][..], "--rate"),
        (&["--rate=1e-300"][..], "--rate"),
        (&["--duration=1e18"][..], "--duration"),
        (&["--timeout=1e30"][..], "--timeout"),
        (&["--conns", "30000"][..], "descriptors"),
    ] {
        load_fails_saying(&[&["--addr", "127.0.0.1:9"][..], args].concat(), &[needle]);
    }
}

#[test]
fn addresses_by_host_name_work_and_mistakes_are_explained() {
    // `localhost` resolves through /etc/hosts: nothing leaves the machine.
    let server = ServerProcess::start_at("localhost:0", &["--proto", "echo"]);
    assert!(server.addr.ip().is_loopback(), "{}", server.ready_line);
    let by_name = format!("localhost:{}", server.addr.port());
    let json = load_json(by_name, "--proto echo --conns 2 --duration 1");
    assert!(num(&json, "requests") > 0.0, "{json}");

    for (addr, needle) in [
        ("127.0.0.1:99999", "from 0 to 65535"),
        ("127.0.0.1", "has no port"),
        ("::1:8080", "in brackets"),
    ] {
        load_fails_saying(&["--addr", addr], &[needle]);
    }
}
