/* Integration: reconnecting after the broker closed our connection
 * (rabbitmqctl close_connection): the events, the routes consuming again, a
 * pending request failed at once, and confirmed tasks sent around the loss
 * all confirmed and handled (at least once). */
#include <arpa/inet.h>
#include <check.h>
#include <event2/event.h>
#include <netinet/in.h>
#include <stdio.h>
#include <string.h>
#include <sys/socket.h>

#include "internal.h"
#include "micromsg.h"
#include "route.h"
#include "mmt.h"
#include "mmt_fx.h"

#define WAIT_MS 10000
#define N_TASKS 200

struct fx {
    struct event_base *base;
    mm_t *a, *b; /* a: requester and task sender; b: the service */
    char service[64];
    struct mmt_evlog aev, bev;
    int handled, confirmed, failed;
    bool all_handled, all_confirmed;
    bool seen[N_TASKS];
    int dups;
};

static struct fx F;

static void
setup(void)
{
    memset(&F, 0, sizeof F);
    F.base = mmt_base_new();
    mmt_unique("reconnect", F.service, sizeof F.service);
    F.a = mmt_instance(F.base, "t-reconnect-client", NULL, &F.aev);
    F.b = mmt_instance(F.base, F.service, NULL, &F.bev);
}

static void
teardown(void)
{
    mm_free(F.a);
    mm_free(F.b);
    mmt_base_free(F.base);
}

static void
on_echo(mm_msg_t *msg, void *ud)
{
    (void) ud;
    size_t n = 0;
    const void *b = mm_msg_body_raw(msg, &n);
    ck_assert_int_eq(mm_msg_reply(msg, b, n), MM_OK);
}

/* A request that never gets an answer: the handler keeps it. */
static mm_msg_t *kept;
static void
on_keep(mm_msg_t *msg, void *ud)
{
    (void) ud;
    kept = mm_msg_ref(msg);
}

START_TEST(forced_close_reconnects_and_routes_answer_again)
{
    mmt_handle(F.b, "echo", on_echo, NULL, 0);
    mmt_handle(F.b, "keep", on_keep, NULL, 0);
    mmt_connect(F.b);
    mmt_connect(F.a);
    struct mmt_probe pending = {0}, after = {0};
    mm_request_opts_t ro = MM_REQUEST_OPTS_INIT;
    ro.timeout_ms = 60000;
    ck_assert_int_eq(mm_request(F.a, F.service, "keep", NULL, 0, &ro, mmt_on_reply, &pending, NULL),
                     MM_OK);
    bool got = false;
    while (!got && mmt_wait(F.base, &got, 20))
        ;
    uint64_t t0 = mmt_now_ms();
    ck_assert_int_eq(mmt_kill_connection(mmt_local_port(F.a)), 0);
    MMT_WAIT(F.base, pending.done, mmt_scale(WAIT_MS));
    ck_assert_int_eq(pending.status, MM_EDISCONNECTED); /* at once, not at its 60 s timeout */
    ck_assert_uint_lt(mmt_now_ms() - t0, 5000);
    MMT_WAIT(F.base, F.aev.seen[MM_EV_RECONNECTED], mmt_scale(WAIT_MS));
    ck_assert_int_eq(F.aev.count[MM_EV_DISCONNECTED], 1);
    ck_assert(mm_is_connected(F.a));
    ck_assert_int_eq(mm_request(F.a, F.service, "echo", NULL, 0, NULL, mmt_on_reply, &after, NULL),
                     MM_OK);
    MMT_WAIT(F.base, after.done, mmt_scale(WAIT_MS));
    ck_assert_int_eq(after.status, MM_OK);
    mm_msg_unref(kept);
    kept = NULL;
    mmt_probe_free(&pending);
    mmt_probe_free(&after);
}
END_TEST

START_TEST(the_handling_side_reconnects_and_consumes_again)
{
    mmt_handle(F.b, "echo", on_echo, NULL, 0);
    mmt_connect(F.b);
    mmt_connect(F.a);
    ck_assert_int_eq(mmt_kill_connection(mmt_local_port(F.b)), 0);
    MMT_WAIT(F.base, F.bev.seen[MM_EV_RECONNECTED], mmt_scale(WAIT_MS));
    struct mmt_probe p = {0};
    ck_assert_int_eq(mm_request(F.a, F.service, "echo", NULL, 0, NULL, mmt_on_reply, &p, NULL),
                     MM_OK);
    MMT_WAIT(F.base, p.done, mmt_scale(WAIT_MS));
    ck_assert_int_eq(p.status, MM_OK);
    mmt_probe_free(&p);
}
END_TEST

static void
on_task(mm_msg_t *msg, void *ud)
{
    (void) ud;
    const msgpack_object *b = mm_msg_body(msg);
    ck_assert_int_eq(b->type, MSGPACK_OBJECT_POSITIVE_INTEGER);
    ck_assert_uint_lt(b->via.u64, N_TASKS);
    if (F.seen[b->via.u64])
        F.dups++;
    else
        F.handled++;
    F.seen[b->via.u64] = true;
    F.all_handled = F.handled == N_TASKS;
    ck_assert_int_eq(mm_msg_ack(msg), MM_OK);
}

static void
on_sent(mm_t *mm, int status, void *ud)
{
    (void) mm;
    (void) ud;
    if (status == MM_OK)
        F.confirmed++;
    else
        F.failed++;
    F.all_confirmed = F.confirmed + F.failed == N_TASKS;
}

START_TEST(tasks_sent_around_a_forced_close_are_all_confirmed_and_handled)
{
    mmt_handle(F.b, "work", on_task, NULL, 0);
    mmt_connect(F.b);
    mmt_connect(F.a);
    mm_send_opts_t so = MM_SEND_OPTS_INIT;
    so.on_sent = on_sent;
    for (int i = 0; i < N_TASKS; i++) {
        if (i == N_TASKS / 2)
            ck_assert_int_eq(mmt_kill_connection(mmt_local_port(F.a)), 0);
        char body[8];
        size_t n = 0;
        body[n++] = (char) 0xcd; /* uint16 */
        body[n++] = (char) (i >> 8);
        body[n++] = (char) (i & 0xff);
        ck_assert_int_eq(mm_task(F.a, F.service, "work", body, n, &so), MM_OK);
    }
    MMT_WAIT(F.base, F.all_confirmed, mmt_scale(WAIT_MS));
    ck_assert_int_eq(F.failed, 0);
    mmt_wait(F.base, &F.all_handled, mmt_scale(WAIT_MS));
    ck_assert_msg(F.all_handled, "handled %d of %d (confirmed %d, dups %d)", F.handled, N_TASKS,
                  F.confirmed, F.dups);
    ck_assert_uint_eq(mm_unconfirmed(F.a), 0);
    printf("forced close during %d confirmed tasks: lost 0, duplicates %d\n", N_TASKS, F.dups);
}
END_TEST

/* While the instance reconnects (its disconnected event): a request waits for
 * the connection with MM_OPT_OFFLINE_WAIT, fails fast without; a task and an
 * event are buffered. All arrive after the reconnect. */
struct offline {
    int req_rc, fast_rc, task_rc, emit_rc;
    bool tried;
    struct mmt_probe probe;
};

static void
on_offline_event(mm_t *mm, const mm_event_t *ev, void *ud)
{
    struct offline *o = ud;
    mmt_on_event(mm, ev, &F.aev);
    if (ev->type != MM_EV_DISCONNECTED || o->tried)
        return;
    o->tried = true;
    ck_assert(!mm_is_connected(mm));
    o->req_rc = mm_request(mm, F.service, "echo", "\xa2hi", 3, NULL, mmt_on_reply, &o->probe, NULL);
    o->task_rc = mm_task(mm, F.service, "work", "\x07", 1, NULL);
    o->emit_rc = mm_emit(mm, F.service, "news", NULL, 0, NULL);
}

static void
on_news(mm_msg_t *msg, void *ud)
{
    (void) msg;
    *(bool *) ud = true;
}

START_TEST(sends_while_reconnecting_wait_for_the_connection)
{
    mm_free(F.a);
    struct offline o = {0};
    mm_opts_t opts = MM_OPTS_INIT;
    opts.flags = MM_OPT_OFFLINE_WAIT;
    opts.on_event = on_offline_event;
    opts.event_ud = &o;
    opts.base = F.base;
    F.a = mm_new("t-reconnect-client", &opts);
    ck_assert_ptr_nonnull(F.a);
    bool news = false;
    mmt_handle(F.b, "echo", on_echo, NULL, 0);
    mmt_handle(F.b, "work", on_task, NULL, 0);
    ck_assert_int_eq(mm_listen(F.b, NULL, "news", on_news, &news, NULL, NULL), MM_OK);
    mmt_connect(F.b);
    mmt_connect(F.a);
    ck_assert_int_eq(mmt_kill_connection(mmt_local_port(F.a)), 0);
    MMT_WAIT(F.base, o.tried, mmt_scale(WAIT_MS));
    ck_assert_int_eq(o.req_rc, MM_OK);
    ck_assert_int_eq(o.task_rc, MM_OK);
    ck_assert_int_eq(o.emit_rc, MM_OK);
    MMT_WAIT(F.base, o.probe.done, mmt_scale(WAIT_MS));
    ck_assert_int_eq(o.probe.status, MM_OK);
    ck_assert_str_eq(o.probe.str, "hi");
    MMT_WAIT(F.base, news, mmt_scale(WAIT_MS));
    while (F.handled < 1 && mmt_wait(F.base, &F.all_handled, 20))
        ;
    ck_assert_int_eq(F.handled, 1);
    mmt_probe_free(&o.probe);
}
END_TEST

static void
on_fast_event(mm_t *mm, const mm_event_t *ev, void *ud)
{
    struct offline *o = ud;
    if (ev->type != MM_EV_DISCONNECTED || o->tried)
        return;
    o->tried = true;
    o->fast_rc = mm_request(mm, F.service, "echo", NULL, 0, NULL, mmt_on_reply, &o->probe, NULL);
}

START_TEST(requests_while_reconnecting_fail_fast_by_default)
{
    mm_free(F.a);
    struct offline o = {0};
    mm_opts_t opts = MM_OPTS_INIT;
    opts.on_event = on_fast_event;
    opts.event_ud = &o;
    opts.base = F.base;
    F.a = mm_new("t-reconnect-client", &opts);
    mmt_handle(F.b, "echo", on_echo, NULL, 0);
    mmt_connect(F.b);
    mmt_connect(F.a);
    ck_assert_int_eq(mmt_kill_connection(mmt_local_port(F.a)), 0);
    MMT_WAIT(F.base, o.tried, mmt_scale(WAIT_MS));
    ck_assert_int_eq(o.fast_rc, MM_ENOTCONN);
    ck_assert(!o.probe.done);
}
END_TEST

/* The broker closes a route's channel (here: an ack of an unknown delivery tag,
 * PRECONDITION_FAILED, as the delivery-acknowledgement timeout would): an error
 * event, and the route consumes again on a new channel. */
START_TEST(route_channel_closed_by_the_broker_is_restored)
{
    mm_route_t *r = mmt_handle(F.b, "echo", on_echo, NULL, 0);
    mmt_connect(F.b);
    mmt_connect(F.a);
    uint16_t old = r->ch;
    ck_assert_int_eq(mmi_basic_ack(F.b, r->ch, 424242, false), MM_OK);
    MMT_WAIT(F.base, F.bev.seen[MM_EV_CHANNEL_ERROR], mmt_scale(WAIT_MS));
    ck_assert_ptr_nonnull(strstr(F.bev.text[MM_EV_CHANNEL_ERROR], "406"));
    MMT_WAIT(F.base, F.bev.seen[MM_EV_ERROR], mmt_scale(WAIT_MS));
    ck_assert_ptr_nonnull(strstr(F.bev.text[MM_EV_ERROR], "declared again"));
    ck_assert_uint_ne(r->ch, 0);
    ck_assert_uint_ne(r->ch, old);
    struct mmt_probe p = {0};
    ck_assert_int_eq(mm_request(F.a, F.service, "echo", NULL, 0, NULL, mmt_on_reply, &p, NULL),
                     MM_OK);
    MMT_WAIT(F.base, p.done, mmt_scale(WAIT_MS));
    ck_assert_int_eq(p.status, MM_OK);
    mm_stat_t st;
    ck_assert_int_eq(mm_route_stat(r, &st), MM_OK);
    ck_assert_uint_eq(st.consumers, 1);
    mmt_probe_free(&p);
}
END_TEST

/* The socket dies under the instance (shutdown), so that the next write is the
 * one that finds the connection dead: an event is buffered and delivered after
 * the reconnect; a request fails with MM_ENOTCONN and its callback never runs. */
START_TEST(a_write_that_finds_the_connection_dead_buffers_the_event)
{
    bool news = false;
    mmt_handle(F.b, "echo", on_echo, NULL, 0);
    ck_assert_int_eq(mm_listen(F.b, NULL, "news", on_news, &news, NULL, NULL), MM_OK);
    mmt_connect(F.b);
    mmt_connect(F.a);
    struct mmt_probe p = {0};
    /* a request first: the plain publishing channel exists, the write is the first failure */
    ck_assert_int_eq(mm_request(F.a, F.service, "echo", NULL, 0, NULL, mmt_on_reply, &p, NULL),
                     MM_OK);
    MMT_WAIT(F.base, p.done, mmt_scale(WAIT_MS));
    mmt_probe_free(&p);
    memset(&p, 0, sizeof p);
    ck_assert_int_eq(shutdown(amqp_get_sockfd(F.a->conn), SHUT_RDWR), 0);
    ck_assert_int_eq(mm_emit(F.a, F.service, "news", NULL, 0, NULL), MM_OK);
    ck_assert(!mm_is_connected(F.a));
    ck_assert_uint_eq(mm_unconfirmed(F.a), 1);
    ck_assert_int_eq(mm_request(F.a, F.service, "echo", NULL, 0, NULL, mmt_on_reply, &p, NULL),
                     MM_ENOTCONN);
    MMT_WAIT(F.base, news, mmt_scale(WAIT_MS));
    ck_assert(F.aev.seen[MM_EV_RECONNECTED]);
    ck_assert(!p.done);
}
END_TEST

/* ---- heartbeats and busy handlers (heartbeat 1 s) ---- */

static void
busy_ms(int ms)
{
    uint64_t until = mmt_now_ms() + (uint64_t) ms;
    while (mmt_now_ms() < until)
        ;
}

struct busy {
    int calls, work_ms;
    bool done;
};

static void
on_busy(mm_msg_t *msg, void *ud)
{
    struct busy *b = ud;
    busy_ms(b->work_ms);
    b->calls++;
    b->done = b->calls == 12;
    ck_assert_int_eq(mm_msg_ack(msg), MM_OK);
}

static mm_t *
heartbeat_1s(const char *service, struct mmt_evlog *log)
{
    char uri[512];
    snprintf(uri, sizeof uri, "%s?heartbeat=1", mmt_uri());
    mm_opts_t o = MM_OPTS_INIT;
    o.on_event = mmt_on_event;
    o.event_ud = log;
    o.base = F.base;
    mm_t *mm = mm_new(service, &o);
    ck_assert_int_eq(mm_connect(mm, uri), MM_OK);
    ck_assert_int_eq(mm_heartbeat(mm), 1);
    return mm;
}

/* Handlers that each take 300 ms, back to back for 3.6 s, three heartbeat
 * timeouts' worth: the loop gets back in between, the heartbeats go out, the
 * connection lives. */
START_TEST(busy_handlers_that_return_keep_the_connection)
{
    mm_free(F.b);
    F.b = heartbeat_1s(F.service, &F.bev);
    struct busy b = {.work_ms = 300};
    mm_route_opts_t ro = MM_ROUTE_OPTS_INIT;
    ro.prefetch = 1;
    ck_assert_int_eq(mm_handle(F.b, "slow", on_busy, &b, &ro, NULL), MM_OK);
    mmt_connect(F.a);
    for (int i = 0; i < 12; i++)
        ck_assert_int_eq(mm_task(F.a, F.service, "slow", NULL, 0, NULL), MM_OK);
    MMT_WAIT(F.base, b.done, mmt_scale(30000));
    ck_assert_int_eq(F.bev.count[MM_EV_DISCONNECTED], 0);
    ck_assert(mm_is_connected(F.b));
}
END_TEST

/* One handler that holds the loop for 4 s (past twice the 1 s heartbeat): the
 * broker closes the connection; the service sees MM_EV_DISCONNECTED, its late
 * ack is lost (MM_ENOTCONN or MM_ECHANNEL when the loss is already known,
 * MM_OK when the write only reached the socket of a connection the broker had
 * closed), it reconnects, and the task comes back redelivered. */
static int stuck_calls, stuck_settle;
static bool stuck_redelivered;

static void
on_stuck(mm_msg_t *msg, void *ud)
{
    (void) ud;
    if (++stuck_calls == 1) {
        busy_ms(4000);
        stuck_settle = mm_msg_ack(msg);
        return;
    }
    stuck_redelivered = mm_msg_redelivered(msg) != 0;
    ck_assert_int_eq(mm_msg_ack(msg), MM_OK);
}

START_TEST(a_handler_that_blocks_past_the_heartbeat_loses_the_connection)
{
    mm_free(F.b);
    F.b = heartbeat_1s(F.service, &F.bev);
    stuck_calls = stuck_settle = 0;
    stuck_redelivered = false;
    ck_assert_int_eq(mm_handle(F.b, "stuck", on_stuck, NULL, NULL, NULL), MM_OK);
    mmt_connect(F.a);
    ck_assert_int_eq(mm_task(F.a, F.service, "stuck", NULL, 0, NULL), MM_OK);
    MMT_WAIT(F.base, F.bev.seen[MM_EV_RECONNECTED], mmt_scale(30000));
    ck_assert_int_eq(F.bev.count[MM_EV_DISCONNECTED], 1);
    ck_assert_msg(stuck_settle == MM_ENOTCONN || stuck_settle == MM_ECHANNEL ||
                      stuck_settle == MM_OK,
                  "%s", mm_err_name(stuck_settle));
    while (stuck_calls < 2 && mmt_wait(F.base, &stuck_redelivered, 50))
        ;
    MMT_WAIT(F.base, stuck_redelivered, mmt_scale(10000));
    ck_assert_int_eq(stuck_calls, 2);
}
END_TEST

int
main(void)
{
    Suite *s = suite_create("reconnect");
    TCase *tc = mmt_tcase(s, "reconnect", setup, teardown, 60);
    tcase_add_test(tc, forced_close_reconnects_and_routes_answer_again);
    tcase_add_test(tc, the_handling_side_reconnects_and_consumes_again);
    tcase_add_test(tc, tasks_sent_around_a_forced_close_are_all_confirmed_and_handled);
    tcase_add_test(tc, sends_while_reconnecting_wait_for_the_connection);
    tcase_add_test(tc, requests_while_reconnecting_fail_fast_by_default);
    tcase_add_test(tc, route_channel_closed_by_the_broker_is_restored);
    tcase_add_test(tc, a_write_that_finds_the_connection_dead_buffers_the_event);
    tcase_add_test(tc, busy_handlers_that_return_keep_the_connection);
    tcase_add_test(tc, a_handler_that_blocks_past_the_heartbeat_loses_the_connection);
    return mmt_run(s);
}
