/*
 * Poison messages. RabbitMQ 3.10 classic queues do not count deliveries, so
 * we do: a request or task that comes back with the redelivered flag (its
 * handler gave it back, or the process or channel holding it died) is
 * counted as one failed delivery. Below max_redeliveries a copy carrying the
 * count (x-mm-deliveries) goes to the back of its queue; at the limit, and
 * at once for what can never succeed (undecodable, unhandled, rejected by
 * its handler), a copy goes to q.deadLetter.<service> with headers saying
 * why. Either way the delivery is acked only when the broker has confirmed
 * the copy (lib/outbox.c): if its channel died meanwhile the broker
 * redelivers it, so a failure can duplicate a message but never lose one.
 * The dead-letter queue is declared once per route channel (after a
 * reconnect, again) on a throwaway channel. Collaborators: lib/dispatch.c
 * and lib/settle.c decide, lib/deadletter_redrive.c moves messages back.
 */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "deadletter.h"
#include "msg.h"
#include "outbox.h"
#include "route.h"

/* ---- headers ---- */

static bool
key_is(amqp_bytes_t key, const char *s)
{
    size_t n = strlen(s);
    return key.len == n && memcmp(key.bytes, s, n) == 0;
}

static bool
key_starts(amqp_bytes_t key, const char *prefix)
{
    size_t n = strlen(prefix);
    return key.len >= n && memcmp(key.bytes, prefix, n) == 0;
}

bool
mmi_dl_is_dead_header(amqp_bytes_t key)
{
    return key_starts(key, MMI_H_DEAD_PREFIX) || key_is(key, MMI_H_BODY_DROPPED);
}

bool
mmi_dl_is_count_header(amqp_bytes_t key)
{
    return key_is(key, MMI_H_DELIVERIES);
}

uint32_t
mmi_dl_header_uint(const amqp_basic_properties_t *p, const char *key)
{
    if (p == NULL || !(p->_flags & AMQP_BASIC_HEADERS_FLAG))
        return 0;
    for (int i = 0; i < p->headers.num_entries; i++) {
        const amqp_table_entry_t *e = &p->headers.entries[i];
        if (!key_is(e->key, key))
            continue;
        const amqp_field_value_t *v = &e->value;
        int64_t n = v->kind == AMQP_FIELD_KIND_I8    ? v->value.i8
                    : v->kind == AMQP_FIELD_KIND_U8  ? v->value.u8
                    : v->kind == AMQP_FIELD_KIND_I16 ? v->value.i16
                    : v->kind == AMQP_FIELD_KIND_U16 ? v->value.u16
                    : v->kind == AMQP_FIELD_KIND_I32 ? v->value.i32
                    : v->kind == AMQP_FIELD_KIND_U32 ? v->value.u32
                    : v->kind == AMQP_FIELD_KIND_I64 ? v->value.i64
                    : v->kind == AMQP_FIELD_KIND_U64
                        ? (v->value.u64 > INT64_MAX ? INT64_MAX : (int64_t) v->value.u64)
                        : 0;
        return n <= 0 ? 0 : n >= UINT32_MAX ? UINT32_MAX : (uint32_t) n;
    }
    return 0;
}

amqp_table_t
mmi_dl_headers(const amqp_basic_properties_t *src, bool (*drop)(amqp_bytes_t key),
               const amqp_table_entry_t *extra, int nextra, amqp_table_entry_t *entries)
{
    int n = 0;
    if (src->_flags & AMQP_BASIC_HEADERS_FLAG)
        for (int i = 0; i < src->headers.num_entries; i++)
            if (drop == NULL || !drop(src->headers.entries[i].key))
                entries[n++] = src->headers.entries[i];
    for (int i = 0; i < nextra; i++)
        entries[n++] = extra[i];
    return (amqp_table_t){.num_entries = n, .entries = entries};
}

static amqp_table_entry_t
str_entry(const char *key, const char *val)
{
    return (amqp_table_entry_t){
        .key = amqp_cstring_bytes(key),
        .value = {.kind = AMQP_FIELD_KIND_UTF8, .value.bytes = amqp_cstring_bytes(val)}};
}

static amqp_table_entry_t
int_entry(const char *key, int64_t val)
{
    return (amqp_table_entry_t){.key = amqp_cstring_bytes(key),
                                .value = {.kind = AMQP_FIELD_KIND_I64, .value.i64 = val}};
}

static bool
drop_ours(amqp_bytes_t key)
{
    return mmi_dl_is_dead_header(key) || mmi_dl_is_count_header(key) ||
           key_is(key, MMI_H_ROUTING_KEY);
}

static bool
drop_dead(amqp_bytes_t key)
{
    return mmi_dl_is_dead_header(key) || key_is(key, MMI_H_ROUTING_KEY);
}

char *
mmi_dl_queue(char *out, size_t cap, const char *service)
{
    snprintf(out, cap, "%s%s", MMI_DL_PREFIX, service);
    return out;
}

/* ---- the delivery: during dispatch, or kept by mm_msg_ref ---- */

typedef struct wire_view {
    const amqp_basic_properties_t *props;
    amqp_bytes_t body;
    uint64_t body_size;
    bool oversize;
} wire_view;

static bool
view_of(const mm_msg_t *msg, wire_view *v)
{
    static const amqp_basic_properties_t none = {0};
    if (msg->wire != NULL) {
        const mmi_content_t *c = msg->wire;
        *v = (wire_view){c->props ? c->props : &none, c->body, c->body_size, c->oversize};
        return true;
    }
    if (msg->kept != NULL) {
        const mmi_wire_kept_t *k = msg->kept;
        *v = (wire_view){&k->props, k->body, k->body_size, k->oversize};
        return true;
    }
    return false;
}

uint32_t
mmi_dl_failed(const mm_msg_t *msg)
{
    wire_view v;
    uint32_t n = view_of(msg, &v) ? mmi_dl_header_uint(v.props, MMI_H_DELIVERIES) : 0;
    return n == UINT32_MAX ? n : n + 1;
}

static int
pool_dup(amqp_pool_t *pool, amqp_bytes_t *b)
{
    if (b->len == 0)
        return MM_OK;
    amqp_bytes_t d;
    amqp_pool_alloc_bytes(pool, b->len, &d);
    if (d.bytes == NULL)
        return MM_ENOMEM;
    memcpy(d.bytes, b->bytes, b->len);
    *b = d;
    return MM_OK;
}

static int
keep_props(amqp_pool_t *pool, amqp_basic_properties_t *p)
{
    /* Only the fields present: the others hold whatever the decoder left. */
    struct {
        amqp_flags_t flag;
        amqp_bytes_t *b;
    } strs[] = {
        {AMQP_BASIC_CONTENT_TYPE_FLAG, &p->content_type},
        {AMQP_BASIC_CONTENT_ENCODING_FLAG, &p->content_encoding},
        {AMQP_BASIC_CORRELATION_ID_FLAG, &p->correlation_id},
        {AMQP_BASIC_REPLY_TO_FLAG, &p->reply_to},
        {AMQP_BASIC_EXPIRATION_FLAG, &p->expiration},
        {AMQP_BASIC_MESSAGE_ID_FLAG, &p->message_id},
        {AMQP_BASIC_TYPE_FLAG, &p->type},
        {AMQP_BASIC_USER_ID_FLAG, &p->user_id},
        {AMQP_BASIC_APP_ID_FLAG, &p->app_id},
        {AMQP_BASIC_CLUSTER_ID_FLAG, &p->cluster_id},
    };
    for (size_t i = 0; i < sizeof strs / sizeof strs[0]; i++)
        if ((p->_flags & strs[i].flag) && pool_dup(pool, strs[i].b) != MM_OK)
            return MM_ENOMEM;
    if (!(p->_flags & AMQP_BASIC_HEADERS_FLAG))
        return MM_OK;
    amqp_table_t orig = p->headers;
    return amqp_table_clone(&orig, &p->headers, pool) == AMQP_STATUS_OK ? MM_OK : MM_ENOMEM;
}

int
mmi_dl_keep(mm_msg_t *msg)
{
    const mmi_content_t *c = msg->wire;
    if (c == NULL || msg->kept != NULL)
        return MM_OK;
    mmi_wire_kept_t *k = calloc(1, sizeof *k);
    if (k == NULL)
        return MM_ENOMEM;
    init_amqp_pool(&k->pool, 1024);
    if (c->props != NULL)
        k->props = *c->props;
    k->body = c->body;
    k->body_size = c->body_size;
    k->oversize = c->oversize;
    if (keep_props(&k->pool, &k->props) != MM_OK || pool_dup(&k->pool, &k->body) != MM_OK) {
        mmi_dl_kept_free(k);
        return MM_ENOMEM;
    }
    msg->kept = k;
    return MM_OK;
}

void
mmi_dl_kept_free(mmi_wire_kept_t *k)
{
    if (k == NULL)
        return;
    empty_amqp_pool(&k->pool);
    free(k);
}

/* ---- the verdict on a copy: ack the delivery, or give it back ---- */

/* One copy waiting for its confirm: the delivery it settles, and its event. */
typedef struct dl_rec {
    uint16_t ch;
    uint32_t gen;
    uint64_t tag;
    bool dead; /* to the dead-letter queue (else a counted copy) */
    int code;
    char *route, *request_id, *text; /* in buf */
    char buf[];
} dl_rec;

static dl_rec *
rec_new(const mm_msg_t *msg, bool dead, int code, const char *route, const char *text)
{
    size_t rl = strlen(route) + 1, il = strlen(msg->request_id) + 1, tl = strlen(text) + 1;
    dl_rec *rec = malloc(sizeof *rec + rl + il + tl);
    if (rec == NULL)
        return NULL;
    *rec = (dl_rec){.ch = msg->ch, .gen = msg->gen, .tag = msg->tag, .dead = dead, .code = code};
    rec->route = memcpy(rec->buf, route, rl);
    rec->request_id = memcpy(rec->buf + rl, msg->request_id, il);
    rec->text = memcpy(rec->buf + rl + il, text, tl);
    return rec;
}

static struct mm_route *
route_on(mm_t *mm, uint16_t ch)
{
    for (struct mm_route *r = mm->routes; r != NULL && ch != 0; r = r->next)
        if (r->ch == ch)
            return r;
    return NULL;
}

static void
verdict(mm_t *mm, const dl_rec *rec, int status)
{
    bool same = mmi_chan_gen(mm, rec->ch) == rec->gen;
    const char *rid = rec->request_id[0] ? rec->request_id : NULL;
    if (status == MM_OK) {
        if (same) /* else the broker redelivers it: a duplicate, not a loss */
            mmi_basic_ack(mm, rec->ch, rec->tag, false);
        if (rec->dead)
            mmi_msg_event(mm, MM_EV_DEADLETTER, rec->code, rec->route, rid, "%s", rec->text);
        return;
    }
    if (same)
        mmi_basic_nack(mm, rec->ch, rec->tag, false, true);
    struct mm_route *r = rec->dead && status == MM_ENOROUTE ? route_on(mm, rec->ch) : NULL;
    if (r != NULL)
        r->dl_gen = 0; /* the queue was deleted: declare it again next time */
    mmi_msg_event(mm, MM_EV_ERROR, status, rec->route, rid,
                  "%s a message of '%s' failed (%s): back in its queue",
                  rec->dead ? "dead-lettering" : "counting a redelivery of", rec->route,
                  mm_strerror(status));
}

static void
on_sent(mm_t *mm, int status, void *ud)
{
    dl_rec *rec = ud;
    /* MM_ECLOSED, or mm being freed: the broker keeps the unacked delivery */
    if (status != MM_ECLOSED && mmi_alive(mm))
        verdict(mm, rec, status);
    free(rec);
}

/* Publish a copy of the delivery to `queue` (default exchange, mandatory,
 * confirmed); on MM_OK `rec` belongs to the outbox, else to the caller. */
static int
send_copy(mm_t *mm, const char *queue, const amqp_basic_properties_t *props,
          bool (*drop)(amqp_bytes_t), const amqp_table_entry_t *extra, int nextra,
          amqp_bytes_t body, dl_rec *rec)
{
    int norig = (props->_flags & AMQP_BASIC_HEADERS_FLAG) ? props->headers.num_entries : 0;
    amqp_table_entry_t *entries = malloc((size_t) (norig + nextra) * sizeof *entries);
    if (entries == NULL)
        return mmi_fail(mm, MM_ENOMEM, "out of memory");
    amqp_basic_properties_t p = *props;
    p.headers = mmi_dl_headers(props, drop, extra, nextra, entries);
    p._flags |= AMQP_BASIC_HEADERS_FLAG;
    mmi_out_msg_t m = {
        .exchange = "", .routing_key = queue, .mandatory = true, .props = &p, .body = body};
    int rc = mmi_outbox_send(mm, &m, MMI_OUT_CONFIRM, on_sent, rec);
    free(entries);
    return rc;
}

/* ---- counting a redelivery ---- */

int
mmi_dl_count(mm_msg_t *msg, uint32_t failed)
{
    mm_t *mm = msg->mm;
    struct mm_route *r = route_on(mm, msg->ch);
    wire_view v;
    if (r == NULL || !view_of(msg, &v) || v.oversize)
        return MM_EINVAL; /* oversize: dispatch dead-letters it anyway */
    /* a group event's copy goes through the default exchange: its key goes along */
    amqp_table_entry_t extra[] = {int_entry(MMI_H_DELIVERIES, failed),
                                  str_entry(MMI_H_ROUTING_KEY, msg->route)};
    int nextra = msg->kind == MM_MSG_EVENT ? 2 : 1;
    dl_rec *rec = rec_new(msg, false, MM_OK, msg->route, "");
    if (rec == NULL)
        return MM_ENOMEM;
    /* Dead headers stay away from a live message (a redriven one has none). */
    int rc = send_copy(mm, r->queue, v.props, drop_ours, extra, nextra, v.body, rec);
    if (rc != MM_OK) {
        free(rec);
        return rc;
    }
    msg->acked = true; /* by the verdict, once the copy is confirmed */
    mmi_route_bytes_release(mm, msg);
    return MM_OK;
}

/* ---- the dead-letter queue ---- */

static const mmi_chan_ops_t PROBE_OPS = {.quiet = true};

/* Durable, no arguments. If someone declared it otherwise (406), use it as is. */
static int
declare_dlq(mm_t *mm, const char *name)
{
    uint16_t ch = 0;
    int rc = mmi_chan_open(mm, &PROBE_OPS, NULL, &ch);
    if (rc != MM_OK)
        return rc;
    mm->last_close_code = 0;
    rc = mmi_queue_declare(mm, ch, name, MMI_Q_DURABLE, NULL, NULL);
    if (rc == MM_ECHANNEL && mm->last_close_code == 406 &&
        (rc = mmi_chan_open(mm, &PROBE_OPS, NULL, &ch)) == MM_OK)
        rc = mmi_queue_declare(mm, ch, name, MMI_Q_PASSIVE, NULL, NULL);
    if (mmi_chan_is_open(mm, ch))
        mmi_chan_close(mm, ch);
    return rc;
}

static int
ensure_dlq(mm_t *mm, struct mm_route *r, const char *name)
{
    uint32_t gen = mmi_chan_gen(mm, r->ch);
    if (gen != 0 && r->dl_gen == gen)
        return MM_OK;
    int rc = declare_dlq(mm, name);
    if (rc != MM_OK)
        return rc;
    r->dl_gen = gen;
    return MM_OK;
}

static const char *
kind_name(const mm_msg_t *msg)
{
    return msg->kind == MM_MSG_REQUEST ? "request" : msg->kind == MM_MSG_EVENT ? "event" : "task";
}

static int
dead_letter(mm_t *mm, struct mm_route *r, mm_msg_t *msg, const wire_view *v, const char *reason,
            int code, const char *text)
{
    char dlq[MMI_QUEUE_MAX], note[MMI_ERRBUF + MMI_QUEUE_MAX];
    mmi_dl_queue(dlq, sizeof dlq, mm->service);
    int rc = ensure_dlq(mm, r, dlq);
    if (rc != MM_OK)
        return rc;
    const char *route = msg->route[0] ? msg->route : r->name;
    uint32_t failed = mmi_dl_failed(msg);
    amqp_table_entry_t extra[8] = {
        str_entry("x-mm-dead-reason", reason), str_entry("x-mm-dead-text", text),
        str_entry("x-mm-dead-route", route),   str_entry("x-mm-dead-queue", r->queue),
        int_entry("x-mm-dead-count", failed),  int_entry("x-mm-dead-at", mmi_wall_ms()),
    };
    int nextra = 6;
    if (msg->kind == MM_MSG_EVENT) /* redriven to a group's queue, it finds its listener */
        extra[nextra++] = str_entry(MMI_H_ROUTING_KEY, route);
    if (v->oversize)
        extra[nextra++] = int_entry(MMI_H_BODY_DROPPED, (int64_t) v->body_size);
    snprintf(note, sizeof note, "%s on '%s' dead-lettered to %s: %s: %s", kind_name(msg), route,
             dlq, reason, text);
    dl_rec *rec = rec_new(msg, true, code, route, note);
    if (rec == NULL)
        return mmi_fail(mm, MM_ENOMEM, "out of memory");
    /* No expiration: a request's timeout must not empty the dead-letter queue. */
    amqp_basic_properties_t props = *v->props;
    props._flags &= (amqp_flags_t) ~AMQP_BASIC_EXPIRATION_FLAG;
    amqp_bytes_t body = v->oversize ? (amqp_bytes_t){0, NULL} : v->body;
    /* x-mm-deliveries stays with the original headers; older dead headers go. */
    rc = send_copy(mm, dlq, &props, drop_dead, extra, nextra, body, rec);
    if (rc != MM_OK)
        free(rec);
    return rc;
}

int
mmi_dl_settle(mm_msg_t *msg, const char *reason, int code, const char *text)
{
    int rc = mmi_msg_settleable(msg);
    if (rc != MM_OK)
        return rc;
    mm_t *mm = msg->mm;
    struct mm_route *r = route_on(mm, msg->ch);
    wire_view v;
    rc = r != NULL && view_of(msg, &v) ? dead_letter(mm, r, msg, &v, reason, code, text)
                                       : mmi_fail(mm, MM_ENOMEM, "the delivery was not kept");
    if (rc == MM_OK) {
        msg->acked = msg->nacked = true; /* acked by the verdict once confirmed */
        mmi_route_bytes_release(mm, msg);
        return MM_OK;
    }
    mmi_msg_event(mm, MM_EV_ERROR, rc, msg->route, msg->request_id[0] ? msg->request_id : NULL,
                  "dead-lettering a message of '%s' (%s) failed: %s; back in its queue", msg->route,
                  reason, mm->last_error);
    return mmi_msg_nack(msg, true);
}

void
mmi_dl_release(mm_msg_t *msg)
{
    mm_t *mm = msg->mm;
    bool settles = msg->kind == MM_MSG_REQUEST || msg->kind == MM_MSG_TASK;
    /* Not kept (dispatch ends), or nothing to settle, or it can no longer be. */
    if (mm == NULL || msg->kept == NULL || !settles || msg->acked || msg->answered || msg->no_ack ||
        msg->expired || !mmi_alive(mm) || mmi_chan_gen(mm, msg->ch) != msg->gen)
        return;
    const char *text = "released (mm_msg_unref) without being settled";
    mmi_msg_event(mm, MM_EV_ERROR, MM_ESTATE, msg->route,
                  msg->request_id[0] ? msg->request_id : NULL, "the %s on '%s' was %s",
                  kind_name(msg), msg->route, text);
    mmi_dl_settle(msg, "notHandled", MM_ESTATE, text);
    if (msg->kind == MM_MSG_REQUEST && msg->reply_to[0] != '\0')
        mm_msg_reject(msg, "notHandled", text);
}
