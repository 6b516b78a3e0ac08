/*
 * cm_err.h: the one error enum of libcommon.
 *
 * 0 is success. Functions that can fail return cm_err_t and, where the caller
 * needs words, fill a caller-owned `errstr` buffer. Constructors return NULL on
 * failure and fill `errstr`.
 */
#ifndef CM_ERR_H
#define CM_ERR_H

typedef enum cm_err {
    CM_OK = 0,
    CM_ERR_NOMEM,      /* allocation failed */
    CM_ERR_INVALID,    /* bad argument or bad input */
    CM_ERR_TOO_LARGE,  /* input over a configured cap */
    CM_ERR_PARSE,      /* malformed input (JSON, Avro, timestamp) */
    CM_ERR_NOT_FOUND,  /* lookup missed */
    CM_ERR_IO,         /* system call or file failure */
    CM_ERR_KAFKA,      /* librdkafka reported an error */
    CM_ERR_RETRY,      /* transient: try again (abortable txn error, queue full) */
    CM_ERR_FATAL,      /* unrecoverable: the caller must shut down */
    CM_ERR_TIMEOUT,    /* an operation did not finish in time */
    CM_ERR__COUNT
} cm_err_t;

/* Static, never NULL. */
const char *cm_err_str(cm_err_t err);

#endif
