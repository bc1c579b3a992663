/*
 * The transport seam: what the core asks of the connection under it. Above
 * it everything (channels' owners, dispatch, routes, requests, the outbox)
 * speaks AMQP methods and mmi_content_t; below it, two implementations:
 *
 *   - AMQP over rabbitmq-c (lib/amqp_conn.c, lib/amqp_rpc.c, with the pump,
 *     the writer and the frame assembly of lib/chan.c);
 *   - memory://NAME, an in-process broker (lib/mem/), for tests without one.
 *
 * The instance's transport is chosen by the URI's scheme (lib/conn.c) and
 * reached through mm->tp: one indirect call per operation, nothing copied.
 * A transport delivers upward only through lib/chan.c (mmi_chan_frame for
 * frames, mmi_chan_content and mmi_chan_method for whole messages and
 * methods) and never inside the call that caused the delivery, except what
 * AMQP itself answers at once: a synchronous method's reply, or the close of
 * the channel it was sent on (the owner's on_closed runs inside mmi_rpc).
 */
#ifndef MM_TRANSPORT_H
#define MM_TRANSPORT_H

#include "internal.h"

typedef struct mmi_transport {
    const char *name;
    /* A lost connection may come back (lib/reconnect.c) */
    bool reconnects;
    /* Connect with mm->uri, blocking: MM_OK once the connection is the
     * instance's (state MMI_CONNECTED), else an error set with mmi_fail. */
    int (*connect)(mm_t *mm);
    /* The clean end (connection.close), bounded; the state is then retired. */
    void (*close)(mm_t *mm);
    /* Out of service at once: no more deliveries, nothing sent. What it owns
     * waits for reap, since a callback may still point into it. */
    void (*retire)(mm_t *mm);
    /* Free what retire kept (from the deferred event, outside callbacks). */
    void (*reap)(mm_t *mm);
    /* A synchronous method on an open channel (channel.open and close too):
     * MM_OK with *ret_reply (valid until the next call), MM_ECHANNEL when
     * the broker closed the channel (the owner's on_closed has run), or a
     * connection error. */
    int (*rpc)(mm_t *mm, uint16_t ch, amqp_method_number_t id, void *req,
               amqp_method_number_t reply_id, void **ret_reply);
    /* An asynchronous method: basic.ack, basic.nack, basic.get,
     * channel.close-ok. MM_OK, or MM_ENOTCONN once the connection is lost. */
    int (*send)(mm_t *mm, uint16_t ch, amqp_method_number_t id, void *decoded);
    /* basic.publish: properties decoded (`props`) or already encoded
     * (`encoded`, then props is NULL); the transport copies what it keeps. */
    int (*publish)(mm_t *mm, uint16_t ch, amqp_bytes_t exchange, amqp_bytes_t routing_key,
                   bool mandatory, const amqp_basic_properties_t *props,
                   const amqp_bytes_t *encoded, amqp_bytes_t body);
} mmi_transport_t;

extern const mmi_transport_t mmi_amqp_transport; /* lib/amqp_conn.c */
extern const mmi_transport_t mmi_mem_transport;  /* lib/mem/conn.c */

/* lib/amqp_rpc.c: the AMQP transport's methods and publishes. */
int mmi_amqp_rpc(mm_t *mm, uint16_t ch, amqp_method_number_t id, void *req,
                 amqp_method_number_t reply_id, void **ret_reply);
int mmi_amqp_send(mm_t *mm, uint16_t ch, amqp_method_number_t id, void *decoded);
int mmi_amqp_publish(mm_t *mm, uint16_t ch, amqp_bytes_t exchange, amqp_bytes_t routing_key,
                     bool mandatory, const amqp_basic_properties_t *props,
                     const amqp_bytes_t *encoded, amqp_bytes_t body);

/* lib/mem/registry.c: the instance's hold on its memory broker (mm_free). */
void mmi_mem_release(mm_t *mm);

#endif
