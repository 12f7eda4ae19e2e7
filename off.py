import asyncio, sys, websockets
from websockets.extensions.permessage_deflate import ClientPerMessageDeflateFactory
async def main(port):
    async with websockets.connect(f"ws://127.0.0.1:{port}/ws", subprotocols=["wshub.v1.json"],
            extensions=[ClientPerMessageDeflateFactory(server_no_context_takeover=True, client_no_context_takeover=True, server_max_window_bits=8)]) as ws:
        print("ext:", ws.response.headers.get("Sec-WebSocket-Extensions"))
        print((await ws.recv())[:60])
        await ws.send('{"type":"ping","id":"a","payload":"' + "x"*3000 + '"}')
        r = await ws.recv(); print(len(r), r[:40])
asyncio.run(main(int(sys.argv[1])))
