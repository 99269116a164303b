#!/usr/bin/env python3
"""WebSocket round-trip timer for a Jupyter kernel, used by bench/proxy.sh.

Connects to a kernel's `/api/kernels/{kid}/channels` WebSocket (legacy JSON protocol, no
subprotocol, no compression), then sends `kernel_info_request` on the shell channel and waits
for the matching `kernel_info_reply`, one at a time: WARMUP untimed round trips, then N timed
ones. Prints one line:

    RESULT n=2000 p50_us=... p90_us=... p99_us=... mean_us=... min_us=... max_us=... rps=...

A URL `ws+unix://%2Fpath%2Fto%2Fserver.sock/path` is opened over that unix socket (a
sandboxed notebook's Jupyter listens on one; websocket-client only). Uses
`websocket-client` when it can be imported (JupyterLab's venv usually has it), else
tornado's client (every Jupyter server has tornado). Run it with the Jupyter venv's python.

    ws_rtt.py --url ws://127.0.0.1:8000/nb/ID/api/kernels/KID/channels \
              --header 'Authorization: Bearer atl_...' -n 2000 --warmup 200
"""

import argparse
import datetime
import json
import math
import socket
import sys
import time
import urllib.parse
import uuid


def request_msg(session):
    msg_id = uuid.uuid4().hex
    msg = {
        "header": {
            "msg_id": msg_id,
            "username": "bench",
            "session": session,
            "msg_type": "kernel_info_request",
            "version": "5.3",
            "date": datetime.datetime.now(datetime.timezone.utc).isoformat(),
        },
        "parent_header": {},
        "metadata": {},
        "content": {},
        "channel": "shell",
        "buffers": [],
    }
    return msg_id, json.dumps(msg)


def is_reply(frame, msg_id):
    # iopub "status" messages carry the same parent msg_id; only the reply has this type.
    # Substring tests keep the client's own cost small and identical for every path.
    if not isinstance(frame, str):
        return False
    if msg_id not in frame or '"kernel_info_reply"' not in frame:
        return False
    msg = json.loads(frame)
    return (
        msg.get("msg_type") == "kernel_info_reply"
        and msg.get("parent_header", {}).get("msg_id") == msg_id
    )


def percentile(sorted_vals, p):
    # nearest-rank
    if not sorted_vals:
        return float("nan")
    k = math.ceil(p / 100.0 * len(sorted_vals)) - 1
    return sorted_vals[max(0, min(len(sorted_vals) - 1, k))]


def run_websocket_client(args, headers):
    import websocket  # websocket-client

    u = urllib.parse.urlsplit(args.url)
    if u.scheme == "ws+unix":
        sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        sock.settimeout(args.timeout)
        sock.connect(urllib.parse.unquote(u.netloc))
        url = urllib.parse.urlunsplit(("ws", "localhost", u.path, u.query, ""))
        ws = websocket.create_connection(
            url, header=headers, timeout=args.timeout, socket=sock, enable_multithread=False
        )
    else:
        ws = websocket.create_connection(
            args.url,
            header=headers,
            timeout=args.timeout,
            sockopt=((socket.IPPROTO_TCP, socket.TCP_NODELAY, 1),),
            enable_multithread=False,
        )
    session = uuid.uuid4().hex
    samples = []
    deadline = time.monotonic() + args.deadline
    try:
        for i in range(args.warmup + args.n):
            if time.monotonic() > deadline:
                raise SystemExit(f"ws_rtt: gave up after {args.deadline}s ({i} round trips)")
            msg_id, text = request_msg(session)
            t0 = time.perf_counter_ns()
            ws.send(text)
            while not is_reply(ws.recv(), msg_id):
                pass
            dt = time.perf_counter_ns() - t0
            if i >= args.warmup:
                samples.append(dt)
    finally:
        ws.close()
    return samples


def run_tornado(args, headers):
    from tornado import httpclient, ioloop, websocket

    async def main():
        h = dict(line.split(":", 1) for line in headers)
        h = {k.strip(): v.strip() for k, v in h.items()}
        req = httpclient.HTTPRequest(
            args.url, headers=h, connect_timeout=args.timeout, request_timeout=args.timeout
        )
        conn = await websocket.websocket_connect(req)
        # tornado sets TCP_NODELAY on its websocket streams
        session = uuid.uuid4().hex
        samples = []
        deadline = time.monotonic() + args.deadline
        try:
            for i in range(args.warmup + args.n):
                if time.monotonic() > deadline:
                    raise SystemExit(f"ws_rtt: gave up after {args.deadline}s ({i} round trips)")
                msg_id, text = request_msg(session)
                t0 = time.perf_counter_ns()
                await conn.write_message(text)
                while True:
                    frame = await conn.read_message()
                    if frame is None:
                        raise SystemExit("ws_rtt: the server closed the WebSocket")
                    if is_reply(frame, msg_id):
                        break
                dt = time.perf_counter_ns() - t0
                if i >= args.warmup:
                    samples.append(dt)
        finally:
            conn.close()
        return samples

    return ioloop.IOLoop.current().run_sync(main)


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--url", required=True, help="ws://…/api/kernels/{kid}/channels")
    ap.add_argument("--header", action="append", default=[], help="'Name: value', repeatable")
    ap.add_argument("-n", type=int, default=2000, help="timed round trips")
    ap.add_argument("--warmup", type=int, default=200, help="untimed round trips first")
    ap.add_argument("--timeout", type=float, default=30.0, help="connect/receive timeout, s")
    ap.add_argument("--deadline", type=float, default=300.0, help="give up after this many s")
    ap.add_argument("--client", choices=["auto", "websocket-client", "tornado"], default="auto")
    args = ap.parse_args()

    url = args.url
    if "session_id=" not in url:
        url += ("&" if "?" in url else "?") + "session_id=" + uuid.uuid4().hex
    args.url = url

    client = args.client
    if client == "auto":
        try:
            import websocket  # noqa: F401

            client = "websocket-client"
        except ImportError:
            client = "tornado"
    if args.url.startswith("ws+unix:") and client != "websocket-client":
        raise SystemExit("ws_rtt: ws+unix:// URLs need websocket-client")
    run = run_websocket_client if client == "websocket-client" else run_tornado
    samples = run(args, args.header)
    s = sorted(x / 1000.0 for x in samples)
    total_s = sum(samples) / 1e9
    print(
        "RESULT n=%d p50_us=%.1f p90_us=%.1f p99_us=%.1f mean_us=%.1f min_us=%.1f max_us=%.1f "
        "rps=%.1f client=%s"
        % (
            len(s),
            percentile(s, 50),
            percentile(s, 90),
            percentile(s, 99),
            sum(s) / len(s),
            s[0],
            s[-1],
            len(s) / total_s if total_s else 0.0,
            client,
        )
    )
    sys.stdout.flush()


if __name__ == "__main__":
    main()
