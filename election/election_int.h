/* Inside election/: the state shared by election.c (who leads, decisions)
 * and lock.c (the broker's lock and the election token). */
#ifndef MM_ELECTION_INT_H
#define MM_ELECTION_INT_H

#include <event2/event.h>

#include "election.h"

struct mmi_election {
    mm_t *mm;
    bool candidate;
    bool leader;             /* we hold the lock: the only way to claim it */
    char leader_id[37];      /* the leader as we know it ("" none); ours when leader */
    uint64_t leader_seen_ms; /* the last heartbeat of the leader we follow */
    int64_t leader_since;    /* its x-mm-leader-since (ours when we lead); 0: unknown */
    uint64_t up_ms;          /* when the connection came up */
    uint16_t lock_ch;        /* the channel on which we declared (and watch) the lock */
    uint16_t token_ch;       /* our consumer on the token queue */
    bool token;              /* the broker gave us the token: we are next in line */
    uint64_t token_ms;
    struct event *retry; /* the next lock attempt or rejoin */
    unsigned retries;
};

/* lock.c */
void mmi_election_join(mm_t *mm);  /* connected: wait in line for the token */
void mmi_election_leave(mm_t *mm); /* the connection is going: forget channels */
void mmi_election_try(mm_t *mm, const char *why);

/* election.c */
void mmi_election_stepped_up(mm_t *mm);
void mmi_election_stepped_down(mm_t *mm, int code, const char *why);

#endif
