/*
 * mm_wait_service: status queries (status.c) one after the other, every
 * heartbeat_ms / 4 (at least 100 ms) after the previous one ended, until a
 * member is ready (and one leads, with MM_WAIT_LEADER), or the deadline.
 * The wait holds the service's watch for its whole life, so that the
 * temporary listener is declared once, not for every query. It survives a
 * reconnect: a query refused or cut by the connection's loss is just tried
 * again at the next poll.
 */
#include <event2/event.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "peers_int.h"

struct mmi_waiter {
    struct mmi_waiter *next;
    struct mmi_peers *p;
    char service[MMI_NAME_MAX + 1];
    unsigned flags;
    mm_status_fn cb;
    void *ud;
    struct event *poll, *deadline;
    struct mmi_query *q;     /* the query under way, or NULL */
    struct mmi_watch *watch; /* NULL until connected once, or for our own service */
    mmi_members_t last;      /* the last status seen */
};

static void
waiter_unlink(struct mmi_waiter *w)
{
    for (struct mmi_waiter **at = &w->p->waiters; *at != NULL; at = &(*at)->next)
        if (*at == w) {
            *at = w->next;
            return;
        }
}

static void
waiter_free(struct mmi_waiter *w)
{
    if (w->poll != NULL)
        event_free(w->poll);
    if (w->deadline != NULL)
        event_free(w->deadline);
    mmi_members_free(&w->last);
    free(w);
}

/* The one callback; then the wait is gone. */
static void
finish(struct mmi_waiter *w, int code, const mmi_members_t *m)
{
    struct mmi_peers *p = w->p;
    mm_t *mm = p->mm;
    waiter_unlink(w);
    if (w->q != NULL)
        mmi_query_cancel(w->q);
    w->q = NULL;
    mmi_status_report(mm, w->service, code, m, w->cb, w->ud);
    if (mmi_alive(mm)) /* else mm_free() in the callback: destroy() frees the watches */
        mmi_watch_put(p, w->watch);
    waiter_free(w);
}

static bool
satisfied(const struct mmi_waiter *w, const mmi_members_t *m)
{
    bool ready = false, leader = false;
    for (size_t i = 0; i < m->n; i++) {
        ready |= m->v[i].ready;
        leader |= m->v[i].master;
    }
    return ready && (leader || !(w->flags & MM_WAIT_LEADER));
}

static void
arm_poll(struct mmi_waiter *w)
{
    uint32_t ms = w->p->mm->opts.heartbeat_ms / 4;
    if (ms < 100)
        ms = 100;
    struct timeval tv = {.tv_sec = ms / 1000, .tv_usec = (ms % 1000) * 1000};
    event_add(w->poll, &tv);
}

static void
on_answers(mm_t *mm, int code, mmi_members_t *answers, void *ud)
{
    struct mmi_waiter *w = ud;
    (void) mm;
    w->q = NULL;
    if (code == MM_OK && satisfied(w, answers)) {
        finish(w, MM_OK, answers);
        return;
    }
    mmi_members_t old = w->last;
    w->last = *answers; /* keep the last status for a timeout */
    *answers = old;
    arm_poll(w);
}

/* Errors here are the wait's business, not the user's last call's. */
static void
ask(struct mmi_waiter *w)
{
    struct mmi_peers *p = w->p;
    mm_t *mm = p->mm;
    int code = mm->last_code, rc = MM_OK;
    char text[MMI_ERRBUF];
    memcpy(text, mm->last_error, sizeof text);
    if (w->watch == NULL && mmi_status_needs_watch(p, w->service))
        w->watch = mmi_watch_get(p, w->service, &rc);
    if (rc == MM_OK && mm->state == MMI_CONNECTED)
        rc = mmi_query_start(p, w->service, on_answers, w, &w->q);
    if (rc != MM_OK || w->q == NULL)
        arm_poll(w);
    mm->last_code = code;
    memcpy(mm->last_error, text, sizeof text);
}

static void
on_poll(evutil_socket_t fd, short what, void *arg)
{
    struct mmi_waiter *w = arg;
    mm_t *mm = w->p->mm;
    (void) fd;
    (void) what;
    mmi_enter(mm);
    ask(w);
    mmi_leave(mm);
}

static void
on_deadline(evutil_socket_t fd, short what, void *arg)
{
    struct mmi_waiter *w = arg;
    mm_t *mm = w->p->mm;
    (void) fd;
    (void) what;
    mmi_enter(mm);
    finish(w, MM_ETIMEDOUT, &w->last);
    mmi_leave(mm);
}

static int
check_args(mm_t *mm, const char *service, int64_t timeout_ms, mm_status_fn cb)
{
    int rc = mmi_check_usable(mm);
    if (rc != MM_OK)
        return rc;
    if (cb == NULL)
        return mmi_fail(mm, MM_EINVAL, "mm_wait_service: no callback");
    if (timeout_ms < 0 && timeout_ms != MM_NO_TIMEOUT)
        return mmi_fail(mm, MM_EINVAL, "mm_wait_service: timeout_ms %lld (>= 0 or MM_NO_TIMEOUT)",
                        (long long) timeout_ms);
    if ((rc = mmi_check_name(mm, "service name", service, 0)) != MM_OK)
        return rc;
    if (mm->state == MMI_IDLE)
        return mmi_fail(mm, MM_ENOTCONN, "not connected");
    return MM_OK;
}

int
mm_wait_service(mm_t *mm, const char *service, unsigned flags, int64_t timeout_ms, mm_status_fn cb,
                void *ud)
{
    if (mm == NULL)
        return MM_EINVAL;
    const char *svc = service != NULL ? service : mm->service;
    int rc = check_args(mm, svc, timeout_ms, cb);
    if (rc != MM_OK)
        return rc;
    struct mmi_peers *p = mmi_peers_get(mm);
    struct mmi_waiter *w = p != NULL ? calloc(1, sizeof *w) : NULL;
    if (w == NULL)
        return mmi_fail(mm, MM_ENOMEM, "out of memory");
    *w = (struct mmi_waiter){.p = p, .flags = flags, .cb = cb, .ud = ud};
    snprintf(w->service, sizeof w->service, "%s", svc);
    w->poll = evtimer_new(mm->base, on_poll, w);
    w->deadline = evtimer_new(mm->base, on_deadline, w);
    if (w->poll == NULL || w->deadline == NULL) {
        waiter_free(w);
        return mmi_fail(mm, MM_ENOMEM, "out of memory");
    }
    struct timeval now = {0, 0};
    event_add(w->poll, &now); /* the first query from the loop: never inside this call */
    if (timeout_ms != MM_NO_TIMEOUT) {
        struct timeval tv = {.tv_sec = (time_t) (timeout_ms / 1000),
                             .tv_usec = (long) (timeout_ms % 1000) * 1000};
        event_add(w->deadline, &tv);
    }
    w->next = p->waiters;
    p->waiters = w;
    return MM_OK;
}

/* mm_free: every wait ends now with MM_ECLOSED and the last status seen. */
void
mmi_wait_destroy(struct mmi_peers *p)
{
    while (p->waiters != NULL) {
        struct mmi_waiter *w = p->waiters;
        p->waiters = w->next;
        if (w->q != NULL)
            mmi_query_cancel(w->q);
        mmi_status_report(p->mm, w->service, MM_ECLOSED, &w->last, w->cb, w->ud);
        waiter_free(w);
    }
}
