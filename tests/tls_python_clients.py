"""Python `websockets` and `ssl` against wshub over TLS, trusting a CA file.

Usage: python3 tls_python_clients.py MODE HOST:PORT CAFILE
  echo      wss echo of text and binary, small and 1 MiB, from 5 clients at once
  wrong-ca  the handshake must fail on the client (CAFILE is not wshub's CA)
Prints "tls ok" when the mode behaved as expected.
"""
import asyncio
import ssl
import sys

import websockets

TIMEOUT = 10


async def echo(url, ctx):
    async def one(n):
        async with websockets.connect(url, ssl=ctx, max_size=2**21) as ws:
            for i in range(50):
                msg = f"client {n} message {i}"
                await ws.send(msg)
                assert await asyncio.wait_for(ws.recv(), TIMEOUT) == msg
            big = bytes(range(256)) * 4096
            await ws.send(big)
            assert await asyncio.wait_for(ws.recv(), TIMEOUT) == big
            await ws.ping()
    await asyncio.gather(*(one(n) for n in range(5)))


async def wrong_ca(url, ctx):
    try:
        async with websockets.connect(url, ssl=ctx, open_timeout=TIMEOUT):
            raise AssertionError("connected although the server's CA is not trusted")
    except ssl.SSLCertVerificationError as e:
        print("refused as expected:", e.verify_message)


def main():
    mode, addr, cafile = sys.argv[1:4]
    ctx = ssl.create_default_context(cafile=cafile)
    url = f"wss://localhost:{addr.rsplit(':', 1)[1]}/ws"
    asyncio.run({"echo": echo, "wrong-ca": wrong_ca}[mode](url, ctx))
    print("tls ok")


if __name__ == "__main__":
    main()
