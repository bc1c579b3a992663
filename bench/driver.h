/*
 * The benchmark driver: runs every scenario's roles as separate processes,
 * both implementations alternating (A B, B A, A B ...) for a number of rounds, and
 * prints the table of medians and ratios (report.c).
 */
#ifndef MM_BENCH_DRIVER_H
#define MM_BENCH_DRIVER_H

typedef struct {
    const char *uri;
    int quick;             /* a tenth of the counts: a smoke run well under a minute */
    int rounds;            /* 0: 5, or 3 with quick */
    const char *only;      /* comma-separated scenario ids, or NULL: all */
    const char *out;       /* also write the report to this file, or NULL */
    const char *role_verb; /* how this program is told to run a role; NULL: "role" */
    int bar;               /* one progress bar line on stderr instead of a line per run */
} bench_suite_t;

/* One run of one side of a scenario, from its roles' RESULT lines. */
typedef struct {
    double rate;       /* messages/s, from the measuring role */
    double p50, p99;   /* µs, RPC only */
    double ccpu, scpu; /* CPU µs per message: client (requester, emitter, publisher) and server */
    double crss, srss; /* peak RSS, KiB */
    double bcpu;       /* the broker's CPU µs per message, or -1 when unknown */
    double pub_rate;   /* task-pub's confirmed tasks/s */
} bench_run_t;

typedef struct {
    const char *id, *title;
    const char *server, *client; /* roles: the server is started first */
    int window, persistent;
    long n, n_quick, warmup;
    const char *impl[2]; /* side A, side B */
    int qos[2];          /* micromsg with MM_OPT_QOS */
    int headers[2];      /* raw with micromsg's properties (-H) */
    double target;       /* B/A throughput target, 0: none */
    const char *a_name, *b_name;
    int client_measures; /* the rate is the client's (topics), not the server's */
} bench_scenario_t;

#define BENCH_SCENARIOS 13
extern const bench_scenario_t bench_scenarios[BENCH_SCENARIOS];

int bench_suite_run(const bench_suite_t *s);
/* NULL when every id of the comma-separated list names a scenario, else the
 * first unknown one (in a static buffer). */
const char *bench_unknown_scenario(const char *only);

/* report.c: runs[scenario][side][round], ok[scenario] when every run worked */
void bench_report(const bench_suite_t *s, int rounds, bench_run_t (*runs)[2][16], const int *ran);

#endif
