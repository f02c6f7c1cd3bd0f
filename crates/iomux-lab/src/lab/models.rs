//! Experiment: blocking vs a thread per connection vs an event loop, under
//! the same echo load at growing connection counts.

use super::chart::{self, Point, Series};
use super::engines::Engine;
use super::judge::{self, Growth};
use super::report::{Section, Table};
use super::rounds::{usual_bound, Load, Rounds};
use super::Ctx;
use std::io;

pub(crate) fn run(ctx: &mut Ctx) -> io::Result<Section> {
    let (blocking, threads, epoll) = (
        Engine::backend("blocking"),
        Engine::backend("threads"),
        Engine::epoll_edge(),
    );
    let counts: Vec<usize> = ctx.pick(vec![10, 100, 1000, 5000], vec![10, 100, 1000]);
    // The quick grid runs threads and epoll at the ends only, blocking at 100.
    let runs_at = |e: Engine, n: usize| match (ctx.config.quick, e == blocking) {
        (_, true) => n == 100 || (!ctx.config.quick && n <= 1000),
        (true, false) => n != 100,
        (false, false) => true,
    };
    // Long enough for a thread-per-connection server to start its threads:
    // in 0.4 s on one core it had not answered any of 1,000 connections.
    let (rounds, duration) = ctx.pick((ctx.rounds().0, 2.0), (2, 0.8));
    let mut notes = Vec::new();
    let mut cells = Vec::new();
    for &n in &counts {
        // blocking accepts one connection at a time: past 1,000 the backlog
        // overflows and connects time out.
        let engines: Vec<Engine> = [blocking, threads, epoll]
            .into_iter()
            .filter(|&e| runs_at(e, n))
            .collect();
        let tag = format!("models: {n} connections");
        cells.push(Rounds::run(
            ctx,
            &tag,
            &engines,
            &Load::echo(n, 0, duration),
            rounds,
            &mut notes,
        ));
    }
    let mut table = Table::new(&[
        "backend",
        "conns",
        "rps",
        "p99_us",
        "errors",
        "starved_conns",
        "server_cpu_us_per_req",
        "bound",
    ]);
    let mut series = Vec::new();
    for engine in [blocking, threads, epoll] {
        let mut points = Vec::new();
        for c in &cells {
            let runs = c.of(engine);
            let Some(rps) = c.spread(engine, |r| r.rps) else {
                continue;
            };
            let med = |f: fn(&super::rounds::Run) -> f64| {
                c.spread(engine, f).map_or(f64::NAN, |s| s.median)
            };
            table.push(vec![
                engine.backend.into(),
                c.load.conns.to_string(),
                format!("{:.0}", rps.median),
                format!("{:.1}", med(|r| r.p99_us)),
                format!("{}", med(|r| r.errors)),
                format!("{}", med(|r| r.starved)),
                format!("{:.2}", med(|r| r.cpu_us_per_req())),
                usual_bound(&runs).as_str().into(),
            ]);
            points.push(Point {
                x: c.load.conns as f64,
                y: rps,
            });
        }
        if !points.is_empty() {
            series.push(Series {
                label: engine.label(),
                points,
            });
        }
    }
    let file = "models.svg";
    chart::lines(
        &ctx.out(file),
        "Echo requests per second by I/O model (median and range)",
        "connections (all active)",
        "requests per second",
        &series,
    )?;
    let (lo, hi) = (counts[0], *counts.last().unwrap());
    let at = |e: Engine, n: usize| {
        cells
            .iter()
            .find(|c| c.load.conns == n)?
            .spread(e, |r| r.cpu_us_per_req())
    };
    let growth = |e: Engine| {
        Some(Growth {
            from_n: lo,
            to_n: hi,
            from: at(e, lo)?,
            to: at(e, hi)?,
        })
    };
    let starved = |e: Engine, n: usize| {
        cells
            .iter()
            .find(|c| c.load.conns == n)
            .and_then(|c| c.spread(e, |r| r.starved))
    };
    let verdicts = vec![
        judge::threads_scaling(
            growth(threads),
            growth(epoll),
            starved(threads, hi).map_or(0.0, |s| s.median),
            ctx.server_cpus.len().max(1),
        ),
        judge::blocking(starved(blocking, 100).map(|s| (100, s.median))),
    ];
    Ok(Section {
        name: "models",
        title: "Blocking vs threads vs event loop",
        method: format!("The same closed-loop echo load (`iomux load --proto echo --conns N --duration {duration} --threads {}`, 64-byte messages) against `--backend blocking`, `threads` and `epoll`, {rounds} rounds per count, each starting one engine later. `starved_conns` counts connections that got no answer at all during the run (median of the rounds); server CPU per request is read from /proc.", ctx.load_threads()),
        tables: vec![("Echo by model: medians of the rounds".into(), table, Some("models.csv".into()))],
        charts: vec![file.into()],
        verdicts,
        notes,
    })
}
