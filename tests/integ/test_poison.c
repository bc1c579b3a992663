/* Integration: poison messages. A task its handler keeps giving back is
 * counted (x-mm-deliveries) and dead-lettered to q.deadLetter.<service>
 * after exactly max_redeliveries deliveries; what can never succeed
 * (garbage with a wrong content type, an oversized body, a task its handler
 * rejects or neither settles nor keeps) goes there at once, while other
 * messages keep flowing; a delivery lost with its connection counts as one
 * failed delivery; a dead-lettered request answers its requester with
 * MM_EREMOTE. The dead-letter queue is read with a raw rabbitmq-c peer
 * (headers, properties and body as stored), counted with
 * mm_deadletter_stat and emptied with mm_deadletter_redrive back to a
 * handler that works again. */
#include <check.h>
#include <event2/event.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/prctl.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#include "micromsg.h"
#include "mmt.h"
#include "mmt_fx.h"
#include "mmt_peer.h"

#define ROUTE "work"
#define WAIT_MS 5000
#define MAX_SEEN 32

/* What a handler does with each message. */
enum mode { GIVE_BACK, ACK, REJECT, FORGET, KEEP, REDRIVE_INSIDE };

/* One handler call, as the handler saw it. */
struct seen {
    int id;
    int redelivered;
    int64_t deliveries; /* x-mm-deliveries, -1 when absent */
    bool dead_header;   /* an x-mm-dead-* header reached the handler */
};

/* A handling instance and what its handler saw. */
struct worker {
    mm_t *mm;
    enum mode mode;
    int calls;
    struct seen seen[MAX_SEEN];
    mm_msg_t *kept[MAX_SEEN];
    int nkept;
    int want_calls;
    bool enough; /* calls reached want_calls */
    int inside_rc;
};

struct fx {
    struct event_base *base;
    struct worker w, w2;
    mm_t *client;
    char service[64], queue[200], dlq[200];
    struct mmt_evlog wev, cev;
    struct mmt_peer raw;
    int want_dead, dead_n;
    bool dead_enough; /* MM_EV_DEADLETTER events reached want_dead */
};

static struct fx F;

static void
on_worker_event(mm_t *mm, const mm_event_t *ev, void *ud)
{
    mmt_on_event(mm, ev, ud);
    if (ev->type == MM_EV_DEADLETTER && ++F.dead_n >= F.want_dead)
        F.dead_enough = true;
}

/* ---- the handler ---- */

static int64_t
header_int(const mm_msg_t *msg, const char *name)
{
    const msgpack_object *o = mm_msg_header(msg, name);
    if (o == NULL)
        return -1;
    ck_assert_int_eq(o->type, MSGPACK_OBJECT_POSITIVE_INTEGER);
    return (int64_t) o->via.u64;
}

static bool
has_dead_header(const mm_msg_t *msg)
{
    const msgpack_object *h = mm_msg_headers(msg);
    for (uint32_t i = 0; i < h->via.map.size; i++) {
        const msgpack_object *k = &h->via.map.ptr[i].key;
        if (k->via.str.size >= 10 && memcmp(k->via.str.ptr, "x-mm-dead-", 10) == 0)
            return true;
    }
    return false;
}

static void
record(struct worker *w, mm_msg_t *msg)
{
    ck_assert_int_lt(w->calls, MAX_SEEN);
    const msgpack_object *b = mm_msg_body(msg);
    struct seen *s = &w->seen[w->calls++];
    s->id = b->type == MSGPACK_OBJECT_POSITIVE_INTEGER ? (int) b->via.u64 : -1;
    s->redelivered = mm_msg_redelivered(msg);
    s->deliveries = header_int(msg, "x-mm-deliveries");
    s->dead_header = has_dead_header(msg);
    if (w->calls >= w->want_calls)
        w->enough = true;
}

static void
on_task(mm_msg_t *msg, void *ud)
{
    struct worker *w = ud;
    record(w, msg);
    switch (w->mode) {
    case GIVE_BACK:
        ck_assert_int_eq(mm_msg_nack(msg, 1), MM_OK);
        break;
    case ACK:
        ck_assert_int_eq(mm_msg_ack(msg), MM_OK);
        break;
    case REJECT:
        ck_assert_int_eq(mm_msg_reject(msg, "badThing", "no way"), MM_OK);
        ck_assert_int_eq(mm_msg_ack(msg), MM_ESTATE); /* settled: dead-lettered */
        break;
    case FORGET:
        break;
    case KEEP:
        w->kept[w->nkept++] = mm_msg_ref(msg);
        break;
    case REDRIVE_INSIDE:
        w->inside_rc = mm_deadletter_redrive(w->mm, 0, NULL);
        ck_assert_int_eq(mm_msg_ack(msg), MM_OK);
        break;
    }
}

/* ---- fixture ---- */

static void
setup(void)
{
    memset(&F, 0, sizeof F);
    F.base = mmt_base_new();
    mmt_unique("poison", F.service, sizeof F.service);
    mmt_request_queue(F.queue, sizeof F.queue, F.service, ROUTE);
    snprintf(F.dlq, sizeof F.dlq, "q.deadLetter.%s", F.service);
    F.client = mmt_instance(F.base, "t-poison-client", NULL, &F.cev);
    mmt_connect(F.client);
    mmt_peer_open(&F.raw);
    F.want_dead = 1;
}

static void
teardown(void)
{
    for (struct worker *w = &F.w; w <= &F.w2; w++) {
        for (int i = 0; i < w->nkept; i++)
            mm_msg_unref(w->kept[i]);
        mm_free(w->mm);
    }
    mm_free(F.client);
    if (F.raw.c != NULL) { /* our queues, whatever they hold */
        uint16_t ch = mmt_peer_channel(&F.raw);
        amqp_queue_delete(F.raw.c, ch, amqp_cstring_bytes(F.dlq), 0, 0);
        amqp_queue_delete(F.raw.c, ch, amqp_cstring_bytes(F.queue), 0, 0);
    }
    mmt_peer_close(&F.raw);
    mmt_base_free(F.base);
}

/* A worker instance of the service handling ROUTE one message at a time. */
static void
worker_up(struct worker *w, enum mode mode, uint32_t max_redeliveries, uint32_t max_body)
{
    mm_opts_t o = MM_OPTS_INIT;
    o.max_redeliveries = max_redeliveries;
    o.max_body = max_body;
    o.on_event = on_worker_event;
    o.event_ud = &F.wev;
    w->mode = mode;
    w->mm = mmt_instance(F.base, F.service, &o, NULL);
    mmt_handle(w->mm, ROUTE, on_task, w, 1);
    mmt_connect(w->mm);
}

static void
task(int id)
{
    char rid[32];
    snprintf(rid, sizeof rid, "poison-%d", id);
    mm_body_t *b = mm_body_new();
    msgpack_pack_int(mm_body_packer(b), id);
    mm_send_opts_t so = MM_SEND_OPTS_INIT;
    so.request_id = rid;
    ck_assert_msg(mm_task(F.client, F.service, ROUTE, mm_body_data(b), mm_body_len(b), &so) ==
                      MM_OK,
                  "%s", mm_last_error(F.client));
    mm_body_free(b);
}

static void
wait_dead(int n)
{
    F.want_dead = n;
    F.dead_enough = F.dead_n >= n;
    MMT_WAIT(F.base, F.dead_enough, mmt_scale(WAIT_MS));
}

static void
wait_calls(struct worker *w, int n)
{
    w->want_calls = n;
    w->enough = w->calls >= n;
    MMT_WAIT(F.base, w->enough, mmt_scale(WAIT_MS));
}

static uint32_t
dead_count(void)
{
    mm_stat_t st = {0};
    int rc = mm_deadletter_stat(F.client, F.service, &st);
    if (rc == MM_ENOENT)
        return 0; /* not declared yet: nothing dead-lettered */
    ck_assert_msg(rc == MM_OK, "%s", mm_last_error(F.client));
    return st.messages;
}

/* ---- reading the dead-letter queue with the raw peer ---- */

struct dead {
    char reason[64], text[256], route[128], queue[256], request_id[64], ctype[64], tenant[32];
    int64_t count, at, dropped, deliveries; /* -1 when absent */
    bool mms;                               /* __mms kept */
    bool expiration;                        /* the expiration property */
    char body[8192];
    size_t body_len;
};

static const amqp_field_value_t *
field(const amqp_basic_properties_t *p, const char *key)
{
    if (!(p->_flags & AMQP_BASIC_HEADERS_FLAG))
        return NULL;
    for (int i = 0; i < p->headers.num_entries; i++) {
        amqp_bytes_t k = p->headers.entries[i].key;
        if (k.len == strlen(key) && memcmp(k.bytes, key, k.len) == 0)
            return &p->headers.entries[i].value;
    }
    return NULL;
}

static void
field_str(const amqp_basic_properties_t *p, const char *key, char *out, size_t len)
{
    const amqp_field_value_t *v = field(p, key);
    out[0] = '\0';
    if (v != NULL && (v->kind == AMQP_FIELD_KIND_UTF8 || v->kind == AMQP_FIELD_KIND_BYTES))
        snprintf(out, len, "%.*s", (int) v->value.bytes.len, (const char *) v->value.bytes.bytes);
}

static int64_t
field_int(const amqp_basic_properties_t *p, const char *key)
{
    const amqp_field_value_t *v = field(p, key);
    if (v == NULL)
        return -1;
    ck_assert_msg(v->kind == AMQP_FIELD_KIND_I64, "%s: kind %c", key, v->kind);
    return v->value.i64;
}

/* Take (and remove) the next message of the dead-letter queue. */
static void
dead_take(struct dead *d)
{
    amqp_rpc_reply_t r = amqp_basic_get(F.raw.c, 1, amqp_cstring_bytes(F.dlq), 1);
    ck_assert_int_eq(r.reply_type, AMQP_RESPONSE_NORMAL);
    ck_assert_msg(r.reply.id == AMQP_BASIC_GET_OK_METHOD, "the dead-letter queue is empty");
    amqp_message_t m;
    ck_assert_int_eq(amqp_read_message(F.raw.c, 1, &m, 0).reply_type, AMQP_RESPONSE_NORMAL);
    const amqp_basic_properties_t *p = &m.properties;
    field_str(p, "x-mm-dead-reason", d->reason, sizeof d->reason);
    field_str(p, "x-mm-dead-text", d->text, sizeof d->text);
    field_str(p, "x-mm-dead-route", d->route, sizeof d->route);
    field_str(p, "x-mm-dead-queue", d->queue, sizeof d->queue);
    field_str(p, "idRequest", d->request_id, sizeof d->request_id);
    field_str(p, "tenant", d->tenant, sizeof d->tenant);
    d->count = field_int(p, "x-mm-dead-count");
    d->at = field_int(p, "x-mm-dead-at");
    d->dropped = field_int(p, "x-mm-body-dropped");
    d->deliveries = field_int(p, "x-mm-deliveries");
    d->mms = field(p, "__mms") != NULL;
    d->expiration = (p->_flags & AMQP_BASIC_EXPIRATION_FLAG) != 0;
    snprintf(d->ctype, sizeof d->ctype, "%.*s",
             (p->_flags & AMQP_BASIC_CONTENT_TYPE_FLAG) ? (int) p->content_type.len : 0,
             (const char *) p->content_type.bytes);
    ck_assert_uint_le(m.body.len, sizeof d->body);
    d->body_len = m.body.len;
    if (m.body.len > 0)
        memcpy(d->body, m.body.bytes, m.body.len);
    amqp_destroy_message(&m);
    amqp_maybe_release_buffers(F.raw.c);
}

/* The msgpack body of task `id`, as the client sent it. */
static void
assert_task_body(const struct dead *d, int id)
{
    msgpack_sbuffer sb;
    msgpack_sbuffer_init(&sb);
    msgpack_packer pk;
    msgpack_packer_init(&pk, &sb, msgpack_sbuffer_write);
    msgpack_pack_int(&pk, id);
    ck_assert_uint_eq(d->body_len, sb.size);
    ck_assert(memcmp(d->body, sb.data, sb.size) == 0);
    msgpack_sbuffer_destroy(&sb);
}

static void
assert_dead(const struct dead *d, const char *reason, int64_t count)
{
    ck_assert_str_eq(d->reason, reason);
    ck_assert_int_eq(d->count, count);
    ck_assert_str_eq(d->route, ROUTE);
    ck_assert_str_eq(d->queue, F.queue);
    /* Not time(): it reads the coarse clock, which can lag the one the
     * library stamps with by a tick, across a second boundary. */
    struct timespec ts;
    clock_gettime(CLOCK_REALTIME, &ts);
    int64_t now = (int64_t) ts.tv_sec * 1000 + ts.tv_nsec / 1000000;
    ck_assert_msg(d->at > now - 60000 && d->at <= now + 1000, "x-mm-dead-at %lld",
                  (long long) d->at);
}

/* ---- redelivery counting ---- */

/* max_redeliveries deliveries, each given back: then dead-lettered. */
static void
given_back(uint32_t max, int expect)
{
    worker_up(&F.w, GIVE_BACK, max, 0);
    uint64_t t0 = mmt_now_ms();
    task(1);
    wait_dead(1);
    ck_assert_msg(F.w.calls == expect,
                  "%d calls (%d expected): [0] id %d redelivered %d deliveries %lld; [1] id %d "
                  "redelivered %d deliveries %lld",
                  F.w.calls, expect, F.w.seen[0].id, F.w.seen[0].redelivered,
                  (long long) F.w.seen[0].deliveries, F.w.seen[1].id, F.w.seen[1].redelivered,
                  (long long) F.w.seen[1].deliveries);
    for (int i = 0; i < expect; i++) {
        ck_assert_int_eq(F.w.seen[i].id, 1);
        ck_assert_int_eq(F.w.seen[i].deliveries, i == 0 ? -1 : i); /* the count travels */
        ck_assert_int_eq(F.w.seen[i].redelivered, i > 0);
    }
    ck_assert_int_eq(F.wev.code[MM_EV_DEADLETTER], MM_EREMOTE);
    ck_assert_str_eq(F.wev.route[MM_EV_DEADLETTER], ROUTE);
    ck_assert_str_eq(F.wev.request_id[MM_EV_DEADLETTER], "poison-1");
    ck_assert_ptr_nonnull(strstr(F.wev.text[MM_EV_DEADLETTER], "redelivered"));
    ck_assert_uint_eq(dead_count(), 1);
    struct dead d;
    dead_take(&d);
    assert_dead(&d, "redelivered", expect);
    char times[32];
    snprintf(times, sizeof times, "%d times", expect);
    ck_assert_msg(strstr(d.text, times) != NULL, "text '%s'", d.text);
    ck_assert_str_eq(d.request_id, "poison-1");
    ck_assert(d.mms);
    ck_assert_str_eq(d.ctype, "application/msgpack");
    ck_assert_int_eq(d.deliveries, expect - 1); /* the original headers stay */
    ck_assert_int_eq(d.dropped, -1);
    assert_task_body(&d, 1);
    mm_free(F.w.mm); /* an unacked original would go back to its queue now */
    F.w.mm = NULL;
    mm_stat_t st;
    ck_assert_int_eq(mm_queue_stat(F.client, F.service, ROUTE, &st), MM_OK);
    ck_assert_uint_eq(st.messages, 0);
    ck_assert_uint_eq(dead_count(), 0);
    printf("poison: %d deliveries then dead-lettered in %llu ms\n", expect,
           (unsigned long long) (mmt_now_ms() - t0));
}

START_TEST(given_back_task_dead_lettered_after_max_deliveries)
{
    given_back(3, 3);
}
END_TEST

START_TEST(default_limit_is_five_deliveries)
{
    given_back(0, 5);
}
END_TEST

/* A worker whose connection dies holding a task: the broker's redelivery is
 * one failed delivery, and the next worker sees the count. */
START_TEST(connection_death_counts_one_failed_delivery)
{
    worker_up(&F.w, KEEP, 0, 0);
    task(5);
    wait_calls(&F.w, 1);
    worker_up(&F.w2, ACK, 0, 0);
    mm_free(F.w.mm); /* dies with the task unacked */
    F.w.mm = NULL;
    wait_calls(&F.w2, 1);
    ck_assert_int_eq(F.w2.seen[0].id, 5);
    ck_assert_int_eq(F.w2.seen[0].deliveries, 1);
    ck_assert_int_eq(F.w2.seen[0].redelivered, 1);
    ck_assert_int_eq(F.w2.calls, 1); /* the redelivery itself never reached the handler */
    ck_assert(!F.wev.seen[MM_EV_DEADLETTER]);
}
END_TEST

/* A request dead-lettered: its requester gets MM_EREMOTE with the reason. */
START_TEST(dead_lettered_request_answers_EREMOTE)
{
    worker_up(&F.w, GIVE_BACK, 2, 0);
    struct mmt_probe p = {0};
    mm_request_opts_t ro = MM_REQUEST_OPTS_INIT;
    ro.request_id = "poison-req";
    ck_assert_int_eq(mm_request(F.client, F.service, ROUTE, NULL, 0, &ro, mmt_on_reply, &p, NULL),
                     MM_OK);
    MMT_WAIT(F.base, p.done, mmt_scale(WAIT_MS));
    ck_assert_msg(p.status == MM_EREMOTE, "status %s", mm_err_name(p.status));
    ck_assert_str_eq(p.code, "redelivered");
    ck_assert_ptr_nonnull(strstr(p.text, "2 times"));
    ck_assert_int_eq(p.calls, 1);
    ck_assert_int_eq(F.w.calls, 2);
    wait_dead(1);
    struct dead d;
    dead_take(&d);
    assert_dead(&d, "redelivered", 2);
    ck_assert_str_eq(d.request_id, "poison-req");
    ck_assert(!d.expiration); /* its timeout does not empty the dead-letter queue */
    mmt_probe_free(&p);
}
END_TEST

/* ---- dead-lettered at once ---- */

/* Garbage with a content type nobody reads, between good tasks. */
START_TEST(garbage_dead_lettered_at_once_others_keep_flowing)
{
    worker_up(&F.w, ACK, 0, 0);
    task(1);
    struct mmt_table mms = {0}, top = {0};
    mmt_table_str(&mms, "route", ROUTE);
    mmt_table_bool(&mms, "isTask", true);
    mmt_table_table(&top, "__mms", &mms);
    mmt_table_str(&top, "idRequest", "poison-garbage");
    struct mmt_props props = {.content_type = "text/x-garbage", .headers = &top};
    mmt_peer_publish(&F.raw, F.queue, &props, MMT_BYTES("\xde\xad\xbe\xef garbage"));
    task(2);
    wait_dead(1);
    wait_calls(&F.w, 2);
    ck_assert_int_eq(F.w.calls, 2); /* the garbage never reached the handler */
    ck_assert_int_eq(F.w.seen[0].id, 1);
    ck_assert_int_eq(F.w.seen[1].id, 2);
    ck_assert_int_eq(F.wev.code[MM_EV_DEADLETTER], MM_EDECODE);
    ck_assert_str_eq(F.wev.request_id[MM_EV_DEADLETTER], "poison-garbage");
    ck_assert_int_eq(F.wev.count[MM_EV_DEADLETTER], 1);
    struct dead d;
    dead_take(&d);
    assert_dead(&d, "badRequest", 1);
    ck_assert_ptr_nonnull(strstr(d.text, "text/x-garbage"));
    ck_assert_str_eq(d.ctype, "text/x-garbage");
    ck_assert_uint_eq(d.body_len, 12);
    ck_assert(memcmp(d.body, "\xde\xad\xbe\xef garbage", 12) == 0);
}
END_TEST

START_TEST(oversized_task_dead_lettered_without_its_body)
{
    worker_up(&F.w, ACK, 0, 1024);
    struct mmt_table mms = {0}, top = {0};
    mmt_table_str(&mms, "route", ROUTE);
    mmt_table_bool(&mms, "isTask", true);
    mmt_table_table(&top, "__mms", &mms);
    struct mmt_props props = {.content_type = "application/msgpack", .headers = &top};
    static char big[4096];
    mmt_peer_publish(&F.raw, F.queue, &props, (amqp_bytes_t){sizeof big, big});
    wait_dead(1);
    ck_assert_int_eq(F.w.calls, 0);
    ck_assert_int_eq(F.wev.code[MM_EV_DEADLETTER], MM_ETOOBIG);
    struct dead d;
    dead_take(&d);
    assert_dead(&d, "tooBig", 1);
    ck_assert_uint_eq(d.body_len, 0);
    ck_assert_int_eq(d.dropped, (int64_t) sizeof big);
}
END_TEST

START_TEST(unsettled_task_dead_lettered_notHandled)
{
    worker_up(&F.w, FORGET, 0, 0);
    task(3);
    wait_dead(1);
    ck_assert_int_eq(F.w.calls, 1);
    ck_assert_int_eq(F.wev.code[MM_EV_DEADLETTER], MM_ESTATE);
    ck_assert_int_eq(F.wev.code[MM_EV_ERROR], MM_ESTATE); /* the handler's bug, reported */
    struct dead d;
    dead_take(&d);
    assert_dead(&d, "notHandled", 1);
    assert_task_body(&d, 3);
}
END_TEST

START_TEST(rejected_task_dead_lettered_with_its_code)
{
    worker_up(&F.w, REJECT, 0, 0);
    task(4);
    task(5); /* behind it: a requeued task 4 would come first */
    wait_dead(2);
    ck_assert_int_eq(F.w.calls, 2);
    ck_assert_int_eq(F.w.seen[0].id, 4);
    ck_assert_int_eq(F.w.seen[1].id, 5);
    ck_assert_int_eq(F.wev.code[MM_EV_DEADLETTER], MM_EREMOTE);
    ck_assert_ptr_nonnull(strstr(F.wev.text[MM_EV_DEADLETTER], "badThing"));
    struct dead d;
    dead_take(&d);
    assert_dead(&d, "badThing", 1);
    ck_assert_str_eq(d.text, "no way");
    assert_task_body(&d, 4);
}
END_TEST

/* Settled after the handler returned: the delivery was kept by mm_msg_ref. */
START_TEST(kept_task_settled_later_dead_lettered_as_it_came)
{
    worker_up(&F.w, KEEP, 0, 0);
    mm_body_t *h = mm_body_new();
    msgpack_packer *pk = mm_body_packer(h);
    msgpack_pack_map(pk, 1);
    msgpack_pack_str_with_body(pk, "tenant", 6);
    msgpack_pack_str_with_body(pk, "acme", 4);
    mm_body_t *b = mm_body_new();
    msgpack_pack_int(mm_body_packer(b), 6);
    mm_send_opts_t so = MM_SEND_OPTS_INIT;
    so.headers = mm_body_data(h);
    so.headers_len = mm_body_len(h);
    ck_assert_int_eq(mm_task(F.client, F.service, ROUTE, mm_body_data(b), mm_body_len(b), &so),
                     MM_OK);
    mm_body_free(h);
    mm_body_free(b);
    wait_calls(&F.w, 1);
    ck_assert_int_eq(mm_msg_reject(F.w.kept[0], "later", "rejected after the handler"), MM_OK);
    wait_dead(1);
    task(7);
    wait_calls(&F.w, 2); /* the first one's slot is free: acked */
    ck_assert_int_eq(mm_msg_nack(F.w.kept[1], 0), MM_OK);
    wait_dead(2);
    struct dead d;
    dead_take(&d);
    assert_dead(&d, "later", 1);
    assert_task_body(&d, 6);
    ck_assert(d.mms);
    ck_assert_str_eq(d.tenant, "acme"); /* the sender's user header */
    dead_take(&d);
    assert_dead(&d, "rejected", 1);
    assert_task_body(&d, 7);
    ck_assert_str_eq(d.request_id, "poison-7");
}
END_TEST

/* The last reference dropped without a settle: not left holding its slot. */
START_TEST(kept_task_released_unsettled_dead_lettered)
{
    worker_up(&F.w, KEEP, 0, 0);
    task(8);
    wait_calls(&F.w, 1);
    F.w.kept[0] = mm_msg_unref(F.w.kept[0]);
    wait_dead(1);
    ck_assert_int_eq(F.wev.code[MM_EV_DEADLETTER], MM_ESTATE);
    ck_assert_int_eq(F.wev.code[MM_EV_ERROR], MM_ESTATE);
    ck_assert_ptr_nonnull(strstr(F.wev.text[MM_EV_ERROR], "mm_msg_unref"));
    task(9); /* the slot is free again */
    wait_calls(&F.w, 2);
    struct dead d;
    dead_take(&d);
    assert_dead(&d, "notHandled", 1);
    assert_task_body(&d, 8);
}
END_TEST

/* ---- stat and redrive ---- */

START_TEST(stat_counts_dead_letters)
{
    mm_stat_t st;
    ck_assert_int_eq(mm_deadletter_stat(F.client, F.service, &st), MM_ENOENT);
    ck_assert_int_eq(mm_deadletter_stat(F.client, "bad name", &st), MM_ENAME);
    worker_up(&F.w, REJECT, 0, 0);
    ck_assert_int_eq(mm_deadletter_stat(F.w.mm, NULL, &st), MM_ENOENT);
    task(1);
    task(2);
    wait_dead(2);
    ck_assert_int_eq(mm_deadletter_stat(F.w.mm, NULL, &st), MM_OK); /* its own service */
    ck_assert_uint_eq(st.messages, 2);
    ck_assert_uint_eq(st.consumers, 0);
    ck_assert_uint_eq(dead_count(), 2);
}
END_TEST

START_TEST(redrive_moves_messages_back_to_a_fixed_handler)
{
    worker_up(&F.w, REJECT, 3, 0);
    for (int i = 1; i <= 3; i++)
        task(i);
    wait_dead(3);
    ck_assert_uint_eq(dead_count(), 3);
    F.w.mode = ACK; /* fixed */
    uint32_t moved = 99;
    uint64_t t0 = mmt_now_ms();
    ck_assert_msg(mm_deadletter_redrive(F.w.mm, 0, &moved) == MM_OK, "%s", mm_last_error(F.w.mm));
    uint64_t took = mmt_now_ms() - t0;
    ck_assert_uint_eq(moved, 3);
    ck_assert_uint_eq(dead_count(), 0);
    wait_calls(&F.w, 6);
    int sum = 0;
    for (int i = 3; i < 6; i++) {
        sum += F.w.seen[i].id;
        ck_assert(!F.w.seen[i].dead_header);          /* x-mm-dead-* removed */
        ck_assert_int_eq(F.w.seen[i].deliveries, -1); /* count reset */
        ck_assert_int_eq(F.w.seen[i].redelivered, 0);
    }
    ck_assert_int_eq(sum, 1 + 2 + 3);
    ck_assert_int_eq(F.dead_n, 3); /* none dead-lettered again */
    printf("redrive: 3 messages moved in %llu ms\n", (unsigned long long) took);
}
END_TEST

/* A message with no origin stays; `max` bounds a redrive. */
START_TEST(redrive_leaves_what_cannot_move)
{
    worker_up(&F.w, REJECT, 0, 0);
    task(1);
    task(2);
    wait_dead(2);
    struct mmt_props props = {.content_type = "application/msgpack"};
    mmt_peer_use_confirms(&F.raw);
    mmt_peer_publish(&F.raw, F.dlq, &props, MMT_BYTES("\x01")); /* no x-mm-dead-queue */
    mmt_peer_confirmed(&F.raw, mmt_scale(WAIT_MS));
    ck_assert_uint_eq(dead_count(), 3);
    F.w.mode = ACK;
    uint32_t moved = 99;
    ck_assert_int_eq(mm_deadletter_redrive(F.w.mm, 1, &moved), MM_OK);
    ck_assert_uint_eq(moved, 1);
    ck_assert_int_eq(mm_deadletter_redrive(F.w.mm, 0, &moved), MM_OK);
    ck_assert_uint_eq(moved, 1); /* task 2; the orphan stays */
    wait_calls(&F.w, 4);
    ck_assert_int_eq(F.w.seen[2].id + F.w.seen[3].id, 3);
    ck_assert_uint_eq(dead_count(), 1);
    ck_assert_int_eq(mm_deadletter_redrive(F.w.mm, 0, &moved), MM_OK);
    ck_assert_uint_eq(moved, 0);
    ck_assert_uint_eq(dead_count(), 1);
}
END_TEST

START_TEST(redrive_refused_inside_a_callback_or_disconnected)
{
    worker_up(&F.w, REDRIVE_INSIDE, 0, 0);
    task(1);
    wait_calls(&F.w, 1);
    ck_assert_int_eq(F.w.inside_rc, MM_ESTATE);
    mm_t *idle = mmt_instance(F.base, F.service, NULL, NULL);
    uint32_t moved = 99;
    ck_assert_int_eq(mm_deadletter_redrive(idle, 0, &moved), MM_ENOTCONN);
    ck_assert_uint_eq(moved, 99); /* untouched on failure */
    mm_free(idle);
    ck_assert_int_eq(mm_deadletter_redrive(F.w.mm, 0, &moved), MM_OK); /* nothing there */
    ck_assert_uint_eq(moved, 0);
}
END_TEST

/* ---- a worker process that crashes on one message ---- */

#define CRASH_ID 666
#define N_GOOD 20

static void
on_crashy(mm_msg_t *msg, void *ud)
{
    (void) ud;
    const msgpack_object *b = mm_msg_body(msg);
    if (b->type == MSGPACK_OBJECT_POSITIVE_INTEGER && b->via.u64 == CRASH_ID)
        _exit(9); /* dies holding the message: the broker redelivers it */
    if (mm_msg_ack(msg) != MM_OK)
        _exit(5);
}

/* Never returns; no Check calls: not the test process. */
static pid_t
crashy_worker(void)
{
    pid_t pid = fork();
    ck_assert_int_ge(pid, 0);
    if (pid > 0)
        return pid;
    prctl(PR_SET_PDEATHSIG, SIGKILL);
    alarm(60);
    mm_route_opts_t ro = MM_ROUTE_OPTS_INIT;
    ro.prefetch = 1; /* only the message it dies on is in flight */
    mm_t *mm = mm_new(F.service, NULL);
    if (mm == NULL || mm_handle(mm, ROUTE, on_crashy, NULL, &ro, NULL) != MM_OK ||
        mm_connect(mm, mmt_uri()) != MM_OK)
        _exit(3);
    mm_run(mm);
    _exit(4);
}

/* Workers are restarted whenever one dies on the poison message, until it is
 * dead-lettered after max_redeliveries (5) deliveries; the good tasks sent
 * behind it are all handled meanwhile. */
START_TEST(crashing_worker_dead_lettered_after_the_limit_others_flow)
{
    struct mmt_table args = {0}; /* the request queue, as PROTOCOL.md section 1 declares it */
    mmt_table_i32(&args, "x-expires", MMT_REQUEST_QUEUE_EXPIRES);
    amqp_queue_declare(F.raw.c, 1, amqp_cstring_bytes(F.queue), 0, 1, 0, 0, mmt_table_of(&args));
    mmt_peer_ok(&F.raw, "queue.declare");
    task(CRASH_ID);
    for (int i = 0; i < N_GOOD; i++)
        task(i);
    int crashes = 0;
    pid_t pid = crashy_worker();
    uint64_t t0 = mmt_now_ms(), until = t0 + (uint64_t) mmt_scale(30000);
    mm_stat_t q = {0};
    while (mmt_now_ms() < until) {
        int st = 0;
        pid_t got = waitpid(pid, &st, WNOHANG);
        if (got == pid) {
            ck_assert_msg(WIFEXITED(st) && WEXITSTATUS(st) == 9, "worker ended with %d", st);
            crashes++;
            ck_assert_int_le(crashes, 5);
            pid = crashy_worker();
        }
        ck_assert_int_eq(mm_queue_stat(F.client, F.service, ROUTE, &q), MM_OK);
        if (q.messages == 0 && dead_count() == 1)
            break;
        bool never = false;
        mmt_wait(F.base, &never, 20);
    }
    kill(pid, SIGKILL);
    waitpid(pid, NULL, 0);
    ck_assert_uint_eq(dead_count(), 1);
    ck_assert_uint_eq(q.messages, 0); /* the good ones were all acked */
    struct dead d;
    dead_take(&d);
    ck_assert_msg(crashes == 5,
                  "%d crashes, dead-lettered with count %lld, deliveries %lld, reason '%s' "
                  "text '%s' route '%s' queue '%s' ctype '%s' body %zu bytes",
                  crashes, (long long) d.count, (long long) d.deliveries, d.reason, d.text, d.route,
                  d.queue, d.ctype, d.body_len);
    assert_dead(&d, "redelivered", 5);
    assert_task_body(&d, CRASH_ID);
    printf("crashing worker: %d crashes, then dead-lettered in %llu ms; %d other tasks handled\n",
           crashes, (unsigned long long) (mmt_now_ms() - t0), N_GOOD);
}
END_TEST

static Suite *
suite(void)
{
    Suite *s = suite_create("poison");
    TCase *tc = mmt_tcase(s, "count", setup, teardown, 60);
    tcase_add_test(tc, given_back_task_dead_lettered_after_max_deliveries);
    tcase_add_test(tc, default_limit_is_five_deliveries);
    tcase_add_test(tc, connection_death_counts_one_failed_delivery);
    tcase_add_test(tc, crashing_worker_dead_lettered_after_the_limit_others_flow);
    tcase_add_test(tc, dead_lettered_request_answers_EREMOTE);
    tc = mmt_tcase(s, "at_once", setup, teardown, 60);
    tcase_add_test(tc, garbage_dead_lettered_at_once_others_keep_flowing);
    tcase_add_test(tc, oversized_task_dead_lettered_without_its_body);
    tcase_add_test(tc, unsettled_task_dead_lettered_notHandled);
    tcase_add_test(tc, rejected_task_dead_lettered_with_its_code);
    tcase_add_test(tc, kept_task_settled_later_dead_lettered_as_it_came);
    tcase_add_test(tc, kept_task_released_unsettled_dead_lettered);
    tc = mmt_tcase(s, "queue", setup, teardown, 60);
    tcase_add_test(tc, stat_counts_dead_letters);
    tcase_add_test(tc, redrive_moves_messages_back_to_a_fixed_handler);
    tcase_add_test(tc, redrive_leaves_what_cannot_move);
    tcase_add_test(tc, redrive_refused_inside_a_callback_or_disconnected);
    return s;
}

int
main(void)
{
    return mmt_run(suite());
}
