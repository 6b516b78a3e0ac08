# Helpers of the bench/*.sh stage scripts; source it. Files of bench/ whose
# name starts with "_" are helpers, not stages (scripts/bench.sh skips them).
#
#   proc_cpu PID        CPU seconds (user + system, every thread) of a running
#                       process so far, from /proc/PID/stat (utime + stime)
#   proc_hwm PID        its peak resident set in bytes (VmHWM of /proc/PID/status);
#                       read it just before stopping the process
#   profile start NAME PID[,PID...] / profile stop NAME
#                       flat CPU profile with perf (bench/_profile.sh)
#   BENCH_RUNS          measured runs per figure (default 3)

BENCH_DIR=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
BENCH_TCK=$(getconf CLK_TCK)
BENCH_RUNS=${BENCH_RUNS:-3}

proc_cpu() {
    sed 's/^.*) //' "/proc/$1/stat" | awk -v t="$BENCH_TCK" '{printf "%.3f\n", ($12 + $13) / t}'
}

proc_hwm() {
    awk '/^VmHWM:/ {print $2 * 1024}' "/proc/$1/status"
}

profile() {
    bash "$BENCH_DIR/_profile.sh" "$@" || true
}
