//! `iomux lab --quick` end to end: every experiment's section, CSV and chart.

mod common;

use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::Command;

fn iomux(args: &[&str]) -> std::process::Output {
    Command::new(env!("CARGO_BIN_EXE_iomux"))
        .args(args)
        .output()
        .expect("run iomux")
}

struct TempDir(PathBuf);

impl Drop for TempDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

/// The rows of a CSV after checking its header.
fn csv(dir: &Path, file: &str, header: &str) -> Vec<Vec<String>> {
    let text = std::fs::read_to_string(dir.join(file)).unwrap_or_else(|e| panic!("{file}: {e}"));
    let mut lines = text.lines();
    assert_eq!(lines.next(), Some(header), "{file} header");
    let rows: Vec<Vec<String>> = lines
        .map(|l| l.split(',').map(str::to_string).collect())
        .collect();
    assert!(!rows.is_empty(), "{file} has no rows");
    let width = header.split(',').count();
    for row in &rows {
        assert_eq!(row.len(), width, "{file}: {row:?}");
    }
    rows
}

fn number(cell: &str) -> f64 {
    let x: f64 = cell
        .parse()
        .unwrap_or_else(|_| panic!("{cell:?} is not a number"));
    assert!(x.is_finite(), "{cell}");
    x
}

/// A head-to-head CSV (`round,order,backend,trigger,rps`): every round ran
/// each of `engines` once, round r starting with engine r-1 (mod their
/// count), each serving something.
fn rounds_head_to_head(dir: &std::path::Path, file: &str, engines: &[(&str, &str)]) {
    let rows = csv(dir, file, "round,order,backend,trigger,rps");
    assert!(!rows.is_empty(), "{file}: no rounds");
    assert_eq!(rows.len() % engines.len(), 0, "{file}: {rows:?}");
    for (r, round) in rows.chunks(engines.len()).enumerate() {
        let mut ran: Vec<(usize, (&str, &str))> = round
            .iter()
            .map(|row| {
                assert!(number(&row[4]) > 0.0, "{file}: {row:?}");
                (number(&row[1]) as usize, (row[2].as_str(), row[3].as_str()))
            })
            .collect();
        ran.sort();
        let expected: Vec<(usize, (&str, &str))> = (0..engines.len())
            .map(|k| (k + 1, engines[(r + k) % engines.len()]))
            .collect();
        assert_eq!(ran, expected, "{file}: round {}", r + 1);
    }
}

/// The two newer models each have a row whose `measure_column` is a positive
/// number; where io_uring is unavailable its rows are absent and the report
/// says so instead.
fn newer_models_have_rows_or_notes(
    rows: &[Vec<String>],
    report: &str,
    uring_available: bool,
    experiment: &str,
    [sigio, uring]: [&str; 2],
    measure_column: usize,
) {
    let measured = |name: &str| {
        rows.iter()
            .any(|r| r[0] == name && number(&r[measure_column]) > 0.0)
    };
    assert!(measured(sigio), "{experiment}: no {sigio} row: {rows:?}");
    if uring_available {
        assert!(measured(uring), "{experiment}: no {uring} row: {rows:?}");
    } else {
        assert!(
            !rows.iter().any(|r| r[0] == uring),
            "{experiment}: {uring} rows without io_uring: {rows:?}"
        );
        assert!(
            report.contains("not measured: io_uring is unavailable on this machine"),
            "{experiment}: the report does not say why {uring} is missing"
        );
    }
}

#[test]
fn quick_lab_writes_every_section_csv_and_chart() {
    let dir = TempDir(std::env::temp_dir().join(format!("iomux-lab-test-{}", std::process::id())));
    let out = iomux(&["lab", "--quick", "--out", dir.0.to_str().unwrap()]);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "lab failed: {stderr}");
    assert!(
        stderr.contains("[lab"),
        "progress lines on stderr: {stderr}"
    );
    let d = &dir.0;
    let report = std::fs::read_to_string(d.join("report.md")).unwrap();
    // Where io_uring is refused, its rows are replaced by a note saying so.
    let uring = iomux::selector::uring::probe();
    if let Err(e) = &uring {
        eprintln!("io_uring unavailable here ({e}): checking for the report's notes instead of uring rows");
    }

    let mut dispatch = Vec::new();
    for row in csv(
        d,
        "dispatch.csv",
        "backend,trigger,fds,active,usec_per_pass",
    ) {
        assert!(
            ["select", "poll", "epoll", "sigio", "uring-poll"].contains(&row[0].as_str()),
            "{row:?}"
        );
        assert!(["level", "edge"].contains(&row[1].as_str()), "{row:?}");
        dispatch.push(row.clone());
        assert!(
            number(&row[2]) >= number(&row[3]) && number(&row[3]) >= 1.0,
            "{row:?}"
        );
        assert!(number(&row[4]) > 0.0, "{row:?}");
    }
    newer_models_have_rows_or_notes(
        &dispatch,
        &report,
        uring.is_ok(),
        "dispatch",
        ["sigio", "uring-poll"],
        4,
    );
    let throughput = csv(
        d,
        "throughput.csv",
        "backend,trigger,proto,conns,idle,rps,p99_us",
    );
    for row in &throughput {
        assert_eq!(number(&row[3]), 100.0, "{row:?}");
        assert!(
            number(&row[4]) >= 0.0 && number(&row[5]) >= 0.0 && number(&row[6]) >= 0.0,
            "{row:?}"
        );
    }
    assert!(
        throughput
            .iter()
            .any(|r| r[0] == "epoll" && number(&r[5]) > 0.0 && number(&r[6]) > 0.0),
        "epoll served requests: {throughput:?}"
    );
    newer_models_have_rows_or_notes(
        &throughput,
        &report,
        uring.is_ok(),
        "throughput",
        ["sigio", "uring"],
        5,
    );
    let newer = csv(
        d,
        "newer_models.csv",
        "backend,trigger,rps,waits_per_req,events_per_req,reads_per_req,writes_per_req",
    );
    assert_eq!(
        newer[0][0], "epoll",
        "epoll edge first, for comparison: {newer:?}"
    );
    for row in &newer {
        assert!(row[2..].iter().all(|c| number(c) >= 0.0), "{row:?}");
    }
    let memory = csv(d, "memory.csv", "backend,conns,rss_kib_per_conn");
    for row in &memory {
        assert!(number(&row[1]) >= 1000.0, "{row:?}");
        number(&row[2]);
    }
    // A thread per connection costs at least a page of stack each.
    assert!(
        memory
            .iter()
            .any(|r| r[0] == "threads" && number(&r[2]) > 4.0),
        "{memory:?}"
    );
    newer_models_have_rows_or_notes(
        &memory,
        &report,
        uring.is_ok(),
        "memory",
        ["sigio", "uring"],
        1,
    );
    // The counters come from the line the server prints when it stops: every
    // request took at least one read and one write.
    for row in csv(d, "level_edge.csv", "trigger,proto,idle,rps,epoll_wait_per_req,events_per_req,reads_per_req,eagain_reads_per_req,writes_per_req") {
        assert!(number(&row[6]) >= 0.9 && number(&row[8]) >= 0.9, "{row:?}");
    }
    rounds_head_to_head(
        d,
        "level_edge_rounds.csv",
        &[("epoll", "edge"), ("epoll", "level")],
    );
    let mut duelists = vec![("epoll", "edge"), ("sigio", "edge")];
    if uring.is_ok() {
        duelists.push(("uring", "completion"));
    }
    rounds_head_to_head(d, "newer_models_rounds.csv", &duelists);
    for row in csv(
        d,
        "connrate.csv",
        "server_threads,proto,connects_per_s,p99_us,errors",
    ) {
        assert!(number(&row[2]) > 0.0, "{row:?}");
    }
    let herd = csv(d, "herd.csv", "mode,threads,connections,thread_wakeups,wakeups_per_accept,epoll_wait_returns,futile_returns");
    assert_eq!(herd.len(), 3);
    for row in &herd {
        assert!(number(&row[2]) > 0.0 && number(&row[4]) >= 1.0, "{row:?}");
    }
    csv(
        d,
        "models.csv",
        "backend,conns,rps,p99_us,errors,starved_conns",
    );

    for heading in [
        "## Claims and verdicts",
        "## 1. Dispatch cost",
        "## 2. Throughput with idle connections",
        "## 3. epoll level- vs edge-triggered",
        "## 4. Memory per idle connection",
        "## 5. Connection rate",
        "## 6. Thundering herd",
        "## 7. Blocking vs threads vs event loop",
        "- Kernel: Linux",
        "- Command: `iomux lab --quick",
    ] {
        assert!(report.contains(heading), "report.md lacks {heading:?}");
    }
    assert!(!report.contains("the experiment failed"), "{report}");
    for chart in [
        "dispatch",
        "throughput",
        "level_edge",
        "memory",
        "connrate",
        "herd",
        "models",
    ] {
        let svg = std::fs::read_to_string(d.join(format!("{chart}.svg"))).unwrap();
        assert!(
            svg.contains("<svg") && svg.contains("</svg>"),
            "{chart}.svg"
        );
        assert!(
            report.contains(&format!("]({chart}.svg)")),
            "report links {chart}.svg"
        );
    }
}

#[test]
fn unknown_experiment_is_refused_and_writes_nothing() {
    let dir = TempDir(std::env::temp_dir().join(format!("iomux-lab-bad-{}", std::process::id())));
    let out = iomux(&["lab", "--only", "nope", "--out", dir.0.to_str().unwrap()]);
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains("unknown experiment") && err.contains("dispatch"),
        "{err}"
    );
    assert!(!dir.0.exists(), "nothing written for bad input");
}

#[test]
fn without_io_uring_the_lab_says_so_and_goes_on() {
    let dir =
        TempDir(std::env::temp_dir().join(format!("iomux-lab-nouring-{}", std::process::id())));
    let mut command = Command::new(env!("CARGO_BIN_EXE_iomux"));
    command.args([
        "lab",
        "--quick",
        "--only",
        "dispatch",
        "--out",
        dir.0.to_str().unwrap(),
    ]);
    // SAFETY: the closure only calls prctl (async-signal-safe).
    unsafe { command.pre_exec(|| common::refuse_io_uring(libc::EPERM as u32)) };
    let out = command.output().expect("run iomux lab");
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        out.status.success(),
        "lab failed without io_uring: {stderr}"
    );
    assert!(
        stderr.contains("io_uring rows skipped"),
        "no progress line says so: {stderr}"
    );
    let rows = csv(
        &dir.0,
        "dispatch.csv",
        "backend,trigger,fds,active,usec_per_pass",
    );
    let report = std::fs::read_to_string(dir.0.join("report.md")).unwrap();
    newer_models_have_rows_or_notes(
        &rows,
        &report,
        false,
        "dispatch",
        ["sigio", "uring-poll"],
        4,
    );
    assert!(
        report.contains("- Note: The uring-poll selector not measured: io_uring is unavailable on this machine (io_uring is disabled"),
        "the note names the selector and the reason: {report}"
    );
    assert!(!report.contains("the experiment failed"), "{report}");
}
