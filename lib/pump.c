/*
 * The frame pump: rabbitmq-c's socket on the libevent loop.
 *
 * Incoming frames can sit in three places that do not all wake the fd: the
 * kernel buffer, rabbitmq-c's read buffer and its frame queue (filled by
 * synchronous methods and by publishes), plus our own backlog (frames that
 * mmi_rpc read while waiting for its reply). The read callback drains all of
 * them until rabbitmq-c answers "nothing left" (AMQP_STATUS_TIMEOUT on a
 * zero-timeout read), within a budget, and re-arms itself when the budget
 * runs out. mmi_pump_kick() re-arms it after any call that may have read.
 * A timer at heartbeat/2 runs the same drain so that heartbeats are sent and
 * a silent broker is detected even when the loop has nothing else to do.
 * Channel pools are released frame by frame, except while a channel is in
 * the middle of a message or still has frames waiting in the backlog.
 */
#include <event2/event.h>
#include <stdlib.h>
#include <string.h>

#include "internal.h"
#include "outbox.h"

/* ---- backlog: frames set aside by mmi_rpc, in arrival order ---- */

int
mmi_backlog_push(mm_t *mm, const amqp_frame_t *f)
{
    if (mm->bl_head + mm->bl_len == mm->bl_cap) {
        if (mm->bl_head > 0) {
            memmove(mm->backlog, mm->backlog + mm->bl_head, mm->bl_len * sizeof *f);
            mm->bl_head = 0;
        } else {
            size_t cap = mm->bl_cap ? mm->bl_cap * 2 : 16;
            amqp_frame_t *b = realloc(mm->backlog, cap * sizeof *b);
            if (b == NULL)
                return MM_ENOMEM;
            mm->backlog = b;
            mm->bl_cap = cap;
        }
    }
    mm->backlog[mm->bl_head + mm->bl_len++] = *f;
    return MM_OK;
}

bool
mmi_backlog_pop(mm_t *mm, amqp_frame_t *f)
{
    if (mm->bl_len == 0)
        return false;
    *f = mm->backlog[mm->bl_head++];
    if (--mm->bl_len == 0)
        mm->bl_head = 0;
    return true;
}

bool
mmi_backlog_has_channel(const mm_t *mm, uint16_t ch)
{
    for (size_t i = 0; i < mm->bl_len; i++)
        if (mm->backlog[mm->bl_head + i].channel == ch)
            return true;
    return false;
}

/* ---- connection-level frames (channel 0) ---- */

static void
connection_closed_by_broker(mm_t *mm, const amqp_connection_close_t *c)
{
    amqp_connection_close_ok_t ok = {0};
    int code = mmi_err_from_close(c->reply_code);
    /* Answer close-ok so the broker can release the connection; ignore a send error. */
    amqp_send_method(mm->conn, 0, AMQP_CONNECTION_CLOSE_OK_METHOD, &ok);
    mmi_conn_lost(mm, code == MM_EAUTH || code == MM_EVHOST ? code : MM_EDISCONNECTED,
                  "broker closed the connection: %u %.*s", c->reply_code, (int) c->reply_text.len,
                  (const char *) c->reply_text.bytes);
}

void
mmi_conn_frame(mm_t *mm, const amqp_frame_t *f)
{
    if (f->frame_type != AMQP_FRAME_METHOD) {
        mmi_log(mm, MM_LOG_DEBUG, "ignored frame type %u on channel 0", f->frame_type);
        return;
    }
    const amqp_method_t *m = &f->payload.method;
    if (m->id == AMQP_CONNECTION_CLOSE_METHOD) {
        connection_closed_by_broker(mm, m->decoded);
    } else if (m->id == AMQP_CONNECTION_BLOCKED_METHOD) {
        const amqp_connection_blocked_t *b = m->decoded;
        mm->blocked = true;
        mmi_event(mm, MM_EV_BLOCKED, MM_OK, 0, "broker blocked publishing: %.*s",
                  (int) b->reason.len, (const char *) b->reason.bytes);
    } else if (m->id == AMQP_CONNECTION_UNBLOCKED_METHOD) {
        mm->blocked = false;
        mmi_event(mm, MM_EV_UNBLOCKED, MM_OK, 0, "broker unblocked publishing");
        mmi_outbox_resume(mm);
    } else {
        mmi_log(mm, MM_LOG_DEBUG, "ignored method 0x%08x on channel 0", m->id);
    }
}

void
mmi_frame_dispatch(mm_t *mm, const amqp_frame_t *f)
{
    if (f->channel == 0)
        mmi_conn_frame(mm, f);
    else
        mmi_chan_frame(mm, f);
}

/* ---- the drain ---- */

/* on_read activated by us for frames rabbitmq-c or the backlog holds: the
 * socket needs no read (the loop reports it when readable). */
#define BUFFERED_ONLY EV_WRITE

static bool
still_ours(const mm_t *mm, amqp_connection_state_t c)
{
    return mm->state == MMI_CONNECTED && mm->conn == c && mmi_alive(mm);
}

static void
release_channel(mm_t *mm, uint16_t ch)
{
    if (ch != 0 && (mmi_chan_busy(mm, ch) || mmi_backlog_has_channel(mm, ch)))
        return;
    amqp_maybe_release_buffers_on_channel(mm->conn, ch);
}

/* Next frame from the backlog, else from rabbitmq-c. 1: got one, 0: none left, <0: dead.
 * The socket itself is read only when `read_socket` (the fd was readable, or
 * the heartbeat timer: a read sends our heartbeat when due); otherwise only
 * what rabbitmq-c holds, since the loop watches the kernel's part. That
 * saves the recv (EAGAIN) + poll pair that proving "nothing left" costs at
 * every wakeup. */
static int
next_frame(mm_t *mm, amqp_frame_t *f, bool read_socket)
{
    if (mmi_backlog_pop(mm, f))
        return 1;
    if (!read_socket && !amqp_frames_enqueued(mm->conn) && !amqp_data_in_buffer(mm->conn))
        return 0;
    struct timeval zero = {0, 0};
    int st = amqp_simple_wait_frame_noblock(mm->conn, f, &zero);
    if (st == AMQP_STATUS_OK)
        return 1;
    if (st == AMQP_STATUS_TIMEOUT)
        return 0;
    mmi_conn_lost(mm, mmi_err_from_status(st), "reading from the broker: %s",
                  amqp_error_string2(st));
    return -1;
}

/* Dispatch up to `budget` frames. Returns true when frames may remain. */
static bool
drain(mm_t *mm, int budget, bool read_socket)
{
    amqp_connection_state_t c = mm->conn;
    for (int i = 0; i < budget; i++) {
        if (!still_ours(mm, c))
            return false;
        amqp_frame_t f;
        if (next_frame(mm, &f, read_socket && i == 0) <= 0)
            return false;
        /* rabbitmq-c can leak heartbeat frames through its queue: skip them. */
        if (f.frame_type == AMQP_FRAME_HEARTBEAT)
            continue;
        mmi_frame_dispatch(mm, &f);
        if (mmi_writer_due(mm)) /* slow handlers: do not hold their answers */
            mmi_writer_flush(mm);
        if (still_ours(mm, c))
            release_channel(mm, f.channel);
    }
    return still_ours(mm, c);
}

/* The read event and the heartbeat timer both land here: reading sends our
 * heartbeat when due and notices a broker gone silent. */
static void
on_read(evutil_socket_t fd, short what, void *arg)
{
    mm_t *mm = arg;
    (void) fd;
    mmi_enter(mm);
    mm->pumping = mm->conn;
    bool more = drain(mm, MMI_PUMP_BUDGET, (what & (EV_READ | EV_TIMEOUT)) != 0);
    mm->pumping = NULL;
    if (more) /* budget spent: let other events run first */
        event_active(mm->ev_read, BUFFERED_ONLY, 0);
    mmi_leave(mm);
}

int
mmi_pump_start(mm_t *mm)
{
    int fd = amqp_get_sockfd(mm->conn);
    mm->ev_read = event_new(mm->base, fd, EV_READ | EV_PERSIST, on_read, mm);
    if (mm->ev_read == NULL || event_add(mm->ev_read, NULL) != 0)
        return MM_ENOMEM;
    if (mm->heartbeat > 0) {
        struct timeval tv = {.tv_sec = mm->heartbeat / 2, .tv_usec = 0};
        if (tv.tv_sec == 0)
            tv = (struct timeval){.tv_sec = 0, .tv_usec = 500000};
        mm->ev_heartbeat = event_new(mm->base, -1, EV_PERSIST, on_read, mm);
        if (mm->ev_heartbeat == NULL || event_add(mm->ev_heartbeat, &tv) != 0)
            return MM_ENOMEM;
    }
    mmi_pump_kick(mm); /* login may have left frames buffered */
    return MM_OK;
}

void
mmi_pump_stop(mm_t *mm)
{
    /* Before the connection is destroyed: rabbitmq-c may close the fd itself. */
    if (mm->ev_read != NULL)
        event_free(mm->ev_read);
    if (mm->ev_heartbeat != NULL)
        event_free(mm->ev_heartbeat);
    mm->ev_read = mm->ev_heartbeat = NULL;
}

void
mmi_pump_kick(mm_t *mm)
{
    if (mm->state != MMI_CONNECTED || mm->ev_read == NULL)
        return;
    /* Inside a drain of this connection (an ack or publish from a handler):
     * the drain reads on until nothing is left, so there is nothing to re-arm. */
    if (mm->pumping == mm->conn)
        return;
    if (mm->bl_len > 0 || amqp_frames_enqueued(mm->conn) || amqp_data_in_buffer(mm->conn))
        event_active(mm->ev_read, BUFFERED_ONLY, 0);
}
