/*
 * The outbox: every publish goes through it. Sent at once when connected,
 * not blocked and nothing older waits; otherwise buffered in order (within
 * mm->opts.send_buffer bytes) and sent when the connection is back or
 * unblocked. Confirmed sends go out on the confirm channel and stay until
 * the broker's basic.ack/nack (or basic.return for a mandatory one); those
 * not confirmed when the connection dies are sent again after a reconnect.
 */
#ifndef MM_OUTBOX_H
#define MM_OUTBOX_H

#include "internal.h"

/* The verdict on one send: MM_OK (confirmed, or written when unconfirmed),
 * MM_ENOROUTE (returned), MM_EBROKER (nacked, or its channel closed),
 * MM_ETIMEDOUT / MM_EBLOCKED / MM_ENOTCONN (send timeout), MM_ECLOSED
 * (instance closed or freed). Called from the loop, never inside
 * mmi_outbox_send(); mm may be in any state but is alive. */
typedef void (*mmi_sent_fn)(mm_t *mm, int status, void *ud);

#define MMI_OUT_CONFIRM 1u /* wait for the broker's confirm */
#define MMI_OUT_BUFFER 2u  /* may wait in the buffer while disconnected (always while blocked) */
#define MMI_OUT_FAIL_FAST                                                                          \
    4u /* a direct write that finds the connection dead fails with                                 \
          MM_ENOTCONN instead of waiting (the caller cannot track it) */

typedef struct mmi_out_msg {
    const char *exchange, *routing_key;
    bool mandatory;
    const amqp_basic_properties_t *props; /* copied */
    amqp_bytes_t body;                    /* copied when it has to wait */
} mmi_out_msg_t;

/*
 * Send or buffer one message. `done` (may be NULL) gets the verdict later;
 * without it a failure is reported as an MM_EV_ERROR event.
 * @return MM_OK (sent or buffered: `done` will run), MM_ENOTCONN (not
 *         connected and not buffered), MM_EFULL, MM_ENOMEM, or a send error;
 *         `done` never runs after an error return.
 */
int mmi_outbox_send(mm_t *mm, const mmi_out_msg_t *m, unsigned flags, mmi_sent_fn done, void *ud);

/* The send would be kept (buffered or confirmed) rather than written and forgotten. */
bool mmi_outbox_would_wait(const mm_t *mm, unsigned flags);

/* What the confirm channel hears (lib/publish.c). */
void mmi_outbox_confirm(mm_t *mm, const amqp_method_t *m);   /* basic.ack / basic.nack */
bool mmi_outbox_returned(mm_t *mm, amqp_bytes_t message_id); /* basic.return: ours? */
void mmi_outbox_chan_closed(mm_t *mm, int code);

/* Connection events (lib/conn.c, lib/pump.c, lib/mm.c). */
void mmi_outbox_resume(mm_t *mm); /* connected or unblocked: send what waits */
void mmi_outbox_close(mm_t *mm);  /* mm_close: everything fails with MM_ECLOSED */
void mmi_outbox_free(mm_t *mm);   /* mm_free */
size_t mmi_outbox_pending(const mm_t *mm);

#endif
