/*
 * memory:// synchronous methods: channel.open/close, queue.declare, delete,
 * bind, unbind, purge, exchange.declare, delete, basic.qos, consume, cancel
 * and confirm.select, answered at once with rabbitmq-c's reply structs
 * (valid until the next method), or refused as RabbitMQ 3.10 refuses them:
 * the broker closes the channel with a reply code (404 no such queue, 405 an
 * exclusive queue of another connection, 406 an inequivalent re-declare or
 * an unknown delivery tag, 403 an exclusive consumer...). As with the AMQP
 * transport, the owner's on_closed runs inside the call then. A method on a
 * channel the broker has already closed gets that close.
 */
#include <stdio.h>
#include <string.h>

#include "mem.h"

/* The reply's strings live in the connection until the next method. */
static amqp_bytes_t
reply_str(mem_conn_t *c, const char *s)
{
    snprintf(c->reply_str, sizeof c->reply_str, "%s", s);
    return amqp_cstring_bytes(c->reply_str);
}

static int
locked(mem_err_t *e, const mem_queue_t *q)
{
    return mem_fail(e, MEM_RESOURCE_LOCKED,
                    "RESOURCE_LOCKED - cannot obtain exclusive access to locked queue '%s' in "
                    "vhost '/'. It could be originally declared on another connection or the "
                    "exclusive property value does not match that of the original declaration.",
                    q->name);
}

static int
no_queue(mem_err_t *e, amqp_bytes_t name)
{
    return mem_fail(e, MEM_NOT_FOUND, "NOT_FOUND - no queue '%.*s' in vhost '/'", (int) name.len,
                    (const char *) name.bytes);
}

/* The queue of that name, usable by connection c (else 404 or 405). */
static mem_queue_t *
queue_for(mem_conn_t *c, amqp_bytes_t name, mem_err_t *e)
{
    mem_queue_t *q = mem_queue_find(c->b, name);
    if (q == NULL)
        no_queue(e, name);
    else if (q->exclusive && q->owner != c)
        locked(e, q);
    return e->code == 0 ? q : NULL;
}

static uint32_t
consumers_of(const mem_queue_t *q)
{
    uint32_t n = 0;
    for (const mem_consumer_t *k = q->consumers; k != NULL; k = k->qnext)
        n++;
    return n;
}

static int
inequivalent(mem_err_t *e, const mem_queue_t *q, const char *arg, bool got, bool now)
{
    return mem_fail(e, MEM_PRECONDITION_FAILED,
                    "PRECONDITION_FAILED - inequivalent arg '%s' for queue '%s' in vhost '/': "
                    "received '%s' but current is '%s'",
                    arg, q->name, got ? "true" : "false", now ? "true" : "false");
}

static int
redeclare(mem_conn_t *c, mem_queue_t *q, const amqp_queue_declare_t *req, mem_err_t *e)
{
    if ((q->exclusive && q->owner != c) || (!req->passive && (bool) req->exclusive != q->exclusive))
        return locked(e, q);
    if (req->passive)
        return 0;
    if ((bool) req->durable != q->durable)
        return inequivalent(e, q, "durable", req->durable, q->durable);
    if ((bool) req->auto_delete != q->auto_delete)
        return inequivalent(e, q, "auto_delete", req->auto_delete, q->auto_delete);
    return mem_queue_args_match(q, &req->arguments, e);
}

static mem_queue_t *
create(mem_conn_t *c, const char *name, const amqp_queue_declare_t *req, mem_err_t *e)
{
    mem_queue_t *q = mem_queue_new(c->b, name);
    if (q == NULL) {
        mem_fail(e, MEM_INTERNAL_ERROR, "INTERNAL_ERROR - out of memory");
        return NULL;
    }
    q->durable = req->durable;
    q->exclusive = req->exclusive;
    q->auto_delete = req->auto_delete;
    q->owner = req->exclusive ? c : NULL;
    if (mem_queue_args(q, &req->arguments, e) != 0) {
        mem_queue_delete(q); /* never linked: only freed */
        return NULL;
    }
    mem_queue_link(c->b, q);
    return q;
}

static int
queue_declare(mem_conn_t *c, const amqp_queue_declare_t *req, mem_err_t *e)
{
    char name[300];
    if (req->queue.len == 0) { /* server-named, as RabbitMQ names them */
        char id[37];
        mmi_make_id(c->mm, id);
        snprintf(name, sizeof name, "amq.gen-%s", id);
    } else {
        snprintf(name, sizeof name, "%.*s", (int) req->queue.len, (const char *) req->queue.bytes);
    }
    mem_queue_t *q = mem_queue_find(c->b, amqp_cstring_bytes(name));
    if (q != NULL && redeclare(c, q, req, e) != 0)
        return -1;
    if (q == NULL && req->passive)
        return no_queue(e, req->queue);
    if (q == NULL && req->queue.len > 0 && strncmp(name, "amq.", 4) == 0)
        return mem_fail(e, MEM_ACCESS_REFUSED,
                        "ACCESS_REFUSED - queue name '%s' contains reserved prefix 'amq.*'", name);
    if (q == NULL && (q = create(c, name, req, e)) == NULL)
        return -1;
    c->reply.declare = (amqp_queue_declare_ok_t){.queue = reply_str(c, q->name),
                                                 .message_count = mem_queue_count(q),
                                                 .consumer_count = consumers_of(q)};
    return 0;
}

static int
queue_delete(mem_conn_t *c, const amqp_queue_delete_t *req, mem_err_t *e)
{
    mem_queue_t *q = mem_queue_find(c->b, req->queue);
    c->reply.del = (amqp_queue_delete_ok_t){0};
    if (q == NULL)
        return 0; /* RabbitMQ 3.10: deleting what does not exist is fine */
    if (q->exclusive && q->owner != c)
        return locked(e, q);
    if (req->if_unused && q->consumers != NULL)
        return mem_fail(e, MEM_PRECONDITION_FAILED,
                        "PRECONDITION_FAILED - queue '%s' in vhost '/' in use", q->name);
    if (req->if_empty && mem_queue_count(q) > 0)
        return mem_fail(e, MEM_PRECONDITION_FAILED,
                        "PRECONDITION_FAILED - queue '%s' in vhost '/' is not empty", q->name);
    c->reply.del.message_count = mem_queue_count(q);
    mem_queue_delete(q);
    return 0;
}

static int
queue_purge(mem_conn_t *c, const amqp_queue_purge_t *req, mem_err_t *e)
{
    mem_queue_t *q = queue_for(c, req->queue, e);
    if (q == NULL)
        return -1;
    uint32_t n = 0;
    mem_entry_t *m;
    while (!q->stream && (m = mem_queue_take(q)) != NULL) {
        mem_entry_free(m);
        n++;
    }
    c->reply.purge = (amqp_queue_purge_ok_t){.message_count = n};
    return 0;
}

static mem_exchange_t *
exchange_for(mem_conn_t *c, amqp_bytes_t name, mem_err_t *e)
{
    mem_exchange_t *x = mem_exchange_find(c->b, name);
    if (x == NULL)
        mem_fail(e, MEM_NOT_FOUND, "NOT_FOUND - no exchange '%.*s' in vhost '/'", (int) name.len,
                 (const char *) name.bytes);
    else if (name.len == 0)
        mem_fail(e, MEM_ACCESS_REFUSED,
                 "ACCESS_REFUSED - operation not permitted on the default exchange");
    return e->code == 0 ? x : NULL;
}

static int
queue_bind(mem_conn_t *c, amqp_bytes_t queue, amqp_bytes_t exchange, amqp_bytes_t key, bool bind,
           mem_err_t *e)
{
    mem_exchange_t *x = exchange_for(c, exchange, e);
    mem_queue_t *q = x != NULL ? queue_for(c, queue, e) : NULL;
    if (q == NULL)
        return -1;
    if (!bind)
        mem_unbind(x, q, key);
    else if (mem_bind(x, q, key) != MM_OK)
        return mem_fail(e, MEM_INTERNAL_ERROR, "INTERNAL_ERROR - out of memory");
    return 0;
}

static int
exchange_declare(mem_conn_t *c, const amqp_exchange_declare_t *req, mem_err_t *e)
{
    amqp_bytes_t n = req->exchange;
    bool reserved = n.len == 0 || (n.len >= 4 && memcmp(n.bytes, "amq.", 4) == 0);
    if (reserved && !req->passive)
        return mem_fail(e, MEM_ACCESS_REFUSED,
                        "ACCESS_REFUSED - exchange name '%.*s' contains reserved prefix 'amq.*'",
                        (int) n.len, (const char *) n.bytes);
    return mem_exchange_declare(c->b, req, e);
}

static int
exchange_delete(mem_conn_t *c, const amqp_exchange_delete_t *req, mem_err_t *e)
{
    amqp_bytes_t n = req->exchange;
    if (n.len == 0 || (n.len >= 4 && memcmp(n.bytes, "amq.", 4) == 0))
        return mem_fail(e, MEM_ACCESS_REFUSED,
                        "ACCESS_REFUSED - operation not permitted on exchange '%.*s'", (int) n.len,
                        (const char *) n.bytes);
    return mem_exchange_delete(c->b, req, e);
}

/* ---- consumers ---- */

static int
consume_check(mem_chan_t *ch, mem_queue_t *q, const amqp_basic_consume_t *req, mem_err_t *e)
{
    bool taken = q->consumers != NULL && (q->consumers->exclusive || req->exclusive);
    for (const mem_consumer_t *k = q->consumers; k != NULL && !taken; k = k->qnext)
        taken = k->exclusive;
    if (taken)
        return mem_fail(e, MEM_ACCESS_REFUSED,
                        "ACCESS_REFUSED - queue '%s' in vhost '/' in exclusive use", q->name);
    if (q->stream && (req->no_ack || ch->prefetch == 0))
        return mem_fail(e, MEM_PRECONDITION_FAILED,
                        "PRECONDITION_FAILED - stream queue '%s' needs manual acks and a consumer "
                        "prefetch (basic.qos)",
                        q->name);
    if (req->consumer_tag.len > 0 && mem_consumer_find(ch, req->consumer_tag) != NULL)
        return mem_fail(e, MEM_NOT_ALLOWED, "NOT_ALLOWED - attempt to reuse consumer tag '%.*s'",
                        (int) req->consumer_tag.len, (const char *) req->consumer_tag.bytes);
    return 0;
}

static int
consume(mem_chan_t *ch, const amqp_basic_consume_t *req, mem_err_t *e)
{
    mem_conn_t *c = ch->conn;
    mem_queue_t *q = queue_for(c, req->queue, e);
    int64_t pos = 0;
    if (q == NULL || consume_check(ch, q, req, e) != 0 ||
        (q->stream && mem_stream_start(q, &req->arguments, &pos, e) != 0))
        return -1;
    char tag[300];
    if (req->consumer_tag.len > 0) {
        snprintf(tag, sizeof tag, "%.*s", (int) req->consumer_tag.len,
                 (const char *) req->consumer_tag.bytes);
    } else {
        char id[37];
        mmi_make_id(c->mm, id);
        snprintf(tag, sizeof tag, "amq.ctag-%s", id);
    }
    mem_consumer_t *k = mem_consumer_add(ch, q, tag, req->no_ack, req->exclusive);
    if (k == NULL)
        return mem_fail(e, MEM_INTERNAL_ERROR, "INTERNAL_ERROR - out of memory");
    k->pos = pos;
    c->reply.consume = (amqp_basic_consume_ok_t){.consumer_tag = reply_str(c, tag)};
    return 0;
}

static int
cancel(mem_chan_t *ch, const amqp_basic_cancel_t *req)
{
    mem_consumer_t *k = mem_consumer_find(ch, req->consumer_tag);
    if (k != NULL)
        mem_consumer_remove(k); /* its deliveries out stay on the channel */
    char tag[300];
    snprintf(tag, sizeof tag, "%.*s", (int) req->consumer_tag.len,
             (const char *) req->consumer_tag.bytes);
    ch->conn->reply.cancel = (amqp_basic_cancel_ok_t){.consumer_tag = reply_str(ch->conn, tag)};
    return 0;
}

/* ---- the call ---- */

static int
method(mem_chan_t *ch, amqp_method_number_t id, void *req, mem_err_t *e)
{
    mem_conn_t *c = ch->conn;
    switch (id) {
    case AMQP_QUEUE_DECLARE_METHOD:
        return queue_declare(c, req, e);
    case AMQP_QUEUE_DELETE_METHOD:
        return queue_delete(c, req, e);
    case AMQP_QUEUE_PURGE_METHOD:
        return queue_purge(c, req, e);
    case AMQP_QUEUE_BIND_METHOD: {
        const amqp_queue_bind_t *b = req;
        return queue_bind(c, b->queue, b->exchange, b->routing_key, true, e);
    }
    case AMQP_QUEUE_UNBIND_METHOD: {
        const amqp_queue_unbind_t *u = req;
        return queue_bind(c, u->queue, u->exchange, u->routing_key, false, e);
    }
    case AMQP_EXCHANGE_DECLARE_METHOD:
        return exchange_declare(c, req, e);
    case AMQP_EXCHANGE_DELETE_METHOD:
        return exchange_delete(c, req, e);
    case AMQP_BASIC_QOS_METHOD:
        ch->prefetch = ((const amqp_basic_qos_t *) req)->prefetch_count;
        return 0;
    case AMQP_BASIC_CONSUME_METHOD:
        return consume(ch, req, e);
    case AMQP_BASIC_CANCEL_METHOD:
        return cancel(ch, req);
    case AMQP_CONFIRM_SELECT_METHOD:
        ch->confirm = true;
        return 0;
    default:
        return mem_fail(e, MEM_NOT_IMPLEMENTED,
                        "NOT_IMPLEMENTED - method 0x%08x is not supported by memory://", id);
    }
}

/* The broker closed the channel: its owner hears it now, as from a channel.close
 * read while waiting for a reply (lib/amqp_rpc.c). */
static int
closed(mm_t *mm, mem_chan_t *ch, uint16_t code, const char *text)
{
    uint16_t id = ch->id;
    int rc = mmi_fail(mm, MM_ECHANNEL, "broker closed channel %u: %u %s", id, code, text);
    amqp_channel_close_t close = {.reply_code = code, .reply_text = amqp_cstring_bytes(text)};
    mmi_chan_closed_by_broker(mm, id, &close); /* close-ok frees ch (lib/mem/conn.c) */
    return rc;
}

/* A method on a channel the broker closed earlier: that close is the answer. */
static int
closed_before(mm_t *mm, mem_conn_t *c, mem_chan_t *ch)
{
    mem_in_t *close = mem_purge(c, ch->id); /* nothing of the channel comes any more */
    char text[MMI_ERRBUF];
    snprintf(text, sizeof text, "%s", close != NULL ? close->text : "channel closed");
    uint16_t code = close != NULL ? close->code : MEM_INTERNAL_ERROR;
    mem_in_free(close);
    return closed(mm, ch, code, text);
}

static int
channel_close(mem_conn_t *c, mem_chan_t *ch)
{
    mem_in_free(mem_purge(c, ch->id)); /* sent before our close: dropped with the channel */
    mem_chan_teardown(ch);
    mem_chan_free(ch);
    return MM_OK;
}

static void *
reply_of(mem_conn_t *c, amqp_method_number_t id)
{
    switch (id) {
    case AMQP_QUEUE_DECLARE_METHOD:
        return &c->reply.declare;
    case AMQP_QUEUE_DELETE_METHOD:
        return &c->reply.del;
    case AMQP_QUEUE_PURGE_METHOD:
        return &c->reply.purge;
    case AMQP_BASIC_CONSUME_METHOD:
        return &c->reply.consume;
    case AMQP_BASIC_CANCEL_METHOD:
        return &c->reply.cancel;
    default:
        return &c->reply; /* the other replies have no field the core reads */
    }
}

static int
rpc_on(mm_t *mm, mem_conn_t *c, uint16_t id, amqp_method_number_t method_id, void *req,
       void **ret_reply)
{
    if (method_id == AMQP_CHANNEL_OPEN_METHOD) {
        int rc = mem_chan_open(c, id);
        return rc == MM_OK ? MM_OK : mmi_fail(mm, rc, "memory://: cannot open channel %u", id);
    }
    mem_chan_t *ch = mem_chan_get(c, id);
    if (ch == NULL)
        return mmi_fail(mm, MM_ECHANNEL, "channel %u is not open", id);
    if (ch->closing)
        return closed_before(mm, c, ch);
    if (method_id == AMQP_CHANNEL_CLOSE_METHOD)
        return channel_close(c, ch);
    mem_err_t e = {0};
    if (method(ch, method_id, req, &e) != 0) {
        mem_chan_fail(ch, &e); /* the broker's side now; its owner hears it at once: */
        return closed_before(mm, c, ch);
    }
    if (ret_reply != NULL)
        *ret_reply = reply_of(c, method_id);
    return MM_OK;
}

int
mem_rpc(mm_t *mm, uint16_t ch, amqp_method_number_t id, void *req, amqp_method_number_t reply_id,
        void **ret_reply)
{
    (void) reply_id; /* each method has one reply */
    mem_conn_t *c = mm->mem;
    mem_broker_t *b = c->b;
    int rc = rpc_on(mm, c, ch, id, req, ret_reply);
    mem_run(b); /* what the method let move: after its reply, from the loop */
    return rc;
}
