#!/usr/bin/env bash
# Interleaved HTTP benchmark: iomux (`serve --proto http`, epoll edge) against
# nginx (one worker, `return 200`, access log off) and a hyper 1.x peer
# (tokio current-thread), and the floor peer (bench/floor-peer: one recv and
# one send per request and nothing else, on epoll and on io_uring: what the
# kernel alone costs; not a real server). Servers on cpu 0, `wrk -t1` on cpu 1.
#
# Profiles: 100 keep-alive connections with plain GETs; TechEmpower's pipelined
# profile (256 connections, 16 requests per write, bench/pipeline.lua); the
# same two on GET /json (serde_json per request; iomux and hyper only).
# Prints a table of medians and the ratios the goals are stated in.
#
# Usage: bench/http-peers.sh [--rounds N] [--duration SECS] [--servers iomux,nginx,hyper,floor,floor-uring]
#                            [--profiles plain-100,pipelined-256x16,json-100,json-pipelined-256x16] [--json FILE]
set -euo pipefail
cd "$(dirname "$0")/.."
# shellcheck source=bench/prepare.sh
source bench/prepare.sh
exec python3 bench/http_peers.py "$@"
