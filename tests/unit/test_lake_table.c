/*
 * test_lake_table: a table on a local warehouse, end to end without Kafka:
 * rows -> data files -> manifest -> manifest list -> metadata v2, read back
 * with avro-c; offsets in the snapshot summary; a commit conflict is rebased;
 * an interrupted batch is cleaned up on reopen; expire-snapshots.
 *
 * LW_TEST_KEEP=1 keeps the warehouse (its path is printed) for a look with
 * other readers.
 */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <signal.h>
#include <sys/resource.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <unistd.h>

#include <cmocka.h>
#include <jansson.h>

#include "cm_event.h"
#include "cm_records.h"
#include "../../services/lake-writer/lake_avrofile.h"
#include "../../services/lake-writer/lake_manifest.h"
#include "../../services/lake-writer/lake_metadata.h"
#include "../../services/lake-writer/lake_schema.h"
#include "../../services/lake-writer/lake_storage.h"
#include "../../services/lake-writer/lake_table.h"

typedef struct {
    char dir[64];
    lw_storage_t *st;
} fx_t;

static int setup(void **state)
{
    fx_t *fx = calloc(1, sizeof(*fx));
    strcpy(fx->dir, "/tmp/test_lake_whXXXXXX");
    if (!mkdtemp(fx->dir))
        return -1;
    lw_storage_opts_t o = {.warehouse = fx->dir, .fsync = false};
    char err[256];
    fx->st = lw_storage_new(&o, err, sizeof(err));
    if (!fx->st)
        return -1;
    *state = fx;
    return 0;
}

static int teardown(void **state)
{
    fx_t *fx = *state;
    lw_storage_destroy(fx->st);
    if (getenv("LW_TEST_KEEP")) {
        fprintf(stderr, "kept warehouse: %s\n", fx->dir);
    } else {
        char cmd[128];
        snprintf(cmd, sizeof(cmd), "rm -rf %s", fx->dir);
        if (system(cmd)) {
        }
    }
    free(fx);
    return 0;
}

static void make_event(cm_event_t *ev, int i, int64_t ts_ms)
{
    char id[32];
    cm_event_reset(ev);
    snprintf(id, sizeof(id), "ev-%06d", i);
    cm_event_set_str(ev, &ev->event_id, id, strlen(id));
    cm_event_set_str(ev, &ev->user_id, "user-1", 6);
    cm_event_set_str(ev, &ev->event_type, i % 2 ? "purchase" : "page_view",
                     i % 2 ? 8 : 9);
    cm_event_set_str(ev, &ev->page_url, "https://x.test/a", 16);
    if (i % 3 == 0)
        cm_event_set_str(ev, &ev->geo_country, "DE", 2);
    ev->ts_ms = ts_ms;
    ev->received_at_ms = ts_ms + 5;
    if (i % 2) {
        ev->has_price = true;
        ev->price_micros = 12500000;
        ev->quantity = 2;
    }
}

static lw_table_t *open_events(fx_t *fx)
{
    lw_table_opts_t o = {.topic = "clickstream.raw", .instance = "test"};
    char err[256];
    lw_table_t *t = lw_table_open(lw_table_def_find("events_raw"), fx->st, &o, err,
                                  sizeof(err));
    if (!t)
        fprintf(stderr, "open: %s\n", err);
    return t;
}

static int64_t count_rows(fx_t *fx, const char *key)
{
    char path[512];
    snprintf(path, sizeof(path), "%s/%s", fx->dir, key);
    avro_file_reader_t r;
    if (avro_file_reader(path, &r))
        return -1;
    avro_schema_t sch = avro_file_reader_get_writer_schema(r);
    avro_value_iface_t *iface = avro_generic_class_from_schema(sch);
    avro_value_t v;
    avro_generic_value_new(iface, &v);
    int64_t n = 0;
    while (avro_file_reader_read_value(r, &v) == 0) {
        n++;
        avro_value_reset(&v);
    }
    avro_value_decref(&v);
    avro_value_iface_decref(iface);
    avro_schema_decref(sch);
    avro_file_reader_close(r);
    return n;
}

typedef struct {
    fx_t *fx;
    int64_t rows;
    int files;
} sum_t;

static void sum_entry(const char *path, int64_t count, void *ud)
{
    sum_t *s = ud;
    const char *k = strstr(path, "events_raw/");
    assert_non_null(k);
    assert_int_equal(count_rows(s->fx, k), count);
    s->rows += count;
    s->files++;
}

/* Rows reachable from the current snapshot, each data file read by avro-c. */
static int64_t table_rows(fx_t *fx, const char *table, int *files)
{
    lw_meta_t m = {NULL, 0};
    char err[256];
    assert_int_equal(lw_meta_load(fx->st, table, &m, err, sizeof(err)), CM_OK);
    int64_t cur = lw_meta_current_snapshot_id(&m);
    if (cur < 0) {
        lw_meta_clear(&m);
        return 0;
    }
    const char *ml = json_string_value(
        json_object_get(lw_meta_snapshot(&m, cur), "manifest-list"));
    const char *k = strstr(ml, table);
    cm_buf_t b;
    cm_buf_init(&b, 0);
    assert_int_equal(lw_storage_get(fx->st, k, &b), CM_OK);
    lw_manifest_file_t *mfs;
    size_t n;
    assert_int_equal(lw_manifest_list_read(b.data, b.len, &mfs, &n, err, sizeof(err)), CM_OK);
    sum_t s = {fx, 0, 0};
    int64_t listed = 0;
    for (size_t i = 0; i < n; i++) {
        assert_int_equal(lw_storage_get(fx->st, strstr(mfs[i].path, table), &b), CM_OK);
        assert_int_equal((int64_t)b.len, mfs[i].length);
        assert_int_equal(lw_manifest_read_paths(b.data, b.len, sum_entry, &s, err, sizeof(err)),
                         CM_OK);
        listed += mfs[i].added_rows;
    }
    assert_int_equal(listed, s.rows);
    const char *tr = lw_meta_current_summary(&m, "total-records");
    assert_non_null(tr);
    assert_int_equal(strtoll(tr, NULL, 10), s.rows);
    lw_manifest_files_free(mfs, n);
    cm_buf_free(&b);
    lw_meta_clear(&m);
    if (files)
        *files = s.files;
    return s.rows;
}

static void test_commit_and_reopen(void **state)
{
    fx_t *fx = *state;
    lw_table_t *t = open_events(fx);
    assert_non_null(t);
    assert_int_equal(lw_table_pos(t, 0), -1);
    cm_event_t ev;
    cm_event_init(&ev);
    const int64_t base = 1705314600000LL; /* 2024-01-15T10:30:00Z */
    for (int i = 0; i < 100; i++) {
        make_event(&ev, i, base + (int64_t)i * 60000); /* 100 minutes: 3 hours */
        lw_row_t row = {.ev = &ev, .partition = i % 2, .offset = i / 2};
        assert_true(lw_table_wants(t, row.partition, row.offset));
        assert_int_equal(lw_table_append(t, &row), CM_OK);
    }
    char err[256];
    assert_int_equal(lw_table_commit(t, err, sizeof(err)), CM_OK);
    assert_int_equal(lw_table_committed(t, 0), 50);
    assert_int_equal(lw_table_committed(t, 1), 50);
    int files;
    assert_int_equal(table_rows(fx, "events_raw", &files), 100);
    assert_int_equal(files, 3); /* hours 10, 11, 12 */

    /* A second batch, then reopen: offsets come from the summary. */
    for (int i = 100; i < 110; i++) {
        make_event(&ev, i, base);
        lw_row_t row = {.ev = &ev, .partition = 0, .offset = i};
        assert_int_equal(lw_table_append(t, &row), CM_OK);
    }
    assert_int_equal(lw_table_commit(t, err, sizeof(err)), CM_OK);
    lw_table_stats_t s;
    lw_table_get_stats(t, &s);
    assert_int_equal(s.commits, 2);
    assert_int_equal(s.rows_committed, 110);
    lw_table_destroy(t);
    t = open_events(fx);
    assert_int_equal(lw_table_committed(t, 0), 110);
    assert_int_equal(lw_table_committed(t, 1), 50);
    assert_false(lw_table_wants(t, 0, 109));
    assert_true(lw_table_wants(t, 0, 110));
    assert_int_equal(table_rows(fx, "events_raw", NULL), 110);

    /* version-hint.text: the bare number. */
    cm_buf_t b;
    cm_buf_init(&b, 0);
    assert_int_equal(lw_storage_get(fx->st, "events_raw/metadata/version-hint.text", &b), CM_OK);
    assert_int_equal(b.len, 1);
    assert_memory_equal(b.data, "3", 1);
    cm_buf_free(&b);
    lw_table_destroy(t);
    cm_event_free(&ev);
}

static void test_interrupted_batch_cleaned(void **state)
{
    fx_t *fx = *state;
    lw_table_t *t = open_events(fx);
    cm_event_t ev;
    cm_event_init(&ev);
    for (int i = 0; i < 10; i++) {
        make_event(&ev, i, 1705314600000LL);
        lw_row_t row = {.ev = &ev, .partition = 0, .offset = i};
        assert_int_equal(lw_table_append(t, &row), CM_OK);
    }
    char err[256];
    assert_int_equal(lw_table_commit(t, err, sizeof(err)), CM_OK);
    for (int i = 10; i < 20; i++) {
        make_event(&ev, i, 1705314600000LL);
        lw_row_t row = {.ev = &ev, .partition = 0, .offset = i};
        assert_int_equal(lw_table_append(t, &row), CM_OK);
    }
    /* A "crash": the table is dropped without discarding (fork keeps the
     * files as a killed process would leave them). */
    pid_t pid = fork();
    if (pid == 0)
        _exit(0); /* nothing: the parent plays the crashed process */
    char journal[256];
    snprintf(journal, sizeof(journal), "%s/events_raw/lw-journal/test.json", fx->dir);
    struct stat sb;
    assert_int_equal(stat(journal, &sb), 0);
    /* Reopen while the old one is still "alive" (same instance id): it
     * removes the batch's files. */
    lw_table_t *t2 = open_events(fx);
    assert_non_null(t2);
    assert_int_not_equal(stat(journal, &sb), 0);
    assert_int_equal(lw_table_committed(t2, 0), 10);
    assert_int_equal(table_rows(fx, "events_raw", NULL), 10);
    lw_table_destroy(t2);
    lw_table_destroy(t);
    cm_event_free(&ev);
}

static void test_conflict_rebase(void **state)
{
    fx_t *fx = *state;
    lw_table_opts_t o1 = {.topic = "clickstream.sessions", .instance = "a"};
    lw_table_opts_t o2 = {.topic = "clickstream.sessions", .instance = "b"};
    char err[256];
    const lw_table_def_t *def = lw_table_def_find("sessions");
    lw_table_t *a = lw_table_open(def, fx->st, &o1, err, sizeof(err));
    lw_table_t *b = lw_table_open(def, fx->st, &o2, err, sizeof(err));
    assert_non_null(a);
    assert_non_null(b);
    cm_session_t s;
    cm_session_init(&s);
    s.session_id = "s1";
    s.user_id = "u1";
    s.start_ms = 1705314600000LL;
    s.end_ms = s.start_ms + 1000;
    s.revenue_micros = 1234567;
    lw_row_t row = {.session = &s, .partition = 0, .offset = 0};
    assert_int_equal(lw_table_append(a, &row), CM_OK);
    row.partition = 1;
    assert_int_equal(lw_table_append(b, &row), CM_OK);
    assert_int_equal(lw_table_commit(a, err, sizeof(err)), CM_OK);
    /* b's base is stale: its commit meets v2 taken and rebases. */
    assert_int_equal(lw_table_commit(b, err, sizeof(err)), CM_OK);
    lw_table_stats_t st;
    lw_table_get_stats(b, &st);
    assert_int_equal(st.commit_conflicts, 1);
    assert_int_equal(lw_table_committed(b, 0), 1);
    assert_int_equal(lw_table_committed(b, 1), 1);
    lw_meta_t m = {NULL, 0};
    assert_int_equal(lw_meta_load(fx->st, "sessions", &m, err, sizeof(err)), CM_OK);
    assert_int_equal(m.version, 3);
    assert_string_equal(lw_meta_current_summary(&m, "total-records"), "2");
    assert_int_equal(json_array_size(json_object_get(m.root, "snapshots")), 2);

    /* A writer that has rows for offsets someone else committed drops them. */
    row.partition = 1;
    row.offset = 1;
    assert_int_equal(lw_table_append(a, &row), CM_OK); /* a: p1 first = 1 */
    row.offset = 1;
    assert_int_equal(lw_table_append(b, &row), CM_OK);
    assert_int_equal(lw_table_commit(b, err, sizeof(err)), CM_OK); /* p1 -> 2 */
    assert_int_equal(lw_table_commit(a, err, sizeof(err)), CM_ERR_RETRY);
    assert_int_equal(lw_table_pos(a, 1), 2);
    lw_meta_clear(&m);
    assert_int_equal(lw_meta_load(fx->st, "sessions", &m, err, sizeof(err)), CM_OK);
    assert_string_equal(lw_meta_current_summary(&m, "total-records"), "3");

    /* expire-snapshots keeps the current one. */
    int expired = 0;
    assert_int_equal(lw_meta_expire_snapshots(fx->st, "sessions", INT64_MAX, 1, &expired, err,
                                              sizeof(err)),
                     CM_OK);
    assert_int_equal(expired, 2);
    lw_meta_clear(&m);
    assert_int_equal(lw_meta_load(fx->st, "sessions", &m, err, sizeof(err)), CM_OK);
    assert_int_equal(json_array_size(json_object_get(m.root, "snapshots")), 1);
    assert_string_equal(lw_meta_current_summary(&m, "total-records"), "3");
    lw_meta_clear(&m);
    lw_table_destroy(a);
    lw_table_destroy(b);
    cm_session_free(&s);
}

static void test_all_tables_and_rolling(void **state)
{
    fx_t *fx = *state;
    char err[256];
    cm_window_result_t w;
    cm_window_result_init(&w);
    w.window_size_ms = 60000;
    w.window_start_ms = 1705314600000LL;
    w.window_end_ms = w.window_start_ms + 60000;
    w.dimension = "url";
    cm_window_result_add_count(&w, "/a", 3);
    cm_window_result_add_count(&w, "/b", 4);
    cm_window_result_add_top_url(&w, "/b", 4);
    lw_table_opts_t o = {.topic = "clickstream.metrics", .instance = "t", .roll_bytes = 4096};
    lw_table_t *t = lw_table_open(lw_table_def_find("metrics_1min"), fx->st, &o, err,
                                  sizeof(err));
    assert_non_null(t);
    for (int i = 0; i < 200; i++) {
        lw_row_t row = {.window = &w, .partition = 0, .offset = i};
        assert_int_equal(lw_table_append(t, &row), CM_OK);
    }
    assert_int_equal(lw_table_commit(t, err, sizeof(err)), CM_OK);
    lw_table_stats_t s;
    lw_table_get_stats(t, &s);
    assert_true(s.last_commit_files > 1); /* rolled by size */
    lw_table_destroy(t);

    lw_table_opts_t ol = {.topic = "clickstream.late", .instance = "t"};
    t = lw_table_open(lw_table_def_find("late_events"), fx->st, &ol, err, sizeof(err));
    assert_non_null(t);
    lw_row_t bad = {.partition = 0, .offset = 0, .reason = "undecodable", .raw = "\x01\x02",
                    .raw_len = 2};
    assert_int_equal(lw_table_append(t, &bad), CM_OK);
    cm_event_t ev;
    cm_event_init(&ev);
    make_event(&ev, 1, 1705314600000LL);
    lw_row_t good = {.ev = &ev, .partition = 0, .offset = 1, .reason = "late"};
    assert_int_equal(lw_table_append(t, &good), CM_OK);
    assert_int_equal(lw_table_commit(t, err, sizeof(err)), CM_OK);
    lw_table_destroy(t);
    cm_event_free(&ev);
    cm_window_result_free(&w);
}

/* A child writes a batch and dies by SIGKILL at one point of the commit; the
 * parent reopens the table: the batch is in completely or not at all, the
 * offsets say which, and no data file is left that no snapshot lists. */
static void crash_at(fx_t *fx, const char *point, int expect_committed)
{
    pid_t pid = fork();
    assert_true(pid >= 0);
    if (pid == 0) {
        lw_table_t *t = open_events(fx);
        cm_event_t ev;
        cm_event_init(&ev);
        int64_t base = lw_table_pos(t, 0) < 0 ? 0 : lw_table_pos(t, 0);
        for (int i = 0; i < 50; i++) {
            make_event(&ev, (int)base + i, 1705314600000LL + i * 100000LL);
            lw_row_t row = {.ev = &ev, .partition = 0, .offset = base + i};
            lw_table_append(t, &row);
        }
        setenv("LAKE_CRASH_AT", point, 1);
        char err[256];
        lw_table_commit(t, err, sizeof(err));
        _exit(3); /* not reached when the point exists */
    }
    int status;
    waitpid(pid, &status, 0);
    assert_true(WIFSIGNALED(status));
    assert_int_equal(WTERMSIG(status), SIGKILL);
    lw_table_t *t = open_events(fx);
    assert_non_null(t);
    int64_t committed = lw_table_committed(t, 0);
    int files = 0;
    int64_t rows = table_rows(fx, "events_raw", &files);
    assert_int_equal(rows, committed < 0 ? 0 : committed);
    assert_int_equal(committed, expect_committed);
    /* Orphans: every .avro under data/ is listed by the current snapshot. */
    char cmd[256];
    snprintf(cmd, sizeof(cmd), "find %s/events_raw/data -name '*.avro' | wc -l", fx->dir);
    FILE *p = popen(cmd, "r");
    int on_disk = -1;
    assert_int_equal(fscanf(p, "%d", &on_disk), 1);
    pclose(p);
    assert_int_equal(on_disk, files);
    lw_table_destroy(t);
}

static void test_crash_points(void **state)
{
    fx_t *fx = *state;
    static const struct {
        const char *point;
        int commits;
    } pts[] = {
        {"commit-start", 0},     {"files-closed", 0}, {"manifest-written", 0},
        {"list-written", 0},     {"before-hint", 1},  {"published", 1},
        {"journal-cleared", 1},
    };
    int64_t done = 0;
    for (size_t i = 0; i < sizeof(pts) / sizeof(pts[0]); i++) {
        done += pts[i].commits * 50;
        crash_at(fx, pts[i].point, done == 0 ? -1 : (int)done);
    }
}

/* Storage failing: RLIMIT_FSIZE makes every write past the first byte fail
 * (EFBIG), as a full disk fails them (ENOSPC). */
static void storage_fails(bool on)
{
    struct rlimit rl;
    assert_int_equal(getrlimit(RLIMIT_FSIZE, &rl), 0);
    rl.rlim_cur = on ? 1 : rl.rlim_max;
    assert_int_equal(setrlimit(RLIMIT_FSIZE, &rl), 0);
}

static void append_range(lw_table_t *t, cm_event_t *ev, int from, int to)
{
    for (int i = from; i < to; i++) {
        make_event(ev, i, 1705314600000LL);
        lw_row_t row = {.ev = ev, .partition = 0, .offset = i};
        assert_true(lw_table_wants(t, 0, i));
        assert_int_equal(lw_table_append(t, &row), CM_OK);
    }
}

/* err was filled with 'X' before the call: it must now hold a message. */
static bool printable(const char *s, size_t size)
{
    if (!memchr(s, 0, size) || !s[0] || s[0] == 'X')
        return false;
    for (; *s; s++)
        if (*s < 0x20 || *s > 0x7e)
            return false;
    return true;
}

/* A data file that cannot be closed loses its rows: the failed commit drops
 * the batch and rewinds, and the next commit must not claim its offsets. */
static void test_storage_failure_on_close(void **state)
{
    fx_t *fx = *state;
    signal(SIGXFSZ, SIG_IGN);
    lw_table_t *t = open_events(fx);
    cm_event_t ev;
    cm_event_init(&ev);
    append_range(t, &ev, 0, 10);
    char err[256];
    assert_int_equal(lw_table_commit(t, err, sizeof(err)), CM_OK);
    append_range(t, &ev, 10, 20);
    storage_fails(true);
    memset(err, 'X', sizeof(err));
    cm_err_t e = lw_table_commit(t, err, sizeof(err));
    storage_fails(false);
    assert_int_not_equal(e, CM_OK);
    assert_non_null(strstr(err, "closing a data file"));
    assert_true(printable(err, sizeof(err)));
    assert_int_equal(lw_table_batch_rows(t), 0);
    assert_int_equal(lw_table_pos(t, 0), 10);
    assert_true(lw_table_wants(t, 0, 10));
    /* Storage back: nothing to commit until the rows are read again. */
    assert_int_equal(lw_table_commit(t, err, sizeof(err)), CM_OK);
    assert_int_equal(lw_table_committed(t, 0), 10);
    assert_int_equal(table_rows(fx, "events_raw", NULL), 10);
    append_range(t, &ev, 10, 20);
    assert_int_equal(lw_table_commit(t, err, sizeof(err)), CM_OK);
    assert_int_equal(lw_table_committed(t, 0), 20);
    assert_int_equal(table_rows(fx, "events_raw", NULL), 20);
    lw_table_destroy(t);
    cm_event_free(&ev);
}

/* Data files closed (rolled) before the failure: the manifest cannot be
 * written, the batch is kept, and the retry commits all of it. */
static void test_storage_failure_after_close(void **state)
{
    fx_t *fx = *state;
    signal(SIGXFSZ, SIG_IGN);
    lw_table_opts_t o = {.topic = "clickstream.raw", .instance = "test", .roll_bytes = 1};
    char err[256];
    lw_table_t *t = lw_table_open(lw_table_def_find("events_raw"), fx->st, &o, err,
                                  sizeof(err));
    assert_non_null(t);
    cm_event_t ev;
    cm_event_init(&ev);
    append_range(t, &ev, 0, 5);
    storage_fails(true);
    memset(err, 'X', sizeof(err));
    cm_err_t e = lw_table_commit(t, err, sizeof(err));
    storage_fails(false);
    assert_int_not_equal(e, CM_OK);
    assert_true(printable(err, sizeof(err)));
    assert_int_equal(lw_table_batch_rows(t), 5);
    assert_int_equal(lw_table_commit(t, err, sizeof(err)), CM_OK);
    assert_int_equal(lw_table_committed(t, 0), 5);
    int files;
    assert_int_equal(table_rows(fx, "events_raw", &files), 5);
    assert_int_equal(files, 5);
    lw_table_destroy(t);
    cm_event_free(&ev);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test_setup_teardown(test_commit_and_reopen, setup, teardown),
        cmocka_unit_test_setup_teardown(test_interrupted_batch_cleaned, setup, teardown),
        cmocka_unit_test_setup_teardown(test_conflict_rebase, setup, teardown),
        cmocka_unit_test_setup_teardown(test_all_tables_and_rolling, setup, teardown),
        cmocka_unit_test_setup_teardown(test_crash_points, setup, teardown),
        cmocka_unit_test_setup_teardown(test_storage_failure_on_close, setup, teardown),
        cmocka_unit_test_setup_teardown(test_storage_failure_after_close, setup, teardown),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
