/* Integration: task queues (PROTOCOL.md section 5): worker processes sharing
 * a queue with every task handled exactly once, settling after the handler
 * returned (ack, nack with requeue), a killed worker's task redelivered to
 * another, a task nobody handles reported as unroutable, and reject/write
 * on a task (a rejected task goes to the dead-letter queue). Worker
 * processes are forked children with their own mm_t; they report through a
 * pipe, die with the test (PR_SET_PDEATHSIG, alarm) and are always reaped. */
#include <check.h>
#include <errno.h>
#include <event2/event.h>
#include <fcntl.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/prctl.h>
#include <sys/wait.h>
#include <unistd.h>

#include "micromsg.h"
#include "mmt.h"
#include "mmt_fx.h"

#define N_WORKERS 3
#define N_TASKS 300
#define CHILD_LIFE_S 60 /* a child never outlives this, whatever happens */

/* Pipe records from a child: a task id (>= 0) or one of these. */
enum { REC_READY = -1, REC_ACK_FAILED = -2, REC_BAD_TASK = -3 };

struct child {
    pid_t pid;
    int fd; /* read end of the child's pipe */
    struct event *ev;
    bool ready, eof;
    int n, errors;
    int ids[N_TASKS];
};

struct fx {
    struct event_base *base;
    mm_t *client, *worker;
    char service[64];
    struct mmt_evlog ev; /* the client's and the worker's events */
    struct child kids[N_WORKERS];
    int nkids;
    bool all_ready, all_in, all_eof;
    int want_in; /* all_in when the children reported this many ids */
};

static struct fx F;

static void
setup(void)
{
    memset(&F, 0, sizeof F);
    F.base = mmt_base_new();
    mmt_unique("tasks", F.service, sizeof F.service);
    F.client = mmt_instance(F.base, "t-tasks-client", NULL, &F.ev);
    F.worker = mmt_instance(F.base, F.service, NULL, &F.ev);
}

/* Kill and reap every child still there (failure paths), free the pipes. */
static void
reap_all(void)
{
    for (int i = 0; i < F.nkids; i++) {
        struct child *k = &F.kids[i];
        if (k->pid > 0) {
            kill(k->pid, SIGKILL);
            waitpid(k->pid, NULL, 0);
            k->pid = 0;
        }
        if (k->ev != NULL)
            event_free(k->ev);
        k->ev = NULL;
        if (k->fd >= 0)
            close(k->fd);
        k->fd = -1;
    }
}

static void
teardown(void)
{
    reap_all();
    mm_free(F.client);
    mm_free(F.worker);
    mmt_base_free(F.base);
}

/* ---- bodies ---- */

static void
task(const char *route, int id, const char *request_id)
{
    mm_body_t *b = mm_body_new();
    msgpack_pack_int(mm_body_packer(b), id);
    mm_send_opts_t so = MM_SEND_OPTS_INIT;
    so.request_id = request_id;
    ck_assert_msg(mm_task(F.client, F.service, route, mm_body_data(b), mm_body_len(b), &so) ==
                      MM_OK,
                  "%s", mm_last_error(F.client));
    mm_body_free(b);
}

static int
body_id(const mm_msg_t *msg)
{
    const msgpack_object *o = mm_msg_body(msg);
    if (o->type != MSGPACK_OBJECT_POSITIVE_INTEGER || o->via.u64 >= N_TASKS)
        return REC_BAD_TASK;
    return (int) o->via.u64;
}

/* ---- the child: a worker process with its own mm_t and loop ---- */

enum child_mode { MODE_ACK, MODE_HOLD };

struct worker {
    mm_t *mm;
    int fd;
    enum child_mode mode;
};

static void
child_say(int fd, int rec)
{
    if (write(fd, &rec, sizeof rec) != (ssize_t) sizeof rec)
        _exit(6);
}

static void
on_child_task(mm_msg_t *msg, void *ud)
{
    struct worker *w = ud;
    int id = mm_msg_kind_of(msg) == MM_MSG_TASK ? body_id(msg) : REC_BAD_TASK;
    if (w->mode == MODE_HOLD) {
        mm_msg_ref(msg); /* never settled: the task dies with the process */
    } else if (mm_msg_ack(msg) != MM_OK) {
        id = REC_ACK_FAILED;
    }
    child_say(w->fd, id);
}

static void
on_child_stop(mm_msg_t *msg, void *ud)
{
    (void) msg;
    mm_stop(ud);
}

/* Never returns. No Check calls here: this is not the test process. */
static void
child_main(const char *uri, const char *service, const char *route, enum child_mode mode, int fd)
{
    alarm(CHILD_LIFE_S);
    struct worker w = {.fd = fd, .mode = mode};
    mm_route_opts_t ro = MM_ROUTE_OPTS_INIT;
    ro.prefetch = 1; /* one task at a time: the broker deals them round robin */
    w.mm = mm_new(service, NULL);
    if (w.mm == NULL || mm_handle(w.mm, route, on_child_task, &w, &ro, NULL) != MM_OK ||
        mm_listen(w.mm, NULL, "stop", on_child_stop, w.mm, NULL, NULL) != MM_OK ||
        mm_connect(w.mm, uri) != MM_OK)
        _exit(3);
    child_say(fd, REC_READY);
    int rc = mm_run(w.mm);
    mm_free(w.mm);
    _exit(rc == MM_OK ? 0 : 4);
}

/* ---- the parent's side of the pipes ---- */

static void
update_flags(void)
{
    int ready = 0, in = 0, eof = 0;
    for (int i = 0; i < F.nkids; i++) {
        ready += F.kids[i].ready;
        in += F.kids[i].n;
        eof += F.kids[i].eof;
    }
    F.all_ready = ready == F.nkids;
    F.all_in = F.want_in > 0 && in >= F.want_in;
    F.all_eof = eof == F.nkids;
}

static void
on_record(struct child *k, int rec)
{
    if (rec == REC_READY)
        k->ready = true;
    else if (rec < 0)
        k->errors++;
    else if (k->n < N_TASKS)
        k->ids[k->n++] = rec;
    else
        k->errors++;
}

static void
on_record_bytes(const void *rec, void *k)
{
    int v;
    memcpy(&v, rec, sizeof v);
    on_record(k, v);
}

static void
on_pipe(evutil_socket_t fd, short what, void *arg)
{
    struct child *k = arg;
    (void) what;
    int end = mmt_read_records(fd, sizeof(int), on_record_bytes, k);
    if (end > 0) {
        k->eof = true;
        event_del(k->ev);
    } else if (end < 0) {
        k->errors++;
    }
    update_flags();
}

static struct child *
spawn(const char *route, enum child_mode mode)
{
    ck_assert_int_lt(F.nkids, N_WORKERS);
    const char *uri = mmt_uri();
    int fd = -1;
    pid_t pid = mmt_fork_piped(&fd, false);
    if (pid == 0)
        child_main(uri, F.service, route, mode, fd);
    struct child *k = &F.kids[F.nkids++];
    *k = (struct child){.pid = pid, .fd = fd};
    k->ev = event_new(F.base, fd, EV_READ | EV_PERSIST, on_pipe, k);
    ck_assert_ptr_nonnull(k->ev);
    event_add(k->ev, NULL);
    return k;
}

/* Reap a child that is exiting; its exit status. */
static int
reap(struct child *k)
{
    int st = 0;
    ck_assert_int_eq(waitpid(k->pid, &st, 0), k->pid);
    k->pid = 0;
    return st;
}

/* ---- every task exactly once across worker processes ---- */

static void
assert_exactly_once(void)
{
    int seen[N_TASKS] = {0};
    for (int i = 0; i < F.nkids; i++) {
        struct child *k = &F.kids[i];
        ck_assert_int_eq(k->errors, 0);
        ck_assert_msg(k->n >= 1, "worker %d handled no task", i);
        for (int j = 0; j < k->n; j++)
            seen[k->ids[j]]++;
    }
    for (int id = 0; id < N_TASKS; id++)
        ck_assert_msg(seen[id] == 1, "task %d handled %d times", id, seen[id]);
}

START_TEST(workers_share_tasks_exactly_once)
{
    for (int i = 0; i < N_WORKERS; i++)
        spawn("work", MODE_ACK);
    MMT_WAIT(F.base, F.all_ready, mmt_scale(15000));
    mmt_connect(F.client);
    F.want_in = N_TASKS;
    for (int id = 0; id < N_TASKS; id++)
        task("work", id, NULL);
    MMT_WAIT(F.base, F.all_in, mmt_scale(20000));
    /* Every id is in; the children stop on an event and their pipes close. */
    ck_assert_int_eq(mm_emit(F.client, F.service, "stop", NULL, 0, NULL), MM_OK);
    MMT_WAIT(F.base, F.all_eof, mmt_scale(10000));
    for (int i = 0; i < N_WORKERS; i++) {
        int st = reap(&F.kids[i]);
        ck_assert_msg(WIFEXITED(st) && WEXITSTATUS(st) == 0, "worker %d: status %#x", i, st);
    }
    assert_exactly_once();
    mm_stat_t s;
    ck_assert_int_eq(mm_queue_stat(F.client, F.service, "work", &s), MM_OK);
    ck_assert_uint_eq(s.messages, 0);
}
END_TEST

/* ---- settling after the handler returned ---- */

#define MAX_HELD 8

struct held {
    mm_msg_t *msg[MAX_HELD];
    int ids[MAX_HELD], redelivered[MAX_HELD];
    int n;
    bool got[MAX_HELD + 1]; /* got[i]: at least i deliveries */
};

static void
on_hold(mm_msg_t *msg, void *ud)
{
    struct held *h = ud;
    ck_assert_int_lt(h->n, MAX_HELD);
    h->msg[h->n] = mm_msg_ref(msg);
    h->ids[h->n] = body_id(msg);
    h->redelivered[h->n] = mm_msg_redelivered(msg);
    h->got[++h->n] = true;
}

/* A settle call made from a timer, after the handler returned. */
enum settle { SETTLE_ACK, SETTLE_REQUEUE };

struct later {
    mm_msg_t *msg;
    enum settle how;
    int rc;
    bool done;
    struct event *ev;
};

static void
on_later(evutil_socket_t fd, short what, void *arg)
{
    struct later *l = arg;
    (void) fd;
    (void) what;
    l->rc = l->how == SETTLE_ACK ? mm_msg_ack(l->msg) : mm_msg_nack(l->msg, 1);
    l->msg = mm_msg_unref(l->msg);
    l->done = true;
}

static void
settle_later(mm_msg_t *msg, enum settle how)
{
    struct later l = {.msg = msg, .how = how, .rc = 1};
    l.ev = evtimer_new(F.base, on_later, &l);
    struct timeval tv = {0, 5000};
    evtimer_add(l.ev, &tv);
    MMT_WAIT(F.base, l.done, mmt_scale(5000));
    event_free(l.ev);
    ck_assert_int_eq(l.rc, MM_OK);
}

/* Poll the queue's ready count (bounded) until it is `want`. */
static void
wait_ready_count(mm_route_t *r, uint32_t want)
{
    mm_stat_t s = {0};
    for (int i = 0; i < mmt_scale(200); i++) {
        ck_assert_int_eq(mm_route_stat(r, &s), MM_OK);
        if (s.messages == want)
            return;
        event_base_loop(F.base, EVLOOP_NONBLOCK);
    }
    ck_assert_msg(0, "ready count %u, never %u", s.messages, want);
}

START_TEST(settle_after_the_handler_returned)
{
    struct held h = {0};
    mm_route_t *r = mmt_handle(F.worker, "slow", on_hold, &h, 1); /* one task at a time */
    mmt_connect(F.worker);
    mmt_connect(F.client);
    task("slow", 1, NULL);
    task("slow", 2, NULL);
    MMT_WAIT(F.base, h.got[1], mmt_scale(5000));
    /* Task 1 is in flight and unacked: not ready, yet it holds the only
     * prefetch slot, so task 2 stays ready and is not delivered. */
    wait_ready_count(r, 1);
    mm_stat_t s;
    ck_assert_int_eq(mm_queue_stat(F.client, F.service, "slow", &s), MM_OK);
    ck_assert_uint_eq(s.messages, 1);
    ck_assert_uint_eq(s.consumers, 1);
    ck_assert_int_eq(h.n, 1);
    ck_assert_int_eq(h.ids[0], 1);
    settle_later(h.msg[0], SETTLE_ACK);
    MMT_WAIT(F.base, h.got[2], mmt_scale(5000)); /* the ack freed the slot */
    ck_assert_int_eq(h.ids[1], 2);
    ck_assert_int_eq(h.redelivered[1], 0);
    wait_ready_count(r, 0);
    settle_later(h.msg[1], SETTLE_REQUEUE);
    MMT_WAIT(F.base, h.got[3], mmt_scale(5000)); /* task 2 is back */
    ck_assert_int_eq(h.ids[2], 2);
    ck_assert_int_eq(h.redelivered[2], 1);
    settle_later(h.msg[2], SETTLE_ACK);
    task("slow", 3, NULL); /* delivered only once task 2's ack freed the slot */
    MMT_WAIT(F.base, h.got[4], mmt_scale(5000));
    ck_assert_int_eq(h.ids[3], 3);
    ck_assert_int_eq(mm_msg_ack(h.msg[3]), MM_OK);
    h.msg[3] = mm_msg_unref(h.msg[3]);
    ck_assert_int_eq(mm_route_stat(r, &s), MM_OK);
    ck_assert_uint_eq(s.messages, 0);
    ck_assert_int_eq(h.n, 4); /* nothing was delivered twice but the requeued task */
}
END_TEST

/* ---- a worker killed with a task in hand ---- */

START_TEST(killed_worker_task_is_redelivered)
{
    struct child *k = spawn("crash", MODE_HOLD);
    F.want_in = 1;
    MMT_WAIT(F.base, F.all_ready, mmt_scale(15000));
    mmt_connect(F.client);
    task("crash", 42, "crash-task");
    MMT_WAIT(F.base, F.all_in, mmt_scale(5000)); /* the child holds it, unacked */
    ck_assert_int_eq(k->ids[0], 42);
    ck_assert_int_eq(kill(k->pid, SIGKILL), 0);
    int st = reap(k);
    ck_assert(WIFSIGNALED(st) && WTERMSIG(st) == SIGKILL);
    struct held h = {0};
    ck_assert_int_eq(mm_handle(F.worker, "crash", on_hold, &h, NULL, NULL), MM_OK);
    mmt_connect(F.worker);
    MMT_WAIT(F.base, h.got[1], mmt_scale(10000));
    ck_assert_int_eq(h.ids[0], 42);
    ck_assert_int_eq(h.redelivered[0], 1);
    ck_assert_str_eq(mm_msg_request_id(h.msg[0]), "crash-task");
    ck_assert_int_eq(mm_msg_ack(h.msg[0]), MM_OK);
    mm_msg_unref(h.msg[0]);
}
END_TEST

/* ---- a task nobody handles ---- */

START_TEST(task_to_nobody_is_unroutable)
{
    mmt_connect(F.client);
    task("nobody", 7, "rid-unroutable");
    MMT_WAIT(F.base, F.ev.seen[MM_EV_UNROUTABLE], mmt_scale(5000));
    ck_assert_int_eq(F.ev.code[MM_EV_UNROUTABLE], MM_ENOROUTE);
    ck_assert_str_eq(F.ev.request_id[MM_EV_UNROUTABLE], "rid-unroutable");
    ck_assert_ptr_nonnull(strstr(F.ev.route[MM_EV_UNROUTABLE], "nobody"));
}
END_TEST

/* ---- reject, and a stream on a task ---- */

struct rej {
    int n, write_rc, end_rc, reject_rc, reply_after_rc, ids[4];
    bool sentinel;
};

static void
on_reject_first(mm_msg_t *msg, void *ud)
{
    struct rej *r = ud;
    int id = body_id(msg);
    if (r->n < 4)
        r->ids[r->n] = id;
    r->n++;
    if (id == 1) {
        r->write_rc = mm_msg_write(msg, NULL, 0);
        r->end_rc = mm_msg_end(msg, NULL, 0);
        r->reject_rc = mm_msg_reject(msg, "bad", "rejected by the test");
        r->reply_after_rc = mm_msg_reply(msg, NULL, 0);
    } else {
        ck_assert_int_eq(mm_msg_ack(msg), MM_OK);
        r->sentinel = true;
    }
}

START_TEST(reject_dead_letters_the_task)
{
    struct rej r = {0};
    mm_route_t *route = mmt_handle(F.worker, "rej", on_reject_first, &r, 1); /* one at a time */
    mmt_connect(F.worker);
    mmt_connect(F.client);
    task("rej", 1, NULL);
    task("rej", 2, NULL); /* behind it: a requeued task 1 would come first */
    MMT_WAIT(F.base, r.sentinel, mmt_scale(5000));
    ck_assert_int_eq(r.write_rc, MM_ESTATE);
    ck_assert_int_eq(r.end_rc, MM_ESTATE);
    ck_assert_int_eq(r.reject_rc, MM_OK);
    ck_assert_int_eq(r.reply_after_rc, MM_ESTATE);
    ck_assert_int_eq(r.n, 2);
    ck_assert_int_eq(r.ids[0], 1);
    ck_assert_int_eq(r.ids[1], 2);
    mm_stat_t s;
    ck_assert_int_eq(mm_route_stat(route, &s), MM_OK);
    ck_assert_uint_eq(s.messages, 0);
    /* not dropped: in the dead-letter queue (acked there before task 2 came) */
    ck_assert_int_eq(mm_deadletter_stat(F.client, F.service, &s), MM_OK);
    ck_assert_uint_eq(s.messages, 1);
}
END_TEST

static Suite *
suite(void)
{
    Suite *s = suite_create("tasks");
    TCase *tc = mmt_tcase(s, "tasks", setup, teardown, 60);
    tcase_add_test(tc, workers_share_tasks_exactly_once);
    tcase_add_test(tc, settle_after_the_handler_returned);
    tcase_add_test(tc, killed_worker_task_is_redelivered);
    tcase_add_test(tc, task_to_nobody_is_unroutable);
    tcase_add_test(tc, reject_dead_letters_the_task);
    return s;
}

int
main(void)
{
    return mmt_run(suite());
}
