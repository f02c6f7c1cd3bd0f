//! Experiment: throughput on every engine with idle connections, as rounds
//! of one run per engine for each load (the grid), with the server's CPU per
//! request; the newer models (sigio, io_uring) against epoll edge read the
//! same rounds.

use super::chart::{self, Point, Series};
use super::engines::{Engine, ENGINES};
use super::judge::{self, Growth};
use super::report::{num, Section, Table, Verdict};
use super::rounds::{bounds_text, per_request, rounds_table, usual_bound, Load, Rounds};
use super::Ctx;
use crate::dispatch::SELECT_MAX_FDS;
use std::io;

/// Active connections in every grid run.
pub(crate) const ACTIVE: usize = 100;

/// The busy-polling engine reads every connection on every pass: past this
/// many idle ones a run takes tens of seconds just to accept them.
const NONBLOCKING_MAX_IDLE: usize = 1000;

/// Idle connections in the full grid.
const IDLES: [usize; 4] = [0, 1000, 5000, 9000];

/// The engines of one grid cell, or none to skip it.
fn cell_engines(ctx: &Ctx, proto: &str, idle: usize) -> Vec<Engine> {
    let quick = ctx.config.quick;
    // Quick grid: echo only (the capacity experiment has an HTTP figure);
    // the full grid's HTTP runs without idle connections.
    if proto == "http" && (quick || idle > 0) {
        return Vec::new();
    }
    ENGINES
        .iter()
        .copied()
        .filter(|e| !(e.needs_uring() && ctx.uring_unavailable.is_some()))
        .filter(|e| !(e.is_select() && idle + ACTIVE > SELECT_MAX_FDS * 2))
        .filter(|e| !(e.is_blocking() && idle > 0))
        .filter(|e| !(e.backend == "nonblocking" && idle > NONBLOCKING_MAX_IDLE))
        .filter(|e| {
            !quick
                || !e.is_blocking()
                    && e.backend != "nonblocking"
                    && e.trigger != "oneshot"
                    && (!e.is_newer() || idle == 0)
        })
        .collect()
}

/// The grid's cell for `proto` and `idle`.
pub(crate) fn cell<'a>(grid: &'a [Rounds], proto: &str, idle: usize) -> Option<&'a Rounds> {
    grid.iter()
        .find(|c| c.load.proto == proto && c.load.idle == idle && c.load.pipeline == 1)
}

/// Server CPU per request of `engine` from the least to the most idle connections.
fn cpu_growth(grid: &[Rounds], engine: Engine, idles: &[usize]) -> Option<Growth> {
    let at = |idle: usize| cell(grid, "echo", idle)?.spread(engine, |r| r.cpu_us_per_req());
    let (lo, hi) = (*idles.first()?, *idles.last()?);
    Some(Growth {
        from_n: lo,
        to_n: hi,
        from: at(lo)?,
        to: at(hi)?,
    })
}

pub(crate) fn run(ctx: &mut Ctx) -> io::Result<Section> {
    let idles: Vec<usize> = ctx.pick(IDLES.to_vec(), vec![0, 1000]);
    let (rounds, duration) = ctx.rounds();
    let mut protos = vec!["echo"];
    if ctx.http {
        protos.push("http");
    }
    let mut notes: Vec<String> = ctx
        .uring_skipped("The uring (completion) engine")
        .into_iter()
        .collect();
    let mut grid = Vec::new();
    for &proto in &protos {
        for &idle in &idles {
            let engines = cell_engines(ctx, proto, idle);
            if engines.is_empty() {
                continue;
            }
            // The cell the head-to-head verdicts read gets more rounds.
            let count = if proto == "echo" && idle == 0 {
                ctx.pick(7, rounds)
            } else {
                rounds
            };
            let load = Load {
                proto,
                conns: ACTIVE,
                idle,
                pipeline: 1,
                duration,
            };
            let tag = format!("throughput {proto} idle={idle}");
            grid.push(Rounds::run(ctx, &tag, &engines, &load, count, &mut notes));
        }
    }
    let mut table = Table::new(&[
        "backend",
        "trigger",
        "proto",
        "conns",
        "idle",
        "rps",
        "p99_us",
        "server_cpu_us_per_req",
        "server_busy_pct",
        "client_busy_pct",
        "rps_min",
        "rps_max",
        "server_cpu_min",
        "server_cpu_max",
        "rounds",
        "bound",
        "client_cpu_us_per_req",
    ]);
    let mut errors = Table::new(&["backend", "trigger", "proto", "idle", "requests", "errors"]);
    for c in &grid {
        for &engine in &c.engines {
            let Some(sum) = c.summary(engine) else {
                continue;
            };
            let (runs, rps, cpu) = (&sum.runs, sum.rps, sum.cpu);
            let med = |f: fn(&super::rounds::Run) -> f64| {
                c.spread(engine, f).map_or(f64::NAN, |s| s.median)
            };
            table.push(vec![
                engine.backend.into(),
                engine.trigger.into(),
                c.load.proto.into(),
                ACTIVE.to_string(),
                c.load.idle.to_string(),
                format!("{:.0}", rps.median),
                format!("{:.1}", med(|r| r.p99_us)),
                format!("{:.2}", cpu.median),
                format!("{:.0}", med(|r| r.server_busy_pct)),
                format!("{:.0}", med(|r| r.client_busy_pct)),
                format!("{:.0}", rps.lo),
                format!("{:.0}", rps.hi),
                format!("{:.2}", cpu.lo),
                format!("{:.2}", cpu.hi),
                runs.len().to_string(),
                usual_bound(runs).as_str().into(),
                format!("{:.2}", med(|r| r.client_cpu_us_per_req())),
            ]);
            let (requests, errs) = runs
                .iter()
                .fold((0.0, 0.0), |(q, e), r| (q + r.requests, e + r.errors));
            if errs > 0.0 {
                errors.push(vec![
                    engine.backend.into(),
                    engine.trigger.into(),
                    c.load.proto.into(),
                    c.load.idle.to_string(),
                    format!("{requests}"),
                    format!("{errs}"),
                ]);
            }
        }
    }
    notes.push(format!("select is not run with {} or more connections: both the server's and the load's descriptors count, and descriptor numbers would pass FD_SETSIZE (1024), which iomux's select engine refuses.", SELECT_MAX_FDS * 2));
    if !ctx.config.quick {
        notes.push(format!("nonblocking (busy-polling every connection) is not run with more than {NONBLOCKING_MAX_IDLE} idle connections: it reads every connection on every pass, so accepting thousands of idle ones takes tens of seconds (17 s at 5,000 when this limit was set)."));
    }
    if grid
        .iter()
        .any(|c| c.engines.iter().any(Engine::is_blocking))
    {
        notes.push(format!("blocking serves one connection at a time: with {ACTIVE} active connections one is served and the others wait; it is not run with idle connections, which it would block on for ever."));
    }
    let echo_engines: Vec<Engine> = ENGINES
        .iter()
        .copied()
        .filter(|e| {
            grid.iter()
                .any(|c| c.load.proto == "echo" && !c.of(*e).is_empty())
        })
        .collect();
    let series = |f: fn(&super::rounds::Run) -> f64| -> Vec<Series> {
        echo_engines
            .iter()
            .map(|&e| Series {
                label: e.label(),
                points: grid
                    .iter()
                    .filter(|c| c.load.proto == "echo")
                    .filter_map(|c| {
                        Some(Point {
                            x: c.load.idle as f64,
                            y: c.spread(e, f)?,
                        })
                    })
                    .collect(),
            })
            .collect()
    };
    let (rps_file, cpu_file) = ("throughput.svg", "throughput_cpu.svg");
    chart::lines(
        &ctx.out(rps_file),
        &format!("Echo, {ACTIVE} active: requests per second (median and range of rounds)"),
        "idle connections",
        "requests per second",
        &series(|r| r.rps),
    )?;
    chart::lines(
        &ctx.out(cpu_file),
        &format!("Echo, {ACTIVE} active: server CPU per request (median and range)"),
        "idle connections",
        "server CPU microseconds per request",
        &series(|r| r.cpu_us_per_req()),
    )?;
    let mut verdicts = Vec::new();
    let poll = Engine::backend("poll");
    let epoll = Engine::epoll_edge();
    let rps_at = |e: Engine, idle: usize| {
        cell(&grid, "echo", idle)
            .and_then(|c| c.spread(e, |r| r.rps))
            .map_or("n/a".into(), |s| s.text())
    };
    let (lo, hi) = (idles[0], *idles.last().unwrap());
    let bound_at = |e: Engine, idle: usize| {
        cell(&grid, "echo", idle).map_or(String::new(), |c| bounds_text(&c.of(e)))
    };
    verdicts.push(judge::idle_slowdown(
        cpu_growth(&grid, poll, &idles),
        cpu_growth(&grid, epoll, &idles),
        &format!(
            "Requests/s from {lo} to {hi} idle: poll {} -> {} ({}); epoll edge {} -> {} ({}).",
            rps_at(poll, lo),
            rps_at(poll, hi),
            bound_at(poll, hi),
            rps_at(epoll, lo),
            rps_at(epoll, hi),
            bound_at(epoll, hi),
        ),
    ));
    let (counters, newer) = newer_models(ctx, &grid);
    verdicts.extend(newer);
    let mut tables = vec![
        (
            "Requests per second, p99 latency (us) and server CPU per request (us): medians of the rounds, with ranges".into(),
            table,
            Some("throughput.csv".to_string()),
        ),
        (
            "Every run of every round (order 1 ran first in its round)".into(),
            rounds_table(&grid),
            Some("throughput_rounds.csv".to_string()),
        ),
    ];
    if let Some(counters) = counters {
        tables.push((
            "The newer models beside epoll edge: the engine's counters per request over the rounds (echo, no idle connections)".into(),
            counters,
            Some("newer_models.csv".to_string()),
        ));
    }
    if !errors.rows.is_empty() {
        tables.push((
            "Runs with errors (timeouts, resets) counted by the load client, over all rounds"
                .into(),
            errors,
            None,
        ));
    }
    ctx.grid = grid;
    Ok(Section {
        name: "throughput",
        title: "Throughput with idle connections",
        method: format!(
            "For each load, rounds of one run per engine, each round starting one engine later: `iomux serve --backend B [--trigger T] --proto P`; a separate `iomux load --conns 0 --idle I` opens the idle connections and holds them; once the server holds them, `iomux load --conns {ACTIVE} --duration {duration} --threads {}` (closed loop, pipeline 1, 64-byte echo messages or GET /plaintext) is timed while the server's CPU time and the cores' busy shares are read. {rounds} rounds per load ({} for echo without idle connections, which the head-to-head verdicts read). `sigio` is the event loop with readiness from signal-driven I/O (O_ASYNC, one real-time signal per readiness change, read from a signalfd; edge only). `uring` is the completion engine (trigger column `completion`): the kernel does the receives and the sends, so its `waits` are `io_uring_enter` calls.",
            ctx.load_threads(),
            ctx.pick(7, rounds),
        ),
        tables,
        charts: vec![rps_file.into(), cpu_file.into()],
        verdicts,
        notes,
    })
}

/// The counters table and the verdicts for the two newer models beside
/// epoll edge, from the grid's echo cell without idle connections.
fn newer_models(ctx: &Ctx, grid: &[Rounds]) -> (Option<Table>, Vec<Verdict>) {
    let Some(c) = cell(grid, "echo", 0) else {
        return (None, Vec::new());
    };
    let epoll = Engine::epoll_edge();
    let newer: Vec<Engine> = ENGINES.iter().copied().filter(Engine::is_newer).collect();
    let mut table = Table::new(&[
        "backend",
        "trigger",
        "rps",
        "server_cpu_us_per_req",
        "waits_per_req",
        "events_per_req",
        "reads_per_req",
        "writes_per_req",
    ]);
    for engine in std::iter::once(epoll).chain(newer.iter().copied()) {
        let Some(sum) = c.summary(engine) else {
            continue;
        };
        let (rps, cpu) = (sum.rps, sum.cpu);
        table.push(vec![
            engine.backend.into(),
            engine.trigger.into(),
            format!("{:.0}", rps.median),
            format!("{:.2}", cpu.median),
            sum.per("waits"),
            sum.per("events"),
            sum.per("reads"),
            sum.per("writes"),
        ]);
    }
    let per = |e: Engine, k: &str| per_request(c.of(e), k);
    let rounds = c.runs.len();
    let mut verdicts = Vec::new();
    for engine in newer {
        let cpu_ratio = c.ratio(epoll, engine, |r| r.cpu_us_per_req());
        let rps = |e: Engine| c.spread(e, |r| r.rps).map_or("n/a".into(), |s| s.text());
        let rps_ratio = c.ratio(epoll, engine, |r| r.rps).map_or("n/a".into(), |s| {
            format!("x{:.2} (x{:.2}-x{:.2})", s.median, s.lo, s.hi)
        });
        let common = format!(
            "Echo, {ACTIVE} active, no idle, {rounds} rounds: {} {} req/s vs epoll edge {} (per-round ratio {rps_ratio}; {}).",
            engine.label(),
            rps(engine),
            rps(epoll),
            bounds_text(&c.of(engine)),
        );
        if engine.needs_uring() {
            let result = match &ctx.uring_unavailable {
                Some(why) => Err(why.clone()),
                // Failed measurements are no evidence either way: named in the notes.
                None => Ok((
                    c.of(engine).iter().filter(|r| r.requests > 0.0).count(),
                    c.of(engine).len(),
                )),
            };
            let cpu = cpu_ratio.map_or(String::new(), |s| {
                format!(
                    " Server CPU per request against epoll edge's: x{:.2} (x{:.2}-x{:.2}).",
                    s.median, s.lo, s.hi
                )
            });
            verdicts.push(judge::uring(
                result,
                &format!(
                    "{common}{cpu} {:.3} io_uring_enter calls per request against epoll's {:.3} epoll_waits plus {:.2} reads and {:.2} writes.",
                    per(engine, "waits"),
                    per(epoll, "waits"),
                    per(epoll, "reads"),
                    per(epoll, "writes")
                ),
            ));
        } else {
            verdicts.push(judge::sigio(
                cpu_ratio,
                c.served_every_measured_round(engine),
                &format!(
                    "{common} Readiness taken synchronously: a real-time signal carries the descriptor and is read from a signalfd; {:.2} events and {:.3} waits per request against epoll's {} events and {:.3} waits.",
                    per(engine, "events"),
                    per(engine, "waits"),
                    num(per(epoll, "events")),
                    per(epoll, "waits")
                ),
            ));
        }
    }
    (Some(table), verdicts)
}
