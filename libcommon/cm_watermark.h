/*
 * cm_watermark.h: event-time watermarks per input partition and for the whole
 * service (SPEC §3).
 *
 *  - Watermark of a partition = highest event time seen on it - bound
 *    (out-of-orderness bound, default 10 s). CM_WATERMARK_NONE before its
 *    first event (unless a value was restored with cm_watermark_add()).
 *  - A partition with no record for idle_timeout of PROCESSING time (default
 *    30 s, monotonic clock) is idle: it stops holding the service watermark
 *    back. Any record (cm_watermark_observe, cm_watermark_touch) makes it
 *    active again.
 *  - Service watermark = min over the non-idle partitions; when every
 *    partition is idle it is the max over them, so that a stream that stops
 *    still closes its windows and sessions. A non-idle partition that has
 *    seen no event yet holds the service watermark at CM_WATERMARK_NONE (we
 *    cannot know what it is about to deliver) until it turns idle.
 *  - cm_watermark_get() never goes back while the set of partitions stays the
 *    same (a partition waking up from idle with an older watermark does not
 *    pull it down). cm_watermark_add/remove reset that hold: after a
 *    rebalance the value is recomputed from the partitions now assigned.
 *
 * Time is always passed in: `event_ms` is event time (ms since epoch), `now_ms`
 * is monotonic processing time in ms (cm_mono_ms(); any monotonic origin,
 * tests pass their own). Nothing here reads a clock.
 *
 * Partitions are keys 0..CM_WATERMARK_MAX_KEY; a tracker covers one input
 * topic (use one tracker per topic, or encode several topics into the key).
 * Lookup is a direct index, so observe() is O(1); get() is O(assigned
 * partitions) and is meant for once per batch or tick.
 *
 * Not thread-safe: one tracker belongs to the thread that processes input
 * (the txloop thread). Copy values out for /metrics.
 */
#ifndef CM_WATERMARK_H
#define CM_WATERMARK_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "cm_err.h"

/* "No watermark yet": below every event time. */
#define CM_WATERMARK_NONE INT64_MIN

/* Largest partition key accepted. */
#define CM_WATERMARK_MAX_KEY ((1 << 20) - 1)

#define CM_WATERMARK_DEFAULT_BOUND_MS 10000
#define CM_WATERMARK_DEFAULT_IDLE_MS 30000

typedef struct cm_watermark cm_watermark_t;

/*
 * bound_ms >= 0: out-of-orderness bound. idle_timeout_ms >= 0: processing
 * time without a record after which a partition is idle; 0 means partitions
 * never go idle. Returns NULL and fills errstr on a bad argument or no memory.
 * The caller owns the result (cm_watermark_destroy).
 */
cm_watermark_t *cm_watermark_new(int64_t bound_ms, int64_t idle_timeout_ms, char *errstr,
                                 size_t errstr_size);
void cm_watermark_destroy(cm_watermark_t *wm); /* NULL: no-op */

int64_t cm_watermark_bound(const cm_watermark_t *wm);
int64_t cm_watermark_idle_timeout(const cm_watermark_t *wm);

/*
 * Adds partition `key` (on assign). `max_event_ms` is the highest event time
 * seen on it before, restored from state (CM_WATERMARK_NONE: nothing known).
 * The idle clock starts at now_ms: a partition is active when assigned.
 * Adding a key that is present replaces its values. Resets the service hold.
 * CM_OK, CM_ERR_INVALID (key out of range) or CM_ERR_NOMEM.
 */
cm_err_t cm_watermark_add(cm_watermark_t *wm, int32_t key, int64_t max_event_ms,
                          int64_t now_ms);

/* Removes partition `key` (on revoke); a no-op when absent. Resets the hold. */
void cm_watermark_remove(cm_watermark_t *wm, int32_t key);

/* Removes every partition. */
void cm_watermark_clear(cm_watermark_t *wm);

bool cm_watermark_has(const cm_watermark_t *wm, int32_t key);
size_t cm_watermark_count(const cm_watermark_t *wm);

/*
 * One record with event time `event_ms` seen on `key` at processing time
 * now_ms: raises the partition's max event time and marks it active. Returns
 * the partition's watermark afterwards; CM_WATERMARK_NONE (and nothing
 * changes) when the key is not assigned.
 */
int64_t cm_watermark_observe(cm_watermark_t *wm, int32_t key, int64_t event_ms, int64_t now_ms);

/* A record without a usable event time (undecodable): only marks the
 * partition active. No-op for an unknown key. */
void cm_watermark_touch(cm_watermark_t *wm, int32_t key, int64_t now_ms);

/* Watermark of one partition (max event - bound; saturating), or
 * CM_WATERMARK_NONE when unknown or before its first event. Pure function of
 * the partition's records, independent of processing time. */
int64_t cm_watermark_partition(const cm_watermark_t *wm, int32_t key);

/* Highest event time seen on the partition (CM_WATERMARK_NONE: none). This
 * is what a service saves in its state to restore the watermark. */
int64_t cm_watermark_max_event(const cm_watermark_t *wm, int32_t key);

/* Whether the partition has had no record for idle_timeout at now_ms
 * (false for an unknown key, and always false when idle_timeout is 0). */
bool cm_watermark_is_idle(const cm_watermark_t *wm, int32_t key, int64_t now_ms);

/*
 * The service watermark at now_ms (see top of file). CM_WATERMARK_NONE when
 * no partition is assigned, or while a non-idle partition has no event yet.
 * Monotonic between add/remove calls. Not const: it updates the hold.
 */
int64_t cm_watermark_get(cm_watermark_t *wm, int64_t now_ms);

/* Calls fn for each assigned partition, in no particular order. */
void cm_watermark_foreach(const cm_watermark_t *wm,
                          void (*fn)(int32_t key, int64_t max_event_ms, void *ud), void *ud);

#endif
