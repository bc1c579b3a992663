/*
 * Leader election (see election.h): who leads, as this instance knows it,
 * and the decisions of a candidate. The broker's lock decides (lock.c); a
 * candidate tries it when the election token reaches it (lock.c: the
 * fast path, the moment a leader's connection dies) and, as the protocol
 * says, at a heartbeat tick when no leader was heard for election_timeout_ms
 * (the path that replicas knowing only PROTOCOL.md share with us).
 */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "election_int.h"
#include "peers.h"

/* ---- what everyone knows: the leader's id ---- */

static void
set_leader(mm_t *mm, struct mmi_election *e, const char *id)
{
    if (strcmp(e->leader_id, id ? id : "") == 0)
        return; /* the same leader: no event */
    snprintf(e->leader_id, sizeof e->leader_id, "%s", id ? id : "");
    mmi_leader_event(mm, MM_EV_LEADER, MM_OK, id, "leader of '%s': %s", mm->service,
                     id ? id : "none known");
}

/* The leader we follow has not been heard for 1.5 heartbeats. */
static bool
followed_is_stale(const mm_t *mm, const struct mmi_election *e)
{
    return mmi_now_ms() - e->leader_seen_ms > (uint64_t) mm->opts.heartbeat_ms * 3 / 2;
}

void
mmi_election_heard(mm_t *mm, const char *id, bool is_master, const char *leader_id, int64_t since)
{
    struct mmi_election *e = mm->election;
    (void) leader_id; /* whom others follow is their business; claims count */
    if (e == NULL || id == NULL || strcmp(id, mm->id) == 0)
        return; /* our own heartbeats say what we know already */
    if (e->leader) {
        if (is_master) /* we hold the lock: a claim cannot make two leaders */
            mmi_log(mm, MM_LOG_DEBUG, "peer %s claims to lead '%s' while we hold the lock", id,
                    mm->service);
        return;
    }
    bool followed = strcmp(e->leader_id, id) == 0;
    if (!is_master) {
        if (followed) /* it stepped down */
            set_leader(mm, e, NULL);
        return;
    }
    /* Another claimant: believed when we follow nobody, when the one we follow
     * went silent, or when its leadership is newer (x-mm-leader-since, set by
     * micromsg leaders); else a claim without the lock would make followers flip. */
    if (!followed && e->leader_id[0] != '\0' && !followed_is_stale(mm, e) &&
        since <= e->leader_since) {
        mmi_log(mm, MM_LOG_DEBUG, "claim of %s to lead '%s' ignored: %s leads", id, mm->service,
                e->leader_id);
        return;
    }
    e->leader_seen_ms = mmi_now_ms();
    e->leader_since = since;
    set_leader(mm, e, id);
}

void
mmi_election_forget(mm_t *mm, const char *id)
{
    struct mmi_election *e = mm->election;
    if (e != NULL && !e->leader && id != NULL && strcmp(e->leader_id, id) == 0)
        set_leader(mm, e, NULL);
}

bool
mmi_election_is_leader(const mm_t *mm)
{
    return mm->election != NULL && mm->election->leader;
}

const char *
mmi_election_leader_id(const mm_t *mm)
{
    const struct mmi_election *e = mm->election;
    if (e == NULL)
        return NULL;
    return e->leader ? mm->id : e->leader_id[0] ? e->leader_id : NULL;
}

/* ---- a candidate's decisions ---- */

/* No leader heard for the election timeout (or ever): the protocol's moment. */
static bool
leaderless(const mm_t *mm, const struct mmi_election *e)
{
    return e->leader_seen_ms == 0 ||
           mmi_now_ms() - e->leader_seen_ms >= mm->opts.election_timeout_ms;
}

void
mmi_election_tick(mm_t *mm)
{
    struct mmi_election *e = mm->election;
    if (e == NULL || !e->candidate || e->leader || mm->state != MMI_CONNECTED)
        return;
    /* Not at the first ticks after connecting: heartbeats need a moment to arrive. */
    if (mmi_now_ms() - e->up_ms < mm->opts.heartbeat_ms)
        return;
    if (leaderless(mm, e))
        mmi_election_try(mm, "no leader heard");
}

int64_t
mmi_election_since(const mm_t *mm)
{
    return mm->election != NULL && mm->election->leader ? mm->election->leader_since : 0;
}

void
mmi_election_stepped_up(mm_t *mm)
{
    struct mmi_election *e = mm->election;
    e->leader = true;
    e->leader_since = mmi_wall_ms();
    e->leader_seen_ms = mmi_now_ms();
    mmi_leader_event(mm, MM_EV_STEP_UP, MM_OK, mm->id, "this instance leads '%s'", mm->service);
    set_leader(mm, e, mm->id);
    mmi_peers_announce(mm);
}

void
mmi_election_stepped_down(mm_t *mm, int code, const char *why)
{
    struct mmi_election *e = mm->election;
    if (!e->leader)
        return;
    e->leader = false;
    e->leader_since = 0;
    mmi_leader_event(mm, MM_EV_STEP_DOWN, code, NULL, "this instance no longer leads '%s': %s",
                     mm->service, why);
    set_leader(mm, e, NULL);
    if (mm->state == MMI_CONNECTED)
        mmi_peers_announce(mm);
}

/* ---- life ---- */

static void
on_up(mm_t *mm, void *state)
{
    struct mmi_election *e = state;
    e->up_ms = mmi_now_ms();
    if (e->candidate)
        mmi_election_join(mm);
}

/* The lock belonged to the connection: without it, no claim. */
static void
on_down(mm_t *mm, void *state)
{
    (void) state;
    mmi_election_leave(mm);
    mmi_election_stepped_down(mm, MM_EDISCONNECTED, "connection lost");
}

static void
destroy(mm_t *mm, void *state)
{
    struct mmi_election *e = state;
    mmi_election_leave(mm);
    if (e->retry != NULL)
        event_free(e->retry);
    free(e);
    mm->election = NULL;
}

int
mmi_election_attach(mm_t *mm, bool candidate)
{
    struct mmi_election *e = calloc(1, sizeof *e);
    if (e == NULL)
        return MM_ENOMEM;
    e->candidate = candidate;
    e->mm = mm;
    mmi_hooks_t h = {.up = on_up, .down = on_down, .destroy = destroy, .state = e};
    int rc = mmi_module_add(mm, &h);
    if (rc != MM_OK) {
        free(e);
        return rc;
    }
    mm->election = e;
    return MM_OK;
}

int
mm_is_leader(const mm_t *mm)
{
    return mm != NULL && mmi_election_is_leader(mm);
}

const char *
mm_leader_id(const mm_t *mm)
{
    return mm != NULL ? mmi_election_leader_id(mm) : NULL;
}
