#!/usr/bin/env python3
"""An HTTP/3 request through a MASQUE CONNECT-UDP proxy, with the libcurl that
curl_cffi bundles (its HTTP/3 proxy sends CONNECT-UDP and UDP payloads in DATAGRAM
capsules), for the MASQUE tests.

    masque_udp.py PROXY_URL URL CREDENTIALS

CREDENTIALS is `basic:USER:PASSWORD` (Proxy-Authorization: Basic, as curl sends it
for --proxy-user), `bearer:TOKEN` (a Proxy-Authorization header of the test's) or
`none`. Prints one JSON object: the status (0 if the request failed), the HTTP
version of the answer, the body and curl's error.
"""

import io
import json
import sys

from curl_cffi import Curl, CurlError, CurlHttpVersion, CurlInfo, CurlOpt

# libcurl's CURLPROXY_HTTPS3: HTTP/3 to the proxy; an HTTP/3 request through it is
# CONNECT-UDP.
PROXY_HTTPS3 = 8


def main():
    proxy, url, credentials = sys.argv[1:4]
    curl = Curl()
    body = io.BytesIO()
    curl.setopt(CurlOpt.URL, url.encode())
    curl.setopt(CurlOpt.PROXY, proxy.encode())
    curl.setopt(CurlOpt.PROXYTYPE, PROXY_HTTPS3)
    curl.setopt(CurlOpt.HTTP_VERSION, CurlHttpVersion.V3ONLY)
    # Both certificates are the tests' own, self-signed.
    curl.setopt(CurlOpt.PROXY_SSL_VERIFYPEER, 0)
    curl.setopt(CurlOpt.PROXY_SSL_VERIFYHOST, 0)
    curl.setopt(CurlOpt.SSL_VERIFYPEER, 0)
    curl.setopt(CurlOpt.SSL_VERIFYHOST, 0)
    curl.setopt(CurlOpt.TIMEOUT, 15)
    curl.setopt(CurlOpt.WRITEDATA, body)
    kind, _, value = credentials.partition(":")
    if kind == "basic":
        curl.setopt(CurlOpt.PROXYUSERPWD, value.encode())
    elif kind == "bearer":
        curl.setopt(CurlOpt.PROXYHEADER, [f"Proxy-Authorization: Bearer {value}".encode()])
    result = {"status": 0, "version": 0, "body": "", "error": ""}
    try:
        curl.perform()
        result["status"] = curl.getinfo(CurlInfo.RESPONSE_CODE)
        result["version"] = curl.getinfo(CurlInfo.HTTP_VERSION)
        result["body"] = body.getvalue().decode(errors="replace")
    except CurlError as e:
        result["error"] = str(e)
    print(json.dumps(result))


if __name__ == "__main__":
    main()
