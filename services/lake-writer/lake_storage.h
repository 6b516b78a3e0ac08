/*
 * lake_storage.h: where the warehouse lives. Two backends behind one
 * interface, addressed by keys relative to the warehouse root
 * ("events_raw/metadata/v3.metadata.json"):
 *
 *  - local: a directory (LAKE_WAREHOUSE). Small objects are written to a
 *    temporary file, fsync'ed and published by rename(2), or, for a
 *    no-replace put, by link(2), which fails with EEXIST when the name is
 *    taken: an existing metadata version is never overwritten.
 *  - s3: an S3-compatible object store over HTTP(S) with libcurl, requests
 *    signed with AWS Signature V4 by libcurl itself (CURLOPT_AWS_SIGV4;
 *    lake_s3.c). A no-replace put is a conditional PUT
 *    (If-None-Match: *, answered 412 when the key exists).
 *
 * Data files are written through a local file first (a staging copy for s3,
 * the final file for local) and published with lw_storage_file_publish().
 */
#ifndef LAKE_STORAGE_H
#define LAKE_STORAGE_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "cm_buf.h"
#include "cm_err.h"

typedef struct lw_storage lw_storage_t;

typedef struct lw_storage_opts {
    const char *warehouse;  /* local: a directory path; s3: "s3://bucket/prefix" */
    const char *staging;    /* s3 only: local directory for data files in progress */
    bool fsync;             /* local: fsync files and directories before publishing */
    /* s3 only */
    const char *endpoint;   /* "http://127.0.0.1:9000"; NULL: https://s3.<region>.amazonaws.com */
    const char *region;     /* "us-east-1" */
    const char *access_key;
    const char *secret_key;
    bool path_style;        /* http://endpoint/bucket/key instead of bucket.endpoint */
    long timeout_ms;        /* per request; 0: 30 s */
} lw_storage_opts_t;

/* NULL + errstr on bad options (or a local directory that cannot be made). */
lw_storage_t *lw_storage_new(const lw_storage_opts_t *opts, char *errstr, size_t errstr_size);
void lw_storage_destroy(lw_storage_t *st); /* NULL: no-op */

bool lw_storage_is_local(const lw_storage_t *st);

/* The URI readers see for `key`: "file:///abs/wh/key" or "s3://bucket/prefix/key".
 * Writes into buf (always NUL-terminated); CM_ERR_TOO_LARGE if cut. */
cm_err_t lw_storage_uri(const lw_storage_t *st, const char *key, char *buf, size_t size);

/* Whole object into out (reset first). CM_ERR_NOT_FOUND when absent. */
cm_err_t lw_storage_get(lw_storage_t *st, const char *key, cm_buf_t *out);

/* Writes a whole object. no_replace: CM_ERR_RETRY when the key already exists
 * (the object is then left as it was). CM_ERR_IO on failure. */
cm_err_t lw_storage_put(lw_storage_t *st, const char *key, const void *data, size_t len,
                        bool no_replace);

/* CM_OK also when it did not exist. */
cm_err_t lw_storage_delete(lw_storage_t *st, const char *key);

/* Calls fn(key, ud) for every object whose key starts with prefix (a
 * "directory/" prefix in practice), in no particular order. */
typedef void lw_storage_list_fn(const char *key, void *ud);
cm_err_t lw_storage_list(lw_storage_t *st, const char *prefix, lw_storage_list_fn *fn,
                         void *ud);

/*
 * Data files. open: creates the local file for `key` (O_EXCL) and returns its
 * fd and path (path must hold PATH_MAX). publish: makes it the object `key`
 * (local: fsync; s3: upload and remove the staging copy); the fd is closed
 * in every case. discard: closes and removes the local file.
 */
cm_err_t lw_storage_file_open(lw_storage_t *st, const char *key, int *fd, char *path,
                              size_t path_size);
cm_err_t lw_storage_file_publish(lw_storage_t *st, const char *key, int fd,
                                 const char *path);
void lw_storage_file_discard(lw_storage_t *st, int fd, const char *path);

/* Backend counters for /metrics. */
typedef struct lw_storage_stats {
    uint64_t puts, gets, deletes, lists, errors;
    uint64_t bytes_out;
} lw_storage_stats_t;
void lw_storage_get_stats(const lw_storage_t *st, lw_storage_stats_t *out);

/* ---- the S3 backend (lake_s3.c), used by lake_storage.c ---- */
typedef struct lw_s3 lw_s3_t;
lw_s3_t *lw_s3_new(const lw_storage_opts_t *opts, char *errstr, size_t errstr_size);
void lw_s3_destroy(lw_s3_t *s3);
/* HTTP status in *status (0 on a transport failure). */
cm_err_t lw_s3_get(lw_s3_t *s3, const char *key, cm_buf_t *out, long *status);
cm_err_t lw_s3_put(lw_s3_t *s3, const char *key, const void *data, size_t len,
                   bool if_none_match, long *status);
cm_err_t lw_s3_put_file(lw_s3_t *s3, const char *key, const char *path, long *status);
cm_err_t lw_s3_delete(lw_s3_t *s3, const char *key, long *status);
cm_err_t lw_s3_list(lw_s3_t *s3, const char *prefix, lw_storage_list_fn *fn, void *ud,
                    long *status);
/* "s3://bucket/prefix/key" */
cm_err_t lw_s3_uri(const lw_s3_t *s3, const char *key, char *buf, size_t size);

#endif
