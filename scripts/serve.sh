#!/usr/bin/env bash
# The main job on a fresh machine: builds Atelier, makes sure Python can create JupyterLab's
# virtualenv, and starts the gateway on the embedded (process) backend, or with
# ATELIER_BACKEND=docker on a container engine (see the README). The gateway creates
# JupyterLab under its data dir if missing, prints its URL and, on the first start, the
# admin's API token. Extra arguments go to `atelier serve`.
set -euo pipefail
source "$(dirname "${BASH_SOURCE[0]}")/lib.sh"
cd "$ROOT"

command -v cargo >/dev/null || { log "cargo is missing: install Rust (1.95 or newer) first"; exit 1; }
python3 -m venv --help >/dev/null 2>&1 || need_debs python3-venv
# The process backend's sandbox: bubblewrap, and pasta (Debian's passt) for the notebooks'
# own network with egress. Without them notebooks are refused (ATELIER_SANDBOX=none runs
# them unconfined; ATELIER_NOTEBOOK_NETWORK=none needs no pasta).
command -v bwrap >/dev/null || need_debs bubblewrap || log "no bubblewrap: notebooks will be refused"
command -v pasta >/dev/null || need_debs passt || log "no pasta: notebooks will be refused unless ATELIER_NOTEBOOK_NETWORK=none"
command -v rclone >/dev/null || need_debs rclone fuse3 || log "no rclone: object-storage folders cannot be mounted into notebooks"

log "building (release)"
cargo build --release --workspace --locked
if [ "${ATELIER_BACKEND:-}" = docker ]; then
  # Containers start with a statically linked runtime; work disks need xfsprogs.
  bash "$ROOT/scripts/build-static-runtime.sh" --release
  command -v mkfs.xfs >/dev/null || need_debs xfsprogs || log "no xfsprogs: work disks will be ext4 (no online growth without CAP_SYS_RESOURCE)"
fi
# The built-in ONNX engine loads ONNX Runtime's library from the onnxruntime wheel (a
# virtualenv made once under ~/.cache/atelier, keyed by scripts/ml-requirements.txt).
if [ -z "${ATELIER_ONNXRUNTIME_LIB:-}" ]; then
  if lib="$(onnxruntime_lib)"; then
    export ATELIER_ONNXRUNTIME_LIB="$lib"
  else
    log "no ONNX Runtime: ONNX models cannot be served (set ATELIER_ONNXRUNTIME_LIB)"
  fi
fi
# Training jobs without an image run in ATELIER_TRAINING_VENV on the process backend;
# `auto` builds (once) the virtualenv of scripts/training-requirements.txt (PyTorch CPU).
if [ "${ATELIER_TRAINING_VENV:-}" = auto ]; then
  log "the training virtualenv (PyTorch; 5.4 GB, built once)"
  ATELIER_TRAINING_VENV="$(training_venv)"
  export ATELIER_TRAINING_VENV
fi
export ATELIER_DATA_DIR="${ATELIER_DATA_DIR:-$ROOT/.atelier}"
log "data dir: $ATELIER_DATA_DIR"
exec "$CARGO_TARGET_DIR/release/atelier" serve "$@"
