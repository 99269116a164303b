# Shared by the scripts in this folder: cache locations and the JupyterLab virtualenv.
# Everything is found relative to the repository; caches live outside it so clean clones reuse
# them (the cargo target dir above all: a cold build of the dependencies takes minutes).

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
ATELIER_CACHE="${ATELIER_CACHE:-${XDG_CACHE_HOME:-$HOME/.cache}/atelier}"
export CARGO_TARGET_DIR="${CARGO_TARGET_DIR:-$ATELIER_CACHE/target}"
# No incremental compilation: every clean clone has its own paths, so incremental state is
# never reused and only fills the disk (tens of GB after a few runs).
export CARGO_INCREMENTAL="${CARGO_INCREMENTAL:-0}"
mkdir -p "$ATELIER_CACHE"

log() { printf '==> %s\n' "$*" >&2; }

# apt-get install the named Debian packages that are missing (root only; otherwise say what to do).
need_debs() {
  local missing=()
  for p in "$@"; do
    dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || missing+=("$p")
  done
  [ ${#missing[@]} -eq 0 ] && return 0
  if [ "$(id -u)" -eq 0 ] && command -v apt-get >/dev/null; then
    log "installing ${missing[*]}"
    apt-get update -qq >/dev/null || true
    DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "${missing[@]}" >/dev/null
  else
    log "missing Debian packages: ${missing[*]} (install them with apt-get)"
    return 1
  fi
}

# Writes $2 to the file $1 unless it already holds exactly that (config files outside the repo).
write_if_changed() {
  [ -f "$1" ] && [ "$(cat "$1")" = "$2" ] && return 0
  mkdir -p "$(dirname "$1")"
  printf '%s\n' "$2" >"$1"
}

# Starts "$@" detached from this shell (setsid, nohup, output to the log $1) and waits, up to
# about 30 s, for the check $2 (a shell command) to succeed.
start_service() {
  local logfile="$1" check="$2"
  shift 2
  setsid nohup "$@" >>"$logfile" 2>&1 </dev/null &
  for _ in $(seq 150); do
    eval "$check" && return 0
    sleep 0.2
  done
  log "$1 did not come up; the end of $logfile:"
  tail -n 20 "$logfile" >&2
  return 1
}

# Path of a virtualenv made from the requirements file $2, named $1-<hash>, built once per
# content hash and reused after that. A venv is not relocatable, so it is built in place and
# marked complete at the end; an interrupted build is thrown away next time.
hashed_venv() {
  local name="$1" req="$2"
  local venv
  venv="$ATELIER_CACHE/$name-$(sha256sum "$req" | cut -c1-16)"
  if [ ! -f "$venv/.complete" ]; then
    log "creating the virtualenv $venv from $(basename "$req") (once)"
    rm -rf "$venv"
    python3 -m venv "$venv" >&2
    "$venv/bin/pip" install --disable-pip-version-check --no-input -q -r "$req" >&2
    touch "$venv/.complete"
  fi
  printf '%s\n' "$venv"
}

# The JupyterLab virtualenv notebooks run from in the tests and benchmarks.
jupyter_venv() { hashed_venv jupyter-venv "$ROOT/scripts/jupyter-requirements.txt"; }

# The Python clients the tests use (paramiko).
tools_venv() { hashed_venv tools-venv "$ROOT/scripts/test-tools-requirements.txt"; }

# ONNX Runtime, scikit-learn and skl2onnx: the built-in ONNX engine's tests and benchmark.
ml_venv() { hashed_venv ml-venv "$ROOT/scripts/ml-requirements.txt"; }

# PyTorch and numpy: the environment training jobs run in on the process backend in the tests
# (ATELIER_TRAINING_VENV), for the 2-worker torch.distributed test and the PyTorch example.
training_venv() { hashed_venv training-venv "$ROOT/scripts/training-requirements.txt"; }

# The absolute path of the libonnxruntime.so.* that the onnxruntime wheel ships inside the venv
# $1 (default: ml_venv's), which the engine loads at run time (ATELIER_ONNXRUNTIME_LIB).
onnxruntime_lib() {
  local venv="${1:-$(ml_venv)}" lib
  lib="$(compgen -G "$venv/lib/python3*/site-packages/onnxruntime/capi/libonnxruntime.so*" | sort | head -n 1 || true)"
  if [ -z "$lib" ] || [ ! -f "$lib" ]; then
    log "no libonnxruntime.so* under $venv/lib/python3*/site-packages/onnxruntime/capi/ (is onnxruntime in scripts/ml-requirements.txt?)"
    return 1
  fi
  printf '%s\n' "$lib"
}

# node_modules holding playwright-core (drives the system's Chromium; downloads no browser).
browser_modules() {
  local version="1.65.1"
  local dir="$ATELIER_CACHE/browser-$version"
  if [ ! -f "$dir/.complete" ]; then
    log "installing playwright-core $version into $dir (once)"
    rm -rf "$dir"
    mkdir -p "$dir"
    npm install --prefix "$dir" --no-audit --no-fund --silent "playwright-core@$version" >&2
    touch "$dir/.complete"
  fi
  printf '%s\n' "$dir/node_modules"
}

# The binary $4 of crate $3, version $2, `cargo install`ed (with the arguments after $4)
# once into $ATELIER_CACHE/tools/$1-$2, behind a lock so parallel runs do not build it twice;
# prints its path.
cargo_tool() {
  local name="$1" version="$2" crate="$3" bin="$4"
  shift 4
  local dir="$ATELIER_CACHE/tools/$name-$version"
  if [ ! -x "$dir/bin/$bin" ]; then
    mkdir -p "$ATELIER_CACHE/tools"
    (
      flock 9
      if [ ! -x "$dir/bin/$bin" ]; then
        log "building $name $version into $dir (once)"
        rm -rf "$dir.partial"
        CARGO_TARGET_DIR="$ATELIER_CACHE/tools/$name-build" \
          cargo install --quiet --locked --version "$version" "$@" \
          --root "$dir.partial" "$crate" >&2
        rm -rf "$dir" "$ATELIER_CACHE/tools/$name-build"
        mv "$dir.partial" "$dir"
      fi
    ) 9>"$ATELIER_CACHE/tools/$name.lock"
  fi
  printf '%s\n' "$dir/bin/$bin"
}

# A real S3 server for the object storage tests: s3s-fs (crates.io; buckets are directories
# under its root, SigV4 checked against one key pair).
s3s_fs_bin() { cargo_tool s3s-fs 0.14.1 s3s-fs s3s-fs --features binary; }

# wit-bindgen (crates.io wit-bindgen-cli, its C generator only): the bindings of C plugins.
# `atelier plugin build` of a C project finds it at this path (and builds it there the same
# way when it is missing): keep the version equal to WIT_BINDGEN in gateway/src/cli/plugins.rs.
wit_bindgen_bin() { cargo_tool wit-bindgen 0.63.0 wit-bindgen-cli wit-bindgen --no-default-features --features c; }

# The C toolchain of C plugins: clang with the WASI sysroot and builtins, and wasm-ld.
c_plugin_debs() { need_debs clang lld wasi-libc libclang-rt-dev-wasm32; }
