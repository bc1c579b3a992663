/* Integration, run alone (it disturbs the shared harness broker): a dead
 * connection is detected and reported when the broker application stops and
 * when the broker freezes (missed heartbeats), and the instance can connect
 * again once the broker is back. */
#include <check.h>
#include <event2/event.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "internal.h"
#include "mmt.h"

struct seen {
    bool disconnected;
    int code;
    char text[256];
};

static void
on_event(mm_t *mm, const mm_event_t *ev, void *ud)
{
    struct seen *s = ud;
    (void) mm;
    if (ev->type != MM_EV_DISCONNECTED)
        return;
    s->disconnected = true;
    s->code = ev->code;
    snprintf(s->text, sizeof s->text, "%s", ev->text);
}

static mm_t *
connect_watched(struct seen *s, const char *uri)
{
    mm_opts_t o = MM_OPTS_INIT;
    o.on_event = on_event;
    o.event_ud = s;
    o.flags = MM_OPT_NO_RECONNECT; /* these tests are about detecting the loss */
    mm_t *mm = mm_new("t-fault", &o);
    ck_assert_int_eq(mm_connect(mm, uri), MM_OK);
    return mm;
}

static pid_t
broker_pid(void)
{
    const char *p = getenv("MM_TEST_BROKER_PID");
    ck_assert_msg(p != NULL, "MM_TEST_BROKER_PID is not set: run through tests/harness/broker.sh");
    return (pid_t) atol(p);
}

static void
thaw_broker(void)
{
    if (getenv("MM_TEST_BROKER_PID") != NULL)
        kill(broker_pid(), SIGCONT);
}

START_TEST(stopped_broker_app_is_reported_and_connect_works_after_start)
{
    struct seen s = {0};
    mm_t *mm = connect_watched(&s, mmt_uri());
    ck_assert_int_eq(mmt_ctl("stop_app"), 0);
    int rc = mm_run(mm); /* returns when the loop sees the connection die */
    ck_assert_int_eq(mmt_ctl("start_app"), 0);
    ck_assert_int_eq(rc, MM_EDISCONNECTED);
    ck_assert(s.disconnected);
    /* Seen by a read (the broker's connection.close: CONNECTION_FORCED), or by a
     * write (a heartbeat of the peers module) finding the socket closed. */
    ck_assert_msg(strstr(s.text, "CONNECTION_FORCED") != NULL || s.code == MM_EDISCONNECTED ||
                      (s.code == MM_EUNREACHABLE && strstr(s.text, "socket") != NULL),
                  "%s: %s", mm_err_name(s.code), s.text);
    ck_assert(!mm_is_connected(mm));
    ck_assert_int_eq(mm_connect(mm, mmt_uri()), MM_OK); /* retries until the app is up */
    mm_free(mm);
}
END_TEST

START_TEST(frozen_broker_is_detected_by_missed_heartbeats)
{
    char uri[512];
    snprintf(uri, sizeof uri, "%s?heartbeat=1", mmt_uri());
    struct seen s = {0};
    mm_t *mm = connect_watched(&s, uri);
    ck_assert_int_eq(mm_heartbeat(mm), 1);
    ck_assert_int_eq(kill(broker_pid(), SIGSTOP), 0);
    uint64_t t0 = mmi_now_ms();
    bool seen = mmt_wait(mm->base, &s.disconnected, mmt_scale(10000));
    uint64_t took = mmi_now_ms() - t0;
    thaw_broker();
    ck_assert_msg(seen, "a frozen broker went unnoticed for %llu ms", (unsigned long long) took);
    ck_assert_int_eq(s.code, MM_ETIMEDOUT);
    ck_assert_uint_ge(took, 1000); /* not before the broker could have been late */
    ck_assert(!mm_is_connected(mm));
    mm_free(mm);
}
END_TEST

struct flow {
    bool blocked, unblocked;
};

static void
on_flow(mm_t *mm, const mm_event_t *ev, void *ud)
{
    struct flow *f = ud;
    (void) mm;
    if (ev->type == MM_EV_BLOCKED)
        f->blocked = true;
    if (ev->type == MM_EV_UNBLOCKED)
        f->unblocked = true;
}

static void
restore_watermark(void)
{
    if (getenv("MM_TEST_CTL") != NULL)
        mmt_ctl("set_vm_memory_high_watermark 0.4");
}

struct sent {
    bool done;
    int status;
};

static void
on_sent(mm_t *mm, int status, void *ud)
{
    struct sent *s = ud;
    (void) mm;
    s->done = true;
    s->status = status;
}

/* An event nobody listens to, with the broker's verdict (dropped, yet confirmed). */
static void
emit_confirmed(mm_t *mm, struct sent *s)
{
    mm_send_opts_t so = MM_SEND_OPTS_INIT;
    so.on_sent = on_sent;
    so.sent_ud = s;
    ck_assert_int_eq(mm_emit(mm, NULL, "nowhere", NULL, 0, &so), MM_OK);
}

/* Needs the connection.blocked capability: a memory alarm blocks publishers.
 * While blocked nothing is written: a send returns at once, waits in the
 * buffer, and goes out when the broker unblocks the connection. */
START_TEST(memory_alarm_blocks_and_unblocks_publishing)
{
    struct flow f = {0};
    mm_opts_t o = MM_OPTS_INIT;
    o.on_event = on_flow;
    o.event_ud = &f;
    mm_t *mm = mm_new("t-fault", &o);
    ck_assert_int_eq(mm_connect(mm, mmt_uri()), MM_OK);
    ck_assert_int_eq(mmt_ctl("set_vm_memory_high_watermark 0.000001"), 0);
    /* The broker blocks a connection when it publishes during the alarm, and
     * stops reading right after that basic.publish: it stays unconfirmed. */
    struct sent first = {0}, second = {0};
    emit_confirmed(mm, &first);
    MMT_WAIT(mm->base, f.blocked, mmt_scale(10000));
    ck_assert(mm->blocked);
    ck_assert_uint_eq(mm_unconfirmed(mm), 1);
    emit_confirmed(mm, &second); /* buffered, not written */
    ck_assert_uint_eq(mm_unconfirmed(mm), 2);
    restore_watermark();
    MMT_WAIT(mm->base, f.unblocked, mmt_scale(10000));
    ck_assert(!mm->blocked);
    MMT_WAIT(mm->base, second.done, mmt_scale(10000));
    ck_assert(first.done);
    ck_assert_int_eq(first.status, MM_OK);
    ck_assert_int_eq(second.status, MM_OK);
    ck_assert_uint_eq(mm_unconfirmed(mm), 0);
    mm_free(mm);
}
END_TEST

/* ---- reconnecting against a broker that is down or frozen ---- */

struct watch {
    int disconnected, reconnected, last_code;
    uint64_t last_tick, max_gap, t_reconnected;
    struct event *tick;
};

static void
on_watch(mm_t *mm, const mm_event_t *ev, void *ud)
{
    struct watch *w = ud;
    (void) mm;
    if (ev->type == MM_EV_DISCONNECTED) {
        w->disconnected++;
        w->last_code = ev->code;
    } else if (ev->type == MM_EV_RECONNECTED) {
        w->reconnected++;
        w->t_reconnected = mmi_now_ms();
    }
}

/* A 20 ms timer on the instance's loop: the longest gap between its ticks says
 * how long anything held the loop. */
static void
on_tick(evutil_socket_t fd, short what, void *ud)
{
    struct watch *w = ud;
    (void) fd;
    (void) what;
    uint64_t now = mmi_now_ms();
    if (w->last_tick != 0 && now - w->last_tick > w->max_gap)
        w->max_gap = now - w->last_tick;
    w->last_tick = now;
}

static mm_t *
watched(struct watch *w, const mm_opts_t *base_opts, const char *uri)
{
    mm_opts_t o = *base_opts;
    o.on_event = on_watch;
    o.event_ud = w;
    mm_t *mm = mm_new("t-fault", &o);
    ck_assert_int_eq(mm_connect(mm, uri), MM_OK);
    struct timeval tv = {0, 20000};
    w->tick = event_new(mm->base, -1, EV_PERSIST, on_tick, w);
    ck_assert_int_eq(event_add(w->tick, &tv), 0);
    return mm;
}

static void
run_until(mm_t *mm, const int *counter, int want, int ms)
{
    uint64_t until = mmi_now_ms() + (uint64_t) mmt_scale(ms);
    while (*counter < want && mmi_now_ms() < until)
        event_base_loop(mm->base, EVLOOP_ONCE);
    ck_assert_msg(*counter >= want, "event count %d, wanted %d within %d ms", *counter, want, ms);
}

/* Each reconnect attempt against a frozen broker would block on its AMQP
 * handshake for the connect timeout; the probe keeps the loop free. */
START_TEST(frozen_broker_does_not_hold_the_loop_while_reconnecting)
{
    char uri[512];
    snprintf(uri, sizeof uri, "%s?heartbeat=1", mmt_uri());
    struct watch w = {0};
    mm_opts_t o = MM_OPTS_INIT;
    o.connect_timeout_ms = 1500;
    mm_t *mm = watched(&w, &o, uri);
    ck_assert_int_eq(kill(broker_pid(), SIGSTOP), 0);
    run_until(mm, &w.disconnected, 1, 10000);
    w.max_gap = 0;   /* measured from here: a synchronous method under way when the broker */
    w.last_tick = 0; /* froze waits for the heartbeat timeout, which is not this test's subject */
    uint64_t t0 = mmi_now_ms();
    while (mmi_now_ms() - t0 < 4000) /* two probes time out meanwhile */
        event_base_loop(mm->base, EVLOOP_ONCE);
    ck_assert(!mm_is_connected(mm));
    uint64_t gap = w.max_gap;
    uint64_t thawed = mmi_now_ms();
    thaw_broker();
    run_until(mm, &w.reconnected, 1, 15000);
    printf("frozen broker: longest loop stall while reconnecting %llu ms; reconnected %llu ms "
           "after the broker was thawed\n",
           (unsigned long long) gap, (unsigned long long) (w.t_reconnected - thawed));
    ck_assert_msg(gap < (uint64_t) mmt_scale(500), "the loop was held %llu ms",
                  (unsigned long long) gap);
    event_free(w.tick);
    mm_free(mm);
}
END_TEST

static int64_t
two_tries(int error, unsigned attempts, uint64_t elapsed_ms, void *ud)
{
    (void) error;
    (void) elapsed_ms;
    (*(unsigned *) ud)++;
    return attempts >= 2 ? -1 : 50;
}

/* A strategy that gives up: the instance stays disconnected for good, says so,
 * and mm_run returns. */
START_TEST(retry_strategy_that_gives_up_ends_the_run)
{
    struct watch w = {0};
    unsigned calls = 0;
    mm_opts_t o = MM_OPTS_INIT;
    o.retry = two_tries;
    o.retry_ud = &calls;
    mm_t *mm = watched(&w, &o, mmt_uri());
    ck_assert_int_eq(mmt_ctl("stop_app"), 0);
    int rc = mm_run(mm);
    ck_assert_int_eq(mmt_ctl("start_app"), 0);
    ck_assert_int_eq(rc, MM_EDISCONNECTED);
    ck_assert_int_eq(w.disconnected, 2); /* the loss, then giving up */
    ck_assert_int_eq(w.last_code, MM_EUNREACHABLE);
    ck_assert_uint_eq(calls, 2);
    ck_assert_int_eq(w.reconnected, 0);
    ck_assert(!mm_is_connected(mm));
    ck_assert_int_eq(mm_task(mm, "t-fault", "x", NULL, 0, NULL), MM_ENOTCONN);
    event_free(w.tick);
    mm_free(mm);
}
END_TEST

/* ---- the election across a broker restart ---- */

#define N_REPLICAS 3

struct replicas {
    mm_t *mm[N_REPLICAS];
    int ups, downs, reconnected;
};

static void
on_replica(mm_t *mm, const mm_event_t *ev, void *ud)
{
    struct replicas *r = ud;
    (void) mm;
    r->ups += ev->type == MM_EV_STEP_UP;
    r->downs += ev->type == MM_EV_STEP_DOWN;
    r->reconnected += ev->type == MM_EV_RECONNECTED;
}

static int
leaders(const struct replicas *r)
{
    int n = 0;
    for (int i = 0; i < N_REPLICAS; i++)
        n += mm_is_leader(r->mm[i]);
    return n;
}

/* Run the loop for `ms`, asserting at every turn that at most one instance leads. */
static void
settle(struct event_base *base, const struct replicas *r, int ms)
{
    uint64_t until = mmi_now_ms() + (uint64_t) ms;
    while (mmi_now_ms() < until) {
        ck_assert_int_le(leaders(r), 1);
        event_base_loop(base, EVLOOP_ONCE | EVLOOP_NONBLOCK);
        struct timespec ts = {0, 2000000};
        nanosleep(&ts, NULL);
    }
}

START_TEST(one_leader_again_after_a_broker_restart)
{
    struct event_base *base = event_base_new();
    struct replicas r = {0};
    char service[64];
    mmt_unique("t-elect", service, sizeof service);
    for (int i = 0; i < N_REPLICAS; i++) {
        mm_opts_t o = MM_OPTS_INIT;
        o.base = base;
        o.on_event = on_replica;
        o.event_ud = &r;
        o.heartbeat_ms = 300;
        o.election_timeout_ms = 1000;
        r.mm[i] = mm_new(service, &o);
        ck_assert_int_eq(mm_connect(r.mm[i], mmt_uri()), MM_OK);
    }
    settle(base, &r, 1000);
    ck_assert_int_eq(leaders(&r), 1);
    ck_assert_int_eq(r.ups, 1);
    ck_assert_int_eq(mmt_ctl("stop_app"), 0);
    ck_assert_int_eq(mmt_ctl("start_app"), 0);
    uint64_t t0 = mmi_now_ms();
    while ((r.reconnected < N_REPLICAS || leaders(&r) != 1) &&
           mmi_now_ms() - t0 < (uint64_t) mmt_scale(20000)) {
        ck_assert_int_le(leaders(&r), 1);
        event_base_loop(base, EVLOOP_ONCE);
    }
    uint64_t took = mmi_now_ms() - t0;
    ck_assert_int_eq(r.reconnected, N_REPLICAS);
    ck_assert_int_eq(r.downs, 1); /* the old leader stepped down with its connection */
    settle(base, &r, 1500);
    ck_assert_int_eq(leaders(&r), 1);
    ck_assert_int_eq(r.ups, 2);
    printf("broker restart with %d replicas: one leader again %llu ms after start_app returned\n",
           N_REPLICAS, (unsigned long long) took);
    for (int i = 0; i < N_REPLICAS; i++)
        mm_free(r.mm[i]);
    event_base_free(base);
}
END_TEST

int
main(void)
{
    Suite *s = suite_create("fault");
    TCase *tc = tcase_create("fault");
    tcase_set_timeout(tc, 120);
    tcase_add_checked_fixture(tc, NULL, thaw_broker);
    tcase_add_test(tc, stopped_broker_app_is_reported_and_connect_works_after_start);
    tcase_add_test(tc, frozen_broker_is_detected_by_missed_heartbeats);
    tcase_add_test(tc, frozen_broker_does_not_hold_the_loop_while_reconnecting);
    tcase_add_test(tc, retry_strategy_that_gives_up_ends_the_run);
    tcase_add_test(tc, one_leader_again_after_a_broker_restart);
    TCase *flow = tcase_create("flow");
    tcase_set_timeout(flow, 120);
    tcase_add_checked_fixture(flow, NULL, restore_watermark);
    /* A failed check ends the test's process before its checked teardown: the
     * runner restores the watermark too. */
    tcase_add_unchecked_fixture(flow, NULL, restore_watermark);
    tcase_add_test(flow, memory_alarm_blocks_and_unblocks_publishing);
    suite_add_tcase(s, flow);
    suite_add_tcase(s, tc);
    return mmt_run(s);
}
