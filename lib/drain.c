/*
 * Waiting on the loop for what is in flight: mm_close's drain (stop every
 * consumer, then let the handlers settle what they hold and the broker
 * confirm every send, within close_timeout_ms; what is still unsettled goes
 * back to its queue when the channels close) and mm_flush (confirms only).
 */
#include <event2/event.h>

#include "msg.h"
#include "outbox.h"

/* Requests and tasks a handler holds that can still be settled. */
size_t
mmi_msgs_unsettled(const mm_t *mm)
{
    size_t n = 0;
    for (const mm_msg_t *m = mm->live; m != NULL; m = m->live_next)
        if ((m->kind == MM_MSG_REQUEST || m->kind == MM_MSG_TASK) && !m->acked && !m->no_ack &&
            !m->answered && mmi_chan_gen(mm, m->ch) == m->gen)
            n++;
    return n;
}

static void
tick(evutil_socket_t fd, short what, void *arg)
{
    (void) fd;
    (void) what;
    (void) arg;
}

int
mmi_loop_until(mm_t *mm, bool (*done)(const mm_t *), int64_t timeout_ms)
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
        if (done(mm)) {
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

static bool
drained(const mm_t *mm)
{
    return mm->state != MMI_CONNECTED ||
           (mmi_msgs_unsettled(mm) == 0 && mmi_outbox_pending(mm) == 0);
}

int
mmi_drain(mm_t *mm)
{
    if (mm->state != MMI_CONNECTED)
        return MM_OK;
    mmi_routes_cancel(mm);
    int rc = mmi_loop_until(mm, drained, mm->opts.close_timeout_ms);
    if (rc == MM_ETIMEDOUT)
        mmi_log(mm, MM_LOG_WARN,
                "close: %zu messages unsettled and %zu sends unconfirmed after %u ms",
                mmi_msgs_unsettled(mm), mmi_outbox_pending(mm), mm->opts.close_timeout_ms);
    return rc == MM_ECLOSED ? rc : MM_OK;
}

static bool
flushed(const mm_t *mm)
{
    return mmi_outbox_pending(mm) == 0;
}

int
mm_flush(mm_t *mm, int64_t timeout_ms)
{
    if (mm == NULL)
        return MM_EINVAL;
    int rc = mmi_check_usable(mm);
    if (rc != MM_OK)
        return rc;
    rc = mmi_loop_until(mm, flushed, timeout_ms == MM_NO_TIMEOUT ? -1 : timeout_ms);
    if (rc == MM_ECLOSED)
        mmi_instance_destroy(mm); /* mm_free() in a callback meanwhile */
    else if (rc == MM_ETIMEDOUT)
        mmi_fail(mm, rc, "%zu sends still unconfirmed", mmi_outbox_pending(mm));
    return rc;
}

size_t
mm_unconfirmed(const mm_t *mm)
{
    return mm != NULL ? mmi_outbox_pending(mm) : 0;
}
