/*
 * test_gw_enrich.c: IP parsing and anonymisation, trusted X-Forwarded-For,
 * user-agent classification, and gw_enrich_event.
 */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <arpa/inet.h>
#include <cmocka.h>

#include "../../services/ingest-gateway/gateway_enrich.h"

static const char *anon(const char *in, char *buf)
{
    gw_ip_t ip;
    if (gw_ip_parse(in, strlen(in), &ip))
        return "ERR";
    gw_ip_anonymize(&ip);
    gw_ip_format(&ip, buf, 64);
    return buf;
}

static void test_ip_anonymize(void **state)
{
    (void)state;
    char b[64];
    assert_string_equal(anon("192.168.1.77", b), "192.168.1.0");
    assert_string_equal(anon(" 10.0.0.255 ", b), "10.0.0.0");
    assert_string_equal(anon("1.2.3.4:8080", b), "1.2.3.0");
    assert_string_equal(anon("2001:db8:1234:5678:9abc:def0:1234:5678", b), "2001:db8:1234::");
    assert_string_equal(anon("[2001:db8:aaaa:bbbb::1]:443", b), "2001:db8:aaaa::");
    assert_string_equal(anon("::ffff:8.8.4.4", b), "8.8.4.0"); /* mapped -> IPv4 */
    assert_string_equal(anon("::1", b), "::");
    assert_string_equal(anon("not-an-ip", b), "ERR");
    assert_string_equal(anon("1.2.3", b), "ERR");
    assert_string_equal(anon("", b), "ERR");
    assert_string_equal(anon("[::1", b), "ERR");
}

static void test_cidrs(void **state)
{
    (void)state;
    gw_cidrs_t l;
    char e[200];
    assert_int_equal(gw_cidrs_parse("10.0.0.0/8, 192.168.1.1 ,fd00::/8,,", &l, e, sizeof(e)),
                     CM_OK);
    assert_int_equal(l.n, 3);
    gw_ip_t ip;
    gw_ip_parse("10.200.3.4", 10, &ip);
    assert_true(gw_cidrs_match(&l, &ip));
    gw_ip_parse("11.0.0.1", 8, &ip);
    assert_false(gw_cidrs_match(&l, &ip));
    gw_ip_parse("192.168.1.1", 11, &ip);
    assert_true(gw_cidrs_match(&l, &ip));
    gw_ip_parse("192.168.1.2", 11, &ip);
    assert_false(gw_cidrs_match(&l, &ip));
    gw_ip_parse("fd12::1", 7, &ip);
    assert_true(gw_cidrs_match(&l, &ip));
    gw_cidrs_free(&l);
    assert_int_equal(gw_cidrs_parse("10.0.0.0/33", &l, e, sizeof(e)), CM_ERR_INVALID);
    assert_int_equal(gw_cidrs_parse("10.0.0.0/", &l, e, sizeof(e)), CM_ERR_INVALID);
    assert_int_equal(gw_cidrs_parse("nope/8", &l, e, sizeof(e)), CM_ERR_INVALID);
    assert_int_equal(gw_cidrs_parse("10.0.0.0/x", &l, e, sizeof(e)), CM_ERR_INVALID);
    assert_int_equal(gw_cidrs_parse(NULL, &l, e, sizeof(e)), CM_OK);
    assert_int_equal(l.n, 0);
}

static const char *client(const char *peer, const char *xff, const char *trusted, char *buf)
{
    gw_cidrs_t l;
    char e[200];
    gw_ip_t p;
    assert_int_equal(gw_cidrs_parse(trusted, &l, e, sizeof(e)), CM_OK);
    gw_ip_parse(peer, strlen(peer), &p);
    gw_ip_t c = gw_client_ip(&p, xff, &l);
    gw_ip_format(&c, buf, 64);
    gw_cidrs_free(&l);
    return buf;
}

static void test_xff(void **state)
{
    (void)state;
    char b[64];
    /* no trusted proxies: XFF ignored */
    assert_string_equal(client("10.0.0.1", "6.6.6.6", NULL, b), "10.0.0.1");
    /* peer not trusted: ignored */
    assert_string_equal(client("9.9.9.9", "6.6.6.6", "10.0.0.0/8", b), "9.9.9.9");
    /* trusted peer: rightmost untrusted entry */
    assert_string_equal(client("10.0.0.1", "6.6.6.6, 7.7.7.7", "10.0.0.0/8", b), "7.7.7.7");
    assert_string_equal(client("10.0.0.1", "6.6.6.6, 7.7.7.7, 10.1.1.1", "10.0.0.0/8", b),
                        "7.7.7.7");
    /* a forged entry left of the real client does not win */
    assert_string_equal(client("10.0.0.1", "1.1.1.1,7.7.7.7", "10.0.0.0/8", b), "7.7.7.7");
    /* garbage stops the walk at the last good address */
    assert_string_equal(client("10.0.0.1", "junk", "10.0.0.0/8", b), "10.0.0.1");
    assert_string_equal(client("10.0.0.1", "7.7.7.7, junk, 10.2.2.2", "10.0.0.0/8", b),
                        "10.2.2.2");
    /* all trusted: the leftmost */
    assert_string_equal(client("10.0.0.1", "10.3.3.3,10.2.2.2", "10.0.0.0/8", b), "10.3.3.3");
    assert_string_equal(client("10.0.0.1", "", "10.0.0.0/8", b), "10.0.0.1");
}

static void check_ua(const char *ua, const char *type, const char *os, bool bot)
{
    gw_ua_t u;
    gw_ua_parse(ua, &u);
    if (!type)
        assert_null(u.device_type);
    else
        assert_string_equal(u.device_type, type);
    if (!os)
        assert_null(u.os);
    else
        assert_string_equal(u.os, os);
    assert_int_equal(u.is_bot, bot);
}

static void test_user_agents(void **state)
{
    (void)state;
    for (int twice = 0; twice < 2; twice++) { /* second round: from the cache */
        check_ua("Mozilla/5.0 (Windows NT 10.0; Win64; x64) AppleWebKit/537.36 Chrome/120.0",
                 "desktop", "Windows", false);
        check_ua("Mozilla/5.0 (Macintosh; Intel Mac OS X 10_15_7) Safari/605.1.15", "desktop",
                 "macOS", false);
        check_ua("Mozilla/5.0 (X11; Linux x86_64; rv:121.0) Gecko/20100101 Firefox/121.0",
                 "desktop", "Linux", false);
        check_ua("Mozilla/5.0 (iPhone; CPU iPhone OS 17_1 like Mac OS X) Mobile/15E148",
                 "mobile", "iOS", false);
        check_ua("Mozilla/5.0 (Linux; Android 14; Pixel 8) Chrome/120 Mobile Safari/537.36",
                 "mobile", "Android", false);
        check_ua("Mozilla/5.0 (iPad; CPU OS 17_1 like Mac OS X) Mobile/15E148", "tablet", "iOS",
                 false);
        check_ua("Mozilla/5.0 (Linux; Android 13; SM-X710) Chrome/120 Safari/537.36", "tablet",
                 "Android", false);
        check_ua("Mozilla/5.0 (compatible; Googlebot/2.1; +http://www.google.com/bot.html)",
                 "bot", NULL, true);
        check_ua("Mozilla/5.0 (Linux; Android 6.0.1; Nexus 5X) Chrome/41 Mobile Safari "
                 "(compatible; Googlebot/2.1)",
                 "bot", "Android", true);
        check_ua("curl/8.4.0", "bot", NULL, true);
        check_ua("python-requests/2.31", "bot", NULL, true);
        check_ua("Mozilla/5.0 (X11; CrOS x86_64 14541.0.0) Chrome/120", "desktop", "ChromeOS",
                 false);
        check_ua("SomethingElse/1.0", "other", NULL, false);
        check_ua("", NULL, NULL, false);
        check_ua(NULL, NULL, NULL, false);
    }
    /* very long UA: not cached, still classified, no overflow */
    char big[5000];
    memset(big, 'a', sizeof(big) - 1);
    big[sizeof(big) - 1] = '\0';
    memcpy(big + 10, "iphone", 6);
    check_ua(big, "mobile", "iOS", false);
}

static void test_enrich_event(void **state)
{
    (void)state;
    cm_event_t ev;
    cm_event_init(&ev);
    json_t *j = json_loads("{\"event_id\":\"e\",\"timestamp\":1,\"user_id\":\"u\","
                           "\"event_type\":\"click\",\"ip_address\":\"2001:db8:1:2:3:4:5:6\","
                           "\"user_agent\":\"Googlebot/2.1\",\"device\":{\"type\":\"desktop\"}}",
                           0, NULL);
    cm_event_error_t err;
    cm_event_limits_t lim = CM_EVENT_LIMITS_DEFAULT;
    assert_int_equal(cm_event_from_json(j, &lim, 1000, &ev, &err), CM_OK);
    json_decref(j);
    gw_enrich_ctx_t c = {.now_ms = 4242, .client_ip = "10.0.0.0", .anonymize = true};
    unsigned flags;
    assert_int_equal(gw_enrich_event(&ev, &c, &flags), CM_OK);
    assert_int_equal(ev.received_at_ms, 4242);
    assert_string_equal(ev.ip_address, "2001:db8:1::");
    assert_string_equal(ev.device_type, "desktop"); /* the client's own is kept */
    assert_null(ev.device_os);
    assert_true(ev.is_bot);
    assert_int_equal(flags, 0);

    /* anonymisation off keeps the address; absent ip takes the peer */
    j = json_loads("{\"event_id\":\"e\",\"timestamp\":1,\"user_id\":\"u\",\"event_type\":\"click\","
                   "\"ip_address\":\"1.2.3.4\"}",
                   0, NULL);
    assert_int_equal(cm_event_from_json(j, &lim, 1000, &ev, &err), CM_OK);
    json_decref(j);
    c.anonymize = false;
    assert_int_equal(gw_enrich_event(&ev, &c, &flags), CM_OK);
    assert_string_equal(ev.ip_address, "1.2.3.4");
    assert_false(ev.is_bot);
    j = json_loads("{\"event_id\":\"e\",\"timestamp\":1,\"user_id\":\"u\",\"event_type\":\"click\"}",
                   0, NULL);
    assert_int_equal(cm_event_from_json(j, &lim, 1000, &ev, &err), CM_OK);
    json_decref(j);
    assert_int_equal(gw_enrich_event(&ev, &c, &flags), CM_OK);
    assert_string_equal(ev.ip_address, "10.0.0.0");
    assert_int_equal(flags, GW_ENRICH_IP_FROM_PEER);
    cm_event_free(&ev);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_ip_anonymize), cmocka_unit_test(test_cidrs),
        cmocka_unit_test(test_xff),          cmocka_unit_test(test_user_agents),
        cmocka_unit_test(test_enrich_event),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
