#!/usr/bin/env bash
# Builds the wharf container image FROM scratch from a static binary:
#   scripts/build-image.sh [TAG]     (default tag: wharf:<version>)
# The binary is linked statically with glibc (+crt-static); TLS is rustls, so no
# OpenSSL is needed at run time.
set -euo pipefail
cd "$(dirname "$0")/.."
version=$(sed -n 's/^version = "\(.*\)"/\1/p' Cargo.toml | head -n 1)
tag=${1:-wharf:$version}
target=x86_64-unknown-linux-gnu
RUSTFLAGS='-C target-feature=+crt-static' cargo build --release --locked --target "$target" -p wharf
binary=target/$target/release/wharf
ldd "$binary" 2>&1 | grep -qE "not a dynamic|statically linked" \
  || { echo "$binary is not statically linked" >&2; exit 1; }
context=$(mktemp -d)
trap 'rm -rf "$context"' EXIT
# Debug line tables stay in target/ for symbolising; the image gets a stripped copy.
strip -o "$context/wharf" "$binary"
cp /etc/ssl/certs/ca-certificates.crt "$context/"
mkdir "$context/data"
cp Dockerfile "$context/"
DOCKER_BUILDKIT=0 docker build -q -t "$tag" "$context" >/dev/null
echo "$tag"
