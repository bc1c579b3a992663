/*
 * QoS on an instance. A timer every qos_interval_ms measures how late it
 * fired (the loop's lag: handlers that hold the loop make it late) and the
 * resident memory, asks the controller (controller.c) for a level, shares it
 * among the routes subject to quota and applies it as their prefetch; 0
 * cancels their consumers. A route is saturated when it received at least
 * its prefetch's worth of messages during the interval.
 */
#include <event2/event.h>
#include <stdio.h>
#include <stdlib.h>

#include "controller.h"
#include "qos.h"
#include "sample.h"

#define MAX_ROUTES 256 /* routes a level is shared among; more keep their prefetch */

struct mmi_qos {
    mm_t *mm;
    mmi_qos_ctl_t ctl;
    struct event *timer;
    uint64_t last_ms;
    int64_t lag_ms;
    uint64_t rss;
    uint64_t seen[MAX_ROUTES]; /* deliveries of each adaptive route at the last sample */
};

static const char *
kind_name(unsigned p)
{
    return p & MMI_QOS_HARD ? "memory hard limit" : p & MMI_QOS_MEM ? "memory" : "loop lag";
}

static void
raise_events(mm_t *mm, struct mmi_qos *q, unsigned kinds, bool started)
{
    static const unsigned order[] = {MMI_QOS_LAG, MMI_QOS_MEM, MMI_QOS_HARD};
    for (size_t i = 0; i < 3; i++) {
        unsigned k = order[i];
        if (!(kinds & k))
            continue;
        bool lag = k == MMI_QOS_LAG;
        int64_t value = lag ? q->lag_ms : (int64_t) q->rss;
        int64_t limit =
            lag ? (int64_t) q->ctl.lim.lag_ms
                : (int64_t) (k == MMI_QOS_HARD ? q->ctl.lim.mem_hard : q->ctl.lim.mem_soft);
        mmi_pressure_event(mm, started ? MM_EV_PRESSURE : MM_EV_PRESSURE_RELEASED, k, value, limit,
                           "%s %s: %lld %s (limit %lld)", kind_name(k),
                           started ? "pressure" : "pressure released", (long long) value,
                           lag ? "ms" : "bytes", (long long) limit);
    }
}

/* Did any adaptive route get its prefetch's worth since the last sample? */
static bool
saturated(mm_t *mm, struct mmi_qos *q, size_t *ret_n)
{
    bool any = false;
    size_t i = 0;
    for (struct mm_route *r = mmi_route_next_adaptive(mm, NULL); r != NULL && i < MAX_ROUTES;
         r = mmi_route_next_adaptive(mm, r), i++) {
        uint64_t now = mmi_route_delivered(r), got = now - q->seen[i];
        uint16_t pf = mmi_route_prefetch(r);
        any = any || (pf > 0 && got >= pf);
        q->seen[i] = now;
    }
    *ret_n = i;
    return any;
}

static void
apply(mm_t *mm, uint32_t level, size_t n)
{
    uint16_t shares[MAX_ROUTES];
    mmi_qos_split(level, n, shares);
    size_t i = 0;
    for (struct mm_route *r = mmi_route_next_adaptive(mm, NULL); r != NULL && i < n;
         r = mmi_route_next_adaptive(mm, r), i++) {
        if (mmi_route_prefetch(r) == shares[i] && (shares[i] != 0) == (mmi_route_prefetch(r) != 0))
            continue;
        if (mmi_route_set_prefetch(mm, r, shares[i]) != MM_OK)
            mmi_log(mm, MM_LOG_INFO, "qos: prefetch %u not applied: %s", shares[i], mm->last_error);
    }
}

static void
on_sample(evutil_socket_t fd, short what, void *arg)
{
    struct mmi_qos *q = arg;
    mm_t *mm = q->mm;
    (void) fd;
    (void) what;
    uint64_t now = mmi_now_ms();
    q->lag_ms = (int64_t) (now - q->last_ms) - (int64_t) mm->opts.qos_interval_ms;
    q->last_ms = now;
    q->rss = mmi_qos_rss();
    if (mm->state != MMI_CONNECTED)
        return;
    mmi_enter(mm);
    size_t n = 0;
    mmi_qos_sample_t s = {.lag_ms = q->lag_ms, .rss = q->rss, .saturated = saturated(mm, q, &n)};
    unsigned started = 0, released = 0;
    uint32_t level = mmi_qos_step(&q->ctl, &s, &started, &released);
    raise_events(mm, q, started, true);
    raise_events(mm, q, released, false);
    apply(mm, level, n);
    mmi_leave(mm);
}

static void
up(mm_t *mm, void *state)
{
    struct mmi_qos *q = state;
    size_t n = 0;
    for (struct mm_route *r = mmi_route_next_adaptive(mm, NULL); r != NULL && n < MAX_ROUTES;
         r = mmi_route_next_adaptive(mm, r))
        n++;
    apply(mm, q->ctl.level, n); /* routes declared with their own prefetch take the level */
    q->last_ms = mmi_now_ms();
    uint32_t ms = mm->opts.qos_interval_ms;
    struct timeval tv = {.tv_sec = ms / 1000, .tv_usec = (ms % 1000) * 1000};
    event_add(q->timer, &tv);
}

static void
down(mm_t *mm, void *state)
{
    struct mmi_qos *q = state;
    (void) mm;
    event_del(q->timer);
}

static void
destroy(mm_t *mm, void *state)
{
    struct mmi_qos *q = state;
    event_free(q->timer);
    free(q);
    mm->qos = NULL;
}

static void
limits(mm_t *mm, mmi_qos_limits_t *lim)
{
    uint64_t mem = mmi_qos_memory_limit();
    *lim = (mmi_qos_limits_t){
        .lag_ms = (uint32_t) (mm->opts.qos_lag_threshold * mm->opts.qos_interval_ms),
        .mem_soft = mm->opts.mem_soft ? mm->opts.mem_soft : mem / 100 * 65,
        .mem_hard = mm->opts.mem_hard ? mm->opts.mem_hard : mem / 100 * 80,
        .max_level = 4096,
        .calm_samples = 3,
    };
    if (lim->mem_hard < lim->mem_soft) /* only soft given, above the derived hard */
        lim->mem_hard = lim->mem_soft;
}

int
mmi_qos_attach(mm_t *mm)
{
    struct mmi_qos *q = calloc(1, sizeof *q);
    if (q == NULL || (q->timer = event_new(mm->base, -1, EV_PERSIST, on_sample, q)) == NULL) {
        free(q);
        return MM_ENOMEM;
    }
    q->mm = mm;
    mmi_qos_limits_t lim;
    limits(mm, &lim);
    mmi_qos_init(&q->ctl, &lim, 64); /* the default prefetch: no slower than without QoS */
    mmi_hooks_t h = {.up = up, .down = down, .destroy = destroy, .state = q};
    int rc = mmi_module_add(mm, &h);
    if (rc != MM_OK) {
        event_free(q->timer);
        free(q);
        return rc;
    }
    mm->qos = q;
    return MM_OK;
}

int
mm_qos_state(const mm_t *mm, mm_qos_state_t *st)
{
    if (mm == NULL || st == NULL)
        return MM_EINVAL;
    const struct mmi_qos *q = mm->qos;
    *st = (mm_qos_state_t){.enabled = q != NULL};
    if (q != NULL) {
        st->level = q->ctl.level;
        st->pressure = q->ctl.pressure;
        st->lag_ms = q->lag_ms;
        st->rss = q->rss;
        st->mem_soft = q->ctl.lim.mem_soft;
        st->mem_hard = q->ctl.lim.mem_hard;
    }
    return MM_OK;
}
