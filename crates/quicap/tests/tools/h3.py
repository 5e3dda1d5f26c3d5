#!/usr/bin/env python3
"""One HTTP/3 request with the libcurl that curl_cffi bundles, for the camouflage tests.

    h3.py URL HOST:PORT:ADDRESS METHOD [HEADER ...]

Prints one JSON object: the status, the response's header names (lowercase, sorted)
and the body in base64. A failed request prints status 0 and curl's error.
"""

import base64
import io
import json
import sys

from curl_cffi import Curl, CurlError, CurlHttpVersion, CurlInfo, CurlOpt


def main():
    url, resolve, method, *headers = sys.argv[1:]
    curl = Curl()
    body, head = io.BytesIO(), io.BytesIO()
    curl.setopt(CurlOpt.URL, url.encode())
    curl.setopt(CurlOpt.RESOLVE, [resolve.encode()])
    curl.setopt(CurlOpt.HTTP_VERSION, CurlHttpVersion.V3ONLY)
    curl.setopt(CurlOpt.SSL_VERIFYPEER, 0)
    curl.setopt(CurlOpt.SSL_VERIFYHOST, 0)
    curl.setopt(CurlOpt.TIMEOUT, 10)
    curl.setopt(CurlOpt.WRITEDATA, body)
    curl.setopt(CurlOpt.HEADERDATA, head)
    if headers:
        curl.setopt(CurlOpt.HTTPHEADER, [h.encode() for h in headers])
    if method == "HEAD":
        curl.setopt(CurlOpt.NOBODY, 1)
    elif method == "POST":
        curl.setopt(CurlOpt.POSTFIELDS, b"x=1")
    elif method != "GET":
        curl.setopt(CurlOpt.CUSTOMREQUEST, method.encode())
    try:
        curl.perform()
    except CurlError as e:
        print(json.dumps({"status": 0, "headers": [], "body": "", "error": str(e)}))
        return
    names = sorted(
        line.split(":", 1)[0].strip().lower()
        for line in head.getvalue().decode("latin-1").splitlines()[1:]
        if ":" in line
    )
    print(
        json.dumps(
            {
                "status": curl.getinfo(CurlInfo.RESPONSE_CODE),
                "headers": names,
                "body": base64.b64encode(body.getvalue()).decode(),
            }
        )
    )


if __name__ == "__main__":
    main()
