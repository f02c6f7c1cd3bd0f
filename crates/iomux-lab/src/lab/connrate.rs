//! Experiment: new connections accepted and answered per second.

use super::chart;
use super::cpu::{CoreTimes, CpuSample};
use super::judge::{self, Bound};
use super::report::{Section, Spread, Table};
use super::rounds::{measure_served, rotated, FAILED};
use super::Ctx;
use std::io;

/// What a connect-per-request run measured: connections/s, p99, errors,
/// server CPU microseconds per connection, and the bound.
type Measured = (f64, f64, f64, f64, Bound);

/// One connect-per-request run.
fn measure(
    ctx: &Ctx,
    proto: &str,
    threads: &str,
    slots: &str,
    duration: &str,
) -> io::Result<Measured> {
    let mut server = ctx.server(&["--backend", "epoll", "--proto", proto, "--threads", threads])?;
    let load_threads = ctx.load_threads().to_string();
    let (cpu0, cores0) = (CpuSample::of(server.pid()), CoreTimes::now());
    let load = ctx.load(
        server.addr,
        &[
            "--proto",
            proto,
            "--conns",
            slots,
            "--connect-per-request",
            "--duration",
            duration,
            "--threads",
            &load_threads,
        ],
    );
    let (cpu1, cores1) = (CpuSample::of(server.pid()), CoreTimes::now());
    let _ = server.stop();
    let r = load?;
    let connects = r.get("connects");
    let cpu = match (cpu0, cpu1) {
        (Ok(a), Ok(b)) if connects > 0.0 => a.until(&b) * 1e6 / connects,
        _ => f64::NAN,
    };
    let bound = Bound::of(
        cores0.busy_pct(&cores1, &ctx.server_cpus),
        cores0.busy_pct(&cores1, &ctx.load_cpus),
    );
    Ok((
        connects / r.get("duration_s"),
        r.get("p99"),
        r.get("errors"),
        cpu,
        bound,
    ))
}

pub(crate) fn run(ctx: &mut Ctx) -> io::Result<Section> {
    let (rounds, duration) = ctx.rounds();
    let duration = duration.to_string();
    let slots = "32";
    let mut protos = vec!["echo"];
    if ctx.http && !ctx.config.quick {
        protos.push("http");
    }
    let mut table = Table::new(&[
        "round",
        "server_threads",
        "proto",
        "connects_per_s",
        "p99_us",
        "errors",
        "server_cpu_us_per_conn",
        "bound",
    ]);
    let mut notes = Vec::new();
    let configs: Vec<(&str, &str)> = protos
        .iter()
        .flat_map(|&p| ["1", "2"].map(|t| (p, t)))
        .collect();
    let mut rates: Vec<Vec<f64>> = vec![Vec::new(); configs.len()];
    let mut single_bounds = Vec::new();
    for round in 0..rounds {
        for at in rotated(round, configs.len()) {
            let (proto, threads) = configs[at];
            let what = format!("{proto}, server --threads {threads}");
            ctx.round_progress("connrate", round, rounds, &what);
            let retrying = || {
                let again = format!("{what}: served nothing, trying once more");
                ctx.round_progress("connrate", round, rounds, again);
            };
            let run = || measure(ctx, proto, threads, slots, &duration);
            let served = |m: &Measured| m.0 > 0.0;
            match measure_served(run, served, retrying, &duration) {
                Ok((rate, p99, errors, cpu, bound)) => {
                    table.push(vec![
                        (round + 1).to_string(),
                        threads.into(),
                        proto.into(),
                        format!("{rate:.0}"),
                        format!("{p99:.1}"),
                        format!("{errors}"),
                        format!("{cpu:.1}"),
                        bound.as_str().into(),
                    ]);
                    rates[at].push(rate);
                    if (proto, threads) == ("echo", "1") {
                        single_bounds.push(bound);
                    }
                }
                Err(why) => notes.push(format!(
                    "connrate, round {}: {proto} --threads {threads}: {FAILED}: {why}",
                    round + 1
                )),
            }
        }
    }
    notes.push(format!(
        "The server is pinned to {} core(s), so --threads 2 {}; the row shows the cost of the second loop, not scaling.",
        ctx.server_cpus.len().max(1),
        if ctx.server_cpus.len() == 1 { "cannot use a second core here" } else { "may use more cores" }
    ));
    let bars: Vec<(String, Spread)> = configs
        .iter()
        .zip(&rates)
        .filter_map(|((p, t), r)| Some((format!("{p}, {t} thread(s)"), Spread::of(r)?)))
        .collect();
    let file = "connrate.svg";
    chart::bars(
        &ctx.out(file),
        "Connections per second, one request each (median and range)",
        "connections per second",
        &bars,
    )?;
    let single = Spread::of(&rates[0]);
    // The bound most rounds of the one-loop echo runs had.
    let bound = [Bound::Server, Bound::Client, Bound::Both, Bound::Neither]
        .into_iter()
        .max_by_key(|b| single_bounds.iter().filter(|x| *x == b).count())
        .unwrap_or(Bound::Neither);
    Ok(Section {
        name: "connrate",
        title: "Connection rate",
        method: format!("`iomux load --connect-per-request --conns {slots}`: each of {slots} slots connects, sends one request, reads the answer, closes (with RST, so no TIME_WAIT piles up on the client) and reconnects, for {duration} s; {rounds} rounds, each starting one configuration later."),
        tables: vec![("New connections per second, every round".into(), table, Some("connrate.csv".into()))],
        charts: vec![file.into()],
        verdicts: vec![judge::connrate(
            single,
            bound,
            &format!("{slots} concurrent connecting clients, each connection one 64-byte echo, {rounds} rounds."),
        )],
        notes,
    })
}
