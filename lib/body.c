/*
 * The public body builder (mm_body_*, include/micromsg.h): an mmi_buf_t
 * (lib/buf.c) with a msgpack_packer writing into it, so callers build
 * bodies with the ordinary msgpack_pack_*() calls and hand the bytes to a
 * send call. The two helpers for the common bodies (one string, raw bytes)
 * undo a half-written object when memory runs out, so the builder never
 * holds a torn value.
 */
#include <stdlib.h>
#include <string.h>

#include "codec.h"
#include "micromsg.h"

struct mm_body {
    mmi_buf_t buf;
    msgpack_packer pk;
};

mm_body_t *
mm_body_new(void)
{
    mm_body_t *b = malloc(sizeof *b);
    if (b == NULL)
        return NULL;
    *b = (mm_body_t){.buf = {0}};
    msgpack_packer_init(&b->pk, &b->buf, mmi_buf_write);
    return b;
}

msgpack_packer *
mm_body_packer(mm_body_t *b)
{
    return b != NULL ? &b->pk : NULL;
}

const void *
mm_body_data(const mm_body_t *b)
{
    return b != NULL && b->buf.len > 0 ? b->buf.data : NULL;
}

size_t
mm_body_len(const mm_body_t *b)
{
    return b != NULL ? b->buf.len : 0;
}

void
mm_body_reset(mm_body_t *b)
{
    if (b != NULL)
        mmi_buf_reset(&b->buf);
}

void
mm_body_free(mm_body_t *b)
{
    if (b == NULL)
        return;
    mmi_buf_free(&b->buf);
    free(b);
}

int
mm_body_str(mm_body_t *b, const char *s)
{
    if (b == NULL || s == NULL)
        return MM_EINVAL;
    size_t n = strlen(s);
    size_t mark = b->buf.len;
    if (msgpack_pack_str(&b->pk, n) == 0 && msgpack_pack_str_body(&b->pk, s, n) == 0)
        return MM_OK;
    b->buf.len = mark;
    return MM_ENOMEM;
}

int
mm_body_bin(mm_body_t *b, const void *p, size_t n)
{
    if (b == NULL || (p == NULL && n > 0))
        return MM_EINVAL;
    size_t mark = b->buf.len;
    if (msgpack_pack_bin(&b->pk, n) == 0 && msgpack_pack_bin_body(&b->pk, p, n) == 0)
        return MM_OK;
    b->buf.len = mark;
    return MM_ENOMEM;
}
