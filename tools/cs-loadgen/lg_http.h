/*
 * lg_http.h: the HTTP side of cs-loadgen: libcurl's multi interface with N
 * concurrent keep-alive connections, requests of B events, an optional
 * events/s pace, retries of 429/503/connection errors (Retry-After honoured),
 * and the figures of the run.
 */
#ifndef LG_HTTP_H
#define LG_HTTP_H

#include <stdbool.h>
#include <stdint.h>
#include <stdio.h>

#include "lg_gen.h"

typedef enum lg_format { LG_FMT_AUTO = 0, LG_FMT_ARRAY, LG_FMT_NDJSON } lg_format_t;

typedef struct lg_run_opts {
    const char *url;
    const char *key;        /* NULL: no Authorization header */
    uint32_t batch;         /* events per request */
    uint32_t concurrency;   /* connections */
    double rate;            /* events/s; 0: as fast as possible */
    int64_t duration_ms;    /* 0: no time limit */
    uint64_t count;         /* 0: no count limit */
    int64_t max_clock_ms;   /* stop generating past this event time (0: none) */
    lg_format_t format;
    bool gzip;
    int retries;
    int64_t timeout_ms;     /* per request */
    FILE *out;              /* the stream as sent, NDJSON with _lg; may be NULL */
    double progress_s;      /* 0: no progress line */
    bool progress_tty;      /* rewrite one line (\r) instead of printing lines */
} lg_run_opts_t;

#define LG_STATUS_SLOTS 600

typedef struct lg_stats {
    uint64_t events, by_kind[LG__KINDS];
    uint64_t requests, attempts, retries;
    uint64_t accepted, rejected, failed_events, failed_requests;
    uint64_t conn_errors;
    uint64_t status[LG_STATUS_SLOTS]; /* by HTTP code */
    uint64_t bytes_sent;
    double elapsed_s;
    uint32_t *lat_us; /* one per answered attempt */
    size_t n_lat, cap_lat;
} lg_stats_t;

/* Runs the load; 0, or -1 with a message on stderr (setup failure). */
int lg_run(const lg_run_opts_t *o, lg_gen_t *gen, lg_stats_t *st);

/* Percentile (0..100) of the recorded latencies in ms; sorts them. */
double lg_stats_pct_ms(lg_stats_t *st, double p);
void lg_stats_free(lg_stats_t *st);

#endif
