/*
 * The core's internal API: the instance struct and the narrow surface that
 * lib/, peers/, election/ and qos/ use (channels, synchronous AMQP methods,
 * publish, content delivery, deferred events, logging, errors).
 * Symbols here are prefixed mmi_ and stay local to the library.
 */
#ifndef MM_INTERNAL_H
#define MM_INTERNAL_H

#include <stdarg.h>
#include <stdbool.h>
#include <stdint.h>

#include <sys/time.h>

#include <amqp.h>

#include "micromsg.h"
#include "uri.h"

struct event;
struct mmi_chan;
struct mmi_mem_conn;
struct mmi_mem_broker;
struct mmi_pending_event;
struct mmi_probe;
struct mmi_peers;
struct mmi_election;
struct mmi_qos;
struct mmi_req;
struct mmi_reqs;
struct mmi_transport;

#define MMI_ERRBUF 256
#define MMI_PUMP_BUDGET 256 /* frames per read callback before yielding to the loop */
#define MMI_NAME_MAX 128
#define MMI_NAME_WILDCARD 1u /* "*" and "#" allowed as whole words (listen routes) */
#define MMI_NAME_INTERNAL 2u /* "internal." names allowed (event targets) */

/* The callback contract of a channel's owner. Every field may be NULL. */
typedef struct mmi_content {
    uint16_t channel;
    amqp_method_number_t method; /* BASIC_DELIVER, BASIC_RETURN or BASIC_GET_OK */
    uint64_t delivery_tag;       /* 0 for BASIC_RETURN */
    bool redelivered;
    uint16_t reply_code; /* BASIC_RETURN only */
    amqp_bytes_t reply_text, exchange, routing_key, consumer_tag;
    const amqp_basic_properties_t *props; /* valid during the callback */
    amqp_bytes_t body;                    /* valid during the callback */
    uint64_t body_size;                   /* as announced by the broker */
    bool oversize; /* body_size > mm->max_body: the body was discarded, body is empty */
} mmi_content_t;

typedef struct mmi_chan_ops {
    /* A complete message (method + header + body) arrived on the channel. */
    void (*on_content)(mm_t *mm, const mmi_content_t *c, void *ud);
    /* Any other method the broker sent on the channel (basic.ack/nack, basic.cancel...). */
    void (*on_method)(mm_t *mm, uint16_t ch, const amqp_method_t *m, void *ud);
    /* The channel is gone: closed by the broker (code MM_ECHANNEL, text) or by the
     * connection's end (MM_EDISCONNECTED). Not called for mmi_chan_close(). */
    void (*on_closed)(mm_t *mm, uint16_t ch, int code, const char *text, void *ud);
    /* The owner reports broker closes itself (a probe that may fail): no event. */
    bool quiet;
} mmi_chan_ops_t;

/* RECONNECTING: the connection was lost after a successful connect and comes
 * back in the background (lib/reconnect.c); sends are buffered meanwhile. */
typedef enum { MMI_IDLE, MMI_CONNECTED, MMI_RECONNECTING } mmi_state;

/* The options, as copied from the caller (strings owned by mm). */
struct mmi_opts {
    char *uri;
    mm_log_fn log;
    void *log_ud;
    int log_level;
    mm_event_fn on_event;
    void *event_ud;
    mm_retry_fn retry;
    void *retry_ud;
    uint32_t retry_budget_ms;
    uint32_t connect_timeout_ms;
    uint32_t rpc_timeout_ms;
    int codec;
    uint32_t max_body;
    uint32_t request_timeout_ms;
    unsigned flags; /* MM_OPT_* */
    uint32_t reconnect_budget_ms;
    size_t send_buffer;
    int64_t send_timeout_ms; /* MM_NO_TIMEOUT: none */
    uint32_t max_redeliveries;
    uint32_t close_timeout_ms;
    uint32_t heartbeat_ms;
    uint32_t election_timeout_ms;
    uint32_t qos_interval_ms;
    double qos_lag_threshold;
    uint64_t mem_soft, mem_hard; /* bytes; 0: derived by qos/ */
};

/* A module beside the core (peers/, election/, qos/): what the core tells it. */
typedef struct mmi_hooks {
    void (*up)(mm_t *mm, void *state);      /* connected, or reconnected with routes restored */
    void (*down)(mm_t *mm, void *state);    /* the connection is lost or closed, at once */
    void (*destroy)(mm_t *mm, void *state); /* mm_free: release everything */
    void *state;
    void (*quiesce)(mm_t *mm, void *state); /* mm_close is about to wait for handlers and
                                               confirms: stop receiving, send what must go */
} mmi_hooks_t;

#define MMI_MAX_MODULES 8

struct mm {
    char *service;
    char id[37];
    uint64_t rng[4]; /* id generator state (lib/ids.c) */
    struct mmi_opts opts;
    struct event_base *base;
    bool own_base;

    int init_code; /* MM_OK, or why mm_new refused its arguments */
    int last_code;
    char last_error[MMI_ERRBUF];

    /* connection (lib/conn.c; AMQP: lib/amqp_conn.c, lib/pump.c; memory://: lib/mem/) */
    mmi_state state;
    const struct mmi_transport *tp; /* the URI's: AMQP until a memory:// connect */
    bool dead;                      /* a retired connection waits for mmi_conn_reap */
    int dead_code;                  /* what the channel owners are told */
    amqp_connection_state_t conn;
    amqp_connection_state_t dead_conn;   /* destroyed from the deferred event */
    struct mmi_mem_conn *mem, *mem_dead; /* memory://: the same two */
    struct mmi_mem_broker *mem_broker;   /* held from the first connect to mm_free */
    struct mmi_uri uri;
    char *uri_redacted;
    int heartbeat;
    bool blocked;
    struct event *ev_read;
    struct event *ev_heartbeat;
    struct event *ev_deferred;
    struct event *ev_reconnect; /* the next reconnect attempt (lib/reconnect.c) */
    unsigned rc_attempts;       /* failed reconnect attempts since the loss */
    uint64_t rc_since;          /* monotonic ms of the loss */
    bool auto_reconnect;        /* connected once by mm_connect, not closed since */
    struct mmi_probe *probe;    /* the reconnect probe under way (lib/probe.c) */

    /* modules (peers/, election/): hooks, and their state for their own use */
    mmi_hooks_t modules[MMI_MAX_MODULES];
    int nmodules;
    struct mmi_peers *peers;
    struct mmi_election *election;
    struct mmi_qos *qos;
    uint16_t fixed_prefetch; /* mm_set_max_parallelism (QoS off); 0: each route's own */
    uint64_t started_ms;     /* monotonic, at mm_new */
    int64_t started_wall_ms;
    amqp_connection_state_t pumping; /* the connection being drained, else NULL */

    /* frames we write ourselves (lib/writer.c) */
    uint8_t *wr_buf;
    size_t wr_len, wr_cap;
    uint64_t wr_since; /* monotonic ms when the buffer last became non-empty */
    int wr_fd;         /* the TCP socket; -1: rabbitmq-c writes (TLS, not connected) */

    /* channels (lib/chan.c) */
    struct mmi_chan **chans;
    uint32_t nchans; /* capacity of chans, indexed by channel number */
    uint16_t channel_max;
    uint32_t next_chan;       /* last channel number handed out */
    uint32_t chan_gen;        /* counts channel opens: a message remembers its channel's */
    uint16_t last_close_code; /* reply code of the last channel.close from the broker */

    /* messaging (lib/route.c, lib/publish.c, lib/request.c, lib/msg.c) */
    struct mm_route *routes;
    uint16_t pub_ch;       /* the publishing channel, 0 until first needed */
    bool pub_exchange_ok;  /* x.pubSub declared on the publishing channel */
    uint16_t conf_ch;      /* the publishing channel in confirm mode (lib/outbox.c) */
    bool conf_exchange_ok; /* x.pubSub declared on it */
    struct mmi_outbox *outbox;
    uint16_t reply_ch;       /* the reply queue's channel, 0 until the first request */
    char *reply_queue;       /* q.replyQueue.<service>.<id> */
    struct mmi_reqs *reqs;   /* pending requests */
    struct mm_msg *live;     /* messages kept past their callback (mm_msg_ref) */
    bool syncing;            /* inside mm_request_sync's loop */
    struct mm_msg *handling; /* the message whose handler runs (causation of sends), or NULL */
    char app_id[MMI_NAME_MAX + 40]; /* "<service>@<id>": every message's sender */

    /* frames read during a synchronous method that were not its reply */
    amqp_frame_t *backlog;
    size_t bl_head, bl_len, bl_cap;

    /* instance events waiting for the deferred callback */
    struct mmi_pending_event *ev_head, *ev_tail;

    /* reentrancy: mm_free inside a callback is deferred to the outermost return */
    int cb_depth;
    bool free_pending;
    bool running;
    int run_result;
};

/* ---- errors and logs (lib/err.c, lib/log.c) ---- */
int mmi_fail(mm_t *mm, int code, const char *fmt, ...) __attribute__((format(printf, 3, 4)));
void mmi_clear_error(mm_t *mm);
int mmi_log_level_from_env(void);
void mmi_log_emit(mm_t *mm, int level, const char *fmt, ...) __attribute__((format(printf, 3, 4)));
#define mmi_log(mm, lvl, ...)                                                                      \
    do {                                                                                           \
        if ((lvl) <= (mm)->opts.log_level && (mm)->opts.log != NULL)                               \
            mmi_log_emit((mm), (lvl), __VA_ARGS__);                                                \
    } while (0)

/* ---- rabbitmq-c errors, translated once (lib/amqp_err.c) ---- */
int mmi_err_from_status(int amqp_status);
int mmi_err_from_reply(amqp_rpc_reply_t r, char *text, size_t len);
int mmi_err_from_close(uint16_t reply_code);

/* ---- names (lib/names.c) ---- */
int mmi_check_name(mm_t *mm, const char *what, const char *s, unsigned flags);
char *mmi_join(char *out, size_t cap, const char *a, const char *b); /* "a.b" */
int mmi_check_dest(mm_t *mm, const char *what, const char *name, unsigned flags, const char *route);
#define MMI_REQUEST_PREFIX "q.requests."
/* q.requests.<service>.<route> into out (cap >= MMI_QUEUE_MAX) */
char *mmi_request_queue(char *out, size_t cap, const char *service, const char *route);
#define MMI_QUEUE_MAX (2 * MMI_NAME_MAX + 16)

/* ---- modules (lib/modules.c) ---- */
int mmi_module_add(mm_t *mm, const mmi_hooks_t *hooks);
void mmi_modules_up(mm_t *mm);
void mmi_modules_down(mm_t *mm);
void mmi_modules_quiesce(mm_t *mm);
void mmi_modules_destroy(mm_t *mm);

/* ---- instance (lib/mm.c) ---- */
void mmi_instance_destroy(mm_t *mm);
void mmi_enter(mm_t *mm);
bool mmi_leave(mm_t *mm); /* false when mm was freed: touch nothing */
bool mmi_alive(const mm_t *mm);
void mmi_event(mm_t *mm, mm_event_type type, int code, uint16_t ch, const char *fmt, ...)
    __attribute__((format(printf, 5, 6)));
void mmi_msg_event(mm_t *mm, mm_event_type type, int code, const char *route,
                   const char *request_id, const char *fmt, ...)
    __attribute__((format(printf, 6, 7)));
void mmi_leader_event(mm_t *mm, mm_event_type type, int code, const char *leader_id,
                      const char *fmt, ...) __attribute__((format(printf, 5, 6)));
void mmi_pressure_event(mm_t *mm, mm_event_type type, unsigned pressure, int64_t value,
                        int64_t threshold, const char *fmt, ...)
    __attribute__((format(printf, 6, 7)));
void mmi_deferred_kick(mm_t *mm);
void mmi_events_flush(mm_t *mm);
void mmi_events_drop(mm_t *mm);
int mmi_check_usable(mm_t *mm);
void mmi_ids_seed(mm_t *mm);
void mmi_make_id(mm_t *mm, char out[37]); /* a random UUID v4 */

/* ---- connection (lib/conn.c) ---- */
const char *mmi_resolve_uri(const mm_t *mm, const char *uri);
int mmi_conn_open(mm_t *mm);
void mmi_conn_lost(mm_t *mm, int code, const char *fmt, ...) __attribute__((format(printf, 3, 4)));
void mmi_conn_close(mm_t *mm);
void mmi_conn_reap(mm_t *mm);
#define MMI_DETAIL 224
int mmi_conn_attempt(mm_t *mm, amqp_connection_state_t *ret, char *detail); /* MMI_DETAIL */
int mmi_conn_install(mm_t *mm, amqp_connection_state_t c);

/* ---- reconnect (lib/reconnect.c) ---- */
void mmi_reconnect_schedule(mm_t *mm); /* after a loss: attempts in the background */
void mmi_reconnect_stop(mm_t *mm);
void mmi_reconnect_free(mm_t *mm);

/* ---- is the broker answering? (lib/probe.c) ---- */
/* done(mm, MM_OK or why not, detail) runs once, maybe before this returns. */
int mmi_probe_start(mm_t *mm, void (*done)(mm_t *mm, int rc, const char *detail));
void mmi_probe_cancel(mm_t *mm);

/* ---- graceful close (lib/drain.c) ---- */
int mmi_drain(mm_t *mm); /* MM_ECLOSED: freed meanwhile. Stop consuming, wait for handlers and
                            confirms (bounded) */
/* ---- blocking calls that run the loop (lib/wait.c) ---- */
/* MM_OK when `what` may wait on the loop now; MM_ESTATE inside a callback or
 * on a base whose loop runs already; MM_ECLOSED: freed meanwhile (the caller
 * destroys mm). */
int mmi_loop_usable(mm_t *mm, const char *what);
/* Run the loop until done(mm, ud) (MM_OK), timeout_ms (< 0: none; MM_ETIMEDOUT),
 * a callback's mm_free (MM_ECLOSED: the caller destroys mm), or MM_ESTATE when
 * called from a callback. */
int mmi_loop_until(mm_t *mm, bool (*done)(mm_t *, void *), void *ud, int64_t timeout_ms);

/* ---- frame pump (lib/pump.c) ---- */
int mmi_pump_start(mm_t *mm);
/* ---- our own writes (lib/writer.c) ---- */
void mmi_writer_start(mm_t *mm); /* once connected */
void mmi_writer_stop(mm_t *mm);  /* connection retired: buffered frames dropped */
void mmi_writer_free(mm_t *mm);
/* Everything buffered to the socket: before anything rabbitmq-c writes. */
int mmi_writer_flush(mm_t *mm);
bool mmi_writer_due(const mm_t *mm); /* buffered long enough to write inside a drain */
int mmi_writer_publish(mm_t *mm, uint16_t ch, amqp_bytes_t exchange, amqp_bytes_t routing_key,
                       bool mandatory, const amqp_basic_properties_t *props, amqp_bytes_t body);
int mmi_writer_method(mm_t *mm, uint16_t ch, amqp_method_number_t id, void *decoded);
/* The same with the properties already encoded (amqp_encode_properties). */
int mmi_writer_publish_encoded(mm_t *mm, uint16_t ch, amqp_bytes_t exchange,
                               amqp_bytes_t routing_key, bool mandatory, amqp_bytes_t props,
                               amqp_bytes_t body);
void mmi_pump_stop(mm_t *mm);
void mmi_pump_kick(mm_t *mm);
void mmi_frame_dispatch(mm_t *mm, const amqp_frame_t *f);
void mmi_conn_frame(mm_t *mm, const amqp_frame_t *f);
bool mmi_backlog_pop(mm_t *mm, amqp_frame_t *f);
int mmi_backlog_push(mm_t *mm, const amqp_frame_t *f);
bool mmi_backlog_has_channel(const mm_t *mm, uint16_t ch);

/* ---- channels and synchronous methods (lib/chan.c, lib/amqp_ops.c) ---- */
int mmi_chan_open(mm_t *mm, const mmi_chan_ops_t *ops, void *ud, uint16_t *ret_ch);
int mmi_chan_close(mm_t *mm, uint16_t ch);
bool mmi_chan_is_open(const mm_t *mm, uint16_t ch);
void mmi_chan_frame(mm_t *mm, const amqp_frame_t *f);
/* A transport without frames (memory://): a whole message, or a method, for
 * the channel's owner (dropped when the channel is not open). */
void mmi_chan_content(mm_t *mm, mmi_content_t *c);
void mmi_chan_method(mm_t *mm, uint16_t ch, const amqp_method_t *m);
void mmi_chan_closed_by_broker(mm_t *mm, uint16_t ch, const amqp_channel_close_t *c);
void mmi_chans_fail_all(mm_t *mm, int code, const char *text);
void mmi_chans_free(mm_t *mm);
bool mmi_chan_busy(const mm_t *mm, uint16_t ch);
uint32_t mmi_chan_gen(const mm_t *mm, uint16_t ch); /* 0 when not open */

int mmi_rpc(mm_t *mm, uint16_t ch, amqp_method_number_t id, void *req,
            amqp_method_number_t reply_id, void **ret_reply);
/* An asynchronous method (basic.ack, basic.nack, basic.get, channel.close-ok):
 * MM_OK, or MM_ENOTCONN (the connection is lost). */
int mmi_send_method(mm_t *mm, uint16_t ch, amqp_method_number_t id, void *decoded);

#define MMI_Q_DURABLE 1u
#define MMI_Q_EXCLUSIVE 2u
#define MMI_Q_AUTO_DELETE 4u
#define MMI_Q_PASSIVE 8u
int mmi_queue_declare(mm_t *mm, uint16_t ch, const char *name, unsigned flags,
                      const amqp_table_t *args, uint32_t *ret_count);
int mmi_queue_declare_full(mm_t *mm, uint16_t ch, const char *name, unsigned flags,
                           const amqp_table_t *args, uint32_t *ret_count, uint32_t *ret_consumers);
int mmi_queue_delete(mm_t *mm, uint16_t ch, const char *name);
int mmi_queue_delete_if(mm_t *mm, uint16_t ch, const char *name, bool if_unused, bool if_empty);
int mmi_queue_bind(mm_t *mm, uint16_t ch, const char *queue, const char *exchange, const char *key);
int mmi_queue_unbind(mm_t *mm, uint16_t ch, const char *queue, const char *exchange,
                     const char *key);
int mmi_exchange_declare(mm_t *mm, uint16_t ch, const char *name, const char *type, bool durable);
int mmi_basic_cancel(mm_t *mm, uint16_t ch, const char *tag);
int mmi_basic_qos(mm_t *mm, uint16_t ch, uint16_t prefetch);
int mmi_basic_consume(mm_t *mm, uint16_t ch, const char *queue, bool no_ack, bool exclusive,
                      char *ret_tag, size_t tag_len);
/* The same with consumer arguments (args may be NULL), e.g. x-stream-offset. */
int mmi_basic_consume_args(mm_t *mm, uint16_t ch, const char *queue, bool no_ack, bool exclusive,
                           const amqp_table_t *args, char *ret_tag, size_t tag_len);
int mmi_basic_ack(mm_t *mm, uint16_t ch, uint64_t tag, bool multiple);
int mmi_basic_nack(mm_t *mm, uint16_t ch, uint64_t tag, bool multiple, bool requeue);
int mmi_publish_encoded(mm_t *mm, uint16_t ch, const char *exchange, const char *routing_key,
                        bool mandatory, amqp_bytes_t props, amqp_bytes_t body);
int mmi_publish(mm_t *mm, uint16_t ch, const char *exchange, const char *routing_key,
                bool mandatory, const amqp_basic_properties_t *props, amqp_bytes_t body);
/* Declare the token line `name` on ch and put its token in when the line is
 * new (lib/token.c). */
int mmi_token_queue(mm_t *mm, uint16_t ch, const char *name);

/* Monotonic clock in milliseconds. */
uint64_t mmi_now_ms(void);
/* Wall clock in milliseconds since the epoch (iat/eat on the wire). */
int64_t mmi_wall_ms(void);

/* ---- messaging hooks (lib/route.c, lib/request.c, lib/msg.c, lib/publish.c) ---- */
int mmi_routes_declare_all(mm_t *mm); /* after connecting */
int mmi_pub_prepare(mm_t *mm);        /* both publishing channels, after connecting */
/* Figures of any queue (passive declare on a throwaway channel); MM_ENOENT when absent. */
int mmi_queue_stat(mm_t *mm, const char *queue, mm_stat_t *ret);
void mmi_routes_restore(mm_t *mm); /* after reconnecting: failures retry with backoff */
void mmi_routes_cancel(mm_t *mm);  /* stop every consumer (mm_close's drain) */
/* QoS: the routes subject to quota (user routes without max_parallel), their
 * deliveries so far, and their prefetch (0: consumer cancelled). */
struct mm_route *mmi_route_next_adaptive(mm_t *mm, struct mm_route *after);
uint64_t mmi_route_delivered(const struct mm_route *r);
uint16_t mmi_route_prefetch(const struct mm_route *r);
int mmi_route_set_prefetch(mm_t *mm, struct mm_route *r, uint16_t n);
void mmi_requests_restore(mm_t *mm);       /* after reconnecting: the reply queue if needed */
size_t mmi_msgs_unsettled(const mm_t *mm); /* requests and tasks held, not settled */
void mmi_routes_free(mm_t *mm);
void mmi_requests_fail_all(mm_t *mm, int code);
void mmi_requests_free(mm_t *mm);
void mmi_msgs_detach(mm_t *mm); /* messages kept by the user outlive mm */
void mmi_publish_forget(mm_t *mm);

#endif
