/*
 * The publishing channel: every request, task, event and answer goes out
 * through it. Opened when first needed; x.pubSub is declared on it before
 * the first event (an emit to a missing exchange would close the channel).
 */
#ifndef MM_PUBLISH_H
#define MM_PUBLISH_H

#include "headers.h"
#include "outbox.h"
#include "wire.h"

typedef struct mmi_pub {
    const char *exchange, *routing_key;
    bool mandatory;
    const char *correlation_id, *reply_to, *expiration; /* NULL: not set */
    const char *message_id;                             /* NULL: a fresh UUID */
    const char *type; /* the type property (topic records), or NULL */
    mmi_hdrs_t *hdrs;
    const mmi_wire_out_t *body;
    bool persistent;    /* delivery mode 2 */
    unsigned out_flags; /* MMI_OUT_* (lib/outbox.h) */
    mmi_sent_fn done;   /* the verdict, or NULL */
    void *done_ud;
    bool *ret_buffered; /* when not NULL: done is passed only if the send has to wait,
                           and this says whether it did */
} mmi_pub_t;

/* Through the outbox (lib/outbox.h): MM_OK when sent or buffered. */
int mmi_pub_send(mm_t *mm, const mmi_pub_t *p);

/* The plain or the confirm publishing channel, opened when first needed, with
 * x.pubSub declared on it when `need_exchange`. */
int mmi_pub_channel(mm_t *mm, bool confirm, bool need_exchange, uint16_t *ret_ch);

#define MMI_PUBSUB "x.pubSub"

/* lib/send.c: the options of a send, copied with their size checked. */
int mmi_send_load_opts(mm_t *mm, const mm_send_opts_t *opts, mm_send_opts_t *o);
/* Encode the body, add the metadata and user headers to h (then finished
 * and emptied), and send p through the outbox. request_id: idRequest or NULL. */
int mmi_send_one(mm_t *mm, mmi_hdrs_t *h, const mm_send_opts_t *o, const char *request_id,
                 mmi_pub_t *p, const void *body, size_t len);

#endif
