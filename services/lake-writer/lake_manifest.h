/*
 * lake_manifest.h: Iceberg v2 manifests (manifest_entry, field ids 0..4 and
 * 100..143) and manifest lists (manifest_file, field ids 500..519), written
 * as Avro container files with the header keys the Iceberg spec asks for.
 *
 * Appends only: every entry we write is ADDED (status 1) with snapshot_id and
 * both sequence numbers null, so that they are inherited from the manifest
 * list at read time; a manifest can then be reused unchanged when a commit is
 * retried on a newer base (only the manifest list is rewritten).
 */
#ifndef LAKE_MANIFEST_H
#define LAKE_MANIFEST_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "cm_buf.h"
#include "cm_err.h"
#include "lake_schema.h"

/* One data file to add. */
typedef struct lw_datafile {
    char *uri;  /* file_path: full URI */
    char *key;  /* storage key */
    int64_t record_count;
    int64_t file_size;
    int32_t part[LW_MAX_PART_FIELDS]; /* partition tuple (def->n_part values) */
    bool has_ts;                      /* bounds of the event-time column */
    int64_t ts_min, ts_max;           /* microseconds */
} lw_datafile_t;

/* Summary of one partition field over a manifest's files. */
typedef struct lw_part_summary {
    bool contains_null;
    bool has_bounds;
    int32_t lower, upper;
} lw_part_summary_t;

/* One manifest_file entry of a manifest list. */
typedef struct lw_manifest_file {
    char *path;
    int64_t length;
    int32_t spec_id;
    int32_t content; /* 0 data */
    int64_t seq, min_seq;
    int64_t added_snapshot_id;
    int32_t added_files, existing_files, deleted_files;
    int64_t added_rows, existing_rows, deleted_rows;
    size_t n_parts;
    lw_part_summary_t parts[LW_MAX_PART_FIELDS];
} lw_manifest_file_t;

/*
 * Writes a manifest with one ADDED entry per file into *out (reset first; a
 * memory Avro file). `mf` (may be NULL) gets the counts and partition
 * summaries; its path, length, seq, min_seq and added_snapshot_id are left
 * for the caller. codec: LW_CODEC_* of lake_avrofile.h.
 */
cm_err_t lw_manifest_write(const lw_table_def_t *def, const lw_datafile_t *files, size_t n,
                           int codec, cm_buf_t *out, lw_manifest_file_t *mf, char *errstr,
                           size_t errstr_size);

/* Writes a manifest list of n entries. parent_id < 0: none. */
cm_err_t lw_manifest_list_write(const lw_manifest_file_t *mfs, size_t n, int64_t snapshot_id,
                                int64_t parent_id, int64_t seq, int codec, cm_buf_t *out,
                                char *errstr, size_t errstr_size);

/* Reads a manifest list (any Iceberg v2 writer's). On CM_OK *out (caller
 * owns: lw_manifest_files_free) holds *n entries. CM_ERR_PARSE on bad input. */
cm_err_t lw_manifest_list_read(const void *data, size_t len, lw_manifest_file_t **out,
                               size_t *n, char *errstr, size_t errstr_size);

/* Reads the data file paths of a manifest (live entries: status != 2).
 * fn(path, record_count, ud) per entry. */
typedef void lw_manifest_entry_fn(const char *path, int64_t record_count, void *ud);
cm_err_t lw_manifest_read_paths(const void *data, size_t len, lw_manifest_entry_fn *fn,
                                void *ud, char *errstr, size_t errstr_size);

/* Deep copy / free. */
cm_err_t lw_manifest_file_copy(lw_manifest_file_t *dst, const lw_manifest_file_t *src);
void lw_manifest_files_free(lw_manifest_file_t *mfs, size_t n);
void lw_datafile_clear(lw_datafile_t *f);

#endif
