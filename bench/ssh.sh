#!/usr/bin/env bash
# Atelier's SSH front door benchmark: one run measures, for two paths,
#   A. "Atelier":      OpenSSH client → the gateway's SSH front door (russh) → the notebook's
#                      SSH agent (atelier-notebook-runtime, over a unix socket) → its work dir;
#   B. "OpenSSH sshd": OpenSSH client → Debian's sshd, started here on a loopback port with
#                      its own host key and config → a directory in the same temp dir;
# 1. scp throughput (OpenSSH's default SFTP mode) of a file of random data (1 GiB), upload
#    and download, per cipher variant, with the servers' CPU time per GiB;
# 2. latency of a new connection + `exec true` (`ssh HOST true`), p50 and p95.
# Rounds are interleaved A/B (the order alternates), so slow drift of the machine does not
# favour one path. Prints a markdown report on stdout and writes it (plus the raw numbers)
# under bench/results/ (ssh-STAMP.md, ssh-STAMP.tsv, ssh-latest.md). Progress goes to stderr. See docs/benchmarks.md for the method.
#
# Everything listens on 127.0.0.1, state lives in a fresh temporary directory, and every
# process the script starts is stopped on exit (each runs in its own process group; the
# notebook is deleted through the API, which stops its runtime).
#
# Knobs (environment):
#   ATELIER_BIN        gateway binary; default: build with `cargo build --release --workspace`
#                      into $CARGO_TARGET_DIR (default ${ATELIER_CACHE:-~/.cache/atelier}/target)
#   ATELIER_RUNTIME_BIN  notebook runtime; default: atelier-notebook-runtime next to ATELIER_BIN
#   SKIP_BUILD=1       do not run cargo (use the existing release binaries)
#   ATELIER_TEST_JUPYTER_VENV  JupyterLab venv (default: the one scripts/test.sh prepares)
#   ATELIER_SANDBOX    passed to the gateway (default auto: bubblewrap, notebooks refused without it)
#   SIZE_MIB=1024      size of the test file
#   REPEAT=3           scp rounds per cipher variant and direction (the report shows medians)
#   CIPHERS="default aes256-gcm@openssh.com"   cipher variants for scp: "default" leaves the
#                      choice to the client's defaults (chacha20-poly1305 on both servers),
#                      anything else is passed as -o Ciphers=…
#   N=50 LAT_WARMUP=5  `ssh HOST true` connections per path and variant (after warm-up ones)
#   LAT_KEX="default curve25519-sha256"   key exchange variants for the latency part: OpenSSH
#                      9.2 prefers sntrup761x25519 (sshd has it, the gateway does not), the
#                      second variant pins both to the same key exchange
#   PARTS="scp latency"   which sections to run
#   CPU_SERVER CPU_CLIENT   taskset CPU lists for the servers (gateway with its notebook
#                      runtime, sshd) and the clients (scp, ssh); default "" = no pinning
#   SSHD               default /usr/sbin/sshd (Debian's openssh-server, installed when missing)
#   SFTP_SUBSYSTEM     sshd's sftp subsystem, default internal-sftp (in process, like the
#                      notebook agent's sftp); e.g. /usr/lib/openssh/sftp-server
#   SSHD_CLEAN_HOME=1  run sshd in its own mount namespace with an empty directory over root's
#                      home, so its sessions start bash without this machine's ~/.bashrc, as
#                      the notebook's sessions do (0: root's real home)
#   QUIET_PCT=10 QUIET_WAIT=15   before each measured pair, wait up to QUIET_WAIT s for
#                      other work to drop to QUIET_PCT % of the machine
#   ATELIER_LOG        the gateway's log filter (default info, as in production)
#   RESULTS_DIR        default bench/results;  KEEP_WORKDIR=1 keeps logs and configs
set -euo pipefail
# The whole script is one brace group, so bash parses it completely before running it and
# an edit to this file cannot change a run in progress.
{

HERE=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
REPO=$(cd "$HERE/.." && pwd)
CACHE=${ATELIER_CACHE:-$HOME/.cache/atelier}
export CARGO_TARGET_DIR=${CARGO_TARGET_DIR:-$CACHE/target}
JL_VENV=${ATELIER_TEST_JUPYTER_VENV:-$(source "$REPO/scripts/lib.sh" && jupyter_venv)}
SSHD=${SSHD:-/usr/sbin/sshd}
SFTP_SUBSYSTEM=${SFTP_SUBSYSTEM:-internal-sftp}
SIZE_MIB=${SIZE_MIB:-1024}
REPEAT=${REPEAT:-3}
CIPHERS=${CIPHERS:-default aes256-gcm@openssh.com}
N=${N:-50}
LAT_WARMUP=${LAT_WARMUP:-5}
LAT_KEX=${LAT_KEX:-default curve25519-sha256}
PARTS=${PARTS:-scp latency}
CPU_SERVER=${CPU_SERVER:-}
CPU_CLIENT=${CPU_CLIENT:-}
QUIET_PCT=${QUIET_PCT:-10}
QUIET_WAIT=${QUIET_WAIT:-15}
RESULTS_DIR=${RESULTS_DIR:-$HERE/results}
GATEWAY_LOG=${ATELIER_LOG:-info}
NCPU=$(nproc)

# shellcheck source=lib.sh
source "$HERE/lib.sh"

# --- tools --------------------------------------------------------------------------------------
if [[ ! -x $SSHD ]]; then
    log "$SSHD is missing; installing Debian's openssh-server"
    # shellcheck source=../scripts/lib.sh
    (source "$REPO/scripts/lib.sh" && need_debs openssh-server) >&2 ||
        die "could not install openssh-server (run as root, or set SSHD)"
fi
for tool in "$SSHD" ssh scp ssh-keygen sha256sum curl python3 setsid; do
    command -v "$tool" >/dev/null || die "$tool is not installed"
done
if [[ -n $CPU_SERVER$CPU_CLIENT ]]; then
    command -v taskset >/dev/null || die "taskset is not installed (util-linux); or set CPU_*=''"
fi
[[ -x $JL_VENV/bin/jupyter ]] || die "no JupyterLab venv at $JL_VENV (set ATELIER_TEST_JUPYTER_VENV)"
((SIZE_MIB > 0 && REPEAT > 0 && N > 0)) || die "SIZE_MIB, REPEAT and N must be positive"

# --- the gateway and notebook runtime binaries (release) ----------------------------------------
if [[ -z ${ATELIER_BIN:-} ]]; then
    if [[ ${SKIP_BUILD:-0} != 1 ]]; then
        log "cargo build --release --workspace (CARGO_TARGET_DIR=$CARGO_TARGET_DIR)"
        if ! (cd "$REPO" && cargo build --release --workspace --quiet) >&2; then
            # Only the gateway and the runtime matter here.
            log "warning: the workspace does not build; building only the gateway and the runtime"
            (cd "$REPO" && cargo build --release -p atelier-gateway --bin atelier \
                -p atelier-notebook-runtime --quiet) >&2
        fi
    fi
    ATELIER_BIN=$CARGO_TARGET_DIR/release/atelier
fi
RUNTIME_BIN=${ATELIER_RUNTIME_BIN:-$(dirname "$ATELIER_BIN")/atelier-notebook-runtime}
[[ -x $ATELIER_BIN ]] || die "no gateway binary at $ATELIER_BIN"
[[ -x $RUNTIME_BIN ]] || die "no notebook runtime at $RUNTIME_BIN (set ATELIER_RUNTIME_BIN)"
[[ $ATELIER_BIN == */release/* ]] || log "warning: $ATELIER_BIN does not look like a release build"

# --- scratch space, process bookkeeping, cleanup ----------------------------------------------
W=$(mktemp -d "${TMPDIR:-/tmp}/sshbench.XXXXXX")
# The gateway runs as $W/bin/gateway and the runtime next to it (hard links or copies), so
# that a colleague's `pkill atelier` on a shared machine does not end the run.
mkdir -p "$W/bin"
ln "$ATELIER_BIN" "$W/bin/gateway" 2>/dev/null || cp "$ATELIER_BIN" "$W/bin/gateway"
ln "$RUNTIME_BIN" "$W/bin/atelier-notebook-runtime" 2>/dev/null ||
    cp "$RUNTIME_BIN" "$W/bin/atelier-notebook-runtime"
GW_EXE=$W/bin/gateway
DATA=$W/data
RAW=$W/raw.tsv
ALGOS=$W/algos.tsv
: >"$RAW"
: >"$ALGOS"
declare -A PIDS=()
NB=""
RT_PID=""

# The notebook's runtime runs in a session of its own and outlives the gateway by design.
# Its logs are copied out first (deleting the notebook removes them); then the notebook is
# deleted through the API, which stops the runtime; if that fails, the runtime gets SIGTERM
# (it stops Jupyter and the agent's sessions itself) and, 30 s later, what is left of its
# process tree gets SIGKILL.
descendants() { # PID — the PID and every process below it
    ps -e -o pid=,ppid= | awk -v root="$1" '
        { parent[$1] = $2 }
        END {
            keep[root] = 1; changed = 1
            while (changed) { changed = 0
                for (p in parent) if (!(p in keep) && (parent[p] in keep)) { keep[p] = 1; changed = 1 } }
            for (p in keep) print p }'
}
stop_notebook() {
    local i pids
    [[ -n $NB ]] || return 0
    mkdir -p "$W/notebook-logs"
    cp "$DATA/notebooks/$NB/run/runtime.log" "$DATA/notebooks/$NB/run/agent/jupyter.log" \
        "$W/notebook-logs/" 2>/dev/null || true
    if alive gateway; then
        curl -sS -o /dev/null --max-time 10 -X DELETE -H "$BEARER" \
            "http://127.0.0.1:$P_HTTP/v1/notebooks/$NB" 2>/dev/null || true
        for ((i = 0; i < 150; i++)); do
            [[ -n $RT_PID ]] && kill -0 "$RT_PID" 2>/dev/null || break
            sleep 0.2
        done
    fi
    if [[ -n $RT_PID ]] && kill -0 "$RT_PID" 2>/dev/null; then
        log "stopping the notebook runtime (pid $RT_PID) by signal"
        pids=$(descendants "$RT_PID")
        kill -TERM "$RT_PID" 2>/dev/null || true
        for ((i = 0; i < 300; i++)); do
            kill -0 "$RT_PID" 2>/dev/null || break
            sleep 0.1
        done
        # shellcheck disable=SC2086 # a list of pids
        kill -KILL $pids 2>/dev/null || true
    fi
    NB="" RT_PID=""
}

cleanup() {
    local rc=$?
    trap - EXIT INT TERM
    stop_notebook
    local name
    for name in "${!PIDS[@]}"; do
        stop_bg "$name"
    done
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

# When the Atelier path fails: what the gateway and the notebook wrote.
dump_atelier_logs() {
    local f
    for f in "$W/gateway.log" "$DATA"/notebooks/*/run/runtime.log "$DATA"/notebooks/*/run/agent/jupyter.log; do
        [[ -f $f ]] || continue
        log "---- last lines of $f"
        tail -n 40 "$f" >&2 || true
    done
}

# require_alive NAME… — stop with a clear message when a server under test has gone away.
require_alive() {
    local name
    for name in "$@"; do
        if ! alive "$name"; then
            tail -n 20 "$W/$name.log" >&2 2>/dev/null || true
            die "$name (pid ${PIDS[$name]:-?}) exited during the benchmark; was it signalled by someone else?"
        fi
    done
    if [[ -n $RT_PID ]] && ! kill -0 "$RT_PID" 2>/dev/null; then
        dump_atelier_logs
        die "the notebook runtime (pid $RT_PID) exited during the benchmark"
    fi
}

# cpu_snap — prints "gateway_s runtime_s sshd_s machine_busy_s gateway_sys_s runtime_sys_s
# sshd_sys_s": CPU seconds (user+system, then system alone; including reaped children) used so far by the gateway process, by the notebook runtime's
# process tree (the runtime outside the sandbox, bwrap, the runtime inside it with the SSH
# agent and its sftp server, JupyterLab idling, the agent's sessions), by sshd's process tree
# (the listener and the per-connection processes; finished ones are counted through their
# parents), and by the whole machine.
cpu_snap() {
    # The gateway started the runtime (its child, in its own session): the gateway alone.
    python3 "$HERE/procs.py" trees "${PIDS[gateway]:-0}" "${RT_PID:-0}" "${PIDS[sshd]:-0}"
}

# --- ports, secrets, keys -----------------------------------------------------------------------
read -r P_HTTP P_SSH P_SSHD < <(python3 - <<'EOF'
import socket
socks = []
for _ in range(3):
    s = socket.socket()
    s.bind(("127.0.0.1", 0))
    socks.append(s)
print(" ".join(str(s.getsockname()[1]) for s in socks))
EOF
)
ADMIN_TOKEN=atl_bench_$(python3 -c 'import secrets; print(secrets.token_urlsafe(24))')
BEARER="Authorization: Bearer $ADMIN_TOKEN"
mkdir -p "$W/keys" "$W/sshd" "$W/sshd-home" "$W/client"
ssh-keygen -q -t ed25519 -N '' -C sshbench-host -f "$W/sshd/host_ed25519"
ssh-keygen -q -t ed25519 -N '' -C sshbench-client -f "$W/keys/sshd_client"
cp "$W/keys/sshd_client.pub" "$W/sshd/authorized_keys"
# Both clients: no user or system config, no agent, no known_hosts, the given key only.
unset SSH_AUTH_SOCK
SSH_BASE=(-F /dev/null -o StrictHostKeyChecking=no -o UserKnownHostsFile=/dev/null
    -o BatchMode=yes -o IdentitiesOnly=yes -o ConnectTimeout=10)
SSH_QUIET=(-o LogLevel=ERROR)

# --- sshd -------------------------------------------------------------------------------------------
# Privilege separation wants this directory (Debian's service creates it at boot).
[[ -d /run/sshd ]] || mkdir -p -m 0755 /run/sshd
cat >"$W/sshd/sshd_config" <<EOF
Port $P_SSHD
ListenAddress 127.0.0.1
HostKey $W/sshd/host_ed25519
PidFile $W/sshd/sshd.pid
AuthorizedKeysFile $W/sshd/authorized_keys
PubkeyAuthentication yes
PasswordAuthentication no
KbdInteractiveAuthentication no
PermitRootLogin prohibit-password
UsePAM no
StrictModes no
PrintMotd no
PrintLastLog no
UseDNS no
Subsystem sftp $SFTP_SUBSYSTEM
EOF
"$SSHD" -t -f "$W/sshd/sshd_config" 2>"$W/sshd-check.log" ||
    die "sshd rejects its config: $(cat "$W/sshd-check.log")"
# sshd's sessions run root's shell in root's home, where this machine's ~/.bashrc may do slow
# work on every `ssh HOST true` (bash reads it when started by sshd), while the notebook's
# sessions start in an empty home. With SSHD_CLEAN_HOME=1 (the default) sshd runs in a mount
# namespace of its own where $W/sshd-home, empty but for the uploads, is mounted over root's
# home, so that both servers start the same bash with an empty home.
SSHD_HOME_OF_ROOT=$(getent passwd root | cut -d: -f6)
if [[ ${SSHD_CLEAN_HOME:-1} == 1 ]]; then
    command -v unshare >/dev/null || die "unshare (util-linux) is missing; or set SSHD_CLEAN_HOME=0"
    start_bg sshd "$CPU_SERVER" "$W/sshd.log" unshare --mount --propagation private \
        sh -c 'mount --bind "$1" "$2" && exec "$3" -D -e -f "$4"' sh \
        "$W/sshd-home" "$SSHD_HOME_OF_ROOT" "$SSHD" "$W/sshd/sshd_config"
else
    start_bg sshd "$CPU_SERVER" "$W/sshd.log" "$SSHD" -D -e -f "$W/sshd/sshd_config"
fi
wait_for sshd 30 "sshd" port_open "$P_SSHD"

# --- the gateway and the notebook ---------------------------------------------------------------
start_bg gateway "$CPU_SERVER" "$W/gateway.log" env \
    ATELIER_DATA_DIR="$DATA" ATELIER_HTTP_ADDR="127.0.0.1:$P_HTTP" \
    ATELIER_SSH_ADDR="127.0.0.1:$P_SSH" ATELIER_SSH_PORTS=off \
    ATELIER_ADMIN_TOKEN="$ADMIN_TOKEN" ATELIER_JUPYTER_VENV="$JL_VENV" \
    ATELIER_RUNTIME_BIN="$W/bin/atelier-notebook-runtime" \
    ${ATELIER_SANDBOX:+ATELIER_SANDBOX="$ATELIER_SANDBOX"} \
    ATELIER_LOG="$GATEWAY_LOG" NO_COLOR=1 "$GW_EXE" serve
wait_for gateway 60 "gateway /healthz" http_ok "http://127.0.0.1:$P_HTTP/healthz"
wait_for gateway 30 "the gateway's SSH port" port_open "$P_SSH"

api() { # METHOD PATH [JSON] — prints the body; fails on an HTTP error
    local method=$1 path=$2 body=${3:-} code
    if [[ -n $body ]]; then
        code=$(curl -sS -o "$W/api.out" -w '%{http_code}' --max-time 15 -X "$method" -H "$BEARER" \
            -H 'Content-Type: application/json' -d "$body" "http://127.0.0.1:$P_HTTP$path") || return 1
    else
        code=$(curl -sS -o "$W/api.out" -w '%{http_code}' --max-time 15 -X "$method" -H "$BEARER" \
            "http://127.0.0.1:$P_HTTP$path") || return 1
    fi
    [[ $code == 2* ]] || {
        log "$method $path answered $code: $(head -c 400 "$W/api.out")"
        return 1
    }
    cat "$W/api.out"
}

body=$(api POST /v1/keypairs '{"name":"bench"}') || die "creating a key pair failed"
python3 -c 'import json,sys; sys.stdout.write(json.load(sys.stdin)["private_key"])' \
    <<<"$body" >"$W/keys/atelier_client"
chmod 600 "$W/keys/atelier_client"
[[ $(tail -c 1 "$W/keys/atelier_client" | od -An -c | tr -d ' ') == '\n' ]] || echo >>"$W/keys/atelier_client"
body=$(api POST /v1/notebooks '{"name":"bench","ssh":{"enabled":true,"key_pairs":["bench"]}}') ||
    die "creating a notebook failed"
NB=$(json_field id <<<"$body") || die "creating a notebook: $body"

notebook_running() {
    local body status
    body=$(api GET "/v1/notebooks/$NB") || return 1
    status=$(json_field status <<<"$body")
    case $status in
    RUNNING) return 0 ;;
    CREATE_FAILED | START_FAILED | ERROR)
        dump_atelier_logs
        die "notebook $NB is $status: $body"
        ;;
    *) return 1 ;;
    esac
}
wait_for gateway 180 "notebook $NB to be RUNNING" notebook_running
WORKDIR=$DATA/notebooks/$NB/work
[[ -d $WORKDIR ]] || die "no work dir at $WORKDIR"
# The runtime outside the sandbox: its command line names the notebook's run/spec.json.
RT_PID=$(pgrep -f -- "--spec $DATA/notebooks/$NB/run/spec.json" | head -n 1 || true)
[[ -n $RT_PID ]] || log "warning: the notebook runtime's process was not found; its CPU time is not reported"
SANDBOX=$(grep -q 'notebooks run sandboxed' "$W/gateway.log" && echo "bubblewrap, uid 1000, own network namespace" || echo "none")
log "notebook $NB is RUNNING (runtime pid ${RT_PID:-?}, sandbox: $SANDBOX)"

# The two paths: user@host, port, key, where relative paths land (Atelier) or the absolute
# target directory (sshd: its user is root, whose home is elsewhere).
declare -A HOST=([atelier]=bench@127.0.0.1 [sshd]=root@127.0.0.1)
declare -A PORT=([atelier]=$P_SSH [sshd]=$P_SSHD)
declare -A KEY=([atelier]=$W/keys/atelier_client [sshd]=$W/keys/sshd_client)
declare -A RPATH=([atelier]=upload.bin [sshd]=$W/sshd-home/upload.bin)
declare -A LPATH=([atelier]=$WORKDIR/upload.bin [sshd]=$W/sshd-home/upload.bin)
PATHS="atelier sshd"

ssh_to() { # PATH [ssh options…] COMMAND…
    local t=$1
    shift
    ssh "${SSH_BASE[@]}" -p "${PORT[$t]}" -i "${KEY[$t]}" "$@"
}

# Both servers must answer `ssh … true` (the notebook's agent may still be starting).
for t in $PATHS; do
    deadline=$((SECONDS + 60))
    until ssh_to "$t" -n "${SSH_QUIET[@]}" "${HOST[$t]}" true 2>"$W/ssh-check.err"; do
        if ((SECONDS >= deadline)); then
            [[ $t == atelier ]] && dump_atelier_logs
            tail -n 20 "$W/sshd.log" >&2 || true
            die "ssh to $t failed: $(cat "$W/ssh-check.err")"
        fi
        sleep 1
    done
done
log "both SSH servers answer (Atelier on $P_SSH, sshd on $P_SSHD)"

# cipher_opts VARIANT — the ssh/scp options of a cipher variant.
cipher_opts() { [[ $1 == default ]] || printf '%s\n' -o "Ciphers=$1"; }
kex_opts() { [[ $1 == default ]] || printf '%s\n' -o "KexAlgorithms=$1"; }

# What each path and variant negotiates, from `ssh -v`.
probe_algos() { # PATH LABEL [options…]
    local t=$1 label=$2 out
    shift 2
    out=$(ssh_to "$t" -n -v "$@" "${HOST[$t]}" true 2>&1 | tr -d '\r') || {
        [[ $t == atelier ]] && dump_atelier_logs
        die "ssh -v to $t ($label) failed: $(tail -n 20 <<<"$out")"
    }
    printf '%s\t%s\t%s\t%s\t%s\t%s\n' "$t" "$label" \
        "$(sed -n 's/.*remote software version //p' <<<"$out" | head -n 1)" \
        "$(sed -n 's/.*kex: algorithm: //p' <<<"$out" | head -n 1)" \
        "$(sed -n 's/.*kex: host key algorithm: //p' <<<"$out" | head -n 1)" \
        "$(sed -n 's/.*kex: client->server cipher: \([^ ]*\) MAC: \([^ ]*\).*/\1 (MAC \2)/p' <<<"$out" | head -n 1)" \
        >>"$ALGOS"
}
for t in $PATHS; do
    for c in $CIPHERS; do
        # shellcheck disable=SC2046 # the options are words
        probe_algos "$t" "scp cipher $c" $(cipher_opts "$c")
    done
    for k in $LAT_KEX; do
        # shellcheck disable=SC2046
        [[ $k == default ]] || probe_algos "$t" "latency kex $k" $(kex_opts "$k")
    done
done

# What `ssh HOST CMD` runs in, on each path (the same bash; the home it starts in).
declare -A SHELL_ENV=()
for t in $PATHS; do
    SHELL_ENV[$t]=$(ssh_to "$t" -n "${SSH_QUIET[@]}" "${HOST[$t]}" \
        'echo "shell $SHELL, HOME=$HOME holding [$(ls -A "$HOME" 2>/dev/null | head -n 8 | xargs)], cwd $PWD"' 2>&1 | tr -d '\r') ||
        die "ssh to $t failed: ${SHELL_ENV[$t]}"
    log "$t sessions: ${SHELL_ENV[$t]}"
done

GIT_REV=$(git -C "$REPO" rev-parse --short HEAD 2>/dev/null || echo "no commit")
if [[ -n $(git -C "$REPO" status --porcelain --untracked-files=no 2>/dev/null || true) ]]; then
    GIT_REV+=" (with uncommitted changes)"
fi
CPU_MODEL=$(lscpu 2>/dev/null | sed -n 's/^Model name: *//p' | head -n 1)
[[ -n $CPU_MODEL ]] || CPU_MODEL=$(sed -n 's/^model name\s*: //p' /proc/cpuinfo | head -n 1)
MEM=$(awk '/MemTotal/ {printf "%.1f GiB", $2 / 1048576}' /proc/meminfo)
FS=$(df -T "$W" | awk 'NR == 2 {print $2 " on " $1}')
STAMP=$(date -u +%Y%m%dT%H%M%SZ)
pinning() { if [[ -n $1 ]]; then echo "CPU $1"; else echo "any CPU (no pinning)"; fi; }
SSHD_PKG=$(dpkg-query -W -f='${Version}' openssh-server 2>/dev/null || echo "?")
SSH_PKG=$(dpkg-query -W -f='${Version}' openssh-client 2>/dev/null || echo "?")

cat >"$W/meta.md" <<EOF
# Atelier SSH front door benchmark ($(date -u '+%Y-%m-%d %H:%M UTC'))

| Machine | |
|---|---|
| CPU | $NCPU × $CPU_MODEL |
| Memory | $MEM |
| Kernel | $(uname -sr) |
| Filesystem of the temp dir | $FS |
| Load average at start | $(cut -d' ' -f1-3 /proc/loadavg) |

| Software | Version |
|---|---|
| Atelier | $(version_of "$ATELIER_BIN" --version), tree at commit $GIT_REV, binaries \`$ATELIER_BIN\` (built $(date -u -r "$ATELIER_BIN" '+%Y-%m-%d %H:%M UTC')) and \`$RUNTIME_BIN\` (built $(date -u -r "$RUNTIME_BIN" '+%Y-%m-%d %H:%M UTC')), ATELIER_LOG=$GATEWAY_LOG, notebook sandbox: $SANDBOX |
| OpenSSH server | $(version_of "$SSHD" -V | sed 's/,.*//') (Debian openssh-server $SSHD_PKG), sftp subsystem \`$SFTP_SUBSYSTEM\` |
| Sessions (\`echo \$SHELL \$HOME…\` over each path) | Atelier: ${SHELL_ENV[atelier]}; sshd: ${SHELL_ENV[sshd]} |
| OpenSSH client (ssh, scp) | $(version_of ssh -V) (Debian openssh-client $SSH_PKG) |

Method: a ${SIZE_MIB} MiB file of random data (made once per run, in the temp dir) is copied
with \`scp\` (OpenSSH's default SFTP mode) into each server's target directory and back
(into the temp dir), $REPEAT round(s) per cipher variant and direction, Atelier and sshd back
to back in alternating order; before each transfer the target is removed and \`sync\` runs,
and before each pair the script waits up to ${QUIET_WAIT} s for the machine to be quiet. MB/s is
10^6 bytes per second of the whole \`scp\` command (connection set-up included). The checksum
of each path's first uploaded copy and first download is verified. Latency: $N × \`ssh HOST
true\` per path and key exchange variant (after $LAT_WARMUP warm-up ones), a new connection
each, interleaved A/B/B/A…, timed around the client process. Servers run on
$(pinning "$CPU_SERVER"), clients on $(pinning "$CPU_CLIENT"). Both clients: \`-F /dev/null\`, no agent, ed25519 keys; both
servers: ed25519 host keys. "CPU s/GiB" is user+system CPU time during the transfer divided by
the GiB moved: the gateway process; the notebook runtime's process tree (outside and inside
the sandbox: the SSH agent with its sftp server, an idle JupyterLab); sshd's process tree; the
client (\`scp\` and its \`ssh\`).
EOF
load1=$(cut -d' ' -f1 /proc/loadavg)
if python3 -c "import sys; sys.exit(0 if float('$load1') > 0.5 else 1)"; then
    log "warning: load average is $load1; other work on this machine will skew the numbers"
fi
log "workdir $W; ports gateway http=$P_HTTP ssh=$P_SSH, sshd=$P_SSHD"

# sshd's per-connection processes end after the client; wait (up to 5 s) for them, so that
# their CPU time has reached the listener's.
wait_sshd_children() {
    local i
    for ((i = 0; i < 50; i++)); do
        pgrep -P "${PIDS[sshd]}" >/dev/null || break
        sleep 0.1
    done
}

# --- 1. scp throughput --------------------------------------------------------------------------
# scp_measure PATH CIPHER DIRECTION ROUND
scp_measure() {
    local t=$1 cipher=$2 dir=$3 round=$4 before after c0 c1 w0 w1 rc src dst i
    local -a opts
    mapfile -t opts < <(cipher_opts "$cipher")
    if [[ $dir == upload ]]; then
        rm -f "${LPATH[$t]}"
        src=$SRC dst="${HOST[$t]}:${RPATH[$t]}"
    else
        rm -f "$W/client/download.bin"
        src="${HOST[$t]}:${RPATH[$t]}" dst=$W/client/download.bin
    fi
    sync
    require_alive gateway sshd
    before=$(cpu_snap)
    times >"$W/times.0"
    w0=$EPOCHREALTIME
    rc=0
    run_pinned "$CPU_CLIENT" scp -q "${SSH_BASE[@]}" "${SSH_QUIET[@]}" "${opts[@]}" \
        -P "${PORT[$t]}" -i "${KEY[$t]}" "$src" "$dst" 2>"$W/scp.err" || rc=$?
    w1=$EPOCHREALTIME
    times >"$W/times.1"
    wait_sshd_children
    after=$(cpu_snap)
    if ((rc != 0)); then
        [[ $t == atelier ]] && dump_atelier_logs
        [[ $t == sshd ]] && tail -n 20 "$W/sshd.log" >&2
        die "scp $dir via $t (cipher $cipher) failed with status $rc: $(cat "$W/scp.err")"
    fi
    require_alive gateway sshd
    c0=$(children_cpu "$W/times.0") c1=$(children_cpu "$W/times.1")
    local line
    line=$(python3 - "$before" "$after" "$c0" "$c1" "$w0" "$w1" "$BYTES" "$NCPU" <<'EOF'
import sys
b, a = [list(map(float, x.split())) for x in sys.argv[1:3]]
c0, c1, w0, w1 = map(float, sys.argv[3:7])
nbytes, ncpu = int(sys.argv[7]), int(sys.argv[8])
gw, rt, sshd, busy, gw_sys, rt_sys, sshd_sys = (a[i] - b[i] for i in range(7))
client = c1 - c0
secs = w1 - w0
other = max(0.0, busy - gw - rt - sshd - client) / (ncpu * max(secs, 1e-3)) * 100
print(f"bytes={nbytes} secs={secs:.3f} mbps={nbytes / secs / 1e6:.1f} gw_cpu_s={gw:.2f} "
      f"rt_cpu_s={rt:.2f} sshd_cpu_s={sshd:.2f} client_cpu_s={client:.2f} other_cpu_pct={other:.1f} "
      f"gw_sys_s={gw_sys:.2f} rt_sys_s={rt_sys:.2f} sshd_sys_s={sshd_sys:.2f}")
EOF
)
    printf 'scp\t%s\t%s\t%s\t%s\t%s\n' "$t" "$cipher" "$dir" "$round" "$line" >>"$RAW"
    log "$(printf 'scp %-8s %-7s %-24s round %s: %s' "$dir" "$t" "$cipher" "$round" \
        "$(grep -oE '(mbps|gw_cpu_s|rt_cpu_s|sshd_cpu_s|client_cpu_s|other_cpu_pct)=[0-9.]+' <<<"$line" | tr '\n' ' ')")"
}

# verify PATH DIRECTION — the copy just made is the source, byte for byte.
verify() {
    local t=$1 dir=$2 sum
    if [[ $dir == upload ]]; then
        sum=$(sha256sum "${LPATH[$t]}" | cut -d' ' -f1)
    else
        sum=$(sha256sum "$W/client/download.bin" | cut -d' ' -f1)
    fi
    [[ $sum == "$SRC_SUM" ]] || die "$dir via $t: the copy's sha256 $sum differs from the source's $SRC_SUM"
    log "$dir via $t: sha256 matches the source"
}

if want scp; then
    SRC=$W/client/source.bin
    BYTES=$((SIZE_MIB * 1048576))
    log "making $SIZE_MIB MiB of random data"
    head -c "$BYTES" /dev/urandom >"$SRC"
    SRC_SUM=$(sha256sum "$SRC" | cut -d' ' -f1)
    declare -A VERIFIED=()
    pair=0
    for c in $CIPHERS; do
        for ((round = 1; round <= REPEAT; round++)); do
            for dir in upload download; do
                if ((pair % 2 == 0)); then order="atelier sshd"; else order="sshd atelier"; fi
                pair=$((pair + 1))
                wait_quiet
                for t in $order; do
                    scp_measure "$t" "$c" "$dir" "$round"
                    if [[ -z ${VERIFIED[$t-$dir]:-} ]]; then
                        verify "$t" "$dir"
                        VERIFIED[$t-$dir]=1
                    fi
                done
            done
        done
    done
    rm -f "$W/client/download.bin"
fi

# --- 2. connect + exec latency ------------------------------------------------------------------
if want latency; then
    for kex in $LAT_KEX; do
        mapfile -t kopts < <(kex_opts "$kex")
        for ((i = 0; i < LAT_WARMUP; i++)); do
            for t in $PATHS; do
                run_pinned "$CPU_CLIENT" ssh -n "${SSH_BASE[@]}" "${SSH_QUIET[@]}" "${kopts[@]}" \
                    -p "${PORT[$t]}" -i "${KEY[$t]}" "${HOST[$t]}" true ||
                    die "ssh $t true (kex $kex) failed during the warm-up"
            done
        done
        wait_quiet
        require_alive gateway sshd
        before=$(cpu_snap)
        for ((i = 1; i <= N; i++)); do
            if ((i % 2 == 1)); then order="atelier sshd"; else order="sshd atelier"; fi
            for t in $order; do
                w0=$EPOCHREALTIME
                rc=0
                run_pinned "$CPU_CLIENT" ssh -n "${SSH_BASE[@]}" "${SSH_QUIET[@]}" "${kopts[@]}" \
                    -p "${PORT[$t]}" -i "${KEY[$t]}" "${HOST[$t]}" true 2>"$W/ssh.err" || rc=$?
                w1=$EPOCHREALTIME
                if ((rc != 0)); then
                    [[ $t == atelier ]] && dump_atelier_logs
                    die "ssh $t true (kex $kex) failed with status $rc: $(cat "$W/ssh.err")"
                fi
                printf 'latency\t%s\t%s\t-\t%s\tms=%s\n' "$t" "$kex" "$i" \
                    "$(awk -v a="$w0" -v b="$w1" 'BEGIN { printf "%.3f", (b - a) * 1000 }')" >>"$RAW"
            done
        done
        wait_sshd_children
        after=$(cpu_snap)
        printf 'latency-cpu\t-\t%s\t-\t-\tbefore=%s after=%s\n' "$kex" "${before// /,}" "${after// /,}" >>"$RAW"
        require_alive gateway sshd
        log "latency (kex $kex): $(python3 - "$RAW" "$kex" <<'EOF'
import statistics, sys
ms = {}
for line in open(sys.argv[1]):
    f = line.rstrip("\n").split("\t")
    if f[0] == "latency" and f[2] == sys.argv[2]:
        ms.setdefault(f[1], []).append(float(f[5].split("=")[1]))
print(" ".join(f"{t} p50={statistics.median(v):.1f}ms" for t, v in sorted(ms.items())))
EOF
)"
    done
fi

if grep -qiE ' (ERROR|WARN) ' "$W/gateway.log"; then
    log "the gateway logged warnings or errors:"
    grep -iE ' (ERROR|WARN) ' "$W/gateway.log" | tail -n 10 >&2 || true
fi
grep -iE ' (ERROR|WARN) ' "$W/gateway.log" | tail -n 20 >"$W/gateway-warnings.txt" || true

# --- report -------------------------------------------------------------------------------------
mkdir -p "$RESULTS_DIR"
OUT=$RESULTS_DIR/ssh-$STAMP.md
python3 - "$RAW" "$W/meta.md" "$ALGOS" "$W/gateway-warnings.txt" >"$OUT" <<'EOF'
import statistics, sys
from collections import defaultdict

raw, meta, algos, warnings = sys.argv[1:5]
GOAL_SCP = 0.7      # Atelier's scp throughput at least 0.7x OpenSSH's
GOAL_LAT = 2.0      # connect + exec within 2x of OpenSSH's
NAMES = {"atelier": "Atelier (gateway → notebook agent)", "sshd": "OpenSSH sshd"}
GIB = 1 << 30

def kv(s):
    return {k: v for k, v in (p.split("=", 1) for p in s.split())}

def fmt(x, d=1):
    return f"{x:,.{d}f}"

def rng(vals, d=2, suffix="×"):
    return f"{fmt(statistics.median(vals), d)}{suffix} ({fmt(min(vals), d)}{suffix} … {fmt(max(vals), d)}{suffix})"

def pct(vals, p):
    v = sorted(vals)
    k = (len(v) - 1) * p / 100
    lo, hi = int(k), min(int(k) + 1, len(v) - 1)
    return v[lo] + (v[hi] - v[lo]) * (k - lo)

scp = defaultdict(dict)       # (cipher, dir) -> path -> round -> fields
lat = defaultdict(lambda: defaultdict(list))  # kex -> path -> [ms]
latcpu = {}
order_c, order_k = [], []
for line in open(raw):
    f = line.rstrip("\n").split("\t")
    if f[0] == "scp":
        _, t, c, d, r, rest = f
        scp[(c, d)].setdefault(t, {})[int(r)] = kv(rest)
        if c not in order_c:
            order_c.append(c)
    elif f[0] == "latency":
        lat[f[2]][f[1]].append(float(kv(f[5])["ms"]))
        if f[2] not in order_k:
            order_k.append(f[2])
    elif f[0] == "latency-cpu":
        latcpu[f[2]] = kv(f[5])

print(open(meta).read())
rows = [l.rstrip("\n").split("\t") for l in open(algos) if l.strip()]
if rows:
    print("Negotiated (from `ssh -v`):\n")
    print("| Path | Variant | Server | Key exchange | Host key | Cipher |")
    print("|---|---|---|---|---|---|")
    for t, label, server, kex, hk, cipher in rows:
        print(f"| {NAMES.get(t, t)} | {label} | {server} | {kex} | {hk} | {cipher} |")
    print()

verdicts = []
if scp:
    print("## 1. scp throughput (MB/s, median of the rounds)\n")
    print("| Cipher variant | Path | upload MB/s | download MB/s | server CPU s/GiB up | server CPU s/GiB down | of which gateway up / down | client CPU s/GiB up / down |")
    print("|---|---|--:|--:|--:|--:|--:|--:|")
    for c in order_c:
        for t in ("atelier", "sshd"):
            cells, cpu_up_down, gw_ud, cl_ud = [], [], [], []
            for d in ("upload", "download"):
                rounds = scp[(c, d)].get(t, {})
                if not rounds:
                    cells.append("–"); cpu_up_down.append("–"); gw_ud.append("–"); cl_ud.append("–")
                    continue
                vals = list(rounds.values())
                gib = int(vals[0]["bytes"]) / GIB
                cells.append(fmt(statistics.median(float(v["mbps"]) for v in vals)))
                if t == "atelier":
                    srv = [(float(v["gw_cpu_s"]) + float(v["rt_cpu_s"])) / gib for v in vals]
                    gw_ud.append(fmt(statistics.median(float(v["gw_cpu_s"]) / gib for v in vals), 2))
                else:
                    srv = [float(v["sshd_cpu_s"]) / gib for v in vals]
                    gw_ud.append("–")
                cpu_up_down.append(fmt(statistics.median(srv), 2))
                cl_ud.append(fmt(statistics.median(float(v["client_cpu_s"]) / gib for v in vals), 2))
            gw_cell = "–" if t == "sshd" else f"{gw_ud[0]} / {gw_ud[1]}"
            print(f"| {c} | {NAMES[t]} | {cells[0]} | {cells[1]} | {cpu_up_down[0]} | {cpu_up_down[1]} | {gw_cell} | {cl_ud[0]} / {cl_ud[1]} |")
    print()
    other = [float(v["other_cpu_pct"]) for cd in scp.values() for rs in cd.values() for v in rs.values()]
    print(f"Other work on the machine during the transfers (process CPU time outside the benchmark's processes, as a share of all CPUs): median {statistics.median(other):.1f} %, max {max(other):.1f} %.\n")
    print("| Atelier / sshd throughput, paired per round: median (min … max) | upload | download | Goal | Verdict |")
    print("|---|--:|--:|---|---|")
    for c in order_c:
        ratios = {}
        for d in ("upload", "download"):
            a, b = scp[(c, d)].get("atelier", {}), scp[(c, d)].get("sshd", {})
            ratios[d] = [float(a[r]["mbps"]) / float(b[r]["mbps"]) for r in sorted(a) if r in b]
        met = [d for d in ratios if ratios[d] and statistics.median(ratios[d]) >= GOAL_SCP]
        missed = [d for d in ratios if ratios[d] and statistics.median(ratios[d]) < GOAL_SCP]
        straddle = [d for d in ratios if ratios[d] and min(ratios[d]) < GOAL_SCP <= max(ratios[d])]
        if not missed:
            v = "**met**"
        elif not met:
            v = "**missed**"
        else:
            v = f"**met ({', '.join(met)}), missed ({', '.join(missed)})**"
        if straddle:
            v += f" (rounds straddle the goal: {', '.join(straddle)})"
        verdicts.append((f"scp, cipher {c}", v))
        cells = [rng(ratios[d]) if ratios[d] else "–" for d in ("upload", "download")]
        print(f"| cipher {c} | {cells[0]} | {cells[1]} | ≥ {GOAL_SCP}× | {v} |")
    print()
    print("CPU seconds per GiB moved, Atelier split by process, in brackets the part spent in the kernel (system time); medians of the rounds:\n")
    print("| Cipher variant | Direction | gateway | notebook runtime (agent, sftp) | Atelier total | sshd | client (Atelier run) | client (sshd run) |")
    print("|---|---|--:|--:|--:|--:|--:|--:|")
    for c in order_c:
        for d in ("upload", "download"):
            a, b = scp[(c, d)].get("atelier", {}), scp[(c, d)].get("sshd", {})
            if not a or not b:
                continue
            gib = int(next(iter(a.values()))["bytes"]) / GIB
            med = lambda rs, k: statistics.median(float(v[k]) / gib for v in rs.values())
            both = lambda x, y: f"{fmt(x, 2)} ({fmt(y, 2)})"
            per = lambda rs, k1, k2: statistics.median((float(v[k1]) + float(v[k2])) / gib for v in rs.values())
            print(f"| {c} | {d} | {both(med(a, 'gw_cpu_s'), med(a, 'gw_sys_s'))} | {both(med(a, 'rt_cpu_s'), med(a, 'rt_sys_s'))} "
                  f"| {both(per(a, 'gw_cpu_s', 'rt_cpu_s'), per(a, 'gw_sys_s', 'rt_sys_s'))} | {both(med(b, 'sshd_cpu_s'), med(b, 'sshd_sys_s'))} "
                  f"| {fmt(med(a, 'client_cpu_s'), 2)} | {fmt(med(b, 'client_cpu_s'), 2)} |")
    print()

if lat:
    print("## 2. Connect + `exec true` latency (`ssh HOST true`, a new connection each)\n")
    print("| Key exchange variant | Path | connections | p50 (ms) | p95 (ms) | min (ms) | mean (ms) | server CPU ms/connection |")
    print("|---|---|--:|--:|--:|--:|--:|--:|")
    for k in order_k:
        cpu = latcpu.get(k)
        for t in ("atelier", "sshd"):
            v = lat[k].get(t, [])
            if not v:
                continue
            cpu_cell = "–"
            if cpu:
                b = [float(x) for x in cpu["before"].split(",")]
                a = [float(x) for x in cpu["after"].split(",")]
                s = (a[0] - b[0] + a[1] - b[1]) if t == "atelier" else (a[2] - b[2])
                cpu_cell = fmt(s * 1000 / len(v), 1)
            print(f"| {k} | {NAMES[t]} | {len(v)} | {fmt(pct(v, 50), 1)} | {fmt(pct(v, 95), 1)} | {fmt(min(v), 1)} | {fmt(statistics.mean(v), 1)} | {cpu_cell} |")
    print()
    print("| Atelier / sshd latency | p50 | p95 | Goal | Verdict |")
    print("|---|--:|--:|---|---|")
    for k in order_k:
        a, b = lat[k].get("atelier", []), lat[k].get("sshd", [])
        if not a or not b:
            continue
        r50, r95 = pct(a, 50) / pct(b, 50), pct(a, 95) / pct(b, 95)
        v = "**met**" if max(r50, r95) <= GOAL_LAT else ("**missed**" if min(r50, r95) > GOAL_LAT else "**met at p50, missed at p95**" if r50 <= GOAL_LAT else "**missed at p50, met at p95**")
        verdicts.append((f"latency, kex {k}", v))
        print(f"| kex {k} | {fmt(r50, 2)}× | {fmt(r95, 2)}× | ≤ {GOAL_LAT}× | {v} |")
    print()
    print("(The CPU column is the servers' user+system time over the whole interleaved series divided by its connections; the gateway's and the runtime's together for Atelier, including their per-connection link set-up.)\n")

w = open(warnings).read().strip()
if w:
    print("Warnings and errors in the gateway's log during the run (last 20):\n\n```\n" + w + "\n```\n")

if scp:
    print("<details><summary>Every scp round (raw)</summary>\n")
    print("| Cipher | Direction | Path | Round | MB/s | s | gateway CPU s | runtime CPU s | sshd CPU s | client CPU s | other load % |")
    print("|---|---|---|--:|--:|--:|--:|--:|--:|--:|--:|")
    for c in order_c:
        for d in ("upload", "download"):
            for t in ("atelier", "sshd"):
                for r, v in sorted(scp[(c, d)].get(t, {}).items()):
                    print(f"| {c} | {d} | {t} | {r} | {v['mbps']} | {v['secs']} | {v['gw_cpu_s']} | {v['rt_cpu_s']} | {v['sshd_cpu_s']} | {v['client_cpu_s']} | {v['other_cpu_pct']} |")
    print("\n</details>")
EOF
cp "$RAW" "$RESULTS_DIR/ssh-$STAMP.tsv"
cp "$OUT" "$RESULTS_DIR/ssh-latest.md"
cat "$OUT"
log "report written to $OUT (raw numbers: $RESULTS_DIR/ssh-$STAMP.tsv)"
exit 0
}
