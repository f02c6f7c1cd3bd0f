#!/usr/bin/env bash
# More files than the open-file cache holds: iomux with no cache, the
# default 1,000 and room for all, and nginx, on 5,000 1 KiB files requested
# at random (bench/static_churn.py has the details).
#
# Usage: bench/static-churn.sh [--files N] [--pattern uniform|skewed] [--browser] [--rounds N] [--duration SECS]
#            (IOMUX_ALT=PATH adds that build with the default cache)
set -euo pipefail
cd "$(dirname "$0")/.."
# shellcheck source=bench/prepare.sh
source bench/prepare.sh
exec python3 bench/static_churn.py "$@"
