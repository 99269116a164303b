"""The retrain example's model server (the custom engine contract): HTTP on 0.0.0.0:8080,
GET /health, POST / with {"features": [..]} → {"label": ...} by the nearest centroid in
/home/mind/model/centroids.json. Standard library only."""

import json
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

CENTROIDS = json.load(open("/home/mind/model/centroids.json"))


class Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"

    def reply(self, status, body):
        data = json.dumps(body).encode()
        self.send_response(status)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        self.wfile.write(data)

    def do_GET(self):
        self.reply(200, {"status": "ok"} if self.path == "/health" else {"error": "POST features"})

    def do_POST(self):
        try:
            body = json.loads(self.rfile.read(int(self.headers.get("Content-Length", 0))))
            x = [float(v) for v in body["features"]]
        except (ValueError, KeyError, TypeError) as e:
            return self.reply(400, {"error": f"expected {{\"features\": [numbers]}}: {e}"})
        label = min(CENTROIDS, key=lambda y: sum((a - b) ** 2 for a, b in zip(x, CENTROIDS[y])))
        self.reply(200, {"label": label})

    def log_message(self, *args):
        pass


ThreadingHTTPServer(("0.0.0.0", 8080), Handler).serve_forever()
