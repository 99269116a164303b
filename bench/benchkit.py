"""Helpers the Python benchmark drivers share (bench/training/bench.py,
bench/workflows/bench.py), standard library only: processes started in their own session
with their output in WORK/<name>.log and all stopped at exit, bounded waits, loopback ports,
and JSON calls to a gateway. A driver adds bench/ to sys.path and imports this."""

import json
import os
import signal
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request


def log(*a):
    print(*a, file=sys.stderr, flush=True)


def free_port():
    s = socket.socket()
    s.bind(("127.0.0.1", 0))
    p = s.getsockname()[1]
    s.close()
    return p


def port_open(port):
    try:
        socket.create_connection(("127.0.0.1", port), 1).close()
        return True
    except OSError:
        return None


class Procs:
    """The processes a driver starts, each in a session of its own, logging to
    WORK/<name>.log; `stop_all` ends their process groups (SIGTERM, SIGKILL after 30 s)."""

    def __init__(self, work):
        self.work = work
        self.running = []

    def start(self, name, argv, env=None):
        out = open(os.path.join(self.work, f"{name}.log"), "ab")
        p = subprocess.Popen(argv, env={**os.environ, **(env or {})}, stdout=out, stderr=out,
                             start_new_session=True)
        p.bench_name = name
        self.running.append(p)
        return p

    def log_tail(self, p, n=3000):
        with open(os.path.join(self.work, f"{p.bench_name}.log"), errors="replace") as f:
            return f.read()[-n:]

    def stop_all(self):
        for p in self.running:
            try:
                os.killpg(p.pid, signal.SIGTERM)
            except ProcessLookupError:
                pass
        for p in self.running:
            try:
                p.wait(timeout=30)
            except subprocess.TimeoutExpired:
                os.killpg(p.pid, signal.SIGKILL)
                p.wait()
        self.running.clear()


def children(pid):
    """The pids of `pid`'s child processes (Linux: /proc/<pid>/task/*/children)."""
    kids = []
    try:
        for t in os.listdir(f"/proc/{pid}/task"):
            with open(f"/proc/{pid}/task/{t}/children") as f:
                kids += [int(k) for k in f.read().split()]
    except OSError:
        pass
    return kids


def settled(what, proc, procs, timeout=900, quiet=1.0):
    """Waits until `proc` has had no child process for `quiet` seconds (at most `timeout`),
    so what it starts by itself on start (a gateway preparing JupyterLab's virtualenv: a
    `pip install` that takes a CPU) is not measured with it. Returns the seconds waited."""
    t0 = time.monotonic()
    calm = [None]

    def check():
        if children(proc.pid):
            calm[0] = None
            return None
        calm[0] = calm[0] or time.monotonic()
        return True if time.monotonic() - calm[0] >= quiet else None
    until(what, check, timeout, 0.1, proc, procs)
    return time.monotonic() - t0


def until(what, fn, timeout=300, every=0.05, proc=None, procs=None):
    """fn() until it returns something other than None (that value), at most `timeout`
    seconds; fails early, with its log's tail, when `proc` (started by `procs`) exits."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        v = fn()
        if v is not None:
            return v
        if proc is not None and proc.poll() is not None:
            tail = procs.log_tail(proc) if procs else ""
            raise SystemExit(f"{getattr(proc, 'bench_name', proc.args[0])} exited "
                             f"({proc.returncode}) while waiting for {what}:\n{tail}")
        time.sleep(every)
    raise SystemExit(f"timed out after {timeout} s waiting for {what}")


def http_ok(url):
    """True when GET url answers 200, else None (for `until`)."""
    try:
        with urllib.request.urlopen(url, timeout=2) as r:
            return True if r.status == 200 else None
    except Exception:
        return None


def request(base, token, method, path, body=None, timeout=60):
    """One call with a bearer token and a JSON body: (status, the reply's bytes)."""
    data = None if body is None else json.dumps(body).encode()
    req = urllib.request.Request(base + path, data=data, method=method)
    req.add_header("Authorization", f"Bearer {token}")
    if data is not None:
        req.add_header("Content-Type", "application/json")
    try:
        with urllib.request.urlopen(req, timeout=timeout) as r:
            return r.status, r.read()
    except urllib.error.HTTPError as e:
        return e.code, e.read()


def json_of(text):
    """The reply parsed when it is a JSON object or array, else the bytes as they came."""
    return json.loads(text) if text and text[:1] in b"{[" else text
