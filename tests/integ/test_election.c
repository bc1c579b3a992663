/* Integration: leader election among the instances of one service
 * (PROTOCOL.md 7, include/micromsg.h "Peers and election"): consensus among
 * 2, 10 and a random 2-15 instances, a lone instance and a later joiner, a
 * leader closed cleanly, a leader process killed with SIGKILL (failover time,
 * median of 5), repeated kills until one is left, the leader event emitted
 * once per leader, a foreign peer claiming leadership without the lock, a
 * protocol-only leader holding the lock (the protocol's election-timeout
 * path), the first consensus with the default settings, and a leader whose
 * connection the broker closes. Leader processes are forked children with their own
 * mm_t; they report through a pipe, die with the test (PR_SET_PDEATHSIG,
 * alarm) and are always reaped. Each test prints what it measured. */
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
#include <unistd.h>

#include "internal.h"
#include "micromsg.h"
#include "mmt.h"
#include "mmt_fx.h"
#include "mmt_peer.h"

#define HB_MS 250        /* heartbeat_ms in tests */
#define ET_MS 1000       /* election_timeout_ms in tests */
#define SETTLE_MS 1500   /* an observation period: several heartbeats, past the election timeout */
#define FAILOVER_MS 2000 /* the bound: a new leader within 2 s */
#define WAIT_MS 10000
#define MAX_INST 16
#define MAX_KIDS 5
#define KILLS 5
#define CHILD_LIFE_S 90 /* a child never outlives this, whatever happens */

/*
 * Followers learn the leader's id (mm_leader_id, MM_EV_LEADER) only from the
 * peers module's heartbeats (peer.alive with isMaster). The asserts marked
 * HEARTBEATS need them; the lock itself (mm_is_leader, STEP_UP/DOWN) does not.
 */
#ifndef HEARTBEATS
#define HEARTBEATS 1
#endif

/* ---- in-process instances ---- */

struct inst {
    mm_t *mm;
    int ups, downs, leader_evs, reconnects, disconnects;
    uint64_t up_ms, down_ms, disconnect_ms;
    bool leader_at_disconnect; /* mm_is_leader when MM_EV_DISCONNECTED came */
    char leader_ev_id[40];     /* the last MM_EV_LEADER's id ("" for none) */
    char leader_evs_seen[160]; /* every MM_EV_LEADER: the first 8 characters of each id */
};

struct fx {
    struct event_base *base;
    char service[64];
    struct inst in[MAX_INST];
    int n;
    int ups, downs;                /* STEP_UP, STEP_DOWN across the instances */
    bool stepped_up, stepped_down; /* flags for MMT_WAIT; tests reset them */
    int last_up;                   /* the instance of the last STEP_UP */
    struct event *checker;         /* counts the leaders every few ms while observing */
    int checks, min_leaders, max_leaders;
    bool never; /* stays false: mmt_wait on it runs the loop for a given time */
};

static struct fx F;

static void
on_inst_event(mm_t *mm, const mm_event_t *ev, void *ud)
{
    struct inst *i = ud;
    if (ev->type == MM_EV_STEP_UP) {
        ck_assert_ptr_nonnull(ev->leader_id);
        ck_assert_str_eq(ev->leader_id, mm_id(mm));
        i->ups++;
        F.ups++;
        i->up_ms = mmt_now_ms();
        F.last_up = (int) (i - F.in);
        F.stepped_up = true;
    } else if (ev->type == MM_EV_STEP_DOWN) {
        i->downs++;
        F.downs++;
        i->down_ms = mmt_now_ms();
        F.stepped_down = true;
    } else if (ev->type == MM_EV_LEADER) {
        i->leader_evs++;
        snprintf(i->leader_ev_id, sizeof i->leader_ev_id, "%s", ev->leader_id ? ev->leader_id : "");
        size_t n = strlen(i->leader_evs_seen);
        snprintf(i->leader_evs_seen + n, sizeof i->leader_evs_seen - n, " %.8s",
                 ev->leader_id ? ev->leader_id : "none");
    } else if (ev->type == MM_EV_RECONNECTED) {
        i->reconnects++;
    } else if (ev->type == MM_EV_DISCONNECTED) {
        i->disconnects++;
        i->disconnect_ms = mmt_now_ms();
        i->leader_at_disconnect = mm_is_leader(mm);
    }
}

static mm_opts_t
test_opts(void)
{
    mm_opts_t o = MM_OPTS_INIT;
    o.heartbeat_ms = HB_MS;
    o.election_timeout_ms = ET_MS;
    return o;
}

/* A new instance of F.service with `o` (NULL: test_opts()). */
static struct inst *
add(const mm_opts_t *o)
{
    ck_assert_int_lt(F.n, MAX_INST);
    struct inst *i = &F.in[F.n++];
    *i = (struct inst){0};
    mm_opts_t opts = o ? *o : test_opts();
    opts.base = F.base;
    opts.on_event = on_inst_event;
    opts.event_ud = i;
    i->mm = mm_new(F.service, &opts);
    ck_assert_ptr_nonnull(i->mm);
    ck_assert_int_eq(mm_last_code(i->mm), MM_OK);
    return i;
}

static void
add_connected(int n)
{
    for (int k = 0; k < n; k++)
        mmt_connect(add(NULL)->mm);
}

static void
free_all(void)
{
    for (int k = 0; k < F.n; k++) {
        mm_free(F.in[k].mm);
        F.in[k].mm = NULL;
    }
}

/* How many instances say mm_is_leader; *who is the last of them. */
static int
leaders(int *who)
{
    int n = 0;
    for (int k = 0; k < F.n; k++)
        if (F.in[k].mm != NULL && mm_is_leader(F.in[k].mm)) {
            n++;
            if (who != NULL)
                *who = k;
        }
    return n;
}

static void
on_check(evutil_socket_t fd, short what, void *arg)
{
    (void) fd;
    (void) what;
    (void) arg;
    int n = leaders(NULL);
    F.checks++;
    if (n < F.min_leaders)
        F.min_leaders = n;
    if (n > F.max_leaders)
        F.max_leaders = n;
}

/* Run the loop for ms (an observation period, not a synchronisation), counting the
 * leaders every 10 ms; assert that there were exactly `want` at every check. */
static void
observe_leaders(int ms, int want, const char *when)
{
    F.checks = 0;
    F.min_leaders = MAX_INST;
    F.max_leaders = 0;
    struct timeval tv = {0, 10000};
    event_add(F.checker, &tv);
    mmt_wait(F.base, &F.never, ms);
    event_del(F.checker);
    ck_assert_int_gt(F.checks, 0);
    ck_assert_msg(F.min_leaders == want && F.max_leaders == want,
                  "%s: between %d and %d leaders over %d checks", when, F.min_leaders,
                  F.max_leaders, F.checks);
}

static void
observe_one_leader(int ms, const char *when)
{
    observe_leaders(ms, 1, when);
}

static void
setup(void)
{
    memset(&F, 0, sizeof F);
    F.base = mmt_base_new();
    mmt_unique("election", F.service, sizeof F.service);
    F.checker = event_new(F.base, -1, EV_PERSIST, on_check, NULL);
    ck_assert_ptr_nonnull(F.checker);
    F.last_up = -1;
}

static void kids_reap_all(void);

static void
teardown(void)
{
    kids_reap_all();
    free_all();
    event_free(F.checker);
    mmt_base_free(F.base);
}

/* HEARTBEATS: every live instance names `id` as the leader, and its last leader event did. */
static void
assert_all_follow_id(const char *id)
{
    for (int k = 0; k < F.n; k++) {
        if (F.in[k].mm == NULL || !mm_is_connected(F.in[k].mm))
            continue;
        const char *l = mm_leader_id(F.in[k].mm);
        ck_assert_msg(l != NULL && strcmp(l, id) == 0, "instance %d follows %s, not %s", k,
                      l ? l : "nobody", id);
        ck_assert_str_eq(F.in[k].leader_ev_id, id);
    }
}

static bool
all_follow_id(const char *id)
{
    for (int k = 0; k < F.n; k++) {
        if (F.in[k].mm == NULL || !mm_is_connected(F.in[k].mm))
            continue;
        const char *l = mm_leader_id(F.in[k].mm);
        if (l == NULL || strcmp(l, id) != 0)
            return false;
    }
    return true;
}

/* HEARTBEATS: wait (bounded) until every live instance names `id`; how long it took. */
static uint64_t
wait_all_follow_id(const char *id, int ms)
{
    uint64_t t0 = mmt_now_ms();
    while (!all_follow_id(id) && mmt_now_ms() - t0 < (uint64_t) ms) {
        bool tick = false;
        mmt_wait(F.base, &tick, 10);
    }
    assert_all_follow_id(id);
    return mmt_now_ms() - t0;
}

/* HEARTBEATS: the same for in-process instance `leader`. */
static uint64_t
wait_all_follow(int leader, int ms)
{
    return wait_all_follow_id(mm_id(F.in[leader].mm), ms);
}

/* ---- consensus ---- */

static void
consensus(int n)
{
    uint64_t t0 = mmt_now_ms();
    add_connected(n);
    MMT_WAIT(F.base, F.stepped_up, mmt_scale(WAIT_MS));
    uint64_t up = F.in[F.last_up].up_ms - t0;
    observe_one_leader(SETTLE_MS, "consensus");
    ck_assert_int_eq(F.ups, 1); /* exactly one STEP_UP across all */
    ck_assert_int_eq(F.downs, 0);
    int who = -1;
    ck_assert_int_eq(leaders(&who), 1);
    ck_assert_int_eq(who, F.last_up);
    ck_assert_str_eq(mm_leader_id(F.in[who].mm), mm_id(F.in[who].mm));
    if (HEARTBEATS)
        wait_all_follow(who, mmt_scale(4 * HB_MS));
    printf("election: %d instances: one leader %llu ms after the first connect\n", n,
           (unsigned long long) up);
}

START_TEST(consensus_of_2)
{
    consensus(2);
}
END_TEST

START_TEST(consensus_of_10)
{
    consensus(10);
}
END_TEST

START_TEST(consensus_of_random_2_to_15)
{
    unsigned seed = (unsigned) getpid() ^ (unsigned) mmt_now_ms();
    srand(seed);
    int n = 2 + rand() % 14;
    printf("election: random consensus: seed %u, %d instances\n", seed, n);
    consensus(n);
}
END_TEST

/* ---- a lone instance; a later joiner ---- */

START_TEST(alone_elects_itself_and_a_joiner_keeps_the_leader)
{
    struct inst *a = add(NULL);
    uint64_t t0 = mmt_now_ms();
    mmt_connect(a->mm);
    MMT_WAIT(F.base, F.stepped_up, mmt_scale(WAIT_MS));
    ck_assert(mm_is_leader(a->mm));
    ck_assert_str_eq(mm_leader_id(a->mm), mm_id(a->mm));
    printf("election: alone: leader %llu ms after connect\n", (unsigned long long) (a->up_ms - t0));
    struct inst *b = add(NULL);
    mmt_connect(b->mm);
    observe_one_leader(SETTLE_MS, "after the joiner connected"); /* past the election timeout */
    ck_assert(mm_is_leader(a->mm));
    ck_assert(!mm_is_leader(b->mm));
    ck_assert_int_eq(b->ups, 0);   /* no STEP_UP on the joiner */
    ck_assert_int_eq(a->downs, 0); /* no STEP_DOWN on the leader */
    ck_assert_int_eq(a->ups, 1);
    if (HEARTBEATS)
        wait_all_follow(0, mmt_scale(4 * HB_MS));
}
END_TEST

/* ---- a leader closed cleanly ---- */

/* Close the current leader with mm_close (or mm_free); the new leader's delay. */
static uint64_t
close_leader(bool free_it)
{
    int old = -1;
    ck_assert_int_eq(leaders(&old), 1);
    int ups = F.ups;
    F.stepped_up = false;
    uint64_t t0 = mmt_now_ms();
    if (free_it) {
        mm_free(F.in[old].mm);
        F.in[old].mm = NULL;
    } else {
        ck_assert_int_eq(mm_close(F.in[old].mm), MM_OK);
        ck_assert(!mm_is_leader(F.in[old].mm));
    }
    MMT_WAIT(F.base, F.stepped_up, mmt_scale(WAIT_MS));
    uint64_t dt = F.in[F.last_up].up_ms - t0;
    ck_assert_int_ne(F.last_up, old);
    ck_assert_int_eq(F.ups, ups + 1);
    observe_one_leader(SETTLE_MS, "after the leader closed");
    ck_assert_int_eq(F.ups, ups + 1);
    if (HEARTBEATS)
        wait_all_follow(F.last_up, mmt_scale(4 * HB_MS));
    return dt;
}

START_TEST(leader_closed_cleanly_is_replaced)
{
    add_connected(3);
    MMT_WAIT(F.base, F.stepped_up, mmt_scale(WAIT_MS));
    observe_one_leader(HB_MS, "before");
    int first = F.last_up;
    uint64_t closed = close_leader(false);
    ck_assert_int_eq(F.in[first].ups, 1);
    ck_assert_int_eq(F.in[first].downs, 1); /* mm_close: this instance stopped leading */
    uint64_t freed = close_leader(true);
    printf("election: leader closed (mm_close): new leader in %llu ms; freed (mm_free): %llu ms\n",
           (unsigned long long) closed, (unsigned long long) freed);
    ck_assert_uint_lt(closed, (uint64_t) mmt_scale(FAILOVER_MS));
    ck_assert_uint_lt(freed, (uint64_t) mmt_scale(FAILOVER_MS));
}
END_TEST

/* ---- child processes: an instance each, reporting through a pipe ---- */

enum { REC_READY, REC_UP, REC_DOWN };

/* One pipe record (atomic: smaller than PIPE_BUF). */
struct rec {
    int type;
    uint64_t ms; /* CLOCK_MONOTONIC: comparable across processes */
    char id[40];
};

struct kid {
    pid_t pid;
    int fd;
    struct event *ev;
    bool leader, dead;
    int ups, downs, errors;
    uint64_t up_ms;
    char id[40];
};

static struct kid kids[MAX_KIDS];
static int nkids;
static bool kid_up; /* a flag for MMT_WAIT; tests reset it */

static void
child_say(int fd, int type, const char *id)
{
    struct rec r = {.type = type, .ms = mmt_now_ms()};
    snprintf(r.id, sizeof r.id, "%s", id);
    if (write(fd, &r, sizeof r) != (ssize_t) sizeof r)
        _exit(6);
}

static void
on_child_event(mm_t *mm, const mm_event_t *ev, void *ud)
{
    int fd = (int) (intptr_t) ud;
    if (ev->type == MM_EV_STEP_UP)
        child_say(fd, REC_UP, mm_id(mm));
    else if (ev->type == MM_EV_STEP_DOWN)
        child_say(fd, REC_DOWN, mm_id(mm));
}

/* Never returns. No Check calls here: this is not the test process. */
static void
child_main(const char *uri, const char *service, int fd)
{
    alarm(CHILD_LIFE_S);
    mm_opts_t o = test_opts();
    o.on_event = on_child_event;
    o.event_ud = (void *) (intptr_t) fd;
    mm_t *mm = mm_new(service, &o);
    if (mm == NULL || mm_connect(mm, uri) != MM_OK)
        _exit(3);
    child_say(fd, REC_READY, mm_id(mm));
    int rc = mm_run(mm);
    mm_free(mm);
    _exit(rc == MM_OK ? 0 : 4);
}

static void
on_record(struct kid *k, const struct rec *r)
{
    if (r->type == REC_READY) {
        snprintf(k->id, sizeof k->id, "%s", r->id);
    } else if (r->type == REC_UP) {
        k->leader = kid_up = true;
        k->ups++;
        k->up_ms = r->ms;
    } else if (r->type == REC_DOWN) {
        k->leader = false;
        k->downs++;
    } else {
        k->errors++;
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
on_kid_pipe(evutil_socket_t fd, short what, void *arg)
{
    struct kid *k = arg;
    (void) what;
    int end = mmt_read_records(fd, sizeof(struct rec), on_record_bytes, k);
    if (end > 0)
        event_del(k->ev);
    else if (end < 0)
        k->errors++;
}

static struct kid *
spawn(void)
{
    ck_assert_int_lt(nkids, MAX_KIDS);
    const char *uri = mmt_uri();
    int fd = -1;
    pid_t pid = mmt_fork_piped(&fd, false);
    if (pid == 0)
        child_main(uri, F.service, fd);
    struct kid *k = &kids[nkids++];
    *k = (struct kid){.pid = pid, .fd = fd};
    k->ev = event_new(F.base, fd, EV_READ | EV_PERSIST, on_kid_pipe, k);
    ck_assert_ptr_nonnull(k->ev);
    event_add(k->ev, NULL);
    return k;
}

/* SIGKILL a child and reap it; the time of the kill. */
static uint64_t
kill_kid(struct kid *k)
{
    uint64_t t0 = mmt_now_ms();
    ck_assert_int_eq(kill(k->pid, SIGKILL), 0);
    int st = 0;
    ck_assert_int_eq(waitpid(k->pid, &st, 0), k->pid);
    ck_assert(WIFSIGNALED(st) && WTERMSIG(st) == SIGKILL);
    k->pid = 0;
    k->dead = true;
    k->leader = false;
    return t0;
}

static void
kids_reap_all(void)
{
    for (int i = 0; i < nkids; i++) {
        struct kid *k = &kids[i];
        if (k->pid > 0) {
            kill(k->pid, SIGKILL);
            waitpid(k->pid, NULL, 0);
        }
        if (k->ev != NULL)
            event_free(k->ev);
        if (k->fd >= 0)
            close(k->fd);
        *k = (struct kid){.fd = -1};
    }
    nkids = 0;
    kid_up = false;
}

/* ---- a leader process killed with SIGKILL ---- */

/* One round: a child leads, two in-process followers; kill it; the new leader's delay
 * (from the kill to MM_EV_STEP_UP). */
static uint64_t
failover_round(int round)
{
    mmt_unique("election-kill", F.service, sizeof F.service);
    struct kid *k = spawn();
    MMT_WAIT(F.base, kid_up, mmt_scale(WAIT_MS));
    add_connected(2);
    bool never = false;
    mmt_wait(F.base, &never, 2 * HB_MS); /* followers settle in line; none may step up */
    if (HEARTBEATS)
        wait_all_follow_id(k->id, mmt_scale(4 * HB_MS));
    ck_assert_int_eq(F.ups, 0);
    ck_assert_int_eq(leaders(NULL), 0);
    ck_assert(k->leader);
    uint64_t t0 = kill_kid(k);
    MMT_WAIT(F.base, F.stepped_up, mmt_scale(WAIT_MS));
    uint64_t dt = F.in[F.last_up].up_ms - t0;
    observe_one_leader(3 * HB_MS, "after the kill");
    ck_assert_int_eq(F.ups, 1);
    if (HEARTBEATS) {
        wait_all_follow(F.last_up, mmt_scale(4 * HB_MS));
        for (int i = 0; i < F.n; i++) /* the child, then the new leader: no repeats */
            ck_assert_msg(F.in[i].leader_evs == 2, "instance %d: leader events:%s (child %.8s)", i,
                          F.in[i].leader_evs_seen, k->id);
    }
    printf("election: kill %d: new leader %llu ms after SIGKILL\n", round + 1,
           (unsigned long long) dt);
    free_all();
    F.n = 0;
    F.ups = F.downs = 0;
    F.stepped_up = false;
    kids_reap_all();
    return dt;
}

static int
cmp_u64(const void *a, const void *b)
{
    uint64_t x = *(const uint64_t *) a, y = *(const uint64_t *) b;
    return x < y ? -1 : x > y;
}

START_TEST(killed_leader_process_is_replaced_within_2s)
{
    uint64_t dt[KILLS];
    for (int r = 0; r < KILLS; r++)
        dt[r] = failover_round(r);
    uint64_t sorted[KILLS];
    memcpy(sorted, dt, sizeof dt);
    qsort(sorted, KILLS, sizeof sorted[0], cmp_u64);
    printf("election: SIGKILLed leader: median failover %llu ms over %d kills (min %llu, max "
           "%llu)\n",
           (unsigned long long) sorted[KILLS / 2], KILLS, (unsigned long long) sorted[0],
           (unsigned long long) sorted[KILLS - 1]);
    for (int r = 0; r < KILLS; r++)
        ck_assert_msg(dt[r] < (uint64_t) mmt_scale(FAILOVER_MS), "kill %d: %llu ms", r + 1,
                      (unsigned long long) dt[r]);
}
END_TEST

/* ---- repeated kills until one is left ---- */

/* How many live children claim to lead (by their STEP_UP/STEP_DOWN reports); *who is one. */
static int
kid_leaders(int *who)
{
    int n = 0;
    for (int i = 0; i < nkids; i++)
        if (!kids[i].dead && kids[i].leader) {
            n++;
            if (who != NULL)
                *who = i;
        }
    return n;
}

/* Run the loop for ms, asserting that exactly one live child leads at every check. */
static void
observe_one_kid_leader(int ms, const char *when)
{
    uint64_t end = mmt_now_ms() + (uint64_t) ms;
    int checks = 0;
    while (mmt_now_ms() < end) {
        bool tick = false;
        mmt_wait(F.base, &tick, 10);
        int n = kid_leaders(NULL);
        ck_assert_msg(n == 1, "%s: %d children lead", when, n);
        checks++;
    }
    ck_assert_int_gt(checks, 0);
}

/* HEARTBEATS: the observer names the leader child. */
static void
observer_follows(mm_t *obs, const struct kid *k)
{
    uint64_t t0 = mmt_now_ms();
    const char *l = NULL;
    while ((l = mm_leader_id(obs)) == NULL || strcmp(l, k->id) != 0) {
        ck_assert_msg(mmt_now_ms() - t0 < (uint64_t) mmt_scale(4 * HB_MS),
                      "the observer follows %s, not %s", l ? l : "nobody", k->id);
        bool tick = false;
        mmt_wait(F.base, &tick, 10);
    }
    ck_assert(!mm_is_leader(obs));
}

START_TEST(repeated_kills_until_one_is_left)
{
    for (int i = 0; i < MAX_KIDS; i++)
        spawn();
    mm_opts_t o = test_opts();
    o.flags = MM_OPT_NO_ELECTION;
    struct inst *obs = add(&o);
    mmt_connect(obs->mm);
    MMT_WAIT(F.base, kid_up, mmt_scale(WAIT_MS));
    for (int left = MAX_KIDS; left >= 1; left--) {
        observe_one_kid_leader(SETTLE_MS, "settled");
        int who = -1;
        ck_assert_int_eq(kid_leaders(&who), 1);
        ck_assert_int_eq(kids[who].ups, 1); /* a child leads once: no flapping */
        if (HEARTBEATS)
            observer_follows(obs->mm, &kids[who]);
        if (left == 1)
            break;
        kid_up = false;
        uint64_t t0 = kill_kid(&kids[who]);
        MMT_WAIT(F.base, kid_up, mmt_scale(WAIT_MS));
        int next = -1;
        ck_assert_int_eq(kid_leaders(&next), 1);
        uint64_t dt = kids[next].up_ms - t0;
        printf("election: %d children left: new leader %llu ms after SIGKILL\n", left - 1,
               (unsigned long long) dt);
        ck_assert_uint_lt(dt, (uint64_t) mmt_scale(FAILOVER_MS));
    }
    for (int i = 0; i < nkids; i++)
        ck_assert_int_eq(kids[i].errors, 0);
    ck_assert_int_eq(obs->ups, 0); /* the observer never takes part */
    if (HEARTBEATS)                /* one leader event per leader: no repeats */
        ck_assert_msg(obs->leader_evs == MAX_KIDS, "the observer's leader events:%s",
                      obs->leader_evs_seen);
}
END_TEST

/* ---- the leader event, once per leader ---- */

START_TEST(leader_event_is_not_repeated)
{
    add_connected(3);
    MMT_WAIT(F.base, F.stepped_up, mmt_scale(WAIT_MS));
    int leader = F.last_up;
    observe_one_leader(8 * HB_MS, "settle");
    for (int k = 0; k < F.n; k++) {
        printf("election: instance %d%s: %d leader event(s) over %d heartbeats\n", k,
               k == leader ? " (leader)" : "", F.in[k].leader_evs, 8);
        ck_assert_int_le(F.in[k].leader_evs, 1);
        if (k == leader || HEARTBEATS)
            ck_assert_int_eq(F.in[k].leader_evs, 1);
    }
    ck_assert_str_eq(F.in[leader].leader_ev_id, mm_id(F.in[leader].mm));
    if (HEARTBEATS)
        assert_all_follow_id(mm_id(F.in[leader].mm));
}
END_TEST

/* ---- a foreign peer claiming to lead without the lock ---- */

/* A made-up instance id: nobody holds the lock under it. */
#define FAKE_ID "00000000-dead-4bee-8f00-000000000001"

struct liar {
    struct mmt_peer p;
    char key[160];
    int sent;
};

static void
liar_claim(evutil_socket_t fd, short what, void *arg)
{
    struct liar *l = arg;
    (void) fd;
    (void) what;
    char body[512];
    int n = snprintf(body, sizeof body,
                     "{\"id\":\"%s\",\"name\":\"%s\",\"isReady\":true,\"isMaster\":true,"
                     "\"leaderId\":\"%s\",\"elapsedMs\":1000,"
                     "\"startedAt\":\"2024-01-01T00:00:00.000Z\",\"memoryUsage\":{\"rss\":1,"
                     "\"heapTotal\":1,\"heapUsed\":1,\"external\":0},\"knownPeers\":4}",
                     FAKE_ID, F.service, FAKE_ID);
    ck_assert(n > 0 && (size_t) n < sizeof body);
    struct mmt_table mms = {0}, h = {0};
    mmt_table_table(&h, "__mms", &mms);
    amqp_basic_properties_t bp = {
        ._flags = AMQP_BASIC_CONTENT_TYPE_FLAG | AMQP_BASIC_HEADERS_FLAG,
        .content_type = amqp_cstring_bytes("application/json"),
        .headers = mmt_table_of(&h),
    };
    int st =
        amqp_basic_publish(l->p.c, 1, amqp_cstring_bytes("x.pubSub"), amqp_cstring_bytes(l->key), 0,
                           0, &bp, (amqp_bytes_t){(size_t) n, body});
    ck_assert_int_eq(st, AMQP_STATUS_OK);
    l->sent++;
}

/* The raw peer claims every half heartbeat from the loop; the timer (returned) is the caller's. */
static struct event *
liar_start(struct liar *l)
{
    mmt_peer_open(&l->p);
    l->sent = 0;
    snprintf(l->key, sizeof l->key, "internal.%s.peer.alive", F.service);
    amqp_exchange_declare(l->p.c, 1, amqp_cstring_bytes("x.pubSub"), amqp_cstring_bytes("topic"), 0,
                          1, 0, 0, amqp_empty_table);
    mmt_peer_ok(&l->p, "exchange.declare x.pubSub");
    struct event *t = event_new(F.base, -1, EV_PERSIST, liar_claim, l);
    ck_assert_ptr_nonnull(t);
    struct timeval tv = {0, (HB_MS / 2) * 1000};
    event_add(t, &tv);
    return t;
}

START_TEST(a_claim_without_the_lock_makes_no_second_leader)
{
    add_connected(3);
    MMT_WAIT(F.base, F.stepped_up, mmt_scale(WAIT_MS));
    int leader = F.last_up;
    struct liar l;
    struct event *t = liar_start(&l);
    observe_one_leader(2 * ET_MS + SETTLE_MS, "while a peer claims to lead"); /* past the timeout */
    event_free(t);
    ck_assert_int_gt(l.sent, 10);
    ck_assert(mm_is_leader(F.in[leader].mm));
    ck_assert_int_eq(F.ups, 1);
    ck_assert_int_eq(F.downs, 0);
    for (int k = 0; k < F.n; k++) {
        const char *id = mm_leader_id(F.in[k].mm);
        printf("election: fake claims (%d sent): instance %d%s follows %s, %d leader event(s)\n",
               l.sent, k, k == leader ? " (leader)" : "", id ? id : "nobody", F.in[k].leader_evs);
        /* Followers keep the leader they follow while it heartbeats: no flipping. */
        if (HEARTBEATS) {
            ck_assert_int_eq(F.in[k].leader_evs, 1);
            ck_assert_str_eq(id, mm_id(F.in[leader].mm));
        }
    }
    ck_assert_str_eq(mm_leader_id(F.in[leader].mm), mm_id(F.in[leader].mm));
    mmt_peer_close(&l.p);
}
END_TEST

/* ---- a replica that knows only the protocol holds the lock ---- */

/* The raw peer holds internal.<service>.lock (PROTOCOL.md 7) and says so every half heartbeat,
 * as a protocol-only leader would: no micromsg instance claims. When its connection closes,
 * the candidates find the lock free by the protocol's rule (no leader heard for the election
 * timeout, at a heartbeat tick): the token does not help here, nobody of ours died. */
START_TEST(a_protocol_only_leader_is_followed_then_replaced)
{
    struct liar l;
    struct event *t = liar_start(&l);
    char lock[160];
    snprintf(lock, sizeof lock, "internal.%s.lock", F.service);
    amqp_queue_declare(l.p.c, 1, amqp_cstring_bytes(lock), 0, 1, 1, 0, amqp_empty_table);
    mmt_peer_ok(&l.p, "queue.declare of the lock");
    add_connected(3);
    observe_leaders(ET_MS + SETTLE_MS, 0, "while the protocol-only peer holds the lock");
    ck_assert_int_eq(F.ups, 0);
    if (HEARTBEATS)
        wait_all_follow_id(FAKE_ID, mmt_scale(4 * HB_MS));
    event_free(t);
    mmt_peer_close(&l.p); /* the broker deletes its exclusive lock */
    uint64_t t0 = mmt_now_ms();
    MMT_WAIT(F.base, F.stepped_up, mmt_scale(WAIT_MS));
    uint64_t dt = F.in[F.last_up].up_ms - t0;
    observe_one_leader(SETTLE_MS, "after the protocol-only leader left");
    ck_assert_int_eq(F.ups, 1);
    if (HEARTBEATS)
        wait_all_follow(F.last_up, mmt_scale(4 * HB_MS));
    printf("election: protocol-only leader gone: new leader after %llu ms (election timeout %d, "
           "heartbeat %d)\n",
           (unsigned long long) dt, ET_MS, HB_MS);
    ck_assert_uint_lt(dt, (uint64_t) mmt_scale(ET_MS + 2 * HB_MS));
}
END_TEST

/* ---- first consensus with the default settings ---- */

START_TEST(first_consensus_of_3_with_defaults)
{
    mm_opts_t o = MM_OPTS_INIT; /* heartbeat 10 s, election timeout 15 s */
    for (int k = 0; k < 3; k++)
        add(&o);
    uint64_t t0 = mmt_now_ms();
    for (int k = 0; k < 3; k++)
        mmt_connect(F.in[k].mm);
    MMT_WAIT(F.base, F.stepped_up, mmt_scale(30000));
    uint64_t up = F.in[F.last_up].up_ms - t0;
    observe_one_leader(1000, "defaults");
    ck_assert_int_eq(F.ups, 1);
    printf("election: defaults, 3 instances: leader %llu ms after the first connect\n",
           (unsigned long long) up);
    if (HEARTBEATS) {
        uint64_t all = up + wait_all_follow(F.last_up, mmt_scale(30000));
        printf("election: defaults, 3 instances: all follow it %llu ms after the first connect\n",
               (unsigned long long) all);
    }
}
END_TEST

/* ---- the leader's connection closed by the broker ---- */

/* rabbitmqctl close_connection from a helper process, so that the loop runs on meanwhile
 * (a loop held for the second rabbitmqctl takes would make every peer look silent). */
struct closer {
    pid_t pid;
    int fd;
    struct event *ev;
    bool done;
};

static void
on_closer_eof(evutil_socket_t fd, short what, void *arg)
{
    (void) fd;
    (void) what;
    ((struct closer *) arg)->done = true;
}

static void
close_connection_async(struct closer *c, int port)
{
    int p[2];
    ck_assert_int_eq(pipe(p), 0);
    c->pid = fork();
    ck_assert_int_ge(c->pid, 0);
    if (c->pid == 0) {
        close(p[0]);
        alarm(CHILD_LIFE_S);
        _exit(mmt_kill_connection(port) == 0 ? 0 : 1);
    }
    close(p[1]);
    c->fd = p[0];
    c->ev = event_new(F.base, c->fd, EV_READ, on_closer_eof, c);
    ck_assert_ptr_nonnull(c->ev);
    event_add(c->ev, NULL);
}

static void
closer_done(struct closer *c)
{
    MMT_WAIT(F.base, c->done, mmt_scale(WAIT_MS));
    int st = 0;
    ck_assert_int_eq(waitpid(c->pid, &st, 0), c->pid);
    event_free(c->ev);
    close(c->fd);
    ck_assert_msg(WIFEXITED(st) && WEXITSTATUS(st) == 0, "close_connection failed: %#x", st);
}

START_TEST(leader_whose_connection_is_closed_steps_down_and_stays_down)
{
    add_connected(3);
    MMT_WAIT(F.base, F.stepped_up, mmt_scale(WAIT_MS));
    observe_one_leader(HB_MS, "before");
    int old = F.last_up;
    struct inst *o = &F.in[old];
    F.stepped_up = false;
    struct closer c = {0};
    close_connection_async(&c, mmt_local_port(o->mm));
    MMT_WAIT(F.base, F.stepped_down, mmt_scale(WAIT_MS));
    ck_assert_int_eq(o->downs, 1);
    ck_assert(!mm_is_leader(o->mm));
    MMT_WAIT(F.base, F.stepped_up, mmt_scale(WAIT_MS));
    ck_assert_int_ne(F.last_up, old);
    int now = F.last_up;
    closer_done(&c);
    /* At once: stepped down before the loss was announced, not at a later tick. */
    ck_assert_int_eq(o->disconnects, 1);
    ck_assert(!o->leader_at_disconnect);
    ck_assert_uint_le(o->down_ms, o->disconnect_ms);
    uint64_t up = F.in[now].up_ms - o->down_ms;
    printf("election: broker closed the leader's connection: it stepped down with the loss, "
           "new leader %llu ms after the step down\n",
           (unsigned long long) up);
    ck_assert_uint_lt(up, (uint64_t) mmt_scale(FAILOVER_MS));
    for (uint64_t t0 = mmt_now_ms(); o->reconnects == 0;) {
        ck_assert_msg(mmt_now_ms() - t0 < (uint64_t) mmt_scale(WAIT_MS), "no reconnect");
        bool tick = false;
        mmt_wait(F.base, &tick, 10);
    }
    observe_one_leader(SETTLE_MS, "after the old leader reconnected");
    ck_assert(mm_is_leader(F.in[now].mm));
    ck_assert_int_eq(o->ups, 1); /* it did not take over again */
    ck_assert_int_eq(F.ups, 2);
    if (HEARTBEATS) {
        wait_all_follow(now, mmt_scale(4 * HB_MS));
        /* The old leader, then the new one, no repeats; "none" between them when the
         * old one's heartbeat saying it stepped down (after its reconnect) arrived
         * before the new one's claim: both orders happen. */
        for (int k = 0; k < F.n; k++)
            if (k != old)
                ck_assert_msg(F.in[k].leader_evs == 2 ||
                                  (F.in[k].leader_evs == 3 &&
                                   strstr(F.in[k].leader_evs_seen, " none ") != NULL),
                              "instance %d: leader events:%s", k, F.in[k].leader_evs_seen);
    }
}
END_TEST

int
main(void)
{
    Suite *s = suite_create("election");
    TCase *tc = mmt_tcase(s, "consensus", setup, teardown, 120);
    tcase_add_test(tc, consensus_of_2);
    tcase_add_test(tc, consensus_of_10);
    tcase_add_test(tc, consensus_of_random_2_to_15);
    tcase_add_test(tc, alone_elects_itself_and_a_joiner_keeps_the_leader);
    tcase_add_test(tc, leader_event_is_not_repeated);
    tcase_add_test(tc, a_claim_without_the_lock_makes_no_second_leader);
    tcase_add_test(tc, a_protocol_only_leader_is_followed_then_replaced);
    tcase_add_test(tc, first_consensus_of_3_with_defaults);
    tc = mmt_tcase(s, "failover", setup, teardown, 180);
    tcase_add_test(tc, leader_closed_cleanly_is_replaced);
    tcase_add_test(tc, killed_leader_process_is_replaced_within_2s);
    tcase_add_test(tc, repeated_kills_until_one_is_left);
    tcase_add_test(tc, leader_whose_connection_is_closed_steps_down_and_stays_down);
    return mmt_run(s);
}
