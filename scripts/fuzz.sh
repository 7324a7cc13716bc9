#!/usr/bin/env bash
# Coverage-guided fuzzing with libFuzzer on stable Rust (no cargo-fuzz, no
# nightly): the targets of tests/fuzz built with sanitizer coverage.
#
#   scripts/fuzz.sh smoke [SECONDS]   every target for SECONDS (default 10): CI
#   scripts/fuzz.sh run TARGET RUNS   one target for RUNS executions
#   scripts/fuzz.sh list              the targets
#
# Each target starts from its committed inputs (tests/fuzz/corpus/<target>)
# and keeps what it learns in target/fuzz/corpus/<target>. A crash, panic,
# timeout (10 s) or memory blow-up (2 GiB) stops the run, leaves the input
# in target/fuzz/artifacts/<target>/ and fails the script: copy that file
# into tests/fuzz/corpus/<target>/ and it becomes a regression test of
# `cargo test --workspace`. The last line per target is "fuzz: <target>: <runs> runs
# in <s> s".
set -euo pipefail
cd "$(dirname "$0")/.."
root=$PWD
host=$(rustc -vV | sed -n 's/^host: //p')
# One directory of committed inputs per target; `cargo test -p
# jmap-web-push-fuzz` checks they match the targets the crate defines.
mapfile -t targets < <(ls "$root/tests/fuzz/corpus")

build() {
  # --target keeps the flags off build scripts and proc macros.
  RUSTFLAGS="-Cpasses=sancov-module -Cllvm-args=-sanitizer-coverage-level=4 \
-Cllvm-args=-sanitizer-coverage-inline-8bit-counters \
-Cllvm-args=-sanitizer-coverage-pc-table -Cllvm-args=-sanitizer-coverage-trace-compares \
--cfg fuzzing -Cdebug-assertions -Coverflow-checks" \
  cargo build --quiet --release --features libfuzzer -p jmap-web-push-fuzz --bin fuzz \
    --target "$host" --target-dir "$root/target/fuzz"
  bin="$root/target/fuzz/$host/release/fuzz"
}

# run TARGET LIBFUZZER-ARGS...
run() {
  local t=$1; shift
  local work="$root/target/fuzz/corpus/$t" art="$root/target/fuzz/artifacts/$t"
  mkdir -p "$work" "$art"
  local log="$root/target/fuzz/$t.log"
  local status=0
  JWP_FUZZ_TARGET=$t "$bin" "$work" "$root/tests/fuzz/corpus/$t" \
    -artifact_prefix="$art/" -timeout=10 -rss_limit_mb=2048 -max_len=8192 \
    -print_final_stats=1 "$@" > "$log" 2>&1 || status=$?
  local done_line
  done_line=$(grep -E '^Done [0-9]+ runs in [0-9]+ second' "$log" | tail -n 1 || true)
  local runs secs
  runs=$(grep -E '^stat::number_of_executed_units:' "$log" | awk '{print $2}' | tail -n 1 || true)
  secs=$(echo "$done_line" | sed -nE 's/.* in ([0-9]+) second.*/\1/p')
  if [ "$status" -ne 0 ]; then
    tail -n 40 "$log"
    echo "fuzz: $t FAILED (exit $status); the input is in $art/" >&2
    return 1
  fi
  echo "fuzz: $t: ${runs:-?} runs in ${secs:-?} s, corpus $(ls "$work" | wc -l) inputs, 0 crashes"
}

case "${1:-}" in
  list) printf '%s\n' "${targets[@]}" ;;
  smoke)
    secs=${2:-10}
    build
    for t in "${targets[@]}"; do run "$t" -max_total_time="$secs"; done
    ;;
  run)
    [ $# -eq 3 ] || { echo "usage: $0 run TARGET RUNS" >&2; exit 2; }
    build
    run "$2" -runs="$3"
    ;;
  *) sed -n '2,16p' "$0" | sed 's/^# \{0,1\}//'; exit 2 ;;
esac
