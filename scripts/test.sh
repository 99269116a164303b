#!/usr/bin/env bash
# Installs what the tests need (idempotent, fast when already there) and runs every test.
set -euo pipefail
source "$(dirname "${BASH_SOURCE[0]}")/lib.sh"
cd "$ROOT"

# bubblewrap: notebooks run confined where it works, and the tests check the confinement.
need_debs bubblewrap python3-venv ca-certificates || log "continuing without them"
ATELIER_TEST_JUPYTER_VENV="$(jupyter_venv)"
export ATELIER_TEST_JUPYTER_VENV

log "cargo fmt --check"
cargo fmt --all -- --check
log "cargo clippy"
cargo clippy --workspace --all-targets --locked -- -D warnings
log "cargo build"
cargo build --workspace --locked
log "cargo test"
cargo test --workspace --locked -- --test-threads=2
