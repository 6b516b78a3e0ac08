/* Unit tests of cm_metrics: the registry and its Prometheus text exposition,
 * checked byte for byte and parsed back line by line. No network. */
#include <math.h>
#include <pthread.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <cmocka.h>

#include "cm_metrics.h"

/* ------------------------------------------------------------ the parser */

#define MAX_LABELS 8

typedef struct {
    char name[128];
    int nlabels;
    char key[MAX_LABELS][64];
    char val[MAX_LABELS][1024]; /* unescaped */
    char value[64];
} sample_t;

/* Parses `name{k="v",...} value` (the line without its newline); false when
 * it breaks the 0.0.4 grammar. */
static bool parse_sample(const char *line, sample_t *s)
{
    const char *p = line;
    size_t n = 0;
    memset(s, 0, sizeof(*s));
    while (*p && *p != '{' && *p != ' ' && n < sizeof(s->name) - 1)
        s->name[n++] = *p++;
    if (!n)
        return false;
    if (*p == '{') {
        p++;
        while (*p != '}') {
            size_t k = 0, v = 0;
            if (s->nlabels == MAX_LABELS)
                return false;
            while (*p && *p != '=' && k < 63)
                s->key[s->nlabels][k++] = *p++;
            if (*p++ != '=' || *p++ != '"' || !k)
                return false;
            while (*p != '"') {
                char c = *p++;
                if (!c || c == '\n')
                    return false;
                if (c == '\\') {
                    c = *p++;
                    if (c == 'n')
                        c = '\n';
                    else if (c != '\\' && c != '"')
                        return false;
                }
                if (v >= 1023)
                    return false;
                s->val[s->nlabels][v++] = c;
            }
            p++;
            s->nlabels++;
            if (*p == ',')
                p++;
            else if (*p != '}')
                return false;
        }
        p++;
    }
    if (*p++ != ' ' || !*p || strlen(p) >= sizeof(s->value) || strchr(p, ' '))
        return false;
    strcpy(s->value, p);
    if (strcmp(p, "NaN") && strcmp(p, "+Inf") && strcmp(p, "-Inf")) {
        char *end;
        strtod(p, &end);
        if (*end)
            return false;
    }
    return true;
}

static const char *label(const sample_t *s, const char *key)
{
    for (int i = 0; i < s->nlabels; i++)
        if (strcmp(s->key[i], key) == 0)
            return s->val[i];
    return NULL;
}

/* The sample's labels other than le, as one string, to group histogram lines. */
static void series_key(const sample_t *s, char *buf, size_t size)
{
    buf[0] = '\0';
    for (int i = 0; i < s->nlabels; i++)
        if (strcmp(s->key[i], "le"))
            snprintf(buf + strlen(buf), size - strlen(buf), "%s=%s;", s->key[i], s->val[i]);
}

/*
 * Checks a whole exposition: every family is one block of `# HELP`, `# TYPE`
 * and its samples; sample names fit the type; a histogram's buckets rise in
 * `le` and in count, end with +Inf, and +Inf equals _count. Returns the
 * number of samples.
 */
static int check_exposition(const char *text)
{
    char seen[256][128];
    int nseen = 0, nsamples = 0;
    char fam[128] = "", type[32] = "", line[4096];
    char hkey[1024] = "";
    double last_le = -INFINITY, last_cum = 0, inf = -1;
    int stage = 0; /* histogram series: 0 buckets, 1 after +Inf, 2 after _sum */
    const char *p = text;

    assert_true(text[0] == '\0' || text[strlen(text) - 1] == '\n');
    while (*p) {
        const char *nl = strchr(p, '\n');
        size_t len = (size_t)(nl - p);
        assert_non_null(nl);
        assert_true(len < sizeof(line));
        memcpy(line, p, len);
        line[len] = '\0';
        p = nl + 1;

        if (strncmp(line, "# HELP ", 7) == 0) {
            char name[128];
            assert_int_equal(sscanf(line + 7, "%127s", name), 1);
            for (int i = 0; i < nseen; i++)
                assert_string_not_equal(seen[i], name); /* one block per family */
            assert_true(nseen < 256);
            strcpy(seen[nseen++], name);
            strcpy(fam, name);
            type[0] = '\0';
            hkey[0] = '\0';
            continue;
        }
        if (strncmp(line, "# TYPE ", 7) == 0) {
            char name[128];
            assert_int_equal(sscanf(line + 7, "%127s %31s", name, type), 2);
            assert_string_equal(name, fam);
            assert_true(strcmp(type, "counter") == 0 || strcmp(type, "gauge") == 0 ||
                        strcmp(type, "histogram") == 0);
            continue;
        }
        assert_true(line[0] != '#');
        sample_t s;
        assert_true(parse_sample(line, &s));
        assert_true(type[0]); /* a sample only after its TYPE */
        nsamples++;
        if (strcmp(type, "histogram") != 0) {
            assert_string_equal(s.name, fam);
            assert_null(label(&s, "le"));
            continue;
        }
        char key[1024], want[160];
        series_key(&s, key, sizeof(key));
        snprintf(want, sizeof(want), "%s_bucket", fam);
        if (strcmp(s.name, want) == 0) {
            const char *le = label(&s, "le");
            double cum = strtod(s.value, NULL);
            assert_non_null(le);
            if (strcmp(key, hkey) != 0) { /* a new series starts with its buckets */
                assert_true(hkey[0] == '\0' || stage == 2);
                snprintf(hkey, sizeof(hkey), "%s", key);
                last_le = -INFINITY;
                last_cum = 0;
                stage = 0;
            }
            assert_int_equal(stage, 0);
            double b = strcmp(le, "+Inf") == 0 ? INFINITY : strtod(le, NULL);
            assert_true(b > last_le);
            assert_true(cum >= last_cum); /* cumulative */
            last_le = b;
            last_cum = cum;
            if (isinf(b)) {
                inf = cum;
                stage = 1;
            }
            continue;
        }
        assert_string_equal(key, hkey);
        snprintf(want, sizeof(want), "%s_sum", fam);
        if (strcmp(s.name, want) == 0) {
            assert_int_equal(stage, 1);
            stage = 2;
            continue;
        }
        snprintf(want, sizeof(want), "%s_count", fam);
        assert_string_equal(s.name, want);
        assert_int_equal(stage, 2);
        assert_true(strtod(s.value, NULL) == inf); /* +Inf equals _count */
        stage = 3;
        hkey[0] = '\0';
    }
    return nsamples;
}

/* Renders, checks the grammar and returns the text (caller frees). */
static char *render(cm_metrics_t *reg)
{
    cm_buf_t b;
    cm_buf_init(&b, 0);
    assert_int_equal(cm_metrics_render(reg, &b), CM_OK);
    char *text = strdup(cm_buf_cstr(&b));
    cm_buf_free(&b);
    check_exposition(text);
    return text;
}

/* The value of the sample of `name` with `labels` (as `k="v",...`), or NAN. */
static double sample_value(const char *text, const char *name, const char *labels)
{
    char prefix[512];
    snprintf(prefix, sizeof(prefix), labels && *labels ? "\n%s{%s} " : "\n%s ", name, labels);
    const char *p = strstr(text, prefix);
    if (!p && strncmp(text, prefix + 1, strlen(prefix + 1)) == 0)
        p = text - 1;
    return p ? strtod(p + strlen(prefix), NULL) : NAN;
}

/* ------------------------------------------------------------------ tests */

static void test_counters_exact(void **state)
{
    cm_metrics_t *reg = cm_metrics_new();
    cm_counter_t *c202 = cm_metrics_counter(reg, "gateway_requests_total",
                                            "HTTP requests by status", "status", "202", NULL);
    cm_counter_t *c400 = cm_metrics_counter(reg, "gateway_requests_total",
                                            "HTTP requests by status", "status", "400", NULL);
    cm_counter_t *plain = cm_metrics_counter(reg, "events_total", "Events seen", NULL);
    cm_counter_inc(c202);
    cm_counter_inc(c202);
    cm_counter_add(c400, 5);
    cm_counter_add(plain, 12345678901234ULL);
    /* the same name and labels give the same handle */
    assert_ptr_equal(cm_metrics_counter(reg, "gateway_requests_total", "ignored", "status",
                                        "202", NULL),
                     c202);
    const char *const pairs[] = {"status", "400", NULL};
    assert_ptr_equal(cm_metrics_counterv(reg, "gateway_requests_total", "x", pairs), c400);
    assert_int_equal(cm_counter_get(c202), 2);

    char *text = render(reg);
    assert_string_equal(text, "# HELP events_total Events seen\n"
                              "# TYPE events_total counter\n"
                              "events_total 12345678901234\n"
                              "# HELP gateway_requests_total HTTP requests by status\n"
                              "# TYPE gateway_requests_total counter\n"
                              "gateway_requests_total{status=\"202\"} 2\n"
                              "gateway_requests_total{status=\"400\"} 5\n");
    free(text);
    assert_int_equal(cm_metrics_errors(reg), 0);
    cm_metrics_destroy(reg);
}

static void test_escaping(void **state)
{
    cm_metrics_t *reg = cm_metrics_new();
    const char *nasty = "a\\b\"c\nd";
    cm_counter_t *c = cm_metrics_counter(reg, "esc_total", "Help with \\ and\nnewline \"q\"",
                                         "path", nasty, "method", "GET", NULL);
    cm_counter_inc(c);
    char *text = render(reg);
    assert_string_equal(text, "# HELP esc_total Help with \\\\ and\\nnewline \"q\"\n"
                              "# TYPE esc_total counter\n"
                              "esc_total{path=\"a\\\\b\\\"c\\nd\",method=\"GET\"} 1\n");
    /* and back */
    const char *line = strstr(text, "esc_total{");
    char buf[256];
    snprintf(buf, sizeof(buf), "%.*s", (int)(strchr(line, '\n') - line), line);
    sample_t s;
    assert_true(parse_sample(buf, &s));
    assert_string_equal(label(&s, "path"), nasty);
    assert_string_equal(label(&s, "method"), "GET");
    assert_string_equal(s.value, "1");
    free(text);
    cm_metrics_destroy(reg);
}

static void test_histogram_exact(void **state)
{
    cm_metrics_t *reg = cm_metrics_new();
    const double bounds[] = {1, 2.5, 5};
    cm_histogram_t *h = cm_metrics_histogram(reg, "latency_seconds", "Latency", bounds, 3,
                                             "route", "/v1/events", NULL);
    const double obs[] = {0.5, 1 /* on a bound: le is inclusive */, 2, 3, 10, 10};
    for (size_t i = 0; i < 6; i++)
        cm_histogram_observe(h, obs[i]);
    assert_int_equal(cm_histogram_count(h), 6);
    assert_true(cm_histogram_sum(h) == 26.5);
    /* another child inherits the buckets */
    cm_histogram_t *h2 = cm_metrics_histogram(reg, "latency_seconds", "Latency", NULL, 0,
                                              "route", "/a", NULL);
    cm_histogram_observe(h2, 0.25);

    char *text = render(reg);
    assert_string_equal(text, "# HELP latency_seconds Latency\n"
                              "# TYPE latency_seconds histogram\n"
                              "latency_seconds_bucket{route=\"/a\",le=\"1\"} 1\n"
                              "latency_seconds_bucket{route=\"/a\",le=\"2.5\"} 1\n"
                              "latency_seconds_bucket{route=\"/a\",le=\"5\"} 1\n"
                              "latency_seconds_bucket{route=\"/a\",le=\"+Inf\"} 1\n"
                              "latency_seconds_sum{route=\"/a\"} 0.25\n"
                              "latency_seconds_count{route=\"/a\"} 1\n"
                              "latency_seconds_bucket{route=\"/v1/events\",le=\"1\"} 2\n"
                              "latency_seconds_bucket{route=\"/v1/events\",le=\"2.5\"} 3\n"
                              "latency_seconds_bucket{route=\"/v1/events\",le=\"5\"} 4\n"
                              "latency_seconds_bucket{route=\"/v1/events\",le=\"+Inf\"} 6\n"
                              "latency_seconds_sum{route=\"/v1/events\"} 26.5\n"
                              "latency_seconds_count{route=\"/v1/events\"} 6\n");
    free(text);
    assert_int_equal(cm_metrics_errors(reg), 0);
    cm_metrics_destroy(reg);
}

static void test_histogram_default_buckets(void **state)
{
    cm_metrics_t *reg = cm_metrics_new();
    cm_histogram_t *h = cm_metrics_histogram(reg, "d_seconds", "d", NULL, 0, NULL);
    cm_histogram_observe(h, 0.007);
    cm_histogram_observe(h, NAN); /* lands in +Inf, as in Prometheus' clients */
    char *text = render(reg);
    assert_int_equal(check_exposition(text), CM_METRICS_DEFAULT_BUCKETS_N + 3);
    assert_non_null(strstr(text, "d_seconds_bucket{le=\"0.005\"} 0\n"
                                 "d_seconds_bucket{le=\"0.01\"} 1\n"));
    assert_non_null(strstr(text, "d_seconds_bucket{le=\"10\"} 1\n"
                                 "d_seconds_bucket{le=\"+Inf\"} 2\n"
                                 "d_seconds_sum NaN\n"
                                 "d_seconds_count 2\n"));
    free(text);
    cm_metrics_destroy(reg);
}

static void test_gauges(void **state)
{
    cm_metrics_t *reg = cm_metrics_new();
    cm_gauge_t *g = cm_metrics_gauge(reg, "g", "a gauge", "k", "a", NULL);
    cm_gauge_t *n = cm_metrics_gauge(reg, "g", "a gauge", "k", "b", NULL);
    cm_gauge_t *i = cm_metrics_gauge(reg, "g", "a gauge", "k", "c", NULL);
    cm_gauge_t *x = cm_metrics_gauge(reg, "g", "a gauge", "k", "d", NULL);
    cm_gauge_t *y = cm_metrics_gauge(reg, "g", "a gauge", "k", "e", NULL);
    cm_gauge_set(g, 0.1);
    cm_gauge_add(g, 0.2); /* 0.30000000000000004: needs 17 digits */
    cm_gauge_set(n, -2.5);
    cm_gauge_set_int(i, 4503599627370496LL); /* 2^52: still exact after +1 */
    cm_gauge_inc(i);
    cm_gauge_dec(i);
    cm_gauge_set(x, INFINITY);
    cm_gauge_set(y, 1e21);
    assert_true(cm_gauge_get(n) == -2.5);

    char *text = render(reg);
    assert_string_equal(text, "# HELP g a gauge\n"
                              "# TYPE g gauge\n"
                              "g{k=\"a\"} 0.30000000000000004\n"
                              "g{k=\"b\"} -2.5\n"
                              "g{k=\"c\"} 4503599627370496\n"
                              "g{k=\"d\"} +Inf\n"
                              "g{k=\"e\"} 1e+21\n");
    free(text);
    cm_gauge_set(x, -INFINITY);
    cm_gauge_set(y, NAN);
    text = render(reg);
    assert_non_null(strstr(text, "g{k=\"d\"} -Inf\ng{k=\"e\"} NaN\n"));
    free(text);
    cm_metrics_destroy(reg);
}

static void test_sorted_families_and_series(void **state)
{
    cm_metrics_t *reg = cm_metrics_new();
    cm_counter_inc(cm_metrics_counter(reg, "zeta_total", "z", NULL));
    cm_gauge_set(cm_metrics_gauge(reg, "alpha", "a", "p", "2", NULL), 2);
    cm_gauge_set(cm_metrics_gauge(reg, "alpha", "a", "p", "10", NULL), 10);
    cm_gauge_set(cm_metrics_gauge(reg, "alpha", "a", "p", "1", NULL), 1);
    cm_counter_inc(cm_metrics_counter(reg, "mid_total", "m", NULL));
    char *text = render(reg);
    assert_string_equal(text, "# HELP alpha a\n# TYPE alpha gauge\n"
                              "alpha{p=\"1\"} 1\nalpha{p=\"10\"} 10\nalpha{p=\"2\"} 2\n"
                              "# HELP mid_total m\n# TYPE mid_total counter\nmid_total 1\n"
                              "# HELP zeta_total z\n# TYPE zeta_total counter\nzeta_total 1\n");
    free(text);
    cm_metrics_destroy(reg);
}

static double read_int(void *ud) { return (double)*(int *)ud; }

static void test_callbacks(void **state)
{
    cm_metrics_t *reg = cm_metrics_new();
    int depth = 7, total = 1000, other = 3;
    assert_int_equal(cm_metrics_gauge_fn(reg, "queue_depth", "Queued", read_int, &depth,
                                         "queue", "in", NULL),
                     CM_OK);
    assert_int_equal(cm_metrics_gauge_fn(reg, "queue_depth", "Queued", read_int, &other,
                                         "queue", "out", NULL),
                     CM_OK);
    assert_int_equal(cm_metrics_counter_fn(reg, "rdkafka_tx_total", "Sent", read_int, &total,
                                           NULL),
                     CM_OK);
    /* a stored series may share the family */
    cm_gauge_set(cm_metrics_gauge(reg, "queue_depth", "Queued", "queue", "stored", NULL), 1);

    char *text = render(reg);
    assert_true(sample_value(text, "queue_depth", "queue=\"in\"") == 7);
    assert_true(sample_value(text, "rdkafka_tx_total", NULL) == 1000);
    free(text);

    depth = 9;
    text = render(reg);
    assert_true(sample_value(text, "queue_depth", "queue=\"in\"") == 9);
    free(text);

    /* registering again replaces the callback */
    assert_int_equal(cm_metrics_gauge_fn(reg, "queue_depth", "Queued", read_int, &total,
                                         "queue", "in", NULL),
                     CM_OK);
    text = render(reg);
    assert_true(sample_value(text, "queue_depth", "queue=\"in\"") == 1000);
    free(text);

    /* unbind removes every series of that ud, and a family left empty */
    assert_int_equal(cm_metrics_unbind(reg, &total), 2);
    text = render(reg);
    assert_string_equal(text, "# HELP queue_depth Queued\n# TYPE queue_depth gauge\n"
                              "queue_depth{queue=\"out\"} 3\n"
                              "queue_depth{queue=\"stored\"} 1\n");
    free(text);
    assert_int_equal(cm_metrics_unbind(reg, &total), 0);
    assert_int_equal(cm_metrics_errors(reg), 0);
    cm_metrics_destroy(reg);
}

static void test_remove(void **state)
{
    cm_metrics_t *reg = cm_metrics_new();
    cm_gauge_t *p0 = cm_metrics_gauge(reg, "lag", "Lag", "partition", "0", NULL);
    cm_gauge_t *p1 = cm_metrics_gauge(reg, "lag", "Lag", "partition", "1", NULL);
    cm_counter_t *c = cm_metrics_counter(reg, "c_total", "c", NULL);
    cm_histogram_t *h = cm_metrics_histogram(reg, "h", "h", NULL, 0, NULL);
    cm_gauge_set(p0, 5);
    cm_gauge_set(p1, 6);
    cm_gauge_remove(reg, p0);
    cm_counter_remove(reg, c);
    cm_histogram_remove(reg, h);
    char *text = render(reg);
    assert_string_equal(text, "# HELP lag Lag\n# TYPE lag gauge\nlag{partition=\"1\"} 6\n");
    free(text);
    /* a removed series comes back fresh */
    p0 = cm_metrics_gauge(reg, "lag", "Lag", "partition", "0", NULL);
    assert_true(cm_gauge_get(p0) == 0);
    cm_gauge_remove(reg, NULL);
    cm_metrics_destroy(reg);
}

static void test_rejections(void **state)
{
    cm_metrics_t *reg = cm_metrics_new();
    const double up[] = {1, 2}, down[] = {2, 1}, nan[] = {1, NAN}, other[] = {1, 3};
    size_t errors = 0;
    cm_counter_t *c;

    cm_counter_inc(cm_metrics_counter(reg, "ok_total", "fine", "a", "1", NULL));
    cm_histogram_observe(cm_metrics_histogram(reg, "hist", "h", up, 2, NULL), 1);
    cm_gauge_set(cm_metrics_gauge(reg, "fn_gauge", "f", NULL), 1);
    char *before = render(reg);

#define REJECTED(expr)                                                                     \
    do {                                                                                   \
        expr;                                                                              \
        assert_int_equal(cm_metrics_errors(reg), ++errors);                                \
    } while (0)
    REJECTED(c = cm_metrics_counter(reg, "9bad", "x", NULL));
    cm_counter_inc(c); /* a detached series takes updates */
    REJECTED(cm_metrics_counter(reg, "bad-name", "x", NULL));
    REJECTED(cm_metrics_counter(reg, "", "x", NULL));
    REJECTED(cm_metrics_counter(reg, NULL, "x", NULL));
    REJECTED(cm_metrics_counter(reg, "x_total", "x", "__reserved", "v", NULL));
    REJECTED(cm_metrics_counter(reg, "x_total", "x", "1a", "v", NULL));
    REJECTED(cm_metrics_counter(reg, "x_total", "x", "a:b", "v", NULL));
    REJECTED(cm_metrics_counter(reg, "x_total", "x", "a", "1", "a", "2", NULL));
    REJECTED(cm_metrics_counter(reg, "x_total", "x", "a", NULL));
    REJECTED(cm_metrics_gauge(reg, "ok_total", "type clash", "a", "1", NULL));
    REJECTED(cm_metrics_counter(reg, "ok_total", "fine", "b", "1", NULL));
    REJECTED(cm_metrics_counter(reg, "ok_total", "fine", NULL));
    REJECTED(cm_metrics_counter(reg, "ok_total", "fine", "a", "1", "b", "2", NULL));
    REJECTED(cm_histogram_observe(cm_metrics_histogram(reg, "h2", "h", up, 2, "le", "1", NULL),
                                  3));
    REJECTED(cm_metrics_histogram(reg, "h2", "h", down, 2, NULL));
    REJECTED(cm_metrics_histogram(reg, "h2", "h", nan, 2, NULL));
    REJECTED(cm_metrics_histogram(reg, "h2", "h", up, 0, NULL));
    REJECTED(cm_metrics_histogram(reg, "hist", "h", other, 2, NULL));
    REJECTED(cm_metrics_histogram(reg, "hist", "h", up, 1, NULL));
    REJECTED(assert_int_equal(cm_metrics_gauge_fn(reg, "fn_gauge", "f", read_int, &errors,
                                                  NULL),
                              CM_ERR_INVALID)); /* a stored series is there */
    REJECTED(assert_int_equal(cm_metrics_gauge_fn(reg, "g2", "f", NULL, NULL, NULL),
                              CM_ERR_INVALID));
    assert_int_equal(cm_metrics_gauge_fn(reg, "g3", "f", read_int, &errors, NULL), CM_OK);
    REJECTED(cm_metrics_gauge(reg, "g3", "f", NULL)); /* a callback is there */
#undef REJECTED

    /* the same buckets again, or none, are fine */
    cm_histogram_t *h = cm_metrics_histogram(reg, "hist", "h", up, 2, NULL);
    assert_ptr_equal(cm_metrics_histogram(reg, "hist", "h", NULL, 0, NULL), h);
    assert_int_equal(cm_metrics_errors(reg), errors);
    assert_int_equal(cm_metrics_unbind(reg, &errors), 1);

    char *after = render(reg);
    assert_string_equal(before, after); /* nothing rejected is exported */
    free(before);
    free(after);
    cm_metrics_destroy(reg);

    /* a NULL registry still gives a usable handle */
    cm_counter_inc(cm_metrics_counter(NULL, "n_total", "n", NULL));
    cm_metrics_destroy(NULL);
    assert_int_equal(cm_metrics_render(NULL, NULL), CM_ERR_INVALID);
}

static void test_label_value_limits(void **state)
{
    cm_metrics_t *reg = cm_metrics_new();
    char longv[400];
    /* 255 ASCII bytes, then a 2-byte character that would cross the cap */
    memset(longv, 'x', 255);
    strcpy(longv + 255, "\xc3\xa9tail");
    cm_counter_inc(cm_metrics_counter(reg, "l_total", "l", "v", longv, NULL));
    cm_counter_inc(cm_metrics_counter(reg, "u_total", "u", "v", "caf\xc3\xa9 \xff\xfe ok", NULL));
    cm_counter_inc(cm_metrics_counter(reg, "u_total", "u", "v", "\xe2\x82", NULL));
    char *text = render(reg);
    char want[300];
    snprintf(want, sizeof(want), "l_total{v=\"%.255s\"} 1\n", longv);
    assert_non_null(strstr(text, want));
    assert_non_null(strstr(text, "u_total{v=\"caf\xc3\xa9 ?? ok\"} 1\n"));
    assert_non_null(strstr(text, "u_total{v=\"??\"} 1\n"));
    free(text);
    cm_metrics_destroy(reg);
}

static void test_series_cap(void **state)
{
    cm_metrics_t *reg = cm_metrics_new();
    char v[32];
    for (int i = 0; i < CM_METRICS_MAX_SERIES; i++) {
        snprintf(v, sizeof(v), "%d", i);
        cm_counter_inc(cm_metrics_counter(reg, "many_total", "m", "id", v, NULL));
    }
    assert_int_equal(cm_metrics_errors(reg), 0);
    cm_counter_t *over = cm_metrics_counter(reg, "many_total", "m", "id", "one-more", NULL);
    cm_counter_inc(over);
    assert_int_equal(cm_metrics_errors(reg), 1);
    /* an existing one is still found */
    cm_counter_inc(cm_metrics_counter(reg, "many_total", "m", "id", "42", NULL));
    assert_int_equal(cm_metrics_errors(reg), 1);
    char *text = render(reg);
    assert_int_equal(check_exposition(text), CM_METRICS_MAX_SERIES);
    assert_null(strstr(text, "one-more"));
    assert_non_null(strstr(text, "many_total{id=\"42\"} 2\n"));
    free(text);
    cm_metrics_destroy(reg);
}

static void test_bucket_helpers(void **state)
{
    double b[4];
    assert_int_equal(cm_metrics_buckets_exp(0.001, 10, 4, b), CM_OK);
    assert_true(b[0] == 0.001 && fabs(b[3] - 1) < 1e-12);
    assert_int_equal(cm_metrics_buckets_linear(10, 5, 3, b), CM_OK);
    assert_true(b[0] == 10 && b[1] == 15 && b[2] == 20);
    assert_int_equal(cm_metrics_buckets_exp(0, 2, 3, b), CM_ERR_INVALID);
    assert_int_equal(cm_metrics_buckets_exp(1, 1, 3, b), CM_ERR_INVALID);
    assert_int_equal(cm_metrics_buckets_exp(1, 2, 0, b), CM_ERR_INVALID);
    assert_int_equal(cm_metrics_buckets_linear(0, 0, 3, b), CM_ERR_INVALID);
}

static void test_process_metrics(void **state)
{
    cm_metrics_t *reg = cm_metrics_new();
    assert_int_equal(cm_metrics_register_process(reg), CM_OK);
    char *text = render(reg);
    assert_true(sample_value(text, "process_start_time_seconds", NULL) > 1.6e9);
    assert_true(sample_value(text, "process_resident_memory_bytes", NULL) > 0);
    assert_true(sample_value(text, "process_cpu_seconds_total", NULL) >= 0);
    assert_true(sample_value(text, "process_open_fds", NULL) >= 3);
    assert_non_null(strstr(text, "# TYPE process_cpu_seconds_total counter\n"));
    free(text);
    assert_int_equal(cm_metrics_unbind(reg, NULL), 0); /* not bound to NULL */
    cm_metrics_destroy(reg);
}

static void test_render_cap(void **state)
{
    cm_metrics_t *reg = cm_metrics_new();
    cm_buf_t b;
    cm_counter_inc(cm_metrics_counter(reg, "a_rather_long_metric_name_total", "help text", NULL));
    cm_buf_init(&b, 32);
    assert_int_equal(cm_metrics_render(reg, &b), CM_ERR_TOO_LARGE);
    cm_buf_free(&b);
    cm_metrics_destroy(reg);
}

/* ------------------------------------------------------------ concurrency */

#define WORKERS 4
#define ROUNDS 50000

typedef struct {
    cm_metrics_t *reg;
    cm_counter_t *c;
    cm_histogram_t *h;
    cm_gauge_t *g;
    int id;
} worker_t;

static atomic_bool stop_scraping;

static void *work(void *p)
{
    worker_t *w = p;
    char id[8];
    snprintf(id, sizeof(id), "%d", w->id);
    /* creating series while another thread renders is allowed too */
    cm_counter_t *own = cm_metrics_counter(w->reg, "own_total", "per worker", "w", id, NULL);
    for (int i = 0; i < ROUNDS; i++) {
        cm_counter_inc(w->c);
        cm_counter_inc(own);
        cm_histogram_observe(w->h, (double)(i % 4));
        cm_gauge_inc(w->g);
    }
    return NULL;
}

static void *scrape(void *p)
{
    cm_metrics_t *reg = p;
    double last = 0;
    int scrapes = 0;
    while (!atomic_load(&stop_scraping) || scrapes < 3) {
        char *text = render(reg); /* checks the whole grammar, +Inf == _count */
        double v = sample_value(text, "shared_total", NULL);
        assert_true(v >= last); /* a counter never goes back */
        last = v;
        free(text);
        scrapes++;
    }
    return NULL;
}

static void test_concurrent_scrape(void **state)
{
    cm_metrics_t *reg = cm_metrics_new();
    const double bounds[] = {0.5, 1.5, 2.5};
    worker_t w[WORKERS];
    pthread_t t[WORKERS], s;
    cm_counter_t *c = cm_metrics_counter(reg, "shared_total", "shared", NULL);
    cm_histogram_t *h = cm_metrics_histogram(reg, "obs", "obs", bounds, 3, NULL);
    cm_gauge_t *g = cm_metrics_gauge(reg, "level", "level", NULL);

    atomic_store(&stop_scraping, false);
    assert_int_equal(pthread_create(&s, NULL, scrape, reg), 0);
    for (int i = 0; i < WORKERS; i++) {
        w[i] = (worker_t){reg, c, h, g, i};
        assert_int_equal(pthread_create(&t[i], NULL, work, &w[i]), 0);
    }
    for (int i = 0; i < WORKERS; i++)
        pthread_join(t[i], NULL);
    atomic_store(&stop_scraping, true);
    pthread_join(s, NULL);

    assert_int_equal(cm_counter_get(c), (uint64_t)WORKERS * ROUNDS);
    assert_int_equal(cm_histogram_count(h), (uint64_t)WORKERS * ROUNDS);
    /* 0+1+2+3 per four observations; exact in a double at this size */
    assert_true(cm_histogram_sum(h) == (double)WORKERS * ROUNDS / 4 * 6);
    assert_true(cm_gauge_get(g) == (double)WORKERS * ROUNDS);
    char *text = render(reg);
    assert_true(sample_value(text, "obs_bucket", "le=\"0.5\"") == (double)WORKERS * ROUNDS / 4);
    assert_true(sample_value(text, "obs_bucket", "le=\"1.5\"") == (double)WORKERS * ROUNDS / 2);
    assert_true(sample_value(text, "obs_count", NULL) == (double)WORKERS * ROUNDS);
    assert_true(sample_value(text, "own_total", "w=\"3\"") == ROUNDS);
    free(text);
    assert_int_equal(cm_metrics_errors(reg), 0);
    cm_metrics_destroy(reg);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_counters_exact),
        cmocka_unit_test(test_escaping),
        cmocka_unit_test(test_histogram_exact),
        cmocka_unit_test(test_histogram_default_buckets),
        cmocka_unit_test(test_gauges),
        cmocka_unit_test(test_sorted_families_and_series),
        cmocka_unit_test(test_callbacks),
        cmocka_unit_test(test_remove),
        cmocka_unit_test(test_rejections),
        cmocka_unit_test(test_label_value_limits),
        cmocka_unit_test(test_series_cap),
        cmocka_unit_test(test_bucket_helpers),
        cmocka_unit_test(test_process_metrics),
        cmocka_unit_test(test_render_cap),
        cmocka_unit_test(test_concurrent_scrape),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
