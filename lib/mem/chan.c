/*
 * memory:// channels and the inbox. A channel keeps its delivery tags, its
 * prefetch for new consumers, confirm mode and what it has out (unacked, in
 * tag order). Its end, by the client or the broker, is the broker's work at
 * once: consumers gone, what is out back to its queues, redelivered. A
 * channel the broker closes stays "closing" until its owner's close-ok,
 * hearing nothing else meanwhile, as on RabbitMQ.
 *
 * The inbox is what the broker "sends" one connection, in order: deliveries,
 * returns, confirms, cancels, closes. inbox.c hands it to the channels'
 * owners from an event on the instance's loop.
 */
#include <stdlib.h>
#include <string.h>

#include "mem.h"

mem_chan_t *
mem_chan_get(const mem_conn_t *c, uint16_t ch)
{
    return ch < c->nchans ? c->chans[ch] : NULL;
}

int
mem_chan_open(mem_conn_t *c, uint16_t id)
{
    if (id >= c->nchans) {
        uint32_t n = id < 2048 ? 2048 : (uint32_t) id + 1;
        mem_chan_t **t = realloc(c->chans, n * sizeof *t);
        if (t == NULL)
            return MM_ENOMEM;
        memset(t + c->nchans, 0, (n - c->nchans) * sizeof *t);
        c->chans = t;
        c->nchans = n;
    }
    if (c->chans[id] != NULL)
        return MM_ESTATE;
    mem_chan_t *ch = calloc(1, sizeof *ch);
    if (ch == NULL)
        return MM_ENOMEM;
    *ch = (mem_chan_t){.id = id, .conn = c};
    c->chans[id] = ch;
    return MM_OK;
}

void
mem_chan_teardown(mem_chan_t *ch)
{
    while (ch->consumers != NULL) /* first: what goes back must not go to them */
        mem_consumer_remove(ch->consumers);
    mem_settle(ch, 0, true, true, false); /* every delivery out, requeued (multiple, tag 0) */
}

void
mem_chan_free(mem_chan_t *ch)
{
    ch->conn->chans[ch->id] = NULL;
    free(ch);
}

void
mem_chan_fail(mem_chan_t *ch, const mem_err_t *e)
{
    mem_chan_teardown(ch);
    ch->closing = true;
    mem_in_t *in = mem_in_new(ch->id, AMQP_CHANNEL_CLOSE_METHOD, e->text, strlen(e->text));
    if (in == NULL)
        return; /* no memory to say it: the channel stays closing until the connection ends */
    in->code = e->code;
    mem_push(ch->conn, in);
}

void
mem_chan_out_add(mem_chan_t *ch, mem_entry_t *e)
{
    e->next = NULL;
    e->prev = ch->out_tail;
    if (ch->out_tail != NULL)
        ch->out_tail->next = e;
    else
        ch->out_head = e;
    ch->out_tail = e;
}

void
mem_chan_out_remove(mem_chan_t *ch, mem_entry_t *e)
{
    if (e->prev != NULL)
        e->prev->next = e->next;
    else
        ch->out_head = e->next;
    if (e->next != NULL)
        e->next->prev = e->prev;
    else
        ch->out_tail = e->prev;
    e->next = e->prev = NULL;
}

/* ---- the inbox ---- */

mem_in_t *
mem_in_new(uint16_t ch, amqp_method_number_t method, const char *text, size_t len)
{
    mem_in_t *in = calloc(1, sizeof *in + len + 1);
    if (in == NULL)
        return NULL;
    in->ch = ch;
    in->method = method;
    in->offset = -1;
    if (len > 0)
        memcpy(in->text, text, len);
    return in;
}

void
mem_in_free(mem_in_t *in)
{
    if (in == NULL)
        return;
    mem_msg_unref(in->msg);
    free(in);
}

void
mem_push(mem_conn_t *c, mem_in_t *in)
{
    in->next = NULL;
    if (c->in_tail != NULL)
        c->in_tail->next = in;
    else
        c->in_head = in;
    c->in_tail = in;
    mem_inbox_kick(c);
}

mem_in_t *
mem_purge(mem_conn_t *c, uint16_t ch)
{
    mem_in_t *close = NULL, **p = &c->in_head;
    c->in_tail = NULL;
    while (*p != NULL) {
        mem_in_t *in = *p;
        if (in->ch != ch) {
            c->in_tail = in;
            p = &in->next;
            continue;
        }
        *p = in->next;
        if (in->method == AMQP_CHANNEL_CLOSE_METHOD && close == NULL)
            close = in;
        else
            mem_in_free(in);
    }
    return close;
}

void
mem_method(mem_chan_t *ch, amqp_method_number_t method, uint64_t tag, bool multiple)
{
    mem_in_t *in = mem_in_new(ch->id, method, NULL, 0);
    if (in == NULL)
        return;
    in->tag = tag;
    in->multiple = multiple;
    mem_push(ch->conn, in);
}
