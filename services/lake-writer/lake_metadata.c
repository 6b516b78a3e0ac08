/*
 * lake_metadata.c: table metadata JSON (Iceberg spec, "Table Metadata" and
 * Appendix C) and the commit protocol of lake_metadata.h.
 */
#include "lake_metadata.h"

#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/random.h>

#include "cm_time.h"
#include "lake_table.h"

#define LW_METADATA_LOG_MAX 100
/* Metadata JSON grows with snapshots; this caps what we accept to read. */
#define LW_METADATA_MAX_BYTES (512 * 1024 * 1024)

void lw_meta_key(const char *table, int64_t n, char *buf, size_t size)
{
    snprintf(buf, size, "%s/metadata/v%" PRId64 ".metadata.json", table, n);
}

static void hint_key(const char *table, char *buf, size_t size)
{
    snprintf(buf, size, "%s/metadata/version-hint.text", table);
}

static void uuid4(char out[37])
{
    uint8_t b[16];
    if (getrandom(b, sizeof(b), 0) != (ssize_t)sizeof(b))
        memset(b, 0x5a, sizeof(b));
    b[6] = (uint8_t)((b[6] & 0x0f) | 0x40);
    b[8] = (uint8_t)((b[8] & 0x3f) | 0x80);
    snprintf(out, 37,
             "%02x%02x%02x%02x-%02x%02x-%02x%02x-%02x%02x-%02x%02x%02x%02x%02x%02x", b[0],
             b[1], b[2], b[3], b[4], b[5], b[6], b[7], b[8], b[9], b[10], b[11], b[12], b[13],
             b[14], b[15]);
}

json_t *lw_meta_initial(const lw_table_def_t *def, const char *location, int64_t now_ms)
{
    char uuid[37];
    uuid4(uuid);
    json_t *props = json_pack("{s:s, s:s, s:s}", "write.format.default", "avro",
                              "lake.writer", "lake-writer", "comment",
                              def->doc ? def->doc : "");
    return json_pack("{s:i, s:s, s:s, s:I, s:I, s:i, s:[o], s:i, s:[o], s:i, s:i, s:o,"
                     " s:I, s:[], s:[], s:[], s:[{s:i, s:[]}], s:i, s:{}}",
                     "format-version", 2, "table-uuid", uuid, "location", location,
                     "last-sequence-number", (json_int_t)0, "last-updated-ms",
                     (json_int_t)now_ms, "last-column-id", def->last_column_id, "schemas",
                     lw_schema_iceberg_json(def), "current-schema-id", 0, "partition-specs",
                     lw_spec_json(def), "default-spec-id", 0, "last-partition-id",
                     def->n_part ? def->part[def->n_part - 1].field_id : 999, "properties",
                     props, "current-snapshot-id", (json_int_t)-1, "snapshots",
                     "snapshot-log", "metadata-log", "sort-orders", "order-id", 0, "fields",
                     "default-sort-order-id", 0, "refs");
}

static cm_err_t parse_root(const cm_buf_t *b, json_t **out, char *errstr, size_t errstr_size)
{
    json_error_t je;
    json_t *r = json_loadb((const char *)b->data, b->len, 0, &je);
    if (!r || !json_is_object(r) ||
        json_integer_value(json_object_get(r, "format-version")) != 2) {
        snprintf(errstr, errstr_size, "bad table metadata: %s", r ? "not format v2" : je.text);
        json_decref(r);
        return CM_ERR_PARSE;
    }
    *out = r;
    return CM_OK;
}

cm_err_t lw_meta_load(lw_storage_t *st, const char *table, lw_meta_t *m, char *errstr,
                      size_t errstr_size)
{
    char key[512];
    cm_buf_t b;
    cm_buf_init(&b, LW_METADATA_MAX_BYTES);
    int64_t n = 0;
    hint_key(table, key, sizeof(key));
    cm_err_t err = lw_storage_get(st, key, &b);
    if (!err) {
        char tmp[32];
        size_t l = b.len < sizeof(tmp) - 1 ? b.len : sizeof(tmp) - 1;
        memcpy(tmp, b.data, l);
        tmp[l] = 0;
        n = strtoll(tmp, NULL, 10);
        if (n < 0)
            n = 0;
    } else if (err != CM_ERR_NOT_FOUND) {
        snprintf(errstr, errstr_size, "reading %s: %s", key, cm_err_str(err));
        goto out;
    }
    /* The hint may lag (a crash between publish and hint, or a hint of 0):
     * probe upwards from it. v1 exists for every table we made. */
    if (n < 1)
        n = 1;
    lw_meta_key(table, n, key, sizeof(key));
    err = lw_storage_get(st, key, &b);
    if (err == CM_ERR_NOT_FOUND && n > 1) {
        /* A hint ahead of reality should not happen; fall back to v1. */
        n = 1;
        lw_meta_key(table, n, key, sizeof(key));
        err = lw_storage_get(st, key, &b);
    }
    if (err) {
        if (err != CM_ERR_NOT_FOUND)
            snprintf(errstr, errstr_size, "reading %s: %s", key, cm_err_str(err));
        else
            snprintf(errstr, errstr_size, "table %s does not exist", table);
        goto out;
    }
    for (;;) {
        cm_buf_t nb;
        cm_buf_init(&nb, LW_METADATA_MAX_BYTES);
        lw_meta_key(table, n + 1, key, sizeof(key));
        cm_err_t e2 = lw_storage_get(st, key, &nb);
        if (e2) {
            cm_buf_free(&nb);
            if (e2 != CM_ERR_NOT_FOUND) {
                err = e2;
                snprintf(errstr, errstr_size, "reading %s: %s", key, cm_err_str(err));
                goto out;
            }
            break;
        }
        cm_buf_free(&b);
        b = nb;
        n++;
    }
    json_t *root;
    err = parse_root(&b, &root, errstr, errstr_size);
    if (err)
        goto out;
    json_decref(m->root);
    m->root = root;
    m->version = n;
out:
    cm_buf_free(&b);
    return err;
}

cm_err_t lw_meta_open_or_create(lw_storage_t *st, const lw_table_def_t *def, lw_meta_t *m,
                                char *errstr, size_t errstr_size)
{
    cm_err_t err = lw_meta_load(st, def->name, m, errstr, errstr_size);
    if (err != CM_ERR_NOT_FOUND)
        return err;
    char loc[4096], key[512];
    err = lw_storage_uri(st, def->name, loc, sizeof(loc));
    if (err) {
        snprintf(errstr, errstr_size, "table location too long");
        return err;
    }
    json_t *root = lw_meta_initial(def, loc, cm_now_ms());
    if (!root) {
        snprintf(errstr, errstr_size, "out of memory");
        return CM_ERR_NOMEM;
    }
    lw_meta_t empty = {NULL, 0};
    err = lw_meta_publish(st, def->name, &empty, root, errstr, errstr_size);
    if (err == CM_ERR_RETRY) /* created by someone else meanwhile */
        return lw_meta_load(st, def->name, m, errstr, errstr_size);
    if (err)
        return err;
    (void)key;
    lw_meta_clear(m);
    *m = empty;
    return CM_OK;
}

int64_t lw_meta_current_snapshot_id(const lw_meta_t *m)
{
    json_t *c = json_object_get(m->root, "current-snapshot-id");
    return json_is_integer(c) ? (int64_t)json_integer_value(c) : -1;
}

json_t *lw_meta_snapshot(const lw_meta_t *m, int64_t id)
{
    size_t i;
    json_t *s;
    if (id < 0)
        return NULL;
    json_array_foreach(json_object_get(m->root, "snapshots"), i, s)
    {
        if ((int64_t)json_integer_value(json_object_get(s, "snapshot-id")) == id)
            return s;
    }
    return NULL;
}

const char *lw_meta_current_summary(const lw_meta_t *m, const char *key)
{
    json_t *s = lw_meta_snapshot(m, lw_meta_current_snapshot_id(m));
    return s ? json_string_value(json_object_get(json_object_get(s, "summary"), key)) : NULL;
}

int lw_meta_has_summary(const lw_meta_t *m, const char *key, const char *value)
{
    size_t i;
    json_t *s;
    json_array_foreach(json_object_get(m->root, "snapshots"), i, s)
    {
        const char *v = json_string_value(json_object_get(json_object_get(s, "summary"), key));
        if (v && strcmp(v, value) == 0)
            return 1;
    }
    return 0;
}

json_t *lw_meta_with_snapshot(const lw_meta_t *base, json_t *snapshot, const char *base_uri,
                              int64_t now_ms)
{
    json_t *root = json_deep_copy(base->root);
    if (!root) {
        json_decref(snapshot);
        return NULL;
    }
    int64_t id = (int64_t)json_integer_value(json_object_get(snapshot, "snapshot-id"));
    int64_t seq = (int64_t)json_integer_value(json_object_get(snapshot, "sequence-number"));
    int64_t ts = (int64_t)json_integer_value(json_object_get(snapshot, "timestamp-ms"));
    int64_t prev_updated =
        (int64_t)json_integer_value(json_object_get(base->root, "last-updated-ms"));

    json_t *snaps = json_object_get(root, "snapshots");
    if (!json_is_array(snaps)) {
        snaps = json_array();
        json_object_set_new(root, "snapshots", snaps);
    }
    json_array_append_new(snaps, snapshot);

    json_t *slog = json_object_get(root, "snapshot-log");
    if (!json_is_array(slog)) {
        slog = json_array();
        json_object_set_new(root, "snapshot-log", slog);
    }
    json_array_append_new(slog, json_pack("{s:I, s:I}", "timestamp-ms", (json_int_t)ts,
                                          "snapshot-id", (json_int_t)id));

    json_t *mlog = json_object_get(root, "metadata-log");
    if (!json_is_array(mlog)) {
        mlog = json_array();
        json_object_set_new(root, "metadata-log", mlog);
    }
    if (base_uri)
        json_array_append_new(mlog, json_pack("{s:I, s:s}", "timestamp-ms",
                                              (json_int_t)prev_updated, "metadata-file",
                                              base_uri));
    while (json_array_size(mlog) > LW_METADATA_LOG_MAX)
        json_array_remove(mlog, 0);

    json_object_set_new(root, "current-snapshot-id", json_integer(id));
    json_object_set_new(root, "last-sequence-number", json_integer(seq));
    json_object_set_new(root, "last-updated-ms", json_integer(now_ms > ts ? now_ms : ts));
    json_t *refs = json_object_get(root, "refs");
    if (!json_is_object(refs)) {
        refs = json_object();
        json_object_set_new(root, "refs", refs);
    }
    json_object_set_new(refs, "main",
                        json_pack("{s:I, s:s}", "snapshot-id", (json_int_t)id, "type", "branch"));
    return root;
}

cm_err_t lw_meta_publish(lw_storage_t *st, const char *table, lw_meta_t *m, json_t *root,
                         char *errstr, size_t errstr_size)
{
    char key[512];
    int64_t n = m->version + 1;
    lw_meta_key(table, n, key, sizeof(key));
    char *text = json_dumps(root, JSON_INDENT(1) | JSON_PRESERVE_ORDER);
    if (!text) {
        json_decref(root);
        snprintf(errstr, errstr_size, "out of memory");
        return CM_ERR_NOMEM;
    }
    cm_err_t err = lw_storage_put(st, key, text, strlen(text), true);
    free(text);
    if (err) {
        json_decref(root);
        if (err == CM_ERR_RETRY)
            snprintf(errstr, errstr_size, "%s exists: concurrent commit", key);
        else
            snprintf(errstr, errstr_size, "writing %s: %s", key, cm_err_str(err));
        return err;
    }
    json_decref(m->root);
    m->root = root;
    m->version = n;
    /* The hint: the bare number, no newline. A failure here is harmless
     * (loads probe past the hint), so it is not an error of the commit. */
    lw_crash_point("before-hint");
    char num[24];
    int l = snprintf(num, sizeof(num), "%" PRId64, n);
    hint_key(table, key, sizeof(key));
    lw_storage_put(st, key, num, (size_t)l, false);
    return CM_OK;
}

void lw_meta_clear(lw_meta_t *m)
{
    json_decref(m->root);
    m->root = NULL;
    m->version = 0;
}

/* Batch ids of the journals of a table: a journal outlives its commit when a
 * writer dies between publishing and removing it, and its recovery looks for
 * the batch's snapshot. Expiry keeps those snapshots. */
typedef struct {
    lw_storage_t *st;
    json_t *batches;
} journals_t;

static void journal_batch(const char *key, void *ud)
{
    journals_t *j = ud;
    cm_buf_t b;
    cm_buf_init(&b, 64 * 1024 * 1024);
    if (lw_storage_get(j->st, key, &b) == CM_OK) {
        json_t *o = json_loadb((const char *)b.data, b.len, 0, NULL);
        const char *batch = json_string_value(json_object_get(o, "batch"));
        if (batch)
            json_object_set_new(j->batches, batch, json_true());
        json_decref(o);
    }
    cm_buf_free(&b);
}

cm_err_t lw_meta_expire_snapshots(lw_storage_t *st, const char *table, int64_t older_than_ms,
                                  int retain_last, int *expired, char *errstr,
                                  size_t errstr_size)
{
    lw_meta_t m = {NULL, 0};
    cm_err_t err;
    *expired = 0;
    for (int attempt = 0; attempt < 10; attempt++) {
        err = lw_meta_load(st, table, &m, errstr, errstr_size);
        if (err)
            break;
        json_t *root = json_deep_copy(m.root);
        json_t *snaps = json_object_get(root, "snapshots");
        int64_t cur = lw_meta_current_snapshot_id(&m);
        size_t total = json_array_size(snaps);
        json_t *keep = json_array(), *drop = json_array();
        char jprefix[512];
        snprintf(jprefix, sizeof(jprefix), "%s/lw-journal/", table);
        journals_t jr = {st, json_object()};
        lw_storage_list(st, jprefix, journal_batch, &jr);
        size_t i;
        json_t *s;
        json_array_foreach(snaps, i, s)
        {
            int64_t id = (int64_t)json_integer_value(json_object_get(s, "snapshot-id"));
            int64_t ts = (int64_t)json_integer_value(json_object_get(s, "timestamp-ms"));
            bool newest = (int64_t)(total - i) <= (int64_t)retain_last;
            const char *batch =
                json_string_value(json_object_get(json_object_get(s, "summary"), "lake.batch-id"));
            bool journaled = batch && json_object_get(jr.batches, batch);
            if (id == cur || newest || journaled || ts >= older_than_ms)
                json_array_append(keep, s);
            else
                json_array_append(drop, s);
        }
        json_decref(jr.batches);
        if (json_array_size(drop) == 0) {
            json_decref(keep);
            json_decref(drop);
            json_decref(root);
            break;
        }
        json_object_set_new(root, "snapshots", keep);
        /* snapshot-log keeps only the entries of kept snapshots, in order. */
        json_t *slog = json_array();
        json_array_foreach(json_object_get(m.root, "snapshot-log"), i, s)
        {
            int64_t id = (int64_t)json_integer_value(json_object_get(s, "snapshot-id"));
            if (lw_meta_snapshot(&(lw_meta_t){root, 0}, id))
                json_array_append(slog, s);
        }
        json_object_set_new(root, "snapshot-log", slog);
        /* The parent of the oldest kept snapshot no longer exists. */
        json_array_foreach(keep, i, s)
        {
            json_t *p = json_object_get(s, "parent-snapshot-id");
            if (p && !lw_meta_snapshot(&(lw_meta_t){root, 0}, json_integer_value(p)))
                json_object_del(s, "parent-snapshot-id");
        }
        char uri[4096], key[512];
        lw_meta_key(table, m.version, key, sizeof(key));
        lw_storage_uri(st, key, uri, sizeof(uri));
        json_t *mlog = json_object_get(root, "metadata-log");
        if (json_is_array(mlog))
            json_array_append_new(
                mlog, json_pack("{s:I, s:s}", "timestamp-ms",
                                json_integer_value(json_object_get(m.root, "last-updated-ms")),
                                "metadata-file", uri));
        json_object_set_new(root, "last-updated-ms", json_integer(cm_now_ms()));
        err = lw_meta_publish(st, table, &m, root, errstr, errstr_size);
        if (err == CM_ERR_RETRY) {
            json_decref(drop);
            continue;
        }
        if (!err) {
            /* Manifest lists of the dropped snapshots: their URIs start with
             * the table location; turn them back into keys. */
            char loc[4096];
            lw_storage_uri(st, "", loc, sizeof(loc));
            size_t ll = strlen(loc);
            json_array_foreach(drop, i, s)
            {
                const char *ml = json_string_value(json_object_get(s, "manifest-list"));
                if (ml && strncmp(ml, loc, ll) == 0)
                    lw_storage_delete(st, ml + ll);
            }
            *expired = (int)json_array_size(drop);
        }
        json_decref(drop);
        break;
    }
    lw_meta_clear(&m);
    return err;
}
