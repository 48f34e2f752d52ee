#!/usr/bin/env bash
# SPDX-License-Identifier: Apache-2.0
# The page test against a real vitmae-server: starts SERVER_EXE --port 0 (its bundled models), reads
# 'listening on http://HOST:PORT' from its first stdout line, runs page_test.mjs against it, then
# stops the server with SIGTERM and expects exit status 0.
# Usage: tests/browser/run_page_test.sh SERVER_EXE IMAGE SCREENSHOT_PNG [--api-key KEY]
# (--api-key KEY goes to the server, which then requires it, and to page_test.mjs, which types it
# into the page's form when the page asks.)
# Prints 'skipped: ...' and exits 0 when chromium, node or puppeteer-core is missing.
set -uo pipefail
if [[ $# -lt 3 ]]; then
  echo "usage: $0 SERVER_EXE IMAGE SCREENSHOT_PNG [--api-key KEY]" >&2
  exit 2
fi
here=$(cd "$(dirname "$0")" && pwd)
server=$1 image=$2 shot=$3
shift 3

if [[ ! -x /usr/bin/chromium ]]; then
  echo "skipped: /usr/bin/chromium is missing (apt-get install chromium)"
  exit 0
fi
if ! command -v node >/dev/null; then
  echo "skipped: node is missing (apt-get install nodejs npm, then npm ci --prefix tests/browser)"
  exit 0
fi
if [[ ! -d "$here/node_modules/puppeteer-core" ]]; then
  echo "skipped: puppeteer-core is missing (npm ci --prefix tests/browser)"
  exit 0
fi

tmp=$(mktemp -d)
: >"$tmp/stdout" # there before the server opens it
"$server" --port 0 "$@" </dev/null >"$tmp/stdout" 2>"$tmp/stderr" &
pid=$!
# shellcheck disable=SC2317 # called by the trap
cleanup() {
  if kill -0 "$pid" 2>/dev/null; then
    kill -KILL "$pid" 2>/dev/null
    wait "$pid" 2>/dev/null
  fi
  rm -rf "$tmp"
}
trap cleanup EXIT
server_log() {
  echo "--- the server's stderr (last lines):"
  tail -n 20 "$tmp/stderr"
}

# The first stdout line, once it is whole (up to 60 s: loading the models takes a few seconds).
line=
deadline=$((SECONDS + 60))
while ((SECONDS < deadline)); do
  if [[ $(wc -l <"$tmp/stdout") -ge 1 ]]; then
    line=$(head -n 1 "$tmp/stdout")
    break
  fi
  if ! kill -0 "$pid" 2>/dev/null; then
    wait "$pid"
    echo "run_page_test: FAIL: $server exited with status $? before it listened"
    server_log
    exit 1
  fi
  sleep 0.1
done
if [[ -z $line ]]; then
  echo "run_page_test: FAIL: $server printed no line within 60 s"
  server_log
  exit 1
fi
if [[ ! $line =~ ^listening\ on\ (http://[^[:space:]]+) ]]; then
  echo "run_page_test: FAIL: $server's first stdout line is '$line', not 'listening on http://HOST:PORT'"
  server_log
  exit 1
fi
url=${BASH_REMATCH[1]}
url=${url/\/\/0.0.0.0:/\/\/127.0.0.1:} # a server listening on every address is reached on loopback
url=${url/\/\/\[::\]:/\/\/[::1]:}
echo "server: $url (pid $pid)"

node "$here/page_test.mjs" "$url" "$image" "$shot" "$@"
status=$?

kill -TERM "$pid"
deadline=$((SECONDS + 30))
while ((SECONDS < deadline)); do
  kill -0 "$pid" 2>/dev/null || break
  sleep 0.1
done
if kill -0 "$pid" 2>/dev/null; then
  echo "run_page_test: FAIL: $server still runs 30 s after SIGTERM"
  server_log
  exit 1
fi
wait "$pid"
server_status=$?
if [[ $server_status -ne 0 ]]; then
  echo "run_page_test: FAIL: $server exited with status $server_status on SIGTERM"
  server_log
  exit 1
fi
echo "server: exited 0 on SIGTERM"
[[ $status -eq 0 ]] || server_log
exit "$status"
