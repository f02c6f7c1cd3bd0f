//! `iomux load` against HTTP servers written in this test: one records every
//! request it gets (method, target, headers, body) and answers in a shape the
//! test chooses (Content-Length, chunked with trailers, close-delimited,
//! interim 1xx responses, closing after some responses, broken), so that what
//! the client sent and what it counted can be checked against what the
//! server saw and answered. Loopback, ephemeral ports, bounded waits.

mod common;

use common::{load, load_fails_saying};
use iomux_lab::load::{histogram_from_base64, json_number};
use std::io::{Read, Write};
use std::net::{Shutdown, SocketAddr, TcpListener, TcpStream};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

/// One request as the server parsed it.
#[derive(Debug, Clone)]
struct Seen {
    method: String,
    target: String,
    version: String,
    headers: Vec<(String, String)>,
    body: Vec<u8>,
}

impl Seen {
    fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(n, _)| n.eq_ignore_ascii_case(name))
            .map(|(_, v)| v.as_str())
    }
}

/// What the server does after a request: the bytes to answer with and
/// whether to close the connection after them.
type Answer = Box<dyn Fn(usize, &Seen) -> (Vec<u8>, bool) + Send + Sync>;

/// A recording HTTP server on an ephemeral loopback port, a thread per
/// connection. It stops accepting when dropped (or after 60 s).
struct Recorder {
    addr: SocketAddr,
    seen: Arc<Mutex<Vec<Seen>>>,
    answered: Arc<AtomicU64>,
    stop: Arc<AtomicBool>,
}

impl Drop for Recorder {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
    }
}

impl Recorder {
    /// `answer(k, request)` for the k-th request (from 0) on a connection.
    fn start(answer: impl Fn(usize, &Seen) -> (Vec<u8>, bool) + Send + Sync + 'static) -> Recorder {
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        listener.set_nonblocking(true).unwrap();
        let addr = listener.local_addr().unwrap();
        let seen = Arc::new(Mutex::new(Vec::new()));
        let answered = Arc::new(AtomicU64::new(0));
        let stop = Arc::new(AtomicBool::new(false));
        let answer: Arc<Answer> = Arc::new(Box::new(answer));
        let (s, a, st) = (seen.clone(), answered.clone(), stop.clone());
        std::thread::spawn(move || {
            let deadline = Instant::now() + Duration::from_secs(60);
            while !st.load(Ordering::Relaxed) && Instant::now() < deadline {
                match listener.accept() {
                    Ok((stream, _)) => {
                        let (s, a, answer) = (s.clone(), a.clone(), answer.clone());
                        std::thread::spawn(move || serve(stream, &s, &a, &answer));
                    }
                    Err(_) => std::thread::sleep(Duration::from_millis(1)),
                }
            }
        });
        Recorder {
            addr,
            seen,
            answered,
            stop,
        }
    }

    fn seen(&self) -> Vec<Seen> {
        self.seen.lock().unwrap().clone()
    }
}

/// Parse requests off `stream`, record them, answer them; stop at EOF, an
/// error, 10 s of silence, or an answer that closes.
fn serve(mut stream: TcpStream, seen: &Mutex<Vec<Seen>>, answered: &AtomicU64, answer: &Answer) {
    stream.set_nonblocking(false).unwrap();
    stream
        .set_read_timeout(Some(Duration::from_secs(10)))
        .unwrap();
    let mut pending: Vec<u8> = Vec::new();
    let mut buf = [0u8; 16384];
    let mut k = 0;
    loop {
        while let Some(end) = pending.windows(4).position(|w| w == b"\r\n\r\n") {
            let head = String::from_utf8_lossy(&pending[..end]).to_string();
            let mut lines = head.split("\r\n");
            let mut first = lines.next().unwrap_or("").split(' ');
            let (method, target, version) = (
                first.next().unwrap_or("").to_string(),
                first.next().unwrap_or("").to_string(),
                first.next().unwrap_or("").to_string(),
            );
            let headers: Vec<(String, String)> = lines
                .filter_map(|l| l.split_once(':'))
                .map(|(n, v)| (n.to_string(), v.trim().to_string()))
                .collect();
            let mut request = Seen {
                method,
                target,
                version,
                headers,
                body: Vec::new(),
            };
            let length: usize = request
                .header("content-length")
                .map_or(0, |v| v.parse().unwrap());
            if pending.len() < end + 4 + length {
                break; // the body is still coming
            }
            request.body = pending[end + 4..end + 4 + length].to_vec();
            pending.drain(..end + 4 + length);
            let (bytes, close) = answer(k, &request);
            k += 1;
            seen.lock().unwrap().push(request);
            if stream.write_all(&bytes).is_err() {
                return;
            }
            answered.fetch_add(1, Ordering::Relaxed);
            if close {
                // Half-close, then read what else comes until the client
                // closes: closing with unread data would send a reset.
                let _ = stream.shutdown(Shutdown::Write);
                while matches!(stream.read(&mut buf), Ok(n) if n > 0) {}
                return;
            }
        }
        match stream.read(&mut buf) {
            Ok(0) | Err(_) => return,
            Ok(n) => pending.extend_from_slice(&buf[..n]),
        }
    }
}

fn ok(body: &str) -> Vec<u8> {
    format!(
        "HTTP/1.1 200 OK\r\nContent-Length: {}\r\n\r\n{body}",
        body.len()
    )
    .into_bytes()
}

/// Run `iomux load --json <args> <flags>` (`flags` split at spaces), check
/// it succeeded, return its JSON.
fn load_json(args: &[&str], flags: &str) -> String {
    let all: Vec<&str> = args
        .iter()
        .copied()
        .chain(flags.split_whitespace())
        .collect();
    let out = load(&[&["--json"][..], &all].concat());
    let stdout = String::from_utf8_lossy(&out.stdout).to_string();
    assert!(
        out.status.success(),
        "load {all:?} failed: {stdout} {}",
        String::from_utf8_lossy(&out.stderr)
    );
    stdout
}

fn num(json: &str, key: &str) -> u64 {
    json_number(json, key).unwrap_or_else(|| panic!("{key} missing in {json}")) as u64
}

/// A fresh directory for this test's files (the caller removes it).
fn scratch_dir(name: &str) -> std::path::PathBuf {
    let dir = std::env::temp_dir().join(format!("{name}-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    dir
}

fn url(r: &Recorder, path: &str) -> String {
    format!("http://127.0.0.1:{}{path}", r.addr.port())
}

/// The client's count equals the server's, with no errors.
fn assert_counts_match(json: &str, server: &Recorder, expected: u64) {
    assert_eq!(num(json, "requests"), expected, "{json}");
    assert_eq!(server.answered.load(Ordering::Relaxed), expected, "{json}");
    assert_eq!(num(json, "errors"), 0, "{json}");
}

#[test]
fn every_request_carries_what_was_asked_and_counts_match() {
    let server = Recorder::start(|_, _| (ok("done"), false));
    let port = server.addr.port().to_string();
    // A host name in the URL: it resolves, and the Host header keeps the name.
    let target = format!("http://localhost:{port}/api/items?id=3&sort=name");
    let body = r#"{"name":"widget","qty":2}"#;
    let json = load_json(
        &[
            &target,
            "-m",
            "PUT",
            "-H",
            "X-Token: abc 123",
            "-H",
            "Content-Type: application/json",
            "--body",
            body,
        ],
        "-n 600 -c 6 -t 2 --pipeline 4 -d 20",
    );
    assert_counts_match(&json, &server, 600);
    assert!(json.contains("\"status_counts\":{\"200\":600}"), "{json}");
    let seen = server.seen();
    assert_eq!(seen.len(), 600);
    for r in &seen {
        assert_eq!(
            (r.method.as_str(), r.target.as_str(), r.version.as_str()),
            ("PUT", "/api/items?id=3&sort=name", "HTTP/1.1")
        );
        assert_eq!(r.header("host"), Some(format!("localhost:{port}").as_str()));
        assert_eq!(r.header("x-token"), Some("abc 123"));
        assert_eq!(r.header("content-type"), Some("application/json"));
        assert_eq!(
            r.header("content-length"),
            Some(body.len().to_string().as_str())
        );
        assert_eq!(r.header("connection"), None);
        assert_eq!(r.body, body.as_bytes());
    }
}

#[test]
fn body_file_and_http10_keep_alive() {
    let server = Recorder::start(|_, _| {
        let r = b"HTTP/1.0 200 OK\r\nConnection: keep-alive\r\nContent-Length: 2\r\n\r\nok";
        (r.to_vec(), false)
    });
    let dir = scratch_dir("iomux-load-body");
    let file = dir.join("body.bin");
    let body: Vec<u8> = (0..3000u32).map(|i| (i % 251) as u8).collect();
    std::fs::write(&file, &body).unwrap();
    let json = load_json(
        &[
            &url(&server, "/upload"),
            "-m",
            "POST",
            "--body-file",
            file.to_str().unwrap(),
        ],
        "--http1.0 -n 200 -c 2 -d 20",
    );
    std::fs::remove_dir_all(&dir).unwrap();
    assert_counts_match(&json, &server, 200);
    // Kept alive: two connections carried them all.
    assert_eq!(num(&json, "server_closes"), 0, "{json}");
    for r in server.seen() {
        assert_eq!(
            (r.method.as_str(), r.version.as_str()),
            ("POST", "HTTP/1.0")
        );
        assert_eq!(r.header("connection"), Some("keep-alive"));
        assert_eq!(r.body, body);
    }
}

#[test]
fn no_keepalive_sends_connection_close_and_reconnects() {
    let server = Recorder::start(|_, r| {
        assert_eq!(r.header("connection"), Some("close"));
        let closing = b"HTTP/1.1 200 OK\r\nConnection: close\r\nContent-Length: 2\r\n\r\nok";
        (closing.to_vec(), true)
    });
    let json = load_json(&[&url(&server, "/")], "--no-keepalive -n 150 -c 3 -d 20");
    assert_counts_match(&json, &server, 150);
    assert_eq!(num(&json, "server_closes"), 150, "{json}");
    assert!(num(&json, "connects") >= 147, "{json}");
}

#[test]
fn chunked_responses_with_trailers_are_counted() {
    let server = Recorder::start(|k, _| {
        let r = format!("HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\nTrailer: X-Sum\r\n\r\n5;ext=1\r\nHello\r\n{:x}\r\n{}\r\n0\r\nX-Sum: {k}\r\n\r\n", k % 7 + 1, "z".repeat(k % 7 + 1));
        (r.into_bytes(), false)
    });
    let json = load_json(&[&url(&server, "/c")], "-n 400 -c 4 --pipeline 3 -d 20");
    assert_counts_match(&json, &server, 400);
}

#[test]
fn body_bytes_count_the_payload_of_every_framing() {
    // Each answer carries 1,000 bytes of payload: after a Content-Length, in
    // chunks (with extensions and a trailer, which do not count), or up to
    // the close. Heads and 1xx responses carry none.
    let payload = "b".repeat(1000);
    let chunked = format!(
        "HTTP/1.1 100 Continue\r\n\r\nHTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n1f4;x=y\r\n{}\r\n1f4\r\n{}\r\n0\r\nT: v\r\n\r\n",
        &payload[..500],
        &payload[500..]
    );
    let until_close = format!("HTTP/1.1 200 OK\r\n\r\n{payload}");
    for (name, answer, close) in [
        ("content-length", ok(&payload), false),
        ("chunked", chunked.into_bytes(), false),
        ("close-delimited", until_close.into_bytes(), true),
    ] {
        let server = Recorder::start(move |_, _| (answer.clone(), close));
        let json = load_json(&[&url(&server, "/")], "-n 300 -c 3 -d 20");
        assert_counts_match(&json, &server, 300);
        assert_eq!(num(&json, "body_bytes"), 300_000, "{name}: {json}");
        let per_sec = json_number(&json, "body_bytes_per_sec").unwrap();
        let secs = json_number(&json, "duration_s").unwrap();
        assert!(
            (per_sec * secs - 300_000.0).abs() < 300_000.0 * 0.01,
            "{name}: {json}"
        );
        let text =
            String::from_utf8_lossy(&load(&[&url(&server, "/"), "-n", "10", "-c", "1"]).stdout)
                .to_string();
        assert!(text.contains("Bodies: 9.77KB read"), "{name}: {text}");
    }
}

#[test]
fn close_delimited_bodies_end_at_the_close() {
    // No Content-Length, no chunking: the body runs until the server closes.
    let server = Recorder::start(|_, _| {
        (
            b"HTTP/1.1 200 OK\r\nContent-Type: text/plain\r\n\r\nthe body, up to the close"
                .to_vec(),
            true,
        )
    });
    let json = load_json(&[&url(&server, "/")], "-n 120 -c 3 -d 20");
    assert_counts_match(&json, &server, 120);
    assert_eq!(num(&json, "server_closes"), 120, "{json}");
}

#[test]
fn interim_responses_before_the_final_one_are_skipped() {
    let server = Recorder::start(|_, _| {
        let r = b"HTTP/1.1 100 Continue\r\n\r\nHTTP/1.1 103 Early Hints\r\nLink: </s.css>\r\n\r\nHTTP/1.1 201 Created\r\nContent-Length: 0\r\n\r\n";
        (r.to_vec(), false)
    });
    let json = load_json(&[&url(&server, "/")], "-m POST --body x -n 300 -c 3 -d 20");
    assert_counts_match(&json, &server, 300);
    assert!(json.contains("\"status_counts\":{\"201\":300}"), "{json}");
}

#[test]
fn a_server_closing_after_some_responses_gets_new_connections() {
    // Every third response announces the close; on other connections the
    // server closes without a word after the third (with a request already
    // in flight, pipeline 2): the client reconnects and sends it again.
    for announce in [true, false] {
        let server = Recorder::start(move |k, _| {
            let last = k % 3 == 2;
            let head = if last && announce {
                "Connection: close\r\n"
            } else {
                ""
            };
            (
                format!("HTTP/1.1 200 OK\r\n{head}Content-Length: 1\r\n\r\nx").into_bytes(),
                last,
            )
        });
        let json = load_json(&[&url(&server, "/")], "-n 300 -c 4 --pipeline 2 -d 20");
        assert_counts_match(&json, &server, 300);
        let closes = num(&json, "server_closes");
        // 100 connections closed, less a few whose close the run's end cut off.
        assert!((94..=100).contains(&closes), "announce {announce}: {json}");
    }
}

#[test]
fn head_requests_expect_no_body() {
    let server = Recorder::start(|_, r| {
        assert_eq!(r.method, "HEAD");
        (
            b"HTTP/1.1 200 OK\r\nContent-Length: 13\r\n\r\n".to_vec(),
            false,
        )
    });
    let json = load_json(&[&url(&server, "/")], "-m HEAD -n 200 -c 2 -d 20");
    assert_counts_match(&json, &server, 200);
}

#[test]
fn statuses_are_counted_and_errors_by_kind() {
    let server = Recorder::start(|k, _| {
        let status = [200, 404, 503, 302][k % 4];
        (
            format!("HTTP/1.1 {status} X\r\nContent-Length: 0\r\n\r\n").into_bytes(),
            false,
        )
    });
    let json = load_json(&[&url(&server, "/")], "-n 400 -c 1 -d 20");
    assert_eq!(num(&json, "requests"), 400, "{json}");
    assert!(
        json.contains("\"status_counts\":{\"200\":100,\"302\":100,\"404\":100,\"503\":100}"),
        "{json}"
    );
    assert_eq!(num(&json, "status"), 200, "{json}");
    assert_eq!(num(&json, "errors"), 200, "{json}");
    // The summary shows them too.
    let out = load(&[&url(&server, "/"), "-n", "8", "-c", "1", "-d", "20"]);
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(
        text.contains("Status codes: 200: 2, 302: 2, 404: 2, 503: 2"),
        "{text}"
    );
    assert!(text.contains("Requests/sec:"), "{text}");
}

#[test]
fn open_loop_keeps_its_schedule_with_any_request() {
    let server = Recorder::start(|_, _| (ok("ok"), false));
    let json = load_json(
        &[&url(&server, "/submit?x=1"), "-m", "POST", "-H", "X-A: b"],
        "--body payload --rate 300 -n 150 -c 4 -d 20",
    );
    assert_counts_match(&json, &server, 150);
    assert_eq!(num(&json, "unsent"), 0, "{json}");
    // 150 requests at 300/s take about half a second.
    let secs = json_number(&json, "duration_s").unwrap();
    assert!((0.4..5.0).contains(&secs), "{json}");
    for r in server.seen() {
        assert_eq!(
            (r.method.as_str(), r.target.as_str()),
            ("POST", "/submit?x=1")
        );
        assert_eq!(r.body, b"payload");
    }
}

#[test]
fn broken_servers_give_counted_errors_not_a_crash() {
    for (name, answer) in [
        ("garbage", b"SPDY/9 ???\r\n\r\n".to_vec()),
        (
            "endless header",
            [&b"HTTP/1.1 200 OK\r\nX: "[..], &vec![b'a'; 100_000]].concat(),
        ),
        (
            "bad length",
            b"HTTP/1.1 200 OK\r\nContent-Length: -5\r\n\r\n".to_vec(),
        ),
        (
            "bad chunk",
            b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\nxyz\r\n".to_vec(),
        ),
        (
            "cut short",
            b"HTTP/1.1 200 OK\r\nContent-Length: 50\r\n\r\nshort".to_vec(),
        ),
    ] {
        let server = Recorder::start(move |_, _| (answer.clone(), name == "cut short"));
        let json = load_json(&[&url(&server, "/")], "-c 2 -d 0.5");
        assert_eq!(num(&json, "requests"), 0, "{name}: {json}");
        let kind = if name == "cut short" {
            "io"
        } else {
            "protocol"
        };
        assert!(num(&json, kind) > 0, "{name}: {json}");
        assert!(json.contains("\"first_error\":\""), "{name}: {json}");
    }
}

#[test]
fn merge_takes_percentiles_from_the_union_of_histograms() {
    let slow = Recorder::start(|_, _| {
        std::thread::sleep(Duration::from_millis(3));
        (ok("slow"), false)
    });
    let fast = Recorder::start(|_, _| (ok("fast"), false));
    let dir = scratch_dir("iomux-load-merge");
    let a = load_json(&[&url(&slow, "/")], "-n 200 -c 2 -d 20");
    let b = load_json(&[&url(&fast, "/")], "-n 2000 -c 2 -d 20");
    // "slow" and "fast" are 4-byte bodies.
    assert_eq!(num(&a, "body_bytes"), 800, "{a}");
    assert_eq!(num(&b, "body_bytes"), 8000, "{b}");
    let (fa, fb) = (dir.join("a.json"), dir.join("b.json"));
    std::fs::write(&fa, &a).unwrap();
    std::fs::write(&fb, &b).unwrap();
    let merged = load_json(&["merge", fa.to_str().unwrap(), fb.to_str().unwrap()], "");
    let text = load(&[
        "merge",
        "--latency",
        fa.to_str().unwrap(),
        fb.to_str().unwrap(),
    ]);
    std::fs::remove_dir_all(&dir).unwrap();
    assert_eq!(num(&merged, "requests"), 2200, "{merged}");
    assert_eq!(num(&merged, "body_bytes"), 8800, "{merged}");
    assert_eq!(num(&merged, "runs"), 2, "{merged}");
    assert_eq!(num(&merged, "conns"), 4, "{merged}");
    assert!(
        merged.contains("\"status_counts\":{\"200\":2200}"),
        "{merged}"
    );
    let histogram = |json: &str| {
        let at = json.find("\"histogram\":\"").unwrap() + 13;
        histogram_from_base64(&json[at..at + json[at..].find('"').unwrap()]).unwrap()
    };
    let mut union = histogram(&a);
    union.add(histogram(&b)).unwrap();
    for (key, q) in [("p50", 0.5), ("p90", 0.9), ("p99", 0.99)] {
        let expected: f64 = format!("{:.1}", union.value_at_quantile(q) as f64 / 1000.0)
            .parse()
            .unwrap();
        assert_eq!(json_number(&merged, key), Some(expected), "{key}: {merged}");
    }
    assert_eq!(histogram(&merged), union);
    let text = String::from_utf8_lossy(&text.stdout);
    assert!(
        text.contains("(2 runs merged)") && text.contains("Detailed Percentile spectrum"),
        "{text}"
    );
}

#[test]
fn merge_errors_name_the_file() {
    let dir = scratch_dir("iomux-load-merge-bad");
    let bad = dir.join("bad.json");
    std::fs::write(&bad, "{\"rps\":1}").unwrap();
    let missing = dir.join("missing.json");
    for (file, needle) in [(&bad, "no latency histogram"), (&missing, "cannot read")] {
        let name = file.file_name().unwrap().to_str().unwrap();
        load_fails_saying(&["merge", file.to_str().unwrap()], &[needle, name]);
    }
    std::fs::remove_dir_all(&dir).unwrap();
}

#[test]
fn url_and_request_mistakes_are_explained() {
    for (args, needle) in [
        (&["https://127.0.0.1:1/"][..], "connection refused"),
        (
            &["http://127.0.0.1:1/", "--insecure"][..],
            "for https:// URLs",
        ),
        (
            &["https://127.0.0.1:1/", "--cacert", "/nonexistent/ca.pem"][..],
            "cannot read the certificates in /nonexistent/ca.pem",
        ),
        (
            &["https://127.0.0.1:1/", "--cacert", "x.pem", "--insecure"][..],
            "cannot be used with",
        ),
        (&["ftp://127.0.0.1:1/"][..], "not supported"),
        (
            &["http://127.0.0.1:1/", "--addr", "127.0.0.1:1"][..],
            "give one of them",
        ),
        (
            &["http://127.0.0.1:1/", "--proto", "echo"][..],
            "for --proto echo give the server with --addr",
        ),
        (
            &["--proto", "echo", "--addr", "127.0.0.1:1", "-m", "POST"][..],
            "shape HTTP requests",
        ),
        (
            &["http://127.0.0.1:1/", "-H", "novalue"][..],
            "is not 'Name: value'",
        ),
        (
            &["http://127.0.0.1:1/", "-H", "Content-Length: 3"][..],
            "from the body",
        ),
        (
            &["http://127.0.0.1:1/", "-m", "G ET"][..],
            "not a valid HTTP method",
        ),
        (
            &[
                "http://127.0.0.1:1/",
                "--body-file",
                "/nonexistent/iomux-body",
            ][..],
            "cannot read --body-file",
        ),
        (
            &["http://127.0.0.1:1/", "--no-keepalive", "--pipeline", "4"][..],
            "keep-alive",
        ),
        (
            &["http://127.0.0.1:1/", "-n", "0"][..],
            "at least one request",
        ),
        (&["http://127.0.0.1:1/", "-d", "ten"][..], "not a duration"),
    ] {
        load_fails_saying(args, &[needle]);
    }
}

#[test]
fn wrk_style_short_flags_and_units() {
    let server = Recorder::start(|_, _| (ok("ok"), false));
    let json = load_json(&[&url(&server, "/")], "-c 3 -t 2 -d 300ms");
    assert_eq!(
        (num(&json, "conns"), num(&json, "threads")),
        (3, 2),
        "{json}"
    );
    let secs = json_number(&json, "duration_s").unwrap();
    assert!((0.25..=0.31).contains(&secs), "{json}");
    assert!(num(&json, "requests") > 0, "{json}");
}

/// A server that answers the first request on each connection with
/// `head`, then `filler` over and over, until the client goes away (or 30 s
/// pass). The filler goes out with `sendfile` from a file of it, so the
/// kernel refills the client's socket faster than the client can read it:
/// every read the client makes comes back full.
fn flooding_server(head: &'static [u8], filler: &'static [u8]) -> SocketAddr {
    use std::os::fd::AsRawFd;
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = listener.local_addr().unwrap();
    let path = std::env::temp_dir().join(format!(
        "iomux-flood-{}-{}",
        std::process::id(),
        addr.port()
    ));
    std::fs::write(&path, filler.repeat((8 << 20) / filler.len())).unwrap();
    let file = std::fs::File::open(&path).unwrap();
    std::fs::remove_file(&path).unwrap();
    let file = Arc::new(file);
    std::thread::spawn(move || {
        for stream in listener.incoming().take(64) {
            let Ok(mut stream) = stream else { return };
            let file = file.clone();
            std::thread::spawn(move || {
                let deadline = Instant::now() + Duration::from_secs(30);
                let mut request = Vec::new();
                let mut buf = [0u8; 4096];
                while !request.windows(4).any(|w| w == b"\r\n\r\n") {
                    match stream.read(&mut buf) {
                        Ok(0) | Err(_) => return,
                        Ok(n) => request.extend_from_slice(&buf[..n]),
                    }
                }
                if stream.write_all(head).is_err() {
                    return;
                }
                let len = file.metadata().unwrap().len() as usize;
                while Instant::now() < deadline {
                    let mut offset: libc::off_t = 0;
                    // SAFETY: both descriptors are open for the call; offset is a live local.
                    let sent = unsafe {
                        libc::sendfile(stream.as_raw_fd(), file.as_raw_fd(), &mut offset, len)
                    };
                    if sent <= 0 {
                        return;
                    }
                }
            });
        }
    });
    addr
}

#[test]
fn an_endless_response_does_not_keep_the_client_past_its_duration() {
    // Every read comes back full: the client must still see the clock.
    for (name, head, filler) in [
        (
            "endless 100 Continue",
            &b""[..],
            &b"HTTP/1.1 100 Continue\r\n\r\n"[..],
        ),
        (
            "endless body",
            b"HTTP/1.1 200 OK\r\nContent-Length: 1000000000000000\r\n\r\n",
            b"0123456789abcdef",
        ),
    ] {
        let addr = flooding_server(head, filler);
        let url = format!("http://{addr}/");
        let mut child = std::process::Command::new(env!("CARGO_BIN_EXE_iomux"))
            .args([
                "load",
                "--json",
                "-c",
                "2",
                "-d",
                "1",
                "--timeout",
                "60",
                &url,
            ])
            .stdout(std::process::Stdio::piped())
            .stderr(std::process::Stdio::piped())
            .spawn()
            .unwrap();
        let started = Instant::now();
        let mut exited = None;
        while started.elapsed() < Duration::from_secs(20) {
            if let Some(status) = child.try_wait().unwrap() {
                exited = Some(status);
                break;
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        let Some(status) = exited else {
            child.kill().unwrap();
            child.wait().unwrap();
            panic!("{name}: `iomux load -d 1` still ran after 20 s and was killed");
        };
        let mut json = String::new();
        child
            .stdout
            .take()
            .unwrap()
            .read_to_string(&mut json)
            .unwrap();
        assert!(status.success(), "{name}: {status} {json}");
        let secs = json_number(&json, "duration_s").unwrap();
        assert!((0.9..1.2).contains(&secs), "{name}: {json}");
        assert_eq!(num(&json, "requests"), 0, "{name}: {json}");
        // It was flooded (more than 1 MiB arrived), not idle.
        assert!(num(&json, "bytes_received") > 1 << 20, "{name}: {json}");
        // And --timeout is seen too: a response that never ends times out
        // and its connection is reopened.
        let json = load_json(&[&url], "-c 1 -d 2 --timeout 300ms");
        assert_eq!(num(&json, "requests"), 0, "{name}: {json}");
        assert!(num(&json, "timeout") >= 1, "{name}: {json}");
        assert!(num(&json, "bytes_received") > 1 << 20, "{name}: {json}");
    }
}
