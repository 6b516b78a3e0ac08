/*
 * gateway_json.h: a strict JSON parser that builds jansson values.
 *
 * Why not json_loadb: on the event path jansson's own lexer costs about
 * 20 µs per 440-byte event on the reference machine (bench/gateway.sh,
 * "parse_us" of gateway_micro) while building the same values costs 3 µs;
 * the lexer alone would cap the gateway near 40 000 events/s per core. This
 * parser accepts exactly RFC 8259 JSON (what jansson accepts with
 * JSON_REJECT_DUPLICATES and without JSON_ALLOW_NUL: no NUL in strings,
 * UTF-8 checked, duplicate keys refused, integers that do not fit json_int_t
 * refused) and yields values equal to jansson's (tests/unit/test_gw_json.c
 * compares both on valid and broken input).
 */
#ifndef GW_JSON_H
#define GW_JSON_H

#include <stddef.h>

#include <jansson.h>

/*
 * Parses one JSON value filling all of p[0..n) (whitespace around allowed).
 * Nesting deeper than max_depth is refused. Returns a new reference (the
 * caller owns it), or NULL with errstr set ("... at byte N").
 */
json_t *gw_json_parse(const char *p, size_t n, int max_depth, char *errstr,
                      size_t errstr_size);

/*
 * A per-thread bump arena for jansson's allocations on the event path:
 * malloc/free were 16% of the gateway's CPU, mostly jansson's small blocks
 * for values that live for one event. gw_json_arena_install() swaps
 * jansson's allocator once, before threads start; it is compatible with
 * values allocated before or outside an arena (their free goes to free()).
 * Between begin and end on ONE thread, values come from that thread's
 * arena; every such value must be released on the same thread before end.
 */
void gw_json_arena_install(void);
void gw_json_arena_begin(void);
void gw_json_arena_end(void);

#endif
