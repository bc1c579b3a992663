/* Integration: publisher confirms of tasks and events. The broker's ack
 * gives MM_OK, its nack MM_EBROKER (a queue full with reject-publish, made by
 * a raw peer), a task to a route nobody declared MM_ENOROUTE; mm_flush waits
 * for every verdict; the send buffer's bound gives MM_EFULL; a task is
 * persistent unless MM_SEND_TRANSIENT (read back by the raw peer). */
#include <check.h>
#include <event2/event.h>
#include <stdio.h>
#include <string.h>

#include "micromsg.h"
#include "mmt.h"
#include "mmt_fx.h"
#include "mmt_peer.h"

#define WAIT_MS 10000
#define MAX_SENDS 1000

struct fx {
    struct event_base *base;
    mm_t *mm;
    char service[64];
    struct mmt_evlog ev;
    struct mmt_peer peer;
    int verdicts[MAX_SENDS]; /* 1 + status, 0: none yet */
    int got;
};

static struct fx F;

static void
setup(void)
{
    memset(&F, 0, sizeof F);
    F.base = mmt_base_new();
    mmt_unique("confirms", F.service, sizeof F.service);
    F.mm = mmt_instance(F.base, F.service, NULL, &F.ev);
    mmt_peer_open(&F.peer);
}

static void
teardown(void)
{
    mm_free(F.mm);
    mmt_peer_close(&F.peer);
    mmt_base_free(F.base);
}

static void
on_sent(mm_t *mm, int status, void *ud)
{
    (void) mm;
    int i = (int) (intptr_t) ud;
    ck_assert_int_eq(F.verdicts[i], 0); /* exactly once */
    F.verdicts[i] = 1 + status;
    F.got++;
}

static int
task(const char *route, int i, unsigned flags)
{
    mm_send_opts_t so = MM_SEND_OPTS_INIT;
    so.on_sent = on_sent;
    so.sent_ud = (void *) (intptr_t) i;
    so.flags = flags;
    return mm_task(F.mm, F.service, route, "\xa1x", 2, &so);
}

/* A raw peer declares q.requests.<service>.<route> holding one message at most,
 * refusing more (x-overflow reject-publish): the broker nacks the rest. */
static void
bounded_queue(const char *route)
{
    char q[256];
    mmt_request_queue(q, sizeof q, F.service, route);
    struct mmt_table args = {0};
    mmt_table_i32(&args, "x-max-length", 1);
    mmt_table_str(&args, "x-overflow", "reject-publish");
    amqp_queue_declare(F.peer.c, 1, amqp_cstring_bytes(q), 0, 0, 0, 1, mmt_table_of(&args));
    mmt_peer_ok(&F.peer, "queue.declare");
}

START_TEST(acked_and_nacked_tasks_get_their_verdicts)
{
    bounded_queue("full");
    mmt_connect(F.mm);
    for (int i = 0; i < 3; i++)
        ck_assert_int_eq(task("full", i, 0), MM_OK);
    ck_assert_uint_eq(mm_unconfirmed(F.mm), 3);
    ck_assert_int_eq(mm_flush(F.mm, mmt_scale(WAIT_MS)), MM_OK);
    ck_assert_int_eq(F.got, 3);
    ck_assert_int_eq(F.verdicts[0], 1 + MM_OK);
    ck_assert_int_eq(F.verdicts[1], 1 + MM_EBROKER);
    ck_assert_int_eq(F.verdicts[2], 1 + MM_EBROKER);
    ck_assert_uint_eq(mm_unconfirmed(F.mm), 0);
}
END_TEST

START_TEST(task_to_an_undeclared_route_is_ENOROUTE)
{
    mmt_connect(F.mm);
    ck_assert_int_eq(task("nobody", 0, 0), MM_OK);
    ck_assert_int_eq(mm_flush(F.mm, mmt_scale(WAIT_MS)), MM_OK);
    ck_assert_int_eq(F.verdicts[0], 1 + MM_ENOROUTE);
    MMT_WAIT(F.base, F.ev.seen[MM_EV_UNROUTABLE], mmt_scale(WAIT_MS));
}
END_TEST

static void
on_task(mm_msg_t *msg, void *ud)
{
    int *n = ud;
    (*n)++;
    ck_assert_int_eq(mm_msg_ack(msg), MM_OK);
}

START_TEST(flush_waits_for_every_confirm)
{
    int handled = 0;
    mmt_handle(F.mm, "work", on_task, &handled, 0);
    mmt_connect(F.mm);
    for (int i = 0; i < MAX_SENDS; i++)
        ck_assert_int_eq(task("work", i, i % 2 ? MM_SEND_TRANSIENT : 0), MM_OK);
    ck_assert_int_eq(mm_flush(F.mm, mmt_scale(WAIT_MS)), MM_OK);
    ck_assert_int_eq(F.got, MAX_SENDS);
    for (int i = 0; i < MAX_SENDS; i++)
        ck_assert_int_eq(F.verdicts[i], 1 + MM_OK);
}
END_TEST

START_TEST(confirmed_event_gets_its_verdict)
{
    mmt_connect(F.mm);
    mm_send_opts_t so = MM_SEND_OPTS_INIT;
    so.flags = MM_SEND_CONFIRM;
    ck_assert_int_eq(mm_emit(F.mm, NULL, "ev", NULL, 0, &so), MM_OK);
    ck_assert_uint_eq(mm_unconfirmed(F.mm), 1);
    so.on_sent = on_sent;
    ck_assert_int_eq(mm_emit(F.mm, NULL, "ev", NULL, 0, &so), MM_OK);
    ck_assert_int_eq(mm_flush(F.mm, mmt_scale(WAIT_MS)), MM_OK);
    ck_assert_int_eq(F.verdicts[0], 1 + MM_OK);
    ck_assert_uint_eq(mm_unconfirmed(F.mm), 0);
}
END_TEST

START_TEST(send_buffer_bound_gives_EFULL)
{
    mm_free(F.mm);
    mm_opts_t o = MM_OPTS_INIT;
    o.send_buffer = 4096;
    F.mm = mmt_instance(F.base, F.service, &o, &F.ev);
    mmt_connect(F.mm);
    /* The loop does not run between the calls: no confirm can free the buffer. */
    int i = 0, rc = MM_OK;
    while (rc == MM_OK && i < 100)
        rc = task("nobody", i++, 0);
    ck_assert_int_eq(rc, MM_EFULL);
    ck_assert_int_gt(i, 2);
    ck_assert_ptr_nonnull(strstr(mm_last_error(F.mm), "send buffer full"));
    ck_assert_int_eq(mm_flush(F.mm, mmt_scale(WAIT_MS)), MM_OK);
    ck_assert_int_eq(F.got, i - 1);                /* the refused one never gets a verdict */
    ck_assert_int_eq(task("nobody", i, 0), MM_OK); /* room again */
}
END_TEST

/* The raw peer reads the tasks back: delivery mode 2 unless MM_SEND_TRANSIENT. */
START_TEST(tasks_are_persistent_unless_transient)
{
    mmt_peer_serve(&F.peer, F.service, "disk");
    mmt_connect(F.mm);
    ck_assert_int_eq(task("disk", 0, 0), MM_OK);
    ck_assert_int_eq(task("disk", 1, MM_SEND_TRANSIENT), MM_OK);
    ck_assert_int_eq(mm_flush(F.mm, mmt_scale(WAIT_MS)), MM_OK);
    for (int i = 0; i < 2; i++) {
        amqp_envelope_t env;
        ck_assert(mmt_peer_read(&F.peer, mmt_scale(WAIT_MS), &env));
        const amqp_basic_properties_t *p = &env.message.properties;
        bool persistent = (p->_flags & AMQP_BASIC_DELIVERY_MODE_FLAG) &&
                          p->delivery_mode == AMQP_DELIVERY_PERSISTENT;
        ck_assert_int_eq(persistent, i == 0);
        amqp_destroy_envelope(&env);
    }
}
END_TEST

int
main(void)
{
    Suite *s = suite_create("confirms");
    TCase *tc = mmt_tcase(s, "confirms", setup, teardown, 60);
    tcase_add_test(tc, acked_and_nacked_tasks_get_their_verdicts);
    tcase_add_test(tc, task_to_an_undeclared_route_is_ENOROUTE);
    tcase_add_test(tc, flush_waits_for_every_confirm);
    tcase_add_test(tc, confirmed_event_gets_its_verdict);
    tcase_add_test(tc, send_buffer_bound_gives_EFULL);
    tcase_add_test(tc, tasks_are_persistent_unless_transient);
    return mmt_run(s);
}
