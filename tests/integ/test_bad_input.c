/* Integration: malformed messages injected by a raw rabbitmq-c peer straight
 * into a handler's request queue (undecodable bodies, unknown content types
 * and encodings, gzip bombs, oversized bodies, broken __mms headers, routes
 * nobody handles, deliveries of no known kind) and into a requester's reply
 * queue (unknown correlation ids, undecodable answers). Each must raise the
 * right event, never reach the handler, go to the service's dead-letter
 * queue instead of back to its queue (a requester is told with an error
 * answer), and leave the loop working.
 * Also: names refused by the public API. */
#include <check.h>
#include <event2/event.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <zlib.h>

#include "micromsg.h"
#include "mmt.h"
#include "mmt_fx.h"
#include "mmt_peer.h"

#define ROUTE "echo"
#define WAIT_MS 5000

/* ---- building malformed messages ---- */

enum mms_form { MMS_TABLE, MMS_NONE, MMS_STRING };

struct bad {
    const char *ctype;    /* NULL: no content type */
    const char *encoding; /* NULL: no content encoding */
    enum mms_form mms;
    const char *route; /* __mms.route; NULL: ROUTE */
    bool is_task;      /* __mms.isTask = true */
    bool task_str;     /* __mms.isTask = "yes": the wrong type */
    bool request;      /* correlation id and reply_to (the raw peer's queue) */
    amqp_bytes_t body;
};

/* The headers and properties of a malformed message, alive until it is published. */
struct wire_msg {
    struct mmt_table mms, top;
    struct mmt_props props;
};

static void
mms_entries(const struct bad *b, struct mmt_table *mms)
{
    mmt_table_str(mms, "route", b->route ? b->route : ROUTE);
    mmt_table_i64(mms, "iat", 1700000000000);
    if (b->task_str)
        mmt_table_str(mms, "isTask", "yes");
    else if (b->is_task)
        mmt_table_bool(mms, "isTask", true);
}

static void
wire_build(struct wire_msg *w, const struct bad *b, const char *corr, const char *reply_to)
{
    memset(w, 0, sizeof *w);
    mmt_table_str(&w->top, "idRequest", corr);
    if (b->mms == MMS_STRING) {
        mmt_table_str(&w->top, "__mms", "route=" ROUTE);
    } else if (b->mms == MMS_TABLE) {
        mms_entries(b, &w->mms);
        mmt_table_table(&w->top, "__mms", &w->mms);
    }
    w->props.headers = &w->top;
    w->props.content_type = b->ctype;
    w->props.content_encoding = b->encoding;
    if (b->request) {
        w->props.correlation_id = corr;
        w->props.reply_to = reply_to;
    }
}

/* gzip of `total` zero bytes, built without holding them. */
static void
gzip_zeros(size_t total, amqp_bytes_t *out)
{
    static unsigned char zeros[1 << 20];
    size_t cap = total / 500 + 4096;
    unsigned char *buf = malloc(cap);
    ck_assert_ptr_nonnull(buf);
    z_stream z = {0};
    ck_assert_int_eq(deflateInit2(&z, 9, Z_DEFLATED, 15 + 16, 9, Z_DEFAULT_STRATEGY), Z_OK);
    z.next_out = buf;
    z.avail_out = (uInt) cap;
    for (size_t left = total; left > 0;) {
        size_t n = left < sizeof zeros ? left : sizeof zeros;
        left -= n;
        z.next_in = zeros;
        z.avail_in = (uInt) n;
        ck_assert_int_eq(deflate(&z, left ? Z_NO_FLUSH : Z_FINISH), left ? Z_OK : Z_STREAM_END);
        ck_assert_uint_eq(z.avail_in, 0);
    }
    *out = (amqp_bytes_t){z.total_out, buf};
    deflateEnd(&z);
}

/* ---- reading the error answer a refused request gets ---- */

static const amqp_field_value_t *
table_get(const amqp_table_t *t, const char *key)
{
    for (int i = 0; i < t->num_entries; i++)
        if (t->entries[i].key.len == strlen(key) &&
            memcmp(t->entries[i].key.bytes, key, t->entries[i].key.len) == 0)
            return &t->entries[i].value;
    return NULL;
}

static void
code_from_msgpack(amqp_bytes_t body, char *out, size_t len)
{
    msgpack_unpacked u;
    msgpack_unpacked_init(&u);
    size_t off = 0;
    if (msgpack_unpack_next(&u, body.bytes, body.len, &off) == MSGPACK_UNPACK_SUCCESS) {
        const msgpack_object *c = mmt_map_get(mmt_map_get(&u.data, "error"), "codeString");
        if (c != NULL && c->type == MSGPACK_OBJECT_STR)
            snprintf(out, len, "%.*s", (int) c->via.str.size, c->via.str.ptr);
    }
    msgpack_unpacked_destroy(&u);
}

static void
code_from_json(amqp_bytes_t body, char *out, size_t len)
{
    char text[1024];
    snprintf(text, sizeof text, "%.*s", (int) body.len, (char *) body.bytes);
    const char *p = strstr(text, "\"codeString\"");
    if (p == NULL)
        return;
    p += strlen("\"codeString\"");
    p += strspn(p, " \t:");
    if (*p++ != '"')
        return;
    snprintf(out, len, "%.*s", (int) strcspn(p, "\""), p);
}

/* The codeString of an answer, which must be an error answer (__mms.isError true),
 * and its content type (ct, 64 bytes). */
static void
answer_code(const amqp_envelope_t *env, char *out, size_t len, char *ct)
{
    const amqp_basic_properties_t *p = &env->message.properties;
    out[0] = '\0';
    ck_assert(p->_flags & AMQP_BASIC_HEADERS_FLAG);
    const amqp_field_value_t *mms = table_get(&p->headers, "__mms");
    ck_assert_ptr_nonnull(mms);
    ck_assert_int_eq(mms->kind, AMQP_FIELD_KIND_TABLE);
    const amqp_field_value_t *err = table_get(&mms->value.table, "isError");
    ck_assert_ptr_nonnull(err);
    ck_assert_int_eq(err->kind, AMQP_FIELD_KIND_BOOLEAN);
    ck_assert_msg(err->value.boolean, "the answer is not an error answer");
    ck_assert(p->_flags & AMQP_BASIC_CONTENT_TYPE_FLAG);
    snprintf(ct, 64, "%.*s", (int) p->content_type.len, (char *) p->content_type.bytes);
    if (strcmp(ct, "application/json") == 0)
        code_from_json(env->message.body, out, len);
    else
        code_from_msgpack(env->message.body, out, len);
}

/* ---- fixture: a server, a client and the raw peer on one loop ---- */

struct fx {
    struct event_base *base;
    mm_t *server, *client;
    mm_route_t *route;
    char service[64], client_service[64];
    struct mmt_peer raw;       /* answers to it arrive on F.raw.reply */
    struct mmt_evlog sev, cev; /* the server's and the client's events */
    int handled;               /* calls of the server's handler */
    unsigned seq;
    char answer_type[64]; /* content type of the last error answer */
};

static struct fx F;

static mm_t *
instance(const char *service, uint32_t max_body, int codec, struct mmt_evlog *log)
{
    mm_opts_t o = MM_OPTS_INIT;
    o.max_body = max_body;
    o.codec = codec;
    return mmt_instance(F.base, service, &o, log);
}

static void
on_echo(mm_msg_t *msg, void *ud)
{
    (void) ud;
    F.handled++;
    size_t len = 0;
    const void *raw = mm_msg_body_raw(msg, &len);
    ck_assert_int_eq(mm_msg_reply(msg, raw, len), MM_OK);
}

/* The server: handles ROUTE one message at a time, so that a requeued message
 * would come back before anything published after it. */
static void
server_up_codec(uint32_t max_body, int codec)
{
    F.server = instance(F.service, max_body, codec, &F.sev);
    F.route = mmt_handle(F.server, ROUTE, on_echo, NULL, 1);
    mmt_connect(F.server);
}

static void
server_up(uint32_t max_body)
{
    server_up_codec(max_body, MM_CODEC_MSGPACK);
}

static void
setup(void)
{
    memset(&F, 0, sizeof F);
    F.base = mmt_base_new();
    mmt_unique("bad", F.service, sizeof F.service);
    mmt_unique("bad-client", F.client_service, sizeof F.client_service);
    F.client = instance(F.client_service, 0, MM_CODEC_MSGPACK, &F.cev);
    mmt_connect(F.client);
    mmt_peer_open(&F.raw);
    mmt_peer_reply_queue(&F.raw);
}

static void
teardown(void)
{
    if (F.route != NULL)
        mm_route_stop(F.route); /* deletes the queue: it is empty and unused */
    mm_free(F.server);
    mm_free(F.client);
    if (F.raw.c != NULL) { /* the dead-letter queue outlives the test otherwise */
        char dlq[128];
        snprintf(dlq, sizeof dlq, "q.deadLetter.%s", F.service);
        amqp_queue_delete(F.raw.c, mmt_peer_channel(&F.raw), amqp_cstring_bytes(dlq), 0, 0);
    }
    mmt_peer_close(&F.raw);
    mmt_base_free(F.base);
}

/* ---- requests through the library ---- */

/* A good request to `service`/`route` from the client is answered normally. */
static void
good_request(const char *service)
{
    mm_body_t *b = mm_body_new();
    mm_body_str(b, "still alive");
    struct mmt_probe p = {0};
    ck_assert_int_eq(mm_request(F.client, service, ROUTE, mm_body_data(b), mm_body_len(b), NULL,
                                mmt_on_reply, &p, NULL),
                     MM_OK);
    MMT_WAIT(F.base, p.done, mmt_scale(WAIT_MS));
    ck_assert_msg(p.status == MM_OK, "good request after bad input: %s (%s)", mm_err_name(p.status),
                  p.code);
    ck_assert_int_eq(p.calls, 1);
    mmt_probe_free(&p);
    mm_body_free(b);
}

/* ---- the check every malformed message goes through ---- */

struct expect {
    mm_event_type type;
    int code;
    const char *needle; /* the event text names the problem */
    const char *route;  /* the event's route */
    const char *answer; /* the error answer's codeString (requests) */
};

static void
check_answer(const char *corr, const char *want)
{
    amqp_envelope_t env;
    ck_assert_msg(mmt_peer_read(&F.raw, mmt_scale(WAIT_MS), &env),
                  "the requester got no error answer for its bad request");
    const amqp_basic_properties_t *p = &env.message.properties;
    ck_assert(p->_flags & AMQP_BASIC_CORRELATION_ID_FLAG);
    ck_assert_int_eq((int) p->correlation_id.len, (int) strlen(corr));
    ck_assert(memcmp(p->correlation_id.bytes, corr, strlen(corr)) == 0);
    char code[64];
    answer_code(&env, code, sizeof code, F.answer_type);
    ck_assert_str_eq(code, want);
    amqp_destroy_envelope(&env);
}

static void
check_event(const struct expect *x, const char *corr)
{
    const struct mmt_evlog *l = &F.sev;
    int t = x->type;
    ck_assert(l->seen[t]);
    ck_assert_msg(l->code[t] == x->code, "event code %s, expected %s", mm_err_name(l->code[t]),
                  mm_err_name(x->code));
    ck_assert_msg(strstr(l->text[t], x->needle) != NULL, "event text '%s' does not name '%s'",
                  l->text[t], x->needle);
    ck_assert_str_eq(l->route[t], x->route ? x->route : ROUTE);
    ck_assert_str_eq(l->request_id[t], corr);
}

static void
send_bad(const struct bad *b, const struct expect *x)
{
    char corr[64];
    snprintf(corr, sizeof corr, "bad-%u", ++F.seq);
    struct wire_msg w;
    wire_build(&w, b, corr, F.raw.reply);
    char queue[200];
    mmt_request_queue(queue, sizeof queue, F.service, ROUTE);
    mmt_peer_publish(&F.raw, queue, &w.props, b->body);
    MMT_WAIT(F.base, F.sev.seen[x->type], mmt_scale(WAIT_MS));
    check_event(x, corr);
    if (b->request)
        check_answer(corr, x->answer);
    good_request(F.service);        /* the loop goes on */
    ck_assert_int_eq(F.handled, 1); /* only the good request reached the handler */
    /* prefetch 1: a requeued message would have come back before the good request */
    ck_assert_int_eq(F.sev.count[x->type], 1);
    mm_stat_t st;
    ck_assert_int_eq(mm_route_stat(F.route, &st), MM_OK);
    ck_assert_uint_eq(st.messages, 0);
    ck_assert_uint_eq(st.consumers, 1);
    /* dead-lettered, not dropped: acked only once the dead-letter queue had it */
    ck_assert_int_eq(mm_deadletter_stat(F.client, F.service, &st), MM_OK);
    ck_assert_uint_eq(st.messages, 1);
    ck_assert_int_eq(F.sev.count[MM_EV_DEADLETTER], 1);
}

static const struct expect DECODE_ERROR = {MM_EV_ERROR, MM_EDECODE, NULL, NULL, "badRequest"};

static void
send_decode_error(struct bad b, const char *needle)
{
    struct expect x = DECODE_ERROR;
    x.needle = needle;
    send_bad(&b, &x);
}

/* ---- undecodable bodies ---- */

START_TEST(truncated_msgpack_body)
{
    server_up(0);
    /* a map of two pairs with only one pair */
    struct bad b = {.ctype = "application/msgpack",
                    .request = true,
                    .body = {4, "\x82\xa1"
                                "a"
                                "\x01"}};
    send_decode_error(b, "msgpack");
}
END_TEST

START_TEST(broken_json_body)
{
    server_up(0);
    struct bad b = {.ctype = "application/json", .request = true, .body = {9, "{not json"}};
    send_decode_error(b, "JSON");
}
END_TEST

START_TEST(unknown_content_type)
{
    server_up(0);
    struct bad b = {.ctype = "text/plain", .request = true, .body = {5, "hello"}};
    send_decode_error(b, "text/plain");
}
END_TEST

START_TEST(missing_content_type)
{
    server_up(0);
    struct bad b = {.request = true, .body = {1, "\xa0"}};
    send_decode_error(b, "content type");
}
END_TEST

/* A requester whose content type is unknown is answered in the instance's codec. */
START_TEST(unreadable_type_answered_in_the_instance_codec)
{
    server_up_codec(0, MM_CODEC_JSON);
    struct bad b = {.request = true, .body = {1, "\xa0"}};
    send_decode_error(b, "content type");
    ck_assert_str_eq(F.answer_type, "application/json");
}
END_TEST

START_TEST(unknown_content_encoding)
{
    server_up(0);
    struct bad b = {.ctype = "application/msgpack",
                    .encoding = "deflate",
                    .request = true,
                    .body = {1, "\xa0"}};
    send_decode_error(b, "deflate");
}
END_TEST

/* ---- too big ---- */

START_TEST(gzip_bomb)
{
    server_up(1 << 20);
    struct bad b = {.ctype = "application/msgpack", .encoding = "gzip", .request = true};
    gzip_zeros((size_t) 64 << 20, &b.body);
    ck_assert_uint_lt(b.body.len, 1 << 20); /* small on the wire: only inflating is refused */
    struct expect x = {MM_EV_ERROR, MM_ETOOBIG, "max_body", NULL, "tooBig"};
    send_bad(&b, &x);
    free(b.body.bytes);
}
END_TEST

START_TEST(oversized_body)
{
    server_up(64 << 10);
    size_t n = 200 * 1000;
    char *body = calloc(1, n);
    ck_assert_ptr_nonnull(body);
    struct bad b = {.ctype = "application/msgpack", .request = true, .body = {n, body}};
    struct expect x = {MM_EV_ERROR, MM_ETOOBIG, "max_body", NULL, "tooBig"};
    send_bad(&b, &x);
    free(body);
}
END_TEST

/* ---- broken __mms, unknown kinds, unhandled routes ---- */

START_TEST(missing_mms_header)
{
    server_up(0);
    struct bad b = {
        .ctype = "application/msgpack", .mms = MMS_NONE, .request = true, .body = {1, "\xa0"}};
    send_decode_error(b, "__mms");
}
END_TEST

START_TEST(mms_not_a_table)
{
    server_up(0);
    struct bad b = {
        .ctype = "application/msgpack", .mms = MMS_STRING, .request = true, .body = {1, "\xa0"}};
    send_decode_error(b, "__mms");
}
END_TEST

START_TEST(is_task_of_the_wrong_type)
{
    server_up(0);
    struct bad b = {.ctype = "application/msgpack", .task_str = true, .body = {1, "\xa0"}};
    send_decode_error(b, "isTask");
}
END_TEST

START_TEST(neither_request_nor_task)
{
    server_up(0);
    struct bad b = {.ctype = "application/msgpack", .body = {1, "\xa0"}};
    send_decode_error(b, "neither");
}
END_TEST

START_TEST(request_for_a_route_not_handled)
{
    server_up(0);
    struct bad b = {
        .ctype = "application/msgpack", .route = "other", .request = true, .body = {1, "\xa0"}};
    struct expect x = {MM_EV_UNHANDLED, MM_ENOENT, "other", "other", "notHandled"};
    send_bad(&b, &x);
}
END_TEST

START_TEST(task_for_a_route_not_handled)
{
    server_up(0);
    struct bad b = {
        .ctype = "application/msgpack", .route = "other", .is_task = true, .body = {1, "\xa0"}};
    struct expect x = {MM_EV_UNHANDLED, MM_ENOENT, "other", "other", NULL};
    send_bad(&b, &x);
}
END_TEST

/* ---- the requesting side: answers it cannot use ---- */

START_TEST(answer_with_unknown_correlation_id)
{
    server_up(0);
    good_request(F.service); /* the client's reply queue exists from now on */
    char queue[200];
    snprintf(queue, sizeof queue, "q.replyQueue.%s.%s", F.client_service, mm_id(F.client));
    const char *corr = "00000000-0000-4000-8000-000000000000";
    struct mmt_answer a = {
        .to = queue, .correlation_id = corr, .end = true, .body = MMT_BYTES("\xa0")};
    mmt_peer_answer(&F.raw, &a);
    MMT_WAIT(F.base, F.cev.seen[MM_EV_UNHANDLED], mmt_scale(WAIT_MS));
    const char *text = F.cev.text[MM_EV_UNHANDLED];
    ck_assert_int_eq(F.cev.code[MM_EV_UNHANDLED], MM_ENOENT);
    ck_assert_msg(strstr(text, corr) != NULL, "event text '%s' does not name the id", text);
    good_request(F.service); /* the client goes on */
    ck_assert_int_eq(F.handled, 2);
}
END_TEST

START_TEST(undecodable_answer_fails_the_request)
{
    char peer[64];
    mmt_unique("bad-peer", peer, sizeof peer);
    mmt_peer_serve(&F.raw, peer, ROUTE); /* its queue is deleted by the teardown */
    struct mmt_probe p = {0};
    ck_assert_int_eq(mm_request(F.client, peer, ROUTE, NULL, 0, NULL, mmt_on_reply, &p, NULL),
                     MM_OK);
    struct mmt_peer_req q;
    mmt_peer_take(&F.raw, mmt_scale(WAIT_MS), &q);
    struct mmt_answer a = {.to = q.reply_to,
                           .correlation_id = q.corr,
                           .end = true,
                           .body = MMT_BYTES("\x92\x01")}; /* truncated array */
    mmt_peer_answer(&F.raw, &a);
    MMT_WAIT(F.base, p.done, mmt_scale(WAIT_MS));
    ck_assert_msg(p.status == MM_EDECODE, "status %s", mm_err_name(p.status));
    ck_assert_str_eq(p.code, "badAnswer");
    ck_assert_int_eq(p.calls, 1);
    ck_assert(F.cev.seen[MM_EV_ERROR]);
    ck_assert_int_eq(F.cev.code[MM_EV_ERROR], MM_EDECODE);
    mmt_probe_free(&p);
}
END_TEST

/* ---- names refused by the public API ---- */

static void
noop(mm_msg_t *msg, void *ud)
{
    (void) msg;
    (void) ud;
}

static char long_name[130];

static const char *const bad_routes[] = {
    "a..b", ".x", "x.", "has space", long_name, "*", "#", "orders.*", "internal.x", "",
};

START_TEST(handle_refuses_bad_route_names)
{
    memset(long_name, 'r', 129);
    const char *name = bad_routes[_i];
    ck_assert_msg(mm_handle(F.client, name, noop, NULL, NULL, NULL) == MM_ENAME, "'%s' accepted",
                  name);
    ck_assert_int_eq(mm_last_code(F.client), MM_ENAME);
    ck_assert_str_ne(mm_last_error(F.client), "");
}
END_TEST

START_TEST(listen_allows_whole_word_wildcards_only)
{
    ck_assert_int_eq(mm_listen(F.client, NULL, "orders.*", noop, NULL, NULL, NULL), MM_OK);
    ck_assert_int_eq(mm_listen(F.client, NULL, "orders.#", noop, NULL, NULL, NULL), MM_OK);
    ck_assert_int_eq(mm_listen(F.client, NULL, "ord*ers", noop, NULL, NULL, NULL), MM_ENAME);
    ck_assert_int_eq(mm_listen(F.client, NULL, "orders.a#", noop, NULL, NULL, NULL), MM_ENAME);
    ck_assert_int_eq(mm_listen(F.client, "ord*", "x", noop, NULL, NULL, NULL), MM_ENAME);
    ck_assert_int_eq(mm_listen(F.client, NULL, "a..b", noop, NULL, NULL, NULL), MM_ENAME);
}
END_TEST

START_TEST(internal_targets_allowed_for_listen_and_emit)
{
    ck_assert_msg(mm_listen(F.client, "internal.x", "y", noop, NULL, NULL, NULL) == MM_OK, "%s",
                  mm_last_error(F.client));
    ck_assert_msg(mm_emit(F.client, "internal.x", "y", NULL, 0, NULL) == MM_OK, "%s",
                  mm_last_error(F.client));
    /* but not for requests and tasks: a service may not be called internal */
    ck_assert_int_eq(mm_task(F.client, "internal.x", "y", NULL, 0, NULL), MM_ENAME);
}
END_TEST

static Suite *
suite(void)
{
    Suite *s = suite_create("bad_input");
    TCase *tc = mmt_tcase(s, "server", setup, teardown, 60);
    tcase_add_test(tc, truncated_msgpack_body);
    tcase_add_test(tc, broken_json_body);
    tcase_add_test(tc, unknown_content_type);
    tcase_add_test(tc, missing_content_type);
    tcase_add_test(tc, unreadable_type_answered_in_the_instance_codec);
    tcase_add_test(tc, unknown_content_encoding);
    tcase_add_test(tc, gzip_bomb);
    tcase_add_test(tc, oversized_body);
    tcase_add_test(tc, missing_mms_header);
    tcase_add_test(tc, mms_not_a_table);
    tcase_add_test(tc, is_task_of_the_wrong_type);
    tcase_add_test(tc, neither_request_nor_task);
    tcase_add_test(tc, request_for_a_route_not_handled);
    tcase_add_test(tc, task_for_a_route_not_handled);

    tc = mmt_tcase(s, "client", setup, teardown, 60);
    tcase_add_test(tc, answer_with_unknown_correlation_id);
    tcase_add_test(tc, undecodable_answer_fails_the_request);

    tc = mmt_tcase(s, "names", setup, teardown, 30);
    tcase_add_loop_test(tc, handle_refuses_bad_route_names, 0,
                        (int) (sizeof bad_routes / sizeof bad_routes[0]));
    tcase_add_test(tc, listen_allows_whole_word_wildcards_only);
    tcase_add_test(tc, internal_targets_allowed_for_listen_and_emit);
    return s;
}

int
main(void)
{
    return mmt_run(suite());
}
