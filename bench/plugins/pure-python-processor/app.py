"""The inference example as it is written without the host's `tensors` helpers: the same
work in pure Python (JSON parsing, f32 packing, softmax, top-k), kept for bench/plugins.sh."""

import array
import json
import math
import os

from componentize_py_types import Err
from wit_world import exports
from wit_world.imports import log, metrics
from wit_world.imports.inference_types import (
    Body_Json,
    ModelData_Json,
    ModelData_Tensors,
    ModelInfo,
    Prepared,
    Request,
    Response,
)
from wit_world.imports.types import Dtype, Error, ErrorKind, Tensor

LABELS: list[str] = []


def bad(message: str) -> Err:
    return Err(Error(kind=ErrorKind.INVALID_INPUT, message=message))


class Processor(exports.Processor):
    def init(self, info: ModelInfo) -> None:
        global LABELS
        path = os.path.join(info.model_path, "labels.txt")
        try:
            with open(path, encoding="utf-8") as f:
                LABELS = [line.strip() for line in f if line.strip()]
        except OSError as e:
            raise Err(Error(kind=ErrorKind.NOT_READY, message=f"cannot read {path}: {e}"))
        log.log(log.Level.INFO, f"loaded {len(LABELS)} labels")

    def preprocess(self, req: Request) -> Prepared:
        if not isinstance(req.body, Body_Json):
            raise Err(Error(kind=ErrorKind.UNSUPPORTED, message="send application/json"))
        try:
            doc = json.loads(req.body.value)
        except ValueError as e:
            raise bad(f"the body is not JSON: {e}")
        instances = doc.get("instances") if isinstance(doc, dict) else None
        if not isinstance(instances, list) or not instances:
            raise bad('expected {"instances": [[number, ...], ...]}')
        width = len(instances[0]) if isinstance(instances[0], list) else 0
        values = array.array("f")
        for i, row in enumerate(instances):
            if not isinstance(row, list) or len(row) != width or width == 0:
                raise bad(f"instance {i} is not a list of {width} numbers")
            try:
                values.extend(float(x) for x in row)
            except (TypeError, ValueError):
                raise bad(f"instance {i} holds something that is not a number")
        top_k = doc.get("top_k", 3)
        if not isinstance(top_k, int) or top_k < 1:
            raise bad("top_k must be a positive integer")
        metrics.scalar("instances", float(len(instances)), None)
        tensor = Tensor(
            name="inputs",
            dtype=Dtype.F32,
            shape=[len(instances), width],
            data=values.tobytes(),
        )
        return Prepared(input=ModelData_Tensors([tensor]), state=str(top_k).encode())

    def postprocess(self, state: bytes | None, output) -> Response:
        top_k = int(state.decode()) if state else 3
        if isinstance(output, ModelData_Json):
            raise bad("expected a logits tensor, got JSON")
        logits = next((t for t in output.value if t.name == "logits"), None)
        if logits is None or logits.dtype != Dtype.F32 or len(logits.shape) != 2:
            raise bad("expected an f32 tensor named logits of shape [n, classes]")
        rows, classes = logits.shape
        values = array.array("f")
        values.frombytes(logits.data)
        if len(values) != rows * classes:
            raise bad(f"logits hold {len(values)} values, not {rows}x{classes}")
        predictions = []
        for r in range(rows):
            row = values[r * classes:(r + 1) * classes]
            peak = max(row)
            exps = [math.exp(v - peak) for v in row]
            total = sum(exps)
            best = sorted(range(classes), key=lambda c: -row[c])[:top_k]
            predictions.append([
                {"label": LABELS[c] if c < len(LABELS) else str(c), "score": round(exps[c] / total, 6)}
                for c in best
            ])
        body = json.dumps({"predictions": predictions}).encode()
        return Response(status=200, content_type="application/json", headers=[], body=body)
