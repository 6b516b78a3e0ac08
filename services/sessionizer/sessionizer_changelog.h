/*
 * sessionizer_changelog.h: the state of one partition as records of the
 * compacted changelog topic (clickstream.sessionizer.changelog, partition =
 * input partition), and back.
 *
 * Records (all integers big-endian; README.md "State and changelog"):
 *   key = user_id            value = the user's sessions (format v1 below);
 *                            NULL = the user has no state any more
 *   key = "\0meta"           value = u8 1, i64 max event time, u64 next seq
 *   key = "\0d" + u64 seq    value = u8 1, i64 max event time in it, then the
 *                            dedupe entries inserted in one transaction
 *                            (cm_dedupe format); NULL once all expired
 * A user_id never contains a NUL byte (the Avro decoder refuses it), so the
 * "\0" keys cannot clash with a user.
 *
 * User value v1: u8 1, i64 final_end (INT64_MIN: none), u8 n, n sessions of: i64 start, i64 end, u64
 * first_idh, u64 emitted_first_idh, i64 entry_ts, u64 entry_idh, i64 exit_ts,
 * u64 exit_idh, i64 revenue, u32 events, u32 page_views, i32 revision,
 * u8 flags, then 4 strings (entry_url, exit_url, device, country) as
 * u32 length (0xffffffff: null) + bytes.
 */
#ifndef SESSIONIZER_CHANGELOG_H
#define SESSIONIZER_CHANGELOG_H

#include <stddef.h>

#include "cm_buf.h"
#include "cm_err.h"
#include "sessionizer_state.h"

#define SZ_CL_VERSION 1
#define SZ_CL_META_KEY "\0meta"
#define SZ_CL_META_KEY_LEN 5
#define SZ_CL_DELTA_KEY_LEN 10 /* "\0d" + u64 */

/* One changelog record to write: value NULL = tombstone. Borrowed for the call. */
typedef cm_err_t sz_cl_put_fn(const void *key, size_t klen, const void *val, size_t vlen,
                              void *ud);

/*
 * Writes every change since the last flush: one record per dirty user (its
 * state, or a tombstone when nothing of it is needed any more: then the user
 * is freed), one
 * delta with the dedupe entries inserted since, tombstones for deltas whose
 * entries have all expired, and the meta record when it changed. `scratch` is
 * a buffer the function may reset and use. Returns CM_OK or put's error /
 * CM_ERR_NOMEM; on error the transaction must abort (the state is then
 * rebuilt from the changelog).
 */
cm_err_t sz_changelog_flush(sz_part_t *p, cm_buf_t *scratch, sz_cl_put_fn *put, void *ud);

/* Number of records a flush would write now (for tests and metrics). */
size_t sz_changelog_pending(const sz_part_t *p);

/*
 * Restore: apply one record read from the changelog partition, in offset
 * order (val NULL = tombstone; key/val borrowed). CM_OK, CM_ERR_PARSE for a
 * record this version cannot read, CM_ERR_NOMEM.
 */
cm_err_t sz_changelog_apply(sz_part_t *p, const void *key, size_t klen, const void *val,
                            size_t vlen);

/* After the last record: arms the timers. The state is then what it was at
 * the end of the last committed transaction. */
cm_err_t sz_changelog_restore_done(sz_part_t *p);

/* Encodes one user's value into out (appends). */
cm_err_t sz_changelog_encode_user(const sz_part_t *p, const sz_user_t *u, cm_buf_t *out);

#endif
