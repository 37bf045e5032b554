#!/usr/bin/env bash
# Where the private key lives, side by side in one run: full TLS 1.3 handshakes/s and
# the server's CPU per handshake (utime+stime from /proc/PID/stat over the run) with
# the key in memory, signed in cryptomb batches, and in a PKCS#11 token (SoftHSM2, the
# key imported into a token of this run's own), with nginx (key in memory) as the
# anchor. Every server has one worker; wrk opens a new connection per request.
#   bench/keys.sh [seconds per run, default 10]      KEY=ec for an ECDSA P-256 leaf
set -euo pipefail
cd "$(dirname "$0")/.."
. bench/common.sh
DURATION="${1:-10}"
MODULE=/usr/lib/softhsm/libsofthsm2.so
require wrk nginx openssl curl softhsm2-util "$TRELLIS"
[ -f "$MODULE" ] || { echo "missing $MODULE (Debian softhsm2)" >&2; exit 1; }
HZ=$(getconf CLK_TCK)

pki
mkdir -p "$WORK/tokens"
printf 'directories.tokendir = %s/tokens\nobjectstore.backend = file\nlog.level = ERROR\n' "$WORK" > "$WORK/softhsm2.conf"
export SOFTHSM2_CONF="$WORK/softhsm2.conf"
echo 1234 > "$WORK/pin"
softhsm2-util --init-token --free --label bench --so-pin 0000 --pin 1234 >/dev/null
openssl pkcs8 -topk8 -nocrypt -in "$WORK/server.key" -out "$WORK/server.p8"
softhsm2-util --import "$WORK/server.p8" --token bench --label server --id 01 --pin 1234 >/dev/null
TOKEN_KEY="pkcs11:token=bench;object=server?module-path=$MODULE&pin-source=file:$WORK/pin"

NGINX_TLS=$(free_port)
nginx_conf tls "server {
        listen 127.0.0.1:$NGINX_TLS ssl;
        ssl_certificate $WORK/server.pem; ssl_certificate_key $WORK/server.key;
        ssl_protocols TLSv1.3; ssl_session_cache off; ssl_session_tickets off;
        location / { return 200 'ok'; }
    }"
nginx -c "$WORK/tls.conf" & NGINX_PID=$!; PIDS+=($NGINX_PID)

declare -A PORT PID
proxy() { # $1 = label, $2 = private_key, $3 = provider (YAML, or empty)
    local port admin extra=""
    port=$(free_port); admin=$(free_port)
    [ -n "$3" ] && extra=", private_key_provider: $3"
    cat > "$WORK/$1.yaml" <<CONF
admin: { address: "127.0.0.1:$admin" }
listeners:
  - name: tls
    address: "127.0.0.1:$port"
    tls:
      certificates: [{ certificate_chain: "$WORK/server.pem", private_key: "$2"$extra }]
      session_resumption: false
    http:
      virtual_hosts:
        - name: all
          domains: ["*"]
          routes: [{ match: { prefix: "/" }, direct_response: { status: 200, body: "ok" } }]
CONF
    RUST_LOG=warn "$TRELLIS" proxy --config "$WORK/$1.yaml" --workers 1 & PIDS+=($!)
    PORT[$1]=$port; PID[$1]=$!
}
proxy memory "$WORK/server.key" ""
proxy cryptomb "$WORK/server.key" "{ cryptomb: { poll_delay: ${POLL_DELAY:-1ms}, fallback: true } }"
proxy pkcs11 "$TOKEN_KEY" ""
PORT[nginx]=$NGINX_TLS; PID[nginx]=$NGINX_PID
for label in memory cryptomb pkcs11 nginx; do
    for _ in $(seq 100); do curl -sfk -o /dev/null "https://127.0.0.1:${PORT[$label]}/" && break; sleep 0.05; done
done

# nginx's worker is the master's child: its CPU is the worker's.
nginx_worker() { pgrep -P "$NGINX_PID" | head -1; }
ticks() { awk '{print $14 + $15}' "/proc/$1/stat"; }

HS_CONNS="${HS_CONNS:-16}"
echo "machine: $(nproc) cores, $(awk -F': ' '/model name/ {print $2; exit}' /proc/cpuinfo), kernel $(uname -r)"
echo "handshakes: wrk -t1 -c$HS_CONNS -d${DURATION}s -H 'Connection: close', TLS 1.3, $([ "${KEY:-rsa}" = ec ] && echo 'ECDSA P-256' || echo 'RSA-2048') leaf, no resumption"
printf '%-10s %14s %10s %10s %22s\n' key "handshakes/s" "p50 ms" "p99 ms" "server CPU µs/handshake"
declare -A CPU
for label in memory cryptomb pkcs11 nginx; do
    url="https://127.0.0.1:${PORT[$label]}/"
    pid=${PID[$label]}; [ "$label" = nginx ] && pid=$(nginx_worker)
    wrk -t1 -c"$HS_CONNS" -d2s -H "Connection: close" "$url" >/dev/null
    before=$(ticks "$pid")
    out=$(wrk -t1 -c"$HS_CONNS" -d"${DURATION}s" --latency -H "Connection: close" "$url")
    after=$(ticks "$pid")
    n=$(awk '/requests in/ {print $1}' <<<"$out")
    RPS[$label]=$(awk '/Requests\/sec/ {print $2}' <<<"$out")
    P50[$label]=$(to_ms "$(awk '$1=="50%" {print $2}' <<<"$out")")
    P99[$label]=$(to_ms "$(awk '$1=="99%" {print $2}' <<<"$out")")
    CPU[$label]=$(awk -v t=$((after - before)) -v hz="$HZ" -v n="$n" 'BEGIN { printf "%.1f", t / hz * 1e6 / n }')
    printf '%-10s %14s %10s %10s %22s\n' "$label" "${RPS[$label]}" "${P50[$label]}" "${P99[$label]}" "${CPU[$label]}"
done
echo "pkcs11/memory server CPU per handshake $(ratio "${CPU[pkcs11]}" "${CPU[memory]}"), handshakes/s $(ratio "${RPS[pkcs11]}" "${RPS[memory]}")"
echo "cryptomb/memory server CPU per handshake $(ratio "${CPU[cryptomb]}" "${CPU[memory]}"); memory/nginx $(ratio "${CPU[memory]}" "${CPU[nginx]}")"
echo "(the token's own work runs on trellis's pkcs11 session threads: counted; SoftHSM2 computes in-process)"
