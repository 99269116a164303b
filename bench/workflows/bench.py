"""The workflow benchmark (issue 19), standard library only: the DAGs of dags.py (a chain of
40 no-op steps; a 20-wide fan-out/fan-in) on Atelier and on Prefect 3, each run once as a
warm-up and then REPEAT times.

  Atelier  a gateway on 127.0.0.1 with a temporary data dir; the no-op component
           (tests/plugins/workflow-step/noop) registered as plugin `noop` 1.0.0; each DAG a
           workflow of `wasm` steps; each run started with POST /v1/workflows/{name}/runs
           and read with GET …/runs/{number} every POLL_MS (20) until it is terminal.
           End to end: the run's created_at → ended_at; hand-off per edge: the dependent
           step's started_at − its dependency's ended_at (the sink: the last one's).
  Prefect  `prefect server start` on 127.0.0.1 (SQLite under a fresh PREFECT_HOME; what a
           Prefect user runs locally), the same DAGs as flows of no-op tasks
           (prefect_dag.py, in the venv of bench/workflows-requirements.txt), measured the
           same way from the flow and task runs the server records.

Prints a markdown report. Everything it starts is stopped at exit.

    python3 bench.py  (environment: WORK, MODE=both|atelier|prefect; for Atelier
                       ATELIER_BIN, NOOP_WASM;
                       for Prefect PREFECT_VENV; REPEAT=5, POLL_MS=20; RAW_OUT: where the
                       raw timings go as JSON, default $WORK/raw.json)"""

import json
import os
import platform
import re
import subprocess
import sys
import threading
import time
from datetime import datetime

from dags import DAGS, handoffs, pct

E = os.environ
WORK = E["WORK"]
MODE = E.get("MODE", "both")
REPEAT = int(E.get("REPEAT", "5"))
POLL = int(E.get("POLL_MS", "20")) / 1000
HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.dirname(os.path.dirname(HERE))
sys.path.insert(0, os.path.dirname(HERE))
from benchkit import Procs, free_port, http_ok, json_of, log, request, settled, until  # noqa: E402

TERMINAL = {"COMPLETED", "FAILED", "STOPPED"}
procs = Procs(WORK)


def ts(s):
    """An RFC 3339 time (`2026-12-07T19:45:00.123456Z`) in seconds since the epoch; digits
    past the microsecond are dropped (Python's parser takes at most six)."""
    m = re.fullmatch(r"(.*T\d\d:\d\d:\d\d)(?:\.(\d+))?(Z|[+-]\d\d:\d\d)", s)
    if not m:
        raise SystemExit(f"not an RFC 3339 time: {s!r}")
    frac = f".{m[2][:6]}" if m[2] else ""
    zone = "+00:00" if m[3] == "Z" else m[3]
    return datetime.fromisoformat(m[1] + frac + zone).timestamp()


# --- Atelier ---------------------------------------------------------------------------------

class Gw:
    def __init__(self):
        self.port = free_port()
        self.base = f"http://127.0.0.1:{self.port}"
        self.token = f"atl_bench_workflows_{os.getpid()}_token"
        data = os.path.join(WORK, "gateway")
        os.makedirs(data, exist_ok=True)
        env = {"ATELIER_DATA_DIR": data, "ATELIER_HTTP_ADDR": f"127.0.0.1:{self.port}",
               "ATELIER_SSH_ADDR": "off", "ATELIER_ADMIN_TOKEN": self.token}
        p = procs.start("gateway", [E["ATELIER_BIN"], "serve"], env)
        until("the gateway's /healthz", lambda: http_ok(self.base + "/healthz"), 60, 0.1,
              p, procs)
        # On a fresh data dir the gateway prepares JupyterLab for process notebooks (a
        # virtualenv and a pip install): not measured alongside the engine.
        waited = settled("the gateway's start-up work (JupyterLab's virtualenv)", p, procs)
        if waited > 1.5:
            log(f"the gateway's start-up work took {waited:.1f} s (waited for it)")

    def call(self, method, path, body=None, want=(200, 201, 204), what=None):
        status, text = request(self.base, self.token, method, path, body)
        if status == 404 and what:
            raise SystemExit(f"{method} {path} answered 404: {what} "
                             f"({text[:300].decode(errors='replace')})")
        if status not in want:
            raise SystemExit(f"{method} {path}: {status} {text[:400].decode(errors='replace')}")
        return json_of(text)

    def register(self, wasm):
        manifest = json.dumps({"name": "noop", "version": "1.0.0", "world": "workflow-step"})
        r = subprocess.run(
            ["curl", "-sS", "-o", os.path.join(WORK, "register.json"), "-w", "%{http_code}",
             "-H", f"Authorization: Bearer {self.token}", "-F", f"manifest={manifest}",
             "-F", f"component=@{wasm}", f"{self.base}/v1/plugins"],
            capture_output=True, text=True, check=True)
        if r.stdout != "201":
            raise SystemExit(f"POST /v1/plugins (noop): {r.stdout} "
                             f"{open(os.path.join(WORK, 'register.json')).read()[:400]}")

    def run(self, name):
        """One run of workflow `name`: its record once terminal, and the client's time from
        the POST to seeing it terminal."""
        t0 = time.monotonic()
        r = self.call("POST", f"/v1/workflows/{name}/runs", {}, want=(201,),
                      what="this gateway has no workflow runs API (POST /v1/workflows/{name}/runs)")
        for k in ("id", "number", "status"):
            if k not in r:
                raise SystemExit(f"POST /v1/workflows/{name}/runs: no {k!r} in {r}")
        path = f"/v1/workflows/{name}/runs/{r['number']}"

        def done():
            v = self.call("GET", path, what="this gateway has no GET " + path)
            return v if str(v.get("status", "")).upper() in TERMINAL else None
        v = until(f"run {r['number']} of {name} to end", done, 120, POLL)
        seen = time.monotonic() - t0
        if v["status"].upper() != "COMPLETED":
            steps = [(s.get("name"), s.get("status")) for s in v.get("steps", [])]
            raise SystemExit(f"run {r['number']} of {name}: {v['status']}: {steps}")
        return v, seen


def atelier():
    gw = Gw()
    me = gw.call("GET", "/v1/whoami")
    log(f"gateway up on {gw.base} as {me.get('name', me.get('id'))}")
    gw.register(E["NOOP_WASM"])
    step = {"step_type": "wasm", "properties": {"plugin": "noop", "version": "1.0.0"}}
    for name, dag in DAGS.items():
        definition = {"name": name, "steps": [
            {"name": s, **step, **({"depend_steps": deps} if deps else {})} for s, deps in dag]}
        gw.call("POST", "/v1/workflows", definition, want=(201,),
                what="this gateway has no workflows API (POST /v1/workflows)")
    results = {}
    for name, dag in DAGS.items():
        r = {"e2e": [], "e2e_call": [], "handoff": []}
        for i in range(REPEAT + 1):
            v, seen = gw.run(name)
            steps = {s["name"]: s for s in v["steps"]}
            missing = [s for s, _ in dag if s not in steps or not steps[s].get("started_at")
                       or not steps[s].get("ended_at")]
            if missing:
                raise SystemExit(f"run {v.get('number')} of {name}: no start or end for the "
                                 f"steps {missing[:5]}")
            times = {s: (ts(steps[s]["started_at"]), ts(steps[s]["ended_at"])) for s, _ in dag}
            e2e = ts(v["ended_at"]) - ts(v["created_at"])
            log(f"atelier {name}: {'warm-up' if i == 0 else f'run {i}'} {e2e * 1000:.0f} ms")
            if i == 0:
                continue
            r["e2e"].append(e2e)
            r["e2e_call"].append(seen)
            r["handoff"] += handoffs(dag, times)
        results[name] = r
    return results


# --- Prefect ---------------------------------------------------------------------------------

def prefect():
    venv = E["PREFECT_VENV"]
    port = free_port()
    home = os.path.join(WORK, "prefect-home")
    os.makedirs(home, exist_ok=True)
    api = f"http://127.0.0.1:{port}/api"
    env = {"PREFECT_HOME": home, "PREFECT_API_URL": api, "PREFECT_SERVER_ANALYTICS_ENABLED":
           "false", "PREFECT_SERVER_UI_ENABLED": "false", "NO_COLOR": "1"}
    p = procs.start("prefect-server", [os.path.join(venv, "bin/prefect"), "server", "start",
                                 "--host", "127.0.0.1", "--port", str(port), "--analytics-off",
                                 "--no-ui"], env)
    until("the Prefect server's /api/health", lambda: http_ok(api + "/health"), 180, 0.2,
          p, procs)
    log(f"prefect server up on {api}")
    out = os.path.join(WORK, "prefect.json")
    # Prefect's console logs (a line per task run) go to a file; its progress lines here.
    flows_log = os.path.join(WORK, "prefect-flows.log")
    with open(flows_log, "ab") as f:
        p = subprocess.Popen([os.path.join(venv, "bin/python"),
                              os.path.join(HERE, "prefect_dag.py"), str(REPEAT), out],
                             env={**os.environ, **env}, cwd=HERE, stdout=f,
                             stderr=subprocess.PIPE)
        watchdog = threading.Timer(1800, p.kill)  # bounded: 30 min for every run
        watchdog.start()
        for line in p.stderr:
            f.write(line)
            if line.startswith(b"prefect "):
                log(line.decode(errors="replace").rstrip())
        try:
            rc = p.wait(timeout=60)
        except subprocess.TimeoutExpired:
            p.kill()
            rc = p.wait()
        watchdog.cancel()
    if rc != 0:
        tail = open(flows_log, errors="replace").read()[-3000:]
        raise SystemExit(f"prefect_dag.py failed ({rc}):\n{tail}")
    with open(out) as f:
        return json.load(f)


# --- the report ------------------------------------------------------------------------------

def ms(x):
    return "–" if x is None else f"{x * 1000:.1f} ms" if x < 10 else f"{x:.1f} s"


def prefect_version():
    try:
        return subprocess.run([os.path.join(E["PREFECT_VENV"], "bin/python"), "-c",
                               "import prefect; print(prefect.__version__)"],
                              capture_output=True, text=True, timeout=120).stdout.strip()
    except Exception:
        return "?"


def report(res):
    try:
        commit = subprocess.run(["git", "-C", ROOT, "rev-parse", "--short", "HEAD"],
                                capture_output=True, text=True).stdout.strip()
    except OSError:
        commit = "?"
    cpu = next((line.split(":", 1)[1].strip() for line in open("/proc/cpuinfo")
                if line.startswith("model name")), platform.processor())
    print(f"# Workflow benchmark, {time.strftime('%Y-%m-%d %H:%M UTC', time.gmtime())}")
    print()
    print(f"Commit {commit}; {os.cpu_count()} CPUs ({cpu}); load average at the end "
          f"{os.getloadavg()[0]:.2f}; {REPEAT} runs per DAG after one warm-up; "
          f"sides: {MODE}" + (f"; Prefect {prefect_version()}" if "prefect" in res else "") +
          ". Every step is a no-op. p99 is nearest-rank: with fewer than 100 samples, the "
          "largest.")
    print()
    print("| DAG | system | end to end p50 | p99 | hand-off p50 | p99 | hand-offs | "
          "client-side p50 |")
    print("|---|---|---:|---:|---:|---:|---:|---:|")
    for dag in DAGS:
        for system, label in (("atelier", "Atelier (server times)"),
                              ("prefect", "Prefect (server times)")):
            if system not in res:
                continue
            r = res[system][dag]
            print(f"| {dag} | {label} | {ms(pct(r['e2e'], .5))} | {ms(pct(r['e2e'], .99))} | "
                  f"{ms(pct(r['handoff'], .5))} | {ms(pct(r['handoff'], .99))} | "
                  f"{len(r['handoff'])} | {ms(pct(r['e2e_call'], .5))} |")
        if "prefect" in res:
            r = res["prefect"][dag]
            print(f"| {dag} | Prefect (task bodies) | | | {ms(pct(r['handoff_body'], .5))} | "
                  f"{ms(pct(r['handoff_body'], .99))} | {len(r['handoff_body'])} | |")
        steps = len(DAGS[dag])
        depth = 3 if dag == "fan20" else steps
        print(f"| {dag} | Argo / Kubeflow Pipelines (published: 5–10 s a step, a pod each; "
              f"not measured) | ~{depth * 5}–{depth * 10} s | | 5–10 s | | | |")
    print()
    print("End to end: the run's created → ended as the server records them; client-side: "
          "from the call that starts it to seeing it end (Atelier: POST → a GET every "
          f"{POLL * 1000:.0f} ms sees it terminal; Prefect: the flow call → its return, "
          "log and event flushing included). Hand-off: a step's start − the end of its "
          "(last) dependency.")
    if "prefect" in res:
        print("Prefect (task bodies): the hand-off from time.perf_counter() in the task "
              "bodies (Prefect's bookkeeping after a body and before the next one included). "
              "Flows submit their tasks to a 20-thread pool, each `wait_for` its dependencies; "
              "otherwise Prefect's defaults.")
        print("Prefect's flow run start → end (its creation before, and the call's return "
              "after, left out), p50: " + "; ".join(
                  f"{dag} {ms(pct(res['prefect'][dag]['start_end'], .5))}" for dag in DAGS)
              + ".")
    if "atelier" in res:
        a = res["atelier"]
        hp99 = pct(a["chain40"]["handoff"] + a["fan20"]["handoff"], .99)
        chain = pct(a["chain40"]["e2e"], .5)
        print()
        print("| goal | measured | met |")
        print("|---|---:|---|")
        print(f"| step hand-off p99 ≤ 50 ms (both DAGs) | {ms(hp99)} | "
              f"{'yes' if hp99 <= 0.05 else 'no'} |")
        print(f"| 40-step chain < 2 s end to end (p50) | {ms(chain)} | "
              f"{'yes' if chain < 2 else 'no'} |")
        if "prefect" in res:
            for dag in DAGS:
                x = pct(res["prefect"][dag]["e2e"], .5) / pct(a[dag]["e2e"], .5)
                print(f"| ≥ 10× faster than Prefect end to end, {dag} (p50) | {x:.1f}× | "
                      f"{'yes' if x >= 10 else 'no'} |")
    with open(E.get("RAW_OUT") or os.path.join(WORK, "raw.json"), "w") as f:
        json.dump(res, f)


def main():
    if MODE not in ("both", "atelier", "prefect"):
        raise SystemExit(f"MODE={MODE}: one of both, atelier, prefect")
    res = {}
    # Prefect first: its server is stopped before the gateway starts, so neither side
    # measures with the other's idle server beside it.
    if MODE in ("both", "prefect"):
        res["prefect"] = prefect()
        procs.stop_all()
    if MODE in ("both", "atelier"):
        res["atelier"] = atelier()
    report(res)


try:
    main()
finally:
    procs.stop_all()
