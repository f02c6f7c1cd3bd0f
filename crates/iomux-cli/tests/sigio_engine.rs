//! `--backend sigio` specifics: its trigger, the real-time signal queue
//! overflowing under load (every connection must still be served), idle timeouts.

mod common;

use common::{try_echo, LoggedServer, Rng};
use std::io::{Read, Write};
use std::time::{Duration, Instant};

/// With RLIMIT_SIGPENDING at 4 the kernel drops most real-time signals and
/// raises SIGIO; 100 concurrent echo clients must still all be answered.
#[test]
fn queue_overflow_loses_no_connection() {
    let mut old = libc::rlimit {
        rlim_cur: 0,
        rlim_max: 0,
    };
    // SAFETY: reads and sets this process's limit from live structs; the child
    // inherits it and it is restored at once (a concurrent test's server
    // inheriting it only sees more overflows, which it must survive too).
    let mut server = unsafe {
        libc::getrlimit(libc::RLIMIT_SIGPENDING, &mut old);
        let low = libc::rlimit {
            rlim_cur: 4,
            rlim_max: old.rlim_max,
        };
        libc::setrlimit(libc::RLIMIT_SIGPENDING, &low);
        let server = LoggedServer::start(&["--proto", "echo", "--backend", "sigio"], None);
        libc::setrlimit(libc::RLIMIT_SIGPENDING, &old);
        server
    };
    let addr = server.server.addr;
    let threads: Vec<_> = (0..100u64)
        .map(|i| {
            std::thread::spawn(move || {
                let mut rng = Rng::new(i);
                for _ in 0..5 {
                    let len = rng.range(1, 20_000);
                    let msg = rng.bytes(len);
                    let back = try_echo(addr, &msg, Duration::from_secs(10)).expect("echo");
                    assert!(back == msg, "client {i}: echo differs");
                }
            })
        })
        .collect();
    for t in threads {
        t.join().unwrap();
    }
    let err = server.stop_cleanly("sigio under overflow");
    assert!(
        err.contains("overflowed"),
        "the queue never overflowed: {err}"
    );
}

#[test]
fn idle_connections_time_out() {
    let mut server = LoggedServer::start(
        &[
            "--proto",
            "echo",
            "--backend",
            "sigio",
            "--idle-timeout",
            "0.3",
        ],
        None,
    );
    let mut s = server.server.connect();
    s.write_all(b"hi").unwrap();
    let mut buf = [0u8; 2];
    s.read_exact(&mut buf).unwrap();
    s.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
    let start = Instant::now();
    assert_eq!(s.read(&mut buf).unwrap(), 0, "closed by the server");
    let took = start.elapsed();
    assert!(took < Duration::from_secs(3), "took {took:?}");
    server.stop_cleanly("sigio idle timeout");
}
