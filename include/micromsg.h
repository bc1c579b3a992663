/*
 * micromsg: services that talk over RabbitMQ, on a libevent loop.
 *
 * This header is the whole public API. A function not declared here is not
 * part of it.
 *
 * Threading: an mm_t and everything obtained from it must be used from the
 * thread that runs its loop. Use one mm_t per thread. The library starts no
 * threads and keeps no mutable globals.
 *
 * Errors: functions that can fail return MM_OK (0) or a negative MM_E* code.
 * mm_strerror() names the code; mm_last_error() gives the detail of the last
 * failed call on an instance. Failures that happen asynchronously arrive as
 * events (mm_event_fn) with the same codes.
 *
 * Callbacks: a call that takes a callback and returns an error never runs it.
 */
#ifndef MICROMSG_H
#define MICROMSG_H

#include <stddef.h>
#include <stdint.h>

#include <msgpack.h> /* bodies and headers are read as msgpack_object */

#ifdef __cplusplus
extern "C" {
#endif

#if defined(MM_BUILDING) && defined(__GNUC__)
#define MM_EXPORT __attribute__((visibility("default")))
#else
#define MM_EXPORT
#endif

/* ---- Version ------------------------------------------------------------ */

#define MM_VERSION_MAJOR 0
#define MM_VERSION_MINOR 1
#define MM_VERSION_PATCH 0
#define MM_VERSION_NUMBER (MM_VERSION_MAJOR * 10000 + MM_VERSION_MINOR * 100 + MM_VERSION_PATCH)
#define MM_VERSION_STRING "0.1.0"

/**
 * The version of the library linked at run time.
 * @return MM_VERSION_NUMBER of the library; equal to the header's
 *         MM_VERSION_NUMBER when header and library match.
 */
MM_EXPORT int mm_version(void);

/* ---- Errors ------------------------------------------------------------- */

/*
 * One table drives the enum, mm_strerror() and mm_err_name().
 * Append only; codes are never renumbered.
 */
#define MM_ERR_MAP(X)                                                                              \
    X(EINVAL, -1, "invalid argument")                                                              \
    X(ENOMEM, -2, "out of memory")                                                                 \
    X(ETIMEDOUT, -3, "timed out")                                                                  \
    X(ECANCELED, -4, "canceled")                                                                   \
    X(EDISCONNECTED, -5, "connection to the broker lost")                                          \
    X(ENOROUTE, -6, "no route to the service")                                                     \
    X(EREMOTE, -7, "the remote handler returned an error")                                         \
    X(EDECODE, -8, "malformed message")                                                            \
    X(ETOOBIG, -9, "message too large")                                                            \
    X(EURI, -10, "bad broker URI")                                                                 \
    X(ECLOSED, -11, "instance closed")                                                             \
    X(EBROKER, -12, "broker refused the operation")                                                \
    X(ENOENT, -13, "no such request or registration")                                              \
    X(EUNREACHABLE, -14, "broker unreachable")                                                     \
    X(EAUTH, -15, "authentication refused by the broker")                                          \
    X(EVHOST, -16, "virtual host not accessible")                                                  \
    X(ETLS, -17, "TLS failure")                                                                    \
    X(ENAME, -18, "invalid service or route name")                                                 \
    X(ESTATE, -19, "call not allowed in the current state")                                        \
    X(ENOTCONN, -20, "not connected")                                                              \
    X(ECHANNEL, -21, "channel closed by the broker")                                               \
    X(EPROTO, -22, "AMQP protocol error")                                                          \
    X(EBLOCKED, -23, "publishing blocked by the broker (flow control)")                            \
    X(EFULL, -24, "send buffer full")

/** Error codes: MM_OK or a negative MM_E* value. */
typedef enum mm_err {
    MM_OK = 0,
#define MM_ERR_ENUM_(name, value, text) MM_##name = (value),
    MM_ERR_MAP(MM_ERR_ENUM_)
#undef MM_ERR_ENUM_
} mm_err;

/**
 * A short English text for an error code.
 * @return a static string, never NULL; "unknown error" for a code not in
 *         the table.
 */
MM_EXPORT const char *mm_strerror(int code);

/**
 * The symbolic name of an error code ("MM_ETIMEDOUT"), for logs and tests.
 * @return a static string, never NULL; "MM_E?" for an unknown code.
 */
MM_EXPORT const char *mm_err_name(int code);

/* ---- Logging ------------------------------------------------------------ */

/** Log levels (syslog numbers): lower is more severe. */
enum {
    MM_LOG_NONE = 0,
    MM_LOG_ERR = 3,
    MM_LOG_WARN = 4,
    MM_LOG_INFO = 6,
    MM_LOG_DEBUG = 7,
};

/**
 * Log hook. `text` is valid only during the call. A logger must not call
 * into micromsg. Passwords never appear in log texts.
 */
typedef void (*mm_log_fn)(int level, const char *text, void *ud);

/* ---- Instance ----------------------------------------------------------- */

struct event_base; /* libevent */

/** One service instance: one AMQP connection, callbacks on one loop thread. */
typedef struct mm mm_t;

/**
 * Retry strategy for connecting: called after each failed attempt with the
 * error code of that attempt, the number of attempts made so far (1 after
 * the first) and the milliseconds elapsed since the first attempt began.
 * @return milliseconds to wait before the next attempt, or a negative
 *         value to stop trying (mm_connect then returns the last error).
 */
typedef int64_t (*mm_retry_fn)(int error, unsigned attempts, uint64_t elapsed_ms, void *ud);

/** No timeout (mm_request_opts_t.timeout_ms, mm_opts_t.send_timeout_ms). */
#define MM_NO_TIMEOUT (-1)

/** Kinds of instance events. */
typedef enum mm_event_type {
    MM_EV_CONNECTED = 1,     /* the connection is up (after mm_connect) */
    MM_EV_DISCONNECTED = 2,  /* the connection died; code says why */
    MM_EV_CHANNEL_ERROR = 3, /* the broker closed a channel; the connection lives */
    MM_EV_BLOCKED = 4,       /* the broker blocked publishing (resource alarm) */
    MM_EV_UNBLOCKED = 5,     /* publishing is allowed again */
    MM_EV_ERROR = 6,         /* any other asynchronous failure (bad input: code says what) */
    MM_EV_EXPIRED = 7,      /* a request's deadline passed before it was answered: acked, dropped */
    MM_EV_UNHANDLED = 8,    /* a message nobody handles: no handler for its route, or an
                               answer whose request is gone (timed out, canceled) */
    MM_EV_UNROUTABLE = 9,   /* the broker returned a task: no queue for its route */
    MM_EV_RECONNECTED = 10, /* the connection is back after a loss; routes are restored */
    MM_EV_DEADLETTER = 11,  /* a message went to the dead-letter queue; code and text say why */
    MM_EV_LEADER = 12,      /* the service's leader changed: leader_id (NULL: none known) */
    MM_EV_STEP_UP = 13,     /* this instance became the leader */
    MM_EV_STEP_DOWN = 14,   /* this instance stopped being the leader (code says why) */
    MM_EV_PRESSURE = 15,    /* QoS: pressure began (pressure, value, threshold) */
    MM_EV_PRESSURE_RELEASED = 16, /* QoS: that pressure ended */
    MM_EV_READER_ACTIVE = 17,     /* a topic reader took its lock and reads (route: consumer) */
    MM_EV_READER_STANDBY = 18,    /* a topic reader waits: another process reads (route:
                                     consumer); also when it lost its lock */
} mm_event_type;

/** An instance event, valid only during the callback. */
typedef struct mm_event {
    mm_event_type type;
    int code;                 /* MM_OK or an MM_E* code */
    const char *text;         /* never NULL; detail, e.g. the broker's reply text */
    uint16_t channel;         /* the channel concerned, 0 when none */
    const char *route;        /* the route concerned (message events), else NULL */
    const char *request_id;   /* the message's idRequest (message events), else NULL */
    const char *leader_id;    /* MM_EV_LEADER, MM_EV_STEP_UP: the leader's instance id */
    unsigned pressure;        /* MM_EV_PRESSURE*: MM_PRESSURE_LAG, _MEM or _HARD */
    int64_t value, threshold; /* MM_EV_PRESSURE*: measured lag (ms) or memory (bytes), and
                                 the limit it is compared with */
} mm_event_t;

/** Event hook. May call any mm_* function, mm_free() included. */
typedef void (*mm_event_fn)(mm_t *mm, const mm_event_t *ev, void *ud);

/**
 * Options for mm_new(). Declare with MM_OPTS_INIT, then set what you need;
 * every field's zero value means "the default". mm_new() copies the options
 * and the strings they point to.
 */
typedef struct mm_opts {
    size_t size;             /* set by MM_OPTS_INIT; lets later versions add fields */
    const char *uri;         /* NULL: see mm_connect() */
    struct event_base *base; /* NULL: mm owns a loop (mm_run); else attach to this one */
    mm_log_fn log;           /* NULL: silent, unless $MM_LOG is set (then stderr) */
    void *log_ud;
    int log_level;        /* 0: $MM_LOG (debug|info|warn|error), else MM_LOG_WARN */
    mm_event_fn on_event; /* NULL: events are only logged */
    void *event_ud;
    mm_retry_fn retry; /* NULL: mm_retry_default() with retry_budget_ms */
    void *retry_ud;
    uint32_t retry_budget_ms;    /* default strategy's budget; 0: 30000 */
    uint32_t connect_timeout_ms; /* one TCP connect + AMQP handshake; 0: 5000 */
    uint32_t rpc_timeout_ms;     /* a synchronous AMQP method; 0: 10000 */
    int codec;                   /* body encoding we send: MM_CODEC_MSGPACK (0) or MM_CODEC_JSON */
    uint32_t max_body;           /* largest body sent or received, decoded; 0: 16 MiB */
    uint32_t request_timeout_ms; /* mm_request()'s default timeout; 0: 120000 */

    /* reliability; see "Reliability" below */
    unsigned flags;               /* MM_OPT_* */
    uint32_t reconnect_budget_ms; /* give up reconnecting after this long; 0: never */
    size_t send_buffer;           /* bytes of buffered or unconfirmed sends; 0: 16 MiB */
    int64_t send_timeout_ms;      /* a buffered or unconfirmed send fails after; 0: 60000;
                                     MM_NO_TIMEOUT: never */
    uint32_t max_redeliveries;    /* deliveries of one message before dead-lettering; 0: 5 */
    uint32_t close_timeout_ms;    /* mm_close()'s wait for handlers and confirms; 0: 5000 */

    /* peers and election; see "Peers and election" below */
    uint32_t heartbeat_ms;        /* peer.alive interval; 0: 10000 */
    uint32_t election_timeout_ms; /* no leader seen this long: try the lock; 0: 15000;
                                     must exceed heartbeat_ms (else MM_EINVAL) */

    /* QoS (with MM_OPT_QOS); see "QoS" below */
    uint32_t qos_interval_ms; /* sample interval; 0: 500 */
    double qos_lag_threshold; /* lag that is pressure, as a fraction of the interval, in
                                 (0, 1]; 0: 0.14 (70 ms of 500) */
    uint32_t mem_soft_mb;     /* 0: 65 % of the cgroup memory limit, else of physical memory */
    uint32_t mem_hard_mb;     /* 0: 80 % of it; not below the soft limit */
} mm_opts_t;

/** mm_opts_t.flags */
#define MM_OPT_NO_RECONNECT 1u     /* a lost connection stays lost: mm_run() returns */
#define MM_OPT_CONFIRM_EVENTS 2u   /* wait for the broker's confirm of every event too */
#define MM_OPT_NO_CONFIRM_TASKS 4u /* do not wait for the broker's confirm of tasks */
#define MM_OPT_NO_PEERS 16u        /* no heartbeats, invisible to status (short-lived clients) */
#define MM_OPT_NO_ELECTION 32u     /* never take part in the election (implied by NO_PEERS) */
#define MM_OPT_QOS 64u             /* adapt the routes' prefetch to loop lag and memory */
#define MM_OPT_OFFLINE_WAIT                                                                        \
    8u /* mm_request() while disconnected waits for the                                            \
          reconnect (within its timeout) instead of MM_ENOTCONN */

/** Body encodings on the wire (mm_opts_t.codec). */
enum {
    MM_CODEC_MSGPACK = 0, /* application/msgpack: micromsg's own, the default */
    MM_CODEC_JSON = 1,    /* application/json: for peers that only speak JSON */
};

/* clang-format off */
#define MM_OPTS_INIT {.size = sizeof(mm_opts_t)}
/* clang-format on */

/**
 * Create a service instance. Nothing touches the network until
 * mm_connect() (and with a memory:// URI nothing ever does).
 *
 * A service name is 1 to 128 characters of [A-Za-z0-9._:-], does not begin
 * or end with '.', has no "..", and is not "internal" nor begins with
 * "internal." (reserved by the protocol).
 *
 * @param service the service name (copied).
 * @param opts    NULL for defaults, or options set up with MM_OPTS_INIT.
 * @return a new instance, or NULL only when out of memory. With invalid
 *         arguments the instance is returned in a failed state: mm_last_code()
 *         gives the code (MM_ENAME, MM_EINVAL), mm_last_error() the detail, and
 *         every later call returns that code. Free it with mm_free().
 */
MM_EXPORT mm_t *mm_new(const char *service, const mm_opts_t *opts);

/**
 * Connect to the broker, blocking until connected or failed.
 *
 * The URI is `uri` if not NULL, else the options' uri, else $MM_URI, else
 * $RABBITMQ_URI, else amqp://localhost. Form (RabbitMQ URI spec):
 * amqp[s]://[user[:pass]@]host[:port][/vhost][?key=value&...], with
 * percent-encoding in user, pass and vhost; no path means vhost "/", an empty
 * path ("host/") means the empty vhost. Keys: heartbeat (seconds, default
 * 30; 0 disables), frame_max, channel_max, connection_timeout (ms), and for
 * amqps cacertfile, certfile, keyfile, verify (verify_peer|verify_none; the
 * default verifies the peer and its host name). An unknown key is an error.
 *
 * Each failed attempt is passed to the retry strategy, which says how long
 * to wait or to stop. Every step is bounded by connect_timeout_ms.
 *
 * memory://NAME connects to an in-process broker instead, for testing
 * handlers without RabbitMQ: the instances of this process that connect to
 * the same NAME (the rules of a service name; nothing may follow it) share
 * it, and instances of other names never meet. The API and the callback
 * rules are the same (a callback never runs inside the call that caused
 * it; deliveries come from the instance's loop), and so is what a handler
 * or a requester observes: requests with replies, errors, streamed answers,
 * timeouts and MM_ENOROUTE; events with wildcards and groups; tasks shared
 * by competing workers within their prefetch, unsettled work redelivered
 * (mm_msg_redelivered()) when its instance closes or goes, dead-lettering
 * and mm_deadletter_redrive(); confirms (on_sent) and returns; topics and
 * their readers (cursors, one active reader per consumer name, standby
 * takeover, retention by whole segments); peers and the election. No
 * socket, thread or file is opened. What differs: nothing is shared with
 * other processes; a memory broker lives while an instance that connected
 * to it lives (after mm_free() of the last one, its queues, topics and
 * messages are gone); there are no heartbeats (mm_heartbeat() is 0), TLS,
 * flow control or reconnects (a memory connection is never lost; it ends
 * with mm_close() or mm_free()); request queues do not expire after 24 h
 * unused; a topic has no chunks, so MM_FROM_LAST starts at the last record
 * and MM_FROM_TIMESTAMP at the first record of that second or later (on
 * RabbitMQ, at the start of their chunk). All instances using one NAME
 * must run on one thread (instances of different names may run on
 * different threads).
 *
 * @return MM_OK; MM_EURI (bad URI, or memory:// name), MM_EUNREACHABLE (refused,
 *         DNS, no route), MM_ETIMEDOUT, MM_EAUTH (wrong credentials), MM_EVHOST, MM_ETLS,
 *         MM_ESTATE (already connected); detail in mm_last_error(), which
 *         never contains the password.
 */
MM_EXPORT int mm_connect(mm_t *mm, const char *uri);

/**
 * The default retry strategy: exponential backoff (100 ms doubling to
 * 800 ms) with +-20 % jitter, until `elapsed_ms` reaches the budget in
 * milliseconds given as `ud` (a uintptr_t cast to void *; 0: 30000;
 * UINTPTR_MAX: no end, as for reconnects). Never retries
 * MM_EURI, MM_EAUTH, MM_EVHOST, MM_ETLS and MM_EINVAL: they will not heal.
 */
MM_EXPORT int64_t mm_retry_default(int error, unsigned attempts, uint64_t elapsed_ms, void *ud);

/**
 * Run the instance's own loop until mm_stop(), or until the connection is
 * lost for good (MM_OPT_NO_RECONNECT, or the retry strategy gave up).
 * @return MM_OK after mm_stop(); MM_EDISCONNECTED when the connection died
 *         for good;
 *         MM_ECLOSED when a callback called mm_free(): the instance is then
 *         already freed and must not be touched (nor freed again);
 *         MM_ESTATE when the instance is attached to the caller's event_base
 *         (run that base instead) or not connected.
 */
MM_EXPORT int mm_run(mm_t *mm);

/** Make mm_run() return after the current callback. Safe in callbacks. */
MM_EXPORT void mm_stop(mm_t *mm);

/**
 * Close gracefully: cancel every consumer (no new deliveries), let the
 * messages handlers still hold be settled and the sends in the buffer be
 * confirmed, both within close_timeout_ms (the loop runs meanwhile), then
 * close the connection (connection.close, bounded by the RPC timeout) and
 * remove every event from the loop. Messages still unsettled go back to
 * their queue; sends still unconfirmed fail with MM_ECLOSED. Inside a
 * callback there is no waiting: the close is immediate. The instance may
 * connect again afterwards.
 * @return MM_OK, or MM_ENOTCONN when not connected.
 */
MM_EXPORT int mm_close(mm_t *mm);

/**
 * Close and free the instance. NULL is a no-op. Safe inside a callback: the
 * free then happens when the outermost callback returns. Every event mm
 * added to a caller's event_base is gone afterwards.
 */
MM_EXPORT void mm_free(mm_t *mm);

/** The service name given to mm_new(). Valid as long as mm. */
MM_EXPORT const char *mm_service(const mm_t *mm);

/** This instance's unique id (UUID v4, new for every mm_new). */
MM_EXPORT const char *mm_id(const mm_t *mm);

/** 1 when connected, else 0. */
MM_EXPORT int mm_is_connected(const mm_t *mm);

/**
 * The broker URI in use (after mm_connect), with the password replaced by
 * "***"; NULL before. Valid until the next mm_connect or mm_free.
 */
MM_EXPORT const char *mm_uri(const mm_t *mm);

/** The heartbeat negotiated with the broker, in seconds (0: off or not connected). */
MM_EXPORT int mm_heartbeat(const mm_t *mm);

/**
 * The detail of the last failed call on mm, never NULL ("" when none).
 * Valid until the next call on mm.
 */
MM_EXPORT const char *mm_last_error(const mm_t *mm);

/** The code of the last failed call on mm (MM_OK when none). */
MM_EXPORT int mm_last_code(const mm_t *mm);

/** Change the log level at run time (MM_LOG_NONE silences). */
MM_EXPORT void mm_set_log_level(mm_t *mm, int level);

/* ---- Bodies ------------------------------------------------------------- */

/*
 * Bodies are msgpack. A sender passes the msgpack bytes of one object (or
 * NULL/0 for "no body", sent as the empty string ""); a receiver reads a
 * msgpack_object. A top-level bin object is sent as raw bytes
 * (application/octet-stream) and arrives as bin again. With the JSON codec
 * every other body must be representable in JSON (no bin or ext inside, str
 * in UTF-8); bodies over 1,000,000 bytes are sent gzip-compressed.
 */

/** A body builder: msgpack bytes written through a msgpack_packer. */
typedef struct mm_body mm_body_t;

/** A new, empty builder, or NULL when out of memory. Free with mm_body_free(). */
MM_EXPORT mm_body_t *mm_body_new(void);

/**
 * The packer writing into the builder, for msgpack_pack_*() calls. Valid
 * as long as the builder. Pack exactly one top-level object per body.
 */
MM_EXPORT msgpack_packer *mm_body_packer(mm_body_t *b);

/** The bytes packed so far (NULL when empty). Valid until the next pack, reset or free. */
MM_EXPORT const void *mm_body_data(const mm_body_t *b);

/** The number of bytes packed so far. */
MM_EXPORT size_t mm_body_len(const mm_body_t *b);

/** Empty the builder for reuse (memory is kept). */
MM_EXPORT void mm_body_reset(mm_body_t *b);

/** Free the builder. NULL is a no-op. */
MM_EXPORT void mm_body_free(mm_body_t *b);

/** Pack a NUL-terminated string. @return MM_OK or MM_ENOMEM (or MM_EINVAL for NULL). */
MM_EXPORT int mm_body_str(mm_body_t *b, const char *s);

/** Pack raw bytes as a msgpack bin. @return MM_OK or MM_ENOMEM. */
MM_EXPORT int mm_body_bin(mm_body_t *b, const void *p, size_t n);

/* ---- Messages ------------------------------------------------------------ */

/**
 * A received message: a request, task or event given to a handler, or an
 * answer given to a request's callback. Borrowed: valid until the callback
 * returns, unless the callback takes a reference with mm_msg_ref(); every
 * reference needs one mm_msg_unref(). Everything a message returns (body,
 * headers, strings) lives as long as the message.
 */
typedef struct mm_msg mm_msg_t;

/** Handlers, listeners and request callbacks share one shape. */
typedef void (*mm_msg_fn)(mm_msg_t *msg, void *ud);

/** What a message is. */
typedef enum mm_msg_kind {
    MM_MSG_REQUEST = 1, /* expects an answer: mm_msg_reply/reject/write+end */
    MM_MSG_TASK = 2,    /* fire-and-forget work: mm_msg_ack (or reply) when done */
    MM_MSG_EVENT = 3,   /* published with mm_emit: acked when the listener returns */
    MM_MSG_ANSWER = 4,  /* given to a request's callback */
    MM_MSG_RECORD = 5,  /* a topic record given to a reader (mm_topic_read) */
} mm_msg_kind;

/** The kind of the message. */
MM_EXPORT mm_msg_kind mm_msg_kind_of(const mm_msg_t *msg);

/**
 * The body, never NULL. "No body" arrives as the empty string. For a
 * failed request (mm_msg_status() != MM_OK) it is the error object sent by
 * the peer ({"error": {"codeString", "message", "code", ...}}) or nil for a
 * local failure (timeout, cancel...).
 */
MM_EXPORT const msgpack_object *mm_msg_body(const mm_msg_t *msg);

/** The body as msgpack bytes (`*ret_len` receives the size). */
MM_EXPORT const void *mm_msg_body_raw(const mm_msg_t *msg, size_t *ret_len);

/**
 * The user headers: a map of every top-level AMQP header except the reserved
 * "__mms" and the metadata read by the accessors below (x-mm-causation-id,
 * traceparent, a record's x-stream-offset); idRequest included. Never NULL;
 * an empty map when none.
 */
MM_EXPORT const msgpack_object *mm_msg_headers(const mm_msg_t *msg);

/** One user header by name, or NULL when absent. */
MM_EXPORT const msgpack_object *mm_msg_header(const mm_msg_t *msg, const char *name);

/** The destination route: a request's or task's route, an event's routing key. */
MM_EXPORT const char *mm_msg_route(const mm_msg_t *msg);

/** The request id (header idRequest), or "" when absent. */
MM_EXPORT const char *mm_msg_request_id(const mm_msg_t *msg);

/** The AMQP correlation id (requests and answers), or "" when absent. */
MM_EXPORT const char *mm_msg_correlation_id(const mm_msg_t *msg);

/*
 * Metadata. Every message micromsg sends carries a unique message id, a
 * timestamp and its sender; a message sent while a handler runs (on the
 * handler's own instance) also carries the causation id (the id of the
 * message being handled) and the handled message's W3C traceparent. The
 * ids travel in AMQP properties (message_id, timestamp, app_id) and the
 * headers "x-mm-causation-id" and "traceparent", which a peer that only
 * knows the protocol ignores; they are not part of mm_msg_headers().
 */

/** The message id (a UUID unless the sender chose one), or "" when absent. */
MM_EXPORT const char *mm_msg_id(const mm_msg_t *msg);

/** When the message was sent, in ms since the epoch (second precision unless
 *  the protocol's iat gives milliseconds), or 0 when unknown. */
MM_EXPORT int64_t mm_msg_timestamp(const mm_msg_t *msg);

/** The sender, "<service>@<instance id>", or "" when absent (protocol-only peers). */
MM_EXPORT const char *mm_msg_sender(const mm_msg_t *msg);

/** The id of the message whose handling caused this one, or "" when none. */
MM_EXPORT const char *mm_msg_causation_id(const mm_msg_t *msg);

/** The W3C trace context ("00-<trace id>-<span id>-<flags>"), or "" when none. */
MM_EXPORT const char *mm_msg_traceparent(const mm_msg_t *msg);

/** A topic record's type (the AMQP type property), or "" when none. */
MM_EXPORT const char *mm_msg_type(const mm_msg_t *msg);

/** A topic record's offset in its stream, or -1 for any other message. */
MM_EXPORT int64_t mm_msg_offset(const mm_msg_t *msg);

/** 1 when the broker delivered the message before (it may be a duplicate). */
MM_EXPORT int mm_msg_redelivered(const mm_msg_t *msg);

/** The size of the body as it travelled on the wire, in bytes. */
MM_EXPORT size_t mm_msg_size(const mm_msg_t *msg);

/**
 * Answers: MM_OK for a reply or a stream part; MM_EREMOTE when the peer
 * answered with an error; MM_ETIMEDOUT, MM_ENOROUTE (nobody handles the
 * route), MM_ECANCELED, MM_EDISCONNECTED, MM_ECLOSED (instance freed) for
 * local failures. MM_OK for other kinds.
 */
MM_EXPORT int mm_msg_status(const mm_msg_t *msg);

/**
 * For a failed answer, the error code string: the peer's codeString
 * ("notFound"...) or, for local failures, "timeout", "unroutable",
 * "canceled", "notConnected", "closed". "" otherwise.
 */
MM_EXPORT const char *mm_msg_error_code(const mm_msg_t *msg);

/** For a failed answer, the error message (never NULL; "" when none). */
MM_EXPORT const char *mm_msg_error_text(const mm_msg_t *msg);

/** 1 on the last callback for a request (exactly one per accepted request). */
MM_EXPORT int mm_msg_is_final(const mm_msg_t *msg);

/**
 * A streamed answer collected without a part callback: the number of
 * messages of the stream (the parts and the end message), in sequence
 * order. 0 for anything else.
 */
MM_EXPORT size_t mm_msg_part_count(const mm_msg_t *msg);

/** The body of message `i` of a collected stream, or NULL when out of range. */
MM_EXPORT const msgpack_object *mm_msg_part(const mm_msg_t *msg, size_t i);

/** Keep the message past its callback. @return msg. */
MM_EXPORT mm_msg_t *mm_msg_ref(mm_msg_t *msg);

/** Drop a reference. @return NULL. NULL is a no-op. */
MM_EXPORT mm_msg_t *mm_msg_unref(mm_msg_t *msg);

/*
 * Settling a request or task. A request is answered once: mm_msg_reply,
 * mm_msg_reject, or mm_msg_write... then mm_msg_end. A task is settled by
 * mm_msg_ack (a reply to a task only acks it), mm_msg_reject or
 * mm_msg_nack. The message is acked on the broker when settled, so a crash
 * before that redelivers it. A handler that returns without settling and
 * without a reference: the library answers a request with an error
 * ("notHandled"), dead-letters the message (see "Reliability"), and
 * raises an MM_EV_ERROR event. A kept message whose last reference is
 * dropped unsettled is treated the same way. Bodies are copied during the
 * call.
 *
 * Errors, common to all: MM_ESTATE (already answered, write after end,
 * reply to an event or answer: detail in the text), MM_ETIMEDOUT (the
 * request expired: nothing is sent), MM_EINVAL (body not one msgpack object
 * or not representable in the requester's encoding), MM_ETOOBIG,
 * MM_ENOTCONN / MM_ECHANNEL (the connection or the route's channel is gone:
 * the broker redelivers the message), MM_ECLOSED (instance freed).
 * mm_last_error() of the instance has the detail.
 */

/** Answer a request (or ack a task) with a body. */
MM_EXPORT int mm_msg_reply(mm_msg_t *msg, const void *body, size_t len);

/**
 * Answer a request with an error: the requester gets MM_EREMOTE with
 * `code` (a short camelCase code, e.g. "notFound"; NULL: "error") and
 * `text`. A task goes to the service's dead-letter queue with `code` as
 * its reason (see "Reliability").
 */
MM_EXPORT int mm_msg_reject(mm_msg_t *msg, const char *code, const char *text);

/** Send one part of a streamed answer (parts are numbered in order). */
MM_EXPORT int mm_msg_write(mm_msg_t *msg, const void *body, size_t len);

/** End a streamed answer with a last body (NULL/0: none). */
MM_EXPORT int mm_msg_end(mm_msg_t *msg, const void *body, size_t len);

/**
 * Settle a task as done (or ack a request without answering it: its
 * requester then waits for its timeout). Events are acked when their
 * listener returns; acking one again is a no-op (MM_OK).
 */
MM_EXPORT int mm_msg_ack(mm_msg_t *msg);

/**
 * Give a request or task back. requeue 1: back in the queue for another try
 * (counted: past max_redeliveries deliveries it is dead-lettered); 0: to the
 * dead-letter queue now (reason "rejected"; a requester gets that error).
 */
MM_EXPORT int mm_msg_nack(mm_msg_t *msg, int requeue);

/* ---- Routes: handle requests and tasks, listen to events ----------------- */

/** A registered handler or listener. */
typedef struct mm_route mm_route_t;

/** Options of mm_handle() and mm_listen(). Declare with MM_ROUTE_OPTS_INIT. */
typedef struct mm_route_opts {
    size_t size;                 /* set by MM_ROUTE_OPTS_INIT */
    uint16_t prefetch;           /* messages in flight on this route; 0: 64 */
    uint16_t max_parallel;       /* a fixed prefetch QoS never changes; 0: QoS adapts it */
    uint64_t max_parallel_bytes; /* body bytes in flight at most: a message beyond goes back to
                                    the queue (not counted as a failed delivery) and the route
                                    pauses until in flight falls below 70 %; 0: no budget */
    const char *group;           /* mm_listen: share the events with the other instances of
                                    this service in this group (see mm_listen()); NULL: none */
} mm_route_opts_t;

/* clang-format off */
#define MM_ROUTE_OPTS_INIT {.size = sizeof(mm_route_opts_t)}
/* clang-format on */

/**
 * Handle requests and tasks for `route` of this service: consumes the
 * queue q.requests.<service>.<route>, shared with every other instance of
 * the service (each message goes to one of them). A route is 1 to 128
 * characters of [A-Za-z0-9._:-], with the rules of service names.
 *
 * May be called before mm_connect() (the route is declared when it
 * connects) or after (declared now, blocking one broker round trip).
 *
 * @param ret_route receives the route handle (may be NULL); owned by mm
 *        until mm_route_stop() or mm_free().
 * @return MM_OK; MM_ENAME; MM_ESTATE when the route is already handled by
 *         this instance; MM_EBROKER/MM_ECHANNEL when the broker refused the
 *         queue (detail in mm_last_error()).
 */
MM_EXPORT int mm_handle(mm_t *mm, const char *route, mm_msg_fn handler, void *ud,
                        const mm_route_opts_t *opts, mm_route_t **ret_route);

/**
 * Listen to events emitted to `target`.`route` (target NULL: this
 * service). The route may hold topic wildcards: "*" for one dot-separated
 * word, "#" for zero or more. An event is acked when the listener returns.
 * Same rules as mm_handle() otherwise.
 *
 * Plain (opts->group NULL): each listening instance gets every matching
 * event on its own exclusive queue, while it is connected; events emitted
 * while it is down are lost to it (at most once, per instance).
 *
 * Group (opts->group set, a name like a route's): the instances of this
 * service listening in the same group share one durable queue,
 * q.group.<service>.<group>, bound to every route listened in that group;
 * each event goes to one of them (once per group, not per instance), is
 * acked when the listener returns, and waits in the queue while the whole
 * group is down. A listener that neither returns normally (the process
 * dies) nor acks gets it again; past max_redeliveries the event goes to
 * the dead-letter queue, as tasks do. Several routes may share a group:
 * each event goes to the listener whose route matches its routing key.
 * mm_route_stop() of the last route of a group keeps the queue (the group
 * lives on); delete it with mm_group_delete().
 *
 * For events that must also be kept for later readers, or replayed from a
 * point in time, use a topic (mm_topic_publish(), mm_topic_read()).
 */
MM_EXPORT int mm_listen(mm_t *mm, const char *target, const char *route, mm_msg_fn handler,
                        void *ud, const mm_route_opts_t *opts, mm_route_t **ret_route);

/**
 * Stop a route and free its handle: cancel the consumer, unbind (events),
 * and delete the queue only when it is empty and nobody else consumes it
 * (another instance of the service keeps its queue). Messages in flight
 * that were not settled are redelivered by the broker. The route may be
 * handled or listened to again afterwards.
 * @return MM_OK, or the broker's error (the handle is freed anyway).
 */
MM_EXPORT int mm_route_stop(mm_route_t *route);

/**
 * Delete the queue of a group of this service (q.group.<service>.<group>)
 * and the events waiting in it.
 * @return MM_OK, MM_ENOENT when it does not exist, MM_ENAME, MM_ENOTCONN...
 */
MM_EXPORT int mm_group_delete(mm_t *mm, const char *group);

/** Queue figures. */
typedef struct mm_stat {
    uint32_t messages;  /* ready in the queue (not counting those in flight) */
    uint32_t consumers; /* consumers on the queue, all instances */
} mm_stat_t;

/** Figures of a route's queue (one broker round trip). @return MM_OK, MM_ENOTCONN... */
MM_EXPORT int mm_route_stat(mm_route_t *route, mm_stat_t *ret_stat);

/**
 * Figures of another service's request queue q.requests.<service>.<route>.
 * @return MM_OK, MM_ENOENT when the queue does not exist, MM_ENOTCONN...
 */
MM_EXPORT int mm_queue_stat(mm_t *mm, const char *service, const char *route, mm_stat_t *ret_stat);

/* ---- Sending: requests, tasks, events ------------------------------------ */

/*
 * User headers travel as AMQP header fields beside the protocol's "__mms"
 * (which is reserved: a user header of that name is refused). Given as the
 * msgpack bytes of one map: names are str of at most 255 bytes; values may
 * be nil, bool, integers within int64, floats (sent as float64), str, bin,
 * arrays and maps, nested at most 31 deep. Anything else: MM_EINVAL.
 */

/** A pending request, by value (a stale id is harmless). */
typedef struct mm_req {
    uint64_t id;
} mm_req_t;

/** Deliver each part of a streamed answer to the callback (mm_request_opts_t.flags). */
#define MM_REQ_PARTS 1u

/** Options of mm_request(). Declare with MM_REQUEST_OPTS_INIT. */
typedef struct mm_request_opts {
    size_t size;         /* set by MM_REQUEST_OPTS_INIT */
    int64_t timeout_ms;  /* 0: mm_opts_t.request_timeout_ms; MM_NO_TIMEOUT: none */
    unsigned flags;      /* MM_REQ_PARTS */
    const void *headers; /* user headers: msgpack bytes of a map with str keys, or NULL;
                            see "User headers" below */
    size_t headers_len;
    const char *request_id;   /* idRequest header; NULL: a fresh UUID */
    const char *message_id;   /* NULL: a fresh UUID */
    const char *causation_id; /* NULL: the id of the message being handled, if any */
    const char *traceparent;  /* NULL: the handled message's, if any; "": none */
} mm_request_opts_t;

/* clang-format off */
#define MM_REQUEST_OPTS_INIT {.size = sizeof(mm_request_opts_t)}
/* clang-format on */

/**
 * Send a request to `route` of `service` and get exactly one final
 * callback: the reply, the peer's error (MM_EREMOTE), or a local failure
 * (MM_ETIMEDOUT, MM_ENOROUTE at once when no instance handles the route,
 * MM_ECANCELED, MM_EDISCONNECTED, MM_ECLOSED). A streamed answer either
 * calls `on_reply` once per part in sequence order (MM_REQ_PARTS;
 * mm_msg_is_final() is 0 for parts, 1 for the end) or is collected and
 * given once at the end, when every part has arrived (mm_msg_part()). In
 * both modes each part restarts the timeout. An error sent in the middle of
 * a stream completes the request at once (parts still on their way are
 * dropped). The callback
 * never runs before mm_request() returns.
 *
 * @param ret_req receives the request's id for mm_request_cancel() (may be NULL).
 * @return MM_OK (the callback will run), or an error and the callback never
 *         runs: MM_ENAME, MM_EINVAL (body, headers, "__mms" in headers, a
 *         negative timeout other than MM_NO_TIMEOUT), MM_ETOOBIG, MM_ENOTCONN.
 */
MM_EXPORT int mm_request(mm_t *mm, const char *service, const char *route, const void *body,
                         size_t len, const mm_request_opts_t *opts, mm_msg_fn on_reply, void *ud,
                         mm_req_t *ret_req);

/**
 * Cancel a pending request: its callback runs now, once, with
 * MM_ECANCELED; a later answer is dropped.
 * @return MM_OK, or MM_ENOENT when the request already completed.
 */
MM_EXPORT int mm_request_cancel(mm_t *mm, mm_req_t req);

/**
 * A blocking request for simple clients: runs the instance's loop until
 * the final answer. Not callable from any callback running on the same
 * event_base (MM_ESTATE; the request is not sent).
 * @param ret_reply receives the final message whenever the request was sent
 *        (unref it), NULL otherwise.
 * @return the final message's mm_msg_status(), or mm_request()'s error.
 */
MM_EXPORT int mm_request_sync(mm_t *mm, const char *service, const char *route, const void *body,
                              size_t len, const mm_request_opts_t *opts, mm_msg_t **ret_reply);

/**
 * The outcome of a confirmed send, called once: MM_OK (the broker has it:
 * in every matching queue, on disk for a persistent task), MM_ENOROUTE (a
 * task to a route no queue exists for), MM_EBROKER (the broker refused it),
 * MM_ETIMEDOUT / MM_EBLOCKED / MM_ENOTCONN (not confirmed within
 * send_timeout_ms: still buffered, blocked by flow control, or
 * disconnected), MM_ECLOSED (mm_free before a verdict). Runs on the loop,
 * never inside the mm_task()/mm_emit() call.
 */
typedef void (*mm_sent_fn)(mm_t *mm, int status, void *ud);

/** Options of mm_task() and mm_emit(). Declare with MM_SEND_OPTS_INIT. */
typedef struct mm_send_opts {
    size_t size;         /* set by MM_SEND_OPTS_INIT */
    const void *headers; /* user headers: msgpack bytes of a map with str keys, or NULL;
                            see "User headers" below */
    size_t headers_len;
    const char *request_id; /* tasks: idRequest header; NULL: a fresh UUID */
    unsigned flags;         /* MM_SEND_* */
    mm_sent_fn on_sent;     /* the broker's verdict on this send (implies a confirm), or NULL */
    void *sent_ud;
    const char *message_id;   /* NULL: a fresh UUID */
    const char *causation_id; /* NULL: the id of the message being handled, if any */
    const char *traceparent;  /* NULL: the handled message's, if any; "": none */
} mm_send_opts_t;

/** mm_send_opts_t.flags */
#define MM_SEND_TRANSIENT 1u /* a task not written to disk (tasks are persistent by default) */
#define MM_SEND_CONFIRM 2u   /* wait for the broker's confirm (events; tasks do by default) */
#define MM_SEND_JSON 4u      /* this body in JSON, whatever the instance's codec */

/* clang-format off */
#define MM_SEND_OPTS_INIT {.size = sizeof(mm_send_opts_t)}
/* clang-format on */

/**
 * Queue a task for `route` of `service`: one instance handling the route
 * takes it and acks it when done. Tasks are persistent and confirmed by
 * default (see "Reliability"). A task nobody handles is returned by the
 * broker: MM_EV_UNROUTABLE event, and on_sent gets MM_ENOROUTE.
 * @return MM_OK (sent, or buffered while disconnected or blocked), MM_ENAME,
 *         MM_EINVAL, MM_ETOOBIG, MM_EFULL (the send buffer is full),
 *         MM_ENOTCONN (never connected, or closed).
 */
MM_EXPORT int mm_task(mm_t *mm, const char *service, const char *route, const void *body,
                      size_t len, const mm_send_opts_t *opts);

/**
 * Publish an event to `target`.`route` (target NULL: this service); every
 * instance listening to a matching route gets it. An event nobody listens
 * to is dropped by the broker. Buffered like tasks while disconnected or
 * blocked; confirmed with MM_OPT_CONFIRM_EVENTS, MM_SEND_CONFIRM or on_sent.
 * @return MM_OK, MM_ENAME, MM_EINVAL, MM_ETOOBIG, MM_EFULL, MM_ENOTCONN.
 */
MM_EXPORT int mm_emit(mm_t *mm, const char *target, const char *route, const void *body, size_t len,
                      const mm_send_opts_t *opts);

/* ---- Reliability ------------------------------------------------------------
 *
 * Reconnect. After the first successful mm_connect(), a lost connection
 * (broker restart, forced close, missed heartbeats, socket error) is
 * re-established in the background: MM_EV_DISCONNECTED, then attempts paced
 * by the retry strategy (the default backs off from 100 ms to 800 ms with
 * jitter, with no end unless reconnect_budget_ms is set), then every route
 * is declared and consumed again (listeners get fresh exclusive queues),
 * buffered sends go out and MM_EV_RECONNECTED is raised. If the strategy
 * gives up, MM_EV_DISCONNECTED comes again with its code and mm_run()
 * returns MM_EDISCONNECTED. MM_OPT_NO_RECONNECT turns all this off.
 * mm_connect() is blocking. A reconnect attempt first checks on the loop,
 * without blocking, that the broker answers (TCP connect and the AMQP
 * header); only then does it connect and log in, blocking for the few
 * round trips that takes (bounded by connect_timeout_ms). Host names are
 * resolved blocking (use an address where that matters).
 *
 * While disconnected: tasks and events are buffered (in order, within
 * send_buffer bytes, else MM_EFULL) and sent after the reconnect. Requests
 * waiting for an answer fail at once with MM_EDISCONNECTED (their reply
 * queue died with the connection); new requests fail with MM_ENOTCONN, or
 * with MM_OPT_OFFLINE_WAIT are buffered and sent after the reconnect,
 * their timeout running. Messages a handler received on the lost
 * connection can no longer be settled (MM_ECHANNEL): the broker redelivers
 * them, with mm_msg_redelivered() set.
 *
 * Confirms. Tasks (unless MM_OPT_NO_CONFIRM_TASKS) and confirmed events go
 * out on a channel in confirm mode and stay in the send buffer until the
 * broker confirms them; unconfirmed ones are sent again after a reconnect.
 * Delivery is at least once: a handler may see a task twice (redelivered
 * flag set, same request id) and should be idempotent. mm_flush() waits for
 * every confirm.
 *
 * Flow control. While the broker blocks the connection (a memory or disk
 * alarm: MM_EV_BLOCKED ... MM_EV_UNBLOCKED), nothing is written to the
 * socket: every send is buffered and goes out when unblocked; a send still
 * buffered after send_timeout_ms fails (on_sent: MM_EBLOCKED, else an
 * MM_EV_ERROR event). No call ever waits on a blocked socket: calls that
 * need an answer from the broker (mm_handle and mm_listen once connected,
 * stats, redrive) fail with MM_EBLOCKED meanwhile, since the broker stops
 * reading a blocked connection; the library's own (route restores, the
 * election) retry later.
 *
 * Poison messages. A request or task that is delivered again after its
 * handler gave it back (mm_msg_nack with requeue) or after the process
 * handling it died is counted (header x-mm-deliveries; every redelivery by
 * the broker counts, also of messages prefetched but not yet handled when
 * a connection died or mm_close gave them back); past
 * max_redeliveries deliveries it goes to the service's dead-letter queue
 * q.deadLetter.<service>, acked on its queue, with headers saying why
 * (x-mm-dead-reason, x-mm-dead-text, x-mm-dead-route, x-mm-dead-queue,
 * x-mm-dead-count) and an MM_EV_DEADLETTER event. Messages that cannot be
 * decoded, tasks rejected by their handler (mm_msg_reject) and messages
 * nobody handles go there at once. mm_deadletter_stat() and
 * mm_deadletter_redrive() inspect it and move its messages back.
 *
 * Heartbeats. The pump answers the broker's heartbeats from a timer, so
 * handlers that return quickly never cost the connection. A handler that
 * blocks the loop for longer than about twice the heartbeat (60 s with the
 * default 30 s) makes the broker close the connection: the service then
 * sees MM_EV_DISCONNECTED, its unsettled messages are redelivered
 * (possibly to another instance), and it reconnects. Run long work off the
 * loop, or settle the message later from a reference (mm_msg_ref).
 */

/**
 * Run the loop until every buffered or unconfirmed send has its verdict
 * (confirmed or failed), or `timeout_ms` passes (MM_NO_TIMEOUT: no bound).
 * Not callable from a callback on the same event_base (MM_ESTATE).
 * @return MM_OK, MM_ETIMEDOUT (sends still pending: see mm_unconfirmed()),
 *         MM_ESTATE, MM_ECLOSED (mm_free in a callback meanwhile: do not
 *         touch mm again).
 */
MM_EXPORT int mm_flush(mm_t *mm, int64_t timeout_ms);

/** Sends buffered or waiting for the broker's confirm. */
MM_EXPORT size_t mm_unconfirmed(const mm_t *mm);

/**
 * Figures of the dead-letter queue q.deadLetter.<service> (service NULL:
 * this instance's), one broker round trip. The queue is durable, with no
 * arguments, declared by the first dead-letter on each connection. Each
 * message in it is the original as it arrived (body, properties, headers;
 * no expiration, so a request's timeout does not remove it) plus headers:
 * x-mm-dead-reason (a code string: "redelivered", "badRequest", "tooBig",
 * "notHandled", "rejected" or the code a handler gave mm_msg_reject),
 * x-mm-dead-text, x-mm-dead-route, x-mm-dead-queue (where it came from),
 * x-mm-dead-count (its failed deliveries, this one included) and
 * x-mm-dead-at (ms since the epoch). A body refused for its size
 * (max_body) was never read: its record has an empty body and a header
 * x-mm-body-dropped with the original size.
 * @return MM_OK, MM_ENOENT (no such queue yet), MM_ENAME, MM_ENOTCONN...
 */
MM_EXPORT int mm_deadletter_stat(mm_t *mm, const char *service, mm_stat_t *ret_stat);

/**
 * Move up to `max` messages (0: all there are when the call starts; those
 * dead-lettered meanwhile wait for the next call) from this service's
 * dead-letter queue back to the queues they came from (x-mm-dead-queue),
 * with their delivery count reset and the x-mm-dead-* headers removed. Each
 * message is acked on the dead-letter queue only after the broker confirmed
 * it on its queue. Messages that cannot move stay in the dead-letter queue
 * and are not counted as moved: no x-mm-dead-queue header, a dropped body
 * (x-mm-body-dropped), or a queue that no longer exists. No dead-letter
 * queue: MM_OK, nothing moved. Blocks (runs the loop, where this
 * instance's handlers may already receive what was moved); not callable
 * from a callback (MM_ESTATE).
 * @param ret_moved receives the number of messages moved, also when an
 *        error ended the redrive midway (may be NULL; untouched when the
 *        call is refused: MM_ESTATE, MM_ENOTCONN).
 * @return MM_OK, MM_ENOTCONN, MM_ESTATE, MM_ETIMEDOUT (rpc_timeout_ms
 *         without progress), MM_ECHANNEL / MM_EDISCONNECTED (the channel or
 *         connection died: what was not acked stays in the dead-letter
 *         queue), MM_ECLOSED (mm_free in a callback meanwhile: do not touch
 *         mm again), or the broker's error.
 */
MM_EXPORT int mm_deadletter_redrive(mm_t *mm, uint32_t max, uint32_t *ret_moved);

/* ---- Peers and election ------------------------------------------------------
 *
 * Every connected instance (unless MM_OPT_NO_PEERS) publishes its status
 * every heartbeat_ms on its service's internal target (PROTOCOL.md 6: a JSON
 * peer.alive event: id, name, isReady, isMaster, leaderId, elapsedMs,
 * startedAt, memoryUsage, knownPeers), answers status requests, and keeps a
 * table of the peers it hears, forgetting those silent for 4 heartbeats.
 *
 * Election (unless MM_OPT_NO_ELECTION): the leader is the instance whose
 * connection holds the exclusive queue internal.<service>.lock (PROTOCOL.md
 * 7); the broker decides, so there are never two leaders at once, and an
 * instance claims leadership only while it holds the lock (it steps down
 * the moment its connection or lock channel is lost). Followers learn the
 * leader from heartbeats. Failover is faster than the protocol's timeout:
 * micromsg instances also wait, as consumers, on a single-active-consumer
 * queue of their own (q.mm.election.<service>) that holds a token message;
 * when the leader's connection dies the broker hands the token to the next
 * instance at once, and that instance takes the lock. Replicas that only
 * know the protocol still take part: they try the lock after
 * election_timeout_ms without a leader, and see the leader's heartbeats.
 * Events: MM_EV_LEADER (leader changed), MM_EV_STEP_UP, MM_EV_STEP_DOWN.
 */

/** 1 when this instance holds the lock (is the leader), else 0. */
MM_EXPORT int mm_is_leader(const mm_t *mm);

/** The leader's instance id as this instance knows it, or NULL when none. Valid until the next
 *  callback. */
MM_EXPORT const char *mm_leader_id(const mm_t *mm);

/** One instance of a service, as its status message said. */
typedef struct mm_member {
    const char *id;
    int ready;             /* connected and its routes declared */
    int leader;            /* it says it is the leader */
    const char *leader_id; /* the leader it follows, or NULL */
    int64_t uptime_ms;
    uint64_t rss;         /* resident memory, bytes */
    uint32_t known_peers; /* its peer table, itself included */
    /* A micromsg peer running MM_OPT_QOS says so in its heartbeat (headers
     * beside the protocol's fields): qos 1, its level (0: paused) and its
     * MM_PRESSURE_* flags; 0 for others. */
    int qos;
    uint32_t qos_level;
    unsigned qos_pressure;
} mm_member_t;

/** The status of a service. Valid during the callback only. */
typedef struct mm_status {
    int code; /* MM_OK; MM_ENOENT: no instance answered; MM_ENOTCONN... */
    const char *service;
    size_t count; /* members */
    const mm_member_t *members;
    int has_leader, has_ready; /* some member is the leader / is ready */
    const char *leader_id;     /* NULL when no member says it leads */
} mm_status_t;

typedef void (*mm_status_fn)(mm_t *mm, const mm_status_t *status, void *ud);

/**
 * Ask for the status of `service` (NULL: this instance's own): a status
 * request goes to internal.<service>, and every instance of it answers with
 * its peer.alive (micromsg listens on internal.<service> peer.alive
 * meanwhile, a temporary listener for another service). The callback runs
 * once, never before this call returns: when more than one member answered
 * and as many as the largest knownPeers among them, or a single member that
 * says it is alone; else after max(6 x measured broker latency, 1000 ms).
 * Status codes: MM_OK (members: every instance that answered), MM_ENOENT
 * (no answer at all), MM_ENOTCONN (the connection was lost or closed
 * meanwhile; the members heard so far), MM_ECLOSED (mm_free meanwhile: the
 * callback runs inside mm_free), MM_ENOMEM. Works with MM_OPT_NO_PEERS too
 * (the instance asks, but does not answer).
 * @return MM_OK (the callback will run), MM_EINVAL (mm or cb NULL), MM_ENAME
 *         (also when internal.<service> is longer than a name may be, i.e.
 *         a service name over 119 characters), MM_ENOTCONN (not connected),
 *         MM_ECLOSED.
 */
MM_EXPORT int mm_get_status(mm_t *mm, const char *service, mm_status_fn cb, void *ud);

/** mm_wait_service() flags. */
#define MM_WAIT_LEADER 1u /* also wait for a leader */

/**
 * Wait until `service` (NULL: this instance's own) has a ready member (and
 * a member that says it leads, with MM_WAIT_LEADER), asking for its status
 * (as mm_get_status) again every heartbeat_ms / 4 (at least 100 ms) after
 * the previous answer. `timeout_ms` >= 0, or MM_NO_TIMEOUT to wait for
 * ever. The wait survives a reconnect (it asks again once connected). The
 * callback runs once, never before this call returns: code MM_OK with the
 * status that satisfied the wait, MM_ETIMEDOUT with the last status seen
 * (no members when nobody answered), or MM_ECLOSED (mm_free meanwhile).
 * @return MM_OK (the callback will run), MM_ENAME, MM_EINVAL (mm or cb
 *         NULL, a negative timeout other than MM_NO_TIMEOUT), MM_ENOTCONN
 *         (never connected, or closed; reconnecting is fine), MM_ECLOSED.
 */
MM_EXPORT int mm_wait_service(mm_t *mm, const char *service, unsigned flags, int64_t timeout_ms,
                              mm_status_fn cb, void *ud);

/**
 * The average round trip through the broker in milliseconds, measured by
 * the peers module when it connects (PROTOCOL.md 6, latency probe: 5 small
 * events to itself, one after the other) and again every 10 heartbeats; -1
 * before the first measurement, and always with MM_OPT_NO_PEERS.
 */
MM_EXPORT double mm_broker_latency_ms(const mm_t *mm);

/* ---- QoS ------------------------------------------------------------------
 *
 * With MM_OPT_QOS the instance samples, every qos_interval_ms, how late its
 * loop is and its resident memory, and sets the prefetch of the routes
 * subject to quota (handled routes and user event listeners, not the
 * internal ones, not the reply queue, not those with max_parallel): under
 * loop lag it pauses them (consumers cancelled: nothing more arrives), then
 * resumes at half the level it had; over the soft memory limit it halves
 * the level; at the hard limit it stops receiving until memory is back
 * under the soft limit. Calm and saturated, it grows: doubling until the
 * first pressure, additively after. MM_EV_PRESSURE and
 * MM_EV_PRESSURE_RELEASED are raised once per transition. Messages already
 * delivered are never given back: the level applies to what comes next.
 */

#define MM_PRESSURE_LAG 1u  /* the loop is late */
#define MM_PRESSURE_MEM 2u  /* memory over the soft limit */
#define MM_PRESSURE_HARD 4u /* memory reached the hard limit */

/** What QoS sees and decided. */
typedef struct mm_qos_state {
    int enabled;
    uint32_t level;    /* parallelism shared among the routes subject to quota; 0: paused */
    unsigned pressure; /* MM_PRESSURE_* now */
    int64_t lag_ms;    /* last sample */
    uint64_t rss;      /* last sample, bytes */
    uint64_t mem_soft, mem_hard; /* the limits in use, bytes */
} mm_qos_state_t;

/** The QoS state. @return MM_OK, MM_EINVAL. */
MM_EXPORT int mm_qos_state(const mm_t *mm, mm_qos_state_t *ret_state);

/**
 * Set the prefetch of every route subject to quota (not those with
 * max_parallel) to `n` (>= 1), now and for routes declared later.
 * @return MM_OK; MM_ESTATE when QoS decides the prefetch (MM_OPT_QOS);
 *         MM_EINVAL for 0; the broker's error.
 */
MM_EXPORT int mm_set_max_parallelism(mm_t *mm, uint16_t n);

/* ---- Topics: persisted events with replay ------------------------------------
 *
 * A topic is a RabbitMQ stream (s.topic.<topic>, x-queue-type stream): an
 * append-only log kept on the broker's disk, with a retention bound, that
 * any number of readers read at their own pace, from any point, as often
 * as they like. A record carries an event type (the AMQP type property)
 * and a body; its offset is its position in the stream.
 *
 * A reader has a consumer name, unique within its service. Its cursor, the
 * offset of the last record it settled, is stored on the broker in a
 * durable queue q.cursor.<service>.<consumer> of length 1 (written after
 * every cursor_every records or cursor_interval_ms, and when it stops), so
 * that a reader restarted anywhere resumes right after the last record it
 * settled; after a crash it re-reads at most the records settled since the
 * last cursor write. Only one process reads a consumer name at a time: the
 * reader takes a lock (an exclusive queue q.readerLock.<service>.<consumer>);
 * the others wait as standbys and one of them takes over, from the stored
 * cursor, when the active reader's connection dies (MM_EV_READER_ACTIVE,
 * MM_EV_READER_STANDBY).
 *
 * Which to use: mm_listen() for live notifications each instance needs
 * (cache invalidation); a group for work each event must cause once per
 * service, even if it was down when the event was emitted; a topic for a
 * history: audit, rebuilding state, a new consumer that must see the past.
 */

/** Options of mm_topic_declare(). Declare with MM_TOPIC_OPTS_INIT. */
typedef struct mm_topic_opts {
    size_t size;            /* set by MM_TOPIC_OPTS_INIT */
    uint64_t max_age_s;     /* retention: records older than this may be removed; 0: no bound */
    uint64_t max_bytes;     /* retention: the stream's size bound; 0: no bound */
    uint32_t segment_bytes; /* a segment file's size (retention removes whole segments);
                               0: the broker's default (500 MB) */
} mm_topic_opts_t;

/* clang-format off */
#define MM_TOPIC_OPTS_INIT {.size = sizeof(mm_topic_opts_t)}
/* clang-format on */

/**
 * Declare a topic with its retention (opts NULL: no bound). Declaring an
 * existing topic with other retention options fails (MM_EBROKER): the
 * broker keeps the first ones. Blocking: one broker round trip.
 * @return MM_OK, MM_ENAME, MM_EINVAL, MM_ENOTCONN, MM_EBROKER.
 */
MM_EXPORT int mm_topic_declare(mm_t *mm, const char *topic, const mm_topic_opts_t *opts);

/**
 * Append a record of event `type` (a name like a route's) to `topic`. The
 * first publish to a topic by this instance checks that it exists (one
 * round trip): MM_ENOENT when nobody declared it. Records are persistent
 * and confirmed; opts->on_sent gets the broker's verdict (MM_OK once the
 * record is in the stream).
 * @return MM_OK (sent or buffered), MM_ENOENT, MM_ENAME, MM_EINVAL,
 *         MM_ETOOBIG, MM_EFULL, MM_ENOTCONN.
 */
MM_EXPORT int mm_topic_publish(mm_t *mm, const char *topic, const char *type, const void *body,
                               size_t len, const mm_send_opts_t *opts);

/** Delete a topic and its records. @return MM_OK, MM_ENOENT, MM_ENAME, MM_ENOTCONN... */
MM_EXPORT int mm_topic_delete(mm_t *mm, const char *topic);

/** Where a reader starts. */
typedef enum mm_from_kind {
    MM_FROM_CURSOR = 0,    /* after the stored cursor; without one, opts->fallback */
    MM_FROM_FIRST = 1,     /* the first record the stream still holds */
    MM_FROM_LAST = 2,      /* the last chunk written (the latest records) */
    MM_FROM_NEXT = 3,      /* only records appended from now on */
    MM_FROM_OFFSET = 4,    /* value: an offset (past the end: waits for it) */
    MM_FROM_TIMESTAMP = 5, /* value: ms since the epoch (second precision) */
} mm_from_kind;

typedef struct mm_from {
    mm_from_kind kind;
    int64_t value;
} mm_from_t;

/** A topic reader. */
typedef struct mm_reader mm_reader_t;

/** Options of mm_topic_read(). Declare with MM_READ_OPTS_INIT. */
typedef struct mm_read_opts {
    size_t size;              /* set by MM_READ_OPTS_INIT */
    mm_from_t fallback;       /* MM_FROM_CURSOR with no usable cursor; {0}: MM_FROM_FIRST */
    const char *const *types; /* read only these types (others are skipped); NULL: all */
    size_t ntypes;
    uint16_t prefetch;           /* records in flight; 0: 256 */
    uint32_t cursor_every;       /* settled records between cursor writes; 0: 100 */
    uint32_t cursor_interval_ms; /* a settled record waits at most this long; 0: 1000 */
} mm_read_opts_t;

/* clang-format off */
#define MM_READ_OPTS_INIT {.size = sizeof(mm_read_opts_t)}
/* clang-format on */

/**
 * Read `topic` as `consumer` of this service: the handler gets each record
 * (MM_MSG_RECORD: mm_msg_type(), mm_msg_offset(), the metadata) in offset
 * order; a record is settled when the handler returns. Reading starts at
 * `from` once this reader holds the consumer's lock (at once when no other
 * process reads it), and goes on with the records appended later.
 *
 * A stored cursor that cannot be decoded raises MM_EV_ERROR (MM_EDECODE)
 * and the reader starts at opts->fallback; a record whose body cannot be
 * decoded raises MM_EV_ERROR (MM_EDECODE, with its offset) and is skipped.
 * Both are never silent. May be called before mm_connect().
 *
 * @param ret_reader receives the reader (may be NULL); owned by mm until
 *        mm_reader_stop() or mm_free().
 * @return MM_OK; MM_ENOENT when the topic does not exist; MM_ENAME;
 *         MM_ESTATE when this instance reads that consumer name already;
 *         MM_EINVAL; the broker's error.
 */
MM_EXPORT int mm_topic_read(mm_t *mm, const char *topic, const char *consumer, mm_from_t from,
                            mm_msg_fn handler, void *ud, const mm_read_opts_t *opts,
                            mm_reader_t **ret_reader);

/** 1 while the reader holds its lock and reads, 0 while it waits as a standby. */
MM_EXPORT int mm_reader_active(const mm_reader_t *reader);

/** The offset of the last record the reader settled, or -1 when none yet. */
MM_EXPORT int64_t mm_reader_position(const mm_reader_t *reader);

/**
 * Stop a reader and free it: write its cursor (when it read anything),
 * cancel its consumer and release its lock, so that a standby takes over.
 * @return MM_OK, or the broker's error (the reader is freed anyway).
 */
MM_EXPORT int mm_reader_stop(mm_reader_t *reader);

#ifdef __cplusplus
}
#endif
#endif /* MICROMSG_H */
