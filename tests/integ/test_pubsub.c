/* Integration: events (PROTOCOL.md section 5): emit and listen on the own
 * service and on an explicit target, body and user headers, every listening
 * instance getting every event, topic wildcards, stop and listen again, a
 * listen declared before connecting, and emit's refusals. "Nothing arrived"
 * is proven by a sentinel event sent after, never by waiting. */
#include <check.h>
#include <event2/event.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "micromsg.h"
#include "mmt.h"
#include "mmt_fx.h"

#define MAX_MM 4
#define MAX_EVENTS 64
#define N_EMIT 50

struct fx {
    struct event_base *base;
    mm_t *mm[MAX_MM];
    struct mmt_evlog ev[MAX_MM]; /* instance events (the emitter must get none) */
    int n;
    char service[64], target[64];
};

static struct fx F;

/* A new instance of `service`, freed by the teardown. */
static mm_t *
instance(const char *service)
{
    ck_assert_int_lt(F.n, MAX_MM);
    mm_t *mm = mmt_instance(F.base, service, NULL, &F.ev[F.n]);
    F.mm[F.n++] = mm;
    return mm;
}

static mm_t *
connected(const char *service)
{
    mm_t *mm = instance(service);
    mmt_connect(mm);
    return mm;
}

static void
setup(void)
{
    memset(&F, 0, sizeof F);
    F.base = mmt_base_new();
    mmt_unique("pubsub", F.service, sizeof F.service);
    mmt_unique("pubsub-target", F.target, sizeof F.target);
}

static void
teardown(void)
{
    for (int i = 0; i < F.n; i++)
        mm_free(F.mm[i]);
    mmt_base_free(F.base);
}

/* ---- bodies and headers ---- */

/* Emit the body b (and headers h, when not NULL); b and h are freed. */
static void
emit_body(mm_t *mm, const char *target, const char *route, mm_body_t *b, mm_body_t *h)
{
    mm_send_opts_t so = MM_SEND_OPTS_INIT;
    if (h != NULL) {
        so.headers = mm_body_data(h);
        so.headers_len = mm_body_len(h);
    }
    int rc = mm_emit(mm, target, route, mm_body_data(b), mm_body_len(b), h ? &so : NULL);
    ck_assert_msg(rc == MM_OK, "%s", mm_last_error(mm));
    mm_body_free(b);
    mm_body_free(h);
}

static void
emit_str(mm_t *mm, const char *target, const char *route, const char *s)
{
    mm_body_t *b = mm_body_new();
    mm_body_str(b, s);
    emit_body(mm, target, route, b, NULL);
}

static void
emit_int(mm_t *mm, const char *target, const char *route, int64_t v)
{
    mm_body_t *b = mm_body_new();
    msgpack_pack_int64(mm_body_packer(b), v);
    emit_body(mm, target, route, b, NULL);
}

/* ---- a listener's record ---- */

struct lis {
    int n, not_event;
    bool done;           /* the sentinel (or `want` events) arrived */
    int want;            /* done after this many events (0: on the sentinel) */
    const char *stop_at; /* sentinel route, as mm_msg_route gives it */
    char routes[MAX_EVENTS][192];
    char bodies[MAX_EVENTS][64]; /* string bodies */
    int64_t ints[MAX_EVENTS];    /* integer bodies */
    bool hdr_ok;                 /* headers of the first event: x-tag "t1", x-num 7 */
};

static void
record_body(struct lis *l, const msgpack_object *b)
{
    if (b->type == MSGPACK_OBJECT_STR)
        snprintf(l->bodies[l->n], sizeof l->bodies[l->n], "%.*s", (int) b->via.str.size,
                 b->via.str.ptr);
    else if (b->type == MSGPACK_OBJECT_POSITIVE_INTEGER)
        l->ints[l->n] = (int64_t) b->via.u64;
    else
        l->ints[l->n] = -1;
}

static bool
headers_ok(const mm_msg_t *msg)
{
    const msgpack_object *num = mm_msg_header(msg, "x-num");
    return mmt_is_str(mm_msg_header(msg, "x-tag"), "t1") && num != NULL &&
           num->type == MSGPACK_OBJECT_POSITIVE_INTEGER && num->via.u64 == 7;
}

static void
on_listen(mm_msg_t *msg, void *ud)
{
    struct lis *l = ud;
    if (mm_msg_kind_of(msg) != MM_MSG_EVENT)
        l->not_event++;
    if (l->n == 0)
        l->hdr_ok = headers_ok(msg);
    if (l->n < MAX_EVENTS) {
        snprintf(l->routes[l->n], sizeof l->routes[l->n], "%s", mm_msg_route(msg));
        record_body(l, mm_msg_body(msg));
    }
    l->n++;
    if ((l->want > 0 && l->n >= l->want) ||
        (l->stop_at != NULL && strcmp(mm_msg_route(msg), l->stop_at) == 0))
        l->done = true;
}

static void
listen_ok(mm_t *mm, const char *target, const char *route, struct lis *l, mm_route_t **ret)
{
    ck_assert_msg(mm_listen(mm, target, route, on_listen, l, NULL, ret) == MM_OK, "%s",
                  mm_last_error(mm));
}

/* "<target>.<suffix>" in buf. */
static const char *
key(char *buf, size_t n, const char *target, const char *suffix)
{
    snprintf(buf, n, "%s.%s", target, suffix);
    return buf;
}

/* ---- round trips ---- */

static void
emit_with_headers(mm_t *mm, const char *target, const char *route, const char *s)
{
    mm_body_t *b = mm_body_new(), *h = mm_body_new();
    mm_body_str(b, s);
    msgpack_packer *pk = mm_body_packer(h);
    msgpack_pack_map(pk, 2);
    mm_body_str(h, "x-tag");
    mm_body_str(h, "t1");
    mm_body_str(h, "x-num");
    msgpack_pack_int(pk, 7);
    emit_body(mm, target, route, b, h);
}

static void
assert_one_event(const struct lis *l, const char *route, const char *body)
{
    ck_assert_int_eq(l->n, 1);
    ck_assert_int_eq(l->not_event, 0);
    ck_assert_str_eq(l->routes[0], route);
    ck_assert_str_eq(l->bodies[0], body);
    ck_assert(l->hdr_ok);
}

START_TEST(round_trip_own_service)
{
    mm_t *a = connected(F.service);
    struct lis l = {.want = 1};
    listen_ok(a, NULL, "ping", &l, NULL);
    emit_with_headers(a, NULL, "ping", "hello");
    MMT_WAIT(F.base, l.done, mmt_scale(5000));
    char k[192];
    assert_one_event(&l, key(k, sizeof k, F.service, "ping"), "hello");
}
END_TEST

START_TEST(round_trip_explicit_target)
{
    mm_t *listener = connected(F.service);
    mm_t *emitter = connected("t-pubsub-emitter");
    struct lis l = {.want = 1};
    listen_ok(listener, F.target, "hello", &l, NULL);
    emit_with_headers(emitter, F.target, "hello", "world");
    MMT_WAIT(F.base, l.done, mmt_scale(5000));
    char k[192];
    assert_one_event(&l, key(k, sizeof k, F.target, "hello"), "world");
}
END_TEST

/* The integer bodies 0..n-1, each exactly once. */
static void
assert_each_once(const struct lis *l, int n)
{
    ck_assert_int_eq(l->n, n);
    bool seen[N_EMIT + 1] = {0};
    for (int i = 0; i < n; i++) {
        ck_assert(l->ints[i] >= 0 && l->ints[i] < n);
        ck_assert_msg(!seen[l->ints[i]], "event %lld twice", (long long) l->ints[i]);
        seen[l->ints[i]] = true;
    }
}

START_TEST(every_instance_gets_every_event)
{
    mm_t *one = connected(F.service), *two = connected(F.service);
    mm_t *emitter = connected("t-pubsub-emitter");
    char k[192];
    struct lis l1 = {.stop_at = key(k, sizeof k, F.service, "tick.end")};
    struct lis l2 = {.stop_at = k};
    listen_ok(one, NULL, "tick.*", &l1, NULL);
    listen_ok(two, NULL, "tick.*", &l2, NULL);
    for (int i = 0; i < N_EMIT; i++)
        emit_int(emitter, F.service, "tick.n", i);
    emit_int(emitter, F.service, "tick.end", N_EMIT); /* after all: nothing more is coming */
    MMT_WAIT(F.base, l1.done, mmt_scale(5000));
    MMT_WAIT(F.base, l2.done, mmt_scale(5000));
    assert_each_once(&l1, N_EMIT + 1);
    assert_each_once(&l2, N_EMIT + 1);
}
END_TEST

/* ---- wildcards ---- */

static void
assert_routes(const struct lis *l, const char *const *want, int n)
{
    char k[192];
    ck_assert_int_eq(l->n, n);
    for (int i = 0; i < n; i++)
        ck_assert_str_eq(l->routes[i], key(k, sizeof k, F.target, want[i]));
}

START_TEST(wildcards_match_topic_words)
{
    mm_t *listener = connected(F.service);
    mm_t *emitter = connected("t-pubsub-emitter");
    char end_orders[192], end_billing[192];
    key(end_orders, sizeof end_orders, F.target, "orders.sentinel");
    key(end_billing, sizeof end_billing, F.target, "billing.done");
    struct lis star = {.stop_at = end_orders}, ohash = {.stop_at = end_orders};
    struct lis all = {.stop_at = end_billing}, other = {.stop_at = end_billing};
    listen_ok(listener, F.target, "orders.*", &star, NULL);
    listen_ok(listener, F.target, "orders.#", &ohash, NULL);
    listen_ok(listener, F.target, "#", &all, NULL);
    listen_ok(listener, F.target, "billing.*", &other, NULL);
    /* One publisher, so each queue receives in this order: a sentinel that
     * arrived means every earlier event that matched has arrived too. */
    const char *sent[] = {"orders", "orders.a.b", "orders.created", "orders.sentinel",
                          "billing.done"};
    for (size_t i = 0; i < sizeof sent / sizeof *sent; i++)
        emit_str(emitter, F.target, sent[i], sent[i]);
    MMT_WAIT(F.base, star.done, mmt_scale(5000));
    MMT_WAIT(F.base, ohash.done, mmt_scale(5000));
    MMT_WAIT(F.base, all.done, mmt_scale(5000));
    MMT_WAIT(F.base, other.done, mmt_scale(5000));
    const char *w_star[] = {"orders.created", "orders.sentinel"};
    const char *w_ohash[] = {"orders", "orders.a.b", "orders.created", "orders.sentinel"};
    const char *w_other[] = {"billing.done"};
    assert_routes(&star, w_star, 2);
    assert_routes(&ohash, w_ohash, 4);
    assert_routes(&all, sent, 5);
    assert_routes(&other, w_other, 1);
}
END_TEST

/* ---- stop, listen again ---- */

START_TEST(stop_then_listen_again)
{
    mm_t *listener = connected(F.service), *witness = connected(F.service);
    mm_t *emitter = connected("t-pubsub-emitter");
    struct lis first = {.want = 1}, again = {.want = 1}, w = {.want = 1};
    mm_route_t *r = NULL;
    listen_ok(listener, F.target, "r", &first, &r);
    listen_ok(witness, F.target, "r", &w, NULL);
    ck_assert_int_eq(mm_listen(listener, F.target, "r", on_listen, &again, NULL, NULL), MM_ESTATE);
    emit_str(emitter, F.target, "r", "one");
    MMT_WAIT(F.base, w.done, mmt_scale(5000));
    MMT_WAIT(F.base, first.done, mmt_scale(5000));
    ck_assert_int_eq(mm_route_stop(r), MM_OK);
    /* Emitted while stopped: the witness getting it proves it was routed
     * before the listener is back, so the listener must never see it. */
    emit_str(emitter, F.target, "r", "while-stopped");
    w.done = false;
    w.want = 2;
    MMT_WAIT(F.base, w.done, mmt_scale(5000));
    listen_ok(listener, F.target, "r", &again, NULL);
    emit_str(emitter, F.target, "r", "two");
    MMT_WAIT(F.base, again.done, mmt_scale(5000));
    ck_assert_int_eq(again.n, 1);
    ck_assert_str_eq(again.bodies[0], "two");
    ck_assert_int_eq(first.n, 1); /* the stopped handler is never called again */
    ck_assert_str_eq(first.bodies[0], "one");
}
END_TEST

START_TEST(listen_before_connect)
{
    mm_t *listener = instance(F.service);
    struct lis l = {.want = 1};
    listen_ok(listener, F.target, "early", &l, NULL);
    mmt_connect(listener);
    mm_t *emitter = connected("t-pubsub-emitter");
    emit_str(emitter, F.target, "early", "after-connect");
    MMT_WAIT(F.base, l.done, mmt_scale(5000));
    ck_assert_int_eq(l.n, 1);
    ck_assert_str_eq(l.bodies[0], "after-connect");
}
END_TEST

/* ---- emit's results ---- */

START_TEST(emit_to_nobody_is_dropped)
{
    mm_t *mm = connected(F.service);
    ck_assert_int_eq(mm_emit(mm, F.target, "void", NULL, 0, NULL), MM_OK);
    struct lis l = {.want = 1};
    listen_ok(mm, F.target, "void", &l, NULL);
    emit_str(mm, F.target, "void", "sentinel");
    MMT_WAIT(F.base, l.done, mmt_scale(5000));
    ck_assert_int_eq(l.n, 1);
    ck_assert_str_eq(l.bodies[0], "sentinel");            /* the first one went nowhere */
    ck_assert_int_eq(F.ev[0].count[MM_EV_UNROUTABLE], 0); /* and nobody complained */
    ck_assert_int_eq(F.ev[0].count[MM_EV_ERROR], 0);
    ck_assert_int_eq(F.ev[0].count[MM_EV_UNHANDLED], 0);
}
END_TEST

START_TEST(emit_refusals)
{
    mm_t *idle = instance(F.service);
    ck_assert_int_eq(mm_emit(idle, NULL, "r", NULL, 0, NULL), MM_ENOTCONN);
    ck_assert_int_eq(mm_emit(idle, F.target, "r", NULL, 0, NULL), MM_ENOTCONN);
    mm_t *mm = connected(F.service);
    ck_assert_int_eq(mm_emit(mm, NULL, "bad route", NULL, 0, NULL), MM_ENAME);
    ck_assert_int_eq(mm_emit(mm, NULL, "", NULL, 0, NULL), MM_ENAME);
    ck_assert_int_eq(mm_emit(mm, NULL, "a.*", NULL, 0, NULL), MM_ENAME); /* no wildcards */
    ck_assert_int_eq(mm_emit(mm, NULL, "a..b", NULL, 0, NULL), MM_ENAME);
    ck_assert_int_eq(mm_emit(mm, "bad..target", "r", NULL, 0, NULL), MM_ENAME);
    ck_assert_int_eq(mm_emit(mm, "bad target", "r", NULL, 0, NULL), MM_ENAME);
    ck_assert_int_eq(mm_emit(mm, ".bad", "r", NULL, 0, NULL), MM_ENAME);
    ck_assert_int_eq(mm_last_code(mm), MM_ENAME);
    ck_assert_int_eq(mm_emit(mm, F.target, "r", NULL, 0, NULL), MM_OK); /* still usable */
}
END_TEST

static Suite *
suite(void)
{
    Suite *s = suite_create("pubsub");
    TCase *tc = mmt_tcase(s, "pubsub", setup, teardown, 60);
    tcase_add_test(tc, round_trip_own_service);
    tcase_add_test(tc, round_trip_explicit_target);
    tcase_add_test(tc, every_instance_gets_every_event);
    tcase_add_test(tc, wildcards_match_topic_words);
    tcase_add_test(tc, stop_then_listen_again);
    tcase_add_test(tc, listen_before_connect);
    tcase_add_test(tc, emit_to_nobody_is_dropped);
    tcase_add_test(tc, emit_refusals);
    return s;
}

int
main(void)
{
    return mmt_run(suite());
}
