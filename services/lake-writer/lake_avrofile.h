/*
 * lake_avrofile.h: the Avro object container file writer of the lake.
 *
 * Why a writer of our own: avro-c 1.11 drops `field-id`, `logicalType`,
 * `adjust-to-utc`, `element-id`, `key-id`... from the schema it writes into a
 * container header (it serialises its parsed schema, not the text), and it has
 * no API for header metadata. Iceberg readers need both: field ids to map
 * columns, and the `schema`, `partition-spec`, `format-version`, `content`...
 * keys in manifests. So the header (magic, metadata map, sync marker) and the
 * block framing (count, size, data, sync) are written here, byte for byte as
 * the Avro 1.11 specification says; avro-c encodes the records themselves
 * (avro_value_write into the block buffer).
 *
 * A file goes either to a file descriptor (data files, streamed block by
 * block) or to memory (manifests, manifest lists: small, then handed to the
 * storage layer whole).
 */
#ifndef LAKE_AVROFILE_H
#define LAKE_AVROFILE_H

#include <stddef.h>
#include <stdint.h>

#include <avro.h>

#include "cm_buf.h"
#include "cm_err.h"

#define LW_AVRO_MAGIC "Obj\x01"
#define LW_AVRO_SYNC_SIZE 16
/* Hard caps of what lw_avro_header_decode accepts (outside input). */
#define LW_AVRO_MAX_META 64
#define LW_AVRO_MAX_META_BYTES (4 * 1024 * 1024)

typedef enum lw_codec {
    LW_CODEC_NULL = 0,
    LW_CODEC_DEFLATE, /* raw deflate (RFC 1951), as the Avro spec says */
} lw_codec_t;

/* One metadata entry. value is bytes (not necessarily NUL-terminated). */
typedef struct lw_avro_meta {
    const char *key;
    const void *value;
    size_t len;
} lw_avro_meta_t;

/* One decoded entry: key and value point into the decoded bytes. */
typedef struct lw_avro_kv {
    const char *key; /* not NUL-terminated */
    size_t key_len;
    const void *value;
    size_t len;
} lw_avro_kv_t;

/* A decoded header. */
typedef struct lw_avro_header {
    lw_avro_kv_t meta[LW_AVRO_MAX_META];
    size_t n_meta;
    uint8_t sync[LW_AVRO_SYNC_SIZE];
    size_t size; /* header bytes, including the sync marker */
} lw_avro_header_t;

/*
 * Appends a container header to `out`: magic, the metadata map (one block
 * with every entry, then the 0 terminator), the sync marker. Keys must be
 * unique; the caller gives avro.schema and avro.codec like any other entry.
 */
cm_err_t lw_avro_header_encode(cm_buf_t *out, const lw_avro_meta_t *meta, size_t n_meta,
                               const uint8_t sync[LW_AVRO_SYNC_SIZE]);

/*
 * Parses a header from p[0..n). CM_OK and *h filled (pointing into p);
 * CM_ERR_PARSE on bad magic, truncation, a negative/oversized length, more
 * than LW_AVRO_MAX_META entries.
 */
cm_err_t lw_avro_header_decode(const void *p, size_t n, lw_avro_header_t *h);

/* The value of `key` in a decoded header, or NULL (and *len untouched). */
const void *lw_avro_header_get(const lw_avro_header_t *h, const char *key, size_t *len);

/* Avro's zig-zag varint of a long into buf (>= 10 bytes); returns the length. */
size_t lw_avro_encode_long(int64_t v, uint8_t *buf);

typedef struct lw_avrofile lw_avrofile_t;

typedef struct lw_avrofile_opts {
    const char *schema_json;    /* required: the exact schema text for the header;
                                 * avro-c parses it for encoding */
    const lw_avro_meta_t *meta; /* extra header entries (no avro.* keys), may be NULL */
    size_t n_meta;
    lw_codec_t codec;
    size_t block_size;          /* 0: 256 KiB of encoded records per block */
    int fd;                     /* >= 0: write to this fd (the writer does not
                                 * close it); < 0: write to memory */
} lw_avrofile_opts_t;

/*
 * Starts a file: parses the schema, picks a random sync marker and writes the
 * header. Everything in opts is copied or written out before the call
 * returns. NULL + errstr on a bad schema or a failed write.
 */
lw_avrofile_t *lw_avrofile_new(const lw_avrofile_opts_t *opts, char *errstr,
                               size_t errstr_size);

/* The writer's reusable record value, reset, for the caller to fill before
 * lw_avrofile_append(). Owned by the writer. */
avro_value_t *lw_avrofile_value(lw_avrofile_t *w);

/* Encodes the value of lw_avrofile_value() (or any value of the same schema)
 * into the current block; writes the block out when it is full. */
cm_err_t lw_avrofile_append(lw_avrofile_t *w, avro_value_t *v);

/* Appends one already encoded datum (Avro binary of the file's schema). */
cm_err_t lw_avrofile_append_encoded(lw_avrofile_t *w, const void *p, size_t n);

/* Writes the open block out (if any). */
cm_err_t lw_avrofile_flush(lw_avrofile_t *w);

uint64_t lw_avrofile_rows(const lw_avrofile_t *w);
/* Bytes of the file so far: written + the open block's encoded bytes. */
uint64_t lw_avrofile_size(const lw_avrofile_t *w);

/*
 * Flushes and ends the file. For a memory file the bytes are moved into
 * *mem (caller owns, cm_buf_free); for an fd file mem may be NULL. *size
 * (may be NULL) gets the final file size. The writer is freed in any case.
 */
cm_err_t lw_avrofile_finish(lw_avrofile_t *w, cm_buf_t *mem, uint64_t *size);

/* Frees without finishing (the fd is left to the caller). NULL: no-op. */
void lw_avrofile_destroy(lw_avrofile_t *w);

#endif
