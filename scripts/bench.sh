#!/usr/bin/env bash
# `make bench`: every stage's benchmark on one Kafka broker and Redis started
# for the run, then bench/report.md and bench/report.json.
#
# Each stage script bench/<stage>.sh (or .py) reads STACK_ENV / BIN_DIR /
# BENCH_OUT from the environment and writes BENCH_OUT/<stage>.json. Before the
# stages, this script measures the physical limit on the same broker: a bare
# librdkafka producer and consumer moving the same Avro events
# (build/bin/cs-kperf), written to BENCH_OUT/kafka_limit.json.
#
# BENCH_EVENTS (default 2000000) sizes the shared pre-filled raw topic.
set -uo pipefail
. "$(dirname "$0")/lib.sh"
cd "$ROOT"

"$ROOT/scripts/deps.sh" >/dev/null || die "installing dependencies failed"
make -s -j"$(nproc)" all || die "build failed"

export BENCH_OUT=$ROOT/bench/out
rm -rf "$BENCH_OUT"
mkdir -p "$BENCH_OUT"
stackdir=$ROOT/.run/bench-$$
trap '"$ROOT/scripts/stack.sh" stop "$stackdir" >/dev/null 2>&1; rm -rf "$stackdir"' EXIT
"$ROOT/scripts/stack.sh" start "$stackdir" || die "could not start Kafka and Redis"
export STACK_ENV=$stackdir/stack.env BIN_DIR=$ROOT/build/bin
set -a; . "$STACK_ENV"; set +a

N=${BENCH_EVENTS:-2000000}
export BENCH_RAW_TOPIC=bench.raw BENCH_EVENTS=$N
"$BIN_DIR/cs-admin" create-topics -b "$KAFKA_BOOTSTRAP" bench.raw:12 bench.copy:12
say "filling bench.raw with $N events (the shared input of the consuming stages)"
fill=$("$BIN_DIR/cs-kperf" fill -b "$KAFKA_BOOTSTRAP" -t bench.raw -n "$N" -u 100000 -s 7) ||
    die "fill failed"
say "physical limit: bare librdkafka consume and produce of the same records"
cons=$("$BIN_DIR/cs-kperf" consume -b "$KAFKA_BOOTSTRAP" -t bench.raw) || die "consume failed"
prod=$("$BIN_DIR/cs-kperf" produce -b "$KAFKA_BOOTSTRAP" -t bench.raw --to bench.copy -n "$N") ||
    die "produce failed"
printf '{"fill":%s,"consume":%s,"produce":%s}\n' "$fill" "$cons" "$prod" >"$BENCH_OUT/kafka_limit.json"

for s in bench/*.sh bench/*.py; do
    [ -f "$s" ] || continue
    say "benchmark: $s"
    case "$s" in
    *.py) "$CACHE/venv/bin/python" "$s" ;;
    *) bash "$s" ;;
    esac || say "warning: $s failed (its figures are missing from the report)"
done

"$CACHE/venv/bin/python" "$ROOT/scripts/bench_report.py" "$BENCH_OUT" "$ROOT/bench/report.md" "$ROOT/bench/report.json"
say "report: bench/report.md"
