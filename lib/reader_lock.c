/*
 * One reader per consumer name: its lock and its place in line. The lock is
 * the exclusive queue q.readerLock.<service>.<consumer>: the connection that
 * declared it may read; the broker refuses it to every other connection
 * (RESOURCE_LOCKED) and deletes it when that connection dies. We consume it,
 * so that its deletion from outside reaches us (basic.cancel).
 *
 * The line is the election's pattern (election/lock.c): every reader of the
 * consumer name consumes q.readerToken.<service>.<consumer> (single active
 * consumer, auto-delete), which holds one token message. The broker gives it
 * to the first consumer only, who keeps it unacked; when that consumer's
 * connection dies, the broker requeues it to the next one at once, which then
 * tries the lock (retrying for a moment while the old lock goes away). So a
 * standby takes over as soon as the broker has noticed the death, without
 * polling; the lock still decides, the token only wakes. Standbys without
 * the token try the lock every MMI_READER_BACKSTOP_MS anyway (lib/reader.c),
 * in case the token went missing.
 *
 * The lock is an allocation of its own: a stopping reader hands it to the
 * outbox (mmi_rlock_after) until its last cursor write is confirmed, and only
 * then gives it up, so that the next reader finds that cursor.
 */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "reader.h"

struct mmi_rlock *
mmi_rlock_new(struct mm_reader *r)
{
    struct mmi_rlock *l = calloc(1, sizeof *l);
    if (l == NULL)
        return NULL;
    *l = (struct mmi_rlock){.mm = r->mm, .r = r, .t = r->t};
    snprintf(l->lock_q, sizeof l->lock_q, "q.readerLock.%s.%s", r->mm->service, r->consumer);
    snprintf(l->token_q, sizeof l->token_q, "q.readerToken.%s.%s", r->mm->service, r->consumer);
    return l;
}

/* Close a channel of ours: a non-zero number is always a live one (on_closed
 * zeroes it), also between a lost connection and its reap. */
static void
close_ch(mm_t *mm, uint16_t *ch)
{
    uint16_t c = *ch;
    *ch = 0;
    if (c != 0)
        mmi_chan_close(mm, c);
}

/* ---- the lock ---- */

static void
lock_lost(struct mmi_rlock *l, const char *why)
{
    l->held = false;
    if (l->token)
        l->token_ms = mmi_now_ms(); /* still first in line: try again soon */
    if (l->r != NULL)
        mmi_reader_lock_lost(l->r, why);
}

static void
on_lock_method(mm_t *mm, uint16_t ch, const amqp_method_t *m, void *ud)
{
    struct mmi_rlock *l = ud;
    if (m->id != AMQP_BASIC_CANCEL_METHOD || ch != l->lock_ch)
        return;
    close_ch(mm, &l->lock_ch);
    lock_lost(l, "its lock queue was deleted");
}

static void
on_lock_closed(mm_t *mm, uint16_t ch, int code, const char *text, void *ud)
{
    struct mmi_rlock *l = ud;
    (void) mm;
    if (ch != l->lock_ch)
        return;
    l->lock_ch = 0;
    if (code == MM_ECHANNEL && l->held)
        lock_lost(l, text);
}

/* A refused declare is the normal answer of a held lock: no channel-error event. */
static const mmi_chan_ops_t LOCK_OPS = {
    .on_method = on_lock_method, .on_closed = on_lock_closed, .quiet = true};

int
mmi_rlock_try(struct mmi_rlock *l)
{
    mm_t *mm = l->mm;
    if (l->held)
        return MM_OK;
    int rc = mmi_chan_open(mm, &LOCK_OPS, l, &l->lock_ch);
    if (rc != MM_OK)
        return rc;
    mm->last_close_code = 0;
    rc = mmi_queue_declare(mm, l->lock_ch, l->lock_q, MMI_Q_EXCLUSIVE, NULL, NULL);
    if (rc == MM_OK)
        rc = mmi_basic_consume(mm, l->lock_ch, l->lock_q, true, true, NULL, 0);
    if (rc == MM_OK) {
        l->held = true;
        return MM_OK;
    }
    bool locked = mm->last_close_code == 405; /* RESOURCE_LOCKED */
    close_ch(mm, &l->lock_ch);
    if (locked)
        return mmi_fail(mm, MM_ESTATE, "another reader holds %s", l->lock_q);
    return rc;
}

/* ---- the line ---- */

static void
on_token(mm_t *mm, const mmi_content_t *c, void *ud)
{
    struct mmi_rlock *l = ud;
    (void) mm;
    if (c->channel != l->token_ch || c->method != AMQP_BASIC_DELIVER_METHOD || l->token)
        return;
    /* Kept unacked for as long as we live: it goes to the next in line when we die. */
    l->token = true;
    l->token_ms = mmi_now_ms();
    if (l->r != NULL && !l->held)
        mmi_reader_wake(l->r); /* try the lock from the loop, not inside the delivery */
}

static void
token_lost(struct mmi_rlock *l)
{
    l->token = false;
    if (l->r != NULL)
        mmi_reader_wake(l->r); /* back in line */
}

static void
on_token_method(mm_t *mm, uint16_t ch, const amqp_method_t *m, void *ud)
{
    struct mmi_rlock *l = ud;
    if (m->id != AMQP_BASIC_CANCEL_METHOD || ch != l->token_ch)
        return;
    close_ch(mm, &l->token_ch);
    token_lost(l);
}

static void
on_token_closed(mm_t *mm, uint16_t ch, int code, const char *text, void *ud)
{
    struct mmi_rlock *l = ud;
    (void) mm;
    (void) text;
    if (ch != l->token_ch)
        return;
    l->token_ch = 0;
    l->token = false;
    if (code == MM_ECHANNEL)
        token_lost(l);
}

static const mmi_chan_ops_t TOKEN_OPS = {
    .on_content = on_token, .on_method = on_token_method, .on_closed = on_token_closed};

int
mmi_rlock_join(struct mmi_rlock *l)
{
    mm_t *mm = l->mm;
    if (l->token_ch != 0)
        return MM_OK;
    uint16_t ch = 0;
    int rc = mmi_chan_open(mm, &TOKEN_OPS, l, &ch);
    if (rc != MM_OK)
        return rc;
    l->token_ch = ch;
    l->token = false;
    rc = mmi_token_queue(mm, ch, l->token_q);
    if (rc == MM_OK)
        rc = mmi_basic_qos(mm, ch, 1);
    if (rc == MM_OK)
        rc = mmi_basic_consume(mm, ch, l->token_q, false, false, NULL, 0);
    if (rc != MM_OK)
        close_ch(mm, &l->token_ch);
    return rc;
}

/* ---- giving it up ---- */

void
mmi_rlock_down(struct mmi_rlock *l)
{
    l->held = false; /* the broker deletes it with the connection */
    l->token = false;
}

/* Delete the lock queue (our connection owns it: closing the channel alone
 * would keep it until the connection ends), then leave the line, so that the
 * next in line gets the token and finds the lock free. Frees l. */
int
mmi_rlock_release(struct mmi_rlock *l)
{
    mm_t *mm = l->mm;
    int rc = MM_OK;
    l->r = NULL; /* nothing is reported to a stopped reader */
    if (l->held && l->lock_ch != 0 && mm->state == MMI_CONNECTED)
        rc = mmi_queue_delete(mm, l->lock_ch, l->lock_q);
    l->held = false;
    close_ch(mm, &l->lock_ch);
    close_ch(mm, &l->token_ch);
    free(l);
    return rc;
}

/* The outbox's verdict on a stopped reader's last cursor write (ud: its
 * lock, parked in t->releasing meanwhile). Called exactly once, also by
 * mm_free after the module is gone (l->t NULL: the connection is gone too). */
void
mmi_rlock_after(mm_t *mm, int status, void *ud)
{
    struct mmi_rlock *l = ud;
    if (l->t == NULL) {
        free(l);
        return;
    }
    for (struct mmi_rlock **p = &l->t->releasing; *p != NULL; p = &(*p)->next)
        if (*p == l) {
            *p = l->next;
            break;
        }
    if (status != MM_OK)
        mmi_msg_event(mm, MM_EV_ERROR, status, NULL, NULL,
                      "a stopped reader's last cursor write failed (%s): the next reader of %s "
                      "may read some records again",
                      mm_strerror(status), l->lock_q);
    mmi_rlock_release(l);
}

void
mmi_rlock_park(struct mmi_rlock *l)
{
    l->r = NULL;
    l->next = l->t->releasing;
    l->t->releasing = l;
}

void
mmi_rlock_orphan(struct mmi_topics *t)
{
    struct mmi_rlock *l = t->releasing;
    while (l != NULL) {
        struct mmi_rlock *next = l->next;
        l->t = NULL;
        l->next = NULL;
        l = next;
    }
    t->releasing = NULL;
}
