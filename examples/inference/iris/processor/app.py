"""The iris model's processor (the seed's customize_service.py, as a Wasm component):
`{"instances": [[sepal length, sepal width, petal length, petal width], ...], "top_k": 2}`
in, an f32 tensor `inputs` to the model; its `probabilities` out, the top-k labels (from
the model's labels.txt) as `{"predictions": [[{"label", "score"}, ...], ...]}`.

Parsing the numbers and ranking go through the host's native `tensors` helpers; this code
only orchestrates."""

import json
import os

from componentize_py_types import Err
from wit_world import exports
from wit_world.imports import tensors
from wit_world.imports.inference_types import (
    Body_Json,
    ModelData_Json,
    ModelData_Tensors,
    ModelInfo,
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

    def preprocess(self, req: Request) -> Prepared:
        if not isinstance(req.body, Body_Json):
            raise Err(Error(kind=ErrorKind.UNSUPPORTED, message="send application/json"))
        body = req.body.value
        # Raises Err(invalid-input) naming the first wrong element.
        inputs = tensors.from_json("inputs", body, "/instances", Dtype.F32)
        if len(inputs.shape) != 2 or inputs.shape[1] != 4:
            raise bad('expected {"instances": [[4 numbers], ...]}')
        top_k = tensors.json_get(body, "/top_k")
        top_k = 1 if top_k is None else json.loads(top_k)
        if not isinstance(top_k, int) or isinstance(top_k, bool) or not 1 <= top_k <= 3:
            raise bad("top_k must be 1, 2 or 3")
        return Prepared(input=ModelData_Tensors([inputs]), state=str(top_k).encode())

    def postprocess(self, state: bytes | None, output) -> Response:
        top_k = int(state.decode()) if state else 1
        if isinstance(output, ModelData_Json):
            raise bad("expected tensors from the model, got JSON")
        probs = next((t for t in output.value if t.name == "probabilities"), None)
        if probs is None:
            raise Err(Error(kind=ErrorKind.FAILED, message="the model gave no probabilities"))
        best = tensors.top_k(probs, top_k, False)
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
