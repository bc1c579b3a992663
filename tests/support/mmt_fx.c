/* Integration test fixtures: see mmt_fx.h. */
#include "mmt_fx.h"

#include <arpa/inet.h>
#include <event2/event.h>
#include <netinet/in.h>
#include <stdio.h>
#include <string.h>
#include <sys/socket.h>

#include "internal.h"
#include "mmt.h"

struct event_base *
mmt_base_new(void)
{
    struct event_base *base = event_base_new();
    ck_assert_ptr_nonnull(base);
    return base;
}

void
mmt_base_free(struct event_base *base)
{
    ck_assert_int_eq(event_base_get_num_events(base, EVENT_BASE_COUNT_ADDED), 0);
    event_base_free(base);
}

void
mmt_on_event(mm_t *mm, const mm_event_t *ev, void *log)
{
    struct mmt_evlog *l = log;
    int t = (int) ev->type;
    (void) mm;
    l->n++;
    if (t <= 0 || t >= MMT_EV_TYPES)
        return;
    l->seen[t] = true;
    l->count[t]++;
    l->code[t] = ev->code;
    snprintf(l->text[t], sizeof l->text[t], "%s", ev->text);
    snprintf(l->route[t], sizeof l->route[t], "%s", ev->route ? ev->route : "");
    snprintf(l->request_id[t], sizeof l->request_id[t], "%s", ev->request_id ? ev->request_id : "");
}

mm_t *
mmt_instance(struct event_base *base, const char *service, const mm_opts_t *opts,
             struct mmt_evlog *log)
{
    mm_opts_t o = MM_OPTS_INIT;
    if (opts != NULL)
        o = *opts;
    o.base = base;
    if (log != NULL) {
        o.on_event = mmt_on_event;
        o.event_ud = log;
    }
    mm_t *mm = mm_new(service, &o);
    ck_assert_ptr_nonnull(mm);
    return mm;
}

mm_route_t *
mmt_handle(mm_t *mm, const char *route, mm_msg_fn fn, void *ud, uint16_t prefetch)
{
    mm_route_opts_t o = MM_ROUTE_OPTS_INIT;
    o.prefetch = prefetch;
    mm_route_t *r = NULL;
    ck_assert_msg(mm_handle(mm, route, fn, ud, prefetch ? &o : NULL, &r) == MM_OK, "%s",
                  mm_last_error(mm));
    return r;
}

void
mmt_connect(mm_t *mm)
{
    ck_assert_msg(mm_connect(mm, mmt_uri()) == MM_OK, "%s", mm_last_error(mm));
}

void
mmt_on_reply(mm_msg_t *msg, void *probe)
{
    struct mmt_probe *p = probe;
    p->calls++;
    if (!mm_msg_is_final(msg))
        return;
    p->status = mm_msg_status(msg);
    snprintf(p->code, sizeof p->code, "%s", mm_msg_error_code(msg));
    snprintf(p->text, sizeof p->text, "%s", mm_msg_error_text(msg));
    const msgpack_object *o = mm_msg_body(msg);
    p->str[0] = '\0';
    if (o->type == MSGPACK_OBJECT_STR)
        snprintf(p->str, sizeof p->str, "%.*s", (int) o->via.str.size, o->via.str.ptr);
    msgpack_sbuffer_destroy(&p->body); /* a second final answer is a bug tests catch by calls */
    msgpack_sbuffer_init(&p->body);
    size_t len = 0;
    const void *raw = mm_msg_body_raw(msg, &len);
    msgpack_sbuffer_write(&p->body, raw, len);
    mm_msg_unref(p->msg);
    p->msg = mm_msg_ref(msg);
    p->done = true;
}

void
mmt_probe_free(struct mmt_probe *p)
{
    msgpack_sbuffer_destroy(&p->body);
    msgpack_sbuffer_init(&p->body);
    p->msg = mm_msg_unref(p->msg);
}

const msgpack_object *
mmt_map_get(const msgpack_object *m, const char *key)
{
    if (m == NULL || m->type != MSGPACK_OBJECT_MAP)
        return NULL;
    for (uint32_t i = 0; i < m->via.map.size; i++) {
        const msgpack_object *k = &m->via.map.ptr[i].key;
        if (k->type == MSGPACK_OBJECT_STR && k->via.str.size == strlen(key) &&
            memcmp(k->via.str.ptr, key, k->via.str.size) == 0)
            return &m->via.map.ptr[i].val;
    }
    return NULL;
}

bool
mmt_is_str(const msgpack_object *o, const char *s)
{
    return o != NULL && o->type == MSGPACK_OBJECT_STR && o->via.str.size == strlen(s) &&
           memcmp(o->via.str.ptr, s, o->via.str.size) == 0;
}

int
mmt_local_port(mm_t *mm)
{
    struct sockaddr_in a;
    socklen_t len = sizeof a;
    ck_assert(mm_is_connected(mm));
    ck_assert_int_eq(getsockname(amqp_get_sockfd(mm->conn), (struct sockaddr *) &a, &len), 0);
    return ntohs(a.sin_port);
}
