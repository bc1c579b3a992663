/*
 * memory:// exchanges and bindings: the default exchange (every queue by
 * its name, no bindings), direct, fanout and topic exchanges with AMQP's
 * topic matching (mmi_topic_match, lib/group.c), declared with RabbitMQ's
 * equivalence rules. Routing gives each queue at most one copy of a publish,
 * however many of its bindings match.
 */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "mem.h"
#include "route.h"

static bool
is(amqp_bytes_t b, const char *s)
{
    return b.len == strlen(s) && memcmp(b.bytes, s, b.len) == 0;
}

static const char *
type_name(mem_xtype t)
{
    return t == MEM_TOPIC ? "topic" : t == MEM_FANOUT ? "fanout" : "direct";
}

mem_exchange_t *
mem_exchange_find(mem_broker_t *b, amqp_bytes_t name)
{
    for (mem_exchange_t *x = b->exchanges; x != NULL; x = x->next)
        if (is(name, x->name))
            return x;
    return NULL;
}

static int
parse_type(amqp_bytes_t t, mem_xtype *ret, mem_err_t *e)
{
    if (is(t, "direct"))
        *ret = MEM_DIRECT;
    else if (is(t, "fanout"))
        *ret = MEM_FANOUT;
    else if (is(t, "topic"))
        *ret = MEM_TOPIC;
    else
        return mem_fail(e, MEM_COMMAND_INVALID,
                        "COMMAND_INVALID - invalid exchange type '%.*s' (memory:// has direct, "
                        "fanout and topic)",
                        (int) t.len, (const char *) t.bytes);
    return 0;
}

static int
inequivalent(mem_err_t *e, const mem_exchange_t *x, const char *arg, const char *got,
             const char *now)
{
    return mem_fail(e, MEM_PRECONDITION_FAILED,
                    "PRECONDITION_FAILED - inequivalent arg '%s' for exchange '%s' in vhost '/': "
                    "received '%s' but current is '%s'",
                    arg, x->name, got, now);
}

static const char *
yn(bool v)
{
    return v ? "true" : "false";
}

static int
equivalent(const mem_exchange_t *x, const amqp_exchange_declare_t *req, mem_xtype t, mem_err_t *e)
{
    if (t != x->type)
        return inequivalent(e, x, "type", type_name(t), type_name(x->type));
    if ((bool) req->durable != x->durable)
        return inequivalent(e, x, "durable", yn(req->durable), yn(x->durable));
    if ((bool) req->auto_delete != x->auto_delete)
        return inequivalent(e, x, "auto_delete", yn(req->auto_delete), yn(x->auto_delete));
    if ((bool) req->internal != x->internal)
        return inequivalent(e, x, "internal", yn(req->internal), yn(x->internal));
    return 0;
}

int
mem_exchange_declare(mem_broker_t *b, const amqp_exchange_declare_t *req, mem_err_t *e)
{
    mem_exchange_t *x = mem_exchange_find(b, req->exchange);
    if (x == NULL && req->passive)
        return mem_fail(e, MEM_NOT_FOUND, "NOT_FOUND - no exchange '%.*s' in vhost '/'",
                        (int) req->exchange.len, (const char *) req->exchange.bytes);
    if (x != NULL && req->passive)
        return 0;
    mem_xtype t = MEM_DIRECT; /* set by parse_type; -O3 cannot see it */
    if (parse_type(req->type, &t, e) != 0)
        return -1;
    if (x != NULL)
        return equivalent(x, req, t, e);
    char *name = strndup(req->exchange.bytes, req->exchange.len);
    x = calloc(1, sizeof *x);
    if (name == NULL || x == NULL) {
        free(name);
        free(x);
        return mem_fail(e, MEM_INTERNAL_ERROR, "INTERNAL_ERROR - out of memory");
    }
    *x = (mem_exchange_t){.next = b->exchanges,
                          .name = name,
                          .type = t,
                          .durable = req->durable,
                          .auto_delete = req->auto_delete,
                          .internal = req->internal};
    b->exchanges = x;
    return 0;
}

static void
bindings_free(mem_exchange_t *x)
{
    while (x->bindings != NULL) {
        mem_binding_t *bd = x->bindings;
        x->bindings = bd->next;
        free(bd->key);
        free(bd);
    }
}

int
mem_exchange_delete(mem_broker_t *b, const amqp_exchange_delete_t *req, mem_err_t *e)
{
    for (mem_exchange_t **p = &b->exchanges; *p != NULL; p = &(*p)->next) {
        mem_exchange_t *x = *p;
        if (!is(req->exchange, x->name))
            continue;
        if (req->if_unused && x->bindings != NULL)
            return mem_fail(e, MEM_PRECONDITION_FAILED,
                            "PRECONDITION_FAILED - exchange '%s' in vhost '/' in use", x->name);
        *p = x->next;
        bindings_free(x);
        free(x->name);
        free(x);
        return 0;
    }
    return 0; /* RabbitMQ 3.10: deleting what does not exist is fine */
}

int
mem_bind(mem_exchange_t *x, mem_queue_t *q, amqp_bytes_t key)
{
    for (mem_binding_t *bd = x->bindings; bd != NULL; bd = bd->next)
        if (bd->q == q && is(key, bd->key))
            return MM_OK;
    mem_binding_t *bd = calloc(1, sizeof *bd);
    if (bd == NULL || (bd->key = strndup(key.bytes, key.len)) == NULL) {
        free(bd);
        return MM_ENOMEM;
    }
    bd->q = q;
    bd->next = x->bindings;
    x->bindings = bd;
    return MM_OK;
}

void
mem_unbind(mem_exchange_t *x, mem_queue_t *q, amqp_bytes_t key)
{
    for (mem_binding_t **p = &x->bindings; *p != NULL; p = &(*p)->next) {
        mem_binding_t *bd = *p;
        if (bd->q == q && is(key, bd->key)) {
            *p = bd->next;
            free(bd->key);
            free(bd);
            return;
        }
    }
}

void
mem_unbind_queue(mem_broker_t *b, mem_queue_t *q)
{
    for (mem_exchange_t *x = b->exchanges; x != NULL; x = x->next)
        for (mem_binding_t **p = &x->bindings; *p != NULL;) {
            mem_binding_t *bd = *p;
            if (bd->q != q) {
                p = &bd->next;
                continue;
            }
            *p = bd->next;
            free(bd->key);
            free(bd);
        }
}

static bool
matches(const mem_exchange_t *x, const mem_binding_t *bd, const char *key)
{
    if (x->type == MEM_FANOUT)
        return true;
    if (x->type == MEM_DIRECT)
        return strcmp(bd->key, key) == 0;
    return mmi_topic_match(bd->key, key);
}

int
mem_route(mem_broker_t *b, mem_exchange_t *x, amqp_bytes_t key,
          void (*fn)(mem_queue_t *q, void *ud), void *ud)
{
    if (x->name[0] == '\0') { /* the default exchange: the queue of that name */
        mem_queue_t *q = mem_queue_find(b, key);
        if (q != NULL)
            fn(q, ud);
        return q != NULL;
    }
    char k[256]; /* a routing key is a short string: at most 255 bytes */
    snprintf(k, sizeof k, "%.*s", (int) key.len, (const char *) key.bytes);
    uint64_t mark = ++b->serial;
    int n = 0;
    for (mem_binding_t *bd = x->bindings; bd != NULL; bd = bd->next) {
        if (bd->q->mark == mark || !matches(x, bd, k))
            continue;
        bd->q->mark = mark;
        fn(bd->q, ud);
        n++;
    }
    return n;
}

void
mem_exchanges_free(mem_broker_t *b)
{
    while (b->exchanges != NULL) {
        mem_exchange_t *x = b->exchanges;
        b->exchanges = x->next;
        bindings_free(x);
        free(x->name);
        free(x);
    }
}
