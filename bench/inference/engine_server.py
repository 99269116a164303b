"""The model with its own server for bench/inference.sh's container-engine path: a standard
library HTTP server (the custom engine contract: 0.0.0.0:8080, GET /health) that answers
every GET and POST with the same small fixed JSON prediction, so what is measured is the
path to it. Run by the process backend from the model package (start command
`python3 /home/mind/model/engine_server.py`), and directly on loopback as the baseline:

    python3 engine_server.py [PORT [HOST]]      # default 8080 0.0.0.0

HTTP/1.1 keep-alive, one thread per connection, TCP_NODELAY, the answer in one write."""

import sys
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

PORT = int(sys.argv[1]) if len(sys.argv) > 1 else 8080
HOST = sys.argv[2] if len(sys.argv) > 2 else "0.0.0.0"
ANSWER = b'{"predictions": [[{"label": "setosa", "score": 0.978}, {"label": "versicolor", "score": 0.022}]]}'


class Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    disable_nagle_algorithm = True

    def answer(self):
        n = int(self.headers.get("Content-Length") or 0)
        if n:
            self.rfile.read(n)
        self.send_response(200)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(ANSWER)))
        self._headers_buffer.append(b"\r\n")
        self._headers_buffer.append(ANSWER)
        self.flush_headers()

    do_GET = do_POST = answer

    def log_message(self, *args):
        pass


ThreadingHTTPServer((HOST, PORT), Handler).serve_forever()
