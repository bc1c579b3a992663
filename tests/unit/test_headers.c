/* Unit: AMQP header tables <-> msgpack maps, the __mms table, and the wire
 * edge (encode for each codec, decode by content type and encoding). */
#include <check.h>
#include <math.h>
#include <stdlib.h>
#include <string.h>

#include "codec.h"
#include "headers.h"
#include "internal.h"
#include "mmt.h"
#include "wire.h"

static amqp_table_entry_t
entry(const char *key, amqp_field_value_t v)
{
    return (amqp_table_entry_t){.key = amqp_cstring_bytes(key), .value = v};
}

static amqp_field_value_t
i64(int64_t v)
{
    return (amqp_field_value_t){.kind = AMQP_FIELD_KIND_I64, .value.i64 = v};
}

static amqp_field_value_t
boolean(bool v)
{
    return (amqp_field_value_t){.kind = AMQP_FIELD_KIND_BOOLEAN, .value.boolean = v};
}

static amqp_field_value_t
utf8(const char *s)
{
    return (amqp_field_value_t){.kind = AMQP_FIELD_KIND_UTF8, .value.bytes = amqp_cstring_bytes(s)};
}

static amqp_field_value_t
table(amqp_table_entry_t *e, int n)
{
    return (amqp_field_value_t){.kind = AMQP_FIELD_KIND_TABLE, .value.table = {n, e}};
}

START_TEST(mms_fields_are_read_with_any_integer_type)
{
    amqp_table_entry_t mms[] = {
        entry("route", utf8("ping")),
        entry("iat", i64(1700000000123)),
        entry("eat", (amqp_field_value_t){.kind = AMQP_FIELD_KIND_U32, .value.u32 = 42}),
        entry("sequence", (amqp_field_value_t){.kind = AMQP_FIELD_KIND_I8, .value.i8 = 3}),
        entry("isTask", boolean(true)),
        entry("isStream", boolean(false)),
        entry("later", utf8("ignored")),
    };
    amqp_table_entry_t top[] = {entry("__mms", table(mms, 7))};
    amqp_table_t t = {1, top};
    mmi_mms_t m;
    char err[128];
    ck_assert_int_eq(mmi_mms_parse(&t, &m, err, sizeof err), MM_OK);
    ck_assert_int_eq(m.route.len, 4);
    ck_assert_mem_eq(m.route.bytes, "ping", 4);
    ck_assert(m.has_iat && m.iat == 1700000000123);
    ck_assert(m.has_eat && m.eat == 42);
    ck_assert(m.has_seq && m.sequence == 3);
    ck_assert(m.is_task && !m.is_stream && !m.is_error && !m.is_end);
}
END_TEST

START_TEST(mms_missing_or_malformed_is_a_decode_error)
{
    mmi_mms_t m;
    char err[128] = "";
    ck_assert_int_eq(mmi_mms_parse(NULL, &m, err, sizeof err), MM_EDECODE);
    ck_assert_ptr_nonnull(strstr(err, "__mms"));
    amqp_table_entry_t not_table[] = {entry("__mms", utf8("x"))};
    amqp_table_t t1 = {1, not_table};
    ck_assert_int_eq(mmi_mms_parse(&t1, &m, err, sizeof err), MM_EDECODE);
    amqp_table_entry_t bad_flag[] = {entry("isTask", utf8("yes"))};
    amqp_table_entry_t top[] = {entry("__mms", table(bad_flag, 1))};
    amqp_table_t t2 = {1, top};
    err[0] = '\0';
    ck_assert_int_eq(mmi_mms_parse(&t2, &m, err, sizeof err), MM_EDECODE);
    ck_assert_ptr_nonnull(strstr(err, "isTask"));
}
END_TEST

static const msgpack_object *
get(const msgpack_object *map, const char *key)
{
    for (uint32_t i = 0; i < map->via.map.size; i++) {
        const msgpack_object *k = &map->via.map.ptr[i].key;
        if (k->via.str.size == strlen(key) && memcmp(k->via.str.ptr, key, k->via.str.size) == 0)
            return &map->via.map.ptr[i].val;
    }
    return NULL;
}

START_TEST(user_headers_become_a_map_without_mms)
{
    amqp_field_value_t arr[] = {i64(-5), utf8("a")};
    amqp_table_entry_t inner[] = {entry("k", boolean(true))};
    amqp_table_entry_t top[] = {
        entry("__mms", table(inner, 1)),
        entry("idRequest", utf8("r-1")),
        entry("n", i64(1) /* replaced below */),
        entry("list", (amqp_field_value_t){.kind = AMQP_FIELD_KIND_ARRAY, .value.array = {2, arr}}),
        entry("nested", table(inner, 1)),
        entry("raw", (amqp_field_value_t){.kind = AMQP_FIELD_KIND_BYTES,
                                          .value.bytes = {3, (void *) "\0\1\2"}}),
    };
    top[2].value = (amqp_field_value_t){.kind = AMQP_FIELD_KIND_U64, .value.u64 = UINT64_MAX};
    amqp_table_t t = {6, top};
    msgpack_zone z;
    msgpack_zone_init(&z, 256);
    msgpack_object map;
    ck_assert_int_eq(mmi_headers_to_msgpack(&t, &z, &map), MM_OK);
    ck_assert_int_eq(map.via.map.size, 5);
    ck_assert_ptr_null(get(&map, "__mms"));
    ck_assert_int_eq(get(&map, "idRequest")->type, MSGPACK_OBJECT_STR);
    ck_assert(get(&map, "n")->via.u64 == UINT64_MAX);
    const msgpack_object *l = get(&map, "list");
    ck_assert_int_eq(l->via.array.size, 2);
    ck_assert_int_eq(l->via.array.ptr[0].type, MSGPACK_OBJECT_NEGATIVE_INTEGER);
    ck_assert_int_eq(l->via.array.ptr[0].via.i64, -5);
    ck_assert_int_eq(get(&map, "nested")->type, MSGPACK_OBJECT_MAP);
    ck_assert_int_eq(get(&map, "raw")->type, MSGPACK_OBJECT_BIN);
    ck_assert_mem_eq(get(&map, "raw")->via.bin.ptr, "\0\1\2", 3);
    msgpack_zone_destroy(&z);
}
END_TEST

static size_t
pack_map(char *buf, size_t cap, const char *key)
{
    msgpack_sbuffer sb = {.data = buf, .alloc = cap};
    msgpack_packer pk;
    msgpack_packer_init(&pk, &sb, msgpack_sbuffer_write);
    msgpack_pack_map(&pk, 2);
    msgpack_pack_str_with_body(&pk, key, strlen(key));
    msgpack_pack_int(&pk, 7);
    msgpack_pack_str_with_body(&pk, "tags", 4);
    msgpack_pack_array(&pk, 1);
    msgpack_pack_str_with_body(&pk, "x", 1);
    return sb.size;
}

START_TEST(outgoing_table_has_mms_request_id_then_user_headers)
{
    char buf[64];
    size_t n = pack_map(buf, sizeof buf, "tenant");
    mmi_hdrs_t h;
    char err[128] = "";
    mmi_hdrs_init(&h);
    mmi_hdrs_mms_str(&h, "route", "r");
    mmi_hdrs_mms_int(&h, "iat", 5000000000);
    ck_assert_int_eq(mmi_hdrs_finish(&h, "id-1", buf, n, err, sizeof err), MM_OK);
    ck_assert_int_eq(h.table.num_entries, 4);
    ck_assert_int_eq(h.table.entries[0].value.kind, AMQP_FIELD_KIND_TABLE);
    ck_assert_int_eq(h.table.entries[0].value.value.table.num_entries, 2);
    ck_assert_int_eq(h.table.entries[0].value.value.table.entries[1].value.value.i64, 5000000000);
    ck_assert_mem_eq(h.table.entries[1].key.bytes, "idRequest", 9);
    ck_assert_int_eq(h.table.entries[2].value.kind, AMQP_FIELD_KIND_I64);
    ck_assert_int_eq(h.table.entries[3].value.kind, AMQP_FIELD_KIND_ARRAY);
    mmi_hdrs_fini(&h);
}
END_TEST

START_TEST(reserved_or_bad_user_headers_are_refused)
{
    char buf[64], err[128] = "";
    size_t n = pack_map(buf, sizeof buf, "__mms");
    mmi_hdrs_t h;
    mmi_hdrs_init(&h);
    ck_assert_int_eq(mmi_hdrs_finish(&h, NULL, buf, n, err, sizeof err), MM_EINVAL);
    ck_assert_ptr_nonnull(strstr(err, "__mms"));
    mmi_hdrs_fini(&h);
    mmi_hdrs_init(&h);
    ck_assert_int_eq(mmi_hdrs_finish(&h, NULL, "\xa1x", 2, err, sizeof err), MM_EINVAL); /* a str */
    mmi_hdrs_fini(&h);
    mmi_hdrs_init(&h);
    ck_assert_int_eq(mmi_hdrs_finish(&h, NULL, "\x81\xa1k", 3, err, sizeof err), MM_EINVAL);
    mmi_hdrs_fini(&h);
}
END_TEST

START_TEST(mms_integers_beyond_int64_are_a_decode_error)
{
    amqp_field_value_t bad[] = {
        {.kind = AMQP_FIELD_KIND_F64, .value.f64 = 1e300},
        {.kind = AMQP_FIELD_KIND_F64, .value.f64 = 0x1p63},
        {.kind = AMQP_FIELD_KIND_F64, .value.f64 = NAN},
        {.kind = AMQP_FIELD_KIND_TIMESTAMP, .value.u64 = (uint64_t) INT64_MAX + 1},
        {.kind = AMQP_FIELD_KIND_U64, .value.u64 = UINT64_MAX},
    };
    mmi_mms_t m;
    char err[128];
    for (size_t i = 0; i < sizeof bad / sizeof bad[0]; i++) {
        amqp_table_entry_t mms[] = {entry("iat", bad[i])};
        amqp_table_entry_t top[] = {entry("__mms", table(mms, 1))};
        amqp_table_t t = {1, top};
        err[0] = '\0';
        ck_assert_int_eq(mmi_mms_parse(&t, &m, err, sizeof err), MM_EDECODE);
        ck_assert_ptr_nonnull(strstr(err, "iat"));
    }
    amqp_table_entry_t mms[] = {
        entry("iat", (amqp_field_value_t){.kind = AMQP_FIELD_KIND_F64, .value.f64 = -0x1p63}),
        entry("eat", (amqp_field_value_t){.kind = AMQP_FIELD_KIND_TIMESTAMP, .value.u64 = 7}),
    };
    amqp_table_entry_t top[] = {entry("__mms", table(mms, 2))};
    amqp_table_t t = {1, top};
    ck_assert_int_eq(mmi_mms_parse(&t, &m, err, sizeof err), MM_OK);
    ck_assert(m.has_iat && m.iat == INT64_MIN && m.has_eat && m.eat == 7);
}
END_TEST

START_TEST(timestamps_beyond_int64_stay_positive)
{
    amqp_table_entry_t top[] = {entry(
        "ts", (amqp_field_value_t){.kind = AMQP_FIELD_KIND_TIMESTAMP, .value.u64 = UINT64_MAX})};
    amqp_table_t t = {1, top};
    msgpack_zone z;
    msgpack_zone_init(&z, 256);
    msgpack_object map;
    ck_assert_int_eq(mmi_headers_to_msgpack(&t, &z, &map), MM_OK);
    ck_assert_int_eq(get(&map, "ts")->type, MSGPACK_OBJECT_POSITIVE_INTEGER);
    ck_assert(get(&map, "ts")->via.u64 == UINT64_MAX);
    msgpack_zone_destroy(&z);
}
END_TEST

/* Incoming headers nested deeper than the codec reads are cut, so that the
 * map can be packed, checked and sent back as user headers. */
START_TEST(deep_incoming_headers_stay_within_the_codec_depth)
{
    amqp_table_entry_t e[40];
    e[39] = entry("leaf", i64(1));
    for (int i = 38; i >= 0; i--)
        e[i] = entry("n", table(&e[i + 1], 1));
    amqp_table_t t = {1, e};
    msgpack_zone z;
    msgpack_zone_init(&z, 4096);
    msgpack_object map;
    ck_assert_int_eq(mmi_headers_to_msgpack(&t, &z, &map), MM_OK);
    mmi_buf_t b = {0};
    msgpack_packer pk;
    msgpack_packer_init(&pk, &b, mmi_buf_write);
    ck_assert_int_eq(msgpack_pack_object(&pk, map), 0);
    char err[128] = "";
    ck_assert_int_eq(mmi_msgpack_check(b.data, b.len, err, sizeof err), MM_OK);
    mmi_hdrs_t h;
    mmi_hdrs_init(&h);
    ck_assert_int_eq(mmi_hdrs_finish(&h, NULL, b.data, b.len, err, sizeof err), MM_OK);
    mmi_hdrs_fini(&h);
    mmi_buf_free(&b);
    msgpack_zone_destroy(&z);
}
END_TEST

/* A map {name: 1} whose name is `n` bytes long. */
static size_t
pack_long_name(char *buf, size_t cap, size_t n)
{
    char name[300];
    memset(name, 'k', n);
    msgpack_sbuffer sb = {.data = buf, .alloc = cap};
    msgpack_packer pk;
    msgpack_packer_init(&pk, &sb, msgpack_sbuffer_write);
    msgpack_pack_map(&pk, 1);
    msgpack_pack_str_with_body(&pk, name, n);
    msgpack_pack_int(&pk, 1);
    return sb.size;
}

/* AMQP field names are short strings: a longer one would corrupt the frame. */
START_TEST(header_names_beyond_255_bytes_are_refused)
{
    char buf[320], err[128] = "";
    mmi_hdrs_t h;
    mmi_hdrs_init(&h);
    size_t n = pack_long_name(buf, sizeof buf, 256);
    ck_assert_int_eq(mmi_hdrs_finish(&h, NULL, buf, n, err, sizeof err), MM_EINVAL);
    ck_assert_ptr_nonnull(strstr(err, "255"));
    mmi_hdrs_fini(&h);
    mmi_hdrs_init(&h);
    n = pack_long_name(buf, sizeof buf, 255);
    ck_assert_int_eq(mmi_hdrs_finish(&h, NULL, buf, n, err, sizeof err), MM_OK);
    ck_assert_int_eq(h.table.entries[1].key.len, 255);
    mmi_hdrs_fini(&h);
}
END_TEST

/* ---- wire edge ---- */

static mm_t *
offline(int codec, uint32_t max_body)
{
    mm_opts_t o = MM_OPTS_INIT;
    o.codec = codec;
    o.max_body = max_body;
    mm_t *mm = mm_new("t-wire", &o);
    ck_assert_ptr_nonnull(mm);
    return mm;
}

static mmi_content_t
delivery(amqp_basic_properties_t *p, const char *ct, const char *enc, const void *b, size_t n)
{
    *p = (amqp_basic_properties_t){0};
    if (ct) {
        p->_flags |= AMQP_BASIC_CONTENT_TYPE_FLAG;
        p->content_type = amqp_cstring_bytes(ct);
    }
    if (enc) {
        p->_flags |= AMQP_BASIC_CONTENT_ENCODING_FLAG;
        p->content_encoding = amqp_cstring_bytes(enc);
    }
    return (mmi_content_t){.props = p, .body = {n, (void *) b}, .body_size = n};
}

START_TEST(encode_picks_type_and_compresses_above_1mb)
{
    mm_t *mm = offline(MM_CODEC_JSON, 0);
    mmi_wire_out_t w;
    ck_assert_int_eq(mmi_wire_encode(mm, MM_CODEC_JSON, "\x92\x01\xc3", 3, &w), MM_OK);
    ck_assert_str_eq(w.content_type, "application/json");
    ck_assert_int_eq(w.body.len, 8);
    ck_assert_mem_eq(w.body.bytes, "[1,true]", 8);
    ck_assert_ptr_null(w.content_encoding);
    mmi_wire_out_free(&w);
    ck_assert_int_eq(mmi_wire_encode(mm, MM_CODEC_JSON, "\xc4\x02\x00\xff", 4, &w), MM_OK);
    ck_assert_str_eq(w.content_type, "application/octet-stream");
    ck_assert_int_eq(w.body.len, 2);
    mmi_wire_out_free(&w);
    ck_assert_int_eq(mmi_wire_encode(mm, MM_CODEC_MSGPACK, NULL, 0, &w), MM_OK);
    ck_assert_mem_eq(w.body.bytes, "\xa0", 1); /* no body: the empty string */
    mmi_wire_out_free(&w);
    size_t big = 1000001;
    char *s = malloc(big + 5);
    s[0] = (char) 0xdb;
    s[1] = 0, s[2] = 0x0f, s[3] = 0x42, s[4] = 0x41; /* str32 of 1,000,001 bytes */
    memset(s + 5, 'a', big);
    ck_assert_int_eq(mmi_wire_encode(mm, MM_CODEC_MSGPACK, s, big + 5, &w), MM_OK);
    ck_assert_str_eq(w.content_encoding, "gzip");
    ck_assert_uint_lt(w.body.len, 100000);
    mmi_wire_out_free(&w);
    ck_assert_int_eq(mmi_wire_encode(mm, MM_CODEC_MSGPACK, "\x92\x01", 2, &w), MM_EINVAL);
    mmi_wire_out_free(&w);
    free(s);
    mm_free(mm);
}
END_TEST

START_TEST(decode_by_content_type_and_encoding)
{
    mm_t *mm = offline(MM_CODEC_MSGPACK, 1024);
    amqp_basic_properties_t p;
    mmi_wire_in_t in;
    char err[160] = "";
    mmi_content_t c = delivery(&p, "application/json; charset=utf-8", NULL, "[1,true]", 8);
    ck_assert_int_eq(mmi_wire_decode(mm, &c, &in, err, sizeof err), MM_OK);
    ck_assert_int_eq(in.ctype, MMI_CT_JSON);
    ck_assert_int_eq(in.len, 3);
    ck_assert_mem_eq(in.data, "\x92\x01\xc3", 3);
    mmi_wire_in_free(&in);
    c = delivery(&p, "application/msgpack", NULL, "\x01", 1);
    ck_assert_int_eq(mmi_wire_decode(mm, &c, &in, err, sizeof err), MM_OK);
    ck_assert(in.borrowed && in.data == c.body.bytes); /* no copy */
    mmi_wire_in_free(&in);
    c = delivery(&p, "text/plain", NULL, "x", 1);
    ck_assert_int_eq(mmi_wire_decode(mm, &c, &in, err, sizeof err), MM_EDECODE);
    ck_assert_ptr_nonnull(strstr(err, "text/plain"));
    mmi_wire_in_free(&in);
    c = delivery(&p, "application/json", "deflate", "x", 1);
    ck_assert_int_eq(mmi_wire_decode(mm, &c, &in, err, sizeof err), MM_EDECODE);
    ck_assert_ptr_nonnull(strstr(err, "deflate"));
    mmi_wire_in_free(&in);
    mmi_buf_t gz = {0};
    char zeros[4096] = {0};
    ck_assert_int_eq(mmi_gzip_deflate(zeros, sizeof zeros, &gz), MM_OK);
    c = delivery(&p, "application/octet-stream", "gzip", gz.data, gz.len);
    ck_assert_int_eq(mmi_wire_decode(mm, &c, &in, err, sizeof err), MM_ETOOBIG); /* > 1024 */
    mmi_wire_in_free(&in);
    mmi_buf_free(&gz);
    mm_free(mm);
}
END_TEST

static Suite *
suite(void)
{
    Suite *s = suite_create("headers");
    TCase *tc = tcase_create("headers");
    tcase_add_test(tc, mms_fields_are_read_with_any_integer_type);
    tcase_add_test(tc, mms_missing_or_malformed_is_a_decode_error);
    tcase_add_test(tc, user_headers_become_a_map_without_mms);
    tcase_add_test(tc, outgoing_table_has_mms_request_id_then_user_headers);
    tcase_add_test(tc, reserved_or_bad_user_headers_are_refused);
    tcase_add_test(tc, mms_integers_beyond_int64_are_a_decode_error);
    tcase_add_test(tc, timestamps_beyond_int64_stay_positive);
    tcase_add_test(tc, deep_incoming_headers_stay_within_the_codec_depth);
    tcase_add_test(tc, header_names_beyond_255_bytes_are_refused);
    tcase_add_test(tc, encode_picks_type_and_compresses_above_1mb);
    tcase_add_test(tc, decode_by_content_type_and_encoding);
    suite_add_tcase(s, tc);
    return s;
}

int
main(void)
{
    return mmt_run(suite());
}
