"""Interleaved HTTP benchmark of iomux against nginx and hyper (see http-peers.sh).

Every server is pinned to CPU 0, `wrk -t1` to CPU 1. Each round runs every
profile against every server in turn (A B C, B C A, C A B ...: each round
starts one server later), so a noisy neighbour on the shared machine hits all
of them alike; the table reports medians over rounds, and each ratio is the
median of the per-round ratios with their range.

Per run it records: requests/s (wrk), server CPU time (utime+stime of every
server process from /proc, delta over the run) per request served, and how
busy wrk's own core was (wrk's CPU time / wall time; near 100% means wrk, not
the server, was the bottleneck).
"""

import argparse
import json
import os
import re
import socket
import statistics
import sys
import tempfile
import time
from email.utils import parsedate_to_datetime

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import servers as srv  # noqa: E402

HERE = os.path.dirname(os.path.abspath(__file__))
PIPELINE_LUA = os.path.join(HERE, "pipeline.lua")
# TechEmpower's request headers.
HEADERS = [
    "-H", "Accept: text/plain,text/html;q=0.9,application/xhtml+xml;q=0.9,application/xml;q=0.8,*/*;q=0.7",
    "-H", "Connection: keep-alive",
]
PROFILES = {
    # name: (connections, wrk extra args, path)
    "plain-100": (100, [], "/"),
    "pipelined-256x16": (256, ["-s", PIPELINE_LUA], "/plaintext"),
    # TechEmpower's JSON test: serde_json per request in iomux and hyper
    # (nginx and the floor peers have no JSON route: they sit these out).
    "json-100": (100, [], "/json"),
    "json-pipelined-256x16": (256, ["-s", PIPELINE_LUA], "/json"),
}
JSON_SERVERS = ("iomux", "hyper", "iomux-alt")


def serves(name, profile):
    """Whether server `name` runs `profile` (only real JSON routes run the JSON ones)."""
    return not profile.startswith("json") or name in JSON_SERVERS
ORDER = ("iomux", "nginx", "hyper", "iomux-alt", "floor", "floor-uring")


def run_wrk(server, profile, duration, cpu):
    conns, extra, path = PROFILES[profile]
    argv = ["taskset", "-c", str(cpu), "wrk", "-t1", f"-c{conns}", f"-d{duration}s", *HEADERS, *extra, server.url(path)]
    if profile.startswith("pipelined"):
        argv += ["--", "16"]
    run = srv.measure_wrk(server, argv)
    requests = run.requests
    rps = float(re.search(r"Requests/sec:\s*([\d.]+)", run.out).group(1))
    server_user = run.user_ticks / srv.CLK_TCK
    server_sys = run.sys_ticks / srv.CLK_TCK
    server_cpu = server_user + server_sys
    return {
        "server": server.name,
        "profile": profile,
        "requests": requests,
        "rps": rps,
        "server_cpu_s": server_cpu,
        "cpu_us_per_req": server_cpu * 1e6 / max(requests, 1),
        # User space and kernel apart: the kernel's share is what a server
        # cannot shed by being smarter (see the floor peer).
        "user_us_per_req": server_user * 1e6 / max(requests, 1),
        "sys_us_per_req": server_sys * 1e6 / max(requests, 1),
        "server_core_busy": server_cpu / run.wall,
        "wrk_core_busy": run.wrk_cpu / run.wall,
        "errors": run.socket_errors + run.non2xx,
    }


def fetch_head(port, path="/plaintext"):
    """One raw HTTP/1.1 exchange; returns (status line, {lowercase name: value}, body)."""
    with socket.create_connection(("127.0.0.1", port), timeout=5) as s:
        s.sendall(f"GET {path} HTTP/1.1\r\nHost: localhost\r\nConnection: close\r\n\r\n".encode())
        data = b""
        # Read the head, then as much body as Content-Length announces (or until close).
        while b"\r\n\r\n" not in data and (chunk := s.recv(65536)):
            data += chunk
        head, _, body = data.partition(b"\r\n\r\n")
        lines = head.decode("latin-1").split("\r\n")
        headers = {}
        for line in lines[1:]:
            name, _, value = line.partition(":")
            headers[name.strip().lower()] = value.strip()
        want = int(headers["content-length"]) if headers.get("content-length", "").isdigit() else None
        while (want is None or len(body) < want) and (chunk := s.recv(65536)):
            body += chunk
    return lines[0], headers, body


def check_compliance(server):
    """TechEmpower's plaintext rules: Server, a Date that changes each second,
    Content-Type text/plain, Content-Length; returns a list of failures."""
    problems = []
    status, h, body = fetch_head(server.port)
    if not status.startswith("HTTP/1.1 200"):
        problems.append(f"status {status!r}")
    if body != b"Hello, World!":
        problems.append(f"body {body!r}")
    for name in ("server", "date", "content-type", "content-length"):
        if name not in h:
            problems.append(f"no {name} header")
    if not h.get("content-type", "").startswith("text/plain"):
        problems.append(f"content-type {h.get('content-type')!r}")
    if h.get("content-length") != str(len(body)):
        problems.append(f"content-length {h.get('content-length')!r} for a {len(body)}-byte body")
    try:
        first = parsedate_to_datetime(h["date"])
        if abs(first.timestamp() - time.time()) > 3:
            problems.append(f"date {h['date']!r} is not now")
    except (KeyError, TypeError, ValueError):
        problems.append(f"date {h.get('date')!r} is not an HTTP date")
    time.sleep(1.2)
    _, h2, _ = fetch_head(server.port)
    if h2.get("date") == h.get("date"):
        problems.append(f"date did not change over 1.2 s ({h.get('date')!r})")
    print(f"{server.name} response headers: {h}", file=sys.stderr)
    return problems


def median(rows, server, profile, key):
    """Median of `key` over the rounds; NaN when that pair was not run."""
    values = [r[key] for r in rows if r["server"] == server and r["profile"] == profile]
    return statistics.median(values) if values else float("nan")


def round_ratios(rows, a, b, profile, key):
    """`key` of server `a` over server `b`, one ratio per round both ran in.

    The VM's speed drifts by 30% over tens of seconds; runs of one round are
    close in time, so their ratio is steadier than a ratio of medians."""
    def by_round(server):
        return {r["round"]: r[key] for r in rows if r["server"] == server and r["profile"] == profile}

    num, den = by_round(a), by_round(b)
    return [num[k] / den[k] for k in sorted(num) if k in den and den[k]]


def report(rows, rounds, duration):
    out = []
    out.append(f"Medians over {rounds} interleaved rounds of {duration} s (server on cpu 0, wrk -t1 on cpu 1)\n")
    out.append(
        "| profile | server | requests/s | server CPU us/request | of which user | of which kernel "
        "| server core busy | wrk core busy |"
    )
    out.append("| --- | --- | ---: | ---: | ---: | ---: | ---: | ---: |")
    for profile in PROFILES:
        for s in ORDER:
            if not any(r["server"] == s and r["profile"] == profile for r in rows):
                continue
            out.append(
                f"| {profile} | {s} | {median(rows, s, profile, 'rps'):,.0f} | "
                f"{median(rows, s, profile, 'cpu_us_per_req'):.3f} | "
                f"{median(rows, s, profile, 'user_us_per_req'):.3f} | "
                f"{median(rows, s, profile, 'sys_us_per_req'):.3f} | "
                f"{median(rows, s, profile, 'server_core_busy'):.0%} | "
                f"{median(rows, s, profile, 'wrk_core_busy'):.0%} |"
            )
    out.append("")
    # (label, numerator, denominator, profile, key, goal)
    ratios = [
        ("iomux/nginx CPU per request, 100 keep-alive conns", "iomux", "nginx", "plain-100", "cpu_us_per_req", "goal <= 0.6"),
        ("iomux/nginx requests/s, 100 keep-alive conns", "iomux", "nginx", "plain-100", "rps", ""),
        ("iomux/hyper CPU per request, 100 keep-alive conns", "iomux", "hyper", "plain-100", "cpu_us_per_req", ""),
        ("iomux/hyper requests/s, pipelined 16 x 256 conns", "iomux", "hyper", "pipelined-256x16", "rps", "goal >= 2.5"),
        ("iomux/hyper CPU per pipelined request", "iomux", "hyper", "pipelined-256x16", "cpu_us_per_req",
         "goal <= 0.4 where wrk saturates its core first"),
        ("iomux/nginx CPU per pipelined request", "iomux", "nginx", "pipelined-256x16", "cpu_us_per_req", ""),
        ("iomux/iomux-alt CPU per request, 100 keep-alive conns", "iomux", "iomux-alt", "plain-100", "cpu_us_per_req", ""),
        ("iomux/iomux-alt CPU per pipelined request", "iomux", "iomux-alt", "pipelined-256x16", "cpu_us_per_req", ""),
        ("floor/nginx CPU per request, 100 keep-alive conns", "floor", "nginx", "plain-100", "cpu_us_per_req",
         "the kernel's share: no server doing one recv and one send per request goes below it"),
        ("iomux/floor CPU per request, 100 keep-alive conns", "iomux", "floor", "plain-100", "cpu_us_per_req",
         "what iomux costs above that floor; goal <= 1.05"),
        ("floor-uring/nginx CPU per request, 100 keep-alive conns", "floor-uring", "nginx", "plain-100", "cpu_us_per_req",
         "the same floor on io_uring"),
        ("floor/hyper CPU per pipelined request", "floor", "hyper", "pipelined-256x16", "cpu_us_per_req", ""),
        ("iomux/floor CPU per pipelined request", "iomux", "floor", "pipelined-256x16", "cpu_us_per_req",
         "goal <= 1.05"),
        ("iomux/hyper CPU per /json request, 100 keep-alive conns", "iomux", "hyper", "json-100", "cpu_us_per_req",
         "goal <= 0.92"),
        ("iomux/hyper CPU per pipelined /json request", "iomux", "hyper", "json-pipelined-256x16", "cpu_us_per_req",
         "goal <= 0.6"),
    ]
    out.append("Ratios: the median of the per-round ratios (each from two runs a few seconds apart), then their range.")
    for label, a, b, profile, key, goal in ratios:
        per_round = round_ratios(rows, a, b, profile, key)
        if per_round:
            out.append(srv.ratio_line(label, per_round, goal))
    if errors := srv.wrk_errors(rows, "profile"):
        out.append(errors)
    return "\n".join(out)


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--rounds", type=int, default=5)
    ap.add_argument("--duration", type=int, default=5, help="seconds per wrk run")
    ap.add_argument(
        "--servers",
        default="iomux,nginx,hyper,floor,floor-uring",
        help="comma-separated subset of iomux,nginx,hyper,iomux-alt,floor,floor-uring (iomux-alt: the build at $IOMUX_ALT, for A/B runs; "
        "floor, floor-uring: bench/floor-peer on epoll or io_uring, the kernel floor of one recv and one send per request, "
        "not a real server)",
    )
    ap.add_argument("--profiles", default=",".join(PROFILES), help="comma-separated subset of " + ",".join(PROFILES))
    ap.add_argument("--json", help="also write every run as JSON lines to this file")
    args = ap.parse_args()
    which = [s for s in ORDER if s in args.servers.split(",")]
    profiles = [p for p in PROFILES if p in args.profiles.split(",")]
    if not which or not profiles:
        sys.exit("nothing to run: check --servers and --profiles")
    workdir = tempfile.mkdtemp(prefix="iomux-bench-")
    servers = srv.start_all(cpu=0, workdir=workdir, which=which)
    rows = []
    problems, compliance = [], ""
    try:
        if "iomux" in servers:
            problems = check_compliance(servers["iomux"])
            compliance = (
                "iomux response is NOT TechEmpower-compliant: " + "; ".join(problems)
                if problems
                else "iomux response is TechEmpower-compliant (Server, Date changing each second, text/plain, Content-Length)"
            )
            print(compliance, file=sys.stderr)
        for name, s in servers.items():  # warm-up: connections, caches, page faults
            for p in profiles:
                if serves(name, p):
                    run_wrk(s, p, 1, cpu=1)
        for rnd in range(1, args.rounds + 1):
            # Each round starts one server later, so no server always runs first.
            order = which[(rnd - 1) % len(which):] + which[: (rnd - 1) % len(which)]
            for p in profiles:
                for name in (n for n in order if serves(n, p)):
                    row = run_wrk(servers[name], p, args.duration, cpu=1)
                    row["round"] = rnd
                    rows.append(row)
                    print(
                        f"round {rnd} {p:18} {name:11} {row['rps']:>12,.0f} rps "
                        f"{row['cpu_us_per_req']:7.3f} us/req server {row['server_core_busy']:4.0%} "
                        f"wrk {row['wrk_core_busy']:4.0%} {row['errors']}",
                        file=sys.stderr,
                    )
    finally:
        srv.stop_all(servers)
    if args.json:
        with open(args.json, "w") as f:
            for r in rows:
                f.write(json.dumps(r) + "\n")
    print(report(rows, args.rounds, args.duration))
    if compliance:
        print("\n" + compliance)
    # The figures are printed either way, but a non-compliant response fails the run.
    sys.exit(1 if problems else 0)


if __name__ == "__main__":
    main()
