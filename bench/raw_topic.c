/*
 * The raw rabbitmq-c baseline of topics: a RabbitMQ stream (s.topic.<name>,
 * x-queue-type stream, micromsg's shape: lib/topic.c) appended to with
 * publisher confirms and replayed from its first record, the way a plain
 * rabbitmq-c program does it (roles.h):
 *
 * topic-prep  declares the stream; READY; a trivial RESULT; exits.
 * topic-pub   appends warmup + n records (persistent, type "bench"), at most
 *             `window` unconfirmed; RESULT: confirmed records/s; deletes the
 *             stream; exits.
 * topic-fill  declares the stream and appends warmup + n records, confirmed;
 *             READY; RESULT; exits.
 * topic-read  consumes the stream from "first" with a prefetch, acking each
 *             record (a stream's acks are its credit); RESULT over the n
 *             records after warmup; deletes the stream; exits.
 */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "raw.h"
#include "roles.h"

static void
stream_name(char *out, const char *name)
{
    if (snprintf(out, RAW_NAME_MAX, "s.topic.%s", name) >= RAW_NAME_MAX)
        bench_die("name '%s' too long", name);
}

static void
declare_stream(conn_t c, const char *stream)
{
    amqp_table_entry_t type = {
        .key = amqp_cstring_bytes("x-queue-type"),
        .value = {.kind = AMQP_FIELD_KIND_UTF8, .value.bytes = amqp_cstring_bytes("stream")},
    };
    amqp_table_t args = {.num_entries = 1, .entries = &type};
    amqp_queue_declare(c, RAW_CH, amqp_cstring_bytes(stream), 0, 1, 0, 0, args);
    check_rpc(c, "queue.declare of the stream");
}

static void
delete_stream(conn_t c, const char *stream)
{
    amqp_queue_delete(c, RAW_CH, amqp_cstring_bytes(stream), 0, 0);
    check_rpc(c, "queue.delete of the stream");
}

/* Append warmup + n records, `window` unconfirmed at most. */
static void
append_all(conn_t c, const bench_args_t *a, const char *stream)
{
    confirms_t cf = {.low = 1, .window = (uint64_t) a->window};
    uint64_t total = (uint64_t) (a->warmup + a->n);
    if ((cf.done = calloc(cf.window, 1)) == NULL)
        bench_die("out of memory");
    amqp_confirm_select(c, RAW_CH);
    check_rpc(c, "confirm.select");
    uint8_t body[BENCH_BODY];
    amqp_basic_properties_t props = {
        ._flags =
            AMQP_BASIC_CONTENT_TYPE_FLAG | AMQP_BASIC_DELIVERY_MODE_FLAG | AMQP_BASIC_TYPE_FLAG,
        .content_type = amqp_cstring_bytes(RAW_CTYPE),
        .delivery_mode = AMQP_DELIVERY_PERSISTENT,
        .type = amqp_cstring_bytes("bench"),
    };
    amqp_bytes_t rk = amqp_cstring_bytes(stream), b = {sizeof body, body};
    rx_t m;
    while (cf.low <= total) {
        while (cf.published < total && cf.published + 1 - cf.low < cf.window) {
            bench_body_pack(body, cf.published, bench_now_ns());
            check_status(amqp_basic_publish(c, RAW_CH, amqp_empty_bytes, rk, 1, 0, &props, b),
                         "topic: appending a record");
            cf.published++;
        }
        rx_next(c, &m, NULL);
        take_confirm(&cf, &m);
        amqp_maybe_release_buffers(c);
    }
    free(cf.done);
}

int
raw_topic_prep(const bench_args_t *a)
{
    char stream[RAW_NAME_MAX];
    stream_name(stream, a->name);
    bench_span_t span;
    bench_span_start(&span);
    conn_t c = raw_connect(a->uri);
    declare_stream(c, stream);
    raw_close(c);
    bench_ready();
    bench_span_report(&span, 1, "");
    return 0;
}

int
raw_topic_pub(const bench_args_t *a)
{
    char stream[RAW_NAME_MAX];
    stream_name(stream, a->name);
    conn_t c = raw_connect(a->uri);
    bench_span_t span;
    bench_span_start(&span);
    append_all(c, a, stream);
    bench_span_report(&span, a->warmup + a->n, "");
    delete_stream(c, stream);
    raw_close(c);
    return 0;
}

int
raw_topic_fill(const bench_args_t *a)
{
    char stream[RAW_NAME_MAX];
    stream_name(stream, a->name);
    conn_t c = raw_connect(a->uri);
    declare_stream(c, stream);
    bench_span_t span;
    bench_span_start(&span);
    append_all(c, a, stream);
    raw_close(c);
    bench_ready();
    bench_span_report(&span, a->warmup + a->n, "");
    return 0;
}

static void
consume_from_first(conn_t c, const char *stream, int prefetch)
{
    amqp_basic_qos(c, RAW_CH, 0, (uint16_t) prefetch, 0);
    check_rpc(c, "basic.qos");
    amqp_table_entry_t off = {
        .key = amqp_cstring_bytes("x-stream-offset"),
        .value = {.kind = AMQP_FIELD_KIND_UTF8, .value.bytes = amqp_cstring_bytes("first")},
    };
    amqp_table_t args = {.num_entries = 1, .entries = &off};
    amqp_basic_consume(c, RAW_CH, amqp_cstring_bytes(stream), amqp_empty_bytes, 0, 0, 0, args);
    check_rpc(c, "basic.consume of the stream");
}

int
raw_topic_read(const bench_args_t *a)
{
    char stream[RAW_NAME_MAX];
    stream_name(stream, a->name);
    conn_t c = raw_connect(a->uri);
    consume_from_first(c, stream, a->prefetch);
    bench_span_t span;
    long total = a->warmup + a->n;
    rx_t m;
    for (long seen = 0; seen < total; seen++) {
        if (seen == a->warmup)
            bench_span_start(&span);
        rx_next(c, &m, NULL);
        if (m.id != AMQP_BASIC_DELIVER_METHOD)
            die_unexpected(&m, "topic-read");
        uint64_t seq, t;
        if (bench_body_unpack(m.body.bytes, m.body.len, &seq, &t) != 0)
            bench_die("topic-read: a record that is not ours");
        const amqp_basic_deliver_t *d = m.method;
        check_status(amqp_basic_ack(c, RAW_CH, d->delivery_tag, 0), "basic.ack");
        amqp_maybe_release_buffers(c);
    }
    bench_span_report(&span, a->n, "");
    delete_stream(c, stream); /* the consumer goes with it */
    raw_close(c);
    return 0;
}
