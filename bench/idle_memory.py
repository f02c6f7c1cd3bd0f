"""Server memory per idle keep-alive connection: iomux, nginx, hyper (see idle-memory.sh).

For each server in turn: open N connections (default 9,000), send one GET on
each and read its whole response, then leave them open and silent; after a
short settle, read the server's memory from /proc and report it divided by N.

Two measures, each all-in (the whole process divided by N: nothing is
subtracted) and as growth per connection (with the connections, minus
before, divided by N: what one more connection costs):
- RSS (VmRSS), summed over the server's processes. For a server of several
  processes (nginx: master and worker) this counts the pages they share
  (the binary, libraries, memory set up before the fork) once per process.
- PSS (Pss in /proc/PID/smaps_rollup), summed over the same processes: each
  shared page is divided among the processes that map it, so the sum is
  their joint footprint, the fair figure to compare a multi-process peer by.
For nginx the worker alone is shown too.
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


def pss_kib(pid):
    """Proportional set size of `pid` in KiB (shared pages divided among their users)."""
    with open(f"/proc/{pid}/smaps_rollup") as f:
        for line in f:
            if line.startswith("Pss:"):
                return int(line.split()[1])
    raise RuntimeError(f"no Pss in /proc/{pid}/smaps_rollup")


def memory(pids):
    """(RSS, PSS) in KiB summed over `pids`."""
    return sum(srv.rss_kib(p) for p in pids), sum(pss_kib(p) for p in pids)


def measure(server, count, settle):
    """(before, with): (RSS, PSS) summed over the server's processes, and the
    RSS of its workers alone (nginx) with the connections."""
    worker_pids = server.pids[1:] if server.name == "nginx" else server.pids
    before = memory(server.pids)
    conns = open_idle(server.port, count)
    time.sleep(settle)
    total = memory(server.pids)
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
            print(f"{name}: RSS/PSS {before} KiB idle, {total} KiB with {args.conns} connections", file=sys.stderr)
            time.sleep(1)  # let the server notice the closes before the next one is measured
    finally:
        srv.stop_all(servers)
    n = args.conns
    print(f"Server memory with {n:,} idle keep-alive connections, summed over the server's processes "
          f"(all-in: whole / conns; growth: (with - before) / conns)\n")
    print("| server | processes | RSS before (KiB) | RSS with conns (KiB) | RSS all-in per conn (KiB) "
          "| RSS growth per conn (KiB) | PSS before (KiB) | PSS with conns (KiB) | PSS all-in per conn (KiB) "
          "| PSS growth per conn (KiB) |")
    print("| --- | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: |")
    for name, (rss0, pss0), (rss, pss), workers in rows:
        label = "nginx (master + worker)" if name == "nginx" else name
        procs = len(servers[name].pids)
        print(f"| {label} | {procs} | {rss0:,} | {rss:,} | {rss / n:.2f} | {(rss - rss0) / n:.2f} "
              f"| {pss0:,} | {pss:,} | {pss / n:.2f} | {(pss - pss0) / n:.2f} |")
        if name == "nginx":
            print(f"| nginx (worker only) | 1 | | {workers:,} | {workers / n:.2f} | | | | | |")
    by = {r[0]: r for r in rows}
    print()
    for peer in ("nginx", "hyper"):
        if "iomux" in by and peer in by:
            (rss0, pss0), (rss, pss) = by["iomux"][1], by["iomux"][2]
            (prss0, ppss0), (prss, ppss) = by[peer][1], by[peer][2]
            growth = (pss - pss0) / (ppss - ppss0) if ppss > ppss0 else float("nan")
            print(f"- iomux/{peer} memory per idle connection: RSS all-in {rss / prss:.2f}, "
                  f"PSS all-in {pss / ppss:.2f}, PSS growth {growth:.2f}")
    if "iomux" in by:
        (rss0, _), (rss, _) = by["iomux"][1], by["iomux"][2]
        print(f"- iomux: {rss / n:.2f} KiB per idle connection all-in, "
              f"{(rss - rss0) / n:.2f} KiB growth (goal <= 1 KiB)")

if __name__ == "__main__":
    main()
