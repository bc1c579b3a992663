/*
 * Settling a received message: the public reply/reject/write/end/ack/nack
 * and the ack bookkeeping under them. The broker's delivery is acked (or
 * nacked) exactly once, on the channel it came from; if that channel is
 * gone, the broker redelivers the message and settling reports it. A task
 * rejected, or a request or task given up (nack without requeue), goes to
 * the dead-letter queue (lib/deadletter.c) and is acked once it is there.
 */
#include "deadletter.h"
#include "msg.h"
#include "route.h"

/* The message can still be acted on: the instance lives and the kind fits. */
static int
check_request(mm_msg_t *msg, const char *what)
{
    mm_t *mm = msg->mm;
    if (mm == NULL)
        return msg->kind == MM_MSG_ANSWER ? MM_ESTATE : MM_ECLOSED;
    if (msg->kind == MM_MSG_EVENT || msg->kind == MM_MSG_ANSWER || msg->kind == MM_MSG_RECORD)
        return mmi_fail(mm, MM_ESTATE, "%s: the message is %s, not a request", what,
                        msg->kind == MM_MSG_EVENT    ? "an event"
                        : msg->kind == MM_MSG_RECORD ? "a topic record"
                                                     : "an answer");
    if (msg->expired)
        return mmi_fail(mm, MM_ETIMEDOUT, "%s: the request on '%s' expired; nothing sent", what,
                        msg->route);
    if (msg->answered)
        return mmi_fail(mm, MM_ESTATE, "%s: the request on '%s' was already answered", what,
                        msg->route);
    return MM_OK;
}

int
mmi_msg_ack(mm_msg_t *msg)
{
    if (msg->acked || msg->no_ack)
        return MM_OK;
    mm_t *mm = msg->mm;
    if (mm == NULL)
        return MM_ECLOSED;
    if (mmi_chan_gen(mm, msg->ch) != msg->gen)
        return mmi_fail(mm, MM_ECHANNEL,
                        "the channel of route '%s' closed: the broker redelivers the message",
                        msg->route);
    int rc = mmi_basic_ack(mm, msg->ch, msg->tag, false);
    if (rc == MM_OK) {
        msg->acked = true;
        mmi_route_bytes_release(mm, msg);
    }
    return rc;
}

/* Not settled yet, and its channel still the one it came on. */
int
mmi_msg_settleable(mm_msg_t *msg)
{
    mm_t *mm = msg->mm;
    if (mm == NULL)
        return MM_ECLOSED;
    if (msg->acked || msg->no_ack)
        return mmi_fail(mm, MM_ESTATE, "the message on '%s' was already settled", msg->route);
    if (mmi_chan_gen(mm, msg->ch) != msg->gen)
        return mmi_fail(mm, MM_ECHANNEL,
                        "the channel of route '%s' closed: the broker redelivers the message",
                        msg->route);
    return MM_OK;
}

int
mmi_msg_nack(mm_msg_t *msg, bool requeue)
{
    int rc = mmi_msg_settleable(msg);
    if (rc != MM_OK)
        return rc;
    mm_t *mm = msg->mm;
    rc = mmi_basic_nack(mm, msg->ch, msg->tag, false, requeue);
    if (rc == MM_OK) {
        msg->acked = msg->nacked = true;
        mmi_route_bytes_release(mm, msg);
    }
    return rc;
}

int
mm_msg_reply(mm_msg_t *msg, const void *body, size_t len)
{
    if (msg == NULL)
        return MM_EINVAL;
    int rc = check_request(msg, "mm_msg_reply");
    if (rc != MM_OK)
        return rc;
    if (msg->kind == MM_MSG_TASK) { /* a task's reply only acks it (PROTOCOL.md 5) */
        msg->answered = true;
        return mmi_msg_ack(msg);
    }
    if (msg->streaming)
        return mmi_fail(msg->mm, MM_ESTATE,
                        "mm_msg_reply: the answer is a stream, end it with mm_msg_end");
    return mmi_answer_send(msg, MMI_ANS_END, body, len);
}

int
mm_msg_reject(mm_msg_t *msg, const char *code, const char *text)
{
    if (msg == NULL)
        return MM_EINVAL;
    int rc = check_request(msg, "mm_msg_reject");
    if (rc != MM_OK)
        return rc;
    if (msg->kind == MM_MSG_TASK) { /* dead-lettered with the handler's code and text */
        rc = mmi_dl_settle(msg, code ? code : "rejected", MM_EREMOTE,
                           text ? text : "rejected by its handler");
        if (rc == MM_OK)
            msg->answered = true;
        return rc;
    }
    mmi_buf_t b = {0};
    rc = mmi_error_body(&b, code ? code : "error", text ? text : "");
    if (rc == MM_OK)
        rc = mmi_answer_send(msg,
                             MMI_ANS_ERROR | MMI_ANS_END | (msg->streaming ? MMI_ANS_STREAM : 0),
                             b.data, b.len);
    else
        rc = mmi_fail(msg->mm, rc, "out of memory");
    mmi_buf_free(&b);
    return rc;
}

/* One part or the end of a streamed answer. */
static int
stream_send(mm_msg_t *msg, const char *what, unsigned flags, const void *body, size_t len)
{
    if (msg == NULL)
        return MM_EINVAL;
    int rc = check_request(msg, what);
    if (rc != MM_OK)
        return rc;
    if (msg->kind == MM_MSG_TASK)
        return mmi_fail(msg->mm, MM_ESTATE, "%s: a task takes no streamed answer", what);
    rc = mmi_answer_send(msg, MMI_ANS_STREAM | flags, body, len);
    if (rc == MM_OK)
        msg->streaming = true;
    return rc;
}

int
mm_msg_write(mm_msg_t *msg, const void *body, size_t len)
{
    return stream_send(msg, "mm_msg_write", 0, body, len);
}

int
mm_msg_end(mm_msg_t *msg, const void *body, size_t len)
{
    return stream_send(msg, "mm_msg_end", MMI_ANS_END, body, len);
}

/* Acking or nacking needs a received message of a live instance. */
static int
check_delivery(const mm_msg_t *msg)
{
    if (msg == NULL)
        return MM_EINVAL;
    if (msg->kind == MM_MSG_ANSWER)
        return MM_ESTATE;
    return msg->mm == NULL ? MM_ECLOSED : MM_OK;
}

int
mm_msg_ack(mm_msg_t *msg)
{
    int rc = check_delivery(msg);
    if (rc != MM_OK)
        return rc;
    if (msg->nacked)
        return mmi_fail(msg->mm, MM_ESTATE, "mm_msg_ack: the message on '%s' was rejected",
                        msg->route);
    rc = mmi_msg_ack(msg);
    if (rc == MM_OK && msg->kind == MM_MSG_TASK)
        msg->answered = true;
    return rc;
}

int
mm_msg_nack(mm_msg_t *msg, int requeue)
{
    int rc = check_delivery(msg);
    if (rc != MM_OK)
        return rc;
    /* A stream keeps its records: there is nothing to give back (lib/reader_record.c). */
    if (msg->kind == MM_MSG_RECORD)
        return mmi_fail(msg->mm, MM_ESTATE,
                        "mm_msg_nack: a topic record is settled when its handler returns");
    /* Given up (no requeue), a request or task is dead-lettered, never dropped;
     * given back, it is counted when the broker delivers it again. */
    static const char given_up[] = "given up by its handler (mm_msg_nack without requeue)";
    if (!requeue && (msg->kind != MM_MSG_EVENT || msg->grouped) && !msg->no_ack) {
        rc = mmi_dl_settle(msg, "rejected", MM_EREMOTE, given_up);
        if (rc == MM_OK && msg->kind == MM_MSG_REQUEST && msg->reply_to[0] != '\0' &&
            !msg->answered && !msg->expired)
            mm_msg_reject(msg, "rejected", given_up); /* its requester would wait in vain */
    } else {
        rc = mmi_msg_nack(msg, requeue != 0);
    }
    if (rc == MM_OK && msg->kind != MM_MSG_EVENT)
        msg->answered = true;
    return rc;
}
