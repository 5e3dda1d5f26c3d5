#!/usr/bin/env python3
"""A UDP exchange through a SOCKS5 proxy's UDP ASSOCIATE, with PySocks, for the proxy tests.

    socks_udp.py PROXY_HOST PROXY_PORT TARGET_HOST TARGET_PORT COUNT [SIZE]

Sends COUNT datagrams of SIZE bytes (default 32) to TARGET (a host name is sent to the
proxy unresolved) and waits for their echoes. Prints one JSON object: how many were
sent and echoed intact, and the source address of the echoes as the proxy reported it.
"""

import json
import socket
import sys

import socks


def main():
    proxy_host, proxy_port, host, port, count, *size = sys.argv[1:]
    size = int(size[0]) if size else 32
    s = socks.socksocket(socket.AF_INET, socket.SOCK_DGRAM)
    s.set_proxy(socks.SOCKS5, proxy_host, int(proxy_port), rdns=True)
    s.settimeout(3)
    echoed, source, sent = 0, None, 0
    try:
        s.bind(("0.0.0.0", 0))
        for i in range(int(count)):
            payload = (b"%06d" % i) * (size // 6 + 1)
            payload = payload[:size]
            s.sendto(payload, (host, int(port)))
            sent += 1
            try:
                data, addr = s.recvfrom(65535)
            except socket.timeout:
                continue
            if data == payload:
                echoed += 1
                source = "%s:%d" % addr[:2]
        print(json.dumps({"sent": sent, "echoed": echoed, "source": source}))
    except (socks.ProxyError, OSError) as e:
        print(json.dumps({"sent": sent, "echoed": echoed, "source": source, "error": str(e)}))


if __name__ == "__main__":
    main()
