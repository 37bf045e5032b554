#!/usr/bin/env bash
# What held connections cost, trellis beside nginx and HAProxy (one worker each, same
# nginx backend), and whether trellis's memory comes back after load:
#   idle       9 000 keep-alive connections, one request each, then held
#   slowloris   2 000 connections sending a request's headers a byte a second
#   churn       rounds of 9 000 connections opened, used once and closed; trellis's
#               RSS 10 s after each round, against its idle figure
# RSS is the serving process's (nginx's worker), anonymous and file-backed apart.
# HAProxy needs two fds per connection it may hold; where the hard fd limit is 20 000 (as
# on the machines this runs on) it cannot take 10 000, so the default is 9 000.
# Usage: bench/idle.sh [idle connections, default 9000] [churn rounds, default 4]
set -euo pipefail
cd "$(dirname "$0")/.."
. bench/common.sh
IDLE="${1:-9000}"
CHURN_ROUNDS="${2:-4}"
SLOW=2000
require nginx haproxy curl python3 "$TRELLIS"
ulimit -n "$(ulimit -Hn)"  # 10 000 connections need more than the default 1 024 fds

BACKEND=$(free_port); NGINX=$(free_port); HAPROXY=$(free_port); TRELLIS_PORT=$(free_port); ADMIN=$(free_port)
start_backend "$BACKEND"
nginx_conf proxy "upstream be { server 127.0.0.1:$BACKEND; keepalive 64; }
    server { listen 127.0.0.1:$NGINX backlog=4096;
        location / { proxy_pass http://be; proxy_http_version 1.1; proxy_set_header Connection \"\"; } }"
sed -i 's/worker_connections 4096/worker_connections 19000/; s/^worker_processes 1;/worker_processes 1;\nworker_rlimit_nofile 20000;/' "$WORK/proxy.conf"
cat > "$WORK/haproxy.cfg" <<CONF
global
    nbthread 1
    maxconn $((IDLE + 500))
    ulimit-n $(ulimit -Hn)
defaults
    mode http
    maxconn $((IDLE + 500))
    timeout connect 5s
    timeout client 60s
    timeout server 60s
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
$(listener bench "$TRELLIS_PORT")
clusters:
  - name: backend
    endpoints: ["127.0.0.1:$BACKEND"]
CONF
nginx -c "$WORK/proxy.conf" & NPID=$!; PIDS+=($NPID)
haproxy -f "$WORK/haproxy.cfg" -db >/dev/null 2>&1 & HPID=$!; PIDS+=($HPID)
RUST_LOG=warn "$TRELLIS" proxy --config "$WORK/trellis.yaml" --workers 1 & TPID=$!; PIDS+=($TPID)
for port in $BACKEND $NGINX $HAPROXY $TRELLIS_PORT; do wait_http "http://127.0.0.1:$port/1k"; done
NWORKER=$(pgrep -P "$NPID" | head -1)
declare -A PID=([trellis]=$TPID [nginx]=$NWORKER [haproxy]=$HPID)
declare -A PORT=([trellis]=$TRELLIS_PORT [nginx]=$NGINX [haproxy]=$HAPROXY)

rss() { awk '/^VmRSS/ {print $2}' "/proc/$1/status"; }
memory() { awk '/^VmRSS/ {r=$2} /^RssAnon/ {a=$2} /^RssFile/ {f=$2} END {printf "%d KiB (anon %d, file %d)", r, a, f}' "/proc/$1/status"; }

# Runs the client in the background until it is ready; `release` lets it go.
hold() { # $1 = port, $2 = connections, $3 = mode
    rm -f "$WORK/ctl" "$WORK/client.out"; mkfifo "$WORK/ctl"
    python3 bench/idle_client.py "$1" "$2" "$3" < "$WORK/ctl" > "$WORK/client.out" & CLIENT=$!
    exec 3>"$WORK/ctl"
    for _ in $(seq 600); do grep -q ready "$WORK/client.out" 2>/dev/null && return 0; sleep 0.1; done
    echo "client never ready ($3 on $1)" >&2; exit 1
}
release() { echo >&3; exec 3>&-; wait "$CLIENT" || true; sleep 1; }

echo "machine: $(nproc) cores, $(awk -F': ' '/model name/ {print $2; exit}' /proc/cpuinfo), kernel $(uname -r)"
printf '%-8s %30s %36s %14s %16s\n' target "idle RSS" "with $IDLE idle conns" "per conn" "+$SLOW slowloris"
declare -A BASE
for t in ${TARGETS:-trellis nginx haproxy}; do
    pid=${PID[$t]}
    BASE[$t]=$(rss "$pid")
    base_mem=$(memory "$pid")
    hold "${PORT[$t]}" "$IDLE" idle
    held=$(rss "$pid"); held_mem=$(memory "$pid")
    release
    after_idle=$(rss "$pid")
    hold "${PORT[$t]}" "$SLOW" slowloris
    slow=$(rss "$pid")
    release
    per=$(awk -v a="$held" -v b="${BASE[$t]}" -v n="$IDLE" 'BEGIN { printf "%.1f KiB", (a - b) / n }')
    printf '%-8s %30s %36s %14s %13s KiB\n' "$t" "$base_mem" "$held_mem" "$per" "$((slow - after_idle))"
done

echo
echo "trellis, $CHURN_ROUNDS rounds of $IDLE connections opened, used once and closed (RSS 10 s after each; idle ${BASE[trellis]} KiB):"
for round in $(seq "$CHURN_ROUNDS"); do
    hold "$TRELLIS_PORT" "$IDLE" idle
    peak=$(rss "$TPID")
    release
    sleep 9
    after=$(rss "$TPID")
    echo "round $round: $peak KiB held, $after KiB 10 s after ($(ratio "$after" "${BASE[trellis]}")× idle)"
done
