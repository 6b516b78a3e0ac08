#include "cm_registry.h"

#include <pthread.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <curl/curl.h>
#include <jansson.h>

#include "cm_buf.h"
#include "cm_time.h"

#define REG_CONNECT_TIMEOUT_MS 3000L
#define REG_TIMEOUT_MS 10000L
#define REG_MAX_RESPONSE (1024 * 1024)
/* After a failed lookup, answer CM_ERR_IO at once for this long instead of
 * blocking every decode on a dead registry. */
#define REG_BACKOFF_MS 1000

typedef struct reg_subject {
    char *subject;
    cm_schema_kind_t kind;
    uint32_t id;
} reg_subject_t;

typedef struct reg_id {
    uint32_t id;
    int kind; /* a cm_schema_kind_t, or -1: not one of ours */
} reg_id_t;

struct cm_registry {
    char *url; /* base URL without trailing '/'; NULL in built-in mode */
    pthread_mutex_t lock;
    reg_subject_t *subjects;
    size_t n_subjects, subjects_cap;
    reg_id_t *ids;
    size_t n_ids, ids_cap;
    size_t n_lookups;        /* ids learnt by GET /schemas/ids (bounded) */
    int64_t backoff_until_ms;
    avro_schema_t ours[CM_SCHEMA__COUNT]; /* parsed on first lookup */
    CURL *curl;                           /* reused, under the lock */
};

static void set_err(char *errstr, size_t size, const char *fmt, ...)
    __attribute__((format(printf, 3, 4)));

static void set_err(char *errstr, size_t size, const char *fmt, ...)
{
    if (!errstr || !size)
        return;
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(errstr, size, fmt, ap);
    va_end(ap);
}

static pthread_once_t curl_once = PTHREAD_ONCE_INIT;
static CURLcode curl_init_rc;

static void curl_init_once(void) { curl_init_rc = curl_global_init(CURL_GLOBAL_DEFAULT); }

cm_registry_t *cm_registry_new(const char *url_or_null, char *errstr, size_t errstr_size)
{
    cm_registry_t *reg = calloc(1, sizeof(*reg));
    if (!reg) {
        set_err(errstr, errstr_size, "out of memory");
        return NULL;
    }
    pthread_mutex_init(&reg->lock, NULL);
    if (!url_or_null || !*url_or_null)
        return reg;

    if (strncmp(url_or_null, "http://", 7) != 0 && strncmp(url_or_null, "https://", 8) != 0) {
        set_err(errstr, errstr_size, "schema registry URL must start with http:// or https://");
        goto fail;
    }
    if (strchr(url_or_null, ',')) {
        set_err(errstr, errstr_size, "schema registry URL: only one URL is supported");
        goto fail;
    }
    reg->url = strdup(url_or_null);
    if (!reg->url) {
        set_err(errstr, errstr_size, "out of memory");
        goto fail;
    }
    size_t n = strlen(reg->url);
    while (n > 0 && reg->url[n - 1] == '/')
        reg->url[--n] = '\0';
    pthread_once(&curl_once, curl_init_once);
    if (curl_init_rc != CURLE_OK) {
        set_err(errstr, errstr_size, "curl_global_init: %s", curl_easy_strerror(curl_init_rc));
        goto fail;
    }
    return reg;
fail:
    cm_registry_destroy(reg);
    return NULL;
}

void cm_registry_destroy(cm_registry_t *reg)
{
    if (!reg)
        return;
    for (size_t i = 0; i < reg->n_subjects; i++)
        free(reg->subjects[i].subject);
    free(reg->subjects);
    free(reg->ids);
    for (int k = 0; k < CM_SCHEMA__COUNT; k++)
        if (reg->ours[k])
            avro_schema_decref(reg->ours[k]);
    if (reg->curl)
        curl_easy_cleanup(reg->curl);
    free(reg->url);
    pthread_mutex_destroy(&reg->lock);
    free(reg);
}

int cm_registry_is_remote(const cm_registry_t *reg) { return reg && reg->url; }

cm_err_t cm_registry_subject(const char *topic, char *buf, size_t size)
{
    int n = snprintf(buf, size, "%s-value", topic);
    return n < 0 || (size_t)n >= size ? CM_ERR_TOO_LARGE : CM_OK;
}

/* ------------------------------------------------------------------------ */
/* HTTP, with reg->lock held. */

static size_t on_body(char *p, size_t size, size_t nmemb, void *ud)
{
    cm_buf_t *b = ud;
    size_t n = size * nmemb;
    return cm_buf_append(b, p, n) == CM_OK ? n : 0; /* 0 aborts the transfer */
}

/*
 * One request to <url><path>; body NULL means GET. Fills *status and resp.
 * Returns CM_OK when an HTTP answer arrived (any status), CM_ERR_IO otherwise.
 */
static cm_err_t http_do(cm_registry_t *reg, const char *path, const char *body, long *status,
                        cm_buf_t *resp, char *errstr, size_t errstr_size)
{
    char ebuf[CURL_ERROR_SIZE] = "";
    struct curl_slist *hdrs = NULL;
    cm_buf_t url;
    cm_err_t err = CM_ERR_IO;

    cm_buf_init(&url, 0);
    if (!reg->curl && !(reg->curl = curl_easy_init())) {
        set_err(errstr, errstr_size, "curl_easy_init failed");
        goto out;
    }
    if (cm_buf_append_str(&url, reg->url) || cm_buf_append_str(&url, path) ||
        !cm_buf_cstr(&url)) {
        set_err(errstr, errstr_size, "out of memory");
        err = CM_ERR_NOMEM;
        goto out;
    }
    CURL *c = reg->curl;
    curl_easy_reset(c);
    hdrs = curl_slist_append(hdrs, "Accept: application/vnd.schemaregistry.v1+json, "
                                   "application/json");
    if (body)
        hdrs = curl_slist_append(hdrs, "Content-Type: application/vnd.schemaregistry.v1+json");
    curl_easy_setopt(c, CURLOPT_URL, (const char *)url.data);
    curl_easy_setopt(c, CURLOPT_HTTPHEADER, hdrs);
    curl_easy_setopt(c, CURLOPT_NOSIGNAL, 1L);
    curl_easy_setopt(c, CURLOPT_CONNECTTIMEOUT_MS, REG_CONNECT_TIMEOUT_MS);
    curl_easy_setopt(c, CURLOPT_TIMEOUT_MS, REG_TIMEOUT_MS);
    curl_easy_setopt(c, CURLOPT_USERAGENT, "clickstream-cm_registry");
    curl_easy_setopt(c, CURLOPT_ERRORBUFFER, ebuf);
    curl_easy_setopt(c, CURLOPT_WRITEFUNCTION, on_body);
    curl_easy_setopt(c, CURLOPT_WRITEDATA, resp);
    if (body) {
        curl_easy_setopt(c, CURLOPT_POST, 1L);
        curl_easy_setopt(c, CURLOPT_POSTFIELDS, body);
        curl_easy_setopt(c, CURLOPT_POSTFIELDSIZE, (long)strlen(body));
    }
    CURLcode rc = curl_easy_perform(c);
    if (rc != CURLE_OK) {
        /* ebuf names the host, never the credentials of the URL. */
        set_err(errstr, errstr_size, "schema registry %s %s: %s", body ? "POST" : "GET", path,
                ebuf[0] ? ebuf : curl_easy_strerror(rc));
        goto out;
    }
    curl_easy_getinfo(c, CURLINFO_RESPONSE_CODE, status);
    if (!cm_buf_cstr(resp)) {
        err = CM_ERR_NOMEM;
        goto out;
    }
    err = CM_OK;
out:
    if (reg->curl) {
        /* The handle outlives this call: drop pointers to our locals. */
        curl_easy_setopt(reg->curl, CURLOPT_HTTPHEADER, NULL);
        curl_easy_setopt(reg->curl, CURLOPT_ERRORBUFFER, NULL);
    }
    curl_slist_free_all(hdrs);
    cm_buf_free(&url);
    return err;
}

/* The registry's {"error_code":..,"message":".."} text, for errstr. */
static const char *resp_message(const cm_buf_t *resp, char *buf, size_t size)
{
    json_t *j = json_loadb((const char *)resp->data, resp->len, 0, NULL);
    const char *m = j ? json_string_value(json_object_get(j, "message")) : NULL;
    snprintf(buf, size, "%s", m ? m : "");
    json_decref(j);
    return buf;
}

static cm_err_t ids_add(cm_registry_t *reg, uint32_t id, int kind)
{
    for (size_t i = 0; i < reg->n_ids; i++) {
        if (reg->ids[i].id == id) {
            reg->ids[i].kind = kind;
            return CM_OK;
        }
    }
    if (reg->n_ids == reg->ids_cap) {
        size_t ncap = reg->ids_cap ? reg->ids_cap * 2 : 8;
        reg_id_t *p = realloc(reg->ids, ncap * sizeof(*p));
        if (!p)
            return CM_ERR_NOMEM;
        reg->ids = p;
        reg->ids_cap = ncap;
    }
    reg->ids[reg->n_ids].id = id;
    reg->ids[reg->n_ids].kind = kind;
    reg->n_ids++;
    return CM_OK;
}

static cm_err_t do_register(cm_registry_t *reg, const char *subject, cm_schema_kind_t kind,
                            uint32_t *id, char *errstr, size_t errstr_size)
{
    cm_buf_t resp;
    json_t *req = NULL, *ans = NULL;
    char *body = NULL, *esc = NULL, msg[160];
    cm_buf_t path;
    long status = 0;
    cm_err_t err;

    cm_buf_init(&resp, REG_MAX_RESPONSE);
    cm_buf_init(&path, 0);
    req = json_pack("{s:s}", "schema", cm_schema_json(kind));
    body = req ? json_dumps(req, JSON_COMPACT) : NULL;
    if (!reg->curl)
        reg->curl = curl_easy_init();
    esc = reg->curl ? curl_easy_escape(reg->curl, subject, 0) : NULL;
    if (!body || !esc || cm_buf_printf(&path, "/subjects/%s/versions", esc)) {
        set_err(errstr, errstr_size, "out of memory");
        err = CM_ERR_NOMEM;
        goto out;
    }
    err = http_do(reg, cm_buf_cstr(&path), body, &status, &resp, errstr, errstr_size);
    if (err)
        goto out;
    if (status != 200) {
        err = status >= 500 ? CM_ERR_IO : CM_ERR_INVALID;
        set_err(errstr, errstr_size, "schema registry refused %s for subject %s: HTTP %ld %s",
                cm_schema_kind_name(kind), subject, status,
                resp_message(&resp, msg, sizeof(msg)));
        goto out;
    }
    ans = json_loadb((const char *)resp.data, resp.len, 0, NULL);
    json_t *jid = ans ? json_object_get(ans, "id") : NULL;
    if (!json_is_integer(jid) || json_integer_value(jid) < 0 ||
        json_integer_value(jid) > UINT32_MAX) {
        set_err(errstr, errstr_size, "schema registry: no valid \"id\" in the answer for %s",
                subject);
        err = CM_ERR_PARSE;
        goto out;
    }
    *id = (uint32_t)json_integer_value(jid);
out:
    json_decref(ans);
    json_decref(req);
    free(body);
    curl_free(esc);
    cm_buf_free(&path);
    cm_buf_free(&resp);
    return err;
}

cm_err_t cm_registry_id(cm_registry_t *reg, const char *subject, cm_schema_kind_t kind,
                        uint32_t *id, char *errstr, size_t errstr_size)
{
    cm_err_t err = CM_OK;

    if ((unsigned)kind >= CM_SCHEMA__COUNT || !subject) {
        set_err(errstr, errstr_size, "bad schema kind or subject");
        return CM_ERR_INVALID;
    }
    if (!reg || !reg->url) {
        *id = cm_schema_builtin_id(kind);
        return CM_OK;
    }
    pthread_mutex_lock(&reg->lock);
    for (size_t i = 0; i < reg->n_subjects; i++) {
        if (reg->subjects[i].kind == kind && strcmp(reg->subjects[i].subject, subject) == 0) {
            *id = reg->subjects[i].id;
            goto out;
        }
    }
    uint32_t got = 0;
    if ((err = do_register(reg, subject, kind, &got, errstr, errstr_size)))
        goto out;
    if (reg->n_subjects == reg->subjects_cap) {
        size_t ncap = reg->subjects_cap ? reg->subjects_cap * 2 : 4;
        reg_subject_t *p = realloc(reg->subjects, ncap * sizeof(*p));
        if (!p) {
            err = CM_ERR_NOMEM;
            goto out;
        }
        reg->subjects = p;
        reg->subjects_cap = ncap;
    }
    char *dup = strdup(subject);
    if (!dup || (err = ids_add(reg, got, (int)kind))) {
        free(dup);
        err = CM_ERR_NOMEM;
        set_err(errstr, errstr_size, "out of memory");
        goto out;
    }
    reg->subjects[reg->n_subjects++] = (reg_subject_t){dup, kind, got};
    *id = got;
out:
    pthread_mutex_unlock(&reg->lock);
    return err;
}

/* GET /schemas/ids/<id> and compare with our schemas: *kind = ours or -1. */
static cm_err_t do_lookup(cm_registry_t *reg, uint32_t id, int *kind, char *errstr,
                          size_t errstr_size)
{
    cm_buf_t resp;
    json_t *ans = NULL;
    avro_schema_t theirs = NULL;
    char path[64], msg[160];
    long status = 0;
    cm_err_t err;

    *kind = -1;
    cm_buf_init(&resp, REG_MAX_RESPONSE);
    for (int k = 0; k < CM_SCHEMA__COUNT; k++) {
        if (!reg->ours[k] && (err = cm_avro_schema_parse(k, &reg->ours[k], errstr, errstr_size)))
            goto out;
    }
    snprintf(path, sizeof(path), "/schemas/ids/%u", id);
    if ((err = http_do(reg, path, NULL, &status, &resp, errstr, errstr_size)))
        goto out;
    if (status == 404) /* not a schema of this registry: a definite "no" */
        goto out;
    if (status != 200) {
        set_err(errstr, errstr_size, "schema registry GET %s: HTTP %ld %s", path, status,
                resp_message(&resp, msg, sizeof(msg)));
        err = CM_ERR_IO;
        goto out;
    }
    ans = json_loadb((const char *)resp.data, resp.len, 0, NULL);
    const char *text = ans ? json_string_value(json_object_get(ans, "schema")) : NULL;
    const char *type = ans ? json_string_value(json_object_get(ans, "schemaType")) : NULL;
    if (!text) {
        set_err(errstr, errstr_size, "schema registry GET %s: no \"schema\" in the answer", path);
        err = CM_ERR_IO;
        goto out;
    }
    if (type && strcmp(type, "AVRO") != 0)
        goto out; /* protobuf / json schema: not ours */
    if (avro_schema_from_json_length(text, strlen(text), &theirs) != 0) {
        theirs = NULL;
        goto out; /* not parseable by avro-c: not ours */
    }
    for (int k = 0; k < CM_SCHEMA__COUNT; k++) {
        if (avro_schema_equal(theirs, reg->ours[k])) {
            *kind = k;
            break;
        }
    }
out:
    if (theirs)
        avro_schema_decref(theirs);
    json_decref(ans);
    cm_buf_free(&resp);
    return err;
}

cm_err_t cm_registry_kind(cm_registry_t *reg, uint32_t id, cm_schema_kind_t *kind,
                          char *errstr, size_t errstr_size)
{
    cm_err_t err = CM_OK;
    int k = -1;

    if (!reg || !reg->url) {
        for (int i = 0; i < CM_SCHEMA__COUNT; i++) {
            if (cm_schema_builtin_id(i) == id) {
                *kind = i;
                return CM_OK;
            }
        }
        set_err(errstr, errstr_size, "schema id %u is not a built-in id", id);
        return CM_ERR_NOT_FOUND;
    }
    pthread_mutex_lock(&reg->lock);
    for (size_t i = 0; i < reg->n_ids; i++) {
        if (reg->ids[i].id == id) {
            k = reg->ids[i].kind;
            goto found;
        }
    }
    if (reg->n_lookups >= CM_REGISTRY_MAX_IDS) {
        set_err(errstr, errstr_size, "schema id %u unknown (lookup cache full)", id);
        err = CM_ERR_NOT_FOUND;
        goto out;
    }
    int64_t now = cm_mono_ms();
    if (now < reg->backoff_until_ms) {
        set_err(errstr, errstr_size, "schema registry unreachable, backing off");
        err = CM_ERR_IO;
        goto out;
    }
    if ((err = do_lookup(reg, id, &k, errstr, errstr_size))) {
        if (err == CM_ERR_IO)
            reg->backoff_until_ms = now + REG_BACKOFF_MS;
        goto out;
    }
    if ((err = ids_add(reg, id, k)))
        goto out;
    reg->n_lookups++;
found:
    if (k < 0) {
        set_err(errstr, errstr_size, "schema id %u is not one of our schemas", id);
        err = CM_ERR_NOT_FOUND;
    } else {
        *kind = (cm_schema_kind_t)k;
    }
out:
    pthread_mutex_unlock(&reg->lock);
    return err;
}
