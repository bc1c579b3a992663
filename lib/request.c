/*
 * Requests: the reply queue (declared before the first request), the table
 * of pending requests keyed by correlation id, timeouts, streamed answers
 * put back in sequence order, and exactly one final callback per accepted
 * request (PROTOCOL.md section 4). Failures that do not come from the peer
 * (timeout, unroutable, cancel, disconnect, instance freed) reach the same
 * callback as a synthetic answer carrying the status.
 */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <event2/event.h>

#include "headers.h"
#include "msg.h"
#include "publish.h"
#include "request.h"

#define BUCKETS 1024u
#define MAX_SEQUENCE (1u << 20) /* a stream longer than this is refused */

struct mmi_req {
    struct mmi_req *hnext, *prev, *next;
    mm_t *mm;
    uint64_t id;
    char corr[37];
    char target[2 * MMI_NAME_MAX + 2]; /* service.route, for texts */
    mm_msg_fn fn;
    void *ud;
    unsigned flags;
    int64_t timeout_ms;  /* < 0: none */
    struct event *timer; /* in the same allocation, after the struct (req_new) */
    mm_msg_t **slots;    /* stream messages by sequence, waiting for their turn */
    uint32_t nslots, next_seq;
    int64_t end_seq;
    int fail_code; /* set when the reply queue died: completed from the deferred event */
    bool in_part_cb, canceled;
    bool sent; /* written to the broker (not waiting in the outbox) */
};

struct mmi_reqs {
    struct mmi_req *buckets[BUCKETS];
    struct mmi_req *all;
    uint64_t next_id;
    struct event *ev_fail;
};

static uint32_t
hash(const void *p, size_t n)
{
    uint32_t h = 2166136261u;
    for (size_t i = 0; i < n; i++)
        h = (h ^ ((const unsigned char *) p)[i]) * 16777619u;
    return h % BUCKETS;
}

static struct mmi_req *
find_corr(mm_t *mm, const void *corr, size_t n)
{
    if (mm->reqs == NULL || n != 36)
        return NULL;
    for (struct mmi_req *q = mm->reqs->buckets[hash(corr, n)]; q != NULL; q = q->hnext)
        if (memcmp(q->corr, corr, 36) == 0)
            return q;
    return NULL;
}

static void
table_add(struct mmi_reqs *t, struct mmi_req *q)
{
    struct mmi_req **b = &t->buckets[hash(q->corr, 36)];
    q->hnext = *b;
    *b = q;
    q->prev = NULL;
    q->next = t->all;
    if (t->all != NULL)
        t->all->prev = q;
    t->all = q;
}

static void
table_remove(struct mmi_reqs *t, struct mmi_req *q)
{
    for (struct mmi_req **p = &t->buckets[hash(q->corr, 36)]; *p != NULL; p = &(*p)->hnext)
        if (*p == q) {
            *p = q->hnext;
            break;
        }
    if (q->prev != NULL)
        q->prev->next = q->next;
    else
        t->all = q->next;
    if (q->next != NULL)
        q->next->prev = q->prev;
}

static void
req_free(struct mmi_req *q)
{
    if (q->timer != NULL)
        event_del(q->timer);
    for (uint32_t i = 0; i < q->nslots; i++)
        mm_msg_unref(q->slots[i]);
    free(q->slots);
    free(q);
}

/* The one final callback; the request is gone before it runs. */
static void
complete(struct mmi_req *q, mm_msg_t *final)
{
    mm_t *mm = q->mm;
    table_remove(mm->reqs, q);
    mm_msg_fn fn = q->fn;
    void *ud = q->ud;
    req_free(q);
    final->final = true;
    mmi_msg_handle(mm, final, fn, ud);
    mm_msg_unref(final);
}

static void fail(struct mmi_req *q, int status, const char *code, const char *fmt, ...)
    __attribute__((format(printf, 4, 5)));

static void
fail(struct mmi_req *q, int status, const char *code, const char *fmt, ...)
{
    char text[MMI_ERRBUF];
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(text, sizeof text, fmt, ap);
    va_end(ap);
    mm_msg_t *m = mmi_msg_new(NULL, MM_MSG_ANSWER);
    if (m == NULL) {
        mmi_log(q->mm, MM_LOG_ERR, "out of memory: request to %s dropped without callback",
                q->target);
        table_remove(q->mm->reqs, q);
        req_free(q);
        return;
    }
    m->status = status;
    m->err_code = mmi_msg_str(m, code, strlen(code));
    m->err_text = mmi_msg_str(m, text, strlen(text));
    m->correlation_id = mmi_msg_str(m, q->corr, 36);
    if (m->err_code == NULL || m->err_text == NULL || m->correlation_id == NULL)
        m->err_code = m->err_text = m->correlation_id = "";
    complete(q, m);
}

/* ---- timers ---- */

static void
timer_arm(struct mmi_req *q)
{
    if (q->timer == NULL)
        return;
    struct timeval tv = {(time_t) (q->timeout_ms / 1000),
                         (suseconds_t) (q->timeout_ms % 1000) * 1000};
    evtimer_add(q->timer, &tv);
}

static void
on_timeout(evutil_socket_t fd, short what, void *arg)
{
    struct mmi_req *q = arg;
    mm_t *mm = q->mm;
    (void) fd;
    (void) what;
    mmi_enter(mm);
    fail(q, MM_ETIMEDOUT, "timeout", "no answer from %s within %lld ms", q->target,
         (long long) q->timeout_ms);
    mmi_leave(mm);
}

/* ---- answers ---- */

static const msgpack_object *
map_get(const msgpack_object *m, const char *key)
{
    if (m->type != MSGPACK_OBJECT_MAP)
        return NULL;
    size_t n = strlen(key);
    for (uint32_t i = 0; i < m->via.map.size; i++) {
        const msgpack_object *k = &m->via.map.ptr[i].key;
        if (k->type == MSGPACK_OBJECT_STR && k->via.str.size == n &&
            memcmp(k->via.str.ptr, key, n) == 0)
            return &m->via.map.ptr[i].val;
    }
    return NULL;
}

static const char *
obj_str(mm_msg_t *m, const msgpack_object *o)
{
    if (o == NULL || o->type != MSGPACK_OBJECT_STR)
        return "";
    const char *s = mmi_msg_str(m, o->via.str.ptr, o->via.str.size);
    return s ? s : "";
}

/* The peer's error: {"error": {codeString, message}}, or those at the top (PROTOCOL.md 3). */
static void
read_error(mm_msg_t *m)
{
    const msgpack_object *e = map_get(&m->body, "error");
    const msgpack_object *src = e != NULL && e->type == MSGPACK_OBJECT_MAP ? e : &m->body;
    m->status = MM_EREMOTE;
    m->err_code = obj_str(m, map_get(src, "codeString"));
    m->err_text = obj_str(m, map_get(src, "message"));
    if (m->err_code[0] == '\0')
        m->err_code = "error";
}

static void deliver_parts(struct mmi_req *q);

static void
collect(struct mmi_req *q)
{
    if (q->end_seq < 0)
        return;
    for (int64_t i = 0; i <= q->end_seq; i++)
        if ((uint32_t) i >= q->nslots || q->slots[i] == NULL)
            return; /* an earlier part is still on its way */
    for (uint32_t i = (uint32_t) q->end_seq + 1; i < q->nslots; i++)
        q->slots[i] = mm_msg_unref(q->slots[i]); /* numbered past the end: a broken peer */
    mm_msg_t *end = q->slots[q->end_seq];
    end->parts = q->slots; /* the parts before the end; the end message itself is last */
    end->nparts = (size_t) q->end_seq;
    end->collected = true;
    q->slots[q->end_seq] = NULL;
    q->slots = NULL;
    q->nslots = 0;
    complete(q, end);
}

static int
slot_put(struct mmi_req *q, mm_msg_t *m)
{
    uint32_t seq = (uint32_t) m->sequence;
    if (seq >= q->nslots) {
        uint32_t n = q->nslots ? q->nslots : 8;
        while (n <= seq)
            n *= 2;
        mm_msg_t **s = realloc(q->slots, n * sizeof *s);
        if (s == NULL)
            return MM_ENOMEM;
        memset(s + q->nslots, 0, (n - q->nslots) * sizeof *s);
        q->slots = s;
        q->nslots = n;
    }
    if (q->slots[seq] != NULL || seq < q->next_seq)
        return MM_ESTATE; /* a duplicate (redelivery): the first copy counts */
    q->slots[seq] = m;
    if (m->is_end)
        q->end_seq = seq;
    return MM_OK;
}

static void
stream_in(struct mmi_req *q, mm_msg_t *m)
{
    if (m->sequence < 0 || m->sequence >= MAX_SEQUENCE) {
        mm_msg_unref(m);
        fail(q, MM_EDECODE, "badAnswer", "stream part from %s without a valid sequence", q->target);
        return;
    }
    int rc = slot_put(q, m);
    if (rc != MM_OK) {
        mmi_log(q->mm, MM_LOG_DEBUG, "stream part %lld from %s dropped: %s",
                (long long) m->sequence, q->target, rc == MM_ESTATE ? "duplicate" : "no memory");
        mm_msg_unref(m);
        return;
    }
    timer_arm(q); /* each part restarts the timeout */
    if (q->flags & MM_REQ_PARTS)
        deliver_parts(q);
    else
        collect(q);
}

static void
deliver_parts(struct mmi_req *q)
{
    mm_t *mm = q->mm;
    while (q->next_seq < q->nslots && q->slots[q->next_seq] != NULL) {
        mm_msg_t *m = q->slots[q->next_seq];
        q->slots[q->next_seq++] = NULL;
        if (m->is_end) {
            complete(q, m);
            return;
        }
        q->in_part_cb = true;
        mmi_msg_handle(mm, m, q->fn, q->ud);
        q->in_part_cb = false;
        mm_msg_unref(m);
        if (q->canceled) {
            fail(q, MM_ECANCELED, "canceled", "request to %s canceled", q->target);
            return;
        }
        if (!mmi_alive(mm))
            return; /* mm_free() in the callback: the rest fails with MM_ECLOSED */
    }
}

static void
answer_route(struct mmi_req *q, mm_msg_t *m)
{
    if (m->status == MM_EREMOTE || !m->is_stream)
        complete(q, m);
    else
        stream_in(q, m);
}

static int
answer_decode(mm_t *mm, mm_msg_t *m, const mmi_content_t *c, char *err, size_t errlen)
{
    const amqp_basic_properties_t *p = c->props;
    const amqp_table_t *t = p && (p->_flags & AMQP_BASIC_HEADERS_FLAG) ? &p->headers : NULL;
    mmi_mms_t mms;
    int rc = mmi_mms_parse(t, &mms, err, errlen);
    if (rc != MM_OK)
        return rc;
    m->is_stream = mms.is_stream;
    m->is_end = mms.is_end;
    m->sequence = mms.has_seq ? mms.sequence : -1;
    amqp_bytes_t rid = mmi_header_str(t, "idRequest");
    m->request_id = mmi_msg_str(m, rid.bytes, rid.len);
    if (m->request_id == NULL || mmi_headers_to_msgpack(t, &m->zone, &m->headers) != MM_OK)
        return MM_ENOMEM;
    mmi_wire_in_t in;
    rc = mmi_wire_decode(mm, c, &in, err, errlen);
    /* Stream parts may wait for earlier ones, and errors are read from their
     * body: they own their bytes. A plain reply goes to its callback at once
     * and borrows the delivery's (mm_msg_ref copies them). */
    bool borrow = in.borrowed && !mms.is_stream && !mms.is_error;
    if (rc == MM_OK && in.borrowed && !borrow)
        rc = mmi_buf_append(&in.buf, in.data, in.len);
    if (rc == MM_OK) {
        rc = borrow ? mmi_msg_set_body(m, in.data, in.len, true, NULL)
                    : mmi_msg_set_body(m, NULL, 0, false, &in.buf);
        if (rc == MM_EDECODE)
            snprintf(err, errlen, "body is not valid msgpack");
    }
    mmi_wire_in_free(&in);
    if (rc == MM_OK && mms.is_error)
        read_error(m);
    return rc;
}

static void
answer_unknown(mm_t *mm, const mmi_content_t *c)
{
    const amqp_basic_properties_t *p = c->props;
    amqp_bytes_t corr = p && (p->_flags & AMQP_BASIC_CORRELATION_ID_FLAG) ? p->correlation_id
                                                                          : (amqp_bytes_t){0, NULL};
    mmi_log(mm, MM_LOG_DEBUG, "answer for unknown request '%.*s' dropped (timed out or canceled)",
            (int) (corr.len > 64 ? 64 : corr.len), (const char *) corr.bytes);
    mmi_msg_event(mm, MM_EV_UNHANDLED, MM_ENOENT, NULL, NULL,
                  "answer for unknown request '%.*s' dropped",
                  (int) (corr.len > 64 ? 64 : corr.len), (const char *) corr.bytes);
}

static void
on_answer(mm_t *mm, const mmi_content_t *c, void *ud)
{
    (void) ud;
    const amqp_basic_properties_t *p = c->props;
    struct mmi_req *q = NULL;
    if (p != NULL && (p->_flags & AMQP_BASIC_CORRELATION_ID_FLAG))
        q = find_corr(mm, p->correlation_id.bytes, p->correlation_id.len);
    if (q == NULL || q->fail_code != 0) {
        answer_unknown(mm, c);
        return;
    }
    mm_msg_t *m = mmi_msg_new(NULL, MM_MSG_ANSWER);
    if (m == NULL) {
        fail(q, MM_ENOMEM, "outOfMemory", "no memory for the answer from %s", q->target);
        return;
    }
    m->correlation_id = mmi_msg_str(m, q->corr, 36); /* q is freed before the callback */
    if (m->correlation_id == NULL)
        m->correlation_id = "";
    m->wire_size = (size_t) c->body_size;
    m->redelivered = c->redelivered;
    char err[MMI_ERRBUF] = "";
    int rc = answer_decode(mm, m, c, err, sizeof err);
    if (rc == MM_OK)
        rc = mmi_msg_meta(m, p, 0);
    if (rc != MM_OK) {
        mm_msg_unref(m);
        mmi_msg_event(mm, MM_EV_ERROR, rc, NULL, NULL, "answer from %s: %s", q->target, err);
        fail(q, rc, "badAnswer", "answer from %s: %s", q->target, err[0] ? err : mm_strerror(rc));
        return;
    }
    answer_route(q, m);
}

/* ---- the reply queue and the table's life ---- */

static void
fail_marked(evutil_socket_t fd, short what, void *arg)
{
    mm_t *mm = arg;
    (void) fd;
    (void) what;
    mmi_enter(mm);
    /* From the head each time: a callback may complete (cancel) any other request. */
    for (;;) {
        struct mmi_req *q = mm->reqs->all;
        while (q != NULL && q->fail_code == 0)
            q = q->next;
        if (q == NULL || !mmi_alive(mm))
            break;
        fail(q, q->fail_code, "notConnected",
             "the reply queue was lost (connection or channel closed) before the answer from %s",
             q->target);
    }
    mmi_leave(mm);
}

/* The reply queue dies with its channel: every pending request fails, from the loop. */
static void
on_reply_closed(mm_t *mm, uint16_t ch, int code, const char *text, void *ud)
{
    (void) ch;
    (void) code;
    (void) text;
    (void) ud;
    mm->reply_ch = 0;
    if (mm->reqs == NULL)
        return;
    /* Requests still in the outbox are not concerned: they go out later. */
    for (struct mmi_req *q = mm->reqs->all; q != NULL; q = q->next)
        if (q->fail_code == 0 && q->sent)
            q->fail_code = MM_EDISCONNECTED;
    if (mm->reqs->all != NULL)
        event_active(mm->reqs->ev_fail, EV_TIMEOUT, 0);
}

static int reply_queue(mm_t *mm);

static struct mmi_req *
find_id(mm_t *mm, uint64_t id)
{
    struct mmi_req *q = mm->reqs ? mm->reqs->all : NULL;
    while (q != NULL && q->id != id)
        q = q->next;
    return q;
}

/* The outbox wrote (or gave up on) a request that had to wait. */
static void
on_request_sent(mm_t *mm, int status, void *ud)
{
    struct mmi_req *q = find_id(mm, (uint64_t) (uintptr_t) ud);
    if (q == NULL)
        return; /* completed meanwhile (timeout, cancel) */
    if (status == MM_OK)
        q->sent = true;
    else
        fail(q, status, status == MM_ECLOSED ? "closed" : "notConnected",
             "the request to %s could not be sent: %s", q->target, mm_strerror(status));
}

/* After a reconnect: requests that waited need the reply queue back first. */
void
mmi_requests_restore(mm_t *mm)
{
    if (mm->reqs == NULL || mm->reqs->all == NULL || mm->reply_ch != 0)
        return;
    if (reply_queue(mm) != MM_OK)
        mmi_msg_event(mm, MM_EV_ERROR, mm->last_code, NULL, NULL,
                      "declaring the reply queue after reconnecting failed: %s", mm->last_error);
}

/* The broker cancelled the reply queue's consumer (the queue was deleted from
 * outside): answers can no longer arrive. Fail what is pending now, and let the
 * next request declare the queue again. */
static void
on_reply_method(mm_t *mm, uint16_t ch, const amqp_method_t *m, void *ud)
{
    if (m->id != AMQP_BASIC_CANCEL_METHOD)
        return;
    mmi_msg_event(mm, MM_EV_ERROR, MM_ECHANNEL, NULL, NULL,
                  "the broker cancelled the consumer of reply queue %s (deleted?): pending "
                  "requests fail, the next request declares it again",
                  mm->reply_queue);
    on_reply_closed(mm, ch, MM_ECHANNEL, "reply queue consumer cancelled", ud);
    if (mmi_chan_is_open(mm, ch))
        mmi_chan_close(mm, ch);
}

static const mmi_chan_ops_t REPLY_OPS = {
    .on_content = on_answer, .on_method = on_reply_method, .on_closed = on_reply_closed};

static int
reqs_init(mm_t *mm)
{
    if (mm->reqs != NULL)
        return MM_OK;
    struct mmi_reqs *t = calloc(1, sizeof *t);
    if (t == NULL)
        return mmi_fail(mm, MM_ENOMEM, "out of memory");
    t->ev_fail = event_new(mm->base, -1, 0, fail_marked, mm);
    if (t->ev_fail == NULL) {
        free(t);
        return mmi_fail(mm, MM_ENOMEM, "out of memory");
    }
    mm->reqs = t;
    return MM_OK;
}

/* q.replyQueue.<service>.<id>: named before it is declared (a request may
 * wait in the outbox for the connection, with this reply-to). */
static int
reply_queue_name(mm_t *mm)
{
    if (mm->reply_queue != NULL)
        return MM_OK;
    size_t n = strlen(mm->service) + 64;
    if ((mm->reply_queue = malloc(n)) == NULL)
        return mmi_fail(mm, MM_ENOMEM, "out of memory");
    snprintf(mm->reply_queue, n, "q.replyQueue.%s.%s", mm->service, mm->id);
    return MM_OK;
}

static int
reply_queue(mm_t *mm)
{
    if (mm->reply_ch != 0)
        return MM_OK;
    if (reply_queue_name(mm) != MM_OK)
        return MM_ENOMEM;
    uint16_t ch = 0;
    int rc = mmi_chan_open(mm, &REPLY_OPS, NULL, &ch);
    if (rc == MM_OK)
        rc =
            mmi_queue_declare(mm, ch, mm->reply_queue, MMI_Q_DURABLE | MMI_Q_EXCLUSIVE, NULL, NULL);
    if (rc == MM_OK)
        rc = mmi_basic_consume(mm, ch, mm->reply_queue, true, true, NULL, 0);
    if (rc != MM_OK && mmi_chan_is_open(mm, ch))
        mmi_chan_close(mm, ch);
    if (rc == MM_OK)
        mm->reply_ch = ch;
    return rc;
}

void
mmi_requests_fail_all(mm_t *mm, int code)
{
    while (mm->reqs != NULL && mm->reqs->all != NULL)
        fail(mm->reqs->all, code, code == MM_ECLOSED ? "closed" : "notConnected",
             "%s before the answer from %s",
             code == MM_ECLOSED ? "instance freed" : "connection lost", mm->reqs->all->target);
}

void
mmi_requests_free(mm_t *mm)
{
    if (mm->reqs == NULL)
        return;
    while (mm->reqs->all != NULL) {
        struct mmi_req *q = mm->reqs->all;
        table_remove(mm->reqs, q);
        req_free(q);
    }
    event_free(mm->reqs->ev_fail);
    free(mm->reqs);
    mm->reqs = NULL;
    free(mm->reply_queue);
    mm->reply_queue = NULL;
}

bool
mmi_request_returned(mm_t *mm, amqp_bytes_t corr, amqp_bytes_t rk)
{
    struct mmi_req *q = find_corr(mm, corr.bytes, corr.len);
    if (q == NULL)
        return false;
    fail(q, MM_ENOROUTE, "unroutable", "no instance handles %s (queue %.*s does not exist)",
         q->target, (int) rk.len, (const char *) rk.bytes);
    return true;
}

/* ---- sending ---- */

static int
check_request_args(mm_t *mm, const char *service, const char *route, mm_msg_fn fn,
                   const mm_request_opts_t *o)
{
    int rc = mmi_check_dest(mm, "service name", service, 0, route);
    if (rc != MM_OK)
        return rc;
    if (fn == NULL)
        return mmi_fail(mm, MM_EINVAL, "no callback given");
    if (o->timeout_ms < 0 && o->timeout_ms != MM_NO_TIMEOUT)
        return mmi_fail(mm, MM_EINVAL,
                        "timeout %lld ms (positive, 0 for the default, or "
                        "MM_NO_TIMEOUT)",
                        (long long) o->timeout_ms);
    bool wait = mm->state == MMI_RECONNECTING && (mm->opts.flags & MM_OPT_OFFLINE_WAIT);
    if (mm->state != MMI_CONNECTED && !wait)
        return mmi_fail(mm, MM_ENOTCONN, "not connected%s",
                        mm->state == MMI_RECONNECTING ? " (reconnecting)" : "");
    return MM_OK;
}

static struct mmi_req *
req_new(mm_t *mm, const char *service, const char *route, const mm_request_opts_t *o, mm_msg_fn fn,
        void *ud)
{
    /* The timer's event lives after the struct: one allocation per request. */
    size_t head = (sizeof(struct mmi_req) + 15) & ~(size_t) 15;
    struct mmi_req *q = calloc(1, head + event_get_struct_event_size());
    if (q == NULL)
        return NULL;
    *q = (struct mmi_req){
        .mm = mm, .id = ++mm->reqs->next_id, .fn = fn, .ud = ud, .flags = o->flags, .end_seq = -1};
    q->timeout_ms = o->timeout_ms == 0 ? (int64_t) mm->opts.request_timeout_ms : o->timeout_ms;
    mmi_make_id(mm, q->corr);
    mmi_join(q->target, sizeof q->target, service, route);
    if (q->timeout_ms > 0) {
        q->timer = (struct event *) ((char *) q + head);
        evtimer_assign(q->timer, mm->base, on_timeout, q);
    }
    return q;
}

/* A positive integer in decimal (the AMQP expiration property). */
static void
decimal(char out[24], int64_t v)
{
    char tmp[24];
    int n = 0;
    do {
        tmp[n++] = (char) ('0' + v % 10);
        v /= 10;
    } while (v > 0 && n < 23);
    for (int i = 0; i < n; i++)
        out[i] = tmp[n - 1 - i];
    out[n] = '\0';
}

static int
request_publish(mm_t *mm, struct mmi_req *q, const char *service, const char *route,
                const mmi_wire_out_t *w, const mm_request_opts_t *o)
{
    char rid[37], queue[MMI_QUEUE_MAX], expiration[24], err[160] = "";
    int64_t iat = mmi_wall_ms();
    mmi_hdrs_t h;
    mmi_hdrs_init(&h);
    mmi_hdrs_mms_str(&h, "route", route);
    mmi_hdrs_mms_int(&h, "iat", iat);
    if (q->timeout_ms > 0)
        mmi_hdrs_mms_int(&h, "eat", iat + q->timeout_ms);
    if (o->request_id == NULL)
        mmi_make_id(mm, rid);
    int rc = mmi_meta_headers(mm, &h, mm->handling, o->causation_id, o->traceparent);
    if (rc == MM_OK)
        rc = mmi_meta_check_id(mm, o->message_id);
    if (rc != MM_OK) {
        mmi_hdrs_fini(&h);
        return rc;
    }
    rc = mmi_hdrs_finish(&h, o->request_id ? o->request_id : rid, o->headers, o->headers_len, err,
                         sizeof err);
    if (rc != MM_OK) {
        mmi_hdrs_fini(&h);
        return mmi_fail(mm, rc, "headers: %s", err);
    }
    mmi_request_queue(queue, sizeof queue, service, route);
    decimal(expiration, q->timeout_ms);
    bool buffered = false;
    mmi_pub_t p = {.exchange = "",
                   .routing_key = queue,
                   .mandatory = true,
                   .correlation_id = q->corr,
                   .reply_to = mm->reply_queue,
                   .message_id = o->message_id,
                   .expiration = q->timeout_ms > 0 ? expiration : NULL,
                   .hdrs = &h,
                   .body = w,
                   .out_flags = MMI_OUT_BUFFER | MMI_OUT_FAIL_FAST,
                   .done = on_request_sent,
                   .done_ud = (void *) (uintptr_t) q->id,
                   .ret_buffered = &buffered};
    rc = mmi_pub_send(mm, &p);
    mmi_hdrs_fini(&h);
    q->sent = rc == MM_OK && !buffered;
    return rc;
}

int
mm_request(mm_t *mm, const char *service, const char *route, const void *body, size_t len,
           const mm_request_opts_t *opts, mm_msg_fn on_reply, void *ud, mm_req_t *ret_req)
{
    if (mm == NULL)
        return MM_EINVAL;
    mm_request_opts_t o = MM_REQUEST_OPTS_INIT;
    if (opts != NULL && opts->size < offsetof(mm_request_opts_t, request_id) + sizeof(char *))
        return mmi_fail(mm, MM_EINVAL, "request options not set up with MM_REQUEST_OPTS_INIT");
    if (opts != NULL)
        memcpy(&o, opts, opts->size < sizeof o ? opts->size : sizeof o);
    int rc = check_request_args(mm, service, route, on_reply, &o);
    if (rc == MM_OK)
        rc = reqs_init(mm);
    if (rc == MM_OK)
        rc = mm->state == MMI_CONNECTED ? reply_queue(mm)
                                        : reply_queue_name(mm); /* declared when back */
    mmi_wire_out_t w = {0};
    if (rc == MM_OK)
        rc = mmi_wire_encode(mm, mm->opts.codec, body, len, &w);
    struct mmi_req *q = NULL;
    if (rc == MM_OK && (q = req_new(mm, service, route, &o, on_reply, ud)) == NULL)
        rc = mmi_fail(mm, MM_ENOMEM, "out of memory");
    if (rc == MM_OK)
        rc = request_publish(mm, q, service, route, &w, &o);
    mmi_wire_out_free(&w);
    if (rc != MM_OK) {
        if (q != NULL)
            req_free(q);
        return rc;
    }
    table_add(mm->reqs, q);
    timer_arm(q);
    if (ret_req != NULL)
        ret_req->id = q->id;
    return MM_OK;
}

int
mm_request_cancel(mm_t *mm, mm_req_t req)
{
    if (mm == NULL)
        return MM_EINVAL;
    struct mmi_req *q = find_id(mm, req.id);
    if (q == NULL || q->canceled)
        return mmi_fail(mm, MM_ENOENT, "request %llu is not pending", (unsigned long long) req.id);
    if (q->in_part_cb) { /* completes when the part callback returns */
        q->canceled = true;
        return MM_OK;
    }
    fail(q, MM_ECANCELED, "canceled", "request to %s canceled", q->target);
    return MM_OK;
}

struct sync_wait {
    bool done;
    mm_msg_t *final;
};

static void
sync_done(mm_msg_t *msg, void *ud)
{
    struct sync_wait *w = ud;
    if (!mm_msg_is_final(msg))
        return;
    w->final = mm_msg_ref(msg);
    w->done = true;
}

static bool
sync_answered(mm_t *mm, void *ud)
{
    (void) mm;
    return ((const struct sync_wait *) ud)->done;
}

int
mm_request_sync(mm_t *mm, const char *service, const char *route, const void *body, size_t len,
                const mm_request_opts_t *opts, mm_msg_t **ret_reply)
{
    if (mm == NULL || ret_reply == NULL)
        return MM_EINVAL;
    *ret_reply = NULL;
    int rc = mmi_loop_usable(mm, "mm_request_sync (use mm_request)");
    if (rc == MM_ECLOSED)
        mmi_instance_destroy(mm);
    if (rc != MM_OK)
        return rc;
    mm_request_opts_t o = MM_REQUEST_OPTS_INIT;
    if (opts != NULL && opts->size < offsetof(mm_request_opts_t, request_id) + sizeof(char *))
        return mmi_fail(mm, MM_EINVAL, "request options not set up with MM_REQUEST_OPTS_INIT");
    if (opts != NULL)
        memcpy(&o, opts, opts->size < sizeof o ? opts->size : sizeof o);
    o.flags &= ~MM_REQ_PARTS; /* one final answer, parts collected */
    struct sync_wait w = {0};
    rc = mm_request(mm, service, route, body, len, opts ? &o : NULL, sync_done, &w, NULL);
    if (rc != MM_OK)
        return rc;
    if (mmi_loop_until(mm, sync_answered, &w, -1) == MM_ECLOSED)
        mmi_instance_destroy(mm); /* mm_free() in a callback: answers MM_ECLOSED */
    *ret_reply = w.final;
    return w.final ? mm_msg_status(w.final) : MM_ECLOSED;
}
