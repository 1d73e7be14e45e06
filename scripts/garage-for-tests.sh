#!/usr/bin/env bash
# Starts a throwaway Garage (a real S3-compatible object store, single node) on
# 127.0.0.1 with a bucket `wharf-test` and a key allowed on it:
#   eval "$(scripts/garage-for-tests.sh start)"
# exports WHARF_TEST_GARAGE_ENDPOINT, WHARF_TEST_GARAGE_KEY_ID, WHARF_TEST_GARAGE_SECRET,
# WHARF_TEST_GARAGE_LOG (every S3 request with its headers: tests read it to see what
# wharf asked of the store), WHARF_TEST_GARAGE_PID and WHARF_TEST_GARAGE_DIR;
#   scripts/garage-for-tests.sh stop PID DIR
# stops it and removes its data, metadata and log.
# Needs the `garage` binary (scripts/install-test-deps.sh installs it with cargo).
set -euo pipefail
case "${1:-}" in
  start)
    command -v garage >/dev/null 2>&1 \
      || { echo "garage is not installed (scripts/install-test-deps.sh installs it)" >&2; exit 1; }
    free_port() {
      python3 -c 'import socket; s = socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])'
    }
    s3_port=$(free_port)
    rpc_port=$(free_port)
    dir=$(mktemp -d /tmp/wharf-test-garage.XXXXXX)
    # The region is AWS's default, so tests address Garage exactly as they address moto.
    cat >"$dir/garage.toml" <<EOF
metadata_dir = "$dir/meta"
data_dir = "$dir/data"
db_engine = "sqlite"
replication_factor = 1
compression_level = "none"
rpc_bind_addr = "127.0.0.1:$rpc_port"
rpc_public_addr = "127.0.0.1:$rpc_port"
rpc_secret = "$(python3 -c 'import secrets; print(secrets.token_hex(32))')"

[s3_api]
api_bind_addr = "127.0.0.1:$s3_port"
s3_region = "us-east-1"
EOF
    key_id="GK$(python3 -c 'import secrets; print(secrets.token_hex(12))')"
    secret=$(python3 -c 'import secrets; print(secrets.token_hex(32))')
    log="$dir/garage.log"
    # --single-node lays out this one node; --default-bucket creates the bucket and
    # the key from the environment. Requests are logged with their headers (debug).
    GARAGE_DEFAULT_ACCESS_KEY="$key_id" GARAGE_DEFAULT_SECRET_KEY="$secret" \
      GARAGE_DEFAULT_BUCKET=wharf-test \
      RUST_LOG="warn,garage=info,garage_api_common::generic_server=debug" NO_COLOR=1 \
      garage -c "$dir/garage.toml" server --single-node --default-bucket >"$log" 2>&1 &
    pid=$!
    # Ready when the S3 API answers (an unsigned request gets 403); at most 60 s.
    ready=0
    for _ in $(seq 1 600); do
      if curl -s -o /dev/null "http://127.0.0.1:$s3_port/" && grep -q "Creating default bucket" "$log"; then
        ready=1
        break
      fi
      kill -0 "$pid" 2>/dev/null || break
      sleep 0.1
    done
    if [ "$ready" -ne 1 ]; then
      tail -n 30 "$log" >&2
      kill "$pid" 2>/dev/null || true
      rm -rf "$dir"
      echo "Garage did not start" >&2
      exit 1
    fi
    echo "export WHARF_TEST_GARAGE_ENDPOINT=http://127.0.0.1:$s3_port"
    echo "export WHARF_TEST_GARAGE_KEY_ID=$key_id"
    echo "export WHARF_TEST_GARAGE_SECRET=$secret"
    echo "export WHARF_TEST_GARAGE_LOG=$log"
    echo "export WHARF_TEST_GARAGE_PID=$pid"
    echo "export WHARF_TEST_GARAGE_DIR=$dir"
    ;;
  stop)
    pid="${2:?usage: stop PID DIR}"
    dir="${3:?usage: stop PID DIR}"
    kill "$pid" 2>/dev/null || true
    for _ in $(seq 1 100); do
      kill -0 "$pid" 2>/dev/null || break
      sleep 0.1
    done
    kill -KILL "$pid" 2>/dev/null || true
    case "$dir" in
      /tmp/wharf-test-garage.*) rm -rf "$dir" ;;
      *) echo "not removing $dir: not a directory this script made" >&2 ;;
    esac
    ;;
  *)
    echo "usage: $0 start | stop PID DIR" >&2
    exit 2
    ;;
esac
