/*
 * The peer.alive status message (PROTOCOL.md 6): our own, built as msgpack
 * and sent as the JSON object replicas in other languages read (id, name,
 * isReady, isMaster, leaderId, elapsedMs, startedAt, memoryUsage,
 * knownPeers), and those of others, checked field by field before anything
 * trusts them. Also the internal sends of peers/: unconfirmed and never
 * buffered, so that they do not count among the user's sends (mm_flush,
 * mm_unconfirmed) and a status is never delivered late.
 */
#include <math.h>
#include <stdio.h>
#include <string.h>
#include <time.h>
#include <unistd.h>
#if defined(__GLIBC__)
#include <malloc.h>
#endif

#include "election.h"
#include "outbox.h"
#include "peers_int.h"
#include "publish.h"

void
mmi_peers_target(char *out, const char *service)
{
    snprintf(out, MMI_TARGET_MAX, "internal.%s", service);
}

static void
pack_key(msgpack_packer *pk, const char *key)
{
    msgpack_pack_str(pk, strlen(key));
    msgpack_pack_str_body(pk, key, strlen(key));
}

/* The user-header map of a heartbeat: {"x-mm-leader-since": ms} from a
 * leader, {"x-mm-qos-level": n, "x-mm-qos-pressure": flags} with QoS; or none. */
static size_t
alive_headers(const mm_t *mm, int64_t since, char *out, size_t cap)
{
    mm_qos_state_t q = {0};
    bool qos = mm_qos_state(mm, &q) == MM_OK && q.enabled;
    if (since <= 0 && !qos)
        return 0;
    msgpack_sbuffer sb;
    msgpack_sbuffer_init(&sb);
    msgpack_packer pk;
    msgpack_packer_init(&pk, &sb, msgpack_sbuffer_write);
    msgpack_pack_map(&pk, (since > 0) + 2 * qos);
    if (since > 0) {
        pack_key(&pk, MMI_H_LEADER_SINCE);
        msgpack_pack_int64(&pk, since);
    }
    if (qos) {
        pack_key(&pk, MMI_H_QOS_LEVEL);
        msgpack_pack_uint32(&pk, q.level);
        pack_key(&pk, MMI_H_QOS_PRESSURE);
        msgpack_pack_unsigned_int(&pk, q.pressure);
    }
    size_t n = sb.size <= cap ? sb.size : 0;
    if (n > 0)
        memcpy(out, sb.data, n);
    msgpack_sbuffer_destroy(&sb);
    return n;
}

static bool
route_is_alive(const char *route)
{
    return strcmp(route, "peer.alive") == 0;
}

/* A non-negative integer header below `max`, or -1. */
static int64_t
header_uint(mm_msg_t *msg, const char *name, uint64_t max)
{
    const msgpack_object *o = mm_msg_header(msg, name);
    if (o == NULL || o->type != MSGPACK_OBJECT_POSITIVE_INTEGER || o->via.u64 >= max)
        return -1;
    return (int64_t) o->via.u64;
}

void
mmi_alive_extras(mm_msg_t *msg, mmi_member_t *r)
{
    int64_t since = header_uint(msg, MMI_H_LEADER_SINCE, INT64_MAX);
    if (since >= 0)
        r->leader_since = since;
    int64_t level = header_uint(msg, MMI_H_QOS_LEVEL, UINT32_MAX);
    int64_t pressure = header_uint(msg, MMI_H_QOS_PRESSURE, 8);
    r->qos = level >= 0 && pressure >= 0;
    r->qos_level = r->qos ? (uint32_t) level : 0;
    r->qos_pressure = r->qos ? (unsigned) pressure : 0;
}

int
mmi_peers_send(mm_t *mm, const char *target, const char *route, const void *body, size_t len)
{
    return mmi_peers_send_since(mm, target, route, body, len, 0);
}

int
mmi_peers_send_since(mm_t *mm, const char *target, const char *route, const void *body, size_t len,
                     int64_t since)
{
    if (mm->state != MMI_CONNECTED)
        return mmi_fail(mm, MM_ENOTCONN, "not connected");
    /* Never buffered (blocked, or user sends waiting): a status is worth sending
     * only now, and it must not count in mm_unconfirmed(). */
    if (mm->blocked || mmi_outbox_would_wait(mm, 0))
        return mmi_fail(mm, MM_EBLOCKED, "publishing blocked or sends waiting: not sent");
    char key[MMI_TARGET_MAX + 64], err[160] = "";
    mmi_join(key, sizeof key, target, route);
    mmi_hdrs_t h;
    mmi_hdrs_init(&h); /* an event's __mms is an empty table */
    mmi_wire_out_t w;
    int rc = mmi_wire_encode(mm, MM_CODEC_JSON, body, len, &w);
    char user[128];
    size_t ulen = route_is_alive(route) ? alive_headers(mm, since, user, sizeof user) : 0;
    if (rc == MM_OK &&
        (rc = mmi_hdrs_finish(&h, NULL, ulen ? user : NULL, ulen, err, sizeof err)) != MM_OK)
        rc = mmi_fail(mm, rc, "headers: %s", err);
    if (rc == MM_OK) {
        mmi_pub_t pub = {.exchange = MMI_PUBSUB, .routing_key = key, .hdrs = &h, .body = &w};
        rc = mmi_pub_send(mm, &pub);
    }
    mmi_hdrs_fini(&h);
    mmi_wire_out_free(&w);
    return rc;
}

int
mmi_peers_send_quiet(mm_t *mm, const char *target, const char *route, const void *body, size_t len)
{
    int code = mm->last_code;
    char text[MMI_ERRBUF];
    memcpy(text, mm->last_error, sizeof text);
    int rc = mmi_peers_send_since(mm, target, route, body, len,
                                  strcmp(route, "peer.alive") == 0 ? mmi_election_since(mm) : 0);
    if (rc != MM_OK)
        mmi_log(mm, MM_LOG_DEBUG, "peers: %s.%s not sent: %s", target, route, mm->last_error);
    mm->last_code = code;
    memcpy(mm->last_error, text, sizeof text);
    return rc;
}

/* ---- our status ---- */

/* A status fits in a fixed buffer: names and ids are bounded (MMI_NAME_MAX,
 * MMI_PEER_ID_MAX), so no allocation per heartbeat. */
struct fixed {
    char data[1024];
    size_t len;
};

static int
fixed_write(void *data, const char *buf, size_t len)
{
    struct fixed *f = data;
    if (len > sizeof f->data - f->len)
        return -1;
    memcpy(f->data + f->len, buf, len);
    f->len += len;
    return 0;
}

static void
pack_str(msgpack_packer *pk, const char *s)
{
    size_t n = strlen(s);
    msgpack_pack_str(pk, n);
    msgpack_pack_str_body(pk, s, n);
}

static void
pack_bool(msgpack_packer *pk, bool b)
{
    if (b)
        msgpack_pack_true(pk);
    else
        msgpack_pack_false(pk);
}

/* Resident set size: /proc/self/statm's second field, in pages. 0 when unknown. */
static uint64_t
rss_bytes(void)
{
    unsigned long long size = 0, resident = 0;
    FILE *f = fopen("/proc/self/statm", "r");
    if (f == NULL)
        return 0;
    int n = fscanf(f, "%llu %llu", &size, &resident);
    fclose(f);
    long page = sysconf(_SC_PAGESIZE);
    return n == 2 && page > 0 ? (uint64_t) resident * (uint64_t) page : 0;
}

/* Node's memoryUsage shape. rss is the process's; heapTotal and heapUsed are
 * the C allocator's own figures (glibc mallinfo2: bytes obtained from the
 * system, bytes in use), 0 elsewhere; external (Node's off-heap buffers) has
 * no equivalent here and is always 0. */
static void
pack_memory(msgpack_packer *pk)
{
    uint64_t total = 0, used = 0;
#if defined(__GLIBC__) && (__GLIBC__ > 2 || (__GLIBC__ == 2 && __GLIBC_MINOR__ >= 33))
    struct mallinfo2 mi = mallinfo2();
    total = (uint64_t) mi.arena + (uint64_t) mi.hblkhd;
    used = (uint64_t) mi.uordblks + (uint64_t) mi.hblkhd;
#endif
    msgpack_pack_map(pk, 4);
    pack_str(pk, "rss");
    msgpack_pack_uint64(pk, rss_bytes());
    pack_str(pk, "heapTotal");
    msgpack_pack_uint64(pk, total);
    pack_str(pk, "heapUsed");
    msgpack_pack_uint64(pk, used);
    pack_str(pk, "external");
    msgpack_pack_uint64(pk, 0);
}

/* ISO 8601, UTC, with milliseconds, as JavaScript's Date.toISOString(). */
static void
iso8601(int64_t ms, char *out, size_t len)
{
    time_t s = (time_t) (ms / 1000);
    struct tm tm;
    gmtime_r(&s, &tm);
    char date[24];
    strftime(date, sizeof date, "%Y-%m-%dT%H:%M:%S", &tm);
    snprintf(out, len, "%.19s.%03dZ", date, (int) (ms % 1000 + 1000) % 1000);
}

static void
pack_alive(struct mmi_peers *p, msgpack_packer *pk)
{
    mm_t *mm = p->mm;
    bool master = mm->election != NULL && mmi_election_is_leader(mm);
    const char *leader = mm->election != NULL ? mmi_election_leader_id(mm) : NULL;
    char started[40];
    iso8601(mm->started_wall_ms, started, sizeof started);
    msgpack_pack_map(pk, leader != NULL ? 9 : 8);
    pack_str(pk, "id");
    pack_str(pk, mm->id);
    pack_str(pk, "name");
    pack_str(pk, mm->service);
    pack_str(pk, "isReady");
    pack_bool(pk, mm->state == MMI_CONNECTED);
    pack_str(pk, "isMaster");
    pack_bool(pk, master);
    if (leader != NULL) {
        pack_str(pk, "leaderId");
        pack_str(pk, leader);
    }
    pack_str(pk, "elapsedMs");
    msgpack_pack_uint64(pk, mmi_now_ms() - mm->started_ms);
    pack_str(pk, "startedAt");
    pack_str(pk, started);
    pack_str(pk, "memoryUsage");
    pack_memory(pk);
    pack_str(pk, "knownPeers");
    msgpack_pack_uint64(pk, p->table.n);
}

/* We are in our own table from the first heartbeat on, whatever the broker does. */
static void
touch_self(struct mmi_peers *p)
{
    mmi_member_t *e = mmi_members_find(&p->table, p->mm->id);
    if (e != NULL) {
        e->seen_ms = mmi_now_ms();
        return;
    }
    mmi_member_t self = {.seen_ms = mmi_now_ms()};
    snprintf(self.id, sizeof self.id, "%s", p->mm->id);
    mmi_members_put(&p->table, &self);
}

void
mmi_alive_publish(struct mmi_peers *p)
{
    if (!p->active || p->listen == NULL || p->mm->state != MMI_CONNECTED)
        return;
    touch_self(p);
    struct fixed f = {.len = 0};
    msgpack_packer pk;
    msgpack_packer_init(&pk, &f, fixed_write);
    pack_alive(p, &pk);
    mmi_peers_send_quiet(p->mm, p->target, "peer.alive", f.data, f.len);
}

/* ---- statuses of others ---- */

struct decode {
    mmi_member_t *r;
    const char *service;
    bool named;
};

static bool
str_copy(const msgpack_object *v, char *out, size_t cap, bool empty_ok)
{
    if (v->type != MSGPACK_OBJECT_STR || v->via.str.size >= cap ||
        (!empty_ok && v->via.str.size == 0) || memchr(v->via.str.ptr, 0, v->via.str.size))
        return false;
    memcpy(out, v->via.str.ptr, v->via.str.size);
    out[v->via.str.size] = '\0';
    return true;
}

/* A JSON number (integer or finite float) within [0, max]. */
static bool
number(const msgpack_object *v, double max, double *ret)
{
    double d;
    if (v->type == MSGPACK_OBJECT_POSITIVE_INTEGER)
        d = (double) v->via.u64;
    else if (v->type == MSGPACK_OBJECT_NEGATIVE_INTEGER)
        d = (double) v->via.i64;
    else if (v->type == MSGPACK_OBJECT_FLOAT32 || v->type == MSGPACK_OBJECT_FLOAT64)
        d = v->via.f64;
    else
        return false;
    *ret = d;
    return isfinite(d) && d >= 0 && d <= max;
}

static bool
key_is(const msgpack_object *k, const char *s)
{
    size_t n = strlen(s);
    return k->type == MSGPACK_OBJECT_STR && k->via.str.size == n &&
           memcmp(k->via.str.ptr, s, n) == 0;
}

static const char *
f_memory(const msgpack_object *v, struct decode *d)
{
    double rss = 0;
    if (v->type != MSGPACK_OBJECT_MAP)
        return "memoryUsage is not an object";
    for (uint32_t i = 0; i < v->via.map.size; i++)
        if (key_is(&v->via.map.ptr[i].key, "rss") &&
            !number(&v->via.map.ptr[i].val, 1e15, &rss)) /* a petabyte */
            return "memoryUsage.rss is not a plausible byte count";
    d->r->rss = (uint64_t) rss;
    return NULL;
}

/* One field; NULL when fine, else why the whole message is ignored. Fields the
 * protocol may add later are ignored. */
static const char *
field(const msgpack_object *k, const msgpack_object *v, struct decode *d)
{
    mmi_member_t *r = d->r;
    double n = 0;
    if (key_is(k, "id"))
        return str_copy(v, r->id, sizeof r->id, false) ? NULL : "id is not a short string";
    if (key_is(k, "name")) {
        d->named = v->type == MSGPACK_OBJECT_STR && v->via.str.size == strlen(d->service) &&
                   memcmp(v->via.str.ptr, d->service, v->via.str.size) == 0;
        return d->named ? NULL : "name is not the service's";
    }
    if (key_is(k, "isReady") || key_is(k, "isMaster")) {
        if (v->type != MSGPACK_OBJECT_BOOLEAN)
            return "isReady/isMaster is not a boolean";
        *(key_is(k, "isReady") ? &r->ready : &r->master) = v->via.boolean;
        return NULL;
    }
    if (key_is(k, "leaderId"))
        return v->type == MSGPACK_OBJECT_NIL || str_copy(v, r->leader_id, sizeof r->leader_id, true)
                   ? NULL
                   : "leaderId is not a short string";
    if (key_is(k, "elapsedMs")) {
        if (!number(v, 1e13, &n)) /* some 300 years */
            return "elapsedMs is not a plausible uptime";
        r->uptime_ms = (int64_t) n;
        return NULL;
    }
    if (key_is(k, "knownPeers")) {
        if (!number(v, 1e6, &n))
            return "knownPeers is not a plausible count";
        r->known_peers = (uint32_t) n;
        return NULL;
    }
    return key_is(k, "memoryUsage") ? f_memory(v, d) : NULL;
}

bool
mmi_alive_decode(mm_t *mm, const msgpack_object *body, const char *service, mmi_member_t *ret)
{
    *ret = (mmi_member_t){.seen_ms = mmi_now_ms()};
    struct decode d = {.r = ret, .service = service};
    const char *why = NULL;
    if (body == NULL || body->type != MSGPACK_OBJECT_MAP)
        why = "not a JSON object";
    for (uint32_t i = 0; why == NULL && i < body->via.map.size; i++)
        why = field(&body->via.map.ptr[i].key, &body->via.map.ptr[i].val, &d);
    if (why == NULL && ret->id[0] == '\0')
        why = "no id";
    if (why == NULL && !d.named)
        why = "no name";
    if (why != NULL)
        mmi_log(mm, MM_LOG_DEBUG, "peers: a status on internal.%s ignored: %s", service, why);
    return why == NULL;
}
