#!/usr/bin/env bash
# io_uring engine against the epoll engine (and the other new engines), one
# interleaved run: pipelined HTTP and echo with 1,000 connections.
# Server pinned to CPU 0, load client to CPU 1. Prints requests/s, server CPU
# per request and, with STRACE=1, syscalls per request (a separate, slower pass).
#
#   bench/uring-vs-epoll.sh            # ROUNDS=3 DURATION=5 by default
#   ENGINES="epoll uring" ROUNDS=5 bench/uring-vs-epoll.sh
#   ENGINES="epoll uring uring@/tmp/old/iomux" ...   # engine@binary: another build's server, same run
#   EXTRA_WORKLOAD="--proto echo --conns 10 --size 65536 --pipeline 4" ...   # one more workload, named "extra"
set -euo pipefail
cd "$(dirname "$0")/.."
BIN=${BIN:-target/release/iomux}
ROUNDS=${ROUNDS:-3}
DURATION=${DURATION:-5}
ENGINES=${ENGINES:-"epoll uring uring-poll sigio"}
ulimit -n "$(ulimit -Hn)"
[ -x "$BIN" ] || cargo build --release

declare -A WORKLOADS=(
  [http-pipelined]="--proto http --conns 50 --pipeline 16"
  [echo-1000]="--proto echo --conns 1000 --size 64"
)
if [ -n "${EXTRA_WORKLOAD:-}" ]; then WORKLOADS[extra]=$EXTRA_WORKLOAD; fi

cpu_ticks() { awk '{print $14 + $15}' "/proc/$1/stat"; }

run_one() { # engine[@binary] workload -> "rps cpu_us_per_req"
  local engine=$1 workload=$2 bin=$BIN proto port pid before after json rps reqs
  if [[ $engine == *@* ]]; then bin=${engine#*@}; engine=${engine%%@*}; fi
  local label=${1//\//_}
  proto=$(sed -n 's/.*--proto \([a-z]*\).*/\1/p' <<<"${WORKLOADS[$workload]}")
  exec 3< <(taskset -c 0 "$bin" serve --backend "$engine" --proto "$proto" --addr 127.0.0.1:0 2>/dev/null & echo "PID $!"; wait)
  read -r _ pid <&3
  read -r line <&3
  port=$(sed -n 's/listening on 127.0.0.1:\([0-9]*\).*/\1/p' <<<"$line")
  before=$(cpu_ticks "$pid")
  json=$(taskset -c 1 "$BIN" load --addr "127.0.0.1:$port" ${WORKLOADS[$workload]} --duration "$DURATION" --json 2>/dev/null)
  after=$(cpu_ticks "$pid")
  if [ "${STRACE:-0}" = 1 ]; then
    strace -c -f -p "$pid" -o "/tmp/strace-$label-$workload.txt" & local st=$!
    sleep 0.5
    taskset -c 1 "$BIN" load --addr "127.0.0.1:$port" ${WORKLOADS[$workload]} --duration 2 --json > "/tmp/strace-load-$label-$workload.json" 2>/dev/null
    kill -INT "$st"; wait "$st" 2>/dev/null || true
  fi
  kill -TERM "$pid"; wait "$pid" 2>/dev/null || true
  exec 3<&-
  rps=$(python3 -c 'import json,sys; print(round(json.loads(sys.argv[1])["rps"]))' "$json")
  reqs=$(python3 -c 'import json,sys; print(json.loads(sys.argv[1])["requests"])' "$json")
  local hz; hz=$(getconf CLK_TCK)
  echo "$rps $(python3 -c "print(round(($after-$before)/$hz*1e6/max($reqs,1),2))")"
}

results=$(mktemp); trap 'rm -f "$results"' EXIT
echo "workload,round,engine,rps,server_cpu_us_per_req"
for workload in "${!WORKLOADS[@]}"; do
  for round in $(seq "$ROUNDS"); do
    for engine in $ENGINES; do
      read -r rps cpu < <(run_one "$engine" "$workload")
      echo "$workload,$round,$engine,$rps,$cpu" | tee -a "$results"
    done
  done
done
# Each engine against the first one, round by round (the rounds are
# interleaved, so a ratio compares runs made under the same load).
python3 - "$results" ${ENGINES} <<'PY'
import csv, statistics, sys
rows = list(csv.reader(open(sys.argv[1])))
base, others = sys.argv[2], sys.argv[3:]
by = {(w, r, e): (float(rps), float(cpu)) for w, r, e, rps, cpu in rows}
print("summary: workload,engine,median rps ratio to %s (per round),median cpu ratio" % base)
for w in sorted({w for w, _, _ in by}):
    for e in others:
        rounds = sorted({r for ww, r, ee in by if ww == w and ee == e and (w, r, base) in by})
        rr = [by[w, r, e][0] / max(by[w, r, base][0], 1) for r in rounds]
        cr = [by[w, r, e][1] / max(by[w, r, base][1], 1e-9) for r in rounds]
        if rr:
            print("summary: %s,%s,%.2fx (%s),%.2fx" % (w, e, statistics.median(rr),
                  " ".join("%.2f" % x for x in rr), statistics.median(cr)))
PY
