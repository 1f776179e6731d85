#!/usr/bin/env bash
# Runs the Playwright suite against the debug server, as `cargo leptos end-to-end`
# would: starts the built binary on a free loopback port with a fresh database,
# waits for /healthz, runs the suite, stops the server (SIGTERM), and exits with
# the suite's status.
set -euo pipefail

root="$(cd "$(dirname "$0")/.." && pwd)"
cd "$root"
data=target/e2e
rm -rf "$data" && mkdir -p "$data"
port=$(python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])')

export CHAOSAI_ADDR="127.0.0.1:$port"
export CHAOSAI_URL="http://127.0.0.1:$port"
# The Playwright page on 127.0.0.1 may call /v1 on localhost (the CORS test).
export CHAOSAI_API_ORIGINS="http://127.0.0.1:$port"
export CHAOSAI_SIMULATE=always
export CHAOSAI_DATABASE_URL="sqlite://$root/$data/chaosai.db"
export CHAOSAI_SIM_CHUNK_DELAY_MS=25
export CHAOSAI_ADMIN_TOKEN=e2e-admin-token-0123456789
export CHAOSAI_BREAKER_OPEN_FOR_MS=2000
export LEPTOS_SITE_ROOT=target/site
export LEPTOS_OUTPUT_NAME=chaosai
export RUST_LOG="${RUST_LOG:-info,tower_http=warn,hnsw_rs=warn}"

target/debug/chaosai >"$data/server.log" 2>&1 &
server=$!
trap 'kill -TERM $server 2>/dev/null || true; wait $server 2>/dev/null || true' EXIT

status=0
(cd end2end && npx playwright test "$@") || status=$?
if [ "$status" != 0 ]; then
  echo "--- server log (last 60 lines) ---"
  tail -n 60 "$data/server.log"
fi
exit "$status"
