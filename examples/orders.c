/*
 * orders: durable events, the two ways.
 *
 *   orders [URI]      (argv[1], else $MM_URI, else $MM_TEST_URI, else amqp://localhost)
 *
 * A "shop" places orders. For each one it emits an event and appends a
 * record to the topic "orders-<pid>" (a RabbitMQ stream).
 *
 * - Group: two replicas of the "mailer" service listen to the event in the
 *   group "confirmations": each order's e-mail is sent once, by one of
 *   them, not once per replica (a plain mm_listen would send it twice).
 * - Topic: an "audit" reader, started only after every order was placed,
 *   reads the topic from its first record: the past is kept, in order,
 *   with the event type and the metadata of each record.
 *
 * Several instances share one event_base here; in real life they are
 * processes. The check: every order mailed exactly once, and the audit
 * reads all of them in order. Exit 0 when that held.
 */
#include <event2/event.h>
#include <stdio.h>
#include <string.h>
#include <unistd.h>

#include <micromsg.h>

#include "example.h"

#define N_ORDERS 20

struct app {
    struct event_base *base;
    char topic[64];
    int mailed[N_ORDERS];
    int mails, audited, audit_wrong;
};

/* An order number as msgpack (a positive fixint: 0..127). */
static unsigned char
order_body(int k)
{
    return (unsigned char) k;
}

static int
order_of(const mm_msg_t *msg)
{
    const msgpack_object *b = mm_msg_body(msg);
    return b->type == MSGPACK_OBJECT_POSITIVE_INTEGER && b->via.u64 < N_ORDERS ? (int) b->via.u64
                                                                               : -1;
}

static void
maybe_done(struct app *a)
{
    if (a->mails >= N_ORDERS && a->audited >= N_ORDERS)
        event_base_loopbreak(a->base);
}

static void
on_order_event(mm_msg_t *msg, void *ud)
{
    struct app *a = ud;
    int k = order_of(msg);
    if (k >= 0)
        a->mailed[k]++;
    a->mails++;
    maybe_done(a);
}

static void
on_audit(mm_msg_t *msg, void *ud)
{
    struct app *a = ud;
    if (order_of(msg) != a->audited || strcmp(mm_msg_type(msg), "order.created") != 0)
        a->audit_wrong++;
    printf("audit: offset %lld, %s, order %d, sent by %s\n", (long long) mm_msg_offset(msg),
           mm_msg_type(msg), order_of(msg), mm_msg_sender(msg));
    a->audited++;
    maybe_done(a);
}

static mm_t *
instance(struct app *a, const char *service, const char *uri)
{
    mm_opts_t o = MM_OPTS_INIT;
    o.base = a->base;
    o.flags = MM_OPT_NO_PEERS;
    mm_t *mm = mm_new(service, &o);
    if (mm == NULL || mm_connect(mm, uri) != MM_OK) {
        fprintf(stderr, "%s: %s\n", service, mm ? mm_last_error(mm) : "out of memory");
        mm_free(mm);
        return NULL;
    }
    return mm;
}

/* Place the orders: an event and a topic record each, confirmed. */
static int
place_orders(struct app *a, mm_t *shop)
{
    if (mm_topic_declare(shop, a->topic, NULL) != MM_OK)
        return -1;
    for (int k = 0; k < N_ORDERS; k++) {
        unsigned char b = order_body(k);
        if (mm_emit(shop, NULL, "order.created", &b, 1, NULL) != MM_OK ||
            mm_topic_publish(shop, a->topic, "order.created", &b, 1, NULL) != MM_OK)
            return -1;
    }
    return mm_flush(shop, 10000) == MM_OK ? 0 : -1;
}

static int
check(const struct app *a)
{
    int once = 1;
    for (int k = 0; k < N_ORDERS; k++)
        once &= a->mailed[k] == 1;
    printf("mailed %d e-mails for %d orders (each once: %s); audit read %d records%s\n", a->mails,
           N_ORDERS, once ? "yes" : "no", a->audited,
           a->audit_wrong ? ", some out of order" : " in order");
    return once && a->mails == N_ORDERS && a->audited == N_ORDERS && !a->audit_wrong ? 0 : 1;
}

static int
run(struct app *a, mm_t *shop, mm_t *m1, mm_t *m2, mm_t *audit)
{
    mm_route_opts_t ro = MM_ROUTE_OPTS_INIT;
    ro.group = "confirmations";
    if (mm_listen(m1, "shop", "order.*", on_order_event, a, &ro, NULL) != MM_OK ||
        mm_listen(m2, "shop", "order.*", on_order_event, a, &ro, NULL) != MM_OK ||
        place_orders(a, shop) != 0) {
        fprintf(stderr, "setting up: %s\n", mm_last_error(shop));
        return 1;
    }
    mm_from_t first = {MM_FROM_FIRST, 0};
    if (mm_topic_read(audit, a->topic, "audit", first, on_audit, a, NULL, NULL) != MM_OK) {
        fprintf(stderr, "audit: %s\n", mm_last_error(audit));
        return 1;
    }
    struct timeval limit = {10, 0};
    event_base_loopexit(a->base, &limit); /* a bound, in case the check fails */
    event_base_dispatch(a->base);
    mm_group_delete(m1, "confirmations");
    mm_topic_delete(shop, a->topic);
    return check(a);
}

int
main(int argc, char **argv)
{
    const char *uri = example_uri(argc, argv);
    struct app a = {.base = event_base_new()};
    snprintf(a.topic, sizeof a.topic, "orders-%d", (int) getpid());
    mm_t *shop = instance(&a, "shop", uri), *m1 = instance(&a, "mailer", uri);
    mm_t *m2 = instance(&a, "mailer", uri), *audit = instance(&a, "auditor", uri);
    int rc = shop && m1 && m2 && audit ? run(&a, shop, m1, m2, audit) : 1;
    mm_free(shop);
    mm_free(m1);
    mm_free(m2);
    mm_free(audit);
    event_base_free(a.base);
    return rc;
}
