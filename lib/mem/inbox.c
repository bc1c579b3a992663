/*
 * memory:// upcalls: the inbox of one connection handed to its channels'
 * owners (lib/chan.c) from an event on the instance's loop, in order, so
 * that nothing reaches a callback inside the call that caused it. Each
 * message's properties are decoded for its delivery into a pool that lives
 * for the callback, as rabbitmq-c's frames do; a stream record gets its
 * x-stream-offset header there. At most BUDGET items per run, then the
 * event goes again, so that timers and other instances get their turn.
 */
#include <event2/event.h>
#include <string.h>

#include "mem.h"

#define BUDGET 256

static amqp_bytes_t
text_of(const mem_in_t *in)
{
    return (amqp_bytes_t){strlen(in->text), (void *) in->text};
}

/* The record's offset in its stream, as RabbitMQ puts it on every delivery. */
static int
offset_header(amqp_basic_properties_t *p, amqp_pool_t *pool, int64_t offset)
{
    int n = (p->_flags & AMQP_BASIC_HEADERS_FLAG) ? p->headers.num_entries : 0;
    amqp_table_entry_t *e = amqp_pool_alloc(pool, (size_t) (n + 1) * sizeof *e);
    if (e == NULL)
        return MM_ENOMEM;
    if (n > 0)
        memcpy(e, p->headers.entries, (size_t) n * sizeof *e);
    e[n] = (amqp_table_entry_t){.key = amqp_cstring_bytes("x-stream-offset"),
                                .value = {.kind = AMQP_FIELD_KIND_I64, .value.i64 = offset}};
    p->headers = (amqp_table_t){.num_entries = n + 1, .entries = e};
    p->_flags |= AMQP_BASIC_HEADERS_FLAG;
    return MM_OK;
}

static void
content(mm_t *mm, const mem_in_t *in, amqp_pool_t *pool)
{
    const mem_msg_t *m = in->msg;
    void *props = NULL;
    if (amqp_decode_properties(AMQP_BASIC_CLASS, pool, m->props, &props) != AMQP_STATUS_OK ||
        (in->offset >= 0 && offset_header(props, pool, in->offset) != MM_OK)) {
        mmi_log(mm, MM_LOG_ERR, "memory://: no memory to deliver a message on channel %u", in->ch);
        return;
    }
    mmi_content_t ct = {
        .channel = in->ch,
        .method = in->method,
        .delivery_tag = in->tag,
        .redelivered = in->redelivered,
        .exchange = m->exchange,
        .routing_key = m->routing_key,
        .props = props,
        .body = m->body,
    };
    if (in->method == AMQP_BASIC_DELIVER_METHOD)
        ct.consumer_tag = text_of(in);
    if (in->method == AMQP_BASIC_RETURN_METHOD) {
        ct.reply_code = in->code;
        ct.reply_text = text_of(in);
    }
    mmi_chan_content(mm, &ct);
}

static void
method(mm_t *mm, const mem_in_t *in)
{
    union {
        amqp_basic_ack_t ack;
        amqp_basic_nack_t nack;
        amqp_basic_cancel_t cancel;
        amqp_basic_get_empty_t empty;
    } d;
    memset(&d, 0, sizeof d);
    if (in->method == AMQP_BASIC_ACK_METHOD)
        d.ack = (amqp_basic_ack_t){.delivery_tag = in->tag, .multiple = in->multiple};
    else if (in->method == AMQP_BASIC_NACK_METHOD)
        d.nack = (amqp_basic_nack_t){.delivery_tag = in->tag, .multiple = in->multiple};
    else if (in->method == AMQP_BASIC_CANCEL_METHOD)
        d.cancel = (amqp_basic_cancel_t){.consumer_tag = text_of(in)};
    amqp_method_t m = {.id = in->method, .decoded = &d};
    mmi_chan_method(mm, in->ch, &m);
}

static void
upcall(mm_t *mm, const mem_in_t *in, amqp_pool_t *pool)
{
    if (in->msg != NULL) {
        content(mm, in, pool);
    } else if (in->method == AMQP_CHANNEL_CLOSE_METHOD) {
        amqp_channel_close_t close = {.reply_code = in->code, .reply_text = text_of(in)};
        mmi_chan_closed_by_broker(mm, in->ch, &close);
    } else {
        method(mm, in);
    }
}

static bool
still_ours(const mm_t *mm, const mem_conn_t *c)
{
    return mm->mem == c && mmi_alive(mm);
}

static void
on_inbox(evutil_socket_t fd, short what, void *arg)
{
    mem_conn_t *c = arg;
    mm_t *mm = c->mm;
    (void) fd;
    (void) what;
    mmi_enter(mm);
    amqp_pool_t pool;
    init_amqp_pool(&pool, 4096);
    for (int i = 0; i < BUDGET && still_ours(mm, c) && c->in_head != NULL; i++) {
        mem_in_t *in = c->in_head;
        if ((c->in_head = in->next) == NULL)
            c->in_tail = NULL;
        upcall(mm, in, &pool); /* may close the connection: c is then retired */
        mem_in_free(in);
        recycle_amqp_pool(&pool);
    }
    if (still_ours(mm, c) && c->in_head != NULL) /* budget spent: let other events run */
        event_active(c->ev, EV_TIMEOUT, 0);
    empty_amqp_pool(&pool);
    mmi_leave(mm);
}

int
mem_inbox_start(mem_conn_t *c)
{
    c->ev = event_new(c->mm->base, -1, 0, on_inbox, c);
    return c->ev != NULL ? MM_OK : MM_ENOMEM;
}

void
mem_inbox_stop(mem_conn_t *c)
{
    if (c->ev != NULL)
        event_free(c->ev);
    c->ev = NULL;
    while (c->in_head != NULL) {
        mem_in_t *in = c->in_head;
        c->in_head = in->next;
        mem_in_free(in);
    }
    c->in_tail = NULL;
}

void
mem_inbox_kick(mem_conn_t *c)
{
    if (c->ev != NULL)
        event_active(c->ev, EV_TIMEOUT, 0);
}
