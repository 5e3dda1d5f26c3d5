# Shared by the bench scripts (sourced, not run): setup, cleanup, namespaces, veth pairs and
# QUICAP node configs.

# bench_setup NAME [--bench]: checks root, installs tools (scripts/deps.sh, with
# --bench also the benchmark's), builds the release binary into $QUICAP unless QUICAP
# names one already, makes the work directory $work with a CA in $work/ca and arranges
# cleanup on exit.
bench_setup() {
  cd "$(dirname "${BASH_SOURCE[0]}")/.."
  [ "$(id -u)" -eq 0 ] || { echo "error: $1 creates network namespaces: run as root" >&2; exit 1; }
  ./scripts/deps.sh ${2:-}
  if [ -z "${QUICAP:-}" ]; then
    echo "==> building quicap (release)"
    cargo build --release --quiet
    QUICAP="$PWD/target/release/quicap"
  fi
  work=$(mktemp -d "/tmp/quicap-$1.XXXXXX")
  pids=()
  spaces=()
  trap bench_cleanup EXIT
  "$QUICAP" ca init --name "$1" --out "$work/ca" >/dev/null
}

bench_cleanup() {
  exec 2>/dev/null # the processes killed here would each print "Killed"
  for pid in "${pids[@]}"; do kill "$pid" || true; done
  for ns in "${spaces[@]}"; do
    for pid in $(ip netns pids "$ns"); do kill -9 "$pid" || true; done
    ip netns del "$ns" || true
  done
  rm -rf "$work"
}

# median FIGURE...: the middle figure, or the mean of the two middle ones of an even
# count; nothing for none.
median() {
  printf '%s\n' "$@" | sort -g | awk '{a[NR] = $1}
    END { if (NR % 2) print a[(NR + 1) / 2]; else if (NR) print (a[NR / 2] + a[NR / 2 + 1]) / 2 }'
}

# bench_ns NAME: a namespace with loopback up, removed on exit.
bench_ns() {
  ip netns add "$1"
  spaces+=("$1")
  ip -n "$1" link set lo up
}

# bench_veth NS1 DEV1 ADDR1 NS2 DEV2 ADDR2: a veth pair between two namespaces, each end
# with its address (a /24) and up.
bench_veth() {
  ip link add "$2" netns "$1" type veth peer name "$5" netns "$4"
  ip -n "$1" addr add "$3/24" dev "$2"
  ip -n "$4" addr add "$6/24" dev "$5"
  ip -n "$1" link set "$2" up
  ip -n "$4" link set "$5" up
}

# quicap_node DIR NAME OVERLAY [PEER ENDPOINT]: a key, a certificate from $work/ca for
# the addresses in OVERLAY (one or several, separated by spaces) and DIR/node.toml
# (OVERLAY on the TUN, listening on port 4433, control socket in DIR, the lines of
# $NODE_EXTRA added to [node], the TUN's MTU $TUN_MTU if set; with $TAP_ADDRESS also a TAP with that address, which the
# certificate covers too), dialing node PEER at ENDPOINT if given (with PEER_EXTRA in
# its [[peer]] section); $SIGN_EXTRA (e.g. --egress) goes to quicap ca sign.
quicap_node() {
  local d=$1 name=$2 ips=() tun=() a
  for a in $3 ${TAP_ADDRESS:-}; do ips+=(--ip "$a"); done
  for a in $3; do tun+=("\"$a\""); done
  rm -rf "$d"
  mkdir -p "$d"
  "$QUICAP" cert request --name "$name" --out "$d" >/dev/null
  # shellcheck disable=SC2086 # SIGN_EXTRA: several arguments, or none
  "$QUICAP" ca sign --ca "$work/ca" --csr "$d/$name.csr" "${ips[@]}" ${SIGN_EXTRA:-} --out "$d/$name.crt" >/dev/null
  cat >"$d/node.toml" <<TOML
[node]
cert = "$name.crt"
key = "$name.key"
ca = "$work/ca/ca.crt"
listen = ["0.0.0.0:4433"]
control-socket = "control.sock"
${NODE_EXTRA:-}
[tun]
name = "quicap0"
addresses = [$(IFS=,; echo "${tun[*]}")]
${TUN_MTU:+mtu = $TUN_MTU}
TOML
  if [ -n "${TAP_ADDRESS:-}" ]; then
    printf '[tap]\nname = "quicaptap0"\naddresses = ["%s"]\n' "$TAP_ADDRESS" >>"$d/node.toml"
  fi
  if [ -n "${4:-}" ]; then
    printf '[[peer]]\nname = "%s"\nendpoint = "%s"\n%s\n' "$4" "$5" "${PEER_EXTRA:-}" >>"$d/node.toml"
  fi
}

# run_node NAMESPACE DIR: starts the node of DIR in NAMESPACE; its pid is $! and in pids.
run_node() {
  ip netns exec "$1" "$QUICAP" up --config "$2/node.toml" 2>"$2.log" &
  pids+=($!)
}

# bench_pair PREFIX: namespaces $A and $B (PREFIX-a-PID, PREFIX-b-PID) joined by a veth
# pair (192.0.2.1 and .2), node-a (10.77.0.1) in A and node-b (10.77.0.2) in B dialing
# each other, their pids in $pid_a and $pid_b; returns once a ping crosses the tunnel
# (exits if none does within 10 s).
bench_pair() {
  A="$1-a-$$"
  B="$1-b-$$"
  bench_ns "$A"
  bench_ns "$B"
  bench_veth "$A" "${1}va" 192.0.2.1 "$B" "${1}vb" 192.0.2.2
  quicap_node "$work/a" node-a 10.77.0.1/24 node-b 192.0.2.2:4433
  quicap_node "$work/b" node-b 10.77.0.2/24 node-a 192.0.2.1:4433
  run_node "$A" "$work/a"
  pid_a=$!
  run_node "$B" "$work/b"
  pid_b=$!
  for _ in $(seq 100); do ip netns exec "$A" ping -c 1 -W 1 10.77.0.2 >/dev/null 2>&1 && break; sleep 0.1; done
  ip netns exec "$A" ping -c 1 -W 1 10.77.0.2 >/dev/null || { echo "error: the nodes never linked" >&2; exit 1; }
}
