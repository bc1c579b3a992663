/*
 * Fixture pieces for integration tests: the test owns one event_base and
 * attaches every mm_t to it; an event recorder; a probe for a requester's
 * final answer; small readers of decoded bodies.
 */
#ifndef MMT_FX_H
#define MMT_FX_H

#include <stdbool.h>

#include "micromsg.h"

struct event_base;

/* A new event_base (asserted). */
struct event_base *mmt_base_new(void);

/* Assert that the base holds no events (free every mm_t first), then free it. */
void mmt_base_free(struct event_base *base);

/* ---- instance events ---- */

#define MMT_EV_TYPES 24

/* Instance events counted by type, the last one of each type kept. */
struct mmt_evlog {
    int n;                   /* events of any type */
    bool seen[MMT_EV_TYPES]; /* at least one: a flag for MMT_WAIT */
    int count[MMT_EV_TYPES];
    int code[MMT_EV_TYPES];
    char text[MMT_EV_TYPES][256], route[MMT_EV_TYPES][256], request_id[MMT_EV_TYPES][160];
};

/* mm_event_fn recording into the struct mmt_evlog `log`. */
void mmt_on_event(mm_t *mm, const mm_event_t *ev, void *log);

/* A new instance of `service` attached to `base`, with `opts` (NULL: the defaults) and
 * its events recorded in `log` (NULL: not recorded). */
mm_t *mmt_instance(struct event_base *base, const char *service, const mm_opts_t *opts,
                   struct mmt_evlog *log);

/* mm_handle, asserted, with this prefetch (0: the default); the route. */
mm_route_t *mmt_handle(mm_t *mm, const char *route, mm_msg_fn fn, void *ud, uint16_t prefetch);

/* mm_connect to $MM_TEST_URI, asserted (the failure names the instance's last error). */
void mmt_connect(mm_t *mm);

/* The local TCP port of the instance's connection (for mmt_kill_connection). */
int mmt_local_port(mm_t *mm);

/* ---- a requester's final answer ---- */

/* Zero-initialise it ({0}); mmt_probe_free it at the end. */
struct mmt_probe {
    bool done;                /* the final answer came */
    int calls;                /* callbacks, stream parts included */
    int status;               /* mm_msg_status of the final answer */
    char code[64], text[256]; /* its error code and text */
    char str[256];            /* its body when that is a string, else "" */
    msgpack_sbuffer body;     /* its raw body */
    mm_msg_t *msg;            /* the final message, kept */
};

/* mm_msg_fn filling the struct mmt_probe `probe`. */
void mmt_on_reply(mm_msg_t *msg, void *probe);

/* Release what the probe keeps. */
void mmt_probe_free(struct mmt_probe *p);

/* ---- decoded bodies ---- */

/* The value of `key` in the map m; NULL when m is not a map or has no such key. */
const msgpack_object *mmt_map_get(const msgpack_object *m, const char *key);

/* o is the string s. */
bool mmt_is_str(const msgpack_object *o, const char *s);

#endif
