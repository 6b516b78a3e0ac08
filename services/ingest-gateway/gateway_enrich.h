/*
 * gateway_enrich.h: what the gateway adds to an event (SPEC §1): received_at,
 * the client IP (from the peer, or a trusted X-Forwarded-For), IP
 * anonymisation, and device type / os / bot flag from the user agent.
 */
#ifndef GW_ENRICH_H
#define GW_ENRICH_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <sys/socket.h>

#include "cm_err.h"
#include "cm_event.h"

/* An IP address; IPv4-mapped IPv6 (::ffff:a.b.c.d) is stored as IPv4. */
typedef struct gw_ip {
    int family; /* AF_INET, AF_INET6; 0: none */
    uint8_t b[16];
} gw_ip_t;

typedef struct gw_cidr {
    gw_ip_t net;
    int prefix;
} gw_cidr_t;

/* A list of CIDRs; owned, freed by gw_cidrs_free. */
typedef struct gw_cidrs {
    gw_cidr_t *v;
    size_t n;
} gw_cidrs_t;

/*
 * Parses an address of n bytes ("1.2.3.4", "2001:db8::1", also "[::1]",
 * "[::1]:443" and "1.2.3.4:80" as proxies write them). CM_OK or CM_ERR_PARSE.
 */
cm_err_t gw_ip_parse(const char *s, size_t n, gw_ip_t *out);
/* From a socket address (the peer); CM_ERR_INVALID for other families. */
cm_err_t gw_ip_from_sockaddr(const struct sockaddr *sa, gw_ip_t *out);
/* Last IPv4 octet, or the last 80 bits of IPv6, zeroed. */
void gw_ip_anonymize(gw_ip_t *ip);
/* Text form into buf (>= 46 bytes). */
void gw_ip_format(const gw_ip_t *ip, char *buf, size_t size);

/* "10.0.0.0/8, 192.168.1.1, ::1/128" (a bare address is a /32 or /128).
 * NULL or "" gives an empty list. CM_ERR_INVALID + errstr on a bad entry;
 * out is then empty. */
cm_err_t gw_cidrs_parse(const char *s, gw_cidrs_t *out, char *errstr, size_t errstr_size);
void gw_cidrs_free(gw_cidrs_t *l);
bool gw_cidrs_match(const gw_cidrs_t *l, const gw_ip_t *ip);

/*
 * The client's address: the peer, unless the peer is a trusted proxy and
 * sent X-Forwarded-For (xff may be NULL); then the rightmost XFF entry that
 * is not itself a trusted proxy (all trusted: the leftmost). A malformed
 * entry stops the walk at the last good address (so a client cannot forge
 * its way past a proxy that appends).
 */
gw_ip_t gw_client_ip(const gw_ip_t *peer, const char *xff, const gw_cidrs_t *trusted);

/* What a user agent says. Strings are static. */
typedef struct gw_ua {
    const char *device_type; /* "desktop" "mobile" "tablet" "bot" "other"; NULL: no UA */
    const char *os;          /* "Windows" "macOS" "iOS" "Android" "Linux" "ChromeOS"... or NULL */
    bool is_bot;
} gw_ua_t;

void gw_ua_parse(const char *ua, gw_ua_t *out);

/* Per-request enrichment inputs. */
typedef struct gw_enrich_ctx {
    int64_t now_ms;
    const char *client_ip; /* already anonymised when `anonymize`; may be NULL */
    bool anonymize;
} gw_enrich_ctx_t;

/* Outcome flags of gw_enrich_event, for metrics. */
#define GW_ENRICH_IP_DROPPED 1u /* the event's own ip_address was not an IP: dropped */
#define GW_ENRICH_IP_FROM_PEER 2u

/*
 * Adds received_at, ip_address (the event's own, anonymised when on, else
 * the client's), device type/os when absent and is_bot. Returns CM_OK (and
 * *flags) or CM_ERR_NOMEM.
 */
cm_err_t gw_enrich_event(cm_event_t *ev, const gw_enrich_ctx_t *ctx, unsigned *flags);

#endif
