/* Integration: QoS on a real broker, with short sample intervals. Handlers
 * that busy-wait make the loop late: a pressure event, the route's consumer
 * cancelled (seen from the broker), released and resumed, every task handled.
 * Memory allocated past the hard limit stops consumption until freed.
 * max_parallel is never exceeded; mm_set_max_parallelism is refused under
 * QoS and applied without it. */
#include <check.h>
#include <event2/event.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>

#include "micromsg.h"
#include "mmt.h"
#include "mmt_fx.h"

#define WAIT_MS 20000
#define BALLAST (100u << 20)

struct fx {
    struct event_base *base;
    mm_t *client, *worker;
    char service[64];
    struct mmt_evlog cev, wev;
    int handled, want;
    bool all;
    int inflight, max_inflight;
    int busy_ms;
    bool saw_paused; /* consumers 0 seen from the broker under pressure */
};

static struct fx F;

static void
setup(void)
{
    memset(&F, 0, sizeof F);
    F.base = mmt_base_new();
    mmt_unique("t-qos", F.service, sizeof F.service);
    F.client = mmt_instance(F.base, "t-qos-client", NULL, &F.cev);
    mmt_connect(F.client);
}

static void
teardown(void)
{
    mm_free(F.worker);
    mm_free(F.client);
    mmt_base_free(F.base);
}

static mm_t *
qos_worker(uint32_t soft_mb, uint32_t hard_mb)
{
    mm_opts_t o = MM_OPTS_INIT;
    o.flags = MM_OPT_QOS;
    o.qos_interval_ms = 100;
    o.qos_lag_threshold = 0.5; /* 50 ms */
    o.mem_soft_mb = soft_mb;
    o.mem_hard_mb = hard_mb;
    return mmt_instance(F.base, F.service, &o, &F.wev);
}

static void
busy(int ms)
{
    uint64_t until = mmt_now_ms() + (uint64_t) ms;
    while (mmt_now_ms() < until)
        ;
}

static void
on_busy(mm_msg_t *msg, void *ud)
{
    (void) ud;
    busy(F.busy_ms);
    ck_assert_int_eq(mm_msg_ack(msg), MM_OK);
    F.all = ++F.handled >= F.want;
}

static void
tasks(const char *route, int n)
{
    F.want = n;
    for (int i = 0; i < n; i++)
        ck_assert_int_eq(mm_task(F.client, F.service, route, NULL, 0, NULL), MM_OK);
}

static int
consumers(const char *route)
{
    mm_stat_t st;
    ck_assert_int_eq(mm_queue_stat(F.client, F.service, route, &st), MM_OK);
    return (int) st.consumers;
}

START_TEST(late_loop_pauses_consumers_then_resumes_and_loses_nothing)
{
    F.worker = qos_worker(0, 0);
    mmt_handle(F.worker, "busy", on_busy, NULL, 0);
    mmt_connect(F.worker);
    F.busy_ms = 120; /* each one makes the 100 ms sampler 120 ms late */
    tasks("busy", 30);
    MMT_WAIT(F.base, F.wev.seen[MM_EV_PRESSURE], mmt_scale(WAIT_MS));
    ck_assert_uint_eq(F.wev.code[MM_EV_PRESSURE], MM_OK);
    mm_qos_state_t st;
    ck_assert_int_eq(mm_qos_state(F.worker, &st), MM_OK);
    ck_assert(st.enabled);
    ck_assert_uint_eq(st.level, 0);
    ck_assert_int_eq(consumers("busy"), 0); /* the broker sees no consumer */
    MMT_WAIT(F.base, F.wev.seen[MM_EV_PRESSURE_RELEASED], mmt_scale(WAIT_MS));
    MMT_WAIT(F.base, F.all, mmt_scale(WAIT_MS));
    ck_assert_int_eq(F.handled, 30);
    mm_stat_t q;
    ck_assert_int_eq(mm_queue_stat(F.client, F.service, "busy", &q), MM_OK);
    ck_assert_uint_eq(q.messages, 0);
    printf("qos: %d pressure and %d released events while 30 tasks of 120 ms were handled\n",
           F.wev.count[MM_EV_PRESSURE], F.wev.count[MM_EV_PRESSURE_RELEASED]);
}
END_TEST

/* ---- memory ---- */

static char *ballast;

static void
on_quick(mm_msg_t *msg, void *ud)
{
    (void) ud;
    ck_assert_int_eq(mm_msg_ack(msg), MM_OK);
    F.all = ++F.handled >= F.want;
}

START_TEST(memory_past_the_hard_limit_stops_consumption_until_freed)
{
    mm_qos_state_t st;
    size_t base_mb = 0; /* limits just above what the process uses now */
    {
        FILE *f = fopen("/proc/self/statm", "r");
        unsigned long long a = 0, r = 0;
        ck_assert_int_eq(fscanf(f, "%llu %llu", &a, &r), 2);
        fclose(f);
        base_mb = (size_t) (r * 4096 >> 20);
    }
    F.worker = qos_worker((uint32_t) base_mb + 40, (uint32_t) base_mb + 60);
    mmt_handle(F.worker, "mem", on_quick, NULL, 0);
    mmt_connect(F.worker);
    /* mmap, not malloc: a sanitizer's allocator keeps freed memory resident */
    ballast = mmap(NULL, BALLAST, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
    ck_assert_ptr_ne(ballast, MAP_FAILED);
    memset(ballast, 1, BALLAST); /* resident */
    MMT_WAIT(F.base, F.wev.seen[MM_EV_PRESSURE], mmt_scale(WAIT_MS));
    bool hard = false;
    while (!hard && mmt_wait(F.base, &hard, 50)) /* until the hard-limit event came */
        hard = (F.wev.seen[MM_EV_PRESSURE] && mm_qos_state(F.worker, &st) == MM_OK &&
                (st.pressure & MM_PRESSURE_HARD));
    ck_assert_int_eq(mm_qos_state(F.worker, &st), MM_OK);
    ck_assert(st.pressure & MM_PRESSURE_HARD);
    ck_assert_uint_eq(st.level, 0);
    tasks("mem", 5);
    bool never = false;
    mmt_wait(F.base, &never, 500);
    ck_assert_int_eq(F.handled, 0); /* stopped */
    ck_assert_int_eq(consumers("mem"), 0);
    ck_assert_int_eq(munmap(ballast, BALLAST), 0);
    ballast = NULL;
    MMT_WAIT(F.base, F.all, mmt_scale(WAIT_MS));
    ck_assert_int_eq(F.handled, 5);
    ck_assert(F.wev.seen[MM_EV_PRESSURE_RELEASED]);
}
END_TEST

/* ---- fixed parallelism ---- */

static void
on_settle_later(evutil_socket_t fd, short what, void *arg)
{
    mm_msg_t *msg = arg;
    (void) fd;
    (void) what;
    ck_assert_int_eq(mm_msg_ack(msg), MM_OK);
    mm_msg_unref(msg);
    F.inflight--;
    F.all = ++F.handled >= F.want;
}

static void
on_keep(mm_msg_t *msg, void *ud)
{
    (void) ud;
    F.inflight++;
    if (F.inflight > F.max_inflight)
        F.max_inflight = F.inflight;
    struct timeval tv = {0, 20000};
    ck_assert_int_eq(event_base_once(F.base, -1, EV_TIMEOUT, on_settle_later, mm_msg_ref(msg), &tv),
                     0);
}

START_TEST(max_parallel_one_is_never_exceeded_under_qos)
{
    F.worker = qos_worker(0, 0);
    mm_route_opts_t ro = MM_ROUTE_OPTS_INIT;
    ro.max_parallel = 1;
    ck_assert_int_eq(mm_handle(F.worker, "one", on_keep, NULL, &ro, NULL), MM_OK);
    mmt_connect(F.worker);
    tasks("one", 20);
    MMT_WAIT(F.base, F.all, mmt_scale(WAIT_MS));
    ck_assert_int_eq(F.max_inflight, 1);
}
END_TEST

START_TEST(set_max_parallelism_is_refused_under_qos_and_applied_without)
{
    F.worker = qos_worker(0, 0);
    ck_assert_int_eq(mm_set_max_parallelism(F.worker, 4), MM_ESTATE);
    ck_assert_ptr_nonnull(strstr(mm_last_error(F.worker), "QoS"));
    mm_free(F.worker);
    F.worker = mmt_instance(F.base, F.service, NULL, &F.wev);
    ck_assert_int_eq(mm_set_max_parallelism(F.worker, 0), MM_EINVAL);
    mmt_handle(F.worker, "three", on_keep, NULL, 0);
    mmt_connect(F.worker);
    ck_assert_int_eq(mm_set_max_parallelism(F.worker, 3), MM_OK);
    tasks("three", 30);
    MMT_WAIT(F.base, F.all, mmt_scale(WAIT_MS));
    ck_assert_int_eq(F.max_inflight, 3);
    mm_qos_state_t st;
    ck_assert_int_eq(mm_qos_state(F.worker, &st), MM_OK);
    ck_assert(!st.enabled);
}
END_TEST

/* ---- the byte budget ---- */

static size_t bytes_now, bytes_max;

static void
on_bytes_settle(evutil_socket_t fd, short what, void *arg)
{
    mm_msg_t *msg = arg;
    (void) fd;
    (void) what;
    bytes_now -= mm_msg_size(msg);
    ck_assert_int_eq(mm_msg_ack(msg), MM_OK);
    mm_msg_unref(msg);
    F.all = ++F.handled >= F.want;
}

static void
on_bytes(mm_msg_t *msg, void *ud)
{
    (void) ud;
    bytes_now += mm_msg_size(msg);
    if (bytes_now > bytes_max)
        bytes_max = bytes_now;
    struct timeval tv = {0, 10000};
    ck_assert_int_eq(event_base_once(F.base, -1, EV_TIMEOUT, on_bytes_settle, mm_msg_ref(msg), &tv),
                     0);
}

/* Budget of 3 bodies: never more in flight; the ones given back are not
 * counted as failed deliveries (max_redeliveries 1 would dead-letter them). */
START_TEST(byte_budget_is_never_exceeded_and_give_backs_are_not_counted)
{
    mm_opts_t o = MM_OPTS_INIT;
    o.max_redeliveries = 1;
    F.worker = mmt_instance(F.base, F.service, &o, &F.wev);
    char body[102];
    body[0] = (char) 0xc4; /* bin 8 of 100 bytes */
    body[1] = 100;
    memset(body + 2, 'x', 100);
    mm_route_opts_t ro = MM_ROUTE_OPTS_INIT;
    ro.max_parallel_bytes = 3 * sizeof body;
    ck_assert_int_eq(mm_handle(F.worker, "bytes", on_bytes, NULL, &ro, NULL), MM_OK);
    mmt_connect(F.worker);
    bytes_now = bytes_max = 0;
    F.want = 30;
    for (int i = 0; i < F.want; i++)
        ck_assert_int_eq(mm_task(F.client, F.service, "bytes", body, sizeof body, NULL), MM_OK);
    MMT_WAIT(F.base, F.all, mmt_scale(WAIT_MS));
    ck_assert_uint_le(bytes_max, 3 * sizeof body);
    ck_assert_uint_ge(bytes_max, 2 * sizeof body); /* the budget was used, not a prefetch of 1 */
    ck_assert_int_eq(F.wev.count[MM_EV_DEADLETTER], 0);
    mm_stat_t q;
    ck_assert_int_eq(mm_queue_stat(F.client, F.service, "bytes", &q), MM_OK);
    ck_assert_uint_eq(q.messages, 0);
    printf("qos: byte budget of %zu bytes, at most %zu in flight over 30 tasks\n", 3 * sizeof body,
           bytes_max);
}
END_TEST

int
main(void)
{
    Suite *s = suite_create("qos");
    TCase *tc = mmt_tcase(s, "qos", setup, teardown, 120);
    tcase_add_test(tc, late_loop_pauses_consumers_then_resumes_and_loses_nothing);
    tcase_add_test(tc, memory_past_the_hard_limit_stops_consumption_until_freed);
    tcase_add_test(tc, max_parallel_one_is_never_exceeded_under_qos);
    tcase_add_test(tc, set_max_parallelism_is_refused_under_qos_and_applied_without);
    tcase_add_test(tc, byte_budget_is_never_exceeded_and_give_backs_are_not_counted);
    return mmt_run(s);
}
