/*
 * Synchronous AMQP methods and the sends the core makes (publish, ack).
 *
 * mmi_rpc replaces rabbitmq-c's amqp_simple_rpc, which ignores frames already
 * queued inside rabbitmq-c and so hangs forever when a channel.close for its
 * channel is among them. Ours reads the queue first, keeps every frame that
 * is not its reply in the backlog (the pump dispatches them next, in order),
 * answers a channel.close on its own channel at once, and is bounded by the
 * RPC timeout: a broker that does not answer costs the connection, never a
 * hung loop. Every call that may have read re-arms the pump.
 */
#include <stdio.h>
#include <string.h>

#include "internal.h"

static int
remaining_tv(uint64_t deadline, struct timeval *tv)
{
    uint64_t now = mmi_now_ms();
    if (now >= deadline)
        return 0;
    uint64_t left = deadline - now;
    *tv = (struct timeval){.tv_sec = (time_t) (left / 1000),
                           .tv_usec = (suseconds_t) (left % 1000) * 1000};
    return 1;
}

static int
rpc_read_failed(mm_t *mm, uint16_t ch, amqp_method_number_t id, int st)
{
    if (st == AMQP_STATUS_TIMEOUT) {
        mmi_conn_lost(mm, MM_ETIMEDOUT, "no reply to method 0x%08x on channel %u within %u ms", id,
                      ch, mm->opts.rpc_timeout_ms);
        return mmi_fail(mm, MM_ETIMEDOUT, "no reply from the broker within %u ms",
                        mm->opts.rpc_timeout_ms);
    }
    mmi_conn_lost(mm, mmi_err_from_status(st), "reading from the broker: %s",
                  amqp_error_string2(st));
    return mmi_fail(mm, MM_EDISCONNECTED, "connection lost: %s", amqp_error_string2(st));
}

/* A frame that is not our reply: handle what cannot wait, keep the rest. */
static int
rpc_other_frame(mm_t *mm, uint16_t ch, const amqp_frame_t *f)
{
    if (f->channel == 0) {
        mmi_conn_frame(mm, f);
        if (mm->state != MMI_CONNECTED)
            return mmi_fail(mm, MM_EDISCONNECTED, "%s", "connection closed by the broker");
        return MM_OK;
    }
    if (f->channel == ch && f->frame_type == AMQP_FRAME_METHOD &&
        f->payload.method.id == AMQP_CHANNEL_CLOSE_METHOD) {
        const amqp_channel_close_t *c = f->payload.method.decoded;
        int rc = mmi_fail(mm, MM_ECHANNEL, "broker closed channel %u: %u %.*s", ch, c->reply_code,
                          (int) c->reply_text.len, (const char *) c->reply_text.bytes);
        mmi_chan_closed_by_broker(mm, ch, c);
        return rc;
    }
    if (mmi_backlog_push(mm, f) != MM_OK) {
        mmi_conn_lost(mm, MM_ENOMEM, "no memory to keep an incoming frame");
        return mmi_fail(mm, MM_ENOMEM, "out of memory");
    }
    return MM_OK;
}

static int
rpc_wait(mm_t *mm, uint16_t ch, amqp_method_number_t id, amqp_method_number_t reply_id,
         void **ret_reply)
{
    uint64_t deadline = mmi_now_ms() + mm->opts.rpc_timeout_ms;
    for (;;) {
        struct timeval tv;
        amqp_frame_t f;
        int st = remaining_tv(deadline, &tv) ? amqp_simple_wait_frame_noblock(mm->conn, &f, &tv)
                                             : AMQP_STATUS_TIMEOUT;
        if (st != AMQP_STATUS_OK)
            return rpc_read_failed(mm, ch, id, st);
        if (f.frame_type == AMQP_FRAME_HEARTBEAT)
            continue;
        if (f.channel == ch && f.frame_type == AMQP_FRAME_METHOD &&
            f.payload.method.id == reply_id) {
            if (ret_reply != NULL)
                *ret_reply = f.payload.method.decoded;
            return MM_OK;
        }
        int rc = rpc_other_frame(mm, ch, &f);
        if (rc != MM_OK)
            return rc;
    }
}

/* While the broker blocks the connection (a resource alarm) it stops reading
 * our socket as soon as we publish, so a reply may never come: waiting would
 * hold the loop until the RPC timeout and then kill the connection. Fail at
 * once instead; a channel.close is only sent (frames are read in order once
 * the block ends, so the number can be reused safely). */
static int
blocked_rpc(mm_t *mm, uint16_t ch, amqp_method_number_t id, void *req)
{
    if (id != AMQP_CHANNEL_CLOSE_METHOD)
        return mmi_fail(mm, MM_EBLOCKED,
                        "the broker blocks this connection (resource alarm): method 0x%08x on "
                        "channel %u not sent",
                        id, ch);
    int st = amqp_send_method(mm->conn, ch, id, req);
    if (st != AMQP_STATUS_OK) {
        mmi_conn_lost(mm, mmi_err_from_status(st), "sending: %s", amqp_error_string2(st));
        return mmi_fail(mm, MM_ENOTCONN, "connection lost: %s", amqp_error_string2(st));
    }
    return MM_OK;
}

int
mmi_rpc(mm_t *mm, uint16_t ch, amqp_method_number_t id, void *req, amqp_method_number_t reply_id,
        void **ret_reply)
{
    if (mm->state != MMI_CONNECTED)
        return mmi_fail(mm, MM_ENOTCONN, "not connected");
    if (!mmi_chan_is_open(mm, ch))
        return mmi_fail(mm, MM_ECHANNEL, "channel %u is not open", ch);
    if (mmi_writer_flush(mm) != MM_OK) /* our frames first, in order */
        return MM_EDISCONNECTED;
    if (mm->blocked)
        return blocked_rpc(mm, ch, id, req);
    int st = amqp_send_method(mm->conn, ch, id, req);
    if (st != AMQP_STATUS_OK) {
        mmi_conn_lost(mm, mmi_err_from_status(st), "sending: %s", amqp_error_string2(st));
        return mmi_fail(mm, MM_EDISCONNECTED, "connection lost: %s", amqp_error_string2(st));
    }
    int rc = rpc_wait(mm, ch, id, reply_id, ret_reply);
    mmi_pump_kick(mm);
    return rc;
}

static int
check_open(mm_t *mm, uint16_t ch)
{
    return mmi_chan_is_open(mm, ch) ? MM_OK
                                    : mmi_fail(mm, MM_ECHANNEL, "channel %u is not open", ch);
}

/* After an asynchronous send: a failed send means a dead connection; a good
 * one may have read frames (rabbitmq-c reads while it writes), so re-arm.
 * The caller learns MM_ENOTCONN, as for any call made once the connection is
 * gone (the public contracts of sends and settles). */
static int
after_send(mm_t *mm, int st, const char *what)
{
    if (st != AMQP_STATUS_OK) {
        mmi_conn_lost(mm, mmi_err_from_status(st), "%s: %s", what, amqp_error_string2(st));
        return mmi_fail(mm, MM_ENOTCONN, "not connected: the connection died during %s (%s)", what,
                        amqp_error_string2(st));
    }
    mmi_pump_kick(mm);
    return MM_OK;
}

int
mmi_queue_declare(mm_t *mm, uint16_t ch, const char *name, unsigned flags, const amqp_table_t *args,
                  uint32_t *ret_count)
{
    return mmi_queue_declare_full(mm, ch, name, flags, args, ret_count, NULL);
}

int
mmi_queue_declare_full(mm_t *mm, uint16_t ch, const char *name, unsigned flags,
                       const amqp_table_t *args, uint32_t *ret_count, uint32_t *ret_consumers)
{
    amqp_queue_declare_t req = {
        .queue = amqp_cstring_bytes(name ? name : ""),
        .passive = (flags & MMI_Q_PASSIVE) != 0,
        .durable = (flags & MMI_Q_DURABLE) != 0,
        .exclusive = (flags & MMI_Q_EXCLUSIVE) != 0,
        .auto_delete = (flags & MMI_Q_AUTO_DELETE) != 0,
        .arguments = args ? *args : amqp_empty_table,
    };
    amqp_queue_declare_ok_t *ok = NULL;
    int rc = mmi_rpc(mm, ch, AMQP_QUEUE_DECLARE_METHOD, &req, AMQP_QUEUE_DECLARE_OK_METHOD,
                     (void **) &ok);
    if (rc == MM_OK && ret_count != NULL)
        *ret_count = ok->message_count;
    if (rc == MM_OK && ret_consumers != NULL)
        *ret_consumers = ok->consumer_count;
    return rc;
}

int
mmi_queue_delete(mm_t *mm, uint16_t ch, const char *name)
{
    return mmi_queue_delete_if(mm, ch, name, false, false);
}

int
mmi_queue_delete_if(mm_t *mm, uint16_t ch, const char *name, bool if_unused, bool if_empty)
{
    amqp_queue_delete_t req = {
        .queue = amqp_cstring_bytes(name), .if_unused = if_unused, .if_empty = if_empty};
    return mmi_rpc(mm, ch, AMQP_QUEUE_DELETE_METHOD, &req, AMQP_QUEUE_DELETE_OK_METHOD, NULL);
}

int
mmi_queue_bind(mm_t *mm, uint16_t ch, const char *queue, const char *exchange, const char *key)
{
    amqp_queue_bind_t req = {.queue = amqp_cstring_bytes(queue),
                             .exchange = amqp_cstring_bytes(exchange),
                             .routing_key = amqp_cstring_bytes(key),
                             .arguments = amqp_empty_table};
    return mmi_rpc(mm, ch, AMQP_QUEUE_BIND_METHOD, &req, AMQP_QUEUE_BIND_OK_METHOD, NULL);
}

int
mmi_queue_unbind(mm_t *mm, uint16_t ch, const char *queue, const char *exchange, const char *key)
{
    amqp_queue_unbind_t req = {.queue = amqp_cstring_bytes(queue),
                               .exchange = amqp_cstring_bytes(exchange),
                               .routing_key = amqp_cstring_bytes(key),
                               .arguments = amqp_empty_table};
    return mmi_rpc(mm, ch, AMQP_QUEUE_UNBIND_METHOD, &req, AMQP_QUEUE_UNBIND_OK_METHOD, NULL);
}

int
mmi_exchange_declare(mm_t *mm, uint16_t ch, const char *name, const char *type, bool durable)
{
    amqp_exchange_declare_t req = {.exchange = amqp_cstring_bytes(name),
                                   .type = amqp_cstring_bytes(type),
                                   .durable = durable,
                                   .arguments = amqp_empty_table};
    return mmi_rpc(mm, ch, AMQP_EXCHANGE_DECLARE_METHOD, &req, AMQP_EXCHANGE_DECLARE_OK_METHOD,
                   NULL);
}

int
mmi_basic_cancel(mm_t *mm, uint16_t ch, const char *tag)
{
    amqp_basic_cancel_t req = {.consumer_tag = amqp_cstring_bytes(tag)};
    return mmi_rpc(mm, ch, AMQP_BASIC_CANCEL_METHOD, &req, AMQP_BASIC_CANCEL_OK_METHOD, NULL);
}

int
mmi_basic_qos(mm_t *mm, uint16_t ch, uint16_t prefetch)
{
    /* Per consumer: RabbitMQ's per-channel (global) limit costs 10-20 % of
     * throughput (measured with mm_bench). A per-consumer limit applies only to
     * consumers created afterwards, so a change re-consumes (lib/route_qos.c). */
    amqp_basic_qos_t req = {.prefetch_count = prefetch};
    return mmi_rpc(mm, ch, AMQP_BASIC_QOS_METHOD, &req, AMQP_BASIC_QOS_OK_METHOD, NULL);
}

int
mmi_basic_consume(mm_t *mm, uint16_t ch, const char *queue, bool no_ack, bool exclusive,
                  char *ret_tag, size_t tag_len)
{
    return mmi_basic_consume_args(mm, ch, queue, no_ack, exclusive, NULL, ret_tag, tag_len);
}

int
mmi_basic_consume_args(mm_t *mm, uint16_t ch, const char *queue, bool no_ack, bool exclusive,
                       const amqp_table_t *args, char *ret_tag, size_t tag_len)
{
    amqp_basic_consume_t req = {
        .queue = amqp_cstring_bytes(queue),
        .no_ack = no_ack,
        .exclusive = exclusive,
        .arguments = args ? *args : amqp_empty_table,
    };
    amqp_basic_consume_ok_t *ok = NULL;
    int rc = mmi_rpc(mm, ch, AMQP_BASIC_CONSUME_METHOD, &req, AMQP_BASIC_CONSUME_OK_METHOD,
                     (void **) &ok);
    if (rc == MM_OK && ret_tag != NULL && tag_len > 0)
        snprintf(ret_tag, tag_len, "%.*s", (int) ok->consumer_tag.len,
                 (const char *) ok->consumer_tag.bytes);
    return rc;
}

int
mmi_basic_ack(mm_t *mm, uint16_t ch, uint64_t tag, bool multiple)
{
    int rc = check_open(mm, ch);
    if (rc != MM_OK)
        return rc;
    amqp_basic_ack_t m = {.delivery_tag = tag, .multiple = multiple};
    if (mm->wr_fd >= 0)
        return mmi_writer_method(mm, ch, AMQP_BASIC_ACK_METHOD, &m);
    return after_send(mm, amqp_send_method(mm->conn, ch, AMQP_BASIC_ACK_METHOD, &m), "basic.ack");
}

int
mmi_basic_nack(mm_t *mm, uint16_t ch, uint64_t tag, bool multiple, bool requeue)
{
    int rc = check_open(mm, ch);
    if (rc != MM_OK)
        return rc;
    amqp_basic_nack_t m = {.delivery_tag = tag, .multiple = multiple, .requeue = requeue};
    if (mm->wr_fd >= 0)
        return mmi_writer_method(mm, ch, AMQP_BASIC_NACK_METHOD, &m);
    return after_send(mm, amqp_send_method(mm->conn, ch, AMQP_BASIC_NACK_METHOD, &m), "basic.nack");
}

/* Properties already encoded (the outbox keeps them so): as they are through
 * our writer; rabbitmq-c's path (TLS) wants them decoded again. */
int
mmi_publish_encoded(mm_t *mm, uint16_t ch, const char *exchange, const char *routing_key,
                    bool mandatory, amqp_bytes_t props, amqp_bytes_t body)
{
    int rc = check_open(mm, ch);
    if (rc != MM_OK)
        return rc;
    if (mm->wr_fd >= 0)
        return mmi_writer_publish_encoded(mm, ch, amqp_cstring_bytes(exchange),
                                          amqp_cstring_bytes(routing_key), mandatory, props, body);
    amqp_pool_t pool;
    init_amqp_pool(&pool, 1024);
    void *decoded = NULL;
    if (amqp_decode_properties(AMQP_BASIC_CLASS, &pool, props, &decoded) != AMQP_STATUS_OK) {
        empty_amqp_pool(&pool);
        return mmi_fail(mm, MM_ENOMEM, "out of memory");
    }
    rc = mmi_publish(mm, ch, exchange, routing_key, mandatory, decoded, body);
    empty_amqp_pool(&pool);
    return rc;
}

int
mmi_publish(mm_t *mm, uint16_t ch, const char *exchange, const char *routing_key, bool mandatory,
            const amqp_basic_properties_t *props, amqp_bytes_t body)
{
    int rc = check_open(mm, ch);
    if (rc != MM_OK)
        return rc;
    if (mm->wr_fd >= 0)
        return mmi_writer_publish(mm, ch, amqp_cstring_bytes(exchange),
                                  amqp_cstring_bytes(routing_key), mandatory, props, body);
    int st = amqp_basic_publish(mm->conn, ch, amqp_cstring_bytes(exchange),
                                amqp_cstring_bytes(routing_key), mandatory, 0, props, body);
    return after_send(mm, st, "basic.publish");
}
