"""What a file that is not in the page cache costs the other connections.

`iomux serve --root DIR` (release build, one loop, cpu 0) serves a 100 MiB
file evicted from the page cache (posix_fadvise DONTNEED, which this
unprivileged-friendly check can do where /proc/sys/vm/drop_caches cannot be
written) to one client while another client, on its own keep-alive
connection, asks for a small file back to back. Reported per case (cold,
then the same file hot): the big download's time, and the small requests'
latency (median, p99, max) while it ran: how long the loop was held by disk
reads inside sendfile.

Usage: python3 bench/static_cold.py [--backend epoll] [--rounds 3]
"""

import argparse
import os
import socket
import statistics
import subprocess
import sys
import tempfile
import threading
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import servers as srv  # noqa: E402

BIG = 100 * 1024 * 1024


def fetch(sock, path):
    sock.sendall(f"GET {path} HTTP/1.1\r\nHost: t\r\n\r\n".encode())
    data = b""
    while b"\r\n\r\n" not in data:
        data += sock.recv(65536)
    head, _, body = data.partition(b"\r\n\r\n")
    length = int([line.split(b":")[1] for line in head.split(b"\r\n") if line.lower().startswith(b"content-length:")][0])
    left = length - len(body)
    while left > 0:
        chunk = sock.recv(min(left, 1 << 20))
        if not chunk:
            raise RuntimeError("connection closed early")
        left -= len(chunk)
    return length


def run_case(port, site, cold):
    big = os.path.join(site, "big.bin")
    if cold:
        fd = os.open(big, os.O_RDONLY)
        os.fsync(fd)
        os.posix_fadvise(fd, 0, 0, os.POSIX_FADV_DONTNEED)
        os.close(fd)
    resident = page_cache_resident(big)
    small = socket.create_connection(("127.0.0.1", port))
    fetch(small, "/small.txt")
    latencies = []
    done = threading.Event()

    def poke():
        while not done.is_set():
            t = time.monotonic()
            fetch(small, "/small.txt")
            latencies.append(time.monotonic() - t)

    poker = threading.Thread(target=poke)
    poker.start()
    t = time.monotonic()
    with socket.create_connection(("127.0.0.1", port)) as s:
        assert fetch(s, "/big.bin") == BIG
    took = time.monotonic() - t
    done.set()
    poker.join()
    small.close()
    latencies.sort()
    return took, latencies, resident


def page_cache_resident(path):
    """How much of `path` is in the page cache (util-linux fincore), as text."""
    try:
        out = subprocess.run(["fincore", "--bytes", "--noheadings", "--output", "RES", path],
                             capture_output=True, text=True, check=True).stdout.strip()
        return f"{int(out) / (1 << 20):.0f} MiB"
    except (OSError, subprocess.CalledProcessError, ValueError):
        return "?"


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--backend", default="epoll")
    ap.add_argument("--rounds", type=int, default=3)
    args = ap.parse_args()
    work = tempfile.mkdtemp(prefix="iomux-cold-")
    site = os.path.join(work, "site")
    os.makedirs(site)
    with open(os.path.join(site, "big.bin"), "wb") as f:
        for _ in range(BIG >> 20):
            f.write(os.urandom(1 << 20))
    with open(os.path.join(site, "small.txt"), "w") as f:
        f.write("small\n")
    with open(os.path.join(site, "index.html"), "w") as f:
        f.write("ready\n")  # what the readiness check (GET /) finds
    port = srv.free_port()
    argv = [srv.IOMUX, "serve", "--root", site, "--backend", args.backend, "--addr", f"127.0.0.1:{port}"]
    try:
        server = srv.Server("iomux", argv, port, 0, work)
    except BaseException:
        subprocess.run(["rm", "-rf", work])
        raise
    print(f"load average {open('/proc/loadavg').read().split()[0]}; backend {args.backend}")
    print("| file | cached before | download s | small requests during it | median ms | p99 ms | max ms |")
    print("| --- | ---: | ---: | ---: | ---: | ---: | ---: |")
    try:
        for _ in range(args.rounds):
            for cold in (True, False):
                took, lat, resident = run_case(port, site, cold)
                p99 = lat[min(len(lat) - 1, int(len(lat) * 0.99))]
                print(
                    f"| {'cold' if cold else 'hot'} | {resident} | {took:.3f} | {len(lat)} | {statistics.median(lat) * 1e3:.2f} "
                    f"| {p99 * 1e3:.2f} | {lat[-1] * 1e3:.2f} |"
                )
    finally:
        server.stop()
        subprocess.run(["rm", "-rf", work])


if __name__ == "__main__":
    main()
