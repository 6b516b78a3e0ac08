/*
 * test_lake_rows: rows of every table through avro-c (lw_row_fill), and the
 * hand-written events_raw encoder (lw_row_encode) byte for byte equal to
 * avro-c's encoding of the same row, over every combination of optional
 * fields; the table schemas carry Iceberg ids on every field.
 */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <cmocka.h>
#include <jansson.h>

#include "../../services/lake-writer/lake_rows.h"
#include "../../services/lake-writer/lake_schema.h"

static void avroc_encode(const lw_table_def_t *def, const lw_row_t *row, cm_buf_t *out)
{
    cm_buf_t sch;
    cm_buf_init(&sch, 0);
    assert_int_equal(lw_schema_avro_text(def, &sch), CM_OK);
    avro_schema_t s;
    assert_int_equal(avro_schema_from_json_length(cm_buf_cstr(&sch), sch.len, &s), 0);
    avro_value_iface_t *iface = avro_generic_class_from_schema(s);
    avro_value_t v;
    avro_generic_value_new(iface, &v);
    assert_int_equal(lw_row_fill(def, row, &v), CM_OK);
    size_t size;
    assert_int_equal(avro_value_sizeof(&v, &size), 0);
    cm_buf_reset(out);
    cm_buf_reserve(out, size);
    avro_writer_t w = avro_writer_memory((const char *)out->data, (int64_t)size);
    assert_int_equal(avro_value_write(w, &v), 0);
    out->len = size;
    avro_writer_free(w);
    avro_value_decref(&v);
    avro_value_iface_decref(iface);
    avro_schema_decref(s);
    cm_buf_free(&sch);
}

static void set(cm_event_t *ev, const char **f, const char *s)
{
    cm_event_set_str(ev, f, s, strlen(s));
}

static void test_event_encoder_matches_avroc(void **state)
{
    (void)state;
    const lw_table_def_t *def = lw_table_def_find("events_raw");
    cm_event_t ev;
    cm_event_init(&ev);
    cm_buf_t a, b;
    cm_buf_init(&a, 0);
    cm_buf_init(&b, 0);
    for (unsigned mask = 0; mask < (1u << 14); mask += (mask < 64 ? 1 : 37)) {
        cm_event_reset(&ev);
        set(&ev, &ev.event_id, "0b9a6c1e-4f5d-4c1a-9b2e-123456789abc");
        set(&ev, &ev.user_id, "user-ü-42");
        set(&ev, &ev.event_type, mask & 1 ? "purchase" : "page_view");
        ev.ts_ms = (mask & 2) ? -5 : 1705314600123LL + mask;
        ev.received_at_ms = ev.ts_ms + 7;
        if (mask & 4) set(&ev, &ev.page_url, "https://shop.test/p/1?q=a");
        if (mask & 8) set(&ev, &ev.session_id, "sess");
        if (mask & 16) set(&ev, &ev.referrer, "");
        if (mask & 32) set(&ev, &ev.user_agent, "Mozilla/5.0");
        if (mask & 64) set(&ev, &ev.ip_address, "10.1.2.0");
        if (mask & 128) set(&ev, &ev.geo_country, "DE");
        if (mask & 256) set(&ev, &ev.geo_city, "Köln");
        if (mask & 512) set(&ev, &ev.device_type, "mobile");
        if (mask & 1024) set(&ev, &ev.device_os, "Android");
        if (mask & 2048) set(&ev, &ev.product_id, "sku-1");
        if (mask & 4096) ev.quantity = (int32_t)(mask % 1000) + 1;
        if (mask & 8192) {
            ev.has_price = true;
            ev.price_micros = (mask & 1) ? 0 : 999999999999999999LL - mask;
        }
        ev.is_bot = mask & 2;
        lw_row_t row = {.ev = &ev, .partition = (int32_t)(mask % 13), .offset = (int64_t)mask << 20};
        avroc_encode(def, &row, &a);
        cm_buf_reset(&b);
        assert_int_equal(lw_row_encode(def, &row, &b), CM_OK);
        assert_int_equal(a.len, b.len);
        assert_memory_equal(a.data, b.data, a.len);
    }
    /* No fast path for the other tables or without an event. */
    lw_row_t none = {0};
    assert_int_equal(lw_row_encode(def, &none, &b), CM_ERR_INVALID);
    assert_int_equal(lw_row_encode(lw_table_def_find("late_events"), &none, &b),
                     CM_ERR_INVALID);
    cm_buf_free(&a);
    cm_buf_free(&b);
    cm_event_free(&ev);
}

static int all_have_ids(json_t *fields)
{
    size_t i;
    json_t *f;
    json_array_foreach(fields, i, f)
    {
        if (!json_is_integer(json_object_get(f, "field-id")))
            return 0;
        json_t *t = json_object_get(f, "type");
        if (json_is_array(t))
            t = json_array_get(t, 1);
        if (json_is_object(t)) {
            const char *ty = json_string_value(json_object_get(t, "type"));
            if (strcmp(ty, "record") == 0 && !all_have_ids(json_object_get(t, "fields")))
                return 0;
            if (strcmp(ty, "map") == 0 && (!json_object_get(t, "key-id") ||
                                           !json_object_get(t, "value-id")))
                return 0;
            if (strcmp(ty, "array") == 0 &&
                (!json_object_get(t, "element-id") ||
                 !all_have_ids(json_object_get(json_object_get(t, "items"), "fields"))))
                return 0;
            if (strcmp(ty, "long") == 0 && json_object_get(t, "logicalType") &&
                (strcmp(json_string_value(json_object_get(t, "logicalType")),
                        "timestamp-micros") != 0 ||
                 !json_is_true(json_object_get(t, "adjust-to-utc"))))
                return 0;
        }
    }
    return 1;
}

static void test_schemas_carry_ids(void **state)
{
    (void)state;
    for (size_t i = 0; i < lw_n_tables; i++) {
        cm_buf_t s;
        cm_buf_init(&s, 0);
        assert_int_equal(lw_schema_avro_text(&lw_tables[i], &s), CM_OK);
        json_t *j = json_loads(cm_buf_cstr(&s), 0, NULL);
        assert_non_null(j);
        assert_true(all_have_ids(json_object_get(j, "fields")));
        avro_schema_t as;
        assert_int_equal(avro_schema_from_json_length(cm_buf_cstr(&s), s.len, &as), 0);
        avro_schema_decref(as);
        json_decref(j);
        cm_buf_free(&s);
        json_t *ice = lw_schema_iceberg_json(&lw_tables[i]);
        assert_int_equal(json_integer_value(json_object_get(ice, "schema-id")), 0);
        json_decref(ice);
    }
}

static void test_transforms(void **state)
{
    (void)state;
    char b[32];
    assert_int_equal(lw_transform_apply(LW_TR_DAY, 1705314600000000LL), 19737);
    assert_int_equal(lw_transform_apply(LW_TR_HOUR, 1705314600000000LL), 473698);
    assert_int_equal(lw_transform_apply(LW_TR_DAY, -1), -1);
    assert_int_equal(lw_transform_apply(LW_TR_HOUR, -1), -1);
    lw_transform_human(LW_TR_DAY, 19737, b, sizeof(b));
    assert_string_equal(b, "2024-01-15");
    lw_transform_human(LW_TR_HOUR, 473698, b, sizeof(b));
    assert_string_equal(b, "2024-01-15-10");
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_event_encoder_matches_avroc),
        cmocka_unit_test(test_schemas_carry_ids),
        cmocka_unit_test(test_transforms),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
