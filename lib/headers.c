/*
 * AMQP header tables <-> msgpack objects, and the reserved __mms table of
 * the wire protocol. Integers of any AMQP type are accepted on input (iat
 * and eat exceed 32 bits); outgoing integers are signed 64-bit.
 */
#include <stdio.h>
#include <string.h>

#include "codec.h"
#include "headers.h"
#include "micromsg.h"

#define MAX_DEPTH 32

static bool
key_is(amqp_bytes_t k, const char *s)
{
    size_t n = strlen(s);
    return k.len == n && memcmp(k.bytes, s, n) == 0;
}

static const amqp_field_value_t *
table_get(const amqp_table_t *t, const char *key)
{
    for (int i = 0; t != NULL && i < t->num_entries; i++)
        if (key_is(t->entries[i].key, key))
            return &t->entries[i].value;
    return NULL;
}

bool
mmi_field_integer(const amqp_field_value_t *v, int64_t *out)
{
    switch (v->kind) {
    case AMQP_FIELD_KIND_I8:
        *out = v->value.i8;
        return true;
    case AMQP_FIELD_KIND_U8:
        *out = v->value.u8;
        return true;
    case AMQP_FIELD_KIND_I16:
        *out = v->value.i16;
        return true;
    case AMQP_FIELD_KIND_U16:
        *out = v->value.u16;
        return true;
    case AMQP_FIELD_KIND_I32:
        *out = v->value.i32;
        return true;
    case AMQP_FIELD_KIND_U32:
        *out = v->value.u32;
        return true;
    case AMQP_FIELD_KIND_I64:
        *out = v->value.i64;
        return true;
    case AMQP_FIELD_KIND_U64:
        *out = (int64_t) v->value.u64;
        return v->value.u64 <= INT64_MAX;
    default:
        return false;
    }
}

/* Any AMQP integer, timestamp or integral float as int64; false otherwise. */
static bool
field_int(const amqp_field_value_t *v, int64_t *out)
{
    if (v->kind == AMQP_FIELD_KIND_TIMESTAMP) {
        *out = (int64_t) v->value.u64;
        return v->value.u64 <= INT64_MAX;
    }
    if (v->kind == AMQP_FIELD_KIND_F64) {
        /* NaN, infinities and reals beyond int64 would make the cast undefined */
        if (!(v->value.f64 >= -0x1p63 && v->value.f64 < 0x1p63))
            return false;
        *out = (int64_t) v->value.f64;
        return true;
    }
    return mmi_field_integer(v, out);
}

amqp_bytes_t
mmi_header_str(const amqp_table_t *headers, const char *key)
{
    const amqp_field_value_t *v = table_get(headers, key);
    if (v != NULL && (v->kind == AMQP_FIELD_KIND_UTF8 || v->kind == AMQP_FIELD_KIND_BYTES))
        return v->value.bytes;
    return (amqp_bytes_t){0, NULL};
}

static int
mms_field(const amqp_table_entry_t *e, mmi_mms_t *m, char *err, size_t errlen)
{
    const amqp_field_value_t *v = &e->value;
    bool *flag = key_is(e->key, "isTask")     ? &m->is_task
                 : key_is(e->key, "isError")  ? &m->is_error
                 : key_is(e->key, "isEnd")    ? &m->is_end
                 : key_is(e->key, "isStream") ? &m->is_stream
                                              : NULL;
    if (flag != NULL) {
        if (v->kind == AMQP_FIELD_KIND_VOID)
            return MM_OK;
        if (v->kind != AMQP_FIELD_KIND_BOOLEAN)
            goto bad;
        *flag = v->value.boolean != 0;
        return MM_OK;
    }
    int64_t *num = key_is(e->key, "iat")        ? &m->iat
                   : key_is(e->key, "eat")      ? &m->eat
                   : key_is(e->key, "sequence") ? &m->sequence
                                                : NULL;
    if (num != NULL) {
        if (v->kind == AMQP_FIELD_KIND_VOID)
            return MM_OK;
        if (!field_int(v, num))
            goto bad;
        bool *has = num == &m->iat ? &m->has_iat : num == &m->eat ? &m->has_eat : &m->has_seq;
        *has = true;
        return MM_OK;
    }
    if (key_is(e->key, "route")) {
        if (v->kind != AMQP_FIELD_KIND_UTF8 && v->kind != AMQP_FIELD_KIND_BYTES)
            goto bad;
        m->route = v->value.bytes;
    }
    return MM_OK; /* unknown fields are a later version's: ignore them */
bad:
    snprintf(err, errlen, "__mms.%.*s has the wrong type (AMQP kind '%c')", (int) e->key.len,
             (const char *) e->key.bytes, v->kind);
    return MM_EDECODE;
}

int
mmi_mms_parse(const amqp_table_t *headers, mmi_mms_t *out, char *err, size_t errlen)
{
    *out = (mmi_mms_t){0};
    const amqp_field_value_t *v = table_get(headers, "__mms");
    if (v == NULL) {
        snprintf(err, errlen, "no __mms header: not a micromsg/micromessaging message");
        return MM_EDECODE;
    }
    if (v->kind != AMQP_FIELD_KIND_TABLE) {
        snprintf(err, errlen, "__mms header is not a table (AMQP kind '%c')", v->kind);
        return MM_EDECODE;
    }
    const amqp_table_t *t = &v->value.table;
    for (int i = 0; i < t->num_entries; i++) {
        int rc = mms_field(&t->entries[i], out, err, errlen);
        if (rc != MM_OK)
            return rc;
    }
    return MM_OK;
}

/* ---- AMQP -> msgpack ---- */

static int field_to_obj(const amqp_field_value_t *v, msgpack_zone *z, msgpack_object *o, int depth);

static double
ten_to(uint8_t n)
{
    double p = 1;
    while (n-- > 0)
        p *= 10;
    return p;
}

static int
copy_bytes(amqp_bytes_t b, msgpack_zone *z, const char **ret)
{
    char *p = msgpack_zone_malloc(z, b.len ? b.len : 1);
    if (p == NULL)
        return MM_ENOMEM;
    if (b.len)
        memcpy(p, b.bytes, b.len);
    *ret = p;
    return MM_OK;
}

/* The protocol's __mms, and metadata read by mm_msg_causation_id(),
 * mm_msg_traceparent() and mm_msg_offset() (the stream's x-stream-offset). */
static bool
reserved_key(amqp_bytes_t key)
{
    return key_is(key, "__mms") || key_is(key, MMI_H_CAUSATION) || key_is(key, MMI_H_TRACEPARENT) ||
           key_is(key, "x-stream-offset");
}

static int
table_to_obj(const amqp_table_t *t, msgpack_zone *z, msgpack_object *o, int depth, bool skip_mms)
{
    o->type = MSGPACK_OBJECT_MAP;
    o->via.map.size = 0;
    o->via.map.ptr = NULL;
    if (t->num_entries == 0)
        return MM_OK;
    msgpack_object_kv *kv = msgpack_zone_malloc(z, sizeof *kv * (size_t) t->num_entries);
    if (kv == NULL)
        return MM_ENOMEM;
    uint32_t n = 0;
    for (int i = 0; i < t->num_entries; i++) {
        const amqp_table_entry_t *e = &t->entries[i];
        if (skip_mms && reserved_key(e->key))
            continue;
        kv[n].key.type = MSGPACK_OBJECT_STR;
        kv[n].key.via.str.size = (uint32_t) e->key.len;
        if (copy_bytes(e->key, z, &kv[n].key.via.str.ptr) != MM_OK)
            return MM_ENOMEM;
        int rc = field_to_obj(&e->value, z, &kv[n].val, depth + 1);
        if (rc != MM_OK)
            return rc;
        n++;
    }
    o->via.map.ptr = kv;
    o->via.map.size = n;
    return MM_OK;
}

static int
array_to_obj(const amqp_array_t *a, msgpack_zone *z, msgpack_object *o, int depth)
{
    o->type = MSGPACK_OBJECT_ARRAY;
    o->via.array.size = (uint32_t) a->num_entries;
    o->via.array.ptr = NULL;
    if (a->num_entries == 0)
        return MM_OK;
    o->via.array.ptr = msgpack_zone_malloc(z, sizeof(msgpack_object) * (size_t) a->num_entries);
    if (o->via.array.ptr == NULL)
        return MM_ENOMEM;
    for (int i = 0; i < a->num_entries; i++) {
        int rc = field_to_obj(&a->entries[i], z, &o->via.array.ptr[i], depth + 1);
        if (rc != MM_OK)
            return rc;
    }
    return MM_OK;
}

static void
int_to_obj(int64_t v, msgpack_object *o)
{
    if (v >= 0) {
        o->type = MSGPACK_OBJECT_POSITIVE_INTEGER;
        o->via.u64 = (uint64_t) v;
    } else {
        o->type = MSGPACK_OBJECT_NEGATIVE_INTEGER;
        o->via.i64 = v;
    }
}

static int
bytes_to_obj(const amqp_field_value_t *v, msgpack_zone *z, msgpack_object *o)
{
    bool str = v->kind == AMQP_FIELD_KIND_UTF8;
    o->type = str ? MSGPACK_OBJECT_STR : MSGPACK_OBJECT_BIN;
    o->via.str.size = (uint32_t) v->value.bytes.len;
    return copy_bytes(v->value.bytes, z, &o->via.str.ptr);
}

static int
field_to_obj(const amqp_field_value_t *v, msgpack_zone *z, msgpack_object *o, int depth)
{
    int64_t i;
    if (depth >= MAX_DEPTH) {
        /* deeper than any sane header: cut, so that the map stays within the
         * codec's depth (MMI_CODEC_MAX_DEPTH: the top map is 1) */
        o->type = MSGPACK_OBJECT_NIL;
        return MM_OK;
    }
    switch (v->kind) {
    case AMQP_FIELD_KIND_BOOLEAN:
        o->type = MSGPACK_OBJECT_BOOLEAN;
        o->via.boolean = v->value.boolean != 0;
        return MM_OK;
    case AMQP_FIELD_KIND_U64:
    case AMQP_FIELD_KIND_TIMESTAMP: /* unsigned: beyond int64 stays positive */
        o->type = MSGPACK_OBJECT_POSITIVE_INTEGER;
        o->via.u64 = v->value.u64;
        return MM_OK;
    case AMQP_FIELD_KIND_F32:
        o->type = MSGPACK_OBJECT_FLOAT32;
        o->via.f64 = v->value.f32;
        return MM_OK;
    case AMQP_FIELD_KIND_F64:
        o->type = MSGPACK_OBJECT_FLOAT64;
        o->via.f64 = v->value.f64;
        return MM_OK;
    case AMQP_FIELD_KIND_DECIMAL:
        o->type = MSGPACK_OBJECT_FLOAT64;
        o->via.f64 = v->value.decimal.value / ten_to(v->value.decimal.decimals);
        return MM_OK;
    case AMQP_FIELD_KIND_UTF8:
    case AMQP_FIELD_KIND_BYTES:
        return bytes_to_obj(v, z, o);
    case AMQP_FIELD_KIND_ARRAY:
        return array_to_obj(&v->value.array, z, o, depth);
    case AMQP_FIELD_KIND_TABLE:
        return table_to_obj(&v->value.table, z, o, depth, false);
    default:
        if (field_int(v, &i)) {
            int_to_obj(i, o);
            return MM_OK;
        }
        o->type = MSGPACK_OBJECT_NIL; /* VOID and anything unknown */
        return MM_OK;
    }
}

int
mmi_headers_to_msgpack(const amqp_table_t *headers, msgpack_zone *z, msgpack_object *ret_map)
{
    static const amqp_table_t empty = {0, NULL};
    return table_to_obj(headers ? headers : &empty, z, ret_map, 0, true);
}

/* ---- outgoing ---- */

void
mmi_hdrs_init(mmi_hdrs_t *h)
{
    h->nmms = 0;
    h->ntop = 0;
    h->top = h->fixed;
    h->pooled = false;
    h->nmeta = 0;
}

void
mmi_hdrs_meta(mmi_hdrs_t *h, const char *key, const char *v)
{
    if (h->nmeta < 2) {
        h->meta_key[h->nmeta] = key;
        h->meta_val[h->nmeta++] = v;
    }
}

static bool map_has_key(const msgpack_object *m, const char *key);

static amqp_table_entry_t
str_entry(const char *key, const char *v)
{
    amqp_table_entry_t e = {.key = amqp_cstring_bytes(key)};
    e.value.kind = AMQP_FIELD_KIND_UTF8;
    e.value.value.bytes = amqp_cstring_bytes(v);
    return e;
}

/* idRequest and the metadata headers after __mms, unless the user gave them. */
static int
own_entries(mmi_hdrs_t *h, const char *request_id, const msgpack_object *map,
            amqp_table_entry_t *at)
{
    bool user = map->type == MSGPACK_OBJECT_MAP && map->via.map.size > 0;
    int n = 0;
    if (request_id != NULL && !(user && map_has_key(map, "idRequest")))
        at[n++] = str_entry("idRequest", request_id);
    for (int i = 0; i < h->nmeta; i++)
        if (!(user && map_has_key(map, h->meta_key[i])))
            at[n++] = str_entry(h->meta_key[i], h->meta_val[i]);
    return n;
}

void
mmi_hdrs_fini(mmi_hdrs_t *h)
{
    if (h->pooled) {
        empty_amqp_pool(&h->pool);
        msgpack_zone_destroy(&h->zone);
    }
    h->pooled = false;
}

static amqp_table_entry_t *
mms_slot(mmi_hdrs_t *h, const char *key)
{
    amqp_table_entry_t *e = &h->mms[h->nmms++];
    e->key = amqp_cstring_bytes(key);
    return e;
}

void
mmi_hdrs_mms_bool(mmi_hdrs_t *h, const char *key, bool v)
{
    amqp_table_entry_t *e = mms_slot(h, key);
    e->value.kind = AMQP_FIELD_KIND_BOOLEAN;
    e->value.value.boolean = v;
}

void
mmi_hdrs_mms_int(mmi_hdrs_t *h, const char *key, int64_t v)
{
    amqp_table_entry_t *e = mms_slot(h, key);
    e->value.kind = AMQP_FIELD_KIND_I64;
    e->value.value.i64 = v;
}

void
mmi_hdrs_mms_str(mmi_hdrs_t *h, const char *key, const char *v)
{
    amqp_table_entry_t *e = mms_slot(h, key);
    e->value.kind = AMQP_FIELD_KIND_UTF8;
    e->value.value.bytes = amqp_cstring_bytes(v);
}

static int obj_to_field(mmi_hdrs_t *h, const msgpack_object *o, amqp_field_value_t *v, int depth,
                        char *err, size_t errlen);

static int
map_to_entries(mmi_hdrs_t *h, const msgpack_object *o, amqp_table_entry_t *out, int depth,
               char *err, size_t errlen)
{
    for (uint32_t i = 0; i < o->via.map.size; i++) {
        const msgpack_object_kv *kv = &o->via.map.ptr[i];
        if (kv->key.type != MSGPACK_OBJECT_STR) {
            snprintf(err, errlen, "header names must be strings");
            return MM_EINVAL;
        }
        if (kv->key.via.str.size > 255) { /* AMQP field names are short strings */
            snprintf(err, errlen, "header names are at most 255 bytes");
            return MM_EINVAL;
        }
        out[i].key = (amqp_bytes_t){kv->key.via.str.size, (void *) kv->key.via.str.ptr};
        if (depth == 0 && key_is(out[i].key, "__mms")) {
            snprintf(err, errlen, "the header name __mms is reserved by the protocol");
            return MM_EINVAL;
        }
        int rc = obj_to_field(h, &kv->val, &out[i].value, depth + 1, err, errlen);
        if (rc != MM_OK)
            return rc;
    }
    return MM_OK;
}

static int
container_to_field(mmi_hdrs_t *h, const msgpack_object *o, amqp_field_value_t *v, int depth,
                   char *err, size_t errlen)
{
    bool map = o->type == MSGPACK_OBJECT_MAP;
    uint32_t n = map ? o->via.map.size : o->via.array.size;
    size_t each = map ? sizeof(amqp_table_entry_t) : sizeof(amqp_field_value_t);
    void *mem = n ? amqp_pool_alloc(&h->pool, each * n) : NULL;
    if (n && mem == NULL)
        return MM_ENOMEM;
    if (map) {
        v->kind = AMQP_FIELD_KIND_TABLE;
        v->value.table = (amqp_table_t){(int) n, mem};
        return map_to_entries(h, o, mem, depth, err, errlen);
    }
    v->kind = AMQP_FIELD_KIND_ARRAY;
    v->value.array = (amqp_array_t){(int) n, mem};
    for (uint32_t i = 0; i < n; i++) {
        int rc = obj_to_field(h, &o->via.array.ptr[i], &v->value.array.entries[i], depth + 1, err,
                              errlen);
        if (rc != MM_OK)
            return rc;
    }
    return MM_OK;
}

static int
obj_to_field(mmi_hdrs_t *h, const msgpack_object *o, amqp_field_value_t *v, int depth, char *err,
             size_t errlen)
{
    if (depth > MAX_DEPTH) {
        snprintf(err, errlen, "headers nested deeper than %d", MAX_DEPTH);
        return MM_EINVAL;
    }
    switch (o->type) {
    case MSGPACK_OBJECT_NIL:
        v->kind = AMQP_FIELD_KIND_VOID;
        return MM_OK;
    case MSGPACK_OBJECT_BOOLEAN:
        v->kind = AMQP_FIELD_KIND_BOOLEAN;
        v->value.boolean = o->via.boolean;
        return MM_OK;
    case MSGPACK_OBJECT_POSITIVE_INTEGER:
        if (o->via.u64 > INT64_MAX) {
            snprintf(err, errlen, "header integer %llu exceeds int64",
                     (unsigned long long) o->via.u64);
            return MM_EINVAL;
        }
        v->kind = AMQP_FIELD_KIND_I64;
        v->value.i64 = (int64_t) o->via.u64;
        return MM_OK;
    case MSGPACK_OBJECT_NEGATIVE_INTEGER:
        v->kind = AMQP_FIELD_KIND_I64;
        v->value.i64 = o->via.i64;
        return MM_OK;
    case MSGPACK_OBJECT_FLOAT32:
    case MSGPACK_OBJECT_FLOAT64:
        v->kind = AMQP_FIELD_KIND_F64;
        v->value.f64 = o->via.f64;
        return MM_OK;
    case MSGPACK_OBJECT_STR:
    case MSGPACK_OBJECT_BIN:
        v->kind = o->type == MSGPACK_OBJECT_STR ? AMQP_FIELD_KIND_UTF8 : AMQP_FIELD_KIND_BYTES;
        v->value.bytes = (amqp_bytes_t){o->via.str.size, (void *) o->via.str.ptr};
        return MM_OK;
    case MSGPACK_OBJECT_ARRAY:
    case MSGPACK_OBJECT_MAP:
        return container_to_field(h, o, v, depth, err, errlen);
    default:
        snprintf(err, errlen, "msgpack ext values cannot travel in AMQP headers");
        return MM_EINVAL;
    }
}

static bool
map_has_key(const msgpack_object *m, const char *key)
{
    for (uint32_t i = 0; i < m->via.map.size; i++) {
        const msgpack_object *k = &m->via.map.ptr[i].key;
        if (k->type == MSGPACK_OBJECT_STR &&
            key_is((amqp_bytes_t){k->via.str.size, (void *) k->via.str.ptr}, key))
            return true;
    }
    return false;
}

static int
user_map(mmi_hdrs_t *h, const void *user, size_t len, msgpack_object *o, char *err, size_t errlen)
{
    init_amqp_pool(&h->pool, 1024);
    msgpack_zone_init(&h->zone, 1024);
    h->pooled = true;
    size_t off = 0;
    if (mmi_msgpack_check(user, len, err, errlen) != MM_OK) {
        snprintf(err, errlen, "headers must be the msgpack bytes of one map");
        return MM_EINVAL;
    }
    msgpack_unpack_return r = msgpack_unpack(user, len, &off, &h->zone, o);
    if (r != MSGPACK_UNPACK_SUCCESS || off != len || o->type != MSGPACK_OBJECT_MAP) {
        snprintf(err, errlen, "headers must be the msgpack bytes of one map");
        return MM_EINVAL;
    }
    return MM_OK;
}

int
mmi_hdrs_finish(mmi_hdrs_t *h, const char *request_id, const void *user, size_t user_len, char *err,
                size_t errlen)
{
    msgpack_object map = {.type = MSGPACK_OBJECT_NIL};
    if (user != NULL && user_len > 0) {
        int rc = user_map(h, user, user_len, &map, err, errlen);
        if (rc != MM_OK)
            return rc;
    }
    uint32_t nuser = map.type == MSGPACK_OBJECT_MAP ? map.via.map.size : 0;
    amqp_table_entry_t own[3];
    int nown = own_entries(h, request_id, &map, own);
    size_t ntop = 1 + (size_t) nown + nuser;
    if (ntop > sizeof h->fixed / sizeof h->fixed[0]) {
        if (!h->pooled) {
            init_amqp_pool(&h->pool, 1024);
            msgpack_zone_init(&h->zone, 1024);
            h->pooled = true;
        }
        h->top = amqp_pool_alloc(&h->pool, ntop * sizeof *h->top);
        if (h->top == NULL)
            return MM_ENOMEM;
    }
    h->top[0].key = amqp_cstring_bytes("__mms");
    h->top[0].value.kind = AMQP_FIELD_KIND_TABLE;
    h->top[0].value.value.table = (amqp_table_t){h->nmms, h->mms};
    memcpy(h->top + 1, own, (size_t) nown * sizeof *own);
    if (nuser > 0) {
        int rc = map_to_entries(h, &map, h->top + 1 + nown, 0, err, errlen);
        if (rc != MM_OK)
            return rc;
    }
    h->ntop = (int) ntop;
    h->table = (amqp_table_t){h->ntop, h->top};
    return MM_OK;
}
