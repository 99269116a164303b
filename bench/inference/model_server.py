"""The KServe pattern's model server for bench/inference.sh: onnxruntime behind FastAPI on
uvicorn, answering the Open Inference Protocol (KServe V2) JSON at
POST /v2/models/{name}/infer, with GET /v2/models/{name}/ready.

    python model_server.py PORT MODEL.onnx [NAME]

One session with one intra-op and one inter-op thread, as Atelier's built-in engine runs
each of its sessions (inference/src/onnx/model.rs)."""

import sys

import numpy as np
import onnxruntime as ort
import uvicorn
from fastapi import FastAPI, HTTPException, Request
from fastapi.responses import JSONResponse

PORT, MODEL = int(sys.argv[1]), sys.argv[2]
NAME = sys.argv[3] if len(sys.argv) > 3 else "iris"
DTYPES = {"FP32": np.float32, "FP64": np.float64, "INT64": np.int64, "INT32": np.int32}
V2 = {np.dtype(v): k for k, v in DTYPES.items()}

options = ort.SessionOptions()
options.intra_op_num_threads = 1
options.inter_op_num_threads = 1
session = ort.InferenceSession(MODEL, options, providers=["CPUExecutionProvider"])
app = FastAPI()


@app.get(f"/v2/models/{NAME}/ready")
async def ready():
    return {"name": NAME, "ready": True}


@app.post(f"/v2/models/{NAME}/infer")
async def infer(request: Request):
    doc = await request.json()
    try:
        feeds = {
            t["name"]: np.asarray(t["data"], dtype=DTYPES[t["datatype"]]).reshape(t["shape"])
            for t in doc["inputs"]
        }
    except (KeyError, TypeError, ValueError) as e:
        raise HTTPException(400, f"bad V2 request: {e}")
    names = [o.name for o in session.get_outputs()]
    results = session.run(names, feeds)
    outputs = [
        {"name": n, "shape": list(r.shape), "datatype": V2[r.dtype], "data": r.ravel().tolist()}
        for n, r in zip(names, results)
    ]
    return JSONResponse({"model_name": NAME, "id": doc.get("id", ""), "outputs": outputs})


uvicorn.run(app, host="127.0.0.1", port=PORT, log_level="warning", access_log=False)
