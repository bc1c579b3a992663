/*
 * Blocking calls that run the instance's loop until something happens
 * (mm_request_sync, mm_flush, mm_close's drain, mm_deadletter_redrive): the
 * one place that refuses to wait inside a callback and bounds each turn.
 */
#include <event2/event.h>

#include "internal.h"

int
mmi_loop_usable(mm_t *mm, const char *what)
{
    if (mm->cb_depth > 0 || mm->syncing)
        return mmi_fail(mm, MM_ESTATE, "%s cannot run inside a callback of the instance", what);
    /* In a callback of another instance (or timer) on the same base, libevent
     * refuses a nested loop (-1) and a wait would spin: probe first. */
    mm->syncing = true; /* a callback run by the probe cannot free mm under us */
    bool nested = event_base_loop(mm->base, EVLOOP_NONBLOCK) < 0;
    mm->syncing = false;
    if (mm->free_pending)
        return MM_ECLOSED;
    if (nested)
        return mmi_fail(mm, MM_ESTATE, "%s: the event_base's loop is already running", what);
    return MM_OK;
}

static void
tick(evutil_socket_t fd, short what, void *arg)
{
    (void) fd;
    (void) what;
    (void) arg; /* only wakes the loop up to look at the condition and the clock */
}

int
mmi_loop_until(mm_t *mm, bool (*done)(mm_t *, void *), void *ud, int64_t timeout_ms)
{
    if (mm->cb_depth > 0 || mm->syncing)
        return mmi_fail(mm, MM_ESTATE, "cannot wait on the loop inside a callback");
    uint64_t until = mmi_now_ms() + (uint64_t) (timeout_ms < 0 ? 0 : timeout_ms);
    struct timeval turn = {0, 20000}; /* bounds each turn of the loop */
    struct event *ev = evtimer_new(mm->base, tick, NULL);
    if (ev == NULL)
        return mmi_fail(mm, MM_ENOMEM, "out of memory");
    int rc = MM_ETIMEDOUT;
    mm->syncing = true; /* a callback cannot free mm under us */
    while (!mm->free_pending) {
        if (done(mm, ud)) {
            rc = MM_OK;
            break;
        }
        if (timeout_ms >= 0 && mmi_now_ms() >= until)
            break;
        evtimer_add(ev, &turn);
        if (event_base_loop(mm->base, EVLOOP_ONCE) < 0) {
            rc = MM_ESTATE; /* the base's loop is already running: we are in a callback */
            break;
        }
    }
    mm->syncing = false;
    event_free(ev);
    if (mm->free_pending)
        return MM_ECLOSED;
    return rc == MM_OK
               ? MM_OK
               : mmi_fail(mm, rc, "%s", rc == MM_ESTATE ? "called from a callback" : "timed out");
}
