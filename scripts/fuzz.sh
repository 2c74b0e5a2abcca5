#!/usr/bin/env bash
# Builds the coverage-guided fuzz targets of fuzz/ (libFuzzer through libfuzzer-sys, with
# SanitizerCoverage on the stable toolchain: no nightly, no ASan) and runs each one for
# SECONDS on a copy of its committed seed corpus (fuzz/corpus/<target>), after replaying its
# committed regression inputs (fuzz/regressions/<target>: every crash found, kept). Prints
# each target's executions; exits non-zero on any crash, with the input saved under
# fuzz/artifacts/<target>/.
#
#   scripts/fuzz.sh [SECONDS] [TARGET...]        # CI runs `scripts/fuzz.sh 15`
set -euo pipefail
cd "$(dirname "$0")/../fuzz"
seconds=${1:-15}
shift || true
targets=("$@")
[ ${#targets[@]} -gt 0 ] || targets=(pipeline weights safetensors model_json image dlpack video)
triple=$(rustc -vV | sed -n 's/^host: //p')
export RUSTFLAGS="--cfg fuzzing -Cpasses=sancov-module -Cllvm-args=-sanitizer-coverage-level=4 \
-Cllvm-args=-sanitizer-coverage-inline-8bit-counters -Cllvm-args=-sanitizer-coverage-pc-table \
-Cllvm-args=-sanitizer-coverage-trace-compares"
# --target keeps the flags off build scripts and proc macros.
cargo build --release --locked --target "$triple" --bins
bin="target/$triple/release"
work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT
total=0
for t in "${targets[@]}"; do
  mkdir -p "$work/$t" "artifacts/$t"
  cp -r "corpus/$t/." "$work/$t/"
  # The TF.js models fetched for the tests (scripts/fetch-models.sh), when present, seed the
  # model.json target too: the JSON, a NUL byte, then its shard.
  if [ "$t" = model_json ] && [ -f ../models/emotion.json ]; then
    { cat ../models/emotion.json; printf '\0'; cat ../models/emotion.bin; } > "$work/$t/emotion"
  fi
  if compgen -G "regressions/$t/*" > /dev/null; then
    replay=$("$bin/$t" regressions/$t/* 2>&1) || {
      echo "$replay" | tail -n 30
      echo "fuzz: target $t crashes on a committed regression input" >&2
      exit 1
    }
    echo "fuzz: $t: $(ls regressions/$t | wc -l) regression input(s) replayed, no crash"
  fi
  out=$("$bin/$t" "$work/$t" -max_total_time="$seconds" -print_final_stats=1 \
    -max_len=1048576 -rss_limit_mb=2048 -timeout=10 -artifact_prefix="artifacts/$t/" 2>&1) || {
    echo "$out" | tail -n 30
    echo "fuzz: target $t failed; the input is in fuzz/artifacts/$t/" >&2
    exit 1
  }
  runs=$(echo "$out" | sed -n 's/^stat::number_of_executed_units: *//p')
  cov=$(echo "$out" | grep -o 'cov: [0-9]*' | tail -n 1)
  echo "fuzz: $t: $runs executions in ${seconds}s, $cov, no crash"
  total=$((total + runs))
done
echo "fuzz: $total executions in all, no crash"
