#include "cm_config.h"

#include <ctype.h>
#include <errno.h>
#include <limits.h>
#include <math.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>

#define CM_CFG_DEFAULT_PT_PREFIX "RDKAFKA_"
/* A bad value is echoed into the one error line, cut to this many bytes. */
#define CM_CFG_SHOW_MAX 64

extern char **environ;

/* ---------------------------------------------------------------- parsers */

/* Reads a run of decimal digits into *out; returns the first byte after it or
 * NULL when there is no digit or the number overflows int64. */
static const char *parse_digits(const char *s, int64_t *out)
{
    int64_t v = 0;
    const char *p = s;
    while (*p >= '0' && *p <= '9') {
        int d = *p - '0';
        if (v > (INT64_MAX - d) / 10)
            return NULL;
        v = v * 10 + d;
        p++;
    }
    if (p == s)
        return NULL;
    *out = v;
    return p;
}

static bool mul_ok(int64_t a, int64_t b, int64_t *out)
{
    return !__builtin_mul_overflow(a, b, out);
}

cm_err_t cm_parse_ms(const char *s, int64_t *out)
{
    static const struct {
        const char *unit;
        int64_t ms;
    } units[] = {{"ms", 1}, {"s", 1000}, {"m", 60000}, {"h", 3600000}, {"d", 86400000}};
    int64_t total = 0, n;
    const char *p;
    if (!s || !*s)
        return CM_ERR_INVALID;
    p = parse_digits(s, &n);
    if (!p)
        return CM_ERR_INVALID;
    if (!*p) { /* bare number: milliseconds */
        *out = n;
        return CM_OK;
    }
    for (;;) {
        size_t len = 0, best = 0;
        int64_t unit_ms = 0, part;
        while (isalpha((unsigned char)p[len]))
            len++;
        for (size_t i = 0; i < sizeof(units) / sizeof(units[0]); i++) {
            if (strlen(units[i].unit) == len && strncasecmp(p, units[i].unit, len) == 0) {
                unit_ms = units[i].ms;
                best = len;
            }
        }
        if (!best || !mul_ok(n, unit_ms, &part) || __builtin_add_overflow(total, part, &total))
            return CM_ERR_INVALID;
        p += len;
        if (!*p)
            break;
        p = parse_digits(p, &n);
        if (!p || !*p) /* a trailing number without a unit is ambiguous */
            return CM_ERR_INVALID;
    }
    *out = total;
    return CM_OK;
}

cm_err_t cm_parse_size(const char *s, int64_t *out)
{
    static const struct {
        const char *unit;
        int64_t mul;
    } units[] = {
        {"", 1},
        {"b", 1},
        {"k", 1LL << 10},
        {"kib", 1LL << 10},
        {"kb", 1000LL},
        {"m", 1LL << 20},
        {"mib", 1LL << 20},
        {"mb", 1000000LL},
        {"g", 1LL << 30},
        {"gib", 1LL << 30},
        {"gb", 1000000000LL},
        {"t", 1LL << 40},
        {"tib", 1LL << 40},
        {"tb", 1000000000000LL},
    };
    int64_t n, v;
    const char *p;
    if (!s)
        return CM_ERR_INVALID;
    p = parse_digits(s, &n);
    if (!p)
        return CM_ERR_INVALID;
    for (size_t i = 0; i < sizeof(units) / sizeof(units[0]); i++) {
        if (strcasecmp(p, units[i].unit) == 0) {
            if (!mul_ok(n, units[i].mul, &v))
                return CM_ERR_INVALID;
            *out = v;
            return CM_OK;
        }
    }
    return CM_ERR_INVALID;
}

cm_err_t cm_parse_bool(const char *s, bool *out)
{
    static const char *const yes[] = {"true", "1", "yes", "on"};
    static const char *const no[] = {"false", "0", "no", "off"};
    if (!s)
        return CM_ERR_INVALID;
    for (size_t i = 0; i < 4; i++) {
        if (strcasecmp(s, yes[i]) == 0) {
            *out = true;
            return CM_OK;
        }
        if (strcasecmp(s, no[i]) == 0) {
            *out = false;
            return CM_OK;
        }
    }
    return CM_ERR_INVALID;
}

static cm_err_t parse_int(const char *s, int64_t *out)
{
    char *end;
    long long v;
    if (!s || !*s || isspace((unsigned char)*s))
        return CM_ERR_INVALID;
    errno = 0;
    v = strtoll(s, &end, 10);
    if (errno || *end)
        return CM_ERR_INVALID;
    *out = v;
    return CM_OK;
}

static cm_err_t parse_double(const char *s, double *out)
{
    char *end;
    double v;
    if (!s || !*s || isspace((unsigned char)*s))
        return CM_ERR_INVALID;
    errno = 0;
    v = strtod(s, &end);
    if (errno || *end || !isfinite(v))
        return CM_ERR_INVALID;
    *out = v;
    return CM_OK;
}

/* Finds `s` among the '|'-separated words of `choices` (case-insensitive);
 * on a match copies the canonical word into word[size]. */
static bool enum_match(const char *choices, const char *s, char *word, size_t size)
{
    const char *p = choices;
    size_t slen = strlen(s);
    while (p && *p) {
        const char *bar = strchr(p, '|');
        size_t len = bar ? (size_t)(bar - p) : strlen(p);
        if (len == slen && strncasecmp(p, s, len) == 0 && len < size) {
            memcpy(word, p, len);
            word[len] = '\0';
            return true;
        }
        p = bar ? bar + 1 : NULL;
    }
    return false;
}

/* ------------------------------------------------------------ rule texts */

static bool has_bounds(const cm_config_entry_t *e) { return !(e->min == 0 && e->max == 0); }
static bool open_low(const cm_config_entry_t *e) { return isinf(e->min) && e->min < 0; }
static bool open_high(const cm_config_entry_t *e) { return isinf(e->max) && e->max > 0; }

/* Writes a bound as the entry's type shows it: 1h, 32MiB, 65535, 0.5. */
static void fmt_bound(const cm_config_entry_t *e, double b, char *buf, size_t size)
{
    if (e->type == CM_CFG_MS && b >= 0 && b < 9e18 && b == floor(b)) {
        static const struct {
            const char *unit;
            int64_t ms;
        } u[] = {{"d", 86400000}, {"h", 3600000}, {"m", 60000}, {"s", 1000}};
        int64_t v = (int64_t)b;
        for (size_t i = 0; i < sizeof(u) / sizeof(u[0]); i++) {
            if (v != 0 && v % u[i].ms == 0) {
                snprintf(buf, size, "%lld%s", (long long)(v / u[i].ms), u[i].unit);
                return;
            }
        }
        snprintf(buf, size, "%lldms", (long long)v);
    } else if (e->type == CM_CFG_SIZE && b >= 0 && b < 9e18 && b == floor(b)) {
        static const char *const u[] = {"TiB", "GiB", "MiB", "KiB"};
        int64_t v = (int64_t)b;
        for (int i = 0; i < 4; i++) {
            int64_t m = 1LL << (10 * (4 - i));
            if (v != 0 && v % m == 0) {
                snprintf(buf, size, "%lld%s", (long long)(v / m), u[i]);
                return;
            }
        }
        snprintf(buf, size, "%lldB", (long long)v);
    } else if (e->type == CM_CFG_DOUBLE) {
        snprintf(buf, size, "%g", b);
    } else {
        snprintf(buf, size, "%.0f", b);
    }
}

/* " between 1 and 65535", " of at least 1" (" at least 1" without `of`),
 * "" (no bounds). */
static void fmt_range(const cm_config_entry_t *e, bool of, char *buf, size_t size)
{
    char lo[48], hi[48];
    buf[0] = '\0';
    if (!has_bounds(e) || (open_low(e) && open_high(e)))
        return;
    fmt_bound(e, e->min, lo, sizeof(lo));
    fmt_bound(e, e->max, hi, sizeof(hi));
    if (open_high(e))
        snprintf(buf, size, "%s at least %s", of ? " of" : "", lo);
    else if (open_low(e))
        snprintf(buf, size, "%s at most %s", of ? " of" : "", hi);
    else
        snprintf(buf, size, " between %s and %s", lo, hi);
}

/* The whole rule of an entry, e.g. "must be an integer between 1 and 65535". */
static void fmt_rule(const cm_config_entry_t *e, char *buf, size_t size)
{
    char range[128];
    fmt_range(e, true, range, sizeof(range));
    switch (e->type) {
    case CM_CFG_INT:
        snprintf(buf, size, "must be an integer%s", range);
        break;
    case CM_CFG_DOUBLE:
        snprintf(buf, size, "must be a number%s", range);
        break;
    case CM_CFG_MS:
        snprintf(buf, size, "must be a duration (500ms, 10s, 5m, 1h)%s", range);
        break;
    case CM_CFG_SIZE:
        snprintf(buf, size, "must be a size (512KiB, 32MiB, 1GiB)%s", range);
        break;
    case CM_CFG_BOOL:
        snprintf(buf, size, "must be true or false (or 1/0, yes/no, on/off)");
        break;
    case CM_CFG_ENUM:
        snprintf(buf, size, "must be one of %s", e->choices ? e->choices : "(none)");
        break;
    case CM_CFG_STR:
        /* " between 1 and 255" reads as a length here */
        snprintf(buf, size, "must be a string%s%s", range[0] ? " with a length" : "",
                 range);
        if (range[0])
            snprintf(buf + strlen(buf), size - strlen(buf), " bytes");
        break;
    default:
        snprintf(buf, size, "has an unknown type in the config table");
        break;
    }
}

static const char *type_name(cm_config_type_t t)
{
    switch (t) {
    case CM_CFG_STR: return "string";
    case CM_CFG_INT: return "integer";
    case CM_CFG_BOOL: return "boolean";
    case CM_CFG_DOUBLE: return "number";
    case CM_CFG_MS: return "duration";
    case CM_CFG_SIZE: return "size";
    case CM_CFG_ENUM: return "enum";
    default: return "?";
    }
}

/* Copies a value for the error line: cut, control characters replaced, so
 * that the line stays one line. */
static void fmt_shown(const cm_config_entry_t *e, const char *v, char *buf, size_t size)
{
    size_t i = 0;
    if (e->secret) {
        snprintf(buf, size, "***");
        return;
    }
    for (; v[i] && i + 4 < size && i < CM_CFG_SHOW_MAX; i++)
        buf[i] = ((unsigned char)v[i] < 0x20 || v[i] == 0x7f) ? '?' : v[i];
    if (v[i]) {
        memcpy(buf + i, "...", 3);
        i += 3;
    }
    buf[i] = '\0';
}

static bool in_bounds(const cm_config_entry_t *e, double v)
{
    if (!has_bounds(e))
        return true;
    return v >= e->min && v <= e->max;
}

/* ---------------------------------------------------------------- loading */

/* Stores one textual value into its field; CM_ERR_INVALID when it breaks the
 * entry's rule. */
static cm_err_t store(const cm_config_entry_t *e, const char *v, void *out)
{
    char *field = (char *)out + e->offset;
    int64_t i;
    double d;
    bool b;
    char word[256];

    switch (e->type) {
    case CM_CFG_STR: {
        size_t len = strlen(v);
        char *copy;
        if (!in_bounds(e, (double)len))
            return CM_ERR_INVALID;
        copy = strdup(v);
        if (!copy)
            return CM_ERR_NOMEM;
        *(char **)field = copy;
        return CM_OK;
    }
    case CM_CFG_ENUM: {
        char *copy;
        if (!enum_match(e->choices, v, word, sizeof(word)))
            return CM_ERR_INVALID;
        copy = strdup(word);
        if (!copy)
            return CM_ERR_NOMEM;
        *(char **)field = copy;
        return CM_OK;
    }
    case CM_CFG_INT:
        if (parse_int(v, &i) || !in_bounds(e, (double)i))
            return CM_ERR_INVALID;
        *(int64_t *)field = i;
        return CM_OK;
    case CM_CFG_MS:
        if (cm_parse_ms(v, &i) || !in_bounds(e, (double)i))
            return CM_ERR_INVALID;
        *(int64_t *)field = i;
        return CM_OK;
    case CM_CFG_SIZE:
        if (cm_parse_size(v, &i) || !in_bounds(e, (double)i))
            return CM_ERR_INVALID;
        *(int64_t *)field = i;
        return CM_OK;
    case CM_CFG_DOUBLE:
        if (parse_double(v, &d) || !in_bounds(e, d))
            return CM_ERR_INVALID;
        *(double *)field = d;
        return CM_OK;
    case CM_CFG_BOOL:
        if (cm_parse_bool(v, &b))
            return CM_ERR_INVALID;
        *(bool *)field = b;
        return CM_OK;
    default:
        return CM_ERR_INVALID;
    }
}

static bool is_table_env(const cm_config_entry_t *table, const char *name, size_t len)
{
    for (const cm_config_entry_t *e = table; e->type != CM_CFG_END; e++)
        if (strlen(e->env) == len && strncmp(e->env, name, len) == 0)
            return true;
    return false;
}

static int kv_cmp(const void *a, const void *b)
{
    return strcmp(((const cm_kv_t *)a)->key, ((const cm_kv_t *)b)->key);
}

/* "SASL_MECHANISMS" -> "sasl.mechanisms"; "__" -> '_'. Caller frees. */
static char *pt_key(const char *name, size_t len)
{
    char *k = malloc(len + 1), *w = k;
    if (!k)
        return NULL;
    for (size_t i = 0; i < len; i++) {
        if (name[i] == '_' && i + 1 < len && name[i + 1] == '_') {
            *w++ = '_';
            i++;
        } else if (name[i] == '_') {
            *w++ = '.';
        } else {
            *w++ = (char)tolower((unsigned char)name[i]);
        }
    }
    *w = '\0';
    return k;
}

static cm_err_t collect_passthrough(const cm_config_entry_t *table, const char *prefix,
                                    char **env, cm_passthrough_t *pt)
{
    size_t plen = strlen(prefix), n = 0, cap = 0;
    for (char **p = env; p && *p; p++) {
        const char *eq = strchr(*p, '=');
        const char *name = *p + plen;
        cm_kv_t kv;
        bool dup = false;
        if (!eq || strncmp(*p, prefix, plen) != 0 || eq <= name || !eq[1])
            continue;
        if (is_table_env(table, *p, (size_t)(eq - *p)))
            continue;
        kv.key = pt_key(name, (size_t)(eq - name));
        if (!kv.key)
            return CM_ERR_NOMEM;
        for (size_t i = 0; i < n; i++)
            dup = dup || strcmp(pt->items[i].key, kv.key) == 0;
        if (dup) { /* environ should not repeat a name; the first one wins */
            free(kv.key);
            continue;
        }
        kv.value = strdup(eq + 1);
        if (!kv.value) {
            free(kv.key);
            return CM_ERR_NOMEM;
        }
        if (n == cap) {
            size_t ncap = cap ? cap * 2 : 8;
            cm_kv_t *items = realloc(pt->items, ncap * sizeof(*items));
            if (!items) {
                free(kv.key);
                free(kv.value);
                return CM_ERR_NOMEM;
            }
            pt->items = items;
            cap = ncap;
        }
        pt->items[n++] = kv;
        pt->count = n;
    }
    if (n > 1)
        qsort(pt->items, n, sizeof(*pt->items), kv_cmp);
    return CM_OK;
}

cm_err_t cm_config_load_from(const cm_config_entry_t *table, void *out,
                             const char *pt_prefix, cm_passthrough_t *pt,
                             const char *(*getenv_fn)(const char *name, void *ud),
                             char **environ_list, void *ud,
                             char *errstr, size_t errstr_size)
{
    cm_err_t err = CM_OK;
    char rule[256], shown[CM_CFG_SHOW_MAX + 8];

    if (errstr_size)
        errstr[0] = '\0';
    if (pt) {
        pt->items = NULL;
        pt->count = 0;
    }
    for (const cm_config_entry_t *e = table; e->type != CM_CFG_END; e++) {
        const char *v = getenv_fn(e->env, ud);
        bool from_default = false;
        if (!v || !*v) {
            v = e->def;
            from_default = true;
        }
        if (!v) {
            if (e->type == CM_CFG_STR || e->type == CM_CFG_ENUM) {
                *(char **)((char *)out + e->offset) = NULL;
                continue;
            }
            fmt_rule(e, rule, sizeof(rule));
            snprintf(errstr, errstr_size, "%s is not set: it is required and %s", e->env,
                     rule);
            err = CM_ERR_INVALID;
            goto out;
        }
        err = store(e, v, out);
        if (err == CM_ERR_NOMEM) {
            snprintf(errstr, errstr_size, "%s: out of memory", e->env);
            goto out;
        }
        if (err) {
            fmt_rule(e, rule, sizeof(rule));
            fmt_shown(e, v, shown, sizeof(shown));
            snprintf(errstr, errstr_size, "%s=%s%s: %s", e->env, shown,
                     from_default ? " (the built-in default)" : "", rule);
            goto out;
        }
    }
    if (pt) {
        err = collect_passthrough(table, pt_prefix ? pt_prefix : CM_CFG_DEFAULT_PT_PREFIX,
                                  environ_list, pt);
        if (err)
            snprintf(errstr, errstr_size, "pass-through settings: out of memory");
    }
out:
    if (err) {
        cm_config_free(table, out);
        cm_passthrough_free(pt);
    }
    return err;
}

static const char *real_getenv(const char *name, void *ud)
{
    (void)ud;
    return getenv(name);
}

cm_err_t cm_config_load(const cm_config_entry_t *table, void *out,
                        const char *pt_prefix, cm_passthrough_t *pt,
                        char *errstr, size_t errstr_size)
{
    return cm_config_load_from(table, out, pt_prefix, pt, real_getenv, environ, NULL,
                               errstr, errstr_size);
}

void cm_config_free(const cm_config_entry_t *table, void *out)
{
    if (!table || !out)
        return;
    for (const cm_config_entry_t *e = table; e->type != CM_CFG_END; e++) {
        if (e->type == CM_CFG_STR || e->type == CM_CFG_ENUM) {
            char **f = (char **)((char *)out + e->offset);
            free(*f);
            *f = NULL;
        }
    }
}

void cm_passthrough_free(cm_passthrough_t *pt)
{
    if (!pt)
        return;
    for (size_t i = 0; i < pt->count; i++) {
        free(pt->items[i].key);
        free(pt->items[i].value);
    }
    free(pt->items);
    pt->items = NULL;
    pt->count = 0;
}

const char *cm_passthrough_get(const cm_passthrough_t *pt, const char *key)
{
    for (size_t i = 0; pt && i < pt->count; i++)
        if (strcmp(pt->items[i].key, key) == 0)
            return pt->items[i].value;
    return NULL;
}

/* ------------------------------------------------------------------ help */

void cm_config_print_help_pt(const char *service, const char *summary,
                             const cm_config_entry_t *table, const char *pt_prefix,
                             FILE *out)
{
    char range[128];
    fprintf(out, "%s: %s\n\nUsage: %s [--help]\n\n", service, summary ? summary : "",
            service);
    fprintf(out, "Settings come from environment variables (unset or empty: the default):\n");
    for (const cm_config_entry_t *e = table; e->type != CM_CFG_END; e++) {
        fprintf(out, "\n  %s\n      %s", e->env, type_name(e->type));
        if (e->type == CM_CFG_ENUM)
            fprintf(out, ", one of %s", e->choices ? e->choices : "");
        fmt_range(e, false, range, sizeof(range));
        if (range[0])
            fprintf(out, ",%s%s", e->type == CM_CFG_STR ? " length" : "", range);
        if (e->secret)
            fprintf(out, ", secret");
        if (!e->def)
            fprintf(out, (e->type == CM_CFG_STR || e->type == CM_CFG_ENUM) ? ", default unset"
                                                                          : ", required");
        else if (e->secret)
            fprintf(out, ", default hidden");
        else
            fprintf(out, ", default %s", e->def[0] ? e->def : "\"\"");
        fprintf(out, "\n");
        if (e->description)
            fprintf(out, "      %s\n", e->description);
    }
    if (pt_prefix) {
        fprintf(out,
                "\nlibrdkafka settings:\n"
                "  Any variable %s<NAME> is handed to librdkafka as the property <name>:\n"
                "  lower-cased, each '_' turned into '.' (\"__\" gives a literal '_'), e.g.\n"
                "  %sSASL_MECHANISMS=PLAIN sets sasl.mechanisms=PLAIN.\n",
                pt_prefix, pt_prefix);
    }
}

void cm_config_print_help(const char *service, const char *summary,
                          const cm_config_entry_t *table, FILE *out)
{
    cm_config_print_help_pt(service, summary, table, CM_CFG_DEFAULT_PT_PREFIX, out);
}

static int config_args(int argc, char **argv, const char *service, const char *summary,
                       const cm_config_entry_t *table, const char *pt_prefix)
{
    for (int i = 1; i < argc; i++) {
        if (strcmp(argv[i], "--help") == 0 || strcmp(argv[i], "-h") == 0) {
            cm_config_print_help_pt(service, summary, table, pt_prefix, stdout);
            fflush(stdout);
            return 1;
        }
        fprintf(stderr, "%s: unknown option '%s' (try --help)\n", service, argv[i]);
        return 2;
    }
    return 0;
}

int cm_config_args(int argc, char **argv, const char *service, const char *summary,
                   const cm_config_entry_t *table)
{
    return config_args(argc, argv, service, summary, table, CM_CFG_DEFAULT_PT_PREFIX);
}

int cm_config_main_init(int argc, char **argv, const char *service, const char *summary,
                        const cm_config_entry_t *table, void *cfg, cm_passthrough_t *pt)
{
    char errstr[512];
    int rc = config_args(argc, argv, service, summary, table,
                         pt ? CM_CFG_DEFAULT_PT_PREFIX : NULL);
    if (rc)
        return rc;
    if (cm_config_load(table, cfg, NULL, pt, errstr, sizeof(errstr))) {
        fprintf(stderr, "%s: %s\n", service, errstr);
        return 2;
    }
    return 0;
}

/* -------------------------------------------------------------- describe */

void cm_config_describe(const cm_config_entry_t *table, const void *cfg, char *buf,
                        size_t size)
{
    size_t len = 0;
    if (!size)
        return;
    buf[0] = '\0';
    for (const cm_config_entry_t *e = table; e->type != CM_CFG_END && len < size; e++) {
        const char *field = (const char *)cfg + e->offset;
        char val[64];
        const char *v = val;
        int w;
        switch (e->type) {
        case CM_CFG_STR:
        case CM_CFG_ENUM:
            v = *(char *const *)field ? *(char *const *)field : "(unset)";
            break;
        case CM_CFG_INT:
            snprintf(val, sizeof(val), "%lld", (long long)*(const int64_t *)field);
            break;
        case CM_CFG_MS:
        case CM_CFG_SIZE: /* as the help shows them: 30m, 1MiB */
            fmt_bound(e, (double)*(const int64_t *)field, val, sizeof(val));
            break;
        case CM_CFG_DOUBLE:
            snprintf(val, sizeof(val), "%g", *(const double *)field);
            break;
        case CM_CFG_BOOL:
            v = *(const bool *)field ? "true" : "false";
            break;
        default:
            v = "?";
        }
        /* Whether a secret is set is worth knowing; its value is not. */
        if (e->secret && !((e->type == CM_CFG_STR || e->type == CM_CFG_ENUM) &&
                           !*(char *const *)field))
            v = "***";
        w = snprintf(buf + len, size - len, "%s%s=%s", len ? " " : "", e->env, v);
        if (w < 0)
            break;
        len += (size_t)w;
    }
    if (len >= size)
        buf[size - 1] = '\0';
}
