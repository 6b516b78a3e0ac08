/*
 * gateway_batch.h: from a request body to the byte ranges of its events.
 *
 * A body is one JSON object, a JSON array of objects, or NDJSON (one object
 * per line; also taken when objects simply follow each other). The splitter
 * is a one-pass structural scan that finds where each event starts and ends,
 * how deep it nests and how long it is, WITHOUT building anything: so an
 * event too large or too deep is refused before jansson sees it, and one
 * malformed element of an array costs only that element. jansson then parses
 * each slice on its own (gw_batch_parse_slice).
 *
 * gw_gunzip() inflates a gzip (or zlib) body under a hard cap, which is the
 * defence against gzip bombs.
 */
#ifndef GW_BATCH_H
#define GW_BATCH_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include <jansson.h>

#include "cm_buf.h"
#include "cm_err.h"
#include "cm_event.h"
#include "gateway_enrich.h"

typedef enum gw_body_format {
    GW_BODY_JSON = 0, /* object, array, or objects one after another */
    GW_BODY_NDJSON,   /* one value per line, each line on its own */
} gw_body_format_t;

/* One event's bytes inside the body. */
typedef struct gw_slice {
    uint32_t off, len;
    uint16_t depth;  /* deepest nesting; the event object itself is 1 */
    bool broken;     /* NDJSON line whose brackets/strings do not close */
} gw_slice_t;

/*
 * Splits body[0..len) into at most `max` slices written to `out` (caller's
 * array of `max` entries). Returns CM_OK and *n;
 *   CM_ERR_TOO_LARGE  more than `max` events (*n = max);
 *   CM_ERR_PARSE      the body's outer structure is broken (an unclosed
 *                     array, garbage after it, a top-level scalar, empty);
 *                     errstr says what.
 * Nothing is allocated; the body is borrowed.
 */
cm_err_t gw_batch_split(const char *body, size_t len, gw_body_format_t fmt, gw_slice_t *out,
                        size_t max, size_t *n, char *errstr, size_t errstr_size);

/*
 * Parses one slice with jansson (duplicate keys refused). Returns a new
 * reference (caller owns), or NULL with errstr set ("invalid JSON: ...").
 */
json_t *gw_batch_parse_slice(const char *body, const gw_slice_t *s, char *errstr,
                             size_t errstr_size);

/*
 * Inflates a gzip or zlib stream (several gzip members allowed) appending to
 * `out`, whose cap (cm_buf max) bounds the output. Returns CM_OK;
 * CM_ERR_TOO_LARGE past the cap; CM_ERR_PARSE for corrupt or truncated
 * input; CM_ERR_NOMEM. errstr says what.
 */
cm_err_t gw_gunzip(const void *in, size_t len, cm_buf_t *out, char *errstr, size_t errstr_size);

/* ------------------------------------------------------------------------
 * A whole request body -> validated, enriched, Avro-encoded Kafka messages.
 * ---------------------------------------------------------------------- */

typedef struct gw_batch_opts {
    cm_event_limits_t lim;
    size_t max_errors; /* rejected events listed in the response */
    uint32_t schema_id;
    bool anonymize;
} gw_batch_opts_t;

/* One ready message: key and value are ranges of gw_batch_t.enc. */
typedef struct gw_msg {
    uint32_t key_off, key_len, val_off, val_len;
} gw_msg_t;

#define GW_BATCH_SMALL 32

/* Called once per rejected event with its reason code (a static string). */
typedef void gw_reject_fn(void *ud, const char *reason);

/*
 * Per-request working memory; owned by the request, freed with it
 * (gw_batch_free). Reusable: gw_batch_process resets it.
 */
typedef struct gw_batch {
    const gw_batch_opts_t *opts; /* borrowed */
    gw_reject_fn *on_reject;     /* may be NULL */
    void *reject_ud;

    cm_buf_t plain; /* the gunzipped body */
    gw_slice_t *slices; /* small_slices, or max_request_events allocated */
    size_t n_slices;
    cm_event_t ev;
    cm_buf_t enc;  /* keys and Avro values, back to back */
    gw_msg_t *msgs; /* like slices */
    size_t n_msgs;
    /* most requests are small: no per-request allocation for their tables */
    gw_slice_t small_slices[GW_BATCH_SMALL];
    gw_msg_t small_msgs[GW_BATCH_SMALL];
    bool big; /* slices/msgs are allocated */

    size_t n_rejected;
    cm_buf_t errors; /* JSON array elements "{...},{...}" (no brackets) */
    size_t n_listed;
    uint64_t unknown_fields;
    uint64_t ip_dropped;
    char error[256]; /* why the whole body was refused */
} gw_batch_t;

void gw_batch_init(gw_batch_t *b, const gw_batch_opts_t *opts, gw_reject_fn *on_reject,
                   void *ud);
void gw_batch_free(gw_batch_t *b); /* NULL: no-op */

/*
 * Processes one body: gunzip (when gzip), split, and per event: size and
 * depth checks, JSON parse, SPEC §1 validation, enrichment, Avro encoding.
 * The body is borrowed. Returns the HTTP status the body alone deserves:
 *   0    at least one event is valid (msgs/n_msgs), others listed in errors
 *   400  unparsable body, or no valid event (error / errors say why)
 *   413  too many events, or too large after gunzip
 *   500  out of memory
 */
int gw_batch_process(gw_batch_t *b, const char *body, size_t len, bool gzip,
                     gw_body_format_t fmt, const gw_enrich_ctx_t *ectx);

/* Appends s to out as a JSON string body (no quotes added): '"' '\\' and
 * controls escaped, bytes >= 0x80 replaced by '?' so the reply is valid
 * UTF-8 whatever the client sent. At most `max` input bytes. */
cm_err_t gw_json_escape(cm_buf_t *out, const char *s, size_t max);

#endif
