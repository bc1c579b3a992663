/*
 * The system figures QoS samples: resident memory from /proc/self/statm, and
 * the memory limit its default thresholds derive from (the cgroup's when the
 * process runs under one, as in a container, else the machine's).
 */
#include <stdio.h>
#include <string.h>
#include <unistd.h>

#include "sample.h"

uint64_t
mmi_qos_rss(void)
{
    FILE *f = fopen("/proc/self/statm", "r");
    if (f == NULL)
        return 0;
    unsigned long long size = 0, resident = 0;
    int n = fscanf(f, "%llu %llu", &size, &resident);
    fclose(f);
    long page = sysconf(_SC_PAGESIZE);
    return n == 2 && page > 0 ? (uint64_t) resident * (uint64_t) page : 0;
}

/* A limit file: a number of bytes, or "max" / absurdly large (no limit): 0. */
static uint64_t
read_limit(const char *path)
{
    FILE *f = fopen(path, "r");
    if (f == NULL)
        return 0;
    char buf[64] = "";
    char *ok = fgets(buf, sizeof buf, f);
    fclose(f);
    unsigned long long v = 0;
    if (ok == NULL || strncmp(buf, "max", 3) == 0 || sscanf(buf, "%llu", &v) != 1)
        return 0;
    return v >= (1ull << 60) ? 0 : (uint64_t) v;
}

uint64_t
mmi_qos_memory_limit(void)
{
    uint64_t v = read_limit("/sys/fs/cgroup/memory.max");
    if (v == 0)
        v = read_limit("/sys/fs/cgroup/memory/memory.limit_in_bytes");
    long pages = sysconf(_SC_PHYS_PAGES), page = sysconf(_SC_PAGESIZE);
    uint64_t phys = pages > 0 && page > 0 ? (uint64_t) pages * (uint64_t) page : 0;
    return v != 0 && (phys == 0 || v < phys) ? v : phys;
}
