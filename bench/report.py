#!/usr/bin/env python3
"""Turns bench/proxy.sh's raw measurements into the markdown report (stdout).

    report.py RAW.tsv META.md

RAW.tsv lines: section<TAB>target<TAB>connections<TAB>round<TAB>RESULT k=v k=v …
(wrk-report.lua and ws_rtt.py write the `RESULT` part; proxy.sh appends CPU readings).

Per-path figures are medians over the rounds. Comparisons (ratios, added latency) are
paired: computed within each round, where the paths ran back to back, and then the median
over rounds is shown with the range — on a shared VM the machine's speed drifts between
rounds by more than the differences being measured.
"""

import statistics
import sys
from collections import defaultdict

CAPACITY = [
    ("nginx", "nginx direct (origin; baseline)"),
    ("atelier", "Atelier gateway"),
    ("chp", "configurable-http-proxy"),
    ("nginx-proxy", "nginx reverse proxy"),
]
E2E = [
    ("direct", "JupyterLab direct"),
    ("atelier", "via Atelier"),
    ("chp", "via configurable-http-proxy"),
    ("nginx-proxy", "via nginx reverse proxy (control)"),
    ("sandboxed-direct", "sandboxed notebook's JupyterLab direct (its unix socket)"),
    ("sandboxed", "sandboxed notebook via Atelier"),
]
# The baseline a path's added latency is measured against (default: "direct"). A sandboxed
# process notebook's JupyterLab is a process of its own, reached on its unix socket.
BASE = {"sandboxed": "sandboxed-direct"}

# Goals from the benchmark's brief.
GOAL_VS_CHP = 5.0
GOAL_VS_NGINX_PROXY = 0.8
GOAL_ADDED_P50_MS = 0.3
# "No loss" at 64 connections: Atelier's req/s at least this share of direct.
GOAL_E2E_RPS_SHARE = 0.97

WS_TITLES = {
    "ws": "## 3. WebSocket round trip: `kernel_info_request` → `kernel_info_reply`, stock JupyterLab\n",
    "ws-nodelay": (
        "## 3b. The same round trip with TCP_NODELAY on Jupyter's kernel WebSockets\n\n"
        "(bench/jupyter-nodelay/: stock jupyter_server leaves Nagle's algorithm on, so the reply "
        "waits for the delayed ACK of the preceding `busy` message, ~40 ms, on every path.)\n"
    ),
}


def parse(path):
    data = defaultdict(list)  # (section, target, conns) -> [dict]
    for line in open(path, encoding="utf-8"):
        line = line.rstrip("\n")
        if not line:
            continue
        section, target, conns, rnd, rest = line.split("\t", 4)
        kv = {}
        for tok in rest.split():
            if "=" in tok:
                k, v = tok.split("=", 1)
                try:
                    kv[k] = float(v)
                except ValueError:
                    kv[k] = v
        kv["round"] = int(rnd)
        data[(section, target, int(conns))].append(kv)
    return data


def med(runs, key):
    vals = [r[key] for r in runs if isinstance(r.get(key), float)]
    return statistics.median(vals) if vals else None


def errors(runs):
    keys = ("connect_err", "read_err", "write_err", "status_err", "timeout_err")
    return int(sum(r.get(k, 0) for r in runs for k in keys))


def cpu_per_req(runs, key):
    """Median over rounds of CPU µs per request for one process group."""
    vals = [
        r[key] * 1e6 / r["requests"]
        for r in runs
        if isinstance(r.get(key), float) and r.get("requests")
    ]
    return statistics.median(vals) if vals else None


class Paired:
    """A per-round comparison: median and range over the rounds both paths ran."""

    def __init__(self, vals):
        self.vals = sorted(vals)

    def __bool__(self):
        return bool(self.vals)

    @property
    def med(self):
        return statistics.median(self.vals) if self.vals else None

    def show(self, fmt):
        if not self.vals:
            return "–"
        if len(self.vals) == 1:
            return fmt.format(self.vals[0])
        return f"{fmt.format(self.med)} ({fmt.format(self.vals[0])} … {fmt.format(self.vals[-1])})"


def paired(a_runs, b_runs, key, op):
    by_round = {r["round"]: r for r in b_runs if isinstance(r.get(key), float)}
    vals = []
    for r in a_runs:
        b = by_round.get(r["round"])
        if b is not None and isinstance(r.get(key), float):
            try:
                vals.append(op(r[key], b[key]))
            except ZeroDivisionError:
                pass
    return Paired(vals)


def ratio(a, b):
    return a / b


def diff(a, b):
    return a - b


def f(v, fmt="{:,.0f}", none="–"):
    return none if v is None else fmt.format(v)


def ms(us):
    return None if us is None else us / 1000


def verdict(ok, paired=None, goal=None):
    """By the median; says so when the per-round range straddles the goal (noise)."""
    v = "**met**" if ok else "**missed**"
    if paired and goal is not None and paired.vals[0] < goal <= paired.vals[-1]:
        v += " (by the median; the rounds straddle the goal)"
    return v


def capacity(data, hi, out):
    sec = "capacity"
    if not any(k[0] == sec for k in data):
        return
    out.append("## 1. Proxy capacity: ~100-byte static file, nginx origin\n")
    out.append(
        f"| Path | req/s @1 | p50 @1 (µs) | p99 @1 (µs) | req/s @{hi} | p50 @{hi} (µs) "
        f"| p99 @{hi} (µs) | proxy CPU µs/req @{hi} | origin CPU µs/req @{hi} | errors |"
    )
    out.append("|---|--:|--:|--:|--:|--:|--:|--:|--:|--:|")
    for key, label in CAPACITY:
        lo_runs = data.get((sec, key, 1), [])
        hi_runs = data.get((sec, key, hi), [])
        if not lo_runs and not hi_runs:
            continue
        out.append(
            f"| {label} | {f(med(lo_runs, 'rps'))} | {f(med(lo_runs, 'p50_us'))} "
            f"| {f(med(lo_runs, 'p99_us'))} | {f(med(hi_runs, 'rps'))} "
            f"| {f(med(hi_runs, 'p50_us'))} | {f(med(hi_runs, 'p99_us'))} "
            f"| {f(None if key == 'nginx' else cpu_per_req(hi_runs, 'proxy_cpu_s'), '{:.1f}')} "
            f"| {f(cpu_per_req(hi_runs, 'origin_cpu_s'), '{:.1f}')} "
            f"| {errors(lo_runs) + errors(hi_runs)} |"
        )
    out.append("")
    if not data.get((sec, "atelier", hi)):
        return
    out.append(
        f"| Ratio of req/s (paired per round: median (min … max)) | @1 | @{hi} | Goal | Verdict |"
    )
    out.append("|---|--:|--:|---|---|")
    for key, name, goal in (
        ("chp", "Atelier / configurable-http-proxy", GOAL_VS_CHP),
        ("nginx-proxy", "Atelier / nginx reverse proxy", GOAL_VS_NGINX_PROXY),
        ("nginx", "Atelier / nginx direct", None),
    ):
        r1 = paired(data.get((sec, "atelier", 1), []), data.get((sec, key, 1), []), "rps", ratio)
        rh = paired(data.get((sec, "atelier", hi), []), data.get((sec, key, hi), []), "rps", ratio)
        if not r1 and not rh:
            continue
        if goal is None:
            v, g = "(context)", "–"
        else:
            g = f"≥ {goal:g}×"
            ok1 = r1.med is not None and r1.med >= goal
            okh = rh.med is not None and rh.med >= goal
            if ok1 and okh:
                v = "**met**"
            elif ok1 or okh:
                v = f"**met @{1 if ok1 else hi}, missed @{hi if ok1 else 1}**"
            else:
                v = "**missed**"
            straddle = [
                lbl for lbl, p in ((1, r1), (hi, rh)) if p and p.vals[0] < goal <= p.vals[-1]
            ]
            if straddle:
                v += " (rounds straddle the goal @" + ", @".join(map(str, straddle)) + ")"
        out.append(f"| {name} | {r1.show('{:.2f}×')} | {rh.show('{:.2f}×')} | {g} | {v} |")
    out.append("")


def interleaved(data, out):
    """Section 2b; returns {path: Paired added p50 in µs}."""
    sec = "jupyter-interleaved"
    if not any(k[0] == sec for k in data):
        return {}
    out.append(
        "### 2b. One connection, requests interleaved path by path (`bench/http_rtt.py`)\n\n"
        "Each iteration sends one request on every path in turn, so slow drift of the machine "
        "cancels out of the difference.\n"
    )
    out.append(
        "| Path | requests per round | p50 (ms) | p90 (ms) | p99 (ms) "
        "| added p50 (ms), per round: median (min … max) |"
    )
    out.append("|---|--:|--:|--:|--:|--:|")
    added = {}
    for key, label in E2E:
        runs = data.get((sec, key, 1), [])
        if not runs:
            continue
        a = Paired([r["added_p50_us"] for r in runs if isinstance(r.get("added_p50_us"), float)])
        if key not in ("direct", "sandboxed-direct"):
            added[key] = a
        out.append(
            f"| {label} | {f(med(runs, 'n'))} | {f(ms(med(runs, 'p50_us')), '{:.3f}')} "
            f"| {f(ms(med(runs, 'p90_us')), '{:.3f}')} | {f(ms(med(runs, 'p99_us')), '{:.3f}')} "
            f"| {'–' if key in ('direct', 'sandboxed-direct') else Paired([v / 1000 for v in a.vals]).show('{:+.3f}')} |"
        )
    out.append("")
    if "sandboxed" in added:
        out.append(
            "The sandboxed notebook's added latency is measured against its own JupyterLab "
            "on its unix socket (the same process Atelier proxies to).\n"
        )
    return added


def e2e(data, hi, out):
    sec = "jupyter"
    if not any(k[0] == sec for k in data):
        return
    out.append("## 2. End to end: `GET /nb/{id}/api/status` on a real JupyterLab\n")
    out.append(
        f"| Path | p50 @1 (ms) | p99 @1 (ms) | added p50 @1 (ms), paired | req/s @{hi} "
        f"| req/s @{hi} vs direct, paired | p50 @{hi} (ms) | p99 @{hi} (ms) "
        f"| proxy CPU µs/req @{hi} | errors |"
    )
    out.append("|---|--:|--:|--:|--:|--:|--:|--:|--:|--:|")
    d1 = data.get((sec, "direct", 1), [])
    dh = data.get((sec, "direct", hi), [])
    got = {}
    for key, label in E2E:
        lo_runs = data.get((sec, key, 1), [])
        hi_runs = data.get((sec, key, hi), [])
        if not lo_runs and not hi_runs:
            continue
        if key == "direct":
            added, share = Paired([]), Paired([])
        else:
            added = paired(lo_runs, d1, "p50_us", diff)
            share = paired(hi_runs, dh, "rps", ratio)
        got[key] = (added, share)
        out.append(
            f"| {label} | {f(ms(med(lo_runs, 'p50_us')), '{:.3f}')} "
            f"| {f(ms(med(lo_runs, 'p99_us')), '{:.2f}')} "
            f"| {Paired([v / 1000 for v in added.vals]).show('{:+.3f}')} "
            f"| {f(med(hi_runs, 'rps'))} | {share.show('{:.2f}×')} "
            f"| {f(ms(med(hi_runs, 'p50_us')), '{:.1f}')} "
            f"| {f(ms(med(hi_runs, 'p99_us')), '{:.1f}')} "
            f"| {f(None if key == 'direct' else cpu_per_req(hi_runs, 'proxy_cpu_s'), '{:.1f}')} "
            f"| {errors(lo_runs) + errors(hi_runs)} |"
        )
    out.append("")
    inter = interleaved(data, out)
    if "atelier" not in got:
        return
    added, share = got["atelier"]
    out.append("| Goal | Measured (per round: median (min … max)) | Verdict |")
    out.append("|---|--:|---|")

    def added_row(goal, paired_us):
        """A goal row: the p50 Atelier adds (paired values in µs) against the goal in ms."""
        ms_ = Paired([v / 1000 for v in paired_us.vals])
        ok = paired_us.med / 1000 <= GOAL_ADDED_P50_MS
        out.append(
            f"| {goal} "
            f"| {ms_.show('{:+.3f}')} ms "
            f"| {verdict(ok, Paired([-v for v in ms_.vals]), -GOAL_ADDED_P50_MS)} |"
        )

    if inter.get("atelier"):
        added_row(f"Atelier adds ≤ {GOAL_ADDED_P50_MS} ms to p50 @1 (interleaved client)", inter["atelier"])
    if added:
        added_row(f"Atelier adds ≤ {GOAL_ADDED_P50_MS} ms to p50 @1 (wrk, paired rounds)", added)
    if share:
        out.append(
            f"| No loss of req/s @{hi} (≥ {GOAL_E2E_RPS_SHARE:.2f}× direct) | {share.show('{:.2f}×')} "
            f"| {verdict(share.med >= GOAL_E2E_RPS_SHARE, share, GOAL_E2E_RPS_SHARE)} |"
        )
    if inter.get("sandboxed"):
        added_row(
            f"Sandboxed notebook (unix socket): Atelier adds ≤ {GOAL_ADDED_P50_MS} ms to p50 @1 "
            "(interleaved client)",
            inter["sandboxed"],
        )
    for key, name in (("chp", "CHP"), ("nginx-proxy", "nginx reverse proxy")):
        if key not in got:
            continue
        a, s = got[key]
        if inter.get(key):
            out.append(
                f"| (context) {name} adds to p50 @1 (interleaved client) "
                f"| {Paired([v / 1000 for v in inter[key].vals]).show('{:+.3f}')} ms | – |"
            )
        if a:
            out.append(
                f"| (context) {name} adds to p50 @1 "
                f"| {Paired([v / 1000 for v in a.vals]).show('{:+.3f}')} ms | – |"
            )
        if s:
            out.append(f"| (context) {name} req/s @{hi} vs direct | {s.show('{:.2f}×')} | – |")
    out.append("")


def ws(data, sec, out):
    if not any(k[0] == sec for k in data):
        return
    out.append(WS_TITLES[sec])
    out.append(
        "| Path | round trips per round | p50 (µs) | p90 (µs) | p99 (µs) "
        "| added p50 (µs), paired | added p99 (µs), paired |"
    )
    out.append("|---|--:|--:|--:|--:|--:|--:|")
    for key, label in E2E:
        runs = data.get((sec, key, 1), [])
        if not runs:
            continue
        if key in ("direct", "sandboxed-direct"):
            a50 = a99 = "–"
        else:
            base = data.get((sec, BASE.get(key, "direct"), 1), [])
            a50 = paired(runs, base, "p50_us", diff).show("{:+,.0f}")
            a99 = paired(runs, base, "p99_us", diff).show("{:+,.0f}")
        out.append(
            f"| {label} | {f(med(runs, 'n'))} | {f(med(runs, 'p50_us'))} "
            f"| {f(med(runs, 'p90_us'))} | {f(med(runs, 'p99_us'))} | {a50} | {a99} |"
        )
    out.append("")


def noise(data, out):
    other = [r["other_cpu_pct"] for runs in data.values() for r in runs if "other_cpu_pct" in r]
    if not other:
        return
    worst = max(other)
    out.append(
        "Other work on the machine during the measured runs (process CPU time outside the "
        f"benchmark's processes, as a share of all CPUs): median {statistics.median(other):.1f} %, "
        f"max {worst:.1f} %."
        + (
            " Runs above 10 % are marked ⚠ in the appendix; their numbers are less reliable."
            if worst > 10
            else ""
        )
        + "\n"
    )


def appendix(data, out):
    out.append("<details><summary>Every round (raw)</summary>\n")
    out.append(
        "| Section | Path | Conns | Round | req/s | p50 (µs) | p99 (µs) | errors "
        "| proxy CPU s | origin CPU s | client CPU s | other load % |"
    )
    out.append("|---|---|--:|--:|--:|--:|--:|--:|--:|--:|--:|--:|")
    for (sec, target, conns), runs in sorted(data.items()):
        for r in sorted(runs, key=lambda r: r["round"]):
            o = r.get("other_cpu_pct")
            flag = " ⚠" if isinstance(o, float) and o > 10 else ""
            out.append(
                f"| {sec} | {target} | {conns} | {r['round']} | {f(r.get('rps'))} "
                f"| {f(r.get('p50_us'))} | {f(r.get('p99_us'))} | {errors([r])} "
                f"| {f(r.get('proxy_cpu_s'), '{:.2f}')} | {f(r.get('origin_cpu_s'), '{:.2f}')} "
                f"| {f(r.get('client_cpu_s'), '{:.2f}')} | {f(o, '{:.1f}')}{flag} |"
            )
    out.append("\n</details>\n")


def main():
    raw, meta = sys.argv[1], sys.argv[2]
    data = parse(raw)
    his = sorted({c for (_, _, c) in data if c != 1})
    hi = his[-1] if his else 64
    out = [open(meta, encoding="utf-8").read().rstrip("\n"), ""]
    noise(data, out)
    capacity(data, hi, out)
    e2e(data, hi, out)
    ws(data, "ws", out)
    ws(data, "ws-nodelay", out)
    appendix(data, out)
    sys.stdout.write("\n".join(out))


if __name__ == "__main__":
    main()
