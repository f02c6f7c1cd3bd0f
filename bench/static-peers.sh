#!/usr/bin/env bash
# Interleaved static-file benchmark: iomux `serve --root` (epoll, io_uring)
# against nginx (one worker, open_file_cache, sendfile on + tcp_nopush and
# sendfile off), the file floor of bench/floor-peer and static-web-server (if
# installed), for 1 KiB, 64 KiB, 1 MiB and 100 MiB files. Servers on cpu 0,
# `wrk -t1` on cpu 1. Prints medians, server CPU per request and per GiB, and
# the ratios the goals are stated in (bench/static_peers.py has the details).
#
# Usage: bench/static-peers.sh [--rounds N] [--duration SECS]
#            [--servers iomux-epoll,iomux-uring,iomux-epoll-nocache,nginx-sendfile,nginx-copy,floor-file,static-web-server]
#            (on request also iomux-epoll-level, and with IOMUX_ALT=PATH iomux-epoll-alt, iomux-uring-alt)
#            [--sizes 1k,64k,1m,100m] [--browser] [--json FILE]
set -euo pipefail
cd "$(dirname "$0")/.."
# shellcheck source=bench/prepare.sh
source bench/prepare.sh
exec python3 bench/static_peers.py "$@"
