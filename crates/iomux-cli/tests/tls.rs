//! `iomux serve --tls-cert --tls-key`: HTTP, echo and RESP over TLS on
//! every event-loop engine, driven by clients nobody here wrote (curl,
//! `openssl s_client`, Python's ssl module, redis-cli --tls, rustls);
//! hostile input closes only its own connection, counted, with no leak.
//! Certificates are made at test time (`openssl req`).

#[macro_use]
mod common;
#[path = "common/tls.rs"]
mod tls_fixture;

use common::*;
use std::io::{Read, Write};
use std::net::{Shutdown, SocketAddr, TcpStream};
use std::process::{Command, Stdio};
use std::time::Duration;
use tls_fixture::*;

fn tls_args<'a>(proto: &'a str, engine: &[&'a str], extra: &[&'a str]) -> Vec<&'a str> {
    let certs = certs();
    let mut args = vec!["--proto", proto];
    args.extend_from_slice(engine);
    args.extend_from_slice(&[
        "--tls-cert",
        certs.ec_cert.to_str().unwrap(),
        "--tls-key",
        certs.ec_key.to_str().unwrap(),
    ]);
    args.extend_from_slice(extra);
    args
}

fn tls_server(proto: &str, engine: &[&str], extra: &[&str]) -> LoggedServer {
    LoggedServer::start(&tls_args(proto, engine, extra), None)
}

/// Run a client to its end (killed after 60 s by `timeout`); its stdout,
/// which must be a success.
fn run(program: &str, args: &[&str], stdin: &[u8]) -> String {
    let mut child = Command::new("timeout")
        .arg("60")
        .arg(program)
        .args(args)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap_or_else(|e| panic!("{program} could not run: {e}"));
    child.stdin.take().unwrap().write_all(stdin).unwrap();
    let out = child.wait_with_output().unwrap();
    let (stdout, stderr) = (
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    );
    assert!(
        out.status.success(),
        "{program} {args:?} failed ({:?}):\nstdout: {stdout}\nstderr: {stderr}",
        out.status
    );
    stdout + &stderr
}

fn python(args: &[&str]) -> String {
    let script = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/tls_client.py");
    let mut all = vec![script];
    all.extend_from_slice(args);
    run("python3", &all, b"")
}

/// The server's descriptors once they stopped changing (the io_uring
/// engine sets its ring up after the ready line).
fn settled_fd_count(server: &ServerProcess) -> usize {
    let mut last = server.fd_count();
    for _ in 0..50 {
        std::thread::sleep(Duration::from_millis(200));
        let now = server.fd_count();
        if now == last {
            return now;
        }
        last = now;
    }
    last
}

/// The server's descriptors come back to `fds` (within 10 s).
fn assert_descriptors_back(server: &ServerProcess, fds: usize) {
    assert!(
        eventually(Duration::from_secs(10), || server.fd_count() == fds),
        "descriptors: {fds} at start, {} now",
        server.fd_count()
    );
}

/// The `name=value` counter of the server's last stderr line.
fn counter(stderr: &str, name: &str) -> u64 {
    let line = stderr
        .lines()
        .rfind(|l| l.contains("stopped"))
        .unwrap_or_else(|| panic!("no stop line in {stderr}"));
    line.split_whitespace()
        .find_map(|kv| kv.strip_prefix(&format!("{name}=")))
        .unwrap_or_else(|| panic!("no {name} in {line}"))
        .parse()
        .unwrap()
}

fn s_client(addr: SocketAddr, version: &str, request: &[u8]) -> String {
    let ca = certs().ec_cert.to_str().unwrap();
    let connect = addr.to_string();
    run(
        "openssl",
        &[
            "s_client",
            version,
            "-alpn",
            "http/1.1",
            "-CAfile",
            ca,
            "-verify_return_error",
            "-servername",
            "localhost",
            "-connect",
            &connect,
            "-ign_eof",
        ],
        request,
    )
}

/// HTTP, echo and RESP over TLS with every client, on one engine.
fn every_client_on_every_protocol(engine: &[&str]) {
    let certs = certs();
    let ca = certs.ec_cert.to_str().unwrap();

    let mut http = tls_server("http", engine, &[]);
    let addr = http.server.addr;
    let port = addr.port().to_string();
    let fds = settled_fd_count(&http.server);
    // curl: two requests on one keep-alive connection, the certificate verified.
    let url = |path: &str| format!("https://localhost:{port}{path}");
    let resolve = format!("localhost:{port}:127.0.0.1");
    let out = run(
        "curl",
        &[
            "-sS",
            "--cacert",
            ca,
            "--resolve",
            &resolve,
            &url("/"),
            &url("/plaintext"),
        ],
        b"",
    );
    assert_eq!(out, "Hello, World!Hello, World!", "curl");
    // openssl s_client: TLS 1.2 and 1.3, ALPN http/1.1.
    let request = b"GET /plaintext HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n";
    for (flag, version) in [("-tls1_2", "TLSv1.2"), ("-tls1_3", "TLSv1.3")] {
        let out = s_client(addr, flag, request);
        assert!(out.contains(&format!("New, {version}")), "{flag}: {out}");
        assert!(out.contains("ALPN protocol: http/1.1"), "{flag}: {out}");
        assert!(out.contains("Verify return code: 0 (ok)"), "{flag}: {out}");
        assert!(out.contains("Hello, World!"), "{flag}: {out}");
    }
    // Python: 32 pipelined requests in one write, over each version.
    assert_eq!(
        python(&["http", &port, ca, "32"]).trim(),
        "TLSv1.3 http/1.1 32"
    );
    assert_eq!(
        python(&["http", &port, ca, "32", "TLS1.2"]).trim(),
        "TLSv1.2 http/1.1 32"
    );
    assert_descriptors_back(&http.server, fds);
    let err = http.stop_cleanly("http over TLS");
    assert_eq!(counter(&err, "tls_errors"), 0, "{err}");
    assert!(counter(&err, "tls_handshakes") >= 5, "{err}");

    // Echo: a MiB and back, then close_notify both ways.
    let mut echo = tls_server("echo", engine, &[]);
    let port = echo.server.addr.port().to_string();
    let out = python(&["echo", &port, ca, "1048576"]);
    assert_eq!(out.trim(), "TLSv1.3 1048576 clean", "python echo");
    echo.stop_cleanly("echo over TLS");

    // RESP: redis-cli --tls.
    let mut resp = tls_server("resp", engine, &[]);
    let port = resp.server.addr.port().to_string();
    let cli = |args: &[&str]| {
        let mut all = vec![
            "--tls",
            "--cacert",
            ca,
            "--sni",
            "localhost",
            "-h",
            "127.0.0.1",
            "-p",
            &port,
        ];
        all.extend_from_slice(args);
        run("redis-cli", &all, b"").trim().to_string()
    };
    assert_eq!(cli(&["PING"]), "PONG");
    assert_eq!(cli(&["SET", "greeting", "hello over TLS"]), "OK");
    assert_eq!(cli(&["GET", "greeting"]), "hello over TLS");
    resp.stop_cleanly("resp over TLS");
}
for_delivering_engines!(every_client_on_every_protocol);

/// The engines without an event loop refuse TLS at start, saying which serve it.
#[test]
fn engines_without_a_loop_refuse_tls() {
    for backend in ["threads", "blocking", "nonblocking"] {
        let args = tls_args("http", &["--backend", backend], &["--addr", "127.0.0.1:0"]);
        let out = Command::new(env!("CARGO_BIN_EXE_iomux"))
            .arg("serve")
            .args(&args)
            .output()
            .unwrap();
        let err = String::from_utf8_lossy(&out.stderr);
        assert!(!out.status.success(), "{backend} started with TLS");
        assert!(
            err.contains(&format!("the {backend} engine does not serve TLS"))
                && err.contains("epoll"),
            "{backend}: {err}"
        );
    }
}

/// A certificate or key that cannot be used stops `serve` at start, naming
/// the file and what is wrong with it.
#[test]
fn unusable_certificates_and_keys_are_named_at_start() {
    let certs = certs();
    let dir = certs.ec_cert.parent().unwrap();
    let garbage = dir.join("garbage.pem");
    std::fs::write(&garbage, "not a PEM file\n").unwrap();
    let (ec_cert, ec_key) = (
        certs.ec_cert.to_str().unwrap(),
        certs.ec_key.to_str().unwrap(),
    );
    let rsa_key = certs.rsa_key.to_str().unwrap();
    let missing = dir.join("missing.pem");
    let (garbage, missing) = (garbage.to_str().unwrap(), missing.to_str().unwrap());
    let cases: &[(&str, &str, &[&str])] = &[
        (
            missing,
            ec_key,
            &[missing, "cannot read the certificate file", "No such file"],
        ),
        (ec_cert, missing, &[missing, "cannot read the key file"]),
        (garbage, ec_key, &[garbage, "holds no certificate"]),
        (ec_key, ec_key, &[ec_key, "holds no certificate"]),
        (ec_cert, ec_cert, &[ec_cert, "holds no private key"]),
        (
            ec_cert,
            rsa_key,
            &[rsa_key, ec_cert, "does not belong to the certificate"],
        ),
    ];
    for (cert, key, needles) in cases {
        let out = Command::new(env!("CARGO_BIN_EXE_iomux"))
            .args([
                "serve",
                "--addr",
                "127.0.0.1:0",
                "--tls-cert",
                cert,
                "--tls-key",
                key,
            ])
            .output()
            .unwrap();
        let err = String::from_utf8_lossy(&out.stderr);
        assert!(!out.status.success(), "{cert} {key}: started");
        for needle in *needles {
            assert!(
                err.contains(needle),
                "{cert} {key}: {needle:?} not in {err}"
            );
        }
        assert!(
            err.contains("--tls-cert"),
            "the advice names the flags: {err}"
        );
    }
    // One flag without the other is a usage error.
    let out = Command::new(env!("CARGO_BIN_EXE_iomux"))
        .args(["serve", "--addr", "127.0.0.1:0", "--tls-cert", ec_cert])
        .output()
        .unwrap();
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("--tls-key"));
}

/// An RSA certificate works as well as the ECDSA one (curl, TLS 1.2 and 1.3).
#[test]
fn an_rsa_certificate_is_served() {
    let certs = certs();
    let args = [
        "--tls-cert",
        certs.rsa_cert.to_str().unwrap(),
        "--tls-key",
        certs.rsa_key.to_str().unwrap(),
    ];
    let mut server = LoggedServer::start(&args, None);
    let port = server.server.addr.port().to_string();
    let ca = certs.rsa_cert.to_str().unwrap();
    let resolve = format!("localhost:{port}:127.0.0.1");
    let url = format!("https://localhost:{port}/plaintext");
    for version in ["--tls-max", "--tlsv1.3"] {
        let mut args = vec!["-sS", "--cacert", ca, "--resolve", &resolve, &url];
        if version == "--tls-max" {
            args.extend_from_slice(&["--tls-max", "1.2"]);
        } else {
            args.push(version);
        }
        assert_eq!(run("curl", &args, b""), "Hello, World!", "{args:?}");
    }
    server.stop_cleanly("rsa");
}

/// Session resumption (tickets and the session cache) over TLS 1.2 and
/// 1.3, with Python's client and openssl s_client; the server counts them.
#[test]
fn sessions_resume() {
    let mut server = tls_server("http", &[], &[]);
    let addr = server.server.addr;
    let port = addr.port().to_string();
    let ca = certs().ec_cert.to_str().unwrap();
    for version in ["TLS1.2", "TLS1.3"] {
        let out = python(&["resume", &port, ca, version]);
        assert!(out.trim().ends_with("reused"), "{version}: {out}");
    }
    let dir = certs().ec_cert.parent().unwrap();
    for (flag, name) in [("-tls1_2", "s12"), ("-tls1_3", "s13")] {
        let session = dir.join(format!("{name}-{port}.pem"));
        let session = session.to_str().unwrap();
        let request = b"GET /plaintext HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n";
        let connect = addr.to_string();
        let base = [
            "s_client",
            flag,
            "-CAfile",
            ca,
            "-servername",
            "localhost",
            "-connect",
            &connect,
            "-ign_eof",
        ];
        let mut first = base.to_vec();
        first.extend_from_slice(&["-sess_out", session]);
        assert!(run("openssl", &first, request).contains("New, "));
        let mut second = base.to_vec();
        second.extend_from_slice(&["-sess_in", session]);
        let out = run("openssl", &second, request);
        assert!(out.contains("Reused, "), "{flag}: {out}");
    }
    let err = server.stop_cleanly("resumption");
    assert!(counter(&err, "tls_resumed") >= 4, "{err}");
}

/// Read until EOF (or a reset); false if the server kept it open 20 s.
fn closed_by_server(stream: &mut TcpStream) -> bool {
    stream
        .set_read_timeout(Some(Duration::from_secs(20)))
        .unwrap();
    let mut buf = [0u8; 4096];
    loop {
        match stream.read(&mut buf) {
            Ok(0) => return true,
            Ok(_) => continue,
            Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => return false,
            Err(e) if e.kind() == std::io::ErrorKind::TimedOut => return false,
            Err(_) => return true, // reset
        }
    }
}

fn get_plaintext(stream: &mut TlsStream) {
    stream
        .write_all(b"GET /plaintext HTTP/1.1\r\nHost: x\r\n\r\n")
        .unwrap();
    let mut got = Vec::new();
    let mut buf = [0u8; 4096];
    while !got.ends_with(b"Hello, World!") {
        let n = stream.read(&mut buf).expect("response");
        assert!(n > 0, "EOF instead of a response");
        got.extend_from_slice(&buf[..n]);
    }
    assert!(got.starts_with(b"HTTP/1.1 200"));
}

/// Garbage instead of a ClientHello, plain HTTP to the TLS port, an
/// oversized record (before and after the handshake), a truncated record
/// and a handshake stalled halfway: each closes its own connection,
/// counted; a TLS client connected all along is served before and after;
/// no descriptor is left over.
fn hostile_input_closes_only_its_connection(engine: &[&str]) {
    let mut server = tls_server("http", engine, &["--idle-timeout", "2"]);
    let addr = server.server.addr;
    let fds = settled_fd_count(&server.server);
    let config = client_config(&certs().ec_cert, &[b"http/1.1"]);
    let mut good = tls_connect(addr, &config);
    get_plaintext(&mut good);

    let hostile = |what: &str, bytes: &[u8]| {
        let mut s = TcpStream::connect(addr).unwrap();
        s.write_all(bytes).unwrap();
        assert!(closed_by_server(&mut s), "{what}: still open");
    };
    // Half a ClientHello, then nothing: closed by the head deadline (2 s),
    // while the good client goes on being served.
    let hello = client_hello(&config);
    let stalled = std::thread::spawn(move || {
        let mut s = TcpStream::connect(addr).unwrap();
        s.write_all(&hello[..hello.len() / 2]).unwrap();
        closed_by_server(&mut s)
    });
    let mut garbage = vec![0u8; 512];
    for (i, b) in garbage.iter_mut().enumerate() {
        *b = (i * 7 + 3) as u8;
    }
    hostile("garbage", &garbage);
    get_plaintext(&mut good);
    hostile("plain HTTP", b"GET / HTTP/1.1\r\nHost: x\r\n\r\n");
    get_plaintext(&mut good);
    let mut oversized = vec![0x16, 0x03, 0x01, 0xff, 0xff];
    oversized.extend_from_slice(&[0u8; 1024]);
    hostile("an oversized handshake record", &oversized);
    get_plaintext(&mut good);

    // After a handshake: an application-data record longer than TLS allows.
    let mut after = tls_connect(addr, &config);
    let mut record = vec![0x17, 0x03, 0x03, 0x48, 0x01];
    record.resize(5 + 0x4801, 0xAA);
    after.sock.write_all(&record).unwrap();
    assert!(
        closed_by_server(&mut after.sock),
        "oversized record: still open"
    );
    get_plaintext(&mut good);

    // A truncated record: half of a request's record, then our FIN.
    let mut truncated = tls_connect(addr, &config);
    truncated
        .conn
        .writer()
        .write_all(b"GET /plaintext HTTP/1.1\r\nHost: x\r\n\r\n")
        .unwrap();
    let mut bytes = Vec::new();
    truncated.conn.write_tls(&mut bytes).unwrap();
    truncated.sock.write_all(&bytes[..bytes.len() / 2]).unwrap();
    truncated.sock.shutdown(Shutdown::Write).unwrap();
    assert!(
        closed_by_server(&mut truncated.sock),
        "truncated record: still open"
    );
    while !stalled.is_finished() {
        get_plaintext(&mut good);
        std::thread::sleep(Duration::from_millis(200));
    }
    assert!(stalled.join().unwrap(), "a stalled handshake: still open");
    get_plaintext(&mut good);
    drop((good, after, truncated));
    assert_descriptors_back(&server.server, fds);
    let err = server.stop_cleanly("hostile input");
    // garbage, plain HTTP, two oversized records, the truncated record.
    assert!(counter(&err, "tls_errors") >= 5, "{err}");
    assert!(
        counter(&err, "timeouts") >= 1,
        "the stalled handshake: {err}"
    );
    assert_eq!(counter(&err, "faults"), 0, "{err}");
}
for_delivering_engines!(hostile_input_closes_only_its_connection);

/// Hundreds of handshakes stalled halfway hold no loop: a fresh client is
/// served at once meanwhile, and every stalled one is closed by the head
/// deadline with no descriptor left over.
fn stalled_handshakes_do_not_hold_others(engine: &[&str]) {
    let mut server = tls_server("http", engine, &["--idle-timeout", "2"]);
    let addr = server.server.addr;
    let fds = settled_fd_count(&server.server);
    let config = client_config(&certs().ec_cert, &[b"http/1.1"]);
    let hello = client_hello(&config);
    let stalled: Vec<TcpStream> = (0..300)
        .map(|_| {
            let mut s = TcpStream::connect(addr).unwrap();
            s.write_all(&hello[..hello.len() / 2]).unwrap();
            s
        })
        .collect();
    let mut fresh = tls_connect(addr, &config);
    get_plaintext(&mut fresh);
    get_plaintext(&mut fresh);
    drop(fresh);
    for (i, mut s) in stalled.into_iter().enumerate() {
        assert!(
            closed_by_server(&mut s),
            "stalled handshake {i}: still open"
        );
    }
    assert_descriptors_back(&server.server, fds);
    let err = server.stop_cleanly("stalled handshakes");
    assert!(counter(&err, "timeouts") >= 300, "{err}");
}
for_engines!(
    stalled_handshakes_do_not_hold_others,
    [epoll_edge, poll, uring]
);

/// PUBLISH over TLS reaches every subscriber (send_to_many through each
/// receiver's own transport): 20 Python subscribers, 50 messages each.
#[test]
fn fan_out_reaches_every_tls_subscriber() {
    for engine in [&["--backend", "epoll"][..], &["--backend", "uring"][..]] {
        let mut server = tls_server("resp", engine, &[]);
        let port = server.server.addr.port().to_string();
        let ca = certs().ec_cert.to_str().unwrap();
        let script = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/tls_client.py");
        let mut subscribers: Vec<_> = (0..20)
            .map(|_| {
                Command::new("timeout")
                    .args([
                        "60",
                        "python3",
                        script,
                        "subscribe",
                        &port,
                        ca,
                        "news",
                        "50",
                    ])
                    .stdout(Stdio::piped())
                    .spawn()
                    .unwrap()
            })
            .collect();
        for s in &mut subscribers {
            let mut ready = [0u8; 6];
            s.stdout.as_mut().unwrap().read_exact(&mut ready).unwrap();
            assert_eq!(&ready, b"ready\n");
        }
        let config = client_config(&certs().ec_cert, &[]);
        let mut publisher = tls_connect(server.server.addr, &config);
        for i in 0..50 {
            write!(publisher, "PUBLISH news message-{i}\r\n").unwrap();
        }
        let mut replies = Vec::new();
        let mut buf = [0u8; 4096];
        while replies.iter().filter(|&&b| b == b'\n').count() < 50 {
            let n = publisher.read(&mut buf).unwrap();
            assert!(n > 0);
            replies.extend_from_slice(&buf[..n]);
        }
        assert_eq!(
            String::from_utf8_lossy(&replies),
            ":20\r\n".repeat(50),
            "every PUBLISH reached 20 subscribers"
        );
        for s in subscribers {
            let out = s.wait_with_output().unwrap();
            assert!(out.status.success());
            assert_eq!(String::from_utf8_lossy(&out.stdout).trim(), "got 50");
        }
        server.stop_cleanly("fan-out over TLS");
    }
}

/// Echo `total` bytes through a TLS connection, writing and reading at
/// once (a non-blocking socket under poll), checking every byte that comes
/// back against what went out.
fn echo_through_tls(addr: SocketAddr, total: u64) {
    use std::os::fd::AsRawFd;
    let config = client_config(&certs().ec_cert, &[]);
    let TlsStream {
        conn: mut tls,
        mut sock,
    } = tls_connect(addr, &config);
    sock.set_nonblocking(true).unwrap();
    // A pattern whose length divides no power of two: a byte lost, doubled
    // or reordered shows as a mismatch.
    let pattern: Vec<u8> = (0..(1 << 20) + 7).map(|i: u32| (i % 251) as u8).collect();
    let chunk = |at: u64, max: usize| {
        let from = (at % pattern.len() as u64) as usize;
        &pattern[from..pattern.len().min(from + max)]
    };
    let (mut sent, mut received) = (0u64, 0u64);
    let mut buf = vec![0u8; 256 * 1024];
    while received < total {
        let mut progressed = false;
        // Hand rustls more plaintext once it has sent what it had.
        if sent < total && !tls.wants_write() {
            let piece = chunk(sent, (total - sent).min(64 * 1024) as usize);
            tls.writer().write_all(piece).unwrap();
            sent += piece.len() as u64;
            progressed = true;
        }
        while tls.wants_write() {
            match tls.write_tls(&mut sock) {
                Ok(_) => progressed = true,
                Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => break,
                Err(e) => panic!("write after {sent} bytes sent: {e}"),
            }
        }
        match tls.read_tls(&mut sock) {
            Ok(0) => panic!("the server closed after {received} of {total} bytes echoed"),
            Ok(_) => {
                progressed = true;
                tls.process_new_packets().expect("the server's records");
                loop {
                    match tls.reader().read(&mut buf) {
                        Ok(0) => panic!("close_notify after {received} bytes"),
                        Ok(n) => {
                            let mut got = &buf[..n];
                            while !got.is_empty() {
                                let want = chunk(received, got.len());
                                assert!(
                                    got.starts_with(want),
                                    "echoed bytes differ at offset {received}"
                                );
                                received += want.len() as u64;
                                got = &got[want.len()..];
                            }
                        }
                        Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => break,
                        Err(e) => panic!("read: {e}"),
                    }
                }
            }
            Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => {}
            Err(e) => panic!("read after {received} bytes echoed: {e}"),
        }
        if !progressed {
            let mut events = libc::POLLIN;
            if tls.wants_write() {
                events |= libc::POLLOUT;
            }
            let mut fd = libc::pollfd {
                fd: sock.as_raw_fd(),
                events,
                revents: 0,
            };
            // SAFETY: one valid pollfd, for the length passed.
            let ready = unsafe { libc::poll(&mut fd, 1, 30_000) };
            assert!(
                ready > 0,
                "stalled 30 s: {sent} bytes sent, {received} echoed"
            );
        }
    }
    assert_eq!(sent, total);
    tls.send_close_notify();
    sock.set_nonblocking(false).unwrap();
    let _ = tls.write_tls(&mut sock);
}

/// The server's peak resident memory (VmHWM), KiB.
fn peak_rss_kib(server: &ServerProcess) -> u64 {
    let status = std::fs::read_to_string(format!("/proc/{}/status", server.pid())).unwrap();
    status
        .lines()
        .find_map(|l| l.strip_prefix("VmHWM:"))
        .and_then(|v| v.split_whitespace().next())
        .and_then(|v| v.parse().ok())
        .expect("VmHWM in /proc/PID/status")
}

/// A GiB echoed over TLS while the client writes and reads at once: the
/// server's memory stays bounded (its peak grows by less than 32 MiB: what
/// a connection owes the socket is capped, and TLS's scratch buffers are
/// freed once large), and the connection closes cleanly, with no
/// descriptor left.
fn a_gigabyte_echoes_in_bounded_memory(engine: &[&str]) {
    let mut server = tls_server("echo", engine, &[]);
    let fds = settled_fd_count(&server.server);
    let rss_before = server.server.rss_kib();
    echo_through_tls(server.server.addr, 1 << 30);
    let peak = peak_rss_kib(&server.server);
    assert!(
        peak < rss_before + 32 * 1024,
        "{engine:?}: peak resident {peak} KiB, {rss_before} KiB before a GiB echoed over TLS"
    );
    assert_descriptors_back(&server.server, fds);
    let err = server.stop_cleanly("a GiB echoed over TLS");
    assert_eq!(counter(&err, "tls_errors"), 0, "{err}");
}
for_engines!(a_gigabyte_echoes_in_bounded_memory, [epoll_edge, uring]);

/// Whether the kernel can take the record layer over is said once at
/// start, whatever the number of loops (here it cannot: records are
/// encrypted in user space, and the server serves).
#[test]
fn kernel_tls_is_reported_once_at_start() {
    use iomux_engine::tls::{kernel_tls, KernelTls};
    let mut server = tls_server("http", &["--threads", "2"], &[]);
    let config = client_config(&certs().ec_cert, &[b"http/1.1"]);
    let mut client = tls_connect(server.server.addr, &config);
    get_plaintext(&mut client);
    drop(client);
    let err = server.stop_cleanly("kernel TLS note");
    let notes: Vec<&str> = err.lines().filter(|l| l.contains("TLS offload")).collect();
    match kernel_tls() {
        KernelTls::Unavailable(why) => {
            assert_eq!(notes.len(), 1, "{err}");
            assert!(notes[0].contains(&why), "{err}");
            assert!(notes[0].contains("user space"), "{err}");
        }
        KernelTls::Available => assert!(notes.is_empty(), "{err}"),
    }
}
