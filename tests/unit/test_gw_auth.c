/*
 * test_gw_auth.c: write keys, the token bucket, and the CORS allow-list.
 */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include <cmocka.h>

#include "../../services/ingest-gateway/gateway_auth.h"
#include "../../services/ingest-gateway/gateway_cors.h"

static void test_keys(void **state)
{
    (void)state;
    char e[300];
    gw_auth_t *a = gw_auth_new(true, "web:k-web-1, ios : k-ios ,k-bare", NULL, 0, 0, 1000, e,
                               sizeof(e));
    assert_non_null(a);
    assert_int_equal(gw_auth_count(a), 3);
    int i = gw_auth_lookup(a, "k-ios", 5);
    assert_true(i >= 0);
    assert_string_equal(gw_auth_source(a, i), "ios");
    assert_string_equal(gw_auth_source(a, gw_auth_lookup(a, "k-web-1", 7)), "web");
    assert_string_equal(gw_auth_source(a, gw_auth_lookup(a, "k-bare", 6)), "key3");
    assert_int_equal(gw_auth_lookup(a, "k-web", 5), -1);
    assert_int_equal(gw_auth_lookup(a, "k-web-12", 8), -1);
    assert_int_equal(gw_auth_lookup(a, "", 0), -1);
    assert_int_equal(gw_auth_lookup(a, NULL, 0), -1);
    gw_auth_destroy(a);

    /* a file, merged with the list */
    char path[] = "/tmp/test_gw_keysXXXXXX";
    int fd = mkstemp(path);
    const char *txt = "# comment\nandroid k-and\n\nserver:k-srv # trailing\n";
    assert_int_equal(write(fd, txt, strlen(txt)), (ssize_t)strlen(txt));
    close(fd);
    a = gw_auth_new(true, "web:k-web", path, 0, 0, 1000, e, sizeof(e));
    assert_non_null(a);
    assert_int_equal(gw_auth_count(a), 3);
    assert_string_equal(gw_auth_source(a, gw_auth_lookup(a, "k-srv", 5)), "server");
    assert_string_equal(gw_auth_source(a, gw_auth_lookup(a, "k-and", 5)), "android");
    gw_auth_destroy(a);
    unlink(path);

    /* refusals */
    assert_null(gw_auth_new(true, NULL, NULL, 0, 0, 1000, e, sizeof(e)));
    assert_non_null(strstr(e, "GATEWAY_AUTH"));
    assert_null(gw_auth_new(true, "a:k,b:k", NULL, 0, 0, 1000, e, sizeof(e)));
    assert_null(gw_auth_new(true, NULL, "/nonexistent/keys", 0, 0, 1000, e, sizeof(e)));
    assert_null(gw_auth_new(true, "web:", NULL, 0, 0, 1000, e, sizeof(e)));

    /* auth off: everything is the anonymous source */
    a = gw_auth_new(false, NULL, NULL, 0, 0, 1000, e, sizeof(e));
    assert_non_null(a);
    assert_int_equal(gw_auth_lookup(a, NULL, 0), 0);
    assert_string_equal(gw_auth_source(a, 0), "anonymous");
    assert_non_null(gw_auth_bucket(a, 0));
    gw_auth_destroy(a);
    gw_auth_destroy(NULL);
}

static void test_bucket(void **state)
{
    (void)state;
    gw_bucket_t b;
    int ra = 0;
    gw_bucket_init(&b, 100, 200, 0); /* 100/s, burst 200, full */
    assert_true(gw_bucket_take(&b, 150, 0, &ra));
    assert_false(gw_bucket_take(&b, 100, 0, &ra)); /* 50 left */
    assert_int_equal(ra, 1);                        /* 50 more take 0.5 s */
    assert_true(gw_bucket_take(&b, 100, 500000, &ra));
    assert_false(gw_bucket_take(&b, 1, 500000, &ra));
    /* refill caps at the burst */
    assert_true(gw_bucket_take(&b, 200, 100 * 1000000LL, &ra));
    assert_false(gw_bucket_take(&b, 1, 100 * 1000000LL, &ra));
    /* a request larger than the bucket: refused, Retry-After still sane */
    assert_false(gw_bucket_take(&b, 1000, 100 * 1000000LL, &ra));
    assert_true(ra >= 1 && ra <= 3);
    gw_bucket_destroy(&b);
    gw_bucket_init(&b, 0, 0, 0); /* unlimited */
    assert_true(gw_bucket_take(&b, 1e9, 0, &ra));
    gw_bucket_destroy(&b);
    /* burst default through gw_auth_new: max(rate, min_burst) */
    char e[200];
    gw_auth_t *a = gw_auth_new(true, "k1", NULL, 10, 0, 1000, e, sizeof(e));
    gw_bucket_t *pb = gw_auth_bucket(a, 0);
    assert_true(pb->burst == 1000);
    gw_auth_destroy(a);
}

static void test_cors(void **state)
{
    (void)state;
    char e[200];
    gw_cors_t *c = gw_cors_new(NULL, e, sizeof(e));
    assert_non_null(c);
    assert_false(gw_cors_enabled(c));
    assert_false(gw_cors_allowed(c, "https://a.com"));
    gw_cors_destroy(c);

    c = gw_cors_new("https://shop.example.com, https://*.example.org/ ,http://localhost:3000",
                    e, sizeof(e));
    assert_non_null(c);
    assert_true(gw_cors_enabled(c));
    assert_true(gw_cors_allowed(c, "https://shop.example.com"));
    assert_true(gw_cors_allowed(c, "HTTPS://SHOP.EXAMPLE.COM"));
    assert_false(gw_cors_allowed(c, "http://shop.example.com"));
    assert_false(gw_cors_allowed(c, "https://shop.example.com.evil.io"));
    assert_true(gw_cors_allowed(c, "https://a.example.org"));
    assert_true(gw_cors_allowed(c, "https://a.b.example.org"));
    assert_false(gw_cors_allowed(c, "https://example.org"));
    assert_false(gw_cors_allowed(c, "https://evilexample.org"));
    assert_false(gw_cors_allowed(c, "https://x/.example.org"));
    assert_true(gw_cors_allowed(c, "http://localhost:3000"));
    assert_false(gw_cors_allowed(c, "http://localhost:3001"));
    assert_false(gw_cors_allowed(c, "null"));
    assert_false(gw_cors_allowed(c, ""));
    gw_cors_destroy(c);

    c = gw_cors_new("*", e, sizeof(e));
    assert_true(gw_cors_allowed(c, "https://anything.io"));
    gw_cors_destroy(c);
    assert_null(gw_cors_new("shop.example.com", e, sizeof(e)));
    gw_cors_destroy(NULL);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_keys),
        cmocka_unit_test(test_bucket),
        cmocka_unit_test(test_cors),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
