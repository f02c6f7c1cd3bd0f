#!/usr/bin/env bash
# Server memory per idle keep-alive connection (whole VmRSS / connections) for
# iomux (`serve --proto http`, epoll edge), nginx (one worker) and the hyper
# peer: 9,000 connections each send one request, read the response, and stay
# open silently. Needs a descriptor hard limit of at least 9,100.
#
# Usage: bench/idle-memory.sh [--conns N] [--settle SECS] [--servers iomux,nginx,hyper]
set -euo pipefail
cd "$(dirname "$0")/.."
# shellcheck source=bench/prepare.sh
source bench/prepare.sh
exec python3 bench/idle_memory.py "$@"
