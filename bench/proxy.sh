#!/usr/bin/env bash
# Atelier's proxy benchmark: one run measures
#   1. proxy capacity: ~100-byte static file from nginx, direct and through Atelier,
#      configurable-http-proxy (CHP) and an nginx reverse proxy, at 1 and 64 connections;
#   2. end to end: GET /nb/{id}/api/status on a real JupyterLab, direct / Atelier / CHP;
#   3. a kernel WebSocket round trip (kernel_info_request), direct / Atelier / CHP;
#   2b/3 also for a sandboxed process notebook: its unix socket direct / through Atelier.
# Prints a markdown report on stdout and writes it (plus the raw numbers) under
# bench/results/. Progress goes to stderr. See docs/benchmarks.md for the method.
#
# Everything listens on 127.0.0.1, state lives in a fresh temporary directory, and every
# process the script starts is stopped on exit (each runs in its own process group).
#
# Knobs (environment):
#   ATELIER_BIN        gateway binary; default: build with `cargo build --release --workspace`
#                      into $CARGO_TARGET_DIR (default ${ATELIER_CACHE:-~/.cache/atelier}/target)
#   SKIP_BUILD=1       do not run cargo (use the existing release binary)
#   ATELIER_TEST_JUPYTER_VENV  JupyterLab venv (default: the one scripts/test.sh prepares)
#   CHP_DIR            where CHP is npm-installed (default ${ATELIER_CACHE:-~/.cache/atelier}/chp)
#   DURATION=10 WARMUP=2 REPEAT=4 CONNS=64   wrk seconds, warm-up seconds, rounds (each in a
#                                            rotated path order), high concurrency
#   WS_N=2000 WS_WARMUP=200                  WebSocket round trips per path and round
#   HTTP_N=3000 HTTP_WARMUP=300              interleaved one-connection requests per path and round
#   PARTS="capacity jupyter ws"              which sections to run
#   SANDBOXED=auto     also measure a sandboxed process notebook (its JupyterLab on a unix
#                      socket in its own network namespace, as the default backend runs them):
#                      auto = when running as root with bubblewrap and pasta; 1 = require; 0 = skip
#   ATELIER_RUNTIME_BIN  notebook runtime for it (default: next to ATELIER_BIN)
#   CPU_ORIGIN CPU_PROXY CPU_E2E_PROXY CPU_LOAD   taskset CPU lists (see below); "" = no pinning
#   ATELIER_LOG        the gateway's log filter (default info, as in production)
#   RESULTS_DIR        default bench/results;  KEEP_WORKDIR=1 keeps logs and configs
#   PERF=1             after the capacity rounds, profile the gateway (perf record, DWARF
#                      call graphs) during one extra c=CONNS run; reports land in RESULTS_DIR
set -euo pipefail
# The whole script is one brace group, so bash parses it completely before running it and
# an edit to this file cannot change a run in progress.
{

HERE=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
REPO=$(cd "$HERE/.." && pwd)
CACHE=${ATELIER_CACHE:-$HOME/.cache/atelier}
export CARGO_TARGET_DIR=${CARGO_TARGET_DIR:-$CACHE/target}
JL_VENV=${ATELIER_TEST_JUPYTER_VENV:-$(source "$REPO/scripts/lib.sh" && jupyter_venv)}
CHP_DIR=${CHP_DIR:-$CACHE/chp}
CHP_VERSION=${CHP_VERSION:-5.3.0}
NGINX=${NGINX:-$(command -v nginx || echo /usr/sbin/nginx)}
WRK=${WRK:-$(command -v wrk || echo /usr/bin/wrk)}
DURATION=${DURATION:-10}
WARMUP=${WARMUP:-2}
REPEAT=${REPEAT:-4}
CONNS=${CONNS:-64}
WS_N=${WS_N:-2000}
WS_WARMUP=${WS_WARMUP:-200}
HTTP_N=${HTTP_N:-3000}
HTTP_WARMUP=${HTTP_WARMUP:-300}
PARTS=${PARTS:-capacity jupyter ws}
RESULTS_DIR=${RESULTS_DIR:-$HERE/results}
GATEWAY_LOG=${ATELIER_LOG:-info}

# CPU placement. With 2 CPUs (the reference machine):
#   capacity: origin nginx + the proxy under test on CPU 0, wrk on CPU 1 — the system under
#             test gets one core, the load generator the other;
#   end to end: JupyterLab and its kernel on CPU 0 (the notebook's own CPU), the proxy under
#             test, wrk and the WebSocket client on CPU 1.
NCPU=$(nproc)
if ((NCPU >= 2)); then
    CPU_ORIGIN=${CPU_ORIGIN-0}
    CPU_PROXY=${CPU_PROXY-0}
    CPU_E2E_PROXY=${CPU_E2E_PROXY-1}
    CPU_LOAD=${CPU_LOAD-1}
else
    CPU_ORIGIN=${CPU_ORIGIN-} CPU_PROXY=${CPU_PROXY-} CPU_E2E_PROXY=${CPU_E2E_PROXY-} CPU_LOAD=${CPU_LOAD-}
fi

# shellcheck source=lib.sh
source "$HERE/lib.sh"

# Number of CPUs in a taskset list such as "0", "0-3" or "0,2"; all CPUs when empty.
cpu_count() {
    [[ -z $1 ]] && {
        echo "$NCPU"
        return
    }
    python3 - "$1" <<'EOF'
import sys
n = 0
for part in sys.argv[1].split(","):
    a, _, b = part.partition("-")
    n += (int(b) - int(a) + 1) if b else 1
print(n)
EOF
}
WRK_THREADS=${WRK_THREADS:-$(cpu_count "$CPU_LOAD")}

# The Debian packages it drives, installed when missing (as root; else it says which).
debs=()
[[ -x $NGINX ]] || debs+=(nginx)
[[ -x $WRK ]] || debs+=(wrk)
command -v npm >/dev/null || debs+=(nodejs npm) # (a NodeSource nodejs brings its own npm)
if ((${#debs[@]})); then
    (source "$REPO/scripts/lib.sh" && need_debs "${debs[@]}") >&2 || true
    # Debian starts the packaged nginx on port 80; the benchmark runs its own.
    [[ -x /etc/init.d/nginx ]] && /etc/init.d/nginx stop >/dev/null 2>&1 || true
    NGINX=$(command -v nginx || echo /usr/sbin/nginx)
    WRK=$(command -v wrk || echo /usr/bin/wrk)
fi
for tool in "$NGINX" "$WRK" curl python3 node npm setsid; do
    command -v "$tool" >/dev/null || die "$tool is not installed"
done
if [[ -n $CPU_ORIGIN$CPU_PROXY$CPU_E2E_PROXY$CPU_LOAD ]]; then
    command -v taskset >/dev/null || die "taskset is not installed (util-linux); or set CPU_*=''"
fi
[[ -x $JL_VENV/bin/jupyter ]] || die "no JupyterLab venv at $JL_VENV (set ATELIER_TEST_JUPYTER_VENV)"

# --- the gateway binary (release) -----------------------------------------------------------
if [[ -z ${ATELIER_BIN:-} ]]; then
    if [[ ${SKIP_BUILD:-0} != 1 ]]; then
        log "cargo build --release --workspace (CARGO_TARGET_DIR=$CARGO_TARGET_DIR)"
        if ! (cd "$REPO" && cargo build --release --workspace --quiet) >&2; then
            # Only the gateway matters here; don't let another crate's breakage stop the run.
            log "warning: the workspace does not build; building only the gateway"
            (cd "$REPO" && cargo build --release -p atelier-gateway --bin atelier --quiet) >&2
        fi
    fi
    ATELIER_BIN=$CARGO_TARGET_DIR/release/atelier
fi
[[ -x $ATELIER_BIN ]] || die "no gateway binary at $ATELIER_BIN"
RUNTIME_BIN=${ATELIER_RUNTIME_BIN:-$(dirname "$ATELIER_BIN")/atelier-notebook-runtime}
SANDBOXED=${SANDBOXED:-auto}
if [[ $SANDBOXED == auto ]]; then
    if ((EUID == 0)) && command -v bwrap >/dev/null && command -v pasta >/dev/null && [[ -x $RUNTIME_BIN ]]; then
        SANDBOXED=1
    else
        log "skipping the sandboxed notebook's paths (they need root, bwrap, pasta and $RUNTIME_BIN)"
        SANDBOXED=0
    fi
fi
if [[ $SANDBOXED == 1 ]]; then
    [[ -x $RUNTIME_BIN ]] || die "no notebook runtime at $RUNTIME_BIN (set ATELIER_RUNTIME_BIN)"
fi
[[ $ATELIER_BIN == */release/* ]] || log "warning: $ATELIER_BIN does not look like a release build"

# --- configurable-http-proxy, installed once outside the repository ---------------------------
CHP=$CHP_DIR/node_modules/.bin/configurable-http-proxy
if [[ ! -x $CHP ]]; then
    log "npm install configurable-http-proxy@$CHP_VERSION into $CHP_DIR"
    mkdir -p "$CHP_DIR"
    npm install --prefix "$CHP_DIR" --no-audit --no-fund --loglevel=error \
        "configurable-http-proxy@$CHP_VERSION" >&2
fi
[[ -x $CHP ]] || die "configurable-http-proxy did not install into $CHP_DIR"

# --- scratch space, process bookkeeping, cleanup ----------------------------------------------
W=$(mktemp -d "${TMPDIR:-/tmp}/proxybench.XXXXXX")
chmod 755 "$W" # nginx workers may run as another user
# The gateway runs as $W/bin/gateway (a hard link or copy), so that a colleague's
# `pkill atelier` / `pkill -f "atelier serve"` on a shared machine does not end the run.
mkdir -p "$W/bin"
ln "$ATELIER_BIN" "$W/bin/gateway" 2>/dev/null || cp "$ATELIER_BIN" "$W/bin/gateway"
if [[ $SANDBOXED == 1 ]]; then
    ln "$RUNTIME_BIN" "$W/bin/atelier-notebook-runtime" 2>/dev/null ||
        cp "$RUNTIME_BIN" "$W/bin/atelier-notebook-runtime"
fi
GW_EXE=$W/bin/gateway
RAW=$W/raw.tsv
: >"$RAW"
declare -A PIDS=()
KERNEL_URL=""

# Kernels run in their own session; Jupyter stops them on SIGTERM, and these are the
# stragglers, found by this run's unique runtime directory.
stop_kernels() {
    local pid
    if [[ -n $KERNEL_URL ]]; then
        curl -sS -o /dev/null --max-time 5 -X DELETE -H "Authorization: token $JL_TOKEN" "$KERNEL_URL" || true
        KERNEL_URL=""
    fi
    for pid in $(pgrep -f -- "$W/jl-runtime/kernel-" 2>/dev/null || true); do
        kill -TERM "$pid" 2>/dev/null || true
    done
}

# The sandboxed notebook outlives its gateway (notebooks survive gateway restarts), so it is
# deleted through the API before that gateway stops.
NB3=""
delete_sandboxed() {
    local i
    [[ -n $NB3 && -n ${PIDS[gateway-sb]:-} ]] || return 0
    curl -sS -o /dev/null --max-time 10 -X DELETE -H "$BEARER" "http://127.0.0.1:$P_GW3/v1/notebooks/$NB3" || true
    for ((i = 0; i < 120; i++)); do
        [[ $(curl -sS -o /dev/null -w '%{http_code}' --max-time 5 -H "$BEARER" \
            "http://127.0.0.1:$P_GW3/v1/notebooks/$NB3" || true) == 404 ]] && break
        sleep 0.5
    done
    NB3=""
}

cleanup() {
    local rc=$?
    trap - EXIT INT TERM
    delete_sandboxed
    [[ -n ${PIDS[jupyter]:-} ]] && stop_kernels
    local name
    for name in "${!PIDS[@]}"; do
        stop_bg "$name"
    done
    stop_kernels
    if ((rc == 0)) && [[ ${KEEP_WORKDIR:-0} != 1 ]]; then
        rm -rf "$W"
    else
        log "logs and configs kept in $W"
    fi
    exit "$rc"
}
trap cleanup EXIT
trap 'exit 130' INT
trap 'exit 143' TERM

# check_body URL EXPECTED_FILE|"" NEEDLE [curl args…] — one request must answer 200 and
# either equal the file or contain NEEDLE.
check_body() {
    local url=$1 file=$2 needle=$3 code
    shift 3
    code=$(curl -sS -o "$W/check.out" -w '%{http_code}' --max-time 10 "$@" "$url") || die "GET $url failed"
    [[ $code == 200 ]] || die "GET $url answered $code: $(head -c 300 "$W/check.out")"
    if [[ -n $file ]]; then
        cmp -s "$file" "$W/check.out" || die "GET $url did not return the expected body"
    else
        grep -q -- "$needle" "$W/check.out" || die "GET $url: no '$needle' in $(head -c 300 "$W/check.out")"
    fi
}

# Process groups of the named processes (PIDS, or EXTRA_PG for ones Jupyter started), as
# a comma-separated list; unknown names ("none") contribute nothing.
declare -A EXTRA_PG=()
pg_of() {
    local name out=""
    for name in "$@"; do
        out+="${PIDS[$name]:-${EXTRA_PG[$name]:-}},"
    done
    echo "$out"
}

# tree_of pids|pgs PID — PID and its descendants (space-separated), or their process groups
# (comma-separated).
tree_of() { python3 "$HERE/procs.py" tree "$1" "$2"; }
tree_pgs() { tree_of pgs "$1"; }

# pin_tree PID CPUS — PID and its descendants (every thread) on CPUS; nothing when CPUS is "".
pin_tree() {
    local root=$1 cpus=$2 pid
    [[ -n $cpus ]] || return 0
    for pid in $(tree_of pids "$root"); do
        taskset -a -p -c "$cpus" "$pid" >/dev/null 2>&1 || true
    done
}

# json_file_field FILE KEY… — a field of a JSON file (nested keys in order).
json_file_field() {
    python3 - "$@" <<'EOF'
import json, sys
v = json.load(open(sys.argv[1]))
for k in sys.argv[2:]:
    v = v[k]
print(v)
EOF
}

# cpu_snap "PROXY NAMES" "ORIGIN NAMES" — prints "proxy_s origin_s machine_busy_s": CPU seconds
# (user+system) used so far by those process groups, and by the whole machine.
cpu_snap() {
    # shellcheck disable=SC2086 # names are words
    python3 "$HERE/procs.py" groups "$(pg_of $1)" "$(pg_of $2)"
}

# cpu_fields BEFORE AFTER CLIENT0 CLIENT1 WALL0 WALL1 — the k=v CPU fields of a result line.
# other_cpu_pct: process CPU time (user+system) used outside the benchmark's processes, as a
# share of all CPUs; it approximates how much other work competed with the run.
cpu_fields() {
    python3 - "$@" "$NCPU" <<'EOF'
import sys
b, a = [list(map(float, x.split())) for x in sys.argv[1:3]]
c0, c1, w0, w1, ncpu = map(float, sys.argv[3:8])
proxy, origin, busy = a[0] - b[0], a[1] - b[1], a[2] - b[2]
client = c1 - c0
other = max(0.0, busy - proxy - origin - client) / (ncpu * max(w1 - w0, 1e-3)) * 100
print(f"proxy_cpu_s={proxy:.2f} origin_cpu_s={origin:.2f} client_cpu_s={client:.2f} other_cpu_pct={other:.1f}")
EOF
}

# Before each measurement: wait (at most QUIET_WAIT s) until other work on the machine uses
# at most QUIET_PCT % of it; shared build machines are noisy.
QUIET_PCT=${QUIET_PCT:-10}
QUIET_WAIT=${QUIET_WAIT:-30}

# require_alive NAME… — stop with a clear message when a server under test has gone away
# (on a shared machine, someone else's `pkill` is the usual reason).
require_alive() {
    local name
    for name in "$@"; do
        [[ -n ${PIDS[$name]:-} ]] || continue
        if ! alive "$name"; then
            tail -n 5 "$W/$name.log" >&2 2>/dev/null || true
            die "$name (pid ${PIDS[$name]}) exited during the benchmark; was it signalled by someone else?"
        fi
    done
}

# measure SECTION TARGET CONNS ROUND URL "PROXY NAMES" "ORIGIN NAMES" [wrk args (headers)…]
# shellcheck disable=SC2086 # $proxy and $origin are lists of names
measure() {
    local section=$1 target=$2 conns=$3 round=$4 url=$5 proxy=$6 origin=$7
    shift 7
    local threads=$WRK_THREADS out line before after c0 c1 w0 w1
    ((threads > conns)) && threads=$conns
    require_alive $proxy $origin
    wait_quiet
    run_pinned "$CPU_LOAD" timeout $((WARMUP + 30)) \
        "$WRK" -t"$threads" -c"$conns" -d"${WARMUP}s" --timeout 5s "$@" "$url" >/dev/null || {
        require_alive $proxy $origin
        die "wrk warm-up against $target failed"
    }
    before=$(cpu_snap "$proxy" "$origin")
    times >"$W/times.0"
    w0=$EPOCHREALTIME
    out=$(run_pinned "$CPU_LOAD" timeout $((DURATION + 30)) \
        "$WRK" -t"$threads" -c"$conns" -d"${DURATION}s" --timeout 5s \
        -s "$HERE/wrk-report.lua" "$@" "$url") || {
        require_alive $proxy $origin
        die "wrk against $target failed: $out"
    }
    w1=$EPOCHREALTIME
    times >"$W/times.1"
    c0=$(children_cpu "$W/times.0") c1=$(children_cpu "$W/times.1")
    after=$(cpu_snap "$proxy" "$origin")
    require_alive $proxy $origin
    line=$(grep '^RESULT' <<<"$out") || die "no result from wrk against $target: $out"
    line+=" $(cpu_fields "$before" "$after" "$c0" "$c1" "$w0" "$w1")"
    printf '%s\t%s\t%s\t%s\t%s\n' "$section" "$target" "$conns" "$round" "$line" >>"$RAW"
    log "$(printf '%-10s %-12s c=%-3s round %s: %s' "$section" "$target" "$conns" "$round" \
        "$(grep -oE '(rps|p50_us|p99_us|status_err|other_cpu_pct)=[0-9.]+' <<<"$line" | tr '\n' ' ')")"
}

# ws_measure SECTION TARGET ROUND URL HEADER "PROXY NAMES" "ORIGIN NAMES"
# shellcheck disable=SC2086
ws_measure() {
    local section=$1 target=$2 round=$3 url=$4 header=$5 proxy=$6 origin=$7
    local out line before after c0 c1 w0 w1
    require_alive $proxy $origin
    wait_quiet
    before=$(cpu_snap "$proxy" "$origin")
    times >"$W/times.0"
    w0=$EPOCHREALTIME
    out=$(run_pinned "$CPU_LOAD" timeout 600 "$JL_VENV/bin/python" "$HERE/ws_rtt.py" \
        --url "$url" --header "$header" -n "$WS_N" --warmup "$WS_WARMUP" --deadline 500) || {
        require_alive $proxy $origin
        die "WebSocket client against $target failed: $out"
    }
    w1=$EPOCHREALTIME
    times >"$W/times.1"
    c0=$(children_cpu "$W/times.0") c1=$(children_cpu "$W/times.1")
    after=$(cpu_snap "$proxy" "$origin")
    require_alive $proxy $origin
    line=$(grep '^RESULT' <<<"$out") || die "no result from ws_rtt.py against $target: $out"
    line+=" $(cpu_fields "$before" "$after" "$c0" "$c1" "$w0" "$w1")"
    printf '%s\t%s\t1\t%s\t%s\n' "$section" "$target" "$round" "$line" >>"$RAW"
    log "$(printf '%-10s %-12s       round %s: %s' "$section" "$target" "$round" \
        "$(grep -oE '(p50_us|p99_us|other_cpu_pct)=[0-9.]+' <<<"$line" | tr '\n' ' ')")"
}

# --- ports, secrets ---------------------------------------------------------------------------
read -r P_ORIGIN P_NPROXY P_CHP P_CHP_API P_GW P_GW2 P_JL P_CHP2 P_CHP2_API P_NPROXY2 P_GW3 < <(python3 - <<'EOF'
import socket
socks = []
for _ in range(11):
    s = socket.socket()
    s.bind(("127.0.0.1", 0))
    socks.append(s)
print(" ".join(str(s.getsockname()[1]) for s in socks))
EOF
)
ADMIN_TOKEN=atl_bench_$(python3 -c 'import secrets; print(secrets.token_urlsafe(24))')
JL_TOKEN=$(python3 -c 'import secrets; print(secrets.token_hex(24))')
BEARER="Authorization: Bearer $ADMIN_TOKEN"
JL_AUTH="Authorization: token $JL_TOKEN"
CHP_API_TOKEN=$(python3 -c 'import secrets; print(secrets.token_hex(24))')

# --- the gateway --------------------------------------------------------------------------------
# start_gateway NAME CPUS PORT UPSTREAM_URL [UPSTREAM_TOKEN] — UPSTREAM_URL "process": the
# default backend (sandboxed notebooks running the benchmark's JupyterLab venv).
start_gateway() {
    local name=$1 cpus=$2 port=$3 url=$4 token=${5:-} dir=$W/$1
    mkdir -p "$dir"
    if [[ $url == process ]]; then
        printf '[backend]\nkind = "process"\nsandbox = "bwrap"\nstart_timeout_secs = 180\n' >"$dir/config.toml"
    else
        {
            echo "[backend]"
            echo 'kind = "external"'
            echo "external_url = \"$url\""
            [[ -n $token ]] && echo "external_token = \"$token\""
            echo "start_timeout_secs = 30"
        } >"$dir/config.toml"
    fi
    start_bg "$name" "$cpus" "$W/$name.log" env \
        ATELIER_CONFIG="$dir/config.toml" ATELIER_DATA_DIR="$dir/data" \
        ATELIER_HTTP_ADDR="127.0.0.1:$port" ATELIER_SSH_ADDR=off ATELIER_ADMIN_TOKEN="$ADMIN_TOKEN" \
        ATELIER_JUPYTER_VENV="$JL_VENV" ATELIER_RUNTIME_BIN="$W/bin/atelier-notebook-runtime" \
        ATELIER_LOG="$GATEWAY_LOG" "$GW_EXE" serve
    wait_for "$name" 60 "$name /healthz" http_ok "http://127.0.0.1:$port/healthz"
}

notebook_running() {
    local port=$1 id=$2 body status
    body=$(curl -sS --max-time 5 -H "$BEARER" "http://127.0.0.1:$port/v1/notebooks/$id") || return 1
    status=$(json_field status <<<"$body")
    case $status in
    RUNNING) return 0 ;;
    CREATE_FAILED | START_FAILED | ERROR) die "notebook $id is $status: $body" ;;
    *) return 1 ;;
    esac
}

# create_notebook GATEWAY_NAME PORT — prints the new notebook's id once it is RUNNING.
create_notebook() {
    local name=$1 port=$2 body id
    body=$(curl -sS --max-time 10 -X POST -H "$BEARER" -H 'Content-Type: application/json' \
        -d '{"name":"bench"}' "http://127.0.0.1:$port/v1/notebooks") || die "creating a notebook failed"
    id=$(json_field id <<<"$body") || die "creating a notebook: $body"
    wait_for "$name" 180 "notebook $id to be RUNNING" notebook_running "$port" "$id"
    echo "$id"
}

# --- nginx --------------------------------------------------------------------------------------
NGINX_TEMPS='client_body_temp_path DIR/tmp/body; proxy_temp_path DIR/tmp/proxy;
    fastcgi_temp_path DIR/tmp/fastcgi; uwsgi_temp_path DIR/tmp/uwsgi; scgi_temp_path DIR/tmp/scgi;'

# nginx_conf NAME CPUS SERVER_BLOCK [HTTP_EXTRA]
nginx_conf() {
    local name=$1 cpus=$2 server=$3 extra=${4:-} dir=$W/$1
    mkdir -p "$dir/tmp"
    cat >"$dir/nginx.conf" <<EOF
daemon off;
worker_processes $(cpu_count "$cpus");
pid $dir/nginx.pid;
error_log $dir/error.log warn;
events { worker_connections 4096; }
http {
    access_log off;
    ${NGINX_TEMPS//DIR/$dir}
    default_type text/plain;
    keepalive_requests 1000000;
    keepalive_timeout 300s;
    $extra
    server {
$server
    }
}
EOF
}

start_nginx() { # NAME CPUS
    start_bg "$1" "$2" "$W/$1.log" "$NGINX" -p "$W/$1/" -e "$W/$1/error.log" -c "$W/$1/nginx.conf"
}

GIT_REV=$(git -C "$REPO" rev-parse --short HEAD 2>/dev/null || echo "no commit")
if [[ -n $(git -C "$REPO" status --porcelain --untracked-files=no 2>/dev/null || true) ]]; then
    GIT_REV+=" (with uncommitted changes)"
fi
CPU_MODEL=$(lscpu 2>/dev/null | sed -n 's/^Model name: *//p' | head -n 1)
[[ -n $CPU_MODEL ]] || CPU_MODEL=$(sed -n 's/^model name\s*: //p' /proc/cpuinfo | head -n 1)
MEM=$(awk '/MemTotal/ {printf "%.1f GiB", $2 / 1048576}' /proc/meminfo)
STAMP=$(date -u +%Y%m%dT%H%M%SZ)
JL_PY=$JL_VENV/bin/python
pyver() { "$JL_PY" -c "import importlib.metadata as m; print(m.version('$1'))" 2>/dev/null || echo "not installed"; }
pinning() { if [[ -n $1 ]]; then echo "CPU $1"; else echo "any CPU"; fi; }

cat >"$W/meta.md" <<EOF
# Atelier proxy benchmark ($(date -u '+%Y-%m-%d %H:%M UTC'))

| Machine | |
|---|---|
| CPU | $NCPU × $CPU_MODEL |
| Memory | $MEM |
| Kernel | $(uname -sr) |
| Load average at start | $(cut -d' ' -f1-3 /proc/loadavg) |

| Software | Version |
|---|---|
| Atelier | $(version_of "$ATELIER_BIN" --version), tree at commit $GIT_REV, binary \`$ATELIER_BIN\` built $(date -u -r "$ATELIER_BIN" '+%Y-%m-%d %H:%M UTC'), ATELIER_LOG=$GATEWAY_LOG |
| nginx | $(version_of "$NGINX" -v | sed 's/^nginx version: //') |
| wrk | $(version_of "$WRK" -v | sed 's/ Copyright.*//') |
| Node.js | $(node --version) |
| configurable-http-proxy | $(version_of "$CHP" --version) |
| JupyterLab | $(version_of "$JL_VENV/bin/jupyter-lab" --version), jupyter_server $(pyver jupyter_server), tornado $(pyver tornado), ipykernel $(pyver ipykernel) |
| Python (Jupyter venv) | $(version_of "$JL_PY" --version) |
| WebSocket client | websocket-client $(pyver websocket-client) |

Method: wrk with ${WRK_THREADS} thread(s); per cell ${WARMUP} s warm-up, then ${DURATION} s measured; $REPEAT interleaved
round(s), the tables show the median. Placement (taskset): capacity — origin nginx on
$(pinning "$CPU_ORIGIN"), the proxy under test on $(pinning "$CPU_PROXY"), wrk on $(pinning "$CPU_LOAD"); end to end — JupyterLab and its
kernel on $(pinning "$CPU_ORIGIN"), the proxy under test on $(pinning "$CPU_E2E_PROXY"), wrk and the WebSocket client on $(pinning "$CPU_LOAD").
"CPU µs/req" is the user+system CPU time of the proxy's (or origin's) processes during the
measured run divided by the requests served.
EOF
load1=$(cut -d' ' -f1 /proc/loadavg)
if python3 -c "import sys; sys.exit(0 if float('$load1') > 0.5 else 1)"; then
    log "warning: load average is $load1; other work on this machine will skew the numbers"
fi
log "workdir $W; ports origin=$P_ORIGIN nginx-proxy=$P_NPROXY chp=$P_CHP gateway=$P_GW"

# rotate N WORD… — the words rotated left by N, so that each round measures the paths in a
# different order and slow drift of the machine does not always favour the same path.
rotate() {
    local n=$1
    shift
    local words=("$@") k=$#
    for ((i = 0; i < k; i++)); do
        printf '%s ' "${words[$(((i + n) % k))]}"
    done
}

# --- 1. proxy capacity --------------------------------------------------------------------------
if want capacity; then
    mkdir -p "$W/www"
    # 100 bytes including the newline
    printf 'atelier proxy benchmark: a small static response body, one hundred bytes long, served by nginx...\n' \
        >"$W/www/small.txt"
    chmod 644 "$W/www/small.txt"
    chmod 755 "$W/www"

    nginx_conf nginx-origin "$CPU_ORIGIN" "        listen 127.0.0.1:$P_ORIGIN;
        root $W/www;
        location / { try_files /small.txt =404; }"
    nginx_conf nginx-proxy "$CPU_PROXY" "        listen 127.0.0.1:$P_NPROXY;
        location / {
            proxy_pass http://origin;
            proxy_http_version 1.1;
            proxy_set_header Connection \"\";
        }" "upstream origin {
        server 127.0.0.1:$P_ORIGIN;
        keepalive 64;
        keepalive_requests 1000000;
        keepalive_timeout 300s;
    }"
    start_nginx nginx-origin "$CPU_ORIGIN"
    start_nginx nginx-proxy "$CPU_PROXY"
    start_bg chp "$CPU_PROXY" "$W/chp.log" env CONFIGPROXY_AUTH_TOKEN="$CHP_API_TOKEN" \
        "$CHP" --ip 127.0.0.1 --port "$P_CHP" --api-ip 127.0.0.1 --api-port "$P_CHP_API" \
        --default-target "http://127.0.0.1:$P_ORIGIN"
    wait_for nginx-origin 30 "nginx origin" port_open "$P_ORIGIN"
    wait_for nginx-proxy 30 "nginx proxy" port_open "$P_NPROXY"
    wait_for chp 30 "configurable-http-proxy" port_open "$P_CHP"
    start_gateway gateway "$CPU_PROXY" "$P_GW" "http://127.0.0.1:$P_ORIGIN"
    NB=$(create_notebook gateway "$P_GW")
    log "capacity: notebook $NB is RUNNING on the gateway"

    PATH_SMALL="/nb/$NB/small.txt"
    declare -A URL=(
        [nginx]="http://127.0.0.1:$P_ORIGIN$PATH_SMALL"
        [atelier]="http://127.0.0.1:$P_GW$PATH_SMALL"
        [chp]="http://127.0.0.1:$P_CHP$PATH_SMALL"
        [nginx-proxy]="http://127.0.0.1:$P_NPROXY$PATH_SMALL"
    )
    declare -A PROC=([nginx]=nginx-origin [atelier]=gateway [chp]=chp [nginx-proxy]=nginx-proxy)
    for t in nginx atelier chp nginx-proxy; do
        if [[ $t == atelier ]]; then
            check_body "${URL[$t]}" "$W/www/small.txt" "" -H "$BEARER"
        else
            check_body "${URL[$t]}" "$W/www/small.txt" ""
        fi
    done
    for ((round = 1; round <= REPEAT; round++)); do
        for c in 1 "$CONNS"; do
            for t in $(rotate $((round - 1)) nginx atelier chp nginx-proxy); do
                proxy=${PROC[$t]}
                [[ $t == nginx ]] && proxy=none
                if [[ $t == atelier ]]; then
                    measure capacity "$t" "$c" "$round" "${URL[$t]}" "$proxy" nginx-origin -H "$BEARER"
                else
                    measure capacity "$t" "$c" "$round" "${URL[$t]}" "$proxy" nginx-origin
                fi
            done
        done
    done
    if [[ ${PERF:-0} == 1 ]]; then
        # One extra, unreported c=$CONNS run through Atelier with perf attached to the gateway.
        command -v perf >/dev/null || die "PERF=1 needs perf (linux-perf)"
        mkdir -p "$RESULTS_DIR"
        start_bg perf "$CPU_LOAD" "$W/perf.log" perf record -F "${PERF_FREQ:-499}" \
            --call-graph dwarf,32768 -o "$W/perf.data" -p "${PIDS[gateway]}" -- sleep "$DURATION"
        sleep 1
        run_pinned "$CPU_LOAD" timeout $((DURATION + 30)) "$WRK" -t"$WRK_THREADS" -c"$CONNS" \
            -d"${DURATION}s" --timeout 5s -H "$BEARER" "${URL[atelier]}" >"$W/perf-wrk.txt"
        for ((i = 0; i < 600; i++)); do
            kill -0 "${PIDS[perf]}" 2>/dev/null || break
            sleep 0.1
        done
        stop_bg perf
        # dso: kernel vs gateway vs libc; self: flat profile; children: inclusive times.
        for view in "dso --no-children --sort dso --percent-limit 0" \
            "self --no-children --sort symbol --percent-limit 0.01" \
            "children --children --sort symbol --percent-limit 0.5"; do
            # shellcheck disable=SC2086 # the view's options are words
            timeout 600 perf report -i "$W/perf.data" ${view#* } --stdio -g none \
                >"$RESULTS_DIR/perf-$STAMP-${view%% *}.txt" 2>/dev/null ||
                log "warning: perf report (${view%% *}) failed"
        done
        log "perf profiles: $RESULTS_DIR/perf-$STAMP-{dso,self,children}.txt"
    fi
    for name in gateway chp nginx-proxy nginx-origin; do stop_bg "$name"; done
fi

# --- 2./3. end to end on JupyterLab -------------------------------------------------------------
if want jupyter || want ws; then
    # The notebook's id is only known once it exists, and JupyterLab's base_url must be
    # /nb/{id}/; so a placeholder listener holds the port while the notebook is created.
    start_bg placeholder "" "$W/placeholder.log" python3 -c '
import socket, sys, time
s = socket.socket()
s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
s.bind(("127.0.0.1", int(sys.argv[1])))
s.listen(64)
time.sleep(600)' "$P_JL"
    wait_for placeholder 10 "placeholder listener" port_open "$P_JL"
    start_gateway gateway-jl "$CPU_E2E_PROXY" "$P_GW2" "http://127.0.0.1:$P_JL" "$JL_TOKEN"
    NB=$(create_notebook gateway-jl "$P_GW2")
    stop_bg placeholder
    log "end to end: notebook $NB; starting JupyterLab with base_url /nb/$NB/"

    JL_BASE="http://127.0.0.1:$P_JL/nb/$NB"
    mkdir -p "$W/jl-root" "$W/jl-runtime" "$W/jl-data" "$W/ipython" "$W/jl-config" "$W/jl-config-nodelay"
    cp "$HERE/jupyter-nodelay/jupyter_server_config.py" "$W/jl-config-nodelay/"
    # start_jupyter CONFIG_DIR — JupyterLab on the notebook's route, pinned with its kernels.
    start_jupyter() {
        start_bg jupyter "$CPU_ORIGIN" "$W/jupyter.log" env \
            JUPYTER_RUNTIME_DIR="$W/jl-runtime" JUPYTER_CONFIG_DIR="$1" \
            JUPYTER_DATA_DIR="$W/jl-data" IPYTHONDIR="$W/ipython" \
            "$JL_VENV/bin/jupyter" lab --no-browser --ip 127.0.0.1 --port "$P_JL" \
            --ServerApp.port_retries=0 --ServerApp.token="$JL_TOKEN" \
            --ServerApp.base_url="/nb/$NB/" --ServerApp.root_dir="$W/jl-root" --allow-root
        wait_for jupyter 120 "JupyterLab" http_ok -H "$JL_AUTH" "$JL_BASE/api/status"
    }
    start_jupyter "$W/jl-config"

    start_bg chp-jl "$CPU_E2E_PROXY" "$W/chp-jl.log" env CONFIGPROXY_AUTH_TOKEN="$CHP_API_TOKEN" \
        "$CHP" --ip 127.0.0.1 --port "$P_CHP2" --api-ip 127.0.0.1 --api-port "$P_CHP2_API" \
        --default-target "http://127.0.0.1:$P_JL"
    wait_for chp-jl 30 "configurable-http-proxy" port_open "$P_CHP2"
    # Control: nginx as the proxy (WebSocket-capable, upstream keep-alive), to tell what any
    # proxy in front of Jupyter costs from what Atelier costs.
    nginx_conf nginx-proxy-jl "$CPU_E2E_PROXY" "        listen 127.0.0.1:$P_NPROXY2;
        location / {
            proxy_pass http://jupyter;
            proxy_http_version 1.1;
            proxy_set_header Host \$http_host;
            proxy_set_header Upgrade \$http_upgrade;
            proxy_set_header Connection \$connection_upgrade;
            proxy_read_timeout 600s;
        }" "upstream jupyter {
        server 127.0.0.1:$P_JL;
        keepalive 64;
        keepalive_requests 1000000;
        keepalive_timeout 300s;
    }
    map \$http_upgrade \$connection_upgrade { default upgrade; '' ''; }"
    start_nginx nginx-proxy-jl "$CPU_E2E_PROXY"
    wait_for nginx-proxy-jl 30 "nginx proxy" port_open "$P_NPROXY2"

    # The default backend's notebook: JupyterLab in bubblewrap as uid 1000, in its own network
    # namespace, on a unix socket that the gateway proxies to. "sandboxed-direct" talks to that
    # socket itself, with the notebook's own Jupyter token; "sandboxed" goes through Atelier.
    SB_PATHS=""
    if [[ $SANDBOXED == 1 ]]; then
        start_gateway gateway-sb "$CPU_E2E_PROXY" "$P_GW3" process
        NB3=$(create_notebook gateway-sb "$P_GW3")
        grep -q 'notebooks run sandboxed' "$W/gateway-sb.log" ||
            die "gateway-sb does not run its notebooks sandboxed: $(tail -n 5 "$W/gateway-sb.log")"
        SB_DIR=$W/gateway-sb/data/notebooks/$NB3
        # A unix socket's path must fit in 108 bytes: reach it through a short link.
        ln -sfn "$SB_DIR/run/agent" "$W/sb"
        SB_SOCK=$W/sb/jupyter.sock
        SB_TOKEN=$(json_file_field "$SB_DIR/run/config/jupyter_server_config.json" IdentityProvider token)
        SB_RT=$(json_file_field "$SB_DIR/run/status.json" runtime_pid)
        SB_ENC=$(python3 -c 'import sys, urllib.parse; print(urllib.parse.quote(sys.argv[1], safe=""))' "$SB_SOCK")
        # The notebook's processes go on JupyterLab's CPU (the gateway started them on its own).
        pin_tree "$SB_RT" "$CPU_ORIGIN"
        EXTRA_PG[sandboxed-nb]=$(tree_pgs "$SB_RT")
        SB_PATHS="sandboxed-direct sandboxed"
        log "end to end: sandboxed notebook $NB3 is RUNNING (runtime pid $SB_RT)"
    fi

    STATUS_PATH="/nb/$NB/api/status"
    declare -A JURL=(
        [direct]="http://127.0.0.1:$P_JL$STATUS_PATH"
        [atelier]="http://127.0.0.1:$P_GW2$STATUS_PATH"
        [chp]="http://127.0.0.1:$P_CHP2$STATUS_PATH"
        [nginx-proxy]="http://127.0.0.1:$P_NPROXY2$STATUS_PATH"
    )
    declare -A JHDR=([direct]="$JL_AUTH" [atelier]="$BEARER" [chp]="$JL_AUTH" [nginx-proxy]="$JL_AUTH")
    declare -A JPROC=([direct]=none [atelier]=gateway-jl [chp]=chp-jl [nginx-proxy]=nginx-proxy-jl)
    E2E_PATHS="direct atelier chp nginx-proxy"
    for t in $E2E_PATHS; do
        check_body "${JURL[$t]}" "" '"started"' -H "${JHDR[$t]}"
    done
    if [[ -n $SB_PATHS ]]; then
        JURL[sandboxed-direct]="http+unix://$SB_ENC/nb/$NB3/api/status"
        JURL[sandboxed]="http://127.0.0.1:$P_GW3/nb/$NB3/api/status"
        JHDR[sandboxed-direct]="Authorization: token $SB_TOKEN"
        JHDR[sandboxed]=$BEARER
        JPROC[sandboxed-direct]=none
        JPROC[sandboxed]=gateway-sb
        check_body "${JURL[sandboxed]}" "" '"started"' -H "$BEARER"
        code=$(curl -sS -o "$W/check.out" -w '%{http_code}' --max-time 10 --unix-socket "$SB_SOCK" \
            -H "${JHDR[sandboxed-direct]}" "http://localhost/nb/$NB3/api/status") ||
            die "the sandboxed notebook's socket does not answer"
        [[ $code == 200 ]] || die "the sandboxed notebook's socket answered $code: $(head -c 300 "$W/check.out")"
    fi

    if want jupyter; then
        for ((round = 1; round <= REPEAT; round++)); do
            for c in 1 "$CONNS"; do
                for t in $(rotate $((round - 1)) $E2E_PATHS); do
                    measure jupyter "$t" "$c" "$round" "${JURL[$t]}" "${JPROC[$t]}" jupyter -H "${JHDR[$t]}"
                done
            done
        done
        # One connection per path, requests interleaved path by path (bench/http_rtt.py):
        # the machine's drift cancels out of the added latency.
        for ((round = 1; round <= REPEAT; round++)); do
            args=()
            for t in $E2E_PATHS $SB_PATHS; do
                args+=(--target "$t" "${JURL[$t]}" "${JHDR[$t]}")
            done
            [[ -n $SB_PATHS ]] && args+=(--pair sandboxed sandboxed-direct)
            require_alive gateway-jl chp-jl nginx-proxy-jl jupyter gateway-sb
            wait_quiet
            out=$(run_pinned "$CPU_LOAD" timeout 600 python3 "$HERE/http_rtt.py" "${args[@]}" \
                -n "$HTTP_N" --warmup "$HTTP_WARMUP" --deadline 500) ||
                die "http_rtt.py failed: $out"
            while read -r line; do
                t=$(grep -oE 'target=[a-z-]+' <<<"$line" | cut -d= -f2)
                printf 'jupyter-interleaved\t%s\t1\t%s\t%s\n' "$t" "$round" "$line" >>"$RAW"
                log "$(printf '%-10s %-12s       round %s: %s' interleaved "$t" "$round" \
                    "$(grep -oE '(p50_us|p99_us|added_p50_us)=[-0-9.]+' <<<"$line" | tr '\n' ' ')")"
            done < <(grep '^RESULT' <<<"$out")
        done
    fi

    # ws_rounds SECTION [PATHS] — a fresh kernel, then REPEAT rounds over every path (and over
    # the sandboxed notebook's, with a kernel of its own, when PATHS names them).
    ws_rounds() {
        local section=$1 paths=${2:-$E2E_PATHS} body kid ws_path t round skid="" origin
        body=$(curl -sS --max-time 30 -X POST -H "$JL_AUTH" -H 'Content-Type: application/json' \
            -d '{"name":"python3"}' "$JL_BASE/api/kernels") || die "starting a kernel failed"
        kid=$(json_field id <<<"$body") || die "starting a kernel: $body"
        KERNEL_URL="$JL_BASE/api/kernels/$kid"
        log "$section: kernel $kid started"
        # The kernel runs in a session of its own; count its CPU with Jupyter's.
        local kpid
        kpid=$(pgrep -f -- "$W/jl-runtime/kernel-$kid" | head -n 1 || true)
        EXTRA_PG[kernel]=$( [[ -n $kpid ]] && ps -o pgid= -p "$kpid" | tr -d ' ' || true)
        ws_path="/nb/$NB/api/kernels/$kid/channels"
        declare -A wurl=(
            [direct]="ws://127.0.0.1:$P_JL$ws_path"
            [atelier]="ws://127.0.0.1:$P_GW2$ws_path"
            [chp]="ws://127.0.0.1:$P_CHP2$ws_path"
            [nginx-proxy]="ws://127.0.0.1:$P_NPROXY2$ws_path"
        )
        if [[ $paths == *sandboxed* ]]; then
            body=$(curl -sS --max-time 30 --unix-socket "$SB_SOCK" -X POST \
                -H "${JHDR[sandboxed-direct]}" -H 'Content-Type: application/json' \
                -d '{"name":"python3"}' "http://localhost/nb/$NB3/api/kernels") ||
                die "starting a kernel in the sandboxed notebook failed"
            skid=$(json_field id <<<"$body") || die "starting a kernel in the sandboxed notebook: $body"
            # Started by JupyterLab, the kernel shares its CPU; count it with the notebook.
            EXTRA_PG[sandboxed-nb]=$(tree_pgs "$SB_RT")
            wurl[sandboxed-direct]="ws+unix://$SB_ENC/nb/$NB3/api/kernels/$skid/channels"
            wurl[sandboxed]="ws://127.0.0.1:$P_GW3/nb/$NB3/api/kernels/$skid/channels"
            log "$section: kernel $skid started in the sandboxed notebook"
        fi
        for ((round = 1; round <= REPEAT; round++)); do
            for t in $(rotate $((round - 1)) $paths); do
                origin="jupyter kernel"
                [[ $t == sandboxed* ]] && origin=sandboxed-nb
                ws_measure "$section" "$t" "$round" "${wurl[$t]}" "${JHDR[$t]}" "${JPROC[$t]}" "$origin"
            done
        done
        stop_kernels
        EXTRA_PG[kernel]=""
        if [[ -n $skid ]]; then
            curl -sS -o /dev/null --max-time 10 --unix-socket "$SB_SOCK" -X DELETE \
                -H "${JHDR[sandboxed-direct]}" "http://localhost/nb/$NB3/api/kernels/$skid" || true
        fi
    }
    if want ws; then
        ws_rounds ws "$E2E_PATHS $SB_PATHS"
        if [[ ${WS_NODELAY:-1} == 1 ]]; then
            # The same, with TCP_NODELAY on Jupyter's kernel WebSockets (see the template).
            stop_bg jupyter
            start_jupyter "$W/jl-config-nodelay"
            ws_rounds ws-nodelay
        fi
    fi
    delete_sandboxed
    for name in nginx-proxy-jl chp-jl gateway-jl jupyter gateway-sb; do stop_bg "$name"; done
fi

# --- report -------------------------------------------------------------------------------------
mkdir -p "$RESULTS_DIR"
OUT=$RESULTS_DIR/proxy-$STAMP.md
python3 "$HERE/report.py" "$RAW" "$W/meta.md" >"$OUT"
cp "$RAW" "$RESULTS_DIR/proxy-$STAMP.tsv"
cp "$OUT" "$RESULTS_DIR/latest.md"
cat "$OUT"
log "report written to $OUT (raw numbers: $RESULTS_DIR/proxy-$STAMP.tsv)"
exit 0
}
