/*
 * rpc_client: calls the "calc" service of rpc_server.
 *
 *   rpc_client [URI] [N]
 *
 * URI as for rpc_server. Sends N (default 3) "add" requests and checks
 * each sum, then shows the two ways a request can fail:
 *   - an error answer: an "add" with a bad body, which the server rejects
 *     (mm_msg_reject): we get MM_EREMOTE with the server's code and text;
 *   - a timeout: a "slow" request with a 200 ms timeout: we get
 *     MM_ETIMEDOUT, exactly once, whatever the server does later.
 * So N + 2 requests in all: run the server with that N (its default, 5,
 * matches ours). Exits 0 when every answer was the expected one.
 *
 * This client runs the instance's own loop (mm_run), unlike the server,
 * which runs its own event_base.
 */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <micromsg.h>

#include "example.h"

/* One request and what we expect of its answer. */
struct call {
    struct client *c;
    int64_t a, b; /* the numbers sent, for "add" */
    int expect;   /* the mm_msg_status() we expect */
};

struct client {
    mm_t *mm;
    long n;             /* good "add" requests */
    struct call *calls; /* n + 2 */
    long pending;       /* answers still to come */
    int failed;
};

static void
fail(struct client *c, const char *what, const char *detail)
{
    fprintf(stderr, "client: FAILED: %s%s\n", what, detail);
    c->failed = 1;
}

/* Check an answer against what its call expects. */
static void
check_answer(struct call *call, mm_msg_t *msg)
{
    struct client *c = call->c;
    int status = mm_msg_status(msg);
    if (status != call->expect) {
        fail(c, "unexpected status ", mm_err_name(status));
        return;
    }
    if (status == MM_EREMOTE) { /* the server's mm_msg_reject(code, text) */
        printf("client: error answer: %s: %s\n", mm_msg_error_code(msg), mm_msg_error_text(msg));
        if (strcmp(mm_msg_error_code(msg), "badArguments") != 0)
            fail(c, "wrong error code ", mm_msg_error_code(msg));
    } else if (status == MM_ETIMEDOUT) {
        printf("client: slow request: %s (%s)\n", mm_msg_error_code(msg), mm_strerror(status));
    } else {
        const msgpack_object *o = mm_msg_body(msg);
        int ok = o->type == MSGPACK_OBJECT_POSITIVE_INTEGER && o->via.i64 == call->a + call->b;
        printf("client: %lld + %lld = %lld\n", (long long) call->a, (long long) call->b,
               (long long) o->via.i64);
        if (!ok)
            fail(c, "wrong sum", "");
    }
}

/* Every request gets exactly one final callback: the answer or the failure. */
static void
on_answer(mm_msg_t *msg, void *ud)
{
    struct call *call = ud;
    check_answer(call, msg);
    if (--call->c->pending == 0)
        mm_stop(call->c->mm); /* mm_run() returns */
}

/* Send one request; the callback will run unless this returns an error. */
static void
send_call(struct client *c, struct call *call, const char *route, const mm_body_t *body,
          int64_t timeout_ms)
{
    mm_request_opts_t ro = MM_REQUEST_OPTS_INIT;
    ro.timeout_ms = timeout_ms; /* 0: the instance's default (120 s) */
    call->c = c;
    int rc = mm_request(c->mm, "calc", route, mm_body_data(body), mm_body_len(body), &ro, on_answer,
                        call, NULL);
    if (rc == MM_OK)
        c->pending++;
    else
        fail(c, "mm_request: ", mm_last_error(c->mm));
}

/* The server is there: send N sums, one bad "add" and one "slow". */
static void
send_all(struct client *c)
{
    mm_body_t *body = mm_body_new();
    for (long i = 0; i < c->n; i++) {
        struct call *call = &c->calls[i];
        call->a = i + 1;
        call->b = 10 * (i + 1);
        call->expect = MM_OK;
        mm_body_reset(body);
        msgpack_packer *pk = mm_body_packer(body);
        msgpack_pack_array(pk, 2);
        msgpack_pack_int64(pk, call->a);
        msgpack_pack_int64(pk, call->b);
        send_call(c, call, "add", body, 0);
    }
    mm_body_reset(body);
    mm_body_str(body, "one plus two"); /* not [a, b]: the server answers an error */
    c->calls[c->n].expect = MM_EREMOTE;
    send_call(c, &c->calls[c->n], "add", body, 0);
    mm_body_reset(body); /* no body */
    c->calls[c->n + 1].expect = MM_ETIMEDOUT;
    send_call(c, &c->calls[c->n + 1], "slow", body, 200); /* the server takes 1 s */
    mm_body_free(body);
    if (c->pending == 0)
        mm_stop(c->mm);
}

/* mm_wait_service's answer: calc has a ready instance (its routes exist), or not. */
static void
on_service(mm_t *mm, const mm_status_t *st, void *ud)
{
    struct client *c = ud;
    if (st->code != MM_OK) {
        fail(c, "service calc not ready: ", mm_err_name(st->code));
        mm_stop(mm);
        return;
    }
    printf("client: calc is ready (%zu instance(s))\n", st->count);
    send_all(c);
}

static int
run(struct client *c, const char *uri)
{
    mm_opts_t opts = MM_OPTS_INIT;
    opts.flags = MM_OPT_NO_PEERS; /* a short-lived client: no heartbeats, no election */
    c->mm = mm_new("calc-client", &opts);
    if (c->mm == NULL)
        return MM_ENOMEM;
    int rc = mm_last_code(c->mm);
    if (rc == MM_OK)
        rc = mm_connect(c->mm, uri);
    if (rc == MM_OK) /* bounded wait for the server, instead of a start-up delay */
        rc = mm_wait_service(c->mm, "calc", 0, 10000, on_service, c);
    if (rc == MM_OK)
        rc = mm_run(c->mm); /* until mm_stop() in a callback */
    if (rc != MM_OK)
        fail(c, "", mm_last_error(c->mm));
    mm_free(c->mm);
    return rc;
}

int
main(int argc, char **argv)
{
    setvbuf(stdout, NULL, _IOLBF, 0); /* lines in the order they happen, also in a pipe */
    struct client c = {.n = argc > 2 ? atol(argv[2]) : 3};
    if (c.n < 0 || (c.calls = calloc((size_t) c.n + 2, sizeof *c.calls)) == NULL) {
        fprintf(stderr, "usage: rpc_client [URI] [N >= 0]\n");
        return 2;
    }
    int rc = run(&c, example_uri(argc, argv));
    free(c.calls);
    if (rc != MM_OK || c.failed || c.pending != 0)
        return 1;
    printf("client: all %ld answers as expected\n", c.n + 2);
    return 0;
}
