/*
 * stream: an answer sent in parts (mm_msg_write ... mm_msg_end), received
 * part by part (MM_REQ_PARTS) or collected into one final callback.
 *
 *   stream [URI]      (argv[1], else $MM_URI, else $MM_TEST_URI, else amqp://localhost)
 *
 * Service "numbers", route "count": the body is n; the answer is the parts
 * 1, 2, ..., n, then an end message whose body is their sum. The parts are
 * numbered on the wire, so the client gets them in order even if the broker
 * or a reconnect shuffled them.
 *
 * Two requests from a "reader" instance on the same loop:
 *   1. with MM_REQ_PARTS: one callback per part (mm_msg_is_final() == 0),
 *      then one final callback for the end;
 *   2. without: a single callback once the whole stream has arrived, which
 *      reads the parts with mm_msg_part_count() / mm_msg_part().
 * Exits 0 when both saw 1..n in order and the sum at the end.
 */
#include <event2/event.h>
#include <stdio.h>
#include <stdlib.h>

#include <micromsg.h>

#include "example.h"

#define N_PARTS 20
#define SUM (N_PARTS * (N_PARTS + 1) / 2)

struct app {
    struct event_base *base;
    int pending; /* requests not finished */
    int next;    /* the part expected next in the MM_REQ_PARTS request */
    int ok_parts, ok_collected;
};

/* ---- the "numbers" service ---- */

/* Route "count": write n parts, then end with the sum. */
static void
on_count(mm_msg_t *msg, void *ud)
{
    (void) ud;
    const msgpack_object *o = mm_msg_body(msg);
    if (o->type != MSGPACK_OBJECT_POSITIVE_INTEGER || o->via.u64 > 1000) {
        mm_msg_reject(msg, "badArguments", "count wants n, 0 to 1000");
        return;
    }
    mm_body_t *b = mm_body_new();
    int64_t sum = 0;
    int rc = MM_OK;
    for (int64_t i = 1; i <= (int64_t) o->via.u64 && rc == MM_OK; i++) {
        mm_body_reset(b);
        msgpack_pack_int64(mm_body_packer(b), i);
        rc = mm_msg_write(msg, mm_body_data(b), mm_body_len(b)); /* part i */
        sum += i;
    }
    mm_body_reset(b);
    msgpack_pack_int64(mm_body_packer(b), sum);
    if (rc == MM_OK)
        rc = mm_msg_end(msg, mm_body_data(b), mm_body_len(b)); /* the last message */
    if (rc != MM_OK)
        fprintf(stderr, "numbers: stream failed: %s\n", mm_err_name(rc));
    mm_body_free(b);
}

/* ---- the reader ---- */

static int
is_int(const msgpack_object *o, int64_t want)
{
    return o->type == MSGPACK_OBJECT_POSITIVE_INTEGER && o->via.i64 == want;
}

static void
finished(struct app *a)
{
    if (--a->pending == 0)
        event_base_loopbreak(a->base);
}

/* MM_REQ_PARTS: called once per part, in order, then once more (final). */
static void
on_part(mm_msg_t *msg, void *ud)
{
    struct app *a = ud;
    if (mm_msg_status(msg) != MM_OK) {
        fprintf(stderr, "reader: stream failed: %s\n", mm_msg_error_text(msg));
        finished(a);
        return;
    }
    if (!mm_msg_is_final(msg)) {
        int in_order = is_int(mm_msg_body(msg), ++a->next);
        printf("reader: part %lld%s\n", (long long) mm_msg_body(msg)->via.i64,
               in_order ? "" : " OUT OF ORDER");
        if (!in_order)
            a->next = -1000; /* poisons the final check */
        return;
    }
    a->ok_parts = a->next == N_PARTS && is_int(mm_msg_body(msg), SUM);
    printf("reader: end, sum %lld: %s\n", (long long) mm_msg_body(msg)->via.i64,
           a->ok_parts ? "ok" : "WRONG");
    finished(a);
}

/* Collected: one call when the stream is complete, parts and end in order. */
static void
on_collected(mm_msg_t *msg, void *ud)
{
    struct app *a = ud;
    size_t n = mm_msg_part_count(msg); /* the parts and the end message */
    int ok = mm_msg_status(msg) == MM_OK && n == N_PARTS + 1;
    for (size_t i = 0; ok && i < N_PARTS; i++)
        ok = is_int(mm_msg_part(msg, i), (int64_t) i + 1);
    ok = ok && is_int(mm_msg_part(msg, N_PARTS), SUM);
    printf("reader: collected %zu messages, 1..%d then %d: %s\n", n, N_PARTS, SUM,
           ok ? "ok" : "WRONG");
    a->ok_collected = ok;
    finished(a);
}

static mm_t *
instance(struct app *a, const char *service)
{
    mm_opts_t opts = MM_OPTS_INIT;
    opts.base = a->base;
    opts.flags = MM_OPT_NO_PEERS; /* no heartbeats or election: not needed here */
    return mm_new(service, &opts);
}

/* Both requests; each callback runs once the request was accepted. */
static int
ask(struct app *a, mm_t *reader)
{
    mm_body_t *b = mm_body_new();
    msgpack_pack_int(mm_body_packer(b), N_PARTS);
    mm_request_opts_t ro = MM_REQUEST_OPTS_INIT;
    ro.timeout_ms = 10000; /* restarted by each part */
    ro.flags = MM_REQ_PARTS;
    int rc = mm_request(reader, "numbers", "count", mm_body_data(b), mm_body_len(b), &ro, on_part,
                        a, NULL);
    a->pending += rc == MM_OK;
    ro.flags = 0; /* collected */
    if (rc == MM_OK)
        rc = mm_request(reader, "numbers", "count", mm_body_data(b), mm_body_len(b), &ro,
                        on_collected, a, NULL);
    a->pending += rc == MM_OK;
    mm_body_free(b);
    return rc;
}

int
main(int argc, char **argv)
{
    setvbuf(stdout, NULL, _IOLBF, 0); /* lines in the order they happen, also in a pipe */
    struct app a = {.base = event_base_new()};
    mm_t *numbers = instance(&a, "numbers"), *reader = instance(&a, "reader");
    if (a.base == NULL || numbers == NULL || reader == NULL)
        return 2;
    const char *uri = example_uri(argc, argv);
    /* The route is declared by mm_connect: requests sent after it find it. */
    int rc = mm_handle(numbers, "count", on_count, NULL, NULL, NULL);
    if (rc == MM_OK && (rc = mm_connect(numbers, uri)) == MM_OK)
        rc = mm_connect(reader, uri);
    if (rc == MM_OK)
        rc = ask(&a, reader);
    if (rc == MM_OK)
        event_base_dispatch(a.base); /* the request timeouts bound it */
    else
        fprintf(stderr, "stream: %s: %s %s\n", mm_err_name(rc), mm_last_error(numbers),
                mm_last_error(reader));
    mm_free(reader);
    mm_free(numbers);
    event_base_free(a.base);
    return rc == MM_OK && a.pending == 0 && a.ok_parts && a.ok_collected ? 0 : 1;
}
