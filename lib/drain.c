/*
 * Waiting on the loop for what is in flight: mm_close's drain (stop every
 * consumer, then let the handlers settle what they hold and the broker
 * confirm every send, within close_timeout_ms; what is still unsettled goes
 * back to its queue when the channels close) and mm_flush (confirms only).
 */
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

static bool
drained(mm_t *mm, void *ud)
{
    (void) ud;
    return mm->state != MMI_CONNECTED ||
           (mmi_msgs_unsettled(mm) == 0 && mmi_outbox_pending(mm) == 0);
}

int
mmi_drain(mm_t *mm)
{
    if (mm->state != MMI_CONNECTED)
        return MM_OK;
    mmi_routes_cancel(mm);
    mmi_modules_quiesce(mm);
    int rc = mmi_loop_until(mm, drained, NULL, mm->opts.close_timeout_ms);
    if (rc == MM_ETIMEDOUT)
        mmi_log(mm, MM_LOG_WARN,
                "close: %zu messages unsettled and %zu sends unconfirmed after %u ms",
                mmi_msgs_unsettled(mm), mmi_outbox_pending(mm), mm->opts.close_timeout_ms);
    return rc == MM_ECLOSED ? rc : MM_OK;
}

static bool
flushed(mm_t *mm, void *ud)
{
    (void) ud;
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
    rc = mmi_loop_until(mm, flushed, NULL, timeout_ms == MM_NO_TIMEOUT ? -1 : timeout_ms);
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
