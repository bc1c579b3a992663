/*
 * mmctl: a command line tool for micromsg services, built on the public API
 * only. This header holds what the verbs share: the exit codes (the one place
 * they are defined), the parsed command line, the session (instance, loop,
 * signals) and the JSON and output helpers.
 */
#ifndef MMCTL_H
#define MMCTL_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "micromsg.h"

struct event_base;
struct event;
typedef struct json_t json_t;

/* Exit codes: scripts rely on them; the usage text documents them (main.c). */
enum {
    MMCTL_EXIT_OK = 0,
    MMCTL_EXIT_FAIL = 1,        /* any other failure */
    MMCTL_EXIT_REMOTE = 2,      /* the remote handler answered with an error */
    MMCTL_EXIT_TIMEOUT = 3,     /* no answer (or no leader) within the timeout */
    MMCTL_EXIT_NOROUTE = 4,     /* nobody handles the route, unroutable task, no such queue */
    MMCTL_EXIT_USAGE = 64,      /* unknown verb or flag, missing or extra argument */
    MMCTL_EXIT_BODY = 65,       /* the body is not valid JSON */
    MMCTL_EXIT_UNREACHABLE = 69 /* the broker could not be reached (connect failed) */
};

/* Options a verb accepts besides the global ones (struct mmctl_verb.flags; the
 * ones given: struct mmctl_args.given). args.c names them in this bit order. */
#define MMCTL_F_COUNT 1u      /* --count N */
#define MMCTL_F_ECHO 2u       /* --echo */
#define MMCTL_F_RAW 4u        /* --raw */
#define MMCTL_F_MAX_AGE 8u    /* --max-age SECONDS */
#define MMCTL_F_MAX_BYTES 16u /* --max-bytes N */
#define MMCTL_F_FROM 32u      /* --from WHERE */

#define MMCTL_MAX_ARGS 4

/* The command line, parsed (args.c). */
struct mmctl_args {
    const char *verb;
    const char *uri;    /* NULL: the library's choice ($MM_URI, $RABBITMQ_URI, localhost) */
    bool json;          /* one JSON object per line on stdout */
    bool help;          /* --help / -h */
    bool raw, echo;     /* verb flags */
    int verbose;        /* -v: 1, -vv: 2 */
    int codec;          /* MM_CODEC_MSGPACK or MM_CODEC_JSON */
    int64_t timeout_ms; /* -1: not given */
    uint64_t count;     /* 0: no limit */
    uint64_t max_age_s; /* a topic's retention; 0: not given (no bound) */
    uint64_t max_bytes;
    mm_from_t from; /* where a topic reader starts; {0}: the stored cursor */
    unsigned given; /* MMCTL_F_* of the verb options on the command line */
    int nargs;
    const char *args[MMCTL_MAX_ARGS]; /* positional arguments after the verb */
};

/* A verb of the table in main.c. */
struct mmctl_verb {
    const char *name;
    int (*run)(struct mmctl_args *a);
    int min_args, max_args;
    unsigned flags; /* MMCTL_F_* */
    const char *synopsis, *help;
};

/* ---- args.c ---- */

/* Parse argv (global options before or after the verb). Returns MMCTL_EXIT_OK or
 * MMCTL_EXIT_USAGE after printing one line on stderr. `find` looks a verb up. */
int mmctl_parse(int argc, char **argv, struct mmctl_args *a,
                const struct mmctl_verb *(*find)(const char *name));

/* ---- session.c: one instance on a loop of ours ---- */

/* What a session is for: a short-lived client, or a member of a service. */
enum { MMCTL_CLIENT = 0, MMCTL_SERVER = 1, MMCTL_ELECTOR = 2 };

struct mmctl_session {
    struct mmctl_args *a;
    struct event_base *base;
    mm_t *mm;
    struct event *sig[2];
    bool interrupted; /* SIGINT or SIGTERM came */
    bool connected;   /* the first connect succeeded */
    void (*on_event)(struct mmctl_session *s, const mm_event_t *ev); /* extra hook, or NULL */
    void *ud;                                                        /* the verb's state */
};

/* Create the instance (service NULL: "mmctl", a client invisible to peers) and connect.
 * Returns an exit code; on failure one line was printed and the session is closed. */
int mmctl_open(struct mmctl_session *s, struct mmctl_args *a, const char *service, int kind);

/* Run the loop until mmctl_break() or a signal. */
void mmctl_loop(struct mmctl_session *s);

/* Make mmctl_loop() return (safe in callbacks). */
void mmctl_break(struct mmctl_session *s);

/* Close gracefully and free everything. */
void mmctl_close(struct mmctl_session *s);

/* The timeout for waits other than requests: --timeout, else `dflt`. */
int64_t mmctl_timeout(const struct mmctl_args *a, int64_t dflt);

/* ---- body.c: bodies from the command line ---- */

/* The body of argument `arg` (NULL: none; "-": JSON from stdin; --raw: bytes as bin) into
 * a new builder *ret (NULL when there is no body). Returns an exit code, after one line on
 * stderr when it fails. */
int mmctl_body(const struct mmctl_args *a, const char *arg, mm_body_t **ret);

/* ---- json.c: JSON text <-> msgpack ---- */

/* Pack the JSON value j. Returns 0, or -1 (out of memory). */
int mmctl_json_pack(msgpack_packer *pk, const json_t *j);

/* A new JSON value for the msgpack object o (bin: {"$bin": "<base64>"}), or NULL. */
json_t *mmctl_json_of(const msgpack_object *o);

/* ---- print.c: output ---- */

/* Print the JSON value j on one line of stdout (consumes j). */
void mmctl_print_json(json_t *j);

/* Print a message: with --json one object (kind, route, request id, headers, body, ...),
 * else "[#n] ROUTE BODY" (n > 0) or just the body (n == 0). */
void mmctl_print_msg(const struct mmctl_args *a, mm_msg_t *msg, uint64_t n);

/* One line on stderr: "mmctl: ...". */
void mmctl_err(const char *fmt, ...) __attribute__((format(printf, 1, 2)));

/* The readiness line on stderr that scripts (and the tests) wait for: "mmctl: ready: ...". */
void mmctl_ready(const char *fmt, ...) __attribute__((format(printf, 1, 2)));

/* The exit code for an answer's or a call's status (MM_OK, MM_E*). */
int mmctl_exit_of(int status);

/* ---- verbs ---- */

int mmctl_request(struct mmctl_args *a);
int mmctl_reply(struct mmctl_args *a);
/* ---- pubsub.c: the broker's verdicts on confirmed sends (emit, task, topic-publish) ---- */

struct mmctl_confirms {
    uint64_t confirmed, noroute, failed;
    int last_error;
};

/* mm_sent_fn counting into the struct mmctl_confirms `ud`. */
void mmctl_on_sent(mm_t *mm, int status, void *ud);

/* The exit code of the sends' confirms (failed ones, then mm_flush's `flush`), after an
 * error line naming `what` ("task(s)", "record(s)"...). Returned ones are the caller's. */
int mmctl_confirm_verdict(const struct mmctl_confirms *st, int flush, const char *what);

int mmctl_emit(struct mmctl_args *a);
int mmctl_listen(struct mmctl_args *a);
int mmctl_task(struct mmctl_args *a);
int mmctl_work(struct mmctl_args *a);
int mmctl_stat(struct mmctl_args *a);
int mmctl_status(struct mmctl_args *a);
int mmctl_leader(struct mmctl_args *a);
int mmctl_join(struct mmctl_args *a);
int mmctl_topic_declare(struct mmctl_args *a);
int mmctl_topic_publish(struct mmctl_args *a);
int mmctl_topic_read(struct mmctl_args *a);
int mmctl_topic_delete(struct mmctl_args *a);

/* ---- bench.c: the benchmark's quick run ---- */
int mmctl_bench(struct mmctl_args *a);
const char *mmctl_bench_role_verb(void);     /* the hidden verb of a role process */
int mmctl_bench_role(int argc, char **argv); /* runs one role: its exit status */

#endif
