"""Interleaved RESP benchmark of iomux against redis-server (see redis-peers.sh),
and against the floor (bench/floor-peer in `resp` mode, on epoll and on
io_uring: one recv and one send per batch of commands, canned answers, no
store; what the kernel alone costs per operation, not a real server).

Every server is pinned to CPU 0, redis-benchmark to CPU 1. Each round runs
every profile against every server in turn, each round starting one server
later, so a noisy neighbour on the shared machine hits all of them alike; the
table reports medians over rounds, and each ratio is the median of the
per-round ratios with their range.

Per run it records: operations/s (redis-benchmark's CSV), server CPU time
(utime+stime of the server process, all threads, from /proc, delta over the
run) per operation, how busy each core was (near 100% on the client side
means redis-benchmark, not the server, was the bottleneck; "others on server
core" is the share of CPU 0 that went to anything else, e.g. other work on a
shared machine: the noise; "softirq on server core" bounds the kernel work
not billed to the server, see softirq_share), and the voluntary
context switches of the server's threads per operation (each is a sleep in
the readiness wait and a wake-up: the less busy a server's core, the more).

Then, unless --fanout-subscribers 0: pub/sub fan-out, the chat scenario.
Per server and round, N subscribers (raw RESP connections) subscribe to one
channel, then one publisher sends M PUBLISH commands of a 64-byte message,
--fanout-pipeline at a time (default 1: each after the answer to the
previous one, the chat scenario; every answer must count all N).
The subscribers read nothing meanwhile (every frame fits their socket
buffers, so no write ever blocks on them), then each is drained and checked
to hold all M frames in order. Server CPU from just before the first PUBLISH
to after the last subscriber is drained, per delivered message (N x M).

With --perf, each run also counts the server's system calls and context
switches with `perf stat` (syscall tracepoints: every system call gets a
little slower, so take CPU figures from runs without it) and reports them
per operation; the fan-out also counts the pure ACKs the server's sockets
received and the data segments they sent (`ss -ti`), per delivered message.

Then, unless --idle 0: the server's resident memory per idle connection
(each connection sends one PING, reads PONG, and stays open silently).
"""

import argparse
import json
import os
import resource
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import idle_memory  # noqa: E402
import servers as srv  # noqa: E402
from http_peers import median, round_ratios  # noqa: E402

ORDER = ("redis", "iomux-epoll", "iomux-uring", "iomux-epoll-level", "floor", "floor-uring",
         "alt-iomux-epoll", "alt-iomux-uring")
DEFAULT_SERVERS = ("redis", "iomux-epoll", "iomux-uring")
# Each iomux server against the floor on the same kernel interface.
FLOOR_OF = {"iomux-epoll": "floor", "iomux-epoll-level": "floor", "iomux-uring": "floor-uring"}
# name: (redis-benchmark test, commands per write)
PROFILES = {
    "set": ("set", 1),
    "get": ("get", 1),
    "set-P16": ("set", 16),
    "get-P16": ("get", 16),
}
PING = b"*1\r\n$4\r\nPING\r\n"
CLIENTS = 50
SERVER_CPU = 0
CLIENT_CPU = 1


class RespServer(srv.Server):
    """A server that is ready once it answers PING."""

    def answers(self):
        with socket.create_connection(("127.0.0.1", self.port), timeout=1) as s:
            s.sendall(PING)
            return s.recv(64) == b"+PONG\r\n"


def start(name, cpu, workdir, iomux_flags=()):
    port = srv.free_port()
    if name == "redis":
        argv = ["redis-server", "--save", "", "--appendonly", "no", "--port", str(port),
                "--bind", "127.0.0.1", "--daemonize", "no", "--dir", workdir, "--maxclients", "20000"]
    elif name in ("floor", "floor-uring"):
        if not os.path.exists(srv.FLOOR):
            sys.exit(f"{srv.FLOOR} is missing: run `cargo build --release --manifest-path "
                     "bench/floor-peer/Cargo.toml` (bench/redis-peers.sh does it)")
        argv = [srv.FLOOR, f"127.0.0.1:{port}", "uring" if name == "floor-uring" else "epoll", "resp"]
    else:
        # alt-iomux-...: the build at $IOMUX_ALT, for A/B runs of a change.
        binary = os.environ.get("IOMUX_ALT", "") if name.startswith("alt-") else srv.IOMUX
        if not os.path.exists(binary):
            sys.exit(f"{binary or 'IOMUX_ALT'} is missing: run `cargo build --release` (bench/redis-peers.sh "
                     "does it); alt-iomux-* servers need IOMUX_ALT=PATH of another iomux build")
        # iomux-BACKEND or iomux-BACKEND-TRIGGER
        backend, _, trigger = name.removeprefix("alt-").split("-", 1)[1].partition("-")
        mode = ["--trigger", trigger] if trigger else []
        argv = [binary, "serve", "--proto", "resp", "--backend", backend, *mode,
                "--addr", f"127.0.0.1:{port}", "--idle-timeout", "600", *iomux_flags]
    return RespServer(name, argv, port, cpu, workdir)


def cpu_busy_ticks(cpu):
    """(busy, total, softirq) clock ticks CPU `cpu` has counted since boot (/proc/stat)."""
    with open("/proc/stat") as f:
        for line in f:
            if line.startswith(f"cpu{cpu} "):
                ticks = [int(t) for t in line.split()[1:]]
                idle = ticks[3] + ticks[4]  # idle, iowait
                return sum(ticks[:8]) - idle, sum(ticks[:8]), ticks[6]
    raise RuntimeError(f"no cpu{cpu} in /proc/stat")


def voluntary_switches(pids):
    """Voluntary context switches of every thread of the processes, so far."""
    total = 0
    for pid in pids:
        for task in os.listdir(f"/proc/{pid}/task"):
            try:
                with open(f"/proc/{pid}/task/{task}/status") as f:
                    for line in f:
                        if line.startswith("voluntary_ctxt_switches:"):
                            total += int(line.split()[1])
            except FileNotFoundError:
                pass  # a thread that ended meanwhile
    return total


# What --perf counts: (column, perf events summed into it).
PERF_COUNTS = (
    ("epoll_wait", ("syscalls:sys_enter_epoll_wait", "syscalls:sys_enter_epoll_pwait", "syscalls:sys_enter_epoll_pwait2")),
    ("io_uring_enter", ("syscalls:sys_enter_io_uring_enter",)),
    ("recv", ("syscalls:sys_enter_read", "syscalls:sys_enter_recvfrom", "syscalls:sys_enter_recvmsg")),
    ("send", ("syscalls:sys_enter_write", "syscalls:sys_enter_sendto", "syscalls:sys_enter_sendmsg",
              "syscalls:sys_enter_writev")),
    ("all syscalls", ("raw_syscalls:sys_enter",)),
    ("context switches", ("context-switches",)),
)


class PerfCount:
    """`perf stat` attached to the server's processes (all threads) while the
    block runs; `.counts` then maps each PERF_COUNTS column to its total."""

    def __init__(self, pids, enabled):
        self.pids = pids
        self.enabled = enabled
        self.counts = {}

    def __enter__(self):
        if self.enabled:
            self.out = tempfile.NamedTemporaryFile("r", suffix=".perf")
            events = ",".join(e for _, group in PERF_COUNTS for e in group)
            self.proc = subprocess.Popen(["perf", "stat", "-x", ",", "-o", self.out.name, "-e", events,
                                          "-p", ",".join(map(str, self.pids))], stderr=subprocess.DEVNULL)
            time.sleep(0.5)  # attached before the run starts
        return self

    def __exit__(self, *exc):
        if not self.enabled:
            return
        self.proc.send_signal(signal.SIGINT)
        self.proc.wait(timeout=30)
        totals = {}
        for line in self.out.read().splitlines():
            fields = line.split(",")
            if len(fields) > 2 and fields[0].isdigit():
                totals[fields[2]] = int(fields[0])
        self.out.close()
        self.counts = {name: sum(totals.get(e, 0) for e in group) for name, group in PERF_COUNTS}


def others_busy(before, after, server_ticks):
    """The share of the server core's time that went to anything but the
    server (other processes, interrupts): how noisy the run was."""
    busy, total = after[0] - before[0], after[1] - before[1]
    return max(busy - server_ticks, 0) / total if total else float("nan")


def softirq_share(before, after):
    """The share of the server core's time in softirqs (network receive,
    timers such as delayed ACKs): the server's stime has those that hit
    while it ran, not those that ran while its core was idle (tick-based
    accounting, no IRQ_TIME_ACCOUNTING), so a server that sleeps more gets
    more of that work unbilled."""
    total = after[1] - before[1]
    return (after[2] - before[2]) / total if total else float("nan")


def run_benchmark(server, profile, requests, cpu, perf=False):
    test, pipeline = PROFILES[profile]
    n = requests * pipeline
    argv = ["taskset", "-c", str(cpu), "redis-benchmark", "-h", "127.0.0.1", "-p", str(server.port),
            "-c", str(CLIENTS), "-n", str(n), "-P", str(pipeline), "-t", test, "--csv"]
    before_client = resource.getrusage(resource.RUSAGE_CHILDREN)
    with PerfCount(server.pids, perf) as counted:
        switches0 = voluntary_switches(server.pids)
        core0 = cpu_busy_ticks(SERVER_CPU)
        user0, sys0 = srv.cpu_ticks_split(server.pids)
        t0 = time.monotonic()
        done = subprocess.run(argv, capture_output=True, text=True, timeout=600)
        wall = time.monotonic() - t0
        user1, sys1 = srv.cpu_ticks_split(server.pids)
        core1 = cpu_busy_ticks(SERVER_CPU)
        switches1 = voluntary_switches(server.pids)
    after_client = resource.getrusage(resource.RUSAGE_CHILDREN)
    if done.returncode != 0:
        raise RuntimeError(f"redis-benchmark against {server.name} failed: {done.stdout}{done.stderr}")
    rows = [line.split(",") for line in done.stdout.splitlines() if not line.startswith('"test"')]
    if len(rows) != 1:
        raise RuntimeError(f"unexpected redis-benchmark output: {done.stdout!r}")
    ops_per_s = float(rows[0][1].strip('"'))
    server_cpu = (user1 - user0 + sys1 - sys0) / srv.CLK_TCK
    client_cpu = (after_client.ru_utime - before_client.ru_utime) + (after_client.ru_stime - before_client.ru_stime)
    return {
        "server": server.name,
        "profile": profile,
        "ops": n,
        "ops_per_s": ops_per_s,
        "cpu_us_per_op": server_cpu * 1e6 / n,
        "user_us_per_op": (user1 - user0) / srv.CLK_TCK * 1e6 / n,
        "sys_us_per_op": (sys1 - sys0) / srv.CLK_TCK * 1e6 / n,
        "server_core_busy": server_cpu / wall,
        "client_core_busy": client_cpu / wall,
        "switches_per_op": (switches1 - switches0) / n,
        "others_on_server_core": others_busy(core0, core1, user1 - user0 + sys1 - sys0),
        "softirq_on_server_core": softirq_share(core0, core1),
        "per_op": {k: v / n for k, v in counted.counts.items()},
    }


CHANNEL = b"news"
FANOUT_PAYLOAD = 64


def fanout_frame(m):
    """The frame a subscriber receives for message `m` (all of one length)."""
    message = f"{m:06d}".encode().ljust(FANOUT_PAYLOAD, b".")
    return (b"*3\r\n$7\r\nmessage\r\n$%d\r\n%s\r\n$%d\r\n%s\r\n"
            % (len(CHANNEL), CHANNEL, len(message), message)), message


def read_line(sock):
    line = b""
    while not line.endswith(b"\r\n"):
        chunk = sock.recv(1)
        if not chunk:
            raise RuntimeError("the server closed the publisher's connection")
        line += chunk
    return line


def segment_counts(port):
    """(pure ACKs in, data segments out) of the server's established sockets
    on `port` so far (`ss -ti`; less each handshake's last ACK)."""
    out = subprocess.run(["ss", "-tinH", "state", "established", f"( sport = :{port} )"],
                         capture_output=True, text=True, check=True).stdout
    acks = data_out = 0
    for info in out.split("\n"):
        fields = dict(f.split(":", 1) for f in info.split()
                      if f.startswith(("segs_in:", "data_segs_in:", "data_segs_out:")))
        if "segs_in" in fields:
            acks += int(fields["segs_in"]) - int(fields.get("data_segs_in", 0)) - 1
            data_out += int(fields.get("data_segs_out", 0))
    return acks, data_out


def publish_and_drain(server, publisher, held, frames, pipeline):
    """Publishes `frames`' messages, `pipeline` at a time, checking every
    answer; then reads every subscriber's frames and checks them. Returns when
    the publishing ended (time.monotonic())."""
    expected = b"".join(f for f, _ in frames)
    for first in range(0, len(frames), pipeline):
        batch = frames[first:first + pipeline]
        publisher.sendall(b"".join(b"*3\r\n$7\r\nPUBLISH\r\n$%d\r\n%s\r\n$%d\r\n%s\r\n"
                                   % (len(CHANNEL), CHANNEL, len(message), message)
                                   for _, message in batch))
        for _ in batch:
            answer = read_line(publisher)
            if answer != b":%d\r\n" % len(held):
                raise RuntimeError(f"{server.name}: PUBLISH answered {answer!r}, expected :{len(held)}")
    published = time.monotonic()
    for i, s in enumerate(held):
        s.setblocking(True)
        s.settimeout(30)
        got = b""
        while len(got) < len(expected):
            chunk = s.recv(len(expected) - len(got))
            if not chunk:
                raise RuntimeError(f"{server.name}: subscriber {i} closed after {len(got)} bytes")
            got += chunk
        if got != expected:
            raise RuntimeError(f"{server.name}: subscriber {i} got the messages wrong or out of order")
    return published


def run_fanout(server, subscribers, messages, pipeline, perf=False):
    """One fan-out run (see the module doc); returns its row."""
    subscribe = b"*2\r\n$9\r\nSUBSCRIBE\r\n$%d\r\n%s\r\n" % (len(CHANNEL), CHANNEL)
    held = idle_memory.open_idle(server.port, subscribers, request=subscribe,
                                 complete=lambda d: d.endswith(b":1\r\n"))
    frames = [fanout_frame(m) for m in range(messages)]
    try:
        publisher = socket.create_connection(("127.0.0.1", server.port), timeout=30)
        publisher.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        with PerfCount(server.pids, perf) as counted:
            segments0 = segment_counts(server.port) if perf else (0, 0)
            switches0 = voluntary_switches(server.pids)
            core0 = cpu_busy_ticks(SERVER_CPU)
            user0, sys0 = srv.cpu_ticks_split(server.pids)
            t0 = time.monotonic()
            published = publish_and_drain(server, publisher, held, frames, pipeline)
            wall = time.monotonic() - t0
            user1, sys1 = srv.cpu_ticks_split(server.pids)
            core1 = cpu_busy_ticks(SERVER_CPU)
            switches1 = voluntary_switches(server.pids)
        segments1 = segment_counts(server.port) if perf else (0, 0)
        publisher.close()
    finally:
        for s in held:
            s.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, b"\x01\x00\x00\x00\x00\x00\x00\x00")
            s.close()
    delivered = subscribers * messages
    server_cpu = (user1 - user0 + sys1 - sys0) / srv.CLK_TCK
    return {
        "server": server.name,
        "profile": "fanout",
        "ops": delivered,
        "ops_per_s": delivered / (published - t0),
        "cpu_us_per_op": server_cpu * 1e6 / delivered,
        "user_us_per_op": (user1 - user0) / srv.CLK_TCK * 1e6 / delivered,
        "sys_us_per_op": (sys1 - sys0) / srv.CLK_TCK * 1e6 / delivered,
        "server_core_busy": server_cpu / wall,
        "client_core_busy": float("nan"),
        "switches_per_op": (switches1 - switches0) / delivered,
        "others_on_server_core": others_busy(core0, core1, user1 - user0 + sys1 - sys0),
        "softirq_on_server_core": softirq_share(core0, core1),
        "per_op": {**{k: v / delivered for k, v in counted.counts.items()},
                   **({"pure ACKs in": (segments1[0] - segments0[0]) / delivered,
                       "data segments out": (segments1[1] - segments0[1]) / delivered} if perf else {})},
    }


def ratio_lines(rows, which, profile, goal):
    """Per server: its CPU per op (all, user, kernel) and ops/s over redis's,
    against the goal; and each iomux server's over the floor on its kernel
    interface. Each figure is the median of per-round ratios (range)."""
    def ratio(a, b, key):
        values = round_ratios(rows, a, b, profile, key)  # empty when b's figure was 0 in every round
        return (statistics.median(values), min(values), max(values)) if values else (float("nan"),) * 3

    out = []
    pairs = [(s, "redis") for s in which if s != "redis"]
    pairs += [(s, FLOOR_OF[s]) for s in which if s in FLOOR_OF and FLOOR_OF[s] in which]
    for a, b in pairs:
        if not round_ratios(rows, a, b, profile, "cpu_us_per_op"):
            continue
        cpu, low, high = ratio(a, b, "cpu_us_per_op")
        user, kernel, rate = (ratio(a, b, k)[0] for k in ("user_us_per_op", "sys_us_per_op", "ops_per_s"))
        verdict = f", goal <= {goal}: {'met' if cpu <= goal else 'NOT met'}" if b == "redis" else ""
        out.append(f"- {a}/{b} {profile}: CPU per op {cpu:.2f} ({low:.2f}-{high:.2f}){verdict}; "
                   f"user {user:.2f}, kernel {kernel:.2f}; ops/s {rate:.2f}")
    return out


def fanout_report(rows, rounds, which, subscribers, messages, pipeline):
    out = [f"\nPub/sub fan-out: {subscribers:,} subscribers x {messages} messages of {FANOUT_PAYLOAD} bytes, "
           f"{pipeline} PUBLISH in flight "
           f"({subscribers * messages:,} deliveries per run), medians over {rounds} interleaved rounds "
           "(server on cpu 0, client on cpu 1)\n",
           "| server | deliveries/s while publishing | server CPU us/delivered message | of which user | of which kernel "
           "| server core busy | others on server core | softirq on server core | voluntary switches per 1,000 deliveries |",
           "| --- | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: |"]
    for s in which:
        out.append(f"| {s} | {median(rows, s, 'fanout', 'ops_per_s'):,.0f} | {median(rows, s, 'fanout', 'cpu_us_per_op'):.3f} | "
                   f"{median(rows, s, 'fanout', 'user_us_per_op'):.3f} | {median(rows, s, 'fanout', 'sys_us_per_op'):.3f} | "
                   f"{median(rows, s, 'fanout', 'server_core_busy'):.0%} | "
                   f"{median(rows, s, 'fanout', 'others_on_server_core'):.0%} | "
                   f"{median(rows, s, 'fanout', 'softirq_on_server_core'):.0%} | "
                   f"{median(rows, s, 'fanout', 'switches_per_op') * 1000:.2f} |")
    out.append("")
    out += ratio_lines(rows, which, "fanout", 0.8)
    return "\n".join(out)


def report(rows, rounds, which, profiles):
    out = [f"Medians over {rounds} interleaved rounds ({CLIENTS} clients; server on cpu 0, redis-benchmark on cpu 1)\n",
           "| profile | server | ops/s | server CPU us/op | of which user | of which kernel | server core busy "
           "| others on server core | softirq on server core | client core busy | voluntary switches/op |",
           "| --- | --- | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: |"]
    for p in profiles:
        for s in which:
            out.append(
                f"| {p} | {s} | {median(rows, s, p, 'ops_per_s'):,.0f} | {median(rows, s, p, 'cpu_us_per_op'):.3f} | "
                f"{median(rows, s, p, 'user_us_per_op'):.3f} | {median(rows, s, p, 'sys_us_per_op'):.3f} | "
                f"{median(rows, s, p, 'server_core_busy'):.0%} | {median(rows, s, p, 'others_on_server_core'):.0%} | "
                f"{median(rows, s, p, 'softirq_on_server_core'):.0%} | "
                f"{median(rows, s, p, 'client_core_busy'):.0%} | "
                f"{median(rows, s, p, 'switches_per_op'):.4f} |"
            )
    out.append("")
    out.append("Ratios: the median of the per-round ratios (range), to redis-server and of iomux to the floor.")
    for p in profiles:
        out += ratio_lines(rows, which, p, 0.6 if p.endswith("P16") else 0.95)
    return "\n".join(out)


def perf_report(rows, which, profiles):
    """Medians of what --perf counted, per operation (fan-out: per delivered message)."""
    columns = [name for name, _ in PERF_COUNTS] + ["pure ACKs in", "data segments out"]
    columns = [c for c in columns if any(c in r["per_op"] for r in rows)]
    if not columns:
        return ""
    out = ["\nCounted with perf stat (separate figure: tracepoints slow system calls), per operation "
           "(fan-out: per delivered message), medians over rounds\n",
           "| profile | server | " + " | ".join(columns) + " | ops per epoll_wait or io_uring_enter |",
           "| --- | --- | " + " | ".join("---:" for _ in columns) + " | ---: |"]
    for p in profiles:
        for s in which:
            runs = [r["per_op"] for r in rows if r["server"] == s and r["profile"] == p and r["per_op"]]
            if not runs:
                continue
            cells = [statistics.median(r.get(c, 0) for r in runs) for c in columns]
            waits = statistics.median(r.get("epoll_wait", 0) + r.get("io_uring_enter", 0) for r in runs)
            per_wait = f"{1 / waits:.1f}" if waits else "-"
            out.append(f"| {p} | {s} | " + " | ".join(f"{c:.4f}" for c in cells) + f" | {per_wait} |")
    return "\n".join(out)


def idle_memory_report(servers, conns, settle):
    out = [f"\nServer RSS with {conns:,} idle connections (each sent one PING; VmRSS, whole process)\n",
           "| server | RSS before (KiB) | RSS with conns (KiB) | growth per connection (KiB) |",
           "| --- | ---: | ---: | ---: |"]
    for name, server in servers.items():
        before = srv.rss_kib(server.proc.pid)
        held = idle_memory.open_idle(server.port, conns, request=PING, complete=lambda d: d.endswith(b"+PONG\r\n"))
        time.sleep(settle)
        after = srv.rss_kib(server.proc.pid)
        for s in held:
            s.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, b"\x01\x00\x00\x00\x00\x00\x00\x00")
            s.close()
        out.append(f"| {name} | {before:,} | {after:,} | {(after - before) / conns:.2f} |")
        print(f"{name}: RSS {before} KiB idle, {after} KiB with {conns} connections", file=sys.stderr)
        time.sleep(1)
    return "\n".join(out)


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--rounds", type=int, default=5)
    ap.add_argument("--requests", type=int, default=200_000,
                    help="operations per unpipelined run; pipelined runs send 16 times as many")
    ap.add_argument("--servers", default=",".join(DEFAULT_SERVERS),
                    help="comma-separated subset of " + ",".join(ORDER) + " (alt-*: the build at $IOMUX_ALT)")
    ap.add_argument("--profiles", default=",".join(PROFILES), help="comma-separated subset of " + ",".join(PROFILES))
    ap.add_argument("--idle", type=int, default=5000, help="idle connections for the memory figure (0: skip)")
    ap.add_argument("--iomux-flags", default="--nodelay",
                    help="extra `iomux serve` flags (default --nodelay: redis-server sets TCP_NODELAY on every client)")
    ap.add_argument("--fanout-subscribers", type=int, default=5000,
                    help="pub/sub fan-out subscribers (0: skip the fan-out)")
    ap.add_argument("--fanout-messages", type=int, default=200, help="messages published per fan-out run")
    ap.add_argument("--fanout-pipeline", type=int, default=1,
                    help="PUBLISH commands the publisher sends before reading their answers")
    ap.add_argument("--perf", action="store_true",
                    help="count the server's system calls and context switches per op with perf stat "
                         "(and the fan-out's pure ACKs): slows system calls, so a separate run")
    ap.add_argument("--json", help="also write every run as JSON lines to this file")
    args = ap.parse_args()
    which = [s for s in ORDER if s in args.servers.split(",")]
    profiles = [p for p in PROFILES if p in args.profiles.split(",")]
    if not which or not (profiles or args.fanout_subscribers):
        sys.exit("nothing to run: check --servers, --profiles and --fanout-subscribers")
    # This process is the fan-out client: on the client's core, like redis-benchmark.
    os.sched_setaffinity(0, {CLIENT_CPU})
    workdir = tempfile.mkdtemp(prefix="iomux-redis-bench-")
    servers = {}
    rows = []
    try:
        for name in which:
            servers[name] = start(name, cpu=SERVER_CPU, workdir=workdir, iomux_flags=args.iomux_flags.split())
        for s in servers.values():  # warm-up, and GET finds the key SET wrote
            for p in profiles:
                run_benchmark(s, p, max(args.requests // 10, 1000), cpu=CLIENT_CPU)
        for rnd in range(1, args.rounds + 1):
            shift = (rnd - 1) % len(which)
            order = which[shift:] + which[:shift]
            for p in profiles:
                for name in order:
                    row = run_benchmark(servers[name], p, args.requests, cpu=CLIENT_CPU, perf=args.perf)
                    row["round"] = rnd
                    rows.append(row)
                    print(f"round {rnd} {p:8} {name:12} {row['ops_per_s']:>11,.0f} ops/s "
                          f"{row['cpu_us_per_op']:6.3f} us/op server {row['server_core_busy']:4.0%} "
                          f"client {row['client_core_busy']:4.0%} others {row['others_on_server_core']:4.0%}",
                          file=sys.stderr)
            for name in order if args.fanout_subscribers else ():
                row = run_fanout(servers[name], args.fanout_subscribers, args.fanout_messages,
                                 max(args.fanout_pipeline, 1), perf=args.perf)
                row["round"] = rnd
                rows.append(row)
                print(f"round {rnd} fanout   {name:12} {row['ops_per_s']:>11,.0f} deliveries/s "
                      f"{row['cpu_us_per_op']:6.3f} us/delivery server {row['server_core_busy']:4.0%} "
                      f"others {row['others_on_server_core']:4.0%}", file=sys.stderr)
        memory = idle_memory_report(servers, args.idle, 2.0) if args.idle else ""
    finally:
        srv.stop_all(servers)
    if args.json:
        with open(args.json, "w") as f:
            for r in rows:
                f.write(json.dumps(r) + "\n")
    if profiles:
        print(report(rows, args.rounds, which, profiles))
    if args.fanout_subscribers:
        print(fanout_report(rows, args.rounds, which, args.fanout_subscribers, args.fanout_messages,
                            max(args.fanout_pipeline, 1)))
    if args.perf:
        print(perf_report(rows, which, profiles + (["fanout"] if args.fanout_subscribers else [])))
    print(memory)


if __name__ == "__main__":
    main()
