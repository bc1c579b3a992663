/*
 * The log hook. Silent unless the user gives a hook or sets $MM_LOG, in which
 * case lines go to stderr. Levels are tested before anything is formatted
 * (the mmi_log macro), so debug logging costs nothing when off.
 */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>

#include "internal.h"

int
mmi_log_level_from_env(void)
{
    const char *v = getenv("MM_LOG");
    if (v == NULL || *v == '\0')
        return MM_LOG_NONE;
    if (strcasecmp(v, "debug") == 0)
        return MM_LOG_DEBUG;
    if (strcasecmp(v, "info") == 0)
        return MM_LOG_INFO;
    if (strcasecmp(v, "warn") == 0 || strcasecmp(v, "warning") == 0)
        return MM_LOG_WARN;
    if (strcasecmp(v, "error") == 0 || strcasecmp(v, "err") == 0)
        return MM_LOG_ERR;
    return MM_LOG_WARN;
}

void
mmi_log_emit(mm_t *mm, int level, const char *fmt, ...)
{
    char text[512];
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(text, sizeof text, fmt, ap);
    va_end(ap);
    mm->opts.log(level, text, mm->opts.log_ud);
}

void
mm_set_log_level(mm_t *mm, int level)
{
    if (mm != NULL)
        mm->opts.log_level = level;
}
