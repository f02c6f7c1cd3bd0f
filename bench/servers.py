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
import signal
import socket
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

NGINX_CONF = """\
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


def rss_kib(pid):
    """VmRSS of one process, KiB."""
    with open(f"/proc/{pid}/status") as f:
        for line in f:
            if line.startswith("VmRSS:"):
                return int(line.split()[1])
    raise RuntimeError(f"no VmRSS for pid {pid}")


def children(pid):
    with open(f"/proc/{pid}/task/{pid}/children") as f:
        return [int(p) for p in f.read().split()]


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
