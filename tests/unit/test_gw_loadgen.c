/*
 * test_gw_loadgen.c: the stream of cs-loadgen: same options, same bytes;
 * the anomaly kinds are what they claim (the gateway's own validation says
 * so); sessions, gaps and late/out-of-order offsets follow SPEC §3/§4.
 */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <cmocka.h>

#include "cm_event.h"
#include "../../tools/cs-loadgen/lg_gen.h"

#define START 1700000000000LL
#define N 20000

static lg_gen_opts_t opts(uint64_t seed)
{
    lg_gen_opts_t o;
    lg_gen_opts_default(&o);
    o.seed = seed;
    o.users = 200;
    o.start_ms = START;
    o.f_dup = 0.03;
    o.f_ooo = 0.03;
    o.f_late = 0.02;
    o.f_invalid = 0.04;
    return o;
}

static void test_deterministic(void **state)
{
    (void)state;
    lg_gen_opts_t o = opts(7);
    lg_gen_t *a = lg_gen_new(&o), *b = lg_gen_new(&o);
    o.seed = 8;
    lg_gen_t *c = lg_gen_new(&o);
    cm_buf_t ba, bb, bc;
    cm_buf_init(&ba, 0);
    cm_buf_init(&bb, 0);
    cm_buf_init(&bc, 0);
    int64_t ts;
    for (int i = 0; i < N; i++) {
        assert_int_equal(lg_gen_next(a, &ba, &ts), lg_gen_next(b, &bb, &ts));
        lg_gen_next(c, &bc, &ts);
    }
    assert_int_equal(ba.len, bb.len);
    assert_memory_equal(ba.data, bb.data, ba.len);
    assert_true(ba.len != bc.len || memcmp(ba.data, bc.data, ba.len) != 0);
    /* the timing replay agrees with the real run */
    o.seed = 7;
    assert_int_equal(lg_gen_span(&o, N), lg_gen_clock(a) - START);
    lg_gen_destroy(a);
    lg_gen_destroy(b);
    lg_gen_destroy(c);
    cm_buf_free(&ba);
    cm_buf_free(&bb);
    cm_buf_free(&bc);
}

typedef struct user_seen {
    int64_t last_ts;
    int events;
} user_seen_t;

static void test_kinds_and_time(void **state)
{
    (void)state;
    lg_gen_opts_t o = opts(3);
    lg_gen_t *g = lg_gen_new(&o);
    cm_buf_t b;
    cm_buf_init(&b, 0);
    cm_event_limits_t lim = CM_EVENT_LIMITS_DEFAULT;
    cm_event_t ev;
    cm_event_init(&ev);
    int counts[LG__KINDS] = {0};
    user_seen_t *users = calloc(o.users, sizeof(*users));
    int long_gaps = 0, purchases = 0;
    int64_t clock_prev = START;
    for (int i = 0; i < N; i++) {
        int64_t ts;
        cm_buf_reset(&b);
        lg_kind_t k = lg_gen_next(g, &b, &ts);
        counts[k]++;
        json_t *j = json_loadb((const char *)b.data, b.len, 0, NULL);
        assert_non_null(j);
        cm_event_error_t err;
        /* now = the far future, so only the stream's own "future" breaks */
        cm_err_t rc = cm_event_from_json(j, &lim, 4102444800000LL, &ev, &err);
        json_decref(j);
        int64_t clock = lg_gen_clock(g);
        assert_true(clock >= clock_prev);
        clock_prev = clock;
        if (k == LG_INVALID) {
            assert_int_equal(rc, CM_ERR_INVALID);
            continue;
        }
        if (rc)
            fail_msg("kind %s refused: %s %s: %.*s", lg_kind_name(k), err.field, err.message,
                     (int)b.len, b.data);
        assert_int_equal(ev.ts_ms, ts);
        if (k == LG_LATE) {
            assert_int_equal(ts, clock - 20 * 60 * 1000);
            continue;
        }
        if (k == LG_OOO)
            assert_true(clock - ts >= 1000 && clock - ts <= 8000);
        if (k == LG_OK)
            assert_int_equal(ts, clock);
        if (k == LG_DUP)
            continue;
        if (ev.type == CM_EV_PURCHASE)
            purchases++;
        int u = atoi(ev.user_id + 1);
        assert_true(u >= 0 && (uint32_t)u < o.users);
        if (users[u].events && ts - users[u].last_ts > 30 * 60 * 1000)
            long_gaps++;
        users[u].last_ts = ts;
        users[u].events++;
    }
    assert_true(counts[LG_DUP] > N * 0.02 && counts[LG_DUP] < N * 0.04);
    assert_true(counts[LG_OOO] > N * 0.02 && counts[LG_OOO] < N * 0.04);
    assert_true(counts[LG_LATE] > N * 0.01 && counts[LG_LATE] < N * 0.03);
    assert_true(counts[LG_INVALID] > N * 0.03 && counts[LG_INVALID] < N * 0.05);
    assert_true(long_gaps > 100); /* many sessions, separated by > 30 min */
    assert_true(purchases > 10);  /* the funnel reaches the end */
    free(users);
    cm_event_free(&ev);
    cm_buf_free(&b);
    lg_gen_destroy(g);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_deterministic),
        cmocka_unit_test(test_kinds_and_time),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
