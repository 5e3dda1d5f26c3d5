#!/usr/bin/env bash
# QUICAP memory after load: two nodes in namespaces over one veth, dialing each other.
# Prints both nodes' resident set size (RSS) idle, right after the load of one
# bench/run.sh pass (TCP with 1 and 4 streams, a UDP flood with iperf3's and with
# 4 MiB socket buffers, pings; each way, BENCH_REPS times), every 10 s for the minute
# after, and every minute of a UDP flood (FLOOD_SECONDS, default 600) and after it,
# then the bounds QUICAP keeps to: at most 30 MB after the load, back within 5 MB of
# idle within a minute, no more during the flood than after the load, nothing kept
# after it.
#
#   sudo ./bench/rss.sh
#   FLOOD_SECONDS=60 BENCH_REPS=1 sudo ./bench/rss.sh
set -euo pipefail

source "$(dirname "$0")/lib.sh"
SECS=${BENCH_SECONDS:-5}
REPS=${BENCH_REPS:-3}
FLOOD=${FLOOD_SECONDS:-600}
bench_setup rss

bench_pair qrss
inA() { ip netns exec "$A" "$@"; }
ip netns exec "$B" iperf3 -s -D -B 10.77.0.2 --pidfile "$work/iperf.pid" >/dev/null
sleep 5

rss_mb() { awk '/^VmRSS/ {printf "%.1f", $2 / 1024}' "/proc/$1/status"; }
line() { # LABEL: both nodes' RSS, recorded as the last figures
  last_a=$(rss_mb "$pid_a")
  last_b=$(rss_mb "$pid_b")
  printf '%-34s node-a %6s MB   node-b %6s MB\n' "$1" "$last_a" "$last_b"
}
line "idle"
idle_a=$last_a
idle_b=$last_b

echo "==> load: ${REPS} passes of bench/run.sh's runs, each way"
for _ in $(seq "$REPS"); do
  for dir in "" -R; do
    # shellcheck disable=SC2086 # dir: one flag or none
    {
      inA iperf3 -c 10.77.0.2 -t "$SECS" $dir
      inA iperf3 -c 10.77.0.2 -t "$SECS" -P 4 $dir
      inA iperf3 -c 10.77.0.2 -t "$SECS" -u -b 0 -l 1200 $dir
      inA iperf3 -c 10.77.0.2 -t "$SECS" -u -b 0 -l 1200 -w 4M $dir
    } >/dev/null
  done
  inA ping -c 20 -i 0.05 -q 10.77.0.2 >/dev/null
done
line "right after the load"
after_a=$last_a
after_b=$last_b
back=""
for s in 10 20 30 40 50 60; do
  sleep 10
  line "${s} s after"
  if [ -z "$back" ] && python3 -c 'import sys; a, b, ia, ib = map(float, sys.argv[1:]); sys.exit(not (a <= ia + 5 and b <= ib + 5))' \
    "$last_a" "$last_b" "$idle_a" "$idle_b"; then
    back=$s
  fi
done
minute_a=$last_a
minute_b=$last_b

echo "==> UDP flood through the tunnel for ${FLOOD} s"
inA iperf3 -c 10.77.0.2 -t "$FLOOD" -u -b 0 -l 1200 >/dev/null &
flood=$!
pids+=("$flood")
elapsed=0
peak_a=0
peak_b=0
while [ "$elapsed" -lt "$FLOOD" ]; do
  step=$((FLOOD - elapsed < 60 ? FLOOD - elapsed : 60))
  sleep "$step"
  elapsed=$((elapsed + step))
  line "flood, ${elapsed} s"
  peak_a=$(python3 -c 'import sys; print(max(map(float, sys.argv[1:])))' "$peak_a" "$last_a")
  peak_b=$(python3 -c 'import sys; print(max(map(float, sys.argv[1:])))' "$peak_b" "$last_b")
done
wait "$flood" || true
sleep 10
line "10 s after the flood"

verdict() { # CONDITION TEXT
  if python3 -c "import sys; sys.exit(not ($1))"; then echo "holds: $2"; else echo "FAILS: $2"; fi
}
echo "==> bounds"
verdict "$after_a <= 30 and $after_b <= 30" "RSS after the load at most 30 MB (${after_a}, ${after_b})"
if [ -n "$back" ]; then
  echo "holds: back within 5 MB of idle (${idle_a}, ${idle_b}) ${back} s after the load"
else
  echo "FAILS: not back within 5 MB of idle (${idle_a}, ${idle_b}) a minute after the load (${minute_a}, ${minute_b})"
fi
verdict "$peak_a <= $after_a + 1 and $peak_b <= $after_b + 1" \
  "the flood takes no more than the load did: at most ${peak_a}, ${peak_b} MB (1 MB of slack)"
verdict "$last_a <= $minute_a + 1 and $last_b <= $minute_b + 1" \
  "nothing kept after the flood: ${minute_a} -> ${last_a}, ${minute_b} -> ${last_b} MB (1 MB of slack)"
