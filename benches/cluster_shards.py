#!/usr/bin/env python3
"""Publishes/s across a cluster and Redis CPU per publish, for
benches/cluster.sh's `one-shard` and `two-shards` cases.

Publishers (Python `websockets`), alternating over the nodes given with
--url, each join a room of their own (room names spread over the shards by
the nodes' hash) and keep --window publishes in flight for --secs. Redis
CPU is `used_cpu_sys + used_cpu_user` from `INFO cpu` of every --redis-port,
read before and after. Prints one JSON line:

    {"scenario": "shards", "shards": N, "publishes": ..., "publishes_per_s": ...,
     "redis_cpu_us_per_publish": ..., "per_shard_cpu_s": [...], "errors": ..., "ok": ...}

The generator is Python: with fast nodes it may be what limits publishes/s
(compare one and two shards at the same publisher count, and read the Redis
CPU per publish, which does not depend on the generator).
"""

import argparse
import asyncio
import json
import socket
import sys
import time

import websockets


def redis_cpu(port):
    """`used_cpu_sys + used_cpu_user` of the Redis on `port`, in seconds."""
    with socket.create_connection(("127.0.0.1", port), timeout=5) as s:
        s.sendall(b"*2\r\n$4\r\nINFO\r\n$3\r\ncpu\r\n")
        data = b""
        while True:
            chunk = s.recv(65536)
            if not chunk:
                break
            data += chunk
            head, _, rest = data.partition(b"\r\n")
            if head.startswith(b"$") and len(rest) >= int(head[1:]):
                break
    total = 0.0
    for line in data.decode(errors="replace").splitlines():
        key, _, value = line.partition(":")
        if key in ("used_cpu_sys", "used_cpu_user"):
            total += float(value)
    return total


async def publisher(url, room, window, deadline, counts):
    async with websockets.connect(url, subprotocols=["wshub.v1.json"], max_size=None) as ws:
        await ws.recv()  # connected
        await ws.send(json.dumps({"type": "room:join", "id": "j", "payload": {"room": room}}))
        while json.loads(await ws.recv()).get("id") != "j":
            pass
        sent = 0

        async def send_one():
            nonlocal sent
            sent += 1
            await ws.send(json.dumps({"type": "room:publish", "id": str(sent),
                                      "payload": {"room": room, "data": sent}}))

        for _ in range(window):
            await send_one()
        in_flight = window
        while in_flight:
            msg = json.loads(await ws.recv())
            if msg.get("type") == "ack":
                counts["acked"] += 1
            elif msg.get("type") == "error" and msg.get("id"):
                counts["errors"] += 1
            else:
                continue
            in_flight -= 1
            if time.monotonic() < deadline:
                await send_one()
                in_flight += 1


async def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--url", action="append", required=True)
    ap.add_argument("--redis-port", action="append", type=int, required=True)
    ap.add_argument("--publishers", type=int, default=32)
    ap.add_argument("--window", type=int, default=16)
    ap.add_argument("--secs", type=float, default=10)
    a = ap.parse_args()
    counts = {"acked": 0, "errors": 0}
    before = [redis_cpu(p) for p in a.redis_port]
    start = time.monotonic()
    deadline = start + a.secs
    tasks = [asyncio.wait_for(publisher(a.url[i % len(a.url)], f"bench-{i}", a.window, deadline, counts),
                              a.secs + 30)
             for i in range(a.publishers)]
    results = await asyncio.gather(*tasks, return_exceptions=True)
    elapsed = time.monotonic() - start
    cpu = [redis_cpu(p) - b for p, b in zip(a.redis_port, before)]
    failed = [repr(r) for r in results if isinstance(r, BaseException)]
    acked = counts["acked"]
    ok = acked > 0 and not failed and counts["errors"] == 0
    print(json.dumps({
        "scenario": "shards",
        "shards": len(a.redis_port),
        "nodes": len(a.url),
        "publishers": a.publishers,
        "publishes": acked,
        "publishes_per_s": acked / elapsed if elapsed else 0,
        "redis_cpu_us_per_publish": sum(cpu) * 1e6 / acked if acked else None,
        "per_shard_cpu_s": [round(c, 3) for c in cpu],
        "errors": counts["errors"],
        "ok": ok,
        "error": failed[0] if failed else None,
    }))
    for f in failed[:3]:
        print(f"publisher failed: {f}", file=sys.stderr)
    return ok


sys.exit(0 if asyncio.run(main()) else 1)
