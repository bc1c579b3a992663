/*
 * JSON text <-> msgpack bytes, the JSON codec of the wire edge (lib/wire.c).
 * Inbound, jansson parses and validates (UTF-8, numbers, exactly one value)
 * and its tree is re-packed through a msgpack_packer into an mmi_buf_t.
 * Outbound, a small writer walks a msgpack_object and writes compact JSON
 * straight into the buffer, refusing what JSON cannot carry. The writer
 * emits only what the reader takes back, so JSON -> msgpack -> JSON ->
 * msgpack gives the same bytes. mmi_msgpack_check scans msgpack bytes
 * without allocating: a 5-byte array header claiming 2^32 elements is
 * refused here, before msgpack_unpack() sizes its zone from it.
 */
#include <inttypes.h>
#include <math.h>
#include <stdarg.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <jansson.h>

#include "codec.h"
#include "micromsg.h"

/* ---- JSON -> msgpack ---------------------------------------------------- */

struct packer {
    msgpack_packer pk;
    char *err;
    size_t errlen;
};

static int pack_value(struct packer *p, json_t *j, int depth);

static int
pack_str(msgpack_packer *pk, const char *s, size_t n)
{
    if (msgpack_pack_str(pk, n) != 0 || msgpack_pack_str_body(pk, s, n) != 0)
        return MM_ENOMEM;
    return MM_OK;
}

/* jansson keeps object keys in insertion order, so the msgpack map does too. */
static int
pack_object(struct packer *p, json_t *j, int depth)
{
    if (msgpack_pack_map(&p->pk, json_object_size(j)) != 0)
        return MM_ENOMEM;
    for (void *it = json_object_iter(j); it != NULL; it = json_object_iter_next(j, it)) {
        int rc = pack_str(&p->pk, json_object_iter_key(it), json_object_iter_key_len(it));
        if (rc == MM_OK)
            rc = pack_value(p, json_object_iter_value(it), depth);
        if (rc != MM_OK)
            return rc;
    }
    return MM_OK;
}

static int
pack_array(struct packer *p, json_t *j, int depth)
{
    size_t n = json_array_size(j);
    if (msgpack_pack_array(&p->pk, n) != 0)
        return MM_ENOMEM;
    for (size_t i = 0; i < n; i++) {
        int rc = pack_value(p, json_array_get(j, i), depth);
        if (rc != MM_OK)
            return rc;
    }
    return MM_OK;
}

static int
pack_value(struct packer *p, json_t *j, int depth)
{
    int rc = 0;
    bool container = json_is_object(j) || json_is_array(j);
    if (container && depth >= MMI_CODEC_MAX_DEPTH)
        return mmi_codec_fail(p->err, p->errlen, MM_EDECODE, "bad JSON: nested deeper than %d",
                              MMI_CODEC_MAX_DEPTH);
    switch (json_typeof(j)) {
    case JSON_OBJECT:
        return pack_object(p, j, depth + 1);
    case JSON_ARRAY:
        return pack_array(p, j, depth + 1);
    case JSON_STRING:
        return pack_str(&p->pk, json_string_value(j), json_string_length(j));
    case JSON_INTEGER:
        rc = msgpack_pack_int64(&p->pk, json_integer_value(j));
        break;
    case JSON_REAL:
        rc = msgpack_pack_double(&p->pk, json_real_value(j));
        break;
    case JSON_TRUE:
        rc = msgpack_pack_true(&p->pk);
        break;
    case JSON_FALSE:
        rc = msgpack_pack_false(&p->pk);
        break;
    case JSON_NULL:
        rc = msgpack_pack_nil(&p->pk);
        break;
    }
    return rc == 0 ? MM_OK : MM_ENOMEM;
}

int
mmi_json_to_msgpack(const char *json, size_t len, mmi_buf_t *out, char *err, size_t errlen)
{
    if (json == NULL)
        return mmi_codec_fail(err, errlen, MM_EDECODE, "bad JSON: no text");
    /* jansson takes a NUL byte after the value for the end of the text
     * ("1\0" passes); a raw NUL is never valid JSON anywhere. */
    const char *nul = memchr(json, '\0', len);
    if (nul != NULL)
        return mmi_codec_fail(err, errlen, MM_EDECODE, "bad JSON: NUL byte at byte %zu",
                              (size_t) (nul - json));
    /* JSON_ALLOW_NUL: "\u0000" is legal in JSON strings. The EOF check
     * stays on: bytes after the value are refused. */
    json_error_t je;
    json_t *root = json_loadb(json, len, JSON_DECODE_ANY | JSON_ALLOW_NUL, &je);
    if (root == NULL && json_error_code(&je) == json_error_out_of_memory)
        return mmi_codec_fail(err, errlen, MM_ENOMEM, "out of memory parsing JSON");
    if (root == NULL)
        return mmi_codec_fail(err, errlen, MM_EDECODE, "bad JSON: %s (byte %d)", je.text,
                              je.position);
    size_t mark = out->len;
    struct packer p = {.err = err, .errlen = errlen};
    msgpack_packer_init(&p.pk, out, mmi_buf_write);
    int rc = pack_value(&p, root, 0);
    json_decref(root);
    if (rc == MM_ENOMEM)
        mmi_codec_fail(err, errlen, MM_ENOMEM, "out of memory packing msgpack");
    if (rc != MM_OK)
        out->len = mark;
    return rc;
}

/* ---- msgpack -> JSON ---------------------------------------------------- */

struct writer {
    mmi_buf_t *out;
    char *err;
    size_t errlen;
};

static int
put(struct writer *w, const char *s, size_t n)
{
    if (mmi_buf_append(w->out, s, n) != MM_OK)
        return mmi_codec_fail(w->err, w->errlen, MM_ENOMEM, "out of memory writing JSON");
    return MM_OK;
}

static int
put_lit(struct writer *w, const char *s)
{
    return put(w, s, strlen(s));
}

/* The length of the well-formed UTF-8 sequence at s (RFC 3629: no
 * overlongs, no surrogates, nothing above U+10FFFF), or 0. */
static size_t
utf8_seq(const unsigned char *s, size_t n)
{
    unsigned c = s[0];
    size_t len = c >= 0xf0 ? 4 : c >= 0xe0 ? 3 : 2;
    unsigned lo = 0x80, hi = 0xbf;
    if (c < 0xc2 || c > 0xf4 || n < len)
        return 0;
    if (c == 0xe0)
        lo = 0xa0;
    else if (c == 0xed)
        hi = 0x9f;
    else if (c == 0xf0)
        lo = 0x90;
    else if (c == 0xf4)
        hi = 0x8f;
    if (s[1] < lo || s[1] > hi)
        return 0;
    for (size_t i = 2; i < len; i++)
        if (s[i] < 0x80 || s[i] > 0xbf)
            return 0;
    return len;
}

static int
put_escape(struct writer *w, unsigned char c)
{
    static const char short_esc[] = {['\b'] = 'b', ['\f'] = 'f', ['\n'] = 'n', ['\r'] = 'r',
                                     ['\t'] = 't', ['"'] = '"',  ['\\'] = '\\'};
    char esc[8];
    if (c < sizeof short_esc && short_esc[c] != 0) {
        esc[0] = '\\';
        esc[1] = short_esc[c];
        return put(w, esc, 2);
    }
    snprintf(esc, sizeof esc, "\\u%04x", c);
    return put(w, esc, 6);
}

/* A JSON string: runs of plain bytes are copied whole; `what` names it in errors. */
static int
put_string(struct writer *w, const char *str, size_t n, const char *what)
{
    const unsigned char *s = (const unsigned char *) str;
    size_t run = 0, i = 0;
    if (n == 0) /* msgpack-c gives an empty str a NULL ptr */
        return put(w, "\"\"", 2);
    if (mmi_buf_reserve(w->out, n + 2) != MM_OK) /* the usual size: one growth, not several */
        return mmi_codec_fail(w->err, w->errlen, MM_ENOMEM, "out of memory writing JSON");
    int rc = put(w, "\"", 1);
    while (rc == MM_OK && i < n) {
        if (s[i] >= 0x80) {
            size_t k = utf8_seq(s + i, n - i);
            if (k == 0)
                return mmi_codec_fail(w->err, w->errlen, MM_EINVAL,
                                      "JSON cannot carry this %s: invalid UTF-8 at byte %zu", what,
                                      i);
            i += k;
            continue;
        }
        if (s[i] >= 0x20 && s[i] != '"' && s[i] != '\\') {
            i++;
            continue;
        }
        rc = put(w, str + run, i - run);
        if (rc == MM_OK)
            rc = put_escape(w, s[i]);
        run = ++i;
    }
    if (rc == MM_OK)
        rc = put(w, str + run, n - run);
    return rc == MM_OK ? put(w, "\"", 1) : rc;
}

/* Does the text read back as exactly d (as a float for float32)? */
static bool
reads_back(const char *num, double d, bool f32)
{
    if (f32)
        return strtof(num, NULL) == (float) d;
    return strtod(num, NULL) == d;
}

/*
 * The shortest text that reads back to the same value (so 0.1 is "0.1",
 * not "0.10000000000000001"); a float32 reads back as the same float32.
 * The decimal point is forced to '.' whatever LC_NUMERIC says, and an
 * integral value keeps a ".0" so that it reads back as a real.
 */
static int
put_real(struct writer *w, double d, bool f32)
{
    if (!isfinite(d))
        return mmi_codec_fail(w->err, w->errlen, MM_EINVAL,
                              "JSON cannot carry a NaN or an infinity");
    char num[48], text[48];
    int lo = f32 ? 6 : 15, hi = f32 ? 9 : 17;
    for (int prec = lo; prec <= hi; prec++) {
        snprintf(num, sizeof num, "%.*g", prec, d);
        if (reads_back(num, d, f32))
            break;
    }
    size_t n = 0;
    bool real = false;
    for (const char *c = num; *c != '\0'; c++) {
        bool plain = (*c >= '0' && *c <= '9') || *c == '-' || *c == '+';
        real = real || !plain;
        if (plain || *c == 'e')
            text[n++] = *c;
        else if (n == 0 || text[n - 1] != '.')
            text[n++] = '.'; /* the locale's decimal point, maybe multibyte */
    }
    if (!real) {
        text[n++] = '.';
        text[n++] = '0';
    }
    return put(w, text, n);
}

static int put_value(struct writer *w, const msgpack_object *o, int depth);

static int
put_array(struct writer *w, const msgpack_object_array *a, int depth)
{
    int rc = put(w, "[", 1);
    for (uint32_t i = 0; rc == MM_OK && i < a->size; i++) {
        if (i > 0)
            rc = put(w, ",", 1);
        if (rc == MM_OK)
            rc = put_value(w, &a->ptr[i], depth);
    }
    return rc == MM_OK ? put(w, "]", 1) : rc;
}

/* Keys are str or integers (written as their decimal string). A NUL in a
 * key is refused: jansson, hence every micromsg peer, could not read it. */
static int
put_key(struct writer *w, const msgpack_object *k)
{
    char num[32];
    switch (k->type) {
    case MSGPACK_OBJECT_STR:
        if (k->via.str.size > 0 && memchr(k->via.str.ptr, '\0', k->via.str.size) != NULL)
            return mmi_codec_fail(w->err, w->errlen, MM_EINVAL,
                                  "JSON map keys cannot contain a NUL byte");
        return put_string(w, k->via.str.ptr, k->via.str.size, "map key");
    case MSGPACK_OBJECT_POSITIVE_INTEGER:
        snprintf(num, sizeof num, "\"%" PRIu64 "\"", k->via.u64);
        return put_lit(w, num);
    case MSGPACK_OBJECT_NEGATIVE_INTEGER:
        snprintf(num, sizeof num, "\"%" PRId64 "\"", k->via.i64);
        return put_lit(w, num);
    default:
        return mmi_codec_fail(w->err, w->errlen, MM_EINVAL,
                              "JSON map keys must be strings or integers, not msgpack type %d",
                              (int) k->type);
    }
}

static int
put_map(struct writer *w, const msgpack_object_map *m, int depth)
{
    int rc = put(w, "{", 1);
    for (uint32_t i = 0; rc == MM_OK && i < m->size; i++) {
        if (i > 0)
            rc = put(w, ",", 1);
        if (rc == MM_OK)
            rc = put_key(w, &m->ptr[i].key);
        if (rc == MM_OK)
            rc = put(w, ":", 1);
        if (rc == MM_OK)
            rc = put_value(w, &m->ptr[i].val, depth);
    }
    return rc == MM_OK ? put(w, "}", 1) : rc;
}

static int
put_int(struct writer *w, const msgpack_object *o)
{
    char num[24];
    if (o->type == MSGPACK_OBJECT_POSITIVE_INTEGER)
        snprintf(num, sizeof num, "%" PRIu64, o->via.u64);
    else
        snprintf(num, sizeof num, "%" PRId64, o->via.i64);
    return put_lit(w, num);
}

static int
put_value(struct writer *w, const msgpack_object *o, int depth)
{
    bool container = o->type == MSGPACK_OBJECT_ARRAY || o->type == MSGPACK_OBJECT_MAP;
    if (container && depth >= MMI_CODEC_MAX_DEPTH)
        return mmi_codec_fail(w->err, w->errlen, MM_EINVAL, "msgpack object nested deeper than %d",
                              MMI_CODEC_MAX_DEPTH);
    switch (o->type) {
    case MSGPACK_OBJECT_NIL:
        return put_lit(w, "null");
    case MSGPACK_OBJECT_BOOLEAN:
        return put_lit(w, o->via.boolean ? "true" : "false");
    case MSGPACK_OBJECT_POSITIVE_INTEGER:
    case MSGPACK_OBJECT_NEGATIVE_INTEGER:
        return put_int(w, o);
    case MSGPACK_OBJECT_FLOAT32:
    case MSGPACK_OBJECT_FLOAT64:
        return put_real(w, o->via.f64, o->type == MSGPACK_OBJECT_FLOAT32);
    case MSGPACK_OBJECT_STR:
        return put_string(w, o->via.str.ptr, o->via.str.size, "string");
    case MSGPACK_OBJECT_ARRAY:
        return put_array(w, &o->via.array, depth + 1);
    case MSGPACK_OBJECT_MAP:
        return put_map(w, &o->via.map, depth + 1);
    case MSGPACK_OBJECT_BIN:
        return mmi_codec_fail(w->err, w->errlen, MM_EINVAL,
                              "JSON cannot carry a msgpack bin (raw bytes)");
    case MSGPACK_OBJECT_EXT:
        return mmi_codec_fail(w->err, w->errlen, MM_EINVAL,
                              "JSON cannot carry a msgpack ext (type %d)", (int) o->via.ext.type);
    }
    return mmi_codec_fail(w->err, w->errlen, MM_EINVAL, "unknown msgpack object type %d",
                          (int) o->type);
}

int
mmi_msgpack_to_json(const msgpack_object *obj, mmi_buf_t *out, char *err, size_t errlen)
{
    struct writer w = {.out = out, .err = err, .errlen = errlen};
    size_t mark = out->len;
    int rc = put_value(&w, obj, 0);
    if (rc != MM_OK)
        out->len = mark;
    return rc;
}

/* ---- msgpack validation ------------------------------------------------- */

/* How the heads 0xc0..0xdf continue. `width`: the payload size (FIXED) or
 * the size of the big-endian length or count (the others); `extra`: the ext
 * type byte between length and payload. */
enum { HEAD_BAD, HEAD_FIXED, HEAD_SIZED, HEAD_ARRAY, HEAD_MAP };
static const struct {
    unsigned char kind, width, extra;
} heads[32] = {
    [0x00] = {HEAD_FIXED, 0, 0}, [0x02] = {HEAD_FIXED, 0, 0}, [0x03] = {HEAD_FIXED, 0, 0},
    [0x04] = {HEAD_SIZED, 1, 0}, [0x05] = {HEAD_SIZED, 2, 0}, [0x06] = {HEAD_SIZED, 4, 0},
    [0x07] = {HEAD_SIZED, 1, 1}, [0x08] = {HEAD_SIZED, 2, 1}, [0x09] = {HEAD_SIZED, 4, 1},
    [0x0a] = {HEAD_FIXED, 4, 0}, [0x0b] = {HEAD_FIXED, 8, 0}, [0x0c] = {HEAD_FIXED, 1, 0},
    [0x0d] = {HEAD_FIXED, 2, 0}, [0x0e] = {HEAD_FIXED, 4, 0}, [0x0f] = {HEAD_FIXED, 8, 0},
    [0x10] = {HEAD_FIXED, 1, 0}, [0x11] = {HEAD_FIXED, 2, 0}, [0x12] = {HEAD_FIXED, 4, 0},
    [0x13] = {HEAD_FIXED, 8, 0}, [0x14] = {HEAD_FIXED, 2, 0}, [0x15] = {HEAD_FIXED, 3, 0},
    [0x16] = {HEAD_FIXED, 5, 0}, [0x17] = {HEAD_FIXED, 9, 0}, [0x18] = {HEAD_FIXED, 17, 0},
    [0x19] = {HEAD_SIZED, 1, 0}, [0x1a] = {HEAD_SIZED, 2, 0}, [0x1b] = {HEAD_SIZED, 4, 0},
    [0x1c] = {HEAD_ARRAY, 2, 0}, [0x1d] = {HEAD_ARRAY, 4, 0}, [0x1e] = {HEAD_MAP, 2, 0},
    [0x1f] = {HEAD_MAP, 4, 0},
};

enum { SCAN_OK, SCAN_SHORT, SCAN_BAD };

struct scan {
    const unsigned char *p;
    size_t len, pos;
};

static bool
skip(struct scan *s, uint64_t n)
{
    if (n > s->len - s->pos)
        return false;
    s->pos += n;
    return true;
}

static bool
read_be(struct scan *s, unsigned width, uint64_t *v)
{
    if (width > s->len - s->pos)
        return false;
    *v = 0;
    for (unsigned i = 0; i < width; i++)
        *v = *v << 8 | s->p[s->pos++];
    return true;
}

/* One element's head and scalar payload; *n receives a container's element count. */
static int
scan_head(struct scan *s, bool *container, uint64_t *n)
{
    unsigned b = s->p[s->pos++];
    *container = (b >= 0x80 && b <= 0x9f);
    *n = b <= 0x8f ? 2u * (b & 0x0f) : b & 0x0f;
    if (b <= 0x9f || b >= 0xe0)
        return SCAN_OK;
    if (b <= 0xbf)
        return skip(s, b & 0x1f) ? SCAN_OK : SCAN_SHORT;
    unsigned kind = heads[b - 0xc0].kind, width = heads[b - 0xc0].width;
    uint64_t v = 0;
    if (kind == HEAD_BAD)
        return SCAN_BAD;
    if (kind == HEAD_FIXED)
        return skip(s, width) ? SCAN_OK : SCAN_SHORT;
    if (!read_be(s, width, &v))
        return SCAN_SHORT;
    if (kind == HEAD_SIZED)
        return skip(s, v + heads[b - 0xc0].extra) ? SCAN_OK : SCAN_SHORT;
    *container = true;
    *n = kind == HEAD_MAP ? 2 * v : v;
    return SCAN_OK;
}

int
mmi_msgpack_check(const void *data, size_t len, char *err, size_t errlen)
{
    struct scan s = {.p = data, .len = len};
    uint64_t left[MMI_CODEC_MAX_DEPTH + 1] = {1}; /* elements still to read, per level */
    int top = 0;
    while (top >= 0) {
        if (left[top] == 0) {
            top--;
            continue;
        }
        left[top]--;
        bool container = false;
        uint64_t n = 0;
        int r = s.pos < s.len ? scan_head(&s, &container, &n) : SCAN_SHORT;
        if (r == SCAN_BAD)
            return mmi_codec_fail(err, errlen, MM_EDECODE,
                                  "bad msgpack: reserved byte 0xc1 at byte %zu", s.pos - 1);
        /* Every element takes at least one byte: a count beyond what is left is a lie. */
        if (r == SCAN_SHORT || (container && n > s.len - s.pos))
            return mmi_codec_fail(err, errlen, MM_EDECODE, "bad msgpack: truncated (%zu bytes)",
                                  len);
        if (container && top == MMI_CODEC_MAX_DEPTH)
            return mmi_codec_fail(err, errlen, MM_EDECODE, "bad msgpack: nested deeper than %d",
                                  MMI_CODEC_MAX_DEPTH);
        if (container)
            left[++top] = n;
    }
    if (s.pos != len)
        return mmi_codec_fail(err, errlen, MM_EDECODE,
                              "bad msgpack: %zu trailing bytes after the object", len - s.pos);
    return MM_OK;
}
