/*
 * lake_schema.c: the table descriptions and the schema forms derived from
 * them. Field ids: top-level columns first (1..n), nested fields after, as
 * Iceberg itself assigns them; partition fields from 1000.
 */
#include "lake_schema.h"

#include <stdio.h>
#include <string.h>
#include <time.h>

#define NF(a) (sizeof(a) / sizeof((a)[0]))

/* ----------------------------------------------------------------- events */

static const lw_field_t ev_geo[] = {
    {19, "country", LW_T_STRING, false, NULL, 0, 0, 0, 0, "ISO 3166-1 alpha-2"},
    {20, "city", LW_T_STRING, false, NULL, 0, 0, 0, 0, NULL},
};
static const lw_field_t ev_device[] = {
    {21, "type", LW_T_STRING, false, NULL, 0, 0, 0, 0, "desktop|mobile|tablet|bot|other"},
    {22, "os", LW_T_STRING, false, NULL, 0, 0, 0, 0, NULL},
};
static const lw_field_t ev_meta[] = {
    {23, "product_id", LW_T_STRING, false, NULL, 0, 0, 0, 0, NULL},
    {24, "category", LW_T_STRING, false, NULL, 0, 0, 0, 0, NULL},
    {25, "quantity", LW_T_INT, false, NULL, 0, 0, 0, 0, NULL},
    {26, "price", LW_T_DECIMAL_18_6, false, NULL, 0, 0, 0, 0, "currency units"},
};

#define EVENT_COLUMNS(req)                                                              \
    {1, "event_id", LW_T_STRING, req, NULL, 0, 0, 0, 0, "client UUID, the dedupe key"}, \
    {2, "timestamp", LW_T_TIMESTAMPTZ, req, NULL, 0, 0, 0, 0, "event time"},           \
    {3, "received_at", LW_T_TIMESTAMPTZ, req, NULL, 0, 0, 0, 0, "gateway time"},       \
    {4, "user_id", LW_T_STRING, req, NULL, 0, 0, 0, 0, NULL},                          \
    {5, "event_type", LW_T_STRING, req, NULL, 0, 0, 0, 0, NULL},                       \
    {6, "page_url", LW_T_STRING, false, NULL, 0, 0, 0, 0, NULL},                       \
    {7, "session_id", LW_T_STRING, false, NULL, 0, 0, 0, 0, "the client's own"},       \
    {8, "referrer", LW_T_STRING, false, NULL, 0, 0, 0, 0, NULL},                       \
    {9, "user_agent", LW_T_STRING, false, NULL, 0, 0, 0, 0, NULL},                     \
    {10, "ip_address", LW_T_STRING, false, NULL, 0, 0, 0, 0, "anonymised"},            \
    {11, "geo", LW_T_STRUCT, false, ev_geo, NF(ev_geo), 0, 0, 0, NULL},                \
    {12, "device", LW_T_STRUCT, false, ev_device, NF(ev_device), 0, 0, 0, NULL},       \
    {13, "is_bot", LW_T_BOOL, req, NULL, 0, 0, 0, 0, NULL},                            \
    {14, "metadata", LW_T_STRUCT, false, ev_meta, NF(ev_meta), 0, 0, 0, NULL},         \
    {15, "kafka_partition", LW_T_INT, true, NULL, 0, 0, 0, 0, "source partition"},     \
    {16, "kafka_offset", LW_T_LONG, true, NULL, 0, 0, 0, 0, "source offset"}

static const lw_field_t events_fields[] = {EVENT_COLUMNS(true)};

/* late_events: the event columns are optional, so that an undecodable
 * record (reason "undecodable") still has a row: its bytes in raw_value. */
static const lw_field_t late_fields[] = {
    EVENT_COLUMNS(false),
    {17, "reason", LW_T_STRING, false, NULL, 0, 0, 0, 0, "late | undecodable | invalid"},
    {18, "raw_value", LW_T_BINARY, false, NULL, 0, 0, 0, 0,
     "the Kafka value when it could not be decoded"},
};

static const lw_part_field_t events_part[] = {
    {2, 1000, "timestamp_day", LW_TR_DAY},
    {2, 1001, "timestamp_hour", LW_TR_HOUR},
};

/* --------------------------------------------------------------- sessions */

static const lw_field_t session_fields[] = {
    {1, "session_id", LW_T_STRING, true, NULL, 0, 0, 0, 0, NULL},
    {2, "user_id", LW_T_STRING, true, NULL, 0, 0, 0, 0, NULL},
    {3, "start", LW_T_TIMESTAMPTZ, true, NULL, 0, 0, 0, 0, "first event time"},
    {4, "end", LW_T_TIMESTAMPTZ, true, NULL, 0, 0, 0, 0, "last event time"},
    {5, "duration_ms", LW_T_LONG, true, NULL, 0, 0, 0, 0, NULL},
    {6, "event_count", LW_T_LONG, true, NULL, 0, 0, 0, 0, NULL},
    {7, "page_views", LW_T_LONG, true, NULL, 0, 0, 0, 0, NULL},
    {8, "entry_url", LW_T_STRING, false, NULL, 0, 0, 0, 0, NULL},
    {9, "exit_url", LW_T_STRING, false, NULL, 0, 0, 0, 0, NULL},
    {10, "device_type", LW_T_STRING, false, NULL, 0, 0, 0, 0, NULL},
    {11, "country", LW_T_STRING, false, NULL, 0, 0, 0, 0, NULL},
    {12, "converted", LW_T_BOOL, true, NULL, 0, 0, 0, 0, NULL},
    {13, "revenue", LW_T_DECIMAL_18_6, true, NULL, 0, 0, 0, 0, NULL},
    {14, "revision", LW_T_INT, true, NULL, 0, 0, 0, 0, NULL},
    {15, "tombstone", LW_T_BOOL, true, NULL, 0, 0, 0, 0, NULL},
    {16, "kafka_partition", LW_T_INT, true, NULL, 0, 0, 0, 0, NULL},
    {17, "kafka_offset", LW_T_LONG, true, NULL, 0, 0, 0, 0, NULL},
};

static const lw_part_field_t session_part[] = {
    {3, 1000, "start_day", LW_TR_DAY},
};

/* ---------------------------------------------------------------- metrics */

static const lw_field_t url_count[] = {
    {23, "url", LW_T_STRING, true, NULL, 0, 0, 0, 0, NULL},
    {24, "count", LW_T_LONG, true, NULL, 0, 0, 0, 0, NULL},
};

static const lw_field_t metrics_fields[] = {
    {1, "window_size_ms", LW_T_LONG, true, NULL, 0, 0, 0, 0, NULL},
    {2, "window_start", LW_T_TIMESTAMPTZ, true, NULL, 0, 0, 0, 0, NULL},
    {3, "window_end", LW_T_TIMESTAMPTZ, true, NULL, 0, 0, 0, 0, "exclusive"},
    {4, "dimension", LW_T_STRING, true, NULL, 0, 0, 0, 0, NULL},
    {5, "revision", LW_T_INT, true, NULL, 0, 0, 0, 0, NULL},
    {6, "final", LW_T_BOOL, true, NULL, 0, 0, 0, 0, NULL},
    {7, "events", LW_T_LONG, true, NULL, 0, 0, 0, 0, NULL},
    {8, "page_views", LW_T_LONG, true, NULL, 0, 0, 0, 0, NULL},
    {9, "purchases", LW_T_LONG, true, NULL, 0, 0, 0, 0, NULL},
    {10, "revenue", LW_T_DECIMAL_18_6, true, NULL, 0, 0, 0, 0, NULL},
    {11, "unique_users", LW_T_LONG, true, NULL, 0, 0, 0, 0, NULL},
    {12, "counts", LW_T_MAP_STR_LONG, true, NULL, 0, 20, 21, 0, "dimension value -> events"},
    {13, "top_urls", LW_T_LIST_STRUCT, true, url_count, NF(url_count), 0, 0, 22, NULL},
    {14, "sessions_closed", LW_T_LONG, true, NULL, 0, 0, 0, 0, NULL},
    {15, "avg_session_ms", LW_T_DOUBLE, true, NULL, 0, 0, 0, 0, NULL},
    {16, "bounce_rate", LW_T_DOUBLE, true, NULL, 0, 0, 0, 0, NULL},
    {17, "conversion_rate", LW_T_DOUBLE, true, NULL, 0, 0, 0, 0, NULL},
    {18, "kafka_partition", LW_T_INT, true, NULL, 0, 0, 0, 0, NULL},
    {19, "kafka_offset", LW_T_LONG, true, NULL, 0, 0, 0, 0, NULL},
};

const lw_table_def_t lw_tables[] = {
    {"events_raw", LW_SRC_EVENTS, 0, events_fields, NF(events_fields), 26, events_part,
     NF(events_part), 2, "clickstream.raw, one row per event"},
    {"sessions", LW_SRC_SESSIONS, 0, session_fields, NF(session_fields), 17, session_part,
     NF(session_part), 3, "clickstream.sessions, one row per emission (revision)"},
    {"metrics_1min", LW_SRC_METRICS, 60000, metrics_fields, NF(metrics_fields), 24, NULL, 0,
     2, "1-minute window results, one row per emission"},
    {"metrics_5min", LW_SRC_METRICS, 300000, metrics_fields, NF(metrics_fields), 24, NULL, 0,
     2, "5-minute window results, one row per emission"},
    {"metrics_hourly", LW_SRC_METRICS, 3600000, metrics_fields, NF(metrics_fields), 24, NULL,
     0, 2, "1-hour window results, one row per emission"},
    {"late_events", LW_SRC_LATE, 0, late_fields, NF(late_fields), 26, NULL, 0, 2,
     "clickstream.late with the reason header"},
};
const size_t lw_n_tables = NF(lw_tables);

const lw_table_def_t *lw_table_def_find(const char *name)
{
    for (size_t i = 0; i < lw_n_tables; i++)
        if (strcmp(lw_tables[i].name, name) == 0)
            return &lw_tables[i];
    return NULL;
}

/* --------------------------------------------------------- Iceberg schema */

static json_t *ice_type(const lw_field_t *f);

static json_t *ice_struct(const lw_field_t *children, size_t n)
{
    json_t *fields = json_array();
    for (size_t i = 0; i < n; i++) {
        const lw_field_t *c = &children[i];
        json_t *o = json_pack("{s:i, s:s, s:b, s:o}", "id", c->id, "name", c->name,
                              "required", c->required, "type", ice_type(c));
        if (c->doc)
            json_object_set_new(o, "doc", json_string(c->doc));
        json_array_append_new(fields, o);
    }
    return json_pack("{s:s, s:o}", "type", "struct", "fields", fields);
}

static json_t *ice_type(const lw_field_t *f)
{
    switch (f->type) {
    case LW_T_STRING: return json_string("string");
    case LW_T_INT: return json_string("int");
    case LW_T_LONG: return json_string("long");
    case LW_T_BOOL: return json_string("boolean");
    case LW_T_DOUBLE: return json_string("double");
    case LW_T_TIMESTAMPTZ: return json_string("timestamptz");
    case LW_T_DECIMAL_18_6: return json_string("decimal(18, 6)");
    case LW_T_BINARY: return json_string("binary");
    case LW_T_STRUCT: return ice_struct(f->children, f->n_children);
    case LW_T_MAP_STR_LONG:
        return json_pack("{s:s, s:i, s:s, s:i, s:s, s:b}", "type", "map", "key-id",
                         f->key_id, "key", "string", "value-id", f->value_id, "value",
                         "long", "value-required", 1);
    case LW_T_LIST_STRUCT:
        return json_pack("{s:s, s:i, s:o, s:b}", "type", "list", "element-id",
                         f->element_id, "element", ice_struct(f->children, f->n_children),
                         "element-required", 1);
    }
    return json_null();
}

json_t *lw_schema_iceberg_json(const lw_table_def_t *def)
{
    json_t *s = ice_struct(def->fields, def->n_fields);
    json_object_set_new(s, "schema-id", json_integer(0));
    json_object_set_new(s, "identifier-field-ids", json_array());
    return s;
}

json_t *lw_spec_fields_json(const lw_table_def_t *def)
{
    json_t *fields = json_array();
    for (size_t i = 0; i < def->n_part; i++) {
        const lw_part_field_t *p = &def->part[i];
        json_array_append_new(fields,
                              json_pack("{s:s, s:s, s:i, s:i}", "name", p->name, "transform",
                                        p->transform == LW_TR_DAY ? "day" : "hour",
                                        "source-id", p->source_id, "field-id", p->field_id));
    }
    return fields;
}

json_t *lw_spec_json(const lw_table_def_t *def)
{
    return json_pack("{s:i, s:o}", "spec-id", 0, "fields", lw_spec_fields_json(def));
}

/* ------------------------------------------------------------ Avro schema */

static json_t *avro_type(const lw_field_t *f);

static json_t *avro_record(const char *name, const lw_field_t *children, size_t n)
{
    json_t *fields = json_array();
    for (size_t i = 0; i < n; i++) {
        const lw_field_t *c = &children[i];
        json_t *t = avro_type(c);
        json_t *o;
        if (c->required) {
            o = json_pack("{s:s, s:o, s:i}", "name", c->name, "type", t, "field-id", c->id);
        } else {
            o = json_pack("{s:s, s:[s,o], s:n, s:i}", "name", c->name, "type", "null", t,
                          "default", "field-id", c->id);
        }
        if (c->doc)
            json_object_set_new(o, "doc", json_string(c->doc));
        json_array_append_new(fields, o);
    }
    return json_pack("{s:s, s:s, s:o}", "type", "record", "name", name, "fields", fields);
}

static json_t *avro_type(const lw_field_t *f)
{
    char name[32];
    switch (f->type) {
    case LW_T_STRING: return json_string("string");
    case LW_T_INT: return json_string("int");
    case LW_T_LONG: return json_string("long");
    case LW_T_BOOL: return json_string("boolean");
    case LW_T_DOUBLE: return json_string("double");
    case LW_T_BINARY: return json_string("bytes");
    case LW_T_TIMESTAMPTZ:
        return json_pack("{s:s, s:s, s:b}", "type", "long", "logicalType", "timestamp-micros",
                         "adjust-to-utc", 1);
    case LW_T_DECIMAL_18_6:
        /* A fixed needs a name unique in the schema: one per field id. */
        snprintf(name, sizeof(name), "decimal_18_6_%d", f->id);
        return json_pack("{s:s, s:s, s:i, s:s, s:i, s:i}", "type", "fixed", "name", name,
                         "size", 8, "logicalType", "decimal", "precision", 18, "scale", 6);
    case LW_T_STRUCT:
        snprintf(name, sizeof(name), "r%d", f->id);
        return avro_record(name, f->children, f->n_children);
    case LW_T_MAP_STR_LONG:
        return json_pack("{s:s, s:s, s:i, s:i}", "type", "map", "values", "long", "key-id",
                         f->key_id, "value-id", f->value_id);
    case LW_T_LIST_STRUCT:
        snprintf(name, sizeof(name), "r%d", f->element_id);
        return json_pack("{s:s, s:o, s:i}", "type", "array", "items",
                         avro_record(name, f->children, f->n_children), "element-id",
                         f->element_id);
    }
    return json_null();
}

static cm_err_t append_json(json_t *j, cm_buf_t *out)
{
    if (!j)
        return CM_ERR_NOMEM;
    char *s = json_dumps(j, JSON_COMPACT | JSON_PRESERVE_ORDER);
    json_decref(j);
    if (!s)
        return CM_ERR_NOMEM;
    cm_err_t err = cm_buf_append_str(out, s);
    free(s);
    return err;
}

cm_err_t lw_schema_avro_text(const lw_table_def_t *def, cm_buf_t *out)
{
    return append_json(avro_record("table", def->fields, def->n_fields), out);
}

cm_err_t lw_schema_partition_avro_text(const lw_table_def_t *def, cm_buf_t *out)
{
    json_t *fields = json_array();
    for (size_t i = 0; i < def->n_part; i++) {
        const lw_part_field_t *p = &def->part[i];
        json_t *t = p->transform == LW_TR_DAY
                        ? json_pack("{s:s, s:s}", "type", "int", "logicalType", "date")
                        : json_string("int");
        json_array_append_new(fields, json_pack("{s:s, s:[s,o], s:n, s:i}", "name", p->name,
                                                "type", "null", t, "default", "field-id",
                                                p->field_id));
    }
    return append_json(json_pack("{s:s, s:s, s:o}", "type", "record", "name", "r102",
                                 "fields", fields),
                       out);
}

/* ------------------------------------------------------------- transforms */

static int64_t floor_div(int64_t a, int64_t b)
{
    int64_t q = a / b;
    return (a % b != 0 && ((a < 0) != (b < 0))) ? q - 1 : q;
}

int32_t lw_transform_apply(lw_transform_t tr, int64_t ts_us)
{
    return (int32_t)floor_div(ts_us, tr == LW_TR_DAY ? INT64_C(86400000000)
                                                     : INT64_C(3600000000));
}

void lw_transform_human(lw_transform_t tr, int32_t v, char *buf, size_t size)
{
    time_t t = (time_t)v * (tr == LW_TR_DAY ? 86400 : 3600);
    struct tm tm;
    gmtime_r(&t, &tm);
    if (tr == LW_TR_DAY)
        snprintf(buf, size, "%04d-%02d-%02d", tm.tm_year + 1900, tm.tm_mon + 1, tm.tm_mday);
    else
        snprintf(buf, size, "%04d-%02d-%02d-%02d", tm.tm_year + 1900, tm.tm_mon + 1,
                 tm.tm_mday, tm.tm_hour);
}
