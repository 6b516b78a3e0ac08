/*
 * cm_time.h: clocks. Wall time (ms since epoch) is only for received_at, logs
 * and latency figures; results are computed from event time (SPEC §3).
 */
#ifndef CM_TIME_H
#define CM_TIME_H

#include <stdint.h>
#include <time.h>

static inline int64_t cm_now_ms(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_REALTIME, &ts);
    return (int64_t)ts.tv_sec * 1000 + ts.tv_nsec / 1000000;
}

/* Monotonic clock for timeouts, idle detection and latencies. */
static inline int64_t cm_mono_us(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (int64_t)ts.tv_sec * 1000000 + ts.tv_nsec / 1000;
}

static inline int64_t cm_mono_ms(void) { return cm_mono_us() / 1000; }

#endif
