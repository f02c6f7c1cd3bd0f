"""Interleaved TLS benchmark of iomux against nginx (see tls-peers.sh).

Both servers present one ECDSA P-256 certificate (made here, signed by a CA
made here), speak TLS 1.3 only, and resume sessions by tickets. nginx runs
one worker from its own prefix in a temporary directory (OpenSSL, a session
cache and tickets on, access log off), never as the system service. Every
server is pinned to cpu 0, every client to cpu 1. Each round runs every
profile against every server, the server order rotating from round to round,
so a noisy neighbour on the shared machine hits both alike.

Per run: the server's CPU time (utime + stime of all its processes, from
/proc) per unit of work (request, handshake, byte), how busy the server's
core and the client were (near 100% on the client's side means the client,
not the server, was the bottleneck), and the handshakes the client counted.
"""

import argparse
import json
import os
import re
import resource
import socket
import statistics
import subprocess
import sys
import tempfile
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import servers as srv  # noqa: E402

BULK_BYTES = 100 * 1024 * 1024
PROFILES = ("keepalive", "full", "resumed", "bulk")
UNIT = {"keepalive": "request", "full": "full handshake", "resumed": "resumed handshake", "bulk": "MiB"}

NGINX_CONF = srv.NGINX_CONF_HEAD + """\
    ssl_protocols TLSv1.3;
    ssl_certificate {prefix}/leaf.pem;
    ssl_certificate_key {prefix}/leaf.key;
    ssl_session_tickets on;
    ssl_session_cache shared:SSL:10m;
    sendfile on;
    server {{
        listen 127.0.0.1:{port} ssl backlog=4096;
        default_type text/plain;
        location / {{
            return 200 "Hello, World!";
        }}
        location = /big.bin {{
            root {www};
        }}
    }}
}}
"""


class TlsServer(srv.Server):
    def answers(self):
        with socket.create_connection(("127.0.0.1", self.port), timeout=1):
            return True

    def url(self, path="/"):
        return f"https://localhost:{self.port}{path}"


def iomux_has_root():
    out = subprocess.run([srv.IOMUX, "serve", "--help"], capture_output=True, text=True).stdout
    return "--root" in out


def start_servers(tmp, cpu, bulk):
    www = os.path.join(tmp, "www")
    servers = {}
    try:
        port = srv.free_port()
        tls = ["--tls-cert", os.path.join(tmp, "leaf.pem"), "--tls-key", os.path.join(tmp, "leaf.key")]
        base = [srv.IOMUX, "serve", "--proto", "http", "--idle-timeout", "300"] + tls
        servers["iomux"] = TlsServer("iomux", base + ["--addr", f"127.0.0.1:{port}"], port, cpu, tmp)
        if bulk:
            # --root serves files instead of the hello-world routes: a second server.
            port = srv.free_port()
            servers["iomux-files"] = TlsServer(
                "iomux-files", base + ["--addr", f"127.0.0.1:{port}", "--root", www], port, cpu, tmp)
        port = srv.free_port()
        prefix = os.path.join(tmp, "nginx")
        os.makedirs(os.path.join(prefix, "tmp"), exist_ok=True)
        for name in ("leaf.pem", "leaf.key"):
            os.link(os.path.join(tmp, name), os.path.join(prefix, name))
        conf = os.path.join(prefix, "nginx.conf")
        with open(conf, "w") as f:
            f.write(NGINX_CONF.format(prefix=prefix, port=port, www=www))
        servers["nginx"] = TlsServer("nginx", ["nginx", "-p", prefix, "-c", conf], port, cpu, tmp)
    except BaseException:
        srv.stop_all(servers)
        raise
    return servers


def wrk_bytes(text):
    """wrk's "N.NNGB read" (binary units) in bytes."""
    m = re.search(r"([\d.]+)([KMGT]?B) read", text)
    scale = {"B": 1, "KB": 1 << 10, "MB": 1 << 20, "GB": 1 << 30, "TB": 1 << 40}[m.group(2)]
    return float(m.group(1)) * scale


def client_argv(profile, url, args, ca):
    d = str(args.duration)
    if profile == "keepalive":
        return ["wrk", "-t1", "-c100", f"-d{d}s", url + "/plaintext"]
    if profile == "bulk":
        return ["wrk", "-t1", "-c4", f"-d{d}s", "--timeout", "60s", url + "/big.bin"]
    argv = [srv.IOMUX, "load", "--json", "--conns", str(args.handshake_conns), "--duration", d,
            "--connect-per-request", "--cacert", ca, url + "/plaintext"]
    if profile == "full":
        argv.append("--no-resume")
    return argv


def run_once(server, profile, args, ca, cpu):
    argv = ["taskset", "-c", str(cpu)] + client_argv(profile, server.url(""), args, ca)
    before = resource.getrusage(resource.RUSAGE_CHILDREN)
    user0, sys0 = srv.cpu_ticks_split(server.pids)
    t0 = time.monotonic()
    done = subprocess.run(argv, capture_output=True, text=True)
    wall = time.monotonic() - t0
    user1, sys1 = srv.cpu_ticks_split(server.pids)
    after = resource.getrusage(resource.RUSAGE_CHILDREN)
    if done.returncode != 0:
        raise RuntimeError(f"{' '.join(argv)} failed:\n{done.stdout}\n{done.stderr}")
    server_cpu = ((user1 - user0) + (sys1 - sys0)) / srv.CLK_TCK
    client_cpu = (after.ru_utime - before.ru_utime) + (after.ru_stime - before.ru_stime)
    row = {"server": server.name, "profile": profile, "server_cpu_s": server_cpu,
           "server_core_busy": server_cpu / wall, "client_core_busy": client_cpu / wall, "note": ""}
    out = done.stdout
    non2xx = re.search(r"Non-2xx or 3xx responses: (\d+)", out)
    if non2xx:
        raise RuntimeError(f"{server.name} {profile}: {non2xx.group(1)} answers were not 200:\n{out}")
    if profile == "keepalive":
        units = int(re.search(r"(\d+) requests in", out).group(1))
        errors = re.search(r"Socket errors: (.*)", out)
        row["note"] = errors.group(1) if errors else ""
    elif profile == "bulk":
        units = wrk_bytes(out) / (1 << 20)
        bodies = int(re.search(r"(\d+) requests in", out).group(1))
        row["note"] = f"{bodies} complete bodies"
    else:
        j = json.loads(out)
        units = j["tls_handshakes"]
        resumed = j["tls_resumed"]
        row["note"] = f"{j['requests']} requests, {units} handshakes, {resumed} resumed, {j['errors']} errors"
        if profile == "full" and resumed:
            raise RuntimeError(f"{server.name}: --no-resume resumed {resumed} sessions")
        if profile == "resumed" and resumed < 0.95 * units:
            # Only the first handshake of each connection slot should be full.
            raise RuntimeError(f"{server.name}: only {resumed} of {units} handshakes resumed")
    row["units"] = units
    row["cpu_us_per_unit"] = server_cpu * 1e6 / max(units, 1e-9)
    return row


def median(rows, server, profile, key):
    values = [r[key] for r in rows if r["server"] == server and r["profile"] == profile]
    return statistics.median(values) if values else float("nan")


def round_ratios(rows, profile, key):
    """iomux's `key` over nginx's, one ratio per round (runs seconds apart)."""
    def by_round(names):
        return {r["round"]: r[key] for r in rows if r["server"] in names and r["profile"] == profile}

    num, den = by_round(("iomux", "iomux-files")), by_round(("nginx",))
    return [num[k] / den[k] for k in sorted(num) if k in den and den[k]]


GOALS = {"keepalive": "goal <= 0.95", "full": "goal <= 0.8", "resumed": "", "bulk": ""}


def report(rows, args):
    out = [f"Medians over {args.rounds} interleaved rounds of {args.duration} s "
           "(servers on cpu 0, clients on cpu 1)\n",
           "| profile | server | units/s | server CPU us per unit | unit | server core busy | client core busy | note |",
           "| --- | --- | ---: | ---: | --- | ---: | ---: | --- |"]
    for profile in args.profiles:
        for s in ("iomux", "iomux-files", "nginx"):
            mine = [r for r in rows if r["server"] == s and r["profile"] == profile]
            if not mine:
                continue
            out.append(
                f"| {profile} | {s} | {statistics.median(r['units'] / args.duration for r in mine):,.0f} | "
                f"{median(rows, s, profile, 'cpu_us_per_unit'):.2f} | {UNIT[profile]} | "
                f"{median(rows, s, profile, 'server_core_busy'):.0%} | "
                f"{median(rows, s, profile, 'client_core_busy'):.0%} | {mine[-1]['note']} |")
    out.append("")
    out.append("iomux/nginx server CPU per unit: the median of the per-round ratios, then their range.")
    for profile in args.profiles:
        per_round = round_ratios(rows, profile, "cpu_us_per_unit")
        if per_round:
            goal = GOALS[profile]
            out.append(srv.ratio_line(f"{profile} (per {UNIT[profile]})", per_round, goal))
    return "\n".join(out)


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--rounds", type=int, default=5)
    ap.add_argument("--duration", type=int, default=5)
    ap.add_argument("--profiles", default=",".join(PROFILES))
    ap.add_argument("--handshake-conns", type=int, default=8,
                    help="connections the handshake profiles keep busy at once")
    ap.add_argument("--server-cpu", type=int, default=0)
    ap.add_argument("--client-cpu", type=int, default=1)
    ap.add_argument("--json", help="write every run's row to this file")
    args = ap.parse_args()
    args.profiles = [p for p in args.profiles.split(",") if p]
    for p in args.profiles:
        if p not in PROFILES:
            sys.exit(f"unknown profile {p!r}: choose from {','.join(PROFILES)}")
    if "bulk" in args.profiles and not iomux_has_root():
        print("bulk: skipped, this iomux has no --root (static files) to serve a 100 MiB body",
              file=sys.stderr)
        args.profiles.remove("bulk")
    tmp = tempfile.mkdtemp(prefix="tls-peers-")
    # nginx's worker runs as an unprivileged user: it must reach the files.
    os.chmod(tmp, 0o755)
    srv.certificates(tmp)
    ca = os.path.join(tmp, "ca.pem")
    if "bulk" in args.profiles:
        os.makedirs(os.path.join(tmp, "www"))
        with open(os.path.join(tmp, "www", "big.bin"), "wb") as f:
            for _ in range(BULK_BYTES // (1 << 20)):
                f.write(os.urandom(1 << 20))
        os.chmod(os.path.join(tmp, "www"), 0o755)
        os.chmod(os.path.join(tmp, "www", "big.bin"), 0o644)
    servers = start_servers(tmp, args.server_cpu, "bulk" in args.profiles)
    rows = []
    try:
        print(f"# {time.strftime('%Y-%m-%d %H:%M:%S UTC', time.gmtime())}, load average "
              f"{os.getloadavg()}", file=sys.stderr)
        for rnd in range(args.rounds):
            for profile in args.profiles:
                names = ["iomux-files" if profile == "bulk" else "iomux", "nginx"]
                if rnd % 2:
                    names.reverse()
                for name in names:
                    row = run_once(servers[name], profile, args, ca, args.client_cpu)
                    row["round"] = rnd
                    rows.append(row)
                    print(f"round {rnd} {profile} {name}: {row['cpu_us_per_unit']:.2f} us/{UNIT[profile]}, "
                          f"{row['units'] / args.duration:,.0f}/s, server {row['server_core_busy']:.0%}, "
                          f"client {row['client_core_busy']:.0%} {row['note']}", file=sys.stderr, flush=True)
    finally:
        srv.stop_all(servers)
    print(f"# end {time.strftime('%H:%M:%S UTC', time.gmtime())}, load average {os.getloadavg()}",
          file=sys.stderr)
    if args.json:
        with open(args.json, "w") as f:
            json.dump(rows, f, indent=1)
    print(report(rows, args))


if __name__ == "__main__":
    main()
