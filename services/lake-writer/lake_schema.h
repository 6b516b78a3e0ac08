/*
 * lake_schema.h: the lake's tables (SPEC §7) described once, as data, and
 * everything derived from that description: the Iceberg schema and partition
 * spec JSON of the table metadata, the Avro schema (with field-id,
 * element-id, key-id, value-id, logicalType, adjust-to-utc) of the data
 * files, and the partition values of a row.
 *
 * One description feeding every form keeps the ids of the metadata, of the
 * data files and of the manifests in agreement by construction.
 */
#ifndef LAKE_SCHEMA_H
#define LAKE_SCHEMA_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include <jansson.h>

#include "cm_buf.h"
#include "cm_err.h"

typedef enum lw_type {
    LW_T_STRING = 0,
    LW_T_INT,
    LW_T_LONG,
    LW_T_BOOL,
    LW_T_DOUBLE,
    LW_T_TIMESTAMPTZ,   /* Avro long, timestamp-micros, adjust-to-utc */
    LW_T_DECIMAL_18_6,  /* Avro fixed(8), decimal(18,6) */
    LW_T_BINARY,
    LW_T_STRUCT,        /* children */
    LW_T_MAP_STR_LONG,  /* map<string, long>: key_id, value_id */
    LW_T_LIST_STRUCT,   /* list<struct children>: element_id */
} lw_type_t;

typedef struct lw_field {
    int id;
    const char *name;
    lw_type_t type;
    bool required;
    const struct lw_field *children; /* STRUCT, LIST_STRUCT (the element) */
    size_t n_children;
    int key_id, value_id; /* MAP */
    int element_id;       /* LIST */
    const char *doc;
} lw_field_t;

typedef enum lw_transform {
    LW_TR_DAY = 0, /* days since epoch, Iceberg `date` */
    LW_TR_HOUR,    /* hours since epoch, Iceberg `int` */
} lw_transform_t;

typedef struct lw_part_field {
    int source_id;   /* a top-level timestamptz column */
    int field_id;    /* 1000, 1001, ... */
    const char *name;
    lw_transform_t transform;
} lw_part_field_t;

/* Which Kafka value a table is made of. */
typedef enum lw_source {
    LW_SRC_EVENTS = 0, /* clickstream.raw -> events_raw */
    LW_SRC_SESSIONS,   /* clickstream.sessions -> sessions */
    LW_SRC_METRICS,    /* clickstream.metrics -> metrics_* by window size */
    LW_SRC_LATE,       /* clickstream.late -> late_events */
} lw_source_t;

#define LW_MAX_PART_FIELDS 2

typedef struct lw_table_def {
    const char *name;
    lw_source_t source;
    int64_t window_size_ms; /* METRICS: the window size this table holds */
    const lw_field_t *fields;
    size_t n_fields;
    int last_column_id;
    const lw_part_field_t *part; /* may be empty: unpartitioned */
    size_t n_part;
    int ts_field_id; /* the event-time column (bounds in manifests) */
    const char *doc;
} lw_table_def_t;

/* The lake's tables: events_raw, sessions, metrics_1min, metrics_5min,
 * metrics_hourly, late_events. */
extern const lw_table_def_t lw_tables[];
extern const size_t lw_n_tables;

/* NULL when unknown. */
const lw_table_def_t *lw_table_def_find(const char *name);

/* {"type":"struct","schema-id":0,"fields":[...]} (new reference). */
json_t *lw_schema_iceberg_json(const lw_table_def_t *def);
/* {"spec-id":0,"fields":[{"name","transform","source-id","field-id"}]} */
json_t *lw_spec_json(const lw_table_def_t *def);
/* Just the "fields" array of the spec (manifest header `partition-spec`). */
json_t *lw_spec_fields_json(const lw_table_def_t *def);

/* Appends the data files' Avro schema (compact JSON text) to out. */
cm_err_t lw_schema_avro_text(const lw_table_def_t *def, cm_buf_t *out);

/* The Avro record of a partition tuple (for manifests), as compact JSON text
 * appended to out: {"type":"record","name":"r102","fields":[...]} with each
 * field optional, field-id = the partition field id. */
cm_err_t lw_schema_partition_avro_text(const lw_table_def_t *def, cm_buf_t *out);

/* Partition values. */
int32_t lw_transform_apply(lw_transform_t tr, int64_t ts_us);
/* "2024-01-15" (day) or "2024-01-15-10" (hour), as Iceberg's path form. */
void lw_transform_human(lw_transform_t tr, int32_t v, char *buf, size_t size);

#endif
