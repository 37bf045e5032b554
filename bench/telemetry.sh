#!/usr/bin/env bash
# What Istio's standard metrics and tracing cost the proxy: one trellis build, the same
# route to the same backend, with telemetry off, with Istio's metrics (`istio_stats`, the
# server's side, every request recorded with its 25 labels and three histograms), with
# the metrics and an access log to a file (`logged`), with the metrics and tracing at
# Istio's default 1% and at 100% (spans exported over OTLP/gRPC to the tests' Python
# receiver, whose own CPU is not counted), and with all three on (`all`: metrics, access
# log, 1% tracing); rounds interleaved. Reports req/s, p99 and the
# proxy's CPU per request (utime+stime from /proc/PID/stat over the run; wrk shares the
# two cores, so this is the figure that does not depend on it).
#   bench/telemetry.sh [seconds per run, default 10] [rounds, default 3]
set -euo pipefail
cd "$(dirname "$0")/.."
. bench/common.sh
DURATION="${1:-10}"
ROUNDS="${2:-3}"
require wrk nginx curl python3 "$TRELLIS"
HZ=$(getconf CLK_TCK)
# The OTLP receiver needs grpcio and opentelemetry-proto (./run test makes this venv).
PYTHON="${TRELLIS_PYTHON:-target/grpcio-venv/bin/python}"
"$PYTHON" -c 'import grpc, opentelemetry.proto.collector.trace.v1.trace_service_pb2_grpc' \
    || { echo "bench/telemetry.sh: $PYTHON lacks grpcio / opentelemetry-proto (run ./run test once)" >&2; exit 1; }
"$PYTHON" crates/trellis/tests/fixtures/otlp/receiver.py "$WORK/otlp.json" /dev/null & PIDS+=($!)
for _ in $(seq 100); do [ -s "$WORK/otlp.json" ] && break; sleep 0.1; done
OTLP=$(python3 -c 'import json,sys; print(json.load(open(sys.argv[1]))["port"])' "$WORK/otlp.json")

BACKEND=$(free_port)
start_backend "$BACKEND"

config() { # $1 = kind, $2 = listen port, $3 = admin port
    local stats="" log=""
    if [ "$1" != off ]; then
        stats='    istio_stats:
      reporter: destination
      workload: { name: bench-v1, namespace: default, app: bench, version: v1, cluster: Kubernetes, principal: "spiffe://cluster.local/ns/default/sa/bench" }'
    fi
    if [ "$1" = logged ] || [ "$1" = all ]; then
        log="      access_log: { path: \"$WORK/access-$2.log\", text_format: istio }
"
    fi
    local rate=""
    case "$1" in traced*) rate=${1#traced};; all) rate=1;; esac
    if [ -n "$rate" ]; then
        log="$log      tracing:
        span_kind: server
        random_sampling: $rate
        tags: { istio.canonical_service: bench, istio.namespace: default }
        provider: { opentelemetry: { cluster: otlp, service_name: bench.default } }"
    fi
    cat <<CONF
admin: { address: "127.0.0.1:$3" }
listeners:
  - name: bench
    address: "127.0.0.1:$2"
$stats
    http:
$log
      virtual_hosts:
        - name: all
          domains: ["*"]
          routes:
            - { match: { prefix: "/" }, route: { cluster: backend } }
clusters:
  - name: backend
    endpoints: ["127.0.0.1:$BACKEND"]
    service: { host: bench.default.svc.cluster.local, name: bench, namespace: default }
  - name: otlp
    endpoints: ["127.0.0.1:$OTLP"]
    http2: true
CONF
}

cpu_ticks() { awk '{print $14 + $15}' "/proc/$1/stat"; }

KINDS=(off metrics logged traced1 all traced100)
declare -A PORT PID
for kind in "${KINDS[@]}"; do
    port=$(free_port); admin=$(free_port)
    config "$kind" "$port" "$admin" > "$WORK/$kind.yaml"
    RUST_LOG=warn "$TRELLIS" proxy --config "$WORK/$kind.yaml" --workers 1 & PIDS+=($!)
    PORT[$kind]=$port; PID[$kind]=$!
done
for kind in "${KINDS[@]}"; do wait_http "http://127.0.0.1:${PORT[$kind]}/1k"; done

echo "machine: $(nproc) cores, $(awk -F': ' '/model name/ {print $2; exit}' /proc/cpuinfo), kernel $(uname -r)"
echo "load: wrk -t1 -c$CONNS -d${DURATION}s, 1 KiB, keep-alive; $ROUNDS rounds interleaved"
printf '%-9s %6s %10s %9s %14s\n' telemetry round "req/s" "p99 ms" "CPU µs/req"
declare -A SUM_RPS SUM_US
for round in $(seq "$ROUNDS"); do
    for kind in "${KINDS[@]}"; do
        url="http://127.0.0.1:${PORT[$kind]}/1k"
        wrk -t1 -c"$CONNS" -d2s "$url" >/dev/null # warm-up
        before=$(cpu_ticks "${PID[$kind]}")
        out=$(wrk -t1 -c"$CONNS" -d"${DURATION}s" --latency "$url")
        after=$(cpu_ticks "${PID[$kind]}")
        rps=$(awk '/Requests\/sec/ {print $2}' <<<"$out")
        p99=$(to_ms "$(awk '$1=="99%" {print $2}' <<<"$out")")
        requests=$(awk '/requests in/ {print $1}' <<<"$out")
        us=$(awk -v t=$((after - before)) -v hz="$HZ" -v n="$requests" \
            'BEGIN { printf "%.2f", t / hz * 1e6 / n }')
        printf '%-9s %6s %10s %9s %14s\n' "$kind" "$round" "$rps" "$p99" "$us"
        SUM_RPS[$kind]=$(awk -v a="${SUM_RPS[$kind]:-0}" -v b="$rps" 'BEGIN { print a + b }')
        SUM_US[$kind]=$(awk -v a="${SUM_US[$kind]:-0}" -v b="$us" 'BEGIN { print a + b }')
    done
done
for kind in metrics logged traced1 all traced100; do
    echo "$kind/off: req/s $(ratio "${SUM_RPS[$kind]}" "${SUM_RPS[off]}"), CPU per request $(ratio "${SUM_US[$kind]}" "${SUM_US[off]}")"
done
series=$(curl -s "http://127.0.0.1:$(awk -F'[:"]' '/admin/ {print $(NF-1)}' "$WORK/metrics.yaml")/stats/prometheus" | grep -c '^istio_requests_total{' || true)
echo "istio_requests_total series in the metrics proxy: $series"
for kind in traced1 all traced100; do
    admin=$(awk -F'[:"]' '/admin/ {print $(NF-1)}' "$WORK/$kind.yaml")
    echo "$kind spans: $(curl -s "http://127.0.0.1:$admin/stats/prometheus" | grep -E '^trellis_tracing_spans_(exported|dropped|failed)_total' | tr '\n' ' ')"
done
