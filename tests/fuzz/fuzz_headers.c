/* Fuzz target: the AMQP header conversions of lib/headers.c must never crash,
 * leak, read out of bounds or hit undefined behaviour, and must agree with
 * each other and with AMQP's own encoding (rabbitmq-c's amqp_encode_table
 * and amqp_decode_table). From the input bytes:
 *
 * 1. Incoming. The bytes as an AMQP field table (amqp_decode_table). When
 *    it decodes: mmi_mms_parse gives MM_OK or MM_EDECODE with a reason;
 *    mmi_header_str finds "idRequest" when it is a string; the map M1 of
 *    mmi_headers_to_msgpack holds every top-level entry but "__mms", in
 *    order, each value as documented (integers of every width by value,
 *    unsigned ones and timestamps as positive integers, f32 as float32,
 *    f64 and decimals as float64, UTF8 as str, bytes as bin, void as nil,
 *    arrays and tables alike, values nested MMI_CODEC_MAX_DEPTH deep cut to
 *    nil), and is never nested deeper than the codec accepts. The msgpack
 *    bytes B1 of M1, given back as user headers to mmi_hdrs_finish, are
 *    refused (MM_EINVAL and a reason) exactly when M1 holds an integer
 *    beyond int64 (from U64 or a timestamp). Accepted: the table encodes
 *    and decodes again (every encoded byte consumed), and its msgpack map M2
 *    packs to the bytes of M1 with float32 written as float64, the one
 *    conversion the round trip changes (an f32 goes out as f64; integers
 *    and decimals already came in as msgpack ints and float64).
 *
 * 2. Outgoing. The raw bytes as user headers to mmi_hdrs_finish, beside
 *    __mms fields and, for some inputs, a request id. Accepted exactly when
 *    the bytes are one msgpack map that AMQP can carry (str keys of at most
 *    255 bytes, no "__mms" at the top, no ext, no integer beyond int64,
 *    within the depth limit); refused with MM_EINVAL and a reason
 *    otherwise. Accepted: the table encodes and decodes; its __mms reads
 *    back the fields given; idRequest is the request id when the user gave
 *    none; the other headers pack to the input map's own msgpack bytes
 *    (float32 as float64). */
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "codec.h"
#include "headers.h"
#include "micromsg.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

#define ROUTE "fuzz.route"
#define RID "rid-1"

static void
check(int ok)
{
    if (!ok)
        abort();
}

static bool
bytes_eq(const void *a, size_t alen, const void *b, size_t blen)
{
    return alen == blen && (alen == 0 || memcmp(a, b, alen) == 0);
}

static bool
key_is(const msgpack_object *k, const char *s)
{
    return k->type == MSGPACK_OBJECT_STR && bytes_eq(k->via.str.ptr, k->via.str.size, s, strlen(s));
}

/* ---- msgpack helpers ---- */

static void
pack(const msgpack_object *o, mmi_buf_t *out)
{
    msgpack_packer pk;
    msgpack_packer_init(&pk, out, mmi_buf_write);
    check(msgpack_pack_object(&pk, *o) == 0);
}

/* In place: float32 becomes float64 (the value is already held as a double). */
static void
widen_floats(msgpack_object *o)
{
    if (o->type == MSGPACK_OBJECT_FLOAT32)
        o->type = MSGPACK_OBJECT_FLOAT64;
    for (uint32_t i = 0; o->type == MSGPACK_OBJECT_ARRAY && i < o->via.array.size; i++)
        widen_floats(&o->via.array.ptr[i]);
    for (uint32_t i = 0; o->type == MSGPACK_OBJECT_MAP && i < o->via.map.size; i++) {
        widen_floats(&o->via.map.ptr[i].key);
        widen_floats(&o->via.map.ptr[i].val);
    }
}

/* Container nesting, a container counting 1 (as mmi_msgpack_check counts). */
static int
nesting(const msgpack_object *o)
{
    int most = 0;
    for (uint32_t i = 0; o->type == MSGPACK_OBJECT_ARRAY && i < o->via.array.size; i++) {
        int d = nesting(&o->via.array.ptr[i]);
        most = d > most ? d : most;
    }
    for (uint32_t i = 0; o->type == MSGPACK_OBJECT_MAP && i < o->via.map.size; i++) {
        int d = nesting(&o->via.map.ptr[i].val);
        most = d > most ? d : most;
    }
    bool container = o->type == MSGPACK_OBJECT_ARRAY || o->type == MSGPACK_OBJECT_MAP;
    return most + container;
}

/* Whether AMQP can carry the value, nested `depth` deep (top-level values: 1). */
static bool
sendable(const msgpack_object *o, int depth)
{
    switch (o->type) {
    case MSGPACK_OBJECT_POSITIVE_INTEGER:
        return o->via.u64 <= INT64_MAX;
    case MSGPACK_OBJECT_EXT:
        return false;
    case MSGPACK_OBJECT_ARRAY:
        for (uint32_t i = 0; i < o->via.array.size; i++)
            if (!sendable(&o->via.array.ptr[i], depth + 1))
                return false;
        return depth < MMI_CODEC_MAX_DEPTH;
    case MSGPACK_OBJECT_MAP:
        for (uint32_t i = 0; i < o->via.map.size; i++) {
            const msgpack_object_kv *kv = &o->via.map.ptr[i];
            if (kv->key.type != MSGPACK_OBJECT_STR || kv->key.via.str.size > 255 ||
                (depth == 0 && key_is(&kv->key, "__mms")) || !sendable(&kv->val, depth + 1))
                return false;
        }
        return depth < MMI_CODEC_MAX_DEPTH;
    default:
        return true;
    }
}

/* ---- AMQP helpers ---- */

/*
 * Encode `t` (made from `mp_len` bytes of msgpack), decode it again (into
 * `pool`, pointing into `wire`): it must come back whole. The buffer is
 * sized once: each msgpack byte takes at most 9 AMQP bytes (a fixint
 * becomes an I64), plus __mms and idRequest. rabbitmq-c reports a buffer
 * too small by one kind byte as AMQP_STATUS_BAD_AMQP_DATA, so growing the
 * buffer on AMQP_STATUS_TABLE_TOO_BIG alone would not do.
 */
static amqp_table_t
encode_decode(amqp_table_t *t, size_t mp_len, mmi_buf_t *wire, amqp_pool_t *pool)
{
    size_t cap = 9 * mp_len + 1024, off = 0;
    check(mmi_buf_reserve(wire, cap) == MM_OK);
    check(amqp_encode_table((amqp_bytes_t){cap, wire->data}, t, &off) == AMQP_STATUS_OK);
    wire->len = off;
    amqp_table_t back;
    off = 0;
    check(amqp_decode_table((amqp_bytes_t){wire->len, wire->data}, pool, &back, &off) ==
          AMQP_STATUS_OK);
    check(off == wire->len);
    return back;
}

/* The headers of `t` as msgpack bytes (widened floats), `skip` leading entries dropped. */
static void
headers_bytes(const amqp_table_t *t, uint32_t skip, mmi_buf_t *out)
{
    msgpack_zone z;
    check(msgpack_zone_init(&z, 1024));
    msgpack_object m;
    check(mmi_headers_to_msgpack(t, &z, &m) == MM_OK);
    check(m.type == MSGPACK_OBJECT_MAP && m.via.map.size >= skip);
    m.via.map.ptr += skip;
    m.via.map.size -= skip;
    widen_floats(&m);
    pack(&m, out);
    msgpack_zone_destroy(&z);
}

/* ---- 1. incoming: AMQP table -> msgpack -> AMQP -> msgpack ---- */

static void
same_int(const msgpack_object *o, int64_t v)
{
    if (v >= 0)
        check(o->type == MSGPACK_OBJECT_POSITIVE_INTEGER && o->via.u64 == (uint64_t) v);
    else
        check(o->type == MSGPACK_OBJECT_NEGATIVE_INTEGER && o->via.i64 == v);
}

static void
same_real(const msgpack_object *o, msgpack_object_type type, double v)
{
    check(o->type == type && memcmp(&o->via.f64, &v, sizeof v) == 0);
}

static void
same_bytes(const msgpack_object *o, msgpack_object_type type, amqp_bytes_t b)
{
    check(o->type == type && bytes_eq(o->via.str.ptr, o->via.str.size, b.bytes, b.len));
}

static void same_value(const amqp_field_value_t *v, const msgpack_object *o, int depth);

static void
same_array(const amqp_array_t *a, const msgpack_object *o, int depth)
{
    check(o->type == MSGPACK_OBJECT_ARRAY && o->via.array.size == (uint32_t) a->num_entries);
    for (int i = 0; i < a->num_entries; i++)
        same_value(&a->entries[i], &o->via.array.ptr[i], depth + 1);
}

/* The entries of `t` (but __mms at the top) against map `o`, in order. */
static void
same_table(const amqp_table_t *t, const msgpack_object *o, int depth)
{
    check(o->type == MSGPACK_OBJECT_MAP);
    uint32_t n = 0;
    for (int i = 0; i < t->num_entries; i++) {
        const amqp_table_entry_t *e = &t->entries[i];
        if (depth == 0 && bytes_eq(e->key.bytes, e->key.len, "__mms", 5))
            continue;
        check(n < o->via.map.size);
        same_bytes(&o->via.map.ptr[n].key, MSGPACK_OBJECT_STR, e->key);
        same_value(&e->value, &o->via.map.ptr[n++].val, depth + 1);
    }
    check(n == o->via.map.size);
}

static void
same_decimal(const msgpack_object *o, amqp_decimal_t d)
{
    double ten = 1;
    for (int i = 0; i < d.decimals; i++)
        ten *= 10;
    same_real(o, MSGPACK_OBJECT_FLOAT64, d.value / ten);
}

/* Integers of every width by value; unsigned 64-bit ones and timestamps positive. */
static bool
same_integer(const amqp_field_value_t *v, const msgpack_object *o)
{
    switch (v->kind) {
    case AMQP_FIELD_KIND_I8:
        same_int(o, v->value.i8);
        return true;
    case AMQP_FIELD_KIND_U8:
        same_int(o, v->value.u8);
        return true;
    case AMQP_FIELD_KIND_I16:
        same_int(o, v->value.i16);
        return true;
    case AMQP_FIELD_KIND_U16:
        same_int(o, v->value.u16);
        return true;
    case AMQP_FIELD_KIND_I32:
        same_int(o, v->value.i32);
        return true;
    case AMQP_FIELD_KIND_U32:
        same_int(o, v->value.u32);
        return true;
    case AMQP_FIELD_KIND_I64:
        same_int(o, v->value.i64);
        return true;
    case AMQP_FIELD_KIND_U64:
    case AMQP_FIELD_KIND_TIMESTAMP:
        check(o->type == MSGPACK_OBJECT_POSITIVE_INTEGER && o->via.u64 == v->value.u64);
        return true;
    default:
        return false;
    }
}

static void
same_value(const amqp_field_value_t *v, const msgpack_object *o, int depth)
{
    if (depth >= MMI_CODEC_MAX_DEPTH) {
        check(o->type == MSGPACK_OBJECT_NIL); /* cut: the codec could not read it */
        return;
    }
    if (same_integer(v, o))
        return;
    switch (v->kind) {
    case AMQP_FIELD_KIND_BOOLEAN:
        check(o->type == MSGPACK_OBJECT_BOOLEAN && o->via.boolean == (v->value.boolean != 0));
        break;
    case AMQP_FIELD_KIND_F32:
        same_real(o, MSGPACK_OBJECT_FLOAT32, v->value.f32);
        break;
    case AMQP_FIELD_KIND_F64:
        same_real(o, MSGPACK_OBJECT_FLOAT64, v->value.f64);
        break;
    case AMQP_FIELD_KIND_DECIMAL:
        same_decimal(o, v->value.decimal);
        break;
    case AMQP_FIELD_KIND_UTF8:
        same_bytes(o, MSGPACK_OBJECT_STR, v->value.bytes);
        break;
    case AMQP_FIELD_KIND_BYTES:
        same_bytes(o, MSGPACK_OBJECT_BIN, v->value.bytes);
        break;
    case AMQP_FIELD_KIND_ARRAY:
        same_array(&v->value.array, o, depth);
        break;
    case AMQP_FIELD_KIND_TABLE:
        same_table(&v->value.table, o, depth);
        break;
    default:
        check(o->type == MSGPACK_OBJECT_NIL); /* void */
    }
}

static void
mms_and_request_id(const amqp_table_t *t)
{
    mmi_mms_t mms;
    char err[256] = "";
    int rc = mmi_mms_parse(t, &mms, err, sizeof err);
    check(rc == MM_OK || (rc == MM_EDECODE && err[0] != '\0'));
    const amqp_field_value_t *first = NULL;
    for (int i = t->num_entries - 1; i >= 0; i--)
        if (bytes_eq(t->entries[i].key.bytes, t->entries[i].key.len, "idRequest", 9))
            first = &t->entries[i].value;
    bool str = first != NULL &&
               (first->kind == AMQP_FIELD_KIND_UTF8 || first->kind == AMQP_FIELD_KIND_BYTES);
    amqp_bytes_t id = mmi_header_str(t, "idRequest");
    check(str ? id.bytes == first->value.bytes.bytes && id.len == first->value.bytes.len
              : id.bytes == NULL && id.len == 0);
}

/* B1 (the bytes of M1) back out as user headers, and in again: M2 packs as widened M1. */
static void
send_back(msgpack_object *m1, const mmi_buf_t *b1)
{
    mmi_hdrs_t h;
    char err[256] = "";
    mmi_hdrs_init(&h);
    int rc = mmi_hdrs_finish(&h, NULL, b1->data, b1->len, err, sizeof err);
    check(rc == MM_OK || (rc == MM_EINVAL && err[0] != '\0'));
    check((rc == MM_OK) == sendable(m1, 0));
    if (rc == MM_OK) {
        mmi_buf_t wire = {0}, b2 = {0}, want = {0};
        amqp_pool_t pool;
        init_amqp_pool(&pool, 4096);
        amqp_table_t back = encode_decode(&h.table, b1->len, &wire, &pool);
        headers_bytes(&back, 0, &b2);
        widen_floats(m1);
        pack(m1, &want);
        check(bytes_eq(b2.data, b2.len, want.data, want.len));
        empty_amqp_pool(&pool);
        mmi_buf_free(&wire);
        mmi_buf_free(&b2);
        mmi_buf_free(&want);
    }
    mmi_hdrs_fini(&h);
}

static void
table_first(const uint8_t *data, size_t size)
{
    amqp_pool_t pool;
    init_amqp_pool(&pool, 4096);
    amqp_table_t t;
    size_t off = 0;
    if (amqp_decode_table((amqp_bytes_t){size, (void *) data}, &pool, &t, &off) == AMQP_STATUS_OK) {
        mms_and_request_id(&t);
        msgpack_zone z;
        check(msgpack_zone_init(&z, 1024));
        msgpack_object m1;
        check(mmi_headers_to_msgpack(&t, &z, &m1) == MM_OK);
        same_table(&t, &m1, 0);
        check(nesting(&m1) <= MMI_CODEC_MAX_DEPTH);
        mmi_buf_t b1 = {0};
        pack(&m1, &b1);
        send_back(&m1, &b1);
        mmi_buf_free(&b1);
        msgpack_zone_destroy(&z);
    }
    empty_amqp_pool(&pool);
}

/* ---- 2. outgoing: the input as user headers ---- */

/* The input as one map in `z` (what mmi_hdrs_finish should see), or false. */
static bool
user_map(const uint8_t *data, size_t size, msgpack_zone *z, msgpack_object *o)
{
    char err[256];
    size_t off = 0;
    if (mmi_msgpack_check(data, size, err, sizeof err) != MM_OK)
        return false;
    check(msgpack_unpack((const char *) data, size, &off, z, o) == MSGPACK_UNPACK_SUCCESS);
    check(off == size);
    return o->type == MSGPACK_OBJECT_MAP;
}

static bool
has_request_id(const msgpack_object *m)
{
    for (uint32_t i = 0; i < m->via.map.size; i++)
        if (key_is(&m->via.map.ptr[i].key, "idRequest"))
            return true;
    return false;
}

/* The published table, read back as a consumer would. */
static void
read_back(amqp_table_t *sent, size_t size, msgpack_object *user, int64_t iat, bool task, bool rid)
{
    mmi_buf_t wire = {0}, got = {0}, want = {0};
    amqp_pool_t pool;
    init_amqp_pool(&pool, 4096);
    amqp_table_t back = encode_decode(sent, size, &wire, &pool);
    mmi_mms_t mms;
    char err[256];
    check(mmi_mms_parse(&back, &mms, err, sizeof err) == MM_OK);
    check(bytes_eq(mms.route.bytes, mms.route.len, ROUTE, strlen(ROUTE)));
    check(mms.has_iat && mms.iat == iat && mms.is_task == task && !mms.has_eat);
    bool added = rid && !has_request_id(user);
    amqp_bytes_t id = mmi_header_str(&back, "idRequest");
    check(!added || bytes_eq(id.bytes, id.len, RID, strlen(RID)));
    headers_bytes(&back, added, &got);
    widen_floats(user);
    pack(user, &want);
    check(bytes_eq(got.data, got.len, want.data, want.len));
    empty_amqp_pool(&pool);
    mmi_buf_free(&wire);
    mmi_buf_free(&got);
    mmi_buf_free(&want);
}

static void
user_first(const uint8_t *data, size_t size)
{
    int64_t iat = size > 0 ? (int64_t) data[0] << 40 | (int64_t) size : -1;
    bool task = size % 2, rid = size % 3 != 0;
    mmi_hdrs_t h;
    char err[256] = "";
    mmi_hdrs_init(&h);
    mmi_hdrs_mms_str(&h, "route", ROUTE);
    mmi_hdrs_mms_int(&h, "iat", iat);
    mmi_hdrs_mms_bool(&h, "isTask", task);
    int rc = mmi_hdrs_finish(&h, rid ? RID : NULL, data, size, err, sizeof err);
    check(rc == MM_OK || (rc == MM_EINVAL && err[0] != '\0'));
    msgpack_zone z;
    check(msgpack_zone_init(&z, 1024));
    msgpack_object user = {.type = MSGPACK_OBJECT_MAP}; /* no bytes: no user headers */
    bool is_map = size == 0 || user_map(data, size, &z, &user);
    check((rc == MM_OK) == (is_map && sendable(&user, 0)));
    if (rc == MM_OK)
        read_back(&h.table, size, &user, iat, task, rid);
    msgpack_zone_destroy(&z);
    mmi_hdrs_fini(&h);
}

int
LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    table_first(data, size);
    user_first(data, size);
    return 0;
}
