#!/usr/bin/env python3
"""A CONNECT-IP client (RFC 9484) written for the MASQUE tests from the RFC, on
aioquic's HTTP/3: it asks a proxy for an IP tunnel, reads the addresses and routes the
proxy assigns, and pings through the tunnel with packets it builds itself.

    connect_ip.py HOST PORT CREDENTIALS [--path P] [--max-datagram N] [--capsules]
                  [--spoof] [--context] [--garbage] TARGET:SIZE ...

CREDENTIALS is `bearer:TOKEN`, `basic:USER:PASSWORD` or `none`. Each TARGET:SIZE is a
ping to TARGET with an IP packet of SIZE bytes in all. `--capsules` sends packets in
DATAGRAM capsules instead of QUIC datagrams; `--spoof` first sends a packet from an
address the proxy did not assign, `--context` one in an unknown context ID, and
`--garbage` ends with a malformed capsule. Prints one JSON object.
"""

import argparse
import asyncio
import base64
import ipaddress
import json
import os
import ssl
import struct

from aioquic.asyncio.client import connect
from aioquic.asyncio.protocol import QuicConnectionProtocol
from aioquic.h3.connection import H3_ALPN, H3Connection
from aioquic.h3.events import DataReceived, DatagramReceived, HeadersReceived
from aioquic.quic.configuration import QuicConfiguration
from aioquic.quic.events import StreamReset

ADDRESS_ASSIGN = 0x01
ROUTE_ADVERTISEMENT = 0x03
DATAGRAM = 0x00


def varint(v):
    if v < 0x40:
        return bytes([v])
    if v < 0x4000:
        return struct.pack("!H", v | 0x4000)
    if v < 0x40000000:
        return struct.pack("!I", v | 0x80000000)
    return struct.pack("!Q", v | 0xC000000000000000)


def read_varint(data, at):
    first = data[at]
    n = 1 << (first >> 6)
    if at + n > len(data):
        raise IndexError
    v = first & 0x3F
    for b in data[at + 1 : at + n]:
        v = (v << 8) | b
    return v, at + n


def checksum(data):
    if len(data) % 2:
        data += b"\0"
    s = sum(struct.unpack(f"!{len(data) // 2}H", data))
    while s >> 16:
        s = (s & 0xFFFF) + (s >> 16)
    return (~s) & 0xFFFF


def echo_request(src, dst, size, ident, seq):
    """An ICMP or ICMPv6 echo request of `size` bytes in all, from `src` to `dst`."""
    if src.version == 4:
        payload = os.urandom(max(0, size - 28))
        icmp = struct.pack("!BBHHH", 8, 0, 0, ident, seq) + payload
        icmp = icmp[:2] + struct.pack("!H", checksum(icmp)) + icmp[4:]
        header = struct.pack("!BBHHHBBH4s4s", 0x45, 0, 20 + len(icmp), ident, 0x4000, 64, 1, 0,
                             src.packed, dst.packed)
        header = header[:10] + struct.pack("!H", checksum(header)) + header[12:]
        return header + icmp
    payload = os.urandom(max(0, size - 48))
    icmp = struct.pack("!BBHHH", 128, 0, 0, ident, seq) + payload
    pseudo = src.packed + dst.packed + struct.pack("!I3xB", len(icmp), 58)
    icmp = icmp[:2] + struct.pack("!H", checksum(pseudo + icmp)) + icmp[4:]
    header = struct.pack("!IHBB16s16s", 0x60000000, len(icmp), 58, 64, src.packed, dst.packed)
    return header + icmp


def classify(packet, ident, seq):
    """What an IP packet from the tunnel says about ping (ident, seq)."""
    version = packet[0] >> 4
    if version == 4:
        ihl = (packet[0] & 0x0F) * 4
        kind, code = packet[ihl], packet[ihl + 1]
        if kind == 0 and struct.unpack("!HH", packet[ihl + 4 : ihl + 8]) == (ident, seq):
            return "echo"
        if kind == 3:
            return {1: "unreachable", 13: "prohibited", 4: "too-big"}.get(code, f"icmp-3-{code}")
    elif version == 6:
        kind, code = packet[40], packet[41]
        if kind == 129 and struct.unpack("!HH", packet[44:48]) == (ident, seq):
            return "echo"
        if kind == 1:
            return {3: "unreachable", 1: "prohibited"}.get(code, f"icmp6-1-{code}")
        if kind == 2:
            return "too-big"
    return None


class Client(QuicConnectionProtocol):
    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        self.h3 = H3Connection(self._quic)
        self.stream_id = None
        self.headers = asyncio.get_event_loop().create_future()
        self.raw = b""
        self.addresses = []
        self.routes = []
        self.assigned = asyncio.Event()
        self.packets = asyncio.Queue()
        self.reset = asyncio.Event()
        self.capsule_packets = 0

    def quic_event_received(self, event):
        if isinstance(event, StreamReset) and event.stream_id == self.stream_id:
            self.reset.set()
        for e in self.h3.handle_event(event):
            if isinstance(e, HeadersReceived) and e.stream_id == self.stream_id:
                if not self.headers.done():
                    self.headers.set_result(dict(e.headers))
            elif isinstance(e, DataReceived) and e.stream_id == self.stream_id:
                self.raw += e.data
                self.read_capsules()
                if e.stream_ended:
                    self.reset.set()
            elif isinstance(e, DatagramReceived) and e.stream_id == self.stream_id:
                context, at = read_varint(e.data, 0)
                if context == 0:
                    self.packets.put_nowait(e.data[at:])

    def read_capsules(self):
        while True:
            try:
                kind, at = read_varint(self.raw, 0)
                length, at = read_varint(self.raw, at)
            except IndexError:
                return
            if at + length > len(self.raw):
                return
            value, self.raw = self.raw[at : at + length], self.raw[at + length :]
            if kind == ADDRESS_ASSIGN:
                i = 0
                while i < len(value):
                    _, i = read_varint(value, i)
                    n = 4 if value[i] == 4 else 16
                    addr = ipaddress.ip_address(value[i + 1 : i + 1 + n])
                    self.addresses.append(f"{addr}/{value[i + 1 + n]}")
                    i += 2 + n
                self.assigned.set()
            elif kind == ROUTE_ADVERTISEMENT:
                i = 0
                while i < len(value):
                    n = 4 if value[i] == 4 else 16
                    start = ipaddress.ip_address(value[i + 1 : i + 1 + n])
                    end = ipaddress.ip_address(value[i + 1 + n : i + 1 + 2 * n])
                    self.routes.append(f"{start}-{end}/{value[i + 1 + 2 * n]}")
                    i += 2 + 2 * n
            elif kind == DATAGRAM:
                context, at = read_varint(value, 0)
                if context == 0:
                    self.capsule_packets += 1
                    self.packets.put_nowait(value[at:])

    def send_packet(self, packet, context=0, capsule=False):
        if capsule:
            value = varint(context) + packet
            data = varint(DATAGRAM) + varint(len(value)) + value
            self.h3.send_data(self.stream_id, data, end_stream=False)
        else:
            self.h3.send_datagram(self.stream_id, varint(context) + packet)
        self.transmit()


async def ping(client, src, dst, size, seq, capsule):
    ident = os.getpid() & 0xFFFF
    client.send_packet(echo_request(src, dst, size, ident, seq), capsule=capsule)
    deadline = asyncio.get_event_loop().time() + 3
    while True:
        left = deadline - asyncio.get_event_loop().time()
        if left <= 0:
            return {"target": str(dst), "size": size, "reply": "none", "len": 0}
        try:
            packet = await asyncio.wait_for(client.packets.get(), left)
        except asyncio.TimeoutError:
            continue
        verdict = classify(packet, ident, seq)
        if verdict:
            return {"target": str(dst), "size": size, "reply": verdict, "len": len(packet)}


async def run(args):
    config = QuicConfiguration(is_client=True, alpn_protocols=H3_ALPN,
                               max_datagram_frame_size=args.max_datagram)
    config.verify_mode = ssl.CERT_NONE
    # UDP payloads as large as the test's links (MTU 1500) take: aioquic's default of
    # 1200 bytes carries no 1280-byte IPv6 packet in a datagram.
    config.max_datagram_size = 1452
    out = {"status": 0, "addresses": [], "routes": [], "pings": [], "reset": False}
    async with connect(args.host, args.port, configuration=config,
                       create_protocol=Client, wait_connected=True) as client:
        client.stream_id = client._quic.get_next_available_stream_id()
        headers = [
            (b":method", b"CONNECT"),
            (b":protocol", b"connect-ip"),
            (b":scheme", b"https"),
            (b":authority", f"{args.host}:{args.port}".encode()),
            (b":path", args.path.encode()),
            (b"capsule-protocol", b"?1"),
        ]
        kind, _, value = args.credentials.partition(":")
        if kind == "bearer":
            headers.append((b"authorization", f"Bearer {value}".encode()))
        elif kind == "basic":
            headers.append((b"authorization", b"Basic " + base64.b64encode(value.encode())))
        client.h3.send_headers(client.stream_id, headers, end_stream=False)
        client.transmit()
        answer = await asyncio.wait_for(client.headers, 5)
        out["status"] = int(answer.get(b":status", b"0"))
        if out["status"] != 200:
            print(json.dumps(out))
            return
        await asyncio.wait_for(client.assigned.wait(), 5)
        await asyncio.sleep(0.2)
        out["addresses"], out["routes"] = client.addresses, client.routes
        mine = {4: None, 6: None}
        for a in client.addresses:
            addr = ipaddress.ip_interface(a).ip
            mine[addr.version] = addr
        if args.spoof:
            fake = ipaddress.ip_address("10.66.66.66")
            client.send_packet(echo_request(fake, ipaddress.ip_address("10.77.0.1"), 84, 1, 1))
        if args.context:
            v4 = mine[4]
            client.send_packet(echo_request(v4, v4, 84, 1, 1), context=5)
        for seq, spec in enumerate(args.pings, start=1):
            target, size = spec.rsplit(":", 1)
            dst = ipaddress.ip_address(target)
            src = mine[dst.version]
            out["pings"].append(await ping(client, src, dst, int(size), seq, args.capsules))
        out["capsule_packets"] = client.capsule_packets
        if args.garbage:
            # A capsule that announces more bytes than any capsule may have.
            client.h3.send_data(client.stream_id, varint(DATAGRAM) + varint(1 << 30), end_stream=False)
            client.transmit()
            try:
                await asyncio.wait_for(client.reset.wait(), 5)
                out["reset"] = True
            except asyncio.TimeoutError:
                pass
    print(json.dumps(out))


def main():
    p = argparse.ArgumentParser()
    p.add_argument("host")
    p.add_argument("port", type=int)
    p.add_argument("credentials")
    p.add_argument("pings", nargs="*")
    p.add_argument("--path", default="/.well-known/masque/ip/*/*/")
    p.add_argument("--max-datagram", type=int, default=65536)
    p.add_argument("--capsules", action="store_true")
    p.add_argument("--spoof", action="store_true")
    p.add_argument("--context", action="store_true")
    p.add_argument("--garbage", action="store_true")
    asyncio.run(run(p.parse_intermixed_args()))


if __name__ == "__main__":
    main()
