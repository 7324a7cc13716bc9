#!/usr/bin/env bash
# Installs everything the build and the tests need beyond the stock Rust
# toolchain. Idempotent; safe to run on every test run.
#  - the wasm32-wasip2 target (rust-toolchain.toml does not install it when
#    RUSTUP_AUTO_INSTALL=0);
#  - OpenSSL headers + pkg-config for Mozilla's `ece` crate (test-only);
#  - PostgreSQL server binaries, for scripts/pg.sh (the PostgreSQL store's
#    tests);
#  - python http_ece and npm web-push-testing, web-push and jmap-jam into .tools/ (git-ignored),
#    for the interoperability tests.
set -euo pipefail
cd "$(dirname "$0")/.."
root=$(pwd)

if ! rustup target list --installed 2>/dev/null | grep -qx wasm32-wasip2; then
  echo "setup: installing the wasm32-wasip2 target"
  rustup target add wasm32-wasip2
fi

need_apt=()
command -v pkg-config >/dev/null 2>&1 || need_apt+=(pkg-config)
if ! pkg-config --exists openssl 2>/dev/null; then need_apt+=(libssl-dev); fi
# PostgreSQL server binaries for scripts/pg.sh (the PostgreSQL store's tests).
if ! command -v pg_ctl >/dev/null 2>&1 && ! ls /usr/lib/postgresql/*/bin/pg_ctl >/dev/null 2>&1; then
  need_apt+=(postgresql)
fi
if [ ${#need_apt[@]} -gt 0 ]; then
  echo "setup: installing ${need_apt[*]}"
  SUDO=""; [ "$(id -u)" -ne 0 ] && SUDO="sudo"
  $SUDO apt-get update -qq
  DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq "${need_apt[@]}"
fi

mkdir -p .tools
if [ -f scripts/interop/requirements.txt ] && command -v python3 >/dev/null 2>&1; then
  if [ ! -x .tools/venv/bin/python ] || ! cmp -s scripts/interop/requirements.txt .tools/venv/requirements.txt; then
    echo "setup: python interop tools into .tools/venv"
    python3 -m venv .tools/venv
    .tools/venv/bin/pip install -q --disable-pip-version-check -r scripts/interop/requirements.txt
    cp scripts/interop/requirements.txt .tools/venv/requirements.txt
  fi
fi
if [ -f scripts/interop/package.json ] && command -v npm >/dev/null 2>&1; then
  if [ ! -d .tools/node/node_modules ] || ! cmp -s scripts/interop/package.json .tools/node/package.json; then
    echo "setup: node interop tools into .tools/node"
    mkdir -p .tools/node
    cp scripts/interop/package.json .tools/node/package.json
    [ -f scripts/interop/package-lock.json ] && cp scripts/interop/package-lock.json .tools/node/
    (cd .tools/node && npm install --silent --no-audit --no-fund >/dev/null)
  fi
fi
echo "setup: ok ($root)"
