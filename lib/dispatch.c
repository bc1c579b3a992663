/*
 * Deliveries on a route's channel -> messages -> the route's handler. The
 * delivery is classified as the protocol says (PROTOCOL.md section 2), its
 * __mms and body decoded. What can never succeed (bad input, a route nobody
 * handles, a request or task its handler neither settled nor kept) goes to
 * the service's dead-letter queue, is reported by an event, and a requester
 * is told with an error answer, so nothing is lost silently. A request or
 * task redelivered by the broker is counted first, before its body is
 * decoded (lib/deadletter.c): past max_redeliveries it is dead-lettered,
 * below it goes back to its queue with the count, and its handler does not
 * see that delivery. After the handler: an event is acked.
 */
#include <stdio.h>
#include <string.h>

#include "deadletter.h"
#include "headers.h"
#include "msg.h"
#include "route.h"
#include "wire.h"

static bool
has(const amqp_basic_properties_t *p, amqp_flags_t flag)
{
    return p != NULL && (p->_flags & flag) != 0;
}

static mm_msg_kind
classify(const struct mm_route *r, const mmi_content_t *c, const mmi_mms_t *mms)
{
    if (c->exchange.len > 0 || r->group != NULL) /* a group queue holds events (and copies) */
        return MM_MSG_EVENT;
    if (mms->is_task)
        return MM_MSG_TASK;
    if (has(c->props, AMQP_BASIC_CORRELATION_ID_FLAG) && has(c->props, AMQP_BASIC_REPLY_TO_FLAG))
        return MM_MSG_REQUEST;
    return 0;
}

/* The properties a reply needs, copied first so that even bad input can be answered. */
static int
msg_ids(mm_msg_t *msg, const struct mm_route *r, const mmi_content_t *c)
{
    const amqp_basic_properties_t *p = c->props;
    if (has(p, AMQP_BASIC_REPLY_TO_FLAG))
        msg->reply_to = mmi_msg_str(msg, p->reply_to.bytes, p->reply_to.len);
    if (has(p, AMQP_BASIC_CORRELATION_ID_FLAG))
        msg->correlation_id = mmi_msg_str(msg, p->correlation_id.bytes, p->correlation_id.len);
    amqp_bytes_t rid = has(p, AMQP_BASIC_HEADERS_FLAG) ? mmi_header_str(&p->headers, "idRequest")
                                                       : (amqp_bytes_t){0, NULL};
    msg->request_id = mmi_msg_str(msg, rid.bytes, rid.len);
    amqp_bytes_t key = r->group ? mmi_group_routing_key(c) : c->routing_key;
    msg->route = mmi_msg_str(msg, key.bytes, key.len);
    bool ok = msg->reply_to && msg->correlation_id && msg->request_id && msg->route;
    return ok ? MM_OK : MM_ENOMEM;
}

/* Deadline on our monotonic clock: the absolute eat, or eat - iat from now when
 * the clocks disagree so that it would be longer (PROTOCOL.md 4.6). */
static void
msg_deadline(mm_msg_t *msg, const mmi_mms_t *mms)
{
    if (msg->kind != MM_MSG_REQUEST || !mms->has_iat || !mms->has_eat || mms->eat <= mms->iat)
        return;
    int64_t left = mms->eat - mmi_wall_ms();
    if (mms->eat - mms->iat < left)
        left = mms->eat - mms->iat;
    msg->deadline_ms = (int64_t) mmi_now_ms() + (left > 0 ? left : 0);
    if (left <= 0)
        msg->expired = true;
}

static int
msg_content(mm_t *mm, mm_msg_t *msg, const mmi_content_t *c, const mmi_mms_t *mms, char *err,
            size_t errlen)
{
    const amqp_table_t *t = has(c->props, AMQP_BASIC_HEADERS_FLAG) ? &c->props->headers : NULL;
    if (mmi_headers_to_msgpack(t, &msg->zone, &msg->headers) != MM_OK)
        return MM_ENOMEM;
    mmi_wire_in_t in;
    int rc = mmi_wire_decode(mm, c, &in, err, errlen);
    msg->reply_codec = mmi_wire_reply_codec(mm, in.ctype);
    if (rc == MM_OK) {
        rc = mmi_msg_set_body(msg, in.data, in.len, in.borrowed, &in.buf);
        if (rc == MM_EDECODE)
            snprintf(err, errlen, "body is not valid msgpack");
    }
    mmi_wire_in_free(&in);
    msg_deadline(msg, mms);
    return rc;
}

/* Before the body is decoded (a redelivery is counted first), answer in JSON
 * to what came as JSON. */
static int
head_codec(const mm_t *mm, const amqp_basic_properties_t *p)
{
    static const char json[] = "application/json";
    if (has(p, AMQP_BASIC_CONTENT_TYPE_FLAG) && p->content_type.len >= sizeof json - 1 &&
        memcmp(p->content_type.bytes, json, sizeof json - 1) == 0)
        return MM_CODEC_JSON;
    return mm->opts.codec;
}

/* The message without its body: kind, ids, route, where it came from. */
static int
build_head(mm_t *mm, struct mm_route *r, const mmi_content_t *c, mmi_mms_t *mms, mm_msg_t **ret,
           char *err, size_t errlen)
{
    const amqp_table_t *t = has(c->props, AMQP_BASIC_HEADERS_FLAG) ? &c->props->headers : NULL;
    int mms_rc = mmi_mms_parse(t, mms, err, errlen);
    mm_msg_kind kind = classify(r, c, mms);
    mm_msg_t *msg = mmi_msg_new(mm, kind ? kind : MM_MSG_TASK);
    if (msg == NULL)
        return MM_ENOMEM;
    *ret = msg;
    mmi_msg_live_add(mm, msg);
    msg->wire = c;
    msg->ch = c->channel;
    msg->gen = mmi_chan_gen(mm, c->channel);
    msg->tag = c->delivery_tag;
    msg->no_ack = r->no_ack;
    msg->grouped = r->group != NULL;
    msg->redelivered = c->redelivered;
    msg->wire_size = (size_t) c->body_size;
    msg->reply_codec = head_codec(mm, c->props);
    if (msg_ids(msg, r, c) != MM_OK ||
        mmi_msg_meta(msg, c->props, mms_rc == MM_OK && mms->has_iat ? mms->iat : 0) != MM_OK)
        return MM_ENOMEM;
    if (mms_rc != MM_OK)
        return mms_rc;
    if (kind == 0) {
        snprintf(err, errlen,
                 "neither an event, a request (correlation id and reply-to) nor a task");
        return MM_EDECODE;
    }
    if (mms->route.len > 0 && kind != MM_MSG_EVENT &&
        (msg->route = mmi_msg_str(msg, mms->route.bytes, mms->route.len)) == NULL)
        return MM_ENOMEM;
    return MM_OK;
}

/* Dead-letter instead of dropping, and tell a requester (it would otherwise
 * wait for its timeout). Messages consumed without acks are gone already. */
static void
refuse(mm_msg_t *msg, const char *code, int err, const char *text)
{
    if (!msg->no_ack && !msg->acked)
        mmi_dl_settle(msg, code, err, text);
    if (msg->kind == MM_MSG_REQUEST && msg->reply_to[0] != '\0')
        mm_msg_reject(msg, code, text);
}

static void
bad_input(mm_t *mm, struct mm_route *r, const mmi_content_t *c, mm_msg_t *msg, int code,
          const char *err)
{
    const char *why = err[0] ? err : mm_strerror(code);
    if (r->no_ack) { /* internal chatter of peers (PROTOCOL.md 6): foreign or broken ones */
        mmi_log(mm, MM_LOG_DEBUG, "message on internal '%s' ignored: %s", r->name, why);
        return;
    }
    mmi_msg_event(mm, MM_EV_ERROR, code, r->name,
                  msg && msg->request_id[0] ? msg->request_id : NULL,
                  "message on '%s' rejected: %s", r->name, why);
    if (msg != NULL && code != MM_ENOMEM)
        refuse(msg, code == MM_ETOOBIG ? "tooBig" : "badRequest", code, why);
    else if (!r->no_ack) /* no memory: not the message's fault, it comes back (counted) */
        mmi_basic_nack(mm, c->channel, c->delivery_tag, false, true);
}

/* The route whose handler gets msg: r, or in a group the route of this
 * instance whose binding matches (several routes share the group's queue). */
static struct mm_route *
handler_of(mm_t *mm, struct mm_route *r, const mm_msg_t *msg)
{
    if (r->group != NULL)
        return mmi_group_route_for(mm, r, msg->route);
    if (r->type == MMI_ROUTE_LISTEN)
        return msg->kind == MM_MSG_EVENT ? r : NULL;
    return msg->kind != MM_MSG_EVENT && strcmp(msg->route, r->name) == 0 ? r : NULL;
}

static void
unhandled(mm_t *mm, struct mm_route *r, mm_msg_t *msg)
{
    mmi_msg_event(mm, MM_EV_UNHANDLED, MM_ENOENT, msg->route,
                  msg->request_id[0] ? msg->request_id : NULL,
                  "no handler for '%s' (message arrived on queue %s)", msg->route, r->queue);
    refuse(msg, "notHandled", MM_ENOENT, "no handler for this route");
}

/* A request or task the broker delivers again (its handler gave it back, or
 * the process or channel holding it died) is one failed delivery. true: the
 * delivery is taken care of, the handler must not see it. */
static bool
poisoned(mm_t *mm, struct mm_route *r, const mmi_content_t *c, mm_msg_t *msg)
{
    bool counted = r->group != NULL || (r->type == MMI_ROUTE_HANDLE && msg->kind != MM_MSG_EVENT);
    if (!c->redelivered || !counted || r->no_ack)
        return false;
    uint32_t failed = mmi_dl_failed(msg), max = mm->opts.max_redeliveries;
    if (failed < max)
        return mmi_dl_count(msg, failed) == MM_OK; /* not sent: the handler gets it, uncounted */
    char text[128];
    snprintf(text, sizeof text, "delivered %u times without being settled (max_redeliveries %u)",
             failed, max);
    refuse(msg, "redelivered", MM_EREMOTE, text);
    return true;
}

static void
after_handler(mm_t *mm, mm_msg_t *msg)
{
    if (!mmi_alive(mm))
        return; /* mm_free() in the handler: the broker redelivers what was not settled */
    if (msg->kind == MM_MSG_EVENT) {
        mmi_msg_ack(msg);
        return;
    }
    if (msg->answered || msg->acked)
        return;
    if (mmi_chan_gen(mm, msg->ch) != msg->gen)
        return; /* the route stopped or its channel died: the broker redelivers it */
    if (msg->refs > 1) {
        mmi_msg_arm_expiry(msg); /* kept to settle later */
        return;
    }
    mmi_msg_event(mm, MM_EV_ERROR, MM_ESTATE, msg->route,
                  msg->request_id[0] ? msg->request_id : NULL,
                  "the handler of '%s' returned without settling the %s nor keeping it", msg->route,
                  msg->kind == MM_MSG_TASK ? "task" : "request");
    refuse(msg, "notHandled", MM_ESTATE, "the handler returned without answering");
}

/* A message whose head is good: decode the body, then the handler. */
static void
deliver(mm_t *mm, struct mm_route *r, struct mm_route *h, const mmi_content_t *c, mm_msg_t *msg,
        mmi_mms_t *mms)
{
    char err[MMI_ERRBUF] = "";
    int rc = msg_content(mm, msg, c, mms, err, sizeof err);
    if (rc != MM_OK) {
        bad_input(mm, r, c, msg, rc, err);
    } else if (msg->expired) {
        mmi_msg_ack(msg);
        mmi_msg_event(mm, MM_EV_EXPIRED, MM_ETIMEDOUT, msg->route,
                      msg->request_id[0] ? msg->request_id : NULL,
                      "request on '%s' arrived past its deadline: acked, not handled", msg->route);
    } else {
        /* the handler may stop the route: r and h are not touched after */
        mmi_msg_handle(mm, msg, h->fn, h->ud);
        after_handler(mm, msg);
    }
}

void
mmi_dispatch(mm_t *mm, struct mm_route *r, const mmi_content_t *c)
{
    r->delivered++;
    char err[MMI_ERRBUF] = "";
    mm_msg_t *msg = NULL;
    mmi_mms_t mms;
    int rc = build_head(mm, r, c, &mms, &msg, err, sizeof err);
    struct mm_route *h = rc == MM_OK ? handler_of(mm, r, msg) : NULL;
    if (rc != MM_OK)
        bad_input(mm, r, c, msg, rc, err);
    else if (h == NULL)
        unhandled(mm, r, msg);
    else if (!poisoned(mm, r, c, msg) && mmi_route_bytes_take(mm, r, msg))
        deliver(mm, r, h, c, msg, &mms);
    if (msg != NULL)
        msg->wire = NULL; /* the delivery's memory ends here; mm_msg_ref kept a copy */
    mm_msg_unref(msg);
}
