/*
 * dashboard_clients.c: per-client bounded queues and coalescing (see the
 * header for the rules).
 */
#include <stdlib.h>
#include <string.h>

#include "dashboard_clients.h"

static void cinc(cm_counter_t *c, uint64_t n)
{
    if (c && n)
        cm_counter_add(c, n);
}

cm_err_t db_hub_init(db_hub_t *hub, const db_hub_opts_t *o, cm_metrics_t *reg)
{
    memset(hub, 0, sizeof(*hub));
    hub->o = *o;
    if (hub->o.queue_max < 2)
        hub->o.queue_max = 2;
    if (!reg)
        return CM_OK;
    hub->m_clients = cm_metrics_gauge(reg, "dashboard_clients",
                                      "WebSocket clients connected", NULL);
    hub->m_sent_snapshot = cm_metrics_counter(reg, "dashboard_messages_sent_total",
                                              "WebSocket messages handed to the socket",
                                              "type", "snapshot", NULL);
    hub->m_sent_update = cm_metrics_counter(reg, "dashboard_messages_sent_total",
                                            "WebSocket messages handed to the socket", "type",
                                            "update", NULL);
    hub->m_bytes = cm_metrics_counter(reg, "dashboard_bytes_sent_total",
                                      "bytes of WebSocket messages handed to the socket", NULL);
    hub->m_coalesced = cm_metrics_counter(
        reg, "dashboard_updates_coalesced_total",
        "model changes a client got folded into a later update instead of one of its own",
        NULL);
    hub->m_dropped = cm_metrics_counter(
        reg, "dashboard_updates_dropped_total",
        "queued updates dropped because a client's queue overflowed (a snapshot replaced them)",
        NULL);
    hub->m_overflows = cm_metrics_counter(reg, "dashboard_queue_overflows_total",
                                          "client queue overflows (each sends a fresh snapshot)",
                                          NULL);
    return CM_OK;
}

static void cache_clear(db_hub_t *hub)
{
    for (size_t i = 0; i < hub->n_cache; i++)
        db_msg_unref(hub->cache[i].msg);
    hub->n_cache = 0;
    hub->cache_next = 0;
}

void db_hub_clear(db_hub_t *hub)
{
    cache_clear(hub);
    db_model_unref(hub->model);
    hub->model = NULL;
}

void db_hub_set_model(db_hub_t *hub, db_model_t *m)
{
    cache_clear(hub);
    db_model_unref(hub->model);
    hub->model = m;
}

/* The update from `base` to the current model, shared through the cache.
 * Returns a reference for the caller, NULL on no memory. */
static db_msg_t *update_for(db_hub_t *hub, uint64_t base)
{
    for (size_t i = 0; i < hub->n_cache; i++)
        if (hub->cache[i].base == base)
            return db_msg_ref(hub->cache[i].msg);
    db_msg_t *m = db_model_update(hub->model, base);
    if (!m)
        return NULL;
    size_t slot;
    if (hub->n_cache < DB_HUB_CACHE) {
        slot = hub->n_cache++;
    } else {
        slot = hub->cache_next;
        hub->cache_next = (hub->cache_next + 1) % DB_HUB_CACHE;
        db_msg_unref(hub->cache[slot].msg);
    }
    hub->cache[slot].base = base;
    hub->cache[slot].msg = db_msg_ref(m);
    return m;
}

/* Drops every queued message; returns how many were updates. */
static size_t queue_drop_all(db_hub_t *hub, db_client_t *c)
{
    size_t updates = 0;
    while (c->q_count) {
        db_msg_t *m = c->q[c->q_head];
        if (m->kind == DB_MSG_UPDATE)
            updates++;
        db_msg_unref(m);
        c->q[c->q_head] = NULL;
        c->q_head = (c->q_head + 1) % hub->o.queue_max;
        c->q_count--;
    }
    c->q_head = 0;
    c->q_bytes = 0;
    return updates;
}

static void queue_push(db_hub_t *hub, db_client_t *c, db_msg_t *m)
{
    c->q[(c->q_head + c->q_count) % hub->o.queue_max] = m;
    c->q_count++;
    c->q_bytes += m->len;
}

/*
 * Queues m (the caller's reference moves in) for c. When it does not fit,
 * what is queued and m are dropped and the current snapshot goes in their
 * place: the client then holds the current model once it drains.
 */
static void enqueue(db_hub_t *hub, db_client_t *c, db_msg_t *m)
{
    bool full = c->q_count >= hub->o.queue_max ||
                (c->q_count > 0 && c->q_bytes + m->len > hub->o.queue_bytes);
    if (!full) {
        queue_push(hub, c, m);
        return;
    }
    size_t dropped = queue_drop_all(hub, c) + (m->kind == DB_MSG_UPDATE);
    db_msg_unref(m);
    c->overflows++;
    cinc(hub->m_dropped, dropped);
    cinc(hub->m_overflows, 1);
    queue_push(hub, c, db_msg_ref(hub->model->snapshot));
}

cm_err_t db_client_attach(db_hub_t *hub, db_client_t *c, int64_t now_ms, db_action_t *act)
{
    *act = DB_ACT_NONE;
    c->q = calloc(hub->o.queue_max, sizeof(*c->q));
    if (!c->q)
        return CM_ERR_NOMEM;
    c->prev = NULL;
    c->next = hub->clients;
    if (hub->clients)
        hub->clients->prev = c;
    hub->clients = c;
    hub->n_clients++;
    if (hub->m_clients)
        cm_gauge_set_int(hub->m_clients, (int64_t)hub->n_clients);
    c->last_take_ms = now_ms;
    c->next_ms = now_ms;
    if (hub->model) {
        queue_push(hub, c, db_msg_ref(hub->model->snapshot));
        c->seq = hub->model->seq;
        c->next_ms = now_ms + hub->o.interval_ms;
        *act = DB_ACT_WRITE;
    }
    return CM_OK;
}

void db_client_detach(db_hub_t *hub, db_client_t *c)
{
    if (!c->q)
        return;
    queue_drop_all(hub, c);
    free(c->q);
    c->q = NULL;
    if (c->prev)
        c->prev->next = c->next;
    else
        hub->clients = c->next;
    if (c->next)
        c->next->prev = c->prev;
    c->prev = c->next = NULL;
    hub->n_clients--;
    if (hub->m_clients)
        cm_gauge_set_int(hub->m_clients, (int64_t)hub->n_clients);
}

db_action_t db_client_offer(db_hub_t *hub, db_client_t *c, int64_t now_ms, int64_t *wake_ms)
{
    db_model_t *m = hub->model;
    if (!c->q || !m || c->seq == m->seq) {
        c->pending = false;
        return DB_ACT_NONE;
    }
    if (now_ms < c->next_ms) {
        c->pending = true;
        *wake_ms = c->next_ms;
        return DB_ACT_TIMER;
    }
    c->pending = false;
    db_msg_t *msg;
    if (c->seq == 0 || c->seq > m->seq) {
        /* nothing held yet, or a model sequence that went back (a restart of
         * the numbering): start over from a snapshot */
        msg = db_msg_ref(m->snapshot);
    } else {
        msg = update_for(hub, c->seq);
        if (!msg)
            return DB_ACT_NONE; /* no memory: the next model or timer retries */
        /* every model between the two that got no message of its own */
        cinc(hub->m_coalesced, m->seq - c->seq - 1);
    }
    if (!c->q_count)
        c->last_take_ms = now_ms; /* the stall clock starts when something waits */
    enqueue(hub, c, msg);
    c->seq = m->seq;
    c->next_ms = now_ms + hub->o.interval_ms;
    return DB_ACT_WRITE;
}

db_msg_t *db_client_take(db_hub_t *hub, db_client_t *c, int64_t now_ms)
{
    if (!c->q || !c->q_count)
        return NULL;
    db_msg_t *m = c->q[c->q_head];
    c->q[c->q_head] = NULL;
    c->q_head = (c->q_head + 1) % hub->o.queue_max;
    c->q_count--;
    c->q_bytes -= m->len;
    c->last_take_ms = now_ms;
    cinc(m->kind == DB_MSG_SNAPSHOT ? hub->m_sent_snapshot : hub->m_sent_update, 1);
    cinc(hub->m_bytes, m->len);
    return m;
}

bool db_client_stalled(const db_hub_t *hub, const db_client_t *c, int64_t now_ms)
{
    return c->q && c->q_count > 0 && now_ms - c->last_take_ms > hub->o.stall_ms;
}
