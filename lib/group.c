/*
 * Group subscriptions: the instances of a service listening in one group
 * share a durable queue q.group.<service>.<group> (our own name, PROTOCOL.md
 * 9), bound on x.pubSub with every route listened in the group, so that an
 * event is handled once per group and waits while the whole group is down.
 * Each group route consumes the shared queue; a delivery goes to the route
 * of this instance whose binding key matches the event's routing key (AMQP
 * topic matching), whichever consumer received it.
 *
 * A copy of a group event sent back to its queue (a counted redelivery,
 * lib/deadletter.c) travels through the default exchange with the queue's
 * name as routing key: it carries the original key in x-mm-routing-key.
 */
#include <stdio.h>
#include <string.h>

#include "headers.h"
#include "publish.h"
#include "route.h"

#define GROUP_PREFIX "q.group."

char *
mmi_group_queue(char *out, size_t cap, const char *service, const char *group)
{
    snprintf(out, cap, "%s%s.%s", GROUP_PREFIX, service, group);
    return out;
}

#define MAX_WORDS 132 /* "<target>.<route>": 2 names of at most 128 bytes */

/* The dot-separated words of s; 0 when there are too many. */
static size_t
split(const char *s, const char **w, size_t *len)
{
    size_t n = 0;
    for (;;) {
        if (n == MAX_WORDS)
            return 0;
        w[n] = s;
        len[n] = strcspn(s, ".");
        s += len[n++];
        if (*s++ == '\0')
            return n;
    }
}

/* AMQP topic matching: "*" is exactly one word, "#" zero or more. m[j]:
 * the pattern's words so far match the key's first j words. */
bool
mmi_topic_match(const char *pattern, const char *key)
{
    const char *pw[MAX_WORDS], *kw[MAX_WORDS];
    size_t pl[MAX_WORDS], kl[MAX_WORDS];
    size_t np = split(pattern, pw, pl), nk = split(key, kw, kl);
    if (np == 0 || nk == 0)
        return false;
    bool m[MAX_WORDS + 1] = {true};
    for (size_t i = 0; i < np; i++) {
        bool hash = pl[i] == 1 && pw[i][0] == '#', star = pl[i] == 1 && pw[i][0] == '*';
        for (size_t j = nk; j > 0; j--) /* right to left: m[j - 1] is still the previous row */
            m[j] = hash
                       ? m[j] || m[j - 1]
                       : m[j - 1] &&
                             (star || (pl[i] == kl[j - 1] && memcmp(pw[i], kw[j - 1], pl[i]) == 0));
        if (hash) /* "#" may take zero words: m[j] || m[j-1] of this row, left to right */
            for (size_t j = 1; j <= nk; j++)
                m[j] = m[j] || m[j - 1];
        m[0] = m[0] && hash;
    }
    return m[nk];
}

int
mmi_group_declare(mm_t *mm, struct mm_route *r)
{
    int rc = mmi_exchange_declare(mm, r->ch, MMI_PUBSUB, "topic", true);
    if (rc == MM_OK)
        rc = mmi_queue_declare(mm, r->ch, r->queue, MMI_Q_DURABLE, NULL, NULL);
    if (rc == MM_OK)
        rc = mmi_queue_bind(mm, r->ch, r->queue, MMI_PUBSUB, r->key);
    return rc;
}

struct mm_route *
mmi_group_route_for(mm_t *mm, struct mm_route *r, const char *routing_key)
{
    if (mmi_topic_match(r->key, routing_key))
        return r;
    for (struct mm_route *o = mm->routes; o != NULL; o = o->next)
        if (o->group != NULL && strcmp(o->group, r->group) == 0 &&
            mmi_topic_match(o->key, routing_key))
            return o;
    return NULL;
}

amqp_bytes_t
mmi_group_routing_key(const mmi_content_t *c)
{
    const amqp_basic_properties_t *p = c->props;
    if (c->exchange.len == 0 && p != NULL && (p->_flags & AMQP_BASIC_HEADERS_FLAG)) {
        amqp_bytes_t k = mmi_header_str(&p->headers, MMI_H_ROUTING_KEY);
        if (k.len > 0)
            return k;
    }
    return c->routing_key;
}

int
mm_group_delete(mm_t *mm, const char *group)
{
    if (mm == NULL)
        return MM_EINVAL;
    int rc = mmi_check_name(mm, "group", group, 0);
    if (rc != MM_OK)
        return rc;
    if (mm->state != MMI_CONNECTED)
        return mmi_fail(mm, MM_ENOTCONN, "not connected");
    char queue[MMI_QUEUE_MAX];
    mmi_group_queue(queue, sizeof queue, mm->service, group);
    rc = mmi_queue_stat(mm, queue, NULL);
    if (rc != MM_OK)
        return rc;
    uint16_t ch = 0;
    static const mmi_chan_ops_t quiet = {.quiet = true};
    rc = mmi_chan_open(mm, &quiet, NULL, &ch);
    if (rc == MM_OK)
        rc = mmi_queue_delete(mm, ch, queue);
    if (ch != 0 && mmi_chan_is_open(mm, ch))
        mmi_chan_close(mm, ch);
    return rc;
}
