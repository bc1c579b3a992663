/* What the QoS samplers read from the system (qos/sample.c). */
#ifndef MM_QOS_SAMPLE_H
#define MM_QOS_SAMPLE_H

#include <stdint.h>

/* Resident memory of this process in bytes (/proc/self/statm); 0 when unknown. */
uint64_t mmi_qos_rss(void);

/* The memory this process may use: the cgroup limit when one is set (v2, then
 * v1), else physical memory. */
uint64_t mmi_qos_memory_limit(void);

#endif
