//! `iomux load`'s live progress bar: drawn on a terminal (a pseudo-terminal
//! here), absent when stdout or stderr is not one.

mod common;

use common::ServerProcess;
use std::fs::File;
use std::io::Read;
use std::os::fd::{FromRawFd, OwnedFd};
use std::process::{Command, Stdio};

fn load_args(server: &ServerProcess) -> Vec<String> {
    let url = format!("http://{}/plaintext", server.addr);
    [url.as_str(), "-c", "2", "-d", "1.5"]
        .map(String::from)
        .to_vec()
}

#[test]
fn no_progress_bar_when_not_a_terminal() {
    let server = ServerProcess::start(&["--proto", "http"]);
    let out = Command::new(env!("CARGO_BIN_EXE_iomux"))
        .arg("load")
        .args(load_args(&server))
        .output()
        .unwrap();
    assert!(out.status.success());
    let (stdout, stderr) = (
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr),
    );
    assert!(stderr.is_empty(), "stderr: {stderr:?}");
    assert!(
        !stdout.contains('\x1b') && !stdout.contains("req/s,"),
        "{stdout}"
    );
    assert!(stdout.contains("Requests/sec:"), "{stdout}");
}

/// A pseudo-terminal: (master, slave).
fn open_pty() -> (File, File) {
    // SAFETY: plain libc calls on a descriptor this function owns; ptsname_r
    // writes at most buf.len() bytes.
    unsafe {
        let master = libc::posix_openpt(libc::O_RDWR | libc::O_NOCTTY);
        assert!(master >= 0, "posix_openpt");
        assert_eq!(libc::grantpt(master), 0);
        assert_eq!(libc::unlockpt(master), 0);
        let mut buf = [0 as libc::c_char; 128];
        assert_eq!(libc::ptsname_r(master, buf.as_mut_ptr(), buf.len()), 0);
        let slave = libc::open(buf.as_ptr(), libc::O_RDWR | libc::O_NOCTTY);
        assert!(slave >= 0, "open pty slave");
        (
            File::from(OwnedFd::from_raw_fd(master)),
            File::from(OwnedFd::from_raw_fd(slave)),
        )
    }
}

#[test]
fn progress_bar_on_a_terminal() {
    let server = ServerProcess::start(&["--proto", "http"]);
    let (mut master, slave) = open_pty();
    let mut child = Command::new(env!("CARGO_BIN_EXE_iomux"))
        .arg("load")
        .args(load_args(&server))
        .stdin(Stdio::null())
        .stdout(slave.try_clone().unwrap())
        .stderr(slave)
        .spawn()
        .unwrap();
    // Read the terminal until the child has exited and closed its side
    // (EIO), bounded by the run's length.
    let reader = std::thread::spawn(move || {
        let mut seen = Vec::new();
        let mut buf = [0u8; 4096];
        while let Ok(n) = master.read(&mut buf) {
            if n == 0 || seen.len() > 1 << 20 {
                break;
            }
            seen.extend_from_slice(&buf[..n]);
        }
        seen
    });
    assert!(child.wait().unwrap().success());
    let seen = String::from_utf8_lossy(&reader.join().unwrap()).to_string();
    assert!(seen.contains("req/s,"), "{seen:?}");
    assert!(seen.contains("Requests/sec:"), "{seen:?}");
}
