#!/usr/bin/env bash
# Builds the raw inputs of the scanner's test images from real packages
# (docs/design/scanning-research.md §6): installed PyPI releases, Rust binaries built
# with cargo-auditable, a Debian root filesystem unpacked from Debian's own .deb files,
# and an Alpine package database. The tests turn these into OCI layers themselves
# (crates/jobs/tests/support/scan_images.rs); nothing here is an image.
#
#   scripts/build-scan-fixtures.sh [DIR]
#
# DIR defaults to $WHARF_SCAN_FIXTURES, else ~/.cache/wharf-scan-fixtures.
# Which versions: crates/scan/tests/fixtures/vulndb/packages.json (the vulnerable and
# clean versions of its real advisories).
#
# Idempotent: each part (pypi, rust, debian, alpine) is built in a scratch directory,
# moved into place and marked with a `.complete` file; a finished part is skipped.
# Delete DIR (or a part) to build again. DIR/manifest.json, written last, lists every
# package each part contains (ecosystem, name, version, path); the tests skip (or, under
# CI=true, fail) while it is missing.
#
# Needs python3 with pip (PyPI), cargo (crates.io; installs cargo-auditable 0.7.7 when
# missing), apt-get and dpkg-deb (Debian's mirror).
set -euo pipefail

HERE="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
REPO="$(cd "$HERE/.." && pwd)"
VULNDB="$REPO/crates/scan/tests/fixtures/vulndb"
PACKAGES_JSON="$VULNDB/packages.json"
DIR="${1:-${WHARF_SCAN_FIXTURES:-$HOME/.cache/wharf-scan-fixtures}}"
PYTHON="${PYTHON:-python3}"
CARGO_AUDITABLE_VERSION=0.7.7

die() {
  echo "build-scan-fixtures: ERROR: $*" >&2
  exit 1
}
note() { echo "build-scan-fixtures: $*"; }

[ -f "$PACKAGES_JSON" ] || die "$PACKAGES_JSON is missing"
for tool in "$PYTHON" cargo objcopy apt-get apt-cache dpkg-deb tar; do
  command -v "$tool" >/dev/null 2>&1 || die "$tool is needed but not installed"
done
"$PYTHON" -m pip --version >/dev/null 2>&1 || die "$PYTHON has no pip"

SUDO=""
[ "$(id -u)" -eq 0 ] || SUDO="sudo"

mkdir -p "$DIR"
DIR="$(cd "$DIR" && pwd)"
note "fixtures in $DIR"

# A scratch directory per part; removed on exit, so a failed run leaves no half part.
SCRATCH="$(mktemp -d "$DIR/.scratch.XXXXXX")"
trap 'rm -rf "$SCRATCH"' EXIT

done_part() { [ -f "$DIR/$1/.complete" ]; }

# Moves a finished part from the scratch directory into place and marks it complete.
finish_part() {
  local part="$1"
  rm -rf "${DIR:?}/$part"
  mv "$SCRATCH/$part" "$DIR/$part"
  date -u +%Y-%m-%dT%H:%M:%SZ >"$DIR/$part/.complete"
  note "$part: done ($(du -sh "$DIR/$part" | cut -f1))"
}

# ---------------------------------------------------------------------------------------
# pypi/<project>-<version>/: each PyPI release packages.json lists, installed with pip as
# a Python image's site-packages holds it (wheel → *.dist-info/METADATA);
# pypi/<project>-<version>.form says which form (wheel or sdist-egg-info). Releases with
# no wheel for this Python (PyYAML 5.x) are not built (their C extension may not compile
# on a current Python): their sdist's PKG-INFO becomes <Project>-<version>.egg-info/PKG-INFO
# and the sdist's pure-Python package (lib3/<module>) is copied beside it, which is the
# layout of a distribution's packaged egg-info install.
# ---------------------------------------------------------------------------------------
build_pypi() {
  local part="$SCRATCH/pypi"
  mkdir -p "$part"
  "$PYTHON" - "$PACKAGES_JSON" >"$SCRATCH/pypi.list" <<'EOF'
import json, sys
d = json.load(open(sys.argv[1]))
for p in d["packages"]:
    if p["ecosystem"] != "PyPI":
        continue
    versions = list(p["vulnerable_versions"]) + list(p.get("other_clean_versions") or [])
    if p.get("fixed_version_example"):
        versions.append(p["fixed_version_example"])
    for v in versions:
        print(p["pypi_project_name"], v)
EOF
  [ -s "$SCRATCH/pypi.list" ] || die "packages.json lists no PyPI releases"
  while read -r project version; do
    local dest="$part/$project-$version"
    local cached="$DIR/pypi-cache/$project-$version"
    if [ -f "$cached/.complete" ]; then
      cp -a "$cached" "$dest"
      rm "$dest/.complete"
      cp "$cached.form" "$dest.form"
      continue
    fi
    note "pypi: $project==$version"
    local work="$SCRATCH/pypi-work/$project-$version"
    mkdir -p "$work"
    if "$PYTHON" -m pip install -q --no-deps --no-compile --only-binary :all: \
      --target "$work/tree" "$project==$version" >"$work/pip.log" 2>&1; then
      echo wheel >"$work/form"
    else
      # No wheel for this interpreter: the sdist's metadata, not a build.
      rm -rf "$work/tree"
      "$PYTHON" -m pip download -q --no-deps --no-binary :all: -d "$work/sdist" \
        "$project==$version" >>"$work/pip.log" 2>&1 ||
        { cat "$work/pip.log" >&2; die "pip could not fetch $project==$version"; }
      local sdist
      sdist="$(find "$work/sdist" -maxdepth 1 -name '*.tar.gz' | head -n1)"
      [ -n "$sdist" ] || die "no sdist for $project==$version in $work/sdist"
      mkdir -p "$work/unpacked"
      tar -xzf "$sdist" -C "$work/unpacked"
      local top
      top="$(find "$work/unpacked" -mindepth 1 -maxdepth 1 -type d | head -n1)"
      [ -f "$top/PKG-INFO" ] || die "$sdist has no PKG-INFO"
      local name
      name="$(sed -n 's/^Name: *//p' "$top/PKG-INFO" | head -n1 | tr -d '\r')"
      [ -n "$name" ] || die "$sdist: PKG-INFO has no Name"
      mkdir -p "$work/tree/$name-$version.egg-info"
      cp "$top/PKG-INFO" "$work/tree/$name-$version.egg-info/PKG-INFO"
      if [ -d "$top/lib3" ]; then
        cp -r "$top/lib3/." "$work/tree/"
      fi
      echo sdist-egg-info >"$work/form"
    fi
    # Whatever the form, the metadata must name this release.
    local meta
    meta="$(find "$work/tree" -maxdepth 2 \( -path '*.dist-info/METADATA' -o -path '*.egg-info/PKG-INFO' \) | head -n1)"
    [ -n "$meta" ] || die "$project==$version: no METADATA or PKG-INFO in the install"
    grep -qx "Version: $version" <(tr -d '\r' <"$meta") ||
      die "$project==$version: $meta says $(grep -m1 '^Version:' "$meta")"
    mkdir -p "$DIR/pypi-cache"
    rm -rf "$cached"
    cp -a "$work/tree" "$cached"
    cp "$work/form" "$cached.form"
    touch "$cached/.complete"
    cp -a "$work/tree" "$dest"
    cp "$work/form" "$dest.form"
  done <"$SCRATCH/pypi.list"
  local kb
  kb="$(du -sk "$part" | cut -f1)"
  note "pypi: installed trees take $((kb / 1024)) MB"
  if [ "$kb" -gt $((200 * 1024)) ]; then
    note "pypi: over 200 MB, keeping only the *.dist-info and *.egg-info directories"
    for d in "$part"/*/; do
      find "$d" -mindepth 1 -maxdepth 1 ! -name '*.dist-info' ! -name '*.egg-info' \
        -exec rm -rf {} +
    done
  fi
  finish_part pypi
  rm -rf "$DIR/pypi-cache"
}

# ---------------------------------------------------------------------------------------
# rust/bin/<binary>: tiny programs built with `cargo auditable build --release`, so their
# dependency list is embedded in the .dep-v0 section. One depends on releases with
# RustSec advisories (smallvec 1.6.0: RUSTSEC-2021-0003; tokio 1.8.0), one on clean ones
# (smallvec 1.6.1, tokio 1.38.2). rust/locks/<binary>.Cargo.lock is the lock file it was
# built from, rust/audit/<binary>.json the embedded list, decompressed.
# ---------------------------------------------------------------------------------------
rust_project() { # binary name, dependency lines
  local name="$1" deps="$2" src="$SCRATCH/rust-src/$1"
  # A package name cannot hold dots: the binary is renamed after the build.
  local crate="${name//[.-]/_}"
  mkdir -p "$src/src"
  cat >"$src/Cargo.toml" <<EOF
[package]
name = "$crate"
version = "0.1.0"
edition = "2021"
publish = false

[dependencies]
$deps

[workspace]
EOF
  cat >"$src/src/main.rs" <<'EOF'
// A wharf scanner test binary: what matters is the dependency list cargo-auditable embeds.
fn main() {
    let mut v: smallvec::SmallVec<[u32; 4]> = smallvec::SmallVec::new();
    v.extend(std::env::args().map(|a| a.len() as u32));
    println!("{} arguments, {} bytes", v.len(), v.iter().sum::<u32>());
}
EOF
  (cd "$src" && CARGO_TARGET_DIR="$SCRATCH/rust-target" cargo auditable build --release --quiet) ||
    die "cargo auditable build of $name failed"
  cp "$SCRATCH/rust-target/release/$crate" "$SCRATCH/rust/bin/$name"
  cp "$src/Cargo.lock" "$SCRATCH/rust/locks/$name.Cargo.lock"
  # The dependency list as embedded (zlib-compressed JSON in the .dep-v0 section): what
  # a scanner reading the binary finds. Missing section: cargo-auditable was not used.
  rm -f "$SCRATCH/dep-v0.z"
  objcopy --dump-section .dep-v0="$SCRATCH/dep-v0.z" "$SCRATCH/rust/bin/$name" "$SCRATCH/objcopy.out" ||
    die "objcopy found no .dep-v0 section in $name (was cargo-auditable used?)"
  [ -s "$SCRATCH/dep-v0.z" ] || die "$name has no .dep-v0 section (was cargo-auditable used?)"
  "$PYTHON" -c 'import json, sys, zlib; json.dump(json.loads(zlib.decompress(open(sys.argv[1], "rb").read())), open(sys.argv[2], "w"), indent=1)' \
    "$SCRATCH/dep-v0.z" "$SCRATCH/rust/audit/$name.json"
}

build_rust() {
  # (`cargo auditable --version` is cargo's own version: ask cargo install instead.)
  local installed
  installed="$(cargo install --list)"
  if ! grep -q "^cargo-auditable v$CARGO_AUDITABLE_VERSION:" <<<"$installed"; then
    note "installing cargo-auditable $CARGO_AUDITABLE_VERSION"
    cargo install cargo-auditable --version "$CARGO_AUDITABLE_VERSION" --locked --quiet
  fi
  mkdir -p "$SCRATCH/rust/bin" "$SCRATCH/rust/locks" "$SCRATCH/rust/audit"
  rust_project auditable-smallvec-1.6.0 'smallvec = "=1.6.0"
tokio = { version = "=1.8.0", default-features = false }'
  rust_project auditable-smallvec-clean 'smallvec = "=1.6.1"
tokio = { version = "=1.38.2", default-features = false }'
  finish_part rust
}

# ---------------------------------------------------------------------------------------
# debian/: real .deb files from Debian's mirror (apt-get download), at the bookworm
# point-release versions where a security update fixed a vulnerability since (so the
# installed versions are genuinely affected), else the current candidate.
#   debian/debs/*.deb        the downloaded packages
#   debian/rootfs/           their files (dpkg-deb -x), var/lib/dpkg/status built from
#                            their control files (+ Status: install ok installed),
#                            var/lib/dpkg/info/<pkg>.list and .md5sums, and this machine's
#                            os-release (usr/lib/os-release, etc/os-release a symlink to
#                            it, as on Debian)
#   debian/status.d/<pkg>    the distroless layout: one control stanza per file, no Status
# ---------------------------------------------------------------------------------------
DEBIAN_PACKAGES=(
  "zlib1g=1:1.2.13.dfsg-1"      # bookworm-security has 1:1.2.13.dfsg-1+deb12u1
  "libexpat1=2.5.0-1+deb12u2"   # bookworm-security has 2.5.0-1+deb12u5
  "libbz2-1.0"                  # a binNMU: Version 1.0.8-5+b1, Source "bzip2 (1.0.8-5)"
  "bzip2"                       # executables in usr/bin
)

build_debian() {
  local part="$SCRATCH/debian"
  mkdir -p "$part/debs" "$part/rootfs/var/lib/dpkg/info" "$part/status.d"
  if [ -z "$(apt-cache madison zlib1g 2>/dev/null)" ]; then
    note "debian: apt lists are empty, running apt-get update"
    $SUDO apt-get update -q
  fi
  local spec pkg version
  for spec in "${DEBIAN_PACKAGES[@]}"; do
    pkg="${spec%%=*}"
    version=""
    [ "$spec" = "$pkg" ] || version="${spec#*=}"
    local available
    available="$(apt-cache madison "$pkg" | awk -F'|' '{gsub(/ /,"",$2); print $2}')"
    if [ -n "$version" ] && ! grep -qxF "$version" <<<"$available"; then
      note "debian: WARNING: $pkg $version is no longer on the mirror; taking the candidate (manifest.json records it)"
      spec="$pkg"
    fi
    (cd "$part/debs" && apt-get download -q -o APT::Sandbox::User="$(id -un)" "$spec" >/dev/null) || die "apt-get download $spec failed"
  done
  local deb control arch
  : >"$part/rootfs/var/lib/dpkg/status"
  for deb in "$part"/debs/*.deb; do
    dpkg-deb -x "$deb" "$part/rootfs"
    pkg="$(dpkg-deb -f "$deb" Package)"
    arch="$(dpkg-deb -f "$deb" Architecture)"
    control="$(dpkg-deb -f "$deb")"
    # dpkg writes Status second; every other field is the package's own.
    {
      printf '%s\n' "$control" | sed -n '1p'
      echo "Status: install ok installed"
      printf '%s\n' "$control" | sed '1d'
      echo
    } >>"$part/rootfs/var/lib/dpkg/status"
    printf '%s\n' "$control" >"$part/status.d/$pkg"
    # dpkg's file lists: Multi-Arch: same packages are named <pkg>:<arch>.
    local info="$pkg"
    [ "$(dpkg-deb -f "$deb" Multi-Arch)" != "same" ] || info="$pkg:$arch"
    dpkg-deb --fsys-tarfile "$deb" | tar -t | sed -e 's#^\./#/#' -e 's#/$##' -e 's#^$#/.#' \
      >"$part/rootfs/var/lib/dpkg/info/$info.list"
    mkdir -p "$SCRATCH/control/$pkg"
    dpkg-deb -e "$deb" "$SCRATCH/control/$pkg"
    if [ -f "$SCRATCH/control/$pkg/md5sums" ]; then
      cp "$SCRATCH/control/$pkg/md5sums" "$part/rootfs/var/lib/dpkg/info/$info.md5sums"
      cp "$SCRATCH/control/$pkg/md5sums" "$part/status.d/$pkg.md5sums"
    fi
  done
  mkdir -p "$part/rootfs/etc" "$part/rootfs/usr/lib"
  cp -L /etc/os-release "$part/rootfs/usr/lib/os-release"
  ln -sf ../usr/lib/os-release "$part/rootfs/etc/os-release"
  grep -q '^ID=debian' "$part/rootfs/usr/lib/os-release" ||
    note "debian: WARNING: this machine's os-release is not Debian's"
  finish_part debian
}

# ---------------------------------------------------------------------------------------
# alpine/: no Alpine mirror is reachable, so this part is SYNTHESISED from the vulndb
# fixture's real records: lib/apk/db/installed is the fixture's real apk database sample
# (package-lists/apk/osv-scanner_locks-many_installed, from osv-scanner) plus a libexif
# stanza at 0.6.21-r0, the version the real Alpine record CVE-2012-2812 names as fixed
# for v3.8–v3.12 (so: clean). alpine/rootfs-made-up/ has libexif 0.6.20-r0 instead, the
# fixture's synthetic vulnerable version ("matcher only"), clearly marked made up in
# manifest.json. etc/os-release is Alpine 3.12's.
# ---------------------------------------------------------------------------------------
alpine_rootfs() { # dir, libexif version
  local root="$1" version="$2"
  mkdir -p "$root/lib/apk/db" "$root/etc"
  {
    cat "$VULNDB/package-lists/apk/osv-scanner_locks-many_installed"
    # The sample ends with its stanza's last line; stanzas are separated by a blank line.
    [ -z "$(tail -c1 "$VULNDB/package-lists/apk/osv-scanner_locks-many_installed")" ] || echo
    echo
    cat <<EOF
P:libexif
V:$version
A:x86_64
T:library to parse EXIF files
U:https://libexif.github.io/
L:LGPL-2.1-or-later
o:libexif
F:usr/lib
R:libexif.so.12
a:0:0:755
EOF
    echo
  } >"$root/lib/apk/db/installed"
  cat >"$root/etc/os-release" <<'EOF'
NAME="Alpine Linux"
ID=alpine
VERSION_ID=3.12.12
PRETTY_NAME="Alpine Linux v3.12"
HOME_URL="https://alpinelinux.org/"
BUG_REPORT_URL="https://bugs.alpinelinux.org/"
EOF
}

build_alpine() {
  mkdir -p "$SCRATCH/alpine"
  alpine_rootfs "$SCRATCH/alpine/rootfs" 0.6.21-r0
  alpine_rootfs "$SCRATCH/alpine/rootfs-made-up" 0.6.20-r0
  finish_part alpine
}

done_part pypi || build_pypi
done_part rust || build_rust
done_part debian || build_debian
done_part alpine || build_alpine

# ---------------------------------------------------------------------------------------
# manifest.json: what each part holds, read back from the parts themselves.
# ---------------------------------------------------------------------------------------
"$PYTHON" - "$DIR" "$PACKAGES_JSON" "$SCRATCH/manifest.json" <<'EOF'
import json, os, re, sys, tomllib

root, packages_json, out = sys.argv[1:4]
known = json.load(open(packages_json))["packages"]


def expected(ecosystem, name, version):
    """The advisory ids packages.json expects for this version, or None if not listed."""
    for p in known:
        if p["ecosystem"] == ecosystem and p["name"].lower() == name.lower():
            ids = p["expected_ids_for_each_version"].get(version)
            if ids is not None:
                return {"vulnerable": bool(ids), "expected_ids": ids}
    return {}


def fields(text):
    out = {}
    for line in text.splitlines():
        if not line or line[0] in " \t" or ":" not in line:
            continue
        k, v = line.split(":", 1)
        out.setdefault(k, v.strip())
    return out


entries = []

# PyPI
pypi = os.path.join(root, "pypi")
for d in sorted(os.listdir(pypi)):
    tree = os.path.join(pypi, d)
    if not os.path.isdir(tree):
        continue
    meta = None
    for sub in sorted(os.listdir(tree)):
        for f in ("METADATA", "PKG-INFO"):
            p = os.path.join(tree, sub, f)
            if (sub.endswith(".dist-info") or sub.endswith(".egg-info")) and os.path.isfile(p):
                meta = os.path.join(sub, f)
    assert meta, f"{tree}: no metadata"
    m = fields(open(os.path.join(tree, meta), encoding="utf-8", errors="replace").read())
    project, version = d.rsplit("-", 1)
    assert m["Version"] == version, (tree, m["Version"])
    name = re.sub(r"[-_.]+", "-", project).lower()
    form = open(tree + ".form").read().strip()
    e = {"part": "pypi", "ecosystem": "PyPI", "name": name, "metadata_name": m["Name"],
         "version": version, "path": f"pypi/{d}", "metadata": f"pypi/{d}/{meta}", "form": form}
    e.update(expected("PyPI", name, version))
    entries.append(e)

# Rust: every crate each binary's embedded dependency list names (what a scanner finds).
rust = os.path.join(root, "rust")
for f in sorted(os.listdir(os.path.join(rust, "audit"))):
    binary = f[: -len(".json")]
    audit = json.load(open(os.path.join(rust, "audit", f)))
    pkgs = audit["packages"]
    root_idx = next(i for i, p in enumerate(pkgs) if p.get("root"))
    direct = set(pkgs[root_idx].get("dependencies", []))
    for i, p in enumerate(pkgs):
        if i == root_idx:
            continue
        e = {"part": "rust", "ecosystem": "crates.io", "name": p["name"], "version": p["version"],
             "path": f"rust/bin/{binary}", "direct": i in direct,
             "kind": p.get("kind", "runtime")}
        e.update(expected("crates.io", p["name"], p["version"]))
        entries.append(e)

# Debian: the status file's stanzas, and the status.d files.
deb = os.path.join(root, "debian")
os_release = dict(line.split("=", 1) for line in
                  open(os.path.join(deb, "rootfs/usr/lib/os-release")).read().splitlines()
                  if "=" in line)
deb_eco = "Debian:" + os_release["VERSION_ID"].strip('"')
for stanza in open(os.path.join(deb, "rootfs/var/lib/dpkg/status")).read().split("\n\n"):
    if not stanza.strip():
        continue
    s = fields(stanza)
    src = s.get("Source", s["Package"])
    src_name, _, src_version = src.partition(" ")
    for layout, path, status in (("status", "debian/rootfs", True),
                                 ("status.d", "debian/status.d", False)):
        entries.append({"part": "debian", "layout": layout, "ecosystem": deb_eco,
                        "name": s["Package"], "version": s["Version"],
                        "architecture": s["Architecture"], "source": src_name,
                        "source_version": src_version.strip("()") or s["Version"],
                        "path": path})

# Alpine
for rootfs, made_up in (("rootfs", False), ("rootfs-made-up", True)):
    text = open(os.path.join(root, "alpine", rootfs, "lib/apk/db/installed")).read()
    for stanza in text.split("\n\n"):
        s = {}
        for line in stanza.splitlines():
            if len(line) > 2 and line[1] == ":":
                s.setdefault(line[0], line[2:])
        if "P" not in s:
            continue
        e = {"part": "alpine", "ecosystem": "Alpine:v3.12", "name": s["P"], "version": s["V"],
             "path": f"alpine/{rootfs}", "made_up": made_up and s["P"] == "libexif"}
        if s["P"] == "libexif":
            e.update(expected("Alpine:v3.12", "libexif", s["V"]))
        entries.append(e)

manifest = {
    "format": 1,
    "description": "Raw inputs for wharf's scanner test images, built by scripts/build-scan-fixtures.sh "
                   "from real packages (PyPI, crates.io, Debian); the alpine part is synthesised from "
                   "the vulndb fixture's records. expected_ids come from packages.json where it lists "
                   "the version.",
    "parts": {
        "pypi": {"path": "pypi", "image_path": "usr/local/lib/python3.11/site-packages"},
        "rust": {"path": "rust/bin", "image_path": "usr/local/bin", "locks": "rust/locks",
                 "audit": "rust/audit"},
        "debian": {"path": "debian/rootfs", "image_path": "", "status_d": "debian/status.d",
                   "status_d_image_path": "var/lib/dpkg/status.d", "debs": "debian/debs"},
        "alpine": {"path": "alpine/rootfs", "made_up": "alpine/rootfs-made-up", "image_path": "",
                   "synthesised": True},
    },
    "packages": entries,
}
json.dump(manifest, open(out, "w"), indent=1, sort_keys=False)
print(f"build-scan-fixtures: manifest lists {len(entries)} packages")
EOF
mv "$SCRATCH/manifest.json" "$DIR/manifest.json"
note "ready: $DIR/manifest.json ($(du -sh --exclude=.scratch.* "$DIR" | cut -f1) in all)"
