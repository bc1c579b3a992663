/* The shared behaviour suite: what a handler or a requester can observe,
 * written once and run against every transport (the broker, and the
 * in-process memory:// transport): $MM_TEST_URI decides. Nothing here may
 * depend on the broker's tools, so that both transports answer the same
 * questions and cannot drift apart: replies, errors, streamed answers,
 * timeouts, unroutable requests and tasks, events to every listener and by
 * wildcard, competing workers, unsettled work given to another worker,
 * redelivery and dead-lettering, groups, headers and metadata, the order of
 * messages and the rule that a callback never runs inside the call that
 * caused it. "Nothing more arrived" is proven by a sentinel sent last. */
#include <check.h>
#include <event2/event.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "micromsg.h"
#include "mmt.h"
#include "mmt_fx.h"

#define MAX_MM 6
#define N 100
#define WAIT_MS 10000

struct fx {
    struct event_base *base;
    mm_t *mm[MAX_MM];
    struct mmt_evlog ev[MAX_MM];
    int n;
    char svc[64];
};

static struct fx F;

static void
setup(void)
{
    memset(&F, 0, sizeof F);
    F.base = mmt_base_new();
    mmt_unique("behaviour", F.svc, sizeof F.svc);
}

static void
teardown(void)
{
    if (F.n > 0 && F.mm[0] != NULL)
        mm_group_delete(F.mm[0], "g");
    for (int i = 0; i < F.n; i++)
        mm_free(F.mm[i]);
    mmt_base_free(F.base);
}

/* A connected instance of the suite's service (or of `svc`), slot i of F. */
static mm_t *
up(const char *svc, unsigned flags)
{
    ck_assert_int_lt(F.n, MAX_MM);
    mm_opts_t o = MM_OPTS_INIT;
    o.flags = MM_OPT_NO_PEERS | flags;
    o.max_redeliveries = 3;
    mm_t *mm = mmt_instance(F.base, svc ? svc : F.svc, &o, &F.ev[F.n]);
    F.mm[F.n++] = mm;
    mmt_connect(mm);
    return mm;
}

static void
wait_for(const bool *flag, const char *what)
{
    ck_assert_msg(mmt_wait(F.base, flag, mmt_scale(WAIT_MS)), "no %s within %d ms", what,
                  mmt_scale(WAIT_MS));
}

/* Run the loop until cond(arg) holds, at most WAIT_MS (scaled). */
static void
wait_cond(bool (*cond)(const void *), const void *arg, const char *what)
{
    uint64_t end = mmt_now_ms() + (uint64_t) mmt_scale(WAIT_MS);
    bool never = false;
    while (!cond(arg) && mmt_now_ms() < end)
        mmt_wait(F.base, &never, 20);
    ck_assert_msg(cond(arg), "no %s within %d ms", what, mmt_scale(WAIT_MS));
}

/* msgpack of a small unsigned integer (0..65535): a message's number. */
static size_t
num(uint8_t out[3], int k)
{
    out[0] = 0xcd;
    out[1] = (uint8_t) (k >> 8);
    out[2] = (uint8_t) k;
    return 3;
}

static int
num_of(const mm_msg_t *msg)
{
    const msgpack_object *b = mm_msg_body(msg);
    return b->type == MSGPACK_OBJECT_POSITIVE_INTEGER ? (int) b->via.u64 : -1;
}

/* ---- RPC ---- */

static void
echo(mm_msg_t *msg, void *ud)
{
    (void) ud;
    size_t len = 0;
    const void *body = mm_msg_body_raw(msg, &len);
    ck_assert_int_eq(mm_msg_kind_of(msg), MM_MSG_REQUEST);
    ck_assert_int_eq(mm_msg_reply(msg, body, len), MM_OK);
}

START_TEST(a_request_gets_its_reply_never_inside_the_call)
{
    mm_t *server = up(NULL, 0), *client = up("behaviour-client", 0);
    mmt_handle(server, "echo", echo, NULL, 0);
    struct mmt_probe p = {0};
    ck_assert_int_eq(
        mm_request(client, F.svc, "echo", "\xa5hello", 6, NULL, mmt_on_reply, &p, NULL), MM_OK);
    ck_assert_int_eq(p.calls, 0); /* not inside mm_request */
    wait_for(&p.done, "reply");
    ck_assert_int_eq(p.status, MM_OK);
    ck_assert_str_eq(p.str, "hello");
    ck_assert_int_eq(p.calls, 1);
    ck_assert_int_eq(mm_msg_kind_of(p.msg), MM_MSG_ANSWER);
    mmt_probe_free(&p);
}
END_TEST

static void
refuse(mm_msg_t *msg, void *ud)
{
    (void) ud;
    ck_assert_int_eq(mm_msg_reject(msg, "notAllowed", "no, thanks"), MM_OK);
}

START_TEST(a_rejected_request_is_an_error_with_code_and_text)
{
    mm_t *server = up(NULL, 0), *client = up("behaviour-client", 0);
    mmt_handle(server, "no", refuse, NULL, 0);
    struct mmt_probe p = {0};
    ck_assert_int_eq(mm_request(client, F.svc, "no", "\xa0", 1, NULL, mmt_on_reply, &p, NULL),
                     MM_OK);
    wait_for(&p.done, "error answer");
    ck_assert_int_eq(p.status, MM_EREMOTE);
    ck_assert_str_eq(p.code, "notAllowed");
    ck_assert_str_eq(p.text, "no, thanks");
    mmt_probe_free(&p);
}
END_TEST

static void
three_parts(mm_msg_t *msg, void *ud)
{
    (void) ud;
    uint8_t b[3];
    for (int k = 0; k < 3; k++)
        ck_assert_int_eq(mm_msg_write(msg, b, num(b, k)), MM_OK);
    ck_assert_int_eq(mm_msg_end(msg, b, num(b, 3)), MM_OK);
}

static int parts_seen[8], nparts;
static bool parts_done;

static void
on_part(mm_msg_t *msg, void *ud)
{
    (void) ud;
    ck_assert_int_lt(nparts, 8);
    parts_seen[nparts++] = num_of(msg);
    if (mm_msg_is_final(msg))
        parts_done = true;
}

START_TEST(a_streamed_answer_comes_in_order_collected_or_part_by_part)
{
    mm_t *server = up(NULL, 0), *client = up("behaviour-client", 0);
    mmt_handle(server, "parts", three_parts, NULL, 0);
    struct mmt_probe p = {0};
    ck_assert_int_eq(mm_request(client, F.svc, "parts", "\xa0", 1, NULL, mmt_on_reply, &p, NULL),
                     MM_OK);
    wait_for(&p.done, "collected stream");
    ck_assert_int_eq((int) mm_msg_part_count(p.msg), 4);
    for (size_t i = 0; i < 4; i++)
        ck_assert_int_eq((int) mm_msg_part(p.msg, i)->via.u64, (int) i);
    mmt_probe_free(&p);
    nparts = 0;
    parts_done = false;
    mm_request_opts_t o = MM_REQUEST_OPTS_INIT;
    o.flags = MM_REQ_PARTS;
    ck_assert_int_eq(mm_request(client, F.svc, "parts", "\xa0", 1, &o, on_part, NULL, NULL), MM_OK);
    wait_for(&parts_done, "last part");
    ck_assert_int_eq(nparts, 4);
    for (int i = 0; i < 4; i++)
        ck_assert_int_eq(parts_seen[i], i);
}
END_TEST

static mm_msg_t *kept;

static void
keep_unanswered(mm_msg_t *msg, void *ud)
{
    (void) ud;
    kept = mm_msg_ref(msg);
}

START_TEST(an_unanswered_request_times_out)
{
    kept = NULL;
    mm_t *server = up(NULL, 0), *client = up("behaviour-client", 0);
    mmt_handle(server, "slow", keep_unanswered, NULL, 0);
    struct mmt_probe p = {0};
    mm_request_opts_t o = MM_REQUEST_OPTS_INIT;
    o.timeout_ms = 300;
    uint64_t t0 = mmt_now_ms();
    ck_assert_int_eq(mm_request(client, F.svc, "slow", "\xa0", 1, &o, mmt_on_reply, &p, NULL),
                     MM_OK);
    wait_for(&p.done, "timeout");
    ck_assert_int_eq(p.status, MM_ETIMEDOUT);
    /* libevent's timers run on CLOCK_MONOTONIC_COARSE (unless EVENT_PRECISE_TIMER): one
     * tick (4 ms here) early at most, against the test's precise clock. */
    ck_assert_uint_ge(mmt_now_ms() - t0 + 5, 300);
    ck_assert_ptr_nonnull(kept);
    wait_for(&F.ev[0].seen[MM_EV_EXPIRED], "expiry at the server"); /* acked, dropped */
    ck_assert_int_ne(mm_msg_reply(kept, "\xa0", 1), MM_OK);         /* stale work is not answered */
    kept = mm_msg_unref(kept);
    ck_assert_int_eq(p.calls, 1);
    mmt_probe_free(&p);
}
END_TEST

START_TEST(a_request_nobody_handles_fails_with_no_route)
{
    mm_t *client = up("behaviour-client", 0);
    struct mmt_probe p = {0};
    ck_assert_int_eq(mm_request(client, F.svc, "nobody", "\xa0", 1, NULL, mmt_on_reply, &p, NULL),
                     MM_OK);
    wait_for(&p.done, "no-route answer");
    ck_assert_int_eq(p.status, MM_ENOROUTE);
    mmt_probe_free(&p);
}
END_TEST

/* ---- events ---- */

struct inbox {
    int count, order_errors, last, sentinels;
    bool sentinel;
    char route[160];
};

static void
on_event(mm_msg_t *msg, void *ud)
{
    struct inbox *in = ud;
    int k = num_of(msg);
    snprintf(in->route, sizeof in->route, "%s", mm_msg_route(msg));
    ck_assert_int_eq(mm_msg_kind_of(msg), MM_MSG_EVENT);
    if (k == N) {
        in->sentinel = true;
        in->sentinels++;
        return;
    }
    if (in->count > 0 && k != in->last + 1)
        in->order_errors++;
    in->last = k;
    in->count++;
}

static void
emit_n(mm_t *mm, const char *route, int from, int to)
{
    uint8_t b[3];
    for (int k = from; k <= to; k++)
        ck_assert_int_eq(mm_emit(mm, NULL, route, b, num(b, k), NULL), MM_OK);
}

START_TEST(every_listener_gets_every_event_in_order_and_wildcards_match)
{
    mm_t *a = up(NULL, 0), *b = up(NULL, 0), *emitter = up(NULL, 0);
    struct inbox ia = {0}, ib = {0}, other = {0};
    ck_assert_int_eq(mm_listen(a, NULL, "order.*", on_event, &ia, NULL, NULL), MM_OK);
    ck_assert_int_eq(mm_listen(b, NULL, "#", on_event, &ib, NULL, NULL), MM_OK);
    ck_assert_int_eq(mm_listen(b, NULL, "invoice.*", on_event, &other, NULL, NULL), MM_OK);
    emit_n(emitter, "order.created", 0, N);
    wait_for(&ia.sentinel, "sentinel at listener a");
    wait_for(&ib.sentinel, "sentinel at listener b");
    ck_assert_int_eq(ia.count, N);
    ck_assert_int_eq(ib.count, N);
    ck_assert_int_eq(ia.order_errors + ib.order_errors, 0);
    ck_assert_int_eq(other.count, 0);
    char key[160];
    snprintf(key, sizeof key, "%s.order.created", F.svc);
    ck_assert_str_eq(ia.route, key);
}
END_TEST

static bool
both_sentinels(const void *arg)
{
    const struct inbox *g = arg;
    /* and every event: a sentinel may overtake an event another replica still holds */
    return g[0].sentinels + g[1].sentinels >= 2 && g[0].count + g[1].count >= N;
}

START_TEST(a_group_handles_each_event_once)
{
    struct inbox g[2] = {{0}}, plain = {0};
    mm_route_opts_t o = MM_ROUTE_OPTS_INIT;
    o.group = "g";
    for (int i = 0; i < 2; i++)
        ck_assert_int_eq(mm_listen(up(NULL, 0), NULL, "tick", on_event, &g[i], &o, NULL), MM_OK);
    mm_t *emitter = up(NULL, 0);
    ck_assert_int_eq(mm_listen(emitter, NULL, "tick", on_event, &plain, NULL, NULL), MM_OK);
    emit_n(emitter, "tick", 0, N - 1);
    uint8_t b[3];
    for (int i = 0; i < 2; i++) /* a sentinel to each replica: both queues' ends reached */
        ck_assert_int_eq(mm_emit(emitter, NULL, "tick", b, num(b, N), NULL), MM_OK);
    wait_for(&plain.sentinel, "sentinel at the plain listener");
    wait_cond(both_sentinels, g, "both sentinels in the group");
    ck_assert_int_eq(g[0].count + g[1].count, N); /* the queue's end reached: no duplicate */
    ck_assert_int_eq(plain.count, N);
}
END_TEST

/* ---- tasks ---- */

struct worker {
    int handled[N];
    int total;
    bool keep; /* hold tasks without settling them */
    mm_msg_t *held[N];
    int nheld, redelivered;
    bool any;
};

static void
on_task(mm_msg_t *msg, void *ud)
{
    struct worker *w = ud;
    ck_assert_int_eq(mm_msg_kind_of(msg), MM_MSG_TASK);
    int k = num_of(msg);
    ck_assert_msg(k >= 0 && k < N, "task %d", k);
    w->redelivered += mm_msg_redelivered(msg);
    w->any = true;
    if (w->keep) {
        w->held[w->nheld++] = mm_msg_ref(msg);
        return;
    }
    w->handled[k]++;
    w->total++;
    ck_assert_int_eq(mm_msg_ack(msg), MM_OK);
}

static bool
all_handled(const struct worker *a, const struct worker *b, int n)
{
    return a->total + b->total >= n;
}

static struct worker *wa, *wb;
static int wn;

static bool
tasks_done(const void *arg)
{
    (void) arg;
    return all_handled(wa, wb, wn);
}

static void
wait_tasks(struct worker *a, struct worker *b, int n)
{
    wa = a;
    wb = b;
    wn = n;
    wait_cond(tasks_done, NULL, "handled tasks");
}

START_TEST(competing_workers_share_tasks_each_handled_once)
{
    static struct worker a, b;
    memset(&a, 0, sizeof a);
    memset(&b, 0, sizeof b);
    mmt_handle(up(NULL, 0), "work", on_task, &a, 4);
    mmt_handle(up(NULL, 0), "work", on_task, &b, 4);
    mm_t *client = up("behaviour-client", 0);
    uint8_t buf[3];
    for (int k = 0; k < N; k++)
        ck_assert_int_eq(mm_task(client, F.svc, "work", buf, num(buf, k), NULL), MM_OK);
    ck_assert_int_eq(mm_flush(client, mmt_scale(WAIT_MS)), MM_OK);
    wait_tasks(&a, &b, N);
    for (int k = 0; k < N; k++)
        ck_assert_msg(a.handled[k] + b.handled[k] == 1, "task %d handled %d times", k,
                      a.handled[k] + b.handled[k]);
    ck_assert_int_eq(a.total + b.total, N);
}
END_TEST

static bool
held_five(const void *arg)
{
    return ((const struct worker *) arg)->nheld >= 5;
}

START_TEST(unsettled_tasks_of_a_dead_worker_go_to_another)
{
    static struct worker a, b;
    memset(&a, 0, sizeof a);
    memset(&b, 0, sizeof b);
    a.keep = true;
    mm_t *dying = up(NULL, 0);
    mmt_handle(dying, "work", on_task, &a, 8);
    mm_t *client = up("behaviour-client", 0);
    uint8_t buf[3];
    for (int k = 0; k < 5; k++)
        ck_assert_int_eq(mm_task(client, F.svc, "work", buf, num(buf, k), NULL), MM_OK);
    wait_cond(held_five, &a, "5 tasks held by the first worker");
    mmt_handle(up(NULL, 0), "work", on_task, &b, 8);
    for (int i = 0; i < a.nheld; i++)
        mm_msg_unref(a.held[i]); /* kept, never settled: the process "dies" */
    a.nheld = 0;
    F.mm[0] = NULL;
    mm_free(dying);
    wait_tasks(&a, &b, 5);
    ck_assert_int_eq(b.total, 5);
    ck_assert_int_eq(b.redelivered, 5);
}
END_TEST

static int nacks_left;

static void
give_back(mm_msg_t *msg, void *ud)
{
    struct worker *w = ud;
    w->redelivered += mm_msg_redelivered(msg);
    w->total++;
    ck_assert_int_eq(mm_msg_nack(msg, nacks_left-- > 0), MM_OK);
}

START_TEST(a_task_given_back_is_redelivered_then_given_up_is_dead_lettered)
{
    static struct worker w;
    memset(&w, 0, sizeof w);
    nacks_left = 1;
    mm_t *worker = up(NULL, 0);
    mmt_handle(worker, "work", give_back, &w, 0);
    mm_t *client = up("behaviour-client", 0);
    ck_assert_int_eq(mm_task(client, F.svc, "work", "\x01", 1, NULL), MM_OK);
    wait_for(&F.ev[0].seen[MM_EV_DEADLETTER], "dead-letter event");
    ck_assert_int_eq(w.total, 2);
    ck_assert_int_eq(w.redelivered, 1);
    mm_stat_t st;
    ck_assert_int_eq(mm_deadletter_stat(worker, NULL, &st), MM_OK);
    ck_assert_int_eq((int) st.messages, 1);
}
END_TEST

static int sent_status = -1;
static bool sent_done;

static void
on_sent(mm_t *mm, int status, void *ud)
{
    (void) mm;
    (void) ud;
    sent_status = status;
    sent_done = true;
}

START_TEST(a_task_nobody_handles_is_returned)
{
    sent_done = false;
    mm_t *client = up("behaviour-client", 0);
    mm_send_opts_t o = MM_SEND_OPTS_INIT;
    o.on_sent = on_sent;
    ck_assert_int_eq(mm_task(client, F.svc, "nobody", "\xa0", 1, &o), MM_OK);
    ck_assert(!sent_done);
    wait_for(&sent_done, "verdict");
    ck_assert_int_eq(sent_status, MM_ENOROUTE);
    wait_for(&F.ev[0].seen[MM_EV_UNROUTABLE], "unroutable event");
}
END_TEST

/* ---- prefetch, headers, metadata ---- */

static bool
held_two(const void *arg)
{
    return ((const struct worker *) arg)->nheld >= 2;
}

START_TEST(prefetch_bounds_the_messages_in_flight)
{
    static struct worker w;
    memset(&w, 0, sizeof w);
    w.keep = true;
    mmt_handle(up(NULL, 0), "work", on_task, &w, 2);
    mm_t *client = up("behaviour-client", 0);
    uint8_t buf[3];
    for (int k = 0; k < 6; k++)
        ck_assert_int_eq(mm_task(client, F.svc, "work", buf, num(buf, k), NULL), MM_OK);
    ck_assert_int_eq(mm_flush(client, mmt_scale(WAIT_MS)), MM_OK);
    wait_cond(held_two, &w, "2 tasks held");
    mm_stat_t st; /* the queue's view: 2 out, 4 ready; a third sent would show as 3 ready */
    ck_assert_int_eq(mm_queue_stat(client, F.svc, "work", &st), MM_OK);
    ck_assert_int_eq((int) st.messages, 4);
    ck_assert_int_eq(w.nheld, 2);
    w.keep = false;
    for (int i = 0; i < w.nheld; i++) {
        ck_assert_int_eq(mm_msg_ack(w.held[i]), MM_OK);
        mm_msg_unref(w.held[i]);
    }
    w.nheld = 0;
    static struct worker none;
    wait_tasks(&w, &none, 4); /* the 4 left, now that two are settled */
    ck_assert_int_eq(w.total, 4);
}
END_TEST

static char got_header[64], got_cause[64], got_trace[64], got_sender[160];
static bool got;

static void
on_headers(mm_msg_t *msg, void *ud)
{
    (void) ud;
    const msgpack_object *h = mm_msg_header(msg, "tenant");
    snprintf(got_header, sizeof got_header, "%.*s", h ? (int) h->via.str.size : 0,
             h ? h->via.str.ptr : "");
    snprintf(got_cause, sizeof got_cause, "%s", mm_msg_causation_id(msg));
    snprintf(got_trace, sizeof got_trace, "%s", mm_msg_traceparent(msg));
    snprintf(got_sender, sizeof got_sender, "%s", mm_msg_sender(msg));
    got = true;
}

START_TEST(headers_and_metadata_travel)
{
    got = false;
    mm_t *listener = up(NULL, 0), *emitter = up(NULL, 0);
    ck_assert_int_eq(mm_listen(listener, NULL, "h", on_headers, NULL, NULL, NULL), MM_OK);
    mm_send_opts_t o = MM_SEND_OPTS_INIT;
    o.headers = "\x81\xa6tenant\xa4"
                "acme";
    o.headers_len = 13;
    o.causation_id = "cmd-1";
    o.traceparent = "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01";
    ck_assert_int_eq(mm_emit(emitter, NULL, "h", "\xa0", 1, &o), MM_OK);
    wait_for(&got, "event with headers");
    ck_assert_str_eq(got_header, "acme");
    ck_assert_str_eq(got_cause, "cmd-1");
    ck_assert_str_eq(got_trace, o.traceparent);
    char want[160];
    snprintf(want, sizeof want, "%s@%s", F.svc, mm_id(emitter));
    ck_assert_str_eq(got_sender, want);
}
END_TEST

START_TEST(bad_bodies_are_refused_at_the_call)
{
    mm_t *client = up("behaviour-client", 0);
    ck_assert_int_eq(mm_emit(client, NULL, "x", "\xc1", 1, NULL), MM_EINVAL);
    ck_assert_int_eq(mm_task(client, F.svc, "x", "\x92\x01", 2, NULL), MM_EINVAL);
    struct mmt_probe p = {0};
    ck_assert_int_eq(mm_request(client, F.svc, "x", "\x92\x01", 2, NULL, mmt_on_reply, &p, NULL),
                     MM_EINVAL);
    ck_assert_int_eq(p.calls, 0);
}
END_TEST

int
main(void)
{
    Suite *s = suite_create("behaviour");
    TCase *tc = mmt_tcase(s, "behaviour", setup, teardown, 60);
    tcase_add_test(tc, a_request_gets_its_reply_never_inside_the_call);
    tcase_add_test(tc, a_rejected_request_is_an_error_with_code_and_text);
    tcase_add_test(tc, a_streamed_answer_comes_in_order_collected_or_part_by_part);
    tcase_add_test(tc, an_unanswered_request_times_out);
    tcase_add_test(tc, a_request_nobody_handles_fails_with_no_route);
    tcase_add_test(tc, every_listener_gets_every_event_in_order_and_wildcards_match);
    tcase_add_test(tc, a_group_handles_each_event_once);
    tcase_add_test(tc, competing_workers_share_tasks_each_handled_once);
    tcase_add_test(tc, unsettled_tasks_of_a_dead_worker_go_to_another);
    tcase_add_test(tc, a_task_given_back_is_redelivered_then_given_up_is_dead_lettered);
    tcase_add_test(tc, a_task_nobody_handles_is_returned);
    tcase_add_test(tc, prefetch_bounds_the_messages_in_flight);
    tcase_add_test(tc, headers_and_metadata_travel);
    tcase_add_test(tc, bad_bodies_are_refused_at_the_call);
    return mmt_run(s);
}
