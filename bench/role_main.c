/*
 * One role process: "<prog> <verb> raw|mm ROLE [options]" (see roles.h), as
 * the driver starts it. Shared by mm_bench and mmctl bench.
 */
#include <getopt.h>
#include <stdlib.h>
#include <string.h>

#include "roles.h"

static const struct {
    const char *impl, *role;
    bench_role_fn fn;
} ROLES[] = {
    {"raw", "rpc-server", raw_rpc_server}, {"raw", "rpc-client", raw_rpc_client},
    {"raw", "ev-listen", raw_ev_listen},   {"raw", "ev-emit", raw_ev_emit},
    {"raw", "task-work", raw_task_work},   {"raw", "task-pub", raw_task_pub},
    {"raw", "topic-prep", raw_topic_prep}, {"raw", "topic-pub", raw_topic_pub},
    {"raw", "topic-fill", raw_topic_fill}, {"raw", "topic-read", raw_topic_read},
    {"mm", "rpc-server", mmb_rpc_server},  {"mm", "rpc-client", mmb_rpc_client},
    {"mm", "ev-listen", mmb_ev_listen},    {"mm", "ev-emit", mmb_ev_emit},
    {"mm", "task-work", mmb_task_work},    {"mm", "task-pub", mmb_task_pub},
    {"mm", "topic-prep", mmb_topic_prep},  {"mm", "topic-pub", mmb_topic_pub},
    {"mm", "topic-fill", mmb_topic_fill},  {"mm", "topic-read", mmb_topic_read},
};

const char *
bench_default_uri(void)
{
    const char *u = getenv("MM_URI");
    return u != NULL && *u ? u : "amqp://guest:guest@127.0.0.1:5672/";
}

int
bench_role_main(int argc, char **argv)
{
    if (argc < 4)
        return 64;
    bench_args_t a = {.uri = bench_default_uri(), .n = 10000, .window = 1, .prefetch = 256};
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
