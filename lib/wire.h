/*
 * Bodies at the wire edge: msgpack bytes from the user -> the bytes, content
 * type and encoding that go to the broker; and a delivery's bytes, content
 * type and encoding -> msgpack bytes for the message. JSON and gzip exist
 * only here (PROTOCOL.md section 3).
 */
#ifndef MM_WIRE_H
#define MM_WIRE_H

#include "codec.h"
#include "internal.h"

#define MMI_GZIP_ABOVE 1000000 /* bodies larger than this are sent gzipped */

typedef enum { MMI_CT_MSGPACK, MMI_CT_JSON, MMI_CT_OCTET } mmi_ctype;

typedef struct mmi_wire_out {
    amqp_bytes_t body;
    const char *content_type;
    const char *content_encoding; /* NULL or "gzip" */
    mmi_buf_t buf, gz;
} mmi_wire_out_t;

/* Encode for `codec` (MM_CODEC_*). Errors (MM_EINVAL, MM_ETOOBIG) are recorded on mm. */
int mmi_wire_encode(mm_t *mm, int codec, const void *body, size_t len, mmi_wire_out_t *out);
void mmi_wire_out_free(mmi_wire_out_t *out);

typedef struct mmi_wire_in {
    mmi_ctype ctype;
    const char *data; /* msgpack bytes: the delivery's own, or buf's */
    size_t len;
    bool borrowed; /* data points into the delivery (valid during the callback) */
    mmi_buf_t buf;
} mmi_wire_in_t;

/* Decode a delivery. MM_EDECODE / MM_ETOOBIG with the reason in err. */
int mmi_wire_decode(mm_t *mm, const mmi_content_t *c, mmi_wire_in_t *in, char *err, size_t errlen);
void mmi_wire_in_free(mmi_wire_in_t *in);

/* The codec to answer a request that came as `ct`. */
int mmi_wire_reply_codec(const mm_t *mm, mmi_ctype ct);

#endif
