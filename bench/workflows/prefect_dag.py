"""The Prefect side of the workflow benchmark: the DAGs of dags.py as Prefect 3 flows of
no-op tasks, run against a Prefect server (PREFECT_API_URL: bench.py starts
`prefect server start` on 127.0.0.1 with a fresh PREFECT_HOME, SQLite). Run with the venv
of bench/workflows-requirements.txt:

    PREFECT_API_URL=http://127.0.0.1:PORT/api python prefect_dag.py REPEAT OUT.json

Each DAG runs once as a warm-up, then REPEAT times. A flow submits its tasks to the thread
pool task runner (20 workers, so the 20-wide fan-out is not capped by the default pool) in
dependency order, each `wait_for` its dependencies: the DAG as Prefect writes one. Tasks keep
Prefect's defaults otherwise (cache policy, result persistence, logs sent to the API); each
gets its step name as its argument and run name, so no two share a cache key.

Per run it records, in seconds:
  e2e        the flow run's `created` → `end_time` as the server records them (as Atelier's
             run created_at → ended_at);
  e2e_call   calling the flow → its return, in this process (what the user waits);
  handoff    per edge, the dependent task run's `start_time` − its dependency's `end_time`
             (the last dependency's for the sink), as Prefect records the task states;
  handoff_body  the same from time.perf_counter() in the task bodies: Prefect's bookkeeping
             after one body and before the next included.
OUT.json: {dag: {measure: [values…]}}; the hand-offs of all runs of a DAG together."""

import json
import sys
import time

from prefect import flow, task
from prefect.client.orchestration import get_client
from prefect.client.schemas.filters import FlowRunFilter, FlowRunFilterId
from prefect.task_runners import ThreadPoolTaskRunner

from dags import DAGS, handoffs

BODY = {}  # step name -> (start, end) from perf_counter, of the current run


@task(task_run_name="{name}")
def noop(name):
    t0 = time.perf_counter()
    BODY[name] = (t0, time.perf_counter())


def make_flow(dag_name):
    dag = DAGS[dag_name]

    @flow(name=dag_name, task_runner=ThreadPoolTaskRunner(max_workers=20), log_prints=False)
    def run_dag():
        futures = {}
        for name, deps in dag:
            futures[name] = noop.submit(name, wait_for=[futures[d] for d in deps])
        for f in futures.values():
            f.wait()

    return run_dag


def recorded(client, flow_run_id, n_steps):
    """The flow run and its task runs once the server has recorded every task run's end
    (task states reach it as events, a moment after the flow returns); at most 60 s."""
    deadline = time.monotonic() + 60
    while True:
        fr = client.read_flow_run(flow_run_id)
        trs = client.read_task_runs(
            flow_run_filter=FlowRunFilter(id=FlowRunFilterId(any_=[flow_run_id])))
        if (fr.end_time is not None and len(trs) == n_steps
                and all(t.start_time and t.end_time for t in trs)):
            return fr, trs
        if time.monotonic() > deadline:
            raise SystemExit(f"flow run {flow_run_id}: the server recorded {len(trs)} task "
                             f"runs of {n_steps} with their ends after 60 s")
        time.sleep(0.2)


def main():
    repeat, out_path = int(sys.argv[1]), sys.argv[2]
    results = {}
    with get_client(sync_client=True) as client:
        for dag_name, dag in DAGS.items():
            f = make_flow(dag_name)
            r = {"e2e": [], "e2e_call": [], "start_end": [], "handoff": [], "handoff_body": []}
            for i in range(repeat + 1):
                BODY.clear()
                t0 = time.perf_counter()
                state = f(return_state=True)
                wall = time.perf_counter() - t0
                if not state.is_completed():
                    raise SystemExit(f"{dag_name}: the flow ended {state.type}: {state.message}")
                fr, trs = recorded(client, state.state_details.flow_run_id, len(dag))
                if i == 0:
                    print(f"prefect {dag_name}: warm-up {wall * 1000:.0f} ms", file=sys.stderr)
                    continue
                times = {t.name: (t.start_time.timestamp(), t.end_time.timestamp()) for t in trs}
                missing = [n for n, _ in dag if n not in times]
                if missing:
                    raise SystemExit(f"{dag_name}: no task run named {missing[:3]}")
                r["e2e"].append(fr.end_time.timestamp() - fr.created.timestamp())
                r["e2e_call"].append(wall)
                r["start_end"].append(fr.end_time.timestamp() - fr.start_time.timestamp())
                r["handoff"] += handoffs(dag, times)
                r["handoff_body"] += handoffs(dag, BODY)
                print(f"prefect {dag_name}: run {i} {wall * 1000:.0f} ms", file=sys.stderr)
            results[dag_name] = r
    with open(out_path, "w") as out:
        json.dump(results, out)


if __name__ == "__main__":
    main()
