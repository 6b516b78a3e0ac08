/*
 * dashboard_snapshot.h: what the page is sent, built from what the reader
 * found in Redis.
 *
 *   db_data_t   the aggregates of the last hour as plain numbers, filled by
 *               the Redis reader (dashboard_layout.c);
 *   db_model_t  the same as JSON text, immutable once built and shared by
 *               reference between the reader thread and the server thread:
 *               one fragment per 1-minute window (with the sequence number of
 *               the model that last changed it), the summary panel, the
 *               status, and the full snapshot message ready to send;
 *   db_msg_t    one WebSocket/HTTP body with LWS_PRE bytes of headroom,
 *               reference counted so that a thousand clients share one copy.
 *
 * Messages (README "Protocol"):
 *   {"type":"snapshot","seq":N, <head>, "series":[every window], "summary":{..}}
 *   {"type":"update","seq":N,"base":B, <head>, "series":[windows changed
 *    after model B], "summary":{..}}
 * A client that holds the state of model B and applies the update (replace
 * the windows by "t", drop those before "from") holds the state of model N.
 */
#ifndef DB_SNAPSHOT_H
#define DB_SNAPSHOT_H

#include <stdatomic.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "cm_err.h"

/* Headroom before a message's bytes: libwebsockets' LWS_PRE (checked by a
 * static assertion in dashboard_server.c). */
#define DB_MSG_PRE 16

#define DB_N_DIMS 5
/* "url", "category", "device_type", "country", "event_type": the dimensions
 * of SPEC §5, in this order everywhere. */
extern const char *const db_dim_names[DB_N_DIMS];
/* The names the page knows them by: "top_urls", "category", ... */
extern const char *const db_dim_json_names[DB_N_DIMS];

/* One 1-minute window, summed over the aggregator's sources. */
typedef struct db_window {
    int64_t start_ms;
    bool present; /* some key of it was found */
    int64_t events, page_views, purchases, revenue_micros;
    int64_t sessions, session_ms_sum, bounces, conversions;
    int64_t unique_users; /* -1: not known */
    int64_t late;         /* late events counted against it; -1: not known */
} db_window_t;

typedef struct db_count {
    char *key; /* owned */
    int64_t n;
} db_count_t;

/* The aggregates of [from_ms, to_ms). Everything is owned (db_data_clear). */
typedef struct db_data {
    int64_t generated_ms; /* wall clock of the read */
    int64_t window_ms;    /* 60000 */
    int64_t from_ms, to_ms;
    size_t n_windows;
    db_window_t *windows;                    /* oldest first, start = from + i*window */
    int64_t unique_users;                    /* distinct users over the range; -1 unknown */
    db_count_t *dims[DB_N_DIMS];             /* sorted by n descending, key ascending */
    size_t n_dims[DB_N_DIMS];
    int64_t last_change_ms;                  /* when the aggregator last wrote; 0 unknown */
    bool redis_ok;
    char error[160];                         /* why not, when !redis_ok */
    int64_t stale_since_ms;                  /* first failed read of this outage, 0 if ok */
} db_data_t;

/* Frees what d owns and zeroes it. NULL is a no-op. */
void db_data_clear(db_data_t *d);
/* Deep copy of src into dst (dst is overwritten, not freed). CM_ERR_NOMEM. */
cm_err_t db_data_copy(db_data_t *dst, const db_data_t *src);

/* Sorts counts by n descending then key, and keeps the first top_n (freeing
 * the rest's keys). Returns the new count. */
size_t db_counts_top(db_count_t *c, size_t n, size_t top_n);

/* ------------------------------------------------------------ messages */

typedef enum db_msg_kind { DB_MSG_OTHER = 0, DB_MSG_SNAPSHOT, DB_MSG_UPDATE } db_msg_kind_t;

typedef struct db_msg {
    atomic_int refs;
    db_msg_kind_t kind;
    size_t len;             /* bytes of the body */
    unsigned char buf[];    /* DB_MSG_PRE + len + 1 (a NUL, for tests and logs) */
} db_msg_t;

/* A message holding a copy of data[len], one reference (the caller's); NULL
 * on no memory. */
db_msg_t *db_msg_new(const void *data, size_t len);
static inline unsigned char *db_msg_body(db_msg_t *m) { return m->buf + DB_MSG_PRE; }
/* Takes a reference; returns m. */
db_msg_t *db_msg_ref(db_msg_t *m);
/* Drops a reference; frees at zero. Thread-safe. NULL is a no-op. */
void db_msg_unref(db_msg_t *m);

/* --------------------------------------------------------------- model */

typedef struct db_model {
    atomic_int refs;
    uint64_t seq;
    int64_t from_ms, to_ms, window_ms;
    bool stale;
    size_t n;
    int64_t *starts;    /* n */
    char **frags;       /* n JSON objects */
    size_t *frag_len;
    uint64_t *changed;  /* seq of the model that last changed window i */
    char *status;       /* JSON object: redis, stale, error, stale_since, last_change */
    char *head;         /* "seq":..,"window_ms":..,"from":..,"to":..,"status":{..} */
    char *summary;      /* JSON object */
    db_msg_t *snapshot; /* the full snapshot message (one reference held by the model) */
} db_model_t;

/*
 * Builds model `seq` from d. `prev` (may be NULL; borrowed) is the model
 * before it: a window whose fragment is unchanged keeps prev's `changed`
 * mark, so that updates carry only what moved. `top_n` caps the breakdowns
 * (d's lists are cut to it already when built by the reader). Returns one
 * reference (the caller's) or NULL on no memory.
 */
db_model_t *db_model_build(const db_data_t *d, const db_model_t *prev, uint64_t seq);

/* True when a and b would show the same thing (everything but seq). */
bool db_model_same(const db_model_t *a, const db_model_t *b);

/* Takes a reference; returns m. */
db_model_t *db_model_ref(db_model_t *m);
/* Drops a reference; frees at zero. Thread-safe. NULL is a no-op. */
void db_model_unref(db_model_t *m);

/*
 * The update message that takes a client from model `base` to m: the head,
 * the windows changed after base, the summary. base >= m->seq gives NULL
 * (nothing to send). Returns one reference (the caller's), NULL on no memory.
 */
db_msg_t *db_model_update(const db_model_t *m, uint64_t base);

#endif
