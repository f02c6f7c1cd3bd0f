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

const ROUNDS_HEADER: &str = "proto,idle,round,order,backend,trigger,rps,server_cpu_us_per_req,client_cpu_us_per_req,server_busy_pct,client_busy_pct,status";

/// How the lab names a run that gave no figures (served nothing twice, or failed).
const FAILED: &str = "failed measurement";

/// How the lab's notes name an engine (`Engine::label`).
fn engine_label(backend: &str, trigger: &str) -> String {
    match backend {
        "epoll" => format!("epoll {trigger}"),
        _ => backend.to_string(),
    }
}

/// A rounds CSV (`ROUNDS_HEADER`): within each load (proto, idle), every
/// round ran each engine of that load once, round r starting with engine
/// r-1 (mod their count); every measured run served requests and has its CPU
/// figures; every failed measurement has no figures (not zeros) and the
/// report names it with its reason; most runs of each load measured.
fn rounds_rotate(dir: &Path, file: &str, report: &str) -> Vec<Vec<String>> {
    let rows = csv(dir, file, ROUNDS_HEADER);
    let mut loads: Vec<(String, String)> =
        rows.iter().map(|r| (r[0].clone(), r[1].clone())).collect();
    loads.dedup();
    for (proto, idle) in &loads {
        let cell: Vec<&Vec<String>> = rows
            .iter()
            .filter(|r| &r[0] == proto && &r[1] == idle)
            .collect();
        // The engines in list order are those of round 1 sorted by their order.
        let mut first: Vec<&&Vec<String>> = cell.iter().filter(|r| r[2] == "1").collect();
        first.sort_by_key(|r| number(&r[3]) as usize);
        let engines: Vec<(&str, &str)> = first
            .iter()
            .map(|r| (r[4].as_str(), r[5].as_str()))
            .collect();
        assert!(
            !engines.is_empty(),
            "{file}: {proto} idle={idle}: no round 1"
        );
        let rounds = cell.iter().map(|r| number(&r[2]) as usize).max().unwrap();
        for round in 1..=rounds {
            let mut ran: Vec<(usize, (&str, &str))> = cell
                .iter()
                .filter(|r| number(&r[2]) as usize == round)
                .map(|r| (number(&r[3]) as usize, (r[4].as_str(), r[5].as_str())))
                .collect();
            ran.sort();
            let n = engines.len();
            // Round r starts one engine later than round r-1.
            let expected: Vec<(usize, (&str, &str))> = (0..n)
                .map(|k| (k + 1, engines[(round - 1 + k) % n]))
                .collect();
            if round > 1 {
                assert_eq!(ran, expected, "{file}: {proto} idle={idle} round {round}");
            }
        }
        let failed: Vec<&&Vec<String>> = cell.iter().filter(|r| r[11] == FAILED).collect();
        assert!(
            failed.len() * 2 < cell.len(),
            "{file}: {proto} idle={idle}: most runs failed: {failed:?}"
        );
        for row in &failed {
            assert!(row[6..11].iter().all(String::is_empty), "{file}: {row:?}");
            let named = format!(
                "round {}: {}: {FAILED}: ",
                row[2],
                engine_label(&row[4], &row[5])
            );
            assert!(
                report.contains(&named),
                "{file}: the report does not name {named:?}"
            );
        }
        for row in cell.iter().filter(|r| r[11] != FAILED) {
            assert_eq!(row[11], "measured", "{file}: {row:?}");
            assert!(
                number(&row[6]) > 0.0,
                "{file}: a measured run served nothing: {row:?}"
            );
            assert!(
                number(&row[7]) > 0.0 && number(&row[8]) > 0.0,
                "{file}: CPU per request missing: {row:?}"
            );
            for busy in [&row[9], &row[10]] {
                assert!((0.0..=100.0).contains(&number(busy)), "{file}: {row:?}");
            }
        }
    }
    rows
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
        "backend,trigger,fds,active,usec_per_pass,usec_min,usec_max",
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
        assert!(
            number(&row[5]) <= number(&row[4]) && number(&row[4]) <= number(&row[6]),
            "{row:?}"
        );
    }
    // poll's pass grows with the registered descriptors (1 active): at the
    // most pairs it costs more than twice what it does at the fewest.
    let poll_1: Vec<(f64, f64)> = dispatch
        .iter()
        .filter(|r| r[0] == "poll" && r[3] == "1")
        .map(|r| (number(&r[2]), number(&r[4])))
        .collect();
    let (few, most) = (poll_1.first().unwrap(), poll_1.last().unwrap());
    assert!(
        most.0 > few.0 && most.1 > 2.0 * few.1,
        "poll's growth: {poll_1:?}"
    );
    newer_models_have_rows_or_notes(
        &dispatch,
        &report,
        uring.is_ok(),
        "dispatch",
        ["sigio", "uring-poll"],
        4,
    );
    let throughput_rounds = rounds_rotate(d, "throughput_rounds.csv", &report);
    let throughput = csv(
        d,
        "throughput.csv",
        "backend,trigger,proto,conns,idle,rps,p99_us,server_cpu_us_per_req,server_busy_pct,client_busy_pct,rps_min,rps_max,server_cpu_min,server_cpu_max,rounds,bound,client_cpu_us_per_req",
    );
    for row in &throughput {
        assert_eq!(number(&row[3]), 100.0, "{row:?}");
        // Served something, with its median inside its range and CPU per request.
        assert!(number(&row[5]) > 0.0 && number(&row[6]) > 0.0, "{row:?}");
        assert!(
            number(&row[10]) <= number(&row[5]) && number(&row[5]) <= number(&row[11]),
            "{row:?}"
        );
        assert!(number(&row[7]) > 0.0 && number(&row[16]) > 0.0, "{row:?}");
        // Its rounds are its measured runs in the rounds CSV.
        let measured = throughput_rounds
            .iter()
            .filter(|r| r[0] == row[2] && r[1] == row[4] && r[4] == row[0] && r[5] == row[1])
            .filter(|r| r[11] == "measured")
            .count();
        assert!(
            measured >= 1 && number(&row[14]) == measured as f64,
            "{measured} measured runs: {row:?}"
        );
        assert!(
            [
                "server-bound",
                "client-bound",
                "both cores saturated",
                "neither core saturated"
            ]
            .contains(&row[15].as_str()),
            "{row:?}"
        );
    }
    newer_models_have_rows_or_notes(
        &throughput,
        &report,
        uring.is_ok(),
        "throughput",
        ["sigio", "uring"],
        5,
    );
    for row in csv(
        d,
        "capacity.csv",
        "proto,pipeline,conns,idle,rps,rps_min,rps_max,server_cpu_us_per_req,rounds,bound",
    ) {
        assert!(number(&row[4]) > 0.0, "{row:?}");
    }
    rounds_rotate(d, "capacity_rounds.csv", &report);
    let newer = csv(
        d,
        "newer_models.csv",
        "backend,trigger,rps,server_cpu_us_per_req,waits_per_req,events_per_req,reads_per_req,writes_per_req",
    );
    assert_eq!(
        newer[0][0], "epoll",
        "epoll edge first, for comparison: {newer:?}"
    );
    for row in &newer {
        // Served, at a CPU cost; every request took a wait now and then, an
        // event, a read and a write (or their completions).
        assert!(
            number(&row[2]) > 0.0 && number(&row[3]) > 0.0 && number(&row[4]) > 0.0,
            "{row:?}"
        );
        assert!(row[5..].iter().all(|c| number(c) >= 0.9), "{row:?}");
    }
    let memory = csv(
        d,
        "memory.csv",
        "backend,conns,rss_kib_per_conn,rss_min,rss_max,rounds",
    );
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
    for row in csv(d, "level_edge.csv", "trigger,proto,idle,rps,server_cpu_us_per_req,epoll_wait_per_req,events_per_req,reads_per_req,eagain_reads_per_req,writes_per_req") {
        assert!(number(&row[7]) >= 0.9 && number(&row[9]) >= 0.9, "{row:?}");
    }
    let connrate = csv(
        d,
        "connrate.csv",
        "round,server_threads,proto,connects_per_s,p99_us,errors,server_cpu_us_per_conn,bound",
    );
    for row in &connrate {
        assert!(number(&row[3]) > 0.0, "{row:?}");
    }
    // Every echo run of every round has its row, or the report names it as
    // a failed measurement; most have rows.
    let rounds = connrate
        .iter()
        .map(|r| number(&r[0]) as usize)
        .max()
        .unwrap();
    let mut failed = 0;
    for round in 1..=rounds {
        for threads in ["1", "2"] {
            let has_row = connrate
                .iter()
                .any(|r| number(&r[0]) as usize == round && r[1] == threads && r[2] == "echo");
            if !has_row {
                let named =
                    format!("connrate, round {round}: echo --threads {threads}: {FAILED}: ");
                assert!(
                    report.contains(&named),
                    "connrate: no row, and no {named:?}"
                );
                failed += 1;
            }
        }
    }
    assert!(
        failed < rounds,
        "connrate: most runs failed ({failed} of {})",
        rounds * 2
    );
    let herd = csv(d, "herd.csv", "round,mode,threads,connections,thread_wakeups,wakeups_per_accept,epoll_wait_returns,futile_returns");
    assert_eq!(herd.len() % 3, 0);
    for row in &herd {
        assert!(number(&row[3]) > 0.0 && number(&row[5]) >= 1.0, "{row:?}");
    }
    // The herd: a plain shared listener wakes more threads per connection
    // than EPOLLEXCLUSIVE, in total over the rounds.
    let wakeups = |mode: &str| -> f64 {
        herd.iter()
            .filter(|r| r[1] == mode)
            .map(|r| number(&r[4]))
            .sum()
    };
    assert!(wakeups("plain") > wakeups("exclusive"), "{herd:?}");
    for row in csv(
        d,
        "models.csv",
        "backend,conns,rps,p99_us,errors,starved_conns,server_cpu_us_per_req,bound",
    ) {
        assert!(number(&row[2]) > 0.0, "every model served: {row:?}");
    }
    let syscalls = csv(
        d,
        "syscall_cost.csv",
        "call,axis,watched,highest_fd,ns_per_call,ns_min,ns_max",
    );
    for row in &syscalls {
        assert!(number(&row[4]) > 0.0, "{row:?}");
    }
    // The high descriptor really was above FD_SETSIZE.
    assert!(
        syscalls
            .iter()
            .any(|r| r[0] == "select" && r[1] == "highest" && number(&r[3]) > 1024.0),
        "{syscalls:?}"
    );
    // Every claim has one verdict from the four words, and the report's
    // claims table is made from them.
    let verdicts = std::fs::read_to_string(d.join("verdicts.csv")).unwrap();
    assert!(
        verdicts.starts_with("claim,verdict,evidence\n"),
        "{verdicts}"
    );
    let words = ["confirmed", "refuted", "partly", "inconclusive"];
    let mut claims = 0;
    for claim in [
        "select and poll cost O(n) per call; epoll costs O(active)",
        "with few, busy descriptors select/poll can match or beat epoll",
        "select cannot go past 1,024 descriptors",
        "select's and poll's cost grows with the number of descriptors watched",
        "epoll shares memory with user space through mmap",
        "idle connections slow select/poll servers but not epoll ones",
        "signal-driven I/O is of little use for TCP servers",
        "Linux has no true asynchronous network I/O",
        "edge-triggered is faster than level-triggered (disputed)",
        "a single thread handled 276K requests/s",
        "an idle TCP connection costs about 3.3 KiB in the kernel",
        "a thread per connection costs far more memory than an event loop",
        "a completion-based server needs a buffer for every outstanding read",
        "a single thread handled ~2.9K new connections/s",
        "processes waiting on one listener suffer a thundering herd",
        "thread-per-connection servers stop scaling",
        "a blocking server serves one client at a time",
    ] {
        let line = verdicts
            .lines()
            .find(|l| l.trim_start_matches('"').starts_with(claim))
            .unwrap_or_else(|| panic!("no verdict for {claim:?}: {verdicts}"));
        assert!(
            words.iter().any(|w| line.contains(&format!(",{w},"))),
            "{line}"
        );
        let row = report
            .lines()
            .find(|l| l.starts_with(&format!("| {claim}")))
            .unwrap_or_else(|| panic!("the claims table lacks {claim:?}"));
        assert!(
            words.iter().any(|w| row.contains(&format!("| {w} |"))),
            "{row}"
        );
        claims += 1;
    }
    assert_eq!(verdicts.lines().count(), claims + 1, "{verdicts}");

    for heading in [
        "## Claims and verdicts",
        "## 1. Dispatch cost",
        "## 2. select, poll and epoll asked directly",
        "## 3. Throughput with idle connections",
        "## 4. epoll level- vs edge-triggered",
        "## 5. One loop's capacity",
        "## 6. Memory per idle connection",
        "## 7. Connection rate",
        "## 8. Thundering herd",
        "## 9. Blocking vs threads vs event loop",
        "- Kernel: Linux",
        "- Command: `iomux lab --quick",
    ] {
        assert!(report.contains(heading), "report.md lacks {heading:?}");
    }
    assert!(!report.contains("the experiment failed"), "{report}");
    for chart in [
        "dispatch_active1",
        "dispatch_active100",
        "syscall_cost_count",
        "syscall_cost_highest",
        "throughput",
        "throughput_cpu",
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
        "backend,trigger,fds,active,usec_per_pass,usec_min,usec_max",
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
