/* Integration: peers (PROTOCOL.md 6) against a real broker, with heartbeats
 * of 200 ms: the peer.alive JSON on the wire as a raw rabbitmq-c peer sees
 * it, instances of a service finding each other and forgetting a freed one,
 * status queries of our own and a foreign service (a protocol-only peer
 * counted too), malformed statuses ignored, mm_wait_service, the latency
 * probe, heartbeats after a reconnect and after close + connect. Leadership
 * fields are checked for their types only (election/ is tested on its own). */
#include <arpa/inet.h>
#include <check.h>
#include <event2/event.h>
#include <jansson.h>
#include <netinet/in.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>

#include "internal.h"
#include "micromsg.h"
#include "mmt.h"
#include "mmt_fx.h"
#include "mmt_peer.h"
#include "peers_int.h"
#include "route.h"

#define HB_MS 200
#define WAIT_MS 10000
#define MAX_MM 4

struct fx {
    struct event_base *base;
    char service[64], other[64];
    mm_t *mm[MAX_MM];
    struct mmt_evlog ev[MAX_MM];
    struct mmt_peer peer;
    bool peer_open;
};

static struct fx F;

static void
setup(void)
{
    memset(&F, 0, sizeof F);
    F.base = mmt_base_new();
    mmt_unique("peers", F.service, sizeof F.service);
    mmt_unique("peers-other", F.other, sizeof F.other);
}

static void
teardown(void)
{
    for (int i = 0; i < MAX_MM; i++)
        mm_free(F.mm[i]);
    if (F.peer_open)
        mmt_peer_close(&F.peer);
    mmt_base_free(F.base);
}

/* Instance i of `service` with 200 ms heartbeats and `flags`, connected unless told not. */
static mm_t *
start(int i, const char *service, unsigned flags, bool connect)
{
    mm_opts_t o = MM_OPTS_INIT;
    o.heartbeat_ms = HB_MS;
    o.election_timeout_ms = 5 * HB_MS;
    o.flags = flags;
    F.mm[i] = mmt_instance(F.base, service, &o, &F.ev[i]);
    if (connect)
        mmt_connect(F.mm[i]);
    return F.mm[i];
}

static void
stop(int i)
{
    mm_free(F.mm[i]);
    F.mm[i] = NULL;
}

/* Run the loop until pred(arg) or ms passed (a bounded wait on a condition). */
static bool
wait_for(bool (*pred)(const void *), const void *arg, int ms)
{
    uint64_t end = mmt_now_ms() + (uint64_t) ms;
    bool never = false;
    while (!pred(arg)) {
        if (mmt_now_ms() >= end)
            return false;
        mmt_wait(F.base, &never, 10);
    }
    return true;
}

static size_t
table_size(const mm_t *mm)
{
    return mm->peers != NULL ? mm->peers->table.n : 0;
}

static bool
knows_three(const void *arg)
{
    (void) arg;
    return table_size(F.mm[0]) == 3 && table_size(F.mm[1]) == 3 && table_size(F.mm[2]) == 3;
}

static int
count_routes(const mm_t *mm)
{
    int n = 0;
    for (const struct mm_route *r = mm->routes; r != NULL; r = r->next)
        n++;
    return n;
}

/* ---- the raw peer: binds and emits on x.pubSub as the protocol says ---- */

static void
peer_open(void)
{
    mmt_peer_open(&F.peer);
    F.peer_open = true;
    amqp_exchange_declare(F.peer.c, 1, amqp_cstring_bytes("x.pubSub"), amqp_cstring_bytes("topic"),
                          0, 1, 0, 0, amqp_empty_table);
    mmt_peer_ok(&F.peer, "exchange.declare");
}

/* Consume (no ack) a fresh exclusive queue bound with `key`. */
static void
peer_bind(const char *key)
{
    amqp_queue_declare_ok_t *ok =
        amqp_queue_declare(F.peer.c, 1, amqp_empty_bytes, 0, 0, 1, 1, amqp_empty_table);
    mmt_peer_ok(&F.peer, "queue.declare");
    amqp_bytes_t q = amqp_bytes_malloc_dup(ok->queue);
    amqp_queue_bind(F.peer.c, 1, q, amqp_cstring_bytes("x.pubSub"), amqp_cstring_bytes(key),
                    amqp_empty_table);
    mmt_peer_ok(&F.peer, "queue.bind");
    amqp_basic_consume(F.peer.c, 1, q, amqp_empty_bytes, 0, 1, 0, amqp_empty_table);
    mmt_peer_ok(&F.peer, "basic.consume");
    amqp_bytes_free(q);
}

/* An event as the reference sends it: JSON (unless told), headers {__mms: {}}. */
static void
peer_emit(const char *key, const char *content_type, amqp_bytes_t body)
{
    struct mmt_table mms = {0}, h = {0};
    mmt_table_table(&h, "__mms", &mms);
    amqp_basic_properties_t props = {
        ._flags = AMQP_BASIC_CONTENT_TYPE_FLAG | AMQP_BASIC_HEADERS_FLAG,
        .content_type = amqp_cstring_bytes(content_type ? content_type : "application/json"),
        .headers = mmt_table_of(&h)};
    int st = amqp_basic_publish(F.peer.c, 1, amqp_cstring_bytes("x.pubSub"),
                                amqp_cstring_bytes(key), 0, 0, &props, body);
    ck_assert_int_eq(st, AMQP_STATUS_OK);
}

static void
peer_emit_str(const char *key, const char *json)
{
    peer_emit(key, NULL, amqp_cstring_bytes(json));
}

static void
key_of(char *out, size_t len, const char *service, const char *route)
{
    snprintf(out, len, "internal.%s.%s", service, route);
}

/* A status as a protocol-only replica would send it. */
static void
raw_status(char *out, size_t len, const char *id, const char *service, int known)
{
    snprintf(out, len,
             "{\"id\":\"%s\",\"name\":\"%s\",\"isReady\":true,\"isMaster\":false,"
             "\"elapsedMs\":1234,\"startedAt\":\"2026-01-01T00:00:00.000Z\",\"memoryUsage\":"
             "{\"rss\":1000,\"heapTotal\":10,\"heapUsed\":5,\"external\":0},\"knownPeers\":%d}",
             id, service, known);
}

/* ---- status callbacks ---- */

struct got {
    bool done;
    int calls, code;
    size_t count;
    char ids[8][MMI_PEER_ID_MAX + 1];
    uint32_t known[8];
    int ready[8], leader[8], has_ready, has_leader;
    int64_t uptime[8];
    uint64_t rss[8];
    int qos[8];
    uint32_t qos_level[8];
    uint64_t at_ms;
    bool free_mm; /* mm_free inside the callback */
};

static void
on_status(mm_t *mm, const mm_status_t *st, void *ud)
{
    struct got *g = ud;
    g->calls++;
    g->done = true;
    g->code = st->code;
    g->count = st->count;
    g->has_ready = st->has_ready;
    g->has_leader = st->has_leader;
    g->at_ms = mmt_now_ms();
    ck_assert_ptr_nonnull(st->service);
    for (size_t i = 0; i < st->count && i < 8; i++) {
        const mm_member_t *m = &st->members[i];
        snprintf(g->ids[i], sizeof g->ids[i], "%s", m->id);
        g->known[i] = m->known_peers;
        g->ready[i] = m->ready;
        g->leader[i] = m->leader;
        g->uptime[i] = m->uptime_ms;
        g->rss[i] = m->rss;
        g->qos[i] = m->qos;
        g->qos_level[i] = m->qos_level;
    }
    if (g->free_mm) {
        for (int i = 0; i < MAX_MM; i++)
            if (F.mm[i] == mm)
                F.mm[i] = NULL;
        mm_free(mm);
    }
}

static bool
has_id(const struct got *g, const char *id)
{
    for (size_t i = 0; i < g->count && i < 8; i++)
        if (strcmp(g->ids[i], id) == 0)
            return true;
    return false;
}

/* ---- the wire ---- */

static void
check_string_field(json_t *o, const char *key, const char *want)
{
    json_t *v = json_object_get(o, key);
    ck_assert_msg(json_is_string(v), "%s is not a string", key);
    if (want != NULL)
        ck_assert_str_eq(json_string_value(v), want);
}

static void
check_number_field(json_t *o, const char *key, double min)
{
    json_t *v = json_object_get(o, key);
    ck_assert_msg(json_is_number(v), "%s is not a number", key);
    ck_assert_msg(json_number_value(v) >= min, "%s = %f < %f", key, json_number_value(v), min);
}

/* Every field PROTOCOL.md 6 names, with its type, and nothing else. */
static void
check_alive_json(json_t *o, const mm_t *mm)
{
    static const char *const known[] = {"id",        "name",        "isReady",
                                        "isMaster",  "leaderId",    "elapsedMs",
                                        "startedAt", "memoryUsage", "knownPeers"};
    const char *key;
    json_t *v;
    json_object_foreach(o, key, v)
    {
        bool ok = false;
        for (size_t i = 0; i < sizeof known / sizeof known[0]; i++)
            ok |= strcmp(key, known[i]) == 0;
        ck_assert_msg(ok, "unexpected field %s", key);
    }
    check_string_field(o, "id", mm_id(mm));
    check_string_field(o, "name", mm_service(mm));
    ck_assert(json_is_true(json_object_get(o, "isReady")));
    ck_assert(json_is_boolean(json_object_get(o, "isMaster")));
    v = json_object_get(o, "leaderId");
    ck_assert(v == NULL || json_is_string(v));
    check_number_field(o, "elapsedMs", 0);
    check_number_field(o, "knownPeers", 1);
    ck_assert_int_eq(json_integer_value(json_object_get(o, "knownPeers")), 1);
    json_t *m = json_object_get(o, "memoryUsage");
    ck_assert(json_is_object(m));
    check_number_field(m, "rss", 1); /* a real figure */
    check_number_field(m, "heapTotal", 0);
    check_number_field(m, "heapUsed", 0);
    check_number_field(m, "external", 0);
}

/* startedAt: ISO 8601 UTC with milliseconds, within a minute of now. */
static void
check_started_at(json_t *o)
{
    check_string_field(o, "startedAt", NULL);
    const char *s = json_string_value(json_object_get(o, "startedAt"));
    struct tm tm = {0};
    int ms = -1;
    ck_assert_int_eq(strlen(s), 24);
    ck_assert_int_eq(sscanf(s, "%4d-%2d-%2dT%2d:%2d:%2d.%3dZ", &tm.tm_year, &tm.tm_mon, &tm.tm_mday,
                            &tm.tm_hour, &tm.tm_min, &tm.tm_sec, &ms),
                     7);
    tm.tm_year -= 1900;
    tm.tm_mon -= 1;
    time_t t = timegm(&tm);
    ck_assert_msg(llabs((long long) (time(NULL) - t)) < 60, "startedAt %s is not now", s);
}

START_TEST(alone_its_heartbeat_is_on_the_wire_as_the_protocol_says)
{
    peer_open();
    char key[256];
    key_of(key, sizeof key, F.service, "peer.alive");
    peer_bind(key);
    mm_t *a = start(0, F.service, 0, true); /* its first heartbeat leaves at connect */
    amqp_envelope_t env;
    ck_assert_msg(mmt_peer_read(&F.peer, mmt_scale(5000), &env), "no peer.alive");
    const amqp_basic_properties_t *pr = &env.message.properties;
    ck_assert(pr->_flags & AMQP_BASIC_CONTENT_TYPE_FLAG);
    ck_assert_int_eq(pr->content_type.len, 16);
    ck_assert(memcmp(pr->content_type.bytes, "application/json", 16) == 0);
    ck_assert(!(pr->_flags & AMQP_BASIC_CONTENT_ENCODING_FLAG));
    ck_assert(!(pr->_flags & AMQP_BASIC_DELIVERY_MODE_FLAG)); /* transient, as the reference */
    ck_assert(pr->_flags & AMQP_BASIC_HEADERS_FLAG);
    ck_assert_int_eq(pr->headers.num_entries, 1);
    ck_assert_int_eq(pr->headers.entries[0].value.kind, AMQP_FIELD_KIND_TABLE);
    ck_assert_int_eq(env.exchange.len, 8);
    json_error_t err;
    json_t *o = json_loadb(env.message.body.bytes, env.message.body.len, 0, &err);
    ck_assert_msg(o != NULL, "not JSON: %s", err.text);
    check_alive_json(o, a);
    check_started_at(o);
    json_decref(o);
    amqp_destroy_envelope(&env);
    /* Its own heartbeat comes back to it: alone, a status query ends on the one
     * answer that says knownPeers 1, long before the 1 s bound. */
    struct got g = {0};
    uint64_t t0 = mmt_now_ms();
    ck_assert_int_eq(mm_get_status(a, NULL, on_status, &g), MM_OK);
    ck_assert(!g.done); /* never inside the call */
    MMT_WAIT(F.base, g.done, mmt_scale(WAIT_MS));
    ck_assert_int_eq(g.code, MM_OK);
    ck_assert_uint_eq(g.count, 1);
    ck_assert_str_eq(g.ids[0], mm_id(a));
    ck_assert_uint_eq(g.known[0], 1);
    ck_assert_uint_gt(g.rss[0], 0);
    printf("peers: a lone instance's status in %llu ms\n", (unsigned long long) (g.at_ms - t0));
    ck_assert_uint_lt(g.at_ms - t0, 900);
}
END_TEST

/* ---- a service of three ---- */

static void
check_three(const struct got *g)
{
    ck_assert_int_eq(g->calls, 1);
    ck_assert_int_eq(g->code, MM_OK);
    ck_assert_uint_eq(g->count, 3);
    for (int i = 0; i < 3; i++) {
        ck_assert_msg(has_id(g, mm_id(F.mm[i])), "instance %d missing", i);
        ck_assert_int_eq(g->ready[i], 1);
        ck_assert_uint_eq(g->known[i], 3);
        ck_assert_int_ge(g->uptime[i], 0);
        ck_assert_uint_gt(g->rss[i], 0);
    }
    ck_assert_int_eq(g->has_ready, 1);
}

START_TEST(three_instances_know_each_other_and_answer_status_queries)
{
    uint64_t t0 = mmt_now_ms();
    for (int i = 0; i < 3; i++)
        start(i, F.service, 0, true);
    ck_assert_msg(wait_for(knows_three, NULL, mmt_scale(WAIT_MS)), "tables: %zu %zu %zu",
                  table_size(F.mm[0]), table_size(F.mm[1]), table_size(F.mm[2]));
    printf("peers: three tables complete %llu ms after the first connect\n",
           (unsigned long long) (mmt_now_ms() - t0));
    struct got own = {0}, foreign = {0}, missing = {0};
    t0 = mmt_now_ms();
    ck_assert_int_eq(mm_get_status(F.mm[0], NULL, on_status, &own), MM_OK);
    MMT_WAIT(F.base, own.done, mmt_scale(WAIT_MS));
    check_three(&own);
    printf("peers: own status (3 members) in %llu ms\n", (unsigned long long) (own.at_ms - t0));
    ck_assert_uint_lt(own.at_ms - t0, 900); /* complete: 3 answers, knownPeers 3 */
    mm_t *d = start(3, F.other, 0, true);
    t0 = mmt_now_ms();
    ck_assert_int_eq(mm_get_status(d, F.service, on_status, &foreign), MM_OK);
    MMT_WAIT(F.base, foreign.done, mmt_scale(WAIT_MS));
    check_three(&foreign);
    printf("peers: foreign status (3 members) in %llu ms\n",
           (unsigned long long) (foreign.at_ms - t0));
    ck_assert_uint_lt(foreign.at_ms - t0, 900);
    char absent[64];
    mmt_unique("peers-absent", absent, sizeof absent);
    t0 = mmt_now_ms();
    ck_assert_int_eq(mm_get_status(d, absent, on_status, &missing), MM_OK);
    MMT_WAIT(F.base, missing.done, mmt_scale(WAIT_MS));
    ck_assert_int_eq(missing.code, MM_ENOENT);
    ck_assert_uint_eq(missing.count, 0);
    printf("peers: a missing service is ENOENT in %llu ms\n",
           (unsigned long long) (missing.at_ms - t0));
    ck_assert_uint_ge(missing.at_ms - t0, 900);
    ck_assert_uint_lt(missing.at_ms - t0, 2000);
    /* The temporary listeners are gone: d keeps only its own two. */
    ck_assert_int_eq(count_routes(d), 2);
}
END_TEST

static bool
knows_two(const void *arg)
{
    (void) arg;
    return table_size(F.mm[0]) == 2 && table_size(F.mm[1]) == 2;
}

/* A member running QoS says so in its heartbeat's extra headers; a status of
 * the service (from another service) shows its level; the other member none. */
START_TEST(status_shows_the_qos_state_of_members_that_run_it)
{
    mm_t *q = start(0, F.service, MM_OPT_QOS, true);
    start(1, F.service, 0, true);
    ck_assert(wait_for(knows_two, NULL, mmt_scale(WAIT_MS)));
    mm_qos_state_t st;
    ck_assert_int_eq(mm_qos_state(q, &st), MM_OK);
    ck_assert(st.enabled);
    mm_t *d = start(2, F.other, 0, true);
    struct got g = {0};
    ck_assert_int_eq(mm_get_status(d, F.service, on_status, &g), MM_OK);
    MMT_WAIT(F.base, g.done, mmt_scale(WAIT_MS));
    ck_assert_int_eq(g.code, MM_OK);
    ck_assert_uint_eq(g.count, 2);
    for (size_t i = 0; i < 2; i++) {
        bool is_q = strcmp(g.ids[i], mm_id(q)) == 0;
        ck_assert_int_eq(g.qos[i], is_q);
        ck_assert_uint_eq(g.qos_level[i], is_q ? st.level : 0);
    }
}
END_TEST

static bool
forgot_one(const void *arg)
{
    (void) arg;
    return table_size(F.mm[0]) == 2 && table_size(F.mm[1]) == 2;
}

START_TEST(a_freed_instance_is_forgotten_after_four_heartbeats)
{
    for (int i = 0; i < 3; i++)
        start(i, F.service, 0, true);
    ck_assert(wait_for(knows_three, NULL, mmt_scale(WAIT_MS)));
    char gone[40];
    snprintf(gone, sizeof gone, "%s", mm_id(F.mm[2]));
    stop(2);
    uint64_t t0 = mmt_now_ms();
    ck_assert(wait_for(forgot_one, NULL, mmt_scale(WAIT_MS)));
    uint64_t took = mmt_now_ms() - t0;
    printf("peers: a freed instance forgotten %llu ms later (4 heartbeats = %d ms)\n",
           (unsigned long long) took, 4 * HB_MS);
    /* Last heard at most one heartbeat before the free, dropped at the first tick
     * 4 heartbeats after that. */
    ck_assert_uint_ge(took, 3 * HB_MS - 50);
    ck_assert_uint_le(took, (uint64_t) mmt_scale(6 * HB_MS + 500));
    ck_assert_ptr_null(mmi_members_find(&F.mm[0]->peers->table, gone));
    ck_assert_ptr_null(mmi_members_find(&F.mm[1]->peers->table, gone));
}
END_TEST

/* ---- bad input ---- */

static bool
knows_sentinel(const void *arg)
{
    return mmi_members_find(&F.mm[0]->peers->table, arg) != NULL;
}

/* s with every '@' replaced by svc. */
static void
subst(char *out, size_t len, const char *s, const char *svc)
{
    size_t n = 0;
    for (; *s != '\0' && n + strlen(svc) + 1 < len; s++) {
        if (*s == '@') {
            memcpy(out + n, svc, strlen(svc));
            n += strlen(svc);
        } else {
            out[n++] = *s;
        }
    }
    out[n] = '\0';
}

static void
emit_malformed(const char *key, const char *svc)
{
    char buf[512];
    size_t big = 200000;
    char *huge = malloc(big + 64);
    ck_assert_ptr_nonnull(huge);
    static const char *const plain[] = {
        "not json {",
        "[1,2,3]",
        "\"a string\"",
        "42",
        "null",
        "{}",
        "{\"id\":42,\"name\":\"@\"}",
        "{\"name\":\"@\"}",
        "{\"id\":\"\",\"name\":\"@\"}",
        "{\"id\":\"x\\u0000y\",\"name\":\"@\"}",
        "{\"id\":\"bad-ready\",\"name\":\"@\",\"isReady\":1}",
        "{\"id\":\"bad-known\",\"name\":\"@\",\"knownPeers\":-1}",
        "{\"id\":\"bad-elapsed\",\"name\":\"@\",\"elapsedMs\":\"abc\"}",
        "{\"id\":\"bad-mem\",\"name\":\"@\",\"memoryUsage\":5}",
        "{\"id\":\"bad-rss\",\"name\":\"@\",\"memoryUsage\":{\"rss\":-5}}",
        "{\"id\":\"bad-leader\",\"name\":\"@\",\"leaderId\":7}",
        "{\"id\":\"foreign\",\"name\":\"someone-else\"}",
        "{\"id\":\"no-name\"}"};
    for (size_t i = 0; i < sizeof plain / sizeof plain[0]; i++) {
        subst(buf, sizeof buf, plain[i], svc);
        peer_emit_str(key, buf);
    }
    int n = snprintf(huge, big + 64, "{\"id\":\"");
    memset(huge + n, 'x', big);
    snprintf(huge + n + big, 64, "\",\"name\":\"%s\"}", svc);
    peer_emit_str(key, huge); /* a 200 kB id */
    n = snprintf(huge, big + 64, "{\"id\":\"huge-name\",\"name\":\"");
    memset(huge + n, 'y', big);
    snprintf(huge + n + big, 64, "\"}");
    peer_emit_str(key, huge);
    free(huge);
    peer_emit(key, "application/octet-stream", amqp_cstring_bytes("\x01\x02"));
    peer_emit(key, "application/json", amqp_empty_bytes);
}

START_TEST(malformed_statuses_are_ignored)
{
    peer_open();
    mm_t *a = start(0, F.service, 0, true);
    char key[256], ok[512];
    key_of(key, sizeof key, F.service, "peer.alive");
    emit_malformed(key, F.service);
    /* One valid status last: the queue is in order, so once it is in the table
     * every malformed one before it was seen and ignored. */
    raw_status(ok, sizeof ok, "sentinel", F.service, 2);
    peer_emit_str(key, ok);
    ck_assert(wait_for(knows_sentinel, "sentinel", mmt_scale(WAIT_MS)));
    ck_assert_uint_eq(table_size(a), 2); /* ourselves and the sentinel */
    ck_assert_ptr_nonnull(mmi_members_find(&a->peers->table, mm_id(a)));
    ck_assert(mm_is_connected(a));
    /* Only what the core cannot decode at all is reported (not JSON): no event
     * for anything our own checks refused. */
    ck_assert_int_le(F.ev[0].count[MM_EV_ERROR], 2);
    printf("peers: %d error events for the malformed statuses (last: %s)\n",
           F.ev[0].count[MM_EV_ERROR], F.ev[0].text[MM_EV_ERROR]);
}
END_TEST

/* ---- a protocol-only peer ---- */

/* The raw peer takes the status request a query sent and answers it. */
static void
peer_answer_request(const char *id, int known)
{
    amqp_envelope_t env;
    ck_assert_msg(mmt_peer_read(&F.peer, mmt_scale(5000), &env), "no peer.alive.req");
    char key[256], body[512];
    key_of(key, sizeof key, F.service, "peer.alive.req");
    ck_assert_int_eq(env.routing_key.len, strlen(key));
    ck_assert(memcmp(env.routing_key.bytes, key, strlen(key)) == 0);
    ck_assert_int_eq(env.message.body.len, 2); /* the JSON "" */
    ck_assert(memcmp(env.message.body.bytes, "\"\"", 2) == 0);
    const amqp_basic_properties_t *pr = &env.message.properties;
    ck_assert_int_eq(pr->content_type.len, 16);
    ck_assert(memcmp(pr->content_type.bytes, "application/json", 16) == 0);
    amqp_destroy_envelope(&env);
    key_of(key, sizeof key, F.service, "peer.alive");
    raw_status(body, sizeof body, id, F.service, known);
    peer_emit_str(key, body);
}

START_TEST(a_raw_peer_answering_status_requests_is_a_member)
{
    peer_open();
    char key[256];
    key_of(key, sizeof key, F.service, "peer.alive.req");
    peer_bind(key);
    mm_t *a = start(0, F.service, 0, true);
    /* The replica heartbeats first, as a live one does: a's table counts it, so a's
     * own answer says knownPeers 2 and the query waits for both. */
    char alive[256], body[512];
    key_of(alive, sizeof alive, F.service, "peer.alive");
    raw_status(body, sizeof body, "raw-replica", F.service, 2);
    peer_emit_str(alive, body);
    ck_assert(wait_for(knows_sentinel, "raw-replica", mmt_scale(WAIT_MS)));
    /* A short-lived client without peers of its own can still ask. */
    mm_t *c = start(1, F.other, MM_OPT_NO_PEERS, true);
    struct got g = {0};
    uint64_t t0 = mmt_now_ms();
    ck_assert_int_eq(mm_get_status(c, F.service, on_status, &g), MM_OK);
    peer_answer_request("raw-replica", 2);
    MMT_WAIT(F.base, g.done, mmt_scale(WAIT_MS));
    ck_assert_int_eq(g.code, MM_OK);
    ck_assert_uint_eq(g.count, 2);
    ck_assert(has_id(&g, mm_id(a)));
    ck_assert(has_id(&g, "raw-replica"));
    printf("peers: instance + raw replica status in %llu ms\n",
           (unsigned long long) (g.at_ms - t0));
    ck_assert_int_eq(count_routes(c), 0); /* its temporary listener is gone */
}
END_TEST

/* ---- mm_wait_service ---- */

START_TEST(wait_service_succeeds_when_the_service_appears_later)
{
    mm_t *c = start(0, F.other, MM_OPT_NO_PEERS, true);
    struct got g = {0};
    ck_assert_int_eq(mm_wait_service(c, F.service, 0, mmt_scale(WAIT_MS), on_status, &g), MM_OK);
    /* Nobody there for 1.5 s: the wait goes on (more than one query's bound). */
    ck_assert(!mmt_wait(F.base, &g.done, 1500));
    uint64_t t0 = mmt_now_ms();
    start(1, F.service, 0, true);
    MMT_WAIT(F.base, g.done, mmt_scale(WAIT_MS));
    ck_assert_int_eq(g.calls, 1);
    ck_assert_int_eq(g.code, MM_OK);
    ck_assert_int_eq(g.has_ready, 1);
    ck_assert(has_id(&g, mm_id(F.mm[1])));
    printf("peers: wait_service done %llu ms after the service connected\n",
           (unsigned long long) (g.at_ms - t0));
    ck_assert_uint_lt(g.at_ms - t0, 1500);
    ck_assert_int_eq(count_routes(c), 0);
}
END_TEST

START_TEST(wait_service_times_out_when_nobody_comes)
{
    mm_t *c = start(0, F.other, 0, true);
    struct got g = {0};
    uint64_t t0 = mmt_now_ms();
    ck_assert_int_eq(mm_wait_service(c, F.service, MM_WAIT_LEADER, 1500, on_status, &g), MM_OK);
    ck_assert(!g.done);
    MMT_WAIT(F.base, g.done, mmt_scale(WAIT_MS));
    ck_assert_int_eq(g.calls, 1);
    ck_assert_int_eq(g.code, MM_ETIMEDOUT);
    ck_assert_uint_eq(g.count, 0);
    printf("peers: wait_service timed out after %llu ms (timeout 1500)\n",
           (unsigned long long) (g.at_ms - t0));
    ck_assert_uint_ge(g.at_ms - t0, 1400); /* libevent timers may run a few ms early */
    ck_assert_uint_lt(g.at_ms - t0, 2000);
    ck_assert_int_eq(count_routes(c), 2); /* its own two; the wait's listener is gone */
}
END_TEST

START_TEST(wait_for_a_leader_times_out_with_the_last_status_when_none_leads)
{
    mm_t *c = start(0, F.other, 0, true);
    mm_t *a = start(1, F.service, MM_OPT_NO_ELECTION, true); /* ready, never leads */
    struct got ready = {0}, leader = {0};
    ck_assert_int_eq(mm_wait_service(c, F.service, 0, mmt_scale(WAIT_MS), on_status, &ready),
                     MM_OK);
    MMT_WAIT(F.base, ready.done, mmt_scale(WAIT_MS));
    ck_assert_int_eq(ready.code, MM_OK);
    ck_assert_int_eq(ready.has_leader, 0);
    uint64_t t0 = mmt_now_ms();
    ck_assert_int_eq(mm_wait_service(c, F.service, MM_WAIT_LEADER, 1500, on_status, &leader),
                     MM_OK);
    MMT_WAIT(F.base, leader.done, mmt_scale(WAIT_MS));
    ck_assert_int_eq(leader.calls, 1);
    ck_assert_int_eq(leader.code, MM_ETIMEDOUT);
    ck_assert_uint_eq(leader.count, 1); /* the last status seen */
    ck_assert_str_eq(leader.ids[0], mm_id(a));
    ck_assert_int_eq(leader.has_ready, 1);
    ck_assert_uint_lt(leader.at_ms - t0, 2000);
}
END_TEST

START_TEST(status_calls_refuse_bad_arguments)
{
    mm_t *a = start(0, F.service, 0, false);
    struct got g = {0};
    ck_assert_int_eq(mm_get_status(NULL, NULL, on_status, &g), MM_EINVAL);
    ck_assert_int_eq(mm_get_status(a, NULL, on_status, &g), MM_ENOTCONN);
    ck_assert_int_eq(mm_wait_service(a, NULL, 0, 100, on_status, &g), MM_ENOTCONN);
    mmt_connect(a);
    ck_assert_int_eq(mm_get_status(a, NULL, NULL, NULL), MM_EINVAL);
    ck_assert_int_eq(mm_get_status(a, "bad name", on_status, &g), MM_ENAME);
    ck_assert_int_eq(mm_get_status(a, "internal.x", on_status, &g), MM_ENAME);
    ck_assert_int_eq(mm_wait_service(a, NULL, 0, -5, on_status, &g), MM_EINVAL);
    ck_assert_int_eq(mm_wait_service(a, "a..b", 0, 100, on_status, &g), MM_ENAME);
    ck_assert_int_eq(mm_wait_service(NULL, NULL, 0, 100, on_status, &g), MM_EINVAL);
    ck_assert_int_eq(mm_broker_latency_ms(NULL), -1);
    ck_assert(!g.done);
}
END_TEST

/* ---- latency, reconnect, close + connect ---- */

static bool
latency_known(const void *arg)
{
    return mm_broker_latency_ms(arg) > 0;
}

/* Heartbeats of one instance, heard by a user listener on internal.<service>. */
struct beats {
    const char *id;
    int n;
    uint64_t first_ms, last_ms;
};

static void
on_beat_heard(mm_msg_t *msg, void *ud)
{
    struct beats *b = ud;
    const msgpack_object *id = mmt_map_get(mm_msg_body(msg), "id");
    if (id == NULL || !mmt_is_str(id, b->id))
        return;
    b->last_ms = mmt_now_ms();
    if (b->n++ == 0)
        b->first_ms = b->last_ms;
}

static bool
beats_at_least_two(const void *arg)
{
    return ((const struct beats *) arg)->n >= 2;
}

/* a's heartbeats are back (2 heard), then over 1 s: about 1000 / HB_MS of them.
 * election/ may add one when it steps up (mmi_peers_announce); a second timer or
 * a duplicated listener would double the count. */
static void
expect_heartbeats(struct beats *b, const char *when)
{
    b->n = 0;
    ck_assert_msg(wait_for(beats_at_least_two, b, mmt_scale(WAIT_MS)), "no heartbeats %s", when);
    b->n = 0;
    bool never = false;
    mmt_wait(F.base, &never, 1000); /* a measuring window, not a synchronisation */
    printf("peers: %d heartbeats in 1 s %s\n", b->n, when);
    ck_assert_int_ge(b->n, 1000 / HB_MS - 2);
    ck_assert_int_le(b->n, 1000 / HB_MS + 2);
}

START_TEST(latency_is_measured_and_heartbeats_resume_after_a_reconnect)
{
    mm_t *a = start(0, F.service, 0, true);
    mm_t *obs = start(1, F.other, MM_OPT_NO_PEERS, false);
    char target[128];
    snprintf(target, sizeof target, "internal.%s", F.service);
    struct beats b = {.id = mm_id(a)};
    ck_assert_int_eq(mm_listen(obs, target, "peer.alive", on_beat_heard, &b, NULL, NULL), MM_OK);
    mmt_connect(obs);
    ck_assert_int_eq(mm_broker_latency_ms(obs), -1); /* no probe without peers */
    ck_assert(wait_for(latency_known, a, mmt_scale(WAIT_MS)));
    printf("peers: broker round trip %.3f ms\n", mm_broker_latency_ms(a));
    ck_assert(mm_broker_latency_ms(a) < 1000);
    expect_heartbeats(&b, "after connect");
    int routes = count_routes(a);
    ck_assert_int_eq(routes, 2);
    ck_assert_int_eq(mmt_kill_connection(mmt_local_port(a)), 0);
    MMT_WAIT(F.base, F.ev[0].seen[MM_EV_RECONNECTED], mmt_scale(WAIT_MS));
    expect_heartbeats(&b, "after a reconnect");
    ck_assert_int_eq(count_routes(a), routes);
    ck_assert_int_eq(mm_close(a), MM_OK);
    mmt_connect(a);
    expect_heartbeats(&b, "after close + connect");
    ck_assert_int_eq(count_routes(a), routes);
    ck_assert(mm_broker_latency_ms(a) > 0);
}
END_TEST

START_TEST(no_peers_leaves_no_internal_route)
{
    mm_t *quiet = start(0, F.service, MM_OPT_NO_PEERS, true);
    ck_assert_ptr_null(quiet->routes);
    ck_assert_ptr_null(quiet->peers);
    ck_assert_ptr_null(quiet->election);
    ck_assert_int_eq(mm_broker_latency_ms(quiet), -1);
    mm_t *normal = start(1, F.service, 0, false);
    ck_assert_int_eq(count_routes(normal), 2);
    for (const struct mm_route *r = normal->routes; r != NULL; r = r->next)
        ck_assert(strncmp(r->key, "internal.", 9) == 0);
    /* The quiet one is invisible: the service has one member. */
    mmt_connect(normal);
    struct got g = {0};
    ck_assert_int_eq(mm_get_status(quiet, NULL, on_status, &g), MM_OK);
    MMT_WAIT(F.base, g.done, mmt_scale(WAIT_MS));
    ck_assert_uint_eq(g.count, 1);
    ck_assert_str_eq(g.ids[0], mm_id(normal));
    ck_assert_ptr_null(quiet->routes);
}
END_TEST

/* ---- mm_free from callbacks, and with queries pending ---- */

START_TEST(free_inside_status_and_wait_callbacks)
{
    start(0, F.service, 0, true);
    start(1, F.other, 0, true);
    struct got g = {.free_mm = true}, w = {.free_mm = true};
    ck_assert_int_eq(mm_wait_service(F.mm[1], F.service, 0, mmt_scale(WAIT_MS), on_status, &w),
                     MM_OK);
    MMT_WAIT(F.base, w.done, mmt_scale(WAIT_MS));
    ck_assert_int_eq(mm_get_status(F.mm[0], NULL, on_status, &g), MM_OK);
    MMT_WAIT(F.base, g.done, mmt_scale(WAIT_MS));
    ck_assert_ptr_null(F.mm[0]);
    ck_assert_ptr_null(F.mm[1]);
    ck_assert_int_eq(g.calls, 1);
    ck_assert_int_eq(w.calls, 1);
    ck_assert_int_eq(w.code, MM_OK);
}
END_TEST

START_TEST(free_with_queries_pending_calls_each_back_once)
{
    mm_t *a = start(0, F.service, 0, true);
    char absent[64];
    mmt_unique("peers-absent", absent, sizeof absent);
    struct got g = {0}, w = {0};
    ck_assert_int_eq(mm_get_status(a, absent, on_status, &g), MM_OK);
    ck_assert_int_eq(mm_wait_service(a, absent, 0, MM_NO_TIMEOUT, on_status, &w), MM_OK);
    stop(0);
    ck_assert_int_eq(g.calls, 1);
    ck_assert_int_eq(g.code, MM_ECLOSED);
    ck_assert_int_eq(w.calls, 1);
    ck_assert_int_eq(w.code, MM_ECLOSED);
}
END_TEST

START_TEST(close_with_a_query_pending_ends_it_with_ENOTCONN)
{
    mm_t *a = start(0, F.service, 0, true);
    char absent[64];
    mmt_unique("peers-absent", absent, sizeof absent);
    struct got g = {0};
    ck_assert_int_eq(mm_get_status(a, absent, on_status, &g), MM_OK);
    ck_assert_int_eq(mm_close(a), MM_OK);
    ck_assert(!g.done);
    MMT_WAIT(F.base, g.done, mmt_scale(WAIT_MS));
    ck_assert_int_eq(g.code, MM_ENOTCONN);
    ck_assert_int_eq(count_routes(a), 2); /* the temporary listener is gone */
    mmt_connect(a);
    struct got again = {0};
    ck_assert_int_eq(mm_get_status(a, NULL, on_status, &again), MM_OK);
    MMT_WAIT(F.base, again.done, mmt_scale(WAIT_MS));
    ck_assert_int_eq(again.code, MM_OK);
    ck_assert_uint_eq(again.count, 1);
}
END_TEST

int
main(void)
{
    Suite *s = suite_create("peers");
    TCase *tc = mmt_tcase(s, "peers", setup, teardown, 60);
    tcase_add_test(tc, alone_its_heartbeat_is_on_the_wire_as_the_protocol_says);
    tcase_add_test(tc, three_instances_know_each_other_and_answer_status_queries);
    tcase_add_test(tc, status_shows_the_qos_state_of_members_that_run_it);
    tcase_add_test(tc, a_freed_instance_is_forgotten_after_four_heartbeats);
    tcase_add_test(tc, malformed_statuses_are_ignored);
    tcase_add_test(tc, a_raw_peer_answering_status_requests_is_a_member);
    tcase_add_test(tc, wait_service_succeeds_when_the_service_appears_later);
    tcase_add_test(tc, wait_service_times_out_when_nobody_comes);
    tcase_add_test(tc, wait_for_a_leader_times_out_with_the_last_status_when_none_leads);
    tcase_add_test(tc, status_calls_refuse_bad_arguments);
    tcase_add_test(tc, latency_is_measured_and_heartbeats_resume_after_a_reconnect);
    tcase_add_test(tc, no_peers_leaves_no_internal_route);
    tcase_add_test(tc, free_inside_status_and_wait_callbacks);
    tcase_add_test(tc, free_with_queries_pending_calls_each_back_once);
    tcase_add_test(tc, close_with_a_query_pending_ends_it_with_ENOTCONN);
    return mmt_run(s);
}
