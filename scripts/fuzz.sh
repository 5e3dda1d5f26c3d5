#!/usr/bin/env bash
# Fuzzes each of QUICAP's parsers of untrusted bytes for a bounded time with libFuzzer
# (cargo-fuzz, on stable Rust: no sanitizer, -s none), starting from fuzz/corpus/<target>
# and adding the new inputs it finds there (then minimized to those that add coverage,
# cargo fuzz cmin). A crash stops the run with the target's
# name; its input is in fuzz/artifacts/<target>/ (add it to the corpus once fixed: the
# test suite replays the corpus).
#
#   ./scripts/fuzz.sh [SECONDS_PER_TARGET] [TARGET...]     (default: 60 s, every target)
set -euo pipefail
cd "$(dirname "$0")/.."

secs=${1:-60}
shift || true
targets=("$@")
if [ ${#targets[@]} -eq 0 ]; then
  mapfile -t targets < <(ls fuzz/fuzz_targets | sed 's/\.rs$//')
fi
command -v cargo-fuzz >/dev/null || cargo install cargo-fuzz --locked

for t in "${targets[@]}"; do
  echo "==> fuzzing $t for ${secs}s"
  mkdir -p "fuzz/corpus/$t"
  before=$(ls "fuzz/corpus/$t" | wc -l)
  cargo fuzz run -s none "$t" "fuzz/corpus/$t" -- -max_total_time="$secs" -max_len=8192 2>&1 |
    grep -E '^(Done [0-9]+ runs|==[0-9]+==|SUMMARY|thread .* panicked|Failing input)' || true
  status=${PIPESTATUS[0]}
  if [ "$status" -ne 0 ]; then
    echo "error: fuzz target $t failed (exit $status); see fuzz/artifacts/$t/" >&2
    exit 1
  fi
  # Keep only the inputs that add coverage.
  cargo fuzz cmin -s none "$t" "fuzz/corpus/$t" >/dev/null 2>&1
  echo "    corpus of $t: $before -> $(ls "fuzz/corpus/$t" | wc -l) inputs (minimized)"
done
