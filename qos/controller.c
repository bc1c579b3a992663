/* The QoS controller (see controller.h). */
#include "controller.h"

void
mmi_qos_init(mmi_qos_ctl_t *c, const mmi_qos_limits_t *lim, uint32_t start)
{
    *c = (mmi_qos_ctl_t){.lim = *lim};
    if (c->lim.max_level == 0)
        c->lim.max_level = 1;
    c->level = start == 0 ? 1 : start > c->lim.max_level ? c->lim.max_level : start;
}

static unsigned
measure(const mmi_qos_ctl_t *c, const mmi_qos_sample_t *s)
{
    const mmi_qos_limits_t *l = &c->lim;
    unsigned p = 0;
    if (l->lag_ms > 0 && s->lag_ms > (int64_t) l->lag_ms)
        p |= MMI_QOS_LAG;
    if (l->mem_soft > 0 && s->rss >= l->mem_soft)
        p |= MMI_QOS_MEM;
    if (l->mem_hard > 0 && s->rss >= l->mem_hard)
        p |= MMI_QOS_HARD | MMI_QOS_MEM;
    /* Past the hard limit: stopped until back under the soft one. */
    if ((c->pressure & MMI_QOS_HARD) && (p & MMI_QOS_MEM))
        p |= MMI_QOS_HARD;
    return p;
}

static uint32_t
grow(const mmi_qos_ctl_t *c)
{
    uint64_t next = c->seen_pressure ? c->level + (c->level / 8 > 1 ? c->level / 8 : 1)
                                     : (uint64_t) c->level * 2;
    return next > c->lim.max_level ? c->lim.max_level : (uint32_t) next;
}

static uint32_t
calm_level(const mmi_qos_ctl_t *c, bool saturated)
{
    if (c->level == 0) /* resume at a reduced level */
        return c->before / 2 > 1 ? c->before / 2 : 1;
    bool rested = !c->seen_pressure || c->calm >= c->lim.calm_samples;
    return saturated && rested ? grow(c) : c->level;
}

uint32_t
mmi_qos_step(mmi_qos_ctl_t *c, const mmi_qos_sample_t *s, unsigned *ret_started,
             unsigned *ret_released)
{
    unsigned now = measure(c, s);
    *ret_started = now & ~c->pressure;
    *ret_released = c->pressure & ~now;
    if (now != 0 && c->pressure == 0) {
        c->before = c->level;
        c->seen_pressure = true;
    }
    uint32_t level;
    if (now & (MMI_QOS_LAG | MMI_QOS_HARD))
        level = 0;
    else if (now & MMI_QOS_MEM)
        level = c->level / 2 > 1 ? c->level / 2 : 1;
    else
        level = calm_level(c, s->saturated);
    c->calm = now != 0 ? 0 : c->calm + 1;
    if (level != c->level && now == 0 && c->level != 0)
        c->calm = 0; /* each growth waits its own calm period */
    c->pressure = now;
    c->level = level;
    return level;
}

void
mmi_qos_split(uint32_t level, size_t n, uint16_t *out)
{
    if (n == 0)
        return;
    uint32_t each = level / (uint32_t) n, extra = level % (uint32_t) n;
    for (size_t i = 0; i < n; i++) {
        uint32_t v = level == 0 ? 0 : each + (i < extra ? 1 : 0);
        if (level > 0 && v == 0)
            v = 1;
        out[i] = (uint16_t) (v > UINT16_MAX ? UINT16_MAX : v);
    }
}

bool
mmi_qos_bytes_admit(mmi_qos_bytes_t *b, uint64_t size)
{
    if (b->budget == 0) {
        b->in_flight += size;
        return true;
    }
    bool fits = b->in_flight + size <= b->budget || b->in_flight == 0;
    if (b->paused || !fits) {
        b->paused = true;
        return false;
    }
    b->in_flight += size;
    return true;
}

bool
mmi_qos_bytes_done(mmi_qos_bytes_t *b, uint64_t size)
{
    b->in_flight = size > b->in_flight ? 0 : b->in_flight - size;
    if (b->paused && b->in_flight * 10 < b->budget * 7) {
        b->paused = false;
        return true;
    }
    return false;
}
