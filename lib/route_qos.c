/*
 * The prefetch of routes under QoS (qos/) or mm_set_max_parallelism: which
 * routes are subject to quota, and changing a route's prefetch on its
 * channel (basic.qos), 0 meaning its consumer is cancelled (and consumed
 * again when the level comes back).
 */
#include <string.h>

#include "deadletter.h"
#include "msg.h"
#include "route.h"

static bool
adaptive(const struct mm_route *r)
{
    return !r->no_ack && r->max_parallel == 0; /* user routes: internal ones are no-ack */
}

struct mm_route *
mmi_route_next_adaptive(mm_t *mm, struct mm_route *after)
{
    struct mm_route *r = after ? after->next : mm->routes;
    while (r != NULL && !adaptive(r))
        r = r->next;
    return r;
}

uint64_t
mmi_route_delivered(const struct mm_route *r)
{
    return r->delivered;
}

uint16_t
mmi_route_prefetch(const struct mm_route *r)
{
    if (r->max_parallel != 0)
        return r->max_parallel;
    return r->qos_set ? r->level : r->prefetch;
}

/* Not connected: only remembered, applied when the route is declared. */
int
mmi_route_set_prefetch(mm_t *mm, struct mm_route *r, uint16_t n)
{
    r->level = n;
    r->qos_set = true;
    r->qos_paused = n == 0;
    if (mm->state != MMI_CONNECTED || r->ch == 0)
        return MM_OK;
    if (n == 0) {
        if (r->ctag[0] == '\0')
            return MM_OK;
        int rc = mmi_basic_cancel(mm, r->ch, r->ctag);
        if (rc == MM_OK)
            r->ctag[0] = '\0';
        return rc;
    }
    /* A per-consumer prefetch applies to consumers created after it: the running
     * consumer is replaced (its unacked deliveries stay on the channel). */
    int rc = MM_OK;
    if (r->ctag[0] != '\0' && (rc = mmi_basic_cancel(mm, r->ch, r->ctag)) == MM_OK)
        r->ctag[0] = '\0';
    if (rc == MM_OK)
        rc = mmi_basic_qos(mm, r->ch, n);
    if (rc == MM_OK && !r->bytes_paused)
        rc = mmi_basic_consume(mm, r->ch, r->queue, r->no_ack, r->type == MMI_ROUTE_LISTEN, r->ctag,
                               sizeof r->ctag);
    return rc;
}

int
mm_set_max_parallelism(mm_t *mm, uint16_t n)
{
    if (mm == NULL || n == 0)
        return mm ? mmi_fail(mm, MM_EINVAL, "mm_set_max_parallelism: 0 (at least 1)") : MM_EINVAL;
    if (mm->opts.flags & MM_OPT_QOS)
        return mmi_fail(mm, MM_ESTATE,
                        "mm_set_max_parallelism: QoS decides the prefetch (MM_OPT_QOS)");
    mm->fixed_prefetch = n;
    int rc = MM_OK;
    for (struct mm_route *r = mmi_route_next_adaptive(mm, NULL); r != NULL;
         r = mmi_route_next_adaptive(mm, r)) {
        int one = mmi_route_set_prefetch(mm, r, n);
        if (one != MM_OK && rc == MM_OK)
            rc = one;
    }
    return rc;
}

/* ---- the byte budget (max_parallel_bytes) ---- */

static void
consume_again(mm_t *mm, struct mm_route *r)
{
    if (mm->state != MMI_CONNECTED || r->ch == 0 || r->ctag[0] != '\0' || r->qos_paused ||
        r->bytes_paused)
        return;
    if (mmi_basic_consume(mm, r->ch, r->queue, r->no_ack, r->type == MMI_ROUTE_LISTEN, r->ctag,
                          sizeof r->ctag) != MM_OK)
        mmi_log(mm, MM_LOG_INFO, "route '%s' not resumed: %s", r->name, mm->last_error);
}

bool
mmi_route_bytes_take(mm_t *mm, struct mm_route *r, mm_msg_t *msg)
{
    if (r->bytes.budget == 0 || r->no_ack)
        return true;
    if (mmi_qos_bytes_admit(&r->bytes, msg->wire_size)) {
        msg->budgeted = true;
        return true;
    }
    /* Back to the queue as a copy with the same count: a nack would come back
     * redelivered, which counts as a failed delivery (lib/deadletter.c). */
    uint32_t count = mmi_dl_failed(msg) - 1;
    if (mmi_dl_count(msg, count) != MM_OK)
        mmi_msg_nack(msg, true); /* counted then, but never lost */
    if (!r->bytes_paused && r->ctag[0] != '\0' && mmi_basic_cancel(mm, r->ch, r->ctag) == MM_OK)
        r->ctag[0] = '\0';
    r->bytes_paused = true;
    return false;
}

void
mmi_route_bytes_release(mm_t *mm, mm_msg_t *msg)
{
    if (!msg->budgeted)
        return;
    msg->budgeted = false;
    for (struct mm_route *r = mm->routes; r != NULL; r = r->next) {
        if (r->ch != msg->ch || mmi_chan_gen(mm, r->ch) != msg->gen)
            continue;
        if (mmi_qos_bytes_done(&r->bytes, msg->wire_size)) {
            r->bytes_paused = false;
            consume_again(mm, r);
        }
        return;
    }
}
