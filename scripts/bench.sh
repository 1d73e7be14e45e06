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
#   scripts/bench.sh --pg-fs [--quick] [ARGS...]
#                                 wharf on PostgreSQL + a directory against the reference on
#                                 its filesystem storage (as in the default run): starts a
#                                 throwaway PostgreSQL (scripts/postgres-for-tests.sh), stops
#                                 it on exit, and (without --quick) rewrites the "PostgreSQL +
#                                 directory" generated section of docs/benchmarks.md (appended
#                                 at the end on the first run) and writes
#                                 target/bench/latest-pg-fs.json. Same sizes as the default
#                                 run (and, with --quick, as its --quick).
#   scripts/bench.sh --pg-s3 [--quick] [ARGS...]
#                                 wharf on PostgreSQL + S3 against the reference on the same
#                                 S3 server: starts a throwaway PostgreSQL and moto
#                                 (scripts/postgres-for-tests.sh, scripts/s3-for-tests.sh),
#                                 stops them on exit, and (without --quick) rewrites the
#                                 "PostgreSQL + S3" generated section of docs/benchmarks.md
#                                 and writes target/bench/latest-pg-s3.json. Sizes are smaller
#                                 than the default run's: moto is a Python server.
#   scripts/bench.sh --gc [--quick] [ARGS...]
#                                 online garbage collection and the metadatastoremigration
#                                 job (wharf-bench gc): GC of 100,000 blobs (10% garbage) and
#                                 the migration of 100,000 manifests on SQLite and on a
#                                 throwaway PostgreSQL (started here, stopped on exit), then
#                                 pushes/s on wharf serve without and with a GC job, on
#                                 SQLite + a directory (5 rounds with GC, 5 control rounds
#                                 without) and on PostgreSQL + a directory (the GC dataset
#                                 loaded into a fresh database per round; 3 + 3 rounds; ~20
#                                 minutes). Without --quick it rewrites the "garbage
#                                 collection" generated section of docs/benchmarks.md and
#                                 writes target/bench/latest-gc.json; --quick uses 10,000
#                                 blobs and manifests, one round of each kind on each
#                                 backend with 3 s push phases, and prints only.
#   scripts/bench.sh --ui [--quick] [ARGS...]
#                                 the web UI's page times and sizes (wharf-bench ui): a
#                                 registry of 100,000 repositories (one with 10,000 tags)
#                                 and 1,000 jobs, then one of 1,000 repositories (100 tags,
#                                 100 jobs), each on SQLite and on a throwaway PostgreSQL
#                                 (started here, stopped on exit), served by wharf serve with
#                                 authentication on; 200 timed requests per page. Without
#                                 --quick it rewrites the "web UI" generated section of
#                                 docs/benchmarks.md (appended at the end on the first run)
#                                 and writes target/bench/latest-ui.json; --quick uses 5,000
#                                 repositories, 1,000 tags and 50 requests, and prints only.
#   scripts/bench.sh --scan [--quick] [ARGS...]
#                                 the vulnerability scanner (wharf-bench scan), in process:
#                                 scan_image on a synthetic 1 GiB image of many small files
#                                 in eight gzip layers (and the same layers as zstd) written
#                                 into a temporary blob directory + SQLite store, 3 scans
#                                 each, throughput and peak RSS; parsing, validating,
#                                 scoring and indexing 100,000 synthetic OSV records from
#                                 all.zip archives; re-matching 10,000 inventories (~60,000
#                                 distinct packages) after 1% of the advisories changed;
#                                 then the import and re-match jobs' code through the
#                                 metadata store, on SQLite and on a throwaway PostgreSQL
#                                 (started here, stopped on exit).
#                                 Without --quick it rewrites the "vulnerability scanning"
#                                 generated section of docs/benchmarks.md (appended at the
#                                 end on the first run) and writes
#                                 target/bench/latest-scan.json; --quick uses a 64 MiB
#                                 image, 10,000 records and 1,000 inventories, and prints
#                                 only.
#   scripts/bench.sh --cache [--quick] [ARGS...]
#                                 content caches and pull-through proxies (wharf-bench
#                                 cache): wharf (authentication on), a content cache and
#                                 the reference on loopback; 256 MiB blob pulls direct from
#                                 each, through a warm and a cold cache (5 each), 20 clients
#                                 missing one blob through the cache, and 300 by-tag
#                                 manifest GETs through a proxy of the reference against a
#                                 local tag. Without --quick it rewrites the "content
#                                 caches" generated section of docs/benchmarks.md (appended
#                                 at the end on the first run); --quick uses 32 MiB blobs,
#                                 one pull each, 5 clients and 50 GETs, and prints only.
#
# Needs wrk, ab and docker-registry (scripts/install-test-deps.sh installs them); --pg-fs
# also PostgreSQL (server and psql); --pg-s3 PostgreSQL and the moto test venv; --gc and
# --ui and --scan only PostgreSQL.
set -euo pipefail
cd "$(dirname "$0")/.."

quick=0
pg_fs=0
pg_s3=0
gc=0
ui=0
scan=0
cache=0
extra=()
for arg in "$@"; do
  case "$arg" in
    --quick) quick=1 ;;
    --pg-fs) pg_fs=1 ;;
    --pg-s3) pg_s3=1 ;;
    --gc) gc=1 ;;
    --ui) ui=1 ;;
    --scan) scan=1 ;;
    --cache) cache=1 ;;
    *) extra+=("$arg") ;;
  esac
done
if [ $((gc + ui + scan + cache + pg_s3 + pg_fs)) -gt 1 ]; then
  echo "bench.sh: --gc, --ui, --scan, --cache, --pg-fs and --pg-s3 are separate runs; give one" >&2
  exit 2
fi
label="scripts/bench.sh${*:+ $*}"

# Everything a run starts below is stopped on any exit: success, error or signal. The
# benchmark runs in the background so a signal reaches this script at once; it is then
# stopped by its PID (it stops its own servers) before PostgreSQL and moto go.
bench_pid=""
pg_env=""
s3_env=""
WHARF_TEST_POSTGRES_DIR=""
WHARF_TEST_S3_PID=""
WHARF_TEST_S3_LOG=""
cleanup() {
  local status=$?
  trap - EXIT INT TERM
  # A signal that arrived while a start script ran is handled once it returns, before
  # its output is evaluated below: read the PID and directory from that output.
  [ -n "$WHARF_TEST_POSTGRES_DIR" ] || [ -z "$pg_env" ] || eval "$pg_env" || true
  [ -n "$WHARF_TEST_S3_PID" ] || [ -z "$s3_env" ] || eval "$s3_env" || true
  if [ -n "$bench_pid" ] && kill -0 "$bench_pid" 2>/dev/null; then
    kill -TERM "$bench_pid" 2>/dev/null || true
    for _ in $(seq 1 150); do
      kill -0 "$bench_pid" 2>/dev/null || break
      sleep 0.1
    done
    if kill -0 "$bench_pid" 2>/dev/null; then kill -KILL "$bench_pid" 2>/dev/null || true; fi
  fi
  if [ -n "$WHARF_TEST_S3_PID" ]; then
    scripts/s3-for-tests.sh stop "$WHARF_TEST_S3_PID" "$WHARF_TEST_S3_LOG" || true
    # That sends SIGTERM only: wait (bounded) until moto has gone, then make sure.
    for _ in $(seq 1 100); do
      kill -0 "$WHARF_TEST_S3_PID" 2>/dev/null || break
      sleep 0.1
    done
    if kill -0 "$WHARF_TEST_S3_PID" 2>/dev/null; then kill -KILL "$WHARF_TEST_S3_PID" 2>/dev/null || true; fi
  fi
  if [ -n "$WHARF_TEST_POSTGRES_DIR" ]; then
    scripts/postgres-for-tests.sh stop "$WHARF_TEST_POSTGRES_DIR" || true
  fi
  exit "$status"
}

if [ "$gc" -eq 1 ]; then
  command -v psql >/dev/null 2>&1 \
    || { echo "bench.sh: psql is not installed (apt-get install postgresql)" >&2; exit 1; }
  # Release builds only: wharf for the push phase, wharf-bench runs GC and the migration
  # in its own process.
  cargo build --release -p wharf -p wharf-bench
  trap cleanup EXIT
  trap 'exit 130' INT
  trap 'exit 143' TERM
  pg_env=$(scripts/postgres-for-tests.sh start)
  eval "$pg_env"
  echo "PostgreSQL at $WHARF_TEST_POSTGRES_URL" >&2
  gc_args=(--wharf target/release/wharf --postgres-url "$WHARF_TEST_POSTGRES_URL"
    --command-label "$label")
  # For the report's CPU figures: the postmaster's PID heads its pid file.
  pg_pid=$(head -n 1 "$WHARF_TEST_POSTGRES_DIR/data/postmaster.pid" 2>/dev/null || true)
  [ -z "$pg_pid" ] || gc_args+=(--postgres-pid "$pg_pid")
  if [ "$quick" -eq 1 ]; then
    gc_args+=(--blobs 10000 --manifests 10000 --push-secs 3 --push-rounds 1 --control-rounds 1
      --pg-push-rounds 1 --pg-control-rounds 1)
  else
    mkdir -p target/bench
    gc_args+=(--update-doc docs/benchmarks.md --json target/bench/latest-gc.json)
  fi
  target/release/wharf-bench gc "${gc_args[@]}" "${extra[@]+"${extra[@]}"}" &
  bench_pid=$!
  # `wait` returns early on a trapped signal; the trap then stops the benchmark.
  status=0
  wait "$bench_pid" || status=$?
  bench_pid=""
  exit "$status"
fi

if [ "$ui" -eq 1 ]; then
  command -v psql >/dev/null 2>&1 \
    || { echo "bench.sh: psql is not installed (apt-get install postgresql)" >&2; exit 1; }
  # Release builds only: wharf serves the pages, wharf-bench builds the stores and asks.
  cargo build --release -p wharf -p wharf-bench
  trap cleanup EXIT
  trap 'exit 130' INT
  trap 'exit 143' TERM
  pg_env=$(scripts/postgres-for-tests.sh start)
  eval "$pg_env"
  echo "PostgreSQL at $WHARF_TEST_POSTGRES_URL" >&2
  ui_args=(--wharf target/release/wharf --postgres-url "$WHARF_TEST_POSTGRES_URL"
    --command-label "$label")
  # For the report's CPU figures: the postmaster's PID heads its pid file.
  pg_pid=$(head -n 1 "$WHARF_TEST_POSTGRES_DIR/data/postmaster.pid" 2>/dev/null || true)
  [ -z "$pg_pid" ] || ui_args+=(--postgres-pid "$pg_pid")
  if [ "$quick" -eq 1 ]; then
    ui_args+=(--repos 5000 --tags 1000 --requests 50 --warmup 5)
  else
    mkdir -p target/bench
    ui_args+=(--update-doc docs/benchmarks.md --json target/bench/latest-ui.json)
  fi
  target/release/wharf-bench ui "${ui_args[@]}" "${extra[@]+"${extra[@]}"}" &
  bench_pid=$!
  # `wait` returns early on a trapped signal; the trap then stops the benchmark.
  status=0
  wait "$bench_pid" || status=$?
  bench_pid=""
  exit "$status"
fi

if [ "$scan" -eq 1 ]; then
  command -v psql >/dev/null 2>&1 \
    || { echo "bench.sh: psql is not installed (apt-get install postgresql)" >&2; exit 1; }
  # Release build of wharf-bench only: the scanner runs in its own process.
  cargo build --release -p wharf-bench
  trap cleanup EXIT
  trap 'exit 130' INT
  trap 'exit 143' TERM
  # The import and re-match also run on PostgreSQL (a throwaway server, stopped on exit).
  pg_env=$(scripts/postgres-for-tests.sh start)
  eval "$pg_env"
  echo "PostgreSQL at $WHARF_TEST_POSTGRES_URL" >&2
  scan_args=(--command-label "$label" --postgres-url "$WHARF_TEST_POSTGRES_URL")
  if [ "$quick" -eq 1 ]; then
    scan_args+=(--quick)
  else
    mkdir -p target/bench
    scan_args+=(--update-doc docs/benchmarks.md --json target/bench/latest-scan.json)
  fi
  target/release/wharf-bench scan "${scan_args[@]}" "${extra[@]+"${extra[@]}"}" &
  bench_pid=$!
  # `wait` returns early on a trapped signal; the trap then stops the benchmark.
  status=0
  wait "$bench_pid" || status=$?
  bench_pid=""
  exit "$status"
fi

if [ "$cache" -eq 1 ]; then
  command -v docker-registry >/dev/null 2>&1 \
    || { echo "bench.sh: docker-registry is not installed; run scripts/install-test-deps.sh" >&2; exit 1; }
  cargo build --release -p wharf -p wharf-bench
  trap cleanup EXIT
  trap 'exit 130' INT
  trap 'exit 143' TERM
  cache_args=(--wharf target/release/wharf --command-label "$label")
  if [ "$quick" -eq 1 ]; then
    cache_args+=(--blob-mib 32 --repeats 1 --clients 5 --requests 50)
  else
    cache_args+=(--update-doc docs/benchmarks.md)
  fi
  target/release/wharf-bench cache "${cache_args[@]}" "${extra[@]+"${extra[@]}"}" &
  bench_pid=$!
  status=0
  wait "$bench_pid" || status=$?
  bench_pid=""
  exit "$status"
fi

for tool in wrk ab docker-registry; do
  if ! command -v "$tool" >/dev/null 2>&1; then
    echo "bench.sh: $tool is not installed; run scripts/install-test-deps.sh" >&2
    exit 1
  fi
done

# One release build of both binaries; the benchmark never runs a debug wharf.
cargo build --release -p wharf -p wharf-bench

common=(
  --wharf target/release/wharf
  --reference "$(command -v docker-registry)"
  --command-label "$label"
)
# The --quick sizes of the default run and of --pg-fs (both servers' blobs are local).
quick_sizes=(
  --blob-mib 16 --chunk-mib 4 --repeats 3
  --wrk-secs 2 --ab-requests 5000
  --images 50 --tags 500 --tag-gets 50
)

if [ "$pg_fs" -eq 1 ]; then
  command -v psql >/dev/null 2>&1 \
    || { echo "bench.sh: psql is not installed (apt-get install postgresql)" >&2; exit 1; }

  trap cleanup EXIT
  trap 'exit 130' INT
  trap 'exit 143' TERM

  # Durable (fsync on), as wharf's SQLite commits are: this compares durable pushes.
  pg_env=$(scripts/postgres-for-tests.sh start --durable)
  eval "$pg_env"
  echo "PostgreSQL at $WHARF_TEST_POSTGRES_URL" >&2

  pg_fs_args=(--stores pg-fs --postgres-url "$WHARF_TEST_POSTGRES_URL")
  # For the report's CPU table: the postmaster's PID heads its pid file.
  pg_pid=$(head -n 1 "$WHARF_TEST_POSTGRES_DIR/data/postmaster.pid" 2>/dev/null || true)
  [ -z "$pg_pid" ] || pg_fs_args+=(--postgres-pid "$pg_pid")
  if [ "$quick" -eq 1 ]; then
    sizes=("${quick_sizes[@]}")
    out=()
  else
    # The default run's sizes (wharf-bench's defaults): the blobs are local here too.
    sizes=()
    mkdir -p target/bench
    out=(--update-doc docs/benchmarks.md --json target/bench/latest-pg-fs.json)
  fi
  target/release/wharf-bench "${common[@]}" "${pg_fs_args[@]}" \
    "${sizes[@]+"${sizes[@]}"}" "${out[@]+"${out[@]}"}" "${extra[@]+"${extra[@]}"}" &
  bench_pid=$!
  # `wait` returns early on a trapped signal; the trap then stops the benchmark.
  status=0
  wait "$bench_pid" || status=$?
  bench_pid=""
  exit "$status"
fi

if [ "$pg_s3" -eq 1 ]; then
  venv="${WHARF_TEST_VENV:-$HOME/.cache/wharf-test-venv}"
  command -v psql >/dev/null 2>&1 \
    || { echo "bench.sh: psql is not installed (apt-get install postgresql)" >&2; exit 1; }
  [ -x "$venv/bin/moto_server" ] \
    || { echo "bench.sh: no moto_server in $venv (scripts/install-test-deps.sh)" >&2; exit 1; }

  trap cleanup EXIT
  trap 'exit 130' INT
  trap 'exit 143' TERM

  pg_env=$(scripts/postgres-for-tests.sh start)
  eval "$pg_env"
  s3_env=$(scripts/s3-for-tests.sh start)
  eval "$s3_env"
  moto_version=$("$venv/bin/python" -c 'import moto; print(moto.__version__)' 2>/dev/null || echo "?")
  echo "PostgreSQL at $WHARF_TEST_POSTGRES_URL, moto $moto_version at $WHARF_TEST_S3_ENDPOINT (pid $WHARF_TEST_S3_PID)" >&2

  pg_s3_args=(
    --stores pg-s3
    --postgres-url "$WHARF_TEST_POSTGRES_URL"
    --s3-endpoint "$WHARF_TEST_S3_ENDPOINT"
    --s3-bucket wharf-test
    --s3-label "moto $moto_version (scripts/s3-for-tests.sh: in memory, one process)"
    --s3-pid "$WHARF_TEST_S3_PID"
  )
  # For the report's CPU table: the postmaster's PID heads its pid file.
  pg_pid=$(head -n 1 "$WHARF_TEST_POSTGRES_DIR/data/postmaster.pid" 2>/dev/null || true)
  [ -z "$pg_pid" ] || pg_s3_args+=(--postgres-pid "$pg_pid")
  if [ "$quick" -eq 1 ]; then
    sizes=(--blob-mib 8 --chunk-mib 4 --repeats 2
      --wrk-secs 2 --connections 8 --ab-requests 500
      --images 10 --tags 50 --tag-gets 10)
    out=()
  else
    sizes=(--blob-mib 64 --chunk-mib 16 --repeats 5
      --wrk-secs 10 --connections 16 --ab-requests 5000
      --images 100 --tags 500 --tag-gets 50)
    mkdir -p target/bench
    out=(--update-doc docs/benchmarks.md --json target/bench/latest-pg-s3.json)
  fi
  # moto accepts any credentials: wharf-bench's defaults (test/test) are passed to both.
  target/release/wharf-bench "${common[@]}" "${pg_s3_args[@]}" "${sizes[@]}" \
    "${out[@]+"${out[@]}"}" "${extra[@]+"${extra[@]}"}" &
  bench_pid=$!
  # `wait` returns early on a trapped signal; the trap then stops the benchmark.
  status=0
  wait "$bench_pid" || status=$?
  bench_pid=""
  exit "$status"
fi

if [ "$quick" -eq 1 ]; then
  exec target/release/wharf-bench "${common[@]}" "${quick_sizes[@]}" \
    "${extra[@]+"${extra[@]}"}"
fi

mkdir -p target/bench
exec target/release/wharf-bench "${common[@]}" \
  --update-doc docs/benchmarks.md \
  --json target/bench/latest.json \
  "${extra[@]+"${extra[@]}"}"
