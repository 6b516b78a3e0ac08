/*
 * dashboard_web.c: finding the page's files (see the header).
 */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "dashboard_web.h"

const db_asset_t *db_asset_find(const char *path)
{
    if (!path)
        return NULL;
    while (*path == '/')
        path++;
    if (!*path)
        path = "index.html";
    for (size_t i = 0; i < db_assets_count; i++)
        if (strcmp(db_assets[i].name, path) == 0)
            return &db_assets[i];
    return NULL;
}

cm_err_t db_web_load(const char *dir, const db_asset_t *a, unsigned char **data, size_t *len)
{
    char path[4352];
    if ((size_t)snprintf(path, sizeof(path), "%s/%s", dir, a->name) >= sizeof(path))
        return CM_ERR_IO;
    FILE *f = fopen(path, "rb");
    if (!f)
        return CM_ERR_IO;
    cm_err_t err = CM_OK;
    unsigned char *buf = NULL;
    if (fseek(f, 0, SEEK_END) != 0) {
        err = CM_ERR_IO;
        goto out;
    }
    long n = ftell(f);
    if (n < 0 || fseek(f, 0, SEEK_SET) != 0) {
        err = CM_ERR_IO;
        goto out;
    }
    if ((unsigned long)n > DB_WEB_MAX_FILE) {
        err = CM_ERR_TOO_LARGE;
        goto out;
    }
    buf = malloc((size_t)n + 1);
    if (!buf) {
        err = CM_ERR_NOMEM;
        goto out;
    }
    if (fread(buf, 1, (size_t)n, f) != (size_t)n) {
        err = CM_ERR_IO;
        goto out;
    }
    *data = buf;
    *len = (size_t)n;
    buf = NULL;
out:
    free(buf);
    fclose(f);
    return err;
}
