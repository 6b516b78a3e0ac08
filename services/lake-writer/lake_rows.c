/*
 * lake_rows.c: rows as avro-c values. Field positions follow the column
 * order of lake_schema.c; the unit tests read the rows back by name with
 * avro-c's reader, so a mismatch fails there.
 */
#include "lake_rows.h"

#include <string.h>

/* Positions one writes into a value whose field may be a ["null", T] union:
 * returns 1 with *out = the T value to set, or 0 after setting null. */
static int field(avro_value_t *rec, size_t idx, bool present, bool optional,
                 avro_value_t *out)
{
    avro_value_t f;
    if (avro_value_get_by_index(rec, idx, &f, NULL))
        return 0;
    if (!optional) {
        *out = f;
        return 1;
    }
    if (!present) {
        avro_value_t b;
        avro_value_set_branch(&f, 0, &b);
        avro_value_set_null(&b);
        return 0;
    }
    avro_value_set_branch(&f, 1, out);
    return 1;
}

static void give_str(avro_value_t *v, const char *s)
{
    avro_wrapped_buffer_t wb;
    avro_wrapped_buffer_new(&wb, s, strlen(s) + 1); /* avro-c counts the NUL */
    avro_value_give_string_len(v, &wb);
}

static void set_str(avro_value_t *rec, size_t idx, const char *s, bool optional)
{
    avro_value_t v;
    if (field(rec, idx, s != NULL, optional, &v))
        give_str(&v, s ? s : "");
}

static void set_long(avro_value_t *rec, size_t idx, int64_t x, bool present, bool optional)
{
    avro_value_t v;
    if (field(rec, idx, present, optional, &v))
        avro_value_set_long(&v, x);
}

static void set_int(avro_value_t *rec, size_t idx, int32_t x, bool present, bool optional)
{
    avro_value_t v;
    if (field(rec, idx, present, optional, &v))
        avro_value_set_int(&v, x);
}

static void set_bool(avro_value_t *rec, size_t idx, bool x, bool present, bool optional)
{
    avro_value_t v;
    if (field(rec, idx, present, optional, &v))
        avro_value_set_boolean(&v, x);
}

static void set_double(avro_value_t *rec, size_t idx, double x)
{
    avro_value_t v;
    if (field(rec, idx, true, false, &v))
        avro_value_set_double(&v, x);
}

void lw_decimal_fixed8(int64_t micros, uint8_t out[8])
{
    uint64_t u = (uint64_t)micros;
    for (int i = 7; i >= 0; i--) {
        out[i] = (uint8_t)u;
        u >>= 8;
    }
}

static void set_decimal(avro_value_t *rec, size_t idx, int64_t micros, bool present,
                        bool optional)
{
    avro_value_t v;
    if (field(rec, idx, present, optional, &v)) {
        uint8_t b[8];
        lw_decimal_fixed8(micros, b);
        avro_value_set_fixed(&v, b, 8);
    }
}

static void fill_event(avro_value_t *rec, const cm_event_t *ev, bool opt)
{
    bool has = ev != NULL;
    set_str(rec, 0, has ? ev->event_id : NULL, opt);
    set_long(rec, 1, has ? ev->ts_ms * 1000 : 0, has, opt);
    set_long(rec, 2, has ? ev->received_at_ms * 1000 : 0, has, opt);
    set_str(rec, 3, has ? ev->user_id : NULL, opt);
    set_str(rec, 4, has ? ev->event_type : NULL, opt);
    set_str(rec, 5, has ? ev->page_url : NULL, true);
    set_str(rec, 6, has ? ev->session_id : NULL, true);
    set_str(rec, 7, has ? ev->referrer : NULL, true);
    set_str(rec, 8, has ? ev->user_agent : NULL, true);
    set_str(rec, 9, has ? ev->ip_address : NULL, true);
    avro_value_t s;
    if (field(rec, 10, has && (ev->geo_country || ev->geo_city), true, &s)) {
        set_str(&s, 0, ev->geo_country, true);
        set_str(&s, 1, ev->geo_city, true);
    }
    if (field(rec, 11, has && (ev->device_type || ev->device_os), true, &s)) {
        set_str(&s, 0, ev->device_type, true);
        set_str(&s, 1, ev->device_os, true);
    }
    set_bool(rec, 12, has && ev->is_bot, has, opt);
    if (field(rec, 13,
              has && (ev->product_id || ev->category || ev->quantity || ev->has_price), true,
              &s)) {
        set_str(&s, 0, ev->product_id, true);
        set_str(&s, 1, ev->category, true);
        set_int(&s, 2, ev->quantity, ev->quantity != 0, true);
        set_decimal(&s, 3, ev->price_micros, ev->has_price, true);
    }
}

static void fill_session(avro_value_t *rec, const cm_session_t *x)
{
    set_str(rec, 0, x->session_id, false);
    set_str(rec, 1, x->user_id, false);
    set_long(rec, 2, x->start_ms * 1000, true, false);
    set_long(rec, 3, x->end_ms * 1000, true, false);
    set_long(rec, 4, x->duration_ms, true, false);
    set_long(rec, 5, x->event_count, true, false);
    set_long(rec, 6, x->page_views, true, false);
    set_str(rec, 7, x->entry_url, true);
    set_str(rec, 8, x->exit_url, true);
    set_str(rec, 9, x->device_type, true);
    set_str(rec, 10, x->country, true);
    set_bool(rec, 11, x->converted, true, false);
    set_decimal(rec, 12, x->revenue_micros, true, false);
    set_int(rec, 13, x->revision, true, false);
    set_bool(rec, 14, x->tombstone, true, false);
}

static void fill_window(avro_value_t *rec, const cm_window_result_t *w)
{
    set_long(rec, 0, w->window_size_ms, true, false);
    set_long(rec, 1, w->window_start_ms * 1000, true, false);
    set_long(rec, 2, w->window_end_ms * 1000, true, false);
    set_str(rec, 3, w->dimension, false);
    set_int(rec, 4, w->revision, true, false);
    set_bool(rec, 5, w->final, true, false);
    set_long(rec, 6, w->events, true, false);
    set_long(rec, 7, w->page_views, true, false);
    set_long(rec, 8, w->purchases, true, false);
    set_decimal(rec, 9, w->revenue_micros, true, false);
    set_long(rec, 10, w->unique_users, true, false);
    avro_value_t m, e;
    if (field(rec, 11, true, false, &m)) {
        for (size_t i = 0; i < w->n_counts; i++) {
            /* Map keys are copied by avro-c; a repeated key keeps one entry. */
            if (avro_value_add(&m, w->counts[i].key, &e, NULL, NULL) == 0)
                avro_value_set_long(&e, w->counts[i].count);
        }
    }
    if (field(rec, 12, true, false, &m)) {
        for (size_t i = 0; i < w->n_top_urls; i++) {
            if (avro_value_append(&m, &e, NULL) == 0) {
                set_str(&e, 0, w->top_urls[i].key, false);
                set_long(&e, 1, w->top_urls[i].count, true, false);
            }
        }
    }
    set_long(rec, 13, w->sessions_closed, true, false);
    set_double(rec, 14, w->avg_session_ms);
    set_double(rec, 15, w->bounce_rate);
    set_double(rec, 16, w->conversion_rate);
}

int64_t lw_row_ts_us(const lw_table_def_t *def, const lw_row_t *row)
{
    switch (def->source) {
    case LW_SRC_EVENTS:
    case LW_SRC_LATE: return row->ev ? row->ev->ts_ms * 1000 : 0;
    case LW_SRC_SESSIONS: return row->session ? row->session->start_ms * 1000 : 0;
    case LW_SRC_METRICS: return row->window ? row->window->window_start_ms * 1000 : 0;
    }
    return 0;
}

cm_err_t lw_row_fill(const lw_table_def_t *def, const lw_row_t *row, avro_value_t *rec)
{
    switch (def->source) {
    case LW_SRC_EVENTS:
        if (!row->ev)
            return CM_ERR_INVALID;
        fill_event(rec, row->ev, false);
        set_int(rec, 14, row->partition, true, false);
        set_long(rec, 15, row->offset, true, false);
        return CM_OK;
    case LW_SRC_LATE: {
        fill_event(rec, row->ev, true);
        set_int(rec, 14, row->partition, true, false);
        set_long(rec, 15, row->offset, true, false);
        set_str(rec, 16, row->reason, true);
        avro_value_t v;
        if (field(rec, 17, !row->ev && row->raw, true, &v))
            avro_value_set_bytes(&v, (void *)row->raw, row->raw_len);
        return CM_OK;
    }
    case LW_SRC_SESSIONS:
        if (!row->session)
            return CM_ERR_INVALID;
        fill_session(rec, row->session);
        set_int(rec, 15, row->partition, true, false);
        set_long(rec, 16, row->offset, true, false);
        return CM_OK;
    case LW_SRC_METRICS:
        if (!row->window)
            return CM_ERR_INVALID;
        fill_window(rec, row->window);
        set_int(rec, 17, row->partition, true, false);
        set_long(rec, 18, row->offset, true, false);
        return CM_OK;
    }
    return CM_ERR_INVALID;
}

/* ------------------------------------------------------------- fast path */

/* Room for one varint; the buffer is reserved up front per row. */
static inline uint8_t *put_long(uint8_t *p, int64_t v)
{
    uint64_t n = ((uint64_t)v << 1) ^ (uint64_t)(v >> 63);
    while (n & ~(uint64_t)0x7f) {
        *p++ = (uint8_t)((n & 0x7f) | 0x80);
        n >>= 7;
    }
    *p++ = (uint8_t)n;
    return p;
}

static inline uint8_t *put_str(uint8_t *p, const char *s, size_t n)
{
    p = put_long(p, (int64_t)n);
    memcpy(p, s, n);
    return p + n;
}

/* ["null","string"]: branch index, then the string. */
static inline uint8_t *put_opt_str(uint8_t *p, const char *s)
{
    if (!s) {
        *p++ = 0;
        return p;
    }
    *p++ = 2; /* zig-zag 1 */
    return put_str(p, s, strlen(s));
}

static size_t slen(const char *s) { return s ? strlen(s) : 0; }

cm_err_t lw_row_encode(const lw_table_def_t *def, const lw_row_t *row, cm_buf_t *out)
{
    const cm_event_t *ev = row->ev;
    if (def->source != LW_SRC_EVENTS || !ev || !ev->event_id || !ev->user_id ||
        !ev->event_type)
        return CM_ERR_INVALID;
    /* Upper bound: 10 bytes per number and length, plus the string bytes. */
    size_t need = 40 * 10 + slen(ev->event_id) + slen(ev->user_id) + slen(ev->event_type) +
                  slen(ev->page_url) + slen(ev->session_id) + slen(ev->referrer) +
                  slen(ev->user_agent) + slen(ev->ip_address) + slen(ev->geo_country) +
                  slen(ev->geo_city) + slen(ev->device_type) + slen(ev->device_os) +
                  slen(ev->product_id) + slen(ev->category) + 16;
    cm_err_t err = cm_buf_reserve(out, need);
    if (err)
        return err;
    uint8_t *p = out->data + out->len;
    p = put_str(p, ev->event_id, strlen(ev->event_id));
    p = put_long(p, ev->ts_ms * 1000);
    p = put_long(p, ev->received_at_ms * 1000);
    p = put_str(p, ev->user_id, strlen(ev->user_id));
    p = put_str(p, ev->event_type, strlen(ev->event_type));
    p = put_opt_str(p, ev->page_url);
    p = put_opt_str(p, ev->session_id);
    p = put_opt_str(p, ev->referrer);
    p = put_opt_str(p, ev->user_agent);
    p = put_opt_str(p, ev->ip_address);
    if (ev->geo_country || ev->geo_city) {
        *p++ = 2;
        p = put_opt_str(p, ev->geo_country);
        p = put_opt_str(p, ev->geo_city);
    } else {
        *p++ = 0;
    }
    if (ev->device_type || ev->device_os) {
        *p++ = 2;
        p = put_opt_str(p, ev->device_type);
        p = put_opt_str(p, ev->device_os);
    } else {
        *p++ = 0;
    }
    *p++ = ev->is_bot ? 1 : 0;
    if (ev->product_id || ev->category || ev->quantity || ev->has_price) {
        *p++ = 2;
        p = put_opt_str(p, ev->product_id);
        p = put_opt_str(p, ev->category);
        if (ev->quantity) {
            *p++ = 2;
            p = put_long(p, ev->quantity);
        } else {
            *p++ = 0;
        }
        if (ev->has_price) {
            *p++ = 2;
            lw_decimal_fixed8(ev->price_micros, p);
            p += 8;
        } else {
            *p++ = 0;
        }
    } else {
        *p++ = 0;
    }
    p = put_long(p, row->partition);
    p = put_long(p, row->offset);
    out->len = (size_t)(p - out->data);
    return CM_OK;
}
