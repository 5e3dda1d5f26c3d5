#!/usr/bin/env bash
# Runs QUICAP's whole test suite: formatting, lints, unit and property tests, and the
# end-to-end tests with real quicap processes in network namespaces.
# Run as root on Linux: ./scripts/test.sh
set -euo pipefail

cd "$(dirname "$0")/.."
if [ "$(id -u)" -ne 0 ]; then
  echo "error: the end-to-end tests create network namespaces and TUN devices: run as root" >&2
  exit 1
fi
./scripts/deps.sh

echo "==> cargo fmt --check"
cargo fmt --all -- --check
echo "==> cargo clippy"
cargo clippy --workspace --all-targets --quiet -- -D warnings
echo "==> cargo test"
cargo test --workspace
echo "==> the tunnel, TCP, mesh and proxy tests again, with camouflaged nodes"
QUICAP_TEST_MODE=camouflage cargo test -p quicap --test tunnel --test tcp --test mesh --test proxy

left=$(ip netns list | grep -c '^qt' || true)
if [ "$left" -ne 0 ]; then
  echo "error: $left test network namespace(s) left behind" >&2
  exit 1
fi
