#!/bin/sh
# iomux load vs wrk, interleaved, against `iomux serve` (HTTP): server pinned
# to cpu 0, each client to cpu 1, 100 connections, 5 s per run.
# Prints requests/s and client CPU time per request for both, and the ratios.
# Usage: bench/load-vs-wrk.sh [path/to/iomux] [rounds]   (needs wrk and GNU time)
set -eu
B=${1:-target/release/iomux}
ROUNDS=${2:-3}
T=$(mktemp -d)
trap 'kill $SRV 2>/dev/null; rm -rf "$T"' EXIT
taskset -c 0 "$B" serve --addr 127.0.0.1:0 > "$T/srv" 2>/dev/null & SRV=$!
sleep 0.5
ADDR=$(awk '{print $3}' "$T/srv")
for r in $(seq "$ROUNDS"); do
  /usr/bin/time -f "%U %S" -o "$T/wt" taskset -c 1 wrk -t1 -c100 -d5s "http://$ADDR/plaintext" > "$T/w"
  /usr/bin/time -f "%U %S" -o "$T/it" taskset -c 1 "$B" load --addr "$ADDR" --conns 100 --duration 5 --json > "$T/i"
  python3 - "$r" "$T" <<'PY'
import json, re, sys
r, t = sys.argv[1], sys.argv[2]
w = float(re.search(r"Requests/sec:\s+([\d.]+)", open(f"{t}/w").read()).group(1))
i = json.load(open(f"{t}/i"))["rps"]
cpu = lambda f: sum(map(float, open(f).read().split()[-2:]))
wc, ic = cpu(f"{t}/wt") / (w * 5), cpu(f"{t}/it") / (i * 5)
print(f"round {r}: wrk {w:.0f} req/s, {wc*1e6:.2f} us CPU/req | iomux load {i:.0f} req/s, {ic*1e6:.2f} us CPU/req | rps ratio {i/w:.2f}, CPU/req ratio {ic/wc:.2f}")
PY
done
