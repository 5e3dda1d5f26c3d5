#!/usr/bin/env bash
# Builds quicap with profile-guided optimization (PGO) and, where LLVM's BOLT is
# available, a BOLT pass on top, both on top of the release profile:
#   1. an instrumented build (target/pgo-train),
#   2. a training run of that build in network namespaces: three nodes in a line
#      (node-a -- node-b -- node-c, so a and c talk through b's relay), TUN with IPv4
#      and IPv6 and a TAP on each; idle pings, TCP and UDP both ways, direct and
#      relayed, and `quicap status`,
#   3. the profiles merged with llvm-profdata (the one of rustc's LLVM version; installed
#      with apt as llvm-<version> if missing),
#   4. the build using them (target/pgo/release/quicap), copied to target/pgo/quicap,
#   5. unless PGO_BOLT=0 or no llvm-bolt of that version can be found or installed (apt:
#      bolt-<version>): that binary instrumented by llvm-bolt, the same training run
#      with it, and target/pgo/quicap rewritten from it with that profile (code layout
#      only).
# The path of the result is all this prints on stdout; progress goes to stderr.
# The compiler then lays out the code the data path runs next to each other and the code
# it never runs out of the way; what that buys is in docs/performance.md.
# Run as root on Linux: ./scripts/build-pgo.sh (about 10 minutes on two cores)
set -euo pipefail

source "$(dirname "$0")/../bench/lib.sh"
cd "$(dirname "$0")/.."

LLVM_MAJOR=$(rustc -vV | sed -n 's/^LLVM version: \([0-9]*\).*/\1/p')

# llvm_tool NAME PACKAGE: path of LLVM tool NAME of rustc's LLVM major version (profiles
# are versioned; another version's tool rejects them or, worse, misreads them), from
# rustup's llvm-tools, NAME-<version> or NAME; installs PACKAGE-<version> with apt if
# none is there. Fails quietly if there is none.
llvm_tool() {
  local host c
  host=$(rustc -vV | sed -n 's/^host: //p')
  for c in "$(rustc --print sysroot)/lib/rustlib/$host/bin/$1" \
    "$(command -v "$1-$LLVM_MAJOR" || true)" "$(command -v "$1" || true)"; do
    if [ -x "$c" ] && "$c" --version 2>&1 | grep -q "LLVM version $LLVM_MAJOR\."; then
      echo "$c"
      return 0
    fi
  done
  if [ "$(id -u)" -eq 0 ] && command -v apt-get >/dev/null; then
    echo "==> installing $2-$LLVM_MAJOR ($1)" >&2
    DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "$2-$LLVM_MAJOR" >/dev/null 2>&1 ||
      { apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "$2-$LLVM_MAJOR" >/dev/null 2>&1; } || true
    c=$(command -v "$1-$LLVM_MAJOR" || true)
    [ -n "$c" ] && { echo "$c"; return 0; }
  fi
  return 1
}

[ "$(id -u)" -eq 0 ] || { echo "error: the training run creates network namespaces: run as root" >&2; exit 1; }
PROFDATA=$(llvm_tool llvm-profdata llvm) || {
  echo "error: PGO needs llvm-profdata from LLVM $LLVM_MAJOR (rustc's): install llvm-$LLVM_MAJOR or run \`rustup component add llvm-tools\`" >&2
  exit 1
}
BOLT="" MERGE_FDATA=""
if [ "${PGO_BOLT:-1}" != 0 ]; then
  if BOLT=$(llvm_tool llvm-bolt bolt) && MERGE_FDATA=$(llvm_tool merge-fdata bolt); then
    :
  else
    BOLT=""
    echo "note: no llvm-bolt of LLVM $LLVM_MAJOR (apt: bolt-$LLVM_MAJOR); building with PGO alone" >&2
  fi
fi
profiles="$PWD/target/pgo-train/profiles"
rm -rf "$profiles"

echo "==> building instrumented quicap (target/pgo-train)" >&2
RUSTFLAGS="-Cprofile-generate=$profiles" cargo build --release --quiet --target-dir target/pgo-train
# The build scripts above were instrumented too; only the nodes' profiles count.
rm -rf "$profiles"
export LLVM_PROFILE_FILE="$profiles/quicap-%m.profraw"

# train BINARY: runs the training mesh with BINARY; its nodes exit normally at the end,
# which is when instrumented binaries write their profiles.
train() {
  QUICAP=$1 tap_failed=""
  bench_setup pgo
  A="qpgo-a-$$" B="qpgo-b-$$" C="qpgo-c-$$"
  for ns in "$A" "$B" "$C"; do bench_ns "$ns"; done
  bench_veth "$A" qpab 192.0.2.1 "$B" qpba 192.0.2.2
  bench_veth "$B" qpbc 198.51.100.2 "$C" qpcb 198.51.100.3
  inA() { ip netns exec "$A" "$@"; }
  node() { # letter number [peer endpoint]: IPv4 and IPv6 on the TUN, and a TAP
    TAP_ADDRESS="10.78.0.$2/24" quicap_node "$work/$1" "node-$1" "10.77.0.$2/24 fd77::$2/64" \
      ${3:+"node-$3" "$4"}
  }
  node a 1 b 192.0.2.2:4433
  node b 2
  node c 3 b 198.51.100.2:4433
  run_node "$B" "$work/b"
  run_node "$A" "$work/a"
  run_node "$C" "$work/c"
  for _ in $(seq 200); do inA ping -c 1 -W 1 10.77.0.3 >/dev/null 2>&1 && break; sleep 0.1; done
  if ! inA ping -c 1 -W 2 10.77.0.3 >/dev/null; then
    echo "error: the training mesh did not come up; node logs:" >&2
    tail -n 5 "$work"/?.log >&2
    exit 1
  fi
  for ns in "$B" "$C"; do ip netns exec "$ns" iperf3 -s -D >/dev/null; done
  sleep 0.5
  inA ping -q -c 100 -i 0.05 10.77.0.2 >/dev/null # idle, direct
  inA ping -q -c 50 -i 0.05 10.77.0.3 >/dev/null  # idle, relayed
  inA ping -q -6 -c 50 -i 0.05 fd77::2 >/dev/null
  for _ in $(seq 50); do inA ping -c 1 -W 1 10.78.0.3 >/dev/null 2>&1 && break; sleep 0.1; done
  inA ping -q -c 50 -i 0.05 10.78.0.3 >/dev/null || tap_failed=1 # TAP, relayed
  inA iperf3 -c 10.77.0.2 -t 4 >/dev/null
  inA ping -q -c 25 -i 0.1 10.77.0.2 >/dev/null & # under load
  loaded=$!
  inA iperf3 -c 10.77.0.2 -t 3 -R >/dev/null
  wait "$loaded"
  inA iperf3 -c 10.77.0.2 -t 3 -P 4 >/dev/null
  inA iperf3 -c 10.77.0.2 -t 3 -u -b 0 -l 1200 >/dev/null
  inA iperf3 -c 10.77.0.2 -t 2 -u -b 300M -l 1200 -R >/dev/null
  inA iperf3 -c fd77::2 -t 2 >/dev/null
  inA iperf3 -c 10.77.0.3 -t 3 >/dev/null
  inA iperf3 -c 10.77.0.3 -t 2 -u -b 0 -l 1200 >/dev/null
  inA iperf3 -c 10.78.0.2 -t 2 >/dev/null || tap_failed=1 # TAP, direct
  if [ -n "${tap_failed:-}" ]; then
    echo "warning: traffic over the TAP failed; the profile covers the L2 path only in part" >&2
  fi
  inA ping -q -c 100 -i 0.05 10.77.0.2 >/dev/null
  for n in a b c; do "$QUICAP" status --config "$work/$n/node.toml" >/dev/null; done
  # The profile is written when a node exits normally (SIGTERM), not when it is killed.
  for pid in "${pids[@]}"; do kill "$pid"; done
  for pid in "${pids[@]}"; do wait "$pid" || true; done
  pids=()
  (bench_cleanup) # the namespaces go now, not when the script ends
  spaces=()
}

echo "==> training run (PGO)" >&2
train "$PWD/target/pgo-train/release/quicap"
ls "$profiles"/*.profraw >/dev/null 2>&1 || { echo "error: the training run wrote no profile" >&2; exit 1; }
"$PROFDATA" merge -o target/pgo-train/quicap.profdata "$profiles"/*.profraw
unset LLVM_PROFILE_FILE

echo "==> building quicap with the profile (target/pgo)" >&2
# BOLT rewrites code using the relocations the linker keeps with --emit-relocs.
RUSTFLAGS="-Cprofile-use=$PWD/target/pgo-train/quicap.profdata${BOLT:+ -Clink-arg=-Wl,--emit-relocs}" \
  cargo build --release --quiet --target-dir target/pgo
built="$PWD/target/pgo/release/quicap"
out="$PWD/target/pgo/quicap"
if [ -z "$BOLT" ]; then
  cp "$built" "$out"
else
  fdata="$PWD/target/pgo-train/bolt"
  rm -rf "$fdata"
  mkdir -p "$fdata"
  log=target/pgo-train/bolt.log
  bolt_failed() { echo "error: llvm-bolt failed, see $log (PGO_BOLT=0 builds without it)" >&2; exit 1; }
  "$BOLT" "$built" -instrument -o target/pgo-train/quicap-bolt-instrumented \
    --instrumentation-file="$fdata/quicap.fdata" --instrumentation-file-append-pid >"$log" 2>&1 || bolt_failed
  echo "==> training run (BOLT)" >&2
  train "$PWD/target/pgo-train/quicap-bolt-instrumented"
  ls "$fdata"/*.fdata >/dev/null 2>&1 || { echo "error: the BOLT training run wrote no profile" >&2; exit 1; }
  "$MERGE_FDATA" "$fdata"/*.fdata >target/pgo-train/quicap.fdata 2>>"$log" || bolt_failed
  echo "==> rewriting the code layout with BOLT" >&2
  "$BOLT" "$built" -o "$out" -data=target/pgo-train/quicap.fdata -reorder-blocks=ext-tsp \
    -reorder-functions=cdsort -split-functions -split-all-cold -split-eh -icf=1 \
    -use-gnu-stack >>"$log" 2>&1 || bolt_failed
fi
echo "$out"
