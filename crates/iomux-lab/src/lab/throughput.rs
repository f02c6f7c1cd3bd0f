//! Experiments 2 and 3: throughput on every engine with idle connections,
//! and epoll level vs edge explained by the engine's counters.

use super::chart::{self, Series};
use super::report::{median, num, Section, Table, Verdict};
use super::Ctx;
use std::io;

/// One server configuration: `--backend`, optional `--trigger`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Engine {
    pub backend: &'static str,
    pub trigger: &'static str,
}

impl Engine {
    pub(crate) const fn new(backend: &'static str, trigger: &'static str) -> Engine {
        Engine { backend, trigger }
    }

    pub(crate) fn args(&self) -> Vec<&'static str> {
        let mut a = vec!["--backend", self.backend];
        if self.backend == "epoll" {
            a.extend(["--trigger", self.trigger]);
        }
        a
    }

    pub(crate) fn label(&self) -> String {
        if self.backend == "epoll" {
            format!("epoll {}", self.trigger)
        } else {
            self.backend.to_string()
        }
    }
}

const ALL_ENGINES: [Engine; 10] = [
    Engine::new("epoll", "edge"),
    Engine::new("epoll", "level"),
    Engine::new("epoll", "oneshot"),
    Engine::new("poll", "level"),
    Engine::new("select", "level"),
    Engine::new("threads", "level"),
    Engine::new("blocking", "level"),
    Engine::new("nonblocking", "level"),
    Engine::new("sigio", "edge"),
    Engine::new("uring", COMPLETION),
];

/// The trigger column of the completion engine: it is told when I/O is done,
/// not when it could be done, so it has no readiness trigger.
pub(crate) const COMPLETION: &str = "completion";

/// The two newer I/O models: signal-driven readiness and io_uring completions.
/// The quick grid measures each at one point only (echo, no idle connections).
pub(crate) const NEWER_MODELS: [Engine; 2] = [ALL_ENGINES[8], ALL_ENGINES[9]];

/// One measured run.
#[derive(Debug, Clone)]
pub(crate) struct Run {
    pub engine: Engine,
    pub proto: &'static str,
    pub conns: usize,
    pub idle: usize,
    pub rps: f64,
    pub p99_us: f64,
    pub requests: f64,
    pub errors: f64,
    pub starved: f64,
    pub stats: Vec<(String, u64)>,
}

impl Run {
    fn stat(&self, key: &str) -> f64 {
        self.stats
            .iter()
            .find(|(k, _)| k == key)
            .map_or(f64::NAN, |(_, v)| *v as f64)
    }
}

/// Counter `key` of the server per request the client counted, over `runs`
/// together.
fn per_request<'a>(runs: impl IntoIterator<Item = &'a Run>, key: &str) -> f64 {
    let (n, requests) = runs
        .into_iter()
        .fold((0.0, 0.0), |(n, q), r| (n + r.stat(key), q + r.requests));
    n / f64::max(requests, 1.0)
}

/// Start a server, run the load, stop the server and keep its counters.
pub(crate) fn measure(
    ctx: &Ctx,
    engine: Engine,
    proto: &'static str,
    conns: usize,
    idle: usize,
    duration: f64,
) -> io::Result<Run> {
    let mut args = engine.args();
    args.extend(["--proto", proto]);
    let mut server = ctx.server(&args)?;
    let (c, i, d) = (conns.to_string(), idle.to_string(), duration.to_string());
    let load = ctx.load(
        server.addr,
        &[
            "--proto",
            proto,
            "--conns",
            &c,
            "--idle",
            &i,
            "--duration",
            &d,
            "--timeout",
            "2",
        ],
    );
    let stats = server.stop()?;
    let load = load?;
    Ok(Run {
        engine,
        proto,
        conns,
        idle,
        rps: load.get("rps"),
        p99_us: load.get("p99"),
        requests: load.get("requests"),
        errors: load.get("errors"),
        starved: load.get("starved"),
        stats,
    })
}

pub(crate) fn run(ctx: &mut Ctx) -> io::Result<Section> {
    let engines: Vec<Engine> = if ctx.config.quick {
        ALL_ENGINES
            .iter()
            .copied()
            .filter(|e| {
                ["epoll", "poll", "select", "threads", "sigio", "uring"].contains(&e.backend)
                    && e.trigger != "oneshot"
            })
            .collect()
    } else {
        ALL_ENGINES.to_vec()
    };
    let idles: Vec<usize> = ctx.pick(vec![0, 1000, 5000, 9000], vec![0, 1000]);
    let duration = ctx.pick(3.0, 1.0);
    let conns = 100;
    let mut protos = vec!["echo"];
    if ctx.http {
        protos.push("http");
    }
    let mut table = Table::new(&[
        "backend", "trigger", "proto", "conns", "idle", "rps", "p99_us",
    ]);
    let mut errors = Table::new(&["backend", "trigger", "proto", "idle", "requests", "errors"]);
    let mut notes: Vec<String> = ctx
        .uring_skipped("The uring (completion) engine")
        .into_iter()
        .collect();
    let mut runs = Vec::new();
    for &proto in &protos {
        for &idle in &idles {
            // Quick grid: HTTP only without idle connections, on two engines.
            if ctx.config.quick && proto == "http" && idle > 0 {
                continue;
            }
            for &engine in &engines {
                if ctx.config.quick
                    && proto == "http"
                    && !["epoll", "poll"].contains(&engine.backend)
                {
                    continue;
                }
                if ctx.config.quick
                    && NEWER_MODELS.contains(&engine)
                    && (proto != "echo" || idle > 0)
                {
                    continue;
                }
                if engine.backend == "uring" && ctx.uring_unavailable.is_some() {
                    continue;
                }
                if engine.backend == "select" && idle + conns > 1000 {
                    continue;
                }
                if engine.backend == "blocking" && idle > 0 {
                    continue;
                }
                ctx.progress(format_args!(
                    "throughput: {} {proto} idle={idle}",
                    engine.label()
                ));
                match measure(ctx, engine, proto, conns, idle, duration) {
                    Ok(r) => {
                        table.push(vec![
                            engine.backend.into(),
                            engine.trigger.into(),
                            proto.into(),
                            conns.to_string(),
                            idle.to_string(),
                            format!("{:.0}", r.rps),
                            format!("{:.1}", r.p99_us),
                        ]);
                        if r.errors > 0.0 {
                            errors.push(vec![
                                engine.backend.into(),
                                engine.trigger.into(),
                                proto.into(),
                                idle.to_string(),
                                format!("{}", r.requests),
                                format!("{}", r.errors),
                            ]);
                        }
                        runs.push(r);
                    }
                    Err(e) => notes.push(format!("{} {proto} idle={idle}: {e}", engine.label())),
                }
            }
        }
    }
    notes.push("select is not run with 1,000 or more connections: descriptor numbers pass FD_SETSIZE (1024) and iomux's select engine refuses them.".into());
    if engines.iter().any(|e| e.backend == "blocking") {
        notes.push("blocking serves one connection at a time: with 100 active connections one is served and the other 99 wait (their requests are not answered within the run); it is not run with idle connections, which it would block on for ever.".into());
    }
    let mut series = Vec::new();
    for &engine in &engines {
        let points: Vec<(f64, f64)> = runs
            .iter()
            .filter(|r| r.engine == engine && r.proto == "echo")
            .map(|r| (r.idle as f64, r.rps))
            .collect();
        if !points.is_empty() {
            series.push(Series {
                label: engine.label(),
                points,
            });
        }
    }
    let file = "throughput.svg";
    chart::lines(
        &ctx.out(file),
        &format!("Echo, {conns} active connections"),
        "idle connections",
        "requests per second",
        &series,
    )?;
    let mut verdicts = Vec::new();
    let max_idle = *idles.last().unwrap();
    let at = |label: &str, idle: usize| {
        runs.iter()
            .find(|r| r.engine.label() == label && r.proto == "echo" && r.idle == idle)
            .map(|r| r.rps)
    };
    if let (Some(e0), Some(e1), Some(p0), Some(p1)) = (
        at("epoll edge", 0),
        at("epoll edge", max_idle),
        at("poll", 0),
        at("poll", max_idle),
    ) {
        verdicts.push(Verdict {
            claim: "idle connections slow select/poll servers but not epoll ones",
            verdict: format!(
                "Echo, 100 active: poll {} -> {} req/s from 0 to {max_idle} idle ({:+.0}%); epoll edge {} -> {} ({:+.0}%).",
                num(p0), num(p1), (p1 / p0 - 1.0) * 100.0, num(e0), num(e1), (e1 / e0 - 1.0) * 100.0
            ),
        });
    }
    if let Some(best) = runs
        .iter()
        .filter(|r| r.rps.is_finite())
        .max_by(|a, b| a.rps.total_cmp(&b.rps))
    {
        verdicts.push(Verdict {
            claim: "a single thread handled 276K requests/s (and 19K/s with 50K connections)",
            verdict: format!(
                "Best single-loop figure here: {} req/s ({} {}, {} active + {} idle, one client thread on the other core). 50K connections cannot be opened under this machine's 20,000-descriptor limit; the largest run had {} idle.",
                num(best.rps), best.engine.label(), best.proto, best.conns, best.idle, max_idle
            ),
        });
    }
    // The newer models against epoll edge, head to head: the grid runs each
    // engine once, minutes apart, and this VM's speed drifts more than that.
    // Only those the grid ran: their verdicts need the grid's counters too.
    let mut duelists = vec![Engine::new("epoll", "edge")];
    duelists.extend(NEWER_MODELS.iter().filter(|e| {
        runs.iter()
            .any(|r| r.engine == **e && r.proto == "echo" && r.idle == 0)
    }));
    let duel_rounds = if duelists.len() > 1 {
        head_to_head(ctx, "throughput: newer models", &duelists, &mut notes)
    } else {
        Vec::new()
    };
    let (counters, newer_verdicts) = newer_models(&runs, &duel_rounds);
    verdicts.extend(newer_verdicts);
    let epoll_runs: Vec<Run> = runs
        .iter()
        .filter(|r| r.engine.backend == "epoll")
        .cloned()
        .collect();
    ctx.trigger_runs = epoll_runs;
    let mut tables = vec![(
        "Requests per second and p99 latency (us)".into(),
        table,
        Some("throughput.csv".to_string()),
    )];
    if let Some(counters) = counters {
        tables.push((
            "The newer models beside epoll: the engine's counters per request (echo, no idle connections)".into(),
            counters,
            Some("newer_models.csv".to_string()),
        ));
    }
    if !duel_rounds.is_empty() {
        tables.push((
            "The newer models and epoll edge head to head (echo, 100 active, no idle; each round starts one engine later)".into(),
            rounds_table(&duel_rounds),
            Some("newer_models_rounds.csv".to_string()),
        ));
    }
    if !errors.rows.is_empty() {
        tables.push((
            "Runs with errors (timeouts, resets) counted by the load client".into(),
            errors,
            None,
        ));
    }
    Ok(Section {
        name: "throughput",
        title: "Throughput with idle connections",
        method: format!(
            "`iomux serve --backend B [--trigger T] --proto P` against `iomux load --conns {conns} --idle I --duration {duration}` (one client thread, closed loop, pipeline 1, 64-byte echo messages or GET /plaintext). The idle connections are opened first and stay silent. `sigio` is the event loop with readiness from signal-driven I/O (O_ASYNC, one real-time signal per readiness change, read synchronously from a signalfd; edge only). `uring` is the completion engine (trigger column `completion`): the kernel does the receives (multishot, into a shared provided-buffer ring) and the sends, and the loop only learns that they are done, so its `waits` are `io_uring_enter` calls and its reads and writes are completions and submissions, not system calls."
        ),
        tables,
        charts: vec![file.into()],
        verdicts,
        notes,
    })
}

pub(crate) fn level_edge(ctx: &mut Ctx) -> io::Result<Section> {
    let mut runs = std::mem::take(&mut ctx.trigger_runs);
    let mut notes = Vec::new();
    if runs.is_empty() {
        let duration = ctx.pick(3.0, 1.0);
        for idle in ctx.pick(vec![0, 1000, 5000], vec![0, 1000]) {
            for trigger in ["edge", "level", "oneshot"] {
                ctx.progress(format_args!("level_edge: epoll {trigger} idle={idle}"));
                match measure(
                    ctx,
                    Engine::new("epoll", trigger),
                    "echo",
                    100,
                    idle,
                    duration,
                ) {
                    Ok(r) => runs.push(r),
                    Err(e) => notes.push(format!("epoll {trigger} idle={idle}: {e}")),
                }
            }
        }
    }
    let mut table = Table::new(&[
        "trigger",
        "proto",
        "idle",
        "rps",
        "epoll_wait_per_req",
        "events_per_req",
        "reads_per_req",
        "eagain_reads_per_req",
        "writes_per_req",
    ]);
    let mut bars = Vec::new();
    for r in &runs {
        // The server answers every request the client counts (plus the few in flight at the end).
        let per = |k: &str| per_request([r], k);
        table.push(vec![
            r.engine.trigger.into(),
            r.proto.into(),
            r.idle.to_string(),
            format!("{:.0}", r.rps),
            format!("{:.3}", per("waits")),
            format!("{:.3}", per("events")),
            format!("{:.3}", per("reads")),
            format!("{:.3}", per("read_eagain")),
            format!("{:.3}", per("writes")),
        ]);
        if r.idle == 0 && r.proto == "echo" {
            bars.push((format!("{} req/s", r.engine.trigger), r.rps / 1000.0));
            bars.push((
                format!("{} syscalls/req", r.engine.trigger),
                (per("waits") + per("reads") + per("writes")) * 10.0,
            ));
        }
    }
    let file = "level_edge.svg";
    chart::bars(
        &ctx.out(file),
        "epoll triggers, echo, no idle: kreq/s and syscalls per request x10",
        "value",
        &bars,
    )?;
    let rounds = head_to_head(
        ctx,
        "level_edge",
        &[Engine::new("epoll", "edge"), Engine::new("epoll", "level")],
        &mut notes,
    );
    let mut verdicts = Vec::new();
    if let Some(d) = Duel::of(&rounds, 1, 0) {
        let faster = if d.lo > 1.05 {
            "edge is faster in every round"
        } else if d.hi < 1.0 / 1.05 {
            "level is faster in every round"
        } else {
            "no clear difference (the rounds do not agree on a winner by more than 5%)"
        };
        // Counters per request over all the rounds' runs of one trigger.
        let per = |at: usize, k: &str| per_request(rounds.iter().map(|r| &r[at]), k);
        let (edge, level) = (0, 1);
        let why = if per(edge, "read_eagain") > per(level, "read_eagain") + 0.3 {
            "Edge pays for draining with an extra read that ends in EAGAIN."
        } else {
            "The engine treats a short read as drained, so edge makes no extra EAGAIN read; what remains is epoll's own bookkeeping (level re-checks and re-queues each reported descriptor)."
        };
        verdicts.push(Verdict {
            claim: "edge-triggered is faster than level-triggered (disputed)",
            verdict: format!(
                "Echo, 100 active, no idle, {} rounds of edge and level back to back: edge {} vs level {} req/s (medians); edge/level {}: {faster}. Per request, edge makes {:.2} reads ({:.2} of them EAGAIN) and {:.3} epoll_waits; level makes {:.2} reads ({:.2} EAGAIN) and {:.3} epoll_waits. {why}",
                rounds.len(), num(d.rps_b), num(d.rps_a), d.ratio_text(),
                per(edge, "reads"), per(edge, "read_eagain"), per(edge, "waits"),
                per(level, "reads"), per(level, "read_eagain"), per(level, "waits"),
            ),
        });
    }
    if runs.iter().all(|r| r.stats.is_empty()) {
        notes.push("the server printed no counters when it stopped (its `iomux: stopped` line), so they are missing".into());
    }
    Ok(Section {
        name: "level_edge",
        title: "epoll level- vs edge-triggered, with the engine's counters",
        method: "The counters table: the epoll runs of the throughput experiment (or its own if that did not run), with the counters the server prints when it stops (`iomux: stopped ...; reads=.. read_eagain=.. waits=..`), divided by the requests the client counted. The verdict: rounds of edge and level run back to back (which goes first alternates), echo with 100 active connections, so both of a round see the same state of the machine; a shared machine drifts between faster and slower states over minutes, and one run of each, minutes apart, once showed a 45% difference either way. The verdict names a winner only when every round agrees by more than 5%.".into(),
        tables: vec![
            ("Counters per request".into(), table, Some("level_edge.csv".into())),
            ("Edge and level head to head".into(), rounds_table(&rounds), Some("level_edge_rounds.csv".into())),
        ],
        charts: vec![file.into()],
        verdicts,
        notes,
    })
}

/// Engines head to head, echo with 100 active connections: rounds of one
/// short run per engine, back to back, so all of a round see the same state
/// of the machine (a shared machine drifts between faster and slower states
/// over minutes). Each round starts one engine later, so none always runs
/// first. Returns each round's runs in the order of `engines`; a round where
/// an engine failed is left out, with a note.
fn head_to_head(
    ctx: &Ctx,
    tag: &str,
    engines: &[Engine],
    notes: &mut Vec<String>,
) -> Vec<Vec<Run>> {
    let (rounds, duration) = ctx.pick((7, 2.0), (3, 0.5));
    let mut kept = Vec::new();
    for round in 0..rounds {
        let mut got: Vec<Option<Run>> = vec![None; engines.len()];
        for k in 0..engines.len() {
            let at = (round + k) % engines.len();
            let engine = engines[at];
            ctx.progress(format_args!(
                "{tag}: round {}/{rounds}, {}",
                round + 1,
                engine.label()
            ));
            match measure(ctx, engine, "echo", 100, 0, duration) {
                Ok(r) if r.rps > 0.0 => got[at] = Some(r),
                Ok(_) => notes.push(format!(
                    "round {}: {} served nothing",
                    round + 1,
                    engine.label()
                )),
                Err(e) => notes.push(format!("round {}: {}: {e}", round + 1, engine.label())),
            }
        }
        if let Some(runs) = got.into_iter().collect::<Option<Vec<Run>>>() {
            kept.push(runs);
        }
    }
    kept
}

/// The runs of [`head_to_head`] as a table, one row per run:
/// `round,order,backend,trigger,rps` (`order` 1 ran first in its round).
fn rounds_table(rounds: &[Vec<Run>]) -> Table {
    let mut table = Table::new(&["round", "order", "backend", "trigger", "rps"]);
    for (round, runs) in rounds.iter().enumerate() {
        for (at, r) in runs.iter().enumerate() {
            let order = (at + runs.len() - round % runs.len()) % runs.len() + 1;
            table.push(vec![
                (round + 1).to_string(),
                order.to_string(),
                r.engine.backend.into(),
                r.engine.trigger.into(),
                format!("{:.0}", r.rps),
            ]);
        }
    }
    table
}

/// Engine `b` against engine `a` over the rounds of [`head_to_head`]: the
/// median of the per-round ratios of requests per second, their smallest and
/// largest, and the two engines' median requests per second.
#[derive(Debug, Clone, Copy, PartialEq)]
struct Duel {
    ratio: f64,
    lo: f64,
    hi: f64,
    rps_a: f64,
    rps_b: f64,
}

impl Duel {
    fn of(rounds: &[Vec<Run>], a: usize, b: usize) -> Option<Duel> {
        if rounds.is_empty() {
            return None;
        }
        let ratios: Vec<f64> = rounds.iter().map(|r| r[b].rps / r[a].rps).collect();
        let rps = |i: usize| median(&rounds.iter().map(|r| r[i].rps).collect::<Vec<_>>());
        Some(Duel {
            ratio: median(&ratios),
            lo: ratios.iter().copied().fold(f64::INFINITY, f64::min),
            hi: ratios.iter().copied().fold(0.0, f64::max),
            rps_a: rps(a),
            rps_b: rps(b),
        })
    }

    /// "x0.84 (median of the rounds' own ratios, from x0.80 to x0.90)"; it
    /// need not equal the ratio of the two medians.
    fn ratio_text(&self) -> String {
        format!(
            "x{:.2} (median of the rounds' own ratios, from x{:.2} to x{:.2})",
            self.ratio, self.lo, self.hi
        )
    }
}

/// The counters table and the verdicts for the two newer models (sigio and
/// the io_uring completion engine) beside epoll edge, echo without idle
/// connections; `None` when neither ran.
fn newer_models(runs: &[Run], rounds: &[Vec<Run>]) -> (Option<Table>, Vec<Verdict>) {
    let find = |engine: Engine, proto: &str| {
        runs.iter()
            .find(|r| r.engine == engine && r.proto == proto && r.idle == 0)
    };
    let epoll = Engine::new("epoll", "edge");
    let [sigio, uring] = NEWER_MODELS;
    if find(sigio, "echo").is_none() && find(uring, "echo").is_none() {
        return (None, Vec::new());
    }
    let mut table = Table::new(&[
        "backend",
        "trigger",
        "rps",
        "waits_per_req",
        "events_per_req",
        "reads_per_req",
        "writes_per_req",
    ]);
    let per = |r: &Run, k: &str| per_request([r], k);
    for engine in [epoll, sigio, uring] {
        if let Some(r) = find(engine, "echo") {
            table.push(vec![
                engine.backend.into(),
                engine.trigger.into(),
                format!("{:.0}", r.rps),
                format!("{:.3}", per(r, "waits")),
                format!("{:.3}", per(r, "events")),
                format!("{:.3}", per(r, "reads")),
                format!("{:.3}", per(r, "writes")),
            ]);
        }
    }
    let mut verdicts = Vec::new();
    // Requests per second from the rounds head to head (epoll edge first in
    // each round's list); the counters from the grid's runs.
    let duel = |engine: Engine| {
        let at = rounds.first()?.iter().position(|r| r.engine == engine)?;
        Duel::of(rounds, 0, at)
    };
    let counted = |engine: Engine| find(engine, "echo").zip(find(epoll, "echo"));
    if let (Some(d), Some((s, e))) = (duel(sigio), counted(sigio)) {
        verdicts.push(Verdict {
            claim: "signal-driven I/O is of little use for TCP servers (the signal says only that something happened)",
            verdict: format!(
                "Taken synchronously (a real-time signal carrying the descriptor, read from a signalfd) it serves: echo, 100 active, no idle, {} rounds head to head: sigio {} req/s vs epoll edge {} (medians); {}; with {:.2} events (descriptors named by signals) and {:.3} waits per request against epoll's {:.2} events and {:.3} waits.",
                rounds.len(), num(d.rps_b), num(d.rps_a), d.ratio_text(), per(s, "events"), per(s, "waits"), per(e, "events"), per(e, "waits")
            ),
        });
    }
    if let (Some(d), Some((u, e))) = (duel(uring), counted(uring)) {
        let http = find(uring, "http")
            .zip(find(epoll, "http"))
            .map_or(String::new(), |(u, e)| {
                format!(
                    " HTTP /plaintext, one run each: uring {} req/s vs epoll edge {} (x{:.2}).",
                    num(u.rps),
                    num(e.rps),
                    u.rps / e.rps.max(1.0)
                )
            });
        verdicts.push(Verdict {
            claim: "Linux has no true asynchronous network I/O (so completion-based servers are not possible there)",
            verdict: format!(
                "No longer so: the io_uring completion engine serves echo, 100 active, no idle, {} rounds head to head: uring {} req/s vs epoll edge {} (medians); {}; with {:.3} io_uring_enter calls per request against epoll's {:.3} epoll_waits plus {:.2} reads and {:.2} writes (system calls).{http}",
                rounds.len(), num(d.rps_b), num(d.rps_a), d.ratio_text(), per(u, "waits"), per(e, "waits"), per(e, "reads"), per(e, "writes")
            ),
        });
    }
    (Some(table), verdicts)
}
