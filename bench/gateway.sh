#!/usr/bin/env bash
# An HTTPS ingress gateway side by side in one run: `trellis gateway` (configured by
# `trellis control` from an Istio Gateway with credentialName, the certificate over SDS,
# CryptoMB signing) vs nginx and HAProxy as TLS-terminating reverse proxies, each with
# one worker, in front of the same nginx backend (1 KiB). TLS 1.3, RSA-2048 leaf.
#   keep-alive:      wrk -t1 -c$CONNS, requests/s and p50/p99
#   new connections: wrk -t1 -c$HS_CONNS with `Connection: close` (a full handshake each)
# and each server's CPU per request, from /proc/PID/stat over the run (the load generator
# shares the cores, so this is the figure that does not depend on it).
# Usage: bench/gateway.sh [seconds per run, default 10]   (ROUNDS=2)
set -euo pipefail
cd "$(dirname "$0")/.."
. bench/common.sh
DURATION="${1:-10}"
ROUNDS="${ROUNDS:-2}"
HS_CONNS="${HS_CONNS:-16}"
require wrk nginx haproxy openssl curl python3 base64 "$TRELLIS"

pki
BACKEND=$(free_port); GW=$(free_port); NGINX=$(free_port); HAPROXY=$(free_port)
CA=$(free_port); GW_ADMIN=$(free_port)
start_backend "$BACKEND"

# The mesh: the backend as a service, the gateway's workload, its Gateway and route,
# and its credential as a Secret.
mkdir -p "$WORK/mesh"
cat > "$WORK/mesh/gateway.yaml" <<YAML
apiVersion: networking.istio.io/v1
kind: ServiceEntry
metadata: { name: backend, namespace: default }
spec:
  hosts: [backend.default.svc.cluster.local]
  location: MESH_INTERNAL
  resolution: STATIC
  ports: [{ number: 80, name: http, protocol: HTTP, targetPort: $BACKEND }]
  endpoints: [{ address: 127.0.0.1 }]
---
apiVersion: networking.istio.io/v1
kind: WorkloadEntry
metadata: { name: ingressgateway, namespace: default }
spec: { address: 127.0.0.1, labels: { istio: ingressgateway }, serviceAccount: ingressgateway }
---
apiVersion: networking.istio.io/v1
kind: Gateway
metadata: { name: ingress, namespace: default }
spec:
  selector: { istio: ingressgateway }
  servers:
    - port: { number: $GW, name: https, protocol: HTTPS }
      hosts: ["*"]
      tls: { mode: SIMPLE, credentialName: ingress-cert }
---
apiVersion: networking.istio.io/v1
kind: VirtualService
metadata: { name: backend, namespace: default }
spec:
  hosts: ["*"]
  gateways: [ingress]
  http: [{ route: [{ destination: { host: backend.default.svc.cluster.local, port: { number: 80 } } }] }]
---
apiVersion: v1
kind: Secret
metadata: { name: ingress-cert, namespace: default }
type: kubernetes.io/tls
data:
  tls.crt: $(base64 -w0 "$WORK/server.pem")
  tls.key: $(base64 -w0 "$WORK/server.key")
YAML
RUST_LOG=warn "$TRELLIS" control --config-dir "$WORK/mesh" --state-dir "$WORK/state" \
    --listen "127.0.0.1:$CA" --ready-file "$WORK/control.json" & PIDS+=($!)
for _ in $(seq 200); do [ -s "$WORK/control.json" ] && break; sleep 0.05; done
"$TRELLIS" ca --state-dir "$WORK/state" token --ttl 1h \
    --identity spiffe://cluster.local/ns/default/sa/ingressgateway > "$WORK/gw.token"
MB=()
if grep -q avx512ifma /proc/cpuinfo; then MB=(--cryptomb-poll-delay "${POLL_DELAY:-1ms}"); fi
RUST_LOG=warn "$TRELLIS" gateway --control "127.0.0.1:$CA" --ca-root "$WORK/state/root-cert.pem" \
    --token-file "$WORK/gw.token" --name ingressgateway --namespace default \
    --admin "127.0.0.1:$GW_ADMIN" --workers 1 "${MB[@]}" & PIDS+=($!)
GW_PID=$!

nginx_conf proxy "upstream backend { server 127.0.0.1:$BACKEND; keepalive 64; }
    server {
        listen 127.0.0.1:$NGINX ssl;
        ssl_certificate $WORK/server.pem; ssl_certificate_key $WORK/server.key;
        ssl_protocols TLSv1.3; ssl_session_cache off; ssl_session_tickets off;
        location / { proxy_pass http://backend; proxy_http_version 1.1; proxy_set_header Connection \"\"; }
    }"
nginx -c "$WORK/proxy.conf" & PIDS+=($!)
NGINX_PID=$!
cat "$WORK/server.pem" "$WORK/server.key" > "$WORK/haproxy.pem"
cat > "$WORK/haproxy.cfg" <<CFG
global
    nbthread 1
    tune.ssl.default-dh-param 2048
    ssl-default-bind-options ssl-min-ver TLSv1.3 no-tls-tickets
defaults
    mode http
    timeout connect 5s
    timeout client 30s
    timeout server 30s
    http-reuse always
frontend tls
    bind 127.0.0.1:$HAPROXY ssl crt $WORK/haproxy.pem
    default_backend app
backend app
    server b1 127.0.0.1:$BACKEND
CFG
haproxy -f "$WORK/haproxy.cfg" -db & PIDS+=($!)
HAPROXY_PID=$!

for port in $GW $NGINX $HAPROXY; do
    for _ in $(seq 200); do curl -sfk -o /dev/null "https://localhost:$port/1k" && break; sleep 0.05; done
    curl -sf --cacert "$WORK/root.pem" -o /dev/null "https://localhost:$port/1k" \
        || { echo "no HTTPS on $port" >&2; exit 1; }
done

# nginx's worker does the work (its master only supervises).
NGINX_PID=$(pgrep -P "$NGINX_PID" | head -1)
cpu_ticks() { awk '{print $14 + $15}' "/proc/$1/stat"; }
declare -A CPU
run() { # $1 = label, $2 = pid, $3 = url, $4... = wrk options
    local label="$1" pid="$2" url="$3"; shift 3
    wrk -t1 "$@" -d2s "$url" >/dev/null # warm-up
    local before; before=$(cpu_ticks "$pid")
    local out; out=$(wrk -t1 "$@" -d"${DURATION}s" --latency "$url")
    local after; after=$(cpu_ticks "$pid")
    local rps; rps=$(awk '/Requests\/sec/ {print $2}' <<<"$out")
    RPS[$label]=$rps
    P50[$label]=$(to_ms "$(awk '$1=="50%" {print $2}' <<<"$out")")
    P99[$label]=$(to_ms "$(awk '$1=="99%" {print $2}' <<<"$out")")
    # CPU µs per request: clock ticks (1/100 s) over the requests of the run.
    CPU[$label]=$(awk -v t="$((after - before))" -v r="$rps" -v d="$DURATION" 'BEGIN { printf "%.1f", t * 10000 / (r * d) }')
    local errors; errors=$(awk '/Non-2xx|Socket errors/' <<<"$out")
    [ -n "$errors" ] && echo "$label: $errors" >&2
    return 0
}

for round in $(seq "$ROUNDS"); do
    for t in "trellis:$GW_PID:$GW" "nginx:$NGINX_PID:$NGINX" "haproxy:$HAPROXY_PID:$HAPROXY"; do
        IFS=: read -r name pid port <<<"$t"
        run "$name keep-alive" "$pid" "https://localhost:$port/1k" -c"$CONNS"
        run "$name new conns" "$pid" "https://localhost:$port/1k" -c"$HS_CONNS" -H "Connection: close"
    done
    echo "round $round"
    echo "machine: $(nproc) cores, $(awk -F': ' '/model name/ {print $2; exit}' /proc/cpuinfo), kernel $(uname -r)"
    printf '%-24s %10s %9s %9s %14s\n' target "req/s" "p50 ms" "p99 ms" "CPU µs/req"
    for kind in "keep-alive" "new conns"; do
        for name in trellis nginx haproxy; do
            l="$name $kind"
            printf '%-24s %10s %9s %9s %14s\n' "$l" "${RPS[$l]}" "${P50[$l]}" "${P99[$l]}" "${CPU[$l]}"
        done
    done
    for kind in "keep-alive" "new conns"; do
        echo "$kind: trellis/nginx req/s $(ratio "${RPS[trellis $kind]}" "${RPS[nginx $kind]}"), trellis/haproxy $(ratio "${RPS[trellis $kind]}" "${RPS[haproxy $kind]}"); CPU/req trellis/nginx $(ratio "${CPU[trellis $kind]}" "${CPU[nginx $kind]}"), trellis/haproxy $(ratio "${CPU[trellis $kind]}" "${CPU[haproxy $kind]}")"
    done
done
echo "keep-alive: wrk -t1 -c$CONNS; new conns: wrk -t1 -c$HS_CONNS -H 'Connection: close'; ${DURATION}s each, TLS 1.3, RSA-2048, 1 worker each; trellis gateway signing: $([ ${#MB[@]} -gt 0 ] && echo "cryptomb (poll ${POLL_DELAY:-1ms})" || echo memory)"
