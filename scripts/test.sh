#!/usr/bin/env bash
# The whole test run, from a fresh machine: installs what is missing, builds,
# runs the unit tests, starts a real Kafka broker and Redis on free ports, runs
# the integration tests against them, and cleans up.
#
#   scripts/test.sh                 everything (what `make test` and CI run)
#   scripts/test.sh --unit-only     unit tests only (no network)
#   scripts/test.sh --one NAME      one test: test_event (unit) or
#                                   tests/integration/test_x.py[::case]
# BUILD=build-asan SAN=... (see `make asan`) runs the same under sanitizers.
set -uo pipefail
. "$(dirname "$0")/lib.sh"
cd "$ROOT"

BUILD=${BUILD:-build}
export BUILD
mode=all
one=""
while [ $# -gt 0 ]; do
    case "$1" in
    --unit-only) mode=unit ;;
    --valgrind) export VALGRIND=1 ;;
    --one) mode=one; one=${2:-}; shift ;;
    *) echo "usage: $0 [--unit-only] [--valgrind] [--one NAME]" >&2; exit 2 ;;
    esac
    shift
done

start=$(date +%s)
"$ROOT/scripts/deps.sh" || die "installing dependencies failed"

say "building ($BUILD)"
jobs=$(nproc 2>/dev/null || echo 2)
make -s -j"$jobs" BUILD="$BUILD" ${OPT:+OPT="$OPT"} ${SAN:+SAN="$SAN"} all \
    $(ls tests/unit/test_*.c 2>/dev/null | sed "s|tests/unit/\(.*\)\.c|$BUILD/tests/\1|") ||
    die "build failed"

unit_rc=0
int_rc=0
int_pass=0
int_fail=0
if [ "$mode" = unit ] || [ "$mode" = all ] || { [ "$mode" = one ] && [[ "$one" != *.py* ]]; }; then
    say "unit tests"
    if [ "$mode" = one ]; then
        scripts/run-unit.sh "$BUILD" "$one" | tee "$ROOT/.run/unit.out"
    else
        mkdir -p "$ROOT/.run"
        scripts/run-unit.sh "$BUILD" | tee "$ROOT/.run/unit.out"
    fi
    unit_rc=${PIPESTATUS[0]}
fi
unit_line=$(grep '^unit:' "$ROOT/.run/unit.out" 2>/dev/null | tail -1)

if [ "$mode" = all ] || { [ "$mode" = one ] && [[ "$one" == *.py* ]]; }; then
    stackdir=$ROOT/.run/test-$$
    cleanup() { "$ROOT/scripts/stack.sh" stop "$stackdir" >/dev/null 2>&1; rm -rf "$stackdir"; }
    trap cleanup EXIT
    say "starting Kafka and Redis for the integration tests"
    "$ROOT/scripts/stack.sh" start "$stackdir" || die "could not start the test stack"
    export STACK_ENV=$stackdir/stack.env BIN_DIR=$ROOT/$BUILD/bin
    if [[ "$BUILD" == *asan* ]]; then
        # librdkafka and libmicrohttpd keep some global allocations until exit.
        export ASAN_OPTIONS=detect_leaks=0:abort_on_error=1
    fi
    target=tests/integration
    [ "$mode" = one ] && target=$one
    say "integration tests"
    mkdir -p "$ROOT/tests/artifacts"
    "$CACHE/venv/bin/python" -m pytest -q -p no:cacheprovider --junitxml="$ROOT/.run/junit.xml" \
        -o junit_family=xunit2 "$target"
    int_rc=$?
    # pytest exit 5 = no tests collected: not a failure while a suite is empty.
    [ $int_rc -eq 5 ] && int_rc=0
    read -r int_pass int_fail < <("$CACHE/venv/bin/python" - "$ROOT/.run/junit.xml" <<'PY'
import sys, xml.etree.ElementTree as ET
try:
    r = ET.parse(sys.argv[1]).getroot()
except Exception:
    print(0, 0); sys.exit()
s = r if r.tag == "testsuite" else r.find("testsuite")
t, f, e, sk = (int(s.get(k, 0)) for k in ("tests", "failures", "errors", "skipped"))
print(t - f - e - sk, f + e)
PY
)
fi

u_pass=$(sed -n 's/^unit: \([0-9]*\) passed.*/\1/p' <<<"$unit_line")
u_fail=$(sed -n 's/.*passed, \([0-9]*\) failed.*/\1/p' <<<"$unit_line")
total_pass=$(( ${u_pass:-0} + int_pass ))
total_fail=$(( ${u_fail:-0} + int_fail ))
if [ $unit_rc -ne 0 ] && [ "$total_fail" -eq 0 ]; then total_fail=1; fi
if [ $int_rc -ne 0 ] && [ "$total_fail" -eq 0 ]; then total_fail=1; fi
say "done in $(( $(date +%s) - start )) s"
echo "${unit_line:-unit: 0 passed, 0 failed}"
echo "integration: $int_pass passed, $int_fail failed"
echo "total: $total_pass passed, $total_fail failed"
[ $unit_rc -eq 0 ] && [ $int_rc -eq 0 ]
