/*
 * memory:// queues: the arguments RabbitMQ 3.10 understands and compares on
 * a re-declare, the ready messages in publish order (a requeued message goes
 * back to its old place, marked redelivered, as a classic queue does),
 * per-message and per-queue TTL (expired messages are dropped when they
 * reach the head), x-max-length / x-max-length-bytes with drop-head or
 * reject-publish, and deletion (consumers told with basic.cancel, what is
 * delivered and not settled orphaned). Stream queues keep a log instead
 * (stream.c); dispatch is consumer.c's.
 */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "mem.h"

/* The arguments RabbitMQ compares when a queue is declared again. */
static const char *const COMPARED[] = {
    "x-expires",
    "x-message-ttl",
    "x-max-length",
    "x-max-length-bytes",
    "x-overflow",
    "x-single-active-consumer",
    "x-queue-type",
    "x-dead-letter-exchange",
    "x-dead-letter-routing-key",
    "x-max-priority",
    "x-max-age",
    "x-stream-max-segment-size-bytes",
    "x-queue-mode",
};

static const amqp_field_value_t *
lookup(const amqp_table_t *t, const char *key)
{
    size_t n = strlen(key);
    for (int i = 0; t != NULL && i < t->num_entries; i++)
        if (t->entries[i].key.len == n && memcmp(t->entries[i].key.bytes, key, n) == 0)
            return &t->entries[i].value;
    return NULL;
}

static bool
str_of(const amqp_field_value_t *v, amqp_bytes_t *ret)
{
    if (v->kind != AMQP_FIELD_KIND_UTF8 && v->kind != AMQP_FIELD_KIND_BYTES)
        return false;
    *ret = v->value.bytes;
    return true;
}

/* RabbitMQ compares integer types as one class (PROTOCOL.md 1). */
static bool
same_value(const amqp_field_value_t *a, const amqp_field_value_t *b)
{
    int64_t x, y;
    amqp_bytes_t s, t;
    if (mmi_field_integer(a, &x) && mmi_field_integer(b, &y))
        return x == y;
    if (str_of(a, &s) && str_of(b, &t))
        return s.len == t.len && memcmp(s.bytes, t.bytes, s.len) == 0;
    if (a->kind == AMQP_FIELD_KIND_BOOLEAN && b->kind == AMQP_FIELD_KIND_BOOLEAN)
        return !a->value.boolean == !b->value.boolean;
    return false;
}

static const char *
describe(const amqp_field_value_t *v, char *buf, size_t cap)
{
    int64_t n;
    amqp_bytes_t s;
    if (v == NULL)
        snprintf(buf, cap, "none");
    else if (mmi_field_integer(v, &n))
        snprintf(buf, cap, "%lld", (long long) n);
    else if (str_of(v, &s))
        snprintf(buf, cap, "'%.*s'", (int) (s.len > 64 ? 64 : s.len), (const char *) s.bytes);
    else if (v->kind == AMQP_FIELD_KIND_BOOLEAN)
        snprintf(buf, cap, "%s", v->value.boolean ? "true" : "false");
    else
        snprintf(buf, cap, "a value of kind '%c'", (char) v->kind);
    return buf;
}

int
mem_queue_args_match(const mem_queue_t *q, const amqp_table_t *args, mem_err_t *e)
{
    for (size_t i = 0; i < sizeof COMPARED / sizeof COMPARED[0]; i++) {
        const amqp_field_value_t *was = lookup(&q->args, COMPARED[i]),
                                 *now = lookup(args, COMPARED[i]);
        if (was == NULL && now == NULL)
            continue;
        if (was != NULL && now != NULL && same_value(was, now))
            continue;
        char got[80], cur[80];
        return mem_fail(e, MEM_PRECONDITION_FAILED,
                        "PRECONDITION_FAILED - inequivalent arg '%s' for queue '%s' in vhost "
                        "'/': received %s but current is %s",
                        COMPARED[i], q->name, describe(now, got, sizeof got),
                        describe(was, cur, sizeof cur));
    }
    return 0;
}

static int
bad_arg(mem_err_t *e, const mem_queue_t *q, const char *key)
{
    return mem_fail(e, MEM_PRECONDITION_FAILED,
                    "PRECONDITION_FAILED - invalid arg '%s' for queue '%s' in vhost '/'", key,
                    q->name);
}

/* A non-negative integer argument into *ret (left alone when absent). */
static int
count_arg(const mem_queue_t *q, const amqp_table_t *args, const char *key, int64_t *ret,
          mem_err_t *e)
{
    const amqp_field_value_t *v = lookup(args, key);
    int64_t n;
    if (v == NULL)
        return 0;
    if (!mmi_field_integer(v, &n) || n < 0)
        return bad_arg(e, q, key);
    *ret = n;
    return 0;
}

static bool
str_is(const amqp_field_value_t *v, const char *s)
{
    amqp_bytes_t b;
    return v != NULL && str_of(v, &b) && b.len == strlen(s) && memcmp(b.bytes, s, b.len) == 0;
}

/* x-max-age: a number and a unit (Y, M, D, h, m, s), as RabbitMQ streams take it. */
static int
age_arg(mem_queue_t *q, const amqp_table_t *args, mem_err_t *e)
{
    const amqp_field_value_t *v = lookup(args, "x-max-age");
    amqp_bytes_t s;
    if (v == NULL)
        return 0;
    if (!str_of(v, &s) || s.len < 2 || s.len > 18)
        return bad_arg(e, q, "x-max-age");
    static const char units[] = "YMDhms";
    static const int64_t ms[] = {365LL * 86400000, 30LL * 86400000, 86400000, 3600000, 60000, 1000};
    const char *p = s.bytes, *u = memchr(units, p[s.len - 1], sizeof units - 1);
    int64_t n = 0;
    for (size_t i = 0; i + 1 < s.len; i++) {
        if (p[i] < '0' || p[i] > '9')
            return bad_arg(e, q, "x-max-age");
        n = n * 10 + (p[i] - '0');
    }
    if (u == NULL)
        return bad_arg(e, q, "x-max-age");
    q->max_age_ms = n * ms[u - units];
    return 0;
}

static int
kind_args(mem_queue_t *q, const amqp_table_t *args, mem_err_t *e)
{
    const amqp_field_value_t *type = lookup(args, "x-queue-type");
    const amqp_field_value_t *ovf = lookup(args, "x-overflow");
    const amqp_field_value_t *sac = lookup(args, "x-single-active-consumer");
    if (type != NULL && !str_is(type, "classic") && !str_is(type, "quorum") &&
        !str_is(type, "stream"))
        return bad_arg(e, q, "x-queue-type");
    q->stream = str_is(type, "stream");
    if (ovf != NULL && !str_is(ovf, "drop-head") && !str_is(ovf, "reject-publish") &&
        !str_is(ovf, "reject-publish-dlx"))
        return bad_arg(e, q, "x-overflow");
    q->reject_publish = ovf != NULL && !str_is(ovf, "drop-head");
    if (sac != NULL && sac->kind != AMQP_FIELD_KIND_BOOLEAN)
        return bad_arg(e, q, "x-single-active-consumer");
    q->sac = sac != NULL && sac->value.boolean;
    return 0;
}

int
mem_queue_args(mem_queue_t *q, const amqp_table_t *args, mem_err_t *e)
{
    q->max_length = q->max_bytes = q->msg_ttl = q->max_age_ms = -1;
    q->segment_bytes = 500000000; /* RabbitMQ's default segment */
    if (count_arg(q, args, "x-max-length", &q->max_length, e) != 0 ||
        count_arg(q, args, "x-stream-max-segment-size-bytes", &q->segment_bytes, e) != 0 ||
        count_arg(q, args, "x-max-length-bytes", &q->max_bytes, e) != 0 ||
        count_arg(q, args, "x-message-ttl", &q->msg_ttl, e) != 0 || kind_args(q, args, e) != 0 ||
        age_arg(q, args, e) != 0)
        return -1;
    if (q->stream && (q->exclusive || q->auto_delete || !q->durable))
        return mem_fail(e, MEM_PRECONDITION_FAILED,
                        "PRECONDITION_FAILED - invalid property '%s' for queue '%s' in vhost '/'",
                        !q->durable    ? "non-durable"
                        : q->exclusive ? "exclusive"
                                       : "auto-delete",
                        q->name);
    if (args != NULL && amqp_table_clone(args, &q->args, &q->pool) != AMQP_STATUS_OK)
        return mem_fail(e, MEM_INTERNAL_ERROR, "INTERNAL_ERROR - out of memory");
    return 0;
}

mem_queue_t *
mem_queue_new(mem_broker_t *b, const char *name)
{
    mem_queue_t *q = calloc(1, sizeof *q);
    if (q == NULL || (q->name = strdup(name)) == NULL) {
        free(q);
        return NULL;
    }
    q->b = b;
    init_amqp_pool(&q->pool, 512);
    return q;
}

/* ---- ready messages ---- */

static void
unlink_ready(mem_queue_t *q, mem_entry_t *e)
{
    if (e->prev != NULL)
        e->prev->next = e->next;
    else
        q->head = e->next;
    if (e->next != NULL)
        e->next->prev = e->prev;
    else
        q->tail = e->prev;
    e->next = e->prev = NULL;
    q->ready--;
    q->ready_bytes -= e->msg->body.len;
}

/* Before `at` (NULL: at the end). */
static void
link_ready(mem_queue_t *q, mem_entry_t *e, mem_entry_t *at)
{
    e->next = at;
    e->prev = at != NULL ? at->prev : q->tail;
    if (e->prev != NULL)
        e->prev->next = e;
    else
        q->head = e;
    if (at != NULL)
        at->prev = e;
    else
        q->tail = e;
    q->ready++;
    q->ready_bytes += e->msg->body.len;
}

static bool
over(const mem_queue_t *q, uint32_t n, uint64_t bytes)
{
    return (q->max_length >= 0 && n > (uint64_t) q->max_length) ||
           (q->max_bytes >= 0 && bytes > (uint64_t) q->max_bytes);
}

static void
drop_head(mem_queue_t *q)
{
    mem_entry_t *e = q->head;
    unlink_ready(q, e);
    mem_entry_free(e);
}

static uint64_t
expiry(const mem_queue_t *q, const mem_msg_t *m)
{
    int64_t ttl = m->ttl_ms;
    if (q->msg_ttl >= 0 && (ttl < 0 || q->msg_ttl < ttl))
        ttl = q->msg_ttl;
    return ttl >= 0 ? mmi_now_ms() + (uint64_t) ttl : 0;
}

bool
mem_queue_push(mem_queue_t *q, mem_msg_t *msg)
{
    if (q->stream)
        return mem_stream_append(q, msg);
    if (q->reject_publish && over(q, q->ready + 1, q->ready_bytes + msg->body.len))
        return false;
    mem_entry_t *e = mem_entry_new(msg);
    if (e == NULL)
        return false;
    e->seq = q->next_seq++;
    e->expires = expiry(q, msg);
    link_ready(q, e, NULL);
    while (q->head != NULL && over(q, q->ready, q->ready_bytes)) /* drop-head */
        drop_head(q);
    mem_touch(q);
    return true;
}

void
mem_queue_requeue(mem_queue_t *q, mem_entry_t *e, bool redelivered)
{
    mem_entry_t *at = q->head;
    while (at != NULL && at->seq < e->seq)
        at = at->next;
    e->redelivered = redelivered;
    e->c = NULL;
    e->tag = 0;
    link_ready(q, e, at);
}

/* Expired messages go when they reach the head, as in a classic queue. */
static void
drop_expired(mem_queue_t *q)
{
    uint64_t now = 0;
    while (q->head != NULL && q->head->expires != 0) {
        if (now == 0)
            now = mmi_now_ms();
        if (now <= q->head->expires)
            return;
        drop_head(q);
    }
}

mem_entry_t *
mem_queue_take(mem_queue_t *q)
{
    drop_expired(q);
    mem_entry_t *e = q->head;
    if (e != NULL)
        unlink_ready(q, e);
    return e;
}

uint32_t
mem_queue_count(mem_queue_t *q)
{
    if (q->stream)
        return (uint32_t) q->nrec;
    drop_expired(q);
    return q->ready;
}

/* ---- delivered, not settled ---- */

void
mem_queue_out_add(mem_queue_t *q, mem_entry_t *e)
{
    e->q = q;
    e->oprev = NULL;
    e->onext = q->out;
    if (q->out != NULL)
        q->out->oprev = e;
    q->out = e;
}

void
mem_queue_out_remove(mem_queue_t *q, mem_entry_t *e)
{
    if (e->oprev != NULL)
        e->oprev->onext = e->onext;
    else
        q->out = e->onext;
    if (e->onext != NULL)
        e->onext->oprev = e->oprev;
    e->onext = e->oprev = NULL;
    e->q = NULL;
}

/* ---- deletion ---- */

static void
tell_cancelled(mem_consumer_t *k)
{
    mem_chan_t *ch = k->chan;
    if (ch->closing)
        return;
    mem_in_t *in = mem_in_new(ch->id, AMQP_BASIC_CANCEL_METHOD, k->tag, strlen(k->tag));
    if (in != NULL)
        mem_push(ch->conn, in);
}

void
mem_queue_delete(mem_queue_t *q)
{
    mem_queue_unlink(q->b, q);
    mem_unbind_queue(q->b, q);
    q->auto_delete = false; /* consumers leaving now must not delete it again */
    while (q->consumers != NULL) {
        mem_consumer_t *k = q->consumers;
        tell_cancelled(k); /* consumer_cancel_notify */
        mem_consumer_remove(k);
    }
    while (q->out != NULL)
        mem_queue_out_remove(q, q->out); /* settled later against nothing */
    while (q->head != NULL)
        drop_head(q);
    mem_stream_free(q);
    mem_queue_unlink(q->b, q); /* out of the pending list again, if a consumer put it there */
    empty_amqp_pool(&q->pool);
    free(q->name);
    free(q);
}
