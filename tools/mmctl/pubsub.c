/*
 * Events and tasks: `mmctl emit` and `mmctl task` send --count messages and
 * wait for the broker's confirm of each (mm_flush), so that a task nobody
 * handles is reported (exit 4); `mmctl listen` prints the events of a route
 * and `mmctl work` takes tasks, prints and acks them, until a signal or
 * --count messages.
 */
#include <jansson.h>
#include <stdio.h>

#include "mmctl.h"

#define FLUSH_TIMEOUT_MS 10000 /* the confirms' wait without --timeout */

void
mmctl_on_sent(mm_t *mm, int status, void *ud)
{
    (void) mm;
    struct mmctl_confirms *st = ud;
    if (status == MM_OK) {
        st->confirmed++;
        return;
    }
    if (status == MM_ENOROUTE)
        st->noroute++;
    else
        st->failed++;
    st->last_error = status;
}

/* The summary of a send: a line, or a JSON object. */
static void
print_sent(const struct mmctl_args *a, bool task, uint64_t sent, const struct mmctl_confirms *st)
{
    if (!a->json) {
        printf("%s %llu %s to %s.%s\n", task ? "queued" : "emitted", (unsigned long long) sent,
               task ? "task(s)" : "event(s)", a->args[0], a->args[1]);
        fflush(stdout);
        return;
    }
    json_t *j = json_object();
    json_object_set_new(j, task ? "service" : "target", json_string(a->args[0]));
    json_object_set_new(j, "route", json_string(a->args[1]));
    json_object_set_new(j, "sent", json_integer((json_int_t) sent));
    json_object_set_new(j, "confirmed", json_integer((json_int_t) st->confirmed));
    json_object_set_new(j, "unroutable", json_integer((json_int_t) st->noroute));
    json_object_set_new(j, "failed", json_integer((json_int_t) st->failed));
    mmctl_print_json(j);
}

/* Send --count messages; returns how many the library took, *ret_rc its refusal. */
static uint64_t
send_n(struct mmctl_session *s, bool task, const mm_body_t *b, struct mmctl_confirms *st,
       int *ret_rc)
{
    struct mmctl_args *a = s->a;
    mm_send_opts_t so = MM_SEND_OPTS_INIT;
    so.on_sent = mmctl_on_sent;
    so.sent_ud = st;
    uint64_t n = a->count > 0 ? a->count : 1, i;
    const void *p = b ? mm_body_data(b) : NULL;
    size_t len = b ? mm_body_len(b) : 0;
    for (i = 0; i < n && *ret_rc == MM_OK; i++) {
        *ret_rc = task ? mm_task(s->mm, a->args[0], a->args[1], p, len, &so)
                       : mm_emit(s->mm, a->args[0], a->args[1], p, len, &so);
    }
    return *ret_rc == MM_OK ? i : i - 1;
}

int
mmctl_confirm_verdict(const struct mmctl_confirms *st, int flush, const char *what)
{
    if (st->failed > 0) {
        mmctl_err("%llu %s not confirmed: %s", (unsigned long long) st->failed, what,
                  mm_strerror(st->last_error));
        return mmctl_exit_of(st->last_error);
    }
    if (flush != MM_OK) {
        mmctl_err("confirms not all in: %s", mm_strerror(flush));
        return mmctl_exit_of(flush);
    }
    return MMCTL_EXIT_OK;
}

/* The exit code of a send, after its error line. */
static int
send_verdict(const struct mmctl_args *a, int rc, int flush, const struct mmctl_confirms *st)
{
    if (rc != MM_OK)
        return mmctl_exit_of(rc);
    if (st->noroute > 0) {
        mmctl_err("unroutable: no queue for %s.%s (%llu returned)", a->args[0], a->args[1],
                  (unsigned long long) st->noroute);
        return MMCTL_EXIT_NOROUTE;
    }
    return mmctl_confirm_verdict(st, flush, "message(s)");
}

static int
send_verb(struct mmctl_args *a, bool task)
{
    mm_body_t *b = NULL;
    int rc = mmctl_body(a, a->nargs > 2 ? a->args[2] : NULL, &b);
    struct mmctl_session s = {0};
    if (rc != MMCTL_EXIT_OK || (rc = mmctl_open(&s, a, NULL, MMCTL_CLIENT)) != MMCTL_EXIT_OK) {
        mm_body_free(b);
        return rc;
    }
    struct mmctl_confirms st = {0};
    rc = MM_OK;
    uint64_t sent = send_n(&s, task, b, &st, &rc);
    mm_body_free(b);
    if (rc != MM_OK)
        mmctl_err("cannot send: %s", mm_last_error(s.mm));
    int flush = mm_flush(s.mm, mmctl_timeout(a, FLUSH_TIMEOUT_MS));
    mmctl_close(&s);
    int code = send_verdict(a, rc, flush, &st);
    if (code == MMCTL_EXIT_OK || a->json)
        print_sent(a, task, sent, &st);
    return code;
}

int
mmctl_emit(struct mmctl_args *a)
{
    return send_verb(a, false);
}

int
mmctl_task(struct mmctl_args *a)
{
    return send_verb(a, true);
}

struct take_state {
    struct mmctl_session *s;
    uint64_t n;
};

/* A received event or task: printed, a task acked (a request gets an empty reply). */
static void
on_message(mm_msg_t *msg, void *ud)
{
    struct take_state *t = ud;
    mm_msg_kind k = mm_msg_kind_of(msg);
    mmctl_print_msg(t->s->a, msg, ++t->n);
    int rc = k == MM_MSG_TASK      ? mm_msg_ack(msg)
             : k == MM_MSG_REQUEST ? mm_msg_reply(msg, NULL, 0)
                                   : MM_OK;
    if (rc != MM_OK)
        mmctl_err("cannot settle: %s", mm_last_error(t->s->mm));
    if (t->s->a->count > 0 && t->n >= t->s->a->count)
        mmctl_break(t->s);
}

static int
take_verb(struct mmctl_args *a, bool work)
{
    struct mmctl_session s = {0};
    int rc = mmctl_open(&s, a, work ? a->args[0] : NULL, work ? MMCTL_SERVER : MMCTL_CLIENT);
    if (rc != MMCTL_EXIT_OK)
        return rc;
    struct take_state t = {.s = &s};
    rc = work ? mm_handle(s.mm, a->args[1], on_message, &t, NULL, NULL)
              : mm_listen(s.mm, a->args[0], a->args[1], on_message, &t, NULL, NULL);
    if (rc != MM_OK) {
        mmctl_err("cannot %s %s.%s: %s", work ? "work on" : "listen to", a->args[0], a->args[1],
                  mm_last_error(s.mm));
    } else {
        mmctl_ready("%s %s.%s", work ? "working on" : "listening to", a->args[0], a->args[1]);
        mmctl_loop(&s);
    }
    mmctl_close(&s);
    return mmctl_exit_of(rc);
}

int
mmctl_listen(struct mmctl_args *a)
{
    return take_verb(a, false);
}

int
mmctl_work(struct mmctl_args *a)
{
    return take_verb(a, true);
}
