/*
 * cm_config.h: declarative configuration from environment variables.
 *
 * A service describes its settings once, as a table (fluent-bit style):
 *
 *   static const cm_config_entry_t gw_config_table[] = {
 *     {CM_CFG_INT, "GATEWAY_PORT", "8080", offsetof(gw_config_t, port),
 *      1, 65535, "HTTP port of the event API", NULL, false},
 *     CM_CONFIG_ENTRY(CM_CFG_MS, "GATEWAY_READ_TIMEOUT", "10s", gw_config_t,
 *                     read_timeout_ms, 1000, 3600000, "read timeout"),
 *     ...
 *     {0}
 *   };
 *
 * (-Wextra rejects a row that leaves fields out; CM_CONFIG_ENTRY fills them.)
 *
 * cm_config_load() fills the struct from the environment (or the default),
 * checking type and bounds; `--help` prints the table. Any environment
 * variable named `<passthrough_prefix><NAME>` (default prefix "RDKAFKA_") is
 * kept as a librdkafka property: the NAME is lower-cased and '_' becomes '.',
 * so RDKAFKA_SASL_MECHANISMS=PLAIN becomes sasl.mechanisms=PLAIN ("__"
 * stands for a literal '_').
 *
 * Loading rules, for every entry:
 *  - a variable that is unset or set to the empty string takes the default;
 *  - `def == NULL` means "no default": a STR or ENUM field stays NULL, any
 *    other type is required and its absence is an error;
 *  - bounds: `min == max == 0` means none; use -INFINITY / INFINITY
 *    (<math.h>) for an open side. INT/DOUBLE bound the value, MS bounds
 *    milliseconds, SIZE bytes, STR the length in bytes;
 *  - a bad value gives CM_ERR_INVALID and one line such as
 *      GATEWAY_PORT=70000: must be an integer between 1 and 65535
 *    A secret entry's value is shown as "***" in that line, never as itself.
 *
 * A typical main():
 *
 *   gw_config_t cfg = {0};
 *   cm_passthrough_t pt = {0};
 *   int rc = cm_config_main_init(argc, argv, "ingest-gateway", GW_SUMMARY,
 *                                gw_config_table, &cfg, &pt);
 *   if (rc)
 *       return rc == 1 ? 0 : 2;
 */
#ifndef CM_CONFIG_H
#define CM_CONFIG_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>

#include "cm_err.h"

typedef enum cm_config_type {
    CM_CFG_END = 0,
    CM_CFG_STR,    /* char * (owned by the struct; freed by cm_config_free) */
    CM_CFG_INT,    /* int64_t, bounds min..max */
    CM_CFG_BOOL,   /* bool: true/false/1/0/yes/no/on/off */
    CM_CFG_DOUBLE, /* double, bounds min..max */
    CM_CFG_MS,     /* int64_t milliseconds; accepts "500", "500ms", "10s", "5m", "1h" */
    CM_CFG_SIZE,   /* int64_t bytes; accepts "1024", "32KiB", "1MiB", "128MiB", "1GiB" */
    CM_CFG_ENUM,   /* char *, one of the '|'-separated words in `choices` */
} cm_config_type_t;

typedef struct cm_config_entry {
    cm_config_type_t type;
    const char *env;         /* environment variable name */
    const char *def;         /* default as text; NULL = unset (STR becomes NULL) */
    size_t offset;           /* offsetof(struct, field) */
    double min, max;         /* bounds for INT/DOUBLE/MS/SIZE; min == max == 0: none */
    const char *description; /* one line, shown by --help */
    const char *choices;     /* ENUM only: "a|b|c" */
    bool secret;             /* never printed (keys, passwords) */
} cm_config_entry_t;

typedef struct cm_kv {
    char *key;
    char *value;
} cm_kv_t;

/* A row with no choices and not secret. */
#define CM_CONFIG_ENTRY(type, env, def, st, field, min, max, description)                \
    {type, env, def, offsetof(st, field), min, max, description, NULL, false}

/* Pass-through properties collected from the environment. */
typedef struct cm_passthrough {
    cm_kv_t *items;
    size_t count;
} cm_passthrough_t;

/*
 * Fills `out` (a service's config struct) from the environment. On a missing
 * or invalid value returns CM_ERR_INVALID and writes one line naming the
 * variable and the rule into errstr. Strings are owned by `out` afterwards
 * (cm_config_free); `out` should start zeroed, as strings already in it are
 * overwritten, not freed. On failure `out` holds no memory and `pt` is empty.
 * `pt` may be NULL; otherwise it receives the pass-through properties found
 * under `pt_prefix` (NULL means "RDKAFKA_") and is owned by the caller
 * (cm_passthrough_free).
 */
cm_err_t cm_config_load(const cm_config_entry_t *table, void *out,
                        const char *pt_prefix, cm_passthrough_t *pt,
                        char *errstr, size_t errstr_size);

/* Same as cm_config_load but reads values through `getenv_fn(name, ud)` and
 * takes pass-through candidates from `environ_list` ("NAME=value" strings,
 * NULL-terminated; NULL means none) (tests). */
cm_err_t cm_config_load_from(const cm_config_entry_t *table, void *out,
                             const char *pt_prefix, cm_passthrough_t *pt,
                             const char *(*getenv_fn)(const char *name, void *ud),
                             char **environ_list, void *ud,
                             char *errstr, size_t errstr_size);

/* Frees the strings that cm_config_load put into `out` and sets them NULL.
 * Both are no-ops on NULL. */
void cm_config_free(const cm_config_entry_t *table, void *out);
void cm_passthrough_free(cm_passthrough_t *pt);

/* Prints usage: a block per entry with env name, type, default, bounds or
 * choices and the description, then a paragraph on the RDKAFKA_ pass-through.
 * A secret's default is not shown. */
void cm_config_print_help(const char *service, const char *summary,
                          const cm_config_entry_t *table, FILE *out);

/* Same, with the pass-through paragraph naming `pt_prefix`; NULL leaves the
 * paragraph out (a service that talks to no Kafka). */
void cm_config_print_help_pt(const char *service, const char *summary,
                             const cm_config_entry_t *table, const char *pt_prefix,
                             FILE *out);

/*
 * Standard command-line handling for every binary: `--help`/`-h` prints help
 * to stdout and returns 1 (the caller exits 0); any other argument prints
 * "<service>: unknown option '<arg>' (try --help)" on stderr and returns 2
 * (the caller exits 2); no argument returns 0.
 */
int cm_config_args(int argc, char **argv, const char *service, const char *summary,
                   const cm_config_entry_t *table);

/*
 * Everything a main() needs before it starts: cm_config_args(), then
 * cm_config_load() with the "RDKAFKA_" prefix. Returns 0 (go on), 1 (help was
 * printed: exit 0) or 2 (bad argument or bad configuration, one line already
 * on stderr as "<service>: <errstr>": exit 2). `cfg` should be zeroed; on a
 * return other than 0 it holds no memory. `pt` may be NULL (no pass-through,
 * and --help does not mention it); else the caller owns it afterwards
 * (cm_passthrough_free).
 */
int cm_config_main_init(int argc, char **argv, const char *service, const char *summary,
                        const cm_config_entry_t *table, void *cfg, cm_passthrough_t *pt);

/*
 * Writes "ENV=value ENV=value ..." for the whole loaded config into buf (cut
 * to fit, always NUL-terminated), secrets as "***", for the start-up log line.
 */
void cm_config_describe(const cm_config_entry_t *table, const void *cfg, char *buf,
                        size_t size);

/* Looks a pass-through property up by key; NULL when absent. */
const char *cm_passthrough_get(const cm_passthrough_t *pt, const char *key);

/*
 * The settings every service shares. Embed a cm_common_config_t in the
 * service's struct and put the entries in its table, with the service's env
 * prefix and default admin port (SPEC §8):
 *
 *   typedef struct { cm_common_config_t common; ... } sz_config_t;
 *   static const cm_config_entry_t sz_config_table[] = {
 *       CM_CONFIG_COMMON_ENTRIES(sz_config_t, common, "SESSIONIZER_", "9102"),
 *       ...
 *       {0}};
 *
 * gives SESSIONIZER_LOG_LEVEL, SESSIONIZER_ADMIN_ADDR, SESSIONIZER_ADMIN_PORT.
 * Then: cm_log_init("sessionizer", cm_log_level_parse(cfg.common.log_level)).
 */
typedef struct cm_common_config {
    char *log_level;    /* "debug", "info", "warn" or "error" */
    char *admin_addr;   /* bind address of the admin HTTP server */
    int64_t admin_port; /* 0: an ephemeral port */
} cm_common_config_t;

#define CM_CONFIG_LOG_LEVEL_ENTRY(type, field, prefix)                                  \
    {CM_CFG_ENUM, prefix "LOG_LEVEL", "info", offsetof(type, field), 0, 0,              \
     "lowest level of the JSON log lines written to stderr", "debug|info|warn|error",   \
     false}

#define CM_CONFIG_COMMON_ENTRIES(type, member, prefix, port_def)                        \
    CM_CONFIG_LOG_LEVEL_ENTRY(type, member.log_level, prefix),                          \
    {CM_CFG_STR, prefix "ADMIN_ADDR", "0.0.0.0", offsetof(type, member.admin_addr), 1,  \
     255, "bind address of the admin HTTP server (/metrics, /healthz, /readyz)", NULL,  \
     false},                                                                            \
    {CM_CFG_INT, prefix "ADMIN_PORT", port_def, offsetof(type, member.admin_port), 0,   \
     65535, "port of the admin HTTP server (0: any free port)", NULL, false}

/*
 * Parsers used by the table, exposed for tests. Return CM_OK or CM_ERR_INVALID
 * (and leave *out alone). Units are case-insensitive.
 *  ms:   "500" (bare: milliseconds), or number+unit pairs with units ms, s,
 *        m, h, d, in any sequence: "500ms", "10s", "5m", "1h", "1h30m".
 *  size: "1024" (bytes) or number+unit: B; KiB, MiB, GiB, TiB (and K, M, G,
 *        T) powers of 1024; KB, MB, GB, TB powers of 1000.
 *  bool: true/false, 1/0, yes/no, on/off.
 */
cm_err_t cm_parse_ms(const char *s, int64_t *out);
cm_err_t cm_parse_size(const char *s, int64_t *out);
cm_err_t cm_parse_bool(const char *s, bool *out);

#endif
