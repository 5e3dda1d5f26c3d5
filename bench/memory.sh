#!/usr/bin/env bash
# QUICAP memory: resident set size (RSS) of one node alone, then with N peers connected
# (default 50, each in its own network namespace, all dialing it over one bridge), then
# after traffic to every peer and a TCP transfer through one of them. Prints one line
# per state with the hub's RSS and its peak (VmHWM).
#
#   sudo ./bench/memory.sh            # 50 peers
#   sudo ./bench/memory.sh 20         # 20 peers
set -euo pipefail

source "$(dirname "$0")/lib.sh"
PEERS=${1:-50}
[ "$PEERS" -ge 1 ] && [ "$PEERS" -le 250 ] || { echo "error: peers must be 1-250" >&2; exit 1; }
bench_setup memory

H="qmem-hub-$$"
bench_ns "$H"
ip -n "$H" link add qmbr type bridge
ip -n "$H" addr add 10.99.0.1/16 dev qmbr
ip -n "$H" link set qmbr up

rss() { # pid -> "RSS MB, peak MB"
  awk '/^VmRSS/ {r=$2} /^VmHWM/ {h=$2} END {printf "%.1f MB (peak %.1f MB)", r/1024, h/1024}' "/proc/$1/status"
}

# idle_load PID: the process's CPU time and wake-ups over 5 s.
idle_load() {
  local hz t0 t1 w0 w1
  hz=$(getconf CLK_TCK)
  wakeups() { awk '/^voluntary_ctxt_switches/ {s += $2} END {print s}' /proc/"$1"/task/*/status; }
  t0=$(awk '{print $14 + $15}' "/proc/$1/stat"); w0=$(wakeups "$1")
  sleep 5
  t1=$(awk '{print $14 + $15}' "/proc/$1/stat"); w1=$(wakeups "$1")
  python3 -c 'import sys; t, w, hz = map(int, sys.argv[1:]); print(f"CPU {t / hz / 5 * 100:.1f} % of a core, {w / 5:.0f} wake-ups/s")' \
    "$((t1 - t0))" "$((w1 - w0))" "$hz"
}

quicap_node "$work/hub" hub 10.98.0.1/16
run_node "$H" "$work/hub"
hub=$!
sleep 2
echo "hub alone, idle:                 $(rss "$hub")"

for i in $(seq "$PEERS"); do
  ns="qmem-$i-$$"
  bench_ns "$ns"
  ip link add "qmp$i" netns "$ns" type veth peer name "qmh$i" netns "$H"
  ip -n "$H" link set "qmh$i" master qmbr up
  ip -n "$ns" addr add "10.99.1.$i/16" dev "qmp$i"
  ip -n "$ns" link set "qmp$i" up
  quicap_node "$work/p$i" "peer-$i" "10.98.1.$i/16" hub 10.99.0.1:4433
  run_node "$ns" "$work/p$i"
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
# Links probe at the full rate while they carry traffic, and for 5 s after they open.
sleep 6
echo "  6 s later, over 5 s:           $(idle_load "$hub")"

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
