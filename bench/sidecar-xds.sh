#!/usr/bin/env bash
# What an xDS update costs a real sidecar: `trellis control` (CA + xDS over mutual TLS)
# with N services x 10 endpoints, one `trellis proxy` (one worker) subscribed as one of
# the workloads, as `trellis up` runs it. Reported: the sidecar's CPU (its main thread,
# which runs the xDS client, decoding and applying, and its worker; from
# /proc/PID/task/*/schedstat) to take its first full view (start, certificate and
# connection included; the workload key's generation, on the blocking pool, not), then
# per change the median of ROUNDS: one endpoint of one service moves (EDS), one
# service's DestinationRule changes its cluster (CDS), one service gets a VirtualService
# route (RDS: its route configuration). Delta and state of the world. CHANGES=idle
# measures 2 s with no change (timers, keep-alives: what every figure includes).
# Usage: bench/sidecar-xds.sh [services...] (default: 1000 10000); ROUNDS=5,
# CHANGES="endpoint cluster route" (which to make).
set -euo pipefail
cd "$(dirname "$0")/.."
source bench/common.sh
require python3 curl
ROUNDS="${ROUNDS:-5}"
CHANGES="${CHANGES:-endpoint cluster route}"
sizes=("$@")
[ ${#sizes[@]} -eq 0 ] && sizes=(1000 10000)
[ -x "$TRELLIS" ] || cargo build --release --locked -p trellis --features hyperscan

# The registry: services svc-0..N-1, 10 WorkloadEntries each; svc-0-1 is the sidecar
# measured (127.0.0.1, its inbound port $3, outbound listener $4). $2 moves one port of
# svc-5 (the endpoint change).
registry() { # $1 = services, $2 = svc-5-3's port, $3 = inbound, $4 = outbound
    python3 - "$@" > "$WORK/reg/registry.yaml.tmp" <<'PY'
import sys
n, moved, inbound, outbound = (int(a) for a in sys.argv[1:5])
out = []
for i in range(n):
    out.append(f"""apiVersion: networking.istio.io/v1
kind: ServiceEntry
metadata: {{ name: svc-{i}, namespace: default }}
spec:
  hosts: [svc-{i}.default.svc.cluster.local]
  ports: [{{ number: 8080, name: http, protocol: HTTP }}]
  workloadSelector: {{ labels: {{ app: svc-{i} }} }}
---""")
    for e in range(10):
        address, port, annotations = f"10.{i // 256}.{i % 256}.{e}", 20000 + e, ""
        if i == 0 and e == 1:
            address, port = "127.0.0.1", inbound
            annotations = (f'\n  annotations: {{ sidecar.trellis.dev/app-ports: "http=9000", '
                           f'sidecar.trellis.dev/outbound: "127.0.0.1:{outbound}" }}')
        if i == 5 and e == 3:
            port = moved
        out.append(f"""apiVersion: networking.istio.io/v1
kind: WorkloadEntry
metadata:
  name: svc-{i}-{e}
  namespace: default{annotations}
spec:
  address: {address}
  ports: {{ http: {port} }}
  labels: {{ app: svc-{i} }}
---""")
print("\n".join(out))
PY
    mv "$WORK/reg/registry.yaml.tmp" "$WORK/reg/registry.yaml"
}

destination_rule() { # $1 = round: svc-7's cluster changes
    cat > "$WORK/reg/dr.yaml.tmp" <<YAML
apiVersion: networking.istio.io/v1
kind: DestinationRule
metadata: { name: svc-7, namespace: default }
spec:
  host: svc-7.default.svc.cluster.local
  trafficPolicy:
    connectionPool:
      tcp: { maxConnections: $((100 + $1)) }
YAML
    mv "$WORK/reg/dr.yaml.tmp" "$WORK/reg/dr.yaml"
}

virtual_service() { # $1 = round: svc-9's route changes
    cat > "$WORK/reg/vs.yaml.tmp" <<YAML
apiVersion: networking.istio.io/v1
kind: VirtualService
metadata: { name: svc-9, namespace: default }
spec:
  hosts: [svc-9.default.svc.cluster.local]
  http:
    - timeout: $((1 + $1))s
      route:
        - destination: { host: svc-9.default.svc.cluster.local }
YAML
    mv "$WORK/reg/vs.yaml.tmp" "$WORK/reg/vs.yaml"
}

# CPU nanoseconds of $1's main thread (the xDS client, decoding and applying) and its
# worker; not the blocking pool, where the workload key is generated at start.
cpu_ns() {
    local t s=0
    for t in /proc/"$1"/task/*; do
        case "$(cat "$t/comm" 2>/dev/null)" in
            trellis | trellis-worker) s=$((s + $(cut -d' ' -f1 "$t/schedstat"))) ;;
        esac
    done
    echo "$s"
}
applied() { grep -c "xDS update applied" "$WORK/proxy.log" || true; }
wait_applied() { # $1 = count to exceed
    for _ in $(seq 1200); do
        [ "$(applied)" -gt "$1" ] && return 0
        grep -q "xDS update rejected\|NACK" "$WORK/proxy.log" && { tail -5 "$WORK/proxy.log" >&2; exit 1; }
        sleep 0.05
    done
    echo "the sidecar never applied update $(($1 + 1))" >&2; tail -n 5 "$WORK/proxy.log" "$WORK/control.log" >&2; exit 1
}
# Until no update has been applied for a second: a change may take more than one.
settle() {
    local last; last=$(applied)
    while sleep 1; [ "$(applied)" != "$last" ]; do last=$(applied); done
}
median() { sort -n | awk '{a[NR] = $1} END {print a[int((NR + 1) / 2)]}'; }
ms() { awk -v n="$1" 'BEGIN { printf "%.1f", n / 1e6 }'; }

echo "machine: $(nproc) cores, $(awk -F': ' '/model name/ {print $2; exit}' /proc/cpuinfo), kernel $(uname -r)"
for n in "${sizes[@]}"; do
    for mode in delta sotw; do
        rm -rf "$WORK/reg" "$WORK/state" "$WORK"/proxy.* "$WORK"/control.*
        mkdir -p "$WORK/reg" "$WORK/state"
        inbound=$(free_port); outbound=$(free_port)
        registry "$n" 20003 "$inbound" "$outbound"
        $TRELLIS control --config-dir "$WORK/reg" --listen 127.0.0.1:0 --poll-interval 100ms \
            --state-dir "$WORK/state" --ready-file "$WORK/control.json" \
            > "$WORK/control.log" 2>&1 & control=$!; PIDS+=("$control")
        for _ in $(seq 600); do [ -s "$WORK/control.json" ] && break; sleep 0.1; done
        [ -s "$WORK/control.json" ] || { tail "$WORK/control.log" >&2; exit 1; }
        ca=$(python3 -c 'import json,sys; print(json.load(open(sys.argv[1]))["ca"])' "$WORK/control.json")
        python3 -c 'import json,sys; print(json.load(open(sys.argv[1]))["root_pem"], end="")' \
            "$WORK/control.json" > "$WORK/root.pem"
        $TRELLIS ca --state-dir "$WORK/state" token \
            --identity spiffe://cluster.local/ns/default/sa/default --ttl 5m > "$WORK/token"
        cat > "$WORK/proxy.yaml" <<YAML
admin: { address: "127.0.0.1:0" }
identity:
  ca_address: "$ca"
  ca_root: "$WORK/root.pem"
  token_file: "$WORK/token"
YAML
        xds_mode=()
        [ "$mode" = sotw ] && xds_mode=(--xds-sotw)
        # PERF=file: the sidecar runs under `perf record` (its CPU figures are then perf's).
        perf=(); [ -n "${PERF:-}" ] && perf=(perf record -F ${PERF_HZ:-999} ${PERF_ARGS:--g} -o "$PERF.$mode" --)
        "${perf[@]}" $TRELLIS proxy --config "$WORK/proxy.yaml" --workers 1 --xds "$ca" --xds-tls \
            "${xds_mode[@]}" --node-id "sidecar~127.0.0.1~svc-0-1.default~default.svc.cluster.local" \
            > "$WORK/proxy.log" 2>&1 & proxy=$!; PIDS+=("$proxy")
        wait_applied 0
        settle
        full=$(cpu_ns "$proxy")
        rss=$(rss_kb "$proxy")
        # PERF_CHANGES=file: `perf record` on the sidecar through the changes only.
        recorder=
        if [ -n "${PERF_CHANGES:-}" ]; then
            perf record -F 999 ${PERF_ARGS:--g} -p "$proxy" -o "$PERF_CHANGES.$n.$mode" 2>/dev/null & recorder=$!
            sleep 1
        fi
        declare -A per=([endpoint]="" [cluster]="" [route]="")
        for round in $(seq "$ROUNDS"); do
            for change in $CHANGES; do
                before=$(applied); cpu0=$(cpu_ns "$proxy")
                case $change in
                    endpoint) registry "$n" $((20003 + round)) "$inbound" "$outbound" ;;
                    cluster) destination_rule "$round" ;;
                    route) virtual_service "$round" ;;
                esac
                if [ "$change" = idle ]; then sleep 2; else wait_applied "$before"; settle; fi
                spent=$(( $(cpu_ns "$proxy") - cpu0 )); per[$change]+="$spent"$'\n'
                [ -n "${VERBOSE:-}" ] && echo "$change round $round: $(ms "$spent") ms" >&2
            done
        done
        [ -n "$recorder" ] && { kill -INT "$recorder"; wait "$recorder" || true; }
        printf '%6d services, %-5s: full view %s ms CPU (RSS %d MB)' "$n" "$mode" "$(ms "$full")" $((rss / 1024))
        for change in $CHANGES; do
            m=$(printf '%s' "${per[$change]}" | median)
            printf ', %s %s ms (1/%s)' "$change" "$(ms "$m")" "$(awk -v f="$full" -v m="$m" 'BEGIN { printf "%.0f", f / m }')"
        done
        echo
        kill "$proxy" "$control" 2>/dev/null || true
        wait "$proxy" "$control" 2>/dev/null || true
    done
done
