/*
 * Sets of instance statuses keyed by id: the peer table (peers.c) and the
 * answers a status query collects (status.c). A plain array: services have
 * a handful of instances, and MMI_PEERS_MAX bounds what a flood of made-up
 * ids could make us hold.
 */
#include <stdlib.h>
#include <string.h>

#include "peers_int.h"

mmi_member_t *
mmi_members_find(mmi_members_t *m, const char *id)
{
    for (size_t i = 0; i < m->n; i++)
        if (strcmp(m->v[i].id, id) == 0)
            return &m->v[i];
    return NULL;
}

static bool
grow(mmi_members_t *m)
{
    if (m->n < m->cap)
        return true;
    if (m->cap >= MMI_PEERS_MAX)
        return false;
    size_t cap = m->cap ? m->cap * 2 : 4;
    mmi_member_t *v = realloc(m->v, cap * sizeof *v);
    if (v == NULL)
        return false;
    m->v = v;
    m->cap = cap;
    return true;
}

mmi_member_t *
mmi_members_put(mmi_members_t *m, const mmi_member_t *r)
{
    mmi_member_t *e = mmi_members_find(m, r->id);
    if (e == NULL) {
        if (!grow(m))
            return NULL;
        e = &m->v[m->n++];
    }
    *e = *r;
    return e;
}

void
mmi_members_remove(mmi_members_t *m, size_t i)
{
    if (i >= m->n)
        return;
    m->v[i] = m->v[m->n - 1];
    m->n--;
}

void
mmi_members_free(mmi_members_t *m)
{
    free(m->v);
    *m = (mmi_members_t){0};
}
