"""What a reader that stops reading costs io_uring's send paths: the file
floor on io_uring (bench/floor-peer, `file-splice` and `file-read`) serves
a 100 MiB file to N connections that ask for it and then read nothing;
after two seconds the server's threads are counted. A splice has no
non-blocking issue path in io_uring: it runs on an io-wq worker, which
blocks in the socket while the reader stalls, so each stalled download
holds a kernel thread; a send waits on a poll instead.

Usage: python3 bench/uring_splice_workers.py [--conns 50]
"""

import argparse
import os
import socket
import subprocess
import sys
import tempfile
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import servers as srv  # noqa: E402


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--conns", type=int, default=50)
    args = ap.parse_args()
    with tempfile.TemporaryDirectory(prefix="splice-workers-") as d:
        path = os.path.join(d, "big.bin")
        with open(path, "wb") as f:
            f.truncate(100 << 20)
        for mode in ("file-splice", "file-read"):
            port = srv.free_port()
            proc = subprocess.Popen([srv.FLOOR, f"127.0.0.1:{port}", "uring", mode, path], stdout=subprocess.PIPE)
            proc.stdout.readline()  # listening on ...
            socks = []
            try:
                for _ in range(args.conns):
                    s = socket.create_connection(("127.0.0.1", port))
                    s.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 65536)
                    s.sendall(b"GET /f HTTP/1.1\r\nHost: x\r\n\r\n")
                    socks.append(s)
                time.sleep(2)
                tasks = os.listdir(f"/proc/{proc.pid}/task")
                workers = sum(open(f"/proc/{proc.pid}/task/{t}/comm").read().startswith("iou-wrk") for t in tasks)
                print(f"{mode}: {args.conns} stalled readers, {len(tasks)} threads, {workers} io-wq workers")
            finally:
                for s in socks:
                    s.close()
                proc.kill()
                proc.wait()


if __name__ == "__main__":
    main()
