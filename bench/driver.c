/*
 * Runs the scenarios: each side of each scenario in its own pair of
 * processes (this program again, as "mm_bench role ..."), A then B, then
 * B then A in the next round, so that both meet the same broker in the same state.
 */
#include "driver.h"

#include <errno.h>
#include <stdbool.h>
#include <poll.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/wait.h>
#include <unistd.h>

#include "bench.h"

/* Prefetch of every consumer, both sides: the RPC server must not cap 128
 * requests in flight. */
#define PREFETCH "256"

/* clang-format off */
const bench_scenario_t bench_scenarios[BENCH_SCENARIOS] = {
    /* id, title, server role, client role, window, persistent, n, n quick, warmup,
     * sides, QoS per side, -H per side, target B/A, names of the sides */
    {"rpc1", "RPC, 1 in flight", "rpc-server", "rpc-client", 1, 0, 20000, 1000, 300,
     {"raw", "mm"}, {0, 0}, {0, 0}, 0.95, "raw rabbitmq-c", "micromsg", 0},
    {"rpc16", "RPC, 16 in flight", "rpc-server", "rpc-client", 16, 0, 40000, 4000, 1000,
     {"raw", "mm"}, {0, 0}, {0, 0}, 0.95, "raw rabbitmq-c", "micromsg", 0},
    {"rpc128", "RPC, 128 in flight", "rpc-server", "rpc-client", 128, 0, 60000, 6000, 2000,
     {"raw", "mm"}, {0, 0}, {0, 0}, 0.95, "raw rabbitmq-c", "micromsg", 0},
    {"events", "events end to end", "ev-listen", "ev-emit", 1, 0, 100000, 10000, 2000,
     {"raw", "mm"}, {0, 0}, {0, 0}, 0.95, "raw rabbitmq-c", "micromsg", 0},
    {"tasks", "tasks, transient, confirmed", "task-work", "task-pub", 1000, 0, 60000, 6000, 2000,
     {"raw", "mm"}, {0, 0}, {0, 0}, 0.90, "raw rabbitmq-c", "micromsg", 0},
    {"ptasks", "tasks, persistent, confirmed", "task-work", "task-pub", 1000, 1, 40000, 4000, 2000,
     {"raw", "mm"}, {0, 0}, {0, 0}, 0.90, "raw rabbitmq-c", "micromsg", 0},
    {"qos", "RPC, 128 in flight, QoS off vs on", "rpc-server", "rpc-client", 128, 0, 60000, 6000,
     2000, {"mm", "mm"}, {0, 1}, {0, 0}, 0, "micromsg", "micromsg + QoS", 0},
    /* The same bytes on the wire: raw rabbitmq-c sending micromsg's properties
     * (-H), to tell the protocol's cost from the implementation's. */
    {"rpc1h", "RPC, 1 in flight, same bytes", "rpc-server", "rpc-client", 1, 0, 20000, 1000,
     300, {"raw", "mm"}, {0, 0}, {1, 0}, 0, "raw + protocol headers", "micromsg", 0},
    {"rpc16h", "RPC, 16 in flight, same bytes", "rpc-server", "rpc-client", 16, 0, 40000, 4000,
     1000, {"raw", "mm"}, {0, 0}, {1, 0}, 0, "raw + protocol headers", "micromsg", 0},
    {"eventsh", "events, same bytes", "ev-listen", "ev-emit", 1, 0, 100000, 10000, 2000,
     {"raw", "mm"}, {0, 0}, {1, 0}, 0, "raw + protocol headers", "micromsg", 0},
    {"ptasksh", "tasks, persistent, same bytes", "task-work", "task-pub", 1000, 1, 40000, 4000,
     2000, {"raw", "mm"}, {0, 0}, {1, 0}, 0, "raw + protocol headers", "micromsg", 0},
    /* Topics (RabbitMQ streams): the append rate (confirmed records/s, 1000
     * unconfirmed at most) and the replay rate from the first record. */
    {"tappend", "topic append, confirmed", "topic-prep", "topic-pub", 1000, 1, 100000, 10000,
     2000, {"raw", "mm"}, {0, 0}, {0, 0}, 0, "raw rabbitmq-c", "micromsg", 1},
    {"treplay", "topic replay from first", "topic-fill", "topic-read", 1000, 1, 100000, 10000,
     2000, {"raw", "mm"}, {0, 0}, {0, 0}, 0, "raw rabbitmq-c", "micromsg", 1},
};
/* clang-format on */

typedef struct {
    pid_t pid;
    int fd;
    char buf[1024];
    size_t len;
} proc_t;

static void
add_arg(char **argv, int *argc, const char *a)
{
    argv[(*argc)++] = (char *) a;
}

static const char *role_verb = "role";

static int
spawn(proc_t *p, const char *impl, const char *role, const char *const *opts)
{
    int fds[2];
    if (pipe(fds) != 0)
        return -1;
    p->len = 0;
    p->fd = fds[0];
    p->pid = fork();
    if (p->pid < 0)
        return -1;
    if (p->pid > 0) {
        close(fds[1]);
        return 0;
    }
    char *argv[32];
    int argc = 0;
    add_arg(argv, &argc, "mm_bench");
    add_arg(argv, &argc, role_verb);
    add_arg(argv, &argc, impl);
    add_arg(argv, &argc, role);
    for (int i = 0; opts[i] != NULL && argc < 31; i++)
        add_arg(argv, &argc, opts[i]);
    argv[argc] = NULL;
    dup2(fds[1], STDOUT_FILENO);
    close(fds[0]);
    close(fds[1]);
    execv("/proc/self/exe", argv); /* a fresh process: its own peak RSS */
    _exit(127);
}

/* The next line of p that starts with prefix (the rest of it), or NULL on
 * end of file or after timeout_ms. */
static const char *
wait_line(proc_t *p, const char *prefix, int timeout_ms)
{
    static char line[1024];
    for (;;) {
        char *nl = memchr(p->buf, '\n', p->len);
        if (nl != NULL) {
            size_t n = (size_t) (nl - p->buf);
            memcpy(line, p->buf, n);
            line[n] = '\0';
            memmove(p->buf, nl + 1, p->len - n - 1);
            p->len -= n + 1;
            if (strncmp(line, prefix, strlen(prefix)) == 0)
                return line + strlen(prefix);
            continue;
        }
        struct pollfd pfd = {.fd = p->fd, .events = POLLIN};
        if (p->len == sizeof p->buf || poll(&pfd, 1, timeout_ms) <= 0)
            return NULL;
        ssize_t r = read(p->fd, p->buf + p->len, sizeof p->buf - p->len);
        if (r <= 0 && errno != EINTR)
            return NULL;
        if (r > 0)
            p->len += (size_t) r;
    }
}

static int
reap(proc_t *p, int sig)
{
    int status = 0;
    if (p->pid <= 0)
        return -1;
    if (sig != 0)
        kill(p->pid, sig);
    waitpid(p->pid, &status, 0);
    close(p->fd);
    p->pid = 0;
    return WIFEXITED(status) ? WEXITSTATUS(status) : 128 + WTERMSIG(status);
}

/* CPU ticks of the broker ($MM_BENCH_BROKER_PID), or -1. */
static long
broker_ticks(void)
{
    const char *pid = getenv("MM_BENCH_BROKER_PID");
    char path[64], buf[1024];
    if (pid == NULL || *pid == '\0')
        return -1;
    snprintf(path, sizeof path, "/proc/%s/stat", pid);
    FILE *f = fopen(path, "r");
    if (f == NULL)
        return -1;
    size_t n = fread(buf, 1, sizeof buf - 1, f);
    fclose(f);
    buf[n] = '\0';
    const char *s = strrchr(buf, ')'); /* the command name may hold spaces */
    long ut, st;
    if (s == NULL ||
        sscanf(s + 2, "%*c %*d %*d %*d %*d %*d %*u %*u %*u %*u %*u %ld %ld", &ut, &st) != 2)
        return -1;
    return ut + st;
}

/* Reads key=value out of a RESULT line; -1 when absent. */
static double
field(const char *line, const char *key)
{
    char pat[32];
    snprintf(pat, sizeof pat, " %s=", key);
    char padded[1100];
    snprintf(padded, sizeof padded, " %s", line);
    const char *p = strstr(padded, pat);
    return p != NULL ? atof(p + strlen(pat)) : -1;
}

typedef struct {
    long n, warmup;
    char ns[24], ws[24], warms[24], name[96];
    const char *argv[20];
} role_opts_t;

static void
role_opts(role_opts_t *o, const bench_suite_t *s, const bench_scenario_t *sc, int side,
          const char *name)
{
    o->n = s->quick ? sc->n_quick : sc->n;
    o->warmup = s->quick ? sc->warmup / 4 : sc->warmup;
    snprintf(o->ns, sizeof o->ns, "%ld", o->n);
    snprintf(o->warms, sizeof o->warms, "%ld", o->warmup);
    snprintf(o->ws, sizeof o->ws, "%d", sc->window);
    snprintf(o->name, sizeof o->name, "%s", name);
    const char *base[] = {"-u", s->uri,   "-n", o->name, "-N", o->ns,
                          "-W", o->warms, "-w", o->ws,   "-p", PREFETCH};
    int i = 0;
    for (; i < (int) (sizeof base / sizeof base[0]); i++)
        o->argv[i] = base[i];
    if (sc->persistent)
        o->argv[i++] = "-P";
    if (sc->qos[side])
        o->argv[i++] = "-q";
    if (sc->headers[side])
        o->argv[i++] = "-H";
    o->argv[i] = NULL;
}

static void
fill_run(bench_run_t *r, const char *cl, const char *sv, long ticks, long msgs, int rpc,
         int client_measures)
{
    const char *measured = rpc || client_measures ? cl : sv;
    r->rate = field(measured, "rate");
    r->p50 = field(cl, "p50_us");
    r->p99 = field(cl, "p99_us");
    r->ccpu = field(cl, "cpu_us");
    r->scpu = field(sv, "cpu_us");
    r->crss = field(cl, "rss_kb");
    r->srss = field(sv, "rss_kb");
    r->pub_rate = rpc ? -1 : field(cl, "rate");
    long hz = sysconf(_SC_CLK_TCK);
    r->bcpu = ticks < 0 ? -1 : (double) ticks * 1e6 / (double) hz / (double) msgs;
}

/* One side of one scenario: server, then client, both RESULT lines. */
static int
run_once(const bench_suite_t *s, const bench_scenario_t *sc, int side, int round, bench_run_t *out)
{
    char name[96];
    snprintf(name, sizeof name, "mmb%d-%s-%d%c", (int) getpid(), sc->id, round, "ab"[side]);
    role_opts_t o;
    role_opts(&o, s, sc, side, name);
    proc_t sv = {0}, cl = {0};
    int rpc = strcmp(sc->server, "rpc-server") == 0, ok = 0;
    char svline[1024] = "", clline[1024] = "";
    long b0 = -1, b1 = -1;
    if (spawn(&sv, sc->impl[side], sc->server, o.argv) != 0 ||
        wait_line(&sv, "READY", 30000) == NULL)
        goto done;
    b0 = broker_ticks();
    if (spawn(&cl, sc->impl[side], sc->client, o.argv) != 0)
        goto done;
    const char *l = wait_line(&cl, "RESULT ", 300000);
    if (l != NULL)
        snprintf(clline, sizeof clline, "%s", l);
    l = l != NULL ? wait_line(&sv, "RESULT ", 60000) : NULL;
    if (l != NULL)
        snprintf(svline, sizeof svline, "%s", l);
    b1 = broker_ticks();
    ok = l != NULL;
done:;
    int rc_c = reap(&cl, ok ? 0 : SIGKILL);
    int rc_s = reap(&sv, rpc || !ok ? SIGTERM : 0);
    if (!ok || rc_c > 0 || (rc_s > 0 && !(rpc && rc_s == 128 + SIGTERM))) {
        fprintf(stderr, "mm_bench: %s (%s) failed: client exit %d, server exit %d\n", sc->id,
                sc->impl[side], rc_c, rc_s);
        return -1;
    }
    fill_run(out, clline, svline, b0 < 0 || b1 < 0 ? -1 : b1 - b0, o.n + o.warmup, rpc,
             sc->client_measures);
    return 0;
}

static int
selected(const bench_suite_t *s, const char *id)
{
    if (s->only == NULL)
        return 1;
    size_t n = strlen(id);
    for (const char *p = s->only; (p = strstr(p, id)) != NULL; p += n)
        if ((p == s->only || p[-1] == ',') && (p[n] == '\0' || p[n] == ','))
            return 1;
    return 0;
}

/* [#####.....] 12/66 rpc16 micromsg, rewritten in place */
static void
progress_bar(int done, int total, const bench_scenario_t *sc, int side)
{
    char bar[31];
    int fill = total > 0 ? done * 30 / total : 30;
    for (int i = 0; i < 30; i++)
        bar[i] = i < fill ? '#' : '.';
    bar[30] = '\0';
    fprintf(stderr, "\r  [%s] %d/%d %-8s %-22s", bar, done, total, sc->id,
            side ? sc->b_name : sc->a_name);
    if (done == total)
        fputc('\n', stderr);
    fflush(stderr);
}

const char *
bench_unknown_scenario(const char *only)
{
    static char id[32];
    for (const char *p = only; p != NULL && *p != '\0';) {
        size_t n = strcspn(p, ",");
        snprintf(id, sizeof id, "%.*s", (int) n, p);
        bool known = false;
        for (int i = 0; i < BENCH_SCENARIOS && !known; i++)
            known = strcmp(bench_scenarios[i].id, id) == 0;
        if (!known)
            return id;
        p += n + (p[n] == ',');
    }
    return NULL;
}

static void
progress(const bench_scenario_t *sc, int side, int round, const bench_run_t *r)
{
    fprintf(stderr, "  round %d %-7s %-16s %9.0f /s  client %6.2f us/msg  server %6.2f us/msg",
            round + 1, sc->id, side ? sc->b_name : sc->a_name, r->rate, r->ccpu, r->scpu);
    if (r->p50 >= 0)
        fprintf(stderr, "  p50 %.0f p99 %.0f us", r->p50, r->p99);
    fputc('\n', stderr);
}

int
bench_suite_run(const bench_suite_t *s)
{
    int rounds = s->rounds > 0 ? s->rounds : s->quick ? 3 : 5;
    if (rounds > 16)
        rounds = 16;
    static bench_run_t runs[BENCH_SCENARIOS][2][16];
    int ran[BENCH_SCENARIOS] = {0}, failed = 0, done = 0, total = 0;
    for (int i = 0; i < BENCH_SCENARIOS; i++)
        total += 2 * rounds * (ran[i] = selected(s, bench_scenarios[i].id));
    if (s->role_verb != NULL)
        role_verb = s->role_verb;
    signal(SIGPIPE, SIG_IGN);
    for (int round = 0; round < rounds; round++)
        for (int i = 0; i < BENCH_SCENARIOS; i++)
            for (int k = 0; k < 2 && ran[i] > 0; k++) {
                /* A B, then B A: whatever drifts within a round (the broker's
                 * state, the machine's load) favours neither side. */
                int side = round % 2 ? 1 - k : k;
                int rc = run_once(s, &bench_scenarios[i], side, round, &runs[i][side][round]);
                if (rc != 0)
                    ran[i] = -1;
                failed |= rc != 0;
                if (s->bar)
                    progress_bar(++done, total, &bench_scenarios[i], side);
                else if (rc == 0)
                    progress(&bench_scenarios[i], side, round, &runs[i][side][round]);
            }
    if (s->bar && done < total) /* a scenario failed: its runs were skipped */
        fputc('\n', stderr);
    bench_report(s, rounds, runs, ran);
    return failed;
}
