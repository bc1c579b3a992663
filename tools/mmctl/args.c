/*
 * The command line: global options (--uri, --json, --codec, --timeout, -v,
 * -vv, --help) and verb options (--count, --echo, --raw) anywhere before or
 * after the verb, "--opt VALUE" or "--opt=VALUE"; "--" ends the options. A
 * lone "-" (body from stdin) and a negative number (a JSON body) are
 * arguments, not options. Every mistake is one line on stderr and exit 64.
 */
#include <ctype.h>
#include <errno.h>
#include <stdlib.h>
#include <string.h>

#include "mmctl.h"

/* The value of an option: after '=' or the next argument. NULL when missing. */
static const char *
opt_value(const char *arg, int argc, char **argv, int *i)
{
    const char *eq = strchr(arg, '=');
    if (eq != NULL)
        return eq + 1;
    if (*i + 1 >= argc)
        return NULL;
    return argv[++*i];
}

/* "--name" or "--name=..." */
static bool
is_opt(const char *arg, const char *name)
{
    size_t n = strlen(name);
    return strncmp(arg, name, n) == 0 && (arg[n] == '\0' || arg[n] == '=');
}

/* A decimal integer in [min, max]. */
static bool
parse_int(const char *s, long long min, long long max, long long *ret)
{
    char *end;
    errno = 0;
    long long v = strtoll(s, &end, 10);
    if (*s == '\0' || *end != '\0' || errno != 0 || v < min || v > max)
        return false;
    *ret = v;
    return true;
}

/* An option that takes a value. Returns 1 when handled, 0 when not such an option,
 * -1 on a bad or missing value (reported). */
static int
value_opt(const char *arg, int argc, char **argv, int *i, struct mmctl_args *a)
{
    static const char *const names[] = {"--uri", "--codec", "--timeout", "--count"};
    size_t k = 0;
    while (k < 4 && !is_opt(arg, names[k]))
        k++;
    if (k == 4)
        return 0;
    const char *v = opt_value(arg, argc, argv, i);
    long long n = 0;
    if (v == NULL) {
        mmctl_err("%s needs a value (see mmctl --help)", names[k]);
        return -1;
    }
    if (k == 0) {
        a->uri = v;
    } else if (k == 1 && (strcmp(v, "msgpack") == 0 || strcmp(v, "json") == 0)) {
        a->codec = strcmp(v, "json") == 0 ? MM_CODEC_JSON : MM_CODEC_MSGPACK;
    } else if (k >= 2 && parse_int(v, k == 2 ? 0 : 1, INT64_MAX, &n)) {
        if (k == 2)
            a->timeout_ms = n;
        else
            a->count = (uint64_t) n;
    } else {
        mmctl_err("bad value for %s: '%s'", names[k], v);
        return -1;
    }
    return 1;
}

/* A flag without a value. Returns false when unknown. */
static bool
flag_opt(const char *arg, struct mmctl_args *a)
{
    if (strcmp(arg, "--json") == 0)
        a->json = true;
    else if (strcmp(arg, "--help") == 0 || strcmp(arg, "-h") == 0)
        a->help = true;
    else if (strcmp(arg, "-v") == 0 || strcmp(arg, "--verbose") == 0)
        a->verbose = a->verbose > 1 ? 2 : a->verbose + 1;
    else if (strcmp(arg, "-vv") == 0)
        a->verbose = 2;
    else if (strcmp(arg, "--raw") == 0)
        a->raw = true;
    else if (strcmp(arg, "--echo") == 0)
        a->echo = true;
    else
        return false;
    return true;
}

/* An argument that is an option: starts with '-', is not "-" nor a negative number. */
static bool
looks_like_opt(const char *arg)
{
    return arg[0] == '-' && arg[1] != '\0' && !isdigit((unsigned char) arg[1]);
}

/* A positional argument: the verb first, then up to MMCTL_MAX_ARGS. */
static int
positional(const char *arg, struct mmctl_args *a)
{
    if (a->verb == NULL) {
        a->verb = arg;
        return MMCTL_EXIT_OK;
    }
    if (a->nargs == MMCTL_MAX_ARGS) {
        mmctl_err("too many arguments at '%s'", arg);
        return MMCTL_EXIT_USAGE;
    }
    a->args[a->nargs++] = arg;
    return MMCTL_EXIT_OK;
}

/* The verb's flags and argument count. */
static int
check_verb(const struct mmctl_args *a, const struct mmctl_verb *v)
{
    if (a->count > 0 && !(v->flags & MMCTL_F_COUNT))
        mmctl_err("%s does not take --count", v->name);
    else if (a->echo && !(v->flags & MMCTL_F_ECHO))
        mmctl_err("%s does not take --echo", v->name);
    else if (a->raw && !(v->flags & MMCTL_F_RAW))
        mmctl_err("%s does not take --raw", v->name);
    else if (a->help)
        return MMCTL_EXIT_OK;
    else if (a->nargs < v->min_args)
        mmctl_err("%s: missing argument (usage: mmctl %s)", v->name, v->synopsis);
    else if (a->nargs > v->max_args)
        mmctl_err("%s: too many arguments (usage: mmctl %s)", v->name, v->synopsis);
    else
        return MMCTL_EXIT_OK;
    return MMCTL_EXIT_USAGE;
}

int
mmctl_parse(int argc, char **argv, struct mmctl_args *a,
            const struct mmctl_verb *(*find)(const char *name))
{
    *a = (struct mmctl_args){.timeout_ms = -1, .codec = MM_CODEC_MSGPACK};
    bool opts_done = false;
    for (int i = 1; i < argc; i++) {
        const char *arg = argv[i];
        int rc = 0;
        if (!opts_done && strcmp(arg, "--") == 0) {
            opts_done = true;
        } else if (opts_done || !looks_like_opt(arg)) {
            if (positional(arg, a) != MMCTL_EXIT_OK)
                return MMCTL_EXIT_USAGE;
        } else if ((rc = value_opt(arg, argc, argv, &i, a)) < 0) {
            return MMCTL_EXIT_USAGE;
        } else if (rc == 0 && !flag_opt(arg, a)) {
            mmctl_err("unknown option '%s' (see mmctl --help)", arg);
            return MMCTL_EXIT_USAGE;
        }
    }
    if (a->verb == NULL)
        return MMCTL_EXIT_OK; /* main prints the usage */
    const struct mmctl_verb *v = find(a->verb);
    if (v == NULL) {
        mmctl_err("unknown verb '%s' (see mmctl --help)", a->verb);
        return MMCTL_EXIT_USAGE;
    }
    return check_verb(a, v);
}
