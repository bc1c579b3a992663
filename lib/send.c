/*
 * Fire-and-forget sends: tasks (to a service's request queue, mandatory, so
 * a task nobody handles comes back as an MM_EV_UNROUTABLE event; persistent
 * and confirmed by default) and events (to x.pubSub with the routing key
 * <target>.<route>). Both are buffered while the connection is away.
 * PROTOCOL.md 2 and 5.
 */
#include <stdio.h>
#include <string.h>

#include "msg.h"
#include "publish.h"

int
mmi_send_load_opts(mm_t *mm, const mm_send_opts_t *opts, mm_send_opts_t *o)
{
    *o = (mm_send_opts_t) MM_SEND_OPTS_INIT;
    if (opts == NULL)
        return MM_OK;
    if (opts->size < offsetof(mm_send_opts_t, request_id) + sizeof(char *))
        return mmi_fail(mm, MM_EINVAL, "send options not set up with MM_SEND_OPTS_INIT");
    memcpy(o, opts, opts->size < sizeof *o ? opts->size : sizeof *o);
    return MM_OK;
}

int
mmi_send_one(mm_t *mm, mmi_hdrs_t *h, const mm_send_opts_t *o, const char *request_id, mmi_pub_t *p,
             const void *body, size_t len)
{
    char err[160] = "";
    mmi_wire_out_t w;
    int codec = (o->flags & MM_SEND_JSON) ? MM_CODEC_JSON : mm->opts.codec;
    int rc = mmi_wire_encode(mm, codec, body, len, &w);
    if (rc == MM_OK)
        rc = mmi_meta_headers(mm, h, mm->handling, o->causation_id, o->traceparent);
    if (rc == MM_OK)
        rc = mmi_meta_check_id(mm, o->message_id);
    if (rc == MM_OK) {
        p->message_id = o->message_id;
        rc = mmi_hdrs_finish(h, request_id, o->headers, o->headers_len, err, sizeof err);
        if (rc != MM_OK)
            rc = mmi_fail(mm, rc, "headers: %s", err);
    }
    if (rc == MM_OK) {
        p->hdrs = h;
        p->body = &w;
        rc = mmi_pub_send(mm, p);
    }
    mmi_hdrs_fini(h);
    mmi_wire_out_free(&w);
    return rc;
}

/* Options loaded, names valid, connected: what every send checks first. */
static int
prepare(mm_t *mm, const mm_send_opts_t *opts, mm_send_opts_t *o, const char *what, const char *name,
        unsigned flags, const char *route)
{
    int rc = mmi_send_load_opts(mm, opts, o);
    if (rc == MM_OK)
        rc = mmi_check_dest(mm, what, name, flags, route);
    if (rc == MM_OK && mm->state == MMI_IDLE)
        rc = mmi_fail(mm, MM_ENOTCONN, "not connected");
    return rc;
}

int
mm_task(mm_t *mm, const char *service, const char *route, const void *body, size_t len,
        const mm_send_opts_t *opts)
{
    if (mm == NULL)
        return MM_EINVAL;
    mm_send_opts_t o;
    int rc = prepare(mm, opts, &o, "service name", service, 0, route);
    if (rc != MM_OK)
        return rc;
    char rid[37], queue[MMI_QUEUE_MAX];
    if (o.request_id == NULL)
        mmi_make_id(mm, rid);
    mmi_request_queue(queue, sizeof queue, service, route);
    mmi_hdrs_t h;
    mmi_hdrs_init(&h);
    mmi_hdrs_mms_str(&h, "route", route);
    mmi_hdrs_mms_bool(&h, "isTask", true);
    mmi_hdrs_mms_int(&h, "iat", mmi_wall_ms());
    bool confirm = !(mm->opts.flags & MM_OPT_NO_CONFIRM_TASKS) || o.on_sent != NULL;
    mmi_pub_t p = {.exchange = "",
                   .routing_key = queue,
                   .mandatory = true,
                   .persistent = !(o.flags & MM_SEND_TRANSIENT),
                   .out_flags = MMI_OUT_BUFFER | (confirm ? MMI_OUT_CONFIRM : 0),
                   .done = o.on_sent,
                   .done_ud = o.sent_ud};
    return mmi_send_one(mm, &h, &o, o.request_id ? o.request_id : rid, &p, body, len);
}

int
mm_emit(mm_t *mm, const char *target, const char *route, const void *body, size_t len,
        const mm_send_opts_t *opts)
{
    if (mm == NULL)
        return MM_EINVAL;
    mm_send_opts_t o;
    const char *to = target ? target : mm->service;
    int rc = prepare(mm, opts, &o, "target", to, MMI_NAME_INTERNAL, route);
    if (rc != MM_OK)
        return rc;
    char key[2 * MMI_NAME_MAX + 2];
    mmi_join(key, sizeof key, to, route);
    mmi_hdrs_t h;
    mmi_hdrs_init(&h); /* an event's __mms is an empty table */
    bool confirm = (mm->opts.flags & MM_OPT_CONFIRM_EVENTS) || (o.flags & MM_SEND_CONFIRM) ||
                   o.on_sent != NULL;
    mmi_pub_t p = {.exchange = MMI_PUBSUB,
                   .routing_key = key,
                   .out_flags = MMI_OUT_BUFFER | (confirm ? MMI_OUT_CONFIRM : 0),
                   .done = o.on_sent,
                   .done_ud = o.sent_ud};
    return mmi_send_one(mm, &h, &o, NULL, &p, body, len);
}
