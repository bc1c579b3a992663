/*
 * The broker's side of the election. The lock is the protocol's exclusive
 * queue internal.<service>.lock: the connection that declared it leads;
 * the broker refuses it to every other (RESOURCE_LOCKED) and deletes it
 * when that connection dies. We also consume it, so that its deletion from
 * outside reaches us (basic.cancel) and we step down.
 *
 * The token is micromsg's wake-up call, invisible to protocol-only peers:
 * every candidate consumes q.mmElection.<service> (single active consumer,
 * auto-delete), which holds one token message. The broker delivers it to
 * the active consumer only, who keeps it unacked; when that consumer's
 * connection dies the broker requeues it to the next consumer at once. So
 * the instance that gets the token tries the lock right away, instead of
 * waiting for the protocol's election timeout.
 */
#include <stdio.h>
#include <string.h>

#include "election_int.h"

#define LOCK_SUFFIX ".lock"

static void on_retry(evutil_socket_t fd, short what, void *arg);

/* Backoff for lock retries and rejoins: 50 ms doubling to one heartbeat. */
static void
retry_later(mm_t *mm, struct mmi_election *e)
{
    if (e->retry == NULL && (e->retry = evtimer_new(mm->base, on_retry, e)) == NULL)
        return;
    unsigned n = e->retries < 10 ? e->retries : 10;
    uint64_t ms = 50u << n;
    if (ms > mm->opts.heartbeat_ms)
        ms = mm->opts.heartbeat_ms;
    e->retries++;
    struct timeval tv = {.tv_sec = (long) (ms / 1000), .tv_usec = (long) (ms % 1000) * 1000};
    evtimer_add(e->retry, &tv);
}

/* ---- the lock ---- */

static void
lock_lost(mm_t *mm, struct mmi_election *e, int code, const char *why)
{
    e->lock_ch = 0;
    mmi_election_stepped_down(mm, code, why);
    if (e->token && mm->state == MMI_CONNECTED)
        retry_later(mm, e);
}

static void
on_lock_method(mm_t *mm, uint16_t ch, const amqp_method_t *m, void *ud)
{
    struct mmi_election *e = ud;
    if (m->id != AMQP_BASIC_CANCEL_METHOD || ch != e->lock_ch)
        return;
    mmi_chan_close(mm, ch);
    lock_lost(mm, e, MM_ECHANNEL, "the lock queue was deleted");
}

static void
on_lock_closed(mm_t *mm, uint16_t ch, int code, const char *text, void *ud)
{
    struct mmi_election *e = ud;
    if (ch == e->lock_ch && code == MM_ECHANNEL)
        lock_lost(mm, e, code, text);
    else if (ch == e->lock_ch)
        e->lock_ch = 0;
}

/* A refused declare is the normal answer of a held lock: no channel-error event. */
static const mmi_chan_ops_t LOCK_OPS = {
    .on_method = on_lock_method, .on_closed = on_lock_closed, .quiet = true};

static int
declare_lock(mm_t *mm, struct mmi_election *e, uint16_t *ret_ch)
{
    char name[MMI_QUEUE_MAX];
    snprintf(name, sizeof name, "internal.%s" LOCK_SUFFIX, mm->service);
    uint16_t ch = 0;
    int rc = mmi_chan_open(mm, &LOCK_OPS, e, &ch);
    if (rc != MM_OK)
        return rc;
    *ret_ch = ch;
    mm->last_close_code = 0;
    rc = mmi_queue_declare(mm, ch, name, MMI_Q_DURABLE | MMI_Q_EXCLUSIVE, NULL, NULL);
    if (rc == MM_OK)
        rc = mmi_basic_consume(mm, ch, name, true, true, NULL, 0);
    if (rc != MM_OK && mmi_chan_is_open(mm, ch))
        mmi_chan_close(mm, ch);
    return rc;
}

void
mmi_election_try(mm_t *mm, const char *why)
{
    struct mmi_election *e = mm->election;
    if (e == NULL || e->leader || mm->state != MMI_CONNECTED)
        return;
    uint16_t ch = 0;
    int rc = declare_lock(mm, e, &ch);
    if (rc == MM_OK) {
        e->lock_ch = ch;
        e->retries = 0;
        mmi_log(mm, MM_LOG_DEBUG, "took the lock of '%s' (%s)", mm->service, why);
        mmi_election_stepped_up(mm);
        return;
    }
    mmi_log(mm, MM_LOG_DEBUG, "lock of '%s' not taken (%s): %s", mm->service, why, mm->last_error);
    /* Next in line: the old leader's lock may still be going away, try again
     * soon. Refused for a whole election timeout, someone really holds it (a
     * protocol-only replica): from then on the protocol's rule (ticks). */
    if (e->token && mmi_now_ms() - e->token_ms < mm->opts.election_timeout_ms &&
        mm->state == MMI_CONNECTED)
        retry_later(mm, e);
}

/* ---- the token ---- */

static void
on_token(mm_t *mm, const mmi_content_t *c, void *ud)
{
    struct mmi_election *e = ud;
    if (c->channel != e->token_ch || c->method != AMQP_BASIC_DELIVER_METHOD)
        return;
    /* Kept unacked for as long as we live: it goes to the next in line when we die. */
    if (!e->token) {
        e->token = true;
        e->token_ms = mmi_now_ms();
        e->retries = 0;
        retry_later(mm, e); /* try the lock from the loop, not inside the delivery */
    }
}

static void
token_lost(mm_t *mm, struct mmi_election *e)
{
    e->token = false;
    e->token_ch = 0;
    if (mm->state == MMI_CONNECTED)
        retry_later(mm, e); /* rejoin the line */
}

static void
on_token_method(mm_t *mm, uint16_t ch, const amqp_method_t *m, void *ud)
{
    struct mmi_election *e = ud;
    if (m->id != AMQP_BASIC_CANCEL_METHOD || ch != e->token_ch)
        return;
    mmi_chan_close(mm, ch);
    token_lost(mm, e);
}

static void
on_token_closed(mm_t *mm, uint16_t ch, int code, const char *text, void *ud)
{
    struct mmi_election *e = ud;
    (void) text;
    if (ch != e->token_ch)
        return;
    if (code == MM_ECHANNEL) {
        token_lost(mm, e);
    } else {
        e->token = false;
        e->token_ch = 0;
    }
}

static const mmi_chan_ops_t TOKEN_OPS = {
    .on_content = on_token, .on_method = on_token_method, .on_closed = on_token_closed};

static int
join(mm_t *mm, struct mmi_election *e)
{
    char name[MMI_QUEUE_MAX];
    snprintf(name, sizeof name, "q.mmElection.%s", mm->service);
    uint16_t ch = 0;
    int rc = mmi_chan_open(mm, &TOKEN_OPS, e, &ch);
    if (rc == MM_OK)
        rc = mmi_token_queue(mm, ch, name);
    if (rc == MM_OK)
        rc = mmi_basic_qos(mm, ch, 1);
    if (rc == MM_OK)
        rc = mmi_basic_consume(mm, ch, name, false, false, NULL, 0);
    if (rc == MM_OK)
        e->token_ch = ch;
    else if (ch != 0 && mmi_chan_is_open(mm, ch))
        mmi_chan_close(mm, ch);
    return rc;
}

void
mmi_election_join(mm_t *mm)
{
    struct mmi_election *e = mm->election;
    e->token = false;
    e->retries = 0;
    if (join(mm, e) != MM_OK) {
        mmi_log(mm, MM_LOG_INFO, "election of '%s': waiting in line failed: %s", mm->service,
                mm->last_error);
        retry_later(mm, e);
    }
}

static void
on_retry(evutil_socket_t fd, short what, void *arg)
{
    struct mmi_election *e = arg;
    mm_t *mm = e->mm;
    (void) fd;
    (void) what;
    if (mm->state != MMI_CONNECTED)
        return;
    mmi_enter(mm);
    if (e->token_ch == 0 && join(mm, e) != MM_OK)
        retry_later(mm, e);
    else if (e->token && !e->leader)
        mmi_election_try(mm, "next in line");
    mmi_leave(mm);
}

void
mmi_election_leave(mm_t *mm)
{
    struct mmi_election *e = mm->election;
    if (e->retry != NULL)
        event_del(e->retry);
    e->token = false;
    e->token_ch = 0;
    e->lock_ch = 0;
}
