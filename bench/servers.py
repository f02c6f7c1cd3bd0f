"""Start and stop the HTTP servers the benchmarks compare: iomux, nginx, hyper,
and the floor peer on epoll and on io_uring (what the kernel alone costs per
request).

Shared by http_peers.py and idle_memory.py. Each server runs pinned to one CPU
(taskset), listens on a free loopback port, and is stopped when the
benchmark ends. nginx runs from its own prefix and config in a temporary
directory (one worker, `return 200`, access log off), never as the system
service.
"""

import os
import re
import resource
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import time
import urllib.request

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
IOMUX = os.path.join(ROOT, "target", "release", "iomux")
HYPER = os.path.join(ROOT, "bench", "hyper-peer", "target", "release", "hyper-peer")
FLOOR = os.path.join(ROOT, "bench", "floor-peer", "target", "release", "floor-peer")
CLK_TCK = os.sysconf("SC_CLK_TCK")

# What every nginx the benchmarks start shares: one worker from its own
# prefix, access log off, keep-alive unbounded. Each config adds its own
# lines for the `http` block after this head.
NGINX_CONF_HEAD = """\
worker_processes 1;
worker_rlimit_nofile 20000;
daemon off;
master_process on;
pid {prefix}/nginx.pid;
error_log {prefix}/error.log warn;
events {{
    worker_connections 20000;
    use epoll;
}}
http {{
    access_log off;
    server_tokens off;
    keepalive_timeout 300s;
    keepalive_requests 100000000;
    client_body_temp_path {prefix}/tmp;
    proxy_temp_path {prefix}/tmp;
    fastcgi_temp_path {prefix}/tmp;
    uwsgi_temp_path {prefix}/tmp;
    scgi_temp_path {prefix}/tmp;
"""

NGINX_CONF = NGINX_CONF_HEAD + """\
    server {{
        listen 127.0.0.1:{port} backlog=4096;
        default_type text/plain;
        location / {{
            return 200 "Hello, World!";
        }}
    }}
}}
"""


def free_port():
    """A loopback port nobody listens on right now."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def cpu_ticks_split(pids):
    """(utime, stime) of the processes (all their threads), in clock ticks."""
    user = system = 0
    for pid in pids:
        with open(f"/proc/{pid}/stat") as f:
            # The command name may contain spaces: fields count from after ')'.
            fields = f.read().rsplit(")", 1)[1].split()
        user += int(fields[11])
        system += int(fields[12])
    return user, system


def cpu_ticks(pids):
    """utime + stime of the processes (all their threads), in clock ticks."""
    return sum(cpu_ticks_split(pids))


class WrkRun:
    """One wrk run against a server and what it cost: wrk's output, the wall
    time, the server's user and system clock ticks, wrk's own CPU seconds."""

    def __init__(self, out, wall, user_ticks, sys_ticks, wrk_cpu):
        self.out = out
        self.wall = wall
        self.user_ticks = user_ticks
        self.sys_ticks = sys_ticks
        self.wrk_cpu = wrk_cpu
        self.requests = int(re.search(r"(\d+) requests in", out).group(1))
        errors = re.search(r"Socket errors: (.*)", out)
        self.socket_errors = errors.group(1) if errors else ""
        non2xx = re.search(r"Non-2xx or 3xx responses: (\d+)", out)
        self.non2xx = f" non2xx {non2xx.group(1)}" if non2xx else ""

    @property
    def server_cpu(self):
        """The server's utime + stime over the run, seconds."""
        return (self.user_ticks + self.sys_ticks) / CLK_TCK


def ratio_line(label, per_round, goal=""):
    """A report line: the median of the per-round ratios, their range, the goal."""
    return (f"- {label}: {statistics.median(per_round):.2f} "
            f"({min(per_round):.2f}-{max(per_round):.2f})" + (f"; {goal}" if goal else ""))


def wrk_errors(rows, what):
    """The report's list of runs wrk counted errors in ('' when none); `what`
    names the row's field that says what ran (profile, size)."""
    errs = [f"{r['server']} {r[what]}: {r['errors']}" for r in rows if re.search(r"[1-9]", r["errors"])]
    return "\nwrk reported errors:\n" + "\n".join(f"- {e}" for e in errs) if errs else ""

def measure_wrk(server, argv):
    """Run wrk (`argv`, pinned by the caller) against `server`; its CPU time
    comes from /proc (all its processes), wrk's from our children's rusage."""
    before_self = resource.getrusage(resource.RUSAGE_CHILDREN)
    user0, sys0 = cpu_ticks_split(server.pids)
    t0 = time.monotonic()
    out = subprocess.run(argv, capture_output=True, text=True, check=True).stdout
    wall = time.monotonic() - t0
    user1, sys1 = cpu_ticks_split(server.pids)
    after_self = resource.getrusage(resource.RUSAGE_CHILDREN)
    wrk_cpu = (after_self.ru_utime - before_self.ru_utime) + (after_self.ru_stime - before_self.ru_stime)
    return WrkRun(out, wall, user1 - user0, sys1 - sys0, wrk_cpu)


def status_kib(pid, field):
    """A `FIELD: N kB` line of /proc/PID/status (VmRSS, VmHWM...), KiB."""
    with open(f"/proc/{pid}/status") as f:
        for line in f:
            if line.startswith(field + ":"):
                return int(line.split()[1])
    raise RuntimeError(f"no {field} for pid {pid}")


def rss_kib(pid):
    """VmRSS of one process, KiB."""
    return status_kib(pid, "VmRSS")


def children(pid):
    with open(f"/proc/{pid}/task/{pid}/children") as f:
        return [int(p) for p in f.read().split()]


def certificates(tmp):
    """A CA and a leaf for `localhost`, both ECDSA P-256; the leaf's PEMs
    are leaf.pem and leaf.key, the CA's certificate ca.pem."""
    ec = ["-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:P-256", "-nodes"]

    def run(args):
        subprocess.run(["openssl"] + args, cwd=tmp, check=True, capture_output=True)

    run(["req", "-x509"] + ec + ["-keyout", "ca.key", "-out", "ca.pem", "-days", "2", "-subj", "/CN=bench CA"])
    run(["req"] + ec + ["-keyout", "leaf.key", "-out", "leaf.csr", "-subj", "/CN=localhost"])
    with open(os.path.join(tmp, "ext.cnf"), "w") as f:
        f.write("subjectAltName=DNS:localhost\nbasicConstraints=CA:FALSE\n"
                "keyUsage=digitalSignature\nextendedKeyUsage=serverAuth\n")
    run(["x509", "-req", "-in", "leaf.csr", "-CA", "ca.pem", "-CAkey", "ca.key", "-CAcreateserial",
         "-out", "leaf.pem", "-days", "2", "-extfile", "ext.cnf"])


# What the load-client benchmarks (load-tls.py, load-vs-wrk.py) share: nginx
# with one worker pinned to cpu 0, each client run pinned to cpu 1, and the
# CPU both spent, read from /proc.

def cpu_seconds(pid):
    """utime + stime of a process (all its threads) from /proc/PID/stat."""
    return cpu_ticks([pid]) / CLK_TCK


def core_busy_seconds():
    """Busy (non-idle, non-iowait) seconds of cpu0 and cpu1 from /proc/stat."""
    busy = {}
    with open("/proc/stat") as f:
        for line in f:
            name, *vals = line.split()
            if name in ("cpu0", "cpu1"):
                v = [int(x) for x in vals[:8]]
                busy[name] = (sum(v) - v[3] - v[4]) / CLK_TCK
    return busy


def start_pinned_nginx(tmp, http_rest, port):
    """nginx from prefix `tmp`, one worker pinned to cpu 0, its `http` block
    ending with `http_rest` (the caller's lines and the closing brace);
    returns (master process, worker pid) once `port` accepts connections."""
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
""" + http_rest)
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
    kids = children(master.pid)
    if len(kids) != 1:
        sys.exit(f"expected one nginx worker, found {kids}")
    return master, kids[0]


def run_pinned_client(cmd, worker, counters=None):
    """Run `cmd` pinned to cpu 1. Returns its stdout and the run's figures:
    wall s, client and nginx CPU s, both cores' busy s, and the deltas of
    `counters()` (a dict of counters) when given."""
    out = tempfile.TemporaryFile()
    w0, cores0 = cpu_seconds(worker), core_busy_seconds()
    counted0 = counters() if counters else {}
    t0 = time.monotonic()
    p = subprocess.Popen(["taskset", "-c", "1"] + cmd, stdout=out, stderr=subprocess.DEVNULL)
    # Wait without reaping, so that /proc/PID/stat still holds its CPU time.
    os.waitid(os.P_PID, p.pid, os.WEXITED | os.WNOWAIT)
    wall = time.monotonic() - t0
    client = cpu_seconds(p.pid)
    server = cpu_seconds(worker) - w0
    cores1 = core_busy_seconds()
    counted1 = counters() if counters else {}
    p.wait()
    out.seek(0)
    run = {
        "wall": wall, "client": client, "server": server,
        "cpu0": cores1["cpu0"] - cores0["cpu0"], "cpu1": cores1["cpu1"] - cores0["cpu1"],
        "counters": {k: counted1[k] - counted0[k] for k in counted0},
    }
    with out:
        return out.read().decode(), run


class Server:
    """One running server: `name`, `port`, `pids` (every process that serves)."""

    def __init__(self, name, argv, port, cpu, workdir=None):
        self.name = name
        self.port = port
        self.log = open(os.path.join(workdir or tempfile.gettempdir(), f"{name}.log"), "w+")
        self.proc = subprocess.Popen(
            ["taskset", "-c", str(cpu)] + argv,
            stdout=self.log,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
        self._wait_ready()
        # taskset execs the server, so proc.pid is the server (nginx: its master).
        self.pids = [self.proc.pid] + children(self.proc.pid)

    def _wait_ready(self):
        deadline = time.time() + 20
        while time.time() < deadline:
            if self.proc.poll() is not None:
                self.log.seek(0)
                raise RuntimeError(f"{self.name} exited at start:\n{self.log.read()}")
            try:
                if self.answers():
                    return
            except OSError:
                pass
            time.sleep(0.1)
        # Not left running behind the error (nginx's master would outlive the run).
        self.stop()
        raise RuntimeError(f"{self.name} did not answer on port {self.port} within 20 s")

    def answers(self):
        """True once the server answers a request (HTTP here; override for other protocols)."""
        with urllib.request.urlopen(self.url(), timeout=1) as r:
            r.read()
            return True

    def url(self, path="/"):
        return f"http://127.0.0.1:{self.port}{path}"

    def stop(self):
        if self.proc.poll() is None:
            os.killpg(self.proc.pid, signal.SIGTERM)
            try:
                self.proc.wait(timeout=10)
            except subprocess.TimeoutExpired:
                os.killpg(self.proc.pid, signal.SIGKILL)
                self.proc.wait()
        self.log.close()


def start_all(cpu, workdir, which=("iomux", "nginx", "hyper")):
    """Start the servers named in `which`, each pinned to `cpu`; returns {name: Server}."""
    builds = (
        ("iomux", IOMUX, "cargo build --release"),
        ("hyper", HYPER, "cargo build --release --manifest-path bench/hyper-peer/Cargo.toml"),
        ("floor", FLOOR, "cargo build --release --manifest-path bench/floor-peer/Cargo.toml"),
    )
    for name, path, what in builds:
        if any(w.startswith(name) for w in which) and not os.path.exists(path):
            sys.exit(f"{path} is missing: run `{what}` (bench/http-peers.sh does it)")
    servers = {}
    try:
        for name in which:
            port = free_port()
            if name in ("iomux", "iomux-alt"):
                binary = IOMUX if name == "iomux" else os.environ.get("IOMUX_ALT", "")
                if not os.path.exists(binary):
                    sys.exit("iomux-alt needs IOMUX_ALT=PATH of another iomux build (for A/B runs of a change)")
                argv = [binary, "serve", "--proto", "http", "--addr", f"127.0.0.1:{port}", "--idle-timeout", "300"]
            elif name == "hyper":
                argv = [HYPER, f"127.0.0.1:{port}"]
            elif name in ("floor", "floor-uring"):
                argv = [FLOOR, f"127.0.0.1:{port}", "uring" if name == "floor-uring" else "epoll"]
            elif name == "nginx":
                prefix = os.path.join(workdir, "nginx")
                os.makedirs(os.path.join(prefix, "tmp"), exist_ok=True)
                conf = os.path.join(prefix, "nginx.conf")
                with open(conf, "w") as f:
                    f.write(NGINX_CONF.format(prefix=prefix, port=port))
                argv = ["nginx", "-p", prefix, "-c", conf]
            else:
                raise ValueError(name)
            servers[name] = Server(name, argv, port, cpu, workdir)
    except BaseException:
        stop_all(servers)
        raise
    return servers


def stop_all(servers):
    for s in servers.values():
        s.stop()
