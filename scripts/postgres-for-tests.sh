#!/usr/bin/env bash
# Starts a throwaway PostgreSQL on 127.0.0.1 for the test suite; prints the lines to
# eval: `eval "$(scripts/postgres-for-tests.sh start)"` exports WHARF_TEST_POSTGRES_URL
# and WHARF_TEST_POSTGRES_DIR; `scripts/postgres-for-tests.sh stop DIR` stops and removes it.
# fsync is off: these databases are disposable, and the tests need speed, not durability.
# `start --durable` keeps PostgreSQL's defaults instead (fsync and synchronous_commit
# on), for benchmarks that compare durable commits.
set -euo pipefail

pg_bin() {
  local dir
  dir=$(ls -d /usr/lib/postgresql/*/bin 2>/dev/null | sort -V | tail -n 1)
  [ -n "$dir" ] || { echo "PostgreSQL is not installed (apt-get install postgresql)" >&2; exit 1; }
  echo "$dir"
}

# From / : the postgres user may not enter the caller's working directory (su would
# say "could not change directory").
as_postgres() {
  if [ "$(id -un)" = postgres ]; then "$@"; else (cd / && su postgres -s /bin/sh -c "$(printf '%q ' "$@")"); fi
}

case "${1:-}" in
  start)
    bin=$(pg_bin)
    dir=$(mktemp -d /tmp/wharf-test-pg.XXXXXX)
    chown postgres "$dir" 2>/dev/null || true
    as_postgres "$bin/initdb" -D "$dir/data" -A trust -U postgres --no-sync >/dev/null
    port=$(python3 -c 'import socket; s = socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])')
    speed="-c fsync=off -c synchronous_commit=off -c full_page_writes=off"
    [ "${2:-}" != "--durable" ] || speed=""
    as_postgres "$bin/pg_ctl" -D "$dir/data" -l "$dir/log" -w -t 60 \
      -o "$speed -c listen_addresses=127.0.0.1 -p $port -k $dir -c max_connections=400" \
      start >/dev/null
    echo "export WHARF_TEST_POSTGRES_URL=postgres://postgres@127.0.0.1:$port/postgres"
    echo "export WHARF_TEST_POSTGRES_DIR=$dir"
    ;;
  stop)
    dir=${2:?usage: stop DIR}
    bin=$(pg_bin)
    as_postgres "$bin/pg_ctl" -D "$dir/data" -m immediate -w stop >/dev/null 2>&1 || true
    rm -rf "$dir"
    ;;
  *)
    echo "usage: $0 start | stop DIR" >&2
    exit 2
    ;;
esac
