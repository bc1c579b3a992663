/*
 * worker_pool: worker processes sharing a task queue, and what happens when
 * one of them dies holding a task.
 *
 *   worker_pool [URI]   (argv[1], else $MM_URI, else $MM_TEST_URI, else amqp://localhost)
 *
 * The parent forks N_WORKERS workers. Each one handles the route "work" of
 * the service (mm_handle): they all consume the same queue, and the broker
 * gives each task to one of them. A task is acked only when its worker
 * settles it (mm_msg_ack) after the work, so a worker that dies before that
 * loses nothing: the broker hands the task to another worker, flagged as
 * redelivered (mm_msg_redelivered).
 *
 * Worker 0 plays the crash: on its first task it tells the parent which
 * task it holds (event "holding", confirmed by the broker), then kills
 * itself with SIGKILL, the task still unacked. The other workers report
 * each task they finish with an event "done" [task, worker, redelivered,
 * result]. The parent queues N_TASKS tasks (mm_task), collects the reports,
 * stops the workers (SIGTERM: they close gracefully) and reaps them all.
 *
 * Exits 0 when every task was done with the right result, none twice
 * unless redelivered, and the crashed worker's task was redelivered to and
 * done by another worker.
 */
#include <event2/event.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/wait.h>
#include <unistd.h>

#include <micromsg.h>

#include "example.h"

#define N_WORKERS 3
#define N_TASKS 9

static char service[64]; /* "pool-<parent pid>": see main() */

static mm_t *
instance(struct event_base *base)
{
    mm_opts_t opts = MM_OPTS_INIT;
    opts.base = base;
    opts.flags = MM_OPT_NO_PEERS; /* no heartbeats or election: not needed here */
    return mm_new(service, &opts);
}

/* ===================== a worker (a child process) ===================== */

struct worker {
    int index;
    struct event_base *base;
    mm_t *mm;
    mm_msg_t *held; /* worker 0: the task it dies with */
};

/* Worker 0: the broker has our "holding" report; now die, task unacked. */
static void
on_holding_sent(mm_t *mm, int status, void *ud)
{
    (void) mm;
    (void) ud;
    printf("worker 0 (pid %d): report %s, dying with SIGKILL\n", (int) getpid(),
           status == MM_OK ? "confirmed" : mm_err_name(status));
    fflush(stdout);
    raise(SIGKILL); /* no cleanup, no ack: as if the machine lost power */
}

/* Worker 0's first task: keep it (a reference), report it, die when confirmed. */
static void
crash_with(struct worker *w, mm_msg_t *msg, int64_t task)
{
    w->held = mm_msg_ref(msg); /* without it the library would settle the task on return */
    mm_body_t *b = mm_body_new();
    msgpack_pack_int64(mm_body_packer(b), task);
    mm_send_opts_t so = MM_SEND_OPTS_INIT;
    so.on_sent = on_holding_sent; /* asks the broker to confirm this event */
    if (mm_emit(w->mm, NULL, "holding", mm_body_data(b), mm_body_len(b), &so) != MM_OK)
        raise(SIGKILL); /* the parent then fails: it never hears which task */
    mm_body_free(b);
}

/* Report a finished task: [task, worker, redelivered, result]. */
static int
report_done(struct worker *w, int64_t task, int redelivered)
{
    mm_body_t *b = mm_body_new();
    msgpack_packer *pk = mm_body_packer(b);
    msgpack_pack_array(pk, 4);
    msgpack_pack_int64(pk, task);
    msgpack_pack_int(pk, w->index);
    msgpack_pack_int(pk, redelivered);
    msgpack_pack_int64(pk, task * task); /* "the work" */
    int rc = mm_emit(w->mm, NULL, "done", mm_body_data(b), mm_body_len(b), NULL);
    mm_body_free(b);
    return rc;
}

/* Route "work": the body is the task number. */
static void
on_work(mm_msg_t *msg, void *ud)
{
    struct worker *w = ud;
    const msgpack_object *o = mm_msg_body(msg);
    if (o->type != MSGPACK_OBJECT_POSITIVE_INTEGER) {
        mm_msg_reject(msg, "badTask", "a task is a number"); /* to the dead-letter queue */
        return;
    }
    int64_t task = o->via.i64;
    int redelivered = mm_msg_redelivered(msg);
    printf("worker %d (pid %d): task %lld%s\n", w->index, (int) getpid(), (long long) task,
           redelivered ? " (redelivered)" : "");
    if (w->index == 0) {
        crash_with(w, msg, task);
        return;
    }
    /* Report first, then ack: a crash in between repeats the task, never loses it. */
    if (report_done(w, task, redelivered) == MM_OK)
        mm_msg_ack(msg);
    else
        mm_msg_nack(msg, 1); /* give it back for another try */
}

static void
on_term(evutil_socket_t sig, short what, void *arg)
{
    (void) sig;
    (void) what;
    event_base_loopbreak(arg);
}

static int
worker_main(int index, const char *uri)
{
    struct worker w = {.index = index, .base = event_base_new()};
    struct event *term = evsignal_new(w.base, SIGTERM, on_term, w.base);
    evsignal_add(term, NULL); /* before we consume: the parent may stop us any time after */
    w.mm = instance(w.base);
    mm_route_opts_t ro = MM_ROUTE_OPTS_INIT;
    ro.prefetch = 1; /* one task at a time: the others stay for the other workers */
    int rc = mm_last_code(w.mm);
    if (rc == MM_OK)
        rc = mm_handle(w.mm, "work", on_work, &w, &ro, NULL);
    if (rc == MM_OK)
        rc = mm_connect(w.mm, uri);
    if (rc == MM_OK)
        event_base_dispatch(w.base); /* until SIGTERM */
    else
        fprintf(stderr, "worker %d: %s: %s\n", index, mm_err_name(rc), mm_last_error(w.mm));
    mm_free(w.mm); /* graceful close */
    event_free(term);
    event_base_free(w.base);
    return rc == MM_OK ? 0 : 1;
}

/* ===================== the parent ===================== */

struct parent {
    struct event_base *base;
    mm_t *mm;
    struct event *poll;
    int polls;
    int done_count[N_TASKS]; /* reports per task */
    int done_by[N_TASKS];    /* the worker of the last report */
    int redelivered[N_TASKS];
    int held_task; /* the task worker 0 died with; -1: not heard yet */
    int finished;  /* tasks with at least one report */
    int wrong;     /* bad reports */
};

static void
maybe_done(struct parent *p)
{
    if (p->finished == N_TASKS && p->held_task >= 0)
        event_base_loopbreak(p->base);
}

/* Event "holding": worker 0 is about to die with this task. */
static void
on_holding(mm_msg_t *msg, void *ud)
{
    struct parent *p = ud;
    p->held_task = (int) mm_msg_body(msg)->via.i64;
    printf("parent: worker 0 holds task %d and is dying\n", p->held_task);
    maybe_done(p);
}

/* Event "done": [task, worker, redelivered, result]. */
static void
on_done(mm_msg_t *msg, void *ud)
{
    struct parent *p = ud;
    const msgpack_object *o = mm_msg_body(msg);
    if (o->type != MSGPACK_OBJECT_ARRAY || o->via.array.size != 4) {
        p->wrong++;
        return;
    }
    const msgpack_object *v = o->via.array.ptr;
    int64_t task = v[0].via.i64;
    if (task < 0 || task >= N_TASKS || v[3].via.i64 != task * task) {
        p->wrong++;
        return;
    }
    /* A second report is fine only for a redelivered task (at least once). */
    if (p->done_count[task]++ > 0 && !v[2].via.i64)
        p->wrong++;
    if (p->done_count[task] == 1)
        p->finished++;
    p->done_by[task] = (int) v[1].via.i64;
    p->redelivered[task] |= (int) v[2].via.i64;
    maybe_done(p);
}

/* Queue the tasks; each goes to one worker. */
static void
queue_tasks(struct parent *p)
{
    mm_body_t *b = mm_body_new();
    for (int i = 0; i < N_TASKS; i++) {
        mm_body_reset(b);
        msgpack_pack_int(mm_body_packer(b), i);
        int rc = mm_task(p->mm, service, "work", mm_body_data(b), mm_body_len(b), NULL);
        if (rc != MM_OK) {
            fprintf(stderr, "parent: mm_task: %s\n", mm_last_error(p->mm));
            p->wrong++;
            event_base_loopbreak(p->base);
        }
    }
    mm_body_free(b);
    printf("parent: %d tasks queued\n", N_TASKS);
}

/* Wait (bounded) until every worker consumes the queue, then queue the
 * tasks: queued earlier, the first worker up could take them all. */
static void
on_poll(evutil_socket_t fd, short what, void *arg)
{
    struct parent *p = arg;
    (void) fd;
    (void) what;
    mm_stat_t st = {0};
    int rc = mm_queue_stat(p->mm, service, "work", &st); /* MM_ENOENT until declared */
    if (rc == MM_OK && st.consumers == N_WORKERS) {
        printf("parent: %u workers consume the queue\n", st.consumers);
        queue_tasks(p);
        return;
    }
    if (++p->polls > 200) { /* 10 s */
        fprintf(stderr, "parent: the workers did not all start (%u)\n", st.consumers);
        p->wrong++;
        event_base_loopbreak(p->base);
        return;
    }
    const struct timeval every = {0, 50 * 1000};
    evtimer_add(p->poll, &every);
}

/* The parent's instance: listens to the reports, polls for the workers. */
static int
parent_run(struct parent *p, const char *uri)
{
    p->mm = instance(p->base);
    int rc = mm_last_code(p->mm);
    if (rc == MM_OK)
        rc = mm_listen(p->mm, NULL, "done", on_done, p, NULL, NULL);
    if (rc == MM_OK)
        rc = mm_listen(p->mm, NULL, "holding", on_holding, p, NULL, NULL);
    if (rc == MM_OK)
        rc = mm_connect(p->mm, uri);
    if (rc != MM_OK) {
        fprintf(stderr, "parent: %s: %s\n", mm_err_name(rc), mm_last_error(p->mm));
        return rc;
    }
    p->poll = evtimer_new(p->base, on_poll, p);
    const struct timeval now = {0, 0}; /* first poll from the loop: loopbreak works there */
    evtimer_add(p->poll, &now);
    const struct timeval limit = {20, 0}; /* a lost report fails the run, not hangs it */
    event_base_loopexit(p->base, &limit);
    event_base_dispatch(p->base);
    event_free(p->poll);
    return MM_OK;
}

/* Stop and reap every worker; 1 when worker 0 died of SIGKILL and the others exited 0. */
static int
reap(const pid_t *pids, int n)
{
    int ok = 1;
    for (int k = 0; k < n; k++)
        kill(pids[k], SIGTERM); /* worker 0 is already gone: harmless */
    for (int k = 0; k < n; k++) {
        int st = 0;
        waitpid(pids[k], &st, 0);
        int expected = k == 0 ? WIFSIGNALED(st) && WTERMSIG(st) == SIGKILL
                              : WIFEXITED(st) && WEXITSTATUS(st) == 0;
        if (!expected) {
            fprintf(stderr, "parent: worker %d ended badly (status 0x%x)\n", k, st);
            ok = 0;
        }
    }
    return ok;
}

/* The verdict, from the reports. */
static int
verify(const struct parent *p)
{
    int ok = p->finished == N_TASKS && p->wrong == 0 && p->held_task >= 0;
    if (ok) {
        int t = p->held_task;
        printf("parent: task %d, held by the dead worker, was redelivered and done by worker %d\n",
               t, p->done_by[t]);
        ok = p->redelivered[t] && p->done_by[t] != 0;
    }
    printf("parent: %d/%d tasks done, %d bad reports: %s\n", p->finished, N_TASKS, p->wrong,
           ok ? "ok" : "FAILED");
    return ok;
}

int
main(int argc, char **argv)
{
    setvbuf(stdout, NULL, _IOLBF, 0); /* lines in the order they happen, also in a pipe */
    const char *uri = example_uri(argc, argv);
    /* A service name of our own per run: tasks that an interrupted earlier
     * run left in its (durable) queue cannot mix with ours. */
    snprintf(service, sizeof service, "pool-%d", (int) getpid());
    pid_t pids[N_WORKERS];
    fflush(stdout); /* else the children would print our buffered output again */
    for (int k = 0; k < N_WORKERS; k++) {
        pids[k] = fork();
        if (pids[k] == 0)
            exit(worker_main(k, uri)); /* the child never returns here */
        if (pids[k] < 0) {
            perror("fork");
            reap(pids, k);
            return 2;
        }
    }
    struct parent p = {.base = event_base_new(), .held_task = -1};
    int rc = parent_run(&p, uri);
    mm_free(p.mm);
    event_base_free(p.base);
    int reaped_ok = reap(pids, N_WORKERS);
    return rc == MM_OK && verify(&p) && reaped_ok ? 0 : 1;
}
