#!/usr/bin/env bash
# Two trellis builds side by side on the same proxy configs and backend, rounds
# interleaved: is a change free? Reports req/s, p99 and the proxy's CPU per request
# (utime+stime from /proc/PID/stat over the run; wrk shares the two cores, so this is
# the figure that does not depend on it).
#   bench/ab.sh BASELINE_BINARY [seconds per run, default 10] [rounds, default 3]
# Configs: `plain` (one route to the backend) and `policy` (an AuthorizationPolicy that
# allows the request, a response header edit: the rbac and header_mutation filters run).
set -euo pipefail
cd "$(dirname "$0")/.."
. bench/common.sh
BASELINE="${1:?usage: bench/ab.sh BASELINE_BINARY [seconds] [rounds]}"
DURATION="${2:-10}"
ROUNDS="${3:-3}"
require wrk nginx curl python3 "$TRELLIS" "$BASELINE"
HZ=$(getconf CLK_TCK)

BACKEND=$(free_port)
start_backend "$BACKEND"

config() { # $1 = kind, $2 = listen port, $3 = admin port
    local extra="" route_extra=""
    if [ "$1" = policy ]; then
        extra='    authorization:
      policies:
        - name: allow-reads
          rules: [{ to: [{ operation: { methods: ["GET"], paths: ["/1k*"] } }] }]'
        route_extra=', response_headers_to_add: [{ name: x-bench, value: "1" }]'
    fi
    cat <<CONF
admin: { address: "127.0.0.1:$3" }
listeners:
  - name: bench
    address: "127.0.0.1:$2"
$extra
    http:
      virtual_hosts:
        - name: all
          domains: ["*"]
          routes:
            - { match: { prefix: "/" }, route: { cluster: backend }$route_extra }
clusters:
  - name: backend
    endpoints: ["127.0.0.1:$BACKEND"]
CONF
}

cpu_ticks() { awk '{print $14 + $15}' "/proc/$1/stat"; }

declare -A PORT PID CPU
for kind in plain policy; do
    for side in baseline new; do
        bin=$TRELLIS; [ "$side" = baseline ] && bin=$BASELINE
        port=$(free_port); admin=$(free_port)
        config "$kind" "$port" "$admin" > "$WORK/$side-$kind.yaml"
        RUST_LOG=warn "$bin" proxy --config "$WORK/$side-$kind.yaml" --workers 1 & PIDS+=($!)
        PORT[$side-$kind]=$port; PID[$side-$kind]=$!
    done
done
for key in "${!PORT[@]}"; do wait_http "http://127.0.0.1:${PORT[$key]}/1k"; done

echo "machine: $(nproc) cores, $(awk -F': ' '/model name/ {print $2; exit}' /proc/cpuinfo), kernel $(uname -r)"
echo "load: wrk -t1 -c$CONNS -d${DURATION}s, 1 KiB, keep-alive; $ROUNDS rounds interleaved"
printf '%-8s %-9s %6s %10s %9s %14s\n' config build round "req/s" "p99 ms" "CPU µs/req"
for kind in plain policy; do
    for round in $(seq "$ROUNDS"); do
        for side in baseline new; do
            key=$side-$kind
            url="http://127.0.0.1:${PORT[$key]}/1k"
            wrk -t1 -c"$CONNS" -d2s "$url" >/dev/null # warm-up
            before=$(cpu_ticks "${PID[$key]}")
            out=$(wrk -t1 -c"$CONNS" -d"${DURATION}s" --latency "$url")
            after=$(cpu_ticks "${PID[$key]}")
            RPS[$key]=$(awk '/Requests\/sec/ {print $2}' <<<"$out")
            P99[$key]=$(to_ms "$(awk '$1=="99%" {print $2}' <<<"$out")")
            requests=$(awk '/requests in/ {print $1}' <<<"$out")
            us=$(awk -v t=$((after - before)) -v hz="$HZ" -v n="$requests" \
                'BEGIN { printf "%.2f", t / hz * 1e6 / n }')
            printf '%-8s %-9s %6s %10s %9s %14s\n' "$kind" "$side" "$round" "${RPS[$key]}" "${P99[$key]}" "$us"
        done
    done
done
