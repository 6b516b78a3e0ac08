/*
 * lake_metadata.h: Iceberg v2 table metadata JSON, and its atomic commit.
 *
 * Layout of a table under the warehouse (the "Hadoop table" convention that
 * Iceberg's HadoopTables and pyiceberg's StaticTable read):
 *
 *   <table>/metadata/v<N>.metadata.json   one per version, never replaced
 *   <table>/metadata/version-hint.text    "<N>", no newline (a hint only)
 *   <table>/metadata/snap-*.avro          manifest lists
 *   <table>/metadata/<batch>-m0.avro      manifests
 *   <table>/data/<partition path>/<batch>-<n>.avro  data files
 *
 * Commit protocol: version N+1 is written with a no-replace put (link(2)
 * locally, If-None-Match on S3). When it already exists another writer won:
 * CM_ERR_RETRY, the caller re-reads the newest version and tries again on top
 * of it. version-hint.text is then rewritten; a reader (and our own load)
 * never trusts it blindly: it probes N+1, N+2... until one is missing.
 */
#ifndef LAKE_METADATA_H
#define LAKE_METADATA_H

#include <stddef.h>
#include <stdint.h>

#include <jansson.h>

#include "cm_err.h"
#include "lake_schema.h"
#include "lake_storage.h"

typedef struct lw_meta {
    json_t *root;    /* the parsed current metadata (owned) */
    int64_t version; /* N of v<N>.metadata.json; 0: no table yet */
} lw_meta_t;

/* Loads the newest version of `table`. CM_ERR_NOT_FOUND when there is none.
 * m is replaced (old root released) only on CM_OK. */
cm_err_t lw_meta_load(lw_storage_t *st, const char *table, lw_meta_t *m, char *errstr,
                      size_t errstr_size);

/* Loads the table, or creates it (v1, no snapshot) when missing; a creation
 * race with another writer ends in a load. `properties` may be NULL. */
cm_err_t lw_meta_open_or_create(lw_storage_t *st, const lw_table_def_t *def, lw_meta_t *m,
                                char *errstr, size_t errstr_size);

/* The metadata JSON of a brand-new table (new reference). */
json_t *lw_meta_initial(const lw_table_def_t *def, const char *location, int64_t now_ms);

/* Current snapshot id, or -1. */
int64_t lw_meta_current_snapshot_id(const lw_meta_t *m);
/* The snapshot object with that id (borrowed), or NULL. */
json_t *lw_meta_snapshot(const lw_meta_t *m, int64_t id);
/* summary[key] of the current snapshot as a string (borrowed), or NULL. */
const char *lw_meta_current_summary(const lw_meta_t *m, const char *key);
/* Whether any snapshot's summary has key == value. */
int lw_meta_has_summary(const lw_meta_t *m, const char *key, const char *value);

/*
 * A new metadata root = base + `snapshot` (stolen reference) as the current
 * snapshot of branch main: snapshots, snapshot-log, metadata-log (previous
 * file `base_uri`, capped at 100 entries), refs, last-sequence-number,
 * last-updated-ms. Returns a new reference or NULL.
 */
json_t *lw_meta_with_snapshot(const lw_meta_t *base, json_t *snapshot, const char *base_uri,
                              int64_t now_ms);

/* Key of version n: "<table>/metadata/v<n>.metadata.json". */
void lw_meta_key(const char *table, int64_t n, char *buf, size_t size);

/*
 * Publishes `root` as version m->version + 1 (no-replace), then rewrites
 * version-hint.text. CM_OK: m now holds root (reference stolen) and the new
 * version. CM_ERR_RETRY: the version exists (root is released, m unchanged).
 */
cm_err_t lw_meta_publish(lw_storage_t *st, const char *table, lw_meta_t *m, json_t *root,
                         char *errstr, size_t errstr_size);

void lw_meta_clear(lw_meta_t *m);

/*
 * expire-snapshots: drops snapshots older than older_than_ms (wall ms), but
 * always keeps the current one and the newest `retain_last`, publishes the
 * result as a new version and deletes the manifest lists of the dropped
 * snapshots (manifests and data files stay: this writer only appends, so
 * every one of them is still referenced by the current snapshot).
 * *expired gets the number dropped.
 */
cm_err_t lw_meta_expire_snapshots(lw_storage_t *st, const char *table, int64_t older_than_ms,
                                  int retain_last, int *expired, char *errstr,
                                  size_t errstr_size);

#endif
