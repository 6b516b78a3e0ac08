/*
 * cm_event.c: the event of SPEC §1 — its arena, validation, JSON form,
 * timestamps and prices.
 *
 * Validation sits on the gateway's hot path (hundreds of thousands of events
 * per second). It makes one pass over the top-level keys (classifying each and
 * checking nesting depth), then checks the known fields in a fixed order so
 * that "the first failing field" does not depend on the client's key order,
 * and finally copies the accepted strings into the arena with one reserve.
 * Once the arena has grown to its working size nothing is allocated.
 */
#include "cm_event.h"

#include <arpa/inet.h>
#include <math.h>
#include <stdarg.h>
#include <stdio.h>
#include <string.h>

/* Reason codes of cm_event_error_t (metric labels; keep them stable). */
#define CM_EV_R_MISSING "missing_field"
#define CM_EV_R_TYPE "bad_type"
#define CM_EV_R_LONG "too_long"
#define CM_EV_R_VALUE "bad_value"
#define CM_EV_R_FUTURE "future_timestamp"
#define CM_EV_R_LARGE "too_large"
#define CM_EV_R_DEEP "too_deep"

/* ---- the arena ----------------------------------------------------------- */

/* Every string field of cm_event_t, so that a grown arena can be rebased and
 * an event deep-copied without listing the fields twice. */
enum {
    CM_EVF_EVENT_ID,
    CM_EVF_USER_ID,
    CM_EVF_EVENT_TYPE,
    CM_EVF_PAGE_URL,
    CM_EVF_SESSION_ID,
    CM_EVF_REFERRER,
    CM_EVF_USER_AGENT,
    CM_EVF_IP_ADDRESS,
    CM_EVF_GEO_COUNTRY,
    CM_EVF_GEO_CITY,
    CM_EVF_DEVICE_TYPE,
    CM_EVF_DEVICE_OS,
    CM_EVF_PRODUCT_ID,
    CM_EVF_CATEGORY,
    CM_EVF__COUNT
};

static const size_t cm_ev_str_off[CM_EVF__COUNT] = {
    [CM_EVF_EVENT_ID] = offsetof(cm_event_t, event_id),
    [CM_EVF_USER_ID] = offsetof(cm_event_t, user_id),
    [CM_EVF_EVENT_TYPE] = offsetof(cm_event_t, event_type),
    [CM_EVF_PAGE_URL] = offsetof(cm_event_t, page_url),
    [CM_EVF_SESSION_ID] = offsetof(cm_event_t, session_id),
    [CM_EVF_REFERRER] = offsetof(cm_event_t, referrer),
    [CM_EVF_USER_AGENT] = offsetof(cm_event_t, user_agent),
    [CM_EVF_IP_ADDRESS] = offsetof(cm_event_t, ip_address),
    [CM_EVF_GEO_COUNTRY] = offsetof(cm_event_t, geo_country),
    [CM_EVF_GEO_CITY] = offsetof(cm_event_t, geo_city),
    [CM_EVF_DEVICE_TYPE] = offsetof(cm_event_t, device_type),
    [CM_EVF_DEVICE_OS] = offsetof(cm_event_t, device_os),
    [CM_EVF_PRODUCT_ID] = offsetof(cm_event_t, product_id),
    [CM_EVF_CATEGORY] = offsetof(cm_event_t, category),
};

static inline const char **cm_ev_field(cm_event_t *ev, int f)
{
    return (const char **)((char *)ev + cm_ev_str_off[f]);
}

static inline const char *cm_ev_field_get(const cm_event_t *ev, int f)
{
    return *(const char *const *)((const char *)ev + cm_ev_str_off[f]);
}

void cm_event_init(cm_event_t *ev)
{
    memset(ev, 0, sizeof(*ev));
    cm_buf_init(&ev->arena, CM_EVENT_ARENA_MAX);
}

void cm_event_reset(cm_event_t *ev)
{
    cm_buf_t arena = ev->arena;
    memset(ev, 0, sizeof(*ev));
    ev->arena = arena;
    cm_buf_reset(&ev->arena);
}

void cm_event_free(cm_event_t *ev)
{
    if (!ev)
        return;
    cm_buf_free(&ev->arena);
    cm_event_reset(ev);
}

/* Offset of `p` inside the arena's used bytes, or -1 when it points elsewhere
 * (NULL, a static string set by hand, another event's arena). Compared as
 * integers so that nothing is derived from a pointer after realloc freed it. */
static ptrdiff_t cm_ev_arena_off(const cm_buf_t *a, const char *p)
{
    uintptr_t base = (uintptr_t)a->data, q = (uintptr_t)p;
    if (!p || !a->data || q < base || q >= base + a->len)
        return -1;
    return (ptrdiff_t)(q - base);
}

/*
 * Makes room for `extra` more bytes (plus the arena's trailing NUL) and, when
 * that moved the arena, points every string field of `ev` — and `*keep`, if
 * given — at the new copy. Offsets are taken before the realloc.
 */
static cm_err_t cm_ev_arena_reserve(cm_event_t *ev, size_t extra, const char **keep)
{
    cm_buf_t *a = &ev->arena;
    ptrdiff_t off[CM_EVF__COUNT], keep_off;
    uint8_t *old = a->data;
    cm_err_t err;

    if (extra < a->cap && a->len + 1 <= a->cap - extra)
        return CM_OK; /* the common case: room left, nothing moves */
    for (int f = 0; f < CM_EVF__COUNT; f++)
        off[f] = cm_ev_arena_off(a, cm_ev_field_get(ev, f));
    keep_off = keep ? cm_ev_arena_off(a, *keep) : -1;
    err = cm_buf_reserve(a, extra);
    if (err)
        return err;
    if (a->data == old)
        return CM_OK;
    for (int f = 0; f < CM_EVF__COUNT; f++)
        if (off[f] >= 0)
            *cm_ev_field(ev, f) = (const char *)a->data + off[f];
    if (keep_off >= 0)
        *keep = (const char *)a->data + keep_off;
    return CM_OK;
}

/* Appends s[0..n) and a NUL; the caller has reserved n + 1 bytes. */
static const char *cm_ev_arena_put(cm_buf_t *a, const char *s, size_t n)
{
    char *p = (char *)a->data + a->len;
    if (n)
        memcpy(p, s, n);
    p[n] = '\0';
    a->len += n + 1;
    return p;
}

cm_err_t cm_event_set_str(cm_event_t *ev, const char **field, const char *s, size_t n)
{
    cm_err_t err;

    if (!s && n)
        return CM_ERR_INVALID;
    if (n == SIZE_MAX)
        return CM_ERR_TOO_LARGE;
    /* `s` may itself live in the arena (copying one field to another). */
    err = cm_ev_arena_reserve(ev, n + 1, &s);
    if (err)
        return err;
    *field = cm_ev_arena_put(&ev->arena, s ? s : "", n);
    return CM_OK;
}

cm_err_t cm_event_copy(cm_event_t *dst, const cm_event_t *src)
{
    size_t len[CM_EVF__COUNT], total = 0;
    cm_buf_t arena;
    cm_err_t err;

    if (dst == src)
        return CM_OK;
    for (int f = 0; f < CM_EVF__COUNT; f++) {
        const char *s = cm_ev_field_get(src, f);
        len[f] = s ? strlen(s) : 0;
        if (s)
            total += len[f] + 1;
    }
    arena = dst->arena;
    *dst = *src;
    dst->arena = arena;
    cm_buf_reset(&dst->arena);
    for (int f = 0; f < CM_EVF__COUNT; f++)
        *cm_ev_field(dst, f) = NULL;
    /* One reserve, then plain copies: nothing moves in between. */
    err = cm_buf_reserve(&dst->arena, total);
    if (err)
        goto out;
    for (int f = 0; f < CM_EVF__COUNT; f++) {
        const char *s = cm_ev_field_get(src, f);
        if (s)
            *cm_ev_field(dst, f) = cm_ev_arena_put(&dst->arena, s, len[f]);
    }
out:
    if (err)
        cm_event_reset(dst);
    return err;
}

/* ---- errors -------------------------------------------------------------- */

void cm_event_error_set(cm_event_error_t *err, const char *field, const char *reason,
                        const char *fmt, ...)
{
    va_list ap;
    if (!err)
        return;
    snprintf(err->field, sizeof(err->field), "%s", field ? field : "");
    va_start(ap, fmt);
    vsnprintf(err->message, sizeof(err->message), fmt, ap);
    va_end(ap);
    err->reason = reason;
}

/* cm_event_error_set() that returns CM_ERR_INVALID, for `return cm_ev_fail(...)`. */
#define cm_ev_fail(err, field, reason, ...)                                   \
    (cm_event_error_set((err), (field), (reason), __VA_ARGS__), CM_ERR_INVALID)

/* ---- small parsers ------------------------------------------------------- */

/*
 * Number of code points of s[0..n), or SIZE_MAX when it holds a NUL or is not
 * valid UTF-8 (overlongs, surrogates and > U+10FFFF refused). jansson already
 * guarantees UTF-8 for parsed input, but a json_t can also be built with the
 * *_nocheck constructors, and this is the boundary.
 */
static size_t cm_utf8_chars(const char *s, size_t n)
{
    const unsigned char *p = (const unsigned char *)s, *end = p + n;
    size_t chars = 0;

    while (p < end) {
        unsigned c = *p;
        size_t len;
        if (c < 0x80) {
            if (c == 0)
                return SIZE_MAX;
            p++;
            chars++;
            continue;
        }
        if (c >= 0xC2 && c <= 0xDF)
            len = 2;
        else if (c >= 0xE0 && c <= 0xEF)
            len = 3;
        else if (c >= 0xF0 && c <= 0xF4)
            len = 4;
        else
            return SIZE_MAX;
        if ((size_t)(end - p) < len)
            return SIZE_MAX;
        for (size_t i = 1; i < len; i++)
            if ((p[i] & 0xC0) != 0x80)
                return SIZE_MAX;
        if ((c == 0xE0 && p[1] < 0xA0) || (c == 0xED && p[1] >= 0xA0) ||
            (c == 0xF0 && p[1] < 0x90) || (c == 0xF4 && p[1] >= 0x90))
            return SIZE_MAX;
        p += len;
        chars++;
    }
    return chars;
}

static inline bool cm_is_digit(char c) { return c >= '0' && c <= '9'; }

static int cm_ev_type_parsen(const char *s, size_t n)
{
    switch (n) {
    case 5:
        return memcmp(s, "click", 5) == 0 ? CM_EV_CLICK : -1;
    case 8:
        if (memcmp(s, "purchase", 8) == 0)
            return CM_EV_PURCHASE;
        break;
    case 9:
        if (memcmp(s, "page_view", 9) == 0)
            return CM_EV_PAGE_VIEW;
        break;
    case 11:
        if (memcmp(s, "add_to_cart", 11) == 0)
            return CM_EV_ADD_TO_CART;
        break;
    case 12:
        if (memcmp(s, "product_view", 12) == 0)
            return CM_EV_PRODUCT_VIEW;
        break;
    }
    if (n < 8 || n > 7 + CM_EVENT_CUSTOM_NAME_MAX || memcmp(s, "custom:", 7) != 0)
        return -1;
    for (size_t i = 7; i < n; i++) {
        char c = s[i];
        if (!((c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || cm_is_digit(c) ||
              c == '_' || c == '.' || c == '-'))
            return -1;
    }
    return CM_EV_CUSTOM;
}

int cm_event_type_parse(const char *s)
{
    return s ? cm_ev_type_parsen(s, strlen(s)) : -1;
}

const char *cm_event_type_name(cm_event_type_t t)
{
    static const char *const names[CM_EV__COUNT] = {
        [CM_EV_PAGE_VIEW] = "page_view",     [CM_EV_PRODUCT_VIEW] = "product_view",
        [CM_EV_ADD_TO_CART] = "add_to_cart", [CM_EV_PURCHASE] = "purchase",
        [CM_EV_CLICK] = "click",             [CM_EV_CUSTOM] = "custom",
    };
    if ((unsigned)t >= CM_EV__COUNT)
        return "unknown";
    return names[t];
}

static const char *const cm_dev_names[] = {
    [CM_DEV_NONE] = NULL,        [CM_DEV_DESKTOP] = "desktop", [CM_DEV_MOBILE] = "mobile",
    [CM_DEV_TABLET] = "tablet",  [CM_DEV_BOT] = "bot",         [CM_DEV_OTHER] = "other",
};
#define CM_DEV__COUNT ((int)(sizeof(cm_dev_names) / sizeof(cm_dev_names[0])))

int cm_device_type_parse(const char *s, size_t n)
{
    if (!s)
        return -1;
    for (int t = CM_DEV_DESKTOP; t < CM_DEV__COUNT; t++) {
        const char *name = cm_dev_names[t];
        size_t i;
        if (strlen(name) != n)
            continue;
        for (i = 0; i < n; i++) {
            char c = s[i];
            if (c >= 'A' && c <= 'Z')
                c = (char)(c - 'A' + 'a');
            if (c != name[i])
                break;
        }
        if (i == n)
            return t;
    }
    return -1;
}

const char *cm_device_type_name(cm_device_type_t t)
{
    if ((int)t <= CM_DEV_NONE || (int)t >= CM_DEV__COUNT)
        return NULL;
    return cm_dev_names[t];
}

/* ---- timestamps ---------------------------------------------------------- */

/* Days since 1970-01-01 of a proleptic Gregorian date (H. Hinnant's
 * days_from_civil): pure integer arithmetic, no timegm()/TZ dependence. */
static int64_t cm_days_from_civil(int64_t y, unsigned m, unsigned d)
{
    y -= m <= 2;
    int64_t era = (y >= 0 ? y : y - 399) / 400;
    unsigned yoe = (unsigned)(y - era * 400);
    unsigned doy = (153 * (m > 2 ? m - 3 : m + 9) + 2) / 5 + d - 1;
    unsigned doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
    return era * 146097 + (int64_t)doe - 719468;
}

static void cm_civil_from_days(int64_t z, int64_t *y, unsigned *m, unsigned *d)
{
    z += 719468;
    int64_t era = (z >= 0 ? z : z - 146096) / 146097;
    unsigned doe = (unsigned)(z - era * 146097);
    unsigned yoe = (doe - doe / 1460 + doe / 36524 - doe / 146096) / 365;
    unsigned doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    unsigned mp = (5 * doy + 2) / 153;
    *d = doy - (153 * mp + 2) / 5 + 1;
    *m = mp < 10 ? mp + 3 : mp - 9;
    *y = (int64_t)yoe + era * 400 + (*m <= 2);
}

static unsigned cm_days_in_month(int64_t y, unsigned m)
{
    static const unsigned char dim[12] = {31, 28, 31, 30, 31, 30, 31, 31, 30, 31, 30, 31};
    if (m == 2 && (y % 4 == 0 && (y % 100 != 0 || y % 400 == 0)))
        return 29;
    return dim[m - 1];
}

/* Two digits at p, or -1. */
static inline int cm_d2(const char *p)
{
    if (!cm_is_digit(p[0]) || !cm_is_digit(p[1]))
        return -1;
    return (p[0] - '0') * 10 + (p[1] - '0');
}

cm_err_t cm_ts_parse_rfc3339(const char *s, size_t n, int64_t *out_ms)
{
    int y_hi, y_lo, mon, day, hh, mm, ss, off_min = 0;
    int64_t ms = 0, t;
    size_t i = 19;

    /* Fixed part "YYYY-MM-DDTHH:MM:SS" then at least a 'Z'. */
    if (!s || n < 20)
        return CM_ERR_PARSE;
    y_hi = cm_d2(s);
    y_lo = cm_d2(s + 2);
    mon = cm_d2(s + 5);
    day = cm_d2(s + 8);
    hh = cm_d2(s + 11);
    mm = cm_d2(s + 14);
    ss = cm_d2(s + 17);
    if (y_hi < 0 || y_lo < 0 || mon < 0 || day < 0 || hh < 0 || mm < 0 || ss < 0 ||
        s[4] != '-' || s[7] != '-' || s[13] != ':' || s[16] != ':' ||
        (s[10] != 'T' && s[10] != 't' && s[10] != ' '))
        return CM_ERR_PARSE;
    if (s[i] == '.') {
        size_t start = ++i;
        while (i < n && cm_is_digit(s[i])) {
            if (i - start < 3)
                ms = ms * 10 + (s[i] - '0');
            i++;
        }
        if (i == start)
            return CM_ERR_PARSE;
        /* Truncate, never round: ".9999" stays in its millisecond. */
        for (size_t k = i - start; k < 3; k++)
            ms *= 10;
    }
    if (i >= n)
        return CM_ERR_PARSE;
    if (s[i] == 'Z' || s[i] == 'z') {
        i++;
    } else if (s[i] == '+' || s[i] == '-') {
        int oh, om;
        if (n - i < 6 || s[i + 3] != ':')
            return CM_ERR_PARSE;
        oh = cm_d2(s + i + 1);
        om = cm_d2(s + i + 4);
        if (oh < 0 || om < 0 || oh > 23 || om > 59)
            return CM_ERR_PARSE;
        off_min = (oh * 60 + om) * (s[i] == '-' ? -1 : 1);
        i += 6;
    } else {
        return CM_ERR_PARSE;
    }
    if (i != n)
        return CM_ERR_PARSE;

    int64_t year = y_hi * 100 + y_lo;
    /* Leap second 60 refused: epoch time has no slot for it. */
    if (mon < 1 || mon > 12 || day < 1 || (unsigned)day > cm_days_in_month(year, (unsigned)mon) ||
        hh > 23 || mm > 59 || ss > 59)
        return CM_ERR_PARSE;
    t = cm_days_from_civil(year, (unsigned)mon, (unsigned)day) * 86400 + hh * 3600 + mm * 60 + ss -
        (int64_t)off_min * 60;
    t = t * 1000 + ms;
    /* The range is checked in UTC: "1970-01-01T00:30:00+01:00" is 1969. */
    if (t < 0 || t > CM_TS_MAX_MS)
        return CM_ERR_INVALID;
    *out_ms = t;
    return CM_OK;
}

static inline char *cm_put_digits(char *p, unsigned v, int width)
{
    for (int k = width - 1; k >= 0; k--) {
        p[k] = (char)('0' + v % 10);
        v /= 10;
    }
    return p + width;
}

void cm_ts_format_rfc3339(int64_t ms, char *buf, size_t size)
{
    int64_t days = ms / 86400000, rem = ms % 86400000, y;
    unsigned m, d, msd;

    if (!buf || size == 0)
        return;
    if (rem < 0) {
        rem += 86400000;
        days--;
    }
    cm_civil_from_days(days, &y, &m, &d);
    msd = (unsigned)rem;
    if (y < 0 || y > 9999 || size < 25) {
        snprintf(buf, size, "%04lld-%02u-%02uT%02u:%02u:%02u.%03uZ", (long long)y, m, d,
                 msd / 3600000, msd / 60000 % 60, msd / 1000 % 60, msd % 1000);
        return;
    }
    /* By hand: this runs once per event in tools that print events. */
    char *p = buf;
    p = cm_put_digits(p, (unsigned)y, 4);
    *p++ = '-';
    p = cm_put_digits(p, m, 2);
    *p++ = '-';
    p = cm_put_digits(p, d, 2);
    *p++ = 'T';
    p = cm_put_digits(p, msd / 3600000, 2);
    *p++ = ':';
    p = cm_put_digits(p, msd / 60000 % 60, 2);
    *p++ = ':';
    p = cm_put_digits(p, msd / 1000 % 60, 2);
    *p++ = '.';
    p = cm_put_digits(p, msd % 1000, 3);
    *p++ = 'Z';
    *p = '\0';
}

/* ---- prices -------------------------------------------------------------- */

typedef enum cm_price_rc {
    CM_PRICE_OK = 0,
    CM_PRICE_SYNTAX,
    CM_PRICE_NEGATIVE,
    CM_PRICE_PRECISION,
    CM_PRICE_RANGE,
} cm_price_rc_t;

#define CM_PRICE_MAX_UNITS (CM_PRICE_MAX_MICROS / 1000000)

/* Exact decimal text -> micros, without ever going through a double. */
static cm_price_rc_t cm_price_scan(const char *s, size_t n, int64_t *out)
{
    int64_t units = 0, frac = 0;
    bool neg = false, big = false;
    size_t i = 0, start;
    int fd = 0;

    if (n && s[0] == '-') {
        neg = true;
        i = 1;
    }
    start = i;
    while (i < n && cm_is_digit(s[i])) {
        /* Stop accumulating once over the cap; keep scanning for syntax. */
        if (!big) {
            units = units * 10 + (s[i] - '0');
            big = units > CM_PRICE_MAX_UNITS;
        }
        i++;
    }
    if (i == start)
        return CM_PRICE_SYNTAX;
    bool excess = false;
    if (i < n && s[i] == '.') {
        start = ++i;
        while (i < n && cm_is_digit(s[i])) {
            if (fd < 6) {
                frac = frac * 10 + (s[i] - '0');
                fd++;
            } else if (s[i] != '0') {
                excess = true; /* trailing zeros past 6 decimals are exact */
            }
            i++;
        }
        if (i == start)
            return CM_PRICE_SYNTAX;
    }
    if (i != n)
        return CM_PRICE_SYNTAX;
    for (; fd < 6; fd++)
        frac *= 10;
    if (neg && (units || frac || excess))
        return CM_PRICE_NEGATIVE;
    if (excess)
        return CM_PRICE_PRECISION;
    if (big || units * 1000000 + frac > CM_PRICE_MAX_MICROS)
        return CM_PRICE_RANGE;
    *out = units * 1000000 + frac;
    return CM_PRICE_OK;
}

/*
 * A double -> micros: the exact value of d × 10^6 rounded half-to-even to an
 * integer m (with 128-bit integers, so no second rounding), accepted when m
 * converts back to d. (double)m / 1e6 is one correctly rounded division of two
 * exact doubles when m < 2^53, so the check is exact.
 */
static cm_price_rc_t cm_price_real(double d, int64_t *out)
{
    unsigned __int128 num, q;
    int64_t mant;
    int e;

    if (isnan(d))
        return CM_PRICE_SYNTAX;
    if (d < 0)
        return CM_PRICE_NEGATIVE;
    if (d > (double)CM_PRICE_MAX_UNITS)
        return CM_PRICE_RANGE;
    if (d == 0) {
        *out = 0;
        return CM_PRICE_OK;
    }
    mant = (int64_t)ldexp(frexp(d, &e), 53); /* d == mant × 2^(e-53), exactly */
    e -= 53;
    num = (unsigned __int128)mant * 1000000u;
    if (e >= 0) {
        q = num << e; /* d <= 10^12 keeps this far below 2^127 */
    } else if (-e >= 100) {
        q = 0; /* num < 2^73: below half a micro */
    } else {
        unsigned sh = (unsigned)-e;
        unsigned __int128 rem, half = (unsigned __int128)1 << (sh - 1);
        q = num >> sh;
        rem = num - (q << sh);
        if (rem > half || (rem == half && (q & 1)))
            q++;
    }
    if (q > (unsigned __int128)CM_PRICE_MAX_MICROS)
        return CM_PRICE_RANGE;
    if (q < ((unsigned __int128)1 << 53) && (double)(int64_t)q / 1e6 != d)
        return CM_PRICE_PRECISION;
    *out = (int64_t)q;
    return CM_PRICE_OK;
}

static cm_err_t cm_price_err(cm_price_rc_t rc)
{
    switch (rc) {
    case CM_PRICE_OK:
        return CM_OK;
    case CM_PRICE_SYNTAX:
        return CM_ERR_PARSE;
    case CM_PRICE_RANGE:
        return CM_ERR_TOO_LARGE;
    default:
        return CM_ERR_INVALID;
    }
}

cm_err_t cm_price_parse(const char *s, size_t n, int64_t *out_micros)
{
    if (!s)
        return CM_ERR_PARSE;
    return cm_price_err(cm_price_scan(s, n, out_micros));
}

cm_err_t cm_price_from_double(double d, int64_t *out_micros)
{
    return cm_price_err(cm_price_real(d, out_micros));
}

/* ---- validation ---------------------------------------------------------- */

/* Slots of the top-level keys we know. */
enum {
    CM_EVK_EVENT_ID,
    CM_EVK_TIMESTAMP,
    CM_EVK_USER_ID,
    CM_EVK_EVENT_TYPE,
    CM_EVK_PAGE_URL,
    CM_EVK_SESSION_ID,
    CM_EVK_REFERRER,
    CM_EVK_USER_AGENT,
    CM_EVK_IP_ADDRESS,
    CM_EVK_GEO,
    CM_EVK_DEVICE,
    CM_EVK_METADATA,
    CM_EVK_RECEIVED_AT,
    CM_EVK_IS_BOT,
    CM_EVK__COUNT
};

typedef struct cm_ev_key {
    const char *name;
    size_t len;
    int slot;
} cm_ev_key_t;

#define CM_EV_KEY(s, slot) {s, sizeof(s) - 1, slot}

static const cm_ev_key_t cm_ev_top_keys[] = {
    CM_EV_KEY("event_id", CM_EVK_EVENT_ID),
    CM_EV_KEY("timestamp", CM_EVK_TIMESTAMP),
    CM_EV_KEY("user_id", CM_EVK_USER_ID),
    CM_EV_KEY("event_type", CM_EVK_EVENT_TYPE),
    CM_EV_KEY("page_url", CM_EVK_PAGE_URL),
    CM_EV_KEY("session_id", CM_EVK_SESSION_ID),
    CM_EV_KEY("referrer", CM_EVK_REFERRER),
    CM_EV_KEY("user_agent", CM_EVK_USER_AGENT),
    CM_EV_KEY("ip_address", CM_EVK_IP_ADDRESS),
    CM_EV_KEY("geo", CM_EVK_GEO),
    CM_EV_KEY("device", CM_EVK_DEVICE),
    CM_EV_KEY("metadata", CM_EVK_METADATA),
    CM_EV_KEY("received_at", CM_EVK_RECEIVED_AT),
    CM_EV_KEY("is_bot", CM_EVK_IS_BOT),
};

static const cm_ev_key_t cm_ev_geo_keys[] = {
    CM_EV_KEY("country", 0),
    CM_EV_KEY("city", 1),
};

static const cm_ev_key_t cm_ev_device_keys[] = {
    CM_EV_KEY("type", 0),
    CM_EV_KEY("os", 1),
};

static const cm_ev_key_t cm_ev_meta_keys[] = {
    CM_EV_KEY("product_id", 0),
    CM_EV_KEY("category", 1),
    CM_EV_KEY("quantity", 2),
    CM_EV_KEY("price", 3),
};

#define CM_NELEM(a) (sizeof(a) / sizeof((a)[0]))

/* A linear scan beats hashing for a dozen short keys compared by length first. */
static int cm_ev_key_find(const cm_ev_key_t *t, size_t nt, const char *k, size_t kl)
{
    for (size_t i = 0; i < nt; i++)
        if (t[i].len == kl && t[i].name[0] == k[0] && memcmp(t[i].name, k, kl) == 0)
            return t[i].slot;
    return -1;
}

/* Whether container `v`, sitting at nesting level `depth`, stays within `max`.
 * Recursion is bounded by `max` (and by jansson's own parse depth limit). */
static bool cm_ev_depth_ok(const json_t *v, int depth, int max)
{
    json_t *o = (json_t *)v; /* jansson's iterators are not const-correct */

    if (depth > max)
        return false;
    if (json_is_object(v)) {
        for (void *it = json_object_iter(o); it; it = json_object_iter_next(o, it)) {
            json_t *c = json_object_iter_value(it);
            if ((json_is_object(c) || json_is_array(c)) && !cm_ev_depth_ok(c, depth + 1, max))
                return false;
        }
    } else {
        size_t n = json_array_size(v);
        for (size_t i = 0; i < n; i++) {
            json_t *c = json_array_get(v, i);
            if ((json_is_object(c) || json_is_array(c)) && !cm_ev_depth_ok(c, depth + 1, max))
                return false;
        }
    }
    return true;
}

/* State of one cm_event_from_json() call: accepted strings are held as
 * borrowed (pointer, length) pairs until the single copy into the arena. */
typedef struct cm_ev_ctx {
    cm_event_t *ev;
    cm_event_error_t *err;
    const char *sv[CM_EVF__COUNT];
    size_t sl[CM_EVF__COUNT];
    char country[3];
} cm_ev_ctx_t;

static inline bool cm_ev_absent(const json_t *v) { return !v || json_is_null(v); }

/*
 * A string field: JSON null and "" count as absent (browsers send an empty
 * document.referrer, SDKs send null for unset properties); a required field
 * must be present and non-empty. On success the value is borrowed into
 * c->sv[f] (left NULL when absent).
 */
static cm_err_t cm_ev_take_str(cm_ev_ctx_t *c, int f, const json_t *v, const char *field,
                               size_t max_chars, bool required)
{
    const char *s;
    size_t n, chars;

    if (cm_ev_absent(v)) {
        if (required)
            return cm_ev_fail(c->err, field, CM_EV_R_MISSING, "is required");
        return CM_OK;
    }
    if (!json_is_string(v))
        return cm_ev_fail(c->err, field, CM_EV_R_TYPE, "must be a string");
    s = json_string_value(v);
    n = json_string_length(v);
    if (n == 0) {
        if (required)
            return cm_ev_fail(c->err, field, CM_EV_R_VALUE, "must not be empty");
        return CM_OK;
    }
    /* More bytes than 4 per allowed character cannot fit: skip the scan. */
    if (n / 4 > max_chars)
        return cm_ev_fail(c->err, field, CM_EV_R_LONG, "must be at most %zu characters",
                          max_chars);
    chars = cm_utf8_chars(s, n);
    if (chars == SIZE_MAX)
        return cm_ev_fail(c->err, field, CM_EV_R_VALUE, "must be valid UTF-8 without NUL");
    if (chars > max_chars)
        return cm_ev_fail(c->err, field, CM_EV_R_LONG, "must be at most %zu characters",
                          max_chars);
    c->sv[f] = s;
    c->sl[f] = n;
    return CM_OK;
}

/* Keys of a known sub-object into slots; the others are dropped and counted. */
static void cm_ev_scan_obj(cm_ev_ctx_t *c, const json_t *obj, const cm_ev_key_t *keys,
                           size_t nkeys, const json_t **slot)
{
    json_t *o = (json_t *)obj;
    for (void *it = json_object_iter(o); it; it = json_object_iter_next(o, it)) {
        int k = cm_ev_key_find(keys, nkeys, json_object_iter_key(it),
                               json_object_iter_key_len(it));
        if (k < 0)
            c->ev->unknown_fields++;
        else
            slot[k] = json_object_iter_value(it);
    }
}

static cm_err_t cm_ev_timestamp(cm_ev_ctx_t *c, const json_t *v, const cm_event_limits_t *lim,
                                int64_t now_ms)
{
    int64_t ts;

    if (cm_ev_absent(v))
        return cm_ev_fail(c->err, "timestamp", CM_EV_R_MISSING, "is required");
    if (json_is_string(v)) {
        cm_err_t err = cm_ts_parse_rfc3339(json_string_value(v), json_string_length(v), &ts);
        if (err == CM_ERR_INVALID)
            return cm_ev_fail(c->err, "timestamp", CM_EV_R_VALUE,
                              "must be between 1970-01-01 and 9999-12-31 (UTC)");
        if (err)
            return cm_ev_fail(c->err, "timestamp", CM_EV_R_VALUE,
                              "must be RFC 3339 (e.g. 2024-01-15T10:30:00Z) or epoch milliseconds");
    } else if (json_is_integer(v)) {
        json_int_t i = json_integer_value(v);
        if (i < 0 || i > CM_TS_MAX_MS)
            return cm_ev_fail(c->err, "timestamp", CM_EV_R_VALUE,
                              "epoch milliseconds must be between 0 and %lld",
                              (long long)CM_TS_MAX_MS);
        ts = (int64_t)i;
    } else {
        /* Reals too: "1.7e12" or 1705314600000.5 is a client bug, not a time. */
        return cm_ev_fail(c->err, "timestamp", CM_EV_R_TYPE,
                          "must be an RFC 3339 string or integer epoch milliseconds");
    }
    if (ts > now_ms && ts - now_ms > lim->max_future_ms)
        return cm_ev_fail(c->err, "timestamp", CM_EV_R_FUTURE,
                          "is %lld ms ahead of the gateway clock (limit %lld ms)",
                          (long long)(ts - now_ms), (long long)lim->max_future_ms);
    c->ev->ts_ms = ts;
    return CM_OK;
}

static cm_err_t cm_ev_ip(cm_ev_ctx_t *c, const json_t *v)
{
    /* INET6_ADDRSTRLEN is 46: the longest form, "ffff:...:255.255.255.255". */
    char buf[INET6_ADDRSTRLEN];
    unsigned char bin[sizeof(struct in6_addr)];
    cm_err_t err;

    err = cm_ev_take_str(c, CM_EVF_IP_ADDRESS, v, "ip_address", CM_EVENT_URL_MAX, false);
    if (err || !c->sv[CM_EVF_IP_ADDRESS])
        return err;
    if (c->sl[CM_EVF_IP_ADDRESS] >= sizeof(buf))
        goto bad;
    memcpy(buf, c->sv[CM_EVF_IP_ADDRESS], c->sl[CM_EVF_IP_ADDRESS]);
    buf[c->sl[CM_EVF_IP_ADDRESS]] = '\0';
    if (inet_pton(AF_INET, buf, bin) == 1 || inet_pton(AF_INET6, buf, bin) == 1)
        return CM_OK;
bad:
    return cm_ev_fail(c->err, "ip_address", CM_EV_R_VALUE, "must be an IPv4 or IPv6 address");
}

static cm_err_t cm_ev_geo(cm_ev_ctx_t *c, const json_t *g)
{
    const json_t *slot[CM_NELEM(cm_ev_geo_keys)] = {0};
    cm_err_t err;

    if (cm_ev_absent(g))
        return CM_OK;
    if (!json_is_object(g))
        return cm_ev_fail(c->err, "geo", CM_EV_R_TYPE, "must be an object");
    cm_ev_scan_obj(c, g, cm_ev_geo_keys, CM_NELEM(cm_ev_geo_keys), slot);

    /* Generous char cap: "USA" should read as a bad code, not as too long. */
    err = cm_ev_take_str(c, CM_EVF_GEO_COUNTRY, slot[0], "geo.country", CM_EVENT_CITY_MAX, false);
    if (err)
        return err;
    if (c->sv[CM_EVF_GEO_COUNTRY]) {
        const char *s = c->sv[CM_EVF_GEO_COUNTRY];
        if (c->sl[CM_EVF_GEO_COUNTRY] != 2)
            goto bad_country;
        for (int i = 0; i < 2; i++) {
            char ch = s[i];
            if (ch >= 'a' && ch <= 'z')
                ch = (char)(ch - 'a' + 'A');
            if (ch < 'A' || ch > 'Z')
                goto bad_country;
            c->country[i] = ch;
        }
        c->country[2] = '\0';
        c->sv[CM_EVF_GEO_COUNTRY] = c->country;
    }
    return cm_ev_take_str(c, CM_EVF_GEO_CITY, slot[1], "geo.city", CM_EVENT_CITY_MAX, false);
bad_country:
    return cm_ev_fail(c->err, "geo.country", CM_EV_R_VALUE,
                      "must be an ISO 3166-1 alpha-2 code (2 letters)");
}

static cm_err_t cm_ev_device(cm_ev_ctx_t *c, const json_t *d)
{
    const json_t *slot[CM_NELEM(cm_ev_device_keys)] = {0};
    cm_err_t err;

    if (cm_ev_absent(d))
        return CM_OK;
    if (!json_is_object(d))
        return cm_ev_fail(c->err, "device", CM_EV_R_TYPE, "must be an object");
    cm_ev_scan_obj(c, d, cm_ev_device_keys, CM_NELEM(cm_ev_device_keys), slot);

    err = cm_ev_take_str(c, CM_EVF_DEVICE_TYPE, slot[0], "device.type", CM_EVENT_OS_MAX, false);
    if (err)
        return err;
    if (c->sv[CM_EVF_DEVICE_TYPE]) {
        int t = cm_device_type_parse(c->sv[CM_EVF_DEVICE_TYPE], c->sl[CM_EVF_DEVICE_TYPE]);
        if (t < 0)
            return cm_ev_fail(c->err, "device.type", CM_EV_R_VALUE,
                              "must be one of desktop, mobile, tablet, bot, other");
        /* Stored canonical (lower case) whatever the client's case. */
        c->sv[CM_EVF_DEVICE_TYPE] = cm_dev_names[t];
    }
    return cm_ev_take_str(c, CM_EVF_DEVICE_OS, slot[1], "device.os", CM_EVENT_OS_MAX, false);
}

static cm_err_t cm_ev_price(cm_ev_ctx_t *c, const json_t *v)
{
    cm_price_rc_t rc;
    int64_t micros = 0;

    if (json_is_integer(v)) {
        json_int_t i = json_integer_value(v);
        if (i < 0)
            rc = CM_PRICE_NEGATIVE;
        else if (i > CM_PRICE_MAX_UNITS)
            rc = CM_PRICE_RANGE;
        else {
            micros = (int64_t)i * 1000000;
            rc = CM_PRICE_OK;
        }
    } else if (json_is_real(v)) {
        rc = cm_price_real(json_real_value(v), &micros);
    } else if (json_is_string(v)) {
        rc = cm_price_scan(json_string_value(v), json_string_length(v), &micros);
    } else {
        return cm_ev_fail(c->err, "metadata.price", CM_EV_R_TYPE,
                          "must be a number or a numeric string");
    }
    switch (rc) {
    case CM_PRICE_OK:
        break;
    case CM_PRICE_SYNTAX:
        return cm_ev_fail(c->err, "metadata.price", CM_EV_R_VALUE,
                          "must be a decimal number such as 12.50");
    case CM_PRICE_NEGATIVE:
        return cm_ev_fail(c->err, "metadata.price", CM_EV_R_VALUE, "must be >= 0");
    case CM_PRICE_PRECISION:
        return cm_ev_fail(c->err, "metadata.price", CM_EV_R_VALUE,
                          "must have at most 6 decimal places");
    case CM_PRICE_RANGE:
        return cm_ev_fail(c->err, "metadata.price", CM_EV_R_VALUE, "must be at most %lld",
                          (long long)CM_PRICE_MAX_UNITS);
    }
    c->ev->has_price = true;
    c->ev->price_micros = micros;
    return CM_OK;
}

static cm_err_t cm_ev_metadata(cm_ev_ctx_t *c, const json_t *m)
{
    const json_t *slot[CM_NELEM(cm_ev_meta_keys)] = {0};
    cm_err_t err;

    if (cm_ev_absent(m))
        return CM_OK;
    if (!json_is_object(m))
        return cm_ev_fail(c->err, "metadata", CM_EV_R_TYPE, "must be an object");
    cm_ev_scan_obj(c, m, cm_ev_meta_keys, CM_NELEM(cm_ev_meta_keys), slot);

    err = cm_ev_take_str(c, CM_EVF_PRODUCT_ID, slot[0], "metadata.product_id",
                         CM_EVENT_META_STR_MAX, false);
    if (err)
        return err;
    err = cm_ev_take_str(c, CM_EVF_CATEGORY, slot[1], "metadata.category",
                         CM_EVENT_META_STR_MAX, false);
    if (err)
        return err;
    if (!cm_ev_absent(slot[2])) {
        json_int_t q;
        if (!json_is_integer(slot[2]))
            return cm_ev_fail(c->err, "metadata.quantity", CM_EV_R_TYPE, "must be an integer");
        q = json_integer_value(slot[2]);
        if (q < 1 || q > CM_EVENT_QUANTITY_MAX)
            return cm_ev_fail(c->err, "metadata.quantity", CM_EV_R_VALUE,
                              "must be between 1 and %d", CM_EVENT_QUANTITY_MAX);
        c->ev->quantity = (int32_t)q;
    }
    if (!cm_ev_absent(slot[3]))
        return cm_ev_price(c, slot[3]);
    return CM_OK;
}

cm_err_t cm_event_from_json(const json_t *obj, const cm_event_limits_t *lim, int64_t now_ms,
                            cm_event_t *ev, cm_event_error_t *err_out)
{
    static const cm_event_limits_t defaults = CM_EVENT_LIMITS_DEFAULT;
    const json_t *slot[CM_EVK__COUNT] = {0};
    cm_ev_ctx_t c;
    cm_err_t err = CM_OK;
    json_t *o = (json_t *)obj; /* jansson's iterators are not const-correct */
    size_t total = 0;
    int type;

    if (!lim)
        lim = &defaults;
    if (err_out) {
        err_out->field[0] = err_out->message[0] = '\0';
        err_out->reason = NULL;
    }
    cm_event_reset(ev);
    c.ev = ev;
    c.err = err_out;
    memset(c.sv, 0, sizeof(c.sv));

    if (!json_is_object(obj)) {
        err = cm_ev_fail(c.err, "", CM_EV_R_TYPE, "event must be a JSON object");
        goto out;
    }
    if (lim->max_depth < 1) {
        err = cm_ev_fail(c.err, "", CM_EV_R_DEEP, "nesting deeper than %d", lim->max_depth);
        goto out;
    }
    /* One pass: classify keys, count unknown ones, bound the nesting. */
    for (void *it = json_object_iter(o); it; it = json_object_iter_next(o, it)) {
        const char *key = json_object_iter_key(it);
        size_t klen = json_object_iter_key_len(it);
        json_t *v = json_object_iter_value(it);
        int k = cm_ev_key_find(cm_ev_top_keys, CM_NELEM(cm_ev_top_keys), key, klen);
        if (k < 0)
            ev->unknown_fields++;
        else
            slot[k] = v;
        if ((json_is_object(v) || json_is_array(v)) && !cm_ev_depth_ok(v, 2, lim->max_depth)) {
            err = cm_ev_fail(c.err, "", CM_EV_R_DEEP, "nesting deeper than %d",
                             lim->max_depth);
            if (err_out) /* name the top-level field it hides under */
                snprintf(err_out->field, sizeof(err_out->field), "%.*s", (int)klen, key);
            goto out;
        }
    }

    err = cm_ev_take_str(&c, CM_EVF_EVENT_ID, slot[CM_EVK_EVENT_ID], "event_id",
                         CM_EVENT_ID_MAX, true);
    if (err)
        goto out;
    err = cm_ev_timestamp(&c, slot[CM_EVK_TIMESTAMP], lim, now_ms);
    if (err)
        goto out;
    err = cm_ev_take_str(&c, CM_EVF_USER_ID, slot[CM_EVK_USER_ID], "user_id",
                         CM_EVENT_USER_ID_MAX, true);
    if (err)
        goto out;
    /* Cap generously: a long wrong name reads better as bad_value. */
    err = cm_ev_take_str(&c, CM_EVF_EVENT_TYPE, slot[CM_EVK_EVENT_TYPE], "event_type",
                         CM_EVENT_URL_MAX, true);
    if (err)
        goto out;
    type = cm_ev_type_parsen(c.sv[CM_EVF_EVENT_TYPE], c.sl[CM_EVF_EVENT_TYPE]);
    if (type < 0) {
        err = cm_ev_fail(c.err, "event_type", CM_EV_R_VALUE,
                         "must be page_view, product_view, add_to_cart, purchase, click or "
                         "custom:<name> (1..64 of A-Z a-z 0-9 _ . -)");
        goto out;
    }
    ev->type = (cm_event_type_t)type;
    err = cm_ev_take_str(&c, CM_EVF_PAGE_URL, slot[CM_EVK_PAGE_URL], "page_url",
                         CM_EVENT_URL_MAX, type == CM_EV_PAGE_VIEW);
    if (err)
        goto out;
    err = cm_ev_take_str(&c, CM_EVF_SESSION_ID, slot[CM_EVK_SESSION_ID], "session_id",
                         CM_EVENT_SESSION_ID_MAX, false);
    if (err)
        goto out;
    err = cm_ev_take_str(&c, CM_EVF_REFERRER, slot[CM_EVK_REFERRER], "referrer",
                         CM_EVENT_URL_MAX, false);
    if (err)
        goto out;
    err = cm_ev_take_str(&c, CM_EVF_USER_AGENT, slot[CM_EVK_USER_AGENT], "user_agent",
                         CM_EVENT_URL_MAX, false);
    if (err)
        goto out;
    err = cm_ev_ip(&c, slot[CM_EVK_IP_ADDRESS]);
    if (err)
        goto out;
    err = cm_ev_geo(&c, slot[CM_EVK_GEO]);
    if (err)
        goto out;
    err = cm_ev_device(&c, slot[CM_EVK_DEVICE]);
    if (err)
        goto out;
    err = cm_ev_metadata(&c, slot[CM_EVK_METADATA]);
    if (err)
        goto out;
    if (type == CM_EV_PURCHASE && !ev->has_price) {
        err = cm_ev_fail(c.err, "metadata.price", CM_EV_R_MISSING,
                         "is required for purchase events");
        goto out;
    }
    /* The enrichment fields, so that cm_event_to_json() output reads back;
     * the gateway overwrites both for client input. */
    if (!cm_ev_absent(slot[CM_EVK_RECEIVED_AT])) {
        const json_t *v = slot[CM_EVK_RECEIVED_AT];
        if (!json_is_integer(v)) {
            err = cm_ev_fail(c.err, "received_at", CM_EV_R_TYPE,
                             "must be integer epoch milliseconds");
            goto out;
        }
        if (json_integer_value(v) < 0 || json_integer_value(v) > CM_TS_MAX_MS) {
            err = cm_ev_fail(c.err, "received_at", CM_EV_R_VALUE,
                             "must be between 0 and %lld", (long long)CM_TS_MAX_MS);
            goto out;
        }
        ev->received_at_ms = (int64_t)json_integer_value(v);
    }
    if (!cm_ev_absent(slot[CM_EVK_IS_BOT])) {
        if (!json_is_boolean(slot[CM_EVK_IS_BOT])) {
            err = cm_ev_fail(c.err, "is_bot", CM_EV_R_TYPE, "must be a boolean");
            goto out;
        }
        ev->is_bot = json_is_true(slot[CM_EVK_IS_BOT]);
    }

    /* All valid: one reserve (no-op once warm), then plain copies. */
    for (int f = 0; f < CM_EVF__COUNT; f++)
        if (c.sv[f])
            total += c.sl[f] + 1;
    err = cm_buf_reserve(&ev->arena, total);
    if (err) {
        cm_event_error_set(c.err, "", err == CM_ERR_NOMEM ? "internal" : CM_EV_R_LARGE,
                           "event strings do not fit: %s", cm_err_str(err));
        goto out;
    }
    for (int f = 0; f < CM_EVF__COUNT; f++)
        if (c.sv[f])
            *cm_ev_field(ev, f) = cm_ev_arena_put(&ev->arena, c.sv[f], c.sl[f]);

out:
    if (err)
        cm_event_reset(ev);
    return err;
}

/* ---- JSON output --------------------------------------------------------- */

/* json_string() checks UTF-8: strings set by hand through cm_event_set_str()
 * are not validated, and a NULL here fails the whole conversion. */
static int cm_ev_put_str(json_t *o, const char *key, const char *s)
{
    if (!s)
        return 0;
    return json_object_set_new_nocheck(o, key, json_string(s));
}

json_t *cm_event_to_json(const cm_event_t *ev)
{
    json_t *o = json_object(), *sub = NULL;
    char ts[32];
    int rc = 0;

    if (!o)
        return NULL;
    cm_ts_format_rfc3339(ev->ts_ms, ts, sizeof(ts));
    rc |= cm_ev_put_str(o, "event_id", ev->event_id);
    rc |= json_object_set_new_nocheck(o, "timestamp", json_string(ts));
    rc |= cm_ev_put_str(o, "user_id", ev->user_id);
    rc |= cm_ev_put_str(o, "event_type", ev->event_type);
    rc |= cm_ev_put_str(o, "page_url", ev->page_url);
    rc |= cm_ev_put_str(o, "session_id", ev->session_id);
    rc |= cm_ev_put_str(o, "referrer", ev->referrer);
    rc |= cm_ev_put_str(o, "user_agent", ev->user_agent);
    rc |= cm_ev_put_str(o, "ip_address", ev->ip_address);
    if (ev->geo_country || ev->geo_city) {
        sub = json_object();
        rc |= cm_ev_put_str(sub, "country", ev->geo_country);
        rc |= cm_ev_put_str(sub, "city", ev->geo_city);
        rc |= json_object_set_new_nocheck(o, "geo", sub);
    }
    if (ev->device_type || ev->device_os) {
        sub = json_object();
        rc |= cm_ev_put_str(sub, "type", ev->device_type);
        rc |= cm_ev_put_str(sub, "os", ev->device_os);
        rc |= json_object_set_new_nocheck(o, "device", sub);
    }
    if (ev->product_id || ev->category || ev->quantity > 0 || ev->has_price) {
        sub = json_object();
        rc |= cm_ev_put_str(sub, "product_id", ev->product_id);
        rc |= cm_ev_put_str(sub, "category", ev->category);
        if (ev->quantity > 0)
            rc |= json_object_set_new_nocheck(sub, "quantity", json_integer(ev->quantity));
        /* A real reads back exactly below 2^53 micros (see cm_price_from_double). */
        if (ev->has_price)
            rc |= json_object_set_new_nocheck(sub, "price",
                                              json_real((double)ev->price_micros / 1e6));
        rc |= json_object_set_new_nocheck(o, "metadata", sub);
    }
    if (ev->received_at_ms)
        rc |= json_object_set_new_nocheck(o, "received_at", json_integer(ev->received_at_ms));
    if (ev->is_bot)
        rc |= json_object_set_new_nocheck(o, "is_bot", json_true());
    if (rc) {
        json_decref(o);
        return NULL;
    }
    return o;
}

static int cm_ev_count_cb(const char *buffer, size_t size, void *data)
{
    (void)buffer;
    *(size_t *)data += size;
    return 0;
}

size_t cm_event_json_size(const json_t *obj)
{
    size_t n = 0;
    if (!obj || json_dump_callback(obj, cm_ev_count_cb, &n, JSON_COMPACT | JSON_ENCODE_ANY))
        return 0;
    return n;
}
