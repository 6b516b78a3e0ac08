#include "cm_admin.h"

#include <arpa/inet.h>
#include <errno.h>
#include <fcntl.h>
#include <jansson.h>
#include <microhttpd.h>
#include <netdb.h>
#include <netinet/in.h>
#include <pthread.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <unistd.h>

#include "cm_log.h"

/* A scrape or handler reply past this is a bug, not a reason to eat memory. */
#define CM_ADMIN_MAX_REPLY (64u * 1024 * 1024)
#define CM_ADMIN_MAX_CONNECTIONS 64
#define CM_ADMIN_TIMEOUT_S 10

typedef struct route {
    char *prefix;
    size_t len;
    cm_admin_handler_fn fn;
    void *ud;
    struct route *next;
} route_t;

struct cm_admin {
    struct MHD_Daemon *mhd;
    cm_metrics_t *reg;
    int port;
    pthread_mutex_t lock; /* guards the fields below */
    bool ready;
    char reason[CM_ADMIN_REASON_MAX];
    cm_admin_ready_fn ready_fn;
    void *ready_ud;
    route_t *routes;
};

/* Per-request state: lives from the first callback to request completion. */
typedef struct conn_ctx {
    cm_buf_t body;
    bool too_large;
} conn_ctx_t;

/* ------------------------------------------------------------ replies */

/* Queues `data` (malloc'd, taken over; NULL sends an empty body). */
static enum MHD_Result reply_raw(struct MHD_Connection *c, int status, const char *ctype,
                                 char *data, size_t len)
{
    struct MHD_Response *r =
        MHD_create_response_from_buffer(len, data ? data : (char *)"",
                                        data ? MHD_RESPMEM_MUST_FREE : MHD_RESPMEM_PERSISTENT);
    enum MHD_Result ret;
    if (!r) {
        free(data);
        return MHD_NO;
    }
    MHD_add_response_header(r, MHD_HTTP_HEADER_CONTENT_TYPE, ctype);
    MHD_add_response_header(r, MHD_HTTP_HEADER_CACHE_CONTROL, "no-store");
    if (status == MHD_HTTP_METHOD_NOT_ALLOWED)
        MHD_add_response_header(r, MHD_HTTP_HEADER_ALLOW, "GET, HEAD");
    ret = MHD_queue_response(c, (unsigned)status, r);
    MHD_destroy_response(r);
    return ret;
}

/* Queues a JSON object (taken over) as "<compact json>\n". */
static enum MHD_Result reply_json(struct MHD_Connection *c, int status, json_t *obj)
{
    char *text = obj ? json_dumps(obj, JSON_COMPACT) : NULL;
    char *line;
    size_t len;
    json_decref(obj);
    if (!text)
        return MHD_NO;
    len = strlen(text);
    line = realloc(text, len + 2); /* a trailing newline for curl users */
    if (!line) {
        free(text);
        return MHD_NO;
    }
    line[len] = '\n';
    line[len + 1] = '\0';
    return reply_raw(c, status, "application/json", line, len + 1);
}

static enum MHD_Result reply_error(struct MHD_Connection *c, int status, const char *error,
                                   const char *path)
{
    json_t *o = json_pack("{s:s}", "error", error);
    /* The path comes from outside: json_string_nocheck would pass bad
     * UTF-8 through, json_string refuses it and we leave it out. */
    if (o && path) {
        json_t *p = json_string(path);
        if (p)
            json_object_set_new(o, "path", p);
    }
    return reply_json(c, status, o);
}

/* ------------------------------------------------------------ built-ins */

static enum MHD_Result serve_metrics(cm_admin_t *adm, struct MHD_Connection *c)
{
    cm_buf_t b;
    cm_err_t err;
    cm_buf_init(&b, CM_ADMIN_MAX_REPLY);
    err = adm->reg ? cm_metrics_render(adm->reg, &b) : CM_OK;
    if (err) {
        cm_buf_free(&b);
        cm_log_error("metrics exposition failed", "error", "%s", cm_err_str(err), NULL);
        return reply_error(c, MHD_HTTP_INTERNAL_SERVER_ERROR, "metrics exposition failed",
                           NULL);
    }
    return reply_raw(c, MHD_HTTP_OK, CM_METRICS_CONTENT_TYPE, (char *)b.data, b.len);
}

static enum MHD_Result serve_readyz(cm_admin_t *adm, struct MHD_Connection *c)
{
    char reason[CM_ADMIN_REASON_MAX] = "";
    cm_admin_ready_fn fn;
    void *ud;
    bool ready;

    pthread_mutex_lock(&adm->lock);
    fn = adm->ready_fn;
    ud = adm->ready_ud;
    ready = adm->ready;
    memcpy(reason, adm->reason, sizeof(reason));
    pthread_mutex_unlock(&adm->lock);
    if (fn) {
        reason[0] = '\0';
        ready = fn(ud, reason, sizeof(reason));
        reason[sizeof(reason) - 1] = '\0';
    }
    if (ready)
        return reply_json(c, MHD_HTTP_OK, json_pack("{s:s}", "status", "ready"));
    json_t *o = json_pack("{s:s}", "status", "not ready");
    json_t *r = json_string(reason[0] ? reason : "not ready");
    if (o && r)
        json_object_set_new(o, "reason", r);
    else
        json_decref(r);
    return reply_json(c, MHD_HTTP_SERVICE_UNAVAILABLE, o);
}

/* ------------------------------------------------------------- routing */

/* The handler of the longest prefix of `path` (the newest of equal ones:
 * the list is newest first), copied out under the lock. */
static bool find_route(cm_admin_t *adm, const char *path, cm_admin_handler_fn *fn,
                       void **ud)
{
    size_t best = 0;
    bool found = false;
    pthread_mutex_lock(&adm->lock);
    for (route_t *r = adm->routes; r; r = r->next) {
        if (r->len > best && strncmp(path, r->prefix, r->len) == 0) {
            best = r->len;
            *fn = r->fn;
            *ud = r->ud;
            found = true;
        }
    }
    pthread_mutex_unlock(&adm->lock);
    return found;
}

static enum MHD_Result serve_route(struct MHD_Connection *c, const char *method,
                                   const char *path, conn_ctx_t *ctx,
                                   cm_admin_handler_fn fn, void *ud)
{
    cm_admin_resp_t resp = {.status = MHD_HTTP_OK, .content_type = "application/json"};
    const char *body = cm_buf_cstr(&ctx->body);
    cm_admin_req_t req = {
        .method = method,
        .path = path,
        .body = body ? body : "",
        .body_len = body ? ctx->body.len : 0,
        .conn = c,
    };
    cm_buf_init(&resp.body, CM_ADMIN_MAX_REPLY);
    fn(ud, &req, &resp);
    if (resp.status < 100 || resp.status > 599) {
        cm_buf_free(&resp.body);
        return reply_error(c, MHD_HTTP_INTERNAL_SERVER_ERROR, "handler gave a bad status",
                           NULL);
    }
    return reply_raw(c, resp.status, resp.content_type ? resp.content_type : "text/plain",
                     (char *)resp.body.data, resp.body.len);
}

static bool is_get(const char *method)
{
    return strcmp(method, MHD_HTTP_METHOD_GET) == 0 || strcmp(method, MHD_HTTP_METHOD_HEAD) == 0;
}

static enum MHD_Result on_request(void *cls, struct MHD_Connection *c, const char *url,
                                  const char *method, const char *version,
                                  const char *upload_data, size_t *upload_data_size,
                                  void **con_cls)
{
    cm_admin_t *adm = cls;
    conn_ctx_t *ctx = *con_cls;
    cm_admin_handler_fn fn = NULL;
    void *ud = NULL;

    if (!ctx) { /* first call: headers only */
        ctx = calloc(1, sizeof(*ctx));
        if (!ctx)
            return MHD_NO;
        cm_buf_init(&ctx->body, CM_ADMIN_MAX_BODY);
        *con_cls = ctx;
        return MHD_YES;
    }
    if (*upload_data_size) { /* a piece of the body; past the cap it is dropped */
        if (!ctx->too_large && cm_buf_append(&ctx->body, upload_data, *upload_data_size))
            ctx->too_large = true;
        *upload_data_size = 0;
        return MHD_YES;
    }

    if (strcmp(url, "/metrics") == 0 || strcmp(url, "/healthz") == 0 ||
        strcmp(url, "/readyz") == 0) {
        if (!is_get(method))
            return reply_error(c, MHD_HTTP_METHOD_NOT_ALLOWED, "method not allowed", NULL);
        if (url[1] == 'm')
            return serve_metrics(adm, c);
        if (url[1] == 'h')
            return reply_json(c, MHD_HTTP_OK, json_pack("{s:s}", "status", "ok"));
        return serve_readyz(adm, c);
    }
    if (find_route(adm, url, &fn, &ud)) {
        if (ctx->too_large)
            return reply_error(c, MHD_HTTP_CONTENT_TOO_LARGE, "request body too large", NULL);
        return serve_route(c, method, url, ctx, fn, ud);
    }
    return reply_error(c, MHD_HTTP_NOT_FOUND, "not found", url);
}

static void on_completed(void *cls, struct MHD_Connection *c, void **con_cls,
                         enum MHD_RequestTerminationCode toe)
{
    conn_ctx_t *ctx = *con_cls;
    if (!ctx)
        return;
    cm_buf_free(&ctx->body);
    free(ctx);
    *con_cls = NULL;
}

static void on_mhd_log(void *cls, const char *fmt, va_list ap)
{
    char msg[512];
    vsnprintf(msg, sizeof(msg), fmt, ap);
    msg[strcspn(msg, "\n")] = '\0';
    cm_log_warn("admin http server", "error", "%s", msg, NULL);
}

/* ------------------------------------------------------------ lifecycle */

/* Resolves, binds and listens; returns the socket or -1 with errstr. */
static int open_listener(const char *addr, int port, bool *ipv6, char *errstr, size_t n)
{
    /* Numeric only: no resolver (and no DNS wait) at start-up. */
    struct addrinfo hints = {.ai_socktype = SOCK_STREAM,
                             .ai_flags = AI_PASSIVE | AI_NUMERICHOST | AI_NUMERICSERV};
    struct addrinfo *ai = NULL;
    char portstr[16];
    int fd = -1, one = 1, zero = 0, rc;

    snprintf(portstr, sizeof(portstr), "%d", port);
    rc = getaddrinfo(addr, portstr, &hints, &ai);
    if (rc || !ai) {
        snprintf(errstr, n, "admin address '%s': %s", addr,
                 rc == EAI_NONAME ? "not an IPv4 or IPv6 address" : gai_strerror(rc));
        goto out;
    }
    fd = socket(ai->ai_family, SOCK_STREAM | SOCK_CLOEXEC | SOCK_NONBLOCK, 0);
    if (fd < 0) {
        snprintf(errstr, n, "admin socket: %s", strerror(errno));
        goto out;
    }
    *ipv6 = ai->ai_family == AF_INET6;
    setsockopt(fd, SOL_SOCKET, SO_REUSEADDR, &one, sizeof(one));
    if (*ipv6) /* "::" takes IPv4 too */
        setsockopt(fd, IPPROTO_IPV6, IPV6_V6ONLY, &zero, sizeof(zero));
    if (bind(fd, ai->ai_addr, ai->ai_addrlen) || listen(fd, 64)) {
        snprintf(errstr, n, "admin server cannot listen on %s port %d: %s", addr, port,
                 strerror(errno));
        close(fd);
        fd = -1;
    }
out:
    if (ai)
        freeaddrinfo(ai);
    return fd;
}

static int bound_port(int fd)
{
    struct sockaddr_storage ss;
    socklen_t len = sizeof(ss);
    if (getsockname(fd, (struct sockaddr *)&ss, &len))
        return -1;
    if (ss.ss_family == AF_INET6)
        return ntohs(((struct sockaddr_in6 *)&ss)->sin6_port);
    return ntohs(((struct sockaddr_in *)&ss)->sin_port);
}

cm_admin_t *cm_admin_start(const char *bind_addr, int port, cm_metrics_t *reg, char *errstr,
                           size_t errstr_size)
{
    cm_admin_t *adm;
    unsigned flags = MHD_USE_INTERNAL_POLLING_THREAD | MHD_USE_ERROR_LOG;
    bool ipv6 = false;
    int fd;

    if (!bind_addr || !*bind_addr)
        bind_addr = "0.0.0.0";
    if (port < 0 || port > 65535) {
        snprintf(errstr, errstr_size, "admin port %d: must be between 0 and 65535", port);
        return NULL;
    }
    adm = calloc(1, sizeof(*adm));
    if (!adm) {
        snprintf(errstr, errstr_size, "admin server: out of memory");
        return NULL;
    }
    pthread_mutex_init(&adm->lock, NULL);
    adm->reg = reg;
    snprintf(adm->reason, sizeof(adm->reason), "starting");

    /* Our own socket: exact bind errors, and the real port of port 0. */
    fd = open_listener(bind_addr, port, &ipv6, errstr, errstr_size);
    if (fd < 0)
        goto fail;
    adm->port = bound_port(fd);
    flags |= MHD_is_feature_supported(MHD_FEATURE_EPOLL) == MHD_YES ? MHD_USE_EPOLL
                                                                    : MHD_USE_POLL;
    if (ipv6)
        flags |= MHD_USE_IPv6;
    /* The logger goes first so that start-up messages use it too. */
    adm->mhd = MHD_start_daemon(
        flags, 0, NULL, NULL, on_request, adm, MHD_OPTION_EXTERNAL_LOGGER, on_mhd_log, adm,
        MHD_OPTION_LISTEN_SOCKET, fd, MHD_OPTION_NOTIFY_COMPLETED, on_completed, adm,
        MHD_OPTION_CONNECTION_LIMIT, (unsigned)CM_ADMIN_MAX_CONNECTIONS,
        MHD_OPTION_CONNECTION_TIMEOUT, (unsigned)CM_ADMIN_TIMEOUT_S, MHD_OPTION_END);
    if (!adm->mhd) {
        snprintf(errstr, errstr_size, "admin server on %s port %d: cannot start", bind_addr,
                 adm->port);
        /* Some MHD versions close a given listen socket on failure, some
         * do not. */
        if (fcntl(fd, F_GETFD) != -1)
            close(fd);
        goto fail;
    }
    return adm;
fail:
    cm_admin_stop(adm);
    return NULL;
}

void cm_admin_stop(cm_admin_t *adm)
{
    route_t *r, *next;
    if (!adm)
        return;
    if (adm->mhd)
        MHD_stop_daemon(adm->mhd); /* joins the thread, closes the socket */
    for (r = adm->routes; r; r = next) {
        next = r->next;
        free(r->prefix);
        free(r);
    }
    pthread_mutex_destroy(&adm->lock);
    free(adm);
}

int cm_admin_port(const cm_admin_t *adm) { return adm ? adm->port : -1; }

void cm_admin_set_ready(cm_admin_t *adm, bool ready, const char *reason)
{
    if (!adm)
        return;
    pthread_mutex_lock(&adm->lock);
    adm->ready = ready;
    snprintf(adm->reason, sizeof(adm->reason), "%s", reason ? reason : "");
    pthread_mutex_unlock(&adm->lock);
}

void cm_admin_set_ready_fn(cm_admin_t *adm, cm_admin_ready_fn fn, void *ud)
{
    if (!adm)
        return;
    pthread_mutex_lock(&adm->lock);
    adm->ready_fn = fn;
    adm->ready_ud = ud;
    pthread_mutex_unlock(&adm->lock);
}

cm_err_t cm_admin_handle(cm_admin_t *adm, const char *prefix, cm_admin_handler_fn fn,
                         void *ud)
{
    route_t *r;
    if (!adm || !prefix || prefix[0] != '/' || !fn)
        return CM_ERR_INVALID;
    r = calloc(1, sizeof(*r));
    if (!r || !(r->prefix = strdup(prefix))) {
        free(r);
        return CM_ERR_NOMEM;
    }
    r->len = strlen(prefix);
    r->fn = fn;
    r->ud = ud;
    pthread_mutex_lock(&adm->lock);
    r->next = adm->routes;
    adm->routes = r;
    pthread_mutex_unlock(&adm->lock);
    return CM_OK;
}

const char *cm_admin_req_arg(const cm_admin_req_t *req, const char *key)
{
    return MHD_lookup_connection_value(req->conn, MHD_GET_ARGUMENT_KIND, key);
}

const char *cm_admin_req_header(const cm_admin_req_t *req, const char *name)
{
    return MHD_lookup_connection_value(req->conn, MHD_HEADER_KIND, name);
}
