/*
 * Peers (PROTOCOL.md 6): the module's lifecycle and this instance's side of
 * the protocol. At mm_new it registers its hooks and the internal listener
 * internal.<service> peer.alive.# (no-ack; the core declares it at connect
 * and restores it after reconnects). While connected, a heartbeat timer
 * publishes our peer.alive every heartbeat_ms, drops the peers silent for 4
 * heartbeats and gives election/ its tick; status requests are answered at
 * once; every valid status of our service updates the table, election/'s
 * view (mmi_election_heard) and the status queries waiting for it.
 */
#include <event2/event.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "election.h"
#include "peers_int.h"

#define SILENT_BEATS 4 /* a peer not heard for this many heartbeats is dropped */

/* Drop the peers silent for SILENT_BEATS heartbeats (never ourselves). */
static void
reap(struct mmi_peers *p)
{
    mm_t *mm = p->mm;
    uint64_t now = mmi_now_ms(), limit = (uint64_t) SILENT_BEATS * mm->opts.heartbeat_ms;
    size_t i = 0;
    while (i < p->table.n) {
        mmi_member_t *e = &p->table.v[i];
        if (strcmp(e->id, mm->id) == 0 || now - e->seen_ms < limit) {
            i++;
            continue;
        }
        char id[MMI_PEER_ID_MAX + 1];
        memcpy(id, e->id, sizeof id);
        mmi_members_remove(&p->table, i); /* the last entry moved to i: look at i again */
        mmi_log(mm, MM_LOG_DEBUG, "peers: %s silent for %llu ms, forgotten", id,
                (unsigned long long) limit);
        if (mm->election != NULL)
            mmi_election_forget(mm, id);
    }
}

static void
on_beat(evutil_socket_t fd, short what, void *arg)
{
    struct mmi_peers *p = arg;
    mm_t *mm = p->mm;
    (void) fd;
    (void) what;
    mmi_enter(mm);
    reap(p);
    mmi_alive_publish(p);
    if (++p->beats % 10 == 0)
        mmi_latency_start(p);
    if (mm->election != NULL && mm->state == MMI_CONNECTED && mmi_alive(mm))
        mmi_election_tick(mm);
    mmi_leave(mm);
}

/* A valid status of one of our instances (ourselves included). */
static void
heard(struct mmi_peers *p, mmi_member_t *r)
{
    mm_t *mm = p->mm;
    if (mmi_members_put(&p->table, r) == NULL)
        mmi_log(mm, MM_LOG_DEBUG, "peers: table full (%zu), %s not added", p->table.n, r->id);
    if (mm->election != NULL)
        mmi_election_heard(mm, r->id, r->master, r->leader_id[0] ? r->leader_id : NULL,
                           r->leader_since);
    mmi_status_feed(p, mm->service, r);
}

/* internal.<service> peer.alive.#: statuses and status requests. */
static void
on_internal(mm_msg_t *msg, void *ud)
{
    struct mmi_peers *p = ud;
    mm_t *mm = p->mm;
    if (strcmp(mm_msg_route(msg), p->key_req) == 0) {
        mmi_alive_publish(p);
        return;
    }
    mmi_member_t r;
    if (!mmi_alive_decode(mm, mm_msg_body(msg), mm->service, &r))
        return;
    mmi_alive_extras(msg, &r);
    heard(p, &r);
}

static void
up(mm_t *mm, void *state)
{
    struct mmi_peers *p = state;
    if (!p->active || p->listen == NULL)
        return;
    uint32_t ms = mm->opts.heartbeat_ms;
    struct timeval tv = {.tv_sec = ms / 1000, .tv_usec = (ms % 1000) * 1000};
    event_add(p->beat, &tv); /* a reconnect restarts the period */
    mmi_alive_publish(p);
    mmi_latency_start(p);
}

/* The table stays: peers are forgotten by silence, not by our own outage. */
static void
down(mm_t *mm, void *state)
{
    struct mmi_peers *p = state;
    (void) mm;
    if (p->beat != NULL)
        event_del(p->beat);
    mmi_latency_stop(p);
    mmi_status_down(p);
}

static void
destroy(mm_t *mm, void *state)
{
    struct mmi_peers *p = state;
    mmi_wait_destroy(p);
    mmi_status_destroy(p);
    mmi_latency_destroy(p);
    if (p->beat != NULL)
        event_free(p->beat);
    mmi_members_free(&p->table);
    free(p); /* our routes (listen, latency, watches) are mm's: freed with the others */
    mm->peers = NULL;
}

/* The state and its hooks; after mmi_module_add, destroy() cleans up whatever fails later. */
static struct mmi_peers *
peers_new(mm_t *mm, bool active)
{
    struct mmi_peers *p = calloc(1, sizeof *p);
    if (p == NULL)
        return NULL;
    *p = (struct mmi_peers){.mm = mm, .active = active, .lat = {.avg_ms = -1}};
    mmi_peers_target(p->target, mm->service);
    snprintf(p->key_req, sizeof p->key_req, "%s.peer.alive.req", p->target);
    mmi_hooks_t h = {.up = up, .down = down, .destroy = destroy, .state = p};
    if (mmi_module_add(mm, &h) != MM_OK) {
        free(p);
        return NULL;
    }
    mm->peers = p;
    return p;
}

struct mmi_peers *
mmi_peers_get(mm_t *mm)
{
    return mm->peers != NULL ? mm->peers : peers_new(mm, false);
}

int
mmi_peers_attach(mm_t *mm)
{
    struct mmi_peers *p = peers_new(mm, true);
    if (p == NULL)
        return MM_ENOMEM;
    p->beat = event_new(mm->base, -1, EV_PERSIST, on_beat, p);
    if (p->beat == NULL)
        return MM_ENOMEM;
    /* Private handles: user code cannot stop them, mm_free frees them. */
    int rc = mm_listen(mm, p->target, "peer.alive.#", on_internal, p, NULL, &p->listen);
    if (rc == MM_OK)
        rc = mmi_latency_attach(p);
    if (rc == MM_ENAME) {
        /* "internal.<service>" is longer than a name may be: this instance stays
         * invisible to its peers rather than unusable. */
        mmi_log(mm, MM_LOG_DEBUG, "peers: service name too long for internal.%s", mm->service);
        mmi_clear_error(mm);
        return MM_OK;
    }
    return rc;
}

void
mmi_peers_announce(mm_t *mm)
{
    if (mm->peers != NULL)
        mmi_alive_publish(mm->peers);
}
