/*
 * The AMQP operations the core uses (declare, bind, delete, qos, consume,
 * cancel, ack, nack, publish), as methods with rabbitmq-c's decoded structs:
 * the vocabulary both transports speak. Each goes to the instance's
 * transport (lib/transport.h): mmi_rpc for the synchronous ones,
 * mmi_send_method for the asynchronous ones, and the publishes.
 */
#include <stdio.h>
#include <string.h>

#include "transport.h"

int
mmi_rpc(mm_t *mm, uint16_t ch, amqp_method_number_t id, void *req, amqp_method_number_t reply_id,
        void **ret_reply)
{
    if (mm->state != MMI_CONNECTED)
        return mmi_fail(mm, MM_ENOTCONN, "not connected");
    if (!mmi_chan_is_open(mm, ch))
        return mmi_fail(mm, MM_ECHANNEL, "channel %u is not open", ch);
    return mm->tp->rpc(mm, ch, id, req, reply_id, ret_reply);
}

int
mmi_send_method(mm_t *mm, uint16_t ch, amqp_method_number_t id, void *decoded)
{
    if (mm->state != MMI_CONNECTED)
        return mmi_fail(mm, MM_ENOTCONN, "not connected");
    return mm->tp->send(mm, ch, id, decoded);
}

static int
check_open(mm_t *mm, uint16_t ch)
{
    return mmi_chan_is_open(mm, ch) ? MM_OK
                                    : mmi_fail(mm, MM_ECHANNEL, "channel %u is not open", ch);
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
    return mm->tp->send(mm, ch, AMQP_BASIC_ACK_METHOD, &m);
}

int
mmi_basic_nack(mm_t *mm, uint16_t ch, uint64_t tag, bool multiple, bool requeue)
{
    int rc = check_open(mm, ch);
    if (rc != MM_OK)
        return rc;
    amqp_basic_nack_t m = {.delivery_tag = tag, .multiple = multiple, .requeue = requeue};
    return mm->tp->send(mm, ch, AMQP_BASIC_NACK_METHOD, &m);
}

/* Properties already encoded (the outbox keeps them so). */
int
mmi_publish_encoded(mm_t *mm, uint16_t ch, const char *exchange, const char *routing_key,
                    bool mandatory, amqp_bytes_t props, amqp_bytes_t body)
{
    int rc = check_open(mm, ch);
    if (rc != MM_OK)
        return rc;
    return mm->tp->publish(mm, ch, amqp_cstring_bytes(exchange), amqp_cstring_bytes(routing_key),
                           mandatory, NULL, &props, body);
}

int
mmi_publish(mm_t *mm, uint16_t ch, const char *exchange, const char *routing_key, bool mandatory,
            const amqp_basic_properties_t *props, amqp_bytes_t body)
{
    int rc = check_open(mm, ch);
    if (rc != MM_OK)
        return rc;
    return mm->tp->publish(mm, ch, amqp_cstring_bytes(exchange), amqp_cstring_bytes(routing_key),
                           mandatory, props, NULL, body);
}
