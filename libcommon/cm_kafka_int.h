/*
 * cm_kafka_int.h: what the cm_kafka_*.c files share; not for services.
 */
#ifndef CM_KAFKA_INT_H
#define CM_KAFKA_INT_H

#include "cm_kafka.h"

/* At most this many headers per record (a cap on outside input). */
#define CM_KAFKA_MAX_HEADERS 64

/* One property: key and value; a list ends with {NULL, NULL}. */
typedef struct cm_kprop {
    const char *key;
    const char *value;
} cm_kprop_t;

/*
 * Builds a configuration: bootstrap, common defaults, `defaults` (role's),
 * the pass-through, then `forced` (a pass-through value for a forced key is
 * logged as overridden). Any list may be NULL. NULL + errstr on failure.
 */
rd_kafka_conf_t *cm_kafka_conf_build(const char *bootstrap, const char *client_id,
                                     const cm_kprop_t *defaults, const cm_passthrough_t *pt,
                                     const cm_kprop_t *forced, char *errstr, size_t errstr_size);

/* Logs an error event the way every client does (level by severity). */
void cm_kafka_log_error(rd_kafka_t *rk, int err, const char *reason);

/*
 * rd_kafka_destroy() of a group consumer. librdkafka before 2.3.0 aborts on
 * an assertion when a cooperative-sticky consumer that joined a group is
 * destroyed before its first assignment (librdkafka issue #4312, e.g. a
 * SIGTERM during start-up). Such a handle (joined, i.e. it had a member id
 * before the close, and never assigned) is closed but not destroyed: a small
 * leak instead of a crash, only on those versions, only in that state.
 */
void cm_kafka_consumer_destroy(rd_kafka_t *rk, bool joined, bool ever_assigned);

/* Whether the consumer has a group member id now (it got a JoinGroup answer). */
bool cm_kafka_consumer_joined(rd_kafka_t *rk);

/*
 * Consumer lag of a consumer handle in records: over its assigned
 * partitions, the partition's end (the high watermark, or the last stable
 * offset when reading committed, as of the last fetch) minus the consumer's
 * position. A partition not read from since its assignment (no position
 * yet) counts 0. No broker round trip: call it from the thread that polls,
 * never from a rebalance callback. -1 when the assignment is unavailable.
 */
int64_t cm_kafka_lag(rd_kafka_t *consumer);

/* How often the loops refresh their lag figure. */
#define CM_KAFKA_LAG_INTERVAL_MS 1000

/*
 * Offset guard: the next offset expected per assigned partition, to drop
 * records the consumer delivers a second time. librdkafka before 2.4 can
 * restart a retained partition's fetch from a stale position after a
 * cooperative rebalance (librdkafka issue #4637), re-delivering records that
 * were already processed - and, in the transactional loop, committed.
 */
typedef struct cm_offset_guard {
    rd_kafka_topic_partition_list_t *next; /* .offset: next expected, <0 unknown */
    uint64_t skipped;                      /* records dropped as re-deliveries */
} cm_offset_guard_t;

void cm_guard_init(cm_offset_guard_t *g);
void cm_guard_free(cm_offset_guard_t *g);
/* offset < 0 (unknown, or logical like BEGINNING): accept what comes next. */
void cm_guard_set(cm_offset_guard_t *g, const char *topic, int32_t partition, int64_t offset);
void cm_guard_remove(cm_offset_guard_t *g, const rd_kafka_topic_partition_list_t *parts);
/* false: m is below the expected offset of its partition (a re-delivery: drop
 * it); true: take it, and expect m->offset + 1 next. */
bool cm_guard_accept(cm_offset_guard_t *g, const rd_kafka_message_t *m);

/* One info line naming the partitions ("topic[3],topic[5]"), cut to fit. */
void cm_kafka_log_parts(const char *msg, const rd_kafka_topic_partition_list_t *parts);

/*
 * Fills vus (capacity cap) for rd_kafka_produceva from m; returns the count
 * or -1 when m is invalid (no topic, too many headers, header without name).
 */
int cm_kafka_msg_vus(const cm_kafka_msg_t *m, void *msg_opaque, rd_kafka_vu_t *vus, size_t cap);

#define CM_KAFKA_VUS_CAP (CM_KAFKA_MAX_HEADERS + 8)

/* Relaxed atomics for counters that /metrics reads from another thread. */
#define CM_ATOMIC_ADD(p, v) __atomic_fetch_add((p), (v), __ATOMIC_RELAXED)
#define CM_ATOMIC_LOAD(p) __atomic_load_n((p), __ATOMIC_RELAXED)
#define CM_ATOMIC_STORE(p, v) __atomic_store_n((p), (v), __ATOMIC_RELAXED)

#endif
