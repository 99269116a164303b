#!/usr/bin/env bash
# The ONNX engine benchmark: ONNX Runtime through `ort` (load-dynamic, the library the PyPI
# onnxruntime wheel ships; raw, and as Atelier's engine with 1 and 4 sessions) against tract
# (pure Rust) and ONNX Runtime's Python API, on the same small models built by
# inference/tests/fixtures/make_models.py: model load time, one run's p50/p99 and throughput
# on 1 and 16 threads. Results go to docs/benchmarks.md by hand.
#
#   bash bench/onnx-engines.sh     # ITERATIONS=20000 DURATION=2 ROUNDS=3
#
# ITERATIONS timed runs per engine for the latency; DURATION seconds per engine and thread
# count for the throughput. The Rust engines of one model take turns (blocks of runs, windows
# of time); the Python floor runs after them, ROUNDS rounds over its table, medians.
#
# bench/onnx-engines/ is a cargo project of its own (not a workspace member), built in release
# into its own target dir ($ATELIER_CACHE/onnx-engines-target; the first build of tract takes
# about 9 minutes on 2 cores). QUIET_PCT/QUIET_WAIT: wait up to QUIET_WAIT seconds for the
# machine to be at most QUIET_PCT % busy before measuring.
set -euo pipefail
ROOT="$(cd "$(dirname "$0")/.." && pwd)"
source "$ROOT/scripts/lib.sh"
source "$ROOT/bench/lib.sh"
ITERATIONS="${ITERATIONS:-20000}"
SECONDS_PER_FIGURE="${DURATION:-2}"
ROUNDS="${ROUNDS:-3}"
QUIET_PCT="${QUIET_PCT:-15}"
QUIET_WAIT="${QUIET_WAIT:-300}"

venv="$(ml_venv)"
lib="$(onnxruntime_lib "$venv")"
script="$ROOT/inference/tests/fixtures/make_models.py"
models="$ATELIER_CACHE/onnx-engines-models-$(cat "$script" "$ROOT/scripts/ml-requirements.txt" | sha256sum | cut -c1-16)"
if [ ! -f "$models/expected.json" ]; then
  log "building the models into $models"
  rm -rf "$models.partial"
  "$venv/bin/python" "$script" "$models.partial"
  mv "$models.partial" "$models"
fi

target="${BENCH_TARGET_DIR:-$ATELIER_CACHE/onnx-engines-target}"
log "building bench/onnx-engines (release) into $target"
(cd "$ROOT/bench/onnx-engines" && CARGO_TARGET_DIR="$target" cargo build --release --locked -q)

# CPU jiffies of the whole machine: busy, total.
cpu_jiffies() { awk '/^cpu / { print $2 + $3 + $4 + $7 + $8, $2 + $3 + $4 + $5 + $6 + $7 + $8 + $9 }' /proc/stat; }

# Runs CMD… with its output into OUT, then prints how busy other work kept the machine
# meanwhile: the CPU time of /proc/stat less this shell's children's (bash `times`, read in
# this shell), as a share of all CPUs.
other_work_during() {
  local out=$1 b0 t0 b1 t1 c0 c1 f
  shift
  f="$(mktemp)"
  read -r b0 t0 < <(cpu_jiffies)
  times >"$f"; c0="$(children_cpu "$f")"
  "$@" >"$out"
  times >"$f"; c1="$(children_cpu "$f")"
  read -r b1 t1 < <(cpu_jiffies)
  rm -f "$f"
  awk -v b="$((b1 - b0))" -v t="$((t1 - t0))" -v c0="$c0" -v c1="$c1" -v hz="$(getconf CLK_TCK)" \
    'BEGIN { o = (b / hz - (c1 - c0)) / (t / hz) * 100; if (o < 0) o = 0; printf "%.1f", o }'
}

wait_quiet
mkdir -p "$ROOT/bench/results"
out="$ROOT/bench/results/onnx-engines-$(date -u +%Y%m%dT%H%M%SZ).md"
{
  echo "# ONNX engines, $(date -u '+%Y-%m-%d %H:%M UTC'), commit $(git -C "$ROOT" rev-parse --short HEAD)"
  echo
  echo "- machine: $(nproc) × $(lscpu | sed -n 's/^Model name: *//p' | head -n 1), $(awk '/MemTotal/ { printf "%.1f GiB", $2 / 1048576 }' /proc/meminfo), Linux $(uname -r)"
  echo "- busy with other work before the run: $(machine_busy_pct) %"
  echo "- ONNX Runtime: $lib (onnxruntime $("$venv/bin/python" -c 'import onnxruntime; print(onnxruntime.__version__)'))"
  echo "- iterations $ITERATIONS, ${SECONDS_PER_FIGURE} s per throughput figure (Python: $ROUNDS rounds)"
  echo
  other="$(other_work_during "$ROOT/bench/results/.onnx-engines-rust.md" \
    "$target/release/onnx-engines-bench" "$lib" "$models" "$ITERATIONS" "$SECONDS_PER_FIGURE")"
  cat "$ROOT/bench/results/.onnx-engines-rust.md"
  echo
  echo "Other work on the machine during these measurements: $other % of its CPUs."
  echo
  echo "## Python floor (onnxruntime's InferenceSession.run, same models and inputs)"
  echo
  echo "| Model | Batch | Engine | Load (ms) | p50 (µs) | p99 (µs) | runs/s, 1 thread | runs/s, 16 threads |"
  echo "|---|--:|---|--:|--:|--:|--:|--:|"
  other="$(other_work_during "$ROOT/bench/results/.onnx-engines-python.md" \
    "$venv/bin/python" "$ROOT/bench/onnx-engines/python_floor.py" "$models" "$ITERATIONS" "$SECONDS_PER_FIGURE" "$ROUNDS")"
  cat "$ROOT/bench/results/.onnx-engines-python.md"
  echo
  echo "Other work on the machine during these measurements: $other % of its CPUs."
  rm -f "$ROOT/bench/results/.onnx-engines-rust.md" "$ROOT/bench/results/.onnx-engines-python.md"
} | tee "$out"
log "report: $out"
