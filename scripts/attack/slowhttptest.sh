#!/usr/bin/env bash
# Slow-client attacks on `iomux serve --proto http`, on loopback only:
# slowloris (slow headers), slow body (R-U-Dead-Yet) and slow read, each run by
# slowhttptest against every engine while a probe makes a fresh request every
# 100 ms. Prints the probe's availability (answered / made) and slowest answer.
#
# Asserts, for every engine and attack: the attack ran (slowhttptest held
# connections), every probe was answered 200 within curl's 3 s, and the server
# exited 0 on SIGTERM without a panic. Prints FAIL lines and exits 1 if any
# check failed, 0 if all passed.
#
#   scripts/attack/slowhttptest.sh                  # every engine but blocking, 20 s per attack
#   ENGINES="epoll uring" ATTACK_SECS=10 scripts/attack/slowhttptest.sh
#
# The one-at-a-time engine (--backend blocking) is left out by default: any
# client holding its only connection, slow or not, stops everybody else.
set -euo pipefail
cd "$(dirname "$0")/../.."

ATTACK_SECS=${ATTACK_SECS:-20}
# slowhttptest opens CONNS connections at RATE per second, then holds them:
# 2000 at 100/s keeps the attack growing for 20 s as the server cuts them off.
CONNS=${CONNS:-2000}
RATE=${RATE:-100}
IDLE_TIMEOUT=${IDLE_TIMEOUT:-5}
ENGINES=${ENGINES:-"epoll epoll-level epoll-oneshot poll select sigio uring uring-poll threads nonblocking"}
OUT=${OUT:-target/attack}

if ! command -v slowhttptest >/dev/null; then
    apt-get install -y slowhttptest >/dev/null 2>&1 || {
        apt-get update >/dev/null && apt-get install -y slowhttptest >/dev/null
    }
fi
command -v curl >/dev/null || apt-get install -y curl >/dev/null
ulimit -n "$(ulimit -Hn)"
cargo build --release -q
mkdir -p "$OUT"

engine_flags() {
    case $1 in
        epoll) echo "--backend epoll --trigger edge" ;;
        epoll-level) echo "--backend epoll --trigger level" ;;
        epoll-oneshot) echo "--backend epoll --trigger oneshot" ;;
        *) echo "--backend $1" ;;
    esac
}

# probe PORT SECS FILE: a fresh connection and request started every 100 ms
# (each in the background, so a slow answer does not delay the next probe);
# one line per probe: status and seconds taken (000 = no answer within 3 s).
probe() {
    local end=$((SECONDS + $2)) pids=()
    : >"$3"
    while [ "$SECONDS" -lt "$end" ]; do
        { curl -s -o /dev/null --max-time 3 -w '%{http_code} %{time_total}\n' \
            "http://127.0.0.1:$1/plaintext" || echo "000 3"; } >>"$3" &
        pids+=($!)
        sleep 0.1
    done
    wait "${pids[@]}"
}

summary() {
    awk '{ n++; if ($1 == 200) ok++; if ($2 > max) max = $2 }
         END { printf "%d/%d answered (%.1f%%), slowest %.3f s", ok, n, (n ? 100 * ok / n : 0), max }' "$1"
}

# unanswered FILE: how many probes got no 200 (curl gives up after 3 s).
unanswered() {
    awk '$1 != 200 { bad++ } END { print bad + 0 }' "$1"
}

failures=0
fail() {
    echo "FAIL: $*" >&2
    failures=$((failures + 1))
}

echo "| engine | attack | most attack connections held at once | probe availability |"
echo "| --- | --- | --- | --- |"
for engine in $ENGINES; do
    for attack in slowloris slowbody slowread; do
        log="$OUT/server-$engine-$attack.log"
        coproc SERVER { exec taskset -c 0 target/release/iomux serve --proto http --addr 127.0.0.1:0 \
            --idle-timeout "$IDLE_TIMEOUT" $(engine_flags "$engine") 2>"$log"; }
        server_pid=$SERVER_PID # bash unsets SERVER_PID once the coprocess ends
        ready=
        read -r ready <&"${SERVER[0]}" || true
        if [[ $ready != "listening on 127.0.0.1:"* ]]; then
            fail "$engine $attack: the server did not start (see $log)"
            continue
        fi
        port=${ready#listening on 127.0.0.1:}
        port=${port%% *}
        case $attack in
            slowloris) mode=(-H -i 1) ;;
            slowbody) mode=(-B -i 1 -s 8192) ;;
            slowread) mode=(-X -k 10 -n 1 -w 1 -y 64 -z 32) ;;
        esac
        taskset -c 1 slowhttptest "${mode[@]}" -c "$CONNS" -r "$RATE" -l "$ATTACK_SECS" -p 3 \
            -u "http://127.0.0.1:$port/plaintext" >"$OUT/slowhttptest-$engine-$attack.log" 2>&1 &
        attacker=$!
        sleep 2 # let the attack build up
        probe "$port" "$((ATTACK_SECS - 3))" "$OUT/probe-$engine-$attack.txt"
        wait "$attacker" || true
        held=$(sed 's/\x1b\[[0-9;]*m//g' "$OUT/slowhttptest-$engine-$attack.log" |
            grep -a -o 'connected: *[0-9]*' | grep -o '[0-9]*$' | sort -n | tail -1 || true)
        kill -TERM "$server_pid" 2>/dev/null || true
        status=0
        # 127: the server had already ended (and been reaped) before SIGTERM.
        wait "$server_pid" 2>/dev/null || status=$?
        probes="$OUT/probe-$engine-$attack.txt"
        echo "| $engine | $attack | ${held:-?} | $(summary "$probes") |"
        [ "${held:-0}" -gt 0 ] ||
            fail "$engine $attack: slowhttptest held no connection (see $OUT/slowhttptest-$engine-$attack.log): the attack did not run"
        [ -s "$probes" ] || fail "$engine $attack: no probe was made"
        bad=$(unanswered "$probes")
        [ "$bad" -eq 0 ] || fail "$engine $attack: $bad probes were not answered 200 within 3 s ($probes)"
        [ "$status" -eq 0 ] || fail "$engine $attack: the server exited $status on SIGTERM (see $log)"
        if grep -q panicked "$log"; then fail "$engine $attack: the server panicked (see $log)"; fi
    done
done
if [ "$failures" -gt 0 ]; then
    echo "$failures check(s) failed" >&2
    exit 1
fi
echo "every check passed"
