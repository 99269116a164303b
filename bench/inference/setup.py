"""Sets up bench/inference.sh's gateway through its API (standard library only): a user and
token, the S3 server as storage connection "local", model `iris` (the example's package with
its Python Wasm processor), model `iris-c` (the same with the C processor,
examples/plugins/c-inference-processor) and model `engine` (engine_server.py as a process
engine, model type PyTorch), one service of each, waited until RUNNING. Prints shell
assignments:

    TOKEN=... IRIS_SERVICE=... IRIS_C_SERVICE=... ENGINE_SERVICE=...

    python3 setup.py GATEWAY_URL ADMIN_TOKEN S3_ENDPOINT ACCESS_KEY SECRET_KEY"""

import json
import os
import sys
import time

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
from benchkit import request  # noqa: E402

BASE, ADMIN, S3, AK, SK = sys.argv[1:6]
WAIT = 300


def call(method, path, token, body=None, want=(200, 201, 202)):
    status, text = request(BASE, token, method, path, body, timeout=30)
    if status not in want:
        sys.exit(f"{method} {path}: {status} {text[:500]!r}")
    return json.loads(text) if text else {}


def until(what, fn):
    deadline = time.monotonic() + WAIT
    while time.monotonic() < deadline:
        v = fn()
        if v is not None:
            return v
        time.sleep(0.5)
    sys.exit(f"timed out waiting for {what}")


call("POST", "/v1/users", ADMIN, {"name": "bench", "role": "user"})
token = call("POST", "/v1/users/bench/tokens", ADMIN, {"label": "bench"})["token"]
call("POST", "/v1/storage/connections", token,
     {"name": "local", "endpoint": S3, "access_key_id": AK, "secret_access_key": SK})


def model(name, extra):
    body = {"name": name, "source": {"type": "obs", "connection": "local",
                                     "path": f"obs://models/{name}/"}}
    body.update(extra)
    call("POST", "/v1/models", token, body)

    def imported():
        v = call("GET", f"/v1/models/{name}/versions/0.0.1", token)
        return v if v.get("status") != "IMPORTING" else None

    v = until(f"model {name} to import", imported)
    if v.get("status") != "NORMAL":
        sys.exit(f"model {name}: {v}")


def service(name, model_name):
    sid = call("POST", "/v1/services", token,
               {"name": name, "models": [{"model": model_name, "version": "0.0.1"}]})["id"]

    def running():
        v = call("GET", f"/v1/services/{sid}", token)
        if v.get("status") in ("FAILED", "ABNORMAL", "STOPPED"):
            sys.exit(f"service {name}: {v}")
        return sid if v.get("status") == "RUNNING" else None

    return until(f"service {name} to run", running)


model("iris", {})
model("iris-c", {})
model("engine", {"start_command": "python3 /home/mind/model/engine_server.py"})
iris = service("iris-svc", "iris")
iris_c = service("iris-c-svc", "iris-c")
engine = service("engine-svc", "engine")
print(f"TOKEN={token} IRIS_SERVICE={iris} IRIS_C_SERVICE={iris_c} ENGINE_SERVICE={engine}")
