/*
 * A reader's stream consumer: started from a start point (the x-stream-offset
 * consumer argument: "first", "last", "next", an offset as a signed 64-bit
 * long, or a timestamp, field kind 'T', in seconds), with a prefetch (a
 * stream requires one) and manual acks; and its deliveries -> records ->
 * the handler. Each delivery carries its offset in the x-stream-offset
 * header. A record is settled when its handler returns: acked (for a stream
 * an ack only gives the broker credit to send the next: records stay) and
 * counted for the cursor (lib/reader_cursor.c). Records of types the reader
 * does not want are settled without the handler; a record that cannot be
 * decoded is reported (MM_EV_ERROR, MM_EDECODE, with its offset) and settled;
 * nothing is skipped silently. Records below the start point are not handed
 * over: a stream consumer may start at the beginning of the chunk that holds
 * the offset asked for.
 */
#include <stdio.h>
#include <string.h>

#include "headers.h"
#include "msg.h"
#include "reader.h"
#include "wire.h"

static amqp_field_value_t
offset_arg(mm_from_t at)
{
    amqp_field_value_t v = {.kind = AMQP_FIELD_KIND_UTF8};
    switch (at.kind) {
    case MM_FROM_OFFSET:
        return (amqp_field_value_t){.kind = AMQP_FIELD_KIND_I64, .value.i64 = at.value};
    case MM_FROM_TIMESTAMP:
        return (amqp_field_value_t){.kind = AMQP_FIELD_KIND_TIMESTAMP,
                                    .value.u64 = (uint64_t) (at.value / 1000)};
    case MM_FROM_LAST:
        v.value.bytes = amqp_cstring_bytes("last");
        return v;
    case MM_FROM_NEXT:
        v.value.bytes = amqp_cstring_bytes("next");
        return v;
    default:
        v.value.bytes = amqp_cstring_bytes("first");
        return v;
    }
}

int
mmi_reader_consume(struct mm_reader *r, mm_from_t at)
{
    mm_t *mm = r->mm;
    amqp_table_entry_t e = {.key = amqp_cstring_bytes("x-stream-offset"), .value = offset_arg(at)};
    amqp_table_t args = {1, &e};
    int rc = mmi_basic_qos(mm, r->read_ch, r->prefetch);
    if (rc == MM_OK)
        rc = mmi_basic_consume_args(mm, r->read_ch, r->stream_q, false, false, &args, NULL, 0);
    if (rc != MM_OK)
        return rc;
    r->start = at.kind == MM_FROM_OFFSET ? at.value : -1;
    r->gap_checked = false;
    r->reading = true;
    r->retries = 0;
    return MM_OK;
}

/* ---- deliveries ---- */

static bool
stream_offset(const amqp_basic_properties_t *p, int64_t *ret)
{
    if (p == NULL || !(p->_flags & AMQP_BASIC_HEADERS_FLAG))
        return false;
    for (int i = 0; i < p->headers.num_entries; i++) {
        const amqp_table_entry_t *e = &p->headers.entries[i];
        if (e->key.len != 15 || memcmp(e->key.bytes, "x-stream-offset", 15) != 0)
            continue;
        if (e->value.kind == AMQP_FIELD_KIND_I64 && e->value.value.i64 >= 0)
            *ret = e->value.value.i64;
        else if (e->value.kind == AMQP_FIELD_KIND_U64 && e->value.value.u64 <= INT64_MAX)
            *ret = (int64_t) e->value.value.u64;
        else
            return false;
        return true;
    }
    return false;
}

static bool
type_wanted(const struct mm_reader *r, const amqp_basic_properties_t *p)
{
    if (r->types == NULL)
        return true;
    if (p == NULL || !(p->_flags & AMQP_BASIC_TYPE_FLAG))
        return false;
    for (size_t i = 0; i < r->ntypes; i++)
        if (strlen(r->types[i]) == p->type.len &&
            memcmp(r->types[i], p->type.bytes, p->type.len) == 0)
            return true;
    return false;
}

/* A stream keeps its records: the ack is the broker's credit to send the next. */
static void
credit(mm_t *mm, const mmi_content_t *c)
{
    mmi_basic_ack(mm, c->channel, c->delivery_tag, false);
}

/* Records between the start point and the first one delivered were removed
 * by the stream's retention before this reader got to them: say so. */
static void
check_gap(struct mm_reader *r, int64_t offset)
{
    if (r->gap_checked)
        return;
    r->gap_checked = true;
    if (r->start >= 0 && offset > r->start)
        mmi_msg_event(r->mm, MM_EV_ERROR, MM_ENOENT, r->consumer, NULL,
                      "records %lld to %lld of topic '%s' were removed (retention) before reader "
                      "'%s' read them",
                      (long long) r->start, (long long) offset - 1, r->topic, r->consumer);
}

static int
record_body(mm_t *mm, mm_msg_t *msg, const mmi_content_t *c, char *err, size_t errlen)
{
    mmi_wire_in_t in;
    int rc = mmi_wire_decode(mm, c, &in, err, errlen);
    if (rc == MM_OK) {
        rc = mmi_msg_set_body(msg, in.data, in.len, in.borrowed, &in.buf);
        if (rc == MM_EDECODE)
            snprintf(err, errlen, "body is not valid msgpack");
    }
    mmi_wire_in_free(&in);
    return rc;
}

/* The message as the handler sees it: kind, offset, metadata, headers, body. */
static int
record_new(mm_t *mm, struct mm_reader *r, const mmi_content_t *c, int64_t offset, mm_msg_t **ret,
           char *err, size_t errlen)
{
    mm_msg_t *msg = mmi_msg_new(mm, MM_MSG_RECORD);
    if (msg == NULL)
        return MM_ENOMEM;
    *ret = msg;
    mmi_msg_live_add(mm, msg);
    msg->ch = c->channel;
    msg->gen = mmi_chan_gen(mm, c->channel);
    msg->tag = c->delivery_tag;
    msg->redelivered = c->redelivered;
    msg->wire_size = (size_t) c->body_size;
    msg->offset = offset;
    msg->route = mmi_msg_str(msg, r->topic, strlen(r->topic));
    const amqp_table_t *t =
        c->props && (c->props->_flags & AMQP_BASIC_HEADERS_FLAG) ? &c->props->headers : NULL;
    if (msg->route == NULL || mmi_msg_meta(msg, c->props, 0) != MM_OK ||
        mmi_headers_to_msgpack(t, &msg->zone, &msg->headers) != MM_OK)
        return MM_ENOMEM;
    return record_body(mm, msg, c, err, errlen);
}

/* Out of memory: not the record's fault. Stop consuming and start again
 * after the last settled record, later. */
static void
pause_reading(struct mm_reader *r, int64_t offset)
{
    mmi_msg_event(r->mm, MM_EV_ERROR, MM_ENOMEM, r->consumer, NULL,
                  "reader '%s' paused at record %lld of topic '%s': out of memory", r->consumer,
                  (long long) offset, r->topic);
    mmi_reader_unread(r);
    mmi_reader_later(r);
}

/* Run the handler; the record is settled when it returns. The handler may
 * stop this reader (done once the record is settled) or free mm (then
 * nothing more is touched: the module frees the reader). */
static void
handle(mm_t *mm, struct mm_reader *r, mm_msg_t *msg, int64_t offset)
{
    r->in_handler++;
    mmi_msg_handle(mm, msg, r->fn, r->ud);
    r->in_handler--;
    if (mmi_alive(mm)) {
        mmi_msg_ack(msg); /* a no-op when the handler acked it */
        mmi_cursor_settled(r, offset);
    }
    mm_msg_unref(msg);
    if (mmi_alive(mm) && r->stop_pending && r->in_handler == 0)
        mmi_reader_stop_pending(r);
}

static void
record(mm_t *mm, struct mm_reader *r, const mmi_content_t *c, int64_t offset)
{
    char err[MMI_ERRBUF] = "";
    mm_msg_t *msg = NULL;
    int rc = record_new(mm, r, c, offset, &msg, err, sizeof err);
    if (rc == MM_OK) {
        handle(mm, r, msg, offset);
        return;
    }
    if (rc == MM_ENOMEM) {
        pause_reading(r, offset);
    } else {
        mmi_msg_event(mm, MM_EV_ERROR, rc, r->consumer, NULL,
                      "record %lld of topic '%s' cannot be decoded (%s): reader '%s' skips it",
                      (long long) offset, r->topic, err, r->consumer);
        credit(mm, c);
        mmi_cursor_settled(r, offset);
    }
    mm_msg_unref(msg);
}

void
mmi_reader_content(mm_t *mm, const mmi_content_t *c, void *ud)
{
    struct mm_reader *r = ud;
    if (c->method == AMQP_BASIC_GET_OK_METHOD) {
        mmi_cursor_got(r, c);
        return;
    }
    if (c->method != AMQP_BASIC_DELIVER_METHOD || !r->reading || r->stop_pending)
        return;
    int64_t offset = -1;
    if (!stream_offset(c->props, &offset)) {
        credit(mm, c);
        mmi_msg_event(mm, MM_EV_ERROR, MM_EPROTO, r->consumer, NULL,
                      "a delivery on topic '%s' has no x-stream-offset header: reader '%s' "
                      "skips it",
                      r->topic, r->consumer);
        return;
    }
    if (r->start >= 0 && offset < r->start) {
        credit(mm, c); /* the rest of the chunk before the start point */
        return;
    }
    check_gap(r, offset);
    if (!type_wanted(r, c->props)) {
        credit(mm, c);
        mmi_cursor_settled(r, offset);
        return;
    }
    record(mm, r, c, offset);
}
