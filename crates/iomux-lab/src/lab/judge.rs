//! The verdicts: each claim's outcome computed from this run's figures.
//! Every function here is pure (figures in, verdict out), so each outcome it
//! can give is tested with made-up figures.

use super::report::{num, Outcome, Spread, Verdict};

/// A cost "grows" from one point to another when every measurement at the
/// second is above every one at the first and the medians differ by more
/// than this factor.
pub(crate) const GROWTH: f64 = 1.5;

/// A core busier than this (percent) over a run was saturated.
pub(crate) const SATURATED_PCT: f64 = 90.0;

/// One measured quantity at two sizes (`from_n`, `to_n`).
#[derive(Debug, Clone, Copy, PartialEq)]
pub(crate) struct Growth {
    pub from_n: usize,
    pub to_n: usize,
    pub from: Spread,
    pub to: Spread,
}

impl Growth {
    pub(crate) fn ratio(&self) -> f64 {
        self.to.ratio(&self.from)
    }

    pub(crate) fn grows(&self) -> bool {
        self.to.above(&self.from) && self.ratio() > GROWTH
    }

    /// "3.00 us at 100 -> 9.00 (8.00-10.0) us at 9000 (x3.00, grows)".
    pub(crate) fn text(&self, unit: &str) -> String {
        format!(
            "{}{unit} at {} -> {}{unit} at {} (x{:.2}, {})",
            self.from.text(),
            self.from_n,
            self.to.text(),
            self.to_n,
            self.ratio(),
            if self.grows() {
                "grows"
            } else if self.to.above(&self.from) {
                "higher in every measurement, but by less than x1.5"
            } else {
                "not above the first point's range"
            }
        )
    }
}

/// Which side's core a throughput run saturated.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Bound {
    Server,
    Client,
    Both,
    Neither,
}

impl Bound {
    pub(crate) fn of(server_busy_pct: f64, client_busy_pct: f64) -> Bound {
        match (
            server_busy_pct >= SATURATED_PCT,
            client_busy_pct >= SATURATED_PCT,
        ) {
            (true, false) => Bound::Server,
            (false, true) => Bound::Client,
            (true, true) => Bound::Both,
            (false, false) => Bound::Neither,
        }
    }

    pub(crate) fn as_str(self) -> &'static str {
        match self {
            Bound::Server => "server-bound",
            Bound::Client => "client-bound",
            Bound::Both => "both cores saturated",
            Bound::Neither => "neither core saturated",
        }
    }

    /// Requests per second measure the server only when its core was the
    /// saturated one.
    pub(crate) fn rps_measures_server(self) -> bool {
        self == Bound::Server
    }
}

/// The usual reading of a figure: confirmed when `confirmed` holds, refuted
/// when `refuted` does, partly in between.
fn graded(confirmed: bool, refuted: bool) -> Outcome {
    if confirmed {
        Outcome::Confirmed
    } else if refuted {
        Outcome::Refuted
    } else {
        Outcome::Partly
    }
}

fn verdict(claim: &'static str, outcome: Outcome, evidence: String) -> Verdict {
    Verdict {
        claim,
        outcome,
        evidence,
    }
}

fn missing(claim: &'static str, what: &str) -> Verdict {
    verdict(
        claim,
        Outcome::Inconclusive,
        format!("Not measured in this run: {what}."),
    )
}

pub(crate) const DISPATCH_CLAIM: &str = "select and poll cost O(n) per call; epoll costs O(active)";

/// Dispatch cost (microseconds per pass) from the smallest to the largest
/// number of registered pairs: poll and epoll edge with 1 active, epoll edge
/// with 100 active and what is known of why it grows.
pub(crate) fn dispatch_scaling(
    poll_1: Option<Growth>,
    epoll_1: Option<Growth>,
    epoll_100: Option<Growth>,
    epoll_100_why: &str,
) -> Verdict {
    let (Some(p), Some(e)) = (poll_1, epoll_1) else {
        return missing(DISPATCH_CLAIM, "poll and epoll edge with 1 active");
    };
    let e100 = epoll_100.filter(Growth::grows);
    let outcome = match (p.grows(), e.grows()) {
        (false, _) => Outcome::Refuted,
        (true, false) if e100.is_none() => Outcome::Confirmed,
        (true, false) => Outcome::Partly,
        (true, true) if p.ratio() > 2.0 * e.ratio() => Outcome::Partly,
        (true, true) => Outcome::Refuted,
    };
    let mut evidence = format!(
        "Microseconds per pass, median (range) of the repeats. 1 active: poll {}; epoll edge {}.",
        p.text(" us"),
        e.text(" us")
    );
    if let Some(g) = epoll_100 {
        evidence += &format!(" 100 active: epoll edge {}.", g.text(" us"));
        if g.grows() {
            evidence += &format!(
                " Why epoll grows with registered descriptors at 100 active: {epoll_100_why}"
            );
        }
    }
    verdict(DISPATCH_CLAIM, outcome, evidence)
}

pub(crate) const FEW_BUSY_CLAIM: &str =
    "with few, busy descriptors select/poll can match or beat epoll";

/// Microseconds per pass with `pairs` pairs, all active.
pub(crate) fn few_busy(
    pairs: usize,
    select: Option<Spread>,
    poll: Option<Spread>,
    epoll: Option<Spread>,
) -> Verdict {
    let (Some(s), Some(p), Some(e)) = (select, poll, epoll) else {
        return missing(
            FEW_BUSY_CLAIM,
            "select, poll and epoll level with all pairs active",
        );
    };
    let (best_name, best) = if s.median <= p.median {
        ("select", s)
    } else {
        ("poll", p)
    };
    let (outcome, how) = if e.above(&best) {
        (Outcome::Confirmed, "beats epoll in every repeat")
    } else if best.above(&e) {
        (Outcome::Refuted, "is slower than epoll in every repeat")
    } else {
        (Outcome::Confirmed, "matches epoll (the ranges overlap)")
    };
    verdict(
        FEW_BUSY_CLAIM,
        outcome,
        format!(
            "{pairs} pairs, all active, microseconds per pass: select {}, poll {}, epoll level {}; {best_name} {how}.",
            s.text(),
            p.text(),
            e.text()
        ),
    )
}

pub(crate) const SELECT_LIMIT_CLAIM: &str = "select cannot go past 1,024 descriptors";

/// What select(2) did with a descriptor above FD_SETSIZE in a set big enough for it.
#[derive(Debug, Clone, PartialEq)]
pub(crate) enum KernelSelect {
    /// It reported the (readable) descriptor readable.
    Reported,
    /// It returned but did not report the readable descriptor.
    NotReported,
    /// It failed with this error.
    Refused(String),
    /// The test could not be set up (why).
    NotTested(String),
}

/// The C library's fd_set and select(2) asked directly.
#[derive(Debug, Clone, PartialEq)]
pub(crate) struct SelectProbe {
    pub fd_setsize: usize,
    pub fd_set_bytes: usize,
    pub high_fd: i32,
    pub kernel: KernelSelect,
    /// What the C library's checked FD_SET did with `high_fd` (in a child
    /// process), or why it was not tried.
    pub libc_fd_set: Result<String, String>,
}

pub(crate) fn select_limit(p: &SelectProbe) -> Verdict {
    let libc = match &p.libc_fd_set {
        Ok(what) => format!("FD_SET({}) with the C library's check (glibc's __fdelt_chk, what FD_SET compiles to under _FORTIFY_SOURCE): {what}", p.high_fd),
        Err(why) => format!("the C library's checked FD_SET was not tried: {why}"),
    };
    let unchecked = format!(
        "Unchecked, FD_SET({}) would set bit {} of a {}-byte fd_set, byte {} (past its end)",
        p.high_fd,
        p.high_fd,
        p.fd_set_bytes,
        p.high_fd / 8
    );
    let head = format!(
        "The C library's fd_set is fixed: FD_SETSIZE = {}, {} bytes.",
        p.fd_setsize, p.fd_set_bytes
    );
    let (outcome, kernel) = match &p.kernel {
        KernelSelect::Reported if p.fd_setsize > 1024 => (
            Outcome::Refuted,
            format!("select(2) with a {}-bit set reported descriptor {} readable, and FD_SETSIZE is above 1,024", p.high_fd + 1, p.high_fd),
        ),
        KernelSelect::Reported => (
            Outcome::Partly,
            format!("The kernel has no such limit: select(2) given a heap set of {} bits reported descriptor {} readable. The limit is the C library's fixed-size fd_set, not select(2)", p.high_fd + 1, p.high_fd),
        ),
        KernelSelect::NotReported => (
            Outcome::Confirmed,
            format!("select(2) given a {}-bit set returned without reporting the readable descriptor {}", p.high_fd + 1, p.high_fd),
        ),
        KernelSelect::Refused(e) if e.contains("Invalid argument") => (
            Outcome::Confirmed,
            format!("select(2) refused a set reaching descriptor {}: {e}", p.high_fd),
        ),
        KernelSelect::Refused(e) => (
            Outcome::Inconclusive,
            format!("select(2) failed for another reason: {e}"),
        ),
        KernelSelect::NotTested(why) => (
            Outcome::Inconclusive,
            format!("select(2) was not tried with a descriptor above FD_SETSIZE: {why}"),
        ),
    };
    verdict(
        SELECT_LIMIT_CLAIM,
        outcome,
        format!("{head} {kernel}. {libc}. {unchecked}."),
    )
}

pub(crate) const COST_AXES_CLAIM: &str =
    "select's and poll's cost grows with the number of descriptors watched";

/// One call's cost by the number watched (highest number fixed) and by the
/// highest descriptor number (one watched).
#[derive(Debug, Clone, Copy, PartialEq)]
pub(crate) struct CostAxes {
    /// The highest descriptor number while the count grows.
    pub count_highest_fd: i32,
    pub by_count: Growth,
    pub by_highest: Growth,
}

pub(crate) fn cost_axes(select: Option<CostAxes>, poll: Option<CostAxes>) -> Verdict {
    let (Some(s), Some(p)) = (select, poll) else {
        return missing(
            COST_AXES_CLAIM,
            "select and poll by count and by highest number",
        );
    };
    let (sc, sh, pc, ph) = (
        s.by_count.grows(),
        s.by_highest.grows(),
        p.by_count.grows(),
        p.by_highest.grows(),
    );
    let outcome = graded(sc && pc && !sh && !ph, !sc && !pc);
    verdict(
        COST_AXES_CLAIM,
        outcome,
        format!(
            "Nanoseconds per call, nothing ready. select, by descriptors watched (highest number {}): {}; by highest number, 1 watched: {}. poll, by descriptors watched (highest number {}): {}; by highest number, 1 watched: {}.",
            s.count_highest_fd,
            s.by_count.text(" ns"),
            s.by_highest.text(" ns"),
            p.count_highest_fd,
            p.by_count.text(" ns"),
            p.by_highest.text(" ns"),
        ),
    )
}

pub(crate) const MMAP_CLAIM: &str =
    "epoll shares memory with user space through mmap (no copy of the ready list)";

/// The process's mappings around an epoll instance and one wait.
#[derive(Debug, Clone, PartialEq)]
pub(crate) struct MmapProbe {
    /// Mappings of the eventpoll file before and after epoll_create1,
    /// epoll_ctl and epoll_wait.
    pub eventpoll_maps: (usize, usize),
    /// All mappings before and after.
    pub maps: (usize, usize),
    /// epoll_wait given a read-only events buffer with an event ready:
    /// `Ok(true)` when it failed with EFAULT (the kernel writes the events
    /// into the caller's memory), `Ok(false)` when it returned events.
    pub copy_faults: Result<bool, String>,
}

pub(crate) fn epoll_mmap(p: &MmapProbe) -> Verdict {
    let maps = format!(
        "Mappings of the eventpoll file: {} before creating an epoll instance, registering a socket and waiting, {} after (all mappings: {} -> {}).",
        p.eventpoll_maps.0, p.eventpoll_maps.1, p.maps.0, p.maps.1
    );
    let (outcome, copy) = match (&p.copy_faults, p.eventpoll_maps.1 > p.eventpoll_maps.0) {
        (_, true) => (Outcome::Confirmed, "A mapping of the epoll instance appeared.".to_string()),
        (Ok(true), false) => (Outcome::Refuted, "epoll_wait with an event ready and a read-only events buffer failed with EFAULT: the kernel copies each event into the caller's array (copy_to_user) on every wait; nothing is shared.".to_string()),
        (Ok(false), false) => (Outcome::Inconclusive, "epoll_wait wrote into a read-only buffer without EFAULT, which a copy would not do; no mapping appeared either.".to_string()),
        (Err(e), false) => (Outcome::Inconclusive, format!("The copy test did not run: {e}.")),
    };
    verdict(MMAP_CLAIM, outcome, format!("{maps} {copy}"))
}

pub(crate) const IDLE_CLAIM: &str = "idle connections slow select/poll servers but not epoll ones";

/// Server CPU per request (us) from no idle connections to the most, echo
/// with 100 active; `rps` says what requests/s did, for context.
pub(crate) fn idle_slowdown(poll: Option<Growth>, epoll: Option<Growth>, rps: &str) -> Verdict {
    let (Some(p), Some(e)) = (poll, epoll) else {
        return missing(
            IDLE_CLAIM,
            "poll and epoll edge with and without idle connections",
        );
    };
    let outcome = match (p.grows(), e.grows()) {
        (true, false) => Outcome::Confirmed,
        (true, true) => Outcome::Partly,
        (false, _) => Outcome::Refuted,
    };
    verdict(
        IDLE_CLAIM,
        outcome,
        format!(
            "Server CPU per request, echo, by idle connections: poll {}; epoll edge {}. {rps}",
            p.text(" us"),
            e.text(" us"),
        ),
    )
}

pub(crate) const SINGLE_THREAD_CLAIM: &str =
    "a single thread handled 276K requests/s (and 19K/s with 50K connections)";

/// The best one-loop figure and the one at the most connections the
/// descriptor limit allows.
#[derive(Debug, Clone, PartialEq)]
pub(crate) struct Capacity {
    /// Requests/s, what produced them, and whether the client limited them.
    pub best: Option<(Spread, String, Bound)>,
    /// Connections open in the largest run, and its requests/s.
    pub largest: Option<(usize, Spread)>,
    /// Why the largest run stopped where it did.
    pub largest_why: String,
}

pub(crate) fn single_thread(c: &Capacity) -> Verdict {
    let rps_part = c.best.as_ref().and_then(|(s, _, bound)| {
        if s.median >= 276_000.0 {
            Some(true)
        } else if *bound == Bound::Client || *bound == Bound::Both {
            None
        } else {
            Some(false)
        }
    });
    let conn_part = c
        .largest
        .as_ref()
        .filter(|(n, _)| *n >= 50_000)
        .map(|(_, s)| s.median >= 19_000.0);
    let outcome = match (rps_part, conn_part) {
        (Some(true), Some(true)) => Outcome::Confirmed,
        (Some(false), Some(false) | None) | (None, Some(false)) => Outcome::Refuted,
        (None, None) => Outcome::Inconclusive,
        _ => Outcome::Partly,
    };
    let mut evidence = match &c.best {
        Some((s, what, bound)) => format!(
            "Best one-loop figure: {} req/s ({what}; {}).",
            s.text(),
            bound.as_str()
        ),
        None => "No one-loop figure was measured.".into(),
    };
    if rps_part.is_none() && c.best.is_some() {
        evidence += " The client's core was saturated, so that figure is the client's limit, not the server's.";
    }
    match &c.largest {
        Some((n, s)) => {
            evidence += &format!(" With {n} connections open: {} req/s.", s.text());
            if *n < 50_000 {
                evidence += &format!(" 50K connections were not tried: {}.", c.largest_why);
            }
        }
        None => evidence += &format!(" No run with many connections ({}).", c.largest_why),
    }
    verdict(SINGLE_THREAD_CLAIM, outcome, evidence)
}

pub(crate) const LEVEL_EDGE_CLAIM: &str =
    "edge-triggered is faster than level-triggered (disputed)";

/// Per-round ratios edge/level of server CPU per request, and text on the
/// counters.
pub(crate) fn level_edge(cpu_ratio: Option<Spread>, rounds: usize, counters: &str) -> Verdict {
    let Some(r) = cpu_ratio else {
        return missing(LEVEL_EDGE_CLAIM, "rounds of epoll edge and level");
    };
    let outcome = if r.hi < 0.98 {
        Outcome::Confirmed
    } else if r.lo >= 0.98 {
        Outcome::Refuted
    } else {
        Outcome::Inconclusive
    };
    let how = match outcome {
        Outcome::Confirmed => "edge cost less CPU per request in every round, by more than 2%",
        Outcome::Refuted => "in no round did edge cost 2% less CPU per request than level",
        _ => "edge was more than 2% cheaper in some rounds and not in others",
    };
    verdict(
        LEVEL_EDGE_CLAIM,
        outcome,
        format!(
            "Server CPU per request, edge/level over {rounds} rounds: x{:.3} (range x{:.3}-x{:.3}): {how}. {counters}",
            r.median, r.lo, r.hi
        ),
    )
}

pub(crate) const SIGIO_CLAIM: &str = "signal-driven I/O is of little use for TCP servers (the signal says only that something happened)";

/// sigio against epoll edge: per-round ratios of server CPU per request, and
/// whether sigio served in every round it was measured in.
pub(crate) fn sigio(cpu_ratio: Option<Spread>, served_every_round: bool, detail: &str) -> Verdict {
    let Some(r) = cpu_ratio else {
        return missing(SIGIO_CLAIM, "sigio beside epoll edge");
    };
    let outcome = graded(!served_every_round || r.lo >= 2.0, r.hi <= 1.25);
    verdict(
        SIGIO_CLAIM,
        outcome,
        format!(
            "sigio {} in every measured round; its server CPU per request against epoll edge's, per round: x{:.2} (range x{:.2}-x{:.2}) (refuted at most x1.25 in every round, confirmed at least x2). {detail}",
            if served_every_round { "served" } else { "did not serve" },
            r.median, r.lo, r.hi
        ),
    )
}

pub(crate) const URING_CLAIM: &str = "Linux has no true asynchronous network I/O (so completion-based servers are not possible there)";

/// The io_uring completion engine: rounds that served, of the rounds it was
/// measured in, or why it did not run.
pub(crate) fn uring(result: Result<(usize, usize), String>, detail: &str) -> Verdict {
    match result {
        Err(why) => verdict(
            URING_CLAIM,
            Outcome::Inconclusive,
            format!("The completion engine did not run: {why}."),
        ),
        Ok((served, total)) => {
            let outcome = if total == 0 {
                Outcome::Inconclusive
            } else if served == total {
                Outcome::Refuted
            } else if served == 0 {
                Outcome::Confirmed
            } else {
                Outcome::Partly
            };
            verdict(
                URING_CLAIM,
                outcome,
                format!("The io_uring completion engine (the kernel performs the receives and sends; the loop learns they are done) served requests in {served} of {total} measured rounds. {detail}"),
            )
        }
    }
}

pub(crate) const KERNEL_MEMORY_CLAIM: &str =
    "an idle TCP connection costs about 3.3 KiB in the kernel; ~1 GB holds ~100,000 connections";

/// KiB per connection: kernel slab growth (both loopback ends) and the
/// server's RSS growth, at `conns`.
pub(crate) fn kernel_memory(figures: Option<(usize, f64, f64)>) -> Verdict {
    let Some((conns, slab_both, rss)) = figures else {
        return missing(KERNEL_MEMORY_CLAIM, "memory with idle connections");
    };
    let socket = slab_both / 2.0;
    let total = socket + rss.max(0.0);
    let per_gib = 1024.0 * 1024.0 / total.max(0.01);
    let outcome = if socket <= 0.0 {
        Outcome::Inconclusive
    } else if (3.3 / 1.5..=3.3 * 1.5).contains(&socket) {
        Outcome::Confirmed
    } else if per_gib >= 100_000.0 {
        Outcome::Partly
    } else {
        Outcome::Refuted
    };
    verdict(
        KERNEL_MEMORY_CLAIM,
        outcome,
        format!(
            "At {conns} idle connections the kernel's slab grew {} KiB per connection (both loopback ends), {} KiB per socket; the server's RSS {} KiB per connection; together {} KiB: 1 GiB holds {} connections (confirmed within x1.5 of 3.3 KiB; slab is machine-wide, so other processes add noise).",
            num(slab_both), num(socket), num(rss), num(total), num(per_gib)
        ),
    )
}

pub(crate) const THREAD_MEMORY_CLAIM: &str =
    "a thread per connection costs far more memory than an event loop";

/// RSS KiB per idle connection at `conns`: threads and epoll.
pub(crate) fn thread_memory(figures: Option<(usize, f64, f64)>) -> Verdict {
    let Some((conns, threads, epoll)) = figures else {
        return missing(
            THREAD_MEMORY_CLAIM,
            "threads and epoll with idle connections",
        );
    };
    let ratio = threads / epoll.max(0.01);
    let outcome = graded(ratio >= 4.0, ratio <= 1.5);
    verdict(
        THREAD_MEMORY_CLAIM,
        outcome,
        format!(
            "At {conns} idle connections: threads {} KiB of RSS per connection, epoll {} KiB (x{ratio:.1}; confirmed from x4, refuted up to x1.5). A thread's stack is reserved virtually; only touched pages count.",
            num(threads), num(epoll)
        ),
    )
}

pub(crate) const COMPLETION_BUFFERS_CLAIM: &str =
    "a completion-based server needs a buffer for every outstanding read";

/// RSS KiB per idle connection at `conns`: the io_uring completion engine
/// (one outstanding receive per connection) and epoll.
pub(crate) fn completion_buffers(figures: Option<(usize, f64, f64)>) -> Verdict {
    let Some((conns, uring, epoll)) = figures else {
        return missing(
            COMPLETION_BUFFERS_CLAIM,
            "the completion engine with idle connections",
        );
    };
    let extra = uring - epoll;
    let outcome = graded(extra >= 4.0, extra < 1.0);
    verdict(
        COMPLETION_BUFFERS_CLAIM,
        outcome,
        format!(
            "At {conns} idle connections, each with a receive outstanding: the completion engine's RSS grew {} KiB per connection, epoll's {} KiB: {} KiB more (confirmed from a 4 KiB page per connection, refuted under 1 KiB). Its receives draw from one provided-buffer ring per loop.",
            num(uring), num(epoll), num(extra)
        ),
    )
}

pub(crate) const CONNRATE_CLAIM: &str = "a single thread handled ~2.9K new connections/s";

/// New connections per second of one loop over rounds, and the bound.
pub(crate) fn connrate(rate: Option<Spread>, bound: Bound, detail: &str) -> Verdict {
    let Some(r) = rate else {
        return missing(CONNRATE_CLAIM, "the connection rate");
    };
    let outcome = if r.lo >= 2900.0 {
        Outcome::Confirmed
    } else if r.hi < 2900.0 && bound.rps_measures_server() {
        Outcome::Refuted
    } else {
        Outcome::Inconclusive
    };
    verdict(
        CONNRATE_CLAIM,
        outcome,
        format!(
            "One epoll loop accepted, answered and closed {} connections/s ({}). {detail}",
            r.text(),
            bound.as_str()
        ),
    )
}

pub(crate) const HERD_CLAIM: &str = "processes waiting on one listener suffer a thundering herd; EPOLLEXCLUSIVE or SO_REUSEPORT fixes it";

/// Thread wake-ups per accepted connection over rounds, with `threads` waiters.
pub(crate) fn herd(
    threads: usize,
    plain: Option<Spread>,
    exclusive: Option<Spread>,
    reuseport: Option<Spread>,
) -> Verdict {
    let (Some(p), Some(x), Some(r)) = (plain, exclusive, reuseport) else {
        return missing(HERD_CLAIM, "the three listener modes");
    };
    let fixed = |s: &Spread| s.hi <= 1.2 && p.above(s);
    let outcome = if p.hi <= 1.5 {
        Outcome::Refuted
    } else if p.lo <= 1.5 {
        Outcome::Inconclusive
    } else {
        match (fixed(&x), fixed(&r)) {
            (true, true) => Outcome::Confirmed,
            (false, false) => Outcome::Refuted,
            _ => Outcome::Partly,
        }
    };
    verdict(
        HERD_CLAIM,
        outcome,
        format!(
            "With {threads} waiters, thread wake-ups per accepted connection (median, range over rounds): plain {}, EPOLLEXCLUSIVE {}, SO_REUSEPORT {} (a herd: plain above 1.5 in every round; fixed: at most 1.2).",
            p.text(), x.text(), r.text()
        ),
    )
}

pub(crate) const THREADS_CLAIM: &str =
    "thread-per-connection servers stop scaling at hundreds to thousands of connections";

/// Server CPU per request (us) from the fewest to the most connections,
/// threads and epoll; connections threads left unanswered at the most;
/// cores the server may use.
pub(crate) fn threads_scaling(
    threads: Option<Growth>,
    epoll: Option<Growth>,
    starved_at_most: f64,
    server_cores: usize,
) -> Verdict {
    let (Some(t), Some(e)) = (threads, epoll) else {
        return missing(
            THREADS_CLAIM,
            "threads and epoll at growing connection counts",
        );
    };
    let faster_growth = t.grows() && t.ratio() > GROWTH * e.ratio();
    let outcome = graded(faster_growth || starved_at_most > 0.0, !t.grows());
    verdict(
        THREADS_CLAIM,
        outcome,
        format!(
            "Server CPU per request, echo, all connections active: threads {}; epoll edge {}. Threads left {} of {} connections unanswered for the whole run. The server runs on {server_cores} core(s): {}",
            t.text(" us"),
            e.text(" us"),
            starved_at_most,
            t.to_n,
            if server_cores == 1 {
                "its threads cannot run in parallel, so this measures switching between threads on one core, not lost parallelism."
            } else {
                "threads may run in parallel."
            }
        ),
    )
}

pub(crate) const BLOCKING_CLAIM: &str = "a blocking server serves one client at a time";

/// Connections open and connections the blocking server left unanswered.
pub(crate) fn blocking(figures: Option<(usize, f64)>) -> Verdict {
    let Some((conns, starved)) = figures else {
        return missing(
            BLOCKING_CLAIM,
            "the blocking server under several connections",
        );
    };
    let served = conns as f64 - starved;
    let outcome = graded(served <= 1.0, served >= conns as f64 / 2.0);
    verdict(
        BLOCKING_CLAIM,
        outcome,
        format!("With {conns} connections open, {served} got answers during the run and {starved} none."),
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    fn s(x: f64) -> Spread {
        Spread::exact(x)
    }

    fn g(from: f64, to: f64) -> Growth {
        Growth {
            from_n: 100,
            to_n: 9000,
            from: s(from),
            to: s(to),
        }
    }

    fn outcomes(vs: impl IntoIterator<Item = Verdict>) -> Vec<Outcome> {
        vs.into_iter().map(|v| v.outcome).collect()
    }

    use Outcome::*;

    #[test]
    fn growth_needs_separate_ranges_and_a_factor() {
        assert!(g(1.0, 2.0).grows());
        assert!(g(1.0, 2.0).text("").ends_with("(x2.00, grows)"));
        assert!(!g(1.0, 1.4).grows());
        assert!(g(1.0, 1.4).text("").contains("by less than x1.5"));
        assert!(g(1.0, 0.5).text("").contains("not above"));
        let overlapping = Growth {
            to: Spread::new(3.0, 0.5, 4.0),
            ..g(1.0, 3.0)
        };
        assert!(!overlapping.grows());
    }

    #[test]
    fn bounds() {
        assert_eq!(Bound::of(99.0, 50.0), Bound::Server);
        assert_eq!(Bound::of(50.0, 99.0), Bound::Client);
        assert_eq!(Bound::of(95.0, 95.0), Bound::Both);
        assert_eq!(Bound::of(10.0, 10.0), Bound::Neither);
        assert!(Bound::Server.rps_measures_server() && !Bound::Client.rps_measures_server());
    }

    #[test]
    fn dispatch_scaling_outcomes() {
        let why = "unknown";
        assert_eq!(
            outcomes([
                dispatch_scaling(
                    Some(g(1.0, 50.0)),
                    Some(g(1.0, 1.1)),
                    Some(g(10.0, 11.0)),
                    why
                ),
                dispatch_scaling(
                    Some(g(1.0, 50.0)),
                    Some(g(1.0, 1.1)),
                    Some(g(10.0, 20.0)),
                    why
                ),
                dispatch_scaling(Some(g(1.0, 50.0)), Some(g(1.0, 3.0)), None, why),
                dispatch_scaling(Some(g(1.0, 3.0)), Some(g(1.0, 3.0)), None, why),
                dispatch_scaling(Some(g(1.0, 1.0)), Some(g(1.0, 1.0)), None, why),
                dispatch_scaling(None, Some(g(1.0, 1.0)), None, why),
            ]),
            [Confirmed, Partly, Partly, Refuted, Refuted, Inconclusive]
        );
        let v = dispatch_scaling(
            Some(g(1.0, 50.0)),
            Some(g(1.0, 1.1)),
            Some(g(10.0, 20.0)),
            "cache misses",
        );
        assert!(v.evidence.contains("cache misses"), "{}", v.evidence);
    }

    #[test]
    fn few_busy_outcomes() {
        assert_eq!(
            outcomes([
                few_busy(100, Some(s(5.0)), Some(s(6.0)), Some(s(8.0))),
                few_busy(
                    100,
                    Some(Spread::new(8.0, 7.0, 9.0)),
                    Some(s(9.0)),
                    Some(Spread::new(8.0, 7.5, 8.5))
                ),
                few_busy(100, Some(s(9.0)), Some(s(10.0)), Some(s(8.0))),
                few_busy(100, None, Some(s(10.0)), Some(s(8.0))),
            ]),
            [Confirmed, Confirmed, Refuted, Inconclusive]
        );
    }

    #[test]
    fn select_limit_outcomes() {
        let probe = |fd_setsize, kernel| SelectProbe {
            fd_setsize,
            fd_set_bytes: fd_setsize / 8,
            high_fd: 1500,
            kernel,
            libc_fd_set: Ok("killed by SIGABRT".into()),
        };
        assert_eq!(
            outcomes([
                select_limit(&probe(1024, KernelSelect::Reported)),
                select_limit(&probe(4096, KernelSelect::Reported)),
                select_limit(&probe(1024, KernelSelect::NotReported)),
                select_limit(&probe(
                    1024,
                    KernelSelect::Refused("Invalid argument (os error 22)".into())
                )),
                select_limit(&probe(
                    1024,
                    KernelSelect::Refused("Bad file descriptor".into())
                )),
                select_limit(&probe(1024, KernelSelect::NotTested("rlimit 1024".into()))),
            ]),
            [
                Partly,
                Refuted,
                Confirmed,
                Confirmed,
                Inconclusive,
                Inconclusive
            ]
        );
        let v = select_limit(&probe(1024, KernelSelect::Reported));
        assert!(
            v.evidence.contains("FD_SETSIZE = 1024, 128 bytes") && v.evidence.contains("byte 187"),
            "{}",
            v.evidence
        );
    }

    #[test]
    fn cost_axes_outcomes() {
        let axes = |count: (f64, f64), highest: (f64, f64)| {
            Some(CostAxes {
                count_highest_fd: 1000,
                by_count: g(count.0, count.1),
                by_highest: g(highest.0, highest.1),
            })
        };
        assert_eq!(
            outcomes([
                cost_axes(axes((1.0, 9.0), (1.0, 1.0)), axes((1.0, 9.0), (1.0, 1.0))),
                cost_axes(axes((1.0, 1.2), (1.0, 9.0)), axes((1.0, 9.0), (1.0, 1.0))),
                cost_axes(axes((1.0, 1.0), (1.0, 9.0)), axes((1.0, 1.0), (1.0, 1.0))),
                cost_axes(None, axes((1.0, 1.0), (1.0, 1.0))),
            ]),
            [Confirmed, Partly, Refuted, Inconclusive]
        );
    }

    #[test]
    fn epoll_mmap_outcomes() {
        let probe = |maps: (usize, usize), copy_faults| MmapProbe {
            eventpoll_maps: maps,
            maps: (30, 31),
            copy_faults,
        };
        assert_eq!(
            outcomes([
                epoll_mmap(&probe((0, 1), Ok(true))),
                epoll_mmap(&probe((0, 0), Ok(true))),
                epoll_mmap(&probe((0, 0), Ok(false))),
                epoll_mmap(&probe((0, 0), Err("mmap failed".into()))),
            ]),
            [Confirmed, Refuted, Inconclusive, Inconclusive]
        );
    }

    #[test]
    fn idle_slowdown_outcomes() {
        assert_eq!(
            outcomes([
                idle_slowdown(Some(g(10.0, 40.0)), Some(g(10.0, 11.0)), ""),
                idle_slowdown(Some(g(10.0, 40.0)), Some(g(10.0, 20.0)), ""),
                idle_slowdown(Some(g(10.0, 12.0)), Some(g(10.0, 11.0)), ""),
                idle_slowdown(None, Some(g(10.0, 11.0)), ""),
            ]),
            [Confirmed, Partly, Refuted, Inconclusive]
        );
        let v = idle_slowdown(Some(g(10.0, 40.0)), Some(g(10.0, 11.0)), "rps");
        assert!(
            v.evidence
                .contains("poll 10.0 us at 100 -> 40.0 us at 9000"),
            "{}",
            v.evidence
        );
    }

    #[test]
    fn single_thread_outcomes() {
        let cap = |best: Option<(f64, Bound)>, largest: Option<(usize, f64)>| Capacity {
            best: best.map(|(x, b)| (s(x), "echo".to_string(), b)),
            largest: largest.map(|(n, x)| (n, s(x))),
            largest_why: "the descriptor limit".into(),
        };
        let v = |best, largest| single_thread(&cap(best, largest));
        assert_eq!(
            outcomes([
                v(Some((300e3, Bound::Server)), Some((60_000, 20e3))),
                v(Some((300e3, Bound::Server)), Some((19_000, 20e3))),
                v(Some((300e3, Bound::Server)), Some((60_000, 10e3))),
                v(Some((100e3, Bound::Server)), Some((19_000, 20e3))),
                v(Some((100e3, Bound::Client)), Some((19_000, 20e3))),
                v(None, None),
            ]),
            [
                Confirmed,
                Partly,
                Partly,
                Refuted,
                Inconclusive,
                Inconclusive
            ]
        );
        assert!(single_thread(&cap(Some((100e3, Bound::Client)), None))
            .evidence
            .contains("client's limit"));
    }

    #[test]
    fn level_edge_outcomes() {
        assert_eq!(
            outcomes([
                level_edge(Some(Spread::new(0.9, 0.85, 0.95)), 3, ""),
                level_edge(Some(Spread::new(1.0, 0.99, 1.05)), 3, ""),
                level_edge(Some(Spread::new(1.0, 0.9, 1.05)), 3, ""),
                level_edge(None, 0, ""),
            ]),
            [Confirmed, Refuted, Inconclusive, Inconclusive]
        );
    }

    #[test]
    fn sigio_outcomes() {
        assert_eq!(
            outcomes([
                sigio(Some(Spread::new(2.5, 2.1, 3.0)), true, ""),
                sigio(Some(s(1.0)), false, ""),
                sigio(Some(Spread::new(1.1, 1.0, 1.2)), true, ""),
                sigio(Some(Spread::new(1.4, 1.2, 1.6)), true, ""),
                sigio(None, true, ""),
            ]),
            [Confirmed, Confirmed, Refuted, Partly, Inconclusive]
        );
    }

    #[test]
    fn uring_outcomes() {
        assert_eq!(
            outcomes([
                uring(Ok((3, 3)), ""),
                uring(Ok((0, 3)), ""),
                uring(Ok((1, 3)), ""),
                uring(Ok((0, 0)), ""),
                uring(Err("io_uring is disabled".into()), ""),
            ]),
            [Refuted, Confirmed, Partly, Inconclusive, Inconclusive]
        );
    }

    #[test]
    fn memory_outcomes() {
        assert_eq!(
            outcomes([
                kernel_memory(Some((9000, 6.6, 0.5))),
                kernel_memory(Some((9000, 12.0, 1.0))),
                kernel_memory(Some((9000, 40.0, 1.0))),
                kernel_memory(Some((9000, -1.0, 1.0))),
                kernel_memory(None),
            ]),
            [Confirmed, Partly, Refuted, Inconclusive, Inconclusive]
        );
        assert_eq!(
            outcomes([
                thread_memory(Some((9000, 10.0, 1.0))),
                thread_memory(Some((9000, 2.0, 1.0))),
                thread_memory(Some((9000, 1.2, 1.0))),
                thread_memory(None),
            ]),
            [Confirmed, Partly, Refuted, Inconclusive]
        );
        assert_eq!(
            outcomes([
                completion_buffers(Some((9000, 5.5, 1.0))),
                completion_buffers(Some((9000, 3.0, 1.0))),
                completion_buffers(Some((9000, 1.2, 1.0))),
                completion_buffers(None),
            ]),
            [Confirmed, Partly, Refuted, Inconclusive]
        );
    }

    #[test]
    fn connrate_outcomes() {
        assert_eq!(
            outcomes([
                connrate(Some(Spread::new(5000.0, 4000.0, 6000.0)), Bound::Client, ""),
                connrate(Some(s(2000.0)), Bound::Server, ""),
                connrate(Some(s(2000.0)), Bound::Client, ""),
                connrate(Some(Spread::new(3000.0, 2000.0, 4000.0)), Bound::Server, ""),
                connrate(None, Bound::Server, ""),
            ]),
            [Confirmed, Refuted, Inconclusive, Inconclusive, Inconclusive]
        );
    }

    #[test]
    fn herd_outcomes() {
        assert_eq!(
            outcomes([
                herd(4, Some(s(4.0)), Some(s(1.0)), Some(s(1.0))),
                herd(4, Some(s(4.0)), Some(s(1.0)), Some(s(3.0))),
                herd(4, Some(s(4.0)), Some(s(3.0)), Some(s(3.0))),
                herd(4, Some(s(1.0)), Some(s(1.0)), Some(s(1.0))),
                herd(
                    4,
                    Some(Spread::new(2.0, 1.0, 3.0)),
                    Some(s(1.0)),
                    Some(s(1.0))
                ),
                herd(4, None, Some(s(1.0)), Some(s(1.0))),
            ]),
            [
                Confirmed,
                Partly,
                Refuted,
                Refuted,
                Inconclusive,
                Inconclusive
            ]
        );
    }

    #[test]
    fn threads_scaling_outcomes() {
        assert_eq!(
            outcomes([
                threads_scaling(Some(g(10.0, 40.0)), Some(g(10.0, 11.0)), 0.0, 1),
                threads_scaling(Some(g(10.0, 10.0)), Some(g(10.0, 10.0)), 5.0, 1),
                threads_scaling(Some(g(10.0, 10.5)), Some(g(10.0, 10.0)), 0.0, 1),
                threads_scaling(Some(g(10.0, 20.0)), Some(g(10.0, 18.0)), 0.0, 1),
                threads_scaling(None, Some(g(10.0, 10.0)), 0.0, 1),
            ]),
            [Confirmed, Confirmed, Refuted, Partly, Inconclusive]
        );
        let v = threads_scaling(Some(g(10.0, 10.5)), Some(g(10.0, 10.0)), 0.0, 1);
        assert!(
            v.evidence.contains("cannot run in parallel"),
            "{}",
            v.evidence
        );
    }

    #[test]
    fn blocking_outcomes() {
        assert_eq!(
            outcomes([
                blocking(Some((100, 99.0))),
                blocking(Some((100, 80.0))),
                blocking(Some((100, 0.0))),
                blocking(None),
            ]),
            [Confirmed, Partly, Refuted, Inconclusive]
        );
    }
}
