/*
 * mm_msg_t as the core sees it: the message struct shared by the route
 * dispatch (lib/dispatch.c), the settle operations (lib/msg.c, lib/answer.c)
 * and the request table (lib/request.c).
 */
#ifndef MM_MSG_H
#define MM_MSG_H

#include "codec.h"
#include "headers.h"
#include "internal.h"

struct mm_msg {
    int refs;
    mm_t *mm; /* NULL for answers, and once the instance is freed */
    mm_msg_kind kind;
    struct mm_msg *live_prev, *live_next; /* mm->live: messages that may outlive mm */
    bool live;

    /* where it came from and how it is settled (requests, tasks, events) */
    uint16_t ch;
    uint32_t gen;
    uint64_t tag;
    bool no_ack;
    bool grouped;   /* an event from a group's queue: given up, it is dead-lettered */
    bool acked;     /* ack or nack sent (or no_ack) */
    bool nacked;    /* ... and it was a nack: acking it now would be a lie */
    bool answered;  /* a final answer went out */
    bool streaming; /* parts were written */
    bool expired;
    uint32_t seq;        /* next answer sequence number */
    int reply_codec;     /* MM_CODEC_* of the requester */
    int64_t deadline_ms; /* monotonic ms past which the answer is pointless; 0: none */
    struct event *expiry;

    const char *reply_to, *correlation_id, *request_id, *route; /* "" when absent */

    /* metadata (lib/meta.c): "" when absent */
    const char *msg_id, *sender, *causation_id, *traceparent, *type;
    int64_t timestamp_ms; /* 0 when unknown */
    int64_t offset;       /* a topic record's, else -1 */

    /* answers */
    int status;
    const char *err_code, *err_text;
    bool final;
    int64_t sequence; /* a stream part's sequence number, -1 when none */
    bool is_stream, is_end;
    struct mm_msg **parts; /* a collected stream: the parts before the end message, in order */
    size_t nparts;
    bool collected; /* mm_msg_part_count() = nparts + 1: the end message is the last part */

    /* body and headers (the zone owns the objects and the copied strings) */
    msgpack_zone zone;
    msgpack_object body, headers;
    const char *raw;
    size_t raw_len;
    bool raw_borrowed; /* raw points into the delivery: copied by mm_msg_ref() */
    mmi_buf_t own;
    size_t wire_size;
    bool redelivered;
    bool budgeted; /* counted in its route's byte budget until settled */

    /* the delivery, for a dead-letter (lib/deadletter.c): `wire` only during the
     * dispatch, `kept` a copy made by mm_msg_ref of a request or task */
    const mmi_content_t *wire;
    struct mmi_wire_kept *kept;
};

mm_msg_t *mmi_msg_new(mm_t *mm, mm_msg_kind kind);
const char *mmi_msg_str(mm_msg_t *msg, const void *p, size_t n); /* zone copy, NUL-ended */
/* Take the body: msgpack bytes (borrowed from the delivery, or owned in `own`, which is moved). */
int mmi_msg_set_body(mm_msg_t *msg, const char *data, size_t len, bool borrowed, mmi_buf_t *own);
void mmi_msg_live_add(mm_t *mm, mm_msg_t *msg);
void mmi_msg_arm_expiry(mm_msg_t *msg);
int mmi_msg_ack(mm_msg_t *msg);
int mmi_msg_nack(mm_msg_t *msg, bool requeue);
int mmi_msg_settleable(mm_msg_t *msg); /* MM_OK, MM_ESTATE, MM_ECHANNEL, MM_ECLOSED */

/* lib/meta.c: metadata. Read the properties and metadata headers of a
 * delivery into msg (strings copied; `iat_ms` 0 when the protocol gave none).
 * MM_OK or MM_ENOMEM. */
int mmi_msg_meta(mm_msg_t *msg, const amqp_basic_properties_t *p, int64_t iat_ms);
/* The causation id and traceparent of a send: the options' when given, else
 * those of `cause` (the message being handled or answered; may be NULL).
 * MM_EINVAL (recorded on mm) for a malformed traceparent. */
int mmi_meta_headers(mm_t *mm, mmi_hdrs_t *h, const mm_msg_t *cause, const char *causation_id,
                     const char *traceparent);
/* A message id given by the sender: NULL (a fresh one) or 1 to 255 bytes. */
int mmi_meta_check_id(mm_t *mm, const char *id);
/* Run a handler with msg as the message being handled (mm->handling). */
void mmi_msg_handle(mm_t *mm, mm_msg_t *msg, mm_msg_fn fn, void *ud);

/* lib/answer.c: send an answer to a request (reply, part, end, error). */
#define MMI_ANS_ERROR 1u
#define MMI_ANS_END 2u
#define MMI_ANS_STREAM 4u
int mmi_answer_send(mm_msg_t *msg, unsigned flags, const void *body, size_t len);
/* The protocol's error object, as msgpack bytes appended to `out`. */
int mmi_error_body(mmi_buf_t *out, const char *code, const char *text);

#endif
