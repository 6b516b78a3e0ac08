#!/usr/bin/env bash
# `make bench`: every stage's benchmark on one Kafka broker and Redis started
# for the run, then bench/report.md and bench/report.json.
#
# Each stage script bench/<stage>.sh (or .py) reads STACK_ENV / BIN_DIR /
# BENCH_OUT / BENCH_RUNS from the environment and writes
# BENCH_OUT/<stage>.json (files of bench/ starting with "_" are helpers, not
# stages). Before the stages, this script measures the physical limit on the
# same broker: a bare librdkafka consumer and producer moving the same Avro
# events (build/bin/cs-kperf), BENCH_RUNS times each, written to
# BENCH_OUT/kafka_limit.json. Stage and total durations go to
# BENCH_OUT/run.json.
#
# BENCH_EVENTS (default 2000000) sizes the shared pre-filled raw topic;
# BENCH_RUNS (default 3) is the number of measured runs per figure;
# BENCH_STAGES="gateway pipeline" runs only those stages;
# BENCH_BUDGET (default 840 s) is the time the whole run should take: the
# pipeline stage, last, shortens its rate search to fit (BENCH_DEADLINE).
set -uo pipefail
. "$(dirname "$0")/lib.sh"
cd "$ROOT"
t_begin=$(date +%s.%N)
export BENCH_DEADLINE=$(( ${t_begin%.*} + ${BENCH_BUDGET:-840} ))

"$ROOT/scripts/deps.sh" >/dev/null || die "installing dependencies failed"
make -s -j"$(nproc)" all || die "build failed"

export BENCH_OUT=$ROOT/bench/out
export BENCH_RUNS=${BENCH_RUNS:-3}
rm -rf "$BENCH_OUT"
mkdir -p "$BENCH_OUT"
stackdir=$ROOT/.run/bench-$$
trap '"$ROOT/scripts/stack.sh" stop "$stackdir" >/dev/null 2>&1; rm -rf "$stackdir"' EXIT
"$ROOT/scripts/stack.sh" start "$stackdir" || die "could not start Kafka and Redis"
export STACK_ENV=$stackdir/stack.env BIN_DIR=$ROOT/build/bin
set -a; . "$STACK_ENV"; set +a
t_ready=$(date +%s.%N)

N=${BENCH_EVENTS:-2000000}
export BENCH_RAW_TOPIC=bench.raw BENCH_EVENTS=$N
FILL_USERS=100000 RAW_PARTS=12
"$BIN_DIR/cs-admin" create-topics -b "$KAFKA_BOOTSTRAP" bench.raw:$RAW_PARTS bench.copy:$RAW_PARTS
say "filling bench.raw with $N events (the shared input of the consuming stages)"
fill=$("$BIN_DIR/cs-kperf" fill -b "$KAFKA_BOOTSTRAP" -t bench.raw -n "$N" -u "$FILL_USERS" -s 7) ||
    die "fill failed"
say "physical limit: bare librdkafka consume and produce of the same records, $BENCH_RUNS runs each"
cons=() prod=()
for r in $(seq 1 "$BENCH_RUNS"); do
    c=$("$BIN_DIR/cs-kperf" consume -b "$KAFKA_BOOTSTRAP" -t bench.raw) || die "consume failed"
    p=$("$BIN_DIR/cs-kperf" produce -b "$KAFKA_BOOTSTRAP" -t bench.raw --to bench.copy -n "$N") ||
        die "produce failed"
    cons+=("$c")
    prod+=("$p")
done
join() { local IFS=,; echo "$*"; }
printf '{"topic":"bench.raw","partitions":%d,"users":%d,"fill":%s,"consume_runs":[%s],"produce_runs":[%s]}\n' \
    "$RAW_PARTS" "$FILL_USERS" "$fill" "$(join "${cons[@]}")" "$(join "${prod[@]}")" >"$BENCH_OUT/kafka_limit.json"
t_limit=$(date +%s.%N)

want=" ${BENCH_STAGES:-} "
stages=()
for s in bench/*.sh bench/*.py; do
    [ -f "$s" ] || continue
    base=$(basename "$s")
    case "$base" in _*) continue ;; esac
    name=${base%.*}
    [ -z "${BENCH_STAGES:-}" ] || [[ "$want" == *" $name "* ]] || continue
    say "benchmark: $s"
    t0=$(date +%s.%N)
    case "$s" in
    *.py) "$CACHE/venv/bin/python" "$s" ;;
    *) bash "$s" ;;
    esac || say "warning: $s failed (its figures are missing from the report)"
    stages+=("\"$name\": $(echo "$(date +%s.%N) - $t0" | bc -l | xargs printf '%.1f')")
done

t_end=$(date +%s.%N)
printf '{"started": %.0f, "setup_seconds": %.1f, "limit_seconds": %.1f, "stage_seconds": {%s}, "seconds_to_report": %.1f, "budget_seconds": %d, "bench_runs": %d, "bench_events": %d, "cores": %d, "machine": "%s", "kafka_version": "%s"}\n' \
    "$t_begin" "$(echo "$t_ready - $t_begin" | bc -l)" "$(echo "$t_limit - $t_ready" | bc -l)" \
    "$(join "${stages[@]}")" "$(echo "$t_end - $t_begin" | bc -l)" "${BENCH_BUDGET:-840}" "$BENCH_RUNS" "$N" \
    "$(nproc)" "$(uname -m)" "$KAFKA_VERSION" >"$BENCH_OUT/run.json"
"$CACHE/venv/bin/python" "$ROOT/scripts/bench_report.py" "$BENCH_OUT" "$ROOT/bench/report.md" "$ROOT/bench/report.json"
say "report: bench/report.md ($(echo "$(date +%s.%N) - $t_begin" | bc -l | xargs printf '%.0f') s)"
