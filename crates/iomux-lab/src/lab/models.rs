//! Experiment 7: blocking vs a thread per connection vs an event loop, under
//! the same echo load at growing connection counts.

use super::chart::{self, Series};
use super::report::{num, Section, Table, Verdict};
use super::throughput::{measure, Engine};
use super::Ctx;
use std::io;

pub(crate) fn run(ctx: &mut Ctx) -> io::Result<Section> {
    let engines = [
        Engine::new("blocking", "level"),
        Engine::new("threads", "level"),
        Engine::new("epoll", "edge"),
    ];
    let counts: Vec<usize> = ctx.pick(vec![10, 100, 1000, 5000], vec![10, 100, 1000]);
    let duration = ctx.pick(3.0, 1.0);
    let mut table = Table::new(&[
        "backend",
        "conns",
        "rps",
        "p99_us",
        "errors",
        "starved_conns",
    ]);
    let mut series = Vec::new();
    let mut notes = Vec::new();
    let mut results = Vec::new();
    for engine in engines {
        let mut points = Vec::new();
        for &n in &counts {
            if engine.backend == "blocking" && n > 1000 {
                continue;
            }
            ctx.progress(format_args!(
                "models: {} with {n} connections",
                engine.label()
            ));
            match measure(ctx, engine, "echo", n, 0, duration) {
                Ok(r) => {
                    table.push(vec![
                        engine.backend.into(),
                        n.to_string(),
                        format!("{:.0}", r.rps),
                        format!("{:.1}", r.p99_us),
                        format!("{}", r.errors),
                        format!("{}", r.starved),
                    ]);
                    points.push((n as f64, r.rps));
                    results.push((engine.backend, n, r.rps, r.starved));
                }
                Err(e) => notes.push(format!("{} with {n}: {e}", engine.label())),
            }
        }
        series.push(Series {
            label: engine.label(),
            points,
        });
    }
    notes.push("blocking is not run past 1,000 connections: it accepts one connection at a time, and the listen backlog cannot hold the rest, so the load client's connects time out.".into());
    let file = "models.svg";
    chart::lines(
        &ctx.out(file),
        "Echo throughput by I/O model",
        "connections (all active)",
        "requests per second",
        &series,
    )?;
    let get = |b: &str, n: usize| results.iter().find(|r| r.0 == b && r.1 == n);
    let (lo, hi) = (counts[0], *counts.last().unwrap());
    let mut verdicts = Vec::new();
    if let (Some(t0), Some(t1), Some(e0), Some(e1)) = (
        get("threads", lo),
        get("threads", hi),
        get("epoll", lo),
        get("epoll", hi),
    ) {
        verdicts.push(Verdict {
            claim: "thread-per-connection servers stop scaling at hundreds to thousands of connections",
            verdict: format!(
                "threads: {} req/s at {lo} connections, {} at {hi} (x{:.2}); epoll: {} -> {} (x{:.2}). {}",
                num(t0.2), num(t1.2), t1.2 / t0.2, num(e0.2), num(e1.2), e1.2 / e0.2,
                if t1.2 / t0.2 < 0.8 * (e1.2 / e0.2) { "Threads lose ground as connections grow." } else { "At these counts threads keep up on this machine." }
            ),
        });
    }
    if let Some(b) = get("blocking", 100) {
        verdicts.push(Verdict {
            claim: "a blocking server serves one client at a time",
            verdict: format!("Confirmed: with 100 connections, {} of them got no answer during the run ({} req/s, all on the served one(s)).", b.3, num(b.2)),
        });
    }
    Ok(Section {
        name: "models",
        title: "Blocking vs threads vs event loop",
        method: format!("The same closed-loop echo load (`iomux load --proto echo --conns N --duration {duration}`, 64-byte messages, one client thread) against `--backend blocking`, `threads` and `epoll`. `starved_conns` counts connections that got no answer at all during the run."),
        tables: vec![("Echo requests per second by model".into(), table, Some("models.csv".into()))],
        charts: vec![file.into()],
        verdicts,
        notes,
    })
}
