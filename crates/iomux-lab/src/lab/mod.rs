//! `iomux lab`: run the experiments that measure the I/O models on this
//! machine and write `report.md`, one CSV per table and SVG charts.
//!
//! Servers (`iomux serve`) and load (`iomux load`) run as child processes of
//! the current executable, pinned to different cores when there are two or
//! more; the dispatch and thundering-herd experiments run in-process.
//!
//! ```no_run
//! let config = iomux_lab::lab::LabConfig {
//!     out: "lab-report".into(),
//!     quick: true,
//!     exe: std::env::current_exe().unwrap(),
//!     command_line: "iomux lab --quick".into(),
//!     only: Vec::new(),
//! };
//! iomux_lab::lab::run(&config).unwrap();
//! ```

mod chart;
mod connrate;
mod dispatch;
mod herd;
mod machine;
mod memory;
mod models;
mod procs;
mod report;
mod throughput;

pub use report::{Section, Table, Verdict};

use std::io::{self, Write};
use std::path::{Path, PathBuf};
use std::time::Instant;

/// What to run and where to write it.
#[derive(Debug, Clone)]
pub struct LabConfig {
    /// Output directory (created if missing).
    pub out: PathBuf,
    /// The reduced grid (under two minutes).
    pub quick: bool,
    /// The `iomux` executable to run servers and load from.
    pub exe: PathBuf,
    /// The command line, for the report.
    pub command_line: String,
    /// Run only these experiments (empty: all).
    pub only: Vec<String>,
}

/// The experiments, in report order: (name, what it measures).
pub const EXPERIMENTS: [(&str, &str); 7] = [
    (
        "dispatch",
        "cost of one event-loop pass vs registered descriptors",
    ),
    (
        "throughput",
        "requests/s and p99 on every engine with idle connections",
    ),
    (
        "level_edge",
        "epoll level vs edge with the engine's counters",
    ),
    ("memory", "server memory per idle connection"),
    ("connrate", "new connections per second"),
    ("herd", "thundering herd on a shared listener"),
    ("models", "blocking vs threads vs event loop"),
];

/// Shared by the experiments: the configuration, the cores, progress output.
pub(crate) struct Ctx {
    pub config: LabConfig,
    pub server_cpu: Option<usize>,
    pub load_cpu: Option<usize>,
    pub http: bool,
    started: Instant,
    /// Throughput runs on epoll, kept for the level-vs-edge section.
    pub trigger_runs: Vec<throughput::Run>,
    /// Why io_uring cannot be used here (probed once), or `None` when it can.
    pub uring_unavailable: Option<String>,
}

impl Ctx {
    pub(crate) fn progress(&self, msg: impl std::fmt::Display) {
        let _ = writeln!(
            io::stderr(),
            "[lab {:>5.1}s] {msg}",
            self.started.elapsed().as_secs_f64()
        );
    }

    pub(crate) fn out(&self, file: &str) -> PathBuf {
        self.config.out.join(file)
    }

    /// The note for a section whose io_uring rows were skipped, or `None` when
    /// io_uring works here (`what` names the rows, e.g. "the uring engine").
    pub(crate) fn uring_skipped(&self, what: &str) -> Option<String> {
        self.uring_unavailable.as_ref().map(|why| {
            format!("{what} not measured: io_uring is unavailable on this machine ({why}).")
        })
    }

    /// A value from the full grid, or the quick one.
    pub(crate) fn pick<T>(&self, full: T, quick: T) -> T {
        if self.config.quick {
            quick
        } else {
            full
        }
    }

    pub(crate) fn server(&self, args: &[&str]) -> io::Result<procs::Server> {
        procs::Server::start(&self.config.exe, args, self.server_cpu)
    }

    pub(crate) fn load(
        &self,
        addr: std::net::SocketAddr,
        args: &[&str],
    ) -> io::Result<procs::LoadResult> {
        procs::run_load(&self.config.exe, addr, args, self.load_cpu)
    }
}

/// Run the experiments and write the report; returns the path of report.md.
pub fn run(config: &LabConfig) -> io::Result<PathBuf> {
    for name in &config.only {
        if !EXPERIMENTS.iter().any(|(n, _)| n == name) {
            let names: Vec<&str> = EXPERIMENTS.iter().map(|e| e.0).collect();
            return Err(io::Error::new(
                io::ErrorKind::InvalidInput,
                format!(
                    "unknown experiment {name:?}; choose from {}",
                    names.join(", ")
                ),
            ));
        }
    }
    std::fs::create_dir_all(&config.out).map_err(|e| {
        io::Error::new(
            e.kind(),
            format!(
                "cannot create the output directory {}: {e}",
                config.out.display()
            ),
        )
    })?;
    let _ = iomux::net::raise_fd_limit();
    let cores = std::thread::available_parallelism().map_or(1, |n| n.get());
    let (server_cpu, load_cpu) = if cores >= 2 {
        (Some(0), Some(1))
    } else {
        (None, None)
    };
    let mut ctx = Ctx {
        config: config.clone(),
        server_cpu,
        load_cpu,
        http: false,
        started: Instant::now(),
        trigger_runs: Vec::new(),
        uring_unavailable: iomux::selector::uring::probe().err().map(|e| e.to_string()),
    };
    if let Some(why) = &ctx.uring_unavailable {
        ctx.progress(format_args!("io_uring rows skipped: {why}"));
    }
    ctx.http = match ctx.server(&["--proto", "http"]) {
        Ok(mut s) => {
            let _ = s.stop();
            true
        }
        Err(e) => {
            ctx.progress(format_args!(
                "HTTP server unavailable, HTTP rows skipped: {e}"
            ));
            false
        }
    };
    let machine = machine::describe();
    ctx.progress(format_args!(
        "{} grid; server on cpu {:?}, load on cpu {:?}; writing to {}",
        if config.quick { "quick" } else { "full" },
        server_cpu,
        load_cpu,
        config.out.display()
    ));
    let mut sections = Vec::new();
    for (name, what) in EXPERIMENTS {
        if !config.only.is_empty() && !config.only.iter().any(|n| n == name) {
            continue;
        }
        ctx.progress(format_args!("{name}: {what}"));
        let started = Instant::now();
        let result = match name {
            "dispatch" => dispatch::run(&mut ctx),
            "throughput" => throughput::run(&mut ctx),
            "level_edge" => throughput::level_edge(&mut ctx),
            "memory" => memory::run(&mut ctx),
            "connrate" => connrate::run(&mut ctx),
            "herd" => herd::run(&mut ctx),
            _ => models::run(&mut ctx),
        };
        let section = result.unwrap_or_else(|e| {
            ctx.progress(format_args!("{name} failed: {e}"));
            Section {
                name,
                title: name,
                method: what.to_string(),
                notes: vec![format!("the experiment failed: {e}")],
                ..Section::default()
            }
        });
        ctx.progress(format_args!(
            "{name}: done in {:.1}s",
            started.elapsed().as_secs_f64()
        ));
        for (_, table, csv) in &section.tables {
            if let Some(file) = csv {
                write_file(&ctx.out(file), &table.csv())?;
            }
        }
        sections.push(section);
    }
    let report = render(
        config,
        &machine,
        &sections,
        ctx.started.elapsed().as_secs_f64(),
    );
    let path = ctx.out("report.md");
    write_file(&path, &report)?;
    ctx.progress(format_args!("report written to {}", path.display()));
    Ok(path)
}

fn write_file(path: &Path, text: &str) -> io::Result<()> {
    std::fs::write(path, text)
        .map_err(|e| io::Error::new(e.kind(), format!("cannot write {}: {e}", path.display())))
}

fn render(
    config: &LabConfig,
    machine: &machine::Machine,
    sections: &[Section],
    seconds: f64,
) -> String {
    let mut s = String::from("# iomux lab report\n\n");
    s += &format!("- Machine: {}\n", machine.cpu);
    s += &format!(
        "- Cores: {}; memory: {} MiB\n",
        machine.cores, machine.mem_mib
    );
    s += &format!("- Kernel: {}\n", machine.kernel);
    s += &format!("- Command: `{}`\n", config.command_line);
    s += &format!(
        "- Grid: {}; ran for {seconds:.0} s\n",
        if config.quick { "quick" } else { "full" }
    );
    s += &format!("- Started: {}\n\n", machine.date);
    s += "Servers and load run in separate processes pinned to different cores (server cpu 0, load cpu 1) when the machine has two or more; on a shared machine the figures carry its noise.\n\n";
    s += "## Claims and verdicts\n\n| claim | measured on this machine |\n| --- | --- |\n";
    for v in sections.iter().flat_map(|sec| &sec.verdicts) {
        s += &format!(
            "| {} | {} |\n",
            v.claim,
            v.verdict.replace('|', "/").replace('\n', " ")
        );
    }
    s.push('\n');
    for (i, sec) in sections.iter().enumerate() {
        s += &sec.markdown(i + 1);
    }
    s
}
