"""The inference example's pre- and post-processing as a separate CPython HTTP service on
loopback: the transformer-hop pattern (KServe's transformer, a sidecar), for
bench/plugins.sh. POST / with the JSON request; the service does what the Wasm plugin's
preprocess and postprocess do (JSON instances -> f32 tensor bytes; fixed logits -> top-k
labels) and answers the JSON response. HTTP/1.1 keep-alive, one thread per connection.

    python3 prepost_service.py PORT LABELS_FILE [--numpy]

With --numpy the work is done the way a KServe transformer would write it, with numpy
(the native counterpart of the plugin's `tensors` helpers)."""

import array
import json
import math
import sys
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

LABELS = [line.strip() for line in open(sys.argv[2], encoding="utf-8") if line.strip()]


def preprocess(body: bytes):
    doc = json.loads(body)
    instances = doc["instances"]
    width = len(instances[0])
    values = array.array("f")
    for row in instances:
        if len(row) != width:
            raise ValueError("ragged")
        values.extend(float(x) for x in row)
    return values.tobytes(), (len(instances), width), doc.get("top_k", 3)


def postprocess(logits: bytes, shape, top_k: int) -> bytes:
    rows, classes = shape
    values = array.array("f")
    values.frombytes(logits)
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
    return json.dumps({"predictions": predictions}).encode()


def preprocess_numpy(body: bytes):
    doc = json.loads(body)
    values = np.asarray(doc["instances"], dtype=np.float32)
    if values.ndim != 2:
        raise ValueError("ragged")
    return values.tobytes(), values.shape, doc.get("top_k", 3)


def postprocess_numpy(logits: bytes, shape, top_k: int) -> bytes:
    values = np.frombuffer(logits, dtype=np.float32).reshape(shape).astype(np.float64)
    exps = np.exp(values - values.max(axis=1, keepdims=True))
    probs = exps / exps.sum(axis=1, keepdims=True)
    best = np.argsort(-values, axis=1, kind="stable")[:, :top_k]
    predictions = [
        [
            {"label": LABELS[c] if c < len(LABELS) else str(c), "score": round(float(probs[r, c]), 6)}
            for c in row
        ]
        for r, row in enumerate(best.tolist())
    ]
    return json.dumps({"predictions": predictions}).encode()


if len(sys.argv) > 3 and sys.argv[3] == "--numpy":
    import numpy as np

    preprocess, postprocess = preprocess_numpy, postprocess_numpy


class Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    # TCP_NODELAY: without it the response's header and body writes meet delayed ACKs (40 ms).
    disable_nagle_algorithm = True

    def do_POST(self):
        body = self.rfile.read(int(self.headers["Content-Length"]))
        tensor, (rows, _), top_k = preprocess(body)
        # The model's output: fixed logits, 4 classes per row (as the benchmark gives the plugin).
        logits = array.array("f", [0.1, 2.0, 0.3, 0.4] * rows).tobytes()
        out = postprocess(logits, (rows, 4), top_k)
        self.send_response(200)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(out)))
        # Headers and body in one write.
        self._headers_buffer.append(b"\r\n")
        self._headers_buffer.append(out)
        self.flush_headers()

    def log_message(self, *args):
        pass


ThreadingHTTPServer(("127.0.0.1", int(sys.argv[1])), Handler).serve_forever()
