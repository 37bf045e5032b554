# Shared by the bench scripts: temp dir, cleanup, ports, an nginx backend, wrk runs.
# Source it after `set -euo pipefail`.
CONNS="${CONNS:-32}"
TRELLIS=./target/release/trellis
WORK="$(mktemp -d /tmp/trellis-bench.XXXXXX)"
chmod 755 "$WORK"
PIDS=()
cleanup() {
    for p in "${PIDS[@]}"; do kill "$p" 2>/dev/null || true; done
    wait 2>/dev/null || true
    rm -rf "$WORK"
}
trap cleanup EXIT

require() {
    for tool in "$@"; do
        command -v "$tool" >/dev/null || { echo "missing $tool (run ./run bench)" >&2; exit 1; }
    done
}

free_port() { python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])'; }

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

# An nginx backend (one worker) answering every path with the same 1 KiB file.
start_backend() { # $1 = port
    head -c 1024 /dev/zero | tr '\0' x > "$WORK/1k"
    chmod 644 "$WORK/1k"
    nginx_conf backend "server { listen 127.0.0.1:$1; location / { root $WORK; try_files /1k =404; } }"
    nginx -c "$WORK/backend.conf" & PIDS+=($!)
}

wait_http() { # $1 = url
    for _ in $(seq 100); do curl -sf -o /dev/null "$1" && return 0; sleep 0.05; done
    echo "never answered: $1" >&2; exit 1
}

# A trellis listener (YAML, under `listeners:`) routing every request to the cluster
# `backend`.
listener() { # $1 = name, $2 = port
    cat <<CONF
  - name: $1
    address: "127.0.0.1:$2"
    http:
      virtual_hosts:
        - name: all
          domains: ["*"]
          routes:
            - match: { prefix: "/" }
              route: { cluster: backend }
CONF
}

rss_kb() { awk '/VmRSS/ {print $2}' "/proc/$1/status"; }

# wrk prints latency percentiles with units; normalise to milliseconds.
to_ms() { awk -v v="$1" 'BEGIN { n=v+0; if (v ~ /us$/) n/=1000; else if (v ~ /ms$/) n=n; else if (v ~ /s$/) n*=1000; printf "%.3f", n }'; }

declare -A RPS P50 P99
measure() { # $1 = label, $2 = url, $3 = seconds
    curl -sf -o /dev/null "$2"
    wrk -t1 -c"$CONNS" -d2s "$2" >/dev/null # warm-up
    local out; out=$(wrk -t1 -c"$CONNS" -d"$3s" --latency "$2")
    RPS[$1]=$(awk '/Requests\/sec/ {print $2}' <<<"$out")
    P50[$1]=$(to_ms "$(awk '$1=="50%" {print $2}' <<<"$out")")
    P99[$1]=$(to_ms "$(awk '$1=="99%" {print $2}' <<<"$out")")
    local errors; errors=$(awk '/Non-2xx|Socket errors/' <<<"$out")
    [ -n "$errors" ] && echo "$1: $errors" >&2
    return 0
}

ratio() { awk -v a="$1" -v b="$2" 'BEGIN { printf "%.2f", a/b }'; }

print_table() { # labels...
    echo "machine: $(nproc) cores, $(awk -F': ' '/model name/ {print $2; exit}' /proc/cpuinfo), kernel $(uname -r)"
    printf '%-22s %12s %10s %10s\n' target "req/s" "p50 ms" "p99 ms"
    for t in "$@"; do
        printf '%-22s %12s %10s %10s\n' "$t" "${RPS[$t]}" "${P50[$t]}" "${P99[$t]}"
    done
}

# An RSA-2048 PKI: a root, a server leaf for localhost, and two SPIFFE sidecar leaves.
pki() {
    cd "$WORK"
    openssl req -x509 -newkey rsa:2048 -nodes -days 2 -keyout root.key -out root.pem \
        -subj "/O=bench/CN=root" -addext "basicConstraints=critical,CA:TRUE" \
        -addext "keyUsage=critical,keyCertSign" 2>/dev/null
    for leaf in "server:DNS:localhost" \
        "frontend:URI:spiffe://cluster.local/ns/default/sa/frontend" \
        "reviews:URI:spiffe://cluster.local/ns/default/sa/reviews"; do
        name=${leaf%%:*}; san=${leaf#*:}
        # KEY=ec: the server leaf gets an ECDSA P-256 key instead of RSA-2048.
        newkey=(-newkey rsa:2048)
        if [ "$name" = server ] && [ "${KEY:-rsa}" = ec ]; then
            newkey=(-newkey ec -pkeyopt ec_paramgen_curve:P-256)
        fi
        openssl req -new "${newkey[@]}" -nodes -keyout "$name.key" -out "$name.csr" \
            -subj "/O=bench/CN=$name" 2>/dev/null
        printf 'subjectAltName=%s\nextendedKeyUsage=serverAuth,clientAuth\n' "$san" > "$name.ext"
        openssl x509 -req -in "$name.csr" -CA root.pem -CAkey root.key -CAcreateserial \
            -days 1 -out "$name.pem" -extfile "$name.ext" 2>/dev/null
    done
    chmod 644 ./*.pem ./*.key
    cd - >/dev/null
}

# The same-host mesh path: outbound sidecar (plain HTTP from the client) -> mTLS ->
# inbound sidecar -> backend, with SPIFFE identities from pki().
mesh_configs() { # $1 = inbound port, $2 = outbound port, $3/$4 = their admin ports, $5 = backend port
cat > "$WORK/inbound.yaml" <<CONF
admin: { address: "127.0.0.1:$3" }
listeners:
  - name: inbound
    address: "127.0.0.1:$1"
    tls:
      certificates: [{ certificate_chain: "$WORK/reviews.pem", private_key: "$WORK/reviews.key" }]
      trusted_ca: "$WORK/root.pem"
    http:
      virtual_hosts:
        - name: all
          domains: ["*"]
          routes: [{ match: { prefix: "/" }, route: { cluster: app } }]
clusters:
  - name: app
    endpoints: ["127.0.0.1:$5"]
CONF
cat > "$WORK/outbound.yaml" <<CONF
admin: { address: "127.0.0.1:$4" }
listeners:
  - name: outbound
    address: "127.0.0.1:$2"
    http:
      virtual_hosts:
        - name: all
          domains: ["*"]
          routes: [{ match: { prefix: "/" }, route: { cluster: reviews } }]
clusters:
  - name: reviews
    endpoints: ["127.0.0.1:$1"]
    tls:
      trusted_ca: "$WORK/root.pem"
      certificate: { certificate_chain: "$WORK/frontend.pem", private_key: "$WORK/frontend.key" }
      match_identities: ["spiffe://cluster.local/ns/default/sa/reviews"]
CONF
}
