#include "cm_log.h"

#include <pthread.h>
#include <stdarg.h>
#include <stdio.h>
#include <string.h>
#include <sys/time.h>
#include <time.h>
#include <unistd.h>

/* One line is capped; a longer one is cut and marked, never split. */
#define CM_LOG_LINE_MAX 8192

static char cm_log_service[64] = "clickstream";
static cm_log_level_t cm_log_min = CM_LOG_INFO;
static const char *const cm_log_names[] = {"debug", "info", "warn", "error"};

void cm_log_init(const char *service, cm_log_level_t level)
{
    snprintf(cm_log_service, sizeof(cm_log_service), "%s", service);
    cm_log_min = level;
}

int cm_log_level_parse(const char *s)
{
    for (int i = 0; i < 4; i++)
        if (s && strcmp(s, cm_log_names[i]) == 0)
            return i;
    if (s && strcmp(s, "warning") == 0)
        return CM_LOG_WARN;
    return -1;
}

bool cm_log_enabled(cm_log_level_t level) { return level >= cm_log_min; }

typedef struct {
    char buf[CM_LOG_LINE_MAX];
    size_t len;
    bool cut;
} cm_line_t;

/* The last CM_LOG_TAIL bytes are kept for the closing quote and the
 * `,"truncated":true}\n` tail, so a cut line is still one JSON object. */
#define CM_LOG_TAIL 40

static void line_put(cm_line_t *l, const char *s, size_t n)
{
    size_t room = sizeof(l->buf) - CM_LOG_TAIL - l->len;
    if (l->cut)
        return;
    if (n > room) {
        n = room;
        l->cut = true;
    }
    memcpy(l->buf + l->len, s, n);
    l->len += n;
}

/* Writes into the reserved tail; only for closing punctuation. */
static void line_force(cm_line_t *l, const char *s)
{
    size_t n = strlen(s);
    if (l->len + n <= sizeof(l->buf)) {
        memcpy(l->buf + l->len, s, n);
        l->len += n;
    }
}

static void line_puts(cm_line_t *l, const char *s) { line_put(l, s, strlen(s)); }

/* JSON string escape (RFC 8259): quotes, backslash and control characters. */
static void line_putq(cm_line_t *l, const char *s)
{
    line_put(l, "\"", 1);
    if (!s)
        s = "(null)";
    for (const unsigned char *p = (const unsigned char *)s; *p; p++) {
        char esc[8];
        switch (*p) {
        case '"': line_put(l, "\\\"", 2); break;
        case '\\': line_put(l, "\\\\", 2); break;
        case '\n': line_put(l, "\\n", 2); break;
        case '\r': line_put(l, "\\r", 2); break;
        case '\t': line_put(l, "\\t", 2); break;
        default:
            if (*p < 0x20) {
                snprintf(esc, sizeof(esc), "\\u%04x", *p);
                line_put(l, esc, 6);
            } else {
                line_put(l, (const char *)p, 1);
            }
        }
    }
    line_put(l, "\"", 1);
    if (l->cut) /* the string was cut: close it in the reserved tail */
        line_force(l, "\"");
}

void cm_log(cm_log_level_t level, const char *msg, ...)
{
    if (level < cm_log_min)
        return;
    cm_line_t l = {.len = 0, .cut = false};
    char tmp[64];
    struct timespec ts;
    clock_gettime(CLOCK_REALTIME, &ts);
    struct tm tm;
    gmtime_r(&ts.tv_sec, &tm);
    strftime(tmp, sizeof(tmp), "%Y-%m-%dT%H:%M:%S", &tm);
    line_puts(&l, "{\"ts\":\"");
    line_puts(&l, tmp);
    snprintf(tmp, sizeof(tmp), ".%03ldZ\",\"level\":\"", ts.tv_nsec / 1000000);
    line_puts(&l, tmp);
    line_puts(&l, cm_log_names[level]);
    line_puts(&l, "\",\"service\":");
    line_putq(&l, cm_log_service);
    line_puts(&l, ",\"msg\":");
    line_putq(&l, msg);

    va_list ap;
    va_start(ap, msg);
    for (;;) {
        const char *key = va_arg(ap, const char *);
        if (!key || l.cut)
            break;
        /* A field that does not fit is dropped whole, not cut in its key. */
        size_t mark = l.len;
        const char *fmt = va_arg(ap, const char *);
        line_puts(&l, ",");
        line_putq(&l, key);
        line_puts(&l, ":");
        if (strcmp(fmt, "%s") == 0) {
            line_putq(&l, va_arg(ap, const char *));
        } else if (strcmp(fmt, "%d") == 0) {
            snprintf(tmp, sizeof(tmp), "%d", va_arg(ap, int));
            line_puts(&l, tmp);
        } else if (strcmp(fmt, "%ld") == 0) {
            snprintf(tmp, sizeof(tmp), "%ld", va_arg(ap, long));
            line_puts(&l, tmp);
        } else if (strcmp(fmt, "%f") == 0) {
            snprintf(tmp, sizeof(tmp), "%.6g", va_arg(ap, double));
            line_puts(&l, tmp);
        } else if (strcmp(fmt, "%b") == 0) {
            line_puts(&l, va_arg(ap, int) ? "true" : "false");
        } else {
            /* Unknown format: the rest of the list cannot be walked safely. */
            line_puts(&l, "\"?bad log format\"");
            break;
        }
        if (l.cut) {
            l.len = mark;
            break;
        }
    }
    va_end(ap);
    if (l.cut)
        line_force(&l, ",\"truncated\":true");
    line_force(&l, "}\n");
    ssize_t w = write(STDERR_FILENO, l.buf, l.len);
    (void)w;
}
