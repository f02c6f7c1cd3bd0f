//! One throughput run (a server, a load, the server's counters and CPU) and
//! rounds of runs: one run per engine in each round, each round starting one
//! engine later, so all of a round see the same state of a machine whose
//! speed drifts over minutes and none always runs first.

use super::cpu::{waited_children_seconds, CoreTimes, CpuSample};
use super::engines::Engine;
use super::judge::Bound;
use super::report::{Spread, Table};
use super::Ctx;
use std::io;
use std::time::Duration;

/// The positions `0..n` in the order round `round` runs them: each round
/// starts one later than the one before.
pub(crate) fn rotated(round: usize, n: usize) -> impl Iterator<Item = usize> {
    (0..n).map(move |k| (round + k) % n)
}

/// The load of a run: `iomux load --proto P --conns N --pipeline D` for
/// `duration` seconds with `idle` silent connections held open beside.
#[derive(Debug, Clone, Copy, PartialEq)]
pub(crate) struct Load {
    pub proto: &'static str,
    pub conns: usize,
    pub idle: usize,
    pub pipeline: usize,
    pub duration: f64,
}

impl Load {
    pub(crate) fn echo(conns: usize, idle: usize, duration: f64) -> Load {
        Load {
            proto: "echo",
            conns,
            idle,
            pipeline: 1,
            duration,
        }
    }
}

/// One measured run.
#[derive(Debug, Clone)]
pub(crate) struct Run {
    pub rps: f64,
    pub p99_us: f64,
    pub requests: f64,
    pub errors: f64,
    pub starved: f64,
    /// The server's counters from its stop line.
    pub stats: Vec<(String, u64)>,
    /// The server's CPU time (user + system) over the timed load.
    pub server_cpu_s: f64,
    /// The load client's CPU time.
    pub client_cpu_s: f64,
    pub server_busy_pct: f64,
    pub client_busy_pct: f64,
}

impl Run {
    pub(crate) fn stat(&self, key: &str) -> f64 {
        self.stats
            .iter()
            .find(|(k, _)| k == key)
            .map_or(f64::NAN, |(_, v)| *v as f64)
    }

    /// Server CPU microseconds per request the client counted.
    pub(crate) fn cpu_us_per_req(&self) -> f64 {
        self.us_per_req(self.server_cpu_s)
    }

    /// Client CPU microseconds per request.
    pub(crate) fn client_cpu_us_per_req(&self) -> f64 {
        self.us_per_req(self.client_cpu_s)
    }

    fn us_per_req(&self, seconds: f64) -> f64 {
        if self.requests > 0.0 {
            seconds * 1e6 / self.requests
        } else {
            f64::NAN
        }
    }

    pub(crate) fn bound(&self) -> Bound {
        Bound::of(self.server_busy_pct, self.client_busy_pct)
    }
}

/// Counter `key` of the server per request the client counted, over `runs`
/// together.
pub(crate) fn per_request<'a>(runs: impl IntoIterator<Item = &'a Run>, key: &str) -> f64 {
    let (n, requests) = runs
        .into_iter()
        .fold((0.0, 0.0), |(n, q), r| (n + r.stat(key), q + r.requests));
    n / f64::max(requests, 1.0)
}

/// Start a server, open the idle connections (a separate load process holds
/// them), then time the active load while reading the server's CPU time and
/// the cores' busy shares; stop the server and keep its counters.
pub(crate) fn measure(ctx: &Ctx, engine: Engine, load: &Load) -> io::Result<Run> {
    let mut args = engine.args();
    args.extend(["--proto", load.proto]);
    let mut server = ctx.server(&args)?;
    let mut holder = None;
    if load.idle > 0 {
        let fds = server.fd_count();
        let idle = load.idle.to_string();
        holder = Some(ctx.spawn_load(
            server.addr,
            &[
                "--proto",
                load.proto,
                "--conns",
                "0",
                "--idle",
                &idle,
                "--duration",
                "600",
                "--timeout",
                "60",
            ],
        )?);
        // Thousands of connects overflow the listen backlog; the dropped
        // SYNs are retried after 1, 3, 7... seconds.
        if !server.wait_for_fds(fds + load.idle, Duration::from_secs(120)) {
            if let Some(mut h) = holder {
                let _ = h.kill();
                let _ = h.wait();
            }
            let _ = server.stop();
            return Err(io::Error::other(format!(
                "the server did not hold {} idle connections within 120 s",
                load.idle
            )));
        }
    }
    let threads = ctx.load_threads().to_string();
    let (c, p, d) = (
        load.conns.to_string(),
        load.pipeline.to_string(),
        load.duration.to_string(),
    );
    let cpu0 = CpuSample::of(server.pid());
    let cores0 = CoreTimes::now();
    let client0 = waited_children_seconds();
    let result = ctx.load(
        server.addr,
        &[
            "--proto",
            load.proto,
            "--conns",
            &c,
            "--pipeline",
            &p,
            "--duration",
            &d,
            "--threads",
            &threads,
            "--timeout",
            "2",
        ],
    );
    let client1 = waited_children_seconds();
    let cores1 = CoreTimes::now();
    let cpu1 = CpuSample::of(server.pid());
    if let Some(mut h) = holder {
        let _ = h.kill();
        let _ = h.wait();
    }
    let stats = server.stop()?;
    let result = result?;
    Ok(Run {
        rps: result.get("rps"),
        p99_us: result.get("p99"),
        requests: result.get("requests"),
        errors: result.get("errors"),
        starved: result.get("starved"),
        stats,
        server_cpu_s: match (cpu0, cpu1) {
            (Ok(a), Ok(b)) => a.until(&b),
            _ => f64::NAN,
        },
        client_cpu_s: client1 - client0,
        server_busy_pct: cores0.busy_pct(&cores1, &ctx.server_cpus),
        client_busy_pct: cores0.busy_pct(&cores1, &ctx.load_cpus),
    })
}

/// How the report and the rounds CSV name a run that gave no figures.
pub(crate) const FAILED: &str = "failed measurement";

/// A run that served nothing says nothing about the server: a short run
/// on a starved machine can end before the first answer. Such a run (not
/// `served`) is tried once more (`retrying` is told); a second empty one,
/// or an error, is a failed measurement, returned as the reason, never a
/// data point of 0.
pub(crate) fn measure_served<T>(
    mut run: impl FnMut() -> io::Result<T>,
    served: impl Fn(&T) -> bool,
    retrying: impl FnOnce(),
    seconds: impl std::fmt::Display,
) -> Result<T, String> {
    let mut retrying = Some(retrying);
    loop {
        match run() {
            Ok(r) if served(&r) => return Ok(r),
            Ok(_) => match retrying.take() {
                Some(told) => told(),
                None => return Err(format!(
                    "served nothing in two runs of {seconds} s each (a starved machine?); left out of the medians and charts"
                )),
            },
            Err(e) => return Err(e.to_string()),
        }
    }
}

/// One engine's runs in some rounds: requests/s and server CPU per request
/// (median and range).
pub(crate) struct Summary<'a> {
    pub runs: Vec<&'a Run>,
    pub rps: Spread,
    pub cpu: Spread,
}

impl Summary<'_> {
    /// Counter `key` per request over the runs, formatted for a table.
    pub(crate) fn per(&self, key: &str) -> String {
        format!("{:.3}", per_request(self.runs.iter().copied(), key))
    }
}

/// Rounds of one run per engine under one load.
#[derive(Debug, Clone)]
pub(crate) struct Rounds {
    pub engines: Vec<Engine>,
    pub load: Load,
    /// `runs[round][k]`: engine `k`'s run in that round (`None`: a failed
    /// measurement, its reason in the notes).
    pub runs: Vec<Vec<Option<Run>>>,
}

impl Rounds {
    /// Run `count` rounds of `engines` under `load`; failures become notes.
    pub(crate) fn run(
        ctx: &Ctx,
        tag: &str,
        engines: &[Engine],
        load: &Load,
        count: usize,
        notes: &mut Vec<String>,
    ) -> Rounds {
        let mut runs = Vec::new();
        for round in 0..count {
            let mut got: Vec<Option<Run>> = vec![None; engines.len()];
            for at in rotated(round, engines.len()) {
                let engine = engines[at];
                ctx.round_progress(tag, round, count, engine.label());
                let retrying = || {
                    ctx.round_progress(
                        tag,
                        round,
                        count,
                        format_args!("{}: served nothing, trying once more", engine.label()),
                    )
                };
                let served = |r: &Run| r.requests > 0.0;
                let run = || measure(ctx, engine, load);
                match measure_served(run, served, retrying, load.duration) {
                    Ok(r) => got[at] = Some(r),
                    Err(why) => notes.push(format!(
                        "{tag}, round {}: {}: {FAILED}: {why}",
                        round + 1,
                        engine.label()
                    )),
                }
            }
            runs.push(got);
        }
        Rounds {
            engines: engines.to_vec(),
            load: *load,
            runs,
        }
    }

    fn index(&self, engine: Engine) -> Option<usize> {
        self.engines.iter().position(|e| *e == engine)
    }

    /// `engine`'s runs (those that did not fail).
    pub(crate) fn of(&self, engine: Engine) -> Vec<&Run> {
        let Some(k) = self.index(engine) else {
            return Vec::new();
        };
        self.runs.iter().filter_map(|r| r[k].as_ref()).collect()
    }

    /// `engine`'s runs and their spreads, or `None` when it has none.
    pub(crate) fn summary(&self, engine: Engine) -> Option<Summary<'_>> {
        Some(Summary {
            rps: self.spread(engine, |r| r.rps)?,
            cpu: self.spread(engine, |r| r.cpu_us_per_req())?,
            runs: self.of(engine),
        })
    }

    /// The spread of `f` over `engine`'s runs.
    pub(crate) fn spread(&self, engine: Engine, f: impl Fn(&Run) -> f64) -> Option<Spread> {
        Spread::of(&self.of(engine).into_iter().map(f).collect::<Vec<_>>())
    }

    /// The spread of the per-round ratios `f(b) / f(a)` over the rounds
    /// where both ran.
    pub(crate) fn ratio(&self, a: Engine, b: Engine, f: impl Fn(&Run) -> f64) -> Option<Spread> {
        let (ia, ib) = (self.index(a)?, self.index(b)?);
        let ratios: Vec<f64> = self
            .runs
            .iter()
            .filter_map(|r| Some(f(r[ib].as_ref()?) / f(r[ia].as_ref()?)))
            .collect();
        Spread::of(&ratios)
    }

    /// `engine` was measured at least once and served in every round it
    /// was measured in: a failed measurement is no evidence either way.
    pub(crate) fn served_every_measured_round(&self, engine: Engine) -> bool {
        let runs = self.of(engine);
        !runs.is_empty() && runs.iter().all(|r| r.requests > 0.0)
    }

    /// Rows of the long table (see [`rounds_table`]).
    fn rows(&self, table: &mut Table) {
        let n = self.engines.len();
        for (round, runs) in self.runs.iter().enumerate() {
            for (at, r) in runs.iter().enumerate() {
                let order = (at + n - round % n) % n + 1;
                let engine = self.engines[at];
                let mut row = vec![
                    self.load.proto.into(),
                    self.load.idle.to_string(),
                    (round + 1).to_string(),
                    order.to_string(),
                    engine.backend.into(),
                    engine.trigger.into(),
                ];
                match r {
                    Some(r) => row.extend([
                        format!("{:.0}", r.rps),
                        format!("{:.2}", r.cpu_us_per_req()),
                        format!("{:.2}", r.client_cpu_us_per_req()),
                        format!("{:.0}", r.server_busy_pct),
                        format!("{:.0}", r.client_busy_pct),
                        "measured".into(),
                    ]),
                    // No figures rather than zeros: a failed run is no data point.
                    None => {
                        row.extend(std::iter::repeat(String::new()).take(5));
                        row.push(FAILED.into());
                    }
                }
                table.push(row);
            }
        }
    }
}

/// Every run of `cells`, one row each:
/// `proto,idle,round,order,backend,trigger,rps,server_cpu_us_per_req,client_cpu_us_per_req,server_busy_pct,client_busy_pct,status`
/// (`order` 1 ran first in its round; `status` is `measured`, or [`FAILED`]
/// with the figures left empty).
pub(crate) fn rounds_table<'a>(cells: impl IntoIterator<Item = &'a Rounds>) -> Table {
    let mut table = Table::new(&[
        "proto",
        "idle",
        "round",
        "order",
        "backend",
        "trigger",
        "rps",
        "server_cpu_us_per_req",
        "client_cpu_us_per_req",
        "server_busy_pct",
        "client_busy_pct",
        "status",
    ]);
    for cell in cells {
        cell.rows(&mut table);
    }
    table
}

/// "server-bound in 3 of 3 rounds" style summary of the runs' bounds.
pub(crate) fn bounds_text(runs: &[&Run]) -> String {
    let mut counts: Vec<(Bound, usize)> = Vec::new();
    for r in runs {
        match counts.iter_mut().find(|(b, _)| *b == r.bound()) {
            Some((_, n)) => *n += 1,
            None => counts.push((r.bound(), 1)),
        }
    }
    counts
        .iter()
        .map(|(b, n)| format!("{} in {n} of {}", b.as_str(), runs.len()))
        .collect::<Vec<_>>()
        .join(", ")
}

/// The bound most of `runs` had (ties: the first seen).
pub(crate) fn usual_bound(runs: &[&Run]) -> Bound {
    let mut best = (Bound::Neither, 0);
    for r in runs {
        let n = runs.iter().filter(|x| x.bound() == r.bound()).count();
        if n > best.1 {
            best = (r.bound(), n);
        }
    }
    best.0
}

#[cfg(test)]
mod tests {
    use super::{measure_served, rotated, Run};
    use std::cell::Cell;
    use std::io;

    fn served(requests: f64) -> Run {
        Run {
            rps: requests / 0.3,
            p99_us: 1.0,
            requests,
            errors: 0.0,
            starved: 0.0,
            stats: Vec::new(),
            server_cpu_s: 0.1,
            client_cpu_s: 0.1,
            server_busy_pct: 50.0,
            client_busy_pct: 50.0,
        }
    }

    /// Runs `results` in turn through `measure_served`: what it gave, how
    /// many runs it took and whether it said it was retrying.
    fn outcome(results: Vec<io::Result<Run>>) -> (Result<Run, String>, usize, bool) {
        let mut results = results.into_iter();
        let (runs, retried) = (Cell::new(0), Cell::new(false));
        let got = measure_served(
            || {
                runs.set(runs.get() + 1);
                results.next().expect("no more than two runs")
            },
            |r: &Run| r.requests > 0.0,
            || retried.set(true),
            0.3,
        );
        (got, runs.get(), retried.get())
    }

    #[test]
    fn a_run_that_served_is_kept_without_a_retry() {
        let (got, runs, retried) = outcome(vec![Ok(served(500.0))]);
        assert_eq!(got.unwrap().requests, 500.0);
        assert_eq!((runs, retried), (1, false));
    }

    #[test]
    fn an_empty_run_is_tried_once_more_and_the_second_kept() {
        let (got, runs, retried) = outcome(vec![Ok(served(0.0)), Ok(served(40.0))]);
        assert_eq!(got.unwrap().requests, 40.0);
        assert_eq!((runs, retried), (2, true));
    }

    #[test]
    fn two_empty_runs_are_a_failed_measurement_not_a_zero() {
        let (got, runs, _) = outcome(vec![Ok(served(0.0)), Ok(served(0.0))]);
        let why = got.unwrap_err();
        assert!(why.contains("served nothing in two runs of 0.3 s"), "{why}");
        assert_eq!(runs, 2);
    }

    #[test]
    fn an_error_is_a_failed_measurement_without_a_retry() {
        let (got, runs, retried) = outcome(vec![Err(io::Error::other("no server"))]);
        assert_eq!(got.unwrap_err(), "no server");
        assert_eq!((runs, retried), (1, false));
    }

    #[test]
    fn each_round_starts_one_later_and_runs_every_position_once() {
        let order = |round| rotated(round, 3).collect::<Vec<_>>();
        assert_eq!(order(0), [0, 1, 2]);
        assert_eq!(order(1), [1, 2, 0]);
        assert_eq!(order(5), [2, 0, 1]);
        assert_eq!(rotated(4, 0).count(), 0);
    }
}
