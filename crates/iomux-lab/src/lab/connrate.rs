//! Experiment 5: new connections accepted and answered per second.

use super::chart;
use super::report::{num, Section, Table, Verdict};
use super::Ctx;
use std::io;

pub(crate) fn run(ctx: &mut Ctx) -> io::Result<Section> {
    let duration = ctx.pick(3.0, 1.0).to_string();
    let slots = "32";
    let mut protos = vec!["echo"];
    if ctx.http {
        protos.push("http");
    }
    let mut table = Table::new(&[
        "server_threads",
        "proto",
        "connects_per_s",
        "p99_us",
        "errors",
    ]);
    let mut bars = Vec::new();
    let mut notes = Vec::new();
    let mut single = None;
    for proto in protos {
        for threads in ["1", "2"] {
            ctx.progress(format_args!(
                "connrate: {proto}, server --threads {threads}"
            ));
            let mut server =
                ctx.server(&["--backend", "epoll", "--proto", proto, "--threads", threads])?;
            let load = ctx.load(
                server.addr,
                &[
                    "--proto",
                    proto,
                    "--conns",
                    slots,
                    "--connect-per-request",
                    "--duration",
                    &duration,
                ],
            );
            let _ = server.stop();
            match load {
                Ok(r) => {
                    let rate = r.get("connects") / r.get("duration_s");
                    table.push(vec![
                        threads.into(),
                        proto.into(),
                        format!("{rate:.0}"),
                        format!("{:.1}", r.get("p99")),
                        format!("{}", r.get("errors")),
                    ]);
                    bars.push((format!("{proto}, {threads} thread(s)"), rate));
                    if threads == "1" && proto == "echo" {
                        single = Some(rate);
                    }
                }
                Err(e) => notes.push(format!("{proto} --threads {threads}: {e}")),
            }
        }
    }
    notes.push(format!(
        "The server is pinned to one core{}, so --threads 2 cannot use a second core here; the row shows the cost of the second loop, not scaling.",
        if ctx.server_cpu.is_some() { " (cpu 0)" } else { "" }
    ));
    let file = "connrate.svg";
    chart::bars(
        &ctx.out(file),
        "Connections per second (one request each)",
        "connections per second",
        &bars,
    )?;
    let verdicts = single
        .map(|rate| {
            vec![Verdict {
                claim: "a single thread handled ~2.9K new connections/s",
                verdict: format!(
                    "One epoll loop accepted, answered and closed {} connections/s here ({slots} concurrent connecting clients, each connection one 64-byte echo).",
                    num(rate)
                ),
            }]
        })
        .unwrap_or_default();
    Ok(Section {
        name: "connrate",
        title: "Connection rate",
        method: format!("`iomux load --connect-per-request --conns {slots}`: each of {slots} slots connects, sends one request, reads the answer, closes (with RST, so no TIME_WAIT piles up on the client) and reconnects, for {duration} s."),
        tables: vec![("New connections per second".into(), table, Some("connrate.csv".into()))],
        charts: vec![file.into()],
        verdicts,
        notes,
    })
}
