/*
 * The publishing channel and what comes back on it: basic.return of a
 * mandatory request (the request fails at once with MM_ENOROUTE) or task
 * (an MM_EV_UNROUTABLE event). If the broker closes the channel, the next
 * publish opens a new one.
 */
#include <stdio.h>
#include <string.h>

#include "headers.h"
#include "publish.h"
#include "request.h"

static void
on_return(mm_t *mm, const mmi_content_t *c, void *ud)
{
    (void) ud;
    const amqp_basic_properties_t *p = c->props;
    if (p != NULL && (p->_flags & AMQP_BASIC_CORRELATION_ID_FLAG) &&
        mmi_request_returned(mm, p->correlation_id, c->routing_key))
        return;
    const amqp_table_t *t = p && (p->_flags & AMQP_BASIC_HEADERS_FLAG) ? &p->headers : NULL;
    amqp_bytes_t rid = mmi_header_str(t, "idRequest");
    mmi_mms_t mms;
    char why[64], rk[MMI_NAME_MAX * 2 + 32], id[64], route[MMI_NAME_MAX + 1];
    if (mmi_mms_parse(t, &mms, why, sizeof why) != MM_OK)
        mms.route = (amqp_bytes_t){0, NULL};
    snprintf(rk, sizeof rk, "%.*s", (int) c->routing_key.len, (const char *) c->routing_key.bytes);
    snprintf(id, sizeof id, "%.*s", (int) rid.len, (const char *) rid.bytes);
    snprintf(route, sizeof route, "%.*s", (int) mms.route.len, (const char *) mms.route.bytes);
    mmi_msg_event(mm, MM_EV_UNROUTABLE, MM_ENOROUTE, route[0] ? route : NULL, id[0] ? id : NULL,
                  "the broker returned a message for %s: %u %.*s", rk, c->reply_code,
                  (int) c->reply_text.len, (const char *) c->reply_text.bytes);
}

static void
on_content(mm_t *mm, const mmi_content_t *c, void *ud)
{
    if (c->method == AMQP_BASIC_RETURN_METHOD)
        on_return(mm, c, ud);
}

static void
on_closed(mm_t *mm, uint16_t ch, int code, const char *text, void *ud)
{
    (void) ch;
    (void) code;
    (void) text;
    (void) ud;
    mm->pub_ch = 0;
    mm->pub_exchange_ok = false;
}

static const mmi_chan_ops_t PUB_OPS = {.on_content = on_content, .on_closed = on_closed};

static int
pub_channel(mm_t *mm, bool need_exchange)
{
    if (mm->state != MMI_CONNECTED)
        return mmi_fail(mm, MM_ENOTCONN, "not connected");
    if (mm->pub_ch == 0) {
        int rc = mmi_chan_open(mm, &PUB_OPS, NULL, &mm->pub_ch);
        if (rc != MM_OK)
            return rc;
    }
    if (need_exchange && !mm->pub_exchange_ok) {
        int rc = mmi_exchange_declare(mm, mm->pub_ch, MMI_PUBSUB, "topic", true);
        if (rc != MM_OK)
            return rc;
        mm->pub_exchange_ok = true;
    }
    return MM_OK;
}

static amqp_bytes_t
str_bytes(const char *s)
{
    return amqp_cstring_bytes(s);
}

int
mmi_pub_send(mm_t *mm, const mmi_pub_t *p)
{
    int rc = pub_channel(mm, strcmp(p->exchange, MMI_PUBSUB) == 0);
    if (rc != MM_OK)
        return rc;
    amqp_basic_properties_t props = {
        ._flags = AMQP_BASIC_CONTENT_TYPE_FLAG | AMQP_BASIC_HEADERS_FLAG,
        .content_type = str_bytes(p->body->content_type),
        .headers = p->hdrs->table,
    };
    if (p->body->content_encoding != NULL) {
        props._flags |= AMQP_BASIC_CONTENT_ENCODING_FLAG;
        props.content_encoding = str_bytes(p->body->content_encoding);
    }
    if (p->correlation_id != NULL) {
        props._flags |= AMQP_BASIC_CORRELATION_ID_FLAG;
        props.correlation_id = str_bytes(p->correlation_id);
    }
    if (p->reply_to != NULL) {
        props._flags |= AMQP_BASIC_REPLY_TO_FLAG;
        props.reply_to = str_bytes(p->reply_to);
    }
    if (p->expiration != NULL) {
        props._flags |= AMQP_BASIC_EXPIRATION_FLAG;
        props.expiration = str_bytes(p->expiration);
    }
    return mmi_publish(mm, mm->pub_ch, p->exchange, p->routing_key, p->mandatory, &props,
                       p->body->body);
}

void
mmi_publish_forget(mm_t *mm)
{
    mm->pub_ch = 0;
    mm->pub_exchange_ok = false;
}
