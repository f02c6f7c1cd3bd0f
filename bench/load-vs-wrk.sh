#!/bin/sh
# iomux load vs wrk, interleaved, against nginx (one worker pinned to cpu 0),
# each client in turn pinned to cpu 1, equal connections, threads (1) and
# duration, for a plain GET and for a POST with a JSON body. Prints per run
# requests/s, the client's and nginx's CPU time per request (from /proc) and
# how busy each core was (and by what else), which side was the bottleneck,
# TCP segments per request (2: a request and a response, each carrying
# the ACK of the other), then the iomux/wrk ratios per round, their medians
# and the verdict against the goal (>= 1.2x requests/s at <= 0.8x client CPU
# per request), with how often nginx, not the client, set the requests/s.
# As root it runs in a private network namespace (unshare --net), so the TCP
# counters hold this benchmark's traffic only; loopback TCP there is the same
# kernel path with the same sysctls.
# Usage: bench/load-vs-wrk.sh [path/to/iomux] [rounds] [seconds] [connections]
# Needs nginx, wrk, taskset and python3; installs nginx and wrk with apt-get
# when missing (as root), else says what to install.
set -eu
B=${1:-target/release/iomux}
ROUNDS=${2:-3}
SECS=${3:-5}
CONNS=${4:-100}
missing=""
for tool in nginx wrk; do
  command -v "$tool" >/dev/null 2>&1 || PATH="$PATH:/usr/sbin" command -v "$tool" >/dev/null 2>&1 || missing="$missing $tool"
done
if [ -n "$missing" ]; then
  if [ "$(id -u)" = 0 ] && command -v apt-get >/dev/null 2>&1; then
    apt-get update -qq && apt-get install -y -qq $missing >/dev/null
  else
    echo "load-vs-wrk: missing$missing: install them (e.g. apt-get install$missing)" >&2
    exit 1
  fi
fi
if [ ! -x "$B" ]; then
  echo "load-vs-wrk: no $B: build it with cargo build --release" >&2
  exit 1
fi
PY="$(dirname "$0")/load-vs-wrk.py"
export PATH="$PATH:/usr/sbin"
if [ "$(id -u)" = 0 ] && command -v unshare >/dev/null 2>&1 && command -v ip >/dev/null 2>&1 \
   && unshare --net true 2>/dev/null; then
  LOAD_VS_WRK_NETNS=1 exec unshare --net sh -c 'ip link set lo up && exec python3 "$@"' sh "$PY" "$B" "$ROUNDS" "$SECS" "$CONNS"
fi
exec python3 "$PY" "$B" "$ROUNDS" "$SECS" "$CONNS"
