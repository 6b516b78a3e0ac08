/*
 * cm_kafka.h: Kafka for every service: configuration, an idempotent producer,
 * a plain consumer with manual commits, and the transactional
 * consume-transform-produce loop (exactly-once).
 *
 * All three are thin layers over librdkafka; the raw handles stay reachable
 * (cm_*_handle()) for what this header does not cover.
 *
 * Configuration order, for every client: librdkafka defaults, then ours (see
 * each constructor), then every pass-through property (RDKAFKA_* env, so
 * SASL/SSL and tuning work everywhere), then the few settings a role cannot
 * work without (e.g. enable.auto.commit=false for the transactional loop):
 * those are forced and a pass-through value for them is overridden with a
 * warning.
 *
 * librdkafka's own log lines and error events are written through cm_log as
 * JSON lines ("msg":"kafka log"/"kafka error", with "fac", "client").
 *
 * librdkafka 2.0 (Debian) aborts when a cooperative-sticky consumer that has
 * joined its group is destroyed before its first assignment (librdkafka
 * #4312, fixed in 2.3). cm_consumer_destroy/cm_txloop_destroy then close the
 * consumer but leave the handle allocated: a small leak at exit, no crash.
 *
 * ---------------------------------------------------------------------------
 * Exactly-once, for the state of an app too (sessionizer, aggregator)
 * ---------------------------------------------------------------------------
 * cm_txloop_t reads input with a read_committed consumer and, in ONE Kafka
 * transaction, writes the outputs and the input offsets (KIP-447:
 * send_offsets_to_transaction with the consumer's group metadata). A crash at
 * any instant leaves either all of a transaction or none of it.
 *
 * An app whose state matters (open sessions, open windows) makes the state
 * part of the same transaction:
 *
 *  1. Every state change is written as a record to a compacted changelog topic
 *     (clickstream.<service>.state) with cm_txloop_produce(), key = state key,
 *     value = the new state (NULL value = deleted). Use the SAME partition
 *     number as the input partition the state belongs to (cm_kafka_msg_t
 *     .partition = msg->partition) and create the changelog with as many
 *     partitions as the input topic. Writing the newest value of a key only
 *     once per transaction (in before_commit) is enough and much cheaper.
 *  2. on_assign(parts): for each new partition, read the changelog partition
 *     from the beginning to its end with cm_txloop_restore() (read_committed,
 *     so aborted state never comes back), rebuild the in-memory state, and
 *     only then return. The loop has already fetched the partition's committed
 *     input offset *stably* (waiting for a previous owner's open transaction to
 *     end), so the changelog and the input offset agree.
 *  3. on_abort(parts): uncommitted state changes must be thrown away. The
 *     simplest correct way: drop the state of every listed partition and
 *     restore it again with cm_txloop_restore(); the loop has rewound the
 *     input to the committed offsets already. (An app that keeps a copy of
 *     its state as of the last commit may restore that copy instead.)
 *  4. on_revoke(parts, lost): the open transaction has been committed (or,
 *     when lost, aborted) before the call; drop the state of those partitions.
 *
 * Input is read once: librdkafka before 2.4 can hand out records of a retained
 * partition a second time after a cooperative rebalance (librdkafka #4637);
 * the consumer and the loop drop a record below the next offset expected for
 * its partition (counted in redelivered_skipped). So move a read position only
 * with cm_consumer_seek() (the loop rewinds by itself), never with
 * rd_kafka_seek() on the raw handle: records read again that way are dropped.
 *
 * Threads: a cm_txloop_t belongs to the thread that calls cm_txloop_run();
 * every callback runs on that thread, inside cm_txloop_run().
 * cm_txloop_get_stats() and cm_txloop_ready() may be called from any thread.
 */
#ifndef CM_KAFKA_H
#define CM_KAFKA_H

#include <signal.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include <librdkafka/rdkafka.h>

#include "cm_config.h"
#include "cm_err.h"

/* --------------------------------------------------------------------------
 * Configuration
 * ------------------------------------------------------------------------ */

/*
 * A new librdkafka configuration: bootstrap.servers = bootstrap, our common
 * defaults (JSON log callback, error callback), then every pass-through
 * property in `pt` (may be NULL). Returns NULL on a bad property and writes
 * one line into errstr naming it, e.g.
 *   kafka property "foo.bar": No such configuration property: "foo.bar"
 * (the value is never shown: it may be a password). The caller owns the
 * result (rd_kafka_conf_destroy, or hand it to rd_kafka_new).
 */
rd_kafka_conf_t *cm_kafka_conf_new(const char *bootstrap, const cm_passthrough_t *pt, char *errstr,
                                   size_t errstr_size);

/* One message header. value may be NULL (a null header); name is a C string. */
typedef struct cm_kafka_header {
    const char *name;
    const void *value;
    size_t len;
} cm_kafka_header_t;

#define CM_KAFKA_PARTITION_ANY (-1) /* partition by key (murmur2_random) */

/* One record to produce. Everything is copied by the produce call. */
typedef struct cm_kafka_msg {
    const char *topic;
    int32_t partition; /* CM_KAFKA_PARTITION_ANY: by key, Java-compatible murmur2;
                        * a NULL key goes to a random partition */
    const void *key;   /* may be NULL */
    size_t key_len;
    const void *value; /* NULL: a tombstone (compacted topics) */
    size_t value_len;
    const cm_kafka_header_t *headers; /* may be NULL */
    size_t header_count;
    int64_t timestamp_ms; /* 0: now (CreateTime) */
} cm_kafka_msg_t;

/* --------------------------------------------------------------------------
 * Producer: idempotent, asynchronous, never blocks the caller
 * ------------------------------------------------------------------------ */

typedef struct cm_producer cm_producer_t;

/*
 * Delivery report of one message: msg_opaque is what was given to produce,
 * err is CM_OK when the broker acknowledged it (acks=all), else CM_ERR_KAFKA
 * with librdkafka's reason in errmsg (static or valid only during the call).
 * partition/offset are where it landed (-1 on error). Runs on the producer's
 * poll thread (or inside cm_producer_poll() with manual_poll); it must not
 * block for long and must not call cm_producer_flush/destroy.
 */
typedef void cm_delivery_fn(void *msg_opaque, cm_err_t err, const char *errmsg, int32_t partition,
                            int64_t offset, void *cb_opaque);

typedef struct cm_producer_opts {
    const char *bootstrap;       /* required */
    const cm_passthrough_t *pt;  /* may be NULL; not kept after _new */
    const char *client_id;       /* may be NULL */
    cm_delivery_fn *on_delivery; /* may be NULL */
    void *cb_opaque;             /* passed to on_delivery */
    int linger_ms;               /* 0: 5 ms */
    int queue_max_msgs;          /* 0: 100000 (queue.buffering.max.messages) */
    int queue_max_kbytes;        /* 0: 262144 (256 MiB) */
    int delivery_timeout_ms;     /* 0: 120000 (delivery.timeout.ms) */
    bool manual_poll;            /* true: no thread; the caller runs cm_producer_poll() */
} cm_producer_opts_t;

/*
 * Defaults: enable.idempotence=true, acks=all, compression.type=lz4,
 * linger.ms=5, batch.size=1 MiB, partitioner=murmur2_random. Unless
 * manual_poll, starts a thread that serves delivery reports. Returns NULL and
 * fills errstr on a bad option or property. Does not wait for the brokers
 * (see cm_producer_ready).
 */
cm_producer_t *cm_producer_new(const cm_producer_opts_t *opts, char *errstr, size_t errstr_size);

/*
 * Queues one record; never blocks. Returns CM_OK (the delivery callback will
 * be called exactly once for it with msg_opaque), CM_ERR_RETRY when the local
 * queue is full (nothing was queued, no callback: retry later or shed load),
 * CM_ERR_INVALID for a bad argument (e.g. message too large, unknown
 * partition) and CM_ERR_FATAL when the producer hit a fatal error (restart).
 * No callback is made for an error return. Thread-safe.
 */
cm_err_t cm_producer_send(cm_producer_t *p, const cm_kafka_msg_t *m, void *msg_opaque);

/* Shorthand of cm_producer_send: partition by key, timestamp now. */
cm_err_t cm_producer_produce(cm_producer_t *p, const char *topic, const void *key, size_t key_len,
                             const void *value, size_t value_len, const cm_kafka_header_t *headers,
                             size_t header_count, void *msg_opaque);

/* manual_poll only: serves delivery reports, waiting up to timeout_ms.
 * Returns the number of events served. A no-op returning 0 otherwise. */
int cm_producer_poll(cm_producer_t *p, int timeout_ms);

/* Waits until every queued record has got its delivery report (callbacks run
 * on the poll thread as usual). CM_OK or CM_ERR_TIMEOUT. */
cm_err_t cm_producer_flush(cm_producer_t *p, int timeout_ms);

/* Records queued or in flight, not yet reported (for /metrics). Thread-safe. */
int cm_producer_queue_len(const cm_producer_t *p);

/* Whether a broker answered recently: false from the start until the first
 * metadata answer, and after librdkafka reports all brokers down until they
 * answer again (probed every second while down). Thread-safe. */
bool cm_producer_ready(const cm_producer_t *p);

typedef struct cm_producer_stats {
    uint64_t queued;     /* accepted by send */
    uint64_t delivered;  /* acknowledged */
    uint64_t failed;     /* delivery reports with an error */
    uint64_t queue_full; /* sends refused with CM_ERR_RETRY */
    int queue_len;
    bool ready;
} cm_producer_stats_t;

void cm_producer_get_stats(const cm_producer_t *p, cm_producer_stats_t *out);

/* The librdkafka handle (owned by p). */
rd_kafka_t *cm_producer_handle(cm_producer_t *p);

/* Flushes for up to timeout_ms (records still queued then are reported as
 * failed by librdkafka's purge), stops the poll thread, frees everything.
 * NULL is a no-op. */
void cm_producer_destroy(cm_producer_t *p, int timeout_ms);

/* --------------------------------------------------------------------------
 * Consumer: manual offsets (the lake-writer)
 * ------------------------------------------------------------------------ */

typedef struct cm_consumer cm_consumer_t;

typedef enum cm_rebalance_kind {
    CM_REBALANCE_ASSIGN = 0, /* partitions were added to the assignment */
    CM_REBALANCE_REVOKE,     /* partitions are being taken away (orderly) */
    CM_REBALANCE_LOST,       /* partitions were lost (session timed out, fenced):
                              * another member may own them already */
} cm_rebalance_kind_t;

/*
 * Rebalance hook, called on the thread that runs cm_consumer_poll(), before
 * the change takes effect. On ASSIGN the app may set parts->elems[i].offset to
 * the offset to start from (e.g. from its own snapshot); left at
 * RD_KAFKA_OFFSET_INVALID the committed offset (else auto.offset.reset) is
 * used. On REVOKE/LOST the partitions are unassigned after the call returns.
 * The list belongs to the consumer (only the offsets may be changed).
 */
typedef void cm_rebalance_fn(cm_consumer_t *c, cm_rebalance_kind_t kind,
                             rd_kafka_topic_partition_list_t *parts, void *opaque);

typedef struct cm_consumer_opts {
    const char *bootstrap;      /* required */
    const cm_passthrough_t *pt; /* may be NULL */
    const char *group_id;       /* required */
    const char *const *topics;  /* required, topic_count names */
    size_t topic_count;
    const char *client_id;         /* may be NULL */
    const char *auto_offset_reset; /* NULL: "earliest" */
    cm_rebalance_fn *on_rebalance; /* may be NULL */
    void *opaque;
} cm_consumer_opts_t;

/*
 * Subscribes with partition.assignment.strategy=cooperative-sticky,
 * enable.auto.commit=false (forced), enable.auto.offset.store=false,
 * isolation.level=read_committed (forced). NULL + errstr on failure.
 */
cm_consumer_t *cm_consumer_new(const cm_consumer_opts_t *opts, char *errstr, size_t errstr_size);

/*
 * Waits up to timeout_ms for one record. CM_OK with *out set (the caller owns
 * it: rd_kafka_message_destroy) or *out NULL on timeout. Non-fatal consumer
 * errors are logged and swallowed; CM_ERR_FATAL means restart the service.
 * Rebalance hooks run inside this call.
 */
cm_err_t cm_consumer_poll(cm_consumer_t *c, int timeout_ms, rd_kafka_message_t **out);

/* Commits the given offsets (offset = next record to read) synchronously,
 * or asynchronously when async. The list stays the caller's. */
cm_err_t cm_consumer_commit(cm_consumer_t *c, const rd_kafka_topic_partition_list_t *offsets,
                            bool async);

/* Moves the read position of an assigned partition (e.g. after a failed
 * write, to read again). */
cm_err_t cm_consumer_seek(cm_consumer_t *c, const char *topic, int32_t partition, int64_t offset,
                          int timeout_ms);

/* Number of partitions assigned now. Thread-safe. */
int cm_consumer_assigned_count(const cm_consumer_t *c);

/* Consumer lag in records as of the last cm_consumer_poll() that refreshed
 * it (at most once a second): see cm_kafka_lag(). -1 before the first.
 * Thread-safe. */
int64_t cm_consumer_lag(const cm_consumer_t *c);

rd_kafka_t *cm_consumer_handle(cm_consumer_t *c);

/* Leaves the group (revoke hooks run inside) and frees. NULL is a no-op. */
void cm_consumer_destroy(cm_consumer_t *c);

/* --------------------------------------------------------------------------
 * The transactional consume-transform-produce loop
 * ------------------------------------------------------------------------ */

typedef struct cm_txloop cm_txloop_t;

/*
 * The app's callbacks. Every one receives the loop and opts.opaque; all are
 * optional except process. An error return (anything but CM_OK) from
 * process/before_commit aborts the open transaction (rewind + on_abort) when
 * it is CM_ERR_RETRY, and stops the loop (cm_txloop_run returns it) otherwise.
 * An error from on_assign stops the loop.
 */
typedef struct cm_txloop_callbacks {
    /* One input record, inside the open transaction. Outputs go through
     * cm_txloop_produce/_send. msg belongs to the loop. */
    cm_err_t (*process)(cm_txloop_t *loop, const rd_kafka_message_t *msg, void *opaque);
    /* New partitions, before any of their records is processed; parts carry
     * the committed input offsets (RD_KAFKA_OFFSET_INVALID: none, start from
     * the earliest). Restore state here (cm_txloop_restore). */
    cm_err_t (*on_assign)(cm_txloop_t *loop, const rd_kafka_topic_partition_list_t *parts,
                          void *opaque);
    /* Partitions going away. The open transaction was committed first
     * (lost=false) or aborted (lost=true, another member may own them). */
    void (*on_revoke)(cm_txloop_t *loop, const rd_kafka_topic_partition_list_t *parts, bool lost,
                      void *opaque);
    /* The open transaction was aborted: discard every state change made since
     * the last commit. parts = the whole assignment, rewound to the committed
     * offsets (what will be read next). */
    void (*on_abort)(cm_txloop_t *loop, const rd_kafka_topic_partition_list_t *parts, void *opaque);
    /* Just before a commit: flush the outputs and state records that are due
     * (cm_txloop_produce works here). */
    cm_err_t (*before_commit)(cm_txloop_t *loop, void *opaque);
    /* At least every tick_interval_ms, even without input. now_ms is wall
     * time (cm_now_ms). Outputs produced here join the open transaction
     * (one is begun if needed). */
    void (*tick)(cm_txloop_t *loop, int64_t now_ms, void *opaque);
} cm_txloop_callbacks_t;

typedef struct cm_txloop_opts {
    const char *bootstrap;      /* required */
    const cm_passthrough_t *pt; /* may be NULL */
    const char *group_id;       /* required */
    const char *const *topics;  /* required, topic_count names */
    size_t topic_count;
    const char *transactional_id; /* required, unique per running instance and
                                   * stable across its restarts */
    const char *client_id;        /* may be NULL */
    int commit_interval_ms;       /* 0: 100 */
    int commit_max_msgs;          /* 0: 10000 input records per transaction */
    int tick_interval_ms;         /* 0: 100 */
    int transaction_timeout_ms;   /* 0: 30000 (transaction.timeout.ms) */
    int session_timeout_ms;       /* 0: 10000 (session.timeout.ms) */
    int shutdown_timeout_ms;      /* 0: 5000: budget for the final commit */
    /* Stop condition, checked at least every tick: the loop stops when
     * *stop_flag != 0 or should_stop(opaque) returns true (either may be NULL). */
    volatile sig_atomic_t *stop_flag;
    bool (*should_stop)(void *opaque);
    cm_txloop_callbacks_t cb;
    void *opaque;
} cm_txloop_opts_t;

/*
 * Builds the consumer (cooperative-sticky, read_committed, auto commit off,
 * auto.offset.reset=earliest; a pass-through auto.offset.reset wins) and the
 * transactional producer (idempotent, acks=all, lz4) and runs
 * init_transactions (fencing an older instance with the same id, aborting its
 * open transaction). Does not subscribe yet. NULL + errstr on failure
 * (including no broker answering init_transactions within 30 s).
 * opts' strings are copied.
 */
cm_txloop_t *cm_txloop_new(const cm_txloop_opts_t *opts, char *errstr, size_t errstr_size);

/*
 * Subscribes and runs until the stop condition: polls input, calls the
 * callbacks, commits every commit_interval_ms or commit_max_msgs records.
 * Transaction errors follow librdkafka's rules: abortable -> abort, rewind,
 * on_abort, go on; retriable -> retry; fatal -> return CM_ERR_FATAL.
 * On stop: before_commit + commit of the open transaction (abort if that
 * fails), consumer close (on_revoke runs), return CM_OK. Call it once.
 */
cm_err_t cm_txloop_run(cm_txloop_t *loop);

/*
 * Produces one record in the open transaction (begun if none is open). Call
 * from the callbacks only. Blocks while the producer queue is full (serving
 * it). CM_OK, CM_ERR_INVALID (bad record), CM_ERR_RETRY (the transaction is
 * doomed: return CM_ERR_RETRY from the callback, or just go on - the commit
 * will abort it) or CM_ERR_FATAL. Data is copied.
 */
cm_err_t cm_txloop_send(cm_txloop_t *loop, const cm_kafka_msg_t *m);

/* Shorthand of cm_txloop_send: partition by key, timestamp now. */
cm_err_t cm_txloop_produce(cm_txloop_t *loop, const char *topic, const void *key, size_t key_len,
                           const void *value, size_t value_len, const cm_kafka_header_t *headers,
                           size_t header_count);

/*
 * Restore helper for on_assign/on_abort: reads partition `partition` of
 * `topic` (a changelog) from the beginning to its end, read_committed,
 * calling fn for every record in order (aborted records never appear); a NULL
 * value is a tombstone. "The end" is the high watermark at the call: it first
 * waits until every transaction below it is decided (a previous owner's
 * commit may still be writing its markers), so a partition with a foreign
 * open transaction can wait up to transaction.timeout.ms: give timeout_ms
 * more than that (<= 0: 60 s). Uses a separate non-group consumer owned by
 * the loop. Returns CM_OK, the first non-OK return of fn, CM_ERR_TIMEOUT or
 * CM_ERR_KAFKA.
 */
typedef cm_err_t cm_record_fn(const rd_kafka_message_t *msg, void *opaque);
cm_err_t cm_txloop_restore(cm_txloop_t *loop, const char *topic, int32_t partition,
                           cm_record_fn *fn, void *opaque, int timeout_ms);

/* Asks the loop to stop at its next check (safe from callbacks and any thread). */
void cm_txloop_stop(cm_txloop_t *loop);

/* Commit latency histogram buckets (ms, upper bounds); the last is +Inf. */
#define CM_TXLOOP_LAT_BUCKETS 10
extern const double cm_txloop_lat_bounds_ms[CM_TXLOOP_LAT_BUCKETS - 1];

typedef struct cm_txloop_stats {
    uint64_t msgs_in;             /* input records processed (counting re-reads) */
    uint64_t msgs_produced;       /* records produced in transactions */
    uint64_t commits;             /* transactions committed */
    uint64_t aborts;              /* transactions aborted */
    uint64_t rebalances;          /* assign + revoke events */
    uint64_t redelivered_skipped; /* records the consumer handed out a second time
                                   * (librdkafka #4637), dropped unprocessed */
    uint64_t commit_lat_count;
    uint64_t commit_lat_us_sum;
    uint64_t commit_lat_us_max;
    uint64_t commit_lat_bucket[CM_TXLOOP_LAT_BUCKETS]; /* non-cumulative counts */
    int assigned_partitions;
    int64_t consumer_lag; /* records, refreshed each second (cm_kafka_lag); -1: not yet */
    bool running; /* init done, subscribed, not stopped */
} cm_txloop_stats_t;

/* A consistent-enough copy for /metrics. Thread-safe. */
void cm_txloop_get_stats(const cm_txloop_t *loop, cm_txloop_stats_t *out);

/* running and at least one partition assigned (for /readyz). Thread-safe. */
bool cm_txloop_ready(const cm_txloop_t *loop);

/* The librdkafka handles (owned by the loop). */
rd_kafka_t *cm_txloop_consumer(cm_txloop_t *loop);
rd_kafka_t *cm_txloop_producer(cm_txloop_t *loop);

/* Frees the loop (after cm_txloop_run returned, or instead of it). A still
 * open transaction is aborted. NULL is a no-op. */
void cm_txloop_destroy(cm_txloop_t *loop);

#endif
