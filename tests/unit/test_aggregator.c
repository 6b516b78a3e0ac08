/* Unit tests of the aggregator's pure parts: window assignment at
 * boundaries, lateness, dedupe, sessions and their revisions, HLL (error on
 * 1 million distinct users, Redis format), exact top-K, and the merger
 * (panes of several partitions -> one exact result). No network. */
#include <math.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <cmocka.h>

#include "../../services/aggregator/aggregator_dict.h"
#include "cm_hll.h"
#include "../../services/aggregator/aggregator_merge.h"
#include "../../services/aggregator/aggregator_redis.h"
#include "../../services/aggregator/aggregator_window.h"

#define MIN 60000LL
#define T0 1700000040000LL /* a multiple of 1 h? no: 1700000040000 % 60000 == 0 */

static ag_state_t *new_state(void)
{
    ag_window_opts_t o = {.bound_ms = 10000, .lateness_ms = 5 * MIN, .idle_ms = 30000};
    char err[128];
    ag_state_t *st = ag_state_new(&o, err, sizeof(err));
    assert_non_null(st);
    return st;
}

static void mk_event(cm_event_t *ev, const char *id, int64_t ts, const char *user,
                     const char *type, const char *url)
{
    cm_event_reset(ev);
    cm_event_set_str(ev, &ev->event_id, id, strlen(id));
    cm_event_set_str(ev, &ev->user_id, user, strlen(user));
    cm_event_set_str(ev, &ev->event_type, type, strlen(type));
    ev->type = (cm_event_type_t)cm_event_type_parse(type);
    if (url)
        cm_event_set_str(ev, &ev->page_url, url, strlen(url));
    ev->ts_ms = ts;
}

static ag_result_t put(ag_state_t *st, ag_source_t *s, cm_event_t *ev, int64_t off)
{
    ag_result_t r;
    assert_int_equal(ag_source_event(st, s, ev, off, 0, &r), CM_OK);
    return r;
}

static void test_window_start(void **state)
{
    (void)state;
    assert_int_equal(ag_window_start(0, MIN), 0);
    assert_int_equal(ag_window_start(MIN - 1, MIN), 0);
    assert_int_equal(ag_window_start(MIN, MIN), MIN);
    assert_int_equal(ag_window_start(-1, MIN), -MIN);
    assert_int_equal(ag_window_start(-MIN, MIN), -MIN);
    assert_int_equal(ag_window_start(3600000LL * 5 + 299999, 300000), 3600000LL * 5 + 0);
    assert_int_equal(ag_window_start(3600000LL * 5 + 300000, 300000), 3600000LL * 5 + 300000);
}

static void test_assignment_boundaries(void **state)
{
    (void)state;
    ag_state_t *st = new_state();
    ag_source_t *s = ag_state_source(st, AG_SRC_RAW, 0, CM_WATERMARK_NONE, 0);
    cm_event_t ev;
    cm_event_init(&ev);
    int64_t h = 1700002800000LL; /* a whole hour */
    assert_int_equal(h % 3600000, 0);
    mk_event(&ev, "a", h - 1, "u1", "page_view", "/x");
    assert_int_equal(put(st, s, &ev, 0), AG_APPLIED);
    mk_event(&ev, "b", h, "u1", "purchase", NULL);
    ev.has_price = true;
    ev.price_micros = 2500000;
    ev.quantity = 2;
    assert_int_equal(put(st, s, &ev, 1), AG_APPLIED);
    mk_event(&ev, "c", h + MIN - 1, "u2", "click", "/y");
    assert_int_equal(put(st, s, &ev, 2), AG_APPLIED);

    assert_int_equal(ag_source_fold(st, s), CM_OK);
    ag_pane_t *p = ag_source_pane(s, 0, h - MIN);
    assert_non_null(p);
    assert_int_equal(p->t.events, 1);
    assert_int_equal(p->t.page_views, 1);
    p = ag_source_pane(s, 0, h);
    assert_int_equal(p->t.events, 2);
    assert_int_equal(p->t.purchases, 1);
    assert_int_equal(p->t.revenue_micros, 5000000);
    p = ag_source_pane(s, 1, h);
    assert_int_equal(p->t.events, 2);
    p = ag_source_pane(s, 2, h - 3600000);
    assert_int_equal(p->t.events, 1);
    p = ag_source_pane(s, 2, h);
    assert_int_equal(p->t.events, 2);
    assert_int_equal(cm_hll_count(p->hll), 2);
    /* the url of the click counts, the purchase has none */
    uint32_t id = ag_intern_id(&s->intern[AG_DIM_URL], "/y", 2);
    assert_int_equal(ag_counts_get(&p->dims[AG_DIM_URL], id), 1);
    cm_event_free(&ev);
    ag_state_destroy(st);
}

static void test_lateness_and_final(void **state)
{
    (void)state;
    ag_state_t *st = new_state();
    ag_source_t *s = ag_state_source(st, AG_SRC_RAW, 3, CM_WATERMARK_NONE, 0);
    cm_event_t ev;
    cm_event_init(&ev);
    int64_t w = 1700002800000LL;
    mk_event(&ev, "e1", w + 30000, "u", "click", NULL);
    put(st, s, &ev, 0);
    /* watermark = max - 10 s; window [w, w+1m) is final at wm >= w+1m */
    mk_event(&ev, "e2", w + MIN + 10000 - 1, "u", "click", NULL);
    put(st, s, &ev, 1);
    assert_false(ag_source_pane(s, 0, w)->final);
    mk_event(&ev, "e3", w + MIN + 10000, "u", "click", NULL);
    put(st, s, &ev, 2);
    assert_true(ag_source_pane(s, 0, w)->final);
    assert_int_equal(ag_source_wm(st, s), w + MIN);
    /* still accepted until end + lateness <= wm */
    mk_event(&ev, "e4", w + 1, "u", "click", NULL);
    assert_int_equal(put(st, s, &ev, 3), AG_APPLIED);
    assert_int_equal(ag_source_pane(s, 0, w)->t.events, 2);
    /* wm = end + lateness - 1: still in time */
    mk_event(&ev, "e5", w + MIN + 5 * MIN + 10000 - 1, "u", "click", NULL);
    put(st, s, &ev, 4);
    mk_event(&ev, "e6", w + 2, "u", "click", NULL);
    assert_int_equal(put(st, s, &ev, 5), AG_APPLIED);
    /* wm = end + lateness: late */
    mk_event(&ev, "e7", w + MIN + 5 * MIN + 10000, "u", "click", NULL);
    put(st, s, &ev, 6);
    mk_event(&ev, "e8", w + 3, "u", "click", NULL);
    assert_int_equal(put(st, s, &ev, 7), AG_LATE);
    /* counted as `late` in the window of the newest event (e7), not its own */
    assert_int_equal(ag_source_pane(s, 0, w + 6 * MIN)->t.late, 1);
    assert_int_equal(ag_source_pane(s, 0, w)->t.late, 0);
    /* an undecodable record too */
    assert_int_equal(ag_source_skip(st, s, 8, 0), CM_OK);
    assert_int_equal(ag_source_pane(s, 0, w + 6 * MIN)->t.late, 2);
    assert_int_equal(s->next_offset, 9);
    /* the 1-min pane is closed (it stays until its change is sent to the
     * merger); the 1-h pane has exactly the accepted events */
    assert_true(ag_source_pane(s, 0, w)->closed);
    assert_int_equal(ag_source_pane(s, 0, w)->t.events, 3);
    ag_source_fold(st, s);
    assert_int_equal(ag_source_pane(s, 1, w)->t.events, 5); /* e1-e4, e6 */
    assert_int_equal(ag_source_pane(s, 1, w)->t.late, 0);
    assert_int_equal(ag_source_pane(s, 1, w + 5 * MIN)->t.late, 2);
    assert_int_equal(ag_source_pane(s, 2, w)->t.late, 2);
    ag_pane_t *p1 = ag_source_pane(s, 0, w);
    p1->changed = false; /* as if sent to the merger */
    ag_source_advance(st, s);
    /* still there: Redis has not got its last change yet */
    assert_non_null(ag_source_pane(s, 0, w));
    p1->redis_totals_dirty = p1->redis_hll_dirty = false; /* as if flushed */
    for (int d = 0; d < AG_N_DIMS; d++)
        ag_counts_clean(&p1->dims[d]);
    ag_source_advance(st, s);
    assert_null(ag_source_pane(s, 0, w));
    assert_int_equal(ag_source_pane(s, 2, w)->t.events, 7);
    assert_int_equal(s->n_late, 1);
    cm_event_free(&ev);
    ag_state_destroy(st);
}

static void test_undecodable_first(void **state)
{
    (void)state;
    ag_state_t *st = new_state();
    ag_source_t *s = ag_state_source(st, AG_SRC_RAW, 0, CM_WATERMARK_NONE, 0);
    /* before the first event there is no window to count it in */
    assert_int_equal(ag_source_skip(st, s, 0, 0), CM_OK);
    assert_int_equal(s->n_open, 0);
    assert_int_equal(s->next_offset, 1);
    ag_state_destroy(st);
}

static void test_dedupe(void **state)
{
    (void)state;
    ag_state_t *st = new_state();
    ag_source_t *s = ag_state_source(st, AG_SRC_RAW, 0, CM_WATERMARK_NONE, 0);
    cm_event_t ev;
    cm_event_init(&ev);
    int64_t w = 1700002800000LL;
    mk_event(&ev, "dup", w + 59000, "u", "click", NULL);
    assert_int_equal(put(st, s, &ev, 0), AG_APPLIED);
    /* move the watermark to just before end + lateness of the copy's window */
    mk_event(&ev, "x", w + MIN + 5 * MIN + 10000 - 1, "u", "click", NULL);
    put(st, s, &ev, 1);
    mk_event(&ev, "dup", w + 59000, "u", "click", NULL);
    assert_int_equal(put(st, s, &ev, 2), AG_DUPLICATE);
    assert_int_equal(ag_source_pane(s, 0, w)->t.events, 1);
    cm_event_free(&ev);
    ag_state_destroy(st);
}

static void mk_session(cm_session_t *ses, const char *id, int64_t end, int64_t dur, int pv,
                       bool conv, int rev, bool tomb)
{
    cm_session_reset(ses);
    ses->session_id = id;
    ses->user_id = "u";
    ses->end_ms = end;
    ses->start_ms = end - dur;
    ses->duration_ms = dur;
    ses->page_views = pv;
    ses->converted = conv;
    ses->revision = rev;
    ses->tombstone = tomb;
}

static void test_sessions_revisions(void **state)
{
    (void)state;
    ag_state_t *st = new_state();
    ag_source_t *s = ag_state_source(st, AG_SRC_SESSIONS, 1, CM_WATERMARK_NONE, 0);
    cm_session_t ses;
    cm_session_init(&ses);
    int64_t w = 1700002800000LL;
    ag_result_t r;
    mk_session(&ses, "s1", w + 1000, 5000, 1, false, 0, false);
    ag_source_session(st, s, &ses, 0, 0, &r);
    assert_int_equal(r, AG_APPLIED);
    mk_session(&ses, "s2", w + 2000, 7000, 3, true, 0, false);
    ag_source_session(st, s, &ses, 1, 0, &r);
    ag_pane_t *p = ag_source_pane(s, 0, w);
    assert_int_equal(p->t.sessions, 2);
    assert_int_equal(p->t.bounces, 1);
    assert_int_equal(p->t.conversions, 1);
    assert_int_equal(p->t.session_ms_sum, 12000);
    /* replay of revision 0: ignored */
    ag_source_session(st, s, &ses, 2, 0, &r);
    assert_int_equal(r, AG_IGNORED);
    /* revision 1 of s1 moves it to the next minute and is no bounce */
    mk_session(&ses, "s1", w + MIN + 5, 60005, 2, false, 1, false);
    ag_source_session(st, s, &ses, 3, 0, &r);
    assert_int_equal(r, AG_APPLIED);
    assert_int_equal(p->t.sessions, 1);
    assert_int_equal(p->t.bounces, 0);
    ag_pane_t *q = ag_source_pane(s, 0, w + MIN);
    assert_int_equal(q->t.sessions, 1);
    assert_int_equal(ag_source_pane(s, 2, ag_window_start(w, 3600000))->t.sessions, 2);
    /* tombstone of s2 removes it */
    mk_session(&ses, "s2", w + 2000, 7000, 3, true, 1, true);
    ag_source_session(st, s, &ses, 4, 0, &r);
    assert_int_equal(p->t.sessions, 0);
    assert_int_equal(p->t.conversions, 0);
    cm_session_free(&ses);
    ag_state_destroy(st);
}

static void test_checkpoint_replay(void **state)
{
    (void)state;
    /* the replay point and a replay give the same pane values */
    ag_state_t *a = new_state();
    ag_source_t *s = ag_state_source(a, AG_SRC_RAW, 0, CM_WATERMARK_NONE, 0);
    cm_event_t ev;
    cm_event_init(&ev);
    int64_t w = 1700002800000LL;
    char id[32];
    int64_t ts[400];
    for (int i = 0; i < 400; i++) {
        ts[i] = w + i * 30000 - (i % 7) * 20000;
        snprintf(id, sizeof(id), "e%d", i % 390);
        mk_event(&ev, id, ts[i], i % 2 ? "u1" : "u2", "page_view", i % 3 ? "/a" : "/b");
        put(a, s, &ev, i);
        for (size_t j = 0; j < s->n_open + s->n_closed; j++) {
            ag_pane_t *q = j < s->n_open ? s->open[j] : s->closed[j - s->n_open];
            if (q->closed) { /* as if sent to the merger and flushed to Redis */
                q->changed = q->redis_totals_dirty = q->redis_hll_dirty = false;
                for (int d = 0; d < AG_N_DIMS; d++)
                    ag_counts_clean(&q->dims[d]);
            }
        }
    }
    ag_source_advance(a, s);
    int64_t off, maxev;
    ag_source_checkpoint(a, s, &off, &maxev);
    assert_true(off > 0);
    ag_state_t *b = new_state();
    ag_source_t *s2 = ag_state_source(b, AG_SRC_RAW, 0, maxev, 0);
    for (int i = (int)off; i < 400; i++) {
        snprintf(id, sizeof(id), "e%d", i % 390);
        mk_event(&ev, id, ts[i], i % 2 ? "u1" : "u2", "page_view", i % 3 ? "/a" : "/b");
        put(b, s2, &ev, i);
    }
    ag_source_restored(b, s2);
    /* panes closed before the checkpoint were rebuilt partly: forgotten */
    ag_source_forget_closed(b, s2, ag_source_wm(a, s), NULL, 0);
    for (size_t i = 0; i < s2->n_closed; i++) {
        ag_pane_t *q = s2->closed[i];
        ag_pane_t *p = ag_source_pane(s, q->size_idx, q->start_ms);
        assert_non_null(p);
        assert_memory_equal(&p->t, &q->t, sizeof(p->t));
    }
    assert_int_equal(s->n_open, s2->n_open);
    for (size_t i = 0; i < s->n_open; i++) {
        ag_pane_t *p = s->open[i];
        ag_pane_t *q = ag_source_pane(s2, p->size_idx, p->start_ms);
        assert_non_null(q);
        assert_memory_equal(&p->t, &q->t, sizeof(p->t));
        assert_memory_equal(p->hll, q->hll, sizeof(*p->hll));
    }
    cm_event_free(&ev);
    ag_state_destroy(a);
    ag_state_destroy(b);
}

/* ------------------------------------------------------------------ HLL */

static void test_hll_million(void **state)
{
    (void)state;
    cm_hll_t *h = calloc(1, sizeof(*h));
    char buf[32];
    const int n = 1000000;
    for (int i = 0; i < n; i++) {
        int len = snprintf(buf, sizeof(buf), "user-%d", i);
        cm_hll_add(h, buf, (size_t)len);
    }
    double est = (double)cm_hll_count(h);
    double rel = fabs(est - n) / n;
    printf("hll: 1e6 distinct -> %.0f (error %.3f %%, bound 3 x %.3f %%)\n", est, rel * 100,
           CM_HLL_STD_ERROR * 100);
    assert_true(rel < 3 * CM_HLL_STD_ERROR);
    /* union of two halves = the whole */
    cm_hll_t *a = calloc(1, sizeof(*a)), *b = calloc(1, sizeof(*b));
    for (int i = 0; i < n; i++) {
        int len = snprintf(buf, sizeof(buf), "user-%d", i);
        cm_hll_add(i % 2 ? a : b, buf, (size_t)len);
    }
    cm_hll_merge(a, b);
    assert_memory_equal(a->reg, h->reg, CM_HLL_REGISTERS);
    /* small sets are exact */
    cm_hll_t *s = calloc(1, sizeof(*s));
    for (int i = 0; i < 100; i++) {
        int len = snprintf(buf, sizeof(buf), "u%d", i);
        cm_hll_add(s, buf, (size_t)len);
        cm_hll_add(s, buf, (size_t)len);
    }
    assert_true(llabs((long long)cm_hll_count(s) - 100) <= 1);
    free(h);
    free(a);
    free(b);
    free(s);
}

static void test_hll_redis_format(void **state)
{
    (void)state;
    /* MurmurHash64A reference values (Redis' hash of "" and "a" with the HLL seed) */
    assert_true(cm_murmur64a("hello", 5, 0) != cm_murmur64a("hellp", 5, 0));
    cm_hll_t *h = calloc(1, sizeof(*h)), *back = calloc(1, sizeof(*back));
    char buf[32];
    for (int i = 0; i < 5000; i++) {
        int len = snprintf(buf, sizeof(buf), "x%d", i);
        cm_hll_add(h, buf, (size_t)len);
    }
    h->reg[CM_HLL_REGISTERS - 1] = 51; /* the last register, maximal value */
    uint8_t *out = malloc(CM_HLL_REDIS_SIZE);
    cm_hll_to_redis(h, out);
    assert_memory_equal(out, "HYLL", 4);
    assert_int_equal(cm_hll_from_redis(back, out, CM_HLL_REDIS_SIZE), 0);
    assert_memory_equal(back->reg, h->reg, CM_HLL_REGISTERS);

    /* Redis' sparse encoding (what PFADD leaves for small sets): XZERO 100,
     * VAL 3 x2, ZERO 5, VAL 32 x1, XZERO for the rest (16384 in all). */
    uint8_t sp[16] = {'H', 'Y', 'L', 'L', 1}; /* header: magic, encoding 1 */
    uint32_t rest = CM_HLL_REGISTERS - 100 - 2 - 5 - 1 - 1;
    uint8_t ops[] = {0x40 | (99 >> 8), 99 & 0xff, 0x80 | (2 << 2) | 1, 4,
                     0x80 | (31 << 2) | 0, (uint8_t)(0x40 | (rest >> 8)), (uint8_t)(rest & 0xff)};
    uint8_t *sparse = malloc(16 + sizeof(ops));
    memcpy(sparse, sp, 16);
    memcpy(sparse + 16, ops, sizeof(ops));
    memset(back->reg, 9, CM_HLL_REGISTERS);
    assert_int_equal(cm_hll_from_redis(back, sparse, 16 + sizeof(ops)), 0);
    assert_int_equal(back->reg[99], 0);
    assert_int_equal(back->reg[100], 3);
    assert_int_equal(back->reg[101], 3);
    assert_int_equal(back->reg[102], 0);
    assert_int_equal(back->reg[107], 32);
    size_t nz = 0;
    for (uint32_t i = 0; i < CM_HLL_REGISTERS; i++)
        nz += back->reg[i] != 0;
    assert_int_equal(nz, 3);
    /* one register short, one too many, a cut XZERO, not an HLL */
    assert_int_equal(cm_hll_from_redis(back, sparse, 16 + sizeof(ops) - 2), -1);
    sparse[16 + sizeof(ops) - 1] += 2;
    assert_int_equal(cm_hll_from_redis(back, sparse, 16 + sizeof(ops)), -1);
    assert_int_equal(cm_hll_from_redis(back, sparse, 16 + sizeof(ops) - 1), -1);
    assert_int_equal(cm_hll_from_redis(back, (const uint8_t *)"HYLX", 4), -1);
    free(sparse);
    free(out);
    free(h);
    free(back);
}

/* ----------------------------------------------------------------- top-K */

static void test_topk(void **state)
{
    (void)state;
    enum { N = 5000 };
    ag_topk_item_t *it = malloc(N * sizeof(*it)), *ref = malloc(N * sizeof(*ref));
    char(*keys)[16] = malloc(N * 16);
    srand(7);
    for (int i = 0; i < N; i++) {
        snprintf(keys[i], 16, "/p%d", i);
        it[i].key = keys[i];
        it[i].count = rand() % 300; /* many ties */
        ref[i] = it[i];
    }
    size_t k = ag_topk_select(it, N, 100);
    assert_int_equal(k, 100);
    /* reference: full sort */
    for (int i = 0; i < N; i++)
        for (int j = i + 1; j < N && i < 100; j++)
            if (ag_topk_cmp(&ref[j], &ref[i]) < 0) {
                ag_topk_item_t t = ref[i];
                ref[i] = ref[j];
                ref[j] = t;
            }
    for (int i = 0; i < 100; i++) {
        assert_string_equal(it[i].key, ref[i].key);
        assert_int_equal(it[i].count, ref[i].count);
    }
    assert_int_equal(ag_topk_select(it, 3, 100), 3);
    free(it);
    free(ref);
    free(keys);
}

/* ---------------------------------------------------------------- merger */

typedef struct {
    int n;
    cm_window_result_t last_total;
    int64_t url_a;
} sink_t;

static cm_err_t sink(const cm_window_result_t *r, void *ud)
{
    sink_t *k = ud;
    k->n++;
    if (strcmp(r->dimension, "total") == 0) {
        k->last_total.events = r->events;
        k->last_total.unique_users = r->unique_users;
        k->last_total.revision = r->revision;
        k->last_total.n_top_urls = r->n_top_urls;
    }
    if (strcmp(r->dimension, "url") == 0)
        for (size_t i = 0; i < r->n_counts; i++)
            if (strcmp(r->counts[i].key, "/a") == 0)
                k->url_a = r->counts[i].count;
    return CM_OK;
}

static void test_merger(void **state)
{
    (void)state;
    ag_state_t *st = new_state();
    ag_source_t *s0 = ag_state_source(st, AG_SRC_RAW, 0, CM_WATERMARK_NONE, 0);
    ag_source_t *s1 = ag_state_source(st, AG_SRC_RAW, 1, CM_WATERMARK_NONE, 0);
    cm_event_t ev;
    cm_event_init(&ev);
    int64_t w = 1700002800000LL;
    char id[32], user[32];
    for (int i = 0; i < 100; i++) {
        snprintf(id, sizeof(id), "e%d", i);
        snprintf(user, sizeof(user), "u%d", i % 10);
        mk_event(&ev, id, w + i * 100, user, "page_view", "/a");
        put(st, i % 2 ? s1 : s0, &ev, i);
    }
    ag_merger_t *m = ag_merger_new(5 * MIN, 60 * MIN);
    cm_buf_t b;
    cm_buf_init(&b, 0);
    ag_pane_t *p0 = ag_source_pane(s0, 0, w), *p1 = ag_source_pane(s1, 0, w);
    assert_int_equal(ag_pane_encode(s0, p0, &b), CM_OK);
    assert_int_equal(ag_merger_apply(m, b.data, b.len, 10, false, 0), CM_OK);
    /* applying a pane twice changes nothing */
    assert_int_equal(ag_merger_apply(m, b.data, b.len, 11, false, 0), CM_OK);
    cm_buf_reset(&b);
    ag_pane_encode(s1, p1, &b);
    ag_merger_apply(m, b.data, b.len, 12, false, 0);
    sink_t k = {0};
    /* no heartbeat yet: nothing is due */
    ag_merger_flush(m, sink, &k, 0);
    assert_int_equal(k.n, 0);
    cm_buf_reset(&b);
    ag_heartbeat_encode(s0->key, w + MIN, false, 2, &b);
    ag_merger_apply(m, b.data, b.len, 13, false, 0);
    ag_merger_flush(m, sink, &k, 0);
    assert_int_equal(k.n, 0); /* partition 1 has not reported */
    cm_buf_reset(&b);
    ag_heartbeat_encode(s1->key, w + MIN - 1, false, 2, &b);
    ag_merger_apply(m, b.data, b.len, 14, false, 0);
    ag_merger_flush(m, sink, &k, 0);
    assert_int_equal(k.n, 0); /* partition 1 is not past the end */
    cm_buf_reset(&b);
    ag_heartbeat_encode(s1->key, w + MIN - 1, true, 2, &b); /* idle: stops holding back */
    ag_merger_apply(m, b.data, b.len, 15, false, 0);
    ag_merger_flush(m, sink, &k, 0);
    assert_int_equal(k.n, 6);
    assert_int_equal(k.last_total.events, 100);
    assert_int_equal(k.last_total.unique_users, 10);
    assert_int_equal(k.last_total.revision, 0);
    assert_int_equal(k.last_total.n_top_urls, 1);
    assert_int_equal(k.url_a, 100);
    /* nothing new: nothing emitted */
    ag_merger_flush(m, sink, &k, 0);
    assert_int_equal(k.n, 6);
    /* a revised pane -> revision 1 */
    mk_event(&ev, "late", w + 5, "u99", "page_view", "/a");
    put(st, s0, &ev, 200);
    cm_buf_reset(&b);
    ag_pane_encode(s0, p0, &b);
    ag_merger_apply(m, b.data, b.len, 16, false, 0);
    ag_merger_flush(m, sink, &k, 0);
    assert_int_equal(k.n, 12);
    assert_int_equal(k.last_total.events, 101);
    assert_int_equal(k.last_total.revision, 1);

    /* checkpoint + replay restore gives the same emission state */
    cm_buf_t cp;
    cm_buf_init(&cp, 0);
    assert_int_equal(ag_merger_checkpoint(m, 17, &cp, NULL), CM_OK);
    int64_t from = -1;
    assert_int_equal(ag_merger_load_checkpoint(cp.data, cp.len, &from), CM_OK);
    assert_int_equal(from, 12);
    ag_merger_t *m2 = ag_merger_new(5 * MIN, 60 * MIN);
    cm_buf_reset(&b);
    ag_pane_encode(s1, p1, &b);
    ag_merger_apply(m2, b.data, b.len, 12, true, 0);
    cm_buf_reset(&b);
    ag_pane_encode(s0, p0, &b);
    ag_merger_apply(m2, b.data, b.len, 16, true, 0);
    assert_int_equal(ag_merger_finish_restore(m2, cp.data, cp.len), CM_OK);
    sink_t k2 = {0};
    ag_merger_flush(m2, sink, &k2, 0);
    assert_int_equal(k2.n, 0);
    cm_window_result_t r[1 + AG_N_DIMS];
    for (int i = 0; i < 1 + AG_N_DIMS; i++)
        cm_window_result_init(&r[i]);
    assert_int_equal(ag_merger_result(m2, MIN, w, 1, true, r), CM_OK);
    assert_int_equal(r[0].events, 101);
    assert_int_equal(r[0].unique_users, 11);
    for (int i = 0; i < 1 + AG_N_DIMS; i++)
        cm_window_result_free(&r[i]);
    /* garbage is refused */
    assert_int_equal(ag_merger_apply(m2, "P\x01\xff", 3, 20, false, 0), CM_ERR_PARSE);
    assert_int_equal(ag_merger_apply(m2, "zz", 2, 21, false, 0), CM_ERR_PARSE);

    cm_buf_free(&b);
    cm_buf_free(&cp);
    ag_merger_destroy(m);
    ag_merger_destroy(m2);
    cm_event_free(&ev);
    ag_state_destroy(st);
}

/* A sessions partition that has not had a record yet (no watermark) does not
 * hold the emission back once idle, but it does hold the drop back: its
 * first session, arriving after the raw side is past end + lateness, still
 * revises the window instead of being lost. */
static void test_merger_unreported_source(void **state)
{
    (void)state;
    ag_state_t *st = new_state();
    ag_source_t *raw = ag_state_source(st, AG_SRC_RAW, 0, CM_WATERMARK_NONE, 0);
    ag_source_t *ses = ag_state_source(st, AG_SRC_SESSIONS, 0, CM_WATERMARK_NONE, 0);
    cm_event_t ev;
    cm_event_init(&ev);
    int64_t w = 1700002800000LL;
    mk_event(&ev, "e1", w + 1000, "u1", "page_view", "/a");
    put(st, raw, &ev, 0);
    ag_merger_t *m = ag_merger_new(5 * MIN, 60 * MIN);
    cm_buf_t b;
    cm_buf_init(&b, 0);
    ag_pane_encode(raw, ag_source_pane(raw, 0, w), &b);
    ag_merger_apply(m, b.data, b.len, 1, false, 0);
    cm_buf_reset(&b);
    ag_heartbeat_encode(raw->key, w + 30 * MIN, false, 1, &b);
    ag_merger_apply(m, b.data, b.len, 2, false, 0);
    cm_buf_reset(&b);
    ag_heartbeat_encode(ses->key, CM_WATERMARK_NONE, true, 1, &b);
    ag_merger_apply(m, b.data, b.len, 3, false, 1000);
    sink_t k = {0};
    ag_merger_flush(m, sink, &k, 2000);
    assert_int_equal(k.n, 6); /* the 1-min window (only its pane was sent), final */
    ag_merger_stats_t ms;
    ag_merger_get_stats(m, &ms);
    assert_int_equal(ms.windows, 1); /* kept: the sessions partition may still send */

    cm_session_t s;
    mk_session(&s, "s1", w + 2000, 1000, 1, false, 0, false);
    ag_result_t r;
    assert_int_equal(ag_source_session(st, ses, &s, 0, 3000, &r), CM_OK);
    assert_int_equal(r, AG_APPLIED);
    cm_buf_reset(&b);
    ag_pane_encode(ses, ag_source_pane(ses, 0, w), &b);
    ag_merger_apply(m, b.data, b.len, 4, false, 3000);
    ag_merger_flush(m, sink, &k, 3000);
    assert_int_equal(k.n, 12); /* revision 1 */
    ag_merger_get_stats(m, &ms);
    assert_int_equal(ms.late_panes, 0);
    cm_window_result_t res[1 + AG_N_DIMS];
    for (int i = 0; i < 1 + AG_N_DIMS; i++)
        cm_window_result_init(&res[i]);
    assert_int_equal(ag_merger_result(m, MIN, w, 1, true, res), CM_OK);
    assert_int_equal(res[0].events, 1);
    assert_int_equal(res[0].sessions_closed, 1);
    for (int i = 0; i < 1 + AG_N_DIMS; i++)
        cm_window_result_free(&res[i]);

    /* idle beyond the grace: it stops holding the drop back */
    cm_buf_reset(&b);
    ag_heartbeat_encode(ses->key, CM_WATERMARK_NONE, true, 1, &b);
    ag_merger_apply(m, b.data, b.len, 5, false, 3000);
    ag_merger_flush(m, sink, &k, 1000 + 60 * MIN);
    ag_merger_get_stats(m, &ms);
    assert_int_equal(ms.windows, 0);
    cm_buf_free(&b);
    ag_merger_destroy(m);
    cm_event_free(&ev);
    ag_state_destroy(st);
}

/* As if the loop had sent every change to the merger and to Redis. */
static void as_sent_and_flushed(ag_state_t *st, ag_source_t *s)
{
    ag_source_fold(st, s);
    for (size_t j = 0; j < s->n_open + s->n_closed; j++) {
        ag_pane_t *q = j < s->n_open ? s->open[j] : s->closed[j - s->n_open];
        q->changed = q->redis_totals_dirty = q->redis_hll_dirty = q->redis_full = false;
        for (int d = 0; d < AG_N_DIMS; d++)
            ag_counts_clean(&q->dims[d]);
    }
    ag_source_advance(st, s);
}

/* Strings of windows gone are released: 200 000 distinct URLs over 200
 * minutes do not stay interned, and the live panes keep the right values. */
static void test_intern_compaction(void **state)
{
    (void)state;
    ag_state_t *st = new_state();
    ag_source_t *s = ag_state_source(st, AG_SRC_RAW, 0, CM_WATERMARK_NONE, 0);
    cm_event_t ev;
    cm_event_init(&ev);
    int64_t w = 1700002800000LL;
    char id[32], url[32];
    for (int i = 0; i < 200000; i++) {
        snprintf(id, sizeof(id), "e%d", i);
        snprintf(url, sizeof(url), "/u%d", i);
        mk_event(&ev, id, w + (int64_t)i * 60, "u", "page_view", url);
        put(st, s, &ev, i);
        if (i % 1000 == 999)
            as_sent_and_flushed(st, s);
    }
    as_sent_and_flushed(st, s);
    printf("intern: %u URLs kept of 200000 seen\n", s->intern[AG_DIM_URL].count);
    assert_true(s->intern[AG_DIM_URL].count < 150000);
    /* the 1-min pane of the last event: its 1000 URLs, each once */
    ag_pane_t *p = ag_source_pane(s, 0, ag_window_start(w + 199999LL * 60, MIN));
    assert_non_null(p);
    assert_int_equal(p->dims[AG_DIM_URL].len, 1000);
    uint32_t last = ag_intern_id(&s->intern[AG_DIM_URL], "/u199999", 8);
    assert_int_equal(ag_counts_get(&p->dims[AG_DIM_URL], last), 1);
    ag_pane_t *h = ag_source_pane(s, 2, ag_window_start(w + 199999LL * 60, 3600000));
    assert_int_equal(ag_counts_get(&h->dims[AG_DIM_URL], last), 1);
    cm_event_free(&ev);
    ag_state_destroy(st);
}

/* A pane too big for one Kafka message goes in chunks; the merger puts it
 * back together even with other records in between. */
static void test_merger_chunks(void **state)
{
    (void)state;
    ag_state_t *st = new_state();
    ag_source_t *s0 = ag_state_source(st, AG_SRC_RAW, 0, CM_WATERMARK_NONE, 0);
    cm_event_t ev;
    cm_event_init(&ev);
    int64_t w = 1700002800000LL;
    char id[32], url[300];
    memset(url, 'x', sizeof(url));
    for (int i = 0; i < 5000; i++) { /* 5000 URLs of ~270 bytes: > 1 MB */
        snprintf(id, sizeof(id), "e%d", i);
        snprintf(url + 256, 40, "/%d", i);
        mk_event(&ev, id, w + i, "u", "page_view", url);
        put(st, s0, &ev, i);
    }
    ag_pane_t *p = ag_source_pane(s0, 0, w);
    cm_buf_t rec, chunk, hb;
    cm_buf_init(&rec, 0);
    cm_buf_init(&chunk, 0);
    cm_buf_init(&hb, 0);
    assert_int_equal(ag_pane_encode(s0, p, &rec), CM_OK);
    assert_true(rec.len > AG_PANE_CHUNK);
    uint32_t n = (uint32_t)((rec.len + AG_PANE_CHUNK - 1) / AG_PANE_CHUNK);
    ag_merger_t *m = ag_merger_new(5 * MIN, 60 * MIN);
    ag_heartbeat_encode(ag_src_key(AG_SRC_RAW, 1), w, true, 2, &hb);
    for (uint32_t i = 0; i < n; i++) {
        cm_buf_reset(&chunk);
        assert_int_equal(ag_pane_chunk(s0, p, rec.data, rec.len, i, n, &chunk), CM_OK);
        assert_true(chunk.len <= AG_PANE_CHUNK + 64);
        assert_int_equal(ag_merger_apply(m, chunk.data, chunk.len, 100 + 2 * i, false, 0), CM_OK);
        ag_merger_apply(m, hb.data, hb.len, 101 + 2 * i, false, 0); /* interleaved */
    }
    cm_window_result_t r[1 + AG_N_DIMS];
    for (int i = 0; i < 1 + AG_N_DIMS; i++)
        cm_window_result_init(&r[i]);
    assert_int_equal(ag_merger_result(m, MIN, w, 0, true, r), CM_OK);
    assert_int_equal(r[0].events, 5000);
    assert_int_equal(r[1].n_counts, 5000);
    assert_int_equal(r[0].n_top_urls, AG_TOP_URLS);
    /* the pane counts from its first chunk's offset (for the replay point) */
    cm_buf_t cp;
    cm_buf_init(&cp, 0);
    ag_merger_checkpoint(m, 1000, &cp, NULL);
    int64_t from = 0;
    ag_merger_load_checkpoint(cp.data, cp.len, &from);
    assert_int_equal(from, 100);
    /* a chunk out of sequence is refused */
    cm_buf_reset(&chunk);
    ag_pane_chunk(s0, p, rec.data, rec.len, 1, n, &chunk);
    assert_int_equal(ag_merger_apply(m, chunk.data, chunk.len, 500, false, 0), CM_ERR_PARSE);
    for (int i = 0; i < 1 + AG_N_DIMS; i++)
        cm_window_result_free(&r[i]);
    cm_buf_free(&rec);
    cm_buf_free(&chunk);
    cm_buf_free(&hb);
    cm_buf_free(&cp);
    ag_merger_destroy(m);
    cm_event_free(&ev);
    ag_state_destroy(st);
}

/* The Lua reader embedded in the binary is the file in the repository. */
static void test_lua_embedded(void **state)
{
    (void)state;
    FILE *f = fopen("services/aggregator/aggregator_read.lua", "rb");
    if (!f) {
        skip(); /* not run from the repository root */
        return;
    }
    static char buf[65536];
    size_t n = fread(buf, 1, sizeof(buf) - 1, f);
    fclose(f);
    buf[n] = 0;
    assert_string_equal(buf, ag_redis_read_lua);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_window_start),
        cmocka_unit_test(test_assignment_boundaries),
        cmocka_unit_test(test_lateness_and_final),
        cmocka_unit_test(test_dedupe),
        cmocka_unit_test(test_sessions_revisions),
        cmocka_unit_test(test_checkpoint_replay),
        cmocka_unit_test(test_hll_million),
        cmocka_unit_test(test_hll_redis_format),
        cmocka_unit_test(test_topk),
        cmocka_unit_test(test_merger),
        cmocka_unit_test(test_merger_unreported_source),
        cmocka_unit_test(test_merger_chunks),
        cmocka_unit_test(test_intern_compaction),
        cmocka_unit_test(test_lua_embedded),
        cmocka_unit_test(test_undecodable_first),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
