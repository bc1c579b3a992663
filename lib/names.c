/*
 * Name rules for services, routes and event targets. Names become parts of
 * queue names and routing keys (q.requests.<service>.<route>,
 * <target>.<route>), so they are limited to characters that are safe in
 * both and to non-empty dot-separated words. Listen routes may also use the
 * topic wildcards "*" and "#" as whole words.
 */
#include <string.h>

#include "internal.h"

static bool
name_char_ok(char ch)
{
    return (ch >= 'a' && ch <= 'z') || (ch >= 'A' && ch <= 'Z') || (ch >= '0' && ch <= '9') ||
           ch == '.' || ch == '_' || ch == '-' || ch == ':';
}

/* A wildcard must be a whole dot-separated word. */
static bool
wildcard_ok(const char *s, size_t i, size_t n)
{
    bool starts = i == 0 || s[i - 1] == '.';
    bool ends = i + 1 == n || s[i + 1] == '.';
    return starts && ends;
}

static int
check_chars(mm_t *mm, const char *what, const char *s, size_t n, unsigned flags)
{
    for (size_t i = 0; i < n; i++) {
        char ch = s[i];
        if (name_char_ok(ch))
            continue;
        if ((flags & MMI_NAME_WILDCARD) && (ch == '*' || ch == '#') && wildcard_ok(s, i, n))
            continue;
        return mmi_fail(mm, MM_ENAME, "%s has '%c' at %zu (allowed: A-Z a-z 0-9 . _ - :%s)", what,
                        ch > 32 && ch < 127 ? ch : '?', i,
                        (flags & MMI_NAME_WILDCARD) ? ", and * or # as whole words" : "");
    }
    return MM_OK;
}

int
mmi_check_name(mm_t *mm, const char *what, const char *s, unsigned flags)
{
    if (s == NULL || *s == '\0')
        return mmi_fail(mm, MM_ENAME, "%s is empty", what);
    size_t n = strlen(s);
    if (n > MMI_NAME_MAX)
        return mmi_fail(mm, MM_ENAME, "%s is %zu characters (max %d)", what, n, MMI_NAME_MAX);
    int rc = check_chars(mm, what, s, n, flags);
    if (rc != MM_OK)
        return rc;
    if (s[0] == '.' || s[n - 1] == '.' || strstr(s, "..") != NULL)
        return mmi_fail(mm, MM_ENAME, "%s '%s' has an empty dot-separated part", what, s);
    bool internal = strcmp(s, "internal") == 0 || strncmp(s, "internal.", 9) == 0;
    if (internal && !(flags & MMI_NAME_INTERNAL))
        return mmi_fail(mm, MM_ENAME, "%s '%s' is reserved (internal.*)", what, s);
    return MM_OK;
}

/* "<a>.<b>" into out (cap >= strlen(a) + strlen(b) + 2, which MMI_NAME_MAX
 * bounds for checked names). A plain copy: this runs for every message sent. */
char *
mmi_join(char *out, size_t cap, const char *a, const char *b)
{
    size_t la = strlen(a), lb = strlen(b);
    if (la + lb + 2 > cap) {
        out[0] = '\0';
        return out;
    }
    memcpy(out, a, la);
    out[la] = '.';
    memcpy(out + la + 1, b, lb + 1);
    return out;
}

char *
mmi_request_queue(char *out, size_t cap, const char *service, const char *route)
{
    size_t lp = sizeof MMI_REQUEST_PREFIX - 1;
    if (cap <= lp) {
        out[0] = '\0';
        return out;
    }
    memcpy(out, MMI_REQUEST_PREFIX, lp);
    mmi_join(out + lp, cap - lp, service, route);
    return out;
}

/* A usable instance, and a destination "<name>.<route>" with valid names. */
int
mmi_check_dest(mm_t *mm, const char *what, const char *name, unsigned flags, const char *route)
{
    int rc = mmi_check_usable(mm);
    if (rc == MM_OK)
        rc = mmi_check_name(mm, what, name, flags);
    if (rc == MM_OK)
        rc = mmi_check_name(mm, "route", route, 0);
    return rc;
}
