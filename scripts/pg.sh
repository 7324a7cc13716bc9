#!/usr/bin/env bash
# A throw-away PostgreSQL server for the tests. Its files live under
# /tmp/jmap-web-push-pg-<hash of this checkout's path> (override with
# JMAP_WEB_PUSH_PG_DIR): as root the server runs as `postgres`, which must be
# able to reach its data directory, and a checkout under /root is not.
#
#   scripts/pg.sh start [LEASE]   initdb on first use, start if not running,
#                                 create the test database, take the lease
#                                 (`manual` without one); prints the URL
#   scripts/pg.sh stop [LEASE]    with LEASE: drop that lease and stop only
#                                 when no other lease holds the server (dead
#                                 processes' leases are dropped); without:
#                                 stop now
#   scripts/pg.sh url             prints the URL
#   scripts/pg.sh status          exit 0 when running
#
# A lease is a process id (scripts/test.sh passes its own): several test
# runs in one work tree share the server, and the last one out stops it.
# Listens on 127.0.0.1:${JMAP_WEB_PUSH_PG_PORT:-<40000-59999, from the path's hash>}
# and on a unix socket in
# <dir>/sock; trust authentication, user postgres. As root the server
# runs as the `postgres` user (initdb refuses root), created if missing.
set -euo pipefail
cd "$(dirname "$0")/.."
root=$(pwd)
base="${JMAP_WEB_PUSH_PG_DIR:-${TMPDIR:-/tmp}/jmap-web-push-pg-$(printf %s "$root" | sha1sum | cut -c1-12)}"
data="$base/data"
sock="$base/sock"
leases="$base/leases"
# The port, like the directory, follows from the checkout's path, so two
# checkouts (a CI clone beside a work tree) run two servers side by side.
hash=$(printf %s "$root" | sha1sum | cut -c1-12)
port="${JMAP_WEB_PUSH_PG_PORT:-$((40000 + 0x${hash:0:4} % 20000))}"
db=jmap_web_push_test
url="postgres://postgres@127.0.0.1:$port/$db"

bindir() {
  local d
  if command -v pg_ctl >/dev/null 2>&1; then
    dirname "$(readlink -f "$(command -v pg_ctl)")"
    return
  fi
  d=$(ls -d /usr/lib/postgresql/*/bin 2>/dev/null | sort -V | tail -n 1)
  if [ -z "$d" ] || [ ! -x "$d/pg_ctl" ]; then
    echo "pg.sh: PostgreSQL server binaries not found; run scripts/setup.sh (apt-get install postgresql)" >&2
    exit 1
  fi
  echo "$d"
}
bin=$(bindir)

# Runs a command as the server's owner.
as_owner() {
  if [ "$(id -u)" -eq 0 ]; then
    runuser -u postgres -- "$@"
  else
    "$@"
  fi
}

running() {
  [ -f "$data/PG_VERSION" ] && as_owner "$bin/pg_ctl" -D "$data" status >/dev/null 2>&1
}

prune_leases() {
  mkdir -p "$leases"
  local f
  for f in "$leases"/*; do
    [ -e "$f" ] || continue
    case "$(basename "$f")" in
      manual) ;;  # a start without a lease: held until a plain stop
      *) kill -0 "$(basename "$f")" 2>/dev/null || rm -f "$f" ;;
    esac
  done
}

start() {
  mkdir -p "$base"
  if [ "$(id -u)" -eq 0 ] && ! id postgres >/dev/null 2>&1; then
    useradd --system --home-dir "$base" --no-create-home --shell /usr/sbin/nologin postgres
  fi
  if [ ! -f "$data/PG_VERSION" ]; then
    rm -rf "$data"
    mkdir -p "$data" "$sock"
    [ "$(id -u)" -eq 0 ] && chown -R postgres: "$data" "$sock"
    as_owner "$bin/initdb" -D "$data" -U postgres -A trust -E UTF8 --locale=C.UTF-8 \
      >"$base/initdb.log" 2>&1 || { cat "$base/initdb.log" >&2; exit 1; }
  fi
  mkdir -p "$sock"
  [ "$(id -u)" -eq 0 ] && chown postgres: "$sock"
  if ! running; then
    # (9>&-: the server must not inherit the lock.)
    # Fast rather than durable: the cluster is rebuilt at will, and the
    # durability tests are the embedded store's.
    local opts="-c listen_addresses=127.0.0.1 -p $port -k $sock -c max_connections=300"
    opts="$opts -c fsync=off -c synchronous_commit=off -c full_page_writes=off"
    touch "$base/server.log"
    [ "$(id -u)" -eq 0 ] && chown postgres: "$base/server.log"
    as_owner "$bin/pg_ctl" -D "$data" -l "$base/server.log" -o "$opts" -w -t 60 start >/dev/null 9>&- \
      || { tail -n 30 "$base/server.log" >&2; exit 1; }
  fi
  if ! as_owner "$bin/psql" -h "$sock" -p "$port" -U postgres -d postgres -Atqc \
      "SELECT 1 FROM pg_database WHERE datname = '$db'" | grep -q 1; then
    as_owner "$bin/psql" -h "$sock" -p "$port" -U postgres -d postgres -qc "CREATE DATABASE $db" >/dev/null
  fi
}

stop_now() {
  if running; then
    as_owner "$bin/pg_ctl" -D "$data" -m fast -w stop >/dev/null
  fi
}

cmd="${1:-}"
lease="${2:-}"
mkdir -p "$base"
exec 9>"$base/.lock"
flock 9
case "$cmd" in
  start)
    start
    prune_leases
    touch "$leases/${lease:-manual}"
    echo "$url"
    ;;
  stop)
    if [ -n "$lease" ]; then
      rm -f "$leases/$lease"
      prune_leases
      if [ -n "$(ls -A "$leases")" ]; then exit 0; fi
    fi
    rm -rf "$leases"
    stop_now
    ;;
  url) echo "$url" ;;
  status) running ;;
  *)
    echo "usage: $0 start|stop [LEASE] | url | status" >&2
    exit 2
    ;;
esac
