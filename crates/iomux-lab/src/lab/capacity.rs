//! Experiment: one event loop's best requests/s (echo and pipelined HTTP)
//! and its rate at the most connections the descriptor limit allows.

use super::engines::Engine;
use super::judge::{self, Capacity};
use super::report::{Section, Table};
use super::rounds::{rounds_table, usual_bound, Load, Rounds};
use super::throughput::{cell, ACTIVE};
use super::Ctx;
use std::io;

/// Descriptors left for everything but the connections: the server's
/// listener and loop, the load's own, and some to spare.
const HEADROOM: u64 = 500;

/// The best requests/s so far, what produced them, and the bound.
type Best = (super::report::Spread, String, judge::Bound);

/// Requests in flight per connection in the pipelined HTTP run.
const PIPELINE: usize = 16;

pub(crate) fn run(ctx: &mut Ctx) -> io::Result<Section> {
    let engine = Engine::epoll_edge();
    let (rounds, duration) = ctx.rounds();
    let mut notes = Vec::new();
    let allowed = ctx.fd_limit.saturating_sub(ACTIVE as u64 + HEADROOM) as usize;
    let quick_cap = 1000;
    let (largest_idle, largest_why) = if ctx.config.quick && allowed > quick_cap {
        (
            quick_cap,
            format!("the quick grid stops at {quick_cap} idle connections"),
        )
    } else {
        (
            allowed,
            format!(
                "the descriptor limit (getrlimit: {}) leaves room for {} connections, keeping {HEADROOM} descriptors spare",
                ctx.fd_limit,
                allowed + ACTIVE
            ),
        )
    };
    let mut cells: Vec<Rounds> = Vec::new();
    let mut loads = Vec::new();
    if cell(&ctx.grid, "echo", 0).is_none() {
        loads.push(Load::echo(ACTIVE, 0, duration));
    }
    if ctx.http {
        loads.push(Load {
            proto: "http",
            conns: ACTIVE,
            idle: 0,
            pipeline: PIPELINE,
            duration,
        });
    }
    if largest_idle > 0 {
        loads.push(Load::echo(ACTIVE, largest_idle, duration));
    }
    for load in loads {
        let tag = format!(
            "capacity {} pipeline={} idle={}",
            load.proto, load.pipeline, load.idle
        );
        cells.push(Rounds::run(ctx, &tag, &[engine], &load, rounds, &mut notes));
    }
    let all: Vec<&Rounds> = cell(&ctx.grid, "echo", 0)
        .into_iter()
        .chain(cells.iter())
        .collect();
    let mut table = Table::new(&[
        "proto",
        "pipeline",
        "conns",
        "idle",
        "rps",
        "rps_min",
        "rps_max",
        "server_cpu_us_per_req",
        "rounds",
        "bound",
    ]);
    let mut best = None;
    for c in &all {
        let Some(sum) = c.summary(engine) else {
            continue;
        };
        let (runs, rps, cpu) = (&sum.runs, sum.rps, sum.cpu);
        table.push(vec![
            c.load.proto.into(),
            c.load.pipeline.to_string(),
            c.load.conns.to_string(),
            c.load.idle.to_string(),
            format!("{:.0}", rps.median),
            format!("{:.0}", rps.lo),
            format!("{:.0}", rps.hi),
            format!("{:.2}", cpu.median),
            runs.len().to_string(),
            usual_bound(runs).as_str().into(),
        ]);
        if c.load.idle == 0
            && !best
                .as_ref()
                .is_some_and(|b: &Best| rps.median <= b.0.median)
        {
            best = Some((
                rps,
                format!(
                    "{} {}, {} connections, pipeline {}, {} rounds",
                    engine.label(),
                    c.load.proto,
                    c.load.conns,
                    c.load.pipeline,
                    runs.len(),
                ),
                usual_bound(runs),
            ));
        }
    }
    let largest = all
        .iter()
        .filter(|c| c.load.idle == largest_idle && largest_idle > 0)
        .find_map(|c| Some((c.load.conns + c.load.idle, c.spread(engine, |r| r.rps)?)));
    let verdict = judge::single_thread(&Capacity {
        best,
        largest,
        largest_why,
    });
    Ok(Section {
        name: "capacity",
        title: "One loop's capacity",
        method: format!(
            "`iomux serve --backend epoll --trigger edge` (one loop) under echo with {ACTIVE} active connections, pipelined HTTP (`iomux load --proto http --pipeline {PIPELINE}`, GET /plaintext) and echo with {ACTIVE} active plus the most idle connections the descriptor limit allows (getrlimit RLIMIT_NOFILE: {}), {rounds} rounds each.",
            ctx.fd_limit
        ),
        tables: vec![
            ("Requests per second, medians and ranges of the rounds".into(), table, Some("capacity.csv".into())),
            ("Every run".into(), rounds_table(cells.iter()), Some("capacity_rounds.csv".into())),
        ],
        charts: Vec::new(),
        verdicts: vec![verdict],
        notes,
    })
}
