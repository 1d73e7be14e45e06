#!/usr/bin/env bash
# Installs what the test suite and the benchmark need, from Debian's packages, PyPI and
# crates.io.
# Idempotent: does nothing for what is already there. Needs root (or sudo).
set -euo pipefail

SUDO=""
[ "$(id -u)" -eq 0 ] || SUDO="sudo"

# Debian packages: real clients (skopeo, docker CLI comes with the engine), the reference
# registry for side-by-side benchmarks, load generators, a static busybox to put in
# FROM-scratch test images, and libfaketime (a replica whose clock is off, for the
# upgrade's clock-drift check); Chromium and its WebDriver for the web UI's browser tests,
# with fonts-liberation (a Recommends of chromium, which --no-install-recommends drops)
# so screenshots have real fonts.
packages=(skopeo docker-registry wrk apache2-utils jq busybox-static python3-venv postgresql curl openssl nginx faketime
  chromium chromium-driver fonts-liberation)
missing=()
for p in "${packages[@]}"; do
  dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || missing+=("$p")
done
if [ "${#missing[@]}" -gt 0 ]; then
  echo "installing Debian packages: ${missing[*]}"
  $SUDO apt-get update -q
  DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -q --no-install-recommends "${missing[@]}"
fi
# The packaged PostgreSQL and reference registry start services we do not want; the
# tests start their own PostgreSQL, and the benchmark runs
# its own instance with its own configuration.
for service in docker-registry postgresql nginx; do
  if command -v systemctl >/dev/null 2>&1 && systemctl is-active --quiet "$service" 2>/dev/null; then
    $SUDO systemctl stop "$service" || true
  fi
done

# Python tools in a project-local venv: oras (OCI artifacts with a subject), moto
# (an S3-compatible server for the blob-store suite) and spdx-tools (SBOM validation).
VENV="${WHARF_TEST_VENV:-$HOME/.cache/wharf-test-venv}"
if [ ! -x "$VENV/bin/python" ]; then
  python3 -m venv "$VENV"
fi
if ! "$VENV/bin/python" -c 'import oras' 2>/dev/null; then
  "$VENV/bin/pip" install -q oras
fi
if [ ! -x "$VENV/bin/moto_server" ]; then
  "$VENV/bin/pip" install -q 'moto[server]'
fi
# The SPDX project's validator checks the SBOMs the scanner writes.
if [ ! -x "$VENV/bin/pyspdxtools" ]; then
  "$VENV/bin/pip" install -q 'spdx-tools==0.8.5'
fi
# Garage, a real S3-compatible object store (moto is a mock): the blob-store suite, the
# replica tests and the 6 GiB layer test run on it too. Built from crates.io (about 11
# minutes on 2 cores, once; AGPL, used only as a test server).
GARAGE_VERSION=2.5.0
if ! garage --version 2>/dev/null | grep -q "cargo:$GARAGE_VERSION "; then
  echo "installing garage $GARAGE_VERSION with cargo"
  cargo install garage --version "$GARAGE_VERSION" --locked --quiet
fi
# The scanner's test images are built from real packages (PyPI releases, cargo-auditable
# binaries, Debian's .deb files): fetch them once into ~/.cache/wharf-scan-fixtures (or
# $WHARF_SCAN_FIXTURES). Idempotent: finished parts are skipped.
"$(dirname "${BASH_SOURCE[0]}")/build-scan-fixtures.sh"
echo "test dependencies ready (python venv: $VENV; garage: $(command -v garage))"
