#!/usr/bin/env bash
# Container notebooks (docker backend on Podman) against plain Podman: start to JupyterLab,
# and save-as-image + push. Builds the release gateway and the static runtime, prepares
# Podman's service, the test image and a local registry (scripts/containers.sh), then runs
# bench/containers.py (its docstring describes the method; knobs: ROUNDS, FILE_MB).
set -euo pipefail
HERE=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
source "$HERE/../scripts/lib.sh"
source "$HERE/../scripts/containers.sh"
if [[ ${SKIP_BUILD:-0} != 1 ]]; then
  (cd "$ROOT" && cargo build --release --locked -q -p atelier-gateway --bin atelier -p atelier-notebook-runtime)
  bash "$ROOT/scripts/build-static-runtime.sh" --release -q
fi
ATELIER_TEST_DOCKER_HOST=$(podman_socket)
ATELIER_TEST_IMAGE=$(notebook_image)
ATELIER_TEST_REGISTRY=$(registry_addr)
export ATELIER_TEST_DOCKER_HOST ATELIER_TEST_IMAGE ATELIER_TEST_REGISTRY
exec python3 "$HERE/containers.py"
