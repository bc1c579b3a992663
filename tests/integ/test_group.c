/* Integration: group subscriptions (mm_listen with opts.group). Three
 * replicas in one group and a second group: every event handled exactly
 * once per group; events emitted while the whole group is down are handled
 * when it starts; several routes in one group each get their own events
 * whichever replica's consumer took them; a listener that keeps giving an
 * event back sees it dead-lettered after max_redeliveries with its route
 * intact; stopping a route keeps the group's queue, mm_group_delete removes
 * it. "Exactly once": all N events and a sentinel emitted last (one queue, FIFO
 * per publisher), never by waiting. */
#include <check.h>
#include <event2/event.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "micromsg.h"
#include "mmt.h"
#include "mmt_fx.h"

#define N_EVENTS 200
#define MAX_MM 6

/* What one group saw: how often each event number arrived, per instance. */
struct tally {
    int seen[N_EVENTS];
    int per_instance[MAX_MM];
    int total;
    bool any; /* total > 0 */
    bool sentinel;
    bool complete; /* the sentinel and N_EVENTS events: with several consumers the
                      sentinel may overtake an event still held by another one */
    char route[64];
};

struct listener {
    struct tally *t;
    int index;
    int nack_left; /* give each event back this many times first */
    int deliveries;
};

struct fx {
    struct event_base *base;
    mm_t *mm[MAX_MM];
    struct mmt_evlog ev[MAX_MM];
    int n;
    char service[64];
    struct tally g1, g2;
    struct listener l[MAX_MM * 2];
};

static struct fx F;

static void
setup(void)
{
    memset(&F, 0, sizeof F);
    F.base = mmt_base_new();
    mmt_unique("group", F.service, sizeof F.service);
}

static void
teardown(void)
{
    if (F.n > 0 && F.mm[0] != NULL) {
        mm_group_delete(F.mm[0], "g1");
        mm_group_delete(F.mm[0], "g2");
    }
    for (int i = 0; i < F.n; i++)
        mm_free(F.mm[i]);
    mmt_base_free(F.base);
}

static mm_t *
connected(const mm_opts_t *opts)
{
    ck_assert_int_lt(F.n, MAX_MM);
    mm_t *mm = mmt_instance(F.base, F.service, opts, &F.ev[F.n]);
    F.mm[F.n++] = mm;
    mmt_connect(mm);
    return mm;
}

static int
event_number(const mm_msg_t *msg)
{
    const msgpack_object *b = mm_msg_body(msg);
    return b->type == MSGPACK_OBJECT_POSITIVE_INTEGER ? (int) b->via.u64 : -1;
}

static void
on_event(mm_msg_t *msg, void *ud)
{
    struct listener *l = ud;
    l->deliveries++;
    snprintf(l->t->route, sizeof l->t->route, "%s", mm_msg_route(msg));
    int k = event_number(msg);
    if (k == N_EVENTS) {
        l->t->sentinel = true;
        l->t->complete = l->t->total >= N_EVENTS;
        return;
    }
    ck_assert_msg(k >= 0 && k < N_EVENTS, "event body %d", k);
    if (l->nack_left > 0) {
        l->nack_left--;
        ck_assert_int_eq(mm_msg_nack(msg, 1), MM_OK);
        return;
    }
    l->t->seen[k]++;
    l->t->per_instance[l->index]++;
    l->t->total++;
    l->t->any = true;
    l->t->complete = l->t->sentinel && l->t->total >= N_EVENTS;
}

static void
listen_in(mm_t *mm, const char *group, const char *route, struct tally *t, int index)
{
    struct listener *l = &F.l[index + (t == &F.g2 ? MAX_MM : 0)];
    *l = (struct listener){.t = t, .index = index};
    mm_route_opts_t o = MM_ROUTE_OPTS_INIT;
    o.group = group;
    ck_assert_msg(mm_listen(mm, NULL, route, on_event, l, &o, NULL) == MM_OK, "listen: %s",
                  mm_last_error(mm));
}

static void
emit_numbers(mm_t *mm, const char *route, int from, int to)
{
    for (int k = from; k <= to; k++) {
        uint8_t b[3] = {0xcd, (uint8_t) (k >> 8), (uint8_t) k}; /* uint16 */
        mm_send_opts_t o = MM_SEND_OPTS_INIT;
        o.flags = MM_SEND_CONFIRM;
        ck_assert_int_eq(mm_emit(mm, NULL, route, b, sizeof b, &o), MM_OK);
    }
    ck_assert_int_eq(mm_flush(mm, mmt_scale(10000)), MM_OK);
}

static void
assert_once_each(const struct tally *t, const char *name)
{
    for (int k = 0; k < N_EVENTS; k++)
        ck_assert_msg(t->seen[k] == 1, "%s: event %d handled %d times", name, k, t->seen[k]);
    ck_assert_int_eq(t->total, N_EVENTS);
}

START_TEST(each_event_once_per_group)
{
    for (int i = 0; i < 3; i++)
        listen_in(connected(NULL), "g1", "order.*", &F.g1, i);
    listen_in(connected(NULL), "g2", "order.#", &F.g2, 3);
    mm_t *emitter = connected(NULL);
    emit_numbers(emitter, "order.created", 0, N_EVENTS);
    MMT_WAIT(F.base, F.g1.complete, mmt_scale(10000));
    MMT_WAIT(F.base, F.g2.complete, mmt_scale(10000));
    assert_once_each(&F.g1, "g1");
    assert_once_each(&F.g2, "g2");
    char key[128];
    snprintf(key, sizeof key, "%s.order.created", F.service); /* an event's route: its key */
    ck_assert_str_eq(F.g1.route, key);
    int busy = 0;
    for (int i = 0; i < 3; i++)
        busy += F.g1.per_instance[i] > 0;
    ck_assert_msg(F.g1.per_instance[3] == 0, "an instance outside g1 handled g1's events");
    ck_assert_int_ge(busy, 1);
}
END_TEST

START_TEST(events_wait_while_the_group_is_down)
{
    mm_t *first = connected(NULL);
    mm_route_t *r = NULL;
    mm_route_opts_t o = MM_ROUTE_OPTS_INIT;
    o.group = "g1";
    F.l[0] = (struct listener){.t = &F.g1};
    ck_assert_int_eq(mm_listen(first, NULL, "order.*", on_event, &F.l[0], &o, &r), MM_OK);
    ck_assert_int_eq(mm_route_stop(r), MM_OK); /* the group's queue and binding stay */
    mm_t *emitter = connected(NULL);
    emit_numbers(emitter, "order.created", 0, N_EVENTS); /* nobody of g1 is listening */
    ck_assert_int_eq(mm_group_delete(emitter, "nope"), MM_ENOENT);
    listen_in(connected(NULL), "g1", "order.*", &F.g1, 2);
    MMT_WAIT(F.base, F.g1.complete, mmt_scale(10000));
    assert_once_each(&F.g1, "g1 after starting");
    ck_assert_int_eq(mm_group_delete(emitter, "g1"), MM_OK);
    ck_assert_int_eq(mm_group_delete(emitter, "g1"), MM_ENOENT);
}
END_TEST

/* Two routes in one group on two instances: each event reaches the handler of
 * its own route, whichever instance's consumer the broker picked. */
static int a_count, b_count, wrong;
static bool a_done, b_done;

static void
on_a(mm_msg_t *msg, void *ud)
{
    (void) ud;
    if (strncmp(mm_msg_route(msg), F.service, strlen(F.service)) != 0 ||
        strstr(mm_msg_route(msg), ".a.") == NULL)
        wrong++;
    a_done = ++a_count == 60;
}

static void
on_b(mm_msg_t *msg, void *ud)
{
    (void) ud;
    if (strstr(mm_msg_route(msg), ".b") == NULL)
        wrong++;
    b_done = ++b_count == 30;
}

START_TEST(routes_of_a_group_get_their_own_events)
{
    a_count = b_count = wrong = 0;
    a_done = b_done = false;
    mm_route_opts_t o = MM_ROUTE_OPTS_INIT;
    o.group = "g1";
    for (int i = 0; i < 2; i++) {
        mm_t *mm = connected(NULL);
        ck_assert_int_eq(mm_listen(mm, NULL, "a.*", on_a, NULL, &o, NULL), MM_OK);
        ck_assert_int_eq(mm_listen(mm, NULL, "b", on_b, NULL, &o, NULL), MM_OK);
    }
    ck_assert_int_eq(mm_listen(F.mm[0], NULL, "a.*", on_a, NULL, &o, NULL), MM_ESTATE);
    mm_t *emitter = connected(NULL);
    /* a, a, b: a period that the broker's round robin over 4 consumers cannot follow */
    for (int k = 0; k < 90; k++)
        ck_assert_int_eq(mm_emit(emitter, NULL, k % 3 == 2 ? "b" : "a.x", "\xa0", 1, NULL), MM_OK);
    MMT_WAIT(F.base, a_done, mmt_scale(10000));
    MMT_WAIT(F.base, b_done, mmt_scale(10000));
    ck_assert_int_eq(wrong, 0);
}
END_TEST

/* Given back every time: counted copies keep the route, and the event ends
 * in the dead-letter queue, not lost. */
START_TEST(a_poison_group_event_is_dead_lettered_with_its_route)
{
    mm_opts_t opts = MM_OPTS_INIT;
    opts.max_redeliveries = 3;
    mm_t *mm = connected(&opts);
    listen_in(mm, "g1", "order.*", &F.g1, 0);
    F.l[0].nack_left = 1000;
    mm_t *emitter = connected(NULL);
    uint8_t b[] = {0x07};
    ck_assert_int_eq(mm_emit(emitter, NULL, "order.paid", b, 1, NULL), MM_OK);
    MMT_WAIT(F.base, F.ev[0].seen[MM_EV_DEADLETTER], mmt_scale(10000));
    ck_assert_int_eq(F.l[0].deliveries, 3);
    char key[128];
    snprintf(key, sizeof key, "%s.order.paid", F.service);
    ck_assert_str_eq(F.g1.route, key); /* the copies kept their routing key */
    ck_assert_str_eq(F.ev[0].route[MM_EV_DEADLETTER], key);
    mm_stat_t st;
    ck_assert_int_eq(mm_deadletter_stat(mm, NULL, &st), MM_OK);
    ck_assert_int_eq((int) st.messages, 1);
    F.l[0].nack_left = 0;
    uint32_t moved = 0;
    ck_assert_int_eq(mm_deadletter_redrive(mm, 10, &moved), MM_OK);
    ck_assert_int_eq((int) moved, 1);
    MMT_WAIT(F.base, F.g1.any, mmt_scale(10000));
    ck_assert_int_eq(F.g1.seen[7], 1); /* back to its listener, by its routing key */
}
END_TEST

START_TEST(bad_group_name_is_refused)
{
    mm_t *mm = connected(NULL);
    mm_route_opts_t o = MM_ROUTE_OPTS_INIT;
    o.group = "no spaces";
    ck_assert_int_eq(mm_listen(mm, NULL, "x", on_a, NULL, &o, NULL), MM_ENAME);
    o.group = "";
    ck_assert_int_eq(mm_listen(mm, NULL, "x", on_a, NULL, &o, NULL), MM_ENAME);
    ck_assert_int_eq(mm_group_delete(mm, "a b"), MM_ENAME);
}
END_TEST

int
main(void)
{
    Suite *s = suite_create("group");
    TCase *tc = mmt_tcase(s, "group", setup, teardown, 60);
    tcase_add_test(tc, each_event_once_per_group);
    tcase_add_test(tc, events_wait_while_the_group_is_down);
    tcase_add_test(tc, routes_of_a_group_get_their_own_events);
    tcase_add_test(tc, a_poison_group_event_is_dead_lettered_with_its_route);
    tcase_add_test(tc, bad_group_name_is_refused);
    return mmt_run(s);
}
