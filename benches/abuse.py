#!/usr/bin/env python3
"""Run every attack of issue 14 ("Every byte bounded") at once against a wshub
this script starts itself, while an honest client chats, and report what the
server's memory and the honest client went through.

    cargo build --release
    python3 benches/abuse.py                      # default config, 60 s of attacks
    python3 benches/abuse.py --secs 20 --wshub ./target/release/wshub -- --history-max-bytes 1048576

Everything after `--` is passed to wshub. The server is started with
`--bind 127.0.0.1:0` (its address is read from its `wshub listening on ADDR`
line), stopped with SIGTERM at the end, and only it is ever signalled.

The attacks, numbered as in the issue (each in its own asyncio tasks, all at
once, for --secs):

  1. ping-frame flood: WebSocket ping frames as fast as possible, never
     reading the pongs;
  2. history flood: 1 MB publishes at just under the rate limit into rooms
     the attacker keeps creating (one more every second);
  3. replay copies: clients that never read rejoin the flooded rooms with
     `since: 0`, twice a second;
  4. replies to a client that never reads: 1 MB `ping` requests, 1 MB
     `room:publish` with `echo: true`, and `presence:get` of a 300-member
     room, each at just under the rate limit;
  5. idle TCP: connections that never send their HTTP request;
  6. JSON amplification: 1 MiB envelopes of small objects, as fast as the
     script can send them (past the rate limit, so refused ones too);
  7. frames nobody counts: an unfinished text message followed by endless
     empty continuation frames;
  8. memory never returned: the RSS 10 s after the attacks end.

The honest client (from 127.0.0.2, another address than the attackers')
publishes a small message every 50 ms and times each ack;
every 2 s it also opens a fresh connection (its handshake must succeed).
A refusal is an `error` reply, a failed or closed connection, or an ack that
took longer than 5 s.

Needs Python 3.8+ and `pip install websockets`. Prints a summary and one
JSON line.
"""
import argparse
import asyncio
import base64
import json
import multiprocessing
import os
import resource
import signal
import statistics
import struct
import subprocess
import sys
import time

import websockets

MB = 1_000_000
RATE = 90  # requests per second per attacker: under the default limit of 100


# --- the server -----------------------------------------------------------

def start_server(binary, extra):
    proc = subprocess.Popen([binary, "--bind", "127.0.0.1:0", "--log-level", "error", *extra],
                            stdout=subprocess.PIPE, text=True)
    line = proc.stdout.readline().strip()
    prefix = "wshub listening on "
    if not line.startswith(prefix):
        proc.kill()
        sys.exit(f"unexpected first line from wshub: {line!r}")
    host, port = line[len(prefix):].rsplit(":", 1)
    return proc, host, int(port)


def scrape(host, port, names):
    """The samples of /metrics whose line starts with one of `names`."""
    import urllib.request
    try:
        body = urllib.request.urlopen(f"http://{host}:{port}/metrics", timeout=5).read().decode()
    except OSError as e:
        return {"error": str(e)}
    return {line.rsplit(" ", 1)[0]: float(line.rsplit(" ", 1)[1])
            for line in body.splitlines()
            if not line.startswith("#") and line.startswith(tuple(names))}


def rss_kb(pid):
    try:
        with open(f"/proc/{pid}/status") as f:
            for line in f:
                if line.startswith("VmRSS:"):
                    return int(line.split()[1])
    except OSError:
        pass
    return 0


# --- a raw WebSocket client (attackers choose exactly what bytes to send) ----

def frame(opcode, payload=b"", fin=True):
    """A masked client frame; the mask key is zero, so the payload is sent as is."""
    head = bytes([(0x80 if fin else 0) | opcode])
    n = len(payload)
    if n < 126:
        head += bytes([0x80 | n])
    elif n < 1 << 16:
        head += bytes([0x80 | 126]) + struct.pack(">H", n)
    else:
        head += bytes([0x80 | 127]) + struct.pack(">Q", n)
    return head + b"\0\0\0\0" + payload


async def raw_connect(host, port, upgrade=True):
    reader, writer = await asyncio.open_connection(host, port)
    if upgrade:
        key = base64.b64encode(os.urandom(16)).decode()
        writer.write((f"GET /ws HTTP/1.1\r\nHost: {host}:{port}\r\nUpgrade: websocket\r\n"
                      f"Connection: Upgrade\r\nSec-WebSocket-Key: {key}\r\n"
                      f"Sec-WebSocket-Version: 13\r\n\r\n").encode())
        await writer.drain()
        head = await asyncio.wait_for(reader.readuntil(b"\r\n\r\n"), 10)
        if b" 101 " not in head.split(b"\r\n", 1)[0]:
            writer.close()
            raise ConnectionError(head.split(b"\r\n", 1)[0].decode(errors="replace"))
    return reader, writer


def text(obj):
    return frame(0x1, json.dumps(obj).encode())


class Stats:
    def __init__(self):
        self.counts = {}

    def add(self, key, n=1):
        self.counts[key] = self.counts.get(key, 0) + n


async def attacker(name, stats, deadline, host, port, body):
    """Runs `body(reader, writer)` until the deadline, reconnecting when the
    server closes the connection."""
    while time.monotonic() < deadline:
        writer = None
        try:
            reader, writer = await raw_connect(host, port)
            stats.add(f"{name}_connections")
            await body(reader, writer)
        except asyncio.CancelledError:
            raise
        except Exception:
            stats.add(f"{name}_disconnects")
            await asyncio.sleep(0.2)
        finally:
            if writer is not None:
                writer.close()


async def paced(deadline, per_second, step):
    """Calls `step(i)` `per_second` times a second until the deadline."""
    start = time.monotonic()
    i = 0
    while time.monotonic() < deadline:
        await step(i)
        i += 1
        delay = start + i / per_second - time.monotonic()
        if delay > 0:
            await asyncio.sleep(delay)


# --- the attacks ------------------------------------------------------------

def ping_flood(stats, deadline):                                     # 1
    batch = frame(0x9, b"p" * 125) * 512

    async def body(reader, writer):
        while time.monotonic() < deadline:
            writer.write(batch)
            await writer.drain()
            stats.add("1_ping_frames", 512)
            await asyncio.sleep(0)  # let the other attacks run
    return body


def history_flood(stats, deadline, who):                             # 2
    data = "h" * MB
    publishes = {}  # room -> its publish frame, built once

    async def body(reader, writer):
        rooms = []
        last_new = 0.0

        async def step(i):
            nonlocal last_new
            if time.monotonic() - last_new >= 1 and len(rooms) < 200:
                last_new = time.monotonic()
                room = f"flood-{who}-{len(rooms)}"
                rooms.append(room)
                writer.write(text({"type": "room:join", "payload": {"room": room}}))
                if room not in publishes:
                    publishes[room] = text({"type": "room:publish", "payload": {"room": room, "data": data}})
            writer.write(publishes[rooms[i % len(rooms)]])
            await writer.drain()
            stats.add("2_publishes")
        await paced(deadline, RATE, step)
    return body


def replay_copies(stats, deadline):                                  # 3
    async def body(reader, writer):
        async def step(i):
            room = f"flood-{i % 4}-0"
            for _ in range(2):
                writer.write(text({"type": "room:join", "id": f"j{i}", "payload": {"room": room, "since": 0}}))
            writer.write(text({"type": "room:leave", "payload": {"room": room}}))
            await writer.drain()
            stats.add("3_rejoins", 2)
        await paced(deadline, 2, step)
    return body


def big_replies(stats, deadline, kind):                              # 4
    payload = "r" * MB
    if kind == "ping":
        msg = {"type": "ping", "id": "p", "payload": payload}
    elif kind == "echo":
        msg = {"type": "room:publish", "id": "e", "payload": {"room": "echo-room", "data": payload, "echo": True}}
    else:
        msg = {"type": "presence:get", "id": "g", "payload": {"room": "big"}}
    request = text(msg)

    async def body(reader, writer):
        if kind == "echo":
            writer.write(text({"type": "room:join", "payload": {"room": "echo-room"}}))

        async def step(i):
            writer.write(request)
            await writer.drain()
            stats.add(f"4_{kind}_requests")
        await paced(deadline, RATE, step)
    return body


def amplification(stats, deadline):                                  # 6
    items = []
    size = 0
    while size < 1_040_000:
        items.append('{"a":[0,1]}')
        size += 12
    envelope = ('{"type":"room:publish","payload":{"room":"amp","data":[' + ",".join(items)
                + ']},"id":"x"}').encode()
    one = frame(0x1, envelope)

    async def body(reader, writer):
        while time.monotonic() < deadline:
            writer.write(one)
            await writer.drain()
            stats.add("6_envelopes")
            await asyncio.sleep(0)
    return body


def continuations(stats, deadline):                                  # 7
    batch = frame(0x0, b"", fin=False) * 8192

    async def body(reader, writer):
        writer.write(frame(0x1, b"{", fin=False))
        while time.monotonic() < deadline:
            writer.write(batch)
            await writer.drain()
            stats.add("7_empty_frames", 8192)
            await asyncio.sleep(0)
    return body


async def idle_tcp(stats, deadline, host, port, n):                  # 5
    held = []

    async def one():
        try:
            held.append(await raw_connect(host, port, upgrade=False))
            stats.add("5_idle_sockets")
        except OSError:
            stats.add("5_connect_failures")
    try:
        for i in range(0, n, 100):
            if time.monotonic() >= deadline:
                break
            await asyncio.gather(*(one() for _ in range(min(100, n - i))))
        await asyncio.sleep(max(0.0, deadline - time.monotonic()))
    finally:
        for _, w in held:
            w.close()


async def big_room_members(stats, host, port, n, ready):
    """n raw connections in room `big` that never read (presence:get's target)."""
    held = []
    for _ in range(n):
        try:
            r, w = await raw_connect(host, port)
            w.write(text({"type": "room:join", "payload": {"room": "big"}}))
            await w.drain()
            held.append((r, w))
        except OSError:
            stats.add("4_member_connect_failures")
    ready.set()
    try:
        await asyncio.Event().wait()
    finally:
        for _, w in held:
            w.close()


# --- the honest client -------------------------------------------------------

# The honest client connects from another loopback address than the attackers
# (as a real one would): the per-IP bounds (handshake slots, connection caps)
# are what keep an attacker's address from locking out everyone else.
HONEST_ADDR = "127.0.0.2"


async def honest(url, deadline, lat, stats):
    async with websockets.connect(url, max_size=None, ping_interval=None, local_addr=(HONEST_ADDR, 0)) as ws:
        json.loads(await ws.recv())  # connected
        await ws.send(json.dumps({"type": "room:join", "id": "j", "payload": {"room": "honest"}}))
        while True:
            reply = json.loads(await asyncio.wait_for(ws.recv(), 5))
            if reply.get("id") == "j":
                break
        i = 0
        while time.monotonic() < deadline:
            i += 1
            msg_id = f"h{i}"
            sent = time.monotonic()
            await ws.send(json.dumps({"type": "room:publish", "id": msg_id,
                                      "payload": {"room": "honest", "data": {"n": i, "text": "hello"}}}))
            stats.add("honest_sent")
            try:
                while True:
                    reply = json.loads(await asyncio.wait_for(ws.recv(), max(0.1, sent + 5 - time.monotonic())))
                    if reply.get("id") == msg_id:
                        break
            except asyncio.TimeoutError:
                stats.add("honest_refused")
                stats.add("honest_slow_acks")
                continue
            if reply.get("type") == "ack":
                lat.append((time.monotonic() - sent) * 1000)
            else:
                stats.add("honest_refused")
                stats.add(f"honest_error_{reply.get('payload', {}).get('code')}")
            await asyncio.sleep(max(0.0, sent + 0.05 - time.monotonic()))


async def honest_reconnects(url, deadline, stats):
    while time.monotonic() < deadline:
        try:
            async with websockets.connect(url, open_timeout=5, ping_interval=None,
                                          local_addr=(HONEST_ADDR, 0)) as ws:
                first = json.loads(await asyncio.wait_for(ws.recv(), 5))
                stats.add("honest_reconnects" if first.get("type") == "connected" else "honest_refused")
        except Exception:
            stats.add("honest_refused")
            stats.add("honest_failed_reconnects")
        await asyncio.sleep(2)


def honest_process(url, secs, out):
    """The honest client in a process of its own, so that the attackers' work
    in this one does not show up in its latency."""
    async def go():
        stats = Stats()
        lat = []
        deadline = time.monotonic() + secs
        reconnects = asyncio.create_task(honest_reconnects(url, deadline, stats))
        try:
            await honest(url, deadline, lat, stats)
        except Exception as e:  # the honest connection itself was refused or dropped
            stats.add("honest_refused")
            stats.add(f"honest_lost: {type(e).__name__}")
        await reconnects
        return lat, stats.counts
    out.put(asyncio.run(go()))


# --- main ----------------------------------------------------------------------

async def run(args, host, port, pid):
    url = f"ws://{host}:{port}/ws"
    stats = Stats()
    samples = []

    tasks = []
    aborted = []

    async def sample(until):
        while time.monotonic() < until:
            kb = rss_kb(pid)
            samples.append((time.monotonic(), kb))
            if kb > args.max_rss_mb * 1024 and not aborted:
                # Keep the machine alive: end the attacks now (the JSON says when).
                aborted.append(round(time.monotonic() - start, 1))
                for t in tasks:
                    t.cancel()
            await asyncio.sleep(0.2)

    baseline = rss_kb(pid)
    ready = asyncio.Event()
    members = asyncio.create_task(big_room_members(stats, host, port, args.big_room, ready))
    await ready.wait()
    start = time.monotonic()
    deadline = start + args.secs
    sampler = asyncio.create_task(sample(deadline + 10.5))
    results = multiprocessing.Queue()
    honest_proc = multiprocessing.Process(target=honest_process, args=(url, args.secs, results))
    honest_proc.start()

    def attack(name, body, n=1):
        return [asyncio.create_task(attacker(name, stats, deadline, host, port, body)) for _ in range(n)]

    tasks += attack("1", ping_flood(stats, deadline), 2)
    for who in range(4):
        tasks += attack("2", history_flood(stats, deadline, who))
    tasks += attack("3", replay_copies(stats, deadline), 4)
    for kind in ("ping", "echo", "presence"):
        tasks += attack("4", big_replies(stats, deadline, kind))
    tasks.append(asyncio.create_task(idle_tcp(stats, deadline, host, port, args.idle_sockets)))
    tasks += attack("6", amplification(stats, deadline), 4)
    tasks += attack("7", continuations(stats, deadline), 2)

    while time.monotonic() < deadline and not aborted:
        await asyncio.sleep(0.1)
    for t in tasks + [members]:
        t.cancel()
    await asyncio.gather(*tasks, members, return_exceptions=True)
    ended = time.monotonic()
    lat, honest_counts = await asyncio.get_running_loop().run_in_executor(None, results.get)
    honest_proc.join()
    for k, v in honest_counts.items():
        stats.add(k, v)
    await asyncio.sleep(max(0.0, ended + 10.3 - time.monotonic()))
    sampler.cancel()
    during = [kb for t, kb in samples if t <= ended]
    after = [kb for t, kb in samples if t >= ended + 10]
    rss_after = after[0] if after else rss_kb(pid)
    metrics = scrape(host, port, ["wshub_dropped_total", "wshub_history_bytes", "wshub_memory_trims_total",
                                  "wshub_disconnects_total", "wshub_connections "])
    lat.sort()
    pct = lambda p: lat[min(len(lat) - 1, int(p / 100 * len(lat)))] if lat else None
    return {
        "secs": args.secs,
        "baseline_rss_mb": round(baseline / 1024, 1),
        "peak_rss_mb": round(max(during, default=0) / 1024, 1),
        "rss_10s_after_mb": round(rss_after / 1024, 1),
        "honest_acked": len(lat),
        "honest_p50_ms": round(pct(50), 2) if lat else None,
        "honest_p99_ms": round(pct(99), 2) if lat else None,
        "honest_max_ms": round(lat[-1], 2) if lat else None,
        "honest_refused": stats.counts.get("honest_refused", 0),
        "aborted_at_s": aborted[0] if aborted else None,
        "counts": stats.counts,
        "metrics_10s_after": metrics,
    }


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--wshub", default="target/release/wshub", help="the wshub binary")
    ap.add_argument("--secs", type=float, default=60, help="how long the attacks last")
    ap.add_argument("--idle-sockets", type=int, default=2000, help="attack 5's idle TCP connections")
    ap.add_argument("--big-room", type=int, default=300, help="members of the room presence:get asks for")
    ap.add_argument("--max-rss-mb", type=float, default=8192,
                    help="end the attacks early if the server's RSS passes this (protects the machine)")
    ap.add_argument("extra", nargs="*", help="arguments for wshub (after --)")
    args = ap.parse_args()
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))
    proc, host, port = start_server(args.wshub, args.extra)
    try:
        result = asyncio.run(run(args, host, port, proc.pid))
    finally:
        proc.send_signal(signal.SIGTERM)
        try:
            code = proc.wait(timeout=30)
        except subprocess.TimeoutExpired:
            proc.kill()
            code = proc.wait()
    result["exit_code"] = code
    result["server_args"] = args.extra
    print(f"attacks 1-7 at once for {args.secs:g} s against wshub {' '.join(args.extra) or '(defaults)'}")
    print(f"server RSS: baseline {result['baseline_rss_mb']} MB, peak {result['peak_rss_mb']} MB, "
          f"10 s after the attacks {result['rss_10s_after_mb']} MB")
    print(f"honest client: {result['honest_acked']} acked, p50 {result['honest_p50_ms']} ms, "
          f"p99 {result['honest_p99_ms']} ms, max {result['honest_max_ms']} ms, "
          f"refused {result['honest_refused']}")
    print("server metrics 10 s after: " + ", ".join(f"{k} {v:g}" for k, v in result["metrics_10s_after"].items()
                                                    if isinstance(v, float)))
    print("counts: " + ", ".join(f"{k} {v}" for k, v in sorted(result["counts"].items())))
    if result["aborted_at_s"] is not None:
        print(f"attacks ended early, at {result['aborted_at_s']} s: server RSS passed {args.max_rss_mb} MB")
    print(f"server exit code {code}")
    print(json.dumps({"scenario": "abuse", **result}))


if __name__ == "__main__":
    main()
