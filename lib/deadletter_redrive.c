/*
 * The dead-letter queue from the outside: its figures (a passive declare on
 * a throwaway channel) and the redrive, which moves its messages back to the
 * queues they came from. The redrive takes messages one by one with
 * basic.get on its own channel (the next get goes out as soon as a message
 * is republished, so gets and confirms overlap), republishes each to its
 * x-mm-dead-queue without our x-mm-* headers, confirmed and mandatory, and
 * acks it on the dead-letter queue once the broker confirmed it there. A
 * message that cannot move (no x-mm-dead-queue, a body dropped for its
 * size, its queue gone) stays unacked until the channel closes at the end,
 * which puts it back in the dead-letter queue: never taken twice by one
 * redrive, never lost. The call blocks, running the loop like
 * mm_request_sync, bounded by rpc_timeout_ms without progress.
 */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "deadletter.h"
#include "outbox.h"

int
mm_deadletter_stat(mm_t *mm, const char *service, mm_stat_t *ret_stat)
{
    if (mm == NULL || ret_stat == NULL)
        return MM_EINVAL;
    int rc = mmi_check_usable(mm);
    if (rc == MM_OK && service != NULL)
        rc = mmi_check_name(mm, "service name", service, 0);
    if (rc != MM_OK)
        return rc;
    char queue[MMI_QUEUE_MAX];
    mmi_dl_queue(queue, sizeof queue, service ? service : mm->service);
    return mmi_queue_stat(mm, queue, ret_stat);
}

/* ---- the redrive ---- */

typedef struct redrive {
    int refs;    /* the call, and each republish waiting for its verdict */
    bool active; /* the call still waits: counters and acks matter */
    uint16_t ch;
    uint32_t gen;
    char queue[MMI_QUEUE_MAX];
    uint32_t limit, seen, moved, inflight;
    bool getting, empty;
    int error;              /* the channel or connection is gone */
    uint64_t last_progress; /* monotonic ms */
} redrive;

/* One republish waiting for its confirm. */
typedef struct redrive_rec {
    redrive *rd;
    uint64_t tag;
} redrive_rec;

static void
rd_unref(redrive *rd)
{
    if (--rd->refs == 0)
        free(rd);
}

static void
on_sent(mm_t *mm, int status, void *ud)
{
    redrive_rec *rec = ud;
    redrive *rd = rec->rd;
    if (rd->active && mmi_alive(mm)) {
        rd->inflight--;
        rd->last_progress = mmi_now_ms();
        /* Not confirmed: it stays unacked, back in the dead-letter queue at the end. */
        if (status == MM_OK && mmi_chan_gen(mm, rd->ch) == rd->gen &&
            mmi_basic_ack(mm, rd->ch, rec->tag, false) == MM_OK)
            rd->moved++;
        else if (status != MM_OK)
            mmi_log(mm, MM_LOG_WARN, "redrive: a message was not moved: %s", mm_strerror(status));
    }
    free(rec);
    rd_unref(rd);
}

static void ask(mm_t *mm, redrive *rd);

/* Where the message goes back to, from its headers (NULL: it cannot move). */
static bool
target_of(const amqp_basic_properties_t *p, char *out, size_t cap)
{
    if (!(p->_flags & AMQP_BASIC_HEADERS_FLAG))
        return false;
    bool dropped = false, found = false;
    for (int i = 0; i < p->headers.num_entries; i++) {
        const amqp_table_entry_t *e = &p->headers.entries[i];
        amqp_bytes_t k = e->key;
        if (k.len == strlen(MMI_H_BODY_DROPPED) && memcmp(k.bytes, MMI_H_BODY_DROPPED, k.len) == 0)
            dropped = true;
        if (k.len == 15 && memcmp(k.bytes, "x-mm-dead-queue", 15) == 0 &&
            (e->value.kind == AMQP_FIELD_KIND_UTF8 || e->value.kind == AMQP_FIELD_KIND_BYTES) &&
            e->value.value.bytes.len > 0 && e->value.value.bytes.len < cap) {
            snprintf(out, cap, "%.*s", (int) e->value.value.bytes.len,
                     (const char *) e->value.value.bytes.bytes);
            found = true;
        }
    }
    return found && !dropped;
}

static bool
drop_for_redrive(amqp_bytes_t key)
{
    return mmi_dl_is_dead_header(key) || mmi_dl_is_count_header(key);
}

/* Republish one message taken from the dead-letter queue; false: it stays. */
static bool
move(mm_t *mm, redrive *rd, const mmi_content_t *c)
{
    char to[MMI_QUEUE_MAX];
    if (c->props == NULL || c->oversize || !target_of(c->props, to, sizeof to))
        return false;
    int n = c->props->headers.num_entries;
    amqp_table_entry_t *entries = malloc((size_t) (n > 0 ? n : 1) * sizeof *entries);
    redrive_rec *rec = malloc(sizeof *rec);
    int rc = MM_ENOMEM;
    if (entries != NULL && rec != NULL) {
        *rec = (redrive_rec){.rd = rd, .tag = c->delivery_tag};
        amqp_basic_properties_t p = *c->props;
        p.headers = mmi_dl_headers(c->props, drop_for_redrive, NULL, 0, entries);
        mmi_out_msg_t m = {
            .exchange = "", .routing_key = to, .mandatory = true, .props = &p, .body = c->body};
        rc = mmi_outbox_send(mm, &m, MMI_OUT_CONFIRM, on_sent, rec);
    }
    free(entries);
    if (rc != MM_OK) {
        free(rec);
        return false;
    }
    rd->refs++;
    rd->inflight++;
    return true;
}

static void
on_content(mm_t *mm, const mmi_content_t *c, void *ud)
{
    redrive *rd = ud;
    if (c->method != AMQP_BASIC_GET_OK_METHOD || !rd->active)
        return;
    rd->getting = false;
    rd->seen++;
    rd->last_progress = mmi_now_ms();
    if (!move(mm, rd, c))
        mmi_log(mm, MM_LOG_INFO,
                "redrive: a message of %s stays (no x-mm-dead-queue, body "
                "dropped, or not sent)",
                rd->queue);
    ask(mm, rd);
}

static void
on_method(mm_t *mm, uint16_t ch, const amqp_method_t *m, void *ud)
{
    redrive *rd = ud;
    (void) mm;
    (void) ch;
    if (m->id == AMQP_BASIC_GET_EMPTY_METHOD) {
        rd->getting = false;
        rd->empty = true;
        rd->last_progress = mmi_now_ms();
    }
}

static void
on_closed(mm_t *mm, uint16_t ch, int code, const char *text, void *ud)
{
    redrive *rd = ud;
    (void) ch;
    rd->error = mmi_fail(mm, code, "redrive: %s", text);
    rd->getting = false;
}

static const mmi_chan_ops_t REDRIVE_OPS = {
    .on_content = on_content, .on_method = on_method, .on_closed = on_closed};

/* The next basic.get, sent without waiting (its answer comes through the pump). */
static void
ask(mm_t *mm, redrive *rd)
{
    if (rd->seen >= rd->limit || rd->empty || rd->error || rd->getting)
        return;
    amqp_basic_get_t req = {.queue = amqp_cstring_bytes(rd->queue), .no_ack = 0};
    if (mmi_send_method(mm, rd->ch, AMQP_BASIC_GET_METHOD, &req) != MM_OK) {
        rd->error = mmi_fail(mm, MM_EDISCONNECTED, "redrive: connection lost");
        return;
    }
    rd->getting = true;
}

static bool
finished(const mm_t *mm, const redrive *rd)
{
    if (rd->error || mm->free_pending)
        return true;
    return (rd->empty || rd->seen >= rd->limit) && !rd->getting && rd->inflight == 0;
}

/* Finished, or no progress for rpc_timeout_ms (then rd->error says so). */
static bool
rd_done(mm_t *mm, void *ud)
{
    redrive *rd = ud;
    if (finished(mm, rd))
        return true;
    if (mmi_now_ms() - rd->last_progress < mm->opts.rpc_timeout_ms)
        return false;
    rd->error =
        mmi_fail(mm, MM_ETIMEDOUT, "redrive: no progress within %u ms", mm->opts.rpc_timeout_ms);
    return true;
}

static int
rd_wait(mm_t *mm, redrive *rd)
{
    int rc = mmi_loop_until(mm, rd_done, rd, -1);
    return rc == MM_ECLOSED ? MM_OK
           : rc != MM_OK    ? rc
                            : rd->error; /* ECLOSED: seen by the caller */
}

/* Figures, channel, first get: the redrive under way. */
static int
rd_start(mm_t *mm, redrive *rd, uint32_t max)
{
    mmi_dl_queue(rd->queue, sizeof rd->queue, mm->service);
    mm_stat_t st;
    int rc = mmi_queue_stat(mm, rd->queue, &st);
    if (rc == MM_ENOENT) {
        mmi_clear_error(mm); /* no dead-letter queue: nothing to move */
        return MM_OK;
    }
    if (rc != MM_OK)
        return rc;
    /* Only what is there now: messages dead-lettered again meanwhile wait. */
    rd->limit = max != 0 && max < st.messages ? max : st.messages;
    if (rd->limit == 0)
        return MM_OK;
    rc = mmi_chan_open(mm, &REDRIVE_OPS, rd, &rd->ch);
    if (rc != MM_OK)
        return rc;
    rd->gen = mmi_chan_gen(mm, rd->ch);
    rd->last_progress = mmi_now_ms();
    ask(mm, rd);
    return rd_wait(mm, rd);
}

/* Refused inside a callback of this instance, and on a base whose loop runs
 * already (a callback of another instance): the wait could never end. */
static int
rd_check(mm_t *mm)
{
    int rc = mmi_check_usable(mm);
    if (rc != MM_OK)
        return rc;
    rc = mmi_loop_usable(mm, "mm_deadletter_redrive");
    if (rc != MM_OK)
        return rc;
    if (mm->state != MMI_CONNECTED)
        return mmi_fail(mm, MM_ENOTCONN, "not connected");
    return MM_OK;
}

int
mm_deadletter_redrive(mm_t *mm, uint32_t max, uint32_t *ret_moved)
{
    if (mm == NULL)
        return MM_EINVAL;
    int rc = rd_check(mm);
    if (rc == MM_ECLOSED) {
        mmi_instance_destroy(mm);
        return rc;
    }
    if (rc != MM_OK)
        return rc;
    redrive *rd = calloc(1, sizeof *rd);
    if (rd == NULL)
        return mmi_fail(mm, MM_ENOMEM, "out of memory");
    *rd = (redrive){.refs = 1, .active = true};
    rc = rd_start(mm, rd, max);
    rd->active = false;
    uint32_t moved = rd->moved;
    if (rd->ch != 0 && mmi_chan_gen(mm, rd->ch) == rd->gen)
        mmi_chan_close(mm, rd->ch); /* what did not move goes back to the queue */
    rd_unref(rd);
    if (mm->free_pending) {
        mmi_instance_destroy(mm); /* mm_free() in a callback meanwhile */
        return MM_ECLOSED;
    }
    if (ret_moved != NULL)
        *ret_moved = moved;
    return rc;
}
