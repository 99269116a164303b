# Helpers shared by bench/proxy.sh and bench/ssh.sh (sourced inside their brace group;
# they use those scripts' globals: PIDS, NCPU, QUIET_PCT, QUIET_WAIT, PARTS).

log() { printf '[%(%H:%M:%S)T] %s\n' -1 "$*" >&2; }

die() {
    log "error: $*"
    exit 1
}

# start_bg NAME CPUS LOGFILE CMD… — runs CMD in its own session/process group, pinned to CPUS.
start_bg() {
    local name=$1 cpus=$2 logf=$3
    shift 3
    if [[ -n $cpus ]]; then
        setsid taskset -c "$cpus" "$@" >"$logf" 2>&1 </dev/null &
    else
        setsid "$@" >"$logf" 2>&1 </dev/null &
    fi
    PIDS[$name]=$!
}

# stop_bg NAME — SIGTERM to the process group, SIGKILL after 15 s.
stop_bg() {
    local name=$1 pid=${PIDS[$1]:-} i
    [[ -n $pid ]] || return 0
    unset "PIDS[$name]"
    kill -TERM -- "-$pid" 2>/dev/null || kill -TERM "$pid" 2>/dev/null || true
    for ((i = 0; i < 150; i++)); do
        kill -0 -- "-$pid" 2>/dev/null || break
        sleep 0.1
    done
    kill -KILL -- "-$pid" 2>/dev/null || true
    wait "$pid" 2>/dev/null || true
}

alive() { [[ -n ${PIDS[$1]:-} ]] && kill -0 "${PIDS[$1]}" 2>/dev/null; }

# wait_for NAME SECONDS WHAT CMD… — until CMD succeeds; fails if NAME dies or time runs out.
wait_for() {
    local name=$1 secs=$2 what=$3 deadline=$((SECONDS + $2))
    shift 3
    until "$@"; do
        if ! alive "$name"; then
            tail -n 30 "$W/$name.log" >&2 2>/dev/null || true
            die "$name exited while waiting for $what"
        fi
        ((SECONDS < deadline)) || {
            tail -n 30 "$W/$name.log" >&2 2>/dev/null || true
            die "timed out after ${secs}s waiting for $what"
        }
        sleep 0.2
    done
}

http_ok() { curl -fsS -o /dev/null --max-time 2 "$@" 2>/dev/null; }

port_open() { (exec 3<>"/dev/tcp/127.0.0.1/$1") 2>/dev/null; }

json_field() { python3 -c 'import json,sys; print(json.load(sys.stdin)[sys.argv[1]])' "$1"; }

run_pinned() {
    local cpus=$1
    shift
    if [[ -n $cpus ]]; then taskset -c "$cpus" "$@"; else "$@"; fi
}

# CPU seconds used by this script's finished children: bash `times` (second line), which
# must run in this shell, not a $(…) subshell, so callers write it to a file first.
children_cpu() {
    sed -n 2p "$1" | awk '{
        t = 0
        for (i = 1; i <= 2; i++) { split($i, a, "m"); sub("s", "", a[2]); t += a[1] * 60 + a[2] }
        printf "%.2f", t }'
}

# The share of all CPUs that processes (user, nice, system time) used over one second, in %.
machine_busy_pct() {
    local u n s i w q sq st b0 t0
    read -r _ u n s i w q sq st _ </proc/stat
    b0=$((u + n + s)) t0=$((u + n + s + i + w + q + sq + st))
    sleep 1
    read -r _ u n s i w q sq st _ </proc/stat
    echo $((100 * (u + n + s - b0) / (u + n + s + i + w + q + sq + st - t0 + 1)))
}

wait_quiet() {
    local deadline=$((SECONDS + QUIET_WAIT)) busy
    while :; do
        busy=$(machine_busy_pct)
        ((busy <= QUIET_PCT)) && return 0
        if ((SECONDS >= deadline)); then
            log "warning: the machine is ${busy}% busy with other work; measuring anyway"
            return 0
        fi
        sleep 2
    done
}

# --- report header ------------------------------------------------------------------------------
version_of() { "$@" 2>&1 | head -n 1 || true; }

want() { [[ " $PARTS " == *" $1 "* ]]; }
