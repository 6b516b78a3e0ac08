/*
 * dashboard_redis.c: the reader thread (see the header).
 *
 * The subscriber connection is never read with a blocking call: the thread
 * poll()s its socket together with a stop eventfd and a deadline (next read
 * due), then lets hiredis parse what arrived (redisBufferRead +
 * redisGetReplyFromReader). So one thread serves notes, reads and stop
 * requests without timeouts tearing a connection down.
 */
#include <errno.h>
#include <hiredis/hiredis.h>
#include <poll.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/eventfd.h>
#include <unistd.h>

#include "cm_log.h"
#include "cm_time.h"
#include "dashboard_layout.h"
#include "dashboard_redis.h"

struct db_reader {
    const db_config_t *cfg;
    db_publish_fn *publish;
    void *ud;
    db_layout_t *layout;
    redisContext *cmd, *sub;
    int stop_fd;
    pthread_t thread;
    bool started;

    db_data_t data;     /* the last good read (kept to show while stale) */
    bool have_data;
    db_model_t *model;  /* the last published, one reference */
    uint64_t seq;
    int64_t stale_since_ms;
    char error[160];
    int64_t last_note_ts;

    pthread_mutex_t mu; /* guards ready + reason for /readyz */
    bool ready;
    char reason[160];

    cm_counter_t *m_reads, *m_errors, *m_notes, *m_windows_read, *m_published, *m_bad_hlls;
    cm_gauge_t *m_up;
    cm_histogram_t *m_read_s;
};

static void set_ready(db_reader_t *r, bool ready, const char *reason)
{
    pthread_mutex_lock(&r->mu);
    r->ready = ready;
    snprintf(r->reason, sizeof(r->reason), "%s", reason ? reason : "");
    pthread_mutex_unlock(&r->mu);
    cm_gauge_set(r->m_up, ready ? 1 : 0);
}

bool db_reader_ready(void *reader, char *reason, size_t size)
{
    db_reader_t *r = reader;
    pthread_mutex_lock(&r->mu);
    bool ready = r->ready;
    if (!ready)
        snprintf(reason, size, "%s", r->reason[0] ? r->reason : "starting");
    pthread_mutex_unlock(&r->mu);
    return ready;
}

static void disconnect(db_reader_t *r)
{
    if (r->cmd)
        redisFree(r->cmd);
    if (r->sub)
        redisFree(r->sub);
    r->cmd = r->sub = NULL;
}

static redisContext *connect_one(db_reader_t *r, char *errstr, size_t n)
{
    int64_t t = r->cfg->redis_timeout_ms;
    struct timeval tv = {(time_t)(t / 1000), (suseconds_t)((t % 1000) * 1000)};
    redisContext *c = redisConnectWithTimeout(r->cfg->redis_host, (int)r->cfg->redis_port, tv);
    if (!c || c->err) {
        snprintf(errstr, n, "redis %s:%d: %s", r->cfg->redis_host, (int)r->cfg->redis_port,
                 c ? c->errstr : "out of memory");
        if (c)
            redisFree(c);
        return NULL;
    }
    redisSetTimeout(c, tv);
    redisEnableKeepAlive(c);
    return c;
}

/* Both connections, the subscription confirmed. */
static cm_err_t connect_all(db_reader_t *r, char *errstr, size_t n)
{
    r->cmd = connect_one(r, errstr, n);
    if (!r->cmd)
        return CM_ERR_IO;
    r->sub = connect_one(r, errstr, n);
    if (!r->sub)
        goto fail;
    redisReply *rep = redisCommand(r->sub, "SUBSCRIBE %s", db_layout_channel(r->layout));
    if (!rep) {
        snprintf(errstr, n, "redis SUBSCRIBE: %s", r->sub->errstr);
        goto fail;
    }
    bool ok = rep->type == REDIS_REPLY_ARRAY;
    if (!ok)
        snprintf(errstr, n, "redis SUBSCRIBE: %s",
                 rep->type == REDIS_REPLY_ERROR ? rep->str : "unexpected reply");
    freeReplyObject(rep);
    if (!ok)
        goto fail;
    db_layout_invalidate(r->layout);
    cm_log_info("redis connected", "host", "%s", r->cfg->redis_host, "port", "%d",
                (int)r->cfg->redis_port, "channel", "%s", db_layout_channel(r->layout), NULL);
    return CM_OK;
fail:
    disconnect(r);
    return CM_ERR_IO;
}

/* Builds a model from `d` and publishes it unless it shows nothing new. */
static void publish_data(db_reader_t *r, const db_data_t *d)
{
    db_model_t *m = db_model_build(d, r->model, r->seq + 1);
    if (!m) {
        cm_log_error("out of memory building the snapshot", NULL);
        return;
    }
    if (r->model && db_model_same(m, r->model)) {
        db_model_unref(m);
        return;
    }
    r->seq++;
    db_model_unref(r->model);
    r->model = db_model_ref(m);
    cm_counter_inc(r->m_published);
    r->publish(r->ud, m);
}

/* Redis failed: drop the connections, show the last data as stale. */
static void went_down(db_reader_t *r, const char *err)
{
    bool first = r->stale_since_ms == 0;
    if (first) {
        r->stale_since_ms = cm_now_ms();
        cm_log_warn("redis unreachable: the dashboard shows stale data", "error", "%s", err,
                    NULL);
    }
    cm_counter_inc(r->m_errors);
    snprintf(r->error, sizeof(r->error), "%s", err);
    disconnect(r);
    set_ready(r, false, err);
    db_data_t d;
    if (r->have_data) {
        if (db_data_copy(&d, &r->data))
            return;
    } else {
        memset(&d, 0, sizeof(d));
        d.window_ms = DB_WINDOW_MS;
        d.unique_users = -1;
    }
    d.redis_ok = false;
    snprintf(d.error, sizeof(d.error), "%s", err);
    d.stale_since_ms = r->stale_since_ms;
    d.last_change_ms = r->last_note_ts;
    publish_data(r, &d);
    db_data_clear(&d);
}

static void do_read(db_reader_t *r)
{
    char errstr[160];
    db_data_t d;
    memset(&d, 0, sizeof(d));
    int64_t t0 = cm_mono_us();
    cm_err_t err = db_layout_read(r->layout, r->cmd, cm_now_ms(), &d, errstr, sizeof(errstr));
    cm_histogram_observe(r->m_read_s, (double)(cm_mono_us() - t0) / 1e6);
    cm_counter_inc(r->m_reads);
    if (err) {
        db_data_clear(&d);
        went_down(r, errstr);
        return;
    }
    cm_counter_add(r->m_windows_read, db_layout_last_reads(r->layout));
    cm_counter_add(r->m_bad_hlls, db_layout_last_bad_hlls(r->layout));
    if (r->stale_since_ms) {
        cm_log_info("redis back: the dashboard is live again", NULL);
        r->stale_since_ms = 0;
    }
    set_ready(r, true, NULL);
    d.generated_ms = cm_now_ms();
    d.last_change_ms = r->last_note_ts;
    db_data_clear(&r->data);
    r->data = d;
    r->have_data = true;
    publish_data(r, &r->data);
}

/* Parses what the subscriber received; true when a note marked something. */
static cm_err_t drain_notes(db_reader_t *r, bool *noted, char *errstr, size_t n)
{
    if (redisBufferRead(r->sub) != REDIS_OK) {
        snprintf(errstr, n, "redis subscriber: %s", r->sub->errstr);
        return CM_ERR_IO;
    }
    for (;;) {
        void *v = NULL;
        if (redisGetReplyFromReader(r->sub, &v) != REDIS_OK) {
            snprintf(errstr, n, "redis subscriber: %s", r->sub->errstr);
            return CM_ERR_IO;
        }
        if (!v)
            return CM_OK;
        redisReply *rep = v;
        /* ["message", channel, payload] */
        if (rep->type == REDIS_REPLY_ARRAY && rep->elements == 3 &&
            rep->element[0]->type == REDIS_REPLY_STRING &&
            strcmp(rep->element[0]->str, "message") == 0 &&
            rep->element[2]->type == REDIS_REPLY_STRING) {
            int64_t ts = 0;
            if (db_layout_note(r->layout, rep->element[2]->str, rep->element[2]->len, &ts))
                cm_log_debug("malformed note: reading everything", NULL);
            if (ts > r->last_note_ts)
                r->last_note_ts = ts;
            cm_counter_inc(r->m_notes);
            *noted = true;
        }
        freeReplyObject(rep);
    }
}

static bool wait_stop(db_reader_t *r, int64_t ms)
{
    struct pollfd p = {.fd = r->stop_fd, .events = POLLIN};
    return poll(&p, 1, (int)ms) > 0;
}

static void *reader_main(void *arg)
{
    db_reader_t *r = arg;
    char errstr[160];
    bool noted = false;
    int64_t last_read = 0, last_full = 0;
    for (;;) {
        if (!r->cmd) {
            if (connect_all(r, errstr, sizeof(errstr))) {
                went_down(r, errstr);
                if (wait_stop(r, r->cfg->retry_ms))
                    break;
                continue;
            }
            int64_t now = cm_mono_ms();
            do_read(r);
            last_read = last_full = now;
            noted = false;
            continue;
        }
        int64_t now = cm_mono_ms();
        int64_t due = noted ? last_read + r->cfg->refresh_ms : last_full + r->cfg->poll_ms;
        if (now >= due) {
            if (!noted) {
                db_layout_invalidate(r->layout);
                last_full = now;
            }
            noted = false;
            last_read = now;
            do_read(r);
            continue;
        }
        struct pollfd p[2] = {{.fd = r->stop_fd, .events = POLLIN},
                              {.fd = r->sub->fd, .events = POLLIN}};
        int rc = poll(p, 2, (int)(due - now));
        if (rc < 0 && errno != EINTR) {
            went_down(r, "poll failed");
            continue;
        }
        if (p[0].revents)
            break;
        if (p[1].revents) {
            if (drain_notes(r, &noted, errstr, sizeof(errstr)))
                went_down(r, errstr);
            else if (noted && cm_mono_ms() - last_read >= r->cfg->refresh_ms)
                continue; /* due now: read at the top of the loop */
        }
    }
    disconnect(r);
    return NULL;
}

db_reader_t *db_reader_start(const db_config_t *cfg, cm_metrics_t *reg, db_publish_fn *fn,
                             void *ud, char *errstr, size_t errstr_size)
{
    db_reader_t *r = calloc(1, sizeof(*r));
    if (!r) {
        snprintf(errstr, errstr_size, "out of memory");
        return NULL;
    }
    r->cfg = cfg;
    r->publish = fn;
    r->ud = ud;
    r->stop_fd = -1;
    pthread_mutex_init(&r->mu, NULL);
    snprintf(r->reason, sizeof(r->reason), "starting: redis not read yet");
    r->layout = db_layout_new(cfg->redis_prefix, (size_t)cfg->history_min, (size_t)cfg->top_n,
                              cfg->anchor && strcmp(cfg->anchor, "data") == 0);
    r->stop_fd = eventfd(0, EFD_CLOEXEC);
    if (!r->layout || r->stop_fd < 0) {
        snprintf(errstr, errstr_size, "cannot set the reader up: %s",
                 r->layout ? strerror(errno) : "out of memory");
        goto fail;
    }
    static const double b[] = {0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 1};
    r->m_read_s = cm_metrics_histogram(reg, "dashboard_redis_read_seconds",
                                       "time of one read of the aggregates from Redis", b,
                                       sizeof(b) / sizeof(b[0]), NULL);
    r->m_reads = cm_metrics_counter(reg, "dashboard_redis_reads_total",
                                    "reads of the aggregates from Redis", NULL);
    r->m_errors = cm_metrics_counter(reg, "dashboard_redis_errors_total",
                                     "failed Redis connects, subscribes and reads", NULL);
    r->m_notes = cm_metrics_counter(reg, "dashboard_notes_total",
                                    "aggregator notes received on the pub/sub channel", NULL);
    r->m_bad_hlls = cm_metrics_counter(reg, "dashboard_bad_hll_total",
                                       "unique-user keys read that held no HyperLogLog "
                                       "(their users not counted)",
                                       NULL);
    r->m_windows_read = cm_metrics_counter(reg, "dashboard_redis_windows_read_total",
                                           "1-minute windows read from Redis", NULL);
    r->m_published = cm_metrics_counter(reg, "dashboard_models_published_total",
                                        "new snapshots built (each one a change on the page)",
                                        NULL);
    r->m_up = cm_metrics_gauge(reg, "dashboard_redis_up", "1 when the last Redis read succeeded",
                               NULL);
    if (pthread_create(&r->thread, NULL, reader_main, r) != 0) {
        snprintf(errstr, errstr_size, "cannot start the reader thread: %s", strerror(errno));
        goto fail;
    }
    r->started = true;
    return r;
fail:
    db_reader_stop(r);
    return NULL;
}

void db_reader_stop(db_reader_t *r)
{
    if (!r)
        return;
    if (r->started) {
        uint64_t one = 1;
        if (write(r->stop_fd, &one, sizeof(one)) < 0)
            cm_log_warn("reader stop: write failed", NULL);
        pthread_join(r->thread, NULL);
    }
    disconnect(r);
    if (r->stop_fd >= 0)
        close(r->stop_fd);
    db_layout_destroy(r->layout);
    db_data_clear(&r->data);
    db_model_unref(r->model);
    pthread_mutex_destroy(&r->mu);
    free(r);
}
