/*
 * lake_storage.c: the warehouse's two backends (see lake_storage.h).
 */
#include "lake_storage.h"

#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <limits.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/random.h>
#include <sys/stat.h>
#include <unistd.h>

#include "cm_log.h"

struct lw_storage {
    bool local;
    bool fsync;
    char *root;    /* local: absolute warehouse directory, no trailing '/' */
    char *staging; /* s3: local staging directory */
    lw_s3_t *s3;
    _Atomic uint64_t puts, gets, deletes, lists, errors, bytes_out;
};

static void count_err(lw_storage_t *st) { atomic_fetch_add(&st->errors, 1); }

/* mkdir -p of the directory part of `path`. */
static int mkdirs_for(const char *path)
{
    char buf[PATH_MAX];
    if (snprintf(buf, sizeof(buf), "%s", path) >= (int)sizeof(buf))
        return -1;
    char *slash = strrchr(buf, '/');
    if (!slash || slash == buf)
        return 0;
    *slash = 0;
    for (char *p = buf + 1; *p; p++) {
        if (*p == '/') {
            *p = 0;
            if (mkdir(buf, 0755) && errno != EEXIST)
                return -1;
            *p = '/';
        }
    }
    if (mkdir(buf, 0755) && errno != EEXIST)
        return -1;
    return 0;
}

static int fsync_dir_of(const char *path)
{
    char buf[PATH_MAX];
    snprintf(buf, sizeof(buf), "%s", path);
    char *slash = strrchr(buf, '/');
    if (!slash)
        return 0;
    *slash = 0;
    int fd = open(buf, O_RDONLY | O_DIRECTORY);
    if (fd < 0)
        return -1;
    int rc = fsync(fd);
    close(fd);
    return rc;
}

static cm_err_t local_path(const lw_storage_t *st, const char *key, char *buf, size_t size)
{
    /* Keys come from our own code, but refuse escapes all the same. */
    if (strstr(key, "..") || key[0] == '/')
        return CM_ERR_INVALID;
    return snprintf(buf, size, "%s/%s", st->root, key) < (int)size ? CM_OK
                                                                   : CM_ERR_TOO_LARGE;
}

lw_storage_t *lw_storage_new(const lw_storage_opts_t *opts, char *errstr, size_t errstr_size)
{
    lw_storage_t *st = calloc(1, sizeof(*st));
    if (!st) {
        snprintf(errstr, errstr_size, "out of memory");
        return NULL;
    }
    st->fsync = opts->fsync;
    if (strncmp(opts->warehouse, "s3://", 5) == 0) {
        st->s3 = lw_s3_new(opts, errstr, errstr_size);
        if (!st->s3)
            goto fail;
        const char *stg = opts->staging && *opts->staging ? opts->staging : "/tmp/lake-staging";
        if (mkdir(stg, 0755) && errno != EEXIST) {
            snprintf(errstr, errstr_size, "LAKE_STAGING_DIR %s: %s", stg, strerror(errno));
            goto fail;
        }
        st->staging = strdup(stg);
        return st;
    }
    st->local = true;
    const char *wh = opts->warehouse;
    if (strncmp(wh, "file://", 7) == 0)
        wh += 7;
    if (mkdir(wh, 0755) && errno != EEXIST) {
        snprintf(errstr, errstr_size, "LAKE_WAREHOUSE %s: %s", wh, strerror(errno));
        goto fail;
    }
    char abs[PATH_MAX];
    if (!realpath(wh, abs)) {
        snprintf(errstr, errstr_size, "LAKE_WAREHOUSE %s: %s", wh, strerror(errno));
        goto fail;
    }
    st->root = strdup(abs);
    if (!st->root) {
        snprintf(errstr, errstr_size, "out of memory");
        goto fail;
    }
    return st;
fail:
    lw_storage_destroy(st);
    return NULL;
}

void lw_storage_destroy(lw_storage_t *st)
{
    if (!st)
        return;
    lw_s3_destroy(st->s3);
    free(st->root);
    free(st->staging);
    free(st);
}

bool lw_storage_is_local(const lw_storage_t *st) { return st->local; }

cm_err_t lw_storage_uri(const lw_storage_t *st, const char *key, char *buf, size_t size)
{
    if (!st->local)
        return lw_s3_uri(st->s3, key, buf, size);
    return snprintf(buf, size, "file://%s/%s", st->root, key) < (int)size ? CM_OK
                                                                          : CM_ERR_TOO_LARGE;
}

static cm_err_t read_file(const char *path, cm_buf_t *out)
{
    int fd = open(path, O_RDONLY | O_CLOEXEC);
    if (fd < 0)
        return errno == ENOENT ? CM_ERR_NOT_FOUND : CM_ERR_IO;
    cm_err_t err = CM_OK;
    for (;;) {
        err = cm_buf_reserve(out, 65536);
        if (err)
            break;
        ssize_t n = read(fd, out->data + out->len, out->cap - out->len - 1);
        if (n < 0 && errno == EINTR)
            continue;
        if (n < 0) {
            err = CM_ERR_IO;
            break;
        }
        if (n == 0)
            break;
        out->len += (size_t)n;
    }
    close(fd);
    return err;
}

cm_err_t lw_storage_get(lw_storage_t *st, const char *key, cm_buf_t *out)
{
    cm_buf_reset(out);
    atomic_fetch_add(&st->gets, 1);
    if (!st->local) {
        long status = 0;
        cm_err_t err = lw_s3_get(st->s3, key, out, &status);
        if (err && err != CM_ERR_NOT_FOUND)
            count_err(st);
        return err;
    }
    char path[PATH_MAX];
    cm_err_t err = local_path(st, key, path, sizeof(path));
    if (!err)
        err = read_file(path, out);
    if (err && err != CM_ERR_NOT_FOUND)
        count_err(st);
    return err;
}

static cm_err_t write_all(int fd, const void *p, size_t n)
{
    const uint8_t *c = p;
    while (n) {
        ssize_t w = write(fd, c, n);
        if (w < 0 && errno == EINTR)
            continue;
        if (w < 0)
            return CM_ERR_IO;
        c += w;
        n -= (size_t)w;
    }
    return CM_OK;
}

static cm_err_t local_put(lw_storage_t *st, const char *key, const void *data, size_t len,
                          bool no_replace)
{
    char path[PATH_MAX], tmp[PATH_MAX + 32];
    cm_err_t err = local_path(st, key, path, sizeof(path));
    if (err)
        return err;
    if (mkdirs_for(path))
        return CM_ERR_IO;
    uint32_t r;
    if (getrandom(&r, sizeof(r), 0) != sizeof(r))
        r = (uint32_t)getpid();
    /* The temporary name starts with '.', so listings and readers skip it. */
    char *slash = strrchr(path, '/');
    snprintf(tmp, sizeof(tmp), "%.*s/.tmp-%08x-%s", (int)(slash - path), path, r, slash + 1);
    int fd = open(tmp, O_WRONLY | O_CREAT | O_EXCL | O_CLOEXEC, 0644);
    if (fd < 0)
        return CM_ERR_IO;
    err = write_all(fd, data, len);
    if (!err && st->fsync && fsync(fd))
        err = CM_ERR_IO;
    if (close(fd) && !err)
        err = CM_ERR_IO;
    if (!err) {
        if (no_replace) {
            if (link(tmp, path))
                err = errno == EEXIST ? CM_ERR_RETRY : CM_ERR_IO;
            unlink(tmp);
        } else if (rename(tmp, path)) {
            err = CM_ERR_IO;
        }
    }
    if (err && err != CM_ERR_RETRY)
        unlink(tmp);
    if (!err && st->fsync)
        fsync_dir_of(path);
    return err;
}

cm_err_t lw_storage_put(lw_storage_t *st, const char *key, const void *data, size_t len,
                        bool no_replace)
{
    atomic_fetch_add(&st->puts, 1);
    cm_err_t err;
    if (st->local) {
        err = local_put(st, key, data, len, no_replace);
    } else {
        long status = 0;
        err = lw_s3_put(st->s3, key, data, len, no_replace, &status);
    }
    if (!err)
        atomic_fetch_add(&st->bytes_out, len);
    else if (err != CM_ERR_RETRY)
        count_err(st);
    return err;
}

cm_err_t lw_storage_delete(lw_storage_t *st, const char *key)
{
    atomic_fetch_add(&st->deletes, 1);
    if (!st->local) {
        long status = 0;
        cm_err_t err = lw_s3_delete(st->s3, key, &status);
        if (err)
            count_err(st);
        return err;
    }
    char path[PATH_MAX];
    cm_err_t err = local_path(st, key, path, sizeof(path));
    if (err)
        return err;
    if (unlink(path) && errno != ENOENT) {
        count_err(st);
        return CM_ERR_IO;
    }
    return CM_OK;
}

static cm_err_t walk(const char *root, const char *prefix, char *rel, size_t rel_len,
                     size_t rel_cap, lw_storage_list_fn *fn, void *ud, int depth)
{
    char dirpath[PATH_MAX];
    snprintf(dirpath, sizeof(dirpath), "%s/%.*s", root, (int)rel_len, rel);
    DIR *d = opendir(dirpath);
    if (!d)
        return errno == ENOENT || errno == ENOTDIR ? CM_OK : CM_ERR_IO;
    cm_err_t err = CM_OK;
    struct dirent *de;
    while (!err && (de = readdir(d))) {
        if (de->d_name[0] == '.')
            continue; /* ".", "..", and our temporary files */
        size_t nl = strlen(de->d_name);
        if (rel_len + nl + 2 > rel_cap)
            continue;
        memcpy(rel + rel_len, de->d_name, nl);
        rel[rel_len + nl] = 0;
        bool is_dir = de->d_type == DT_DIR;
        if (de->d_type == DT_UNKNOWN) {
            struct stat sb;
            char full[PATH_MAX];
            snprintf(full, sizeof(full), "%s/%s", root, rel);
            is_dir = stat(full, &sb) == 0 && S_ISDIR(sb.st_mode);
        }
        if (is_dir) {
            if (depth < 16) {
                rel[rel_len + nl] = '/';
                err = walk(root, prefix, rel, rel_len + nl + 1, rel_cap, fn, ud, depth + 1);
            }
        } else if (strncmp(rel, prefix, strlen(prefix)) == 0) {
            fn(rel, ud);
        }
        rel[rel_len] = 0;
    }
    closedir(d);
    return err;
}

cm_err_t lw_storage_list(lw_storage_t *st, const char *prefix, lw_storage_list_fn *fn,
                         void *ud)
{
    atomic_fetch_add(&st->lists, 1);
    if (!st->local) {
        long status = 0;
        cm_err_t err = lw_s3_list(st->s3, prefix, fn, ud, &status);
        if (err)
            count_err(st);
        return err;
    }
    /* Local listing walks the directory part of the prefix. */
    char rel[PATH_MAX];
    size_t pl = strlen(prefix);
    if (pl + 1 >= sizeof(rel) || strstr(prefix, ".."))
        return CM_ERR_INVALID;
    memcpy(rel, prefix, pl + 1);
    char *slash = strrchr(rel, '/');
    size_t dl = slash ? (size_t)(slash - rel) + 1 : 0;
    rel[dl] = 0;
    return walk(st->root, prefix, rel, dl, sizeof(rel), fn, ud, 0);
}

cm_err_t lw_storage_file_open(lw_storage_t *st, const char *key, int *fd, char *path,
                              size_t path_size)
{
    cm_err_t err;
    if (st->local) {
        err = local_path(st, key, path, path_size);
    } else {
        /* Staging names flatten the key: one directory, unique names. */
        char flat[PATH_MAX];
        snprintf(flat, sizeof(flat), "%s", key);
        for (char *p = flat; *p; p++)
            if (*p == '/')
                *p = '_';
        err = snprintf(path, path_size, "%s/%s", st->staging, flat) < (int)path_size
                  ? CM_OK
                  : CM_ERR_TOO_LARGE;
    }
    if (err)
        return err;
    if (mkdirs_for(path))
        return CM_ERR_IO;
    *fd = open(path, O_WRONLY | O_CREAT | O_EXCL | O_CLOEXEC, 0644);
    if (*fd < 0) {
        count_err(st);
        return CM_ERR_IO;
    }
    return CM_OK;
}

cm_err_t lw_storage_file_publish(lw_storage_t *st, const char *key, int fd, const char *path)
{
    cm_err_t err = CM_OK;
    if (st->local) {
        if (st->fsync && fdatasync(fd))
            err = CM_ERR_IO;
        if (close(fd) && !err)
            err = CM_ERR_IO;
        if (!err && st->fsync)
            fsync_dir_of(path);
    } else {
        close(fd);
        long status = 0;
        atomic_fetch_add(&st->puts, 1);
        err = lw_s3_put_file(st->s3, key, path, &status);
        if (!err) {
            struct stat sb;
            if (stat(path, &sb) == 0)
                atomic_fetch_add(&st->bytes_out, (uint64_t)sb.st_size);
            unlink(path);
        }
    }
    if (err)
        count_err(st);
    return err;
}

void lw_storage_file_discard(lw_storage_t *st, int fd, const char *path)
{
    (void)st;
    if (fd >= 0)
        close(fd);
    unlink(path);
}

void lw_storage_get_stats(const lw_storage_t *st, lw_storage_stats_t *out)
{
    out->puts = atomic_load(&st->puts);
    out->gets = atomic_load(&st->gets);
    out->deletes = atomic_load(&st->deletes);
    out->lists = atomic_load(&st->lists);
    out->errors = atomic_load(&st->errors);
    out->bytes_out = atomic_load(&st->bytes_out);
}
