/*
 * The raw rabbitmq-c 0.11 baseline: every role of roles.h written the way a
 * plain, fast rabbitmq-c program is, so that micromsg's figures can be divided
 * by these (../shared/bench/rawc/RESULTS.md explains the method). Blocking API,
 * one connection with heartbeats off and 128 KiB frames, channel 1, and a
 * frame-level reader that never copies a single-frame body; the library's
 * pools are released after every message. The queues and the exchange have
 * micromsg's shapes (../shared/PROTOCOL.md 1) and the bodies are bench.h's, so
 * the broker does the same work for both implementations.
 *
 * With -H (bench_args_t.headers) every message published carries the AMQP
 * properties micromsg puts on the same message (../shared/PROTOCOL.md 2 and
 * 4, lib/request.c, answer.c, send.c, outbox.c): the __mms table, idRequest,
 * a uuid correlation id, a q.replyQueue reply queue, the expiration, the
 * message id, timestamp and app_id micromsg puts on every message (issue
 * 10's metadata), with fresh ids and wall-clock times per message. The difference between raw and
 * raw -H is the protocol's cost; the rest of micromsg's gap is the implementation's.
 */
#include "raw.h"
#include "roles.h"

#include <amqp.h>
#include <amqp_framing.h>
#include <amqp_tcp_socket.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/random.h>
#include <sys/time.h>
#include <time.h>

#define RAW_FRAME_MAX 131072
#define RAW_EXPIRES_MS 86400000 /* x-expires of request queues: 24 h */
#define RAW_EXCHANGE "x.pubSub"
#define RAW_TIMEOUT_MS 120000 /* micromsg's default request timeout */
#define RAW_TIMEOUT_STR "120000"

static volatile sig_atomic_t stop_requested;

/* ---- errors ---- */

/* channel.close and connection.close carry the same fields. */
static void
die_closed(const char *what, amqp_method_number_t id, const void *m)
{
    if (id == AMQP_CHANNEL_CLOSE_METHOD) {
        const amqp_channel_close_t *cc = m;
        bench_die("%s: channel closed by the broker: %u %.*s", what, cc->reply_code,
                  (int) cc->reply_text.len, (const char *) cc->reply_text.bytes);
    }
    if (id == AMQP_CONNECTION_CLOSE_METHOD) {
        const amqp_connection_close_t *cc = m;
        bench_die("%s: connection closed by the broker: %u %.*s", what, cc->reply_code,
                  (int) cc->reply_text.len, (const char *) cc->reply_text.bytes);
    }
    bench_die("%s: unexpected method %s", what, amqp_method_name(id));
}

void
check_reply(amqp_rpc_reply_t r, const char *what)
{
    if (r.reply_type == AMQP_RESPONSE_NORMAL)
        return;
    if (r.reply_type == AMQP_RESPONSE_LIBRARY_EXCEPTION)
        bench_die("%s: %s", what, amqp_error_string2(r.library_error));
    if (r.reply_type == AMQP_RESPONSE_SERVER_EXCEPTION)
        die_closed(what, r.reply.id, r.reply.decoded);
    bench_die("%s: no reply", what);
}

/* For the RPCs that return a pointer: their outcome is the last reply. */
void
check_rpc(conn_t c, const char *what)
{
    check_reply(amqp_get_rpc_reply(c), what);
}

void
check_status(int st, const char *what)
{
    if (st < 0)
        bench_die("%s: %s", what, amqp_error_string2(st));
}

/* ---- connection ---- */

conn_t
raw_connect(const char *uri)
{
    if (uri == NULL)
        bench_die("no broker URI");
    char *copy = strdup(uri); /* amqp_parse_url writes into its argument */
    struct amqp_connection_info ci;
    if (copy == NULL)
        bench_die("out of memory");
    amqp_default_connection_info(&ci);
    if (amqp_parse_url(copy, &ci) != AMQP_STATUS_OK)
        bench_die("amqp_parse_url: cannot parse '%s'", uri);
    if (ci.ssl)
        bench_die("the raw baseline speaks plain amqp:// only, not '%s'", uri);
    conn_t c = amqp_new_connection();
    amqp_socket_t *s = c != NULL ? amqp_tcp_socket_new(c) : NULL;
    if (s == NULL)
        bench_die("amqp_tcp_socket_new: out of memory");
    check_status(amqp_socket_open(s, ci.host, ci.port), "amqp_socket_open");
    check_reply(
        amqp_login(c, ci.vhost, 0, RAW_FRAME_MAX, 0, AMQP_SASL_METHOD_PLAIN, ci.user, ci.password),
        "amqp_login");
    free(copy);
    amqp_channel_open(c, RAW_CH);
    check_rpc(c, "channel.open");
    return c;
}

void
raw_close(conn_t c)
{
    check_reply(amqp_channel_close(c, RAW_CH, AMQP_REPLY_SUCCESS), "channel.close");
    check_reply(amqp_connection_close(c, AMQP_REPLY_SUCCESS), "connection.close");
    amqp_destroy_connection(c);
}

/* ---- declarations ---- */

/* q.requests.<name>.<route>: durable, shared, 24 h x-expires (PROTOCOL.md 1). */
static void
declare_request_queue(conn_t c, char *out, const char *name, const char *route)
{
    amqp_table_entry_t expires = {
        .key = amqp_cstring_bytes("x-expires"),
        .value = {.kind = AMQP_FIELD_KIND_I32, .value.i32 = RAW_EXPIRES_MS},
    };
    amqp_table_t args = {.num_entries = 1, .entries = &expires};
    if (snprintf(out, RAW_NAME_MAX, "q.requests.%s.%s", name, route) >= RAW_NAME_MAX)
        bench_die("name '%s' too long", name);
    amqp_queue_declare(c, RAW_CH, amqp_cstring_bytes(out), 0, 1, 0, 0, args);
    check_rpc(c, "queue.declare of the request queue");
}

/* An exclusive server-named queue (reply queue, event queue); its name is
 * copied to out before the pool that holds it is released. */
static void
declare_private_queue(conn_t c, char *out)
{
    amqp_queue_declare_ok_t *ok =
        amqp_queue_declare(c, RAW_CH, amqp_empty_bytes, 0, 1, 1, 0, amqp_empty_table);
    check_rpc(c, "queue.declare of a private queue");
    if (ok->queue.len >= RAW_NAME_MAX)
        bench_die("queue.declare: server-named queue name too long");
    memcpy(out, ok->queue.bytes, ok->queue.len);
    out[ok->queue.len] = '\0';
}

static void
declare_exchange(conn_t c)
{
    amqp_exchange_declare(c, RAW_CH, amqp_cstring_bytes(RAW_EXCHANGE), amqp_cstring_bytes("topic"),
                          0, 1, 0, 0, amqp_empty_table);
    check_rpc(c, "exchange.declare of " RAW_EXCHANGE);
}

static void
event_key(char *out, const char *name)
{
    if (snprintf(out, RAW_NAME_MAX, "%s.x", name) >= RAW_NAME_MAX)
        bench_die("name '%s' too long", name);
}

static void
consume(conn_t c, const char *queue, int prefetch, int no_ack)
{
    if (prefetch < 0 || prefetch > UINT16_MAX)
        bench_die("prefetch %d out of range", prefetch);
    if (!no_ack && prefetch > 0) {
        amqp_basic_qos(c, RAW_CH, 0, (uint16_t) prefetch, 0);
        check_rpc(c, "basic.qos");
    }
    amqp_basic_consume(c, RAW_CH, amqp_cstring_bytes(queue), amqp_empty_bytes, 0, no_ack, 0,
                       amqp_empty_table);
    check_rpc(c, "basic.consume");
}

/* ---- reading ---- */

/* The header and the body follow the method back to back, so they are read
 * blocking. Our bodies always fit one frame: anything else is not ours. */
static void
rx_content(conn_t c, amqp_channel_t ch, rx_t *m)
{
    amqp_frame_t f;
    check_status(amqp_simple_wait_frame(c, &f), "reading a content header");
    if (f.frame_type != AMQP_FRAME_HEADER || f.channel != ch)
        bench_die("expected a content header, got frame type %d", f.frame_type);
    m->props = f.payload.properties.decoded;
    uint64_t size = f.payload.properties.body_size;
    m->body = amqp_empty_bytes;
    if (size == 0)
        return;
    check_status(amqp_simple_wait_frame(c, &f), "reading a body frame");
    if (f.frame_type != AMQP_FRAME_BODY || f.channel != ch)
        bench_die("expected a body frame, got frame type %d", f.frame_type);
    if (f.payload.body_fragment.len != size)
        bench_die("a body of %llu bytes spans several frames: not a benchmark body",
                  (unsigned long long) size);
    m->body = f.payload.body_fragment;
}

/* The next method. AMQP_STATUS_OK, or AMQP_STATUS_TIMEOUT when tv is not NULL;
 * dies on a read error and on the broker closing the channel or connection. */
int
rx_next(conn_t c, rx_t *m, const struct timeval *tv)
{
    amqp_frame_t f;
    do {
        int st =
            tv == NULL ? amqp_simple_wait_frame(c, &f) : amqp_simple_wait_frame_noblock(c, &f, tv);
        if (st == AMQP_STATUS_TIMEOUT && tv != NULL)
            return st;
        check_status(st, "reading a frame");
    } while (f.frame_type == AMQP_FRAME_HEARTBEAT); /* they can leak through */
    if (f.frame_type != AMQP_FRAME_METHOD)
        bench_die("expected a method frame, got frame type %d", f.frame_type);
    m->id = f.payload.method.id;
    m->method = f.payload.method.decoded;
    m->props = NULL;
    m->body = amqp_empty_bytes;
    if (m->id == AMQP_CHANNEL_CLOSE_METHOD || m->id == AMQP_CONNECTION_CLOSE_METHOD)
        die_closed("reading", m->id, m->method);
    if (amqp_method_has_content(m->id))
        rx_content(c, f.channel, m);
    return AMQP_STATUS_OK;
}

/* Anything but the method a role waits for ends the run. */
void
die_unexpected(const rx_t *m, const char *role)
{
    if (m->id == AMQP_BASIC_RETURN_METHOD) {
        const amqp_basic_return_t *r = m->method;
        bench_die("%s: message returned: %u %.*s", role, r->reply_code, (int) r->reply_text.len,
                  (const char *) r->reply_text.bytes);
    }
    bench_die("%s: unexpected %s", role, amqp_method_name(m->id));
}

/* ---- protocol headers (-H) ---- */

/* Ids as micromsg makes them (lib/ids.c): xoshiro256** seeded once from
 * getrandom(), formatted as a version 4 UUID of 36 characters. */
static uint64_t rng[4];

static uint64_t
rng_rotl(uint64_t x, int k)
{
    return (x << k) | (x >> (64 - k));
}

static uint64_t
rng_next(void)
{
    uint64_t result = rng_rotl(rng[1] * 5, 7) * 9, t = rng[1] << 17;
    rng[2] ^= rng[0];
    rng[3] ^= rng[1];
    rng[1] ^= rng[2];
    rng[0] ^= rng[3];
    rng[2] ^= t;
    rng[3] = rng_rotl(rng[3], 45);
    return result;
}

static void
ids_seed(void)
{
    if (getrandom(rng, sizeof rng, 0) != (ssize_t) sizeof rng || (rng[0] | rng[1]) == 0)
        bench_die("getrandom failed");
}

static void
make_id(char out[37])
{
    static const char hex[] = "0123456789abcdef";
    if ((rng[0] | rng[1]) == 0)
        ids_seed();
    uint8_t b[16];
    uint64_t hi = rng_next(), lo = rng_next();
    for (int i = 0; i < 8; i++) {
        b[i] = (uint8_t) (hi >> (56 - 8 * i));
        b[8 + i] = (uint8_t) (lo >> (56 - 8 * i));
    }
    b[6] = (uint8_t) ((b[6] & 0x0f) | 0x40); /* version 4 */
    b[8] = (uint8_t) ((b[8] & 0x3f) | 0x80); /* RFC 4122 variant */
    char *p = out;
    for (int i = 0; i < 16; i++) {
        if (i == 4 || i == 6 || i == 8 || i == 10)
            *p++ = '-';
        *p++ = hex[b[i] >> 4];
        *p++ = hex[b[i] & 15];
    }
    *p = '\0';
}

/* iat and eat: milliseconds since the epoch. */
static int64_t
wall_ms(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_REALTIME, &ts);
    return (int64_t) ts.tv_sec * 1000 + ts.tv_nsec / 1000000;
}

/* One message's header table: __mms (a nested table), then idRequest when
 * the message has one. The entries point into this struct and into static
 * strings, so it must outlive the publish. */
typedef struct {
    amqp_table_entry_t mms[3];
    amqp_table_entry_t top[2];
    char id_request[37];
    char msg_id[37];
} proto_hdrs_t;

/* What micromsg puts on every message (lib/publish.c, lib/meta.c): a fresh
 * message id, the time in seconds, and app_id <service>@<instance id>. */
static void
meta_props(proto_hdrs_t *h, amqp_basic_properties_t *p)
{
    static char app_id[80];
    if (app_id[0] == '\0') {
        char id[37];
        make_id(id);
        snprintf(app_id, sizeof app_id, "mmb-raw-client@%s", id);
    }
    make_id(h->msg_id);
    p->_flags |= AMQP_BASIC_MESSAGE_ID_FLAG | AMQP_BASIC_TIMESTAMP_FLAG | AMQP_BASIC_APP_ID_FLAG;
    p->message_id = (amqp_bytes_t){36, h->msg_id};
    p->timestamp = (uint64_t) time(NULL);
    p->app_id = amqp_cstring_bytes(app_id);
}

/* __mms fields: strings UTF-8, integers signed 64-bit, as lib/headers.c. */
static void
mms_str(proto_hdrs_t *h, int i, const char *key, const char *v)
{
    h->mms[i].key = amqp_cstring_bytes(key);
    h->mms[i].value.kind = AMQP_FIELD_KIND_UTF8;
    h->mms[i].value.value.bytes = amqp_cstring_bytes(v);
}

static void
mms_bool(proto_hdrs_t *h, int i, const char *key, int v)
{
    h->mms[i].key = amqp_cstring_bytes(key);
    h->mms[i].value.kind = AMQP_FIELD_KIND_BOOLEAN;
    h->mms[i].value.value.boolean = v;
}

static void
mms_int(proto_hdrs_t *h, int i, const char *key, int64_t v)
{
    h->mms[i].key = amqp_cstring_bytes(key);
    h->mms[i].value.kind = AMQP_FIELD_KIND_I64;
    h->mms[i].value.value.i64 = v;
}

/* The table of nmms __mms fields and, unless id is empty, idRequest = id,
 * set as p's headers. */
static void
hdrs_finish(proto_hdrs_t *h, int nmms, amqp_bytes_t id, amqp_basic_properties_t *p)
{
    h->top[0].key = amqp_cstring_bytes("__mms");
    h->top[0].value.kind = AMQP_FIELD_KIND_TABLE;
    h->top[0].value.value.table = (amqp_table_t){nmms, nmms > 0 ? h->mms : NULL};
    int n = 1;
    if (id.len > 0) {
        h->top[1].key = amqp_cstring_bytes("idRequest");
        h->top[1].value.kind = AMQP_FIELD_KIND_UTF8;
        h->top[1].value.value.bytes = id;
        n = 2;
    }
    p->_flags |= AMQP_BASIC_HEADERS_FLAG;
    p->headers = (amqp_table_t){n, h->top};
    meta_props(h, p);
}

/* A request or task's __mms and a fresh idRequest; iat now. */
static void
hdrs_request(proto_hdrs_t *h, const char *route, int task, amqp_basic_properties_t *p)
{
    int64_t iat = wall_ms();
    int n = 0;
    mms_str(h, n++, "route", route);
    if (task)
        mms_bool(h, n++, "isTask", 1);
    mms_int(h, n++, "iat", iat);
    if (!task)
        mms_int(h, n++, "eat", iat + RAW_TIMEOUT_MS);
    make_id(h->id_request);
    hdrs_finish(h, n, (amqp_bytes_t){36, h->id_request}, p);
}

/* A string header of the top level, or {0, NULL}. */
static amqp_bytes_t
header_str(const amqp_basic_properties_t *p, const char *key)
{
    size_t n = strlen(key);
    if (!(p->_flags & AMQP_BASIC_HEADERS_FLAG))
        return (amqp_bytes_t){0, NULL};
    for (int i = 0; i < p->headers.num_entries; i++) {
        const amqp_table_entry_t *e = &p->headers.entries[i];
        if (e->key.len == n && memcmp(e->key.bytes, key, n) == 0 &&
            (e->value.kind == AMQP_FIELD_KIND_UTF8 || e->value.kind == AMQP_FIELD_KIND_BYTES))
            return e->value.value.bytes;
    }
    return (amqp_bytes_t){0, NULL};
}

/* ---- rpc-server ---- */

static void
on_stop(int sig)
{
    (void) sig;
    stop_requested = 1;
}

/* With headers, the reply's are micromsg's (lib/answer.c): __mms {isError,
 * isEnd, sequence 0} and the request's idRequest, when it has one. */
static void
echo_request(conn_t c, const rx_t *m, int headers)
{
    const amqp_basic_deliver_t *d = m->method;
    const amqp_basic_properties_t *p = m->props;
    if (!(p->_flags & AMQP_BASIC_REPLY_TO_FLAG) || !(p->_flags & AMQP_BASIC_CORRELATION_ID_FLAG))
        bench_die("rpc-server: a request without reply_to or correlation_id");
    amqp_basic_properties_t rp = {
        ._flags = AMQP_BASIC_CONTENT_TYPE_FLAG | AMQP_BASIC_CORRELATION_ID_FLAG,
        .content_type = amqp_cstring_bytes(RAW_CTYPE),
        .correlation_id = p->correlation_id,
    };
    proto_hdrs_t h;
    if (headers) {
        mms_bool(&h, 0, "isError", 0);
        mms_bool(&h, 1, "isEnd", 1);
        mms_int(&h, 2, "sequence", 0);
        hdrs_finish(&h, 3, header_str(p, "idRequest"), &rp);
    }
    check_status(amqp_basic_publish(c, RAW_CH, amqp_empty_bytes, p->reply_to, 0, 0, &rp, m->body),
                 "rpc-server: publishing a reply");
    check_status(amqp_basic_ack(c, RAW_CH, d->delivery_tag, 0), "rpc-server: basic.ack");
}

/* Serves until SIGTERM; the read wakes every 100 ms to notice it, because
 * the library restarts its poll() on EINTR. */
static void
serve(conn_t c, const bench_args_t *a)
{
    const struct timeval tick = {0, 100000};
    bench_span_t span = {0};
    long handled = 0;
    rx_t m;
    while (!stop_requested) {
        if (rx_next(c, &m, &tick) == AMQP_STATUS_TIMEOUT)
            continue;
        if (m.id != AMQP_BASIC_DELIVER_METHOD)
            die_unexpected(&m, "rpc-server");
        if (handled == 0 && a->warmup == 0)
            bench_span_start(&span);
        echo_request(c, &m, a->headers);
        amqp_maybe_release_buffers(c);
        handled++;
        if (handled == a->warmup)
            bench_span_start(&span);
        if (handled == a->warmup + a->n)
            bench_span_report(&span, a->n, "");
    }
}

int
raw_rpc_server(const bench_args_t *a)
{
    struct sigaction sa = {.sa_handler = on_stop};
    sigemptyset(&sa.sa_mask);
    sigaction(SIGTERM, &sa, NULL);
    sigaction(SIGINT, &sa, NULL);
    conn_t c = raw_connect(a->uri);
    char queue[RAW_NAME_MAX];
    declare_request_queue(c, queue, a->name, "echo");
    consume(c, queue, a->prefetch, 0);
    bench_ready();
    serve(c, a);
    raw_close(c);
    return 0;
}

/* ---- rpc-client ---- */

typedef struct {
    conn_t c;
    char queue[RAW_NAME_MAX];   /* q.requests.<name>.echo */
    char reply_q[RAW_NAME_MAX]; /* the private reply queue */
    amqp_basic_properties_t props;
    bench_hist_t *lat; /* round trips of the measured replies, ns */
    char cid[24];      /* props.correlation_id points here */
    int headers;       /* -H: micromsg's properties (lib/request.c) */
    long window;
    char (*cids)[37]; /* -H: the uuid correlation id of request seq, at seq % window */
    proto_hdrs_t h;
} rpc_client_t;

/* The correlation id: the request's sequence number in decimal. */
static size_t
cid_format(char out[24], uint64_t seq)
{
    char tmp[24];
    size_t n = 0;
    do {
        tmp[n++] = (char) ('0' + seq % 10);
        seq /= 10;
    } while (seq != 0);
    for (size_t i = 0; i < n; i++)
        out[i] = tmp[n - 1 - i];
    return n;
}

/* With headers: a fresh uuid correlation id, kept until its reply, and the
 * request's __mms, idRequest and expiration (set once in props). */
static void
send_request(rpc_client_t *rc, uint64_t seq)
{
    uint8_t body[BENCH_BODY];
    bench_body_pack(body, seq, bench_now_ns());
    if (rc->headers) {
        char *cid = rc->cids[seq % (uint64_t) rc->window];
        make_id(cid);
        rc->props.correlation_id = (amqp_bytes_t){36, cid};
        hdrs_request(&rc->h, "echo", 0, &rc->props);
    } else {
        rc->props.correlation_id = (amqp_bytes_t){cid_format(rc->cid, seq), rc->cid};
    }
    amqp_bytes_t b = {sizeof body, body};
    check_status(amqp_basic_publish(rc->c, RAW_CH, amqp_empty_bytes, amqp_cstring_bytes(rc->queue),
                                    1, 0, &rc->props, b),
                 "rpc-client: publishing a request");
}

/* Checks that the reply answers the request its body names; returns the
 * round trip in ns. One server, one queue: replies come in request order, so
 * request seq's slot in cids is still its own. */
static uint64_t
take_reply(rpc_client_t *rc, const rx_t *m, long sent)
{
    uint64_t seq, t_ns, now = bench_now_ns();
    if (m->id != AMQP_BASIC_DELIVER_METHOD)
        die_unexpected(m, "rpc-client");
    if (bench_body_unpack(m->body.bytes, m->body.len, &seq, &t_ns) != 0 || seq >= (uint64_t) sent)
        bench_die("rpc-client: a reply with a foreign body");
    const amqp_basic_properties_t *p = m->props;
    const char *cid = rc->headers ? rc->cids[seq % (uint64_t) rc->window] : rc->cid;
    size_t n = rc->headers ? 36 : cid_format(rc->cid, seq);
    if (!(p->_flags & AMQP_BASIC_CORRELATION_ID_FLAG) || p->correlation_id.len != n ||
        memcmp(p->correlation_id.bytes, cid, n) != 0)
        bench_die("rpc-client: reply %llu with a wrong correlation id", (unsigned long long) seq);
    return now - t_ns;
}

static void
run_requests(rpc_client_t *rc, const bench_args_t *a, bench_span_t *span)
{
    long total = a->warmup + a->n, sent = 0, done = 0;
    rx_t m;
    if (a->warmup == 0)
        bench_span_start(span);
    while (done < total) {
        while (sent < total && sent - done < a->window)
            send_request(rc, (uint64_t) sent++);
        rx_next(rc->c, &m, NULL);
        uint64_t rtt = take_reply(rc, &m, sent);
        amqp_maybe_release_buffers(rc->c);
        if (done >= a->warmup)
            bench_hist_add(rc->lat, rtt);
        done++;
        if (done == a->warmup)
            bench_span_start(span);
    }
}

/* The reply queue, consumed without ack. With headers it is micromsg's
 * q.replyQueue.<name>-client.<uuid> (durable, exclusive), whose name every
 * request carries as reply_to; else a server-named one. */
static void
client_setup(rpc_client_t *rc, const bench_args_t *a)
{
    if (snprintf(rc->queue, sizeof rc->queue, "q.requests.%s.echo", a->name) >= RAW_NAME_MAX)
        bench_die("name '%s' too long", a->name);
    rc->props = (amqp_basic_properties_t){
        ._flags = AMQP_BASIC_CONTENT_TYPE_FLAG | AMQP_BASIC_REPLY_TO_FLAG |
                  AMQP_BASIC_CORRELATION_ID_FLAG,
        .content_type = amqp_cstring_bytes(RAW_CTYPE),
    };
    if (!rc->headers) {
        declare_private_queue(rc->c, rc->reply_q);
    } else {
        char id[37];
        make_id(id);
        if (snprintf(rc->reply_q, sizeof rc->reply_q, "q.replyQueue.%s-client.%s", a->name, id) >=
            RAW_NAME_MAX)
            bench_die("name '%s' too long", a->name);
        amqp_queue_declare(rc->c, RAW_CH, amqp_cstring_bytes(rc->reply_q), 0, 1, 1, 0,
                           amqp_empty_table);
        check_rpc(rc->c, "queue.declare of the reply queue");
        rc->props._flags |= AMQP_BASIC_EXPIRATION_FLAG;
        rc->props.expiration = amqp_cstring_bytes(RAW_TIMEOUT_STR);
    }
    rc->props.reply_to = amqp_cstring_bytes(rc->reply_q);
    consume(rc->c, rc->reply_q, 0, 1);
}

int
raw_rpc_client(const bench_args_t *a)
{
    static bench_hist_t lat; /* as micromsg's client keeps it: not on the stack */
    rpc_client_t rc = {.lat = &lat, .headers = a->headers, .window = a->window};
    bench_span_t span = {0};
    char extra[64];
    if (a->window < 1)
        bench_die("rpc-client: needs a window >= 1");
    if (rc.headers) {
        ids_seed();
        if ((rc.cids = calloc((size_t) a->window, sizeof *rc.cids)) == NULL)
            bench_die("out of memory");
    }
    rc.c = raw_connect(a->uri);
    client_setup(&rc, a);
    run_requests(&rc, a, &span);
    double p50 = (double) bench_hist_percentile(rc.lat, 50) / 1e3;
    double p99 = (double) bench_hist_percentile(rc.lat, 99) / 1e3;
    snprintf(extra, sizeof extra, "p50_us=%.1f p99_us=%.1f", p50, p99);
    bench_span_report(&span, a->n, extra);
    raw_close(rc.c);
    free(rc.cids);
    return 0;
}

/* ---- ev-listen, task-work ---- */

/* Acks each message as it comes, like a handler that settles its message.
 * The span runs from the send time of message number warmup to the arrival
 * of the last one (end to end). */
static void
receive_all(conn_t c, const bench_args_t *a, const char *role)
{
    long total = a->warmup + a->n;
    bench_span_t span = {0};
    rx_t m;
    for (long got = 0; got < total; got++) {
        uint64_t seq, t_ns;
        rx_next(c, &m, NULL);
        if (m.id != AMQP_BASIC_DELIVER_METHOD)
            die_unexpected(&m, role);
        if (bench_body_unpack(m.body.bytes, m.body.len, &seq, &t_ns) != 0)
            bench_die("%s: a message with a foreign body", role);
        if (seq != (uint64_t) got) /* one sender, one queue: in order, none lost */
            bench_die("%s: message %llu arrived as number %ld", role, (unsigned long long) seq,
                      got);
        if (got == a->warmup) {
            bench_span_start(&span);
            span.t0_ns = t_ns;
        }
        const amqp_basic_deliver_t *d = m.method;
        check_status(amqp_basic_ack(c, RAW_CH, d->delivery_tag, 0), "basic.ack");
        amqp_maybe_release_buffers(c);
    }
    bench_span_report(&span, a->n, "");
}

int
raw_ev_listen(const bench_args_t *a)
{
    conn_t c = raw_connect(a->uri);
    char queue[RAW_NAME_MAX], key[RAW_NAME_MAX];
    event_key(key, a->name);
    declare_exchange(c);
    declare_private_queue(c, queue);
    amqp_queue_bind(c, RAW_CH, amqp_cstring_bytes(queue), amqp_cstring_bytes(RAW_EXCHANGE),
                    amqp_cstring_bytes(key), amqp_empty_table);
    check_rpc(c, "queue.bind");
    consume(c, queue, a->prefetch, 0);
    bench_ready();
    receive_all(c, a, "ev-listen");
    raw_close(c);
    return 0;
}

int
raw_task_work(const bench_args_t *a)
{
    conn_t c = raw_connect(a->uri);
    char queue[RAW_NAME_MAX];
    declare_request_queue(c, queue, a->name, "work");
    consume(c, queue, a->prefetch, 0);
    bench_ready();
    receive_all(c, a, "task-work");
    raw_close(c);
    return 0;
}

/* ---- ev-emit ---- */

int
raw_ev_emit(const bench_args_t *a)
{
    conn_t c = raw_connect(a->uri);
    char key[RAW_NAME_MAX];
    uint8_t body[BENCH_BODY];
    long total = a->warmup + a->n;
    bench_span_t span;
    event_key(key, a->name);
    declare_exchange(c);
    amqp_basic_properties_t props = {
        ._flags = AMQP_BASIC_CONTENT_TYPE_FLAG,
        .content_type = amqp_cstring_bytes(RAW_CTYPE),
    };
    proto_hdrs_t h;
    if (a->headers) /* an event's __mms is an empty table, and nothing else */
        hdrs_finish(&h, 0, (amqp_bytes_t){0, NULL}, &props);
    amqp_bytes_t ex = amqp_cstring_bytes(RAW_EXCHANGE), rk = amqp_cstring_bytes(key);
    amqp_bytes_t b = {sizeof body, body};
    bench_span_start(&span);
    for (long i = 0; i < total; i++) {
        bench_body_pack(body, (uint64_t) i, bench_now_ns());
        if (a->headers)
            meta_props(&h, &props);
        check_status(amqp_basic_publish(c, RAW_CH, ex, rk, 0, 0, &props, b),
                     "ev-emit: publishing an event");
    }
    bench_span_report(&span, total, "");
    raw_close(c); /* its close-ok also tells that the broker took every event */
    return 0;
}

/* ---- task-pub ---- */

/* Publisher confirms: tags count from 1 on the channel. The broker may
 * confirm out of order, one tag or all up to a tag (multiple), so a ring of
 * `window` flags remembers which tags past the lowest unconfirmed one (low)
 * are confirmed. At most `window` tags from low on are ever published, hence
 * at most `window` unconfirmed. */

static void
confirm_tag(confirms_t *cf, uint64_t tag)
{
    cf->done[tag % cf->window] = 1;
    while (cf->low <= cf->published && cf->done[cf->low % cf->window]) {
        cf->done[cf->low % cf->window] = 0;
        cf->low++;
    }
}

void
take_confirm(confirms_t *cf, const rx_t *m)
{
    if (m->id == AMQP_BASIC_NACK_METHOD) {
        const amqp_basic_nack_t *n = m->method;
        bench_die("task-pub: the broker nacked task %llu%s", (unsigned long long) n->delivery_tag,
                  n->multiple ? " and those before it" : "");
    }
    if (m->id != AMQP_BASIC_ACK_METHOD)
        die_unexpected(m, "task-pub");
    const amqp_basic_ack_t *ack = m->method;
    uint64_t tag = ack->delivery_tag;
    if (ack->multiple && tag == 0) /* tag 0 with multiple: everything published */
        tag = cf->published;
    if (tag == 0 || tag > cf->published)
        bench_die("task-pub: a confirm for task %llu, never published", (unsigned long long) tag);
    if (!ack->multiple) {
        if (tag >= cf->low)
            confirm_tag(cf, tag);
        return;
    }
    while (cf->low <= tag) /* confirm_tag moves low past every confirmed tag */
        confirm_tag(cf, cf->low);
}

/* A task's properties. With headers, micromsg's (lib/send.c, outbox.c) but
 * for what task_headers adds: no delivery mode at all when transient. */
static void
task_props(const bench_args_t *a, amqp_basic_properties_t *p)
{
    *p = (amqp_basic_properties_t){
        ._flags = AMQP_BASIC_CONTENT_TYPE_FLAG | AMQP_BASIC_DELIVERY_MODE_FLAG,
        .content_type = amqp_cstring_bytes(RAW_CTYPE),
        .delivery_mode = a->persistent ? AMQP_DELIVERY_PERSISTENT : AMQP_DELIVERY_NONPERSISTENT,
    };
    if (a->headers && !a->persistent)
        p->_flags &= (amqp_flags_t) ~AMQP_BASIC_DELIVERY_MODE_FLAG;
}

/* Per task with headers: a fresh message id (a confirmed send's), __mms
 * {route, isTask, iat} and a fresh idRequest. */
static void
task_headers(proto_hdrs_t *h, char mid[37], amqp_basic_properties_t *p)
{
    make_id(mid);
    p->_flags |= AMQP_BASIC_MESSAGE_ID_FLAG;
    p->message_id = (amqp_bytes_t){36, mid};
    hdrs_request(h, "work", 1, p);
}

static void
publish_tasks(conn_t c, const bench_args_t *a, confirms_t *cf, const char *queue)
{
    uint64_t total = (uint64_t) (a->warmup + a->n);
    uint8_t body[BENCH_BODY];
    amqp_basic_properties_t props;
    proto_hdrs_t h;
    char mid[37];
    amqp_bytes_t rk = amqp_cstring_bytes(queue), b = {sizeof body, body};
    rx_t m;
    task_props(a, &props);
    while (cf->low <= total) {
        while (cf->published < total && cf->published + 1 - cf->low < cf->window) {
            if (a->headers)
                task_headers(&h, mid, &props);
            bench_body_pack(body, cf->published, bench_now_ns());
            check_status(amqp_basic_publish(c, RAW_CH, amqp_empty_bytes, rk, 1, 0, &props, b),
                         "task-pub: publishing a task");
            cf->published++;
        }
        rx_next(c, &m, NULL);
        take_confirm(cf, &m);
        amqp_maybe_release_buffers(c);
    }
}

int
raw_task_pub(const bench_args_t *a)
{
    confirms_t cf = {.low = 1, .window = a->window > 0 ? (uint64_t) a->window : 0};
    char queue[RAW_NAME_MAX];
    bench_span_t span;
    if (cf.window == 0)
        bench_die("task-pub: needs a window >= 1");
    if (snprintf(queue, sizeof queue, "q.requests.%s.work", a->name) >= RAW_NAME_MAX)
        bench_die("name '%s' too long", a->name);
    cf.done = calloc(cf.window, 1);
    if (cf.done == NULL)
        bench_die("out of memory");
    if (a->headers)
        ids_seed();
    conn_t c = raw_connect(a->uri);
    amqp_confirm_select(c, RAW_CH);
    check_rpc(c, "confirm.select");
    bench_span_start(&span);
    publish_tasks(c, a, &cf, queue);
    bench_span_report(&span, a->warmup + a->n, "");
    free(cf.done);
    raw_close(c);
    return 0;
}
