/*
 * cm_avro.h: the Avro codec of the three Kafka values of SPEC §2: the event
 * (clickstream.raw, clickstream.late), the session (clickstream.sessions) and
 * the window result (clickstream.metrics).
 *
 * Wire format (Confluent): byte 0 = magic 0, bytes 1..4 = schema id, big
 * endian, then the Avro binary body of the record. The schemas are the .avsc
 * files of schemas/, embedded here byte for byte (a unit test checks it), so a
 * binary needs no file at run time. avro-c parses them (cm_avro_schema_parse)
 * and is the reference the unit tests check this codec against; the encoders
 * and decoders themselves are hand-written for these fixed schemas because
 * avro-c's generic value API is several times slower (numbers in cm_avro.c).
 *
 * Decoding is safe on any bytes (truncated, flipped, hostile): it returns
 * CM_ERR_PARSE with a reason, never crashes, never allocates more than the
 * input's size in the record's arena.
 */
#ifndef CM_AVRO_H
#define CM_AVRO_H

#include <stddef.h>
#include <stdint.h>

#include <avro.h>

#include "cm_buf.h"
#include "cm_err.h"
#include "cm_event.h"
#include "cm_records.h"

typedef struct cm_registry cm_registry_t; /* cm_registry.h */

typedef enum cm_schema_kind {
    CM_SCHEMA_EVENT = 0,     /* io.clickstream.ClickEvent, schemas/event.avsc */
    CM_SCHEMA_SESSION,       /* io.clickstream.Session, schemas/session.avsc */
    CM_SCHEMA_WINDOW_RESULT, /* io.clickstream.WindowResult, schemas/window_result.avsc */
    CM_SCHEMA__COUNT
} cm_schema_kind_t;

/* Built-in schema ids, used when no Schema Registry is configured. */
#define CM_SCHEMA_ID_EVENT 1u
#define CM_SCHEMA_ID_SESSION 2u
#define CM_SCHEMA_ID_WINDOW_RESULT 3u

#define CM_AVRO_MAGIC 0
#define CM_AVRO_HEADER_SIZE 5

/* Largest |value| of a decimal(18,6), in micros: 10^18 - 1. */
#define CM_DECIMAL_MAX_MICROS INT64_C(999999999999999999)

/* Static strings; NULL for an out-of-range kind. */
const char *cm_schema_json(cm_schema_kind_t kind);      /* the .avsc text */
const char *cm_schema_fullname(cm_schema_kind_t kind);  /* "io.clickstream.ClickEvent" */
const char *cm_schema_kind_name(cm_schema_kind_t kind); /* "event", "session", "window_result" */
const char *cm_schema_file(cm_schema_kind_t kind);      /* "event.avsc", ... */
uint32_t cm_schema_builtin_id(cm_schema_kind_t kind);   /* 1, 2, 3; 0 if out of range */

/*
 * Parses the embedded schema with avro-c. On CM_OK the caller owns *out
 * (avro_schema_decref). On failure fills errstr and returns CM_ERR_PARSE.
 */
cm_err_t cm_avro_schema_parse(cm_schema_kind_t kind, avro_schema_t *out, char *errstr,
                              size_t errstr_size);

/* Why a decode failed: `reason` is a static short code for metric labels and
 * the `late` topic's reason header; `message` says where and what. */
typedef struct cm_avro_error {
    const char *reason; /* "truncated", "bad_magic", "unknown_schema",
                           "wrong_schema", "bad_varint", "bad_length",
                           "bad_union", "bad_value", "trailing_bytes",
                           "too_large", "registry", "nomem" */
    char message[160];
} cm_avro_error_t;

/* Reads the 5-byte header: CM_OK and *schema_id, or CM_ERR_PARSE
 * ("truncated", "bad_magic"). `err` may be NULL. */
cm_err_t cm_avro_peek_schema_id(const void *data, size_t len, uint32_t *schema_id,
                                cm_avro_error_t *err);

/*
 * Encoders: APPEND header + body to `out` (the caller resets it between
 * records). The record is borrowed. Returns CM_OK; CM_ERR_INVALID when the
 * record cannot be written (a required string is NULL, a decimal outside
 * decimal(18,6), quantity < 0); CM_ERR_TOO_LARGE past out's cap; CM_ERR_NOMEM.
 * On error out->len is back to what it was.
 *
 * `schema_id` is the id to stamp: cm_registry_id() for the topic's subject, or
 * cm_schema_builtin_id(). The encoder does not check it.
 *
 * Event mapping (cm_event_t -> ClickEvent): geo is written iff geo_country or
 * geo_city is set, device iff device_type or device_os, metadata iff
 * product_id, category, quantity (!= 0) or has_price; quantity 0 is written as
 * null. `type` and `unknown_fields` are not written (type is re-derived from
 * event_type on decode).
 */
cm_err_t cm_avro_encode_event(const cm_event_t *ev, uint32_t schema_id, cm_buf_t *out);
cm_err_t cm_avro_encode_session(const cm_session_t *s, uint32_t schema_id, cm_buf_t *out);
cm_err_t cm_avro_encode_window_result(const cm_window_result_t *w, uint32_t schema_id,
                                      cm_buf_t *out);

/*
 * Decoders. `out` must be initialised (cm_event_init, cm_session_init,
 * cm_window_result_init); it is reset first, filled on success, and left reset
 * (still to be freed) on failure. Strings of the result point into out's
 * arena. The input is borrowed, nothing of it is kept.
 *
 * The schema id must map to the decoder's kind: with reg == NULL (or a
 * registry in built-in mode) only the built-in ids; otherwise what
 * cm_registry_kind() says (see cm_registry.h). *schema_id (may be NULL) gets
 * the id read, also on most failures (0 when the header was unreadable).
 *
 * Returns CM_OK;
 *   CM_ERR_PARSE  the bytes are unusable (a DLQ / `undecodable` case): bad
 *                 header, unknown or other-kind schema id, malformed body,
 *                 trailing bytes, a value the C struct cannot hold (a string
 *                 with a NUL byte, a decimal outside decimal(18,6), an
 *                 unknown event_type, quantity <= 0 or a negative price);
 *   CM_ERR_IO     the registry could not be asked about an unknown id: not
 *                 the message's fault, retry later;
 *   CM_ERR_NOMEM.
 * `err` (may be NULL) gets the reason on failure. SPEC §1 validation (lengths,
 * url rules) is not repeated here: the gateway did it before producing.
 */
cm_err_t cm_avro_decode_event(cm_registry_t *reg, const void *data, size_t len,
                              cm_event_t *out, uint32_t *schema_id, cm_avro_error_t *err);
cm_err_t cm_avro_decode_session(cm_registry_t *reg, const void *data, size_t len,
                                cm_session_t *out, uint32_t *schema_id,
                                cm_avro_error_t *err);
cm_err_t cm_avro_decode_window_result(cm_registry_t *reg, const void *data, size_t len,
                                      cm_window_result_t *out, uint32_t *schema_id,
                                      cm_avro_error_t *err);

/* Decimal(18,6) bytes helpers, exposed for the lake writer and the tests.
 * encode: minimal big-endian two's complement into buf (>= 8 bytes), returns
 * the length (1..8). decode: n bytes (0..16; sign extension beyond 8 bytes is
 * allowed) -> CM_OK or CM_ERR_PARSE when it does not fit int64. */
size_t cm_avro_decimal_encode(int64_t micros, uint8_t *buf);
cm_err_t cm_avro_decimal_decode(const uint8_t *p, size_t n, int64_t *micros);

#endif
