/*
 * The benchmark's report: machine facts, then per scenario the medians of
 * both sides, the ratio B/A (median of the per-round ratios, since the two
 * sides of one round met the same broker state) and the target, in
 * Markdown, to stdout and to the -o file.
 */
#include <amqp.h>
#include <event2/event.h>
#include <msgpack.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/utsname.h>
#include <time.h>
#include <unistd.h>

#include "driver.h"
#include "micromsg.h"

#define RSS_TARGET_KB 5120.0
#define CPU_TARGET 1.3
#define P50_TARGET 1.10

typedef bench_run_t (*runs_t)[2][16];

static int
cmp_double(const void *a, const void *b)
{
    double x = *(const double *) a, y = *(const double *) b;
    return x < y ? -1 : x > y;
}

static double
median(double *v, int n)
{
    qsort(v, (size_t) n, sizeof *v, cmp_double);
    return n % 2 ? v[n / 2] : (v[n / 2 - 1] + v[n / 2]) / 2;
}

/* The median of one field of one side, or of B/A when side < 0. */
static double
stat(bench_run_t (*r)[16], int rounds, size_t off, int side)
{
    double v[16];
    for (int i = 0; i < rounds; i++) {
        double a = *(const double *) ((const char *) &r[0][i] + off);
        double b = *(const double *) ((const char *) &r[1][i] + off);
        v[i] = side == 0 ? a : side == 1 ? b : (a > 0 ? b / a : 0);
    }
    return median(v, rounds);
}

#define MED(r, n, f, side) stat(r, n, offsetof(bench_run_t, f), side)

static const char *
verdict(double ratio, double target, int higher_is_better)
{
    if (target <= 0)
        return "";
    int met = higher_is_better ? ratio >= target : ratio <= target;
    return met ? "met" : "**missed**";
}

static void
machine_facts(FILE *f)
{
    struct utsname u;
    uname(&u);
    char model[128] = "?", line[256];
    FILE *c = fopen("/proc/cpuinfo", "r");
    while (c != NULL && fgets(line, sizeof line, c) != NULL)
        if (strncmp(line, "model name", 10) == 0) {
            snprintf(model, sizeof model, "%s", strchr(line, ':') + 2);
            model[strcspn(model, "\n")] = '\0';
            break;
        }
    if (c != NULL)
        fclose(c);
    long pages = sysconf(_SC_PHYS_PAGES), psize = sysconf(_SC_PAGESIZE);
    time_t now = time(NULL);
    char date[32];
    strftime(date, sizeof date, "%Y-%m-%d %H:%M", localtime(&now));
    const char *bv = getenv("MM_BENCH_BROKER_VERSION");
    fprintf(f, "- %s; %s %s %s; %ld CPUs: %s; %.1f GiB RAM\n", date, u.sysname, u.release,
            u.machine, sysconf(_SC_NPROCESSORS_ONLN), model,
            (double) pages * (double) psize / (1 << 30));
    fprintf(f, "- RabbitMQ %s; rabbitmq-c %s, msgpack-c %s, libevent %s, micromsg %d.%d.%d\n",
            bv ? bv : "(version unknown)", amqp_version(), msgpack_version(), event_get_version(),
            mm_version() / 10000, mm_version() / 100 % 100, mm_version() % 100);
    fprintf(f, "- compiler %s%s\n", __VERSION__,
#ifdef __OPTIMIZE__
            ", optimised"
#else
            ", NOT optimised (figures meaningless)"
#endif
    );
}

static void
throughput_table(FILE *f, int rounds, runs_t runs, const int *ran)
{
    fprintf(f, "\n| scenario | A | B | A /s | B /s | B/A | target | p50 µs A / B | p99 µs A / B |\n"
               "|---|---|---|---|---|---|---|---|---|\n");
    for (int i = 0; i < BENCH_SCENARIOS; i++) {
        const bench_scenario_t *sc = &bench_scenarios[i];
        if (ran[i] <= 0)
            continue;
        bench_run_t(*r)[16] = runs[i];
        double ratio = MED(r, rounds, rate, -1);
        char target[48] = "–";
        if (sc->target > 0)
            snprintf(target, sizeof target, "≥ %.2f %s", sc->target, verdict(ratio, sc->target, 1));
        fprintf(f, "| %s | %s | %s | %.0f | %.0f | %.2f | %s |", sc->title, sc->a_name, sc->b_name,
                MED(r, rounds, rate, 0), MED(r, rounds, rate, 1), ratio, target);
        if (r[0][0].p50 >= 0)
            fprintf(f, " %.0f / %.0f | %.0f / %.0f |\n", MED(r, rounds, p50, 0),
                    MED(r, rounds, p50, 1), MED(r, rounds, p99, 0), MED(r, rounds, p99, 1));
        else
            fprintf(f, " | |\n");
    }
}

static void
cpu_table(FILE *f, int rounds, runs_t runs, const int *ran)
{
    fprintf(f,
            "\n| scenario | client CPU µs/msg A / B | B/A (≤ %.1f) | server CPU µs/msg A / B "
            "| B/A | broker CPU µs/msg A / B | peak RSS KiB client A / B | server A / B |\n"
            "|---|---|---|---|---|---|---|---|\n",
            CPU_TARGET);
    for (int i = 0; i < BENCH_SCENARIOS; i++) {
        if (ran[i] <= 0)
            continue;
        bench_run_t(*r)[16] = runs[i];
        double cr = MED(r, rounds, ccpu, -1);
        char broker[48] = "– / –"; /* unknown without $MM_BENCH_BROKER_PID */
        if (MED(r, rounds, bcpu, 0) >= 0)
            snprintf(broker, sizeof broker, "%.1f / %.1f", MED(r, rounds, bcpu, 0),
                     MED(r, rounds, bcpu, 1));
        fprintf(f,
                "| %s | %.2f / %.2f | %.2f %s | %.2f / %.2f | %.2f | %s | %.0f / %.0f | "
                "%.0f / %.0f |\n",
                bench_scenarios[i].title, MED(r, rounds, ccpu, 0), MED(r, rounds, ccpu, 1), cr,
                bench_scenarios[i].target > 0 ? verdict(cr, CPU_TARGET, 0) : "",
                MED(r, rounds, scpu, 0), MED(r, rounds, scpu, 1), MED(r, rounds, scpu, -1), broker,
                MED(r, rounds, crss, 0), MED(r, rounds, crss, 1), MED(r, rounds, srss, 0),
                MED(r, rounds, srss, 1));
    }
}

/* The targets that are not one table cell: p50 at 1 in flight, RSS. */
static void
other_targets(FILE *f, int rounds, runs_t runs, const int *ran)
{
    if (ran[0] > 0) {
        double p = MED(runs[0], rounds, p50, -1);
        fprintf(f, "\n- p50 at 1 in flight, micromsg/raw: %.2f (target ≤ %.2f): %s\n", p,
                P50_TARGET, verdict(p, P50_TARGET, 0));
    }
    double worst = 0;
    for (int i = 0; i < BENCH_SCENARIOS; i++)
        for (int side = 0; side < 2 && ran[i] > 0; side++)
            if (strcmp(bench_scenarios[i].impl[side], "mm") == 0)
                for (int k = 0; k < rounds; k++) {
                    const bench_run_t *r = &runs[i][side][k];
                    worst = r->crss > worst ? r->crss : worst;
                    worst = r->srss > worst ? r->srss : worst;
                }
    fprintf(f, "- largest peak RSS of a micromsg process: %.0f KiB (target ≤ %.0f): %s\n", worst,
            RSS_TARGET_KB, verdict(worst, RSS_TARGET_KB, 0));
    for (int i = 0; i < BENCH_SCENARIOS; i++)
        if (ran[i] < 0)
            fprintf(f, "- %s: FAILED (see the errors above)\n", bench_scenarios[i].title);
}

static void
write_report(FILE *f, const bench_suite_t *s, int rounds, runs_t runs, const int *ran)
{
    fprintf(f, "## micromsg against raw rabbitmq-c%s\n\n", s->quick ? " (quick run)" : "");
    machine_facts(f);
    fprintf(f,
            "- %d round%s, A then B in odd rounds, B then A in even ones; figures are "
            "medians, B/A the median of the per-round ratios\n",
            rounds, rounds == 1 ? "" : "s");
    throughput_table(f, rounds, runs, ran);
    cpu_table(f, rounds, runs, ran);
    other_targets(f, rounds, runs, ran);
}

void
bench_report(const bench_suite_t *s, int rounds, bench_run_t (*runs)[2][16], const int *ran)
{
    write_report(stdout, s, rounds, runs, ran);
    if (s->out == NULL)
        return;
    FILE *f = fopen(s->out, "w");
    if (f == NULL) {
        perror(s->out);
        return;
    }
    write_report(f, s, rounds, runs, ran);
    fclose(f);
}
