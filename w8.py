import asyncio, sys, websockets
from websockets.extensions.permessage_deflate import ClientPerMessageDeflateFactory
async def main(port, bits):
    async with websockets.connect(f"ws://127.0.0.1:{port}/ws", subprotocols=["wshub.v1.json"],
            extensions=[ClientPerMessageDeflateFactory(server_no_context_takeover=True, client_no_context_takeover=True, server_max_window_bits=bits)]) as ws:
        print("ext:", ws.response.headers.get("Sec-WebSocket-Extensions"))
        await ws.recv()
        for n in (100, 200, 250, 3000):
            await ws.send('{"type":"ping","id":"a","payload":"' + "xy"*(n//2) + '"}')
            r = await ws.recv(); print(n, len(r))
for b in (8, 9, 15):
    asyncio.run(main(int(sys.argv[1]), b))
