/*
 * The hooks through which the core tells the modules beside it (peers/,
 * election/, topics) about the connection: up (after mm_connect, and after a
 * reconnect once the routes are back), down (the moment the connection is
 * lost or closed), quiesce (mm_close's drain begins) and destroy (mm_free). Modules keep their own
 * state and use only lib/internal.h.
 */
#include "internal.h"

int
mmi_module_add(mm_t *mm, const mmi_hooks_t *hooks)
{
    if (mm->nmodules == MMI_MAX_MODULES)
        return mmi_fail(mm, MM_ENOMEM, "too many modules");
    mm->modules[mm->nmodules++] = *hooks;
    return MM_OK;
}

void
mmi_modules_up(mm_t *mm)
{
    for (int i = 0; i < mm->nmodules && mm->state == MMI_CONNECTED; i++)
        if (mm->modules[i].up != NULL)
            mm->modules[i].up(mm, mm->modules[i].state);
}

void
mmi_modules_down(mm_t *mm)
{
    for (int i = 0; i < mm->nmodules; i++)
        if (mm->modules[i].down != NULL)
            mm->modules[i].down(mm, mm->modules[i].state);
}

void
mmi_modules_quiesce(mm_t *mm)
{
    for (int i = 0; i < mm->nmodules && mm->state == MMI_CONNECTED; i++)
        if (mm->modules[i].quiesce != NULL)
            mm->modules[i].quiesce(mm, mm->modules[i].state);
}

void
mmi_modules_destroy(mm_t *mm)
{
    for (int i = mm->nmodules - 1; i >= 0; i--)
        if (mm->modules[i].destroy != NULL)
            mm->modules[i].destroy(mm, mm->modules[i].state);
    mm->nmodules = 0;
}
