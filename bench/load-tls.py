#!/usr/bin/env python3
"""The load client's own cost over TLS against plain HTTP, on nginx.

nginx (one worker, pinned to cpu 0) serves `return 200 "Hello, World!"` on a
plain port and on a TLS port (TLS 1.3, an ECDSA P-256 certificate made here,
session tickets and a session cache on). Each client run is pinned to cpu 1;
the kinds of run are interleaved in every round:

  plain      iomux load, keep-alive, plain HTTP
  tls        iomux load, keep-alive, https (one handshake per connection)
  cpr-resume iomux load --connect-per-request over https (resumed handshakes)
  cpr-full   the same with --no-resume (a full handshake per request)
  wrk-plain, wrk-tls   wrk on the same two ports (keep-alive), for reference

Per run: requests/s, the client's CPU time per request (from its zombie's
/proc/PID/stat: all its threads, user + system) and nginx's, how busy each
core was, and the handshakes the client counted. Then, per kind, the median
over the rounds and the ratios tls/plain and iomux/wrk.

Usage: bench/load-tls.py [IOMUX] [ROUNDS] [SECONDS] [CONNS]
(default target/release/iomux 3 3 50). Needs nginx, wrk, openssl, taskset.
"""
import json
import os
import statistics
import sys
import tempfile
import time

IOMUX = sys.argv[1] if len(sys.argv) > 1 else "target/release/iomux"
ROUNDS = int(sys.argv[2]) if len(sys.argv) > 2 else 3
SECS = float(sys.argv[3]) if len(sys.argv) > 3 else 3
CONNS = int(sys.argv[4]) if len(sys.argv) > 4 else 50
os.environ["PATH"] += ":/usr/sbin"

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import servers as srv  # noqa: E402


def start_nginx(tmp, plain, tls):
    return srv.start_pinned_nginx(tmp, f"""\
    ssl_protocols TLSv1.3;
    ssl_session_tickets on;
    ssl_session_cache shared:SSL:10m;
    ssl_certificate {tmp}/leaf.pem;
    ssl_certificate_key {tmp}/leaf.key;
    server {{
        listen 127.0.0.1:{plain} backlog=4096;
        listen 127.0.0.1:{tls} ssl backlog=4096;
        location / {{ default_type text/plain; return 200 "Hello, World!"; }}
    }}
}}
""", tls)


def wrk_requests(text):
    for line in text.splitlines():
        if "requests in" in line:
            return int(line.split()[0])
    return 0


def main():
    tmp = tempfile.mkdtemp(prefix="load-tls-")
    srv.certificates(tmp)
    plain, tls = srv.free_port(), srv.free_port()
    master, worker = start_nginx(tmp, plain, tls)
    ca = os.path.join(tmp, "ca.pem")
    d, c = str(SECS), str(CONNS)
    cpr = str(min(CONNS, 10))
    kinds = {
        "plain": [IOMUX, "load", "--json", "-c", c, "-d", d, f"http://localhost:{plain}/"],
        "tls": [IOMUX, "load", "--json", "-c", c, "-d", d, "--cacert", ca, f"https://localhost:{tls}/"],
        "cpr-resume": [IOMUX, "load", "--json", "-c", cpr, "-d", d, "--connect-per-request", "--cacert", ca, f"https://localhost:{tls}/"],
        "cpr-full": [IOMUX, "load", "--json", "-c", cpr, "-d", d, "--connect-per-request", "--no-resume", "--cacert", ca, f"https://localhost:{tls}/"],
        "wrk-plain": ["wrk", "-t1", "-c", c, "-d", f"{int(SECS)}s", f"http://localhost:{plain}/"],
        "wrk-tls": ["wrk", "-t1", "-c", c, "-d", f"{int(SECS)}s", f"https://localhost:{tls}/"],
    }
    results = {k: [] for k in kinds}
    try:
        print(f"# {time.strftime('%Y-%m-%d %H:%M:%S UTC', time.gmtime())}, load average {os.getloadavg()}")
        print("round kind requests rps client_us/req nginx_us/req cpu0% cpu1% handshakes resumed errors")
        for r in range(1, ROUNDS + 1):
            for kind, cmd in kinds.items():
                text, run = srv.run_pinned_client(cmd, worker)
                if kind.startswith("wrk"):
                    n, hs, res, err = wrk_requests(text), "-", "-", "-"
                else:
                    j = json.loads(text)
                    n, hs, res, err = j["requests"], j["tls_handshakes"], j["tls_resumed"], j["errors"]
                if n == 0:
                    print(r, kind, "no requests", text[:300])
                    continue
                row = {"client_us": run["client"] / n * 1e6, "server_us": run["server"] / n * 1e6, "rps": n / SECS}
                results[kind].append(row)
                print(r, kind, n, f"{row['rps']:.0f}", f"{row['client_us']:.2f}", f"{row['server_us']:.2f}",
                      f"{run['cpu0'] / run['wall'] * 100:.0f}", f"{run['cpu1'] / run['wall'] * 100:.0f}", hs, res, err,
                      flush=True)
        med = {k: statistics.median(x["client_us"] for x in v) for k, v in results.items() if v}
        print("\nmedian client CPU per request (us):", {k: round(v, 2) for k, v in med.items()})
        if "plain" in med and "tls" in med:
            print(f"iomux tls / plain: x{med['tls'] / med['plain']:.2f}")
        if "wrk-plain" in med and "plain" in med:
            print(f"iomux / wrk, plain: x{med['plain'] / med['wrk-plain']:.2f}")
        if "wrk-tls" in med and "tls" in med:
            print(f"iomux / wrk, tls: x{med['tls'] / med['wrk-tls']:.2f}")
        print(f"# end {time.strftime('%H:%M:%S UTC', time.gmtime())}, load average {os.getloadavg()}")
    finally:
        master.terminate()
        master.wait()


main()
