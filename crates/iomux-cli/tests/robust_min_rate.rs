//! The minimum rate (`--min-rate`, docs/robustness.md): a client that keeps
//! sending a large message at a good rate keeps its connection past the idle
//! timeout (a 10 MiB SET at about 1 MiB/s with `--idle-timeout 3` answers
//! `+OK`, as redis-server with `timeout 3` does), while one byte a second is
//! closed in an HTTP head, an HTTP body (whose echoed bytes once counted as
//! activity) and a RESP command, on every engine that sleeps.

#[macro_use]
mod common;

use common::{RedisServer, ServerProcess};
use std::io::{ErrorKind, Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::time::{Duration, Instant};

/// SET `big` to `size` bytes sent at about `rate` bytes a second; the reply.
fn slow_set(addr: SocketAddr, size: usize, rate: usize) -> String {
    let mut s = TcpStream::connect(addr).expect("connect");
    s.set_read_timeout(Some(Duration::from_secs(30))).unwrap();
    s.write_all(format!("*3\r\n$3\r\nSET\r\n$3\r\nbig\r\n${size}\r\n").as_bytes())
        .unwrap();
    let piece = vec![b'v'; rate / 20];
    let started = Instant::now();
    let mut sent = 0;
    while sent < size {
        let n = piece.len().min(size - sent);
        if let Err(e) = s.write_all(&piece[..n]) {
            return format!("cut off after {sent} bytes: {e}");
        }
        sent += n;
        // Paced by the total so far: the rate holds whatever the sleeps add.
        let due = started + Duration::from_secs_f64(sent as f64 / rate as f64);
        std::thread::sleep(due.saturating_duration_since(Instant::now()));
    }
    if let Err(e) = s.write_all(b"\r\n") {
        return format!("cut off at the end: {e}");
    }
    let mut reply = Vec::new();
    let mut byte = [0u8; 1];
    while !reply.ends_with(b"\r\n") {
        match s.read(&mut byte) {
            Ok(1) => reply.push(byte[0]),
            Ok(_) => return format!("closed after {sent} bytes, no reply"),
            Err(e) => return format!("no reply after {sent} bytes: {e}"),
        }
    }
    String::from_utf8_lossy(&reply).into_owned()
}

#[test]
fn a_10_mib_set_at_1_mib_per_second_outlives_a_3_second_idle_timeout_as_on_redis() {
    const SIZE: usize = 10 << 20;
    const RATE: usize = 1 << 20;
    let iomux = ServerProcess::start(&["--proto", "resp", "--idle-timeout", "3"]);
    let redis = RedisServer::start(&["--timeout", "3"]);
    let (iomux_addr, redis_addr) = (iomux.addr, redis.addr);
    let on_redis = std::thread::spawn(move || slow_set(redis_addr, SIZE, RATE));
    let on_iomux = slow_set(iomux_addr, SIZE, RATE);
    assert_eq!(on_redis.join().unwrap(), "+OK\r\n", "redis-server");
    assert_eq!(on_iomux, "+OK\r\n", "iomux");
}

/// Send `prefix`, then one byte a second of `trickle` (cycled) until the
/// server ends the connection; how long after the prefix it did, or `None`
/// if it was still open after `bound`. What the server answers meanwhile
/// (a 408) is read and ignored.
fn trickle_until_closed(
    addr: SocketAddr,
    prefix: &[u8],
    trickle: &[u8],
    bound: Duration,
) -> Option<Duration> {
    let mut s = TcpStream::connect(addr).expect("connect");
    s.write_all(prefix).unwrap();
    let started = Instant::now();
    let mut sink = [0u8; 4096];
    for at in 0.. {
        if started.elapsed() > bound {
            return None;
        }
        if s.write_all(&trickle[at % trickle.len()..][..1]).is_err() {
            return Some(started.elapsed());
        }
        // A second of reading between bytes: the end shows as EOF or a reset.
        let until = Instant::now() + Duration::from_secs(1);
        while let Some(left) = until.checked_duration_since(Instant::now()) {
            s.set_read_timeout(Some(left.max(Duration::from_millis(1))))
                .unwrap();
            match s.read(&mut sink) {
                Ok(0) => return Some(started.elapsed()),
                Ok(_) => continue,
                Err(e) if matches!(e.kind(), ErrorKind::WouldBlock | ErrorKind::TimedOut) => break,
                Err(_) => return Some(started.elapsed()),
            }
        }
    }
    unreachable!()
}

/// With `--idle-timeout 2` (a period of 2 s needs 1,000 bytes at the default
/// rate), a client trickling one byte a second is closed within a few
/// seconds in an HTTP head, an HTTP body after a complete head (each byte
/// echoed: once enough to keep it open for ever, with bytes due more often
/// than the idle timeout) and a RESP command.
fn one_byte_a_second_is_closed_in_a_head_a_body_and_a_command(engine: &[&str]) {
    const BOUND: Duration = Duration::from_secs(10);
    let mut http_args = vec!["--proto", "http", "--idle-timeout", "2"];
    http_args.extend_from_slice(engine);
    let http = ServerProcess::start(&http_args);
    let mut resp_args = vec!["--proto", "resp", "--idle-timeout", "2"];
    resp_args.extend_from_slice(engine);
    let resp = ServerProcess::start(&resp_args);
    let cases: [(&str, SocketAddr, &[u8], &[u8]); 3] = [
        (
            "an HTTP head",
            http.addr,
            b"GET / HTTP/1.1\r\n",
            b"X-a: b\r\n",
        ),
        (
            "an HTTP body",
            http.addr,
            b"POST /echo HTTP/1.1\r\nHost: x\r\nContent-Length: 1000\r\n\r\n",
            b"a",
        ),
        (
            "a RESP command",
            resp.addr,
            b"*3\r\n$3\r\nSET\r\n$1\r\nk\r\n$100\r\n",
            b"v",
        ),
    ];
    let trickles: Vec<_> = cases
        .iter()
        .map(|&(what, addr, prefix, trickle)| {
            let (prefix, trickle) = (prefix.to_vec(), trickle.to_vec());
            let closed =
                std::thread::spawn(move || trickle_until_closed(addr, &prefix, &trickle, BOUND));
            (what, closed)
        })
        .collect();
    for (what, closed) in trickles {
        let closed = closed.join().unwrap();
        assert!(
            closed.is_some(),
            "{engine:?}: one byte a second in {what} was still open after {BOUND:?}"
        );
    }
}

for_engines!(
    one_byte_a_second_is_closed_in_a_head_a_body_and_a_command,
    sleeping
);
