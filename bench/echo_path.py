"""Our echo path on its own: `iomux serve --proto echo` (epoll edge) on cpu 0,
`iomux load --proto echo` on cpu 1; server CPU time per echoed message for
each round, and the median. No peer: this isolates the engine (no HTTP).

Usage: python3 bench/echo_path.py [--rounds N] [--duration SECS] [--conns N] [--size BYTES] [--pipeline D]
"""

import argparse
import json
import os
import statistics
import subprocess
import sys
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import servers as srv  # noqa: E402


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--rounds", type=int, default=5)
    ap.add_argument("--duration", type=int, default=5)
    ap.add_argument("--conns", type=int, default=100)
    ap.add_argument("--size", type=int, default=64)
    ap.add_argument("--pipeline", type=int, default=1)
    args = ap.parse_args()
    port = srv.free_port()
    server = subprocess.Popen(
        ["taskset", "-c", "0", srv.IOMUX, "serve", "--proto", "echo", "--addr", f"127.0.0.1:{port}"],
        stdout=subprocess.PIPE,
        stderr=subprocess.DEVNULL,
        text=True,
    )
    try:
        if not server.stdout.readline().startswith("listening on"):
            sys.exit("iomux serve --proto echo did not start")
        rows = []
        for rnd in range(1, args.rounds + 1):
            ticks0 = srv.cpu_ticks([server.pid])
            out = subprocess.run(
                ["taskset", "-c", "1", srv.IOMUX, "load", "--proto", "echo", "--addr", f"127.0.0.1:{port}",
                 "--conns", str(args.conns), "--size", str(args.size), "--pipeline", str(args.pipeline),
                 "--duration", str(args.duration), "--json"],
                capture_output=True, text=True, check=True,
            ).stdout
            ticks1 = srv.cpu_ticks([server.pid])
            result = json.loads(out)
            us = (ticks1 - ticks0) / srv.CLK_TCK * 1e6 / max(result["requests"], 1)
            rows.append((result["rps"], us, result["errors"]))
            print(f"round {rnd}: {result['rps']:,.0f} messages/s, {us:.3f} us server CPU per message, errors {result['errors']}",
                  file=sys.stderr)
            time.sleep(0.2)
    finally:
        server.terminate()
        server.wait()
    print(f"echo, {args.conns} conns, {args.size}-byte messages, pipeline {args.pipeline}: "
          f"median {statistics.median(r[0] for r in rows):,.0f} messages/s, "
          f"{statistics.median(r[1] for r in rows):.3f} us server CPU per message ({args.rounds} rounds of {args.duration} s)")


if __name__ == "__main__":
    main()
