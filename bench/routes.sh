#!/usr/bin/env bash
# End-to-end cost of a big regex route table, in one run: trellis with one route
# against trellis with 1,000 regex routes (the request matches the last one) on each
# matcher engine: sequential (Envoy's behaviour), automata, hyperscan (if built in).
# Usage: bench/routes.sh [seconds per run, default 10]
set -euo pipefail
cd "$(dirname "$0")/.."
. bench/common.sh
DURATION="${1:-10}"
ROUTES=1000
require wrk nginx curl python3 "$TRELLIS"

BACKEND=$(free_port)
start_backend "$BACKEND"
wait_http "http://127.0.0.1:$BACKEND/x"

# Route i is one of four realistic shapes; the request path matches only the last.
route_table() { # $1 = engine, $2 = port, $3 = admin port, $4 = number of regex routes
    echo "matcher: { engine: $1 }"
    echo "admin: { address: \"127.0.0.1:$3\" }"
    cat <<CONF
listeners:
  - name: bench
    address: "127.0.0.1:$2"
    http:
      virtual_hosts:
        - name: all
          domains: ["*"]
          routes:
CONF
    if [ "$4" -eq 0 ]; then
        echo '            - match: { prefix: "/" }'
        echo '              route: { cluster: backend }'
    fi
    for ((i = 0; i < $4; i++)); do
        case $((i % 4)) in
            0) re="/api/v$i/users/[0-9]+" ;;
            1) re="/svc-$i/[a-z]+/items/[0-9]{1,8}" ;;
            2) re="/static/$i/.*\\\\.(js|css|png)" ;;
            3) re="/(en|fr|de)/shop-$i/product/[A-Za-z0-9_-]+" ;;
        esac
        echo "            - match: { regex: \"$re\" }"
        echo '              route: { cluster: backend }'
    done
    echo "clusters:"
    echo "  - name: backend"
    echo "    endpoints: [\"127.0.0.1:$BACKEND\"]"
}
LAST=$((ROUTES - 1))
case $((LAST % 4)) in
    0) REQ="/api/v$LAST/users/12345" ;;
    1) REQ="/svc-$LAST/books/items/42" ;;
    2) REQ="/static/$LAST/app/main.css" ;;
    3) REQ="/fr/shop-$LAST/product/Blue_Shirt-42" ;;
esac

ENGINES=(sequential automata)
if ldd "$TRELLIS" | grep -q libhs; then # built with --features hyperscan
    ENGINES+=(hyperscan)
fi
LABELS=()
run_one() { # $1 = label, $2 = engine, $3 = routes
    local port admin; port=$(free_port); admin=$(free_port)
    route_table "$2" "$port" "$admin" "$3" > "$WORK/$1.yaml"
    RUST_LOG=warn "$TRELLIS" proxy --config "$WORK/$1.yaml" --workers 1 & local pid=$!
    wait_http "http://127.0.0.1:$port$REQ"
    measure "$1" "http://127.0.0.1:$port$REQ" "$DURATION"
    kill "$pid"; wait "$pid" 2>/dev/null || true
    LABELS+=("$1")
}
run_one "one-route" automata 0
for e in "${ENGINES[@]}"; do run_one "$ROUTES-regex-$e" "$e" "$ROUTES"; done

print_table "${LABELS[@]}"
echo "load: wrk -t1 -c$CONNS -d${DURATION}s; request path $REQ matches route $LAST of $ROUTES"
for e in "${ENGINES[@]}"; do
    l="$ROUTES-regex-$e"
    echo "$l / one-route: rps $(ratio "${RPS[$l]}" "${RPS[one-route]}")  p99 $(ratio "${P99[$l]}" "${P99[one-route]}")"
done
