/*
 * memory:// messages: a publish copied once into one allocation (exchange,
 * routing key, properties encoded as on the wire, body), shared by reference
 * among the queues it was routed to, so that a sender may free its buffers
 * as soon as the publish returns. Properties are kept encoded (as the
 * outbox keeps them) and decoded again for each delivery (lib/mem/inbox.c).
 */
#include <stdlib.h>
#include <string.h>

#include "mem.h"

/* `props` encoded; *heap is set when the stack buffer was too small. */
static int
encode(const amqp_basic_properties_t *props, amqp_bytes_t stack, amqp_bytes_t *out, void **heap)
{
    amqp_basic_properties_t none = {0};
    void *p = (void *) (props != NULL ? props : &none); /* the encoder only reads it */
    *heap = NULL;
    int n = amqp_encode_properties(AMQP_BASIC_CLASS, p, stack);
    for (size_t cap = stack.len * 2; n < 0 && cap <= (64u << 20); cap *= 2) {
        free(*heap);
        if ((*heap = malloc(cap)) == NULL)
            return MM_ENOMEM;
        stack = (amqp_bytes_t){cap, *heap};
        n = amqp_encode_properties(AMQP_BASIC_CLASS, p, stack);
    }
    if (n < 0)
        return MM_EINVAL;
    *out = (amqp_bytes_t){(size_t) n, stack.bytes};
    return MM_OK;
}

/* The expiration property (milliseconds as a decimal string); -1: none or not a number. */
static int64_t
ttl_of(const amqp_basic_properties_t *p)
{
    if (p == NULL || !(p->_flags & AMQP_BASIC_EXPIRATION_FLAG) || p->expiration.len == 0 ||
        p->expiration.len > 18)
        return -1;
    int64_t v = 0;
    const char *s = p->expiration.bytes;
    for (size_t i = 0; i < p->expiration.len; i++) {
        if (s[i] < '0' || s[i] > '9')
            return -1;
        v = v * 10 + (s[i] - '0');
    }
    return v;
}

static int64_t
ttl_of_encoded(amqp_bytes_t encoded)
{
    amqp_pool_t pool;
    void *decoded = NULL;
    init_amqp_pool(&pool, 512);
    int64_t ttl =
        amqp_decode_properties(AMQP_BASIC_CLASS, &pool, encoded, &decoded) == AMQP_STATUS_OK
            ? ttl_of(decoded)
            : -1;
    empty_amqp_pool(&pool);
    return ttl;
}

static void
put(char **at, amqp_bytes_t *dst, amqp_bytes_t src)
{
    if (src.len > 0)
        memcpy(*at, src.bytes, src.len);
    *dst = (amqp_bytes_t){src.len, *at};
    *at += src.len;
}

mem_msg_t *
mem_msg_new(amqp_bytes_t exchange, amqp_bytes_t routing_key, const amqp_basic_properties_t *props,
            const amqp_bytes_t *encoded, amqp_bytes_t body)
{
    uint8_t stack[1024];
    amqp_bytes_t enc = encoded != NULL ? *encoded : (amqp_bytes_t){0, NULL};
    void *heap = NULL;
    if (encoded == NULL && encode(props, (amqp_bytes_t){sizeof stack, stack}, &enc, &heap) != MM_OK)
        return NULL;
    mem_msg_t *m = malloc(sizeof *m + exchange.len + routing_key.len + enc.len + body.len);
    if (m != NULL) {
        *m = (mem_msg_t){.refs = 1, .wall_ms = mmi_wall_ms()};
        m->ttl_ms = encoded != NULL ? ttl_of_encoded(enc) : ttl_of(props);
        char *at = m->data;
        put(&at, &m->exchange, exchange);
        put(&at, &m->routing_key, routing_key);
        put(&at, &m->props, enc);
        put(&at, &m->body, body);
    }
    free(heap);
    return m;
}

mem_msg_t *
mem_msg_ref(mem_msg_t *m)
{
    m->refs++;
    return m;
}

void
mem_msg_unref(mem_msg_t *m)
{
    if (m != NULL && --m->refs == 0)
        free(m);
}

mem_entry_t *
mem_entry_new(mem_msg_t *msg)
{
    mem_entry_t *e = calloc(1, sizeof *e);
    if (e != NULL) {
        e->msg = mem_msg_ref(msg);
        e->offset = -1;
    }
    return e;
}

void
mem_entry_free(mem_entry_t *e)
{
    if (e == NULL)
        return;
    mem_msg_unref(e->msg);
    free(e);
}
