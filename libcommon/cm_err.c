#include "cm_err.h"

static const char *const cm_err_names[CM_ERR__COUNT] = {
    [CM_OK] = "ok",
    [CM_ERR_NOMEM] = "out of memory",
    [CM_ERR_INVALID] = "invalid argument or input",
    [CM_ERR_TOO_LARGE] = "over the configured limit",
    [CM_ERR_PARSE] = "malformed input",
    [CM_ERR_NOT_FOUND] = "not found",
    [CM_ERR_IO] = "I/O error",
    [CM_ERR_KAFKA] = "Kafka error",
    [CM_ERR_RETRY] = "transient error, retry",
    [CM_ERR_FATAL] = "fatal error",
    [CM_ERR_TIMEOUT] = "timed out",
};

const char *cm_err_str(cm_err_t err)
{
    if ((unsigned)err >= CM_ERR__COUNT)
        return "unknown error";
    return cm_err_names[err];
}
