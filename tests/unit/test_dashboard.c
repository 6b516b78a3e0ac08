/* Unit tests of dashboard-ws: the snapshot/update messages, the per-client
 * queues and coalescing, the token and Origin checks, the note parser and
 * the page built into the binary. No network. */
#include <dirent.h>
#include <jansson.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <cmocka.h>

#include "../../services/dashboard-ws/dashboard_auth.h"
#include "../../services/dashboard-ws/dashboard_clients.h"
#include "../../services/dashboard-ws/dashboard_layout.h"
#include "../../services/dashboard-ws/dashboard_snapshot.h"
#include "../../services/dashboard-ws/dashboard_web.h"

/* ------------------------------------------------------------- helpers */

#define T0 1700000040000LL /* a minute boundary */

/* n windows from T0, window i with events = 10 * (i + 1) (+ bump on the
 * last), one URL breakdown. */
static void make_data(db_data_t *d, size_t n, int64_t bump)
{
    memset(d, 0, sizeof(*d));
    d->window_ms = 60000;
    d->from_ms = T0;
    d->to_ms = T0 + (int64_t)n * 60000;
    d->n_windows = n;
    d->windows = calloc(n, sizeof(db_window_t));
    for (size_t i = 0; i < n; i++) {
        db_window_t *w = &d->windows[i];
        w->start_ms = T0 + (int64_t)i * 60000;
        w->present = true;
        w->events = 10 * (int64_t)(i + 1) + (i + 1 == n ? bump : 0);
        w->page_views = 6 * (int64_t)(i + 1);
        w->purchases = 1;
        w->revenue_micros = 2500000;
        w->sessions = 4;
        w->session_ms_sum = 4 * 120000;
        w->bounces = 1;
        w->conversions = 2;
        w->unique_users = 5;
        w->late = -1;
    }
    d->unique_users = 42;
    d->redis_ok = true;
    d->dims[0] = calloc(2, sizeof(db_count_t));
    d->dims[0][0].key = strdup("/a");
    d->dims[0][0].n = 7;
    d->dims[0][1].key = strdup("/b\"quoted\"");
    d->dims[0][1].n = 3;
    d->n_dims[0] = 2;
}

static json_t *parse_msg(db_msg_t *m)
{
    json_error_t e;
    json_t *j = json_loadb((const char *)db_msg_body(m), m->len, 0, &e);
    if (!j)
        fail_msg("invalid JSON: %s in %s", e.text, db_msg_body(m));
    return j;
}

/* ------------------------------------------------------------ snapshot */

static void test_snapshot_message(void **st)
{
    db_data_t d;
    make_data(&d, 3, 0);
    db_model_t *m = db_model_build(&d, NULL, 1);
    assert_non_null(m);
    assert_int_equal(m->snapshot->kind, DB_MSG_SNAPSHOT);
    json_t *j = parse_msg(m->snapshot);
    assert_string_equal(json_string_value(json_object_get(j, "type")), "snapshot");
    assert_int_equal(json_integer_value(json_object_get(j, "seq")), 1);
    assert_int_equal(json_integer_value(json_object_get(j, "from")), T0);
    json_t *series = json_object_get(j, "series");
    assert_int_equal(json_array_size(series), 3);
    assert_int_equal(json_integer_value(json_object_get(json_array_get(series, 2), "events")), 30);
    assert_true(json_is_null(json_object_get(json_array_get(series, 0), "late")));
    json_t *s = json_object_get(j, "summary");
    assert_int_equal(json_integer_value(json_object_get(s, "events")), 60);
    assert_int_equal(json_integer_value(json_object_get(s, "unique_users")), 42);
    assert_int_equal(json_integer_value(json_object_get(s, "revenue_micros")), 7500000);
    assert_int_equal(json_integer_value(json_object_get(s, "avg_session_ms")), 120000);
    assert_float_equal(json_real_value(json_object_get(s, "bounce_rate")), 0.25, 1e-9);
    assert_float_equal(json_real_value(json_object_get(s, "conversion_rate")), 0.5, 1e-9);
    assert_float_equal(json_real_value(json_object_get(s, "sessions_per_min")), 4.0, 1e-9);
    assert_true(json_is_null(json_object_get(s, "late_rate")));
    /* the last complete minute is the one before the newest */
    json_t *cur = json_object_get(s, "current");
    assert_int_equal(json_integer_value(json_object_get(cur, "t")), T0 + 60000);
    assert_float_equal(json_real_value(json_object_get(cur, "events_per_s")), 20.0 / 60, 1e-9);
    json_t *top = json_object_get(s, "top_urls");
    assert_int_equal(json_array_size(top), 2);
    assert_string_equal(json_string_value(json_array_get(json_array_get(top, 1), 0)),
                        "/b\"quoted\"");
    json_t *status = json_object_get(j, "status");
    assert_string_equal(json_string_value(json_object_get(status, "redis")), "ok");
    assert_false(json_is_true(json_object_get(status, "stale")));
    json_decref(j);
    db_model_unref(m);
    db_data_clear(&d);
}

static void test_update_carries_only_changes(void **st)
{
    db_data_t d1, d2, d3;
    make_data(&d1, 4, 0);
    make_data(&d2, 4, 5); /* the newest window moved */
    make_data(&d3, 4, 5);
    d3.windows[0].events = 99; /* and then the oldest (a late revision) */
    db_model_t *m1 = db_model_build(&d1, NULL, 1);
    db_model_t *m2 = db_model_build(&d2, m1, 2);
    db_model_t *m3 = db_model_build(&d3, m2, 3);
    assert_int_equal(m2->changed[0], 1);
    assert_int_equal(m2->changed[3], 2);
    assert_int_equal(m3->changed[0], 3);
    assert_int_equal(m3->changed[3], 2);

    db_msg_t *u = db_model_update(m3, 2);
    json_t *j = parse_msg(u);
    assert_string_equal(json_string_value(json_object_get(j, "type")), "update");
    assert_int_equal(json_integer_value(json_object_get(j, "base")), 2);
    assert_int_equal(json_integer_value(json_object_get(j, "seq")), 3);
    json_t *series = json_object_get(j, "series");
    assert_int_equal(json_array_size(series), 1);
    assert_int_equal(json_integer_value(json_object_get(json_array_get(series, 0), "t")), T0);
    json_decref(j);
    db_msg_unref(u);

    /* from model 1: both changes, folded into one message */
    u = db_model_update(m3, 1);
    j = parse_msg(u);
    assert_int_equal(json_array_size(json_object_get(j, "series")), 2);
    json_decref(j);
    db_msg_unref(u);

    assert_null(db_model_update(m3, 3));
    assert_false(db_model_same(m2, m3));
    db_model_t *m4 = db_model_build(&d3, m3, 4);
    assert_true(db_model_same(m3, m4));
    db_model_unref(m1);
    db_model_unref(m2);
    db_model_unref(m3);
    db_model_unref(m4);
    db_data_clear(&d1);
    db_data_clear(&d2);
    db_data_clear(&d3);
}

static void test_stale_status(void **st)
{
    db_data_t d, c;
    make_data(&d, 2, 0);
    assert_int_equal(db_data_copy(&c, &d), CM_OK);
    c.redis_ok = false;
    snprintf(c.error, sizeof(c.error), "redis 127.0.0.1:1: Connection refused");
    c.stale_since_ms = T0;
    db_model_t *m1 = db_model_build(&d, NULL, 1);
    db_model_t *m2 = db_model_build(&c, m1, 2);
    assert_true(m2->stale);
    db_msg_t *u = db_model_update(m2, 1);
    json_t *j = parse_msg(u);
    json_t *status = json_object_get(j, "status");
    assert_true(json_is_true(json_object_get(status, "stale")));
    assert_string_equal(json_string_value(json_object_get(status, "redis")), "down");
    assert_int_equal(json_integer_value(json_object_get(status, "stale_since")), T0);
    /* the data did not change: no window in the update */
    assert_int_equal(json_array_size(json_object_get(j, "series")), 0);
    json_decref(j);
    db_msg_unref(u);
    db_model_unref(m1);
    db_model_unref(m2);
    db_data_clear(&d);
    db_data_clear(&c);
}

static void test_counts_top(void **st)
{
    db_count_t c[4] = {{strdup("b"), 5}, {strdup("a"), 5}, {strdup("c"), 9}, {strdup("d"), 1}};
    size_t n = db_counts_top(c, 4, 3);
    assert_int_equal(n, 3);
    assert_string_equal(c[0].key, "c");
    assert_string_equal(c[1].key, "a"); /* ties by key */
    assert_string_equal(c[2].key, "b");
    assert_null(c[3].key);
    for (size_t i = 0; i < n; i++)
        free(c[i].key);
}

/* ------------------------------------------------------------- clients */

static db_hub_t hub;

static db_model_t *model(uint64_t seq, int64_t bump)
{
    db_data_t d;
    make_data(&d, 3, bump);
    db_model_t *m = db_model_build(&d, hub.model, seq);
    db_data_clear(&d);
    return m;
}

static void hub_setup(size_t qmax, size_t qbytes)
{
    db_hub_opts_t o = {.interval_ms = 250, .queue_max = qmax, .queue_bytes = qbytes,
                       .stall_ms = 5000};
    assert_int_equal(db_hub_init(&hub, &o, NULL), CM_OK);
}

static void test_client_snapshot_then_updates(void **st)
{
    hub_setup(16, 1 << 20);
    db_client_t a = {0};
    db_action_t act;
    assert_int_equal(db_client_attach(&hub, &a, 0, &act), CM_OK);
    assert_int_equal(act, DB_ACT_NONE); /* no data yet */
    assert_int_equal(hub.n_clients, 1);

    db_hub_set_model(&hub, model(1, 0));
    int64_t wake = 0;
    assert_int_equal(db_client_offer(&hub, &a, 0, &wake), DB_ACT_WRITE);
    db_msg_t *m = db_client_take(&hub, &a, 0);
    assert_int_equal(m->kind, DB_MSG_SNAPSHOT); /* first data: a snapshot */
    db_msg_unref(m);

    /* a change 100 ms later waits for the interval */
    db_hub_set_model(&hub, model(2, 1));
    assert_int_equal(db_client_offer(&hub, &a, 100, &wake), DB_ACT_TIMER);
    assert_int_equal(wake, 250);
    /* two more changes before it: coalesced */
    db_hub_set_model(&hub, model(3, 2));
    assert_int_equal(db_client_offer(&hub, &a, 150, &wake), DB_ACT_TIMER);
    db_hub_set_model(&hub, model(4, 3));
    assert_int_equal(db_client_offer(&hub, &a, 200, &wake), DB_ACT_TIMER);
    assert_null(db_client_take(&hub, &a, 200));
    /* the timer: one update from 1 to 4 */
    assert_int_equal(db_client_offer(&hub, &a, 250, &wake), DB_ACT_WRITE);
    m = db_client_take(&hub, &a, 250);
    assert_int_equal(m->kind, DB_MSG_UPDATE);
    json_t *j = parse_msg(m);
    assert_int_equal(json_integer_value(json_object_get(j, "base")), 1);
    assert_int_equal(json_integer_value(json_object_get(j, "seq")), 4);
    json_decref(j);
    db_msg_unref(m);
    assert_int_equal(db_client_offer(&hub, &a, 600, &wake), DB_ACT_NONE);

    db_client_detach(&hub, &a);
    assert_int_equal(hub.n_clients, 0);
    db_hub_clear(&hub);
}

static void test_clients_share_updates(void **st)
{
    hub_setup(16, 1 << 20);
    db_hub_set_model(&hub, model(1, 0));
    db_client_t a = {0}, b = {0};
    db_action_t act;
    db_client_attach(&hub, &a, 0, &act);
    assert_int_equal(act, DB_ACT_WRITE);
    db_client_attach(&hub, &b, 0, &act);
    db_msg_t *sa = db_client_take(&hub, &a, 0), *sb = db_client_take(&hub, &b, 0);
    assert_ptr_equal(sa, sb); /* one snapshot shared */
    db_msg_unref(sa);
    db_msg_unref(sb);
    db_hub_set_model(&hub, model(2, 1));
    int64_t wake;
    db_client_offer(&hub, &a, 1000, &wake);
    db_client_offer(&hub, &b, 1000, &wake);
    db_msg_t *ua = db_client_take(&hub, &a, 1000), *ub = db_client_take(&hub, &b, 1000);
    assert_ptr_equal(ua, ub); /* one update shared through the cache */
    db_msg_unref(ua);
    db_msg_unref(ub);
    db_client_detach(&hub, &a);
    db_client_detach(&hub, &b);
    db_hub_clear(&hub);
}

static void test_overflow_gives_snapshot(void **st)
{
    hub_setup(3, 1 << 20);
    db_hub_set_model(&hub, model(1, 0));
    db_client_t slow = {0};
    db_action_t act;
    db_client_attach(&hub, &slow, 0, &act);
    int64_t t = 0, wake;
    /* it takes nothing: updates pile up until the queue is full */
    for (uint64_t s = 2; s <= 4; s++) {
        t += 1000;
        db_hub_set_model(&hub, model(s, (int64_t)s));
        assert_int_equal(db_client_offer(&hub, &slow, t, &wake), DB_ACT_WRITE);
    }
    /* snapshot + 2 updates filled it; the 3rd update overflowed: all dropped,
     * one fresh snapshot in their place */
    assert_int_equal(slow.overflows, 1);
    assert_int_equal(slow.q_count, 1);
    db_msg_t *m = db_client_take(&hub, &slow, t);
    assert_int_equal(m->kind, DB_MSG_SNAPSHOT);
    assert_ptr_equal(m, hub.model->snapshot);
    db_msg_unref(m);
    assert_null(db_client_take(&hub, &slow, t));
    /* a byte cap overflows the same way */
    db_client_detach(&hub, &slow);
    db_hub_clear(&hub);
    hub_setup(16, 100);
    db_hub_set_model(&hub, model(1, 0));
    memset(&slow, 0, sizeof(slow));
    db_client_attach(&hub, &slow, 0, &act);
    db_hub_set_model(&hub, model(2, 1));
    db_client_offer(&hub, &slow, 1000, &wake);
    assert_int_equal(slow.overflows, 1);
    assert_int_equal(slow.q_count, 1);
    db_client_detach(&hub, &slow);
    db_hub_clear(&hub);
}

static void test_overflow_sequence(void **st)
{
    /* queue of 2: snapshot, update; the next update overflows and leaves
     * exactly one message, a snapshot of the newest model */
    hub_setup(2, 1 << 20);
    db_hub_set_model(&hub, model(1, 0));
    db_client_t c = {0};
    db_action_t act;
    db_client_attach(&hub, &c, 0, &act);
    int64_t wake;
    db_hub_set_model(&hub, model(2, 1));
    db_client_offer(&hub, &c, 1000, &wake);
    assert_int_equal(c.q_count, 2);
    db_hub_set_model(&hub, model(3, 2));
    db_client_offer(&hub, &c, 2000, &wake);
    assert_int_equal(c.q_count, 1);
    assert_int_equal(c.overflows, 1);
    db_msg_t *m = db_client_take(&hub, &c, 2000);
    assert_int_equal(m->kind, DB_MSG_SNAPSHOT);
    json_t *j = parse_msg(m);
    assert_int_equal(json_integer_value(json_object_get(j, "seq")), 3);
    json_decref(j);
    db_msg_unref(m);
    /* caught up: the next change is an update from 3 again */
    db_hub_set_model(&hub, model(4, 3));
    db_client_offer(&hub, &c, 3000, &wake);
    m = db_client_take(&hub, &c, 3000);
    j = parse_msg(m);
    assert_int_equal(json_integer_value(json_object_get(j, "base")), 3);
    json_decref(j);
    db_msg_unref(m);
    db_client_detach(&hub, &c);
    db_hub_clear(&hub);
}

static void test_stall(void **st)
{
    hub_setup(16, 1 << 20);
    db_hub_set_model(&hub, model(1, 0));
    db_client_t c = {0};
    db_action_t act;
    db_client_attach(&hub, &c, 0, &act);
    assert_false(db_client_stalled(&hub, &c, 4000));
    assert_true(db_client_stalled(&hub, &c, 6000));
    db_msg_unref(db_client_take(&hub, &c, 6000));
    assert_false(db_client_stalled(&hub, &c, 60000)); /* nothing waits */
    /* a long quiet spell, then one update: the stall clock starts now */
    int64_t wake;
    db_hub_set_model(&hub, model(2, 1));
    db_client_offer(&hub, &c, 100000, &wake);
    assert_false(db_client_stalled(&hub, &c, 100001));
    db_client_detach(&hub, &c);
    db_hub_clear(&hub);
}

/* ---------------------------------------------------------------- auth */

static void test_token(void **st)
{
    char err[256];
    db_auth_t *none = db_auth_new(NULL, NULL, err, sizeof(err));
    assert_true(db_auth_token_ok(none, NULL, NULL, NULL));
    db_auth_destroy(none);

    db_auth_t *a = db_auth_new("s3cret", NULL, err, sizeof(err));
    assert_non_null(a);
    assert_false(db_auth_token_ok(a, NULL, NULL, NULL));
    assert_true(db_auth_token_ok(a, "s3cret", NULL, NULL));
    assert_false(db_auth_token_ok(a, "s3cre", NULL, NULL));
    assert_false(db_auth_token_ok(a, "s3cret2", NULL, NULL));
    assert_true(db_auth_token_ok(a, NULL, "Bearer s3cret", NULL));
    assert_true(db_auth_token_ok(a, NULL, "bearer s3cret", NULL));
    assert_false(db_auth_token_ok(a, NULL, "Basic s3cret", NULL));
    assert_true(db_auth_token_ok(a, NULL, NULL, "x=1; dashboard_token=s3cret; y=2"));
    assert_false(db_auth_token_ok(a, NULL, NULL, "xdashboard_token=s3cret"));
    assert_false(db_auth_token_ok(a, "wrong", NULL, "dashboard_token=nope"));
    db_auth_destroy(a);
    db_auth_destroy(NULL);

    char v[16];
    assert_true(db_cookie_get("a=1;b=22 ; c=3", "b", v, sizeof(v)));
    assert_string_equal(v, "22");
    assert_false(db_cookie_get("a=1", "b", v, sizeof(v)));
    assert_false(db_cookie_get("b=0123456789abcdefXYZ", "b", v, sizeof(v)));
}

static void test_origin(void **st)
{
    char err[256];
    db_auth_t *a = db_auth_new(NULL, NULL, err, sizeof(err));
    /* no list: the page's own origin */
    assert_true(db_auth_origin_ok(a, "http://dash.example:3000", "dash.example:3000"));
    assert_true(db_auth_origin_ok(a, "https://Dash.Example:3000/", "dash.example:3000"));
    assert_false(db_auth_origin_ok(a, "http://evil.example", "dash.example:3000"));
    assert_false(db_auth_origin_ok(a, "http://dash.example:3001", "dash.example:3000"));
    assert_false(db_auth_origin_ok(a, "null", "dash.example:3000"));
    assert_false(db_auth_origin_ok(a, "http://x", NULL));
    assert_true(db_auth_origin_ok(a, NULL, "dash.example:3000")); /* not a browser */
    db_auth_destroy(a);

    a = db_auth_new(NULL, "https://wall.example.com, http://localhost:8000", err, sizeof(err));
    assert_non_null(a);
    assert_true(db_auth_origin_ok(a, "https://wall.example.com", "internal:3000"));
    assert_true(db_auth_origin_ok(a, "http://LOCALHOST:8000", "internal:3000"));
    assert_false(db_auth_origin_ok(a, "http://internal:3000", "internal:3000"));
    db_auth_destroy(a);

    a = db_auth_new(NULL, "*", err, sizeof(err));
    assert_true(db_auth_origin_ok(a, "http://anything", "h"));
    db_auth_destroy(a);

    assert_null(db_auth_new(NULL, "wall.example.com", err, sizeof(err)));
    assert_non_null(strstr(err, "DASHBOARD_ALLOWED_ORIGINS"));
    assert_null(db_auth_new(NULL, "https://x.com/path", err, sizeof(err)));
}

/* --------------------------------------------------------------- notes */

static void test_note_parse(void **st)
{
    db_layout_t *l = db_layout_new("cs:agg", 60, 10, false);
    assert_string_equal(db_layout_channel(l), "cs:agg:updates");
    int64_t ts;
    const char *ok = "{\"ts\":1700000000123,\"replica\":\"a\",\"full\":false,"
                     "\"windows\":[[60000,1700000040000],[300000,1700000100000]]}";
    assert_int_equal(db_layout_note(l, ok, strlen(ok), &ts), CM_OK);
    assert_int_equal(ts, 1700000000123LL);
    const char *full = "{\"ts\":5,\"full\":true,\"windows\":[]}";
    assert_int_equal(db_layout_note(l, full, strlen(full), &ts), CM_OK);
    assert_int_equal(ts, 5);
    assert_int_equal(db_layout_note(l, "nope", 4, &ts), CM_ERR_PARSE);
    assert_int_equal(db_layout_note(l, "{\"ts\":1}", 8, &ts), CM_ERR_PARSE);
    db_layout_destroy(l);
    db_layout_destroy(NULL);
}

/* -------------------------------------------------------------- assets */

/* The web/ folder: from the repository root (where the tests run) or
 * relative to this file. */
static const char *web_dir(void)
{
    static const char *cands[] = {"services/dashboard-ws/web", "../../services/dashboard-ws/web",
                                  "../services/dashboard-ws/web"};
    for (size_t i = 0; i < sizeof(cands) / sizeof(cands[0]); i++) {
        DIR *d = opendir(cands[i]);
        if (d) {
            closedir(d);
            return cands[i];
        }
    }
    return NULL;
}

static void test_assets_current(void **st)
{
    const char *dir = web_dir();
    if (!dir)
        fail_msg("services/dashboard-ws/web not found (run from the repository root)");
    size_t files = 0;
    DIR *d = opendir(dir);
    struct dirent *e;
    while ((e = readdir(d))) {
        if (e->d_name[0] == '.')
            continue;
        files++;
        const db_asset_t *a = db_asset_find(e->d_name);
        if (!a)
            fail_msg("web/%s is not built in: run services/dashboard-ws/gen_assets.sh", e->d_name);
        unsigned char *data;
        size_t len;
        assert_int_equal(db_web_load(dir, a, &data, &len), CM_OK);
        if (len != a->len || memcmp(data, a->data, len) != 0)
            fail_msg("dashboard_assets.c is stale for web/%s: run "
                     "services/dashboard-ws/gen_assets.sh",
                     e->d_name);
        free(data);
    }
    closedir(d);
    if (files != db_assets_count)
        fail_msg("dashboard_assets.c has %zu files, web/ %zu: run gen_assets.sh",
                 db_assets_count, files);
    assert_non_null(db_asset_find("/"));
    assert_string_equal(db_asset_find("/")->name, "index.html");
    assert_non_null(db_asset_find("/app.js"));
    assert_null(db_asset_find("/../Makefile"));
    assert_null(db_asset_find("/nope.js"));
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_snapshot_message),
        cmocka_unit_test(test_update_carries_only_changes),
        cmocka_unit_test(test_stale_status),
        cmocka_unit_test(test_counts_top),
        cmocka_unit_test(test_client_snapshot_then_updates),
        cmocka_unit_test(test_clients_share_updates),
        cmocka_unit_test(test_overflow_gives_snapshot),
        cmocka_unit_test(test_overflow_sequence),
        cmocka_unit_test(test_stall),
        cmocka_unit_test(test_token),
        cmocka_unit_test(test_origin),
        cmocka_unit_test(test_note_parse),
        cmocka_unit_test(test_assets_current),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
