# Sourced by the bench scripts: install nginx and wrk if missing, build the
# iomux release binary, the hyper peer and the floor peer, raise the descriptor limit.
if ! command -v wrk >/dev/null || ! command -v nginx >/dev/null; then
    apt-get install -y nginx wrk || { apt-get update && apt-get install -y nginx wrk; }
fi
if ! command -v nginx >/dev/null && [ -x /usr/sbin/nginx ]; then
    export PATH="$PATH:/usr/sbin"
fi
cargo build --release -p iomux-cli >&2
cargo build --release --manifest-path bench/hyper-peer/Cargo.toml >&2
cargo build --release --manifest-path bench/floor-peer/Cargo.toml >&2
ulimit -n "$(ulimit -Hn)"
