/*
 * cm_buf.h: a growable byte buffer born with a hard cap.
 *
 * Every buffer that holds outside input has a cap: appending past it fails
 * with CM_ERR_TOO_LARGE and leaves the buffer as it was. The buffer owns its
 * memory; cm_buf_free() releases it and is a no-op on a zeroed buffer.
 */
#ifndef CM_BUF_H
#define CM_BUF_H

#include <stddef.h>
#include <stdint.h>

#include "cm_err.h"

typedef struct cm_buf {
    uint8_t *data;
    size_t len;
    size_t cap;   /* allocated */
    size_t max;   /* hard cap; 0 means SIZE_MAX */
} cm_buf_t;

void cm_buf_init(cm_buf_t *b, size_t max);
void cm_buf_free(cm_buf_t *b);
static inline void cm_buf_reset(cm_buf_t *b) { b->len = 0; }
cm_err_t cm_buf_reserve(cm_buf_t *b, size_t extra);
cm_err_t cm_buf_append(cm_buf_t *b, const void *p, size_t n);
cm_err_t cm_buf_append_str(cm_buf_t *b, const char *s);
cm_err_t cm_buf_putc(cm_buf_t *b, uint8_t c);
/* printf-style append; fails with CM_ERR_TOO_LARGE past the cap. */
cm_err_t cm_buf_printf(cm_buf_t *b, const char *fmt, ...)
    __attribute__((format(printf, 2, 3)));
/* Ensures a NUL after the data (not counted in len) and returns it as a string. */
const char *cm_buf_cstr(cm_buf_t *b);

#endif
