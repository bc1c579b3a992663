/*
 * Routes: registration (mm_handle, mm_listen), declaration on the broker
 * (queue, binding, prefetch, consumer on the route's own channel), stop and
 * queue figures. Declared now when connected, else when mm_connect()
 * succeeds. Queue names and arguments follow PROTOCOL.md section 1 exactly,
 * since other instances (and other languages) declare the same queues.
 */
#include <event2/event.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "publish.h"
#include "route.h"

#define REQUEST_QUEUE_EXPIRES 86400000 /* x-expires of request queues: 24 h */

static void
on_content(mm_t *mm, const mmi_content_t *c, void *ud)
{
    mmi_dispatch(mm, ud, c);
}

static int route_declare(mm_t *mm, struct mm_route *r);
static void restore_later(mm_t *mm, struct mm_route *r);

/* Declare a route whose channel was lost; on failure try again later. */
static void
restore(mm_t *mm, struct mm_route *r, const char *why)
{
    if (mm->state != MMI_CONNECTED || r->ch != 0)
        return;
    int rc = route_declare(mm, r);
    if (rc == MM_OK) {
        r->retries = 0;
        if (why != NULL)
            mmi_msg_event(mm, MM_EV_ERROR, MM_ECHANNEL, r->name, NULL,
                          "%s: route '%s' declared again, consuming", why, r->name);
        return;
    }
    mmi_msg_event(mm, MM_EV_ERROR, rc, r->name, NULL, "restoring route '%s' failed (%s): %s",
                  r->name, why ? why : "after reconnecting", mm->last_error);
    restore_later(mm, r);
}

static void
on_retry(evutil_socket_t fd, short what, void *arg)
{
    struct mm_route *r = arg;
    mm_t *mm = r->mm;
    (void) fd;
    (void) what;
    mmi_enter(mm);
    restore(mm, r, "retry");
    mmi_leave(mm);
}

/* Backoff 100 ms doubling to 5 s, so that a route the broker keeps refusing
 * does not spin; the first retry comes soon, a consumer is never left absent. */
static void
restore_later(mm_t *mm, struct mm_route *r)
{
    if (r->retry == NULL && (r->retry = evtimer_new(mm->base, on_retry, r)) == NULL)
        return;
    unsigned n = r->retries < 6 ? r->retries : 6;
    int64_t ms = 100 << n;
    if (ms > 5000)
        ms = 5000;
    r->retries++;
    struct timeval tv = {.tv_sec = ms / 1000, .tv_usec = (ms % 1000) * 1000};
    event_add(r->retry, &tv);
}

/* The broker cancelled our consumer (its queue was deleted from outside, or a
 * node failed): declare the route again at once, so that it does not stay
 * silently dead while the connection looks healthy. Unsettled deliveries of
 * the old channel go back to the queue when it closes. */
static void
on_method(mm_t *mm, uint16_t ch, const amqp_method_t *m, void *ud)
{
    struct mm_route *r = ud;
    if (m->id != AMQP_BASIC_CANCEL_METHOD)
        return;
    r->ctag[0] = '\0';
    mmi_chan_close(mm, ch);
    r->ch = 0;
    char why[MMI_ERRBUF];
    snprintf(why, sizeof why, "the broker cancelled the consumer of '%s' (queue %s deleted?)",
             r->name, r->queue);
    restore(mm, r, why);
}

/* A channel the broker closed (e.g. the delivery acknowledgement timeout, or
 * RESOURCE_LOCKED) is restored with backoff; a lost connection is the
 * reconnect's business. */
static void
on_closed(mm_t *mm, uint16_t ch, int code, const char *text, void *ud)
{
    struct mm_route *r = ud;
    (void) ch;
    (void) text;
    r->ch = 0;
    r->ctag[0] = '\0';
    if (code == MM_ECHANNEL && r->linked && mm->state == MMI_CONNECTED)
        restore_later(mm, r);
}

static const mmi_chan_ops_t ROUTE_OPS = {
    .on_content = on_content, .on_method = on_method, .on_closed = on_closed};

static int
declare_queue(mm_t *mm, struct mm_route *r)
{
    if (r->type == MMI_ROUTE_HANDLE) {
        amqp_table_entry_t e = {
            .key = amqp_cstring_bytes("x-expires"),
            .value = {.kind = AMQP_FIELD_KIND_I32, .value.i32 = REQUEST_QUEUE_EXPIRES}};
        amqp_table_t args = {1, &e};
        return mmi_queue_declare(mm, r->ch, r->queue, MMI_Q_DURABLE, &args, NULL);
    }
    if (r->group != NULL)
        return mmi_group_declare(mm, r);
    int rc = mmi_exchange_declare(mm, r->ch, MMI_PUBSUB, "topic", true);
    if (rc == MM_OK)
        rc = mmi_queue_declare(mm, r->ch, r->queue, MMI_Q_DURABLE | MMI_Q_EXCLUSIVE, NULL, NULL);
    if (rc == MM_OK)
        rc = mmi_queue_bind(mm, r->ch, r->queue, MMI_PUBSUB, r->key);
    return rc;
}

/* An exclusive listener queue of a lost connection may still exist on the
 * broker (until it notices the loss): a new name avoids RESOURCE_LOCKED. */
static int
fresh_listen_queue(mm_t *mm, struct mm_route *r)
{
    char uuid[37], name[MMI_QUEUE_MAX];
    mmi_make_id(mm, uuid);
    snprintf(name, sizeof name, "q.pubSub.%s.%s", mm->service, uuid);
    char *q = strdup(name);
    if (q == NULL)
        return mmi_fail(mm, MM_ENOMEM, "out of memory");
    free(r->queue);
    r->queue = q;
    return MM_OK;
}

static int
route_declare(mm_t *mm, struct mm_route *r)
{
    bool own_queue = r->type == MMI_ROUTE_LISTEN && r->group == NULL; /* exclusive */
    if (own_queue && r->linked && fresh_listen_queue(mm, r) != MM_OK)
        return MM_ENOMEM;
    int rc = mmi_chan_open(mm, &ROUTE_OPS, r, &r->ch);
    if (rc == MM_OK)
        rc = declare_queue(mm, r);
    if (rc == MM_OK && !r->no_ack)
        rc = mmi_basic_qos(mm, r->ch, mmi_route_prefetch(r) ? mmi_route_prefetch(r) : 1);
    r->bytes.in_flight = 0; /* what the old channel held goes back to the queue */
    r->bytes.paused = r->bytes_paused = false;
    if (rc == MM_OK && !r->qos_paused)
        rc = mmi_basic_consume(mm, r->ch, r->queue, r->no_ack, own_queue, r->ctag, sizeof r->ctag);
    if (rc != MM_OK && r->ch != 0) {
        char why[MMI_ERRBUF];
        snprintf(why, sizeof why, "%s", mm->last_error);
        mmi_chan_close(mm, r->ch);
        r->ch = 0;
        mmi_fail(mm, rc, "route '%s': %s", r->name, why);
    }
    return rc;
}

int
mmi_routes_declare_all(mm_t *mm)
{
    for (struct mm_route *r = mm->routes; r != NULL; r = r->next) {
        int rc = route_declare(mm, r);
        if (rc != MM_OK)
            return rc;
    }
    return MM_OK;
}

void
mmi_routes_restore(mm_t *mm)
{
    for (struct mm_route *r = mm->routes; r != NULL && mm->state == MMI_CONNECTED; r = r->next) {
        r->retries = 0;
        if (r->retry != NULL)
            event_del(r->retry);
        restore(mm, r, NULL);
    }
}

/* No new deliveries: the consumers go, the channels stay for the settles. */
void
mmi_routes_cancel(mm_t *mm)
{
    for (struct mm_route *r = mm->routes; r != NULL && mm->state == MMI_CONNECTED; r = r->next) {
        if (r->retry != NULL)
            event_del(r->retry);
        if (r->ch != 0 && r->ctag[0] != '\0' && mmi_basic_cancel(mm, r->ch, r->ctag) == MM_OK)
            r->ctag[0] = '\0';
    }
}

static void
route_free(struct mm_route *r)
{
    if (r->retry != NULL)
        event_free(r->retry);
    free(r->name);
    free(r->target);
    free(r->queue);
    free(r->key);
    free(r->group);
    free(r);
}

void
mmi_routes_free(mm_t *mm)
{
    while (mm->routes != NULL) {
        struct mm_route *r = mm->routes;
        mm->routes = r->next;
        route_free(r);
    }
}

static void
unlink_route(mm_t *mm, struct mm_route *r)
{
    for (struct mm_route **p = &mm->routes; *p != NULL; p = &(*p)->next)
        if (*p == r) {
            *p = r->next;
            return;
        }
}

static bool
same_group(const char *a, const char *b)
{
    return (a == NULL && b == NULL) || (a != NULL && b != NULL && strcmp(a, b) == 0);
}

static struct mm_route *
find_route(mm_t *mm, mmi_route_type type, const char *target, const char *name, const char *group)
{
    for (struct mm_route *r = mm->routes; r != NULL; r = r->next)
        if (r->type == type && strcmp(r->name, name) == 0 && strcmp(r->target, target) == 0 &&
            same_group(r->group, group))
            return r;
    return NULL;
}

/* "<a><sep><b>" in a new string. */
static char *
join(const char *a, const char *sep, const char *b)
{
    size_t n = strlen(a) + strlen(sep) + strlen(b) + 1;
    char *s = malloc(n);
    if (s != NULL)
        snprintf(s, n, "%s%s%s", a, sep, b);
    return s;
}

static const char *
opt_group(const mm_route_opts_t *opts)
{
    if (opts == NULL || opts->size < offsetof(mm_route_opts_t, group) + sizeof(char *))
        return NULL;
    return opts->group;
}

static struct mm_route *
route_new(mm_t *mm, mmi_route_type type, const char *target, const char *name, const char *group)
{
    struct mm_route *r = calloc(1, sizeof *r);
    if (r == NULL)
        return NULL;
    char uuid[37];
    mmi_make_id(mm, uuid);
    *r = (struct mm_route){.mm = mm, .type = type, .name = strdup(name), .target = strdup(target)};
    char prefix[MMI_NAME_MAX + 16];
    if (type == MMI_ROUTE_HANDLE) {
        snprintf(prefix, sizeof prefix, "q.requests.%s", target);
        r->queue = join(prefix, ".", name);
    } else if (group != NULL) {
        char q[MMI_QUEUE_MAX];
        r->queue = strdup(mmi_group_queue(q, sizeof q, mm->service, group));
        r->group = strdup(group);
        r->key = join(target, ".", name);
    } else {
        snprintf(prefix, sizeof prefix, "q.pubSub.%s", mm->service);
        r->queue = join(prefix, ".", uuid);
        r->key = join(target, ".", name);
    }
    if (r->name == NULL || r->target == NULL || r->queue == NULL ||
        (type == MMI_ROUTE_LISTEN && r->key == NULL) || (group != NULL && r->group == NULL)) {
        route_free(r);
        return NULL;
    }
    return r;
}

static int
route_add(mm_t *mm, mmi_route_type type, const char *target, const char *name, mm_msg_fn fn,
          void *ud, const mm_route_opts_t *opts, mm_route_t **ret)
{
    if (fn == NULL)
        return mmi_fail(mm, MM_EINVAL, "no handler given for route '%s'", name);
    if (opts != NULL && opts->size < offsetof(mm_route_opts_t, prefetch) + sizeof opts->prefetch)
        return mmi_fail(mm, MM_EINVAL, "route options not set up with MM_ROUTE_OPTS_INIT");
    const char *group = type == MMI_ROUTE_LISTEN ? opt_group(opts) : NULL;
    if (find_route(mm, type, target, name, group) != NULL)
        return mmi_fail(mm, MM_ESTATE, "route '%s.%s' is already %s by this instance", target, name,
                        type == MMI_ROUTE_HANDLE ? "handled" : "listened to");
    struct mm_route *r = route_new(mm, type, target, name, group);
    if (r == NULL)
        return mmi_fail(mm, MM_ENOMEM, "out of memory");
    r->fn = fn;
    r->ud = ud;
    r->prefetch = opts && opts->prefetch ? opts->prefetch : MMI_DEFAULT_PREFETCH;
    if (opts != NULL && opts->size >= offsetof(mm_route_opts_t, max_parallel) + sizeof(uint16_t))
        r->max_parallel = opts->max_parallel;
    if (opts != NULL &&
        opts->size >= offsetof(mm_route_opts_t, max_parallel_bytes) + sizeof(uint64_t))
        r->bytes.budget = opts->max_parallel_bytes;
    if (r->max_parallel != 0)
        r->prefetch = r->max_parallel;
    else if (mm->fixed_prefetch != 0) {
        r->level = mm->fixed_prefetch;
        r->qos_set = true;
    }
    r->no_ack = type == MMI_ROUTE_LISTEN && strncmp(target, "internal.", 9) == 0;
    if (mm->state == MMI_CONNECTED) {
        int rc = route_declare(mm, r);
        if (rc != MM_OK) {
            route_free(r);
            return rc;
        }
    }
    r->next = mm->routes;
    mm->routes = r;
    r->linked = true;
    if (ret != NULL)
        *ret = r;
    return MM_OK;
}

int
mm_handle(mm_t *mm, const char *route, mm_msg_fn handler, void *ud, const mm_route_opts_t *opts,
          mm_route_t **ret_route)
{
    if (mm == NULL)
        return MM_EINVAL;
    int rc = mmi_check_usable(mm);
    if (rc == MM_OK)
        rc = mmi_check_name(mm, "route", route, 0);
    if (rc != MM_OK)
        return rc;
    return route_add(mm, MMI_ROUTE_HANDLE, mm->service, route, handler, ud, opts, ret_route);
}

int
mm_listen(mm_t *mm, const char *target, const char *route, mm_msg_fn handler, void *ud,
          const mm_route_opts_t *opts, mm_route_t **ret_route)
{
    if (mm == NULL)
        return MM_EINVAL;
    int rc = mmi_check_usable(mm);
    if (rc == MM_OK && target != NULL)
        rc = mmi_check_name(mm, "target", target, MMI_NAME_INTERNAL);
    if (rc == MM_OK)
        rc = mmi_check_name(mm, "route", route, MMI_NAME_WILDCARD);
    if (rc == MM_OK && opt_group(opts) != NULL)
        rc = mmi_check_name(mm, "group", opt_group(opts), 0);
    if (rc != MM_OK)
        return rc;
    return route_add(mm, MMI_ROUTE_LISTEN, target ? target : mm->service, route, handler, ud, opts,
                     ret_route);
}

/* ---- stop and figures ---- */

static const mmi_chan_ops_t PROBE_OPS = {.quiet = true};

/* Queue figures through a throwaway channel: a missing queue closes it, not the route's. */
int
mmi_queue_stat(mm_t *mm, const char *queue, mm_stat_t *ret)
{
    if (mm->state != MMI_CONNECTED)
        return mmi_fail(mm, MM_ENOTCONN, "not connected");
    uint16_t ch = 0;
    int rc = mmi_chan_open(mm, &PROBE_OPS, NULL, &ch);
    if (rc != MM_OK)
        return rc;
    uint32_t count = 0, consumers = 0;
    mm->last_close_code = 0;
    rc = mmi_queue_declare_full(mm, ch, queue, MMI_Q_PASSIVE, NULL, &count, &consumers);
    if (rc == MM_ECHANNEL && mm->last_close_code == 404)
        return mmi_fail(mm, MM_ENOENT, "queue %s does not exist", queue);
    if (mmi_chan_is_open(mm, ch))
        mmi_chan_close(mm, ch);
    if (rc == MM_OK && ret != NULL)
        *ret = (mm_stat_t){.messages = count, .consumers = consumers};
    return rc;
}

/* Delete a request queue only when empty and unused: another instance may consume it. */
static void
delete_if_idle(mm_t *mm, struct mm_route *r)
{
    uint16_t ch = 0;
    if (mmi_chan_open(mm, &PROBE_OPS, NULL, &ch) != MM_OK)
        return;
    bool listen = r->type == MMI_ROUTE_LISTEN; /* our own exclusive queue */
    int rc = mmi_queue_delete_if(mm, ch, r->queue, !listen, !listen);
    if (rc != MM_OK)
        mmi_log(mm, MM_LOG_DEBUG, "queue %s kept: %s", r->queue, mm->last_error);
    if (mmi_chan_is_open(mm, ch))
        mmi_chan_close(mm, ch);
}

static int
route_undeclare(mm_t *mm, struct mm_route *r)
{
    int rc = MM_OK;
    if (r->ch != 0 && r->ctag[0] != '\0')
        rc = mmi_basic_cancel(mm, r->ch, r->ctag);
    /* A group's queue and bindings are the group's: other instances use them,
     * and events keep arriving for the group while it is away. */
    if (rc == MM_OK && r->ch != 0 && r->type == MMI_ROUTE_LISTEN && r->group == NULL)
        rc = mmi_queue_unbind(mm, r->ch, r->queue, MMI_PUBSUB, r->key);
    if (r->ch != 0 && mmi_chan_is_open(mm, r->ch))
        mmi_chan_close(mm, r->ch); /* unsettled deliveries go back to the queue */
    r->ch = 0;
    if (mm->state == MMI_CONNECTED && r->group == NULL)
        delete_if_idle(mm, r);
    return rc;
}

int
mm_route_stop(mm_route_t *r)
{
    if (r == NULL)
        return MM_EINVAL;
    mm_t *mm = r->mm;
    unlink_route(mm, r);
    r->linked = false;
    int rc = mm->state == MMI_CONNECTED ? route_undeclare(mm, r) : MM_OK;
    route_free(r);
    return rc;
}

int
mm_route_stat(mm_route_t *r, mm_stat_t *ret_stat)
{
    if (r == NULL || ret_stat == NULL)
        return MM_EINVAL;
    return mmi_queue_stat(r->mm, r->queue, ret_stat);
}

int
mm_queue_stat(mm_t *mm, const char *service, const char *route, mm_stat_t *ret_stat)
{
    if (mm == NULL || ret_stat == NULL)
        return MM_EINVAL;
    int rc = mmi_check_dest(mm, "service name", service, 0, route);
    if (rc != MM_OK)
        return rc;
    char queue[MMI_QUEUE_MAX];
    mmi_request_queue(queue, sizeof queue, service, route);
    return mmi_queue_stat(mm, queue, ret_stat);
}
