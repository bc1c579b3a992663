/*
 * demo: one program, two service instances on one libevent loop, showing the
 * core patterns: a request answered by another service, a streamed answer,
 * an event heard by a listener, and a task taken by a worker.
 *
 *   demo [URI]     (default: $MM_URI, then $RABBITMQ_URI, then amqp://localhost)
 *
 * Uses only the public API. In real life "clock" and "client" would be two
 * processes (or two machines); the code would not change.
 */
#include <event2/event.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <micromsg.h>

static int pending = 4; /* answer, stream, event, task: the loop stops when all came */
static struct event_base *base;

static void
finish(void)
{
    if (--pending == 0)
        event_base_loopbreak(base);
}

/* ---- the "clock" service ---- */

static void
on_time(mm_msg_t *msg, void *ud)
{
    (void) ud;
    mm_body_t *b = mm_body_new();
    mm_body_str(b, "12:00");
    mm_msg_reply(msg, mm_body_data(b), mm_body_len(b));
    mm_body_free(b);
}

static void
on_count(mm_msg_t *msg, void *ud)
{
    (void) ud;
    mm_body_t *b = mm_body_new();
    for (int i = 1; i <= 3; i++) {
        mm_body_reset(b);
        msgpack_pack_int(mm_body_packer(b), i);
        mm_msg_write(msg, mm_body_data(b), mm_body_len(b)); /* one part */
    }
    mm_msg_end(msg, NULL, 0);
    mm_body_free(b);
}

static void
on_job(mm_msg_t *msg, void *ud)
{
    (void) ud;
    printf("clock: task '%s' done\n", mm_msg_route(msg));
    mm_msg_ack(msg);
    finish();
}

/* ---- the "client" service ---- */

static void
print_obj(const char *what, const msgpack_object *o)
{
    printf("%s", what);
    msgpack_object_print(stdout, *o);
    printf("\n");
}

static void
on_time_reply(mm_msg_t *msg, void *ud)
{
    (void) ud;
    if (mm_msg_status(msg) == MM_OK)
        print_obj("client: the time is ", mm_msg_body(msg));
    else
        printf("client: request failed: %s %s\n", mm_msg_error_code(msg), mm_msg_error_text(msg));
    finish();
}

static void
on_count_reply(mm_msg_t *msg, void *ud)
{
    (void) ud;
    if (!mm_msg_is_final(msg)) {
        print_obj("client: part ", mm_msg_body(msg));
        return;
    }
    printf("client: stream %s\n", mm_msg_status(msg) == MM_OK ? "ended" : mm_msg_error_text(msg));
    finish();
}

static void
on_tick(mm_msg_t *msg, void *ud)
{
    (void) ud;
    print_obj("client: heard event clock.tick: ", mm_msg_body(msg));
    finish();
}

static void
on_event(mm_t *mm, const mm_event_t *ev, void *ud)
{
    (void) ud;
    printf("%s: event %d %s (%s)\n", mm_service(mm), ev->type,
           ev->code ? mm_err_name(ev->code) : "", ev->text);
}

static mm_t *
instance(const char *service)
{
    mm_opts_t opts = MM_OPTS_INIT;
    opts.base = base;
    opts.on_event = on_event;
    opts.retry_budget_ms = 5000;
    mm_t *mm = mm_new(service, &opts);
    if (mm == NULL || mm_last_code(mm) != MM_OK) {
        fprintf(stderr, "mm_new: %s\n", mm ? mm_last_error(mm) : "out of memory");
        exit(1);
    }
    return mm;
}

static void
check(mm_t *mm, int rc, const char *what)
{
    if (rc != MM_OK) {
        fprintf(stderr, "%s: %s: %s\n", what, mm_err_name(rc), mm_last_error(mm));
        exit(2);
    }
}

int
main(int argc, char **argv)
{
    const char *uri = argc > 1 ? argv[1] : NULL;
    base = event_base_new();
    mm_t *clock = instance("clock"), *client = instance("client");
    printf("micromsg %s\n", MM_VERSION_STRING);

    check(clock, mm_handle(clock, "time", on_time, NULL, NULL, NULL), "handle time");
    check(clock, mm_handle(clock, "count", on_count, NULL, NULL, NULL), "handle count");
    check(clock, mm_handle(clock, "job", on_job, NULL, NULL, NULL), "handle job");
    check(client, mm_listen(client, "clock", "tick", on_tick, NULL, NULL, NULL), "listen");
    check(clock, mm_connect(clock, uri), "connect clock");
    check(client, mm_connect(client, uri), "connect client");
    printf("connected to %s\n", mm_uri(client));

    check(client, mm_request(client, "clock", "time", NULL, 0, NULL, on_time_reply, NULL, NULL),
          "request");
    mm_request_opts_t ro = MM_REQUEST_OPTS_INIT;
    ro.flags = MM_REQ_PARTS;
    check(client, mm_request(client, "clock", "count", NULL, 0, &ro, on_count_reply, NULL, NULL),
          "stream request");
    mm_body_t *b = mm_body_new();
    mm_body_str(b, "tock");
    check(clock, mm_emit(clock, NULL, "tick", mm_body_data(b), mm_body_len(b), NULL), "emit");
    check(client, mm_task(client, "clock", "job", NULL, 0, NULL), "task");
    mm_body_free(b);

    event_base_dispatch(base); /* until the four results came */
    printf("all done\n");
    mm_free(client);
    mm_free(clock);
    event_base_free(base);
    return 0;
}
