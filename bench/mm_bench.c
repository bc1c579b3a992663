/*
 * micromsg throughput, measured the way ../shared/bench/rawc measures raw
 * rabbitmq-c, so that the two can be divided (run them back to back on the
 * same broker):
 *   mm_bench rpc [-w in_flight] [-N requests] [-t timeout_ms, -1: none]
 *                                                request/reply, server in a child process
 *   mm_bench events [-N events]                  emit -> one listening instance (child)
 * The broker is $MM_URI (default amqp://localhost). Bodies are small msgpack
 * arrays [seq, send time in ns] like rawc's 20-byte bodies.
 */
#include <event2/event.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#include "micromsg.h"

static uint64_t
now_ns(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (uint64_t) ts.tv_sec * 1000000000u + (uint64_t) ts.tv_nsec;
}

static void
die(mm_t *mm, const char *what)
{
    fprintf(stderr, "mm_bench: %s: %s\n", what, mm ? mm_last_error(mm) : "");
    exit(1);
}

static unsigned opt_flags; /* -q: MM_OPT_QOS on every instance (only consumers feel it) */

static mm_t *
start(const char *service)
{
    mm_opts_t o = MM_OPTS_INIT;
    o.flags = opt_flags;
    mm_t *mm = mm_new(service, &o);
    if (mm == NULL)
        die(NULL, "mm_new");
    return mm;
}

static size_t
pack_sample(char *buf, size_t cap, uint64_t seq, uint64_t t)
{
    msgpack_sbuffer sb = {.data = buf, .size = 0, .alloc = cap};
    msgpack_packer pk;
    msgpack_packer_init(&pk, &sb, msgpack_sbuffer_write);
    msgpack_pack_array(&pk, 2);
    msgpack_pack_uint64(&pk, seq);
    msgpack_pack_uint64(&pk, t);
    return sb.size; /* 20 bytes at most: never reallocates */
}

/* ---- child processes ---- */

static void
on_echo(mm_msg_t *msg, void *ud)
{
    (void) ud;
    size_t len;
    const void *raw = mm_msg_body_raw(msg, &len);
    mm_msg_reply(msg, raw, len);
}

static pid_t
fork_server(const char *service, int ready_fd)
{
    pid_t pid = fork();
    if (pid != 0)
        return pid;
    mm_t *mm = start(service);
    mm_route_opts_t ro = MM_ROUTE_OPTS_INIT;
    ro.prefetch = 512; /* as rawc's rpc_server */
    if (mm_handle(mm, "echo", on_echo, NULL, &ro, NULL) != MM_OK || mm_connect(mm, NULL) != MM_OK)
        die(mm, "server");
    if (write(ready_fd, "R", 1) != 1)
        exit(1);
    mm_run(mm); /* until killed */
    exit(0);
}

/* ---- rpc client ---- */

struct rpc {
    mm_t *mm;
    const char *service;
    long n, sent, done, warmup;
    int64_t timeout_ms;
    uint64_t t0;
    uint64_t *lat;
};

static void send_one(struct rpc *r);

static void
on_reply(mm_msg_t *msg, void *ud)
{
    struct rpc *r = ud;
    if (mm_msg_status(msg) != MM_OK) {
        fprintf(stderr, "mm_bench: request failed: %s\n", mm_msg_error_text(msg));
        exit(1);
    }
    const msgpack_object *b = mm_msg_body(msg);
    uint64_t sent = b->via.array.ptr[1].via.u64;
    long i = r->done++ - r->warmup;
    if (i == 0)
        r->t0 = now_ns();
    if (i >= 0 && i < r->n)
        r->lat[i] = now_ns() - sent;
    if (r->sent < r->n + r->warmup)
        send_one(r);
    else if (r->done == r->n + r->warmup)
        mm_stop(r->mm);
}

static void
send_one(struct rpc *r)
{
    char buf[32];
    size_t len = pack_sample(buf, sizeof buf, (uint64_t) r->sent++, now_ns());
    mm_request_opts_t o = MM_REQUEST_OPTS_INIT;
    o.timeout_ms = r->timeout_ms;
    if (mm_request(r->mm, r->service, "echo", buf, len, &o, on_reply, r, NULL) != MM_OK)
        die(r->mm, "mm_request");
}

static int
cmp_u64(const void *a, const void *b)
{
    uint64_t x = *(const uint64_t *) a, y = *(const uint64_t *) b;
    return x < y ? -1 : x > y;
}

static int
bench_rpc(long n, int window, int64_t timeout_ms)
{
    char service[64];
    snprintf(service, sizeof service, "mm-bench-%d", (int) getpid());
    int fds[2];
    char c;
    if (pipe(fds) != 0)
        return 1;
    pid_t pid = fork_server(service, fds[1]);
    if (read(fds[0], &c, 1) != 1)
        return 1;
    struct rpc r = {.mm = start("mm-bench-client"),
                    .service = service,
                    .n = n,
                    .warmup = 500,
                    .timeout_ms = timeout_ms};
    r.lat = calloc((size_t) n, sizeof *r.lat);
    if (mm_connect(r.mm, NULL) != MM_OK)
        die(r.mm, "client connect");
    for (int i = 0; i < window; i++)
        send_one(&r);
    mm_run(r.mm);
    double secs = (double) (now_ns() - r.t0) / 1e9;
    qsort(r.lat, (size_t) n, sizeof *r.lat, cmp_u64);
    printf("micromsg rpc w=%d%s: %ld requests in %.2f s: %.0f req/s, p50 %.0f us, p99 %.0f us\n",
           window, timeout_ms < 0 ? " (no timeout)" : "", n, secs, (double) n / secs,
           (double) r.lat[n / 2] / 1e3, (double) r.lat[n * 99 / 100] / 1e3);
    kill(pid, SIGTERM);
    waitpid(pid, NULL, 0);
    free(r.lat);
    mm_free(r.mm);
    return 0;
}

/* ---- events ---- */

struct sub {
    mm_t *mm;
    long n, got;
    uint64_t first_sent;
};

static void
on_event(mm_msg_t *msg, void *ud)
{
    struct sub *s = ud;
    const msgpack_object *b = mm_msg_body(msg);
    if (s->got++ == 0)
        s->first_sent = b->via.array.ptr[1].via.u64;
    if (s->got == s->n) {
        double secs = (double) (now_ns() - s->first_sent) / 1e9;
        printf("micromsg events: %ld events end to end in %.2f s: %.0f events/s\n", s->n, secs,
               (double) s->n / secs);
        fflush(stdout);
        mm_stop(s->mm);
    }
}

static int
bench_events(long n)
{
    char target[64];
    snprintf(target, sizeof target, "mm-bench-ev-%d", (int) getpid());
    int fds[2];
    char c;
    if (pipe(fds) != 0)
        return 1;
    pid_t pid = fork();
    if (pid == 0) {
        struct sub s = {.mm = start("mm-bench-sub"), .n = n};
        mm_route_opts_t ro = MM_ROUTE_OPTS_INIT;
        ro.prefetch = 1000;
        if (mm_listen(s.mm, target, "x", on_event, &s, &ro, NULL) != MM_OK ||
            mm_connect(s.mm, NULL) != MM_OK)
            die(s.mm, "listener");
        if (write(fds[1], "R", 1) != 1)
            exit(1);
        mm_run(s.mm);
        mm_free(s.mm);
        exit(0);
    }
    if (read(fds[0], &c, 1) != 1)
        return 1;
    mm_t *mm = start("mm-bench-pub");
    if (mm_connect(mm, NULL) != MM_OK)
        die(mm, "publisher connect");
    for (long i = 0; i < n; i++) {
        char buf[32];
        size_t len = pack_sample(buf, sizeof buf, (uint64_t) i, now_ns());
        if (mm_emit(mm, target, "x", buf, len, NULL) != MM_OK)
            die(mm, "mm_emit");
    }
    int status = 0;
    waitpid(pid, &status, 0);
    mm_free(mm);
    return WIFEXITED(status) ? WEXITSTATUS(status) : 1;
}

int
main(int argc, char **argv)
{
    long n = 20000;
    int window = 1, opt;
    int64_t timeout_ms = 0;
    const char *mode = argc > 1 ? argv[1] : "";
    optind = 2;
    while ((opt = getopt(argc, argv, "w:N:t:q")) != -1) {
        if (opt == 'q')
            opt_flags |= MM_OPT_QOS;
        else if (opt == 't')
            timeout_ms = atoll(optarg);
        else if (opt == 'w')
            window = atoi(optarg);
        else if (opt == 'N')
            n = atol(optarg);
        else
            return 64;
    }
    if (strcmp(mode, "rpc") == 0 && n > 0 && window > 0)
        return bench_rpc(n, window, timeout_ms);
    if (strcmp(mode, "events") == 0 && n > 0)
        return bench_events(n);
    fprintf(stderr, "usage: mm_bench rpc [-w in_flight] [-N requests] [-t timeout_ms] [-q] | "
                    "events [-N events] [-q]   (-q: QoS on)\n");
    return 64;
}
