#!/usr/bin/env python3
"""permessage-deflate's cost and gain on the real `wshub` binary.

    python3 benches/compression.py [SUBSCRIBERS] [MESSAGES]   # defaults 1000 200

For `--compression off` and then `on`, starts target/release/wshub, joins
SUBSCRIBERS Python `websockets` clients (each offering permessage-deflate, as
browsers do) to one room, publishes MESSAGES chat-like JSON messages of about
2 KB from one more client, waits until every subscriber has every message,
and prints per delivered message: the bytes the server wrote
(`wshub_bytes_out_total`) and the server's CPU time (user + system, from
/proc/PID/stat), read before and after the publishing. The generator shares
the machine: figures are relative (off against on), not absolute.
"""
import asyncio, json, os, random, subprocess, sys, time, urllib.request

import websockets

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
WSHUB = os.environ.get("WSHUB") or os.path.join(ROOT, "target", "release", "wshub")
TICK = os.sysconf("SC_CLK_TCK")
WORDS = "hello room message json wshub deflate chat again team lunch meeting ok".split()


def chat_message(i, rng):
    """About 2 KB of JSON that looks like chat: names, timestamps, text."""
    lines = []
    while len(json.dumps(lines)) < 1900:
        lines.append({"user": f"user{rng.randrange(50)}", "ts": 1_700_000_000_000 + i * 1000 + len(lines),
                      "text": " ".join(rng.choice(WORDS) for _ in range(8))})
    return {"kind": "chat", "seq": i, "lines": lines}


def metric(addr, name):
    body = urllib.request.urlopen(f"http://{addr}/metrics", timeout=10).read().decode()
    for line in body.splitlines():
        if line.startswith(name + " "):
            return int(line.split()[1])
    return 0


def cpu_seconds(pid):
    fields = open(f"/proc/{pid}/stat").read().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / TICK


async def run(mode, subscribers, messages):
    server = subprocess.Popen([WSHUB, "--bind", "127.0.0.1:0", "--compression", mode, "--log-level", "warn",
                               "--rate-limit", "0", "--max-connections-per-ip", "0",
                               "--max-handshakes-per-ip", "1024"],
                              stdout=subprocess.PIPE)
    try:
        addr = server.stdout.readline().decode().strip().rsplit(" ", 1)[1]
        url = f"ws://{addr}/ws"
        done = asyncio.Event()
        got = [0]
        total = subscribers * messages

        async def subscriber():
            ws = await websockets.connect(url, compression="deflate", max_size=None, open_timeout=60)
            await ws.recv()  # connected
            await ws.send(json.dumps({"type": "room:join", "id": "j", "payload": {"room": "bench"}}))
            return ws

        async def drain(ws):
            async for raw in ws:
                if '"room:message"' in raw:
                    got[0] += 1
                    if got[0] == total:
                        done.set()

        subs = []
        for i in range(0, subscribers, 50):
            subs += await asyncio.gather(*(subscriber() for _ in range(min(50, subscribers - i))))
        tasks = [asyncio.create_task(drain(ws)) for ws in subs]
        publisher = await subscriber()
        await publisher.recv()  # its join's ack
        await asyncio.sleep(1)
        rng = random.Random(7)
        payloads = [chat_message(i, rng) for i in range(messages)]
        bytes0, cpu0 = metric(addr, "wshub_bytes_out_total"), cpu_seconds(server.pid)
        for i, data in enumerate(payloads):
            await publisher.send(json.dumps({"type": "room:publish", "payload": {"room": "bench", "data": data}}))
            if i % 20 == 19:
                await asyncio.sleep(0.05)
        await asyncio.wait_for(done.wait(), timeout=600)
        bytes1, cpu1 = metric(addr, "wshub_bytes_out_total"), cpu_seconds(server.pid)
        for t in tasks:
            t.cancel()
        size = len(json.dumps({"room": "bench", "data": payloads[0]}))
        return {"mode": mode, "payload": size, "delivered": total,
                "wire_bytes_per_msg": (bytes1 - bytes0) / total,
                "server_cpu_us_per_msg": (cpu1 - cpu0) * 1e6 / total}
    finally:
        server.terminate()
        server.wait(timeout=30)


def main():
    subscribers = int(sys.argv[1]) if len(sys.argv) > 1 else 1000
    messages = int(sys.argv[2]) if len(sys.argv) > 2 else 200
    results = [asyncio.run(run(mode, subscribers, messages)) for mode in ("off", "on")]
    off, on = results
    print(f"{subscribers} subscribers, {messages} messages of ~{off['payload']} B JSON")
    print("| compression | wire bytes / delivered msg | server CPU µs / delivered msg |")
    print("|---|---|---|")
    for r in results:
        print(f"| {r['mode']} | {r['wire_bytes_per_msg']:.0f} | {r['server_cpu_us_per_msg']:.1f} |")
    print(f"on/off: wire {on['wire_bytes_per_msg'] / off['wire_bytes_per_msg']:.2f}, "
          f"CPU {on['server_cpu_us_per_msg'] / max(off['server_cpu_us_per_msg'], 1e-9):.2f}")


if __name__ == "__main__":
    main()
