#!/usr/bin/env python3
"""Checks that a server speaks the wshub protocol subset the benchmarks use,
so wshub and its comparison peers (benches/peers/*) are known to do the same
work before they are measured:

    python3 benches/peers/check.py ws://127.0.0.1:PORT/ws

- the first frame is `connected` with clientId, protocol 1, heartbeatMs and
  maxMessageBytes;
- `room:join` is acked with {room, seq: 0, members} (members counts the joiner);
- `room:publish` by A reaches B (not A) as `room:message` {room, seq, from, data}
  with seq 1, 2, 3, ... and from = A's clientId, and A's ack carries the same seq;
- with `echo: true` A gets its own message before the ack;
- `ping` is acked with its payload echoed;
- malformed JSON, an unknown type and a publish to a room not joined get
  `error` {code, message} (bad_request / unknown_type / forbidden), with the
  `id` when it could be read, and the connection lives on.

Exit 0 when all pass, 1 on the first failure. Needs `pip install websockets`.
"""
import asyncio
import json
import sys
import uuid

try:
    import websockets
except ImportError:  # pragma: no cover
    sys.exit("check.py needs the websockets package: pip install websockets")

TIMEOUT = 5


class Fail(Exception):
    pass


def expect(cond, what):
    if not cond:
        raise Fail(what)


async def recv(ws, skip=("presence:join", "presence:leave", "typing")):
    """The next frame, skipping events this check does not look at (wshub
    sends presence events; the Node peer does not)."""
    while True:
        text = await asyncio.wait_for(ws.recv(), TIMEOUT)
        expect(isinstance(text, str), f"expected a text frame, got {text!r}")
        msg = json.loads(text)
        expect(isinstance(msg, dict), f"frame is not an object: {text}")
        expect(isinstance(msg.get("ts"), int) and msg["ts"] > 1_600_000_000_000, f"no ms ts: {text}")
        if msg.get("type") not in skip:
            return msg


async def request(ws, id_, type_, payload):
    await ws.send(json.dumps({"type": type_, "id": id_, "payload": payload}))


async def connected(url):
    ws = await websockets.connect(url, max_size=2**21, open_timeout=TIMEOUT)
    hello = await recv(ws)
    expect(hello.get("type") == "connected", f"first frame is not connected: {hello}")
    p = hello.get("payload") or {}
    expect(isinstance(p.get("clientId"), str) and p["clientId"], f"no clientId: {hello}")
    expect(p.get("protocol") == 1, f"protocol is not 1: {hello}")
    expect(p.get("heartbeatMs") == 30000, f"heartbeatMs is not 30000: {hello}")
    expect(p.get("maxMessageBytes") == 1048576, f"maxMessageBytes is not 1048576: {hello}")
    return ws, p["clientId"]


async def check(url):
    room = f"check-{uuid.uuid4().hex[:8]}"
    a, a_id = await connected(url)
    b, b_id = await connected(url)
    expect(a_id != b_id, f"two connections share clientId {a_id}")
    print(f"ok connected: clientIds {a_id}, {b_id}")

    await request(a, "a1", "room:join", {"room": room})
    ack = await recv(a)
    expect(ack.get("type") == "ack" and ack.get("id") == "a1", f"join not acked: {ack}")
    expect(ack["payload"].get("room") == room, f"join ack room: {ack}")
    expect(ack["payload"].get("seq") == 0, f"join ack seq of a new room is not 0: {ack}")
    expect(ack["payload"].get("members") == 1, f"join ack members is not 1: {ack}")
    await request(b, "b1", "room:join", {"room": room})
    ack = await recv(b)
    expect(ack.get("type") == "ack" and ack.get("id") == "b1", f"join not acked: {ack}")
    expect(ack["payload"].get("members") == 2, f"second join ack members is not 2: {ack}")
    print("ok room:join acked with {room, seq: 0, members}")

    for seq in (1, 2, 3):
        data = {"n": seq, "text": "héllo", "list": [1, None, True]}
        await request(a, f"p{seq}", "room:publish", {"room": room, "data": data})
        ack = await recv(a)
        expect(ack.get("type") == "ack" and ack.get("id") == f"p{seq}", f"publish not acked: {ack}")
        expect(ack["payload"] == {"room": room, "seq": seq}, f"publish ack is not {{room, seq: {seq}}}: {ack}")
        msg = await recv(b)
        expect(msg.get("type") == "room:message", f"B got no room:message: {msg}")
        expect("id" not in msg, f"room:message carries an id: {msg}")
        p = msg["payload"]
        expect(p.get("room") == room and p.get("seq") == seq, f"room:message room/seq, wanted {seq}: {msg}")
        expect(p.get("from") == a_id, f"room:message from is not A ({a_id}): {msg}")
        expect(p.get("data") == data, f"room:message data changed: {msg}")
    print("ok room:publish: B got seq 1,2,3 from A, A's acks carry the seq, A got no copy")

    await request(a, "p4", "room:publish", {"room": room, "data": "e", "echo": True})
    mine = await recv(a)
    expect(mine.get("type") == "room:message" and mine["payload"].get("seq") == 4, f"no echo first: {mine}")
    ack = await recv(a)
    expect(ack.get("type") == "ack" and ack["payload"].get("seq") == 4, f"echo publish ack: {ack}")
    msg = await recv(b)
    expect(msg["payload"].get("seq") == 4, f"B missed seq 4: {msg}")
    print("ok echo: true sends the sender its copy before the ack")

    ping = {"t": 123, "s": "x", "nested": [1, {"k": None}]}
    await request(a, "ping1", "ping", ping)
    ack = await recv(a)
    expect(ack.get("type") == "ack" and ack.get("id") == "ping1", f"ping not acked: {ack}")
    expect(ack.get("payload") == ping, f"ping ack does not echo the payload: {ack}")
    print("ok ping acked with its payload")

    await a.send("{oops")
    err = await recv(a)
    expect(err.get("type") == "error" and err["payload"].get("code") == "bad_request", f"malformed: {err}")
    expect(isinstance(err["payload"].get("message"), str), f"error without message: {err}")
    await request(a, "u1", "no:such:type", {})
    err = await recv(a)
    expect(err.get("type") == "error" and err.get("id") == "u1", f"unknown type: {err}")
    expect(err["payload"].get("code") == "unknown_type", f"unknown type code: {err}")
    await request(a, "f1", "room:publish", {"room": room + "-not-joined", "data": 1})
    err = await recv(a)
    expect(err.get("type") == "error" and err.get("id") == "f1", f"publish unjoined: {err}")
    expect(err["payload"].get("code") == "forbidden", f"publish unjoined code: {err}")
    await request(a, "ping2", "ping", None)
    ack = await recv(a)
    expect(ack.get("type") == "ack" and ack.get("id") == "ping2", f"connection dead after errors: {ack}")
    print("ok errors: bad_request, unknown_type, forbidden; the connection lives on")

    # B publishes too: the room's seq is shared by all publishers.
    await request(b, "b2", "room:publish", {"room": room, "data": "from b"})
    ack = await recv(b)
    expect(ack.get("type") == "ack" and ack["payload"].get("seq") == 5, f"B's publish seq is not 5: {ack}")
    msg = await recv(a)
    expect(msg["payload"].get("seq") == 5 and msg["payload"].get("from") == b_id, f"A missed B's: {msg}")
    print("ok seq is per room across publishers")

    await a.close()
    await b.close()


def main():
    if len(sys.argv) != 2 or not sys.argv[1].startswith("ws"):
        sys.exit("usage: check.py ws://HOST:PORT/ws")
    url = sys.argv[1]
    try:
        asyncio.run(check(url))
    except Fail as e:
        print(f"FAIL {url}: {e}")
        sys.exit(1)
    except asyncio.TimeoutError:
        print(f"FAIL {url}: no expected frame within {TIMEOUT} s")
        sys.exit(1)
    except (OSError, websockets.exceptions.WebSocketException) as e:
        print(f"FAIL {url}: {type(e).__name__}: {e}")
        sys.exit(1)
    print(f"PASS {url}")


if __name__ == "__main__":
    main()
