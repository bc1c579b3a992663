/* Leader election (see election.h). Skeleton: observer only, no lock yet. */
#include <stdlib.h>
#include <string.h>

#include "election.h"

struct mmi_election {
    bool candidate;
};

static void
destroy(mm_t *mm, void *state)
{
    free(state);
    mm->election = NULL;
}

int
mmi_election_attach(mm_t *mm, bool candidate)
{
    struct mmi_election *e = calloc(1, sizeof *e);
    if (e == NULL)
        return MM_ENOMEM;
    e->candidate = candidate;
    mmi_hooks_t h = {.destroy = destroy, .state = e};
    int rc = mmi_module_add(mm, &h);
    if (rc != MM_OK) {
        free(e);
        return rc;
    }
    mm->election = e;
    return MM_OK;
}

void
mmi_election_heard(mm_t *mm, const char *id, bool is_master, const char *leader_id)
{
    (void) mm;
    (void) id;
    (void) is_master;
    (void) leader_id;
}

void
mmi_election_forget(mm_t *mm, const char *id)
{
    (void) mm;
    (void) id;
}

void
mmi_election_tick(mm_t *mm)
{
    (void) mm;
}

bool
mmi_election_is_leader(const mm_t *mm)
{
    (void) mm;
    return false;
}

const char *
mmi_election_leader_id(const mm_t *mm)
{
    (void) mm;
    return NULL;
}

int
mm_is_leader(const mm_t *mm)
{
    return mm != NULL && mm->election != NULL && mmi_election_is_leader(mm);
}

const char *
mm_leader_id(const mm_t *mm)
{
    return mm != NULL && mm->election != NULL ? mmi_election_leader_id(mm) : NULL;
}
