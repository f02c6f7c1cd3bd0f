#!/usr/bin/env bash
# Interleaved RESP benchmark: redis-server (Debian's, --save "" --appendonly
# no, started here on a free port, never the system service) against
# `iomux serve --proto resp` on epoll and on io_uring. Servers on cpu 0,
# redis-benchmark on cpu 1; 50 clients, SET and GET, with -P 16 and without;
# server CPU per operation from /proc. Then the server memory per idle
# connection (each sent one PING).
#
# Also (before the memory figure) pub/sub fan-out: 5,000 subscribers x 200 PUBLISHed messages, server
# CPU per delivered message (--fanout-subscribers 0 skips it).
#
# Usage: bench/redis-peers.sh [--rounds N] [--requests N] [--servers redis,iomux-epoll,iomux-uring]
#                             [--profiles set,get,set-P16,get-P16] [--fanout-subscribers N] [--fanout-messages N] [--fanout-pipeline N]
#                             [--idle N] [--json FILE]
set -euo pipefail
cd "$(dirname "$0")/.."
if ! command -v redis-server >/dev/null || ! command -v redis-benchmark >/dev/null; then
    export DEBIAN_FRONTEND=noninteractive
    apt-get update && apt-get install -y redis-server redis-tools
fi
cargo build --release -p iomux-cli >&2
ulimit -n "$(ulimit -Hn)"
exec python3 bench/redis_peers.py "$@"
