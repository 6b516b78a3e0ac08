/*
 * lake_manifest.c: manifests and manifest lists (see lake_manifest.h).
 *
 * The Avro schemas are the Iceberg spec's, with every field id. Maps with
 * non-string keys (lower_bounds, ...) are Avro arrays of key/value records
 * with logicalType "map", as the spec's Appendix A says.
 */
#include "lake_manifest.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <avro.h>
#include <jansson.h>

#include "lake_avrofile.h"

#define OPT(t) "[\"null\"," t "]"

/* The manifest_entry schema; %s = the partition record (r102). */
static const char MANIFEST_SCHEMA_FMT[] =
    "{\"type\":\"record\",\"name\":\"manifest_entry\",\"fields\":["
    "{\"name\":\"status\",\"type\":\"int\",\"field-id\":0},"
    "{\"name\":\"snapshot_id\",\"type\":" OPT("\"long\"") ",\"default\":null,\"field-id\":1},"
    "{\"name\":\"sequence_number\",\"type\":" OPT("\"long\"") ",\"default\":null,\"field-id\":3},"
    "{\"name\":\"file_sequence_number\",\"type\":" OPT("\"long\"") ",\"default\":null,\"field-id\":4},"
    "{\"name\":\"data_file\",\"field-id\":2,\"type\":{\"type\":\"record\",\"name\":\"r2\",\"fields\":["
    "{\"name\":\"content\",\"type\":\"int\",\"field-id\":134,\"doc\":\"Contents of the file: 0=data, 1=position deletes, 2=equality deletes\"},"
    "{\"name\":\"file_path\",\"type\":\"string\",\"field-id\":100,\"doc\":\"Location URI with FS scheme\"},"
    "{\"name\":\"file_format\",\"type\":\"string\",\"field-id\":101,\"doc\":\"File format name: avro, orc, or parquet\"},"
    "{\"name\":\"partition\",\"type\":%s,\"field-id\":102,\"doc\":\"Partition data tuple, schema based on the partition spec\"},"
    "{\"name\":\"record_count\",\"type\":\"long\",\"field-id\":103,\"doc\":\"Number of records in the file\"},"
    "{\"name\":\"file_size_in_bytes\",\"type\":\"long\",\"field-id\":104,\"doc\":\"Total file size in bytes\"},"
    "{\"name\":\"column_sizes\",\"type\":" OPT("{\"type\":\"array\",\"items\":{\"type\":\"record\",\"name\":\"k117_v118\",\"fields\":[{\"name\":\"key\",\"type\":\"int\",\"field-id\":117},{\"name\":\"value\",\"type\":\"long\",\"field-id\":118}]},\"logicalType\":\"map\"}") ",\"default\":null,\"field-id\":108},"
    "{\"name\":\"value_counts\",\"type\":" OPT("{\"type\":\"array\",\"items\":{\"type\":\"record\",\"name\":\"k119_v120\",\"fields\":[{\"name\":\"key\",\"type\":\"int\",\"field-id\":119},{\"name\":\"value\",\"type\":\"long\",\"field-id\":120}]},\"logicalType\":\"map\"}") ",\"default\":null,\"field-id\":109},"
    "{\"name\":\"null_value_counts\",\"type\":" OPT("{\"type\":\"array\",\"items\":{\"type\":\"record\",\"name\":\"k121_v122\",\"fields\":[{\"name\":\"key\",\"type\":\"int\",\"field-id\":121},{\"name\":\"value\",\"type\":\"long\",\"field-id\":122}]},\"logicalType\":\"map\"}") ",\"default\":null,\"field-id\":110},"
    "{\"name\":\"nan_value_counts\",\"type\":" OPT("{\"type\":\"array\",\"items\":{\"type\":\"record\",\"name\":\"k138_v139\",\"fields\":[{\"name\":\"key\",\"type\":\"int\",\"field-id\":138},{\"name\":\"value\",\"type\":\"long\",\"field-id\":139}]},\"logicalType\":\"map\"}") ",\"default\":null,\"field-id\":137},"
    "{\"name\":\"lower_bounds\",\"type\":" OPT("{\"type\":\"array\",\"items\":{\"type\":\"record\",\"name\":\"k126_v127\",\"fields\":[{\"name\":\"key\",\"type\":\"int\",\"field-id\":126},{\"name\":\"value\",\"type\":\"bytes\",\"field-id\":127}]},\"logicalType\":\"map\"}") ",\"default\":null,\"field-id\":125},"
    "{\"name\":\"upper_bounds\",\"type\":" OPT("{\"type\":\"array\",\"items\":{\"type\":\"record\",\"name\":\"k129_v130\",\"fields\":[{\"name\":\"key\",\"type\":\"int\",\"field-id\":129},{\"name\":\"value\",\"type\":\"bytes\",\"field-id\":130}]},\"logicalType\":\"map\"}") ",\"default\":null,\"field-id\":128},"
    "{\"name\":\"key_metadata\",\"type\":" OPT("\"bytes\"") ",\"default\":null,\"field-id\":131},"
    "{\"name\":\"split_offsets\",\"type\":" OPT("{\"type\":\"array\",\"items\":\"long\",\"element-id\":133}") ",\"default\":null,\"field-id\":132},"
    "{\"name\":\"equality_ids\",\"type\":" OPT("{\"type\":\"array\",\"items\":\"int\",\"element-id\":136}") ",\"default\":null,\"field-id\":135},"
    "{\"name\":\"sort_order_id\",\"type\":" OPT("\"int\"") ",\"default\":null,\"field-id\":140}"
    "]}}]}";

static const char MANIFEST_LIST_SCHEMA[] =
    "{\"type\":\"record\",\"name\":\"manifest_file\",\"fields\":["
    "{\"name\":\"manifest_path\",\"type\":\"string\",\"field-id\":500,\"doc\":\"Location URI with FS scheme\"},"
    "{\"name\":\"manifest_length\",\"type\":\"long\",\"field-id\":501,\"doc\":\"Total file size in bytes\"},"
    "{\"name\":\"partition_spec_id\",\"type\":\"int\",\"field-id\":502,\"doc\":\"Spec ID used to write\"},"
    "{\"name\":\"content\",\"type\":\"int\",\"field-id\":517,\"doc\":\"Contents of the manifest: 0=data, 1=deletes\"},"
    "{\"name\":\"sequence_number\",\"type\":\"long\",\"field-id\":515,\"doc\":\"Sequence number when the manifest was added\"},"
    "{\"name\":\"min_sequence_number\",\"type\":\"long\",\"field-id\":516,\"doc\":\"Lowest sequence number in the manifest\"},"
    "{\"name\":\"added_snapshot_id\",\"type\":\"long\",\"field-id\":503,\"doc\":\"Snapshot ID that added the manifest\"},"
    "{\"name\":\"added_files_count\",\"type\":\"int\",\"field-id\":504,\"doc\":\"Added entry count\"},"
    "{\"name\":\"existing_files_count\",\"type\":\"int\",\"field-id\":505,\"doc\":\"Existing entry count\"},"
    "{\"name\":\"deleted_files_count\",\"type\":\"int\",\"field-id\":506,\"doc\":\"Deleted entry count\"},"
    "{\"name\":\"added_rows_count\",\"type\":\"long\",\"field-id\":512,\"doc\":\"Added rows count\"},"
    "{\"name\":\"existing_rows_count\",\"type\":\"long\",\"field-id\":513,\"doc\":\"Existing rows count\"},"
    "{\"name\":\"deleted_rows_count\",\"type\":\"long\",\"field-id\":514,\"doc\":\"Deleted rows count\"},"
    "{\"name\":\"partitions\",\"type\":" OPT("{\"type\":\"array\",\"items\":{\"type\":\"record\",\"name\":\"r508\",\"fields\":["
        "{\"name\":\"contains_null\",\"type\":\"boolean\",\"field-id\":509,\"doc\":\"True if any file has a null partition value\"},"
        "{\"name\":\"contains_nan\",\"type\":" OPT("\"boolean\"") ",\"default\":null,\"field-id\":518,\"doc\":\"True if any file has a nan partition value\"},"
        "{\"name\":\"lower_bound\",\"type\":" OPT("\"bytes\"") ",\"default\":null,\"field-id\":510,\"doc\":\"Partition lower bound for all files\"},"
        "{\"name\":\"upper_bound\",\"type\":" OPT("\"bytes\"") ",\"default\":null,\"field-id\":511,\"doc\":\"Partition upper bound for all files\"}"
    "]},\"element-id\":508}") ",\"default\":null,\"field-id\":507,\"doc\":\"Summary for each partition\"},"
    "{\"name\":\"key_metadata\",\"type\":" OPT("\"bytes\"") ",\"default\":null,\"field-id\":519,\"doc\":\"Encryption key metadata blob\"}"
    "]}";

static void le32(int32_t v, uint8_t out[4])
{
    uint32_t u = (uint32_t)v;
    for (int i = 0; i < 4; i++)
        out[i] = (uint8_t)(u >> (8 * i));
}

static void le64(int64_t v, uint8_t out[8])
{
    uint64_t u = (uint64_t)v;
    for (int i = 0; i < 8; i++)
        out[i] = (uint8_t)(u >> (8 * i));
}

static void set_null_branch(avro_value_t *rec, size_t idx)
{
    avro_value_t f, b;
    avro_value_get_by_index(rec, idx, &f, NULL);
    avro_value_set_branch(&f, 0, &b);
    avro_value_set_null(&b);
}

static int set_some(avro_value_t *rec, size_t idx, avro_value_t *out)
{
    avro_value_t f;
    if (avro_value_get_by_index(rec, idx, &f, NULL))
        return -1;
    return avro_value_set_branch(&f, 1, out);
}

/* Adds one {key: field id, value: bytes} item to a map-as-array. */
static void bound_item(avro_value_t *arr, int key, const void *p, size_t n)
{
    avro_value_t item, k, v;
    if (avro_value_append(arr, &item, NULL))
        return;
    avro_value_get_by_index(&item, 0, &k, NULL);
    avro_value_set_int(&k, key);
    avro_value_get_by_index(&item, 1, &v, NULL);
    avro_value_set_bytes(&v, (void *)p, n);
}

cm_err_t lw_manifest_write(const lw_table_def_t *def, const lw_datafile_t *files, size_t n,
                           int codec, cm_buf_t *out, lw_manifest_file_t *mf, char *errstr,
                           size_t errstr_size)
{
    cm_err_t err = CM_OK;
    cm_buf_t part, schema;
    cm_buf_init(&part, 0);
    cm_buf_init(&schema, 0);
    char *ice = NULL, *spec = NULL;
    lw_avrofile_t *w = NULL;

    err = lw_schema_partition_avro_text(def, &part);
    if (!err)
        err = cm_buf_printf(&schema, MANIFEST_SCHEMA_FMT, cm_buf_cstr(&part));
    json_t *js = lw_schema_iceberg_json(def), *jp = lw_spec_fields_json(def);
    ice = json_dumps(js, JSON_COMPACT | JSON_PRESERVE_ORDER);
    spec = json_dumps(jp, JSON_COMPACT | JSON_PRESERVE_ORDER);
    json_decref(js);
    json_decref(jp);
    if (err || !ice || !spec) {
        snprintf(errstr, errstr_size, "manifest schema: out of memory");
        err = err ? err : CM_ERR_NOMEM;
        goto out;
    }
    const lw_avro_meta_t meta[] = {
        {"schema", ice, strlen(ice)},
        {"schema-id", "0", 1},
        {"partition-spec", spec, strlen(spec)},
        {"partition-spec-id", "0", 1},
        {"format-version", "2", 1},
        {"content", "data", 4},
    };
    lw_avrofile_opts_t o = {.schema_json = cm_buf_cstr(&schema),
                            .meta = meta,
                            .n_meta = sizeof(meta) / sizeof(meta[0]),
                            .codec = (lw_codec_t)codec,
                            .fd = -1};
    w = lw_avrofile_new(&o, errstr, errstr_size);
    if (!w) {
        err = CM_ERR_INVALID;
        goto out;
    }
    lw_manifest_file_t sum;
    memset(&sum, 0, sizeof(sum));
    sum.n_parts = def->n_part;
    for (size_t i = 0; i < n; i++) {
        const lw_datafile_t *f = &files[i];
        avro_value_t *e = lw_avrofile_value(w);
        avro_value_t v, df;
        avro_value_get_by_index(e, 0, &v, NULL);
        avro_value_set_int(&v, 1); /* ADDED */
        set_null_branch(e, 1);     /* snapshot_id: inherited */
        set_null_branch(e, 2);     /* sequence_number: inherited */
        set_null_branch(e, 3);     /* file_sequence_number: inherited */
        avro_value_get_by_index(e, 4, &df, NULL);
        avro_value_get_by_index(&df, 0, &v, NULL);
        avro_value_set_int(&v, 0); /* DATA */
        avro_value_get_by_index(&df, 1, &v, NULL);
        avro_value_set_string(&v, f->uri);
        avro_value_get_by_index(&df, 2, &v, NULL);
        avro_value_set_string(&v, "AVRO");
        avro_value_t pr;
        avro_value_get_by_index(&df, 3, &pr, NULL);
        for (size_t p = 0; p < def->n_part; p++) {
            avro_value_t pv;
            set_some(&pr, p, &pv);
            avro_value_set_int(&pv, f->part[p]);
            lw_part_summary_t *s = &sum.parts[p];
            if (!s->has_bounds || f->part[p] < s->lower)
                s->lower = f->part[p];
            if (!s->has_bounds || f->part[p] > s->upper)
                s->upper = f->part[p];
            s->has_bounds = true;
        }
        avro_value_get_by_index(&df, 4, &v, NULL);
        avro_value_set_long(&v, f->record_count);
        avro_value_get_by_index(&df, 5, &v, NULL);
        avro_value_set_long(&v, f->file_size);
        for (size_t k = 6; k <= 9; k++)
            set_null_branch(&df, k);
        uint8_t lo[8], hi[8];
        if (f->has_ts && def->ts_field_id > 0) {
            avro_value_t arr;
            le64(f->ts_min, lo);
            le64(f->ts_max, hi);
            set_some(&df, 10, &arr);
            bound_item(&arr, def->ts_field_id, lo, 8);
            set_some(&df, 11, &arr);
            bound_item(&arr, def->ts_field_id, hi, 8);
        } else {
            set_null_branch(&df, 10);
            set_null_branch(&df, 11);
        }
        for (size_t k = 12; k <= 15; k++)
            set_null_branch(&df, k);
        err = lw_avrofile_append(w, e);
        if (err) {
            snprintf(errstr, errstr_size, "manifest entry %zu: %s", i, avro_strerror());
            goto out;
        }
        sum.added_files++;
        sum.added_rows += f->record_count;
    }
    err = lw_avrofile_finish(w, out, NULL);
    w = NULL;
    if (err) {
        snprintf(errstr, errstr_size, "manifest: %s", cm_err_str(err));
        goto out;
    }
    if (mf) {
        sum.spec_id = 0;
        sum.content = 0;
        *mf = sum;
    }
out:
    lw_avrofile_destroy(w);
    free(ice);
    free(spec);
    cm_buf_free(&part);
    cm_buf_free(&schema);
    return err;
}

cm_err_t lw_manifest_list_write(const lw_manifest_file_t *mfs, size_t n, int64_t snapshot_id,
                                int64_t parent_id, int64_t seq, int codec, cm_buf_t *out,
                                char *errstr, size_t errstr_size)
{
    char sid[24], pid[24], sq[24];
    snprintf(sid, sizeof(sid), "%lld", (long long)snapshot_id);
    snprintf(pid, sizeof(pid), "%lld", (long long)parent_id);
    snprintf(sq, sizeof(sq), "%lld", (long long)seq);
    lw_avro_meta_t meta[4];
    size_t nm = 0;
    meta[nm++] = (lw_avro_meta_t){"snapshot-id", sid, strlen(sid)};
    if (parent_id >= 0)
        meta[nm++] = (lw_avro_meta_t){"parent-snapshot-id", pid, strlen(pid)};
    meta[nm++] = (lw_avro_meta_t){"sequence-number", sq, strlen(sq)};
    meta[nm++] = (lw_avro_meta_t){"format-version", "2", 1};
    lw_avrofile_opts_t o = {.schema_json = MANIFEST_LIST_SCHEMA,
                            .meta = meta,
                            .n_meta = nm,
                            .codec = (lw_codec_t)codec,
                            .fd = -1};
    lw_avrofile_t *w = lw_avrofile_new(&o, errstr, errstr_size);
    if (!w)
        return CM_ERR_INVALID;
    for (size_t i = 0; i < n; i++) {
        const lw_manifest_file_t *m = &mfs[i];
        avro_value_t *e = lw_avrofile_value(w);
        avro_value_t v;
        avro_value_get_by_index(e, 0, &v, NULL);
        avro_value_set_string(&v, m->path);
        avro_value_get_by_index(e, 1, &v, NULL);
        avro_value_set_long(&v, m->length);
        avro_value_get_by_index(e, 2, &v, NULL);
        avro_value_set_int(&v, m->spec_id);
        avro_value_get_by_index(e, 3, &v, NULL);
        avro_value_set_int(&v, m->content);
        avro_value_get_by_index(e, 4, &v, NULL);
        avro_value_set_long(&v, m->seq);
        avro_value_get_by_index(e, 5, &v, NULL);
        avro_value_set_long(&v, m->min_seq);
        avro_value_get_by_index(e, 6, &v, NULL);
        avro_value_set_long(&v, m->added_snapshot_id);
        avro_value_get_by_index(e, 7, &v, NULL);
        avro_value_set_int(&v, m->added_files);
        avro_value_get_by_index(e, 8, &v, NULL);
        avro_value_set_int(&v, m->existing_files);
        avro_value_get_by_index(e, 9, &v, NULL);
        avro_value_set_int(&v, m->deleted_files);
        avro_value_get_by_index(e, 10, &v, NULL);
        avro_value_set_long(&v, m->added_rows);
        avro_value_get_by_index(e, 11, &v, NULL);
        avro_value_set_long(&v, m->existing_rows);
        avro_value_get_by_index(e, 12, &v, NULL);
        avro_value_set_long(&v, m->deleted_rows);
        avro_value_t arr;
        set_some(e, 13, &arr);
        for (size_t p = 0; p < m->n_parts; p++) {
            const lw_part_summary_t *s = &m->parts[p];
            avro_value_t item, x, b;
            avro_value_append(&arr, &item, NULL);
            avro_value_get_by_index(&item, 0, &x, NULL);
            avro_value_set_boolean(&x, s->contains_null);
            avro_value_get_by_index(&item, 1, &x, NULL);
            avro_value_set_branch(&x, 1, &b);
            avro_value_set_boolean(&b, 0);
            if (s->has_bounds) {
                uint8_t lo[4], hi[4];
                le32(s->lower, lo);
                le32(s->upper, hi);
                set_some(&item, 2, &b);
                avro_value_set_bytes(&b, lo, 4);
                set_some(&item, 3, &b);
                avro_value_set_bytes(&b, hi, 4);
            } else {
                set_null_branch(&item, 2);
                set_null_branch(&item, 3);
            }
        }
        set_null_branch(e, 14);
        if (lw_avrofile_append(w, e)) {
            snprintf(errstr, errstr_size, "manifest list entry: %s", avro_strerror());
            lw_avrofile_destroy(w);
            return CM_ERR_INVALID;
        }
    }
    cm_err_t err = lw_avrofile_finish(w, out, NULL);
    if (err)
        snprintf(errstr, errstr_size, "manifest list: %s", cm_err_str(err));
    return err;
}

/* --------------------------------------------------------------- reading */

static int get_long_f(avro_value_t *rec, const char *name, int64_t *out)
{
    avro_value_t v, b;
    if (avro_value_get_by_name(rec, name, &v, NULL))
        return -1;
    if (avro_value_get_type(&v) == AVRO_UNION) {
        if (avro_value_get_current_branch(&v, &b))
            return -1;
        v = b;
    }
    int32_t i;
    switch (avro_value_get_type(&v)) {
    case AVRO_INT64: return avro_value_get_long(&v, out);
    case AVRO_INT32:
        if (avro_value_get_int(&v, &i))
            return -1;
        *out = i;
        return 0;
    default: return -1;
    }
}

static int32_t rd_le32(const uint8_t *p)
{
    return (int32_t)((uint32_t)p[0] | (uint32_t)p[1] << 8 | (uint32_t)p[2] << 16 |
                     (uint32_t)p[3] << 24);
}

typedef int row_fn(avro_value_t *rec, void *ud);

static cm_err_t read_container(const void *data, size_t len, row_fn *fn, void *ud,
                               char *errstr, size_t errstr_size)
{
    FILE *fp = fmemopen((void *)data, len, "rb");
    if (!fp) {
        snprintf(errstr, errstr_size, "fmemopen failed");
        return CM_ERR_NOMEM;
    }
    avro_file_reader_t r;
    if (avro_file_reader_fp(fp, "manifest", 1, &r)) {
        snprintf(errstr, errstr_size, "not an Avro file: %s", avro_strerror());
        return CM_ERR_PARSE;
    }
    avro_schema_t sch = avro_file_reader_get_writer_schema(r);
    avro_value_iface_t *iface = avro_generic_class_from_schema(sch);
    avro_value_t rec;
    cm_err_t err = CM_OK;
    if (!iface || avro_generic_value_new(iface, &rec)) {
        avro_file_reader_close(r);
        avro_value_iface_decref(iface);
        avro_schema_decref(sch);
        snprintf(errstr, errstr_size, "avro: %s", avro_strerror());
        return CM_ERR_NOMEM;
    }
    int rc;
    while ((rc = avro_file_reader_read_value(r, &rec)) == 0) {
        if (fn(&rec, ud)) {
            snprintf(errstr, errstr_size, "bad entry");
            err = CM_ERR_PARSE;
            break;
        }
        avro_value_reset(&rec);
    }
    if (!err && rc != EOF) {
        snprintf(errstr, errstr_size, "reading: %s", avro_strerror());
        err = CM_ERR_PARSE;
    }
    avro_value_decref(&rec);
    avro_value_iface_decref(iface);
    avro_schema_decref(sch);
    avro_file_reader_close(r);
    return err;
}

typedef struct {
    lw_manifest_file_t *v;
    size_t n, cap;
} mlist_t;

static int mlist_row(avro_value_t *rec, void *ud)
{
    mlist_t *l = ud;
    if (l->n == l->cap) {
        size_t cap = l->cap ? l->cap * 2 : 16;
        lw_manifest_file_t *v = realloc(l->v, cap * sizeof(*v));
        if (!v)
            return -1;
        l->v = v;
        l->cap = cap;
    }
    lw_manifest_file_t *m = &l->v[l->n];
    memset(m, 0, sizeof(*m));
    avro_value_t v;
    const char *s;
    size_t sl;
    if (avro_value_get_by_name(rec, "manifest_path", &v, NULL) ||
        avro_value_get_string(&v, &s, &sl))
        return -1;
    m->path = strndup(s, sl ? sl - 1 : 0);
    if (!m->path)
        return -1;
    l->n++;
    int64_t x;
    if (get_long_f(rec, "manifest_length", &m->length) ||
        get_long_f(rec, "added_snapshot_id", &m->added_snapshot_id))
        return -1;
    if (!get_long_f(rec, "partition_spec_id", &x))
        m->spec_id = (int32_t)x;
    if (!get_long_f(rec, "content", &x))
        m->content = (int32_t)x;
    get_long_f(rec, "sequence_number", &m->seq);
    get_long_f(rec, "min_sequence_number", &m->min_seq);
    if (!get_long_f(rec, "added_files_count", &x) ||
        !get_long_f(rec, "added_data_files_count", &x))
        m->added_files = (int32_t)x;
    if (!get_long_f(rec, "existing_files_count", &x) ||
        !get_long_f(rec, "existing_data_files_count", &x))
        m->existing_files = (int32_t)x;
    if (!get_long_f(rec, "deleted_files_count", &x) ||
        !get_long_f(rec, "deleted_data_files_count", &x))
        m->deleted_files = (int32_t)x;
    get_long_f(rec, "added_rows_count", &m->added_rows);
    get_long_f(rec, "existing_rows_count", &m->existing_rows);
    get_long_f(rec, "deleted_rows_count", &m->deleted_rows);
    avro_value_t parts, arr;
    if (avro_value_get_by_name(rec, "partitions", &parts, NULL) == 0 &&
        avro_value_get_current_branch(&parts, &arr) == 0 &&
        avro_value_get_type(&arr) == AVRO_ARRAY) {
        size_t cnt = 0;
        avro_value_get_size(&arr, &cnt);
        for (size_t i = 0; i < cnt && i < LW_MAX_PART_FIELDS; i++) {
            avro_value_t item, f, b;
            lw_part_summary_t *ps = &m->parts[i];
            avro_value_get_by_index(&arr, i, &item, NULL);
            int bv = 0;
            if (avro_value_get_by_name(&item, "contains_null", &f, NULL) == 0 &&
                avro_value_get_boolean(&f, &bv) == 0)
                ps->contains_null = bv;
            const void *lp = NULL, *up = NULL;
            size_t ll = 0, ul = 0;
            if (avro_value_get_by_name(&item, "lower_bound", &f, NULL) == 0 &&
                avro_value_get_current_branch(&f, &b) == 0 &&
                avro_value_get_type(&b) == AVRO_BYTES)
                avro_value_get_bytes(&b, &lp, &ll);
            if (avro_value_get_by_name(&item, "upper_bound", &f, NULL) == 0 &&
                avro_value_get_current_branch(&f, &b) == 0 &&
                avro_value_get_type(&b) == AVRO_BYTES)
                avro_value_get_bytes(&b, &up, &ul);
            if (lp && up && ll == 4 && ul == 4) {
                ps->has_bounds = true;
                ps->lower = rd_le32(lp);
                ps->upper = rd_le32(up);
            }
            m->n_parts = i + 1;
        }
    }
    return 0;
}

cm_err_t lw_manifest_list_read(const void *data, size_t len, lw_manifest_file_t **out,
                               size_t *n, char *errstr, size_t errstr_size)
{
    mlist_t l = {0};
    cm_err_t err = read_container(data, len, mlist_row, &l, errstr, errstr_size);
    if (err) {
        lw_manifest_files_free(l.v, l.n);
        return err;
    }
    *out = l.v;
    *n = l.n;
    return CM_OK;
}

typedef struct {
    lw_manifest_entry_fn *fn;
    void *ud;
} paths_t;

static int paths_row(avro_value_t *rec, void *ud)
{
    paths_t *p = ud;
    int64_t status = 0, count = 0;
    avro_value_t df, v;
    const char *s;
    size_t sl;
    if (get_long_f(rec, "status", &status) ||
        avro_value_get_by_name(rec, "data_file", &df, NULL) ||
        avro_value_get_by_name(&df, "file_path", &v, NULL) ||
        avro_value_get_string(&v, &s, &sl) || get_long_f(&df, "record_count", &count))
        return -1;
    if (status != 2)
        p->fn(s, count, p->ud);
    return 0;
}

cm_err_t lw_manifest_read_paths(const void *data, size_t len, lw_manifest_entry_fn *fn,
                                void *ud, char *errstr, size_t errstr_size)
{
    paths_t p = {fn, ud};
    return read_container(data, len, paths_row, &p, errstr, errstr_size);
}

cm_err_t lw_manifest_file_copy(lw_manifest_file_t *dst, const lw_manifest_file_t *src)
{
    *dst = *src;
    dst->path = strdup(src->path);
    return dst->path ? CM_OK : CM_ERR_NOMEM;
}

void lw_manifest_files_free(lw_manifest_file_t *mfs, size_t n)
{
    if (!mfs)
        return;
    for (size_t i = 0; i < n; i++)
        free(mfs[i].path);
    free(mfs);
}

void lw_datafile_clear(lw_datafile_t *f)
{
    free(f->uri);
    free(f->key);
    memset(f, 0, sizeof(*f));
}
