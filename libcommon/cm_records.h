/*
 * cm_records.h: the session record (SPEC §4) and the window result (SPEC §5)
 * as C structs, the values of clickstream.sessions and clickstream.metrics.
 * Their Avro form is schemas/session.avsc and schemas/window_result.avsc;
 * cm_avro.h encodes and decodes them.
 *
 * Strings (`const char *`, NULL when absent) follow one rule in both structs:
 *  - to ENCODE, the producer points them at any memory it keeps alive until
 *    the encode call returns (its own state, string literals); nothing is
 *    copied and the struct does not free them;
 *  - after a DECODE they point into the struct's own `arena` and live until
 *    the next reset/decode/free of that struct.
 * The arrays of a window result (`counts`, `top_urls`) are always owned by the
 * struct (grown by the add functions or by a decode); their `key`/`url`
 * strings follow the rule above.
 *
 * Money is int64 micros (currency units × 10^6), exact, as in cm_event_t.
 */
#ifndef CM_RECORDS_H
#define CM_RECORDS_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "cm_buf.h"
#include "cm_err.h"

/* Hard cap of a record's decode arena (strings of one record). */
#define CM_RECORD_MAX_BYTES (4 * 1024 * 1024)

typedef struct cm_session {
    const char *session_id; /* required; same input => same id */
    const char *user_id;    /* required */
    int64_t start_ms;       /* event time of the first event, UTC ms */
    int64_t end_ms;         /* event time of the last event, UTC ms */
    int64_t duration_ms;    /* end - start */
    int64_t event_count;
    int64_t page_views;
    const char *entry_url;   /* page_url of the first event that has one */
    const char *exit_url;    /* page_url of the last event that has one */
    const char *device_type; /* of the first event */
    const char *country;     /* of the first event */
    bool converted;          /* has a purchase */
    int64_t revenue_micros;  /* sum of price × quantity over purchases */
    int32_t revision;        /* 0 first emission, +1 per update */
    bool tombstone;          /* absorbed by a merge (SPEC §4) */

    cm_buf_t arena; /* owns the strings after a decode */
} cm_session_t;

/* One (string, count) pair: an entry of `counts` or of `top_urls`. */
typedef struct cm_kv_count {
    const char *key;
    int64_t count;
} cm_kv_count_t;

/* Values of cm_window_result_t.dimension. */
#define CM_DIM_TOTAL "total"
#define CM_DIM_URL "url"
#define CM_DIM_CATEGORY "category"
#define CM_DIM_DEVICE_TYPE "device_type"
#define CM_DIM_COUNTRY "country"
#define CM_DIM_EVENT_TYPE "event_type"

typedef struct cm_window_result {
    int64_t window_size_ms;  /* 60000, 300000 or 3600000 */
    int64_t window_start_ms; /* aligned to the epoch, UTC ms */
    int64_t window_end_ms;   /* exclusive: start + size */
    const char *dimension;   /* required: one of CM_DIM_* */
    int32_t revision;
    bool final;
    int64_t events;
    int64_t page_views;
    int64_t purchases;
    int64_t revenue_micros;
    int64_t unique_users;
    cm_kv_count_t *counts;  /* dimension value -> events; empty for "total" */
    size_t n_counts;
    cm_kv_count_t *top_urls; /* top 100 URLs for "total"; empty otherwise */
    size_t n_top_urls;
    int64_t sessions_closed;
    double avg_session_ms;
    double bounce_rate;     /* 0..1 */
    double conversion_rate; /* 0..1 */

    size_t counts_cap, top_urls_cap; /* allocated entries */
    cm_buf_t arena;                  /* owns the strings after a decode */
} cm_window_result_t;

/* Zero every field; the arena gets the CM_RECORD_MAX_BYTES cap. */
void cm_session_init(cm_session_t *s);
/* Clears every field; keeps the arena's memory for the next decode. */
void cm_session_reset(cm_session_t *s);
/* Releases the arena; the struct is left initialised and empty. NULL: no-op. */
void cm_session_free(cm_session_t *s);

void cm_window_result_init(cm_window_result_t *w);
/* Clears every field and empties the arrays; keeps their memory. */
void cm_window_result_reset(cm_window_result_t *w);
/* Releases arrays and arena; left initialised and empty. NULL: no-op. */
void cm_window_result_free(cm_window_result_t *w);

/*
 * Append one entry to `counts` / `top_urls`. The string is borrowed, not
 * copied: it must stay valid while the struct is encoded (see top of file).
 * Returns CM_OK, CM_ERR_INVALID for a NULL key, or CM_ERR_NOMEM.
 */
cm_err_t cm_window_result_add_count(cm_window_result_t *w, const char *key, int64_t count);
cm_err_t cm_window_result_add_top_url(cm_window_result_t *w, const char *url, int64_t count);

#endif
