/*
 * gateway_batch.c: body splitting and gunzip (see gateway_batch.h).
 *
 * Why a hand-written scan in front of jansson: jansson parses a whole array
 * or nothing, and tells neither the byte size nor the depth of an element.
 * The scan is one tight loop over the bytes (a few hundred MB/s, well under
 * jansson's parse cost of the same bytes), and lets the gateway answer
 * "event 7: too large" while accepting the other 99.
 */
#include <stdio.h>
#include <string.h>
#include <zlib.h>

#include "gateway_batch.h"
#include "gateway_json.h"

/* The parser's own recursion bound; events deeper than the configured
 * max_depth never reach it (the split measured their depth). */
#define GW_JSON_MAX_DEPTH 1024

static inline bool gw_is_ws(char c)
{
    return c == ' ' || c == '\t' || c == '\n' || c == '\r';
}

static size_t gw_skip_ws(const char *p, size_t i, size_t len)
{
    while (i < len && gw_is_ws(p[i]))
        i++;
    return i;
}

/*
 * Scans one JSON value from p[i]. Stops at the first byte after it: for an
 * object/array the byte after its closing bracket; for a scalar the first
 * ',' ']' or whitespace (or `stop` for NDJSON lines). Returns the end index,
 * or (size_t)-1 when the input ends inside the value. Counts bracket depth
 * only: that a '}' closes a '{' is jansson's business later.
 */
static size_t gw_scan_value(const char *p, size_t i, size_t len, uint16_t *depth_out)
{
    unsigned depth = 0, maxd = 0;
    if (i >= len)
        return (size_t)-1;
    if (p[i] != '{' && p[i] != '[' && p[i] != '"') {
        while (i < len && p[i] != ',' && p[i] != ']' && p[i] != '}' && !gw_is_ws(p[i]) &&
               p[i] != '{' && p[i] != '[')
            i++;
        *depth_out = 0;
        return i;
    }
    do {
        char c = p[i];
        if (c == '"') {
            i++;
            for (;;) {
                const char *q = memchr(p + i, '"', len - i);
                if (!q)
                    return (size_t)-1;
                size_t j = (size_t)(q - p);
                /* a quote preceded by an odd run of backslashes is escaped */
                size_t bs = 0;
                while (j - bs > i && p[j - bs - 1] == '\\')
                    bs++;
                i = j + 1;
                if (!(bs & 1))
                    break;
            }
            continue;
        }
        if (c == '{' || c == '[') {
            depth++;
            if (depth > maxd)
                maxd = depth;
        } else if (c == '}' || c == ']') {
            depth--;
        }
        i++;
    } while (depth > 0 && i < len);
    if (depth > 0)
        return (size_t)-1;
    *depth_out = maxd > 65535 ? 65535 : (uint16_t)maxd;
    return i;
}

static cm_err_t gw_push(gw_slice_t *out, size_t max, size_t *n, size_t off, size_t end,
                        uint16_t depth, bool broken)
{
    if (*n >= max)
        return CM_ERR_TOO_LARGE;
    out[*n].off = (uint32_t)off;
    out[*n].len = (uint32_t)(end - off);
    out[*n].depth = depth;
    out[*n].broken = broken;
    (*n)++;
    return CM_OK;
}

static cm_err_t gw_split_ndjson(const char *p, size_t len, gw_slice_t *out, size_t max,
                                size_t *n)
{
    size_t i = 0;
    while (i < len) {
        const char *nl = memchr(p + i, '\n', len - i);
        size_t eol = nl ? (size_t)(nl - p) : len;
        size_t a = gw_skip_ws(p, i, eol), b = eol;
        while (b > a && gw_is_ws(p[b - 1]))
            b--;
        if (b > a) {
            uint16_t d = 0;
            size_t end = gw_scan_value(p, a, b, &d);
            bool broken = end == (size_t)-1 || gw_skip_ws(p, end, b) != b;
            cm_err_t err = gw_push(out, max, n, a, b, d, broken);
            if (err)
                return err;
        }
        i = eol + 1;
    }
    return CM_OK;
}

cm_err_t gw_batch_split(const char *p, size_t len, gw_body_format_t fmt, gw_slice_t *out,
                        size_t max, size_t *n, char *errstr, size_t errstr_size)
{
    *n = 0;
    if (len > UINT32_MAX) {
        snprintf(errstr, errstr_size, "body too large");
        return CM_ERR_TOO_LARGE;
    }
    if (fmt == GW_BODY_NDJSON) {
        cm_err_t err = gw_split_ndjson(p, len, out, max, n);
        if (err == CM_ERR_TOO_LARGE)
            snprintf(errstr, errstr_size, "more than %zu events in one request", max);
        else if (!err && *n == 0) {
            snprintf(errstr, errstr_size, "empty body");
            err = CM_ERR_PARSE;
        }
        return err;
    }

    size_t i = gw_skip_ws(p, 0, len);
    if (i == len) {
        snprintf(errstr, errstr_size, "empty body");
        return CM_ERR_PARSE;
    }
    if (p[i] == '[') {
        i = gw_skip_ws(p, i + 1, len);
        if (i < len && p[i] == ']') {
            snprintf(errstr, errstr_size, "empty array");
            return CM_ERR_PARSE;
        }
        for (;;) {
            uint16_t d = 0;
            size_t end = gw_scan_value(p, i, len, &d);
            if (end == (size_t)-1 || end == i) {
                snprintf(errstr, errstr_size, "invalid JSON array: %s at byte %zu",
                         end == i ? "missing element" : "unexpected end of body", i);
                return CM_ERR_PARSE;
            }
            if (gw_push(out, max, n, i, end, d, false)) {
                snprintf(errstr, errstr_size, "more than %zu events in one request", max);
                return CM_ERR_TOO_LARGE;
            }
            i = gw_skip_ws(p, end, len);
            if (i < len && p[i] == ',') {
                i = gw_skip_ws(p, i + 1, len);
                continue;
            }
            if (i < len && p[i] == ']')
                break;
            snprintf(errstr, errstr_size, "invalid JSON array: expected ',' or ']' at byte %zu",
                     i);
            return CM_ERR_PARSE;
        }
        if (gw_skip_ws(p, i + 1, len) != len) {
            snprintf(errstr, errstr_size, "invalid JSON: data after the array at byte %zu",
                     gw_skip_ws(p, i + 1, len));
            return CM_ERR_PARSE;
        }
        return CM_OK;
    }
    if (p[i] != '{') {
        snprintf(errstr, errstr_size,
                 "body must be a JSON object, a JSON array of objects, or NDJSON");
        return CM_ERR_PARSE;
    }
    /* One object, or objects one after another (NDJSON sent as JSON). */
    while (i < len) {
        uint16_t d = 0;
        size_t end = p[i] == '{' ? gw_scan_value(p, i, len, &d) : (size_t)-1;
        if (end == (size_t)-1) {
            if (*n == 0) {
                snprintf(errstr, errstr_size, "invalid JSON: unexpected end of body");
                return CM_ERR_PARSE;
            }
            /* a broken trailing object: its own error, the others stand */
            if (gw_push(out, max, n, i, len, d, true)) {
                snprintf(errstr, errstr_size, "more than %zu events in one request", max);
                return CM_ERR_TOO_LARGE;
            }
            return CM_OK;
        }
        if (gw_push(out, max, n, i, end, d, false)) {
            snprintf(errstr, errstr_size, "more than %zu events in one request", max);
            return CM_ERR_TOO_LARGE;
        }
        i = gw_skip_ws(p, end, len);
    }
    return CM_OK;
}

json_t *gw_batch_parse_slice(const char *body, const gw_slice_t *s, char *errstr,
                             size_t errstr_size)
{
    if (s->broken) {
        snprintf(errstr, errstr_size, "invalid JSON: unterminated value");
        return NULL;
    }
    char msg[160];
    json_t *j = gw_json_parse(body + s->off, s->len, GW_JSON_MAX_DEPTH, msg, sizeof(msg));
    if (!j)
        snprintf(errstr, errstr_size, "invalid JSON: %s", msg);
    return j;
}

cm_err_t gw_gunzip(const void *in, size_t len, cm_buf_t *out, char *errstr, size_t errstr_size)
{
    z_stream zs;
    memset(&zs, 0, sizeof(zs));
    /* 15 + 32: zlib or gzip header, detected */
    if (inflateInit2(&zs, 15 + 32) != Z_OK) {
        snprintf(errstr, errstr_size, "inflateInit failed");
        return CM_ERR_NOMEM;
    }
    size_t start = out->len;
    cm_err_t err = CM_OK;
    zs.next_in = (Bytef *)in;
    zs.avail_in = (uInt)len;
    if (len > UINT32_MAX) {
        err = CM_ERR_TOO_LARGE;
        snprintf(errstr, errstr_size, "compressed body too large");
        goto out;
    }
    for (;;) {
        size_t room = out->max ? out->max - out->len : 65536;
        if (room == 0) {
            /* Full: only fine if the stream ends exactly here. Probe one byte. */
            uint8_t probe;
            zs.next_out = &probe;
            zs.avail_out = 1;
            int rc = inflate(&zs, Z_NO_FLUSH);
            if (rc == Z_STREAM_END && zs.avail_out == 1 && zs.avail_in == 0)
                break;
            err = CM_ERR_TOO_LARGE;
            snprintf(errstr, errstr_size, "decompressed body over %zu bytes", out->max);
            goto out;
        }
        size_t chunk = room < 65536 ? room : 65536;
        if (cm_buf_reserve(out, chunk)) {
            err = CM_ERR_NOMEM;
            snprintf(errstr, errstr_size, "out of memory");
            goto out;
        }
        zs.next_out = out->data + out->len;
        zs.avail_out = (uInt)chunk;
        int rc = inflate(&zs, Z_NO_FLUSH);
        out->len += chunk - zs.avail_out;
        if (rc == Z_STREAM_END) {
            if (zs.avail_in == 0)
                break;
            /* another gzip member follows */
            if (inflateReset(&zs) != Z_OK) {
                err = CM_ERR_PARSE;
                snprintf(errstr, errstr_size, "corrupt gzip stream");
                goto out;
            }
            continue;
        }
        if (rc == Z_OK)
            continue;
        if (rc == Z_BUF_ERROR && zs.avail_in == 0) {
            err = CM_ERR_PARSE;
            snprintf(errstr, errstr_size, "truncated gzip stream");
            goto out;
        }
        if (rc == Z_BUF_ERROR)
            continue;
        err = rc == Z_MEM_ERROR ? CM_ERR_NOMEM : CM_ERR_PARSE;
        snprintf(errstr, errstr_size, "corrupt gzip stream: %s", zs.msg ? zs.msg : "bad data");
        goto out;
    }
out:
    if (err)
        out->len = start;
    inflateEnd(&zs);
    return err;
}

/* ------------------------------------------------------------------ batch */

#include <stdlib.h>

#include "cm_avro.h"

cm_err_t gw_json_escape(cm_buf_t *out, const char *s, size_t max)
{
    cm_err_t err = CM_OK;
    for (size_t i = 0; s[i] && i < max && !err; i++) {
        unsigned char c = (unsigned char)s[i];
        if (c == '"' || c == '\\') {
            char e[2] = {'\\', (char)c};
            err = cm_buf_append(out, e, 2);
        } else if (c < 0x20) {
            err = cm_buf_printf(out, "\\u%04x", c);
        } else {
            err = cm_buf_putc(out, c >= 0x80 ? '?' : c);
        }
    }
    return err;
}

void gw_batch_init(gw_batch_t *b, const gw_batch_opts_t *opts, gw_reject_fn *on_reject,
                   void *ud)
{
    memset(b, 0, sizeof(*b));
    b->opts = opts;
    b->on_reject = on_reject;
    b->reject_ud = ud;
    cm_buf_init(&b->plain, opts->lim.max_request_bytes);
    cm_event_init(&b->ev);
    cm_buf_init(&b->enc, 0);
    /* the listed errors are capped by count; this is just a backstop */
    cm_buf_init(&b->errors, 4 * 1024 * 1024);
}

void gw_batch_free(gw_batch_t *b)
{
    if (!b)
        return;
    cm_buf_free(&b->plain);
    cm_event_free(&b->ev);
    cm_buf_free(&b->enc);
    cm_buf_free(&b->errors);
    if (b->big) {
        free(b->slices);
        free(b->msgs);
    }
    b->slices = NULL;
    b->msgs = NULL;
    b->big = false;
}

static void gw_batch_reject(gw_batch_t *b, size_t index, const char *field, const char *reason,
                            const char *message)
{
    b->n_rejected++;
    if (b->on_reject)
        b->on_reject(b->reject_ud, reason);
    if (b->n_listed >= b->opts->max_errors)
        return;
    size_t mark = b->errors.len;
    cm_err_t err = cm_buf_printf(&b->errors, "%s{\"index\":%zu,\"field\":\"",
                                 b->n_listed ? "," : "", index);
    if (!err)
        err = gw_json_escape(&b->errors, field, 64);
    if (!err)
        err = cm_buf_append_str(&b->errors, "\",\"reason\":\"");
    if (!err)
        err = gw_json_escape(&b->errors, reason, 64);
    if (!err)
        err = cm_buf_append_str(&b->errors, "\",\"error\":\"");
    if (!err)
        err = gw_json_escape(&b->errors, message, 200);
    if (!err)
        err = cm_buf_append_str(&b->errors, "\"}");
    if (err)
        b->errors.len = mark;
    else
        b->n_listed++;
}

int gw_batch_process(gw_batch_t *b, const char *body, size_t len, bool gzip,
                     gw_body_format_t fmt, const gw_enrich_ctx_t *ectx)
{
    const gw_batch_opts_t *o = b->opts;
    cm_err_t err;
    char msg[200];

    cm_buf_reset(&b->plain);
    cm_buf_reset(&b->enc);
    cm_buf_reset(&b->errors);
    b->n_slices = b->n_msgs = b->n_rejected = b->n_listed = 0;
    b->unknown_fields = b->ip_dropped = 0;
    b->error[0] = '\0';

    if (gzip) {
        err = gw_gunzip(body, len, &b->plain, b->error, sizeof(b->error));
        if (err)
            return err == CM_ERR_TOO_LARGE ? 413 : err == CM_ERR_NOMEM ? 500 : 400;
        body = (const char *)b->plain.data;
        len = b->plain.len;
    }
    if (len > o->lim.max_request_bytes) {
        snprintf(b->error, sizeof(b->error), "body over %zu bytes", o->lim.max_request_bytes);
        return 413;
    }
    size_t max = o->lim.max_request_events;
    if (!b->big) {
        b->slices = b->small_slices;
        b->msgs = b->small_msgs;
    }
    size_t cap = b->big || max < GW_BATCH_SMALL ? max : GW_BATCH_SMALL;
    err = gw_batch_split(body ? body : "", len, fmt, b->slices, cap, &b->n_slices, b->error,
                         sizeof(b->error));
    if (err == CM_ERR_TOO_LARGE && cap < max) {
        /* a big batch: tables of the configured size, split again */
        gw_slice_t *sl = malloc(max * sizeof(*sl));
        gw_msg_t *mv = malloc(max * sizeof(*mv));
        if (!sl || !mv) {
            free(sl);
            free(mv);
            snprintf(b->error, sizeof(b->error), "out of memory");
            return 500;
        }
        b->slices = sl;
        b->msgs = mv;
        b->big = true;
        err = gw_batch_split(body, len, fmt, b->slices, max, &b->n_slices, b->error,
                             sizeof(b->error));
    }
    if (err)
        return err == CM_ERR_TOO_LARGE ? 413 : 400;

    for (size_t i = 0; i < b->n_slices; i++) {
        const gw_slice_t *s = &b->slices[i];
        if (s->len > o->lim.max_event_bytes) {
            snprintf(msg, sizeof(msg), "event of %u bytes, over %zu", s->len,
                     o->lim.max_event_bytes);
            gw_batch_reject(b, i, "", "too_large", msg);
            continue;
        }
        if (s->depth > o->lim.max_depth) {
            snprintf(msg, sizeof(msg), "nesting deeper than %d", o->lim.max_depth);
            gw_batch_reject(b, i, "", "too_deep", msg);
            continue;
        }
        gw_json_arena_begin();
        json_t *j = gw_batch_parse_slice(body, s, msg, sizeof(msg));
        if (!j) {
            gw_json_arena_end();
            gw_batch_reject(b, i, "", "invalid_json", msg);
            continue;
        }
        cm_event_error_t verr;
        err = cm_event_from_json(j, &o->lim, ectx->now_ms, &b->ev, &verr);
        json_decref(j);
        gw_json_arena_end();
        if (err == CM_ERR_NOMEM) {
            snprintf(b->error, sizeof(b->error), "out of memory");
            return 500;
        }
        if (err) {
            gw_batch_reject(b, i, verr.field, verr.reason ? verr.reason : "invalid",
                            verr.message);
            continue;
        }
        b->unknown_fields += b->ev.unknown_fields;
        unsigned flags = 0;
        if (gw_enrich_event(&b->ev, ectx, &flags)) {
            snprintf(b->error, sizeof(b->error), "out of memory");
            return 500;
        }
        if (flags & GW_ENRICH_IP_DROPPED)
            b->ip_dropped++;
        gw_msg_t *m = &b->msgs[b->n_msgs];
        size_t klen = strlen(b->ev.user_id);
        m->key_off = (uint32_t)b->enc.len;
        m->key_len = (uint32_t)klen;
        err = cm_buf_append(&b->enc, b->ev.user_id, klen);
        if (err) {
            snprintf(b->error, sizeof(b->error), "out of memory");
            return 500;
        }
        m->val_off = (uint32_t)b->enc.len;
        err = cm_avro_encode_event(&b->ev, o->schema_id, &b->enc);
        if (err == CM_ERR_NOMEM) {
            snprintf(b->error, sizeof(b->error), "out of memory");
            return 500;
        }
        if (err) {
            b->enc.len = m->key_off;
            gw_batch_reject(b, i, "", "unencodable", "event cannot be written as Avro");
            continue;
        }
        m->val_len = (uint32_t)(b->enc.len - m->val_off);
        b->n_msgs++;
    }
    if (b->n_msgs == 0) {
        snprintf(b->error, sizeof(b->error), "no valid event in the request");
        return 400;
    }
    return 0;
}
