#!/usr/bin/env python3
"""An extended CONNECT over HTTP/3 (RFC 9220 / RFC 9484 shape) with aioquic, for the
camouflage tests: what a server answers to a CONNECT-IP request, with or without
credentials.

    connect.py ADDRESS PORT SNI PROTOCOL PATH [AUTHORIZATION]

Prints one JSON object: whether the server's SETTINGS allow extended CONNECT, the
status (0 if the request was reset or the connection closed), and the response's
header names.
"""

import asyncio
import json
import sys

from aioquic.asyncio import connect
from aioquic.asyncio.protocol import QuicConnectionProtocol
from aioquic.h3.connection import H3_ALPN, H3Connection
from aioquic.h3.events import HeadersReceived
from aioquic.quic.configuration import QuicConfiguration
from aioquic.quic.events import ConnectionTerminated, StreamReset


class Client(QuicConnectionProtocol):
    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        self.h3 = H3Connection(self._quic, enable_webtransport=True)
        self.done = asyncio.get_event_loop().create_future()
        self.answer = {"status": 0, "headers": []}

    def quic_event_received(self, event):
        if isinstance(event, (ConnectionTerminated, StreamReset)):
            if not self.done.done():
                self.done.set_result(None)
            return
        for h3_event in self.h3.handle_event(event):
            if isinstance(h3_event, HeadersReceived) and not self.done.done():
                names = []
                for name, value in h3_event.headers:
                    if name == b":status":
                        self.answer["status"] = int(value)
                    elif not name.startswith(b":"):
                        names.append(name.decode().lower())
                self.answer["headers"] = sorted(names)
                self.done.set_result(None)


async def main():
    address, port, sni, protocol, path, *auth = sys.argv[1:]
    config = QuicConfiguration(
        is_client=True, alpn_protocols=H3_ALPN, max_datagram_frame_size=65536
    )
    config.verify_mode = False
    config.server_name = sni
    async with connect(address, int(port), configuration=config, create_protocol=Client) as client:
        # Let the server's SETTINGS arrive.
        await asyncio.sleep(0.3)
        settings = client.h3.received_settings or {}
        stream = client._quic.get_next_available_stream_id()
        headers = [
            (b":method", b"CONNECT"),
            (b":protocol", protocol.encode()),
            (b":scheme", b"https"),
            (b":authority", f"{sni}:{port}".encode()),
            (b":path", path.encode()),
            (b"capsule-protocol", b"?1"),
        ]
        if auth:
            headers.append((b"authorization", auth[0].encode()))
        client.h3.send_headers(stream, headers)
        client.transmit()
        try:
            await asyncio.wait_for(client.done, 5)
        except asyncio.TimeoutError:
            pass
        client.answer["extended_connect"] = bool(settings.get(0x8))
        client.answer["h3_datagram"] = bool(settings.get(0x33))
        print(json.dumps(client.answer))


if __name__ == "__main__":
    asyncio.run(main())
