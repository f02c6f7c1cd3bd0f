"""What large RESP answers cost a server in memory (issue 26, defect 3), for
`iomux serve --proto resp` (epoll edge, and any --backend given) and
redis-server side by side.

1. Give back: a 256 MiB value is SET, read back with GET and DELeted; the
   server's resident memory (VmRSS) before the SET (a small key already set)
   and after the DEL.
2. One read must not make a server hold all its answers: a 128 KiB value is
   SET, then 4,500 GETs of it are written in one write (576 MiB of answers)
   while another thread reads them; the growth of the server's peak resident
   memory (VmHWM) over the run.

Each server runs on CPU 0, this client on CPU 1. Figures are KiB from
/proc/PID/status. Run it after `cargo build --release -p iomux-cli`.

Usage: python3 bench/resp_memory.py [--backends epoll,uring] [--no-redis]
       [--big-mib 256] [--value-kib 128] [--gets 4500] [--binary PATH]
"""

import argparse
import os
import socket
import subprocess
import sys
import tempfile
import threading

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import redis_peers  # noqa: E402  (the RESP server starter)
import servers as srv  # noqa: E402


def command(*args):
    out = b"*%d\r\n" % len(args)
    for a in args:
        out += b"$%d\r\n%s\r\n" % (len(a), a)
    return out


class Conn:
    def __init__(self, port):
        self.sock = socket.create_connection(("127.0.0.1", port))
        self.file = self.sock.makefile("rb", buffering=1 << 20)

    def line(self):
        return self.file.readline()

    def bulk(self, size):
        head = self.line()
        if head != b"$%d\r\n" % size:
            raise RuntimeError(f"expected a bulk of {size} bytes, got {head[:40]!r}")
        left = size + 2
        while left:
            chunk = self.file.read(min(left, 1 << 20))
            if not chunk:
                raise RuntimeError("the server ended the stream mid-value")
            left -= len(chunk)

    def close(self):
        self.file.close()
        self.sock.close()


def give_back(server, big):
    conn = Conn(server.port)
    conn.sock.sendall(command(b"SET", b"small", b"v"))
    assert conn.line() == b"+OK\r\n"
    pid = server.pids[0]
    before = srv.status_kib(pid, "VmRSS")
    value = b"x" * big
    conn.sock.sendall(command(b"SET", b"big", value))
    del value
    assert conn.line() == b"+OK\r\n"
    conn.sock.sendall(command(b"GET", b"big"))
    conn.bulk(big)
    conn.sock.sendall(command(b"DEL", b"big"))
    assert conn.line() == b":1\r\n"
    after = srv.status_kib(pid, "VmRSS")
    conn.close()
    return before, after


def pipelined(server, value_size, gets):
    conn = Conn(server.port)
    conn.sock.sendall(command(b"SET", b"v", b"y" * value_size))
    assert conn.line() == b"+OK\r\n"
    pid = server.pids[0]
    before = srv.status_kib(pid, "VmHWM")
    rss_before = srv.status_kib(pid, "VmRSS")
    batch = command(b"GET", b"v") * gets
    # Another thread writes: the server may stop reading until answers are read.
    writer = threading.Thread(target=conn.sock.sendall, args=(batch,))
    writer.start()
    for _ in range(gets):
        conn.bulk(value_size)
    writer.join()
    peak = srv.status_kib(pid, "VmHWM")
    conn.close()
    return rss_before, before, peak


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--backends", default="epoll", help="comma-separated iomux backends")
    ap.add_argument("--no-redis", action="store_true")
    ap.add_argument("--big-mib", type=int, default=256)
    ap.add_argument("--value-kib", type=int, default=128)
    ap.add_argument("--gets", type=int, default=4500)
    ap.add_argument("--binary", default=srv.IOMUX, help="the iomux binary (default: target/release/iomux)")
    args = ap.parse_args()
    srv.IOMUX = args.binary
    names = [f"iomux-{b}" for b in args.backends.split(",")]
    if not args.no_redis:
        names.insert(0, "redis")
    os.sched_setaffinity(0, {redis_peers.CLIENT_CPU})
    rows = []
    with tempfile.TemporaryDirectory() as workdir:
        for name in names:
            for test in ("give-back", "pipelined"):
                # A fresh server per figure: the first must not set the second's baseline.
                server = redis_peers.start(name, redis_peers.SERVER_CPU, workdir)
                try:
                    if test == "give-back":
                        before, after = give_back(server, args.big_mib << 20)
                        rows.append((name, f"VmRSS before SET / after GET+DEL of {args.big_mib} MiB",
                                     f"{before:,} KiB", f"{after:,} KiB"))
                    else:
                        rss, before, peak = pipelined(server, args.value_kib << 10, args.gets)
                        rows.append((name, f"VmHWM before / after {args.gets:,} pipelined GETs of "
                                     f"{args.value_kib} KiB in one write",
                                     f"{before:,} KiB", f"{peak:,} KiB (+{peak - before:,}; VmRSS was {rss:,})"))
                finally:
                    server.stop()
    print("| server | figure | before | after |")
    print("| --- | --- | ---: | ---: |")
    for row in rows:
        print("| " + " | ".join(row) + " |")


if __name__ == "__main__":
    main()
