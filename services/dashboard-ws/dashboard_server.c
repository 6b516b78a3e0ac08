/*
 * dashboard_server.c: libwebsockets HTTP + WebSocket on one port (see the
 * header for the routes).
 *
 * Threads: everything here but db_server_publish() and db_server_stop()
 * runs on the service thread, so the hub and the per-connection data need
 * no lock. The reader thread only touches `inbox` under `mu` and calls
 * lws_cancel_service(), which makes LWS_CALLBACK_EVENT_WAIT_CANCELLED run
 * here.
 *
 * Writes: a WebSocket message is written whole with one lws_write() from
 * the shared, reference-counted buffer (its LWS_PRE headroom takes the frame
 * header: every client writes the same header bytes there, one after the
 * other, on this one thread). When the kernel takes only part of it, lws
 * keeps the rest and calls back writable only once it is gone, so a slow
 * socket holds at most one message in lws plus its bounded queue in the hub.
 */
#include <errno.h>
#include <libwebsockets.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "cm_buf.h"
#include "cm_log.h"
#include "cm_time.h"
#include "dashboard_auth.h"
#include "dashboard_clients.h"
#include "dashboard_server.h"
#include "dashboard_web.h"

_Static_assert(DB_MSG_PRE >= LWS_PRE, "DB_MSG_PRE must leave room for LWS_PRE");

/* HTTP bodies go out in pieces of this size (lws copies what the kernel
 * does not take at once; small pieces keep that copy small). */
#define DB_HTTP_CHUNK 16384
/* /metrics text cap. */
#define DB_METRICS_MAX (8u * 1024 * 1024)
/* The stall watchdog runs this often. */
#define DB_WATCHDOG_US (1000 * LWS_US_PER_MS)

enum { PSS_NONE = 0, PSS_HTTP, PSS_WS };

typedef struct db_pss {
    int kind;
    struct lws *wsi;
    /* HTTP: the body being sent (one of msg, owned or a static asset) */
    db_msg_t *msg;
    unsigned char *owned;
    const unsigned char *body;
    size_t body_len, body_off;
    /* WebSocket */
    db_client_t client;
    lws_sorted_usec_list_t sul; /* offer again when the client's interval is over */
    bool timer_set;
} db_pss_t;

struct db_server {
    const db_config_t *cfg;
    cm_metrics_t *reg;
    db_auth_t *auth;
    struct lws_context *ctx;
    int port;
    pthread_t thread;
    bool thread_started;
    atomic_bool stop;

    pthread_mutex_t mu;
    db_model_t *inbox; /* newest model not yet taken by the service thread */

    db_ready_fn *ready_fn;
    void *ready_ud;

    db_hub_t hub;
    lws_sorted_usec_list_t watchdog;

    cm_counter_t *m_ws_accepted, *m_rej_origin, *m_rej_token, *m_rej_path, *m_rej_full,
        *m_stalled, *m_models;
};

/* ---------------------------------------------------------------- logs */

static void lws_log_emit(int level, const char *line)
{
    char buf[512];
    size_t n = strlen(line);
    if (n >= sizeof(buf))
        n = sizeof(buf) - 1;
    memcpy(buf, line, n);
    while (n && (buf[n - 1] == '\n' || buf[n - 1] == '\r'))
        n--;
    buf[n] = '\0';
    cm_log(level & LLL_ERR ? CM_LOG_ERROR : CM_LOG_WARN, "libwebsockets", "detail", "%s", buf,
           NULL);
}

/* ---------------------------------------------------------------- HTTP */

static void pss_http_release(db_pss_t *pss)
{
    db_msg_unref(pss->msg);
    free(pss->owned);
    pss->msg = NULL;
    pss->owned = NULL;
    pss->body = NULL;
    pss->body_len = pss->body_off = 0;
}

static void count_http(db_server_t *s, const char *route, int code)
{
    char c[8];
    snprintf(c, sizeof(c), "%d", code);
    cm_counter_inc(cm_metrics_counter(s->reg, "dashboard_http_requests_total",
                                      "HTTP requests by route and status", "route", route,
                                      "code", c, NULL));
}

static int add_header(struct lws *wsi, const char *name, const char *value, unsigned char **p,
                      unsigned char *end)
{
    return lws_add_http_header_by_name(wsi, (const unsigned char *)name,
                                       (const unsigned char *)value, (int)strlen(value), p, end);
}

/*
 * Sends the status line and headers, then the body from the writable
 * callback. The body is one of: msg (a reference moves in), owned (freed
 * after), or static bytes. cookie: a Set-Cookie value or NULL. Returns what
 * the lws callback must return.
 */
static int http_respond(struct lws *wsi, db_pss_t *pss, int status, const char *ctype,
                        db_msg_t *msg, unsigned char *owned, const unsigned char *data,
                        size_t len, const char *cache, const char *cookie, bool page)
{
    unsigned char hb[LWS_PRE + 2048], *start = hb + LWS_PRE, *p = start,
                                      *end = hb + sizeof(hb) - 1;
    pss_http_release(pss);
    pss->kind = PSS_HTTP;
    pss->msg = msg;
    pss->owned = owned;
    pss->body = msg ? db_msg_body(msg) : owned ? owned : data;
    pss->body_len = msg ? msg->len : len;
    pss->body_off = 0;
    if (lws_add_http_common_headers(wsi, (unsigned int)status, ctype,
                                    (lws_filepos_t)pss->body_len, &p, end) ||
        add_header(wsi, "cache-control:", cache ? cache : "no-store", &p, end) ||
        add_header(wsi, "x-content-type-options:", "nosniff", &p, end) ||
        (cookie && add_header(wsi, "set-cookie:", cookie, &p, end)) ||
        (page && add_header(wsi, "content-security-policy:",
                            "default-src 'self'; connect-src 'self' ws: wss:; "
                            "img-src 'self' data:; style-src 'self'; script-src 'self'; "
                            "frame-ancestors 'none'",
                            &p, end)) ||
        (page && add_header(wsi, "referrer-policy:", "no-referrer", &p, end)) ||
        lws_finalize_write_http_header(wsi, start, &p, end)) {
        pss_http_release(pss);
        return 1;
    }
    if (pss->body_len == 0) {
        pss_http_release(pss);
        return lws_http_transaction_completed(wsi) ? -1 : 0;
    }
    lws_callback_on_writable(wsi);
    return 0;
}

static int http_json(struct lws *wsi, db_pss_t *pss, int status, const char *json)
{
    db_msg_t *m = db_msg_new(json, strlen(json));
    if (!m)
        return 1;
    return http_respond(wsi, pss, status, "application/json", m, NULL, NULL, 0, NULL, NULL,
                        false);
}

static int http_writable(struct lws *wsi, db_pss_t *pss)
{
    if (pss->kind != PSS_HTTP || !pss->body)
        return 0;
    unsigned char buf[LWS_PRE + DB_HTTP_CHUNK];
    size_t n = pss->body_len - pss->body_off;
    if (n > DB_HTTP_CHUNK)
        n = DB_HTTP_CHUNK;
    memcpy(buf + LWS_PRE, pss->body + pss->body_off, n);
    pss->body_off += n;
    bool last = pss->body_off >= pss->body_len;
    if (lws_write(wsi, buf + LWS_PRE, n, last ? LWS_WRITE_HTTP_FINAL : LWS_WRITE_HTTP) <
        (int)n) {
        pss_http_release(pss);
        return -1;
    }
    if (!last) {
        lws_callback_on_writable(wsi);
        return 0;
    }
    pss_http_release(pss);
    return lws_http_transaction_completed(wsi) ? -1 : 0;
}

/* Copies a header into buf (cut to fit); NULL when absent. */
static const char *hdr(struct lws *wsi, enum lws_token_indexes t, char *buf, size_t size)
{
    if (lws_hdr_total_length(wsi, t) <= 0)
        return NULL;
    if (lws_hdr_copy(wsi, buf, (int)size, t) < 0)
        return NULL;
    return buf;
}

static const char *query_arg(struct lws *wsi, const char *name_eq, char *buf, size_t size)
{
    return lws_get_urlarg_by_name(wsi, name_eq, buf, (int)size);
}

static bool request_token_ok(db_server_t *s, struct lws *wsi, bool *from_query)
{
    char q[512], a[600], c[2048];
    const char *qt = query_arg(wsi, "token=", q, sizeof(q));
    bool ok = db_auth_token_ok(s->auth, qt, hdr(wsi, WSI_TOKEN_HTTP_AUTHORIZATION, a, sizeof(a)),
                               hdr(wsi, WSI_TOKEN_HTTP_COOKIE, c, sizeof(c)));
    if (from_query)
        *from_query = ok && qt && db_auth_has_token(s->auth) &&
                      db_auth_token_ok(s->auth, qt, NULL, NULL);
    memset(q, 0, sizeof(q));
    memset(a, 0, sizeof(a));
    memset(c, 0, sizeof(c));
    return ok;
}

static int http_metrics(db_server_t *s, struct lws *wsi, db_pss_t *pss)
{
    cm_buf_t b;
    cm_buf_init(&b, DB_METRICS_MAX);
    if (cm_metrics_render(s->reg, &b)) {
        cm_buf_free(&b);
        count_http(s, "metrics", 500);
        return http_json(wsi, pss, 500, "{\"error\":\"metrics too large\"}");
    }
    count_http(s, "metrics", 200);
    unsigned char *data = b.data;
    size_t len = b.len;
    b.data = NULL; /* the pss owns it now */
    return http_respond(wsi, pss, 200, CM_METRICS_CONTENT_TYPE, NULL, data, NULL, len, NULL,
                        NULL, false);
}

static int http_readyz(db_server_t *s, struct lws *wsi, db_pss_t *pss)
{
    char reason[256] = "starting";
    bool ready = s->ready_fn ? s->ready_fn(s->ready_ud, reason, sizeof(reason)) : true;
    count_http(s, "readyz", ready ? 200 : 503);
    if (ready)
        return http_json(wsi, pss, 200, "{\"status\":\"ready\"}");
    char body[512];
    /* the reason is our own text, but keep the JSON valid whatever it holds */
    for (char *r = reason; *r; r++)
        if (*r == '"' || *r == '\\' || (unsigned char)*r < 0x20)
            *r = ' ';
    snprintf(body, sizeof(body), "{\"status\":\"not ready\",\"reason\":\"%s\"}", reason);
    return http_json(wsi, pss, 503, body);
}

static int http_asset(db_server_t *s, struct lws *wsi, db_pss_t *pss, const db_asset_t *a,
                      bool set_cookie)
{
    char cookie[512];
    const char *ck = NULL;
    if (set_cookie) {
        snprintf(cookie, sizeof(cookie), "%s=%s; Path=/; HttpOnly; SameSite=Strict",
                 DB_TOKEN_COOKIE, db_auth_token(s->auth));
        ck = cookie;
    }
    bool page = strcmp(a->name, "index.html") == 0;
    int rc;
    if (s->cfg->web_dir && *s->cfg->web_dir) {
        unsigned char *data = NULL;
        size_t len = 0;
        if (db_web_load(s->cfg->web_dir, a, &data, &len)) {
            count_http(s, "asset", 404);
            rc = http_json(wsi, pss, 404, "{\"error\":\"not found in DASHBOARD_WEB_DIR\"}");
        } else {
            count_http(s, page ? "page" : "asset", 200);
            rc = http_respond(wsi, pss, 200, a->content_type, NULL, data, NULL, len,
                              "no-cache", ck, page);
        }
    } else {
        count_http(s, page ? "page" : "asset", 200);
        rc = http_respond(wsi, pss, 200, a->content_type, NULL, NULL, a->data, a->len,
                          "no-cache", ck, page);
    }
    memset(cookie, 0, sizeof(cookie));
    return rc;
}

static int on_http(db_server_t *s, struct lws *wsi, db_pss_t *pss, const char *path)
{
    if (pss->kind == PSS_HTTP)
        pss_http_release(pss); /* a keep-alive connection's previous body */
    memset(pss, 0, sizeof(*pss));
    pss->kind = PSS_HTTP;
    pss->wsi = wsi;
    if (lws_hdr_total_length(wsi, WSI_TOKEN_GET_URI) <= 0) {
        count_http(s, "other", 405);
        return http_json(wsi, pss, 405, "{\"error\":\"method not allowed\"}");
    }
    if (strcmp(path, "/healthz") == 0) {
        count_http(s, "healthz", 200);
        return http_json(wsi, pss, 200, "{\"status\":\"ok\"}");
    }
    if (strcmp(path, "/readyz") == 0)
        return http_readyz(s, wsi, pss);
    if (strcmp(path, "/metrics") == 0)
        return http_metrics(s, wsi, pss);

    const db_asset_t *a = db_asset_find(path);
    bool is_api = strcmp(path, "/api/snapshot") == 0;
    const char *route = is_api ? "snapshot" : a ? "page" : "other";
    bool from_query = false;
    if (!request_token_ok(s, wsi, &from_query)) {
        count_http(s, route, 401);
        return http_json(wsi, pss, 401,
                         "{\"error\":\"read token required (?token=, Authorization: Bearer)\"}");
    }
    if (is_api) {
        db_msg_t *snap = s->hub.model ? db_msg_ref(s->hub.model->snapshot) : NULL;
        if (!snap) {
            count_http(s, route, 503);
            return http_json(wsi, pss, 503, "{\"error\":\"no data read yet\"}");
        }
        count_http(s, route, 200);
        return http_respond(wsi, pss, 200, "application/json", snap, NULL, NULL, 0, NULL, NULL,
                            false);
    }
    if (a)
        return http_asset(s, wsi, pss, a, from_query);
    count_http(s, "other", 404);
    char body[300];
    char clean[200];
    size_t i = 0;
    for (; path[i] && i < sizeof(clean) - 1; i++)
        clean[i] = (path[i] == '"' || path[i] == '\\' || (unsigned char)path[i] < 0x20)
                       ? '_'
                       : path[i];
    clean[i] = '\0';
    snprintf(body, sizeof(body), "{\"error\":\"not found\",\"path\":\"%s\"}", clean);
    return http_json(wsi, pss, 404, body);
}

/* ----------------------------------------------------------- WebSocket */

static void client_timer_cb(lws_sorted_usec_list_t *sul);

static void client_act(db_server_t *s, db_pss_t *pss, db_action_t act, int64_t wake_ms,
                       int64_t now_ms)
{
    if (act == DB_ACT_WRITE) {
        lws_callback_on_writable(pss->wsi);
    } else if (act == DB_ACT_TIMER && !pss->timer_set) {
        int64_t d = wake_ms > now_ms ? wake_ms - now_ms : 0;
        pss->timer_set = true;
        lws_sul_schedule(s->ctx, 0, &pss->sul, client_timer_cb, (lws_usec_t)d * LWS_US_PER_MS);
    }
}

static void client_timer_cb(lws_sorted_usec_list_t *sul)
{
    db_pss_t *pss = lws_container_of(sul, db_pss_t, sul);
    db_server_t *s = lws_context_user(lws_get_context(pss->wsi));
    pss->timer_set = false;
    int64_t now = cm_mono_ms(), wake = 0;
    db_action_t act = db_client_offer(&s->hub, &pss->client, now, &wake);
    client_act(s, pss, act, wake, now);
}

/* Takes the newest model from the reader and offers it to every client. */
static void take_inbox(db_server_t *s)
{
    pthread_mutex_lock(&s->mu);
    db_model_t *m = s->inbox;
    s->inbox = NULL;
    pthread_mutex_unlock(&s->mu);
    if (!m)
        return;
    cm_counter_inc(s->m_models);
    db_hub_set_model(&s->hub, m);
    int64_t now = cm_mono_ms();
    for (db_client_t *c = s->hub.clients; c; c = c->next) {
        int64_t wake = 0;
        db_action_t act = db_client_offer(&s->hub, c, now, &wake);
        client_act(s, c->ud, act, wake, now);
    }
}

static void watchdog_cb(lws_sorted_usec_list_t *sul)
{
    db_server_t *s = lws_container_of(sul, db_server_t, watchdog);
    int64_t now = cm_mono_ms();
    for (db_client_t *c = s->hub.clients; c; c = c->next) {
        if (!db_client_stalled(&s->hub, c, now))
            continue;
        db_pss_t *pss = c->ud;
        cm_counter_inc(s->m_stalled);
        cm_log_warn("closing a stalled client", "queued", "%ld", (long)c->q_count, "overflows",
                    "%ld", (long)c->overflows, NULL);
        lws_set_timeout(pss->wsi, PENDING_TIMEOUT_USER_OK, LWS_TO_KILL_ASYNC);
    }
    lws_sul_schedule(s->ctx, 0, &s->watchdog, watchdog_cb, DB_WATCHDOG_US);
}

/* The handshake's checks: path, token, Origin, capacity. Non-zero refuses. */
static int ws_filter(db_server_t *s, struct lws *wsi)
{
    char uri[256], origin[512], host[512];
    const char *u = hdr(wsi, WSI_TOKEN_GET_URI, uri, sizeof(uri));
    if (!u || strcmp(u, "/ws") != 0) {
        cm_counter_inc(s->m_rej_path);
        return 1;
    }
    if (!request_token_ok(s, wsi, NULL)) {
        cm_counter_inc(s->m_rej_token);
        return 1;
    }
    const char *o = hdr(wsi, WSI_TOKEN_ORIGIN, origin, sizeof(origin));
    if (!db_auth_origin_ok(s->auth, o, hdr(wsi, WSI_TOKEN_HOST, host, sizeof(host)))) {
        cm_counter_inc(s->m_rej_origin);
        cm_log_info("websocket refused: origin not allowed", "origin", "%s", o ? o : "", NULL);
        return 1;
    }
    if ((int64_t)s->hub.n_clients >= s->cfg->max_clients) {
        cm_counter_inc(s->m_rej_full);
        return 1;
    }
    return 0;
}

static int ws_established(db_server_t *s, struct lws *wsi, db_pss_t *pss)
{
    memset(pss, 0, sizeof(*pss));
    pss->kind = PSS_WS;
    pss->wsi = wsi;
    pss->client.ud = pss;
    db_action_t act;
    int64_t now = cm_mono_ms();
    if (db_client_attach(&s->hub, &pss->client, now, &act))
        return -1;
    cm_counter_inc(s->m_ws_accepted);
    client_act(s, pss, act, 0, now);
    return 0;
}

static int ws_writable(db_server_t *s, struct lws *wsi, db_pss_t *pss)
{
    if (pss->kind != PSS_WS)
        return 0;
    db_msg_t *m = db_client_take(&s->hub, &pss->client, cm_mono_ms());
    if (!m)
        return 0;
    int n = lws_write(wsi, db_msg_body(m), m->len, LWS_WRITE_TEXT);
    size_t len = m->len;
    db_msg_unref(m);
    if (n < (int)len)
        return -1;
    if (pss->client.q_count)
        lws_callback_on_writable(wsi);
    return 0;
}

static void ws_closed(db_server_t *s, db_pss_t *pss)
{
    if (pss->kind != PSS_WS)
        return;
    lws_sul_cancel(&pss->sul);
    pss->timer_set = false;
    db_client_detach(&s->hub, &pss->client);
    pss->kind = PSS_NONE;
}

/* ------------------------------------------------------------ callback */

static int db_callback(struct lws *wsi, enum lws_callback_reasons reason, void *user, void *in,
                       size_t len)
{
    db_server_t *s = lws_context_user(lws_get_context(wsi));
    db_pss_t *pss = user;
    switch (reason) {
    case LWS_CALLBACK_EVENT_WAIT_CANCELLED:
        if (s)
            take_inbox(s);
        return 0;
    case LWS_CALLBACK_HTTP:
        return on_http(s, wsi, pss, in ? (const char *)in : "/");
    case LWS_CALLBACK_HTTP_WRITEABLE:
        return http_writable(wsi, pss);
    case LWS_CALLBACK_HTTP_DROP_PROTOCOL:
    case LWS_CALLBACK_CLOSED_HTTP:
        if (pss && pss->kind == PSS_HTTP)
            pss_http_release(pss);
        break;
    case LWS_CALLBACK_FILTER_PROTOCOL_CONNECTION:
        return ws_filter(s, wsi);
    case LWS_CALLBACK_ESTABLISHED:
        return ws_established(s, wsi, pss);
    case LWS_CALLBACK_SERVER_WRITEABLE:
        return ws_writable(s, wsi, pss);
    case LWS_CALLBACK_RECEIVE:
        return 0; /* the page sends nothing we act on */
    case LWS_CALLBACK_CLOSED:
        if (pss)
            ws_closed(s, pss);
        return 0;
    default:
        break;
    }
    return lws_callback_http_dummy(wsi, reason, user, in, len);
}

static const struct lws_protocols db_protocols[] = {
    {"dashboard", db_callback, sizeof(db_pss_t), 4096, 0, NULL, 0},
    {NULL, NULL, 0, 0, 0, NULL, 0},
};

/* Pings an idle WebSocket after 30 s and drops it when nothing came back
 * for 70 s (a peer gone without a FIN). */
static const lws_retry_bo_t db_retry = {
    .secs_since_valid_ping = 30,
    .secs_since_valid_hangup = 70,
};

/* ---------------------------------------------------------- life cycle */

static void *service_main(void *arg)
{
    db_server_t *s = arg;
    lws_sul_schedule(s->ctx, 0, &s->watchdog, watchdog_cb, DB_WATCHDOG_US);
    while (!atomic_load(&s->stop))
        if (lws_service(s->ctx, 0) < 0)
            break;
    return NULL;
}

static bool ready_default(void *ud, char *reason, size_t size) { return true; }

db_server_t *db_server_start(const db_config_t *cfg, cm_metrics_t *reg, char *errstr,
                             size_t errstr_size)
{
    db_server_t *s = calloc(1, sizeof(*s));
    if (!s) {
        snprintf(errstr, errstr_size, "out of memory");
        return NULL;
    }
    s->cfg = cfg;
    s->reg = reg;
    s->ready_fn = ready_default;
    pthread_mutex_init(&s->mu, NULL);
    s->auth = db_auth_new(cfg->read_token, cfg->allowed_origins, errstr, errstr_size);
    if (!s->auth)
        goto fail;
    db_hub_opts_t ho = {
        .interval_ms = cfg->client_interval_ms,
        .queue_max = (size_t)cfg->client_queue,
        .queue_bytes = (size_t)cfg->client_queue_bytes,
        .stall_ms = cfg->client_stall_ms,
    };
    db_hub_init(&s->hub, &ho, reg);
    const char *rh = "WebSocket handshakes refused by reason";
    s->m_ws_accepted = cm_metrics_counter(reg, "dashboard_ws_connections_total",
                                          "WebSocket clients accepted", NULL);
    s->m_rej_origin = cm_metrics_counter(reg, "dashboard_ws_refused_total", rh, "reason",
                                         "origin", NULL);
    s->m_rej_token = cm_metrics_counter(reg, "dashboard_ws_refused_total", rh, "reason",
                                        "token", NULL);
    s->m_rej_path = cm_metrics_counter(reg, "dashboard_ws_refused_total", rh, "reason", "path",
                                       NULL);
    s->m_rej_full = cm_metrics_counter(reg, "dashboard_ws_refused_total", rh, "reason",
                                       "max_clients", NULL);
    s->m_stalled = cm_metrics_counter(reg, "dashboard_clients_stalled_total",
                                      "clients closed for taking nothing for "
                                      "DASHBOARD_CLIENT_STALL_TIMEOUT",
                                      NULL);
    s->m_models = cm_metrics_counter(reg, "dashboard_models_received_total",
                                     "new aggregates handed from the reader to the server",
                                     NULL);

    lws_set_log_level(LLL_ERR | LLL_WARN, lws_log_emit);
    struct lws_context_creation_info info;
    memset(&info, 0, sizeof(info));
    info.port = (int)cfg->port;
    info.iface = (cfg->addr && strcmp(cfg->addr, "0.0.0.0") != 0) ? cfg->addr : NULL;
    info.protocols = db_protocols;
    info.user = s;
    info.count_threads = 1;
    info.retry_and_idle_policy = &db_retry;
    info.timeout_secs = 10;
    info.options = LWS_SERVER_OPTION_DISABLE_IPV6 * (info.iface != NULL);
    info.vhost_name = "dashboard";
    info.server_string = "dashboard-ws";
    s->ctx = lws_create_context(&info);
    if (!s->ctx) {
        snprintf(errstr, errstr_size, "cannot listen on %s:%d (port taken or bad address)",
                 cfg->addr, (int)cfg->port);
        goto fail;
    }
    struct lws_vhost *vh = lws_get_vhost_by_name(s->ctx, "dashboard");
    s->port = vh ? lws_get_vhost_listen_port(vh) : (int)cfg->port;
    if (pthread_create(&s->thread, NULL, service_main, s) != 0) {
        snprintf(errstr, errstr_size, "cannot start the server thread: %s", strerror(errno));
        goto fail;
    }
    s->thread_started = true;
    return s;
fail:
    db_server_stop(s);
    return NULL;
}

int db_server_port(const db_server_t *s) { return s->port; }

void db_server_set_ready_fn(db_server_t *s, db_ready_fn *fn, void *ud)
{
    s->ready_ud = ud;
    s->ready_fn = fn ? fn : ready_default;
}

void db_server_publish(db_server_t *s, db_model_t *m)
{
    pthread_mutex_lock(&s->mu);
    db_model_t *old = s->inbox;
    s->inbox = m;
    pthread_mutex_unlock(&s->mu);
    db_model_unref(old);
    if (s->ctx)
        lws_cancel_service(s->ctx);
}

void db_server_stop(db_server_t *s)
{
    if (!s)
        return;
    if (s->thread_started) {
        atomic_store(&s->stop, true);
        lws_cancel_service(s->ctx);
        pthread_join(s->thread, NULL);
    }
    if (s->ctx) {
        lws_sul_cancel(&s->watchdog);
        /* closes every connection: LWS_CALLBACK_CLOSED detaches the clients */
        lws_context_destroy(s->ctx);
    }
    db_hub_clear(&s->hub);
    db_model_unref(s->inbox);
    db_auth_destroy(s->auth);
    pthread_mutex_destroy(&s->mu);
    free(s);
}
