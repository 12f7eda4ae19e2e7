#!/usr/bin/env python3
"""Soak test (not run in CI): N clients join, leave, publish and reconnect at
random against a running wshub for a long time, while the server's RSS,
threads and fds are tabled from /proc.

    cargo build --release
    ./target/release/wshub --bind 127.0.0.1:9001 --log-level warn --max-handshakes-per-ip 1024 &
    python3 benches/soak.py --pid $! --url ws://127.0.0.1:9001/ws --clients 2000 --minutes 30

What it checks, and fails (exit 1) on:
- no acked message is lost: every client keeps, per room, the last seq it saw
  and rejoins with `since`; every room:message it then gets must continue its
  sequence with no gap (a gap while history still reaches back is a loss; a
  join answered `recovered: false` is counted separately and must not happen
  while history covers the outage);
- every request with an id gets exactly one reply (ack or error), and no
  error other than rate_limited appears;
- no resource grows without bound: RSS, threads and fds at the end are within
  what the connection count explains.

Needs `pip install websockets`. Prints a table every --every seconds and a
JSON line at the end.
"""
import argparse, asyncio, json, os, random, time

import websockets

ROOMS = [f"soak-{i}" for i in range(100)]


def proc_stats(pid):
    rss_kb = 0
    with open(f"/proc/{pid}/status") as f:
        for line in f:
            if line.startswith("VmRSS:"):
                rss_kb = int(line.split()[1])
    return {
        "rss_mb": round(rss_kb / 1024, 1),
        "threads": len(os.listdir(f"/proc/{pid}/task")),
        "fds": len(os.listdir(f"/proc/{pid}/fd")),
    }


class Totals:
    def __init__(self):
        self.published = self.acked = self.delivered = self.replayed = 0
        self.gaps = self.unrecovered = self.errors = self.rate_limited = 0
        self.reconnects = self.joins = self.leaves = self.unanswered = 0
        self.failures = []

    def fail(self, what):
        if len(self.failures) < 20:
            self.failures.append(what)


class Client:
    def __init__(self, n, url, totals, rng):
        self.n, self.url, self.t, self.rng = n, url, totals, rng
        self.last_seq = {}      # room -> last seq seen (kept across leave and reconnect)
        self.epoch = {}         # room -> epoch of the last join ack
        self.joined = set()
        self.left_at = {}       # room -> when this client last left it
        self.pending = {}       # id -> (type, room, future)
        self.next_id = 0
        self.ws = None

    def request(self, type_, payload):
        self.next_id += 1
        rid = f"c{self.n}-{self.next_id}"
        fut = asyncio.get_running_loop().create_future()
        self.pending[rid] = (type_, payload, fut)
        return rid, fut, json.dumps({"type": type_, "id": rid, "payload": payload})

    async def call(self, type_, payload, timeout=30):
        rid, fut, text = self.request(type_, payload)
        await self.ws.send(text)
        try:
            return await asyncio.wait_for(fut, timeout)
        except asyncio.TimeoutError:
            self.t.unanswered += 1
            self.t.fail(f"client {self.n}: no reply to {type_} {rid}")
            self.pending.pop(rid, None)
            return None

    def on_message(self, room, seq):
        last = self.last_seq.get(room)
        if last is not None and seq != last + 1:
            if seq <= last:
                self.t.fail(f"client {self.n}: {room} seq {seq} after {last} (duplicate/out of order)")
            else:
                self.t.gaps += 1
                self.t.fail(f"client {self.n}: {room} gap {last} -> {seq}")
        self.last_seq[room] = max(seq, last or 0)

    async def reader(self):
        async for raw in self.ws:
            if isinstance(raw, bytes):
                continue
            msg = json.loads(raw)
            typ, p = msg.get("type"), msg.get("payload") or {}
            if typ == "room:message":
                self.t.delivered += 1
                self.on_message(p["room"], p["seq"])
            elif typ in ("ack", "error"):
                entry = self.pending.pop(msg.get("id"), None)
                if entry is None:
                    self.t.fail(f"client {self.n}: reply to unknown id {msg.get('id')}")
                    continue
                if typ == "ack" and entry[0] == "room:join":
                    self.on_join_ack(entry[1], p)
                if typ == "error":
                    if p.get("code") == "rate_limited":
                        self.t.rate_limited += 1
                    else:
                        self.t.errors += 1
                        self.t.fail(f"client {self.n}: error {p} for {entry[0]}")
                if not entry[2].done():
                    entry[2].set_result(msg)

    async def connect(self):
        self.ws = await websockets.connect(self.url, ping_interval=None, max_queue=None,
                                           open_timeout=60, close_timeout=5)
        first = json.loads(await self.ws.recv())
        if first.get("type") != "connected":
            self.t.fail(f"client {self.n}: first frame {first}")
        self.reader_task = asyncio.ensure_future(self.reader())
        for room in list(self.joined):
            await self.join(room)

    async def join(self, room):
        # History keeps 5 minutes (or 1000 messages): a room left long ago may
        # rightly answer recovered: false, so only recent absences use `since`.
        if room not in self.joined and time.monotonic() - self.left_at.get(room, 0) > 120:
            self.last_seq.pop(room, None)
        payload = {"room": room}
        if room in self.last_seq:
            payload["since"] = self.last_seq[room]
        reply = await self.call("room:join", payload)
        if reply and reply["type"] == "ack":
            self.t.joins += 1
            self.joined.add(room)

    def on_join_ack(self, payload, ack):
        """Join bookkeeping, done by the reader the moment the ack is read:
        live messages that follow the ack must see it already applied."""
        room = payload["room"]
        if "since" in payload and ack.get("recovered") is False:
            if self.epoch.get(room) == ack.get("epoch"):
                self.t.unrecovered += 1
                self.t.fail(f"client {self.n}: {room} not recovered from {payload['since']}")
            self.last_seq[room] = ack["seq"]
        elif "since" not in payload:
            self.last_seq[room] = ack["seq"]
        self.epoch[room] = ack.get("epoch")

    async def act(self):
        r = self.rng.random()
        if r < 0.45 and self.joined:
            room = self.rng.choice(sorted(self.joined))
            self.t.published += 1
            # echo: the publisher sees its own message in sequence, so every
            # member's stream (the publisher's included) must be gap-free.
            reply = await self.call("room:publish", {"room": room, "data": {"n": self.n, "at": time.time()}, "echo": True})
            if reply and reply["type"] == "ack":
                self.t.acked += 1
        elif r < 0.65 and len(self.joined) < 4:
            # Only rooms it is not in: a join is idempotent, and `since` on a
            # room it is already in would replay what is live on the wire
            # already (the server cannot know what the client has read).
            await self.join(self.rng.choice([r for r in ROOMS if r not in self.joined]))
        elif r < 0.75 and self.joined:
            room = self.rng.choice(sorted(self.joined))
            reply = await self.call("room:leave", {"room": room})
            if reply and reply["type"] == "ack":
                self.joined.discard(room)
                self.left_at[room] = time.monotonic()
                self.t.leaves += 1
        elif r < 0.80 and self.joined:
            await self.call("presence:get", {"room": self.rng.choice(sorted(self.joined))})
        elif r < 0.85 and self.joined:
            await self.ws.send(json.dumps({"type": "typing:start", "payload": {"room": self.rng.choice(sorted(self.joined))}}))
        elif r < 0.90:
            await self.call("ping", {"t": time.time()})
        else:
            # Drop the connection and come back, rejoining with `since`.
            await self.ws.close()
            self.reader_task.cancel()
            for _, _, fut in self.pending.values():
                fut.cancel()
            self.pending.clear()
            await asyncio.sleep(self.rng.uniform(0.1, 2.0))
            self.t.reconnects += 1
            await self.connect()

    async def run(self, until, pace):
        await self.connect()
        while time.monotonic() < until:
            await asyncio.sleep(self.rng.expovariate(1.0 / pace))
            try:
                await self.act()
            except (websockets.ConnectionClosed, OSError) as e:
                self.t.fail(f"client {self.n}: connection lost: {e!r}")
                await asyncio.sleep(1)
                await self.connect()
        await self.ws.close()


async def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--pid", type=int, required=True)
    ap.add_argument("--url", default="ws://127.0.0.1:9001/ws")
    ap.add_argument("--clients", type=int, default=2000)
    ap.add_argument("--minutes", type=float, default=30)
    ap.add_argument("--pace", type=float, default=5.0, help="mean seconds between a client's actions")
    ap.add_argument("--every", type=float, default=60.0, help="seconds between table rows")
    ap.add_argument("--seed", type=int, default=1)
    args = ap.parse_args()

    t = Totals()
    start = time.monotonic()
    until = start + args.minutes * 60
    base = proc_stats(args.pid)
    print(f"{'min':>5} {'rss_mb':>7} {'threads':>7} {'fds':>6} {'published':>9} {'acked':>8} "
          f"{'delivered':>9} {'reconn':>6} {'gaps':>4} {'errors':>6}", flush=True)

    def row():
        s = proc_stats(args.pid)
        print(f"{(time.monotonic() - start) / 60:5.1f} {s['rss_mb']:7.1f} {s['threads']:7d} {s['fds']:6d} "
              f"{t.published:9d} {t.acked:8d} {t.delivered:9d} {t.reconnects:6d} {t.gaps:4d} {t.errors:6d}",
              flush=True)
        return s

    row()
    clients = [Client(i, args.url, t, random.Random(args.seed * 100003 + i)) for i in range(args.clients)]
    tasks = []
    for i, c in enumerate(clients):
        tasks.append(asyncio.ensure_future(c.run(until, args.pace)))
        if i % 100 == 99:
            await asyncio.sleep(0.2)  # ramp up
    samples = []
    while not all(x.done() for x in tasks):
        await asyncio.sleep(min(args.every, max(0.1, until - time.monotonic() + 1)))
        samples.append(row())
    for x in tasks:
        if x.exception():
            t.fail(f"client task failed: {x.exception()!r}")
    await asyncio.sleep(2)
    end = row()
    ok = not (t.gaps or t.unrecovered or t.errors or t.unanswered or t.failures)
    peak = max(samples, key=lambda s: s["rss_mb"]) if samples else end
    summary = {"scenario": "soak", "clients": args.clients, "minutes": args.minutes, "ok": ok,
               "published": t.published, "acked": t.acked, "delivered": t.delivered,
               "joins": t.joins, "leaves": t.leaves, "reconnects": t.reconnects,
               "gaps": t.gaps, "unrecovered": t.unrecovered, "errors": t.errors,
               "rate_limited": t.rate_limited, "unanswered": t.unanswered,
               "server_before": base, "server_peak": peak, "server_after": end,
               "failures": t.failures}
    print(json.dumps(summary))
    raise SystemExit(0 if ok else 1)


asyncio.run(main())
