/*
 * test_sessionizer: the session window logic of one partition
 * (services/sessionizer/sessionizer_state.c) and its changelog
 * (sessionizer_changelog.c), without Kafka: gap boundary, emission rule,
 * out-of-order within the bound, late within lateness (revision), late
 * beyond (verdict LATE), bridge merge with tombstone, id change, idle rule,
 * duplicates, release of state, and a crash/restore in the middle of a
 * stream giving the same output as an uninterrupted run.
 */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <cmocka.h>

/* The tests spell events as positional + designated compound literals. */
#pragma GCC diagnostic ignored "-Wmissing-field-initializers"

#include "cm_event.h"
#include "cm_watermark.h"
#include "../../services/sessionizer/sessionizer_changelog.h"
#include "../../services/sessionizer/sessionizer_state.h"

#define MIN 60000LL
#define GAP (30 * MIN)
#define BOUND 10000LL
#define LATE (5 * MIN)
#define T0 1700000000000LL

/* ---------------------------------------------------------------- helpers */

typedef struct out_rec {
    char sid[SZ_SID_LEN + 1];
    char user[64];
    int64_t start, end, events, page_views, revenue;
    char entry[64], exit[64], device[16], country[8];
    bool converted, tombstone;
    int32_t revision;
} out_rec_t;

typedef struct outs {
    out_rec_t r[4096];
    int n;
} outs_t;

static void cpy(char *dst, size_t n, const char *s) { snprintf(dst, n, "%s", s ? s : ""); }

static cm_err_t capture(const cm_session_t *s, void *ud)
{
    outs_t *o = ud;
    assert_true(o->n < 4096);
    out_rec_t *r = &o->r[o->n++];
    memset(r, 0, sizeof(*r));
    cpy(r->sid, sizeof(r->sid), s->session_id);
    cpy(r->user, sizeof(r->user), s->user_id);
    r->start = s->start_ms;
    r->end = s->end_ms;
    assert_int_equal(s->duration_ms, s->end_ms - s->start_ms);
    r->events = s->event_count;
    r->page_views = s->page_views;
    r->revenue = s->revenue_micros;
    cpy(r->entry, sizeof(r->entry), s->entry_url);
    cpy(r->exit, sizeof(r->exit), s->exit_url);
    cpy(r->device, sizeof(r->device), s->device_type);
    cpy(r->country, sizeof(r->country), s->country);
    r->converted = s->converted;
    r->tombstone = s->tombstone;
    r->revision = s->revision;
    return CM_OK;
}

static sz_part_t *mk_late(int64_t lateness)
{
    sz_params_t prm = {.gap_ms = GAP, .bound_ms = BOUND, .lateness_ms = lateness};
    char errstr[128];
    sz_part_t *p = sz_part_new(0, &prm, errstr, sizeof(errstr));
    assert_non_null(p);
    return p;
}

static sz_part_t *mk(void) { return mk_late(LATE); }

typedef struct evspec {
    const char *user, *id;
    int64_t ts;
    const char *type; /* NULL: page_view */
    const char *url;
    int64_t price; /* micros, purchase */
    int quantity;
    const char *device, *country;
} evspec_t;

static sz_verdict_t feed(sz_part_t *p, evspec_t e, outs_t *o)
{
    cm_event_t ev;
    cm_event_init(&ev);
    const char *type = e.type ? e.type : "page_view";
    cm_event_set_str(&ev, &ev.user_id, e.user, strlen(e.user));
    cm_event_set_str(&ev, &ev.event_id, e.id, strlen(e.id));
    cm_event_set_str(&ev, &ev.event_type, type, strlen(type));
    ev.type = (cm_event_type_t)cm_event_type_parse(type);
    const char *url = e.url ? e.url : (!e.type ? "/home" : NULL);
    if (url)
        cm_event_set_str(&ev, &ev.page_url, url, strlen(url));
    if (e.device)
        cm_event_set_str(&ev, &ev.device_type, e.device, strlen(e.device));
    if (e.country)
        cm_event_set_str(&ev, &ev.geo_country, e.country, strlen(e.country));
    ev.ts_ms = e.ts;
    if (e.price) {
        ev.has_price = true;
        ev.price_micros = e.price;
    }
    ev.quantity = e.quantity;
    sz_verdict_t v = (sz_verdict_t)-1;
    assert_int_equal(sz_part_add_event(p, &ev, &v, capture, o), CM_OK);
    cm_event_free(&ev);
    return v;
}

/* Raises the watermark with an event of another user. */
static void tick_to(sz_part_t *p, int64_t wm, outs_t *o)
{
    static int n;
    char id[32];
    snprintf(id, sizeof(id), "tick-%d", n++);
    assert_int_equal(feed(p, (evspec_t){"zz-ticker", id, wm + BOUND}, o), SZ_ACCEPTED);
}

static int count_user(const outs_t *o, const char *user)
{
    int n = 0;
    for (int i = 0; i < o->n; i++)
        n += strcmp(o->r[i].user, user) == 0;
    return n;
}

static const out_rec_t *last_of(const outs_t *o, const char *user)
{
    for (int i = o->n - 1; i >= 0; i--)
        if (strcmp(o->r[i].user, user) == 0)
            return &o->r[i];
    return NULL;
}

/* ------------------------------------------------------------------ tests */

static void test_gap_boundary(void **state)
{
    (void)state;
    sz_part_t *p = mk();
    outs_t o = {0};
    /* exactly 30 min apart: one session */
    feed(p, (evspec_t){"a", "a1", T0, .url = "/a1"}, &o);
    feed(p, (evspec_t){"a", "a2", T0 + GAP, .url = "/a2"}, &o);
    /* 30 min + 1 ms apart: two sessions */
    feed(p, (evspec_t){"b", "b1", T0}, &o);
    feed(p, (evspec_t){"b", "b2", T0 + GAP + 1}, &o);
    assert_int_equal(sz_part_open_sessions(p), 3 + 1 /* ticker */ - 1);
    tick_to(p, T0 + 3 * GAP, &o);
    assert_int_equal(count_user(&o, "a"), 1);
    const out_rec_t *a = last_of(&o, "a");
    assert_int_equal(a->events, 2);
    assert_int_equal(a->start, T0);
    assert_int_equal(a->end, T0 + GAP);
    assert_string_equal(a->entry, "/a1");
    assert_string_equal(a->exit, "/a2");
    assert_int_equal(a->revision, 0);
    assert_int_equal(count_user(&o, "b"), 2);
    sz_part_destroy(p);
}

static void test_emission_rule(void **state)
{
    (void)state;
    sz_part_t *p = mk();
    outs_t o = {0};
    feed(p, (evspec_t){"a", "a1", T0}, &o);
    /* watermark = end + gap - 1: still open */
    tick_to(p, T0 + GAP - 1, &o);
    assert_int_equal(count_user(&o, "a"), 0);
    /* watermark == end + gap: emitted (a session whose end <= watermark) */
    tick_to(p, T0 + GAP, &o);
    assert_int_equal(count_user(&o, "a"), 1);
    assert_int_equal(last_of(&o, "a")->revision, 0);
    /* emitted once only */
    tick_to(p, T0 + GAP + 1000, &o);
    assert_int_equal(count_user(&o, "a"), 1);
    sz_part_destroy(p);
}

static void test_out_of_order_within_bound(void **state)
{
    (void)state;
    sz_part_t *p = mk();
    outs_t o = {0};
    /* arrival order differs from time order by < bound */
    feed(p, (evspec_t){"a", "e2", T0 + 5000, .url = "/two", .device = "mobile"}, &o);
    feed(p, (evspec_t){"a", "e1", T0, .url = "/one", .device = "desktop", .country = "FR"}, &o);
    feed(p, (evspec_t){"a", "e4", T0 + 14000, .url = "/four"}, &o);
    assert_int_equal(feed(p, (evspec_t){"a", "e3", T0 + 9000, .url = "/three"}, &o),
                     SZ_ACCEPTED);
    tick_to(p, T0 + 2 * GAP, &o);
    assert_int_equal(count_user(&o, "a"), 1);
    const out_rec_t *r = last_of(&o, "a");
    assert_int_equal(r->events, 4);
    assert_int_equal(r->page_views, 4);
    assert_string_equal(r->entry, "/one");
    assert_string_equal(r->exit, "/four");
    assert_string_equal(r->device, "desktop"); /* of the earliest event */
    assert_string_equal(r->country, "FR");
    assert_int_equal(r->start, T0);
    assert_int_equal(r->end, T0 + 14000);
    assert_int_equal(p->c.late, 0);
    sz_part_destroy(p);
}

static void test_late_within_lateness_revision(void **state)
{
    (void)state;
    sz_part_t *p = mk();
    outs_t o = {0};
    feed(p, (evspec_t){"a", "a1", T0, .url = "/x"}, &o);
    feed(p, (evspec_t){"a", "a2", T0 + MIN, .url = "/y"}, &o);
    tick_to(p, T0 + MIN + GAP, &o); /* closes it */
    assert_int_equal(count_user(&o, "a"), 1);
    char sid0[SZ_SID_LEN + 1];
    strcpy(sid0, last_of(&o, "a")->sid);
    /* a purchase 2 min after the last event, arriving 1 min after close:
     * within lateness, extends the session: re-emitted when closed again */
    assert_int_equal(feed(p, (evspec_t){"a", "a3", T0 + 3 * MIN, "purchase", .price = 2500000,
                                        .quantity = 3},
                          &o),
                     SZ_ACCEPTED);
    assert_int_equal(count_user(&o, "a"), 1); /* end + gap > wm: open again */
    tick_to(p, T0 + 3 * MIN + GAP, &o);
    assert_int_equal(count_user(&o, "a"), 2);
    const out_rec_t *r = last_of(&o, "a");
    assert_int_equal(r->revision, 1);
    assert_string_equal(r->sid, sid0);
    assert_int_equal(r->events, 3);
    assert_int_equal(r->page_views, 2);
    assert_true(r->converted);
    assert_int_equal(r->revenue, 7500000);
    assert_string_equal(r->exit, "/y"); /* the purchase has no url */
    /* a late event inside the closed session: re-emitted at once, rev 2 */
    assert_int_equal(feed(p, (evspec_t){"a", "a4", T0 + 2 * MIN, "click"}, &o), SZ_ACCEPTED);
    assert_int_equal(count_user(&o, "a"), 3);
    assert_int_equal(last_of(&o, "a")->revision, 2);
    assert_int_equal(last_of(&o, "a")->events, 4);
    sz_part_destroy(p);
}

static void test_late_beyond_lateness(void **state)
{
    (void)state;
    sz_part_t *p = mk();
    outs_t o = {0};
    feed(p, (evspec_t){"a", "a1", T0}, &o);
    feed(p, (evspec_t){"a", "a3", T0 + 2000}, &o);
    int64_t wm = T0 + 2000 + GAP + LATE; /* end + gap + lateness <= wm: final */
    tick_to(p, wm, &o);
    assert_int_equal(count_user(&o, "a"), 1);
    assert_int_equal(sz_part_open_sessions(p), 1); /* released (the ticker's is left) */
    /* inside the final session: late */
    assert_int_equal(feed(p, (evspec_t){"a", "a2", T0 + 1000}, &o), SZ_LATE);
    /* after it, within a gap: it would extend a final session: late too,
     * although a session of it alone would still be within lateness */
    assert_int_equal(feed(p, (evspec_t){"a", "a4", T0 + 2000 + GAP}, &o), SZ_LATE);
    /* more than a gap after it: a new session */
    assert_int_equal(feed(p, (evspec_t){"a", "a5", T0 + 2001 + GAP}, &o), SZ_ACCEPTED);
    /* alone, t + gap + lateness == wm: late */
    assert_int_equal(feed(p, (evspec_t){"c", "c1", wm - GAP - LATE}, &o), SZ_LATE);
    /* alone, one ms later: accepted and, being closed already, emitted */
    assert_int_equal(feed(p, (evspec_t){"c", "c2", wm - GAP - LATE + 1}, &o), SZ_ACCEPTED);
    assert_int_equal(count_user(&o, "c"), 1);
    assert_int_equal(p->c.late, 3);
    sz_part_destroy(p);
}

static void test_late_joins_live_session(void **state)
{
    (void)state;
    sz_part_t *p = mk();
    outs_t o = {0};
    /* a long session: events every 20 min for 2 h */
    char id[16];
    for (int i = 0; i <= 6; i++) {
        snprintf(id, sizeof(id), "a%d", i);
        feed(p, (evspec_t){"a", id, T0 + i * 20 * MIN}, &o);
    }
    /* an event 10 min into the session, arriving 2 h late: alone it would be
     * final, but it falls inside a live session, which accepts it */
    assert_int_equal(feed(p, (evspec_t){"a", "old", T0 + 10 * MIN}, &o), SZ_ACCEPTED);
    tick_to(p, T0 + 3 * 60 * MIN, &o);
    assert_int_equal(last_of(&o, "a")->events, 8);
    sz_part_destroy(p);
}

static void test_bridge_merge(void **state)
{
    (void)state;
    /* both sessions emitted and still live needs lateness > gap */
    sz_part_t *p = mk_late(120 * MIN);
    outs_t o = {0};
    feed(p, (evspec_t){"a", "x1", T0, .url = "/first", .device = "tablet"}, &o);
    feed(p, (evspec_t){"a", "y1", T0 + 50 * MIN, .url = "/second", .device = "mobile"}, &o);
    tick_to(p, T0 + 80 * MIN, &o); /* both closed: 2 sessions emitted */
    assert_int_equal(count_user(&o, "a"), 2);
    char sid_x[SZ_SID_LEN + 1], sid_y[SZ_SID_LEN + 1];
    strcpy(sid_x, o.r[o.n - 2].start == T0 ? o.r[o.n - 2].sid : o.r[o.n - 1].sid);
    strcpy(sid_y, o.r[o.n - 2].start == T0 ? o.r[o.n - 1].sid : o.r[o.n - 2].sid);
    assert_string_not_equal(sid_x, sid_y);
    /* a late event at +25 min bridges them (25 <= 30 and 25 <= 30) */
    int before = o.n;
    assert_int_equal(feed(p, (evspec_t){"a", "bridge", T0 + 25 * MIN, "click"}, &o),
                     SZ_ACCEPTED);
    assert_int_equal(o.n, before + 2);
    /* first the absorbed one, as a tombstone with its own id and rev + 1 */
    assert_true(o.r[before].tombstone);
    assert_string_equal(o.r[before].sid, sid_y);
    assert_int_equal(o.r[before].revision, 1);
    /* then the merged one (closed already), keeping the earlier id */
    const out_rec_t *m = &o.r[before + 1];
    assert_false(m->tombstone);
    assert_string_equal(m->sid, sid_x);
    assert_int_equal(m->revision, 1);
    assert_int_equal(m->events, 3);
    assert_int_equal(m->start, T0);
    assert_int_equal(m->end, T0 + 50 * MIN);
    assert_string_equal(m->entry, "/first");
    assert_string_equal(m->exit, "/second");
    assert_string_equal(m->device, "tablet");
    assert_int_equal(p->c.merges, 1);
    sz_part_destroy(p);
}

static void test_bridge_merge_open(void **state)
{
    (void)state;
    /* default lateness: the first session is emitted, the second still open */
    sz_part_t *p = mk();
    outs_t o = {0};
    feed(p, (evspec_t){"a", "x1", T0}, &o);
    tick_to(p, T0 + GAP, &o);
    assert_int_equal(count_user(&o, "a"), 1);
    char sid_x[SZ_SID_LEN + 1];
    strcpy(sid_x, last_of(&o, "a")->sid);
    /* y: 34 min after x, while x is still live (x.end + 35 min > wm) */
    feed(p, (evspec_t){"a", "y1", T0 + 34 * MIN}, &o);
    assert_int_equal(feed(p, (evspec_t){"a", "bridge", T0 + 17 * MIN, "click"}, &o),
                     SZ_ACCEPTED);
    assert_int_equal(count_user(&o, "a"), 1); /* y was never emitted: no tombstone */
    tick_to(p, T0 + 80 * MIN, &o);
    const out_rec_t *m = last_of(&o, "a");
    assert_int_equal(count_user(&o, "a"), 2);
    assert_string_equal(m->sid, sid_x);
    assert_int_equal(m->revision, 1);
    assert_int_equal(m->events, 3);
    sz_part_destroy(p);
}

static void test_id_follows_earliest_event(void **state)
{
    (void)state;
    sz_part_t *p = mk();
    outs_t o = {0};
    feed(p, (evspec_t){"a", "second", T0 + MIN}, &o);
    tick_to(p, T0 + MIN + GAP, &o);
    char old[SZ_SID_LEN + 1];
    strcpy(old, last_of(&o, "a")->sid);
    /* a late event earlier than the first: the session's earliest event and
     * so its id change; the old id is retracted */
    int before = o.n;
    feed(p, (evspec_t){"a", "first", T0}, &o);
    assert_int_equal(o.n, before + 2);
    assert_true(o.r[before].tombstone);
    assert_string_equal(o.r[before].sid, old);
    assert_int_equal(o.r[before].revision, 1);
    assert_false(o.r[before + 1].tombstone);
    assert_string_not_equal(o.r[before + 1].sid, old);
    assert_int_equal(o.r[before + 1].revision, 1);
    assert_int_equal(o.r[before + 1].start, T0);
    /* the id is hash(user) then hash(earliest event id) */
    char want[SZ_SID_LEN + 1];
    sz_session_id(cm_dedupe_hash("a", 1), cm_dedupe_hash("first", 5), want);
    assert_string_equal(o.r[before + 1].sid, want);
    sz_part_destroy(p);
}

static void test_duplicates(void **state)
{
    (void)state;
    sz_part_t *p = mk();
    outs_t o = {0};
    feed(p, (evspec_t){"a", "p1", T0, "purchase", .price = 1000000}, &o);
    assert_int_equal(feed(p, (evspec_t){"a", "p1", T0, "purchase", .price = 1000000}, &o),
                     SZ_DUPLICATE);
    feed(p, (evspec_t){"a", "v1", T0 + 1000}, &o);
    assert_int_equal(feed(p, (evspec_t){"a", "v1", T0 + 1000}, &o), SZ_DUPLICATE);
    tick_to(p, T0 + 2 * GAP, &o);
    const out_rec_t *r = last_of(&o, "a");
    assert_int_equal(r->events, 2);
    assert_int_equal(r->page_views, 1);
    assert_int_equal(r->revenue, 1000000);
    assert_int_equal(p->c.duplicates, 2);
    sz_part_destroy(p);
}

static void test_idle_rule(void **state)
{
    (void)state;
    sz_part_t *p = mk();
    outs_t o = {0};
    feed(p, (evspec_t){"a", "a1", T0}, &o);
    feed(p, (evspec_t){"a", "a3", T0 + 2000}, &o);
    /* the partition stops; the service watermark (other partitions, or all
     * idle -> max) moves on: emission follows it */
    assert_int_equal(sz_part_emit_upto(p, T0 + 2000 + GAP - 1, capture, &o), CM_OK);
    assert_int_equal(o.n, 0);
    assert_int_equal(sz_part_emit_upto(p, T0 + 2000 + GAP, capture, &o), CM_OK);
    assert_int_equal(o.n, 1);
    /* but lateness and release keep following the partition's own watermark:
     * an event of the session is still accepted and re-emitted */
    assert_int_equal(feed(p, (evspec_t){"a", "a2", T0 + 1000}, &o), SZ_ACCEPTED);
    assert_int_equal(sz_part_emit_upto(p, T0 + 2000 + GAP + 5, capture, &o), CM_OK);
    assert_int_equal(o.n, 2);
    assert_int_equal(o.r[1].revision, 1);
    assert_int_equal(sz_part_open_sessions(p), 1);
    /* and a watermark below the partition's own does nothing */
    assert_int_equal(sz_part_emit_upto(p, 0, capture, &o), CM_OK);
    assert_int_equal(o.n, 2);
    sz_part_destroy(p);
}

static void test_release_and_memory(void **state)
{
    (void)state;
    sz_part_t *p = mk();
    outs_t o = {0};
    char u[32], id[32];
    for (int i = 0; i < 300; i++) {
        snprintf(u, sizeof(u), "user-%d", i);
        snprintf(id, sizeof(id), "ev-%d", i);
        feed(p, (evspec_t){u, id, T0 + i}, &o);
    }
    assert_int_equal(sz_part_open_sessions(p), 300);
    assert_int_equal(sz_part_users(p), 300);
    size_t bytes = sz_part_bytes(p);
    assert_true(bytes > 300 * 100);
    tick_to(p, T0 + 300 + GAP + LATE, &o); /* every user idle beyond gap + lateness */
    assert_int_equal(o.n, 300);
    assert_int_equal(sz_part_open_sessions(p), 1); /* the ticker */
    assert_int_equal(p->c.released, 300);
    /* the users' final_end markers go one gap later */
    assert_int_equal(sz_part_users(p), 301);
    tick_to(p, T0 + 300 + 2 * GAP + LATE, &o);
    assert_int_equal(sz_part_users(p), 1);
    sz_part_destroy(p);
}

/* ------------------------------------------------- changelog and restore */

typedef struct kv {
    char key[80];
    size_t klen;
    uint8_t *val; /* NULL: tombstone */
    size_t vlen;
} kv_t;

typedef struct log {
    kv_t *r;
    size_t n, cap;
} log_t;

static cm_err_t log_put(const void *key, size_t klen, const void *val, size_t vlen, void *ud)
{
    log_t *l = ud;
    assert_non_null(key); /* a compacted topic refuses a record without a key */
    assert_true(klen > 0);
    if (l->n == l->cap) {
        l->cap = l->cap ? l->cap * 2 : 256;
        l->r = realloc(l->r, l->cap * sizeof(*l->r));
    }
    kv_t *e = &l->r[l->n++];
    assert_true(klen <= sizeof(e->key));
    memcpy(e->key, key, klen);
    e->klen = klen;
    e->val = val ? malloc(vlen ? vlen : 1) : NULL;
    if (val)
        memcpy(e->val, val, vlen);
    e->vlen = vlen;
    return CM_OK;
}

static void log_free(log_t *l)
{
    for (size_t i = 0; i < l->n; i++)
        free(l->r[i].val);
    free(l->r);
}

static sz_part_t *restore(const log_t *l)
{
    sz_part_t *p = mk();
    for (size_t i = 0; i < l->n; i++)
        assert_int_equal(sz_changelog_apply(p, l->r[i].key, l->r[i].klen, l->r[i].val,
                                            l->r[i].vlen),
                         CM_OK);
    assert_int_equal(sz_changelog_restore_done(p), CM_OK);
    return p;
}

/* A deterministic messy stream: many users, out of order, late, duplicates. */
static evspec_t gen(int i, char *user, char *id)
{
    unsigned x = (unsigned)i * 2654435761u;
    snprintf(user, 16, "u%u", x % 37);
    int64_t ts = T0 + (int64_t)i * 50000 - (int64_t)(x % 9000);
    if (x % 53 == 0)
        ts -= 4 * MIN; /* late within lateness */
    if (x % 97 == 0)
        ts -= 3 * 60 * MIN; /* late beyond */
    if (x % 41 == 0)
        snprintf(id, 16, "e%d", i - 1); /* duplicate of the previous id */
    else
        snprintf(id, 16, "e%d", i);
    static const char *types[] = {NULL, NULL, "click", "purchase", "add_to_cart"};
    static const char *urls[] = {"/", "/a", "/b", "/c"};
    evspec_t e = {user, id, ts, types[x % 5], urls[(x >> 8) % 4], 0, 0, NULL, NULL};
    if (e.type && strcmp(e.type, "purchase") == 0) {
        e.price = (int64_t)(x % 100000) * 10;
        e.quantity = (int)(x % 3);
    }
    e.device = (x >> 4) % 2 ? "mobile" : "desktop";
    e.country = (x >> 5) % 2 ? "DE" : NULL;
    return e;
}

static void run_stream(sz_part_t **pp, int from, int to, outs_t *o, log_t *l, cm_buf_t *scratch)
{
    char user[16], id[16];
    for (int i = from; i < to; i++) {
        evspec_t e = gen(i, user, id);
        feed(*pp, e, o);
        if (l && i % 25 == 24)
            assert_int_equal(sz_changelog_flush(*pp, scratch, log_put, l), CM_OK);
    }
    if (l)
        assert_int_equal(sz_changelog_flush(*pp, scratch, log_put, l), CM_OK);
}

static void test_restore_equals_uninterrupted(void **state)
{
    (void)state;
    enum { N = 3000 };
    cm_buf_t scratch;
    cm_buf_init(&scratch, 0);
    /* uninterrupted */
    sz_part_t *a = mk();
    static outs_t oa, ob; /* large: not on the stack */
    memset(&oa, 0, sizeof(oa));
    memset(&ob, 0, sizeof(ob));
    log_t la = {0};
    run_stream(&a, 0, N, &oa, &la, &scratch);
    /* crash after each of a few commits, restore from the changelog, go on */
    sz_part_t *b = mk();
    log_t lb = {0};
    int cuts[] = {700, 1400, 2100, N};
    int from = 0;
    for (int k = 0; k < 4; k++) {
        run_stream(&b, from, cuts[k], &ob, &lb, &scratch);
        from = cuts[k];
        sz_part_destroy(b);
        b = restore(&lb);
    }
    assert_true(oa.n > 20);
    assert_int_equal(oa.n, ob.n);
    assert_memory_equal(oa.r, ob.r, sizeof(out_rec_t) * (size_t)oa.n);
    assert_true(a->c.late > 0);
    assert_true(a->c.duplicates > 0);
    assert_int_equal(sz_part_open_sessions(a), sz_part_open_sessions(b));
    assert_int_equal(sz_part_users(a), sz_part_users(b));
    /* compaction keeps the state: replaying only the last value per key gives
     * the same state as replaying everything */
    sz_part_destroy(b);
    sz_part_destroy(a);
    log_free(&la);
    log_free(&lb);
    cm_buf_free(&scratch);
}

static void test_changelog_tombstones(void **state)
{
    (void)state;
    sz_part_t *p = mk();
    outs_t o = {0};
    log_t l = {0};
    cm_buf_t scratch;
    cm_buf_init(&scratch, 0);
    feed(p, (evspec_t){"a", "a1", T0}, &o);
    assert_int_equal(sz_changelog_pending(p), 3); /* user a, dedupe delta, meta */
    assert_int_equal(sz_changelog_flush(p, &scratch, log_put, &l), CM_OK);
    assert_int_equal(l.n, 3);
    assert_int_equal(sz_changelog_pending(p), 0);
    /* a released user gets a tombstone; the old delta too once expired */
    tick_to(p, T0 + 2 * GAP + LATE, &o);
    size_t before = l.n;
    assert_int_equal(sz_changelog_flush(p, &scratch, log_put, &l), CM_OK);
    bool a_tomb = false, delta_tomb = false;
    for (size_t i = before; i < l.n; i++) {
        if (l.r[i].klen == 1 && l.r[i].key[0] == 'a' && !l.r[i].val)
            a_tomb = true;
        if (l.r[i].klen == SZ_CL_DELTA_KEY_LEN && !l.r[i].val)
            delta_tomb = true;
    }
    assert_true(a_tomb);
    assert_true(delta_tomb);
    /* garbage is refused */
    assert_int_equal(sz_changelog_apply(p, "x", 1, "\x09", 1), CM_ERR_PARSE);
    assert_int_equal(sz_changelog_apply(p, "\0zz", 3, "\x01", 1), CM_ERR_PARSE);
    assert_int_equal(sz_changelog_apply(p, SZ_CL_META_KEY, SZ_CL_META_KEY_LEN, "\x01", 1),
                     CM_ERR_PARSE);
    assert_int_equal(sz_changelog_apply(p, "x", 1, "\x01\x01\x00", 3), CM_ERR_PARSE);
    assert_int_equal(sz_part_users(p), 1);
    cm_buf_free(&scratch);
    log_free(&l);
    sz_part_destroy(p);
}

static void test_bad_params(void **state)
{
    (void)state;
    char errstr[128];
    sz_params_t prm = {.gap_ms = 0, .bound_ms = 1, .lateness_ms = 1};
    assert_null(sz_part_new(0, &prm, errstr, sizeof(errstr)));
    sz_part_destroy(NULL);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_gap_boundary),
        cmocka_unit_test(test_emission_rule),
        cmocka_unit_test(test_out_of_order_within_bound),
        cmocka_unit_test(test_late_within_lateness_revision),
        cmocka_unit_test(test_late_beyond_lateness),
        cmocka_unit_test(test_late_joins_live_session),
        cmocka_unit_test(test_bridge_merge),
        cmocka_unit_test(test_bridge_merge_open),
        cmocka_unit_test(test_id_follows_earliest_event),
        cmocka_unit_test(test_duplicates),
        cmocka_unit_test(test_idle_rule),
        cmocka_unit_test(test_release_and_memory),
        cmocka_unit_test(test_restore_equals_uninterrupted),
        cmocka_unit_test(test_changelog_tombstones),
        cmocka_unit_test(test_bad_params),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
