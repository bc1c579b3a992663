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
    X(EPROTO, -22, "AMQP protocol error")

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

/** Kinds of instance events. */
typedef enum mm_event_type {
    MM_EV_CONNECTED = 1,     /* the connection is up (after mm_connect) */
    MM_EV_DISCONNECTED = 2,  /* the connection died; code says why */
    MM_EV_CHANNEL_ERROR = 3, /* the broker closed a channel; the connection lives */
    MM_EV_BLOCKED = 4,       /* the broker blocked publishing (resource alarm) */
    MM_EV_UNBLOCKED = 5,     /* publishing is allowed again */
    MM_EV_ERROR = 6,         /* any other asynchronous failure */
} mm_event_type;

/** An instance event, valid only during the callback. */
typedef struct mm_event {
    mm_event_type type;
    int code;         /* MM_OK or an MM_E* code */
    const char *text; /* never NULL; detail, e.g. the broker's reply text */
    uint16_t channel; /* the channel concerned, 0 when none */
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
} mm_opts_t;

/* clang-format off */
#define MM_OPTS_INIT {.size = sizeof(mm_opts_t)}
/* clang-format on */

/**
 * Create a service instance. Nothing touches the network until
 * mm_connect().
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
 * @return MM_OK; MM_EURI (bad URI), MM_EUNREACHABLE (refused, DNS, no route),
 *         MM_ETIMEDOUT, MM_EAUTH (wrong credentials), MM_EVHOST, MM_ETLS,
 *         MM_ESTATE (already connected); detail in mm_last_error(), which
 *         never contains the password.
 */
MM_EXPORT int mm_connect(mm_t *mm, const char *uri);

/**
 * The default retry strategy: exponential backoff (100 ms doubling to 5 s)
 * with +-20 % jitter, until `elapsed_ms` reaches the budget in milliseconds
 * given as `ud` (a uintptr_t cast to void *; 0: 30000). Never retries
 * MM_EURI, MM_EAUTH, MM_EVHOST, MM_ETLS and MM_EINVAL: they will not heal.
 */
MM_EXPORT int64_t mm_retry_default(int error, unsigned attempts, uint64_t elapsed_ms, void *ud);

/**
 * Run the instance's own loop until mm_stop() or the connection is lost.
 * @return MM_OK after mm_stop(); MM_EDISCONNECTED when the connection died;
 *         MM_ECLOSED when a callback called mm_free(): the instance is then
 *         already freed and must not be touched (nor freed again);
 *         MM_ESTATE when the instance is attached to the caller's event_base
 *         (run that base instead) or not connected.
 */
MM_EXPORT int mm_run(mm_t *mm);

/** Make mm_run() return after the current callback. Safe in callbacks. */
MM_EXPORT void mm_stop(mm_t *mm);

/**
 * Close the connection cleanly (connection.close, bounded by the RPC
 * timeout) and remove every event from the loop. The instance may connect
 * again afterwards. Safe in callbacks.
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

#ifdef __cplusplus
}
#endif
#endif /* MICROMSG_H */
