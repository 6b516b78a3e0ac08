/*
 * dashboard_web.h: the page's files (web/), built into the binary.
 *
 * dashboard_assets.c is generated from web/ by gen_assets.sh and checked in
 * (the Makefile compiles every .c of the folder); test_dashboard_assets
 * fails when it no longer matches web/. DASHBOARD_WEB_DIR serves the same
 * names from a directory instead, read at each request (editing the page
 * without a rebuild); only names in the table are ever served, so no path
 * from a request reaches the file system.
 */
#ifndef DB_WEB_H
#define DB_WEB_H

#include <stddef.h>

#include "cm_err.h"

typedef struct db_asset {
    const char *name;         /* "index.html", "app.js", ... */
    const char *content_type; /* "text/html; charset=utf-8", ... */
    const unsigned char *data;
    size_t len;
} db_asset_t;

/* Generated (dashboard_assets.c). */
extern const db_asset_t db_assets[];
extern const size_t db_assets_count;

/* The asset a URL path names ("/" is index.html), or NULL. */
const db_asset_t *db_asset_find(const char *path);

/* Largest file DASHBOARD_WEB_DIR may serve. */
#define DB_WEB_MAX_FILE (8u * 1024 * 1024)

/* Reads dir/<a->name>: *data (caller frees) and *len. CM_ERR_IO when it
 * cannot be read, CM_ERR_TOO_LARGE past DB_WEB_MAX_FILE. */
cm_err_t db_web_load(const char *dir, const db_asset_t *a, unsigned char **data, size_t *len);

#endif
