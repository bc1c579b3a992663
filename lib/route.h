/*
 * Routes: a handler (requests and tasks of q.requests.<service>.<route>) or
 * a listener (events bound on x.pubSub with <target>.<route>), each with its
 * own channel, prefetch and consumer.
 */
#ifndef MM_ROUTE_H
#define MM_ROUTE_H

#include "controller.h"
#include "internal.h"

typedef enum { MMI_ROUTE_HANDLE, MMI_ROUTE_LISTEN } mmi_route_type;

#define MMI_DEFAULT_PREFETCH 64

struct mm_route {
    mm_t *mm;
    struct mm_route *next;
    mmi_route_type type;
    char *name;   /* the route */
    char *target; /* listen: the target; handle: the service */
    char *queue;
    char *key;   /* listen: the binding key <target>.<route> */
    char *group; /* listen in a group: its name (queue q.group.<service>.<group>), else NULL */
    mm_msg_fn fn;
    void *ud;
    uint16_t prefetch;     /* what the route asked for */
    uint16_t max_parallel; /* fixed: QoS leaves it alone */
    uint16_t level;        /* the prefetch in force when QoS or mm_set_max_parallelism set it;
                              0 with qos_paused: consumer cancelled */
    bool qos_set, qos_paused;
    mmi_qos_bytes_t bytes; /* max_parallel_bytes */
    bool bytes_paused;
    uint64_t delivered; /* deliveries dispatched (QoS saturation) */
    bool no_ack;        /* internal targets are consumed without acks (PROTOCOL.md 5) */
    uint16_t ch;
    char ctag[128];
    bool linked;         /* in mm->routes: a lost channel is restored */
    struct event *retry; /* the next restore attempt, with backoff */
    unsigned retries;    /* failed restore attempts in a row */
    uint32_t dl_gen;     /* ch's generation when q.deadLetter.<service> was declared
                            (lib/deadletter.c): again on a new channel */
};

/* lib/route_qos.c: the byte budget. A delivery of `msg` on `r`: true when taken
 * (counted until settled), false when given back (the route pauses). */
bool mmi_route_bytes_take(mm_t *mm, struct mm_route *r, struct mm_msg *msg);
/* `msg` is settled: its bytes leave the budget; the route resumes below 70 %. */
void mmi_route_bytes_release(mm_t *mm, struct mm_msg *msg);

/* lib/group.c: group subscriptions. */
char *mmi_group_queue(char *out, size_t cap, const char *service, const char *group);
bool mmi_topic_match(const char *pattern, const char *key); /* AMQP topic rules */
int mmi_group_declare(mm_t *mm, struct mm_route *r);        /* exchange, queue, binding */
/* The route of this instance in r's group whose binding matches, r first; NULL: none. */
struct mm_route *mmi_group_route_for(mm_t *mm, struct mm_route *r, const char *routing_key);
/* An event's routing key: the delivery's, or x-mm-routing-key on a copy. */
amqp_bytes_t mmi_group_routing_key(const mmi_content_t *c);

/* lib/dispatch.c: a delivery on a route's channel. */
void mmi_dispatch(mm_t *mm, struct mm_route *r, const mmi_content_t *c);

#endif
