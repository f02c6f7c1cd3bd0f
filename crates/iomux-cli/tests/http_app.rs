//! The example application `http_app` (shared/CONTRACT.md) over loopback on
//! every event-loop engine: the items API, deferred answers in request
//! order, server-sent events, uploads and downloads streamed, blocking work
//! that does not stop other connections, a panic isolated; and, once, a
//! 1 GiB upload and a 1 GiB download to a slow reader with the server's
//! memory bounded.

#[macro_use]
mod common;
#[path = "../../iomux/tests/common/run_example.rs"]
mod run_example;

use common::{read_http_responses, read_http_until_close, HttpResponse, ServerProcess};
use sha2::{Digest, Sha256};
use std::io::{Read, Write};
use std::net::TcpStream;
use std::time::{Duration, Instant};

/// The engines with an event loop, as `http_app` names them.
const LOOP_ENGINES: &[&str] = &[
    "epoll-edge",
    "epoll-level",
    "epoll-oneshot",
    "poll",
    "select",
    "sigio",
    "uring-poll-edge",
    "uring-poll-level",
    "uring-poll-oneshot",
    "uring",
];

fn start(engine: &str) -> ServerProcess {
    ServerProcess::start_program(
        &run_example::example_path("http_app"),
        &["127.0.0.1:0", engine],
    )
}

fn request(stream: &mut TcpStream, method: &str, target: &str, body: &[u8]) {
    let head = format!(
        "{method} {target} HTTP/1.1\r\nHost: t\r\nContent-Length: {}\r\n\r\n",
        body.len()
    );
    stream.write_all(&[head.as_bytes(), body].concat()).unwrap();
}

/// One request on its own connection, its one response.
fn ask(server: &ServerProcess, method: &str, target: &str, body: &[u8]) -> HttpResponse {
    let mut s = server.connect();
    request(&mut s, method, target, body);
    let mut left = Vec::new();
    let mut r = read_http_responses(&mut s, 1, &mut left);
    assert_eq!(r.len(), 1, "{method} {target}: no response");
    r.remove(0)
}

fn text(r: &HttpResponse) -> String {
    String::from_utf8_lossy(&r.body).into_owned()
}

fn items_api(server: &ServerProcess, engine: &str) {
    let put = ask(server, "PUT", "/items/7", br#"{"name":"pen"}"#);
    assert_eq!(put.code, 201, "{engine}: first PUT creates");
    let put = ask(server, "PUT", "/items/7", br#"{"name":"ink"}"#);
    assert_eq!(put.code, 200, "{engine}: second PUT replaces");
    let got = ask(server, "GET", "/items/7", b"");
    assert_eq!(
        (got.code, text(&got).as_str()),
        (200, r#"{"id":7,"name":"ink"}"#),
        "{engine}"
    );
    assert_eq!(got.header("content-type"), Some("application/json"));
    for bad in [&b"not json"[..], br#"{"name":3}"#, br#"{"nom":"x"}"#, b""] {
        assert_eq!(
            ask(server, "PUT", "/items/8", bad).code,
            400,
            "{engine}: {bad:?}"
        );
    }
    assert_eq!(ask(server, "GET", "/items/8", b"").code, 404, "{engine}");
    for id in ["x", "-1", "+7", "18446744073709551616", "7.0"] {
        assert_eq!(
            ask(server, "GET", &format!("/items/{id}"), b"").code,
            404,
            "{engine}: {id}"
        );
    }
    assert_eq!(ask(server, "DELETE", "/items/7", b"").code, 204, "{engine}");
    assert_eq!(ask(server, "DELETE", "/items/7", b"").code, 404, "{engine}");
    assert_eq!(ask(server, "GET", "/items/7", b"").code, 404, "{engine}");
    for target in [
        "/wait",
        "/wait?ms=x",
        "/wait?ms=3600001",
        "/blocking?ms=-1",
        "/events?n=",
        "/download?bytes=1e3",
    ] {
        let r = ask(server, "GET", target, b"");
        assert_eq!(r.code, 400, "{engine}: {target}");
        assert!(
            text(&r).starts_with("give "),
            "{engine}: {target}: {}",
            text(&r)
        );
    }
}

/// Whether nothing has arrived on `stream` yet (it stays open).
fn nothing_yet(stream: &mut TcpStream) -> bool {
    stream.set_nonblocking(true).unwrap();
    let mut byte = [0u8; 1];
    let idle =
        matches!(stream.read(&mut byte), Err(e) if e.kind() == std::io::ErrorKind::WouldBlock);
    stream.set_nonblocking(false).unwrap();
    idle
}

/// Pipelined deferred answers (a timer, an immediate one, blocking work)
/// come back in request order.
fn deferred_in_order(server: &ServerProcess, engine: &str) {
    let mut s = server.connect();
    let batch = b"GET /wait?ms=300 HTTP/1.1\r\nHost: t\r\n\r\nGET /items/1 HTTP/1.1\r\nHost: t\r\n\r\n\
                  GET /blocking?ms=50 HTTP/1.1\r\nHost: t\r\n\r\nGET /wait?ms=1 HTTP/1.1\r\nHost: t\r\n\r\n";
    s.write_all(batch).unwrap();
    let started = Instant::now();
    let mut left = Vec::new();
    let r = read_http_responses(&mut s, 4, &mut left);
    let bodies: Vec<String> = r.iter().map(text).collect();
    assert_eq!(
        bodies,
        ["waited 300", "no such item\n", "slept 50", "waited 1"],
        "{engine}: in request order"
    );
    assert!(
        started.elapsed() >= Duration::from_millis(300),
        "{engine}: the timer fired early"
    );
}

/// While one connection waits on a long timer and another on long blocking
/// work, other connections are answered (whatever the machine's speed, a
/// loop stopped by either would answer nothing before them).
fn waiting_stops_no_one(server: &ServerProcess, engine: &str) {
    let mut timer = server.connect();
    request(&mut timer, "GET", "/wait?ms=60000", b"");
    let mut sleeper = server.connect();
    request(&mut sleeper, "GET", "/blocking?ms=60000", b"");
    for _ in 0..5 {
        assert_eq!(ask(server, "GET", "/items/1", b"").code, 404, "{engine}");
        assert_eq!(
            text(&ask(server, "GET", "/wait?ms=0", b"")),
            "waited 0",
            "{engine}"
        );
    }
    assert!(
        nothing_yet(&mut timer),
        "{engine}: the 60 s timer answered early"
    );
    assert!(
        nothing_yet(&mut sleeper),
        "{engine}: the 60 s blocking work answered early"
    );
    // A longer sleep would let a few requests hold every worker for good.
    let refused = ask(server, "GET", "/blocking?ms=60001", b"");
    assert_eq!(refused.code, 400, "{engine}");
    assert!(
        text(&refused).contains("up to 60000"),
        "{engine}: {}",
        text(&refused)
    );
}

/// A chunked body: its chunks' data, then what follows the last chunk.
fn read_chunked(stream: &mut TcpStream, mut buf: Vec<u8>) -> Vec<u8> {
    let mut body = Vec::new();
    let mut chunk = [0u8; 4096];
    loop {
        if let Some(line_end) = buf.windows(2).position(|w| w == b"\r\n") {
            let size = usize::from_str_radix(std::str::from_utf8(&buf[..line_end]).unwrap(), 16)
                .expect("chunk size");
            if buf.len() >= line_end + 2 + size + 2 {
                body.extend_from_slice(&buf[line_end + 2..line_end + 2 + size]);
                assert_eq!(&buf[line_end + 2 + size..line_end + 4 + size], b"\r\n");
                buf.drain(..line_end + 4 + size);
                if size == 0 {
                    return body;
                }
                continue;
            }
        }
        let n = stream.read(&mut chunk).expect("read chunks");
        assert!(n > 0, "the stream ended inside the body");
        buf.extend_from_slice(&chunk[..n]);
    }
}

fn events(server: &ServerProcess, engine: &str) {
    let mut s = server.connect();
    s.write_all(b"GET /events?n=4 HTTP/1.1\r\nHost: t\r\n\r\n")
        .unwrap();
    let started = Instant::now();
    let mut buf = Vec::new();
    let mut chunk = [0u8; 4096];
    let head_end = loop {
        if let Some(at) = buf.windows(4).position(|w| w == b"\r\n\r\n") {
            break at + 4;
        }
        let n = s.read(&mut chunk).unwrap();
        assert!(n > 0);
        buf.extend_from_slice(&chunk[..n]);
    };
    let head = String::from_utf8_lossy(&buf[..head_end]).to_ascii_lowercase();
    assert!(
        head.contains("content-type: text/event-stream"),
        "{engine}: {head}"
    );
    assert!(
        head.contains("transfer-encoding: chunked"),
        "{engine}: {head}"
    );
    let body = read_chunked(&mut s, buf[head_end..].to_vec());
    assert_eq!(
        body, b"data: 0\n\ndata: 1\n\ndata: 2\n\ndata: 3\n\n",
        "{engine}"
    );
    assert!(
        started.elapsed() >= Duration::from_millis(150),
        "{engine}: 50 ms apart"
    );
    // The connection goes on.
    request(&mut s, "GET", "/wait?ms=0", b"");
    let mut left = Vec::new();
    assert_eq!(
        text(&read_http_responses(&mut s, 1, &mut left)[0]),
        "waited 0"
    );
}

fn upload_and_download(server: &ServerProcess, engine: &str) {
    let body: Vec<u8> = (0..300_000u32).map(|i| (i * 7 % 251) as u8).collect();
    let hex: String = Sha256::digest(&body)
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect();
    let r = ask(server, "POST", "/upload", &body);
    assert_eq!(text(&r), format!("300000 {hex}"), "{engine}");
    // Chunked, in pieces.
    let mut s = server.connect();
    s.write_all(b"POST /upload HTTP/1.1\r\nHost: t\r\nTransfer-Encoding: chunked\r\n\r\n")
        .unwrap();
    for piece in body.chunks(70_000) {
        s.write_all(format!("{:x}\r\n", piece.len()).as_bytes())
            .unwrap();
        s.write_all(piece).unwrap();
        s.write_all(b"\r\n").unwrap();
    }
    s.write_all(b"0\r\n\r\n").unwrap();
    let mut left = Vec::new();
    assert_eq!(
        text(&read_http_responses(&mut s, 1, &mut left)[0]),
        format!("300000 {hex}")
    );
    let r = ask(server, "GET", "/download?bytes=1000003", b"");
    assert_eq!(r.body.len(), 1_000_003, "{engine}");
    assert!(r
        .body
        .iter()
        .enumerate()
        .all(|(i, &b)| b == b'0' + (i % 10) as u8));
    assert_eq!(ask(server, "GET", "/download?bytes=0", b"").body, b"");
}

fn panic_isolated(server: &ServerProcess, engine: &str) {
    let mut bystander = server.connect();
    request(&mut bystander, "GET", "/wait?ms=200", b"");
    let mut s = server.connect();
    s.write_all(b"GET /panic HTTP/1.1\r\nHost: t\r\n\r\nGET /items/1 HTTP/1.1\r\nHost: t\r\n\r\n")
        .unwrap();
    let r = read_http_until_close(&mut s);
    assert_eq!(r.len(), 1, "{engine}: nothing after the 500");
    assert_eq!(
        (r[0].code, r[0].header("connection")),
        (500, Some("close")),
        "{engine}"
    );
    let mut left = Vec::new();
    let r = read_http_responses(&mut bystander, 1, &mut left);
    assert_eq!(
        text(&r[0]),
        "waited 200",
        "{engine}: the other connection goes on"
    );
    assert_eq!(
        ask(server, "GET", "/items/1", b"").code,
        404,
        "{engine}: still serving"
    );
}

#[test]
fn the_app_on_every_event_loop_engine() {
    for engine in LOOP_ENGINES {
        let server = start(engine);
        items_api(&server, engine);
        deferred_in_order(&server, engine);
        waiting_stops_no_one(&server, engine);
        events(&server, engine);
        upload_and_download(&server, engine);
        panic_isolated(&server, engine);
    }
}

#[test]
fn engines_without_a_loop_are_refused() {
    let (status, stderr) = run_example::refused("http_app", &["127.0.0.1:0", "threads"]);
    assert!(
        !status.success() && stderr.contains("no event loop"),
        "{stderr}"
    );
    let (status, stderr) = run_example::refused("http_app", &[]);
    assert!(
        !status.success() && stderr.contains("usage: http_app ADDR"),
        "{stderr}"
    );
}

const GIB: u64 = 1 << 30;
/// What the server may grow by while a gibibyte goes through it.
const MEMORY_BOUND_KIB: u64 = 64 * 1024;

#[test]
fn a_gibibyte_upload_is_hashed_with_the_server_memory_bounded() {
    let server = start("epoll-edge");
    let before = server.rss_kib();
    let mut s = server.connect();
    s.write_all(
        format!("POST /upload HTTP/1.1\r\nHost: t\r\nContent-Length: {GIB}\r\n\r\n").as_bytes(),
    )
    .unwrap();
    let piece: Vec<u8> = (0..1u32 << 20).map(|i| (i % 253) as u8).collect();
    let mut hash = Sha256::new();
    let mut peak = before;
    for i in 0..(GIB >> 20) {
        s.write_all(&piece).unwrap();
        hash.update(&piece);
        if i % 64 == 0 {
            peak = peak.max(server.rss_kib());
        }
    }
    let hex: String = hash.finalize().iter().map(|b| format!("{b:02x}")).collect();
    let mut left = Vec::new();
    let r = read_http_responses(&mut s, 1, &mut left);
    assert_eq!(text(&r[0]), format!("{GIB} {hex}"));
    assert!(
        peak < before + MEMORY_BOUND_KIB,
        "the server grew from {before} to {peak} KiB during a 1 GiB upload"
    );
}

#[test]
fn a_gibibyte_download_to_a_slow_reader_keeps_the_server_memory_bounded() {
    let server = start("epoll-edge");
    let before = server.rss_kib();
    let mut s = server.connect();
    s.write_all(format!("GET /download?bytes={GIB} HTTP/1.1\r\nHost: t\r\n\r\n").as_bytes())
        .unwrap();
    let mut buf = vec![0u8; 1 << 20];
    let mut head = Vec::new();
    let body_start = loop {
        let n = s.read(&mut buf).unwrap();
        head.extend_from_slice(&buf[..n]);
        if let Some(at) = head.windows(4).position(|w| w == b"\r\n\r\n") {
            break at + 4;
        }
    };
    let mut received = (head.len() - body_start) as u64;
    let mut peak = before;
    // Slow: 4 KiB every 2 ms for a second, the server's memory watched.
    let slow_until = Instant::now() + Duration::from_secs(1);
    while Instant::now() < slow_until {
        received += s.read(&mut buf[..4096]).unwrap() as u64;
        peak = peak.max(server.rss_kib());
        std::thread::sleep(Duration::from_millis(2));
    }
    // Then the rest as fast as it comes, checking the pattern on the way.
    while received < GIB {
        let n = s.read(&mut buf).unwrap();
        assert!(n > 0, "the download ended at {received} bytes");
        let offset = received as usize % 10;
        assert_eq!(buf[0], b'0' + offset as u8, "pattern at byte {received}");
        received += n as u64;
        if received % (64 << 20) < n as u64 {
            peak = peak.max(server.rss_kib());
        }
    }
    assert_eq!(received, GIB);
    assert!(
        peak < before + MEMORY_BOUND_KIB,
        "the server grew from {before} to {peak} KiB during a 1 GiB download"
    );
}

/// Requests pipelined behind an unanswered one are not parsed ahead, and
/// the input waiting behind it is bounded: the server stops reading, so the
/// client's writes block (TCP holds it back) long before it could fill the
/// server's memory.
#[test]
fn requests_pipelined_behind_a_deferred_answer_are_held_bounded() {
    let server = start("epoll-edge");
    let before = server.rss_kib();
    let mut s = server.connect();
    s.set_write_timeout(Some(Duration::from_secs(1))).unwrap();
    s.write_all(b"GET /wait?ms=60000 HTTP/1.1\r\nHost: t\r\n\r\n")
        .unwrap();
    let batch = b"GET /items/1 HTTP/1.1\r\nHost: t\r\n\r\n".repeat(2048);
    let mut written = 0usize;
    let limit = 64 << 20;
    let blocked = loop {
        match s.write(&batch) {
            Ok(n) => written += n,
            Err(e)
                if matches!(
                    e.kind(),
                    std::io::ErrorKind::WouldBlock | std::io::ErrorKind::TimedOut
                ) =>
            {
                break true
            }
            Err(e) => panic!("the server dropped the connection after {written} bytes: {e}"),
        }
        if written > limit {
            break false;
        }
    };
    assert!(
        blocked,
        "{written} bytes of requests taken behind an unanswered one"
    );
    let grown = server.rss_kib().saturating_sub(before);
    assert!(
        grown < 16 * 1024,
        "the server grew by {grown} KiB holding {written} bytes of requests"
    );
    assert!(
        nothing_yet(&mut s),
        "an answer overtook the unanswered first request"
    );
    assert_eq!(
        ask(&server, "GET", "/wait?ms=0", b"").code,
        200,
        "others are still served"
    );
}
