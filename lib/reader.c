/*
 * Topic readers: mm_topic_read, stop and the reader's life on the
 * connection. On every connection a reader takes the same steps (lib/reader.h):
 * the topic exists, it waits in the consumer's line, it holds the lock, it
 * has read the stored cursor, it consumes the stream. mmi_reader_step does
 * the next one; a step that fails is tried again from a timer, with backoff
 * (the next in line retries the lock quickly while the old holder's lock goes
 * away; a standby tries it every MMI_READER_BACKSTOP_MS in case its token went
 * missing). The connection's end (the topics module's down hook) puts every
 * reader back at the first step, and up starts them again: a reader resumes
 * after the last record it settled, or after the stored cursor when another
 * reader went further meanwhile. Collaborators: lib/reader_lock.c,
 * lib/reader_cursor.c, lib/reader_record.c, lib/topic.c.
 */
#include <event2/event.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "reader.h"

/* ---- events and timers ---- */

void
mmi_reader_say(struct mm_reader *r, int ev, int code, const char *why)
{
    if (r->said == ev)
        return; /* ACTIVE and STANDBY are raised on a change only */
    r->said = ev;
    mmi_msg_event(r->mm, (mm_event_type) ev, code, r->consumer, NULL,
                  "reader '%s' of topic '%s' %s", r->consumer, r->topic, why);
}

static uint64_t
backoff_ms(const struct mm_reader *r)
{
    const struct mmi_rlock *l = r->lock;
    unsigned n = r->retries < 10 ? r->retries : 10;
    uint64_t next_in_line = 50u << n, failed = 100u << n;
    if (l->token && !l->held && mmi_now_ms() - l->token_ms < MMI_READER_BACKSTOP_MS)
        return next_in_line < 1000 ? next_in_line : 1000;
    if (r->topic_ok && l->token_ch != 0 && !l->held)
        return MMI_READER_BACKSTOP_MS; /* a standby: the token wakes it */
    return failed < MMI_READER_BACKSTOP_MS ? failed : MMI_READER_BACKSTOP_MS;
}

static void
arm(struct mm_reader *r, uint64_t ms)
{
    struct timeval tv = {.tv_sec = (long) (ms / 1000), .tv_usec = (long) (ms % 1000) * 1000};
    evtimer_add(r->retry, &tv);
}

void
mmi_reader_later(struct mm_reader *r)
{
    if (r->mm->state != MMI_CONNECTED || r->stop_pending || r->t->closing)
        return;
    arm(r, backoff_ms(r));
    r->retries++;
}

void
mmi_reader_wake(struct mm_reader *r)
{
    if (r->t->closing)
        return;
    r->retries = 0;
    arm(r, 0);
}

static void
on_retry(evutil_socket_t fd, short what, void *arg)
{
    struct mm_reader *r = arg;
    mm_t *mm = r->mm;
    (void) fd;
    (void) what;
    if (mm->state != MMI_CONNECTED)
        return;
    mmi_enter(mm);
    mmi_reader_step(r);
    mmi_leave(mm);
}

/* ---- the steps ---- */

static void
on_read_method(mm_t *mm, uint16_t ch, const amqp_method_t *m, void *ud)
{
    struct mm_reader *r = ud;
    if (ch != r->read_ch)
        return;
    if (m->id == AMQP_BASIC_GET_EMPTY_METHOD) {
        mmi_cursor_none(r);
    } else if (m->id == AMQP_BASIC_CANCEL_METHOD) {
        mmi_reader_unread(r);
        r->topic_ok = false;
        mmi_msg_event(mm, MM_EV_ERROR, MM_ECHANNEL, r->consumer, NULL,
                      "the broker cancelled reader '%s' of topic '%s' (topic deleted?)",
                      r->consumer, r->topic);
        mmi_reader_later(r);
    }
}

static void
on_read_closed(mm_t *mm, uint16_t ch, int code, const char *text, void *ud)
{
    struct mm_reader *r = ud;
    if (ch != r->read_ch)
        return;
    bool established = r->reading || r->getting;
    r->read_ch = 0;
    r->reading = r->getting = false;
    /* The connection's end: the down hook does the rest. A refusal of a
     * synchronous step: the step reports it and tries again. */
    if (code != MM_ECHANNEL || !established)
        return;
    mmi_msg_event(mm, MM_EV_ERROR, code, r->consumer, NULL, "reader '%s' of topic '%s': %s",
                  r->consumer, r->topic, text);
    mmi_reader_later(r);
}

static const mmi_chan_ops_t READ_OPS = {
    .on_content = mmi_reader_content, .on_method = on_read_method, .on_closed = on_read_closed};

void
mmi_reader_unread(struct mm_reader *r)
{
    uint16_t ch = r->read_ch;
    r->read_ch = 0;
    r->reading = r->getting = false;
    if (ch != 0)
        mmi_chan_close(r->mm, ch); /* what was delivered and not settled is read again */
}

static int
take_lock(struct mm_reader *r)
{
    if (r->lock->held)
        return MM_OK;
    int rc = mmi_rlock_try(r->lock);
    if (rc == MM_ESTATE) {
        r->took_over = true; /* when it gets the lock, it goes on from the stored cursor */
        mmi_reader_say(r, MM_EV_READER_STANDBY, MM_OK, "waits: another reader holds its lock");
    }
    return rc;
}

/* The read channel, and the stored cursor asked for (the answer comes
 * through the pump: lib/reader_cursor.c then starts the consumer). */
static int
open_read(struct mm_reader *r)
{
    int rc = mmi_chan_open(r->mm, &READ_OPS, r, &r->read_ch);
    if (rc == MM_OK)
        rc = mmi_cursor_ask(r);
    if (rc != MM_OK)
        mmi_reader_unread(r);
    return rc;
}

static int
step(struct mm_reader *r)
{
    int rc = r->topic_ok ? MM_OK : mmi_topic_check(r->mm, r->topic);
    r->topic_ok = rc == MM_OK;
    if (rc == MM_OK)
        rc = mmi_rlock_join(r->lock);
    if (rc == MM_OK)
        rc = take_lock(r);
    if (rc == MM_OK && r->read_ch == 0)
        rc = open_read(r);
    return rc;
}

void
mmi_reader_step(struct mm_reader *r)
{
    mm_t *mm = r->mm;
    if (mm->state != MMI_CONNECTED || r->stop_pending || r->t->closing)
        return;
    int rc = step(r);
    if (rc == MM_OK || mm->state != MMI_CONNECTED)
        return;
    if (rc == MM_ENOENT && !r->missing_told) {
        r->missing_told = true;
        mmi_msg_event(mm, MM_EV_ERROR, rc, r->consumer, NULL, "reader '%s' waits: %s", r->consumer,
                      mm->last_error);
    } else if (rc != MM_ENOENT && rc != MM_ESTATE && r->retries == 0) {
        mmi_msg_event(mm, MM_EV_ERROR, rc, r->consumer, NULL,
                      "reader '%s' of topic '%s': %s; trying again", r->consumer, r->topic,
                      mm->last_error);
    }
    mmi_reader_later(r);
}

void
mmi_reader_lock_lost(struct mm_reader *r, const char *why)
{
    mmi_reader_unread(r);
    if (r->save_timer != NULL)
        event_del(r->save_timer);
    char text[MMI_ERRBUF];
    snprintf(text, sizeof text, "lost its lock (%s): another process may read it now", why);
    mmi_reader_say(r, MM_EV_READER_STANDBY, MM_ECHANNEL, text);
    mmi_reader_later(r);
}

/* ---- the connection (the topics module's hooks) ---- */

void
mmi_readers_up(struct mmi_topics *t)
{
    t->closing = false;
    for (struct mm_reader *r = t->readers; r != NULL && t->mm->state == MMI_CONNECTED;
         r = r->next) {
        r->retries = 0;
        mmi_reader_step(r);
    }
}

/* mm_close: no more records; the last cursor goes out while the drain waits. */
void
mmi_readers_quiesce(struct mmi_topics *t)
{
    t->closing = true;
    for (struct mm_reader *r = t->readers; r != NULL; r = r->next) {
        event_del(r->retry);
        mmi_reader_unread(r);
        if (mmi_cursor_due(r))
            mmi_cursor_write(r, NULL, NULL);
    }
}

/* Channels are zeroed by their on_closed when the connection is reaped. */
void
mmi_readers_down(struct mmi_topics *t)
{
    for (struct mm_reader *r = t->readers; r != NULL; r = r->next) {
        bool was = r->lock->held || r->reading;
        event_del(r->retry);
        if (r->save_timer != NULL)
            event_del(r->save_timer);
        r->reading = r->getting = false;
        r->topic_ok = r->missing_told = false;
        mmi_rlock_down(r->lock);
        if (was)
            mmi_reader_say(r, MM_EV_READER_STANDBY, MM_EDISCONNECTED,
                           "lost its lock: the connection is gone");
    }
}

static void
reader_free(struct mm_reader *r)
{
    if (r->retry != NULL)
        event_free(r->retry);
    if (r->save_timer != NULL)
        event_free(r->save_timer);
    for (size_t i = 0; i < r->ntypes; i++)
        free(r->types[i]);
    free(r->types);
    free(r->topic);
    free(r->consumer);
    free(r);
}

void
mmi_readers_destroy(struct mmi_topics *t)
{
    while (t->readers != NULL) {
        struct mm_reader *r = t->readers;
        t->readers = r->next;
        mmi_reader_unread(r);
        mmi_rlock_release(r->lock);
        reader_free(r);
    }
}

/* ---- mm_topic_read ---- */

static bool
from_ok(mm_from_t f)
{
    if (f.kind < MM_FROM_CURSOR || f.kind > MM_FROM_TIMESTAMP)
        return false;
    return (f.kind != MM_FROM_OFFSET && f.kind != MM_FROM_TIMESTAMP) || f.value >= 0;
}

static int
load_read_opts(mm_t *mm, const mm_read_opts_t *opts, mm_read_opts_t *o)
{
    *o = (mm_read_opts_t) MM_READ_OPTS_INIT;
    if (opts != NULL) {
        if (opts->size < offsetof(mm_read_opts_t, fallback) + sizeof opts->fallback)
            return mmi_fail(mm, MM_EINVAL, "read options not set up with MM_READ_OPTS_INIT");
        memcpy(o, opts, opts->size < sizeof *o ? opts->size : sizeof *o);
    }
    if (o->fallback.kind == MM_FROM_CURSOR) /* {0}: the first record */
        o->fallback = (mm_from_t){MM_FROM_FIRST, 0};
    if (!from_ok(o->fallback))
        return mmi_fail(mm, MM_EINVAL, "read options: fallback is not a valid start");
    if (o->ntypes > 0 && o->types == NULL)
        return mmi_fail(mm, MM_EINVAL, "read options: %zu types but no array", o->ntypes);
    for (size_t i = 0; i < o->ntypes; i++) {
        int rc = mmi_check_name(mm, "type", o->types[i], 0);
        if (rc != MM_OK)
            return rc;
    }
    return MM_OK;
}

static struct mm_reader *
find_reader(struct mmi_topics *t, const char *consumer)
{
    for (struct mm_reader *r = t->readers; r != NULL; r = r->next)
        if (strcmp(r->consumer, consumer) == 0)
            return r;
    return NULL;
}

static int
read_check(mm_t *mm, const char *topic, const char *consumer, mm_from_t from, mm_msg_fn handler)
{
    int rc = mmi_check_usable(mm);
    if (rc == MM_OK)
        rc = mmi_check_name(mm, "topic", topic, 0);
    if (rc == MM_OK)
        rc = mmi_check_name(mm, "consumer", consumer, 0);
    if (rc != MM_OK)
        return rc;
    /* q.readerToken.<service>.<consumer>, the longest of its queue names */
    if (strlen("q.readerToken..") + strlen(mm->service) + strlen(consumer) > MMI_AMQP_NAME_MAX)
        return mmi_fail(mm, MM_ENAME, "consumer '%s' too long for service '%s' (queue names)",
                        consumer, mm->service);
    if (handler == NULL)
        return mmi_fail(mm, MM_EINVAL, "no handler given for topic '%s'", topic);
    if (!from_ok(from))
        return mmi_fail(mm, MM_EINVAL, "from: not a valid start (kind %d)", (int) from.kind);
    struct mmi_topics *t = mmi_topics_get(mm);
    if (t == NULL)
        return mmi_fail(mm, MM_ENOMEM, "out of memory");
    if (find_reader(t, consumer) != NULL)
        return mmi_fail(mm, MM_ESTATE, "this instance reads as consumer '%s' already", consumer);
    return MM_OK;
}

static int
copy_types(struct mm_reader *r, const mm_read_opts_t *o)
{
    if (o->ntypes == 0)
        return MM_OK;
    r->types = calloc(o->ntypes, sizeof *r->types);
    if (r->types == NULL)
        return MM_ENOMEM;
    for (size_t i = 0; i < o->ntypes; i++) {
        r->types[i] = strdup(o->types[i]);
        if (r->types[i] == NULL)
            return MM_ENOMEM;
        r->ntypes = i + 1;
    }
    return MM_OK;
}

static struct mm_reader *
reader_new(mm_t *mm, const char *topic, const char *consumer, const mm_read_opts_t *o)
{
    struct mm_reader *r = calloc(1, sizeof *r);
    if (r == NULL)
        return NULL;
    *r = (struct mm_reader){
        .mm = mm,
        .t = mmi_topics_get(mm),
        .topic = strdup(topic),
        .consumer = strdup(consumer),
        .fallback = o->fallback,
        .prefetch = o->prefetch ? o->prefetch : MMI_READER_PREFETCH,
        .cursor_every = o->cursor_every ? o->cursor_every : MMI_READER_CURSOR_EVERY,
        .cursor_ms = o->cursor_interval_ms ? o->cursor_interval_ms : MMI_READER_CURSOR_MS,
        .start = -1,
        .position = -1,
        .written = -1};
    mmi_stream_queue(r->stream_q, sizeof r->stream_q, topic);
    snprintf(r->cursor_q, sizeof r->cursor_q, "q.cursor.%s.%s", mm->service, consumer);
    r->retry = evtimer_new(mm->base, on_retry, r);
    if (r->topic != NULL && r->consumer != NULL && r->retry != NULL && copy_types(r, o) == MM_OK)
        r->lock = mmi_rlock_new(r);
    if (r->lock == NULL) {
        reader_free(r);
        return NULL;
    }
    return r;
}

int
mm_topic_read(mm_t *mm, const char *topic, const char *consumer, mm_from_t from, mm_msg_fn handler,
              void *ud, const mm_read_opts_t *opts, mm_reader_t **ret_reader)
{
    if (mm == NULL)
        return MM_EINVAL;
    mm_read_opts_t o;
    int rc = read_check(mm, topic, consumer, from, handler);
    if (rc == MM_OK)
        rc = load_read_opts(mm, opts, &o);
    if (rc == MM_OK && mm->state == MMI_CONNECTED)
        rc = mmi_topic_check(mm, topic); /* unknown: MM_ENOENT now; else at connect */
    if (rc != MM_OK)
        return rc;
    struct mm_reader *r = reader_new(mm, topic, consumer, &o);
    if (r == NULL)
        return mmi_fail(mm, MM_ENOMEM, "out of memory");
    r->from = from;
    r->fn = handler;
    r->ud = ud;
    r->topic_ok = mm->state == MMI_CONNECTED;
    r->next = r->t->readers;
    r->t->readers = r;
    mmi_reader_step(r); /* connected: in line and, when free, the lock now */
    if (ret_reader != NULL)
        *ret_reader = r;
    return MM_OK;
}

/* ---- the reader's handle ---- */

int
mm_reader_active(const mm_reader_t *r)
{
    return r != NULL && r->reading;
}

int64_t
mm_reader_position(const mm_reader_t *r)
{
    return r != NULL ? r->position : -1;
}

/* Write the cursor, then give the lock up once the broker confirmed it (a
 * standby taking over must find it); without anything new to write, now. */
static int
reader_stop(struct mm_reader *r)
{
    for (struct mm_reader **p = &r->t->readers; *p != NULL; p = &(*p)->next)
        if (*p == r) {
            *p = r->next;
            break;
        }
    event_del(r->retry);
    mmi_reader_unread(r);
    int rc = MM_OK;
    if (mmi_cursor_due(r) && mmi_cursor_write(r, mmi_rlock_after, r->lock) == MM_OK)
        mmi_rlock_park(r->lock);
    else
        rc = mmi_rlock_release(r->lock);
    reader_free(r);
    return rc;
}

int
mmi_reader_stop_pending(struct mm_reader *r)
{
    return reader_stop(r);
}

int
mm_reader_stop(mm_reader_t *r)
{
    if (r == NULL)
        return MM_EINVAL;
    if (r->in_handler > 0) { /* from its own handler: once the record is settled */
        r->stop_pending = true;
        return MM_OK;
    }
    return reader_stop(r);
}
