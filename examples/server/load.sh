#!/usr/bin/env bash
# SPDX-License-Identifier: Apache-2.0
# vitmae-server under load, on loopback, with Debian's wrk (apt-get install wrk):
#   examples/server/load.sh SERVER_EXE MODEL_DIR [SECONDS] [--check | --no-memory]
# Starts SERVER_EXE on MODEL_DIR (a free port), then POSTs examples/data/chelsea.png to
# /v1/embeddings: one client sending one request at a time, then 8 concurrent clients, SECONDS
# each (default 20); then about 10,000 requests from 8 clients, reading the server's resident
# memory after the first 1,000 or so and at the end. Prints requests/s, p50 and p99 latency,
# errors, the throughput ratio and the memory. --check (ctest's server_load): every phase SECONDS
# long, and a failure on any error or non-2xx answer; no speed is asserted. --no-memory: the
# throughput only (for a large model, where 10,000 requests take long).
set -euo pipefail
here=$(cd "$(dirname "$0")" && pwd)
exe=${1:?usage: load.sh SERVER_EXE MODEL_DIR [SECONDS] [--check]}
model=${2:?usage: load.sh SERVER_EXE MODEL_DIR [SECONDS] [--check]}
seconds=${3:-20}
check=${4:-}
if ! command -v wrk >/dev/null; then
  echo "skipped: wrk is not installed (apt-get install wrk)"
  exit 0
fi
image="$here/../data/chelsea.png"
work=$(mktemp -d)
trap 'kill "$pid" 2>/dev/null || true; rm -rf "$work"' EXIT
"$exe" --model "load=$model" --port 0 ${VITMAE_LOAD_SERVER_FLAGS:-} >"$work/out" 2>"$work/err" &
pid=$!
for _ in $(seq 600); do
  grep -q '^listening on ' "$work/out" 2>/dev/null && break
  kill -0 "$pid" 2>/dev/null || { echo "load.sh: the server exited:"; cat "$work/err"; exit 1; }
  sleep 0.1
done
url=$(sed -n 's/^listening on //p' "$work/out")
[ -n "$url" ] || { echo "load.sh: the server did not start in 60 s"; exit 1; }
export VITMAE_LOAD_IMAGE="$image" VITMAE_LOAD_PATH="/v1/embeddings?model=load"
rss_kb() { sleep 0.5; awk '/^VmRSS/ {print $2}' "/proc/$pid/status"; }
failed=0
# run NAME THREADS CONNECTIONS SECONDS: one wrk run, its figures line kept as NAME.
run() {
  wrk -t"$2" -c"$3" -d"$4"s --timeout 30s -s "$here/load.lua" "$url" >"$work/$1.txt"
  local f
  f=$(grep '^figures ' "$work/$1.txt") || { cat "$work/$1.txt"; echo "load.sh: wrk printed no figures"; exit 1; }
  echo "$1: ${f#figures }"
  case "$f" in *" socket_errors=0 non_2xx=0 "*) ;; *) failed=1 ;; esac
}
requests() { sed -n 's/.*requests=\([0-9]*\).*/\1/p' "$work/$1.txt"; }
run warmup 1 1 2
run one_client 1 1 "$seconds"
run eight_clients 2 8 "$seconds"
awk -v a="$(sed -n 's/.*per_second=\([0-9.]*\).*/\1/p' "$work/one_client.txt")" \
    -v b="$(sed -n 's/.*per_second=\([0-9.]*\).*/\1/p' "$work/eight_clients.txt")" \
    'BEGIN { printf "throughput, 8 clients / 1 client: %.2fx\n", b / a }'
if [ "$check" != --no-memory ]; then
  # Memory: about 1,000 requests, then about 9,000 more (wrk runs by time: the durations come from
  # the 8-client rate; the counts printed are the real ones).
  rate=$(sed -n 's/.*per_second=\([0-9.]*\).*/\1/p' "$work/eight_clients.txt")
  if [ "$check" = --check ]; then
    first=$seconds rest=$seconds
  else
    first=$(awk -v r="$rate" 'BEGIN { print int(1000 / r) + 1 }') rest=$(awk -v r="$rate" 'BEGIN { print int(9000 / r) + 1 }')
  fi
  run memory_first 2 8 "$first"  # each reading is taken idle, after the batcher's trim (0.2 s)
  rss_first=$(rss_kb)
  run memory_rest 2 8 "$rest"
  rss_last=$(rss_kb)
  n_first=$(requests memory_first)
  total=$((n_first + $(requests memory_rest)))
  awk -v f="$rss_first" -v l="$rss_last" -v n="$total" -v m="$n_first" \
      'BEGIN { printf "resident memory: %.1f MiB after %d requests, %.1f MiB after %d (%+.1f%%)\n", f / 1024, m, l / 1024, n, 100 * (l - f) / f }'
fi
curl -s "$url/metrics" 2>/dev/null | grep -E '^vitmae_batch_size_(sum|count)' || true
kill -TERM "$pid"
wait "$pid" || { echo "load.sh: the server did not exit 0 on SIGTERM"; exit 1; }
if [ "$failed" != 0 ]; then
  echo "load.sh: errors or non-2xx answers under load"
  exit 1
fi
