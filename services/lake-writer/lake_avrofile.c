/*
 * lake_avrofile.c: Avro object container files with a header of our own (see
 * lake_avrofile.h for why). Layout, from the Avro 1.11 specification:
 *
 *   header := "Obj" 0x01, meta: map<bytes> (blocks of count + pairs, ending
 *             with count 0), sync: fixed(16)
 *   block  := count: long, size: long (bytes of the serialised objects, after
 *             the codec), objects, sync
 */
#include "lake_avrofile.h"

#include <errno.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/random.h>
#include <unistd.h>

#include <zlib.h>

#define LW_AVRO_DEFAULT_BLOCK (256 * 1024)

struct lw_avrofile {
    avro_schema_t schema;
    avro_value_iface_t *iface;
    avro_value_t value;
    bool have_value;
    avro_writer_t mw; /* memory writer aimed at the block's free tail */
    lw_codec_t codec;
    size_t block_size;
    int fd;
    cm_buf_t out;   /* memory files: the whole file; fd files: unused */
    cm_buf_t block; /* encoded records of the open block */
    cm_buf_t zbuf;  /* deflated block */
    uint64_t block_count;
    uint64_t rows;
    uint64_t written; /* bytes already in the file (fd) or in out */
    uint8_t sync[LW_AVRO_SYNC_SIZE];
};

size_t lw_avro_encode_long(int64_t v, uint8_t *buf)
{
    uint64_t n = ((uint64_t)v << 1) ^ (uint64_t)(v >> 63);
    size_t i = 0;
    while (n & ~(uint64_t)0x7f) {
        buf[i++] = (uint8_t)((n & 0x7f) | 0x80);
        n >>= 7;
    }
    buf[i++] = (uint8_t)n;
    return i;
}

static cm_err_t put_long(cm_buf_t *b, int64_t v)
{
    uint8_t tmp[10];
    return cm_buf_append(b, tmp, lw_avro_encode_long(v, tmp));
}

static cm_err_t put_bytes(cm_buf_t *b, const void *p, size_t n)
{
    cm_err_t err = put_long(b, (int64_t)n);
    return err ? err : cm_buf_append(b, p, n);
}

cm_err_t lw_avro_header_encode(cm_buf_t *out, const lw_avro_meta_t *meta, size_t n_meta,
                               const uint8_t sync[LW_AVRO_SYNC_SIZE])
{
    size_t mark = out->len;
    cm_err_t err = cm_buf_append(out, LW_AVRO_MAGIC, 4);
    if (!err && n_meta)
        err = put_long(out, (int64_t)n_meta);
    for (size_t i = 0; !err && i < n_meta; i++) {
        err = put_bytes(out, meta[i].key, strlen(meta[i].key));
        if (!err)
            err = put_bytes(out, meta[i].value, meta[i].len);
    }
    if (!err)
        err = put_long(out, 0);
    if (!err)
        err = cm_buf_append(out, sync, LW_AVRO_SYNC_SIZE);
    if (err)
        out->len = mark;
    return err;
}

/* Reads a zig-zag long; 0 on success, -1 on truncation or over 10 bytes. */
static int get_long(const uint8_t *p, size_t n, size_t *pos, int64_t *v)
{
    uint64_t r = 0;
    for (int shift = 0; shift < 70; shift += 7) {
        if (*pos >= n)
            return -1;
        uint8_t c = p[(*pos)++];
        r |= (uint64_t)(c & 0x7f) << shift;
        if (!(c & 0x80)) {
            *v = (int64_t)(r >> 1) ^ -(int64_t)(r & 1);
            return 0;
        }
    }
    return -1;
}

static int get_bytes(const uint8_t *p, size_t n, size_t *pos, const uint8_t **s,
                     size_t *len)
{
    int64_t l;
    if (get_long(p, n, pos, &l) || l < 0 || l > LW_AVRO_MAX_META_BYTES ||
        (uint64_t)l > n - *pos)
        return -1;
    *s = p + *pos;
    *len = (size_t)l;
    *pos += (size_t)l;
    return 0;
}

cm_err_t lw_avro_header_decode(const void *data, size_t n, lw_avro_header_t *h)
{
    const uint8_t *p = data;
    size_t pos = 4;
    memset(h, 0, sizeof(*h));
    if (n < 4 || memcmp(p, LW_AVRO_MAGIC, 4) != 0)
        return CM_ERR_PARSE;
    for (;;) {
        int64_t count;
        if (get_long(p, n, &pos, &count))
            return CM_ERR_PARSE;
        if (count == 0)
            break;
        if (count < 0) { /* a block with its byte size: skip the size */
            int64_t bytes;
            if (get_long(p, n, &pos, &bytes) || count == INT64_MIN)
                return CM_ERR_PARSE;
            count = -count;
        }
        if (count > LW_AVRO_MAX_META || (size_t)count > LW_AVRO_MAX_META - h->n_meta)
            return CM_ERR_PARSE;
        for (int64_t i = 0; i < count; i++) {
            const uint8_t *k, *v;
            size_t kl, vl;
            if (get_bytes(p, n, &pos, &k, &kl) || get_bytes(p, n, &pos, &v, &vl))
                return CM_ERR_PARSE;
            lw_avro_kv_t *m = &h->meta[h->n_meta++];
            m->key = (const char *)k;
            m->key_len = kl;
            m->value = v;
            m->len = vl;
        }
    }
    if (n - pos < LW_AVRO_SYNC_SIZE)
        return CM_ERR_PARSE;
    memcpy(h->sync, p + pos, LW_AVRO_SYNC_SIZE);
    h->size = pos + LW_AVRO_SYNC_SIZE;
    return CM_OK;
}

const void *lw_avro_header_get(const lw_avro_header_t *h, const char *key, size_t *len)
{
    size_t kl = strlen(key);
    for (size_t i = 0; i < h->n_meta; i++) {
        if (h->meta[i].key_len == kl && memcmp(h->meta[i].key, key, kl) == 0) {
            if (len)
                *len = h->meta[i].len;
            return h->meta[i].value;
        }
    }
    return NULL;
}

static cm_err_t write_all(int fd, const void *p, size_t n)
{
    const uint8_t *c = p;
    while (n) {
        ssize_t w = write(fd, c, n);
        if (w < 0) {
            if (errno == EINTR)
                continue;
            return CM_ERR_IO;
        }
        c += w;
        n -= (size_t)w;
    }
    return CM_OK;
}

/* Sends bytes to the file's sink. */
static cm_err_t sink(lw_avrofile_t *w, const void *p, size_t n)
{
    cm_err_t err = w->fd >= 0 ? write_all(w->fd, p, n) : cm_buf_append(&w->out, p, n);
    if (!err)
        w->written += n;
    return err;
}

static cm_err_t deflate_block(lw_avrofile_t *w, const uint8_t **p, size_t *n)
{
    z_stream zs;
    memset(&zs, 0, sizeof(zs));
    if (deflateInit2(&zs, Z_DEFAULT_COMPRESSION, Z_DEFLATED, -15, 8, Z_DEFAULT_STRATEGY) !=
        Z_OK)
        return CM_ERR_NOMEM;
    uLong bound = deflateBound(&zs, (uLong)w->block.len);
    cm_buf_reset(&w->zbuf);
    cm_err_t err = cm_buf_reserve(&w->zbuf, bound);
    if (err) {
        deflateEnd(&zs);
        return err;
    }
    zs.next_in = w->block.data;
    zs.avail_in = (uInt)w->block.len;
    zs.next_out = w->zbuf.data;
    zs.avail_out = (uInt)bound;
    int rc = deflate(&zs, Z_FINISH);
    size_t out = bound - zs.avail_out;
    deflateEnd(&zs);
    if (rc != Z_STREAM_END)
        return CM_ERR_IO;
    w->zbuf.len = out;
    *p = w->zbuf.data;
    *n = out;
    return CM_OK;
}

cm_err_t lw_avrofile_flush(lw_avrofile_t *w)
{
    if (!w->block_count)
        return CM_OK;
    const uint8_t *p = w->block.data;
    size_t n = w->block.len;
    cm_err_t err = CM_OK;
    if (w->codec == LW_CODEC_DEFLATE)
        err = deflate_block(w, &p, &n);
    uint8_t hdr[20];
    size_t hl = 0;
    if (!err) {
        hl = lw_avro_encode_long((int64_t)w->block_count, hdr);
        hl += lw_avro_encode_long((int64_t)n, hdr + hl);
        err = sink(w, hdr, hl);
    }
    if (!err)
        err = sink(w, p, n);
    if (!err)
        err = sink(w, w->sync, LW_AVRO_SYNC_SIZE);
    if (!err) {
        cm_buf_reset(&w->block);
        w->block_count = 0;
    }
    return err;
}

lw_avrofile_t *lw_avrofile_new(const lw_avrofile_opts_t *opts, char *errstr,
                               size_t errstr_size)
{
    lw_avrofile_t *w = calloc(1, sizeof(*w));
    lw_avro_meta_t *meta = NULL;
    cm_buf_t hdr;
    cm_buf_init(&hdr, 0);
    if (!w) {
        snprintf(errstr, errstr_size, "out of memory");
        return NULL;
    }
    w->fd = opts->fd;
    w->codec = opts->codec;
    w->block_size = opts->block_size ? opts->block_size : LW_AVRO_DEFAULT_BLOCK;
    cm_buf_init(&w->out, 0);
    cm_buf_init(&w->block, 0);
    cm_buf_init(&w->zbuf, 0);
    if (avro_schema_from_json_length(opts->schema_json, strlen(opts->schema_json),
                                     &w->schema)) {
        snprintf(errstr, errstr_size, "bad Avro schema: %s", avro_strerror());
        goto fail;
    }
    w->iface = avro_generic_class_from_schema(w->schema);
    if (!w->iface || avro_generic_value_new(w->iface, &w->value)) {
        snprintf(errstr, errstr_size, "avro value: %s", avro_strerror());
        goto fail;
    }
    w->have_value = true;
    w->mw = avro_writer_memory("", 0);
    if (!w->mw) {
        snprintf(errstr, errstr_size, "out of memory");
        goto fail;
    }
    if (getrandom(w->sync, sizeof(w->sync), 0) != (ssize_t)sizeof(w->sync)) {
        snprintf(errstr, errstr_size, "getrandom: %s", strerror(errno));
        goto fail;
    }
    meta = calloc(opts->n_meta + 2, sizeof(*meta));
    if (!meta) {
        snprintf(errstr, errstr_size, "out of memory");
        goto fail;
    }
    const char *codec = w->codec == LW_CODEC_DEFLATE ? "deflate" : "null";
    meta[0] = (lw_avro_meta_t){"avro.schema", opts->schema_json, strlen(opts->schema_json)};
    meta[1] = (lw_avro_meta_t){"avro.codec", codec, strlen(codec)};
    for (size_t i = 0; i < opts->n_meta; i++)
        meta[i + 2] = opts->meta[i];
    if (lw_avro_header_encode(&hdr, meta, opts->n_meta + 2, w->sync) ||
        sink(w, hdr.data, hdr.len)) {
        snprintf(errstr, errstr_size, "writing the Avro header: %s", strerror(errno));
        goto fail;
    }
    free(meta);
    cm_buf_free(&hdr);
    return w;
fail:
    free(meta);
    cm_buf_free(&hdr);
    lw_avrofile_destroy(w);
    return NULL;
}

avro_value_t *lw_avrofile_value(lw_avrofile_t *w)
{
    avro_value_reset(&w->value);
    return &w->value;
}

static cm_err_t block_done(lw_avrofile_t *w)
{
    w->block_count++;
    w->rows++;
    return w->block.len >= w->block_size ? lw_avrofile_flush(w) : CM_OK;
}

cm_err_t lw_avrofile_append(lw_avrofile_t *w, avro_value_t *v)
{
    /* Encode straight into the free tail of the block buffer; when the datum
     * does not fit, avro-c reports ENOSPC and we grow and encode again. This
     * costs one traversal per record instead of avro_value_sizeof + write. */
    size_t room = 4096;
    for (;;) {
        cm_err_t err = cm_buf_reserve(&w->block, room);
        if (err)
            return err;
        size_t free_bytes = w->block.cap - w->block.len - 1;
        avro_writer_memory_set_dest(w->mw, (const char *)w->block.data + w->block.len,
                                    (int64_t)free_bytes);
        int rc = avro_value_write(w->mw, v);
        if (rc == 0) {
            w->block.len += (size_t)avro_writer_tell(w->mw);
            return block_done(w);
        }
        if (rc != ENOSPC || room > ((size_t)1 << 30))
            return CM_ERR_INVALID;
        room = free_bytes * 2 + 4096;
    }
}

cm_err_t lw_avrofile_append_encoded(lw_avrofile_t *w, const void *p, size_t n)
{
    cm_err_t err = cm_buf_append(&w->block, p, n);
    return err ? err : block_done(w);
}

uint64_t lw_avrofile_rows(const lw_avrofile_t *w) { return w->rows; }

uint64_t lw_avrofile_size(const lw_avrofile_t *w) { return w->written + w->block.len; }

cm_err_t lw_avrofile_finish(lw_avrofile_t *w, cm_buf_t *mem, uint64_t *size)
{
    cm_err_t err = lw_avrofile_flush(w);
    if (!err && size)
        *size = w->written;
    if (!err && w->fd < 0 && mem) {
        cm_buf_free(mem);
        *mem = w->out;
        cm_buf_init(&w->out, 0);
    }
    lw_avrofile_destroy(w);
    return err;
}

void lw_avrofile_destroy(lw_avrofile_t *w)
{
    if (!w)
        return;
    if (w->have_value)
        avro_value_decref(&w->value);
    if (w->iface)
        avro_value_iface_decref(w->iface);
    if (w->schema)
        avro_schema_decref(w->schema);
    if (w->mw)
        avro_writer_free(w->mw);
    cm_buf_free(&w->out);
    cm_buf_free(&w->block);
    cm_buf_free(&w->zbuf);
    free(w);
}
