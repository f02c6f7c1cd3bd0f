"""How much an echo server holds for a client that sends but never reads.

For each engine in turn (interleaved over the rounds): start `iomux serve
--proto echo` pinned to CPU 0, warm it up with a 16 MiB echo that is read
back (so memory set up once is in the baseline, as in the echo_engines
test), then push 64 KiB writes from a client that never reads until the
server has taken nothing for half a second (the same loop as
`a_client_that_does_not_read_does_not_grow_server_memory`).

`pushed` counts every byte the client got into its socket; most of it sits
in the kernel's socket queues (client send queue, server receive queue,
server send queue, client receive queue: `tx_queue`/`rx_queue` of both
sockets in /proc/net/tcp). `held` is the rest: what the server took out of
the kernel and keeps in its own memory when it stops reading, the figure
backpressure bounds (the output limit, 256 KiB by default, plus whatever
arrived after the decision to stop). VmRSS growth is shown too, though the
warm-up leaves the allocator enough freed memory to hide most of it.

Usage: python3 bench/pause_overshoot.py [--rounds 5] [--engines "epoll uring uring@/tmp/old/iomux"]
(engine@binary runs another build's server in the same rounds.)
"""

import argparse
import os
import re
import socket
import statistics
import subprocess
import threading
import time

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
IOMUX = os.path.join(ROOT, "target", "release", "iomux")
WARM_UP = 16 * 1024 * 1024
CHUNK = 64 * 1024
STALL = 0.5
LIMIT = 64 * 1024 * 1024


def start(binary, engine):
    proc = subprocess.Popen(
        ["taskset", "-c", "0", binary, "serve", "--backend", engine, "--proto", "echo",
         "--addr", "127.0.0.1:0"],
        stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True)
    line = proc.stdout.readline()
    match = re.search(r"listening on 127\.0\.0\.1:(\d+)", line)
    if not match:
        proc.kill()
        raise RuntimeError(f"{engine}: no 'listening on' line, got {line!r}")
    return proc, int(match.group(1))


def rss_kib(pid):
    with open(f"/proc/{pid}/status") as f:
        for line in f:
            if line.startswith("VmRSS:"):
                return int(line.split()[1])
    raise RuntimeError("no VmRSS")


def warm_up(port):
    with socket.create_connection(("127.0.0.1", port)) as s:
        got = bytearray()
        reader = threading.Thread(target=lambda: read_all(s, got))
        reader.start()
        s.sendall(b"w" * WARM_UP)
        s.shutdown(socket.SHUT_WR)
        reader.join()
        if len(got) != WARM_UP:
            raise RuntimeError(f"warm-up echoed {len(got)} of {WARM_UP} bytes")


def read_all(s, into):
    while True:
        data = s.recv(1 << 20)
        if not data:
            return
        into.extend(data)


def queued(local_port, remote_port):
    """tx_queue + rx_queue of the TCP socket local_port -> remote_port."""
    want = (f"0100007F:{local_port:04X}", f"0100007F:{remote_port:04X}")
    with open("/proc/net/tcp") as f:
        for line in f.readlines()[1:]:
            fields = line.split()
            if (fields[1], fields[2]) == want:
                tx, rx = fields[4].split(":")
                return int(tx, 16) + int(rx, 16)
    raise RuntimeError(f"socket {want} not in /proc/net/tcp")


def measure(binary, engine):
    proc, port = start(binary, engine)
    try:
        warm_up(port)
        before = rss_kib(proc.pid)
        s = socket.create_connection(("127.0.0.1", port))
        s.setblocking(False)
        chunk = b"x" * CHUNK
        pushed, stalled_since = 0, None
        while pushed < LIMIT:
            try:
                pushed += s.send(chunk)
                stalled_since = None
            except BlockingIOError:
                stalled_since = stalled_since or time.monotonic()
                if time.monotonic() - stalled_since > STALL:
                    break
                time.sleep(0.005)
        client_port = s.getsockname()[1]
        in_kernel = queued(client_port, port) + queued(port, client_port)
        after = rss_kib(proc.pid)
        s.setblocking(True)
        s.shutdown(socket.SHUT_WR)
        back = bytearray()
        read_all(s, back)
        s.close()
        if len(back) != pushed:
            raise RuntimeError(f"{engine}: {pushed} bytes pushed, {len(back)} echoed")
        return pushed, in_kernel, pushed - in_kernel, after - before
    finally:
        proc.terminate()
        proc.wait()


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--engines", default="epoll uring")
    args = parser.parse_args()
    os.sched_setaffinity(0, {1})
    held = {}
    print("round,engine,pushed,in_kernel_queues,held_by_server,rss_growth_kib")
    for r in range(1, args.rounds + 1):
        for spec in args.engines.split():
            engine, _, binary = spec.partition("@")
            pushed, in_kernel, kept, rss = measure(binary or IOMUX, engine)
            held.setdefault(spec, []).append(kept)
            print(f"{r},{spec},{pushed},{in_kernel},{kept},{rss}", flush=True)
    for spec, values in held.items():
        print(f"summary: {spec} held by server: median {statistics.median(values) / 1024:.0f} KiB, "
              f"max {max(values) / 1024:.0f} KiB over {len(values)} rounds")


if __name__ == "__main__":
    main()
