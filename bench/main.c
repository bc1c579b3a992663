/*
 * mm_bench: micromsg against raw rabbitmq-c, measured in the same run.
 *   mm_bench [--quick] [-r rounds] [-s scenario,...] [-o results.md]
 *       runs the suite (driver.c) against $MM_URI and prints the table
 *   mm_bench role raw|mm ROLE [-u uri] -n name [-N n] [-W warmup] [-w window]
 *                [-p prefetch] [-P] [-q] [-H]
 *       one role process (roles.h); the driver starts these. -P: persistent
 *       tasks; -q: micromsg's QoS; -H: the raw roles publish micromsg's AMQP
 *       properties (protocol headers), so raw -H vs raw is the protocol's cost
 */
#include <getopt.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "driver.h"
#include "roles.h"

static int
usage(void)
{
    fprintf(stderr, "usage: mm_bench [--quick] [-r rounds] [-s scenario,...] [-o results.md]\n"
                    "       mm_bench role raw|mm ROLE -n name [-u uri] [-N n] [-W warmup] "
                    "[-w window] [-p prefetch] [-P] [-q] [-H]\n");
    return 64;
}

int
main(int argc, char **argv)
{
    if (argc > 1 && strcmp(argv[1], "role") == 0)
        return bench_role_main(argc, argv);
    bench_suite_t s = {.uri = bench_default_uri(), .rounds = 0};
    static const struct option longs[] = {{"quick", no_argument, NULL, 'Q'}, {0}};
    int opt;
    while ((opt = getopt_long(argc, argv, "r:s:o:", longs, NULL)) != -1) {
        switch (opt) {
        case 'Q':
            s.quick = 1;
            break;
        case 'r':
            s.rounds = atoi(optarg);
            break;
        case 's':
            s.only = optarg;
            break;
        case 'o':
            s.out = optarg;
            break;
        default:
            return usage();
        }
    }
    if (optind != argc || s.rounds < 0)
        return usage();
    if (bench_unknown_scenario(s.only) != NULL) {
        fprintf(stderr, "mm_bench: no scenario '%s'\n", bench_unknown_scenario(s.only));
        return usage();
    }
    return bench_suite_run(&s);
}
