//! Experiment 1: the libevent dispatch benchmark over select, poll and epoll,
//! and the two newer readiness sources, signal-driven I/O and io_uring poll.

use super::chart::{self, Series};
use super::report::{num, Section, Table, Verdict};
use super::Ctx;
use crate::dispatch::{measure, SELECT_MAX_FDS};
use iomux::{Backend, Interest, SelectSelector, Selector, Token, Trigger};
use std::io;
use std::os::fd::{AsFd, AsRawFd, FromRawFd, OwnedFd};

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

pub(crate) fn run(ctx: &mut Ctx) -> io::Result<Section> {
    let sizes: Vec<usize> = ctx.pick(
        vec![100, 250, 496, 1000, 2500, 5000, 7500, 9000],
        vec![100, 496, 2000, 5000],
    );
    let actives = [1usize, 100];
    let repeats = ctx.pick(3, 1);
    let mut table = Table::new(&["backend", "trigger", "fds", "active", "usec_per_pass"]);
    let mut series = Vec::new();
    // usec per pass by (mode, fds, active)
    let mut results: Vec<(Backend, Trigger, usize, usize, f64)> = Vec::new();
    let notes: Vec<String> = ctx
        .uring_skipped("The uring-poll selector")
        .into_iter()
        .collect();
    for &active in &actives {
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
                    (100_000 / fds).clamp(50, 1000),
                );
                let mut best = f64::INFINITY;
                for _ in 0..repeats {
                    let t = measure(backend, trigger, fds, active, passes)?;
                    best = best.min(t.as_secs_f64() * 1e6);
                }
                table.push(vec![
                    name.to_string(),
                    trigger.to_string(),
                    fds.to_string(),
                    active.to_string(),
                    format!("{best:.3}"),
                ]);
                results.push((backend, trigger, fds, active, best));
                points.push((fds as f64, best));
            }
            if points.is_empty() {
                continue;
            }
            ctx.progress(format_args!(
                "dispatch: {name}/{trigger} active={active} done"
            ));
            series.push(Series {
                label: format!("{name} {trigger}, {active} active"),
                points,
            });
        }
    }
    let file = "dispatch.svg";
    chart::lines(
        &ctx.out(file),
        "Time per event-loop pass",
        "registered socket pairs",
        "microseconds per pass",
        &series,
    )?;
    let get = |b: Backend, t: Trigger, fds: usize, a: usize| {
        results
            .iter()
            .find(|r| r.0 == b && r.1 == t && r.2 == fds && r.3 == a)
            .map(|r| r.4)
    };
    let (lo, hi) = (sizes[0], *sizes.last().unwrap());
    let mut verdicts = vec![select_limit_verdict()];
    if let (Some(p0), Some(p1), Some(e0), Some(e1)) = (
        get(Backend::Poll, Trigger::Level, lo, 1),
        get(Backend::Poll, Trigger::Level, hi, 1),
        get(Backend::Epoll, Trigger::Edge, lo, 1),
        get(Backend::Epoll, Trigger::Edge, hi, 1),
    ) {
        let (pr, er) = (p1 / p0, e1 / e0);
        let shape = if pr > 5.0 && er < 2.0 {
            "Confirmed"
        } else if pr > er * 2.0 {
            "Partly confirmed"
        } else {
            "Not confirmed on this machine"
        };
        // The newer readiness sources report changes, as epoll edge does.
        let newer: String = [Backend::Sigio, Backend::Uring]
            .into_iter()
            .filter_map(|b| {
                let (n0, n1) = (get(b, Trigger::Edge, lo, 1)?, get(b, Trigger::Edge, hi, 1)?);
                Some(format!(
                    " {} from {} to {} us (x{:.1}).",
                    selector_name(b),
                    num(n0),
                    num(n1),
                    n1 / n0
                ))
            })
            .collect();
        verdicts.push(Verdict {
            claim: "select and poll cost O(n) per call; epoll costs O(active)",
            verdict: format!(
                "{shape}: with 1 active, poll goes from {} us at {lo} pairs to {} us at {hi} (x{:.1}); epoll edge from {} to {} us (x{:.1}).{newer}",
                num(p0), num(p1), pr, num(e0), num(e1), er
            ),
        });
    }
    let small = sizes
        .iter()
        .copied()
        .filter(|&n| n >= 100)
        .min()
        .unwrap_or(100);
    if let (Some(s), Some(p), Some(e)) = (
        get(Backend::Select, Trigger::Level, small, 100.min(small)),
        get(Backend::Poll, Trigger::Level, small, 100.min(small)),
        get(Backend::Epoll, Trigger::Level, small, 100.min(small)),
    ) {
        let best = if s.min(p) <= e {
            "select/poll match or beat epoll"
        } else {
            "epoll is still faster"
        };
        verdicts.push(Verdict {
            claim: "with few, busy descriptors select/poll can match or beat epoll",
            verdict: format!(
                "With {small} pairs all active per pass: select {} us, poll {} us, epoll level {} us per pass: {best}.",
                num(s), num(p), num(e)
            ),
        });
    }
    Ok(Section {
        name: "dispatch",
        title: "Dispatch cost (the libevent benchmark)",
        method: format!(
            "N Unix socket pairs registered for readability; each pass writes one byte to A of them (round robin), waits until all A are reported, and reads them back. Mean time per pass, best of {repeats} run(s), in-process ([`iomux_lab::dispatch::measure`]). select stops at {SELECT_MAX_FDS} pairs: both ends of each pair are open, so descriptor numbers pass FD_SETSIZE (1024) beyond that. `sigio` is signal-driven I/O: each pair's reader has O_ASYNC and a real-time signal carrying its descriptor, and a wait reads the queued signals from a signalfd (edge only: a signal reports a change). `uring-poll` is the io_uring readiness selector: a multishot poll request per descriptor (edge), and one `io_uring_enter` per wait.{}",
            if ctx.config.quick { " The quick grid measures sigio and uring-poll at one point only." } else { "" }
        ),
        tables: vec![("Microseconds per pass".into(), table, Some("dispatch.csv".into()))],
        charts: vec![file.into()],
        verdicts,
        notes,
    })
}

/// Try to register a descriptor numbered 1024 or above with select.
fn select_limit_verdict() -> Verdict {
    let claim = "select cannot go past 1,024 descriptors";
    let result = (|| -> io::Result<String> {
        let sock = std::net::UdpSocket::bind("127.0.0.1:0")?;
        // SAFETY: F_DUPFD_CLOEXEC returns a new descriptor (>= 1024) that nothing else owns.
        let high = unsafe { libc::fcntl(sock.as_raw_fd(), libc::F_DUPFD_CLOEXEC, 1024) };
        if high < 0 {
            return Err(io::Error::last_os_error());
        }
        // SAFETY: `high` was just returned by fcntl and is owned here only.
        let high = unsafe { OwnedFd::from_raw_fd(high) };
        let mut select = SelectSelector::new()?;
        Ok(match select.register(high.as_fd(), Token(0), Interest::READABLE) {
            Err(e) => format!("Confirmed (for descriptor numbers, not counts): registering descriptor {} fails: \"{e}\". poll and epoll take it.", high.as_raw_fd()),
            Ok(_) => format!("Not confirmed: descriptor {} was accepted by select.", high.as_raw_fd()),
        })
    })();
    Verdict {
        claim,
        verdict: result.unwrap_or_else(|e| format!("Could not test: {e}")),
    }
}
