#!/usr/bin/env bash
# TLS benchmarks, side by side in one run:
#  1. Full TLS 1.3 handshakes per second with an RSA-2048 certificate: trellis proxy
#     vs nginx, same certificate, same client (wrk over https with `Connection: close`,
#     so every request is a new connection and a full handshake; no session reuse).
#  2. The mesh path app -> sidecar -> mTLS -> sidecar -> app vs direct: requests/s and
#     p50/p99 with keep-alive (wrk, one thread, 32 connections).
#  The cryptomb provider runs twice: batches inline on the worker (default) and on its
#  own thread (`inline: false`). KEY=ec uses an ECDSA P-256 server certificate instead.
# Every server has one worker. Usage: bench/tls.sh [seconds per run, default 10]
set -euo pipefail
cd "$(dirname "$0")/.."
. bench/common.sh
DURATION="${1:-10}"
require wrk nginx openssl curl python3 "$TRELLIS"

pki

NGINX_TLS=$(free_port); TRELLIS_TLS=$(free_port); ADMIN1=$(free_port); MB_TLS=$(free_port); ADMIN4=$(free_port)
MB_THREAD_TLS=$(free_port); ADMIN5=$(free_port)
BACKEND=$(free_port); INBOUND=$(free_port); OUTBOUND=$(free_port); ADMIN2=$(free_port); ADMIN3=$(free_port)

nginx_conf tls "server {
        listen 127.0.0.1:$NGINX_TLS ssl;
        ssl_certificate $WORK/server.pem; ssl_certificate_key $WORK/server.key;
        ssl_protocols TLSv1.3; ssl_session_cache off; ssl_session_tickets off;
        location / { return 200 'ok'; }
    }"
cat > "$WORK/handshake.yaml" <<CONF
admin: { address: "127.0.0.1:$ADMIN1" }
listeners:
  - name: tls
    address: "127.0.0.1:$TRELLIS_TLS"
    tls:
      certificates: [{ certificate_chain: "$WORK/server.pem", private_key: "$WORK/server.key" }]
      session_resumption: false   # as nginx below: every handshake is a full one
    http:
      virtual_hosts:
        - name: all
          domains: ["*"]
          routes: [{ match: { prefix: "/" }, direct_response: { status: 200, body: "ok" } }]
CONF
sed -e "s/$ADMIN1/$ADMIN4/; s/$TRELLIS_TLS/$MB_TLS/" \
    -e 's|private_key: "\([^"]*\)" }|private_key: "\1", private_key_provider: { cryptomb: { poll_delay: '"${POLL_DELAY:-1ms}"' } } }|' \
    "$WORK/handshake.yaml" > "$WORK/handshake-mb.yaml"
sed -e "s/$ADMIN4/$ADMIN5/; s/$MB_TLS/$MB_THREAD_TLS/" -e 's|poll_delay: \([^ ]*\) }|poll_delay: \1, inline: false }|' \
    "$WORK/handshake-mb.yaml" > "$WORK/handshake-mb-thread.yaml"
mesh_configs "$INBOUND" "$OUTBOUND" "$ADMIN2" "$ADMIN3" "$BACKEND"

start_backend "$BACKEND"
nginx -c "$WORK/tls.conf" & PIDS+=($!)
RUST_LOG=warn "$TRELLIS" proxy --config "$WORK/handshake.yaml" --workers 1 & PIDS+=($!)
RUST_LOG=warn "$TRELLIS" proxy --config "$WORK/handshake-mb.yaml" --workers 1 & PIDS+=($!)
RUST_LOG=warn "$TRELLIS" proxy --config "$WORK/handshake-mb-thread.yaml" --workers 1 & PIDS+=($!)
RUST_LOG=warn "$TRELLIS" proxy --config "$WORK/inbound.yaml" --workers 1 & PIDS+=($!)
RUST_LOG=warn "$TRELLIS" proxy --config "$WORK/outbound.yaml" --workers 1 & PIDS+=($!)
wait_http "http://127.0.0.1:$BACKEND/1k"
wait_http "http://127.0.0.1:$OUTBOUND/1k"
for port in $NGINX_TLS $TRELLIS_TLS $MB_TLS $MB_THREAD_TLS; do
    for _ in $(seq 100); do curl -sfk -o /dev/null "https://127.0.0.1:$port/" && break; sleep 0.05; done
done

# 1. Handshakes: every request on a new connection.
HS_CONNS="${HS_CONNS:-16}"
handshakes() { # $1 = label, $2 = url
    wrk -t1 -c"$HS_CONNS" -d2s -H "Connection: close" "$2" >/dev/null
    local out; out=$(wrk -t1 -c"$HS_CONNS" -d"${DURATION}s" --latency -H "Connection: close" "$2")
    RPS[$1]=$(awk '/Requests\/sec/ {print $2}' <<<"$out")
    P50[$1]=$(to_ms "$(awk '$1=="50%" {print $2}' <<<"$out")")
    P99[$1]=$(to_ms "$(awk '$1=="99%" {print $2}' <<<"$out")")
}
metric() { curl -s "http://127.0.0.1:$1/stats/prometheus" | awk -v m="$2" 'index($0, m) == 1 {print $NF}'; }
SIGNS='trellis_private_key_operations_total{provider="memory",op="sign",result="success"}'
BEFORE=$(metric "$ADMIN1" 'trellis_downstream_tls_handshakes_total{listener="tls",result="success"}')
SIGNS_BEFORE=$(metric "$ADMIN1" "$SIGNS"); SIGNS_BEFORE=${SIGNS_BEFORE:-0}
handshakes "trellis handshakes" "https://127.0.0.1:$TRELLIS_TLS/"
AFTER=$(metric "$ADMIN1" 'trellis_downstream_tls_handshakes_total{listener="tls",result="success"}')
SIGNS_AFTER=$(metric "$ADMIN1" "$SIGNS")
handshakes "nginx handshakes" "https://127.0.0.1:$NGINX_TLS/"
handshakes "trellis cryptomb handshakes" "https://127.0.0.1:$MB_TLS/"
fills() { curl -s "http://127.0.0.1:$1/stats/prometheus" | awk -F'[="}]' '/^trellis_cryptomb_batches_total/ {printf "%s:%s ", $3, $NF}'; }
FILLS=$(fills "$ADMIN4")
handshakes "trellis cryptomb thread" "https://127.0.0.1:$MB_THREAD_TLS/"
FILLS_THREAD=$(fills "$ADMIN5")

# 2. The mesh path with keep-alive.
measure "direct" "http://127.0.0.1:$BACKEND/1k" "$DURATION"
measure "sidecar-mTLS-sidecar" "http://127.0.0.1:$OUTBOUND/1k" "$DURATION"

print_table "trellis handshakes" "trellis cryptomb handshakes" "trellis cryptomb thread" "nginx handshakes" direct "sidecar-mTLS-sidecar"
echo "handshakes: wrk -t1 -c$HS_CONNS -d${DURATION}s -H 'Connection: close' over TLS 1.3, $([ "${KEY:-rsa}" = ec ] && echo 'ECDSA P-256' || echo 'RSA-2048') leaf, 1 worker each"
echo "trellis during its run: $(awk -v a="$AFTER" -v b="$BEFORE" 'BEGIN {print a-b}') handshakes, $(awk -v a="$SIGNS_AFTER" -v b="$SIGNS_BEFORE" 'BEGIN {print a-b}') signatures (one per full handshake; resumed ones sign nothing)"
echo "trellis/nginx handshakes/s $(ratio "${RPS[trellis handshakes]}" "${RPS[nginx handshakes]}")"
echo "cryptomb/default provider handshakes/s $(ratio "${RPS[trellis cryptomb handshakes]}" "${RPS[trellis handshakes]}"), cryptomb/nginx $(ratio "${RPS[trellis cryptomb handshakes]}" "${RPS[nginx handshakes]}")"
echo "cryptomb (inline) batches by fill (fill:count): $FILLS (poll_delay ${POLL_DELAY:-1ms})"
echo "cryptomb inline/thread handshakes/s $(ratio "${RPS[trellis cryptomb handshakes]}" "${RPS[trellis cryptomb thread]}"); thread batches by fill: $FILLS_THREAD"
echo "mesh path: wrk -t1 -c$CONNS -d${DURATION}s keep-alive, 1 KiB; mesh/direct rps $(ratio "${RPS[sidecar-mTLS-sidecar]}" "${RPS[direct]}"), p50 +$(awk -v a="${P50[sidecar-mTLS-sidecar]}" -v b="${P50[direct]}" 'BEGIN {printf "%.3f", a-b}') ms"
