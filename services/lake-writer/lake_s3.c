/*
 * lake_s3.c: the S3 backend of lake_storage.h, over libcurl.
 *
 * Requests are signed with AWS Signature V4 by libcurl (CURLOPT_AWS_SIGV4 =
 * "aws:amz:<region>:s3", credentials as user:password): libcurl computes the
 * canonical request, the payload hash (x-amz-content-sha256) and the
 * Authorization header, so no crypto of our own is needed. Keys are
 * percent-encoded here (all but unreserved characters and '/'), the form the
 * canonical URI of SigV4 expects, so both ends agree on it.
 *
 * One easy handle is reused (keep-alive); calls come from the loop thread
 * only, except the expire command which has its own storage.
 */
#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <unistd.h>

#include <curl/curl.h>

#include "cm_log.h"
#include "lake_storage.h"

#define LW_S3_MAX_LIST_PAGE (16 * 1024 * 1024)

struct lw_s3 {
    CURL *h;
    char *endpoint; /* "http://127.0.0.1:9000", no trailing '/' */
    char *bucket;
    char *prefix;   /* "" or "a/b/" */
    char *sigv4;    /* "aws:amz:<region>:s3" */
    char *userpwd;  /* "access:secret" */
    bool path_style;
    long timeout_ms;
};

static char *dupn(const char *s, size_t n)
{
    char *d = malloc(n + 1);
    if (d) {
        memcpy(d, s, n);
        d[n] = 0;
    }
    return d;
}

lw_s3_t *lw_s3_new(const lw_storage_opts_t *o, char *errstr, size_t errstr_size)
{
    static int inited;
    if (!inited) {
        curl_global_init(CURL_GLOBAL_DEFAULT);
        inited = 1;
    }
    lw_s3_t *s = calloc(1, sizeof(*s));
    if (!s) {
        snprintf(errstr, errstr_size, "out of memory");
        return NULL;
    }
    const char *b = o->warehouse + 5; /* after "s3://" */
    const char *slash = strchr(b, '/');
    size_t bl = slash ? (size_t)(slash - b) : strlen(b);
    if (bl == 0) {
        snprintf(errstr, errstr_size, "LAKE_WAREHOUSE %s: no bucket", o->warehouse);
        goto fail;
    }
    s->bucket = dupn(b, bl);
    const char *p = slash ? slash + 1 : "";
    size_t pl = strlen(p);
    while (pl && p[pl - 1] == '/')
        pl--;
    s->prefix = malloc(pl + 2);
    if (s->prefix) {
        memcpy(s->prefix, p, pl);
        if (pl)
            s->prefix[pl++] = '/';
        s->prefix[pl] = 0;
    }
    const char *region = o->region && *o->region ? o->region : "us-east-1";
    char ep[512];
    if (o->endpoint && *o->endpoint)
        snprintf(ep, sizeof(ep), "%s", o->endpoint);
    else
        snprintf(ep, sizeof(ep), "https://s3.%s.amazonaws.com", region);
    size_t el = strlen(ep);
    while (el && ep[el - 1] == '/')
        ep[--el] = 0;
    s->endpoint = strdup(ep);
    char sig[128];
    snprintf(sig, sizeof(sig), "aws:amz:%s:s3", region);
    s->sigv4 = strdup(sig);
    if (!o->access_key || !o->secret_key || !*o->access_key) {
        snprintf(errstr, errstr_size,
                 "LAKE_S3_ACCESS_KEY and LAKE_S3_SECRET_KEY are required for s3://");
        goto fail;
    }
    size_t ul = strlen(o->access_key) + strlen(o->secret_key) + 2;
    s->userpwd = malloc(ul);
    if (s->userpwd)
        snprintf(s->userpwd, ul, "%s:%s", o->access_key, o->secret_key);
    s->path_style = o->path_style;
    s->timeout_ms = o->timeout_ms ? o->timeout_ms : 30000;
    s->h = curl_easy_init();
    if (!s->bucket || !s->prefix || !s->endpoint || !s->sigv4 || !s->userpwd || !s->h) {
        snprintf(errstr, errstr_size, "out of memory");
        goto fail;
    }
    return s;
fail:
    lw_s3_destroy(s);
    return NULL;
}

void lw_s3_destroy(lw_s3_t *s)
{
    if (!s)
        return;
    if (s->h)
        curl_easy_cleanup(s->h);
    free(s->endpoint);
    free(s->bucket);
    free(s->prefix);
    free(s->sigv4);
    if (s->userpwd) {
        explicit_bzero(s->userpwd, strlen(s->userpwd));
        free(s->userpwd);
    }
    free(s);
}

cm_err_t lw_s3_uri(const lw_s3_t *s, const char *key, char *buf, size_t size)
{
    return snprintf(buf, size, "s3://%s/%s%s", s->bucket, s->prefix, key) < (int)size
               ? CM_OK
               : CM_ERR_TOO_LARGE;
}

static void pct_encode(cm_buf_t *b, const char *s, bool keep_slash)
{
    static const char hex[] = "0123456789ABCDEF";
    for (; *s; s++) {
        unsigned char c = (unsigned char)*s;
        if ((c >= 'A' && c <= 'Z') || (c >= 'a' && c <= 'z') || (c >= '0' && c <= '9') ||
            c == '-' || c == '_' || c == '.' || c == '~' || (keep_slash && c == '/')) {
            cm_buf_putc(b, c);
        } else {
            cm_buf_putc(b, '%');
            cm_buf_putc(b, (uint8_t)hex[c >> 4]);
            cm_buf_putc(b, (uint8_t)hex[c & 15]);
        }
    }
}

/* URL of an object (key != NULL) or of the bucket (key == NULL). */
static void object_url(const lw_s3_t *s, const char *key, cm_buf_t *url)
{
    cm_buf_reset(url);
    if (s->path_style) {
        cm_buf_printf(url, "%s/", s->endpoint);
        pct_encode(url, s->bucket, false);
        cm_buf_putc(url, '/');
    } else {
        const char *sep = strstr(s->endpoint, "://");
        size_t schl = sep ? (size_t)(sep - s->endpoint) + 3 : 0;
        cm_buf_printf(url, "%.*s%s.%s/", (int)schl, s->endpoint, s->bucket,
                      s->endpoint + schl);
    }
    if (key) {
        cm_buf_t k;
        cm_buf_init(&k, 0);
        cm_buf_printf(&k, "%s%s", s->prefix, key);
        pct_encode(url, cm_buf_cstr(&k), true);
        cm_buf_free(&k);
    }
}

static size_t on_body(char *p, size_t sz, size_t n, void *ud)
{
    cm_buf_t *b = ud;
    return cm_buf_append(b, p, sz * n) == CM_OK ? sz * n : 0;
}

static size_t on_discard(char *p, size_t sz, size_t n, void *ud)
{
    (void)p;
    (void)ud;
    return sz * n;
}

/* One request. body may be NULL (no body) ; out may be NULL (discard). */
static cm_err_t request(lw_s3_t *s, const char *method, const char *url, const void *body,
                        size_t body_len, struct curl_slist *hdrs, cm_buf_t *out,
                        long *status)
{
    CURL *h = s->h;
    curl_easy_reset(h);
    curl_easy_setopt(h, CURLOPT_URL, url);
    curl_easy_setopt(h, CURLOPT_AWS_SIGV4, s->sigv4);
    curl_easy_setopt(h, CURLOPT_USERPWD, s->userpwd);
    curl_easy_setopt(h, CURLOPT_TIMEOUT_MS, s->timeout_ms);
    curl_easy_setopt(h, CURLOPT_CONNECTTIMEOUT_MS, 5000L);
    curl_easy_setopt(h, CURLOPT_NOSIGNAL, 1L);
    curl_easy_setopt(h, CURLOPT_CUSTOMREQUEST, method);
    if (strcmp(method, "HEAD") == 0)
        curl_easy_setopt(h, CURLOPT_NOBODY, 1L);
    if (body) {
        curl_easy_setopt(h, CURLOPT_POSTFIELDS, body);
        curl_easy_setopt(h, CURLOPT_POSTFIELDSIZE_LARGE, (curl_off_t)body_len);
    }
    /* No "Expect: 100-continue" round trip; an explicit content type so that
     * libcurl does not send (and sign) a form one. */
    hdrs = curl_slist_append(hdrs, "Expect:");
    hdrs = curl_slist_append(hdrs, "Content-Type: application/octet-stream");
    curl_easy_setopt(h, CURLOPT_HTTPHEADER, hdrs);
    curl_easy_setopt(h, CURLOPT_WRITEFUNCTION, out ? on_body : on_discard);
    curl_easy_setopt(h, CURLOPT_WRITEDATA, out);
    CURLcode rc = curl_easy_perform(h);
    curl_slist_free_all(hdrs);
    *status = 0;
    if (rc != CURLE_OK) {
        cm_log_warn("s3 request failed", "method", "%s", method, "error", "%s",
                    curl_easy_strerror(rc), NULL);
        return CM_ERR_IO;
    }
    curl_easy_getinfo(h, CURLINFO_RESPONSE_CODE, status);
    return CM_OK;
}

static cm_err_t status_err(const char *method, const char *key, long status, cm_buf_t *body)
{
    if (status >= 200 && status < 300)
        return CM_OK;
    if (status == 404)
        return CM_ERR_NOT_FOUND;
    if (status == 412 || status == 409)
        return CM_ERR_RETRY;
    cm_log_warn("s3 error", "method", "%s", method, "key", "%s", key, "status", "%ld", status,
                "body", "%s", body && body->len ? cm_buf_cstr(body) : "", NULL);
    return CM_ERR_IO;
}

cm_err_t lw_s3_get(lw_s3_t *s, const char *key, cm_buf_t *out, long *status)
{
    cm_buf_t url;
    cm_buf_init(&url, 0);
    object_url(s, key, &url);
    cm_buf_reset(out);
    cm_err_t err = request(s, "GET", cm_buf_cstr(&url), NULL, 0, NULL, out, status);
    cm_buf_free(&url);
    if (!err)
        err = status_err("GET", key, *status, *status == 404 ? NULL : out);
    if (err)
        cm_buf_reset(out);
    return err;
}

cm_err_t lw_s3_put(lw_s3_t *s, const char *key, const void *data, size_t len,
                   bool if_none_match, long *status)
{
    cm_buf_t url, body;
    cm_buf_init(&url, 0);
    cm_buf_init(&body, 64 * 1024);
    object_url(s, key, &url);
    struct curl_slist *h = NULL;
    if (if_none_match)
        h = curl_slist_append(h, "If-None-Match: *");
    /* An empty body still needs POSTFIELDS set, or libcurl would read stdin. */
    cm_err_t err =
        request(s, "PUT", cm_buf_cstr(&url), len ? data : "", len, h, &body, status);
    if (!err)
        err = status_err("PUT", key, *status, &body);
    cm_buf_free(&url);
    cm_buf_free(&body);
    return err;
}

cm_err_t lw_s3_put_file(lw_s3_t *s, const char *key, const char *path, long *status)
{
    int fd = open(path, O_RDONLY | O_CLOEXEC);
    if (fd < 0)
        return CM_ERR_IO;
    struct stat sb;
    if (fstat(fd, &sb)) {
        close(fd);
        return CM_ERR_IO;
    }
    size_t len = (size_t)sb.st_size;
    void *p = len ? mmap(NULL, len, PROT_READ, MAP_PRIVATE, fd, 0) : NULL;
    close(fd);
    if (len && p == MAP_FAILED)
        return CM_ERR_IO;
    /* Data files are published at most once, by the batch that made them:
     * a plain PUT. The whole body is hashed by libcurl for the signature. */
    cm_err_t err = lw_s3_put(s, key, p, len, false, status);
    if (len)
        munmap(p, len);
    return err;
}

cm_err_t lw_s3_delete(lw_s3_t *s, const char *key, long *status)
{
    cm_buf_t url;
    cm_buf_init(&url, 0);
    object_url(s, key, &url);
    cm_err_t err = request(s, "DELETE", cm_buf_cstr(&url), NULL, 0, NULL, NULL, status);
    cm_buf_free(&url);
    if (!err) {
        err = status_err("DELETE", key, *status, NULL);
        if (err == CM_ERR_NOT_FOUND)
            err = CM_OK;
    }
    return err;
}

/* Text between <tag> and </tag> starting at *p; advances *p. */
static const char *xml_next(const char *p, const char *tag, const char **end)
{
    char open[64], close_[64];
    snprintf(open, sizeof(open), "<%s>", tag);
    snprintf(close_, sizeof(close_), "</%s>", tag);
    const char *a = strstr(p, open);
    if (!a)
        return NULL;
    a += strlen(open);
    const char *b = strstr(a, close_);
    if (!b)
        return NULL;
    *end = b;
    return a;
}

static void xml_unescape(const char *a, size_t n, cm_buf_t *out)
{
    cm_buf_reset(out);
    for (size_t i = 0; i < n; i++) {
        if (a[i] == '&') {
            static const struct {
                const char *ent;
                char c;
            } ents[] = {{"&amp;", '&'}, {"&lt;", '<'}, {"&gt;", '>'}, {"&quot;", '"'},
                        {"&apos;", '\''}};
            size_t k;
            for (k = 0; k < sizeof(ents) / sizeof(ents[0]); k++) {
                size_t el = strlen(ents[k].ent);
                if (n - i >= el && memcmp(a + i, ents[k].ent, el) == 0) {
                    cm_buf_putc(out, (uint8_t)ents[k].c);
                    i += el - 1;
                    break;
                }
            }
            if (k < sizeof(ents) / sizeof(ents[0]))
                continue;
        }
        cm_buf_putc(out, (uint8_t)a[i]);
    }
}

cm_err_t lw_s3_list(lw_s3_t *s, const char *prefix, lw_storage_list_fn *fn, void *ud,
                    long *status)
{
    cm_buf_t url, body, tok, key;
    cm_buf_init(&url, 0);
    cm_buf_init(&body, LW_S3_MAX_LIST_PAGE);
    cm_buf_init(&tok, 0);
    cm_buf_init(&key, 0);
    cm_err_t err = CM_OK;
    size_t pl = strlen(s->prefix);
    for (int page = 0; page < 100000; page++) {
        object_url(s, NULL, &url);
        cm_buf_append_str(&url, "?list-type=2&prefix=");
        cm_buf_t full;
        cm_buf_init(&full, 0);
        cm_buf_printf(&full, "%s%s", s->prefix, prefix);
        pct_encode(&url, cm_buf_cstr(&full), false);
        cm_buf_free(&full);
        if (tok.len) {
            cm_buf_append_str(&url, "&continuation-token=");
            pct_encode(&url, cm_buf_cstr(&tok), false);
        }
        cm_buf_reset(&body);
        err = request(s, "GET", cm_buf_cstr(&url), NULL, 0, NULL, &body, status);
        if (!err)
            err = status_err("LIST", prefix, *status, &body);
        if (err)
            break;
        const char *p = cm_buf_cstr(&body), *end;
        const char *c;
        while ((c = xml_next(p, "Key", &end))) {
            xml_unescape(c, (size_t)(end - c), &key);
            const char *k = cm_buf_cstr(&key);
            if (strncmp(k, s->prefix, pl) == 0)
                fn(k + pl, ud);
            p = end;
        }
        const char *t = xml_next(cm_buf_cstr(&body), "NextContinuationToken", &end);
        const char *trunc = xml_next(cm_buf_cstr(&body), "IsTruncated", &end);
        if (!t || !trunc || strncmp(trunc, "true", 4) != 0)
            break;
        xml_next(cm_buf_cstr(&body), "NextContinuationToken", &end);
        xml_unescape(t, (size_t)(end - t), &tok);
    }
    cm_buf_free(&url);
    cm_buf_free(&body);
    cm_buf_free(&tok);
    cm_buf_free(&key);
    return err;
}
