#!/usr/bin/env bash
# Added latency of a captured mesh hop, per family, side by side in one run (needs root):
#   direct    client host -> server host's app, no mesh
#   proxy     client app -> its sidecar as an HTTP proxy (127.0.0.1:15001) -> mTLS ->
#             the server's sidecar inbound port -> app (no capture anywhere)
#   captured  unmodified client app -> virtual IP, redirected to its sidecar (trellis init)
#             -> mTLS -> redirected into the server's sidecar (15006) -> app
# Hosts are network namespaces on one bridge, as in crates/trellis/tests/capture. The load
# is one keep-alive connection at a fixed rate ($RATE requests/s, $N requests, 1 KiB
# bodies from the demo app); the figures are p50 and p99 of each request's latency.
# Usage: bench/capture.sh   (RATE=200 N=4000 ROUNDS=2)
set -euo pipefail
cd "$(dirname "$0")/.."
. bench/common.sh
RATE="${RATE:-200}"
N="${N:-4000}"
ROUNDS="${ROUNDS:-2}"
require ip iptables-save setpriv python3 "$TRELLIS"
if [ "$(id -u)" -ne 0 ]; then echo "bench/capture.sh needs root (network namespaces, iptables)" >&2; exit 1; fi

P="trb$$"
NSS=()
net_cleanup() {
    cleanup
    for ns in "${NSS[@]}"; do ip netns del "$ns" 2>/dev/null || true; rm -rf "/etc/netns/$ns"; done
}
trap net_cleanup EXIT

ip netns add "${P}sw"; NSS+=("${P}sw")
ip -n "${P}sw" link add br0 type bridge
ip -n "${P}sw" link set br0 up
host() { # $1 = number: 10.244.0.N and fd00:244::N
    local ns="${P}h$1"
    ip netns add "$ns"; NSS+=("$ns")
    ip link add "${ns}o" netns "${P}sw" type veth peer name eth0 netns "$ns"
    ip -n "${P}sw" link set "${ns}o" master br0
    ip -n "${P}sw" link set "${ns}o" up
    ip -n "$ns" link set lo up
    ip -n "$ns" link set eth0 up
    ip -n "$ns" addr add "10.244.0.$1/24" dev eth0
    ip -n "$ns" route add default dev eth0
    ip -n "$ns" -6 addr add "fd00:244::$1/64" dev eth0 nodad
    ip -n "$ns" -6 route add default dev eth0
}
in_ns() { local n="$1"; shift; ip netns exec "${P}h$n" "$@"; }
bg() { local n="$1"; shift; ip netns exec "${P}h$n" "$@" >> "$WORK/h$n.log" 2>&1 & PIDS+=($!); }
for n in 1 2 3 4 5 100; do host "$n"; done

# The latency client: one keep-alive connection, a request every 1/RATE s.
cat > "$WORK/fixed_rate.py" <<'PY'
import http.client, sys, time
host, port, path, rate, n = sys.argv[1], int(sys.argv[2]), sys.argv[3], float(sys.argv[4]), int(sys.argv[5])
hdrs = dict(h.split(": ", 1) for h in sys.argv[6:])
c = http.client.HTTPConnection(host, port, timeout=5)
for _ in range(200):  # warm up: connections and pools made
    c.request("GET", path, headers=hdrs); c.getresponse().read()
lat = []
start = time.perf_counter()
for i in range(n):
    due = start + i / rate
    now = time.perf_counter()
    if due > now:
        time.sleep(due - now)
    t = time.perf_counter()
    c.request("GET", path, headers=hdrs)
    r = c.getresponse(); r.read()
    if r.status != 200:
        sys.exit(f"status {r.status}")
    lat.append(time.perf_counter() - t)
lat.sort()
print(f"{lat[len(lat)//2]*1000:.3f} {lat[int(len(lat)*0.99)]*1000:.3f}")
PY

run_family() { # $1 = 4 or 6
    local fam="$1" a vip
    addr() { if [ "$fam" = 4 ]; then echo "10.244.0.$1"; else echo "fd00:244::$1"; fi; }
    sock() { if [ "$fam" = 4 ]; then echo "$1:$2"; else echo "[$1]:$2"; fi; }
    if [ "$fam" = 4 ]; then vip=10.96.0.10; else vip=fd00:96::10; fi
    local mesh="$WORK/mesh$fam" state="$WORK/state$fam"
    mkdir -p "$mesh"
    cat > "$mesh/mesh.yaml" <<YAML
apiVersion: networking.istio.io/v1
kind: ServiceEntry
metadata: { name: reviews, namespace: default }
spec:
  hosts: [reviews.default.svc.cluster.local]
  addresses: ["$vip"]
  location: MESH_INTERNAL
  resolution: STATIC
  ports: [{ number: 9080, name: http, protocol: HTTP }]
  workloadSelector: { labels: { app: reviews } }
---
apiVersion: networking.istio.io/v1
kind: ServiceEntry
metadata: { name: ratings, namespace: default }
spec:
  hosts: [ratings.default.svc.cluster.local]
  location: MESH_INTERNAL
  resolution: STATIC
  ports: [{ number: 9080, name: http, protocol: HTTP }]
  workloadSelector: { labels: { app: ratings } }
---
apiVersion: networking.istio.io/v1
kind: WorkloadEntry
metadata: { name: reviews, namespace: default, annotations: { sidecar.istio.io/interceptionMode: REDIRECT } }
spec: { address: "$(addr 2)", ports: { http: 9080 }, labels: { app: reviews }, serviceAccount: reviews }
---
apiVersion: networking.istio.io/v1
kind: WorkloadEntry
metadata: { name: client, namespace: default, annotations: { sidecar.istio.io/interceptionMode: REDIRECT } }
spec: { address: "$(addr 1)", labels: { app: client }, serviceAccount: client }
---
apiVersion: networking.istio.io/v1
kind: WorkloadEntry
metadata: { name: ratings, namespace: default, annotations: { sidecar.trellis.dev/app-ports: "http=9080" } }
spec: { address: "$(addr 4)", ports: { http: 19080 }, labels: { app: ratings }, serviceAccount: ratings }
---
apiVersion: networking.istio.io/v1
kind: WorkloadEntry
metadata: { name: proxy-client, namespace: default }
spec: { address: "$(addr 3)", labels: { app: proxy-client }, serviceAccount: proxy-client }
YAML
    printf 'apiVersion: security.istio.io/v1\nkind: PeerAuthentication\nmetadata: { name: default, namespace: default }\nspec: { mtls: { mode: STRICT } }\n' > "$mesh/pa.yaml"
    local ctl; ctl=$(sock "$(addr 100)" 15012)
    bg 100 "$TRELLIS" control --config-dir "$mesh" --listen "$ctl" --state-dir "$state" --ready-file "$WORK/ctl$fam.json"
    for _ in $(seq 200); do [ -s "$WORK/ctl$fam.json" ] && break; sleep 0.05; done
    python3 -c "import json,sys; print(json.load(open('$WORK/ctl$fam.json'))['root_pem'], end='')" > "$WORK/root$fam.pem"
    sidecar() { # $1 host, $2 name, $3 sa, $4 node address
        "$TRELLIS" ca --state-dir "$state" token --identity "spiffe://cluster.local/ns/default/sa/$3" --ttl 1h > "$WORK/$2$fam.token"
        printf 'identity:\n  ca_address: "%s"\n  ca_root: "%s"\n  token_file: "%s"\n' "$ctl" "$WORK/root$fam.pem" "$WORK/$2$fam.token" > "$WORK/$2$fam.yaml"
        bg "$1" setpriv --regid 1337 --clear-groups "$TRELLIS" proxy --config "$WORK/$2$fam.yaml" --workers 1 \
            --xds "$ctl" --xds-tls --node-id "sidecar~$4~$2.default~default.svc.cluster.local"
    }
    in_ns 1 "$TRELLIS" init >/dev/null
    in_ns 2 "$TRELLIS" init >/dev/null
    bg 2 "$TRELLIS" demo-app --listen 0.0.0.0:9080 --name reviews --workers 1
    bg 4 "$TRELLIS" demo-app --listen 127.0.0.1:9080 --name ratings --workers 1
    bg 5 "$TRELLIS" demo-app --listen "$(sock "$( [ "$fam" = 4 ] && echo 0.0.0.0 || echo ::)" 9080)" --name direct --workers 1
    sidecar 1 client client "$(addr 1)"
    sidecar 2 reviews reviews "$(addr 2)"
    sidecar 3 proxy-client proxy-client "$(addr 3)"
    sidecar 4 ratings ratings "$(addr 4)"
    # Ready when each path answers.
    for _ in $(seq 200); do in_ns 1 curl -sf -o /dev/null "http://$(sock "$vip" 9080)/size/1024" && break; sleep 0.1; done
    for _ in $(seq 200); do in_ns 3 curl -sf -o /dev/null -x http://127.0.0.1:15001 "http://ratings:9080/size/1024" && break; sleep 0.1; done
    for r in $(seq "$ROUNDS"); do
        for path in direct proxy captured; do
            case $path in
                direct) out=$(in_ns 3 python3 "$WORK/fixed_rate.py" "$(addr 5)" 9080 /size/1024 "$RATE" "$N") ;;
                proxy) out=$(in_ns 3 python3 "$WORK/fixed_rate.py" 127.0.0.1 15001 http://ratings:9080/size/1024 "$RATE" "$N") ;;
                captured) out=$(in_ns 1 python3 "$WORK/fixed_rate.py" "$vip" 9080 /size/1024 "$RATE" "$N") ;;
            esac
            echo "IPv$fam round $r $path p50_ms p99_ms: $out"
            echo "$fam $path $out" >> "$WORK/results"
        done
    done
    for p in "${PIDS[@]}"; do kill "$p" 2>/dev/null || true; done
    wait 2>/dev/null || true
    PIDS=()
    in_ns 1 "$TRELLIS" init --cleanup >/dev/null
    in_ns 2 "$TRELLIS" init --cleanup >/dev/null
}

run_family 4
run_family 6
echo
echo "| family | path | p50 ms (best round) | p99 ms (best round) | p50 added vs direct |"
echo "|---|---|---:|---:|---:|"
python3 - "$WORK/results" <<'PY'
import sys, collections
best = collections.defaultdict(lambda: [1e9, 1e9])
for line in open(sys.argv[1]):
    fam, path, p50, p99 = line.split()
    b = best[(fam, path)]
    b[0] = min(b[0], float(p50)); b[1] = min(b[1], float(p99))
for fam in ("4", "6"):
    d = best[(fam, "direct")][0]
    for path in ("direct", "proxy", "captured"):
        p50, p99 = best[(fam, path)]
        print(f"| IPv{fam} | {path} | {p50:.3f} | {p99:.3f} | {p50 - d:+.3f} |")
PY
