/*
 * lg_gen.h: the deterministic clickstream of cs-loadgen.
 *
 * N simulated users of a shop live on a simulated clock: sessions of events
 * separated by think times, sessions separated by gaps longer than 30 min,
 * Zipf-popular URLs and products, and a funnel (browse -> product_view ->
 * add_to_cart -> purchase). Into that stream go, at configured fractions,
 * exact duplicates, out-of-order events (a few seconds back, within the 10 s
 * bound), late events (20 min back: beyond bound + 5 min lateness) and
 * invalid events (each breaks one SPEC §1 rule).
 *
 * The stream is a pure function of the options (seed, users, start time,
 * ...): it does not depend on timing, rates or concurrency. Two PRNGs are
 * used: "flow" decides everything that moves the clock (so lg_gen_span() can
 * replay the timing alone, cheaply), "content" fills the events.
 */
#ifndef LG_GEN_H
#define LG_GEN_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "cm_buf.h"

typedef enum lg_kind {
    LG_OK = 0,
    LG_DUP,     /* an exact copy of a recent event */
    LG_OOO,     /* timestamp a few seconds before the user's clock */
    LG_LATE,    /* timestamp `late_ms` before the simulated clock */
    LG_INVALID, /* breaks one SPEC §1 rule: the gateway must refuse it */
    LG__KINDS
} lg_kind_t;

const char *lg_kind_name(lg_kind_t k);

typedef struct lg_gen_opts {
    uint64_t seed;
    uint32_t users;
    int64_t start_ms;      /* simulated clock at the start */
    int64_t think_ms;      /* mean think time between events of a session */
    int64_t gap_ms;        /* mean extra gap between sessions (on top of 31 min) */
    double session_events; /* mean events per session */
    double f_dup, f_ooo, f_late, f_invalid;
    int64_t ooo_max_ms; /* out-of-order events are 1 s .. this far back */
    int64_t late_ms;    /* late events are this far behind the clock */
    uint32_t urls, products;
    double zipf_s;
} lg_gen_opts_t;

/* Defaults: seed 1, 1000 users, think 20 s, gap 2 h, 8 events/session,
 * no anomalies, ooo 8 s, late 20 min, 500 URLs, 2000 products, Zipf 1.1. */
void lg_gen_opts_default(lg_gen_opts_t *o);

typedef struct lg_gen lg_gen_t;

/* NULL on allocation failure. Free with lg_gen_destroy (NULL: no-op). */
lg_gen_t *lg_gen_new(const lg_gen_opts_t *o);
void lg_gen_destroy(lg_gen_t *g);

/*
 * Appends the next event's JSON text (one object, no newline) to out and
 * returns its kind. *ts_ms gets its event time (for invalid ones the time it
 * would have had). seq numbers start at 0.
 */
lg_kind_t lg_gen_next(lg_gen_t *g, cm_buf_t *out, int64_t *ts_ms);

/* The simulated clock now (the newest regular event time so far). */
int64_t lg_gen_clock(const lg_gen_t *g);
uint64_t lg_gen_count(const lg_gen_t *g);

/* How far the simulated clock moves over the first `count` events (replays
 * the flow PRNG only). */
int64_t lg_gen_span(const lg_gen_opts_t *o, uint64_t count);

#endif
