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

mod capacity;
mod chart;
mod connrate;
mod cpu;
mod dispatch;
mod engines;
mod herd;
mod judge;
mod level_edge;
mod machine;
mod memory;
mod models;
mod procs;
mod report;
mod rounds;
mod syscalls;
mod throughput;

pub use report::{Outcome, Section, Table, Verdict};

use std::io::{self, Write};
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
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

/// One experiment: its name (for `--only`), what it measures, and how.
pub struct Experiment {
    /// The name `--only` takes, also the stem of its CSV and chart files.
    pub name: &'static str,
    /// What it measures, in a few words.
    pub description: &'static str,
    run: fn(&mut Ctx) -> io::Result<Section>,
}

/// The experiments, in report order.
pub const EXPERIMENTS: &[Experiment] = &[
    Experiment {
        name: "dispatch",
        description: "cost of one event-loop pass vs registered descriptors",
        run: dispatch::run,
    },
    Experiment {
        name: "syscalls",
        description: "select, poll and epoll asked directly: select's 1024, what their cost grows with, epoll and mmap",
        run: syscalls::run,
    },
    Experiment {
        name: "throughput",
        description: "requests/s, p99 and server CPU per request on every engine with idle connections",
        run: throughput::run,
    },
    Experiment {
        name: "level_edge",
        description: "epoll level vs edge with the engine's counters",
        run: level_edge::run,
    },
    Experiment {
        name: "capacity",
        description: "one loop's best requests/s and at the most connections the descriptor limit allows",
        run: capacity::run,
    },
    Experiment {
        name: "memory",
        description: "server memory per idle connection",
        run: memory::run,
    },
    Experiment {
        name: "connrate",
        description: "new connections per second",
        run: connrate::run,
    },
    Experiment {
        name: "herd",
        description: "thundering herd on a shared listener",
        run: herd::run,
    },
    Experiment {
        name: "models",
        description: "blocking vs threads vs event loop",
        run: models::run,
    },
];

/// The experiment called `name`, or an error naming the choices.
pub fn experiment(name: &str) -> io::Result<&'static Experiment> {
    EXPERIMENTS.iter().find(|e| e.name == name).ok_or_else(|| {
        let names: Vec<&str> = EXPERIMENTS.iter().map(|e| e.name).collect();
        io::Error::new(
            io::ErrorKind::InvalidInput,
            format!(
                "unknown experiment {name:?}; choose from {}",
                names.join(", ")
            ),
        )
    })
}

/// Shared by the experiments: the configuration, the cores, progress output.
pub(crate) struct Ctx {
    pub config: LabConfig,
    /// The cores the servers run on, and the load clients (empty: unpinned).
    pub server_cpus: Vec<usize>,
    pub load_cpus: Vec<usize>,
    pub http: bool,
    started: Instant,
    /// The throughput grid's cells, kept for the sections that read them.
    pub grid: Vec<rounds::Rounds>,
    /// Why io_uring cannot be used here (probed once), or `None` when it can.
    pub uring_unavailable: Option<String>,
    /// The descriptor limit (RLIMIT_NOFILE, soft) after raising it.
    pub fd_limit: u64,
}

impl Ctx {
    pub(crate) fn progress(&self, msg: impl std::fmt::Display) {
        let _ = writeln!(
            io::stderr(),
            "[lab {:>5.1}s] {msg}",
            self.started.elapsed().as_secs_f64()
        );
    }

    /// Say which round of how many is running what.
    pub(crate) fn round_progress(
        &self,
        tag: &str,
        round: usize,
        rounds: usize,
        what: impl std::fmt::Display,
    ) {
        self.progress(format_args!("{tag}: round {}/{rounds}, {what}", round + 1));
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
        procs::Server::start(&self.config.exe, args, &self.server_cpus)
    }

    /// Run `iomux load --json <args>` against `addr` to completion.
    pub(crate) fn load(&self, addr: SocketAddr, args: &[&str]) -> io::Result<procs::LoadResult> {
        procs::run_load(self.load_command(addr, args), args)
    }

    /// Start a load in the background (to hold connections open).
    pub(crate) fn spawn_load(&self, addr: SocketAddr, args: &[&str]) -> io::Result<Child> {
        let mut load = self.load_command(addr, args);
        load.stdout(Stdio::null()).stderr(Stdio::null()).spawn()
    }

    fn load_command(&self, addr: SocketAddr, args: &[&str]) -> Command {
        procs::load_command(&self.config.exe, addr, args, &self.load_cpus)
    }

    /// Client threads: one per core the load may use, none on the server's.
    pub(crate) fn load_threads(&self) -> usize {
        self.load_cpus.len().max(1)
    }

    /// Rounds per point, and seconds per run.
    pub(crate) fn rounds(&self) -> (usize, f64) {
        self.pick((3, 1.0), (3, 0.3))
    }
}

/// The cores this process may run on (sched_getaffinity).
fn allowed_cpus() -> Vec<usize> {
    // SAFETY: sched_getaffinity writes into a zeroed cpu_set_t of the size given.
    let mut set: libc::cpu_set_t = unsafe { std::mem::zeroed() };
    let ok =
        unsafe { libc::sched_getaffinity(0, std::mem::size_of::<libc::cpu_set_t>(), &mut set) }
            == 0;
    if !ok {
        return Vec::new();
    }
    // SAFETY: CPU_ISSET reads the initialised set.
    (0..libc::CPU_SETSIZE as usize)
        .filter(|&c| unsafe { libc::CPU_ISSET(c, &set) })
        .collect()
}

/// The soft descriptor limit (getrlimit RLIMIT_NOFILE).
fn fd_limit() -> u64 {
    let mut lim = libc::rlimit {
        rlim_cur: 0,
        rlim_max: 0,
    };
    // SAFETY: getrlimit writes into the rlimit given.
    if unsafe { libc::getrlimit(libc::RLIMIT_NOFILE, &mut lim) } == 0 {
        #[allow(clippy::unnecessary_cast)] // rlim_t is not u64 everywhere
        let soft = lim.rlim_cur as u64;
        soft
    } else {
        0
    }
}

/// Run the experiments and write the report; returns the path of report.md.
pub fn run(config: &LabConfig) -> io::Result<PathBuf> {
    // Every name is checked before anything runs or is written.
    let chosen: Vec<&Experiment> = if config.only.is_empty() {
        EXPERIMENTS.iter().collect()
    } else {
        let mut picked = Vec::new();
        for name in &config.only {
            picked.push(experiment(name)?);
        }
        EXPERIMENTS
            .iter()
            .filter(|e| picked.iter().any(|p| p.name == e.name))
            .collect()
    };
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
    let cpus = allowed_cpus();
    let (server_cpus, load_cpus) = match cpus.split_first() {
        Some((&first, rest)) if !rest.is_empty() => (vec![first], rest.to_vec()),
        _ => (Vec::new(), Vec::new()),
    };
    let mut ctx = Ctx {
        config: config.clone(),
        server_cpus,
        load_cpus,
        http: false,
        started: Instant::now(),
        grid: Vec::new(),
        uring_unavailable: iomux::selector::uring::probe().err().map(|e| e.to_string()),
        fd_limit: fd_limit(),
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
        "{} grid; server on cpus {:?}, load on cpus {:?} ({} client thread(s)); writing to {}",
        if config.quick { "quick" } else { "full" },
        ctx.server_cpus,
        ctx.load_cpus,
        ctx.load_threads(),
        config.out.display()
    ));
    let mut sections = Vec::new();
    for experiment in chosen {
        let (name, what) = (experiment.name, experiment.description);
        ctx.progress(format_args!("{name}: {what}"));
        let started = Instant::now();
        let section = (experiment.run)(&mut ctx).unwrap_or_else(|e| {
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
    let verdicts: Vec<Verdict> = sections.iter().flat_map(|s| s.verdicts.clone()).collect();
    write_file(&ctx.out("verdicts.csv"), &Verdict::table(&verdicts).csv())?;
    let report = render(
        &ctx,
        &machine,
        &sections,
        &verdicts,
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
    ctx: &Ctx,
    machine: &machine::Machine,
    sections: &[Section],
    verdicts: &[Verdict],
    seconds: f64,
) -> String {
    let config = &ctx.config;
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
    s += &format!("- Started: {}\n", machine.date);
    s += &format!(
        "- Descriptor limit (RLIMIT_NOFILE, soft): {}\n\n",
        ctx.fd_limit
    );
    s += &if ctx.server_cpus.is_empty() {
        "Servers and load run unpinned (this process may use one core only), so they share it.\n\n"
            .to_string()
    } else {
        format!(
            "Servers run pinned to cpu {:?} and load clients to cpus {:?} ({} client thread(s), one per core that is not the server's). For every throughput run the server's CPU time (utime + stime of its processes from /proc/PID/stat, or its threads' nanosecond schedstat where that is larger: ticks are 10 ms), the load client's (getrusage of the waited child) and both sides' core busy shares (/proc/stat) are recorded; a run is server-bound when the server's core was at least {:.0}% busy and the client's was not, client-bound the other way round. Speed verdicts read server CPU per request. The machine may be shared with other work, which shows in the busy shares.\n\n",
            ctx.server_cpus, ctx.load_cpus, ctx.load_threads(), judge::SATURATED_PCT
        )
    };
    s += "## Claims and verdicts\n\nFrom `verdicts.csv`.\n\n";
    s += &Verdict::table(verdicts).markdown();
    s.push('\n');
    for (i, sec) in sections.iter().enumerate() {
        s += &sec.markdown(i + 1);
    }
    s
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn experiments_are_found_by_name_and_an_unknown_name_is_an_error() {
        for (i, e) in EXPERIMENTS.iter().enumerate() {
            assert_eq!(experiment(e.name).unwrap().name, e.name);
            assert!(
                !EXPERIMENTS[i + 1..].iter().any(|o| o.name == e.name),
                "{} twice",
                e.name
            );
        }
        let Err(err) = experiment("nope") else {
            panic!("an unknown experiment was found");
        };
        assert_eq!(err.kind(), io::ErrorKind::InvalidInput);
        assert!(
            err.to_string().contains("choose from dispatch, syscalls"),
            "{err}"
        );
    }
}
