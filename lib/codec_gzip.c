/*
 * gzip (RFC 1952) on zlib, for the bodies the wire edge (lib/wire.c) sends
 * compressed. Only the gzip wrapper is read (windowBits 15+16, not the
 * 15+32 auto-detection that would also take a zlib stream), concatenated
 * members are read as gzip(1) reads them, and anything after the last
 * member is refused. Inflate works in bounded steps and never lets its
 * output, nor the memory behind it, grow past the caller's limit: a small
 * hostile message (a gzip bomb) costs at most `limit` bytes.
 */
#define ZLIB_CONST
#include <limits.h>
#include <stdarg.h>
#include <stdint.h>
#include <stdio.h>

#include <zlib.h>

#include "codec.h"
#include "micromsg.h"

#define GZ_WINDOW (15 + 16)         /* 32 KiB window, gzip wrapper */
#define GZ_STEP ((size_t) 1 << 20)  /* input handed to zlib per call (it counts in uInt) */
#define GZ_GROW ((size_t) 16 << 10) /* the least output room asked for per call */

static size_t
min_size(size_t a, size_t b)
{
    return a < b ? a : b;
}

/* The input side, shared by both directions: zlib takes at most GZ_STEP at a time. */
struct feed {
    const unsigned char *in;
    size_t len, fed;
};

static void
feed_more(z_stream *zs, struct feed *f)
{
    if (zs->avail_in > 0 || f->fed == f->len)
        return;
    size_t n = min_size(f->len - f->fed, GZ_STEP);
    zs->next_in = f->in + f->fed;
    zs->avail_in = (uInt) n;
    f->fed += n;
}

/* ---- deflate ------------------------------------------------------------ */

static int
deflate_all(z_stream *zs, struct feed *f, mmi_buf_t *out)
{
    for (;;) {
        feed_more(zs, f);
        if (out->len == out->cap && mmi_buf_reserve(out, GZ_GROW) != MM_OK)
            return MM_ENOMEM;
        size_t room = min_size(out->cap - out->len, UINT_MAX);
        zs->next_out = (Bytef *) out->data + out->len;
        zs->avail_out = (uInt) room;
        int zrc = deflate(zs, f->fed == f->len ? Z_FINISH : Z_NO_FLUSH);
        out->len += room - zs->avail_out;
        if (zrc == Z_STREAM_END)
            return MM_OK;
        if (zrc != Z_OK && zrc != Z_BUF_ERROR)
            return MM_ENOMEM; /* Z_STREAM_ERROR: a bug, not the input's fault */
    }
}

int
mmi_gzip_deflate(const void *in, size_t len, mmi_buf_t *out)
{
    z_stream zs = {0};
    if (deflateInit2(&zs, Z_DEFAULT_COMPRESSION, Z_DEFLATED, GZ_WINDOW, 8, Z_DEFAULT_STRATEGY) !=
        Z_OK)
        return MM_ENOMEM;
    size_t mark = out->len;
    struct feed f = {.in = in, .len = len};
    /* deflateBound: the whole result in one allocation, whatever the input. */
    int rc = mmi_buf_reserve(out, deflateBound(&zs, len));
    if (rc == MM_OK)
        rc = deflate_all(&zs, &f, out);
    deflateEnd(&zs);
    if (rc != MM_OK)
        out->len = mark;
    return rc;
}

/* ---- inflate ------------------------------------------------------------ */

struct inflater {
    z_stream zs;
    struct feed f;
    mmi_buf_t *out;
    size_t produced, limit;
    char *err;
    size_t errlen;
};

enum { GZ_NEXT_MEMBER = 1 };

/* Input not yet consumed by zlib. */
static size_t
unread(const struct inflater *z)
{
    return z->f.len - z->f.fed + z->zs.avail_in;
}

/* Output room for one call: never past limit + 1 bytes in all, that one
 * byte more being how an over-long stream is told from an exact fit. */
static int
make_room(struct inflater *z, size_t *room)
{
    size_t most = z->limit - z->produced + 1;
    if (mmi_buf_reserve_max(z->out, min_size(most, GZ_GROW), most) != MM_OK)
        return mmi_codec_fail(z->err, z->errlen, MM_ENOMEM, "out of memory inflating gzip data");
    *room = min_size(min_size(z->out->cap - z->out->len, most), UINT_MAX);
    z->zs.next_out = (Bytef *) z->out->data + z->out->len;
    z->zs.avail_out = (uInt) *room;
    return MM_OK;
}

/* After a member's end: done, another member (magic 1f 8b), or garbage. */
static int
after_member(struct inflater *z)
{
    size_t left = unread(z);
    if (left == 0)
        return MM_OK;
    const unsigned char *next = z->f.in + (z->f.len - left);
    if (next[0] != 0x1f || (left > 1 && next[1] != 0x8b))
        return mmi_codec_fail(z->err, z->errlen, MM_EDECODE,
                              "bad gzip: %zu bytes of trailing garbage after the gzip data", left);
    inflateReset(&z->zs); /* keeps next_in/avail_in */
    return GZ_NEXT_MEMBER;
}

static int
inflate_all(struct inflater *z)
{
    for (;;) {
        size_t room = 0;
        feed_more(&z->zs, &z->f);
        int rc = make_room(z, &room);
        if (rc != MM_OK)
            return rc;
        int zrc = inflate(&z->zs, Z_NO_FLUSH);
        z->out->len += room - z->zs.avail_out;
        z->produced += room - z->zs.avail_out;
        if (z->produced > z->limit)
            return mmi_codec_fail(z->err, z->errlen, MM_ETOOBIG,
                                  "gzip data inflates to more than %zu bytes", z->limit);
        if (zrc == Z_STREAM_END) {
            rc = after_member(z);
            if (rc != GZ_NEXT_MEMBER)
                return rc;
            continue;
        }
        if (zrc == Z_MEM_ERROR)
            return mmi_codec_fail(z->err, z->errlen, MM_ENOMEM,
                                  "out of memory inflating gzip data");
        /* Output room is never zero, so no progress means no input left. */
        if (zrc == Z_BUF_ERROR)
            return mmi_codec_fail(z->err, z->errlen, MM_EDECODE, "bad gzip: truncated data");
        if (zrc != Z_OK)
            return mmi_codec_fail(z->err, z->errlen, MM_EDECODE, "bad gzip: %s",
                                  z->zs.msg != NULL ? z->zs.msg : "corrupt data");
    }
}

int
mmi_gzip_inflate(const void *in, size_t len, size_t limit, mmi_buf_t *out, char *err, size_t errlen)
{
    if (len == 0)
        return mmi_codec_fail(err, errlen, MM_EDECODE, "bad gzip: no data");
    struct inflater z = {
        .f = {.in = in, .len = len},
        .out = out,
        .limit = min_size(limit, SIZE_MAX - 1),
        .err = err,
        .errlen = errlen,
    };
    if (inflateInit2(&z.zs, GZ_WINDOW) != Z_OK)
        return mmi_codec_fail(err, errlen, MM_ENOMEM, "out of memory starting gzip inflate");
    size_t mark = out->len;
    int rc = inflate_all(&z);
    inflateEnd(&z.zs);
    if (rc != MM_OK)
        out->len = mark;
    return rc;
}
