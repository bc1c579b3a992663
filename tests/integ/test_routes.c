/* Integration: routes of a handling service. Several routes on one instance,
 * routes declared before and after connecting (and their request queues
 * declared exactly as PROTOCOL.md section 1 says, proven by a raw peer's
 * re-declare), stopping a route (queue deleted only when empty and unused),
 * queue figures, a second handle of the same route, and a route stopped from
 * inside its own handler. A raw rabbitmq-c peer checks the broker's side. */
#include <check.h>
#include <event2/event.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "micromsg.h"
#include "mmt.h"
#include "mmt_fx.h"
#include "mmt_peer.h"

#define WAIT_MS 5000

/* ---- the raw peer (mmt_peer) ---- */

/*
 * Declare `queue` on a fresh channel: passive, or with the given flags and
 * x-expires (0: no arguments). Returns 0 when the broker agreed, else the
 * reply code it closed the channel with (404 no such queue, 406 flags or
 * arguments differ).
 */
static int
raw_declare(struct mmt_peer *r, const char *queue, bool passive, bool durable, bool auto_delete,
            int32_t expires)
{
    uint16_t ch = mmt_peer_channel(r);
    struct mmt_table args = {0};
    if (expires)
        mmt_table_i32(&args, "x-expires", expires);
    amqp_queue_declare(r->c, ch, amqp_cstring_bytes(queue), passive, durable, 0, auto_delete,
                       mmt_table_of(&args));
    amqp_rpc_reply_t rr = amqp_get_rpc_reply(r->c);
    if (rr.reply_type == AMQP_RESPONSE_NORMAL) {
        amqp_channel_close(r->c, ch, AMQP_REPLY_SUCCESS);
        mmt_peer_ok(r, "channel.close");
        return 0;
    }
    ck_assert_int_eq(rr.reply_type, AMQP_RESPONSE_SERVER_EXCEPTION);
    ck_assert_uint_eq(rr.reply.id, AMQP_CHANNEL_CLOSE_METHOD);
    int code = ((amqp_channel_close_t *) rr.reply.decoded)->reply_code;
    amqp_channel_close_ok_t ok = {0};
    ck_assert_int_eq(amqp_send_method(r->c, ch, AMQP_CHANNEL_CLOSE_OK_METHOD, &ok), AMQP_STATUS_OK);
    return code;
}

static bool
raw_exists(struct mmt_peer *r, const char *queue)
{
    int code = raw_declare(r, queue, true, false, false, 0);
    ck_assert_msg(code == 0 || code == 404, "passive declare of %s: %d", queue, code);
    return code == 0;
}

/* n tasks for `route` of `service`, as the protocol says, in the queue when this returns. */
static void
raw_tasks(struct mmt_peer *r, const char *service, const char *route, int n)
{
    char queue[200];
    mmt_request_queue(queue, sizeof queue, service, route);
    struct mmt_table mms = {0}, h = {0};
    mmt_table_str(&mms, "route", route);
    mmt_table_bool(&mms, "isTask", true);
    mmt_table_i64(&mms, "iat", 1700000000000);
    mmt_table_table(&h, "__mms", &mms);
    struct mmt_props p = {.content_type = "application/msgpack", .headers = &h};
    for (int i = 0; i < n; i++)
        mmt_peer_publish(r, queue, &p, MMT_BYTES("\xa0"));
    mmt_peer_confirmed(r, mmt_scale(WAIT_MS));
}

/* ---- fixture: instances on one loop ---- */

/* A handler's record: calls, and a flag raised when `target` calls are reached. */
struct counter {
    const char *route;
    int calls, target, wrong_route, redelivered;
    bool keep_first; /* take a reference to the first message and leave it unsettled */
    bool reached;
};

struct fx {
    struct event_base *base;
    mm_t *a, *b, *client;
    struct mmt_evlog aev, bev, cev;
    char service[64];
    struct mmt_peer raw;
    mm_msg_t *kept;
};

static struct fx F;

static void
setup(void)
{
    memset(&F, 0, sizeof F);
    F.base = mmt_base_new();
    mmt_unique("routes", F.service, sizeof F.service);
    F.a = mmt_instance(F.base, F.service, NULL, &F.aev);
    F.b = mmt_instance(F.base, F.service, NULL, &F.bev);
    F.client = mmt_instance(F.base, "t-routes-client", NULL, &F.cev);
    mmt_peer_open(&F.raw);
    mmt_peer_use_confirms(&F.raw);
}

static void
teardown(void)
{
    mm_msg_unref(F.kept);
    mm_free(F.a);
    mm_free(F.b);
    mm_free(F.client);
    mmt_peer_close(&F.raw);
    mmt_base_free(F.base);
}

/* Count the call, check the route, then answer with the route's name (a task is acked). */
static void
on_msg(mm_msg_t *msg, void *ud)
{
    struct counter *c = ud;
    c->calls++;
    c->redelivered += mm_msg_redelivered(msg);
    if (c->route != NULL && strcmp(mm_msg_route(msg), c->route) != 0)
        c->wrong_route++;
    if (c->calls >= c->target)
        c->reached = true;
    if (c->keep_first && c->calls == 1) {
        F.kept = mm_msg_ref(msg);
        return;
    }
    mm_body_t *b = mm_body_new();
    mm_body_str(b, c->route ? c->route : "");
    ck_assert_int_eq(mm_msg_reply(msg, mm_body_data(b), mm_body_len(b)), MM_OK);
    mm_body_free(b);
}

/* A request from the client to `route` of the service, waited for; its status. */
static int
request(const char *route, struct mmt_probe *p)
{
    ck_assert_int_eq(mm_request(F.client, F.service, route, NULL, 0, NULL, mmt_on_reply, p, NULL),
                     MM_OK);
    MMT_WAIT(F.base, p->done, mmt_scale(WAIT_MS));
    ck_assert_int_eq(p->calls, 1);
    return p->status;
}

static void
request_ok(const char *route, const char *want_body)
{
    struct mmt_probe p = {0};
    int status = request(route, &p);
    ck_assert_msg(status == MM_OK, "request to %s: %s", route, mm_err_name(status));
    ck_assert_str_eq(p.str, want_body);
    mmt_probe_free(&p);
}

static const char *
queue_of(const char *route, char *buf, size_t len)
{
    return mmt_request_queue(buf, len, F.service, route);
}

/* ---- tests ---- */

START_TEST(each_route_reaches_its_own_handler)
{
    struct counter c[3] = {{.route = "r1"}, {.route = "r2"}, {.route = "r3"}};
    for (int i = 0; i < 3; i++)
        ck_assert_int_eq(mm_handle(F.a, c[i].route, on_msg, &c[i], NULL, NULL), MM_OK);
    mmt_connect(F.a);
    mmt_connect(F.client);
    struct mmt_probe p[6] = {{0}};
    for (int i = 0; i < 6; i++)
        ck_assert_int_eq(mm_request(F.client, F.service, c[i % 3].route, NULL, 0, NULL,
                                    mmt_on_reply, &p[i], NULL),
                         MM_OK);
    for (int i = 0; i < 6; i++) {
        MMT_WAIT(F.base, p[i].done, mmt_scale(WAIT_MS));
        ck_assert_int_eq(p[i].status, MM_OK);
        ck_assert_str_eq(p[i].str, c[i % 3].route); /* answered by that route's handler */
        mmt_probe_free(&p[i]);
    }
    for (int i = 0; i < 3; i++) {
        ck_assert_int_eq(c[i].calls, 2);
        ck_assert_int_eq(c[i].wrong_route, 0);
    }
}
END_TEST

/* The broker agrees only to a re-declare with the very same flags and arguments. */
static void
check_declared_as_protocol(const char *route)
{
    char q[200];
    queue_of(route, q, sizeof q);
    ck_assert_int_eq(raw_declare(&F.raw, q, false, true, false, MMT_REQUEST_QUEUE_EXPIRES), 0);
    ck_assert_int_eq(raw_declare(&F.raw, q, false, true, false, 3600000), 406);
    ck_assert_int_eq(raw_declare(&F.raw, q, false, true, false, 0), 406);
    ck_assert_int_eq(raw_declare(&F.raw, q, false, false, false, MMT_REQUEST_QUEUE_EXPIRES), 406);
    ck_assert_int_eq(raw_declare(&F.raw, q, false, true, true, MMT_REQUEST_QUEUE_EXPIRES), 406);
}

START_TEST(routes_declared_before_and_after_connect)
{
    struct counter before = {.route = "before"}, after = {.route = "after"};
    ck_assert_int_eq(mm_handle(F.a, "before", on_msg, &before, NULL, NULL), MM_OK);
    mmt_connect(F.a);
    ck_assert_int_eq(mm_handle(F.a, "after", on_msg, &after, NULL, NULL), MM_OK);
    mmt_connect(F.client);
    request_ok("before", "before");
    request_ok("after", "after");
    check_declared_as_protocol("before");
    check_declared_as_protocol("after");
}
END_TEST

START_TEST(stop_deletes_an_idle_queue)
{
    struct counter c = {.route = "gone"};
    mm_route_t *r = NULL;
    ck_assert_int_eq(mm_handle(F.a, "gone", on_msg, &c, NULL, &r), MM_OK);
    mmt_connect(F.a);
    mmt_connect(F.client);
    char q[200];
    ck_assert(raw_exists(&F.raw, queue_of("gone", q, sizeof q)));
    ck_assert_int_eq(mm_route_stop(r), MM_OK);
    ck_assert_msg(!raw_exists(&F.raw, q), "%s still exists after mm_route_stop", q);
    struct mmt_probe p = {0};
    ck_assert_int_eq(request("gone", &p), MM_ENOROUTE);
    ck_assert_int_eq(c.calls, 0);
    ck_assert_int_eq(F.aev.n, 1); /* stopping raised nothing */
    ck_assert_int_eq(F.aev.count[MM_EV_CONNECTED], 1);
    mmt_probe_free(&p);
}
END_TEST

START_TEST(queue_deleted_from_outside_is_declared_again)
{
    struct counter c = {.route = "del", .target = 1};
    ck_assert_int_eq(mm_handle(F.a, "del", on_msg, &c, NULL, NULL), MM_OK);
    mmt_connect(F.a);
    mmt_connect(F.client);
    request_ok("del", "del");
    char q[200], cmd[256];
    snprintf(cmd, sizeof cmd, "delete_queue %s", queue_of("del", q, sizeof q));
    ck_assert_int_eq(mmt_ctl(cmd), 0);
    /* the consumer's cancel notice: reported, and the route declared again */
    MMT_WAIT(F.base, F.aev.seen[MM_EV_ERROR], mmt_scale(WAIT_MS));
    ck_assert_int_eq(F.aev.code[MM_EV_ERROR], MM_ECHANNEL);
    ck_assert_ptr_nonnull(strstr(F.aev.text[MM_EV_ERROR], "declared again"));
    ck_assert(raw_exists(&F.raw, q));
    request_ok("del", "del");
    ck_assert_int_eq(c.calls, 2);
}
END_TEST

START_TEST(stat_counts_ready_messages_and_consumers)
{
    struct counter c = {.route = "slow", .target = 1, .keep_first = true};
    mm_route_t *r = mmt_handle(F.a, "slow", on_msg, &c, 1); /* one task at a time */
    mmt_connect(F.a);
    raw_tasks(&F.raw, F.service, "slow", 5);
    MMT_WAIT(F.base, c.reached, mmt_scale(WAIT_MS));
    mm_stat_t st = {99, 99};
    ck_assert_int_eq(mm_route_stat(r, &st), MM_OK);
    ck_assert_uint_eq(st.messages, 4); /* the first is in flight, unsettled */
    ck_assert_uint_eq(st.consumers, 1);
    ck_assert_int_eq(c.calls, 1);
    c.reached = false;
    c.target = 5;
    ck_assert_int_eq(mm_msg_ack(F.kept), MM_OK);
    F.kept = mm_msg_unref(F.kept);
    MMT_WAIT(F.base, c.reached, mmt_scale(WAIT_MS));
    ck_assert_int_eq(mm_route_stat(r, &st), MM_OK);
    ck_assert_uint_eq(st.messages, 0);
    ck_assert_uint_eq(st.consumers, 1);
}
END_TEST

START_TEST(queue_kept_while_another_instance_consumes)
{
    struct counter ca = {.route = "shared"}, cb = {.route = "shared", .target = 3};
    mm_route_t *ra = NULL;
    ck_assert_int_eq(mm_handle(F.a, "shared", on_msg, &ca, NULL, &ra), MM_OK);
    ck_assert_int_eq(mm_handle(F.b, "shared", on_msg, &cb, NULL, NULL), MM_OK);
    mmt_connect(F.a);
    mmt_connect(F.b);
    mmt_connect(F.client);
    ck_assert_int_eq(mm_route_stop(ra), MM_OK);
    char q[200];
    ck_assert_msg(raw_exists(&F.raw, queue_of("shared", q, sizeof q)), "%s was deleted", q);
    mm_stat_t st;
    ck_assert_int_eq(mm_queue_stat(F.client, F.service, "shared", &st), MM_OK);
    ck_assert_uint_eq(st.consumers, 1);
    for (int i = 0; i < 3; i++)
        request_ok("shared", "shared");
    ck_assert_int_eq(cb.calls, 3);
    ck_assert_int_eq(ca.calls, 0);
    ck_assert_int_eq(F.aev.n, 1); /* the refused delete was a quiet probe */
    ck_assert_int_eq(F.aev.count[MM_EV_CONNECTED], 1);
}
END_TEST

START_TEST(queue_kept_when_not_empty)
{
    struct counter c = {.route = "keep", .target = 1, .keep_first = true};
    mm_route_t *r = mmt_handle(F.a, "keep", on_msg, &c, 1); /* one task at a time */
    mmt_connect(F.a);
    mmt_connect(F.client);
    raw_tasks(&F.raw, F.service, "keep", 3);
    MMT_WAIT(F.base, c.reached, mmt_scale(WAIT_MS));
    ck_assert_int_eq(mm_route_stop(r), MM_OK);
    /* the kept task's channel is gone: it cannot be settled, the broker has it back */
    ck_assert_int_eq(mm_msg_ack(F.kept), MM_ECHANNEL);
    F.kept = mm_msg_unref(F.kept);
    char q[200];
    ck_assert_msg(raw_exists(&F.raw, queue_of("keep", q, sizeof q)), "%s was deleted", q);
    mm_stat_t st;
    ck_assert_int_eq(mm_queue_stat(F.client, F.service, "keep", &st), MM_OK);
    ck_assert_uint_ge(st.messages, 2);
    ck_assert_uint_eq(st.consumers, 0);
    /* handled again: every task arrives, the kept one redelivered */
    struct counter again = {.route = "keep", .target = 3};
    ck_assert_int_eq(mm_handle(F.a, "keep", on_msg, &again, NULL, NULL), MM_OK);
    MMT_WAIT(F.base, again.reached, mmt_scale(WAIT_MS));
    ck_assert_int_eq(again.calls, 3);
    ck_assert_int_eq(again.redelivered, 1);
}
END_TEST

START_TEST(second_handle_of_a_route_is_refused_until_stopped)
{
    struct counter first = {.route = "dup"}, second = {.route = "dup"};
    mm_route_t *r = NULL;
    ck_assert_int_eq(mm_handle(F.a, "dup", on_msg, &first, NULL, &r), MM_OK);
    ck_assert_int_eq(mm_handle(F.a, "dup", on_msg, &second, NULL, NULL), MM_ESTATE);
    mmt_connect(F.a);
    mmt_connect(F.client);
    ck_assert_int_eq(mm_handle(F.a, "dup", on_msg, &second, NULL, NULL), MM_ESTATE);
    ck_assert_int_eq(mm_last_code(F.a), MM_ESTATE);
    request_ok("dup", "dup");
    ck_assert_int_eq(mm_route_stop(r), MM_OK);
    ck_assert_int_eq(mm_handle(F.a, "dup", on_msg, &second, NULL, NULL), MM_OK);
    request_ok("dup", "dup");
    ck_assert_int_eq(first.calls, 1);
    ck_assert_int_eq(second.calls, 1);
}
END_TEST

START_TEST(queue_stat_of_another_service)
{
    mm_stat_t st = {99, 99};
    ck_assert_int_eq(mm_queue_stat(F.client, F.service, "st", &st), MM_ENOTCONN);
    struct counter c = {.route = "st"};
    ck_assert_int_eq(mm_handle(F.a, "st", on_msg, &c, NULL, NULL), MM_OK);
    mmt_connect(F.a);
    mmt_connect(F.client);
    ck_assert_int_eq(mm_queue_stat(F.client, F.service, "st", &st), MM_OK);
    ck_assert_uint_eq(st.messages, 0);
    ck_assert_uint_eq(st.consumers, 1);
    ck_assert_int_eq(mm_queue_stat(F.client, F.service, "missing", &st), MM_ENOENT);
    ck_assert_int_eq(mm_queue_stat(F.client, F.service, "a..b", &st), MM_ENAME);
    /* a round trip after the probe: any event it queued has been delivered by now */
    request_ok("st", "st");
    ck_assert_int_eq(F.cev.count[MM_EV_CHANNEL_ERROR], 0);
    ck_assert_int_eq(mm_queue_stat(F.client, F.service, "st", &st), MM_OK);
}
END_TEST

/* The handler stops its own route, then tries to answer. */
struct self_stop {
    mm_route_t *route;
    int calls, stop_rc, reply_rc;
    bool handled;
};

static void
on_self_stop(mm_msg_t *msg, void *ud)
{
    struct self_stop *s = ud;
    if (s->calls++ > 0)
        return; /* a redelivery (the route is gone; only reached if it is not) */
    s->stop_rc = mm_route_stop(s->route);
    s->reply_rc = mm_msg_reply(msg, NULL, 0);
    s->handled = true;
}

START_TEST(stop_from_inside_its_own_handler)
{
    struct self_stop s = {.stop_rc = 1, .reply_rc = 1};
    ck_assert_int_eq(mm_handle(F.a, "self", on_self_stop, &s, NULL, &s.route), MM_OK);
    mmt_connect(F.a);
    mmt_connect(F.client);
    struct mmt_probe p = {0};
    mm_request_opts_t o = MM_REQUEST_OPTS_INIT;
    o.timeout_ms = MM_NO_TIMEOUT; /* the broker must not expire it from the queue */
    mm_req_t req;
    ck_assert_int_eq(mm_request(F.client, F.service, "self", NULL, 0, &o, mmt_on_reply, &p, &req),
                     MM_OK);
    MMT_WAIT(F.base, s.handled, mmt_scale(WAIT_MS));
    ck_assert_int_eq(s.calls, 1);
    ck_assert_int_eq(s.stop_rc, MM_OK);
    /* The request was delivered on the route's channel, now closed and so never
     * acked: the broker redelivers it, and an answer now would be a second one. */
    ck_assert_msg(s.reply_rc == MM_ECHANNEL, "reply: %s", mm_err_name(s.reply_rc));
    mm_stat_t st;
    ck_assert_int_eq(mm_queue_stat(F.client, F.service, "self", &st), MM_OK);
    ck_assert_uint_eq(st.messages, 1); /* back in the queue, which stop therefore kept */
    ck_assert_uint_eq(st.consumers, 0);
    ck_assert(!p.done);
    ck_assert_int_eq(mm_request_cancel(F.client, req), MM_OK);
    ck_assert(p.done);
    ck_assert_int_eq(F.aev.count[MM_EV_ERROR], 0);
    mmt_probe_free(&p);
}
END_TEST

static Suite *
suite(void)
{
    Suite *s = suite_create("routes");
    TCase *tc = mmt_tcase(s, "routes", setup, teardown, 60);
    tcase_add_test(tc, each_route_reaches_its_own_handler);
    tcase_add_test(tc, routes_declared_before_and_after_connect);
    tcase_add_test(tc, stop_deletes_an_idle_queue);
    tcase_add_test(tc, queue_deleted_from_outside_is_declared_again);
    tcase_add_test(tc, stat_counts_ready_messages_and_consumers);
    tcase_add_test(tc, queue_kept_while_another_instance_consumes);
    tcase_add_test(tc, queue_kept_when_not_empty);
    tcase_add_test(tc, second_handle_of_a_route_is_refused_until_stopped);
    tcase_add_test(tc, queue_stat_of_another_service);
    tcase_add_test(tc, stop_from_inside_its_own_handler);
    return s;
}

int
main(void)
{
    return mmt_run(suite());
}
