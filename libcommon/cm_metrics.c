#include "cm_metrics.h"

#include <dirent.h>
#include <inttypes.h>
#include <math.h>
#include <pthread.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "cm_log.h"
#include "cm_time.h"

/* uthash: an allocation failure inside HASH_ADD leaves the item out and sets
 * the `hash_oom` flag of the calling function instead of exiting. */
#define HASH_NONFATAL_OOM 1
#define uthash_nonfatal_oom(obj) (hash_oom = true)
#include <uthash.h>

#define CM_METRICS_MAX_LABELS 16

const double CM_METRICS_DEFAULT_BUCKETS[CM_METRICS_DEFAULT_BUCKETS_N] = {
    0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10};

typedef enum kind { KIND_COUNTER, KIND_GAUGE, KIND_HISTOGRAM } kind_t;
static const char *const kind_names[] = {"counter", "gauge", "histogram"};

struct cm_histogram {
    _Atomic uint64_t sum_bits;  /* the double's bits */
    _Atomic uint64_t *counts;   /* nbounds + 1, not cumulative; last is +Inf */
    const double *bounds;       /* the family's */
    size_t nbounds;
};

typedef struct family family_t;

/*
 * One series. The hot part comes first and the whole struct is allocated on
 * a cache line of its own, so that two counters bumped by two threads do not
 * share a line. A handle is a pointer to `hot`, i.e. to the series.
 */
typedef struct series {
    union {
        cm_counter_t counter;
        cm_gauge_t gauge;
        struct cm_histogram hist;
    } hot;
    family_t *fam;
    char *labels; /* rendered `a="x",b="y"` (escaped), "" without labels; the key */
    UT_hash_handle hh;
    cm_metrics_fn fn; /* NULL: a stored value */
    void *ud;
} series_t;

struct family {
    char *name;
    char *help;
    kind_t kind;
    char **label_names;
    size_t nlabels;
    double *bounds; /* histograms */
    size_t nbounds;
    series_t *series; /* uthash by labels; iteration order sorted when !unsorted */
    bool unsorted;
    family_t *next;   /* sorted by name */
};

struct cm_metrics {
    pthread_mutex_t lock;
    family_t *families;
    _Atomic size_t errors;
};

/* Detached series: what a rejected registration gets. They take updates from
 * any number of threads and are never rendered. */
static _Atomic uint64_t detached_counts[1];
static series_t detached_counter, detached_gauge;
static series_t detached_hist = {.hot.hist = {.counts = detached_counts, .nbounds = 0}};

static series_t *detached(kind_t k)
{
    return k == KIND_COUNTER ? &detached_counter
           : k == KIND_GAUGE ? &detached_gauge
                             : &detached_hist;
}

static bool is_detached(const void *s)
{
    return s == &detached_counter || s == &detached_gauge || s == &detached_hist;
}

/* ------------------------------------------------------------ registry */

cm_metrics_t *cm_metrics_new(void)
{
    cm_metrics_t *reg = calloc(1, sizeof(*reg));
    if (!reg)
        return NULL;
    pthread_mutex_init(&reg->lock, NULL);
    return reg;
}

static void series_free(series_t *s)
{
    if (!s || is_detached(s))
        return;
    if (s->fam && s->fam->kind == KIND_HISTOGRAM)
        free(s->hot.hist.counts);
    free(s->labels);
    free(s);
}

static void family_free(family_t *f)
{
    series_t *s, *tmp;
    if (!f)
        return;
    HASH_ITER(hh, f->series, s, tmp) {
        HASH_DEL(f->series, s);
        series_free(s);
    }
    for (size_t i = 0; i < f->nlabels; i++)
        free(f->label_names[i]);
    free(f->label_names);
    free(f->bounds);
    free(f->name);
    free(f->help);
    free(f);
}

void cm_metrics_destroy(cm_metrics_t *reg)
{
    family_t *f, *next;
    if (!reg)
        return;
    for (f = reg->families; f; f = next) {
        next = f->next;
        family_free(f);
    }
    pthread_mutex_destroy(&reg->lock);
    free(reg);
}

size_t cm_metrics_errors(cm_metrics_t *reg) { return reg ? atomic_load(&reg->errors) : 0; }

/* ---------------------------------------------------------- validation */

static bool is_alpha(char c) { return (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z'); }
static bool is_digit(char c) { return c >= '0' && c <= '9'; }

/* [a-zA-Z_:][a-zA-Z0-9_:]* */
static bool valid_metric_name(const char *s)
{
    if (!s || !*s || is_digit(s[0]))
        return false;
    for (const char *p = s; *p; p++)
        if (!(is_alpha(*p) || is_digit(*p) || *p == '_' || *p == ':'))
            return false;
    return true;
}

/* [a-zA-Z_][a-zA-Z0-9_]*, and names starting with __ are reserved. */
static bool valid_label_name(const char *s)
{
    if (!s || !*s || is_digit(s[0]) || strncmp(s, "__", 2) == 0)
        return false;
    for (const char *p = s; *p; p++)
        if (!(is_alpha(*p) || is_digit(*p) || *p == '_'))
            return false;
    return true;
}

/* Length of the valid UTF-8 sequence at p (1..4), or 0 if invalid. */
static size_t utf8_seq(const unsigned char *p)
{
    if (p[0] < 0x80)
        return 1;
    if (p[0] >= 0xc2 && p[0] <= 0xdf)
        return (p[1] & 0xc0) == 0x80 ? 2 : 0;
    if (p[0] >= 0xe0 && p[0] <= 0xef) {
        if ((p[1] & 0xc0) != 0x80 || (p[2] & 0xc0) != 0x80)
            return 0;
        if ((p[0] == 0xe0 && p[1] < 0xa0) || (p[0] == 0xed && p[1] > 0x9f))
            return 0; /* overlong, surrogate */
        return 3;
    }
    if (p[0] >= 0xf0 && p[0] <= 0xf4) {
        if ((p[1] & 0xc0) != 0x80 || (p[2] & 0xc0) != 0x80 || (p[3] & 0xc0) != 0x80)
            return 0;
        if ((p[0] == 0xf0 && p[1] < 0x90) || (p[0] == 0xf4 && p[1] > 0x8f))
            return 0;
        return 4;
    }
    return 0;
}

/* Appends a label value escaped for the text format (\\, \", \n), cut at
 * CM_METRICS_MAX_LABEL_VALUE bytes on a character boundary, invalid UTF-8
 * replaced by '?' (the format requires UTF-8). */
static cm_err_t put_label_value(cm_buf_t *b, const char *v)
{
    const unsigned char *p = (const unsigned char *)v;
    size_t used = 0;
    cm_err_t err = CM_OK;
    while (*p && !err) {
        size_t n = utf8_seq(p);
        if (used + (n ? n : 1) > CM_METRICS_MAX_LABEL_VALUE)
            break;
        if (n == 0) {
            err = cm_buf_putc(b, '?');
            n = 1;
        } else if (*p == '\\') {
            err = cm_buf_append(b, "\\\\", 2);
        } else if (*p == '"') {
            err = cm_buf_append(b, "\\\"", 2);
        } else if (*p == '\n') {
            err = cm_buf_append(b, "\\n", 2);
        } else {
            err = cm_buf_append(b, p, n);
        }
        p += n;
        used += n;
    }
    return err;
}

/* HELP text escaping: only \\ and \n. */
static cm_err_t put_help(cm_buf_t *b, const char *h)
{
    cm_err_t err = CM_OK;
    for (const char *p = h; *p && !err; p++) {
        if (*p == '\\')
            err = cm_buf_append(b, "\\\\", 2);
        else if (*p == '\n')
            err = cm_buf_append(b, "\\n", 2);
        else
            err = cm_buf_putc(b, (uint8_t)*p);
    }
    return err;
}

/* ------------------------------------------------------------ creation */

typedef struct req {
    const char *name;
    const char *help;
    kind_t kind;
    const char *labels[2 * CM_METRICS_MAX_LABELS]; /* name, value, ... */
    size_t nlabels;
    const double *bounds;
    size_t nbounds;
    cm_metrics_fn fn;
    void *ud;
    bool want_fn;
} req_t;

static void reject(cm_metrics_t *reg, const char *name, const char *why)
{
    if (reg)
        atomic_fetch_add(&reg->errors, 1);
    cm_log_error("metric registration rejected", "metric", "%s", name ? name : "(null)",
                 "reason", "%s", why, NULL);
}

/* Reads name, value pairs; false when there are too many or a value is NULL. */
static bool take_pairs(req_t *r, const char *const *arr, va_list *ap)
{
    r->nlabels = 0;
    for (size_t i = 0;; i++) {
        const char *k = arr ? arr[2 * i] : va_arg(*ap, const char *);
        const char *v;
        if (!k)
            return true;
        v = arr ? arr[2 * i + 1] : va_arg(*ap, const char *);
        if (!v || i >= CM_METRICS_MAX_LABELS)
            return false;
        r->labels[2 * i] = k;
        r->labels[2 * i + 1] = v;
        r->nlabels = i + 1;
    }
}

static family_t *family_new(const req_t *r)
{
    family_t *f = calloc(1, sizeof(*f));
    if (!f)
        return NULL;
    f->kind = r->kind;
    f->name = strdup(r->name);
    f->help = strdup(r->help ? r->help : "");
    f->label_names = calloc(r->nlabels + 1, sizeof(char *));
    if (!f->name || !f->help || !f->label_names)
        goto fail;
    for (size_t i = 0; i < r->nlabels; i++) {
        f->label_names[i] = strdup(r->labels[2 * i]);
        if (!f->label_names[i])
            goto fail;
        f->nlabels = i + 1;
    }
    if (r->kind == KIND_HISTOGRAM) {
        const double *b = r->bounds ? r->bounds : CM_METRICS_DEFAULT_BUCKETS;
        size_t n = r->bounds ? r->nbounds : CM_METRICS_DEFAULT_BUCKETS_N;
        f->bounds = malloc((n ? n : 1) * sizeof(double));
        if (!f->bounds)
            goto fail;
        memcpy(f->bounds, b, n * sizeof(double));
        f->nbounds = n;
    }
    return f;
fail:
    family_free(f);
    return NULL;
}

/* Why `r` does not fit family `f`, or NULL. */
static const char *family_mismatch(const family_t *f, const req_t *r)
{
    if (f->kind != r->kind)
        return "name already registered with another type";
    if (f->nlabels != r->nlabels)
        return "name already registered with other label names";
    for (size_t i = 0; i < f->nlabels; i++)
        if (strcmp(f->label_names[i], r->labels[2 * i]) != 0)
            return "name already registered with other label names";
    if (r->kind == KIND_HISTOGRAM && r->bounds &&
        (r->nbounds != f->nbounds ||
         memcmp(r->bounds, f->bounds, r->nbounds * sizeof(double)) != 0))
        return "histogram already registered with other buckets";
    return NULL;
}

static const char *req_invalid(const req_t *r)
{
    if (!valid_metric_name(r->name))
        return "invalid metric name";
    for (size_t i = 0; i < r->nlabels; i++) {
        const char *k = r->labels[2 * i];
        if (!valid_label_name(k))
            return "invalid label name";
        if (r->kind == KIND_HISTOGRAM && strcmp(k, "le") == 0)
            return "a histogram cannot have a label named le";
        for (size_t j = 0; j < i; j++)
            if (strcmp(k, r->labels[2 * j]) == 0)
                return "duplicate label name";
    }
    if (r->kind == KIND_HISTOGRAM && r->bounds) {
        if (r->nbounds == 0)
            return "a histogram needs at least one bucket";
        for (size_t i = 0; i < r->nbounds; i++) {
            if (!isfinite(r->bounds[i]))
                return "histogram bucket bounds must be finite";
            if (i && !(r->bounds[i] > r->bounds[i - 1]))
                return "histogram bucket bounds must be strictly increasing";
        }
    }
    if (r->want_fn && !r->fn)
        return "NULL callback";
    return NULL;
}

static series_t *series_new(family_t *f, char *labels)
{
    size_t size = (sizeof(series_t) + 63) & ~(size_t)63;
    series_t *s = aligned_alloc(64, size);
    if (!s)
        return NULL;
    memset(s, 0, size);
    s->fam = f;
    s->labels = labels;
    if (f->kind == KIND_HISTOGRAM) {
        s->hot.hist.bounds = f->bounds;
        s->hot.hist.nbounds = f->nbounds;
        s->hot.hist.counts = calloc(f->nbounds + 1, sizeof(_Atomic uint64_t));
        if (!s->hot.hist.counts) {
            free(s);
            return NULL;
        }
    }
    return s;
}

/*
 * Finds or makes the family and series `r` asks for. Returns the series, or
 * NULL after reject(). Called with the lock held.
 */
static series_t *get_series(cm_metrics_t *reg, const req_t *r)
{
    family_t **fp, *f;
    series_t *s = NULL;
    const char *why = NULL;
    cm_buf_t lb;
    char *labels = NULL;
    bool new_family = false, hash_oom = false;
    int cmp = 1;

    if ((why = req_invalid(r)))
        goto fail;
    for (fp = &reg->families; *fp && (cmp = strcmp((*fp)->name, r->name)) < 0;
         fp = &(*fp)->next)
        ;
    if (*fp && cmp == 0) {
        f = *fp;
        if ((why = family_mismatch(f, r)))
            goto fail;
    } else {
        f = family_new(r);
        if (!f) {
            why = "out of memory";
            goto fail;
        }
        f->next = *fp;
        *fp = f;
        new_family = true;
    }

    cm_buf_init(&lb, 0);
    for (size_t i = 0; i < r->nlabels && !why; i++) {
        if ((i && cm_buf_putc(&lb, ',')) || cm_buf_printf(&lb, "%s=\"", r->labels[2 * i]) ||
            put_label_value(&lb, r->labels[2 * i + 1]) || cm_buf_putc(&lb, '"'))
            why = "out of memory";
    }
    if (why || !cm_buf_cstr(&lb)) { /* cm_buf_cstr also makes "" for no labels */
        cm_buf_free(&lb);
        why = "out of memory";
        goto fail;
    }
    labels = (char *)lb.data; /* taken over from the buffer */

    HASH_FIND_STR(f->series, labels, s);
    if (s) {
        free(labels);
        if ((s->fn != NULL) != r->want_fn) {
            why = r->want_fn ? "series already registered with a stored value"
                             : "series already registered with a callback";
            goto fail;
        }
        return s;
    }
    if (HASH_COUNT(f->series) >= CM_METRICS_MAX_SERIES) {
        why = "too many series in the family";
        goto fail;
    }
    s = series_new(f, labels);
    if (!s) {
        why = "out of memory";
        goto fail;
    }
    HASH_ADD_KEYPTR(hh, f->series, s->labels, strlen(s->labels), s);
    if (hash_oom) {
        series_free(s); /* frees labels too */
        labels = NULL;
        s = NULL;
        why = "out of memory";
        goto fail;
    }
    f->unsorted = true;
    return s;

fail:
    if (new_family) { /* an empty family would render a bare HELP and TYPE */
        *fp = f->next;
        family_free(f);
    }
    if (s == NULL)
        free(labels);
    reject(reg, r->name, why);
    return NULL;
}

static series_t *create(cm_metrics_t *reg, req_t *r, const char *const *arr, va_list *ap)
{
    series_t *s = NULL;
    if (!reg) {
        reject(NULL, r->name, "NULL registry");
        return detached(r->kind);
    }
    if (!take_pairs(r, arr, ap)) {
        reject(reg, r->name, "a label without a value, or too many labels");
        return detached(r->kind);
    }
    pthread_mutex_lock(&reg->lock);
    s = get_series(reg, r);
    if (s && r->want_fn) {
        s->fn = r->fn;
        s->ud = r->ud;
    }
    pthread_mutex_unlock(&reg->lock);
    return s ? s : detached(r->kind);
}

cm_counter_t *cm_metrics_counter(cm_metrics_t *reg, const char *name, const char *help, ...)
{
    req_t r = {.name = name, .help = help, .kind = KIND_COUNTER};
    va_list ap;
    va_start(ap, help);
    series_t *s = create(reg, &r, NULL, &ap);
    va_end(ap);
    return &s->hot.counter;
}

cm_counter_t *cm_metrics_counterv(cm_metrics_t *reg, const char *name, const char *help,
                                  const char *const *labels)
{
    static const char *const none[] = {NULL};
    req_t r = {.name = name, .help = help, .kind = KIND_COUNTER};
    return &create(reg, &r, labels ? labels : none, NULL)->hot.counter;
}

cm_gauge_t *cm_metrics_gauge(cm_metrics_t *reg, const char *name, const char *help, ...)
{
    req_t r = {.name = name, .help = help, .kind = KIND_GAUGE};
    va_list ap;
    va_start(ap, help);
    series_t *s = create(reg, &r, NULL, &ap);
    va_end(ap);
    return &s->hot.gauge;
}

cm_gauge_t *cm_metrics_gaugev(cm_metrics_t *reg, const char *name, const char *help,
                              const char *const *labels)
{
    static const char *const none[] = {NULL};
    req_t r = {.name = name, .help = help, .kind = KIND_GAUGE};
    return &create(reg, &r, labels ? labels : none, NULL)->hot.gauge;
}

static cm_err_t create_fn(cm_metrics_t *reg, req_t *r, va_list *ap)
{
    series_t *s = create(reg, r, NULL, ap);
    if (!is_detached(s))
        return CM_OK;
    /* Only a NULL registry or an allocation failure gets here without an
     * invalid request; the caller cannot tell them apart usefully. */
    return CM_ERR_INVALID;
}

cm_err_t cm_metrics_gauge_fn(cm_metrics_t *reg, const char *name, const char *help,
                             cm_metrics_fn fn, void *ud, ...)
{
    req_t r = {.name = name, .help = help, .kind = KIND_GAUGE, .fn = fn, .ud = ud,
               .want_fn = true};
    va_list ap;
    va_start(ap, ud);
    cm_err_t err = create_fn(reg, &r, &ap);
    va_end(ap);
    return err;
}

cm_err_t cm_metrics_counter_fn(cm_metrics_t *reg, const char *name, const char *help,
                               cm_metrics_fn fn, void *ud, ...)
{
    req_t r = {.name = name, .help = help, .kind = KIND_COUNTER, .fn = fn, .ud = ud,
               .want_fn = true};
    va_list ap;
    va_start(ap, ud);
    cm_err_t err = create_fn(reg, &r, &ap);
    va_end(ap);
    return err;
}

cm_histogram_t *cm_metrics_histogram(cm_metrics_t *reg, const char *name, const char *help,
                                     const double *bounds, size_t nbounds, ...)
{
    req_t r = {.name = name, .help = help, .kind = KIND_HISTOGRAM, .bounds = bounds,
               .nbounds = nbounds};
    va_list ap;
    va_start(ap, nbounds);
    series_t *s = create(reg, &r, NULL, &ap);
    va_end(ap);
    return &s->hot.hist;
}

cm_histogram_t *cm_metrics_histogramv(cm_metrics_t *reg, const char *name,
                                      const char *help, const double *bounds,
                                      size_t nbounds, const char *const *labels)
{
    static const char *const none[] = {NULL};
    req_t r = {.name = name, .help = help, .kind = KIND_HISTOGRAM, .bounds = bounds,
               .nbounds = nbounds};
    return &create(reg, &r, labels ? labels : none, NULL)->hot.hist;
}

/* -------------------------------------------------------------- removal */

/* Unlinks and frees series `s` (if it is in the registry). Lock held. */
static bool unlink_series(cm_metrics_t *reg, series_t *s)
{
    for (family_t **fp = &reg->families; *fp; fp = &(*fp)->next) {
        family_t *f = *fp;
        if (f != s->fam)
            continue;
        HASH_DEL(f->series, s);
        series_free(s);
        if (!f->series) { /* an empty family would render a bare HELP/TYPE */
            *fp = f->next;
            family_free(f);
        }
        return true;
    }
    return false;
}

static void remove_series(cm_metrics_t *reg, void *handle)
{
    if (!reg || !handle || is_detached(handle))
        return;
    pthread_mutex_lock(&reg->lock);
    unlink_series(reg, (series_t *)handle);
    pthread_mutex_unlock(&reg->lock);
}

void cm_counter_remove(cm_metrics_t *reg, cm_counter_t *c) { remove_series(reg, c); }
void cm_gauge_remove(cm_metrics_t *reg, cm_gauge_t *g) { remove_series(reg, g); }
void cm_histogram_remove(cm_metrics_t *reg, cm_histogram_t *h) { remove_series(reg, h); }

size_t cm_metrics_unbind(cm_metrics_t *reg, void *ud)
{
    size_t n = 0;
    if (!reg)
        return 0;
    pthread_mutex_lock(&reg->lock);
    for (family_t *f = reg->families, *fnext; f; f = fnext) {
        fnext = f->next;
        series_t *s, *snext;
        HASH_ITER(hh, f->series, s, snext) {
            if (s->fn && s->ud == ud) {
                n++;
                unlink_series(reg, s); /* may free f: fnext is already saved */
            }
        }
    }
    pthread_mutex_unlock(&reg->lock);
    return n;
}

/* -------------------------------------------------------------- updates */

static inline double bits_to_d(uint64_t u)
{
    union {
        uint64_t u;
        double d;
    } x = {.u = u};
    return x.d;
}

static inline uint64_t d_to_bits(double d)
{
    union {
        double d;
        uint64_t u;
    } x = {.d = d};
    return x.u;
}

static inline void atomic_add_double(_Atomic uint64_t *p, double delta)
{
    uint64_t old = atomic_load_explicit(p, memory_order_relaxed);
    while (!atomic_compare_exchange_weak_explicit(p, &old, d_to_bits(bits_to_d(old) + delta),
                                                  memory_order_relaxed, memory_order_relaxed))
        ;
}

void cm_gauge_add(cm_gauge_t *g, double delta) { atomic_add_double(&g->bits, delta); }

void cm_histogram_observe(cm_histogram_t *h, double v)
{
    /* First bound >= v; NaN compares false everywhere and lands in +Inf. */
    size_t lo = 0, hi = h->nbounds;
    while (lo < hi) {
        size_t mid = lo + (hi - lo) / 2;
        if (v <= h->bounds[mid])
            hi = mid;
        else
            lo = mid + 1;
    }
    atomic_fetch_add_explicit(&h->counts[lo], 1, memory_order_relaxed);
    atomic_add_double(&h->sum_bits, v);
}

uint64_t cm_histogram_count(const cm_histogram_t *h)
{
    uint64_t n = 0;
    for (size_t i = 0; i <= h->nbounds; i++)
        n += atomic_load_explicit(&h->counts[i], memory_order_relaxed);
    return n;
}

double cm_histogram_sum(const cm_histogram_t *h)
{
    return bits_to_d(atomic_load_explicit(&h->sum_bits, memory_order_relaxed));
}

cm_err_t cm_metrics_buckets_exp(double start, double factor, size_t n, double *out)
{
    if (!(start > 0) || !(factor > 1) || n < 1 || !isfinite(start) || !isfinite(factor))
        return CM_ERR_INVALID;
    for (size_t i = 0; i < n; i++, start *= factor)
        out[i] = start;
    return CM_OK;
}

cm_err_t cm_metrics_buckets_linear(double start, double width, size_t n, double *out)
{
    if (!(width > 0) || n < 1 || !isfinite(start) || !isfinite(width))
        return CM_ERR_INVALID;
    for (size_t i = 0; i < n; i++)
        out[i] = start + (double)i * width;
    return CM_OK;
}

/* ------------------------------------------------------------ rendering */

/* Shortest of %.15g / %.17g that reads back as the same double; the text
 * format's spellings of the special values. */
static void fmt_double(double v, char *buf, size_t size)
{
    if (isnan(v)) {
        snprintf(buf, size, "NaN");
    } else if (isinf(v)) {
        snprintf(buf, size, v > 0 ? "+Inf" : "-Inf");
    } else {
        snprintf(buf, size, "%.15g", v);
        if (strtod(buf, NULL) != v)
            snprintf(buf, size, "%.17g", v);
    }
}

/* `name{labels} value\n`; extra is one more rendered label (le) or NULL. */
static cm_err_t put_sample(cm_buf_t *b, const char *name, const char *suffix,
                           const char *labels, const char *extra, const char *value)
{
    bool any = labels[0] || extra;
    return cm_buf_printf(b, "%s%s%s%s%s%s%s %s\n", name, suffix, any ? "{" : "", labels,
                         labels[0] && extra ? "," : "", extra ? extra : "", any ? "}" : "",
                         value);
}

static cm_err_t render_series(cm_buf_t *b, const family_t *f, const series_t *s)
{
    char val[64], le[96];
    cm_err_t err;
    if (s->fn) {
        fmt_double(s->fn(s->ud), val, sizeof(val));
        return put_sample(b, f->name, "", s->labels, NULL, val);
    }
    switch (f->kind) {
    case KIND_COUNTER:
        snprintf(val, sizeof(val), "%" PRIu64, cm_counter_get(&s->hot.counter));
        return put_sample(b, f->name, "", s->labels, NULL, val);
    case KIND_GAUGE:
        fmt_double(cm_gauge_get(&s->hot.gauge), val, sizeof(val));
        return put_sample(b, f->name, "", s->labels, NULL, val);
    case KIND_HISTOGRAM: {
        const struct cm_histogram *h = &s->hot.hist;
        uint64_t cum = 0;
        /* The counts are read once each and summed here, so every bucket
         * line, +Inf and _count agree within this scrape. */
        for (size_t i = 0; i <= h->nbounds; i++) {
            char bound[48];
            cum += atomic_load_explicit(&h->counts[i], memory_order_relaxed);
            if (i < h->nbounds)
                fmt_double(h->bounds[i], bound, sizeof(bound));
            else
                snprintf(bound, sizeof(bound), "+Inf");
            snprintf(le, sizeof(le), "le=\"%s\"", bound);
            snprintf(val, sizeof(val), "%" PRIu64, cum);
            if ((err = put_sample(b, f->name, "_bucket", s->labels, le, val)))
                return err;
        }
        fmt_double(cm_histogram_sum(h), val, sizeof(val));
        if ((err = put_sample(b, f->name, "_sum", s->labels, NULL, val)))
            return err;
        snprintf(val, sizeof(val), "%" PRIu64, cum);
        return put_sample(b, f->name, "_count", s->labels, NULL, val);
    }
    }
    return CM_OK;
}

static int series_cmp(const void *a, const void *b)
{
    return strcmp(((const series_t *)a)->labels, ((const series_t *)b)->labels);
}

cm_err_t cm_metrics_render(cm_metrics_t *reg, cm_buf_t *out)
{
    cm_err_t err = CM_OK;
    if (!reg || !out)
        return CM_ERR_INVALID;
    pthread_mutex_lock(&reg->lock);
    for (family_t *f = reg->families; f && !err; f = f->next) {
        if (f->unsorted) { /* sorted here, once per change, not per insert */
            HASH_SRT(hh, f->series, series_cmp);
            f->unsorted = false;
        }
        err = cm_buf_printf(out, "# HELP %s ", f->name);
        if (!err)
            err = put_help(out, f->help);
        if (!err)
            err = cm_buf_printf(out, "\n# TYPE %s %s\n", f->name, kind_names[f->kind]);
        for (const series_t *s = f->series; s && !err; s = s->hh.next)
            err = render_series(out, f, s);
    }
    pthread_mutex_unlock(&reg->lock);
    return err;
}

/* ------------------------------------------------------- process metrics */

static char proc_ud; /* an address of our own, so unbind(NULL) leaves these */
static double proc_start_s;

static double proc_start(void *ud) { return proc_start_s; }

/* Field `n` (1-based, as in proc(5)) of /proc/self/stat. */
static double proc_stat_field(int n)
{
    char buf[1024];
    FILE *f = fopen("/proc/self/stat", "r");
    size_t len;
    char *p;
    if (!f)
        return NAN;
    len = fread(buf, 1, sizeof(buf) - 1, f);
    fclose(f);
    buf[len] = '\0';
    p = strrchr(buf, ')'); /* comm may hold spaces; fields resume after it */
    if (!p)
        return NAN;
    p++;
    for (int i = 3; i <= n; i++) {
        while (*p == ' ')
            p++;
        if (i == n)
            return strtod(p, NULL);
        while (*p && *p != ' ')
            p++;
    }
    return NAN;
}

static double proc_cpu(void *ud)
{
    double ticks = (double)sysconf(_SC_CLK_TCK);
    return (proc_stat_field(14) + proc_stat_field(15)) / ticks;
}

static double proc_rss(void *ud)
{
    return proc_stat_field(24) * (double)sysconf(_SC_PAGESIZE);
}

static double proc_fds(void *ud)
{
    DIR *d = opendir("/proc/self/fd");
    struct dirent *e;
    double n = 0;
    if (!d)
        return NAN;
    while ((e = readdir(d)))
        if (e->d_name[0] != '.')
            n++;
    closedir(d);
    return n - 1; /* the directory's own fd */
}

cm_err_t cm_metrics_register_process(cm_metrics_t *reg)
{
    cm_err_t err;
    proc_start_s = (double)cm_now_ms() / 1000.0;
    err = cm_metrics_gauge_fn(reg, "process_start_time_seconds",
                              "Start time of the process since unix epoch in seconds.",
                              proc_start, &proc_ud, NULL);
    if (!err)
        err = cm_metrics_counter_fn(reg, "process_cpu_seconds_total",
                                    "Total user and system CPU time spent in seconds.",
                                    proc_cpu, &proc_ud, NULL);
    if (!err)
        err = cm_metrics_gauge_fn(reg, "process_resident_memory_bytes",
                                  "Resident memory size in bytes.", proc_rss, &proc_ud, NULL);
    if (!err)
        err = cm_metrics_gauge_fn(reg, "process_open_fds", "Number of open file descriptors.",
                                  proc_fds, &proc_ud, NULL);
    return err;
}
