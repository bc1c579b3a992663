/* What both implementations' roles share (see bench.h). */
#include "bench.h"

#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/resource.h>
#include <time.h>

uint64_t
bench_now_ns(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (uint64_t) ts.tv_sec * 1000000000u + (uint64_t) ts.tv_nsec;
}

uint64_t
bench_cpu_us(void)
{
    struct rusage ru;
    getrusage(RUSAGE_SELF, &ru);
    return (uint64_t) (ru.ru_utime.tv_sec + ru.ru_stime.tv_sec) * 1000000u +
           (uint64_t) (ru.ru_utime.tv_usec + ru.ru_stime.tv_usec);
}

long
bench_peak_rss_kb(void)
{
    struct rusage ru;
    getrusage(RUSAGE_SELF, &ru);
    return ru.ru_maxrss; /* Linux: KiB */
}

static void
put_u64(uint8_t *p, uint64_t v)
{
    p[0] = 0xcf; /* msgpack uint 64 */
    for (int i = 0; i < 8; i++)
        p[1 + i] = (uint8_t) (v >> (56 - 8 * i));
}

static uint64_t
get_u64(const uint8_t *p)
{
    uint64_t v = 0;
    for (int i = 0; i < 8; i++)
        v = v << 8 | p[1 + i];
    return v;
}

void
bench_body_pack(uint8_t out[BENCH_BODY], uint64_t seq, uint64_t t_ns)
{
    out[0] = 0x92; /* fixarray of 2 */
    put_u64(out + 1, seq);
    put_u64(out + 10, t_ns);
}

int
bench_body_unpack(const void *p, size_t len, uint64_t *seq, uint64_t *t_ns)
{
    const uint8_t *b = p;
    if (len != BENCH_BODY || b[0] != 0x92 || b[1] != 0xcf || b[10] != 0xcf)
        return -1;
    *seq = get_u64(b + 1);
    *t_ns = get_u64(b + 10);
    return 0;
}

/* Values under 256 have a bucket each; above, the 8 leading bits choose
 * among 128 buckets per power of two. */
static int
hist_bucket(uint64_t v)
{
    if (v < 256)
        return (int) v;
    int shift = 63 - __builtin_clzll(v) - 7; /* v >> shift is in [128, 256) */
    return 256 + (shift - 1) * 128 + (int) ((v >> shift) - 128);
}

static uint64_t
hist_value(int i) /* the middle of bucket i */
{
    if (i < 256)
        return (uint64_t) i;
    int shift = (i - 256) / 128 + 1;
    uint64_t top = (uint64_t) ((i - 256) % 128 + 128);
    return (top << shift) + ((uint64_t) 1 << (shift - 1));
}

void
bench_hist_add(bench_hist_t *h, uint64_t v)
{
    h->count[hist_bucket(v)]++;
    h->n++;
}

uint64_t
bench_hist_percentile(const bench_hist_t *h, int pct)
{
    uint64_t want = h->n * (uint64_t) pct / 100, seen = 0;
    for (int i = 0; i < BENCH_HIST_BUCKETS; i++) {
        seen += h->count[i];
        if (seen > want)
            return hist_value(i);
    }
    return 0;
}

void
bench_ready(void)
{
    fputs("READY\n", stdout);
    fflush(stdout);
}

void
bench_result(const char *fmt, ...)
{
    va_list ap;
    va_start(ap, fmt);
    fputs("RESULT ", stdout);
    vfprintf(stdout, fmt, ap);
    fputc('\n', stdout);
    fflush(stdout);
    va_end(ap);
}

void
bench_die(const char *fmt, ...)
{
    va_list ap;
    va_start(ap, fmt);
    fputs("mm_bench: ", stderr);
    vfprintf(stderr, fmt, ap);
    fputc('\n', stderr);
    va_end(ap);
    exit(1);
}

/* A line "Key:   123 kB" of /proc/self/status, in KiB, or -1. */
static long
status_kb(const char *key)
{
    FILE *f = fopen("/proc/self/status", "r");
    char line[128];
    long v = -1;
    size_t n = strlen(key);
    while (f != NULL && fgets(line, sizeof line, f) != NULL)
        if (strncmp(line, key, n) == 0 && line[n] == ':')
            v = atol(line + n + 1);
    if (f != NULL)
        fclose(f);
    return v;
}

void
bench_span_start(bench_span_t *s)
{
    s->t0_ns = bench_now_ns();
    s->cpu0_us = bench_cpu_us();
}

void
bench_span_report(const bench_span_t *s, long n, const char *extra)
{
    double secs = (double) (bench_now_ns() - s->t0_ns) / 1e9;
    double cpu = (double) (bench_cpu_us() - s->cpu0_us) / (double) (n > 0 ? n : 1);
    bench_result("n=%ld rate=%.0f cpu_us=%.2f rss_kb=%ld anon_kb=%ld file_kb=%ld%s%s", n,
                 secs > 0 ? (double) n / secs : 0, cpu, bench_peak_rss_kb(), status_kb("RssAnon"),
                 status_kb("RssFile"), *extra ? " " : "", extra);
}
