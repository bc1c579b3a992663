/*
 * Bodies at the wire edge. The core holds msgpack; a JSON peer gets JSON
 * text, a top-level bin travels as raw bytes (application/octet-stream),
 * and anything over 1,000,000 bytes is gzipped (PROTOCOL.md section 3).
 * Incoming bodies are checked against max_body before and after inflating,
 * so a gzip bomb costs at most max_body bytes.
 */
#include <stdio.h>
#include <string.h>
#include <strings.h>

#include "wire.h"

static const char EMPTY_STR[] = "\xa0"; /* msgpack "" : what "no body" means */

static bool
is_bin(const unsigned char *p, size_t len)
{
    return len > 0 && (p[0] == 0xc4 || p[0] == 0xc5 || p[0] == 0xc6);
}

/* The user's msgpack bytes as one object in `z` (checked first: msgpack_unpack
 * trusts announced sizes). */
static int
unpack_user(mm_t *mm, const void *body, size_t len, msgpack_zone *z, msgpack_object *o)
{
    char why[160] = "";
    size_t off = 0;
    if (mmi_msgpack_check(body, len, why, sizeof why) != MM_OK)
        return mmi_fail(mm, MM_EINVAL, "body is not the msgpack bytes of one object: %s", why);
    if (msgpack_unpack(body, len, &off, z, o) != MSGPACK_UNPACK_SUCCESS)
        return mmi_fail(mm, MM_ENOMEM, "out of memory decoding the body");
    return MM_OK;
}

/* A top-level bin: its payload goes out as is. */
static int
encode_raw(mm_t *mm, const void *body, size_t len, mmi_wire_out_t *out)
{
    msgpack_zone z;
    msgpack_object o;
    msgpack_zone_init(&z, 256);
    int rc = unpack_user(mm, body, len, &z, &o);
    if (rc == MM_OK && mmi_buf_append(&out->buf, o.via.bin.ptr, o.via.bin.size) != MM_OK)
        rc = mmi_fail(mm, MM_ENOMEM, "out of memory");
    msgpack_zone_destroy(&z);
    out->body = (amqp_bytes_t){out->buf.len, out->buf.data};
    out->content_type = "application/octet-stream";
    return rc;
}

static int
encode_json(mm_t *mm, const void *body, size_t len, mmi_wire_out_t *out)
{
    msgpack_zone z;
    msgpack_object o;
    char err[160] = "";
    msgpack_zone_init(&z, 1024);
    int rc = unpack_user(mm, body, len, &z, &o);
    if (rc == MM_OK && (rc = mmi_msgpack_to_json(&o, &out->buf, err, sizeof err)) != MM_OK)
        rc = mmi_fail(mm, rc, "body cannot be sent as JSON: %s", err);
    msgpack_zone_destroy(&z);
    out->body = (amqp_bytes_t){out->buf.len, out->buf.data};
    out->content_type = "application/json";
    return rc;
}

static int
encode_msgpack(mm_t *mm, const void *body, size_t len, mmi_wire_out_t *out)
{
    char err[160] = "";
    if (mmi_msgpack_check(body, len, err, sizeof err) != MM_OK)
        return mmi_fail(mm, MM_EINVAL, "body is not the msgpack bytes of one object: %s", err);
    out->body = (amqp_bytes_t){len, (void *) body};
    out->content_type = "application/msgpack";
    return MM_OK;
}

int
mmi_wire_encode(mm_t *mm, int codec, const void *body, size_t len, mmi_wire_out_t *out)
{
    *out = (mmi_wire_out_t){0};
    if (body == NULL || len == 0) {
        body = EMPTY_STR;
        len = 1;
    }
    if (len > mm->opts.max_body)
        return mmi_fail(mm, MM_ETOOBIG, "body of %zu bytes exceeds max_body (%u)", len,
                        mm->opts.max_body);
    int rc = is_bin(body, len)        ? encode_raw(mm, body, len, out)
             : codec == MM_CODEC_JSON ? encode_json(mm, body, len, out)
                                      : encode_msgpack(mm, body, len, out);
    if (rc != MM_OK)
        return rc;
    if (out->body.len > mm->opts.max_body)
        return mmi_fail(mm, MM_ETOOBIG, "encoded body of %zu bytes exceeds max_body (%u)",
                        out->body.len, mm->opts.max_body);
    if (out->body.len <= MMI_GZIP_ABOVE)
        return MM_OK;
    if (mmi_gzip_deflate(out->body.bytes, out->body.len, &out->gz) != MM_OK)
        return mmi_fail(mm, MM_ENOMEM, "out of memory compressing the body");
    out->body = (amqp_bytes_t){out->gz.len, out->gz.data};
    out->content_encoding = "gzip";
    return MM_OK;
}

void
mmi_wire_out_free(mmi_wire_out_t *out)
{
    mmi_buf_free(&out->buf);
    mmi_buf_free(&out->gz);
}

/* ---- incoming ---- */

static bool
bytes_is(amqp_bytes_t b, const char *s)
{
    size_t n = strlen(s), len = b.len;
    const char *p = b.bytes;
    while (len > 0 && (p[len - 1] == ' ' || p[len - 1] == '\t'))
        len--;
    return len == n && strncasecmp(p, s, n) == 0;
}

/* The media type without parameters ("application/json; charset=utf-8"). */
static amqp_bytes_t
media_type(amqp_bytes_t ct)
{
    const char *semi = ct.len ? memchr(ct.bytes, ';', ct.len) : NULL;
    if (semi != NULL)
        ct.len = (size_t) (semi - (const char *) ct.bytes);
    return ct;
}

static int
parse_ctype(const amqp_basic_properties_t *p, mmi_ctype *ret, char *err, size_t errlen)
{
    if (p == NULL || !(p->_flags & AMQP_BASIC_CONTENT_TYPE_FLAG)) {
        snprintf(err, errlen, "no content type");
        return MM_EDECODE;
    }
    amqp_bytes_t mt = media_type(p->content_type);
    if (bytes_is(mt, "application/json"))
        *ret = MMI_CT_JSON;
    else if (bytes_is(mt, "application/msgpack") || bytes_is(mt, "application/x-msgpack") ||
             bytes_is(mt, "application/vnd.msgpack"))
        *ret = MMI_CT_MSGPACK;
    else if (bytes_is(mt, "application/octet-stream"))
        *ret = MMI_CT_OCTET;
    else {
        snprintf(err, errlen, "unknown content type '%.*s'",
                 (int) (p->content_type.len > 64 ? 64 : p->content_type.len),
                 (const char *) p->content_type.bytes);
        return MM_EDECODE;
    }
    return MM_OK;
}

/* Inflate when the encoding says gzip; `*data` then points into `tmp`. */
static int
decode_encoding(mm_t *mm, const amqp_basic_properties_t *p, amqp_bytes_t *data, mmi_buf_t *tmp,
                char *err, size_t errlen)
{
    if (p == NULL || !(p->_flags & AMQP_BASIC_CONTENT_ENCODING_FLAG) ||
        p->content_encoding.len == 0 || bytes_is(p->content_encoding, "identity"))
        return MM_OK;
    if (!bytes_is(p->content_encoding, "gzip")) {
        snprintf(err, errlen, "unknown content encoding '%.*s' (only gzip is accepted)",
                 (int) (p->content_encoding.len > 64 ? 64 : p->content_encoding.len),
                 (const char *) p->content_encoding.bytes);
        return MM_EDECODE;
    }
    char why[160] = "";
    int rc = mmi_gzip_inflate(data->bytes, data->len, mm->opts.max_body, tmp, why, sizeof why);
    if (rc == MM_ETOOBIG)
        snprintf(err, errlen, "gzip body inflates beyond max_body (%u bytes)", mm->opts.max_body);
    else if (rc != MM_OK)
        snprintf(err, errlen, "gzip body: %s", why);
    *data = (amqp_bytes_t){tmp->len, tmp->data};
    return rc;
}

static int
to_msgpack(mmi_ctype ct, amqp_bytes_t data, mmi_wire_in_t *in, char *err, size_t errlen)
{
    if (ct == MMI_CT_MSGPACK) {
        in->data = data.bytes;
        in->len = data.len;
        return MM_OK;
    }
    mmi_buf_t *b = &in->buf;
    int rc = MM_OK;
    if (ct == MMI_CT_JSON) {
        char why[160] = "";
        rc = mmi_json_to_msgpack(data.bytes, data.len, b, why, sizeof why);
        if (rc != MM_OK)
            snprintf(err, errlen, "JSON body: %s", why);
    } else {
        msgpack_packer pk;
        msgpack_packer_init(&pk, b, mmi_buf_write);
        if (msgpack_pack_bin(&pk, data.len) != 0 ||
            msgpack_pack_bin_body(&pk, data.bytes, data.len) != 0)
            rc = MM_ENOMEM;
    }
    in->data = b->data;
    in->len = b->len;
    in->borrowed = false;
    return rc;
}

int
mmi_wire_decode(mm_t *mm, const mmi_content_t *c, mmi_wire_in_t *in, char *err, size_t errlen)
{
    /* Until the type is read, not msgpack: an answer falls back to our codec. */
    *in = (mmi_wire_in_t){.borrowed = true, .ctype = MMI_CT_OCTET};
    if (c->oversize) {
        snprintf(err, errlen, "body of %llu bytes exceeds max_body (%u)",
                 (unsigned long long) c->body_size, mm->opts.max_body);
        return MM_ETOOBIG;
    }
    int rc = parse_ctype(c->props, &in->ctype, err, errlen);
    if (rc != MM_OK)
        return rc;
    amqp_bytes_t data = c->body;
    mmi_buf_t tmp = {0};
    rc = decode_encoding(mm, c->props, &data, &tmp, err, errlen);
    if (rc == MM_OK && tmp.data != NULL && in->ctype == MMI_CT_MSGPACK) {
        in->buf = tmp; /* the inflated bytes are the body */
        tmp = (mmi_buf_t){0};
        in->borrowed = false;
    }
    if (rc == MM_OK)
        rc = to_msgpack(in->ctype, data, in, err, errlen);
    mmi_buf_free(&tmp);
    return rc;
}

void
mmi_wire_in_free(mmi_wire_in_t *in)
{
    mmi_buf_free(&in->buf);
}

int
mmi_wire_reply_codec(const mm_t *mm, mmi_ctype ct)
{
    if (ct == MMI_CT_JSON)
        return MM_CODEC_JSON;
    if (ct == MMI_CT_MSGPACK)
        return MM_CODEC_MSGPACK;
    return mm->opts.codec;
}
