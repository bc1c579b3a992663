/*
 * The growable byte buffer under every codec (lib/codec.h): capacity doubles
 * so appends cost amortised O(1), every size computation is checked for
 * overflow, and a failed growth leaves the buffer as it was. mmi_buf_write
 * lets a msgpack_packer write straight into one.
 */
#include <stdint.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "codec.h"
#include "micromsg.h"

#define MMI_BUF_MIN 64

/* Grow the capacity to exactly `cap` (> b->cap). */
static int
grow_to(mmi_buf_t *b, size_t cap)
{
    char *p = realloc(b->data, cap);
    if (p == NULL)
        return MM_ENOMEM;
    b->data = p;
    b->cap = cap;
    return MM_OK;
}

int
mmi_buf_reserve_max(mmi_buf_t *b, size_t extra, size_t max_extra)
{
    if (extra > SIZE_MAX - b->len)
        return MM_ENOMEM;
    size_t need = b->len + extra;
    if (need <= b->cap)
        return MM_OK;
    size_t most = max_extra > SIZE_MAX - b->len ? SIZE_MAX : b->len + max_extra;
    size_t cap = b->cap < MMI_BUF_MIN ? MMI_BUF_MIN : b->cap;
    while (cap < need && cap <= SIZE_MAX / 2)
        cap *= 2;
    if (cap < need)
        cap = need;
    if (cap > most)
        cap = most > need ? most : need;
    return grow_to(b, cap);
}

int
mmi_buf_reserve(mmi_buf_t *b, size_t extra)
{
    return mmi_buf_reserve_max(b, extra, SIZE_MAX);
}

int
mmi_buf_append(mmi_buf_t *b, const void *p, size_t n)
{
    if (n == 0)
        return MM_OK;
    int rc = mmi_buf_reserve(b, n);
    if (rc != MM_OK)
        return rc;
    memcpy(b->data + b->len, p, n);
    b->len += n;
    return MM_OK;
}

void
mmi_buf_reset(mmi_buf_t *b)
{
    b->len = 0;
}

void
mmi_buf_free(mmi_buf_t *b)
{
    free(b->data);
    *b = (mmi_buf_t){0};
}

int
mmi_buf_write(void *data, const char *buf, size_t len)
{
    return mmi_buf_append(data, buf, len) == MM_OK ? 0 : -1;
}

int
mmi_codec_fail(char *err, size_t errlen, int code, const char *fmt, ...)
{
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(err, errlen, fmt, ap);
    va_end(ap);
    return code;
}
