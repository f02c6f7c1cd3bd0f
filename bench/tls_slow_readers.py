"""Memory a slow TLS download keeps, and CPU per MiB of a fast one.

`iomux serve --root DIR --tls-cert --tls-key` (pinned to cpu 0) serves a
20 MiB file to N slow TLS readers (Python's ssl module, pinned to cpu 1, each
with a 128 KiB receive buffer, reading a little every fraction of a second).
Reported per run: the server's resident memory at start, its peak (VmHWM)
while the readers trickle, and its resident memory once every reader has
closed and the server's open sockets are back to where they started. Then,
on a fresh server, a fast download: `wrk -t1 -c4` of a 100 MiB file over
https for a few seconds (tls_peers.py's bulk profile), server CPU per MiB.

Several builds can be compared in one run (`--iomux LABEL=PATH`, repeated):
their runs are interleaved, the order rotating from round to round, so a
noisy neighbour hits them alike. Loopback only; every server and client is
stopped before the next run starts.

Usage: python3 bench/tls_slow_readers.py [--readers 300] [--rounds 3]
       [--backends epoll,uring] [--iomux before=/tmp/iomux-old --iomux after=target/release/iomux]
"""

import argparse
import os
import socket
import ssl
import statistics
import sys
import tempfile
import threading
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import servers as srv  # noqa: E402
import tls_peers  # noqa: E402

SLOW_FILE = "slow.bin"
SLOW_BYTES = 20 * 1024 * 1024
BULK_FILE = "big.bin"  # the name tls_peers.py's bulk profile asks for
BULK_BYTES = 100 * 1024 * 1024


def open_fds(pid):
    """The server's open sockets (its open-file cache may keep the file open)."""
    n = 0
    for fd in os.listdir(f"/proc/{pid}/fd"):
        try:
            n += os.readlink(f"/proc/{pid}/fd/{fd}").startswith("socket:")
        except FileNotFoundError:
            pass
    return n


def slow_reader(port, ca, args, stop, result, index):
    """One reader: a TLS connection asking for the 20 MiB file, then
    `args.read_bytes` every `args.read_every` seconds until `stop` is set."""
    try:
        ctx = ssl.create_default_context(cafile=ca)
        raw = socket.socket()
        raw.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 128 * 1024)
        raw.settimeout(30)
        raw.connect(("127.0.0.1", port))
        with ctx.wrap_socket(raw, server_hostname="localhost") as tls:
            tls.sendall(f"GET /{SLOW_FILE} HTTP/1.1\r\nHost: localhost\r\n\r\n".encode())
            got = 0
            while not stop.wait(args.read_every):
                data = tls.recv(args.read_bytes)
                if not data:
                    raise RuntimeError("the server closed the download")
                got += len(data)
            result[index] = got
    except Exception as e:  # reported, not raised in a thread
        result[index] = e


def slow_run(server, ca, args):
    pid = server.proc.pid
    fds_before = open_fds(pid)
    rss_start = srv.status_kib(pid, "VmRSS")
    stop = threading.Event()
    result = [None] * args.readers
    threads = [threading.Thread(target=slow_reader, args=(server.port, ca, args, stop, result, i))
               for i in range(args.readers)]
    for t in threads:
        t.start()
    time.sleep(args.hold)
    peak = srv.status_kib(pid, "VmHWM")
    stop.set()
    for t in threads:
        t.join(60)
    failed = [r for r in result if not isinstance(r, int)]
    if failed:
        raise RuntimeError(f"{len(failed)} of {args.readers} readers failed, e.g. {failed[0]!r}")
    # Every connection gone (sockets back to the start), then a moment
    # for the loop to free what they held.
    deadline = time.time() + 30
    while open_fds(pid) > fds_before and time.time() < deadline:
        time.sleep(0.2)
    if open_fds(pid) > fds_before:
        raise RuntimeError(f"{open_fds(pid) - fds_before} sockets still open 30 s after the readers closed")
    time.sleep(1)
    return {"rss_start_mib": rss_start / 1024, "peak_mib": peak / 1024,
            "after_mib": srv.status_kib(pid, "VmRSS") / 1024,
            "read_per_reader_kib": statistics.median(result) / 1024}


def start(label, binary, backend, tmp, www):
    port = srv.free_port()
    argv = [binary, "serve", "--proto", "http", "--backend", backend, "--root", www,
            "--idle-timeout", "300", "--addr", f"127.0.0.1:{port}",
            "--tls-cert", os.path.join(tmp, "leaf.pem"), "--tls-key", os.path.join(tmp, "leaf.key")]
    return tls_peers.TlsServer(f"{label}-{backend}", argv, port, 0, tmp)


def main():
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--iomux", action="append", metavar="LABEL=PATH",
                   help="a build to measure (repeat to compare); default current=target/release/iomux")
    p.add_argument("--backends", default="epoll,uring")
    p.add_argument("--readers", type=int, default=300)
    p.add_argument("--read-bytes", type=int, default=4096, help="bytes each reader takes per read")
    p.add_argument("--read-every", type=float, default=0.5, help="seconds between a reader's reads")
    p.add_argument("--hold", type=float, default=10, help="seconds the readers trickle")
    p.add_argument("--rounds", type=int, default=3)
    p.add_argument("--duration", type=int, default=5, help="seconds of the fast download (wrk)")
    p.add_argument("--no-bulk", action="store_true", help="skip the fast download")
    args = p.parse_args()
    builds = [b.split("=", 1) for b in (args.iomux or [f"current={srv.IOMUX}"])]
    backends = args.backends.split(",")
    os.sched_setaffinity(0, {1})  # the readers and wrk: cpu 1
    import resource
    resource.setrlimit(resource.RLIMIT_NOFILE, (4096, resource.getrlimit(resource.RLIMIT_NOFILE)[1]))

    rows = []
    with tempfile.TemporaryDirectory(prefix="iomux-tls-slow-") as tmp:
        srv.certificates(tmp)
        ca = os.path.join(tmp, "ca.pem")
        www = os.path.join(tmp, "www")
        os.makedirs(www)
        os.chmod(tmp, 0o755)
        for name, size in ((SLOW_FILE, SLOW_BYTES), (BULK_FILE, BULK_BYTES)):
            with open(os.path.join(www, name), "wb") as f:
                f.write(os.urandom(size))
        for r in range(args.rounds):
            order = builds[r % len(builds):] + builds[:r % len(builds)]
            for backend in backends:
                for label, binary in order:
                    server = start(label, binary, backend, tmp, www)
                    try:
                        row = {"build": label, "backend": backend, "round": r}
                        row.update(slow_run(server, ca, args))
                    finally:
                        server.stop()
                    if not args.no_bulk:
                        server = start(label, binary, backend, tmp, www)
                        try:
                            bulk = tls_peers.run_once(server, "bulk", args, ca, 1)
                            row["cpu_us_per_mib"] = bulk["cpu_us_per_unit"]
                            row["server_core_busy"] = bulk["server_core_busy"]
                            row["client_core_busy"] = bulk["client_core_busy"]
                        finally:
                            server.stop()
                    rows.append(row)
                    print(" ".join(f"{k}={v:.1f}" if isinstance(v, float) else f"{k}={v}"
                                   for k, v in row.items()), flush=True)

    print(f"\n{args.readers} slow TLS readers of a 20 MiB file ({args.read_bytes} B every "
          f"{args.read_every}s, {args.hold}s), medians of {args.rounds} rounds:\n")
    print("| build | backend | RSS at start MiB | peak MiB | after all closed MiB | fast download µs CPU per MiB |")
    print("| --- | --- | ---: | ---: | ---: | ---: |")
    for label, _ in builds:
        for backend in backends:
            mine = [x for x in rows if x["build"] == label and x["backend"] == backend]

            def med(key):
                vals = [x[key] for x in mine if key in x]
                return f"{statistics.median(vals):.1f}" if vals else "-"
            print(f"| {label} | {backend} | {med('rss_start_mib')} | {med('peak_mib')} | "
                  f"{med('after_mib')} | {med('cpu_us_per_mib')} |")


if __name__ == "__main__":
    main()
