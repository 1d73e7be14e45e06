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
  [ -z "${WHARF_TEST_GARAGE_PID:-}" ] || bash scripts/garage-for-tests.sh stop "$WHARF_TEST_GARAGE_PID" "$WHARF_TEST_GARAGE_DIR"
  local image
  for image in "${WHARF_TEST_IMAGE:-}" "${WHARF_TEST_IMAGE_1_0_0:-}" "${WHARF_TEST_IMAGE_1_1_0:-}" "${WHARF_TEST_IMAGE_DEBUG:-}"; do
    [ -z "$image" ] || docker rmi -f "$image" >/dev/null 2>&1 || true
  done
}
trap cleanup EXIT
# PostgreSQL for the metadata-store suite and the replica tests.
eval "$(bash scripts/postgres-for-tests.sh start)"
# An S3-compatible server (moto) for the blob-store suite and the replica tests.
eval "$(bash scripts/s3-for-tests.sh start)"
# A real one (Garage) for the same suites, and the 6 GiB layer test.
eval "$(bash scripts/garage-for-tests.sh start)"
have_docker=false
docker info >/dev/null 2>&1 && have_docker=true
# The container image (a static release build, FROM scratch) for the image test.
if $have_docker; then
  WHARF_TEST_IMAGE=$(bash scripts/build-image.sh "wharf:test-$$")
  export WHARF_TEST_IMAGE
fi

# Earlier releases, built from the project's history, for the upgrade tests: 1.0.0 for
# the multi-hop upgrades (crates/cli/tests/from_release.rs with the local driver,
# rolling.rs with the docker driver), 1.1.0, the previous minor release, for the
# rolling upgrades (rolling.rs, rolling_external.rs).
WHARF_TEST_RELEASE_1_0_0="$PWD/$(bash scripts/build-release.sh 1.0.0)"
export WHARF_TEST_RELEASE_1_0_0
WHARF_TEST_RELEASE_1_1_0="$PWD/$(bash scripts/build-release.sh 1.1.0)"
export WHARF_TEST_RELEASE_1_1_0
# The rolling-upgrade tests (crates/cli/tests/rolling.rs) replace replica containers of
# release 1.1.0 with containers of this build, and in one command those of 1.0.0 with
# 1.1.0's then this build's: images of the dynamically linked binaries with their
# libraries (no second static release build).
if $have_docker; then
  WHARF_TEST_IMAGE_1_0_0=$(bash scripts/build-image.sh --binary "$WHARF_TEST_RELEASE_1_0_0" "wharf:test-1.0.0-$$")
  export WHARF_TEST_IMAGE_1_0_0
  WHARF_TEST_IMAGE_1_1_0=$(bash scripts/build-image.sh --binary "$WHARF_TEST_RELEASE_1_1_0" "wharf:test-1.1.0-$$")
  export WHARF_TEST_IMAGE_1_1_0
fi

if [ "${CI:-}" = "true" ]; then
  # A fresh clone builds these once: their build trees (several GB) are not needed
  # again, and the tests need the disk (a low disk is something the registry reports).
  rm -rf target/release-builds "target/x86_64-unknown-linux-gnu"
fi

# One debug build of every target, shared by all test binaries.
cargo build --workspace --all-targets --locked
if $have_docker; then
  WHARF_TEST_IMAGE_DEBUG=$(bash scripts/build-image.sh --binary target/debug/wharf "wharf:test-debug-$$")
  export WHARF_TEST_IMAGE_DEBUG
fi
if cargo nextest --version >/dev/null 2>&1; then
  cargo nextest run --workspace --locked --no-fail-fast "$@"
else
  cargo test --workspace --locked --no-fail-fast "$@"
fi
