//! What machine the report was made on.

pub(crate) struct Machine {
    pub cpu: String,
    pub cores: usize,
    pub mem_mib: u64,
    pub kernel: String,
    pub date: String,
}

pub(crate) fn describe() -> Machine {
    let cpuinfo = std::fs::read_to_string("/proc/cpuinfo").unwrap_or_default();
    let cpu = cpuinfo
        .lines()
        .find(|l| l.starts_with("model name"))
        .and_then(|l| l.split_once(':'))
        .map_or("unknown CPU".to_string(), |(_, v)| v.trim().to_string());
    let mem_mib = std::fs::read_to_string("/proc/meminfo")
        .ok()
        .and_then(|m| meminfo_kib(&m, "MemTotal:"))
        .unwrap_or(0)
        / 1024;
    let read = |p: &str| std::fs::read_to_string(p).map_or(String::new(), |s| s.trim().to_string());
    Machine {
        cpu,
        cores: std::thread::available_parallelism().map_or(1, |n| n.get()),
        mem_mib,
        kernel: format!(
            "Linux {} ({})",
            read("/proc/sys/kernel/osrelease"),
            read("/proc/sys/kernel/version")
        ),
        date: utc_now(),
    }
}

/// A `Key:   123 kB` value from /proc/meminfo-style text.
pub(crate) fn meminfo_kib(text: &str, key: &str) -> Option<u64> {
    text.lines()
        .find(|l| l.starts_with(key))
        .and_then(|l| l.split_whitespace().nth(1))
        .and_then(|v| v.parse().ok())
}

/// The current UTC time, from date(1) (empty if it is missing).
fn utc_now() -> String {
    std::process::Command::new("date")
        .args(["-u", "+%Y-%m-%d %H:%M UTC"])
        .output()
        .map_or(String::new(), |o| {
            String::from_utf8_lossy(&o.stdout).trim().to_string()
        })
}
