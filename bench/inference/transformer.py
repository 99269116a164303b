"""The KServe pattern's transformer for bench/inference.sh: the iris example's pre- and
post-processing (examples/inference/iris/processor/app.py, the same request and answer) in
CPython, FastAPI on uvicorn, in front of the model server (model_server.py), called with
the Open Inference Protocol V2 JSON over loopback HTTP through one kept-alive httpx client.

    python transformer.py PORT MODEL_SERVER_URL LABELS_FILE

POST /v1/models/iris:predict  {"instances": [[4 numbers], ...], "top_k": 2}
                              -> {"predictions": [[{"label", "score"}, ...], ...]}"""

import sys
from contextlib import asynccontextmanager

import httpx
import numpy as np
import uvicorn
from fastapi import FastAPI, HTTPException, Request
from fastapi.responses import JSONResponse

PORT, UPSTREAM, LABELS_FILE = int(sys.argv[1]), sys.argv[2].rstrip("/"), sys.argv[3]
LABELS = [line.strip() for line in open(LABELS_FILE, encoding="utf-8") if line.strip()]
client: httpx.AsyncClient


@asynccontextmanager
async def lifespan(_app):
    global client
    limits = httpx.Limits(max_connections=64, max_keepalive_connections=64)
    async with httpx.AsyncClient(base_url=UPSTREAM, limits=limits, timeout=30) as c:
        client = c
        yield


app = FastAPI(lifespan=lifespan)


def preprocess(doc):
    try:
        inputs = np.asarray(doc["instances"], dtype=np.float32)
    except (KeyError, TypeError, ValueError):
        raise HTTPException(400, 'expected {"instances": [[4 numbers], ...]}')
    if inputs.ndim != 2 or inputs.shape[1] != 4:
        raise HTTPException(400, 'expected {"instances": [[4 numbers], ...]}')
    top_k = doc.get("top_k", 1)
    if not isinstance(top_k, int) or isinstance(top_k, bool) or not 1 <= top_k <= 3:
        raise HTTPException(400, "top_k must be 1, 2 or 3")
    v2 = {"inputs": [{"name": "inputs", "shape": list(inputs.shape), "datatype": "FP32",
                      "data": inputs.ravel().tolist()}]}
    return v2, top_k


def postprocess(answer, top_k):
    probs = next((o for o in answer["outputs"] if o["name"] == "probabilities"), None)
    if probs is None:
        raise HTTPException(500, "the model gave no probabilities")
    p = np.asarray(probs["data"], dtype=np.float32).reshape(probs["shape"])
    best = np.argsort(-p, axis=1, kind="stable")[:, :top_k]
    return {
        "predictions": [
            [
                {"label": LABELS[c] if c < len(LABELS) else str(c),
                 "score": round(float(p[r, c]), 6)}
                for c in row
            ]
            for r, row in enumerate(best.tolist())
        ]
    }


@app.post("/v1/models/iris:predict")
async def predict(request: Request):
    v2, top_k = preprocess(await request.json())
    r = await client.post("/v2/models/iris/infer", json=v2)
    if r.status_code != 200:
        raise HTTPException(502, f"model server: {r.status_code} {r.text[:200]}")
    return JSONResponse(postprocess(r.json(), top_k))


uvicorn.run(app, host="127.0.0.1", port=PORT, log_level="warning", access_log=False)
