/*
 * memory:// stream queues (x-queue-type stream): an append-only log whose
 * records keep their offset (0, 1, 2... from the first record ever
 * appended). Every consumer reads the whole log from its own position, set
 * by the x-stream-offset consumer argument ("first", "last", "next", an
 * offset, or a timestamp in seconds), within its prefetch: an ack (or nack)
 * only makes room, the record stays. Each delivery carries its offset in the
 * x-stream-offset header (lib/mem/inbox.c). Retention works as RabbitMQ's:
 * records are written in segments of x-stream-max-segment-size-bytes
 * (500 MB by default), and when a segment is full the oldest segments go
 * while the stream is over x-max-length-bytes or their newest record is
 * older than x-max-age; the active segment always stays.
 */
#include <stdlib.h>
#include <string.h>

#include "mem.h"

static void
drop_first(mem_queue_t *q)
{
    mem_msg_t *m = q->records[0].msg;
    q->rec_bytes -= m->body.len;
    mem_msg_unref(m);
    memmove(q->records, q->records + 1, (q->nrec - 1) * sizeof *q->records);
    q->nrec--;
    q->first_offset++;
}

/* When the oldest segment's newest record was written (wall ms). */
static int64_t
oldest_segment_end(const mem_queue_t *q)
{
    size_t i = 0;
    while (i + 1 < q->nrec && q->records[i + 1].segment == q->records[0].segment)
        i++;
    return q->records[i].msg->wall_ms;
}

static bool
retention_over(const mem_queue_t *q, int64_t now)
{
    if (q->nrec == 0 || q->records[0].segment == q->seg) /* the active segment stays */
        return false;
    if (q->max_bytes >= 0 && q->rec_bytes > (uint64_t) q->max_bytes)
        return true;
    return q->max_age_ms >= 0 && now - oldest_segment_end(q) > q->max_age_ms;
}

/* Retention runs when a segment fills, as on RabbitMQ: whole old segments go. */
static void
apply_retention(mem_queue_t *q)
{
    int64_t now = mmi_wall_ms();
    while (retention_over(q, now)) {
        uint64_t seg = q->records[0].segment;
        while (q->nrec > 0 && q->records[0].segment == seg)
            drop_first(q);
    }
}

bool
mem_stream_append(mem_queue_t *q, mem_msg_t *msg)
{
    if (q->nrec == q->rec_cap) {
        size_t cap = q->rec_cap ? q->rec_cap * 2 : 64;
        mem_record_t *r = realloc(q->records, cap * sizeof *r);
        if (r == NULL)
            return false;
        q->records = r;
        q->rec_cap = cap;
    }
    bool full = q->seg_fill > 0 && q->seg_fill + msg->body.len > (uint64_t) q->segment_bytes;
    if (full) { /* a new segment: the old ones may go */
        q->seg++;
        q->seg_fill = 0;
    }
    q->records[q->nrec++] = (mem_record_t){.msg = mem_msg_ref(msg), .segment = q->seg};
    q->rec_bytes += msg->body.len;
    q->seg_fill += msg->body.len;
    if (full)
        apply_retention(q);
    mem_touch(q);
    return true;
}

static const amqp_field_value_t *
offset_arg(const amqp_table_t *args)
{
    static const char key[] = "x-stream-offset";
    for (int i = 0; args != NULL && i < args->num_entries; i++)
        if (args->entries[i].key.len == sizeof key - 1 &&
            memcmp(args->entries[i].key.bytes, key, sizeof key - 1) == 0)
            return &args->entries[i].value;
    return NULL;
}

static bool
named(const amqp_field_value_t *v, const char *s)
{
    return (v->kind == AMQP_FIELD_KIND_UTF8 || v->kind == AMQP_FIELD_KIND_BYTES) &&
           v->value.bytes.len == strlen(s) && memcmp(v->value.bytes.bytes, s, strlen(s)) == 0;
}

/* The first record published at or after `seconds`. */
static int64_t
at_time(const mem_queue_t *q, uint64_t seconds)
{
    size_t i = 0;
    while (i < q->nrec && (uint64_t) q->records[i].msg->wall_ms / 1000 < seconds)
        i++;
    return q->first_offset + (int64_t) i;
}

int
mem_stream_start(mem_queue_t *q, const amqp_table_t *args, int64_t *ret, mem_err_t *e)
{
    const amqp_field_value_t *v = offset_arg(args);
    int64_t end = q->first_offset + (int64_t) q->nrec, n;
    if (v == NULL || named(v, "next"))
        *ret = end;
    else if (named(v, "first"))
        *ret = q->first_offset;
    else if (named(v, "last")) /* RabbitMQ: the last chunk; here the last record */
        *ret = q->nrec > 0 ? end - 1 : end;
    else if (v->kind == AMQP_FIELD_KIND_TIMESTAMP)
        *ret = at_time(q, v->value.u64);
    else if (mmi_field_integer(v, &n))
        *ret = n < q->first_offset ? q->first_offset : n > end ? end : n;
    else
        return mem_fail(e, MEM_PRECONDITION_FAILED,
                        "PRECONDITION_FAILED - invalid arg 'x-stream-offset' for queue '%s' "
                        "(memory:// takes first, last, next, an offset or a timestamp)",
                        q->name);
    return 0;
}

static void
read_on(mem_queue_t *q, mem_consumer_t *k)
{
    int64_t end = q->first_offset + (int64_t) q->nrec;
    if (k->pos < q->first_offset) /* retention went past it */
        k->pos = q->first_offset;
    while (k->pos < end && mem_consumer_has_room(k)) {
        mem_entry_t *e = mem_entry_new(q->records[k->pos - q->first_offset].msg);
        if (e == NULL)
            return;
        e->offset = k->pos;
        if (!mem_deliver(k, e)) {
            mem_entry_free(e);
            return;
        }
        k->pos++;
    }
}

void
mem_stream_dispatch(mem_queue_t *q)
{
    for (mem_consumer_t *k = q->consumers; k != NULL; k = k->qnext)
        read_on(q, k);
}

void
mem_stream_free(mem_queue_t *q)
{
    for (size_t i = 0; i < q->nrec; i++)
        mem_msg_unref(q->records[i].msg);
    free(q->records);
    q->records = NULL;
    q->nrec = q->rec_cap = 0;
}
