/*
 * demo: connect a service instance to the broker, show what happens, close.
 *
 *   demo [URI]     (default: $MM_URI, then $RABBITMQ_URI, then amqp://localhost)
 *
 * Uses only the public API. The instance is attached to the program's own
 * libevent loop, which runs for a moment so that the "connected" event, which
 * is always delivered from the loop, can arrive.
 */
#include <event2/event.h>
#include <stdio.h>
#include <stdlib.h>

#include <micromsg.h>

static const char *
event_name(mm_event_type t)
{
    switch (t) {
    case MM_EV_CONNECTED:
        return "connected";
    case MM_EV_DISCONNECTED:
        return "disconnected";
    case MM_EV_CHANNEL_ERROR:
        return "channel error";
    case MM_EV_BLOCKED:
        return "blocked";
    case MM_EV_UNBLOCKED:
        return "unblocked";
    default:
        return "error";
    }
}

static void
on_event(mm_t *mm, const mm_event_t *ev, void *ud)
{
    (void) mm;
    (void) ud;
    printf("event: %s%s%s (%s)\n", event_name(ev->type), ev->code ? " " : "",
           ev->code ? mm_err_name(ev->code) : "", ev->text);
}

static void
on_log(int level, const char *text, void *ud)
{
    (void) ud;
    printf("log[%d]: %s\n", level, text);
}

static void
on_timer(evutil_socket_t fd, short what, void *base)
{
    (void) fd;
    (void) what;
    event_base_loopbreak(base);
}

int
main(int argc, char **argv)
{
    struct event_base *base = event_base_new();
    mm_opts_t opts = MM_OPTS_INIT;
    opts.base = base;
    opts.on_event = on_event;
    opts.log = on_log;
    opts.log_level = MM_LOG_INFO;
    opts.retry_budget_ms = 5000;

    mm_t *mm = mm_new("demo", &opts);
    if (mm == NULL || mm_last_code(mm) != MM_OK) {
        fprintf(stderr, "mm_new: %s\n", mm ? mm_last_error(mm) : "out of memory");
        return 1;
    }
    printf("micromsg %s, service '%s', instance %s\n", MM_VERSION_STRING, mm_service(mm),
           mm_id(mm));

    int rc = mm_connect(mm, argc > 1 ? argv[1] : NULL);
    if (rc != MM_OK) {
        fprintf(stderr, "connect failed: %s: %s\n", mm_err_name(rc), mm_last_error(mm));
        mm_free(mm);
        event_base_free(base);
        return 2;
    }
    printf("connected to %s, heartbeat %d s\n", mm_uri(mm), mm_heartbeat(mm));

    struct event *t = evtimer_new(base, on_timer, base);
    struct timeval moment = {0, 300000};
    evtimer_add(t, &moment);
    event_base_dispatch(base);
    event_free(t);

    rc = mm_close(mm);
    printf("closed: %s\n", mm_strerror(rc));
    mm_free(mm);
    event_base_free(base);
    return 0;
}
