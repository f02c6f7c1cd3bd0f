//! Running a crate's example binaries from its tests (the examples of the
//! crate whose test includes this file).

use std::io::Read;
use std::path::PathBuf;
use std::process::{Command, ExitStatus, Stdio};
use std::time::{Duration, Instant};

/// How long an example may take to start or to refuse its arguments.
pub const TIMEOUT: Duration = Duration::from_secs(20);

/// The example's binary; `cargo test` builds the examples before running
/// tests, and a lone `cargo test --test NAME` builds it here.
pub fn example_path(name: &str) -> PathBuf {
    let exe = std::env::current_exe().unwrap();
    let profile_dir = exe.parent().unwrap().parent().unwrap();
    let path = profile_dir.join("examples").join(name);
    if !path.exists() {
        let status = Command::new(env!("CARGO"))
            .args(["build", "-p", env!("CARGO_PKG_NAME"), "--example", name])
            .status()
            .expect("run cargo build --example");
        assert!(status.success(), "cargo build --example {name} failed");
    }
    path
}

/// Run an example that is expected to refuse its command line: it must exit
/// by itself (within [`TIMEOUT`]) without printing on stdout (so without
/// listening); returns how it exited and what it printed on stderr.
pub fn refused(name: &str, args: &[&str]) -> (ExitStatus, String) {
    let mut child = Command::new(example_path(name))
        .args(args)
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap_or_else(|e| panic!("spawn example {name}: {e}"));
    let deadline = Instant::now() + TIMEOUT;
    let status = loop {
        if let Some(status) = child.try_wait().unwrap() {
            break status;
        }
        if Instant::now() > deadline {
            let _ = child.kill();
            let _ = child.wait();
            panic!("{name} {args:?} started instead of refusing its arguments");
        }
        std::thread::sleep(Duration::from_millis(20));
    };
    let (mut stdout, mut stderr) = (String::new(), String::new());
    child
        .stdout
        .take()
        .unwrap()
        .read_to_string(&mut stdout)
        .unwrap();
    child
        .stderr
        .take()
        .unwrap()
        .read_to_string(&mut stderr)
        .unwrap();
    assert!(stdout.is_empty(), "{name} {args:?} printed {stdout:?}");
    (status, stderr)
}
