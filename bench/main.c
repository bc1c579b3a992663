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

static const struct {
    const char *impl, *role;
    bench_role_fn fn;
} ROLES[] = {
    {"raw", "rpc-server", raw_rpc_server}, {"raw", "rpc-client", raw_rpc_client},
    {"raw", "ev-listen", raw_ev_listen},   {"raw", "ev-emit", raw_ev_emit},
    {"raw", "task-work", raw_task_work},   {"raw", "task-pub", raw_task_pub},
    {"mm", "rpc-server", mmb_rpc_server},  {"mm", "rpc-client", mmb_rpc_client},
    {"mm", "ev-listen", mmb_ev_listen},    {"mm", "ev-emit", mmb_ev_emit},
    {"mm", "task-work", mmb_task_work},    {"mm", "task-pub", mmb_task_pub},
};

static const char *
default_uri(void)
{
    const char *u = getenv("MM_URI");
    return u != NULL && *u ? u : "amqp://guest:guest@127.0.0.1:5672/";
}

static int
run_role(int argc, char **argv)
{
    if (argc < 4)
        return 64;
    bench_args_t a = {.uri = default_uri(), .n = 10000, .window = 1, .prefetch = 256};
    int opt;
    optind = 4;
    while ((opt = getopt(argc, argv, "u:n:N:W:w:p:PqH")) != -1) {
        switch (opt) {
        case 'u':
            a.uri = optarg;
            break;
        case 'n':
            a.name = optarg;
            break;
        case 'N':
            a.n = atol(optarg);
            break;
        case 'W':
            a.warmup = atol(optarg);
            break;
        case 'w':
            a.window = atoi(optarg);
            break;
        case 'p':
            a.prefetch = atoi(optarg);
            break;
        case 'P':
            a.persistent = 1;
            break;
        case 'q':
            a.qos = 1;
            break;
        case 'H':
            a.headers = 1;
            break;
        default:
            return 64;
        }
    }
    if (a.name == NULL || a.n <= 0 || a.warmup < 0 || a.window <= 0 || a.prefetch <= 0 ||
        a.prefetch > 65535)
        bench_die("role: -n name, -N > 0, -W >= 0, -w > 0 and 0 < -p < 65536 are needed");
    for (size_t i = 0; i < sizeof ROLES / sizeof ROLES[0]; i++)
        if (strcmp(ROLES[i].impl, argv[2]) == 0 && strcmp(ROLES[i].role, argv[3]) == 0)
            return ROLES[i].fn(&a);
    bench_die("no role %s %s", argv[2], argv[3]);
}

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
        return run_role(argc, argv);
    bench_suite_t s = {.uri = default_uri(), .rounds = 0};
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
    return bench_suite_run(&s);
}
