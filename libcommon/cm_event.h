/*
 * cm_event.h: the clickstream event of SPEC §1, as a C struct, and its
 * validation.
 *
 * Strings of an event live in one arena owned by the event (`arena`), so that
 * a hot loop decoding millions of events reuses one allocation: call
 * cm_event_reset() between events and cm_event_free() at the end. Every
 * `const char *` field is NULL when absent, otherwise NUL-terminated and
 * pointing into the arena. The struct may be copied only with cm_event_copy().
 */
#ifndef CM_EVENT_H
#define CM_EVENT_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include <jansson.h>

#include "cm_buf.h"
#include "cm_err.h"

typedef enum cm_event_type {
    CM_EV_PAGE_VIEW = 0,
    CM_EV_PRODUCT_VIEW,
    CM_EV_ADD_TO_CART,
    CM_EV_PURCHASE,
    CM_EV_CLICK,
    CM_EV_CUSTOM, /* "custom:<name>" */
    CM_EV__COUNT
} cm_event_type_t;

/* Device types of SPEC §1. */
typedef enum cm_device_type {
    CM_DEV_NONE = 0, /* absent */
    CM_DEV_DESKTOP,
    CM_DEV_MOBILE,
    CM_DEV_TABLET,
    CM_DEV_BOT,
    CM_DEV_OTHER,
} cm_device_type_t;

typedef struct cm_event {
    const char *event_id;   /* required, 1..64 chars */
    int64_t ts_ms;          /* event time, ms since epoch (UTC) */
    int64_t received_at_ms; /* gateway time, ms; 0 until enriched */
    const char *user_id;    /* required, 1..128 chars */
    const char *event_type; /* as sent: "page_view", ..., "custom:<name>" */
    cm_event_type_t type;   /* parsed event_type */
    const char *page_url;   /* required for page_view; <= 2048 chars */
    const char *session_id; /* client's own, kept, not trusted */
    const char *referrer;
    const char *user_agent;
    const char *ip_address;
    /* geo */
    const char *geo_country; /* ISO 3166-1 alpha-2, upper case */
    const char *geo_city;
    /* device */
    const char *device_type; /* "desktop" | "mobile" | "tablet" | "bot" | "other" */
    const char *device_os;
    bool is_bot;
    /* metadata */
    const char *product_id;
    const char *category;
    int32_t quantity;     /* 0 when absent, else >= 1 */
    bool has_price;
    int64_t price_micros; /* price × 10^6, exact; >= 0 */

    /* Not part of the Avro record: counted by the gateway. */
    uint32_t unknown_fields;

    cm_buf_t arena; /* owns every string above */
} cm_event_t;

/* Limits of SPEC §1; defaults below, configurable by each service. */
typedef struct cm_event_limits {
    size_t max_event_bytes;     /* 32 KiB: serialized size of one event */
    size_t max_request_bytes;   /* 1 MiB */
    size_t max_request_events;  /* 1000 */
    int max_depth;              /* 16 */
    int64_t max_future_ms;      /* 5 min ahead of the gateway clock */
} cm_event_limits_t;

#define CM_EVENT_LIMITS_DEFAULT                                               \
    { 32 * 1024, 1024 * 1024, 1000, 16, 5 * 60 * 1000 }

/* A validation failure: which field and why, for the HTTP body and the DLQ. */
typedef struct cm_event_error {
    char field[64];    /* e.g. "timestamp", "metadata.price"; "" for the whole event */
    char message[160]; /* e.g. "must be RFC 3339 or epoch milliseconds" */
    const char *reason; /* static short code for metrics labels:
                           "missing_field", "bad_type", "too_long", "bad_value",
                           "future_timestamp", "too_large", "too_deep" */
} cm_event_error_t;

void cm_event_init(cm_event_t *ev);
void cm_event_reset(cm_event_t *ev); /* keeps the arena's memory */
void cm_event_free(cm_event_t *ev);  /* no-op on an initialised, empty event */
/* Deep copy: dst must be initialised; its previous content is dropped. */
cm_err_t cm_event_copy(cm_event_t *dst, const cm_event_t *src);
/* Copies `s` (n bytes, need not be NUL-terminated) into the arena.
 * Pointers previously returned stay valid only if the arena did not grow:
 * set string fields through cm_event_set_str, which rebases them. */
cm_err_t cm_event_set_str(cm_event_t *ev, const char **field, const char *s, size_t n);

/*
 * Validates one JSON event (SPEC §1) and fills `ev` (reset first).
 * `now_ms` is the gateway clock for the future-timestamp rule. Returns CM_OK,
 * or CM_ERR_INVALID with `err` naming the first failing field. Unknown
 * top-level fields are dropped and counted in ev->unknown_fields. The JSON is
 * borrowed; nothing of it is kept.
 */
cm_err_t cm_event_from_json(const json_t *obj, const cm_event_limits_t *lim,
                            int64_t now_ms, cm_event_t *ev, cm_event_error_t *err);

/* New JSON object of the event (SPEC §1 field names; timestamp as RFC 3339
 * with milliseconds, received_at as epoch ms). Caller owns the reference. */
json_t *cm_event_to_json(const cm_event_t *ev);

/* "page_view" -> CM_EV_PAGE_VIEW etc.; "custom:<name>" with 1..64 name chars
 * of [A-Za-z0-9_.-] -> CM_EV_CUSTOM; anything else -> -1. */
int cm_event_type_parse(const char *s);
const char *cm_event_type_name(cm_event_type_t t); /* "custom" for CM_EV_CUSTOM */

/*
 * Timestamps. cm_ts_parse_rfc3339 accepts "YYYY-MM-DDTHH:MM:SS[.frac](Z|±HH:MM)"
 * ('t'/'z'/' ' accepted as in RFC 3339 §5.6), fractions truncated to ms,
 * leap second 60 refused, years 1970..9999. cm_ts_format_rfc3339 writes
 * "YYYY-MM-DDTHH:MM:SS.mmmZ" (24 chars + NUL) into buf (>= 32 bytes).
 */
cm_err_t cm_ts_parse_rfc3339(const char *s, size_t n, int64_t *out_ms);
void cm_ts_format_rfc3339(int64_t ms, char *buf, size_t size);

/* Parses a decimal price ("12.5", "0", 12.5 as JSON real, 12 as JSON int)
 * into micros exactly (up to 6 decimals; more is an error). */
cm_err_t cm_price_parse(const char *s, size_t n, int64_t *out_micros);

#endif
