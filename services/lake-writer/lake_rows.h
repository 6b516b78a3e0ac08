/*
 * lake_rows.h: one Kafka record -> one table row, as an avro-c value of the
 * table's data-file schema (lake_schema.h). Strings are handed to avro-c
 * without a copy: the record must outlive the lw_avrofile_append() that
 * follows the fill.
 */
#ifndef LAKE_ROWS_H
#define LAKE_ROWS_H

#include <stdint.h>

#include <avro.h>

#include "cm_buf.h"
#include "cm_err.h"
#include "cm_event.h"
#include "cm_records.h"
#include "lake_schema.h"

/* What one row is made of. Exactly one of ev/session/window is set, except
 * for a late record that could not be decoded (all NULL, raw set). */
typedef struct lw_row {
    const cm_event_t *ev;
    const cm_session_t *session;
    const cm_window_result_t *window;
    int32_t partition; /* Kafka source */
    int64_t offset;
    const char *reason; /* late: the `reason` header, may be NULL */
    const void *raw;    /* late, undecodable: the value bytes */
    size_t raw_len;
} lw_row_t;

/* Event time of the row in microseconds (what partitions and bounds use);
 * 0 when the row has none (an undecodable late record). */
int64_t lw_row_ts_us(const lw_table_def_t *def, const lw_row_t *row);

/* Fills `rec` (a reset value of def's Avro schema). CM_ERR_INVALID when the
 * row lacks what the table needs (e.g. no event for events_raw). */
cm_err_t lw_row_fill(const lw_table_def_t *def, const lw_row_t *row, avro_value_t *rec);

/*
 * The hot path: appends the Avro binary of an events_raw row to out, byte
 * for byte what avro-c writes for lw_row_fill()'s value (a unit test checks
 * it on many rows). Hand-written because avro-c's generic value API was the
 * largest cost of the whole writer (perf: ~35% of CPU in avro_value_write
 * and the field setters at ~220k rows per CPU-second; see README.md,
 * "Benchmark"). CM_ERR_INVALID when the table has no fast path (the caller
 * uses lw_row_fill), or when the row has no event.
 */
cm_err_t lw_row_encode(const lw_table_def_t *def, const lw_row_t *row, cm_buf_t *out);

/* Decimal(18,6) micros as Avro fixed(8): big-endian two's complement. */
void lw_decimal_fixed8(int64_t micros, uint8_t out[8]);

#endif
