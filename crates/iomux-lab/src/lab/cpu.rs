//! CPU accounting from /proc: a process tree's CPU time (utime + stime) and
//! how busy each core was over a window (/proc/stat).

use std::io;

/// Clock ticks per second for /proc's utime and stime.
fn ticks_per_second() -> f64 {
    // SAFETY: sysconf has no preconditions.
    let t = unsafe { libc::sysconf(libc::_SC_CLK_TCK) };
    if t > 0 {
        t as f64
    } else {
        100.0
    }
}

/// (parent pid, utime + stime in ticks) from the text of /proc/PID/stat.
fn parse_stat(text: &str) -> Option<(u32, u64)> {
    // The command name (field 2) may hold spaces and parentheses: fields
    // are counted after its last ')'. Field 4 is the parent, 14 and 15 the
    // user and system time.
    let rest = &text[text.rfind(')')? + 1..];
    let fields: Vec<&str> = rest.split_whitespace().collect();
    let ppid = fields.get(1)?.parse().ok()?;
    let utime: u64 = fields.get(11)?.parse().ok()?;
    let stime: u64 = fields.get(12)?.parse().ok()?;
    Some((ppid, utime + stime))
}

/// A process's CPU time read two ways: utime + stime of it and every process
/// below it (10 ms ticks, but counting threads that have exited), and the
/// nanosecond on-CPU time of its live threads (/proc/PID/task/*/schedstat).
#[derive(Debug, Clone, Copy)]
pub(crate) struct CpuSample {
    ticks_s: f64,
    threads_s: f64,
}

impl CpuSample {
    pub(crate) fn of(pid: u32) -> io::Result<CpuSample> {
        Ok(CpuSample {
            ticks_s: process_tree_seconds(pid)?,
            threads_s: live_threads_seconds(pid),
        })
    }

    /// CPU seconds from `self` to `later`: the larger of the two readings,
    /// since ticks miss up to 10 ms and live threads miss those that exited.
    pub(crate) fn until(&self, later: &CpuSample) -> f64 {
        (later.ticks_s - self.ticks_s).max(later.threads_s - self.threads_s)
    }
}

/// On-CPU nanoseconds (first field of schedstat) of `pid`'s live threads, in seconds.
fn live_threads_seconds(pid: u32) -> f64 {
    let Ok(tasks) = std::fs::read_dir(format!("/proc/{pid}/task")) else {
        return 0.0;
    };
    tasks
        .flatten()
        .filter_map(|t| std::fs::read_to_string(t.path().join("schedstat")).ok())
        .filter_map(|s| s.split_whitespace().next()?.parse::<u64>().ok())
        .sum::<u64>() as f64
        / 1e9
}

/// CPU time (user + system, all threads) of `pid` and every process below
/// it, in seconds.
fn process_tree_seconds(pid: u32) -> io::Result<f64> {
    let own = std::fs::read_to_string(format!("/proc/{pid}/stat"))?;
    let (_, mut ticks) = parse_stat(&own)
        .ok_or_else(|| io::Error::other(format!("cannot parse /proc/{pid}/stat")))?;
    // Children of the tree, found by their parent pid.
    let mut all = Vec::new();
    for entry in std::fs::read_dir("/proc")?.flatten() {
        let Some(child) = entry
            .file_name()
            .to_str()
            .and_then(|n| n.parse::<u32>().ok())
        else {
            continue;
        };
        if let Some(stat) = std::fs::read_to_string(format!("/proc/{child}/stat"))
            .ok()
            .and_then(|t| parse_stat(&t))
        {
            all.push((child, stat));
        }
    }
    let mut tree = vec![pid];
    let mut at = 0;
    while at < tree.len() {
        let parent = tree[at];
        for &(child, (ppid, t)) in &all {
            if ppid == parent && !tree.contains(&child) {
                tree.push(child);
                ticks += t;
            }
        }
        at += 1;
    }
    Ok(ticks as f64 / ticks_per_second())
}

/// CPU time (user + system) of this process's children that have been
/// waited for, in seconds: the difference around a child's run and wait is
/// that child's CPU time.
pub(crate) fn waited_children_seconds() -> f64 {
    // SAFETY: getrusage writes into the zeroed rusage given.
    let mut usage: libc::rusage = unsafe { std::mem::zeroed() };
    if unsafe { libc::getrusage(libc::RUSAGE_CHILDREN, &mut usage) } != 0 {
        return f64::NAN;
    }
    let secs = |t: libc::timeval| t.tv_sec as f64 + t.tv_usec as f64 / 1e6;
    secs(usage.ru_utime) + secs(usage.ru_stime)
}

/// Per-core (busy, total) jiffies from /proc/stat.
#[derive(Debug, Clone, Default)]
pub(crate) struct CoreTimes(Vec<(u64, u64)>);

/// (busy, total) of each `cpuN` line: idle and iowait are not busy.
fn parse_proc_stat(text: &str) -> CoreTimes {
    CoreTimes(
        text.lines()
            .filter(|l| l.starts_with("cpu") && l.as_bytes().get(3).is_some_and(u8::is_ascii_digit))
            .map(|l| {
                let v: Vec<u64> = l
                    .split_whitespace()
                    .skip(1)
                    .filter_map(|x| x.parse().ok())
                    .collect();
                // user nice system idle iowait irq softirq steal (guest time is inside user).
                let total: u64 = v.iter().take(8).sum();
                let idle = v.get(3).copied().unwrap_or(0) + v.get(4).copied().unwrap_or(0);
                (total - idle, total)
            })
            .collect(),
    )
}

impl CoreTimes {
    /// Now.
    pub(crate) fn now() -> CoreTimes {
        parse_proc_stat(&std::fs::read_to_string("/proc/stat").unwrap_or_default())
    }

    /// The busy share (percent) of `cpus` together from `self` to `later`;
    /// NaN when unknown.
    pub(crate) fn busy_pct(&self, later: &CoreTimes, cpus: &[usize]) -> f64 {
        let (mut busy, mut total) = (0u64, 0u64);
        for &c in cpus {
            let (Some(a), Some(b)) = (self.0.get(c), later.0.get(c)) else {
                return f64::NAN;
            };
            busy += b.0.saturating_sub(a.0);
            total += b.1.saturating_sub(a.1);
        }
        if total == 0 {
            f64::NAN
        } else {
            100.0 * busy as f64 / total as f64
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn stat_fields_are_counted_after_the_command_name() {
        let line = "42 (a b) c) S 7 42 42 0 -1 4194560 100 0 0 0 250 30 0 0 20 0 3 0 1 2 3";
        assert_eq!(parse_stat(line), Some((7, 280)));
        assert_eq!(parse_stat("garbage"), None);
    }

    #[test]
    fn busy_share_leaves_out_idle_and_iowait() {
        let a = parse_proc_stat(
            "cpu  9 9 9 9 9 9 9 9\ncpu0 10 0 10 100 0 0 0 0 0 0\ncpu1 0 0 0 100 0 0 0 0\n",
        );
        let b = parse_proc_stat(
            "cpu  9 9 9 9 9 9 9 9\ncpu0 40 0 40 140 20 0 0 0 0 0\ncpu1 0 0 0 220 0 0 0 0\n",
        );
        assert_eq!(a.busy_pct(&b, &[0]), 50.0);
        assert_eq!(a.busy_pct(&b, &[1]), 0.0);
        assert_eq!(a.busy_pct(&b, &[0, 1]), 25.0);
        assert!(a.busy_pct(&b, &[2]).is_nan());
    }

    #[test]
    fn this_process_has_spent_some_cpu() {
        let spin = std::time::Instant::now();
        while spin.elapsed() < std::time::Duration::from_millis(30) {}
        let a = CpuSample::of(std::process::id()).unwrap();
        assert!(a.ticks_s > 0.0 && a.threads_s > 0.0, "{a:?}");
        // Spin until the sample moves by 2 ms: the scheduler's nanoseconds
        // show it even where ticks miss it. On a busy machine the thread may
        // wait for its core, so the spin is bounded by wall time, not fixed.
        let spin = std::time::Instant::now();
        let mut b = CpuSample::of(std::process::id()).unwrap();
        while a.until(&b) < 0.002 && spin.elapsed() < std::time::Duration::from_secs(10) {
            b = CpuSample::of(std::process::id()).unwrap();
        }
        assert!(a.until(&b) >= 0.002, "{a:?} {b:?}");
    }
}
