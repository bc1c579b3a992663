/*
 * What the files of peers/ share: the module's state, the decoded status of
 * one instance, and the functions each file offers the others (peers.c:
 * lifecycle and heartbeat; members.c: sets of statuses; alive.c: the
 * peer.alive body and internal sends; status.c: status queries; wait.c:
 * mm_wait_service; latency.c: the broker latency probe). Not seen outside
 * peers/.
 */
#ifndef MM_PEERS_INT_H
#define MM_PEERS_INT_H

#include "peers.h"

#define MMI_PEER_ID_MAX 128 /* the longest instance id we accept (ours are 36) */
#define MMI_PEERS_MAX 4096  /* table and answers: a flood of ids cannot grow memory unbounded */
#define MMI_TARGET_MAX (MMI_NAME_MAX + 16) /* internal.<service> */

/* One instance's status as its peer.alive said (copied out of the message). */
typedef struct mmi_member {
    char id[MMI_PEER_ID_MAX + 1];
    char leader_id[MMI_PEER_ID_MAX + 1]; /* "" when absent */
    bool ready, master;
    int64_t uptime_ms;
    uint64_t rss;
    uint32_t known_peers;
    uint64_t seen_ms;     /* monotonic: when it was heard */
    int64_t leader_since; /* header x-mm-leader-since of its last heartbeat; 0: none */
    bool qos;             /* headers x-mm-qos-*: it runs MM_OPT_QOS (a micromsg peer) */
    uint32_t qos_level;
    unsigned qos_pressure; /* MM_PRESSURE_* */
} mmi_member_t;

/* A set of statuses keyed by id (the peer table, a query's answers). */
typedef struct mmi_members {
    mmi_member_t *v;
    size_t n, cap;
} mmi_members_t;

struct mmi_query;
struct mmi_watch;
struct mmi_waiter;

struct mmi_latency {
    mm_route_t *route;     /* internal.<service> latency.<uuid>, owned by mm */
    char route_name[48];   /* latency.<uuid> */
    struct event *timeout; /* a round whose samples stop coming back */
    unsigned next;         /* the sample expected back; 0: no round under way */
    unsigned got;
    double sum_ms;
    double avg_ms; /* -1 before the first complete round */
};

struct mmi_peers {
    mm_t *mm;
    bool active;                 /* heartbeats; false: status queries only (MM_OPT_NO_PEERS) */
    char target[MMI_TARGET_MAX]; /* internal.<service> */
    char key_req[MMI_TARGET_MAX + 32];
    mm_route_t *listen;  /* internal.<service> peer.alive.#, owned by mm; NULL: none */
    struct event *beat;  /* every heartbeat_ms while connected */
    unsigned beats;      /* heartbeats sent since attach (latency every 10) */
    mmi_members_t table; /* the instances of our service heard lately, ourselves included */
    struct mmi_latency lat;
    struct mmi_query *queries;
    struct mmi_watch *watches;
    struct mmi_waiter *waiters;
};

/* ---- peers.c ---- */
/* The module's state, created on first use without heartbeats when
 * MM_OPT_NO_PEERS left it out (status queries still work); NULL: no memory. */
struct mmi_peers *mmi_peers_get(mm_t *mm);

/* ---- members.c ---- */
mmi_member_t *mmi_members_find(mmi_members_t *m, const char *id);
/* Add r, or replace the entry with r's id. NULL when the set is full or memory is short. */
mmi_member_t *mmi_members_put(mmi_members_t *m, const mmi_member_t *r);
void mmi_members_remove(mmi_members_t *m, size_t i); /* the last entry moves to i */
void mmi_members_free(mmi_members_t *m);

/* ---- alive.c ---- */
/* Publish msgpack `body` as JSON on x.pubSub with key <target>.<route>, unconfirmed
 * and never buffered (a late status is worthless). Errors are recorded on mm. */
int mmi_peers_send(mm_t *mm, const char *target, const char *route, const void *body, size_t len);
/* ... with the header x-mm-leader-since when since > 0 (a leader's heartbeat). */
int mmi_peers_send_since(mm_t *mm, const char *target, const char *route, const void *body,
                         size_t len, int64_t since);
#define MMI_H_LEADER_SINCE "x-mm-leader-since"
/* micromsg's extras on a heartbeat, beside __mms (PROTOCOL.md 9: invisible to
 * a protocol-only peer): its QoS level and pressure when it runs QoS. */
#define MMI_H_QOS_LEVEL "x-mm-qos-level"
#define MMI_H_QOS_PRESSURE "x-mm-qos-pressure"
/* The extras of a heard heartbeat into r (leader since, QoS). */
void mmi_alive_extras(mm_msg_t *msg, mmi_member_t *r);
/* The same from the loop: mm_last_error() keeps what the user's last call left. */
int mmi_peers_send_quiet(mm_t *mm, const char *target, const char *route, const void *body,
                         size_t len);
/* Publish our peer.alive now. */
void mmi_alive_publish(struct mmi_peers *p);
/* Decode and check a peer.alive body from `service`; false (logged at debug) when it is
 * malformed, foreign or absurd. */
bool mmi_alive_decode(mm_t *mm, const msgpack_object *body, const char *service, mmi_member_t *ret);
/* "internal.<service>" into out (MMI_TARGET_MAX). */
void mmi_peers_target(char *out, const char *service);

/* ---- status.c ---- */
/* A query's end: code MM_OK (answers), MM_ENOENT (none), MM_ENOTCONN (connection lost).
 * May take over *answers (swap); the query is freed after. Runs under mmi_enter. */
typedef void (*mmi_query_fn)(mm_t *mm, int code, mmi_members_t *answers, void *ud);
/* Ask `service` for its status; exactly one done() later unless mmi_query_cancel. */
int mmi_query_start(struct mmi_peers *p, const char *service, mmi_query_fn done, void *ud,
                    struct mmi_query **ret);
void mmi_query_cancel(struct mmi_query *q); /* free without calling done */
/* A valid status of `service` was heard: the queries for it count it. */
void mmi_status_feed(struct mmi_peers *p, const char *service, const mmi_member_t *r);
/* Build an mm_status_t from a set and call cb with it. */
void mmi_status_report(mm_t *mm, const char *service, int code, const mmi_members_t *m,
                       mm_status_fn cb, void *ud);
/* The temporary listener on internal.<service> peer.alive, shared and counted. */
struct mmi_watch *mmi_watch_get(struct mmi_peers *p, const char *service, int *ret_rc);
void mmi_watch_put(struct mmi_peers *p, struct mmi_watch *w);
bool mmi_status_needs_watch(const struct mmi_peers *p, const char *service);
void mmi_status_down(struct mmi_peers *p);    /* pending queries end with MM_ENOTCONN */
void mmi_status_destroy(struct mmi_peers *p); /* pending queries end with MM_ECLOSED */

/* ---- wait.c ---- */
void mmi_wait_destroy(struct mmi_peers *p); /* pending waits end with MM_ECLOSED */

/* ---- latency.c ---- */
int mmi_latency_attach(struct mmi_peers *p);
void mmi_latency_start(struct mmi_peers *p);
void mmi_latency_stop(struct mmi_peers *p);
void mmi_latency_destroy(struct mmi_peers *p);
/* How long a status query waits at most: max(6 x latency, 1000 ms). */
uint64_t mmi_latency_wait_ms(const mm_t *mm);

#endif
