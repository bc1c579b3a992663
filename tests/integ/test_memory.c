/* The memory:// transport's own tests (the behaviour both transports share
 * is tests/integ/test_behaviour.c, run against memory:// too). Two parts:
 *
 *  - what the public API shows: no socket is ever opened, brokers of other
 *    names are isolated, a broker lives while an instance holds it, no
 *    callback runs inside the call that caused it, unsettled work goes to
 *    another instance, the election;
 *  - the broker underneath, through the internal channel API (lib/
 *    internal.h), against what RabbitMQ 3.10 does: 404, 405, 406 and 403
 *    channel closes, prefetch, requeue in place with the redelivered flag,
 *    confirm tags, basic.return before its ack, single active consumer,
 *    auto-delete, x-max-length with drop-head and basic.get, consumer
 *    cancel notification, streams with x-stream-offset, topic matching,
 *    message TTL, reject-publish.
 *
 * Nothing here needs a broker; each test uses a broker name of its own. */
#include <check.h>
#include <dirent.h>
#include <pthread.h>
#include <event2/event.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "internal.h"
#include "micromsg.h"
#include "mmt.h"
#include "mmt_fx.h"

#define MAX_MM 6
#define WAIT_MS 5000

struct fx {
    struct event_base *base;
    mm_t *mm[MAX_MM];
    struct mmt_evlog ev[MAX_MM];
    int n;
    char uri[96], svc[64];
};

static struct fx F;

/* > 0 while the test is inside a call of ours: a callback then would break the rule. */
static int in_call;

static int
call_enter(void)
{
    return in_call++;
}

static int
call_leave(int rc)
{
    in_call--;
    return rc;
}

/* expr evaluated between the two: a function's argument is, before the call. */
#define CALL(expr) (call_enter(), call_leave(expr))

static void
setup(void)
{
    memset(&F, 0, sizeof F);
    in_call = 0;
    F.base = mmt_base_new();
    char name[64];
    snprintf(F.uri, sizeof F.uri, "memory://%s", mmt_unique("mem", name, sizeof name));
    mmt_unique("memsvc", F.svc, sizeof F.svc);
}

static void
teardown(void)
{
    for (int i = 0; i < F.n; i++)
        mm_free(F.mm[i]);
    mmt_base_free(F.base);
}

static mm_t *
fresh(const char *uri, unsigned flags)
{
    ck_assert_int_lt(F.n, MAX_MM);
    mm_opts_t o = MM_OPTS_INIT;
    o.flags = flags;
    o.heartbeat_ms = 200;
    o.election_timeout_ms = 600;
    mm_t *mm = mmt_instance(F.base, F.svc, &o, &F.ev[F.n]);
    F.mm[F.n++] = mm;
    ck_assert_msg(mm_connect(mm, uri) == MM_OK, "%s", mm_last_error(mm));
    return mm;
}

static mm_t *
up(void)
{
    return fresh(F.uri, MM_OPT_NO_PEERS);
}

static void
wait_for(const bool *flag, const char *what)
{
    ck_assert_msg(mmt_wait(F.base, flag, mmt_scale(WAIT_MS)), "no %s within %d ms", what,
                  mmt_scale(WAIT_MS));
}

/* Run the loop until *n reaches target (bounded). */
static void
wait_count(const int *n, int target, const char *what)
{
    uint64_t end = mmt_now_ms() + (uint64_t) mmt_scale(WAIT_MS);
    bool never = false;
    while (*n < target && mmt_now_ms() < end)
        mmt_wait(F.base, &never, 5);
    ck_assert_msg(*n >= target, "%s: %d of %d within %d ms", what, *n, target, mmt_scale(WAIT_MS));
}

/* Let the loop run until nothing is left to do now (the inboxes are empty). */
static void
settle_loop(void)
{
    for (int i = 0; i < 50; i++)
        event_base_loop(F.base, EVLOOP_NONBLOCK);
}

static int
open_fds(void)
{
    DIR *d = opendir("/proc/self/fd");
    ck_assert_ptr_nonnull(d);
    int n = 0;
    while (readdir(d) != NULL)
        n++;
    closedir(d);
    return n;
}

/* ---- the public API ---- */

static void
echo(mm_msg_t *msg, void *ud)
{
    (void) ud;
    ck_assert_int_eq(in_call, 0);
    size_t len = 0;
    const void *b = mm_msg_body_raw(msg, &len);
    ck_assert_int_eq(mm_msg_reply(msg, b, len), MM_OK);
}

struct counter {
    int n, redelivered;
    bool seen;
    bool keep;
    mm_msg_t *held[32];
    int nheld;
};

static void
count(mm_msg_t *msg, void *ud)
{
    struct counter *c = ud;
    ck_assert_int_eq(in_call, 0);
    c->n++;
    c->redelivered += mm_msg_redelivered(msg);
    c->seen = true;
    if (c->keep && c->nheld < 32)
        c->held[c->nheld++] = mm_msg_ref(msg);
    else if (mm_msg_kind_of(msg) == MM_MSG_TASK)
        ck_assert_int_eq(mm_msg_ack(msg), MM_OK);
}

START_TEST(no_socket_is_opened_and_every_kind_of_message_flows)
{
    int before = open_fds();
    mm_t *server = up(), *client = up();
    struct counter events = {0}, tasks = {0};
    mmt_handle(server, "echo", echo, NULL, 0);
    mmt_handle(server, "work", count, &tasks, 0);
    ck_assert_int_eq(mm_listen(server, NULL, "ev", count, &events, NULL, NULL), MM_OK);
    struct mmt_probe p = {0};
    ck_assert_int_eq(mm_request(client, F.svc, "echo", "\xa2hi", 3, NULL, mmt_on_reply, &p, NULL),
                     MM_OK);
    ck_assert_int_eq(mm_emit(client, F.svc, "ev", "\xc0", 1, NULL), MM_OK);
    ck_assert_int_eq(mm_task(client, F.svc, "work", "\xc0", 1, NULL), MM_OK);
    wait_for(&p.done, "reply");
    wait_for(&events.seen, "event");
    wait_for(&tasks.seen, "task");
    ck_assert_str_eq(p.str, "hi");
    ck_assert_int_eq(open_fds(), before); /* not one descriptor: no socket, no pipe */
    ck_assert_int_eq(mm_heartbeat(client), 0);
    ck_assert_str_eq(mm_uri(client), F.uri);
    mmt_probe_free(&p);
}
END_TEST

START_TEST(a_bad_memory_uri_is_refused_with_a_reason)
{
    mm_t *mm = mmt_instance(F.base, F.svc, NULL, NULL);
    F.mm[F.n++] = mm;
    ck_assert_int_eq(mm_connect(mm, "memory://a/b"), MM_EURI);
    ck_assert_ptr_nonnull(strstr(mm_last_error(mm), "memory broker name"));
    ck_assert_int_eq(mm_connect(mm, "memory://"), MM_EURI);
    ck_assert(!mm_is_connected(mm));
}
END_TEST

START_TEST(brokers_of_other_names_are_isolated)
{
    mm_t *a = up();
    char other[120];
    snprintf(other, sizeof other, "%s-other", F.uri);
    mm_t *b = fresh(other, MM_OPT_NO_PEERS);
    struct counter got = {0};
    mmt_handle(b, "work", count, &got, 0);
    struct counter events = {0};
    ck_assert_int_eq(mm_listen(b, NULL, "#", count, &events, NULL, NULL), MM_OK);
    struct mmt_probe p = {0};
    ck_assert_int_eq(mm_request(a, F.svc, "work", "\xc0", 1, NULL, mmt_on_reply, &p, NULL), MM_OK);
    ck_assert_int_eq(mm_emit(a, F.svc, "x", "\xc0", 1, NULL), MM_OK);
    wait_for(&p.done, "answer");
    ck_assert_int_eq(p.status, MM_ENOROUTE); /* no such queue on a's broker */
    settle_loop();
    ck_assert_int_eq(got.n + events.n, 0);
    mmt_probe_free(&p);
}
END_TEST

static int sent_status;
static bool sent;

static void
on_sent(mm_t *mm, int status, void *ud)
{
    (void) mm;
    (void) ud;
    ck_assert_int_eq(in_call, 0);
    sent_status = status;
    sent = true;
}

static void
task_with_verdict(mm_t *mm, const char *route)
{
    sent = false;
    mm_send_opts_t o = MM_SEND_OPTS_INIT;
    o.on_sent = on_sent;
    ck_assert_int_eq(CALL(mm_task(mm, F.svc, route, "\xc0", 1, &o)), MM_OK);
    wait_for(&sent, "verdict");
}

START_TEST(a_broker_and_its_queues_live_while_an_instance_holds_it)
{
    mm_t *worker = up(), *client = up();
    struct counter got = {0};
    mmt_handle(worker, "work", count, &got, 0);
    mm_free(worker); /* its queue stays (durable), the client holds the broker */
    F.mm[0] = NULL;
    task_with_verdict(client, "work");
    ck_assert_int_eq(sent_status, MM_OK);
    ck_assert_int_eq(mm_close(client), MM_OK); /* still held by the instance */
    ck_assert_int_eq(mm_connect(client, F.uri), MM_OK);
    mm_stat_t st;
    ck_assert_int_eq(mm_queue_stat(client, F.svc, "work", &st), MM_OK);
    ck_assert_int_eq((int) st.messages, 1);
    mm_free(client); /* the last instance: the broker goes with its queues */
    F.mm[1] = NULL;
    mm_t *again = up();
    ck_assert_int_eq(mm_queue_stat(again, F.svc, "work", &st), MM_ENOENT);
}
END_TEST

static void
nack_then_ack(mm_msg_t *msg, void *ud)
{
    struct counter *c = ud;
    ck_assert_int_eq(in_call, 0);
    c->n++;
    c->seen = true;
    if (!mm_msg_redelivered(msg))
        ck_assert_int_eq(CALL(mm_msg_nack(msg, 1)), MM_OK);
    else
        ck_assert_int_eq(CALL(mm_msg_ack(msg)), MM_OK);
}

START_TEST(callbacks_never_run_inside_the_call_that_caused_them)
{
    mm_t *server = up(), *client = up();
    struct counter ev = {0}, tasks = {0};
    mmt_handle(server, "echo", echo, NULL, 0);
    mmt_handle(server, "work", nack_then_ack, &tasks, 0);
    ck_assert_int_eq(CALL(mm_listen(client, NULL, "ev", count, &ev, NULL, NULL)), MM_OK);
    struct mmt_probe p = {0};
    ck_assert_int_eq(
        CALL(mm_request(client, F.svc, "echo", "\xc0", 1, NULL, mmt_on_reply, &p, NULL)), MM_OK);
    ck_assert_int_eq(CALL(mm_emit(client, NULL, "ev", "\xc0", 1, NULL)), MM_OK);
    ck_assert_int_eq(p.calls + ev.n, 0);
    task_with_verdict(client, "work");
    ck_assert_int_eq(sent_status, MM_OK);
    task_with_verdict(client, "nobody");
    ck_assert_int_eq(sent_status, MM_ENOROUTE);
    wait_for(&p.done, "reply");
    wait_for(&ev.seen, "event");
    wait_count(&tasks.n, 2, "tasks");
    ck_assert_int_eq(tasks.n, 2); /* given back once, then taken */
    mmt_probe_free(&p);
}
END_TEST

START_TEST(unsettled_work_goes_to_another_instance_when_its_route_stops)
{
    mm_t *first = up(), *second = up(), *client = up();
    struct counter a = {.keep = true}, b = {0};
    mm_route_t *r = mmt_handle(first, "work", count, &a, 0);
    for (int i = 0; i < 3; i++)
        ck_assert_int_eq(mm_task(client, F.svc, "work", "\xc0", 1, NULL), MM_OK);
    wait_count(&a.nheld, 3, "tasks held");
    mmt_handle(second, "work", count, &b, 0);
    ck_assert_int_eq(mm_route_stop(r), MM_OK); /* its channel closes: back to the queue */
    for (int i = 0; i < a.nheld; i++)
        mm_msg_unref(a.held[i]);
    wait_count(&b.n, 3, "tasks at the second instance");
    ck_assert_int_eq(b.n, 3);
    ck_assert_int_eq(b.redelivered, 3);
}
END_TEST

static bool reject_next;

static void
reject_or_take(mm_msg_t *msg, void *ud)
{
    struct counter *c = ud;
    ck_assert_int_eq(in_call, 0);
    if (reject_next) {
        ck_assert_int_eq(mm_msg_reject(msg, "broken", "not now"), MM_OK);
        c->seen = true;
        return;
    }
    c->n++;
    ck_assert_int_eq(mm_msg_ack(msg), MM_OK);
}

START_TEST(a_redrive_moves_dead_letters_back_to_their_queue)
{
    mm_t *worker = up(), *client = up();
    struct counter c = {0};
    reject_next = true;
    mmt_handle(worker, "work", reject_or_take, &c, 0);
    ck_assert_int_eq(mm_task(client, F.svc, "work", "\xc0", 1, NULL), MM_OK);
    wait_for(&F.ev[0].seen[MM_EV_DEADLETTER], "dead-letter event");
    mm_stat_t st;
    ck_assert_int_eq(mm_deadletter_stat(worker, NULL, &st), MM_OK);
    ck_assert_int_eq((int) st.messages, 1);
    reject_next = false;
    uint32_t moved = 0;
    ck_assert_msg(mm_deadletter_redrive(client, 0, &moved) == MM_OK, "%s", mm_last_error(client));
    ck_assert_int_eq((int) moved, 1);
    wait_count(&c.n, 1, "the task back at its handler");
    ck_assert_int_eq(mm_deadletter_stat(worker, NULL, &st), MM_OK);
    ck_assert_int_eq((int) st.messages, 0);
}
END_TEST

/* A thread with its own loop, broker name, server and client: requests, synchronously. */
static void *
thread_rpc(void *arg)
{
    const char *name = arg;
    struct event_base *base = event_base_new();
    char uri[128];
    snprintf(uri, sizeof uri, "memory://%s", name);
    mm_opts_t o = MM_OPTS_INIT;
    o.base = base;
    o.flags = MM_OPT_NO_PEERS;
    mm_t *server = mm_new("threaded", &o), *client = mm_new("threaded", &o);
    intptr_t ok = mm_handle(server, "echo", echo, NULL, NULL, NULL) == MM_OK &&
                  mm_connect(server, uri) == MM_OK && mm_connect(client, uri) == MM_OK;
    for (int i = 0; ok && i < 200; i++) {
        mm_msg_t *answer = NULL;
        ok = mm_request_sync(client, "threaded", "echo", "\xc0", 1, NULL, &answer) == MM_OK;
        mm_msg_unref(answer);
    }
    mm_free(client);
    mm_free(server);
    event_base_free(base);
    return (void *) ok;
}

START_TEST(brokers_of_other_names_live_in_other_threads)
{
    pthread_t t[4];
    char names[4][64];
    for (int i = 0; i < 4; i++) {
        mmt_unique("thread", names[i], sizeof names[i]);
        ck_assert_int_eq(pthread_create(&t[i], NULL, thread_rpc, names[i]), 0);
    }
    for (int i = 0; i < 4; i++) {
        void *ok = NULL;
        ck_assert_int_eq(pthread_join(t[i], &ok), 0);
        ck_assert_msg(ok != NULL, "thread %d failed", i);
    }
}
END_TEST

static int
leaders(void)
{
    int n = 0;
    for (int i = 0; i < F.n; i++)
        n += F.mm[i] != NULL && mm_is_leader(F.mm[i]);
    return n;
}

static int
wait_one_leader(void)
{
    uint64_t end = mmt_now_ms() + (uint64_t) mmt_scale(WAIT_MS);
    bool never = false;
    while (leaders() != 1 && mmt_now_ms() < end)
        mmt_wait(F.base, &never, 5);
    ck_assert_int_eq(leaders(), 1);
    for (int i = 0; i < F.n; i++)
        if (F.mm[i] != NULL && mm_is_leader(F.mm[i]))
            return i;
    return -1;
}

START_TEST(the_election_works_between_instances_of_one_process)
{
    for (int i = 0; i < 3; i++)
        fresh(F.uri, 0);
    int leader = wait_one_leader();
    mm_free(F.mm[leader]); /* its lock goes with its connection: another takes it */
    F.mm[leader] = NULL;
    int next = wait_one_leader();
    ck_assert_int_ne(next, leader);
}
END_TEST

/* ---- topics (streams) through the public API ---- */

struct records {
    int n;
    int64_t offset[64];
    char type[64][16];
    bool in_call;
};

static void
on_record(mm_msg_t *msg, void *ud)
{
    struct records *r = ud;
    ck_assert_int_eq(mm_msg_kind_of(msg), MM_MSG_RECORD);
    ck_assert_int_lt(r->n, 64);
    r->in_call |= in_call > 0;
    r->offset[r->n] = mm_msg_offset(msg);
    snprintf(r->type[r->n], sizeof r->type[r->n], "%s", mm_msg_type(msg));
    r->n++;
}

static void
append(mm_t *mm, const char *type, int n)
{
    for (int i = 0; i < n; i++)
        ck_assert_msg(CALL(mm_topic_publish(mm, "t", type, "\xc0", 1, NULL)) == MM_OK, "%s",
                      mm_last_error(mm));
}

static mm_reader_t *
reader(mm_t *mm, const char *consumer, mm_from_t from, struct records *r, const mm_read_opts_t *o)
{
    mm_reader_t *rd = NULL;
    ck_assert_msg(CALL(mm_topic_read(mm, "t", consumer, from, on_record, r, o, &rd)) == MM_OK, "%s",
                  mm_last_error(mm));
    return rd;
}

START_TEST(topics_replay_from_first_an_offset_the_last_next_or_a_time)
{
    mm_t *mm = up();
    ck_assert_int_eq(mm_topic_declare(mm, "t", NULL), MM_OK);
    append(mm, "created", 10);
    struct records first = {0}, at7 = {0}, last = {0}, next = {0}, later = {0};
    reader(mm, "first", (mm_from_t){MM_FROM_FIRST, 0}, &first, NULL);
    reader(mm, "at7", (mm_from_t){MM_FROM_OFFSET, 7}, &at7, NULL);
    reader(mm, "last", (mm_from_t){MM_FROM_LAST, 0}, &last, NULL);
    reader(mm, "next", (mm_from_t){MM_FROM_NEXT, 0}, &next, NULL);
    int64_t hour = (int64_t) time(NULL) * 1000 + 3600000; /* no record is that recent yet */
    reader(mm, "later", (mm_from_t){MM_FROM_TIMESTAMP, hour}, &later, NULL);
    wait_count(&first.n, 10, "records from the first");
    wait_count(&at7.n, 3, "records from offset 7");
    wait_count(&last.n, 1, "the last record");
    for (int i = 0; i < 10; i++)
        ck_assert_int_eq((int) first.offset[i], i);
    ck_assert_str_eq(first.type[0], "created");
    ck_assert_int_eq((int) at7.offset[0], 7);
    ck_assert_int_eq((int) last.offset[0], 9);
    settle_loop();
    ck_assert_int_eq(next.n + later.n, 0);
    append(mm, "updated", 1); /* every reader gets what comes next */
    wait_count(&next.n, 1, "the next record");
    wait_count(&later.n, 1, "the record after the time");
    wait_count(&first.n, 11, "the new record");
    ck_assert_int_eq((int) next.offset[0], 10);
    ck_assert_str_eq(next.type[0], "updated");
    ck_assert(!first.in_call && !next.in_call);
}
END_TEST

START_TEST(a_reader_resumes_after_its_cursor_and_filters_types)
{
    mm_t *mm = up();
    ck_assert_int_eq(mm_topic_declare(mm, "t", NULL), MM_OK);
    append(mm, "a", 5);
    mm_read_opts_t o = MM_READ_OPTS_INIT;
    o.cursor_every = 1;
    struct records r1 = {0}, r2 = {0}, only_b = {0};
    mm_reader_t *rd = reader(mm, "r", (mm_from_t){MM_FROM_CURSOR, 0}, &r1, &o); /* none: first */
    wait_count(&r1.n, 5, "the first five");
    ck_assert_int_eq((int) mm_reader_position(rd), 4);
    ck_assert_int_eq(mm_reader_stop(rd), MM_OK); /* writes the cursor */
    append(mm, "b", 3);
    reader(mm, "r", (mm_from_t){MM_FROM_CURSOR, 0}, &r2, &o);
    wait_count(&r2.n, 3, "the records after the cursor");
    ck_assert_int_eq((int) r2.offset[0], 5);
    const char *types[] = {"b"};
    o.types = types;
    o.ntypes = 1;
    reader(mm, "only-b", (mm_from_t){MM_FROM_FIRST, 0}, &only_b, &o);
    wait_count(&only_b.n, 3, "records of type b");
    settle_loop();
    ck_assert_int_eq(only_b.n, 3);
    ck_assert_str_eq(only_b.type[0], "b");
}
END_TEST

static bool
one_active(mm_reader_t *a, mm_reader_t *b)
{
    uint64_t end = mmt_now_ms() + (uint64_t) mmt_scale(WAIT_MS);
    bool never = false;
    while (mm_reader_active(a) + (b ? mm_reader_active(b) : 0) != 1 && mmt_now_ms() < end)
        mmt_wait(F.base, &never, 5);
    return mm_reader_active(a) + (b ? mm_reader_active(b) : 0) == 1;
}

START_TEST(one_reader_per_consumer_name_and_a_standby_takes_over)
{
    mm_t *writer = up(), *x = up(), *y = up();
    ck_assert_int_eq(mm_topic_declare(writer, "t", NULL), MM_OK);
    append(writer, "e", 3);
    mm_read_opts_t o = MM_READ_OPTS_INIT;
    o.cursor_every = 1;
    struct records rx = {0}, ry = {0};
    mm_reader_t *a = reader(x, "w", (mm_from_t){MM_FROM_FIRST, 0}, &rx, &o);
    mm_reader_t *b = reader(y, "w", (mm_from_t){MM_FROM_FIRST, 0}, &ry, &o);
    ck_assert(one_active(a, b));
    bool x_reads = mm_reader_active(a);
    struct records *active = x_reads ? &rx : &ry, *standby = x_reads ? &ry : &rx;
    wait_count(&active->n, 3, "records at the active reader");
    settle_loop();
    ck_assert_int_eq(standby->n, 0);
    int gone = x_reads ? 1 : 2;
    mm_free(F.mm[gone]); /* the active reader's process goes: its lock with it */
    F.mm[gone] = NULL;
    ck_assert(one_active(x_reads ? b : a, NULL));
    append(writer, "e", 2);
    wait_count(&standby->n, 2, "records at the reader that took over");
    ck_assert_int_eq((int) standby->offset[0], 3); /* after the cursor: nothing read twice */
}
END_TEST

START_TEST(topic_errors_are_the_brokers)
{
    mm_t *mm = up();
    ck_assert_int_eq(mm_topic_publish(mm, "t", "e", "\xc0", 1, NULL), MM_ENOENT);
    struct records r = {0};
    ck_assert_int_eq(
        mm_topic_read(mm, "t", "c", (mm_from_t){MM_FROM_FIRST, 0}, on_record, &r, NULL, NULL),
        MM_ENOENT);
    mm_topic_opts_t o = MM_TOPIC_OPTS_INIT;
    o.max_age_s = 3600;
    ck_assert_int_eq(mm_topic_declare(mm, "t", &o), MM_OK);
    ck_assert_int_eq(mm_topic_declare(mm, "t", &o), MM_OK);
    o.max_age_s = 7200;
    ck_assert_int_eq(mm_topic_declare(mm, "t", &o), MM_EBROKER);
    ck_assert_ptr_nonnull(strstr(mm_last_error(mm), "x-max-age"));
    ck_assert_int_eq(mm_topic_delete(mm, "t"), MM_OK);
    ck_assert_int_eq(mm_topic_delete(mm, "t"), MM_ENOENT);
}
END_TEST

/* ---- the broker underneath (internal channel API) ---- */

#define REC_MAX 64

struct rec {
    int n, nm, closed;
    struct {
        amqp_method_number_t method;
        uint64_t tag;
        bool redelivered;
        int64_t offset;
        uint16_t reply_code;
        char body[32], key[64];
    } c[REC_MAX];
    struct {
        amqp_method_number_t id;
        uint64_t tag;
        bool multiple;
    } m[REC_MAX];
    int close_code;
    char close_text[MMI_ERRBUF];
    bool closed_in_call;
};

static int64_t
offset_of(const amqp_basic_properties_t *p)
{
    for (int i = 0; p && (p->_flags & AMQP_BASIC_HEADERS_FLAG) && i < p->headers.num_entries; i++)
        if (p->headers.entries[i].key.len == 15 &&
            memcmp(p->headers.entries[i].key.bytes, "x-stream-offset", 15) == 0)
            return p->headers.entries[i].value.value.i64;
    return -1;
}

static void
rec_content(mm_t *mm, const mmi_content_t *c, void *ud)
{
    struct rec *r = ud;
    (void) mm;
    ck_assert_int_eq(in_call, 0);
    ck_assert_int_lt(r->n, REC_MAX);
    r->c[r->n].method = c->method;
    r->c[r->n].tag = c->delivery_tag;
    r->c[r->n].redelivered = c->redelivered;
    r->c[r->n].reply_code = c->reply_code;
    r->c[r->n].offset = offset_of(c->props);
    snprintf(r->c[r->n].body, sizeof r->c[r->n].body, "%.*s", (int) c->body.len,
             (const char *) c->body.bytes);
    snprintf(r->c[r->n].key, sizeof r->c[r->n].key, "%.*s", (int) c->routing_key.len,
             (const char *) c->routing_key.bytes);
    r->n++;
}

static void
rec_method(mm_t *mm, uint16_t ch, const amqp_method_t *m, void *ud)
{
    struct rec *r = ud;
    (void) mm;
    (void) ch;
    ck_assert_int_eq(in_call, 0);
    ck_assert_int_lt(r->nm, REC_MAX);
    r->m[r->nm].id = m->id;
    if (m->id == AMQP_BASIC_ACK_METHOD || m->id == AMQP_BASIC_NACK_METHOD) {
        const amqp_basic_ack_t *a = m->decoded; /* nack starts the same way */
        r->m[r->nm].tag = a->delivery_tag;
        r->m[r->nm].multiple = a->multiple;
    }
    r->nm++;
}

static void
rec_closed(mm_t *mm, uint16_t ch, int code, const char *text, void *ud)
{
    struct rec *r = ud;
    (void) ch;
    if (code == MM_ECLOSED)
        return; /* the connection's end (the test's own close, or teardown: r may be gone) */
    r->closed++;
    r->closed_in_call = in_call > 0;
    r->close_code = mm->last_close_code;
    snprintf(r->close_text, sizeof r->close_text, "%s", text);
}

static const mmi_chan_ops_t REC_OPS = {
    .on_content = rec_content, .on_method = rec_method, .on_closed = rec_closed, .quiet = true};

static uint16_t
chan(mm_t *mm, struct rec *r)
{
    uint16_t ch = 0;
    ck_assert_msg(mmi_chan_open(mm, &REC_OPS, r, &ch) == MM_OK, "%s", mm_last_error(mm));
    return ch;
}

static void
declare(mm_t *mm, uint16_t ch, const char *q, unsigned flags, const amqp_table_t *args)
{
    ck_assert_msg(mmi_queue_declare(mm, ch, q, flags, args, NULL) == MM_OK, "%s",
                  mm_last_error(mm));
}

static void
pub(mm_t *mm, uint16_t ch, const char *x, const char *key, bool mandatory, const char *body)
{
    amqp_basic_properties_t p = {0};
    ck_assert_int_eq(CALL(mmi_publish(mm, ch, x, key, mandatory, &p, amqp_cstring_bytes(body))),
                     MM_OK);
}

static void
consume(mm_t *mm, uint16_t ch, const char *q, uint16_t prefetch, const amqp_table_t *args)
{
    if (prefetch > 0)
        ck_assert_int_eq(mmi_basic_qos(mm, ch, prefetch), MM_OK);
    amqp_basic_consume_t req = {.queue = amqp_cstring_bytes(q),
                                .arguments = args ? *args : amqp_empty_table};
    ck_assert_msg(CALL(mmi_rpc(mm, ch, AMQP_BASIC_CONSUME_METHOD, &req,
                               AMQP_BASIC_CONSUME_OK_METHOD, NULL)) == MM_OK,
                  "%s", mm_last_error(mm));
}

static bool
got(const struct rec *r, int n)
{
    wait_count(&r->n, n, "messages");
    return true;
}

static bool
got_methods(const struct rec *r, int n)
{
    wait_count(&r->nm, n, "methods");
    return true;
}

START_TEST(a_passive_declare_of_a_missing_queue_closes_only_its_channel_with_404)
{
    mm_t *mm = up();
    struct rec a = {0}, b = {0};
    uint16_t ca = chan(mm, &a), cb = chan(mm, &b);
    ck_assert_int_eq(CALL(mmi_queue_declare(mm, ca, "nope", MMI_Q_PASSIVE, NULL, NULL)),
                     MM_ECHANNEL);
    ck_assert_int_eq(a.closed, 1);
    ck_assert(a.closed_in_call); /* as the AMQP transport: the reply to the call */
    ck_assert_int_eq(a.close_code, 404);
    ck_assert_ptr_nonnull(strstr(a.close_text, "NOT_FOUND - no queue 'nope'"));
    ck_assert(!mmi_chan_is_open(mm, ca));
    declare(mm, cb, "yes", MMI_Q_DURABLE, NULL); /* the other channel lives on */
    ck_assert_int_eq(b.closed, 0);
}
END_TEST

START_TEST(an_exclusive_queue_is_locked_to_other_connections_with_405)
{
    mm_t *owner = up(), *other = up();
    struct rec a = {0}, b = {0};
    declare(owner, chan(owner, &a), "mine", MMI_Q_EXCLUSIVE, NULL);
    uint16_t cb = chan(other, &b);
    ck_assert_int_eq(mmi_queue_declare(other, cb, "mine", MMI_Q_EXCLUSIVE, NULL, NULL),
                     MM_ECHANNEL);
    ck_assert_int_eq(b.close_code, 405);
    ck_assert_ptr_nonnull(strstr(b.close_text, "RESOURCE_LOCKED"));
    cb = chan(other, &b); /* nor consumed, bound or read by them */
    ck_assert_int_eq(mmi_basic_consume(other, cb, "mine", false, false, NULL, 0), MM_ECHANNEL);
    ck_assert_int_eq(b.close_code, 405);
    cb = chan(other, &b);
    ck_assert_int_eq(mmi_queue_bind(other, cb, "mine", "amq.topic", "#"), MM_ECHANNEL);
    ck_assert_int_eq(b.close_code, 405);
    mm_close(owner); /* the owner's connection ends: the queue goes with it */
    cb = chan(other, &b);
    declare(other, cb, "mine", MMI_Q_EXCLUSIVE, NULL);
}
END_TEST

static amqp_table_entry_t
int_arg(const char *key, int kind, int64_t v)
{
    amqp_table_entry_t e = {.key = amqp_cstring_bytes(key), .value = {.kind = (uint8_t) kind}};
    if (kind == AMQP_FIELD_KIND_I32)
        e.value.value.i32 = (int32_t) v;
    else
        e.value.value.i64 = v;
    return e;
}

START_TEST(a_redeclare_must_be_equivalent_else_406_and_integer_types_are_one_class)
{
    mm_t *mm = up();
    struct rec r = {0};
    amqp_table_entry_t e32 = int_arg("x-expires", AMQP_FIELD_KIND_I32, 1000),
                       e64 = int_arg("x-expires", AMQP_FIELD_KIND_I64, 1000),
                       other = int_arg("x-expires", AMQP_FIELD_KIND_I64, 2000);
    amqp_table_t t32 = {1, &e32}, t64 = {1, &e64}, tother = {1, &other};
    uint16_t ch = chan(mm, &r);
    declare(mm, ch, "q", MMI_Q_DURABLE, &t32);
    declare(mm, ch, "q", MMI_Q_DURABLE, &t64);
    ck_assert_int_eq(mmi_queue_declare(mm, ch, "q", MMI_Q_DURABLE, &tother, NULL), MM_ECHANNEL);
    ck_assert_int_eq(r.close_code, 406);
    ck_assert_ptr_nonnull(strstr(r.close_text, "inequivalent arg 'x-expires'"));
    ch = chan(mm, &r);
    ck_assert_int_eq(mmi_queue_declare(mm, ch, "q", 0, &t32, NULL), MM_ECHANNEL);
    ck_assert_ptr_nonnull(strstr(r.close_text, "inequivalent arg 'durable'"));
    ch = chan(mm, &r);
    ck_assert_int_eq(mmi_queue_declare(mm, ch, "q", MMI_Q_DURABLE, NULL, NULL), MM_ECHANNEL);
    ck_assert_int_eq(r.close_code, 406); /* a missing argument differs too */
}
END_TEST

START_TEST(prefetch_bounds_each_consumer_and_a_multiple_ack_makes_room)
{
    mm_t *mm = up();
    struct rec r = {0};
    uint16_t ch = chan(mm, &r);
    declare(mm, ch, "q", MMI_Q_DURABLE, NULL);
    for (int i = 0; i < 10; i++)
        pub(mm, ch, "", "q", false, "m");
    consume(mm, ch, "q", 3, NULL);
    ck_assert(got(&r, 3));
    settle_loop();
    ck_assert_int_eq(r.n, 3); /* never more than the prefetch out */
    ck_assert_int_eq(CALL(mmi_basic_ack(mm, ch, r.c[1].tag, true)), MM_OK); /* the first two */
    ck_assert(got(&r, 5));
    settle_loop();
    ck_assert_int_eq(r.n, 5);
    for (int i = 0; i < 5; i++)
        ck_assert_uint_eq(r.c[i].tag, (uint64_t) i + 1); /* tags count from 1 per channel */
}
END_TEST

static void
numbered(mm_t *mm, uint16_t ch, const char *q, int n)
{
    for (int i = 0; i < n; i++) {
        char b[16];
        snprintf(b, sizeof b, "%d", i);
        pub(mm, ch, "", q, false, b);
    }
}

START_TEST(consumers_with_room_take_turns)
{
    mm_t *mm = up();
    struct rec a = {0}, b = {0};
    uint16_t ca = chan(mm, &a), cb = chan(mm, &b);
    declare(mm, ca, "q", MMI_Q_DURABLE, NULL);
    consume(mm, ca, "q", 10, NULL);
    consume(mm, cb, "q", 10, NULL);
    numbered(mm, ca, "q", 4);
    ck_assert(got(&a, 2) && got(&b, 2));
    settle_loop();
    ck_assert_int_eq(a.n, 2); /* round robin, not the first one until it is full */
    ck_assert_str_eq(a.c[0].body, "0");
    ck_assert_str_eq(b.c[0].body, "1");
    ck_assert_str_eq(a.c[1].body, "2");
}
END_TEST

START_TEST(what_a_consumer_without_acks_got_is_gone)
{
    mm_t *mm = up();
    struct rec a = {0}, b = {0};
    uint16_t ca = chan(mm, &a), cb = chan(mm, &b);
    declare(mm, ca, "q", MMI_Q_DURABLE, NULL);
    ck_assert_int_eq(mmi_basic_consume(mm, ca, "q", true, false, NULL, 0), MM_OK);
    numbered(mm, ca, "q", 3);
    ck_assert(got(&a, 3));
    ck_assert_int_eq(mmi_chan_close(mm, ca), MM_OK); /* nothing is out: nothing comes back */
    consume(mm, cb, "q", 10, NULL);
    pub(mm, cb, "", "q", false, "end");
    ck_assert(got(&b, 1));
    settle_loop();
    ck_assert_int_eq(b.n, 1);
    ck_assert_str_eq(b.c[0].body, "end");
}
END_TEST

START_TEST(a_nack_with_requeue_puts_the_message_back_in_its_place_redelivered)
{
    mm_t *mm = up();
    struct rec r = {0};
    uint16_t ch = chan(mm, &r);
    declare(mm, ch, "q", MMI_Q_DURABLE, NULL);
    numbered(mm, ch, "q", 3);
    consume(mm, ch, "q", 1, NULL);
    ck_assert(got(&r, 1));
    ck_assert_str_eq(r.c[0].body, "0");
    ck_assert_int_eq(CALL(mmi_basic_nack(mm, ch, r.c[0].tag, false, true)), MM_OK);
    ck_assert(got(&r, 2));
    ck_assert_str_eq(r.c[1].body, "0"); /* at the head again, before "1" */
    ck_assert(r.c[1].redelivered);
    ck_assert(!r.c[0].redelivered);
    ck_assert_int_eq(mmi_basic_nack(mm, ch, r.c[1].tag, false, false), MM_OK); /* dropped */
    ck_assert(got(&r, 3));
    ck_assert_str_eq(r.c[2].body, "1");
    ck_assert(!r.c[2].redelivered);
}
END_TEST

START_TEST(a_closed_channel_gives_back_what_it_held_in_order_redelivered)
{
    mm_t *a = up(), *b = up();
    struct rec ra = {0}, rb = {0};
    uint16_t ca = chan(a, &ra), cb = chan(b, &rb);
    declare(a, ca, "q", MMI_Q_DURABLE, NULL);
    numbered(a, ca, "q", 4);
    consume(a, ca, "q", 2, NULL);
    ck_assert(got(&ra, 2));
    consume(b, cb, "q", 10, NULL);
    ck_assert(got(&rb, 2)); /* "2" and "3" */
    ck_assert_int_eq(mmi_chan_close(a, ca), MM_OK);
    ck_assert(got(&rb, 4));
    ck_assert_str_eq(rb.c[2].body, "0");
    ck_assert_str_eq(rb.c[3].body, "1");
    ck_assert(rb.c[2].redelivered && rb.c[3].redelivered && !rb.c[0].redelivered);
}
END_TEST

static uint16_t
confirm_chan(mm_t *mm, struct rec *r)
{
    uint16_t ch = chan(mm, r);
    amqp_confirm_select_t req = {0};
    ck_assert_int_eq(
        mmi_rpc(mm, ch, AMQP_CONFIRM_SELECT_METHOD, &req, AMQP_CONFIRM_SELECT_OK_METHOD, NULL),
        MM_OK);
    return ch;
}

START_TEST(confirms_count_from_one_and_a_return_comes_before_its_ack)
{
    mm_t *mm = up();
    struct rec r = {0};
    uint16_t ch = confirm_chan(mm, &r);
    declare(mm, ch, "q", MMI_Q_DURABLE, NULL);
    pub(mm, ch, "", "q", true, "routed");
    pub(mm, ch, "", "nowhere", true, "returned");
    pub(mm, ch, "", "nowhere", false, "dropped");
    ck_assert_int_eq(r.n + r.nm, 0); /* nothing inside the calls */
    ck_assert(got_methods(&r, 3));
    ck_assert_int_eq(r.n, 1);
    ck_assert_int_eq(r.c[0].method, AMQP_BASIC_RETURN_METHOD);
    ck_assert_int_eq(r.c[0].reply_code, 312);
    ck_assert_str_eq(r.c[0].body, "returned");
    ck_assert_str_eq(r.c[0].key, "nowhere");
    for (int i = 0; i < 3; i++) {
        ck_assert_int_eq(r.m[i].id, AMQP_BASIC_ACK_METHOD); /* a returned message is acked */
        ck_assert_uint_eq(r.m[i].tag, (uint64_t) i + 1);
    }
}
END_TEST

START_TEST(a_publish_to_a_missing_exchange_closes_the_channel_from_the_loop)
{
    mm_t *mm = up();
    struct rec r = {0}, s2 = {0};
    uint16_t ch = chan(mm, &r);
    declare(mm, ch, "k", MMI_Q_DURABLE, NULL);
    pub(mm, ch, "x.none", "k", false, "lost");
    ck_assert_int_eq(r.closed, 0);
    pub(mm, ch, "", "k", false, "ignored"); /* the broker hears nothing more on it */
    bool never = false;
    mmt_wait(F.base, &never, 20);
    ck_assert_int_eq(r.closed, 1);
    ck_assert(!r.closed_in_call);
    ck_assert_int_eq(r.close_code, 404);
    ck_assert_ptr_nonnull(strstr(r.close_text, "no exchange 'x.none'"));
    ck_assert(!mmi_chan_is_open(mm, ch));
    uint32_t n = 9;
    ch = chan(mm, &s2);
    ck_assert_int_eq(mmi_queue_declare(mm, ch, "k", MMI_Q_PASSIVE, NULL, &n), MM_OK);
    ck_assert_int_eq((int) n, 0);
}
END_TEST

START_TEST(a_method_on_a_channel_the_broker_closed_gets_that_close)
{
    mm_t *mm = up();
    struct rec r = {0};
    uint16_t ch = chan(mm, &r);
    pub(mm, ch, "x.none", "k", false, "lost"); /* closed by the broker, not yet heard */
    ck_assert_int_eq(CALL(mmi_queue_declare(mm, ch, "q", MMI_Q_DURABLE, NULL, NULL)), MM_ECHANNEL);
    ck_assert_int_eq(r.closed, 1);
    ck_assert(r.closed_in_call); /* the answer to the call, as on the AMQP transport */
    ck_assert_int_eq(r.close_code, 404);
    ck_assert_ptr_nonnull(strstr(mm_last_error(mm), "no exchange 'x.none'"));
    settle_loop();
    ck_assert_int_eq(r.closed, 1); /* once */
    mm_stat_t st;
    ck_assert_int_eq(mmi_queue_stat(mm, "q", &st), MM_ENOENT); /* the declare never happened */
}
END_TEST

START_TEST(an_ack_of_an_unknown_tag_closes_the_channel_with_406)
{
    mm_t *mm = up();
    struct rec r = {0};
    uint16_t ch = chan(mm, &r);
    ck_assert_int_eq(CALL(mmi_basic_ack(mm, ch, 42, false)), MM_OK);
    ck_assert_int_eq(r.closed, 0);
    bool never = false;
    mmt_wait(F.base, &never, 20);
    ck_assert_int_eq(r.closed, 1);
    ck_assert_int_eq(r.close_code, 406);
    ck_assert_ptr_nonnull(strstr(r.close_text, "unknown delivery tag 42"));
}
END_TEST

static amqp_table_entry_t
bool_arg(const char *key)
{
    return (amqp_table_entry_t){.key = amqp_cstring_bytes(key),
                                .value = {.kind = AMQP_FIELD_KIND_BOOLEAN, .value.boolean = 1}};
}

START_TEST(a_single_active_consumer_hands_over_when_it_leaves)
{
    mm_t *a = up(), *b = up();
    struct rec ra = {0}, rb = {0};
    uint16_t ca = chan(a, &ra), cb = chan(b, &rb);
    amqp_table_entry_t sac = bool_arg("x-single-active-consumer");
    amqp_table_t args = {1, &sac};
    declare(a, ca, "sac", MMI_Q_AUTO_DELETE, &args);
    consume(a, ca, "sac", 1, NULL);
    consume(b, cb, "sac", 1, NULL);
    pub(a, ca, "", "sac", false, "token");
    pub(a, ca, "", "sac", false, "second");
    ck_assert(got(&ra, 1));
    settle_loop();
    ck_assert_int_eq(rb.n, 0); /* only the active one, though it has no room */
    mm_free(a);                /* its connection ends: the token goes to the next in line */
    F.mm[0] = NULL;
    ck_assert(got(&rb, 1));
    ck_assert_str_eq(rb.c[0].body, "token");
    ck_assert(rb.c[0].redelivered);
}
END_TEST

START_TEST(an_auto_delete_queue_goes_with_its_last_consumer)
{
    mm_t *mm = up();
    struct rec r = {0};
    uint16_t ch = chan(mm, &r);
    declare(mm, ch, "ad", MMI_Q_AUTO_DELETE, NULL);
    declare(mm, ch, "ad", MMI_Q_AUTO_DELETE | MMI_Q_PASSIVE, NULL); /* no consumer yet: kept */
    char tag[128];
    ck_assert_int_eq(mmi_basic_consume(mm, ch, "ad", false, false, tag, sizeof tag), MM_OK);
    ck_assert_int_eq(mmi_basic_cancel(mm, ch, tag), MM_OK);
    mm_stat_t st;
    ck_assert_int_eq(mmi_queue_stat(mm, "ad", &st), MM_ENOENT);
}
END_TEST

START_TEST(x_max_length_one_drops_the_head_and_basic_get_reads_the_last)
{
    mm_t *mm = up();
    struct rec r = {0};
    uint16_t ch = chan(mm, &r);
    amqp_table_entry_t one = int_arg("x-max-length", AMQP_FIELD_KIND_I64, 1);
    amqp_table_t args = {1, &one};
    declare(mm, ch, "cursor", MMI_Q_DURABLE, &args);
    numbered(mm, ch, "cursor", 3);
    amqp_basic_get_t get = {.queue = amqp_cstring_bytes("cursor")};
    ck_assert_int_eq(CALL(mmi_send_method(mm, ch, AMQP_BASIC_GET_METHOD, &get)), MM_OK);
    ck_assert_int_eq(r.n, 0);
    ck_assert(got(&r, 1));
    ck_assert_int_eq(r.c[0].method, AMQP_BASIC_GET_OK_METHOD);
    ck_assert_str_eq(r.c[0].body, "2");
    ck_assert_int_eq(mmi_send_method(mm, ch, AMQP_BASIC_GET_METHOD, &get), MM_OK);
    ck_assert(got_methods(&r, 1));
    ck_assert_int_eq(r.m[0].id, AMQP_BASIC_GET_EMPTY_METHOD); /* the get-ok one is out */
}
END_TEST

START_TEST(deleting_a_consumed_queue_cancels_its_consumers)
{
    mm_t *a = up(), *b = up();
    struct rec ra = {0}, rb = {0};
    uint16_t ca = chan(a, &ra), cb = chan(b, &rb);
    declare(a, ca, "q", MMI_Q_DURABLE, NULL);
    consume(a, ca, "q", 1, NULL);
    ck_assert_int_eq(CALL(mmi_queue_delete(b, cb, "q")), MM_OK);
    ck_assert_int_eq(ra.nm, 0);
    ck_assert(got_methods(&ra, 1));
    ck_assert_int_eq(ra.m[0].id, AMQP_BASIC_CANCEL_METHOD);
}
END_TEST

START_TEST(an_exclusive_consumer_keeps_others_out_with_403)
{
    mm_t *mm = up();
    struct rec a = {0}, b = {0};
    uint16_t ca = chan(mm, &a), cb = chan(mm, &b);
    declare(mm, ca, "q", MMI_Q_DURABLE, NULL);
    ck_assert_int_eq(mmi_basic_consume(mm, ca, "q", false, true, NULL, 0), MM_OK);
    ck_assert_int_eq(mmi_basic_consume(mm, cb, "q", false, false, NULL, 0), MM_ECHANNEL);
    ck_assert_int_eq(b.close_code, 403);
    ck_assert_ptr_nonnull(strstr(b.close_text, "in exclusive use"));
}
END_TEST

static amqp_table_t
offset_args(amqp_table_entry_t *e, amqp_field_value_t v)
{
    *e = (amqp_table_entry_t){.key = amqp_cstring_bytes("x-stream-offset"), .value = v};
    return (amqp_table_t){1, e};
}

static amqp_field_value_t
str_value(const char *s)
{
    return (amqp_field_value_t){.kind = AMQP_FIELD_KIND_UTF8, .value.bytes = amqp_cstring_bytes(s)};
}

/* A reader of stream "s" from `from` on its own channel: what it got. */
static void
read_stream(mm_t *mm, struct rec *r, amqp_field_value_t from, int expect)
{
    amqp_table_entry_t e;
    amqp_table_t args = offset_args(&e, from);
    uint16_t ch = chan(mm, r);
    consume(mm, ch, "s", 2, &args);
    for (int i = 0; i < expect; i++) { /* acked one by one: the prefetch (2) makes them wait */
        ck_assert(got(r, i + 1));
        ck_assert_int_eq(CALL(mmi_basic_ack(mm, ch, r->c[i].tag, false)), MM_OK);
    }
    settle_loop();
    ck_assert_int_eq(r->n, expect);
}

START_TEST(stream_readers_start_where_x_stream_offset_says)
{
    mm_t *mm = up();
    struct rec w = {0};
    uint16_t ch = chan(mm, &w);
    amqp_table_entry_t t = {.key = amqp_cstring_bytes("x-queue-type"),
                            .value = str_value("stream")};
    amqp_table_t args = {1, &t};
    declare(mm, ch, "s", MMI_Q_DURABLE, &args);
    numbered(mm, ch, "s", 5);
    struct rec first = {0}, last = {0}, at = {0}, next = {0};
    read_stream(mm, &first, str_value("first"), 5); /* past its prefetch of 2: acks make room */
    for (int i = 0; i < 5; i++)
        ck_assert_int_eq((int) first.c[i].offset, i);
    read_stream(mm, &last, str_value("last"), 1);
    ck_assert_str_eq(last.c[0].body, "4");
    read_stream(mm, &at, (amqp_field_value_t){.kind = AMQP_FIELD_KIND_I64, .value.i64 = 3}, 2);
    ck_assert_int_eq((int) at.c[0].offset, 3);
    read_stream(mm, &next, str_value("next"), 0);
    pub(mm, ch, "", "s", false, "5");
    ck_assert(got(&next, 1) && got(&first, 6)); /* every reader gets the new record */
    ck_assert_int_eq((int) next.c[0].offset, 5);
    ck_assert_int_eq(mmi_queue_declare(mm, ch, "s2", MMI_Q_EXCLUSIVE | MMI_Q_DURABLE, &args, NULL),
                     MM_ECHANNEL); /* a stream is durable and shared */
}
END_TEST

START_TEST(stream_retention_drops_whole_old_segments)
{
    mm_t *mm = up();
    struct rec w = {0}, r = {0};
    uint16_t ch = chan(mm, &w);
    amqp_table_entry_t e[3] = {
        {.key = amqp_cstring_bytes("x-queue-type"), .value = str_value("stream")},
        int_arg("x-stream-max-segment-size-bytes", AMQP_FIELD_KIND_I64, 20),
        int_arg("x-max-length-bytes", AMQP_FIELD_KIND_I64, 45)};
    amqp_table_t args = {3, e};
    declare(mm, ch, "s", MMI_Q_DURABLE, &args);
    for (int i = 0; i < 5; i++) /* 10 bytes each: two records a segment */
        pub(mm, ch, "", "s", false, "0123456789");
    /* The fifth opens a third segment with 50 bytes in all: the first segment
     * goes whole (0 and 1), though dropping 0 alone would do. */
    read_stream(mm, &r, str_value("first"), 3);
    ck_assert_int_eq((int) r.c[0].offset, 2);
    ck_assert_int_eq((int) r.c[2].offset, 4);
}
END_TEST

START_TEST(topic_bindings_match_like_amqp)
{
    mm_t *mm = up();
    struct rec star = {0}, hash = {0};
    uint16_t cs = chan(mm, &star), ch = chan(mm, &hash);
    ck_assert_int_eq(mmi_exchange_declare(mm, cs, "x.t", "topic", true), MM_OK);
    declare(mm, cs, "star", MMI_Q_DURABLE, NULL);
    declare(mm, ch, "hash", MMI_Q_DURABLE, NULL);
    ck_assert_int_eq(mmi_queue_bind(mm, cs, "star", "x.t", "a.*"), MM_OK);
    ck_assert_int_eq(mmi_queue_bind(mm, ch, "hash", "x.t", "a.#"), MM_OK);
    ck_assert_int_eq(mmi_queue_bind(mm, ch, "hash", "x.t", "#.c"), MM_OK); /* one copy only */
    consume(mm, cs, "star", 0, NULL);
    consume(mm, ch, "hash", 0, NULL);
    const char *keys[] = {"a", "a.b", "a.b.c", "b.c"};
    for (int i = 0; i < 4; i++)
        pub(mm, cs, "x.t", keys[i], false, keys[i]);
    pub(mm, cs, "", "hash", false, "end");
    ck_assert(got(&hash, 5));
    settle_loop();
    ck_assert_int_eq(star.n, 1);
    ck_assert_str_eq(star.c[0].key, "a.b");
    ck_assert_int_eq(hash.n, 5); /* a, a.b, a.b.c (once), b.c, end */
    ck_assert_int_eq(mmi_exchange_declare(mm, cs, "x.t", "direct", true), MM_ECHANNEL);
    ck_assert_int_eq(star.close_code, 406);
}
END_TEST

START_TEST(an_expired_message_is_dropped_before_delivery)
{
    mm_t *mm = up();
    struct rec r = {0};
    uint16_t ch = chan(mm, &r);
    declare(mm, ch, "q", MMI_Q_DURABLE, NULL);
    amqp_basic_properties_t p = {._flags = AMQP_BASIC_EXPIRATION_FLAG,
                                 .expiration = amqp_cstring_bytes("1")};
    ck_assert_int_eq(mmi_publish(mm, ch, "", "q", false, &p, amqp_cstring_bytes("old")), MM_OK);
    pub(mm, ch, "", "q", false, "fresh");
    bool never = false;
    mmt_wait(F.base, &never, 20); /* the subject: time passing past the 1 ms expiration */
    uint32_t n = 0;
    ck_assert_int_eq(mmi_queue_declare(mm, ch, "q", MMI_Q_PASSIVE, NULL, &n), MM_OK);
    ck_assert_int_eq((int) n, 1);
    consume(mm, ch, "q", 0, NULL);
    ck_assert(got(&r, 1));
    ck_assert_str_eq(r.c[0].body, "fresh");
}
END_TEST

START_TEST(a_full_queue_with_reject_publish_nacks)
{
    mm_t *mm = up();
    struct rec r = {0};
    uint16_t ch = confirm_chan(mm, &r);
    amqp_table_entry_t e[2] = {
        int_arg("x-max-length", AMQP_FIELD_KIND_I32, 1),
        {.key = amqp_cstring_bytes("x-overflow"), .value = str_value("reject-publish")}};
    amqp_table_t args = {2, e};
    declare(mm, ch, "full", MMI_Q_DURABLE, &args);
    pub(mm, ch, "", "full", false, "in");
    pub(mm, ch, "", "full", false, "out");
    ck_assert(got_methods(&r, 2));
    ck_assert_int_eq(r.m[0].id, AMQP_BASIC_ACK_METHOD);
    ck_assert_int_eq(r.m[1].id, AMQP_BASIC_NACK_METHOD);
    ck_assert_uint_eq(r.m[1].tag, 2);
}
END_TEST

int
main(void)
{
    Suite *s = suite_create("memory");
    TCase *api = mmt_tcase(s, "api", setup, teardown, 30);
    tcase_add_test(api, no_socket_is_opened_and_every_kind_of_message_flows);
    tcase_add_test(api, a_bad_memory_uri_is_refused_with_a_reason);
    tcase_add_test(api, brokers_of_other_names_are_isolated);
    tcase_add_test(api, a_broker_and_its_queues_live_while_an_instance_holds_it);
    tcase_add_test(api, callbacks_never_run_inside_the_call_that_caused_them);
    tcase_add_test(api, unsettled_work_goes_to_another_instance_when_its_route_stops);
    tcase_add_test(api, a_redrive_moves_dead_letters_back_to_their_queue);
    tcase_add_test(api, the_election_works_between_instances_of_one_process);
    tcase_add_test(api, brokers_of_other_names_live_in_other_threads);
    TCase *t = mmt_tcase(s, "topics", setup, teardown, 30);
    tcase_add_test(t, topics_replay_from_first_an_offset_the_last_next_or_a_time);
    tcase_add_test(t, a_reader_resumes_after_its_cursor_and_filters_types);
    tcase_add_test(t, one_reader_per_consumer_name_and_a_standby_takes_over);
    tcase_add_test(t, topic_errors_are_the_brokers);
    TCase *b = mmt_tcase(s, "broker", setup, teardown, 30);
    tcase_add_test(b, a_passive_declare_of_a_missing_queue_closes_only_its_channel_with_404);
    tcase_add_test(b, an_exclusive_queue_is_locked_to_other_connections_with_405);
    tcase_add_test(b, a_redeclare_must_be_equivalent_else_406_and_integer_types_are_one_class);
    tcase_add_test(b, prefetch_bounds_each_consumer_and_a_multiple_ack_makes_room);
    tcase_add_test(b, consumers_with_room_take_turns);
    tcase_add_test(b, what_a_consumer_without_acks_got_is_gone);
    tcase_add_test(b, a_nack_with_requeue_puts_the_message_back_in_its_place_redelivered);
    tcase_add_test(b, a_closed_channel_gives_back_what_it_held_in_order_redelivered);
    tcase_add_test(b, confirms_count_from_one_and_a_return_comes_before_its_ack);
    tcase_add_test(b, a_publish_to_a_missing_exchange_closes_the_channel_from_the_loop);
    tcase_add_test(b, a_method_on_a_channel_the_broker_closed_gets_that_close);
    tcase_add_test(b, an_ack_of_an_unknown_tag_closes_the_channel_with_406);
    tcase_add_test(b, a_single_active_consumer_hands_over_when_it_leaves);
    tcase_add_test(b, an_auto_delete_queue_goes_with_its_last_consumer);
    tcase_add_test(b, x_max_length_one_drops_the_head_and_basic_get_reads_the_last);
    tcase_add_test(b, deleting_a_consumed_queue_cancels_its_consumers);
    tcase_add_test(b, an_exclusive_consumer_keeps_others_out_with_403);
    tcase_add_test(b, stream_readers_start_where_x_stream_offset_says);
    tcase_add_test(b, stream_retention_drops_whole_old_segments);
    tcase_add_test(b, topic_bindings_match_like_amqp);
    tcase_add_test(b, an_expired_message_is_dropped_before_delivery);
    tcase_add_test(b, a_full_queue_with_reject_publish_nacks);
    return mmt_run(s);
}
