"""Which way of sending a file body is cheapest, per size, on epoll and on
io_uring: the file floors of bench/floor-peer (a canned head, no parsing,
one file whatever the path) each moving the body one way:

- epoll: `file-sendfile` (sendfile behind a head sent with MSG_MORE),
  `file-pieces` (32 KiB pieces read and sent one after another),
  `file-read` (pread behind the head, one send), `file-mem` (head and body
  from memory, one send: what a cache of small files gives), all with
  TCP_NODELAY; not in the default modes: `file` (the floor static-peers
  runs: `sendfile`, as `file-sendfile`), `file-nagle` (sendfile with
  Nagle on), `file-pieces-more` (pieces coalesced with MSG_MORE, Nagle on);
- io_uring: `file-read` (a read linked to a send), `file-splice` (file to
  pipe to socket, linked), `file-zc` (a read linked to a zero-copy send);
- `iomux:BACKEND` (not in the default modes): `iomux serve --root` with that
  backend (target/release/iomux), the file as /f.

Servers on cpu 0 (taskset), `wrk -t1` on cpu 1, the modes interleaved in
each round; reported per size and mode: the medians of server CPU per
request (user + system, all threads: io_uring's workers included), requests
per second, GB/s of bodies, and how busy each core was (the bottleneck).

Usage: python3 bench/file_paths.py [--rounds 3] [--duration 5]
           [--sizes 1k,4k,16k,64k,256k,1m,100m] [--modes epoll:file,...] [--json FILE]
"""

import argparse
import json
import os
import statistics
import sys
import tempfile
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import servers as srv  # noqa: E402

MODES = (
    "epoll:file-sendfile",
    "epoll:file-pieces",
    "epoll:file-read",
    "epoll:file-mem",
    "uring:file-read",
    "uring:file-splice",
    "uring:file-zc",
)
SIZES = {"1k": 1 << 10, "4k": 4 << 10, "16k": 16 << 10, "64k": 64 << 10,
         "256k": 256 << 10, "512k": 512 << 10, "1m": 1 << 20, "2m": 2 << 20, "4m": 4 << 20, "16m": 16 << 20, "100m": 100 << 20}


def make_file(workdir, name, size):
    path = os.path.join(workdir, f"{name}.bin")
    with open(path, "wb") as f:
        left = size
        while left:
            n = min(left, 1 << 20)
            f.write(os.urandom(n))
            left -= n
    # In the page cache: the floors measure sending, not the disk.
    with open(path, "rb") as f:
        while f.read(1 << 20):
            pass
    return path


def start(mode, path, workdir):
    selector, body = mode.split(":")
    port = srv.free_port()
    if selector == "iomux":
        # `iomux serve --root` on a directory holding the file as /f.
        site = os.path.join(workdir, f"site-{os.path.basename(path)}")
        if not os.path.isdir(site):
            os.mkdir(site)
            os.link(path, os.path.join(site, "f"))
            with open(os.path.join(site, "index.html"), "w") as f:
                f.write("ready\n")
        argv = [srv.IOMUX, "serve", "--root", site, "--backend", body, "--addr", f"127.0.0.1:{port}"]
    else:
        argv = [srv.FLOOR, f"127.0.0.1:{port}", selector, body, path]
    return srv.Server(mode.replace(":", "-"), argv, port, cpu=0, workdir=workdir)


def run_wrk(server, conns, duration):
    argv = ["taskset", "-c", "1", "wrk", "-t1", f"-c{conns}", f"-d{duration}s", server.url("/f")]
    run = srv.measure_wrk(server, argv)
    requests, wall, server_cpu = run.requests, run.wall, run.server_cpu
    return {
        "requests": requests,
        "rps": requests / wall,
        "cpu_us_per_req": server_cpu * 1e6 / max(requests, 1),
        "sys_share": run.sys_ticks / max(run.user_ticks + run.sys_ticks, 1),
        "server_busy": server_cpu / wall,
        "wrk_busy": run.wrk_cpu / wall,
        "errors": run.socket_errors,
    }


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--duration", type=int, default=5)
    ap.add_argument("--sizes", default=",".join(SIZES))
    ap.add_argument("--modes", default=",".join(MODES))
    ap.add_argument("--json")
    args = ap.parse_args()
    if not os.path.exists(srv.FLOOR):
        sys.exit(f"{srv.FLOOR} is missing: cargo build --release --manifest-path bench/floor-peer/Cargo.toml")
    modes = args.modes.split(",")
    results = []
    print(f"# {time.strftime('%Y-%m-%d %H:%M:%S UTC', time.gmtime())}, load average {os.getloadavg()}", flush=True)
    with tempfile.TemporaryDirectory(prefix="file-paths-") as workdir:
        for size_name in args.sizes.split(","):
            size = SIZES[size_name]
            path = make_file(workdir, size_name, size)
            conns = 4 if size >= 64 << 20 else 16
            runs = {m: [] for m in modes}
            for _ in range(args.rounds):
                for mode in modes:
                    server = start(mode, path, workdir)
                    try:
                        runs[mode].append(run_wrk(server, conns, args.duration))
                    finally:
                        server.stop()
            print(f"\n{size_name} ({conns} connections, {args.rounds} rounds, medians)")
            print(f"{'mode':20} {'cpu_us/req':>11} {'sys%':>5} {'req/s':>9} {'GB/s':>6} {'server%':>8} {'wrk%':>5}  errors")
            for mode in modes:
                r = runs[mode]
                med = {k: statistics.median(x[k] for x in r) for k in ("cpu_us_per_req", "rps", "sys_share", "server_busy", "wrk_busy")}
                row = {"size": size_name, "bytes": size, "mode": mode, "conns": conns, "rounds": r, **med}
                results.append(row)
                errors = ";".join(sorted({x["errors"] for x in r if x["errors"]}))
                print(f"{mode:20} {med['cpu_us_per_req']:11.2f} {100 * med['sys_share']:5.0f} {med['rps']:9.0f} "
                      f"{med['rps'] * size / 1e9:6.2f} {100 * med['server_busy']:7.0f}% {100 * med['wrk_busy']:4.0f}%  {errors}", flush=True)
    if args.json:
        with open(args.json, "w") as f:
            json.dump(results, f, indent=1)


if __name__ == "__main__":
    main()
