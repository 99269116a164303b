#!/usr/bin/env bash
# The workflow benchmark (issue 19): a chain of 40 no-op steps and a 20-wide fan-out/fan-in
# on Atelier (wasm steps of tests/plugins/workflow-step/noop, through the runs API) and on
# Prefect 3 with its local server; end to end and per-edge hand-off, p50/p99, beside the
# goals. See bench/workflows/bench.py for what each measures.
#
#   bash bench/workflows.sh                  # both sides
#   bash bench/workflows.sh --prefect-only   # Prefect alone (no cargo build, no gateway)
#   bash bench/workflows.sh --atelier-only
#
# Knobs: REPEAT=5 POLL_MS=20; ATELIER_BIN / SKIP_BUILD=1 (default: cargo build --release into
# $CARGO_TARGET_DIR); NOOP_WASM (default: built from the conformance case with the
# wat-component example); KEEP_WORKDIR=1. Prints a markdown report and writes it (and the
# raw timings as JSON) under bench/results/. Results go to docs/benchmarks.md by hand.
set -euo pipefail
HERE="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
source "$HERE/../scripts/lib.sh"
MODE=both
for a in "$@"; do
    case $a in
    --prefect-only) MODE=prefect ;;
    --atelier-only) MODE=atelier ;;
    *)
        log "unknown argument $a (--prefect-only, --atelier-only)"
        exit 2
        ;;
    esac
done
W=$(mktemp -d "${TMPDIR:-/tmp}/atelier-bench-workflows.XXXXXX")
cleanup() { if [[ ${KEEP_WORKDIR:-0} == 1 ]]; then log "work dir kept: $W"; else rm -rf "$W"; fi; }
trap cleanup EXIT
if [[ $MODE != prefect ]]; then
    if [[ -z ${ATELIER_BIN:-} ]]; then
        if [[ ${SKIP_BUILD:-0} != 1 ]]; then
            (cd "$ROOT" && cargo build --release --locked --workspace --bins >&2)
        fi
        ATELIER_BIN=$CARGO_TARGET_DIR/release/atelier
    fi
    [[ -x $ATELIER_BIN ]] || { log "no atelier binary at $ATELIER_BIN"; exit 1; }
    if [[ -z ${NOOP_WASM:-} ]]; then
        # A separate build: the example's dev-dependencies must not change the features the
        # binaries above were built with.
        if [[ ${SKIP_BUILD:-0} != 1 ]]; then
            (cd "$ROOT" && cargo build --release --locked --workspace --example wat-component >&2)
        fi
        wat=$CARGO_TARGET_DIR/release/examples/wat-component
        [[ -x $wat ]] || { log "no $wat: build it with cargo build --release --workspace --example wat-component"; exit 1; }
        NOOP_WASM=$W/noop.wasm
        "$wat" "$ROOT/tests/plugins/workflow-step/noop" "$NOOP_WASM"
    fi
fi
PREFECT_VENV=
if [[ $MODE != atelier ]]; then
    PREFECT_VENV=$(hashed_venv bench-workflows-venv "$HERE/workflows-requirements.txt")
fi
mkdir -p "$ROOT/bench/results"
stamp=$(date -u +%Y%m%dT%H%M%SZ)
out="$ROOT/bench/results/workflows-$stamp.md"
raw="$ROOT/bench/results/workflows-$stamp.json"
if ! MODE=$MODE ATELIER_BIN=${ATELIER_BIN:-} NOOP_WASM=${NOOP_WASM:-} PREFECT_VENV=$PREFECT_VENV \
    WORK=$W RAW_OUT=$raw python3 "$HERE/workflows/bench.py" | tee "$out"; then
    rm -f "$out" "$raw"
    log "the benchmark failed (above); no report written"
    exit 1
fi
log "report: $out"
