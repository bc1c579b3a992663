/*
 * The publishing channel: every request, task, event and answer goes out
 * through it. Opened when first needed; x.pubSub is declared on it before
 * the first event (an emit to a missing exchange would close the channel).
 */
#ifndef MM_PUBLISH_H
#define MM_PUBLISH_H

#include "headers.h"
#include "wire.h"

typedef struct mmi_pub {
    const char *exchange, *routing_key;
    bool mandatory;
    const char *correlation_id, *reply_to, *expiration; /* NULL: not set */
    mmi_hdrs_t *hdrs;
    const mmi_wire_out_t *body;
} mmi_pub_t;

int mmi_pub_send(mm_t *mm, const mmi_pub_t *p);

#define MMI_PUBSUB "x.pubSub"

#endif
