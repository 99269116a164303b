#!/usr/bin/env bash
# The connect-back tunnel (tunnel/) against a direct loopback TCP connection, in one run:
# a tunnel hub and a runtime's node in one process on 127.0.0.1 (TLS 1.3, HTTP/2 streams),
# in front of the same local servers as the direct connections. Measures the added latency
# of a 64-byte request/answer on an open connection (p50, p99; direct and tunnelled
# interleaved round by round), the same with a new connection or stream per request, and
# one-way bulk throughput (BULK_MIB, default 256 MiB). tunnel/examples/bench.rs has the
# method. Prints a markdown table on stdout; results go to docs/benchmarks.md by hand.
#
# Knobs: RTT_ROUNDS=20000 CONNECT_ROUNDS=2000 BULK_MIB=256 ROUNDS=3 (bulk rounds),
#        SKIP_BUILD=1 (use the built example).
set -euo pipefail
HERE=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
source "$HERE/../scripts/lib.sh"
if [[ ${SKIP_BUILD:-0} != 1 ]]; then
  log "building the benchmark (release)"
  (cd "$ROOT" && cargo build --release --locked -q -p atelier-tunnel --features gateway --example bench)
fi
log "running: rtt ${RTT_ROUNDS:-20000}, connect ${CONNECT_ROUNDS:-2000}, bulk ${BULK_MIB:-256} MiB × ${ROUNDS:-3}"
exec "$CARGO_TARGET_DIR/release/examples/bench"
