/*
 * memory:// brokers by name, and one broker's queue table and dispatch run.
 *
 * The registry is the library's one piece of process-wide mutable state:
 * instances meet through it, by name, which is the point of memory://. An
 * instance holds its broker from its first memory:// connect until mm_free
 * (or a connect to another name), so that a broker and its durable queues
 * outlive a reconnect of one instance and go when the last instance does.
 * The lock covers the registry only; a broker itself belongs to the thread
 * of the instances that use it (lib/mem/mem.h).
 *
 * Every change that may let a message move (a publish, an ack, a consumer
 * or a requeue) marks its queue; mem_run then dispatches the marked queues
 * once the change is complete, and deletes an auto-delete queue left
 * without consumers. So dispatch never runs inside a half-done change.
 */
#include <pthread.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "mem.h"

static pthread_mutex_t registry_lock = PTHREAD_MUTEX_INITIALIZER;
static mem_broker_t *registry;

int
mem_fail(mem_err_t *e, uint16_t code, const char *fmt, ...)
{
    va_list ap;
    va_start(ap, fmt);
    e->code = code;
    vsnprintf(e->text, sizeof e->text, fmt, ap);
    va_end(ap);
    return -1;
}

static uint32_t
hash(const void *p, size_t n)
{
    uint32_t h = 2166136261u;
    for (size_t i = 0; i < n; i++)
        h = (h ^ ((const unsigned char *) p)[i]) * 16777619u;
    return h % MEM_QUEUE_BUCKETS;
}

mem_queue_t *
mem_queue_find(mem_broker_t *b, amqp_bytes_t name)
{
    for (mem_queue_t *q = b->queues[hash(name.bytes, name.len)]; q != NULL; q = q->hnext)
        if (strlen(q->name) == name.len && memcmp(q->name, name.bytes, name.len) == 0)
            return q;
    return NULL;
}

void
mem_queue_link(mem_broker_t *b, mem_queue_t *q)
{
    mem_queue_t **head = &b->queues[hash(q->name, strlen(q->name))];
    q->hnext = *head;
    *head = q;
}

void
mem_queue_unlink(mem_broker_t *b, mem_queue_t *q)
{
    for (mem_queue_t **p = &b->queues[hash(q->name, strlen(q->name))]; *p != NULL; p = &(*p)->hnext)
        if (*p == q) {
            *p = q->hnext;
            break;
        }
    if (!q->pending)
        return;
    for (mem_queue_t **p = &b->pending; *p != NULL; p = &(*p)->pnext)
        if (*p == q) {
            *p = q->pnext;
            break;
        }
    q->pending = false;
}

void
mem_touch(mem_queue_t *q)
{
    if (q->pending)
        return;
    q->pending = true;
    q->pnext = q->b->pending;
    q->b->pending = q;
}

void
mem_run(mem_broker_t *b)
{
    while (b->pending != NULL) {
        mem_queue_t *q = b->pending;
        b->pending = q->pnext;
        q->pending = false;
        if (q->auto_delete && q->had_consumer && q->consumers == NULL)
            mem_queue_delete(q);
        else
            mem_dispatch(q);
    }
}

/* The default exchange ("", routing by queue name) and the amq.* ones, as on
 * a fresh RabbitMQ vhost; clients may not declare these names (methods.c). */
static int
predeclare(mem_broker_t *b)
{
    static const struct {
        const char *name, *type;
    } fixed[] = {
        {"", "direct"}, {"amq.direct", "direct"}, {"amq.fanout", "fanout"}, {"amq.topic", "topic"}};
    for (size_t i = 0; i < sizeof fixed / sizeof fixed[0]; i++) {
        amqp_exchange_declare_t req = {.exchange = amqp_cstring_bytes(fixed[i].name),
                                       .type = amqp_cstring_bytes(fixed[i].type),
                                       .durable = true};
        mem_err_t e = {0};
        if (mem_exchange_declare(b, &req, &e) != 0)
            return MM_ENOMEM;
    }
    return MM_OK;
}

static void
broker_free(mem_broker_t *b)
{
    for (int i = 0; i < MEM_QUEUE_BUCKETS; i++)
        while (b->queues[i] != NULL)
            mem_queue_delete(b->queues[i]);
    mem_exchanges_free(b);
    free(b->name);
    free(b);
}

static mem_broker_t *
broker_new(const char *name)
{
    mem_broker_t *b = calloc(1, sizeof *b);
    if (b == NULL)
        return NULL;
    b->name = strdup(name);
    if (b->name == NULL || predeclare(b) != MM_OK) {
        broker_free(b);
        return NULL;
    }
    return b;
}

mem_broker_t *
mem_broker_get(const char *name)
{
    pthread_mutex_lock(&registry_lock);
    mem_broker_t *b = registry;
    while (b != NULL && strcmp(b->name, name) != 0)
        b = b->next;
    if (b == NULL && (b = broker_new(name)) != NULL) {
        b->next = registry;
        registry = b;
    }
    if (b != NULL)
        b->refs++;
    pthread_mutex_unlock(&registry_lock);
    return b;
}

void
mem_broker_put(mem_broker_t *b)
{
    pthread_mutex_lock(&registry_lock);
    bool last = --b->refs == 0;
    if (last)
        for (mem_broker_t **p = &registry; *p != NULL; p = &(*p)->next)
            if (*p == b) {
                *p = b->next;
                break;
            }
    pthread_mutex_unlock(&registry_lock);
    if (last)
        broker_free(b);
}

void
mmi_mem_release(mm_t *mm)
{
    if (mm->mem_broker == NULL)
        return;
    mem_broker_put(mm->mem_broker);
    mm->mem_broker = NULL;
}
