/*
 * Answers to requests: a reply, a stream part, a stream end or an error,
 * published to the requester's reply queue with the request's correlation
 * id, the __mms fields (isError, isEnd, isStream, sequence) and the request
 * id, in the requester's encoding (PROTOCOL.md sections 2 and 4). The
 * request is acked after the first answer goes out (acking is idempotent).
 */
#include <string.h>

#include "msg.h"
#include "publish.h"

static int
pack_str(msgpack_packer *pk, const char *s)
{
    size_t n = strlen(s);
    return msgpack_pack_str(pk, n) || msgpack_pack_str_body(pk, s, n);
}

int
mmi_error_body(mmi_buf_t *out, const char *code, const char *text)
{
    msgpack_packer pk;
    msgpack_packer_init(&pk, out, mmi_buf_write);
    /* {"error": {"codeString", "message", "code": 500, "isCustomError": true}};
     * no "stack": it would leak internals (PROTOCOL.md section 3). */
    int bad = msgpack_pack_map(&pk, 1) || pack_str(&pk, "error") || msgpack_pack_map(&pk, 4) ||
              pack_str(&pk, "codeString") || pack_str(&pk, code) || pack_str(&pk, "message") ||
              pack_str(&pk, text) || pack_str(&pk, "code") || msgpack_pack_int(&pk, 500) ||
              pack_str(&pk, "isCustomError") || msgpack_pack_true(&pk);
    return bad ? MM_ENOMEM : MM_OK;
}

static void
answer_headers(mmi_hdrs_t *h, const mm_msg_t *msg, unsigned flags)
{
    mmi_hdrs_init(h);
    mmi_hdrs_mms_bool(h, "isError", (flags & MMI_ANS_ERROR) != 0);
    mmi_hdrs_mms_bool(h, "isEnd", (flags & MMI_ANS_END) != 0);
    if (flags & MMI_ANS_STREAM)
        mmi_hdrs_mms_bool(h, "isStream", true);
    mmi_hdrs_mms_int(h, "sequence", msg->seq);
}

int
mmi_answer_send(mm_msg_t *msg, unsigned flags, const void *body, size_t len)
{
    mm_t *mm = msg->mm;
    /* Unacked on a channel that died: the broker redelivers the request, so an
     * answer now would be answered twice. Once acked (a stream's later parts),
     * the channel no longer matters. */
    if (!msg->acked && !msg->no_ack && mmi_chan_gen(mm, msg->ch) != msg->gen)
        return mmi_fail(mm, MM_ECHANNEL,
                        "the channel of route '%s' closed: the broker redelivers the request; "
                        "nothing sent",
                        msg->route);
    mmi_wire_out_t w;
    int rc = mmi_wire_encode(mm, msg->reply_codec, body, len, &w);
    mmi_hdrs_t h;
    answer_headers(&h, msg, flags);
    char err[160] = "";
    if (rc == MM_OK) /* an answer is caused by its request, whenever it is sent */
        rc = mmi_meta_headers(mm, &h, msg, NULL, NULL);
    if (rc == MM_OK) {
        rc = mmi_hdrs_finish(&h, msg->request_id[0] ? msg->request_id : NULL, NULL, 0, err,
                             sizeof err);
        if (rc != MM_OK)
            rc = mmi_fail(mm, rc, "answer headers: %s", err);
    }
    if (rc == MM_OK) {
        mmi_pub_t p = {.exchange = "",
                       .routing_key = msg->reply_to,
                       .correlation_id = msg->correlation_id,
                       .hdrs = &h,
                       .body = &w};
        rc = mmi_pub_send(mm, &p);
    }
    mmi_hdrs_fini(&h);
    mmi_wire_out_free(&w);
    if (rc != MM_OK)
        return rc;
    msg->seq++;
    if (flags & MMI_ANS_END)
        msg->answered = true;
    if (mmi_msg_ack(msg) != MM_OK) /* sent; the requester has its answer anyway */
        mmi_log(mm, MM_LOG_DEBUG, "ack after answering on '%s' failed: %s", msg->route,
                mm->last_error);
    return MM_OK;
}
