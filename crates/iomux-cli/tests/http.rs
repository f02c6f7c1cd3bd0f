//! `iomux serve --proto http` over real sockets on every event engine:
//! keep-alive, HTTP/1.0, pipelining, 100-continue, half-close, limits, every
//! error class, the request-head deadline, and isolation between connections.

#[macro_use]
mod common;

use common::{read_http_responses, read_http_until_close, HttpResponse, ServerProcess};
use std::io::{ErrorKind, Read, Write};
use std::net::{Shutdown, TcpStream};
use std::time::Duration;

const GET: &[u8] = b"GET / HTTP/1.1\r\nHost: t\r\n\r\n";

fn start(engine: &[&str], extra: &[&str]) -> ServerProcess {
    let mut args = vec!["--proto", "http"];
    args.extend_from_slice(engine);
    args.extend_from_slice(extra);
    ServerProcess::start(&args)
}

fn assert_hello(r: &HttpResponse, what: &str) {
    assert_eq!(r.code, 200, "{what}");
    assert_eq!(r.body, b"Hello, World!", "{what}");
    assert_eq!(r.header("server"), Some("iomux"), "{what}");
    assert_eq!(r.header("content-type"), Some("text/plain"), "{what}");
    assert_eq!(r.header("content-length"), Some("13"), "{what}");
    let date = r
        .header("date")
        .unwrap_or_else(|| panic!("{what}: no Date"));
    assert!(
        date.ends_with(" GMT") && date.len() == 29,
        "{what}: Date {date:?}"
    );
}

/// The connection is still open: nothing to read, no EOF, within a moment.
fn assert_open(stream: &TcpStream, what: &str) {
    stream
        .set_read_timeout(Some(Duration::from_millis(100)))
        .unwrap();
    let mut b = [0u8; 1];
    match (&*stream).read(&mut b) {
        Err(e) if matches!(e.kind(), ErrorKind::WouldBlock | ErrorKind::TimedOut) => {}
        other => panic!("{what}: expected an open, quiet connection, got {other:?}"),
    }
    stream
        .set_read_timeout(Some(Duration::from_secs(20)))
        .unwrap();
}

fn keep_alive(server: &ServerProcess) {
    let mut s = server.connect();
    let mut left = Vec::new();
    for i in 0..5 {
        s.write_all(GET).unwrap();
        let r = read_http_responses(&mut s, 1, &mut left);
        assert_hello(&r[0], &format!("keep-alive request {i}"));
        assert_eq!(r[0].header("connection"), None);
    }
    assert_open(&s, "after keep-alive requests");
    // Connection: close is honoured: the response, then EOF.
    s.write_all(b"GET /plaintext HTTP/1.1\r\nHost: t\r\nConnection: close\r\n\r\n")
        .unwrap();
    let r = read_http_until_close(&mut s);
    assert_eq!(r.len(), 1);
    assert_hello(&r[0], "Connection: close");
    assert_eq!(r[0].header("connection"), Some("close"));
}

fn http10(server: &ServerProcess) {
    let mut s = server.connect();
    s.write_all(b"GET / HTTP/1.0\r\n\r\n").unwrap();
    let r = read_http_until_close(&mut s);
    assert_eq!(r.len(), 1, "HTTP/1.0 closes after one response");
    assert_hello(&r[0], "HTTP/1.0");
    let mut s = server.connect();
    let mut left = Vec::new();
    for _ in 0..3 {
        s.write_all(b"GET / HTTP/1.0\r\nConnection: keep-alive\r\n\r\n")
            .unwrap();
        let r = read_http_responses(&mut s, 1, &mut left);
        assert_hello(&r[0], "HTTP/1.0 keep-alive");
        assert_eq!(r[0].header("connection"), Some("keep-alive"));
    }
    assert_open(&s, "HTTP/1.0 keep-alive");
}

fn pipelining(server: &ServerProcess) {
    let mut s = server.connect();
    let mut batch = Vec::new();
    for i in 0..16 {
        match i % 4 {
            0 => batch.extend_from_slice(GET),
            1 => batch
                .extend_from_slice(format!("GET /nope{i} HTTP/1.1\r\nHost: t\r\n\r\n").as_bytes()),
            2 => batch.extend_from_slice(
                format!("POST /echo HTTP/1.1\r\nHost: t\r\nContent-Length: 6\r\n\r\nbody{i:02}")
                    .as_bytes(),
            ),
            _ => batch.extend_from_slice(b"HEAD /plaintext HTTP/1.1\r\nHost: t\r\n\r\n"),
        }
    }
    s.write_all(&batch).unwrap();
    // All 16 answers were written at once: wait for the first byte, then one read.
    let mut buf = vec![0u8; 64 * 1024];
    let mut peek = [0u8; 1];
    assert_eq!(s.peek(&mut peek).unwrap(), 1);
    std::thread::sleep(Duration::from_millis(50));
    let n = s.read(&mut buf).unwrap();
    let mut at = 0;
    let mut codes = Vec::new();
    for i in 0..16 {
        let (r, used) = common::parse_http_response(&buf[at..n], i % 4 == 3)
            .unwrap_or_else(|| panic!("response {i} not in the first read of {n} bytes"));
        at += used;
        match i % 4 {
            0 => assert_hello(&r, "pipelined GET"),
            1 => assert_eq!(r.code, 404),
            2 => assert_eq!(r.body, format!("body{i:02}").as_bytes()),
            _ => assert_eq!((r.code, r.body.len()), (200, 0)),
        }
        codes.push(r.code);
    }
    assert_eq!(at, n, "nothing but the 16 responses");
    assert_open(&s, "after a pipeline");
    // A close inside a pipeline: later requests are not answered.
    let mut s = server.connect();
    let mut batch = GET.repeat(2);
    batch.extend_from_slice(b"GET / HTTP/1.1\r\nHost: t\r\nConnection: close\r\n\r\n");
    batch.extend_from_slice(&GET.repeat(3));
    s.write_all(&batch).unwrap();
    let r = read_http_until_close(&mut s);
    assert_eq!(r.len(), 3, "answers stop at the Connection: close request");
}

fn expect_continue(server: &ServerProcess) {
    let mut s = server.connect();
    s.write_all(
        b"POST /echo HTTP/1.1\r\nHost: t\r\nExpect: 100-continue\r\nContent-Length: 11\r\n\r\n",
    )
    .unwrap();
    let mut got = [0u8; 25];
    s.read_exact(&mut got).unwrap();
    assert_eq!(&got, b"HTTP/1.1 100 Continue\r\n\r\n");
    s.write_all(b"hello world").unwrap();
    let mut left = Vec::new();
    let r = read_http_responses(&mut s, 1, &mut left);
    assert_eq!((r[0].code, &r[0].body[..]), (200, &b"hello world"[..]));
    // Chunked with 100-continue.
    s.write_all(b"POST /echo HTTP/1.1\r\nHost: t\r\nExpect: 100-continue\r\nTransfer-Encoding: chunked\r\n\r\n")
        .unwrap();
    let r = read_http_responses(&mut s, 1, &mut left);
    assert_eq!(r[0].code, 100);
    s.write_all(b"5\r\nchunk\r\n3\r\ned!\r\n0\r\n\r\n").unwrap();
    let r = read_http_responses(&mut s, 1, &mut left);
    assert_eq!((r[0].code, &r[0].body[..]), (200, &b"chunked!"[..]));
}

fn echo_large(server: &ServerProcess) {
    let mut s = server.connect();
    let body: Vec<u8> = (0..1024 * 1024).map(|i| (i * 7 % 251) as u8).collect();
    let mut req = format!(
        "POST /echo HTTP/1.1\r\nHost: t\r\nContent-Length: {}\r\n\r\n",
        body.len()
    )
    .into_bytes();
    req.extend_from_slice(&body);
    let mut writer = s.try_clone().unwrap();
    let sender = std::thread::spawn(move || writer.write_all(&req).unwrap());
    let mut left = Vec::new();
    let r = read_http_responses(&mut s, 1, &mut left);
    sender.join().unwrap();
    assert!(r[0].body == body, "1 MiB echo came back intact");
    // The same body chunked, in odd-sized chunks.
    let mut req = b"POST /echo HTTP/1.1\r\nHost: t\r\nTransfer-Encoding: chunked\r\n\r\n".to_vec();
    for piece in body.chunks(7919) {
        req.extend_from_slice(format!("{:x}\r\n", piece.len()).as_bytes());
        req.extend_from_slice(piece);
        req.extend_from_slice(b"\r\n");
    }
    req.extend_from_slice(b"0\r\n\r\n");
    let mut writer = s.try_clone().unwrap();
    let sender = std::thread::spawn(move || writer.write_all(&req).unwrap());
    let r = read_http_responses(&mut s, 1, &mut left);
    sender.join().unwrap();
    assert!(r[0].body == body, "1 MiB chunked echo came back intact");
}

fn half_close(server: &ServerProcess) {
    let mut s = server.connect();
    s.write_all(
        &[
            GET,
            b"POST /echo HTTP/1.1\r\nHost: t\r\nContent-Length: 2\r\n\r\nok",
        ]
        .concat(),
    )
    .unwrap();
    s.shutdown(Shutdown::Write).unwrap();
    let r = read_http_until_close(&mut s);
    assert_eq!(r.len(), 2, "a half-closed client still gets its responses");
    assert_hello(&r[0], "half-close");
    assert_eq!(r[1].body, b"ok");
}

/// Every error class: the status, `Connection: close`, and EOF after it.
fn error_classes() -> Vec<(&'static str, Vec<u8>, u16)> {
    let post = |h: &str| format!("POST /echo HTTP/1.1\r\nHost: t\r\n{h}\r\n\r\nhello").into_bytes();
    let header = |h: &str| format!("GET / HTTP/1.1\r\nHost: t\r\n{h}\r\n\r\n").into_bytes();
    let mut many = String::from("GET / HTTP/1.1\r\nHost: t\r\n");
    for i in 0..101 {
        many.push_str(&format!("X-{i}: v\r\n"));
    }
    many.push_str("\r\n");
    vec![
        ("CL and TE", post("Content-Length: 5\r\nTransfer-Encoding: chunked"), 400),
        ("CL +5", post("Content-Length: +5"), 400),
        ("CL -1", post("Content-Length: -1"), 400),
        ("CL 1x", post("Content-Length: 1x"), 400),
        ("CL overflow", post("Content-Length: 184467440737095516160"), 400),
        ("CL list differs", post("Content-Length: 5, 7"), 400),
        ("TE gzip", post("Transfer-Encoding: gzip, chunked"), 501),
        ("TE on 1.0", b"POST /echo HTTP/1.0\r\nTransfer-Encoding: chunked\r\n\r\n0\r\n\r\n".to_vec(), 400),
        ("obs-fold", header("X-A: a\r\n  folded"), 400),
        ("space before colon", header("X-A : a"), 400),
        ("whitespace before first header", b"GET / HTTP/1.1\r\n Host: t\r\n\r\n".to_vec(), 400),
        ("bare CR", header("X-A: a\rb"), 400),
        ("NUL in value", header("X-A: a\0b"), 400),
        ("control in name", header("X-\x01A: a"), 400),
        ("control in target", b"GET /\x7f HTTP/1.1\r\nHost: t\r\n\r\n".to_vec(), 400),
        ("missing Host", b"GET / HTTP/1.1\r\n\r\n".to_vec(), 400),
        ("invalid Host", b"GET / HTTP/1.1\r\nHost: a/b\r\n\r\n".to_vec(), 400),
        ("trailer without colon", b"POST /echo HTTP/1.1\r\nHost: t\r\nTransfer-Encoding: chunked\r\n\r\n0\r\nX-Trailer\r\n\r\n".to_vec(), 400),
        ("duplicate Host", header("Host: u"), 400),
        ("HTTP/2.0", b"GET / HTTP/2.0\r\nHost: t\r\n\r\n".to_vec(), 505),
        ("bad chunk size", b"POST /echo HTTP/1.1\r\nHost: t\r\nTransfer-Encoding: chunked\r\n\r\nxyz\r\n".to_vec(), 400),
        ("overflowing chunk size", b"POST /echo HTTP/1.1\r\nHost: t\r\nTransfer-Encoding: chunked\r\n\r\n1ffffffffffffffff\r\n".to_vec(), 400),
        ("request line too long", format!("GET /{} HTTP/1.1\r\nHost: t\r\n\r\n", "a".repeat(9000)).into_bytes(), 414),
        ("too many headers", many.into_bytes(), 431),
        ("head too large", header(&format!("X-Big: {}", "b".repeat(66_000))), 431),
        ("body too large", post("Content-Length: 1048577"), 413),
        ("chunked body too large", b"POST /echo HTTP/1.1\r\nHost: t\r\nTransfer-Encoding: chunked\r\n\r\n100001\r\n".to_vec(), 413),
    ]
}

fn errors(server: &ServerProcess) {
    for (name, request, code) in error_classes() {
        let mut s = server.connect();
        // A good request follows the bad one: it must not be answered.
        s.write_all(&[&request[..], GET].concat()).unwrap();
        let r = read_http_until_close(&mut s);
        assert_eq!(r.len(), 1, "{name}: exactly one response, then close");
        assert_eq!(r[0].code, code, "{name}");
        assert_eq!(r[0].header("connection"), Some("close"), "{name}");
        assert!(
            r[0].header("date").is_some() && r[0].header("server").is_some(),
            "{name}"
        );
    }
}

/// A malformed request on one connection leaves others untouched.
fn isolation(server: &ServerProcess) {
    let mut good = server.connect();
    let mut left = Vec::new();
    good.write_all(GET).unwrap();
    assert_hello(&read_http_responses(&mut good, 1, &mut left)[0], "before");
    // Half a request pending on the good connection while others misbehave.
    good.write_all(b"GET /plaintext HTTP/1.1\r\nHo").unwrap();
    let bad: Vec<_> = error_classes()
        .into_iter()
        .map(|(_, req, _)| {
            let mut s = server.connect();
            s.write_all(&req).unwrap();
            s
        })
        .collect();
    for mut s in bad {
        let r = read_http_until_close(&mut s);
        assert!(r.len() == 1 && r[0].code >= 400);
    }
    good.write_all(b"st: t\r\n\r\n").unwrap();
    assert_hello(&read_http_responses(&mut good, 1, &mut left)[0], "after");
    good.write_all(GET).unwrap();
    assert_hello(
        &read_http_responses(&mut good, 1, &mut left)[0],
        "after, again",
    );
}

/// Every HTTP behaviour over one server.
fn serves_http(engine: &[&str]) {
    let mut server = start(engine, &[]);
    keep_alive(&server);
    http10(&server);
    pipelining(&server);
    expect_continue(&server);
    echo_large(&server);
    half_close(&server);
    errors(&server);
    isolation(&server);
    assert!(server.stop().success(), "{engine:?}: clean exit");
}
for_engines!(serves_http, sleeping);

/// The busy-polling engine closes at once after an error response, with the
/// rest of the request unread: the kernel then resets the connection and the
/// client may lose the response (the 431 for a 66 KB head, every time here).
/// The other engines send their FIN and drain the peer's input first.
#[test]
fn serves_http_on_the_busy_polling_engine() {
    serves_http(common::engine("nonblocking"));
}

/// With a 1 s deadline: an idle keep-alive connection closes silently; a head
/// that has begun gets 408, and trickling it byte by byte does not extend the deadline.
fn deadlines(engine: &[&str]) {
    let server = start(engine, &["--idle-timeout", "1"]);
    let idle = server.connect();
    let mut partial = server.connect();
    partial.write_all(b"GET / HTTP/1.1\r\nHo").unwrap();
    let mut trickled = server.connect();
    let mut writer = trickled.try_clone().unwrap();
    let trickle = std::thread::spawn(move || {
        // 80 bytes at 50 ms each would take 4 s; the deadline is 1 s.
        let head = format!(
            "GET / HTTP/1.1\r\nHost: t\r\nX-Slow: {}\r\n\r\n",
            "s".repeat(39)
        );
        for b in head.as_bytes() {
            if writer.write_all(&[*b]).is_err() {
                return;
            }
            std::thread::sleep(Duration::from_millis(50));
        }
    });
    let r = read_http_until_close(&mut partial);
    assert_eq!(r.len(), 1);
    assert_eq!((r[0].code, r[0].header("connection")), (408, Some("close")));
    let r = read_http_until_close(&mut idle.try_clone().unwrap());
    assert!(
        r.is_empty(),
        "an idle keep-alive connection closes without a response"
    );
    let r = read_http_until_close(&mut trickled);
    trickle.join().unwrap();
    assert_eq!(r.len(), 1, "the trickled head got one response");
    // Had each byte restarted the deadline, the head would have completed: 200.
    assert_eq!(r[0].code, 408, "trickling must not extend the deadline");
}
for_engines!(deadlines, concurrent);

#[test]
fn blocking_engine_serves_pipelined_http() {
    let mut server = start(&["--backend", "blocking"], &[]);
    let mut s = server.connect();
    s.write_all(&GET.repeat(4)).unwrap();
    let mut left = Vec::new();
    let r = read_http_responses(&mut s, 4, &mut left);
    assert_eq!(r.len(), 4);
    r.iter().for_each(|r| assert_hello(r, "blocking engine"));
    drop(s);
    assert!(server.stop().success());
}

#[test]
fn a_limit_flag_out_of_range_is_refused() {
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_iomux"))
        .args(["serve", "--addr", "127.0.0.1:0", "--max-headers", "101"])
        .output()
        .unwrap();
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("--max-headers"));
}

fn limit_flags_change_the_limits(engine: &[&str]) {
    let mut server = start(
        engine,
        &[
            "--max-request-line",
            "100",
            "--max-head",
            "300",
            "--max-headers",
            "3",
            "--max-body",
            "10",
        ],
    );
    let cases: Vec<(Vec<u8>, u16)> = vec![
        (
            format!("GET /{} HTTP/1.1\r\nHost: t\r\n\r\n", "a".repeat(100)).into_bytes(),
            414,
        ),
        (
            format!(
                "GET / HTTP/1.1\r\nHost: t\r\nX: {}\r\n\r\n",
                "a".repeat(280)
            )
            .into_bytes(),
            431,
        ),
        (
            b"GET / HTTP/1.1\r\nHost: t\r\nA: 1\r\nB: 1\r\nC: 1\r\n\r\n".to_vec(),
            431,
        ),
        (
            b"POST /echo HTTP/1.1\r\nHost: t\r\nContent-Length: 11\r\n\r\n".to_vec(),
            413,
        ),
        (
            b"POST /echo HTTP/1.1\r\nHost: t\r\nContent-Length: 10\r\n\r\n0123456789".to_vec(),
            200,
        ),
    ];
    for (req, code) in cases {
        let mut s = server.connect();
        s.write_all(&req).unwrap();
        s.shutdown(Shutdown::Write).unwrap();
        let r = read_http_until_close(&mut s);
        assert_eq!(
            r[0].code,
            code,
            "{engine:?}: {:?}",
            String::from_utf8_lossy(&req[..40])
        );
    }
    assert!(server.stop().success(), "{engine:?}: clean exit");
}
for_engines!(limit_flags_change_the_limits);
