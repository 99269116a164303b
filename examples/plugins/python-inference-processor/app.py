"""An inference processor: JSON instances in, an f32 tensor to the model; the model's
logits out, the top-k labels (from the model directory's labels.txt) as JSON.

The heavy, generic parts (parsing the request's numbers into a tensor, softmax and top-k)
go through the host's `tensors` helpers, which run natively; this code only orchestrates."""

import json
import os

from componentize_py_types import Err
from wit_world import exports
from wit_world.imports import log, metrics, tensors
from wit_world.imports.inference_types import (
    Body_Json,
    ModelData_Json,
    ModelInfo,
    ModelData_Tensors,
    Prepared,
    Request,
    Response,
)
from wit_world.imports.types import Dtype, Error, ErrorKind

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
        body = req.body.value
        # Raises Err(invalid-input) naming the first wrong element ("/instances/1 has 2
        # elements where the first at this depth has 3").
        inputs = tensors.from_json("inputs", body, "/instances", Dtype.F32)
        if len(inputs.shape) != 2 or inputs.shape[0] == 0 or inputs.shape[1] == 0:
            raise bad('expected {"instances": [[number, ...], ...]}')
        top_k = tensors.json_get(body, "/top_k")
        top_k = 3 if top_k is None else json.loads(top_k)
        if not isinstance(top_k, int) or isinstance(top_k, bool) or top_k < 1:
            raise bad("top_k must be a positive integer")
        metrics.scalar("instances", float(inputs.shape[0]), None)
        return Prepared(input=ModelData_Tensors([inputs]), state=str(top_k).encode())

    def postprocess(self, state: bytes | None, output) -> Response:
        top_k = int(state.decode()) if state else 3
        if isinstance(output, ModelData_Json):
            raise bad("expected a logits tensor, got JSON")
        logits = next((t for t in output.value if t.name == "logits"), None)
        if logits is None or logits.dtype != Dtype.F32 or len(logits.shape) != 2:
            raise bad("expected an f32 tensor named logits of shape [n, classes]")
        # Per row: the top_k classes, largest first, scored by their softmax probability.
        best = tensors.top_k(logits, top_k, True)
        predictions = [
            [
                {
                    "label": LABELS[s.index] if s.index < len(LABELS) else str(s.index),
                    "score": round(s.score, 6),
                }
                for s in row
            ]
            for row in best
        ]
        body = json.dumps({"predictions": predictions}).encode()
        return Response(status=200, content_type="application/json", headers=[], body=body)
