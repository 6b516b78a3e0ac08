/*
 * aggregator_micro: what one core of the aggregator can do, without Kafka
 * and Redis (bench/aggregator.sh builds and runs it).
 *
 *   aggregator_micro [EVENTS] [PARTITIONS]
 *
 * Generates EVENTS (default 2 000 000) events of 100 000 users over 10 000
 * URLs (Zipf-like), 20 categories, 30 countries, 5 device types, in event-time
 * order with a few seconds of disorder, 2 % duplicates, encodes them as Avro
 * with the Confluent header (what clickstream.raw holds), then times on one
 * thread:
 *   decode      cm_avro_decode_event only;
 *   pipeline    decode + windows (3 sizes, 5 dimensions, HLL, dedupe,
 *               folding) over PARTITIONS sources + what the loop does per
 *               commit (sending panes to the merger is modelled by encoding
 *               them, Redis by packing the changed HLLs): the source loop's
 *               CPU work per event. Best and median of 3 runs;
 *   aggregate   pipeline minus decode, per event;
 *   memory      after the first run: heap held by the state (malloc's
 *               in-use bytes, mallinfo2) minus the dedupe sets, per pane
 *               held (one window of one partition, open or closed and
 *               kept for Redis, as AGGREGATOR_KEEP_CLOSED=on does).
 * Prints one JSON object.
 */
#include <malloc.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "../services/aggregator/aggregator_merge.h"
#include "../services/aggregator/aggregator_window.h"
#include "cm_avro.h"
#include "cm_event.h"
#include "cm_time.h"

static uint64_t rng = 88172645463325252ULL;
static uint64_t xr(void)
{
    rng ^= rng << 13;
    rng ^= rng >> 7;
    rng ^= rng << 17;
    return rng;
}

static const char *cats[20] = {"shoes", "books", "toys",   "garden", "music",  "food",  "tools",
                               "games", "phones", "tv",    "audio",  "sport",  "bikes", "baby",
                               "beauty", "health", "pets", "office", "travel", "auto"};
static const char *types[6] = {"page_view", "page_view", "page_view", "product_view",
                               "add_to_cart", "purchase"};
static const char *devices[5] = {"desktop", "mobile", "tablet", "bot", "other"};

/* CPU time of this thread: "per core", and not skewed by other processes
 * sharing the machine (wall time is, a lot, on a busy box). */
static int64_t cpu_us(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_THREAD_CPUTIME_ID, &ts);
    return (int64_t)ts.tv_sec * 1000000 + ts.tv_nsec / 1000;
}
static double secs(int64_t t0) { return (double)(cpu_us() - t0) / 1e6; }

/* the generated events span 30 minutes of event time */
#define EVENT_TIME_MS 1800000LL

static size_t heap_in_use(void)
{
    struct mallinfo2 mi = mallinfo2();
    return mi.uordblks + mi.hblkhd;
}

int main(int argc, char **argv)
{
    long n = argc > 1 ? atol(argv[1]) : 2000000;
    int parts = argc > 2 ? atoi(argv[2]) : 12;
    cm_event_t ev;
    cm_event_init(&ev);
    cm_buf_t all;
    cm_buf_init(&all, 0);
    size_t *off = malloc(sizeof(size_t) * (size_t)(n + 1));
    int *part = malloc(sizeof(int) * (size_t)n);
    char buf[256], user[32], id[32], url[64], country[3];
    int64_t t0ms = 1700000000000LL;
    long last_dup = 0;
    for (long i = 0; i < n; i++) {
        cm_event_reset(&ev);
        long src = i;
        if (i > 100 && xr() % 50 == 0)
            src = i - 1 - (long)(xr() % 100); /* a duplicate of a recent event */
        uint64_t save = rng;
        rng = (uint64_t)src * 0x9E3779B97F4A7C15ULL + 1;
        for (int k = 0; k < 3; k++)
            xr();
        int u = (int)(xr() % 100000);
        uint64_t zr = xr() % 100000;
        int urlid = (int)(zr * zr / 1000000); /* skewed towards small ids */
        snprintf(user, sizeof(user), "user-%d", u);
        snprintf(id, sizeof(id), "ev-%ld", src);
        snprintf(url, sizeof(url), "https://shop.example/p/%d", urlid);
        country[0] = (char)('A' + xr() % 6);
        country[1] = (char)('A' + xr() % 5);
        country[2] = 0;
        const char *t = types[xr() % 6];
        cm_event_set_str(&ev, &ev.event_id, id, strlen(id));
        cm_event_set_str(&ev, &ev.user_id, user, strlen(user));
        cm_event_set_str(&ev, &ev.event_type, t, strlen(t));
        ev.type = (cm_event_type_t)cm_event_type_parse(t);
        cm_event_set_str(&ev, &ev.page_url, url, strlen(url));
        cm_event_set_str(&ev, &ev.geo_country, country, 2);
        const char *d = devices[xr() % 5];
        cm_event_set_str(&ev, &ev.device_type, d, strlen(d));
        const char *c = cats[xr() % 20];
        cm_event_set_str(&ev, &ev.category, c, strlen(c));
        cm_event_set_str(&ev, &ev.ip_address, "10.1.2.0", 8);
        if (ev.type == CM_EV_PURCHASE) {
            ev.has_price = true;
            ev.price_micros = (int64_t)(xr() % 100000) * 10000;
            ev.quantity = 1 + (int)(xr() % 3);
        }
        /* EVENT_TIME_MS of event time, up to 5 s of disorder */
        ev.ts_ms = t0ms + src * EVENT_TIME_MS / n - (int64_t)(xr() % 5000);
        ev.received_at_ms = ev.ts_ms;
        part[i] = u % parts;
        rng = save;
        off[i] = all.len;
        if (cm_avro_encode_event(&ev, CM_SCHEMA_ID_EVENT, &all)) {
            fprintf(stderr, "encode failed\n");
            return 1;
        }
        last_dup += src != i;
    }
    off[n] = all.len;
    (void)buf;

    /* decode only */
    int64_t t = cpu_us();
    for (long i = 0; i < n; i++)
        if (cm_avro_decode_event(NULL, all.data + off[i], off[i + 1] - off[i], &ev, NULL, NULL))
            return 1;
    double s_dec = secs(t);

    ag_window_opts_t o = {.bound_ms = 10000, .lateness_ms = 300000, .idle_ms = 30000,
                          .keep_closed_ms = {3600000, 6 * 3600000LL, 48 * 3600000LL}};
    char err[128];
    enum { RUNS = 3 };
    double runs[RUNS];
    long applied = 0;
    cm_buf_t out;
    cm_buf_init(&out, 0);
    static uint8_t packed[CM_HLL_REDIS_SIZE];
    size_t mem_state = 0, mem_dedupe = 0, panes_open = 0, panes_kept = 0;
    size_t panes_by_size[AG_N_SIZES] = {0};
    for (int run = 0; run < RUNS; run++) {
        size_t heap0 = heap_in_use();
        ag_state_t *st = ag_state_new(&o, err, sizeof(err));
        ag_source_t **src = calloc((size_t)parts, sizeof(*src));
        for (int p = 0; p < parts; p++)
            src[p] = ag_state_source(st, AG_SRC_RAW, p, CM_WATERMARK_NONE, 0);
        applied = 0;
        t = cpu_us();
        for (long i = 0; i < n; i++) {
            if (cm_avro_decode_event(NULL, all.data + off[i], off[i + 1] - off[i], &ev, NULL,
                                     NULL))
                return 1;
            ag_result_t r;
            if (ag_source_event(st, src[part[i]], &ev, i, 0, &r))
                return 1;
            applied += r == AG_APPLIED;
            if (i % 100000 == 99999) { /* one "commit", ~200 ms at 500k/s */
                /* final panes to the merger, dirty HLLs packed for Redis,
                 * flags cleared as the real flush does */
                for (int p = 0; p < parts; p++) {
                    ag_source_t *s = src[p];
                    ag_source_fold(st, s);
                    for (size_t j = 0; j < s->n_open + s->n_closed; j++) {
                        ag_pane_t *q = j < s->n_open ? s->open[j] : s->closed[j - s->n_open];
                        if (q->changed && q->final) {
                            cm_buf_reset(&out);
                            ag_pane_encode(s, q, &out);
                            q->changed = false;
                        }
                        if (q->redis_hll_dirty)
                            cm_hll_to_redis(q->hll, packed);
                        q->redis_totals_dirty = q->redis_hll_dirty = q->redis_full = false;
                        for (int d = 0; d < AG_N_DIMS; d++)
                            ag_counts_clean(&q->dims[d]);
                    }
                    ag_source_advance(st, s);
                }
            }
        }
        runs[run] = secs(t);
        if (run == 0) {
            mem_state = heap_in_use() - heap0;
            for (int p = 0; p < parts; p++) {
                cm_dedupe_stats_t ds;
                cm_dedupe_get_stats(src[p]->dedupe, &ds);
                mem_dedupe += ds.bytes;
                panes_open += src[p]->n_open;
                panes_kept += src[p]->n_closed;
                for (size_t j = 0; j < src[p]->n_open + src[p]->n_closed; j++) {
                    ag_pane_t *q = j < src[p]->n_open ? src[p]->open[j]
                                                      : src[p]->closed[j - src[p]->n_open];
                    panes_by_size[q->size_idx]++;
                }
            }
        }
        free(src);
        ag_state_destroy(st);
    }
    /* best and median of the runs (the machine may be shared) */
    for (int i = 0; i < RUNS; i++)
        for (int j = i + 1; j < RUNS; j++)
            if (runs[j] < runs[i]) {
                double x = runs[i];
                runs[i] = runs[j];
                runs[j] = x;
            }
    double best = runs[0], med = runs[RUNS / 2];
    double agg_ns = (best - s_dec) * 1e9 / (double)n;
    printf("{\"events\":%ld,\"partitions\":%d,\"runs\":%d,\"event_time_s\":%d,"
           "\"duplicates\":%ld,\"applied\":%ld,"
           "\"avro_bytes_per_event\":%.0f,\"decode_per_s\":%.0f,"
           "\"aggregate_ns_per_event\":%.0f,\"pipeline_per_s\":%.0f,"
           "\"pipeline_median_per_s\":%.0f,\"pipeline_ns_per_event\":%.0f,"
           "\"state_heap_bytes\":%zu,\"dedupe_bytes\":%zu,\"panes_open\":%zu,"
           "\"panes_kept\":%zu,\"panes_1min\":%zu,\"panes_5min\":%zu,\"panes_1h\":%zu,"
           "\"bytes_per_pane\":%.0f}\n",
           n, parts, (int)RUNS, (int)(EVENT_TIME_MS / 1000), last_dup, applied, (double)all.len / (double)n, (double)n / s_dec, agg_ns,
           (double)n / best, (double)n / med, best * 1e9 / (double)n, mem_state, mem_dedupe,
           panes_open, panes_kept, panes_by_size[0], panes_by_size[1], panes_by_size[2],
           panes_open + panes_kept
               ? (double)(mem_state - mem_dedupe) / (double)(panes_open + panes_kept)
               : 0.0);
    cm_buf_free(&all);
    cm_buf_free(&out);
    cm_event_free(&ev);
    free(off);
    free(part);
    return 0;
}
