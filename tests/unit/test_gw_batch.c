/*
 * test_gw_batch.c: the gateway's body handling: splitting, gunzip (bombs,
 * truncation), the strict JSON parser against jansson, and a whole body
 * through gw_batch_process down to Avro.
 */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <cmocka.h>
#include <zlib.h>

#include "cm_avro.h"
#include "cm_time.h"
#include "../../services/ingest-gateway/gateway_batch.h"
#include "../../services/ingest-gateway/gateway_json.h"

#define EV(id)                                                                          \
    "{\"event_id\":\"" id "\",\"timestamp\":\"2024-01-15T10:30:00Z\",\"user_id\":\"u1\"," \
    "\"event_type\":\"click\"}"
#define NOW 1705314600000LL

static size_t split(const char *body, gw_body_format_t fmt, gw_slice_t *sl, size_t max,
                    cm_err_t *err)
{
    size_t n = 0;
    char e[200];
    *err = gw_batch_split(body, strlen(body), fmt, sl, max, &n, e, sizeof(e));
    return n;
}

static void test_split_shapes(void **state)
{
    (void)state;
    gw_slice_t sl[10];
    cm_err_t err;
    const char *one = "  {\"a\":\"x}\\\"]\"}  ";
    assert_int_equal(split(one, GW_BODY_JSON, sl, 10, &err), 1);
    assert_int_equal(err, CM_OK);
    assert_int_equal(sl[0].off, 2);
    assert_int_equal(sl[0].len, strlen("{\"a\":\"x}\\\"]\"}"));
    assert_int_equal(sl[0].depth, 1);

    assert_int_equal(split("[{\"a\":{\"b\":[1]}}, {} ,3,\"s\"]", GW_BODY_JSON, sl, 10, &err), 4);
    assert_int_equal(err, CM_OK);
    assert_int_equal(sl[0].depth, 3);
    assert_int_equal(sl[2].depth, 0);

    /* objects one after another (NDJSON without the header) */
    assert_int_equal(split("{\"a\":1}\n{\"b\":2}\n", GW_BODY_JSON, sl, 10, &err), 2);
    assert_int_equal(err, CM_OK);

    /* NDJSON: a broken line is its own failure */
    assert_int_equal(split("{\"a\":1}\r\n{\"b\":\n\n{\"c\":3}", GW_BODY_NDJSON, sl, 10, &err), 3);
    assert_int_equal(err, CM_OK);
    assert_false(sl[0].broken);
    assert_true(sl[1].broken);
    assert_false(sl[2].broken);
}

static void test_split_errors(void **state)
{
    (void)state;
    gw_slice_t sl[3];
    cm_err_t err;
    const char *bad[] = {"", "   ", "[", "[]", "[{}", "[{},]", "[{}] x", "5", "\"s\"", "[{} {}]",
                         "{\"a\":\"unterminated", NULL};
    for (int i = 0; bad[i]; i++) {
        split(bad[i], GW_BODY_JSON, sl, 3, &err);
        assert_int_equal(err, CM_ERR_PARSE);
    }
    split("[{},{},{},{}]", GW_BODY_JSON, sl, 3, &err);
    assert_int_equal(err, CM_ERR_TOO_LARGE);
    split("{}\n{}\n{}\n{}", GW_BODY_NDJSON, sl, 3, &err);
    assert_int_equal(err, CM_ERR_TOO_LARGE);
}

static void test_split_deep(void **state)
{
    (void)state;
    /* 100 000 levels: counted, not recursed */
    size_t n = 100000;
    char *s = malloc(2 * n + 1);
    memset(s, '[', n);
    memset(s + n, ']', n);
    s[2 * n] = '\0';
    gw_slice_t sl[2];
    cm_err_t err;
    assert_int_equal(split(s, GW_BODY_JSON, sl, 2, &err), 1);
    assert_int_equal(err, CM_OK);
    assert_int_equal(sl[0].depth, 65535); /* capped */
    s[2 * n - 1] = '\0';                  /* unclosed */
    split(s, GW_BODY_JSON, sl, 2, &err);
    assert_int_equal(err, CM_ERR_PARSE);
    free(s);
}

static size_t gz(const void *in, size_t n, uint8_t *out, size_t cap)
{
    z_stream zs;
    memset(&zs, 0, sizeof(zs));
    assert_int_equal(deflateInit2(&zs, 9, Z_DEFLATED, 15 + 16, 8, Z_DEFAULT_STRATEGY), Z_OK);
    zs.next_in = (Bytef *)in;
    zs.avail_in = (uInt)n;
    zs.next_out = out;
    zs.avail_out = (uInt)cap;
    assert_int_equal(deflate(&zs, Z_FINISH), Z_STREAM_END);
    size_t len = cap - zs.avail_out;
    deflateEnd(&zs);
    return len;
}

static void test_gunzip(void **state)
{
    (void)state;
    const char *text = "[" EV("a") "," EV("b") "]";
    uint8_t z[4096];
    size_t zn = gz(text, strlen(text), z, sizeof(z));
    cm_buf_t out;
    char e[200];
    cm_buf_init(&out, 1024);
    assert_int_equal(gw_gunzip(z, zn, &out, e, sizeof(e)), CM_OK);
    assert_int_equal(out.len, strlen(text));
    assert_memory_equal(out.data, text, out.len);

    /* two members */
    uint8_t z2[8192];
    memcpy(z2, z, zn);
    memcpy(z2 + zn, z, zn);
    cm_buf_reset(&out);
    assert_int_equal(gw_gunzip(z2, 2 * zn, &out, e, sizeof(e)), CM_OK);
    assert_int_equal(out.len, 2 * strlen(text));

    /* truncated at every length */
    for (size_t cut = 0; cut < zn; cut++) {
        cm_buf_reset(&out);
        assert_int_equal(gw_gunzip(z, cut, &out, e, sizeof(e)), CM_ERR_PARSE);
        assert_int_equal(out.len, 0);
    }
    /* garbage */
    cm_buf_reset(&out);
    assert_int_equal(gw_gunzip("not gzip at all", 15, &out, e, sizeof(e)), CM_ERR_PARSE);
    cm_buf_free(&out);

    /* a bomb: 64 MiB of zeros against a 1 MiB cap */
    size_t big = 64u << 20;
    uint8_t *zeros = calloc(1, big);
    size_t bcap = big / 100;
    uint8_t *bomb = malloc(bcap);
    size_t bn = gz(zeros, big, bomb, bcap);
    free(zeros);
    cm_buf_init(&out, 1 << 20);
    assert_int_equal(gw_gunzip(bomb, bn, &out, e, sizeof(e)), CM_ERR_TOO_LARGE);
    assert_int_equal(out.len, 0);
    free(bomb);
    /* exactly at the cap is fine */
    uint8_t exact[1 << 16];
    memset(exact, 'x', sizeof(exact));
    uint8_t zx[4096];
    size_t zxn = gz(exact, sizeof(exact), zx, sizeof(zx));
    cm_buf_free(&out);
    cm_buf_init(&out, sizeof(exact));
    assert_int_equal(gw_gunzip(zx, zxn, &out, e, sizeof(e)), CM_OK);
    assert_int_equal(out.len, sizeof(exact));
    cm_buf_free(&out);
}

/* gw_json_parse must agree with jansson (strict mode) on every input. */
static void check_same(const char *s, size_t n)
{
    char e[200];
    json_error_t je;
    json_t *a = gw_json_parse(s, n, 1000, e, sizeof(e));
    json_t *b = json_loadb(s, n, JSON_REJECT_DUPLICATES | JSON_DECODE_ANY, &je);
    if (!!a != !!b)
        fail_msg("disagree on '%.*s': ours %s (%s), jansson %s (%s)", (int)n, s,
                 a ? "ok" : "fail", e, b ? "ok" : "fail", je.text);
    if (a && !json_equal(a, b))
        fail_msg("different values for '%.*s'", (int)n, s);
    json_decref(a);
    json_decref(b);
}

static void test_json_vs_jansson(void **state)
{
    (void)state;
    const char *cases[] = {
        "{}", "[]", "{\"a\":1}", "{\"a\":-0}", "[1.5e3,-2E-2,0.0,1e400]", "[01]", "[1.]",
        "[.5]", "[-]", "[1e]", "[+1]", "[9223372036854775807]", "[9223372036854775808]",
        "[-9223372036854775808]", "[true,false,null]", "[tru]", "[nul]", "\"x\"", "[\"\\u00e9\\n\\t\\\"\\\\\\/\"]",
        "[\"\\ud83d\\ude00\"]", "[\"\\ud83d\"]", "[\"\\ude00\"]", "[\"\\u0000\"]", "[\"\\x\"]",
        "[\"a\tb\"]", "{\"a\":1,\"a\":2}", "{\"a\" 1}", "{\"a\":1,}", "[1,]", "[1 2]",
        "{\"k\":{\"k\":{\"k\":[[[]]]}}}", "  {\"a\" : [ 1 , 2 ] }  ", "{} x", "{\"\\u00e9\":1}",
        "[\"\xc3\xa9\"]", "[\"\xc3\"]", "[\"\xe0\x80\x80\"]", "[\"\xed\xa0\x80\"]",
        "[\"\xf4\x90\x80\x80\"]", "[\"\xf0\x9f\x98\x80\"]", "[\"\xff\"]", "[\"\xc0\xaf\"]",
        "", " ", "{", "[", "\"", "[\"abc", "{\"a\":}", NULL,
    };
    for (int i = 0; cases[i]; i++)
        check_same(cases[i], strlen(cases[i]));
    /* random mutations of a realistic event */
    const char *base = "{\"event_id\":\"e-1\",\"timestamp\":1705314600000,\"user_id\":\"u\\u00e91\","
                       "\"event_type\":\"purchase\",\"metadata\":{\"price\":12.50,\"quantity\":2},"
                       "\"geo\":{\"country\":\"DE\",\"city\":\"K\xc3\xb6ln\"},\"x\":[true,null]}";
    size_t n = strlen(base);
    char buf[512];
    uint32_t seed = 12345;
    const char alphabet[] = "{}[]\":,\\0123456789.eE+-tfnul \xc3\xa9\xff";
    for (int round = 0; round < 20000; round++) {
        memcpy(buf, base, n);
        size_t len = n;
        int edits = 1 + (int)((seed = seed * 1103515245 + 12345) >> 16) % 3;
        for (int k = 0; k < edits; k++) {
            seed = seed * 1103515245 + 12345;
            size_t pos = (seed >> 8) % len;
            seed = seed * 1103515245 + 12345;
            int op = (seed >> 16) % 3;
            char c = alphabet[(seed >> 4) % (sizeof(alphabet) - 1)];
            if (op == 0)
                buf[pos] = c;
            else if (op == 1 && len > 1) {
                memmove(buf + pos, buf + pos + 1, len - pos - 1);
                len--;
            } else if (len < sizeof(buf) - 1) {
                memmove(buf + pos + 1, buf + pos, len - pos);
                buf[pos] = c;
                len++;
            }
        }
        check_same(buf, len);
    }
}

static void test_json_depth(void **state)
{
    (void)state;
    char e[200];
    json_t *j = gw_json_parse("[[[1]]]", 7, 3, e, sizeof(e));
    assert_non_null(j);
    json_decref(j);
    assert_null(gw_json_parse("[[[[1]]]]", 9, 3, e, sizeof(e)));
    assert_non_null(strstr(e, "depth"));
}

static const char *g_reason;
static int g_rejects;
static void on_reject(void *ud, const char *reason)
{
    (void)ud;
    g_reason = reason;
    g_rejects++;
}

static gw_batch_opts_t opts(void)
{
    gw_batch_opts_t o = {.lim = CM_EVENT_LIMITS_DEFAULT, .max_errors = 2, .schema_id = 1,
                         .anonymize = true};
    return o;
}

static void test_process_mixed(void **state)
{
    (void)state;
    gw_json_arena_install();
    gw_batch_opts_t o = opts();
    gw_batch_t b;
    gw_batch_init(&b, &o, on_reject, NULL);
    gw_enrich_ctx_t ec = {.now_ms = NOW, .client_ip = "10.9.8.0", .anonymize = true};
    const char *body =
        "[" EV("a") ",{\"event_id\":\"b\"},7,"
        "{\"event_id\":\"c\",\"timestamp\":1705314600000,\"user_id\":\"u2\",\"event_type\":"
        "\"page_view\",\"page_url\":\"https://x/\",\"ip_address\":\"192.168.7.77\",\"user_agent\":"
        "\"Mozilla/5.0 (iPhone; CPU iPhone OS 17_1 like Mac OS X) Mobile\",\"extra\":1},"
        "{\"event_id\":\"d\",\"timestamp\":\"2024-01-15T10:30:00Z\",\"user_id\":\"u1\","
        "\"event_type\":\"click\",\"metadata\":{\"a\":{\"b\":{\"c\":{\"d\":{\"e\":{\"f\":{\"g\":{"
        "\"h\":{\"i\":{\"j\":{\"k\":{\"l\":{\"m\":{\"n\":{\"o\":{\"p\":1}}}}}}}}}}}}}}}}}]";
    g_rejects = 0;
    assert_int_equal(gw_batch_process(&b, body, strlen(body), false, GW_BODY_JSON, &ec), 0);
    assert_int_equal(b.n_msgs, 2);
    assert_int_equal(b.n_rejected, 3);
    assert_int_equal(g_rejects, 3);
    assert_string_equal(g_reason, "too_deep");
    assert_int_equal(b.n_listed, 2); /* capped */
    assert_int_equal(b.unknown_fields, 1);
    cm_buf_putc(&b.errors, 0);
    assert_non_null(strstr((char *)b.errors.data, "\"index\":1"));
    assert_non_null(strstr((char *)b.errors.data, "\"index\":2"));

    /* decode what would go to Kafka */
    cm_event_t ev;
    cm_event_init(&ev);
    const gw_msg_t *m = &b.msgs[0];
    assert_memory_equal(b.enc.data + m->key_off, "u1", 2);
    assert_int_equal(cm_avro_decode_event(NULL, b.enc.data + m->val_off, m->val_len, &ev, NULL,
                                          NULL),
                     CM_OK);
    assert_string_equal(ev.event_id, "a");
    assert_int_equal(ev.received_at_ms, NOW);
    assert_string_equal(ev.ip_address, "10.9.8.0"); /* the client's, from the peer */
    assert_null(ev.device_type);                    /* no user agent */
    m = &b.msgs[1];
    assert_int_equal(cm_avro_decode_event(NULL, b.enc.data + m->val_off, m->val_len, &ev, NULL,
                                          NULL),
                     CM_OK);
    assert_string_equal(ev.event_id, "c");
    assert_string_equal(ev.ip_address, "192.168.7.0"); /* anonymised */
    assert_string_equal(ev.device_type, "mobile");
    assert_string_equal(ev.device_os, "iOS");
    assert_false(ev.is_bot);
    cm_event_free(&ev);
    gw_batch_free(&b);
}

static void test_process_refusals(void **state)
{
    (void)state;
    gw_batch_opts_t o = opts();
    o.lim.max_request_events = 3;
    o.lim.max_event_bytes = 200;
    gw_batch_t b;
    gw_batch_init(&b, &o, NULL, NULL);
    gw_enrich_ctx_t ec = {.now_ms = NOW};
    const char *body = "[{},{},{},{}]";
    assert_int_equal(gw_batch_process(&b, body, strlen(body), false, GW_BODY_JSON, &ec), 413);
    body = "[{\"a\":1}";
    assert_int_equal(gw_batch_process(&b, body, strlen(body), false, GW_BODY_JSON, &ec), 400);
    body = "[{\"a\":1}]";
    assert_int_equal(gw_batch_process(&b, body, strlen(body), false, GW_BODY_JSON, &ec), 400);
    assert_int_equal(b.n_rejected, 1);
    assert_int_equal(gw_batch_process(&b, "\x1f\x8b\x08", 3, true, GW_BODY_JSON, &ec), 400);
    /* invalid UTF-8 inside an otherwise fine event */
    body = "{\"event_id\":\"\xc3\x28\",\"timestamp\":1,\"user_id\":\"u\",\"event_type\":\"click\"}";
    assert_int_equal(gw_batch_process(&b, body, strlen(body), false, GW_BODY_JSON, &ec), 400);
    cm_buf_putc(&b.errors, 0);
    assert_non_null(strstr((char *)b.errors.data, "invalid_json"));
    /* a too large event */
    char big[400];
    snprintf(big, sizeof(big), "{\"event_id\":\"%0300d\"}", 1);
    assert_int_equal(gw_batch_process(&b, big, strlen(big), false, GW_BODY_JSON, &ec), 400);
    cm_buf_putc(&b.errors, 0);
    assert_non_null(strstr((char *)b.errors.data, "too_large"));
    gw_batch_free(&b);
}

static void test_process_ndjson_gzip(void **state)
{
    (void)state;
    gw_batch_opts_t o = opts();
    gw_batch_t b;
    gw_batch_init(&b, &o, NULL, NULL);
    gw_enrich_ctx_t ec = {.now_ms = NOW, .anonymize = true};
    const char *body = EV("a") "\n" EV("b") "\n" EV("c") "\n";
    uint8_t z[2048];
    size_t zn = gz(body, strlen(body), z, sizeof(z));
    assert_int_equal(gw_batch_process(&b, (char *)z, zn, true, GW_BODY_NDJSON, &ec), 0);
    assert_int_equal(b.n_msgs, 3);
    assert_int_equal(b.n_rejected, 0);
    gw_batch_free(&b);
}

static void test_process_big(void **state)
{
    (void)state;
    gw_batch_opts_t o = opts();
    gw_batch_t b;
    gw_batch_init(&b, &o, NULL, NULL);
    gw_enrich_ctx_t ec = {.now_ms = NOW};
    cm_buf_t body;
    cm_buf_init(&body, 0);
    for (int round = 0; round < 2; round++) { /* small tables, then big ones */
        for (int n = 1; n <= 1001; n += n < 40 ? 1 : 160) {
            cm_buf_reset(&body);
            cm_buf_putc(&body, '[');
            for (int i = 0; i < n; i++)
                cm_buf_printf(&body, "%s" EV("e%d"), i ? "," : "", i);
            cm_buf_putc(&body, ']');
            int st = gw_batch_process(&b, (char *)body.data, body.len, false, GW_BODY_JSON, &ec);
            if (n > 1000) {
                assert_int_equal(st, 413);
            } else {
                assert_int_equal(st, 0);
                assert_int_equal(b.n_msgs, n);
            }
        }
    }
    cm_buf_free(&body);
    gw_batch_free(&b);
}

static void test_json_escape(void **state)
{
    (void)state;
    cm_buf_t b;
    cm_buf_init(&b, 0);
    gw_json_escape(&b, "a\"b\\c\n\x01\xc3\xa9", 100);
    cm_buf_putc(&b, 0);
    assert_string_equal((char *)b.data, "a\\\"b\\\\c\\u000a\\u0001??");
    cm_buf_free(&b);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_split_shapes),     cmocka_unit_test(test_split_errors),
        cmocka_unit_test(test_split_deep),       cmocka_unit_test(test_gunzip),
        cmocka_unit_test(test_json_vs_jansson),  cmocka_unit_test(test_json_depth),
        cmocka_unit_test(test_process_mixed),    cmocka_unit_test(test_process_refusals),
        cmocka_unit_test(test_process_ndjson_gzip), cmocka_unit_test(test_process_big),
        cmocka_unit_test(test_json_escape),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
