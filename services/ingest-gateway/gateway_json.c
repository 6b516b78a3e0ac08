/*
 * gateway_json.c: strict JSON -> jansson values (see gateway_json.h).
 * Recursive descent; recursion is bounded by max_depth.
 */
#include <errno.h>
#include <pthread.h>
#include <stdbool.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "gateway_json.h"

typedef struct gw_jp {
    const char *p;
    size_t n, i;
    int max_depth;
    char *err;
    size_t errsz;
    char small[512]; /* unescaped string scratch; longer ones are malloc'd */
} gw_jp_t;

static void gw_jp_fail(gw_jp_t *j, const char *what)
{
    if (j->err && !j->err[0])
        snprintf(j->err, j->errsz, "%s at byte %zu", what, j->i);
}

static inline void gw_jp_ws(gw_jp_t *j)
{
    while (j->i < j->n) {
        char c = j->p[j->i];
        if (c != ' ' && c != '\t' && c != '\n' && c != '\r')
            break;
        j->i++;
    }
}

/* Length of a valid UTF-8 sequence at s (n bytes left), 0 if invalid. */
static size_t gw_utf8_len(const unsigned char *s, size_t n)
{
    unsigned char c = s[0];
    if (c < 0x80)
        return 1;
    if (c < 0xc2 || c > 0xf4)
        return 0;
    if (c < 0xe0) {
        if (n < 2 || (s[1] & 0xc0) != 0x80)
            return 0;
        return 2;
    }
    if (c < 0xf0) {
        if (n < 3 || (s[1] & 0xc0) != 0x80 || (s[2] & 0xc0) != 0x80)
            return 0;
        if (c == 0xe0 && s[1] < 0xa0)
            return 0; /* overlong */
        if (c == 0xed && s[1] >= 0xa0)
            return 0; /* surrogate */
        return 3;
    }
    if (n < 4 || (s[1] & 0xc0) != 0x80 || (s[2] & 0xc0) != 0x80 || (s[3] & 0xc0) != 0x80)
        return 0;
    if (c == 0xf0 && s[1] < 0x90)
        return 0; /* overlong */
    if (c == 0xf4 && s[1] >= 0x90)
        return 0; /* > U+10FFFF */
    return 4;
}

/* 1 for bytes that need no attention inside a string: ASCII from 0x20 up,
 * except '"' and '\\'. Filled once (gw_json_parse). */
static unsigned char gw_plain[256];

static void gw_plain_init(void)
{
    for (int c = 0x20; c < 0x80; c++)
        gw_plain[c] = c != '"' && c != '\\';
}

/* Whether any of the 8 bytes at s is a control byte, '"', '\\' or >= 0x80
 * (bit tricks of "hasless"/"haszero"; a false positive only sends the word
 * to the byte loop). */
static inline bool gw_swar_special(const char *s)
{
    uint64_t v;
    memcpy(&v, s, 8);
    const uint64_t ones = 0x0101010101010101ull, high = 0x8080808080808080ull;
    uint64_t ctl = (v - ones * 0x20) & ~v & high;
    uint64_t q = v ^ (ones * '"'), bs = v ^ (ones * '\\');
    uint64_t quote = (q - ones) & ~q & high, back = (bs - ones) & ~bs & high;
    return (ctl | quote | back | (v & high)) != 0;
}

static int gw_hex4(const char *s)
{
    int v = 0;
    for (int k = 0; k < 4; k++) {
        char c = s[k];
        v <<= 4;
        if (c >= '0' && c <= '9')
            v |= c - '0';
        else if (c >= 'a' && c <= 'f')
            v |= c - 'a' + 10;
        else if (c >= 'A' && c <= 'F')
            v |= c - 'A' + 10;
        else
            return -1;
    }
    return v;
}

static size_t gw_put_utf8(char *o, uint32_t cp)
{
    if (cp < 0x80) {
        o[0] = (char)cp;
        return 1;
    }
    if (cp < 0x800) {
        o[0] = (char)(0xc0 | (cp >> 6));
        o[1] = (char)(0x80 | (cp & 0x3f));
        return 2;
    }
    if (cp < 0x10000) {
        o[0] = (char)(0xe0 | (cp >> 12));
        o[1] = (char)(0x80 | ((cp >> 6) & 0x3f));
        o[2] = (char)(0x80 | (cp & 0x3f));
        return 3;
    }
    o[0] = (char)(0xf0 | (cp >> 18));
    o[1] = (char)(0x80 | ((cp >> 12) & 0x3f));
    o[2] = (char)(0x80 | ((cp >> 6) & 0x3f));
    o[3] = (char)(0x80 | (cp & 0x3f));
    return 4;
}

/*
 * Parses a string at p[i] == '"'. On success *out points to the unescaped
 * bytes (inside the input when there was no escape, else in j->small or a
 * malloc'd block returned in *heap) and *len is their length.
 */
static bool gw_jp_string(gw_jp_t *j, const char **out, size_t *len, char **heap)
{
    const char *p = j->p;
    size_t i = ++j->i, start = i;
    bool esc = false;
    /* first pass: find the end, check bytes, note escapes */
    while (i < j->n) {
        /* the common case first: a run of plain ASCII, 8 bytes a step */
        while (i + 8 <= j->n && !gw_swar_special(p + i))
            i += 8;
        while (i < j->n && gw_plain[(unsigned char)p[i]])
            i++;
        if (i >= j->n)
            break;
        unsigned char c = (unsigned char)p[i];
        if (c == '"')
            break;
        if (c < 0x20) {
            j->i = i;
            gw_jp_fail(j, "control character in string");
            return false;
        }
        if (c == '\\') {
            esc = true;
            i += 2;
            continue;
        }
        if (c >= 0x80) {
            size_t l = gw_utf8_len((const unsigned char *)p + i, j->n - i);
            if (!l) {
                j->i = i;
                gw_jp_fail(j, "invalid UTF-8 in string");
                return false;
            }
            i += l;
            continue;
        }
        i++;
    }
    if (i >= j->n) {
        j->i = j->n;
        gw_jp_fail(j, "unterminated string");
        return false;
    }
    size_t end = i;
    j->i = end + 1;
    *heap = NULL;
    if (!esc) {
        *out = p + start;
        *len = end - start;
        return true;
    }
    char *o = end - start <= sizeof(j->small) ? j->small : (*heap = malloc(end - start));
    if (!o) {
        gw_jp_fail(j, "out of memory");
        return false;
    }
    size_t k = 0;
    for (i = start; i < end;) {
        char c = p[i];
        if (c != '\\') {
            o[k++] = c;
            i++;
            continue;
        }
        char e = p[i + 1];
        i += 2;
        switch (e) {
        case '"': o[k++] = '"'; break;
        case '\\': o[k++] = '\\'; break;
        case '/': o[k++] = '/'; break;
        case 'b': o[k++] = '\b'; break;
        case 'f': o[k++] = '\f'; break;
        case 'n': o[k++] = '\n'; break;
        case 'r': o[k++] = '\r'; break;
        case 't': o[k++] = '\t'; break;
        case 'u': {
            int v = i + 4 <= end ? gw_hex4(p + i) : -1;
            if (v < 0)
                goto bad_escape;
            i += 4;
            uint32_t cp = (uint32_t)v;
            if (cp >= 0xd800 && cp <= 0xdbff) {
                int lo = i + 6 <= end && p[i] == '\\' && p[i + 1] == 'u' ? gw_hex4(p + i + 2) : -1;
                if (lo < 0xdc00 || lo > 0xdfff)
                    goto bad_escape;
                i += 6;
                cp = 0x10000 + ((cp - 0xd800) << 10) + ((uint32_t)lo - 0xdc00);
            } else if (cp >= 0xdc00 && cp <= 0xdfff) {
                goto bad_escape;
            }
            if (cp == 0) {
                j->i = i;
                gw_jp_fail(j, "\\u0000 is not allowed");
                goto fail;
            }
            k += gw_put_utf8(o + k, cp); /* never longer than its escape */
            break;
        }
        default:
            goto bad_escape;
        }
    }
    *out = o;
    *len = k;
    return true;
bad_escape:
    j->i = i;
    gw_jp_fail(j, "invalid escape in string");
fail:
    free(*heap);
    *heap = NULL;
    return false;
}

static json_t *gw_jp_number(gw_jp_t *j)
{
    const char *p = j->p;
    size_t i = j->i, start = i;
    bool real = false;
    if (i < j->n && p[i] == '-')
        i++;
    if (i < j->n && p[i] == '0')
        i++;
    else if (i < j->n && p[i] >= '1' && p[i] <= '9')
        while (i < j->n && p[i] >= '0' && p[i] <= '9')
            i++;
    else
        goto bad;
    if (i < j->n && p[i] == '.') {
        real = true;
        i++;
        if (i >= j->n || p[i] < '0' || p[i] > '9')
            goto bad;
        while (i < j->n && p[i] >= '0' && p[i] <= '9')
            i++;
    }
    if (i < j->n && (p[i] == 'e' || p[i] == 'E')) {
        real = true;
        i++;
        if (i < j->n && (p[i] == '+' || p[i] == '-'))
            i++;
        if (i >= j->n || p[i] < '0' || p[i] > '9')
            goto bad;
        while (i < j->n && p[i] >= '0' && p[i] <= '9')
            i++;
    }
    char buf[64];
    size_t len = i - start;
    char *s = len < sizeof(buf) ? buf : malloc(len + 1);
    if (!s) {
        gw_jp_fail(j, "out of memory");
        return NULL;
    }
    memcpy(s, p + start, len);
    s[len] = '\0';
    json_t *v = NULL;
    errno = 0;
    if (!real) {
        long long x = strtoll(s, NULL, 10);
        if (errno == ERANGE)
            gw_jp_fail(j, "too big integer");
        else
            v = json_integer((json_int_t)x);
    } else {
        double d = strtod(s, NULL);
        if (errno == ERANGE && (d > 1 || d < -1))
            gw_jp_fail(j, "real number overflow");
        else
            v = json_real(d);
    }
    if (s != buf)
        free(s);
    j->i = i;
    return v;
bad:
    j->i = i;
    gw_jp_fail(j, "invalid number");
    return NULL;
}

static json_t *gw_jp_value(gw_jp_t *j, int depth);

static json_t *gw_jp_object(gw_jp_t *j, int depth)
{
    json_t *o = json_object();
    if (!o)
        return NULL;
    j->i++; /* { */
    gw_jp_ws(j);
    if (j->i < j->n && j->p[j->i] == '}') {
        j->i++;
        return o;
    }
    for (;;) {
        gw_jp_ws(j);
        if (j->i >= j->n || j->p[j->i] != '"') {
            gw_jp_fail(j, "string or '}' expected");
            goto fail;
        }
        const char *k;
        size_t klen;
        char *heap;
        if (!gw_jp_string(j, &k, &klen, &heap))
            goto fail;
        /* jansson keys are C strings: a key with NUL cannot exist (refused
         * above), copy to terminate */
        char kb[256];
        char *key = klen < sizeof(kb) ? kb : malloc(klen + 1);
        if (!key) {
            free(heap);
            gw_jp_fail(j, "out of memory");
            goto fail;
        }
        memcpy(key, k, klen);
        key[klen] = '\0';
        free(heap);
        if (json_object_get(o, key)) {
            if (key != kb)
                free(key);
            gw_jp_fail(j, "duplicate object key");
            goto fail;
        }
        gw_jp_ws(j);
        if (j->i >= j->n || j->p[j->i] != ':') {
            if (key != kb)
                free(key);
            gw_jp_fail(j, "':' expected");
            goto fail;
        }
        j->i++;
        json_t *v = gw_jp_value(j, depth);
        if (!v) {
            if (key != kb)
                free(key);
            goto fail;
        }
        int rc = json_object_set_new_nocheck(o, key, v);
        if (key != kb)
            free(key);
        if (rc) {
            gw_jp_fail(j, "out of memory");
            goto fail;
        }
        gw_jp_ws(j);
        if (j->i < j->n && j->p[j->i] == ',') {
            j->i++;
            continue;
        }
        if (j->i < j->n && j->p[j->i] == '}') {
            j->i++;
            return o;
        }
        gw_jp_fail(j, "',' or '}' expected");
        goto fail;
    }
fail:
    json_decref(o);
    return NULL;
}

static json_t *gw_jp_array(gw_jp_t *j, int depth)
{
    json_t *a = json_array();
    if (!a)
        return NULL;
    j->i++; /* [ */
    gw_jp_ws(j);
    if (j->i < j->n && j->p[j->i] == ']') {
        j->i++;
        return a;
    }
    for (;;) {
        json_t *v = gw_jp_value(j, depth);
        if (!v || json_array_append_new(a, v)) {
            gw_jp_fail(j, "out of memory");
            json_decref(a);
            return NULL;
        }
        gw_jp_ws(j);
        if (j->i < j->n && j->p[j->i] == ',') {
            j->i++;
            continue;
        }
        if (j->i < j->n && j->p[j->i] == ']') {
            j->i++;
            return a;
        }
        gw_jp_fail(j, "',' or ']' expected");
        json_decref(a);
        return NULL;
    }
}

static bool gw_jp_word(gw_jp_t *j, const char *w, size_t n)
{
    if (j->n - j->i >= n && memcmp(j->p + j->i, w, n) == 0) {
        j->i += n;
        return true;
    }
    gw_jp_fail(j, "invalid token");
    return false;
}

static json_t *gw_jp_value(gw_jp_t *j, int depth)
{
    gw_jp_ws(j);
    if (j->i >= j->n) {
        gw_jp_fail(j, "unexpected end of input");
        return NULL;
    }
    char c = j->p[j->i];
    switch (c) {
    case '{':
    case '[':
        if (depth + 1 > j->max_depth) {
            gw_jp_fail(j, "maximum nesting depth exceeded");
            return NULL;
        }
        return c == '{' ? gw_jp_object(j, depth + 1) : gw_jp_array(j, depth + 1);
    case '"': {
        const char *s;
        size_t len;
        char *heap;
        if (!gw_jp_string(j, &s, &len, &heap))
            return NULL;
        json_t *v = json_stringn_nocheck(s, len); /* checked above */
        free(heap);
        if (!v)
            gw_jp_fail(j, "out of memory");
        return v;
    }
    case 't':
        return gw_jp_word(j, "true", 4) ? json_true() : NULL;
    case 'f':
        return gw_jp_word(j, "false", 5) ? json_false() : NULL;
    case 'n':
        return gw_jp_word(j, "null", 4) ? json_null() : NULL;
    default:
        if (c == '-' || (c >= '0' && c <= '9'))
            return gw_jp_number(j);
        gw_jp_fail(j, "invalid token");
        return NULL;
    }
}

json_t *gw_json_parse(const char *p, size_t n, int max_depth, char *errstr, size_t errstr_size)
{
    static pthread_once_t once = PTHREAD_ONCE_INIT;
    pthread_once(&once, gw_plain_init);
    gw_jp_t j = {.p = p, .n = n, .i = 0, .max_depth = max_depth, .err = errstr,
                 .errsz = errstr_size};
    if (errstr && errstr_size)
        errstr[0] = '\0';
    json_t *v = gw_jp_value(&j, 0);
    if (!v)
        return NULL;
    gw_jp_ws(&j);
    if (j.i != n) {
        gw_jp_fail(&j, "end of input expected");
        json_decref(v);
        return NULL;
    }
    return v;
}

/* ------------------------------------------------------------- arena */

#define GW_ARENA_SIZE (512 * 1024)

typedef struct gw_arena {
    char *base;
    size_t used;
    bool on;
} gw_arena_t;

static __thread gw_arena_t gw_arena;
static pthread_key_t gw_arena_key; /* frees a thread's arena when it exits */
static pthread_once_t gw_arena_once = PTHREAD_ONCE_INIT;

static void gw_arena_key_init(void)
{
    pthread_key_create(&gw_arena_key, free);
}

static void *gw_arena_malloc(size_t n)
{
    gw_arena_t *a = &gw_arena;
    if (a->on) {
        size_t need = (n + 15) & ~(size_t)15;
        if (need <= GW_ARENA_SIZE - a->used) {
            void *p = a->base + a->used;
            a->used += need;
            return p;
        }
    }
    return malloc(n);
}

static void gw_arena_free(void *p)
{
    gw_arena_t *a = &gw_arena;
    if (a->base && (char *)p >= a->base && (char *)p < a->base + GW_ARENA_SIZE)
        return; /* released in bulk by gw_json_arena_end */
    free(p);
}

void gw_json_arena_install(void)
{
    json_set_alloc_funcs(gw_arena_malloc, gw_arena_free);
}

void gw_json_arena_begin(void)
{
    gw_arena_t *a = &gw_arena;
    json_malloc_t cur_m;
    json_free_t cur_f;
    json_get_alloc_funcs(&cur_m, &cur_f);
    if (cur_m != gw_arena_malloc)
        return; /* not installed: plain malloc */
    if (!a->base) {
        /* per thread, kept for its life, freed by the key's destructor */
        pthread_once(&gw_arena_once, gw_arena_key_init);
        a->base = malloc(GW_ARENA_SIZE);
        if (a->base)
            pthread_setspecific(gw_arena_key, a->base);
    }
    a->used = 0;
    a->on = a->base != NULL;
}

void gw_json_arena_end(void)
{
    gw_arena.on = false;
    gw_arena.used = 0;
}
