"""A scripted protocol v1 session with Python `websockets`, a client nobody
here wrote, against the real wshub binary.

Usage: python3 interop_python_websockets.py HOST:PORT [CAFILE]
With CAFILE the session runs over wss:// (TLS), trusting that CA.
Exits 0 and prints "interop ok" when every step behaved as docs/protocol.md says.
"""
import asyncio
import json
import struct
import sys

import websockets

TIMEOUT = 10


async def recv_json(ws):
    frame = await asyncio.wait_for(ws.recv(), TIMEOUT)
    assert isinstance(frame, str), f"expected text, got {frame!r}"
    return json.loads(frame)


async def request(ws, kind, payload, rid):
    await ws.send(json.dumps({"type": kind, "id": rid, "payload": payload}))
    reply = await recv_json(ws)
    assert reply["id"] == rid, reply
    return reply


async def ok(ws, kind, payload, rid):
    reply = await request(ws, kind, payload, rid)
    assert reply["type"] == "ack", reply
    return reply["payload"]


async def main(addr, cafile=None):
    url = f"ws://{addr}/ws"
    tls = {}
    if cafile:
        import ssl
        url = f"wss://localhost:{addr.rsplit(':', 1)[1]}/ws"
        tls = {"ssl": ssl.create_default_context(cafile=cafile)}
    async with websockets.connect(url, subprotocols=["wshub.v1.json"], **tls) as alice, \
            websockets.connect(url, subprotocols=["wshub.v1.bin", "wshub.v1.json"], **tls) as bob:
        assert alice.subprotocol == "wshub.v1.json", alice.subprotocol
        assert bob.subprotocol == "wshub.v1.bin", bob.subprotocol
        hello_a = await recv_json(alice)
        hello_b = await recv_json(bob)
        assert hello_a["type"] == "connected" and hello_a["payload"]["protocol"] == 1, hello_a
        bob_id = hello_b["payload"]["clientId"]

        joined = await ok(alice, "room:join", {"room": "py"}, "a1")
        assert joined["seq"] == 0 and joined["members"] == 1, joined
        epoch = joined["epoch"]
        await ok(bob, "room:join", {"room": "py"}, "b1")
        presence = await recv_json(alice)
        assert presence["type"] == "presence:join" and presence["payload"]["clientId"] == bob_id, presence

        ack = await ok(bob, "room:publish", {"room": "py", "data": {"text": "hello from python"}}, "b2")
        assert ack == {"room": "py", "seq": 1}, ack
        msg = await recv_json(alice)
        assert msg["type"] == "room:message", msg
        assert msg["payload"] == {"room": "py", "seq": 1, "from": bob_id, "data": {"text": "hello from python"}}, msg

        room = b"py"
        await bob.send(bytes([1]) + struct.pack(">H", len(room)) + room + b"\x00bytes")
        binary = await asyncio.wait_for(alice.recv(), TIMEOUT)
        assert binary == bytes([2]) + struct.pack(">H", 2) + room + struct.pack(">Q", 2) + b"\x00bytes", binary

        await ok(bob, "typing:start", {"room": "py"}, "b3")
        typing = await recv_json(alice)
        assert typing["payload"] == {"room": "py", "clientId": bob_id, "active": True}, typing

        members = (await ok(alice, "presence:get", {"room": "py"}, "a2"))["members"]
        assert sorted(m["clientId"] for m in members) == sorted([hello_a["payload"]["clientId"], bob_id]), members

        await alice.send("{not json")
        err = await recv_json(alice)
        assert err["type"] == "error" and err["payload"]["code"] == "bad_request", err
        err = await request(alice, "no:such", {}, "a3")
        assert err["type"] == "error" and err["payload"]["code"] == "unknown_type", err
        assert await ok(alice, "ping", {"t": 1}, "a4") == {"t": 1}

        # Alice drops; Bob publishes 3; Alice comes back and recovers them.
        await alice.close()
        left = await recv_json(bob)
        assert left["type"] == "presence:leave", left
        for i in range(3):
            await ok(bob, "room:publish", {"room": "py", "data": i}, f"m{i}")

    async with websockets.connect(url, **tls) as alice2:
        assert (await recv_json(alice2))["type"] == "connected"
        await alice2.send(json.dumps({"type": "room:join", "id": "r1",
                                      "payload": {"room": "py", "since": 2, "epoch": epoch}}))
        seqs = []
        for _ in range(3):
            m = await recv_json(alice2)
            assert m["type"] == "room:message", m
            seqs.append((m["payload"]["seq"], m["payload"]["data"]))
        assert seqs == [(3, 0), (4, 1), (5, 2)], seqs
        ack = await recv_json(alice2)
        assert ack["type"] == "ack" and ack["payload"]["recovered"] is True, ack
    print("interop ok")


if __name__ == "__main__":
    asyncio.run(asyncio.wait_for(main(*sys.argv[1:3]), 60))
