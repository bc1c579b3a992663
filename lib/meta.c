/*
 * Message metadata: the message id, timestamp, sender, causation id and
 * W3C traceparent of every message (docs/DESIGN.md, "Durable events").
 * The first three are AMQP properties a protocol-only peer ignores
 * (PROTOCOL.md 9) and cost the broker nothing to route; the last two are
 * headers, present only when there is something to carry: a send made
 * while a handler runs (mm->handling) is caused by the message handled, and
 * inherits its trace context.
 */
#include <string.h>

#include "msg.h"

static bool
has(const amqp_basic_properties_t *p, amqp_flags_t flag)
{
    return p != NULL && (p->_flags & flag) != 0;
}

static const char *
prop_str(mm_msg_t *msg, const amqp_basic_properties_t *p, amqp_flags_t flag, amqp_bytes_t b)
{
    return has(p, flag) ? mmi_msg_str(msg, b.bytes, b.len) : "";
}

/* W3C trace context, version 00: "00-" 32 hex "-" 16 hex "-" 2 hex, lower
 * case, ids not all zero. Anything else is dropped, as the spec says. */
static bool
hex_run(const char *s, size_t n, bool *nonzero)
{
    for (size_t i = 0; i < n; i++) {
        if (!((s[i] >= '0' && s[i] <= '9') || (s[i] >= 'a' && s[i] <= 'f')))
            return false;
        if (s[i] != '0')
            *nonzero = true;
    }
    return true;
}

static bool
traceparent_ok(const char *s, size_t n)
{
    bool tid = false, sid = false, flags = false;
    return n == 55 && memcmp(s, "00-", 3) == 0 && s[35] == '-' && s[52] == '-' &&
           hex_run(s + 3, 32, &tid) && hex_run(s + 36, 16, &sid) && hex_run(s + 53, 2, &flags) &&
           tid && sid;
}

static const char *
header_meta(mm_msg_t *msg, const amqp_basic_properties_t *p, const char *key)
{
    if (!has(p, AMQP_BASIC_HEADERS_FLAG))
        return "";
    amqp_bytes_t b = mmi_header_str(&p->headers, key);
    if (b.len == 0 || b.len > 255)
        return "";
    if (strcmp(key, MMI_H_TRACEPARENT) == 0 && !traceparent_ok(b.bytes, b.len))
        return "";
    return mmi_msg_str(msg, b.bytes, b.len);
}

int
mmi_msg_meta(mm_msg_t *msg, const amqp_basic_properties_t *p, int64_t iat_ms)
{
    msg->msg_id =
        prop_str(msg, p, AMQP_BASIC_MESSAGE_ID_FLAG, p ? p->message_id : (amqp_bytes_t){0});
    msg->sender = prop_str(msg, p, AMQP_BASIC_APP_ID_FLAG, p ? p->app_id : (amqp_bytes_t){0});
    msg->type = prop_str(msg, p, AMQP_BASIC_TYPE_FLAG, p ? p->type : (amqp_bytes_t){0});
    msg->causation_id = header_meta(msg, p, MMI_H_CAUSATION);
    msg->traceparent = header_meta(msg, p, MMI_H_TRACEPARENT);
    if (iat_ms > 0)
        msg->timestamp_ms = iat_ms;
    else if (has(p, AMQP_BASIC_TIMESTAMP_FLAG) && p->timestamp < (uint64_t) INT64_MAX / 1000)
        msg->timestamp_ms = (int64_t) p->timestamp * 1000;
    bool ok = msg->msg_id && msg->sender && msg->type && msg->causation_id && msg->traceparent;
    return ok ? MM_OK : MM_ENOMEM;
}

int
mmi_meta_headers(mm_t *mm, mmi_hdrs_t *h, const mm_msg_t *cause, const char *causation_id,
                 const char *traceparent)
{
    if (causation_id == NULL && cause != NULL)
        causation_id = cause->msg_id;
    if (traceparent == NULL && cause != NULL)
        traceparent = cause->traceparent;
    if (causation_id != NULL && strlen(causation_id) > 255)
        return mmi_fail(mm, MM_EINVAL, "causation id over 255 bytes");
    if (traceparent != NULL && traceparent[0] != '\0' &&
        !traceparent_ok(traceparent, strlen(traceparent)))
        return mmi_fail(mm, MM_EINVAL,
                        "traceparent '%.64s' is not W3C trace context version 00 "
                        "(00-<32 hex>-<16 hex>-<2 hex>, lower case, ids not zero)",
                        traceparent);
    if (causation_id != NULL && causation_id[0] != '\0')
        mmi_hdrs_meta(h, MMI_H_CAUSATION, causation_id);
    if (traceparent != NULL && traceparent[0] != '\0')
        mmi_hdrs_meta(h, MMI_H_TRACEPARENT, traceparent);
    return MM_OK;
}

int
mmi_meta_check_id(mm_t *mm, const char *id)
{
    if (id != NULL && (id[0] == '\0' || strlen(id) > 255))
        return mmi_fail(mm, MM_EINVAL, "a message id is 1 to 255 bytes");
    return MM_OK;
}

void
mmi_msg_handle(mm_t *mm, mm_msg_t *msg, mm_msg_fn fn, void *ud)
{
    mm_msg_t *outer = mm->handling;
    mm->handling = msg;
    fn(msg, ud);
    if (mmi_alive(mm))
        mm->handling = outer;
}

const char *
mm_msg_id(const mm_msg_t *msg)
{
    return msg ? msg->msg_id : "";
}

int64_t
mm_msg_timestamp(const mm_msg_t *msg)
{
    return msg ? msg->timestamp_ms : 0;
}

const char *
mm_msg_sender(const mm_msg_t *msg)
{
    return msg ? msg->sender : "";
}

const char *
mm_msg_causation_id(const mm_msg_t *msg)
{
    return msg ? msg->causation_id : "";
}

const char *
mm_msg_traceparent(const mm_msg_t *msg)
{
    return msg ? msg->traceparent : "";
}

const char *
mm_msg_type(const mm_msg_t *msg)
{
    return msg ? msg->type : "";
}

int64_t
mm_msg_offset(const mm_msg_t *msg)
{
    return msg ? msg->offset : -1;
}
