#!/usr/bin/env bash
# Builds the wharf container image FROM scratch:
#   scripts/build-image.sh [TAG]                 (default tag: wharf:<version>)
#   scripts/build-image.sh --binary PATH [TAG]   (default tag: wharf:<the binary's version>)
# By default it compiles a release binary linked statically with glibc (+crt-static);
# TLS is rustls, so no OpenSSL is needed at run time.
# With --binary it packs an existing, dynamically linked binary instead (a debug build,
# or an earlier release from scripts/build-release.sh) together with every shared
# library `ldd` lists and the dynamic loader, each at its own path: no release build,
# which keeps the test suite short. Such an image is for tests, not for shipping.
#
# The image is one layer, imported from a tar made here (`docker import`): a FROM-scratch
# image needs no build steps, so no builder (the engine's legacy builder is deprecated
# and BuildKit needs the buildx plugin, which this machine kind lacks). It holds:
#   /wharf                                the binary (ENTRYPOINT; CMD serve)
#   /etc/ssl/certs/ca-certificates.crt    CA bundle, for S3 and PostgreSQL over TLS
#   /var/lib/wharf                        the data directory, owned by 65532 (USER)
#   (--binary only) the shared libraries and the loader, each at its absolute path
set -euo pipefail
cd "$(dirname "$0")/.."

binary=""
if [ "${1:-}" = "--binary" ]; then
  binary="${2:?usage: scripts/build-image.sh --binary PATH [TAG]}"
  shift 2
  [ -x "$binary" ] || { echo "build-image.sh: $binary is not an executable" >&2; exit 1; }
fi

context=$(mktemp -d)
trap 'rm -rf "$context"' EXIT
# The image's root: the CA bundle, and the shared libraries of a dynamically linked
# binary at their absolute paths.
mkdir -p "$context/rootfs/etc/ssl/certs"
cp /etc/ssl/certs/ca-certificates.crt "$context/rootfs/etc/ssl/certs/"

if [ -z "$binary" ]; then
  version=$(sed -n 's/^version = "\(.*\)"/\1/p' Cargo.toml | head -n 1)
  tag=${1:-wharf:$version}
  target=x86_64-unknown-linux-gnu
  RUSTFLAGS='-C target-feature=+crt-static' cargo build --release --locked --target "$target" -p wharf
  binary=target/$target/release/wharf
  ldd "$binary" 2>&1 | grep -qE "not a dynamic|statically linked" \
    || { echo "$binary is not statically linked" >&2; exit 1; }
  # Debug line tables stay in target/ for symbolising; the image gets a stripped copy.
  strip -o "$context/wharf" "$binary"
else
  # `wharf --version` prints "wharf VERSION (COMMIT)".
  version=$("$binary" --version | awk '{ print $2 }')
  [ -n "$version" ] || { echo "build-image.sh: $binary --version printed no version" >&2; exit 1; }
  tag=${1:-wharf:$version}
  if ldd "$binary" 2>&1 | grep -qE "not a dynamic|statically linked"; then
    echo "build-image.sh: $binary is statically linked; it needs no libraries" >&2
  fi
  # Every library with a path: "libc.so.6 => /lib/x86_64-linux-gnu/libc.so.6 (0x…)" and
  # the loader "/lib64/ld-linux-x86-64.so.2 (0x…)"; linux-vdso has none (the kernel's).
  libs=$(ldd "$binary" | awk '$2 == "=>" && $3 ~ /^\// { print $3 } $1 ~ /^\// { print $1 }' | sort -u)
  if ldd "$binary" | grep -q "not found"; then
    echo "build-image.sh: $binary needs libraries this host lacks:" >&2
    ldd "$binary" | grep "not found" >&2
    exit 1
  fi
  for lib in $libs; do
    mkdir -p "$context/rootfs$(dirname "$lib")"
    # The file itself, not a symlink (/lib64/ld-linux-x86-64.so.2 is one on Debian).
    cp -L "$lib" "$context/rootfs$lib"
  done
  # The symbol table stays (readable backtraces); debug sections go, which makes a
  # debug build several times smaller.
  strip --strip-debug -o "$context/wharf" "$binary"
fi
mkdir -p "$context/rootfs/var/lib/wharf"
cp "$context/wharf" "$context/rootfs/wharf"
# Owned by root but the data directory, which belongs to the user the image runs as;
# timestamps fixed, so the same files give the same layer.
python3 - "$context/rootfs" "$context/layer.tar" <<'PY'
import os, sys, tarfile
root, out = sys.argv[1], sys.argv[2]
def owner(info):
    info.mtime = 0
    info.uname = info.gname = ""
    info.uid = info.gid = 65532 if info.name == "var/lib/wharf" else 0
    return info
with tarfile.open(out, "w") as layer:
    for name in sorted(os.listdir(root)):
        layer.add(os.path.join(root, name), arcname=name, filter=owner)
PY
docker import \
  --change 'ENV WHARF_DATA_DIR=/var/lib/wharf SSL_CERT_FILE=/etc/ssl/certs/ca-certificates.crt' \
  --change 'USER 65532:65532' \
  --change 'EXPOSE 5000' \
  --change 'ENTRYPOINT ["/wharf"]' \
  --change 'CMD ["serve"]' \
  "$context/layer.tar" "$tag" >/dev/null
echo "$tag"
