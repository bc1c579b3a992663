/*
 * pubsub: events with topic wildcards.
 *
 *   pubsub [URI]      (argv[1], else $MM_URI, else $MM_TEST_URI, else amqp://localhost)
 *
 * Two instances on one event_base (in real life two processes):
 *   "sensors" emits events on routes such as "temp.kitchen";
 *   "dashboard" listens to sensors' "temp.*" ("*": exactly one word) and,
 *   on a second route, to "#" (zero or more words: everything).
 * Every listening instance gets its own copy of each matching event.
 *
 * The check: "#" hears all four events, "temp.*" exactly the two one-word
 * temperatures, in the order they were emitted. Events from one sender reach
 * a queue in order, so once "temp.*" has heard the last one emitted
 * (temp.garage), anything it should not have heard would already be there.
 */
#include <event2/event.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <micromsg.h>

#include "example.h"

static const char *const emitted[] = {"temp.kitchen", "humidity.kitchen", "temp.attic.floor",
                                      "temp.garage"};
static const char *const want_temp[] = {"temp.kitchen", "temp.garage"}; /* what temp.* matches */
#define N_EMITTED 4
#define N_TEMP 2

struct heard {
    int count;
    int wrong; /* events out of order or not matching */
};

struct app {
    struct event_base *base;
    struct heard temp, all;
};

/* An event's routing key is "<emitting service>.<route>": "sensors.temp.kitchen". */
static int
route_is(const char *key, const char *route)
{
    return strncmp(key, "sensors.", 8) == 0 && strcmp(key + 8, route) == 0;
}

static void
maybe_done(struct app *a)
{
    if (a->temp.count >= N_TEMP && a->all.count >= N_EMITTED)
        event_base_loopbreak(a->base);
}

/* Listener of "temp.*": must hear want_temp[], in order. */
static void
on_temp(mm_msg_t *msg, void *ud)
{
    struct app *a = ud;
    const char *route = mm_msg_route(msg); /* the event's routing key */
    printf("dashboard temp.*: %-26s ", route);
    msgpack_object_print(stdout, *mm_msg_body(msg));
    printf("\n");
    if (a->temp.count >= N_TEMP || !route_is(route, want_temp[a->temp.count]))
        a->temp.wrong++;
    a->temp.count++;
    maybe_done(a);
}

/* Listener of "#": must hear every event, in order. */
static void
on_all(mm_msg_t *msg, void *ud)
{
    struct app *a = ud;
    const char *route = mm_msg_route(msg);
    printf("dashboard #:      %s\n", route);
    if (a->all.count >= N_EMITTED || !route_is(route, emitted[a->all.count]))
        a->all.wrong++;
    a->all.count++;
    maybe_done(a);
}

static mm_t *
instance(struct app *a, const char *service)
{
    mm_opts_t opts = MM_OPTS_INIT;
    opts.base = a->base;
    opts.flags = MM_OPT_NO_PEERS; /* no heartbeats or election: not needed here */
    return mm_new(service, &opts);
}

/* Listen before connecting: the bindings exist once mm_connect() returns. */
static int
setup(struct app *a, mm_t *dash, mm_t *sensors, const char *uri)
{
    int rc = mm_last_code(dash) != MM_OK ? mm_last_code(dash) : mm_last_code(sensors);
    if (rc == MM_OK)
        rc = mm_listen(dash, "sensors", "temp.*", on_temp, a, NULL, NULL);
    if (rc == MM_OK)
        rc = mm_listen(dash, "sensors", "#", on_all, a, NULL, NULL);
    if (rc == MM_OK && (rc = mm_connect(dash, uri)) == MM_OK)
        rc = mm_connect(sensors, uri);
    if (rc != MM_OK)
        fprintf(stderr, "pubsub: setup: %s: %s\n", mm_err_name(rc),
                mm_last_code(dash) ? mm_last_error(dash) : mm_last_error(sensors));
    return rc;
}

/* Emit each event with a small msgpack map as its body. */
static int
emit_all(mm_t *sensors)
{
    mm_body_t *body = mm_body_new();
    int rc = body ? MM_OK : MM_ENOMEM;
    for (int i = 0; i < N_EMITTED && rc == MM_OK; i++) {
        mm_body_reset(body);
        msgpack_packer *pk = mm_body_packer(body);
        msgpack_pack_map(pk, 1);
        msgpack_pack_str_with_body(pk, "value", 5);
        msgpack_pack_int(pk, 20 + i);
        rc = mm_emit(sensors, NULL, emitted[i], mm_body_data(body), mm_body_len(body), NULL);
        printf("sensors emitted:  %s\n", emitted[i]);
    }
    mm_body_free(body);
    if (rc != MM_OK)
        fprintf(stderr, "pubsub: emit: %s\n", mm_last_error(sensors));
    return rc;
}

int
main(int argc, char **argv)
{
    setvbuf(stdout, NULL, _IOLBF, 0); /* lines in the order they happen, also in a pipe */
    struct app a = {0};
    a.base = event_base_new();
    mm_t *dash = instance(&a, "dashboard"), *sensors = instance(&a, "sensors");
    if (a.base == NULL || dash == NULL || sensors == NULL)
        return 2;
    int rc = setup(&a, dash, sensors, example_uri(argc, argv));
    if (rc == MM_OK)
        rc = emit_all(sensors);
    /* Bounded: a missing event must fail the run, not hang it. */
    const struct timeval limit = {10, 0};
    if (rc == MM_OK)
        event_base_loopexit(a.base, &limit);
    if (rc == MM_OK)
        event_base_dispatch(a.base); /* until everything arrived (or the limit) */
    mm_free(dash);
    mm_free(sensors);
    event_base_free(a.base);
    int ok = rc == MM_OK && a.temp.count == N_TEMP && a.all.count == N_EMITTED &&
             a.temp.wrong == 0 && a.all.wrong == 0;
    printf("pubsub: temp.* heard %d (want %d), # heard %d (want %d): %s\n", a.temp.count, N_TEMP,
           a.all.count, N_EMITTED, ok ? "ok" : "FAILED");
    return ok ? 0 : 1;
}
