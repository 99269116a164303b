"""The training job of the retrain example: a nearest-centroid classifier of the CSV files
under --data_url (numeric columns are features, the last column is the label), its accuracy
on them as a metric, and a model package under --train_url's model/ that serves it (the custom
engine contract: HTTP on 8080, /health, the files under /home/mind/model).

It also reads the row count the prep step wrote (--summary_url) and prints it."""

import argparse
import csv
import glob
import json
import os
import shutil

p = argparse.ArgumentParser()
p.add_argument("--data_url", required=True)
p.add_argument("--summary_url", required=True)
p.add_argument("--train_url", required=True)
args, _ = p.parse_known_args()

for f in glob.glob(os.path.join(args.summary_url, "*.json")):
    print("prep saw", json.load(open(f))["rows"], "rows")

rows = []
for f in sorted(glob.glob(os.path.join(args.data_url, "**", "*.csv"), recursive=True)):
    with open(f) as fh:
        for r in csv.reader(fh):
            try:
                rows.append(([float(x) for x in r[:-1]], r[-1]))
            except ValueError:
                continue  # a header
if not rows:
    raise SystemExit("no rows under " + args.data_url)

sums = {}
for x, y in rows:
    s, n = sums.get(y, ([0.0] * len(x), 0))
    sums[y] = ([a + b for a, b in zip(s, x)], n + 1)
centroids = {y: [v / n for v in s] for y, (s, n) in sums.items()}


def predict(x):
    return min(centroids, key=lambda y: sum((a - b) ** 2 for a, b in zip(x, centroids[y])))


accuracy = sum(predict(x) == y for x, y in rows) / len(rows)
print(f"[metric] accuracy={accuracy} step=1")

out = args.train_url
model = os.path.join(out, "model")
os.makedirs(model, exist_ok=True)
json.dump(centroids, open(os.path.join(model, "centroids.json"), "w"))
json.dump([{"key": "accuracy", "title": "accuracy", "type": "float", "data": {"value": accuracy}}],
          open(os.path.join(out, "metrics.json"), "w"))
json.dump({"model_algorithm": "nearest_centroid", "model_type": "Scikit_Learn"},
          open(os.path.join(model, "config.json"), "w"))
shutil.copy(os.path.join(os.path.dirname(os.path.abspath(__file__)), "server.py"), model)
print("saved the model to", model)
