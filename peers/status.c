/*
 * The status of a service (PROTOCOL.md 6, status request): a query listens
 * on internal.<service> peer.alive, emits peer.alive.req there, collects
 * the answers by id and ends when it has more than one and as many as the
 * largest knownPeers among them (or one that says it is alone), else after
 * max(6 x broker latency, 1000 ms). The listener (a "watch") is shared by
 * the queries and waits of one service and stopped when the last lets go;
 * our own service needs none, our peer.alive.# listener hears its answers.
 * A query always ends from its own timer event, never inside a listener or
 * the API call, so the temporary route is stopped outside its callbacks.
 */
#include <event2/event.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "peers_int.h"

struct mmi_query {
    struct mmi_query *next;
    struct mmi_peers *p;
    char service[MMI_NAME_MAX + 1];
    struct mmi_watch *watch; /* NULL: answers come through our own listener */
    struct event *timer;     /* the bound, or made active when complete */
    mmi_members_t answers;
    uint32_t known_max; /* the largest knownPeers heard */
    bool ending;
    int code;          /* MM_OK, or MM_ENOTCONN when the connection was lost */
    mmi_query_fn done; /* internal (wait.c), else: */
    mm_status_fn cb;   /* the user's */
    void *ud;
};

struct mmi_watch {
    struct mmi_watch *next;
    struct mmi_peers *p;
    mm_route_t *route; /* owned by mm */
    unsigned refs;
    char service[MMI_NAME_MAX + 1];
};

/* ---- watches ---- */

static void
on_watch(mm_msg_t *msg, void *ud)
{
    struct mmi_watch *w = ud;
    mmi_member_t r;
    if (mmi_alive_decode(w->p->mm, mm_msg_body(msg), w->service, &r)) {
        mmi_alive_extras(msg, &r);
        mmi_status_feed(w->p, w->service, &r);
    }
}

bool
mmi_status_needs_watch(const struct mmi_peers *p, const char *service)
{
    return p->listen == NULL || strcmp(service, p->mm->service) != 0;
}

struct mmi_watch *
mmi_watch_get(struct mmi_peers *p, const char *service, int *ret_rc)
{
    for (struct mmi_watch *w = p->watches; w != NULL; w = w->next)
        if (strcmp(w->service, service) == 0) {
            w->refs++;
            return w;
        }
    struct mmi_watch *w = calloc(1, sizeof *w);
    if (w == NULL) {
        *ret_rc = mmi_fail(p->mm, MM_ENOMEM, "out of memory");
        return NULL;
    }
    *w = (struct mmi_watch){.p = p, .refs = 1};
    snprintf(w->service, sizeof w->service, "%s", service);
    char target[MMI_TARGET_MAX];
    mmi_peers_target(target, service);
    *ret_rc = mm_listen(p->mm, target, "peer.alive", on_watch, w, NULL, &w->route);
    if (*ret_rc != MM_OK) {
        free(w);
        return NULL;
    }
    w->next = p->watches;
    p->watches = w;
    return w;
}

void
mmi_watch_put(struct mmi_peers *p, struct mmi_watch *w)
{
    if (w == NULL || --w->refs > 0)
        return;
    for (struct mmi_watch **at = &p->watches; *at != NULL; at = &(*at)->next)
        if (*at == w) {
            *at = w->next;
            break;
        }
    mm_t *mm = p->mm;
    int code = mm->last_code;
    char text[MMI_ERRBUF];
    memcpy(text, mm->last_error, sizeof text);
    if (mm_route_stop(w->route) != MM_OK)
        mmi_log(mm, MM_LOG_DEBUG, "peers: stopping the watch of %s: %s", w->service,
                mm->last_error);
    mm->last_code = code;
    memcpy(mm->last_error, text, sizeof text);
    free(w);
}

/* ---- queries ---- */

static void
query_unlink(struct mmi_query *q)
{
    for (struct mmi_query **at = &q->p->queries; *at != NULL; at = &(*at)->next)
        if (*at == q) {
            *at = q->next;
            return;
        }
}

static void
query_free(struct mmi_query *q)
{
    if (q->timer != NULL)
        event_free(q->timer);
    mmi_members_free(&q->answers);
    free(q);
}

static void
query_end(struct mmi_query *q)
{
    q->ending = true;
    event_del(q->timer);
    event_active(q->timer, EV_TIMEOUT, 1);
}

static void
on_query_timer(evutil_socket_t fd, short what, void *arg)
{
    struct mmi_query *q = arg;
    struct mmi_peers *p = q->p;
    mm_t *mm = p->mm;
    (void) fd;
    (void) what;
    mmi_enter(mm);
    query_unlink(q); /* whatever the callback does, it no longer sees this query */
    int code = q->code != MM_OK ? q->code : q->answers.n > 0 ? MM_OK : MM_ENOENT;
    if (q->done != NULL)
        q->done(mm, code, &q->answers, q->ud);
    else
        mmi_status_report(mm, q->service, code, &q->answers, q->cb, q->ud);
    struct mmi_watch *w = q->watch;
    query_free(q);
    if (mmi_alive(mm)) /* else mm_free() in the callback: destroy() takes the rest */
        mmi_watch_put(p, w);
    mmi_leave(mm);
}

/* More than one answer and as many as they say they know; or one alone. */
static bool
complete(const struct mmi_query *q)
{
    size_t n = q->answers.n;
    return (n > 1 && n >= q->known_max) || (n == 1 && q->known_max == 1);
}

void
mmi_status_feed(struct mmi_peers *p, const char *service, const mmi_member_t *r)
{
    for (struct mmi_query *q = p->queries; q != NULL; q = q->next) {
        if (q->ending || strcmp(q->service, service) != 0)
            continue;
        if (mmi_members_put(&q->answers, r) == NULL)
            continue;
        if (r->known_peers > q->known_max)
            q->known_max = r->known_peers;
        if (complete(q))
            query_end(q);
    }
}

static const char EMPTY_STR[] = "\xa0"; /* msgpack "": a status request's body */

int
mmi_query_start(struct mmi_peers *p, const char *service, mmi_query_fn done, void *ud,
                struct mmi_query **ret)
{
    mm_t *mm = p->mm;
    struct mmi_query *q = calloc(1, sizeof *q);
    if (q == NULL)
        return mmi_fail(mm, MM_ENOMEM, "out of memory");
    *q = (struct mmi_query){.p = p, .done = done, .ud = ud};
    snprintf(q->service, sizeof q->service, "%s", service);
    int rc = MM_OK;
    if ((q->timer = evtimer_new(mm->base, on_query_timer, q)) == NULL)
        rc = mmi_fail(mm, MM_ENOMEM, "out of memory");
    if (rc == MM_OK && mmi_status_needs_watch(p, service))
        q->watch = mmi_watch_get(p, service, &rc);
    char target[MMI_TARGET_MAX];
    mmi_peers_target(target, service);
    if (rc == MM_OK) /* after the watch: its binding exists before anyone answers */
        rc = mmi_peers_send(mm, target, "peer.alive.req", EMPTY_STR, 1);
    if (rc != MM_OK) {
        mmi_watch_put(p, q->watch);
        query_free(q);
        return rc;
    }
    uint64_t ms = mmi_latency_wait_ms(mm);
    struct timeval tv = {.tv_sec = (time_t) (ms / 1000), .tv_usec = (long) (ms % 1000) * 1000};
    event_add(q->timer, &tv);
    q->next = p->queries;
    p->queries = q;
    if (ret != NULL)
        *ret = q;
    return MM_OK;
}

void
mmi_query_cancel(struct mmi_query *q)
{
    query_unlink(q);
    if (mmi_alive(q->p->mm))
        mmi_watch_put(q->p, q->watch);
    query_free(q);
}

void
mmi_status_report(mm_t *mm, const char *service, int code, const mmi_members_t *m, mm_status_fn cb,
                  void *ud)
{
    mm_member_t *v = m->n > 0 ? calloc(m->n, sizeof *v) : NULL;
    mm_status_t st = {.code = code, .service = service, .count = v ? m->n : 0, .members = v};
    if (m->n > 0 && v == NULL)
        st.code = MM_ENOMEM;
    for (size_t i = 0; i < st.count; i++) {
        const mmi_member_t *r = &m->v[i];
        v[i] = (mm_member_t){.id = r->id,
                             .ready = r->ready,
                             .leader = r->master,
                             .leader_id = r->leader_id[0] ? r->leader_id : NULL,
                             .uptime_ms = r->uptime_ms,
                             .rss = r->rss,
                             .known_peers = r->known_peers,
                             .qos = r->qos,
                             .qos_level = r->qos_level,
                             .qos_pressure = r->qos_pressure};
        st.has_ready |= r->ready;
        if (r->master && st.leader_id == NULL) {
            st.has_leader = 1;
            st.leader_id = r->id;
        }
    }
    cb(mm, &st, ud);
    free(v);
}

int
mm_get_status(mm_t *mm, const char *service, mm_status_fn cb, void *ud)
{
    if (mm == NULL)
        return MM_EINVAL;
    int rc = mmi_check_usable(mm);
    if (rc != MM_OK)
        return rc;
    if (cb == NULL)
        return mmi_fail(mm, MM_EINVAL, "mm_get_status: no callback");
    const char *svc = service != NULL ? service : mm->service;
    if ((rc = mmi_check_name(mm, "service name", svc, 0)) != MM_OK)
        return rc;
    if (mm->state != MMI_CONNECTED)
        return mmi_fail(mm, MM_ENOTCONN, "not connected");
    struct mmi_peers *p = mmi_peers_get(mm);
    if (p == NULL)
        return mmi_fail(mm, MM_ENOMEM, "out of memory");
    struct mmi_query *q = NULL;
    rc = mmi_query_start(p, svc, NULL, NULL, &q);
    if (rc == MM_OK) {
        q->cb = cb;
        q->ud = ud;
    }
    return rc;
}

/* ---- the connection's end, the instance's end ---- */

void
mmi_status_down(struct mmi_peers *p)
{
    for (struct mmi_query *q = p->queries; q != NULL; q = q->next)
        if (!q->ending) {
            q->code = MM_ENOTCONN;
            query_end(q);
        }
}

/* mm_free: every pending query ends now with MM_ECLOSED (exactly one callback);
 * the watches' routes are mm's and go with the other routes. */
void
mmi_status_destroy(struct mmi_peers *p)
{
    while (p->queries != NULL) {
        struct mmi_query *q = p->queries;
        p->queries = q->next;
        if (q->done != NULL)
            q->done(p->mm, MM_ECLOSED, &q->answers, q->ud);
        else
            mmi_status_report(p->mm, q->service, MM_ECLOSED, &q->answers, q->cb, q->ud);
        query_free(q);
    }
    while (p->watches != NULL) {
        struct mmi_watch *w = p->watches;
        p->watches = w->next;
        free(w);
    }
}
