"""The DAGs of the workflow benchmark and the arithmetic on their timings, shared by both
sides (bench.py for Atelier, prefect_dag.py for Prefect): standard library only.

Each DAG is a list of (step name, names of the steps it depends on), in an order where a
step comes after its dependencies. Every step is a no-op."""

CHAIN = 40
WIDTH = 20

DAGS = {
    # 40 steps, each after the previous one.
    "chain40": [(f"s{i}", [f"s{i - 1}"] if i else []) for i in range(CHAIN)],
    # One source, 20 steps after it (in parallel), one sink after all of them.
    "fan20": [("src", [])]
    + [(f"m{i}", ["src"]) for i in range(WIDTH)]
    + [("sink", [f"m{i}" for i in range(WIDTH)])],
}


def handoffs(dag, times):
    """The hand-off of each step that has dependencies, in seconds: its start minus the end
    of the last of its dependencies. `times` maps a step's name to (start, end) in seconds
    (any one clock). A chain of 40 gives 39 hand-offs, the fan-out 21 (20 after the source,
    1 for the sink)."""
    out = []
    for name, deps in dag:
        if deps:
            out.append(times[name][0] - max(times[d][1] for d in deps))
    return out


def pct(xs, q):
    """The q-quantile (0..1) of xs, nearest rank: p99 of fewer than 100 samples is the max."""
    s = sorted(xs)
    if not s:
        return float("nan")
    rank = max(1, -(-len(s) * q // 1))  # ceil(n·q), at least 1
    return s[int(rank) - 1]
