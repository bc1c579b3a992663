/* Unit: broker URI parsing (good and bad), percent-encoding, vhost, parameters, redaction. */
#include <check.h>
#include <stdlib.h>
#include <string.h>

#include "micromsg.h"
#include "mmt.h"
#include "uri.h"

static struct mmi_uri u;
static char err[256];

static void
teardown(void)
{
    mmi_uri_free(&u);
}

static int
parse(const char *s)
{
    mmi_uri_free(&u);
    return mmi_uri_parse(s, &u, err, sizeof err);
}

START_TEST(plain_host_gets_defaults)
{
    ck_assert_int_eq(parse("amqp://localhost"), MM_OK);
    ck_assert(!u.tls);
    ck_assert_str_eq(u.host, "localhost");
    ck_assert_int_eq(u.port, 5672);
    ck_assert_str_eq(u.user, "guest");
    ck_assert_str_eq(u.pass, "guest");
    ck_assert_str_eq(u.vhost, "/");
    ck_assert_int_eq(u.heartbeat, 30);
    ck_assert_int_eq(u.frame_max, 131072);
    ck_assert_int_eq(u.channel_max, 0);
}
END_TEST

START_TEST(full_uri)
{
    ck_assert_int_eq(parse("amqp://alice:s3cret@broker.example:5673/prod"), MM_OK);
    ck_assert_str_eq(u.user, "alice");
    ck_assert_str_eq(u.pass, "s3cret");
    ck_assert_str_eq(u.host, "broker.example");
    ck_assert_int_eq(u.port, 5673);
    ck_assert_str_eq(u.vhost, "prod");
}
END_TEST

START_TEST(percent_encoding_in_user_password_and_vhost)
{
    ck_assert_int_eq(parse("amqp://us%40er:p%3Aa%2Fss%25@h/%2Fvh%2f"), MM_OK);
    ck_assert_str_eq(u.user, "us@er");
    ck_assert_str_eq(u.pass, "p:a/ss%");
    ck_assert_str_eq(u.vhost, "/vh/");
}
END_TEST

START_TEST(empty_path_is_the_empty_vhost)
{
    ck_assert_int_eq(parse("amqp://h/"), MM_OK);
    ck_assert_str_eq(u.vhost, "");
    ck_assert_int_eq(parse("amqp://h/%2F"), MM_OK);
    ck_assert_str_eq(u.vhost, "/");
}
END_TEST

START_TEST(amqps_default_port_and_tls_params)
{
    ck_assert_int_eq(parse("amqps://h?cacertfile=%2Fetc%2Fca.pem&verify=verify_none"), MM_OK);
    ck_assert(u.tls);
    ck_assert_int_eq(u.port, 5671);
    ck_assert_str_eq(u.cacertfile, "/etc/ca.pem");
    ck_assert(!u.verify_peer);
    ck_assert_int_eq(parse("AMQPS://h:1234?certfile=c.pem&keyfile=k.pem"), MM_OK);
    ck_assert_int_eq(u.port, 1234);
    ck_assert(u.verify_peer);
    ck_assert_str_eq(u.certfile, "c.pem");
    ck_assert_str_eq(u.keyfile, "k.pem");
}
END_TEST

START_TEST(heartbeat_and_frame_params)
{
    ck_assert_int_eq(
        parse("amqp://h?heartbeat=5&frame_max=8192&channel_max=64&connection_timeout=2500"), MM_OK);
    ck_assert_int_eq(u.heartbeat, 5);
    ck_assert_int_eq(u.frame_max, 8192);
    ck_assert_int_eq(u.channel_max, 64);
    ck_assert_int_eq(u.connection_timeout_ms, 2500);
    ck_assert_int_eq(parse("amqp://h/v?heartbeat=0"), MM_OK);
    ck_assert_int_eq(u.heartbeat, 0);
    ck_assert_str_eq(u.vhost, "v");
}
END_TEST

START_TEST(ipv6_literal)
{
    ck_assert_int_eq(parse("amqp://[::1]:5680/"), MM_OK);
    ck_assert_str_eq(u.host, "::1");
    ck_assert_int_eq(u.port, 5680);
    ck_assert_int_eq(parse("amqp://[::1"), MM_EURI);
}
END_TEST

START_TEST(empty_host_is_localhost_and_user_without_password)
{
    ck_assert_int_eq(parse("amqp://bob@:5672"), MM_OK);
    ck_assert_str_eq(u.host, "localhost");
    ck_assert_str_eq(u.user, "bob");
    ck_assert_str_eq(u.pass, "");
}
END_TEST

START_TEST(memory_names_an_in_process_broker)
{
    ck_assert_int_eq(parse("memory://orders"), MM_OK);
    ck_assert_str_eq(u.memory, "orders");
    ck_assert(!u.tls);
    ck_assert_ptr_null(u.host);
    char *r = mmi_uri_redact(&u);
    ck_assert_str_eq(r, "memory://orders");
    free(r);
    ck_assert_int_eq(parse("MEMORY://a.b_c-d:e9"), MM_OK);
    ck_assert_str_eq(u.memory, "a.b_c-d:e9");
    char name[140];
    snprintf(name, sizeof name, "memory://%0128d", 7);
    ck_assert_int_eq(parse(name), MM_OK);
    ck_assert_int_eq((int) strlen(u.memory), 128);
    /* An amqp URI parsed after a memory one is not a memory one. */
    ck_assert_int_eq(parse("amqp://h"), MM_OK);
    ck_assert_ptr_null(u.memory);
}
END_TEST

struct bad_case {
    const char *uri;
    const char *reason; /* a fragment the error text must contain */
};

static const struct bad_case bad_cases[] = {
    {"localhost:5672", "missing scheme"},
    {"http://h", "unknown scheme 'http'"},
    {"memory-ish://h", "unknown scheme"},
    {"amqp://h:0", "port"},
    {"amqp://h:65536", "port"},
    {"amqp://h:12ab", "port"},
    {"amqp://h:", "port"},
    {"amqp://h/a/b", "%2F"},
    {"amqp://us%4@h", "percent-encoding"},
    {"amqp://u:p%zz@h", "percent-encoding"},
    {"amqp://h/v%00", "percent-encoding"},
    {"amqp://h?heartbeat=-1", "heartbeat"},
    {"amqp://h?heartbeat=abc", "heartbeat"},
    {"amqp://h?heartbeat=70000", "heartbeat"},
    {"amqp://h?frame_max=100", "frame_max"},
    {"amqp://h?hearbeat=10", "unknown query parameter 'hearbeat'"},
    {"amqp://h?heartbeat", "without '='"},
    {"amqp://h?cacertfile=x", "needs the amqps scheme"},
    {"amqps://h?verify=maybe", "verify"},
    {"amqp://[::1]x", "after the host"},
    {"amqp://[zz::1]", "bad IPv6 address"},
    {"amqp://[]", "bad IPv6 address"},
    {"amqp://ho%3Ast", "bad character in the host"},
    {"amqp://ho%20st", "bad character in the host"},
    {"memory://", "needs a broker name"},
    {"memory://a/b", "'/' at 1"},
    {"memory://a?x=1", "'?' at 1"},
    {"memory://u@a", "'@' at 1"},
    {"memory://a:5672/", "'/' at 6"},
    {"memory://a b", "'?' at 1"},
    {"memory://.a", "empty dot-separated part"},
    {"memory://a..b", "empty dot-separated part"},
    {"memory://a.", "empty dot-separated part"},
    {"memory://"
     "aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa"
     "aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa",
     "129 characters (max 128)"},
    {"memory:/a", "missing scheme"},
};

START_TEST(bad_uris_are_refused_with_a_reason)
{
    const struct bad_case *c = &bad_cases[_i];
    ck_assert_msg(parse(c->uri) == MM_EURI, "%s accepted", c->uri);
    ck_assert_msg(strstr(err, c->reason) != NULL, "%s: '%s' lacks '%s'", c->uri, err, c->reason);
    ck_assert_msg(strncmp(err, "bad URI: ", 9) == 0, "%s", err);
}
END_TEST

START_TEST(errors_and_redaction_never_show_the_password)
{
    ck_assert_int_eq(parse("amqp://alice:TopSecret@h:99999"), MM_EURI);
    ck_assert_ptr_null(strstr(err, "TopSecret"));
    ck_assert_int_eq(parse("amqp://alice:TopSecret@h:5672/a%2Fb"), MM_OK);
    char *r = mmi_uri_redact(&u);
    ck_assert_ptr_nonnull(r);
    ck_assert_str_eq(r, "amqp://alice:***@h:5672/a%2Fb");
    free(r);
    ck_assert_int_eq(parse("amqps://[::1]"), MM_OK);
    r = mmi_uri_redact(&u);
    ck_assert_str_eq(r, "amqps://guest:***@[::1]:5671/%2F");
    free(r);
    /* Characters that would change the meaning of the redacted URI are encoded. */
    ck_assert_int_eq(parse("amqp://a%40b%3Ac:pw@h/v"), MM_OK);
    r = mmi_uri_redact(&u);
    ck_assert_str_eq(r, "amqp://a%40b%3Ac:***@h:5672/v");
    free(r);
}
END_TEST

START_TEST(null_uri_is_an_error)
{
    ck_assert_int_eq(mmi_uri_parse(NULL, &u, err, sizeof err), MM_EURI);
}
END_TEST

int
main(void)
{
    Suite *s = suite_create("uri");
    TCase *tc = tcase_create("parse");
    tcase_add_checked_fixture(tc, NULL, teardown);
    tcase_add_test(tc, plain_host_gets_defaults);
    tcase_add_test(tc, full_uri);
    tcase_add_test(tc, percent_encoding_in_user_password_and_vhost);
    tcase_add_test(tc, empty_path_is_the_empty_vhost);
    tcase_add_test(tc, amqps_default_port_and_tls_params);
    tcase_add_test(tc, heartbeat_and_frame_params);
    tcase_add_test(tc, ipv6_literal);
    tcase_add_test(tc, empty_host_is_localhost_and_user_without_password);
    tcase_add_test(tc, memory_names_an_in_process_broker);
    tcase_add_loop_test(tc, bad_uris_are_refused_with_a_reason, 0,
                        (int) (sizeof bad_cases / sizeof bad_cases[0]));
    tcase_add_test(tc, errors_and_redaction_never_show_the_password);
    tcase_add_test(tc, null_uri_is_an_error);
    suite_add_tcase(s, tc);
    return mmt_run(s);
}
