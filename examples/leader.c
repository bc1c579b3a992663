/*
 * leader: three replicas of one service; only the leader runs the periodic
 * job, and when the leader goes away another one takes over.
 *
 *   leader [URI]      (argv[1], else $MM_URI, else $MM_TEST_URI, else amqp://localhost)
 *
 * The replicas are three mm_t on one event_base (in real life three
 * processes or machines; the code would not change). Each has a timer that
 * runs every 100 ms and does the job only if mm_is_leader() says so: the
 * broker's exclusive lock queue decides, so two replicas never lead at once.
 *
 * Once the first leader has done its job JOBS times, we free it (as if its
 * process ended) and watch another replica step up and do the job JOBS
 * times. Exits 0 when that happened and no tick ever saw two leaders.
 */
#include <event2/event.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include <micromsg.h>

#include "example.h"

#define REPLICAS 3
#define JOBS 3

struct app;

struct replica {
    struct app *app;
    int index;
    mm_t *mm; /* NULL once freed */
    struct event *tick;
    int jobs;
};

struct app {
    struct event_base *base;
    struct replica r[REPLICAS];
    int first;   /* the replica freed as the first leader; -1 before */
    int second;  /* the replica that took over; -1 before */
    int overlap; /* ticks that saw two leaders */
};

static int
leaders(const struct app *a)
{
    int n = 0;
    for (int i = 0; i < REPLICAS; i++)
        n += a->r[i].mm != NULL && mm_is_leader(a->r[i].mm);
    return n;
}

/* Every 100 ms on every replica: the job, if this replica leads. */
static void
on_tick(evutil_socket_t fd, short what, void *arg)
{
    struct replica *r = arg;
    struct app *a = r->app;
    (void) fd;
    (void) what;
    if (leaders(a) > 1)
        a->overlap++;
    if (mm_is_leader(r->mm)) {
        r->jobs++;
        printf("replica %d: I lead, running the periodic job (#%d)\n", r->index, r->jobs);
        /* Enough jobs: first phase over (main frees us), or the takeover is shown. */
        if (r->jobs == JOBS && a->first < 0) {
            a->first = r->index;
            event_base_loopbreak(a->base);
        } else if (r->jobs == JOBS && r->index != a->first) {
            a->second = r->index;
            event_base_loopbreak(a->base);
        }
    }
    const struct timeval every = {0, 100 * 1000};
    evtimer_add(r->tick, &every);
}

/* Election events, for the show: who leads, who steps up or down. */
static void
on_event(mm_t *mm, const mm_event_t *ev, void *ud)
{
    struct replica *r = ud;
    (void) mm;
    if (ev->type == MM_EV_STEP_UP)
        printf("replica %d: stepped up\n", r->index);
    else if (ev->type == MM_EV_STEP_DOWN)
        printf("replica %d: stepped down (%s)\n", r->index, ev->text);
    else if (ev->type == MM_EV_LEADER)
        printf("replica %d: the leader is now %s\n", r->index,
               ev->leader_id ? ev->leader_id : "unknown");
}

static int
replica_start(struct app *a, int i, const char *service, const char *uri)
{
    struct replica *r = &a->r[i];
    mm_opts_t opts = MM_OPTS_INIT;
    opts.base = a->base;
    opts.on_event = on_event;
    opts.event_ud = r;
    opts.heartbeat_ms = 300;         /* peers' heartbeats; defaults are 10 s ... */
    opts.election_timeout_ms = 1000; /* ... and 15 s: short for a demo */
    *r = (struct replica){.app = a, .index = i, .mm = mm_new(service, &opts)};
    if (r->mm == NULL)
        return MM_ENOMEM;
    int rc = mm_last_code(r->mm);
    if (rc == MM_OK)
        rc = mm_connect(r->mm, uri);
    if (rc != MM_OK) {
        fprintf(stderr, "replica %d: %s: %s\n", i, mm_err_name(rc), mm_last_error(r->mm));
        return rc;
    }
    printf("replica %d: id %s\n", i, mm_id(r->mm));
    r->tick = evtimer_new(a->base, on_tick, r);
    const struct timeval now = {0, 0};
    evtimer_add(r->tick, &now);
    return MM_OK;
}

static void
replica_free(struct replica *r)
{
    if (r->tick != NULL)
        event_free(r->tick);
    mm_free(r->mm); /* closes its connection: the broker drops its lock */
    r->tick = NULL;
    r->mm = NULL;
}

/* Run the loop until a phase ends; bounded, so a lost election fails the run. */
static void
run_phase(struct app *a)
{
    const struct timeval limit = {15, 0};
    event_base_loopexit(a->base, &limit);
    event_base_dispatch(a->base);
}

int
main(int argc, char **argv)
{
    setvbuf(stdout, NULL, _IOLBF, 0);
    struct app a = {.base = event_base_new(), .first = -1, .second = -1};
    /* A service name of our own per run: another run's replicas are not ours. */
    char service[64];
    snprintf(service, sizeof service, "leader-%d", (int) getpid());
    const char *uri = example_uri(argc, argv);
    int rc = MM_OK;
    for (int i = 0; i < REPLICAS && rc == MM_OK; i++)
        rc = replica_start(&a, i, service, uri);
    if (rc == MM_OK)
        run_phase(&a); /* until the first leader did its jobs */
    if (rc == MM_OK && a.first >= 0) {
        printf("main: freeing the leader, replica %d\n", a.first);
        replica_free(&a.r[a.first]);
        run_phase(&a); /* until another one did its jobs */
    }
    for (int i = 0; i < REPLICAS; i++)
        replica_free(&a.r[i]);
    event_base_free(a.base);
    int ok = rc == MM_OK && a.first >= 0 && a.second >= 0 && a.overlap == 0;
    printf("leader: first %d, then %d took over, %d ticks with two leaders: %s\n", a.first,
           a.second, a.overlap, ok ? "ok" : "FAILED");
    return ok ? 0 : 1;
}
