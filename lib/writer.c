/*
 * The frames we write ourselves: publishes, acks and nacks.
 *
 * rabbitmq-c writes a publish as three send() calls (method, header, body)
 * and an ack as one, each at once. We encode the same frames with
 * rabbitmq-c's encoders into one buffer and write it with one send() when
 * the callback that produced them returns: a reply and its ack, or the
 * answers to a batch of requests read in one go, leave in one system call
 * (bench/RESULTS.md has the figures). A send made outside our callbacks is
 * written at once.
 *
 * rabbitmq-c still writes the synchronous methods and heartbeats, so the
 * buffer is written out before any call that lets it write (mmi_writer_flush
 * from lib/amqp_ops.c and the few direct amqp_send_method calls), and every
 * flush writes whole frames to the end: no frame of ours is ever cut by one
 * of its. Over TLS the socket is rabbitmq-c's to drive: sends take its path.
 */
#include <errno.h>
#include <poll.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>

#include "internal.h"

#define FRAME_OVERHEAD 8       /* type, channel, size ... frame-end */
#define FLUSH_AT (16u * 1024u) /* written at once beyond this */
#define KEEP_CAP (64u * 1024u) /* a buffer grown past this is given back after a flush */
#define HOLD_MS 2              /* the longest a frame waits inside a long drain */

void
mmi_writer_start(mm_t *mm)
{
    mm->wr_len = 0;
    mm->wr_fd = mm->uri.tls ? -1 : amqp_get_sockfd(mm->conn);
}

void
mmi_writer_stop(mm_t *mm)
{
    mm->wr_len = 0; /* frames for a dead connection: their owners learn of the loss */
    mm->wr_fd = -1;
}

void
mmi_writer_free(mm_t *mm)
{
    free(mm->wr_buf);
    mm->wr_buf = NULL;
    mm->wr_len = mm->wr_cap = 0;
}

static int
reserve(mm_t *mm, size_t more)
{
    if (mm->wr_cap - mm->wr_len >= more)
        return MM_OK;
    size_t cap = mm->wr_cap ? mm->wr_cap : 4096;
    while (cap - mm->wr_len < more)
        cap *= 2;
    uint8_t *b = realloc(mm->wr_buf, cap);
    if (b == NULL)
        return MM_ENOMEM;
    mm->wr_buf = b;
    mm->wr_cap = cap;
    return MM_OK;
}

static void
put_head(uint8_t *p, uint8_t type, uint16_t ch, uint32_t size)
{
    p[0] = type;
    p[1] = (uint8_t) (ch >> 8);
    p[2] = (uint8_t) ch;
    for (int i = 0; i < 4; i++)
        p[3 + i] = (uint8_t) (size >> (24 - 8 * i));
}

static void
put_u16(uint8_t *p, uint16_t v)
{
    p[0] = (uint8_t) (v >> 8);
    p[1] = (uint8_t) v;
}

static void
put_u64(uint8_t *p, uint64_t v)
{
    for (int i = 0; i < 8; i++)
        p[i] = (uint8_t) (v >> (56 - 8 * i));
}

/* Frames whose payload an encoder writes: a method (kind 1) or a content
 * header (kind 2). The buffer grows until the encoder fits, up to frame_max. */
static int
put_encoded(mm_t *mm, uint8_t kind, uint16_t ch, uint32_t id, void *decoded, uint64_t body_len)
{
    size_t fixed = kind == AMQP_FRAME_METHOD ? 4 : 12,
           limit = (size_t) amqp_get_frame_max(mm->conn);
    for (size_t room = 512;; room *= 2) {
        if (reserve(mm, FRAME_OVERHEAD + fixed + room) != MM_OK)
            return MM_ENOMEM;
        uint8_t *p = mm->wr_buf + mm->wr_len + 7;
        amqp_bytes_t out = {room, p + fixed};
        int n = kind == AMQP_FRAME_METHOD ? amqp_encode_method(id, decoded, out)
                                          : amqp_encode_properties((uint16_t) id, decoded, out);
        if (n >= 0) {
            if (kind == AMQP_FRAME_METHOD) {
                put_u16(p, (uint16_t) (id >> 16));
                put_u16(p + 2, (uint16_t) id);
            } else {
                put_u16(p, (uint16_t) id);
                put_u16(p + 2, 0); /* weight */
                put_u64(p + 4, body_len);
            }
            put_head(p - 7, kind, ch, (uint32_t) (fixed + (size_t) n));
            p[fixed + (size_t) n] = AMQP_FRAME_END;
            mm->wr_len += FRAME_OVERHEAD + fixed + (size_t) n;
            return MM_OK;
        }
        if (room >= limit)
            return MM_ETOOBIG;
    }
}

static int
put_body(mm_t *mm, uint16_t ch, amqp_bytes_t body)
{
    size_t max = (size_t) amqp_get_frame_max(mm->conn) - FRAME_OVERHEAD;
    const uint8_t *src = body.bytes;
    for (size_t off = 0; off < body.len; off += max) {
        size_t n = body.len - off < max ? body.len - off : max;
        if (reserve(mm, n + FRAME_OVERHEAD) != MM_OK)
            return MM_ENOMEM;
        uint8_t *p = mm->wr_buf + mm->wr_len;
        put_head(p, AMQP_FRAME_BODY, ch, (uint32_t) n);
        memcpy(p + 7, src + off, n);
        p[7 + n] = AMQP_FRAME_END;
        mm->wr_len += n + FRAME_OVERHEAD;
    }
    return MM_OK;
}

/* Whole buffer to the socket; waits for room (the broker reading) at most the
 * RPC timeout at a time, as a synchronous method would. 0 or an errno. */
static int
write_all(mm_t *mm)
{
    size_t off = 0;
    while (off < mm->wr_len) {
        ssize_t n = send(mm->wr_fd, mm->wr_buf + off, mm->wr_len - off, MSG_NOSIGNAL);
        if (n > 0) {
            off += (size_t) n;
            continue;
        }
        if (n < 0 && errno == EINTR)
            continue;
        if (n == 0 || (errno != EAGAIN && errno != EWOULDBLOCK))
            return n == 0 ? EPIPE : errno;
        struct pollfd pfd = {.fd = mm->wr_fd, .events = POLLOUT};
        int r = poll(&pfd, 1, (int) mm->opts.rpc_timeout_ms);
        if (r == 0)
            return ETIMEDOUT;
        if (r < 0 && errno != EINTR)
            return errno;
    }
    return 0;
}

int
mmi_writer_flush(mm_t *mm)
{
    if (mm->wr_len == 0 || mm->wr_fd < 0)
        return MM_OK;
    int err = write_all(mm);
    mm->wr_len = 0;
    if (mm->wr_cap > KEEP_CAP) { /* one big message: do not keep its room */
        free(mm->wr_buf);
        mm->wr_buf = NULL;
        mm->wr_cap = 0;
    }
    if (err == 0)
        return MM_OK;
    mmi_conn_lost(mm, err == ETIMEDOUT ? MM_ETIMEDOUT : MM_EDISCONNECTED,
                  "writing to the broker: %s", strerror(err));
    return mmi_fail(mm, MM_ENOTCONN, "not connected: the connection died while writing (%s)",
                    strerror(err));
}

bool
mmi_writer_due(const mm_t *mm)
{
    return mm->wr_len > 0 && mmi_now_ms() - mm->wr_since >= HOLD_MS;
}

/* Inside one of our callbacks: written when it returns (mmi_leave). Else
 * now, so that a send made by the application's own code learns at once of a
 * connection found dead (tasks and events are then kept for the reconnect). */
static int
written(mm_t *mm, size_t start)
{
    if (start == 0)
        mm->wr_since = mmi_now_ms();
    if (mm->cb_depth > 0 && mm->wr_len < FLUSH_AT)
        return MM_OK;
    return mmi_writer_flush(mm);
}

static int
put_failed(mm_t *mm, size_t start, int rc)
{
    mm->wr_len = start;
    return mmi_fail(mm, rc, "%s",
                    rc == MM_ETOOBIG ? "the message's properties do not fit in one frame"
                                     : "out of memory");
}

/* A content header whose property list is already encoded. */
static int
put_header_encoded(mm_t *mm, uint16_t ch, amqp_bytes_t props, uint64_t body_len)
{
    size_t payload = 12 + props.len;
    if (payload + FRAME_OVERHEAD > (size_t) amqp_get_frame_max(mm->conn))
        return MM_ETOOBIG;
    if (reserve(mm, payload + FRAME_OVERHEAD) != MM_OK)
        return MM_ENOMEM;
    uint8_t *p = mm->wr_buf + mm->wr_len;
    put_head(p, AMQP_FRAME_HEADER, ch, (uint32_t) payload);
    put_u16(p + 7, AMQP_BASIC_CLASS);
    put_u16(p + 9, 0); /* weight */
    put_u64(p + 11, body_len);
    memcpy(p + 19, props.bytes, props.len);
    p[7 + payload] = AMQP_FRAME_END;
    mm->wr_len += payload + FRAME_OVERHEAD;
    return MM_OK;
}

/* basic.publish, the content header (from `props`, or already `encoded`) and
 * the body frames, all or nothing. */
static int
put_publish(mm_t *mm, uint16_t ch, amqp_basic_publish_t *m, const amqp_basic_properties_t *props,
            const amqp_bytes_t *encoded, amqp_bytes_t body)
{
    size_t start = mm->wr_len;
    amqp_basic_properties_t none = {0};
    void *p = (void *) (props != NULL ? props : &none); /* the encoder only reads it */
    int rc = put_encoded(mm, AMQP_FRAME_METHOD, ch, AMQP_BASIC_PUBLISH_METHOD, m, 0);
    if (rc == MM_OK)
        rc = encoded != NULL
                 ? put_header_encoded(mm, ch, *encoded, body.len)
                 : put_encoded(mm, AMQP_FRAME_HEADER, ch, AMQP_BASIC_CLASS, p, body.len);
    if (rc == MM_OK)
        rc = put_body(mm, ch, body);
    return rc == MM_OK ? written(mm, start) : put_failed(mm, start, rc);
}

int
mmi_writer_publish(mm_t *mm, uint16_t ch, amqp_bytes_t exchange, amqp_bytes_t routing_key,
                   bool mandatory, const amqp_basic_properties_t *props, amqp_bytes_t body)
{
    amqp_basic_publish_t m = {
        .exchange = exchange, .routing_key = routing_key, .mandatory = mandatory};
    return put_publish(mm, ch, &m, props, NULL, body);
}

int
mmi_writer_publish_encoded(mm_t *mm, uint16_t ch, amqp_bytes_t exchange, amqp_bytes_t routing_key,
                           bool mandatory, amqp_bytes_t props, amqp_bytes_t body)
{
    amqp_basic_publish_t m = {
        .exchange = exchange, .routing_key = routing_key, .mandatory = mandatory};
    return put_publish(mm, ch, &m, NULL, &props, body);
}

int
mmi_writer_method(mm_t *mm, uint16_t ch, amqp_method_number_t id, void *decoded)
{
    size_t start = mm->wr_len;
    int rc = put_encoded(mm, AMQP_FRAME_METHOD, ch, id, decoded, 0);
    return rc == MM_OK ? written(mm, start) : put_failed(mm, start, rc);
}
