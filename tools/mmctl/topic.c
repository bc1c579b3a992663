/*
 * Topics (persisted events with replay, RabbitMQ streams): `mmctl
 * topic-declare` and `topic-delete`; `topic-publish` appends --count records
 * and waits for the broker's confirm of each (mm_flush); `topic-read` reads
 * as a named consumer and prints each record until a signal or --count
 * records, then stops the reader so that its cursor is stored and the next
 * read of that consumer resumes right after the last record printed.
 */
#include <jansson.h>
#include <stdio.h>
#include <string.h>

#include "mmctl.h"

#define FLUSH_TIMEOUT_MS 10000 /* the confirms' wait without --timeout */

/* The exit code of a failed topic call, after its error line. */
static int
topic_failed(struct mmctl_session *s, const char *what, int rc)
{
    if (rc == MM_ENOENT)
        mmctl_err("no topic '%s': declare it first (mmctl topic-declare)", s->a->args[0]);
    else
        mmctl_err("cannot %s topic '%s': %s", what, s->a->args[0], mm_last_error(s->mm));
    return mmctl_exit_of(rc);
}

/* A retention bound for --json: null when there is none. */
static json_t *
bound_json(uint64_t v)
{
    return v > 0 ? json_integer((json_int_t) v) : json_null();
}

int
mmctl_topic_declare(struct mmctl_args *a)
{
    struct mmctl_session s = {0};
    int rc = mmctl_open(&s, a, NULL, MMCTL_CLIENT);
    if (rc != MMCTL_EXIT_OK)
        return rc;
    mm_topic_opts_t o = MM_TOPIC_OPTS_INIT;
    o.max_age_s = a->max_age_s;
    o.max_bytes = a->max_bytes;
    rc = mm_topic_declare(s.mm, a->args[0], &o);
    int code = rc == MM_OK ? MMCTL_EXIT_OK : topic_failed(&s, "declare", rc);
    mmctl_close(&s);
    if (code != MMCTL_EXIT_OK)
        return code;
    if (a->json)
        mmctl_print_json(json_pack("{s:s, s:b, s:o, s:o}", "topic", a->args[0], "declared", 1,
                                   "maxAgeSeconds", bound_json(a->max_age_s), "maxBytes",
                                   bound_json(a->max_bytes)));
    else
        printf("declared %s\n", a->args[0]);
    return MMCTL_EXIT_OK;
}

int
mmctl_topic_delete(struct mmctl_args *a)
{
    struct mmctl_session s = {0};
    int rc = mmctl_open(&s, a, NULL, MMCTL_CLIENT);
    if (rc != MMCTL_EXIT_OK)
        return rc;
    rc = mm_topic_delete(s.mm, a->args[0]);
    int code = rc == MM_OK ? MMCTL_EXIT_OK : topic_failed(&s, "delete", rc);
    mmctl_close(&s);
    if (code != MMCTL_EXIT_OK)
        return code;
    if (a->json)
        mmctl_print_json(json_pack("{s:s, s:b}", "topic", a->args[0], "deleted", 1));
    else
        printf("deleted %s\n", a->args[0]);
    return MMCTL_EXIT_OK;
}

/* ---- topic-publish ---- */

/* Publish --count records; returns how many the library took, *ret_rc its refusal. */
static uint64_t
publish_n(struct mmctl_session *s, const mm_body_t *b, struct mmctl_confirms *st, int *ret_rc)
{
    const struct mmctl_args *a = s->a;
    mm_send_opts_t so = MM_SEND_OPTS_INIT;
    so.on_sent = mmctl_on_sent;
    so.sent_ud = st;
    uint64_t n = a->count > 0 ? a->count : 1, sent = 0;
    const void *p = b != NULL ? mm_body_data(b) : NULL;
    size_t len = b != NULL ? mm_body_len(b) : 0;
    while (sent < n && *ret_rc == MM_OK) {
        *ret_rc = mm_topic_publish(s->mm, a->args[0], a->args[1], p, len, &so);
        if (*ret_rc == MM_OK)
            sent++;
    }
    return sent;
}

/* The exit code of the confirms, after an error line: a record returned
 * means the stream went away meanwhile. */
static int
publish_verdict(const struct mmctl_args *a, const struct mmctl_confirms *st, int flush)
{
    if (st->noroute > 0) {
        mmctl_err("%llu record(s) returned: topic '%s' is gone", (unsigned long long) st->noroute,
                  a->args[0]);
        return MMCTL_EXIT_NOROUTE;
    }
    return mmctl_confirm_verdict(st, flush, "record(s)");
}

static void
print_published(const struct mmctl_args *a, uint64_t sent, const struct mmctl_confirms *st)
{
    if (!a->json) {
        printf("published %llu record(s) of type %s to %s\n", (unsigned long long) sent, a->args[1],
               a->args[0]);
        fflush(stdout);
        return;
    }
    mmctl_print_json(json_pack("{s:s, s:s, s:I, s:I, s:I}", "topic", a->args[0], "type", a->args[1],
                               "sent", (json_int_t) sent, "confirmed", (json_int_t) st->confirmed,
                               "failed", (json_int_t) (st->failed + st->noroute)));
}

int
mmctl_topic_publish(struct mmctl_args *a)
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
    uint64_t sent = publish_n(&s, b, &st, &rc);
    mm_body_free(b);
    int code = rc == MM_OK ? MMCTL_EXIT_OK : topic_failed(&s, "publish to", rc);
    /* what was taken before a refusal still gets its verdict */
    int flush = mm_flush(s.mm, mmctl_timeout(a, FLUSH_TIMEOUT_MS));
    mmctl_close(&s);
    if (code == MMCTL_EXIT_OK)
        code = publish_verdict(a, &st, flush);
    if (code == MMCTL_EXIT_OK || a->json)
        print_published(a, sent, &st);
    return code;
}

/* ---- topic-read ---- */

struct read_state {
    struct mmctl_session *s;
    mm_reader_t *reader; /* NULL once stopped */
    uint64_t n;
};

/* "" as NULL, so that json_pack's "s?" makes it null. */
static const char *
or_null(const char *s)
{
    return s[0] != '\0' ? s : NULL;
}

static json_t *
record_json(mm_msg_t *msg)
{
    int64_t ts = mm_msg_timestamp(msg);
    return json_pack("{s:I, s:s, s:s?, s:s?, s:o, s:s?, s:s?, s:o, s:o}", "offset",
                     (json_int_t) mm_msg_offset(msg), "type", mm_msg_type(msg), "id",
                     or_null(mm_msg_id(msg)), "sender", or_null(mm_msg_sender(msg)), "timestamp",
                     ts > 0 ? json_integer((json_int_t) ts) : json_null(), "causationId",
                     or_null(mm_msg_causation_id(msg)), "traceparent",
                     or_null(mm_msg_traceparent(msg)), "headers",
                     mmctl_json_of(mm_msg_headers(msg)), "body", mmctl_json_of(mm_msg_body(msg)));
}

/* A record: printed, then settled when this returns (the cursor counts it). With
 * --count, the reader stops at the last one, so that no record past it is
 * settled (and skipped by the next read). */
static void
on_record(mm_msg_t *msg, void *ud)
{
    struct read_state *st = ud;
    const struct mmctl_args *a = st->s->a;
    if (a->json) {
        mmctl_print_json(record_json(msg));
    } else {
        printf("[%lld] %s ", (long long) mm_msg_offset(msg), mm_msg_type(msg));
        mmctl_print_json(mmctl_json_of(mm_msg_body(msg)));
    }
    if (a->count > 0 && ++st->n >= a->count && st->reader != NULL) {
        mm_reader_stop(st->reader); /* done once this record is settled */
        st->reader = NULL;
        mmctl_break(st->s);
    }
}

/* The reader's changes of state, and its troubles (a record skipped, records
 * removed by retention before it read them): never silent. */
static void
on_reader_event(struct mmctl_session *s, const mm_event_t *ev)
{
    const struct mmctl_args *a = s->a;
    if (ev->route == NULL || strcmp(ev->route, a->args[1]) != 0)
        return;
    if (ev->type == MM_EV_READER_ACTIVE)
        mmctl_ready("reading %s as %s", a->args[0], a->args[1]);
    else if (ev->type == MM_EV_READER_STANDBY)
        mmctl_err("standby: %s", ev->text);
    else if (ev->type == MM_EV_ERROR && a->verbose == 0) /* -v printed it already */
        mmctl_err("%s", ev->text);
}

int
mmctl_topic_read(struct mmctl_args *a)
{
    struct mmctl_session s = {.on_event = on_reader_event};
    int rc = mmctl_open(&s, a, NULL, MMCTL_CLIENT);
    if (rc != MMCTL_EXIT_OK)
        return rc;
    struct read_state st = {.s = &s};
    mm_read_opts_t o = MM_READ_OPTS_INIT;
    o.fallback = (mm_from_t){MM_FROM_FIRST, 0};
    rc = mm_topic_read(s.mm, a->args[0], a->args[1], a->from, on_record, &st, &o, &st.reader);
    if (rc != MM_OK) {
        int code = topic_failed(&s, "read", rc);
        mmctl_close(&s);
        return code;
    }
    mmctl_loop(&s);
    if (st.reader != NULL)
        rc = mm_reader_stop(st.reader); /* Ctrl-C: the cursor goes out before the close */
    if (rc != MM_OK)
        mmctl_err("cannot store the cursor of %s: %s", a->args[1], mm_strerror(rc));
    mmctl_close(&s); /* waits for the cursor's confirm */
    return mmctl_exit_of(rc);
}
