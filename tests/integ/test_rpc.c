/* Integration: request/reply between two instances on one loop: round trips
 * in both codecs, binary and string bodies, large compressed bodies, remote
 * errors, timeouts, unroutable requests, cancel, async replies, expiry,
 * settle-once rules, headers, mm_request_sync, requests pending at close or
 * free, refused arguments and many requests in flight. Where a request must
 * reach the server already past its deadline, a raw rabbitmq-c peer sends it
 * (the broker itself drops a queued request whose AMQP expiration passed). */
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

#define MAX_KEPT 8

/* A reply sent from a timer after the handler returned. */
struct later {
    struct event *ev;
    mm_msg_t *msg;
    bool fired;
    int rc;
};

struct fx {
    struct event_base *base;
    mm_t *server, *client;
    char service[64];
    struct mmt_evlog sev, cev;
    /* what the server's handlers saw */
    int calls;
    bool got;
    mm_msg_t *kept[MAX_KEPT];
    int nkept;
    msgpack_sbuffer seen; /* raw body of the last request */
    msgpack_object_type seen_type;
    size_t seen_size; /* mm_msg_size of the last request */
    char seen_rid[160];
    int rc1, rc2, rc3; /* results of settle calls made inside handlers */
    struct later later;
    int later_ms;
    struct mmt_peer peer; /* a foreign requester, when a test needs one */
};

static struct fx F;

static mm_t *
instance_with(const char *service, const mm_opts_t *o, struct mmt_evlog *log)
{
    mm_t *mm = mmt_instance(F.base, service, o, log);
    ck_assert_int_eq(mm_last_code(mm), MM_OK);
    return mm;
}

static mm_t *
instance(const char *service, int codec)
{
    mm_opts_t o = MM_OPTS_INIT;
    o.codec = codec;
    return instance_with(service, &o, service == F.service ? &F.sev : &F.cev);
}

static void
setup(void)
{
    memset(&F, 0, sizeof F);
    F.base = mmt_base_new();
    mmt_unique("t-rpc", F.service, sizeof F.service);
    F.server = instance(F.service, MM_CODEC_MSGPACK);
    F.client = instance("t-rpc-client", MM_CODEC_MSGPACK);
    msgpack_sbuffer_init(&F.seen);
}

static void
teardown(void)
{
    mm_free(F.server);
    mm_free(F.client);
    for (int i = 0; i < F.nkept; i++)
        mm_msg_unref(F.kept[i]);
    mm_msg_unref(F.later.msg);
    if (F.later.ev != NULL)
        event_free(F.later.ev);
    msgpack_sbuffer_destroy(&F.seen);
    mmt_peer_close(&F.peer);
    mmt_base_free(F.base);
}

/* Replace the fixture's instances with ones using these codecs (before connecting). */
static void
use_codecs(int server_codec, int client_codec)
{
    mm_free(F.server);
    mm_free(F.client);
    F.server = instance(F.service, server_codec);
    F.client = instance("t-rpc-client", client_codec);
}

static void
connect_both(void)
{
    mmt_connect(F.server);
    mmt_connect(F.client);
}

/* ---- server side ---- */

/* The server handles `route` with fn. */
static void
serve(const char *route, mm_msg_fn fn)
{
    mmt_handle(F.server, route, fn, NULL, 0);
}

/* The settle calls a handler made (F.rc1, rc2, rc3) returned these. */
static void
assert_rcs(int rc1, int rc2, int rc3)
{
    ck_assert_int_eq(F.rc1, rc1);
    ck_assert_int_eq(F.rc2, rc2);
    ck_assert_int_eq(F.rc3, rc3);
}

/* Note what arrived: count, raw body, its type, wire size and request id. */
static void
note(mm_msg_t *msg)
{
    size_t len = 0;
    const void *raw = mm_msg_body_raw(msg, &len);
    F.calls++;
    F.got = true;
    F.seen.size = 0;
    msgpack_sbuffer_write(&F.seen, raw, len);
    F.seen_type = mm_msg_body(msg)->type;
    F.seen_size = mm_msg_size(msg);
    snprintf(F.seen_rid, sizeof F.seen_rid, "%s", mm_msg_request_id(msg));
}

/* Echo the body back. */
static void
on_echo(mm_msg_t *msg, void *ud)
{
    (void) ud;
    note(msg);
    size_t len = 0;
    const void *raw = mm_msg_body_raw(msg, &len);
    ck_assert_int_eq(mm_msg_reply(msg, raw, len), MM_OK);
}

/* Keep the request and never answer it (the test settles or drops it). */
static void
on_keep(mm_msg_t *msg, void *ud)
{
    (void) ud;
    note(msg);
    ck_assert_int_lt(F.nkept, MAX_KEPT);
    F.kept[F.nkept++] = mm_msg_ref(msg);
}

static void
later_fire(evutil_socket_t fd, short what, void *arg)
{
    struct later *l = arg;
    (void) fd;
    (void) what;
    size_t len = 0;
    const void *raw = mm_msg_body_raw(l->msg, &len);
    l->rc = mm_msg_reply(l->msg, raw, len);
    l->msg = mm_msg_unref(l->msg);
    l->fired = true;
}

/* Keep the first request and echo it from a timer F.later_ms after the handler returned. */
static void
on_later(mm_msg_t *msg, void *ud)
{
    (void) ud;
    note(msg);
    ck_assert_ptr_null(F.later.msg);
    F.later.msg = mm_msg_ref(msg);
    F.later.ev = evtimer_new(F.base, later_fire, &F.later);
    ck_assert_ptr_nonnull(F.later.ev);
    struct timeval tv = {F.later_ms / 1000, (F.later_ms % 1000) * 1000};
    evtimer_add(F.later.ev, &tv);
}

/* ---- client side ---- */

static int
request(const char *route, const void *body, size_t len, const mm_request_opts_t *o,
        struct mmt_probe *p)
{
    return mm_request(F.client, F.service, route, body, len, o, mmt_on_reply, p, NULL);
}

/* Send and wait for the final answer. */
static void
round_trip(const char *route, const void *body, size_t len, const mm_request_opts_t *o,
           struct mmt_probe *p)
{
    ck_assert_msg(request(route, body, len, o, p) == MM_OK, "%s", mm_last_error(F.client));
    MMT_WAIT(F.base, p->done, mmt_scale(5000));
}

/* A full echo round trip on route "echo": whatever was sent to the client's reply queue
 * before it (queues are FIFO) has then arrived. Needs mm_handle(..."echo", on_echo...). */
static void
barrier(void)
{
    struct mmt_probe p = {0};
    int calls = F.calls;
    round_trip("echo", NULL, 0, NULL, &p);
    ck_assert_int_eq(p.status, MM_OK);
    ck_assert_int_eq(F.calls, calls + 1);
    mmt_probe_free(&p);
}

/* Serve "echo", connect both and send b there; p gets the answer. */
static void
echo_round_trip(const mm_body_t *b, struct mmt_probe *p)
{
    serve("echo", on_echo);
    connect_both();
    round_trip("echo", mm_body_data(b), mm_body_len(b), NULL, p);
}

/* Serve "keep" (on_keep), connect both, send a request there (req: its handle, may be
 * NULL) and wait until the server holds it, unanswered. */
static void
request_kept(struct mmt_probe *p, mm_req_t *req)
{
    serve("keep", on_keep);
    connect_both();
    ck_assert_int_eq(mm_request(F.client, F.service, "keep", NULL, 0, NULL, mmt_on_reply, p, req),
                     MM_OK);
    MMT_WAIT(F.base, F.got, mmt_scale(3000));
}

/* The raw body got holds exactly b's bytes. */
static void
assert_bytes(const msgpack_sbuffer *got, const mm_body_t *b)
{
    ck_assert_uint_eq(got->size, mm_body_len(b));
    ck_assert_mem_eq(got->data, mm_body_data(b), mm_body_len(b));
}

static msgpack_object
unpack(const void *data, size_t len, msgpack_zone *z)
{
    msgpack_object o;
    size_t off = 0;
    ck_assert_int_eq(msgpack_unpack(data, len, &off, z, &o), MSGPACK_UNPACK_SUCCESS);
    ck_assert_uint_eq(off, len);
    return o;
}

static void
assert_str(const msgpack_object *o, const char *s)
{
    ck_assert_ptr_nonnull(o);
    ck_assert_int_eq(o->type, MSGPACK_OBJECT_STR);
    ck_assert_uint_eq(o->via.str.size, strlen(s));
    if (*s != '\0')
        ck_assert_mem_eq(o->via.str.ptr, s, strlen(s));
}

static void
pack_str(msgpack_packer *pk, const char *s)
{
    msgpack_pack_str(pk, strlen(s));
    msgpack_pack_str_body(pk, s, strlen(s));
}

/* A new body {"s": "hello", "a": [1, -2, true, null, [3]], "m": {"k": "v"}}; its JSON
 * text below. */
static mm_body_t *
map_body(void)
{
    mm_body_t *b = mm_body_new();
    msgpack_packer *pk = mm_body_packer(b);
    msgpack_pack_map(pk, 3);
    pack_str(pk, "s");
    pack_str(pk, "hello");
    pack_str(pk, "a");
    msgpack_pack_array(pk, 5);
    msgpack_pack_int(pk, 1);
    msgpack_pack_int(pk, -2);
    msgpack_pack_true(pk);
    msgpack_pack_nil(pk);
    msgpack_pack_array(pk, 1);
    msgpack_pack_int(pk, 3);
    pack_str(pk, "m");
    msgpack_pack_map(pk, 1);
    pack_str(pk, "k");
    pack_str(pk, "v");
    return b;
}

static const char MAP_JSON[] = "{\"s\":\"hello\",\"a\":[1,-2,true,null,[3]],\"m\":{\"k\":\"v\"}}";

/* The raw body got decodes to b's value (encodings may differ after a JSON trip). */
static void
assert_same_value(const msgpack_sbuffer *got, const mm_body_t *b)
{
    msgpack_zone z;
    msgpack_zone_init(&z, 1024);
    msgpack_object oa = unpack(got->data, got->size, &z);
    msgpack_object ob = unpack(mm_body_data(b), mm_body_len(b), &z);
    ck_assert_msg(msgpack_object_equal(oa, ob), "bodies differ");
    msgpack_zone_destroy(&z);
}

/* ---- 1. msgpack round trips ---- */

START_TEST(round_trip_string)
{
    mm_body_t *b = mm_body_new();
    mm_body_str(b, "hello");
    struct mmt_probe p = {0};
    echo_round_trip(b, &p);
    ck_assert_int_eq(p.status, MM_OK);
    ck_assert_int_eq(p.calls, 1);
    assert_bytes(&p.body, b);
    /* the answer's ids live as long as the answer (it was kept past its callback) */
    ck_assert_uint_eq(strlen(mm_msg_correlation_id(p.msg)), 36);
    ck_assert_uint_eq(strlen(mm_msg_request_id(p.msg)), 36);
    ck_assert_str_ne(mm_msg_correlation_id(p.msg), mm_msg_request_id(p.msg));
    mmt_probe_free(&p);
    mm_body_free(b);
}
END_TEST

START_TEST(round_trip_binary_with_nul_bytes_stays_bin)
{
    static const char bytes[] = {'a', 0, 'b', 0, (char) 0xff, 0};
    mm_body_t *b = mm_body_new();
    ck_assert_int_eq(mm_body_bin(b, bytes, sizeof bytes), MM_OK);
    struct mmt_probe p = {0};
    echo_round_trip(b, &p);
    /* The server got a bin, carried as the raw 6 bytes (octet-stream), not as msgpack. */
    ck_assert_int_eq(F.seen_type, MSGPACK_OBJECT_BIN);
    ck_assert_uint_eq(F.seen_size, sizeof bytes);
    assert_bytes(&F.seen, b);
    /* And the client gets the exact same bin back. */
    ck_assert_int_eq(p.status, MM_OK);
    ck_assert_int_eq(p.calls, 1);
    ck_assert_int_eq(mm_msg_body(p.msg)->type, MSGPACK_OBJECT_BIN);
    ck_assert_uint_eq(mm_msg_size(p.msg), sizeof bytes);
    assert_bytes(&p.body, b);
    mmt_probe_free(&p);
    mm_body_free(b);
}
END_TEST

START_TEST(round_trip_map_with_nested_array)
{
    mm_body_t *b = map_body();
    struct mmt_probe p = {0};
    echo_round_trip(b, &p);
    ck_assert_int_eq(F.seen_type, MSGPACK_OBJECT_MAP);
    ck_assert_int_eq(p.status, MM_OK);
    ck_assert_int_eq(p.calls, 1);
    assert_bytes(&p.body, b);
    const msgpack_object *a = mmt_map_get(mm_msg_body(p.msg), "a");
    ck_assert_ptr_nonnull(a);
    ck_assert_int_eq(a->type, MSGPACK_OBJECT_ARRAY);
    ck_assert_uint_eq(a->via.array.size, 5);
    ck_assert_int_eq(a->via.array.ptr[4].type, MSGPACK_OBJECT_ARRAY);
    mmt_probe_free(&p);
    mm_body_free(b);
}
END_TEST

/* Note the request, answer with no body. */
static void
on_empty(mm_msg_t *msg, void *ud)
{
    (void) ud;
    note(msg);
    ck_assert_int_eq(mm_msg_reply(msg, NULL, 0), MM_OK);
}

START_TEST(no_body_arrives_as_the_empty_string)
{
    serve("empty", on_empty);
    connect_both();
    struct mmt_probe p = {0};
    round_trip("empty", NULL, 0, NULL, &p);
    ck_assert_int_eq(F.seen_type, MSGPACK_OBJECT_STR);
    ck_assert_uint_eq(F.seen.size, 1);
    ck_assert_mem_eq(F.seen.data, "\xa0", 1);
    ck_assert_int_eq(p.status, MM_OK);
    ck_assert_int_eq(p.calls, 1);
    assert_str(mm_msg_body(p.msg), "");
    mmt_probe_free(&p);
}
END_TEST

/* ---- 2. JSON ---- */

START_TEST(round_trip_json_codec)
{
    use_codecs(MM_CODEC_JSON, MM_CODEC_JSON);
    mm_body_t *b = map_body();
    struct mmt_probe p = {0};
    echo_round_trip(b, &p);
    /* JSON text on the wire both ways; the same value after decoding. */
    ck_assert_uint_eq(F.seen_size, strlen(MAP_JSON));
    assert_same_value(&F.seen, b);
    ck_assert_int_eq(p.status, MM_OK);
    ck_assert_int_eq(p.calls, 1);
    ck_assert_uint_eq(mm_msg_size(p.msg), strlen(MAP_JSON));
    assert_same_value(&p.body, b);
    mmt_probe_free(&p);

    mm_body_reset(b);
    mm_body_str(b, "h\xc3\xa9llo \"q\"");
    struct mmt_probe s = {0};
    round_trip("echo", mm_body_data(b), mm_body_len(b), NULL, &s);
    ck_assert_int_eq(s.status, MM_OK);
    assert_str(mm_msg_body(s.msg), "h\xc3\xa9llo \"q\"");
    mmt_probe_free(&s);
    mm_body_free(b);
}
END_TEST

START_TEST(json_client_to_msgpack_server_gets_json_reply)
{
    use_codecs(MM_CODEC_MSGPACK, MM_CODEC_JSON);
    mm_body_t *b = map_body();
    struct mmt_probe p = {0};
    echo_round_trip(b, &p);
    /* The server reads the JSON request through mm_msg_body like any other. */
    ck_assert_int_eq(F.seen_type, MSGPACK_OBJECT_MAP);
    ck_assert_uint_eq(F.seen_size, strlen(MAP_JSON));
    assert_same_value(&F.seen, b);
    /* The reply uses the requester's encoding: JSON text (msgpack would be shorter). */
    ck_assert_int_eq(p.status, MM_OK);
    ck_assert_uint_eq(mm_msg_size(p.msg), strlen(MAP_JSON));
    assert_same_value(&p.body, b);
    mmt_probe_free(&p);
    mm_body_free(b);
}
END_TEST

START_TEST(msgpack_client_to_json_server_gets_msgpack_reply)
{
    use_codecs(MM_CODEC_JSON, MM_CODEC_MSGPACK);
    mm_body_t *b = map_body();
    struct mmt_probe p = {0};
    echo_round_trip(b, &p);
    ck_assert_uint_eq(F.seen_size, mm_body_len(b));
    ck_assert_int_eq(p.status, MM_OK);
    ck_assert_uint_eq(mm_msg_size(p.msg), mm_body_len(b));
    assert_bytes(&p.body, b);
    mmt_probe_free(&p);
    mm_body_free(b);
}
END_TEST

/* ---- 3. large bodies ---- */

START_TEST(body_over_1mb_is_compressed_and_comes_back_exact)
{
    enum { N = 3 * 1024 * 1024 };
    char *s = malloc(N + 1);
    ck_assert_ptr_nonnull(s);
    for (size_t i = 0; i < N; i++)
        s[i] = (char) ('a' + (i * 7 + i / 4096) % 26);
    s[N] = '\0';
    serve("echo", on_echo);
    connect_both();
    mm_body_t *b = mm_body_new();
    ck_assert_int_eq(mm_body_str(b, s), MM_OK);
    struct mmt_probe p = {0};
    ck_assert_int_eq(request("echo", mm_body_data(b), mm_body_len(b), NULL, &p), MM_OK);
    MMT_WAIT(F.base, p.done, mmt_scale(15000));
    /* Smaller on the wire than the body both ways: gzip. */
    ck_assert_int_eq(F.seen_type, MSGPACK_OBJECT_STR);
    ck_assert_uint_lt(F.seen_size, N);
    ck_assert_uint_gt(F.seen_size, 0);
    ck_assert_int_eq(p.status, MM_OK);
    ck_assert_uint_lt(mm_msg_size(p.msg), N);
    ck_assert_uint_eq(p.body.size, mm_body_len(b));
    ck_assert_int_eq(memcmp(p.body.data, mm_body_data(b), mm_body_len(b)), 0);
    mmt_probe_free(&p);
    mm_body_free(b);
    free(s);
}
END_TEST

/* ---- 4. remote errors ---- */

static void
on_reject(mm_msg_t *msg, void *ud)
{
    (void) ud;
    note(msg);
    ck_assert_int_eq(mm_msg_reject(msg, "notFound", "no such thing"), MM_OK);
}

START_TEST(reject_gives_EREMOTE_with_the_error_object)
{
    serve("find", on_reject);
    connect_both();
    struct mmt_probe p = {0};
    round_trip("find", NULL, 0, NULL, &p);
    ck_assert_int_eq(p.status, MM_EREMOTE);
    ck_assert_int_eq(p.calls, 1);
    ck_assert_str_eq(p.code, "notFound");
    ck_assert_str_eq(p.text, "no such thing");
    const msgpack_object *e = mmt_map_get(mm_msg_body(p.msg), "error");
    ck_assert_ptr_nonnull(e);
    assert_str(mmt_map_get(e, "codeString"), "notFound");
    assert_str(mmt_map_get(e, "message"), "no such thing");
    const msgpack_object *code = mmt_map_get(e, "code");
    ck_assert_ptr_nonnull(code);
    ck_assert_int_eq(code->type, MSGPACK_OBJECT_POSITIVE_INTEGER);
    ck_assert_uint_eq(code->via.u64, 500);
    ck_assert_ptr_null(mmt_map_get(e, "stack"));
    mmt_probe_free(&p);
}
END_TEST

/* ---- 5. timeouts ---- */

START_TEST(client_timeout_and_server_side_expiry)
{
    serve("keep", on_keep);
    connect_both();
    mm_request_opts_t ro = MM_REQUEST_OPTS_INIT;
    ro.timeout_ms = 300;
    ro.request_id = "t-expire-1";
    struct mmt_probe p = {0};
    ck_assert_int_eq(request("keep", NULL, 0, &ro, &p), MM_OK);
    MMT_WAIT(F.base, p.done, mmt_scale(3000));
    ck_assert_int_eq(p.status, MM_ETIMEDOUT);
    ck_assert_str_eq(p.code, "timeout");
    ck_assert_int_eq(p.calls, 1);
    ck_assert_int_eq(F.nkept, 1);
    /* The server drops the kept request at its deadline... */
    MMT_WAIT(F.base, F.sev.seen[MM_EV_EXPIRED], mmt_scale(3000));
    ck_assert_int_eq(F.sev.count[MM_EV_EXPIRED], 1);
    ck_assert_int_eq(F.sev.code[MM_EV_EXPIRED], MM_ETIMEDOUT);
    ck_assert_str_eq(F.sev.request_id[MM_EV_EXPIRED], "t-expire-1");
    ck_assert_str_eq(F.sev.route[MM_EV_EXPIRED], "keep");
    /* ...and refuses to answer it later: nothing is sent. */
    ck_assert_int_eq(mm_msg_reply(F.kept[0], NULL, 0), MM_ETIMEDOUT);
    ck_assert_int_eq(p.calls, 1);
    ck_assert(!F.cev.seen[MM_EV_UNHANDLED]);
    mmt_probe_free(&p);
}
END_TEST

/* The first request is answered from a timer 600 ms later; any later one at once. */
static void
on_slow(mm_msg_t *msg, void *ud)
{
    (void) ud;
    if (F.calls == 0) {
        on_later(msg, ud);
        return;
    }
    note(msg);
    ck_assert_int_eq(mm_msg_reply(msg, NULL, 0), MM_OK);
}

/* The brief's scenario, as a real broker plays it: the second request waits in the queue
 * behind the first (prefetch 1) and its AMQP expiration makes the broker drop it there,
 * so the handler never sees it (and no MM_EV_EXPIRED can be raised: nothing arrives).
 * The library's own check of a request that does arrive late is the next test. */
START_TEST(request_queued_past_its_deadline_is_not_handled)
{
    F.later_ms = 600;
    mmt_handle(F.server, "slow", on_slow, NULL, 1); /* one at a time */
    connect_both();
    struct mmt_probe first = {0}, second = {0}, third = {0};
    mm_request_opts_t ro = MM_REQUEST_OPTS_INIT;
    ro.timeout_ms = mmt_scale(5000);
    ck_assert_int_eq(request("slow", NULL, 0, &ro, &first), MM_OK);
    MMT_WAIT(F.base, F.got, mmt_scale(3000));
    /* The first holds the only prefetch slot: the second waits past its deadline. */
    ro.timeout_ms = 200;
    ro.request_id = "t-late-2";
    ck_assert_int_eq(request("slow", NULL, 0, &ro, &second), MM_OK);
    MMT_WAIT(F.base, second.done, mmt_scale(3000));
    ck_assert_int_eq(second.status, MM_ETIMEDOUT);
    ck_assert(!F.later.fired);
    MMT_WAIT(F.base, first.done, mmt_scale(3000));
    ck_assert_int_eq(first.status, MM_OK);
    ck_assert_int_eq(F.later.rc, MM_OK);
    /* A third request is handled next: the second never reached the handler. */
    round_trip("slow", NULL, 0, NULL, &third);
    ck_assert_int_eq(third.status, MM_OK);
    ck_assert_int_eq(F.calls, 2);
    ck_assert_str_ne(F.seen_rid, "t-late-2");
    ck_assert_int_eq(second.calls, 1);
    mmt_probe_free(&first);
    mmt_probe_free(&second);
    mmt_probe_free(&third);
}
END_TEST

/* A foreign peer (mmt_peer): one request straight into q.requests.<service>.<route>
 * with the given __mms iat/eat and no AMQP expiration, so the broker delivers it
 * whatever its deadline says. Queued when this returns (publisher confirm). */
static void
raw_request(const char *route, int64_t iat, int64_t eat, const char *request_id)
{
    char queue[256];
    struct mmt_table mms = {0}, h = {0};
    mmt_table_str(&mms, "route", route);
    mmt_table_i64(&mms, "iat", iat);
    mmt_table_i64(&mms, "eat", eat);
    mmt_table_table(&h, "__mms", &mms);
    mmt_table_str(&h, "idRequest", request_id);
    struct mmt_props props = {.content_type = "application/msgpack",
                              .headers = &h,
                              .correlation_id = "00000000-0000-4000-8000-000000000000",
                              .reply_to = "q.replyQueue.t-rpc-raw.none"};
    mmt_peer_open(&F.peer);
    mmt_peer_use_confirms(&F.peer);
    mmt_request_queue(queue, sizeof queue, F.service, route);
    mmt_peer_publish(&F.peer, queue, &props, MMT_BYTES("\xa0"));
    mmt_peer_confirmed(&F.peer, mmt_scale(5000));
}

static int64_t
wall_ms(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_REALTIME, &ts);
    return (int64_t) ts.tv_sec * 1000 + ts.tv_nsec / 1000000;
}

START_TEST(request_arriving_past_its_deadline_is_acked_not_handled)
{
    mmt_handle(F.server, "late", on_echo, NULL, 1); /* one at a time */
    connect_both();
    int64_t now = wall_ms();
    raw_request("late", now - 10000, now - 5000, "t-late-raw");
    MMT_WAIT(F.base, F.sev.seen[MM_EV_EXPIRED], mmt_scale(3000));
    ck_assert_int_eq(F.sev.code[MM_EV_EXPIRED], MM_ETIMEDOUT);
    ck_assert_str_eq(F.sev.request_id[MM_EV_EXPIRED], "t-late-raw");
    ck_assert_str_eq(F.sev.route[MM_EV_EXPIRED], "late");
    ck_assert_int_eq(F.calls, 0);
    /* With prefetch 1, the next request is only delivered if the late one was acked. */
    struct mmt_probe p = {0};
    round_trip("late", NULL, 0, NULL, &p);
    ck_assert_int_eq(p.status, MM_OK);
    ck_assert_int_eq(F.calls, 1);
    ck_assert_int_eq(F.sev.count[MM_EV_EXPIRED], 1);
    mmt_probe_free(&p);
}
END_TEST

/* ---- 7. unroutable ---- */

START_TEST(unroutable_request_fails_fast)
{
    connect_both();
    mm_request_opts_t ro = MM_REQUEST_OPTS_INIT;
    ro.timeout_ms = 10000;
    struct mmt_probe p = {0};
    uint64_t t0 = mmt_now_ms();
    ck_assert_int_eq(request("nobody", NULL, 0, &ro, &p), MM_OK);
    MMT_WAIT(F.base, p.done, mmt_scale(5000));
    uint64_t took = mmt_now_ms() - t0;
    ck_assert_int_eq(p.status, MM_ENOROUTE);
    ck_assert_str_eq(p.code, "unroutable");
    ck_assert_int_eq(p.calls, 1);
    /* Fast means one broker round trip (basic.return), not the 10 s timeout. The
     * window (which includes declaring the reply queue) is 100 ms; mmt_scale stretches it
     * only when CK_TIMEOUT_MULTIPLIER says the build is slow (sanitizers, valgrind). */
    ck_assert_msg(took < (uint64_t) mmt_scale(100), "unroutable took %llu ms",
                  (unsigned long long) took);
    mmt_probe_free(&p);
}
END_TEST

/* ---- 8. no timeout ---- */

START_TEST(no_timeout_request_answered_late_succeeds)
{
    /* A 100 ms default: were MM_NO_TIMEOUT taken as "the default", this would time out. */
    mm_opts_t o = MM_OPTS_INIT;
    o.request_timeout_ms = 100;
    mm_free(F.client);
    F.client = instance_with("t-rpc-client", &o, &F.cev);
    F.later_ms = 400;
    serve("later", on_later);
    connect_both();
    mm_request_opts_t ro = MM_REQUEST_OPTS_INIT;
    ro.timeout_ms = MM_NO_TIMEOUT;
    struct mmt_probe p = {0};
    ck_assert_int_eq(request("later", NULL, 0, &ro, &p), MM_OK);
    MMT_WAIT(F.base, p.done, mmt_scale(5000));
    ck_assert(F.later.fired);
    ck_assert_int_eq(F.later.rc, MM_OK);
    ck_assert_int_eq(p.status, MM_OK);
    ck_assert_int_eq(p.calls, 1);
    ck_assert(!F.sev.seen[MM_EV_EXPIRED]);
    mmt_probe_free(&p);
}
END_TEST

START_TEST(negative_timeout_is_refused)
{
    serve("echo", on_echo);
    connect_both();
    mm_request_opts_t ro = MM_REQUEST_OPTS_INIT;
    struct mmt_probe p = {0};
    int64_t bad[] = {-2, -300, INT64_MIN};
    for (size_t i = 0; i < sizeof bad / sizeof bad[0]; i++) {
        ro.timeout_ms = bad[i];
        ck_assert_int_eq(request("echo", NULL, 0, &ro, &p), MM_EINVAL);
        ck_assert_int_eq(mm_last_code(F.client), MM_EINVAL);
    }
    barrier();
    ck_assert_int_eq(p.calls, 0);
    ck_assert_int_eq(F.calls, 1); /* only the barrier reached the server */
}
END_TEST

/* ---- 9. cancel ---- */

START_TEST(cancel_runs_the_callback_once_and_drops_the_late_answer)
{
    struct mmt_probe p = {0};
    mm_req_t req = {0};
    request_kept(&p, &req);
    ck_assert_int_eq(p.calls, 0);
    ck_assert_int_eq(mm_request_cancel(F.client, req), MM_OK);
    /* The callback ran inside the cancel. */
    ck_assert_int_eq(p.calls, 1);
    ck_assert(p.done);
    ck_assert_int_eq(p.status, MM_ECANCELED);
    ck_assert_str_eq(p.code, "canceled");
    ck_assert_int_eq(mm_request_cancel(F.client, req), MM_ENOENT);
    /* The server did not know and answers: the client drops it with an event. */
    ck_assert_int_eq(mm_msg_reply(F.kept[0], NULL, 0), MM_OK);
    MMT_WAIT(F.base, F.cev.seen[MM_EV_UNHANDLED], mmt_scale(3000));
    ck_assert_int_eq(F.cev.count[MM_EV_UNHANDLED], 1);
    ck_assert_int_eq(p.calls, 1);
    mmt_probe_free(&p);
}
END_TEST

/* ---- 10. async settle ---- */

START_TEST(reply_from_a_timer_after_the_handler_returned)
{
    F.later_ms = 200;
    serve("later", on_later);
    connect_both();
    mm_body_t *b = mm_body_new();
    mm_body_str(b, "async");
    struct mmt_probe p = {0};
    ck_assert_int_eq(request("later", mm_body_data(b), mm_body_len(b), NULL, &p), MM_OK);
    MMT_WAIT(F.base, F.got, mmt_scale(3000));
    ck_assert(!F.later.fired);
    MMT_WAIT(F.base, p.done, mmt_scale(5000));
    ck_assert(F.later.fired);
    ck_assert_int_eq(F.later.rc, MM_OK);
    ck_assert_int_eq(p.status, MM_OK);
    ck_assert_int_eq(p.calls, 1);
    assert_bytes(&p.body, b);
    ck_assert(!F.sev.seen[MM_EV_ERROR]);
    mmt_probe_free(&p);
    mm_body_free(b);
}
END_TEST

/* ---- 11. settle once ---- */

static void
on_reply_twice(mm_msg_t *msg, void *ud)
{
    (void) ud;
    note(msg);
    F.rc1 = mm_msg_reply(msg, NULL, 0);
    F.rc2 = mm_msg_reply(msg, NULL, 0);
    F.rc3 = mm_msg_reject(msg, "again", "too late");
}

START_TEST(second_reply_is_refused)
{
    serve("twice", on_reply_twice);
    serve("echo", on_echo);
    connect_both();
    struct mmt_probe p = {0};
    round_trip("twice", NULL, 0, NULL, &p);
    assert_rcs(MM_OK, MM_ESTATE, MM_ESTATE);
    ck_assert_int_eq(p.status, MM_OK);
    barrier(); /* a second answer would have arrived before the barrier's */
    ck_assert_int_eq(p.calls, 1);
    ck_assert(!F.cev.seen[MM_EV_UNHANDLED]);
    mmt_probe_free(&p);
}
END_TEST

static void
on_end_then_write(mm_msg_t *msg, void *ud)
{
    (void) ud;
    note(msg);
    F.rc1 = mm_msg_end(msg, NULL, 0);
    F.rc2 = mm_msg_write(msg, NULL, 0);
    F.rc3 = mm_msg_end(msg, NULL, 0);
}

START_TEST(write_after_end_is_refused)
{
    serve("stream", on_end_then_write);
    serve("echo", on_echo);
    connect_both();
    struct mmt_probe p = {0};
    round_trip("stream", NULL, 0, NULL, &p);
    assert_rcs(MM_OK, MM_ESTATE, MM_ESTATE);
    ck_assert_int_eq(p.status, MM_OK);
    ck_assert_uint_eq(mm_msg_part_count(p.msg), 1);
    barrier();
    ck_assert_int_eq(p.calls, 1);
    ck_assert(!F.cev.seen[MM_EV_UNHANDLED]);
    mmt_probe_free(&p);
}
END_TEST

static void
on_listen(mm_msg_t *msg, void *ud)
{
    (void) ud;
    F.got = true;
    F.calls++;
    ck_assert_int_eq(mm_msg_kind_of(msg), MM_MSG_EVENT);
    F.rc1 = mm_msg_reply(msg, NULL, 0);
    F.rc2 = mm_msg_reject(msg, "no", "no");
    F.rc3 = mm_msg_write(msg, NULL, 0);
}

START_TEST(reply_to_an_event_is_refused)
{
    ck_assert_int_eq(mm_listen(F.server, NULL, "tick", on_listen, NULL, NULL, NULL), MM_OK);
    connect_both();
    ck_assert_int_eq(mm_emit(F.client, F.service, "tick", NULL, 0, NULL), MM_OK);
    MMT_WAIT(F.base, F.got, mmt_scale(3000));
    assert_rcs(MM_ESTATE, MM_ESTATE, MM_ESTATE);
    ck_assert_int_eq(F.calls, 1);
}
END_TEST

/* ---- 12. handler forgot to answer ---- */

static void
on_forget(mm_msg_t *msg, void *ud)
{
    (void) ud;
    note(msg);
}

START_TEST(unsettled_request_is_answered_notHandled)
{
    serve("forget", on_forget);
    connect_both();
    mm_request_opts_t ro = MM_REQUEST_OPTS_INIT;
    ro.request_id = "t-forget-1";
    struct mmt_probe p = {0};
    round_trip("forget", NULL, 0, &ro, &p);
    ck_assert_int_eq(p.status, MM_EREMOTE);
    ck_assert_str_eq(p.code, "notHandled");
    ck_assert_int_eq(p.calls, 1);
    MMT_WAIT(F.base, F.sev.seen[MM_EV_ERROR], mmt_scale(3000));
    ck_assert_int_eq(F.sev.count[MM_EV_ERROR], 1);
    ck_assert_str_eq(F.sev.route[MM_EV_ERROR], "forget");
    ck_assert_str_eq(F.sev.request_id[MM_EV_ERROR], "t-forget-1");
    mmt_probe_free(&p);
}
END_TEST

/* ---- 13. request id and headers ---- */

static mm_msg_t *hdr_seen;

static void
on_headers(mm_msg_t *msg, void *ud)
{
    (void) ud;
    note(msg);
    mm_msg_unref(hdr_seen);
    hdr_seen = mm_msg_ref(msg);
    ck_assert_int_eq(mm_msg_reply(msg, NULL, 0), MM_OK);
}

START_TEST(request_id_and_user_headers_arrive)
{
    serve("hdr", on_headers);
    connect_both();
    mm_body_t *h = mm_body_new();
    msgpack_packer *pk = mm_body_packer(h);
    msgpack_pack_map(pk, 2);
    pack_str(pk, "tenant");
    pack_str(pk, "x");
    pack_str(pk, "n");
    msgpack_pack_int(pk, 5);
    mm_request_opts_t ro = MM_REQUEST_OPTS_INIT;
    ro.request_id = "abc-123";
    ro.headers = mm_body_data(h);
    ro.headers_len = mm_body_len(h);
    struct mmt_probe p = {0};
    round_trip("hdr", NULL, 0, &ro, &p);
    ck_assert_ptr_nonnull(hdr_seen);
    ck_assert_str_eq(mm_msg_request_id(hdr_seen), "abc-123");
    assert_str(mm_msg_header(hdr_seen, "tenant"), "x");
    const msgpack_object *n = mm_msg_header(hdr_seen, "n");
    ck_assert_ptr_nonnull(n);
    ck_assert_int_eq(n->type, MSGPACK_OBJECT_POSITIVE_INTEGER);
    ck_assert_uint_eq(n->via.u64, 5);
    ck_assert_ptr_null(mm_msg_header(hdr_seen, "__mms"));
    assert_str(mm_msg_header(hdr_seen, "idRequest"), "abc-123");
    hdr_seen = mm_msg_unref(hdr_seen);
    ck_assert_int_eq(p.status, MM_OK);
    ck_assert_str_eq(mm_msg_request_id(p.msg), "abc-123");
    mmt_probe_free(&p);
    mm_body_free(h);
}
END_TEST

START_TEST(reserved_header_is_refused)
{
    serve("echo", on_echo);
    connect_both();
    mm_body_t *h = mm_body_new();
    msgpack_packer *pk = mm_body_packer(h);
    msgpack_pack_map(pk, 2);
    pack_str(pk, "tenant");
    pack_str(pk, "x");
    pack_str(pk, "__mms");
    msgpack_pack_map(pk, 0);
    mm_request_opts_t ro = MM_REQUEST_OPTS_INIT;
    ro.headers = mm_body_data(h);
    ro.headers_len = mm_body_len(h);
    struct mmt_probe p = {0};
    ck_assert_int_eq(request("echo", NULL, 0, &ro, &p), MM_EINVAL);
    barrier();
    ck_assert_int_eq(p.calls, 0);
    ck_assert_int_eq(F.calls, 1); /* only the barrier reached the server */
    mm_body_free(h);
}
END_TEST

/* ---- 14. mm_request_sync ---- */

START_TEST(request_sync_returns_the_reply)
{
    serve("echo", on_echo);
    connect_both();
    mm_body_t *b = mm_body_new();
    mm_body_str(b, "sync");
    mm_msg_t *reply = NULL;
    ck_assert_int_eq(
        mm_request_sync(F.client, F.service, "echo", mm_body_data(b), mm_body_len(b), NULL, &reply),
        MM_OK);
    ck_assert_ptr_nonnull(reply);
    ck_assert_int_eq(mm_msg_status(reply), MM_OK);
    ck_assert(mm_msg_is_final(reply));
    assert_str(mm_msg_body(reply), "sync");
    mm_msg_unref(reply);
    mm_body_free(b);
}
END_TEST

/* Calls mm_request_sync on `ud` (an instance) from inside the server's handler. */
static void
on_sync_inside(mm_msg_t *msg, void *ud)
{
    note(msg);
    mm_msg_t *reply = (mm_msg_t *) 1;
    F.rc1 = mm_request_sync(ud, F.service, "echo", NULL, 0, NULL, &reply);
    ck_assert_ptr_null(reply);
    ck_assert_int_eq(mm_msg_reply(msg, NULL, 0), MM_OK);
}

/* Serve "echo" and "inside" (on_sync_inside, calling on `caller`), connect both and send
 * one request to "inside"; p gets its answer. */
static void
round_trip_sync_inside(mm_t *caller, struct mmt_probe *p)
{
    serve("echo", on_echo);
    ck_assert_int_eq(mm_handle(F.server, "inside", on_sync_inside, caller, NULL, NULL), MM_OK);
    connect_both();
    round_trip("inside", NULL, 0, NULL, p);
}

START_TEST(request_sync_inside_a_handler_is_refused)
{
    struct mmt_probe p = {0};
    round_trip_sync_inside(F.server, &p);
    ck_assert_int_eq(F.rc1, MM_ESTATE);
    ck_assert_int_eq(p.status, MM_OK);
    ck_assert_int_eq(F.calls, 1); /* the refused sync request was never sent */
    mmt_probe_free(&p);
}
END_TEST

/* Another instance on the same base: its loop is already running (libevent refuses a
 * nested event_base_loop), so the blocking call cannot work there either. */
START_TEST(request_sync_inside_another_instances_handler_is_refused)
{
    struct mmt_probe p = {0};
    round_trip_sync_inside(F.client, &p);
    ck_assert_int_eq(F.rc1, MM_ESTATE);
    ck_assert_int_eq(p.status, MM_OK);
    barrier();
    ck_assert_int_eq(F.calls, 2); /* "inside" and the barrier: the sync request was not sent */
    mmt_probe_free(&p);
}
END_TEST

START_TEST(request_sync_unroutable)
{
    connect_both();
    mm_msg_t *reply = NULL;
    ck_assert_int_eq(mm_request_sync(F.client, F.service, "nobody", NULL, 0, NULL, &reply),
                     MM_ENOROUTE);
    ck_assert_ptr_nonnull(reply);
    ck_assert_int_eq(mm_msg_status(reply), MM_ENOROUTE);
    ck_assert_str_eq(mm_msg_error_code(reply), "unroutable");
    mm_msg_unref(reply);
}
END_TEST

/* ---- 15. connection closed or instance freed with a request pending ---- */

START_TEST(close_fails_pending_request_from_the_loop)
{
    struct mmt_probe p = {0};
    request_kept(&p, NULL);
    ck_assert_int_eq(mm_close(F.client), MM_OK);
    ck_assert_int_eq(p.calls, 0); /* not from inside mm_close */
    MMT_WAIT(F.base, p.done, mmt_scale(3000));
    ck_assert_int_eq(p.calls, 1);
    ck_assert_int_eq(p.status, MM_EDISCONNECTED);
    ck_assert_str_eq(p.code, "notConnected");
    mmt_probe_free(&p);
}
END_TEST

START_TEST(reply_queue_deleted_from_outside_fails_pending_then_recovers)
{
    struct mmt_probe p = {0}, again = {0};
    request_kept(&p, NULL);
    char cmd[256];
    snprintf(cmd, sizeof cmd, "delete_queue q.replyQueue.t-rpc-client.%s", mm_id(F.client));
    ck_assert_int_eq(mmt_ctl(cmd), 0);
    /* not at its 120 s timeout: the consumer's cancel fails it */
    MMT_WAIT(F.base, p.done, mmt_scale(10000));
    ck_assert_int_eq(p.status, MM_EDISCONNECTED);
    ck_assert(F.cev.seen[MM_EV_ERROR]);
    ck_assert_ptr_nonnull(strstr(F.cev.text[MM_EV_ERROR], "reply queue"));
    serve("echo", on_echo);
    round_trip("echo", "\xa2ok", 3, NULL, &again); /* the next request declares it again */
    ck_assert_int_eq(again.status, MM_OK);
    ck_assert_str_eq(again.str, "ok");
    mmt_probe_free(&p);
    mmt_probe_free(&again);
}
END_TEST

START_TEST(free_fails_pending_request_with_ECLOSED)
{
    struct mmt_probe p = {0};
    request_kept(&p, NULL);
    mm_free(F.client);
    F.client = NULL;
    ck_assert_int_eq(p.calls, 1);
    ck_assert_int_eq(p.status, MM_ECLOSED);
    ck_assert_str_eq(p.code, "closed");
    mmt_probe_free(&p);
}
END_TEST

/* The handler frees its own instance: the free waits until the handler returned. */
static void
on_free_self(mm_msg_t *msg, void *ud)
{
    (void) ud;
    F.calls++;
    ck_assert_int_eq(mm_msg_redelivered(msg), 0);
    mm_free(F.server);
    F.server = NULL;
    F.got = true;
}

static void
on_echo_redelivered(mm_msg_t *msg, void *ud)
{
    (void) ud;
    F.rc1 = mm_msg_redelivered(msg);
    size_t len = 0;
    const void *raw = mm_msg_body_raw(msg, &len);
    ck_assert_int_eq(mm_msg_reply(msg, raw, len), MM_OK);
}

START_TEST(free_inside_a_handler_leaves_the_request_to_another_instance)
{
    serve("free", on_free_self);
    connect_both();
    struct mmt_probe p = {0};
    ck_assert_int_eq(request("free", "\xa2hi", 3, NULL, &p), MM_OK);
    MMT_WAIT(F.base, F.got, mmt_scale(5000));
    ck_assert_ptr_null(F.server);
    ck_assert(!p.done); /* never answered, never acked: the broker has it back */
    F.server = instance(F.service, MM_CODEC_MSGPACK);
    serve("free", on_echo_redelivered);
    mmt_connect(F.server);
    MMT_WAIT(F.base, p.done, mmt_scale(5000));
    ck_assert_int_eq(p.status, MM_OK);
    ck_assert_str_eq(p.str, "hi");
    ck_assert_int_eq(F.rc1, 1);
    ck_assert_int_eq(F.calls, 1);
    mmt_probe_free(&p);
}
END_TEST

struct freed {
    int calls;
    bool done;
};

static void
on_reply_free_client(mm_msg_t *msg, void *ud)
{
    struct freed *f = ud;
    f->calls++;
    ck_assert(mm_msg_is_final(msg));
    mm_free(F.client); /* inside its own callback: freed when the callback returned */
    F.client = NULL;
    f->done = true;
}

START_TEST(free_inside_a_reply_callback)
{
    serve("echo", on_echo);
    connect_both();
    struct freed f = {0};
    ck_assert_int_eq(
        mm_request(F.client, F.service, "echo", NULL, 0, NULL, on_reply_free_client, &f, NULL),
        MM_OK);
    MMT_WAIT(F.base, f.done, mmt_scale(5000));
    ck_assert_int_eq(f.calls, 1);
    ck_assert_ptr_null(F.client);
    /* the loop goes on for the others */
    F.client = instance("t-rpc-client", MM_CODEC_MSGPACK);
    mmt_connect(F.client);
    struct mmt_probe p = {0};
    ck_assert_int_eq(request("echo", NULL, 0, NULL, &p), MM_OK);
    MMT_WAIT(F.base, p.done, mmt_scale(5000));
    ck_assert_int_eq(p.status, MM_OK);
    mmt_probe_free(&p);
}
END_TEST

/* ---- 16. refused arguments ---- */

START_TEST(bad_names_and_not_connected_are_refused)
{
    struct mmt_probe p = {0};
    ck_assert_int_eq(request("echo", NULL, 0, NULL, &p), MM_ENOTCONN);
    serve("echo", on_echo);
    connect_both();
    ck_assert_int_eq(
        mm_request(F.client, "bad name", "echo", NULL, 0, NULL, mmt_on_reply, &p, NULL), MM_ENAME);
    ck_assert_int_eq(mm_request(F.client, F.service, "", NULL, 0, NULL, mmt_on_reply, &p, NULL),
                     MM_ENAME);
    ck_assert_int_eq(mm_request(F.client, F.service, NULL, NULL, 0, NULL, mmt_on_reply, &p, NULL),
                     MM_ENAME);
    barrier();
    ck_assert_int_eq(p.calls, 0);
}
END_TEST

/* ---- 17. many in flight ---- */

#define IN_FLIGHT 128

struct slot {
    int n, calls, status;
    int64_t got;
};

static int slots_done;
static bool slots_all;

static void
on_slot(mm_msg_t *msg, void *ud)
{
    struct slot *s = ud;
    s->calls++;
    s->status = mm_msg_status(msg);
    const msgpack_object *b = mm_msg_body(msg);
    s->got = b->type == MSGPACK_OBJECT_POSITIVE_INTEGER ? (int64_t) b->via.u64 : -1;
    slots_all = ++slots_done == IN_FLIGHT;
}

START_TEST(many_requests_in_flight_each_answered_once)
{
    static struct slot slots[IN_FLIGHT];
    serve("echo", on_echo);
    connect_both();
    slots_done = 0;
    slots_all = false;
    mm_body_t *b = mm_body_new();
    for (int i = 0; i < IN_FLIGHT; i++) {
        slots[i] = (struct slot){.n = i + 1000};
        mm_body_reset(b);
        msgpack_pack_int(mm_body_packer(b), slots[i].n);
        ck_assert_int_eq(mm_request(F.client, F.service, "echo", mm_body_data(b), mm_body_len(b),
                                    NULL, on_slot, &slots[i], NULL),
                         MM_OK);
    }
    ck_assert_int_eq(slots_done, 0);
    MMT_WAIT(F.base, slots_all, mmt_scale(10000));
    barrier(); /* a duplicate answer would have arrived before the barrier's */
    ck_assert_int_eq(slots_done, IN_FLIGHT);
    for (int i = 0; i < IN_FLIGHT; i++) {
        ck_assert_int_eq(slots[i].calls, 1);
        ck_assert_int_eq(slots[i].status, MM_OK);
        ck_assert_int_eq(slots[i].got, slots[i].n);
    }
    ck_assert_int_eq(F.calls, IN_FLIGHT + 1);
    ck_assert(!F.cev.seen[MM_EV_UNHANDLED]);
    mm_body_free(b);
}
END_TEST

static Suite *
suite(void)
{
    Suite *s = suite_create("rpc");
    TCase *tc = mmt_tcase(s, "rpc", setup, teardown, 60);
    tcase_add_test(tc, round_trip_string);
    tcase_add_test(tc, free_inside_a_handler_leaves_the_request_to_another_instance);
    tcase_add_test(tc, free_inside_a_reply_callback);
    tcase_add_test(tc, reply_queue_deleted_from_outside_fails_pending_then_recovers);
    tcase_add_test(tc, round_trip_binary_with_nul_bytes_stays_bin);
    tcase_add_test(tc, round_trip_map_with_nested_array);
    tcase_add_test(tc, no_body_arrives_as_the_empty_string);
    tcase_add_test(tc, round_trip_json_codec);
    tcase_add_test(tc, json_client_to_msgpack_server_gets_json_reply);
    tcase_add_test(tc, msgpack_client_to_json_server_gets_msgpack_reply);
    tcase_add_test(tc, body_over_1mb_is_compressed_and_comes_back_exact);
    tcase_add_test(tc, reject_gives_EREMOTE_with_the_error_object);
    tcase_add_test(tc, client_timeout_and_server_side_expiry);
    tcase_add_test(tc, request_queued_past_its_deadline_is_not_handled);
    tcase_add_test(tc, request_arriving_past_its_deadline_is_acked_not_handled);
    tcase_add_test(tc, unroutable_request_fails_fast);
    tcase_add_test(tc, no_timeout_request_answered_late_succeeds);
    tcase_add_test(tc, negative_timeout_is_refused);
    tcase_add_test(tc, cancel_runs_the_callback_once_and_drops_the_late_answer);
    tcase_add_test(tc, reply_from_a_timer_after_the_handler_returned);
    tcase_add_test(tc, second_reply_is_refused);
    tcase_add_test(tc, write_after_end_is_refused);
    tcase_add_test(tc, reply_to_an_event_is_refused);
    tcase_add_test(tc, unsettled_request_is_answered_notHandled);
    tcase_add_test(tc, request_id_and_user_headers_arrive);
    tcase_add_test(tc, reserved_header_is_refused);
    tcase_add_test(tc, request_sync_returns_the_reply);
    tcase_add_test(tc, request_sync_inside_a_handler_is_refused);
    tcase_add_test(tc, request_sync_inside_another_instances_handler_is_refused);
    tcase_add_test(tc, request_sync_unroutable);
    tcase_add_test(tc, close_fails_pending_request_from_the_loop);
    tcase_add_test(tc, free_fails_pending_request_with_ECLOSED);
    tcase_add_test(tc, bad_names_and_not_connected_are_refused);
    tcase_add_test(tc, many_requests_in_flight_each_answered_once);
    return s;
}

int
main(void)
{
    return mmt_run(suite());
}
