//! Servers and load clients in child processes (the current `iomux`
//! executable), pinned to separate cores when there are two or more.

use crate::load::json_number;
use std::io::{self, BufRead, BufReader, Read};
use std::net::SocketAddr;
use std::os::unix::process::CommandExt;
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

/// Make the child run only on `cpus` (all of them when empty).
fn pin(cmd: &mut Command, cpus: &[usize]) {
    if !cpus.is_empty() {
        let cpus = cpus.to_vec();
        // SAFETY: the closure runs in the forked child before exec and only
        // calls sched_setaffinity on a local, initialised cpu_set_t.
        unsafe {
            cmd.pre_exec(move || {
                let mut set: libc::cpu_set_t = std::mem::zeroed();
                for &cpu in &cpus {
                    libc::CPU_SET(cpu, &mut set);
                }
                if libc::sched_setaffinity(0, std::mem::size_of::<libc::cpu_set_t>(), &set) != 0 {
                    return Err(io::Error::last_os_error());
                }
                Ok(())
            });
        }
    }
}

/// A running `iomux serve`.
pub(crate) struct Server {
    child: Option<Child>,
    pub addr: SocketAddr,
    stderr: Arc<Mutex<String>>,
}

impl Server {
    /// Start `iomux serve --addr 127.0.0.1:0 <args>` and wait for its ready line.
    pub(crate) fn start(exe: &Path, args: &[&str], cpus: &[usize]) -> io::Result<Server> {
        let mut cmd = Command::new(exe);
        cmd.arg("serve")
            .args(["--addr", "127.0.0.1:0"])
            .args(args)
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped());
        pin(&mut cmd, cpus);
        let mut child = cmd
            .spawn()
            .map_err(|e| io::Error::new(e.kind(), format!("cannot run {}: {e}", exe.display())))?;
        // Collect stderr in the background so the pipe never fills.
        let stderr = Arc::new(Mutex::new(String::new()));
        let mut pipe = child.stderr.take().expect("piped stderr");
        let sink = stderr.clone();
        std::thread::spawn(move || {
            let mut buf = [0u8; 4096];
            while let Ok(n) = pipe.read(&mut buf) {
                if n == 0 {
                    break;
                }
                sink.lock()
                    .unwrap()
                    .push_str(&String::from_utf8_lossy(&buf[..n]));
            }
        });
        let mut line = String::new();
        BufReader::new(child.stdout.take().expect("piped stdout")).read_line(&mut line)?;
        let addr = line
            .strip_prefix("listening on ")
            .and_then(|rest| rest.split_whitespace().next())
            .and_then(|a| a.parse().ok());
        let mut server = Server {
            child: Some(child),
            addr: "127.0.0.1:0".parse().unwrap(),
            stderr,
        };
        match addr {
            Some(addr) => {
                server.addr = addr;
                Ok(server)
            }
            None => {
                let _ = server.stop();
                std::thread::sleep(Duration::from_millis(50));
                Err(io::Error::other(format!(
                    "`iomux serve {}` did not start: {}",
                    args.join(" "),
                    server.stderr_text().trim()
                )))
            }
        }
    }

    pub(crate) fn pid(&self) -> u32 {
        self.child.as_ref().map_or(0, |c| c.id())
    }

    fn stderr_text(&self) -> String {
        self.stderr.lock().unwrap().clone()
    }

    /// Resident memory in KiB.
    pub(crate) fn rss_kib(&self) -> io::Result<u64> {
        proc_status_kib(self.pid(), "VmRSS:")
    }

    /// Open descriptors.
    pub(crate) fn fd_count(&self) -> usize {
        std::fs::read_dir(format!("/proc/{}/fd", self.pid())).map_or(0, |d| d.count())
    }

    /// Wait (bounded) until the server holds at least `fds` descriptors.
    pub(crate) fn wait_for_fds(&self, fds: usize, within: Duration) -> bool {
        let until = Instant::now() + within;
        while Instant::now() < until {
            if self.fd_count() >= fds {
                return true;
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        false
    }

    /// SIGTERM, wait (bounded, then SIGKILL), and return the engine's counters
    /// from its `iomux: stopped ...; name=value ...` line, if it printed one.
    pub(crate) fn stop(&mut self) -> io::Result<Vec<(String, u64)>> {
        let Some(mut child) = self.child.take() else {
            return Ok(Vec::new());
        };
        // SAFETY: kill(2) on our own child's pid.
        unsafe { libc::kill(child.id() as i32, libc::SIGTERM) };
        let until = Instant::now() + Duration::from_secs(10);
        while child.try_wait()?.is_none() {
            if Instant::now() > until {
                let _ = child.kill();
                let _ = child.wait();
                break;
            }
            std::thread::sleep(Duration::from_millis(10));
        }
        // Let the stderr reader catch the last line.
        let until = Instant::now() + Duration::from_secs(1);
        while !self.stderr_text().contains(STOP_LINE) && Instant::now() < until {
            std::thread::sleep(Duration::from_millis(10));
        }
        Ok(parse_loop_stats(&self.stderr_text()))
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }
}

/// How the line `iomux serve` prints when it has stopped begins.
const STOP_LINE: &str = "iomux: stopped";

/// The `name=value` counters of the last [`STOP_LINE`].
pub(crate) fn parse_loop_stats(text: &str) -> Vec<(String, u64)> {
    let Some(line) = text.lines().rev().find(|l| l.starts_with(STOP_LINE)) else {
        return Vec::new();
    };
    line.split_whitespace()
        .filter_map(|kv| {
            let (k, v) = kv.split_once('=')?;
            Some((k.to_string(), v.parse().ok()?))
        })
        .collect()
}

/// A value from `/proc/PID/status` in KiB.
pub(crate) fn proc_status_kib(pid: u32, key: &str) -> io::Result<u64> {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status"))?;
    status
        .lines()
        .find(|l| l.starts_with(key))
        .and_then(|l| l.split_whitespace().nth(1))
        .and_then(|v| v.parse().ok())
        .ok_or_else(|| io::Error::other(format!("no {key} in /proc/{pid}/status")))
}

/// What one `iomux load --json` run reported.
#[derive(Debug, Clone)]
pub(crate) struct LoadResult {
    pub json: String,
}

impl LoadResult {
    pub(crate) fn get(&self, key: &str) -> f64 {
        json_number(&self.json, key).unwrap_or(f64::NAN)
    }
}

/// `iomux load --addr <addr> --json <args>`, pinned to `cpus`, its output piped.
pub(crate) fn load_command(exe: &Path, addr: SocketAddr, args: &[&str], cpus: &[usize]) -> Command {
    let mut cmd = Command::new(exe);
    cmd.arg("load")
        .args(["--addr", &addr.to_string(), "--json"])
        .args(args)
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped());
    pin(&mut cmd, cpus);
    cmd
}

/// Run `load`, a [`load_command`] with `args`, to completion and take the
/// JSON line it printed.
pub(crate) fn run_load(mut load: Command, args: &[&str]) -> io::Result<LoadResult> {
    let out = load.output()?;
    let stdout = String::from_utf8_lossy(&out.stdout).trim().to_string();
    if !out.status.success() || !stdout.starts_with('{') {
        return Err(io::Error::other(format!(
            "`iomux load {}` failed: {}",
            args.join(" "),
            String::from_utf8_lossy(&out.stderr).trim()
        )));
    }
    Ok(LoadResult { json: stdout })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_the_stats_line() {
        let s = "iomux: signal 15\niomux: stopped (0.01 s after the signal); waits=10 events=25 reads=7\n";
        let stats = parse_loop_stats(s);
        assert_eq!(
            stats,
            [
                ("waits".into(), 10),
                ("events".into(), 25),
                ("reads".into(), 7)
            ]
        );
        assert!(parse_loop_stats("nothing").is_empty());
    }
}
