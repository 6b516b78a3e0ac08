/*
 * lg_http.c: the request engine of cs-loadgen (see lg_http.h).
 *
 * One thread drives every connection through curl_multi: an idle slot takes
 * the next B events of the generator (so the stream's content never depends
 * on which connection sends it), formats and optionally gzips the body,
 * writes the events to the --out file, and sends. A slot whose answer is
 * 429/503 or a connection error sends the SAME body again later.
 */
#include <curl/curl.h>
#include <jansson.h>
#include <math.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>
#include <zlib.h>

#include "cm_buf.h"
#include "cm_time.h"
#include "lg_http.h"

#define LG_RESP_MAX (256 * 1024)

typedef struct lg_slot {
    CURL *h;
    cm_buf_t body, plain, resp;
    uint32_t n_events;
    uint64_t first_seq;
    int attempts;
    bool busy, waiting;
    int64_t retry_at_us, t_send_us;
    long retry_after_s;
} lg_slot_t;

typedef struct lg_run {
    const lg_run_opts_t *o;
    lg_gen_t *gen;
    lg_stats_t *st;
    CURLM *multi;
    struct curl_slist *hdrs;
    lg_slot_t *slots;
    uint64_t seq, req_no;
    bool gen_done;
    int64_t t0_us, next_due_us;
    cm_buf_t line; /* scratch for the --out file */
    /* progress */
    int64_t last_prog_us;
    uint64_t prog_events, prog_requests;
    size_t prog_lat_from;
} lg_run_t;

static size_t lg_on_body(char *p, size_t sz, size_t n, void *ud)
{
    lg_slot_t *s = ud;
    size_t len = sz * n;
    cm_buf_append(&s->resp, p, len); /* capped: the rest is dropped */
    return len;
}

static size_t lg_on_header(char *p, size_t sz, size_t n, void *ud)
{
    lg_slot_t *s = ud;
    size_t len = sz * n;
    if (len > 12 && strncasecmp(p, "Retry-After:", 12) == 0)
        s->retry_after_s = strtol(p + 12, NULL, 10);
    return len;
}

static void lg_lat(lg_stats_t *st, uint32_t us)
{
    if (st->n_lat == st->cap_lat) {
        size_t cap = st->cap_lat ? st->cap_lat * 2 : 65536;
        uint32_t *v = realloc(st->lat_us, cap * sizeof(*v));
        if (!v)
            return;
        st->lat_us = v;
        st->cap_lat = cap;
    }
    st->lat_us[st->n_lat++] = us;
}

static int lg_cmp_u32(const void *a, const void *b)
{
    uint32_t x = *(const uint32_t *)a, y = *(const uint32_t *)b;
    return x < y ? -1 : x > y;
}

static double lg_pct(uint32_t *v, size_t n, double p)
{
    if (!n)
        return 0;
    qsort(v, n, sizeof(*v), lg_cmp_u32);
    size_t i = (size_t)ceil(p / 100.0 * (double)n);
    i = i ? i - 1 : 0;
    return v[i < n ? i : n - 1] / 1000.0;
}

double lg_stats_pct_ms(lg_stats_t *st, double p) { return lg_pct(st->lat_us, st->n_lat, p); }

void lg_stats_free(lg_stats_t *st)
{
    free(st->lat_us);
    st->lat_us = NULL;
    st->n_lat = st->cap_lat = 0;
}

static int lg_gzip(const cm_buf_t *in, cm_buf_t *out)
{
    z_stream zs;
    memset(&zs, 0, sizeof(zs));
    if (deflateInit2(&zs, 1, Z_DEFLATED, 15 + 16, 8, Z_DEFAULT_STRATEGY) != Z_OK)
        return -1;
    size_t bound = deflateBound(&zs, in->len) + 32;
    cm_buf_reset(out);
    if (cm_buf_reserve(out, bound)) {
        deflateEnd(&zs);
        return -1;
    }
    zs.next_in = in->data;
    zs.avail_in = (uInt)in->len;
    zs.next_out = out->data;
    zs.avail_out = (uInt)bound;
    int rc = deflate(&zs, Z_FINISH);
    out->len = bound - zs.avail_out;
    deflateEnd(&zs);
    return rc == Z_STREAM_END ? 0 : -1;
}

static bool lg_may_generate(lg_run_t *r, int64_t now)
{
    const lg_run_opts_t *o = r->o;
    if (r->gen_done)
        return false;
    if ((o->count && r->seq >= o->count) ||
        (o->duration_ms && now - r->t0_us >= o->duration_ms * 1000) ||
        (o->max_clock_ms && lg_gen_clock(r->gen) > o->max_clock_ms)) {
        if (o->max_clock_ms && lg_gen_clock(r->gen) > o->max_clock_ms)
            fprintf(stderr, "\ncs-loadgen: the simulated clock reached the wall clock; "
                            "stopping (use --start further back)\n");
        r->gen_done = true;
        return false;
    }
    return true;
}

static void lg_start(lg_run_t *r, lg_slot_t *s)
{
    s->busy = true;
    s->waiting = false;
    s->attempts++;
    s->retry_after_s = 0;
    cm_buf_reset(&s->resp);
    curl_easy_setopt(s->h, CURLOPT_POSTFIELDS, (char *)s->body.data);
    curl_easy_setopt(s->h, CURLOPT_POSTFIELDSIZE_LARGE, (curl_off_t)s->body.len);
    s->t_send_us = cm_mono_us();
    r->st->attempts++;
    r->st->bytes_sent += s->body.len;
    curl_multi_add_handle(r->multi, s->h);
}

/* Fills the slot with the next request of the stream. */
static void lg_fill(lg_run_t *r, lg_slot_t *s)
{
    const lg_run_opts_t *o = r->o;
    lg_format_t fmt = o->format;
    if (fmt == LG_FMT_AUTO)
        fmt = o->batch > 1 ? LG_FMT_ARRAY : LG_FMT_AUTO;
    cm_buf_t *b = o->gzip ? &s->plain : &s->body;
    cm_buf_reset(b);
    s->n_events = 0;
    s->first_seq = r->seq;
    s->attempts = 0;
    uint64_t req = r->req_no++;
    if (fmt == LG_FMT_ARRAY)
        cm_buf_putc(b, '[');
    for (uint32_t i = 0; i < o->batch; i++) {
        if (i && !lg_may_generate(r, cm_mono_us()))
            break;
        if (i)
            cm_buf_putc(b, fmt == LG_FMT_NDJSON ? '\n' : ',');
        size_t at = b->len;
        int64_t ts;
        lg_kind_t k = lg_gen_next(r->gen, b, &ts);
        r->st->events++;
        r->st->by_kind[k]++;
        if (o->out) {
            cm_buf_reset(&r->line);
            cm_buf_printf(&r->line, "{\"_lg\":{\"kind\":\"%s\",\"seq\":%llu,\"req\":%llu},",
                          lg_kind_name(k), (unsigned long long)r->seq, (unsigned long long)req);
            cm_buf_append(&r->line, b->data + at + 1, b->len - at - 1);
            cm_buf_putc(&r->line, '\n');
            fwrite(r->line.data, 1, r->line.len, o->out);
        }
        r->seq++;
        s->n_events++;
    }
    if (fmt == LG_FMT_ARRAY)
        cm_buf_putc(b, ']');
    if (fmt == LG_FMT_NDJSON)
        cm_buf_putc(b, '\n');
    if (o->gzip && lg_gzip(&s->plain, &s->body)) {
        fprintf(stderr, "cs-loadgen: gzip failed\n");
        exit(1);
    }
    r->st->requests++;
}

static void lg_done(lg_run_t *r, lg_slot_t *s, CURLcode cc)
{
    lg_stats_t *st = r->st;
    long code = 0;
    curl_multi_remove_handle(r->multi, s->h);
    s->busy = false;
    if (cc == CURLE_OK)
        curl_easy_getinfo(s->h, CURLINFO_RESPONSE_CODE, &code);
    if (cc != CURLE_OK)
        st->conn_errors++;
    else {
        lg_lat(st, (uint32_t)((cm_mono_us() - s->t_send_us) > UINT32_MAX
                                  ? UINT32_MAX
                                  : (cm_mono_us() - s->t_send_us)));
        st->status[code > 0 && code < LG_STATUS_SLOTS ? code : 0]++;
    }
    bool retriable = cc != CURLE_OK || code == 429 || code == 503;
    if (retriable && s->attempts <= r->o->retries) {
        int64_t delay_ms = s->retry_after_s > 0 ? s->retry_after_s * 1000
                                                : 100LL << (s->attempts < 6 ? s->attempts : 6);
        if (delay_ms > 10000)
            delay_ms = 10000;
        s->waiting = true;
        s->retry_at_us = cm_mono_us() + delay_ms * 1000;
        st->retries++;
        return;
    }
    if (code == 202 || code == 200 || code == 400) {
        json_t *j = json_loadb((const char *)s->resp.data, s->resp.len, 0, NULL);
        json_t *a = j ? json_object_get(j, "accepted") : NULL;
        json_t *rj = j ? json_object_get(j, "rejected") : NULL;
        uint64_t acc = json_is_integer(a) ? (uint64_t)json_integer_value(a) : 0;
        uint64_t rej = json_is_integer(rj) ? (uint64_t)json_integer_value(rj)
                       : code == 400        ? s->n_events
                                            : 0;
        st->accepted += acc;
        st->rejected += rej;
        json_decref(j);
        return;
    }
    st->failed_requests++;
    st->failed_events += s->n_events;
}

static void lg_progress(lg_run_t *r, int64_t now, bool final)
{
    const lg_run_opts_t *o = r->o;
    lg_stats_t *st = r->st;
    double dt = (double)(now - r->last_prog_us) / 1e6;
    if (o->progress_s <= 0 || (!final && dt < o->progress_s))
        return;
    if (final && !o->progress_tty)
        return; /* the summary follows; a line per interval was printed */
    if (final) { /* the rewritten line ends with the whole run's figures */
        r->last_prog_us = r->t0_us;
        r->prog_events = r->prog_requests = 0;
        r->prog_lat_from = 0;
        dt = (double)(now - r->t0_us) / 1e6;
    }
    size_t nl = st->n_lat - r->prog_lat_from;
    uint32_t *tmp = nl ? malloc(nl * sizeof(*tmp)) : NULL;
    double p50 = 0, p99 = 0;
    if (tmp) {
        memcpy(tmp, st->lat_us + r->prog_lat_from, nl * sizeof(*tmp));
        p50 = lg_pct(tmp, nl, 50);
        p99 = lg_pct(tmp, nl, 99);
        free(tmp);
    }
    double ev_s = dt > 0 ? (double)(st->events - r->prog_events) / dt : 0;
    double rq_s = dt > 0 ? (double)(st->attempts - r->prog_requests) / dt : 0;
    fprintf(stderr,
            "%s[%6.1fs] sent %llu ev (%.0f ev/s, %.0f req/s) accepted %llu rejected %llu "
            "failed %llu retries %llu | p50 %.2f ms p99 %.2f ms%s",
            o->progress_tty ? "\r" : "", (double)(now - r->t0_us) / 1e6,
            (unsigned long long)st->events, ev_s, rq_s, (unsigned long long)st->accepted,
            (unsigned long long)st->rejected, (unsigned long long)st->failed_events,
            (unsigned long long)st->retries, p50, p99,
            o->progress_tty ? (final ? "\n" : "   ") : "\n");
    fflush(stderr);
    r->last_prog_us = now;
    r->prog_events = st->events;
    r->prog_requests = st->attempts;
    r->prog_lat_from = st->n_lat;
}

int lg_run(const lg_run_opts_t *o, lg_gen_t *gen, lg_stats_t *st)
{
    lg_run_t r;
    memset(&r, 0, sizeof(r));
    r.o = o;
    r.gen = gen;
    r.st = st;
    cm_buf_init(&r.line, 0);
    if (curl_global_init(CURL_GLOBAL_DEFAULT)) {
        fprintf(stderr, "cs-loadgen: curl_global_init failed\n");
        return -1;
    }
    r.multi = curl_multi_init();
    curl_multi_setopt(r.multi, CURLMOPT_MAX_HOST_CONNECTIONS, (long)o->concurrency);
    curl_multi_setopt(r.multi, CURLMOPT_MAXCONNECTS, (long)o->concurrency);
    r.hdrs = curl_slist_append(r.hdrs, "Expect:");
    r.hdrs = curl_slist_append(r.hdrs, o->format == LG_FMT_NDJSON
                                           ? "Content-Type: application/x-ndjson"
                                           : "Content-Type: application/json");
    if (o->gzip)
        r.hdrs = curl_slist_append(r.hdrs, "Content-Encoding: gzip");
    if (o->key) {
        char auth[600];
        snprintf(auth, sizeof(auth), "Authorization: Bearer %s", o->key);
        r.hdrs = curl_slist_append(r.hdrs, auth);
    }
    r.slots = calloc(o->concurrency, sizeof(*r.slots));
    if (!r.multi || !r.hdrs || !r.slots) {
        fprintf(stderr, "cs-loadgen: out of memory\n");
        return -1;
    }
    for (uint32_t i = 0; i < o->concurrency; i++) {
        lg_slot_t *s = &r.slots[i];
        cm_buf_init(&s->body, 0);
        cm_buf_init(&s->plain, 0);
        cm_buf_init(&s->resp, LG_RESP_MAX);
        s->h = curl_easy_init();
        curl_easy_setopt(s->h, CURLOPT_URL, o->url);
        curl_easy_setopt(s->h, CURLOPT_POST, 1L);
        curl_easy_setopt(s->h, CURLOPT_HTTPHEADER, r.hdrs);
        curl_easy_setopt(s->h, CURLOPT_WRITEFUNCTION, lg_on_body);
        curl_easy_setopt(s->h, CURLOPT_WRITEDATA, s);
        curl_easy_setopt(s->h, CURLOPT_HEADERFUNCTION, lg_on_header);
        curl_easy_setopt(s->h, CURLOPT_HEADERDATA, s);
        curl_easy_setopt(s->h, CURLOPT_PRIVATE, s);
        curl_easy_setopt(s->h, CURLOPT_TIMEOUT_MS, (long)o->timeout_ms);
        curl_easy_setopt(s->h, CURLOPT_TCP_NODELAY, 1L);
        curl_easy_setopt(s->h, CURLOPT_NOSIGNAL, 1L);
    }
    r.t0_us = r.last_prog_us = r.next_due_us = cm_mono_us();
    double us_per_req = o->rate > 0 ? 1e6 * o->batch / o->rate : 0;

    for (;;) {
        int64_t now = cm_mono_us();
        bool active = false;
        for (uint32_t i = 0; i < o->concurrency; i++) {
            lg_slot_t *s = &r.slots[i];
            if (s->busy) {
                active = true;
                continue;
            }
            if (s->waiting) {
                active = true;
                if (now >= s->retry_at_us)
                    lg_start(&r, s);
                continue;
            }
            if (us_per_req > 0 && now < r.next_due_us)
                continue;
            if (!lg_may_generate(&r, now))
                continue;
            lg_fill(&r, s);
            lg_start(&r, s);
            active = true;
            if (us_per_req > 0) {
                r.next_due_us += (int64_t)us_per_req;
                /* do not build up a burst after a stall */
                if (r.next_due_us < now - 1000000)
                    r.next_due_us = now - 1000000;
            }
        }
        if (!active && (r.gen_done || !lg_may_generate(&r, now)))
            break;
        int running = 0;
        curl_multi_perform(r.multi, &running);
        CURLMsg *m;
        int left, finished = 0;
        while ((m = curl_multi_info_read(r.multi, &left))) {
            if (m->msg != CURLMSG_DONE)
                continue;
            lg_slot_t *s;
            curl_easy_getinfo(m->easy_handle, CURLINFO_PRIVATE, (char **)&s);
            lg_done(&r, s, m->data.result);
            finished++;
        }
        lg_progress(&r, cm_mono_us(), false);
        if (finished)
            continue; /* refill the freed slots before waiting */
        int wait_ms = 50;
        if (us_per_req > 0) {
            int64_t d = (r.next_due_us - cm_mono_us()) / 1000;
            if (d < wait_ms)
                wait_ms = d < 0 ? 0 : (int)d;
        }
        curl_multi_poll(r.multi, NULL, 0, wait_ms, NULL);
    }
    int64_t end = cm_mono_us();
    st->elapsed_s = (double)(end - r.t0_us) / 1e6;
    lg_progress(&r, end, true);
    for (uint32_t i = 0; i < o->concurrency; i++) {
        curl_easy_cleanup(r.slots[i].h);
        cm_buf_free(&r.slots[i].body);
        cm_buf_free(&r.slots[i].plain);
        cm_buf_free(&r.slots[i].resp);
    }
    free(r.slots);
    curl_slist_free_all(r.hdrs);
    curl_multi_cleanup(r.multi);
    curl_global_cleanup();
    cm_buf_free(&r.line);
    return 0;
}
