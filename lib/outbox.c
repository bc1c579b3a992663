/*
 * The outbox (see outbox.h). Entries are flat copies: the properties'
 * strings, the encoded header table, exchange, routing key and body in one
 * allocation, so that the buffer's size bound is exact and a re-send needs
 * nothing from the caller. Two lists, both in send order: `wait` (not yet
 * written) and `sent` (written on the confirm channel, waiting for the
 * broker's ack). Verdicts are delivered from an event, never inside a call
 * that caused them.
 */
#include <event2/event.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "outbox.h"
#include "publish.h"
#include "sendq.h"

typedef struct mmi_out {
    mmi_sendq_node_t node; /* first: a queue's node is its send */
    int64_t deadline;      /* monotonic ms; 0: none */
    unsigned flags;
    int verdict; /* MM_ENOROUTE once returned, else MM_OK */
    mmi_sent_fn done;
    void *ud;
    size_t size;
    bool mandatory;
    amqp_bytes_t props, body; /* props encoded as on the wire; both in data */
    char *exchange, *routing_key;
    char message_id[37]; /* a confirmed send's, to recognise its basic.return; else "" */
    char data[];
} mmi_out_t;

struct mmi_outbox {
    mmi_sendq_t wait, sent, done;
    size_t bytes, count;
    uint64_t next_seq;
    struct event *ev_done, *timer;
};

static void
push(mmi_sendq_t *q, mmi_out_t *e)
{
    mmi_sendq_push(q, &e->node);
}

static mmi_out_t *
pop(mmi_sendq_t *q)
{
    return (mmi_out_t *) mmi_sendq_pop(q);
}

static mmi_out_t *
head(const mmi_sendq_t *q)
{
    return (mmi_out_t *) q->head;
}

/* ---- verdicts ---- */

static void arm_timer(mm_t *mm);

static void
settle(mm_t *mm, mmi_out_t *e, int verdict)
{
    struct mmi_outbox *ob = mm->outbox;
    ob->bytes -= e->size; /* counted as pending until its verdict is reported */
    e->verdict = verdict;
    push(&ob->done, e);
    event_active(ob->ev_done, EV_TIMEOUT, 0);
}

static void
report(mm_t *mm, mmi_out_t *e)
{
    if (e->done != NULL) {
        e->done(mm, e->verdict, e->ud);
    } else if (e->verdict != MM_OK && e->verdict != MM_ENOROUTE) {
        /* MM_ENOROUTE was reported as MM_EV_UNROUTABLE already. */
        mmi_msg_event(mm, MM_EV_ERROR, e->verdict, NULL, NULL, "a send to '%s' failed: %s",
                      e->routing_key[0] ? e->routing_key : e->exchange, mm_strerror(e->verdict));
    }
}

static void
on_done(evutil_socket_t fd, short what, void *arg)
{
    mm_t *mm = arg;
    (void) fd;
    (void) what;
    mmi_enter(mm);
    mmi_out_t *e;
    while (mmi_alive(mm) && mm->outbox != NULL && (e = pop(&mm->outbox->done)) != NULL) {
        report(mm, e); /* e.g. the ack of a dead-lettered original: part of a drain */
        free(e);
        if (mm->outbox != NULL)
            mm->outbox->count--;
    }
    arm_timer(mm);
    mmi_leave(mm);
}

/* ---- the send timeout ---- */

static int
timeout_code(const mm_t *mm, const mmi_out_t *e)
{
    if (e->node.seq != 0)
        return MM_ETIMEDOUT; /* written, no confirm */
    if (mm->state != MMI_CONNECTED)
        return MM_ENOTCONN;
    return mm->blocked ? MM_EBLOCKED : MM_ETIMEDOUT;
}

static void
expire(mm_t *mm, mmi_sendq_t *l, int64_t now)
{
    while (head(l) != NULL && head(l)->deadline != 0 && head(l)->deadline <= now) {
        mmi_out_t *e = pop(l);
        settle(mm, e, timeout_code(mm, e));
    }
}

static void
on_timer(evutil_socket_t fd, short what, void *arg)
{
    mm_t *mm = arg;
    (void) fd;
    (void) what;
    int64_t now = (int64_t) mmi_now_ms();
    expire(mm, &mm->outbox->sent, now);
    expire(mm, &mm->outbox->wait, now);
    arm_timer(mm);
}

/* The timer follows the oldest deadline (both lists are in send order). */
static void
arm_timer(mm_t *mm)
{
    struct mmi_outbox *ob = mm->outbox;
    if (ob == NULL)
        return;
    int64_t next = 0;
    if (head(&ob->sent) != NULL && head(&ob->sent)->deadline != 0)
        next = head(&ob->sent)->deadline;
    if (head(&ob->wait) != NULL && head(&ob->wait)->deadline != 0 &&
        (next == 0 || head(&ob->wait)->deadline < next))
        next = head(&ob->wait)->deadline;
    if (next == 0) {
        event_del(ob->timer);
        return;
    }
    int64_t ms = next - (int64_t) mmi_now_ms();
    if (ms < 0)
        ms = 0;
    struct timeval tv = {.tv_sec = ms / 1000, .tv_usec = (ms % 1000) * 1000};
    event_add(ob->timer, &tv);
}

/* ---- setup ---- */

static int
outbox_init(mm_t *mm)
{
    if (mm->outbox != NULL)
        return MM_OK;
    struct mmi_outbox *ob = calloc(1, sizeof *ob);
    if (ob == NULL)
        return mmi_fail(mm, MM_ENOMEM, "out of memory");
    ob->ev_done = event_new(mm->base, -1, 0, on_done, mm);
    ob->timer = evtimer_new(mm->base, on_timer, mm);
    if (ob->ev_done == NULL || ob->timer == NULL) {
        if (ob->ev_done)
            event_free(ob->ev_done);
        free(ob);
        return mmi_fail(mm, MM_ENOMEM, "out of memory");
    }
    ob->next_seq = 1; /* delivery tags count from 1 after confirm.select */
    mm->outbox = ob;
    return MM_OK;
}

/* ---- entries ---- */

/* A confirmed send carries a message id (basic.return has no delivery tag):
 * the caller's, else a fresh one. */
static void
message_id(mm_t *mm, amqp_basic_properties_t *p, char id[37])
{
    if (p->_flags & AMQP_BASIC_MESSAGE_ID_FLAG) {
        snprintf(id, 37, "%.*s", (int) p->message_id.len, (const char *) p->message_id.bytes);
        return;
    }
    mmi_make_id(mm, id);
    p->_flags |= AMQP_BASIC_MESSAGE_ID_FLAG;
    p->message_id = amqp_cstring_bytes(id);
}

/* The properties as they go on the wire: kept encoded, they take half the
 * memory of the decoded struct and its strings, and are written as they are.
 * `stack` serves the usual sizes; larger ones are allocated (*heap). */
static int
encode_props(const amqp_basic_properties_t *p, amqp_bytes_t stack, amqp_bytes_t *out, void **heap)
{
    *heap = NULL;
    int n = amqp_encode_properties(AMQP_BASIC_CLASS, (void *) p, stack);
    for (size_t cap = stack.len * 2; n < 0 && cap <= (64u << 20); cap *= 2) {
        free(*heap);
        if ((*heap = malloc(cap)) == NULL)
            return MM_ENOMEM;
        n = amqp_encode_properties(AMQP_BASIC_CLASS, (void *) p, (amqp_bytes_t){cap, *heap});
        stack = (amqp_bytes_t){cap, *heap};
    }
    if (n < 0)
        return MM_EINVAL;
    *out = (amqp_bytes_t){(size_t) n, stack.bytes};
    return MM_OK;
}

/* Copy `b` to *at and point `dst` there. */
static void
put(char **at, amqp_bytes_t *dst, amqp_bytes_t b)
{
    if (b.len > 0)
        memcpy(*at, b.bytes, b.len);
    *dst = (amqp_bytes_t){b.len, *at};
    *at += b.len;
}

static char *
put_str(char **at, const char *s)
{
    size_t n = strlen(s) + 1;
    char *d = memcpy(*at, s, n);
    *at += n;
    return d;
}

static mmi_out_t *
entry_new(mm_t *mm, const mmi_out_msg_t *m, unsigned flags, mmi_sent_fn done, void *ud)
{
    amqp_basic_properties_t p = *m->props;
    char id[37] = "";
    if (flags & MMI_OUT_CONFIRM)
        message_id(mm, &p, id);
    uint8_t stack[1024];
    amqp_bytes_t enc;
    void *heap;
    if (encode_props(&p, (amqp_bytes_t){sizeof stack, stack}, &enc, &heap) != MM_OK)
        return NULL;
    size_t n = enc.len + m->body.len + strlen(m->exchange) + strlen(m->routing_key) + 2;
    mmi_out_t *e = malloc(sizeof *e + n);
    if (e != NULL) {
        *e = (mmi_out_t){.flags = flags, .done = done, .ud = ud, .mandatory = m->mandatory};
        e->size = sizeof *e + n;
        memcpy(e->message_id, id, sizeof id);
        char *at = e->data;
        put(&at, &e->props, enc);
        put(&at, &e->body, m->body);
        e->exchange = put_str(&at, m->exchange);
        e->routing_key = put_str(&at, m->routing_key);
        int64_t t = mm->opts.send_timeout_ms;
        e->deadline = t > 0 ? (int64_t) mmi_now_ms() + t : 0;
    }
    free(heap);
    return e;
}

/* ---- writing ---- */

static bool
can_write(const mm_t *mm)
{
    return mm->state == MMI_CONNECTED && !mm->blocked;
}

static int
write_entry(mm_t *mm, mmi_out_t *e)
{
    struct mmi_outbox *ob = mm->outbox;
    bool confirm = (e->flags & MMI_OUT_CONFIRM) != 0;
    uint16_t ch = 0;
    int rc = mmi_pub_channel(mm, confirm, strcmp(e->exchange, MMI_PUBSUB) == 0, &ch);
    if (rc != MM_OK)
        return rc;
    rc = mmi_publish_encoded(mm, ch, e->exchange, e->routing_key, e->mandatory, e->props, e->body);
    if (rc == MM_OK && confirm)
        e->node.seq = ob->next_seq++;
    return rc;
}

/* Write waiting entries in order while the connection allows. */
static void
flush(mm_t *mm)
{
    struct mmi_outbox *ob = mm->outbox;
    while (ob->wait.head != NULL && can_write(mm)) {
        mmi_out_t *e = head(&ob->wait);
        int rc = write_entry(mm, e);
        if (rc != MM_OK && mm->state == MMI_CONNECTED && !mm->blocked) {
            pop(&ob->wait); /* refused while the connection lives (a bad message): give up */
            settle(mm, e, MM_EBROKER);
            continue;
        }
        if (rc != MM_OK)
            return; /* connection lost meanwhile: it waits for the next one */
        pop(&ob->wait);
        if (e->node.seq != 0)
            push(&ob->sent, e);
        else
            settle(mm, e, MM_OK);
    }
}

bool
mmi_outbox_would_wait(const mm_t *mm, unsigned flags)
{
    bool queued = mm->outbox != NULL && mm->outbox->wait.head != NULL;
    return !can_write(mm) || queued || (flags & MMI_OUT_CONFIRM);
}

static int
write_now(mm_t *mm, const mmi_out_msg_t *m)
{
    uint16_t ch = 0;
    int rc = mmi_pub_channel(mm, false, strcmp(m->exchange, MMI_PUBSUB) == 0, &ch);
    return rc == MM_OK
               ? mmi_publish(mm, ch, m->exchange, m->routing_key, m->mandatory, m->props, m->body)
               : rc;
}

int
mmi_outbox_send(mm_t *mm, const mmi_out_msg_t *m, unsigned flags, mmi_sent_fn done, void *ud)
{
    bool buffer_ok = mm->state == MMI_RECONNECTING && (flags & MMI_OUT_BUFFER);
    if (mm->state != MMI_CONNECTED && !buffer_ok)
        return mmi_fail(mm, MM_ENOTCONN, "not connected");
    int rc = outbox_init(mm);
    if (rc != MM_OK)
        return rc;
    struct mmi_outbox *ob = mm->outbox;
    if (!mmi_outbox_would_wait(mm, flags) && done == NULL) { /* the common case: nothing kept */
        rc = write_now(mm, m);
        if (rc == MM_OK || mm->state == MMI_CONNECTED)
            return rc; /* sent, or refused by a live connection */
        /* This write found the connection dead: wait for the next one, if allowed. */
        if (mm->state != MMI_RECONNECTING || !(flags & MMI_OUT_BUFFER) ||
            (flags & MMI_OUT_FAIL_FAST))
            return mmi_fail(mm, MM_ENOTCONN, "not connected (the connection died while sending)");
    }
    mmi_out_t *e = entry_new(mm, m, flags, done, ud);
    if (e == NULL)
        return mmi_fail(mm, MM_ENOMEM, "out of memory");
    if (ob->bytes + e->size > mm->opts.send_buffer) {
        free(e);
        return mmi_fail(mm, MM_EFULL, "send buffer full (%zu bytes waiting or unconfirmed)",
                        ob->bytes);
    }
    ob->bytes += e->size;
    ob->count++;
    push(&ob->wait, e);
    flush(mm);
    arm_timer(mm);
    return MM_OK;
}

/* ---- what the broker says ---- */

struct verdict {
    mm_t *mm;
    int code;
};

static void
confirmed(mmi_sendq_node_t *n, void *ud)
{
    const struct verdict *v = ud;
    mmi_out_t *e = (mmi_out_t *) n;
    settle(v->mm, e, v->code != MM_OK ? v->code : e->verdict);
}

static void
confirm(mm_t *mm, uint64_t tag, bool multiple, int code)
{
    struct verdict v = {mm, code};
    mmi_sendq_confirm(&mm->outbox->sent, tag, multiple, confirmed, &v);
    arm_timer(mm);
}

void
mmi_outbox_confirm(mm_t *mm, const amqp_method_t *m)
{
    if (mm->outbox == NULL)
        return;
    if (m->id == AMQP_BASIC_ACK_METHOD) {
        const amqp_basic_ack_t *a = m->decoded;
        confirm(mm, a->delivery_tag, a->multiple, MM_OK);
    } else if (m->id == AMQP_BASIC_NACK_METHOD) {
        const amqp_basic_nack_t *n = m->decoded;
        confirm(mm, n->delivery_tag, n->multiple, MM_EBROKER);
    }
}

bool
mmi_outbox_returned(mm_t *mm, amqp_bytes_t message_id)
{
    if (mm->outbox == NULL || message_id.len == 0 || message_id.len > 36)
        return false;
    for (mmi_out_t *e = head(&mm->outbox->sent); e != NULL; e = (mmi_out_t *) e->node.next)
        if (strlen(e->message_id) == message_id.len &&
            memcmp(e->message_id, message_id.bytes, message_id.len) == 0) {
            e->verdict = MM_ENOROUTE; /* the ack that follows settles it */
            return true;
        }
    return false;
}

/* The confirm channel is gone. With the connection: its unconfirmed sends
 * wait again for the next one (at least once). Closed by the broker alone
 * (e.g. a publish to a missing exchange): which send it refused is unknown,
 * so none is retried (that could loop) and all fail. */
void
mmi_outbox_chan_closed(mm_t *mm, int code)
{
    struct mmi_outbox *ob = mm->outbox;
    if (ob == NULL)
        return;
    if (code == MM_ECHANNEL) {
        mmi_out_t *e;
        while ((e = pop(&ob->sent)) != NULL)
            settle(mm, e, MM_EBROKER);
    } else {
        for (mmi_out_t *e = head(&ob->sent); e != NULL; e = (mmi_out_t *) e->node.next)
            e->node.seq = 0;
        mmi_sendq_prepend(&ob->wait, &ob->sent);
    }
    ob->next_seq = 1;
}

void
mmi_outbox_resume(mm_t *mm)
{
    if (mm->outbox == NULL)
        return;
    flush(mm);
    arm_timer(mm);
}

size_t
mmi_outbox_pending(const mm_t *mm)
{
    return mm->outbox != NULL ? mm->outbox->count : 0;
}

static void
fail_list(mm_t *mm, mmi_sendq_t *l, int code)
{
    mmi_out_t *e;
    while ((e = pop(l)) != NULL)
        settle(mm, e, code);
}

void
mmi_outbox_close(mm_t *mm)
{
    if (mm->outbox == NULL)
        return;
    fail_list(mm, &mm->outbox->sent, MM_ECLOSED);
    fail_list(mm, &mm->outbox->wait, MM_ECLOSED);
    arm_timer(mm);
}

/* mm_free: verdicts still undelivered are delivered now (MM_ECLOSED), then
 * everything goes. Callbacks must not call back into mm (it is being freed). */
void
mmi_outbox_free(mm_t *mm)
{
    struct mmi_outbox *ob = mm->outbox;
    if (ob == NULL)
        return;
    mmi_outbox_close(mm);
    mmi_out_t *e;
    while ((e = pop(&ob->done)) != NULL) {
        if (e->done != NULL)
            e->done(mm, e->verdict, e->ud);
        free(e);
    }
    event_free(ob->ev_done);
    event_free(ob->timer);
    free(ob);
    mm->outbox = NULL;
}
