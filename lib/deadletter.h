/*
 * Poison messages: redelivery counting and the service's dead-letter queue
 * q.deadLetter.<service> (lib/deadletter.c), its figures and the redrive
 * that moves its messages back (lib/deadletter_redrive.c).
 *
 * A received request or task keeps a pointer to its delivery while it is
 * dispatched (mm_msg_t.wire); mm_msg_ref copies what a later dead-letter
 * needs (mm_msg_t.kept), so a message nobody keeps costs nothing extra.
 */
#ifndef MM_DEADLETTER_H
#define MM_DEADLETTER_H

#include "internal.h"

struct mm_msg;

#define MMI_DL_PREFIX "q.deadLetter."

/* Header names (x-mm-* beside __mms, invisible to a protocol-only peer: PROTOCOL.md 9). */
#define MMI_H_DELIVERIES "x-mm-deliveries" /* failed deliveries so far (counted copies) */
#define MMI_H_DEAD_PREFIX "x-mm-dead-"     /* reason, text, route, queue, count, at */
#define MMI_H_BODY_DROPPED "x-mm-body-dropped"

/* The delivery's wire form, kept past its dispatch. */
typedef struct mmi_wire_kept {
    amqp_pool_t pool;
    amqp_basic_properties_t props; /* strings and headers in the pool */
    amqp_bytes_t body;
    uint64_t body_size;
    bool oversize;
} mmi_wire_kept_t;

/* mm_msg_ref of a request or task being dispatched: copy its wire form.
 * MM_OK or MM_ENOMEM (a later dead-letter then gives the message back). */
int mmi_dl_keep(struct mm_msg *msg);
void mmi_dl_kept_free(mmi_wire_kept_t *k);

/* Failed deliveries of the message, this one included: x-mm-deliveries + 1. */
uint32_t mmi_dl_failed(const struct mm_msg *msg);

/*
 * A redelivered request or task counted below the limit: a copy with
 * x-mm-deliveries = failed goes to the back of its queue (confirmed), and
 * the delivery is acked once the copy is confirmed. MM_OK: msg is settled;
 * else nothing happened (the caller hands the message to its handler).
 */
int mmi_dl_count(struct mm_msg *msg, uint32_t failed);

/*
 * Dead-letter a received message instead of dropping it: a copy with the
 * x-mm-dead-* headers goes to q.deadLetter.<service> (declared when first
 * needed on each connection), the delivery is acked once the copy is
 * confirmed and an MM_EV_DEADLETTER event is raised. `reason` is the code
 * string ("redelivered", "badRequest"...), `code` the MM_E* code.
 * If the copy cannot be sent, the message goes back to its queue
 * (nack with requeue) with an MM_EV_ERROR event: never dropped.
 * @return MM_OK (msg settled), MM_ESTATE (already settled), MM_ECHANNEL /
 *         MM_ECLOSED (its channel or instance is gone: the broker redelivers it).
 */
int mmi_dl_settle(struct mm_msg *msg, const char *reason, int code, const char *text);

/* The last reference to a request or task kept past its handler is dropped
 * and it was never settled: dead-letter it (notHandled), with an MM_EV_ERROR
 * event and an error answer to a requester, rather than leave it holding
 * its prefetch slot until the channel closes. */
void mmi_dl_release(struct mm_msg *msg);

/* q.deadLetter.<service> into out (cap >= MMI_QUEUE_MAX). */
char *mmi_dl_queue(char *out, size_t cap, const char *service);

/* The headers of `src` without those `drop` names, then `extra`, into
 * `entries` (room for src's entries + nextra); the table points there. */
amqp_table_t mmi_dl_headers(const amqp_basic_properties_t *src, bool (*drop)(amqp_bytes_t key),
                            const amqp_table_entry_t *extra, int nextra,
                            amqp_table_entry_t *entries);

/* Whether `key` is one of ours: x-mm-dead-*, x-mm-deliveries, x-mm-body-dropped. */
bool mmi_dl_is_dead_header(amqp_bytes_t key);
bool mmi_dl_is_count_header(amqp_bytes_t key);

/* An integer header (any integer kind) clamped to [0, UINT32_MAX]; 0 when absent. */
uint32_t mmi_dl_header_uint(const amqp_basic_properties_t *p, const char *key);

#endif
