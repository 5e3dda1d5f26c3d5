#!/usr/bin/env bash
# QUICAP demo: builds quicap, makes a CA and three node certificates, and runs a small
# mesh in network namespaces: node-a and node-c each know only node-b, so traffic
# between them is forwarded by node-b. Shows IPv4 and IPv6 ping, `quicap status` with
# the routing table, and a TCP transfer through the mesh. Removes everything on exit.
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
ns() { echo "qdemo-$1-$$"; }
pids=()
cleanup() {
  for pid in "${pids[@]}"; do kill "$pid" 2>/dev/null || true; done
  for pid in "${pids[@]}"; do wait "$pid" 2>/dev/null || true; done
  for n in a b c; do ip netns del "$(ns $n)" 2>/dev/null || true; done
  rm -rf "$work"
}
trap cleanup EXIT

step() { printf '\n==> %s\n' "$*"; }
run() { printf '$ %s\n' "$*"; "$@"; }

step "PKI: a CA, and a key + CSR per node, signed with each node's overlay addresses"
run "$QUICAP" ca init --name demo-net --out "$work/ca"
declare -A v4=([a]=10.77.0.1 [b]=10.77.0.2 [c]=10.77.0.3)
for n in a b c; do
  run "$QUICAP" cert request --name "node-$n" --out "$work/$n"
  run "$QUICAP" ca sign --ca "$work/ca" --csr "$work/$n/node-$n.csr" \
    --ip "${v4[$n]}/24" --ip "fd77::${v4[$n]##*.}/64" --out "$work/$n/node-$n.crt"
done
run "$QUICAP" cert show "$work/c/node-c.crt"

step "network: node-a (192.0.2.1) -- node-b (192.0.2.2 | 198.51.100.2) -- node-c (198.51.100.3)"
for n in a b c; do
  ip netns add "$(ns $n)"
  ip -n "$(ns $n)" link set lo up
done
ip link add qdemo-ab netns "$(ns a)" type veth peer name qdemo-ba netns "$(ns b)"
ip link add qdemo-bc netns "$(ns b)" type veth peer name qdemo-cb netns "$(ns c)"
ip -n "$(ns a)" addr add 192.0.2.1/24 dev qdemo-ab
ip -n "$(ns b)" addr add 192.0.2.2/24 dev qdemo-ba
ip -n "$(ns b)" addr add 198.51.100.2/24 dev qdemo-bc
ip -n "$(ns c)" addr add 198.51.100.3/24 dev qdemo-cb
ip -n "$(ns a)" link set qdemo-ab up
ip -n "$(ns b)" link set qdemo-ba up
ip -n "$(ns b)" link set qdemo-bc up
ip -n "$(ns c)" link set qdemo-cb up

write_config() { # node [peer endpoint]
  {
    cat <<TOML
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
addresses = ["${v4[$1]}/24", "fd77::${v4[$1]##*.}/64"]
TOML
    if [ -n "${2:-}" ]; then
      printf '\n[[peer]]\nname = "%s"\nendpoint = "%s"\n' "$2" "$3"
    fi
  } >"$work/$1/node.toml"
}
write_config a node-b 192.0.2.2:4433
write_config b
write_config c node-b 198.51.100.2:4433
cat "$work/a/node.toml"

step "starting the three nodes"
for n in b a c; do
  ip netns exec "$(ns $n)" "$QUICAP" up --config "$work/$n/node.toml" 2>"$work/$n.log" &
  pids+=($!)
done
for _ in $(seq 1 100); do
  if ip netns exec "$(ns a)" ping -c 1 -W 1 10.77.0.3 >/dev/null 2>&1; then break; fi
  sleep 0.1
done

step "ping node-b directly and node-c through node-b, IPv4 and IPv6"
run ip netns exec "$(ns a)" ping -c 3 -i 0.2 10.77.0.2
run ip netns exec "$(ns a)" ping -c 3 -i 0.2 10.77.0.3
run ip netns exec "$(ns a)" ping -6 -c 3 -i 0.2 fd77::3

step "TCP from node-a to node-c through node-b (iperf3, 3 seconds)"
ip netns exec "$(ns c)" iperf3 -s -1 -B 10.77.0.3 >/dev/null &
pids+=($!)
sleep 0.5
run ip netns exec "$(ns a)" iperf3 -c 10.77.0.3 -t 3 -f m

step "node-a's view: quicap status (peers, links, routes)"
run "$QUICAP" status --config "$work/a/node.toml"

step "node-a's interface"
run ip -n "$(ns a)" addr show quicap0

step "node logs"
for n in a b c; do echo "--- node-$n"; cat "$work/$n.log"; done

step "done; cleaning up"
