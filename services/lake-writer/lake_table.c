/*
 * lake_table.c: per-table buffers, partitioning, rolling and commits (see
 * lake_table.h for the offset and crash-safety rules).
 */
#include "lake_table.h"

#include <errno.h>
#include <inttypes.h>
#include <limits.h>
#include <pthread.h>
#include <signal.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/random.h>

#include <jansson.h>

#include "cm_log.h"
#include "cm_time.h"
#include "lake_avrofile.h"
#include "lake_manifest.h"
#include "lake_metadata.h"

#define LW_MAX_PARTITIONS 100000 /* Kafka partitions of one topic we accept */
#define LW_COMMIT_ATTEMPTS 20
#define LW_SUMMARY_OFFSETS "lake.kafka-offsets"
#define LW_SUMMARY_BATCH "lake.batch-id"

typedef struct lw_openfile {
    lw_avrofile_t *w;
    int fd;
    char path[PATH_MAX];
    char *key;
    int32_t part[LW_MAX_PART_FIELDS];
    bool has_ts;
    int64_t ts_min, ts_max;
} lw_openfile_t;

struct lw_table {
    const lw_table_def_t *def;
    lw_storage_t *st;
    lw_table_opts_t o;
    char *topic, *instance;
    char *schema_json; /* Avro schema text of the data files */
    char *iceberg_schema_json;
    char journal_key[512];

    lw_meta_t meta;
    lw_manifest_file_t *base_mfs; /* manifest list of the current snapshot */
    size_t n_base_mfs;
    int64_t base_mfs_snapshot;    /* the snapshot base_mfs belongs to */

    int64_t *committed, *pos, *first; /* per Kafka partition; -1 = none */
    size_t n_parts;

    /* The open batch. */
    char batch[33];
    unsigned file_seq;
    lw_openfile_t *open;
    size_t n_open;
    lw_datafile_t *done; /* closed files waiting for the commit */
    size_t n_done, cap_done;
    json_t *journal_keys; /* metadata files of the batch */
    json_t *journal_dirs; /* data directories the batch has files in */
    uint64_t batch_rows;
    int64_t batch_started_ms; /* monotonic; 0 = no batch */

    cm_buf_t enc; /* one row, hand-encoded (lw_row_encode) */
    _Atomic uint64_t rows_written;
    pthread_mutex_t stats_mu;
    lw_table_stats_t stats;
};

static void new_batch_id(char out[33])
{
    uint8_t b[16];
    if (getrandom(b, sizeof(b), 0) != (ssize_t)sizeof(b))
        memset(b, 0x33, sizeof(b));
    for (int i = 0; i < 16; i++)
        snprintf(out + 2 * i, 3, "%02x", b[i]);
}

static int64_t random_id(void)
{
    int64_t v = 0;
    while (v == 0) {
        if (getrandom(&v, sizeof(v), 0) != (ssize_t)sizeof(v))
            v = cm_mono_us();
        v &= INT64_MAX;
    }
    return v;
}

const lw_table_def_t *lw_table_def(const lw_table_t *t) { return t->def; }

/* ---------------------------------------------------------------- offsets */

static cm_err_t ensure_parts(lw_table_t *t, int32_t p)
{
    if (p < 0 || p >= LW_MAX_PARTITIONS)
        return CM_ERR_INVALID;
    if ((size_t)p < t->n_parts)
        return CM_OK;
    size_t n = (size_t)p + 1;
    int64_t *c = realloc(t->committed, n * sizeof(*c));
    if (!c)
        return CM_ERR_NOMEM;
    t->committed = c;
    int64_t *q = realloc(t->pos, n * sizeof(*q));
    if (!q)
        return CM_ERR_NOMEM;
    t->pos = q;
    int64_t *f = realloc(t->first, n * sizeof(*f));
    if (!f)
        return CM_ERR_NOMEM;
    t->first = f;
    for (size_t i = t->n_parts; i < n; i++)
        t->committed[i] = t->pos[i] = t->first[i] = -1;
    t->n_parts = n;
    return CM_OK;
}

int64_t lw_table_pos(const lw_table_t *t, int32_t p)
{
    return p >= 0 && (size_t)p < t->n_parts ? t->pos[p] : -1;
}

int64_t lw_table_committed(const lw_table_t *t, int32_t p)
{
    return p >= 0 && (size_t)p < t->n_parts ? t->committed[p] : -1;
}

bool lw_table_wants(const lw_table_t *t, int32_t p, int64_t offset)
{
    return offset >= lw_table_pos(t, p);
}

void lw_table_foreach_committed(const lw_table_t *t, void (*fn)(int32_t, int64_t, void *),
                                void *ud)
{
    for (size_t i = 0; i < t->n_parts; i++)
        if (t->committed[i] >= 0)
            fn((int32_t)i, t->committed[i], ud);
}

/* The offsets object of the current snapshot: {"topic": {"p": next}} (new
 * reference; an empty object when none). */
static json_t *meta_offsets(const lw_meta_t *m)
{
    const char *s = lw_meta_current_summary(m, LW_SUMMARY_OFFSETS);
    json_t *o = s ? json_loads(s, 0, NULL) : NULL;
    if (!json_is_object(o)) {
        json_decref(o);
        o = json_object();
    }
    return o;
}

/* committed[] from the metadata (our topic only). */
static cm_err_t load_committed(lw_table_t *t, const lw_meta_t *m, int64_t *max_out_unused)
{
    (void)max_out_unused;
    json_t *all = meta_offsets(m);
    json_t *mine = json_object_get(all, t->topic);
    const char *k;
    json_t *v;
    for (size_t i = 0; i < t->n_parts; i++)
        t->committed[i] = -1;
    json_object_foreach(mine, k, v)
    {
        char *end;
        long p = strtol(k, &end, 10);
        if (*end || !json_is_integer(v) || ensure_parts(t, (int32_t)p))
            continue;
        t->committed[p] = (int64_t)json_integer_value(v);
    }
    json_decref(all);
    return CM_OK;
}

/* ---------------------------------------------------------------- journal */

static cm_err_t journal_write(lw_table_t *t)
{
    json_t *j = json_pack("{s:s, s:s, s:O, s:O}", "batch", t->batch, "instance",
                          t->instance, "dirs", t->journal_dirs, "keys", t->journal_keys);
    char *s = j ? json_dumps(j, JSON_COMPACT) : NULL;
    json_decref(j);
    if (!s)
        return CM_ERR_NOMEM;
    cm_err_t err = lw_storage_put(t->st, t->journal_key, s, strlen(s), false);
    free(s);
    return err;
}

static cm_err_t journal_add(lw_table_t *t, const char *key)
{
    json_array_append_new(t->journal_keys, json_string(key));
    return journal_write(t);
}

/* Data files are named "<dir><batch>-<n>.avro": the journal lists the
 * directories only, and is rewritten only when the batch enters a new one
 * (once per batch for live traffic, which lands in the current hour). */
static cm_err_t journal_add_dir(lw_table_t *t, const char *dir)
{
    size_t i;
    json_t *d;
    json_array_foreach(t->journal_dirs, i, d)
    {
        if (strcmp(json_string_value(d), dir) == 0)
            return CM_OK;
    }
    json_array_append_new(t->journal_dirs, json_string(dir));
    return journal_write(t);
}

static void journal_clear(lw_table_t *t)
{
    if (json_array_size(t->journal_keys) || json_array_size(t->journal_dirs))
        lw_storage_delete(t->st, t->journal_key);
    json_array_clear(t->journal_keys);
    json_array_clear(t->journal_dirs);
}

typedef struct {
    lw_storage_t *st;
    size_t n;
} del_ud_t;

static void delete_listed(const char *key, void *ud)
{
    del_ud_t *d = ud;
    if (lw_storage_delete(d->st, key) == CM_OK)
        d->n++;
}

/* Recovery of an interrupted batch of this instance (see the header). */
static cm_err_t recover(lw_table_t *t)
{
    cm_buf_t b;
    cm_buf_init(&b, 64 * 1024 * 1024);
    cm_err_t err = lw_storage_get(t->st, t->journal_key, &b);
    if (err == CM_ERR_NOT_FOUND) {
        cm_buf_free(&b);
        return CM_OK;
    }
    if (err) {
        cm_buf_free(&b);
        return err;
    }
    json_t *j = json_loadb((const char *)b.data, b.len, 0, NULL);
    cm_buf_free(&b);
    const char *batch = json_string_value(json_object_get(j, "batch"));
    if (batch && lw_meta_has_summary(&t->meta, LW_SUMMARY_BATCH, batch)) {
        cm_log_info("batch was committed before the stop", "table", "%s", t->def->name,
                    "batch", "%s", batch, NULL);
    } else {
        size_t i, n = 0;
        json_t *k;
        json_array_foreach(json_object_get(j, "keys"), i, k)
        {
            if (json_is_string(k) && lw_storage_delete(t->st, json_string_value(k)) == CM_OK)
                n++;
        }
        del_ud_t d = {t->st, 0};
        json_array_foreach(json_object_get(j, "dirs"), i, k)
        {
            char prefix[1024];
            if (!json_is_string(k) || !batch)
                continue;
            snprintf(prefix, sizeof(prefix), "%s%s-", json_string_value(k), batch);
            lw_storage_list(t->st, prefix, delete_listed, &d);
        }
        n += d.n;
        cm_log_warn("removed the files of an interrupted batch", "table", "%s",
                    t->def->name, "batch", "%s", batch ? batch : "?", "files", "%ld",
                    (long)n, NULL);
    }
    json_decref(j);
    return lw_storage_delete(t->st, t->journal_key);
}

/* ------------------------------------------------------------- open/close */

static cm_err_t load_base_manifests(lw_table_t *t, char *errstr, size_t errstr_size)
{
    int64_t cur = lw_meta_current_snapshot_id(&t->meta);
    if (cur == t->base_mfs_snapshot)
        return CM_OK;
    lw_manifest_files_free(t->base_mfs, t->n_base_mfs);
    t->base_mfs = NULL;
    t->n_base_mfs = 0;
    t->base_mfs_snapshot = -1;
    if (cur < 0)
        return CM_OK;
    json_t *s = lw_meta_snapshot(&t->meta, cur);
    const char *ml = json_string_value(json_object_get(s, "manifest-list"));
    char loc[4096];
    lw_storage_uri(t->st, "", loc, sizeof(loc));
    if (!ml || strncmp(ml, loc, strlen(loc)) != 0) {
        snprintf(errstr, errstr_size, "manifest list %s is outside the warehouse",
                 ml ? ml : "(none)");
        return CM_ERR_INVALID;
    }
    cm_buf_t b;
    cm_buf_init(&b, 1024 * 1024 * 1024);
    cm_err_t err = lw_storage_get(t->st, ml + strlen(loc), &b);
    if (!err)
        err = lw_manifest_list_read(b.data, b.len, &t->base_mfs, &t->n_base_mfs, errstr,
                                    errstr_size);
    else
        snprintf(errstr, errstr_size, "reading %s: %s", ml, cm_err_str(err));
    cm_buf_free(&b);
    if (!err)
        t->base_mfs_snapshot = cur;
    return err;
}

lw_table_t *lw_table_open(const lw_table_def_t *def, lw_storage_t *st,
                          const lw_table_opts_t *opts, char *errstr, size_t errstr_size)
{
    lw_table_t *t = calloc(1, sizeof(*t));
    if (!t) {
        snprintf(errstr, errstr_size, "out of memory");
        return NULL;
    }
    pthread_mutex_init(&t->stats_mu, NULL);
    cm_buf_init(&t->enc, 64 * 1024 * 1024);
    t->def = def;
    t->st = st;
    t->o = *opts;
    if (!t->o.roll_bytes)
        t->o.roll_bytes = 128LL * 1024 * 1024;
    if (!t->o.roll_age_ms)
        t->o.roll_age_ms = 60000;
    if (!t->o.max_open_files)
        t->o.max_open_files = 64;
    t->topic = strdup(opts->topic);
    t->instance = strdup(opts->instance ? opts->instance : "lake-writer");
    t->base_mfs_snapshot = -1;
    t->journal_keys = json_array();
    t->journal_dirs = json_array();
    t->open = calloc((size_t)t->o.max_open_files, sizeof(*t->open));
    cm_buf_t sch;
    cm_buf_init(&sch, 0);
    if (!t->topic || !t->instance || !t->journal_keys || !t->journal_dirs || !t->open ||
        lw_schema_avro_text(def, &sch)) {
        cm_buf_free(&sch);
        snprintf(errstr, errstr_size, "out of memory");
        goto fail;
    }
    t->schema_json = strdup(cm_buf_cstr(&sch));
    cm_buf_free(&sch);
    json_t *ij = lw_schema_iceberg_json(def);
    t->iceberg_schema_json = json_dumps(ij, JSON_COMPACT | JSON_PRESERVE_ORDER);
    json_decref(ij);
    if (!t->schema_json || !t->iceberg_schema_json) {
        snprintf(errstr, errstr_size, "out of memory");
        goto fail;
    }
    snprintf(t->journal_key, sizeof(t->journal_key), "%s/lw-journal/%s.json", def->name,
             t->instance);
    new_batch_id(t->batch);

    if (lw_meta_open_or_create(st, def, &t->meta, errstr, errstr_size))
        goto fail;
    cm_err_t err = recover(t);
    if (err) {
        snprintf(errstr, errstr_size, "%s: recovering the journal: %s", def->name,
                 cm_err_str(err));
        goto fail;
    }
    if (load_base_manifests(t, errstr, errstr_size))
        goto fail;
    load_committed(t, &t->meta, NULL);
    for (size_t i = 0; i < t->n_parts; i++)
        t->pos[i] = t->committed[i];
    t->stats.snapshot_id = lw_meta_current_snapshot_id(&t->meta);
    t->stats.version = t->meta.version;
    return t;
fail:
    lw_table_destroy(t);
    return NULL;
}

static void discard_batch(lw_table_t *t)
{
    for (size_t i = 0; i < t->n_open; i++) {
        lw_openfile_t *f = &t->open[i];
        lw_avrofile_destroy(f->w);
        lw_storage_file_discard(t->st, f->fd, f->path);
        free(f->key);
    }
    t->n_open = 0;
    for (size_t i = 0; i < t->n_done; i++) {
        lw_storage_delete(t->st, t->done[i].key);
        lw_datafile_clear(&t->done[i]);
    }
    t->n_done = 0;
    journal_clear(t);
    t->batch_rows = 0;
    t->batch_started_ms = 0;
    for (size_t i = 0; i < t->n_parts; i++) {
        t->pos[i] = t->committed[i];
        t->first[i] = -1;
    }
    new_batch_id(t->batch);
    t->file_seq = 0;
}

void lw_table_abort(lw_table_t *t) { discard_batch(t); }

void lw_table_destroy(lw_table_t *t)
{
    if (!t)
        return;
    if (t->open)
        discard_batch(t);
    free(t->open);
    free(t->done);
    json_decref(t->journal_keys);
    json_decref(t->journal_dirs);
    lw_manifest_files_free(t->base_mfs, t->n_base_mfs);
    lw_meta_clear(&t->meta);
    free(t->committed);
    free(t->pos);
    free(t->first);
    free(t->topic);
    free(t->instance);
    free(t->schema_json);
    free(t->iceberg_schema_json);
    pthread_mutex_destroy(&t->stats_mu);
    cm_buf_free(&t->enc);
    free(t);
}

static cm_err_t close_file(lw_table_t *t, size_t idx)
{
    lw_openfile_t *f = &t->open[idx];
    uint64_t size = 0, rows = lw_avrofile_rows(f->w);
    cm_err_t err = lw_avrofile_finish(f->w, NULL, &size);
    f->w = NULL;
    if (!err)
        err = lw_storage_file_publish(t->st, f->key, f->fd, f->path);
    else
        lw_storage_file_discard(t->st, f->fd, f->path);
    f->fd = -1;
    if (!err && t->n_done == t->cap_done) {
        size_t cap = t->cap_done ? t->cap_done * 2 : 16;
        lw_datafile_t *d = realloc(t->done, cap * sizeof(*d));
        if (!d)
            err = CM_ERR_NOMEM;
        else {
            t->done = d;
            t->cap_done = cap;
        }
    }
    if (!err) {
        lw_datafile_t *d = &t->done[t->n_done];
        memset(d, 0, sizeof(*d));
        char uri[PATH_MAX + 64];
        lw_storage_uri(t->st, f->key, uri, sizeof(uri));
        d->uri = strdup(uri);
        d->key = f->key;
        f->key = NULL;
        d->record_count = (int64_t)rows;
        d->file_size = (int64_t)size;
        memcpy(d->part, f->part, sizeof(d->part));
        d->has_ts = f->has_ts;
        d->ts_min = f->ts_min;
        d->ts_max = f->ts_max;
        t->n_done++;
    }
    free(f->key);
    /* Keep the array dense. */
    t->open[idx] = t->open[--t->n_open];
    return err;
}

static cm_err_t open_file(lw_table_t *t, const int32_t *part, lw_openfile_t **out)
{
    if (t->n_open == (size_t)t->o.max_open_files) {
        /* Too many partitions at once: close the oldest open file; a file
         * per partition per batch is the usual case, so this is rare. */
        cm_err_t err = close_file(t, 0);
        if (err)
            return err;
    }
    char rel[256] = "", key[PATH_MAX];
    size_t rl = 0;
    for (size_t i = 0; i < t->def->n_part; i++) {
        char human[32];
        lw_transform_human(t->def->part[i].transform, part[i], human, sizeof(human));
        rl += (size_t)snprintf(rel + rl, sizeof(rel) - rl, "%s=%s/", t->def->part[i].name,
                               human);
    }
    char dir[512];
    snprintf(dir, sizeof(dir), "%s/data/%s", t->def->name, rel);
    snprintf(key, sizeof(key), "%s%s-%05u.avro", dir, t->batch, t->file_seq++);
    cm_err_t err = journal_add_dir(t, dir);
    if (err)
        return err;
    lw_openfile_t *f = &t->open[t->n_open];
    memset(f, 0, sizeof(*f));
    f->fd = -1;
    memcpy(f->part, part, sizeof(f->part));
    f->key = strdup(key);
    if (!f->key)
        return CM_ERR_NOMEM;
    err = lw_storage_file_open(t->st, key, &f->fd, f->path, sizeof(f->path));
    if (err) {
        cm_log_error("cannot create a data file", "table", "%s", t->def->name, "path", "%s",
                     f->path, "error", "%s", strerror(errno), NULL);
        free(f->key);
        return err;
    }
    const lw_avro_meta_t meta[] = {
        {"iceberg.schema", t->iceberg_schema_json, strlen(t->iceberg_schema_json)},
    };
    lw_avrofile_opts_t ao = {.schema_json = t->schema_json,
                             .meta = meta,
                             .n_meta = 1,
                             .codec = (lw_codec_t)t->o.codec,
                             .fd = f->fd};
    char errstr[256];
    f->w = lw_avrofile_new(&ao, errstr, sizeof(errstr));
    if (!f->w) {
        cm_log_error("cannot start a data file", "table", "%s", t->def->name, "error", "%s",
                     errstr, NULL);
        lw_storage_file_discard(t->st, f->fd, f->path);
        free(f->key);
        return CM_ERR_IO;
    }
    t->n_open++;
    *out = f;
    return CM_OK;
}

/* ------------------------------------------------------------------ rows */

static void cover(lw_table_t *t, int32_t p, int64_t offset)
{
    if (ensure_parts(t, p))
        return;
    if (offset + 1 > t->pos[p])
        t->pos[p] = offset + 1;
    if (t->first[p] < 0)
        t->first[p] = offset;
}

void lw_table_cover(lw_table_t *t, int32_t p, int64_t offset) { cover(t, p, offset); }

cm_err_t lw_table_append(lw_table_t *t, const lw_row_t *row)
{
    const lw_table_def_t *def = t->def;
    int64_t ts = lw_row_ts_us(def, row);
    int32_t part[LW_MAX_PART_FIELDS] = {0};
    for (size_t i = 0; i < def->n_part; i++)
        part[i] = lw_transform_apply(def->part[i].transform, ts);
    lw_openfile_t *f = NULL;
    for (size_t i = 0; i < t->n_open; i++) {
        if (memcmp(t->open[i].part, part, sizeof(part)) == 0) {
            f = &t->open[i];
            break;
        }
    }
    cm_err_t err;
    if (!f) {
        err = open_file(t, part, &f);
        if (err)
            return err;
    }
    cm_buf_reset(&t->enc);
    if (lw_row_encode(def, row, &t->enc) == CM_OK) {
        err = lw_avrofile_append_encoded(f->w, t->enc.data, t->enc.len);
    } else {
        avro_value_t *v = lw_avrofile_value(f->w);
        err = lw_row_fill(def, row, v);
        if (!err)
            err = lw_avrofile_append(f->w, v);
    }
    if (err)
        return err;
    bool has_ts = def->source != LW_SRC_LATE || row->ev;
    if (has_ts) {
        if (!f->has_ts || ts < f->ts_min)
            f->ts_min = ts;
        if (!f->has_ts || ts > f->ts_max)
            f->ts_max = ts;
        f->has_ts = true;
    }
    cover(t, row->partition, row->offset);
    if (!t->batch_rows)
        t->batch_started_ms = cm_mono_ms();
    t->batch_rows++;
    atomic_fetch_add_explicit(&t->rows_written, 1, memory_order_relaxed);
    if ((int64_t)lw_avrofile_size(f->w) >= t->o.roll_bytes) {
        size_t idx = (size_t)(f - t->open);
        err = close_file(t, idx);
    }
    return err;
}

bool lw_table_due(const lw_table_t *t, int64_t now_mono_ms)
{
    return t->batch_rows && now_mono_ms - t->batch_started_ms >= t->o.roll_age_ms;
}

uint64_t lw_table_batch_rows(const lw_table_t *t) { return t->batch_rows; }

/* ---------------------------------------------------------------- commits */

/* Fault injection for the crash tests: LAKE_CRASH_AT=<point> makes the
 * process die by SIGKILL when it reaches that point of a commit, exactly as
 * a kill -9 there would. Unset in production: one getenv per commit. */
void lw_crash_point(const char *point)
{
    const char *at = getenv("LAKE_CRASH_AT");
    if (at && strcmp(at, point) == 0)
        raise(SIGKILL);
}

static int64_t summary_int(const lw_meta_t *m, const char *key)
{
    const char *s = lw_meta_current_summary(m, key);
    return s ? strtoll(s, NULL, 10) : 0;
}

static void put_num(json_t *o, const char *k, int64_t v)
{
    char b[24];
    snprintf(b, sizeof(b), "%" PRId64, v);
    json_object_set_new(o, k, json_string(b));
}

/* Whether someone else committed offsets of partitions we have rows for. */
static bool overlaps(lw_table_t *t)
{
    for (size_t i = 0; i < t->n_parts; i++)
        if (t->first[i] >= 0 && t->committed[i] > t->first[i])
            return true;
    return false;
}

cm_err_t lw_table_refresh(lw_table_t *t, char *errstr, size_t errstr_size)
{
    lw_meta_t m = {NULL, 0};
    cm_err_t err = lw_meta_load(t->st, t->def->name, &m, errstr, errstr_size);
    if (err)
        return err;
    if (m.version != t->meta.version) {
        lw_meta_clear(&t->meta);
        t->meta = m;
        err = load_base_manifests(t, errstr, errstr_size);
        load_committed(t, &t->meta, NULL);
    } else {
        lw_meta_clear(&m);
    }
    for (size_t i = 0; i < t->n_parts; i++)
        if (t->first[i] < 0)
            t->pos[i] = t->committed[i];
    return err;
}

cm_err_t lw_table_commit(lw_table_t *t, char *errstr, size_t errstr_size)
{
    if (!t->batch_rows && !t->n_open && !t->n_done)
        return CM_OK;
    int64_t t0 = cm_mono_us();
    cm_err_t err = CM_OK;
    cm_buf_t buf;
    cm_buf_init(&buf, 0);
    lw_manifest_file_t *mfs = NULL;
    lw_crash_point("commit-start");
    if (errstr_size)
        errstr[0] = 0;
    while (t->n_open) {
        err = close_file(t, t->n_open - 1);
        if (err) {
            /* The rows of that file are gone: the batch cannot be committed
             * any more (its offsets would cover them). Drop it; the caller
             * reads it again from the committed offsets. */
            snprintf(errstr, errstr_size, "closing a data file: %s: batch dropped",
                     cm_err_str(err));
            discard_batch(t);
            goto out;
        }
    }
    char mkey[512], muri[PATH_MAX + 64];
    snprintf(mkey, sizeof(mkey), "%s/metadata/%s-m0.avro", t->def->name, t->batch);
    lw_storage_uri(t->st, mkey, muri, sizeof(muri));
    lw_manifest_file_t mf;
    lw_crash_point("files-closed");
    err = lw_manifest_write(t->def, t->done, t->n_done, t->o.manifest_codec, &buf, &mf,
                            errstr, errstr_size);
    if (!err && (err = journal_add(t, mkey)))
        snprintf(errstr, errstr_size, "writing the journal %s: %s", t->journal_key,
                 cm_err_str(err));
    if (!err && (err = lw_storage_put(t->st, mkey, buf.data, buf.len, false)))
        snprintf(errstr, errstr_size, "writing %s: %s", mkey, cm_err_str(err));
    if (err)
        goto out;
    lw_crash_point("manifest-written");
    mf.path = muri;
    mf.length = (int64_t)buf.len;
    int64_t added_size = 0;
    for (size_t i = 0; i < t->n_done; i++)
        added_size += t->done[i].file_size;
    size_t changed_parts = 0;
    for (size_t i = 0; i < t->n_done; i++) {
        size_t j = 0;
        while (j < i && memcmp(t->done[j].part, t->done[i].part, sizeof(t->done[i].part)))
            j++;
        changed_parts += j == i;
    }

    for (int attempt = 1;; attempt++) {
        if (overlaps(t)) {
            snprintf(errstr, errstr_size,
                     "another writer committed offsets of this batch: batch dropped");
            cm_log_warn("commit overlap, batch dropped", "table", "%s", t->def->name, NULL);
            discard_batch(t);
            err = CM_ERR_RETRY;
            goto out;
        }
        err = load_base_manifests(t, errstr, errstr_size);
        if (err)
            goto out;
        int64_t sid = random_id();
        int64_t parent = lw_meta_current_snapshot_id(&t->meta);
        int64_t seq =
            (int64_t)json_integer_value(json_object_get(t->meta.root, "last-sequence-number")) +
            1;
        mf.seq = mf.min_seq = seq;
        mf.added_snapshot_id = sid;
        free(mfs);
        mfs = calloc(t->n_base_mfs + 1, sizeof(*mfs));
        if (!mfs) {
            err = CM_ERR_NOMEM;
            goto out;
        }
        mfs[0] = mf; /* newest first, as Java's fast append does */
        if (t->n_base_mfs)
            memcpy(mfs + 1, t->base_mfs, t->n_base_mfs * sizeof(*mfs));
        char lkey[512], luri[PATH_MAX + 64];
        snprintf(lkey, sizeof(lkey), "%s/metadata/snap-%" PRId64 "-%d-%s.avro", t->def->name,
                 sid, attempt, t->batch);
        lw_storage_uri(t->st, lkey, luri, sizeof(luri));
        err = lw_manifest_list_write(mfs, t->n_base_mfs + 1, sid, parent, seq,
                                     t->o.manifest_codec, &buf, errstr, errstr_size);
        if (!err && (err = journal_add(t, lkey)))
            snprintf(errstr, errstr_size, "writing the journal %s: %s", t->journal_key,
                     cm_err_str(err));
        if (!err && (err = lw_storage_put(t->st, lkey, buf.data, buf.len, false)))
            snprintf(errstr, errstr_size, "writing %s: %s", lkey, cm_err_str(err));
        if (err)
            goto out;

        /* Offsets: the base's, with ours on top (max per partition). */
        json_t *offs = meta_offsets(&t->meta);
        json_t *mine = json_object_get(offs, t->topic);
        if (!json_is_object(mine)) {
            mine = json_object();
            json_object_set_new(offs, t->topic, mine);
        }
        for (size_t i = 0; i < t->n_parts; i++) {
            int64_t v = t->pos[i] > t->committed[i] ? t->pos[i] : t->committed[i];
            if (v >= 0) {
                char k[24];
                snprintf(k, sizeof(k), "%zu", i);
                json_object_set_new(mine, k, json_integer(v));
            }
        }
        char *offs_text = json_dumps(offs, JSON_COMPACT | JSON_SORT_KEYS);
        json_decref(offs);

        int64_t rows = (int64_t)t->batch_rows;
        json_t *sum = json_object();
        json_object_set_new(sum, "operation", json_string("append"));
        put_num(sum, "added-data-files", (int64_t)t->n_done);
        put_num(sum, "added-records", rows);
        put_num(sum, "added-files-size", added_size);
        put_num(sum, "changed-partition-count", (int64_t)changed_parts);
        put_num(sum, "total-records", summary_int(&t->meta, "total-records") + rows);
        put_num(sum, "total-files-size", summary_int(&t->meta, "total-files-size") + added_size);
        put_num(sum, "total-data-files",
                summary_int(&t->meta, "total-data-files") + (int64_t)t->n_done);
        put_num(sum, "total-delete-files", 0);
        put_num(sum, "total-position-deletes", 0);
        put_num(sum, "total-equality-deletes", 0);
        json_object_set_new(sum, LW_SUMMARY_OFFSETS, json_string(offs_text ? offs_text : "{}"));
        json_object_set_new(sum, LW_SUMMARY_BATCH, json_string(t->batch));
        json_object_set_new(sum, "lake.writer", json_string(t->instance));
        free(offs_text);

        int64_t now = cm_now_ms();
        json_t *snap = json_pack("{s:I, s:I, s:I, s:s, s:o, s:i}", "snapshot-id",
                                 (json_int_t)sid, "sequence-number", (json_int_t)seq,
                                 "timestamp-ms", (json_int_t)now, "manifest-list", luri,
                                 "summary", sum, "schema-id", 0);
        if (parent >= 0)
            json_object_set_new(snap, "parent-snapshot-id", json_integer(parent));
        char bkey[512], buri[PATH_MAX + 64];
        lw_meta_key(t->def->name, t->meta.version, bkey, sizeof(bkey));
        lw_storage_uri(t->st, bkey, buri, sizeof(buri));
        json_t *root = lw_meta_with_snapshot(&t->meta, snap, buri, now);
        if (!root) {
            err = CM_ERR_NOMEM;
            goto out;
        }
        lw_crash_point("list-written");
        err = lw_meta_publish(t->st, t->def->name, &t->meta, root, errstr, errstr_size);
        if (err == CM_ERR_RETRY && attempt < LW_COMMIT_ATTEMPTS) {
            /* Someone else committed: rebase on the newest version. */
            pthread_mutex_lock(&t->stats_mu);
            t->stats.commit_conflicts++;
            pthread_mutex_unlock(&t->stats_mu);
            lw_storage_delete(t->st, lkey);
            lw_meta_t m = {NULL, 0};
            err = lw_meta_load(t->st, t->def->name, &m, errstr, errstr_size);
            if (err)
                goto out;
            lw_meta_clear(&t->meta);
            t->meta = m;
            load_committed(t, &t->meta, NULL);
            err = load_base_manifests(t, errstr, errstr_size);
            if (err)
                goto out;
            continue;
        }
        if (err)
            goto out;
        break;
    }

    /* Committed: the base moves on (mfs borrows its paths: copy them). */
    {
        size_t n = t->n_base_mfs + 1;
        lw_manifest_file_t *nb = calloc(n, sizeof(*nb));
        size_t i = 0;
        for (; nb && i < n; i++)
            if (lw_manifest_file_copy(&nb[i], &mfs[i]))
                break;
        if (!nb || i < n) {
            /* The commit stands; forget the base so that the next commit
             * reads the manifest list back from storage. */
            lw_manifest_files_free(nb, i);
            lw_manifest_files_free(t->base_mfs, t->n_base_mfs);
            t->base_mfs = NULL;
            t->n_base_mfs = 0;
            t->base_mfs_snapshot = -2;
        } else {
            lw_manifest_files_free(t->base_mfs, t->n_base_mfs);
            t->base_mfs = nb;
            t->n_base_mfs = n;
        }
    }
    if (t->base_mfs_snapshot != -2)
        t->base_mfs_snapshot = lw_meta_current_snapshot_id(&t->meta);
    load_committed(t, &t->meta, NULL);
    uint64_t files = t->n_done;
    for (size_t i = 0; i < t->n_done; i++)
        lw_datafile_clear(&t->done[i]);
    t->n_done = 0;
    lw_crash_point("published");
    journal_clear(t);
    lw_crash_point("journal-cleared");
    uint64_t rows = t->batch_rows;
    t->batch_rows = 0;
    t->batch_started_ms = 0;
    for (size_t i = 0; i < t->n_parts; i++)
        t->first[i] = -1;
    new_batch_id(t->batch);
    t->file_seq = 0;
    double secs = (double)(cm_mono_us() - t0) / 1e6;
    pthread_mutex_lock(&t->stats_mu);
    t->stats.commits++;
    t->stats.rows_committed += rows;
    t->stats.bytes += (uint64_t)added_size;
    t->stats.files_committed += files;
    t->stats.last_commit_files = files;
    t->stats.last_commit_seconds = secs;
    t->stats.commit_seconds_sum += secs;
    t->stats.snapshot_id = lw_meta_current_snapshot_id(&t->meta);
    t->stats.version = t->meta.version;
    pthread_mutex_unlock(&t->stats_mu);
    cm_log_debug("committed", "table", "%s", t->def->name, "rows", "%ld", (long)rows,
                 "files", "%ld", (long)files, "version", "%ld", (long)t->meta.version, NULL);
out:
    free(mfs);
    cm_buf_free(&buf);
    if (err && errstr_size && !errstr[0])
        snprintf(errstr, errstr_size, "%s", cm_err_str(err)); /* out of memory */
    if (err && err != CM_ERR_RETRY) {
        pthread_mutex_lock(&t->stats_mu);
        t->stats.commit_failures++;
        pthread_mutex_unlock(&t->stats_mu);
    }
    return err;
}

void lw_table_get_stats(const lw_table_t *t, lw_table_stats_t *out)
{
    pthread_mutex_lock((pthread_mutex_t *)&t->stats_mu);
    *out = t->stats;
    pthread_mutex_unlock((pthread_mutex_t *)&t->stats_mu);
    out->rows = atomic_load_explicit(&t->rows_written, memory_order_relaxed);
}
