#!/usr/bin/env bash
# `make e2e-long`: the whole pipeline end to end at a large size with every
# fault of tests/integration/test_e2e_faults.py, many times over: cs-loadgen
# posts E2E_EVENTS (default 1 000 000) events through the gateway while the
# sessionizer, the aggregator (2 instances each, scaled to 3 and back) and the
# lake-writer are killed with SIGKILL and restarted (12 kills), the Kafka
# broker restarts, Redis is down for 60 s and comes back empty, and the
# warehouse's file system fills up and is freed. Every sink is then compared
# with the references (test_e2e_faults.py::test_long_run, on a Kafka broker
# and Redis of its own). Writes bench/e2e-report.md: events, faults injected,
# differences found, duration.
#
#   E2E_EVENTS     events generated (default 1000000)
#   E2E_LONG_RATE  events/s posted (default 2000)
#   E2E_SEED       stream and fault instants (default 90)
#   E2E_REPORT     where the report goes (default bench/e2e-report.md)
set -uo pipefail
. "$(dirname "$0")/lib.sh"
cd "$ROOT"

export E2E_LONG=1
export E2E_EVENTS=${E2E_EVENTS:-1000000}
export E2E_REPORT=${E2E_REPORT:-$ROOT/bench/e2e-report.md}
unset STACK_ENV
"$ROOT/scripts/deps.sh" >/dev/null || die "installing dependencies failed"
make -s -j"$(nproc)" all || die "build failed"
mkdir -p "$ROOT/bench" "$ROOT/.run" "$ROOT/tests/artifacts"

start=$(date +%s)
log=$ROOT/.run/e2e-long.log
say "long end-to-end run: $E2E_EVENTS events (log: $log)"
"$CACHE/venv/bin/python" -m pytest -q -s -p no:cacheprovider \
    "tests/integration/test_e2e_faults.py::test_long_run" >"$log" 2>&1
rc=$?
if [ ! -f "$E2E_REPORT" ] || [ "$(stat -c %Y "$E2E_REPORT")" -lt "$start" ]; then
    # The run stopped before its comparison: say so, with the end of the log.
    {
        echo "# End-to-end long run"
        echo
        echo "$(date -u +%Y-%m-%dT%H:%M:%SZ): the run stopped after $(( $(date +%s) - start )) s," \
             "before every sink could be compared (pytest exit $rc)."
        echo
        echo '```'
        grep -E "^E |^\[|fault:|Error|error" "$log" | tail -60
        echo '```'
    } >"$E2E_REPORT"
fi
grep -E "^\[|^== |compared\)|passed|failed" "$log" | tail -40
say "done in $(( $(date +%s) - start )) s; report: $E2E_REPORT"
exit $rc
