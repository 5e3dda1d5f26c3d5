#!/usr/bin/env bash
# Where a QUICAP node's CPU time goes: two nodes in two namespaces over veth, one
# iperf3 TCP stream through the tunnel, `perf record -e cpu-clock` on the sending and
# the receiving node for a few seconds. Prints each node's CPU use and its samples
# grouped by component (crypto, quinn, copies, kernel network path, ...), plus system
# calls per packet on the TUN.
#
#   sudo ./bench/profile.sh            # 4 s of samples
#   PROFILE_SECONDS=8 sudo ./bench/profile.sh
#   PROFILE_LOAD=udp sudo ./bench/profile.sh   # iperf3 UDP, 1200-byte datagrams, unlimited
#
# Needs `perf` (Debian package linux-perf; installed if missing). Software sampling
# (cpu-clock) works without hardware counters.
set -euo pipefail

source "$(dirname "$0")/lib.sh"
SECS=${PROFILE_SECONDS:-4}
case ${PROFILE_LOAD:-tcp} in
  tcp) LOAD_ARGS=() LOAD_NAME="TCP, 1 stream" ;;
  udp) LOAD_ARGS=(-u -b 0 -l 1200) LOAD_NAME="UDP, 1200-byte datagrams" ;;
  *) echo "error: PROFILE_LOAD must be tcp or udp" >&2; exit 1 ;;
esac
bench_setup profile
command -v perf >/dev/null || apt-get install -y -q linux-perf >/dev/null

bench_pair qprof
pa=$pid_a
pb=$pid_b
ip netns exec "$B" iperf3 -s -D -B 10.77.0.2 >/dev/null
sleep 0.5

ticks() { awk '{print $14 + $15}' "/proc/$1/stat"; }
tun_stat() { ip netns exec "$1" cat "/sys/class/net/quicap0/statistics/$2"; }

ip netns exec "$A" iperf3 -c 10.77.0.2 "${LOAD_ARGS[@]}" -t $((SECS + 3)) -J >"$work/iperf.json" &
load=$!
sleep 1.5
ta=$(ticks "$pa"); tb=$(ticks "$pb")
pa0=$(tun_stat "$A" tx_packets); ba0=$(tun_stat "$A" tx_bytes)
pb0=$(tun_stat "$B" rx_packets); bb0=$(tun_stat "$B" rx_bytes)
perf record -q -e cpu-clock -F 1999 -g -p "$pa" -o "$work/a.data" -- sleep "$SECS" >/dev/null 2>&1 &
rec=$!
perf stat -e 'syscalls:sys_enter_read,syscalls:sys_enter_write,syscalls:sys_enter_sendmsg,syscalls:sys_enter_recvmmsg' \
  -p "$pb" -o "$work/b.stat" -- sleep "$SECS" >/dev/null 2>&1 &
stat=$!
perf record -q -e cpu-clock -F 1999 -g -p "$pb" -o "$work/b.data" -- sleep "$SECS" >/dev/null 2>&1
wait "$rec" "$stat" || true
hz=$(getconf CLK_TCK)
ua=$(( ($(ticks "$pa") - ta) * 100 / hz / SECS )); ub=$(( ($(ticks "$pb") - tb) * 100 / hz / SECS ))
pkts_a=$(( $(tun_stat "$A" tx_packets) - pa0 )); bytes_a=$(( $(tun_stat "$A" tx_bytes) - ba0 ))
pkts_b=$(( $(tun_stat "$B" rx_packets) - pb0 )); bytes_b=$(( $(tun_stat "$B" rx_bytes) - bb0 ))
wait "$load" || true
gbps=$(python3 -c 'import json,sys; e=json.load(open(sys.argv[1]))["end"]; print("%.2f" % ((e.get("sum_received") or e["sum"])["bits_per_second"] / 1e9))' "$work/iperf.json")

group() { # perf data file
  perf report -i "$1" --no-children --sort dso,sym -g none 2>/dev/null | python3 -c '
import re, sys
cats = [
    ("AEAD (AES-GCM in ring)", r"aes_gcm|gcm_ghash|aes_hw|aead|CRYPTO_memcmp"),
    ("user-space memcpy", r"memmove|memcpy"),
    ("kernel copies to/from user space", r"_copy_to_iter|_copy_from_iter|copy_user"),
    ("quinn (QUIC state, packets, ACKs)", r"quinn"),
    ("TUN split/coalesce/checksums (tun-rs)", r"tun_rs"),
    ("scheduler, wake-ups, locks", r"finish_task_switch|_raw_spin_unlock|schedule|try_to_wake|irqentry_exit|futex|reschedule|sock_def_readable|__wake_up"),
    ("tokio, futures, bytes, allocator", r"tokio|futures|bytes::|malloc|_int_free|cfree|unlink_chunk|btree|alloc::"),
    ("quicap itself", r"quicap::"),
    ("rest of the kernel (UDP/IP, veth, TUN, softirq)", r"\[k\]"),
]
total = {c: 0.0 for c, _ in cats}
other = 0.0
for line in sys.stdin:
    m = re.match(r"\s*([\d.]+)%\s+(\S+)\s+(\[.\])\s+(.*)", line)
    if not m:
        continue
    pct, name = float(m.group(1)), " ".join((m.group(3), m.group(4), m.group(2)))
    for c, rx in cats:
        if re.search(rx, name):
            total[c] += pct
            break
    else:
        other += pct
for c, v in sorted(total.items(), key=lambda kv: -kv[1]):
    print(f"  {c:<50} {v:5.1f} %")
print("  %-50s %5.1f %%" % ("other", other))
'
}

echo
echo "$LOAD_NAME: $gbps Gb/s received"
# What the bytes per TUN read or write say: far above the MTU means super-packets.
per_call() { # bytes-per-call, what far above the MTU means, what about one packet means
  if [ "$1" -gt 2800 ]; then echo "  (far above the MTU: $2)"
  else echo "  (about one packet per call: $3)"; fi
}
echo "sender (node-a): $ua % of a core; TUN reads: $((pkts_a / SECS))/s, $((bytes_a / (pkts_a + 1))) bytes each"
per_call $((bytes_a / (pkts_a + 1))) "the kernel hands over TSO/USO super-packets" \
  "no super-packets; expected for iperf3's UDP, which sends one datagram per call, otherwise offloads are off"
group "$work/a.data"
echo "receiver (node-b): $ub % of a core; TUN writes: $((pkts_b / SECS))/s, $((bytes_b / (pkts_b + 1))) bytes each"
per_call $((bytes_b / (pkts_b + 1))) "flows are coalesced before the kernel sees them" \
  "no coalescing: offloads are off or the kernel rejected a coalesced write"
group "$work/b.data"
echo "receiver system calls per second (TUN writes are 'write'):"
sed 's/,//g' "$work/b.stat" | awk '/syscalls:/ {printf "  %-40s %d/s\n", $2, $1 / '"$SECS"'}'
