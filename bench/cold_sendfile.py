"""How long one non-blocking `sendfile` holds an event loop when the file is
not in the page cache: the disk read happens inside the call.

A 256 MiB file is written, flushed and evicted (posix_fadvise DONTNEED, no
privileges needed), then sent to a loopback socket whose reader drains it
at once, in the pieces the readiness engines use (at most 2 MiB per
connection per pass), with the socket non-blocking as the engines have it.
Each call is timed; the same file is then sent again hot. Reported: the
calls' median, p99 and max, and the throughput, cold and hot.

Usage: python3 bench/cold_sendfile.py [--size-mib 256] [--piece-kib 2048] [--rounds 3]
"""

import argparse
import os
import select
import socket
import statistics
import tempfile
import threading
import time


def drain(conn):
    while conn.recv(1 << 20):
        pass


def send_all(path, size, piece):
    server = socket.create_server(("127.0.0.1", 0))
    client = socket.create_connection(server.getsockname())
    conn, _ = server.accept()
    reader = threading.Thread(target=drain, args=(client,))
    reader.start()
    conn.setblocking(False)
    calls = []
    fd = os.open(path, os.O_RDONLY)
    offset = 0
    t0 = time.perf_counter()
    try:
        while offset < size:
            start = time.perf_counter()
            try:
                n = os.sendfile(conn.fileno(), fd, offset, min(piece, size - offset))
            except BlockingIOError:
                n = 0
            calls.append(time.perf_counter() - start)
            if n == 0:
                # The socket is full: wait for room, as a loop waits for EPOLLOUT.
                select.select([], [conn], [], 1)
            offset += n
    finally:
        wall = time.perf_counter() - t0
        os.close(fd)
        conn.close()
        reader.join()
        client.close()
        server.close()
    return calls, wall


def summary(calls):
    ordered = sorted(calls)
    return (statistics.median(ordered) * 1e6, ordered[int(len(ordered) * 0.99) - 1] * 1e6, ordered[-1] * 1e6)


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--size-mib", type=int, default=256)
    ap.add_argument("--piece-kib", type=int, default=2048)
    ap.add_argument("--rounds", type=int, default=3)
    args = ap.parse_args()
    size, piece = args.size_mib << 20, args.piece_kib << 10
    print(f"# {time.strftime('%Y-%m-%d %H:%M:%S UTC', time.gmtime())}, load average {os.getloadavg()}")
    print(f"# {args.size_mib} MiB file, pieces of {args.piece_kib} KiB, non-blocking loopback socket")
    print("round state calls median_us p99_us max_us MB/s")
    with tempfile.TemporaryDirectory(prefix="cold-sendfile-", dir=os.environ.get("COLD_DIR", "/var/tmp")) as d:
        path = os.path.join(d, "big.bin")
        with open(path, "wb") as f:
            block = os.urandom(1 << 20)
            for _ in range(args.size_mib):
                f.write(block)
            f.flush()
            os.fsync(f.fileno())
        for r in range(1, args.rounds + 1):
            fd = os.open(path, os.O_RDONLY)
            os.posix_fadvise(fd, 0, 0, os.POSIX_FADV_DONTNEED)
            os.close(fd)
            for state in ("cold", "hot"):
                calls, wall = send_all(path, size, piece)
                med, p99, top = summary(calls)
                print(f"{r} {state} {len(calls)} {med:.0f} {p99:.0f} {top:.0f} {size / wall / 1e6:.0f}", flush=True)


if __name__ == "__main__":
    main()
