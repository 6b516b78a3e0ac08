#!/usr/bin/env bash
# `make e2e-long`: the end-to-end comparison of tests/integration/test_e2e.py
# at a larger size (E2E_EVENTS, default 200000), on a Kafka broker and Redis
# started for the run, then the services' own kill -9 and scale-change suites.
# Writes bench/e2e-report.md: events, faults injected, differences found,
# duration.
set -uo pipefail
. "$(dirname "$0")/lib.sh"
cd "$ROOT"

export E2E_EVENTS=${E2E_EVENTS:-200000}
"$ROOT/scripts/deps.sh" >/dev/null || die "installing dependencies failed"
make -s -j"$(nproc)" all || die "build failed"
stackdir=$ROOT/.run/e2e-long-$$
trap '"$ROOT/scripts/stack.sh" stop "$stackdir" >/dev/null 2>&1; rm -rf "$stackdir"' EXIT
"$ROOT/scripts/stack.sh" start "$stackdir" || die "could not start Kafka and Redis"
export STACK_ENV=$stackdir/stack.env BIN_DIR=$ROOT/build/bin

start=$(date +%s)
mkdir -p "$ROOT/bench"
report=$ROOT/bench/e2e-report.md
suites=(
    "tests/integration/test_e2e.py"
    "tests/integration/test_sessionizer.py::test_kill9_during_run"
    "tests/integration/test_sessionizer.py::test_scale_1_3_1"
    "tests/integration/test_exactly_once.py"
)
{
    echo "# End-to-end long run"
    echo
    echo "Started $(date -u +%Y-%m-%dT%H:%M:%SZ); $E2E_EVENTS generated events through the gateway."
    echo
    echo "| suite | faults injected | result | seconds |"
    echo "|---|---|---|---|"
} >"$report"
rc=0
for s in "${suites[@]}"; do
    t0=$(date +%s)
    case "$s" in
    *kill9*) faults="kill -9 of the sessionizer during the run" ;;
    *scale*) faults="1 -> 3 -> 1 sessionizer instances (rebalances)" ;;
    *exactly_once*) faults="kill -9 of the transactional copier; 2 instances" ;;
    *) faults="duplicates, out-of-order, late and invalid events; idle partitions" ;;
    esac
    if "$CACHE/venv/bin/python" -m pytest -q -p no:cacheprovider "$s" >"$ROOT/.run/e2e-long.log" 2>&1; then
        res="equal to the reference"
    else
        res="DIFFERENCES (see below)"
        rc=1
    fi
    echo "| \`$s\` | $faults | $res | $(( $(date +%s) - t0 )) |" >>"$report"
    if [ $rc -ne 0 ]; then
        { echo; echo '```'; grep -E "^E |assert" "$ROOT/.run/e2e-long.log" | head -40; echo '```'; } >>"$report"
    fi
done
echo >>"$report"
echo "Duration: $(( $(date +%s) - start )) s." >>"$report"
cat "$report"
exit $rc
