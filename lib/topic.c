/*
 * Topics: RabbitMQ streams named s.topic.<topic> (our own names, PROTOCOL.md
 * 9: nothing a protocol-only peer sees changes). mm_topic_declare declares
 * the stream with its retention, mm_topic_publish appends a record through
 * the outbox (default exchange, mandatory, persistent, always confirmed, the
 * event type in the AMQP type property), mm_topic_delete removes it. The
 * first publish to a topic checks that it exists, with a passive declare on
 * a throwaway channel, and remembers it: a stream nobody declared would
 * otherwise only show as a returned message.
 *
 * This file is also the topics module (lib/modules.c): attached on the first
 * topic call, it passes the connection's up, quiesce, down and destroy on to
 * the readers (lib/reader.c).
 */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "publish.h"
#include "reader.h"

/* ---- the module ---- */

static void
on_up(mm_t *mm, void *state)
{
    (void) mm;
    mmi_readers_up(state);
}

static void
on_quiesce(mm_t *mm, void *state)
{
    (void) mm;
    mmi_readers_quiesce(state);
}

static void
on_down(mm_t *mm, void *state)
{
    (void) mm;
    mmi_readers_down(state);
}

static void
on_destroy(mm_t *mm, void *state)
{
    struct mmi_topics *t = state;
    (void) mm;
    mmi_readers_destroy(t);
    mmi_rlock_orphan(t);
    for (size_t i = 0; i < t->nknown; i++)
        free(t->known[i]);
    free(t->known);
    free(t);
}

/* The module's state is found by its hooks: the core keeps no field for it. */
struct mmi_topics *
mmi_topics_get(mm_t *mm)
{
    for (int i = 0; i < mm->nmodules; i++)
        if (mm->modules[i].destroy == on_destroy)
            return mm->modules[i].state;
    struct mmi_topics *t = calloc(1, sizeof *t);
    if (t == NULL)
        return NULL;
    t->mm = mm;
    mmi_hooks_t h = {
        .up = on_up, .down = on_down, .destroy = on_destroy, .quiesce = on_quiesce, .state = t};
    if (mmi_module_add(mm, &h) != MM_OK) {
        free(t);
        return NULL;
    }
    return t;
}

/* ---- topics seen to exist ---- */

static bool
known(const struct mmi_topics *t, const char *topic)
{
    for (size_t i = 0; i < t->nknown; i++)
        if (strcmp(t->known[i], topic) == 0)
            return true;
    return false;
}

/* Remembering is an optimisation: out of memory, the next publish checks again. */
static void
remember(struct mmi_topics *t, const char *topic)
{
    if (known(t, topic))
        return;
    if (t->nknown == t->capknown) {
        size_t cap = t->capknown ? 2 * t->capknown : 8;
        char **k = realloc(t->known, cap * sizeof *k);
        if (k == NULL)
            return;
        t->known = k;
        t->capknown = cap;
    }
    char *s = strdup(topic);
    if (s != NULL)
        t->known[t->nknown++] = s;
}

static void
forget(struct mmi_topics *t, const char *topic)
{
    for (size_t i = 0; i < t->nknown; i++)
        if (strcmp(t->known[i], topic) == 0) {
            free(t->known[i]);
            t->known[i] = t->known[--t->nknown];
            return;
        }
}

char *
mmi_stream_queue(char *out, size_t cap, const char *topic)
{
    snprintf(out, cap, MMI_STREAM_PREFIX "%s", topic);
    return out;
}

int
mmi_topic_check(mm_t *mm, const char *topic)
{
    char queue[MMI_AMQP_NAME_MAX + 1];
    int rc = mmi_queue_stat(mm, mmi_stream_queue(queue, sizeof queue, topic), NULL);
    if (rc == MM_ENOENT)
        return mmi_fail(mm, MM_ENOENT,
                        "topic '%s' does not exist: declare it with mm_topic_declare()", topic);
    struct mmi_topics *t = mmi_topics_get(mm);
    if (rc == MM_OK && t != NULL)
        remember(t, topic);
    return rc;
}

/* ---- declare and delete ---- */

static const mmi_chan_ops_t PROBE_OPS = {.quiet = true};

/* A usable, connected instance, a valid topic name, the module attached. */
static int
topic_call(mm_t *mm, const char *topic)
{
    int rc = mmi_check_usable(mm);
    if (rc == MM_OK)
        rc = mmi_check_name(mm, "topic", topic, 0);
    if (rc == MM_OK && mm->state != MMI_CONNECTED)
        rc = mmi_fail(mm, MM_ENOTCONN, "not connected");
    if (rc == MM_OK && mmi_topics_get(mm) == NULL)
        rc = mmi_fail(mm, MM_ENOMEM, "out of memory");
    return rc;
}

static int
load_topic_opts(mm_t *mm, const mm_topic_opts_t *opts, mm_topic_opts_t *o)
{
    *o = (mm_topic_opts_t) MM_TOPIC_OPTS_INIT;
    if (opts == NULL)
        return MM_OK;
    if (opts->size < offsetof(mm_topic_opts_t, max_age_s) + sizeof opts->max_age_s)
        return mmi_fail(mm, MM_EINVAL, "topic options not set up with MM_TOPIC_OPTS_INIT");
    memcpy(o, opts, opts->size < sizeof *o ? opts->size : sizeof *o);
    if (o->max_bytes > (uint64_t) INT64_MAX)
        return mmi_fail(mm, MM_EINVAL, "max_bytes beyond a signed 64-bit integer");
    return MM_OK;
}

static amqp_table_entry_t
arg_str(const char *key, const char *v)
{
    return (amqp_table_entry_t){
        .key = amqp_cstring_bytes(key),
        .value = {.kind = AMQP_FIELD_KIND_UTF8, .value.bytes = amqp_cstring_bytes(v)}};
}

static amqp_table_entry_t
arg_i64(const char *key, int64_t v)
{
    return (amqp_table_entry_t){.key = amqp_cstring_bytes(key),
                                .value = {.kind = AMQP_FIELD_KIND_I64, .value.i64 = v}};
}

/* The stream's arguments; x-max-age is a string with a unit ("3600s"). */
static amqp_table_t
stream_args(const mm_topic_opts_t *o, amqp_table_entry_t e[4], char age[32])
{
    int n = 0;
    e[n++] = arg_str("x-queue-type", "stream");
    if (o->max_age_s != 0) {
        snprintf(age, 32, "%llus", (unsigned long long) o->max_age_s);
        e[n++] = arg_str("x-max-age", age);
    }
    if (o->max_bytes != 0)
        e[n++] = arg_i64("x-max-length-bytes", (int64_t) o->max_bytes);
    if (o->segment_bytes != 0)
        e[n++] = arg_i64("x-stream-max-segment-size-bytes", o->segment_bytes);
    return (amqp_table_t){n, e};
}

int
mm_topic_declare(mm_t *mm, const char *topic, const mm_topic_opts_t *opts)
{
    if (mm == NULL)
        return MM_EINVAL;
    mm_topic_opts_t o;
    int rc = topic_call(mm, topic);
    if (rc == MM_OK)
        rc = load_topic_opts(mm, opts, &o);
    uint16_t ch = 0;
    if (rc == MM_OK)
        rc = mmi_chan_open(mm, &PROBE_OPS, NULL, &ch);
    if (rc != MM_OK)
        return rc;
    char queue[MMI_AMQP_NAME_MAX + 1], age[32];
    amqp_table_entry_t e[4];
    amqp_table_t args = stream_args(&o, e, age);
    rc = mmi_queue_declare(mm, ch, mmi_stream_queue(queue, sizeof queue, topic), MMI_Q_DURABLE,
                           &args, NULL);
    if (mmi_chan_is_open(mm, ch))
        mmi_chan_close(mm, ch);
    if (rc == MM_ECHANNEL) { /* 406: declared before with other arguments, or refused */
        char why[MMI_ERRBUF];
        snprintf(why, sizeof why, "%s", mm->last_error);
        if (strstr(why, "inequivalent") != NULL)
            return mmi_fail(mm, MM_EBROKER, "topic '%s' exists with other options: %s", topic, why);
        return mmi_fail(mm, MM_EBROKER, "topic '%s' refused by the broker: %s", topic, why);
    }
    if (rc == MM_OK)
        remember(mmi_topics_get(mm), topic);
    return rc;
}

int
mm_topic_delete(mm_t *mm, const char *topic)
{
    if (mm == NULL)
        return MM_EINVAL;
    int rc = topic_call(mm, topic);
    if (rc == MM_OK)
        rc = mmi_topic_check(mm, topic); /* deleting a missing queue would succeed silently */
    uint16_t ch = 0;
    if (rc == MM_OK)
        rc = mmi_chan_open(mm, &PROBE_OPS, NULL, &ch);
    if (rc != MM_OK)
        return rc;
    char queue[MMI_AMQP_NAME_MAX + 1];
    rc = mmi_queue_delete(mm, ch, mmi_stream_queue(queue, sizeof queue, topic));
    if (mmi_chan_is_open(mm, ch))
        mmi_chan_close(mm, ch);
    forget(mmi_topics_get(mm), topic);
    return rc;
}

/* ---- publish ---- */

/* Connected: the topic must exist (checked once). Reconnecting: buffered
 * unchecked; the mandatory flag still makes a missing stream visible. */
static int
publish_check(mm_t *mm, const char *topic, const char *type)
{
    int rc = mmi_check_usable(mm);
    if (rc == MM_OK)
        rc = mmi_check_name(mm, "topic", topic, 0);
    if (rc == MM_OK && type != NULL)
        rc = mmi_check_name(mm, "type", type, 0);
    if (rc != MM_OK)
        return rc;
    if (mm->state == MMI_IDLE)
        return mmi_fail(mm, MM_ENOTCONN, "not connected");
    struct mmi_topics *t = mmi_topics_get(mm);
    if (t == NULL)
        return mmi_fail(mm, MM_ENOMEM, "out of memory");
    if (mm->state == MMI_CONNECTED && !known(t, topic))
        return mmi_topic_check(mm, topic);
    return MM_OK;
}

int
mm_topic_publish(mm_t *mm, const char *topic, const char *type, const void *body, size_t len,
                 const mm_send_opts_t *opts)
{
    if (mm == NULL)
        return MM_EINVAL;
    mm_send_opts_t o;
    int rc = mmi_send_load_opts(mm, opts, &o);
    if (rc == MM_OK)
        rc = publish_check(mm, topic, type);
    if (rc != MM_OK)
        return rc;
    char queue[MMI_AMQP_NAME_MAX + 1];
    mmi_hdrs_t h;
    mmi_hdrs_init(&h); /* an empty __mms, as an event's */
    mmi_pub_t p = {.exchange = "",
                   .routing_key = mmi_stream_queue(queue, sizeof queue, topic),
                   .mandatory = true,
                   .persistent = true,
                   .type = type,
                   .out_flags = MMI_OUT_BUFFER | MMI_OUT_CONFIRM,
                   .done = o.on_sent,
                   .done_ud = o.sent_ud};
    return mmi_send_one(mm, &h, &o, NULL, &p, body, len);
}
