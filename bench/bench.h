/*
 * What the benchmark's roles share: the body both sides send, clocks, CPU and
 * memory accounting, and the line protocol between a role process and the
 * driver (bench/driver.c):
 *   READY\n                       a server or listener is consuming
 *   RESULT key=value ...\n        the role's figures, then it exits
 * Keys: n (messages measured), rate (messages/s), p50_us, p99_us, cpu_us (user
 * + system CPU per message), rss_kb (peak resident set of the process),
 * anon_kb and file_kb (the resident set now: anonymous memory, mapped files).
 */
#ifndef MM_BENCH_H
#define MM_BENCH_H

#include <stddef.h>
#include <stdint.h>

/* The body: msgpack [seq, send time in ns], both as 64-bit unsigned, so every
 * message is BENCH_BODY bytes whatever its sequence number. */
#define BENCH_BODY 19

/* A role's parameters, the same for both implementations. */
typedef struct {
    const char *uri;  /* amqp://... of the broker ($MM_URI) */
    const char *name; /* a name unique to this run: service, queue or target */
    long n;           /* messages measured */
    long warmup;      /* messages before the measurement starts */
    int window;       /* requests in flight / unconfirmed tasks */
    int prefetch;     /* consumer prefetch */
    int persistent;   /* tasks: delivery mode 2 */
    int qos;          /* micromsg: MM_OPT_QOS */
    int headers;      /* raw: publish micromsg's AMQP properties (__mms, idRequest,
                         uuid ids, expiration, message_id), to tell the protocol's
                         cost from the implementation's; micromsg ignores it */
} bench_args_t;

uint64_t bench_now_ns(void);
/* User + system CPU of this process so far, in microseconds. */
uint64_t bench_cpu_us(void);
/* Peak resident set of this process, in KiB. */
long bench_peak_rss_kb(void);

void bench_body_pack(uint8_t out[BENCH_BODY], uint64_t seq, uint64_t t_ns);
/* 0 if p holds a body of ours. */
int bench_body_unpack(const void *p, size_t len, uint64_t *seq, uint64_t *t_ns);

/* Latencies in a log-linear histogram: 128 buckets per power of two (under
 * 0.8 % error), 30 KB whatever the count, so that the clients' memory is
 * theirs and not the benchmark's. */
#define BENCH_HIST_BUCKETS 7424
typedef struct {
    uint32_t count[BENCH_HIST_BUCKETS];
    uint64_t n;
} bench_hist_t;
void bench_hist_add(bench_hist_t *h, uint64_t v);
/* The pct-th percentile (0..100) of what was added, 0 when empty. */
uint64_t bench_hist_percentile(const bench_hist_t *h, int pct);

void bench_ready(void);
/* Prints "RESULT " and the formatted key=value pairs, then a newline. */
void bench_result(const char *fmt, ...) __attribute__((format(printf, 1, 2)));
/* Prints the message to stderr and exits with status 1. */
void bench_die(const char *fmt, ...) __attribute__((format(printf, 1, 2), noreturn));

/* A measured span: CPU and wall clock at its start. */
typedef struct {
    uint64_t t0_ns, cpu0_us;
} bench_span_t;
void bench_span_start(bench_span_t *s);
/* "n=… rate=… cpu_us=… rss_kb=…" for n messages since s started, printed as a
 * RESULT with the extra pairs in extra (may be ""). */
void bench_span_report(const bench_span_t *s, long n, const char *extra);

#endif
