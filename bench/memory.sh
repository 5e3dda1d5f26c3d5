#!/usr/bin/env bash
# QUICAP memory: resident set size (RSS) of one node alone, then with N peers connected
# (default 50, each in its own network namespace, all dialing it over one bridge), then
# after traffic to every peer and a TCP transfer through one of them. Prints one line
# per state with the hub's RSS and its peak (VmHWM).
#
#   sudo ./bench/memory.sh            # 50 peers
#   sudo ./bench/memory.sh 20         # 20 peers
set -euo pipefail

cd "$(dirname "$0")/.."
[ "$(id -u)" -eq 0 ] || { echo "error: the benchmark creates namespaces: run as root" >&2; exit 1; }
./scripts/deps.sh

PEERS=${1:-50}
[ "$PEERS" -ge 1 ] && [ "$PEERS" -le 250 ] || { echo "error: peers must be 1-250" >&2; exit 1; }

echo "==> building quicap (release)"
cargo build --release --quiet
QUICAP="$PWD/target/release/quicap"

work=$(mktemp -d /tmp/quicap-mem.XXXXXX)
H="qmem-hub-$$"
pids=()
spaces=("$H")
cleanup() {
  exec 2>/dev/null # the nodes killed here would each print "Killed"
  for pid in "${pids[@]}"; do kill "$pid" 2>/dev/null || true; done
  for ns in "${spaces[@]}"; do
    for pid in $(ip netns pids "$ns" 2>/dev/null); do kill -9 "$pid" 2>/dev/null || true; done
    ip netns del "$ns" 2>/dev/null || true
  done
  rm -rf "$work"
}
trap cleanup EXIT

ip netns add "$H"
ip -n "$H" link set lo up
ip -n "$H" link add qmbr type bridge
ip -n "$H" addr add 10.99.0.1/16 dev qmbr
ip -n "$H" link set qmbr up

"$QUICAP" ca init --name memory --out "$work/ca" >/dev/null
node() { # dir name overlay-address [hub endpoint]
  local d="$work/$1"
  mkdir -p "$d"
  "$QUICAP" cert request --name "$2" --out "$d" >/dev/null
  "$QUICAP" ca sign --ca "$work/ca" --csr "$d/$2.csr" --ip "$3" --out "$d/$2.crt" >/dev/null
  cat >"$d/node.toml" <<TOML
[node]
cert = "$2.crt"
key = "$2.key"
ca = "../ca/ca.crt"
listen = ["0.0.0.0:4433"]
control-socket = "control.sock"
[tun]
name = "quicap0"
addresses = ["$3"]
TOML
  if [ -n "${4:-}" ]; then
    printf '[[peer]]\nname = "hub"\nendpoint = "%s"\n' "$4" >>"$d/node.toml"
  fi
}

rss() { # pid -> "RSS MB, peak MB"
  awk '/^VmRSS/ {r=$2} /^VmHWM/ {h=$2} END {printf "%.1f MB (peak %.1f MB)", r/1024, h/1024}' "/proc/$1/status"
}

node hub hub 10.98.0.1/16
ip netns exec "$H" "$QUICAP" up --config "$work/hub/node.toml" 2>"$work/hub.log" &
hub=$!
pids+=("$hub")
sleep 2
echo "hub alone, idle:                 $(rss "$hub")"

for i in $(seq "$PEERS"); do
  ns="qmem-$i-$$"
  spaces+=("$ns")
  ip netns add "$ns"
  ip -n "$ns" link set lo up
  ip link add "qmp$i" netns "$ns" type veth peer name "qmh$i" netns "$H"
  ip -n "$H" link set "qmh$i" master qmbr up
  ip -n "$ns" addr add "10.99.1.$i/16" dev "qmp$i"
  ip -n "$ns" link set "qmp$i" up
  node "p$i" "peer-$i" "10.98.1.$i/16" 10.99.0.1:4433
  ip netns exec "$ns" "$QUICAP" up --config "$work/p$i/node.toml" 2>"$work/p$i.log" &
  pids+=($!)
done

connected=0
for _ in $(seq 120); do
  connected=$("$QUICAP" status --socket "$work/hub/control.sock" --json 2>/dev/null |
    python3 -c 'import json,sys; print(len(json.load(sys.stdin)["peers"]))' 2>/dev/null || echo 0)
  [ "$connected" -ge "$PEERS" ] && break
  sleep 0.5
done
[ "$connected" -ge "$PEERS" ] || { echo "error: only $connected of $PEERS peers connected" >&2; exit 1; }
sleep 3
echo "hub with $PEERS peers, idle:         $(rss "$hub")"

pings=()
for i in $(seq "$PEERS"); do
  ip netns exec "$H" ping -c 3 -i 0.2 -q "10.98.1.$i" >/dev/null &
  pings+=($!)
done
lost=0
for p in "${pings[@]}"; do wait "$p" || lost=$((lost + 1)); done
[ "$lost" -eq 0 ] || echo "warning: $lost peers did not answer every ping" >&2
echo "after pinging every peer:        $(rss "$hub")"

ns1="qmem-1-$$"
ip netns exec "$ns1" iperf3 -s -D -B 10.98.1.1 --pidfile "$work/iperf.pid" >/dev/null
sleep 0.5
ip netns exec "$H" iperf3 -c 10.98.1.1 -t 5 >/dev/null
ip netns exec "$H" iperf3 -c 10.98.1.1 -t 5 -R >/dev/null
kill "$(cat "$work/iperf.pid")" 2>/dev/null || true
echo "after 5 s of TCP each way:       $(rss "$hub")"
