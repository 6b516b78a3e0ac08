/*
 * sessionizer_bench: the sessionizer's per-core cost without the network.
 *
 *  1. throughput: N Avro-encoded events (Confluent framing, as on the raw
 *     topic) are decoded (cm_avro fast path) and sessionized on one
 *     partition's state (sessionizer_state.c); every emitted session is
 *     Avro-encoded, and the changelog is flushed every 10 000 events
 *     (records encoded, not sent), as the transactional loop does.
 *     Users come in bursts of 10 events 2 ms apart and come back after more
 *     than the gap, so sessions open, close, are emitted and released.
 *  2. memory: 1 000 000 users with one event each (all sessions open);
 *     reports sz_part_bytes() / open sessions and the process RSS growth.
 *
 * Prints one JSON object. Built and run by bench/sessionizer.sh.
 */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "cm_avro.h"
#include "cm_event.h"
#include "cm_records.h"
#include "../services/sessionizer/sessionizer_changelog.h"
#include "../services/sessionizer/sessionizer_state.h"

static double now_s(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return ts.tv_sec + ts.tv_nsec / 1e9;
}

static double cpu_s(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_PROCESS_CPUTIME_ID, &ts);
    return ts.tv_sec + ts.tv_nsec / 1e9;
}

static long rss_kb(void)
{
    FILE *f = fopen("/proc/self/statm", "r");
    long pages = 0, rss = 0;
    if (f) {
        if (fscanf(f, "%ld %ld", &pages, &rss) != 2)
            rss = 0;
        fclose(f);
    }
    return rss * 4;
}

static const char *devices[] = {"desktop", "mobile", "tablet"};
static const char *countries[] = {"DE", "FR", "US", "GB", "IN"};
static const char *types[] = {"page_view", "page_view", "page_view", "product_view", "click",
                              "add_to_cart", "purchase", "page_view"};

static void make_event(cm_event_t *ev, uint64_t i, int64_t ts, uint64_t user, char *buf)
{
    cm_event_reset(ev);
    int n = snprintf(buf, 64, "e-%016llx-%llu", (unsigned long long)(i * 0x9e3779b97f4a7c15ULL),
                     (unsigned long long)i);
    cm_event_set_str(ev, &ev->event_id, buf, (size_t)n);
    n = snprintf(buf, 64, "user-%llu", (unsigned long long)user);
    cm_event_set_str(ev, &ev->user_id, buf, (size_t)n);
    const char *t = types[i % 8];
    cm_event_set_str(ev, &ev->event_type, t, strlen(t));
    ev->type = (cm_event_type_t)cm_event_type_parse(t);
    n = snprintf(buf, 64, "https://shop.example.com/product/%llu",
                 (unsigned long long)((i * 7919) % 1000));
    if (ev->type == CM_EV_PAGE_VIEW || ev->type == CM_EV_PRODUCT_VIEW)
        cm_event_set_str(ev, &ev->page_url, buf, (size_t)n);
    const char *d = devices[user % 3], *c = countries[user % 5];
    cm_event_set_str(ev, &ev->device_type, d, strlen(d));
    cm_event_set_str(ev, &ev->geo_country, c, strlen(c));
    ev->ts_ms = ts;
    ev->received_at_ms = ts + 20;
    if (ev->type == CM_EV_PURCHASE) {
        ev->has_price = true;
        ev->price_micros = 19990000;
        ev->quantity = 1;
    }
}

typedef struct sink {
    cm_buf_t enc;
    uint64_t sessions, bytes;
} sink_t;

static cm_err_t emit(const cm_session_t *s, void *ud)
{
    sink_t *k = ud;
    cm_buf_reset(&k->enc);
    cm_err_t err = cm_avro_encode_session(s, CM_SCHEMA_ID_SESSION, &k->enc);
    k->sessions++;
    k->bytes += k->enc.len;
    return err;
}

static cm_err_t put(const void *key, size_t klen, const void *val, size_t vlen, void *ud)
{
    uint64_t *n = ud;
    (void)key;
    (void)val;
    *n += klen + vlen;
    return CM_OK;
}

int main(int argc, char **argv)
{
    long n_events = argc > 1 ? atol(argv[1]) : 3000000;
    long n_open = argc > 2 ? atol(argv[2]) : 1000000;
    const int64_t T0 = 1700000000000LL;
    sz_params_t prm = {.gap_ms = 30 * 60000, .bound_ms = 10000, .lateness_ms = 5 * 60000};
    char errstr[256], sbuf[64];
    cm_event_t ev;
    cm_event_init(&ev);

    /* ---- 1. throughput: encode the input first (what the raw topic holds) */
    cm_buf_t in;
    cm_buf_init(&in, 0);
    size_t *offs = malloc(((size_t)n_events + 1) * sizeof(size_t));
    for (long i = 0; i < n_events; i++) {
        uint64_t user = ((uint64_t)i / 10) % 200000; /* back after 4000 s > gap */
        make_event(&ev, (uint64_t)i, T0 + i * 2, user, sbuf);
        offs[i] = in.len;
        if (cm_avro_encode_event(&ev, CM_SCHEMA_ID_EVENT, &in)) {
            fprintf(stderr, "encode failed\n");
            return 1;
        }
    }
    offs[n_events] = in.len;

    sz_part_t *p = sz_part_new(0, &prm, errstr, sizeof(errstr));
    sink_t sink = {0};
    cm_buf_init(&sink.enc, 0);
    cm_buf_t scratch;
    cm_buf_init(&scratch, 0);
    uint64_t cl_bytes = 0, accepted = 0;
    double w0 = now_s(), c0 = cpu_s();
    for (long i = 0; i < n_events; i++) {
        cm_avro_error_t aerr;
        if (cm_avro_decode_event(NULL, in.data + offs[i], offs[i + 1] - offs[i], &ev, NULL,
                                 &aerr)) {
            fprintf(stderr, "decode failed: %s\n", aerr.message);
            return 1;
        }
        sz_verdict_t v;
        if (sz_part_add_event(p, &ev, &v, emit, &sink))
            return 1;
        accepted += v == SZ_ACCEPTED;
        if (i % 10000 == 9999)
            sz_changelog_flush(p, &scratch, put, &cl_bytes);
    }
    sz_changelog_flush(p, &scratch, put, &cl_bytes);
    double wall = now_s() - w0, cpu = cpu_s() - c0;
    sz_part_destroy(p);

    /* ---- 2. memory at n_open open sessions */
    long rss0 = rss_kb();
    p = sz_part_new(0, &prm, errstr, sizeof(errstr));
    for (long u = 0; u < n_open; u++) {
        make_event(&ev, (uint64_t)u, T0 + u, (uint64_t)u, sbuf);
        sz_verdict_t v;
        if (sz_part_add_event(p, &ev, &v, NULL, NULL))
            return 1;
    }
    /* what a restored instance holds: the journal flushed to the changelog */
    sz_changelog_flush(p, &scratch, put, &cl_bytes);
    long rss1 = rss_kb();
    size_t bytes = sz_part_bytes(p);
    uint32_t open = sz_part_open_sessions(p);
    cm_dedupe_stats_t ds;
    cm_dedupe_get_stats(p->dedupe, &ds);

    printf("{\"events\": %ld, \"accepted\": %llu, \"sessions_emitted\": %llu, "
           "\"wall_s\": %.3f, \"cpu_s\": %.3f, \"events_per_s_per_core\": %.0f, "
           "\"changelog_bytes_per_event\": %.1f, \"open_sessions\": %u, "
           "\"state_bytes\": %zu, \"bytes_per_open_session\": %.1f, "
           "\"bytes_per_open_session_without_dedupe\": %.1f, "
           "\"rss_growth_bytes_per_open_session\": %.1f}\n",
           n_events, (unsigned long long)accepted, (unsigned long long)sink.sessions, wall, cpu,
           n_events / cpu, (double)cl_bytes / (double)(n_events + n_open), open, bytes,
           (double)bytes / open, (double)(bytes - ds.bytes) / open,
           (double)(rss1 - rss0) * 1024.0 / open);
    sz_part_destroy(p);
    cm_event_free(&ev);
    cm_buf_free(&in);
    cm_buf_free(&sink.enc);
    cm_buf_free(&scratch);
    free(offs);
    return 0;
}
