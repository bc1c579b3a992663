/*
 * Leader election among the instances of one service (PROTOCOL.md 7): the
 * exclusive lock queue internal.<service>.lock decides; a single-active-
 * consumer queue with a token wakes the next candidate the moment the
 * leader's connection dies. Also the instance's knowledge of who leads,
 * fed by the peers module's heartbeats (observer mode with
 * MM_OPT_NO_ELECTION).
 */
#ifndef MM_ELECTION_H
#define MM_ELECTION_H

#include "internal.h"

/* From mm_new (peers on): candidate false = observer only. */
int mmi_election_attach(mm_t *mm, bool candidate);

/* peers/: a status message from `id` (maybe ourselves), claiming leadership or
 * naming the leader it follows (NULL: none); `since`: its header
 * x-mm-leader-since (wall ms when it took the lock; 0 when absent). */
void mmi_election_heard(mm_t *mm, const char *id, bool is_master, const char *leader_id,
                        int64_t since);

/* peers/: the x-mm-leader-since of our heartbeats; 0 when we do not lead. */
int64_t mmi_election_since(const mm_t *mm);

/* peers/: `id` was forgotten (silent for 4 heartbeats). */
void mmi_election_forget(mm_t *mm, const char *id);

/* peers/: the heartbeat timer fired (the protocol's moment to try the lock). */
void mmi_election_tick(mm_t *mm);

bool mmi_election_is_leader(const mm_t *mm);
const char *mmi_election_leader_id(const mm_t *mm);

#endif
