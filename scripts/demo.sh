#!/usr/bin/env bash
# QUICAP demo: builds quicap, makes a CA and two node certificates, runs the two nodes
# in their own network namespaces joined by a veth pair, and shows IPv4 and IPv6 ping
# and a TCP transfer through the tunnel. Everything it creates is removed on exit.
# Run as root on Linux: ./scripts/demo.sh
set -euo pipefail

cd "$(dirname "$0")/.."
if [ "$(id -u)" -ne 0 ]; then
  echo "error: the demo creates network namespaces and TUN devices: run it as root" >&2
  exit 1
fi
./scripts/deps.sh

echo "==> building quicap (release)"
cargo build --release --quiet
QUICAP="$PWD/target/release/quicap"

work=$(mktemp -d /tmp/quicap-demo.XXXXXX)
nsa="qdemo-a-$$"
nsb="qdemo-b-$$"
pids=()
cleanup() {
  for pid in "${pids[@]}"; do kill "$pid" 2>/dev/null || true; done
  for pid in "${pids[@]}"; do wait "$pid" 2>/dev/null || true; done
  ip netns del "$nsa" 2>/dev/null || true
  ip netns del "$nsb" 2>/dev/null || true
  rm -rf "$work"
}
trap cleanup EXIT

step() { printf '\n==> %s\n' "$*"; }
run() { printf '$ %s\n' "$*"; "$@"; }

step "PKI: a CA, and a key + CSR per node, signed with each node's overlay addresses"
run "$QUICAP" ca init --name demo-net --out "$work/ca"
for n in a b; do
  run "$QUICAP" cert request --name "node-$n" --out "$work/$n"
done
run "$QUICAP" ca sign --ca "$work/ca" --csr "$work/a/node-a.csr" \
  --ip 10.77.0.1/24 --ip fd77::1/64 --out "$work/a/node-a.crt"
run "$QUICAP" ca sign --ca "$work/ca" --csr "$work/b/node-b.csr" \
  --ip 10.77.0.2/24 --ip fd77::2/64 --out "$work/b/node-b.crt"
run "$QUICAP" cert show "$work/b/node-b.crt"

step "network: two namespaces joined by a veth pair (192.0.2.1 <-> 192.0.2.2)"
ip netns add "$nsa"
ip netns add "$nsb"
ip link add qdemo-va netns "$nsa" type veth peer name qdemo-vb netns "$nsb"
ip -n "$nsa" addr add 192.0.2.1/24 dev qdemo-va
ip -n "$nsb" addr add 192.0.2.2/24 dev qdemo-vb
for ns in "$nsa" "$nsb"; do
  ip -n "$ns" link set lo up
done
ip -n "$nsa" link set qdemo-va up
ip -n "$nsb" link set qdemo-vb up

write_config() { # name addr4 addr6 peer peer-endpoint
  cat >"$work/$1/node.toml" <<TOML
[node]
name = "node-$1"
cert = "node-$1.crt"
key = "node-$1.key"
ca = "../ca/ca.crt"
crl = "../ca/crl.pem"
listen = ["0.0.0.0:4433"]
control-socket = "control.sock"

[tun]
name = "quicap0"
addresses = ["$2", "$3"]

[[peer]]
name = "$4"
endpoint = "$5"
TOML
}
write_config a 10.77.0.1/24 fd77::1/64 node-b 192.0.2.2:4433
write_config b 10.77.0.2/24 fd77::2/64 node-a 192.0.2.1:4433
cat "$work/a/node.toml"

step "starting both nodes"
for n in a b; do
  ns="qdemo-$n-$$"
  ip netns exec "$ns" "$QUICAP" up --config "$work/$n/node.toml" 2>"$work/$n.log" &
  pids+=($!)
done

for _ in $(seq 1 100); do
  if ip netns exec "$nsa" ping -c 1 -W 1 10.77.0.2 >/dev/null 2>&1; then break; fi
  sleep 0.1
done

step "ping through the tunnel, IPv4 and IPv6"
run ip netns exec "$nsa" ping -c 3 -i 0.2 10.77.0.2
run ip netns exec "$nsa" ping -6 -c 3 -i 0.2 fd77::2

step "TCP through the tunnel (iperf3, 3 seconds)"
ip netns exec "$nsb" iperf3 -s -1 -B 10.77.0.2 >/dev/null &
pids+=($!)
sleep 0.5
run ip netns exec "$nsa" iperf3 -c 10.77.0.2 -t 3 -f m

step "node-a's view: quicap status"
run "$QUICAP" status --config "$work/a/node.toml"

step "interfaces"
run ip -n "$nsa" addr show quicap0

step "node logs"
cat "$work/a.log" "$work/b.log"

step "done; cleaning up"
