"""Interleaved static-file benchmark (see static-peers.sh).

One directory of four files (1 KiB, 64 KiB, 1 MiB, 100 MiB, random bytes,
in the page cache) served by:
- iomux `serve --root DIR` on epoll (`iomux-epoll`) and on io_uring
  completions (`iomux-uring`), and on epoll without the open-file cache
  (`iomux-epoll-nocache`, `--open-file-cache 0`: every request opens,
  stats and closes its file); on request, `iomux-epoll-level` (`--trigger
  level`), and `iomux-epoll-alt` and `iomux-uring-alt` (the binary
  IOMUX_ALT names, for A/B runs of a change);
- nginx, one worker, `open_file_cache`, access log off, once with
  `sendfile on; tcp_nopush on;` (`nginx-sendfile`) and once with `sendfile
  off` (`nginx-copy`): the better of the two per size is what iomux is held to;
- the file floor of bench/floor-peer (`floor-file`: a canned head and one
  sendfile per writable socket, no parsing, no lookup: the least any server
  can do), on epoll;
- static-web-server (hyper/tokio) when `static-web-server` is on PATH
  (`cargo install static-web-server`; not in CI).

With --browser every request carries the fields a current browser sends
for a page's resource (BROWSER_HEADERS: among them `Accept-Encoding: gzip,
deflate, br, zstd`), so that parsing them and choosing among precompressed
siblings (the bench's files have none) is counted too.

Every server is pinned to CPU 0 and `wrk -t1` to CPU 1. Each round runs every
size against every server in turn, the order rotating by one server per
round, so a noisy neighbour hits all of them alike. Per run: requests/s,
body bytes/s, the server's CPU time (utime+stime from /proc) per request and
per MiB, and how busy each core was (which side was the bottleneck).
"""

import argparse
import json
import os
import shutil
import statistics
import sys
import tempfile

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import servers as srv  # noqa: E402

SIZES = {"1k": 1024, "64k": 64 * 1024, "1m": 1024 * 1024, "100m": 100 * 1024 * 1024}
# Connections per size: enough to keep one server core busy without
# queueing hundreds of 100 MiB responses.
CONNS = {"1k": 100, "64k": 50, "1m": 10, "100m": 2}
# Fields like those a current browser sends for an image on a page (Chrome's
# shape), cookies aside.
BROWSER_HEADERS = (
    "User-Agent: Mozilla/5.0 (X11; Linux x86_64) AppleWebKit/537.36 (KHTML, like Gecko) Chrome/131.0.0.0 Safari/537.36",
    "Accept: image/avif,image/webp,image/apng,image/svg+xml,image/*,*/*;q=0.8",
    "Accept-Encoding: gzip, deflate, br, zstd",
    "Accept-Language: en-US,en;q=0.9",
    "Sec-Fetch-Dest: image",
    "Sec-Fetch-Mode: no-cors",
    "Sec-Fetch-Site: same-origin",
)
# Extra request fields for every run (--browser).
EXTRA_HEADERS = []
ORDER = ("iomux-epoll", "iomux-uring", "iomux-epoll-nocache", "iomux-epoll-level", "iomux-epoll-alt", "iomux-uring-alt", "nginx-sendfile", "nginx-copy", "floor-file", "static-web-server")

NGINX_STATIC_CONF = srv.NGINX_CONF_HEAD + """\
    default_type application/octet-stream;
    sendfile {sendfile};
    tcp_nopush {sendfile};
    open_file_cache max=1000 inactive=60s;
    open_file_cache_valid 60s;
    server {{
        listen 127.0.0.1:{port} backlog=4096;
        root {root};
    }}
}}
"""


def make_site(workdir):
    site = os.path.join(workdir, "site")
    os.makedirs(site)
    # What the readiness check (GET /) finds.
    with open(os.path.join(site, "index.html"), "w") as f:
        f.write("ready\n")
    for name, size in SIZES.items():
        with open(os.path.join(site, f"{name}.bin"), "wb") as f:
            left = size
            while left:
                chunk = os.urandom(min(left, 1 << 20))
                f.write(chunk)
                left -= len(chunk)
    return site


def start(name, site, workdir, cpu):
    port = srv.free_port()
    addr = f"127.0.0.1:{port}"
    if name.startswith("iomux-"):
        backend = name.split("-")[1]
        binary = srv.IOMUX
        if name.endswith("-alt"):
            binary = os.environ.get("IOMUX_ALT", "")
            if not os.path.exists(binary):
                sys.exit(f"{name} needs IOMUX_ALT=PATH of another iomux build (for A/B runs of a change)")
        argv = [binary, "serve", "--root", site, "--backend", backend, "--addr", addr, "--idle-timeout", "300"]
        if name.endswith("-nocache"):
            argv += ["--open-file-cache", "0"]
        if name.endswith("-level"):
            argv += ["--trigger", "level"]
    elif name.startswith("nginx-"):
        prefix = os.path.join(workdir, name)
        os.makedirs(os.path.join(prefix, "tmp"), exist_ok=True)
        conf = os.path.join(prefix, "nginx.conf")
        with open(conf, "w") as f:
            sendfile = "on" if name == "nginx-sendfile" else "off"
            f.write(NGINX_STATIC_CONF.format(prefix=prefix, port=port, root=site, sendfile=sendfile))
        argv = ["nginx", "-p", prefix, "-c", conf]
    elif name == "floor-file":
        # The floor serves one file per run: it is restarted per size (see run_size).
        raise ValueError("floor-file starts per size")
    elif name == "static-web-server":
        argv = ["static-web-server", "--host", "127.0.0.1", "--port", str(port), "--root", site,
                "--threads-multiplier", "1", "--log-level", "error", "--compression", "false",
                "--cache-control-headers", "false"]
    else:
        raise ValueError(name)
    server = srv.Server(name, argv, port, cpu, workdir)
    return server


class FloorFile(srv.Server):
    """bench/floor-peer's file floor, serving one file whatever the path."""

    def __init__(self, path, workdir, cpu):
        port = srv.free_port()
        argv = [srv.FLOOR, f"127.0.0.1:{port}", "epoll", "file", path]
        super().__init__("floor-file", argv, port, cpu, workdir)


# A 100 MiB response takes tens of milliseconds: runs of that size last
# longer, so that CPU time (counted in 10 ms ticks) covers enough requests.
DURATION_SCALE = {"100m": 4}


def run_wrk(server, size_name, duration, cpu):
    duration *= DURATION_SCALE.get(size_name, 1)
    url = server.url(f"/{size_name}.bin")
    argv = ["taskset", "-c", str(cpu), "wrk", "-t1", f"-c{CONNS[size_name]}", f"-d{duration}s"]
    for header in EXTRA_HEADERS:
        argv += ["-H", header]
    argv.append(url)
    run = srv.measure_wrk(server, argv)
    requests, wall, server_cpu = run.requests, run.wall, run.server_cpu
    size = SIZES[size_name]
    return {
        "server": server.name,
        "size": size_name,
        "requests": requests,
        "rps": requests / wall,
        "body_mib_s": requests * size / wall / (1 << 20),
        "cpu_us_per_req": server_cpu * 1e6 / max(requests, 1),
        "cpu_ms_per_gib": server_cpu * 1e3 / max(requests * size / (1 << 30), 1e-12),
        "user_us_per_req": run.user_ticks / srv.CLK_TCK * 1e6 / max(requests, 1),
        "server_core_busy": server_cpu / wall,
        "wrk_core_busy": run.wrk_cpu / wall,
        # Server and wrk together: on loopback the kernel's TCP work for a
        # transfer lands on either core (the sender's call, or the
        # receiver's ACKs sending what was queued), so at 100 MiB where it
        # lands moves the server's share (docs/static.md, Speed).
        "both_us_per_req": (server_cpu + run.wrk_cpu) * 1e6 / max(requests, 1),
        "errors": run.socket_errors + run.non2xx,
    }


def check_bytes(server, site, size_name):
    """The body served equals the file (a benchmark of wrong bytes is worthless)."""
    import urllib.request

    with urllib.request.urlopen(server.url(f"/{size_name}.bin"), timeout=30) as r:
        body = r.read()
    with open(os.path.join(site, f"{size_name}.bin"), "rb") as f:
        if body != f.read():
            sys.exit(f"{server.name} served wrong bytes for {size_name}.bin")


def median(rows, server, size, key):
    values = [r[key] for r in rows if r["server"] == server and r["size"] == size]
    return statistics.median(values) if values else float("nan")


def round_ratios(rows, a, b, size, key):
    """Per round, `key` of `a` over `key` of `b` (`b` a name or a tuple: the
    lowest of those servers in that round, i.e. the better nginx)."""
    def by_round(names):
        names = (names,) if isinstance(names, str) else names
        out = {}
        for r in rows:
            if r["server"] in names and r["size"] == size:
                out[r["round"]] = min(out.get(r["round"], float("inf")), r[key])
        return out

    num, den = by_round(a), by_round(b)
    return [num[k] / den[k] for k in sorted(num) if k in den and den[k]]


def report(rows, rounds, duration, which, load_before, load_after):
    out = [
        f"Medians over {rounds} interleaved rounds of {duration} s per size and server "
        f"(servers on cpu 0, wrk -t1 on cpu 1; load average {load_before} before, {load_after} after"
        f"{'; requests with a browser' + chr(39) + 's fields' if EXTRA_HEADERS else ''})\n",
        "| size | server | conns | requests/s | body MiB/s | server CPU us/request | server CPU ms/GiB "
        "| server core busy | wrk core busy |",
        "| --- | --- | ---: | ---: | ---: | ---: | ---: | ---: | ---: |",
    ]
    for size in SIZES:
        for s in which:
            if not any(r["server"] == s and r["size"] == size for r in rows):
                continue
            out.append(
                f"| {size} | {s} | {CONNS[size]} | {median(rows, s, size, 'rps'):,.0f} | "
                f"{median(rows, s, size, 'body_mib_s'):,.0f} | {median(rows, s, size, 'cpu_us_per_req'):,.2f} | "
                f"{median(rows, s, size, 'cpu_ms_per_gib'):,.1f} | {median(rows, s, size, 'server_core_busy'):.0%} | "
                f"{median(rows, s, size, 'wrk_core_busy'):.0%} |"
            )
    out.append("")
    out.append("Server CPU per request, ratios: median of the per-round ratios (range). "
               "`nginx-best`: the lower of nginx-sendfile and nginx-copy in that round.")
    nginx = ("nginx-sendfile", "nginx-copy")
    for size in SIZES:
        for a, b, label, goal in (
            ("iomux-epoll", nginx, "iomux-epoll/nginx-best", "goal <= 1.0"),
            ("iomux-uring", nginx, "iomux-uring/nginx-best", "goal <= 1.0"),
            ("iomux-epoll", "floor-file", "iomux-epoll/floor-file", "goal <= 1.05"),
            ("iomux-uring", "floor-file", "iomux-uring/floor-file", "goal <= 1.05"),
            ("iomux-epoll-nocache", "iomux-epoll", "iomux-epoll-nocache/iomux-epoll", "what the open-file cache saves"),
            ("static-web-server", nginx, "static-web-server/nginx-best", ""),
            ("floor-file", nginx, "floor-file/nginx-best", "room left by the kernel"),
        ):
            per_round = round_ratios(rows, a, b, size, "cpu_us_per_req")
            if per_round:
                out.append(srv.ratio_line(f"{size} {label}", per_round, goal))
    out.append("")
    out.append("Server and wrk CPU together per request (on loopback the kernel's TCP work lands on "
               "either core): the same ratios.")
    for size in SIZES:
        for a, label in (("iomux-epoll", "iomux-epoll/floor-file"), ("iomux-uring", "iomux-uring/floor-file")):
            per_round = round_ratios(rows, a, "floor-file", size, "both_us_per_req")
            if per_round:
                out.append(srv.ratio_line(f"{size} {label}, both cores", per_round))
    if errors := srv.wrk_errors(rows, "size"):
        out.append(errors)
    return "\n".join(out)


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--duration", type=int, default=4, help="seconds per wrk run")
    on_request = ("iomux-epoll-level", "iomux-epoll-alt", "iomux-uring-alt")
    ap.add_argument("--servers", default=",".join(s for s in ORDER if s not in on_request), help="comma-separated subset of " + ",".join(ORDER))
    ap.add_argument("--sizes", default=",".join(SIZES), help="comma-separated subset of " + ",".join(SIZES))
    ap.add_argument("--conns", type=int, help="wrk connections for every size (default: per size, %s)" % CONNS)
    ap.add_argument("--browser", action="store_true", help="send a browser's request fields (Accept-Encoding among them) with every request")
    ap.add_argument("--json", help="also write every run as JSON lines to this file")
    args = ap.parse_args()
    which = [s for s in ORDER if s in args.servers.split(",")]
    if "static-web-server" in which and not shutil.which("static-web-server"):
        print("static-web-server is not on PATH (cargo install static-web-server): left out", file=sys.stderr)
        which.remove("static-web-server")
    if "floor-file" in which and not os.path.exists(srv.FLOOR):
        sys.exit(f"{srv.FLOOR} is missing: cargo build --release --manifest-path bench/floor-peer/Cargo.toml")
    sizes = [s for s in SIZES if s in args.sizes.split(",")]
    if args.browser:
        EXTRA_HEADERS.extend(BROWSER_HEADERS)
    if args.conns:
        CONNS.update((size, args.conns) for size in CONNS)
    if not which or not sizes:
        sys.exit("nothing to run: check --servers and --sizes")
    workdir = tempfile.mkdtemp(prefix="iomux-static-bench-")
    # nginx's worker may run as another user (nobody, when started as root).
    os.chmod(workdir, 0o755)
    site = make_site(workdir)
    load_before = open("/proc/loadavg").read().split()[0]
    rows = []
    servers = {}
    try:
        for name in which:
            if name != "floor-file":
                servers[name] = start(name, site, workdir, cpu=0)
        for size in sizes:
            # The floor serves one file: started for this size, stopped after.
            if "floor-file" in which:
                servers["floor-file"] = FloorFile(os.path.join(site, f"{size}.bin"), workdir, cpu=0)
            for s in servers.values():
                check_bytes(s, site, size)
                run_wrk(s, size, 1, cpu=1)  # warm-up
            for rnd in range(1, args.rounds + 1):
                order = which[(rnd - 1) % len(which):] + which[: (rnd - 1) % len(which)]
                for name in order:
                    row = run_wrk(servers[name], size, args.duration, cpu=1)
                    row["round"] = rnd
                    rows.append(row)
                    print(
                        f"{size:>4} round {rnd} {name:17} {row['rps']:>10,.0f} rps {row['body_mib_s']:>8,.0f} MiB/s "
                        f"{row['cpu_us_per_req']:>10.2f} us/req server {row['server_core_busy']:4.0%} "
                        f"wrk {row['wrk_core_busy']:4.0%} {row['errors']}",
                        file=sys.stderr,
                    )
            if "floor-file" in servers:
                servers.pop("floor-file").stop()
    finally:
        srv.stop_all(servers)
        shutil.rmtree(workdir, ignore_errors=True)
    load_after = open("/proc/loadavg").read().split()[0]
    if args.json:
        with open(args.json, "w") as f:
            for r in rows:
                f.write(json.dumps(r) + "\n")
    print(report(rows, args.rounds, args.duration, which, load_before, load_after))


if __name__ == "__main__":
    main()
