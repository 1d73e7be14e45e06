#!/usr/bin/env bash
# Starts a throwaway S3-compatible server (moto, from the test venv) on 127.0.0.1 with
# a bucket `wharf-test`: `eval "$(scripts/s3-for-tests.sh start)"` exports
# WHARF_TEST_S3_ENDPOINT, WHARF_TEST_S3_PID and WHARF_TEST_S3_LOG;
# `scripts/s3-for-tests.sh stop PID [LOG]` stops it and removes its log.
set -euo pipefail
VENV="${WHARF_TEST_VENV:-$HOME/.cache/wharf-test-venv}"
case "${1:-}" in
  start)
    port=$(python3 -c 'import socket; s = socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])')
    log=$(mktemp /tmp/wharf-test-s3.XXXXXX.log)
    "$VENV/bin/moto_server" -H 127.0.0.1 -p "$port" >"$log" 2>&1 &
    pid=$!
    # Ready when it answers; at most 30 s.
    for _ in $(seq 1 300); do
      curl -sf -o /dev/null "http://127.0.0.1:$port/" && break
      kill -0 "$pid" 2>/dev/null || { cat "$log" >&2; exit 1; }
      sleep 0.1
    done
    curl -sf -X PUT -o /dev/null "http://127.0.0.1:$port/wharf-test" \
      || { kill "$pid"; rm -f "$log"; echo "could not create the test bucket" >&2; exit 1; }
    echo "export WHARF_TEST_S3_ENDPOINT=http://127.0.0.1:$port"
    echo "export WHARF_TEST_S3_PID=$pid"
    echo "export WHARF_TEST_S3_LOG=$log"
    ;;
  stop)
    kill "${2:?usage: stop PID [LOG]}" 2>/dev/null || true
    [ -z "${3:-}" ] || rm -f "$3"
    ;;
  *)
    echo "usage: $0 start | stop PID" >&2
    exit 2
    ;;
esac
