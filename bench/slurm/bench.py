"""The Slurm benchmark (issue 20), one run on the test cluster (scripts/slurm.sh), standard
library only. Two gateways run side by side, each with its own data dir and ports: one on
the `slurm` backend (notebooks are batch jobs whose runtime connects back through the
tunnel) and one on the default `process` backend (the local one). Both have one flavor,
1 CPU and 2 GiB, which fits a test node.

  start     notebook create → JupyterLab answers, on `slurm`: `POST /v1/notebooks` until
            `GET /nb/{id}/api/status` through the gateway answers 200 with JupyterLab's
            status, against `sbatch` by hand of a script that runs the same virtualenv's
            `jupyter lab --no-browser --port=P --ip=127.0.0.1 --ServerApp.token=T` with the
            same CPUs, memory and partition, until `GET :P/api/status` with the token
            answers 200. Both polled every POLL_MS. ROUNDS rounds each after WARMUP
            unmeasured ones, alternating which goes first; each notebook is deleted and each
            hand job cancelled (and gone) before the next round. Where the time goes, per
            round: slurmctld's and slurmd's log lines for the job (submitted, allocated,
            batch launched), JupyterLab's "is running at" line, the gateway's "tunnel
            session up" line and the notebook's RUNNING status.
  latency   the proxy's added latency: one notebook on each gateway; `GET /nb/{id}/api/status`
            on one keep-alive connection per path, interleaved path by path
            (bench/http_rtt.py), HTTP_N requests per path and round, HTTP_ROUNDS rounds:
            each notebook's JupyterLab directly on its unix socket, and through its gateway
            (the local backend: a unix socket; slurm: the connect-back tunnel).
  scp       SSH front door throughput: a SIZE_MIB file of random data copied with `scp`
            (OpenSSH's SFTP mode) up into each notebook's work dir and back, through its
            gateway's SSH port (user = the notebook's name), SCP_ROUNDS rounds per direction,
            local and slurm back to back in alternating order; checksums checked.

Prints a markdown report on stdout; progress on stderr. Everything it starts is stopped at
exit: notebooks are deleted through the API, jobs it submitted that are still there are
cancelled (found by their work dirs, which lie under WORK), the gateways stopped.

    python3 bench.py  (environment: WORK, ATELIER_BIN, RUNTIME_BIN, JL_VENV, SLURM_CONF,
                       SLURM_LOG_DIR (slurmctld.log, slurmd-*.log; optional), PARTITION=debug,
                       PARTS="start latency scp", ROUNDS=5, WARMUP=1, POLL_MS=20,
                       HTTP_N=2000, HTTP_WARMUP=200, HTTP_ROUNDS=3, SIZE_MIB=256,
                       SCP_ROUNDS=3, RAW_OUT: the raw numbers as JSON)"""

import glob
import hashlib
import http.client
import json
import os
import re
import secrets
import shutil
import statistics
import subprocess
import sys
import time
import urllib.parse
from datetime import datetime

E = dict(os.environ)
WORK = E["WORK"]
BIN, RT, JL, SLURM_CONF = (E[k] for k in ("ATELIER_BIN", "RUNTIME_BIN", "JL_VENV", "SLURM_CONF"))
SLURM_LOG_DIR = E.get("SLURM_LOG_DIR", "")
PARTITION = E.get("PARTITION", "debug")
PARTS = E.get("PARTS", "start latency scp").split()
ROUNDS = int(E.get("ROUNDS", "5"))
WARMUP = int(E.get("WARMUP", "1"))
POLL = int(E.get("POLL_MS", "20")) / 1000
HTTP_N = int(E.get("HTTP_N", "2000"))
HTTP_WARMUP = int(E.get("HTTP_WARMUP", "200"))
HTTP_ROUNDS = int(E.get("HTTP_ROUNDS", "3"))
SIZE_MIB = int(E.get("SIZE_MIB", "256"))
SCP_ROUNDS = int(E.get("SCP_ROUNDS", "3"))
RAW_OUT = E.get("RAW_OUT") or os.path.join(WORK, "raw.json")
HERE = os.path.dirname(os.path.abspath(__file__))
BENCH = os.path.dirname(HERE)
sys.path.insert(0, BENCH)
from benchkit import Procs, free_port, http_ok, json_of, log, port_open, request, settled, until  # noqa: E402

# The gateways get exactly the environment given here: none of the caller's ATELIER_*.
for k in [k for k in os.environ if k.startswith("ATELIER_")]:
    del os.environ[k]
os.environ["SLURM_CONF"] = SLURM_CONF

GOAL_START = 1.2     # notebook create → JupyterLab answers: ≤ 1.2× sbatch by hand
GOAL_ADDED_MS = 0.2  # the tunnel's proxy latency: ≤ +0.2 ms p50 over the local backend's
GOAL_SCP = 0.8       # scp through the tunnel: ≥ 0.8× the local backend's
FLAVOR = "bench-1-2"
FLAVORS = f"""
[[flavors]]
id = "{FLAVOR}"
type = "cpu"
vcpus = 1
memory_gib = 2
description = "1 CPU, 2 GB: fits a test node"
"""

procs = Procs(WORK)
RAW = {"start": [], "latency": [], "scp": [], "meta": {}}


def sh(*argv, check=True, input=None):
    r = subprocess.run(argv, capture_output=True, text=True, input=input)
    if check and r.returncode != 0:
        raise SystemExit(f"{' '.join(argv)}: exit {r.returncode}: {r.stderr.strip()[:500]}")
    return r.stdout


# --- Slurm ---------------------------------------------------------------------------------

def job_fields(job):
    """`scontrol show job -o` as a dict; {} once Slurm has forgotten the job."""
    r = subprocess.run(["scontrol", "show", "job", "-o", str(job)], capture_output=True, text=True)
    if r.returncode != 0:
        return {}
    out = {}
    for m in re.finditer(r"(\w+)=(\S*)", r.stdout):
        out.setdefault(m[1], m[2])
    return out


def job_over(job):
    st = job_fields(job).get("JobState", "")
    return True if st in ("", "COMPLETED", "CANCELLED", "FAILED", "TIMEOUT", "PREEMPTED",
                          "NODE_FAIL", "OUT_OF_MEMORY", "BOOT_FAIL", "DEADLINE") else None


def our_jobs():
    """Ids of the cluster's unfinished jobs whose work dir lies under WORK: this run's."""
    out = sh("squeue", "-h", "-t", "PENDING,RUNNING,SUSPENDED,COMPLETING,CONFIGURING",
             "-o", "%i %Z", check=False)
    mine = []
    for line in out.splitlines():
        jid, _, wd = line.strip().partition(" ")
        if wd == WORK or wd.startswith(WORK + "/"):
            mine.append(jid)
    return mine


def others_jobs():
    """Jobs on the cluster that are not this run's (other people's tests), for the report."""
    out = sh("squeue", "-h", "-o", "%i %T %C %Z", check=False)
    return [l.split()[:3] for l in out.splitlines()
            if l.strip() and not (l.split()[-1] == WORK or l.split()[-1].startswith(WORK + "/"))]


LOG_TS = re.compile(r"^\[(\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d(?:\.\d+)?)\] (.*)$")


def slurm_log_times(job):
    """Wall-clock times (epoch s) of the job's steps in slurmctld's and slurmd's logs:
    submitted, allocated (and where), batch launched; {} without the logs."""
    if not SLURM_LOG_DIR:
        return {}
    pats = {
        "submitted": re.compile(rf"_slurm_rpc_submit_batch_job: JobId={job}\b"),
        # The main scheduler's line, or the backfill scheduler's.
        "allocated": re.compile(rf"(?:sched: Allocate JobId={job}\b|_start_job: Started JobId={job}\b)"),
        "launched": re.compile(rf"Launching batch job {job}\b"),
    }
    out = {}
    for f in sorted(glob.glob(os.path.join(SLURM_LOG_DIR, "slurm*.log"))):
        try:
            lines = open(f, errors="replace").read().splitlines()
        except OSError:
            continue
        for line in lines:
            m = LOG_TS.match(line)
            if not m:
                continue
            for k, p in pats.items():
                if k not in out and p.search(m[2]):
                    # Slurm logs the host's local time.
                    out[k] = datetime.fromisoformat(m[1]).timestamp()
    return out


JUPYTER_RUNNING = re.compile(
    r"\[I (\d{4}-\d\d-\d\d \d\d:\d\d:\d\d\.\d+) ServerApp\] .*is running at")


def rfc3339(s):
    """An RFC 3339 time (`2026-12-08T02:54:39.078123456Z`) in epoch seconds; digits past the
    microsecond are dropped (Python's parser takes at most six)."""
    m = re.fullmatch(r"(.*T\d\d:\d\d:\d\d)(?:\.(\d+))?(Z|[+-]\d\d:\d\d)", s)
    if not m:
        raise SystemExit(f"not an RFC 3339 time: {s!r}")
    frac = f".{m[2][:6]}" if m[2] else ""
    return datetime.fromisoformat(m[1] + frac + ("+00:00" if m[3] == "Z" else m[3])).timestamp()


def jupyter_running_at(path):
    """When JupyterLab's log at `path` said it is running (epoch s), or None."""
    try:
        text = open(path, errors="replace").read()
    except OSError:
        return None
    m = JUPYTER_RUNNING.search(text)
    return datetime.fromisoformat(m[1]).timestamp() if m else None


# --- a gateway ------------------------------------------------------------------------------

class Gw:
    def __init__(self, name, backend_env):
        self.name = name
        self.port, self.ssh_port = free_port(), free_port()
        self.base = f"http://127.0.0.1:{self.port}"
        self.token = f"atl_bench_slurm_{name}_{secrets.token_hex(8)}"
        self.data = os.path.join(WORK, name)
        os.makedirs(self.data, exist_ok=True)
        cfg = os.path.join(self.data, "config.toml")
        open(cfg, "w").write(FLAVORS)
        # The binaries run as WORK/bin/* (links), so a colleague's `pkill atelier` on a
        # shared machine does not end the run.
        env = {"ATELIER_DATA_DIR": self.data, "ATELIER_HTTP_ADDR": f"127.0.0.1:{self.port}",
               "ATELIER_SSH_ADDR": f"127.0.0.1:{self.ssh_port}", "ATELIER_SSH_PORTS": "off",
               "ATELIER_ADMIN_TOKEN": self.token, "ATELIER_JUPYTER_VENV": JL,
               "ATELIER_RUNTIME_BIN": os.path.join(WORK, "bin", "atelier-notebook-runtime"),
               "ATELIER_CONFIG": cfg, "ATELIER_LOG": E.get("ATELIER_LOG", "info"),
               "NO_COLOR": "1", **backend_env}
        self.proc = procs.start(f"gateway-{name}", [os.path.join(WORK, "bin", "gateway"), "serve"], env)
        self.log_path = os.path.join(WORK, f"gateway-{name}.log")
        until(f"the {name} gateway's /healthz", lambda: http_ok(self.base + "/healthz"), 90, 0.1,
              self.proc, procs)
        until(f"the {name} gateway's SSH port", lambda: port_open(self.ssh_port), 30, 0.1,
              self.proc, procs)
        waited = settled(f"the {name} gateway's start-up work", self.proc, procs, 600)
        if waited > 1.5:
            log(f"the {name} gateway's start-up work took {waited:.1f} s (waited for it)")
        self.notebooks = []

    def call(self, method, path, body=None, want=(200, 201, 202, 204)):
        status, text = request(self.base, self.token, method, path, body)
        if status not in want:
            raise SystemExit(f"{self.name}: {method} {path}: {status} "
                             f"{text[:400].decode(errors='replace')}")
        return json_of(text)

    def nb_dir(self, nb):
        """The notebook's dir: the process backend's under its data dir, the slurm
        backend's under its shared dir (by default data_dir/slurm)."""
        for d in (os.path.join(self.data, "slurm", "notebooks", nb),
                  os.path.join(self.data, "notebooks", nb)):
            if os.path.isdir(d):
                return d
        raise SystemExit(f"{self.name}: no dir for notebook {nb} under {self.data}")

    def create(self, body):
        r = self.call("POST", "/v1/notebooks", {"flavor": FLAVOR, **body}, want=(201,))
        self.notebooks.append(r["id"])
        return r["id"]

    def status(self, nb):
        return self.call("GET", f"/v1/notebooks/{nb}", want=(200,))["status"]

    def wait_running(self, nb, timeout=300):
        def running():
            s = self.status(nb)
            if s in ("CREATE_FAILED", "START_FAILED", "ERROR", "STOPPED"):
                self.dump(nb)
                raise SystemExit(f"{self.name}: notebook {nb} is {s}: {self.events(nb)}")
            return True if s == "RUNNING" else None
        until(f"{self.name} notebook {nb} RUNNING", running, timeout, 0.1, self.proc, procs)

    def events(self, nb):
        return self.call("GET", f"/v1/notebooks/{nb}/events", want=(200,)).get("items", [])

    def delete(self, nb, timeout=180):
        """DELETE, then until the notebook is gone (its job ended, its files removed)."""
        status, text = request(self.base, self.token, "DELETE", f"/v1/notebooks/{nb}")
        if status not in (200, 202, 204, 404):
            raise SystemExit(f"{self.name}: DELETE {nb}: {status} {text[:300]!r}")
        until(f"{self.name} notebook {nb} deleted",
              lambda: True if request(self.base, self.token, "GET", f"/v1/notebooks/{nb}")[0] == 404
              else None, timeout, 0.2)
        if nb in self.notebooks:
            self.notebooks.remove(nb)

    def dump(self, nb):
        for f in ("run/runtime.log", "run/slurm.out", "run/agent/jupyter.log"):
            p = os.path.join(self.data, "slurm", "notebooks", nb, f)
            if not os.path.exists(p):
                p = os.path.join(self.data, "notebooks", nb, f)
            if os.path.exists(p):
                log(f"---- {p}\n" + open(p, errors="replace").read()[-3000:])
        log(f"---- {self.log_path}\n" + open(self.log_path, errors="replace").read()[-3000:])

    def log_time(self, which):
        """Wall-clock time (epoch s) of the gateway's first log line for which `which` holds."""
        for line in open(self.log_path, errors="replace"):
            if which(line):
                m = re.match(r"(\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d(?:\.\d+)?)Z", line.strip())
                if m:
                    frac = m[1]
                    if "." in frac:
                        head, f = frac.split(".")
                        frac = f"{head}.{f[:6]}"
                    return datetime.fromisoformat(frac + "+00:00").timestamp()
        return None


def status_answers(url, headers):
    """True when GET url answers 200 with JupyterLab's status (`"started"`), else None."""
    u = urllib.parse.urlsplit(url)
    c = http.client.HTTPConnection(u.hostname, u.port, timeout=2)
    try:
        c.request("GET", u.path, headers=headers)
        r = c.getresponse()
        body = r.read()
        return True if r.status == 200 and b'"started"' in body else None
    except OSError:
        return None
    finally:
        c.close()


# --- 1. start: Atelier on slurm against sbatch by hand --------------------------------------

def start_by_hand(i):
    d = os.path.join(WORK, "hand", str(i))
    os.makedirs(os.path.join(d, "root"), exist_ok=True)
    port, token = free_port(), secrets.token_hex(16)
    # Jupyter's own dirs in the job's dir, not root's home; the same JupyterLab otherwise.
    script = f"""#!/bin/sh
export JUPYTER_CONFIG_DIR={d}/config JUPYTER_DATA_DIR={d}/data JUPYTER_RUNTIME_DIR={d}/runtime IPYTHONDIR={d}/ipython
exec {JL}/bin/jupyter lab --no-browser --port={port} --ip=127.0.0.1 --ServerApp.token={token} \\
    --ServerApp.port_retries=0 --ServerApp.root_dir={d}/root --allow-root
"""
    # The gateway's own options for a notebook of this flavor (SlurmCli::submit), but the
    # time limit, which only bounds a job this script could leave behind.
    argv = ["sbatch", "--parsable", f"--job-name=slurmbench-hand-{i}", f"--chdir={d}",
            f"--output={d}/out.log", "--nodes=1", "--ntasks=1", "--cpus-per-task=1",
            "--export=NONE", "--no-requeue", f"--partition={PARTITION}", "--mem=2048M",
            "--time=30"]
    t0w, t0 = time.time(), time.monotonic()
    job = int(sh(*argv, input=script).strip().split(";")[0])
    t_submitted = time.monotonic() - t0
    url = f"http://127.0.0.1:{port}/api/status"
    hdr = {"Authorization": f"token {token}"}

    def ready():
        if status_answers(url, hdr):
            return True
        if job_over(job):
            raise SystemExit(f"the hand job {job} ended before JupyterLab answered: "
                             f"{open(d + '/out.log', errors='replace').read()[-2000:]}")
        return None
    until(f"JupyterLab of hand job {job}", ready, 300, POLL)
    total = time.monotonic() - t0
    sh("scancel", str(job), check=False)
    until(f"hand job {job} to end", lambda: job_over(job), 120, 0.2)
    until(f"hand job {job}'s port to close", lambda: None if port_open(port) else True, 60, 0.2)
    stages = {"sbatch returned": t_submitted}
    for k, t in slurm_log_times(job).items():
        stages[f"slurm {k}"] = t - t0w
    jr = jupyter_running_at(f"{d}/out.log")
    if jr:
        stages["jupyter running"] = jr - t0w
    return {"job": job, "total": total, "stages": stages}


def start_on_atelier(gw, i):
    url = f"{gw.base}/nb/{{id}}/api/status"
    t0w, t0 = time.time(), time.monotonic()
    nb = gw.create({"name": f"start-{i}"})
    t_created = time.monotonic() - t0
    hdr = {"Authorization": f"Bearer {gw.token}"}

    def ready():
        if status_answers(url.format(id=nb), hdr):
            return True
        s = gw.status(nb)
        if s in ("CREATE_FAILED", "START_FAILED", "ERROR", "STOPPED"):
            gw.dump(nb)
            raise SystemExit(f"notebook {nb} is {s}: {gw.events(nb)}")
        return None
    until(f"JupyterLab of notebook {nb} through the gateway", ready, 300, POLL)
    total = time.monotonic() - t0
    evs = gw.events(nb)
    job = None
    for e in evs:
        m = re.match(r"Slurm job (\d+) runs on", e.get("detail") or "")
        if m:
            job = int(m[1])
    stages = {"POST answered": t_created}
    if job:
        for k, t in slurm_log_times(job).items():
            stages[f"slurm {k}"] = t - t0w
    run = os.path.join(gw.nb_dir(nb), "run")
    jr = jupyter_running_at(os.path.join(run, "agent", "jupyter.log"))
    if jr is None:
        jr = jupyter_running_at(os.path.join(run, "slurm.out"))
    if jr:
        stages["jupyter running"] = jr - t0w
    up = gw.log_time(lambda line: "tunnel session up" in line and f"launch={nb}-" in line)
    if up:
        stages["tunnel session up"] = up - t0w
    for e in evs:
        # The Scheduled event that names the job (the lifecycle records one of its own first).
        slurm_scheduled = e.get("event") == "Scheduled" and (e.get("detail") or "").startswith("Slurm job")
        if (slurm_scheduled or e.get("event") == "NotebookHealthy") and e.get("time"):
            stages.setdefault(f"event {e['event']}", rfc3339(e["time"]) - t0w)
    logs = {}
    for f in ("slurm.out", "runtime.log"):
        p = os.path.join(run, f)
        if os.path.exists(p):
            logs[f] = open(p, errors="replace").read()[-4000:]
    gw.delete(nb)
    if job:
        until(f"notebook job {job} to end", lambda: job_over(job), 120, 0.2)
    return {"job": job, "notebook": nb, "total": total, "stages": stages,
            "events": [(e.get("event"), e.get("detail"), e.get("time")) for e in evs],
            "logs": logs}


def part_start(gs):
    log(f"start: {WARMUP} warm-up and {ROUNDS} measured rounds each, alternating")
    for i in range(WARMUP + ROUNDS):
        order = ("hand", "atelier") if i % 2 == 0 else ("atelier", "hand")
        for side in order:
            others = others_jobs()
            r = start_by_hand(i) if side == "hand" else start_on_atelier(gs, i)
            r.update(side=side, round=i - WARMUP + 1, warmup=i < WARMUP, others=others)
            RAW["start"].append(r)
            tag = "warm-up" if i < WARMUP else f"round {i - WARMUP + 1}"
            log(f"start {tag}: {side:8s} {r['total'] * 1000:7.0f} ms  job {r['job']}  "
                + " ".join(f"{k}={v * 1000:.0f}" for k, v in r["stages"].items())
                + (f"  (other jobs on the cluster: {len(others)})" if others else ""))


# --- 2. latency: through the tunnel against the local backend -------------------------------

def jupyter_socket(gw, nb, link):
    """The notebook's JupyterLab socket (through a short link: a unix socket's path must
    fit in 108 bytes) and its Jupyter token."""
    d = gw.nb_dir(nb)
    cfg = json.load(open(os.path.join(d, "run", "config", "jupyter_server_config.json")))
    token = cfg["IdentityProvider"]["token"]
    path = os.path.join(WORK, link)
    if os.path.lexists(path):
        os.remove(path)
    os.symlink(os.path.join(d, "run", "agent"), path)
    return os.path.join(path, "jupyter.sock"), token


def part_latency(gl, gs, nbl, nbs):
    targets = []
    for name, gw, nb in (("local", gl, nbl), ("slurm", gs, nbs)):
        sock, tok = jupyter_socket(gw, nb, f"sock-{name}")
        enc = urllib.parse.quote(sock, safe="")
        targets += [(f"{name}-direct", f"http+unix://{enc}/nb/{nb}/api/status",
                     f"Authorization: token {tok}"),
                    (name, f"{gw.base}/nb/{nb}/api/status", f"Authorization: Bearer {gw.token}")]
    for r in range(1, HTTP_ROUNDS + 1):
        # The order of the paths rotates every iteration (http_rtt.py) and the first one
        # changes every round.
        ts = targets[(r - 1) % 2 * 2:] + targets[:(r - 1) % 2 * 2]
        argv = [sys.executable, os.path.join(BENCH, "http_rtt.py"), "-n", str(HTTP_N),
                "--warmup", str(HTTP_WARMUP), "--deadline", "900",
                "--pair", "local", "local-direct", "--pair", "slurm", "slurm-direct"]
        for t in ts:
            argv += ["--target", *t]
        rts = {name: runtime_pid(gw, nb) for name, gw, nb in (("local", gl, nbl), ("slurm", gs, nbs))}
        c0 = {name: cpu_of(gw.proc.pid, rts[name]) for name, gw in (("local", gl), ("slurm", gs))}
        out = sh(*argv)
        c1 = {name: cpu_of(gw.proc.pid, rts[name]) for name, gw in (("local", gl), ("slurm", gs))}
        res = {}
        for line in out.splitlines():
            if line.startswith("RESULT "):
                kv = dict(p.split("=", 1) for p in line.split()[1:])
                res[kv["target"]] = {k: float(v) for k, v in kv.items() if k != "target"}
        # Each gateway served N + warm-up requests, each notebook twice that (direct and
        # through its gateway): CPU µs per request through the gateway.
        n = HTTP_N + HTTP_WARMUP
        cpu = {name: {"gateway_us": (c1[name][0] - c0[name][0]) / n * 1e6,
                      "runtime_tree_us": (c1[name][1] - c0[name][1]) / n * 1e6} for name in c0}
        RAW["latency"].append({"round": r, "paths": res, "cpu": cpu})
        log(f"latency round {r}: " + "  ".join(
            f"{t} p50={v['p50_us']:.0f}µs p99={v['p99_us']:.0f}µs"
            + (f" added={v['added_p50_us']:.0f}µs" if not t.endswith("direct") else "")
            for t, v in res.items()))


# --- 3. scp through the SSH front door -------------------------------------------------------

def cpu_of(gateway, runtime):
    """CPU seconds (user+system) of the gateway process alone (a process notebook's runtime
    is its child, counted with the runtime) and of the runtime's process tree (the runtime
    outside the sandbox, bubblewrap, the runtime inside with the SSH agent, JupyterLab)."""
    out = sh(sys.executable, os.path.join(BENCH, "procs.py"), "trees", str(gateway), str(runtime))
    v = [float(x) for x in out.split()]
    return v[0], v[1]


def runtime_pid(gw, nb):
    """The notebook's runtime outside the sandbox (its command line names its spec)."""
    spec = os.path.join(gw.nb_dir(nb), "run", "spec.json")
    out = sh("pgrep", "-f", "--", f"--spec {spec}", check=False).split()
    return int(out[0]) if out else 0


def part_scp(paths):
    """paths: name -> (gateway, notebook name, notebook id, private key file)."""
    src = os.path.join(WORK, "payload.bin")
    with open(src, "wb") as f:
        for _ in range(SIZE_MIB):
            f.write(os.urandom(1 << 20))
    want = hashlib.sha256(open(src, "rb").read()).hexdigest()
    size = os.path.getsize(src)
    base = ["-F", "/dev/null", "-o", "StrictHostKeyChecking=no", "-o", "UserKnownHostsFile=/dev/null",
            "-o", "BatchMode=yes", "-o", "IdentitiesOnly=yes", "-o", "ConnectTimeout=10",
            "-o", "LogLevel=ERROR"]
    env = {k: v for k, v in os.environ.items() if k != "SSH_AUTH_SOCK"}
    for name, (gw, nbname, nb, key) in paths.items():
        until(f"ssh to the {name} notebook", lambda: True if subprocess.run(
            ["ssh", *base, "-p", str(gw.ssh_port), "-i", key, f"{nbname}@127.0.0.1", "true"],
            env=env, capture_output=True).returncode == 0 else None, 120, 1)
    down = os.path.join(WORK, "download.bin")
    for r in range(1, SCP_ROUNDS + 1):
        for direction in ("upload", "download"):
            order = list(paths) if (r + (direction == "download")) % 2 else list(paths)[::-1]
            for name in order:
                gw, nbname, nb, key = paths[name]
                work = os.path.join(gw.nb_dir(nb), "work")
                remote = f"{nbname}@127.0.0.1:upload.bin"
                if direction == "upload":
                    if os.path.exists(os.path.join(work, "upload.bin")):
                        os.remove(os.path.join(work, "upload.bin"))
                    argv = ["scp", *base, "-P", str(gw.ssh_port), "-i", key, src, remote]
                else:
                    if os.path.exists(down):
                        os.remove(down)
                    argv = ["scp", *base, "-P", str(gw.ssh_port), "-i", key, remote, down]
                subprocess.run(["sync"])
                rt = runtime_pid(gw, nb)
                c0 = cpu_of(gw.proc.pid, rt)
                t0 = time.monotonic()
                p = subprocess.run(argv, env=env, capture_output=True, text=True)
                dt = time.monotonic() - t0
                c1 = cpu_of(gw.proc.pid, rt)
                if p.returncode != 0:
                    gw.dump(nb)
                    raise SystemExit(f"scp {direction} on {name} failed: {p.stderr.strip()}")
                got = os.path.join(work, "upload.bin") if direction == "upload" else down
                if r == 1:
                    h = hashlib.sha256(open(got, "rb").read()).hexdigest()
                    if h != want:
                        raise SystemExit(f"scp {direction} on {name}: the copy differs")
                row = {"round": r, "direction": direction, "path": name, "secs": dt,
                       "mbps": size / dt / 1e6, "gw_cpu_s": c1[0] - c0[0],
                       "rt_cpu_s": c1[1] - c0[1]}
                RAW["scp"].append(row)
                log(f"scp round {r} {direction:8s} {name:5s} {row['mbps']:6.1f} MB/s "
                    f"(gateway {row['gw_cpu_s']:.2f} s CPU, runtime {row['rt_cpu_s']:.2f} s)")
    os.remove(src)
    if os.path.exists(down):
        os.remove(down)


# --- the report ------------------------------------------------------------------------------

def med(xs):
    return statistics.median(xs) if xs else float("nan")


def pct(vals, p):
    v = sorted(vals)
    k = (len(v) - 1) * p / 100
    lo, hi = int(k), min(int(k) + 1, len(v) - 1)
    return v[lo] + (v[hi] - v[lo]) * (k - lo)


def report():
    out = []
    p = out.append
    m = RAW["meta"]
    p(f"# Slurm benchmark ({m['when']})\n")
    p(f"Machine: {m['cpus']} × {m['cpu']}, {m['mem']}, load average at start {m['load']}. "
      f"{m['slurm']}; the test cluster of scripts/slurm.sh (2 nodes × 2 CPUs on this host). "
      f"Atelier: {m['atelier']}, notebook sandbox: {m['sandbox']}. JupyterLab "
      f"{m['jupyterlab']}.\n")
    verdicts = []
    if RAW["start"]:
        rows = [r for r in RAW["start"] if not r["warmup"]]
        hand = [r["total"] for r in rows if r["side"] == "hand"]
        atl = [r["total"] for r in rows if r["side"] == "atelier"]
        p("## 1. Notebook create → JupyterLab answers (ms)\n")
        p("| | " + " | ".join(f"round {i}" for i in range(1, ROUNDS + 1)) + " | p50 |")
        p("|---|" + "--:|" * (ROUNDS + 1))
        p("| `sbatch` by hand → `/api/status` 200 | " + " | ".join(f"{x * 1000:,.0f}" for x in hand)
          + f" | **{med(hand) * 1000:,.0f}** |")
        p("| Atelier on slurm: `POST /v1/notebooks` → `/nb/{id}/api/status` 200 | "
          + " | ".join(f"{x * 1000:,.0f}" for x in atl) + f" | **{med(atl) * 1000:,.0f}** |")
        ratio = med(atl) / med(hand)
        v = "**met**" if ratio <= GOAL_START else "**missed**"
        verdicts.append(("create → JupyterLab answers, ÷ sbatch by hand (p50)",
                         f"{ratio:.2f}× ({(med(atl) - med(hand)) * 1000:+,.0f} ms)",
                         f"≤ {GOAL_START}×", v))
        p("")
        p("Where the time goes, median over the rounds, ms from the client's first action "
          "(the `sbatch` call; the POST):\n")
        keys = []
        for r in rows:
            for k in r["stages"]:
                if k not in keys:
                    keys.append(k)
        order = ["POST answered", "sbatch returned", "slurm submitted", "slurm allocated",
                 "event Scheduled", "slurm launched", "tunnel session up", "jupyter running",
                 "event NotebookHealthy"]
        keys = sorted(keys, key=lambda k: order.index(k) if k in order else 99)
        p("| stage | by hand | Atelier |")
        p("|---|--:|--:|")
        for k in keys:
            cells = []
            for side in ("hand", "atelier"):
                xs = [r["stages"][k] for r in rows if r["side"] == side and k in r["stages"]]
                cells.append(f"{med(xs) * 1000:,.0f}" if xs else "–")
            p(f"| {k} | {cells[0]} | {cells[1]} |")
        p(f"| answered 200 (the measure) | {med(hand) * 1000:,.0f} | {med(atl) * 1000:,.0f} |")
        p("")
        p("Each round split at the batch script's launch (slurmd's \"Launching batch job\"): "
          "Slurm's part (submit → launch: the scheduler, the node) and what follows (the "
          "runtime, the sandbox, JupyterLab, the tunnel and the gateway's readiness check; "
          "by hand JupyterLab alone), ms:\n")
        p("| round | by hand: total | submit → launch | launch → answered | Atelier: total "
          "| submit → launch | launch → answered | after launch, Atelier ÷ by hand |")
        p("|--:|--:|--:|--:|--:|--:|--:|--:|")
        after = {"hand": [], "atelier": []}
        for i in range(1, ROUNDS + 1):
            cells, aft = [], {}
            for side in ("hand", "atelier"):
                r = next((r for r in rows if r["side"] == side and r["round"] == i), None)
                launched = r["stages"].get("slurm launched") if r else None
                if r is None or launched is None:
                    cells += ["–", "–", "–"]
                    continue
                aft[side] = r["total"] - launched
                after[side].append(aft[side])
                cells += [f"{r['total'] * 1000:,.0f}", f"{launched * 1000:,.0f}",
                          f"{aft[side] * 1000:,.0f}"]
            q = f"{aft['atelier'] / aft['hand']:.2f}×" if len(aft) == 2 else "–"
            p(f"| {i} | " + " | ".join(cells) + f" | {q} |")
        if after["hand"] and after["atelier"]:
            p(f"| p50 | | | {med(after['hand']) * 1000:,.0f} | | | "
              f"{med(after['atelier']) * 1000:,.0f} | "
              f"{med(after['atelier']) / med(after['hand']):.2f}× |")
        p("")
        others = sum(1 for r in rows if r["others"])
        if others:
            p(f"Other jobs were on the cluster during {others} of the {len(rows)} measured starts "
              "(other sessions' tests).\n")
    if RAW["latency"]:
        p("## 2. The proxy's latency: `GET /nb/{id}/api/status`, one keep-alive connection per "
          f"path, interleaved ({HTTP_N} requests per path and round) (µs)\n")
        p("| round | local direct p50 | local via gateway p50 / p99 | added p50 | slurm direct p50 "
          "| slurm via gateway (tunnel) p50 / p99 | added p50 | slurm added − local added |")
        p("|--:|--:|--:|--:|--:|--:|--:|--:|")
        diffs = []
        for row in RAW["latency"]:
            x = row["paths"]
            d = x["slurm"]["added_p50_us"] - x["local"]["added_p50_us"]
            diffs.append(d)
            p(f"| {row['round']} | {x['local-direct']['p50_us']:.0f} | {x['local']['p50_us']:.0f} / "
              f"{x['local']['p99_us']:.0f} | {x['local']['added_p50_us']:.0f} | "
              f"{x['slurm-direct']['p50_us']:.0f} | {x['slurm']['p50_us']:.0f} / "
              f"{x['slurm']['p99_us']:.0f} | {x['slurm']['added_p50_us']:.0f} | **{d:+.0f}** |")
        p("")
        if all("cpu" in row for row in RAW["latency"]):
            p("CPU time per request through the gateway, µs (user+system over the round, divided "
              "by the gateway's requests; the notebook's tree served as many again directly, so "
              "the difference between the two trees is the slurm runtime's relay):\n")
            p("| round | local gateway | slurm gateway (tunnel hub) | local notebook's tree | "
              "slurm notebook's tree (+ the relay) |")
            p("|--:|--:|--:|--:|--:|")
            for row in RAW["latency"]:
                c = row["cpu"]
                p(f"| {row['round']} | {c['local']['gateway_us']:.0f} | {c['slurm']['gateway_us']:.0f} | "
                  f"{c['local']['runtime_tree_us']:.0f} | {c['slurm']['runtime_tree_us']:.0f} |")
            p("")
        dm = med(diffs)
        v = "**met**" if dm <= GOAL_ADDED_MS * 1000 else "**missed**"
        verdicts.append(("proxy's added latency, tunnel − local backend (p50, median of rounds)",
                         f"{dm / 1000:+.3f} ms", f"≤ +{GOAL_ADDED_MS} ms", v))
    if RAW["scp"]:
        p(f"## 3. scp through the SSH front door, {SIZE_MIB} MiB (MB/s)\n")
        p("| direction | local backend, each round | p50 | slurm (tunnel), each round | p50 "
          "| slurm ÷ local (p50 of rounds' ratios) | CPU s per GiB, gateway + runtime: local / slurm |")
        p("|---|---|--:|---|--:|--:|--:|")
        gib = SIZE_MIB / 1024
        for d in ("upload", "download"):
            by = {k: {r["round"]: r for r in RAW["scp"] if r["direction"] == d and r["path"] == k}
                  for k in ("local", "slurm")}
            ratios = [by["slurm"][i]["mbps"] / by["local"][i]["mbps"] for i in by["local"] if i in by["slurm"]]
            cpu = {k: med([(r["gw_cpu_s"] + r["rt_cpu_s"]) / gib for r in by[k].values()]) for k in by}
            cpu_gw = {k: med([r["gw_cpu_s"] / gib for r in by[k].values()]) for k in by}
            each = {k: ", ".join(f"{r['mbps']:.0f}" for _, r in sorted(by[k].items())) for k in by}
            p(f"| {d} | {each['local']} | "
              f"{med([r['mbps'] for r in by['local'].values()]):.0f} | {each['slurm']} | "
              f"{med([r['mbps'] for r in by['slurm'].values()]):.0f} | **{med(ratios):.2f}×** | "
              f"{cpu['local']:.2f} (gw {cpu_gw['local']:.2f}) / {cpu['slurm']:.2f} (gw {cpu_gw['slurm']:.2f}) |")
            v = "**met**" if med(ratios) >= GOAL_SCP else "**missed**"
            verdicts.append((f"scp {d}, slurm ÷ local", f"{med(ratios):.2f}×", f"≥ {GOAL_SCP}×", v))
        p("")
    p("## Goals\n")
    p("| measure | value | goal | verdict |")
    p("|---|--:|--:|---|")
    for row in verdicts:
        p("| " + " | ".join(row) + " |")
    p("")
    return "\n".join(out)


def meta(gs):
    def first(cmd):
        try:
            return subprocess.run(cmd, capture_output=True, text=True).stdout.strip().splitlines()[0]
        except (OSError, IndexError):
            return "?"
    cpu = "?"
    for line in open("/proc/cpuinfo"):
        if line.startswith("model name"):
            cpu = line.split(":", 1)[1].strip()
            break
    mem = next(int(l.split()[1]) for l in open("/proc/meminfo") if l.startswith("MemTotal")) / 1048576
    jl = first([os.path.join(JL, "bin", "jupyter"), "lab", "--version"])
    sandbox = "bubblewrap" if "notebooks run sandboxed" in open(gs.log_path, errors="replace").read() else "none"
    RAW["meta"] = {"when": time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime()), "cpus": os.cpu_count(),
                   "cpu": cpu, "mem": f"{mem:.1f} GiB", "load": open("/proc/loadavg").read().split()[:3],
                   "slurm": first(["sinfo", "--version"]), "atelier": first([BIN, "--version"]),
                   "sandbox": sandbox, "jupyterlab": jl}


def cleanup(gws):
    for gw in gws:
        for nb in list(gw.notebooks):
            try:
                gw.delete(nb, 120)
            except BaseException as e:  # noqa: BLE001 - keep cleaning up
                log(f"deleting {gw.name} notebook {nb}: {e}")
    for job in our_jobs():
        log(f"cancelling job {job}, left over by this run")
        sh("scancel", job, check=False)
    procs.stop_all()
    # A notebook runtime the gateway could not stop (its spec lies under WORK).
    left = sh("pgrep", "-f", "--", f"--spec {WORK}/", check=False).split()
    for pid in left:
        log(f"stopping the notebook runtime {pid}, left over by this run")
        try:
            os.kill(int(pid), 15)
        except OSError:
            pass


def main():
    os.makedirs(os.path.join(WORK, "bin"), exist_ok=True)
    for src, dst in ((BIN, "gateway"), (RT, "atelier-notebook-runtime")):
        d = os.path.join(WORK, "bin", dst)
        try:
            os.link(src, d)
        except OSError:
            shutil.copy2(src, d)
    gws = []
    try:
        gs = Gw("slurm", {"ATELIER_BACKEND": "slurm",
                          "ATELIER_TUNNEL_ADDR": f"127.0.0.1:{free_port()}",
                          "ATELIER_SLURM_CONF": SLURM_CONF, "ATELIER_SLURM_PARTITION": PARTITION})
        gws.append(gs)
        meta(gs)
        if "start" in PARTS:
            part_start(gs)
        if "latency" in PARTS or "scp" in PARTS:
            gl = Gw("local", {"ATELIER_BACKEND": "process"})
            gws.append(gl)
            paths = {}
            for name, gw in (("local", gl), ("slurm", gs)):
                key = os.path.join(WORK, f"key-{name}")
                k = gw.call("POST", "/v1/keypairs", {"name": "k1"}, want=(201,))["private_key"]
                open(key, "w").write(k if k.endswith("\n") else k + "\n")
                os.chmod(key, 0o600)
                nb = gw.create({"name": "bench", "ssh": {"enabled": True, "key_pairs": ["k1"]}})
                paths[name] = (gw, "bench", nb, key)
            for name, (gw, _, nb, _) in paths.items():
                gw.wait_running(nb)
                log(f"{name} notebook {nb} is RUNNING")
            if "latency" in PARTS:
                part_latency(gl, gs, paths["local"][2], paths["slurm"][2])
            if "scp" in PARTS:
                part_scp(paths)
    finally:
        json.dump(RAW, open(RAW_OUT, "w"), indent=1)
        cleanup(gws)
    print(report())


if __name__ == "__main__":
    main()
