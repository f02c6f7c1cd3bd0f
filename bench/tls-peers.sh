#!/usr/bin/env bash
# Interleaved TLS benchmark: iomux (`serve --proto http --tls-cert --tls-key`,
# epoll edge, rustls with ring) against nginx (one worker, OpenSSL, TLS 1.3,
# session tickets and a session cache on), both presenting one ECDSA P-256
# certificate made here. Servers on cpu 0, clients on cpu 1.
#
# Profiles (server CPU per unit, medians over rounds, and per-round ratios):
#   keepalive  wrk -t1 -c100 over https, GET /plaintext          (per request)
#   full       iomux load --connect-per-request --no-resume      (per full handshake)
#   resumed    iomux load --connect-per-request (session tickets) (per resumed handshake)
#   bulk       wrk -t1 -c4 over https, GET of a 100 MiB file     (per byte); needs
#              iomux's --root (static files); skipped, and said so, without it
#
# Usage: bench/tls-peers.sh [--rounds N] [--duration SECS] [--profiles keepalive,full,resumed,bulk] [--json FILE]
set -euo pipefail
cd "$(dirname "$0")/.."
if ! command -v wrk >/dev/null || ! command -v nginx >/dev/null || ! command -v openssl >/dev/null; then
    apt-get install -y nginx wrk openssl || { apt-get update && apt-get install -y nginx wrk openssl; }
fi
export PATH="$PATH:/usr/sbin"
cargo build --release -p iomux-cli >&2
ulimit -n "$(ulimit -Hn)"
exec python3 bench/tls_peers.py "$@"
