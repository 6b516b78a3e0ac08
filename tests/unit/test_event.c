/*
 * test_event.c: the event model of SPEC §1 — validation rules, timestamps,
 * prices, the arena and the JSON round trip.
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

#define NOW 1705314600000LL /* 2024-01-15T10:30:00Z */
#define BASE "\"event_id\":\"e1\",\"timestamp\":\"2024-01-15T10:30:00Z\",\"user_id\":\"u1\""
#define CLICK "{" BASE ",\"event_type\":\"click\""

static cm_event_limits_t g_lim = CM_EVENT_LIMITS_DEFAULT;

static json_t *load(const char *text)
{
    json_error_t je;
    json_t *j = json_loads(text, JSON_DECODE_ANY | JSON_ALLOW_NUL, &je);
    if (!j)
        fail_msg("bad test JSON: %s: %s", je.text, text);
    return j;
}

static cm_err_t parse_at(const char *text, int64_t now, cm_event_t *ev, cm_event_error_t *e)
{
    json_t *j = load(text);
    cm_err_t rc = cm_event_from_json(j, &g_lim, now, ev, e);
    json_decref(j);
    return rc;
}

static void expect_fail_json(json_t *j, int64_t now, const char *field, const char *reason)
{
    cm_event_t ev;
    cm_event_error_t e;
    cm_event_init(&ev);
    assert_int_equal(cm_event_from_json(j, &g_lim, now, &ev, &e), CM_ERR_INVALID);
    assert_string_equal(e.field, field);
    assert_non_null(e.reason);
    assert_string_equal(e.reason, reason);
    assert_true(e.message[0] != '\0');
    assert_null(ev.event_id); /* left reset */
    cm_event_free(&ev);
}

static void expect_fail_at(const char *text, int64_t now, const char *field, const char *reason)
{
    json_t *j = load(text);
    expect_fail_json(j, now, field, reason);
    json_decref(j);
}

static void expect_fail(const char *text, const char *field, const char *reason)
{
    expect_fail_at(text, NOW, field, reason);
}

static void expect_ok_at(const char *text, int64_t now, cm_event_t *ev)
{
    cm_event_error_t e;
    cm_err_t rc = parse_at(text, now, ev, &e);
    if (rc)
        fail_msg("rejected: %s %s (%s): %s", e.field, e.message, e.reason, text);
}

static void expect_ok(const char *text, cm_event_t *ev) { expect_ok_at(text, NOW, ev); }

/* A click event with one extra top-level member set to `v` (stolen). */
static json_t *click_with(const char *key, json_t *v)
{
    json_t *j = load(CLICK "}");
    json_object_set_new(j, key, v);
    return j;
}

static char *repeat(const char *unit, size_t times)
{
    size_t ul = strlen(unit);
    char *s = malloc(ul * times + 1);
    for (size_t i = 0; i < times; i++)
        memcpy(s + i * ul, unit, ul);
    s[ul * times] = '\0';
    return s;
}

/* Sets key to a string of `n` copies of `unit` and expects ok / too_long. */
static void check_len(const char *key, const char *sub, size_t max, const char *field)
{
    for (int over = 0; over <= 1; over++) {
        char *s = repeat("a", max + (size_t)over);
        json_t *j = load(CLICK "}");
        if (sub) {
            json_t *o = json_object();
            json_object_set_new(o, key, json_string(s));
            json_object_set_new(j, sub, o);
        } else {
            json_object_set_new(j, key, json_string(s));
        }
        if (over) {
            expect_fail_json(j, NOW, field, "too_long");
        } else {
            cm_event_t ev;
            cm_event_error_t e;
            cm_event_init(&ev);
            assert_int_equal(cm_event_from_json(j, &g_lim, NOW, &ev, &e), CM_OK);
            cm_event_free(&ev);
        }
        json_decref(j);
        free(s);
    }
}

static int64_t ts(const char *s)
{
    int64_t ms = -1;
    cm_err_t rc = cm_ts_parse_rfc3339(s, strlen(s), &ms);
    if (rc)
        fail_msg("timestamp rejected: %s", s);
    return ms;
}

static cm_err_t ts_rc(const char *s)
{
    int64_t ms;
    return cm_ts_parse_rfc3339(s, strlen(s), &ms);
}

static void assert_str_eq_null(const char *a, const char *b)
{
    if (!a || !b)
        assert_ptr_equal(a, b);
    else
        assert_string_equal(a, b);
}

static void assert_event_equal(const cm_event_t *a, const cm_event_t *b)
{
    assert_str_eq_null(a->event_id, b->event_id);
    assert_int_equal(a->ts_ms, b->ts_ms);
    assert_int_equal(a->received_at_ms, b->received_at_ms);
    assert_str_eq_null(a->user_id, b->user_id);
    assert_str_eq_null(a->event_type, b->event_type);
    assert_int_equal(a->type, b->type);
    assert_str_eq_null(a->page_url, b->page_url);
    assert_str_eq_null(a->session_id, b->session_id);
    assert_str_eq_null(a->referrer, b->referrer);
    assert_str_eq_null(a->user_agent, b->user_agent);
    assert_str_eq_null(a->ip_address, b->ip_address);
    assert_str_eq_null(a->geo_country, b->geo_country);
    assert_str_eq_null(a->geo_city, b->geo_city);
    assert_str_eq_null(a->device_type, b->device_type);
    assert_str_eq_null(a->device_os, b->device_os);
    assert_int_equal(a->is_bot, b->is_bot);
    assert_str_eq_null(a->product_id, b->product_id);
    assert_str_eq_null(a->category, b->category);
    assert_int_equal(a->quantity, b->quantity);
    assert_int_equal(a->has_price, b->has_price);
    assert_int_equal(a->price_micros, b->price_micros);
}

static const char *FULL =
    "{\"event_id\":\"7f9c24e8-3b12-4fef-91e0-1234567890ab\","
    "\"timestamp\":\"2024-01-15T10:29:59.123456+00:00\",\"user_id\":\"user-42\","
    "\"event_type\":\"page_view\",\"page_url\":\"https://shop.example/p?id=1\","
    "\"session_id\":\"s-1\",\"referrer\":\"https://google.com/\","
    "\"user_agent\":\"Mozilla/5.0\",\"ip_address\":\"203.0.113.7\","
    "\"geo\":{\"country\":\"de\",\"city\":\"Köln\"},"
    "\"device\":{\"type\":\"Mobile\",\"os\":\"Android 14\"},"
    "\"metadata\":{\"product_id\":\"sku-1\",\"category\":\"shoes\",\"quantity\":2,"
    "\"price\":\"19.99\"}}";

/* ---- valid events -------------------------------------------------------- */

static void test_valid_full_page_view(void **state)
{
    cm_event_t ev;
    cm_event_init(&ev);
    expect_ok(FULL, &ev);
    assert_string_equal(ev.event_id, "7f9c24e8-3b12-4fef-91e0-1234567890ab");
    assert_int_equal(ev.ts_ms, NOW - 877);
    assert_string_equal(ev.user_id, "user-42");
    assert_int_equal(ev.type, CM_EV_PAGE_VIEW);
    assert_string_equal(ev.event_type, "page_view");
    assert_string_equal(ev.page_url, "https://shop.example/p?id=1");
    assert_string_equal(ev.session_id, "s-1");
    assert_string_equal(ev.referrer, "https://google.com/");
    assert_string_equal(ev.user_agent, "Mozilla/5.0");
    assert_string_equal(ev.ip_address, "203.0.113.7");
    assert_string_equal(ev.geo_country, "DE");
    assert_string_equal(ev.geo_city, "Köln");
    assert_string_equal(ev.device_type, "mobile");
    assert_string_equal(ev.device_os, "Android 14");
    assert_string_equal(ev.product_id, "sku-1");
    assert_string_equal(ev.category, "shoes");
    assert_int_equal(ev.quantity, 2);
    assert_true(ev.has_price);
    assert_int_equal(ev.price_micros, 19990000);
    assert_int_equal(ev.unknown_fields, 0);
    assert_int_equal(ev.received_at_ms, 0);
    assert_false(ev.is_bot);
    cm_event_free(&ev);
}

static void test_valid_each_type(void **state)
{
    static const struct {
        const char *json;
        int type;
        const char *name;
    } cases[] = {
        {"{" BASE ",\"event_type\":\"page_view\",\"page_url\":\"/\"}", CM_EV_PAGE_VIEW,
         "page_view"},
        {"{" BASE ",\"event_type\":\"product_view\"}", CM_EV_PRODUCT_VIEW, "product_view"},
        {"{" BASE ",\"event_type\":\"add_to_cart\",\"metadata\":{\"quantity\":1}}",
         CM_EV_ADD_TO_CART, "add_to_cart"},
        {"{" BASE ",\"event_type\":\"purchase\",\"metadata\":{\"price\":12.5}}", CM_EV_PURCHASE,
         "purchase"},
        {"{" BASE ",\"event_type\":\"click\"}", CM_EV_CLICK, "click"},
        {"{" BASE ",\"event_type\":\"custom:video.play-2_x\"}", CM_EV_CUSTOM,
         "custom:video.play-2_x"},
    };
    cm_event_t ev;
    cm_event_init(&ev);
    for (size_t i = 0; i < sizeof(cases) / sizeof(cases[0]); i++) {
        expect_ok(cases[i].json, &ev);
        assert_int_equal(ev.type, cases[i].type);
        assert_string_equal(ev.event_type, cases[i].name);
        assert_string_equal(ev.event_id, "e1");
        assert_string_equal(ev.user_id, "u1");
        assert_int_equal(ev.ts_ms, NOW);
    }
    cm_event_free(&ev);
}

static void test_null_and_empty_optional_are_absent(void **state)
{
    cm_event_t ev;
    cm_event_init(&ev);
    expect_ok(CLICK ",\"page_url\":null,\"referrer\":\"\",\"session_id\":null,"
                    "\"ip_address\":\"\",\"geo\":null,\"device\":{\"type\":\"\",\"os\":null},"
                    "\"metadata\":{\"quantity\":null,\"price\":null,\"category\":\"\"}}",
              &ev);
    assert_null(ev.page_url);
    assert_null(ev.referrer);
    assert_null(ev.session_id);
    assert_null(ev.ip_address);
    assert_null(ev.geo_country);
    assert_null(ev.device_type);
    assert_null(ev.device_os);
    assert_null(ev.category);
    assert_int_equal(ev.quantity, 0);
    assert_false(ev.has_price);
    cm_event_free(&ev);
}

/* ---- required fields and types ------------------------------------------- */

static void test_missing_required(void **state)
{
    expect_fail("{\"timestamp\":\"2024-01-15T10:30:00Z\",\"user_id\":\"u\","
                "\"event_type\":\"click\"}",
                "event_id", "missing_field");
    expect_fail("{\"event_id\":\"e\",\"user_id\":\"u\",\"event_type\":\"click\"}", "timestamp",
                "missing_field");
    expect_fail("{\"event_id\":\"e\",\"timestamp\":0,\"event_type\":\"click\"}", "user_id",
                "missing_field");
    expect_fail("{" BASE "}", "event_type", "missing_field");
    expect_fail("{" BASE ",\"event_type\":\"page_view\"}", "page_url", "missing_field");
    expect_fail("{" BASE ",\"event_type\":\"page_view\",\"page_url\":null}", "page_url",
                "missing_field");
    expect_fail("{" BASE ",\"event_type\":\"purchase\"}", "metadata.price", "missing_field");
    expect_fail("{" BASE ",\"event_type\":\"purchase\",\"metadata\":{\"quantity\":1}}",
                "metadata.price", "missing_field");
    expect_fail("{\"event_id\":null,\"timestamp\":0,\"user_id\":\"u\",\"event_type\":\"click\"}",
                "event_id", "missing_field");
}

static void test_required_empty(void **state)
{
    expect_fail("{\"event_id\":\"\",\"timestamp\":0,\"user_id\":\"u\",\"event_type\":\"click\"}",
                "event_id", "bad_value");
    expect_fail("{\"event_id\":\"e\",\"timestamp\":0,\"user_id\":\"\",\"event_type\":\"click\"}",
                "user_id", "bad_value");
    expect_fail("{" BASE ",\"event_type\":\"\"}", "event_type", "bad_value");
    expect_fail("{" BASE ",\"event_type\":\"page_view\",\"page_url\":\"\"}", "page_url",
                "bad_value");
}

static void test_first_failing_field_in_fixed_order(void **state)
{
    /* Key order of the input does not matter: event_id is checked first. */
    expect_fail("{\"user_id\":5,\"event_type\":\"nope\",\"event_id\":7}", "event_id",
                "bad_type");
}

static void test_bad_types(void **state)
{
    static const struct {
        const char *json;
        const char *field;
    } cases[] = {
        {"{\"event_id\":1,\"timestamp\":0,\"user_id\":\"u\",\"event_type\":\"click\"}",
         "event_id"},
        {"{\"event_id\":\"e\",\"timestamp\":0,\"user_id\":[],\"event_type\":\"click\"}",
         "user_id"},
        {"{" BASE ",\"event_type\":5}", "event_type"},
        {"{\"event_id\":\"e\",\"timestamp\":true,\"user_id\":\"u\",\"event_type\":\"click\"}",
         "timestamp"},
        {"{\"event_id\":\"e\",\"timestamp\":{},\"user_id\":\"u\",\"event_type\":\"click\"}",
         "timestamp"},
        {"{\"event_id\":\"e\",\"timestamp\":1705314600000.0,\"user_id\":\"u\","
         "\"event_type\":\"click\"}",
         "timestamp"},
        {CLICK ",\"page_url\":1}", "page_url"},
        {CLICK ",\"session_id\":true}", "session_id"},
        {CLICK ",\"referrer\":{}}", "referrer"},
        {CLICK ",\"user_agent\":1.5}", "user_agent"},
        {CLICK ",\"ip_address\":1}", "ip_address"},
        {CLICK ",\"geo\":\"DE\"}", "geo"},
        {CLICK ",\"geo\":{\"country\":1}}", "geo.country"},
        {CLICK ",\"geo\":{\"city\":[]}}", "geo.city"},
        {CLICK ",\"device\":[]}", "device"},
        {CLICK ",\"device\":{\"type\":1}}", "device.type"},
        {CLICK ",\"device\":{\"os\":false}}", "device.os"},
        {CLICK ",\"metadata\":1}", "metadata"},
        {CLICK ",\"metadata\":{\"product_id\":1}}", "metadata.product_id"},
        {CLICK ",\"metadata\":{\"category\":{}}}", "metadata.category"},
        {CLICK ",\"metadata\":{\"quantity\":\"2\"}}", "metadata.quantity"},
        {CLICK ",\"metadata\":{\"quantity\":2.0}}", "metadata.quantity"},
        {CLICK ",\"metadata\":{\"price\":true}}", "metadata.price"},
        {CLICK ",\"metadata\":{\"price\":[1]}}", "metadata.price"},
        {CLICK ",\"received_at\":\"now\"}", "received_at"},
        {CLICK ",\"is_bot\":\"yes\"}", "is_bot"},
        {"[1,2]", ""},
        {"\"event\"", ""},
    };
    for (size_t i = 0; i < sizeof(cases) / sizeof(cases[0]); i++)
        expect_fail(cases[i].json, cases[i].field, "bad_type");
}

/* ---- string rules -------------------------------------------------------- */

static void test_string_lengths(void **state)
{
    check_len("event_id", NULL, 64, "event_id");
    check_len("user_id", NULL, 128, "user_id");
    check_len("page_url", NULL, 2048, "page_url");
    check_len("referrer", NULL, 2048, "referrer");
    check_len("user_agent", NULL, 2048, "user_agent");
    check_len("session_id", NULL, 128, "session_id");
    check_len("city", "geo", 128, "geo.city");
    check_len("os", "device", 64, "device.os");
    check_len("product_id", "metadata", 256, "metadata.product_id");
    check_len("category", "metadata", 256, "metadata.category");
}

static void test_lengths_count_code_points(void **state)
{
    /* 64 x "é" is 128 bytes but 64 characters: accepted; 65 are not. */
    char *s64 = repeat("é", 64), *s65 = repeat("€", 65);
    json_t *j = click_with("event_id", json_string(s64));
    cm_event_t ev;
    cm_event_error_t e;
    cm_event_init(&ev);
    assert_int_equal(cm_event_from_json(j, &g_lim, NOW, &ev, &e), CM_OK);
    assert_int_equal(strlen(ev.event_id), 128);
    json_decref(j);
    j = click_with("event_id", json_string(s65));
    expect_fail_json(j, NOW, "event_id", "too_long");
    json_decref(j);
    free(s64);
    free(s65);
    cm_event_free(&ev);
}

static void test_string_nul_and_bad_utf8(void **state)
{
    expect_fail(CLICK ",\"referrer\":\"a\\u0000b\"}", "referrer", "bad_value");
    json_t *j = click_with("user_agent", json_stringn_nocheck("ab\xff", 3));
    expect_fail_json(j, NOW, "user_agent", "bad_value");
    json_decref(j);
    j = click_with("user_agent", json_stringn_nocheck("\xed\xa0\x80", 3)); /* surrogate */
    expect_fail_json(j, NOW, "user_agent", "bad_value");
    json_decref(j);
    j = click_with("user_agent", json_stringn_nocheck("\xc0\xaf", 2)); /* overlong */
    expect_fail_json(j, NOW, "user_agent", "bad_value");
    json_decref(j);
}

static void test_event_type_values(void **state)
{
    expect_fail("{" BASE ",\"event_type\":\"pageview\"}", "event_type", "bad_value");
    expect_fail("{" BASE ",\"event_type\":\"PAGE_VIEW\"}", "event_type", "bad_value");
    expect_fail("{" BASE ",\"event_type\":\"custom:\"}", "event_type", "bad_value");
    expect_fail("{" BASE ",\"event_type\":\"custom:bad name\"}", "event_type", "bad_value");
    expect_fail("{" BASE ",\"event_type\":\"custom\"}", "event_type", "bad_value");

    char *name = repeat("n", 64), buf[256];
    cm_event_t ev;
    cm_event_init(&ev);
    snprintf(buf, sizeof(buf), "{" BASE ",\"event_type\":\"custom:%s\"}", name);
    expect_ok(buf, &ev);
    assert_int_equal(ev.type, CM_EV_CUSTOM);
    snprintf(buf, sizeof(buf), "{" BASE ",\"event_type\":\"custom:%sn\"}", name);
    expect_fail(buf, "event_type", "bad_value");
    free(name);
    cm_event_free(&ev);
}

static void test_event_type_parse_name(void **state)
{
    assert_int_equal(cm_event_type_parse("page_view"), CM_EV_PAGE_VIEW);
    assert_int_equal(cm_event_type_parse("product_view"), CM_EV_PRODUCT_VIEW);
    assert_int_equal(cm_event_type_parse("add_to_cart"), CM_EV_ADD_TO_CART);
    assert_int_equal(cm_event_type_parse("purchase"), CM_EV_PURCHASE);
    assert_int_equal(cm_event_type_parse("click"), CM_EV_CLICK);
    assert_int_equal(cm_event_type_parse("custom:x"), CM_EV_CUSTOM);
    assert_int_equal(cm_event_type_parse("custom:"), -1);
    assert_int_equal(cm_event_type_parse("clicks"), -1);
    assert_int_equal(cm_event_type_parse(""), -1);
    assert_int_equal(cm_event_type_parse(NULL), -1);
    for (int t = 0; t < CM_EV_CUSTOM; t++)
        assert_int_equal(cm_event_type_parse(cm_event_type_name((cm_event_type_t)t)), t);
    assert_string_equal(cm_event_type_name(CM_EV_CUSTOM), "custom");
    assert_string_equal(cm_event_type_name(CM_EV__COUNT), "unknown");

    assert_int_equal(cm_device_type_parse("desktop", 7), CM_DEV_DESKTOP);
    assert_int_equal(cm_device_type_parse("BOT", 3), CM_DEV_BOT);
    assert_int_equal(cm_device_type_parse("tv", 2), -1);
    assert_string_equal(cm_device_type_name(CM_DEV_TABLET), "tablet");
    assert_null(cm_device_type_name(CM_DEV_NONE));
}

static void test_ip_address(void **state)
{
    static const char *good[] = {"203.0.113.7", "::1", "2001:db8::8a2e:370:7334",
                                 "::ffff:192.0.2.1",
                                 "ffff:ffff:ffff:ffff:ffff:ffff:255.255.255.255"};
    static const char *bad[] = {"1.2.3", "300.1.1.1", "fe80::1%eth0", "localhost",
                                " 1.2.3.4", "1.2.3.4 ", "2001:db8:::1"};
    char buf[256];
    cm_event_t ev;
    cm_event_init(&ev);
    for (size_t i = 0; i < sizeof(good) / sizeof(good[0]); i++) {
        snprintf(buf, sizeof(buf), CLICK ",\"ip_address\":\"%s\"}", good[i]);
        expect_ok(buf, &ev);
        assert_string_equal(ev.ip_address, good[i]);
    }
    for (size_t i = 0; i < sizeof(bad) / sizeof(bad[0]); i++) {
        snprintf(buf, sizeof(buf), CLICK ",\"ip_address\":\"%s\"}", bad[i]);
        expect_fail(buf, "ip_address", "bad_value");
    }
    char *longip = repeat("1", 100);
    json_t *j = click_with("ip_address", json_string(longip));
    expect_fail_json(j, NOW, "ip_address", "bad_value");
    json_decref(j);
    free(longip);
    cm_event_free(&ev);
}

static void test_geo_country(void **state)
{
    cm_event_t ev;
    cm_event_init(&ev);
    expect_ok(CLICK ",\"geo\":{\"country\":\"us\"}}", &ev);
    assert_string_equal(ev.geo_country, "US");
    expect_ok(CLICK ",\"geo\":{\"country\":\"Gb\"}}", &ev);
    assert_string_equal(ev.geo_country, "GB");
    expect_fail(CLICK ",\"geo\":{\"country\":\"USA\"}}", "geo.country", "bad_value");
    expect_fail(CLICK ",\"geo\":{\"country\":\"U\"}}", "geo.country", "bad_value");
    expect_fail(CLICK ",\"geo\":{\"country\":\"U1\"}}", "geo.country", "bad_value");
    expect_fail(CLICK ",\"geo\":{\"country\":\"\\u00fc\"}}", "geo.country", "bad_value");
    cm_event_free(&ev);
}

static void test_device_type(void **state)
{
    static const char *ok[] = {"desktop", "mobile", "tablet", "bot", "other"};
    char buf[256];
    cm_event_t ev;
    cm_event_init(&ev);
    for (size_t i = 0; i < 5; i++) {
        snprintf(buf, sizeof(buf), CLICK ",\"device\":{\"type\":\"%s\"}}", ok[i]);
        expect_ok(buf, &ev);
        assert_string_equal(ev.device_type, ok[i]);
    }
    expect_ok(CLICK ",\"device\":{\"type\":\"TABLET\"}}", &ev);
    assert_string_equal(ev.device_type, "tablet");
    expect_fail(CLICK ",\"device\":{\"type\":\"phone\"}}", "device.type", "bad_value");
    cm_event_free(&ev);
}

static void test_quantity(void **state)
{
    cm_event_t ev;
    cm_event_init(&ev);
    expect_ok(CLICK ",\"metadata\":{\"quantity\":1}}", &ev);
    assert_int_equal(ev.quantity, 1);
    expect_ok(CLICK ",\"metadata\":{\"quantity\":1000000}}", &ev);
    assert_int_equal(ev.quantity, 1000000);
    expect_fail(CLICK ",\"metadata\":{\"quantity\":0}}", "metadata.quantity", "bad_value");
    expect_fail(CLICK ",\"metadata\":{\"quantity\":-3}}", "metadata.quantity", "bad_value");
    expect_fail(CLICK ",\"metadata\":{\"quantity\":1000001}}", "metadata.quantity",
                "bad_value");
    expect_fail(CLICK ",\"metadata\":{\"quantity\":99999999999999}}", "metadata.quantity",
                "bad_value");
    cm_event_free(&ev);
}

/* ---- prices -------------------------------------------------------------- */

static int64_t price_of(const char *meta_price)
{
    char buf[256];
    cm_event_t ev;
    int64_t p;
    cm_event_init(&ev);
    snprintf(buf, sizeof(buf), "{" BASE ",\"event_type\":\"purchase\",\"metadata\":{\"price\":%s}}",
             meta_price);
    expect_ok(buf, &ev);
    assert_true(ev.has_price);
    p = ev.price_micros;
    cm_event_free(&ev);
    return p;
}

static void expect_price_fail(const char *meta_price)
{
    char buf[256];
    snprintf(buf, sizeof(buf), "{" BASE ",\"event_type\":\"purchase\",\"metadata\":{\"price\":%s}}",
             meta_price);
    expect_fail(buf, "metadata.price", "bad_value");
}

static void test_price_in_events(void **state)
{
    assert_int_equal(price_of("0"), 0);
    assert_int_equal(price_of("0.0"), 0);
    assert_int_equal(price_of("\"0\""), 0);
    assert_int_equal(price_of("12"), 12000000);
    assert_int_equal(price_of("12.5"), 12500000);
    assert_int_equal(price_of("\"12.5\""), 12500000);
    assert_int_equal(price_of("19.99"), 19990000);
    assert_int_equal(price_of("0.1"), 100000);
    assert_int_equal(price_of("0.000001"), 1);
    assert_int_equal(price_of("12.345678"), 12345678);
    assert_int_equal(price_of("\"12.345678\""), 12345678);
    assert_int_equal(price_of("1.5e2"), 150000000);
    assert_int_equal(price_of("\"999999999999.999999\""), 999999999999999999LL);
    assert_int_equal(price_of("\"1000000000000\""), CM_PRICE_MAX_MICROS);
    assert_int_equal(price_of("1000000000000"), CM_PRICE_MAX_MICROS);
    assert_int_equal(price_of("123456789.123456"), 123456789123456LL);

    expect_price_fail("\"12.3456789\"");
    expect_price_fail("12.3456789");
    expect_price_fail("0.0000001");
    expect_price_fail("-1");
    expect_price_fail("-0.5");
    expect_price_fail("\"-1.00\"");
    expect_price_fail("\"abc\"");
    expect_price_fail("\"\"");
    expect_price_fail("\"1e3\"");
    expect_price_fail("\" 1\"");
    expect_price_fail("\"1.\"");
    expect_price_fail("\".5\"");
    expect_price_fail("\"+1\"");
    expect_price_fail("\"1000000000000.000001\"");
    expect_price_fail("1000000000001");
    expect_price_fail("1e300");
    expect_price_fail("\"99999999999999999999999999\"");
}

static void test_price_parse(void **state)
{
    int64_t m = -1;
#define P(s) cm_price_parse(s, strlen(s), &m)
    assert_int_equal(P("0"), CM_OK);
    assert_int_equal(m, 0);
    assert_int_equal(P("12.5"), CM_OK);
    assert_int_equal(m, 12500000);
    assert_int_equal(P("007.50"), CM_OK);
    assert_int_equal(m, 7500000);
    assert_int_equal(P("1.5000000"), CM_OK); /* zeros past 6 decimals are exact */
    assert_int_equal(m, 1500000);
    assert_int_equal(P("-0"), CM_OK);
    assert_int_equal(m, 0);
    assert_int_equal(P("12.3456789"), CM_ERR_INVALID);
    assert_int_equal(P("-1"), CM_ERR_INVALID);
    assert_int_equal(P("1,5"), CM_ERR_PARSE);
    assert_int_equal(P(""), CM_ERR_PARSE);
    assert_int_equal(P("1000000000000.000001"), CM_ERR_TOO_LARGE);
    assert_int_equal(P("18446744073709551616"), CM_ERR_TOO_LARGE);
    /* Length-bounded: the '9' after n is not read. */
    assert_int_equal(cm_price_parse("1.59", 3, &m), CM_OK);
    assert_int_equal(m, 1500000);
    assert_int_equal(cm_price_parse(NULL, 0, &m), CM_ERR_PARSE);
#undef P

    assert_int_equal(cm_price_from_double(0.1, &m), CM_OK);
    assert_int_equal(m, 100000);
    assert_int_equal(cm_price_from_double(19.99, &m), CM_OK);
    assert_int_equal(m, 19990000);
    assert_int_equal(cm_price_from_double(0.3, &m), CM_OK);
    assert_int_equal(m, 300000);
    assert_int_equal(cm_price_from_double(12.3456789, &m), CM_ERR_INVALID);
    assert_int_equal(cm_price_from_double(-0.01, &m), CM_ERR_INVALID);
    assert_int_equal(cm_price_from_double(1e13, &m), CM_ERR_TOO_LARGE);
    assert_int_equal(cm_price_from_double(-0.0, &m), CM_OK);
    assert_int_equal(m, 0);
    /* Every 6-decimal value in a sample reads back exactly from its double. */
    for (int64_t v = 0; v < 5000000000LL; v += 9999991) {
        assert_int_equal(cm_price_from_double((double)v / 1e6, &m), CM_OK);
        assert_int_equal(m, v);
    }
}

/* ---- timestamps ---------------------------------------------------------- */

static void test_ts_parse_basic(void **state)
{
    assert_int_equal(ts("1970-01-01T00:00:00Z"), 0);
    assert_int_equal(ts("2024-01-15T10:30:00Z"), NOW);
    assert_int_equal(ts("2024-01-15t10:30:00z"), NOW);
    assert_int_equal(ts("2024-01-15 10:30:00Z"), NOW);
    assert_int_equal(ts("2024-01-15T12:30:00+02:00"), NOW);
    assert_int_equal(ts("2024-01-15T05:00:00-05:30"), NOW);
    assert_int_equal(ts("2024-01-15T10:30:00-00:00"), NOW);
    assert_int_equal(ts("2024-01-16T10:29:00+23:59"), NOW);
    assert_int_equal(ts("2000-03-01T00:00:00Z"), 951868800000LL);
    assert_int_equal(ts("9999-12-31T23:59:59.999Z"), CM_TS_MAX_MS);
    assert_int_equal(ts("2038-01-19T03:14:08Z"), 2147483648000LL);
}

static void test_ts_parse_fractions(void **state)
{
    static const struct {
        const char *s;
        int64_t ms;
    } cases[] = {
        {"2024-01-15T10:30:00.1Z", NOW + 100},
        {"2024-01-15T10:30:00.12Z", NOW + 120},
        {"2024-01-15T10:30:00.123Z", NOW + 123},
        {"2024-01-15T10:30:00.1234Z", NOW + 123},
        {"2024-01-15T10:30:00.12345Z", NOW + 123},
        {"2024-01-15T10:30:00.123456Z", NOW + 123},
        {"2024-01-15T10:30:00.1234567Z", NOW + 123},
        {"2024-01-15T10:30:00.12345678Z", NOW + 123},
        {"2024-01-15T10:30:00.999999999Z", NOW + 999}, /* truncated, not rounded */
        {"2024-01-15T10:30:00.000000000000000001Z", NOW},
        {"2024-01-15T10:30:00.5+01:00", NOW - 3600000 + 500},
    };
    for (size_t i = 0; i < sizeof(cases) / sizeof(cases[0]); i++)
        assert_int_equal(ts(cases[i].s), cases[i].ms);
}

static void test_ts_parse_calendar(void **state)
{
    assert_int_equal(ts("2024-02-29T00:00:00Z"), ts("2024-03-01T00:00:00Z") - 86400000);
    assert_int_equal(ts("2000-02-29T00:00:00Z"), 951782400000LL);
    assert_int_equal(ts_rc("2023-02-29T00:00:00Z"), CM_ERR_PARSE);
    assert_int_equal(ts_rc("1900-02-29T00:00:00Z"), CM_ERR_PARSE);
    assert_int_equal(ts_rc("2100-02-29T00:00:00Z"), CM_ERR_PARSE);
    assert_int_equal(ts_rc("2024-02-30T00:00:00Z"), CM_ERR_PARSE);
    assert_int_equal(ts_rc("2024-04-31T00:00:00Z"), CM_ERR_PARSE);
    assert_int_equal(ts_rc("2024-12-31T00:00:00Z"), CM_OK);
    assert_int_equal(ts_rc("2024-12-32T00:00:00Z"), CM_ERR_PARSE);
    assert_int_equal(ts_rc("2024-13-01T00:00:00Z"), CM_ERR_PARSE);
    assert_int_equal(ts_rc("2024-00-01T00:00:00Z"), CM_ERR_PARSE);
    assert_int_equal(ts_rc("2024-01-00T00:00:00Z"), CM_ERR_PARSE);
    assert_int_equal(ts_rc("2024-01-15T24:00:00Z"), CM_ERR_PARSE);
    assert_int_equal(ts_rc("2024-01-15T23:60:00Z"), CM_ERR_PARSE);
    assert_int_equal(ts_rc("2024-01-15T23:59:60Z"), CM_ERR_PARSE); /* leap second */
    assert_int_equal(ts_rc("2024-01-15T10:30:00+24:00"), CM_ERR_PARSE);
    assert_int_equal(ts_rc("2024-01-15T10:30:00+05:60"), CM_ERR_PARSE);
}

static void test_ts_parse_garbage(void **state)
{
    static const char *bad[] = {
        "",
        "garbage",
        "2024-01-15",
        "2024-01-15T10:30:00",      /* no offset */
        "2024-01-15T10:30Z",        /* no seconds */
        "2024-1-15T10:30:00Z",      /* one-digit month */
        "2024-01-15X10:30:00Z",     /* bad separator */
        "2024/01/15T10:30:00Z",
        "2024-01-15T10:30:00.Z",    /* empty fraction */
        "2024-01-15T10:30:00,5Z",   /* comma fraction */
        "2024-01-15T10:30:00ZZ",    /* trailing */
        "2024-01-15T10:30:00Z ",
        " 2024-01-15T10:30:00Z",
        "2024-01-15T10:30:00+0100", /* offset without colon */
        "2024-01-15T10:30:00+01",
        "2024-01-15T10:30:00+01:0x",
        "+2024-01-15T10:30:00Z",
        "2024-01-15T10:30:00UTC",
        "1705314600000",
        "２０２４-01-15T10:30:00Z",
    };
    for (size_t i = 0; i < sizeof(bad) / sizeof(bad[0]); i++)
        if (ts_rc(bad[i]) != CM_ERR_PARSE)
            fail_msg("accepted: '%s'", bad[i]);
    /* Length-bounded: a NUL inside is not a terminator. */
    int64_t ms;
    assert_int_equal(cm_ts_parse_rfc3339("2024-01-15T10:30:00Z\0x", 22, &ms), CM_ERR_PARSE);
    assert_int_equal(cm_ts_parse_rfc3339(NULL, 0, &ms), CM_ERR_PARSE);
}

static void test_ts_parse_range(void **state)
{
    assert_int_equal(ts_rc("1969-12-31T23:59:59.999Z"), CM_ERR_INVALID);
    assert_int_equal(ts_rc("1970-01-01T00:30:00+01:00"), CM_ERR_INVALID);
    assert_int_equal(ts("1969-12-31T23:30:00-01:00"), 30 * 60000);
    assert_int_equal(ts_rc("0000-01-01T00:00:00Z"), CM_ERR_INVALID);
    assert_int_equal(ts_rc("9999-12-31T23:59:59.999-00:01"), CM_ERR_INVALID);
    assert_int_equal(ts("9999-12-31T23:59:59+00:01"), CM_TS_MAX_MS - 999 - 60000);
}

static void test_ts_format(void **state)
{
    char buf[32];
    cm_ts_format_rfc3339(0, buf, sizeof(buf));
    assert_string_equal(buf, "1970-01-01T00:00:00.000Z");
    cm_ts_format_rfc3339(NOW + 7, buf, sizeof(buf));
    assert_string_equal(buf, "2024-01-15T10:30:00.007Z");
    cm_ts_format_rfc3339(CM_TS_MAX_MS, buf, sizeof(buf));
    assert_string_equal(buf, "9999-12-31T23:59:59.999Z");
    cm_ts_format_rfc3339(ts("2024-02-29T23:59:59.5Z"), buf, sizeof(buf));
    assert_string_equal(buf, "2024-02-29T23:59:59.500Z");
    cm_ts_format_rfc3339(-1, buf, sizeof(buf));
    assert_string_equal(buf, "1969-12-31T23:59:59.999Z");
    cm_ts_format_rfc3339(NOW, buf, 11); /* too small: truncated, terminated */
    assert_string_equal(buf, "2024-01-15");
    /* format and parse are inverses over the whole range */
    for (int64_t t = 0; t <= CM_TS_MAX_MS; t += 9876543211LL + 17) {
        cm_ts_format_rfc3339(t, buf, sizeof(buf));
        assert_int_equal(strlen(buf), 24);
        assert_int_equal(ts(buf), t);
    }
}

static void test_ts_in_events(void **state)
{
    cm_event_t ev;
    cm_event_init(&ev);
    /* epoch milliseconds as a JSON integer */
    expect_ok("{\"event_id\":\"e\",\"timestamp\":1705314600123,\"user_id\":\"u\","
              "\"event_type\":\"click\"}",
              &ev);
    assert_int_equal(ev.ts_ms, NOW + 123);
    expect_ok("{\"event_id\":\"e\",\"timestamp\":0,\"user_id\":\"u\",\"event_type\":\"click\"}",
              &ev);
    assert_int_equal(ev.ts_ms, 0);
    expect_fail("{\"event_id\":\"e\",\"timestamp\":-1,\"user_id\":\"u\",\"event_type\":\"click\"}",
                "timestamp", "bad_value");
    expect_fail("{\"event_id\":\"e\",\"timestamp\":\"1705314600000\",\"user_id\":\"u\","
                "\"event_type\":\"click\"}",
                "timestamp", "bad_value");
    expect_fail("{\"event_id\":\"e\",\"timestamp\":\"2023-02-29T00:00:00Z\",\"user_id\":\"u\","
                "\"event_type\":\"click\"}",
                "timestamp", "bad_value");
    expect_fail("{\"event_id\":\"e\",\"timestamp\":\"1969-12-31T00:00:00Z\",\"user_id\":\"u\","
                "\"event_type\":\"click\"}",
                "timestamp", "bad_value");
    /* year 9999 boundary, with a clock far enough ahead */
    expect_ok_at("{\"event_id\":\"e\",\"timestamp\":253402300799999,\"user_id\":\"u\","
                 "\"event_type\":\"click\"}",
                 CM_TS_MAX_MS, &ev);
    assert_int_equal(ev.ts_ms, CM_TS_MAX_MS);
    expect_fail_at("{\"event_id\":\"e\",\"timestamp\":253402300800000,\"user_id\":\"u\","
                   "\"event_type\":\"click\"}",
                   CM_TS_MAX_MS, "timestamp", "bad_value");
    expect_fail("{\"event_id\":\"e\",\"timestamp\":9223372036854775807,\"user_id\":\"u\","
                "\"event_type\":\"click\"}",
                "timestamp", "bad_value");
    expect_ok_at("{\"event_id\":\"e\",\"timestamp\":\"9999-12-31T23:59:59.999Z\","
                 "\"user_id\":\"u\",\"event_type\":\"click\"}",
                 CM_TS_MAX_MS, &ev);
    assert_int_equal(ev.ts_ms, CM_TS_MAX_MS);
    cm_event_free(&ev);
}

static void test_future_limit(void **state)
{
    char buf[256];
    cm_event_t ev;
    int64_t lim = g_lim.max_future_ms;
    cm_event_init(&ev);
    /* exactly at the limit: accepted */
    snprintf(buf, sizeof(buf),
             "{\"event_id\":\"e\",\"timestamp\":%lld,\"user_id\":\"u\",\"event_type\":\"click\"}",
             (long long)(NOW + lim));
    expect_ok(buf, &ev);
    /* 1 ms beyond: rejected */
    snprintf(buf, sizeof(buf),
             "{\"event_id\":\"e\",\"timestamp\":%lld,\"user_id\":\"u\",\"event_type\":\"click\"}",
             (long long)(NOW + lim + 1));
    expect_fail(buf, "timestamp", "future_timestamp");
    /* the same as RFC 3339 */
    expect_ok("{\"event_id\":\"e\",\"timestamp\":\"2024-01-15T10:35:00.000Z\",\"user_id\":\"u\","
              "\"event_type\":\"click\"}",
              &ev);
    expect_ok("{\"event_id\":\"e\",\"timestamp\":\"2024-01-15T10:35:00.0009Z\",\"user_id\":\"u\","
              "\"event_type\":\"click\"}",
              &ev); /* truncated to the boundary ms */
    expect_fail("{\"event_id\":\"e\",\"timestamp\":\"2024-01-15T10:35:00.001Z\","
                "\"user_id\":\"u\",\"event_type\":\"click\"}",
                "timestamp", "future_timestamp");
    expect_fail("{\"event_id\":\"e\",\"timestamp\":\"2024-01-15T11:35:00.001+01:00\","
                "\"user_id\":\"u\",\"event_type\":\"click\"}",
                "timestamp", "future_timestamp");
    /* the past is not limited here (lateness is the stream's business) */
    expect_ok("{\"event_id\":\"e\",\"timestamp\":\"1999-01-01T00:00:00Z\",\"user_id\":\"u\","
              "\"event_type\":\"click\"}",
              &ev);
    /* a configured limit is honoured */
    cm_event_limits_t saved = g_lim;
    g_lim.max_future_ms = 0;
    snprintf(buf, sizeof(buf),
             "{\"event_id\":\"e\",\"timestamp\":%lld,\"user_id\":\"u\",\"event_type\":\"click\"}",
             (long long)(NOW + 1));
    expect_fail(buf, "timestamp", "future_timestamp");
    g_lim = saved;
    cm_event_free(&ev);
}

/* ---- unknown fields, depth, size ----------------------------------------- */

static void test_unknown_fields_counted(void **state)
{
    cm_event_t ev;
    cm_event_init(&ev);
    expect_ok(CLICK ",\"foo\":1,\"bar\":{\"x\":[1,2]},"
                    "\"geo\":{\"country\":\"FR\",\"region\":\"IDF\"},"
                    "\"device\":{\"type\":\"bot\",\"model\":\"x\",\"brand\":null},"
                    "\"metadata\":{\"price\":1,\"color\":\"red\"},\"event_Id\":\"x\"}",
              &ev);
    assert_int_equal(ev.unknown_fields, 7);
    assert_string_equal(ev.geo_country, "FR");
    assert_string_equal(ev.device_type, "bot");
    /* counters restart with each event */
    expect_ok(CLICK "}", &ev);
    assert_int_equal(ev.unknown_fields, 0);
    cm_event_free(&ev);
}

/* An array nested so that its innermost level is at `depth` (event = 1). */
static json_t *nested(int depth)
{
    json_t *v = json_array();
    for (int d = depth; d > 2; d--) {
        json_t *outer = json_array();
        json_array_append_new(outer, v);
        v = outer;
    }
    return v;
}

static void test_depth_limit(void **state)
{
    cm_event_t ev;
    cm_event_error_t e;
    json_t *j;

    cm_event_init(&ev);
    j = click_with("extra", nested(16));
    assert_int_equal(cm_event_from_json(j, &g_lim, NOW, &ev, &e), CM_OK);
    assert_int_equal(ev.unknown_fields, 1);
    json_decref(j);

    j = click_with("extra", nested(17));
    expect_fail_json(j, NOW, "extra", "too_deep");
    json_decref(j);

    /* inside a known object, under an unknown key: still the whole event */
    json_t *meta = json_object();
    json_object_set_new(meta, "deep", nested(16)); /* nested one more level */
    j = click_with("metadata", meta);
    expect_fail_json(j, NOW, "metadata", "too_deep");
    json_decref(j);

    cm_event_free(&ev);
}

static void test_depth_limit_configured(void **state)
{
    cm_event_limits_t saved = g_lim;
    cm_event_t ev;
    cm_event_init(&ev);
    g_lim.max_depth = 3;
    expect_ok(CLICK ",\"a\":{\"b\":{\"c\":1}}}", &ev);
    expect_fail(CLICK ",\"a\":{\"b\":{\"c\":{}}}}", "a", "too_deep");
    expect_fail(CLICK ",\"a\":[[[]]]}", "a", "too_deep");
    g_lim.max_depth = 1;
    expect_ok(CLICK ",\"a\":1}", &ev);
    expect_fail(CLICK ",\"geo\":{}}", "geo", "too_deep");
    g_lim = saved;
    cm_event_free(&ev);
}

static void test_json_size(void **state)
{
    json_t *j = load(FULL);
    char *dump = json_dumps(j, JSON_COMPACT);
    assert_int_equal(cm_event_json_size(j), strlen(dump));
    free(dump);
    json_decref(j);
    assert_int_equal(cm_event_json_size(NULL), 0);

    /* how a gateway reports the size rule */
    cm_event_error_t e;
    cm_event_error_set(&e, "", "too_large", "event is %zu bytes (limit %zu)", (size_t)40000,
                       g_lim.max_event_bytes);
    assert_string_equal(e.reason, "too_large");
    assert_string_equal(e.field, "");
    assert_string_equal(e.message, "event is 40000 bytes (limit 32768)");
    cm_event_error_set(NULL, "x", "y", "z"); /* no-op */
}

/* ---- arena, copy, round trip --------------------------------------------- */

static void test_arena_set_str_rebases(void **state)
{
    cm_event_t ev;
    char big[3000];
    cm_event_init(&ev);

    assert_int_equal(cm_event_set_str(&ev, &ev.event_id, "abc", 3), CM_OK);
    assert_int_equal(cm_event_set_str(&ev, &ev.user_id, "user-1xxx", 6), CM_OK);
    const uint8_t *first = ev.arena.data;
    /* grow the arena many times over; earlier fields must follow it */
    memset(big, 'u', sizeof(big));
    assert_int_equal(cm_event_set_str(&ev, &ev.user_agent, big, sizeof(big)), CM_OK);
    assert_int_equal(cm_event_set_str(&ev, &ev.referrer, big, 2000), CM_OK);
    assert_true(ev.arena.data != first || ev.arena.cap >= 5000);
    assert_string_equal(ev.event_id, "abc");
    assert_string_equal(ev.user_id, "user-1");
    assert_int_equal(strlen(ev.user_agent), 3000);
    assert_int_equal(strlen(ev.referrer), 2000);
    assert_true((const uint8_t *)ev.event_id >= ev.arena.data &&
                (const uint8_t *)ev.event_id < ev.arena.data + ev.arena.len);

    /* copying a field onto another from the arena itself, across a grow */
    for (int i = 0; i < 40; i++)
        assert_int_equal(cm_event_set_str(&ev, &ev.page_url, ev.user_agent, 3000), CM_OK);
    assert_int_equal(strlen(ev.page_url), 3000);
    assert_int_equal(memcmp(ev.page_url, big, 3000), 0);
    assert_string_equal(ev.event_id, "abc");

    /* a static string set by hand survives growth untouched */
    ev.device_type = "desktop";
    assert_int_equal(cm_event_set_str(&ev, &ev.category, big, 3000), CM_OK);
    assert_string_equal(ev.device_type, "desktop");

    /* a field outside the struct is set, just not rebased later */
    const char *ext = NULL;
    assert_int_equal(cm_event_set_str(&ev, &ext, "", 0), CM_OK);
    assert_string_equal(ext, "");
    cm_event_free(&ev);
}

static void test_arena_cap(void **state)
{
    cm_event_t ev;
    char *huge = malloc(CM_EVENT_ARENA_MAX + 1);
    memset(huge, 'x', CM_EVENT_ARENA_MAX + 1);
    cm_event_init(&ev);
    assert_int_equal(cm_event_set_str(&ev, &ev.event_id, "e", 1), CM_OK);
    assert_int_equal(cm_event_set_str(&ev, &ev.page_url, huge, CM_EVENT_ARENA_MAX + 1),
                     CM_ERR_TOO_LARGE);
    assert_null(ev.page_url);
    assert_string_equal(ev.event_id, "e");
    assert_int_equal(cm_event_set_str(&ev, &ev.page_url, NULL, 3), CM_ERR_INVALID);
    assert_int_equal(cm_event_set_str(&ev, &ev.page_url, NULL, 0), CM_OK);
    assert_string_equal(ev.page_url, "");
    free(huge);
    cm_event_free(&ev);
    cm_event_free(&ev); /* twice is fine */
    cm_event_free(NULL);
}

static void test_arena_reuse_no_realloc(void **state)
{
    cm_event_t ev;
    json_t *j = load(FULL);
    cm_event_init(&ev);
    assert_int_equal(cm_event_from_json(j, &g_lim, NOW, &ev, NULL), CM_OK);
    const uint8_t *data = ev.arena.data;
    size_t cap = ev.arena.cap;
    for (int i = 0; i < 1000; i++) {
        cm_event_reset(&ev);
        assert_int_equal(cm_event_from_json(j, &g_lim, NOW, &ev, NULL), CM_OK);
    }
    /* steady state: the same block, never grown */
    assert_ptr_equal(ev.arena.data, data);
    assert_int_equal(ev.arena.cap, cap);
    assert_string_equal(ev.geo_city, "Köln");
    json_decref(j);
    cm_event_free(&ev);
}

static void test_copy(void **state)
{
    cm_event_t a, b;
    cm_event_init(&a);
    cm_event_init(&b);
    expect_ok(FULL, &a);
    a.received_at_ms = NOW + 5;
    a.is_bot = true;
    a.device_type = "bot"; /* static, set by enrichment */
    expect_ok(CLICK ",\"referrer\":\"old\"}", &b); /* previous content is dropped */
    assert_int_equal(cm_event_copy(&b, &a), CM_OK);
    assert_event_equal(&a, &b);
    assert_ptr_not_equal(a.event_id, b.event_id);
    assert_true((const uint8_t *)b.device_type >= b.arena.data &&
                (const uint8_t *)b.device_type < b.arena.data + b.arena.len);
    cm_event_free(&a);
    assert_string_equal(b.user_id, "user-42");
    assert_int_equal(cm_event_copy(&b, &b), CM_OK);
    assert_string_equal(b.user_id, "user-42");
    cm_event_free(&b);
}

static void round_trip(const char *text)
{
    cm_event_t a, b;
    cm_event_error_t e;
    json_t *j;
    cm_event_init(&a);
    cm_event_init(&b);
    expect_ok(text, &a);
    a.unknown_fields = 0;
    j = cm_event_to_json(&a);
    assert_non_null(j);
    assert_int_equal(cm_event_from_json(j, &g_lim, NOW, &b, &e), CM_OK);
    assert_int_equal(b.unknown_fields, 0);
    assert_event_equal(&a, &b);
    json_decref(j);
    cm_event_free(&a);
    cm_event_free(&b);
}

static void test_to_json_round_trip(void **state)
{
    round_trip(FULL);
    round_trip(CLICK "}");
    round_trip("{" BASE ",\"event_type\":\"purchase\",\"metadata\":{\"price\":0.1}}");
    round_trip("{" BASE ",\"event_type\":\"purchase\",\"metadata\":{\"price\":\"123456789.000001\","
               "\"quantity\":3}}");
    round_trip("{" BASE ",\"event_type\":\"custom:x\",\"geo\":{\"city\":\"Zürich\"},"
               "\"device\":{\"os\":\"iOS\"},\"ip_address\":\"2001:db8::1\"}");
    round_trip(CLICK ",\"received_at\":1705314600999,\"is_bot\":true,\"foo\":1}");
    round_trip("{\"event_id\":\"e\",\"timestamp\":\"2023-12-31T23:59:59.1234+05:00\","
               "\"user_id\":\"u\",\"event_type\":\"click\"}");
}

static void test_to_json_shape(void **state)
{
    cm_event_t ev;
    cm_event_init(&ev);
    expect_ok(FULL, &ev);
    ev.received_at_ms = NOW;
    json_t *j = cm_event_to_json(&ev);
    assert_non_null(j);
    assert_string_equal(json_string_value(json_object_get(j, "timestamp")),
                        "2024-01-15T10:29:59.123Z");
    assert_int_equal(json_integer_value(json_object_get(j, "received_at")), NOW);
    assert_null(json_object_get(j, "is_bot"));
    assert_string_equal(
        json_string_value(json_object_get(json_object_get(j, "geo"), "country")), "DE");
    assert_true(json_is_real(json_object_get(json_object_get(j, "metadata"), "price")));
    json_decref(j);

    /* minimal event: no empty sub-objects */
    expect_ok(CLICK "}", &ev);
    j = cm_event_to_json(&ev);
    assert_int_equal(json_object_size(j), 4);
    json_decref(j);

    /* a hand-set string that is not UTF-8 cannot be written out */
    assert_int_equal(cm_event_set_str(&ev, &ev.referrer, "\xff", 1), CM_OK);
    assert_null(cm_event_to_json(&ev));
    cm_event_free(&ev);
}

static void test_null_limits_and_error(void **state)
{
    cm_event_t ev;
    json_t *j = load(CLICK "}");
    cm_event_init(&ev);
    assert_int_equal(cm_event_from_json(j, NULL, NOW, &ev, NULL), CM_OK);
    json_decref(j);
    j = load("{}");
    assert_int_equal(cm_event_from_json(j, NULL, NOW, &ev, NULL), CM_ERR_INVALID);
    json_decref(j);
    cm_event_free(&ev);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_valid_full_page_view),
        cmocka_unit_test(test_valid_each_type),
        cmocka_unit_test(test_null_and_empty_optional_are_absent),
        cmocka_unit_test(test_missing_required),
        cmocka_unit_test(test_required_empty),
        cmocka_unit_test(test_first_failing_field_in_fixed_order),
        cmocka_unit_test(test_bad_types),
        cmocka_unit_test(test_string_lengths),
        cmocka_unit_test(test_lengths_count_code_points),
        cmocka_unit_test(test_string_nul_and_bad_utf8),
        cmocka_unit_test(test_event_type_values),
        cmocka_unit_test(test_event_type_parse_name),
        cmocka_unit_test(test_ip_address),
        cmocka_unit_test(test_geo_country),
        cmocka_unit_test(test_device_type),
        cmocka_unit_test(test_quantity),
        cmocka_unit_test(test_price_in_events),
        cmocka_unit_test(test_price_parse),
        cmocka_unit_test(test_ts_parse_basic),
        cmocka_unit_test(test_ts_parse_fractions),
        cmocka_unit_test(test_ts_parse_calendar),
        cmocka_unit_test(test_ts_parse_garbage),
        cmocka_unit_test(test_ts_parse_range),
        cmocka_unit_test(test_ts_format),
        cmocka_unit_test(test_ts_in_events),
        cmocka_unit_test(test_future_limit),
        cmocka_unit_test(test_unknown_fields_counted),
        cmocka_unit_test(test_depth_limit),
        cmocka_unit_test(test_depth_limit_configured),
        cmocka_unit_test(test_json_size),
        cmocka_unit_test(test_arena_set_str_rebases),
        cmocka_unit_test(test_arena_cap),
        cmocka_unit_test(test_arena_reuse_no_realloc),
        cmocka_unit_test(test_copy),
        cmocka_unit_test(test_to_json_round_trip),
        cmocka_unit_test(test_to_json_shape),
        cmocka_unit_test(test_null_limits_and_error),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
