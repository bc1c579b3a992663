/*
 * A session: one micromsg instance attached to a libevent loop of mmctl's
 * own, so that SIGINT and SIGTERM are libevent signal events that end the
 * loop cleanly (the instance is then closed gracefully and freed). The first
 * connect fails fast (a command line tool should not retry for 30 s);
 * once connected, a lost connection is re-established as the library does
 * by default. Library logs go to stderr only with -v / -vv.
 */
#include <event2/event.h>
#include <signal.h>
#include <stdio.h>
#include <string.h>

#include "mmctl.h"

static void
on_log(int level, const char *text, void *ud)
{
    (void) ud;
    fprintf(stderr, "mmctl: [%s] %s\n",
            level <= MM_LOG_ERR    ? "error"
            : level <= MM_LOG_WARN ? "warn"
            : level <= MM_LOG_INFO ? "info"
                                   : "debug",
            text);
}

/* Fail fast before the first connect, then the default strategy without end. */
static int64_t
retry(int error, unsigned attempts, uint64_t elapsed_ms, void *ud)
{
    struct mmctl_session *s = ud;
    if (!s->connected)
        return -1;
    return mm_retry_default(error, attempts, elapsed_ms, (void *) UINTPTR_MAX);
}

static const char *
event_name(mm_event_type t)
{
    static const char *const names[] = {
        "?",      "connected", "disconnected", "channelError", "blocked",          "unblocked",
        "error",  "expired",   "unhandled",    "unroutable",   "reconnected",      "deadletter",
        "leader", "stepUp",    "stepDown",     "pressure",     "pressureReleased",
    };
    if (t == MM_EV_READER_ACTIVE || t == MM_EV_READER_STANDBY) /* topics (mmctl topic-read) */
        return t == MM_EV_READER_ACTIVE ? "readerActive" : "readerStandby";
    return (unsigned) t < sizeof names / sizeof names[0] ? names[t] : "?";
}

static void
on_event(mm_t *mm, const mm_event_t *ev, void *ud)
{
    (void) mm;
    struct mmctl_session *s = ud;
    if (s->a->verbose > 0)
        fprintf(stderr, "mmctl: [event %s] %s: %s\n", event_name(ev->type), mm_err_name(ev->code),
                ev->text);
    if (s->on_event != NULL)
        s->on_event(s, ev);
}

static void
on_signal(evutil_socket_t sig, short what, void *ud)
{
    (void) sig;
    (void) what;
    struct mmctl_session *s = ud;
    s->interrupted = true;
    event_base_loopbreak(s->base);
}

/* The loop and its signal events. */
static int
base_open(struct mmctl_session *s)
{
    static const int sigs[2] = {SIGINT, SIGTERM};
    s->base = event_base_new();
    if (s->base == NULL)
        return -1;
    for (int i = 0; i < 2; i++) {
        s->sig[i] = evsignal_new(s->base, sigs[i], on_signal, s);
        if (s->sig[i] == NULL || event_add(s->sig[i], NULL) != 0)
            return -1;
    }
    return 0;
}

static mm_opts_t
options(struct mmctl_session *s, int kind)
{
    mm_opts_t o = MM_OPTS_INIT;
    o.base = s->base;
    o.codec = s->a->codec;
    o.on_event = on_event;
    o.event_ud = s;
    o.retry = retry;
    o.retry_ud = s;
    if (s->a->verbose > 0) {
        o.log = on_log;
        o.log_level = s->a->verbose > 1 ? MM_LOG_DEBUG : MM_LOG_INFO;
    }
    if (kind == MMCTL_CLIENT)
        o.flags |= MM_OPT_NO_PEERS; /* short-lived: neither a peer nor a candidate */
    else if (kind == MMCTL_SERVER)
        o.flags |= MM_OPT_NO_ELECTION; /* a member that never leads */
    return o;
}

int
mmctl_open(struct mmctl_session *s, struct mmctl_args *a, const char *service, int kind)
{
    *s = (struct mmctl_session){.a = a, .on_event = s->on_event, .ud = s->ud};
    if (base_open(s) != 0) {
        mmctl_err("cannot create the event loop");
        mmctl_close(s);
        return MMCTL_EXIT_FAIL;
    }
    mm_opts_t o = options(s, kind);
    s->mm = mm_new(service != NULL ? service : "mmctl", &o);
    int rc = s->mm != NULL ? mm_last_code(s->mm) : MM_ENOMEM;
    if (rc == MM_OK && (rc = mm_connect(s->mm, a->uri)) != MM_OK) {
        mmctl_err("cannot connect to the broker: %s (%s)", mm_strerror(rc), mm_last_error(s->mm));
        mmctl_close(s);
        return rc == MM_EURI ? MMCTL_EXIT_USAGE : MMCTL_EXIT_UNREACHABLE;
    }
    if (rc != MM_OK) {
        mmctl_err("%s", s->mm != NULL ? mm_last_error(s->mm) : "out of memory");
        mmctl_close(s);
        return mmctl_exit_of(rc);
    }
    s->connected = true;
    return MMCTL_EXIT_OK;
}

void
mmctl_loop(struct mmctl_session *s)
{
    if (!s->interrupted)
        event_base_dispatch(s->base);
}

void
mmctl_break(struct mmctl_session *s)
{
    event_base_loopbreak(s->base);
}

void
mmctl_close(struct mmctl_session *s)
{
    if (s->mm != NULL && s->connected)
        mm_close(s->mm);
    mm_free(s->mm);
    s->mm = NULL;
    for (int i = 0; i < 2; i++) {
        if (s->sig[i] != NULL)
            event_free(s->sig[i]);
        s->sig[i] = NULL;
    }
    if (s->base != NULL)
        event_base_free(s->base);
    s->base = NULL;
}

int64_t
mmctl_timeout(const struct mmctl_args *a, int64_t dflt)
{
    return a->timeout_ms >= 0 ? a->timeout_ms : dflt;
}
