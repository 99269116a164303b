"""Counts slow calls at a concurrency, without wrk: CLIENTS asyncio tasks, each on its own
kept-alive HTTP/1.1 connection, send GET (or POST with --body) in a loop for SECONDS; every
round opens fresh connections (as each wrk run does). Prints one line per round: calls,
calls slower than --slow ms (default 900), the max and p50/p99 in ms. Standard library only.

    python3 tail.py URL [--token TOKEN] [--clients 16] [--seconds 5] [--rounds 3]

Made to look at the ~1 s tail through the gateway to a process engine at 16 clients
(docs/benchmarks.md, "Inference: Atelier vs the KServe pattern")."""

import argparse
import asyncio
import time
import urllib.parse


async def one_client(host, port, head, deadline, samples, errors):
    try:
        reader, writer = await asyncio.open_connection(host, port)
    except OSError as e:
        errors.append(str(e))
        return
    try:
        while time.monotonic() < deadline:
            t0 = time.monotonic()
            writer.write(head)
            await writer.drain()
            status = await reader.readline()
            length = 0
            while True:
                line = await reader.readline()
                if line in (b"\r\n", b""):
                    break
                name, _, value = line.partition(b":")
                if name.strip().lower() == b"content-length":
                    length = int(value)
            if length:
                await reader.readexactly(length)
            samples.append(time.monotonic() - t0)
            if not status.startswith(b"HTTP/1.1 200"):
                errors.append(status.decode(errors="replace").strip())
    except (OSError, asyncio.IncompleteReadError) as e:
        errors.append(repr(e))
    finally:
        writer.close()


async def round_(url, token, clients, seconds):
    u = urllib.parse.urlsplit(url)
    path = u.path + ("?" + u.query if u.query else "")
    lines = [f"GET {path} HTTP/1.1", f"Host: {u.netloc}"]
    if token:
        lines.append(f"Authorization: Bearer {token}")
    head = ("\r\n".join(lines) + "\r\n\r\n").encode()
    samples, errors = [], []
    deadline = time.monotonic() + seconds
    await asyncio.gather(*(one_client(u.hostname, u.port, head, deadline, samples, errors)
                           for _ in range(clients)))
    return samples, errors


def main():
    p = argparse.ArgumentParser()
    p.add_argument("url")
    p.add_argument("--token")
    p.add_argument("--clients", type=int, default=16)
    p.add_argument("--seconds", type=float, default=5)
    p.add_argument("--rounds", type=int, default=3)
    p.add_argument("--slow", type=float, default=900, help="ms")
    a = p.parse_args()
    for r in range(a.rounds):
        samples, errors = asyncio.run(round_(a.url, a.token, a.clients, a.seconds))
        s = sorted(samples)
        slow = sum(1 for x in s if x * 1000 > a.slow)
        pct = lambda q: s[min(len(s) - 1, int(q * len(s)))] * 1000 if s else 0
        print(f"round {r + 1}: {len(s)} calls, {slow} over {a.slow:.0f} ms, max {pct(1):.1f} ms, "
              f"p50 {pct(0.5):.2f} ms, p99 {pct(0.99):.2f} ms, errors {len(errors)}"
              + (f" (first: {errors[0]})" if errors else ""), flush=True)


if __name__ == "__main__":
    main()
