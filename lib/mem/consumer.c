/*
 * memory:// consumers and the movement of messages: dispatch from a queue
 * to its consumers (round robin among those with room under their prefetch;
 * with x-single-active-consumer only the first one), a delivery as an inbox
 * item with a per-channel delivery tag, kept out until settled unless
 * consumed without acks; acks, nacks (requeue: back to its place,
 * redelivered) and rejects, `multiple` included; basic.get. An unknown
 * delivery tag closes the channel (406), as RabbitMQ does.
 */
#include <stdlib.h>
#include <string.h>

#include "mem.h"

bool
mem_consumer_has_room(const mem_consumer_t *k)
{
    return k->no_ack || k->prefetch == 0 || k->out < k->prefetch;
}

mem_consumer_t *
mem_consumer_add(mem_chan_t *ch, mem_queue_t *q, const char *tag, bool no_ack, bool exclusive)
{
    mem_consumer_t *k = calloc(1, sizeof *k);
    if (k == NULL || (k->tag = strdup(tag)) == NULL) {
        free(k);
        return NULL;
    }
    k->q = q;
    k->chan = ch;
    k->no_ack = no_ack;
    k->exclusive = exclusive;
    k->prefetch = ch->prefetch;
    mem_consumer_t **p = &q->consumers; /* arrival order: the first is the single active one */
    while (*p != NULL)
        p = &(*p)->qnext;
    *p = k;
    k->cnext = ch->consumers;
    ch->consumers = k;
    q->had_consumer = true;
    mem_touch(q);
    return k;
}

void
mem_consumer_remove(mem_consumer_t *k)
{
    mem_queue_t *q = k->q;
    for (mem_consumer_t **p = &q->consumers; *p != NULL; p = &(*p)->qnext)
        if (*p == k) {
            *p = k->qnext;
            break;
        }
    if (q->rr == k)
        q->rr = k->qnext;
    for (mem_consumer_t **p = &k->chan->consumers; *p != NULL; p = &(*p)->cnext)
        if (*p == k) {
            *p = k->cnext;
            break;
        }
    for (mem_entry_t *e = k->chan->out_head; e != NULL; e = e->next)
        if (e->c == k)
            e->c = NULL; /* still out: settled as usual, counted against nobody */
    mem_touch(q);        /* the next single active consumer, or auto-delete */
    free(k->tag);
    free(k);
}

mem_consumer_t *
mem_consumer_find(mem_chan_t *ch, amqp_bytes_t tag)
{
    for (mem_consumer_t *k = ch->consumers; k != NULL; k = k->cnext)
        if (strlen(k->tag) == tag.len && memcmp(k->tag, tag.bytes, tag.len) == 0)
            return k;
    return NULL;
}

/* Round robin among the consumers with room, resuming after the last one served. */
static mem_consumer_t *
next_consumer(mem_queue_t *q)
{
    if (q->consumers == NULL)
        return NULL;
    if (q->sac)
        return mem_consumer_has_room(q->consumers) ? q->consumers : NULL;
    mem_consumer_t *start = q->rr != NULL ? q->rr : q->consumers, *k = start;
    do {
        if (mem_consumer_has_room(k)) {
            q->rr = k->qnext;
            return k;
        }
        k = k->qnext != NULL ? k->qnext : q->consumers;
    } while (k != start);
    return NULL;
}

bool
mem_deliver(mem_consumer_t *k, mem_entry_t *e)
{
    mem_chan_t *ch = k->chan;
    mem_in_t *in = mem_in_new(ch->id, AMQP_BASIC_DELIVER_METHOD, k->tag, strlen(k->tag));
    if (in == NULL)
        return false;
    in->msg = mem_msg_ref(e->msg);
    in->tag = ++ch->next_tag;
    in->redelivered = e->redelivered;
    in->offset = e->offset;
    if (k->no_ack) {
        mem_entry_free(e);
    } else {
        e->tag = in->tag;
        e->c = k;
        k->out++;
        mem_chan_out_add(ch, e);
        mem_queue_out_add(k->q, e);
    }
    mem_push(ch->conn, in);
    return true;
}

void
mem_dispatch(mem_queue_t *q)
{
    if (q->stream) {
        mem_stream_dispatch(q);
        return;
    }
    /* A message first: choosing a consumer moves the round robin on. */
    while (mem_queue_count(q) > 0) {
        mem_consumer_t *k = next_consumer(q);
        if (k == NULL)
            return;
        mem_entry_t *e = mem_queue_take(q);
        if (!mem_deliver(k, e)) { /* no memory: it stays, for the next change to move */
            mem_queue_requeue(q, e, e->redelivered);
            return;
        }
    }
}

/* ---- settles ---- */

static void
settle_one(mem_chan_t *ch, mem_entry_t *e, bool requeue)
{
    mem_queue_t *q = e->q;
    mem_chan_out_remove(ch, e);
    if (e->c != NULL)
        e->c->out--;
    if (q == NULL) { /* its queue was deleted meanwhile */
        mem_entry_free(e);
        return;
    }
    mem_queue_out_remove(q, e);
    if (requeue && e->offset < 0) /* a stream record is never given back: it stays in the log */
        mem_queue_requeue(q, e, true);
    else
        mem_entry_free(e);
    mem_touch(q); /* room under a prefetch, or a message back */
}

static mem_entry_t *
find_tag(const mem_chan_t *ch, uint64_t tag)
{
    for (mem_entry_t *e = ch->out_head; e != NULL; e = e->next)
        if (e->tag == tag)
            return e;
    return NULL;
}

void
mem_settle(mem_chan_t *ch, uint64_t tag, bool multiple, bool requeue, bool ack)
{
    if (ch->closing)
        return; /* the broker hears nothing but close-ok on a channel it closed */
    bool found = false;
    if (multiple) { /* every delivery up to tag (0: all of them) */
        while (ch->out_head != NULL && (tag == 0 || ch->out_head->tag <= tag)) {
            settle_one(ch, ch->out_head, !ack && requeue);
            found = true;
        }
    } else {
        mem_entry_t *e = find_tag(ch, tag);
        if ((found = e != NULL))
            settle_one(ch, e, !ack && requeue);
    }
    if (found || (multiple && tag == 0))
        return;
    mem_err_t err;
    mem_fail(&err, MEM_PRECONDITION_FAILED, "PRECONDITION_FAILED - unknown delivery tag %llu",
             (unsigned long long) tag);
    mem_chan_fail(ch, &err);
}

/* ---- basic.get ---- */

static int
get_check(mem_chan_t *ch, mem_queue_t *q, amqp_bytes_t name, mem_err_t *e)
{
    if (q == NULL)
        return mem_fail(e, MEM_NOT_FOUND, "NOT_FOUND - no queue '%.*s' in vhost '/'",
                        (int) name.len, (const char *) name.bytes);
    if (q->exclusive && q->owner != ch->conn)
        return mem_fail(e, MEM_RESOURCE_LOCKED,
                        "RESOURCE_LOCKED - cannot obtain exclusive access to locked queue '%s' "
                        "in vhost '/'",
                        q->name);
    if (q->stream)
        return mem_fail(e, MEM_NOT_IMPLEMENTED,
                        "NOT_IMPLEMENTED - basic.get not supported by stream queues");
    return 0;
}

void
mem_basic_get(mem_chan_t *ch, const amqp_basic_get_t *req)
{
    if (ch->closing)
        return;
    mem_queue_t *q = mem_queue_find(ch->conn->b, req->queue);
    mem_err_t err;
    if (get_check(ch, q, req->queue, &err) != 0) {
        mem_chan_fail(ch, &err);
        return;
    }
    mem_entry_t *e = mem_queue_take(q);
    mem_in_t *in =
        mem_in_new(ch->id, e ? AMQP_BASIC_GET_OK_METHOD : AMQP_BASIC_GET_EMPTY_METHOD, NULL, 0);
    if (in == NULL || e == NULL) { /* empty, or no memory: the message stays */
        if (e != NULL)
            mem_queue_requeue(q, e, e->redelivered);
        if (in != NULL)
            mem_push(ch->conn, in);
        return;
    }
    in->msg = mem_msg_ref(e->msg);
    in->tag = ++ch->next_tag;
    in->redelivered = e->redelivered;
    in->count = q->ready;
    if (req->no_ack) {
        mem_entry_free(e);
    } else {
        e->tag = in->tag;
        mem_chan_out_add(ch, e);
        mem_queue_out_add(q, e);
    }
    mem_push(ch->conn, in);
}
