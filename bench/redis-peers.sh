#!/usr/bin/env bash
# Interleaved RESP benchmark: redis-server (Debian's, --save "" --appendonly
# no, started here on a free port, never the system service) against
# `iomux serve --proto resp` on epoll and on io_uring, and (when asked for)
# the floor: bench/floor-peer in resp mode, on epoll (`floor`) and io_uring
# (`floor-uring`), one recv and one send per batch of commands and nothing
# else, what the kernel alone costs (not a real server). Servers on cpu 0,
# redis-benchmark on cpu 1; 50 clients, SET and GET, with -P 16 and without;
# server CPU per operation from /proc. Then the server memory per idle
# connection (each sent one PING).
#
# Also (before the memory figure) pub/sub fan-out: 5,000 subscribers x 200 PUBLISHed messages, server
# CPU per delivered message (--fanout-subscribers 0 skips it).
#
# Usage: bench/redis-peers.sh [--rounds N] [--requests N]
#                             [--servers redis,iomux-epoll,iomux-uring (default; also iomux-epoll-level,floor,floor-uring)]
#                             [--profiles set,get,set-P16,get-P16] [--fanout-subscribers N] [--fanout-messages N] [--fanout-pipeline N]
#                             [--idle N] [--json FILE]
set -euo pipefail
cd "$(dirname "$0")/.."
if ! command -v redis-server >/dev/null || ! command -v redis-benchmark >/dev/null; then
    export DEBIAN_FRONTEND=noninteractive
    apt-get update && apt-get install -y redis-server redis-tools
fi
cargo build --release -p iomux-cli >&2
cargo build --release --manifest-path bench/floor-peer/Cargo.toml >&2
ulimit -n "$(ulimit -Hn)"
exec python3 bench/redis_peers.py "$@"
