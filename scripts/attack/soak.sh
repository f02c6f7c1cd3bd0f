#!/usr/bin/env bash
# Soak: good, slow and hostile clients (resets, garbage, half-closes, silent
# holds, trickled heads, slow readers) against every engine of `iomux serve`
# on loopback, in release mode. Asserts every good request was answered and
# that the server's descriptors return to their baseline and its memory stays
# flat; prints the figures.
#
#   scripts/attack/soak.sh [SECONDS_PER_ENGINE] [echo|http] [ENGINE_FILTER]
#   scripts/attack/soak.sh 30 http          # about 6 minutes
#   scripts/attack/soak.sh 10 echo uring    # the engines whose test name has "uring"
#
# Each engine is its own test (soak_with_good_slow_and_hostile_clients::epoll_edge,
# ...); they run one at a time, so no engine's figures include another's load.
# Exits non-zero if any engine's assertions fail.
set -euo pipefail
cd "$(dirname "$0")/../.."
ulimit -n "$(ulimit -Hn)"
export IOMUX_SOAK_SECS=${1:-30}
export IOMUX_SOAK_PROTO=${2:-echo}
filter=${3:-}
mkdir -p target/attack
log=target/attack/soak-$IOMUX_SOAK_PROTO.log
nice cargo test --release -q -p iomux-cli --test robust_soak -- \
    --ignored --nocapture --test-threads=1 ${filter:+"$filter"} 2>&1 | tee "$log" |
    grep -E '^soak |test result|panicked|good client'
