/*
 * Reconnecting in the background: after a loss, attempts paced by the retry
 * strategy (the user's, else the default one without an end), each one a
 * non-blocking probe (lib/probe.c) and, once the broker answers, a bounded
 * blocking connect + login on the loop; then the routes, the reply
 * queue and the buffered sends are restored, in that order, and
 * MM_EV_RECONNECTED is raised. A strategy that gives up leaves the instance
 * disconnected for good: MM_EV_DISCONNECTED again, and mm_run() returns.
 */
#include <event2/event.h>
#include <stdint.h>
#include <stdio.h>

#include "internal.h"
#include "outbox.h"

static int64_t
next_wait(mm_t *mm, int code)
{
    uint64_t elapsed = mmi_now_ms() - mm->rc_since;
    if (mm->opts.retry != mm_retry_default)
        return mm->opts.retry(code, mm->rc_attempts, elapsed, mm->opts.retry_ud);
    uintptr_t budget = mm->opts.reconnect_budget_ms ? mm->opts.reconnect_budget_ms : UINTPTR_MAX;
    return mm_retry_default(code, mm->rc_attempts, elapsed, (void *) budget);
}

static void
arm(mm_t *mm, int64_t ms)
{
    struct timeval tv = {.tv_sec = ms / 1000, .tv_usec = (ms % 1000) * 1000};
    event_add(mm->ev_reconnect, &tv);
}

static void
give_up(mm_t *mm, int code, const char *detail)
{
    mm->auto_reconnect = false;
    mm->state = MMI_IDLE;
    mmi_outbox_close(mm);
    mmi_event(mm, MM_EV_DISCONNECTED, code, 0, "gave up reconnecting after %u attempt%s: %s",
              mm->rc_attempts, mm->rc_attempts == 1 ? "" : "s", detail);
}

static void
restored(mm_t *mm)
{
    unsigned attempts = mm->rc_attempts;
    uint64_t took = mmi_now_ms() - mm->rc_since;
    mmi_routes_restore(mm);
    if (mm->state == MMI_CONNECTED && mmi_pub_prepare(mm) != MM_OK)
        mmi_log(mm, MM_LOG_INFO, "publishing channels not ready: %s", mm->last_error);
    if (mm->state == MMI_CONNECTED)
        mmi_requests_restore(mm);
    mmi_modules_up(mm);
    if (mm->state == MMI_CONNECTED)
        mmi_outbox_resume(mm);
    if (mm->state == MMI_CONNECTED)
        mmi_event(mm, MM_EV_RECONNECTED, MM_OK, 0,
                  "reconnected to %s after %llu ms (%u failed attempt%s)", mm->uri_redacted,
                  (unsigned long long) took, attempts, attempts == 1 ? "" : "s");
}

static void
failed(mm_t *mm, int rc, const char *detail)
{
    mm->rc_attempts++;
    int64_t wait = next_wait(mm, rc);
    mmi_log(mm, MM_LOG_INFO, "reconnect attempt %u failed: %s", mm->rc_attempts, detail);
    if (wait < 0)
        give_up(mm, rc, detail);
    else
        arm(mm, wait);
}

/* The broker answered the probe: the blocking connect + login is quick now. */
static void
on_probed(mm_t *mm, int rc, const char *probe_detail)
{
    if (mm->state != MMI_RECONNECTING)
        return;
    if (rc != MM_OK) {
        failed(mm, rc, probe_detail);
        return;
    }
    char detail[MMI_DETAIL] = "";
    amqp_connection_state_t c = NULL;
    rc = mmi_conn_attempt(mm, &c, detail);
    if (rc == MM_OK && (rc = mmi_conn_install(mm, c)) != MM_OK) {
        mm->state = MMI_RECONNECTING; /* the socket could not be watched: try again */
        snprintf(detail, sizeof detail, "%.200s", mm->last_error);
    }
    if (rc == MM_OK)
        restored(mm);
    else
        failed(mm, rc, detail);
}

static void
on_attempt(evutil_socket_t fd, short what, void *arg)
{
    mm_t *mm = arg;
    (void) fd;
    (void) what;
    if (mm->state != MMI_RECONNECTING)
        return;
    mmi_enter(mm);
    mmi_conn_reap(mm); /* the old connection's channel owners hear of its end first */
    if (mmi_probe_start(mm, on_probed) != MM_OK)
        failed(mm, MM_ENOMEM, "out of memory");
    mmi_leave(mm);
}

void
mmi_reconnect_schedule(mm_t *mm)
{
    if (mm->ev_reconnect == NULL &&
        (mm->ev_reconnect = evtimer_new(mm->base, on_attempt, mm)) == NULL) {
        give_up(mm, MM_ENOMEM, "out of memory");
        return;
    }
    mm->state = MMI_RECONNECTING;
    mm->rc_attempts = 0;
    mm->rc_since = mmi_now_ms();
    arm(mm, 0); /* from the loop, once the callback that saw the loss has returned */
}

void
mmi_reconnect_stop(mm_t *mm)
{
    mmi_probe_cancel(mm);
    if (mm->ev_reconnect != NULL)
        event_del(mm->ev_reconnect);
    if (mm->state == MMI_RECONNECTING)
        mm->state = MMI_IDLE;
}

void
mmi_reconnect_free(mm_t *mm)
{
    if (mm->ev_reconnect != NULL)
        event_free(mm->ev_reconnect);
    mm->ev_reconnect = NULL;
}
