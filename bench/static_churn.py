"""More files than the open-file cache holds (see static-churn.sh).

A directory of `--files` 1 KiB files (and an index.html for the readiness
check), every request for one of them chosen at random (a wrk Lua script;
`--pattern skewed`: file i with a chance falling as 1/i),
so that with the default cache of 1,000 most requests miss and replace an
entry. Served by iomux on epoll with `--open-file-cache 0` (every request
opens its file), with the default 1,000, and with room for every file; and
by nginx with one worker and `open_file_cache max=1000` (sendfile off, its
better at 1 KiB). Servers on cpu 0, `wrk -t1 -c50` on cpu 1, interleaved
rounds; the server's CPU time per request from /proc. IOMUX_ALT=PATH adds
that build with the default cache (`iomux-1000-alt`), for A/B runs.
"""

import argparse
import os
import shutil
import statistics
import sys
import tempfile

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import servers as srv  # noqa: E402
import static_peers  # noqa: E402

# Which file each request asks for: any of them alike (`uniform`), or file
# i with a chance falling as 1/i (`skewed`: log-uniform, a few files asked
# for most of the time and a long tail, as on most sites).
LUA = {
    "uniform": """\
math.randomseed(os.time())
request = function()
  return wrk.format("GET", "/f" .. math.random({files}) .. ".bin", {headers})
end
""",
    "skewed": """\
math.randomseed(os.time())
request = function()
  local i = math.max(1, math.floor({files} ^ math.random()))
  return wrk.format("GET", "/f" .. i .. ".bin", {headers})
end
""",
}


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--files", type=int, default=5000)
    ap.add_argument("--pattern", choices=sorted(LUA), default="uniform", help="which files the requests ask for")
    ap.add_argument("--browser", action="store_true",
                    help="send Accept-Encoding: gzip, deflate, br, zstd (as browsers do) with every request")
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--duration", type=int, default=3, help="seconds per wrk run")
    args = ap.parse_args()
    workdir = tempfile.mkdtemp(prefix="iomux-churn-bench-")
    os.chmod(workdir, 0o755)
    site = os.path.join(workdir, "site")
    os.makedirs(site)
    with open(os.path.join(site, "index.html"), "w") as f:
        f.write("ready\n")
    for i in range(1, args.files + 1):
        with open(os.path.join(site, f"f{i}.bin"), "wb") as f:
            f.write(os.urandom(1024))
    script = os.path.join(workdir, "random.lua")
    with open(script, "w") as f:
        headers = '{["Accept-Encoding"] = "gzip, deflate, br, zstd"}' if args.browser else "nil"
        f.write(LUA[args.pattern].format(files=args.files, headers=headers))
    caches = {"iomux-nocache": 0, "iomux-1000": 1000, f"iomux-{2 * args.files}": 2 * args.files}
    if os.environ.get("IOMUX_ALT"):
        caches["iomux-1000-alt"] = 1000
    servers = {}
    rows = []
    load_before = open("/proc/loadavg").read().split()[0]
    try:
        for name, cache in caches.items():
            binary = os.environ["IOMUX_ALT"] if name.endswith("-alt") else srv.IOMUX
            port = srv.free_port()
            argv = [binary, "serve", "--root", site, "--backend", "epoll", "--addr", f"127.0.0.1:{port}",
                    "--idle-timeout", "300", "--open-file-cache", str(cache)]
            servers[name] = srv.Server(name, argv, port, 0, workdir)
        servers["nginx"] = static_peers.start("nginx-copy", site, workdir, cpu=0)
        which = list(servers)
        for rnd in range(1, args.rounds + 1):
            order = which[(rnd - 1) % len(which):] + which[: (rnd - 1) % len(which)]
            for name in order:
                argv = ["taskset", "-c", "1", "wrk", "-t1", "-c50", f"-d{args.duration}s", "-s", script,
                        servers[name].url("/")]
                run = srv.measure_wrk(servers[name], argv)
                row = {"server": name, "round": rnd, "rps": run.requests / run.wall,
                       "us": run.server_cpu * 1e6 / max(run.requests, 1),
                       "busy": run.server_cpu / run.wall, "errors": run.socket_errors + run.non2xx}
                rows.append(row)
                print(f"round {rnd} {name:16} {row['rps']:>9,.0f} rps {row['us']:7.2f} us/req server "
                      f"{row['busy']:4.0%} {row['errors']}", file=sys.stderr)
    finally:
        srv.stop_all(servers)
        shutil.rmtree(workdir, ignore_errors=True)
    print(f"Medians over {args.rounds} interleaved rounds of {args.duration} s, {args.files} files of 1 KiB "
          f"requested at random, {args.pattern}{', with a browser' + chr(39) + 's Accept-Encoding' if args.browser else ''} "
          f"(servers on cpu 0, wrk -t1 -c50 on cpu 1; "
          f"load average {load_before} before)\n")
    print("| server | requests/s | server CPU us/request | server core busy |")
    print("| --- | ---: | ---: | ---: |")
    for name in which:
        mine = [r for r in rows if r["server"] == name]
        print(f"| {name} | {statistics.median(r['rps'] for r in mine):,.0f} | "
              f"{statistics.median(r['us'] for r in mine):.2f} | {statistics.median(r['busy'] for r in mine):.0%} |")
    print(srv.wrk_errors(rows, "round"))


if __name__ == "__main__":
    main()
