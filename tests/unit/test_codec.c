/* Unit: the wire codecs (lib/codec.h): the byte buffer, JSON <-> msgpack in
 * both directions and what each refuses, msgpack validation, and gzip with
 * its output limit, concatenated members and refusals. */
#include <check.h>
#include <math.h>
#include <stdbool.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include <zlib.h>

#include "codec.h"
#include "micromsg.h"
#include "mmt.h"

static mmi_buf_t out, back, again;
static char err[256];
static msgpack_zone zone; /* everything unpacked by a test lives until its end */

static void
setup(void)
{
    ck_assert(msgpack_zone_init(&zone, 4096));
}

static void
teardown(void)
{
    mmi_buf_free(&out);
    mmi_buf_free(&back);
    mmi_buf_free(&again);
    msgpack_zone_destroy(&zone);
}

/* ---- helpers ------------------------------------------------------------ */

static msgpack_object
unpack(const mmi_buf_t *b)
{
    msgpack_object obj;
    size_t off = 0;
    ck_assert_int_eq(msgpack_unpack(b->data, b->len, &off, &zone, &obj), MSGPACK_UNPACK_SUCCESS);
    ck_assert_uint_eq(off, b->len);
    return obj;
}

/* JSON -> msgpack (in `out`) -> JSON (in `back`, NUL-terminated) -> msgpack
 * again, which must be the same bytes. Returns the JSON text written. */
static const char *
round_trip(const char *json)
{
    size_t len = strlen(json);
    mmi_buf_reset(&out);
    mmi_buf_reset(&back);
    mmi_buf_reset(&again);
    ck_assert_msg(mmi_json_to_msgpack(json, len, &out, err, sizeof err) == MM_OK, "%s: %s", json,
                  err);
    ck_assert_msg(mmi_msgpack_check(out.data, out.len, err, sizeof err) == MM_OK, "%s", err);
    msgpack_object obj = unpack(&out);
    ck_assert_msg(mmi_msgpack_to_json(&obj, &back, err, sizeof err) == MM_OK, "%s", err);
    ck_assert_int_eq(mmi_json_to_msgpack(back.data, back.len, &again, err, sizeof err), MM_OK);
    ck_assert_uint_eq(again.len, out.len);
    ck_assert_mem_eq(again.data, out.data, out.len);
    ck_assert_int_eq(mmi_buf_append(&back, "", 1), MM_OK);
    back.len--;
    return back.data;
}

/* msgpack_object -> JSON must be refused with MM_EINVAL, a reason containing
 * `reason`, and `back` left as it was. */
static void
refuse(const mmi_buf_t *packed, const char *reason)
{
    msgpack_object obj = unpack(packed);
    mmi_buf_reset(&back);
    ck_assert_int_eq(mmi_buf_append(&back, "keep", 4), MM_OK);
    err[0] = '\0';
    ck_assert_int_eq(mmi_msgpack_to_json(&obj, &back, err, sizeof err), MM_EINVAL);
    ck_assert_msg(strstr(err, reason) != NULL, "'%s' lacks '%s'", err, reason);
    ck_assert_uint_eq(back.len, 4);
}

static msgpack_packer pk;

static void
pack_begin(void)
{
    mmi_buf_reset(&out);
    msgpack_packer_init(&pk, &out, mmi_buf_write);
}

/* ---- buffer ------------------------------------------------------------- */

/* Appends n times 10 bytes; returns how many times the capacity changed. */
static size_t
append_tens(mmi_buf_t *b, int n)
{
    size_t changes = 0, cap = b->cap;
    for (int i = 0; i < n; i++) {
        ck_assert_int_eq(mmi_buf_append(b, "0123456789", 10), MM_OK);
        changes += b->cap != cap;
        cap = b->cap;
    }
    return changes;
}

START_TEST(buffer_grows_geometrically)
{
    mmi_buf_t b = {0};
    size_t reallocs = append_tens(&b, 1000), cap = b.cap;
    ck_assert_uint_eq(b.len, 10000);
    ck_assert_uint_ge(b.cap, b.len);
    ck_assert_uint_le(reallocs, 10);
    ck_assert_mem_eq(b.data + 9990, "0123456789", 10);
    mmi_buf_reset(&b);
    ck_assert_uint_eq(b.len, 0);
    ck_assert_uint_eq(b.cap, cap);
    mmi_buf_free(&b);
    ck_assert_ptr_null(b.data);
    ck_assert_uint_eq(b.cap, 0);
}
END_TEST

START_TEST(buffer_refuses_overflow)
{
    mmi_buf_t b = {0};
    ck_assert_int_eq(mmi_buf_append(&b, "abc", 3), MM_OK);
    ck_assert_int_eq(mmi_buf_reserve(&b, SIZE_MAX), MM_ENOMEM);
    ck_assert_int_eq(mmi_buf_reserve(&b, SIZE_MAX - 2), MM_ENOMEM);
    ck_assert_uint_eq(b.len, 3);
    ck_assert_mem_eq(b.data, "abc", 3);
    ck_assert_int_eq(mmi_buf_append(&b, NULL, 0), MM_OK);
    mmi_buf_free(&b);
}
END_TEST

START_TEST(bounded_reserve_stays_within_its_bound)
{
    mmi_buf_t b = {0};
    ck_assert_int_eq(mmi_buf_reserve_max(&b, 10, 1000), MM_OK);
    ck_assert_uint_ge(b.cap, 10);
    ck_assert_uint_le(b.cap, 1000);
    b.len = b.cap;
    ck_assert_int_eq(mmi_buf_reserve_max(&b, 1, 100), MM_OK);
    ck_assert_uint_le(b.cap, b.len + 100); /* doubling would have gone further */
    ck_assert_uint_ge(b.cap, b.len + 1);
    mmi_buf_free(&b);
}
END_TEST

START_TEST(packer_writes_through_the_buffer)
{
    pack_begin();
    ck_assert_int_eq(msgpack_pack_array(&pk, 2), 0);
    ck_assert_int_eq(msgpack_pack_int64(&pk, 1), 0);
    ck_assert_int_eq(msgpack_pack_int64(&pk, -1), 0);
    ck_assert_uint_eq(out.len, 3);
    ck_assert_mem_eq(out.data, "\x92\x01\xff", 3);
}
END_TEST

/* ---- JSON -> msgpack -> JSON ---------------------------------------------- */

struct trip {
    const char *in, *want;
};

static const struct trip trips[] = {
    {"{\"a\":1,\"b\":[true,false,null],\"c\":{\"d\":\"e\"}}",
     "{\"a\":1,\"b\":[true,false,null],\"c\":{\"d\":\"e\"}}"},
    {"[[1,[2,[3,[]]]],{},[{}]]", "[[1,[2,[3,[]]]],{},[{}]]"},
    {" { \"z\" : 1 , \"a\" : 2 } ", "{\"z\":1,\"a\":2}"}, /* key order kept */
    {"{\"a\":1,\"b\":2,\"a\":3}", "{\"a\":3,\"b\":2}"},   /* duplicate: first place, last value */
    {"\"tab\\t nl\\n cr\\r bs\\\\ q\\\" ff\\f b\\b ctl\\u0001\\u001f sl\\/ del\x7f\"",
     "\"tab\\t nl\\n cr\\r bs\\\\ q\\\" ff\\f b\\b ctl\\u0001\\u001f sl/ del\x7f\""},
    {"\"\\u00e9\\u4E2D\\ud83d\\ude00\"", "\"\xc3\xa9\xe4\xb8\xad\xf0\x9f\x98\x80\""},
    {"\"\xc3\xa9 raw\"", "\"\xc3\xa9 raw\""},
    {"\"\"", "\"\""},
    {"{\"\":\"\"}", "{\"\":\"\"}"}, /* msgpack-c unpacks "" with a NULL ptr */
    {"9223372036854775807", "9223372036854775807"},
    {"-9223372036854775808", "-9223372036854775808"},
    {"[0,-0,-1,127,128,-32,-33,255,256,65535,65536,4294967296]",
     "[0,0,-1,127,128,-32,-33,255,256,65535,65536,4294967296]"},
    {"1.5", "1.5"},
    {"0.1", "0.1"},
    {"-0.0", "-0.0"},
    {"2.0", "2.0"},
    {"1E2", "100.0"},
    {"1e300", "1e+300"},
    {"-2.5e-300", "-2.5e-300"},
    {"0.30000000000000004", "0.30000000000000004"},
    {"1.7976931348623157e308", "1.7976931348623157e+308"},
    {"true", "true"},
    {"false", "false"},
    {"null", "null"},
    {"\n\t 42 \r\n", "42"},
    {"\"top\"", "\"top\""},
};

START_TEST(json_round_trips)
{
    const struct trip *t = &trips[_i];
    ck_assert_str_eq(round_trip(t->in), t->want);
}
END_TEST

START_TEST(json_types_map_to_msgpack_types)
{
    round_trip("[1,1.0,-1,\"s\",true,null,{}]");
    msgpack_object o = unpack(&out);
    ck_assert_int_eq(o.type, MSGPACK_OBJECT_ARRAY);
    ck_assert_uint_eq(o.via.array.size, 7);
    msgpack_object *v = o.via.array.ptr;
    ck_assert_int_eq(v[0].type, MSGPACK_OBJECT_POSITIVE_INTEGER);
    ck_assert_int_eq(v[1].type, MSGPACK_OBJECT_FLOAT64);
    ck_assert_int_eq(v[2].type, MSGPACK_OBJECT_NEGATIVE_INTEGER);
    ck_assert_int_eq(v[3].type, MSGPACK_OBJECT_STR);
    ck_assert_int_eq(v[4].type, MSGPACK_OBJECT_BOOLEAN);
    ck_assert_int_eq(v[5].type, MSGPACK_OBJECT_NIL);
    ck_assert_int_eq(v[6].type, MSGPACK_OBJECT_MAP);
    /* integers take the smallest encoding */
    round_trip("[1,-1,300]");
    ck_assert_uint_eq(out.len, 6);
    ck_assert_mem_eq(out.data, "\x93\x01\xff\xcd\x01\x2c", 6);
}
END_TEST

START_TEST(embedded_nul_survives)
{
    ck_assert_str_eq(round_trip("\"a\\u0000b\""), "\"a\\u0000b\"");
    ck_assert_uint_eq(out.len, 4);
    ck_assert_mem_eq(out.data,
                     "\xa3"
                     "a\0b",
                     4);
}
END_TEST

START_TEST(appends_after_existing_bytes)
{
    mmi_buf_reset(&out);
    ck_assert_int_eq(mmi_buf_append(&out, "xy", 2), MM_OK);
    ck_assert_int_eq(mmi_json_to_msgpack("[1]", 3, &out, err, sizeof err), MM_OK);
    ck_assert_uint_eq(out.len, 4);
    ck_assert_mem_eq(out.data, "xy\x91\x01", 4);
}
END_TEST

/* ---- msgpack -> JSON: what JSON can and cannot carry --------------------- */

START_TEST(extreme_integers_floats_and_integer_keys)
{
    pack_begin();
    msgpack_pack_array(&pk, 5);
    msgpack_pack_uint64(&pk, UINT64_MAX);
    msgpack_pack_int64(&pk, INT64_MIN);
    msgpack_pack_float(&pk, 0.1f);
    msgpack_pack_float(&pk, 1.0f);
    msgpack_pack_map(&pk, 2);
    msgpack_pack_int64(&pk, 5);
    msgpack_pack_true(&pk);
    msgpack_pack_int64(&pk, -7);
    msgpack_pack_nil(&pk);
    msgpack_object o = unpack(&out);
    mmi_buf_reset(&back);
    ck_assert_int_eq(mmi_msgpack_to_json(&o, &back, err, sizeof err), MM_OK);
    const char *want =
        "[18446744073709551615,-9223372036854775808,0.1,1.0,{\"5\":true,\"-7\":null}]";
    ck_assert_uint_eq(back.len, strlen(want));
    ck_assert_mem_eq(back.data, want, back.len);
}
END_TEST

static uint64_t
xorshift(uint64_t *x)
{
    *x ^= *x << 13;
    *x ^= *x >> 7;
    *x ^= *x << 17;
    return *x;
}

/* The JSON text of one double, read back as a double by the JSON decoder. */
static double
double_through_json(double d, bool f32)
{
    pack_begin();
    if (f32)
        msgpack_pack_float(&pk, (float) d);
    else
        msgpack_pack_double(&pk, d);
    msgpack_object o = unpack(&out);
    mmi_buf_reset(&back);
    mmi_buf_reset(&again);
    ck_assert_int_eq(mmi_msgpack_to_json(&o, &back, err, sizeof err), MM_OK);
    ck_assert_int_eq(mmi_json_to_msgpack(back.data, back.len, &again, err, sizeof err), MM_OK);
    o = unpack(&again);
    ck_assert_int_eq(o.type, MSGPACK_OBJECT_FLOAT64); /* "1.0" stays a real */
    return o.via.f64;
}

START_TEST(floats_read_back_exactly)
{
    uint64_t x = 0x2545f4914f6cdd1du;
    for (int i = 0; i < 20000; i++) {
        uint64_t bits = xorshift(&x);
        double d;
        float f;
        uint32_t bits32 = (uint32_t) bits;
        memcpy(&d, &bits, sizeof d);
        memcpy(&f, &bits32, sizeof f);
        if (i % 4 == 0) /* integral values too */
            d = (double) (int64_t) (bits >> (bits % 64));
        if (isfinite(d)) {
            double got = double_through_json(d, false);
            ck_assert_msg(memcmp(&got, &d, sizeof d) == 0, "%.17g came back as %.17g", d, got);
        }
        if (isfinite(f))
            ck_assert_msg((float) double_through_json(f, true) == f, "float %.9g", (double) f);
    }
}
END_TEST

START_TEST(bin_and_ext_are_refused)
{
    pack_begin();
    msgpack_pack_bin(&pk, 3);
    msgpack_pack_bin_body(&pk, "a\0b", 3);
    refuse(&out, "bin");
    pack_begin();
    msgpack_pack_ext(&pk, 4, 7);
    msgpack_pack_ext_body(&pk, "abcd", 4);
    refuse(&out, "ext (type 7)");
    /* deep inside, and nothing written */
    pack_begin();
    msgpack_pack_map(&pk, 1);
    msgpack_pack_str_with_body(&pk, "k", 1);
    msgpack_pack_array(&pk, 2);
    msgpack_pack_int64(&pk, 1);
    msgpack_pack_bin_with_body(&pk, "", 0);
    refuse(&out, "bin");
}
END_TEST

START_TEST(nan_and_infinities_are_refused)
{
    const double bad[] = {NAN, INFINITY, -INFINITY};
    for (int i = 0; i < 3; i++) {
        pack_begin();
        msgpack_pack_double(&pk, bad[i]);
        refuse(&out, "NaN");
        pack_begin();
        msgpack_pack_float(&pk, (float) bad[i]);
        refuse(&out, "NaN");
    }
}
END_TEST

static const char *const bad_utf8[] = {
    "\xff",             /* never valid */
    "a\xc3(",           /* bad continuation */
    "\xc0\xaf",         /* overlong '/' */
    "\xe0\x80\xaf",     /* overlong, 3 bytes */
    "\xed\xa0\x80",     /* surrogate U+D800 */
    "\xe2\x82",         /* truncated */
    "\xf4\x90\x80\x80", /* above U+10FFFF */
    "\xf8\x88\x80\x80\x80",
    "ok\x80", /* lone continuation */
};

START_TEST(invalid_utf8_is_refused)
{
    const char *s = bad_utf8[_i];
    pack_begin();
    msgpack_pack_str_with_body(&pk, s, strlen(s));
    refuse(&out, "UTF-8");
    pack_begin(); /* as a map key too */
    msgpack_pack_map(&pk, 1);
    msgpack_pack_str_with_body(&pk, s, strlen(s));
    msgpack_pack_nil(&pk);
    refuse(&out, "UTF-8");
}
END_TEST

START_TEST(valid_utf8_edges_pass)
{
    const char *s = "\x7f\xc2\x80\xdf\xbf\xe0\xa0\x80\xed\x9f\xbf\xee\x80\x80\xef\xbf\xbf"
                    "\xf0\x90\x80\x80\xf4\x8f\xbf\xbf";
    pack_begin();
    msgpack_pack_str_with_body(&pk, s, strlen(s));
    msgpack_object o = unpack(&out);
    mmi_buf_reset(&back);
    ck_assert_int_eq(mmi_msgpack_to_json(&o, &back, err, sizeof err), MM_OK);
    ck_assert_uint_eq(back.len, strlen(s) + 2);
    ck_assert_mem_eq(back.data + 1, s, strlen(s));
}
END_TEST

START_TEST(map_keys_must_be_strings_or_integers)
{
    for (int i = 0; i < 5; i++) {
        pack_begin();
        msgpack_pack_map(&pk, 1);
        if (i == 0)
            msgpack_pack_nil(&pk);
        else if (i == 1)
            msgpack_pack_true(&pk);
        else if (i == 2)
            msgpack_pack_double(&pk, 1.5);
        else if (i == 3)
            msgpack_pack_array(&pk, 0);
        else
            msgpack_pack_bin_with_body(&pk, "k", 1);
        msgpack_pack_int64(&pk, 1);
        refuse(&out, "key");
    }
    /* A NUL in a key: jansson (every micromsg peer) could not read it back. */
    pack_begin();
    msgpack_pack_map(&pk, 1);
    msgpack_pack_str_with_body(&pk, "a\0b", 3);
    msgpack_pack_int64(&pk, 1);
    refuse(&out, "NUL");
}
END_TEST

/* ---- malformed JSON ------------------------------------------------------- */

static const char *const bad_json[] = {
    "",
    "   ",
    "{\"a\":1",
    "[1,2",
    "\"open",
    "[1,2] x",
    "{} {}",
    "1 2",
    "[1,]",
    "{\"a\"}",
    "nul",
    "NaN",
    "Infinity",
    "01",
    "'single'",
    "\"\\ud800\"",
    "\"\\x41\"",
    "\"\xff\"",
    "\"ctl\x01\"",
    "9223372036854775808",
    "-9223372036854775809",
    "18446744073709551615",
    "1e400",
    "{\"a\\u0000b\":1}", /* jansson: NUL in a key is not supported */
};

START_TEST(malformed_json_is_refused)
{
    const char *s = bad_json[_i];
    mmi_buf_reset(&out);
    ck_assert_int_eq(mmi_buf_append(&out, "keep", 4), MM_OK);
    err[0] = '\0';
    ck_assert_msg(mmi_json_to_msgpack(s, strlen(s), &out, err, sizeof err) == MM_EDECODE,
                  "'%s' accepted", s);
    ck_assert_msg(strncmp(err, "bad JSON: ", 10) == 0, "%s", err);
    ck_assert_uint_eq(out.len, 4);
}
END_TEST

START_TEST(trailing_bytes_after_a_nul_are_refused)
{
    ck_assert_int_eq(mmi_json_to_msgpack("1\0", 2, &out, err, sizeof err), MM_EDECODE);
    ck_assert_int_eq(mmi_json_to_msgpack("[1]\0[2]", 7, &out, err, sizeof err), MM_EDECODE);
    ck_assert_int_eq(mmi_json_to_msgpack(NULL, 0, &out, err, sizeof err), MM_EDECODE);
}
END_TEST

/* n nested arrays around 1, or objects {"k":...} when objects is set. */
static char *
nested(int n, int objects)
{
    char *s = malloc((size_t) n * 6 + 2);
    size_t k = 0;
    for (int i = 0; i < n; i++) {
        memcpy(s + k, objects ? "{\"k\":" : "[", objects ? 5 : 1);
        k += objects ? 5 : 1;
    }
    s[k++] = '1';
    for (int i = 0; i < n; i++)
        s[k++] = objects ? '}' : ']';
    s[k] = '\0';
    return s;
}

START_TEST(json_depth_is_limited)
{
    for (int objects = 0; objects < 2; objects++) {
        char *ok = nested(MMI_CODEC_MAX_DEPTH, objects);
        round_trip(ok);
        free(ok);
        char *deep = nested(MMI_CODEC_MAX_DEPTH + 1, objects);
        ck_assert_int_eq(mmi_json_to_msgpack(deep, strlen(deep), &out, err, sizeof err),
                         MM_EDECODE);
        ck_assert_ptr_nonnull(strstr(err, "deeper"));
        free(deep);
        char *very = nested(100000, objects); /* jansson's own limit, no stack overflow */
        ck_assert_int_eq(mmi_json_to_msgpack(very, strlen(very), &out, err, sizeof err),
                         MM_EDECODE);
        free(very);
    }
}
END_TEST

/* ---- msgpack validation --------------------------------------------------- */

/* One of everything, every length width included. */
static void
pack_everything(void)
{
    static char big[70000];
    memset(big, 'x', sizeof big);
    pack_begin();
    msgpack_pack_map(&pk, 3);
    msgpack_pack_str_with_body(&pk, "all", 3);
    msgpack_pack_array(&pk, 30);
    msgpack_pack_nil(&pk);
    msgpack_pack_true(&pk);
    msgpack_pack_false(&pk);
    const int64_t ints[] = {0, 127, -32, 200, -100, 40000, -40000, 1LL << 33, -(1LL << 33)};
    for (int i = 0; i < 9; i++)
        msgpack_pack_int64(&pk, ints[i]);
    msgpack_pack_uint64(&pk, UINT64_MAX);
    msgpack_pack_float(&pk, 1.5f);
    msgpack_pack_double(&pk, 2.5);
    msgpack_pack_str_with_body(&pk, big, 31);
    msgpack_pack_str_with_body(&pk, big, 200);
    msgpack_pack_str_with_body(&pk, big, 300);
    msgpack_pack_str_with_body(&pk, big, sizeof big);
    msgpack_pack_bin_with_body(&pk, big, 10);
    msgpack_pack_bin_with_body(&pk, big, 300);
    msgpack_pack_bin_with_body(&pk, big, sizeof big);
    const size_t ext_sizes[] = {1, 2, 4, 8, 16, 3, 300, 70000};
    for (int i = 0; i < 8; i++) {
        msgpack_pack_ext(&pk, ext_sizes[i], 1);
        msgpack_pack_ext_body(&pk, big, ext_sizes[i]);
    }
    msgpack_pack_str_with_body(&pk, "array16", 7);
    msgpack_pack_array(&pk, 20);
    for (int i = 0; i < 20; i++)
        msgpack_pack_int64(&pk, i);
    msgpack_pack_str_with_body(&pk, "map16", 5);
    msgpack_pack_map(&pk, 16);
    for (int i = 0; i < 16; i++) {
        msgpack_pack_int64(&pk, i);
        msgpack_pack_array(&pk, 0);
    }
}

START_TEST(msgpack_check_accepts_every_type_and_refuses_every_prefix)
{
    pack_everything();
    ck_assert_int_eq(mmi_msgpack_check(out.data, out.len, err, sizeof err), MM_OK);
    unpack(&out); /* msgpack-c agrees */
    for (size_t cut = 0; cut < out.len; cut += cut < 400 ? 1 : 997) {
        err[0] = '\0';
        ck_assert_msg(mmi_msgpack_check(out.data, cut, err, sizeof err) == MM_EDECODE,
                      "prefix %zu accepted", cut);
        ck_assert_ptr_nonnull(strstr(err, "truncated"));
    }
    ck_assert_int_eq(mmi_buf_append(&out, "\xc0", 1), MM_OK);
    ck_assert_int_eq(mmi_msgpack_check(out.data, out.len, err, sizeof err), MM_EDECODE);
    ck_assert_ptr_nonnull(strstr(err, "1 trailing byte"));
}
END_TEST

START_TEST(msgpack_check_refuses_counts_beyond_the_data)
{
    /* counts larger than the bytes left: refused before anyone allocates for them */
    const char *lies[] = {"\xdd\xff\xff\xff\xff", "\xdf\x00\x10\x00\x00\x01\x01", "\x93\x01\x02",
                          "\xdb\x00\x00\x00\x05xxxx", "\xc9\x00\x00\x00\x01"};
    const size_t lens[] = {5, 7, 3, 9, 5};
    for (int i = 0; i < 5; i++) {
        ck_assert_int_eq(mmi_msgpack_check(lies[i], lens[i], err, sizeof err), MM_EDECODE);
        ck_assert_ptr_nonnull(strstr(err, "truncated"));
    }
}
END_TEST

START_TEST(msgpack_check_refuses_reserved_bytes_and_trailing_bytes)
{
    ck_assert_int_eq(mmi_msgpack_check("\xc1", 1, err, sizeof err), MM_EDECODE);
    ck_assert_ptr_nonnull(strstr(err, "0xc1"));
    ck_assert_int_eq(mmi_msgpack_check("\x92\x01\xc1", 3, err, sizeof err), MM_EDECODE);
    ck_assert_int_eq(mmi_msgpack_check("", 0, err, sizeof err), MM_EDECODE);
    ck_assert_int_eq(mmi_msgpack_check("\x01\x02", 2, err, sizeof err), MM_EDECODE);
    ck_assert_ptr_nonnull(strstr(err, "trailing"));
    ck_assert_int_eq(mmi_msgpack_check("\x01", 1, err, sizeof err), MM_OK);
    ck_assert_int_eq(mmi_msgpack_check("\x90", 1, err, sizeof err), MM_OK);
}
END_TEST

START_TEST(msgpack_depth_matches_what_msgpack_c_reads)
{
    unsigned char b[MMI_CODEC_MAX_DEPTH + 2];
    memset(b, 0x91, sizeof b); /* [[[...1...]]] */
    b[MMI_CODEC_MAX_DEPTH] = 0x01;
    ck_assert_int_eq(mmi_msgpack_check(b, MMI_CODEC_MAX_DEPTH + 1, err, sizeof err), MM_OK);
    mmi_buf_reset(&out);
    ck_assert_int_eq(mmi_buf_append(&out, b, MMI_CODEC_MAX_DEPTH + 1), MM_OK);
    msgpack_object o = unpack(&out); /* the deepest accepted body unpacks */
    mmi_buf_reset(&back);
    ck_assert_int_eq(mmi_msgpack_to_json(&o, &back, err, sizeof err), MM_OK);
    b[MMI_CODEC_MAX_DEPTH] = 0x91;
    b[MMI_CODEC_MAX_DEPTH + 1] = 0x01;
    ck_assert_int_eq(mmi_msgpack_check(b, sizeof b, err, sizeof err), MM_EDECODE);
    ck_assert_ptr_nonnull(strstr(err, "deeper"));
    /* msgpack-c itself cannot read one level more: the limit is not arbitrary */
    size_t off = 0;
    msgpack_object deep;
    ck_assert_int_lt(msgpack_unpack((const char *) b, sizeof b, &off, &zone, &deep), 0);
}
END_TEST

START_TEST(msgpack_to_json_refuses_a_too_deep_object)
{
    msgpack_object levels[MMI_CODEC_MAX_DEPTH + 1];
    for (int i = 0; i <= MMI_CODEC_MAX_DEPTH; i++) {
        levels[i].type = MSGPACK_OBJECT_ARRAY;
        levels[i].via.array.size = i < MMI_CODEC_MAX_DEPTH ? 1 : 0;
        levels[i].via.array.ptr = i < MMI_CODEC_MAX_DEPTH ? &levels[i + 1] : NULL;
    }
    ck_assert_int_eq(mmi_msgpack_to_json(&levels[0], &back, err, sizeof err), MM_EINVAL);
    ck_assert_ptr_nonnull(strstr(err, "deeper"));
    ck_assert_int_eq(mmi_msgpack_to_json(&levels[1], &back, err, sizeof err), MM_OK);
}
END_TEST

/* ---- gzip ------------------------------------------------------------------ */

static void
gzip_round_trip(const void *data, size_t len)
{
    mmi_buf_reset(&out);
    mmi_buf_reset(&back);
    ck_assert_int_eq(mmi_gzip_deflate(data, len, &out), MM_OK);
    ck_assert_uint_ge(out.len, 18); /* header + trailer */
    ck_assert_mem_eq(out.data, "\x1f\x8b\x08", 3);
    ck_assert_int_eq(mmi_gzip_inflate(out.data, out.len, len, &back, err, sizeof err), MM_OK);
    ck_assert_uint_eq(back.len, len);
    if (len > 0)
        ck_assert_int_eq(memcmp(back.data, data, len), 0);
}

START_TEST(gzip_round_trips)
{
    gzip_round_trip(NULL, 0);
    gzip_round_trip("hello", 5);
    size_t n = 3 << 20;
    char *text = malloc(n);
    for (size_t i = 0; i < n; i++)
        text[i] = "{\"key\":\"value\",\"n\":12345}"[i % 26];
    gzip_round_trip(text, n);
    ck_assert_uint_lt(out.len, n / 50);
    free(text);
    n = 1 << 20;
    unsigned char *noise = malloc(n);
    uint64_t x = 0x9e3779b97f4a7c15u;
    for (size_t i = 0; i < n; i++) {
        x ^= x << 13, x ^= x >> 7, x ^= x << 17;
        noise[i] = (unsigned char) x;
    }
    gzip_round_trip(noise, n);
    ck_assert_uint_gt(out.len, n); /* incompressible */
    free(noise);
}
END_TEST

START_TEST(gzip_reads_what_gzip_1_writes)
{
    /* printf 'hello\n' | gzip -cn */
    static const unsigned char gz[] = {0x1f, 0x8b, 0x08, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00,
                                       0x03, 0xcb, 0x48, 0xcd, 0xc9, 0xc9, 0xe7, 0x02, 0x00,
                                       0x20, 0x30, 0x3a, 0x36, 0x06, 0x00, 0x00, 0x00};
    ck_assert_int_eq(mmi_gzip_inflate(gz, sizeof gz, 100, &back, err, sizeof err), MM_OK);
    ck_assert_uint_eq(back.len, 6);
    ck_assert_mem_eq(back.data, "hello\n", 6);
}
END_TEST

START_TEST(gzip_limit_stops_a_bomb)
{
    size_t n = 10 << 20, limit = 1 << 20;
    char *zeros = calloc(1, n);
    ck_assert_int_eq(mmi_gzip_deflate(zeros, n, &out), MM_OK);
    free(zeros);
    ck_assert_uint_lt(out.len, 64 << 10);
    ck_assert_int_eq(mmi_buf_append(&back, "keep", 4), MM_OK);
    err[0] = '\0';
    ck_assert_int_eq(mmi_gzip_inflate(out.data, out.len, limit, &back, err, sizeof err),
                     MM_ETOOBIG);
    ck_assert_ptr_nonnull(strstr(err, "more than 1048576 bytes"));
    ck_assert_uint_eq(back.len, 4);
    ck_assert_uint_le(back.cap, 4 + limit + 1); /* memory bounded by the limit */
}
END_TEST

START_TEST(gzip_limit_is_exact)
{
    ck_assert_int_eq(mmi_gzip_deflate("0123456789", 10, &out), MM_OK);
    ck_assert_int_eq(mmi_gzip_inflate(out.data, out.len, 10, &back, err, sizeof err), MM_OK);
    ck_assert_uint_eq(back.len, 10);
    mmi_buf_reset(&back);
    ck_assert_int_eq(mmi_gzip_inflate(out.data, out.len, 9, &back, err, sizeof err), MM_ETOOBIG);
    ck_assert_uint_eq(back.len, 0);
    ck_assert_int_eq(mmi_gzip_deflate("", 0, &again), MM_OK);
    ck_assert_int_eq(mmi_gzip_inflate(again.data, again.len, 0, &back, err, sizeof err), MM_OK);
}
END_TEST

static void
inflate_refused(const void *data, size_t len, const char *reason)
{
    mmi_buf_reset(&back);
    ck_assert_int_eq(mmi_buf_append(&back, "keep", 4), MM_OK);
    err[0] = '\0';
    ck_assert_int_eq(mmi_gzip_inflate(data, len, 1 << 20, &back, err, sizeof err), MM_EDECODE);
    ck_assert_msg(strstr(err, reason) != NULL, "'%s' lacks '%s'", err, reason);
    ck_assert_uint_eq(back.len, 4);
}

START_TEST(gzip_corrupt_and_truncated_are_refused)
{
    char text[2000];
    for (size_t i = 0; i < sizeof text; i++)
        text[i] = (char) ('a' + (i * 7) % 26);
    ck_assert_int_eq(mmi_gzip_deflate(text, sizeof text, &out), MM_OK);
    size_t n = out.len;
    char *bad = malloc(n);
    memcpy(bad, out.data, n);
    bad[n - 6] ^= 0x55; /* the CRC-32 */
    inflate_refused(bad, n, "check");
    memcpy(bad, out.data, n);
    bad[n - 2] ^= 0x01; /* the length */
    inflate_refused(bad, n, "bad gzip");
    memcpy(bad, out.data, n);
    bad[0] = 0x1e; /* the magic */
    inflate_refused(bad, n, "bad gzip");
    memcpy(bad, out.data, n);
    bad[12] ^= 0xff; /* the deflate data */
    inflate_refused(bad, n, "bad gzip");
    const size_t cuts[] = {1, 2, 9, 10, 11, n / 2, n - 8, n - 4, n - 1};
    for (int i = 0; i < 9; i++)
        inflate_refused(out.data, cuts[i], "bad gzip");
    inflate_refused(out.data, n - 1, "truncated");
    inflate_refused("", 0, "no data");
    free(bad);
}
END_TEST

START_TEST(zlib_and_raw_deflate_streams_are_not_gzip)
{
    unsigned char z[256];
    uLongf zlen = sizeof z;
    ck_assert_int_eq(compress2(z, &zlen, (const Bytef *) "hello hello", 11, 6), Z_OK);
    inflate_refused(z, zlen, "header");
    z_stream zs = {0};
    ck_assert_int_eq(deflateInit2(&zs, 6, Z_DEFLATED, -15, 8, Z_DEFAULT_STRATEGY), Z_OK);
    zs.next_in = (Bytef *) "hello hello";
    zs.avail_in = 11;
    zs.next_out = z;
    zs.avail_out = sizeof z;
    ck_assert_int_eq(deflate(&zs, Z_FINISH), Z_STREAM_END);
    inflate_refused(z, sizeof z - zs.avail_out, "bad gzip");
    deflateEnd(&zs);
}
END_TEST

START_TEST(gzip_concatenated_members_are_one_stream)
{
    ck_assert_int_eq(mmi_gzip_deflate("first ", 6, &out), MM_OK);
    ck_assert_int_eq(mmi_gzip_deflate("", 0, &out), MM_OK);
    ck_assert_int_eq(mmi_gzip_deflate("second", 6, &out), MM_OK);
    ck_assert_int_eq(mmi_gzip_inflate(out.data, out.len, 12, &back, err, sizeof err), MM_OK);
    ck_assert_uint_eq(back.len, 12);
    ck_assert_mem_eq(back.data, "first second", 12);
    /* the limit counts across members */
    mmi_buf_reset(&back);
    ck_assert_int_eq(mmi_gzip_inflate(out.data, out.len, 11, &back, err, sizeof err), MM_ETOOBIG);
}
END_TEST

START_TEST(gzip_trailing_garbage_is_refused)
{
    ck_assert_int_eq(mmi_gzip_deflate("data", 4, &out), MM_OK);
    ck_assert_int_eq(mmi_buf_append(&out, "xyz", 3), MM_OK);
    inflate_refused(out.data, out.len, "3 bytes of trailing garbage");
    out.len -= 3;
    ck_assert_int_eq(mmi_buf_append(&out, "\0\0\0\0", 4), MM_OK);
    inflate_refused(out.data, out.len, "trailing garbage");
    out.len -= 4;
    ck_assert_int_eq(mmi_buf_append(&out, "\x1f\x8b", 2), MM_OK); /* a member that never came */
    inflate_refused(out.data, out.len, "truncated");
}
END_TEST

int
main(void)
{
    Suite *s = suite_create("codec");
    TCase *tc = tcase_create("codec");
    tcase_add_checked_fixture(tc, setup, teardown);
    tcase_set_timeout(tc, 60);
    tcase_add_test(tc, buffer_grows_geometrically);
    tcase_add_test(tc, buffer_refuses_overflow);
    tcase_add_test(tc, bounded_reserve_stays_within_its_bound);
    tcase_add_test(tc, packer_writes_through_the_buffer);
    tcase_add_loop_test(tc, json_round_trips, 0, (int) (sizeof trips / sizeof trips[0]));
    tcase_add_test(tc, json_types_map_to_msgpack_types);
    tcase_add_test(tc, embedded_nul_survives);
    tcase_add_test(tc, appends_after_existing_bytes);
    tcase_add_test(tc, extreme_integers_floats_and_integer_keys);
    tcase_add_test(tc, floats_read_back_exactly);
    tcase_add_test(tc, bin_and_ext_are_refused);
    tcase_add_test(tc, nan_and_infinities_are_refused);
    tcase_add_loop_test(tc, invalid_utf8_is_refused, 0,
                        (int) (sizeof bad_utf8 / sizeof bad_utf8[0]));
    tcase_add_test(tc, valid_utf8_edges_pass);
    tcase_add_test(tc, map_keys_must_be_strings_or_integers);
    tcase_add_loop_test(tc, malformed_json_is_refused, 0,
                        (int) (sizeof bad_json / sizeof bad_json[0]));
    tcase_add_test(tc, trailing_bytes_after_a_nul_are_refused);
    tcase_add_test(tc, json_depth_is_limited);
    tcase_add_test(tc, msgpack_check_accepts_every_type_and_refuses_every_prefix);
    tcase_add_test(tc, msgpack_check_refuses_counts_beyond_the_data);
    tcase_add_test(tc, msgpack_check_refuses_reserved_bytes_and_trailing_bytes);
    tcase_add_test(tc, msgpack_depth_matches_what_msgpack_c_reads);
    tcase_add_test(tc, msgpack_to_json_refuses_a_too_deep_object);
    tcase_add_test(tc, gzip_round_trips);
    tcase_add_test(tc, gzip_reads_what_gzip_1_writes);
    tcase_add_test(tc, gzip_limit_stops_a_bomb);
    tcase_add_test(tc, gzip_limit_is_exact);
    tcase_add_test(tc, gzip_corrupt_and_truncated_are_refused);
    tcase_add_test(tc, zlib_and_raw_deflate_streams_are_not_gzip);
    tcase_add_test(tc, gzip_concatenated_members_are_one_stream);
    tcase_add_test(tc, gzip_trailing_garbage_is_refused);
    suite_add_tcase(s, tc);
    return mmt_run(s);
}
