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

/*
 * Per-field caps of SPEC §1. Lengths are counted in Unicode code points (the
 * "chars" of the SPEC), so a field's byte length is at most 4x its cap.
 */
#define CM_EVENT_ID_MAX 64          /* event_id */
#define CM_EVENT_USER_ID_MAX 128    /* user_id */
#define CM_EVENT_URL_MAX 2048       /* page_url, referrer, user_agent */
#define CM_EVENT_SESSION_ID_MAX 128 /* session_id */
#define CM_EVENT_CITY_MAX 128       /* geo.city */
#define CM_EVENT_OS_MAX 64          /* device.os */
#define CM_EVENT_META_STR_MAX 256   /* metadata.product_id, metadata.category */
#define CM_EVENT_CUSTOM_NAME_MAX 64 /* the <name> of "custom:<name>" */
#define CM_EVENT_QUANTITY_MAX 1000000
/* 10^12 currency units. price x quantity can exceed int64: use checked or
 * 128-bit arithmetic when multiplying. */
#define CM_PRICE_MAX_MICROS 1000000000000000000LL
#define CM_TS_MAX_MS 253402300799999LL /* 9999-12-31T23:59:59.999Z */
/* Hard cap of one event's arena: far above what validated fields can use
 * (~30 KiB), so only a runaway cm_event_set_str() caller hits it. */
#define CM_EVENT_ARENA_MAX (256 * 1024)

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
/* Copies `s` (n bytes, need not be NUL-terminated; may point into the
 * arena itself) into the arena and points *field at the copy. When the arena
 * grows, every string field of `ev` that pointed into it is rebased, so
 * pointers read back from the struct's fields stay right; a pointer kept
 * elsewhere (a local copy) does not. CM_ERR_TOO_LARGE past
 * CM_EVENT_ARENA_MAX. Fields may also be set to static strings by hand. */
cm_err_t cm_event_set_str(cm_event_t *ev, const char **field, const char *s, size_t n);

/*
 * Validates one JSON event (SPEC §1) and fills `ev` (initialised; reset first).
 * `now_ms` is the gateway clock for the future-timestamp rule; `lim` NULL means
 * CM_EVENT_LIMITS_DEFAULT (max_event_bytes is the caller's to check, see
 * cm_event_json_size). Returns CM_OK, or CM_ERR_INVALID with `err` (may be
 * NULL) naming the first failing field, checked in a fixed order whatever the
 * key order: nesting depth, event_id, timestamp, user_id, event_type,
 * page_url, session_id, referrer, user_agent, ip_address, geo, device,
 * metadata, received_at, is_bot. CM_ERR_NOMEM is possible (arena growth).
 * On failure `ev` is left reset.
 *
 * - An optional field that is JSON null or "" is absent; a required one is
 *   missing_field when null/absent and bad_value when "".
 * - Unknown keys, top level or inside geo/device/metadata, are dropped and
 *   counted in ev->unknown_fields (not an error).
 * - geo.country is stored upper case, device.type in its lower-case form.
 * - `received_at` (integer ms) and `is_bot` (boolean) are read too, so that
 *   cm_event_to_json() output reads back; the gateway must overwrite both
 *   when enriching client input.
 * The JSON is borrowed; nothing of it is kept.
 */
cm_err_t cm_event_from_json(const json_t *obj, const cm_event_limits_t *lim,
                            int64_t now_ms, cm_event_t *ev, cm_event_error_t *err);

/* New JSON object of the event (SPEC §1 field names; timestamp as RFC 3339
 * with milliseconds, price as a JSON real, received_at as epoch ms when
 * non-zero, is_bot only when true; absent fields left out). Caller owns the
 * reference. NULL on allocation failure or a string that is not UTF-8. */
json_t *cm_event_to_json(const cm_event_t *ev);

/* Fills `err` (may be NULL) with a static `reason` code and a printf-style
 * message; the gateway uses it for checks made outside cm_event_from_json(),
 * e.g. cm_event_error_set(err, "", "too_large", "event is %zu bytes", n). */
void cm_event_error_set(cm_event_error_t *err, const char *field, const char *reason,
                        const char *fmt, ...) __attribute__((format(printf, 4, 5)));

/* Size of `obj` serialized as compact JSON (JSON_COMPACT), for the
 * max_event_bytes rule when the raw bytes of one event are not at hand (an
 * event inside a JSON array). 0 on error. Walks the whole value. */
size_t cm_event_json_size(const json_t *obj);

/* "page_view" -> CM_EV_PAGE_VIEW etc.; "custom:<name>" with 1..64 name chars
 * of [A-Za-z0-9_.-] -> CM_EV_CUSTOM; anything else -> -1. */
int cm_event_type_parse(const char *s);
const char *cm_event_type_name(cm_event_type_t t); /* "custom" for CM_EV_CUSTOM */

/* "desktop" ... "other" (ASCII case-insensitive, n bytes) -> CM_DEV_*; else -1. */
int cm_device_type_parse(const char *s, size_t n);
const char *cm_device_type_name(cm_device_type_t t); /* NULL for CM_DEV_NONE */

/*
 * Timestamps. cm_ts_parse_rfc3339 accepts "YYYY-MM-DDTHH:MM:SS[.frac](Z|±HH:MM)"
 * ('t'/'z'/' ' accepted as in RFC 3339 §5.6), fractions of any length
 * truncated to ms, offsets up to ±23:59, leap second 60 refused; exactly n
 * bytes are read. Returns CM_ERR_PARSE when malformed or not a calendar time
 * (Feb 29 of a non-leap year, hour 24...), CM_ERR_INVALID when the instant in
 * UTC is outside 1970-01-01T00:00:00.000Z..CM_TS_MAX_MS.
 * cm_ts_format_rfc3339 writes "YYYY-MM-DDTHH:MM:SS.mmmZ" (24 chars + NUL) into
 * buf (>= 32 bytes; a smaller one gets a truncated, terminated string).
 */
cm_err_t cm_ts_parse_rfc3339(const char *s, size_t n, int64_t *out_ms);
void cm_ts_format_rfc3339(int64_t ms, char *buf, size_t size);

/*
 * Parses a decimal price ("12.5", "0", "007.50") into micros exactly: digits,
 * optionally '.' and 1+ digits; no sign, exponent or spaces. More than 6
 * decimals is an error unless the extra ones are zeros ("1.5000000" is fine).
 * Returns CM_ERR_PARSE (malformed), CM_ERR_INVALID (negative or more than 6
 * significant decimals) or CM_ERR_TOO_LARGE (over CM_PRICE_MAX_MICROS).
 */
cm_err_t cm_price_parse(const char *s, size_t n, int64_t *out_micros);

/*
 * The same for a JSON real. A double cannot say how many decimals the client
 * wrote, so the rule is: the value rounded to 6 decimals must convert back to
 * the same double (12.5 and 0.1 pass, 12.3456789 fails). Above 2^53 micros
 * (~9e9 units) doubles are coarser than a micro and the rounding is accepted.
 */
cm_err_t cm_price_from_double(double d, int64_t *out_micros);

#endif
