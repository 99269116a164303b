"""The floor for bench/inference.sh: the iris model alone in onnxruntime from Python,
session.run on the benchmark request's instances in a loop, no HTTP. Prints one line:

    RESULT n=N p50_us=... p99_us=... mean_us=...

    python floor.py MODEL.onnx REQUEST.json [N]

One intra-op and one inter-op thread, as Atelier's engine runs each session."""

import json
import statistics
import sys
import time

import numpy as np
import onnxruntime as ort

model, request = sys.argv[1], sys.argv[2]
n = int(sys.argv[3]) if len(sys.argv) > 3 else 20000
options = ort.SessionOptions()
options.intra_op_num_threads = 1
options.inter_op_num_threads = 1
session = ort.InferenceSession(model, options, providers=["CPUExecutionProvider"])
x = np.asarray(json.load(open(request))["instances"], dtype=np.float32)
names = [o.name for o in session.get_outputs()]
for _ in range(min(1000, n)):
    session.run(names, {"inputs": x})
times = []
clock = time.perf_counter_ns
for _ in range(n):
    t0 = clock()
    session.run(names, {"inputs": x})
    times.append(clock() - t0)
times.sort()
print(
    f"RESULT n={n} p50_us={times[n // 2] / 1000:.1f} p99_us={times[n * 99 // 100] / 1000:.1f} "
    f"mean_us={statistics.fmean(times) / 1000:.1f}"
)
