//! Experiment: epoll level- vs edge-triggered, from the grid's rounds (or its
//! own when the grid did not run), explained by the engine's counters.

use super::chart;
use super::engines::{Engine, ENGINES};
use super::judge;
use super::report::{Section, Table};
use super::rounds::{per_request, rounds_table, Load, Rounds};
use super::throughput::{cell, ACTIVE};
use super::Ctx;
use std::io;

pub(crate) fn run(ctx: &mut Ctx) -> io::Result<Section> {
    let epolls: Vec<Engine> = ENGINES
        .iter()
        .copied()
        .filter(|e| e.backend == "epoll")
        .collect();
    let mut notes = Vec::new();
    let mut tables = Vec::new();
    let own;
    let cells: Vec<&Rounds> = if ctx.grid.is_empty() {
        let (rounds, duration) = ctx.rounds();
        own = Rounds::run(
            ctx,
            "level_edge",
            &epolls,
            &Load::echo(ACTIVE, 0, duration),
            ctx.pick(7, rounds),
            &mut notes,
        );
        tables.push((
            "Every run of every round".into(),
            rounds_table([&own]),
            Some("level_edge_rounds.csv".to_string()),
        ));
        vec![&own]
    } else {
        ctx.grid.iter().collect()
    };
    let mut table = Table::new(&[
        "trigger",
        "proto",
        "idle",
        "rps",
        "server_cpu_us_per_req",
        "epoll_wait_per_req",
        "events_per_req",
        "reads_per_req",
        "eagain_reads_per_req",
        "writes_per_req",
    ]);
    for c in &cells {
        for &e in epolls.iter() {
            let Some(sum) = c.summary(e) else {
                continue;
            };
            let (rps, cpu) = (sum.rps, sum.cpu);
            table.push(vec![
                e.trigger.into(),
                c.load.proto.into(),
                c.load.idle.to_string(),
                format!("{:.0}", rps.median),
                format!("{:.2}", cpu.median),
                sum.per("waits"),
                sum.per("events"),
                sum.per("reads"),
                sum.per("read_eagain"),
                sum.per("writes"),
            ]);
        }
    }
    let duel = cell(&ctx.grid, "echo", 0).or(cells.first().copied());
    let (edge, level) = (Engine::of("epoll", "edge"), Engine::of("epoll", "level"));
    let mut bars = Vec::new();
    let mut verdicts = Vec::new();
    if let Some(c) = duel {
        for &e in &epolls {
            if let Some(s) = c.spread(e, |r| r.cpu_us_per_req()) {
                bars.push((e.trigger.to_string(), s));
            }
        }
        let per = |e: Engine, k: &str| per_request(c.of(e), k);
        let why = if per(edge, "read_eagain") > per(level, "read_eagain") + 0.3 {
            "edge makes more reads that end in EAGAIN (draining)."
        } else {
            "edge makes no more EAGAIN reads than level (the engine treats a short read as drained)."
        };
        verdicts.push(judge::level_edge(
            c.ratio(level, edge, |r| r.cpu_us_per_req()),
            c.runs.len(),
            &format!(
                "Requests/s, edge/level per round: {}. Per request, edge makes {:.2} reads ({:.2} of them EAGAIN) and {:.3} epoll_waits; level {:.2} reads ({:.2} EAGAIN) and {:.3} epoll_waits: {why}",
                c.ratio(level, edge, |r| r.rps)
                    .map_or("n/a".into(), |s| format!("x{:.2} (x{:.2}-x{:.2})", s.median, s.lo, s.hi)),
                per(edge, "reads"), per(edge, "read_eagain"), per(edge, "waits"),
                per(level, "reads"), per(level, "read_eagain"), per(level, "waits"),
            ),
        ));
    }
    let file = "level_edge.svg";
    chart::bars(
        &ctx.out(file),
        "epoll triggers, echo, no idle: server CPU per request",
        "server CPU microseconds per request",
        &bars,
    )?;
    if cells.iter().all(|c| {
        c.runs
            .iter()
            .flatten()
            .flatten()
            .all(|r| r.stats.is_empty())
    }) {
        notes.push("the server printed no counters when it stopped (its `iomux: stopped` line), so they are missing".into());
    }
    tables.insert(
        0,
        (
            "Counters per request over the rounds".into(),
            table,
            Some("level_edge.csv".into()),
        ),
    );
    Ok(Section {
        name: "level_edge",
        title: "epoll level- vs edge-triggered, with the engine's counters",
        method: "The epoll runs of the throughput grid's rounds (or rounds of its own if the grid did not run), with the counters the server prints when it stops (`iomux: stopped ...; reads=.. read_eagain=.. waits=..`), divided by the requests the client counted. The verdict reads server CPU per request, edge over level within each round (both of a round see the same state of the machine), and names a winner only when every round agrees.".into(),
        tables,
        charts: vec![file.into()],
        verdicts,
        notes,
    })
}
