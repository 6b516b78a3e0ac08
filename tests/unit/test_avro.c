/*
 * test_avro: the Avro codec (cm_avro), the record structs (cm_records) and
 * the Schema Registry client (cm_registry).
 *
 * avro-c is the independent reference: every schema is checked in both
 * directions (our bytes read by avro_value_read, avro_value_write's bytes
 * read by our decoder) and byte for byte (our encoder == avro-c's writer).
 * The registry tests run a fake registry on 127.0.0.1 (libmicrohttpd); no
 * other network.
 *
 * Env: CM_FUZZ_ITERS (default 20000 per seed record), CM_BENCH_N (default
 * 200000 hand-written / 50000 avro-c iterations), CM_SCHEMAS_DIR (where the
 * .avsc files are when not run from the repository root), CM_AVRO_DUMP_DIR
 * (write fixtures for tests/unit/avro_check.py, the fastavro cross-check).
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

#include <arpa/inet.h>
#include <avro.h>
#include <jansson.h>
#include <microhttpd.h>
#include <netinet/in.h>

#include "cm_avro.h"
#include "cm_event.h"
#include "cm_records.h"
#include "cm_registry.h"

/* ------------------------------------------------------------------------ */
/* Fixtures */

#define URL_N 100

static char g_urls[URL_N][64];

static void set(cm_event_t *ev, const char **field, const char *s)
{
    assert_int_equal(cm_event_set_str(ev, field, s, strlen(s)), CM_OK);
}

static void fill_event_full(cm_event_t *ev)
{
    cm_event_reset(ev);
    set(ev, &ev->event_id, "2f1c7e52-8a0b-4f77-9d36-5a5d1e0c9b11");
    ev->ts_ms = INT64_C(1705314600123);
    ev->received_at_ms = INT64_C(1705314600456);
    set(ev, &ev->user_id, "user-42");
    set(ev, &ev->event_type, "purchase");
    ev->type = CM_EV_PURCHASE;
    set(ev, &ev->page_url, "https://shop.example.com/checkout?step=3&lang=de");
    set(ev, &ev->session_id, "client-sess-9");
    set(ev, &ev->referrer, "https://www.example.org/");
    set(ev, &ev->user_agent, "Mozilla/5.0 (X11; Linux x86_64) Gecko/20100101 Firefox/121.0");
    set(ev, &ev->ip_address, "203.0.113.0");
    set(ev, &ev->geo_country, "DE");
    set(ev, &ev->geo_city, "M\xc3\xbcnchen"); /* München */
    set(ev, &ev->device_type, "desktop");
    set(ev, &ev->device_os, "Linux");
    ev->is_bot = true;
    set(ev, &ev->product_id, "sku-123");
    set(ev, &ev->category, "shoes");
    ev->quantity = 3;
    ev->has_price = true;
    ev->price_micros = INT64_C(19990000); /* 19.99 */
}

static void fill_event_min(cm_event_t *ev)
{
    cm_event_reset(ev);
    set(ev, &ev->event_id, "e1");
    ev->ts_ms = 0;
    ev->received_at_ms = 0;
    set(ev, &ev->user_id, "u");
    set(ev, &ev->event_type, "click");
    ev->type = CM_EV_CLICK;
}

static void fill_session_full(cm_session_t *s)
{
    cm_session_reset(s);
    s->session_id = "5a3f0c9e1b2d4e6f";
    s->user_id = "user-42";
    s->start_ms = INT64_C(1705314600000);
    s->end_ms = INT64_C(1705316400000);
    s->duration_ms = s->end_ms - s->start_ms;
    s->event_count = 17;
    s->page_views = 9;
    s->entry_url = "https://shop.example.com/";
    s->exit_url = "https://shop.example.com/thanks";
    s->device_type = "mobile";
    s->country = "JP";
    s->converted = true;
    s->revenue_micros = INT64_C(59970000);
    s->revision = 2;
    s->tombstone = false;
}

static void fill_session_min(cm_session_t *s)
{
    cm_session_reset(s);
    s->session_id = "";
    s->user_id = "";
}

static void fill_wr_full(cm_window_result_t *w)
{
    cm_window_result_reset(w);
    w->window_size_ms = 60000;
    w->window_start_ms = INT64_C(1705314600000);
    w->window_end_ms = w->window_start_ms + 60000;
    w->dimension = CM_DIM_TOTAL;
    w->revision = 1;
    w->final = true;
    w->events = 123456;
    w->page_views = 100000;
    w->purchases = 321;
    w->revenue_micros = INT64_C(123456789012345678);
    w->unique_users = 4567;
    for (int i = 0; i < URL_N; i++) {
        snprintf(g_urls[i], sizeof(g_urls[i]), "https://shop.example.com/p/%d", i);
        assert_int_equal(cm_window_result_add_top_url(w, g_urls[i], 1000 - i), CM_OK);
    }
    assert_int_equal(cm_window_result_add_count(w, "page_view", 100000), CM_OK);
    assert_int_equal(cm_window_result_add_count(w, "custom:\xe2\x9c\x93", 7), CM_OK);
    w->sessions_closed = 99;
    w->avg_session_ms = 183456.25;
    w->bounce_rate = 0.125;
    w->conversion_rate = 1.0 / 3.0;
}

static void fill_wr_min(cm_window_result_t *w)
{
    cm_window_result_reset(w);
    w->dimension = CM_DIM_TOTAL;
}

/* ------------------------------------------------------------------------ */
/* Comparisons */

static void str_eq(const char *a, const char *b)
{
    if (!a || !b)
        assert_ptr_equal(a, b);
    else
        assert_string_equal(a, b);
}

static void event_eq(const cm_event_t *a, const cm_event_t *b)
{
    str_eq(a->event_id, b->event_id);
    assert_int_equal(a->ts_ms, b->ts_ms);
    assert_int_equal(a->received_at_ms, b->received_at_ms);
    str_eq(a->user_id, b->user_id);
    str_eq(a->event_type, b->event_type);
    assert_int_equal(a->type, b->type);
    str_eq(a->page_url, b->page_url);
    str_eq(a->session_id, b->session_id);
    str_eq(a->referrer, b->referrer);
    str_eq(a->user_agent, b->user_agent);
    str_eq(a->ip_address, b->ip_address);
    str_eq(a->geo_country, b->geo_country);
    str_eq(a->geo_city, b->geo_city);
    str_eq(a->device_type, b->device_type);
    str_eq(a->device_os, b->device_os);
    assert_int_equal(a->is_bot, b->is_bot);
    str_eq(a->product_id, b->product_id);
    str_eq(a->category, b->category);
    assert_int_equal(a->quantity, b->quantity);
    assert_int_equal(a->has_price, b->has_price);
    assert_int_equal(a->price_micros, b->price_micros);
}

static void session_eq(const cm_session_t *a, const cm_session_t *b)
{
    str_eq(a->session_id, b->session_id);
    str_eq(a->user_id, b->user_id);
    assert_int_equal(a->start_ms, b->start_ms);
    assert_int_equal(a->end_ms, b->end_ms);
    assert_int_equal(a->duration_ms, b->duration_ms);
    assert_int_equal(a->event_count, b->event_count);
    assert_int_equal(a->page_views, b->page_views);
    str_eq(a->entry_url, b->entry_url);
    str_eq(a->exit_url, b->exit_url);
    str_eq(a->device_type, b->device_type);
    str_eq(a->country, b->country);
    assert_int_equal(a->converted, b->converted);
    assert_int_equal(a->revenue_micros, b->revenue_micros);
    assert_int_equal(a->revision, b->revision);
    assert_int_equal(a->tombstone, b->tombstone);
}

static void wr_eq(const cm_window_result_t *a, const cm_window_result_t *b)
{
    assert_int_equal(a->window_size_ms, b->window_size_ms);
    assert_int_equal(a->window_start_ms, b->window_start_ms);
    assert_int_equal(a->window_end_ms, b->window_end_ms);
    str_eq(a->dimension, b->dimension);
    assert_int_equal(a->revision, b->revision);
    assert_int_equal(a->final, b->final);
    assert_int_equal(a->events, b->events);
    assert_int_equal(a->page_views, b->page_views);
    assert_int_equal(a->purchases, b->purchases);
    assert_int_equal(a->revenue_micros, b->revenue_micros);
    assert_int_equal(a->unique_users, b->unique_users);
    assert_int_equal(a->n_counts, b->n_counts);
    for (size_t i = 0; i < a->n_counts; i++) {
        str_eq(a->counts[i].key, b->counts[i].key);
        assert_int_equal(a->counts[i].count, b->counts[i].count);
    }
    assert_int_equal(a->n_top_urls, b->n_top_urls);
    for (size_t i = 0; i < a->n_top_urls; i++) {
        str_eq(a->top_urls[i].key, b->top_urls[i].key);
        assert_int_equal(a->top_urls[i].count, b->top_urls[i].count);
    }
    assert_int_equal(a->sessions_closed, b->sessions_closed);
    assert_memory_equal(&a->avg_session_ms, &b->avg_session_ms, sizeof(double));
    assert_memory_equal(&a->bounce_rate, &b->bounce_rate, sizeof(double));
    assert_memory_equal(&a->conversion_rate, &b->conversion_rate, sizeof(double));
}

/* ------------------------------------------------------------------------ */
/* Schema texts */

static char *read_file(const char *path, size_t *len)
{
    FILE *f = fopen(path, "rb");
    if (!f)
        return NULL;
    cm_buf_t b;
    cm_buf_init(&b, 1 << 20);
    char tmp[4096];
    size_t n;
    while ((n = fread(tmp, 1, sizeof(tmp), f)) > 0)
        assert_int_equal(cm_buf_append(&b, tmp, n), CM_OK);
    fclose(f);
    cm_buf_cstr(&b);
    *len = b.len;
    return (char *)b.data;
}

static char *read_schema_file(const char *name, size_t *len)
{
    const char *dirs[] = {getenv("CM_SCHEMAS_DIR"), "schemas", "../schemas", "../../schemas",
                          "../../../schemas"};
    char path[512];
    for (size_t i = 0; i < sizeof(dirs) / sizeof(dirs[0]); i++) {
        if (!dirs[i])
            continue;
        snprintf(path, sizeof(path), "%s/%s", dirs[i], name);
        char *s = read_file(path, len);
        if (s)
            return s;
    }
    /* __FILE__ is tests/unit/test_avro.c, relative to where make ran. */
    const char *f = __FILE__;
    const char *cut = strstr(f, "tests/unit/");
    if (cut) {
        snprintf(path, sizeof(path), "%.*sschemas/%s", (int)(cut - f), f, name);
        return read_file(path, len);
    }
    return NULL;
}

static void test_schema_texts_match_files(void **state)
{
    for (int k = 0; k < CM_SCHEMA__COUNT; k++) {
        size_t len = 0;
        char *file = read_schema_file(cm_schema_file(k), &len);
        if (!file)
            fail_msg("cannot read schemas/%s (run from the repository root or set "
                     "CM_SCHEMAS_DIR)",
                     cm_schema_file(k));
        if (strcmp(file, cm_schema_json(k)) != 0)
            fail_msg("schemas/%s differs from the text embedded in libcommon/cm_avro.c: "
                     "run tests/unit/avro_check.py --embed",
                     cm_schema_file(k));
        free(file);
    }
}

static void test_schemas_parse_with_avro_c(void **state)
{
    char errstr[256];
    for (int k = 0; k < CM_SCHEMA__COUNT; k++) {
        avro_schema_t s = NULL;
        assert_int_equal(cm_avro_schema_parse(k, &s, errstr, sizeof(errstr)), CM_OK);
        assert_true(is_avro_record(s));
        const char *full = cm_schema_fullname(k);
        assert_string_equal(avro_schema_name(s), strrchr(full, '.') + 1);
        assert_int_equal(cm_schema_builtin_id(k), (uint32_t)k + 1);
        /* The texts are also valid JSON with the expected namespace. */
        json_t *j = json_loads(cm_schema_json(k), 0, NULL);
        assert_non_null(j);
        assert_string_equal(json_string_value(json_object_get(j, "namespace")), "io.clickstream");
        json_decref(j);
        avro_schema_decref(s);
    }
    assert_null(cm_schema_json(CM_SCHEMA__COUNT));
    assert_int_equal(cm_schema_builtin_id(CM_SCHEMA__COUNT), 0);
    avro_schema_t s;
    assert_int_equal(cm_avro_schema_parse(CM_SCHEMA__COUNT, &s, errstr, sizeof(errstr)),
                     CM_ERR_INVALID);
}

/* ------------------------------------------------------------------------ */
/* Round trips with our codec */

static void test_event_roundtrip(void **state)
{
    cm_event_t a, b;
    cm_buf_t buf;
    uint32_t id = 0;
    cm_avro_error_t err;
    cm_event_init(&a);
    cm_event_init(&b);
    cm_buf_init(&buf, 0);

    for (int full = 0; full < 2; full++) {
        full ? fill_event_full(&a) : fill_event_min(&a);
        cm_buf_reset(&buf);
        assert_int_equal(cm_avro_encode_event(&a, CM_SCHEMA_ID_EVENT, &buf), CM_OK);
        assert_int_equal(cm_avro_decode_event(NULL, buf.data, buf.len, &b, &id, &err), CM_OK);
        assert_int_equal(id, CM_SCHEMA_ID_EVENT);
        event_eq(&a, &b);
        if (!full) {
            /* 5 header + "e1" 3 + ts 1 + recv 1 + "u" 2 + "click" 6 + 5 nulls
             * + geo, device 2 + is_bot 1 + metadata 1 */
            assert_int_equal(buf.len, 5 + 3 + 1 + 1 + 2 + 6 + 5 + 2 + 1 + 1);
        }
    }
    /* Partial nested records: geo with city only, metadata with price only. */
    fill_event_min(&a);
    set(&a, &a.geo_city, "Paris");
    set(&a, &a.device_os, "iOS");
    a.has_price = true;
    a.price_micros = 0;
    cm_buf_reset(&buf);
    assert_int_equal(cm_avro_encode_event(&a, CM_SCHEMA_ID_EVENT, &buf), CM_OK);
    assert_int_equal(cm_avro_decode_event(NULL, buf.data, buf.len, &b, &id, &err), CM_OK);
    event_eq(&a, &b);

    /* Decoding into a used event replaces everything. */
    fill_event_full(&b);
    fill_event_min(&a);
    cm_buf_reset(&buf);
    assert_int_equal(cm_avro_encode_event(&a, CM_SCHEMA_ID_EVENT, &buf), CM_OK);
    assert_int_equal(cm_avro_decode_event(NULL, buf.data, buf.len, &b, NULL, NULL), CM_OK);
    event_eq(&a, &b);

    cm_event_free(&a);
    cm_event_free(&b);
    cm_buf_free(&buf);
}

static void test_session_roundtrip(void **state)
{
    cm_session_t a, b;
    cm_buf_t buf;
    uint32_t id = 0;
    cm_session_init(&a);
    cm_session_init(&b);
    cm_buf_init(&buf, 0);
    for (int full = 0; full < 2; full++) {
        full ? fill_session_full(&a) : fill_session_min(&a);
        cm_buf_reset(&buf);
        assert_int_equal(cm_avro_encode_session(&a, CM_SCHEMA_ID_SESSION, &buf), CM_OK);
        assert_int_equal(cm_avro_decode_session(NULL, buf.data, buf.len, &b, &id, NULL), CM_OK);
        assert_int_equal(id, CM_SCHEMA_ID_SESSION);
        session_eq(&a, &b);
    }
    /* A tombstone. */
    fill_session_full(&a);
    a.tombstone = true;
    a.revision = 3;
    cm_buf_reset(&buf);
    assert_int_equal(cm_avro_encode_session(&a, CM_SCHEMA_ID_SESSION, &buf), CM_OK);
    assert_int_equal(cm_avro_decode_session(NULL, buf.data, buf.len, &b, &id, NULL), CM_OK);
    session_eq(&a, &b);
    assert_true(b.tombstone);
    cm_session_free(&a);
    cm_session_free(&b);
    cm_session_free(NULL);
    cm_buf_free(&buf);
}

static void test_window_result_roundtrip(void **state)
{
    cm_window_result_t a, b;
    cm_buf_t buf;
    uint32_t id = 0;
    cm_window_result_init(&a);
    cm_window_result_init(&b);
    cm_buf_init(&buf, 0);
    for (int full = 0; full < 2; full++) {
        full ? fill_wr_full(&a) : fill_wr_min(&a);
        cm_buf_reset(&buf);
        assert_int_equal(cm_avro_encode_window_result(&a, CM_SCHEMA_ID_WINDOW_RESULT, &buf),
                         CM_OK);
        assert_int_equal(
            cm_avro_decode_window_result(NULL, buf.data, buf.len, &b, &id, NULL), CM_OK);
        assert_int_equal(id, CM_SCHEMA_ID_WINDOW_RESULT);
        wr_eq(&a, &b);
    }
    /* A dimension record. */
    cm_window_result_reset(&a);
    a.window_size_ms = 3600000;
    a.window_start_ms = INT64_C(1705312800000);
    a.window_end_ms = a.window_start_ms + a.window_size_ms;
    a.dimension = CM_DIM_COUNTRY;
    assert_int_equal(cm_window_result_add_count(&a, "DE", 10), CM_OK);
    assert_int_equal(cm_window_result_add_count(&a, "JP", 20), CM_OK);
    assert_int_equal(cm_window_result_add_count(&a, NULL, 20), CM_ERR_INVALID);
    cm_buf_reset(&buf);
    assert_int_equal(cm_avro_encode_window_result(&a, CM_SCHEMA_ID_WINDOW_RESULT, &buf), CM_OK);
    assert_int_equal(cm_avro_decode_window_result(NULL, buf.data, buf.len, &b, &id, NULL),
                     CM_OK);
    wr_eq(&a, &b);
    cm_window_result_free(&a);
    cm_window_result_free(&b);
    cm_window_result_free(NULL);
    cm_buf_free(&buf);
}

/* Blocks with a negative count (followed by a byte size) and several blocks
 * are legal Avro; our encoder never writes them but must read them. */
static void test_window_result_multi_block(void **state)
{
    cm_window_result_t a, b;
    cm_buf_t buf, alt;
    cm_window_result_init(&a);
    cm_window_result_init(&b);
    cm_buf_init(&buf, 0);
    cm_buf_init(&alt, 0);
    fill_wr_min(&a);
    a.dimension = CM_DIM_URL;
    assert_int_equal(cm_window_result_add_count(&a, "/a", 1), CM_OK);
    assert_int_equal(cm_window_result_add_count(&a, "/b", 2), CM_OK);
    assert_int_equal(cm_avro_encode_window_result(&a, CM_SCHEMA_ID_WINDOW_RESULT, &buf), CM_OK);
    /* Header(5) long*3 (3 bytes: all 0) "url"(4) rev(1) final(1) events..purchases(3)
     * revenue(2) unique(1) = 20; then the map: count 2, ("/a", 1), ("/b", 2), 0. */
    size_t map_at = 5 + 3 + 4 + 1 + 1 + 3 + 2 + 1;
    const uint8_t map1[] = {0x04, 0x04, '/', 'a', 0x02, 0x04, '/', 'b', 0x04, 0x00};
    assert_memory_equal(buf.data + map_at, map1, sizeof(map1));
    /* Rewrite as two blocks: {-1 item, 4 bytes}, {1 item}, 0. */
    const uint8_t map2[] = {0x01, 0x08, 0x04, '/', 'a', 0x02, 0x02, 0x04, '/', 'b', 0x04, 0x00};
    assert_int_equal(cm_buf_append(&alt, buf.data, map_at), CM_OK);
    assert_int_equal(cm_buf_append(&alt, map2, sizeof(map2)), CM_OK);
    assert_int_equal(cm_buf_append(&alt, buf.data + map_at + sizeof(map1),
                                   buf.len - map_at - sizeof(map1)),
                     CM_OK);
    assert_int_equal(cm_avro_decode_window_result(NULL, alt.data, alt.len, &b, NULL, NULL),
                     CM_OK);
    wr_eq(&a, &b);
    cm_window_result_free(&a);
    cm_window_result_free(&b);
    cm_buf_free(&buf);
    cm_buf_free(&alt);
}

/* ------------------------------------------------------------------------ */
/* Decimal */

/* Reference encoding, written differently from the library's: the smallest n
 * whose signed range holds v, then big-endian bytes. */
static size_t ref_decimal(int64_t v, uint8_t *out)
{
    size_t n = 1;
    while (n < 8) {
        int64_t lim = INT64_C(1) << (8 * n - 1);
        if (v >= -lim && v < lim)
            break;
        n++;
    }
    for (size_t i = 0; i < n; i++)
        out[n - 1 - i] = (uint8_t)((uint64_t)v >> (8 * i));
    return n;
}

static void test_decimal(void **state)
{
    const int64_t vals[] = {0,
                            1,
                            127,
                            128,
                            255,
                            256,
                            32767,
                            32768,
                            1000000,
                            19990000,
                            INT64_C(4294967295),
                            INT64_C(999999999999),
                            CM_DECIMAL_MAX_MICROS,
                            -1,
                            -128,
                            -129,
                            -256,
                            -CM_DECIMAL_MAX_MICROS,
                            INT64_MAX,
                            INT64_MIN};
    for (size_t i = 0; i < sizeof(vals) / sizeof(vals[0]); i++) {
        uint8_t a[8], b[8];
        size_t na = cm_avro_decimal_encode(vals[i], a);
        size_t nb = ref_decimal(vals[i], b);
        assert_int_equal(na, nb);
        assert_memory_equal(a, b, na);
        int64_t back = 42;
        assert_int_equal(cm_avro_decimal_decode(a, na, &back), CM_OK);
        assert_int_equal(back, vals[i]);
    }
    /* Exact bytes of a few. */
    uint8_t d[8];
    assert_int_equal(cm_avro_decimal_encode(0, d), 1);
    assert_int_equal(d[0], 0x00);
    assert_int_equal(cm_avro_decimal_encode(1, d), 1);
    assert_int_equal(d[0], 0x01);
    assert_int_equal(cm_avro_decimal_encode(128, d), 2);
    assert_int_equal(d[0], 0x00);
    assert_int_equal(d[1], 0x80);
    assert_int_equal(cm_avro_decimal_encode(-129, d), 2);
    assert_int_equal(d[0], 0xff);
    assert_int_equal(d[1], 0x7f);
    /* Empty bytes read as 0; sign extension beyond 8 bytes is accepted; a
     * value that needs more than 64 bits is refused. */
    int64_t v = 5;
    assert_int_equal(cm_avro_decimal_decode(d, 0, &v), CM_OK);
    assert_int_equal(v, 0);
    const uint8_t ext_pos[10] = {0, 0, 0, 0, 0, 0, 0, 0, 0, 5};
    assert_int_equal(cm_avro_decimal_decode(ext_pos, 10, &v), CM_OK);
    assert_int_equal(v, 5);
    const uint8_t ext_neg[9] = {0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xfe};
    assert_int_equal(cm_avro_decimal_decode(ext_neg, 9, &v), CM_OK);
    assert_int_equal(v, -2);
    const uint8_t big[9] = {0x01, 0, 0, 0, 0, 0, 0, 0, 0};
    assert_int_equal(cm_avro_decimal_decode(big, 9, &v), CM_ERR_PARSE);
    const uint8_t bad_sign[9] = {0x00, 0x80, 0, 0, 0, 0, 0, 0, 0};
    assert_int_equal(cm_avro_decimal_decode(bad_sign, 9, &v), CM_ERR_PARSE);

    /* Through the records: 0, one micro, the largest, and beyond. */
    cm_session_t s, t;
    cm_buf_t buf;
    cm_session_init(&s);
    cm_session_init(&t);
    cm_buf_init(&buf, 0);
    const int64_t rev[] = {0, 1, CM_DECIMAL_MAX_MICROS, INT64_C(123456789), -1};
    for (size_t i = 0; i < sizeof(rev) / sizeof(rev[0]); i++) {
        fill_session_full(&s);
        s.revenue_micros = rev[i];
        cm_buf_reset(&buf);
        assert_int_equal(cm_avro_encode_session(&s, CM_SCHEMA_ID_SESSION, &buf), CM_OK);
        assert_int_equal(cm_avro_decode_session(NULL, buf.data, buf.len, &t, NULL, NULL), CM_OK);
        assert_int_equal(t.revenue_micros, rev[i]);
    }
    fill_session_full(&s);
    s.revenue_micros = CM_DECIMAL_MAX_MICROS + 1;
    cm_buf_reset(&buf);
    assert_int_equal(cm_avro_encode_session(&s, CM_SCHEMA_ID_SESSION, &buf), CM_ERR_INVALID);
    assert_int_equal(buf.len, 0);

    cm_event_t ev, ev2;
    cm_event_init(&ev);
    cm_event_init(&ev2);
    const int64_t prices[] = {0, 1, 999999, 1000000, CM_DECIMAL_MAX_MICROS};
    for (size_t i = 0; i < sizeof(prices) / sizeof(prices[0]); i++) {
        fill_event_full(&ev);
        ev.price_micros = prices[i];
        cm_buf_reset(&buf);
        assert_int_equal(cm_avro_encode_event(&ev, CM_SCHEMA_ID_EVENT, &buf), CM_OK);
        assert_int_equal(cm_avro_decode_event(NULL, buf.data, buf.len, &ev2, NULL, NULL), CM_OK);
        assert_int_equal(ev2.price_micros, prices[i]);
        assert_true(ev2.has_price);
    }
    /* The event struct never holds a negative price or quantity. */
    fill_event_full(&ev);
    ev.price_micros = -1;
    cm_buf_reset(&buf);
    assert_int_equal(cm_avro_encode_event(&ev, CM_SCHEMA_ID_EVENT, &buf), CM_ERR_INVALID);
    fill_event_full(&ev);
    ev.quantity = -2;
    assert_int_equal(cm_avro_encode_event(&ev, CM_SCHEMA_ID_EVENT, &buf), CM_ERR_INVALID);
    assert_int_equal(buf.len, 0);

    cm_event_free(&ev);
    cm_event_free(&ev2);
    cm_session_free(&s);
    cm_session_free(&t);
    cm_buf_free(&buf);
}

/* ------------------------------------------------------------------------ */
/* Strings */

static void test_utf8_strings(void **state)
{
    cm_event_t a, b;
    cm_buf_t buf;
    cm_event_init(&a);
    cm_event_init(&b);
    cm_buf_init(&buf, 0);
    fill_event_min(&a);
    set(&a, &a.user_id, "\xe7\x94\xa8\xe6\x88\xb7-\xf0\x9f\x98\x80");  /* 用户-😀 */
    set(&a, &a.page_url, "https://example.jp/\xe6\x9d\xb1\xe4\xba\xac"); /* 東京 */
    set(&a, &a.geo_city, "Z\xc3\xbcrich");
    set(&a, &a.category, "");
    assert_int_equal(cm_avro_encode_event(&a, CM_SCHEMA_ID_EVENT, &buf), CM_OK);
    /* The length prefix counts bytes, not characters: 用户-😀 is 11 bytes. */
    const uint8_t *p = buf.data + 5 + 3 + 1 + 1;
    assert_int_equal(p[0], 22); /* zig-zag 11 */
    assert_memory_equal(p + 1, a.user_id, 11);
    assert_int_equal(cm_avro_decode_event(NULL, buf.data, buf.len, &b, NULL, NULL), CM_OK);
    event_eq(&a, &b);
    assert_string_equal(b.category, "");
    cm_event_free(&a);
    cm_event_free(&b);
    cm_buf_free(&buf);
}

/* ------------------------------------------------------------------------ */
/* Wire format and errors */

static void test_wire_header(void **state)
{
    cm_event_t ev;
    cm_buf_t buf;
    cm_avro_error_t err;
    uint32_t id = 7;
    cm_event_init(&ev);
    cm_buf_init(&buf, 0);
    fill_event_min(&ev);

    assert_int_equal(cm_avro_encode_event(&ev, 0x01020304u, &buf), CM_OK);
    const uint8_t hdr[5] = {0, 1, 2, 3, 4};
    assert_memory_equal(buf.data, hdr, 5);
    assert_int_equal(cm_avro_peek_schema_id(buf.data, buf.len, &id, NULL), CM_OK);
    assert_int_equal(id, 0x01020304u);
    /* Not a known id in built-in mode. */
    assert_int_equal(cm_avro_decode_event(NULL, buf.data, buf.len, &ev, &id, &err),
                     CM_ERR_PARSE);
    assert_string_equal(err.reason, "unknown_schema");
    assert_int_equal(id, 0x01020304u);
    assert_null(ev.event_id); /* left reset */

    /* Appends: two records in one buffer. */
    cm_buf_reset(&buf);
    fill_event_min(&ev);
    assert_int_equal(cm_avro_encode_event(&ev, CM_SCHEMA_ID_EVENT, &buf), CM_OK);
    size_t one = buf.len;
    assert_int_equal(cm_avro_encode_event(&ev, CM_SCHEMA_ID_EVENT, &buf), CM_OK);
    assert_int_equal(buf.len, 2 * one);
    assert_memory_equal(buf.data, buf.data + one, one);

    /* Trailing bytes. */
    cm_event_t out;
    cm_event_init(&out);
    assert_int_equal(cm_avro_decode_event(NULL, buf.data, buf.len, &out, NULL, &err),
                     CM_ERR_PARSE);
    assert_string_equal(err.reason, "trailing_bytes");
    /* Exact length decodes. */
    assert_int_equal(cm_avro_decode_event(NULL, buf.data, one, &out, NULL, &err), CM_OK);

    /* Bad magic, short header, empty input. */
    uint8_t copy[64];
    memcpy(copy, buf.data, one);
    copy[0] = 1;
    assert_int_equal(cm_avro_decode_event(NULL, copy, one, &out, &id, &err), CM_ERR_PARSE);
    assert_string_equal(err.reason, "bad_magic");
    assert_int_equal(id, 0);
    assert_int_equal(cm_avro_decode_event(NULL, buf.data, 4, &out, NULL, &err), CM_ERR_PARSE);
    assert_string_equal(err.reason, "truncated");
    assert_int_equal(cm_avro_decode_event(NULL, "", 0, &out, NULL, &err), CM_ERR_PARSE);
    assert_int_equal(cm_avro_decode_event(NULL, buf.data, 5, &out, NULL, &err), CM_ERR_PARSE);
    assert_string_equal(err.reason, "truncated");

    /* A session id on the event decoder, and the reverse. */
    cm_session_t s;
    cm_session_init(&s);
    memcpy(copy, buf.data, one);
    copy[4] = CM_SCHEMA_ID_SESSION;
    assert_int_equal(cm_avro_decode_event(NULL, copy, one, &out, NULL, &err), CM_ERR_PARSE);
    assert_string_equal(err.reason, "wrong_schema");
    assert_non_null(strstr(err.message, "session"));
    assert_int_equal(cm_avro_decode_session(NULL, buf.data, one, &s, NULL, &err), CM_ERR_PARSE);
    assert_string_equal(err.reason, "wrong_schema");

    /* A NUL inside a string; a bad union branch; a bad boolean. */
    memcpy(copy, buf.data, one);
    copy[6] = 0; /* "e1" -> "e\0" */
    assert_int_equal(cm_avro_decode_event(NULL, copy, one, &out, NULL, &err), CM_ERR_PARSE);
    assert_string_equal(err.reason, "bad_value");
    memcpy(copy, buf.data, one);
    copy[5 + 3 + 1 + 1 + 2 + 6] = 4; /* page_url branch 2 */
    assert_int_equal(cm_avro_decode_event(NULL, copy, one, &out, NULL, &err), CM_ERR_PARSE);
    assert_string_equal(err.reason, "bad_union");
    assert_non_null(strstr(err.message, "page_url"));
    memcpy(copy, buf.data, one);
    copy[one - 2] = 2; /* is_bot */
    assert_int_equal(cm_avro_decode_event(NULL, copy, one, &out, NULL, &err), CM_ERR_PARSE);
    assert_string_equal(err.reason, "bad_value");
    /* Unknown event_type. */
    fill_event_min(&ev);
    set(&ev, &ev.event_type, "explode");
    cm_buf_reset(&buf);
    assert_int_equal(cm_avro_encode_event(&ev, CM_SCHEMA_ID_EVENT, &buf), CM_OK);
    assert_int_equal(cm_avro_decode_event(NULL, buf.data, buf.len, &out, NULL, &err),
                     CM_ERR_PARSE);
    assert_string_equal(err.reason, "bad_value");
    /* A huge string length. */
    const uint8_t huge[] = {0, 0, 0, 0, 1, 0xfe, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0x7f};
    assert_int_equal(cm_avro_decode_event(NULL, huge, sizeof(huge), &out, NULL, &err),
                     CM_ERR_PARSE);
    assert_string_equal(err.reason, "truncated");
    const uint8_t neg[] = {0, 0, 0, 0, 1, 0x03, 'a'};
    assert_int_equal(cm_avro_decode_event(NULL, neg, sizeof(neg), &out, NULL, &err),
                     CM_ERR_PARSE);
    assert_string_equal(err.reason, "bad_length");
    /* An 11-byte varint. */
    const uint8_t longvar[] = {0, 0, 0, 0, 1, 0x02, 'a', 0xff, 0xff, 0xff, 0xff, 0xff,
                               0xff, 0xff, 0xff, 0xff, 0xff, 0x01};
    assert_int_equal(cm_avro_decode_event(NULL, longvar, sizeof(longvar), &out, NULL, &err),
                     CM_ERR_PARSE);
    assert_string_equal(err.reason, "bad_varint");
    /* A map block count far beyond the input. */
    cm_window_result_t w;
    cm_window_result_init(&w);
    fill_wr_min(&w);
    cm_buf_reset(&buf);
    assert_int_equal(cm_avro_encode_window_result(&w, CM_SCHEMA_ID_WINDOW_RESULT, &buf), CM_OK);
    size_t map_at = 5 + 3 + 6 + 1 + 1 + 3 + 2 + 1;
    cm_buf_t big;
    cm_buf_init(&big, 0);
    const uint8_t blk[] = {0xfe, 0xff, 0xff, 0xff, 0x0f}; /* 2^31 - 1 entries */
    assert_int_equal(cm_buf_append(&big, buf.data, map_at), CM_OK);
    assert_int_equal(cm_buf_append(&big, blk, sizeof(blk)), CM_OK);
    assert_int_equal(cm_buf_append(&big, buf.data + map_at, buf.len - map_at), CM_OK);
    assert_int_equal(cm_avro_decode_window_result(NULL, big.data, big.len, &w, NULL, &err),
                     CM_ERR_PARSE);
    assert_string_equal(err.reason, "truncated");
    assert_int_equal(w.n_counts, 0);

    /* An event whose strings exceed the event arena's cap (CM_EVENT_ARENA_MAX). */
    {
        size_t n = CM_EVENT_ARENA_MAX + 10;
        char *ua = malloc(n + 1);
        assert_non_null(ua);
        memset(ua, 'A', n);
        ua[n] = '\0';
        fill_event_min(&ev);
        ev.user_agent = ua; /* borrowed by the encoder only */
        cm_buf_reset(&buf);
        assert_int_equal(cm_avro_encode_event(&ev, CM_SCHEMA_ID_EVENT, &buf), CM_OK);
        ev.user_agent = NULL;
        assert_int_equal(cm_avro_decode_event(NULL, buf.data, buf.len, &out, NULL, &err),
                         CM_ERR_PARSE);
        assert_string_equal(err.reason, "too_large");
        assert_null(out.event_id);
        free(ua);
    }

    /* err may be NULL. */
    assert_int_equal(cm_avro_decode_event(NULL, huge, sizeof(huge), &out, NULL, NULL),
                     CM_ERR_PARSE);

    cm_buf_free(&big);
    cm_window_result_free(&w);
    cm_session_free(&s);
    cm_event_free(&out);
    cm_event_free(&ev);
    cm_buf_free(&buf);
}

static void test_encode_errors(void **state)
{
    cm_event_t ev;
    cm_session_t s;
    cm_window_result_t w;
    cm_buf_t buf;
    cm_event_init(&ev);
    cm_session_init(&s);
    cm_window_result_init(&w);
    cm_buf_init(&buf, 0);

    /* Missing required strings: nothing is appended. */
    assert_int_equal(cm_buf_append(&buf, "xy", 2), CM_OK);
    fill_event_min(&ev);
    ev.user_id = NULL;
    assert_int_equal(cm_avro_encode_event(&ev, 1, &buf), CM_ERR_INVALID);
    assert_int_equal(buf.len, 2);
    fill_session_full(&s);
    s.session_id = NULL;
    assert_int_equal(cm_avro_encode_session(&s, 2, &buf), CM_ERR_INVALID);
    fill_wr_full(&w);
    w.dimension = NULL;
    assert_int_equal(cm_avro_encode_window_result(&w, 3, &buf), CM_ERR_INVALID);
    fill_wr_full(&w);
    w.top_urls[50].key = NULL;
    assert_int_equal(cm_avro_encode_window_result(&w, 3, &buf), CM_ERR_INVALID);
    assert_int_equal(buf.len, 2);
    assert_memory_equal(buf.data, "xy", 2);

    /* The buffer's cap: refused whole, then fine with room. */
    cm_buf_t small;
    cm_buf_init(&small, 40);
    fill_event_full(&ev);
    assert_int_equal(cm_avro_encode_event(&ev, 1, &small), CM_ERR_TOO_LARGE);
    assert_int_equal(small.len, 0);
    fill_event_min(&ev);
    assert_int_equal(cm_avro_encode_event(&ev, 1, &small), CM_OK);
    /* A second copy does not fit in 40 bytes. */
    size_t one = small.len;
    assert_int_equal(cm_avro_encode_event(&ev, 1, &small), CM_ERR_TOO_LARGE);
    assert_int_equal(small.len, one);
    cm_buf_free(&small);

    cm_buf_free(&buf);
    cm_event_free(&ev);
    cm_session_free(&s);
    cm_window_result_free(&w);
}

/* ------------------------------------------------------------------------ */
/* avro-c reference: struct <-> generic value */

typedef struct ref {
    avro_schema_t schema;
    avro_value_iface_t *iface;
    avro_value_t val;
} ref_t;

static void ref_init(ref_t *r, cm_schema_kind_t kind)
{
    char errstr[256];
    assert_int_equal(cm_avro_schema_parse(kind, &r->schema, errstr, sizeof(errstr)), CM_OK);
    r->iface = avro_generic_class_from_schema(r->schema);
    assert_non_null(r->iface);
    assert_int_equal(avro_generic_value_new(r->iface, &r->val), 0);
}

static void ref_free(ref_t *r)
{
    avro_value_decref(&r->val);
    avro_value_iface_decref(r->iface);
    avro_schema_decref(r->schema);
}

static avro_value_t field(avro_value_t *rec, const char *name)
{
    avro_value_t f;
    if (avro_value_get_by_name(rec, name, &f, NULL) != 0)
        fail_msg("avro-c: no field %s: %s", name, avro_strerror());
    return f;
}

static void ac_str(avro_value_t *rec, const char *name, const char *s)
{
    avro_value_t f = field(rec, name);
    assert_int_equal(avro_value_set_string(&f, s), 0);
}

static void ac_opt_str(avro_value_t *rec, const char *name, const char *s)
{
    avro_value_t f = field(rec, name), br;
    assert_int_equal(avro_value_set_branch(&f, s ? 1 : 0, &br), 0);
    if (s)
        assert_int_equal(avro_value_set_string(&br, s), 0);
    else
        assert_int_equal(avro_value_set_null(&br), 0);
}

static void ac_long(avro_value_t *rec, const char *name, int64_t v)
{
    avro_value_t f = field(rec, name);
    assert_int_equal(avro_value_set_long(&f, v), 0);
}

static void ac_bool(avro_value_t *rec, const char *name, bool v)
{
    avro_value_t f = field(rec, name);
    assert_int_equal(avro_value_set_boolean(&f, v), 0);
}

static void ac_double(avro_value_t *rec, const char *name, double v)
{
    avro_value_t f = field(rec, name);
    assert_int_equal(avro_value_set_double(&f, v), 0);
}

static void ac_decimal_value(avro_value_t *f, int64_t v)
{
    uint8_t b[8];
    size_t n = ref_decimal(v, b);
    assert_int_equal(avro_value_set_bytes(f, b, n), 0);
}

/* Opens the record branch of an optional record field, or sets null. */
static int ac_opt_rec(avro_value_t *rec, const char *name, int present, avro_value_t *sub)
{
    avro_value_t f = field(rec, name);
    assert_int_equal(avro_value_set_branch(&f, present ? 1 : 0, sub), 0);
    if (!present)
        assert_int_equal(avro_value_set_null(sub), 0);
    return present;
}

static void ac_from_event(avro_value_t *v, const cm_event_t *ev)
{
    avro_value_t sub, f, br;
    avro_value_reset(v);
    ac_str(v, "event_id", ev->event_id);
    ac_long(v, "timestamp", ev->ts_ms);
    ac_long(v, "received_at", ev->received_at_ms);
    ac_str(v, "user_id", ev->user_id);
    ac_str(v, "event_type", ev->event_type);
    ac_opt_str(v, "page_url", ev->page_url);
    ac_opt_str(v, "session_id", ev->session_id);
    ac_opt_str(v, "referrer", ev->referrer);
    ac_opt_str(v, "user_agent", ev->user_agent);
    ac_opt_str(v, "ip_address", ev->ip_address);
    if (ac_opt_rec(v, "geo", ev->geo_country || ev->geo_city, &sub)) {
        ac_opt_str(&sub, "country", ev->geo_country);
        ac_opt_str(&sub, "city", ev->geo_city);
    }
    if (ac_opt_rec(v, "device", ev->device_type || ev->device_os, &sub)) {
        ac_opt_str(&sub, "type", ev->device_type);
        ac_opt_str(&sub, "os", ev->device_os);
    }
    ac_bool(v, "is_bot", ev->is_bot);
    if (ac_opt_rec(v, "metadata", ev->product_id || ev->category || ev->quantity || ev->has_price,
                   &sub)) {
        ac_opt_str(&sub, "product_id", ev->product_id);
        ac_opt_str(&sub, "category", ev->category);
        f = field(&sub, "quantity");
        assert_int_equal(avro_value_set_branch(&f, ev->quantity ? 1 : 0, &br), 0);
        if (ev->quantity)
            assert_int_equal(avro_value_set_int(&br, ev->quantity), 0);
        else
            assert_int_equal(avro_value_set_null(&br), 0);
        f = field(&sub, "price");
        assert_int_equal(avro_value_set_branch(&f, ev->has_price ? 1 : 0, &br), 0);
        if (ev->has_price)
            ac_decimal_value(&br, ev->price_micros);
        else
            assert_int_equal(avro_value_set_null(&br), 0);
    }
}

static void ac_from_session(avro_value_t *v, const cm_session_t *s)
{
    avro_value_reset(v);
    ac_str(v, "session_id", s->session_id);
    ac_str(v, "user_id", s->user_id);
    ac_long(v, "start", s->start_ms);
    ac_long(v, "end", s->end_ms);
    ac_long(v, "duration_ms", s->duration_ms);
    ac_long(v, "event_count", s->event_count);
    ac_long(v, "page_views", s->page_views);
    ac_opt_str(v, "entry_url", s->entry_url);
    ac_opt_str(v, "exit_url", s->exit_url);
    ac_opt_str(v, "device_type", s->device_type);
    ac_opt_str(v, "country", s->country);
    ac_bool(v, "converted", s->converted);
    avro_value_t f = field(v, "revenue");
    ac_decimal_value(&f, s->revenue_micros);
    f = field(v, "revision");
    assert_int_equal(avro_value_set_int(&f, s->revision), 0);
    ac_bool(v, "tombstone", s->tombstone);
}

static void ac_from_wr(avro_value_t *v, const cm_window_result_t *w)
{
    avro_value_t f, e, sub;
    avro_value_reset(v);
    ac_long(v, "window_size_ms", w->window_size_ms);
    ac_long(v, "window_start", w->window_start_ms);
    ac_long(v, "window_end", w->window_end_ms);
    ac_str(v, "dimension", w->dimension);
    f = field(v, "revision");
    assert_int_equal(avro_value_set_int(&f, w->revision), 0);
    ac_bool(v, "final", w->final);
    ac_long(v, "events", w->events);
    ac_long(v, "page_views", w->page_views);
    ac_long(v, "purchases", w->purchases);
    f = field(v, "revenue");
    ac_decimal_value(&f, w->revenue_micros);
    ac_long(v, "unique_users", w->unique_users);
    f = field(v, "counts");
    for (size_t i = 0; i < w->n_counts; i++) {
        assert_int_equal(avro_value_add(&f, w->counts[i].key, &e, NULL, NULL), 0);
        assert_int_equal(avro_value_set_long(&e, w->counts[i].count), 0);
    }
    f = field(v, "top_urls");
    for (size_t i = 0; i < w->n_top_urls; i++) {
        assert_int_equal(avro_value_append(&f, &e, NULL), 0);
        sub = field(&e, "url");
        assert_int_equal(avro_value_set_string(&sub, w->top_urls[i].key), 0);
        sub = field(&e, "count");
        assert_int_equal(avro_value_set_long(&sub, w->top_urls[i].count), 0);
    }
    ac_long(v, "sessions_closed", w->sessions_closed);
    ac_double(v, "avg_session_ms", w->avg_session_ms);
    ac_double(v, "bounce_rate", w->bounce_rate);
    ac_double(v, "conversion_rate", w->conversion_rate);
}

/* Value -> struct. Strings point into the avro value (valid while it is). */
static const char *get_str(avro_value_t *rec, const char *name)
{
    avro_value_t f = field(rec, name);
    const char *s = NULL;
    size_t n = 0;
    assert_int_equal(avro_value_get_string(&f, &s, &n), 0);
    assert_true(n >= 1 && s[n - 1] == '\0');
    return s;
}

static const char *get_opt_str(avro_value_t *rec, const char *name)
{
    avro_value_t f = field(rec, name), br;
    int d = -1;
    assert_int_equal(avro_value_get_discriminant(&f, &d), 0);
    if (d == 0)
        return NULL;
    assert_int_equal(d, 1);
    assert_int_equal(avro_value_get_current_branch(&f, &br), 0);
    const char *s = NULL;
    size_t n = 0;
    assert_int_equal(avro_value_get_string(&br, &s, &n), 0);
    return s;
}

static int64_t get_long_f(avro_value_t *rec, const char *name)
{
    avro_value_t f = field(rec, name);
    int64_t v = 0;
    assert_int_equal(avro_value_get_long(&f, &v), 0);
    return v;
}

static int32_t get_int_f(avro_value_t *rec, const char *name)
{
    avro_value_t f = field(rec, name);
    int32_t v = 0;
    assert_int_equal(avro_value_get_int(&f, &v), 0);
    return v;
}

static bool get_bool_f(avro_value_t *rec, const char *name)
{
    avro_value_t f = field(rec, name);
    int v = 0;
    assert_int_equal(avro_value_get_boolean(&f, &v), 0);
    return v;
}

static double get_double_f(avro_value_t *rec, const char *name)
{
    avro_value_t f = field(rec, name);
    double v = 0;
    assert_int_equal(avro_value_get_double(&f, &v), 0);
    return v;
}

/* Reference decimal reading: sign-extend big-endian bytes (n <= 8). */
static int64_t ref_decimal_read(avro_value_t *f)
{
    const void *p = NULL;
    size_t n = 0;
    assert_int_equal(avro_value_get_bytes(f, &p, &n), 0);
    assert_true(n >= 1 && n <= 8);
    const uint8_t *b = p;
    int64_t v = (int8_t)b[0];
    for (size_t i = 1; i < n; i++)
        v = (int64_t)((uint64_t)v << 8 | b[i]);
    return v;
}

static int get_opt_rec(avro_value_t *rec, const char *name, avro_value_t *sub)
{
    avro_value_t f = field(rec, name);
    int d = -1;
    assert_int_equal(avro_value_get_discriminant(&f, &d), 0);
    if (d == 0)
        return 0;
    assert_int_equal(avro_value_get_current_branch(&f, sub), 0);
    return 1;
}

static void ac_to_event(avro_value_t *v, cm_event_t *ev)
{
    avro_value_t sub, f, br;
    int d;
    cm_event_reset(ev);
    ev->event_id = get_str(v, "event_id");
    ev->ts_ms = get_long_f(v, "timestamp");
    ev->received_at_ms = get_long_f(v, "received_at");
    ev->user_id = get_str(v, "user_id");
    ev->event_type = get_str(v, "event_type");
    ev->type = (cm_event_type_t)cm_event_type_parse(ev->event_type);
    ev->page_url = get_opt_str(v, "page_url");
    ev->session_id = get_opt_str(v, "session_id");
    ev->referrer = get_opt_str(v, "referrer");
    ev->user_agent = get_opt_str(v, "user_agent");
    ev->ip_address = get_opt_str(v, "ip_address");
    if (get_opt_rec(v, "geo", &sub)) {
        ev->geo_country = get_opt_str(&sub, "country");
        ev->geo_city = get_opt_str(&sub, "city");
    }
    if (get_opt_rec(v, "device", &sub)) {
        ev->device_type = get_opt_str(&sub, "type");
        ev->device_os = get_opt_str(&sub, "os");
    }
    ev->is_bot = get_bool_f(v, "is_bot");
    if (get_opt_rec(v, "metadata", &sub)) {
        ev->product_id = get_opt_str(&sub, "product_id");
        ev->category = get_opt_str(&sub, "category");
        f = field(&sub, "quantity");
        assert_int_equal(avro_value_get_discriminant(&f, &d), 0);
        if (d) {
            assert_int_equal(avro_value_get_current_branch(&f, &br), 0);
            assert_int_equal(avro_value_get_int(&br, &ev->quantity), 0);
        }
        f = field(&sub, "price");
        assert_int_equal(avro_value_get_discriminant(&f, &d), 0);
        if (d) {
            assert_int_equal(avro_value_get_current_branch(&f, &br), 0);
            ev->has_price = true;
            ev->price_micros = ref_decimal_read(&br);
        }
    }
}

static void ac_to_session(avro_value_t *v, cm_session_t *s)
{
    cm_session_reset(s);
    s->session_id = get_str(v, "session_id");
    s->user_id = get_str(v, "user_id");
    s->start_ms = get_long_f(v, "start");
    s->end_ms = get_long_f(v, "end");
    s->duration_ms = get_long_f(v, "duration_ms");
    s->event_count = get_long_f(v, "event_count");
    s->page_views = get_long_f(v, "page_views");
    s->entry_url = get_opt_str(v, "entry_url");
    s->exit_url = get_opt_str(v, "exit_url");
    s->device_type = get_opt_str(v, "device_type");
    s->country = get_opt_str(v, "country");
    s->converted = get_bool_f(v, "converted");
    avro_value_t f = field(v, "revenue");
    s->revenue_micros = ref_decimal_read(&f);
    s->revision = get_int_f(v, "revision");
    s->tombstone = get_bool_f(v, "tombstone");
}

static void ac_to_wr(avro_value_t *v, cm_window_result_t *w)
{
    avro_value_t f, e;
    size_t n = 0;
    cm_window_result_reset(w);
    w->window_size_ms = get_long_f(v, "window_size_ms");
    w->window_start_ms = get_long_f(v, "window_start");
    w->window_end_ms = get_long_f(v, "window_end");
    w->dimension = get_str(v, "dimension");
    w->revision = get_int_f(v, "revision");
    w->final = get_bool_f(v, "final");
    w->events = get_long_f(v, "events");
    w->page_views = get_long_f(v, "page_views");
    w->purchases = get_long_f(v, "purchases");
    f = field(v, "revenue");
    w->revenue_micros = ref_decimal_read(&f);
    w->unique_users = get_long_f(v, "unique_users");
    f = field(v, "counts");
    assert_int_equal(avro_value_get_size(&f, &n), 0);
    for (size_t i = 0; i < n; i++) {
        const char *key = NULL;
        int64_t c = 0;
        assert_int_equal(avro_value_get_by_index(&f, i, &e, &key), 0);
        assert_int_equal(avro_value_get_long(&e, &c), 0);
        assert_int_equal(cm_window_result_add_count(w, key, c), CM_OK);
    }
    f = field(v, "top_urls");
    assert_int_equal(avro_value_get_size(&f, &n), 0);
    for (size_t i = 0; i < n; i++) {
        assert_int_equal(avro_value_get_by_index(&f, i, &e, NULL), 0);
        assert_int_equal(
            cm_window_result_add_top_url(w, get_str(&e, "url"), get_long_f(&e, "count")), CM_OK);
    }
    w->sessions_closed = get_long_f(v, "sessions_closed");
    w->avg_session_ms = get_double_f(v, "avg_session_ms");
    w->bounce_rate = get_double_f(v, "bounce_rate");
    w->conversion_rate = get_double_f(v, "conversion_rate");
}

/* avro-c writes the value; returns the body length in buf. */
static size_t ac_write(avro_value_t *v, char *buf, size_t size)
{
    avro_writer_t wr = avro_writer_memory(buf, (int64_t)size);
    if (avro_value_write(wr, v) != 0)
        fail_msg("avro_value_write: %s", avro_strerror());
    size_t n = (size_t)avro_writer_tell(wr);
    avro_writer_free(wr);
    return n;
}

static void ac_read(avro_value_t *v, const void *body, size_t n)
{
    avro_reader_t rd = avro_reader_memory(body, (int64_t)n);
    avro_value_reset(v);
    if (avro_value_read(rd, v) != 0)
        fail_msg("avro_value_read: %s", avro_strerror());
    avro_reader_free(rd);
}

/* The three-way check for one record of each kind. */
static void check_event_vs_avro_c(ref_t *r, const cm_event_t *ev)
{
    cm_buf_t ours;
    char theirs[8192];
    cm_event_t back;
    cm_buf_init(&ours, 0);
    cm_event_init(&back);

    /* 1. Same bytes as avro-c's writer. */
    assert_int_equal(cm_avro_encode_event(ev, CM_SCHEMA_ID_EVENT, &ours), CM_OK);
    ac_from_event(&r->val, ev);
    size_t n = ac_write(&r->val, theirs, sizeof(theirs));
    assert_int_equal(ours.len, CM_AVRO_HEADER_SIZE + n);
    assert_memory_equal(ours.data + CM_AVRO_HEADER_SIZE, theirs, n);
    /* 2. avro-c reads our bytes back to the same record. */
    ac_read(&r->val, ours.data + CM_AVRO_HEADER_SIZE, ours.len - CM_AVRO_HEADER_SIZE);
    cm_event_t via;
    cm_event_init(&via);
    ac_to_event(&r->val, &via);
    event_eq(ev, &via);
    cm_event_free(&via);
    /* 3. We read avro-c's bytes. */
    cm_buf_t wire;
    cm_buf_init(&wire, 0);
    const uint8_t hdr[5] = {0, 0, 0, 0, CM_SCHEMA_ID_EVENT};
    assert_int_equal(cm_buf_append(&wire, hdr, 5), CM_OK);
    assert_int_equal(cm_buf_append(&wire, theirs, n), CM_OK);
    assert_int_equal(cm_avro_decode_event(NULL, wire.data, wire.len, &back, NULL, NULL), CM_OK);
    event_eq(ev, &back);
    cm_buf_free(&wire);
    cm_buf_free(&ours);
    cm_event_free(&back);
}

static void check_session_vs_avro_c(ref_t *r, const cm_session_t *s)
{
    cm_buf_t ours, wire;
    char theirs[8192];
    cm_session_t back, via;
    cm_buf_init(&ours, 0);
    cm_buf_init(&wire, 0);
    cm_session_init(&back);
    cm_session_init(&via);
    assert_int_equal(cm_avro_encode_session(s, CM_SCHEMA_ID_SESSION, &ours), CM_OK);
    ac_from_session(&r->val, s);
    size_t n = ac_write(&r->val, theirs, sizeof(theirs));
    assert_int_equal(ours.len, CM_AVRO_HEADER_SIZE + n);
    assert_memory_equal(ours.data + CM_AVRO_HEADER_SIZE, theirs, n);
    ac_read(&r->val, ours.data + CM_AVRO_HEADER_SIZE, ours.len - CM_AVRO_HEADER_SIZE);
    ac_to_session(&r->val, &via);
    session_eq(s, &via);
    const uint8_t hdr[5] = {0, 0, 0, 0, CM_SCHEMA_ID_SESSION};
    assert_int_equal(cm_buf_append(&wire, hdr, 5), CM_OK);
    assert_int_equal(cm_buf_append(&wire, theirs, n), CM_OK);
    assert_int_equal(cm_avro_decode_session(NULL, wire.data, wire.len, &back, NULL, NULL), CM_OK);
    session_eq(s, &back);
    cm_buf_free(&ours);
    cm_buf_free(&wire);
    cm_session_free(&back);
    cm_session_free(&via);
}

static void check_wr_vs_avro_c(ref_t *r, const cm_window_result_t *w)
{
    cm_buf_t ours, wire;
    static char theirs[65536];
    cm_window_result_t back, via;
    cm_buf_init(&ours, 0);
    cm_buf_init(&wire, 0);
    cm_window_result_init(&back);
    cm_window_result_init(&via);
    assert_int_equal(cm_avro_encode_window_result(w, CM_SCHEMA_ID_WINDOW_RESULT, &ours), CM_OK);
    ac_from_wr(&r->val, w);
    size_t n = ac_write(&r->val, theirs, sizeof(theirs));
    assert_int_equal(ours.len, CM_AVRO_HEADER_SIZE + n);
    assert_memory_equal(ours.data + CM_AVRO_HEADER_SIZE, theirs, n);
    ac_read(&r->val, ours.data + CM_AVRO_HEADER_SIZE, ours.len - CM_AVRO_HEADER_SIZE);
    ac_to_wr(&r->val, &via);
    wr_eq(w, &via);
    const uint8_t hdr[5] = {0, 0, 0, 0, CM_SCHEMA_ID_WINDOW_RESULT};
    assert_int_equal(cm_buf_append(&wire, hdr, 5), CM_OK);
    assert_int_equal(cm_buf_append(&wire, theirs, n), CM_OK);
    assert_int_equal(cm_avro_decode_window_result(NULL, wire.data, wire.len, &back, NULL, NULL),
                     CM_OK);
    wr_eq(w, &back);
    cm_buf_free(&ours);
    cm_buf_free(&wire);
    cm_window_result_free(&back);
    cm_window_result_free(&via);
}

static void test_avro_c_reference(void **state)
{
    ref_t re, rs, rw;
    ref_init(&re, CM_SCHEMA_EVENT);
    ref_init(&rs, CM_SCHEMA_SESSION);
    ref_init(&rw, CM_SCHEMA_WINDOW_RESULT);

    cm_event_t ev;
    cm_event_init(&ev);
    fill_event_full(&ev);
    check_event_vs_avro_c(&re, &ev);
    fill_event_min(&ev);
    check_event_vs_avro_c(&re, &ev);
    fill_event_min(&ev); /* partial nested records, UTF-8, large numbers */
    set(&ev, &ev.geo_country, "FR");
    set(&ev, &ev.device_os, "\xe7\x94\xa8");
    set(&ev, &ev.category, "caf\xc3\xa9");
    ev.quantity = INT32_MAX;
    ev.ts_ms = INT64_MAX;
    ev.received_at_ms = INT64_MIN;
    check_event_vs_avro_c(&re, &ev);
    fill_event_min(&ev);
    ev.has_price = true;
    ev.price_micros = CM_DECIMAL_MAX_MICROS;
    check_event_vs_avro_c(&re, &ev);

    cm_session_t s;
    cm_session_init(&s);
    fill_session_full(&s);
    check_session_vs_avro_c(&rs, &s);
    fill_session_min(&s);
    check_session_vs_avro_c(&rs, &s);
    fill_session_full(&s);
    s.revenue_micros = 1;
    s.revision = INT32_MAX;
    s.tombstone = true;
    s.converted = false;
    check_session_vs_avro_c(&rs, &s);

    cm_window_result_t w;
    cm_window_result_init(&w);
    fill_wr_full(&w);
    check_wr_vs_avro_c(&rw, &w);
    fill_wr_min(&w);
    check_wr_vs_avro_c(&rw, &w);

    cm_window_result_free(&w);
    cm_session_free(&s);
    cm_event_free(&ev);
    ref_free(&re);
    ref_free(&rs);
    ref_free(&rw);
}

/* ------------------------------------------------------------------------ */
/* Hostile input */

static uint64_t rng_state = 0x9e3779b97f4a7c15ull;

static uint64_t rng(void)
{
    uint64_t x = rng_state;
    x ^= x << 13;
    x ^= x >> 7;
    x ^= x << 17;
    return rng_state = x;
}

static long env_long(const char *name, long dflt)
{
    const char *s = getenv(name);
    return s && *s ? strtol(s, NULL, 10) : dflt;
}

/* Decodes `p` with all three decoders. Each must return OK or PARSE; on OK
 * the record re-encodes, and that encoding is a fixed point. */
static void fuzz_one(const uint8_t *p, size_t n, cm_event_t *ev, cm_session_t *s,
                     cm_window_result_t *w, cm_buf_t *tmp, cm_buf_t *tmp2)
{
    cm_avro_error_t err;
    cm_err_t e;

    e = cm_avro_decode_event(NULL, p, n, ev, NULL, &err);
    assert_true(e == CM_OK || e == CM_ERR_PARSE);
    if (e == CM_ERR_PARSE)
        assert_non_null(err.reason);
    if (e == CM_OK) {
        cm_buf_reset(tmp);
        assert_int_equal(cm_avro_encode_event(ev, CM_SCHEMA_ID_EVENT, tmp), CM_OK);
        assert_int_equal(cm_avro_decode_event(NULL, tmp->data, tmp->len, ev, NULL, NULL), CM_OK);
        cm_buf_reset(tmp2);
        assert_int_equal(cm_avro_encode_event(ev, CM_SCHEMA_ID_EVENT, tmp2), CM_OK);
        assert_int_equal(tmp->len, tmp2->len);
        assert_memory_equal(tmp->data, tmp2->data, tmp->len);
    }
    e = cm_avro_decode_session(NULL, p, n, s, NULL, &err);
    assert_true(e == CM_OK || e == CM_ERR_PARSE);
    if (e == CM_OK) {
        cm_buf_reset(tmp);
        assert_int_equal(cm_avro_encode_session(s, CM_SCHEMA_ID_SESSION, tmp), CM_OK);
    }
    e = cm_avro_decode_window_result(NULL, p, n, w, NULL, &err);
    assert_true(e == CM_OK || e == CM_ERR_PARSE);
    if (e == CM_OK) {
        cm_buf_reset(tmp);
        assert_int_equal(cm_avro_encode_window_result(w, CM_SCHEMA_ID_WINDOW_RESULT, tmp),
                         CM_OK);
    }
}

static void test_hostile_input(void **state)
{
    cm_event_t ev;
    cm_session_t s;
    cm_window_result_t w;
    cm_buf_t seeds[6], tmp, tmp2;
    cm_event_init(&ev);
    cm_session_init(&s);
    cm_window_result_init(&w);
    cm_buf_init(&tmp, 0);
    cm_buf_init(&tmp2, 0);
    for (int i = 0; i < 6; i++)
        cm_buf_init(&seeds[i], 0);

    fill_event_full(&ev);
    assert_int_equal(cm_avro_encode_event(&ev, CM_SCHEMA_ID_EVENT, &seeds[0]), CM_OK);
    fill_event_min(&ev);
    assert_int_equal(cm_avro_encode_event(&ev, CM_SCHEMA_ID_EVENT, &seeds[1]), CM_OK);
    fill_session_full(&s);
    assert_int_equal(cm_avro_encode_session(&s, CM_SCHEMA_ID_SESSION, &seeds[2]), CM_OK);
    fill_session_min(&s);
    assert_int_equal(cm_avro_encode_session(&s, CM_SCHEMA_ID_SESSION, &seeds[3]), CM_OK);
    fill_wr_full(&w);
    assert_int_equal(cm_avro_encode_window_result(&w, CM_SCHEMA_ID_WINDOW_RESULT, &seeds[4]),
                     CM_OK);
    fill_wr_min(&w);
    assert_int_equal(cm_avro_encode_window_result(&w, CM_SCHEMA_ID_WINDOW_RESULT, &seeds[5]),
                     CM_OK);

    long iters = env_long("CM_FUZZ_ITERS", 20000);
    long ok = 0, total = 0;
    uint8_t *m = malloc(70000);
    assert_non_null(m);
    for (int si = 0; si < 6; si++) {
        const cm_buf_t *sd = &seeds[si];
        /* Every truncation. */
        for (size_t cut = 0; cut < sd->len; cut++) {
            memcpy(m, sd->data, cut);
            fuzz_one(m, cut, &ev, &s, &w, &tmp, &tmp2);
        }
        for (long it = 0; it < iters; it++) {
            size_t n = sd->len;
            memcpy(m, sd->data, n);
            int flips = 1 + (int)(rng() % 4);
            for (int f = 0; f < flips; f++) {
                size_t at = 5 + rng() % (n - 5); /* keep the header: reach the body */
                switch (rng() % 5) {
                case 0: m[at] ^= (uint8_t)(1u << (rng() % 8)); break;
                case 1: m[at] = (uint8_t)rng(); break;
                case 2: m[at] = 0xff; break;
                case 3: m[at] = 0x80; break;
                default: m[at] = 0x00; break;
                }
            }
            if (rng() % 4 == 0) { /* delete or insert a few bytes inside the body */
                size_t at = 5 + rng() % (n - 5), k = 1 + rng() % 8;
                if (rng() % 2 && at + k <= n) {
                    memmove(m + at, m + at + k, n - at - k);
                    n -= k;
                } else {
                    memmove(m + at + k, m + at, n - at);
                    for (size_t j = 0; j < k; j++)
                        m[at + j] = (uint8_t)rng();
                    n += k;
                }
            }
            if (n > 5 && rng() % 4 == 0)
                n = 5 + rng() % (n - 4); /* and truncate */
            if (rng() % 16 == 0)
                m[rng() % 5] ^= (uint8_t)rng(); /* sometimes the header too */
            /* Sometimes a few bytes of garbage appended. */
            if (rng() % 8 == 0) {
                size_t extra = 1 + rng() % 16;
                for (size_t k = 0; k < extra; k++)
                    m[n + k] = (uint8_t)rng();
                n += extra;
            }
            fuzz_one(m, n, &ev, &s, &w, &tmp, &tmp2);
            total++;
            if (cm_avro_decode_event(NULL, m, n, &ev, NULL, NULL) == CM_OK ||
                cm_avro_decode_session(NULL, m, n, &s, NULL, NULL) == CM_OK ||
                cm_avro_decode_window_result(NULL, m, n, &w, NULL, NULL) == CM_OK)
                ok++;
        }
    }
    /* Pure noise behind a valid header of each kind. */
    for (long it = 0; it < iters; it++) {
        size_t n = 5 + rng() % 300;
        m[0] = 0;
        m[1] = m[2] = m[3] = 0;
        m[4] = (uint8_t)(1 + rng() % 3);
        for (size_t k = 5; k < n; k++)
            m[k] = (uint8_t)rng();
        fuzz_one(m, n, &ev, &s, &w, &tmp, &tmp2);
    }
    print_message("hostile input: %ld mutated records, %ld still decoded as valid\n", total, ok);
    free(m);
    for (int i = 0; i < 6; i++)
        cm_buf_free(&seeds[i]);
    cm_buf_free(&tmp);
    cm_buf_free(&tmp2);
    cm_event_free(&ev);
    cm_session_free(&s);
    cm_window_result_free(&w);
}

/* ------------------------------------------------------------------------ */
/* Speed: the numbers behind the comment at the top of cm_avro.c. */

static double now_s(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec + (double)ts.tv_nsec / 1e9;
}

static void test_bench_event(void **state)
{
    long n = env_long("CM_BENCH_N", 200000);
    long n_ref = n / 4 > 0 ? n / 4 : 1;
    cm_event_t ev, out;
    cm_buf_t buf;
    ref_t r;
    static char body[8192];
    cm_event_init(&ev);
    cm_event_init(&out);
    cm_buf_init(&buf, 0);
    ref_init(&r, CM_SCHEMA_EVENT);
    fill_event_full(&ev);

    double t0 = now_s();
    for (long i = 0; i < n; i++) {
        cm_buf_reset(&buf);
        if (cm_avro_encode_event(&ev, CM_SCHEMA_ID_EVENT, &buf))
            fail();
    }
    double t_enc = now_s() - t0;
    size_t len = buf.len;

    t0 = now_s();
    for (long i = 0; i < n; i++)
        if (cm_avro_decode_event(NULL, buf.data, buf.len, &out, NULL, NULL))
            fail();
    double t_dec = now_s() - t0;

    /* avro-c: struct -> generic value -> bytes, the way a service would. */
    avro_writer_t wr = avro_writer_memory(body, sizeof(body));
    t0 = now_s();
    for (long i = 0; i < n_ref; i++) {
        ac_from_event(&r.val, &ev);
        avro_writer_memory_set_dest(wr, body, sizeof(body));
        if (avro_value_write(wr, &r.val))
            fail();
    }
    double t_ref_enc = now_s() - t0;
    size_t blen = (size_t)avro_writer_tell(wr);
    avro_writer_free(wr);

    /* avro-c: bytes -> generic value -> struct (strings copied into the arena). */
    avro_reader_t rd = avro_reader_memory(body, (int64_t)blen);
    cm_event_t tmp;
    cm_event_init(&tmp);
    t0 = now_s();
    for (long i = 0; i < n_ref; i++) {
        avro_reader_memory_set_source(rd, body, (int64_t)blen);
        avro_value_reset(&r.val);
        if (avro_value_read(rd, &r.val))
            fail();
        ac_to_event(&r.val, &tmp);
        cm_event_reset(&out);
        if (cm_event_set_str(&out, &out.event_id, tmp.event_id, strlen(tmp.event_id)) ||
            cm_event_set_str(&out, &out.user_id, tmp.user_id, strlen(tmp.user_id)) ||
            cm_event_set_str(&out, &out.page_url, tmp.page_url, strlen(tmp.page_url)) ||
            cm_event_set_str(&out, &out.user_agent, tmp.user_agent, strlen(tmp.user_agent)))
            fail();
    }
    double t_ref_dec = now_s() - t0;
    avro_reader_free(rd);
    cm_event_free(&tmp);

    print_message("event of %zu bytes: hand-written encode %.2f M/s, decode %.2f M/s; "
                  "avro-c generic encode %.2f M/s, decode %.2f M/s\n",
                  len, n / t_enc / 1e6, n / t_dec / 1e6, n_ref / t_ref_enc / 1e6,
                  n_ref / t_ref_dec / 1e6);
    ref_free(&r);
    cm_buf_free(&buf);
    cm_event_free(&ev);
    cm_event_free(&out);
}

/* ------------------------------------------------------------------------ */
/* Fixtures for tests/unit/avro_check.py (fastavro): with CM_AVRO_DUMP_DIR set,
 * writes <name>.bin (wire bytes) and <name>.json (kind + expected record in
 * Avro field names; times as epoch ms, decimals as strings). */

static json_t *j_str(const char *s) { return s ? json_string(s) : json_null(); }

static json_t *j_dec(int64_t micros)
{
    char b[48];
    uint64_t u = micros < 0 ? (uint64_t)0 - (uint64_t)micros : (uint64_t)micros;
    snprintf(b, sizeof(b), "%s%llu.%06llu", micros < 0 ? "-" : "",
             (unsigned long long)(u / 1000000), (unsigned long long)(u % 1000000));
    return json_string(b);
}

static json_t *j_event(const cm_event_t *e)
{
    json_t *o = json_pack("{s:s, s:I, s:I, s:s, s:s, s:o, s:o, s:o, s:o, s:o, s:b}", "event_id",
                          e->event_id, "timestamp", (json_int_t)e->ts_ms, "received_at",
                          (json_int_t)e->received_at_ms, "user_id", e->user_id, "event_type",
                          e->event_type, "page_url", j_str(e->page_url), "session_id",
                          j_str(e->session_id), "referrer", j_str(e->referrer), "user_agent",
                          j_str(e->user_agent), "ip_address", j_str(e->ip_address), "is_bot",
                          e->is_bot);
    json_object_set_new(o, "geo", e->geo_country || e->geo_city
                                      ? json_pack("{s:o, s:o}", "country", j_str(e->geo_country),
                                                  "city", j_str(e->geo_city))
                                      : json_null());
    json_object_set_new(o, "device", e->device_type || e->device_os
                                         ? json_pack("{s:o, s:o}", "type", j_str(e->device_type),
                                                     "os", j_str(e->device_os))
                                         : json_null());
    json_object_set_new(
        o, "metadata",
        e->product_id || e->category || e->quantity || e->has_price
            ? json_pack("{s:o, s:o, s:o, s:o}", "product_id", j_str(e->product_id), "category",
                        j_str(e->category), "quantity",
                        e->quantity ? json_integer(e->quantity) : json_null(), "price",
                        e->has_price ? j_dec(e->price_micros) : json_null())
            : json_null());
    return o;
}

static json_t *j_session(const cm_session_t *s)
{
    return json_pack("{s:s, s:s, s:I, s:I, s:I, s:I, s:I, s:o, s:o, s:o, s:o, s:b, s:o, s:i, "
                     "s:b}",
                     "session_id", s->session_id, "user_id", s->user_id, "start",
                     (json_int_t)s->start_ms, "end", (json_int_t)s->end_ms, "duration_ms",
                     (json_int_t)s->duration_ms, "event_count", (json_int_t)s->event_count,
                     "page_views", (json_int_t)s->page_views, "entry_url", j_str(s->entry_url),
                     "exit_url", j_str(s->exit_url), "device_type", j_str(s->device_type),
                     "country", j_str(s->country), "converted", s->converted, "revenue",
                     j_dec(s->revenue_micros), "revision", (int)s->revision, "tombstone",
                     s->tombstone);
}

static json_t *j_wr(const cm_window_result_t *w)
{
    json_t *counts = json_object(), *top = json_array();
    for (size_t i = 0; i < w->n_counts; i++)
        json_object_set_new(counts, w->counts[i].key, json_integer(w->counts[i].count));
    for (size_t i = 0; i < w->n_top_urls; i++)
        json_array_append_new(top, json_pack("{s:s, s:I}", "url", w->top_urls[i].key, "count",
                                             (json_int_t)w->top_urls[i].count));
    return json_pack("{s:I, s:I, s:I, s:s, s:i, s:b, s:I, s:I, s:I, s:o, s:I, s:o, s:o, s:I, "
                     "s:f, s:f, s:f}",
                     "window_size_ms", (json_int_t)w->window_size_ms, "window_start",
                     (json_int_t)w->window_start_ms, "window_end", (json_int_t)w->window_end_ms,
                     "dimension", w->dimension, "revision", (int)w->revision, "final", w->final,
                     "events", (json_int_t)w->events, "page_views", (json_int_t)w->page_views,
                     "purchases", (json_int_t)w->purchases, "revenue", j_dec(w->revenue_micros),
                     "unique_users", (json_int_t)w->unique_users, "counts", counts, "top_urls",
                     top, "sessions_closed", (json_int_t)w->sessions_closed, "avg_session_ms",
                     w->avg_session_ms, "bounce_rate", w->bounce_rate, "conversion_rate",
                     w->conversion_rate);
}

static void dump(const char *dir, const char *name, cm_schema_kind_t kind, const cm_buf_t *wire,
                 json_t *record)
{
    char path[1024];
    snprintf(path, sizeof(path), "%s/%s.bin", dir, name);
    FILE *f = fopen(path, "wb");
    assert_non_null(f);
    assert_int_equal(fwrite(wire->data, 1, wire->len, f), wire->len);
    fclose(f);
    json_t *o = json_pack("{s:s, s:o}", "kind", cm_schema_kind_name(kind), "record", record);
    snprintf(path, sizeof(path), "%s/%s.json", dir, name);
    assert_int_equal(json_dump_file(o, path, JSON_INDENT(1) | JSON_REAL_PRECISION(17)), 0);
    json_decref(o);
}

static void test_dump_for_fastavro(void **state)
{
    const char *dir = getenv("CM_AVRO_DUMP_DIR");
    if (!dir || !*dir)
        skip();
    cm_event_t ev;
    cm_session_t s;
    cm_window_result_t w;
    cm_buf_t buf;
    char name[64];
    cm_event_init(&ev);
    cm_session_init(&s);
    cm_window_result_init(&w);
    cm_buf_init(&buf, 0);

    for (int i = 0; i < 3; i++) {
        if (i == 0)
            fill_event_full(&ev);
        else
            fill_event_min(&ev);
        if (i == 2) { /* UTF-8, partial nested records, price 0 */
            set(&ev, &ev.user_id, "\xe7\x94\xa8\xe6\x88\xb7-\xf0\x9f\x98\x80");
            set(&ev, &ev.geo_city, "Z\xc3\xbcrich");
            set(&ev, &ev.device_os, "iOS");
            ev.has_price = true;
            ev.price_micros = 0;
        }
        cm_buf_reset(&buf);
        assert_int_equal(cm_avro_encode_event(&ev, CM_SCHEMA_ID_EVENT, &buf), CM_OK);
        snprintf(name, sizeof(name), "event_%d", i);
        dump(dir, name, CM_SCHEMA_EVENT, &buf, j_event(&ev));
    }
    const int64_t revs[] = {0, 1, 127, 128, 255, 256, INT64_C(59970000), CM_DECIMAL_MAX_MICROS};
    for (size_t i = 0; i < sizeof(revs) / sizeof(revs[0]); i++) {
        if (i % 2)
            fill_session_min(&s);
        else
            fill_session_full(&s);
        s.revenue_micros = revs[i];
        cm_buf_reset(&buf);
        assert_int_equal(cm_avro_encode_session(&s, CM_SCHEMA_ID_SESSION, &buf), CM_OK);
        snprintf(name, sizeof(name), "session_%zu", i);
        dump(dir, name, CM_SCHEMA_SESSION, &buf, j_session(&s));
    }
    for (int i = 0; i < 2; i++) {
        i ? fill_wr_min(&w) : fill_wr_full(&w);
        cm_buf_reset(&buf);
        assert_int_equal(cm_avro_encode_window_result(&w, CM_SCHEMA_ID_WINDOW_RESULT, &buf),
                         CM_OK);
        snprintf(name, sizeof(name), "window_result_%d", i);
        dump(dir, name, CM_SCHEMA_WINDOW_RESULT, &buf, j_wr(&w));
    }
    cm_buf_free(&buf);
    cm_event_free(&ev);
    cm_session_free(&s);
    cm_window_result_free(&w);
}

/* ------------------------------------------------------------------------ */
/* Registry */

static void test_registry_builtin(void **state)
{
    char errstr[256];
    uint32_t id = 0;
    cm_schema_kind_t kind;
    cm_registry_t *reg = cm_registry_new(NULL, errstr, sizeof(errstr));
    assert_non_null(reg);
    assert_false(cm_registry_is_remote(reg));
    for (int k = 0; k < CM_SCHEMA__COUNT; k++) {
        assert_int_equal(cm_registry_id(reg, "clickstream.raw-value", k, &id, errstr,
                                        sizeof(errstr)),
                         CM_OK);
        assert_int_equal(id, (uint32_t)k + 1);
        assert_int_equal(cm_registry_kind(reg, id, &kind, NULL, 0), CM_OK);
        assert_int_equal(kind, k);
        assert_int_equal(cm_registry_kind(NULL, id, &kind, NULL, 0), CM_OK);
        assert_int_equal(kind, k);
    }
    assert_int_equal(cm_registry_kind(reg, 0, &kind, errstr, sizeof(errstr)), CM_ERR_NOT_FOUND);
    assert_int_equal(cm_registry_kind(reg, 4, &kind, NULL, 0), CM_ERR_NOT_FOUND);
    assert_int_equal(cm_registry_id(reg, "x", CM_SCHEMA__COUNT, &id, NULL, 0), CM_ERR_INVALID);
    cm_registry_destroy(reg);

    reg = cm_registry_new("", errstr, sizeof(errstr));
    assert_non_null(reg);
    assert_false(cm_registry_is_remote(reg));
    cm_registry_destroy(reg);
    cm_registry_destroy(NULL);

    errstr[0] = '\0';
    assert_null(cm_registry_new("ftp://registry:8081", errstr, sizeof(errstr)));
    assert_non_null(strstr(errstr, "http"));
    assert_null(cm_registry_new("http://a:8081,http://b:8081", errstr, sizeof(errstr)));

    char subj[64];
    assert_int_equal(cm_registry_subject("clickstream.raw", subj, sizeof(subj)), CM_OK);
    assert_string_equal(subj, "clickstream.raw-value");
    assert_int_equal(cm_registry_subject("clickstream.raw", subj, 10), CM_ERR_TOO_LARGE);
}

/* A fake Confluent Schema Registry: our schemas get ids 100 + kind; id 200 is
 * some other Avro schema, 201 a protobuf one; subject "refuse-value" gets 409. */
typedef struct fake_reg {
    int posts, gets;
} fake_reg_t;

typedef struct fake_req {
    cm_buf_t body;
} fake_req_t;

static enum MHD_Result fake_reply(struct MHD_Connection *c, unsigned status, const char *text)
{
    struct MHD_Response *r =
        MHD_create_response_from_buffer(strlen(text), (void *)text, MHD_RESPMEM_MUST_COPY);
    MHD_add_response_header(r, "Content-Type", "application/vnd.schemaregistry.v1+json");
    enum MHD_Result ret = MHD_queue_response(c, status, r);
    MHD_destroy_response(r);
    return ret;
}

static enum MHD_Result fake_handler(void *cls, struct MHD_Connection *c, const char *url,
                                    const char *method, const char *version,
                                    const char *upload, size_t *upload_size, void **con_cls)
{
    fake_reg_t *fr = cls;
    fake_req_t *req = *con_cls;
    if (!req) {
        req = calloc(1, sizeof(*req));
        cm_buf_init(&req->body, 1 << 20);
        *con_cls = req;
        return MHD_YES;
    }
    if (*upload_size) {
        cm_buf_append(&req->body, upload, *upload_size);
        *upload_size = 0;
        return MHD_YES;
    }
    char out[8192];
    if (strcmp(method, "POST") == 0 && strncmp(url, "/subjects/", 10) == 0) {
        __atomic_add_fetch(&fr->posts, 1, __ATOMIC_SEQ_CST);
        if (strstr(url, "/refuse-value/"))
            return fake_reply(c, 409,
                              "{\"error_code\":409,\"message\":\"Schema being registered is "
                              "incompatible with an earlier schema\"}");
        json_t *j = json_loadb((const char *)req->body.data, req->body.len, 0, NULL);
        const char *schema = j ? json_string_value(json_object_get(j, "schema")) : NULL;
        int id = -1;
        for (int k = 0; schema && k < CM_SCHEMA__COUNT; k++)
            if (strcmp(schema, cm_schema_json(k)) == 0)
                id = 100 + k;
        json_decref(j);
        if (id < 0)
            return fake_reply(c, 422, "{\"error_code\":42201,\"message\":\"Invalid schema\"}");
        snprintf(out, sizeof(out), "{\"id\":%d}", id);
        return fake_reply(c, 200, out);
    }
    if (strcmp(method, "GET") == 0 && strncmp(url, "/schemas/ids/", 13) == 0) {
        __atomic_add_fetch(&fr->gets, 1, __ATOMIC_SEQ_CST);
        int id = atoi(url + 13);
        json_t *j = NULL;
        if (id >= 100 && id < 100 + CM_SCHEMA__COUNT)
            j = json_pack("{s:s}", "schema", cm_schema_json(id - 100));
        else if (id == 200)
            j = json_pack("{s:s}", "schema",
                          "{\"type\":\"record\",\"name\":\"Other\",\"fields\":"
                          "[{\"name\":\"a\",\"type\":\"long\"}]}");
        else if (id == 201)
            j = json_pack("{s:s,s:s}", "schema", "syntax = \"proto3\";", "schemaType",
                          "PROTOBUF");
        if (!j)
            return fake_reply(c, 404, "{\"error_code\":40403,\"message\":\"Schema not found\"}");
        char *s = json_dumps(j, JSON_COMPACT);
        json_decref(j);
        enum MHD_Result ret = fake_reply(c, 200, s);
        free(s);
        return ret;
    }
    return fake_reply(c, 404, "{\"error_code\":404,\"message\":\"HTTP 404 Not Found\"}");
}

static void fake_done(void *cls, struct MHD_Connection *c, void **con_cls,
                      enum MHD_RequestTerminationCode toe)
{
    fake_req_t *req = *con_cls;
    if (req) {
        cm_buf_free(&req->body);
        free(req);
        *con_cls = NULL;
    }
}

static struct MHD_Daemon *fake_start(fake_reg_t *fr, unsigned *port)
{
    struct sockaddr_in sa;
    memset(&sa, 0, sizeof(sa));
    sa.sin_family = AF_INET;
    sa.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
    sa.sin_port = 0;
    struct MHD_Daemon *d = MHD_start_daemon(
        MHD_USE_INTERNAL_POLLING_THREAD, 0, NULL, NULL, fake_handler, fr, MHD_OPTION_SOCK_ADDR,
        (struct sockaddr *)&sa, MHD_OPTION_NOTIFY_COMPLETED, fake_done, NULL, MHD_OPTION_END);
    assert_non_null(d);
    const union MHD_DaemonInfo *info = MHD_get_daemon_info(d, MHD_DAEMON_INFO_BIND_PORT);
    assert_non_null(info);
    *port = info->port;
    return d;
}

static void test_registry_remote(void **state)
{
    fake_reg_t fr = {0, 0};
    unsigned port = 0;
    char url[64], errstr[256];
    uint32_t id = 0;
    cm_avro_error_t err;
    struct MHD_Daemon *d = fake_start(&fr, &port);
    snprintf(url, sizeof(url), "http://127.0.0.1:%u/", port);
    cm_registry_t *reg = cm_registry_new(url, errstr, sizeof(errstr));
    assert_non_null(reg);
    assert_true(cm_registry_is_remote(reg));
    assert_int_equal(fr.posts + fr.gets, 0); /* no I/O at construction */

    /* Registration, cached per subject. */
    assert_int_equal(
        cm_registry_id(reg, "clickstream.raw-value", CM_SCHEMA_EVENT, &id, errstr, sizeof(errstr)),
        CM_OK);
    assert_int_equal(id, 100);
    assert_int_equal(cm_registry_id(reg, "clickstream.raw-value", CM_SCHEMA_EVENT, &id, NULL, 0),
                     CM_OK);
    assert_int_equal(id, 100);
    assert_int_equal(fr.posts, 1);
    assert_int_equal(cm_registry_id(reg, "clickstream.late-value", CM_SCHEMA_EVENT, &id, NULL, 0),
                     CM_OK);
    assert_int_equal(id, 100);
    assert_int_equal(fr.posts, 2);

    /* A registered id decodes without a lookup; built-in ids do not. */
    cm_event_t ev, out;
    cm_buf_t buf;
    cm_event_init(&ev);
    cm_event_init(&out);
    cm_buf_init(&buf, 0);
    fill_event_full(&ev);
    assert_int_equal(cm_avro_encode_event(&ev, id, &buf), CM_OK);
    assert_int_equal(cm_avro_decode_event(reg, buf.data, buf.len, &out, &id, &err), CM_OK);
    event_eq(&ev, &out);
    assert_int_equal(fr.gets, 0);

    /* An id learnt by GET /schemas/ids/<id>, then cached. */
    cm_session_t s, s2;
    cm_session_init(&s);
    cm_session_init(&s2);
    fill_session_full(&s);
    cm_buf_reset(&buf);
    assert_int_equal(cm_avro_encode_session(&s, 101, &buf), CM_OK);
    assert_int_equal(cm_avro_decode_session(reg, buf.data, buf.len, &s2, NULL, &err), CM_OK);
    session_eq(&s, &s2);
    assert_int_equal(fr.gets, 1);
    assert_int_equal(cm_avro_decode_session(reg, buf.data, buf.len, &s2, NULL, &err), CM_OK);
    assert_int_equal(fr.gets, 1);
    /* ... for the right kind only. */
    assert_int_equal(cm_avro_decode_event(reg, buf.data, buf.len, &out, NULL, &err),
                     CM_ERR_PARSE);
    assert_string_equal(err.reason, "wrong_schema");

    /* Ids that are not ours: negative answers are cached too. */
    const uint32_t others[] = {200, 201, 999, CM_SCHEMA_ID_SESSION};
    for (size_t i = 0; i < sizeof(others) / sizeof(others[0]); i++) {
        buf.data[1] = (uint8_t)(others[i] >> 24);
        buf.data[2] = (uint8_t)(others[i] >> 16);
        buf.data[3] = (uint8_t)(others[i] >> 8);
        buf.data[4] = (uint8_t)others[i];
        int gets = fr.gets;
        assert_int_equal(cm_avro_decode_session(reg, buf.data, buf.len, &s2, &id, &err),
                         CM_ERR_PARSE);
        assert_string_equal(err.reason, "unknown_schema");
        assert_int_equal(id, others[i]);
        assert_int_equal(fr.gets, gets + 1);
        assert_int_equal(cm_avro_decode_session(reg, buf.data, buf.len, &s2, &id, &err),
                         CM_ERR_PARSE);
        assert_int_equal(fr.gets, gets + 1);
    }

    /* A refused registration. */
    errstr[0] = '\0';
    assert_int_equal(
        cm_registry_id(reg, "refuse-value", CM_SCHEMA_SESSION, &id, errstr, sizeof(errstr)),
        CM_ERR_INVALID);
    assert_non_null(strstr(errstr, "409"));
    assert_non_null(strstr(errstr, "incompatible"));

    /* The registry goes away: transport errors are CM_ERR_IO, not PARSE. */
    MHD_stop_daemon(d);
    cm_registry_t *reg2 = cm_registry_new(url, errstr, sizeof(errstr));
    assert_non_null(reg2);
    assert_int_equal(cm_registry_id(reg2, "clickstream.sessions-value", CM_SCHEMA_SESSION, &id,
                                    errstr, sizeof(errstr)),
                     CM_ERR_IO);
    assert_true(errstr[0] != '\0');
    buf.data[4] = 101;
    buf.data[1] = buf.data[2] = buf.data[3] = 0;
    assert_int_equal(cm_avro_decode_session(reg2, buf.data, buf.len, &s2, NULL, &err), CM_ERR_IO);
    assert_string_equal(err.reason, "registry");
    assert_int_equal(cm_avro_decode_session(reg2, buf.data, buf.len, &s2, NULL, &err), CM_ERR_IO);
    /* The first registry still knows its ids from the cache. */
    assert_int_equal(cm_avro_decode_session(reg, buf.data, buf.len, &s2, NULL, &err), CM_OK);

    cm_registry_destroy(reg2);
    cm_registry_destroy(reg);
    cm_session_free(&s);
    cm_session_free(&s2);
    cm_event_free(&ev);
    cm_event_free(&out);
    cm_buf_free(&buf);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_schema_texts_match_files),
        cmocka_unit_test(test_schemas_parse_with_avro_c),
        cmocka_unit_test(test_event_roundtrip),
        cmocka_unit_test(test_session_roundtrip),
        cmocka_unit_test(test_window_result_roundtrip),
        cmocka_unit_test(test_window_result_multi_block),
        cmocka_unit_test(test_decimal),
        cmocka_unit_test(test_utf8_strings),
        cmocka_unit_test(test_wire_header),
        cmocka_unit_test(test_encode_errors),
        cmocka_unit_test(test_avro_c_reference),
        cmocka_unit_test(test_hostile_input),
        cmocka_unit_test(test_bench_event),
        cmocka_unit_test(test_dump_for_fastavro),
        cmocka_unit_test(test_registry_builtin),
        cmocka_unit_test(test_registry_remote),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
