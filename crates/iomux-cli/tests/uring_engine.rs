//! `--backend uring` and `--backend uring-poll` specifics: a kernel that
//! refuses io_uring (simulated with a seccomp filter on `io_uring_setup`) gets
//! a clear error naming epoll, before any "listening" line.

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

#[test]
fn a_kernel_that_refuses_io_uring_gets_advice_to_use_epoll() {
    for backend in ["uring", "uring-poll"] {
        for (errno, why) in [(libc::ENOSYS, "no io_uring"), (libc::EPERM, "disabled")] {
            let mut command = Command::new(env!("CARGO_BIN_EXE_iomux"));
            command.args(["serve", "--addr", "127.0.0.1:0", "--backend", backend]);
            // SAFETY: the closure only calls prctl (async-signal-safe).
            unsafe { command.pre_exec(move || refuse_io_uring(errno as u32)) };
            let out = output_within(command, std::time::Duration::from_secs(10));
            let stdout = String::from_utf8_lossy(&out.stdout);
            let stderr = String::from_utf8_lossy(&out.stderr);
            assert!(
                !out.status.success(),
                "{backend}: started without io_uring: {stdout}"
            );
            assert!(
                !stdout.contains("listening"),
                "{backend}: said it was listening: {stdout}"
            );
            assert!(
                stderr.contains(why) && stderr.contains("--backend epoll"),
                "{backend}, errno {errno}: {stderr}"
            );
        }
    }
}

#[test]
fn uring_takes_no_trigger() {
    let out = Command::new(env!("CARGO_BIN_EXE_iomux"))
        .args([
            "serve",
            "--addr",
            "127.0.0.1:0",
            "--backend",
            "uring",
            "--trigger",
            "edge",
        ])
        .output()
        .unwrap();
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("--trigger"), "{err}");
}
