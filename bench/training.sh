#!/usr/bin/env bash
# The training benchmark (issue 18): submit → first line of a command job (process backend)
# and a container job (Podman) against `podman run` by hand; the Wasm linear-regression
# example against the same algorithm in CPython; hang detection latency against the hang
# time. See bench/training/bench.py for what each measures.
#
#   bash bench/training.sh
#
# Knobs: REPEAT=5 HANG=10; ATELIER_BIN / SKIP_BUILD=1 (default: cargo build --release into
# $CARGO_TARGET_DIR); KEEP_WORKDIR=1. Prints a markdown report and writes it under
# bench/results/. Results go to docs/benchmarks.md by hand.
set -euo pipefail
HERE="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
source "$HERE/../scripts/lib.sh"
source "$ROOT/scripts/containers.sh"
if [[ -z ${ATELIER_BIN:-} ]]; then
    if [[ ${SKIP_BUILD:-0} != 1 ]]; then
        (cd "$ROOT" && cargo build --release --locked --workspace --bins >&2)
        bash "$ROOT/scripts/build-static-runtime.sh" --release >&2
    fi
    ATELIER_BIN=$CARGO_TARGET_DIR/release/atelier
fi
RUNTIME_BIN=$(dirname "$ATELIER_BIN")/atelier-notebook-runtime
W=$(mktemp -d "${TMPDIR:-/tmp}/atelier-bench-training.XXXXXX")
cleanup() { if [[ ${KEEP_WORKDIR:-0} == 1 ]]; then log "work dir kept: $W"; else rm -rf "$W"; fi; }
trap cleanup EXIT
JL_VENV=${ATELIER_TEST_JUPYTER_VENV:-$(jupyter_venv)}
S3S_FS=${ATELIER_TEST_S3S_FS:-$(s3s_fs_bin)}
DOCKER_HOST_URL=$(podman_socket)
IMAGE=$(notebook_image)
wit_bindgen_bin >/dev/null
export ATELIER_CACHE
LINREG_WASM=$W/linreg.wasm
"$ATELIER_BIN" plugin build "$ROOT/examples/plugins/python-training-algorithm" --output "$LINREG_WASM" >&2
mkdir -p "$ROOT/bench/results"
out="$ROOT/bench/results/training-$(date -u +%Y%m%dT%H%M%SZ).md"
ATELIER_BIN=$ATELIER_BIN RUNTIME_BIN=$RUNTIME_BIN JL_VENV=$JL_VENV S3S_FS=$S3S_FS \
    DOCKER_HOST=$DOCKER_HOST_URL IMAGE=$IMAGE LINREG_WASM=$LINREG_WASM WORK=$W \
    python3 "$HERE/training/bench.py" | tee "$out"
log "report: $out"
