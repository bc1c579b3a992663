/*
 * The publishing channels, plain and in confirm mode (lib/outbox.c decides
 * which), and what comes back on them: basic.return of a mandatory request
 * (the request fails at once with MM_ENOROUTE) or task (an MM_EV_UNROUTABLE
 * event, and the outbox's verdict MM_ENOROUTE), confirms. If the broker
 * closes a channel, the next publish opens a new one.
 */
#include <event2/event.h>
#include <stdio.h>
#include <string.h>

#include "headers.h"
#include "outbox.h"
#include "publish.h"
#include "request.h"

static void
unroutable_event(mm_t *mm, const mmi_content_t *c)
{
    const amqp_basic_properties_t *p = c->props;
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
on_return(mm_t *mm, const mmi_content_t *c)
{
    const amqp_basic_properties_t *p = c->props;
    if (p != NULL && (p->_flags & AMQP_BASIC_CORRELATION_ID_FLAG) &&
        mmi_request_returned(mm, p->correlation_id, c->routing_key))
        return;
    if (p != NULL && (p->_flags & AMQP_BASIC_MESSAGE_ID_FLAG))
        mmi_outbox_returned(mm, p->message_id);
    unroutable_event(mm, c);
}

static void
on_content(mm_t *mm, const mmi_content_t *c, void *ud)
{
    (void) ud;
    if (c->method == AMQP_BASIC_RETURN_METHOD)
        on_return(mm, c);
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

static void
on_conf_method(mm_t *mm, uint16_t ch, const amqp_method_t *m, void *ud)
{
    (void) ch;
    (void) ud;
    mmi_outbox_confirm(mm, m);
}

static void
on_conf_closed(mm_t *mm, uint16_t ch, int code, const char *text, void *ud)
{
    (void) ch;
    (void) text;
    (void) ud;
    mm->conf_ch = 0;
    mm->conf_exchange_ok = false;
    mmi_outbox_chan_closed(mm, code);
}

static const mmi_chan_ops_t PUB_OPS = {.on_content = on_content, .on_closed = on_closed};
static const mmi_chan_ops_t CONF_OPS = {
    .on_content = on_content, .on_method = on_conf_method, .on_closed = on_conf_closed};

static int
open_channel(mm_t *mm, bool confirm, uint16_t *ret)
{
    uint16_t ch = 0;
    int rc = mmi_chan_open(mm, confirm ? &CONF_OPS : &PUB_OPS, NULL, &ch);
    if (rc == MM_OK && confirm) {
        amqp_confirm_select_t req = {0};
        rc = mmi_rpc(mm, ch, AMQP_CONFIRM_SELECT_METHOD, &req, AMQP_CONFIRM_SELECT_OK_METHOD, NULL);
        if (rc != MM_OK && mmi_chan_is_open(mm, ch))
            mmi_chan_close(mm, ch);
    }
    if (rc == MM_OK)
        *ret = ch;
    return rc;
}

int
mmi_pub_channel(mm_t *mm, bool confirm, bool need_exchange, uint16_t *ret_ch)
{
    if (mm->state != MMI_CONNECTED)
        return mmi_fail(mm, MM_ENOTCONN, "not connected");
    uint16_t *ch = confirm ? &mm->conf_ch : &mm->pub_ch;
    bool *exchange_ok = confirm ? &mm->conf_exchange_ok : &mm->pub_exchange_ok;
    if (*ch == 0) {
        int rc = open_channel(mm, confirm, ch);
        if (rc != MM_OK)
            return rc;
    }
    if (need_exchange && !*exchange_ok) {
        int rc = mmi_exchange_declare(mm, *ch, MMI_PUBSUB, "topic", true);
        if (rc != MM_OK)
            return rc;
        *exchange_ok = true;
    }
    *ret_ch = *ch;
    return MM_OK;
}

/* Both publishing channels, with x.pubSub, right after connecting: a publish
 * then never needs a synchronous method, which matters when the broker blocks
 * the connection (it stops reading us at our next publish, before we may have
 * read its connection.blocked: a method sent then would wait for nothing). */
int
mmi_pub_prepare(mm_t *mm)
{
    uint16_t ch = 0;
    int rc = mmi_pub_channel(mm, false, true, &ch);
    if (rc == MM_OK)
        rc = mmi_pub_channel(mm, true, true, &ch);
    return rc;
}

static amqp_bytes_t
str_bytes(const char *s)
{
    return amqp_cstring_bytes(s);
}

/* Whole seconds since the epoch, from the loop's cached time when a loop
 * runs: a clock read per publish showed at 4 % of a client's CPU on this VM. */
static uint64_t
wall_seconds(mm_t *mm)
{
    struct timeval tv;
    if (event_base_gettimeofday_cached(mm->base, &tv) != 0)
        return (uint64_t) (mmi_wall_ms() / 1000);
    return (uint64_t) tv.tv_sec;
}

/* Every message says what it is (message id), when and who sent it: fixed
 * properties, which the broker does not parse (docs/DESIGN.md). */
static void
pub_props(mm_t *mm, const mmi_pub_t *p, amqp_basic_properties_t *props, char id[37])
{
    if (p->message_id == NULL)
        mmi_make_id(mm, id);
    *props = (amqp_basic_properties_t){
        ._flags = AMQP_BASIC_CONTENT_TYPE_FLAG | AMQP_BASIC_HEADERS_FLAG |
                  AMQP_BASIC_MESSAGE_ID_FLAG | AMQP_BASIC_TIMESTAMP_FLAG | AMQP_BASIC_APP_ID_FLAG,
        .content_type = str_bytes(p->body->content_type),
        .headers = p->hdrs->table,
        .message_id = str_bytes(p->message_id ? p->message_id : id),
        .timestamp = wall_seconds(mm),
        .app_id = str_bytes(mm->app_id),
    };
    if (p->type != NULL) {
        props->_flags |= AMQP_BASIC_TYPE_FLAG;
        props->type = str_bytes(p->type);
    }
    if (p->body->content_encoding != NULL) {
        props->_flags |= AMQP_BASIC_CONTENT_ENCODING_FLAG;
        props->content_encoding = str_bytes(p->body->content_encoding);
    }
    if (p->correlation_id != NULL) {
        props->_flags |= AMQP_BASIC_CORRELATION_ID_FLAG;
        props->correlation_id = str_bytes(p->correlation_id);
    }
    if (p->reply_to != NULL) {
        props->_flags |= AMQP_BASIC_REPLY_TO_FLAG;
        props->reply_to = str_bytes(p->reply_to);
    }
    if (p->expiration != NULL) {
        props->_flags |= AMQP_BASIC_EXPIRATION_FLAG;
        props->expiration = str_bytes(p->expiration);
    }
    if (p->persistent) {
        props->_flags |= AMQP_BASIC_DELIVERY_MODE_FLAG;
        props->delivery_mode = AMQP_DELIVERY_PERSISTENT;
    }
}

int
mmi_pub_send(mm_t *mm, const mmi_pub_t *p)
{
    amqp_basic_properties_t props;
    char id[37];
    pub_props(mm, p, &props, id);
    mmi_out_msg_t m = {.exchange = p->exchange,
                       .routing_key = p->routing_key,
                       .mandatory = p->mandatory,
                       .props = &props,
                       .body = p->body->body};
    mmi_sent_fn done = p->done;
    if (p->ret_buffered != NULL) {
        *p->ret_buffered = mmi_outbox_would_wait(mm, p->out_flags);
        if (!*p->ret_buffered)
            done = NULL;
    }
    return mmi_outbox_send(mm, &m, p->out_flags, done, p->done_ud);
}

void
mmi_publish_forget(mm_t *mm)
{
    mm->pub_ch = 0;
    mm->pub_exchange_ok = false;
    mm->conf_ch = 0;
    mm->conf_exchange_ok = false;
}
