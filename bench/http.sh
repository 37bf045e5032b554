#!/usr/bin/env bash
# The data plane beside nginx and HAProxy, side by side in one run, rounds interleaved:
#   HTTP/1.1 keep-alive (wrk -t1): 32 conns × 1 KiB, 256 conns × 1 KiB, 32 conns × 64 KiB
#   HTTP/2 h2c (h2load, 32 conns × 10 streams, 1 KiB) to the proxies, HTTP/1.1 behind them
# Same nginx backend (one worker), each proxy with one worker. For every proxy: req/s,
# p50/p99, and its CPU per request (utime+stime from /proc/PID/stat over the run: the
# load generator shares the two cores, so this is the figure that does not depend on it),
# and trellis's memory idle and after the 256-connection load (anonymous / file-backed).
# Usage: bench/http.sh [seconds per run, default 10] [rounds, default 1]
set -euo pipefail
cd "$(dirname "$0")/.."
. bench/common.sh
DURATION="${1:-10}"
ROUNDS="${2:-1}"
HZ=$(getconf CLK_TCK)
require wrk h2load nginx haproxy curl python3 "$TRELLIS"

BACKEND=$(free_port); NGINX=$(free_port); HAPROXY=$(free_port); TRELLIS_PORT=$(free_port); ADMIN=$(free_port)
NGINX_H2=$(free_port); HAPROXY_H2=$(free_port); TRELLIS_H2=$(free_port)
head -c 1024 /dev/zero | tr '\0' x > "$WORK/1k"
head -c 65536 /dev/zero | tr '\0' y > "$WORK/64k"
chmod 644 "$WORK/1k" "$WORK/64k"
# The backend answers /64k with 64 KiB and every other path with 1 KiB.
nginx_conf backend "server { listen 127.0.0.1:$BACKEND; root $WORK;
    location = /64k { try_files /64k =404; } location / { try_files /1k =404; } }"
nginx_conf proxy "upstream be { server 127.0.0.1:$BACKEND; keepalive 64; }
    server { listen 127.0.0.1:$NGINX; listen 127.0.0.1:$NGINX_H2 http2;
        location / { proxy_pass http://be; proxy_http_version 1.1; proxy_set_header Connection \"\"; } }"
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
    bind 127.0.0.1:$HAPROXY_H2 proto h2
    default_backend be
backend be
    server s1 127.0.0.1:$BACKEND
CONF
cat > "$WORK/trellis.yaml" <<CONF
admin: { address: "127.0.0.1:$ADMIN" }
listeners:
$(listener bench "$TRELLIS_PORT")
$(listener bench-h2 "$TRELLIS_H2")
clusters:
  - name: backend
    endpoints: ["127.0.0.1:$BACKEND"]
CONF

nginx -c "$WORK/backend.conf" & PIDS+=($!)
nginx -c "$WORK/proxy.conf" & NPID=$!; PIDS+=($NPID)
haproxy -f "$WORK/haproxy.cfg" -db >/dev/null 2>&1 & HPID=$!; PIDS+=($HPID)
RUST_LOG=warn "$TRELLIS" proxy --config "$WORK/trellis.yaml" --workers 1 & TPID=$!; PIDS+=($TPID)
for port in $BACKEND $NGINX $HAPROXY $TRELLIS_PORT $TRELLIS_H2; do wait_http "http://127.0.0.1:$port/1k"; done
# nginx serves from its worker, not the master we started.
NWORKER=$(pgrep -P "$NPID" | head -1)

# RSS split as the kernel counts it: anonymous (the process's own) and file-backed
# (the binary and shared libraries, shared and reclaimable).
memory() { awk '/^VmRSS/ {r=$2} /^RssAnon/ {a=$2} /^RssFile/ {f=$2} END {printf "%d KiB (anon %d, file %d)", r, a, f}' "/proc/$1/status"; }
IDLE_MEM=$(memory "$TPID")

cpu_ticks() { awk '{print $14 + $15}' "/proc/$1/stat"; }
declare -A PID=([trellis]=$TPID [nginx]=$NWORKER [haproxy]=$HPID [direct]="")
declare -A H1=([direct]=$BACKEND [trellis]=$TRELLIS_PORT [nginx]=$NGINX [haproxy]=$HAPROXY)
declare -A H2=([trellis]=$TRELLIS_H2 [nginx]=$NGINX_H2 [haproxy]=$HAPROXY_H2)
declare -A SUM_RPS SUM_US SUM_P99 N

record() { # $1 = key, $2 = req/s, $3 = p99 ms, $4 = µs per request
    SUM_RPS[$1]=$(awk -v a="${SUM_RPS[$1]:-0}" -v b="$2" 'BEGIN { print a + b }')
    SUM_P99[$1]=$(awk -v a="${SUM_P99[$1]:-0}" -v b="$3" 'BEGIN { print a + b }')
    SUM_US[$1]=$(awk -v a="${SUM_US[$1]:-0}" -v b="$4" 'BEGIN { print a + b }')
    N[$1]=$(( ${N[$1]:-0} + 1 ))
}

per_request() { # $1 = ticks, $2 = requests
    awk -v t="$1" -v hz="$HZ" -v n="$2" 'BEGIN { if (n > 0) printf "%.2f", t / hz * 1e6 / n; else print 0 }'
}

h1_run() { # $1 = target, $2 = connections, $3 = path
    local url="http://127.0.0.1:${H1[$1]}$3" pid=${PID[$1]} before=0 after=0 out
    wrk -t1 -c"$2" -d2s "$url" >/dev/null # warm-up
    [ -n "$pid" ] && before=$(cpu_ticks "$pid")
    out=$(wrk -t1 -c"$2" -d"${DURATION}s" --latency "$url")
    [ -n "$pid" ] && after=$(cpu_ticks "$pid")
    local errors; errors=$(awk '/Non-2xx|Socket errors/' <<<"$out")
    [ -n "$errors" ] && echo "$1 $2 $3: $errors" >&2
    local rps p50 p99 n us
    rps=$(awk '/Requests\/sec/ {print $2}' <<<"$out")
    p50=$(to_ms "$(awk '$1=="50%" {print $2}' <<<"$out")")
    p99=$(to_ms "$(awk '$1=="99%" {print $2}' <<<"$out")")
    n=$(awk '/requests in/ {print $1}' <<<"$out")
    us=$(per_request $((after - before)) "$n")
    printf '%-16s %-8s %5s %10s %8s %8s %10s\n' "h1 ${2}x${3#/}" "$1" "$round" "$rps" "$p50" "$p99" "$us"
    record "h1 ${2}x${3#/} $1" "$rps" "$p99" "$us"
}

h2_run() { # $1 = target
    local url="http://127.0.0.1:${H2[$1]}/1k" pid=${PID[$1]} before after out
    h2load -c32 -m10 -D2 "$url" >/dev/null # warm-up
    before=$(cpu_ticks "$pid")
    out=$(h2load -c32 -m10 -D"$DURATION" "$url")
    after=$(cpu_ticks "$pid")
    local rps n us failed p50
    rps=$(awk '/^finished in/ {gsub(",", "", $4); print $4}' <<<"$out")
    n=$(awk '/^requests:/ {print $8}' <<<"$out")
    failed=$(awk '/^requests:/ {print $10}' <<<"$out")
    [ "$failed" != 0 ] && echo "$1 h2: $failed failed" >&2
    p50=$(awk '/^time for request:/ {print $6}' <<<"$out")
    us=$(per_request $((after - before)) "$n")
    printf '%-16s %-8s %5s %10s %8s %8s %10s\n' "h2 32x10" "$1" "$round" "$rps" "mean $(to_ms "$p50")" "-" "$us"
    record "h2 32x10 $1" "$rps" 0 "$us"
}

echo "machine: $(nproc) cores, $(awk -F': ' '/model name/ {print $2; exit}' /proc/cpuinfo), kernel $(uname -r)"
echo "${DURATION}s per run, $ROUNDS round(s), targets interleaved; backend nginx (1 worker)"
printf '%-16s %-8s %5s %10s %8s %8s %10s\n' shape target round "req/s" "p50 ms" "p99 ms" "CPU µs/req"
LOADED_MEM=""
for round in $(seq "$ROUNDS"); do
    for shape in "32 /1k" "256 /1k" "32 /64k"; do
        read -r conns path <<<"$shape"
        for t in direct trellis nginx haproxy; do h1_run "$t" "$conns" "$path"; done
        [ "$conns" = 256 ] && LOADED_MEM=$(memory "$TPID")
    done
    for t in trellis nginx haproxy; do h2_run "$t"; done
done

echo
echo "ratios over $ROUNDS round(s) (req/s, p99, CPU per request; CPU < 1 is better):"
for shape in "h1 32x1k" "h1 256x1k" "h1 32x64k"; do
    for anchor in haproxy nginx; do
        a="$shape trellis" b="$shape $anchor"
        echo "$shape trellis/$anchor: req/s $(ratio "${SUM_RPS[$a]}" "${SUM_RPS[$b]}")  p99 $(ratio "${SUM_P99[$a]}" "${SUM_P99[$b]}")  CPU/req $(ratio "${SUM_US[$a]}" "${SUM_US[$b]}")"
    done
done
for anchor in nginx haproxy; do
    a="h2 32x10 trellis" b="h2 32x10 $anchor"
    echo "h2 32x10 trellis/$anchor: req/s $(ratio "${SUM_RPS[$a]}" "${SUM_RPS[$b]}")  CPU/req $(ratio "${SUM_US[$a]}" "${SUM_US[$b]}")"
done
echo "trellis memory: idle $IDLE_MEM; after 256 connections $LOADED_MEM"
