#!/usr/bin/env bash
# dashboard-ws benchmark (run by scripts/bench.sh, or alone against a stack):
# 1000 concurrent WebSocket clients and two deliberately slow ones; p99 of
# the delay from a Redis change to its arrival at every client must stay
# <= 1 s. Writes $BENCH_OUT/dashboard.json. See bench/dashboard.mjs.
#   STACK_ENV=.run/db-dev/stack.env bench/dashboard.sh
set -euo pipefail
ROOT=$(cd "$(dirname "$0")/.." && pwd)
: "${STACK_ENV:?STACK_ENV must name a stack.env (scripts/stack.sh start DIR)}"
set -a
. "$STACK_ENV"
set +a
export BIN_DIR=${BIN_DIR:-$ROOT/build/bin} BENCH_OUT=${BENCH_OUT:-$ROOT/bench/out}
if [ ! -d "$ROOT/tests/browser/node_modules/ws" ]; then
    (cd "$ROOT/tests/browser" && npm install --no-audit --no-fund --silent)
fi
# 1000 clients + the server's own fds: make sure the limit allows it
ulimit -n 65536 2>/dev/null || ulimit -n "$(ulimit -Hn)" 2>/dev/null || true
exec node "$ROOT/bench/dashboard.mjs"
