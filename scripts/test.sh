#!/usr/bin/env bash
# Installs what the tests need (idempotent, fast when already there) and runs every test.
set -euo pipefail
source "$(dirname "${BASH_SOURCE[0]}")/lib.sh"
source "$ROOT/scripts/containers.sh"
cd "$ROOT"

# The sandbox (bubblewrap; pasta from passt for the notebooks' own network): the tests check
# the confinement, and under CI=true a test that needs it fails when it is missing.
export CI="${CI:-true}"
need_debs bubblewrap passt python3-venv ca-certificates
# The real OpenSSH client: key pairs are checked with ssh-keygen, the SSH front door with ssh.
need_debs openssh-client
ATELIER_TEST_JUPYTER_VENV="$(jupyter_venv)"
export ATELIER_TEST_JUPYTER_VENV
# paramiko, the second SSH client the SSH tests use.
ATELIER_TEST_TOOLS_VENV="$(tools_venv)"
export ATELIER_TEST_TOOLS_VENV
# The built-in ONNX engine's tests (inference/tests/onnx.rs): the venv builds the models with
# scikit-learn/skl2onnx and answers with ONNX Runtime's Python API; the engine loads the
# libonnxruntime.so that its onnxruntime wheel ships.
ATELIER_TEST_ML_VENV="$(ml_venv)"
ATELIER_ONNXRUNTIME_LIB="$(onnxruntime_lib "$ATELIER_TEST_ML_VENV")"
export ATELIER_TEST_ML_VENV ATELIER_ONNXRUNTIME_LIB
# Training jobs' framework (tests/tests/training_jobs.rs: a 2-worker torch.distributed job).
ATELIER_TEST_TRAINING_VENV="$(training_venv)"
export ATELIER_TEST_TRAINING_VENV
# A real browser for the login-to-kernel journey (tests/tests/browser.rs).
command -v node >/dev/null || need_debs nodejs npm
need_debs chromium
ATELIER_TEST_BROWSER_MODULES="$(browser_modules)"
export ATELIER_TEST_BROWSER_MODULES
# Container notebooks' work disks are loop-mounted XFS images (they grow while mounted).
need_debs xfsprogs
# Object storage: a real S3 server on loopback (s3s-fs, built once); notebook mounts are
# served by rclone over FUSE (fuse3 brings fusermount3).
need_debs rclone fuse3
ATELIER_TEST_S3S_FS="$(s3s_fs_bin)"
export ATELIER_TEST_S3S_FS
# Wasm plugins: `atelier plugin build` installs componentize-py from PyPI into
# $ATELIER_CACHE/tools once (python3-venv); the tests build the Python examples with it,
# cached by content under $ATELIER_CACHE/test-plugins.
export ATELIER_CACHE
# C plugins (the C example processor's test): clang for wasm32-wasi with wasi-libc, and
# wit-bindgen built once into $ATELIER_CACHE/tools, where `atelier plugin build` finds it.
c_plugin_debs
wit_bindgen_bin >/dev/null
# The docker backend's tests: Podman's Docker-compatible API, the offline notebook image and a
# local registry (scripts/containers.sh). CI must run them, so a failure here stops the run.
ATELIER_TEST_DOCKER_HOST="$(podman_socket)" || { log "podman_socket failed: no Podman API"; exit 1; }
ATELIER_TEST_IMAGE="$(notebook_image)" || { log "notebook_image failed: no notebook image"; exit 1; }
ATELIER_TEST_REGISTRY="$(registry_addr)" || { log "registry_addr failed: no registry"; exit 1; }
export ATELIER_TEST_DOCKER_HOST ATELIER_TEST_IMAGE ATELIER_TEST_REGISTRY
# The slurm backend's tests: a Slurm cluster on loopback, two nodes on this host, and
# slurmrestd (scripts/slurm.sh, docs/slurm.md). It prints the export lines of SLURM_CONF,
# ATELIER_TEST_SLURM and ATELIER_SLURM_REST; CI runs those tests, so a failure stops the run.
slurm_msgs="$(mktemp)"
if ! slurm_env="$(bash "$ROOT/scripts/slurm.sh" up 2>"$slurm_msgs")"; then
  cat "$slurm_msgs" >&2
  log "slurm.sh up failed: $(grep '^==> ' "$slurm_msgs" | tail -n 1 | cut -c5-) (logs in ${ATELIER_SLURM_STATE:-$ATELIER_CACHE/slurm}/log)"
  exit 1
fi
cat "$slurm_msgs" >&2
rm -f "$slurm_msgs"
eval "$slurm_env"

# Each clean clone builds the workspace's own crates and test binaries anew (their paths
# differ), so drop those of earlier clones that have not been touched for a day: they are
# never used again and would fill the disk run after run. Dependencies are kept.
if [ -d "$CARGO_TARGET_DIR/debug/deps" ]; then
  names=(atelier_ libatelier_)
  for t in "$ROOT"/tests/tests/*.rs; do names+=("$(basename "$t" .rs)-"); done
  for n in "${names[@]}"; do
    find "$CARGO_TARGET_DIR/debug/deps" -maxdepth 1 -name "$n*" -mtime +0 -delete 2>/dev/null || true
  done
fi

log "cargo fmt --check"
cargo fmt --all -- --check
log "cargo clippy"
cargo clippy --workspace --all-targets --locked -- -D warnings
# The fake backend and the backend conformance suite as other crates get them.
cargo clippy --locked -p atelier-gateway --features test-util --lib -- -D warnings
log "cargo build"
cargo build --workspace --locked
# The runtime containers start with, linked statically (scripts/build-static-runtime.sh).
bash "$ROOT/scripts/build-static-runtime.sh"
log "cargo test"
out="$(mktemp)"
trap 'rm -f "$out"' EXIT
set +e
cargo test --workspace --locked --no-fail-fast -- --test-threads=2 2>&1 | tee "$out"
status=${PIPESTATUS[0]}
set -e
# One closing line for the whole run (cargo's last line is that of the last test binary).
awk '/^test result:/ { p += $4; f += $6 } END { printf "tests: %d passed, %d failed\n", p, f }' \
  FS='[ ;]+' "$out"
exit "$status"
