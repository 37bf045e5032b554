#!/usr/bin/env bash
# HTTP/1.1 proxy throughput and latency, side by side in one run:
#   direct to the backend | trellis proxy | nginx | HAProxy
# Same backend (nginx serving a 1 KiB file, one worker), same load (wrk, one
# thread, keep-alive, 32 connections), each proxy with one worker thread.
# Usage: bench/http.sh [seconds per run, default 10]
set -euo pipefail
cd "$(dirname "$0")/.."
DURATION="${1:-10}"
CONNS=32
TRELLIS=./target/release/trellis
for tool in wrk nginx haproxy "$TRELLIS"; do
    command -v "$tool" >/dev/null || { echo "missing $tool (run ./run bench)" >&2; exit 1; }
done

WORK="$(mktemp -d /tmp/trellis-bench.XXXXXX)"
PIDS=()
cleanup() {
    for p in "${PIDS[@]}"; do kill "$p" 2>/dev/null || true; done
    wait 2>/dev/null || true
    rm -rf "$WORK"
}
trap cleanup EXIT

free_port() { python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])'; }
BACKEND=$(free_port); NGINX=$(free_port); HAPROXY=$(free_port); TRELLIS_PORT=$(free_port); ADMIN=$(free_port)

head -c 1024 /dev/zero | tr '\0' x > "$WORK/1k"
chmod 755 "$WORK"; chmod 644 "$WORK/1k"
nginx_conf() { # $1 = name, $2 = server block
    cat > "$WORK/$1.conf" <<CONF
worker_processes 1;
daemon off;
pid $WORK/$1.pid;
error_log $WORK/$1.err warn;
events { worker_connections 4096; }
http {
    access_log off;
    keepalive_requests 1000000;
    client_body_temp_path $WORK/$1-body;
    proxy_temp_path $WORK/$1-proxy;
    fastcgi_temp_path $WORK/$1-fcgi;
    uwsgi_temp_path $WORK/$1-uwsgi;
    scgi_temp_path $WORK/$1-scgi;
    $2
}
CONF
}
nginx_conf backend "server { listen 127.0.0.1:$BACKEND; location / { root $WORK; } }"
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

nginx -c "$WORK/backend.conf" & PIDS+=($!)
nginx -c "$WORK/proxy.conf" & PIDS+=($!)
haproxy -f "$WORK/haproxy.cfg" -db >/dev/null 2>&1 & PIDS+=($!)
RUST_LOG=warn "$TRELLIS" proxy --config "$WORK/trellis.yaml" --workers 1 & TPID=$!; PIDS+=($TPID)
for port in $BACKEND $NGINX $HAPROXY $TRELLIS_PORT; do
    for _ in $(seq 100); do curl -sf -o /dev/null "http://127.0.0.1:$port/1k" && break; sleep 0.05; done
done
rss_kb() { awk '/VmRSS/ {print $2}' "/proc/$1/status"; }
IDLE_RSS=$(rss_kb $TPID)

# wrk prints latency percentiles with units; normalise to milliseconds.
to_ms() { awk -v v="$1" 'BEGIN { n=v+0; if (v ~ /us$/) n/=1000; else if (v ~ /ms$/) n=n; else if (v ~ /s$/) n*=1000; printf "%.3f", n }'; }
declare -A RPS P50 P99
run() { # $1 = label, $2 = port
    curl -sf -o /dev/null "http://127.0.0.1:$2/1k"
    wrk -t1 -c"$CONNS" -d2s "http://127.0.0.1:$2/1k" >/dev/null # warm-up
    local out; out=$(wrk -t1 -c"$CONNS" -d"${DURATION}s" --latency "http://127.0.0.1:$2/1k")
    RPS[$1]=$(awk '/Requests\/sec/ {print $2}' <<<"$out")
    P50[$1]=$(to_ms "$(awk '$1=="50%" {print $2}' <<<"$out")")
    P99[$1]=$(to_ms "$(awk '$1=="99%" {print $2}' <<<"$out")")
    local errors; errors=$(awk '/Non-2xx|Socket errors/' <<<"$out")
    [ -n "$errors" ] && echo "$1: $errors" >&2
    return 0
}
run direct "$BACKEND"
run trellis "$TRELLIS_PORT"
run nginx "$NGINX"
run haproxy "$HAPROXY"
LOADED_RSS=$(rss_kb $TPID)

echo "machine: $(nproc) cores, $(awk -F': ' '/model name/ {print $2; exit}' /proc/cpuinfo), kernel $(uname -r)"
echo "load: wrk -t1 -c$CONNS -d${DURATION}s, 1 KiB responses, keep-alive; backend nginx (1 worker)"
printf '%-8s %12s %10s %10s\n' target "req/s" "p50 ms" "p99 ms"
for t in direct trellis nginx haproxy; do
    printf '%-8s %12s %10s %10s\n' "$t" "${RPS[$t]}" "${P50[$t]}" "${P99[$t]}"
done
ratio() { awk -v a="$1" -v b="$2" 'BEGIN { printf "%.2f", a/b }'; }
echo "trellis/haproxy rps $(ratio "${RPS[trellis]}" "${RPS[haproxy]}")  p99 $(ratio "${P99[trellis]}" "${P99[haproxy]}")"
echo "trellis/nginx   rps $(ratio "${RPS[trellis]}" "${RPS[nginx]}")  p99 $(ratio "${P99[trellis]}" "${P99[nginx]}")"
echo "trellis RSS: idle ${IDLE_RSS} KiB, after load ${LOADED_RSS} KiB"
