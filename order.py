import asyncio, sys, json, websockets
async def main(port):
    bad = 0
    async with websockets.connect(f"ws://127.0.0.1:{port}/ws", subprotocols=["wshub.v1.json"], max_size=None) as ws:
        print("ext:", ws.response.headers.get("Sec-WebSocket-Extensions"))
        await ws.recv()
        await ws.send(json.dumps({"type":"room:join","id":"j","payload":{"room":"r"}})); await ws.recv()
        for i in range(400):
            big = "z"*(i*37 % 3000)
            await ws.send(json.dumps({"type":"room:publish","id":str(i),"payload":{"room":"r","data":big,"echo":True}}))
            await ws.send(json.dumps({"type":"ping","id":"p%d"%i,"payload":big}))
            got = [json.loads(await ws.recv()) for _ in range(3)]
            kinds = [(g["type"], g.get("id")) for g in got]
            if kinds != [("room:message", None), ("ack", str(i)), ("ack", "p%d"%i)]:
                bad += 1
                if bad < 4: print(i, kinds)
    print("bad", bad)
asyncio.run(main(int(sys.argv[1])))
