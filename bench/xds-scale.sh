#!/usr/bin/env bash
# Control-plane scale (crates/control/benches/scale.rs): N services x 10 endpoints, 100
# sidecars as real xDS clients on loopback, state of the world and delta: memory, full
# push time, and the time for one endpoint change on disk to reach every sidecar.
# Usage: bench/xds-scale.sh [services...] (default: 1000 10000)
set -euo pipefail
cd "$(dirname "$0")/.."
sizes=("$@")
[ ${#sizes[@]} -eq 0 ] && sizes=(1000 10000)
cargo bench --locked -p trellis-control --bench scale -- "${sizes[@]}"
