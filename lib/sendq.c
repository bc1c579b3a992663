/* Queues of sends and publisher confirms (see sendq.h). */
#include "sendq.h"

void
mmi_sendq_push(mmi_sendq_t *q, mmi_sendq_node_t *n)
{
    n->next = NULL;
    if (q->tail)
        q->tail->next = n;
    else
        q->head = n;
    q->tail = n;
}

mmi_sendq_node_t *
mmi_sendq_pop(mmi_sendq_t *q)
{
    mmi_sendq_node_t *n = q->head;
    if (n != NULL && (q->head = n->next) == NULL)
        q->tail = NULL;
    return n;
}

void
mmi_sendq_prepend(mmi_sendq_t *to, mmi_sendq_t *from)
{
    if (from->head == NULL)
        return;
    from->tail->next = to->head;
    if (to->tail == NULL)
        to->tail = from->tail;
    to->head = from->head;
    from->head = from->tail = NULL;
}

size_t
mmi_sendq_confirm(mmi_sendq_t *q, uint64_t tag, bool multiple,
                  void (*taken)(mmi_sendq_node_t *n, void *ud), void *ud)
{
    size_t count = 0;
    mmi_sendq_node_t **pp = &q->head, *prev = NULL;
    while (*pp != NULL && (*pp)->seq <= tag) {
        mmi_sendq_node_t *n = *pp;
        if (!multiple && n->seq != tag) { /* an older one, still outstanding */
            prev = n;
            pp = &n->next;
            continue;
        }
        *pp = n->next;
        if (q->tail == n)
            q->tail = prev;
        count++;
        taken(n, ud);
        if (!multiple)
            break;
    }
    return count;
}
