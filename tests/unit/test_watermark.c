/*
 * test_watermark: per-partition and service watermarks (cm_watermark.h):
 * bound, idle timeout, all-idle max, monotonic hold, add/remove.
 */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>

#include <cmocka.h>

#include "cm_watermark.h"

static cm_watermark_t *mk(int64_t bound, int64_t idle)
{
    char errstr[128];
    cm_watermark_t *wm = cm_watermark_new(bound, idle, errstr, sizeof(errstr));
    assert_non_null(wm);
    return wm;
}

static void test_bad_args(void **state)
{
    (void)state;
    char errstr[128] = "";
    assert_null(cm_watermark_new(-1, 0, errstr, sizeof(errstr)));
    assert_true(errstr[0] != '\0');
    assert_null(cm_watermark_new(0, -5, errstr, sizeof(errstr)));
    cm_watermark_destroy(NULL);
    cm_watermark_t *wm = mk(10, 30);
    assert_int_equal(cm_watermark_add(wm, -1, CM_WATERMARK_NONE, 0), CM_ERR_INVALID);
    assert_int_equal(cm_watermark_add(wm, CM_WATERMARK_MAX_KEY + 1, CM_WATERMARK_NONE, 0),
                     CM_ERR_INVALID);
    assert_int_equal(cm_watermark_add(wm, CM_WATERMARK_MAX_KEY, CM_WATERMARK_NONE, 0), CM_OK);
    cm_watermark_destroy(wm);
}

static void test_partition_bound(void **state)
{
    (void)state;
    cm_watermark_t *wm = mk(10000, 30000);
    assert_int_equal(cm_watermark_add(wm, 3, CM_WATERMARK_NONE, 0), CM_OK);
    assert_true(cm_watermark_partition(wm, 3) == CM_WATERMARK_NONE);
    assert_true(cm_watermark_get(wm, 0) == CM_WATERMARK_NONE);
    assert_int_equal(cm_watermark_observe(wm, 3, 100000, 1), 90000);
    /* out of order within the bound: the max stays */
    assert_int_equal(cm_watermark_observe(wm, 3, 95000, 2), 90000);
    assert_int_equal(cm_watermark_max_event(wm, 3), 100000);
    assert_int_equal(cm_watermark_observe(wm, 3, 120000, 3), 110000);
    assert_int_equal(cm_watermark_get(wm, 3), 110000);
    /* unknown partition: ignored */
    assert_true(cm_watermark_observe(wm, 4, 500000, 3) == CM_WATERMARK_NONE);
    assert_int_equal(cm_watermark_get(wm, 3), 110000);
    cm_watermark_destroy(wm);
}

static void test_min_and_idle(void **state)
{
    (void)state;
    cm_watermark_t *wm = mk(10, 30000);
    cm_watermark_add(wm, 0, CM_WATERMARK_NONE, 0);
    cm_watermark_add(wm, 1, CM_WATERMARK_NONE, 0);
    cm_watermark_observe(wm, 0, 1000, 0);
    /* partition 1 has no event and is not idle: holds everything back */
    assert_true(cm_watermark_get(wm, 100) == CM_WATERMARK_NONE);
    cm_watermark_observe(wm, 1, 500, 100);
    assert_int_equal(cm_watermark_get(wm, 100), 490);
    /* partition 0 keeps going; 1 falls silent */
    cm_watermark_observe(wm, 0, 5000, 29000);
    assert_int_equal(cm_watermark_get(wm, 29000), 490);
    assert_false(cm_watermark_is_idle(wm, 1, 30099));
    assert_int_equal(cm_watermark_get(wm, 30099), 490);
    /* exactly idle_timeout after its last record: idle */
    assert_true(cm_watermark_is_idle(wm, 1, 30100));
    assert_int_equal(cm_watermark_get(wm, 30100), 4990);
    /* 1 wakes up with an old event: the service watermark does not go back */
    cm_watermark_observe(wm, 1, 600, 30200);
    assert_false(cm_watermark_is_idle(wm, 1, 30200));
    assert_int_equal(cm_watermark_partition(wm, 1), 590);
    assert_int_equal(cm_watermark_get(wm, 30200), 4990);
    /* undecodable record: touch keeps it active without an event time */
    cm_watermark_touch(wm, 1, 60000);
    assert_false(cm_watermark_is_idle(wm, 1, 60000));
    cm_watermark_destroy(wm);
}

static void test_all_idle_is_max(void **state)
{
    (void)state;
    cm_watermark_t *wm = mk(0, 30000);
    for (int p = 0; p < 3; p++)
        cm_watermark_add(wm, p, CM_WATERMARK_NONE, 0);
    cm_watermark_observe(wm, 0, 100, 0);
    cm_watermark_observe(wm, 1, 300, 0);
    cm_watermark_observe(wm, 2, 200, 0);
    assert_int_equal(cm_watermark_get(wm, 1), 100);
    /* every partition idle: the max, so a stopped stream closes its windows */
    assert_int_equal(cm_watermark_get(wm, 30000), 300);
    /* partition never fed and idle: does not hold back */
    cm_watermark_add(wm, 7, CM_WATERMARK_NONE, 30000);
    assert_true(cm_watermark_get(wm, 30001) == CM_WATERMARK_NONE);
    assert_int_equal(cm_watermark_get(wm, 60000), 300);
    cm_watermark_destroy(wm);
}

static void test_never_idle(void **state)
{
    (void)state;
    cm_watermark_t *wm = mk(0, 0);
    cm_watermark_add(wm, 0, CM_WATERMARK_NONE, 0);
    cm_watermark_add(wm, 1, CM_WATERMARK_NONE, 0);
    cm_watermark_observe(wm, 0, 100, 0);
    cm_watermark_observe(wm, 1, 50, 0);
    assert_false(cm_watermark_is_idle(wm, 1, INT64_MAX / 2));
    assert_int_equal(cm_watermark_get(wm, INT64_MAX / 2), 50);
    cm_watermark_destroy(wm);
}

static void test_add_remove_restore(void **state)
{
    (void)state;
    cm_watermark_t *wm = mk(10, 1000);
    for (int p = 0; p < 40; p++)
        assert_int_equal(cm_watermark_add(wm, p, 1000 + p, 0), CM_OK);
    assert_int_equal(cm_watermark_count(wm), 40);
    assert_int_equal(cm_watermark_get(wm, 0), 990);
    cm_watermark_remove(wm, 0);
    cm_watermark_remove(wm, 0); /* again: no-op */
    assert_false(cm_watermark_has(wm, 0));
    assert_true(cm_watermark_has(wm, 39));
    assert_int_equal(cm_watermark_count(wm), 39);
    assert_int_equal(cm_watermark_get(wm, 0), 991);
    assert_int_equal(cm_watermark_partition(wm, 39), 1029);
    /* re-adding replaces, and the hold is reset so the value may go down */
    cm_watermark_add(wm, 5, 500, 0);
    assert_int_equal(cm_watermark_get(wm, 0), 490);
    cm_watermark_clear(wm);
    assert_int_equal(cm_watermark_count(wm), 0);
    assert_true(cm_watermark_get(wm, 0) == CM_WATERMARK_NONE);
    assert_int_equal(cm_watermark_add(wm, 39, CM_WATERMARK_NONE, 0), CM_OK);
    assert_int_equal(cm_watermark_count(wm), 1);
    cm_watermark_destroy(wm);
}

static void sum_fn(int32_t key, int64_t max_event, void *ud)
{
    *(int64_t *)ud += key + max_event;
}

static void test_foreach_and_saturation(void **state)
{
    (void)state;
    cm_watermark_t *wm = mk(10, 1000);
    cm_watermark_add(wm, 1, 10, 0);
    cm_watermark_add(wm, 2, 20, 0);
    int64_t sum = 0;
    cm_watermark_foreach(wm, sum_fn, &sum);
    assert_int_equal(sum, 33);
    cm_watermark_add(wm, 3, INT64_MIN + 5, 0);
    assert_true(cm_watermark_partition(wm, 3) == CM_WATERMARK_NONE);
    cm_watermark_destroy(wm);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_bad_args),
        cmocka_unit_test(test_partition_bound),
        cmocka_unit_test(test_min_and_idle),
        cmocka_unit_test(test_all_idle_is_max),
        cmocka_unit_test(test_never_idle),
        cmocka_unit_test(test_add_remove_restore),
        cmocka_unit_test(test_foreach_and_saturation),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
