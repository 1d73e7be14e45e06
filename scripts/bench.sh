#!/usr/bin/env bash
# Benchmarks wharf against the reference registry (Debian's docker-registry) side by side,
# in one run, and refreshes the figures in docs/benchmarks.md.
#
#   scripts/bench.sh              full run (a few minutes); rewrites the generated section
#                                 of docs/benchmarks.md and writes target/bench/latest.json
#   scripts/bench.sh --quick      smoke run with small sizes (< 1 minute once built);
#                                 prints the report, leaves the document alone
#   scripts/bench.sh [--quick] ARGS...   extra wharf-bench options (wharf-bench --help),
#                                 e.g. --work-dir /mnt/fast or --repeats 5
#
# Needs wrk, ab and docker-registry (scripts/install-test-deps.sh installs them).
set -euo pipefail
cd "$(dirname "$0")/.."

quick=0
extra=()
for arg in "$@"; do
  case "$arg" in
    --quick) quick=1 ;;
    *) extra+=("$arg") ;;
  esac
done

for tool in wrk ab docker-registry; do
  if ! command -v "$tool" >/dev/null 2>&1; then
    echo "bench.sh: $tool is not installed; run scripts/install-test-deps.sh" >&2
    exit 1
  fi
done

# One release build of both binaries; the benchmark never runs a debug wharf.
cargo build --release -p wharf -p wharf-bench

label="scripts/bench.sh${*:+ $*}"
common=(
  --wharf target/release/wharf
  --reference "$(command -v docker-registry)"
  --command-label "$label"
)

if [ "$quick" -eq 1 ]; then
  exec target/release/wharf-bench "${common[@]}" \
    --blob-mib 16 --chunk-mib 4 --repeats 3 \
    --wrk-secs 2 --ab-requests 5000 \
    --images 50 --tags 500 --tag-gets 50 \
    "${extra[@]+"${extra[@]}"}"
fi

mkdir -p target/bench
exec target/release/wharf-bench "${common[@]}" \
  --update-doc docs/benchmarks.md \
  --json target/bench/latest.json \
  "${extra[@]+"${extra[@]}"}"
