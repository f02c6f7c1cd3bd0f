//! Experiment 4: memory per idle connection, in the server process and in the kernel.

use super::chart::{self, Point, Series};
use super::engines::{Engine, ENGINES};
use super::judge;
use super::machine::meminfo_kib;
use super::report::{Section, Spread, Table};
use super::rounds::rotated;
use super::Ctx;
use std::io;
use std::time::Duration;

/// Kernel-wide figures: slab memory (KiB) and /proc/net/sockstat's TCP line.
#[derive(Debug, Clone, Copy)]
struct Kernel {
    slab_kib: f64,
    tcp_inuse: f64,
    tcp_mem_pages: f64,
}

fn kernel() -> Kernel {
    let meminfo = std::fs::read_to_string("/proc/meminfo").unwrap_or_default();
    let sockstat = std::fs::read_to_string("/proc/net/sockstat").unwrap_or_default();
    let tcp = sockstat
        .lines()
        .find(|l| l.starts_with("TCP:"))
        .unwrap_or("");
    let field = |name: &str| {
        let mut it = tcp.split_whitespace();
        while let Some(w) = it.next() {
            if w == name {
                return it.next().and_then(|v| v.parse().ok()).unwrap_or(f64::NAN);
            }
        }
        f64::NAN
    };
    Kernel {
        slab_kib: meminfo_kib(&meminfo, "Slab:").map_or(f64::NAN, |v| v as f64),
        tcp_inuse: field("inuse"),
        tcp_mem_pages: field("mem"),
    }
}

struct Measured {
    engine: Engine,
    conns: usize,
    rss_per_conn: f64,
    slab_per_conn: f64,
    inuse_delta: f64,
    mem_pages_delta: f64,
}

fn measure(ctx: &Ctx, engine: Engine, conns: usize) -> io::Result<Measured> {
    let mut args = engine.args();
    args.extend(["--proto", "echo", "--idle-timeout", "600"]);
    let mut server = ctx.server(&args)?;
    std::thread::sleep(Duration::from_millis(100));
    let (rss0, fds0, k0) = (server.rss_kib()?, server.fd_count(), kernel());
    let idle = conns.to_string();
    let mut load = ctx.spawn_load(
        server.addr,
        &[
            "--proto",
            "echo",
            "--conns",
            "0",
            "--idle",
            &idle,
            "--duration",
            "120",
            "--timeout",
            "60",
        ],
    )?;
    let held = server.wait_for_fds(fds0 + conns, Duration::from_secs(30));
    // Let the engine finish registering (and, for threads, start) the last ones.
    std::thread::sleep(Duration::from_millis(300));
    let (rss1, k1, fds1) = (server.rss_kib()?, kernel(), server.fd_count());
    let _ = load.kill();
    let _ = load.wait();
    let _ = server.stop();
    if !held {
        return Err(io::Error::other(format!(
            "the server held only {} of {conns} connections after 30 s",
            fds1.saturating_sub(fds0)
        )));
    }
    let n = conns as f64;
    Ok(Measured {
        engine,
        conns,
        rss_per_conn: (rss1 as f64 - rss0 as f64) / n,
        slab_per_conn: (k1.slab_kib - k0.slab_kib) / n,
        inuse_delta: k1.tcp_inuse - k0.tcp_inuse,
        mem_pages_delta: k1.tcp_mem_pages - k0.tcp_mem_pages,
    })
}

pub(crate) fn run(ctx: &mut Ctx) -> io::Result<Section> {
    let (epoll, threads) = (Engine::epoll_edge(), Engine::backend("threads"));
    let uring = ENGINES.iter().copied().find(Engine::needs_uring);
    let engines: Vec<Engine> = [epoll, Engine::backend("poll"), threads]
        .into_iter()
        .chain(ENGINES.iter().copied().filter(Engine::is_newer))
        .collect();
    let sizes: Vec<usize> = ctx.pick(vec![1000, 3000, 5000, 7000, 9000], vec![1000]);
    let largest_size = *sizes.last().unwrap();
    let mut points = Vec::new();
    let mut notes: Vec<String> = ctx
        .uring_skipped("The uring (completion) engine")
        .into_iter()
        .collect();
    let engines: Vec<Engine> = engines
        .into_iter()
        .filter(|e| !(e.needs_uring() && ctx.uring_unavailable.is_some()))
        .collect();
    for &n in &sizes {
        // Quick grid: the newer models at the smallest size only.
        let here: Vec<Engine> = engines
            .iter()
            .copied()
            .filter(|e| !(ctx.config.quick && e.is_newer() && n > sizes[0]))
            .collect();
        // Rounds (each starting one engine later) where the verdicts read.
        let rounds = if n == largest_size { ctx.rounds().0 } else { 1 };
        for round in 0..rounds {
            for at in rotated(round, here.len()) {
                let engine = here[at];
                let what = format_args!("{} with {n} idle connections", engine.label());
                ctx.round_progress("memory", round, rounds, what);
                match measure(ctx, engine, n) {
                    Ok(p) => points.push(p),
                    Err(e) => notes.push(format!("{} at {n}: {e}", engine.label())),
                }
            }
        }
    }
    let spread = |e: Engine, n: usize, f: fn(&Measured) -> f64| {
        Spread::of(
            &points
                .iter()
                .filter(|p| p.engine == e && p.conns == n)
                .map(f)
                .collect::<Vec<_>>(),
        )
    };
    let mut table = Table::new(&[
        "backend",
        "conns",
        "rss_kib_per_conn",
        "rss_min",
        "rss_max",
        "rounds",
    ]);
    let mut kernel_table = Table::new(&[
        "backend",
        "conns",
        "slab_kib_per_conn",
        "tcp_sockets_delta",
        "tcp_mem_pages_delta",
    ]);
    for &e in &engines {
        for &n in &sizes {
            let Some(rss) = spread(e, n, |p| p.rss_per_conn) else {
                continue;
            };
            let med = |f: fn(&Measured) -> f64| spread(e, n, f).map_or(f64::NAN, |s| s.median);
            let count = points
                .iter()
                .filter(|p| p.engine == e && p.conns == n)
                .count();
            table.push(vec![
                e.backend.into(),
                n.to_string(),
                format!("{:.2}", rss.median),
                format!("{:.2}", rss.lo),
                format!("{:.2}", rss.hi),
                count.to_string(),
            ]);
            kernel_table.push(vec![
                e.backend.into(),
                n.to_string(),
                format!("{:.2}", med(|p| p.slab_per_conn)),
                format!("{:.0}", med(|p| p.inuse_delta)),
                format!("{:.0}", med(|p| p.mem_pages_delta)),
            ]);
        }
    }
    // One line per engine's process RSS, and the kernel's slab (measured with epoll).
    let line = |label: String, e: Engine, per_conn: fn(&Measured) -> f64| Series {
        label,
        points: sizes
            .iter()
            .filter_map(|&n| {
                Some(Point {
                    x: n as f64,
                    y: spread(e, n, per_conn)?,
                })
            })
            .collect(),
    };
    let series: Vec<Series> = engines
        .iter()
        .map(|&e| {
            line(format!("{} (process RSS)", e.backend), e, |p| {
                p.rss_per_conn
            })
        })
        .chain(std::iter::once(line(
            "kernel slab (both ends)".into(),
            epoll,
            |p| p.slab_per_conn,
        )))
        .filter(|s| !s.points.is_empty())
        .collect();
    let file = "memory.svg";
    chart::lines(
        &ctx.out(file),
        "Memory per idle connection",
        "idle connections",
        "KiB per connection",
        &series,
    )?;
    let rss_at = |e: Engine| Some(spread(e, largest_size, |p| p.rss_per_conn)?.median);
    let pair = |a: Engine| Some((largest_size, rss_at(a)?, rss_at(epoll)?));
    let verdicts = vec![
        judge::kernel_memory(
            spread(epoll, largest_size, |p| p.slab_per_conn)
                .zip(rss_at(epoll))
                .map(|(slab, rss)| (largest_size, slab.median, rss)),
        ),
        judge::thread_memory(pair(threads)),
        match (uring, &ctx.uring_unavailable) {
            (Some(u), None) => judge::completion_buffers(pair(u)),
            _ => judge::completion_buffers(None),
        },
    ];
    Ok(Section {
        name: "memory",
        title: "Memory per idle connection",
        method: "For each engine and count, a fresh `iomux serve --proto echo` is started; `iomux load --conns 0 --idle N` opens N connections and holds them; once the server holds N more descriptors, its VmRSS (/proc/PID/status), the kernel's Slab (/proc/meminfo) and /proc/net/sockstat are read again. Figures are the growth divided by N; at the largest N, the median of rounds (each starting one engine later), with the range. `sigio` is the event loop over signal-driven readiness (per connection the same state as epoll's, plus the O_ASYNC owner set on the socket); `uring` is the io_uring completion engine, whose receive buffers come from one provided-buffer ring per loop, set up when the loop starts, not per connection.".into(),
        tables: vec![
            ("Server resident memory per idle connection (KiB)".into(), table, Some("memory.csv".into())),
            ("Kernel memory (both ends of each loopback connection)".into(), kernel_table, Some("kernel_memory.csv".into())),
        ],
        charts: vec![file.into()],
        verdicts,
        notes,
    })
}
