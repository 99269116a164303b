#!/usr/bin/env bash
# Builds atelier-notebook-runtime linked statically (glibc's static libraries, `crt-static`),
# the entrypoint of container notebooks: it must run in any image, whatever C library the
# image has. The binary lands in $CARGO_TARGET_DIR/x86_64-unknown-linux-gnu/<profile>/,
# where the gateway of the same build finds it. Usage: build-static-runtime.sh [--release]
set -euo pipefail
source "$(dirname "${BASH_SOURCE[0]}")/lib.sh"
cd "$ROOT"
# Only the target's own crates get the flag: build scripts and proc macros stay dynamic.
CARGO_TARGET_X86_64_UNKNOWN_LINUX_GNU_RUSTFLAGS="-C target-feature=+crt-static" \
  cargo build --locked -p atelier-notebook-runtime --target x86_64-unknown-linux-gnu "$@"
