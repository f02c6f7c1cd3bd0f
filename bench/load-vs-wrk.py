#!/usr/bin/env python3
"""iomux load vs wrk on nginx, interleaved (run by bench/load-vs-wrk.sh).

nginx (one worker) runs pinned to cpu 0; each client in turn runs pinned to
cpu 1 with the same connections, threads and duration, for a plain GET and a
POST with a JSON body. Per run: requests/s, the client's CPU time per request
and the nginx worker's, both read from /proc/PID/stat (utime + stime; the
client's from its zombie, before it is reaped, so all its threads count), how
busy each core was (the process's own share and everything else's, from
/proc/stat), which side was the bottleneck, and TCP segments per request
(from /proc/net/snmp and /proc/net/netstat; only the benchmark's own traffic
when load-vs-wrk.sh put it in a private network namespace).

A side is the bottleneck of a run when its process kept its core at least
BOUND_PCT % busy. When nginx is the bottleneck, requests/s measure nginx, not
the client: the verdict says so instead of reading the ratio as the client's
speed.

Usage: load-vs-wrk.py IOMUX ROUNDS DURATION CONNS
"""
import os
import re
import sys
import tempfile
import json
import statistics

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import servers as srv  # noqa: E402

IOMUX, ROUNDS, DURATION, CONNS = sys.argv[1], int(sys.argv[2]), float(sys.argv[3]), int(sys.argv[4])
BODY = '{"id":3,"name":"widget","tags":["a","b"],"price":12.5}'
# A process this busy on its own core is what limits the run.
BOUND_PCT = 90
# The goal: iomux load at least this many times wrk's requests/s ...
GOAL_RPS = 1.2
# ... at no more than this many times wrk's client CPU per request.
GOAL_CPU = 0.8
PRIVATE_NETNS = os.environ.get("LOAD_VS_WRK_NETNS") == "1"


def tcp_counters():
    """Tcp OutSegs and TcpExt DelayedACKs of this network namespace."""
    found = {}
    for path in ("/proc/net/snmp", "/proc/net/netstat"):
        with open(path) as f:
            lines = f.read().splitlines()
        for names, values in zip(lines[::2], lines[1::2]):
            prefix = names.split(":")[0]
            for k, v in zip(names.split()[1:], values.split()[1:]):
                found[f"{prefix}.{k}"] = int(v)
    return {k: found.get(k, 0) for k in ("Tcp.OutSegs", "TcpExt.DelayedACKs")}


def start_nginx(tmp, port):
    return srv.start_pinned_nginx(tmp, f"""\
    server {{
        listen 127.0.0.1:{port} backlog=4096;
        location / {{ default_type text/plain; return 200 "Hello, World!"; }}
    }}
}}
""", port)


def bottleneck(nginx_pct, client_pct, other0, other1):
    """Which side limited a run: the one whose process kept its core
    BOUND_PCT % busy; else other work sharing the cores, or latency."""
    sides = [name for name, pct in (("nginx", nginx_pct), ("client", client_pct)) if pct >= BOUND_PCT]
    if sides:
        return "+".join(sides)
    if max(other0, other1) >= 100 - BOUND_PCT:
        return "neither (cores shared with other work)"
    return "neither (latency)"


def parse_counts(name, text):
    """(requests, errors, error text) from a client's output."""
    if name == "wrk":
        m = re.search(r"(\d+) requests in ([\d.]+)(\w+)", text)
        non2xx = re.search(r"Non-2xx or 3xx responses: (\d+)", text)
        sock = re.search(r"Socket errors: (.*)", text)
        return int(m.group(1)), int(non2xx.group(1)) if non2xx else 0, sock.group(1) if sock else "none"
    j = json.loads(text)
    return j["requests"], j["errors"], json.dumps(j["error_kinds"])


def main():
    tmp = tempfile.mkdtemp(prefix="load-vs-wrk.")
    port = srv.free_port()
    master, worker = start_nginx(tmp, port)
    url = f"http://127.0.0.1:{port}/plaintext"
    lua = os.path.join(tmp, "post.lua")
    with open(lua, "w") as f:
        f.write('wrk.method = "POST"\nwrk.headers["Content-Type"] = "application/json"\n'
                f"wrk.body = '{BODY}'\n")
    d = f"{DURATION:g}"
    clients = {
        "GET": {
            "wrk": ["wrk", "-t1", f"-c{CONNS}", f"-d{d}s", url],
            "iomux": [IOMUX, "load", url, "-t", "1", "-c", str(CONNS), "-d", d, "--json"],
        },
        "POST": {
            "wrk": ["wrk", "-t1", f"-c{CONNS}", f"-d{d}s", "-s", lua, url],
            "iomux": [IOMUX, "load", url, "-t", "1", "-c", str(CONNS), "-d", d, "--json",
                      "-m", "POST", "-H", "Content-Type: application/json", "--body", BODY],
        },
    }
    traffic = ("TCP segments: this benchmark's only (private network namespace)" if PRIVATE_NETNS
               else "TCP segments: host-wide counters, other loopback traffic included (run as root for a private namespace)")
    with open("/proc/loadavg") as f:
        print(f"{ROUNDS} rounds, {d} s per run, {CONNS} connections, one thread each; load average at start: "
              f"{' '.join(f.read().split()[:3])}; {traffic}", flush=True)
    ratios = {w: {"rps": [], "cpu": [], "bound": []} for w in clients}
    try:
        for r in range(1, ROUNDS + 1):
            for workload, cmds in clients.items():
                order = ["wrk", "iomux"] if r % 2 else ["iomux", "wrk"]
                got = {}
                for name in order:
                    text, run = srv.run_pinned_client(cmds[name], worker, tcp_counters)
                    requests, errors, errors_text = parse_counts(name, text)
                    per = max(requests, 1)
                    rps = requests / DURATION
                    wall = run["wall"]
                    client_pct, nginx_pct = run["client"] / wall * 100, run["server"] / wall * 100
                    # What else ran on each core during the run (other processes, builds).
                    other1 = max(0.0, run["cpu1"] / wall * 100 - client_pct)
                    other0 = max(0.0, run["cpu0"] / wall * 100 - nginx_pct)
                    bound = bottleneck(nginx_pct, client_pct, other0, other1)
                    got[name] = (rps, run["client"] / per, bound)
                    tcp = run["counters"]
                    print(f"round {r} {workload:4} {name:5}: {rps:9.0f} req/s, client {run['client'] / per * 1e6:5.2f} us CPU/req "
                          f"(cpu 1: client {client_pct:3.0f}%, other {other1:3.0f}%), nginx {run['server'] / per * 1e6:5.2f} us CPU/req "
                          f"(cpu 0: nginx {nginx_pct:3.0f}%, other {other0:3.0f}%), bottleneck: {bound}; "
                          f"TCP segments/req (both ways) {tcp['Tcp.OutSegs'] / per:.2f}, "
                          f"delayed ACKs/req {tcp['TcpExt.DelayedACKs'] / per:.3f}; errors {errors} ({errors_text})", flush=True)
                rr = got["iomux"][0] / got["wrk"][0]
                cr = got["iomux"][1] / got["wrk"][1]
                ratios[workload]["rps"].append(rr)
                ratios[workload]["cpu"].append(cr)
                ratios[workload]["bound"].append((got["iomux"][2], got["wrk"][2]))
                print(f"round {r} {workload:4} iomux/wrk: req/s x{rr:.2f} (bottleneck: iomux run {got['iomux'][2]}, "
                      f"wrk run {got['wrk'][2]}), client CPU/req x{cr:.2f}", flush=True)
        print()
        for workload, v in ratios.items():
            rps, cpu = statistics.median(v["rps"]), statistics.median(v["cpu"])
            nginx_bound = sum(1 for iomux_bound, _ in v["bound"] if "nginx" in iomux_bound)
            wrk_self_bound = sum(1 for _, wrk_bound in v["bound"] if "client" in wrk_bound)
            shared = sum(1 for pair in v["bound"] if any("shared" in b for b in pair))
            met_rounds = [k for k, (a, b) in enumerate(zip(v["rps"], v["cpu"])) if a >= GOAL_RPS and b <= GOAL_CPU]
            met = len(met_rounds)
            met_shared = sum(1 for k in met_rounds if any("shared" in b for b in v["bound"][k]))
            print(f"{workload:4} median over {ROUNDS} rounds: iomux/wrk req/s x{rps:.2f} "
                  f"(range {min(v['rps']):.2f}-{max(v['rps']):.2f}), client CPU/req x{cpu:.2f} "
                  f"(range {min(v['cpu']):.2f}-{max(v['cpu']):.2f})")
            print(f"     bottleneck: nginx's core was >= {BOUND_PCT}% busy in {nginx_bound} of {ROUNDS} iomux runs"
                  f"{' (there req/s show how fast nginx answers, not how fast the client is)' if nginx_bound else ''}; "
                  f"wrk's own core was >= {BOUND_PCT}% busy in {wrk_self_bound} of {ROUNDS} wrk runs; "
                  f"other work took >= {100 - BOUND_PCT}% of a core in {shared} of {ROUNDS} rounds"
                  f"{' (there req/s follow the scheduler; CPU/req is the figure to read)' if shared else ''}")
            clean = [k for k, pair in enumerate(v["bound"]) if not any("shared" in b for b in pair)]
            if clean:
                crps = statistics.median(v["rps"][k] for k in clean)
                ccpu = statistics.median(v["cpu"][k] for k in clean)
                capped = sum(1 for k in clean if "nginx" in v["bound"][k][0])
                print(f"     over the {len(clean)} round(s) without other work on the cores: req/s x{crps:.2f}, "
                      f"client CPU/req x{ccpu:.2f}; nginx capped the iomux run in {capped} of them")
                rps_verdict = (f"req/s on quiet cores {'meets' if crps >= GOAL_RPS else 'misses'} x{GOAL_RPS}"
                               f"{' (with nginx the bottleneck)' if capped else ''}")
            else:
                rps_verdict = "req/s not judged: no round ran without other work on the cores"
            print(f"     goal (req/s >= x{GOAL_RPS} and client CPU/req <= x{GOAL_CPU}): met in {met} of {ROUNDS} rounds"
                  f"{f' ({met_shared} of them with other work on the cores)' if met else ''}; "
                  f"median CPU/req {'meets' if cpu <= GOAL_CPU else 'misses'} x{GOAL_CPU}; {rps_verdict}")
        with open("/proc/loadavg") as f:
            print(f"load average at the end: {' '.join(f.read().split()[:3])}")
    finally:
        master.terminate()
        master.wait()


main()
