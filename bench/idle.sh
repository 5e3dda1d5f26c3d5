#!/usr/bin/env bash
# QUICAP idle cost: two nodes in namespaces over one veth, linked and carrying nothing.
# After the link has settled, measures each node's CPU time and wake-ups (voluntary
# context switches of all its threads) over IDLE_SECONDS (default 60), and prints them
# per second, with the wake-ups of each thread by name.
#
#   sudo ./bench/idle.sh
#   IDLE_SECONDS=20 sudo ./bench/idle.sh
set -euo pipefail

source "$(dirname "$0")/lib.sh"
SECONDS_IDLE=${IDLE_SECONDS:-60}
bench_setup idle

A="qidle-a-$$"
B="qidle-b-$$"
bench_ns "$A"
bench_ns "$B"
bench_veth "$A" qia 10.96.0.1 "$B" qib 10.96.0.2
quicap_node "$work/a" node-a 10.95.0.1/24 node-b 10.96.0.2:4433
quicap_node "$work/b" node-b 10.95.0.2/24
run_node "$B" "$work/b"
pid_b=$!
run_node "$A" "$work/a"
pid_a=$!

for _ in $(seq 60); do
  ip netns exec "$A" ping -c1 -W1 10.95.0.2 >/dev/null 2>&1 && break
  sleep 0.5
done
ip netns exec "$A" ping -c1 -W1 10.95.0.2 >/dev/null || { echo "error: the nodes never linked" >&2; exit 1; }
# Links probe at the full rate for 5 s after they carried traffic, then once a second
# for 10 s, and every 5 s from then on (dormant).
sleep 20

# snapshot PID: "cpu_ticks wakeups" and, per thread name, its wake-ups.
snapshot() {
  local t
  t=$(awk '{print $14 + $15}' "/proc/$1/stat")
  echo "$t"
  for task in /proc/"$1"/task/*; do
    printf '%s %s\n' "$(tr ' ' '_' <"$task/comm")" "$(awk '/^voluntary_ctxt_switches/ {print $2}' "$task/status")"
  done
}

snapshot "$pid_a" >"$work/a.0"
snapshot "$pid_b" >"$work/b.0"
sleep "$SECONDS_IDLE"
snapshot "$pid_a" >"$work/a.1"
snapshot "$pid_b" >"$work/b.1"

report() { # NAME FILE0 FILE1
  python3 - "$1" "$2" "$3" "$SECONDS_IDLE" "$(getconf CLK_TCK)" <<'PY'
import collections, sys
name, f0, f1, secs, hz = sys.argv[1], sys.argv[2], sys.argv[3], int(sys.argv[4]), int(sys.argv[5])
def read(path):
    lines = open(path).read().split("\n")
    ticks = int(lines[0])
    threads = collections.Counter()
    for line in lines[1:]:
        if line.strip():
            comm, n = line.rsplit(" ", 1)
            threads[comm] += int(n)
    return ticks, threads
t0, w0 = read(f0)
t1, w1 = read(f1)
per = {k: (w1[k] - w0.get(k, 0)) / secs for k in w1}
total = sum(per.values())
cpu = (t1 - t0) / hz / secs * 100
detail = ", ".join(f"{k} {v:.1f}" for k, v in sorted(per.items(), key=lambda kv: -kv[1]) if v > 0)
print(f"{name}: CPU {cpu:.2f} % of a core, {total:.1f} wake-ups/s ({detail})")
PY
}

echo "==> idle for ${SECONDS_IDLE} s, one idle peer each"
report node-a "$work/a.0" "$work/a.1"
report node-b "$work/b.0" "$work/b.1"
