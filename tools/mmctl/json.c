/*
 * JSON text <-> msgpack for mmctl, through jansson: bodies typed on the
 * command line are JSON values packed as msgpack, bodies received are shown
 * as JSON. msgpack has more than JSON: bin (and a str that is not UTF-8)
 * becomes {"$bin": "<base64>"}, ext {"$ext": type, "$bin": "<base64>"},
 * a map key that is not a string its JSON text, an unsigned integer above
 * INT64_MAX a real, NaN and infinities null.
 */
#include <jansson.h>
#include <stdlib.h>
#include <string.h>

#include "mmctl.h"

int
mmctl_json_pack(msgpack_packer *pk, const json_t *j)
{
    size_t i;
    const char *key;
    json_t *v;
    switch (json_typeof(j)) {
    case JSON_OBJECT:
        if (msgpack_pack_map(pk, json_object_size(j)) != 0)
            return -1;
        json_object_foreach((json_t *) j, key, v)
        {
            if (msgpack_pack_str_with_body(pk, key, strlen(key)) != 0 || mmctl_json_pack(pk, v))
                return -1;
        }
        return 0;
    case JSON_ARRAY:
        if (msgpack_pack_array(pk, json_array_size(j)) != 0)
            return -1;
        json_array_foreach(j, i, v)
        {
            if (mmctl_json_pack(pk, v) != 0)
                return -1;
        }
        return 0;
    case JSON_STRING:
        return msgpack_pack_str_with_body(pk, json_string_value(j), json_string_length(j));
    case JSON_INTEGER:
        return msgpack_pack_int64(pk, json_integer_value(j));
    case JSON_REAL:
        return msgpack_pack_double(pk, json_real_value(j));
    case JSON_TRUE:
        return msgpack_pack_true(pk);
    case JSON_FALSE:
        return msgpack_pack_false(pk);
    default:
        return msgpack_pack_nil(pk);
    }
}

static const char b64[] = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";

/* Standard base64 with padding; NULL when out of memory. */
static char *
base64(const void *data, size_t n)
{
    const unsigned char *p = data;
    char *out = malloc((n + 2) / 3 * 4 + 1), *o = out;
    if (out == NULL)
        return NULL;
    for (size_t i = 0; i < n; i += 3) {
        uint32_t v = (uint32_t) p[i] << 16;
        if (i + 1 < n)
            v |= (uint32_t) p[i + 1] << 8;
        if (i + 2 < n)
            v |= p[i + 2];
        *o++ = b64[(v >> 18) & 63];
        *o++ = b64[(v >> 12) & 63];
        *o++ = i + 1 < n ? b64[(v >> 6) & 63] : '=';
        *o++ = i + 2 < n ? b64[v & 63] : '=';
    }
    *o = '\0';
    return out;
}

/* {"$bin": "<base64>"} (and "$ext": type when ext >= 0). */
static json_t *
bin_of(const void *data, size_t n, int ext)
{
    char *s = base64(data, n);
    json_t *j = s != NULL ? json_object() : NULL;
    if (j != NULL) {
        json_object_set_new(j, "$bin", json_string(s));
        if (ext >= 0)
            json_object_set_new(j, "$ext", json_integer(ext));
    }
    free(s);
    return j;
}

/* A str as a JSON string, or marked bin when it is not UTF-8 (jansson refuses it). */
static json_t *
str_of(const char *p, size_t n)
{
    json_t *j = json_stringn(p, n);
    return j != NULL ? j : bin_of(p, n, -1);
}

/* A map key as text: the string itself, else the key's JSON text. */
static char *
key_of(const msgpack_object *k)
{
    if (k->type == MSGPACK_OBJECT_STR) {
        char *s = malloc(k->via.str.size + 1);
        if (s != NULL) {
            memcpy(s, k->via.str.ptr, k->via.str.size);
            s[k->via.str.size] = '\0';
        }
        return s;
    }
    json_t *j = mmctl_json_of(k);
    char *s = j != NULL ? json_dumps(j, JSON_COMPACT | JSON_ENCODE_ANY) : NULL;
    json_decref(j);
    return s;
}

static json_t *
map_of(const msgpack_object_map *m)
{
    json_t *j = json_object();
    for (uint32_t i = 0; j != NULL && i < m->size; i++) {
        char *k = key_of(&m->ptr[i].key);
        json_t *v = mmctl_json_of(&m->ptr[i].val);
        if (k == NULL || v == NULL || json_object_set_new(j, k, v) != 0) {
            json_decref(v);
            json_decref(j);
            j = NULL;
        }
        free(k);
    }
    return j;
}

static json_t *
array_of(const msgpack_object_array *a)
{
    json_t *j = json_array();
    for (uint32_t i = 0; j != NULL && i < a->size; i++) {
        json_t *v = mmctl_json_of(&a->ptr[i]);
        if (v == NULL || json_array_append_new(j, v) != 0) {
            json_decref(j);
            j = NULL;
        }
    }
    return j;
}

json_t *
mmctl_json_of(const msgpack_object *o)
{
    switch (o->type) {
    case MSGPACK_OBJECT_BOOLEAN:
        return json_boolean(o->via.boolean);
    case MSGPACK_OBJECT_POSITIVE_INTEGER:
        if (o->via.u64 > INT64_MAX)
            return json_real((double) o->via.u64);
        return json_integer((json_int_t) o->via.u64);
    case MSGPACK_OBJECT_NEGATIVE_INTEGER:
        return json_integer(o->via.i64);
    case MSGPACK_OBJECT_FLOAT32:
    case MSGPACK_OBJECT_FLOAT64: {
        json_t *r = json_real(o->via.f64); /* NULL for NaN and infinities: JSON has none */
        return r != NULL ? r : json_null();
    }
    case MSGPACK_OBJECT_STR:
        return str_of(o->via.str.ptr, o->via.str.size);
    case MSGPACK_OBJECT_BIN:
        return bin_of(o->via.bin.ptr, o->via.bin.size, -1);
    case MSGPACK_OBJECT_EXT:
        return bin_of(o->via.ext.ptr, o->via.ext.size, o->via.ext.type);
    case MSGPACK_OBJECT_ARRAY:
        return array_of(&o->via.array);
    case MSGPACK_OBJECT_MAP:
        return map_of(&o->via.map);
    default:
        return json_null();
    }
}
