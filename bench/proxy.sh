#!/usr/bin/env bash
# QUICAP proxy benchmark, two namespaces over one veth pair, node-a with a SOCKS5
# listener and node-b its egress:
#  1. a download of BENCH_MB MiB (default 1024) from a web server (Caddy) in node-b's
#     namespace, by curl in node-a's, through the Layer 3 tunnel and through the SOCKS5
#     listener, BENCH_REPS times each (default 3), in the same run: medians and the
#     ratio;
#  2. BENCH_FLOWS (default 1000) proxied TCP connections to an echo server behind the
#     egress, opened at once, each checked with one echo and held for 10 s: how many
#     held, and each node's resident memory before, while they are held and after.
#
#   sudo ./bench/proxy.sh
set -euo pipefail
# shellcheck source=bench/lib.sh
source "$(dirname "$0")/lib.sh"

REPS=${BENCH_REPS:-3}
MB=${BENCH_MB:-1024}
FLOWS=${BENCH_FLOWS:-1000}

bench_setup proxy
A="qpx-a-$$"
B="qpx-b-$$"
bench_ns "$A"
bench_ns "$B"
bench_veth "$A" qpva 192.0.2.1 "$B" qpvb 192.0.2.2
inA() { ip netns exec "$A" "$@"; }
inB() { ip netns exec "$B" "$@"; }

quicap_node "$work/a" node-a 10.77.0.1/24 node-b 192.0.2.2:4433
cat >>"$work/a/node.toml" <<TOML

[[proxy]]
listen = "127.0.0.1:1080"
protocol = "socks5"
egress = ["node-b"]
TOML
SIGN_EXTRA=--egress quicap_node "$work/b" node-b 10.77.0.2/24 node-a 192.0.2.1:4433
cat >>"$work/b/node.toml" <<TOML

[egress]
allow = ["192.0.2.2/32"]
ports = [8080, 9000]
TOML
run_node "$A" "$work/a"
run_node "$B" "$work/b"
for _ in $(seq 100); do inA ping -c 1 -W 1 10.77.0.2 >/dev/null 2>&1 && break; sleep 0.1; done

mkdir -p "$work/www"
truncate -s "${MB}M" "$work/www/big"
printf '{\n\tadmin off\n\tauto_https off\n}\n:8080 {\n\troot * %s\n\tfile_server\n}\n' "$work/www" >"$work/Caddyfile"
inB env XDG_CONFIG_HOME="$work/caddy" XDG_DATA_HOME="$work/caddy" \
  caddy run --adapter caddyfile --config "$work/Caddyfile" >/dev/null 2>&1 &
pids+=($!)
for _ in $(seq 100); do inB curl -sf -o /dev/null -r 0-0 http://192.0.2.2:8080/big && break; sleep 0.1; done

spread() { printf '%s\n' "$@" | sort -g | awk 'NR==1{lo=$1} {hi=$1} END {printf "%.0f-%.0f", lo, hi}'; }
# download ARGS...: MiB/s of one whole download (curl fails the run if it fails).
download() {
  inA curl -sf --max-time 300 -o /dev/null -w '%{speed_download}\n' "$@" |
    awk '{printf "%.1f\n", $1 / 1048576}'
}

echo "==> ${MB} MiB downloads, ${REPS} each"
tunnel=() socks=()
for _ in $(seq "$REPS"); do
  tunnel+=("$(download http://10.77.0.2:8080/big)")
  socks+=("$(download --socks5 127.0.0.1:1080 http://192.0.2.2:8080/big)")
done
t=$(median "${tunnel[@]}")
s=$(median "${socks[@]}")
printf '  %-30s %8s MiB/s  (%s)\n' "Layer 3 tunnel" "$t" "$(spread "${tunnel[@]}")"
printf '  %-30s %8s MiB/s  (%s)  %.2f x the tunnel\n' "SOCKS5 proxy, egress one hop" "$s" \
  "$(spread "${socks[@]}")" "$(echo "$s $t" | awk '{print $1 / $2}')"

rss() { awk '/^VmRSS/ {printf "%.1f", $2 / 1024}' "/proc/$1/status"; }
node_a=${pids[0]}
node_b=${pids[1]}
echo "==> ${FLOWS} concurrent proxied connections"
inB python3 "$(dirname "$0")/flows.py" serve 192.0.2.2 9000 &
pids+=($!)
sleep 0.5
before="$(rss "$node_a") / $(rss "$node_b")"
inA python3 "$(dirname "$0")/flows.py" hold 1080 192.0.2.2 9000 "$FLOWS" 10 \
  >"$work/flows.json" 2>"$work/flows.err" &
client=$!
for _ in $(seq 300); do grep -q holding "$work/flows.err" 2>/dev/null && break; sleep 0.1; done
sleep 1
during="$(rss "$node_a") / $(rss "$node_b")"
wait "$client"
sleep 3
after="$(rss "$node_a") / $(rss "$node_b")"
printf '  %-30s %s\n' "held (echoed / failed)" \
  "$(python3 -c 'import json,sys; d=json.load(open(sys.argv[1])); print(d["echoed"], "/", d["failed"], *d["first_error"])' "$work/flows.json")"
printf '  %-30s %s MiB\n' "RSS node-a / node-b, before" "$before" "while held" "$during" "after" "$after"
