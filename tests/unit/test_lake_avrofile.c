/*
 * test_lake_avrofile: the hand-written Avro container header round-trips
 * (our decoder, and avro-c's reader reads the records back), including the
 * schema attributes avro-c itself would drop (field-id, logicalType,
 * adjust-to-utc) and custom metadata keys; deflate blocks; hostile headers.
 */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include <cmocka.h>

#include "../../services/lake-writer/lake_avrofile.h"

static const char SCHEMA[] =
    "{\"type\":\"record\",\"name\":\"r\",\"fields\":["
    "{\"name\":\"id\",\"type\":\"long\",\"field-id\":1},"
    "{\"name\":\"ts\",\"type\":{\"type\":\"long\",\"logicalType\":\"timestamp-micros\","
    "\"adjust-to-utc\":true},\"field-id\":2},"
    "{\"name\":\"s\",\"type\":[\"null\",\"string\"],\"default\":null,\"field-id\":3}]}";

static void write_file(lw_codec_t codec, cm_buf_t *out, int rows)
{
    const lw_avro_meta_t meta[] = {
        {"format-version", "2", 1},
        {"content", "data", 4},
        {"partition-spec", "[]", 2},
    };
    lw_avrofile_opts_t o = {.schema_json = SCHEMA, .meta = meta, .n_meta = 3,
                            .codec = codec, .block_size = 100, .fd = -1};
    char err[256];
    lw_avrofile_t *w = lw_avrofile_new(&o, err, sizeof(err));
    assert_non_null(w);
    for (int i = 0; i < rows; i++) {
        avro_value_t *v = lw_avrofile_value(w);
        avro_value_t f, b;
        avro_value_get_by_index(v, 0, &f, NULL);
        avro_value_set_long(&f, i);
        avro_value_get_by_index(v, 1, &f, NULL);
        avro_value_set_long(&f, 1700000000000000LL + i);
        avro_value_get_by_index(v, 2, &f, NULL);
        if (i % 3 == 0) {
            avro_value_set_branch(&f, 0, &b);
            avro_value_set_null(&b);
        } else {
            avro_value_set_branch(&f, 1, &b);
            avro_value_set_string(&b, "hello");
        }
        assert_int_equal(lw_avrofile_append(w, v), CM_OK);
    }
    assert_int_equal(lw_avrofile_rows(w), (uint64_t)rows);
    uint64_t size = 0;
    assert_int_equal(lw_avrofile_finish(w, out, &size), CM_OK);
    assert_int_equal(size, out->len);
}

static void check_header(const cm_buf_t *b, const char *codec)
{
    lw_avro_header_t h;
    assert_int_equal(lw_avro_header_decode(b->data, b->len, &h), CM_OK);
    size_t n = 0;
    const char *s = lw_avro_header_get(&h, "avro.schema", &n);
    assert_non_null(s);
    /* Byte for byte the schema given, field-id and logicalType included. */
    assert_int_equal(n, strlen(SCHEMA));
    assert_memory_equal(s, SCHEMA, n);
    s = lw_avro_header_get(&h, "avro.codec", &n);
    assert_int_equal(n, strlen(codec));
    assert_memory_equal(s, codec, n);
    s = lw_avro_header_get(&h, "format-version", &n);
    assert_int_equal(n, 1);
    assert_memory_equal(s, "2", 1);
    s = lw_avro_header_get(&h, "content", &n);
    assert_memory_equal(s, "data", 4);
    assert_null(lw_avro_header_get(&h, "nope", NULL));
    /* The sync marker after the header ends the first block too. */
    assert_true(b->len >= h.size);
    assert_memory_equal(b->data + b->len - 16, h.sync, 16);
}

static void read_back(const cm_buf_t *b, int rows)
{
    FILE *fp = fmemopen(b->data, b->len, "rb");
    assert_non_null(fp);
    avro_file_reader_t r;
    assert_int_equal(avro_file_reader_fp(fp, "mem", 1, &r), 0);
    avro_schema_t sch = avro_file_reader_get_writer_schema(r);
    avro_value_iface_t *iface = avro_generic_class_from_schema(sch);
    avro_value_t v;
    avro_generic_value_new(iface, &v);
    int i = 0;
    while (avro_file_reader_read_value(r, &v) == 0) {
        avro_value_t f, br;
        int64_t x;
        avro_value_get_by_name(&v, "id", &f, NULL);
        avro_value_get_long(&f, &x);
        assert_int_equal(x, i);
        avro_value_get_by_name(&v, "ts", &f, NULL);
        avro_value_get_long(&f, &x);
        assert_int_equal(x, 1700000000000000LL + i);
        avro_value_get_by_name(&v, "s", &f, NULL);
        int disc;
        avro_value_get_discriminant(&f, &disc);
        assert_int_equal(disc, i % 3 == 0 ? 0 : 1);
        if (disc) {
            const char *s;
            size_t n;
            avro_value_get_current_branch(&f, &br);
            avro_value_get_string(&br, &s, &n);
            assert_string_equal(s, "hello");
        }
        i++;
        avro_value_reset(&v);
    }
    assert_int_equal(i, rows);
    avro_value_decref(&v);
    avro_value_iface_decref(iface);
    avro_schema_decref(sch);
    avro_file_reader_close(r);
}

static void test_roundtrip_null(void **state)
{
    (void)state;
    cm_buf_t b;
    cm_buf_init(&b, 0);
    write_file(LW_CODEC_NULL, &b, 1000);
    check_header(&b, "null");
    read_back(&b, 1000);
    cm_buf_free(&b);
}

static void test_roundtrip_deflate(void **state)
{
    (void)state;
    cm_buf_t b;
    cm_buf_init(&b, 0);
    write_file(LW_CODEC_DEFLATE, &b, 777);
    check_header(&b, "deflate");
    read_back(&b, 777);
    cm_buf_free(&b);
}

static void test_empty_file(void **state)
{
    (void)state;
    cm_buf_t b;
    cm_buf_init(&b, 0);
    write_file(LW_CODEC_NULL, &b, 0);
    check_header(&b, "null");
    read_back(&b, 0);
    cm_buf_free(&b);
}

static void test_fd_file(void **state)
{
    (void)state;
    char path[] = "/tmp/test_lake_avroXXXXXX";
    int fd = mkstemp(path);
    assert_true(fd >= 0);
    lw_avrofile_opts_t o = {.schema_json = SCHEMA, .fd = fd};
    char err[256];
    lw_avrofile_t *w = lw_avrofile_new(&o, err, sizeof(err));
    assert_non_null(w);
    for (int i = 0; i < 10; i++) {
        uint8_t rec[32];
        size_t n = lw_avro_encode_long(i, rec);
        n += lw_avro_encode_long(1700000000000000LL + i, rec + n);
        n += lw_avro_encode_long(i % 3 == 0 ? 0 : 1, rec + n);
        if (i % 3) {
            n += lw_avro_encode_long(5, rec + n);
            memcpy(rec + n, "hello", 5);
            n += 5;
        }
        assert_int_equal(lw_avrofile_append_encoded(w, rec, n), CM_OK);
    }
    uint64_t size;
    assert_int_equal(lw_avrofile_finish(w, NULL, &size), CM_OK);
    close(fd);
    cm_buf_t b;
    cm_buf_init(&b, 0);
    FILE *fp = fopen(path, "rb");
    char tmp[4096];
    size_t n;
    while ((n = fread(tmp, 1, sizeof(tmp), fp)) > 0)
        cm_buf_append(&b, tmp, n);
    fclose(fp);
    unlink(path);
    assert_int_equal(b.len, size);
    read_back(&b, 10);
    cm_buf_free(&b);
}

static void test_hostile_headers(void **state)
{
    (void)state;
    lw_avro_header_t h;
    assert_int_equal(lw_avro_header_decode("Obj", 3, &h), CM_ERR_PARSE);
    assert_int_equal(lw_avro_header_decode("Obj\x02\x00", 5, &h), CM_ERR_PARSE);
    /* A huge count. */
    const uint8_t big[] = {'O', 'b', 'j', 1, 0xfe, 0xff, 0xff, 0xff, 0x0f};
    assert_int_equal(lw_avro_header_decode(big, sizeof(big), &h), CM_ERR_PARSE);
    /* A length past the end. */
    const uint8_t past[] = {'O', 'b', 'j', 1, 2, 0x7e, 'k'};
    assert_int_equal(lw_avro_header_decode(past, sizeof(past), &h), CM_ERR_PARSE);
    /* Every truncation of a good header fails cleanly. */
    cm_buf_t b;
    cm_buf_init(&b, 0);
    write_file(LW_CODEC_NULL, &b, 1);
    lw_avro_header_t good;
    assert_int_equal(lw_avro_header_decode(b.data, b.len, &good), CM_OK);
    for (size_t cut = 0; cut < good.size; cut++)
        assert_int_equal(lw_avro_header_decode(b.data, cut, &h), CM_ERR_PARSE);
    cm_buf_free(&b);
}

static void test_zigzag(void **state)
{
    (void)state;
    uint8_t b[10];
    assert_int_equal(lw_avro_encode_long(0, b), 1);
    assert_int_equal(b[0], 0);
    assert_int_equal(lw_avro_encode_long(-1, b), 1);
    assert_int_equal(b[0], 1);
    assert_int_equal(lw_avro_encode_long(1, b), 1);
    assert_int_equal(b[0], 2);
    assert_int_equal(lw_avro_encode_long(64, b), 2);
    assert_int_equal(b[0], 0x80);
    assert_int_equal(b[1], 0x01);
    assert_int_equal(lw_avro_encode_long(INT64_MIN, b), 10);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_roundtrip_null),   cmocka_unit_test(test_roundtrip_deflate),
        cmocka_unit_test(test_empty_file),       cmocka_unit_test(test_fd_file),
        cmocka_unit_test(test_hostile_headers),  cmocka_unit_test(test_zigzag),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
