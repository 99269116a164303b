#!/usr/bin/env python3
"""Interleaved one-connection HTTP latency, used by bench/proxy.sh.

Keeps one keep-alive connection per target and sends GETs to the targets in turn (the
order rotates every iteration), so every target is measured in the same moments: slow drift
of the machine's speed, which on a shared VM is larger than a proxy's added latency, cancels
out of the differences. Prints one line per target:

    RESULT target=NAME n=3000 p50_us=... p90_us=... p99_us=... mean_us=... added_p50_us=...

`added_p50_us` is the median over iterations of (this target − its baseline) for the same
iteration; the baseline is the first target unless `--pair NAME BASE` names another. A URL
`http+unix://%2Fpath%2Fto%2Fserver.sock/path` is sent over that unix socket (a sandboxed
notebook's Jupyter listens on one). Standard library only.

    http_rtt.py --target direct http://127.0.0.1:8888/nb/ID/api/status 'Authorization: token T' \
                --target atelier http://127.0.0.1:8000/nb/ID/api/status 'Authorization: Bearer B' \
                -n 3000 --warmup 300
"""

import argparse
import http.client
import math
import socket
import statistics
import sys
import time
import urllib.parse


class Target:
    def __init__(self, name, url, header):
        self.name = name
        u = urllib.parse.urlsplit(url)
        self.unix = None
        if u.scheme == "http+unix":
            self.unix = urllib.parse.unquote(u.netloc)
            self.host, self.port = "localhost", 80
        elif u.scheme == "http":
            self.host, self.port = u.hostname, u.port or 80
        else:
            raise SystemExit(f"http_rtt: only http:// and http+unix:// URLs: {url}")
        self.path = (u.path or "/") + (f"?{u.query}" if u.query else "")
        self.headers = {}
        if header:
            k, _, v = header.partition(":")
            self.headers[k.strip()] = v.strip()
        self.conn = None
        self.samples = []

    def connect(self, timeout):
        self.conn = http.client.HTTPConnection(self.host, self.port, timeout=timeout)
        if self.unix:
            sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
            sock.settimeout(timeout)
            sock.connect(self.unix)
            self.conn.sock = sock
        else:
            self.conn.connect()
            self.conn.sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)

    def get(self):
        t0 = time.perf_counter_ns()
        self.conn.request("GET", self.path, headers=self.headers)
        resp = self.conn.getresponse()
        resp.read()
        dt = time.perf_counter_ns() - t0
        if resp.status != 200:
            raise SystemExit(f"http_rtt: {self.name} answered {resp.status}")
        return dt


def pct(sorted_vals, p):
    k = math.ceil(p / 100.0 * len(sorted_vals)) - 1
    return sorted_vals[max(0, min(len(sorted_vals) - 1, k))]


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument(
        "--target", nargs=3, action="append", metavar=("NAME", "URL", "HEADER"), required=True,
        help="a path to measure; HEADER is 'Name: value' or ''; the first one is the baseline",
    )
    ap.add_argument(
        "--pair", nargs=2, action="append", default=[], metavar=("NAME", "BASE"),
        help="measure NAME's added latency against BASE instead of the first target",
    )
    ap.add_argument("-n", type=int, default=3000, help="timed requests per target")
    ap.add_argument("--warmup", type=int, default=300, help="untimed requests per target first")
    ap.add_argument("--timeout", type=float, default=10.0)
    ap.add_argument("--deadline", type=float, default=300.0, help="give up after this many s")
    args = ap.parse_args()

    targets = [Target(*t) for t in args.target]
    for t in targets:
        t.connect(args.timeout)
    deadline = time.monotonic() + args.deadline
    k = len(targets)
    for i in range(args.warmup + args.n):
        if time.monotonic() > deadline:
            raise SystemExit(f"http_rtt: gave up after {args.deadline}s ({i} iterations)")
        for j in range(k):
            t = targets[(i + j) % k]
            dt = t.get()
            if i >= args.warmup:
                t.samples.append(dt / 1000.0)
    by_name = {t.name: t for t in targets}
    bases = dict(args.pair)
    for name, base in bases.items():
        if name not in by_name or base not in by_name:
            raise SystemExit(f"http_rtt: --pair {name} {base}: no such target")
    for t in targets:
        s = sorted(t.samples)
        base = by_name[bases.get(t.name, targets[0].name)].samples
        added = statistics.median(a - b for a, b in zip(t.samples, base))
        print(
            "RESULT target=%s n=%d p50_us=%.1f p90_us=%.1f p99_us=%.1f mean_us=%.1f added_p50_us=%.1f"
            % (t.name, len(s), pct(s, 50), pct(s, 90), pct(s, 99), sum(s) / len(s), added)
        )
    sys.stdout.flush()


if __name__ == "__main__":
    main()
