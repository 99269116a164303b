"""A hostile step: tries files, sockets, the environment and storage outside its grant, and
reports what each attempt did."""

import os
import socket
import sys
import time

from componentize_py_types import Err
from wit_world import exports
from wit_world.imports import storage
from wit_world.imports.step_types import StepResult
from wit_world.imports.types import Value_Text


def attempt(action) -> str:
    try:
        return "allowed: " + repr(action())[:60]
    except Err as e:
        return "denied: " + type(e.value).__name__
    except Exception as e:
        return "denied: " + type(e).__name__


def connect():
    s = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    s.settimeout(1)
    s.connect((b"127.0.0.1", 22))
    return s


class Step(exports.Step):
    def run(self, context, inputs, outputs) -> StepResult:
        results = {
            "read_etc_passwd": attempt(lambda: open("/etc/passwd").read()),
            "read_model": attempt(lambda: open("/model/labels.txt").read()),
            "write_tmp": attempt(lambda: open("/tmp/escape", "w").write("x")),
            "socket": attempt(lambda: socket.socket(socket.AF_INET, socket.SOCK_STREAM)),
            "tcp_connect": attempt(connect),
            "udp_send": attempt(lambda: socket.socket(socket.AF_INET, socket.SOCK_DGRAM).sendto(b"x", (b"127.0.0.1", 53))),
            "dns": attempt(lambda: socket.getaddrinfo(b"localhost", 80)),
            "environment": "empty" if not dict(os.environ) else "visible: " + ",".join(sorted(os.environ)),
            "arguments": "none" if len(sys.argv) <= 1 else "visible: " + " ".join(sys.argv[1:]),
            "storage_outside_grant": attempt(lambda: storage.read("secret/key")),
            "storage_traversal": attempt(lambda: storage.read("data/../secret/key")),
            "storage_write_to_input": attempt(lambda: storage.write("data/new.csv", b"x")),
            "storage_read_granted": attempt(lambda: storage.read("data/in.csv")),
            # Run with limits.deterministic: the wall clock is frozen at the Unix epoch.
            "wall_clock_year": str(time.gmtime(time.time()).tm_year),
        }
        return StepResult(outputs=[(k, Value_Text(v)) for k, v in results.items()], variables=[])
