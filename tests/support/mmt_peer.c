/* The raw rabbitmq-c peer: see mmt_peer.h. */
#include "mmt_peer.h"

#include <amqp_tcp_socket.h>
#include <check.h>
#include <stdio.h>
#include <string.h>

#include "mmt.h"

static struct timeval
tv_of(int ms)
{
    return (struct timeval){ms / 1000, (ms % 1000) * 1000};
}

void
mmt_peer_open(struct mmt_peer *p)
{
    char buf[512];
    struct amqp_connection_info ci;
    memset(p, 0, sizeof *p);
    snprintf(buf, sizeof buf, "%s", mmt_uri());
    ck_assert_int_eq(amqp_parse_url(buf, &ci), AMQP_STATUS_OK);
    p->c = amqp_new_connection();
    amqp_socket_t *s = amqp_tcp_socket_new(p->c);
    ck_assert_ptr_nonnull(s);
    ck_assert_int_eq(amqp_socket_open(s, ci.host, ci.port), AMQP_STATUS_OK);
    amqp_rpc_reply_t r =
        amqp_login(p->c, ci.vhost, 0, 131072, 0, AMQP_SASL_METHOD_PLAIN, ci.user, ci.password);
    ck_assert_int_eq(r.reply_type, AMQP_RESPONSE_NORMAL);
    amqp_channel_open(p->c, 1);
    mmt_peer_ok(p, "channel.open");
    p->next_ch = 2;
}

bool
mmt_broker_accepts(const char *uri, int timeout_ms)
{
    char buf[512];
    struct amqp_connection_info ci;
    snprintf(buf, sizeof buf, "%s", uri);
    if (amqp_parse_url(buf, &ci) != AMQP_STATUS_OK)
        return false;
    amqp_connection_state_t c = amqp_new_connection();
    amqp_socket_t *s = c != NULL ? amqp_tcp_socket_new(c) : NULL;
    struct timeval tv = tv_of(timeout_ms);
    bool ok = s != NULL && amqp_set_handshake_timeout(c, &tv) == AMQP_STATUS_OK &&
              amqp_set_rpc_timeout(c, &tv) == AMQP_STATUS_OK &&
              amqp_socket_open_noblock(s, ci.host, ci.port, &tv) == AMQP_STATUS_OK;
    ok = ok && amqp_login(c, ci.vhost, 0, 131072, 0, AMQP_SASL_METHOD_PLAIN, ci.user, ci.password)
                       .reply_type == AMQP_RESPONSE_NORMAL;
    ok = ok && amqp_channel_open(c, 1) != NULL;
    if (ok)
        amqp_connection_close(c, AMQP_REPLY_SUCCESS);
    if (c != NULL)
        amqp_destroy_connection(c);
    return ok;
}

void
mmt_peer_close(struct mmt_peer *p)
{
    if (p->c == NULL)
        return;
    if (p->served[0] != '\0')
        amqp_queue_delete(p->c, 1, amqp_cstring_bytes(p->served), 0, 0);
    amqp_connection_close(p->c, AMQP_REPLY_SUCCESS);
    amqp_destroy_connection(p->c);
    p->c = NULL;
}

void
mmt_peer_ok(const struct mmt_peer *p, const char *what)
{
    amqp_rpc_reply_t r = amqp_get_rpc_reply(p->c);
    ck_assert_msg(r.reply_type == AMQP_RESPONSE_NORMAL, "raw peer: %s failed (reply type %d)", what,
                  r.reply_type);
}

uint16_t
mmt_peer_channel(struct mmt_peer *p)
{
    uint16_t ch = p->next_ch++;
    amqp_channel_open(p->c, ch);
    mmt_peer_ok(p, "channel.open");
    return ch;
}

void
mmt_peer_use_confirms(struct mmt_peer *p)
{
    amqp_confirm_select(p->c, 1);
    mmt_peer_ok(p, "confirm.select");
    p->confirms = true;
}

void
mmt_peer_confirmed(struct mmt_peer *p, int timeout_ms)
{
    ck_assert(p->confirms);
    while (p->confirmed < p->published) {
        amqp_frame_t f;
        struct timeval tv = tv_of(timeout_ms);
        int st = amqp_simple_wait_frame_noblock(p->c, &f, &tv);
        ck_assert_msg(st == AMQP_STATUS_OK, "raw peer: no confirm: %s", amqp_error_string2(st));
        if (f.frame_type != AMQP_FRAME_METHOD)
            continue;
        ck_assert_msg(f.payload.method.id == AMQP_BASIC_ACK_METHOD, "raw peer: method 0x%08x",
                      f.payload.method.id);
        amqp_basic_ack_t *a = f.payload.method.decoded;
        p->confirmed = a->multiple ? a->delivery_tag : p->confirmed + 1;
    }
}

const char *
mmt_request_queue(char *buf, size_t len, const char *service, const char *route)
{
    snprintf(buf, len, "q.requests.%s.%s", service, route);
    return buf;
}

void
mmt_peer_reply_queue(struct mmt_peer *p)
{
    amqp_queue_declare_ok_t *ok =
        amqp_queue_declare(p->c, 1, amqp_empty_bytes, 0, 0, 1, 1, amqp_empty_table);
    mmt_peer_ok(p, "queue.declare (reply queue)");
    snprintf(p->reply, sizeof p->reply, "%.*s", (int) ok->queue.len, (char *) ok->queue.bytes);
    amqp_basic_consume(p->c, 1, amqp_cstring_bytes(p->reply), amqp_empty_bytes, 0, 1, 1,
                       amqp_empty_table);
    mmt_peer_ok(p, "basic.consume (reply queue)");
}

void
mmt_peer_serve(struct mmt_peer *p, const char *service, const char *route)
{
    mmt_request_queue(p->served, sizeof p->served, service, route);
    struct mmt_table args = {0};
    mmt_table_i32(&args, "x-expires", MMT_REQUEST_QUEUE_EXPIRES);
    amqp_queue_declare(p->c, 1, amqp_cstring_bytes(p->served), 0, 1, 0, 0, mmt_table_of(&args));
    mmt_peer_ok(p, "queue.declare (request queue)");
    amqp_basic_consume(p->c, 1, amqp_cstring_bytes(p->served), amqp_empty_bytes, 0, 1, 0,
                       amqp_empty_table);
    mmt_peer_ok(p, "basic.consume (request queue)");
}

bool
mmt_peer_read(struct mmt_peer *p, int timeout_ms, amqp_envelope_t *env)
{
    struct timeval tv = tv_of(timeout_ms);
    amqp_maybe_release_buffers(p->c);
    return amqp_consume_message(p->c, env, &tv, 0).reply_type == AMQP_RESPONSE_NORMAL;
}

static void
copy_bytes(char *dst, size_t n, amqp_bytes_t b)
{
    snprintf(dst, n, "%.*s", (int) b.len, (const char *) b.bytes);
}

void
mmt_peer_take(struct mmt_peer *p, int timeout_ms, struct mmt_peer_req *q)
{
    amqp_envelope_t env;
    ck_assert_msg(mmt_peer_read(p, timeout_ms, &env), "the peer got no request");
    const amqp_basic_properties_t *rp = &env.message.properties;
    ck_assert(rp->_flags & AMQP_BASIC_CORRELATION_ID_FLAG);
    ck_assert(rp->_flags & AMQP_BASIC_REPLY_TO_FLAG);
    copy_bytes(q->corr, sizeof q->corr, rp->correlation_id);
    copy_bytes(q->reply_to, sizeof q->reply_to, rp->reply_to);
    amqp_destroy_envelope(&env);
}

/* ---- tables ---- */

/* A new entry `key` of this kind; its value is the caller's to set. */
static amqp_field_value_t *
table_add(struct mmt_table *t, const char *key, uint8_t kind)
{
    ck_assert_int_lt(t->n, MMT_TABLE_MAX);
    amqp_table_entry_t *e = &t->e[t->n++];
    e->key = amqp_cstring_bytes(key);
    e->value.kind = kind;
    return &e->value;
}

void
mmt_table_str(struct mmt_table *t, const char *key, const char *val)
{
    table_add(t, key, AMQP_FIELD_KIND_UTF8)->value.bytes = amqp_cstring_bytes(val);
}

void
mmt_table_i32(struct mmt_table *t, const char *key, int32_t val)
{
    table_add(t, key, AMQP_FIELD_KIND_I32)->value.i32 = val;
}

void
mmt_table_i64(struct mmt_table *t, const char *key, int64_t val)
{
    table_add(t, key, AMQP_FIELD_KIND_I64)->value.i64 = val;
}

void
mmt_table_bool(struct mmt_table *t, const char *key, bool val)
{
    table_add(t, key, AMQP_FIELD_KIND_BOOLEAN)->value.boolean = val;
}

void
mmt_table_table(struct mmt_table *t, const char *key, const struct mmt_table *val)
{
    table_add(t, key, AMQP_FIELD_KIND_TABLE)->value.table = mmt_table_of(val);
}

amqp_table_t
mmt_table_of(const struct mmt_table *t)
{
    return (amqp_table_t){t->n, (amqp_table_entry_t *) t->e};
}

/* ---- publishing ---- */

static void
set_str(amqp_basic_properties_t *bp, amqp_flags_t flag, amqp_bytes_t *field, const char *val)
{
    if (val == NULL)
        return;
    bp->_flags |= flag;
    *field = amqp_cstring_bytes(val);
}

static amqp_basic_properties_t
props_of(const struct mmt_props *o)
{
    amqp_basic_properties_t bp = {0};
    set_str(&bp, AMQP_BASIC_CONTENT_TYPE_FLAG, &bp.content_type, o->content_type);
    set_str(&bp, AMQP_BASIC_CONTENT_ENCODING_FLAG, &bp.content_encoding, o->content_encoding);
    set_str(&bp, AMQP_BASIC_CORRELATION_ID_FLAG, &bp.correlation_id, o->correlation_id);
    set_str(&bp, AMQP_BASIC_REPLY_TO_FLAG, &bp.reply_to, o->reply_to);
    if (o->headers != NULL) {
        bp._flags |= AMQP_BASIC_HEADERS_FLAG;
        bp.headers = mmt_table_of(o->headers);
    }
    return bp;
}

void
mmt_peer_publish(struct mmt_peer *p, const char *routing_key, const struct mmt_props *props,
                 amqp_bytes_t body)
{
    amqp_basic_properties_t bp = props_of(props);
    int st = amqp_basic_publish(p->c, 1, amqp_empty_bytes, amqp_cstring_bytes(routing_key),
                                p->confirms, 0, &bp, body);
    ck_assert_msg(st == AMQP_STATUS_OK, "raw publish: %s", amqp_error_string2(st));
    p->published++;
}

void
mmt_peer_answer(struct mmt_peer *p, const struct mmt_answer *a)
{
    struct mmt_table mms = {0}, h = {0};
    mmt_table_bool(&mms, "isError", false);
    mmt_table_bool(&mms, "isEnd", a->end);
    if (a->stream)
        mmt_table_bool(&mms, "isStream", true);
    mmt_table_i64(&mms, "sequence", a->sequence);
    mmt_table_table(&h, "__mms", &mms);
    struct mmt_props props = {
        .content_type = a->content_type ? a->content_type : "application/msgpack",
        .correlation_id = a->correlation_id,
        .headers = &h,
    };
    mmt_peer_publish(p, a->to, &props, a->body);
}
