/* Peers (see peers.h). Skeleton: nothing is published yet. */
#include <stdlib.h>

#include "peers.h"

struct mmi_peers {
    int unused;
};

static void
destroy(mm_t *mm, void *state)
{
    free(state);
    mm->peers = NULL;
}

int
mmi_peers_attach(mm_t *mm)
{
    struct mmi_peers *p = calloc(1, sizeof *p);
    if (p == NULL)
        return MM_ENOMEM;
    mmi_hooks_t h = {.destroy = destroy, .state = p};
    int rc = mmi_module_add(mm, &h);
    if (rc != MM_OK) {
        free(p);
        return rc;
    }
    mm->peers = p;
    return MM_OK;
}

void
mmi_peers_announce(mm_t *mm)
{
    (void) mm;
}

int
mm_get_status(mm_t *mm, const char *service, mm_status_fn cb, void *ud)
{
    (void) service;
    (void) cb;
    (void) ud;
    return mm == NULL ? MM_EINVAL : mmi_fail(mm, MM_ENOTCONN, "peers: not implemented yet");
}

int
mm_wait_service(mm_t *mm, const char *service, unsigned flags, int64_t timeout_ms, mm_status_fn cb,
                void *ud)
{
    (void) service;
    (void) flags;
    (void) timeout_ms;
    (void) cb;
    (void) ud;
    return mm == NULL ? MM_EINVAL : mmi_fail(mm, MM_ENOTCONN, "peers: not implemented yet");
}

double
mm_broker_latency_ms(const mm_t *mm)
{
    (void) mm;
    return -1;
}
