#!/usr/bin/env bash
# Run every fuzz target for N seconds each (default 600), one after another.
# Needs the nightly toolchain and cargo-fuzz: `cargo install cargo-fuzz`.
#   fuzz/run.sh [SECONDS] [TARGET...]
# New inputs go to fuzz/corpus/TARGET (not committed); fuzz/seeds/TARGET is the
# committed seed corpus, fuzz/dicts/TARGET.dict (if any) its libFuzzer
# dictionary; crashes land in fuzz/artifacts/TARGET.
set -euo pipefail
cd "$(dirname "$0")"
seconds="${1:-600}"
shift || true
targets=("$@")
if [ ${#targets[@]} -eq 0 ]; then
    targets=(request chunked split exchange files)
fi
for target in "${targets[@]}"; do
    mkdir -p "corpus/$target"
    dict=()
    if [ -f "dicts/$target.dict" ]; then
        dict=(-dict="dicts/$target.dict")
    fi
    echo "== $target for ${seconds}s"
    nice -n 10 cargo +nightly fuzz run "$target" "corpus/$target" "seeds/$target" -- \
        -max_total_time="$seconds" -max_len=8192 -print_final_stats=1 "${dict[@]}"
done
