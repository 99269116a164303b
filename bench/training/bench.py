"""The training benchmark (issue 18), one run, standard library only:

  submit → first line   a command job on the process backend and a container job on Podman
                        (docker backend), from the POST to the first line the job's code
                        prints (read from the followed log), against `podman run` of the
                        same image and command by hand (to its first line of output);
  wasm vs cpython       the linear-regression example as a Wasm job (submit → COMPLETED and
                        the train call alone) and the same algorithm in CPython
                        (bench/training/linreg.py, same data, epochs, checkpoints);
  hang detection        a job that prints a line then sleeps, hang time H: from its last
                        line to the JobHanged event, against H (goal: ≤ H·1.1 + one sampling
                        period).

Prints a markdown report. Everything it starts is stopped at exit.

    python3 bench.py  (environment: ATELIER_BIN, RUNTIME_BIN, JL_VENV, S3S_FS, DOCKER_HOST,
                       IMAGE, LINREG_WASM, WORK, REPEAT=5, HANG=10)"""

import json
import os
import statistics
import subprocess
import sys
import time
import urllib.request

E = os.environ
BIN, RT, JL, S3S, DOCKER, IMAGE, WASM, WORK = (E[k] for k in (
    "ATELIER_BIN", "RUNTIME_BIN", "JL_VENV", "S3S_FS", "DOCKER_HOST", "IMAGE", "LINREG_WASM",
    "WORK"))
REPEAT = int(E.get("REPEAT", "5"))
HANG = int(E.get("HANG", "10"))
HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.dirname(os.path.dirname(HERE))
sys.path.insert(0, os.path.dirname(HERE))
from benchkit import (Procs, free_port, http_ok, json_of, log, port_open,  # noqa: E402
                      request, until)

procs = Procs(WORK)
start = procs.start


class Gw:
    def __init__(self, name, extra_env, toml=""):
        self.port = free_port()
        self.base = f"http://127.0.0.1:{self.port}"
        self.token = f"atl_bench_{name}_{os.getpid()}_token"
        data = os.path.join(WORK, name)
        os.makedirs(data, exist_ok=True)
        env = {"ATELIER_DATA_DIR": data, "ATELIER_HTTP_ADDR": f"127.0.0.1:{self.port}",
               "ATELIER_SSH_ADDR": "off", "ATELIER_ADMIN_TOKEN": self.token,
               "ATELIER_JUPYTER_VENV": JL, "ATELIER_RUNTIME_BIN": RT,
               "ATELIER_TRAINING_MIN_HANG_SECS": "2", **extra_env}
        if toml:
            path = os.path.join(data, "config.toml")
            open(path, "w").write(toml)
            env["ATELIER_CONFIG"] = path
        start(f"gateway-{name}", [BIN, "serve"], env)
        until(f"the {name} gateway", lambda: http_ok(self.base + "/healthz"), 60, 0.2)

    def call(self, method, path, body=None, want=(200, 201, 204)):
        status, text = request(self.base, self.token, method, path, body)
        if status not in want:
            raise SystemExit(f"{method} {path}: {status} {text[:400]!r}")
        return json_of(text)

    def first_line(self, body):
        """POST the job, then read its followed log to the first line its code prints."""
        t0 = time.monotonic()
        j = self.call("POST", "/v1/training-jobs", body)
        req = urllib.request.Request(
            f"{self.base}/v1/training-jobs/{j['id']}/logs?follow=true&system=false")
        req.add_header("Authorization", f"Bearer {self.token}")
        with urllib.request.urlopen(req, timeout=120) as r:
            while True:
                line = r.readline()
                if not line:
                    raise SystemExit(f"job {j['name']}: its log ended without a line")
                if line.strip():
                    return time.monotonic() - t0, j

    def wait(self, name, want, timeout=600):
        def done():
            v = self.call("GET", f"/v1/training-jobs/{name}")
            if v["status"] in ("FAILED", "ABNORMAL") and want != v["status"]:
                raise SystemExit(f"job {name}: {v['status']} {v.get('status_reason')}")
            return v if v["status"] == want else None
        return until(f"job {name} {want}", done, timeout, 0.1)


def med(xs):
    return statistics.median(xs)


def ms(x):
    return f"{x * 1000:.0f}"


def main():
    results = {}
    # Object storage for the Wasm job's data.
    s3_port = free_port()
    ak, sk = f"BENCH{os.getpid()}", f"bench-secret-{os.getpid()}"
    s3root = os.path.join(WORK, "s3")
    os.makedirs(os.path.join(s3root, "data", "line"), exist_ok=True)
    os.makedirs(os.path.join(s3root, "out"), exist_ok=True)
    points = os.path.join(ROOT, "examples/plugins/python-training-algorithm/storage/data/line/points.csv")
    open(os.path.join(s3root, "data/line/points.csv"), "w").write(open(points).read())
    start("s3", [S3S, "--host", "127.0.0.1", "--port", str(s3_port), "--access-key", ak,
                 "--secret-key", sk, s3root])
    until("s3s-fs", lambda: port_open(s3_port), 30, 0.1)

    command = "echo first-line; sleep 1"
    # --- podman run by hand ---
    log("podman run, by hand")
    hand = []
    for _ in range(REPEAT):
        t0 = time.monotonic()
        p = subprocess.Popen(["podman", "--url", DOCKER, "run", "--rm", IMAGE, "sh", "-c", command],
                             stdout=subprocess.PIPE, stderr=subprocess.DEVNULL)
        p.stdout.readline()
        hand.append(time.monotonic() - t0)
        p.wait()
    results["podman run"] = hand

    # --- process backend ---
    log("command jobs on the process backend")
    gp = Gw("process", {"ATELIER_BACKEND": "process"})
    proc = []
    for i in range(REPEAT):
        t, j = gp.first_line({"name": f"cmd-{i}", "custom": {"boot_command": command}})
        proc.append(t)
        gp.wait(j["name"], "COMPLETED")
    results["process job"] = proc

    # --- Wasm vs CPython ---
    log("the Wasm linear regression against the same algorithm in CPython")
    gp.call("POST", "/v1/storage/connections", {
        "name": "local", "endpoint": f"http://127.0.0.1:{s3_port}", "access_key_id": ak,
        "secret_access_key": sk})
    manifest = open(os.path.join(ROOT, "examples/plugins/python-training-algorithm/plugin.json")).read()
    subprocess.run(["curl", "-fsS", "-o", "/dev/null", "-H", f"Authorization: Bearer {gp.token}",
                    "-F", f"manifest={manifest}", "-F", f"component=@{WASM}",
                    f"{gp.base}/v1/plugins"], check=True)
    gp.call("POST", "/v1/algorithms", {"name": "linreg", "plugin": {"name": "linear-regression",
                                                                    "version": "0.1.0"}})
    # At most 128 files an output holds (seed T8-16): one checkpoint an epoch.
    epochs = 100
    wasm, cpy = [], []
    for i in range(REPEAT):
        t0 = time.monotonic()
        gp.call("POST", "/v1/training-jobs", {
            "name": f"linreg-{i}", "algorithm": "linreg", "connection": "local",
            "inputs": [{"name": "data_url", "path": "obs://data/line/"}],
            "outputs": [{"name": "train_url", "path": f"obs://out/linreg-{i}/"}],
            "hyperparameters": {"epochs": epochs}})
        gp.wait(f"linreg-{i}", "COMPLETED")
        wasm.append(time.monotonic() - t0)
        out = os.path.join(WORK, f"cpython-{i}")
        t0 = time.monotonic()
        subprocess.run([os.path.join(JL, "bin/python"), os.path.join(HERE, "linreg.py"),
                        os.path.join(s3root, "data/line"), out, str(epochs)], check=True,
                       stdout=subprocess.DEVNULL)
        cpy.append(time.monotonic() - t0)
    results["wasm job"] = wasm
    results["cpython"] = cpy

    # --- hang detection ---
    log(f"hang detection, hang time {HANG} s")
    j = gp.call("POST", "/v1/training-jobs", {
        "name": "hang", "custom": {"boot_command": "echo last-line; exec sleep 600"},
        "hang_detect_seconds": HANG})
    gp.wait("hang", "RUNNING")
    t_line = until("its line", lambda: time.monotonic() if b"last-line" in gp.call(
        "GET", "/v1/training-jobs/hang/logs?system=false") else None, 60, 0.05)

    def hanged():
        ev = gp.call("GET", "/v1/training-jobs/hang/events")["items"]
        return time.monotonic() if any(e["text"].startswith("The system detects") for e in ev) else None
    t_hang = until("JobHanged", hanged, HANG * 3 + 30, 0.05)
    results["hang"] = t_hang - t_line
    period = max(1.0, min(30.0, HANG / 10))

    # --- docker backend (Podman) ---
    log("container jobs on Podman")
    toml = f'[[images]]\nid = "jupyterlab"\nref = "{IMAGE}"\ndescription = "the test image"\n'
    gd = Gw("docker", {"ATELIER_BACKEND": "docker", "ATELIER_DOCKER_HOST": DOCKER}, toml)
    cont = []
    for i in range(REPEAT):
        t, j = gd.first_line({"name": f"ctr-{i}", "custom": {"image": IMAGE, "boot_command": command}})
        cont.append(t)
        gd.wait(j["name"], "COMPLETED")
    results["container job"] = cont

    # --- the report ---
    h = med(hand)
    print("| path | median | min | max | ÷ podman run | added |")
    print("|---|---:|---:|---:|---:|---:|")
    for k in ("podman run", "process job", "container job"):
        xs = results[k]
        print(f"| {k} | {ms(med(xs))} ms | {ms(min(xs))} ms | {ms(max(xs))} ms | "
              f"{med(xs) / h:.2f}× | {ms(med(xs) - h)} ms |")
    print()
    print(f"Wasm linear regression ({epochs} epochs, checkpoint each): job submit→COMPLETED "
          f"median {ms(med(wasm))} ms; CPython, same algorithm and checkpoints: "
          f"{ms(med(cpy))} ms (interpreter start included).")
    print()
    print(f"Hang detection: hang time {HANG} s, sampling period {period:.0f} s: JobHanged "
          f"{results['hang']:.2f} s after the job's last line (goal ≤ {HANG * 1.1 + period:.1f} s).")
    json.dump(results, open(os.path.join(WORK, "raw.json"), "w"))


try:
    main()
finally:
    procs.stop_all()
