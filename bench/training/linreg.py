"""The linear-regression training algorithm of examples/plugins/python-training-algorithm
in plain CPython, for bench/training.sh: the same data (every CSV under DATA_DIR), the same
gradient descent, a JSON checkpoint per epoch under OUT_DIR/checkpoints/.

    python linreg.py DATA_DIR OUT_DIR EPOCHS [LEARNING_RATE]"""

import csv
import json
import os
import sys

data, out, epochs = sys.argv[1], sys.argv[2], int(sys.argv[3])
lr = float(sys.argv[4]) if len(sys.argv) > 4 else 0.05
points = []
for name in sorted(os.listdir(data)):
    with open(os.path.join(data, name)) as f:
        for row in csv.reader(f):
            try:
                points.append((float(row[0]), float(row[1])))
            except (ValueError, IndexError):
                continue
os.makedirs(os.path.join(out, "checkpoints"), exist_ok=True)
w = b = loss = 0.0
for epoch in range(1, epochs + 1):
    gw = gb = loss = 0.0
    for x, y in points:
        err = w * x + b - y
        gw += 2 * err * x / len(points)
        gb += 2 * err / len(points)
        loss += err * err / len(points)
    w -= lr * gw
    b -= lr * gb
    with open(os.path.join(out, "checkpoints", f"step-{epoch}"), "w") as f:
        json.dump({"w": w, "b": b}, f)
print(f"loss={loss} w={w} b={b}")
