/*
 * cm_metrics.h: counters, gauges and histograms, exposed in the Prometheus
 * text format 0.0.4 (SPEC §8, /metrics).
 *
 * A family (one metric name) has a type, a help text and a fixed list of
 * label names; a series is one child of it with its label values. A series
 * is created once, at start-up or when its label value first shows up, and
 * the handle is kept: the hot path is then a single relaxed atomic add on it,
 * with no lookup and no lock.
 *
 *   cm_counter_t *ok = cm_metrics_counter(reg, "gateway_requests_total",
 *                                         "HTTP requests by status",
 *                                         "status", "202", NULL);
 *   cm_counter_inc(ok);
 *
 * Labels are given after the help as name, value pairs ending with NULL; no
 * pair at all is an unlabelled series. Asking again for the same name and
 * label values returns the same handle, so two modules may share a series.
 *
 * Creating functions never return NULL. A programming error (a name or label
 * name that Prometheus rejects, a name reused with another type or other
 * label names, other histogram buckets, a family over CM_METRICS_MAX_SERIES
 * children) or an allocation failure logs an error, counts in
 * cm_metrics_errors() and gives a detached series: it takes updates and is
 * never exported. Tests assert cm_metrics_errors(reg) == 0.
 *
 * Thread safety: updates from any thread at any time; creation, removal and
 * rendering take the registry's mutex. Families are rendered sorted by name,
 * series sorted by their label values.
 *
 * Ownership: the registry owns every family and series; handles stay valid
 * until cm_metrics_destroy() or the series' *_remove().
 */
#ifndef CM_METRICS_H
#define CM_METRICS_H

#include <stdatomic.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "cm_buf.h"
#include "cm_err.h"

/* Children of one family; beyond it label values are rejected, which keeps a
 * label fed from outside input from growing the registry without bound. */
#define CM_METRICS_MAX_SERIES 10000
/* Label values longer than this are cut (also a guard against outside input). */
#define CM_METRICS_MAX_LABEL_VALUE 256

typedef struct cm_metrics cm_metrics_t;
typedef struct cm_counter cm_counter_t;
typedef struct cm_gauge cm_gauge_t;
typedef struct cm_histogram cm_histogram_t;

/* The layout is public only so that updates inline; use the functions. */
struct cm_counter {
    _Atomic uint64_t value;
};
struct cm_gauge {
    _Atomic uint64_t bits; /* the double's bits */
};

/* Returns NULL on allocation failure. */
cm_metrics_t *cm_metrics_new(void);
/* Frees the registry and every series; handles die with it. NULL is a no-op. */
void cm_metrics_destroy(cm_metrics_t *reg);

/* Registrations rejected so far (see above). */
size_t cm_metrics_errors(cm_metrics_t *reg);

/* ----------------------------------------------------------- counters */

cm_counter_t *cm_metrics_counter(cm_metrics_t *reg, const char *name, const char *help,
                                 ... /* label name, value pairs, NULL */)
    __attribute__((sentinel));
/* Same, with the pairs in an array: {"status", "202", NULL}; NULL for none. */
cm_counter_t *cm_metrics_counterv(cm_metrics_t *reg, const char *name, const char *help,
                                  const char *const *labels);

static inline void cm_counter_inc(cm_counter_t *c)
{
    atomic_fetch_add_explicit(&c->value, 1, memory_order_relaxed);
}
static inline void cm_counter_add(cm_counter_t *c, uint64_t n)
{
    atomic_fetch_add_explicit(&c->value, n, memory_order_relaxed);
}
static inline uint64_t cm_counter_get(const cm_counter_t *c)
{
    return atomic_load_explicit(&c->value, memory_order_relaxed);
}
/* Takes the series out of the registry and frees it; the handle dies. */
void cm_counter_remove(cm_metrics_t *reg, cm_counter_t *c);

/* ------------------------------------------------------------- gauges */

cm_gauge_t *cm_metrics_gauge(cm_metrics_t *reg, const char *name, const char *help,
                             ... /* label name, value pairs, NULL */)
    __attribute__((sentinel));
cm_gauge_t *cm_metrics_gaugev(cm_metrics_t *reg, const char *name, const char *help,
                              const char *const *labels);

static inline void cm_gauge_set(cm_gauge_t *g, double v)
{
    union {
        double d;
        uint64_t u;
    } x = {.d = v};
    atomic_store_explicit(&g->bits, x.u, memory_order_relaxed);
}
static inline void cm_gauge_set_int(cm_gauge_t *g, int64_t v) { cm_gauge_set(g, (double)v); }
static inline double cm_gauge_get(const cm_gauge_t *g)
{
    union {
        double d;
        uint64_t u;
    } x = {.u = atomic_load_explicit(&g->bits, memory_order_relaxed)};
    return x.d;
}
/* A compare-and-swap loop (a double has no atomic add); exact for integers
 * below 2^53. */
void cm_gauge_add(cm_gauge_t *g, double delta);
static inline void cm_gauge_inc(cm_gauge_t *g) { cm_gauge_add(g, 1.0); }
static inline void cm_gauge_dec(cm_gauge_t *g) { cm_gauge_add(g, -1.0); }
void cm_gauge_remove(cm_metrics_t *reg, cm_gauge_t *g);

/*
 * Series whose value a function computes at scrape time (queue depth,
 * consumer lag, librdkafka statistics). `fn(ud)` is called from the thread
 * that renders, under the registry mutex: it must be thread-safe, quick, and
 * must not call cm_metrics_* itself. Registering the same name and labels
 * again replaces fn and ud. Call cm_metrics_unbind(reg, ud) before `ud` dies.
 * Returns CM_OK, or CM_ERR_INVALID / CM_ERR_NOMEM (also counted and logged).
 */
typedef double (*cm_metrics_fn)(void *ud);
cm_err_t cm_metrics_gauge_fn(cm_metrics_t *reg, const char *name, const char *help,
                             cm_metrics_fn fn, void *ud, ... /* pairs, NULL */)
    __attribute__((sentinel));
/* A counter read from a function (a monotonic total kept elsewhere). */
cm_err_t cm_metrics_counter_fn(cm_metrics_t *reg, const char *name, const char *help,
                               cm_metrics_fn fn, void *ud, ... /* pairs, NULL */)
    __attribute__((sentinel));
/* Removes every function series whose ud is `ud`; returns how many. */
size_t cm_metrics_unbind(cm_metrics_t *reg, void *ud);

/* --------------------------------------------------------- histograms */

/*
 * `bounds` are the upper bounds of the buckets, strictly increasing and
 * finite, copied; +Inf is implicit. NULL uses CM_METRICS_DEFAULT_BUCKETS.
 * The first creation of a family fixes its buckets; later calls for other
 * children may pass NULL (inherit) or the same bounds.
 */
cm_histogram_t *cm_metrics_histogram(cm_metrics_t *reg, const char *name, const char *help,
                                     const double *bounds, size_t nbounds,
                                     ... /* pairs, NULL */) __attribute__((sentinel));
cm_histogram_t *cm_metrics_histogramv(cm_metrics_t *reg, const char *name,
                                      const char *help, const double *bounds,
                                      size_t nbounds, const char *const *labels);

/* Finds the bucket (binary search, no lock), then one atomic add to that
 * bucket's count and a CAS loop on the sum. There is no separate count: it is
 * the total of the buckets, so `+Inf` always equals `_count` in a scrape. A
 * NaN lands in +Inf (and makes the sum NaN), as in Prometheus' clients. */
void cm_histogram_observe(cm_histogram_t *h, double v);
uint64_t cm_histogram_count(const cm_histogram_t *h);
double cm_histogram_sum(const cm_histogram_t *h);
void cm_histogram_remove(cm_metrics_t *reg, cm_histogram_t *h);

/* Prometheus' client default: seconds from 5 ms to 10 s. */
#define CM_METRICS_DEFAULT_BUCKETS_N 11
extern const double CM_METRICS_DEFAULT_BUCKETS[CM_METRICS_DEFAULT_BUCKETS_N];

/* Fills out[n] with start, start*factor, ...; CM_ERR_INVALID unless start > 0,
 * factor > 1 and n >= 1. */
cm_err_t cm_metrics_buckets_exp(double start, double factor, size_t n, double *out);
/* Fills out[n] with start, start+width, ...; CM_ERR_INVALID unless width > 0. */
cm_err_t cm_metrics_buckets_linear(double start, double width, size_t n, double *out);

/* ---------------------------------------------------------- exposition */

/*
 * Appends the whole registry to `out` in the Prometheus text format 0.0.4:
 * per family `# HELP`, `# TYPE`, then its samples. CM_ERR_TOO_LARGE when the
 * buffer's cap is hit (out is then cut, not to be served).
 */
cm_err_t cm_metrics_render(cm_metrics_t *reg, cm_buf_t *out);

/* The Content-Type of that text. */
#define CM_METRICS_CONTENT_TYPE "text/plain; version=0.0.4; charset=utf-8"

/*
 * Registers process_start_time_seconds, process_resident_memory_bytes,
 * process_cpu_seconds_total and process_open_fds (read from /proc at scrape
 * time), as most Prometheus clients do.
 */
cm_err_t cm_metrics_register_process(cm_metrics_t *reg);

#endif
