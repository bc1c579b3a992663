/* Integration: streamed answers (PROTOCOL.md section 4): 1,000 parts through
 * a part callback and collected, parts put back in sequence order when a
 * foreign peer (raw rabbitmq-c) sends them shuffled, the end message not
 * completing a collected stream early, settle calls refused in the wrong
 * state, an error in the middle of a stream, and each part restarting the
 * requester's timeout. */
#include <check.h>
#include <event2/event.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include <amqp.h>
#include <amqp_tcp_socket.h>

#include "micromsg.h"
#include "mmt.h"

#define N_PARTS 1000

struct evlog {
    int unhandled; /* MM_EV_UNHANDLED events seen by the client */
    bool got_unhandled;
};

struct fx {
    struct event_base *base;
    mm_t *server, *client;
    char service[64];
    struct evlog ev;
};

static struct fx F;

static void
on_client_event(mm_t *mm, const mm_event_t *ev, void *ud)
{
    struct evlog *l = ud;
    (void) mm;
    if (ev->type == MM_EV_UNHANDLED) {
        l->unhandled++;
        l->got_unhandled = true;
    }
}

static mm_t *
instance(const char *service, mm_event_fn on_event, void *ud)
{
    mm_opts_t o = MM_OPTS_INIT;
    o.base = F.base;
    o.on_event = on_event;
    o.event_ud = ud;
    mm_t *mm = mm_new(service, &o);
    ck_assert_ptr_nonnull(mm);
    return mm;
}

static void
setup(void)
{
    memset(&F, 0, sizeof F);
    F.base = event_base_new();
    ck_assert_ptr_nonnull(F.base);
    mmt_unique("stream", F.service, sizeof F.service);
    F.server = instance(F.service, NULL, NULL);
    F.client = instance("t-stream-client", on_client_event, &F.ev);
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
connect_one(mm_t *mm)
{
    ck_assert_msg(mm_connect(mm, mmt_uri()) == MM_OK, "%s", mm_last_error(mm));
}

static void
connect_both(void)
{
    connect_one(F.server);
    connect_one(F.client);
}

/* ---- bodies ---- */

static void
pack_int(mm_body_t *b, int64_t v)
{
    mm_body_reset(b);
    ck_assert_int_eq(msgpack_pack_int64(mm_body_packer(b), v), 0);
}

static int64_t
obj_int(const msgpack_object *o)
{
    ck_assert_ptr_nonnull(o);
    if (o->type == MSGPACK_OBJECT_POSITIVE_INTEGER)
        return (int64_t) o->via.u64;
    ck_assert_int_eq(o->type, MSGPACK_OBJECT_NEGATIVE_INTEGER);
    return o->via.i64;
}

static bool
obj_is_str(const msgpack_object *o, const char *s)
{
    return o != NULL && o->type == MSGPACK_OBJECT_STR && o->via.str.size == strlen(s) &&
           memcmp(o->via.str.ptr, s, o->via.str.size) == 0;
}

/* ---- what the requester sees ---- */

#define MAX_SEEN 2048

struct probe {
    bool done;
    int calls, parts, finals, status, nonfinal_not_ok;
    int64_t seen[MAX_SEEN]; /* part bodies in callback order */
    char code[64];
    bool end_ok;      /* the final body is the string "end" */
    mm_msg_t *final;  /* kept for collected streams */
    uint64_t done_ms; /* when the final callback ran */
};

static uint64_t
now_ms(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (uint64_t) ts.tv_sec * 1000u + (uint64_t) ts.tv_nsec / 1000000u;
}

static void
on_answer(mm_msg_t *msg, void *ud)
{
    struct probe *p = ud;
    p->calls++;
    if (!mm_msg_is_final(msg)) {
        if (mm_msg_status(msg) != MM_OK)
            p->nonfinal_not_ok++;
        if (p->parts < MAX_SEEN)
            p->seen[p->parts] = obj_int(mm_msg_body(msg));
        p->parts++;
        return;
    }
    p->finals++;
    p->status = mm_msg_status(msg);
    snprintf(p->code, sizeof p->code, "%s", mm_msg_error_code(msg));
    p->end_ok = obj_is_str(mm_msg_body(msg), "end");
    p->final = mm_msg_ref(msg);
    p->done_ms = now_ms();
    p->done = true;
}

static void
probe_free(struct probe *p)
{
    mm_msg_unref(p->final);
}

static void
request(const char *route, unsigned flags, int64_t timeout_ms, struct probe *p)
{
    mm_request_opts_t ro = MM_REQUEST_OPTS_INIT;
    ro.flags = flags;
    ro.timeout_ms = timeout_ms;
    ck_assert_msg(mm_request(F.client, F.service, route, NULL, 0, &ro, on_answer, p, NULL) == MM_OK,
                  "%s", mm_last_error(F.client));
}

/* The parts seen are 0..n-1, in order. */
static void
assert_seen_in_order(const struct probe *p, int n)
{
    ck_assert_int_eq(p->parts, n);
    for (int i = 0; i < n; i++)
        ck_assert_msg(p->seen[i] == i, "part %d is %lld", i, (long long) p->seen[i]);
}

/* A collected stream holds n parts 0..n-2 then the end body "end". */
static void
assert_collected(const mm_msg_t *final, size_t n)
{
    ck_assert_int_eq(mm_msg_part_count(final), n);
    for (size_t i = 0; i + 1 < n; i++)
        ck_assert_int_eq(obj_int(mm_msg_part(final, i)), (int64_t) i);
    ck_assert(obj_is_str(mm_msg_part(final, n - 1), "end"));
    ck_assert_ptr_null(mm_msg_part(final, n));
}

/* ---- handlers ---- */

static void
on_stream_1000(mm_msg_t *msg, void *ud)
{
    (void) ud;
    mm_body_t *b = mm_body_new();
    for (int i = 0; i < N_PARTS; i++) {
        pack_int(b, i);
        ck_assert_int_eq(mm_msg_write(msg, mm_body_data(b), mm_body_len(b)), MM_OK);
    }
    mm_body_reset(b);
    mm_body_str(b, "end");
    ck_assert_int_eq(mm_msg_end(msg, mm_body_data(b), mm_body_len(b)), MM_OK);
    mm_body_free(b);
}

START_TEST(parts_in_order_with_part_callback)
{
    ck_assert_int_eq(mm_handle(F.server, "many", on_stream_1000, NULL, NULL, NULL), MM_OK);
    connect_both();
    struct probe p = {0};
    request("many", MM_REQ_PARTS, 30000, &p);
    MMT_WAIT(F.base, p.done, mmt_scale(20000));
    assert_seen_in_order(&p, N_PARTS);
    ck_assert_int_eq(p.nonfinal_not_ok, 0);
    ck_assert_int_eq(p.finals, 1);
    ck_assert_int_eq(p.calls, N_PARTS + 1);
    ck_assert_int_eq(p.status, MM_OK);
    ck_assert(p.end_ok);
    ck_assert_int_eq(mm_msg_part_count(p.final), 0); /* delivered, not collected */
    probe_free(&p);
}
END_TEST

START_TEST(parts_collected_without_part_callback)
{
    ck_assert_int_eq(mm_handle(F.server, "many", on_stream_1000, NULL, NULL, NULL), MM_OK);
    connect_both();
    struct probe p = {0};
    request("many", 0, 30000, &p);
    MMT_WAIT(F.base, p.done, mmt_scale(20000));
    ck_assert_int_eq(p.calls, 1);
    ck_assert_int_eq(p.status, MM_OK);
    assert_collected(p.final, N_PARTS + 1);
    probe_free(&p);
}
END_TEST

/* ---- a foreign peer: raw rabbitmq-c, blocking, in this process ---- */

static amqp_connection_state_t
peer_open(void)
{
    char buf[512];
    struct amqp_connection_info ci;
    snprintf(buf, sizeof buf, "%s", mmt_uri());
    ck_assert_int_eq(amqp_parse_url(buf, &ci), AMQP_STATUS_OK);
    amqp_connection_state_t c = amqp_new_connection();
    amqp_socket_t *s = amqp_tcp_socket_new(c);
    ck_assert_ptr_nonnull(s);
    ck_assert_int_eq(amqp_socket_open(s, ci.host, ci.port), AMQP_STATUS_OK);
    amqp_rpc_reply_t r =
        amqp_login(c, ci.vhost, 0, 131072, 0, AMQP_SASL_METHOD_PLAIN, ci.user, ci.password);
    ck_assert_int_eq(r.reply_type, AMQP_RESPONSE_NORMAL);
    amqp_channel_open(c, 1);
    ck_assert_int_eq(amqp_get_rpc_reply(c).reply_type, AMQP_RESPONSE_NORMAL);
    return c;
}

/* Declare q.requests.<service>.<route> exactly as PROTOCOL.md section 1 says, and consume it. */
static void
peer_consume(amqp_connection_state_t c, const char *queue)
{
    amqp_table_entry_t e = {.key = amqp_cstring_bytes("x-expires"),
                            .value = {.kind = AMQP_FIELD_KIND_I32, .value.i32 = 86400000}};
    amqp_table_t args = {1, &e};
    amqp_queue_declare(c, 1, amqp_cstring_bytes(queue), 0, 1, 0, 0, args);
    ck_assert_int_eq(amqp_get_rpc_reply(c).reply_type, AMQP_RESPONSE_NORMAL);
    amqp_basic_consume(c, 1, amqp_cstring_bytes(queue), amqp_empty_bytes, 0, 1, 0,
                       amqp_empty_table);
    ck_assert_int_eq(amqp_get_rpc_reply(c).reply_type, AMQP_RESPONSE_NORMAL);
}

struct peer_req {
    char corr[128], reply_to[256];
};

static void
copy_bytes(char *dst, size_t n, amqp_bytes_t b)
{
    snprintf(dst, n, "%.*s", (int) b.len, (const char *) b.bytes);
}

/* Take one request (blocking, bounded) and keep what an answer needs. */
static void
peer_take(amqp_connection_state_t c, struct peer_req *q)
{
    amqp_envelope_t env;
    struct timeval tv = {mmt_scale(10), 0};
    amqp_maybe_release_buffers(c);
    amqp_rpc_reply_t r = amqp_consume_message(c, &env, &tv, 0);
    ck_assert_msg(r.reply_type == AMQP_RESPONSE_NORMAL, "the peer got no request");
    const amqp_basic_properties_t *p = &env.message.properties;
    ck_assert(p->_flags & AMQP_BASIC_CORRELATION_ID_FLAG);
    ck_assert(p->_flags & AMQP_BASIC_REPLY_TO_FLAG);
    copy_bytes(q->corr, sizeof q->corr, p->correlation_id);
    copy_bytes(q->reply_to, sizeof q->reply_to, p->reply_to);
    amqp_destroy_envelope(&env);
}

/* One answer as the reference sends it: JSON body, __mms {isError, isEnd, isStream, sequence}. */
static void
peer_answer(amqp_connection_state_t c, const struct peer_req *q, const char *corr, int seq,
            bool is_end, const char *json)
{
    amqp_table_entry_t mms[4] = {
        {amqp_cstring_bytes("isError"), {.kind = AMQP_FIELD_KIND_BOOLEAN, .value.boolean = 0}},
        {amqp_cstring_bytes("isEnd"), {.kind = AMQP_FIELD_KIND_BOOLEAN, .value.boolean = is_end}},
        {amqp_cstring_bytes("isStream"), {.kind = AMQP_FIELD_KIND_BOOLEAN, .value.boolean = 1}},
        {amqp_cstring_bytes("sequence"), {.kind = AMQP_FIELD_KIND_I64, .value.i64 = seq}},
    };
    amqp_table_entry_t top = {amqp_cstring_bytes("__mms"),
                              {.kind = AMQP_FIELD_KIND_TABLE, .value.table = {4, mms}}};
    amqp_basic_properties_t props = {
        ._flags =
            AMQP_BASIC_CONTENT_TYPE_FLAG | AMQP_BASIC_HEADERS_FLAG | AMQP_BASIC_CORRELATION_ID_FLAG,
        .content_type = amqp_cstring_bytes("application/json"),
        .correlation_id = amqp_cstring_bytes(corr),
        .headers = {1, &top},
    };
    ck_assert_int_eq(amqp_basic_publish(c, 1, amqp_empty_bytes, amqp_cstring_bytes(q->reply_to), 0,
                                        0, &props, amqp_cstring_bytes(json)),
                     AMQP_STATUS_OK);
}

static void
peer_part(amqp_connection_state_t c, const struct peer_req *q, int seq, bool is_end)
{
    char json[32];
    snprintf(json, sizeof json, is_end ? "\"end\"" : "%d", seq);
    peer_answer(c, q, q->corr, seq, is_end, json);
}

static void
peer_close(amqp_connection_state_t c, const char *queue)
{
    amqp_queue_delete(c, 1, amqp_cstring_bytes(queue), 0, 0);
    amqp_connection_close(c, AMQP_REPLY_SUCCESS);
    amqp_destroy_connection(c);
}

/*
 * The peer sends parts 3, 1, 0, the end (4), then an answer for an unknown
 * request: when the client reports that one (MM_EV_UNHANDLED), everything
 * sent before it has been read. Only then does part 2 follow.
 */
static void
shuffled_stream(unsigned flags, struct probe *p, void (*checkpoint)(const struct probe *))
{
    char queue[160];
    snprintf(queue, sizeof queue, "q.requests.%s.shuffled", F.service);
    amqp_connection_state_t c = peer_open();
    peer_consume(c, queue);
    connect_one(F.client);
    request("shuffled", flags, 10000, p);
    struct peer_req q;
    peer_take(c, &q);
    peer_part(c, &q, 3, false);
    peer_part(c, &q, 1, false);
    peer_part(c, &q, 0, false);
    peer_part(c, &q, 4, true);
    peer_answer(c, &q, "00000000-0000-4000-8000-000000000000", 0, true, "\"stray\"");
    MMT_WAIT(F.base, F.ev.got_unhandled, mmt_scale(5000));
    checkpoint(p);
    peer_part(c, &q, 2, false);
    MMT_WAIT(F.base, p->done, mmt_scale(5000));
    peer_close(c, queue);
    ck_assert_int_eq(F.ev.unhandled, 1);
}

static void
check_parts_0_1(const struct probe *p)
{
    ck_assert_int_eq(p->finals, 0);
    assert_seen_in_order(p, 2); /* 0 and 1 are due; 3 waits for 2 */
}

START_TEST(shuffled_parts_delivered_in_order)
{
    struct probe p = {0};
    shuffled_stream(MM_REQ_PARTS, &p, check_parts_0_1);
    assert_seen_in_order(&p, 4);
    ck_assert_int_eq(p.finals, 1);
    ck_assert_int_eq(p.calls, 5);
    ck_assert_int_eq(p.status, MM_OK);
    ck_assert(p.end_ok);
    probe_free(&p);
}
END_TEST

static void
check_nothing_yet(const struct probe *p)
{
    ck_assert_int_eq(p->calls, 0); /* the end came, part 2 did not: not complete */
}

START_TEST(shuffled_parts_collected_in_order)
{
    struct probe p = {0};
    shuffled_stream(0, &p, check_nothing_yet);
    ck_assert_int_eq(p.calls, 1);
    ck_assert_int_eq(p.status, MM_OK);
    assert_collected(p.final, 5);
    probe_free(&p);
}
END_TEST

/* ---- settle calls in the wrong state ---- */

struct rcs {
    int write_after_end, reply_after_write, reject;
};

static void
on_write_after_end(mm_msg_t *msg, void *ud)
{
    struct rcs *r = ud;
    mm_body_t *b = mm_body_new();
    pack_int(b, 0);
    ck_assert_int_eq(mm_msg_write(msg, mm_body_data(b), mm_body_len(b)), MM_OK);
    mm_body_reset(b);
    mm_body_str(b, "end");
    ck_assert_int_eq(mm_msg_end(msg, mm_body_data(b), mm_body_len(b)), MM_OK);
    pack_int(b, 1);
    r->write_after_end = mm_msg_write(msg, mm_body_data(b), mm_body_len(b));
    mm_body_free(b);
}

START_TEST(write_after_end_is_estate)
{
    struct rcs r = {0};
    ck_assert_int_eq(mm_handle(F.server, "wae", on_write_after_end, &r, NULL, NULL), MM_OK);
    connect_both();
    struct probe p = {0};
    request("wae", 0, 10000, &p);
    MMT_WAIT(F.base, p.done, mmt_scale(5000));
    ck_assert_int_eq(r.write_after_end, MM_ESTATE);
    ck_assert_int_eq(p.status, MM_OK);
    assert_collected(p.final, 2); /* nothing after the end reached the requester */
    probe_free(&p);
}
END_TEST

static void
on_reply_after_write(mm_msg_t *msg, void *ud)
{
    struct rcs *r = ud;
    mm_body_t *b = mm_body_new();
    pack_int(b, 0);
    ck_assert_int_eq(mm_msg_write(msg, mm_body_data(b), mm_body_len(b)), MM_OK);
    pack_int(b, 99);
    r->reply_after_write = mm_msg_reply(msg, mm_body_data(b), mm_body_len(b));
    pack_int(b, 1);
    ck_assert_int_eq(mm_msg_write(msg, mm_body_data(b), mm_body_len(b)), MM_OK);
    mm_body_reset(b);
    mm_body_str(b, "end");
    ck_assert_int_eq(mm_msg_end(msg, mm_body_data(b), mm_body_len(b)), MM_OK);
    mm_body_free(b);
}

START_TEST(reply_after_write_is_estate)
{
    struct rcs r = {0};
    ck_assert_int_eq(mm_handle(F.server, "raw", on_reply_after_write, &r, NULL, NULL), MM_OK);
    connect_both();
    struct probe p = {0};
    request("raw", 0, 10000, &p);
    MMT_WAIT(F.base, p.done, mmt_scale(5000));
    ck_assert_int_eq(r.reply_after_write, MM_ESTATE);
    ck_assert_int_eq(p.status, MM_OK);
    assert_collected(p.final, 3); /* the refused reply sent nothing: 0, 1, end */
    probe_free(&p);
}
END_TEST

static void
on_reject_mid_stream(mm_msg_t *msg, void *ud)
{
    struct rcs *r = ud;
    mm_body_t *b = mm_body_new();
    for (int i = 0; i < 2; i++) {
        pack_int(b, i);
        ck_assert_int_eq(mm_msg_write(msg, mm_body_data(b), mm_body_len(b)), MM_OK);
    }
    r->reject = mm_msg_reject(msg, "boom", "failed in the middle");
    mm_body_free(b);
}

START_TEST(reject_mid_stream_fails_the_request)
{
    struct rcs r = {0};
    ck_assert_int_eq(mm_handle(F.server, "rms", on_reject_mid_stream, &r, NULL, NULL), MM_OK);
    connect_both();
    struct probe p = {0}, c = {0};
    request("rms", MM_REQ_PARTS, 10000, &p);
    MMT_WAIT(F.base, p.done, mmt_scale(5000));
    ck_assert_int_eq(r.reject, MM_OK);
    assert_seen_in_order(&p, 2);
    ck_assert_int_eq(p.finals, 1);
    ck_assert_int_eq(p.status, MM_EREMOTE);
    ck_assert_str_eq(p.code, "boom");
    request("rms", 0, 10000, &c); /* collected: the error is the one final callback */
    MMT_WAIT(F.base, c.done, mmt_scale(5000));
    ck_assert_int_eq(c.calls, 1);
    ck_assert_int_eq(c.status, MM_EREMOTE);
    ck_assert_str_eq(c.code, "boom");
    probe_free(&p);
    probe_free(&c);
}
END_TEST

/* ---- each part restarts the timeout ---- */

#define SLOW_PARTS 5
#define SLOW_GAP_MS 300
#define SLOW_TIMEOUT_MS 500

struct slow {
    mm_msg_t *msg;
    struct event *tick;
    int sent, bad_rc;
    bool ended;
};

static void
slow_arm(struct slow *s)
{
    struct timeval tv = {0, SLOW_GAP_MS * 1000};
    evtimer_add(s->tick, &tv);
}

/* One part per tick, then the end on the tick after the last part. */
static void
on_slow_tick(evutil_socket_t fd, short what, void *arg)
{
    struct slow *s = arg;
    (void) fd;
    (void) what;
    mm_body_t *b = mm_body_new();
    if (s->sent < SLOW_PARTS) {
        pack_int(b, s->sent++);
        if (mm_msg_write(s->msg, mm_body_data(b), mm_body_len(b)) != MM_OK)
            s->bad_rc++;
        slow_arm(s);
    } else {
        mm_body_str(b, "end");
        if (mm_msg_end(s->msg, mm_body_data(b), mm_body_len(b)) != MM_OK)
            s->bad_rc++;
        s->msg = mm_msg_unref(s->msg);
        s->ended = true;
    }
    mm_body_free(b);
}

static void
on_slow(mm_msg_t *msg, void *ud)
{
    struct slow *s = ud;
    s->msg = mm_msg_ref(msg);
    slow_arm(s);
}

START_TEST(each_part_restarts_the_timeout)
{
    struct slow s = {0};
    s.tick = evtimer_new(F.base, on_slow_tick, &s);
    ck_assert_int_eq(mm_handle(F.server, "slow", on_slow, &s, NULL, NULL), MM_OK);
    connect_both();
    struct probe p = {0};
    uint64_t t0 = now_ms();
    request("slow", MM_REQ_PARTS, SLOW_TIMEOUT_MS, &p);
    MMT_WAIT(F.base, p.done, mmt_scale(10000));
    ck_assert_msg(p.status == MM_OK, "%s after %d parts (%s)", mm_err_name(p.status), p.parts,
                  p.code);
    assert_seen_in_order(&p, SLOW_PARTS);
    ck_assert(p.end_ok);
    ck_assert(s.ended);
    ck_assert_int_eq(s.bad_rc, 0);
    ck_assert_uint_ge(p.done_ms - t0, (SLOW_PARTS + 1) * SLOW_GAP_MS); /* far past the timeout */
    event_free(s.tick);
    probe_free(&p);
}
END_TEST

static Suite *
suite(void)
{
    Suite *s = suite_create("stream");
    TCase *tc = tcase_create("stream");
    tcase_add_checked_fixture(tc, setup, teardown);
    tcase_set_timeout(tc, 60);
    tcase_add_test(tc, parts_in_order_with_part_callback);
    tcase_add_test(tc, parts_collected_without_part_callback);
    tcase_add_test(tc, shuffled_parts_delivered_in_order);
    tcase_add_test(tc, shuffled_parts_collected_in_order);
    tcase_add_test(tc, write_after_end_is_estate);
    tcase_add_test(tc, reply_after_write_is_estate);
    tcase_add_test(tc, reject_mid_stream_fails_the_request);
    tcase_add_test(tc, each_part_restarts_the_timeout);
    suite_add_tcase(s, tc);
    return s;
}

int
main(void)
{
    return mmt_run(suite());
}
