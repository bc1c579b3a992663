/*
 * The memory:// transport's entry points (lib/transport.h): connect (the
 * instance's broker of that name, a connection with its inbox), the end of
 * a connection (the broker's work at once: channels torn down, what was out
 * requeued, exclusive queues deleted; the struct itself freed at the reap),
 * asynchronous methods (acks, nacks, rejects, basic.get, close-ok) and
 * publishes: routed at once, copied into every queue it reaches, with
 * basic.return before the confirm as RabbitMQ does, and a publish to a
 * missing exchange closing the channel (404) afterwards. Every entry point
 * ends with mem_run: deliveries are queued to the inboxes, never handed
 * over inside the call.
 */
#include <stdlib.h>
#include <string.h>

#include "mem.h"

static int
mem_connect(mm_t *mm)
{
    const char *name = mm->uri.memory;
    if (mm->mem_broker != NULL && strcmp(mm->mem_broker->name, name) != 0)
        mmi_mem_release(mm); /* another broker now: this instance no longer holds the old one */
    if (mm->mem_broker == NULL && (mm->mem_broker = mem_broker_get(name)) == NULL)
        return mmi_fail(mm, MM_ENOMEM, "out of memory");
    mem_conn_t *c = calloc(1, sizeof *c);
    if (c == NULL)
        return mmi_fail(mm, MM_ENOMEM, "out of memory");
    *c = (mem_conn_t){.mm = mm, .b = mm->mem_broker};
    if (mem_inbox_start(c) != MM_OK) {
        free(c);
        return mmi_fail(mm, MM_ENOMEM, "out of memory");
    }
    c->next = c->b->conns;
    c->b->conns = c;
    mm->mem = c;
    mm->state = MMI_CONNECTED;
    mm->heartbeat = 0; /* nothing to watch: no heartbeats, no flow control */
    mm->channel_max = 2047;
    mm->blocked = false;
    return MM_OK;
}

static void
delete_exclusive(mem_conn_t *c)
{
    for (int i = 0; i < MEM_QUEUE_BUCKETS; i++) {
        mem_queue_t *q = c->b->queues[i];
        while (q != NULL) {
            mem_queue_t *next = q->hnext; /* a delete never deletes another queue */
            if (q->owner == c)
                mem_queue_delete(q);
            q = next;
        }
    }
}

/* What a broker does when a connection ends, whatever the reason. */
static void
detach(mem_conn_t *c)
{
    mem_broker_t *b = c->b;
    for (uint32_t i = 0; i < c->nchans; i++) {
        mem_chan_t *ch = c->chans[i];
        if (ch == NULL)
            continue;
        if (!ch->closing)
            mem_chan_teardown(ch);
        mem_chan_free(ch);
    }
    free(c->chans);
    c->chans = NULL;
    c->nchans = 0;
    delete_exclusive(c);
    for (mem_conn_t **p = &b->conns; *p != NULL; p = &(*p)->next)
        if (*p == c) {
            *p = c->next;
            break;
        }
    mem_inbox_stop(c);
    c->b = NULL;
    mem_run(b); /* what went back to the queues, to the other consumers */
}

static void
mem_close(mm_t *mm)
{
    (void) mm; /* nothing to say to anyone: the retire that follows is the end */
}

static void
mem_retire(mm_t *mm)
{
    detach(mm->mem);
    free(mm->mem_dead); /* a second end before the first reap */
    mm->mem_dead = mm->mem;
    mm->mem = NULL;
}

static void
mem_reap(mm_t *mm)
{
    free(mm->mem_dead);
    mm->mem_dead = NULL;
}

static int
mem_send(mm_t *mm, uint16_t id, amqp_method_number_t method, void *d)
{
    mem_conn_t *c = mm->mem;
    mem_chan_t *ch = mem_chan_get(c, id);
    if (ch == NULL)
        return MM_OK; /* the core sends nothing on a channel it has not opened */
    if (method == AMQP_BASIC_ACK_METHOD) {
        const amqp_basic_ack_t *a = d;
        mem_settle(ch, a->delivery_tag, a->multiple, false, true);
    } else if (method == AMQP_BASIC_NACK_METHOD) {
        const amqp_basic_nack_t *n = d;
        mem_settle(ch, n->delivery_tag, n->multiple, n->requeue, false);
    } else if (method == AMQP_BASIC_REJECT_METHOD) {
        const amqp_basic_reject_t *r = d;
        mem_settle(ch, r->delivery_tag, false, r->requeue, false);
    } else if (method == AMQP_BASIC_GET_METHOD) {
        mem_basic_get(ch, d);
    } else if (method == AMQP_CHANNEL_CLOSE_OK_METHOD && ch->closing) {
        mem_chan_free(ch);
    }
    mem_run(c->b);
    return MM_OK;
}

/* ---- publish ---- */

struct routed {
    mem_msg_t *msg;
    bool refused; /* a queue full with x-overflow reject-publish: the confirm is a nack */
};

static void
push_to(mem_queue_t *q, void *ud)
{
    struct routed *r = ud;
    if (!mem_queue_push(q, r->msg))
        r->refused = true;
}

static void
returned(mem_chan_t *ch, mem_msg_t *m)
{
    static const char text[] = "NO_ROUTE";
    mem_in_t *in = mem_in_new(ch->id, AMQP_BASIC_RETURN_METHOD, text, sizeof text - 1);
    if (in == NULL)
        return;
    in->msg = mem_msg_ref(m);
    in->code = MEM_NO_ROUTE;
    mem_push(ch->conn, in);
}

static void
no_exchange(mem_chan_t *ch, amqp_bytes_t exchange)
{
    mem_err_t e;
    mem_fail(&e, MEM_NOT_FOUND, "NOT_FOUND - no exchange '%.*s' in vhost '/'", (int) exchange.len,
             (const char *) exchange.bytes);
    mem_chan_fail(ch, &e); /* what this channel publishes until its owner hears it is dropped */
}

static int
mem_publish(mm_t *mm, uint16_t id, amqp_bytes_t exchange, amqp_bytes_t routing_key, bool mandatory,
            const amqp_basic_properties_t *props, const amqp_bytes_t *encoded, amqp_bytes_t body)
{
    mem_conn_t *c = mm->mem;
    mem_chan_t *ch = mem_chan_get(c, id);
    if (ch == NULL || ch->closing)
        return MM_OK; /* a broker drops what comes on a channel it closed */
    mem_exchange_t *x = mem_exchange_find(c->b, exchange);
    mem_msg_t *m = x != NULL ? mem_msg_new(exchange, routing_key, props, encoded, body) : NULL;
    if (x != NULL && m == NULL)
        return mmi_fail(mm, MM_ENOMEM, "out of memory"); /* not published: no tag taken */
    uint64_t tag = ch->confirm ? ++ch->pub_seq : 0;
    if (x == NULL) {
        no_exchange(ch, exchange);
        return MM_OK;
    }
    struct routed r = {.msg = m};
    if (mem_route(c->b, x, routing_key, push_to, &r) == 0 && mandatory)
        returned(ch, m); /* before its confirm, as RabbitMQ sends them */
    if (ch->confirm)
        mem_method(ch, r.refused ? AMQP_BASIC_NACK_METHOD : AMQP_BASIC_ACK_METHOD, tag, false);
    mem_msg_unref(m);
    mem_run(c->b);
    return MM_OK;
}

const mmi_transport_t mmi_mem_transport = {
    .name = "memory",
    .reconnects = false, /* nothing can break between two instances of one process */
    .connect = mem_connect,
    .close = mem_close,
    .retire = mem_retire,
    .reap = mem_reap,
    .rpc = mem_rpc,
    .send = mem_send,
    .publish = mem_publish,
};
