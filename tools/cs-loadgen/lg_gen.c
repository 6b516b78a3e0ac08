/*
 * lg_gen.c: the simulated shop (see lg_gen.h).
 */
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "cm_event.h"
#include "lg_gen.h"

/* ------------------------------------------------------------- PRNG */

typedef struct lg_rng {
    uint64_t s[4];
} lg_rng_t;

static uint64_t lg_splitmix(uint64_t *x)
{
    uint64_t z = (*x += 0x9e3779b97f4a7c15ull);
    z = (z ^ (z >> 30)) * 0xbf58476d1ce4e5b9ull;
    z = (z ^ (z >> 27)) * 0x94d049bb133111ebull;
    return z ^ (z >> 31);
}

static void lg_rng_seed(lg_rng_t *r, uint64_t seed)
{
    for (int i = 0; i < 4; i++)
        r->s[i] = lg_splitmix(&seed);
}

static inline uint64_t lg_rotl(uint64_t x, int k) { return (x << k) | (x >> (64 - k)); }

/* xoshiro256** */
static uint64_t lg_u64(lg_rng_t *r)
{
    uint64_t *s = r->s;
    uint64_t res = lg_rotl(s[1] * 5, 7) * 9, t = s[1] << 17;
    s[2] ^= s[0];
    s[3] ^= s[1];
    s[1] ^= s[2];
    s[0] ^= s[3];
    s[2] ^= t;
    s[3] = lg_rotl(s[3], 45);
    return res;
}

static double lg_unit(lg_rng_t *r) { return (double)(lg_u64(r) >> 11) * 0x1.0p-53; }
static uint32_t lg_below(lg_rng_t *r, uint32_t n) { return (uint32_t)(lg_unit(r) * n); }
static int64_t lg_exp(lg_rng_t *r, double mean)
{
    return (int64_t)(-mean * log(1.0 - lg_unit(r)));
}

/* Zipf over n ranks by inverse CDF (binary search). */
typedef struct lg_zipf {
    double *cdf;
    uint32_t n;
} lg_zipf_t;

static int lg_zipf_init(lg_zipf_t *z, uint32_t n, double s)
{
    z->n = n;
    z->cdf = malloc(n * sizeof(double));
    if (!z->cdf)
        return -1;
    double sum = 0;
    for (uint32_t i = 0; i < n; i++)
        z->cdf[i] = (sum += 1.0 / pow(i + 1, s));
    for (uint32_t i = 0; i < n; i++)
        z->cdf[i] /= sum;
    return 0;
}

static uint32_t lg_zipf(const lg_zipf_t *z, lg_rng_t *r)
{
    double u = lg_unit(r);
    uint32_t lo = 0, hi = z->n - 1;
    while (lo < hi) {
        uint32_t mid = (lo + hi) / 2;
        if (z->cdf[mid] < u)
            lo = mid + 1;
        else
            hi = mid;
    }
    return lo;
}

/* ------------------------------------------------------------ catalog */

static const char *const lg_categories[] = {"electronics", "books",  "toys",   "garden",
                                            "fashion",     "sports", "beauty", "grocery",
                                            "home",        "music",  "games",  "office"};
#define LG_NCAT 12

static const struct {
    const char *ua;
    int weight;
} lg_agents[] = {
    {"Mozilla/5.0 (Windows NT 10.0; Win64; x64) AppleWebKit/537.36 (KHTML, like Gecko) "
     "Chrome/120.0.0.0 Safari/537.36", 30},
    {"Mozilla/5.0 (Macintosh; Intel Mac OS X 10_15_7) AppleWebKit/605.1.15 (KHTML, like "
     "Gecko) Version/17.1 Safari/605.1.15", 15},
    {"Mozilla/5.0 (X11; Linux x86_64; rv:121.0) Gecko/20100101 Firefox/121.0", 8},
    {"Mozilla/5.0 (iPhone; CPU iPhone OS 17_1 like Mac OS X) AppleWebKit/605.1.15 (KHTML, "
     "like Gecko) Version/17.1 Mobile/15E148 Safari/604.1", 18},
    {"Mozilla/5.0 (Linux; Android 14; Pixel 8) AppleWebKit/537.36 (KHTML, like Gecko) "
     "Chrome/120.0.0.0 Mobile Safari/537.36", 17},
    {"Mozilla/5.0 (iPad; CPU OS 17_1 like Mac OS X) AppleWebKit/605.1.15 (KHTML, like Gecko) "
     "Version/17.1 Mobile/15E148 Safari/604.1", 5},
    {"Mozilla/5.0 (Linux; Android 13; SM-X710) AppleWebKit/537.36 (KHTML, like Gecko) "
     "Chrome/120.0.0.0 Safari/537.36", 3},
    {"Mozilla/5.0 (compatible; Googlebot/2.1; +http://www.google.com/bot.html)", 3},
    {"curl/8.4.0", 1},
};
#define LG_NAGENTS (sizeof(lg_agents) / sizeof(lg_agents[0]))

static const struct {
    const char *country, *city;
    int weight;
} lg_places[] = {
    {"US", "New York", 14}, {"US", "Austin", 8},  {"DE", "Berlin", 9},   {"DE", "Munich", 4},
    {"GB", "London", 9},    {"FR", "Paris", 7},   {"IN", "Mumbai", 8},   {"BR", "Sao Paulo", 6},
    {"JP", "Tokyo", 7},     {"CA", "Toronto", 5}, {"ES", "Madrid", 4},   {"IT", "Milan", 4},
    {"NL", "Amsterdam", 3}, {"PL", "Warsaw", 3},  {"AU", "Sydney", 3},   {"SE", "Stockholm", 2},
};
#define LG_NPLACES (sizeof(lg_places) / sizeof(lg_places[0]))

static const char *const lg_referrers[] = {
    "https://www.google.com/", "https://www.bing.com/", "https://duckduckgo.com/",
    "https://www.facebook.com/", "https://t.co/x", "https://news.ycombinator.com/",
};
#define LG_NREF 6


#define LG_BASE_URL "https://shop.example.com"

/* ------------------------------------------------------------- users */

typedef enum { LG_ST_BROWSE = 0, LG_ST_PRODUCT, LG_ST_CART } lg_stage_t;

typedef struct lg_user {
    int64_t next_ms;   /* when the next event happens */
    int64_t last_ms;   /* event time of the last event */
    uint32_t session_no;
    int32_t left;      /* events left in the session; 0: between sessions */
    uint8_t stage;
    uint8_t agent, place;
    uint8_t ip_kind;   /* 0: none in the event, 1: IPv4, 2: IPv6 */
    uint32_t ip_seed;
    uint32_t product;  /* last product viewed */
    uint32_t cart;     /* product in the cart */
} lg_user_t;

#define LG_RING 1024 /* recent events a duplicate is copied from */

struct lg_gen {
    lg_gen_opts_t o;
    lg_rng_t flow, content;
    lg_zipf_t zurl, zprod;
    lg_user_t *users;
    uint32_t *heap; /* user indexes, min-heap on (next_ms, index) */
    int64_t clock;
    uint64_t count;
    int agent_total, place_total;
    bool dry; /* span replay: no content */
    cm_buf_t ring[LG_RING];
    int64_t ring_ts[LG_RING];
    uint32_t ring_n, ring_pos;
    uint64_t regular; /* regular (ok/ooo) events so far: a dup needs one */
};

const char *lg_kind_name(lg_kind_t k)
{
    static const char *const names[] = {"ok", "dup", "ooo", "late", "invalid"};
    return k < LG__KINDS ? names[k] : "?";
}

void lg_gen_opts_default(lg_gen_opts_t *o)
{
    memset(o, 0, sizeof(*o));
    o->seed = 1;
    o->users = 1000;
    o->think_ms = 20000;
    o->gap_ms = 2 * 3600 * 1000;
    o->session_events = 8;
    o->ooo_max_ms = 8000;
    o->late_ms = 20 * 60 * 1000;
    o->urls = 500;
    o->products = 2000;
    o->zipf_s = 1.1;
}

static bool lg_heap_less(const lg_gen_t *g, uint32_t a, uint32_t b)
{
    int64_t ta = g->users[a].next_ms, tb = g->users[b].next_ms;
    return ta < tb || (ta == tb && a < b);
}

static void lg_heap_down(lg_gen_t *g, uint32_t i)
{
    uint32_t n = g->o.users;
    for (;;) {
        uint32_t l = 2 * i + 1, r = l + 1, m = i;
        if (l < n && lg_heap_less(g, g->heap[l], g->heap[m]))
            m = l;
        if (r < n && lg_heap_less(g, g->heap[r], g->heap[m]))
            m = r;
        if (m == i)
            return;
        uint32_t t = g->heap[i];
        g->heap[i] = g->heap[m];
        g->heap[m] = t;
        i = m;
    }
}

static int lg_pick_weighted(lg_rng_t *r, int total, int n, const int *w)
{
    int x = (int)lg_below(r, (uint32_t)total);
    for (int i = 0; i < n; i++) {
        if (x < w[i])
            return i;
        x -= w[i];
    }
    return n - 1;
}

static int32_t lg_session_len(lg_gen_t *g)
{
    /* geometric with the configured mean, 1..200 */
    double p = 1.0 / (g->o.session_events > 1 ? g->o.session_events : 1);
    int32_t n = 1;
    while (n < 200 && lg_unit(&g->flow) > p)
        n++;
    return n;
}

/* between sessions: always more than the 30 min session gap */
static int64_t lg_session_gap(lg_gen_t *g)
{
    return 31 * 60 * 1000 + lg_exp(&g->flow, (double)g->o.gap_ms);
}

static int64_t lg_think(lg_gen_t *g)
{
    int64_t t = 500 + lg_exp(&g->flow, (double)g->o.think_ms);
    return t > 20 * 60 * 1000 ? 20 * 60 * 1000 : t; /* stays inside the session */
}

void lg_gen_destroy(lg_gen_t *g)
{
    if (!g)
        return;
    free(g->zurl.cdf);
    free(g->zprod.cdf);
    free(g->users);
    free(g->heap);
    for (int i = 0; i < LG_RING; i++)
        cm_buf_free(&g->ring[i]);
    free(g);
}

static lg_gen_t *lg_gen_make(const lg_gen_opts_t *o, bool dry)
{
    lg_gen_t *g = calloc(1, sizeof(*g));
    if (!g)
        return NULL;
    g->o = *o;
    if (g->o.users == 0)
        g->o.users = 1;
    g->dry = dry;
    lg_rng_seed(&g->flow, o->seed);
    lg_rng_seed(&g->content, o->seed ^ 0x5bd1e9955bd1e995ull);
    g->users = calloc(g->o.users, sizeof(*g->users));
    g->heap = calloc(g->o.users, sizeof(*g->heap));
    for (int i = 0; i < LG_RING; i++)
        cm_buf_init(&g->ring[i], 64 * 1024);
    if (!g->users || !g->heap ||
        (!dry && (lg_zipf_init(&g->zurl, o->urls ? o->urls : 1, o->zipf_s) ||
                  lg_zipf_init(&g->zprod, o->products ? o->products : 1, o->zipf_s)))) {
        lg_gen_destroy(g);
        return NULL;
    }
    int aw[LG_NAGENTS], pw[LG_NPLACES];
    for (size_t i = 0; i < LG_NAGENTS; i++)
        g->agent_total += aw[i] = lg_agents[i].weight;
    for (size_t i = 0; i < LG_NPLACES; i++)
        g->place_total += pw[i] = lg_places[i].weight;
    /* first sessions are spread over one mean gap so that users overlap */
    int64_t spread = g->o.gap_ms > 0 ? g->o.gap_ms : 1;
    for (uint32_t i = 0; i < g->o.users; i++) {
        lg_user_t *u = &g->users[i];
        u->next_ms = o->start_ms + (int64_t)(lg_unit(&g->flow) * (double)spread);
        u->agent = (uint8_t)lg_pick_weighted(&g->content, g->agent_total, LG_NAGENTS, aw);
        u->place = (uint8_t)lg_pick_weighted(&g->content, g->place_total, LG_NPLACES, pw);
        uint32_t k = lg_below(&g->content, 20);
        u->ip_kind = k < 8 ? 0 : k < 17 ? 1 : 2;
        u->ip_seed = (uint32_t)lg_u64(&g->content);
        g->heap[i] = i;
    }
    for (uint32_t i = g->o.users / 2 + 1; i-- > 0;)
        lg_heap_down(g, i);
    g->clock = o->start_ms;
    return g;
}

lg_gen_t *lg_gen_new(const lg_gen_opts_t *o) { return lg_gen_make(o, false); }

int64_t lg_gen_clock(const lg_gen_t *g) { return g->clock; }
uint64_t lg_gen_count(const lg_gen_t *g) { return g->count; }

/* ----------------------------------------------------------- writing */

typedef struct lg_ev {
    const char *type; /* NULL: leave out */
    char event_id[80];
    int64_t ts;
    uint32_t user;
    const char *url_path; /* relative, appended to LG_BASE_URL */
    char url_buf[96];
    bool with_url;
    uint32_t product;
    bool with_product;
    int quantity;
    bool with_price;
} lg_ev_t;

static void lg_uuid(lg_gen_t *g, char *buf, size_t size)
{
    uint64_t a = lg_u64(&g->content), b = lg_u64(&g->content);
    snprintf(buf, size, "%08x-%04x-4%03x-%04x-%012llx", (unsigned)(a >> 32),
             (unsigned)(a >> 16) & 0xffff, (unsigned)a & 0xfff,
             (unsigned)((b >> 48) & 0x3fff) | 0x8000,
             (unsigned long long)(b & 0xffffffffffffull));
}

static int64_t lg_price_cents(uint32_t product)
{
    /* a fixed price per product: the reference must be able to recompute it */
    uint64_t x = product * 2654435761u + 12345;
    return 199 + (int64_t)(x % 49800); /* 1.99 .. 499.99 */
}

static void lg_url_for(lg_gen_t *g, lg_ev_t *e)
{
    uint32_t r = lg_zipf(&g->zurl, &g->content);
    e->with_url = true;
    if (r == 0)
        snprintf(e->url_buf, sizeof(e->url_buf), "/");
    else if (r <= LG_NCAT)
        snprintf(e->url_buf, sizeof(e->url_buf), "/category/%s", lg_categories[r - 1]);
    else if (r == LG_NCAT + 1)
        snprintf(e->url_buf, sizeof(e->url_buf), "/cart");
    else if (r % 3 == 0)
        snprintf(e->url_buf, sizeof(e->url_buf), "/blog/post-%u", r);
    else if (r % 3 == 1)
        snprintf(e->url_buf, sizeof(e->url_buf), "/search?q=%u", r);
    else
        snprintf(e->url_buf, sizeof(e->url_buf), "/help/topic-%u", r);
}

static void lg_write(lg_gen_t *g, const lg_ev_t *e, int invalid, cm_buf_t *out)
{
    const lg_user_t *u = &g->users[e->user];
    char ts[40];
    cm_buf_putc(out, '{');
    if (invalid != 0) /* 0: no event_id */
        cm_buf_printf(out, "\"event_id\":\"%s\",", e->event_id);
    if (invalid == 2)
        cm_buf_append_str(out, "\"timestamp\":\"not-a-time\",");
    else if (invalid == 6)
        cm_buf_append_str(out, "\"timestamp\":\"2999-01-01T00:00:00Z\",");
    else if (lg_below(&g->content, 5) == 0)
        cm_buf_printf(out, "\"timestamp\":%lld,", (long long)e->ts);
    else {
        cm_ts_format_rfc3339(e->ts, ts, sizeof(ts));
        cm_buf_printf(out, "\"timestamp\":\"%s\",", ts);
    }
    if (invalid != 8)
        cm_buf_printf(out, "\"user_id\":\"u%07u\",", e->user);
    cm_buf_printf(out, "\"event_type\":\"%s\"", invalid == 1 ? "checkout_started" : e->type);
    if (e->with_url && invalid != 3)
        cm_buf_printf(out, ",\"page_url\":\"" LG_BASE_URL "%s\"", e->url_buf);
    cm_buf_printf(out, ",\"session_id\":\"s-%u-%u\"", e->user, u->session_no);
    if (e->type && strcmp(e->type, "page_view") == 0 && lg_below(&g->content, 4) == 0)
        cm_buf_printf(out, ",\"referrer\":\"%s\"", lg_referrers[lg_below(&g->content, LG_NREF)]);
    cm_buf_printf(out, ",\"user_agent\":\"%s\"", lg_agents[u->agent].ua);
    if (u->ip_kind == 1)
        cm_buf_printf(out, ",\"ip_address\":\"%u.%u.%u.%u\"", 11 + (u->ip_seed >> 24) % 200,
                      (u->ip_seed >> 16) & 0xff, (u->ip_seed >> 8) & 0xff,
                      1 + (u->ip_seed & 0xff) % 254);
    else if (u->ip_kind == 2)
        cm_buf_printf(out, ",\"ip_address\":\"2001:db8:%x:%x::%x\"", u->ip_seed >> 16,
                      u->ip_seed & 0xffff, 1 + (u->ip_seed & 0xfff));
    cm_buf_printf(out, ",\"geo\":{\"country\":\"%s\",\"city\":\"%s\"}",
                  lg_places[u->place].country, lg_places[u->place].city);
    if (e->with_product) {
        int64_t c = lg_price_cents(e->product);
        cm_buf_printf(out, ",\"metadata\":{\"product_id\":\"p%05u\",\"category\":\"%s\"",
                      e->product, lg_categories[e->product % LG_NCAT]);
        if (e->quantity || invalid == 5)
            cm_buf_printf(out, ",\"quantity\":%d", invalid == 5 ? 0 : e->quantity);
        if (e->with_price && invalid != 4)
            cm_buf_printf(out, ",\"price\":%lld.%02lld", (long long)(c / 100),
                          (long long)(c % 100));
        cm_buf_putc(out, '}');
    }
    cm_buf_putc(out, '}');
}

/* The regular next event of user u at the current clock; moves u on. */
static void lg_step_user(lg_gen_t *g, uint32_t ui, lg_ev_t *e)
{
    lg_user_t *u = &g->users[ui];
    memset(e, 0, sizeof(*e));
    e->user = ui;
    e->ts = u->next_ms;
    if (u->left == 0) { /* a new session opens with a page view */
        u->left = lg_session_len(g);
        u->session_no++;
        u->stage = LG_ST_BROWSE;
        e->type = "page_view";
    } else {
        double x = lg_unit(&g->flow);
        if (u->stage == LG_ST_CART && x < 0.30)
            e->type = "purchase";
        else if (u->stage >= LG_ST_PRODUCT && x < 0.45)
            e->type = "add_to_cart";
        else if (x < 0.65)
            e->type = "product_view";
        else if (x < 0.85)
            e->type = "page_view";
        else if (x < 0.95)
            e->type = "click";
        else
            e->type = "custom:search";
    }
    /* funnel state (flow: it decides the session's length) */
    if (strcmp(e->type, "product_view") == 0)
        u->stage = u->stage == LG_ST_CART ? LG_ST_CART : LG_ST_PRODUCT;
    else if (strcmp(e->type, "add_to_cart") == 0)
        u->stage = LG_ST_CART;
    else if (strcmp(e->type, "purchase") == 0) {
        u->stage = LG_ST_BROWSE;
        if (u->left > 2)
            u->left = 2;
    }
    u->left--;
    u->last_ms = e->ts;
    u->next_ms = e->ts + (u->left > 0 ? lg_think(g) : lg_session_gap(g));
    lg_heap_down(g, 0);

    if (g->dry)
        return;
    lg_uuid(g, e->event_id, sizeof(e->event_id));
    if (strcmp(e->type, "page_view") == 0 || strcmp(e->type, "click") == 0 ||
        strcmp(e->type, "custom:search") == 0) {
        lg_url_for(g, e);
    } else {
        if (strcmp(e->type, "product_view") == 0)
            u->product = lg_zipf(&g->zprod, &g->content);
        else if (strcmp(e->type, "add_to_cart") == 0)
            u->cart = u->product;
        e->product = strcmp(e->type, "purchase") == 0 ? u->cart : u->product;
        e->with_product = true;
        e->with_url = true;
        snprintf(e->url_buf, sizeof(e->url_buf), "/product/p%05u", e->product);
        if (strcmp(e->type, "purchase") == 0) {
            e->with_price = true;
            e->quantity = 1 + (int)lg_below(&g->content, 3);
        } else if (strcmp(e->type, "add_to_cart") == 0) {
            e->quantity = 1 + (int)lg_below(&g->content, 3);
            e->with_price = true;
        }
    }
}

static void lg_ring_put(lg_gen_t *g, const void *p, size_t n, int64_t ts)
{
    cm_buf_t *b = &g->ring[g->ring_pos];
    cm_buf_reset(b);
    g->ring_ts[g->ring_pos] = ts;
    if (cm_buf_append(b, p, n) == CM_OK) {
        g->ring_pos = (g->ring_pos + 1) % LG_RING;
        if (g->ring_n < LG_RING)
            g->ring_n++;
    }
}

lg_kind_t lg_gen_next(lg_gen_t *g, cm_buf_t *out, int64_t *ts_ms)
{
    const lg_gen_opts_t *o = &g->o;
    double x = lg_unit(&g->flow);
    lg_kind_t kind = LG_OK;
    if (x < o->f_dup)
        kind = g->regular ? LG_DUP : LG_OK;
    else if ((x -= o->f_dup) < o->f_ooo)
        kind = LG_OOO;
    else if ((x -= o->f_ooo) < o->f_late)
        kind = LG_LATE;
    else if ((x -= o->f_late) < o->f_invalid)
        kind = LG_INVALID;
    g->count++;

    if (kind == LG_DUP) {
        if (g->dry)
            return kind;
        uint32_t back = lg_below(&g->content, g->ring_n);
        uint32_t i = (g->ring_pos + LG_RING - 1 - back) % LG_RING;
        cm_buf_append(out, g->ring[i].data, g->ring[i].len);
        *ts_ms = g->ring_ts[i];
        return kind;
    }
    lg_ev_t e;
    if (kind == LG_LATE || kind == LG_INVALID) {
        /* an extra event of a random user; the user's own flow is untouched */
        if (g->dry)
            return kind;
        uint32_t ui = lg_below(&g->content, o->users);
        memset(&e, 0, sizeof(e));
        e.user = ui;
        e.type = "page_view";
        lg_uuid(g, e.event_id, sizeof(e.event_id));
        lg_url_for(g, &e);
        e.ts = kind == LG_LATE ? g->clock - o->late_ms : g->clock;
        int inv = -1;
        if (kind == LG_INVALID) {
            inv = (int)lg_below(&g->content, 9);
            if (inv == 4 || inv == 5) { /* purchase rules need a purchase */
                e.type = "purchase";
                e.product = lg_zipf(&g->zprod, &g->content);
                e.with_product = e.with_price = true;
                e.quantity = 1;
            }
            if (inv == 7) /* event_id one char over 64 */
                snprintf(e.event_id, sizeof(e.event_id), "%s-%s", "0123456789abcdef0123",
                         "0123456789abcdef0123456789abcdef0123456789ab");
        }
        lg_write(g, &e, inv, out);
        *ts_ms = e.ts;
        return kind;
    }
    uint32_t ui = g->heap[0];
    g->clock = g->users[ui].next_ms;
    g->regular++;
    lg_step_user(g, ui, &e);
    if (g->dry)
        return kind;
    if (kind == LG_OOO)
        e.ts -= 1000 + (int64_t)lg_below(&g->content, (uint32_t)(o->ooo_max_ms > 1000
                                                                     ? o->ooo_max_ms - 1000
                                                                     : 1));
    size_t start = out->len;
    lg_write(g, &e, -1, out);
    lg_ring_put(g, out->data + start, out->len - start, e.ts);
    *ts_ms = e.ts;
    return kind;
}

int64_t lg_gen_span(const lg_gen_opts_t *o, uint64_t count)
{
    lg_gen_opts_t d = *o;
    d.start_ms = 0;
    lg_gen_t *g = lg_gen_make(&d, true);
    if (!g)
        return 0;
    int64_t ts;
    for (uint64_t i = 0; i < count; i++)
        lg_gen_next(g, NULL, &ts);
    int64_t span = g->clock;
    lg_gen_destroy(g);
    return span;
}
