#!/usr/bin/env bash
# A Slurm test cluster on this one host, on loopback, for the tests and for a developer trying
# the slurm backend (docs/slurm.md): munge, slurmctld, two compute nodes n1 and n2 (two slurmd
# on this host, each with its own port) and slurmrestd on a unix socket.
#
#   bash scripts/slurm.sh [up]   start what is not running; print `export` lines to eval
#   bash scripts/slurm.sh down   cancel the cluster's jobs and stop its daemons (not munged)
#   bash scripts/slurm.sh status what runs, the nodes, the REST API; exit 3 unless all is up
#
# Root only (slurmd starts jobs as their users; munged runs as munge, slurmrestd as nobody).
# Idempotent: a daemon whose pid file names a live process of that program started with this
# cluster's slurm.conf is left alone, a stale pid file (a reboot, a crash) is removed and the
# daemon started again; a changed slurm.conf restarts the daemons (jobs survive in the state
# dir). Debian's packages: slurm-wlm, slurmrestd, munge.
#
# Where things live:
# - $ATELIER_SLURM_STATE (default $ATELIER_CACHE/slurm): slurmctld's state, logs, pid files and
#   the JWT key: private to root.
# - $ATELIER_SLURM_RUN (default /run/atelier-slurm): slurm.conf, the REST socket and the nodes'
#   spool dirs. Not under the cache because slurmrestd reads slurm.conf after it has become
#   nobody, and the jobs of users other than root read it (srun) and run their batch script
#   from the spool dir: a home dir of mode 0700 would keep them out.
# - Ports $ATELIER_SLURM_PORT (default 16817: slurmctld) and the next two (slurmd of n1, n2),
#   on 127.0.0.1 only, away from Slurm's defaults (6817-6819) so a real install can coexist.
set -euo pipefail
source "$(dirname "${BASH_SOURCE[0]}")/lib.sh"

STATE="${ATELIER_SLURM_STATE:-$ATELIER_CACHE/slurm}"
RUN="${ATELIER_SLURM_RUN:-/run/atelier-slurm}"
PORT="${ATELIER_SLURM_PORT:-16817}"
# Per node. Slurm is told these (SlurmdParameters=config_overrides), whatever the host has, so
# the tests see the same cluster everywhere: 2 nodes x 2 CPUs. CR_Core: memory is checked
# against RealMemory (a job asking more never starts) but not consumed.
CPUS="${ATELIER_SLURM_CPUS:-2}"
MEM_MB="${ATELIER_SLURM_MEM_MB:-4000}"
NODES=(n1 n2)
CONF="$RUN/slurm.conf"
REST_DIR="$RUN/rest"
REST_SOCK="$REST_DIR/rest.sock"
REST_PID="$STATE/run/slurmrestd.pid"
export SLURM_CONF="$CONF"

# The slurm.conf of this cluster.
conf_text() {
  local host="$1" n i=1 node_lines=""
  for n in "${NODES[@]}"; do
    node_lines+="NodeName=$n NodeHostname=$host NodeAddr=127.0.0.1 Port=$((PORT + i)) CPUs=$CPUS RealMemory=$MEM_MB State=UNKNOWN
"
    i=$((i + 1))
  done
  local all
  all="$(IFS=,; echo "${NODES[*]}")"
  cat <<EOF
# Written by Atelier's scripts/slurm.sh: a test cluster on loopback. Edits are overwritten.
ClusterName=atelier-test
SlurmctldHost=$host(127.0.0.1)
SlurmctldPort=$PORT
SlurmdPort=$((PORT + 1))
# Bind to 127.0.0.1 (the addresses above), not to every interface.
CommunicationParameters=NoCtldInAddrAny,NoInAddrAny
# The daemons run as root: the state dir is root's.
SlurmUser=root
SlurmdUser=root
AuthType=auth/munge
CryptoType=crypto/munge
# JWT as well, for slurmrestd's rest_auth/jwt and 'scontrol token' (the key is root's only).
AuthAltTypes=auth/jwt
AuthAltParameters=jwt_key=$STATE/jwt.key
MpiDefault=none
# No cgroups: they are not delegated to us in containers and sandboxes.
ProctrackType=proctrack/linuxproc
TaskPlugin=task/none
JobAcctGatherType=jobacct_gather/none
AccountingStorageType=accounting_storage/none
JobCompType=jobcomp/none
SelectType=select/cons_tres
SelectTypeParameters=CR_Core
SlurmdParameters=config_overrides
# A node that was down comes back when its slurmd registers. slurmctld pings the nodes every
# SlurmdTimeout/3 (a node marked not responding waits for that ping); a node silent for a
# minute is down.
ReturnToService=2
SlurmdTimeout=60
# Finished jobs stay visible (squeue, scontrol show job) for an hour: there is no accounting.
MinJobAge=3600
StateSaveLocation=$STATE/ctld
SlurmdSpoolDir=$RUN/spool/%n
SlurmctldPidFile=$STATE/run/slurmctld.pid
SlurmdPidFile=$STATE/run/slurmd-%n.pid
SlurmctldLogFile=$STATE/log/slurmctld.log
SlurmdLogFile=$STATE/log/slurmd-%n.log
# Preemption by partition: a job in 'urgent' requeues (or, when it cannot be requeued,
# cancels) the jobs of 'debug' it needs the room of.
PreemptType=preempt/partition_prio
PreemptMode=REQUEUE
$node_lines
PartitionName=debug Nodes=$all Default=YES PriorityTier=1 MaxTime=INFINITE State=UP
PartitionName=urgent Nodes=$all PriorityTier=2 MaxTime=INFINITE State=UP
EOF
}

# Whether the pid file $1 names a live process of the program $2 started with this slurm.conf
# (after a reboot, a stale pid file can name some other process).
alive() {
  local pid cmd
  pid="$(cat "$1" 2>/dev/null || true)"
  [[ "$pid" =~ ^[0-9]+$ ]] || return 1
  cmd="$(tr '\0' ' ' 2>/dev/null <"/proc/$pid/cmdline" || true)"
  [[ "$(basename "${cmd%% *}")" == "$2" && " $cmd" == *" $CONF "* ]]
}

# Whether the process $1 exists and is no zombie (one whose parent does not reap it).
running() {
  local st
  st="$(awk '{ print $3 }' 2>/dev/null <"/proc/$1/stat" || true)"
  [ -n "$st" ] && [ "$st" != Z ]
}

# Stops the daemon of pid file $1 (program $2): SIGTERM, then SIGKILL after about 30 s.
stop_daemon() {
  local pidfile="$1" name="$2" pid
  if alive "$pidfile" "$name"; then
    pid="$(cat "$pidfile")"
    log "stopping $name (pid $pid)"
    kill "$pid" 2>/dev/null || true
    for _ in $(seq 150); do
      running "$pid" || break
      sleep 0.2
    done
    if running "$pid"; then
      log "$name (pid $pid) did not stop on SIGTERM: killing it"
      kill -KILL "$pid" 2>/dev/null || true
    fi
  fi
  rm -f "$pidfile"
}

stop_daemons() {
  stop_daemon "$REST_PID" slurmrestd
  rm -f "$REST_SOCK"
  local n
  for n in "${NODES[@]}"; do stop_daemon "$STATE/run/slurmd-$n.pid" slurmd; done
  stop_daemon "$STATE/run/slurmctld.pid" slurmctld
}

# munged with the system's key and socket (/etc/munge/munge.key, /run/munge), which Slurm's
# commands use by default; reused when it already answers.
munge_up() {
  munge -n 2>/dev/null | unmunge >/dev/null 2>&1 && return 0
  if [ ! -s /etc/munge/munge.key ]; then
    log "creating /etc/munge/munge.key"
    install -d -o munge -g munge -m 0700 /etc/munge
    (umask 077 && dd if=/dev/urandom of=/etc/munge/munge.key bs=1024 count=1 status=none)
    chown munge:munge /etc/munge/munge.key
  fi
  # /run is emptied at boot; --force: a socket left by a munged that died is replaced.
  install -d -o munge -g munge -m 0755 /run/munge
  install -d -o munge -g munge -m 0700 /var/log/munge /var/lib/munge
  log "starting munged"
  start_service "$STATE/log/munged.out" "munge -n 2>/dev/null | unmunge >/dev/null 2>&1" \
    runuser -u munge -- munged --force 9>&-
}

# The last error of the daemon log $1 without its timestamp, to say why a daemon did not start.
why() {
  grep -E 'fatal|error' "$1" 2>/dev/null | tail -n 1 | sed -E 's/^\[[^]]*\] *//' || true
}

# The nodes' states, one "name state" per line.
node_states() { sinfo -h -N -o '%N %T' 2>/dev/null || true; }

# Waits, up to about 90 s, until every node has registered and is usable; a node that comes
# back drained or down (a slurmd killed while a job ran) is resumed once.
wait_nodes() {
  local states n st bad resumed=" "
  for _ in $(seq 450); do
    states="$(node_states)"
    bad=0
    for n in "${NODES[@]}"; do
      # (Listed once per partition.)
      st="$(awk -v n="$n" '$1 == n { print $2; exit }' <<<"$states")"
      case "$st" in
        # idle*: not responding yet (no new work), until slurmctld's next ping.
        *'*'*) bad=1 ;;
        idle* | mixed* | allocated* | completing*) ;;
        *drain* | down*)
          bad=1
          if [[ "$resumed" != *" $n "* ]] && alive "$STATE/run/slurmd-$n.pid" slurmd; then
            log "node $n is $st: resuming it"
            scontrol update NodeName="$n" State=RESUME >/dev/null 2>&1 || true
            resumed+="$n "
          fi
          ;;
        *) bad=1 ;;
      esac
    done
    [ "$bad" -eq 0 ] && return 0
    sleep 0.2
  done
  log "the end of $STATE/log/slurmctld.log:"
  tail -n 20 "$STATE/log/slurmctld.log" >&2 || true
  log "the nodes did not become usable in 90 s: $(tr '\n' ',' <<<"$states" | sed 's/,$//')"
  return 1
}

rest_ping() {
  curl -fsS --max-time 2 --unix-socket "$REST_SOCK" http://slurm/slurm/v0.0.38/ping >/dev/null 2>&1
}

up() {
  need_debs slurm-wlm slurmrestd munge curl
  mkdir -p "$STATE"/{ctld,run,log}
  chmod 0700 "$STATE"
  munge_up || {
    log "munged did not start: $(why /var/log/munge/munged.log)"
    return 1
  }
  if [ ! -s "$STATE/jwt.key" ]; then
    (umask 077 && dd if=/dev/urandom of="$STATE/jwt.key" bs=32 count=1 status=none)
  fi

  install -d -m 0755 "$RUN" "$RUN/spool"
  local host text
  host="$(hostname -s)"
  text="$(conf_text "$host")"
  if ! { [ -f "$CONF" ] && [ "$(cat "$CONF")" = "$text" ]; }; then
    if [ -f "$CONF" ]; then
      log "slurm.conf changed: restarting the cluster's daemons"
      stop_daemons
    fi
    write_if_changed "$CONF" "$text"
    chmod 0644 "$CONF"
  fi

  if ! alive "$STATE/run/slurmctld.pid" slurmctld; then
    rm -f "$STATE/run/slurmctld.pid"
    log "starting slurmctld on 127.0.0.1:$PORT (log: $STATE/log/slurmctld.log)"
    start_service "$STATE/log/slurmctld.out" \
      "alive '$STATE/run/slurmctld.pid' slurmctld && scontrol ping 2>/dev/null | grep -q 'is UP'" \
      slurmctld -f "$CONF" 9>&- || {
      log "slurmctld did not start: $(why "$STATE/log/slurmctld.log")"
      return 1
    }
  fi
  local n i=1
  for n in "${NODES[@]}"; do
    if ! alive "$STATE/run/slurmd-$n.pid" slurmd; then
      rm -f "$STATE/run/slurmd-$n.pid"
      log "starting slurmd for node $n on 127.0.0.1:$((PORT + i)) (log: $STATE/log/slurmd-$n.log)"
      start_service "$STATE/log/slurmd-$n.out" "alive '$STATE/run/slurmd-$n.pid' slurmd" \
        slurmd -f "$CONF" -N "$n" 9>&- || {
        log "slurmd of node $n did not start: $(why "$STATE/log/slurmd-$n.log")"
        return 1
      }
    fi
    i=$((i + 1))
  done
  wait_nodes

  # slurmrestd refuses to run as root: it becomes nobody (-u) before it binds the socket and
  # reads slurm.conf. rest_auth/local: the socket's peer must be nobody or root, and the job
  # runs as nobody either way (see docs/slurm.md). Its pid file is written by the shell it
  # execs from.
  if ! alive "$REST_PID" slurmrestd || ! rest_ping; then
    stop_daemon "$REST_PID" slurmrestd
    install -d -o nobody -g nogroup -m 0755 "$REST_DIR"
    rm -f "$REST_SOCK"
    log "starting slurmrestd on $REST_SOCK (log: $STATE/log/slurmrestd.log)"
    # shellcheck disable=SC2016 # $$ and $1 are the inner shell's
    start_service "$STATE/log/slurmrestd.log" rest_ping \
      bash -c 'echo $$ >"$1"; shift; exec "$@"' - "$REST_PID" \
      slurmrestd -f "$CONF" -u nobody -s openapi/v0.0.38 -a rest_auth/local "unix:$REST_SOCK" \
      9>&- || {
      log "slurmrestd did not start: $(why "$STATE/log/slurmrestd.log")"
      return 1
    }
  fi

  printf 'export SLURM_CONF=%q\n' "$CONF"
  printf 'export ATELIER_TEST_SLURM=1\n'
  printf 'export ATELIER_SLURM_REST=%q\n' "$REST_SOCK"
}

down() {
  if alive "$STATE/run/slurmctld.pid" slurmctld; then
    local jobs
    jobs="$(squeue -h -o %i 2>/dev/null | tr '\n' ' ')"
    if [ -n "${jobs// /}" ]; then
      log "cancelling the jobs $jobs"
      # shellcheck disable=SC2086 # one job id per word
      scancel $jobs 2>/dev/null || true
      for _ in $(seq 150); do
        [ -z "$(squeue -h -t PD,R,CG,S -o %i 2>/dev/null)" ] && break
        sleep 0.2
      done
    fi
  fi
  stop_daemons
  log "stopped (munged, a system service, is left running)"
}

status() {
  local ok=0 n
  if alive "$STATE/run/slurmctld.pid" slurmctld; then echo "slurmctld: running (pid $(cat "$STATE/run/slurmctld.pid"))"; else echo "slurmctld: not running"; ok=3; fi
  for n in "${NODES[@]}"; do
    if alive "$STATE/run/slurmd-$n.pid" slurmd; then echo "slurmd $n: running (pid $(cat "$STATE/run/slurmd-$n.pid"))"; else echo "slurmd $n: not running"; ok=3; fi
  done
  if alive "$REST_PID" slurmrestd && rest_ping; then echo "slurmrestd: answering on $REST_SOCK"; else echo "slurmrestd: not answering"; ok=3; fi
  if munge -n 2>/dev/null | unmunge >/dev/null 2>&1; then echo "munged: answering"; else echo "munged: not answering"; ok=3; fi
  echo "SLURM_CONF=$CONF"
  [ "$ok" -eq 0 ] && sinfo -N -o '%N %P %c %m %T' 2>/dev/null
  return "$ok"
}

cmd="${1:-up}"
case "$cmd" in
  up | down | status) ;;
  *)
    log "unknown command '$cmd': use up (the default), down or status"
    exit 2
    ;;
esac
if [ "$(id -u)" -ne 0 ]; then
  log "scripts/slurm.sh must run as root (slurmd starts jobs as their users, munged runs as munge)"
  exit 1
fi
if [ "$cmd" = status ]; then
  status
  exit $?
fi
# One up or down at a time (two test runs starting at once would both start daemons).
mkdir -p "$STATE"
exec 9>"$STATE/lock"
flock 9
"$cmd"
