#include "cm_buf.h"

#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

void cm_buf_init(cm_buf_t *b, size_t max)
{
    b->data = NULL;
    b->len = 0;
    b->cap = 0;
    b->max = max ? max : SIZE_MAX;
}

void cm_buf_free(cm_buf_t *b)
{
    if (!b)
        return;
    free(b->data);
    b->data = NULL;
    b->len = b->cap = 0;
}

cm_err_t cm_buf_reserve(cm_buf_t *b, size_t extra)
{
    size_t max = b->max ? b->max : SIZE_MAX;
    /* +1 keeps room for the NUL of cm_buf_cstr() without a second grow. */
    if (extra > max - b->len)
        return CM_ERR_TOO_LARGE;
    size_t need = b->len + extra + 1;
    if (need <= b->cap)
        return CM_OK;
    size_t cap = b->cap ? b->cap : 64;
    while (cap < need)
        cap = cap > SIZE_MAX / 2 ? need : cap * 2;
    uint8_t *p = realloc(b->data, cap);
    if (!p)
        return CM_ERR_NOMEM;
    b->data = p;
    b->cap = cap;
    return CM_OK;
}

cm_err_t cm_buf_append(cm_buf_t *b, const void *p, size_t n)
{
    cm_err_t err = cm_buf_reserve(b, n);
    if (err)
        return err;
    if (n)
        memcpy(b->data + b->len, p, n);
    b->len += n;
    return CM_OK;
}

cm_err_t cm_buf_append_str(cm_buf_t *b, const char *s)
{
    return cm_buf_append(b, s, strlen(s));
}

cm_err_t cm_buf_putc(cm_buf_t *b, uint8_t c)
{
    return cm_buf_append(b, &c, 1);
}

cm_err_t cm_buf_printf(cm_buf_t *b, const char *fmt, ...)
{
    char small[256];
    va_list ap;
    va_start(ap, fmt);
    int n = vsnprintf(small, sizeof(small), fmt, ap);
    va_end(ap);
    if (n < 0)
        return CM_ERR_INVALID;
    if ((size_t)n < sizeof(small))
        return cm_buf_append(b, small, (size_t)n);
    cm_err_t err = cm_buf_reserve(b, (size_t)n);
    if (err)
        return err;
    va_start(ap, fmt);
    vsnprintf((char *)b->data + b->len, (size_t)n + 1, fmt, ap);
    va_end(ap);
    b->len += (size_t)n;
    return CM_OK;
}

const char *cm_buf_cstr(cm_buf_t *b)
{
    if (cm_buf_reserve(b, 0) != CM_OK)
        return NULL;
    b->data[b->len] = '\0';
    return (const char *)b->data;
}
