/*
 * The broker latency probe (PROTOCOL.md 6): a round of PROBE_SAMPLES small
 * events {"sample": n, "sentAt": [seconds, nanoseconds]} to ourselves on
 * internal.<service> latency.<uuid>, one after the other (the next leaves
 * when the previous is back), averaged into mm_broker_latency_ms(). A round
 * at every connect and every 10 heartbeats. Only we read these samples:
 * sentAt is our monotonic clock. The listener is ours for the instance's
 * life (declared and restored by the core with the other routes) rather
 * than declared for each round: a round then costs 5 small messages and no
 * broker round trip of queue declares.
 */
#include <event2/event.h>
#include <stdio.h>
#include <string.h>
#include <time.h>

#include "peers_int.h"

#define PROBE_SAMPLES 5
#define PROBE_GIVE_UP_MS 5000 /* a round whose samples stop coming back is abandoned */

static double
mono_ms(const struct timespec *ts)
{
    return (double) ts->tv_sec * 1e3 + (double) ts->tv_nsec / 1e6;
}

static void
send_sample(struct mmi_peers *p, unsigned n)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    msgpack_sbuffer out;
    msgpack_sbuffer_init(&out);
    msgpack_packer pk;
    msgpack_packer_init(&pk, &out, msgpack_sbuffer_write);
    msgpack_pack_map(&pk, 2);
    msgpack_pack_str_with_body(&pk, "sample", 6);
    msgpack_pack_unsigned_int(&pk, n);
    msgpack_pack_str_with_body(&pk, "sentAt", 6);
    msgpack_pack_array(&pk, 2);
    msgpack_pack_int64(&pk, (int64_t) ts.tv_sec);
    msgpack_pack_long(&pk, ts.tv_nsec);
    if (out.data == NULL ||
        mmi_peers_send_quiet(p->mm, p->target, p->lat.route_name, out.data, out.size) != MM_OK)
        p->lat.next = 0; /* this round is over; the next one comes in 10 heartbeats */
    msgpack_sbuffer_destroy(&out);
}

/* The round trip of a sample of the current round, in ms; < 0 when not one. */
static double
round_trip(const struct mmi_peers *p, const msgpack_object *o)
{
    const msgpack_object *sample = NULL, *sent = NULL;
    for (uint32_t i = 0; o->type == MSGPACK_OBJECT_MAP && i < o->via.map.size; i++) {
        const msgpack_object_kv *kv = &o->via.map.ptr[i];
        if (kv->key.type != MSGPACK_OBJECT_STR || kv->key.via.str.size != 6)
            continue;
        if (memcmp(kv->key.via.str.ptr, "sample", 6) == 0)
            sample = &kv->val;
        else if (memcmp(kv->key.via.str.ptr, "sentAt", 6) == 0)
            sent = &kv->val;
    }
    if (sample == NULL || sample->type != MSGPACK_OBJECT_POSITIVE_INTEGER ||
        sample->via.u64 != p->lat.next || sent == NULL || sent->type != MSGPACK_OBJECT_ARRAY ||
        sent->via.array.size != 2)
        return -1;
    const msgpack_object *s = &sent->via.array.ptr[0], *ns = &sent->via.array.ptr[1];
    if (s->type != MSGPACK_OBJECT_POSITIVE_INTEGER || ns->type != MSGPACK_OBJECT_POSITIVE_INTEGER)
        return -1;
    struct timespec then = {.tv_sec = (time_t) s->via.u64, .tv_nsec = (long) ns->via.u64}, now;
    clock_gettime(CLOCK_MONOTONIC, &now);
    return mono_ms(&now) - mono_ms(&then);
}

static void
on_sample(mm_msg_t *msg, void *ud)
{
    struct mmi_peers *p = ud;
    struct mmi_latency *l = &p->lat;
    if (l->next == 0)
        return; /* from an abandoned round */
    double rtt = round_trip(p, mm_msg_body(msg));
    if (rtt < 0 || rtt > PROBE_GIVE_UP_MS)
        return;
    l->sum_ms += rtt;
    l->got++;
    if (l->got < PROBE_SAMPLES) {
        send_sample(p, ++l->next);
        return;
    }
    l->avg_ms = l->sum_ms / l->got;
    l->next = 0;
    event_del(l->timeout);
    mmi_log(p->mm, MM_LOG_DEBUG, "peers: broker round trip %.3f ms (%d samples)", l->avg_ms,
            PROBE_SAMPLES);
}

static void
on_give_up(evutil_socket_t fd, short what, void *arg)
{
    struct mmi_peers *p = arg;
    (void) fd;
    (void) what;
    p->lat.next = 0;
}

int
mmi_latency_attach(struct mmi_peers *p)
{
    mm_t *mm = p->mm;
    char uuid[37];
    mmi_make_id(mm, uuid);
    snprintf(p->lat.route_name, sizeof p->lat.route_name, "latency.%s", uuid);
    p->lat.timeout = evtimer_new(mm->base, on_give_up, p);
    if (p->lat.timeout == NULL)
        return MM_ENOMEM;
    return mm_listen(mm, p->target, p->lat.route_name, on_sample, p, NULL, &p->lat.route);
}

void
mmi_latency_start(struct mmi_peers *p)
{
    struct mmi_latency *l = &p->lat;
    if (l->route == NULL || l->next != 0 || p->mm->state != MMI_CONNECTED)
        return;
    l->got = 0;
    l->sum_ms = 0;
    l->next = 1;
    struct timeval tv = {.tv_sec = PROBE_GIVE_UP_MS / 1000};
    event_add(l->timeout, &tv);
    send_sample(p, 1);
}

void
mmi_latency_stop(struct mmi_peers *p)
{
    p->lat.next = 0;
    if (p->lat.timeout != NULL)
        event_del(p->lat.timeout);
}

void
mmi_latency_destroy(struct mmi_peers *p)
{
    if (p->lat.timeout != NULL)
        event_free(p->lat.timeout);
    p->lat.timeout = NULL;
}

uint64_t
mmi_latency_wait_ms(const mm_t *mm)
{
    double lat = mm->peers != NULL ? mm->peers->lat.avg_ms : -1;
    return lat * 6 > 1000 ? (uint64_t) (lat * 6) : 1000;
}

double
mm_broker_latency_ms(const mm_t *mm)
{
    return mm != NULL && mm->peers != NULL ? mm->peers->lat.avg_ms : -1;
}
