#!/usr/bin/env bash
# Installs the system tools QUICAP's demo, tests and benchmarks use (Debian/Ubuntu).
# Does nothing for tools that are already there.
set -euo pipefail

need=()
command -v ip >/dev/null || need+=(iproute2)
command -v ping >/dev/null || need+=(iputils-ping)
command -v iperf3 >/dev/null || need+=(iperf3)
command -v nft >/dev/null || need+=(nftables)
command -v socat >/dev/null || need+=(socat)
command -v openssl >/dev/null || need+=(openssl)
command -v sha256sum >/dev/null || need+=(coreutils)
command -v setpriv >/dev/null || need+=(util-linux)
command -v pkill >/dev/null || need+=(procps)
command -v ethtool >/dev/null || need+=(ethtool)
# Clients and a reference server nobody here wrote, for the camouflage tests.
command -v curl >/dev/null || need+=(curl)
command -v gtlsclient >/dev/null || need+=(ngtcp2-client)
command -v caddy >/dev/null || need+=(caddy)
python3 -c 'import venv, ensurepip' 2>/dev/null || need+=(python3-venv)
if [ "${1:-}" = "--bench" ]; then
  command -v wg >/dev/null || need+=(wireguard-tools)
  command -v wireguard-go >/dev/null || need+=(wireguard-go)
  command -v nebula >/dev/null || need+=(nebula)
  command -v openvpn >/dev/null || need+=(openvpn)
fi

if [ ${#need[@]} -gt 0 ]; then
  if [ "$(id -u)" -ne 0 ]; then
    echo "error: missing ${need[*]}; run as root or install them" >&2
    exit 1
  fi
  export DEBIAN_FRONTEND=noninteractive
  apt-get update -qq
  apt-get install -y -qq "${need[@]}" >/dev/null
fi

# HTTP/3 clients from PyPI for the camouflage tests and a SOCKS5 UDP client for the
# proxy tests (crates/quicap/tests/tools/), in a virtual environment of the checkout's
# own.
venv="$(cd "$(dirname "$0")/.." && pwd)/target/test-venv"
if ! "$venv/bin/python" -c 'import curl_cffi, aioquic, socks' 2>/dev/null; then
  python3 -m venv "$venv"
  "$venv/bin/pip" install -q --disable-pip-version-check curl_cffi==0.17.0 aioquic==1.7.2 PySocks==1.7.1
fi
