#!/usr/bin/env bash
# eBPF same-host bypass, with and without, alternating in one run (needs root):
#  1. Raw TCP ping-pong between two local sockets (trellis net-probe: 64-byte
#     request/response on one connection, blocking sockets): round trips/s, p50, p99.
#  2. The same-host mesh path wrk -> outbound sidecar -> mTLS -> inbound sidecar ->
#     nginx backend, keep-alive, 1 KiB: req/s, p50, p99 at 1 and at $CONNS connections.
# Every process runs in a cgroup made for the run; "bypass" attaches the programs to it.
# Each phase starts fresh processes, so every connection is made under that phase's
# setting. Usage: bench/bypass.sh [seconds per run, default 10] (ROUNDS=2 by default)
set -euo pipefail
cd "$(dirname "$0")/.."
. bench/common.sh
DURATION="${1:-10}"
ROUNDS="${ROUNDS:-2}"
PINGS="${PINGS:-200000}"
require wrk nginx openssl curl python3 "$TRELLIS"
if [ "$(id -u)" -ne 0 ]; then echo "bench/bypass.sh needs root (eBPF, cgroups)" >&2; exit 1; fi

CG2=$(awk '$9 == "cgroup2" {print $5; exit}' /proc/self/mountinfo)
[ -n "$CG2" ] || { echo "no cgroup v2 hierarchy mounted" >&2; exit 1; }
CG="$CG2/trellis-bench-$$"
PIN="/sys/fs/bpf/trellis-bench-$$"
mkdir "$CG"
bench_cleanup() {
    cleanup
    "$TRELLIS" bypass disable --pin-dir "$PIN" >/dev/null 2>&1 || true
    for pid in $(cat "$CG/cgroup.procs" 2>/dev/null); do echo "$pid" 2>/dev/null > "$CG2/cgroup.procs" || true; done
    rmdir "$CG" 2>/dev/null || true
}
trap bench_cleanup EXIT
# This shell and everything it starts from here on live in the cgroup.
echo $$ > "$CG/cgroup.procs"

pki
BACKEND=$(free_port); INBOUND=$(free_port); OUTBOUND=$(free_port); ADMIN2=$(free_port); ADMIN3=$(free_port)
mesh_configs "$INBOUND" "$OUTBOUND" "$ADMIN2" "$ADMIN3" "$BACKEND"

stop_all() {
    for p in "${PIDS[@]}"; do kill "$p" 2>/dev/null || true; done
    wait 2>/dev/null || true
    PIDS=()
}

declare -A PING_RATE PING_P50 PING_P99
phase() { # $1 = label (off | bypass), $2 = round
    local label="$1 #$2"
    if [ "$1" = bypass ]; then "$TRELLIS" bypass enable --cgroup "$CG" --pin-dir "$PIN" >/dev/null; fi

    "$TRELLIS" net-probe echo --listen 127.0.0.1:0 --ready-file "$WORK/echo.json" & PIDS+=($!)
    for _ in $(seq 100); do [ -s "$WORK/echo.json" ] && break; sleep 0.05; done
    local echo_addr; echo_addr=$(python3 -c "import json,sys; print(json.load(open(sys.argv[1]))[0])" "$WORK/echo.json")
    "$TRELLIS" net-probe pingpong --to "$echo_addr" --count 20000 >/dev/null
    local out; out=$("$TRELLIS" net-probe pingpong --to "$echo_addr" --count "$PINGS")
    PING_RATE[$label]=$(python3 -c "import json,sys; print(round(json.loads(sys.argv[1])['per_second']))" "$out")
    PING_P50[$label]=$(python3 -c "import json,sys; print('%.1f' % json.loads(sys.argv[1])['p50_us'])" "$out")
    PING_P99[$label]=$(python3 -c "import json,sys; print('%.1f' % json.loads(sys.argv[1])['p99_us'])" "$out")
    rm -f "$WORK/echo.json"

    start_backend "$BACKEND"
    RUST_LOG=warn "$TRELLIS" proxy --config "$WORK/inbound.yaml" --workers 1 & PIDS+=($!)
    RUST_LOG=warn "$TRELLIS" proxy --config "$WORK/outbound.yaml" --workers 1 & PIDS+=($!)
    wait_http "http://127.0.0.1:$BACKEND/1k"
    wait_http "http://127.0.0.1:$OUTBOUND/1k"
    CONNS=1 measure "mesh c1 $label" "http://127.0.0.1:$OUTBOUND/1k" "$DURATION"
    measure "mesh c$CONNS $label" "http://127.0.0.1:$OUTBOUND/1k" "$DURATION"
    if [ "$1" = bypass ]; then
        COUNTERS[$label]=$("$TRELLIS" bypass status --pin-dir "$PIN" --json | python3 -c '
import json, sys
c = json.load(sys.stdin)["counters"]
print("sockets added %d; redirected %d msgs, %.0f MiB; normal path %d msgs, %.0f MiB" % (
    c["sockets_added"], c["msgs_redirected"], c["bytes_redirected"] / 2**20,
    c["msgs_passed"], c["bytes_passed"] / 2**20))')
        "$TRELLIS" bypass disable --pin-dir "$PIN" >/dev/null
    fi
    stop_all
}

declare -A COUNTERS
LABELS=()
for r in $(seq "$ROUNDS"); do
    phase off "$r"; phase bypass "$r"
    LABELS+=("off #$r" "bypass #$r")
done

echo "raw TCP ping-pong, 64 B, $PINGS round trips on one connection (trellis net-probe)"
printf '%-12s %12s %10s %10s\n' phase "trips/s" "p50 us" "p99 us"
for l in "${LABELS[@]}"; do printf '%-12s %12s %10s %10s\n' "$l" "${PING_RATE[$l]}" "${PING_P50[$l]}" "${PING_P99[$l]}"; done
echo
echo "mesh path wrk -> sidecar -> mTLS -> sidecar -> nginx, keep-alive, 1 KiB, ${DURATION}s per run"
MESH=()
for l in "${LABELS[@]}"; do MESH+=("mesh c1 $l"); done
for l in "${LABELS[@]}"; do MESH+=("mesh c$CONNS $l"); done
print_table "${MESH[@]}"
for l in "${LABELS[@]}"; do [ -n "${COUNTERS[$l]:-}" ] && echo "$l counters: ${COUNTERS[$l]}"; done
echo
for r in $(seq "$ROUNDS"); do
    off="off #$r"; on="bypass #$r"
    echo "round $r: ping-pong p50 bypass/off $(ratio "${PING_P50[$on]}" "${PING_P50[$off]}"), trips/s $(ratio "${PING_RATE[$on]}" "${PING_RATE[$off]}");" \
        "mesh c1 p50 $(ratio "${P50[mesh c1 $on]}" "${P50[mesh c1 $off]}"), rps $(ratio "${RPS[mesh c1 $on]}" "${RPS[mesh c1 $off]}");" \
        "mesh c$CONNS p50 $(ratio "${P50[mesh c$CONNS $on]}" "${P50[mesh c$CONNS $off]}"), rps $(ratio "${RPS[mesh c$CONNS $on]}" "${RPS[mesh c$CONNS $off]}")"
done
