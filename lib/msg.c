/*
 * Messages: creation, accessors, references, and the settle operations a
 * handler uses (reply, reject, write, end, ack, nack). A message received
 * on a route is acked once, when it is settled; a request also gets exactly
 * one final answer. A request kept past its handler (mm_msg_ref) with a
 * deadline gets an expiry timer: when it fires unanswered, the request is
 * acked and dropped and an MM_EV_EXPIRED event is raised, so stale work
 * is not answered (PROTOCOL.md section 4.6).
 */
#include <stdlib.h>
#include <string.h>

#include <event2/event.h>

#include "deadletter.h"
#include "msg.h"

static const msgpack_object EMPTY_MAP = {.type = MSGPACK_OBJECT_MAP};

mm_msg_t *
mmi_msg_new(mm_t *mm, mm_msg_kind kind)
{
    mm_msg_t *msg = malloc(sizeof *msg);
    if (msg == NULL)
        return NULL;
    *msg = (mm_msg_t){.refs = 1, .mm = mm, .kind = kind, .sequence = -1};
    if (!msgpack_zone_init(&msg->zone, 512)) {
        free(msg);
        return NULL;
    }
    msg->body = (msgpack_object){.type = MSGPACK_OBJECT_NIL};
    msg->headers = EMPTY_MAP;
    msg->reply_to = msg->correlation_id = msg->request_id = msg->route = "";
    msg->err_code = msg->err_text = "";
    msg->msg_id = msg->sender = msg->causation_id = msg->traceparent = msg->type = "";
    msg->offset = -1;
    return msg;
}

const char *
mmi_msg_str(mm_msg_t *msg, const void *p, size_t n)
{
    char *s = msgpack_zone_malloc(&msg->zone, n + 1);
    if (s == NULL)
        return NULL;
    if (n > 0)
        memcpy(s, p, n);
    s[n] = '\0';
    return s;
}

static int
unpack_body(mm_msg_t *msg)
{
    /* msgpack_unpack trusts announced sizes (a 5-byte array header asks for
     * gigabytes) and fails deep nesting as ENOMEM: check the bytes first. */
    char why[8];
    if (mmi_msgpack_check(msg->raw, msg->raw_len, why, sizeof why) != MM_OK)
        return MM_EDECODE;
    size_t off = 0;
    msgpack_unpack_return r = msgpack_unpack(msg->raw, msg->raw_len, &off, &msg->zone, &msg->body);
    if (r == MSGPACK_UNPACK_NOMEM_ERROR)
        return MM_ENOMEM;
    if (r != MSGPACK_UNPACK_SUCCESS || off != msg->raw_len)
        return MM_EDECODE;
    return MM_OK;
}

int
mmi_msg_set_body(mm_msg_t *msg, const char *data, size_t len, bool borrowed, mmi_buf_t *own)
{
    if (!borrowed && own != NULL) {
        msg->own = *own;
        *own = (mmi_buf_t){0};
        data = msg->own.data;
        len = msg->own.len;
    }
    msg->raw = data;
    msg->raw_len = len;
    msg->raw_borrowed = borrowed;
    return unpack_body(msg);
}

/* The delivery's memory is only valid during the callback: copy before keeping. */
static int
own_body(mm_msg_t *msg)
{
    if (!msg->raw_borrowed)
        return MM_OK;
    mmi_buf_t b = {0};
    if (mmi_buf_append(&b, msg->raw, msg->raw_len) != MM_OK)
        return MM_ENOMEM;
    return mmi_msg_set_body(msg, NULL, 0, false, &b);
}

void
mmi_msg_live_add(mm_t *mm, mm_msg_t *msg)
{
    msg->live_next = mm->live;
    msg->live_prev = NULL;
    if (mm->live != NULL)
        mm->live->live_prev = msg;
    mm->live = msg;
    msg->live = true;
}

static void
live_remove(mm_msg_t *msg)
{
    if (!msg->live)
        return;
    if (msg->live_prev != NULL)
        msg->live_prev->live_next = msg->live_next;
    else
        msg->mm->live = msg->live_next;
    if (msg->live_next != NULL)
        msg->live_next->live_prev = msg->live_prev;
    msg->live = false;
}

static void
expiry_stop(mm_msg_t *msg)
{
    if (msg->expiry != NULL) {
        event_free(msg->expiry);
        msg->expiry = NULL;
    }
}

void
mmi_msgs_detach(mm_t *mm)
{
    while (mm->live != NULL) {
        mm_msg_t *msg = mm->live;
        live_remove(msg);
        expiry_stop(msg);
        msg->mm = NULL;
    }
}

static void
on_expiry(evutil_socket_t fd, short what, void *arg)
{
    mm_msg_t *msg = arg;
    mm_t *mm = msg->mm;
    (void) fd;
    (void) what;
    expiry_stop(msg);
    if (mm == NULL || msg->answered || msg->streaming)
        return; /* a stream has begun answering: each part restarts the requester's timeout */
    mmi_enter(mm);
    msg->expired = true;
    mmi_msg_ack(msg);
    mmi_msg_event(
        mm, MM_EV_EXPIRED, MM_ETIMEDOUT, msg->route, msg->request_id[0] ? msg->request_id : NULL,
        "request on '%s' not answered before its deadline: acked and dropped", msg->route);
    mmi_leave(mm);
}

void
mmi_msg_arm_expiry(mm_msg_t *msg)
{
    if (msg->deadline_ms == 0 || msg->answered || msg->expiry != NULL || msg->mm == NULL)
        return;
    uint64_t now = mmi_now_ms();
    uint64_t left = (uint64_t) msg->deadline_ms > now ? (uint64_t) msg->deadline_ms - now : 0;
    msg->expiry = evtimer_new(msg->mm->base, on_expiry, msg);
    if (msg->expiry == NULL)
        return; /* no timer: the request simply never expires on this side */
    struct timeval tv = {(time_t) (left / 1000), (suseconds_t) (left % 1000) * 1000};
    evtimer_add(msg->expiry, &tv);
}

/* ---- references ---- */

mm_msg_t *
mm_msg_ref(mm_msg_t *msg)
{
    if (msg == NULL)
        return NULL;
    if (own_body(msg) != MM_OK && msg->mm != NULL)
        mmi_log(msg->mm, MM_LOG_ERR, "out of memory keeping a message body");
    /* A request or task settled later may have to be dead-lettered as it came. */
    bool settles = msg->kind == MM_MSG_REQUEST || msg->kind == MM_MSG_TASK;
    if (settles && !msg->acked && !msg->no_ack && mmi_dl_keep(msg) != MM_OK && msg->mm != NULL)
        mmi_log(msg->mm, MM_LOG_ERR,
                "out of memory keeping a delivery: a dead-letter would "
                "give it back to its queue instead");
    msg->refs++;
    return msg;
}

static void
msg_destroy(mm_msg_t *msg)
{
    live_remove(msg);
    expiry_stop(msg);
    for (size_t i = 0; i < msg->nparts; i++)
        mm_msg_unref(msg->parts[i]);
    free(msg->parts);
    mmi_buf_free(&msg->own);
    mmi_dl_kept_free(msg->kept);
    msgpack_zone_destroy(&msg->zone);
    free(msg);
}

mm_msg_t *
mm_msg_unref(mm_msg_t *msg)
{
    if (msg == NULL || --msg->refs > 0)
        return NULL;
    mmi_dl_release(msg);
    msg_destroy(msg);
    return NULL;
}

/* ---- accessors ---- */

mm_msg_kind
mm_msg_kind_of(const mm_msg_t *msg)
{
    return msg->kind;
}

const msgpack_object *
mm_msg_body(const mm_msg_t *msg)
{
    return &msg->body;
}

const void *
mm_msg_body_raw(const mm_msg_t *msg, size_t *ret_len)
{
    if (ret_len != NULL)
        *ret_len = msg->raw_len;
    return msg->raw;
}

const msgpack_object *
mm_msg_headers(const mm_msg_t *msg)
{
    return &msg->headers;
}

const msgpack_object *
mm_msg_header(const mm_msg_t *msg, const char *name)
{
    size_t n = name ? strlen(name) : 0;
    const msgpack_object_map *m = &msg->headers.via.map;
    for (uint32_t i = 0; name != NULL && i < m->size; i++) {
        const msgpack_object *k = &m->ptr[i].key;
        if (k->type == MSGPACK_OBJECT_STR && k->via.str.size == n &&
            memcmp(k->via.str.ptr, name, n) == 0)
            return &m->ptr[i].val;
    }
    return NULL;
}

const char *
mm_msg_route(const mm_msg_t *msg)
{
    return msg->route;
}

const char *
mm_msg_request_id(const mm_msg_t *msg)
{
    return msg->request_id;
}

const char *
mm_msg_correlation_id(const mm_msg_t *msg)
{
    return msg->correlation_id;
}

int
mm_msg_redelivered(const mm_msg_t *msg)
{
    if (msg->redelivered)
        return 1;
    /* A counted redelivery arrives as a new message carrying its count. */
    const msgpack_object *n = mm_msg_header(msg, MMI_H_DELIVERIES);
    return n != NULL && n->type == MSGPACK_OBJECT_POSITIVE_INTEGER && n->via.u64 > 0;
}

size_t
mm_msg_size(const mm_msg_t *msg)
{
    return msg->wire_size;
}

int
mm_msg_status(const mm_msg_t *msg)
{
    return msg->status;
}

const char *
mm_msg_error_code(const mm_msg_t *msg)
{
    return msg->err_code;
}

const char *
mm_msg_error_text(const mm_msg_t *msg)
{
    return msg->err_text;
}

int
mm_msg_is_final(const mm_msg_t *msg)
{
    return msg->final;
}

size_t
mm_msg_part_count(const mm_msg_t *msg)
{
    return msg->collected ? msg->nparts + 1 : 0;
}

const msgpack_object *
mm_msg_part(const mm_msg_t *msg, size_t i)
{
    if (!msg->collected || i > msg->nparts)
        return NULL;
    return i < msg->nparts ? &msg->parts[i]->body : &msg->body;
}
