#!/usr/bin/env bash
# The inference benchmark (issue 17): the same small ONNX model (the iris example,
# examples/inference/iris) with the same pre/post logic (JSON instances in, top-k labels
# out), ~1 KB requests, at 1 and 16 concurrent clients:
#   atelier  the example's Wasm processor around the built-in ONNX engine, one gateway
#            process (release `atelier serve`, process backend), POST /v1/infers/{service};
#   atelier-c  the same with the processor written in C (examples/plugins/c-inference-processor,
#            built by `atelier plugin build` with wit-bindgen and clang);
#   kserve   the KServe pattern: a CPython transformer (FastAPI/uvicorn, pre/post with numpy,
#            httpx to the model server with the V2 JSON) in front of a model server
#            (onnxruntime behind FastAPI/uvicorn, POST /v2/models/iris/infer), on loopback;
#   floor    the model alone in onnxruntime from Python (session.run in a loop, no HTTP);
# and the container-engine path: a stdlib HTTP server answering a small fixed JSON, deployed
# as a model with its own server (process engine, in the sandbox) and called through the
# gateway (engine-gw), against the same server on a loopback port called directly
# (engine-direct); besides wrk, http_rtt.py's interleaved one-connection requests give the
# paired added p50, and inference/tail.py counts the calls slower than 900 ms at 16 clients
# on both.
#
# Prints a markdown report on stdout and writes it and the raw numbers under bench/results/;
# progress on stderr. Every process it starts runs in its own process group and is stopped
# at exit. Results go to docs/benchmarks.md by hand.
#
#   bash bench/inference.sh
#
# Knobs (environment):
#   DURATION=5 WARMUP=1 REPEAT=3   wrk seconds per cell, warm-up seconds, rounds (each round
#                                  runs every cell once, in a rotated order; medians over rounds)
#   FLOOR_N=20000 RTT_N=3000       floor runs per round; interleaved requests per round
#   CPU_SUT=0 CPU_LOAD=1           taskset CPU lists: the systems under test (the gateway and
#                                  its engine instance, or the transformer and the model
#                                  server, or the direct engine, and the floor) on CPU_SUT,
#                                  wrk and http_rtt.py on CPU_LOAD; "" = no pinning
#   ATELIER_BIN / SKIP_BUILD=1     gateway binary (default: cargo build --release into
#                                  $CARGO_TARGET_DIR); atelier-notebook-runtime next to it
#   QUIET_PCT=15 QUIET_WAIT=60     before each cell, wait up to QUIET_WAIT s for the machine to
#                                  be at most QUIET_PCT % busy
#   RESULTS_DIR (bench/results)    KEEP_WORKDIR=1 keeps logs
#   PERF_TARGET=atelier-c          perf record -g the gateway during that target's measured
#                                  1-client cell of round 1 (needs perf; the gateway then
#                                  writes a perf map naming the plugins' functions):
#                                  $RESULTS_DIR/inference-perf-<target>-<time>.data
set -euo pipefail
{

HERE=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
ROOT=$(cd "$HERE/.." && pwd)
# shellcheck source=../scripts/lib.sh
source "$ROOT/scripts/lib.sh"
# shellcheck source=lib.sh
source "$HERE/lib.sh"
export CARGO_TARGET_DIR=${CARGO_TARGET_DIR:-$ATELIER_CACHE/target}
DURATION=${DURATION:-5}
WARMUP=${WARMUP:-1}
REPEAT=${REPEAT:-3}
FLOOR_N=${FLOOR_N:-20000}
RTT_N=${RTT_N:-3000}
QUIET_PCT=${QUIET_PCT:-15}
QUIET_WAIT=${QUIET_WAIT:-60}
RESULTS_DIR=${RESULTS_DIR:-$HERE/results}
NCPU=$(nproc)
if ((NCPU >= 2)); then
    CPU_SUT=${CPU_SUT-0}
    CPU_LOAD=${CPU_LOAD-1}
else
    CPU_SUT=${CPU_SUT-} CPU_LOAD=${CPU_LOAD-}
fi

need_debs wrk curl
c_plugin_debs
WRK=$(command -v wrk) || die "wrk is not installed"
if ((EUID != 0)) || ! command -v bwrap >/dev/null || ! command -v pasta >/dev/null; then
    die "the process engine runs in the sandbox: this needs root, bubblewrap and pasta"
fi

# --- what it needs: the gateway, the venvs, the S3 server, the processor ---------------------
if [[ -z ${ATELIER_BIN:-} ]]; then
    if [[ ${SKIP_BUILD:-0} != 1 ]]; then
        log "cargo build --release (atelier, atelier-notebook-runtime) into $CARGO_TARGET_DIR"
        (cd "$ROOT" && cargo build --release --locked -q -p atelier-gateway --bin atelier \
            -p atelier-notebook-runtime --bin atelier-notebook-runtime) >&2
    fi
    ATELIER_BIN=$CARGO_TARGET_DIR/release/atelier
fi
RUNTIME_BIN=$(dirname "$ATELIER_BIN")/atelier-notebook-runtime
[[ -x $ATELIER_BIN && -x $RUNTIME_BIN ]] || die "no $ATELIER_BIN or $RUNTIME_BIN"
ML_VENV=$(ml_venv)
ORT_LIB=$(onnxruntime_lib "$ML_VENV")
JL_VENV=${ATELIER_TEST_JUPYTER_VENV:-$(jupyter_venv)}
PY_VENV=$(hashed_venv bench-inference-venv "$HERE/inference-requirements.txt")
S3S_FS=${ATELIER_TEST_S3S_FS:-$(s3s_fs_bin)}
wit_bindgen_bin >/dev/null # where `atelier plugin build` finds it ($ATELIER_CACHE/tools)
export ATELIER_CACHE

W=$(mktemp -d /tmp/atelier-bench-inference.XXXXXX)
declare -A PIDS=()
TOKEN='' IRIS_SERVICE='' IRIS_C_SERVICE='' ENGINE_SERVICE='' GW=''
# The engine instance outlives its gateway (services survive gateway restarts), so the
# services are deleted through the API before the gateway stops; a runtime of this run's
# that is still there after that (its spec lies under $W) is ended by its pid.
# shellcheck disable=SC2317 # called by the trap
cleanup() {
    local name id i p
    for id in $ENGINE_SERVICE $IRIS_SERVICE $IRIS_C_SERVICE; do
        alive gateway || break
        curl -sS -o /dev/null --max-time 10 -X DELETE -H "Authorization: Bearer $TOKEN" \
            "$GW/v1/services/$id" || true
        for ((i = 0; i < 120; i++)); do
            [[ $(curl -sS -o /dev/null -w '%{http_code}' --max-time 5 \
                -H "Authorization: Bearer $TOKEN" "$GW/v1/services/$id" || true) == 404 ]] && break
            sleep 0.5
        done
    done
    for name in "${!PIDS[@]}"; do stop_bg "$name"; done
    for p in /proc/[0-9]*; do
        if tr '\0' ' ' <"$p/cmdline" 2>/dev/null | grep -q -- "--spec $W/"; then
            log "ending the leftover engine runtime ${p#/proc/}"
            kill "${p#/proc/}" 2>/dev/null || true
        fi
    done
    if [[ ${KEEP_WORKDIR:-0} == 1 ]]; then log "work dir kept: $W"; else rm -rf "$W"; fi
}
trap cleanup EXIT
trap 'exit 130' INT TERM

free_port() { python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])'; }

# The model packages in the S3 server's root (a bucket is a directory there).
example=$ROOT/examples/inference/iris
iris=$W/s3/models/iris
iris_c=$W/s3/models/iris-c
c_example=$ROOT/examples/plugins/c-inference-processor
engine=$W/s3/models/engine
mkdir -p "$iris" "$engine/model"
"$ML_VENV/bin/python" "$example/train.py" "$iris" >&2
cp -r "$iris" "$iris_c"
"$ATELIER_BIN" plugin build "$example/processor" --output "$iris/model/customize_service.wasm" >&2
cp "$example/processor/plugin.json" "$iris/model/plugin.json"
"$ATELIER_BIN" plugin build "$c_example" --output "$iris_c/model/customize_service.wasm" >&2
cp "$c_example/plugin.json" "$iris_c/model/plugin.json"
cp "$HERE/inference/engine_server.py" "$engine/model/"
printf '{"model_algorithm": "fixed-answer", "model_type": "PyTorch"}\n' >"$engine/model/config.json"

# The request: 45 instances, top 2 (~1 KB).
body=$W/request.json
python3 - "$body" <<'EOF'
import json, random, sys
rng = random.Random(17)
rows = [[round(rng.uniform(lo, hi), 1) for lo, hi in ((4.3, 7.9), (2.0, 4.4), (1.0, 6.9), (0.1, 2.5))]
        for _ in range(45)]
json.dump({"instances": rows, "top_k": 2}, open(sys.argv[1], "w"))
EOF

# --- the systems under test -----------------------------------------------------------------
s3_port=$(free_port) gw_port=$(free_port) tr_port=$(free_port) ms_port=$(free_port) en_port=$(free_port)
ak=BENCH$RANDOM$RANDOM sk=bench-secret-$RANDOM$RANDOM
admin=atl_bench_admin_$RANDOM$RANDOM$RANDOM
start_bg s3 "" "$W/s3.log" "$S3S_FS" --host 127.0.0.1 --port "$s3_port" \
    --access-key "$ak" --secret-key "$sk" "$W/s3"
wait_for s3 30 "s3s-fs" port_open "$s3_port"

mkdir -p "$W/gw"
printf '[backend]\nkind = "process"\nsandbox = "bwrap"\nstart_timeout_secs = 180\n' >"$W/gw/config.toml"
start_bg gateway "$CPU_SUT" "$W/gateway.log" env ATELIER_CONFIG="$W/gw/config.toml" \
    ATELIER_DATA_DIR="$W/gw/data" ATELIER_HTTP_ADDR="127.0.0.1:$gw_port" ATELIER_SSH_ADDR=off \
    ATELIER_ADMIN_TOKEN="$admin" ATELIER_JUPYTER_VENV="$JL_VENV" \
    ATELIER_RUNTIME_BIN="$RUNTIME_BIN" ATELIER_ONNXRUNTIME_LIB="$ORT_LIB" \
    ATELIER_LOG="${ATELIER_LOG:-info}" ${PERF_TARGET:+ATELIER_PLUGIN_PERFMAP=1} \
    "$ATELIER_BIN" serve
GW=http://127.0.0.1:$gw_port
wait_for gateway 60 "the gateway" http_ok "$GW/healthz"
log "importing the models and deploying the services"
setup=$(python3 "$HERE/inference/setup.py" "$GW" "$admin" "http://127.0.0.1:$s3_port" "$ak" "$sk") ||
    die "setting up the gateway failed (see $W/gateway.log)"
eval "$setup"
AUTH="Authorization: Bearer $TOKEN"

start_bg model-server "$CPU_SUT" "$W/model-server.log" \
    "$PY_VENV/bin/python" "$HERE/inference/model_server.py" "$ms_port" "$iris/model/iris.onnx"
start_bg transformer "$CPU_SUT" "$W/transformer.log" "$PY_VENV/bin/python" \
    "$HERE/inference/transformer.py" "$tr_port" "http://127.0.0.1:$ms_port" "$iris/model/labels.txt"
start_bg engine-direct "$CPU_SUT" "$W/engine-direct.log" \
    "$JL_VENV/bin/python" "$HERE/inference/engine_server.py" "$en_port" 127.0.0.1
wait_for model-server 60 "the model server" http_ok "http://127.0.0.1:$ms_port/v2/models/iris/ready"
wait_for transformer 60 "the transformer" port_open "$tr_port"
wait_for engine-direct 30 "the direct engine" port_open "$en_port"

declare -A URL=(
    [atelier]="$GW/v1/infers/$IRIS_SERVICE"
    [atelier-c]="$GW/v1/infers/$IRIS_C_SERVICE"
    [kserve]="http://127.0.0.1:$tr_port/v1/models/iris:predict"
    [engine-gw]="$GW/v1/infers/$ENGINE_SERVICE/predictions/iris"
    [engine-direct]="http://127.0.0.1:$en_port/predictions/iris"
)
declare -A NEEDS=(
    [atelier]="gateway" [atelier-c]="gateway" [kserve]="transformer model-server"
    [engine-gw]="gateway" [engine-direct]="engine-direct"
)
post() { curl -fsS --max-time 10 -H 'Content-Type: application/json' "$@" --data-binary "@$body"; }
wait_for gateway 120 "the engine service to answer" \
    http_ok -X POST -H "$AUTH" --data-binary "@$body" "${URL[engine-gw]}"
# The same answer (labels and scores to 4 places) from Atelier and the KServe pattern, and
# the same bytes from the C and the Python processor.
a=$(post -H "$AUTH" "${URL[atelier]}") || die "Atelier's call failed: $a"
ac=$(post -H "$AUTH" "${URL[atelier-c]}") || die "Atelier's call with the C processor failed: $ac"
[[ $ac == "$a" ]] || die "the C processor answers differently from the Python one: $ac"
k=$(post "${URL[kserve]}") || die "the transformer's call failed: $k"
python3 - "$a" "$k" <<'EOF' || die "Atelier and the KServe pattern answer differently"
import json, sys
a, k = (json.loads(s)["predictions"] for s in sys.argv[1:3])
norm = lambda p: [[(x["label"], round(x["score"], 4)) for x in row] for row in p]
sys.exit(norm(a) != norm(k))
EOF
log "request $(wc -c <"$body") bytes; answer $(wc -c <<<"$a") bytes; same predictions from all three"

# --- measurements ---------------------------------------------------------------------------
RAW=$W/raw.tsv
: >"$RAW"
export BODY_FILE=$body

# measure TARGET CONNS ROUND — one wrk cell; appends its RESULT line (and the machine's busy
# share just before it: other work, as everything of ours is idle then) to $RAW.
measure() {
    local target=$1 conns=$2 round=$3 name busy out auth=""
    for name in ${NEEDS[$target]}; do alive "$name" || die "$name exited (see $W/$name.log)"; done
    [[ $target == atelier* || $target == engine-gw ]] && auth="Bearer $TOKEN"
    wait_quiet
    busy=$(machine_busy_pct)
    AUTH=$auth run_pinned "$CPU_LOAD" "$WRK" -t1 -c"$conns" -d"${WARMUP}s" --timeout 5s \
        -s "$HERE/inference/wrk.lua" "${URL[$target]}" >/dev/null
    local perf_pid=''
    if [[ $target == "${PERF_TARGET:-}" && $conns == 1 && $round == 1 ]]; then
        mkdir -p "$RESULTS_DIR"
        PERF_DATA=$RESULTS_DIR/inference-perf-$target-$(date -u +%Y%m%dT%H%M%SZ).data
        run_pinned "$CPU_LOAD" perf record -q -g -F 4999 -p "${PIDS[gateway]}" -o "$PERF_DATA" \
            -- sleep "$DURATION" 2>"$W/perf.log" &
        perf_pid=$!
    fi
    out=$(AUTH=$auth run_pinned "$CPU_LOAD" "$WRK" -t1 -c"$conns" -d"${DURATION}s" --timeout 5s \
        -s "$HERE/inference/wrk.lua" "${URL[$target]}") || die "wrk against $target failed: $out"
    if [[ -n $perf_pid ]]; then
        wait "$perf_pid" || log "perf record failed: $(cat "$W/perf.log")"
        log "profile of the gateway under $target: $PERF_DATA (perf report -i …)"
    fi
    out=$(grep '^RESULT' <<<"$out") || die "no result from wrk against $target"
    printf '%s\t%s\t%s\t%s other_pct=%s\n' "$target" "$conns" "$round" "$out" "$busy" >>"$RAW"
    log "$(printf '%-13s c=%-2s round %s: ' "$target" "$conns" "$round")$(grep -oE '(rps|p50_us|p99_us|status_err)=[0-9.]+' <<<"$out" | tr '\n' ' ')other=$busy%"
}

LOAD_BEFORE=$(cut -d' ' -f1-3 /proc/loadavg)
TAILS=()
BUSY_BEFORE=$(machine_busy_pct)
cells=()
for target in atelier atelier-c kserve engine-gw engine-direct; do
    for conns in 1 16; do cells+=("$target $conns"); done
done
for ((round = 1; round <= REPEAT; round++)); do
    n=${#cells[@]}
    for ((i = 0; i < n; i++)); do
        # shellcheck disable=SC2086 # "target conns"
        measure ${cells[$(((i + (round - 1) * 3) % n))]} "$round"
    done
    wait_quiet
    out=$(run_pinned "$CPU_SUT" "$PY_VENV/bin/python" "$HERE/inference/floor.py" \
        "$iris/model/iris.onnx" "$body" "$FLOOR_N")
    printf 'floor\t1\t%s\t%s\n' "$round" "$out" >>"$RAW"
    log "floor round $round: $out"
    for name in gateway engine-direct; do alive "$name" || die "$name exited (see $W/$name.log)"; done
    out=$(run_pinned "$CPU_LOAD" python3 "$HERE/http_rtt.py" \
        --target engine-direct "${URL[engine-direct]}" "" \
        --target engine-gw "${URL[engine-gw]}" "$AUTH" -n "$RTT_N" --warmup 300)
    grep '^RESULT' <<<"$out" | sed "s/^/rtt\t1\t$round\t/" >>"$RAW"
    log "interleaved round $round: $(grep -oE 'added_p50_us=[-0-9.]+' <<<"$out" | tr '\n' ' ')"
    for target in engine-gw engine-direct; do
        token=()
        [[ $target == engine-gw ]] && token=(--token "$TOKEN")
        out=$(run_pinned "$CPU_LOAD" python3 "$HERE/inference/tail.py" "${URL[$target]}" \
            "${token[@]}" --clients 16 --seconds "$DURATION" --rounds 1)
        TAILS+=("$target, round $round: ${out#round 1: }")
        log "slow calls, $target round $round: ${out#round 1: }"
    done
done
LOAD_AFTER=$(cut -d' ' -f1-3 /proc/loadavg)

# --- report ---------------------------------------------------------------------------------
mkdir -p "$RESULTS_DIR"
stamp=$(date -u +%Y%m%dT%H%M%SZ)
cp "$RAW" "$RESULTS_DIR/inference-$stamp.tsv"
meta=$W/meta.md
{
    echo "# Inference: Atelier vs the KServe pattern, $(date -u '+%Y-%m-%d %H:%M UTC'), commit $(git -C "$ROOT" rev-parse --short HEAD)"
    echo
    echo "- machine: $NCPU × $(lscpu | sed -n 's/^Model name: *//p' | head -n 1), $(awk '/MemTotal/ { printf "%.1f GiB", $2 / 1048576 }' /proc/meminfo), Linux $(uname -r)"
    echo "- load average (1, 5, 15 min) before: $LOAD_BEFORE; after: $LOAD_AFTER; busy with other work before: $BUSY_BEFORE %"
    echo "- systems under test on CPU ${CPU_SUT:-any}, the load generator on CPU ${CPU_LOAD:-any}"
    echo "- $(wrk -v 2>&1 | head -n 1 | sed 's/ Copyright.*//'), 1 thread; ${WARMUP} s warm-up + ${DURATION} s per cell; $REPEAT rounds, cells in a rotated order; medians over rounds"
    echo "- request $(wc -c <"$body") bytes (45 instances, top_k 2); answer $(wc -c <<<"$a") bytes"
    echo "- onnxruntime $("$PY_VENV/bin/python" -c 'import onnxruntime; print(onnxruntime.__version__)') (Atelier: $(basename "$ORT_LIB")), one intra-op thread per session everywhere; Python $("$PY_VENV/bin/python" -c 'import sys; print(sys.version.split()[0])'), $("$PY_VENV/bin/python" -c 'import fastapi, uvicorn, httpx; print(f"FastAPI {fastapi.__version__}, uvicorn {uvicorn.__version__} (uvloop, httptools), httpx {httpx.__version__}")')"
    echo "- floor: $FLOOR_N runs per round; interleaved engine requests: $RTT_N per round"
    echo "- calls slower than 900 ms at 16 clients (inference/tail.py: GET, fresh connections, ${DURATION} s a round):"
    for line in "${TAILS[@]}"; do echo "  - $line"; done
} >"$meta"
python3 "$HERE/inference/report.py" "$RAW" "$meta" | tee "$RESULTS_DIR/inference-$stamp.md"
log "report: $RESULTS_DIR/inference-$stamp.md"

exit 0
}
