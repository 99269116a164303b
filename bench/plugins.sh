#!/usr/bin/env bash
# The plugin host benchmark: instantiation, no-op calls and the Python inference example's
# pre+post (with the host's tensors helpers, and in pure Python) under both instance
# policies, against the same logic as a CPython HTTP service on loopback (pure Python, and
# numpy). Results go to docs/benchmarks.md by hand.
#
#   bash bench/plugins.sh            # ITERATIONS=2000 by default
set -euo pipefail
ROOT="$(cd "$(dirname "$0")/.." && pwd)"
source "$ROOT/scripts/lib.sh"
source "$ROOT/bench/lib.sh"
export CARGO_TARGET_DIR="${CARGO_TARGET_DIR:-$ATELIER_CACHE/target}"
ITERATIONS="${ITERATIONS:-2000}"

cd "$ROOT"
cargo build --release -q -p atelier-gateway --bin atelier
cargo build --release -q -p atelier-plugins --example bench
atelier="$CARGO_TARGET_DIR/release/atelier"
example="$ROOT/examples/plugins/python-inference-processor"
work="$(mktemp -d)"
component="$work/top-k.wasm"
pure="$work/top-k-pure-python.wasm"
"$atelier" plugin build "$example" --output "$component" >&2
"$atelier" plugin build "$ROOT/bench/plugins/pure-python-processor" --output "$pure" >&2
numpy_venv="$(hashed_venv bench-numpy-venv "$ROOT/bench/numpy-requirements.txt")"

free_port() { python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])'; }
port=$(free_port)
numpy_port=$(free_port)
python3 "$ROOT/bench/prepost_service.py" "$port" "$example/model/labels.txt" &
service=$!
"$numpy_venv/bin/python" "$ROOT/bench/prepost_service.py" "$numpy_port" "$example/model/labels.txt" --numpy &
numpy_service=$!
trap 'kill $service $numpy_service 2>/dev/null || true; rm -rf "$work"' EXIT
for p in $port $numpy_port; do
  for _ in $(seq 50); do
    python3 -c "import socket; socket.create_connection(('127.0.0.1', $p))" 2>/dev/null && break
    sleep 0.1
  done
done
mkdir -p "$ROOT/bench/results"
log "commit $(git -C "$ROOT" rev-parse --short HEAD), $(nproc) CPUs, iterations $ITERATIONS"
"$CARGO_TARGET_DIR/release/examples/bench" "$component" "$pure" "$example/model" "$port" "$numpy_port" "$ITERATIONS" |
  tee "$ROOT/bench/results/plugins-$(date -u +%Y%m%dT%H%M%SZ).txt"
