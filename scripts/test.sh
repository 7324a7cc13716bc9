#!/usr/bin/env bash
# The README's test command: set-up, then every test of the workspace
# (guest core natively, the built component through the host harness,
# interoperability with independent implementations).
set -euo pipefail
cd "$(dirname "$0")/.."
./scripts/setup.sh
cargo test --workspace "$@"
