/*
 * mmctl bench: the benchmark's quick run (bench/, bench/RESULTS.md) against
 * the broker of --uri: micromsg against raw rabbitmq-c, each role in its own
 * process (this program again, with a hidden verb), a progress bar on a
 * terminal, then the Markdown table of medians, ratios and targets.
 */
#include <stdlib.h>
#include <unistd.h>

#include "driver.h"
#include "mmctl.h"
#include "roles.h"

/* The role of a benchmark process: the driver runs "mmctl __bench-role ...". */
#define ROLE_VERB "__bench-role"

int
mmctl_bench_role(int argc, char **argv)
{
    return bench_role_main(argc, argv);
}

const char *
mmctl_bench_role_verb(void)
{
    return ROLE_VERB;
}

static const char *
bench_uri(const struct mmctl_args *a)
{
    if (a->uri != NULL)
        return a->uri;
    const char *env[] = {"MM_URI", "RABBITMQ_URI"};
    for (size_t i = 0; i < sizeof env / sizeof env[0]; i++)
        if (getenv(env[i]) != NULL && *getenv(env[i]) != '\0')
            return getenv(env[i]);
    return "amqp://guest:guest@localhost:5672/";
}

int
mmctl_bench(struct mmctl_args *a)
{
    const char *unknown = bench_unknown_scenario(a->nargs > 0 ? a->args[0] : NULL);
    if (unknown != NULL) {
        mmctl_err("bench: no scenario '%s' (see mmctl bench --help)", unknown);
        return MMCTL_EXIT_USAGE;
    }
    bench_suite_t s = {.uri = bench_uri(a),
                       .quick = 1,
                       .rounds = (int) (a->count > 16 ? 16 : a->count),
                       .only = a->nargs > 0 ? a->args[0] : NULL,
                       .role_verb = ROLE_VERB,
                       .bar = isatty(STDERR_FILENO)};
    return bench_suite_run(&s) == 0 ? MMCTL_EXIT_OK : MMCTL_EXIT_FAIL;
}
