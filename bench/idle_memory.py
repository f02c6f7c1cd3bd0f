"""Server memory per idle keep-alive connection: iomux, nginx, hyper (see idle-memory.sh).

For each server in turn: open N connections (default 9,000), send one GET on
each and read its whole response, then leave them open and silent; after a
short settle, read the server's VmRSS from /proc and report the whole RSS
divided by N (the issue's definition: nothing is subtracted). The RSS before
the connections were opened is shown beside it. For nginx the figure is the
worker's RSS plus the master's; the worker alone is shown too.
"""

import argparse
import os
import resource
import selectors
import socket
import struct
import sys
import tempfile
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import servers as srv  # noqa: E402

REQUEST = b"GET / HTTP/1.1\r\nHost: localhost\r\n\r\n"
BATCH = 500  # connections in flight at once while opening


def response_complete(data):
    head, sep, body = data.partition(b"\r\n\r\n")
    if not sep:
        return False
    for line in head.split(b"\r\n")[1:]:
        name, _, value = line.partition(b":")
        if name.strip().lower() == b"content-length":
            return len(body) >= int(value)
    return False


def open_idle(port, count, request=REQUEST, complete=response_complete):
    """`count` connections that each sent `request` and read a reply that
    `complete` accepts; raises on any failure."""
    held = []
    sel = selectors.DefaultSelector()
    while len(held) < count:
        batch = []
        for _ in range(min(BATCH, count - len(held))):
            s = socket.socket()
            s.setblocking(False)
            s.connect_ex(("127.0.0.1", port))
            batch.append(s)
            sel.register(s, selectors.EVENT_WRITE, [b"", False])
        pending = len(batch)
        deadline = time.time() + 30
        while pending:
            if time.time() > deadline:
                raise RuntimeError(f"{pending} connections got no response within 30 s")
            for key, mask in sel.select(timeout=1):
                s, state = key.fileobj, key.data
                if mask & selectors.EVENT_WRITE and not state[1]:
                    err = s.getsockopt(socket.SOL_SOCKET, socket.SO_ERROR)
                    if err:
                        raise OSError(err, f"connect to port {port}: {os.strerror(err)}")
                    s.send(request)
                    state[1] = True
                    sel.modify(s, selectors.EVENT_READ, state)
                elif mask & selectors.EVENT_READ:
                    chunk = s.recv(65536)
                    if not chunk:
                        raise RuntimeError("the server closed a connection before answering")
                    state[0] += chunk
                    if complete(state[0]):
                        sel.unregister(s)
                        pending -= 1
        held.extend(batch)
    sel.close()
    return held


def measure(server, count, settle):
    worker_pids = server.pids[1:] if server.name == "nginx" else server.pids
    before = sum(srv.rss_kib(p) for p in server.pids)
    conns = open_idle(server.port, count)
    time.sleep(settle)
    total = sum(srv.rss_kib(p) for p in server.pids)
    workers = sum(srv.rss_kib(p) for p in worker_pids)
    for s in conns:
        # Reset instead of FIN: 9,000 sockets in TIME_WAIT would hold ephemeral
        # ports that other tests on this shared machine need.
        s.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
        s.close()
    return before, total, workers


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--conns", type=int, default=9000)
    ap.add_argument("--settle", type=float, default=2.0, help="seconds between opening and measuring")
    ap.add_argument("--servers", default="iomux,nginx,hyper")
    args = ap.parse_args()
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if hard != resource.RLIM_INFINITY and hard < args.conns + 100:
        sys.exit(f"the descriptor hard limit {hard} is below {args.conns} connections; raise it or pass --conns")
    resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))
    which = [s for s in ("iomux", "nginx", "hyper", "iomux-alt") if s in args.servers.split(",")]
    servers = srv.start_all(cpu=0, workdir=tempfile.mkdtemp(prefix="iomux-mem-"), which=which)
    rows = []
    try:
        for name in which:
            before, total, workers = measure(servers[name], args.conns, args.settle)
            rows.append((name, before, total, workers))
            print(f"{name}: RSS {before} KiB idle, {total} KiB with {args.conns} connections", file=sys.stderr)
            time.sleep(1)  # let the server notice the closes before the next one is measured
    finally:
        srv.stop_all(servers)
    print(f"Server RSS with {args.conns:,} idle keep-alive connections (VmRSS, whole process, nothing subtracted)\n")
    print("| server | RSS before (KiB) | RSS with conns (KiB) | KiB per connection (RSS / conns) | growth per connection (KiB) |")
    print("| --- | ---: | ---: | ---: | ---: |")
    for name, before, total, workers in rows:
        label = "nginx (master + worker)" if name == "nginx" else name
        print(f"| {label} | {before:,} | {total:,} | {total / args.conns:.2f} | {(total - before) / args.conns:.2f} |")
        if name == "nginx":
            print(f"| nginx (worker only) | | {workers:,} | {workers / args.conns:.2f} | |")
    by = {r[0]: r[2] for r in rows}
    print()
    for peer in ("nginx", "hyper"):
        if "iomux" in by and peer in by:
            print(f"- iomux/{peer} memory per idle connection: {by['iomux'] / by[peer]:.2f}")
    if "iomux" in by:
        print(f"- iomux: {by['iomux'] / args.conns:.2f} KiB per idle connection (goal <= 1 KiB)")


if __name__ == "__main__":
    main()
