"""A training algorithm: fits y = w*x + b to the CSV rows (x,y) under its `data_url` input
by gradient descent, reports the loss per epoch, checkpoints the weights to its `train_url`
output every epoch, resumes from the newest checkpoint, and stops when asked to."""

import csv
import io
import json

from componentize_py_types import Err
from wit_world import exports
from wit_world.imports import checkpoints, control, log, metrics, parameters, storage
from wit_world.imports.training_types import (
    AlgorithmSpec,
    Hyperparameter,
    HyperparameterKind,
    TrainContext,
    TrainSummary,
)
from wit_world.imports.types import Error, ErrorKind, Value_Float, Value_Integer


class Algorithm(exports.Algorithm):
    def describe(self) -> AlgorithmSpec:
        return AlgorithmSpec(
            name="linear-regression",
            version="0.1.0",
            description="y = w*x + b by gradient descent",
            hyperparameters=[
                Hyperparameter(name="learning_rate", kind=HyperparameterKind.FLOAT,
                               default_value=Value_Float(0.05), range=(1e-6, 1.0), choices=[],
                               required=False, description="step size"),
                Hyperparameter(name="epochs", kind=HyperparameterKind.INTEGER,
                               default_value=Value_Integer(50), range=(1, 100000), choices=[],
                               required=False, description="passes over the data"),
            ],
            inputs=["data_url"],
            outputs=["train_url"],
            metrics=["loss"],
        )

    def train(self, context: TrainContext) -> TrainSummary:
        lr = parameters.get("learning_rate").value
        epochs = parameters.get("epochs").value
        data = next((c for c in context.inputs if c.name == "data_url"), None)
        if data is None:
            raise Err(Error(kind=ErrorKind.INVALID_INPUT, message="no data_url input"))
        points = []
        for obj in storage.list_objects(data.path):
            for row in csv.reader(io.StringIO(storage.read(obj.path).decode())):
                try:
                    points.append((float(row[0]), float(row[1])))
                except (ValueError, IndexError):
                    continue
        if not points:
            raise Err(Error(kind=ErrorKind.INVALID_INPUT, message=f"no x,y rows under {data.path}"))

        w, b, start = 0.0, 0.0, 0
        if context.resume_from is not None:
            state = json.loads(checkpoints.load(context.resume_from.step))
            w, b, start = state["w"], state["b"], context.resume_from.step
            log.log(log.Level.INFO, f"resuming from epoch {start}")
        loss = 0.0
        for epoch in range(start + 1, epochs + 1):
            if control.should_stop():
                raise Err(Error(kind=ErrorKind.CANCELLED, message=f"stopped at epoch {epoch}"))
            gw = gb = loss = 0.0
            for x, y in points:
                err = w * x + b - y
                gw += 2 * err * x / len(points)
                gb += 2 * err / len(points)
                loss += err * err / len(points)
            w -= lr * gw
            b -= lr * gb
            metrics.scalar("loss", loss, epoch)
            checkpoints.save(epoch, json.dumps({"w": w, "b": b}).encode())
            control.heartbeat(epoch / epochs)
        return TrainSummary(final_metrics=[("loss", loss), ("w", w), ("b", b)])
