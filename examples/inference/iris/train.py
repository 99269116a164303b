"""Trains a small iris classifier with scikit-learn and writes it as an Atelier model
package (the folder holding model/) with its ONNX form, labels and config.json.

    python train.py OUT_DIR

OUT_DIR/model/iris.onnx    LogisticRegression, exported with skl2onnx (zipmap off):
                           input `inputs` float [N, 4] -> `label` int64 [N] and
                           `probabilities` float [N, 3]
OUT_DIR/model/labels.txt   the class names, one a line, in class order
OUT_DIR/model/config.json  model_type ONNX, one JSON API at /

Add the processor (processor/, built with `atelier plugin build`) as
model/customize_service.wasm with its plugin.json to answer with labels instead of tensors.
In a notebook, run it where the model should land (`python train.py out/iris`), then
`atelier model create iris --notebook <id> --path out/iris`. Seeded: the same versions
write the same model.
"""

import json
import os
import sys

import numpy as np
from skl2onnx import to_onnx
from skl2onnx.common.data_types import FloatTensorType
from sklearn.datasets import load_iris
from sklearn.linear_model import LogisticRegression


def main(out: str) -> None:
    iris = load_iris()
    x = iris.data.astype(np.float32)
    clf = LogisticRegression(max_iter=500, random_state=0).fit(x, iris.target)
    model_dir = os.path.join(out, "model")
    os.makedirs(model_dir, exist_ok=True)
    onnx_model = to_onnx(
        clf,
        initial_types=[("inputs", FloatTensorType([None, 4]))],
        options={"zipmap": False},
        target_opset={"": 17, "ai.onnx.ml": 3},
    )
    with open(os.path.join(model_dir, "iris.onnx"), "wb") as f:
        f.write(onnx_model.SerializeToString())
    with open(os.path.join(model_dir, "labels.txt"), "w", encoding="utf-8") as f:
        f.write("\n".join(iris.target_names) + "\n")
    accuracy = float(clf.score(x, iris.target))
    config = {
        "model_algorithm": "iris_classification",
        "model_type": "ONNX",
        "metrics": {"accuracy": accuracy},
        "apis": [
            {
                "url": "/",
                "method": "post",
                "request": {
                    "Content-type": "application/json",
                    "data": {
                        "type": "object",
                        "properties": {
                            "instances": {
                                "type": "array",
                                "items": {"type": "array", "items": {"type": "number"}},
                            },
                            "top_k": {"type": "integer"},
                        },
                    },
                },
                "response": {
                    "Content-type": "application/json",
                    "data": {"type": "object", "properties": {"predictions": {"type": "array"}}},
                },
            }
        ],
    }
    with open(os.path.join(model_dir, "config.json"), "w", encoding="utf-8") as f:
        json.dump(config, f, indent=2)
    print(f"wrote {model_dir} (training accuracy {accuracy:.3f})")


if __name__ == "__main__":
    if len(sys.argv) != 2:
        sys.exit("usage: python train.py OUT_DIR")
    main(sys.argv[1])
