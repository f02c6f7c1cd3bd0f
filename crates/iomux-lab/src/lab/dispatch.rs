//! Experiment 1: the libevent dispatch benchmark over select, poll and epoll,
//! and the two newer readiness sources, signal-driven I/O and io_uring poll.

use super::chart::{self, Point, Series};
use super::judge::{self, Growth};
use super::report::{Section, Spread, Table};
use super::Ctx;
use crate::dispatch::{measure_repeats, SELECT_MAX_FDS};
use iomux::{Backend, Trigger};
use std::io;

const MODES: [(Backend, Trigger); 6] = [
    (Backend::Select, Trigger::Level),
    (Backend::Poll, Trigger::Level),
    (Backend::Epoll, Trigger::Level),
    (Backend::Epoll, Trigger::Edge),
    (Backend::Sigio, Trigger::Edge),
    (Backend::Uring, Trigger::Edge),
];

/// The newer readiness sources, measured at one point only in the quick grid.
fn is_newer(backend: Backend) -> bool {
    matches!(backend, Backend::Sigio | Backend::Uring)
}

/// The selector's name as `iomux serve --backend` spells it: the io_uring
/// selector is `uring-poll` (`uring` is the completion engine).
fn selector_name(backend: Backend) -> &'static str {
    match backend {
        Backend::Select => "select",
        Backend::Poll => "poll",
        Backend::Epoll => "epoll",
        Backend::Sigio => "sigio",
        Backend::Uring => "uring-poll",
        _ => "another selector",
    }
}

/// Why epoll's pass grows with registered descriptors at 100 active: not
/// measured here (no hardware counters are read).
const EPOLL_GROWTH_WHY: &str = "unknown: not measured here (no hardware counters were read). One candidate is the cache: 100 active pairs round robin over more pairs touch more socket memory per pass.";

pub(crate) fn run(ctx: &mut Ctx) -> io::Result<Section> {
    let sizes: Vec<usize> = ctx.pick(
        vec![100, 250, 496, 1000, 2500, 5000, 7500, 9000],
        vec![100, 496, 2000, 5000],
    );
    let actives = [1usize, 100];
    let repeats = 3;
    let mut table = Table::new(&[
        "backend",
        "trigger",
        "fds",
        "active",
        "usec_per_pass",
        "usec_min",
        "usec_max",
    ]);
    // Microseconds per pass by (mode, fds, active): median and range of the repeats.
    let mut results: Vec<(Backend, Trigger, usize, usize, Spread)> = Vec::new();
    let notes: Vec<String> = ctx
        .uring_skipped("The uring-poll selector")
        .into_iter()
        .collect();
    let mut charts = Vec::new();
    for &active in &actives {
        let mut series = Vec::new();
        for (backend, trigger) in MODES {
            if backend == Backend::Uring && ctx.uring_unavailable.is_some() {
                continue;
            }
            let name = selector_name(backend);
            let mut points = Vec::new();
            for &fds in &sizes {
                if active > fds || (backend == Backend::Select && fds > SELECT_MAX_FDS) {
                    continue;
                }
                // Quick grid: the newer selectors at one point (the smallest size, all active).
                if ctx.config.quick
                    && is_newer(backend)
                    && (fds != sizes[0] || active != *actives.last().unwrap())
                {
                    continue;
                }
                // Enough passes for a stable mean without letting the large, slow cases dominate.
                let passes = ctx.pick(
                    (400_000 / fds).clamp(200, 4000),
                    (50_000 / fds).clamp(30, 500),
                );
                let times: Vec<f64> =
                    measure_repeats(backend, trigger, fds, active, passes, repeats)?
                        .iter()
                        .map(|t| t.as_secs_f64() * 1e6)
                        .collect();
                let t = Spread::of(&times).ok_or_else(|| io::Error::other("no timings"))?;
                table.push(vec![
                    name.to_string(),
                    trigger.to_string(),
                    fds.to_string(),
                    active.to_string(),
                    format!("{:.3}", t.median),
                    format!("{:.3}", t.lo),
                    format!("{:.3}", t.hi),
                ]);
                results.push((backend, trigger, fds, active, t));
                points.push(Point {
                    x: fds as f64,
                    y: t,
                });
            }
            if points.is_empty() {
                continue;
            }
            ctx.progress(format_args!(
                "dispatch: {name}/{trigger} active={active} done"
            ));
            series.push(Series {
                label: format!("{name} {trigger}"),
                points,
            });
        }
        let file = format!("dispatch_active{active}.svg");
        chart::lines(
            &ctx.out(&file),
            &format!("Time per event-loop pass, {active} active (median and range)"),
            "registered socket pairs",
            "microseconds per pass",
            &series,
        )?;
        charts.push(file);
    }
    let get = |b: Backend, t: Trigger, fds: usize, a: usize| {
        results
            .iter()
            .find(|r| r.0 == b && r.1 == t && r.2 == fds && r.3 == a)
            .map(|r| r.4)
    };
    let (lo, hi) = (sizes[0], *sizes.last().unwrap());
    let growth = |b: Backend, t: Trigger, a: usize| {
        Some(Growth {
            from_n: lo,
            to_n: hi,
            from: get(b, t, lo, a)?,
            to: get(b, t, hi, a)?,
        })
    };
    let mut dispatch = judge::dispatch_scaling(
        growth(Backend::Poll, Trigger::Level, 1),
        growth(Backend::Epoll, Trigger::Edge, 1),
        growth(Backend::Epoll, Trigger::Edge, 100),
        EPOLL_GROWTH_WHY,
    );
    // The newer readiness sources report changes, as epoll edge does.
    for b in [Backend::Sigio, Backend::Uring] {
        if let Some(g) = growth(b, Trigger::Edge, 1) {
            dispatch.evidence +=
                &format!(" {} with 1 active: {}.", selector_name(b), g.text(" us"));
        }
    }
    let small = sizes[0];
    let at_small = |b: Backend| get(b, Trigger::Level, small, 100.min(small));
    let verdicts = vec![
        dispatch,
        judge::few_busy(
            small,
            at_small(Backend::Select),
            at_small(Backend::Poll),
            at_small(Backend::Epoll),
        ),
    ];
    Ok(Section {
        name: "dispatch",
        title: "Dispatch cost (the libevent benchmark)",
        method: format!(
            "N Unix socket pairs registered for readability; each pass writes one byte to A of them (round robin), waits until all A are reported, and reads them back. Mean time per pass over many passes, {repeats} repeats on the same pairs (median and range), in-process ([`iomux_lab::dispatch::measure`]). select stops at {SELECT_MAX_FDS} pairs: both ends of each pair are open, so descriptor numbers pass FD_SETSIZE (1024) beyond that. `sigio` is signal-driven I/O: each pair's reader has O_ASYNC and a real-time signal carrying its descriptor, and a wait reads the queued signals from a signalfd (edge only). `uring-poll` is the io_uring readiness selector: a multishot poll request per descriptor (edge), and one `io_uring_enter` per wait.{}",
            if ctx.config.quick { " The quick grid measures sigio and uring-poll at one point only." } else { "" }
        ),
        tables: vec![("Microseconds per pass".into(), table, Some("dispatch.csv".into()))],
        charts,
        verdicts,
        notes,
    })
}
