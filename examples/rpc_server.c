/*
 * rpc_server: a service "calc" answering requests.
 *
 *   rpc_server [URI] [N]
 *
 * URI: argv[1] (an empty string means "not given"), else $MM_URI, else
 * $MM_TEST_URI, else the library's default (amqp://localhost). N: stop
 * after N requests (default 5, what rpc_client sends by default), or on
 * SIGINT / SIGTERM.
 *
 * Routes:
 *   add   body [a, b] (two integers): answers a + b. Anything else is
 *         answered with an error (mm_msg_reject), which the caller receives
 *         as MM_EREMOTE with our code and text.
 *   slow  "works" for one second before answering. A caller that waits less
 *         gets MM_ETIMEDOUT; our late mm_msg_reply() then returns
 *         MM_ETIMEDOUT too and sends nothing.
 *
 * rpc_client starts after us and waits (mm_wait_service) until we are
 * ready, so no start-up delay is needed. examples/run_rpc.sh runs both.
 */
#include <event2/event.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <micromsg.h>

#include "example.h"

struct slow_job;

struct server {
    struct event_base *base;
    mm_t *mm;
    long left; /* requests still to serve before we stop */
    int failed;
    struct slow_job *jobs; /* "slow" requests being worked on */
};

/* One request fully dealt with: stop the loop after the last one. */
static void
served(struct server *s)
{
    if (--s->left <= 0)
        event_base_loopbreak(s->base);
}

/* Read [a, b] from a msgpack body; 0 when the body has another shape. */
static int
read_pair(const msgpack_object *o, int64_t *a, int64_t *b)
{
    if (o->type != MSGPACK_OBJECT_ARRAY || o->via.array.size != 2)
        return 0;
    const msgpack_object *v = o->via.array.ptr;
    for (int i = 0; i < 2; i++)
        if (v[i].type != MSGPACK_OBJECT_POSITIVE_INTEGER &&
            v[i].type != MSGPACK_OBJECT_NEGATIVE_INTEGER)
            return 0;
    *a = v[0].via.i64; /* msgpack-c fills i64 for both integer kinds within range */
    *b = v[1].via.i64;
    return 1;
}

/* Route "add". The message is ours only during this call: answer now. */
static void
on_add(mm_msg_t *msg, void *ud)
{
    struct server *s = ud;
    int64_t a, b;
    int rc;
    if (!read_pair(mm_msg_body(msg), &a, &b)) {
        printf("server: add: bad arguments, answering an error\n");
        rc = mm_msg_reject(msg, "badArguments", "add wants [a, b], two integers");
    } else {
        mm_body_t *body = mm_body_new();
        if (body == NULL) {
            rc = mm_msg_reject(msg, "noMemory", "out of memory");
        } else {
            msgpack_pack_int64(mm_body_packer(body), a + b);
            printf("server: add %lld + %lld\n", (long long) a, (long long) b);
            rc = mm_msg_reply(msg, mm_body_data(body), mm_body_len(body));
            mm_body_free(body);
        }
    }
    if (rc != MM_OK) {
        fprintf(stderr, "server: answer failed: %s\n", mm_err_name(rc));
        s->failed = 1;
    }
    served(s);
}

/* A "slow" request kept past its callback (mm_msg_ref) while we work. */
struct slow_job {
    struct server *s;
    mm_msg_t *msg;
    struct event *done;
    struct slow_job **prev, *next; /* in s->jobs */
};

static void
job_free(struct slow_job *job)
{
    *job->prev = job->next;
    if (job->next != NULL)
        job->next->prev = job->prev;
    mm_msg_unref(job->msg);
    event_free(job->done);
    free(job);
}

/* The work is over: answer, even though the caller may have given up. */
static void
on_slow_done(evutil_socket_t fd, short what, void *arg)
{
    struct slow_job *job = arg;
    (void) fd;
    (void) what;
    mm_body_t *body = mm_body_new();
    mm_body_str(body, "finally done");
    int rc = mm_msg_reply(job->msg, mm_body_data(body), mm_body_len(body));
    mm_body_free(body);
    /* MM_ETIMEDOUT: the caller's deadline passed; the library already acked the request. */
    printf("server: slow: late reply -> %s\n", rc == MM_OK ? "sent" : mm_err_name(rc));
    struct server *s = job->s;
    job_free(job);
    served(s);
}

/* Route "slow": keep the message and answer from a timer a second later. */
static void
on_slow(mm_msg_t *msg, void *ud)
{
    struct server *s = ud;
    struct slow_job *job = calloc(1, sizeof *job);
    if (job == NULL || (job->done = evtimer_new(s->base, on_slow_done, job)) == NULL) {
        free(job);
        mm_msg_reject(msg, "noMemory", "out of memory");
        served(s);
        return;
    }
    job->s = s;
    job->msg = mm_msg_ref(msg); /* without a reference the message dies when we return */
    job->prev = &s->jobs;
    job->next = s->jobs;
    if (s->jobs != NULL)
        s->jobs->prev = &job->next;
    s->jobs = job;
    printf("server: slow: working for 1 s\n");
    const struct timeval one_second = {1, 0};
    evtimer_add(job->done, &one_second);
}

/* SIGINT / SIGTERM: leave the loop; main() then closes gracefully. */
static void
on_signal(evutil_socket_t sig, short what, void *arg)
{
    struct server *s = arg;
    (void) what;
    printf("server: signal %d, stopping\n", (int) sig);
    event_base_loopbreak(s->base);
}

/* The instance on our own event_base (we also watch signals on it). */
static int
start(struct server *s, const char *uri)
{
    mm_opts_t opts = MM_OPTS_INIT;
    opts.base = s->base;
    s->mm = mm_new("calc", &opts);
    if (s->mm == NULL || mm_last_code(s->mm) != MM_OK)
        return s->mm ? mm_last_code(s->mm) : MM_ENOMEM;
    int rc = mm_handle(s->mm, "add", on_add, s, NULL, NULL);
    if (rc == MM_OK)
        rc = mm_handle(s->mm, "slow", on_slow, s, NULL, NULL);
    if (rc == MM_OK)
        rc = mm_connect(s->mm, uri); /* declares both routes, then we are ready */
    return rc;
}

int
main(int argc, char **argv)
{
    setvbuf(stdout, NULL, _IOLBF, 0); /* lines in the order they happen, also in a pipe */
    struct server s = {.left = argc > 2 ? atol(argv[2]) : 5};
    s.base = event_base_new();
    if (s.base == NULL || s.left <= 0) {
        fprintf(stderr, "usage: rpc_server [URI] [N > 0]\n");
        return 2;
    }
    struct event *sigint = evsignal_new(s.base, SIGINT, on_signal, &s);
    struct event *sigterm = evsignal_new(s.base, SIGTERM, on_signal, &s);
    evsignal_add(sigint, NULL);
    evsignal_add(sigterm, NULL);
    int rc = start(&s, example_uri(argc, argv));
    if (rc != MM_OK) {
        fprintf(stderr, "server: start: %s: %s\n", mm_err_name(rc),
                s.mm ? mm_last_error(s.mm) : "out of memory");
    } else {
        printf("server: ready, serving %ld requests\n", s.left);
        fflush(stdout);
        event_base_dispatch(s.base);
    }
    mm_free(s.mm);         /* graceful: waits for answers being sent; unsettled ones go back */
    while (s.jobs != NULL) /* stopped by a signal while working: drop what we held */
        job_free(s.jobs);
    event_free(sigint);
    event_free(sigterm);
    event_base_free(s.base);
    if (rc == MM_OK && !s.failed)
        printf("server: done\n");
    return rc != MM_OK || s.failed;
}
