/*
 * Unit tests of cm_admin (the admin HTTP server, spoken to over 127.0.0.1 on
 * an ephemeral port with libcurl: loopback only, nothing outside the
 * process) and of cm_signal, the other half of a service's life cycle.
 */
#include <errno.h>
#include <poll.h>
#include <pthread.h>
#include <setjmp.h>
#include <signal.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <sys/socket.h>
#include <unistd.h>

#include <cmocka.h>
#include <curl/curl.h>
#include <jansson.h>

#include "cm_admin.h"
#include "cm_metrics.h"
#include "cm_signal.h"

/* ------------------------------------------------------------- the client */

typedef struct {
    long status;
    char ctype[128];
    char allow[64];
    char *body;
    size_t len;
} http_resp_t;

static size_t on_body(char *p, size_t size, size_t n, void *ud)
{
    http_resp_t *r = ud;
    char *b = realloc(r->body, r->len + size * n + 1);
    assert_non_null(b);
    memcpy(b + r->len, p, size * n);
    r->len += size * n;
    b[r->len] = '\0';
    r->body = b;
    return size * n;
}

static size_t on_header(char *p, size_t size, size_t n, void *ud)
{
    http_resp_t *r = ud;
    if (n * size > 7 && strncasecmp(p, "Allow: ", 7) == 0)
        snprintf(r->allow, sizeof(r->allow), "%.*s", (int)strcspn(p + 7, "\r\n"), p + 7);
    return size * n;
}

/* One request to 127.0.0.1:port; body may be NULL. Fills r (free r->body). */
static void http(const char *method, int port, const char *path, const char *body,
                 size_t body_len, http_resp_t *r)
{
    char url[512];
    char *ct = NULL;
    CURL *c = curl_easy_init();
    assert_non_null(c);
    memset(r, 0, sizeof(*r));
    r->body = calloc(1, 1);
    snprintf(url, sizeof(url), "http://127.0.0.1:%d%s", port, path);
    curl_easy_setopt(c, CURLOPT_URL, url);
    curl_easy_setopt(c, CURLOPT_NOPROXY, "*");
    curl_easy_setopt(c, CURLOPT_TIMEOUT_MS, 5000L);
    curl_easy_setopt(c, CURLOPT_WRITEFUNCTION, on_body);
    curl_easy_setopt(c, CURLOPT_WRITEDATA, r);
    curl_easy_setopt(c, CURLOPT_HEADERFUNCTION, on_header);
    curl_easy_setopt(c, CURLOPT_HEADERDATA, r);
    if (strcmp(method, "HEAD") == 0)
        curl_easy_setopt(c, CURLOPT_NOBODY, 1L);
    else if (strcmp(method, "GET") != 0)
        curl_easy_setopt(c, CURLOPT_CUSTOMREQUEST, method);
    if (body) {
        curl_easy_setopt(c, CURLOPT_POSTFIELDS, body);
        curl_easy_setopt(c, CURLOPT_POSTFIELDSIZE_LARGE, (curl_off_t)body_len);
    }
    assert_int_equal(curl_easy_perform(c), CURLE_OK);
    curl_easy_getinfo(c, CURLINFO_RESPONSE_CODE, &r->status);
    curl_easy_getinfo(c, CURLINFO_CONTENT_TYPE, &ct);
    snprintf(r->ctype, sizeof(r->ctype), "%s", ct ? ct : "");
    curl_easy_cleanup(c);
}

static void get(int port, const char *path, http_resp_t *r)
{
    http("GET", port, path, NULL, 0, r);
}

static cm_admin_t *start(cm_metrics_t *reg)
{
    char errstr[256] = "";
    cm_admin_t *adm = cm_admin_start("127.0.0.1", 0, reg, errstr, sizeof(errstr));
    if (!adm)
        fail_msg("cm_admin_start: %s", errstr);
    assert_true(cm_admin_port(adm) > 0 && cm_admin_port(adm) < 65536);
    return adm;
}

/* ------------------------------------------------------------ built-ins */

static void test_healthz(void **state)
{
    cm_admin_t *adm = start(NULL);
    http_resp_t r;
    get(cm_admin_port(adm), "/healthz", &r);
    assert_int_equal(r.status, 200);
    assert_string_equal(r.ctype, "application/json");
    assert_string_equal(r.body, "{\"status\":\"ok\"}\n");
    free(r.body);
    cm_admin_stop(adm);
}

static void test_metrics_endpoint(void **state)
{
    cm_metrics_t *reg = cm_metrics_new();
    cm_counter_t *c = cm_metrics_counter(reg, "gateway_requests_total", "HTTP requests",
                                         "status", "202", NULL);
    cm_admin_t *adm = start(reg);
    http_resp_t r;
    cm_buf_t want;

    cm_counter_add(c, 41);
    cm_counter_inc(c);
    get(cm_admin_port(adm), "/metrics", &r);
    assert_int_equal(r.status, 200);
    assert_string_equal(r.ctype, "text/plain; version=0.0.4; charset=utf-8");
    cm_buf_init(&want, 0);
    assert_int_equal(cm_metrics_render(reg, &want), CM_OK);
    assert_string_equal(r.body, cm_buf_cstr(&want));
    assert_non_null(strstr(r.body, "gateway_requests_total{status=\"202\"} 42\n"));
    cm_buf_free(&want);
    free(r.body);

    http("HEAD", cm_admin_port(adm), "/metrics", NULL, 0, &r);
    assert_int_equal(r.status, 200);
    assert_int_equal(r.len, 0);
    free(r.body);
    cm_admin_stop(adm);
    cm_metrics_destroy(reg);
}

static void test_metrics_without_registry(void **state)
{
    cm_admin_t *adm = start(NULL);
    http_resp_t r;
    get(cm_admin_port(adm), "/metrics", &r);
    assert_int_equal(r.status, 200);
    assert_int_equal(r.len, 0);
    free(r.body);
    cm_admin_stop(adm);
}

static void test_readyz_flag(void **state)
{
    cm_admin_t *adm = start(NULL);
    int port = cm_admin_port(adm);
    http_resp_t r;

    get(port, "/readyz", &r); /* not ready until told */
    assert_int_equal(r.status, 503);
    assert_string_equal(r.ctype, "application/json");
    assert_string_equal(r.body, "{\"status\":\"not ready\",\"reason\":\"starting\"}\n");
    free(r.body);

    cm_admin_set_ready(adm, true, NULL);
    get(port, "/readyz", &r);
    assert_int_equal(r.status, 200);
    assert_string_equal(r.body, "{\"status\":\"ready\"}\n");
    free(r.body);

    cm_admin_set_ready(adm, false, "kafka unreachable");
    get(port, "/readyz", &r);
    assert_int_equal(r.status, 503);
    assert_string_equal(r.body, "{\"status\":\"not ready\",\"reason\":\"kafka unreachable\"}\n");
    free(r.body);

    /* the reason is escaped, the body stays JSON */
    cm_admin_set_ready(adm, false, "broker \"k1\"\nsaid \\no");
    get(port, "/readyz", &r);
    assert_int_equal(r.status, 503);
    json_t *j = json_loads(r.body, 0, NULL);
    assert_non_null(j);
    assert_string_equal(json_string_value(json_object_get(j, "reason")),
                        "broker \"k1\"\nsaid \\no");
    json_decref(j);
    free(r.body);
    cm_admin_stop(adm);
}

static bool ready_when_positive(void *ud, char *reason, size_t size)
{
    int v = *(int *)ud;
    if (v > 0)
        return true;
    snprintf(reason, size, "%d partitions assigned", v);
    return false;
}

static void test_readyz_callback(void **state)
{
    cm_admin_t *adm = start(NULL);
    int port = cm_admin_port(adm), assigned = 0;
    http_resp_t r;

    cm_admin_set_ready(adm, true, NULL);
    cm_admin_set_ready_fn(adm, ready_when_positive, &assigned);
    get(port, "/readyz", &r);
    assert_int_equal(r.status, 503);
    assert_string_equal(r.body,
                        "{\"status\":\"not ready\",\"reason\":\"0 partitions assigned\"}\n");
    free(r.body);
    assigned = 3;
    get(port, "/readyz", &r);
    assert_int_equal(r.status, 200);
    free(r.body);
    /* back to the flag */
    cm_admin_set_ready_fn(adm, NULL, NULL);
    cm_admin_set_ready(adm, false, "draining");
    get(port, "/readyz", &r);
    assert_int_equal(r.status, 503);
    assert_non_null(strstr(r.body, "\"draining\""));
    free(r.body);
    cm_admin_stop(adm);
}

static void test_not_found_and_methods(void **state)
{
    cm_admin_t *adm = start(NULL);
    int port = cm_admin_port(adm);
    http_resp_t r;

    get(port, "/nope?x=1", &r);
    assert_int_equal(r.status, 404);
    assert_string_equal(r.ctype, "application/json");
    assert_string_equal(r.body, "{\"error\":\"not found\",\"path\":\"/nope\"}\n");
    free(r.body);

    get(port, "/metrics/extra", &r); /* built-ins match exactly */
    assert_int_equal(r.status, 404);
    free(r.body);

    get(port, "/a%22b", &r); /* a quote in the path stays inside the JSON string */
    assert_int_equal(r.status, 404);
    json_t *j = json_loads(r.body, 0, NULL);
    assert_non_null(j);
    json_decref(j);
    free(r.body);

    http("POST", port, "/metrics", "x", 1, &r);
    assert_int_equal(r.status, 405);
    assert_string_equal(r.allow, "GET, HEAD");
    assert_string_equal(r.body, "{\"error\":\"method not allowed\"}\n");
    free(r.body);

    http("DELETE", port, "/healthz", NULL, 0, &r);
    assert_int_equal(r.status, 405);
    free(r.body);
    cm_admin_stop(adm);
}

/* ------------------------------------------------------------- handlers */

static void echo(void *ud, const cm_admin_req_t *req, cm_admin_resp_t *resp)
{
    const char *q = cm_admin_req_arg(req, "q");
    const char *h = cm_admin_req_header(req, "Host");
    resp->status = 201;
    resp->content_type = "text/plain";
    cm_buf_printf(&resp->body, "%s %s %s q=%s host=%s len=%zu body=%s", (const char *)ud,
                  req->method, req->path, q ? q : "-", h ? "yes" : "no", req->body_len,
                  req->body);
}

static void bad_status(void *ud, const cm_admin_req_t *req, cm_admin_resp_t *resp)
{
    resp->status = 42;
}

static void test_handlers(void **state)
{
    cm_admin_t *adm = start(NULL);
    int port = cm_admin_port(adm);
    http_resp_t r;

    assert_int_equal(cm_admin_handle(adm, "/debug", echo, "short"), CM_OK);
    assert_int_equal(cm_admin_handle(adm, "/debug/vars", echo, "long"), CM_OK);
    assert_int_equal(cm_admin_handle(adm, "/", echo, "root"), CM_OK);
    assert_int_equal(cm_admin_handle(adm, "/bad", bad_status, NULL), CM_OK);
    assert_int_equal(cm_admin_handle(adm, "no-slash", echo, NULL), CM_ERR_INVALID);
    assert_int_equal(cm_admin_handle(adm, "/x", NULL, NULL), CM_ERR_INVALID);
    assert_int_equal(cm_admin_handle(NULL, "/x", echo, NULL), CM_ERR_INVALID);

    get(port, "/debug/vars/x?q=1", &r); /* the longest prefix wins */
    assert_int_equal(r.status, 201);
    assert_string_equal(r.ctype, "text/plain");
    assert_string_equal(r.body, "long GET /debug/vars/x q=1 host=yes len=0 body=");
    free(r.body);

    http("POST", port, "/debug/x", "{\"a\":1}", 7, &r);
    assert_int_equal(r.status, 201);
    assert_string_equal(r.body, "short POST /debug/x q=- host=yes len=7 body={\"a\":1}");
    free(r.body);

    get(port, "/other", &r);
    assert_string_equal(r.body, "root GET /other q=- host=yes len=0 body=");
    free(r.body);

    get(port, "/healthz", &r); /* built-ins win over a "/" handler */
    assert_string_equal(r.body, "{\"status\":\"ok\"}\n");
    free(r.body);

    get(port, "/bad", &r);
    assert_int_equal(r.status, 500);
    free(r.body);

    /* a body over the cap never reaches the handler */
    size_t big = CM_ADMIN_MAX_BODY + 1;
    char *body = malloc(big);
    memset(body, 'x', big);
    http("POST", port, "/debug", body, big, &r);
    assert_int_equal(r.status, 413);
    free(r.body);
    http("POST", port, "/debug", body, big - 1, &r); /* exactly the cap is fine */
    assert_int_equal(r.status, 201);
    free(r.body);
    free(body);
    cm_admin_stop(adm);
}

/* ----------------------------------------------------- start and stop */

static void test_start_errors(void **state)
{
    char errstr[256];
    cm_admin_t *adm = start(NULL), *again;

    errstr[0] = '\0';
    again = cm_admin_start("127.0.0.1", cm_admin_port(adm), NULL, errstr, sizeof(errstr));
    assert_null(again);
    assert_non_null(strstr(errstr, "Address already in use"));
    assert_non_null(strstr(errstr, "127.0.0.1"));

    errstr[0] = '\0';
    assert_null(cm_admin_start("127.0.0.1", 70000, NULL, errstr, sizeof(errstr)));
    assert_string_equal(errstr, "admin port 70000: must be between 0 and 65535");
    errstr[0] = '\0';
    assert_null(cm_admin_start("127.0.0.1", -1, NULL, errstr, sizeof(errstr)));
    assert_true(errstr[0]);
    errstr[0] = '\0';
    assert_null(cm_admin_start("300.1.2.3", 0, NULL, errstr, sizeof(errstr)));
    assert_string_equal(errstr, "admin address '300.1.2.3': not an IPv4 or IPv6 address");
    errstr[0] = '\0';
    assert_null(cm_admin_start("localhost", 0, NULL, errstr, sizeof(errstr))); /* no resolver */
    assert_non_null(strstr(errstr, "not an IPv4 or IPv6 address"));
    errstr[0] = '\0';
    assert_null(cm_admin_start("192.0.2.1", 0, NULL, errstr, sizeof(errstr))); /* not ours */
    assert_non_null(strstr(errstr, "cannot listen"));

    cm_admin_stop(adm);
    cm_admin_stop(NULL);
}

static void test_stop_frees_port(void **state)
{
    char errstr[256];
    cm_admin_t *adm = start(NULL);
    int port = cm_admin_port(adm);
    http_resp_t r;
    cm_admin_stop(adm);
    adm = cm_admin_start("127.0.0.1", port, NULL, errstr, sizeof(errstr));
    if (!adm)
        fail_msg("restart on %d: %s", port, errstr);
    assert_int_equal(cm_admin_port(adm), port);
    get(port, "/healthz", &r);
    assert_int_equal(r.status, 200);
    free(r.body);
    cm_admin_stop(adm);
}

static void test_ipv6_loopback(void **state)
{
    char errstr[256], url[128];
    cm_admin_t *adm = cm_admin_start("::1", 0, NULL, errstr, sizeof(errstr));
    long status = 0;
    if (!adm) { /* a host without IPv6 */
        print_message("skipped: %s\n", errstr);
        skip();
    }
    CURL *c = curl_easy_init();
    snprintf(url, sizeof(url), "http://[::1]:%d/healthz", cm_admin_port(adm));
    curl_easy_setopt(c, CURLOPT_URL, url);
    curl_easy_setopt(c, CURLOPT_NOPROXY, "*");
    curl_easy_setopt(c, CURLOPT_TIMEOUT_MS, 5000L);
    curl_easy_setopt(c, CURLOPT_NOBODY, 1L);
    assert_int_equal(curl_easy_perform(c), CURLE_OK);
    curl_easy_getinfo(c, CURLINFO_RESPONSE_CODE, &status);
    assert_int_equal(status, 200);
    curl_easy_cleanup(c);
    cm_admin_stop(adm);
}

/* Scrapes from several clients while counters move. */
typedef struct {
    int port;
    int scrapes;
} scraper_t;

static void *scraper(void *p)
{
    scraper_t *s = p;
    for (int i = 0; i < s->scrapes; i++) {
        http_resp_t r;
        get(s->port, "/metrics", &r);
        assert_int_equal(r.status, 200);
        assert_non_null(strstr(r.body, "# TYPE busy_total counter\n"));
        free(r.body);
    }
    return NULL;
}

static void test_concurrent_scrapes(void **state)
{
    cm_metrics_t *reg = cm_metrics_new();
    cm_counter_t *c = cm_metrics_counter(reg, "busy_total", "busy", NULL);
    cm_admin_t *adm = start(reg);
    scraper_t s = {cm_admin_port(adm), 20};
    pthread_t t[4];
    for (int i = 0; i < 4; i++)
        assert_int_equal(pthread_create(&t[i], NULL, scraper, &s), 0);
    for (int i = 0; i < 100000; i++)
        cm_counter_inc(c);
    for (int i = 0; i < 4; i++)
        pthread_join(t[i], NULL);
    cm_admin_stop(adm);
    cm_metrics_destroy(reg);
}

/* --------------------------------------------------------------- signals */

static bool fd_readable(int fd, int timeout_ms)
{
    struct pollfd p = {.fd = fd, .events = POLLIN};
    return poll(&p, 1, timeout_ms) == 1 && (p.revents & POLLIN);
}

static void test_signal_term(void **state)
{
    char errstr[128];
    assert_int_equal(cm_signal_install(errstr, sizeof(errstr)), CM_OK);
    assert_int_equal(cm_signal_install(errstr, sizeof(errstr)), CM_OK); /* idempotent */
    int fd = cm_signal_fd();
    assert_true(fd >= 0);
    assert_false(cm_signal_stop_requested());
    assert_false(fd_readable(fd, 0));
    assert_false(cm_signal_wait(20));

    assert_int_equal(raise(SIGTERM), 0);
    assert_true(cm_signal_stop_requested());
    assert_int_equal(cm_signal_received(), SIGTERM);
    assert_true(fd_readable(fd, 0));
    assert_true(fd_readable(fd, 0)); /* stays readable for every loop */
    assert_true(cm_signal_wait(-1));

    /* a second signal neither kills nor changes the first one's record */
    assert_int_equal(raise(SIGINT), 0);
    assert_int_equal(cm_signal_received(), SIGTERM);

    cm_signal_uninstall();
    assert_false(cm_signal_stop_requested());
    assert_int_equal(cm_signal_fd(), -1);
}

static void test_signal_int_and_pipe(void **state)
{
    char errstr[128];
    assert_int_equal(cm_signal_install(errstr, sizeof(errstr)), CM_OK);
    assert_int_equal(raise(SIGPIPE), 0); /* ignored: we are still here */
    assert_false(cm_signal_stop_requested());
    assert_int_equal(raise(SIGINT), 0);
    assert_true(cm_signal_stop_requested());
    assert_int_equal(cm_signal_received(), SIGINT);
    cm_signal_uninstall();
}

static void test_signal_request_stop(void **state)
{
    char errstr[128];
    assert_int_equal(cm_signal_install(errstr, sizeof(errstr)), CM_OK);
    cm_signal_request_stop();
    assert_true(cm_signal_stop_requested());
    assert_int_equal(cm_signal_received(), 0);
    assert_true(fd_readable(cm_signal_fd(), 0));
    cm_signal_uninstall();

    /* a stop asked for before install is not lost */
    cm_signal_request_stop();
    assert_int_equal(cm_signal_install(errstr, sizeof(errstr)), CM_OK);
    assert_true(fd_readable(cm_signal_fd(), 0));
    cm_signal_uninstall();
}

static void *poll_loop(void *p)
{
    /* what a service's loop does: wait on its fds plus the stop fd */
    int *woke = p;
    struct pollfd fds[1] = {{.fd = cm_signal_fd(), .events = POLLIN}};
    while (!cm_signal_stop_requested())
        poll(fds, 1, 5000);
    *woke = fd_readable(cm_signal_fd(), 0) ? 1 : -1;
    return NULL;
}

static void test_signal_wakes_other_thread(void **state)
{
    char errstr[128];
    int woke = 0;
    pthread_t t;
    assert_int_equal(cm_signal_install(errstr, sizeof(errstr)), CM_OK);
    assert_int_equal(pthread_create(&t, NULL, poll_loop, &woke), 0);
    usleep(20000);
    assert_int_equal(kill(getpid(), SIGTERM), 0); /* any thread may take it */
    pthread_join(t, NULL);
    assert_int_equal(woke, 1);
    cm_signal_uninstall();
}

static int setup(void **state) { return curl_global_init(CURL_GLOBAL_DEFAULT) ? -1 : 0; }

static int teardown(void **state)
{
    curl_global_cleanup();
    return 0;
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_healthz),
        cmocka_unit_test(test_metrics_endpoint),
        cmocka_unit_test(test_metrics_without_registry),
        cmocka_unit_test(test_readyz_flag),
        cmocka_unit_test(test_readyz_callback),
        cmocka_unit_test(test_not_found_and_methods),
        cmocka_unit_test(test_handlers),
        cmocka_unit_test(test_start_errors),
        cmocka_unit_test(test_stop_frees_port),
        cmocka_unit_test(test_ipv6_loopback),
        cmocka_unit_test(test_concurrent_scrapes),
        cmocka_unit_test(test_signal_term),
        cmocka_unit_test(test_signal_int_and_pipe),
        cmocka_unit_test(test_signal_request_stop),
        cmocka_unit_test(test_signal_wakes_other_thread),
    };
    return cmocka_run_group_tests(tests, setup, teardown);
}
