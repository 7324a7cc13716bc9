#!/usr/bin/env bash
# The README's test command: set-up, then every test of the workspace
# (guest core natively, the built component through the host harness,
# interoperability with independent implementations, the store contract
# on every backend, PostgreSQL included).
set -euo pipefail
cd "$(dirname "$0")/.."
./scripts/setup.sh
# A PostgreSQL server for the PostgreSQL store's tests (see scripts/pg.sh), shared
# with concurrent runs through a lease and stopped by the last one out.
if [ "${JMAP_WEB_PUSH_SKIP_PG:-}" = 1 ]; then
  echo "test: JMAP_WEB_PUSH_SKIP_PG=1: PostgreSQL tests are skipped"
else
  start=$(date +%s%N)
  trap './scripts/pg.sh stop $$' EXIT
  JMAP_WEB_PUSH_TEST_PG=$(./scripts/pg.sh start $$)
  export JMAP_WEB_PUSH_TEST_PG
  echo "test: PostgreSQL at $JMAP_WEB_PUSH_TEST_PG (started in $(( ($(date +%s%N) - start) / 1000000 )) ms)"
fi
cargo test --workspace "$@"
# A short differential run of the P-256 key agreement against `p256`
# (the long run and its figures: BENCHMARKS.md).
cargo run --release --quiet -p jmap-web-push-crypto --example ecdh_differential -- 30000 2
