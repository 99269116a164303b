#!/usr/bin/env python3
"""Atelier's container notebook benchmark (docker backend on Podman), in one run:

1. start: creating a notebook until its JupyterLab answers through the gateway
   (`POST /v1/notebooks`, then `GET /nb/{id}/api/status` through the proxy until 200),
   versus `podman run -d` of the same image starting `jupyter lab` until its
   `/api/status` answers on the published port;
2. save: saving a running notebook as an image pushed to a registry
   (`POST /v1/notebooks/{id}/save-image` until the notebook is RUNNING again with
   `SaveImage`), versus `podman commit` + `podman push` of the same container.

Rounds alternate the order of the two paths. Both paths use the same engine, image and
registry. Prints a markdown report and writes it under bench/results/ (containers-STAMP.md).
See docs/benchmarks.md.

Environment: ATELIER_BIN (default: the release build in $CARGO_TARGET_DIR), the static
runtime next to it (scripts/build-static-runtime.sh --release), ATELIER_TEST_DOCKER_HOST,
ATELIER_TEST_IMAGE, ATELIER_TEST_REGISTRY (scripts/containers.sh prepares them; bench/containers.sh
sets them), ROUNDS=3, FILE_MB=100 (data written outside the work dir before each save).
"""

import json
import os
import secrets
import shutil
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import time
import urllib.error
import urllib.request

HERE = os.path.dirname(os.path.abspath(__file__))
REPO = os.path.dirname(HERE)
TARGET = os.environ.get("CARGO_TARGET_DIR") or os.path.expanduser("~/.cache/atelier/target")
ATELIER = os.environ.get("ATELIER_BIN") or os.path.join(TARGET, "release", "atelier")
HOST = os.environ["ATELIER_TEST_DOCKER_HOST"]
IMAGE = os.environ["ATELIER_TEST_IMAGE"]
REGISTRY = os.environ["ATELIER_TEST_REGISTRY"]
ROUNDS = int(os.environ.get("ROUNDS", "3"))
FILE_MB = int(os.environ.get("FILE_MB", "100"))
POLL = 0.02


def log(*a):
    print(time.strftime("[%H:%M:%S]"), *a, file=sys.stderr, flush=True)


def free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def podman(*args, check=True):
    r = subprocess.run(["podman", "--url", HOST, *args], capture_output=True, text=True)
    if check and r.returncode != 0:
        raise RuntimeError(f"podman {' '.join(args)}: {r.stderr.strip()}")
    return r.stdout.strip()


def http(method, url, token=None, body=None, timeout=10):
    data = None if body is None else json.dumps(body).encode()
    req = urllib.request.Request(url, data=data, method=method)
    if token:
        req.add_header("Authorization", f"Bearer {token}")
    if data is not None:
        req.add_header("Content-Type", "application/json")
    try:
        with urllib.request.urlopen(req, timeout=timeout) as r:
            text = r.read().decode()
            return r.status, (json.loads(text) if text.startswith(("{", "[")) else text)
    except urllib.error.HTTPError as e:
        return e.code, e.read().decode()
    except (urllib.error.URLError, ConnectionError, TimeoutError, OSError) as e:
        return 0, str(e)


def wait(what, check, limit=300):
    end = time.monotonic() + limit
    while time.monotonic() < end:
        v = check()
        if v:
            return v
        time.sleep(POLL)
    raise RuntimeError(f"timed out waiting for {what}")


class Gateway:
    def __init__(self, work):
        self.data = os.path.join(work, "data")
        self.port = free_port()
        self.base = f"http://127.0.0.1:{self.port}"
        self.token = "atl_bench_" + secrets.token_hex(16)
        env = {k: v for k, v in os.environ.items() if not k.startswith("ATELIER_")}
        config = os.path.join(work, "config.toml")
        with open(config, "w") as f:
            f.write(f'[[images]]\nid = "bench"\nref = "{IMAGE}"\n')
        env.update(
            ATELIER_CONFIG=config,
            ATELIER_DATA_DIR=self.data,
            ATELIER_HTTP_ADDR=f"127.0.0.1:{self.port}",
            ATELIER_SSH_ADDR="off",
            ATELIER_ADMIN_TOKEN=self.token,
            ATELIER_BACKEND="docker",
            ATELIER_DOCKER_HOST=HOST,
            ATELIER_REGISTRY=f"{REGISTRY}/atelier-bench",
            ATELIER_LOG="warn",
        )
        self.log = open(os.path.join(work, "gateway.log"), "w")
        self.proc = subprocess.Popen(
            [ATELIER, "serve"], env=env, stdout=self.log, stderr=self.log, start_new_session=True
        )
        wait("the gateway", lambda: http("GET", self.base + "/healthz")[0] == 200, 60)

    def api(self, method, path, body=None):
        return http(method, self.base + path, self.token, body)

    def status(self, nb):
        code, v = self.api("GET", f"/v1/notebooks/{nb}")
        return v["status"] if code == 200 else None

    def stop(self):
        code, v = self.api("GET", "/v1/notebooks?limit=500")
        for nb in v.get("items", []) if code == 200 else []:
            self.api("DELETE", f"/v1/notebooks/{nb['id']}")
        deadline = time.monotonic() + 120
        while time.monotonic() < deadline:
            code, v = self.api("GET", "/v1/notebooks?limit=500")
            if code != 200 or not v.get("items"):
                break
            time.sleep(0.5)
        os.killpg(self.proc.pid, signal.SIGTERM)
        self.proc.wait(timeout=30)


def atelier_start(gw, n):
    t0 = time.monotonic()
    code, v = gw.api("POST", "/v1/notebooks", {"name": f"bench-{n}", "image": "bench"})
    assert code == 201, v
    nb = v["id"]

    def ready():
        if http("GET", f"{gw.base}/nb/{nb}/api/status", gw.token, timeout=5)[0] == 200:
            return True
        if gw.status(nb) in ("CREATE_FAILED", "ERROR"):
            raise RuntimeError(f"notebook failed: {gw.api('GET', f'/v1/notebooks/{nb}')}")
        return False

    wait("JupyterLab through the gateway", ready)
    return time.monotonic() - t0, nb


def podman_start(n):
    port = free_port()
    token = secrets.token_hex(16)
    t0 = time.monotonic()
    ctr = podman(
        "run", "-d", "--name", f"atelier-bench-direct-{os.getpid()}-{n}", "--user", "1000:100",
        "-p", f"127.0.0.1:{port}:8888", IMAGE,
        "jupyter", "lab", "--ip=0.0.0.0", "--port=8888", "--no-browser",
        f"--IdentityProvider.token={token}", "--ServerApp.root_dir=/home/ma-user/work",
    )
    wait(
        "JupyterLab in a plain container",
        lambda: http("GET", f"http://127.0.0.1:{port}/api/status?token={token}", timeout=5)[0] == 200,
    )
    return time.monotonic() - t0, ctr


def fill(ctr, tag):
    """FILE_MB of new random data outside the work dir (the previous round's removed), so
    every commit carries the same amount of new content."""
    podman(
        "exec", ctr, "sh", "-c",
        f"rm -f /home/ma-user/blob-*.bin; head -c {FILE_MB}M /dev/urandom > /home/ma-user/blob-{tag}.bin",
    )


def atelier_save(gw, nb, n):
    ctr = f"atelier-nb-{nb}"
    fill(ctr, f"a{n}")
    t0 = time.monotonic()
    code, v = gw.api("POST", f"/v1/notebooks/{nb}/save-image", {"name": "bench", "tag": f"a{n}"})
    assert code == 202, v
    wait("the save", lambda: gw.status(nb) == "RUNNING", 600)
    took = time.monotonic() - t0
    _, ev = gw.api("GET", f"/v1/notebooks/{nb}/events")
    last = [e["event"] for e in ev["items"] if e["event"] in ("SaveImage", "SavedImageFailed")][-1]
    assert last == "SaveImage", ev["items"][-3:]
    return took


def podman_save(nb, n):
    ctr = f"atelier-nb-{nb}"
    fill(ctr, f"p{n}")
    ref = f"{REGISTRY}/atelier-bench/direct/bench:p{n}"
    t0 = time.monotonic()
    podman("commit", "-q", ctr, ref)
    podman("push", "-q", ref)
    took = time.monotonic() - t0
    podman("rmi", "-f", ref, check=False)
    return took


def summary(xs):
    return statistics.median(xs), min(xs), max(xs)


def main():
    if not os.path.exists(ATELIER):
        sys.exit(f"no gateway binary at {ATELIER}: cargo build --release, or set ATELIER_BIN")
    work = tempfile.mkdtemp(prefix="containerbench.")
    gw = Gateway(work)
    starts = {"atelier": [], "podman": []}
    saves = {"atelier": [], "podman": []}
    direct = []
    try:
        # One warm-up of each path (page cache, the engine's image store).
        _, nb = atelier_start(gw, "warm")
        _, c = podman_start("warm")
        direct.append(c)
        for r in range(ROUNDS):
            order = ["atelier", "podman"] if r % 2 == 0 else ["podman", "atelier"]
            for path in order:
                if path == "atelier":
                    took, _ = atelier_start(gw, r)
                else:
                    took, c = podman_start(r)
                    direct.append(c)
                starts[path].append(took)
                log(f"start round {r} {path}: {took:.3f} s")
        for r in range(ROUNDS):
            order = ["atelier", "podman"] if r % 2 == 0 else ["podman", "atelier"]
            for path in order:
                took = atelier_save(gw, nb, r) if path == "atelier" else podman_save(nb, r)
                saves[path].append(took)
                log(f"save round {r} {path}: {took:.3f} s")
    finally:
        for c in direct:
            podman("rm", "-f", "-t", "2", c, check=False)
        gw.stop()
        for ref in podman("images", "--format", "{{.Repository}}:{{.Tag}}", check=False).split():
            if "/atelier-bench/" in ref:
                podman("rmi", "-f", ref, check=False)
        shutil.rmtree(work, ignore_errors=True)

    cpu = subprocess.run(["sh", "-c", "grep -m1 'model name' /proc/cpuinfo | cut -d: -f2"],
                         capture_output=True, text=True).stdout.strip()
    version = podman("version", "--format", "{{.Server.Version}}", check=False)
    lines = [
        f"### Result of {time.strftime('%Y-%m-%d %H:%M UTC', time.gmtime())}",
        "",
        f"Command: `ROUNDS={ROUNDS} FILE_MB={FILE_MB} bash bench/containers.sh`; "
        f"{os.cpu_count()} × {cpu}; Podman {version}; image `{IMAGE}`.",
        "",
        "| What | Atelier median (min … max) | Podman median (min … max) | Ratio of medians | Goal |",
        "|---|--:|--:|--:|---|",
    ]
    for name, data, goal in (
        ("create → JupyterLab answers (s)", starts, "≤ 1.2×"),
        (f"save as image + push, {FILE_MB} MB written (s)", saves, "≤ 1.2×"),
    ):
        a, p = summary(data["atelier"]), summary(data["podman"])
        ratio = a[0] / p[0]
        verdict = "met" if ratio <= 1.2 else "missed"
        lines.append(
            f"| {name} | {a[0]:.2f} ({a[1]:.2f} … {a[2]:.2f}) | {p[0]:.2f} ({p[1]:.2f} … {p[2]:.2f}) "
            f"| {ratio:.2f}× | {goal}: **{verdict}** |"
        )
    report = "\n".join(lines) + "\n"
    print(report)
    os.makedirs(os.path.join(HERE, "results"), exist_ok=True)
    stamp = time.strftime("%Y%m%dT%H%M%SZ", time.gmtime())
    with open(os.path.join(HERE, "results", f"containers-{stamp}.md"), "w") as f:
        f.write(report)
        f.write("\nraw (s):\n" + json.dumps({"start": starts, "save": saves}, indent=1) + "\n")


if __name__ == "__main__":
    main()
