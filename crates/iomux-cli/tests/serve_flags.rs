//! `iomux serve` refuses bad flag values before it listens: a clear error
//! naming the flag, a non-zero exit, never a panic.

mod common;

use common::ServerProcess;
use std::io::Read;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

/// Run `iomux serve ARGS` (with `env`) and return its exit success and stderr;
/// a server that starts anyway is stopped after a few seconds and counts as a failure to refuse.
fn serve(args: &[&str], env: &[(&str, &str)]) -> (bool, String) {
    let mut child = Command::new(env!("CARGO_BIN_EXE_iomux"))
        .arg("serve")
        .args(args)
        .envs(env.iter().copied())
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .expect("spawn iomux serve");
    let deadline = Instant::now() + Duration::from_secs(10);
    let status = loop {
        if let Some(status) = child.try_wait().unwrap() {
            break Some(status);
        }
        if Instant::now() >= deadline {
            let _ = child.kill();
            let _ = child.wait();
            break None;
        }
        std::thread::sleep(Duration::from_millis(20));
    };
    let mut err = String::new();
    let _ = child.stderr.take().unwrap().read_to_string(&mut err);
    let Some(status) = status else {
        panic!("serve {args:?} started instead of refusing: {err}");
    };
    (status.success(), err)
}

#[test]
fn bad_values_are_refused_by_name_without_a_panic() {
    let refused = |args: &[&str], env: &[(&str, &str)], needle: &str| {
        let all = [&["--addr", "127.0.0.1:0"][..], args].concat();
        let (ok, err) = serve(&all, env);
        assert!(!ok, "{args:?} {env:?} was accepted");
        assert!(err.contains(needle), "{args:?} {env:?}: {err}");
        assert!(!err.contains("panicked"), "{args:?} {env:?}: {err}");
    };
    let not_seconds = "--idle-timeout must be a positive number of seconds";
    for (args, needle) in [
        ("--idle-timeout=1e30", not_seconds),
        ("--idle-timeout=0", not_seconds),
        ("--idle-timeout=nan", not_seconds),
        ("--backlog=-5", "--backlog"),
        ("--backlog=0", "--backlog"),
        ("--backend select --trigger edge", "--backend epoll"),
        // sigio is edge-triggered only; uring completions have no trigger.
        ("--backend sigio --trigger level", "edge only"),
        ("--backend sigio --trigger oneshot", "--backend epoll"),
        ("--backend uring --trigger edge", "--trigger"),
        ("--threads 0", "--threads"),
        ("--max-conns 0", "--max-conns"),
    ] {
        let args: Vec<&str> = args.split(' ').collect();
        refused(&args, &[], needle);
    }
    // The static-file handler's own check, worded for the flag.
    for value in [" \t", "max-age=1\nX: y", "caf\u{e9}"] {
        let args = ["--root", ".", "--cache-control", value];
        refused(&args, &[], "--cache-control");
        refused(&args, &[], "printable ASCII on one line");
    }
    for listenq in ["-1", "lots"] {
        refused(&[], &[("LISTENQ", listenq)], "LISTENQ");
    }
    let (ok, err) = serve(&["--addr", "127.0.0.1"], &[]);
    assert!(!ok && err.contains("has no port"), "{err}");
}

#[test]
fn the_ready_line_spells_the_protocol_as_the_flag_does() {
    for proto in ["http", "echo", "upper"] {
        let server = ServerProcess::start(&["--proto", proto]);
        let line = &server.ready_line;
        assert!(line.contains(&format!(" proto={proto} ")), "{line}");
    }
}

/// The engine list the integration tests expand per engine (`engine_list!`
/// in tests/common) covers `Engine::ALL`, the one list of engines: an engine
/// added there fails here until the tests run it.
#[test]
fn the_tests_engine_list_covers_every_engine() {
    use iomux_engine::Engine;
    let tested: Vec<Engine> = common::ENGINES
        .iter()
        .filter(|(_, flags, _)| !flags.contains(&"--threads"))
        .map(|(name, flags, _)| {
            let backend = flags[1];
            let trigger = flags
                .iter()
                .position(|f| *f == "--trigger")
                .map(|i| flags[i + 1]);
            let engine = match trigger {
                Some(t) => format!("{backend}-{t}").parse(),
                None => backend.parse(),
            };
            engine.unwrap_or_else(|e| panic!("{name}: {e}"))
        })
        .collect();
    for engine in Engine::ALL {
        assert!(tested.contains(engine), "{engine} is not in engine_list!");
    }
}

/// `--unix PATH` serves on a Unix-domain socket: the ready line names it,
/// every engine family answers on it, and the file is gone after a stop.
#[test]
fn serve_listens_on_a_unix_domain_socket_and_removes_it_on_exit() {
    use std::io::{BufRead, BufReader, Write};
    use std::os::unix::net::UnixStream;
    for backend in ["epoll", "uring", "threads"] {
        let path =
            std::env::temp_dir().join(format!("iomux-serve-{}-{backend}.sock", std::process::id()));
        let mut child = Command::new(env!("CARGO_BIN_EXE_iomux"))
            .args(["serve", "--proto", "upper", "--backend", backend, "--unix"])
            .arg(&path)
            .stdout(Stdio::piped())
            .stderr(Stdio::null())
            .spawn()
            .expect("spawn iomux serve");
        let mut ready = String::new();
        BufReader::new(child.stdout.take().unwrap())
            .read_line(&mut ready)
            .unwrap();
        assert!(
            ready.starts_with(&format!("listening on unix:{} ", path.display())),
            "{backend}: {ready}"
        );
        let mut client = UnixStream::connect(&path).unwrap();
        client
            .set_read_timeout(Some(Duration::from_secs(5)))
            .unwrap();
        client.write_all(b"hello unix").unwrap();
        let mut got = [0; 10];
        client.read_exact(&mut got).unwrap();
        assert_eq!(&got, b"HELLO UNIX", "{backend}");
        drop(client);
        // SAFETY: kill(2) on our own child's pid.
        unsafe { libc::kill(child.id() as i32, libc::SIGTERM) };
        let deadline = Instant::now() + Duration::from_secs(10);
        let status = loop {
            if let Some(s) = child.try_wait().unwrap() {
                break s;
            }
            assert!(Instant::now() < deadline, "{backend}: did not stop");
            std::thread::sleep(Duration::from_millis(20));
        };
        assert!(status.success(), "{backend}: {status:?}");
        assert!(
            !path.exists(),
            "{backend}: the socket file is removed on exit"
        );
    }
}

/// An address another process holds: the error says so and which flags to change.
#[test]
fn an_address_in_use_names_the_flags_to_change() {
    let taken = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = taken.local_addr().unwrap().to_string();
    let (ok, err) = serve(&["--addr", &addr], &[]);
    assert!(!ok, "{err}");
    assert!(
        err.contains(&addr) && err.contains("--addr") && err.contains("--unix"),
        "{err}"
    );
}
