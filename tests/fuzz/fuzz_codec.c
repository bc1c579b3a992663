/* Fuzz target: the wire codecs must never crash, leak or read out of bounds,
 * and must agree with each other. Any JSON that decodes gives msgpack that
 * mmi_msgpack_check accepts and msgpack-c unpacks, that writes back as JSON,
 * which decodes to the same msgpack bytes. Any bytes that mmi_msgpack_check
 * accepts unpack, and their JSON (when there is one) decodes again unless an
 * integer is beyond int64. gzip inflate stays within its limit and leaves
 * the output untouched on failure; deflate then inflate gives the input. */
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "codec.h"
#include "micromsg.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

#define GZ_LIMIT ((size_t) 1 << 20)

static void
check(int ok)
{
    if (!ok)
        abort();
}

/* Unpack bytes that mmi_msgpack_check accepted: msgpack-c must agree. */
static msgpack_object
unpack_checked(const mmi_buf_t *b, msgpack_zone *z)
{
    msgpack_object o;
    size_t off = 0;
    check(msgpack_unpack(b->data, b->len, &off, z, &o) == MSGPACK_UNPACK_SUCCESS);
    check(off == b->len);
    return o;
}

static void
json_first(const uint8_t *data, size_t size)
{
    mmi_buf_t mp = {0}, js = {0}, mp2 = {0};
    char err[256];
    int rc = mmi_json_to_msgpack((const char *) data, size, &mp, err, sizeof err);
    check(rc == MM_OK || rc == MM_EDECODE || rc == MM_ENOMEM);
    check(rc == MM_OK || mp.len == 0);
    if (rc == MM_OK) {
        check(mmi_msgpack_check(mp.data, mp.len, err, sizeof err) == MM_OK);
        msgpack_zone z;
        check(msgpack_zone_init(&z, 2048));
        msgpack_object o = unpack_checked(&mp, &z);
        check(mmi_msgpack_to_json(&o, &js, err, sizeof err) == MM_OK);
        check(mmi_json_to_msgpack(js.data, js.len, &mp2, err, sizeof err) == MM_OK);
        check(mp2.len == mp.len && memcmp(mp2.data, mp.data, mp.len) == 0);
        msgpack_zone_destroy(&z);
    }
    mmi_buf_free(&mp);
    mmi_buf_free(&js);
    mmi_buf_free(&mp2);
}

static void
msgpack_first(const uint8_t *data, size_t size)
{
    char err[256];
    if (mmi_msgpack_check(data, size, err, sizeof err) != MM_OK)
        return;
    mmi_buf_t in = {0}, js = {0}, mp = {0};
    check(mmi_buf_append(&in, data, size) == MM_OK);
    msgpack_zone z;
    check(msgpack_zone_init(&z, 2048));
    msgpack_object o = unpack_checked(&in, &z);
    int rc = mmi_msgpack_to_json(&o, &js, err, sizeof err);
    check(rc == MM_OK || (rc == MM_EINVAL && err[0] != '\0' && js.len == 0));
    if (rc == MM_OK) {
        rc = mmi_json_to_msgpack(js.data, js.len, &mp, err, sizeof err);
        check(rc == MM_OK || strstr(err, "too big integer") != NULL);
    }
    msgpack_zone_destroy(&z);
    mmi_buf_free(&in);
    mmi_buf_free(&js);
    mmi_buf_free(&mp);
}

static void
gzip_both_ways(const uint8_t *data, size_t size)
{
    mmi_buf_t out = {0}, gz = {0};
    char err[256];
    int rc = mmi_gzip_inflate(data, size, GZ_LIMIT, &out, err, sizeof err);
    check(rc == MM_OK || rc == MM_EDECODE || rc == MM_ETOOBIG);
    check(rc == MM_OK ? out.len <= GZ_LIMIT : out.len == 0);
    check(out.cap <= GZ_LIMIT + 1);
    mmi_buf_reset(&out);
    check(mmi_gzip_deflate(data, size, &gz) == MM_OK);
    check(mmi_gzip_inflate(gz.data, gz.len, size, &out, err, sizeof err) == MM_OK);
    check(out.len == size && (size == 0 || memcmp(out.data, data, size) == 0));
    mmi_buf_free(&out);
    mmi_buf_free(&gz);
}

int
LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    json_first(data, size);
    msgpack_first(data, size);
    gzip_both_ways(data, size);
    return 0;
}
