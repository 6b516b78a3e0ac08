#!/usr/bin/env bash
# Runs every unit test binary in BUILD/tests (or the ones named) and prints a
# closing line "unit: N passed, N failed". Exit 1 if any failed.
#   scripts/run-unit.sh BUILD [test_name ...]
set -uo pipefail
build=${1:-build}
shift || true
VALGRIND=${VALGRIND:-}
tests=()
if [ $# -gt 0 ]; then
    for t in "$@"; do tests+=("$build/tests/$t"); done
else
    for t in "$build"/tests/test_*; do [ -x "$t" ] && tests+=("$t"); done
fi
pass=0
fail=0
failed=()
for t in "${tests[@]}"; do
    name=$(basename "$t")
    if [ -n "$VALGRIND" ]; then
        out=$(valgrind -q --error-exitcode=99 --leak-check=full --errors-for-leak-kinds=definite \
            "$t" 2>&1)
    else
        out=$("$t" 2>&1)
    fi
    rc=$?
    # cmocka prints "[  PASSED  ] N test(s)." and "[  FAILED  ] N test(s)..."
    p=$(printf '%s\n' "$out" | sed -n 's/^\[  PASSED  \] \([0-9]*\) test.*/\1/p' | tail -1)
    f=$(printf '%s\n' "$out" | sed -n 's/^\[  FAILED  \] \([0-9]*\) test.*/\1/p' | tail -1)
    p=${p:-0}
    f=${f:-0}
    if [ $rc -ne 0 ] && [ "$f" -eq 0 ]; then f=1; fi
    pass=$((pass + p))
    fail=$((fail + f))
    if [ $rc -ne 0 ]; then
        failed+=("$name")
        printf '%s\n' "$out" | tail -40
        echo "FAIL $name (exit $rc)"
    else
        echo "ok   $name ($p tests)"
    fi
done
echo "unit: $pass passed, $fail failed"
[ ${#failed[@]} -eq 0 ]
