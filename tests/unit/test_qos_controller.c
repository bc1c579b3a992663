/* Unit: the QoS controller with injected samples (no clock, no broker):
 * pressure and release, the reduced resume, memory soft and hard limits with
 * hysteresis, fast growth before the first pressure and additive after,
 * sharing among routes, and the byte budget. */
#include <check.h>

#include "controller.h"
#include "mmt.h"

static const mmi_qos_limits_t LIM = {
    .lag_ms = 70, .mem_soft = 1000, .mem_hard = 2000, .max_level = 512, .calm_samples = 3};

static mmi_qos_ctl_t c;
static unsigned started, released;

static uint32_t
step(int64_t lag, uint64_t rss, bool saturated)
{
    mmi_qos_sample_t s = {.lag_ms = lag, .rss = rss, .saturated = saturated};
    return mmi_qos_step(&c, &s, &started, &released);
}

static uint32_t
calm(bool saturated)
{
    return step(0, 100, saturated);
}

START_TEST(grows_by_doubling_to_the_cap_before_any_pressure)
{
    mmi_qos_init(&c, &LIM, 8);
    uint32_t want[] = {16, 32, 64, 128, 256, 512, 512};
    for (size_t i = 0; i < sizeof want / sizeof want[0]; i++)
        ck_assert_uint_eq(calm(true), want[i]);
    ck_assert_uint_eq(started | released, 0);
}
END_TEST

START_TEST(does_not_grow_when_routes_are_not_saturated)
{
    mmi_qos_init(&c, &LIM, 8);
    for (int i = 0; i < 5; i++)
        ck_assert_uint_eq(calm(false), 8);
}
END_TEST

START_TEST(lag_pauses_then_resumes_at_half_and_grows_additively)
{
    mmi_qos_init(&c, &LIM, 64);
    ck_assert_uint_eq(step(71, 100, true), 0);
    ck_assert_uint_eq(started, MMI_QOS_LAG);
    ck_assert_uint_eq(step(200, 100, true), 0); /* still late: still paused, no new event */
    ck_assert_uint_eq(started, 0);
    ck_assert_uint_eq(calm(true), 32); /* released: half the level before the pressure */
    ck_assert_uint_eq(released, MMI_QOS_LAG);
    ck_assert_uint_eq(calm(true), 32); /* a calm period before growing again */
    ck_assert_uint_eq(calm(true), 32);
    ck_assert_uint_eq(calm(true), 36); /* additive now: +level/8 */
    ck_assert_uint_eq(calm(true), 36);
}
END_TEST

START_TEST(lag_exactly_at_the_threshold_is_no_pressure)
{
    mmi_qos_init(&c, &LIM, 8);
    ck_assert_uint_eq(step(70, 100, false), 8);
    ck_assert_uint_eq(started, 0);
}
END_TEST

START_TEST(soft_memory_limit_halves_while_it_lasts)
{
    mmi_qos_init(&c, &LIM, 64);
    ck_assert_uint_eq(step(0, 1000, true), 32);
    ck_assert_uint_eq(started, MMI_QOS_MEM);
    ck_assert_uint_eq(step(0, 1500, true), 16);
    ck_assert_uint_eq(started, 0);
    for (int i = 0; i < 6; i++)
        step(0, 1500, true);
    ck_assert_uint_eq(c.level, 1); /* never below 1 on the soft limit alone */
    ck_assert_uint_eq(calm(true), 1);
    ck_assert_uint_eq(released, MMI_QOS_MEM);
}
END_TEST

START_TEST(hard_memory_limit_stops_until_back_under_the_soft_one)
{
    mmi_qos_init(&c, &LIM, 64);
    ck_assert_uint_eq(step(0, 2000, true), 0);
    ck_assert_uint_eq(started, MMI_QOS_HARD | MMI_QOS_MEM);
    ck_assert_uint_eq(step(0, 1500, true), 0); /* under hard, over soft: still stopped */
    ck_assert_uint_eq(released, 0);
    ck_assert_uint_eq(step(0, 999, true), 32); /* under soft: resume at half */
    ck_assert_uint_eq(released, MMI_QOS_HARD | MMI_QOS_MEM);
}
END_TEST

START_TEST(unwatched_limits_never_press)
{
    mmi_qos_limits_t none = {.max_level = 16};
    mmi_qos_init(&c, &none, 0);
    ck_assert_uint_eq(c.level, 1); /* start 0 means 1 */
    ck_assert_uint_eq(step(100000, UINT64_MAX, true), 2);
    ck_assert_uint_eq(started, 0);
}
END_TEST

START_TEST(split_shares_the_level_among_routes)
{
    uint16_t out[3];
    mmi_qos_split(10, 3, out);
    ck_assert_uint_eq(out[0], 4);
    ck_assert_uint_eq(out[1], 3);
    ck_assert_uint_eq(out[2], 3);
    mmi_qos_split(2, 3, out); /* every route keeps at least 1 */
    ck_assert_uint_eq(out[2], 1);
    mmi_qos_split(0, 3, out); /* paused: all cancelled */
    ck_assert_uint_eq(out[0] + out[1] + out[2], 0);
    mmi_qos_split(1u << 20, 1, out); /* capped at a prefetch's range */
    ck_assert_uint_eq(out[0], UINT16_MAX);
}
END_TEST

START_TEST(byte_budget_pauses_and_resumes_below_seventy_percent)
{
    mmi_qos_bytes_t b = {.budget = 1000};
    ck_assert(mmi_qos_bytes_admit(&b, 600));
    ck_assert(mmi_qos_bytes_admit(&b, 400)); /* exactly the budget */
    ck_assert(!mmi_qos_bytes_admit(&b, 1));  /* beyond: given back, paused */
    ck_assert(b.paused);
    ck_assert(!mmi_qos_bytes_done(&b, 200)); /* 800 in flight: not below 70 % */
    ck_assert(!mmi_qos_bytes_admit(&b, 1));  /* still paused */
    ck_assert(mmi_qos_bytes_done(&b, 200));  /* 600 < 700: resume */
    ck_assert(!b.paused);
    ck_assert_uint_le(b.in_flight, b.budget);
    mmi_qos_bytes_done(&b, 600);
    ck_assert(mmi_qos_bytes_admit(&b, 5000)); /* bigger than the budget, alone: taken */
    ck_assert(!mmi_qos_bytes_admit(&b, 1));
}
END_TEST

int
main(void)
{
    Suite *s = suite_create("qos");
    TCase *tc = mmt_tcase(s, "controller", NULL, NULL, 10);
    tcase_add_test(tc, grows_by_doubling_to_the_cap_before_any_pressure);
    tcase_add_test(tc, does_not_grow_when_routes_are_not_saturated);
    tcase_add_test(tc, lag_pauses_then_resumes_at_half_and_grows_additively);
    tcase_add_test(tc, lag_exactly_at_the_threshold_is_no_pressure);
    tcase_add_test(tc, soft_memory_limit_halves_while_it_lasts);
    tcase_add_test(tc, hard_memory_limit_stops_until_back_under_the_soft_one);
    tcase_add_test(tc, unwatched_limits_never_press);
    tcase_add_test(tc, split_shares_the_level_among_routes);
    tcase_add_test(tc, byte_budget_pauses_and_resumes_below_seventy_percent);
    return mmt_run(s);
}
