#!/usr/bin/env bash
# shellcheck disable=SC2016 # run() shows its command as written, then evals it
# A rolling upgrade of three wharf replica containers behind nginx, under load, for
# real: the transcript in docs/upgrading.md ("Rolling upgrades (docker driver): a real
# run") comes from this script.
#
#   scripts/rolling-demo.sh OLD_IMAGE NEW_IMAGE [VERSION=IMAGE]
#       e.g. wharf:dev-1.1.0 wharf:dev-debug
#       or   wharf:dev-1.0.0 wharf:dev-debug 1.1.0=wharf:dev-1.1.0   (two hops in one apply)
#
# It starts a throwaway PostgreSQL and S3 server (scripts/postgres-for-tests.sh,
# scripts/s3-for-tests.sh), three replica containers of OLD_IMAGE (`--network host`,
# each on its own loopback port, labelled wharf.replica=demo-PID and wharf.url=URL, as
# crates/cli/tests/support/rolling.rs does), nginx on the host in front of them (the
# harness's configuration), pushes three images through nginx with skopeo, starts a
# background load (curl pulls of their manifests through nginx), and runs
# `wharf upgrade plan`, `check`, `apply --driver docker --image NEW_IMAGE`, `status`,
# `verify` and `rollback` (refused: the upgrade is finalised). The load's figures come
# last. Everything it started is removed on exit (containers by their names and the
# cluster's label, nginx by its PID, PostgreSQL and S3 with their scripts' stop
# commands, the temporary directory). Every wait is bounded.
#
# Needs: docker (OLD_IMAGE and NEW_IMAGE present; never pulled), nginx, skopeo, curl,
# jq, PostgreSQL's binaries and the test venv's moto_server (scripts/install-test-deps.sh),
# and target/debug/wharf (or WHARF_BIN) of NEW_IMAGE's version.
# LOAD_MAX (5000) bounds the load's requests, LOAD_PAUSE (0.02 s) paces them.
set -euo pipefail

usage() { echo "usage: $0 OLD_IMAGE NEW_IMAGE [VERSION=IMAGE]" >&2; exit 2; }
[ $# -eq 2 ] || [ $# -eq 3 ] || usage
OLD_IMAGE=$1
NEW_IMAGE=$2
# An intermediate stop of the plan and its image, for an upgrade of several hops.
HOP=${3:-}
cd "$(dirname "$0")/.."
WHARF_BIN=${WHARF_BIN:-target/debug/wharf}
LOAD_MAX=${LOAD_MAX:-5000}
LOAD_PAUSE=${LOAD_PAUSE:-0.02}
PASSWORD=demo-admin-password
ID=demo-$$
LABEL=wharf.replica=$ID
REPO=demo/app
TAGS=(v1 v2 v3)
OCI_MANIFEST=application/vnd.oci.image.manifest.v1+json

for tool in docker nginx skopeo curl jq psql sha256sum; do
  command -v "$tool" >/dev/null || { echo "$tool is not installed" >&2; exit 1; }
done
[ -x "$WHARF_BIN" ] || { echo "$WHARF_BIN does not exist (cargo build)" >&2; exit 1; }
for image in "$OLD_IMAGE" "$NEW_IMAGE" ${HOP:+"${HOP#*=}"}; do
  docker image inspect "$image" >/dev/null 2>&1 || { echo "no image $image" >&2; exit 1; }
done

free_port() {
  python3 -c 'import socket; s = socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])'
}

# What the script started, for the trap.
TMP=$(mktemp -d /tmp/wharf-rolling-demo.XXXXXX)
NAMES=()
NGINX_PID=
LOAD_PID=
STOP=$TMP/stop-load
WHARF_TEST_POSTGRES_DIR=
WHARF_TEST_S3_PID=
WHARF_TEST_S3_LOG=

cleanup() {
  local rc=$?
  set +e
  touch "$STOP"
  if [ -n "$LOAD_PID" ] && kill -0 "$LOAD_PID" 2>/dev/null; then
    kill "$LOAD_PID" 2>/dev/null
    wait "$LOAD_PID" 2>/dev/null
  fi
  # By name (the driver recreates the replicas under the same names), and anything
  # else carrying this cluster's unique label.
  local ids
  ids=$(docker ps --all --quiet --filter "label=$LABEL" 2>/dev/null)
  for c in "${NAMES[@]}" $ids; do
    docker rm --force "$c" >/dev/null 2>&1
  done
  if [ -n "$NGINX_PID" ]; then
    # SIGTERM: the master stops its workers too.
    kill -TERM "$NGINX_PID" 2>/dev/null
    for _ in $(seq 1 100); do kill -0 "$NGINX_PID" 2>/dev/null || break; sleep 0.1; done
    kill -KILL "$NGINX_PID" 2>/dev/null
    wait "$NGINX_PID" 2>/dev/null
  fi
  [ -z "$WHARF_TEST_S3_PID" ] || bash scripts/s3-for-tests.sh stop "$WHARF_TEST_S3_PID" "$WHARF_TEST_S3_LOG"
  [ -z "$WHARF_TEST_POSTGRES_DIR" ] || bash scripts/postgres-for-tests.sh stop "$WHARF_TEST_POSTGRES_DIR"
  rm -rf "$TMP"
  exit "$rc"
}
trap cleanup EXIT
trap 'exit 130' INT TERM

note() { printf '# %s\n' "$*"; }

# Shows a command as it is written below (with the variables printed at the start),
# runs it, and shows its exit status when it is not 0.
wharf() { "$WHARF_BIN" "$@"; }
run() {
  printf '$ %s\n' "$1"
  local rc=0
  eval "$1" 2>&1 || rc=$?
  [ "$rc" -eq 0 ] || printf '(exit status %s)\n' "$rc"
  return 0
}

# ---------------------------------------------------------------------------------
# PostgreSQL and S3

eval "$(bash scripts/postgres-for-tests.sh start)"
eval "$(bash scripts/s3-for-tests.sh start)"
# s3-for-tests.sh creates the bucket `wharf-test`; PUT again, as the harness expects it.
curl -sf -X PUT -o /dev/null "$WHARF_TEST_S3_ENDPOINT/wharf-test" || true
export AWS_ACCESS_KEY_ID=test AWS_SECRET_ACCESS_KEY=test
export WHARF_LOG_LEVEL=warn
psql "$WHARF_TEST_POSTGRES_URL" -qc "CREATE DATABASE wharf_demo" >/dev/null
PG=${WHARF_TEST_POSTGRES_URL%/*}/wharf_demo
BLOBS=s3://wharf-test/$ID
S3=$WHARF_TEST_S3_ENDPOINT
DATA=$TMP/upgrade-data

# ---------------------------------------------------------------------------------
# three replicas of OLD_IMAGE

ADDRS=()
for i in 1 2 3; do
  NAMES+=("wharf-$ID-$i")
  ADDRS+=("127.0.0.1:$(free_port)")
done

run_replica() {
  local i=$1 image=$2
  docker run --detach --pull never --name "${NAMES[$i]}" --network host \
    --label "$LABEL" --label "wharf.url=http://${ADDRS[$i]}" \
    --env "WHARF_LISTEN=${ADDRS[$i]}" \
    --env "WHARF_METADATA=$PG" \
    --env "WHARF_BLOBS=$BLOBS" \
    --env "WHARF_S3_ENDPOINT=$S3" \
    --env AWS_ACCESS_KEY_ID=test --env AWS_SECRET_ACCESS_KEY=test \
    --env "WHARF_ADMIN_PASSWORD=$PASSWORD" \
    --env WHARF_HEARTBEAT_INTERVAL_SECS=1 \
    --env WHARF_SHUTDOWN_TIMEOUT_SECS=30 \
    --env WHARF_JOB_HEARTBEAT_SECS=1 \
    "$image" >/dev/null
}

# Until replica i answers /readyz with 200; at most 60 s.
wait_ready() {
  local i=$1
  for _ in $(seq 1 600); do
    if curl -sf -o /dev/null --max-time 2 "http://${ADDRS[$i]}/readyz"; then
      return 0
    fi
    if [ "$(docker inspect --format '{{.State.Running}}' "${NAMES[$i]}" 2>/dev/null)" != true ]; then
      docker logs --tail 40 "${NAMES[$i]}" >&2
      echo "replica ${NAMES[$i]} is not running" >&2
      exit 1
    fi
    sleep 0.1
  done
  docker logs --tail 40 "${NAMES[$i]}" >&2
  echo "replica ${NAMES[$i]} not ready within 60 s" >&2
  exit 1
}

# The first alone: it creates the schema, the admin and the token key.
run_replica 0 "$OLD_IMAGE"
wait_ready 0
run_replica 1 "$OLD_IMAGE"
run_replica 2 "$OLD_IMAGE"
wait_ready 1
wait_ready 2

# ---------------------------------------------------------------------------------
# nginx in front (crates/cli/tests/support/rolling.rs: Nginx::start)

NGINX_PORT=$(free_port)
LB=http://127.0.0.1:$NGINX_PORT
mkdir -p "$TMP/nginx"
{
  cat <<EOF
user root;
worker_processes 1;
error_log $TMP/nginx/error.log warn;
pid $TMP/nginx/nginx.pid;
events { worker_connections 1024; }
http {
  log_format upstreams '\$msec \$status \$request_method \$uri up=\$upstream_addr '
                       'ups=\$upstream_status rt=\$request_time';
  access_log $TMP/nginx/access.log upstreams;
  client_body_temp_path $TMP/nginx/body;
  proxy_temp_path $TMP/nginx/proxy;
  fastcgi_temp_path $TMP/nginx/fastcgi;
  uwsgi_temp_path $TMP/nginx/uwsgi;
  scgi_temp_path $TMP/nginx/scgi;
  # Passive health checks: a refused connection takes a replica out for 2 s.
  upstream wharf {
EOF
  for a in "${ADDRS[@]}"; do
    echo "    server $a max_fails=1 fail_timeout=2s;"
  done
  cat <<EOF
    # No keepalive: every request opens its own connection to a replica.
  }
  server {
    listen 127.0.0.1:$NGINX_PORT;
    client_max_body_size 0;
    location / {
      proxy_pass http://wharf;
      proxy_http_version 1.1;
      proxy_set_header Host \$http_host;
      proxy_request_buffering off;
      proxy_buffering off;
      proxy_connect_timeout 1s;
      # A request a draining replica refused was never processed: retry it elsewhere.
      proxy_next_upstream error timeout non_idempotent;
      proxy_read_timeout 60s;
      add_header X-Upstream \$upstream_addr always;
    }
  }
}
EOF
} >"$TMP/nginx/nginx.conf"
# Its start-up notices (e.g. about the default error log) go to a file.
nginx -p "$TMP/nginx" -c "$TMP/nginx/nginx.conf" -g 'daemon off;' \
  </dev/null >"$TMP/nginx/stderr" 2>&1 &
NGINX_PID=$!
ok=
for _ in $(seq 1 200); do
  # Through nginx the registry asks for credentials.
  if [ "$(curl -s -o /dev/null -w '%{http_code}' --max-time 2 "$LB/v2/")" = 401 ]; then
    ok=1
    break
  fi
  kill -0 "$NGINX_PID" 2>/dev/null || { cat "$TMP/nginx/stderr" "$TMP/nginx/error.log" >&2; exit 1; }
  sleep 0.1
done
[ -n "$ok" ] || { echo "nginx does not reach the replicas within 20 s" >&2; exit 1; }

# ---------------------------------------------------------------------------------
# three images pushed with skopeo through nginx (OCI layouts made here)

sha() { sha256sum "$1" | cut -d' ' -f1; }
size() { stat -c %s "$1"; }

# make_layout DIR TAG: an image of one gzipped layer (256 KiB of random bytes) in an
# OCI image layout, referenced as "t".
make_layout() {
  local dir=$1 tag=$2 work
  work=$(mktemp -d "$TMP/work.XXXXXX")
  mkdir -p "$dir/blobs/sha256" "$work/root"
  head -c 262144 /dev/urandom >"$work/root/data-$tag"
  tar --mtime=@0 --owner=0 --group=0 --numeric-owner -cf "$work/layer.tar" -C "$work/root" .
  gzip -n -c "$work/layer.tar" >"$work/layer.tar.gz"
  local diff_id layer
  diff_id=$(sha "$work/layer.tar")
  layer=$(sha "$work/layer.tar.gz")
  cp "$work/layer.tar.gz" "$dir/blobs/sha256/$layer"
  printf '{"architecture":"amd64","os":"linux","config":{"Labels":{"demo":"%s"}},"rootfs":{"type":"layers","diff_ids":["sha256:%s"]}}' \
    "$tag" "$diff_id" >"$work/config.json"
  local config
  config=$(sha "$work/config.json")
  cp "$work/config.json" "$dir/blobs/sha256/$config"
  printf '{"schemaVersion":2,"mediaType":"%s","config":{"mediaType":"application/vnd.oci.image.config.v1+json","digest":"sha256:%s","size":%s},"layers":[{"mediaType":"application/vnd.oci.image.layer.v1.tar+gzip","digest":"sha256:%s","size":%s}]}' \
    "$OCI_MANIFEST" "$config" "$(size "$work/config.json")" "$layer" "$(size "$work/layer.tar.gz")" >"$work/manifest.json"
  local manifest
  manifest=$(sha "$work/manifest.json")
  cp "$work/manifest.json" "$dir/blobs/sha256/$manifest"
  printf '{"schemaVersion":2,"manifests":[{"mediaType":"%s","digest":"sha256:%s","size":%s,"annotations":{"org.opencontainers.image.ref.name":"t"}}]}' \
    "$OCI_MANIFEST" "$manifest" "$(size "$work/manifest.json")" >"$dir/index.json"
  echo '{"imageLayoutVersion":"1.0.0"}' >"$dir/oci-layout"
  rm -rf "$work"
}

for tag in "${TAGS[@]}"; do
  make_layout "$TMP/image-$tag" "$tag"
  skopeo --insecure-policy copy --quiet --preserve-digests --dest-tls-verify=false \
    --dest-creds "admin:$PASSWORD" \
    "oci:$TMP/image-$tag:t" "docker://127.0.0.1:$NGINX_PORT/$REPO:$tag" >/dev/null
done

# ---------------------------------------------------------------------------------
# the load: manifest pulls through nginx, one curl each, until the stop file appears
# (at most LOAD_MAX requests)

load() {
  local n=0 bad=0 token='' token_at=-100 tag code first last
  local -A codes=()
  first=$(date +%s.%N)
  while [ "$n" -lt "$LOAD_MAX" ] && [ ! -e "$STOP" ]; do
    # A fresh token every 20 s (they live 300 s); the token request counts too.
    if [ -z "$token" ] || [ $((SECONDS - token_at)) -ge 20 ]; then
      code=$(curl -s -o "$TMP/token.json" -w '%{http_code}' --max-time 10 \
        -u "admin:$PASSWORD" "$LB/auth/token?service=wharf&scope=repository:$REPO:pull" || true)
      n=$((n + 1))
      codes[$code]=$((${codes[$code]:-0} + 1))
      if [ "$code" = 200 ]; then
        token=$(jq -r .token "$TMP/token.json" 2>/dev/null || true)
        token_at=$SECONDS
      else
        bad=$((bad + 1))
        echo "$(date +%T.%N) token request answered $code" >>"$TMP/load-errors"
        sleep 0.2
        continue
      fi
    fi
    tag=${TAGS[$((n % ${#TAGS[@]}))]}
    code=$(curl -s -o /dev/null -w '%{http_code}' --max-time 10 \
      -H "Authorization: Bearer $token" -H "Accept: $OCI_MANIFEST" \
      "$LB/v2/$REPO/manifests/$tag" || true)
    n=$((n + 1))
    codes[$code]=$((${codes[$code]:-0} + 1))
    if [ "$code" != 200 ]; then
      bad=$((bad + 1))
      echo "$(date +%T.%N) GET /v2/$REPO/manifests/$tag answered $code" >>"$TMP/load-errors"
    fi
    sleep "$LOAD_PAUSE"
  done
  last=$(date +%s.%N)
  {
    printf 'load: %s requests in %.1f s (%s), %s answered other than 200' \
      "$n" "$(awk -v a="$first" -v b="$last" 'BEGIN { print b - a }')" \
      "$([ "$n" -ge "$LOAD_MAX" ] && echo "stopped at its bound of $LOAD_MAX" || echo "stopped after the upgrade")" \
      "$bad"
    for c in "${!codes[@]}"; do printf '\n  HTTP %s: %s' "$c" "${codes[$c]}"; done
    echo
  } >"$TMP/load-report"
}

# ---------------------------------------------------------------------------------
# the transcript

note "cluster: three replicas of $OLD_IMAGE behind nginx at $LB (max_fails=1 fail_timeout=2s)"
note "wharf is $WHARF_BIN ($("$WHARF_BIN" --version)); NEW_IMAGE is $NEW_IMAGE${HOP:+; HOP is $HOP}"
note "PG=$PG"
note "BLOBS=$BLOBS S3=$S3"
note "DATA=$DATA LB=$LB LABEL=$LABEL"
run 'docker ps --filter "label=$LABEL" --format "table {{.Names}}\t{{.Image}}\t{{.Label \"wharf.url\"}}"'
note "pushed $REPO:${TAGS[*]} with skopeo through nginx"

load &
LOAD_PID=$!
sleep 2

run 'wharf upgrade plan --metadata "$PG" --data-dir "$DATA"'
run 'wharf upgrade check --metadata "$PG" --blobs "$BLOBS" --s3-endpoint "$S3" --data-dir "$DATA"'

started=$(date +%s.%N)
if [ -n "$HOP" ]; then
  run 'WHARF_PASSWORD=$PASSWORD wharf upgrade apply --driver docker --image "$HOP" --image "$NEW_IMAGE" \
    --label "$LABEL" --metadata "$PG" --blobs "$BLOBS" --s3-endpoint "$S3" --data-dir "$DATA" --yes \
    --url "$LB" --username admin --settle-secs 3'
else
  run 'WHARF_PASSWORD=$PASSWORD wharf upgrade apply --driver docker --image "$NEW_IMAGE" --label "$LABEL" \
    --metadata "$PG" --blobs "$BLOBS" --s3-endpoint "$S3" --data-dir "$DATA" --yes \
    --url "$LB" --username admin --settle-secs 3'
fi
ended=$(date +%s.%N)
note "$(awk -v a="$started" -v b="$ended" 'BEGIN { printf "upgrade apply took %.1f s", b - a }')"

# The load goes on a little on the new replicas, then stops (bounded).
sleep 3
touch "$STOP"
for _ in $(seq 1 300); do kill -0 "$LOAD_PID" 2>/dev/null || break; sleep 0.1; done
wait "$LOAD_PID" 2>/dev/null || true
LOAD_PID=

run 'docker ps --filter "label=$LABEL" --format "table {{.Names}}\t{{.Image}}\t{{.Status}}"'
run 'wharf upgrade status --metadata "$PG" --data-dir "$DATA"'
run 'WHARF_PASSWORD=$PASSWORD wharf upgrade verify --url "$LB" --username admin --metadata "$PG" --data-dir "$DATA"'
run 'wharf upgrade rollback --driver docker --label "$LABEL" --metadata "$PG" --blobs "$BLOBS" --s3-endpoint "$S3" --data-dir "$DATA" --yes'

if [ -s "$TMP/load-report" ]; then
  cat "$TMP/load-report"
else
  echo "load: no report (the load did not finish)"
fi
[ ! -s "$TMP/load-errors" ] || { echo "non-200 answers:"; head -n 20 "$TMP/load-errors"; }
retried=$(awk -F' up=' 'index($2, ", ") {n++} END {print n + 0}' "$TMP/nginx/access.log")
upstream_errors=$(grep -c upstream "$TMP/nginx/error.log" || true)
echo "nginx: $(wc -l <"$TMP/nginx/access.log") requests logged, $retried re-sent to another replica, $upstream_errors upstream error(s) logged"
# By kind: "… [error] 12#12: *345 MESSAGE, client: …"
grep upstream "$TMP/nginx/error.log" | sed -E 's/^.*\*[0-9]+ //; s/, client:.*$//' \
  | sort | uniq -c | sed -E 's/^ *([0-9]+) /  \1 × /' || true
