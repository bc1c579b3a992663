/* Unit: the public body builder (mm_body_*): packer bodies read back with
 * msgpack_unpack, exact bytes of the str and bin helpers, reuse after reset,
 * and argument checks. */
#include <check.h>
#include <stdlib.h>
#include <string.h>

#include "micromsg.h"
#include "mmt.h"

static mm_body_t *b;
static msgpack_zone zone;

static void
setup(void)
{
    b = mm_body_new();
    ck_assert_ptr_nonnull(b);
    ck_assert(msgpack_zone_init(&zone, 4096));
}

static void
teardown(void)
{
    mm_body_free(b);
    msgpack_zone_destroy(&zone);
}

/* The body as one msgpack object; every byte must belong to it. */
static msgpack_object
read_back(void)
{
    msgpack_object o;
    size_t off = 0;
    ck_assert_int_eq(msgpack_unpack(mm_body_data(b), mm_body_len(b), &off, &zone, &o),
                     MSGPACK_UNPACK_SUCCESS);
    ck_assert_uint_eq(off, mm_body_len(b));
    return o;
}

static void
assert_bytes(const void *want, size_t n)
{
    ck_assert_uint_eq(mm_body_len(b), n);
    ck_assert_mem_eq(mm_body_data(b), want, n);
}

static const msgpack_object *
field(const msgpack_object *map, const char *key)
{
    for (uint32_t i = 0; i < map->via.map.size; i++) {
        const msgpack_object *k = &map->via.map.ptr[i].key;
        if (k->type == MSGPACK_OBJECT_STR && k->via.str.size == strlen(key) &&
            memcmp(k->via.str.ptr, key, k->via.str.size) == 0)
            return &map->via.map.ptr[i].val;
    }
    ck_abort_msg("no key '%s'", key);
    return NULL;
}

START_TEST(a_new_body_is_empty)
{
    ck_assert_ptr_null(mm_body_data(b));
    ck_assert_uint_eq(mm_body_len(b), 0);
    ck_assert_ptr_nonnull(mm_body_packer(b));
}
END_TEST

START_TEST(packer_builds_a_map_that_reads_back)
{
    msgpack_packer *pk = mm_body_packer(b);
    ck_assert_int_eq(msgpack_pack_map(pk, 4), 0);
    msgpack_pack_str_with_body(pk, "name", 4);
    msgpack_pack_str_with_body(pk, "widget", 6);
    msgpack_pack_str_with_body(pk, "n", 1);
    msgpack_pack_int64(pk, -42);
    msgpack_pack_str_with_body(pk, "list", 4);
    msgpack_pack_array(pk, 3);
    msgpack_pack_uint64(pk, 1ULL << 40);
    msgpack_pack_double(pk, 2.5);
    msgpack_pack_nil(pk);
    msgpack_pack_str_with_body(pk, "ok", 2);
    ck_assert_int_eq(msgpack_pack_true(pk), 0);

    msgpack_object o = read_back();
    ck_assert_int_eq(o.type, MSGPACK_OBJECT_MAP);
    ck_assert_uint_eq(o.via.map.size, 4);
    const msgpack_object *name = field(&o, "name");
    ck_assert_int_eq(name->type, MSGPACK_OBJECT_STR);
    ck_assert_uint_eq(name->via.str.size, 6);
    ck_assert_mem_eq(name->via.str.ptr, "widget", 6);
    ck_assert_int_eq(field(&o, "n")->type, MSGPACK_OBJECT_NEGATIVE_INTEGER);
    ck_assert_int_eq(field(&o, "n")->via.i64, -42);
    const msgpack_object *list = field(&o, "list");
    ck_assert_int_eq(list->type, MSGPACK_OBJECT_ARRAY);
    ck_assert_uint_eq(list->via.array.size, 3);
    ck_assert_uint_eq(list->via.array.ptr[0].via.u64, 1ULL << 40);
    ck_assert_double_eq(list->via.array.ptr[1].via.f64, 2.5);
    ck_assert_int_eq(list->via.array.ptr[2].type, MSGPACK_OBJECT_NIL);
    ck_assert_int_eq(field(&o, "ok")->type, MSGPACK_OBJECT_BOOLEAN);
    ck_assert(field(&o, "ok")->via.boolean);
}
END_TEST

START_TEST(str_writes_exact_bytes)
{
    ck_assert_int_eq(mm_body_str(b, "hello"), MM_OK);
    assert_bytes("\xa5hello", 6);
    msgpack_object o = read_back();
    ck_assert_int_eq(o.type, MSGPACK_OBJECT_STR);
    mm_body_reset(b);
    ck_assert_int_eq(mm_body_str(b, ""), MM_OK);
    assert_bytes("\xa0", 1);
    mm_body_reset(b);
    char s[301];
    memset(s, 'z', 300);
    s[300] = '\0';
    ck_assert_int_eq(mm_body_str(b, s), MM_OK);
    ck_assert_uint_eq(mm_body_len(b), 303);
    ck_assert_mem_eq(mm_body_data(b), "\xda\x01\x2c", 3); /* str16 */
    ck_assert_mem_eq((const char *) mm_body_data(b) + 3, s, 300);
}
END_TEST

START_TEST(bin_writes_exact_bytes_nul_included)
{
    const unsigned char raw[] = {0x00, 0x01, 0x00, 0xff, 0x00};
    ck_assert_int_eq(mm_body_bin(b, raw, sizeof raw), MM_OK);
    assert_bytes("\xc4\x05\x00\x01\x00\xff\x00", 7);
    msgpack_object o = read_back();
    ck_assert_int_eq(o.type, MSGPACK_OBJECT_BIN);
    ck_assert_uint_eq(o.via.bin.size, sizeof raw);
    ck_assert_mem_eq(o.via.bin.ptr, raw, sizeof raw);
    mm_body_reset(b);
    ck_assert_int_eq(mm_body_bin(b, NULL, 0), MM_OK);
    assert_bytes("\xc4\x00", 2);
}
END_TEST

START_TEST(large_bin_round_trips)
{
    size_t n = (1 << 20) + 3;
    unsigned char *raw = malloc(n);
    for (size_t i = 0; i < n; i++)
        raw[i] = (unsigned char) (i * 31 + (i >> 8));
    ck_assert_int_eq(mm_body_bin(b, raw, n), MM_OK);
    ck_assert_uint_eq(mm_body_len(b), n + 5); /* bin32 header */
    msgpack_object o = read_back();
    ck_assert_uint_eq(o.via.bin.size, n);
    ck_assert_int_eq(memcmp(o.via.bin.ptr, raw, n), 0);
    free(raw);
}
END_TEST

START_TEST(reset_empties_and_reuses_the_memory)
{
    ck_assert_int_eq(mm_body_str(b, "first body, long enough to need some room"), MM_OK);
    const void *before = mm_body_data(b);
    mm_body_reset(b);
    ck_assert_uint_eq(mm_body_len(b), 0);
    ck_assert_ptr_null(mm_body_data(b));
    ck_assert_int_eq(mm_body_str(b, "second"), MM_OK);
    ck_assert_ptr_eq(mm_body_data(b), before); /* no new allocation */
    assert_bytes("\xa6second", 7);
    msgpack_pack_int64(mm_body_packer(b), 7); /* the packer still writes into the builder */
    assert_bytes("\xa6second\x07", 8);
}
END_TEST

START_TEST(bad_arguments)
{
    ck_assert_int_eq(mm_body_str(b, "x"), MM_OK);
    ck_assert_int_eq(mm_body_str(b, NULL), MM_EINVAL);
    ck_assert_int_eq(mm_body_bin(b, NULL, 3), MM_EINVAL);
    assert_bytes("\xa1x", 2); /* nothing written by the refused calls */
    ck_assert_int_eq(mm_body_str(NULL, "x"), MM_EINVAL);
    ck_assert_int_eq(mm_body_bin(NULL, "x", 1), MM_EINVAL);
    ck_assert_ptr_null(mm_body_packer(NULL));
    ck_assert_ptr_null(mm_body_data(NULL));
    ck_assert_uint_eq(mm_body_len(NULL), 0);
    mm_body_reset(NULL);
    mm_body_free(NULL); /* a no-op: a crash here fails the test (CK_FORK) */
}
END_TEST

int
main(void)
{
    Suite *s = suite_create("body");
    TCase *tc = tcase_create("builder");
    tcase_add_checked_fixture(tc, setup, teardown);
    tcase_add_test(tc, a_new_body_is_empty);
    tcase_add_test(tc, packer_builds_a_map_that_reads_back);
    tcase_add_test(tc, str_writes_exact_bytes);
    tcase_add_test(tc, bin_writes_exact_bytes_nul_included);
    tcase_add_test(tc, large_bin_round_trips);
    tcase_add_test(tc, reset_empties_and_reuses_the_memory);
    tcase_add_test(tc, bad_arguments);
    suite_add_tcase(s, tc);
    return mmt_run(s);
}
