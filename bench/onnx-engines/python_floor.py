"""The Python floor for bench/onnx-engines.sh: onnxruntime's own `InferenceSession.run` on the
same models and inputs as the Rust benchmark, one intra-op thread, the input array made once.
Prints rows of the same table (load time, p50/p99 of one run, runs/s on 1 and 16 threads; ORT
releases the GIL inside `run`, so threads can overlap there).

    python python_floor.py MODELS_DIR [ITERATIONS] [SECONDS] [ROUNDS]
"""

import os
import sys
import threading
import time

import numpy as np
import onnxruntime as ort

MODELS = [
    ("dense.onnx", "MLP 64→128→10, standard ops", [1, 2]),
    ("mlp.onnx", "sklearn MLPClassifier, zipmap=False", [1, 2]),
    ("logreg_int.onnx", "sklearn LogisticRegression (iris), int classes, zipmap=False", [1]),
    ("logreg_plain.onnx", "sklearn LogisticRegression (iris), string classes, zipmap=False", [1]),
    ("logreg.onnx", "sklearn LogisticRegression (iris), string classes, ZipMap", [1]),
]


def input_data(batch, features):
    # The same values as input_data() in src/main.rs.
    i = np.arange(batch * features, dtype=np.int64)
    return (((i * 7919 % 263).astype(np.float32) / np.float32(131.5) - 1) * 2).reshape(batch, features)


def session(path):
    opts = ort.SessionOptions()
    opts.intra_op_num_threads = 1
    opts.inter_op_num_threads = 1
    return ort.InferenceSession(path, opts, providers=["CPUExecutionProvider"])


def measure(sess, feed, iterations, seconds):
    for _ in range(iterations // 10):
        sess.run(None, feed)
    lat = []
    for _ in range(iterations):
        t = time.perf_counter_ns()
        sess.run(None, feed)
        lat.append((time.perf_counter_ns() - t) / 1e3)
    lat.sort()
    per_s = []
    for n in (1, 16):
        counts = [0] * n
        barrier = threading.Barrier(n + 1)

        def work(k):
            barrier.wait()
            end = time.perf_counter() + seconds
            c = 0
            while time.perf_counter() < end:
                sess.run(None, feed)
                c += 1
            counts[k] = c

        threads = [threading.Thread(target=work, args=(k,)) for k in range(n)]
        for t in threads:
            t.start()
        barrier.wait()
        start = time.perf_counter()
        for t in threads:
            t.join()
        per_s.append(sum(counts) / (time.perf_counter() - start))
    return (lat[len(lat) // 2], lat[len(lat) * 99 // 100], per_s[0], per_s[1])


def main():
    d = sys.argv[1]
    iterations = int(sys.argv[2]) if len(sys.argv) > 2 else 20000
    seconds = float(sys.argv[3]) if len(sys.argv) > 3 else 2.0
    rounds = int(sys.argv[4]) if len(sys.argv) > 4 else 3
    rows = []
    for file, what, batches in MODELS:
        path = os.path.join(d, file)
        loads = []
        for _ in range(5):
            t = time.perf_counter()
            session(path)
            loads.append((time.perf_counter() - t) * 1e3)
        sess = session(path)
        name = sess.get_inputs()[0].name
        features = sess.get_inputs()[0].shape[1]
        for batch in batches:
            feed = {name: input_data(batch, features)}
            rows.append((f"{what} (`{file}`)", batch, sorted(loads)[2], sess, feed, []))
    # Rounds over all rows, medians across rounds (as src/main.rs does).
    for _ in range(rounds):
        for row in rows:
            row[5].append(measure(row[3], row[4], iterations, seconds))
    for model, batch, load, _, _, results in rows:
        med = [sorted(col)[len(col) // 2] for col in zip(*results)]
        print(
            f"| {model} | {batch} | Python onnxruntime | {load:.2f} | {med[0]:.1f} | "
            f"{med[1]:.1f} | {med[2]:.0f} | {med[3]:.0f} |"
        )


if __name__ == "__main__":
    main()
