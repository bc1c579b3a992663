/*
 * The wire codecs, pure functions with no broker and no instance: a growable
 * byte buffer, JSON text <-> msgpack bytes (jansson), and gzip with an output
 * limit (zlib). The core keeps bodies as msgpack; JSON and gzip exist only at
 * the wire edge (lib/wire.c). Every function reports failure as an MM_E* code
 * and writes a one-line reason into `err` (never NULL, at least 1 byte).
 */
#ifndef MM_CODEC_H
#define MM_CODEC_H

#include <stddef.h>

#include <msgpack.h>

/* A growable byte buffer. Zero-initialise ({0}) before first use. */
typedef struct mmi_buf {
    char *data;
    size_t len, cap;
} mmi_buf_t;

int mmi_buf_reserve(mmi_buf_t *b, size_t extra); /* MM_OK or MM_ENOMEM */
/* mmi_buf_reserve, but the capacity never grows past len + max_extra (which
 * must be >= extra): for callers with a hard output bound (gzip inflate). */
int mmi_buf_reserve_max(mmi_buf_t *b, size_t extra, size_t max_extra);
int mmi_buf_append(mmi_buf_t *b, const void *p, size_t n);
void mmi_buf_reset(mmi_buf_t *b); /* len = 0, memory kept */
void mmi_buf_free(mmi_buf_t *b);  /* back to {0} */

/* msgpack_packer write callback appending to an mmi_buf_t (data = the buffer). */
int mmi_buf_write(void *data, const char *buf, size_t len);

/*
 * JSON text (UTF-8, one value of any type, surrounding whitespace allowed)
 * -> msgpack bytes appended to `out`. Integers become msgpack ints (negative
 * or positive), reals become float64, strings str, null nil. Integers beyond
 * int64 are refused. Depth is limited (MMI_CODEC_MAX_DEPTH). Object keys
 * keep their order; a duplicate key keeps its first place and its last value.
 * On failure out->len is left as it was (as for every function below).
 * @return MM_OK, MM_EDECODE (not JSON, trailing garbage, too deep), MM_ENOMEM.
 */
int mmi_json_to_msgpack(const char *json, size_t len, mmi_buf_t *out, char *err, size_t errlen);

/*
 * One msgpack object -> JSON text appended to `out` (compact, no trailing
 * newline). str must be valid UTF-8; map keys must be str without NUL
 * (integer keys are written as their decimal string); bin, ext, NaN and
 * infinities are refused (JSON cannot carry them). Floats are written in
 * the shortest form that reads back to the same value ("0.1"; a float32 to
 * the same float32), always as a real ("1.0", "1e+300").
 * @return MM_OK, MM_EINVAL (not representable in JSON, reason in err), MM_ENOMEM.
 */
int mmi_msgpack_to_json(const msgpack_object *obj, mmi_buf_t *out, char *err, size_t errlen);

/*
 * Check that `data` holds exactly one well-formed msgpack object (no
 * trailing bytes), within the depth limit.
 * @return MM_OK or MM_EDECODE.
 */
int mmi_msgpack_check(const void *data, size_t len, char *err, size_t errlen);

/*
 * gzip (RFC 1952) deflate of `len` bytes, appended to `out`.
 * @return MM_OK or MM_ENOMEM.
 */
int mmi_gzip_deflate(const void *in, size_t len, mmi_buf_t *out);

/*
 * gzip inflate appended to `out`, stopping with MM_ETOOBIG as soon as the
 * output would exceed `limit` bytes (a gzip bomb costs at most `limit`).
 * Concatenated gzip members are accepted; trailing garbage is not. On any
 * failure out->len is left as it was (only its capacity may have grown).
 * @return MM_OK, MM_EDECODE (not gzip, corrupt, truncated), MM_ETOOBIG, MM_ENOMEM.
 */
int mmi_gzip_inflate(const void *in, size_t len, size_t limit, mmi_buf_t *out, char *err,
                     size_t errlen);

/*
 * Containers nest at most this deep (a top-level array is depth 1). 32 is
 * what msgpack-c's own unpacker can read (MSGPACK_EMBED_STACK_SIZE, compiled
 * into libmsgpackc): a deeper body would pass the codecs and then fail in
 * msgpack_unpack() with a misleading out-of-memory code.
 */
/* Write the reason into err and return code (the codecs' one failure path). */
int mmi_codec_fail(char *err, size_t errlen, int code, const char *fmt, ...)
    __attribute__((format(printf, 4, 5)));

#define MMI_CODEC_MAX_DEPTH 32

#endif
