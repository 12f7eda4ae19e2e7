#!/usr/bin/env python3
"""Redis memory per message of history (docs/scaling.md, "Redis sizing").

Starts a redis-server (a child on a free port, no persistence) and one wshub
node on it (`--history-size 1000`), publishes 1,000 messages into each of 10
rooms with `data` of 100 and then 1,000 bytes, and prints Redis's
`used_memory` growth per message. Needs redis-server, redis-cli and Python
`websockets` (bash .ci/setup).

    python3 benches/redis_sizing.py target/release/wshub
"""
import asyncio, json, subprocess, socket, sys, time, os
import websockets

def free_port():
    s = socket.socket(); s.bind(("127.0.0.1", 0)); p = s.getsockname()[1]; s.close(); return p

def used(port):
    out = subprocess.check_output(["redis-cli", "-p", str(port), "INFO", "memory"]).decode()
    return int([l for l in out.splitlines() if l.startswith("used_memory:")][0].split(":")[1])

async def run(url, rooms, per_room, size):
    async with websockets.connect(url) as ws:
        await ws.recv()
        for r in range(rooms):
            await ws.send(json.dumps({"type": "room:join", "id": f"j{r}", "payload": {"room": f"room-{r}"}}))
        n = 0
        while n < rooms:
            m = json.loads(await ws.recv())
            if m["type"] == "ack": n += 1
        data = "x" * size
        for r in range(rooms):
            for i in range(per_room):
                await ws.send(json.dumps({"type": "room:publish", "id": f"{r}-{i}", "payload": {"room": f"room-{r}", "data": data}}))
            got = 0
            while got < per_room:
                m = json.loads(await ws.recv())
                if m["type"] in ("ack", "error"):
                    assert m["type"] == "ack", m
                    got += 1

rport = free_port()
red = subprocess.Popen(["redis-server", "--port", str(rport), "--bind", "127.0.0.1", "--save", "", "--appendonly", "no"], stdout=subprocess.DEVNULL)
time.sleep(0.5)
ws = subprocess.Popen([sys.argv[1], "--bind", "127.0.0.1:0", "--redis", f"redis://127.0.0.1:{rport}", "--history-size", "1000", "--rate-limit", "0", "--frame-rate-limit", "0", "--log-level", "warn"], stdout=subprocess.PIPE)
addr = ws.stdout.readline().decode().split()[-1]
try:
    for size in (100, 1000):
        before = used(rport)
        asyncio.run(run(f"ws://{addr}/ws", 10, 1000, size))
        after = used(rport)
        print(f"data {size} B: {(after-before)/10000:.0f} bytes per message of history (10 rooms x 1000)")
        subprocess.check_call(["redis-cli", "-p", str(rport), "FLUSHALL"], stdout=subprocess.DEVNULL)
        time.sleep(0.3)
finally:
    ws.kill(); red.kill()
