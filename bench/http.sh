#!/usr/bin/env bash
# HTTP/1.1 proxy throughput and latency, side by side in one run:
#   direct to the backend | trellis proxy | nginx | HAProxy
# Same backend (nginx serving a 1 KiB file, one worker), same load (wrk, one
# thread, keep-alive, 32 connections), each proxy with one worker thread.
# Usage: bench/http.sh [seconds per run, default 10]
set -euo pipefail
cd "$(dirname "$0")/.."
. bench/common.sh
DURATION="${1:-10}"
require wrk nginx haproxy curl python3 "$TRELLIS"

BACKEND=$(free_port); NGINX=$(free_port); HAPROXY=$(free_port); TRELLIS_PORT=$(free_port); ADMIN=$(free_port)
start_backend "$BACKEND"
nginx_conf proxy "upstream be { server 127.0.0.1:$BACKEND; keepalive 64; }
    server { listen 127.0.0.1:$NGINX; location / { proxy_pass http://be; proxy_http_version 1.1; proxy_set_header Connection \"\"; } }"
cat > "$WORK/haproxy.cfg" <<CONF
global
    nbthread 1
    maxconn 4096
defaults
    mode http
    timeout connect 5s
    timeout client 30s
    timeout server 30s
    option http-keep-alive
    http-reuse always
frontend fe
    bind 127.0.0.1:$HAPROXY
    default_backend be
backend be
    server s1 127.0.0.1:$BACKEND
CONF
cat > "$WORK/trellis.yaml" <<CONF
admin: { address: "127.0.0.1:$ADMIN" }
listeners:
  - name: bench
    address: "127.0.0.1:$TRELLIS_PORT"
    http:
      virtual_hosts:
        - name: all
          domains: ["*"]
          routes:
            - match: { prefix: "/" }
              route: { cluster: backend }
clusters:
  - name: backend
    endpoints: ["127.0.0.1:$BACKEND"]
CONF

nginx -c "$WORK/proxy.conf" & PIDS+=($!)
haproxy -f "$WORK/haproxy.cfg" -db >/dev/null 2>&1 & PIDS+=($!)
RUST_LOG=warn "$TRELLIS" proxy --config "$WORK/trellis.yaml" --workers 1 & TPID=$!; PIDS+=($TPID)
for port in $BACKEND $NGINX $HAPROXY $TRELLIS_PORT; do wait_http "http://127.0.0.1:$port/1k"; done
IDLE_RSS=$(rss_kb $TPID)

measure direct "http://127.0.0.1:$BACKEND/1k" "$DURATION"
measure trellis "http://127.0.0.1:$TRELLIS_PORT/1k" "$DURATION"
measure nginx "http://127.0.0.1:$NGINX/1k" "$DURATION"
measure haproxy "http://127.0.0.1:$HAPROXY/1k" "$DURATION"
LOADED_RSS=$(rss_kb $TPID)

print_table direct trellis nginx haproxy
echo "load: wrk -t1 -c$CONNS -d${DURATION}s, 1 KiB responses, keep-alive; backend nginx (1 worker)"
echo "trellis/haproxy rps $(ratio "${RPS[trellis]}" "${RPS[haproxy]}")  p99 $(ratio "${P99[trellis]}" "${P99[haproxy]}")"
echo "trellis/nginx   rps $(ratio "${RPS[trellis]}" "${RPS[nginx]}")  p99 $(ratio "${P99[trellis]}" "${P99[nginx]}")"
echo "trellis RSS: idle ${IDLE_RSS} KiB, after load ${LOADED_RSS} KiB"
