//! Descriptor exhaustion and `--max-conns` on every engine: a server started
//! with RLIMIT_NOFILE far below its number of clients must not spin on a
//! listener that stays readable, must shed or defer the excess, and must serve
//! again once descriptors free up.

#[macro_use]
mod common;

use common::{cpu_share_over, eventually, try_echo, LoggedServer};
use std::io::{ErrorKind, Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

/// The server's RLIMIT_NOFILE (soft and hard).
const FD_LIMIT: u64 = 64;
/// Clients held open at once: far more than the server can hold.
const CLIENTS: usize = 300;
/// A correctness bound, not a speed figure: a loop spinning on EMFILE uses a
/// whole core; a correct one sleeps.
const MAX_CPU_SHARE: f64 = 0.30;

#[derive(Debug, Default)]
struct Outcome {
    served: usize,
    shed: usize,
    deferred: usize,
    /// What no correct server does: anything but its echo, a close, a reset
    /// or nothing yet.
    wrong: Vec<String>,
}

/// What happened to each client: echoed exactly (served), closed or reset
/// (shed), or nothing yet (deferred: still in the backlog).
fn classify(clients: &mut [TcpStream]) -> Outcome {
    let mut outcome = Outcome::default();
    for c in clients.iter_mut() {
        c.set_nonblocking(true).unwrap();
        let mut buf = [0u8; 16];
        match c.read(&mut buf) {
            Ok(0) => outcome.shed += 1,
            Ok(4) if &buf[..4] == b"ping" => outcome.served += 1,
            Err(e) if e.kind() == ErrorKind::WouldBlock => outcome.deferred += 1,
            Err(e)
                if matches!(
                    e.kind(),
                    ErrorKind::ConnectionReset | ErrorKind::ConnectionAborted
                ) =>
            {
                outcome.shed += 1
            }
            other => outcome.wrong.push(format!("{other:?} {:?}", &buf[..4])),
        }
    }
    outcome
}

/// Raise this process's soft RLIMIT_NOFILE to its hard limit.
fn raise_own_descriptor_limit() {
    let mut lim = libc::rlimit {
        rlim_cur: 0,
        rlim_max: 0,
    };
    // SAFETY: getrlimit and setrlimit read and write a live rlimit struct.
    unsafe {
        if libc::getrlimit(libc::RLIMIT_NOFILE, &mut lim) == 0 && lim.rlim_cur < lim.rlim_max {
            lim.rlim_cur = lim.rlim_max;
            libc::setrlimit(libc::RLIMIT_NOFILE, &lim);
        }
    }
}

/// Keep knocking on the listener (one connect every 10 ms) so it never stays
/// empty while the server is out of descriptors.
fn knock(addr: SocketAddr, stop: Arc<AtomicBool>) -> std::thread::JoinHandle<usize> {
    std::thread::spawn(move || {
        let mut held = Vec::new();
        while !stop.load(Ordering::Relaxed) && held.len() < 150 {
            if let Ok(s) = TcpStream::connect_timeout(&addr, Duration::from_millis(200)) {
                held.push(s);
            }
            std::thread::sleep(Duration::from_millis(10));
        }
        held.len()
    })
}

/// The server out of descriptors: it does not spin, serves what it can
/// hold, sheds or defers the rest, and serves again once descriptors free up.
fn survives_descriptor_exhaustion_without_spinning(engine: &[&str]) {
    // This test holds up to 450 descriptors and may run beside another
    // engine's: lift its own soft limit to the hard one.
    raise_own_descriptor_limit();
    let mut args = vec!["--proto", "echo", "--idle-timeout", "30"];
    args.extend_from_slice(engine);
    let mut server = LoggedServer::start(&args, Some(FD_LIMIT));
    let addr = server.server.addr;
    let pid = server.server.pid();
    let busy_polling = engine.contains(&"nonblocking");

    // A client the server already shed may see its write or connect fail:
    // that is shedding too, and `classify` counts it so.
    let mut clients: Vec<TcpStream> = (0..CLIENTS)
        .filter_map(|_| {
            let mut s = TcpStream::connect(addr).ok()?;
            let _ = s.write_all(b"ping");
            Some(s)
        })
        .collect();
    let refused = CLIENTS - clients.len();
    // Let the server take what it can and shed the rest.
    std::thread::sleep(Duration::from_millis(500));

    let stop = Arc::new(AtomicBool::new(false));
    let knocker = knock(addr, stop.clone());
    let share = cpu_share_over(pid, Duration::from_secs(1));
    stop.store(true, Ordering::Relaxed);
    let knocked = knocker.join().unwrap();
    let fds = server.server.fd_count();
    eprintln!("{engine:?}: {:.1}% of a core over 1 s at the descriptor limit ({knocked} extra connects), {fds} fds open", share * 100.0);
    if busy_polling {
        // This engine polls every socket in a loop by design: it burns a core
        // whether or not descriptors run out, so CPU says nothing here.
    } else {
        assert!(
            share < MAX_CPU_SHARE,
            "{engine:?}: the server used {:.0}% of a core while out of descriptors: it spins",
            share * 100.0
        );
    }

    let mut outcome = classify(&mut clients);
    outcome.shed += refused;
    eprintln!("{engine:?}: {outcome:?}");
    assert!(
        outcome.wrong.is_empty(),
        "{engine:?}: clients got neither their echo, a close, a reset nor a wait: {outcome:?}"
    );
    assert!(
        outcome.served >= 1,
        "{engine:?}: nobody served: {outcome:?}"
    );
    if !engine.contains(&"blocking") {
        // Everything but the one-at-a-time engine holds many connections.
        assert!(outcome.served >= 20, "{engine:?}: {outcome:?}");
        assert!(
            (outcome.served as u64) < FD_LIMIT,
            "{engine:?}: more served than descriptors: {outcome:?}"
        );
    }

    // Free the descriptors: the server must serve a fresh client again.
    drop(clients);
    let started = Instant::now();
    let recovered = eventually(Duration::from_secs(10), || {
        try_echo(addr, b"again", Duration::from_millis(500)).is_ok_and(|b| b == b"again")
    });
    assert!(
        recovered,
        "{engine:?}: not serving 10 s after descriptors were freed; stderr:\n{}",
        server.stderr()
    );
    eprintln!(
        "{engine:?}: serving again {:?} after the clients left",
        started.elapsed()
    );
    server.stop_cleanly(&format!("{engine:?}"));
}

for_engines!(survives_descriptor_exhaustion_without_spinning);

/// A client refused by `--max-conns`: the server accepts and closes it without echoing.
fn is_refused(addr: SocketAddr) -> bool {
    let Ok(mut s) = TcpStream::connect(addr) else {
        return false;
    };
    s.set_read_timeout(Some(Duration::from_secs(3))).unwrap();
    let _ = s.write_all(b"x");
    let mut buf = [0u8; 1];
    match s.read(&mut buf) {
        Ok(0) => true,
        Ok(_) => false,
        Err(e) => matches!(
            e.kind(),
            ErrorKind::ConnectionReset | ErrorKind::ConnectionAborted
        ),
    }
}

fn max_conns_refuses_cleanly_and_frees_places_on_close(engine: &[&str]) {
    const MAX: usize = 5;
    let mut args = vec!["--proto", "echo", "--max-conns", "5"];
    args.extend_from_slice(engine);
    let mut server = LoggedServer::start(&args, None);
    let addr = server.server.addr;
    let mut held: Vec<TcpStream> = (0..MAX)
        .map(|i| {
            let mut s = server.server.connect();
            s.write_all(b"hi").unwrap();
            let mut back = [0u8; 2];
            s.read_exact(&mut back)
                .unwrap_or_else(|e| panic!("{engine:?}: client {i} within the cap: {e}"));
            s
        })
        .collect();
    for _ in 0..3 {
        assert!(
            is_refused(addr),
            "{engine:?}: a client past --max-conns was served"
        );
    }
    // One place frees up: the next client is served (once the server saw the close).
    drop(held.pop());
    let served = eventually(Duration::from_secs(5), || {
        try_echo(addr, b"next", Duration::from_secs(1)).is_ok_and(|b| b == b"next")
    });
    assert!(served, "{engine:?}: a freed place was not reused");
    // The held ones are still served.
    for s in held.iter_mut() {
        s.write_all(b"ok").unwrap();
        let mut back = [0u8; 2];
        s.read_exact(&mut back).unwrap();
        assert_eq!(&back, b"ok");
    }
    drop(held);
    server.stop_cleanly(&format!("{engine:?}"));
}

// One connection at a time never reaches a cap of five.
for_engines!(
    max_conns_refuses_cleanly_and_frees_places_on_close,
    concurrent
);

#[test]
fn a_server_that_cannot_set_up_every_loop_fails_to_start_with_a_clear_error() {
    use std::os::unix::process::CommandExt;
    let mut command = std::process::Command::new(env!("CARGO_BIN_EXE_iomux"));
    command.args([
        "serve",
        "--proto",
        "echo",
        "--addr",
        "127.0.0.1:0",
        "--threads",
        "4",
    ]);
    // SAFETY: setrlimit is async-signal-safe and touches only the child.
    unsafe {
        command.pre_exec(|| {
            // Room for the listeners, not for four loops' selectors and wakers.
            let lim = libc::rlimit {
                rlim_cur: 12,
                rlim_max: 12,
            };
            if libc::setrlimit(libc::RLIMIT_NOFILE, &lim) != 0 {
                return Err(std::io::Error::last_os_error());
            }
            Ok(())
        });
    }
    let out = command.output().expect("run iomux");
    let stdout = String::from_utf8_lossy(&out.stdout);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success(), "started anyway: {stdout}");
    assert!(
        !stdout.contains("listening on"),
        "claimed to be ready with a loop missing: {stdout}"
    );
    assert!(
        stderr.contains("cannot start the server") && stderr.contains("ulimit -n"),
        "unclear error: {stderr}"
    );
}
