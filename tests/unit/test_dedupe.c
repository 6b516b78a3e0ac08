/*
 * test_dedupe: the event_id dedupe set (cm_dedupe.h): horizon by watermark,
 * growth, reclaim, eviction at the cap, serialization and the journal.
 * CM_DEDUPE_BENCH=1 also prints insert rates of this table and of uthash
 * (why the table is hand-written).
 */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include <cmocka.h>
#include <uthash.h>

#include "cm_dedupe.h"

static cm_dedupe_t *mk(int64_t horizon, size_t max)
{
    char errstr[128];
    cm_dedupe_t *d = cm_dedupe_new(horizon, max, errstr, sizeof(errstr));
    assert_non_null(d);
    return d;
}

static void test_hash_is_stable(void **state)
{
    (void)state;
    /* values computed independently (Python, formula in the header) */
    assert_true(cm_dedupe_hash("", 0) == 0xefd01f60ba992926ULL);
    assert_true(cm_dedupe_hash("event-1", 7) == 0xb9b87c5e3bc839d2ULL);
    assert_true(cm_dedupe_hash("0b7c5d6e-1f2a-4b3c-8d9e-0a1b2c3d4e5f", 36) ==
                0xd57e02755aa4b50cULL);
}

static void test_bad_args(void **state)
{
    (void)state;
    char errstr[128] = "";
    assert_null(cm_dedupe_new(-1, 0, errstr, sizeof(errstr)));
    assert_null(cm_dedupe_new(10, 3, errstr, sizeof(errstr)));
    assert_true(errstr[0]);
    cm_dedupe_destroy(NULL);
}

static void test_horizon(void **state)
{
    (void)state;
    /* horizon = bound 10 s + lateness 5 min */
    cm_dedupe_t *d = mk(310000, 0);
    uint64_t h = cm_dedupe_hash("a", 1);
    assert_true(cm_dedupe_insert(d, h, 1000000, 990000));
    assert_false(cm_dedupe_insert(d, h, 1000000, 995000)); /* duplicate */
    assert_true(cm_dedupe_contains(d, h, 1310000));         /* wm == t + horizon: alive */
    assert_false(cm_dedupe_insert(d, h, 1000000, 1310000));
    assert_false(cm_dedupe_contains(d, h, 1310001)); /* wm > t + horizon: gone */
    assert_true(cm_dedupe_insert(d, h, 1000000, 1310001));
    cm_dedupe_stats_t st;
    cm_dedupe_get_stats(d, &st);
    assert_int_equal(st.inserts, 2);
    assert_int_equal(st.duplicates, 2);
    assert_int_equal(st.entries, 1);
    /* a NONE watermark keeps everything */
    assert_true(cm_dedupe_insert(d, cm_dedupe_hash("b", 1), 5, INT64_MIN));
    assert_false(cm_dedupe_insert(d, cm_dedupe_hash("b", 1), 5, INT64_MIN));
    /* saturation: t near INT64_MAX never expires by overflow */
    assert_true(cm_dedupe_insert(d, 77, INT64_MAX - 5, 0));
    assert_true(cm_dedupe_contains(d, 77, INT64_MAX));
    cm_dedupe_destroy(d);
}

static void test_many_grow_and_expire(void **state)
{
    (void)state;
    cm_dedupe_t *d = mk(1000, 0);
    char id[32];
    /* 200k ids at times 0..199999, watermark trailing by 500 */
    for (int i = 0; i < 200000; i++) {
        int n = snprintf(id, sizeof(id), "id-%d", i);
        assert_true(cm_dedupe_insert(d, cm_dedupe_hash(id, (size_t)n), i, i - 500));
    }
    /* the last ~1500 are alive, older ones expired */
    for (int i = 0; i < 200000; i += 7) {
        int n = snprintf(id, sizeof(id), "id-%d", i);
        bool alive = cm_dedupe_contains(d, cm_dedupe_hash(id, (size_t)n), 199500);
        assert_int_equal(alive, i + 1000 >= 199500);
    }
    /* reclaim happened while inserting: far fewer stored than inserted */
    assert_true(cm_dedupe_count(d) < 10000);
    size_t removed = cm_dedupe_expire(d, 199500);
    (void)removed;
    assert_int_equal(cm_dedupe_count(d), 1500);
    for (int i = 198500; i < 200000; i++) {
        int n = snprintf(id, sizeof(id), "id-%d", i);
        assert_true(cm_dedupe_contains(d, cm_dedupe_hash(id, (size_t)n), 199500));
    }
    assert_int_equal(cm_dedupe_expire(d, INT64_MAX), 1500);
    assert_int_equal(cm_dedupe_count(d), 0);
    cm_dedupe_destroy(d);
}

static void test_no_expiry_grows(void **state)
{
    (void)state;
    cm_dedupe_t *d = mk(INT64_MAX / 4, 0);
    for (uint64_t i = 1; i <= 100000; i++)
        assert_true(cm_dedupe_insert(d, i * 0x9e3779b97f4a7c15ULL, 0, 0));
    for (uint64_t i = 1; i <= 100000; i++)
        assert_false(cm_dedupe_insert(d, i * 0x9e3779b97f4a7c15ULL, 0, 0));
    cm_dedupe_stats_t st;
    cm_dedupe_get_stats(d, &st);
    assert_int_equal(st.entries, 100000);
    assert_true(st.capacity >= 100000 / 7 * 10);
    assert_int_equal(st.evictions, 0);
    cm_dedupe_destroy(d);
}

static void test_cap_evicts_oldest(void **state)
{
    (void)state;
    cm_dedupe_t *d = mk(INT64_MAX / 4, 1000);
    for (int64_t i = 0; i < 5000; i++)
        cm_dedupe_insert(d, (uint64_t)(i + 1) * 0x9e3779b97f4a7c15ULL, i, 0);
    cm_dedupe_stats_t st;
    cm_dedupe_get_stats(d, &st);
    assert_true(st.entries <= 1000);
    assert_true(st.evictions >= 4000);
    /* the newest survive */
    assert_true(cm_dedupe_contains(d, (uint64_t)5000 * 0x9e3779b97f4a7c15ULL, 0));
    assert_false(cm_dedupe_contains(d, 1 * 0x9e3779b97f4a7c15ULL, 0));
    cm_dedupe_destroy(d);
}

static void test_serialize_load(void **state)
{
    (void)state;
    cm_dedupe_t *d = mk(100, 0);
    for (int64_t i = 0; i < 1000; i++)
        cm_dedupe_insert(d, (uint64_t)i + 1, i, 0);
    cm_buf_t b;
    cm_buf_init(&b, 0);
    assert_int_equal(cm_dedupe_serialize(d, 850, &b), CM_OK);
    /* alive at 850: t >= 750 -> 250 entries */
    assert_int_equal(b.len, CM_DEDUPE_HEADER_SIZE + 250 * CM_DEDUPE_ENTRY_SIZE);
    cm_dedupe_t *e = mk(100, 0);
    assert_int_equal(cm_dedupe_load(e, b.data, b.len, 850), CM_OK);
    assert_int_equal(cm_dedupe_count(e), 250);
    for (int64_t i = 0; i < 1000; i++)
        assert_int_equal(cm_dedupe_contains(e, (uint64_t)i + 1, 850), i >= 750);
    /* loaded entries are not journaled */
    cm_dedupe_journal_enable(e, true);
    assert_int_equal(cm_dedupe_journal_len(e), 0);
    /* malformed input */
    assert_int_equal(cm_dedupe_load(e, b.data, b.len - 1, 850), CM_ERR_PARSE);
    assert_int_equal(cm_dedupe_load(e, b.data, 3, 850), CM_ERR_PARSE);
    b.data[0] = 9;
    assert_int_equal(cm_dedupe_load(e, b.data, b.len, 850), CM_ERR_PARSE);
    /* a cap too small for the serialization */
    cm_buf_t small;
    cm_buf_init(&small, 64);
    assert_int_equal(cm_dedupe_serialize(d, 850, &small), CM_ERR_TOO_LARGE);
    assert_int_equal(small.len, 0);
    cm_buf_free(&small);
    cm_buf_free(&b);
    cm_dedupe_destroy(d);
    cm_dedupe_destroy(e);
}

static void test_journal(void **state)
{
    (void)state;
    cm_dedupe_t *d = mk(100, 0);
    cm_buf_t b;
    cm_buf_init(&b, 0);
    size_t n = 99;
    int64_t mx = 0;
    cm_dedupe_insert(d, 5, 1, 0); /* journal off */
    cm_dedupe_journal_enable(d, true);
    assert_int_equal(cm_dedupe_journal_take(d, &b, &n, &mx), CM_OK);
    assert_int_equal(n, 0);
    assert_true(mx == INT64_MIN);
    assert_int_equal(b.len, 0);
    cm_dedupe_insert(d, 6, 10, 0);
    cm_dedupe_insert(d, 6, 10, 0); /* duplicate: not journaled */
    cm_dedupe_insert(d, 7, 30, 0);
    cm_dedupe_insert(d, 8, 20, 0);
    assert_int_equal(cm_dedupe_journal_len(d), 3);
    assert_int_equal(cm_dedupe_journal_take(d, &b, &n, &mx), CM_OK);
    assert_int_equal(n, 3);
    assert_int_equal(mx, 30);
    assert_int_equal(cm_dedupe_journal_len(d), 0);
    /* replay into a fresh set gives the same answers */
    cm_dedupe_t *e = mk(100, 0);
    assert_int_equal(cm_dedupe_load(e, b.data, b.len, 0), CM_OK);
    assert_true(cm_dedupe_contains(e, 6, 0));
    assert_true(cm_dedupe_contains(e, 8, 0));
    assert_false(cm_dedupe_contains(e, 5, 0));
    cm_dedupe_insert(d, 9, 1, 0);
    cm_dedupe_journal_discard(d);
    assert_int_equal(cm_dedupe_journal_len(d), 0);
    cm_dedupe_clear(d);
    assert_int_equal(cm_dedupe_count(d), 0);
    assert_false(cm_dedupe_contains(d, 6, 0));
    cm_buf_free(&b);
    cm_dedupe_destroy(d);
    cm_dedupe_destroy(e);
}

/* A random mix of inserts and expiries against a plain reference array. */
static void test_against_reference(void **state)
{
    (void)state;
    enum { N = 20000, IDS = 3000 };
    cm_dedupe_t *d = mk(50, 0);
    int64_t ref[IDS];
    for (int i = 0; i < IDS; i++)
        ref[i] = INT64_MIN;
    srand(42);
    int64_t wm = 0;
    for (int k = 0; k < N; k++) {
        wm += rand() % 3;
        int id = rand() % IDS;
        int64_t t = wm + rand() % 20;
        bool alive = ref[id] != INT64_MIN && !(wm > ref[id] + 50);
        bool fresh = cm_dedupe_insert(d, (uint64_t)id * 0x9e3779b97f4a7c15ULL + 1, t, wm);
        assert_int_equal(fresh, !alive);
        if (fresh)
            ref[id] = t;
        if (k % 1000 == 0)
            cm_dedupe_expire(d, wm);
    }
    cm_dedupe_destroy(d);
}

/* ------------------------------------------------------------- benchmark */

typedef struct ut_entry {
    uint64_t h;
    int64_t t;
    UT_hash_handle hh;
} ut_entry_t;

static double secs(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return ts.tv_sec + ts.tv_nsec / 1e9;
}

static void test_bench(void **state)
{
    (void)state;
    if (!getenv("CM_DEDUPE_BENCH"))
        skip();
    enum { N = 2000000 };
    cm_dedupe_t *d = mk(INT64_MAX / 4, 0);
    double t0 = secs();
    for (uint64_t i = 1; i <= N; i++)
        cm_dedupe_insert(d, i * 0x9e3779b97f4a7c15ULL, (int64_t)i, 0);
    double t1 = secs();
    cm_dedupe_stats_t st;
    cm_dedupe_get_stats(d, &st);
    ut_entry_t *head = NULL;
    double t2 = secs();
    for (uint64_t i = 1; i <= N; i++) {
        uint64_t h = i * 0x9e3779b97f4a7c15ULL;
        ut_entry_t *e;
        HASH_FIND(hh, head, &h, sizeof(h), e);
        if (!e) {
            e = malloc(sizeof(*e));
            e->h = h;
            e->t = (int64_t)i;
            HASH_ADD(hh, head, h, sizeof(e->h), e);
        }
    }
    double t3 = secs();
    size_t ut_bytes = HASH_OVERHEAD(hh, head) + (size_t)N * sizeof(ut_entry_t);
    printf("dedupe bench: cm_dedupe %.1f M inserts/s, %.1f bytes/entry; "
           "uthash %.1f M inserts/s, %.1f bytes/entry (+malloc overhead)\n",
           N / (t1 - t0) / 1e6, (double)st.bytes / N, N / (t3 - t2) / 1e6,
           (double)ut_bytes / N);
    ut_entry_t *e, *tmp;
    HASH_ITER(hh, head, e, tmp)
    {
        HASH_DEL(head, e);
        free(e);
    }
    cm_dedupe_destroy(d);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_hash_is_stable),
        cmocka_unit_test(test_bad_args),
        cmocka_unit_test(test_horizon),
        cmocka_unit_test(test_many_grow_and_expire),
        cmocka_unit_test(test_no_expiry_grows),
        cmocka_unit_test(test_cap_evicts_oldest),
        cmocka_unit_test(test_serialize_load),
        cmocka_unit_test(test_journal),
        cmocka_unit_test(test_against_reference),
        cmocka_unit_test(test_bench),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
