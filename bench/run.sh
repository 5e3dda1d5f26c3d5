#!/usr/bin/env bash
# QUICAP benchmark: measures, in one run and over the same veth pair between two network
# namespaces, the raw link, QUICAP (built with profile-guided optimization and BOLT by
# scripts/build-pgo.sh, and as a plain release build), QUICAP forwarded through one
# intermediate node,
# Quincy (quincy-server/quincy-client, mutual TLS and Noise) and userspace WireGuard
# (boringtun-cli and Debian's wireguard-go, configured with wg), Nebula and OpenVPN: iperf3 TCP with 1 and 4
# streams, iperf3 UDP (with iperf3's default socket buffers and with 4 MiB ones, which
# needs net.core.rmem_max of at least 4 MiB), the tunnel's CPU per packet of that UDP
# flood, and ping RTT idle and under a TCP load. Prints a table with each figure's
# ratio to the others.
#
#   sudo ./bench/run.sh                 # print the table
#   sudo ./bench/run.sh --write         # also write docs/benchmarks.md
#
# Environment: BENCH_SECONDS (per iperf3 run, default 5), BENCH_PASSES (passes over every
# system, default 3), BENCH_REPS (runs of each figure per pass, default 1; the median of
# all runs is reported), BENCH_MTU (every tunnel's MTU, default 1420), BENCH_ONLY (a subset of "raw quicap quicap-plain quicap-never
# quicap-tcp quicap-camo quicap-camo-tcp relay quincy wg wggo nebula openvpn" to measure, default all; the others print as n/a), BENCH_PGO (1, the
# default: QUICAP is the PGO build and "quicap-plain" the plain one; 0: QUICAP is the plain
# release build, no PGO build is made), BORINGTUN (path of boringtun-cli; installed with
# `cargo install boringtun-cli` if missing), NEBULA_ROUTINES (Nebula's `routines`,
# default the number of cores, as its documentation advises). wireguard-go, Nebula and
# OpenVPN are Debian's packages (scripts/deps.sh --bench installs them).
set -euo pipefail

source "$(dirname "$0")/lib.sh"
command -v python3 >/dev/null || { echo "error: python3 is needed to read iperf3's JSON" >&2; exit 1; }

SECS=${BENCH_SECONDS:-5}
# One tunnel MTU for every system: WireGuard's default, which each of them can take.
MTU=${BENCH_MTU:-1420}
export TUN_MTU=$MTU
# Every system is measured in PASSES passes, one after the other, each started afresh
# (so a figure that depends on where the scheduler first puts a system's threads is
# taken over several placements, and one that drifts with the machine over several
# moments), REPS runs of each figure per pass.
PASSES=${BENCH_PASSES:-3}
REPS=${BENCH_REPS:-1}
WRITE=0
[ "${1:-}" = "--write" ] && WRITE=1
ONLY=${BENCH_ONLY:-raw quicap quicap-plain quicap-never quicap-tcp quicap-camo quicap-camo-tcp relay quincy wg wggo nebula openvpn}
PGO=${BENCH_PGO:-1}
want() { [[ " $ONLY " == *" $1 "* ]]; }
if [ "$WRITE" = 1 ] && { [ -n "${BENCH_ONLY:-}" ] || [ "$PGO" != 1 ]; }; then
  echo "error: --write needs every figure; unset BENCH_ONLY and BENCH_PGO" >&2
  exit 1
fi

BORINGTUN=${BORINGTUN:-$(command -v boringtun-cli || echo "$HOME/.cargo/bin/boringtun-cli")}
if want wg && [ ! -x "$BORINGTUN" ]; then
  echo "==> installing boringtun-cli from crates.io"
  cargo install boringtun-cli --locked --quiet
  BORINGTUN="$HOME/.cargo/bin/boringtun-cli"
fi
QUINCY_DIR=${QUINCY_DIR:-$HOME/.cargo/bin}
if want quincy && { [ ! -x "$QUINCY_DIR/quincy-server" ] || [ ! -x "$QUINCY_DIR/quincy-client" ]; }; then
  echo "==> installing quincy-server and quincy-client from crates.io"
  cargo install quincy-server quincy-client --locked --quiet
  QUINCY_DIR="$HOME/.cargo/bin"
fi

# iperf3 -w 4M fails where the kernel caps socket buffers lower.
UDP_4M=1
if [ "$(cat /proc/sys/net/core/rmem_max)" -lt 4194304 ]; then
  echo "note: net.core.rmem_max is below 4 MiB; the UDP row with 4 MiB sockets is skipped" >&2
  UDP_4M=0
fi

if [ "$PGO" = 1 ]; then
  echo "==> building quicap with profile-guided optimization (scripts/build-pgo.sh)"
  QUICAP_PGO=$("$(dirname "$0")/../scripts/build-pgo.sh")
fi
bench_setup bench --bench
QUICAP_PLAIN=$QUICAP
QUICAP=${QUICAP_PGO:-$QUICAP}
A="qbench-a-$$"
B="qbench-b-$$"
C="qbench-c-$$"

bench_ns "$A"
bench_ns "$B"
bench_veth "$A" qbva 192.0.2.1 "$B" qbvb 192.0.2.2
inA() { ip netns exec "$A" "$@"; }
inB() { ip netns exec "$B" "$@"; }

json_field() { # file expr
  python3 - "$1" "$2" <<'PY'
import json, sys
d = json.load(open(sys.argv[1]))
if "error" in d:
    sys.exit(f"iperf3 failed: {d['error']}")
end = d["end"]
if sys.argv[2] == "tcp":
    print(f'{end["sum_received"]["bits_per_second"] / 1e9:.3f}')
else:
    s = end.get("sum_received") or end["sum"]
    print(f'{s["bits_per_second"] / 1e9:.3f}')
PY
}

spread() { printf '%s\n' "$@" | sort -g | awk 'NR==1{lo=$1} {hi=$1} END {printf "%.2f-%.2f", lo, hi}'; }

# tunnel_cpu PID...: CPU time (clock ticks) the processes used so far, all threads.
tunnel_cpu() {
  local total=0 pid
  for pid in "$@"; do
    total=$((total + $(awk '{print $14 + $15}' "/proc/$pid/stat")))
  done
  echo "$total"
}

# measure LABEL DEST [SERVER-NAMESPACE, default B]: REPS runs of each figure, kept (add)
# as LABEL's tcp1, tcp4, udp, udpw, ping and pingload, and udpcpu when TUNNEL_PIDS (the tunnel's processes) and
# TUNNEL_DEV (its interface in A) are set: their CPU time per packet they read from
# that interface during the UDP flood, in microseconds.
measure() {
  local label=$1 dst=$2 srv=${3:-$B} f="$work/iperf.json" t1=() t4=() u=() uw=() pi=() pl=() uc=()
  local hz c0 p0 stats
  hz=$(getconf CLK_TCK)
  ip netns exec "$srv" iperf3 -s -D -B "$dst" --pidfile "$work/iperf.pid" >/dev/null
  sleep 0.5
  for _ in $(seq "$REPS"); do
    inA iperf3 -c "$dst" -t "$SECS" -J >"$f"; t1+=("$(json_field "$f" tcp)")
    inA iperf3 -c "$dst" -t "$SECS" -P 4 -J >"$f"; t4+=("$(json_field "$f" tcp)")
    if [ -n "${TUNNEL_PIDS:-}" ]; then
      stats="/sys/class/net/$TUNNEL_DEV/statistics/tx_packets"
      # shellcheck disable=SC2086
      c0=$(tunnel_cpu $TUNNEL_PIDS); p0=$(inA cat "$stats")
    fi
    inA iperf3 -c "$dst" -t "$SECS" -u -b 0 -l 1200 -J >"$f"; u+=("$(json_field "$f" udp)")
    if [ -n "${TUNNEL_PIDS:-}" ]; then
      # shellcheck disable=SC2086
      uc+=("$(python3 -c 'import sys; c, p, hz = map(int, sys.argv[1:]); print(f"{c / hz * 1e6 / max(p, 1):.2f}")' \
        "$(($(tunnel_cpu $TUNNEL_PIDS) - c0))" "$(($(inA cat "$stats") - p0))" "$hz")")
    fi
    if [ "$UDP_4M" = 1 ]; then
      inA iperf3 -c "$dst" -t "$SECS" -u -b 0 -l 1200 -w 4M -J >"$f"; uw+=("$(json_field "$f" udp)")
    fi
    pi+=("$(inA ping -c 20 -i 0.05 -q "$dst" | awk -F/ '/^rtt/ {print $5}')")
    inA iperf3 -c "$dst" -t $((SECS + 2)) -J >/dev/null &
    local load=$!
    sleep 1
    pl+=("$(inA ping -c 20 -i 0.1 -q "$dst" | awk -F/ '/^rtt/ {print $5}')")
    wait "$load" || true
  done
  kill "$(cat "$work/iperf.pid")" 2>/dev/null || true
  sleep 0.3
  add "$label" tcp1 "${t1[@]}"
  add "$label" tcp4 "${t4[@]}"
  add "$label" udp "${u[@]}"
  add "$label" udpw "${uw[@]}"
  add "$label" ping "${pi[@]}"
  add "$label" pingload "${pl[@]}"
  add "$label" udpcpu "${uc[@]}"
}

# add LABEL KEY FIGURE...: keeps the figures of one pass in S_<LABEL>_<KEY>, for
# summarise.
labels=" "
add() {
  local label=$1 key=$2
  shift 2
  [ $# -gt 0 ] || return 0
  [[ "$labels" == *" $label "* ]] || labels+="$label "
  eval "S_${label}_${key}+=\" $*\""
}

# summarise: R_<LABEL>_<KEY> (the median over every pass) and R_<LABEL>_<KEY>_spread
# (the lowest and highest run) from the figures add kept.
summarise() {
  local label key figures
  for label in $labels; do
    for key in tcp1 tcp4 udp udpw ping pingload udpcpu; do
      eval "figures=\${S_${label}_${key}:-}"
      [ -n "$figures" ] || continue
      # shellcheck disable=SC2086 # figures: one word per run
      eval "R_${label}_${key}=$(median $figures) R_${label}_${key}_spread=$(spread $figures)"
    done
  done
}

stop_nodes() {
  for pid in "${pids[@]}"; do kill "$pid" 2>/dev/null || true; done
  for pid in "${pids[@]}"; do wait "$pid" 2>/dev/null || true; done
  pids=()
}
# measure_up LABEL NAME DEST LOG...: waits up to 15 s for a ping to DEST through the
# tunnel NAME that the processes in pids make, measures it as LABEL (their CPU, and
# packets on the interface in A with an address of DEST's /24), then stops them; exits
# with the LOGs if the ping never answers.
measure_up() {
  local label=$1 name=$2 dst=$3 dev
  shift 3
  for _ in $(seq 150); do inA ping -c 1 -W 1 "$dst" >/dev/null 2>&1 && break; sleep 0.1; done
  if ! inA ping -c 1 -W 1 "$dst" >/dev/null 2>&1; then
    echo "error: $name did not come up; logs:" >&2
    cat "$@" >&2
    exit 1
  fi
  dev=$(inA ip -o -4 addr show | awk -v net="${dst%.*}." 'index($4, net) == 1 {print $2; exit}')
  TUNNEL_PIDS="${pids[*]}" TUNNEL_DEV=$dev measure "$label" "$dst"
  stop_nodes
}

# quicap_pair LABEL [NODE_EXTRA]: nodes a (in A) and b (in B) dialing each other.
quicap_pair() {
  NODE_EXTRA=${2:-} quicap_node "$work/a" node-a 10.77.0.1/24 node-b 192.0.2.2:4433
  NODE_EXTRA=${2:-} quicap_node "$work/b" node-b 10.77.0.2/24 node-a 192.0.2.1:4433
  run_node "$A" "$work/a"
  run_node "$B" "$work/b"
  measure_up "$1" QUICAP 10.77.0.2 "$work/a.log" "$work/b.log"
}

web_pin() { # dir: a self-signed web certificate in dir, prints its web-pin
  openssl req -x509 -newkey ec -pkeyopt ec_paramgen_curve:P-256 -nodes -days 2 \
    -subj "/CN=www.example.test" -addext "subjectAltName=DNS:www.example.test" \
    -keyout "$1/web.key" -out "$1/web.crt" 2>/dev/null
  printf 'sha256//%s' "$(openssl x509 -in "$1/web.crt" -pubkey -noout |
    openssl pkey -pubin -outform der | openssl dgst -sha256 -binary | base64)"
}
camo_pair() { # label [peer lines]: two camouflaged nodes dialing each other
  mkdir -p "$work/web-a" "$work/web-b"
  local pin_a pin_b
  pin_a=$(web_pin "$work/web-a")
  pin_b=$(web_pin "$work/web-b")
  camo_peer() { printf 'server-name = "www.example.test"\nweb-pin = "%s"\n%s\n' "$1" "$2"; }
  NODE_EXTRA='mode = "camouflage"' PEER_EXTRA=$(camo_peer "$pin_b" "${2:-}") \
    quicap_node "$work/a" node-a 10.77.0.1/24 node-b 192.0.2.2:4433
  NODE_EXTRA='mode = "camouflage"' PEER_EXTRA=$(camo_peer "$pin_a" "${2:-}") \
    quicap_node "$work/b" node-b 10.77.0.2/24 node-a 192.0.2.1:4433
  for n in a b; do
    printf '[web]\ncerts = [{ cert = "%s", key = "%s" }]\n' \
      "$work/web-$n/web.crt" "$work/web-$n/web.key" >>"$work/$n/node.toml"
  done
  run_node "$A" "$work/a"
  run_node "$B" "$work/b"
  measure_up "$1" QUICAP 10.77.0.2 "$work/a.log" "$work/b.log"
}

# quincy_pair LABEL MODE [WORKERS]: quincy-server in B, quincy-client in A, in MODE
# "tls" (mutual TLS: a throwaway CA for the server, the client pinned by fingerprint)
# or "noise" (Noise NK with X25519 keys, the mode of Quincy's own performance
# figures); socket and datagram buffers at Quincy's defaults (2 MiB, 4 MiB), the MTU
# the others use; each end's tokio runtime with WORKERS worker threads
# (TOKIO_WORKER_THREADS), by default its own choice, one per core.
quincy_pair() {
  local label=$1 mode=$2 q="$work/quincy-$2" server_protocol client_protocol users
  local run=(env)
  [ -n "${3:-}" ] && run+=("TOKIO_WORKER_THREADS=$3")
  mkdir -p "$q"
  if [ "$mode" = tls ]; then
    openssl req -x509 -newkey ec -pkeyopt ec_paramgen_curve:P-256 -nodes -days 2 \
      -subj "/CN=quincy-bench-ca" -keyout "$q/ca.key" -out "$q/ca.crt" 2>/dev/null
    openssl req -new -newkey ec -pkeyopt ec_paramgen_curve:P-256 -nodes \
      -subj "/CN=quincy-server" -keyout "$q/server.key" -out "$q/server.csr" 2>/dev/null
    printf 'subjectAltName=IP:192.0.2.2\nbasicConstraints=critical,CA:FALSE\nextendedKeyUsage=serverAuth\n' >"$q/server.ext"
    openssl x509 -req -in "$q/server.csr" -CA "$q/ca.crt" -CAkey "$q/ca.key" -CAcreateserial \
      -days 2 -extfile "$q/server.ext" -out "$q/server.crt" 2>/dev/null
    openssl req -x509 -newkey ec -pkeyopt ec_paramgen_curve:P-256 -nodes -days 2 \
      -subj "/CN=quincy-client" -addext "basicConstraints=critical,CA:FALSE" \
      -addext "extendedKeyUsage=clientAuth" -keyout "$q/client.key" -out "$q/client.crt" 2>/dev/null
    users="authorized_certs = [\"sha256:$(openssl x509 -in "$q/client.crt" -outform DER | sha256sum | cut -d' ' -f1)\"]"
    server_protocol="mode = \"tls\"
certificate_file = \"$q/server.crt\"
certificate_key_file = \"$q/server.key\""
    client_protocol="mode = \"tls\"
trusted_certificate_paths = [\"$q/ca.crt\"]
client_certificate_file = \"$q/client.crt\"
client_certificate_key_file = \"$q/client.key\""
  else
    # Noise keys are raw X25519 keys in base64, as wg makes them.
    (
      umask 077
      wg genkey >"$q/server.key"; wg pubkey <"$q/server.key" >"$q/server.pub"
      wg genkey >"$q/client.key"; wg pubkey <"$q/client.key" >"$q/client.pub"
    )
    users="authorized_keys = [\"$(cat "$q/client.pub")\"]"
    server_protocol="mode = \"noise\"
private_key = \"$(cat "$q/server.key")\""
    client_protocol="mode = \"noise\"
server_public_key = \"$(cat "$q/server.pub")\"
private_key = \"$(cat "$q/client.key")\""
  fi
  printf '[users.bench]\n%s\n' "$users" >"$q/users.toml"
  cat >"$q/server.toml" <<TOML
name = "quincy-bench"
tunnel_network = "10.66.0.1/24"
users_file = "$q/users.toml"
[protocol]
$server_protocol
[connection]
mtu = $MTU
[log]
level = "warn"
TOML
  cat >"$q/client.toml" <<TOML
connection_string = "192.0.2.2:55555"
[protocol]
$client_protocol
[connection]
mtu = $MTU
[log]
level = "warn"
TOML
  ip netns exec "$B" "${run[@]}" "$QUINCY_DIR/quincy-server" --config-path "$q/server.toml" >"$work/quincy-server.log" 2>&1 & pids+=($!)
  sleep 1
  ip netns exec "$A" "${run[@]}" "$QUINCY_DIR/quincy-client" --config-path "$q/client.toml" >"$work/quincy-client.log" 2>&1 & pids+=($!)
  measure_up "$label" "Quincy ($mode)" 10.66.0.1 "$work/quincy-server.log" "$work/quincy-client.log"
}

# wg_pair LABEL DEV PORT NET: two WireGuard interfaces DEV-A/DEV-B (made by the
# implementation in $WG_LAUNCH, run in each namespace with the interface name), keyed
# and peered with wg on UDP port PORT, NET.1 and NET.2 at MTU $MTU; measured as LABEL.
wg_pair() {
  local label=$1 dev=$2 port=$3 net=$4 n ns
  umask 077
  for n in A B; do
    wg genkey >"$work/$dev$n.key"
    wg pubkey <"$work/$dev$n.key" >"$work/$dev$n.pub"
  done
  for n in A B; do
    ns=$([ "$n" = A ] && echo "$A" || echo "$B")
    # shellcheck disable=SC2086 # WG_LAUNCH: a command and its arguments
    ip netns exec "$ns" env WG_SUDO="${WG_SUDO:-}" ${WG_ENV:-} $WG_LAUNCH "$dev$n$$" >"$work/$dev$n.log" 2>&1
  done
  ip netns exec "$A" wg set "$dev"A$$ private-key "$work/${dev}A.key" listen-port "$port" \
    peer "$(cat "$work/${dev}B.pub")" allowed-ips "$net.2/32" endpoint "192.0.2.2:$port"
  ip netns exec "$B" wg set "$dev"B$$ private-key "$work/${dev}B.key" listen-port "$port" \
    peer "$(cat "$work/${dev}A.pub")" allowed-ips "$net.1/32" endpoint "192.0.2.1:$port"
  ip -n "$A" addr add "$net.1/24" dev "$dev"A$$
  ip -n "$B" addr add "$net.2/24" dev "$dev"B$$
  ip -n "$A" link set "$dev"A$$ mtu "$MTU" up
  ip -n "$B" link set "$dev"B$$ mtu "$MTU" up
  for _ in $(seq 100); do inA ping -c 1 -W 1 "$net.2" >/dev/null 2>&1 && break; sleep 0.1; done
  TUNNEL_PIDS="$(pgrep -d ' ' -f "$WG_LAUNCH $dev[AB]$$")" TUNNEL_DEV="${dev}A$$" measure "$label" "$net.2"
  pkill -f "$WG_LAUNCH $dev[AB]$$" || true
  # The next pass makes the same interfaces: wait until the processes and their
  # interfaces are gone.
  for _ in $(seq 100); do
    pgrep -f "$WG_LAUNCH $dev[AB]$$" >/dev/null || ip -n "$A" link show "${dev}A$$" >/dev/null 2>&1 ||
      ip -n "$B" link show "${dev}B$$" >/dev/null 2>&1 || break
    sleep 0.1
  done
}

fp() { openssl x509 -in "$1" -noout -fingerprint -sha256 | cut -d= -f2; }

# one_pass: every system in turn, each started afresh.
one_pass() {
if want raw; then
  echo "==> raw veth"
  measure raw 192.0.2.2
fi
if want quicap; then
  echo "==> QUICAP"
  quicap_pair quicap
fi
if want quicap-plain && [ "$PGO" = 1 ]; then
  echo "==> QUICAP, release build without PGO"
  QUICAP=$QUICAP_PLAIN quicap_pair quicapplain
fi
if want quicap-never; then
  echo "==> QUICAP with node.realtime = \"never\" (normal scheduling throughout)"
  quicap_pair quicapnever 'realtime = "never"'
fi
if want quicap-tcp; then
  echo "==> QUICAP over TLS/TCP (node-a dials with transport = \"tcp\", node-b takes the dial)"
  PEER_EXTRA='transport = "tcp"' quicap_node "$work/a" node-a 10.77.0.1/24 node-b 192.0.2.2:4433
  quicap_node "$work/b" node-b 10.77.0.2/24
  run_node "$A" "$work/a"
  run_node "$B" "$work/b"
  measure_up quicaptcp QUICAP 10.77.0.2 "$work/a.log" "$work/b.log"
fi

if want quicap-camo; then
  echo "==> QUICAP in camouflage mode (web fronts; node links inside HTTP/3 CONNECT-IP)"
  camo_pair quicapcamo
fi
if want quicap-camo-tcp; then
  echo "==> QUICAP in camouflage mode over TCP (node links after an HTTPS upgrade to connect-ip)"
  camo_pair quicapcamotcp 'transport = "tcp"'
fi

if want relay; then
echo "==> QUICAP through one intermediate node (A -> B -> C)"
# C hangs off B on a second veth; A and C each know only B.
if [ ! -e "/run/netns/$C" ]; then
  bench_ns "$C"
  bench_veth "$B" qbvc 198.51.100.2 "$C" qbvd 198.51.100.3
fi
quicap_node "$work/a" node-a 10.77.0.1/24 node-b 192.0.2.2:4433
quicap_node "$work/b" node-b 10.77.0.2/24
quicap_node "$work/c" node-c 10.77.0.3/24 node-b 198.51.100.2:4433
run_node "$B" "$work/b"
run_node "$A" "$work/a"
run_node "$C" "$work/c"
for _ in $(seq 200); do inA ping -c 1 -W 1 10.77.0.3 >/dev/null 2>&1 && break; sleep 0.1; done
TUNNEL_PIDS="${pids[*]}" TUNNEL_DEV=quicap0 measure relay 10.77.0.3 "$C"
stop_nodes
fi

if want quincy; then
  echo "==> Quincy (QUIC VPN on quinn + tun-rs), mutual TLS"
  quincy_pair quincy tls
  echo "==> Quincy, mutual TLS, one tokio worker thread at each end"
  quincy_pair quincy1t tls 1
  echo "==> Quincy, Noise NK"
  quincy_pair quincynoise noise
fi

if want wg; then
  echo "==> boringtun (userspace WireGuard), its default 4 threads"
  WG_SUDO=1 WG_LAUNCH="$BORINGTUN --disable-drop-privileges" wg_pair wg wgq 51820 10.88.0
  echo "==> boringtun, 1 thread (WG_THREADS=1)"
  WG_ENV=WG_THREADS=1 WG_SUDO=1 WG_LAUNCH="$BORINGTUN --disable-drop-privileges" wg_pair wg1t wgs 51822 10.86.0
fi

if want wggo; then
  echo "==> wireguard-go (userspace WireGuard, Debian's)"
  # Its own recommendation for throughput is its defaults (GOMAXPROCS = the cores).
  WG_LAUNCH=wireguard-go wg_pair wggo wgg 51821 10.87.0
fi

if want nebula; then
echo "==> Nebula (Debian's)"
nb="$work/nebula"
rm -rf "$nb"
mkdir -p "$nb"
nebula-cert ca -name bench -out-crt "$nb/ca.crt" -out-key "$nb/ca.key"
for n in A B; do
  ip=$([ "$n" = A ] && echo 10.86.0.1 || echo 10.86.0.2)
  peer=$([ "$n" = A ] && echo "10.86.0.2: [\"192.0.2.2:4242\"]" || echo "10.86.0.1: [\"192.0.2.1:4242\"]")
  nebula-cert sign -name "node-$n" -ip "$ip/24" -ca-crt "$nb/ca.crt" -ca-key "$nb/ca.key" \
    -out-crt "$nb/$n.crt" -out-key "$nb/$n.key"
  # Nebula's own advice for throughput: as many routines as cores (Linux), larger
  # socket buffers; the MTU the others use.
  cat >"$nb/$n.yml" <<YML
pki:
  ca: $nb/ca.crt
  cert: $nb/$n.crt
  key: $nb/$n.key
static_host_map:
  $peer
lighthouse:
  am_lighthouse: false
listen:
  host: 0.0.0.0
  port: 4242
  read_buffer: 10485760
  write_buffer: 10485760
routines: ${NEBULA_ROUTINES:-$(nproc)}
punchy:
  punch: false
tun:
  dev: neb$n$$
  mtu: $MTU
logging:
  level: warning
firewall:
  outbound:
    - port: any
      proto: any
      host: any
  inbound:
    - port: any
      proto: any
      host: any
YML
  ns=$([ "$n" = A ] && echo "$A" || echo "$B")
  ip netns exec "$ns" nebula -config "$nb/$n.yml" >"$work/nebula$n.log" 2>&1 & pids+=($!)
done
measure_up nebula Nebula 10.86.0.2 "$work/nebulaA.log" "$work/nebulaB.log"
fi

if want openvpn; then
echo "==> OpenVPN (Debian's, UDP, AES-128-GCM, no DCO)"
ov="$work/openvpn"
mkdir -p "$ov"
for n in A B; do
  openssl req -x509 -newkey ec -pkeyopt ec_paramgen_curve:P-256 -nodes -days 2 \
    -subj "/CN=openvpn-$n" -keyout "$ov/$n.key" -out "$ov/$n.crt" 2>/dev/null
done
for n in A B; do
  ns=$([ "$n" = A ] && echo "$A" || echo "$B")
  other=$([ "$n" = A ] && echo B || echo A)
  remote=$([ "$n" = A ] && echo 192.0.2.2 || echo 192.0.2.1)
  ifc=$([ "$n" = A ] && echo "10.85.0.1 10.85.0.2" || echo "10.85.0.2 10.85.0.1")
  role=$([ "$n" = A ] && echo --tls-client || echo --tls-server)
  # Point to point with a fingerprint of the other's self-signed certificate; the
  # kernel's data channel offload is not used (the module is not on every machine):
  # OpenVPN's own userspace data path, with the socket buffers and queue its manual
  # suggests for throughput.
  # shellcheck disable=SC2086 # ifc: two addresses
  ip netns exec "$ns" openvpn --dev tun --dev-type tun --dev "ovpn$n$$" --proto udp \
    --lport 1194 --rport 1194 --remote "$remote" --ifconfig $ifc $role --dh none \
    --cert "$ov/$n.crt" --key "$ov/$n.key" --peer-fingerprint "$(fp "$ov/$other.crt")" \
    --data-ciphers AES-128-GCM --cipher AES-128-GCM --tun-mtu "$MTU" --disable-dco \
    --sndbuf 4194304 --rcvbuf 4194304 --txqueuelen 1000 --verb 1 \
    >"$work/openvpn$n.log" 2>&1 & pids+=($!)
done
measure_up openvpn OpenVPN 10.85.0.2 "$work/openvpnA.log" "$work/openvpnB.log"
fi
}

for pass in $(seq "$PASSES"); do
  [ "$PASSES" = 1 ] || echo "==> pass $pass of $PASSES"
  one_pass
done
summarise

ratio() { python3 -c "import sys; a,b=sys.argv[1],sys.argv[2]; print('n/a' if 'n/a' in (a,b) or not float(b) else f'{float(a)/float(b):.2f}')" "$1" "$2"; }
val() { eval echo "\${R_$1:-n/a}"; }

# best_peer KEY: "RATIO (PEER)", QUICAP's figure against the best peer's for KEY (the
# highest throughput, the lowest RTT or CPU), over every peer measured.
best_peer() {
  local k=$1 args=() p
  for p in quincy:Quincy-TLS quincy1t:Quincy-TLS-1-thread quincynoise:Quincy-Noise wg:boringtun wg1t:boringtun-1-thread wggo:wireguard-go nebula:Nebula openvpn:OpenVPN; do
    args+=("${p#*:}=$(val "${p%%:*}_$k")")
  done
  python3 - "$k" "$(val "quicap_$k")" "${args[@]}" <<'PY'
import sys
key, ours, peers = sys.argv[1], sys.argv[2], sys.argv[3:]
figures = {}
for p in peers:
    name, value = p.split("=", 1)
    if value != "n/a":
        figures[name] = float(value)
lower = key in ("udpcpu", "ping", "pingload")
if ours == "n/a" or not figures:
    print("n/a")
else:
    name = (min if lower else max)(figures, key=figures.get)
    print(f"{float(ours) / figures[name]:.2f} ({name})" if figures[name] else "n/a")
PY
}

row() { # title key
  local k=$2
  local raw quic qpl qnv qtcp qcamo qcamotcp wg wg1 wgg neb ovpn relay qy qy1 qyn
  raw=$(val "raw_$k"); quic=$(val "quicap_$k"); qpl=$(val "quicapplain_$k"); wg=$(val "wg_$k"); wg1=$(val "wg1t_$k"); wgg=$(val "wggo_$k")
  neb=$(val "nebula_$k"); ovpn=$(val "openvpn_$k")
  relay=$(val "relay_$k"); qy=$(val "quincy_$k"); qy1=$(val "quincy1t_$k"); qyn=$(val "quincynoise_$k"); qnv=$(val "quicapnever_$k"); qtcp=$(val "quicaptcp_$k")
  qcamo=$(val "quicapcamo_$k"); qcamotcp=$(val "quicapcamotcp_$k")
  printf '| %s | %s (%s) | %s (%s) | %s (%s) | %s (%s) | %s (%s) | %s (%s) | %s (%s) | %s (%s) | %s (%s) | %s (%s) | %s (%s) | %s (%s) | %s (%s) | %s (%s) | %s (%s) | %s (%s) | %s | %s | %s | %s | %s | %s | %s | %s | %s | %s |\n' "$1" \
    "$raw" "$(val "raw_${k}_spread")" \
    "$quic" "$(val "quicap_${k}_spread")" \
    "$qpl" "$(val "quicapplain_${k}_spread")" \
    "$qnv" "$(val "quicapnever_${k}_spread")" \
    "$qtcp" "$(val "quicaptcp_${k}_spread")" \
    "$qcamo" "$(val "quicapcamo_${k}_spread")" \
    "$qcamotcp" "$(val "quicapcamotcp_${k}_spread")" \
    "$relay" "$(val "relay_${k}_spread")" \
    "$qy" "$(val "quincy_${k}_spread")" \
    "$qy1" "$(val "quincy1t_${k}_spread")" \
    "$qyn" "$(val "quincynoise_${k}_spread")" \
    "$wg" "$(val "wg_${k}_spread")" \
    "$wg1" "$(val "wg1t_${k}_spread")" \
    "$wgg" "$(val "wggo_${k}_spread")" \
    "$neb" "$(val "nebula_${k}_spread")" \
    "$ovpn" "$(val "openvpn_${k}_spread")" \
    "$(best_peer "$k")" "$(ratio "$quic" "$qy")" "$(ratio "$quic" "$wg")" "$(ratio "$quic" "$wgg")" "$(ratio "$quic" "$neb")" "$(ratio "$quic" "$ovpn")" "$(ratio "$relay" "$quic")" "$(ratio "$qtcp" "$quic")" "$(ratio "$qcamo" "$quic")" "$(ratio "$qcamotcp" "$qtcp")"
}

table() {
  echo "| metric | raw veth | QUICAP | QUICAP without PGO | QUICAP, realtime = never | QUICAP over TCP | QUICAP camouflage | QUICAP camouflage over TCP | QUICAP via 1 relay | Quincy (TLS) | Quincy (TLS, 1 thread) | Quincy (Noise) | boringtun | boringtun, 1 thread | wireguard-go | Nebula | OpenVPN | QUICAP / best peer | QUICAP / Quincy (TLS) | QUICAP / boringtun | QUICAP / wireguard-go | QUICAP / Nebula | QUICAP / OpenVPN | relay / direct | TCP / QUIC | camouflage / private | camouflage / private, over TCP |"
  echo "|---|---|---|---|---|---|---|---|---|---|---|---|---|---|---|---|---|---|---|---|---|---|---|---|---|---|---|"
  row "TCP, 1 stream (Gb/s)" tcp1
  row "TCP, 4 streams (Gb/s)" tcp4
  row "UDP, 1200-byte datagrams, unlimited rate, received (Gb/s)" udp
  row "UDP as above, iperf3 socket buffers 4 MiB (\`-w 4M\`), received (Gb/s)" udpw
  row "UDP as above: tunnel CPU per packet sent (µs, all its processes)" udpcpu
  row "ping RTT, idle (ms)" ping
  row "ping RTT, under TCP load (ms)" pingload
}

machine="$(nproc) cores, $(free -g | awk '/^Mem:/ {print $2}') GiB, kernel $(uname -r), $(grep -m1 'model name' /proc/cpuinfo | cut -d: -f2 | sed 's/^ *//')"
echo
echo "Machine: $machine"
echo "Each figure: median of $((PASSES * REPS)) runs of ${SECS} s in $PASSES passes (range in parentheses). Ratios > 1 favour QUICAP for throughput, < 1 for RTT and CPU."
echo
table

if [ "$WRITE" = 1 ]; then
  {
    cat <<MD
# Benchmarks

Measured with \`sudo ./bench/run.sh --write\` on $(date -u +%Y-%m-%d).

Setup: two network namespaces joined by one veth pair (MTU 1500). iperf3 runs from
namespace A to namespace B over, in turn, the raw veth and each tunnel below. Every
tunnel has the same MTU, $MTU (WireGuard's default; each system here takes it), and
runs with the configuration its own documentation recommends for throughput. No
process is pinned to a CPU: the two ends of each tunnel, iperf3's client and server and
the kernel's softirqs share the machine's $(nproc) cores as the scheduler places them,
the same for every system. Where a system's thread count decides where its threads
land against iperf3's (Quincy and boringtun, below), it is also measured with one
thread, and "QUICAP / best peer" takes whichever did better. Every system is measured
in several passes, each starting it afresh, so each figure is taken over several
placements.

- **QUICAP** (\`quicap up\`, defaults but the MTU: offloads on, \`node.realtime =
  "auto"\`), the binary built by \`scripts/build-pgo.sh\` (the release profile with
  profile-guided optimization and BOLT, trained on a run of its own in namespaces);
  the same code as a plain \`cargo build --release\` ("QUICAP without PGO"); with
  \`node.realtime = "never"\` (normal scheduling throughout, to show what "auto"
  changes); over TLS/TCP (one node dials the other with \`transport = "tcp"\`: the
  fallback for paths without UDP); in camouflage mode (both nodes web fronts with
  self-signed web certificates, dialing each other with \`web-pin\`: the tunnel inside
  an HTTP/3 CONNECT-IP request; and the same with \`transport = "tcp"\`, after an
  HTTP/1.1 upgrade to connect-ip); and through one intermediate node (a third
  namespace; the end nodes hold an end-to-end connection whose packets it forwards as
  relay frames, undecrypted).
- **Quincy 3** (\`quincy-server\` / \`quincy-client\` from crates.io, built with its
  default features, jemalloc and GSO/GRO offload among them) in both of its modes:
  mutual TLS, and Noise NK with X25519 keys, the mode of the figures in its README;
  socket and datagram buffers at its defaults (2 MiB and 4 MiB), which its
  documentation gives no advice to change. Its client and server each run a tokio
  runtime with a worker thread per core by default, so here four Quincy worker
  threads, iperf3's two ends and the kernel's softirqs share two cores, and its
  figures follow where the scheduler puts them: between runs on machines of this kind
  one TCP stream has gone from 0.74 to 2.38 Gb/s. Placement explains it. In one
  sitting on this machine (2026-12-06, three passes each, mutual TLS, one TCP stream):
  1.26 Gb/s (1.17-1.32) with its defaults, 0.90 (0.84-0.98) with the client pinned to
  one core and the server to the other (\`taskset\`), 1.62 (1.60-1.65) with one worker
  thread at each end (\`TOKIO_WORKER_THREADS=1\`, which tokio's runtime reads), whose
  CPU per packet of the UDP flood also fell from 11.5 to 9.0 µs. So Quincy is
  measured with its defaults and with one worker thread, the best of them counting.
- **boringtun** (\`boringtun-cli\` from crates.io, configured with \`wg\`), with its
  default 4 threads and with 1 (\`WG_THREADS=1\`): on two cores the single thread
  carried one TCP stream at 0.76 Gb/s against 0.30 with four and 0.40 with two, in the
  same sitting, and had the lowest idle ping of any system (0.19-0.23 ms); and
  Debian's **wireguard-go** (the same configuration; its defaults otherwise, which its
  documentation recommends: a Go thread per core; \`GOMAXPROCS=1\` changed its TCP
  figures by under 10 % and doubled its idle ping).
- Debian's **Nebula 1.6** (its own certificates, no lighthouse, \`routines\` = cores
  and 10 MiB socket buffers, as its documentation advises for throughput on Linux).
- Debian's **OpenVPN 2.6** (UDP, point to point with self-signed certificates checked
  by fingerprint, AES-128-GCM, 4 MiB socket buffers and a 1000-packet TUN queue as its
  manual suggests for throughput; its own userspace data path, without the kernel's
  DCO module, which is not on every machine).

All are measured in the same invocation; absolute figures on shared machines drift
15-40 % between runs minutes apart, so compare ratios. "QUICAP / best peer" compares
QUICAP with the peer that did best in that row (the highest throughput, the lowest RTT
or CPU per packet).

Machine: $machine

Each figure is the median of $((PASSES * REPS)) runs of ${SECS} s, taken in $PASSES passes over
every system one after the other, each system started afresh in each pass; the range
of the runs is in parentheses.
For throughput a ratio above 1 favours QUICAP; for RTT and CPU a ratio below 1 does.

MD
    table
    cat <<'MD'

Reproduce: `sudo ./bench/run.sh` (installs iperf3 and wireguard-tools with apt-get, and
boringtun-cli, quincy-server and quincy-client with cargo if missing). `BENCH_SECONDS`
`BENCH_PASSES` and `BENCH_REPS` change the run length, the passes and the runs per pass. What the figures mean, how the data
path gets there and where its time goes: [performance.md](performance.md).
MD
  } >docs/benchmarks.md
  echo
  echo "wrote docs/benchmarks.md"
fi
