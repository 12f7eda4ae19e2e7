#!/usr/bin/env bash
# Fuzzes every target in fuzz/fuzz_targets for SECONDS each (default below), from
# the committed seed corpus in fuzz/corpus/TARGET. New inputs go to a scratch
# directory, not into the repository; a crash fails the run and leaves the
# input in fuzz/artifacts/TARGET.
#
#   bash fuzz/run.sh                    # every target, the default time each
#   bash fuzz/run.sh SECONDS TARGET...  # those targets, SECONDS each
#
# .ci/run calls it only when WSHUB_CI_FUZZ_SECONDS is set, with that many
# seconds; otherwise CI replays the corpora in the tests.
#
# cargo-fuzz needs nightly-only compiler flags (-Zsanitizer); RUSTC_BOOTSTRAP=1
# lets this stable toolchain accept them.
set -euo pipefail
cd "$(dirname "$0")"
seconds="${1:-30}"
shift || true
targets=("$@")
if [ ${#targets[@]} -eq 0 ]; then
  mapfile -t targets < <(ls fuzz_targets | sed 's/\.rs$//')
fi
command -v cargo-fuzz >/dev/null || cargo install --locked cargo-fuzz --version 0.13.2
export RUSTC_BOOTSTRAP=1
for t in "${targets[@]}"; do
  scratch=$(mktemp -d)
  set +e
  cargo fuzz run -O "$t" "$scratch" "corpus/$t" -- \
    -max_total_time="$seconds" -max_len=65536 -print_final_stats=1 2>&1 \
    | grep -E "^Done|stat::number_of_executed_units|ERROR|panicked|SUMMARY"
  status=${PIPESTATUS[0]}
  set -e
  rm -rf "$scratch"
  if [ "$status" -ne 0 ]; then
    echo "fuzz/run.sh: $t failed (input saved in fuzz/artifacts/$t)" >&2
    exit 1
  fi
done
