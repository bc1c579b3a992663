/*
 * A queue of sends in order (lib/outbox.c keeps three: waiting, written and
 * waiting for the broker's confirm, verdict ready), and what a publisher
 * confirm removes from the written one. Pure list logic, unit-tested: acks
 * and nacks may come out of tag order, and `multiple` covers every send
 * still outstanding up to the tag (RABBITMQ-C.md 5).
 */
#ifndef MM_SENDQ_H
#define MM_SENDQ_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

/* The first member of a queued send. */
typedef struct mmi_sendq_node {
    struct mmi_sendq_node *next;
    uint64_t seq; /* delivery tag once written on the confirm channel; 0 before */
} mmi_sendq_node_t;

typedef struct mmi_sendq {
    mmi_sendq_node_t *head, *tail;
} mmi_sendq_t;

void mmi_sendq_push(mmi_sendq_t *q, mmi_sendq_node_t *n);
mmi_sendq_node_t *mmi_sendq_pop(mmi_sendq_t *q);

/* Move all of `from` before the head of `to` (written sends go back before the waiting ones). */
void mmi_sendq_prepend(mmi_sendq_t *to, mmi_sendq_t *from);

/*
 * A confirm for `tag` on a queue in tag order: remove the send with that tag,
 * or with `multiple` every send with a tag up to it, passing each to
 * `taken` (in order). Tags not in the queue (already settled, or timed out)
 * are ignored. Returns the number removed.
 */
size_t mmi_sendq_confirm(mmi_sendq_t *q, uint64_t tag, bool multiple,
                         void (*taken)(mmi_sendq_node_t *n, void *ud), void *ud);

#endif
