/* Unit tests of cm_config: the table loader, its parsers, --help and the
 * RDKAFKA_ pass-through. No network. */
#include <math.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include <cmocka.h>

#include "cm_config.h"

typedef struct {
    cm_common_config_t common;
    int64_t port;
    char *topic;
    char *brokers;
    bool anonymize;
    double ratio;
    int64_t gap_ms;
    int64_t max_body;
    char *mode;
    char *password;
    int64_t open_ended;
} t_config_t;

#define OFF(f) offsetof(t_config_t, f)

static const cm_config_entry_t t_table[] = {
    CM_CONFIG_COMMON_ENTRIES(t_config_t, common, "TEST_", "9102"),
    CM_CONFIG_ENTRY(CM_CFG_INT, "GATEWAY_PORT", "8080", t_config_t, port, 1, 65535,
                    "HTTP port of the event API"),
    CM_CONFIG_ENTRY(CM_CFG_STR, "TOPIC", "clickstream.raw", t_config_t, topic, 1, 249, "raw topic"),
    CM_CONFIG_ENTRY(CM_CFG_STR, "BROKERS", NULL, t_config_t, brokers, 0, 0, "bootstrap servers"),
    {CM_CFG_BOOL, "ANONYMIZE", "on", OFF(anonymize), 0, 0, "zero the last IP bits", NULL, false},
    {CM_CFG_DOUBLE, "RATIO", "0.5", OFF(ratio), 0, 1, "sampling ratio", NULL, false},
    {CM_CFG_MS, "SESSION_GAP", "30m", OFF(gap_ms), 1000, 86400000, "session gap", NULL, false},
    {CM_CFG_SIZE, "MAX_BODY", "1MiB", OFF(max_body), 1024, 1 << 30, "request cap", NULL, false},
    {CM_CFG_ENUM, "MODE", "fast", OFF(mode), 0, 0, "mode", "fast|safe|paranoid", false},
    {CM_CFG_STR, "PASSWORD", "hunter2", OFF(password), 0, 8, "the password", NULL, true},
    {CM_CFG_INT, "OPEN_ENDED", "5", OFF(open_ended), 1, INFINITY, "at least one", NULL, false},
    {0},
};

/* ------------------------------------------------------- fake environment */

typedef struct {
    char **vars; /* "NAME=value", NULL-terminated */
} fake_env_t;

static const char *fake_getenv(const char *name, void *ud)
{
    fake_env_t *env = ud;
    size_t n = strlen(name);
    for (char **p = env->vars; *p; p++)
        if (strncmp(*p, name, n) == 0 && (*p)[n] == '=')
            return *p + n + 1;
    return NULL;
}

static cm_err_t load(char **vars, t_config_t *cfg, cm_passthrough_t *pt, const char *prefix,
                     char *errstr, size_t n)
{
    fake_env_t env = {vars};
    memset(cfg, 0, sizeof(*cfg));
    return cm_config_load_from(t_table, cfg, prefix, pt, fake_getenv, vars, &env, errstr, n);
}

/* Loads `vars` and asserts the failure line is exactly `want`. */
static void expect_error(char **vars, const char *want)
{
    t_config_t cfg;
    char errstr[256];
    cm_passthrough_t pt;
    assert_int_equal(load(vars, &cfg, &pt, NULL, errstr, sizeof(errstr)), CM_ERR_INVALID);
    assert_string_equal(errstr, want);
    assert_null(strchr(errstr, '\n'));
    /* nothing left behind on failure */
    assert_null(cfg.topic);
    assert_null(cfg.mode);
    assert_null(cfg.common.log_level);
    assert_int_equal(pt.count, 0);
    assert_null(pt.items);
}

/* --------------------------------------------------------------- loading */

static void test_defaults(void **state)
{
    char *vars[] = {NULL};
    t_config_t cfg;
    cm_passthrough_t pt;
    char errstr[256];
    assert_int_equal(load(vars, &cfg, &pt, NULL, errstr, sizeof(errstr)), CM_OK);
    assert_string_equal(cfg.common.log_level, "info");
    assert_string_equal(cfg.common.admin_addr, "0.0.0.0");
    assert_int_equal(cfg.common.admin_port, 9102);
    assert_int_equal(cfg.port, 8080);
    assert_string_equal(cfg.topic, "clickstream.raw");
    assert_null(cfg.brokers);
    assert_true(cfg.anonymize);
    assert_true(cfg.ratio == 0.5);
    assert_int_equal(cfg.gap_ms, 30 * 60 * 1000);
    assert_int_equal(cfg.max_body, 1 << 20);
    assert_string_equal(cfg.mode, "fast");
    assert_string_equal(cfg.password, "hunter2");
    assert_int_equal(cfg.open_ended, 5);
    assert_int_equal(pt.count, 0);
    cm_config_free(t_table, &cfg);
    assert_null(cfg.topic);
    assert_null(cfg.common.log_level);
    cm_passthrough_free(&pt);
}

static void test_overrides(void **state)
{
    char *vars[] = {"GATEWAY_PORT=9000", "TOPIC=t1", "BROKERS=k1:9092,k2:9092",
                    "ANONYMIZE=No", "RATIO=1", "SESSION_GAP=1h30m", "MAX_BODY=32KiB",
                    "MODE=PARANOID", "PASSWORD=s3cret", "OPEN_ENDED=9000000000",
                    "TEST_LOG_LEVEL=debug", "TEST_ADMIN_PORT=0", NULL};
    t_config_t cfg;
    char errstr[256];
    assert_int_equal(load(vars, &cfg, NULL, NULL, errstr, sizeof(errstr)), CM_OK);
    assert_int_equal(cfg.port, 9000);
    assert_string_equal(cfg.topic, "t1");
    assert_string_equal(cfg.brokers, "k1:9092,k2:9092");
    assert_false(cfg.anonymize);
    assert_true(cfg.ratio == 1.0);
    assert_int_equal(cfg.gap_ms, 90 * 60 * 1000);
    assert_int_equal(cfg.max_body, 32 * 1024);
    assert_string_equal(cfg.mode, "paranoid"); /* the canonical spelling */
    assert_string_equal(cfg.password, "s3cret");
    assert_int_equal(cfg.open_ended, 9000000000LL);
    assert_string_equal(cfg.common.log_level, "debug");
    assert_int_equal(cfg.common.admin_port, 0);
    cm_config_free(t_table, &cfg);
}

static void test_empty_means_default(void **state)
{
    char *vars[] = {"GATEWAY_PORT=", "TOPIC=", "MODE=", NULL};
    t_config_t cfg;
    char errstr[256];
    assert_int_equal(load(vars, &cfg, NULL, NULL, errstr, sizeof(errstr)), CM_OK);
    assert_int_equal(cfg.port, 8080);
    assert_string_equal(cfg.topic, "clickstream.raw");
    assert_string_equal(cfg.mode, "fast");
    cm_config_free(t_table, &cfg);
}

static void test_error_lines(void **state)
{
    char *port_high[] = {"GATEWAY_PORT=70000", NULL};
    char *port_text[] = {"GATEWAY_PORT=80a", NULL};
    char *port_space[] = {"GATEWAY_PORT= 80", NULL};
    char *ratio[] = {"RATIO=1.5", NULL};
    char *ratio_nan[] = {"RATIO=nan", NULL};
    char *gap[] = {"SESSION_GAP=500ms", NULL};
    char *gap_text[] = {"SESSION_GAP=soon", NULL};
    char *body[] = {"MAX_BODY=2GiB", NULL};
    char *mode[] = {"MODE=slow", NULL};
    char *anon[] = {"ANONYMIZE=maybe", NULL};
    char *topic[] = {"TOPIC=" /* empty is the default */, "TEST_ADMIN_PORT=-1", NULL};
    char *open[] = {"OPEN_ENDED=0", NULL};
    char *level[] = {"TEST_LOG_LEVEL=verbose", NULL};
    char *newline[] = {"GATEWAY_PORT=1\n2", NULL};

    expect_error(port_high, "GATEWAY_PORT=70000: must be an integer between 1 and 65535");
    expect_error(port_text, "GATEWAY_PORT=80a: must be an integer between 1 and 65535");
    expect_error(port_space, "GATEWAY_PORT= 80: must be an integer between 1 and 65535");
    expect_error(ratio, "RATIO=1.5: must be a number between 0 and 1");
    expect_error(ratio_nan, "RATIO=nan: must be a number between 0 and 1");
    expect_error(gap, "SESSION_GAP=500ms: must be a duration (500ms, 10s, 5m, 1h) between "
                      "1s and 1d");
    expect_error(gap_text, "SESSION_GAP=soon: must be a duration (500ms, 10s, 5m, 1h) "
                           "between 1s and 1d");
    expect_error(body, "MAX_BODY=2GiB: must be a size (512KiB, 32MiB, 1GiB) between 1KiB "
                       "and 1GiB");
    expect_error(mode, "MODE=slow: must be one of fast|safe|paranoid");
    expect_error(anon, "ANONYMIZE=maybe: must be true or false (or 1/0, yes/no, on/off)");
    expect_error(topic, "TEST_ADMIN_PORT=-1: must be an integer between 0 and 65535");
    expect_error(open, "OPEN_ENDED=0: must be an integer of at least 1");
    expect_error(level, "TEST_LOG_LEVEL=verbose: must be one of debug|info|warn|error");
    /* the line stays one line */
    expect_error(newline, "GATEWAY_PORT=1?2: must be an integer between 1 and 65535");
}

static void test_string_length(void **state)
{
    char long_topic[300] = "TOPIC=";
    memset(long_topic + 6, 'x', 250);
    long_topic[256] = '\0';
    char *vars[] = {long_topic, NULL};
    t_config_t cfg;
    char errstr[256];
    assert_int_equal(load(vars, &cfg, NULL, NULL, errstr, sizeof(errstr)), CM_ERR_INVALID);
    /* the echoed value is cut, the rule names the length */
    assert_non_null(strstr(errstr, "TOPIC=xxxxxxxx"));
    assert_non_null(strstr(errstr, "...: must be a string with a length between 1 and 249 bytes"));
    assert_true(strlen(errstr) < 200);
}

static void test_secret_never_printed(void **state)
{
    char *vars[] = {"PASSWORD=much-too-long-secret", NULL};
    t_config_t cfg;
    char errstr[256], desc[1024];
    assert_int_equal(load(vars, &cfg, NULL, NULL, errstr, sizeof(errstr)), CM_ERR_INVALID);
    assert_string_equal(errstr,
                        "PASSWORD=***: must be a string with a length between 0 and 8 bytes");

    char *ok[] = {"PASSWORD=pw", NULL};
    assert_int_equal(load(ok, &cfg, NULL, NULL, errstr, sizeof(errstr)), CM_OK);
    cm_config_describe(t_table, &cfg, desc, sizeof(desc));
    assert_non_null(strstr(desc, "PASSWORD=***"));
    assert_null(strstr(desc, "=pw"));
    assert_non_null(strstr(desc, "GATEWAY_PORT=8080 TOPIC=clickstream.raw BROKERS=(unset)"));
    assert_non_null(strstr(desc, "ANONYMIZE=true"));
    /* cut to fit, still a string */
    cm_config_describe(t_table, &cfg, desc, 20);
    assert_int_equal(strlen(desc), 19);
    cm_config_free(t_table, &cfg);
}

typedef struct {
    int64_t need;
    char *opt;
} req_config_t;

static void test_required_and_bad_default(void **state)
{
    const cm_config_entry_t table[] = {
        {CM_CFG_INT, "NEED", NULL, offsetof(req_config_t, need), 1, 10, "required", NULL, false},
        {CM_CFG_ENUM, "OPT", NULL, offsetof(req_config_t, opt), 0, 0, "optional", "a|b", false},
        {0},
    };
    const cm_config_entry_t bad_default[] = {
        {CM_CFG_ENUM, "OPT", "c", offsetof(req_config_t, opt), 0, 0, "x", "a|b", false},
        {0},
    };
    char *none[] = {NULL}, *set[] = {"NEED=3", NULL};
    fake_env_t e1 = {none}, e2 = {set};
    req_config_t cfg = {0};
    char errstr[256];

    assert_int_equal(cm_config_load_from(table, &cfg, NULL, NULL, fake_getenv, none, &e1,
                                         errstr, sizeof(errstr)),
                     CM_ERR_INVALID);
    assert_string_equal(errstr,
                        "NEED is not set: it is required and must be an integer between 1 and 10");
    assert_int_equal(cm_config_load_from(table, &cfg, NULL, NULL, fake_getenv, set, &e2,
                                         errstr, sizeof(errstr)),
                     CM_OK);
    assert_int_equal(cfg.need, 3);
    assert_null(cfg.opt);
    assert_int_equal(cm_config_load_from(bad_default, &cfg, NULL, NULL, fake_getenv, none, &e1,
                                         errstr, sizeof(errstr)),
                     CM_ERR_INVALID);
    assert_string_equal(errstr, "OPT=c (the built-in default): must be one of a|b");
}

/* ------------------------------------------------------------ pass-through */

static void test_passthrough(void **state)
{
    char *vars[] = {"RDKAFKA_SASL_MECHANISMS=PLAIN",
                    "RDKAFKA_BOOTSTRAP_SERVERS=k:9092",
                    "RDKAFKA_SSL__ENGINE=x", /* "__": a literal '_' */
                    "RDKAFKA_DEBUG=",        /* empty: not passed */
                    "RDKAFKA_=nothing",      /* no name */
                    "RDKAFKA_ENABLE_IDEMPOTENCE=true",
                    "RDKAFKA_BOOTSTRAP_SERVERS=second", /* a repeat: the first wins */
                    "KAFKA_OTHER=1",
                    "rdkafka_lower=1",
                    NULL};
    t_config_t cfg;
    cm_passthrough_t pt;
    char errstr[256];
    assert_int_equal(load(vars, &cfg, &pt, NULL, errstr, sizeof(errstr)), CM_OK);
    assert_int_equal(pt.count, 4);
    /* sorted by key */
    assert_string_equal(pt.items[0].key, "bootstrap.servers");
    assert_string_equal(pt.items[0].value, "k:9092");
    assert_string_equal(pt.items[1].key, "enable.idempotence");
    assert_string_equal(pt.items[2].key, "sasl.mechanisms");
    assert_string_equal(pt.items[2].value, "PLAIN");
    assert_string_equal(pt.items[3].key, "ssl_engine");
    assert_string_equal(cm_passthrough_get(&pt, "sasl.mechanisms"), "PLAIN");
    assert_null(cm_passthrough_get(&pt, "debug"));
    cm_passthrough_free(&pt);
    assert_int_equal(pt.count, 0);
    cm_passthrough_free(&pt); /* twice is fine */
    cm_passthrough_free(NULL);
    cm_config_free(t_table, &cfg);
}

static void test_passthrough_prefix_and_table(void **state)
{
    /* A table entry under the prefix is the service's, not librdkafka's. */
    static const cm_config_entry_t table[] = {
        {CM_CFG_STR, "KX_TOPIC", "t", 0, 0, 0, "topic", NULL, false},
        {0},
    };
    char *vars[] = {"KX_TOPIC=mine", "KX_CLIENT_ID=me", "RDKAFKA_ACKS=all", NULL};
    fake_env_t env = {vars};
    char *topic = NULL;
    cm_passthrough_t pt;
    char errstr[256];
    assert_int_equal(cm_config_load_from(table, &topic, "KX_", &pt, fake_getenv, vars, &env,
                                         errstr, sizeof(errstr)),
                     CM_OK);
    assert_string_equal(topic, "mine");
    assert_int_equal(pt.count, 1);
    assert_string_equal(pt.items[0].key, "client.id");
    assert_string_equal(pt.items[0].value, "me");
    cm_passthrough_free(&pt);
    cm_config_free(table, &topic);
}

/* ---------------------------------------------------------------- parsers */

static void test_parse_ms(void **state)
{
    static const struct {
        const char *in;
        int64_t ms;
    } ok[] = {{"0", 0},       {"500", 500},         {"500ms", 500},   {"10s", 10000},
              {"5m", 300000}, {"1h", 3600000},      {"1d", 86400000}, {"1h30m", 5400000},
              {"10S", 10000}, {"2m500ms", 120500}, {"1MS", 1}};
    static const char *const bad[] = {
        "", "abc", "10x", "-5s", "1h30", "s", " 5s", "5s ", "1.5s", "5 s",
        "99999999999999999999", "999999999999999999d"};
    for (size_t i = 0; i < sizeof(ok) / sizeof(ok[0]); i++) {
        int64_t v = -1;
        assert_int_equal(cm_parse_ms(ok[i].in, &v), CM_OK);
        assert_int_equal(v, ok[i].ms);
    }
    for (size_t i = 0; i < sizeof(bad) / sizeof(bad[0]); i++) {
        int64_t v = -7;
        assert_int_equal(cm_parse_ms(bad[i], &v), CM_ERR_INVALID);
        assert_int_equal(v, -7);
    }
    assert_int_equal(cm_parse_ms(NULL, &(int64_t){0}), CM_ERR_INVALID);
}

static void test_parse_size(void **state)
{
    static const struct {
        const char *in;
        int64_t n;
    } ok[] = {{"0", 0},
              {"1024", 1024},
              {"32KiB", 32768},
              {"1MiB", 1048576},
              {"128MiB", 134217728},
              {"1GiB", 1073741824},
              {"1TiB", 1099511627776LL},
              {"1k", 1024},
              {"2M", 2097152},
              {"1KB", 1000},
              {"5mb", 5000000},
              {"7B", 7}};
    static const char *const bad[] = {"", "KiB", "1 KiB", "1.5MiB", "-1", "1XB", "1KiBs",
                                      "9999999999TiB"};
    for (size_t i = 0; i < sizeof(ok) / sizeof(ok[0]); i++) {
        int64_t v = -1;
        assert_int_equal(cm_parse_size(ok[i].in, &v), CM_OK);
        assert_int_equal(v, ok[i].n);
    }
    for (size_t i = 0; i < sizeof(bad) / sizeof(bad[0]); i++) {
        int64_t v = -7;
        assert_int_equal(cm_parse_size(bad[i], &v), CM_ERR_INVALID);
        assert_int_equal(v, -7);
    }
}

static void test_parse_bool(void **state)
{
    static const char *const yes[] = {"true", "TRUE", "1", "yes", "On"};
    static const char *const no[] = {"false", "False", "0", "no", "OFF"};
    static const char *const bad[] = {"", "2", "y", "truee", " true", "enable"};
    bool b;
    for (size_t i = 0; i < 5; i++) {
        b = false;
        assert_int_equal(cm_parse_bool(yes[i], &b), CM_OK);
        assert_true(b);
        assert_int_equal(cm_parse_bool(no[i], &b), CM_OK);
        assert_false(b);
    }
    for (size_t i = 0; i < sizeof(bad) / sizeof(bad[0]); i++)
        assert_int_equal(cm_parse_bool(bad[i], &b), CM_ERR_INVALID);
}

/* -------------------------------------------------------- help and argv */

static char *read_all(FILE *f)
{
    long n;
    char *s;
    fflush(f);
    fseek(f, 0, SEEK_END);
    n = ftell(f);
    fseek(f, 0, SEEK_SET);
    s = calloc(1, (size_t)n + 1);
    assert_non_null(s);
    assert_int_equal(fread(s, 1, (size_t)n, f), (size_t)n);
    return s;
}

static void test_help(void **state)
{
    FILE *f = tmpfile();
    char *text;
    assert_non_null(f);
    cm_config_print_help("ingest-gateway", "HTTP ingest of clickstream events", t_table, f);
    text = read_all(f);
    fclose(f);
    assert_non_null(strstr(text, "ingest-gateway: HTTP ingest of clickstream events\n"));
    assert_non_null(strstr(text, "Usage: ingest-gateway [--help]"));
    assert_non_null(strstr(text, "\n  GATEWAY_PORT\n      integer, between 1 and 65535, "
                                 "default 8080\n      HTTP port of the event API\n"));
    assert_non_null(strstr(text, "\n  TEST_LOG_LEVEL\n      enum, one of "
                                 "debug|info|warn|error, default info\n"));
    assert_non_null(strstr(text, "\n  BROKERS\n      string, default unset\n"));
    assert_non_null(strstr(text, "\n  SESSION_GAP\n      duration, between 1s and 1d, "
                                 "default 30m\n"));
    assert_non_null(strstr(text, "\n  MAX_BODY\n      size, between 1KiB and 1GiB, "
                                 "default 1MiB\n"));
    assert_non_null(strstr(text, "\n  TOPIC\n      string, length between 1 and 249, "
                                 "default clickstream.raw\n"));
    assert_non_null(strstr(text, "\n  OPEN_ENDED\n      integer, at least 1, default 5\n"));
    assert_non_null(strstr(text, "\n  PASSWORD\n      string, length between 0 and 8, secret, "
                                 "default hidden\n"));
    assert_null(strstr(text, "hunter2"));
    /* every entry has its block */
    for (const cm_config_entry_t *e = t_table; e->type; e++) {
        char want[128];
        snprintf(want, sizeof(want), "\n  %s\n", e->env);
        assert_non_null(strstr(text, want));
    }
    assert_non_null(strstr(text, "RDKAFKA_<NAME>"));
    assert_non_null(strstr(text, "RDKAFKA_SASL_MECHANISMS=PLAIN sets sasl.mechanisms=PLAIN"));
    free(text);

    f = tmpfile();
    cm_config_print_help_pt("dashboard-ws", "x", t_table, NULL, f);
    text = read_all(f);
    fclose(f);
    assert_null(strstr(text, "RDKAFKA_"));
    free(text);
}

/* Runs fn with stdout and stderr sent to files; returns both texts. */
static int capture(int (*fn)(void *), void *arg, char **out, char **err)
{
    FILE *fo = tmpfile(), *fe = tmpfile();
    int so, se, rc;
    fflush(stdout);
    fflush(stderr);
    so = dup(STDOUT_FILENO);
    se = dup(STDERR_FILENO);
    dup2(fileno(fo), STDOUT_FILENO);
    dup2(fileno(fe), STDERR_FILENO);
    rc = fn(arg);
    fflush(stdout);
    fflush(stderr);
    dup2(so, STDOUT_FILENO);
    dup2(se, STDERR_FILENO);
    close(so);
    close(se);
    *out = read_all(fo);
    *err = read_all(fe);
    fclose(fo);
    fclose(fe);
    return rc;
}

typedef struct {
    int argc;
    char **argv;
    t_config_t cfg;
    cm_passthrough_t pt;
} main_args_t;

static int run_args(void *p)
{
    main_args_t *a = p;
    return cm_config_args(a->argc, a->argv, "svc", "a service", t_table);
}

static int run_main_init(void *p)
{
    main_args_t *a = p;
    memset(&a->cfg, 0, sizeof(a->cfg));
    return cm_config_main_init(a->argc, a->argv, "svc", "a service", t_table, &a->cfg, &a->pt);
}

static void test_args(void **state)
{
    char *help[] = {"svc", "--help"}, *h[] = {"svc", "-h"}, *bad[] = {"svc", "--x"};
    char *none[] = {"svc"};
    main_args_t a = {.argc = 2, .argv = help};
    char *out, *err;

    assert_int_equal(capture(run_args, &a, &out, &err), 1);
    assert_non_null(strstr(out, "svc: a service\n"));
    assert_non_null(strstr(out, "GATEWAY_PORT"));
    assert_string_equal(err, "");
    free(out);
    free(err);

    a.argv = h;
    assert_int_equal(capture(run_args, &a, &out, &err), 1);
    assert_non_null(strstr(out, "GATEWAY_PORT"));
    free(out);
    free(err);

    a.argv = bad;
    assert_int_equal(capture(run_args, &a, &out, &err), 2);
    assert_string_equal(out, "");
    assert_string_equal(err, "svc: unknown option '--x' (try --help)\n");
    free(out);
    free(err);

    a.argc = 1;
    a.argv = none;
    assert_int_equal(capture(run_args, &a, &out, &err), 0);
    assert_string_equal(out, "");
    assert_string_equal(err, "");
    free(out);
    free(err);
}

static void test_main_init(void **state)
{
    char *none[] = {"svc"}, *bad[] = {"svc", "--port=1"};
    main_args_t a = {.argc = 1, .argv = none};
    char *out, *err;

    setenv("GATEWAY_PORT", "70000", 1);
    assert_int_equal(capture(run_main_init, &a, &out, &err), 2);
    assert_string_equal(err, "svc: GATEWAY_PORT=70000: must be an integer between 1 and 65535\n");
    assert_string_equal(out, "");
    assert_null(a.cfg.topic);
    free(out);
    free(err);

    setenv("GATEWAY_PORT", "8443", 1);
    setenv("RDKAFKA_CLIENT_ID", "unit", 1);
    assert_int_equal(capture(run_main_init, &a, &out, &err), 0);
    assert_string_equal(err, "");
    assert_int_equal(a.cfg.port, 8443);
    assert_string_equal(cm_passthrough_get(&a.pt, "client.id"), "unit");
    cm_config_free(t_table, &a.cfg);
    cm_passthrough_free(&a.pt);
    free(out);
    free(err);

    a.argc = 2;
    a.argv = bad;
    assert_int_equal(capture(run_main_init, &a, &out, &err), 2);
    assert_string_equal(err, "svc: unknown option '--port=1' (try --help)\n");
    free(out);
    free(err);
    unsetenv("GATEWAY_PORT");
    unsetenv("RDKAFKA_CLIENT_ID");
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_defaults),
        cmocka_unit_test(test_overrides),
        cmocka_unit_test(test_empty_means_default),
        cmocka_unit_test(test_error_lines),
        cmocka_unit_test(test_string_length),
        cmocka_unit_test(test_secret_never_printed),
        cmocka_unit_test(test_required_and_bad_default),
        cmocka_unit_test(test_passthrough),
        cmocka_unit_test(test_passthrough_prefix_and_table),
        cmocka_unit_test(test_parse_ms),
        cmocka_unit_test(test_parse_size),
        cmocka_unit_test(test_parse_bool),
        cmocka_unit_test(test_help),
        cmocka_unit_test(test_args),
        cmocka_unit_test(test_main_init),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
