#!/usr/bin/env bash
# The Trusted Certificate Service (crates/issuer/benches/signing.rs): CSRs signed per
# second by `trellis issuer` with its CA key in a SoftHSM2 token (RSA-2048, ECDSA P-256),
# the signer's CPU per CSR (/proc/PID/stat), and the latency from a CSR's creation to its
# certificate through the Kubernetes API test server.
# Usage: bench/issuer.sh [batch size] (default 1000)
set -euo pipefail
cd "$(dirname "$0")/.."
cargo build --release --locked -p trellis
TRELLIS_BIN="$PWD/target/release/trellis" cargo bench --locked -p trellis-issuer --bench signing -- "${1:-1000}"
