#!/usr/bin/env bash
# The Slurm benchmark (issue 20), one run on the test cluster of scripts/slurm.sh (started
# when it is not running; never stopped): a gateway on the `slurm` backend and one on the
# default `process` backend side by side, measuring
#   1. notebook create → JupyterLab answers through the gateway on slurm, against `sbatch`
#      by hand of the same `jupyter lab` until its port answers (goal ≤ 1.2×);
#   2. the proxy's added latency through the connect-back tunnel against the local backend's
#      (goal ≤ +0.2 ms p50);
#   3. scp through the SSH front door on slurm against the local backend (goal ≥ 0.8×).
# bench/slurm/bench.py has the method. Prints a markdown report on stdout and writes it (and
# the raw numbers as JSON) under bench/results/; results go to docs/benchmarks.md by hand.
#
# Knobs: ROUNDS=5 WARMUP=1 POLL_MS=20 (start), HTTP_N=2000 HTTP_WARMUP=200 HTTP_ROUNDS=3
# (latency), SIZE_MIB=256 SCP_ROUNDS=3 (scp), PARTS="start latency scp", PARTITION=debug;
# ATELIER_BIN (the runtime is taken from beside it) / SKIP_BUILD=1 (default: cargo build
# --release of the gateway and the runtime into $CARGO_TARGET_DIR); ATELIER_TEST_JUPYTER_VENV;
# ATELIER_LOG; KEEP_WORKDIR=1. Root only (the test cluster is).
set -euo pipefail
HERE="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
source "$HERE/../scripts/lib.sh"
((EUID == 0)) || {
    log "run as root: the test cluster's daemons and jobs are root's"
    exit 1
}
for tool in curl python3 ssh scp; do
    command -v "$tool" >/dev/null || {
        log "$tool is not installed"
        exit 1
    }
done
if [[ -z ${ATELIER_BIN:-} ]]; then
    if [[ ${SKIP_BUILD:-0} != 1 ]]; then
        (cd "$ROOT" && cargo build --release --locked -p atelier-gateway -p atelier-notebook-runtime \
            --bin atelier --bin atelier-notebook-runtime >&2)
    fi
    ATELIER_BIN=$CARGO_TARGET_DIR/release/atelier
fi
RUNTIME_BIN=$(dirname "$ATELIER_BIN")/atelier-notebook-runtime
[[ -x $ATELIER_BIN && -x $RUNTIME_BIN ]] || {
    log "no gateway or runtime binary at $ATELIER_BIN and $RUNTIME_BIN"
    exit 1
}
JL_VENV=${ATELIER_TEST_JUPYTER_VENV:-$(jupyter_venv)}
# The cluster: started when it is not running (idempotent), left running at the end.
up=$(bash "$ROOT/scripts/slurm.sh" up) || {
    log "scripts/slurm.sh up failed"
    exit 1
}
eval "$up"
[[ -n ${SLURM_CONF:-} ]] || {
    log "scripts/slurm.sh up exported no SLURM_CONF"
    exit 1
}
W=$(mktemp -d "${TMPDIR:-/tmp}/atelier-bench-slurm.XXXXXX")
cleanup() { if [[ ${KEEP_WORKDIR:-0} == 1 ]]; then log "work dir kept: $W"; else rm -rf "$W"; fi; }
trap cleanup EXIT
mkdir -p "$ROOT/bench/results"
stamp=$(date -u +%Y%m%dT%H%M%SZ)
out="$ROOT/bench/results/slurm-$stamp.md"
raw="$ROOT/bench/results/slurm-$stamp.json"
if ! WORK=$W ATELIER_BIN=$ATELIER_BIN RUNTIME_BIN=$RUNTIME_BIN JL_VENV=$JL_VENV \
    SLURM_CONF=$SLURM_CONF SLURM_LOG_DIR=${ATELIER_SLURM_STATE:-$ATELIER_CACHE/slurm}/log \
    RAW_OUT=$raw python3 "$HERE/slurm/bench.py" | tee "$out"; then
    rm -f "$out"
    log "the benchmark failed (above); no report written (raw numbers so far: $raw)"
    KEEP_WORKDIR=1
    exit 1
fi
log "report: $out (raw: $raw)"
