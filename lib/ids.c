/*
 * Random UUIDs (version 4) for instance ids, correlation ids, request ids
 * and queue names: two per request, so they must be cheap. libuuid reseeds
 * from several system calls on every call; here each instance seeds a
 * xoshiro256** generator once from getrandom(). Ids need to be unique, not
 * secret, and an instance is not used across fork().
 */
#include <string.h>
#include <sys/random.h>
#include <time.h>
#include <unistd.h>

#include "internal.h"

static uint64_t
rotl(uint64_t x, int k)
{
    return (x << k) | (x >> (64 - k));
}

static uint64_t
next(uint64_t s[4])
{
    uint64_t result = rotl(s[1] * 5, 7) * 9, t = s[1] << 17;
    s[2] ^= s[0];
    s[3] ^= s[1];
    s[1] ^= s[2];
    s[0] ^= s[3];
    s[2] ^= t;
    s[3] = rotl(s[3], 45);
    return result;
}

/* splitmix64: spreads a weak fallback seed over the whole state */
static uint64_t
splitmix(uint64_t *x)
{
    uint64_t z = (*x += 0x9e3779b97f4a7c15u);
    z = (z ^ (z >> 30)) * 0xbf58476d1ce4e5b9u;
    z = (z ^ (z >> 27)) * 0x94d049bb133111ebu;
    return z ^ (z >> 31);
}

void
mmi_ids_seed(mm_t *mm)
{
    if (getrandom(mm->rng, sizeof mm->rng, 0) == (ssize_t) sizeof mm->rng &&
        (mm->rng[0] | mm->rng[1] | mm->rng[2] | mm->rng[3]) != 0)
        return;
    struct timespec ts;
    clock_gettime(CLOCK_REALTIME, &ts);
    uint64_t x = (uint64_t) ts.tv_nsec ^ ((uint64_t) ts.tv_sec << 20) ^
                 ((uint64_t) getpid() << 40) ^ (uint64_t) (uintptr_t) mm;
    for (int i = 0; i < 4; i++)
        mm->rng[i] = splitmix(&x);
}

void
mmi_make_id(mm_t *mm, char out[37])
{
    static const char hex[] = "0123456789abcdef";
    uint8_t b[16];
    uint64_t hi = next(mm->rng), lo = next(mm->rng);
    for (int i = 0; i < 8; i++) {
        b[i] = (uint8_t) (hi >> (56 - 8 * i));
        b[8 + i] = (uint8_t) (lo >> (56 - 8 * i));
    }
    b[6] = (uint8_t) ((b[6] & 0x0f) | 0x40); /* version 4 */
    b[8] = (uint8_t) ((b[8] & 0x3f) | 0x80); /* RFC 4122 variant */
    char *p = out;
    for (int i = 0; i < 16; i++) {
        if (i == 4 || i == 6 || i == 8 || i == 10)
            *p++ = '-';
        *p++ = hex[b[i] >> 4];
        *p++ = hex[b[i] & 15];
    }
    *p = '\0';
}
