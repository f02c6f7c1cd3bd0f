#!/usr/bin/env python3
"""iomux load vs wrk on nginx, interleaved (run by bench/load-vs-wrk.sh).

nginx (one worker) runs pinned to cpu 0; each client in turn runs pinned to
cpu 1 with the same connections, threads and duration, for a plain GET and a
POST with a JSON body. Per run: requests/s, the client's CPU time per request
and the nginx worker's, both read from /proc/PID/stat (utime + stime; the
client's from its zombie, before it is reaped, so all its threads count), and
how busy each core was, which says which side was the bottleneck.

Usage: load-vs-wrk.py IOMUX ROUNDS DURATION CONNS
"""
import os
import re
import socket
import subprocess
import sys
import tempfile
import time
import json
import statistics

IOMUX, ROUNDS, DURATION, CONNS = sys.argv[1], int(sys.argv[2]), float(sys.argv[3]), int(sys.argv[4])
TICK = os.sysconf("SC_CLK_TCK")
BODY = '{"id":3,"name":"widget","tags":["a","b"],"price":12.5}'


def cpu_seconds(pid):
    """utime + stime of a process (all its threads) from /proc/PID/stat."""
    with open(f"/proc/{pid}/stat") as f:
        fields = f.read().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / TICK


def free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def start_nginx(tmp, port):
    conf = os.path.join(tmp, "nginx.conf")
    with open(conf, "w") as f:
        f.write(f"""
worker_processes 1;
daemon off;
pid {tmp}/nginx.pid;
error_log {tmp}/error.log;
events {{ worker_connections 4096; }}
http {{
    access_log off;
    keepalive_requests 100000000;
    client_body_temp_path {tmp}/body;
    server {{
        listen 127.0.0.1:{port} backlog=4096;
        location / {{ default_type text/plain; return 200 "Hello, World!"; }}
    }}
}}
""")
    master = subprocess.Popen(["taskset", "-c", "0", "nginx", "-p", tmp, "-c", conf],
                              stderr=subprocess.DEVNULL)
    for _ in range(100):
        time.sleep(0.05)
        try:
            socket.create_connection(("127.0.0.1", port), timeout=1).close()
            break
        except OSError:
            pass
    else:
        master.kill()
        sys.exit("nginx did not start; see " + tmp + "/error.log")
    kids = open(f"/proc/{master.pid}/task/{master.pid}/children").read().split()
    if len(kids) != 1:
        sys.exit(f"expected one nginx worker, found {kids}")
    return master, int(kids[0])


def run_client(cmd, worker):
    """Run `cmd` pinned to cpu 1; returns (stdout, client CPU s, nginx worker CPU s, wall s)."""
    out = tempfile.TemporaryFile()
    w0, t0 = cpu_seconds(worker), time.monotonic()
    p = subprocess.Popen(["taskset", "-c", "1"] + cmd, stdout=out, stderr=subprocess.DEVNULL)
    # Wait without reaping, so that /proc/PID/stat still holds its CPU time.
    os.waitid(os.P_PID, p.pid, os.WEXITED | os.WNOWAIT)
    wall = time.monotonic() - t0
    client = cpu_seconds(p.pid)
    server = cpu_seconds(worker) - w0
    p.wait()
    out.seek(0)
    return out.read().decode(), client, server, wall


def main():
    tmp = tempfile.mkdtemp(prefix="load-vs-wrk.")
    port = free_port()
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
    ratios = {w: {"rps": [], "cpu": []} for w in clients}
    try:
        for r in range(1, ROUNDS + 1):
            for workload, cmds in clients.items():
                order = ["wrk", "iomux"] if r % 2 else ["iomux", "wrk"]
                got = {}
                for name in order:
                    text, client, server, wall = run_client(cmds[name], worker)
                    if name == "wrk":
                        m = re.search(r"(\d+) requests in ([\d.]+)(\w+)", text)
                        requests = int(m.group(1))
                        non2xx = re.search(r"Non-2xx or 3xx responses: (\d+)", text)
                        errors = int(non2xx.group(1)) if non2xx else 0
                        sock = re.search(r"Socket errors: (.*)", text)
                        errors_text = sock.group(1) if sock else "none"
                    else:
                        j = json.loads(text)
                        requests, errors = j["requests"], j["errors"]
                        errors_text = json.dumps(j["error_kinds"])
                    rps = requests / DURATION
                    got[name] = (rps, client / max(requests, 1), server / max(requests, 1))
                    print(f"round {r} {workload:4} {name:5}: {rps:9.0f} req/s, client {client / max(requests, 1) * 1e6:5.2f} us CPU/req "
                          f"(cpu 1 busy {client / wall * 100:3.0f}%), nginx {server / max(requests, 1) * 1e6:5.2f} us CPU/req "
                          f"(cpu 0 busy {server / wall * 100:3.0f}%), errors {errors} ({errors_text})", flush=True)
                rr = got["iomux"][0] / got["wrk"][0]
                cr = got["iomux"][1] / got["wrk"][1]
                ratios[workload]["rps"].append(rr)
                ratios[workload]["cpu"].append(cr)
                print(f"round {r} {workload:4} iomux/wrk: req/s x{rr:.2f}, client CPU/req x{cr:.2f}", flush=True)
        print()
        for workload, v in ratios.items():
            print(f"{workload:4} median over {ROUNDS} rounds: iomux/wrk req/s x{statistics.median(v['rps']):.2f} "
                  f"(range {min(v['rps']):.2f}-{max(v['rps']):.2f}), client CPU/req x{statistics.median(v['cpu']):.2f} "
                  f"(range {min(v['cpu']):.2f}-{max(v['cpu']):.2f})")
    finally:
        master.terminate()
        master.wait()


main()
