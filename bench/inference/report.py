#!/usr/bin/env python3
"""Turns bench/inference.sh's raw measurements into its markdown report (stdout).

    report.py RAW.tsv META.md

RAW.tsv lines: target<TAB>clients<TAB>round<TAB>RESULT k=v k=v … (wrk-report.lua's line plus
other_pct; floor.py's; http_rtt.py's for target `rtt`). Per-cell figures are medians over the
rounds; the comparisons are paired (computed within each round, then the median over rounds,
with the range), as in bench/report.py."""

import statistics
import sys
from collections import defaultdict

GOAL_RPS_RATIO = 3.0  # Atelier's requests/s ÷ the KServe pattern's, 16 clients
GOAL_P99_RATIO = 3.0  # the KServe pattern's p99 ÷ Atelier's, 1 client
GOAL_ADDED_US = 150.0  # Atelier's p50 (1 client) − the floor's p50
GOAL_ENGINE_ADDED_US = 300.0  # the container-engine path's added p50

NAMES = [
    ("atelier", "Atelier: Python Wasm processor + built-in ONNX engine, one gateway process"),
    ("atelier-c", "Atelier: C Wasm processor + built-in ONNX engine, one gateway process"),
    ("kserve", "KServe pattern: FastAPI transformer → FastAPI + onnxruntime model server (V2)"),
    ("engine-gw", "container-engine path: fixed-answer stdlib server as a process engine, via the gateway"),
    ("engine-direct", "the same server on a loopback port, called directly"),
]


def parse(path):
    cells = defaultdict(dict)  # (target, clients) -> round -> fields
    for line in open(path, encoding="utf-8"):
        target, clients, rnd, rest = line.rstrip("\n").split("\t", 3)
        fields = dict(kv.split("=", 1) for kv in rest.split()[1:])
        if target == "rtt":
            target = "rtt-" + fields["target"]
        cells[(target, int(clients))][int(rnd)] = {
            k: float(v) for k, v in fields.items() if k != "target"
        }
    return cells


def med(values):
    return statistics.median(values) if values else float("nan")


def spread(values, fmt):
    if not values:
        return "n/a"
    return f"{fmt(med(values))} ({fmt(min(values))}–{fmt(max(values))})"


def main():
    cells = parse(sys.argv[1])
    print(open(sys.argv[2], encoding="utf-8").read())

    def get(target, clients, key):
        return {r: f[key] for r, f in cells.get((target, clients), {}).items() if key in f}

    print("| Path | Clients | requests/s | p50 (µs) | p99 (µs) | non-2xx | other work (% CPU) |")
    print("|---|--:|--:|--:|--:|--:|--:|")
    for target, label in NAMES:
        for clients in (1, 16):
            if (target, clients) not in cells:
                continue
            f = lambda k: med(list(get(target, clients, k).values()))
            print(
                f"| {label} | {clients} | {f('rps'):,.0f} | {f('p50_us'):,.0f} | "
                f"{f('p99_us'):,.0f} | {f('status_err'):.0f} | {f('other_pct'):.0f} |"
            )
    fl = get("floor", 1, "p50_us")
    print(
        f"| floor: the model alone, onnxruntime `session.run` from Python | 1 | — | "
        f"{med(list(fl.values())):,.1f} | {med(list(get('floor', 1, 'p99_us').values())):,.1f} | — | — |"
    )
    print()

    def paired(a, b, op):
        return [op(a[r], b[r]) for r in sorted(a) if r in b]

    rps_ratio = paired(get("atelier", 16, "rps"), get("kserve", 16, "rps"), lambda x, y: x / y)
    p99_ratio = paired(get("kserve", 1, "p99_us"), get("atelier", 1, "p99_us"), lambda x, y: x / y)
    p50_ratio = paired(get("kserve", 1, "p50_us"), get("atelier", 1, "p50_us"), lambda x, y: x / y)
    added = paired(get("atelier", 1, "p50_us"), fl, lambda x, y: x - y)
    rps_ratio_c = paired(get("atelier-c", 16, "rps"), get("kserve", 16, "rps"), lambda x, y: x / y)
    p99_ratio_c = paired(get("kserve", 1, "p99_us"), get("atelier-c", 1, "p99_us"),
                         lambda x, y: x / y)
    added_c = paired(get("atelier-c", 1, "p50_us"), fl, lambda x, y: x - y)
    engine_wrk = paired(get("engine-gw", 1, "p50_us"), get("engine-direct", 1, "p50_us"),
                        lambda x, y: x - y)
    engine_rtt = list(get("rtt-engine-gw", 1, "added_p50_us").values())
    times = lambda v: f"{v:.2f}×"
    us = lambda v: f"{v:,.0f} µs"

    def goal(values, ok):
        return "n/a" if not values else ("met" if ok(med(values)) else "**not met**")

    print("| Comparison (paired within each round; median, range) | Value | Goal | |")
    print("|---|--:|--:|---|")
    print(f"| Atelier ÷ KServe pattern, requests/s at 16 clients | {spread(rps_ratio, times)} | "
          f"≥ {GOAL_RPS_RATIO:.0f}× | {goal(rps_ratio, lambda v: v >= GOAL_RPS_RATIO)} |")
    print(f"| KServe pattern ÷ Atelier, p99 at 1 client | {spread(p99_ratio, times)} | "
          f"≥ {GOAL_P99_RATIO:.0f}× | {goal(p99_ratio, lambda v: v >= GOAL_P99_RATIO)} |")
    print(f"| KServe pattern ÷ Atelier, p50 at 1 client | {spread(p50_ratio, times)} | — | |")
    print(f"| Atelier's p50 at 1 client − the floor's p50 (the gateway's added cost over the bare "
          f"model, HTTP included) | {spread(added, us)} | ≤ {GOAL_ADDED_US:.0f} µs | "
          f"{goal(added, lambda v: v <= GOAL_ADDED_US)} |")
    if added_c:
        print(f"| Atelier with the C processor ÷ KServe pattern, requests/s at 16 clients | "
              f"{spread(rps_ratio_c, times)} | ≥ {GOAL_RPS_RATIO:.0f}× | "
              f"{goal(rps_ratio_c, lambda v: v >= GOAL_RPS_RATIO)} |")
        print(f"| KServe pattern ÷ Atelier with the C processor, p99 at 1 client | "
              f"{spread(p99_ratio_c, times)} | ≥ {GOAL_P99_RATIO:.0f}× | "
              f"{goal(p99_ratio_c, lambda v: v >= GOAL_P99_RATIO)} |")
        print(f"| Atelier with the C processor: p50 at 1 client − the floor's p50 | "
              f"{spread(added_c, us)} | ≤ {GOAL_ADDED_US:.0f} µs | "
              f"{goal(added_c, lambda v: v <= GOAL_ADDED_US)} |")
    print(f"| container-engine path − direct, p50 at 1 client (wrk) | {spread(engine_wrk, us)} | "
          f"≤ {GOAL_ENGINE_ADDED_US:.0f} µs | {goal(engine_wrk, lambda v: v <= GOAL_ENGINE_ADDED_US)} |")
    print(f"| container-engine path − direct, p50 of per-request differences (interleaved "
          f"one-connection GETs, http_rtt.py) | {spread(engine_rtt, us)} | ≤ {GOAL_ENGINE_ADDED_US:.0f} µs | "
          f"{goal(engine_rtt, lambda v: v <= GOAL_ENGINE_ADDED_US)} |")
    for name in ("engine-direct", "engine-gw"):
        p = get("rtt-" + name, 1, "p50_us")
        q = get("rtt-" + name, 1, "p99_us")
        if p:
            print(f"| interleaved GETs, {name}: p50 / p99 | {med(list(p.values())):,.0f} / "
                  f"{med(list(q.values())):,.0f} µs | | |")


if __name__ == "__main__":
    main()
