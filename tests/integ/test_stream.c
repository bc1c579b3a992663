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

#include "micromsg.h"
#include "mmt.h"
#include "mmt_fx.h"
#include "mmt_peer.h"

#define N_PARTS 1000

struct fx {
    struct event_base *base;
    mm_t *server, *client;
    char service[64];
    struct mmt_evlog ev; /* the client's events */
    struct mmt_peer peer;
};

static struct fx F;

static void
setup(void)
{
    memset(&F, 0, sizeof F);
    F.base = mmt_base_new();
    mmt_unique("stream", F.service, sizeof F.service);
    F.server = mmt_instance(F.base, F.service, NULL, NULL);
    F.client = mmt_instance(F.base, "t-stream-client", NULL, &F.ev);
}

static void
teardown(void)
{
    mm_free(F.server);
    mm_free(F.client);
    mmt_peer_close(&F.peer);
    mmt_base_free(F.base);
}

static void
connect_both(void)
{
    mmt_connect(F.server);
    mmt_connect(F.client);
}

/* ---- bodies ---- */

static void
pack_int(mm_body_t *b, int64_t v)
{
    mm_body_reset(b);
    ck_assert_int_eq(msgpack_pack_int64(mm_body_packer(b), v), 0);
}

/* mm_msg_write of the integer v. */
static int
write_int(mm_msg_t *msg, int64_t v)
{
    mm_body_t *b = mm_body_new();
    pack_int(b, v);
    int rc = mm_msg_write(msg, mm_body_data(b), mm_body_len(b));
    mm_body_free(b);
    return rc;
}

/* mm_msg_end with the body "end". */
static int
end_stream(mm_msg_t *msg)
{
    mm_body_t *b = mm_body_new();
    mm_body_str(b, "end");
    int rc = mm_msg_end(msg, mm_body_data(b), mm_body_len(b));
    mm_body_free(b);
    return rc;
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
    p->end_ok = mmt_is_str(mm_msg_body(msg), "end");
    p->final = mm_msg_ref(msg);
    p->done_ms = mmt_now_ms();
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
    ck_assert(mmt_is_str(mm_msg_part(final, n - 1), "end"));
    ck_assert_ptr_null(mm_msg_part(final, n));
}

/* ---- handlers ---- */

static void
on_stream_1000(mm_msg_t *msg, void *ud)
{
    (void) ud;
    for (int i = 0; i < N_PARTS; i++)
        ck_assert_int_eq(write_int(msg, i), MM_OK);
    ck_assert_int_eq(end_stream(msg), MM_OK);
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

/* ---- a foreign peer (mmt_peer) ---- */

/* One part as the reference sends it: a JSON body, sequence `seq` of a stream. */
static void
peer_part(const struct mmt_peer_req *q, int seq, bool is_end)
{
    char json[32];
    snprintf(json, sizeof json, is_end ? "\"end\"" : "%d", seq);
    struct mmt_answer a = {.to = q->reply_to,
                           .correlation_id = q->corr,
                           .content_type = "application/json",
                           .end = is_end,
                           .stream = true,
                           .sequence = seq,
                           .body = amqp_cstring_bytes(json)};
    mmt_peer_answer(&F.peer, &a);
}

/* An answer to a request the client does not know. */
static void
peer_stray(const struct mmt_peer_req *q)
{
    struct mmt_answer a = {.to = q->reply_to,
                           .correlation_id = "00000000-0000-4000-8000-000000000000",
                           .content_type = "application/json",
                           .end = true,
                           .stream = true,
                           .body = MMT_BYTES("\"stray\"")};
    mmt_peer_answer(&F.peer, &a);
}

/*
 * The peer sends parts 3, 1, 0, the end (4), then an answer for an unknown
 * request: when the client reports that one (MM_EV_UNHANDLED), everything
 * sent before it has been read. Only then does part 2 follow.
 */
static void
shuffled_stream(unsigned flags, struct probe *p, void (*checkpoint)(const struct probe *))
{
    mmt_peer_open(&F.peer);
    mmt_peer_serve(&F.peer, F.service, "shuffled");
    mmt_connect(F.client);
    request("shuffled", flags, 10000, p);
    struct mmt_peer_req q;
    mmt_peer_take(&F.peer, mmt_scale(10000), &q);
    peer_part(&q, 3, false);
    peer_part(&q, 1, false);
    peer_part(&q, 0, false);
    peer_part(&q, 4, true);
    peer_stray(&q);
    MMT_WAIT(F.base, F.ev.seen[MM_EV_UNHANDLED], mmt_scale(5000));
    checkpoint(p);
    peer_part(&q, 2, false);
    MMT_WAIT(F.base, p->done, mmt_scale(5000));
    ck_assert_int_eq(F.ev.count[MM_EV_UNHANDLED], 1);
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

/* Serve `route` with fn (ud), connect both, request it and wait for the final answer. */
static void
serve_and_request(const char *route, mm_msg_fn fn, void *ud, unsigned flags, struct probe *p)
{
    ck_assert_int_eq(mm_handle(F.server, route, fn, ud, NULL, NULL), MM_OK);
    connect_both();
    request(route, flags, 10000, p);
    MMT_WAIT(F.base, p->done, mmt_scale(5000));
}

static void
on_write_after_end(mm_msg_t *msg, void *ud)
{
    struct rcs *r = ud;
    ck_assert_int_eq(write_int(msg, 0), MM_OK);
    ck_assert_int_eq(end_stream(msg), MM_OK);
    r->write_after_end = write_int(msg, 1);
}

START_TEST(write_after_end_is_estate)
{
    struct rcs r = {0};
    struct probe p = {0};
    serve_and_request("wae", on_write_after_end, &r, 0, &p);
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
    ck_assert_int_eq(write_int(msg, 0), MM_OK);
    mm_body_t *b = mm_body_new();
    pack_int(b, 99);
    r->reply_after_write = mm_msg_reply(msg, mm_body_data(b), mm_body_len(b));
    mm_body_free(b);
    ck_assert_int_eq(write_int(msg, 1), MM_OK);
    ck_assert_int_eq(end_stream(msg), MM_OK);
}

START_TEST(reply_after_write_is_estate)
{
    struct rcs r = {0};
    struct probe p = {0};
    serve_and_request("raw", on_reply_after_write, &r, 0, &p);
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
    for (int i = 0; i < 2; i++)
        ck_assert_int_eq(write_int(msg, i), MM_OK);
    r->reject = mm_msg_reject(msg, "boom", "failed in the middle");
}

START_TEST(reject_mid_stream_fails_the_request)
{
    struct rcs r = {0};
    struct probe p = {0}, c = {0};
    serve_and_request("rms", on_reject_mid_stream, &r, MM_REQ_PARTS, &p);
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
    if (s->sent < SLOW_PARTS) {
        if (write_int(s->msg, s->sent++) != MM_OK)
            s->bad_rc++;
        slow_arm(s);
    } else {
        if (end_stream(s->msg) != MM_OK)
            s->bad_rc++;
        s->msg = mm_msg_unref(s->msg);
        s->ended = true;
    }
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
    uint64_t t0 = mmt_now_ms();
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
    TCase *tc = mmt_tcase(s, "stream", setup, teardown, 60);
    tcase_add_test(tc, parts_in_order_with_part_callback);
    tcase_add_test(tc, parts_collected_without_part_callback);
    tcase_add_test(tc, shuffled_parts_delivered_in_order);
    tcase_add_test(tc, shuffled_parts_collected_in_order);
    tcase_add_test(tc, write_after_end_is_estate);
    tcase_add_test(tc, reply_after_write_is_estate);
    tcase_add_test(tc, reject_mid_stream_fails_the_request);
    tcase_add_test(tc, each_part_restarts_the_timeout);
    return s;
}

int
main(void)
{
    return mmt_run(suite());
}
