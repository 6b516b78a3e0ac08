/*
 * cm_registry.h: schema ids for the Avro wire format (SPEC §2), from a
 * Confluent-compatible Schema Registry when SCHEMA_REGISTRY_URL is set,
 * otherwise from the built-in table (event 1, session 2, window_result 3).
 *
 * Subjects use the TopicNameStrategy: "<topic>-value", e.g.
 * "clickstream.raw-value". With a registry:
 *  - cm_registry_id() registers the embedded schema under the subject
 *    (POST /subjects/<subject>/versions, idempotent: an identical schema gets
 *    its existing id back) and caches the id per (subject, kind);
 *  - cm_registry_kind() answers "which of our schemas is id N": ids learnt by
 *    cm_registry_id() first; an unknown id is looked up ONCE with
 *    GET /schemas/ids/<id> and accepted for a kind iff the registry's schema
 *    is structurally equal (avro_schema_equal) to that kind's embedded schema.
 *    The answer, positive or negative, is cached; transport failures are not
 *    (CM_ERR_IO, ask again later). At most CM_REGISTRY_MAX_IDS ids are
 *    cached: past that, unknown ids are refused without a lookup, so a flood
 *    of garbage ids cannot turn into a flood of HTTP requests.
 * A registry in built-in mode never does I/O.
 *
 * Thread-safe: one registry may be shared by every thread of a service. The
 * calls that do HTTP block (connect timeout 3 s, total 10 s) and hold an
 * internal lock meanwhile; in steady state the decoders only hit the cache.
 */
#ifndef CM_REGISTRY_H
#define CM_REGISTRY_H

#include <stddef.h>
#include <stdint.h>

#include "cm_avro.h"
#include "cm_err.h"

#define CM_REGISTRY_MAX_IDS 1024

/*
 * url_or_null: the registry's base URL ("http://host:8081", user:password@
 * allowed), or NULL / "" for built-in mode. Only one URL (no comma list).
 * Does no I/O. Returns NULL and fills errstr on a malformed URL or no memory.
 * Free with cm_registry_destroy().
 */
cm_registry_t *cm_registry_new(const char *url_or_null, char *errstr, size_t errstr_size);
void cm_registry_destroy(cm_registry_t *reg); /* NULL: no-op */

/* 1 when a registry URL is configured, 0 in built-in mode. */
int cm_registry_is_remote(const cm_registry_t *reg);

/* "<topic>-value" into buf; CM_ERR_TOO_LARGE if it does not fit. */
cm_err_t cm_registry_subject(const char *topic, char *buf, size_t size);

/*
 * The schema id to stamp on records of `kind` written under `subject`.
 * Built-in mode: cm_schema_builtin_id(kind), subject ignored. Remote: the
 * cached id or a registration (see top). Returns CM_OK and *id; CM_ERR_IO
 * (unreachable, HTTP 5xx), CM_ERR_INVALID (the registry refused the schema,
 * e.g. 409 incompatible), CM_ERR_PARSE (unreadable answer); errstr (may be
 * NULL) says why, without the URL's credentials.
 */
cm_err_t cm_registry_id(cm_registry_t *reg, const char *subject, cm_schema_kind_t kind,
                        uint32_t *id, char *errstr, size_t errstr_size);

/*
 * Which of our schemas is `id`. reg == NULL behaves as built-in mode.
 * Returns CM_OK and *kind; CM_ERR_NOT_FOUND (not one of ours); CM_ERR_IO (the
 * lookup failed, not cached). errstr may be NULL.
 */
cm_err_t cm_registry_kind(cm_registry_t *reg, uint32_t id, cm_schema_kind_t *kind,
                          char *errstr, size_t errstr_size);

#endif
