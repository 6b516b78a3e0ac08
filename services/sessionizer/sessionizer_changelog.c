/*
 * sessionizer_changelog.c: state <-> changelog records (formats in the header).
 *
 * One record per touched user per transaction (not per event) keeps the
 * changelog volume at about one state record per active user per commit
 * interval; dedupe entries go in one delta record per transaction because
 * they belong to the partition, not to a user, and rewriting the whole set
 * each commit would cost O(set) per 100 ms.
 */
#include "sessionizer_changelog.h"

#include <stdlib.h>
#include <string.h>

#include "cm_dedupe.h"
#include "cm_watermark.h"

static void put_u64(uint8_t *p, uint64_t v)
{
    for (int i = 7; i >= 0; i--, v >>= 8)
        p[i] = (uint8_t)v;
}

static void put_u32(uint8_t *p, uint32_t v)
{
    for (int i = 3; i >= 0; i--, v >>= 8)
        p[i] = (uint8_t)v;
}

static uint64_t get_u64(const uint8_t *p)
{
    uint64_t v = 0;
    for (int i = 0; i < 8; i++)
        v = v << 8 | p[i];
    return v;
}

static uint32_t get_u32(const uint8_t *p)
{
    return (uint32_t)p[0] << 24 | (uint32_t)p[1] << 16 | (uint32_t)p[2] << 8 | p[3];
}

#define SESS_FIXED (9 * 8 + 3 * 4 + 1)

static cm_err_t put_str(cm_buf_t *out, const sz_str_t *s)
{
    uint8_t len[4];
    put_u32(len, s ? s->len : UINT32_MAX);
    cm_err_t err = cm_buf_append(out, len, 4);
    if (!err && s)
        err = cm_buf_append(out, s->s, s->len);
    return err;
}

cm_err_t sz_changelog_encode_user(const sz_part_t *p, const sz_user_t *u, cm_buf_t *out)
{
    uint32_t n = 0;
    for (uint32_t s = u->sess; s != SZ_NIL; s = sz_sess_at(p, s)->next)
        n++;
    if (n > 255)
        return CM_ERR_TOO_LARGE; /* cannot happen: live sessions are > gap apart */
    uint8_t hdr[10] = {SZ_CL_VERSION};
    put_u64(hdr + 1, (uint64_t)u->final_end);
    hdr[9] = (uint8_t)n;
    cm_err_t err = cm_buf_append(out, hdr, sizeof(hdr));
    for (uint32_t sidx = u->sess; !err && sidx != SZ_NIL; sidx = sz_sess_at(p, sidx)->next) {
        const sz_sess_t *s = sz_sess_at(p, sidx);
        uint8_t b[SESS_FIXED], *q = b;
        put_u64(q, (uint64_t)s->start), q += 8;
        put_u64(q, (uint64_t)s->end), q += 8;
        put_u64(q, s->first_idh), q += 8;
        put_u64(q, s->emitted_first_idh), q += 8;
        put_u64(q, (uint64_t)s->entry_ts), q += 8;
        put_u64(q, s->entry_idh), q += 8;
        put_u64(q, (uint64_t)s->exit_ts), q += 8;
        put_u64(q, s->exit_idh), q += 8;
        put_u64(q, (uint64_t)s->revenue), q += 8;
        put_u32(q, s->events), q += 4;
        put_u32(q, s->page_views), q += 4;
        put_u32(q, (uint32_t)s->revision), q += 4;
        *q = (uint8_t)s->flags;
        if ((err = cm_buf_append(out, b, sizeof(b))) ||
            (err = put_str(out, sz_str_get(&p->strs, s->entry_url))) ||
            (err = put_str(out, sz_str_get(&p->strs, s->exit_url))) ||
            (err = put_str(out, sz_str_get(&p->strs, s->device))) ||
            (err = put_str(out, sz_str_get(&p->strs, s->country))))
            break;
    }
    return err;
}

static void delta_key(uint8_t key[SZ_CL_DELTA_KEY_LEN], uint64_t seq)
{
    key[0] = 0;
    key[1] = 'd';
    put_u64(key + 2, seq);
}

static int64_t horizon(const sz_part_t *p) { return p->prm.bound_ms + p->prm.lateness_ms; }

static bool delta_expired(const sz_part_t *p, const sz_delta_t *d, int64_t wm)
{
    return d->max_ts <= INT64_MAX - horizon(p) && wm > d->max_ts + horizon(p);
}

size_t sz_changelog_pending(const sz_part_t *p)
{
    size_t n = 0;
    for (uint32_t u = p->dirty_head; u != SZ_NIL; u = sz_user_at(p, u)->dirty_next)
        n++;
    if (cm_dedupe_journal_len(p->dedupe))
        n++;
    int64_t wm = sz_part_watermark(p);
    for (size_t i = 0; i < p->ndeltas; i++)
        n += delta_expired(p, &p->deltas[i], wm);
    return n + (p->meta_dirty ? 1 : 0);
}

static cm_err_t deltas_add(sz_part_t *p, uint64_t seq, int64_t max_ts)
{
    for (size_t i = 0; i < p->ndeltas; i++)
        if (p->deltas[i].seq == seq) {
            p->deltas[i].max_ts = max_ts;
            return CM_OK;
        }
    if (p->ndeltas == p->deltas_cap) {
        size_t cap = p->deltas_cap ? p->deltas_cap * 2 : 64;
        sz_delta_t *d = realloc(p->deltas, cap * sizeof(*d));
        if (!d)
            return CM_ERR_NOMEM;
        p->deltas = d;
        p->deltas_cap = cap;
    }
    p->deltas[p->ndeltas].seq = seq;
    p->deltas[p->ndeltas].max_ts = max_ts;
    p->ndeltas++;
    return CM_OK;
}

static void deltas_remove(sz_part_t *p, uint64_t seq)
{
    for (size_t i = 0; i < p->ndeltas; i++)
        if (p->deltas[i].seq == seq) {
            p->deltas[i] = p->deltas[--p->ndeltas];
            return;
        }
}

cm_err_t sz_changelog_flush(sz_part_t *p, cm_buf_t *scratch, sz_cl_put_fn *put, void *ud)
{
    cm_err_t err = CM_OK;
    int64_t wm = sz_part_watermark(p);
    /* users */
    while (p->dirty_head != SZ_NIL) {
        uint32_t uidx = p->dirty_head;
        sz_user_t *u = sz_user_at(p, uidx);
        p->dirty_head = u->dirty_next;
        u->dirty_next = SZ_NIL;
        u->flags &= ~SZ_U_DIRTY;
        if (sz_user_expired(p, u, wm)) {
            if (u->flags & SZ_U_LOGGED)
                err = put(u->uid, u->uid_len, NULL, 0, ud);
            sz_user_drop(p, uidx);
        } else {
            cm_buf_reset(scratch);
            if (!(err = sz_changelog_encode_user(p, u, scratch)))
                err = put(u->uid, u->uid_len, scratch->data, scratch->len, ud);
            u->flags |= SZ_U_LOGGED;
        }
        if (err)
            return err;
    }
    /* dedupe delta of this transaction */
    uint8_t key[SZ_CL_DELTA_KEY_LEN];
    if (cm_dedupe_journal_len(p->dedupe)) {
        cm_buf_reset(scratch);
        uint8_t hdr[9] = {SZ_CL_VERSION};
        size_t n;
        int64_t mx;
        if ((err = cm_buf_append(scratch, hdr, sizeof(hdr))) ||
            (err = cm_dedupe_journal_take(p->dedupe, scratch, &n, &mx)))
            return err;
        put_u64(scratch->data + 1, (uint64_t)mx);
        uint64_t seq = p->next_seq++;
        delta_key(key, seq);
        if ((err = deltas_add(p, seq, mx)) ||
            (err = put(key, sizeof(key), scratch->data, scratch->len, ud)))
            return err;
        p->meta_dirty = true;
    }
    /* deltas whose entries have all expired */
    for (size_t i = 0; i < p->ndeltas;) {
        if (!delta_expired(p, &p->deltas[i], wm)) {
            i++;
            continue;
        }
        delta_key(key, p->deltas[i].seq);
        if ((err = put(key, sizeof(key), NULL, 0, ud)))
            return err;
        p->deltas[i] = p->deltas[--p->ndeltas];
    }
    if (p->meta_dirty) {
        uint8_t v[17];
        v[0] = SZ_CL_VERSION;
        put_u64(v + 1, (uint64_t)p->max_event);
        put_u64(v + 9, p->next_seq);
        if ((err = put(SZ_CL_META_KEY, SZ_CL_META_KEY_LEN, v, sizeof(v), ud)))
            return err;
        p->meta_dirty = false;
    }
    return CM_OK;
}

typedef struct rd {
    const uint8_t *p, *end;
} rd_t;

static bool rd_need(rd_t *r, size_t n) { return (size_t)(r->end - r->p) >= n; }

static cm_err_t rd_str(sz_part_t *p, rd_t *r, uint32_t *id)
{
    if (!rd_need(r, 4))
        return CM_ERR_PARSE;
    uint32_t len = get_u32(r->p);
    r->p += 4;
    if (len == UINT32_MAX) {
        *id = 0;
        return CM_OK;
    }
    if (!rd_need(r, len) || memchr(r->p, 0, len))
        return CM_ERR_PARSE;
    *id = sz_str_intern(&p->strs, (const char *)r->p, len);
    r->p += len;
    return *id ? CM_OK : CM_ERR_NOMEM;
}

static cm_err_t apply_user(sz_part_t *p, const char *uid, size_t klen, const uint8_t *val,
                           size_t vlen)
{
    uint64_t h = cm_dedupe_hash(uid, klen);
    uint32_t uidx = sz_user_find(p, uid, klen, h);
    if (uidx != SZ_NIL)
        sz_user_drop(p, uidx);
    if (!val)
        return CM_OK;
    rd_t r = {val, val + vlen};
    if (!rd_need(&r, 10) || r.p[0] != SZ_CL_VERSION)
        return CM_ERR_PARSE;
    int64_t final_end = (int64_t)get_u64(r.p + 1);
    unsigned n = r.p[9];
    r.p += 10;
    if (n == 0 && (r.p != r.end || final_end == INT64_MIN))
        return CM_ERR_PARSE;
    if ((uidx = sz_user_get(p, uid, klen, h)) == SZ_NIL)
        return CM_ERR_NOMEM;
    sz_user_at(p, uidx)->final_end = final_end;
    cm_err_t err = CM_OK;
    for (unsigned k = 0; k < n; k++) {
        if (!rd_need(&r, SESS_FIXED)) {
            err = CM_ERR_PARSE;
            break;
        }
        uint32_t sidx = sz_sess_new(p);
        if (sidx == SZ_NIL) {
            err = CM_ERR_NOMEM;
            break;
        }
        sz_sess_t *s = sz_sess_at(p, sidx);
        const uint8_t *q = r.p;
        s->start = (int64_t)get_u64(q), q += 8;
        s->end = (int64_t)get_u64(q), q += 8;
        s->first_idh = get_u64(q), q += 8;
        s->emitted_first_idh = get_u64(q), q += 8;
        s->entry_ts = (int64_t)get_u64(q), q += 8;
        s->entry_idh = get_u64(q), q += 8;
        s->exit_ts = (int64_t)get_u64(q), q += 8;
        s->exit_idh = get_u64(q), q += 8;
        s->revenue = (int64_t)get_u64(q), q += 8;
        s->events = get_u32(q), q += 4;
        s->page_views = get_u32(q), q += 4;
        s->revision = (int32_t)get_u32(q), q += 4;
        s->flags = *q & (SZ_S_CONVERTED | SZ_S_CHANGED);
        r.p += SESS_FIXED;
        sz_user_insert_sess(p, sz_user_at(p, uidx), sidx);
        if ((err = rd_str(p, &r, &s->entry_url)) || (err = rd_str(p, &r, &s->exit_url)) ||
            (err = rd_str(p, &r, &s->device)) || (err = rd_str(p, &r, &s->country)))
            break;
    }
    if (!err && r.p != r.end)
        err = CM_ERR_PARSE;
    if (err) {
        sz_user_drop(p, uidx);
        return err;
    }
    sz_user_at(p, uidx)->flags |= SZ_U_LOGGED;
    return CM_OK;
}

cm_err_t sz_changelog_apply(sz_part_t *p, const void *key, size_t klen, const void *val,
                            size_t vlen)
{
    const uint8_t *k = key, *v = val;
    if (klen == 0)
        return CM_ERR_PARSE;
    if (k[0] != 0)
        return apply_user(p, key, klen, v, vlen);
    if (klen == SZ_CL_META_KEY_LEN && memcmp(key, SZ_CL_META_KEY, klen) == 0) {
        if (!v)
            return CM_OK;
        if (vlen != 17 || v[0] != SZ_CL_VERSION)
            return CM_ERR_PARSE;
        p->max_event = (int64_t)get_u64(v + 1);
        p->next_seq = get_u64(v + 9);
        return CM_OK;
    }
    if (klen == SZ_CL_DELTA_KEY_LEN && k[1] == 'd') {
        uint64_t seq = get_u64(k + 2);
        if (!v) {
            deltas_remove(p, seq);
            return CM_OK;
        }
        if (vlen < 9 || v[0] != SZ_CL_VERSION)
            return CM_ERR_PARSE;
        cm_err_t err = cm_dedupe_load(p->dedupe, v + 9, vlen - 9, CM_WATERMARK_NONE);
        if (!err)
            err = deltas_add(p, seq, (int64_t)get_u64(v + 1));
        if (!err && seq >= p->next_seq)
            p->next_seq = seq + 1;
        return err;
    }
    return CM_ERR_PARSE;
}

cm_err_t sz_changelog_restore_done(sz_part_t *p)
{
    for (uint32_t i = 0; i < p->users.used; i++) {
        sz_user_t *u = sz_user_at(p, i);
        if (!u->h)
            continue;
        u->timer = INT64_MAX;
        cm_err_t err = sz_user_arm(p, i);
        if (err)
            return err;
    }
    p->meta_dirty = false;
    return CM_OK;
}
