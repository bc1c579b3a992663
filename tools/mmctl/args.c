/*
 * The command line: global options (--uri, --json, --codec, --timeout, -v,
 * -vv, --help) and verb options (--count, --echo, --raw, --max-age,
 * --max-bytes, --from) anywhere before or after the verb, "--opt VALUE" or
 * "--opt=VALUE"; "--" ends the options. A lone "-" (body from stdin) and a
 * negative number (a JSON body) are arguments, not options. A verb refuses
 * the verb options it does not take. Every mistake is one line on stderr and
 * exit 64.
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

/* The options that take a value, and the verb option (MMCTL_F_*) each one is; 0: global. */
enum { OPT_URI, OPT_CODEC, OPT_TIMEOUT, OPT_COUNT, OPT_MAX_AGE, OPT_MAX_BYTES, OPT_FROM, N_OPTS };
static const struct {
    const char *name;
    unsigned flag;
} value_opts[N_OPTS] = {
    [OPT_URI] = {"--uri", 0},
    [OPT_CODEC] = {"--codec", 0},
    [OPT_TIMEOUT] = {"--timeout", 0},
    [OPT_COUNT] = {"--count", MMCTL_F_COUNT},
    [OPT_MAX_AGE] = {"--max-age", MMCTL_F_MAX_AGE},
    [OPT_MAX_BYTES] = {"--max-bytes", MMCTL_F_MAX_BYTES},
    [OPT_FROM] = {"--from", MMCTL_F_FROM},
};

/* A reader's start: first, last, next, an offset, or @ms since the epoch. */
static bool
parse_from(const char *s, mm_from_t *ret)
{
    static const struct {
        const char *name;
        mm_from_kind kind;
    } words[] = {{"first", MM_FROM_FIRST}, {"last", MM_FROM_LAST}, {"next", MM_FROM_NEXT}};
    for (size_t i = 0; i < sizeof words / sizeof words[0]; i++) {
        if (strcmp(s, words[i].name) == 0) {
            *ret = (mm_from_t){words[i].kind, 0};
            return true;
        }
    }
    bool at = s[0] == '@';
    long long n;
    if (!parse_int(at ? s + 1 : s, 0, INT64_MAX, &n))
        return false;
    *ret = (mm_from_t){at ? MM_FROM_TIMESTAMP : MM_FROM_OFFSET, n};
    return true;
}

/* Store the value v of option k. False when it is not a valid one. */
static bool
set_value(int k, const char *v, struct mmctl_args *a)
{
    long long n = 0;
    switch (k) {
    case OPT_URI:
        a->uri = v;
        return true;
    case OPT_CODEC:
        if (strcmp(v, "msgpack") != 0 && strcmp(v, "json") != 0)
            return false;
        a->codec = strcmp(v, "json") == 0 ? MM_CODEC_JSON : MM_CODEC_MSGPACK;
        return true;
    case OPT_TIMEOUT:
        if (!parse_int(v, 0, INT64_MAX, &n))
            return false;
        a->timeout_ms = n;
        return true;
    case OPT_FROM:
        return parse_from(v, &a->from);
    default: /* counts and sizes: at least 1 (0 would mean "none" or "no bound") */
        if (!parse_int(v, 1, INT64_MAX, &n))
            return false;
        uint64_t *field = k == OPT_COUNT     ? &a->count
                          : k == OPT_MAX_AGE ? &a->max_age_s
                                             : &a->max_bytes;
        *field = (uint64_t) n;
        return true;
    }
}

/* An option that takes a value. Returns 1 when handled, 0 when not such an option,
 * -1 on a bad or missing value (reported). */
static int
value_opt(const char *arg, int argc, char **argv, int *i, struct mmctl_args *a)
{
    int k = 0;
    while (k < N_OPTS && !is_opt(arg, value_opts[k].name))
        k++;
    if (k == N_OPTS)
        return 0;
    const char *v = opt_value(arg, argc, argv, i);
    if (v == NULL) {
        mmctl_err("%s needs a value (see mmctl --help)", value_opts[k].name);
        return -1;
    }
    if (!set_value(k, v, a)) {
        mmctl_err("bad value for %s: '%s'", value_opts[k].name, v);
        return -1;
    }
    a->given |= value_opts[k].flag;
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
    /* the verb options among them, for check_verb */
    a->given |= (a->raw ? MMCTL_F_RAW : 0) | (a->echo ? MMCTL_F_ECHO : 0);
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

/* The name of the lowest verb option in `flags` (MMCTL_F_* bit order). */
static const char *
verb_opt_name(unsigned flags)
{
    static const char *const names[] = {"--count",   "--echo",      "--raw",
                                        "--max-age", "--max-bytes", "--from"};
    size_t i = 0;
    while (i + 1 < sizeof names / sizeof names[0] && !(flags & (1u << i)))
        i++;
    return names[i];
}

/* The verb's options and argument count. */
static int
check_verb(const struct mmctl_args *a, const struct mmctl_verb *v)
{
    unsigned refused = a->given & ~v->flags;
    if (refused != 0)
        mmctl_err("%s does not take %s", v->name, verb_opt_name(refused));
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
