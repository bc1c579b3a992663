/*
 * Request and reply: `mmctl request` sends one request and prints its
 * answer (each part of a streamed answer on its own line), mapping the
 * outcome to the exit code; `mmctl reply` serves a route with a fixed body
 * or by echoing what it gets, until a signal or --count requests.
 */
#include <stdio.h>

#include "mmctl.h"

struct request_state {
    struct mmctl_session *s;
    int status;   /* the final answer's */
    size_t parts; /* stream parts printed */
};

/* The final answer of a failed request: one line on stderr. */
static void
report_failure(mm_msg_t *msg, const char *service, const char *route)
{
    int st = mm_msg_status(msg);
    if (st == MM_EREMOTE)
        mmctl_err("remote error: %s: %s", mm_msg_error_code(msg), mm_msg_error_text(msg));
    else if (st == MM_ENOROUTE)
        mmctl_err("no route: nobody handles %s.%s", service, route);
    else if (st == MM_ETIMEDOUT)
        mmctl_err("timed out waiting for %s.%s", service, route);
    else
        mmctl_err("request failed: %s (%s)", mm_strerror(st), mm_msg_error_text(msg));
}

static void
on_answer(mm_msg_t *msg, void *ud)
{
    struct request_state *r = ud;
    struct mmctl_args *a = r->s->a;
    int st = mm_msg_status(msg);
    const msgpack_object *body = mm_msg_body(msg);
    /* the end of a stream without a body of its own adds nothing to the parts */
    bool empty_end = r->parts > 0 && body->type == MSGPACK_OBJECT_STR && body->via.str.size == 0;
    if (st != MM_OK)
        report_failure(msg, a->args[0], a->args[1]);
    else if (!(mm_msg_is_final(msg) && empty_end))
        mmctl_print_msg(a, msg, 0);
    if (!mm_msg_is_final(msg)) {
        r->parts++;
        return;
    }
    r->status = st;
    mmctl_break(r->s);
}

int
mmctl_request(struct mmctl_args *a)
{
    mm_body_t *b = NULL;
    int rc = mmctl_body(a, a->nargs > 2 ? a->args[2] : NULL, &b);
    struct mmctl_session s = {0};
    if (rc != MMCTL_EXIT_OK || (rc = mmctl_open(&s, a, NULL, MMCTL_CLIENT)) != MMCTL_EXIT_OK) {
        mm_body_free(b);
        return rc;
    }
    struct request_state r = {.s = &s, .status = MM_ECANCELED};
    mm_request_opts_t ro = MM_REQUEST_OPTS_INIT;
    ro.flags = MM_REQ_PARTS;
    /* 0 means "the default" to the library: --timeout 0 is the shortest wait instead */
    ro.timeout_ms = a->timeout_ms > 0 ? a->timeout_ms : a->timeout_ms == 0 ? 1 : 0;
    rc = mm_request(s.mm, a->args[0], a->args[1], b ? mm_body_data(b) : NULL,
                    b ? mm_body_len(b) : 0, &ro, on_answer, &r, NULL);
    mm_body_free(b);
    if (rc != MM_OK) {
        mmctl_err("cannot send the request: %s", mm_last_error(s.mm));
        mmctl_close(&s);
        return mmctl_exit_of(rc);
    }
    mmctl_loop(&s);
    mmctl_close(&s); /* an interrupted request is canceled by the close */
    if (s.interrupted && r.status == MM_ECANCELED)
        return MMCTL_EXIT_FAIL;
    return mmctl_exit_of(r.status);
}

struct reply_state {
    struct mmctl_session *s;
    mm_body_t *body; /* the fixed answer, or NULL */
    uint64_t served;
    int failed; /* a reply the library refused */
};

static void
on_request(mm_msg_t *msg, void *ud)
{
    struct reply_state *r = ud;
    struct mmctl_args *a = r->s->a;
    size_t len = 0;
    const void *p = NULL;
    if (a->echo)
        p = mm_msg_body_raw(msg, &len);
    else if (r->body != NULL)
        p = mm_body_data(r->body), len = mm_body_len(r->body);
    int rc = mm_msg_kind_of(msg) == MM_MSG_TASK ? mm_msg_ack(msg) : mm_msg_reply(msg, p, len);
    if (rc != MM_OK) {
        mmctl_err("cannot reply: %s", mm_last_error(r->s->mm));
        r->failed++;
    }
    mmctl_print_msg(a, msg, ++r->served);
    if (a->count > 0 && r->served >= a->count)
        mmctl_break(r->s);
}

int
mmctl_reply(struct mmctl_args *a)
{
    struct reply_state r = {0};
    int rc = mmctl_body(a, a->nargs > 2 ? a->args[2] : NULL, &r.body);
    struct mmctl_session s = {0};
    if (rc != MMCTL_EXIT_OK ||
        (rc = mmctl_open(&s, a, a->args[0], MMCTL_SERVER)) != MMCTL_EXIT_OK) {
        mm_body_free(r.body);
        return rc;
    }
    r.s = &s;
    rc = mm_handle(s.mm, a->args[1], on_request, &r, NULL, NULL);
    if (rc != MM_OK) {
        mmctl_err("cannot serve %s.%s: %s", a->args[0], a->args[1], mm_last_error(s.mm));
    } else {
        mmctl_ready("serving %s.%s", a->args[0], a->args[1]);
        mmctl_loop(&s);
    }
    mmctl_close(&s);
    mm_body_free(r.body);
    if (rc != MM_OK)
        return mmctl_exit_of(rc);
    return r.failed > 0 ? MMCTL_EXIT_FAIL : MMCTL_EXIT_OK;
}
