/*
 * The error table (MM_ERR_MAP in the public header) turned into texts and
 * names, and the per-instance "last error" detail that mm_last_error() shows.
 */
#include <stdio.h>
#include <string.h>

#include "internal.h"

const char *
mm_strerror(int code)
{
    switch (code) {
    case MM_OK:
        return "success";
#define MM_ERR_TEXT_(name, value, text)                                                            \
    case MM_##name:                                                                                \
        return text;
        MM_ERR_MAP(MM_ERR_TEXT_)
#undef MM_ERR_TEXT_
    default:
        return "unknown error";
    }
}

const char *
mm_err_name(int code)
{
    switch (code) {
    case MM_OK:
        return "MM_OK";
#define MM_ERR_NAME_(name, value, text)                                                            \
    case MM_##name:                                                                                \
        return "MM_" #name;
        MM_ERR_MAP(MM_ERR_NAME_)
#undef MM_ERR_NAME_
    default:
        return "MM_E?";
    }
}

/* Record why a call failed and return the code, so callers can write
 * `return mmi_fail(mm, MM_EINVAL, "...")`. */
int
mmi_fail(mm_t *mm, int code, const char *fmt, ...)
{
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(mm->last_error, sizeof mm->last_error, fmt, ap);
    va_end(ap);
    mm->last_code = code;
    mmi_log(mm, MM_LOG_DEBUG, "%s: %s", mm_err_name(code), mm->last_error);
    return code;
}

void
mmi_clear_error(mm_t *mm)
{
    mm->last_code = MM_OK;
    mm->last_error[0] = '\0';
}

const char *
mm_last_error(const mm_t *mm)
{
    return mm ? mm->last_error : "no instance";
}

int
mm_last_code(const mm_t *mm)
{
    return mm ? mm->last_code : MM_EINVAL;
}
