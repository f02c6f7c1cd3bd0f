//! `--backend uring` and `--backend uring-poll` specifics: a kernel that
//! refuses io_uring (simulated with a seccomp filter on `io_uring_setup`) gets
//! a clear error naming epoll, before any "listening" line.

#[macro_use]
mod common;

use common::refuse_io_uring;
use std::os::unix::process::CommandExt;
use std::process::Command;

/// Run `command` to its end, killing it (and failing) if it is still running
/// after `limit`: a server that started anyway must not hang the test.
fn output_within(mut command: Command, limit: std::time::Duration) -> std::process::Output {
    use std::process::Stdio;
    let mut child = command
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("run iomux");
    let start = std::time::Instant::now();
    while child.try_wait().expect("wait").is_none() {
        if start.elapsed() > limit {
            let _ = child.kill();
            let out = child.wait_with_output().expect("collect output");
            panic!(
                "still running after {limit:?}: {}",
                String::from_utf8_lossy(&out.stdout)
            );
        }
        std::thread::sleep(std::time::Duration::from_millis(20));
    }
    child.wait_with_output().expect("collect output")
}

fn a_kernel_that_refuses_io_uring_gets_advice_to_use_epoll(engine: &[&str]) {
    for (errno, why) in [(libc::ENOSYS, "no io_uring"), (libc::EPERM, "disabled")] {
        let mut command = Command::new(env!("CARGO_BIN_EXE_iomux"));
        command
            .args(["serve", "--addr", "127.0.0.1:0"])
            .args(engine);
        // SAFETY: the closure only calls prctl (async-signal-safe).
        unsafe { command.pre_exec(move || refuse_io_uring(errno as u32)) };
        let out = output_within(command, std::time::Duration::from_secs(10));
        let stdout = String::from_utf8_lossy(&out.stdout);
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert!(
            !out.status.success(),
            "{engine:?}: started without io_uring: {stdout}"
        );
        assert!(
            !stdout.contains("listening"),
            "{engine:?}: said it was listening: {stdout}"
        );
        assert!(
            stderr.contains(why) && stderr.contains("--backend epoll"),
            "{engine:?}, errno {errno}: {stderr}"
        );
    }
}
for_engines!(
    a_kernel_that_refuses_io_uring_gets_advice_to_use_epoll,
    [uring, uring_poll]
);

/// Whether `iomux serve --backend <backend>` starts here: `Ok` once it says
/// it is listening, `Err` with its stderr when it refuses.
fn starts(backend: &str) -> Result<(), String> {
    use std::io::{BufRead, BufReader, Read};
    use std::process::Stdio;
    let mut child = Command::new(env!("CARGO_BIN_EXE_iomux"))
        .args(["serve", "--addr", "127.0.0.1:0", "--backend", backend])
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("run iomux");
    // The first line, or nothing once a refusing server exits.
    let mut line = String::new();
    let _ = BufReader::new(child.stdout.take().unwrap()).read_line(&mut line);
    let _ = child.kill();
    let _ = child.wait();
    if line.starts_with("listening on ") {
        return Ok(());
    }
    let mut err = String::new();
    let _ = child.stderr.take().unwrap().read_to_string(&mut err);
    Err(err)
}

/// The io_uring tests of the other crates (the selector conformance suite,
/// the engine's own) skip themselves when the kernel refuses io_uring, and
/// `cargo test` hides what they print about it. This test makes that visible
/// in the summary: it fails unless both io_uring backends start here, or
/// IOMUX_NO_URING=1 says that io_uring is expected to be missing.
#[test]
fn io_uring_is_available_unless_declared_missing() {
    let declared_missing = std::env::var("IOMUX_NO_URING").is_ok_and(|v| v == "1");
    for backend in ["uring", "uring-poll"] {
        match starts(backend) {
            Ok(()) => {}
            Err(_) if declared_missing => {
                eprintln!("--backend {backend} refused, as IOMUX_NO_URING=1 expects")
            }
            Err(err) => panic!(
                "--backend {backend} does not start here, so every io_uring test skips itself: \
                 {err}\nRun where io_uring is allowed, or set IOMUX_NO_URING=1 if its absence is expected."
            ),
        }
    }
}
