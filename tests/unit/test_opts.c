/* Unit (no broker): instance defaults, option checking, service names, URI
 * resolution order, the default retry strategy. */
#include <check.h>
#include <event2/event.h>
#include <stdlib.h>
#include <string.h>

#include "internal.h"
#include "mmt.h"

static void
clear_env(void)
{
    unsetenv("MM_URI");
    unsetenv("RABBITMQ_URI");
    unsetenv("MM_LOG");
}

START_TEST(null_options_give_the_defaults)
{
    mm_t *mm = mm_new("svc", NULL);
    ck_assert_ptr_nonnull(mm);
    ck_assert_int_eq(mm_last_code(mm), MM_OK);
    ck_assert_str_eq(mm_last_error(mm), "");
    ck_assert_str_eq(mm_service(mm), "svc");
    ck_assert_int_eq(mm->opts.retry_budget_ms, 30000);
    ck_assert_int_eq(mm->opts.connect_timeout_ms, 5000);
    ck_assert_int_eq(mm->opts.rpc_timeout_ms, 10000);
    ck_assert(mm->opts.retry == mm_retry_default);
    ck_assert_int_eq(mm->opts.log_level, MM_LOG_WARN);
    ck_assert(mm->opts.log == NULL); /* silent by default */
    ck_assert(mm->own_base);
    ck_assert(!mm_is_connected(mm));
    ck_assert_ptr_null(mm_uri(mm));
    ck_assert_int_eq(mm_heartbeat(mm), 0);
    mm_free(mm);
}
END_TEST

START_TEST(given_options_are_copied)
{
    char uri[] = "amqp://x";
    mm_opts_t o = MM_OPTS_INIT;
    o.uri = uri;
    o.retry_budget_ms = 1234;
    o.connect_timeout_ms = 77;
    o.log_level = MM_LOG_DEBUG;
    mm_t *mm = mm_new("svc", &o);
    uri[0] = 'X'; /* the caller's string may change: mm kept a copy */
    ck_assert_str_eq(mm->opts.uri, "amqp://x");
    ck_assert_int_eq(mm->opts.retry_budget_ms, 1234);
    ck_assert_int_eq((int) (uintptr_t) mm->opts.retry_ud, 1234);
    ck_assert_int_eq(mm->opts.connect_timeout_ms, 77);
    ck_assert_int_eq(mm->opts.log_level, MM_LOG_DEBUG);
    mm_free(mm);
}
END_TEST

START_TEST(options_without_init_are_refused)
{
    mm_opts_t o;
    memset(&o, 0, sizeof o); /* size 0: MM_OPTS_INIT forgotten */
    mm_t *mm = mm_new("svc", &o);
    ck_assert_ptr_nonnull(mm);
    ck_assert_int_eq(mm_last_code(mm), MM_EINVAL);
    ck_assert_ptr_nonnull(strstr(mm_last_error(mm), "MM_OPTS_INIT"));
    ck_assert_int_eq(mm_connect(mm, "amqp://127.0.0.1:1"), MM_EINVAL);
    ck_assert_int_eq(mm_run(mm), MM_EINVAL);
    mm_free(mm);
}
END_TEST

static const char *bad_names[] = {
    "",
    "has space",
    "star*",
    "hash#",
    ".lead",
    "trail.",
    "a..b",
    "internal",
    "internal.x",
    "slash/x",
    "\xc3\xa9t\xc3\xa9",
};

START_TEST(invalid_service_names_give_ENAME)
{
    mm_t *mm = mm_new(bad_names[_i], NULL);
    ck_assert_ptr_nonnull(mm);
    ck_assert_msg(mm_last_code(mm) == MM_ENAME, "'%s' accepted", bad_names[_i]);
    ck_assert_str_ne(mm_last_error(mm), "");
    ck_assert_int_eq(mm_connect(mm, "amqp://127.0.0.1:1"), MM_ENAME);
    mm_free(mm);
}
END_TEST

START_TEST(null_and_long_names_give_ENAME)
{
    mm_t *mm = mm_new(NULL, NULL);
    ck_assert_int_eq(mm_last_code(mm), MM_ENAME);
    mm_free(mm);
    char name[130];
    memset(name, 'a', sizeof name - 1);
    name[129] = '\0';
    mm = mm_new(name, NULL);
    ck_assert_int_eq(mm_last_code(mm), MM_ENAME);
    mm_free(mm);
    name[128] = '\0';
    mm = mm_new(name, NULL);
    ck_assert_int_eq(mm_last_code(mm), MM_OK);
    mm_free(mm);
}
END_TEST

START_TEST(good_names_are_accepted)
{
    const char *good[] = {"a", "svc-1", "my_service.v2", "ns:svc", "internalish"};
    for (size_t i = 0; i < sizeof good / sizeof good[0]; i++) {
        mm_t *mm = mm_new(good[i], NULL);
        ck_assert_msg(mm_last_code(mm) == MM_OK, "'%s': %s", good[i], mm_last_error(mm));
        mm_free(mm);
    }
}
END_TEST

static bool
is_uuid_v4(const char *s)
{
    if (strlen(s) != 36 || s[14] != '4' || strchr("89ab", s[19]) == NULL)
        return false;
    for (int i = 0; i < 36; i++) {
        bool dash = i == 8 || i == 13 || i == 18 || i == 23;
        if (dash ? s[i] != '-' : strchr("0123456789abcdef", s[i]) == NULL)
            return false;
    }
    return true;
}

START_TEST(instance_ids_are_fresh_uuid_v4)
{
    mm_t *a = mm_new("svc", NULL), *b = mm_new("svc", NULL);
    ck_assert_msg(is_uuid_v4(mm_id(a)), "%s", mm_id(a));
    ck_assert_msg(is_uuid_v4(mm_id(b)), "%s", mm_id(b));
    ck_assert_str_ne(mm_id(a), mm_id(b));
    mm_free(a);
    mm_free(b);
}
END_TEST

START_TEST(uri_resolution_order)
{
    clear_env();
    mm_t *mm = mm_new("svc", NULL);
    ck_assert_str_eq(mmi_resolve_uri(mm, NULL), "amqp://localhost");
    setenv("RABBITMQ_URI", "amqp://rabbit", 1);
    ck_assert_str_eq(mmi_resolve_uri(mm, NULL), "amqp://rabbit");
    setenv("MM_URI", "amqp://mm", 1);
    ck_assert_str_eq(mmi_resolve_uri(mm, NULL), "amqp://mm");
    ck_assert_str_eq(mmi_resolve_uri(mm, "amqp://arg"), "amqp://arg");
    mm_free(mm);
    mm_opts_t o = MM_OPTS_INIT;
    o.uri = "amqp://opt";
    mm = mm_new("svc", &o);
    ck_assert_str_eq(mmi_resolve_uri(mm, NULL), "amqp://opt");
    mm_free(mm);
    clear_env();
}
END_TEST

START_TEST(bad_uri_fails_connect_at_once)
{
    mm_t *mm = mm_new("svc", NULL);
    ck_assert_int_eq(mm_connect(mm, "http://h"), MM_EURI);
    ck_assert_ptr_nonnull(strstr(mm_last_error(mm), "unknown scheme"));
    mm_free(mm);
}
END_TEST

START_TEST(mm_log_env_turns_on_stderr_logging)
{
    clear_env();
    setenv("MM_LOG", "debug", 1);
    mm_t *mm = mm_new("svc", NULL);
    ck_assert_int_eq(mm->opts.log_level, MM_LOG_DEBUG);
    ck_assert(mm->opts.log != NULL);
    mm_free(mm);
    setenv("MM_LOG", "info", 1);
    mm = mm_new("svc", NULL);
    ck_assert_int_eq(mm->opts.log_level, MM_LOG_INFO);
    mm_free(mm);
    clear_env();
}
END_TEST

START_TEST(run_refuses_without_connection_or_on_a_foreign_base)
{
    mm_t *mm = mm_new("svc", NULL);
    ck_assert_int_eq(mm_run(mm), MM_ESTATE);
    ck_assert_int_eq(mm_close(mm), MM_ENOTCONN);
    mm_free(mm);
    struct event_base *base = event_base_new();
    mm_opts_t o = MM_OPTS_INIT;
    o.base = base;
    mm = mm_new("svc", &o);
    ck_assert(!mm->own_base);
    ck_assert_int_eq(mm_run(mm), MM_ESTATE);
    ck_assert_ptr_nonnull(strstr(mm_last_error(mm), "event_base"));
    mm_free(mm);
    event_base_free(base);
}
END_TEST

START_TEST(default_retry_gives_up_on_permanent_errors)
{
    void *budget = (void *) (uintptr_t) 10000;
    ck_assert_int_lt(mm_retry_default(MM_EAUTH, 1, 0, budget), 0);
    ck_assert_int_lt(mm_retry_default(MM_EVHOST, 1, 0, budget), 0);
    ck_assert_int_lt(mm_retry_default(MM_EURI, 1, 0, budget), 0);
    ck_assert_int_lt(mm_retry_default(MM_ETLS, 1, 0, budget), 0);
    ck_assert_int_ge(mm_retry_default(MM_EUNREACHABLE, 1, 0, budget), 0);
    ck_assert_int_ge(mm_retry_default(MM_ETIMEDOUT, 1, 0, budget), 0);
}
END_TEST

START_TEST(default_retry_backs_off_within_the_budget)
{
    void *budget = (void *) (uintptr_t) 10000;
    int64_t first = mm_retry_default(MM_EUNREACHABLE, 1, 0, budget);
    int64_t later = mm_retry_default(MM_EUNREACHABLE, 5, 2000, budget);
    ck_assert_int_ge(first, 80);
    ck_assert_int_le(first, 120);
    ck_assert_int_ge(later, 640); /* 800 +- 20 % */
    ck_assert_int_le(later, 960);
    ck_assert_int_le(mm_retry_default(MM_EUNREACHABLE, 40, 1000, budget), 960); /* capped */
    ck_assert_int_le(mm_retry_default(MM_EUNREACHABLE, 9, 9900, budget), 100);  /* not past it */
    ck_assert_int_lt(mm_retry_default(MM_EUNREACHABLE, 9, 10000, budget), 0);
    ck_assert_int_lt(mm_retry_default(MM_EUNREACHABLE, 2, 30000, NULL), 0); /* 0: 30 s */
    ck_assert_int_ge(mm_retry_default(MM_EUNREACHABLE, 2, 29000, NULL), 0);
}
END_TEST

/* Reconnects use the default strategy without an end: UINTPTR_MAX as the budget. */
START_TEST(default_retry_without_a_budget_never_stops)
{
    void *none = (void *) UINTPTR_MAX;
    int64_t w = mm_retry_default(MM_EUNREACHABLE, 1000, UINT64_C(86400000) * 365, none);
    ck_assert_int_ge(w, 640);
    ck_assert_int_le(w, 960);
    ck_assert_int_lt(mm_retry_default(MM_EAUTH, 1, 0, none), 0); /* still never for these */
}
END_TEST

START_TEST(reliability_and_election_options)
{
    mm_t *mm = mm_new("svc", NULL);
    ck_assert_uint_eq(mm->opts.send_buffer, 16u << 20);
    ck_assert_int_eq(mm->opts.send_timeout_ms, 60000);
    ck_assert_uint_eq(mm->opts.max_redeliveries, 5);
    ck_assert_uint_eq(mm->opts.close_timeout_ms, 5000);
    ck_assert_uint_eq(mm->opts.heartbeat_ms, 10000);
    ck_assert_uint_eq(mm->opts.election_timeout_ms, 15000);
    mm_free(mm);
    mm_opts_t o = MM_OPTS_INIT;
    o.heartbeat_ms = 500;
    o.election_timeout_ms = 500; /* must exceed the heartbeat */
    mm = mm_new("svc", &o);
    ck_assert_int_eq(mm_last_code(mm), MM_EINVAL);
    ck_assert_ptr_nonnull(strstr(mm_last_error(mm), "election_timeout_ms"));
    mm_free(mm);
    o.election_timeout_ms = 0; /* the default 15000 exceeds 500 */
    o.send_timeout_ms = -7;    /* neither positive nor MM_NO_TIMEOUT */
    mm = mm_new("svc", &o);
    ck_assert_int_eq(mm_last_code(mm), MM_EINVAL);
    mm_free(mm);
    o.send_timeout_ms = MM_NO_TIMEOUT;
    mm = mm_new("svc", &o);
    ck_assert_int_eq(mm_last_code(mm), MM_OK);
    ck_assert_int_eq(mm->opts.send_timeout_ms, MM_NO_TIMEOUT);
    mm_free(mm);
}
END_TEST

START_TEST(qos_options_out_of_range_are_refused)
{
    double bad[] = {-0.1, 1.5, 0.0 / 0.0};
    for (size_t i = 0; i < sizeof bad / sizeof bad[0]; i++) {
        mm_opts_t o = MM_OPTS_INIT;
        o.qos_lag_threshold = bad[i];
        mm_t *mm = mm_new("svc", &o);
        ck_assert_int_eq(mm_last_code(mm), MM_EINVAL);
        ck_assert_ptr_nonnull(strstr(mm_last_error(mm), "qos_lag_threshold"));
        mm_free(mm);
    }
    mm_opts_t o = MM_OPTS_INIT;
    o.mem_soft_mb = 200;
    o.mem_hard_mb = 100;
    mm_t *mm = mm_new("svc", &o);
    ck_assert_int_eq(mm_last_code(mm), MM_EINVAL);
    ck_assert_ptr_nonnull(strstr(mm_last_error(mm), "mem_soft_mb"));
    mm_free(mm);
    o.mem_hard_mb = 300;
    o.qos_lag_threshold = 1.0; /* the whole interval: allowed */
    o.flags = MM_OPT_QOS;
    mm = mm_new("svc", &o);
    ck_assert_int_eq(mm_last_code(mm), MM_OK);
    mm_qos_state_t st;
    ck_assert_int_eq(mm_qos_state(mm, &st), MM_OK);
    ck_assert(st.enabled);
    ck_assert_uint_eq(st.mem_soft, 200u << 20);
    ck_assert_uint_eq(st.mem_hard, 300u << 20);
    mm_free(mm);
}
END_TEST

START_TEST(free_null_is_a_noop)
{
    mm_free(NULL);
    ck_assert_int_eq(mm_connect(NULL, NULL), MM_EINVAL);
    ck_assert_str_eq(mm_last_error(NULL), "no instance");
}
END_TEST

int
main(void)
{
    Suite *s = suite_create("opts");
    TCase *tc = tcase_create("instance");
    tcase_add_test(tc, null_options_give_the_defaults);
    tcase_add_test(tc, given_options_are_copied);
    tcase_add_test(tc, options_without_init_are_refused);
    tcase_add_loop_test(tc, invalid_service_names_give_ENAME, 0,
                        (int) (sizeof bad_names / sizeof bad_names[0]));
    tcase_add_test(tc, null_and_long_names_give_ENAME);
    tcase_add_test(tc, good_names_are_accepted);
    tcase_add_test(tc, instance_ids_are_fresh_uuid_v4);
    tcase_add_test(tc, uri_resolution_order);
    tcase_add_test(tc, bad_uri_fails_connect_at_once);
    tcase_add_test(tc, mm_log_env_turns_on_stderr_logging);
    tcase_add_test(tc, run_refuses_without_connection_or_on_a_foreign_base);
    tcase_add_test(tc, default_retry_gives_up_on_permanent_errors);
    tcase_add_test(tc, default_retry_backs_off_within_the_budget);
    tcase_add_test(tc, default_retry_without_a_budget_never_stops);
    tcase_add_test(tc, reliability_and_election_options);
    tcase_add_test(tc, qos_options_out_of_range_are_refused);
    tcase_add_test(tc, free_null_is_a_noop);
    suite_add_tcase(s, tc);
    return mmt_run(s);
}
