/*
 * The AMQP transport's synchronous methods, asynchronous methods and
 * publishes (lib/transport.h), over rabbitmq-c and our writer.
 *
 * mmi_amqp_rpc replaces rabbitmq-c's amqp_simple_rpc, which ignores frames
 * already queued inside rabbitmq-c and so hangs forever when a channel.close
 * for its channel is among them. Ours reads the queue first, keeps every
 * frame that is not its reply in the backlog (the pump dispatches them next,
 * in order), answers a channel.close on its own channel at once, and is
 * bounded by the RPC timeout: a broker that does not answer costs the
 * connection, never a hung loop. Every call that may have read re-arms the
 * pump. Publishes, acks and nacks go through lib/writer.c (one send() per
 * callback), or rabbitmq-c's own path over TLS.
 */
#include <stdio.h>
#include <string.h>

#include "transport.h"

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
mmi_amqp_rpc(mm_t *mm, uint16_t ch, amqp_method_number_t id, void *req,
             amqp_method_number_t reply_id, void **ret_reply)
{
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

static const char *
method_name(amqp_method_number_t id)
{
    switch (id) {
    case AMQP_BASIC_ACK_METHOD:
        return "basic.ack";
    case AMQP_BASIC_NACK_METHOD:
        return "basic.nack";
    case AMQP_BASIC_GET_METHOD:
        return "basic.get";
    case AMQP_CHANNEL_CLOSE_OK_METHOD:
        return "channel.close-ok";
    default:
        return "a method";
    }
}

/* Acks and nacks through our writer (one send() per callback); anything else
 * (close-ok, basic.get) is rabbitmq-c's to write, after what we buffered. */
int
mmi_amqp_send(mm_t *mm, uint16_t ch, amqp_method_number_t id, void *decoded)
{
    bool ours = id == AMQP_BASIC_ACK_METHOD || id == AMQP_BASIC_NACK_METHOD;
    if (mm->wr_fd >= 0 && ours)
        return mmi_writer_method(mm, ch, id, decoded);
    if (mmi_writer_flush(mm) != MM_OK)
        return MM_ENOTCONN;
    return after_send(mm, amqp_send_method(mm->conn, ch, id, decoded), method_name(id));
}

/* rabbitmq-c's own publish (TLS): it wants the properties decoded. */
static int
tls_publish(mm_t *mm, uint16_t ch, amqp_bytes_t exchange, amqp_bytes_t routing_key, bool mandatory,
            const amqp_basic_properties_t *props, const amqp_bytes_t *encoded, amqp_bytes_t body)
{
    amqp_pool_t pool;
    void *decoded = (void *) props;
    if (encoded != NULL) {
        init_amqp_pool(&pool, 1024);
        if (amqp_decode_properties(AMQP_BASIC_CLASS, &pool, *encoded, &decoded) != AMQP_STATUS_OK) {
            empty_amqp_pool(&pool);
            return mmi_fail(mm, MM_ENOMEM, "out of memory");
        }
    }
    int st = amqp_basic_publish(mm->conn, ch, exchange, routing_key, mandatory, 0, decoded, body);
    if (encoded != NULL)
        empty_amqp_pool(&pool);
    return after_send(mm, st, "basic.publish");
}

/* Properties already encoded (the outbox keeps them so) go as they are
 * through our writer. */
int
mmi_amqp_publish(mm_t *mm, uint16_t ch, amqp_bytes_t exchange, amqp_bytes_t routing_key,
                 bool mandatory, const amqp_basic_properties_t *props, const amqp_bytes_t *encoded,
                 amqp_bytes_t body)
{
    if (mm->wr_fd < 0)
        return tls_publish(mm, ch, exchange, routing_key, mandatory, props, encoded, body);
    if (encoded != NULL)
        return mmi_writer_publish_encoded(mm, ch, exchange, routing_key, mandatory, *encoded, body);
    return mmi_writer_publish(mm, ch, exchange, routing_key, mandatory, props, body);
}
