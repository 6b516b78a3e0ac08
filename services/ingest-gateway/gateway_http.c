/*
 * gateway_http.c: the HTTP side of the gateway, on libmicrohttpd.
 *
 * One MHD daemon (a pool of polling threads, epoll) serves the events API
 * and the admin endpoints on the same port (SPEC §8: the gateway's port is
 * 8080). cm_admin is not used: its handlers answer synchronously on one
 * thread, and POST /v1/events must park its connection until Kafka answers.
 *
 * A request's life (gw_req_t, owned by the request, freed by MHD's
 * completion callback):
 *   1. headers: route, CORS origin, Content-Length sanity, encoding, write
 *      key. Refusals here never read the body.
 *   2. body: copied into a buffer with a hard cap (413 past it).
 *   3. complete: gw_batch_process (parse, validate, enrich, encode), rate
 *      limit, Kafka readiness and queue room, then every message is handed to
 *      the producer (which never blocks) and the connection is SUSPENDED.
 *   4. each delivery report (producer thread) counts down; the last one
 *      resumes the connection; MHD calls the handler again and the answer
 *      goes out: 202 only if every accepted event was acknowledged.
 * The count starts at 1 (a guard held by the handler) so that a report
 * arriving before the handler has suspended can never resume too early.
 */
#include <arpa/inet.h>
#include <microhttpd.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <unistd.h>

#include "cm_log.h"
#include "cm_time.h"
#include "gateway.h"

#define GW_PATH_EVENTS "/v1/events"
#define GW_METRICS_MAX (16 * 1024 * 1024)
/* A body over the cap is read and dropped up to this many times the cap
 * (so a well-behaved client gets its 413); past it the connection is cut. */
#define GW_DISCARD_FACTOR 4

typedef enum gw_state { GW_ST_RECV = 0, GW_ST_WAIT, GW_ST_DONE } gw_state_t;

typedef struct gw_req {
    gw_gateway_t *gw;
    struct MHD_Connection *conn;
    gw_state_t state;
    bool api; /* POST/OPTIONS /v1/events: counted in gateway_requests_total */
    int key_idx;
    bool gzip;
    gw_body_format_t fmt;
    bool overflow;
    size_t discarded;
    cm_buf_t body;
    gw_batch_t batch;
    bool batch_ready;
    char origin[256]; /* echoed in Access-Control-Allow-Origin when allowed */
    bool cors_ok;
    int64_t t0_us, t_produce_us, t_acked_us;

    pthread_mutex_t lock; /* outstanding, suspended, counts below */
    size_t outstanding;   /* messages produced and not yet reported, + guard */
    size_t acked, failed, not_sent;
    bool suspended;
    char kafka_error[128];
} gw_req_t;

/* ------------------------------------------------------------- replies */

static enum MHD_Result gw_send(gw_req_t *r, int status, const char *content_type,
                               const void *body, size_t len, int retry_after, bool close)
{
    struct MHD_Response *resp =
        MHD_create_response_from_buffer(len, (void *)body, MHD_RESPMEM_MUST_COPY);
    if (!resp)
        return MHD_NO;
    MHD_add_response_header(resp, MHD_HTTP_HEADER_CONTENT_TYPE, content_type);
    if (r && r->cors_ok) {
        MHD_add_response_header(resp, "Access-Control-Allow-Origin", r->origin);
        MHD_add_response_header(resp, "Vary", "Origin");
    }
    if (retry_after > 0) {
        char ra[16];
        snprintf(ra, sizeof(ra), "%d", retry_after);
        MHD_add_response_header(resp, MHD_HTTP_HEADER_RETRY_AFTER, ra);
    }
    if (status == 405)
        MHD_add_response_header(resp, MHD_HTTP_HEADER_ALLOW, "POST, OPTIONS");
    if (close)
        MHD_add_response_header(resp, MHD_HTTP_HEADER_CONNECTION, "close");
    enum MHD_Result ret = MHD_queue_response(r->conn, (unsigned)status, resp);
    MHD_destroy_response(resp);
    if (r->api)
        gw_metrics_status(&r->gw->m, status);
    return ret;
}

/* {"error":"<msg>"} plus `extra` (already JSON, starting with ',') */
static enum MHD_Result gw_send_error(gw_req_t *r, int status, const char *msg,
                                     const char *extra, int retry_after, bool close)
{
    cm_buf_t b;
    cm_buf_init(&b, 64 * 1024);
    cm_buf_append_str(&b, "{\"error\":\"");
    gw_json_escape(&b, msg, 512);
    cm_buf_append_str(&b, "\"");
    if (extra)
        cm_buf_append_str(&b, extra);
    cm_buf_append_str(&b, "}\n");
    enum MHD_Result ret =
        gw_send(r, status, "application/json", b.data, b.len, retry_after, close);
    cm_buf_free(&b);
    return ret;
}

static void gw_observe_request(gw_req_t *r)
{
    cm_histogram_observe(r->gw->m.request_seconds, (double)(cm_mono_us() - r->t0_us) / 1e6);
}

/* The answer to a body that went through gw_batch_process. */
static enum MHD_Result gw_send_result(gw_req_t *r, int status, size_t accepted,
                                      const char *error, int retry_after)
{
    gw_batch_t *b = &r->batch;
    cm_buf_t out;
    cm_buf_init(&out, 8 * 1024 * 1024);
    cm_buf_append_str(&out, "{");
    if (error) {
        cm_buf_append_str(&out, "\"error\":\"");
        gw_json_escape(&out, error, 512);
        cm_buf_append_str(&out, "\",");
    }
    cm_buf_printf(&out, "\"accepted\":%zu", accepted);
    if (status == 503)
        cm_buf_printf(&out, ",\"stored\":%zu,\"not_stored\":%zu", r->acked,
                      b->n_msgs - r->acked);
    if (b->n_rejected) {
        cm_buf_printf(&out, ",\"rejected\":%zu,\"errors\":[", b->n_rejected);
        cm_buf_append(&out, b->errors.data, b->errors.len);
        cm_buf_append_str(&out, "]");
        if (b->n_listed < b->n_rejected)
            cm_buf_append_str(&out, ",\"errors_truncated\":true");
    }
    cm_buf_append_str(&out, "}\n");
    gw_observe_request(r);
    enum MHD_Result ret =
        gw_send(r, status, "application/json", out.data, out.len, retry_after, false);
    cm_buf_free(&out);
    return ret;
}

/* -------------------------------------------------------------- admin */

static enum MHD_Result gw_admin(gw_req_t *r, const char *url, const char *method)
{
    gw_gateway_t *gw = r->gw;
    if (strcmp(method, "GET") != 0 && strcmp(method, "HEAD") != 0)
        return gw_send_error(r, 405, "method not allowed", NULL, 0, false);
    if (strcmp(url, "/healthz") == 0) {
        static const char ok[] = "{\"status\":\"ok\"}\n";
        return gw_send(r, 200, "application/json", ok, sizeof(ok) - 1, 0, false);
    }
    if (strcmp(url, "/readyz") == 0) {
        const char *reason;
        if (gw_gateway_ready(gw, &reason)) {
            static const char ok[] = "{\"status\":\"ready\"}\n";
            return gw_send(r, 200, "application/json", ok, sizeof(ok) - 1, 0, false);
        }
        char body[256];
        int n = snprintf(body, sizeof(body), "{\"status\":\"not ready\",\"reason\":\"%s\"}\n",
                         reason);
        return gw_send(r, 503, "application/json", body, (size_t)n, 0, false);
    }
    /* /metrics */
    cm_buf_t b;
    cm_buf_init(&b, GW_METRICS_MAX);
    enum MHD_Result ret;
    if (cm_metrics_render(gw->reg, &b) != CM_OK)
        ret = gw_send_error(r, 500, "metrics too large", NULL, 0, false);
    else
        ret = gw_send(r, 200, CM_METRICS_CONTENT_TYPE, b.data, b.len, 0, false);
    cm_buf_free(&b);
    return ret;
}

/* ------------------------------------------------------------ headers */

typedef struct gw_hdr_scan {
    int content_length;
    char xff[1024];
    size_t xff_len;
    bool xff_cut;
} gw_hdr_scan_t;

static enum MHD_Result gw_hdr_iter(void *cls, enum MHD_ValueKind kind, const char *key,
                                   const char *value)
{
    gw_hdr_scan_t *s = cls;
    (void)kind;
    if (strcasecmp(key, MHD_HTTP_HEADER_CONTENT_LENGTH) == 0) {
        s->content_length++;
    } else if (strcasecmp(key, "X-Forwarded-For") == 0 && value) {
        size_t n = strlen(value);
        if (s->xff_len + n + 2 > sizeof(s->xff)) {
            s->xff_cut = true;
        } else {
            if (s->xff_len)
                s->xff[s->xff_len++] = ',';
            memcpy(s->xff + s->xff_len, value, n);
            s->xff_len += n;
            s->xff[s->xff_len] = '\0';
        }
    }
    return MHD_YES;
}

/* The write key: Authorization: Bearer, X-Write-Key, or ?write_key= (for
 * navigator.sendBeacon, which cannot set headers). */
static const char *gw_write_key(struct MHD_Connection *c, size_t *len)
{
    const char *auth = MHD_lookup_connection_value(c, MHD_HEADER_KIND, "Authorization");
    const char *k = NULL;
    if (auth && strncasecmp(auth, "Bearer ", 7) == 0) {
        k = auth + 7;
        while (*k == ' ')
            k++;
    }
    if (!k)
        k = MHD_lookup_connection_value(c, MHD_HEADER_KIND, "X-Write-Key");
    if (!k)
        k = MHD_lookup_connection_value(c, MHD_GET_ARGUMENT_KIND, "write_key");
    if (!k)
        return NULL;
    size_t n = strlen(k);
    while (n && (k[n - 1] == ' ' || k[n - 1] == '\t'))
        n--;
    *len = n;
    return k;
}

static bool gw_is_ndjson(const char *ct)
{
    if (!ct)
        return false;
    static const char *const types[] = {"application/x-ndjson", "application/ndjson",
                                        "application/jsonl", "application/x-jsonlines",
                                        "application/jsonlines", NULL};
    while (*ct == ' ')
        ct++;
    for (const char *const *t = types; *t; t++) {
        size_t n = strlen(*t);
        if (strncasecmp(ct, *t, n) == 0 && (ct[n] == '\0' || ct[n] == ';' || ct[n] == ' '))
            return true;
    }
    return false;
}

/* First call of POST/OPTIONS /v1/events: everything decided from headers.
 * Returns MHD_YES to go on reading the body, or the result of a reply. */
static enum MHD_Result gw_events_headers(gw_req_t *r, const char *method, bool *replied)
{
    gw_gateway_t *gw = r->gw;
    struct MHD_Connection *c = r->conn;
    *replied = true;

    const char *origin = MHD_lookup_connection_value(c, MHD_HEADER_KIND, "Origin");
    if (origin) {
        if (!gw_cors_allowed(gw->cors, origin) || strlen(origin) >= sizeof(r->origin)) {
            gw_observe_request(r);
            return gw_send_error(r, 403, "origin not allowed", NULL, 0, false);
        }
        snprintf(r->origin, sizeof(r->origin), "%s", origin);
        r->cors_ok = true;
    }
    if (strcmp(method, "OPTIONS") == 0) {
        struct MHD_Response *resp =
            MHD_create_response_from_buffer(0, NULL, MHD_RESPMEM_PERSISTENT);
        if (!resp)
            return MHD_NO;
        if (r->cors_ok) {
            MHD_add_response_header(resp, "Access-Control-Allow-Origin", r->origin);
            MHD_add_response_header(resp, "Vary", "Origin");
            MHD_add_response_header(resp, "Access-Control-Allow-Methods",
                                    GW_CORS_ALLOW_METHODS);
            MHD_add_response_header(resp, "Access-Control-Allow-Headers",
                                    GW_CORS_ALLOW_HEADERS);
            MHD_add_response_header(resp, "Access-Control-Max-Age", GW_CORS_MAX_AGE);
        }
        MHD_add_response_header(resp, MHD_HTTP_HEADER_ALLOW, "POST, OPTIONS");
        enum MHD_Result ret = MHD_queue_response(c, 204, resp);
        MHD_destroy_response(resp);
        gw_metrics_status(&gw->m, 204);
        return ret;
    }
    if (strcmp(method, "POST") != 0)
        return gw_send_error(r, 405, "method not allowed: use POST", NULL, 0, false);

    gw_hdr_scan_t hs = {0};
    MHD_get_connection_values(c, MHD_HEADER_KIND, gw_hdr_iter, &hs);
    if (hs.content_length > 1) {
        /* a request-smuggling shape: never guess which one is meant */
        gw_observe_request(r);
        return gw_send_error(r, 400, "more than one Content-Length header", NULL, 0, true);
    }
    const char *cl = MHD_lookup_connection_value(c, MHD_HEADER_KIND,
                                                 MHD_HTTP_HEADER_CONTENT_LENGTH);
    unsigned long long clv = cl ? strtoull(cl, NULL, 10) : 0;
    unsigned long long cap = (unsigned long long)gw->cfg->max_request_bytes;
    if (clv > cap * GW_DISCARD_FACTOR) {
        /* answer at once and close: reading that much is not worth it */
        gw_observe_request(r);
        return gw_send_error(r, 413, "request body too large", NULL, 0, true);
    }
    if (clv > cap) {
        /* read and drop the body, so the client gets to read its 413 */
        r->overflow = true;
        cm_buf_free(&r->body);
    }
    const char *ce = MHD_lookup_connection_value(c, MHD_HEADER_KIND,
                                                 MHD_HTTP_HEADER_CONTENT_ENCODING);
    if (ce && *ce) {
        if (strcasecmp(ce, "gzip") == 0 || strcasecmp(ce, "x-gzip") == 0 ||
            strcasecmp(ce, "deflate") == 0)
            r->gzip = true;
        else if (strcasecmp(ce, "identity") != 0) {
            gw_observe_request(r);
            return gw_send_error(r, 415, "unsupported Content-Encoding (gzip or identity)",
                                 NULL, 0, true);
        }
    }
    size_t klen = 0;
    const char *key = gw_write_key(c, &klen);
    r->key_idx = gw_auth_lookup(gw->auth, key, klen);
    if (r->key_idx < 0) {
        gw_observe_request(r);
        return gw_send_error(r, 401,
                             key ? "unknown write key" : "missing write key (Authorization: "
                                                         "Bearer KEY or X-Write-Key)",
                             NULL, 0, true);
    }
    r->fmt = gw_is_ndjson(MHD_lookup_connection_value(c, MHD_HEADER_KIND,
                                                      MHD_HTTP_HEADER_CONTENT_TYPE))
                 ? GW_BODY_NDJSON
                 : GW_BODY_JSON;
    *replied = false;
    return MHD_YES;
}

/* ------------------------------------------------------------ produce */

static void gw_client_ip_str(gw_req_t *r, char *buf, size_t size)
{
    gw_gateway_t *gw = r->gw;
    const union MHD_ConnectionInfo *ci =
        MHD_get_connection_info(r->conn, MHD_CONNECTION_INFO_CLIENT_ADDRESS);
    gw_ip_t peer;
    buf[0] = '\0';
    if (!ci || gw_ip_from_sockaddr(ci->client_addr, &peer))
        return;
    gw_ip_t ip = peer;
    if (gw->trusted.n) {
        gw_hdr_scan_t hs = {0};
        MHD_get_connection_values(r->conn, MHD_HEADER_KIND, gw_hdr_iter, &hs);
        if (hs.xff_len && !hs.xff_cut)
            ip = gw_client_ip(&peer, hs.xff, &gw->trusted);
    }
    if (gw->cfg->anonymize)
        gw_ip_anonymize(&ip);
    gw_ip_format(&ip, buf, size);
}

void gw_http_on_delivery(void *msg_opaque, cm_err_t err, const char *errmsg,
                         int32_t partition, int64_t offset, void *cb_opaque)
{
    gw_req_t *r = msg_opaque;
    (void)partition;
    (void)offset;
    (void)cb_opaque;
    bool resume = false;
    pthread_mutex_lock(&r->lock);
    if (err) {
        r->failed++;
        if (!r->kafka_error[0])
            snprintf(r->kafka_error, sizeof(r->kafka_error), "%s", errmsg ? errmsg : "");
    } else {
        r->acked++;
    }
    if (--r->outstanding == 0) {
        r->t_acked_us = cm_mono_us();
        if (r->suspended) {
            r->suspended = false;
            resume = true;
        }
    }
    pthread_mutex_unlock(&r->lock);
    /* r stays alive: MHD cannot complete a suspended request */
    if (resume)
        MHD_resume_connection(r->conn);
}

/* The answer once every produced message has been reported. */
static enum MHD_Result gw_finish(gw_req_t *r)
{
    gw_gateway_t *gw = r->gw;
    gw_batch_t *b = &r->batch;
    r->state = GW_ST_DONE;
    if (r->t_produce_us && r->t_acked_us)
        cm_histogram_observe(gw->m.produce_seconds,
                             (double)(r->t_acked_us - r->t_produce_us) / 1e6);
    if (r->failed == 0 && r->not_sent == 0) {
        cm_counter_add(gw->m.events_accepted, r->acked);
        return gw_send_result(r, 202, r->acked, NULL, 0);
    }
    cm_counter_add(gw->m.events_not_stored, b->n_msgs - r->acked);
    char msg[256];
    snprintf(msg, sizeof(msg), "%zu of %zu events not stored: %s; retry the request",
             b->n_msgs - r->acked, b->n_msgs,
             r->kafka_error[0] ? r->kafka_error : "producer queue full");
    if (r->acked)
        cm_log_warn("request partly stored", "stored", "%ld", (long)r->acked, "not_stored",
                    "%ld", (long)(b->n_msgs - r->acked), "error", "%s", msg, NULL);
    return gw_send_result(r, 503, 0, msg, (int)gw->cfg->retry_after_s);
}

static enum MHD_Result gw_events_body_done(gw_req_t *r)
{
    gw_gateway_t *gw = r->gw;
    gw_batch_t *b = &r->batch;

    if (r->overflow) {
        gw_observe_request(r);
        return gw_send_error(r, 413, "request body too large", NULL, 0, true);
    }
    cm_counter_add(gw->m.bytes_in, r->body.len);
    char ip[64];
    gw_client_ip_str(r, ip, sizeof(ip));
    gw_enrich_ctx_t ectx = {.now_ms = cm_now_ms(), .client_ip = ip, .anonymize = gw->cfg->anonymize};
    gw_batch_init(b, &gw->bopts, gw_metrics_reject, &gw->m);
    r->batch_ready = true;
    int st = gw_batch_process(b, (const char *)r->body.data, r->body.len, r->gzip, r->fmt, &ectx);
    cm_counter_add(gw->m.unknown_fields, b->unknown_fields);
    cm_counter_add(gw->m.ip_dropped, b->ip_dropped);
    if (st)
        return gw_send_result(r, st, 0, b->error, 0);
    cm_histogram_observe(gw->m.batch_events, (double)(b->n_msgs + b->n_rejected));
    /* the body is not needed any more: give its memory back early */
    cm_buf_free(&r->body);

    int retry = 0;
    if (!gw_bucket_take(gw_auth_bucket(gw->auth, r->key_idx), (double)b->n_msgs, cm_mono_us(),
                        &retry)) {
        char extra[64];
        snprintf(extra, sizeof(extra), ",\"retry_after\":%d", retry);
        gw_observe_request(r);
        return gw_send_error(r, 429, "rate limit exceeded for this write key", extra, retry,
                             false);
    }

    pthread_rwlock_rdlock(&gw->stop_lock);
    const char *refuse = NULL;
    if (gw->stopping)
        refuse = "shutting down";
    else if (!cm_producer_ready(gw->producer))
        refuse = "kafka unreachable";
    else if ((int64_t)cm_producer_queue_len(gw->producer) + (int64_t)b->n_msgs >
             gw->cfg->queue_max_messages)
        refuse = "producer queue full";
    if (refuse) {
        pthread_rwlock_unlock(&gw->stop_lock);
        cm_counter_add(gw->m.events_not_stored, b->n_msgs);
        gw_observe_request(r);
        return gw_send_error(r, 503, refuse, ",\"accepted\":0", (int)gw->cfg->retry_after_s,
                             false);
    }
    r->outstanding = 1; /* the guard, see the top of the file */
    r->t_produce_us = cm_mono_us();
    const char *topic = gw->cfg->topic;
    for (size_t i = 0; i < b->n_msgs; i++) {
        const gw_msg_t *m = &b->msgs[i];
        pthread_mutex_lock(&r->lock);
        r->outstanding++;
        pthread_mutex_unlock(&r->lock);
        cm_err_t err = cm_producer_produce(gw->producer, topic, b->enc.data + m->key_off,
                                           m->key_len, b->enc.data + m->val_off, m->val_len,
                                           NULL, 0, r);
        if (err) {
            pthread_mutex_lock(&r->lock);
            r->outstanding--;
            r->not_sent = b->n_msgs - i;
            if (!r->kafka_error[0])
                snprintf(r->kafka_error, sizeof(r->kafka_error), "%s",
                         err == CM_ERR_RETRY ? "producer queue full" : cm_err_str(err));
            pthread_mutex_unlock(&r->lock);
            break;
        }
    }
    pthread_rwlock_unlock(&gw->stop_lock);

    pthread_mutex_lock(&r->lock);
    bool wait = --r->outstanding > 0;
    if (wait) {
        r->state = GW_ST_WAIT;
        r->suspended = true;
        MHD_suspend_connection(r->conn);
    } else {
        r->t_acked_us = cm_mono_us();
    }
    pthread_mutex_unlock(&r->lock);
    return wait ? MHD_YES : gw_finish(r);
}

/* ------------------------------------------------------------ handler */

static enum MHD_Result gw_handler(void *cls, struct MHD_Connection *c, const char *url,
                                  const char *method, const char *version,
                                  const char *upload_data, size_t *upload_data_size,
                                  void **con_cls)
{
    gw_gateway_t *gw = cls;
    gw_req_t *r = *con_cls;
    (void)version;

    if (!r) {
        r = calloc(1, sizeof(*r));
        if (!r)
            return MHD_NO;
        r->gw = gw;
        r->conn = c;
        r->t0_us = cm_mono_us();
        pthread_mutex_init(&r->lock, NULL);
        cm_buf_init(&r->body, (size_t)gw->cfg->max_request_bytes);
        *con_cls = r;
        atomic_fetch_add(&gw->open_requests, 1);
        cm_gauge_inc(gw->m.in_flight);

        if (strcmp(url, GW_PATH_EVENTS) == 0) {
            bool replied;
            r->api = true;
            enum MHD_Result ret = gw_events_headers(r, method, &replied);
            if (replied)
                r->state = GW_ST_DONE;
            return ret;
        }
        r->state = GW_ST_DONE;
        if (strcmp(url, "/metrics") == 0 || strcmp(url, "/healthz") == 0 ||
            strcmp(url, "/readyz") == 0)
            return gw_admin(r, url, method);
        return gw_send_error(r, 404, "not found", NULL, 0, false);
    }

    switch (r->state) {
    case GW_ST_RECV:
        if (*upload_data_size) {
            size_t n = *upload_data_size;
            *upload_data_size = 0;
            if (!r->overflow && cm_buf_append(&r->body, upload_data, n) == CM_OK)
                return MHD_YES;
            if (!r->overflow) {
                r->overflow = true;
                cm_buf_free(&r->body);
            }
            r->discarded += n;
            return r->discarded > GW_DISCARD_FACTOR * (size_t)gw->cfg->max_request_bytes
                       ? MHD_NO
                       : MHD_YES;
        }
        return gw_events_body_done(r);
    case GW_ST_WAIT:
        /* resumed: every delivery report is in */
        if (*upload_data_size) {
            *upload_data_size = 0;
            return MHD_YES;
        }
        return gw_finish(r);
    case GW_ST_DONE:
    default:
        /* an answer is queued already; swallow the rest of the body */
        *upload_data_size = 0;
        return MHD_YES;
    }
}

static void gw_completed(void *cls, struct MHD_Connection *c, void **con_cls,
                         enum MHD_RequestTerminationCode toe)
{
    gw_gateway_t *gw = cls;
    gw_req_t *r = *con_cls;
    (void)c;
    (void)toe;
    if (!r)
        return;
    if (r->batch_ready)
        gw_batch_free(&r->batch);
    cm_buf_free(&r->body);
    pthread_mutex_destroy(&r->lock);
    free(r);
    *con_cls = NULL;
    atomic_fetch_sub(&gw->open_requests, 1);
    cm_gauge_dec(gw->m.in_flight);
}

static void gw_mhd_log(void *cls, const char *fmt, va_list ap)
{
    char buf[512];
    (void)cls;
    vsnprintf(buf, sizeof(buf), fmt, ap);
    size_t n = strlen(buf);
    while (n && (buf[n - 1] == '\n' || buf[n - 1] == '\r'))
        buf[--n] = '\0';
    cm_log_warn("http server", "detail", "%s", buf, NULL);
}

cm_err_t gw_http_start(gw_gateway_t *gw, char *errstr, size_t errstr_size)
{
    const gw_config_t *cfg = gw->cfg;
    struct sockaddr_storage ss;
    memset(&ss, 0, sizeof(ss));
    unsigned flags = MHD_USE_AUTO_INTERNAL_THREAD | MHD_ALLOW_SUSPEND_RESUME | MHD_USE_ERROR_LOG;
    struct sockaddr_in *s4 = (struct sockaddr_in *)&ss;
    struct sockaddr_in6 *s6 = (struct sockaddr_in6 *)&ss;
    if (inet_pton(AF_INET, cfg->addr, &s4->sin_addr) == 1) {
        s4->sin_family = AF_INET;
        s4->sin_port = htons((uint16_t)cfg->port);
    } else if (inet_pton(AF_INET6, cfg->addr, &s6->sin6_addr) == 1) {
        s6->sin6_family = AF_INET6;
        s6->sin6_port = htons((uint16_t)cfg->port);
        flags |= MHD_USE_IPv6;
        if (strcmp(cfg->addr, "::") == 0)
            flags |= MHD_USE_DUAL_STACK;
    } else {
        snprintf(errstr, errstr_size, "GATEWAY_ADDR=%s: not an IPv4 or IPv6 address", cfg->addr);
        return CM_ERR_INVALID;
    }
    long ncpu = sysconf(_SC_NPROCESSORS_ONLN);
    unsigned threads = cfg->http_threads > 0 ? (unsigned)cfg->http_threads
                                             : (unsigned)(ncpu > 0 ? ncpu : 1);
    unsigned timeout_s = (unsigned)((cfg->read_timeout_ms + 999) / 1000);
    gw->mhd = MHD_start_daemon(
        flags, (uint16_t)cfg->port, NULL, NULL, gw_handler, gw, MHD_OPTION_EXTERNAL_LOGGER,
        gw_mhd_log, NULL, MHD_OPTION_SOCK_ADDR,
        (struct sockaddr *)&ss, MHD_OPTION_THREAD_POOL_SIZE, threads,
        MHD_OPTION_CONNECTION_LIMIT, (unsigned)cfg->max_connections,
        MHD_OPTION_CONNECTION_TIMEOUT, timeout_s, MHD_OPTION_CONNECTION_MEMORY_LIMIT,
        (size_t)cfg->conn_memory, MHD_OPTION_NOTIFY_COMPLETED, gw_completed, gw,
        MHD_OPTION_LISTENING_ADDRESS_REUSE, 1,
        MHD_OPTION_END);
    if (!gw->mhd) {
        snprintf(errstr, errstr_size, "cannot listen on %s:%ld (in use?)", cfg->addr,
                 (long)cfg->port);
        return CM_ERR_IO;
    }
    const union MHD_DaemonInfo *di = MHD_get_daemon_info(gw->mhd, MHD_DAEMON_INFO_BIND_PORT);
    gw->port = di ? di->port : (int)cfg->port;
    return CM_OK;
}

void gw_http_quiesce(gw_gateway_t *gw)
{
    if (gw->mhd) {
        MHD_socket s = MHD_quiesce_daemon(gw->mhd);
        if (s != MHD_INVALID_SOCKET)
            close(s);
    }
}

void gw_http_stop(gw_gateway_t *gw, int timeout_ms)
{
    if (!gw->mhd)
        return;
    /* let the answers of resumed requests go out */
    int64_t deadline = cm_mono_ms() + timeout_ms;
    while (atomic_load(&gw->open_requests) > 0 && cm_mono_ms() < deadline)
        usleep(10000);
    MHD_stop_daemon(gw->mhd);
    gw->mhd = NULL;
}
