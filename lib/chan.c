/*
 * Channels: the table indexed by channel number, open/close, and the
 * per-channel content state machine (method, header, body frames) that turns
 * frames into whole messages for the channel's owner. A single-frame body is
 * handed over in place (it lives in rabbitmq-c's channel pool, which the
 * pump does not release while the message is being assembled); larger
 * bodies are gathered into one buffer. A channel closed by the broker is
 * answered with close-ok and reported; the connection lives on.
 */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "internal.h"

enum phase { IDLE, WANT_HEADER, WANT_BODY };

struct mmi_chan {
    uint16_t id;
    uint32_t gen;
    mmi_chan_ops_t ops;
    void *ud;
    enum phase phase;
    mmi_content_t content;
    uint64_t body_size, body_got;
    char *body_buf; /* only for bodies split over several frames */
};

static struct mmi_chan *
chan_get(const mm_t *mm, uint16_t ch)
{
    return ch < mm->nchans ? mm->chans[ch] : NULL;
}

bool
mmi_chan_is_open(const mm_t *mm, uint16_t ch)
{
    return mm->state == MMI_CONNECTED && chan_get(mm, ch) != NULL;
}

uint32_t
mmi_chan_gen(const mm_t *mm, uint16_t ch)
{
    const struct mmi_chan *c = mm->state == MMI_CONNECTED ? chan_get(mm, ch) : NULL;
    return c != NULL ? c->gen : 0;
}

bool
mmi_chan_busy(const mm_t *mm, uint16_t ch)
{
    const struct mmi_chan *c = chan_get(mm, ch);
    return c != NULL && c->phase != IDLE;
}

static void
chan_forget(mm_t *mm, struct mmi_chan *c)
{
    mm->chans[c->id] = NULL;
    free(c->body_buf);
    free(c);
}

/* Channel numbers go round-robin so that a number is not reused while stale
 * frames of its previous life may still sit in a queue. */
static int
chan_slot(mm_t *mm, uint16_t *ret)
{
    uint32_t max = mm->channel_max ? mm->channel_max : 2047;
    if (mm->nchans < max + 1) {
        struct mmi_chan **t = realloc(mm->chans, (max + 1) * sizeof *t);
        if (t == NULL)
            return MM_ENOMEM;
        memset(t + mm->nchans, 0, (max + 1 - mm->nchans) * sizeof *t);
        mm->chans = t;
        mm->nchans = max + 1;
    }
    for (uint32_t i = 0; i < max; i++) {
        uint16_t id = (uint16_t) (mm->next_chan % max + 1);
        mm->next_chan = id;
        if (mm->chans[id] == NULL) {
            *ret = id;
            return MM_OK;
        }
    }
    return mmi_fail(mm, MM_EBROKER, "all %u channels are in use", max);
}

int
mmi_chan_open(mm_t *mm, const mmi_chan_ops_t *ops, void *ud, uint16_t *ret_ch)
{
    if (mm->state != MMI_CONNECTED)
        return mmi_fail(mm, MM_ENOTCONN, "not connected");
    uint16_t id = 0;
    int rc = chan_slot(mm, &id);
    if (rc != MM_OK)
        return rc;
    struct mmi_chan *c = calloc(1, sizeof *c);
    if (c == NULL)
        return mmi_fail(mm, MM_ENOMEM, "out of memory");
    *c = (struct mmi_chan){
        .id = id, .gen = ++mm->chan_gen, .ops = ops ? *ops : (mmi_chan_ops_t){0}, .ud = ud};
    if (c->gen == 0) /* 0 means "not open": skip it on wrap-around */
        c->gen = ++mm->chan_gen;
    mm->chans[id] = c;
    amqp_channel_open_t req = {0};
    rc = mmi_rpc(mm, id, AMQP_CHANNEL_OPEN_METHOD, &req, AMQP_CHANNEL_OPEN_OK_METHOD, NULL);
    if (rc != MM_OK) {
        if (chan_get(mm, id) == c)
            chan_forget(mm, c);
        return rc;
    }
    *ret_ch = id;
    return MM_OK;
}

int
mmi_chan_close(mm_t *mm, uint16_t ch)
{
    struct mmi_chan *c = chan_get(mm, ch);
    if (c == NULL)
        return mmi_fail(mm, MM_ENOENT, "channel %u is not open", ch);
    amqp_channel_close_t req = {.reply_code = AMQP_REPLY_SUCCESS,
                                .reply_text = amqp_cstring_bytes("bye")};
    int rc = mmi_rpc(mm, ch, AMQP_CHANNEL_CLOSE_METHOD, &req, AMQP_CHANNEL_CLOSE_OK_METHOD, NULL);
    if (chan_get(mm, ch) == c)
        chan_forget(mm, c);
    return rc == MM_ECHANNEL ? MM_OK : rc; /* closed either way */
}

void
mmi_chan_closed_by_broker(mm_t *mm, uint16_t ch, const amqp_channel_close_t *close)
{
    struct mmi_chan *c = chan_get(mm, ch);
    amqp_channel_close_ok_t ok = {0};
    /* Without close-ok the channel number can never be opened again (504).
     * A failed send has reported the connection lost: the owner is told below. */
    if (mm->state == MMI_CONNECTED)
        mmi_send_method(mm, ch, AMQP_CHANNEL_CLOSE_OK_METHOD, &ok);
    char text[MMI_ERRBUF];
    snprintf(text, sizeof text, "broker closed channel %u: %u %.*s", ch, close->reply_code,
             (int) close->reply_text.len, (const char *) close->reply_text.bytes);
    mm->last_close_code = close->reply_code;
    if (c == NULL || !c->ops.quiet)
        mmi_event(mm, MM_EV_CHANNEL_ERROR, MM_ECHANNEL, ch, "%s", text);
    if (c != NULL) {
        mmi_chan_ops_t ops = c->ops;
        void *ud = c->ud;
        chan_forget(mm, c);
        if (ops.on_closed != NULL)
            ops.on_closed(mm, ch, MM_ECHANNEL, text, ud);
    }
}

/* Tell every owner that its channel is gone, and forget all channels. */
void
mmi_chans_fail_all(mm_t *mm, int code, const char *text)
{
    for (uint32_t i = 1; i < mm->nchans; i++) {
        struct mmi_chan *c = mm->chans[i];
        if (c == NULL)
            continue;
        mmi_chan_ops_t ops = c->ops;
        void *ud = c->ud;
        chan_forget(mm, c);
        if (ops.on_closed != NULL)
            ops.on_closed(mm, (uint16_t) i, code, text, ud);
    }
}

void
mmi_chans_free(mm_t *mm)
{
    for (uint32_t i = 1; i < mm->nchans; i++)
        if (mm->chans[i] != NULL)
            chan_forget(mm, mm->chans[i]);
    free(mm->chans);
    mm->chans = NULL;
    mm->nchans = 0;
}

/* ---- content assembly ---- */

static void
content_start(struct mmi_chan *c, const amqp_method_t *m)
{
    mmi_content_t *ct = &c->content;
    *ct = (mmi_content_t){.channel = c->id, .method = m->id};
    if (m->id == AMQP_BASIC_DELIVER_METHOD) {
        const amqp_basic_deliver_t *d = m->decoded;
        ct->delivery_tag = d->delivery_tag;
        ct->redelivered = d->redelivered;
        ct->exchange = d->exchange;
        ct->routing_key = d->routing_key;
        ct->consumer_tag = d->consumer_tag;
    } else if (m->id == AMQP_BASIC_RETURN_METHOD) {
        const amqp_basic_return_t *r = m->decoded;
        ct->reply_code = r->reply_code;
        ct->reply_text = r->reply_text;
        ct->exchange = r->exchange;
        ct->routing_key = r->routing_key;
    } else {
        const amqp_basic_get_ok_t *g = m->decoded;
        ct->delivery_tag = g->delivery_tag;
        ct->redelivered = g->redelivered;
        ct->exchange = g->exchange;
        ct->routing_key = g->routing_key;
    }
    c->phase = WANT_HEADER;
}

/* Hand the message over. The owner may close the channel (or free mm) in its
 * callback, so nothing of `c` is touched afterwards. */
static void
content_done(mm_t *mm, struct mmi_chan *c)
{
    mmi_content_t ct = c->content;
    char *buf = c->body_buf;
    void (*fn)(mm_t *, const mmi_content_t *, void *) = c->ops.on_content;
    void *ud = c->ud;
    c->body_buf = NULL;
    c->phase = IDLE;
    if (fn != NULL)
        fn(mm, &ct, ud);
    else
        mmi_log(mm, MM_LOG_WARN, "message on channel %u with no owner dropped", ct.channel);
    free(buf);
}

static void
content_header(mm_t *mm, struct mmi_chan *c, const amqp_frame_t *f)
{
    c->content.props = f->payload.properties.decoded;
    c->body_size = f->payload.properties.body_size;
    c->body_got = 0;
    c->content.body = (amqp_bytes_t){0, NULL};
    c->content.body_size = c->body_size;
    /* Never allocate for a body we would refuse: its frames are discarded. */
    c->content.oversize = c->body_size > mm->opts.max_body;
    if (c->body_size == 0) {
        content_done(mm, c);
        return;
    }
    c->phase = WANT_BODY;
}

static void
content_body(mm_t *mm, struct mmi_chan *c, const amqp_frame_t *f)
{
    amqp_bytes_t frag = f->payload.body_fragment;
    if (c->body_got + frag.len > c->body_size) {
        mmi_conn_lost(mm, MM_EPROTO, "channel %u: body larger than announced", c->id);
        return;
    }
    if (c->content.oversize) {
        c->body_got += frag.len;
        if (c->body_got == c->body_size)
            content_done(mm, c);
        return;
    }
    if (c->body_got == 0 && frag.len == c->body_size) {
        c->content.body = frag; /* the common case: one frame, no copy */
        c->body_got = frag.len;
        content_done(mm, c);
        return;
    }
    if (c->body_buf == NULL && (c->body_buf = malloc(c->body_size)) == NULL) {
        mmi_conn_lost(mm, MM_ENOMEM, "channel %u: no memory for a %llu-byte body", c->id,
                      (unsigned long long) c->body_size);
        return;
    }
    memcpy(c->body_buf + c->body_got, frag.bytes, frag.len);
    c->body_got += frag.len;
    if (c->body_got == c->body_size) {
        c->content.body = (amqp_bytes_t){c->body_size, c->body_buf};
        content_done(mm, c);
    }
}

static bool
is_content_method(amqp_method_number_t id)
{
    return id == AMQP_BASIC_DELIVER_METHOD || id == AMQP_BASIC_RETURN_METHOD ||
           id == AMQP_BASIC_GET_OK_METHOD;
}

static void
chan_method(mm_t *mm, struct mmi_chan *c, const amqp_method_t *m)
{
    if (m->id == AMQP_CHANNEL_CLOSE_METHOD) {
        mmi_chan_closed_by_broker(mm, c->id, m->decoded);
        return;
    }
    if (c->phase != IDLE) {
        mmi_conn_lost(mm, MM_EPROTO, "channel %u: method 0x%08x inside a message", c->id, m->id);
        return;
    }
    if (is_content_method(m->id))
        content_start(c, m);
    else if (c->ops.on_method != NULL)
        c->ops.on_method(mm, c->id, m, c->ud);
    else
        mmi_log(mm, MM_LOG_DEBUG, "channel %u: ignored method 0x%08x", c->id, m->id);
}

void
mmi_chan_content(mm_t *mm, mmi_content_t *ct)
{
    struct mmi_chan *c = chan_get(mm, ct->channel);
    if (c == NULL) {
        mmi_log(mm, MM_LOG_DEBUG, "message for closed channel %u dropped", ct->channel);
        return;
    }
    /* What content_header decides for framed bodies: a body we would refuse is not handed over. */
    ct->body_size = ct->body.len;
    ct->oversize = ct->body_size > mm->opts.max_body;
    if (ct->oversize)
        ct->body = (amqp_bytes_t){0, NULL};
    if (c->ops.on_content != NULL)
        c->ops.on_content(mm, ct, c->ud);
    else
        mmi_log(mm, MM_LOG_WARN, "message on channel %u with no owner dropped", ct->channel);
}

void
mmi_chan_method(mm_t *mm, uint16_t ch, const amqp_method_t *m)
{
    struct mmi_chan *c = chan_get(mm, ch);
    if (c == NULL)
        mmi_log(mm, MM_LOG_DEBUG, "method 0x%08x for closed channel %u dropped", m->id, ch);
    else
        chan_method(mm, c, m);
}

void
mmi_chan_frame(mm_t *mm, const amqp_frame_t *f)
{
    struct mmi_chan *c = chan_get(mm, f->channel);
    if (c == NULL) {
        /* Frames of a channel closed meanwhile (late deliveries, replies). */
        mmi_log(mm, MM_LOG_DEBUG, "frame type %u for closed channel %u dropped", f->frame_type,
                f->channel);
        return;
    }
    if (f->frame_type == AMQP_FRAME_METHOD)
        chan_method(mm, c, &f->payload.method);
    else if (f->frame_type == AMQP_FRAME_HEADER && c->phase == WANT_HEADER)
        content_header(mm, c, f);
    else if (f->frame_type == AMQP_FRAME_BODY && c->phase == WANT_BODY)
        content_body(mm, c, f);
    else
        mmi_conn_lost(mm, MM_EPROTO, "channel %u: unexpected frame type %u", c->id, f->frame_type);
}
