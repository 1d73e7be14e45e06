#!/usr/bin/env bash
# Builds an earlier wharf release from the project's history, for the upgrade tests:
#   scripts/build-release.sh 1.0.0     # prints the path of its `wharf` binary
# The release's commit is the one whose subject is exactly "Release X.Y.Z" (see
# releases.toml). The build goes to target/releases/X.Y.Z (reused while the commit is
# the same) from a temporary worktree that is removed afterwards.
set -euo pipefail
cd "$(dirname "$0")/.."

version="${1:?usage: scripts/build-release.sh VERSION}"
commit=$(git log --format=%H --grep="^Release ${version}\$" -1)
if [ -z "$commit" ]; then
  echo "build-release.sh: no commit \"Release ${version}\" in this history (a shallow clone?)" >&2
  exit 1
fi
out="target/releases/${version}"
if [ -x "${out}/wharf" ] && [ "$(cat "${out}/commit" 2>/dev/null)" = "$commit" ]; then
  echo "${out}/wharf"
  exit 0
fi
worktree=$(mktemp -d)
cleanup() { git worktree remove --force "$worktree" >/dev/null 2>&1 || rm -rf "$worktree"; git worktree prune; }
trap cleanup EXIT
git worktree add --detach -q "$worktree" "$commit"
# Its own target directory: the release's crates must not overwrite this build's.
# Line tables only, as this build's own dev profile: a release's tree may predate it.
WHARF_COMMIT="$commit" CARGO_TARGET_DIR="$PWD/target/release-builds" CARGO_PROFILE_DEV_DEBUG=line-tables-only \
  cargo build --locked -q -p wharf --manifest-path "$worktree/Cargo.toml" >&2
mkdir -p "$out"
cp target/release-builds/debug/wharf "${out}/wharf"
echo "$commit" > "${out}/commit"
echo "${out}/wharf"
