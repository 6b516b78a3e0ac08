#!/usr/bin/env bash
# `make down`: stops what `make up` started (load generator, services, then
# Redis and Kafka), each by its pid file, and leaves no process behind.
set -uo pipefail
. "$(dirname "$0")/lib.sh"
RUN=$ROOT/.run/up
for name in cs-loadgen ingest-gateway sessionizer aggregator lake-writer dashboard-ws; do
    if [ -f "$RUN/pids/$name.pid" ]; then
        stop_pid "$RUN/pids/$name.pid" 12
        say "stopped $name"
    fi
done
if [ -d "$RUN/stack" ]; then
    "$ROOT/scripts/stack.sh" stop "$RUN/stack"
    say "stopped Kafka and Redis"
fi
