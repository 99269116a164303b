"""A workflow step: summarises the CSV files under its `table` input (row count, and the
mean, minimum and maximum of each numeric column), writes the summary as JSON to its
`summary` output, and reports the row count and each mean as metrics.

Parameters: `column` (optional: summarise only this column), `min_rows` (fail below it)."""

import csv
import io
import json

from componentize_py_types import Err
from wit_world import exports
from wit_world.imports import log, metrics, parameters, storage
from wit_world.imports.step_types import Input, OutputSlot, StepContext, StepResult
from wit_world.imports.types import Error, ErrorKind, Value_Integer, Value_Text


def fail(kind: ErrorKind, message: str) -> Err:
    return Err(Error(kind=kind, message=message))


def param(name: str):
    value = parameters.get(name)
    return None if value is None else value.value


class Step(exports.Step):
    def run(self, context: StepContext, inputs: list[Input], outputs: list[OutputSlot]) -> StepResult:
        table = next((i for i in inputs if i.name == "table"), None)
        summary = next((o for o in outputs if o.name == "summary"), None)
        if table is None or not table.path:
            raise fail(ErrorKind.INVALID_INPUT, "the step needs an input named table (a storage prefix of CSV files)")
        if summary is None:
            raise fail(ErrorKind.INVALID_INPUT, "the step needs an output named summary")
        only = param("column")
        min_rows = param("min_rows") or 0

        columns: dict[str, list[float]] = {}
        rows = 0
        try:
            objects = storage.list_objects(table.path)
        except Err as e:
            raise fail(ErrorKind.INVALID_INPUT, f"cannot list {table.path}: {e.value}")
        for obj in objects:
            if not obj.path.endswith(".csv"):
                continue
            text = storage.read(obj.path).decode("utf-8")
            for record in csv.DictReader(io.StringIO(text)):
                rows += 1
                for name, cell in record.items():
                    if only and name != only:
                        continue
                    try:
                        columns.setdefault(name, []).append(float(cell))
                    except (TypeError, ValueError):
                        pass
            log.log(log.Level.INFO, f"read {obj.path}")
        if rows < min_rows:
            raise fail(ErrorKind.FAILED, f"only {rows} rows under {table.path}; min_rows is {min_rows}")

        stats = {
            name: {"count": len(v), "mean": sum(v) / len(v), "min": min(v), "max": max(v)}
            for name, v in columns.items() if v
        }
        metrics.scalar("rows", float(rows), None)
        for name, s in stats.items():
            metrics.scalar(f"mean_{name}", s["mean"], None)
        path = summary.path.rstrip("/") + f"/summary-{context.execution_id}.json"
        storage.write(path, json.dumps({"rows": rows, "columns": stats}, indent=2).encode())
        return StepResult(
            outputs=[("rows", Value_Integer(rows)), ("summary", Value_Text(path))],
            variables=[("summary_path", path)],
        )
