/* Integration: message metadata (message id, timestamp, sender, causation id,
 * traceparent). A chain request -> handler emits an event -> listener sends
 * a task carries one traceparent and each message's causation id is the id
 * of the message whose handling sent it; the answer is caused by its
 * request. The sender's own choices (message id, causation id, no trace)
 * arrive as given; malformed ones are refused. Metadata headers never show
 * in mm_msg_headers(), and a root message carries none on the wire. */
#include <check.h>
#include <event2/event.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "micromsg.h"
#include "mmt.h"
#include "mmt_fx.h"
#include "mmt_peer.h"

#define TRACE "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01"

/* What one handler saw of its message. */
struct seen {
    bool done;
    char id[256], sender[256], causation[256], trace[256], hdr_keys[256];
    int64_t ts;
};

struct fx {
    struct event_base *base;
    mm_t *client, *a, *b, *c;
    struct mmt_evlog ev;
    char sa[64], sb[64], sc[64];
    struct seen req, event, task, reply;
};

static struct fx F;

static void
record(struct seen *s, const mm_msg_t *msg)
{
    snprintf(s->id, sizeof s->id, "%s", mm_msg_id(msg));
    snprintf(s->sender, sizeof s->sender, "%s", mm_msg_sender(msg));
    snprintf(s->causation, sizeof s->causation, "%s", mm_msg_causation_id(msg));
    snprintf(s->trace, sizeof s->trace, "%s", mm_msg_traceparent(msg));
    const msgpack_object *h = mm_msg_headers(msg);
    for (uint32_t i = 0; i < h->via.map.size; i++) {
        const msgpack_object *k = &h->via.map.ptr[i].key;
        size_t n = strlen(s->hdr_keys);
        snprintf(s->hdr_keys + n, sizeof s->hdr_keys - n, "%.*s,", (int) k->via.str.size,
                 k->via.str.ptr);
    }
    s->ts = mm_msg_timestamp(msg);
    s->done = true;
}

static void
on_request(mm_msg_t *msg, void *ud)
{
    (void) ud;
    record(&F.req, msg);
    ck_assert_int_eq(mm_emit(F.a, NULL, "happened", "\xa0", 1, NULL), MM_OK);
    ck_assert_int_eq(mm_msg_reply(msg, "\xa2ok", 3), MM_OK);
}

static void
on_event(mm_msg_t *msg, void *ud)
{
    (void) ud;
    record(&F.event, msg);
    ck_assert_int_eq(mm_task(F.b, F.sc, "work", "\xa0", 1, NULL), MM_OK);
}

static void
on_task(mm_msg_t *msg, void *ud)
{
    (void) ud;
    record(&F.task, msg);
    mm_msg_ack(msg);
}

static void
on_reply(mm_msg_t *msg, void *ud)
{
    (void) ud;
    record(&F.reply, msg);
}

static void
setup(void)
{
    memset(&F, 0, sizeof F);
    F.base = mmt_base_new();
    mmt_unique("meta-a", F.sa, sizeof F.sa);
    mmt_unique("meta-b", F.sb, sizeof F.sb);
    mmt_unique("meta-c", F.sc, sizeof F.sc);
    F.client = mmt_instance(F.base, "meta-client", NULL, &F.ev);
    F.a = mmt_instance(F.base, F.sa, NULL, NULL);
    F.b = mmt_instance(F.base, F.sb, NULL, NULL);
    F.c = mmt_instance(F.base, F.sc, NULL, NULL);
    mmt_connect(F.client);
    mmt_connect(F.a);
    mmt_connect(F.b);
    mmt_connect(F.c);
}

static void
teardown(void)
{
    mm_free(F.client);
    mm_free(F.a);
    mm_free(F.b);
    mm_free(F.c);
    mmt_base_free(F.base);
}

/* 8-4-4-4-12 lower-case hex: the library's own ids. */
static bool
is_uuid(const char *s)
{
    if (strlen(s) != 36)
        return false;
    for (int i = 0; i < 36; i++) {
        bool dash = i == 8 || i == 13 || i == 18 || i == 23;
        if (dash ? s[i] != '-' : !strchr("0123456789abcdef", s[i]))
            return false;
    }
    return true;
}

static void
assert_sender(const struct seen *s, mm_t *mm)
{
    char want[256];
    snprintf(want, sizeof want, "%s@%s", mm_service(mm), mm_id(mm));
    ck_assert_str_eq(s->sender, want);
}

static void
run_chain(const char *traceparent)
{
    mmt_handle(F.a, "start", on_request, NULL, 0);
    ck_assert_int_eq(mm_listen(F.b, F.sa, "happened", on_event, NULL, NULL, NULL), MM_OK);
    mmt_handle(F.c, "work", on_task, NULL, 0);
    mm_request_opts_t o = MM_REQUEST_OPTS_INIT;
    o.traceparent = traceparent;
    ck_assert_int_eq(mm_request(F.client, F.sa, "start", "\xa0", 1, &o, on_reply, NULL, NULL),
                     MM_OK);
    MMT_WAIT(F.base, F.reply.done, mmt_scale(5000));
    MMT_WAIT(F.base, F.task.done, mmt_scale(5000));
}

START_TEST(chain_carries_one_traceparent_and_each_cause)
{
    int64_t before = (int64_t) time(NULL) * 1000;
    run_chain(TRACE);
    ck_assert_msg(is_uuid(F.req.id) && is_uuid(F.event.id) && is_uuid(F.task.id) &&
                      is_uuid(F.reply.id),
                  "ids: %s %s %s %s", F.req.id, F.event.id, F.task.id, F.reply.id);
    ck_assert_str_ne(F.req.id, F.event.id);
    ck_assert_str_ne(F.event.id, F.task.id);
    ck_assert_str_eq(F.req.causation, ""); /* the root */
    ck_assert_str_eq(F.event.causation, F.req.id);
    ck_assert_str_eq(F.task.causation, F.event.id);
    ck_assert_str_eq(F.reply.causation, F.req.id);
    ck_assert_str_eq(F.req.trace, TRACE);
    ck_assert_str_eq(F.event.trace, TRACE);
    ck_assert_str_eq(F.task.trace, TRACE);
    ck_assert_str_eq(F.reply.trace, TRACE);
    assert_sender(&F.req, F.client);
    assert_sender(&F.event, F.a);
    assert_sender(&F.task, F.b);
    assert_sender(&F.reply, F.a);
    int64_t after = (int64_t) time(NULL) * 1000 + 1000;
    ck_assert_msg(F.task.ts >= before && F.task.ts <= after, "timestamp %lld not in [%lld, %lld]",
                  (long long) F.task.ts, (long long) before, (long long) after);
    ck_assert_msg(F.req.ts >= before && F.req.ts <= after, "request timestamp %lld",
                  (long long) F.req.ts);
    /* metadata is not a user header; idRequest still is */
    ck_assert_msg(strstr(F.task.hdr_keys, "traceparent") == NULL &&
                      strstr(F.task.hdr_keys, "causation") == NULL,
                  "headers: %s", F.task.hdr_keys);
    ck_assert_msg(strstr(F.task.hdr_keys, "idRequest") != NULL, "headers: %s", F.task.hdr_keys);
}
END_TEST

START_TEST(without_a_trace_none_is_invented)
{
    run_chain(NULL);
    ck_assert_str_eq(F.req.trace, "");
    ck_assert_str_eq(F.event.trace, "");
    ck_assert_str_eq(F.task.trace, "");
    ck_assert_str_eq(F.task.causation, F.event.id); /* causation does not need a trace */
}
END_TEST

static void
on_task_only(mm_msg_t *msg, void *ud)
{
    record(ud, msg);
    mm_msg_ack(msg);
}

START_TEST(sender_choices_arrive_as_given)
{
    mmt_handle(F.c, "work", on_task_only, &F.task, 0);
    mm_send_opts_t o = MM_SEND_OPTS_INIT;
    o.message_id = "order-42";
    o.causation_id = "cmd-7";
    o.traceparent = TRACE;
    ck_assert_int_eq(mm_task(F.client, F.sc, "work", "\xa0", 1, &o), MM_OK);
    MMT_WAIT(F.base, F.task.done, mmt_scale(5000));
    ck_assert_str_eq(F.task.id, "order-42");
    ck_assert_str_eq(F.task.causation, "cmd-7");
    ck_assert_str_eq(F.task.trace, TRACE);
}
END_TEST

START_TEST(malformed_metadata_is_refused)
{
    static const char *bad[] = {
        "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7",     /* no flags */
        "00-4BF92F3577B34DA6A3CE929D0E0E4736-00f067aa0ba902b7-01",  /* upper case */
        "00-00000000000000000000000000000000-00f067aa0ba902b7-01",  /* zero trace id */
        "00-4bf92f3577b34da6a3ce929d0e0e4736-0000000000000000-01",  /* zero span id */
        "00-4bf92f3577b34da6a3ce929d0e0e4736x00f067aa0ba902b7-01"}; /* separator */
    for (size_t i = 0; i < sizeof bad / sizeof bad[0]; i++) {
        mm_send_opts_t o = MM_SEND_OPTS_INIT;
        o.traceparent = bad[i];
        ck_assert_int_eq(mm_emit(F.client, NULL, "x", "\xa0", 1, &o), MM_EINVAL);
        ck_assert_msg(strstr(mm_last_error(F.client), "traceparent") != NULL, "%s",
                      mm_last_error(F.client));
    }
    char longid[300];
    memset(longid, 'x', sizeof longid - 1);
    longid[sizeof longid - 1] = '\0';
    mm_send_opts_t o = MM_SEND_OPTS_INIT;
    o.message_id = longid;
    ck_assert_int_eq(mm_emit(F.client, NULL, "x", "\xa0", 1, &o), MM_EINVAL);
    o.message_id = "";
    ck_assert_int_eq(mm_emit(F.client, NULL, "x", "\xa0", 1, &o), MM_EINVAL);
    mm_request_opts_t r = MM_REQUEST_OPTS_INIT;
    r.traceparent = bad[0];
    ck_assert_int_eq(mm_request(F.client, F.sa, "x", "\xa0", 1, &r, on_reply, NULL, NULL),
                     MM_EINVAL);
}
END_TEST

/* A protocol-only peer takes a root task: message id, timestamp and app_id
 * properties, no metadata header at all (the broker's cost is the table). */
START_TEST(root_message_carries_properties_and_no_metadata_header)
{
    struct mmt_peer p = {0};
    mmt_peer_open(&p);
    mmt_peer_serve(&p, F.sc, "work");
    ck_assert_int_eq(mm_task(F.client, F.sc, "work", "\xa0", 1, NULL), MM_OK);
    amqp_envelope_t env;
    bool got = false;
    for (int i = 0; i < 50 && !got; i++) {
        event_base_loop(F.base, EVLOOP_NONBLOCK);
        got = mmt_peer_read(&p, 100, &env);
    }
    ck_assert_msg(got, "the peer got no task");
    const amqp_basic_properties_t *pr = &env.message.properties;
    ck_assert(pr->_flags & AMQP_BASIC_MESSAGE_ID_FLAG);
    ck_assert(pr->_flags & AMQP_BASIC_TIMESTAMP_FLAG);
    ck_assert(pr->_flags & AMQP_BASIC_APP_ID_FLAG);
    ck_assert_int_eq((int) pr->message_id.len, 36);
    for (int i = 0; i < pr->headers.num_entries; i++) {
        amqp_bytes_t k = pr->headers.entries[i].key;
        ck_assert_msg(!(k.len == 11 && memcmp(k.bytes, "traceparent", 11) == 0) &&
                          !(k.len == 17 && memcmp(k.bytes, "x-mm-causation-id", 17) == 0),
                      "header %.*s on a root message", (int) k.len, (const char *) k.bytes);
    }
    amqp_destroy_envelope(&env);
    mmt_peer_close(&p);
}
END_TEST

int
main(void)
{
    Suite *s = suite_create("meta");
    TCase *tc = mmt_tcase(s, "meta", setup, teardown, 30);
    tcase_add_test(tc, chain_carries_one_traceparent_and_each_cause);
    tcase_add_test(tc, without_a_trace_none_is_invented);
    tcase_add_test(tc, sender_choices_arrive_as_given);
    tcase_add_test(tc, malformed_metadata_is_refused);
    tcase_add_test(tc, root_message_carries_properties_and_no_metadata_header);
    return mmt_run(s);
}
