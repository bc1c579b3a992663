/* memory:// (stub until the in-process broker lands). */
#include "transport.h"

static int
mem_connect(mm_t *mm)
{
    return mmi_fail(mm, MM_EURI, "memory:// is not built yet");
}

const mmi_transport_t mmi_mem_transport = {.name = "memory", .connect = mem_connect};

void
mmi_mem_release(mm_t *mm)
{
    (void) mm;
}
