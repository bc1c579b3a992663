/*
 * A reader's cursor: the offset of the last record it settled, kept on the
 * broker in q.cursor.<service>.<consumer> (durable, x-max-length 1, so that
 * each write drops the one before). It is read at every activation with
 * basic.get on the read channel and given back at once (nack with requeue:
 * it stays for the next reader), which decides where the consumer starts
 * (start_point). It is written through the outbox (persistent, mandatory,
 * confirmed) after every cursor_every settled records, cursor_interval_ms
 * after a settle, when mm_close drains and when the reader stops; only while
 * the reader holds the lock, so that a reader that lost it never moves the
 * cursor of the one that took over. The body is a msgpack map {"topic":
 * str, "offset": int, "at": ms since the epoch}. A cursor that cannot be
 * decoded, or is another topic's, is reported (MM_EV_ERROR, MM_EDECODE) and
 * never used: the reader starts at its fallback.
 */
#include <event2/event.h>
#include <stdio.h>
#include <string.h>

#include "publish.h"
#include "reader.h"

/* ---- reading it ---- */

static int
declare_cursor_queue(struct mm_reader *r)
{
    amqp_table_entry_t e = {.key = amqp_cstring_bytes("x-max-length"),
                            .value = {.kind = AMQP_FIELD_KIND_I64, .value.i64 = 1}};
    amqp_table_t args = {1, &e};
    return mmi_queue_declare(r->mm, r->read_ch, r->cursor_q, MMI_Q_DURABLE, &args, NULL);
}

/* The queue declared (a later write then always has somewhere to go), and
 * basic.get sent without waiting: get-ok or get-empty come back on the channel. */
int
mmi_cursor_ask(struct mm_reader *r)
{
    mm_t *mm = r->mm;
    int rc = declare_cursor_queue(r);
    if (rc != MM_OK)
        return rc;
    amqp_basic_get_t req = {.queue = amqp_cstring_bytes(r->cursor_q), .no_ack = 0};
    if (mmi_send_method(mm, r->read_ch, AMQP_BASIC_GET_METHOD, &req) != MM_OK)
        return mmi_fail(mm, MM_EDISCONNECTED, "connection lost");
    r->getting = true;
    return MM_OK;
}

static const msgpack_object *
map_get(const msgpack_object *m, const char *key)
{
    size_t n = strlen(key);
    for (uint32_t i = 0; i < m->via.map.size; i++) {
        const msgpack_object *k = &m->via.map.ptr[i].key;
        if (k->type == MSGPACK_OBJECT_STR && k->via.str.size == n &&
            memcmp(k->via.str.ptr, key, n) == 0)
            return &m->via.map.ptr[i].val;
    }
    return NULL;
}

static int
cursor_fields(const struct mm_reader *r, const msgpack_object *o, int64_t *ret, char *err,
              size_t errlen)
{
    if (o->type != MSGPACK_OBJECT_MAP)
        return mmi_codec_fail(err, errlen, MM_EDECODE, "not a map");
    const msgpack_object *topic = map_get(o, "topic"), *off = map_get(o, "offset");
    if (topic == NULL || topic->type != MSGPACK_OBJECT_STR)
        return mmi_codec_fail(err, errlen, MM_EDECODE, "no \"topic\" string");
    if (topic->via.str.size != strlen(r->topic) ||
        memcmp(topic->via.str.ptr, r->topic, topic->via.str.size) != 0)
        return mmi_codec_fail(err, errlen, MM_EDECODE, "the cursor of another topic ('%.*s')",
                              (int) (topic->via.str.size < 128 ? topic->via.str.size : 128),
                              topic->via.str.ptr);
    if (off == NULL || off->type != MSGPACK_OBJECT_POSITIVE_INTEGER || off->via.u64 > INT64_MAX)
        return mmi_codec_fail(err, errlen, MM_EDECODE, "no \"offset\" (a non-negative integer)");
    *ret = (int64_t) off->via.u64;
    return MM_OK;
}

static int
cursor_parse(const struct mm_reader *r, const char *data, size_t len, int64_t *ret, char *err,
             size_t errlen)
{
    if (mmi_msgpack_check(data, len, err, errlen) != MM_OK)
        return MM_EDECODE;
    msgpack_zone z;
    if (!msgpack_zone_init(&z, 256))
        return mmi_codec_fail(err, errlen, MM_ENOMEM, "out of memory");
    msgpack_object o;
    size_t at = 0;
    int rc = msgpack_unpack(data, len, &at, &z, &o) == MSGPACK_UNPACK_SUCCESS
                 ? cursor_fields(r, &o, ret, err, errlen)
                 : mmi_codec_fail(err, errlen, MM_EDECODE, "not msgpack");
    msgpack_zone_destroy(&z);
    return rc;
}

/* The stored offset, or MM_EDECODE (MM_ENOMEM) with the reason in err. */
static int
cursor_decode(struct mm_reader *r, const mmi_content_t *c, int64_t *ret, char *err, size_t errlen)
{
    mmi_wire_in_t in;
    int rc = mmi_wire_decode(r->mm, c, &in, err, errlen);
    if (rc == MM_OK)
        rc = cursor_parse(r, in.data, in.len, ret, err, errlen);
    mmi_wire_in_free(&in);
    return rc == MM_OK || rc == MM_ENOMEM ? rc : MM_EDECODE;
}

/* Where to start: after what this reader settled (or the stored cursor when
 * another reader went further meanwhile); else after the stored cursor when
 * reading from it or taking over from another reader; else `from`. */
static mm_from_t
start_point(const struct mm_reader *r, bool has, int64_t stored)
{
    if (r->position >= 0) {
        int64_t p = has && stored > r->position ? stored : r->position;
        return (mm_from_t){MM_FROM_OFFSET, p + 1};
    }
    if (has && (r->from.kind == MM_FROM_CURSOR || r->took_over))
        return (mm_from_t){MM_FROM_OFFSET, stored + 1};
    return r->from.kind == MM_FROM_CURSOR ? r->fallback : r->from;
}

static const char *
describe(mm_from_t at, char *buf, size_t cap)
{
    switch (at.kind) {
    case MM_FROM_OFFSET:
        snprintf(buf, cap, "offset %lld", (long long) at.value);
        return buf;
    case MM_FROM_TIMESTAMP:
        snprintf(buf, cap, "timestamp %lld s", (long long) (at.value / 1000));
        return buf;
    case MM_FROM_LAST:
        return "the last chunk";
    case MM_FROM_NEXT:
        return "the next record appended";
    default:
        return "the first record";
    }
}

/* Consume from the start point; the stored cursor is known (or known bad). */
static void
begin(struct mm_reader *r, bool has, int64_t stored, const char *bad)
{
    mm_t *mm = r->mm;
    char buf[64], text[MMI_ERRBUF];
    mm_from_t at = start_point(r, has, stored);
    const char *where = describe(at, buf, sizeof buf);
    if (bad != NULL)
        mmi_msg_event(mm, MM_EV_ERROR, MM_EDECODE, r->consumer, NULL,
                      "the cursor of reader '%s' in %s cannot be decoded (%s): reading topic "
                      "'%s' from %s",
                      r->consumer, r->cursor_q, bad, r->topic, where);
    int rc = mmi_reader_consume(r, at);
    if (rc == MM_OK) {
        snprintf(text, sizeof text, "reads from %s", where);
        mmi_reader_say(r, MM_EV_READER_ACTIVE, MM_OK, text);
        return;
    }
    if (mm->state != MMI_CONNECTED || r->t->closing)
        return;
    mmi_msg_event(mm, MM_EV_ERROR, rc, r->consumer, NULL, "reader '%s' of topic '%s': %s",
                  r->consumer, r->topic, mm->last_error);
    mmi_reader_unread(r);
    mmi_reader_later(r);
}

void
mmi_cursor_got(struct mm_reader *r, const mmi_content_t *c)
{
    if (!r->getting || c->channel != r->read_ch)
        return;
    r->getting = false;
    char err[MMI_ERRBUF] = "";
    int64_t stored = -1;
    int rc = cursor_decode(r, c, &stored, err, sizeof err);
    /* Given back at once: it stays in its queue for whoever reads next. */
    mmi_basic_nack(r->mm, c->channel, c->delivery_tag, false, true);
    begin(r, rc == MM_OK, stored, rc == MM_OK ? NULL : err);
}

void
mmi_cursor_none(struct mm_reader *r)
{
    if (!r->getting)
        return;
    r->getting = false;
    begin(r, false, -1, NULL);
}

/* ---- writing it ---- */

bool
mmi_cursor_due(const struct mm_reader *r)
{
    return r->position >= 0 && r->position != r->written && r->lock != NULL && r->lock->held &&
           r->mm->state == MMI_CONNECTED;
}

static int
cursor_body(const struct mm_reader *r, mmi_buf_t *b)
{
    msgpack_packer pk;
    msgpack_packer_init(&pk, b, mmi_buf_write);
    size_t n = strlen(r->topic);
    int bad = msgpack_pack_map(&pk, 3);
    bad |= msgpack_pack_str_with_body(&pk, "topic", 5);
    bad |= msgpack_pack_str_with_body(&pk, r->topic, n);
    bad |= msgpack_pack_str_with_body(&pk, "offset", 6);
    bad |= msgpack_pack_int64(&pk, r->position);
    bad |= msgpack_pack_str_with_body(&pk, "at", 2);
    bad |= msgpack_pack_int64(&pk, mmi_wall_ms());
    return bad ? MM_ENOMEM : MM_OK;
}

static int
cursor_send(struct mm_reader *r, const mmi_buf_t *b, mmi_sent_fn done, void *ud)
{
    mm_t *mm = r->mm;
    char err[128];
    mmi_wire_out_t w;
    int rc = mmi_wire_encode(mm, MM_CODEC_MSGPACK, b->data, b->len, &w);
    if (rc != MM_OK)
        return rc;
    mmi_hdrs_t h;
    mmi_hdrs_init(&h);
    rc = mmi_hdrs_finish(&h, NULL, NULL, 0, err, sizeof err);
    mmi_pub_t p = {.exchange = "",
                   .routing_key = r->cursor_q,
                   .mandatory = true,
                   .persistent = true,
                   .hdrs = &h,
                   .body = &w,
                   .out_flags = MMI_OUT_CONFIRM,
                   .done = done,
                   .done_ud = ud};
    if (rc == MM_OK)
        rc = mmi_pub_send(mm, &p);
    mmi_hdrs_fini(&h);
    mmi_wire_out_free(&w);
    return rc;
}

int
mmi_cursor_write(struct mm_reader *r, void (*done)(mm_t *, int, void *), void *ud)
{
    mm_t *mm = r->mm;
    mmi_buf_t b = {0};
    int rc = cursor_body(r, &b);
    if (rc == MM_OK)
        rc = cursor_send(r, &b, done, ud);
    mmi_buf_free(&b);
    if (rc != MM_OK) {
        mmi_msg_event(mm, MM_EV_ERROR, rc, r->consumer, NULL,
                      "the cursor of reader '%s' (offset %lld) was not written: %s", r->consumer,
                      (long long) r->position, mm->last_error);
        return rc;
    }
    r->written = r->position;
    r->unsaved = 0;
    if (r->save_timer != NULL)
        event_del(r->save_timer);
    return MM_OK;
}

static void
on_save(evutil_socket_t fd, short what, void *arg)
{
    struct mm_reader *r = arg;
    mm_t *mm = r->mm;
    (void) fd;
    (void) what;
    mmi_enter(mm);
    if (mmi_cursor_due(r))
        mmi_cursor_write(r, NULL, NULL);
    mmi_leave(mm);
}

void
mmi_cursor_settled(struct mm_reader *r, int64_t offset)
{
    r->position = offset;
    if (++r->unsaved >= r->cursor_every && mmi_cursor_due(r)) {
        mmi_cursor_write(r, NULL, NULL);
        return;
    }
    if (r->save_timer == NULL) /* none (no memory): written every cursor_every records only */
        r->save_timer = evtimer_new(r->mm->base, on_save, r);
    if (r->save_timer != NULL && !evtimer_pending(r->save_timer, NULL)) {
        struct timeval tv = {.tv_sec = (long) (r->cursor_ms / 1000),
                             .tv_usec = (long) (r->cursor_ms % 1000) * 1000};
        evtimer_add(r->save_timer, &tv);
    }
}
