/* Integration, run alone (it stops and starts the broker application, raises
 * a memory alarm and closes connections from the broker): recovery as the
 * "Reliability" section of micromsg.h promises it, measured. Each test prints
 * its figures on stdout.
 *
 * Worker processes are forked children with their own mm_t; they report
 * through a pipe (fixed-size records), die with the test (PR_SET_PDEATHSIG,
 * alarm) and are always reaped. The broker restart runs in a child too, so
 * that the test's loop keeps running during stop_app/start_app; that child
 * also polls raw AMQP connections to time the moment the broker accepts them
 * again (CLOCK_MONOTONIC is comparable across processes). It has no death
 * signal: once it stopped the application it must start it again. */
#include <arpa/inet.h>
#include <check.h>
#include <errno.h>
#include <event2/event.h>
#include <fcntl.h>
#include <netinet/in.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/prctl.h>
#include <sys/socket.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#include "internal.h"
#include "micromsg.h"
#include "mmt.h"
#include "mmt_fx.h"
#include "mmt_peer.h"

#define CHILD_LIFE_S 300 /* a child never outlives this, whatever happens */
#define MAX_KIDS 4
#define N_TASKS 10000     /* test 1 */
#define WINDOW 500        /* unconfirmed tasks the sender lets out while connected */
#define OFFLINE_EXTRA 500 /* and how many more it buffers while disconnected */
#define TASKS_PER_MS 2    /* the sender's pace: the restart falls in the middle of the flow */
#define STOP_AFTER 3000   /* confirmed tasks before the broker stops */
#define DOWN_MS 1000      /* the broker application stays stopped this long */
#define RPC_INFLIGHT 64   /* tests 2 and 3 */
#define RPC_TIMEOUT_MS 20000
#define RPC_STOP_AFTER 200 /* replies before the broker stops */
#define MAX_HELD 128
#define BLOCK_TASKS 50 /* test 4 */
#define DRAIN_N 8      /* test 5 */
#define SETTLE_MS 200

/* ---- records a child writes to its pipe (atomic: smaller than PIPE_BUF) ---- */

enum rec_kind {
    REC_READY = 1,   /* a worker connected and handles its route */
    REC_TASK,        /* a worker handled and acked task `id` (flag: FLAG_*) */
    REC_STARTED,     /* a worker took task `id` and holds it, never settled */
    REC_RECONNECTED, /* a worker's MM_EV_RECONNECTED */
    REC_FAILED,      /* a worker's call failed unexpectedly: id is the code */
    REC_APP_STOPPED, /* the restart helper's stop_app returned: id is its exit status */
    REC_ACCEPTING,   /* the broker accepted a raw AMQP connection again (ms: when) */
    REC_APP_STARTED, /* start_app returned: id is its exit status */
};

#define FLAG_REDELIVERED 1 /* mm_msg_redelivered() */
#define FLAG_ACK_FAILED 2  /* the ack failed (a lost connection: the broker redelivers) */
#define FLAG_RID 4         /* the request id is "rid-<id>" */

struct rec {
    int32_t kind, id, flag, pad;
    int64_t ms; /* mmt_now_ms() in the child */
};

/* A child process and the parent's end of its pipe. */
struct kid {
    pid_t pid;
    int fd;
    struct event *ev;
    bool eof, ready, reconnected;
    bool restarter; /* the broker restart helper, not a worker */
    bool gone;      /* a worker the test killed */
    int tasks, errors;
    int last_error; /* the code of the last REC_FAILED (-1000: a garbage record) */
};

/* A request in flight (tests 2 and 3). */
struct slot {
    uint64_t t0;
    bool busy;
};

/* Instance events with the time of the first one of each type. */
struct evclock {
    struct mmt_evlog log;
    uint64_t at[MMT_EV_TYPES];
};

/* A confirmed send's verdicts. */
struct tally {
    int want, n, ok, err, last_err;
    bool done;
};

/* A request or task kept by an in-process handler, settled later. */
struct held {
    mm_msg_t *msg;
    struct event *ev;
    int rc, redelivered;
    bool done;
};

struct fx {
    struct event_base *base;
    char service[64];
    mm_t *a, *b, *c;
    struct evclock aev, bev, cev;
    struct kid kids[MAX_KIDS];
    int nkids, nworkers;
    bool all_ready, all_reconnected, all_eof, restart_done;
    /* the restart helper's reports */
    int stop_rc, start_rc;
    uint64_t t_stopped, t_accepting;
    bool accepting;
    /* test 1 */
    struct event *feeder;
    uint64_t t_feed;
    int submitted, confirmed, failed, first_failure, offline, unique, dups, ok_handled;
    bool restart_forked, all_verdicts, flow_done;
    uint8_t sent[N_TASKS]; /* 0: no verdict yet, 1: MM_OK, 2: failed */
    uint16_t handled[N_TASKS];
    /* tests 2 and 3 */
    struct slot slot[RPC_INFLIGHT];
    bool rpc_issuing;
    int rpc_issued, rpc_done, rpc_ok, rpc_refused, rpc_by_code[32], answered, answered_redelivered;
    uint64_t rpc_max_ms, t_last_end;
    bool rpc_all_done;
    /* tests 3, 5, 6: in-process handlers */
    bool hold;
    struct held held[MAX_HELD];
    int nheld, nsettled;
    struct rec started, task; /* the last REC_STARTED and REC_TASK */
    bool got_started, got_task;
    /* test 4 */
    struct tally trig_a, trig_b, tally_a, tally_b;
    int w_tasks, w_events;
    bool w_all;
};

static struct fx F;

/* ---- instances ---- */

static void
on_event_timed(mm_t *mm, const mm_event_t *ev, void *ud)
{
    struct evclock *c = ud;
    mmt_on_event(mm, ev, &c->log);
    if (ev->type > 0 && ev->type < MMT_EV_TYPES && c->at[ev->type] == 0)
        c->at[ev->type] = mmt_now_ms();
}

static mm_t *
instance(const char *service, const mm_opts_t *opts, struct evclock *c)
{
    mm_opts_t o = MM_OPTS_INIT;
    if (opts != NULL)
        o = *opts;
    o.base = F.base;
    o.on_event = on_event_timed;
    o.event_ud = c;
    mm_t *mm = mm_new(service, &o);
    ck_assert_ptr_nonnull(mm);
    return mm;
}

/* A body that is the msgpack uint16 `id`. */
static size_t
id_body(char *buf, int id)
{
    buf[0] = (char) 0xcd;
    buf[1] = (char) (id >> 8);
    buf[2] = (char) (id & 0xff);
    return 3;
}

static int
body_id(const mm_msg_t *msg)
{
    const msgpack_object *o = mm_msg_body(msg);
    if (o->type != MSGPACK_OBJECT_POSITIVE_INTEGER || o->via.u64 >= N_TASKS)
        return -1;
    return (int) o->via.u64;
}

/* ---- the children: no Check calls there, they are not the test process ---- */

static void
say(int fd, int kind, int id, int flag)
{
    struct rec r = {.kind = kind, .id = id, .flag = flag, .ms = (int64_t) mmt_now_ms()};
    if (write(fd, &r, sizeof r) != (ssize_t) sizeof r)
        _exit(6);
}

static void
sleep_ms(int ms)
{
    struct timespec ts = {ms / 1000, (long) (ms % 1000) * 1000000L};
    while (nanosleep(&ts, &ts) != 0 && errno == EINTR)
        ;
}

enum role {
    ROLE_ACK,  /* ack every task at once, report it */
    ROLE_HOLD, /* report the task and keep it, never settled: it dies with the process */
    ROLE_ECHO, /* answer every request with its body */
};

struct child {
    mm_t *mm;
    int fd;
    enum role role;
};

static int
task_flags(const mm_msg_t *msg, int id)
{
    char rid[32];
    snprintf(rid, sizeof rid, "rid-%d", id);
    return (mm_msg_redelivered(msg) ? FLAG_REDELIVERED : 0) |
           (strcmp(mm_msg_request_id(msg), rid) == 0 ? FLAG_RID : 0);
}

static void
child_on_msg(mm_msg_t *msg, void *ud)
{
    struct child *c = ud;
    if (c->role == ROLE_ECHO) {
        size_t n = 0;
        const void *b = mm_msg_body_raw(msg, &n);
        int rc = mm_msg_reply(msg, b, n);
        if (rc != MM_OK && rc != MM_ECHANNEL && rc != MM_ENOTCONN)
            say(c->fd, REC_FAILED, rc, 0);
        return;
    }
    int id = body_id(msg), flag = task_flags(msg, id);
    if (c->role == ROLE_HOLD) {
        mm_msg_ref(msg);
        say(c->fd, REC_STARTED, id, flag);
        return;
    }
    int rc = mm_msg_ack(msg);
    if (rc != MM_OK && rc != MM_ECHANNEL && rc != MM_ENOTCONN)
        say(c->fd, REC_FAILED, rc, 0);
    say(c->fd, REC_TASK, id, flag | (rc != MM_OK ? FLAG_ACK_FAILED : 0));
}

static void
child_on_event(mm_t *mm, const mm_event_t *ev, void *ud)
{
    struct child *c = ud;
    (void) mm;
    if (ev->type == MM_EV_RECONNECTED)
        say(c->fd, REC_RECONNECTED, 0, 0);
}

static void
child_on_stop(mm_msg_t *msg, void *ud)
{
    (void) msg;
    mm_stop(ud);
}

/* Never returns. */
static void
child_main(const char *uri, const char *service, const char *route, enum role role,
           uint16_t prefetch, int fd)
{
    alarm(CHILD_LIFE_S);
    struct child c = {.fd = fd, .role = role};
    mm_opts_t o = MM_OPTS_INIT;
    o.on_event = child_on_event;
    o.event_ud = &c;
    mm_route_opts_t ro = MM_ROUTE_OPTS_INIT;
    ro.prefetch = prefetch;
    c.mm = mm_new(service, &o);
    if (c.mm == NULL || mm_handle(c.mm, route, child_on_msg, &c, &ro, NULL) != MM_OK ||
        mm_listen(c.mm, NULL, "stop", child_on_stop, c.mm, NULL, NULL) != MM_OK ||
        mm_connect(c.mm, uri) != MM_OK)
        _exit(3);
    say(fd, REC_READY, 0, 0);
    int rc = mm_run(c.mm);
    mm_free(c.mm);
    _exit(rc == MM_OK ? 0 : 4);
}

static int
ctl_run(const char *ctl, const char *args)
{
    char cmd[1024];
    snprintf(cmd, sizeof cmd, "%s %s >/dev/null 2>&1", ctl, args);
    int st = system(cmd);
    return st == -1 || !WIFEXITED(st) ? -1 : WEXITSTATUS(st);
}

/* stop_app, DOWN_MS of outage, then start_app in a grandchild while this
 * process polls raw AMQP connections to time when the broker accepts again.
 * Never returns. */
static void
restart_main(const char *uri, const char *ctl, int fd)
{
    alarm(CHILD_LIFE_S);
    say(fd, REC_APP_STOPPED, ctl_run(ctl, "stop_app"), 0);
    sleep_ms(DOWN_MS);
    pid_t starter = fork();
    if (starter == 0)
        _exit(ctl_run(ctl, "start_app") == 0 ? 0 : 1);
    while (!mmt_broker_accepts(uri, 1000))
        sleep_ms(5); /* refused at once while the listener is down */
    say(fd, REC_ACCEPTING, 0, 0);
    int st = -1;
    if (starter < 0 || waitpid(starter, &st, 0) != starter)
        st = -1;
    say(fd, REC_APP_STARTED, st != -1 && WIFEXITED(st) ? WEXITSTATUS(st) : -1, 0);
    _exit(0);
}

/* ---- the parent's side of the pipes ---- */

static void
update_flags(void)
{
    int ready = 0, rec = 0, eof = 0;
    F.nworkers = 0;
    for (int i = 0; i < F.nkids; i++) {
        if (F.kids[i].restarter)
            F.restart_done = F.kids[i].eof;
        if (F.kids[i].restarter || F.kids[i].gone)
            continue;
        F.nworkers++;
        ready += F.kids[i].ready;
        rec += F.kids[i].reconnected;
        eof += F.kids[i].eof;
    }
    F.all_ready = ready == F.nworkers;
    F.all_reconnected = rec == F.nworkers;
    F.all_eof = eof == F.nworkers;
    F.all_verdicts = F.confirmed + F.failed == N_TASKS;
    F.flow_done = F.all_verdicts && F.ok_handled == F.confirmed;
}

static void
on_task_rec(struct kid *k, const struct rec *r)
{
    F.task = *r;
    F.got_task = true;
    k->tasks++;
    if (r->id < 0 || r->id >= N_TASKS) {
        k->errors++;
        return;
    }
    if (++F.handled[r->id] > 1) {
        F.dups++;
        return;
    }
    F.unique++;
    if (F.sent[r->id] == 1)
        F.ok_handled++;
}

static void
on_record(struct kid *k, const struct rec *r)
{
    switch (r->kind) {
    case REC_READY:
        k->ready = true;
        break;
    case REC_TASK:
        on_task_rec(k, r);
        break;
    case REC_STARTED:
        F.started = *r;
        F.got_started = true;
        break;
    case REC_RECONNECTED:
        k->reconnected = true;
        break;
    case REC_APP_STOPPED:
        F.stop_rc = r->id;
        F.t_stopped = (uint64_t) r->ms;
        break;
    case REC_ACCEPTING:
        F.t_accepting = (uint64_t) r->ms;
        F.accepting = true;
        break;
    case REC_APP_STARTED:
        F.start_rc = r->id;
        break;
    default:
        k->errors++; /* REC_FAILED or garbage */
        k->last_error = r->kind == REC_FAILED ? r->id : -1000;
    }
}

static void
on_record_bytes(const void *rec, void *k)
{
    struct rec r;
    memcpy(&r, rec, sizeof r);
    on_record(k, &r);
}

static void
on_pipe(evutil_socket_t fd, short what, void *arg)
{
    struct kid *k = arg;
    (void) what;
    int end = mmt_read_records(fd, sizeof(struct rec), on_record_bytes, k);
    if (end > 0) {
        k->eof = true;
        event_del(k->ev);
    } else if (end < 0) {
        k->errors++;
    }
    update_flags();
}

/* Fork a child; in the child `fd` is the write end, in the parent the kid. */
static struct kid *
fork_kid(bool restarter, int *fd)
{
    ck_assert_int_lt(F.nkids, MAX_KIDS);
    int rfd = -1;
    pid_t pid = mmt_fork_piped(&rfd, restarter);
    if (pid == 0) {
        *fd = rfd;
        return NULL;
    }
    struct kid *k = &F.kids[F.nkids++];
    *k = (struct kid){.pid = pid, .fd = rfd, .restarter = restarter};
    update_flags();
    k->ev = event_new(F.base, rfd, EV_READ | EV_PERSIST, on_pipe, k);
    ck_assert_ptr_nonnull(k->ev);
    event_add(k->ev, NULL);
    return k;
}

static struct kid *
spawn(const char *route, enum role role, uint16_t prefetch)
{
    const char *uri = mmt_uri();
    int fd = -1;
    struct kid *k = fork_kid(false, &fd);
    if (k == NULL)
        child_main(uri, F.service, route, role, prefetch, fd);
    return k;
}

static void
spawn_restart(void)
{
    const char *uri = mmt_uri(), *ctl = getenv("MM_TEST_CTL");
    ck_assert_msg(ctl != NULL, "MM_TEST_CTL is not set: run through tests/harness/broker.sh");
    int fd = -1;
    if (fork_kid(true, &fd) == NULL)
        restart_main(uri, ctl, fd);
}

/* Reap a child that is exiting; its exit status. */
static int
reap(struct kid *k)
{
    int st = 0;
    ck_assert_int_eq(waitpid(k->pid, &st, 0), k->pid);
    k->pid = 0;
    return st;
}

/* The workers stop on an event; assert they exit cleanly. */
static void
stop_workers(mm_t *via)
{
    ck_assert_int_eq(mm_emit(via, F.service, "stop", NULL, 0, NULL), MM_OK);
    MMT_WAIT(F.base, F.all_eof, mmt_scale(20000));
    for (int i = 0; i < F.nkids; i++) {
        if (F.kids[i].restarter || F.kids[i].gone)
            continue;
        int st = reap(&F.kids[i]);
        ck_assert_msg(WIFEXITED(st) && WEXITSTATUS(st) == 0, "worker %d: status %#x", i, st);
        ck_assert_msg(F.kids[i].errors == 0, "worker %d: %d errors, the last %s", i,
                      F.kids[i].errors, mm_err_name(F.kids[i].last_error));
    }
}

/* ---- fixture ---- */

static void
setup(void)
{
    memset(&F, 0, sizeof F);
    F.base = mmt_base_new();
    mmt_unique("recovery", F.service, sizeof F.service);
}

/* Kill and reap every worker still there (failure paths); the restart helper
 * is waited for, never killed: it must start the broker application again. */
static void
reap_all(void)
{
    for (int i = 0; i < F.nkids; i++) {
        struct kid *k = &F.kids[i];
        if (k->pid > 0) {
            if (!k->restarter)
                kill(k->pid, SIGKILL);
            waitpid(k->pid, NULL, 0);
            k->pid = 0;
        }
        if (k->ev != NULL)
            event_free(k->ev);
        k->ev = NULL;
        close(k->fd);
    }
    F.nkids = 0;
}

static void
teardown(void)
{
    reap_all();
    if (F.feeder != NULL)
        event_free(F.feeder);
    for (int i = 0; i < MAX_HELD; i++) {
        if (F.held[i].ev != NULL)
            event_free(F.held[i].ev);
        mm_msg_unref(F.held[i].msg);
    }
    mm_free(F.a);
    mm_free(F.b);
    mm_free(F.c);
    mmt_base_free(F.base);
}

/* Runs in the runner process after the test case, also when a test failed
 * half-way: the broker application must be running for what follows. */
static void
ensure_app_running(void)
{
    if (getenv("MM_TEST_CTL") != NULL)
        mmt_ctl("start_app");
}

static void
restore_watermark(void)
{
    if (getenv("MM_TEST_CTL") != NULL)
        mmt_ctl("set_vm_memory_high_watermark 0.4");
}

/* ==== 1. broker restart while 10,000 confirmed tasks flow to 2 worker processes ==== */

static void
on_flow_sent(mm_t *mm, int status, void *ud)
{
    int id = (int) (intptr_t) ud;
    (void) mm;
    ck_assert_int_eq(F.sent[id], 0); /* one verdict per send */
    F.sent[id] = status == MM_OK ? 1 : 2;
    if (status == MM_OK) {
        F.confirmed++;
        F.ok_handled += F.handled[id] > 0;
    } else {
        F.failed++;
        if (F.first_failure == 0)
            F.first_failure = status;
    }
    update_flags();
}

static void
send_task(mm_t *mm, int id, const char *route, mm_sent_fn on_sent, void *ud)
{
    char body[4], rid[32];
    snprintf(rid, sizeof rid, "rid-%d", id);
    mm_send_opts_t so = MM_SEND_OPTS_INIT;
    so.on_sent = on_sent;
    so.sent_ud = ud;
    so.request_id = rid;
    int rc = mm_task(mm, F.service, route, body, id_body(body, id), &so);
    ck_assert_msg(rc == MM_OK, "task %d: %s %s", id, mm_err_name(rc), mm_last_error(mm));
}

/* Sends TASKS_PER_MS, keeping at most WINDOW unconfirmed while connected and
 * buffering OFFLINE_EXTRA more while disconnected; forks the restart once
 * STOP_AFTER are confirmed. */
static void
feed(evutil_socket_t fd, short what, void *arg)
{
    (void) fd;
    (void) what;
    (void) arg;
    bool up = mm_is_connected(F.a);
    size_t limit = up ? WINDOW : WINDOW + OFFLINE_EXTRA;
    uint64_t due = (mmt_now_ms() - F.t_feed) * TASKS_PER_MS;
    due = due < N_TASKS ? due : N_TASKS;
    while ((uint64_t) F.submitted < due && mm_unconfirmed(F.a) < limit) {
        F.offline += !up;
        int id = F.submitted++;
        send_task(F.a, id, "work", on_flow_sent, (void *) (intptr_t) id);
    }
    if (!F.restart_forked && F.confirmed >= STOP_AFTER) {
        F.restart_forked = true;
        spawn_restart();
    }
}

static void
start_feeder(void)
{
    F.feeder = event_new(F.base, -1, EV_PERSIST, feed, NULL);
    ck_assert_ptr_nonnull(F.feeder);
    F.t_feed = mmt_now_ms();
    struct timeval tv = {0, 1000};
    event_add(F.feeder, &tv);
}

static void
assert_restart_happened(void)
{
    MMT_WAIT(F.base, F.restart_done, mmt_scale(120000));
    ck_assert_int_eq(F.stop_rc, 0);
    ck_assert_int_eq(F.start_rc, 0);
    ck_assert(F.accepting);
    for (int i = 0; i < F.nkids; i++) {
        if (!F.kids[i].restarter)
            continue;
        int st = reap(&F.kids[i]);
        ck_assert_msg(WIFEXITED(st) && WEXITSTATUS(st) == 0, "restart helper: status %#x", st);
    }
}

/* From the broker accepting connections again to the sender's MM_EV_RECONNECTED
 * (negative when the sender was first). */
static long long
reconnect_delay(const struct evclock *c)
{
    ck_assert_msg(c->at[MM_EV_RECONNECTED] != 0, "no MM_EV_RECONNECTED");
    return (long long) c->at[MM_EV_RECONNECTED] - (long long) F.t_accepting;
}

START_TEST(broker_restart_loses_no_confirmed_task)
{
    spawn("work", ROLE_ACK, 50);
    spawn("work", ROLE_ACK, 50);
    MMT_WAIT(F.base, F.all_ready, mmt_scale(20000));
    mm_opts_t o = MM_OPTS_INIT;
    o.send_timeout_ms = 300000; /* long enough for any outage here: every send must get MM_OK */
    F.a = instance("t-recovery-sender", &o, &F.aev);
    mmt_connect(F.a);
    uint64_t t0 = mmt_now_ms();
    start_feeder();
    MMT_WAIT(F.base, F.all_verdicts, mmt_scale(240000));
    ck_assert_msg(F.failed == 0, "%d sends failed, the first with %s", F.failed,
                  mm_err_name(F.first_failure));
    /* The workers are a few seconds behind the confirms at most. */
    mmt_wait(F.base, &F.flow_done, mmt_scale(30000));
    uint64_t took = mmt_now_ms() - t0;
    event_del(F.feeder);
    ck_assert_msg(F.ok_handled == N_TASKS, "%d confirmed tasks never handled (lost)",
                  N_TASKS - F.ok_handled);
    assert_restart_happened();
    ck_assert_int_gt(F.offline, 0); /* some were buffered while disconnected */
    ck_assert_int_eq(F.aev.log.count[MM_EV_DISCONNECTED], 1);
    ck_assert_uint_eq(mm_unconfirmed(F.a), 0);
    long long delay = reconnect_delay(&F.aev);
    MMT_WAIT(F.base, F.all_reconnected, mmt_scale(20000)); /* the workers came back too */
    stop_workers(F.a);
    ck_assert_int_gt(F.kids[0].tasks, 0);
    ck_assert_int_gt(F.kids[1].tasks, 0);
    printf("broker restart during %d confirmed tasks to 2 worker processes: lost 0, "
           "duplicates %d, %d buffered while down, outage %llu ms, sender reconnected %lld ms "
           "after the broker accepted connections (%s), all done in %llu ms\n",
           N_TASKS, F.dups, F.offline, (unsigned long long) (F.t_accepting - F.t_stopped), delay,
           F.aev.log.text[MM_EV_RECONNECTED], (unsigned long long) took);
    ck_assert_msg(delay < mmt_scale(1000), "reconnected %lld ms after the broker was back", delay);
}
END_TEST

/* ==== 2. 64 requests in flight during a broker restart ==== */

static void rpc_issue(void);

static void
on_rpc_final(mm_msg_t *msg, void *ud)
{
    if (!mm_msg_is_final(msg))
        return;
    uint64_t now = mmt_now_ms();
    struct slot *s = ud;
    ck_assert(s->busy);
    s->busy = false;
    uint64_t ms = now - s->t0;
    F.rpc_max_ms = ms > F.rpc_max_ms ? ms : F.rpc_max_ms;
    F.t_last_end = now;
    F.rpc_done++;
    int st = mm_msg_status(msg);
    if (st == MM_OK) {
        F.rpc_ok++;
    } else {
        F.rpc_by_code[-st < 32 ? -st : 0]++;
        F.rpc_issuing = false; /* the loss: what was in flight ends, nothing new starts */
    }
    F.rpc_all_done = F.rpc_done == F.rpc_issued && !F.rpc_issuing;
    if (!F.restart_forked && F.rpc_ok >= RPC_STOP_AFTER) {
        F.restart_forked = true;
        spawn_restart();
    }
    rpc_issue();
}

/* Fill every free slot with a request (RPC_INFLIGHT in flight). */
static void
rpc_issue(void)
{
    for (int i = 0; i < RPC_INFLIGHT && F.rpc_issuing; i++) {
        if (F.slot[i].busy)
            continue;
        char body[4];
        mm_request_opts_t ro = MM_REQUEST_OPTS_INIT;
        ro.timeout_ms = RPC_TIMEOUT_MS;
        F.slot[i].t0 = mmt_now_ms();
        F.slot[i].busy = true;
        int rc = mm_request(F.a, F.service, "echo", body, id_body(body, i), &ro, on_rpc_final,
                            &F.slot[i], NULL);
        if (rc == MM_OK) {
            F.rpc_issued++;
            continue;
        }
        /* Also when the request's own basic.publish is the write that finds the
         * connection dead (it was MM_EDISCONNECTED once: fixed in lib/outbox.c). */
        ck_assert_msg(rc == MM_ENOTCONN, "%s: %s", mm_err_name(rc), mm_last_error(F.a));
        F.slot[i].busy = false;
        F.rpc_refused++;
        F.rpc_issuing = false;
    }
    F.rpc_all_done = F.rpc_done == F.rpc_issued && !F.rpc_issuing;
}

static void
assert_answered_after_reconnect(uint64_t *ret_ms)
{
    MMT_WAIT(F.base, F.aev.log.seen[MM_EV_RECONNECTED], mmt_scale(30000));
    MMT_WAIT(F.base, F.all_reconnected, mmt_scale(30000)); /* the server process too */
    struct mmt_probe p = {0};
    mm_request_opts_t ro = MM_REQUEST_OPTS_INIT;
    ro.timeout_ms = RPC_TIMEOUT_MS;
    uint64_t t0 = mmt_now_ms();
    ck_assert_int_eq(mm_request(F.a, F.service, "echo", NULL, 0, &ro, mmt_on_reply, &p, NULL),
                     MM_OK);
    MMT_WAIT(F.base, p.done, mmt_scale(RPC_TIMEOUT_MS));
    ck_assert_msg(p.status == MM_OK, "%s %s", mm_err_name(p.status), p.text);
    *ret_ms = mmt_now_ms() - t0;
    mmt_probe_free(&p);
}

START_TEST(requests_in_flight_end_at_once_during_a_broker_restart)
{
    spawn("echo", ROLE_ECHO, 0);
    MMT_WAIT(F.base, F.all_ready, mmt_scale(20000));
    F.a = instance("t-recovery-requester", NULL, &F.aev);
    mmt_connect(F.a);
    F.rpc_issuing = true;
    rpc_issue();
    MMT_WAIT(F.base, F.rpc_all_done, mmt_scale(120000));
    ck_assert_int_eq(F.rpc_done, F.rpc_issued); /* 0 hangs */
    assert_restart_happened();
    int lost = F.rpc_by_code[-MM_EDISCONNECTED];
    ck_assert_int_gt(lost, 0); /* requests were in flight at the loss */
    ck_assert_msg(F.rpc_ok + lost == F.rpc_done, "errors other than MM_EDISCONNECTED");
    ck_assert_msg(F.rpc_max_ms < RPC_TIMEOUT_MS / 2, "a request took %llu ms",
                  (unsigned long long) F.rpc_max_ms);
    uint64_t t_loss = F.aev.at[MM_EV_DISCONNECTED];
    ck_assert_uint_ne(t_loss, 0);
    uint64_t after = 0;
    assert_answered_after_reconnect(&after);
    stop_workers(F.a);
    printf("broker restart with %d requests in flight: %d requests, %d replies, %d "
           "MM_EDISCONNECTED, 0 hangs, %d refused while down; last request ended %lld ms after "
           "the loss (longest %llu ms of a %d ms timeout); requester reconnected %lld ms after "
           "the broker was back, a new request answered in %llu ms\n",
           RPC_INFLIGHT, F.rpc_issued, F.rpc_ok, lost, F.rpc_refused,
           (long long) F.t_last_end - (long long) t_loss, (unsigned long long) F.rpc_max_ms,
           RPC_TIMEOUT_MS, reconnect_delay(&F.aev), (unsigned long long) after);
}
END_TEST

/* ==== 3. the server's connection closed by the broker while requests wait ==== */

static void
on_hold_or_answer(mm_msg_t *msg, void *ud)
{
    (void) ud;
    if (F.hold) {
        ck_assert_int_lt(F.nheld, MAX_HELD);
        F.held[F.nheld++].msg = mm_msg_ref(msg);
        return;
    }
    size_t n = 0;
    const void *b = mm_msg_body_raw(msg, &n);
    ck_assert_int_eq(mm_msg_reply(msg, b, n), MM_OK);
    F.answered++;
    F.answered_redelivered += mm_msg_redelivered(msg);
}

static void
on_counted(mm_msg_t *msg, void *ud)
{
    (void) ud;
    if (!mm_msg_is_final(msg))
        return;
    int st = mm_msg_status(msg);
    F.rpc_done++;
    F.rpc_ok += st == MM_OK;
    F.rpc_by_code[st < 0 && -st < 32 ? -st : 0] += st != MM_OK;
    F.t_last_end = mmt_now_ms();
    F.rpc_all_done = F.rpc_done == F.rpc_issued;
}

static void
send_requests(int n)
{
    mm_request_opts_t ro = MM_REQUEST_OPTS_INIT;
    ro.timeout_ms = RPC_TIMEOUT_MS;
    for (int i = 0; i < n; i++) {
        char body[4];
        ck_assert_int_eq(
            mm_request(F.a, F.service, "echo", body, id_body(body, i), &ro, on_counted, NULL, NULL),
            MM_OK);
        F.rpc_issued++;
    }
}

/*
 * The requests the server held when its connection died were delivered but
 * never acked: the broker requeues them on the (durable) request queue when
 * it closes the connection, and the server gets them again once it consumes
 * again, with the redelivered flag. Requests are transient, which would only
 * matter if the broker itself restarted. Their deadline (eat) is RPC_TIMEOUT_MS
 * ahead, so the server does not drop them as expired and answers them; the
 * requester's own connection never died, so the answers reach it. Had their
 * deadline passed, the server would have acked and dropped them
 * (MM_EV_EXPIRED) and the requester would have timed out.
 */
START_TEST(server_connection_closed_by_the_broker_answers_again)
{
    F.hold = true;
    F.b = instance(F.service, NULL, &F.bev);
    mmt_handle(F.b, "echo", on_hold_or_answer, NULL, RPC_INFLIGHT);
    mmt_connect(F.b);
    F.a = instance("t-recovery-requester", NULL, &F.aev);
    mmt_connect(F.a);
    send_requests(RPC_INFLIGHT);
    bool all_held = false;
    while (!all_held && mmt_wait(F.base, &all_held, 20))
        all_held = F.nheld == RPC_INFLIGHT;
    ck_assert_int_eq(F.nheld, RPC_INFLIGHT); /* pending at the server, unacked */
    F.hold = false;
    uint64_t t0 = mmt_now_ms();
    ck_assert_int_eq(mmt_kill_connection(mmt_local_port(F.b)), 0);
    send_requests(RPC_INFLIGHT); /* more while the server is down: they wait in the queue */
    MMT_WAIT(F.base, F.rpc_all_done, mmt_scale(RPC_TIMEOUT_MS));
    ck_assert_int_eq(F.rpc_ok, 2 * RPC_INFLIGHT); /* none lost, none timed out */
    ck_assert_int_eq(F.answered_redelivered, RPC_INFLIGHT);
    ck_assert_int_eq(F.bev.log.count[MM_EV_DISCONNECTED], 1);
    ck_assert_int_ge(F.bev.log.count[MM_EV_RECONNECTED], 1);
    ck_assert_int_eq(F.aev.log.count[MM_EV_DISCONNECTED], 0);
    ck_assert_int_eq(F.aev.log.count[MM_EV_UNHANDLED], 0); /* no request answered twice */
    int stale = MM_OK;
    for (int i = 0; i < F.nheld; i++) { /* those deliveries died with the connection */
        stale = mm_msg_reply(F.held[i].msg, NULL, 0);
        ck_assert_msg(stale == MM_ECHANNEL || stale == MM_ENOTCONN, "%s", mm_err_name(stale));
        F.held[i].msg = mm_msg_unref(F.held[i].msg);
    }
    printf("server connection closed by the broker with %d requests pending at it, %d more "
           "sent meanwhile: all %d answered (%d redelivered), 0 timed out; the server saw the "
           "loss %llu ms after rabbitmqctl began and reconnected in %llu ms; last answer %llu ms "
           "after rabbitmqctl began; a stale delivery's reply gets %s\n",
           RPC_INFLIGHT, RPC_INFLIGHT, F.rpc_ok, F.answered_redelivered,
           (unsigned long long) (F.bev.at[MM_EV_DISCONNECTED] - t0),
           (unsigned long long) (F.bev.at[MM_EV_RECONNECTED] - F.bev.at[MM_EV_DISCONNECTED]),
           (unsigned long long) (F.t_last_end - t0), mm_err_name(stale));
}
END_TEST

/* ==== 4. a memory alarm blocks publishing: sends buffered, never blocking ==== */

static void
on_tally(mm_t *mm, int status, void *ud)
{
    struct tally *t = ud;
    (void) mm;
    t->n++;
    if (status == MM_OK) {
        t->ok++;
    } else {
        t->err++;
        t->last_err = status;
    }
    t->done = t->n >= t->want;
}

static void
on_block_task(mm_msg_t *msg, void *ud)
{
    (void) ud;
    if (mm_msg_kind_of(msg) == MM_MSG_EVENT)
        F.w_events++;
    else if (body_id(msg) >= 100)
        F.w_tasks++; /* the ones sent during the block (the triggers are < 100) */
    if (mm_msg_kind_of(msg) == MM_MSG_TASK)
        ck_assert_int_eq(mm_msg_ack(msg), MM_OK);
    F.w_all = F.w_tasks == BLOCK_TASKS && F.w_events == 1;
}

/* The broker blocks a connection when it publishes during the alarm. */
static void
get_blocked(mm_t *mm, struct evclock *c, struct tally *t, int id)
{
    t->want = 1;
    send_task(mm, id, "work", on_tally, t);
    MMT_WAIT(F.base, c->log.seen[MM_EV_BLOCKED], mmt_scale(10000));
}

/* mm_task and mm_emit on a blocked instance: MM_OK at once, buffered. */
static uint64_t
send_blocked(mm_t *mm, int n, struct tally *t)
{
    uint64_t max = 0;
    t->want = n + 1;
    for (int i = 0; i <= n; i++) {
        uint64_t t0 = mmt_now_ms();
        if (i < n) {
            send_task(mm, 100 + i, "work", on_tally, t);
        } else {
            mm_send_opts_t so = MM_SEND_OPTS_INIT;
            so.on_sent = on_tally;
            so.sent_ud = t;
            ck_assert_int_eq(mm_emit(mm, F.service, "evt", NULL, 0, &so), MM_OK);
        }
        uint64_t ms = mmt_now_ms() - t0;
        max = ms > max ? ms : max;
    }
    return max;
}

START_TEST(blocked_connection_buffers_sends_and_resumes)
{
    F.c = instance(F.service, NULL, &F.cev);
    mmt_handle(F.c, "work", on_block_task, NULL, 0);
    ck_assert_int_eq(mm_listen(F.c, NULL, "evt", on_block_task, NULL, NULL, NULL), MM_OK);
    mmt_connect(F.c);
    mm_opts_t o = MM_OPTS_INIT;
    o.send_timeout_ms = 500;
    F.a = instance("t-recovery-short", &o, &F.aev);
    o.send_timeout_ms = 120000;
    F.b = instance("t-recovery-long", &o, &F.bev);
    mmt_connect(F.a);
    mmt_connect(F.b);
    ck_assert_int_eq(mmt_ctl("set_vm_memory_high_watermark 0.000001"), 0);
    get_blocked(F.a, &F.aev, &F.trig_a, 1);
    get_blocked(F.b, &F.bev, &F.trig_b, 2);
    /* The broker stops reading the socket right after the trigger's
     * basic.publish frame: it waits, unconfirmed, until the unblock. */
    ck_assert_uint_eq(mm_unconfirmed(F.b), 1);
    uint64_t max_b = send_blocked(F.b, BLOCK_TASKS, &F.tally_b);
    ck_assert_uint_eq(mm_unconfirmed(F.b), 1 + BLOCK_TASKS + 1); /* buffered */
    uint64_t max_a = send_blocked(F.a, 10, &F.tally_a);
    uint64_t max_call = max_a > max_b ? max_a : max_b;
    ck_assert_uint_lt(max_call, 100); /* no call waits on the block */
    MMT_WAIT(F.base, F.tally_a.done, mmt_scale(10000));
    ck_assert_int_eq(F.tally_a.err, 11);
    ck_assert_int_eq(F.tally_a.last_err, MM_EBLOCKED);
    ck_assert_uint_eq(mm_unconfirmed(F.a), 0);
    /* Half a second later nothing of the long instance reached the broker. */
    ck_assert_int_eq(F.tally_b.n + F.trig_b.n, 0);
    ck_assert_int_eq(F.w_tasks + F.w_events, 0);
    ck_assert_uint_eq(mm_unconfirmed(F.b), 1 + BLOCK_TASKS + 1);
    uint64_t t0 = mmt_now_ms();
    ck_assert_int_eq(mmt_ctl("set_vm_memory_high_watermark 0.4"), 0);
    MMT_WAIT(F.base, F.bev.log.seen[MM_EV_UNBLOCKED], mmt_scale(10000));
    MMT_WAIT(F.base, F.tally_b.done, mmt_scale(10000));
    ck_assert_int_eq(F.tally_b.ok, BLOCK_TASKS + 1);
    MMT_WAIT(F.base, F.trig_b.done, mmt_scale(10000));
    ck_assert_int_eq(F.trig_b.ok, 1);
    MMT_WAIT(F.base, F.w_all, mmt_scale(10000));
    ck_assert_uint_eq(mm_unconfirmed(F.b), 0);
    MMT_WAIT(F.base, F.trig_a.done, mmt_scale(10000));
    printf("memory alarm: blocked after one publish; %d tasks and 1 event buffered, longest "
           "call %llu ms; short send timeout: 11 x MM_EBLOCKED (its half-read trigger: %s); "
           "after the unblock all confirmed and handled %llu ms after the watermark was "
           "restored\n",
           BLOCK_TASKS, (unsigned long long) max_call,
           mm_err_name(F.trig_a.ok ? MM_OK : F.trig_a.last_err),
           (unsigned long long) (mmt_now_ms() - t0));
}
END_TEST

/* ==== 5. mm_close drains ==== */

static void
on_settle(evutil_socket_t fd, short what, void *arg)
{
    struct held *h = arg;
    (void) fd;
    (void) what;
    h->rc = mm_msg_ack(h->msg);
    h->msg = mm_msg_unref(h->msg);
    h->done = true;
    F.nsettled++;
}

/* Keep the task; with F.hold false, ack it SETTLE_MS later from a timer. */
static void
on_drain_task(mm_msg_t *msg, void *ud)
{
    (void) ud;
    ck_assert_int_lt(F.nheld, DRAIN_N);
    struct held *h = &F.held[F.nheld++];
    h->msg = mm_msg_ref(msg);
    if (F.hold)
        return;
    h->ev = evtimer_new(F.base, on_settle, h);
    ck_assert_ptr_nonnull(h->ev);
    struct timeval tv = {0, SETTLE_MS * 1000};
    evtimer_add(h->ev, &tv);
}

/* F.b handles "drain" and holds DRAIN_N tasks sent by F.c. */
static void
hold_tasks(uint32_t close_timeout_ms)
{
    mm_opts_t o = MM_OPTS_INIT;
    o.close_timeout_ms = close_timeout_ms;
    F.b = instance(F.service, &o, &F.bev);
    mmt_handle(F.b, "drain", on_drain_task, NULL, DRAIN_N);
    mmt_connect(F.b);
    F.c = instance("t-recovery-client", NULL, &F.cev);
    mmt_connect(F.c);
    for (int i = 0; i < DRAIN_N; i++)
        send_task(F.c, i, "drain", NULL, NULL);
    bool all = false;
    while (!all && mmt_wait(F.base, &all, 20))
        all = F.nheld == DRAIN_N;
    ck_assert_int_eq(F.nheld, DRAIN_N);
}

/* The ready count of the drain queue, polled (bounded) until it is `want`. */
static void
wait_ready(uint32_t want)
{
    mm_stat_t s = {0};
    for (int i = 0; i < mmt_scale(100); i++) {
        ck_assert_int_eq(mm_queue_stat(F.c, F.service, "drain", &s), MM_OK);
        if (s.messages == want)
            break;
        bool never = false;
        mmt_wait(F.base, &never, 20);
    }
    ck_assert_uint_eq(s.messages, want);
    ck_assert_uint_eq(s.consumers, 0);
}

START_TEST(close_waits_for_handlers_that_settle)
{
    hold_tasks(5000);
    ck_assert_int_eq(F.nsettled, 0);
    uint64_t t0 = mmt_now_ms();
    ck_assert_int_eq(mm_close(F.b), MM_OK);
    uint64_t took = mmt_now_ms() - t0;
    ck_assert_int_eq(F.nsettled, DRAIN_N); /* settled while mm_close waited */
    for (int i = 0; i < DRAIN_N; i++)
        ck_assert_int_eq(F.held[i].rc, MM_OK);
    ck_assert_uint_lt(took, 5000);
    wait_ready(0); /* all acked: nothing back in the queue */
    printf("mm_close with %d tasks settled %d ms after delivery: returned after %llu ms "
           "(close_timeout_ms 5000), queue empty\n",
           DRAIN_N, SETTLE_MS, (unsigned long long) took);
}
END_TEST

START_TEST(close_gives_unsettled_tasks_back_after_the_timeout)
{
    F.hold = true;
    hold_tasks(1000);
    uint64_t t0 = mmt_now_ms();
    ck_assert_int_eq(mm_close(F.b), MM_OK);
    uint64_t took = mmt_now_ms() - t0;
    ck_assert_uint_ge(took, 1000);
    ck_assert_uint_lt(took, 1000 + mmt_scale(1500));
    wait_ready((uint32_t) DRAIN_N); /* all back in the queue */
    for (int i = 0; i < DRAIN_N; i++) {
        int rc = mm_msg_ack(F.held[i].msg);
        ck_assert_msg(rc == MM_ENOTCONN || rc == MM_ECHANNEL, "%s", mm_err_name(rc));
        F.held[i].msg = mm_msg_unref(F.held[i].msg);
    }
    printf("mm_close with %d tasks never settled: returned after %llu ms (close_timeout_ms "
           "1000), all %d back in the queue\n",
           DRAIN_N, (unsigned long long) took, DRAIN_N);
}
END_TEST

/* ==== 6. a worker process killed in the middle of a task ==== */

START_TEST(killed_worker_task_is_redelivered_to_another_worker)
{
    struct kid *holder = spawn("crash", ROLE_HOLD, 1);
    MMT_WAIT(F.base, F.all_ready, mmt_scale(20000));
    F.c = instance("t-recovery-client", NULL, &F.cev);
    mmt_connect(F.c);
    send_task(F.c, 42, "crash", NULL, NULL);
    MMT_WAIT(F.base, F.got_started, mmt_scale(10000)); /* it holds the task, unacked */
    ck_assert_int_eq(F.started.id, 42);
    ck_assert_int_eq(F.started.flag, FLAG_RID); /* a first delivery */
    struct kid *other = spawn("crash", ROLE_ACK, 1);
    MMT_WAIT(F.base, F.all_ready, mmt_scale(20000));
    ck_assert_int_eq(other->tasks, 0); /* nothing for it while the holder lives */
    uint64_t t0 = mmt_now_ms();
    ck_assert_int_eq(kill(holder->pid, SIGKILL), 0);
    int st = reap(holder);
    ck_assert(WIFSIGNALED(st) && WTERMSIG(st) == SIGKILL);
    holder->gone = true;
    update_flags();
    MMT_WAIT(F.base, F.got_task, mmt_scale(10000));
    ck_assert_int_eq(F.task.id, 42);
    ck_assert_int_eq(F.task.flag, FLAG_REDELIVERED | FLAG_RID); /* same request id, acked */
    ck_assert_int_eq(other->tasks, 1);
    mm_stat_t s;
    ck_assert_int_eq(mm_queue_stat(F.c, F.service, "crash", &s), MM_OK);
    ck_assert_uint_eq(s.messages, 0);
    printf("worker killed with SIGKILL holding a task: redelivered (flag set) to the other "
           "worker and done %lld ms after the kill\n",
           (long long) F.task.ms - (long long) t0);
    stop_workers(F.c);
}
END_TEST

int
main(void)
{
    setvbuf(stdout, NULL, _IOLBF, 0); /* the figures survive a failed check's _exit */
    Suite *s = suite_create("recovery");
    TCase *restart = mmt_tcase(s, "restart", setup, teardown, 400);
    tcase_add_unchecked_fixture(restart, NULL, ensure_app_running);
    tcase_add_test(restart, broker_restart_loses_no_confirmed_task);
    tcase_add_test(restart, requests_in_flight_end_at_once_during_a_broker_restart);
    TCase *flow = mmt_tcase(s, "flow", setup, teardown, 120);
    tcase_add_unchecked_fixture(flow, NULL, restore_watermark);
    tcase_add_test(flow, blocked_connection_buffers_sends_and_resumes);
    TCase *tc = mmt_tcase(s, "recovery", setup, teardown, 120);
    tcase_add_test(tc, server_connection_closed_by_the_broker_answers_again);
    tcase_add_test(tc, close_waits_for_handlers_that_settle);
    tcase_add_test(tc, close_gives_unsettled_tasks_back_after_the_timeout);
    tcase_add_test(tc, killed_worker_task_is_redelivered_to_another_worker);
    return mmt_run(s);
}
