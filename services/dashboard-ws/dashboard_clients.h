/*
 * dashboard_clients.h: who gets which message when (no sockets here; the
 * server calls these from its one service thread, so nothing is locked).
 *
 * The hub holds the current model and the list of WebSocket clients. Each
 * client has a bounded queue of messages waiting for its socket:
 *
 *  - on connect it gets the current snapshot;
 *  - when a new model arrives, a client that was sent something less than
 *    `interval_ms` ago is marked pending and offered again when the interval
 *    is over: every model in between is coalesced into the one update it
 *    then gets (an update from model B carries every window changed after B,
 *    so skipping models loses nothing);
 *  - a client whose queue would pass `queue_max` messages or `queue_bytes`
 *    bytes (its socket is not draining) loses what is queued and gets a
 *    fresh snapshot instead: memory per client is bounded and a slow reader
 *    never holds anything up for the others, who are served from the same
 *    shared messages;
 *  - a client that takes nothing for `stall_ms` while messages wait is
 *    reported stalled (the server closes it).
 *
 * Updates are shared: clients at the same base model get one message,
 * built once per (model, base) and kept in a small cache.
 */
#ifndef DB_CLIENTS_H
#define DB_CLIENTS_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "cm_metrics.h"
#include "dashboard_snapshot.h"

typedef struct db_hub_opts {
    int64_t interval_ms; /* least time between two updates to one client */
    size_t queue_max;    /* messages */
    size_t queue_bytes;
    int64_t stall_ms;
} db_hub_opts_t;

typedef struct db_client {
    struct db_client *prev, *next; /* the hub's list */
    db_msg_t **q;                  /* ring of queue_max */
    size_t q_head, q_count, q_bytes;
    uint64_t seq;     /* model the client holds once its queue is sent (0: none yet) */
    int64_t next_ms;  /* no update before this */
    bool pending;     /* a newer model waits for next_ms */
    int64_t last_take_ms;
    uint64_t overflows;
    void *ud; /* the server's connection */
} db_client_t;

#define DB_HUB_CACHE 16

typedef struct db_hub {
    db_hub_opts_t o;
    db_model_t *model; /* one reference, NULL before the first */
    db_client_t *clients;
    size_t n_clients;
    struct {
        uint64_t base;
        db_msg_t *msg;
    } cache[DB_HUB_CACHE];
    size_t n_cache, cache_next;
    /* metrics (owned by the registry) */
    cm_gauge_t *m_clients;
    cm_counter_t *m_sent_snapshot, *m_sent_update, *m_bytes, *m_coalesced, *m_dropped,
        *m_overflows;
} db_hub_t;

typedef enum db_action {
    DB_ACT_NONE = 0,
    DB_ACT_WRITE, /* something was queued: ask for a writable callback */
    DB_ACT_TIMER, /* a model waits: call db_client_offer() again at *wake_ms */
} db_action_t;

/* Sets the hub up (reg borrowed, may be NULL for tests: no metrics then). */
cm_err_t db_hub_init(db_hub_t *hub, const db_hub_opts_t *o, cm_metrics_t *reg);
/* Drops the model and the cache; clients must be detached before. */
void db_hub_clear(db_hub_t *hub);

/* Makes m the current model (takes the caller's reference). The caller then
 * offers it to every client. */
void db_hub_set_model(db_hub_t *hub, db_model_t *m);

/* Links c (zeroed by the caller, ud set) into the hub and queues the current
 * snapshot. CM_ERR_NOMEM when its queue cannot be allocated (not linked). */
cm_err_t db_client_attach(db_hub_t *hub, db_client_t *c, int64_t now_ms, db_action_t *act);
/* Unlinks c and drops what it holds. Safe on a client never attached. */
void db_client_detach(db_hub_t *hub, db_client_t *c);

/* Offers the current model to c (see the top). */
db_action_t db_client_offer(db_hub_t *hub, db_client_t *c, int64_t now_ms, int64_t *wake_ms);

/* The next message to write to c, or NULL: the caller owns the reference,
 * writes the whole message and unrefs it. Counts it as sent. */
db_msg_t *db_client_take(db_hub_t *hub, db_client_t *c, int64_t now_ms);

/* True when messages wait and nothing was taken for stall_ms. */
bool db_client_stalled(const db_hub_t *hub, const db_client_t *c, int64_t now_ms);

#endif
