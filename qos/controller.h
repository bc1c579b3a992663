/*
 * The QoS controller: pure decisions, no clock, no I/O (unit-tested with
 * injected samples). Each sample interval the samplers measure the loop's
 * lag and the process's memory; the controller turns that into a level of
 * parallelism for the routes subject to quota, applied as their prefetch
 * (0: consumers cancelled). PROTOCOL.md 8 describes the reference, which
 * starts at 1 and grows by 10 per sample; this one doubles while no
 * pressure was ever seen (full speed in a few samples) and grows additively
 * after the first pressure.
 * qos/qos.c feeds it and applies its level.
 */
#ifndef MM_QOS_CONTROLLER_H
#define MM_QOS_CONTROLLER_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

/* Pressure kinds (bits). */
#define MMI_QOS_LAG 1u  /* the loop is late */
#define MMI_QOS_MEM 2u  /* memory above the soft limit */
#define MMI_QOS_HARD 4u /* memory reached the hard limit: until back under the soft one */

typedef struct mmi_qos_limits {
    uint32_t lag_ms;       /* lag above this is pressure; 0: not watched */
    uint64_t mem_soft;     /* bytes; 0: not watched */
    uint64_t mem_hard;     /* bytes, >= mem_soft; 0: none */
    uint32_t max_level;    /* the most it grants (>= 1) */
    uint32_t calm_samples; /* samples without pressure before growing again after one */
} mmi_qos_limits_t;

typedef struct mmi_qos_sample {
    int64_t lag_ms; /* how late the sample timer fired */
    uint64_t rss;   /* resident memory, bytes */
    bool saturated; /* some adaptive route had its whole prefetch in flight */
} mmi_qos_sample_t;

typedef struct mmi_qos_ctl {
    mmi_qos_limits_t lim;
    uint32_t level;     /* parallelism now; 0: paused */
    uint32_t before;    /* the level when the current pressure began */
    unsigned pressure;  /* MMI_QOS_* now */
    bool seen_pressure; /* growth is additive from the first pressure on */
    uint32_t calm;      /* samples without pressure in a row */
} mmi_qos_ctl_t;

void mmi_qos_init(mmi_qos_ctl_t *c, const mmi_qos_limits_t *lim, uint32_t start);

/*
 * One sample. Returns the new level; *ret_started and *ret_released get the
 * pressure kinds that began and ended with this sample (for the pressure
 * events, each raised once per transition). Lag or the hard limit: 0 (pause);
 * released: resume at half the level before the pressure. Soft limit:
 * halve (at least 1). Calm and saturated: grow.
 */
uint32_t mmi_qos_step(mmi_qos_ctl_t *c, const mmi_qos_sample_t *s, unsigned *ret_started,
                      unsigned *ret_released);

/* Share `level` among n adaptive routes: each at least 1 while level > 0, the
 * remainder to the first ones; 0 pauses them all. */
void mmi_qos_split(uint32_t level, size_t n, uint16_t *out);

/* A route's byte budget (max_parallel_bytes): what is in flight, and whether
 * consumption is paused until it falls below 70 % of the budget. */
typedef struct mmi_qos_bytes {
    uint64_t budget, in_flight;
    bool paused;
} mmi_qos_bytes_t;

/* A delivery of `size` bytes arrives: true to take it; false to give it back
 * (requeue) and pause. A message larger than the whole budget is taken when
 * nothing else is in flight (it would never fit otherwise). */
bool mmi_qos_bytes_admit(mmi_qos_bytes_t *b, uint64_t size);

/* A taken delivery is settled: true when consumption may resume. */
bool mmi_qos_bytes_done(mmi_qos_bytes_t *b, uint64_t size);

#endif
