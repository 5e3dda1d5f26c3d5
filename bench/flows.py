#!/usr/bin/env python3
"""Many concurrent TCP connections through a SOCKS5 proxy, for bench/proxy.sh.

    flows.py serve ADDRESS PORT
        an echo server that holds every connection until its client closes it
    flows.py hold PROXY_PORT TARGET_ADDRESS TARGET_PORT COUNT HOLD_SECONDS
        opens COUNT connections through the SOCKS5 proxy on 127.0.0.1:PROXY_PORT, checks
        each with one echoed message, holds them all for HOLD_SECONDS (printing
        "holding N" when they are all up), then closes them; prints one JSON object:
        how many opened and echoed, and how many failed
"""

import asyncio
import ipaddress
import json
import sys


async def serve(address, port):
    async def echo(reader, writer):
        try:
            while data := await reader.read(4096):
                writer.write(data)
                await writer.drain()
        except ConnectionError:
            pass
        writer.close()

    server = await asyncio.start_server(echo, address, port, backlog=4096)
    async with server:
        await server.serve_forever()


async def one(proxy_port, target, port, i):
    reader, writer = await asyncio.open_connection("127.0.0.1", proxy_port)
    writer.write(b"\x05\x01\x00")
    if await reader.readexactly(2) != b"\x05\x00":
        raise RuntimeError("no method")
    writer.write(b"\x05\x01\x00\x01" + ipaddress.ip_address(target).packed + port.to_bytes(2, "big"))
    reply = await reader.readexactly(10)
    if reply[1] != 0:
        raise RuntimeError(f"reply {reply[1]}")
    message = b"flow %d\n" % i
    writer.write(message)
    if await reader.readexactly(len(message)) != message:
        raise RuntimeError("echo differs")
    return writer


async def hold(proxy_port, target, port, count, seconds):
    results = await asyncio.gather(
        *(one(proxy_port, target, port, i) for i in range(count)), return_exceptions=True
    )
    writers = [r for r in results if not isinstance(r, BaseException)]
    failed = [str(r) for r in results if isinstance(r, BaseException)]
    print(f"holding {len(writers)}", file=sys.stderr, flush=True)
    await asyncio.sleep(seconds)
    for w in writers:
        w.close()
    print(json.dumps({"echoed": len(writers), "failed": len(failed), "first_error": failed[:1]}))


def main():
    mode, *args = sys.argv[1:]
    if mode == "serve":
        asyncio.run(serve(args[0], int(args[1])))
    else:
        proxy_port, target, port, count, seconds = args
        asyncio.run(hold(int(proxy_port), target, int(port), int(count), float(seconds)))


if __name__ == "__main__":
    main()
