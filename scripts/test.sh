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

# Throwaway services, removed on exit whatever happens.
cleanup() {
  [ -z "${WHARF_TEST_POSTGRES_DIR:-}" ] || bash scripts/postgres-for-tests.sh stop "$WHARF_TEST_POSTGRES_DIR"
  [ -z "${WHARF_TEST_S3_PID:-}" ] || bash scripts/s3-for-tests.sh stop "$WHARF_TEST_S3_PID" "${WHARF_TEST_S3_LOG:-}"
  [ -z "${WHARF_TEST_IMAGE:-}" ] || docker rmi -f "$WHARF_TEST_IMAGE" >/dev/null 2>&1 || true
}
trap cleanup EXIT
# PostgreSQL for the metadata-store suite and the replica tests.
eval "$(bash scripts/postgres-for-tests.sh start)"
# An S3-compatible server (moto) for the blob-store suite and the replica tests.
eval "$(bash scripts/s3-for-tests.sh start)"
# The container image (a static release build, FROM scratch) for the image test.
if docker info >/dev/null 2>&1; then
  WHARF_TEST_IMAGE=$(bash scripts/build-image.sh "wharf:test-$$")
  export WHARF_TEST_IMAGE
fi

# Release 1.0.0, built from the project's history, for the upgrade tests.
WHARF_TEST_RELEASE_1_0_0="$PWD/$(bash scripts/build-release.sh 1.0.0)"
export WHARF_TEST_RELEASE_1_0_0

# One debug build of every target, shared by all test binaries.
cargo build --workspace --all-targets --locked
if cargo nextest --version >/dev/null 2>&1; then
  cargo nextest run --workspace --locked --no-fail-fast "$@"
else
  cargo test --workspace --locked --no-fail-fast "$@"
fi
