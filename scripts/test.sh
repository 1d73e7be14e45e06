#!/usr/bin/env bash
# The whole test suite, from a fresh clone: installs what the tests need (real clients,
# the reference registry, Python tools), builds once, then runs every test.
#   scripts/test.sh            # everything
#   scripts/test.sh -E 'test(/sigterm/)'   # extra arguments go to cargo nextest
set -euo pipefail
cd "$(dirname "$0")/.."

bash scripts/install-test-deps.sh

if [ "${CI:-}" = "true" ]; then
  # Under CI the Docker tests must run: a missing engine is a failure, not a skip.
  docker info >/dev/null 2>&1 || { echo "CI=true but the Docker Engine is not reachable" >&2; exit 1; }
fi

export WHARF_TEST_VENV="${WHARF_TEST_VENV:-$HOME/.cache/wharf-test-venv}"

# A throwaway PostgreSQL for the metadata-store suite, stopped and removed on exit.
eval "$(bash scripts/postgres-for-tests.sh start)"
# And a throwaway S3-compatible server (moto) for the blob-store suite.
eval "$(bash scripts/s3-for-tests.sh start)"
trap 'bash scripts/postgres-for-tests.sh stop "$WHARF_TEST_POSTGRES_DIR"; bash scripts/s3-for-tests.sh stop "$WHARF_TEST_S3_PID"' EXIT
# One debug build of every target, shared by all test binaries.
cargo build --workspace --all-targets --locked
if cargo nextest --version >/dev/null 2>&1; then
  cargo nextest run --workspace --locked --no-fail-fast "$@"
else
  cargo test --workspace --locked --no-fail-fast "$@"
fi
