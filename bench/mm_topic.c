/*
 * micromsg playing the topic roles (bench/raw_topic.c says what each does),
 * written the way a user would: mm_topic_declare, mm_topic_publish with an
 * on_sent verdict keeping `window` records unconfirmed, and a reader from
 * the first record, which also takes its lock and stores its cursor as
 * every reader does (that cost is part of the figure).
 */
#include <stdio.h>
#include <string.h>

#include "micromsg.h"
#include "roles.h"

static mm_t *
connected(const bench_args_t *a, const char *suffix)
{
    char service[160];
    snprintf(service, sizeof service, "%s-%s", a->name, suffix);
    mm_t *mm = mm_new(service, NULL);
    if (mm == NULL)
        bench_die("mm_new %s failed", service);
    if (mm_connect(mm, a->uri) != MM_OK)
        bench_die("mm_connect: %s", mm_last_error(mm));
    return mm;
}

static void
check(mm_t *mm, int rc, const char *what)
{
    if (rc != MM_OK)
        bench_die("%s: %s: %s", what, mm_err_name(rc), mm_last_error(mm));
}

/* ---- appending: at most `window` unconfirmed, the next on each verdict ---- */

struct app {
    mm_t *mm;
    const bench_args_t *a;
    long sent, confirmed, total;
    mm_send_opts_t so;
};

static void append_one(struct app *p);

static void
on_sent(mm_t *mm, int status, void *ud)
{
    struct app *p = ud;
    check(mm, status, "record not confirmed");
    if (++p->confirmed == p->total)
        mm_stop(mm);
    else if (p->sent < p->total)
        append_one(p);
}

static void
append_one(struct app *p)
{
    uint8_t body[BENCH_BODY];
    bench_body_pack(body, (uint64_t) p->sent++, bench_now_ns());
    check(p->mm, mm_topic_publish(p->mm, p->a->name, "bench", body, sizeof body, &p->so),
          "mm_topic_publish");
}

static void
append_all(mm_t *mm, const bench_args_t *a)
{
    struct app p = {.mm = mm, .a = a, .total = a->warmup + a->n};
    p.so = (mm_send_opts_t) MM_SEND_OPTS_INIT;
    p.so.on_sent = on_sent;
    p.so.sent_ud = &p;
    for (int i = 0; i < a->window && p.sent < p.total; i++)
        append_one(&p);
    check(mm, mm_run(mm), "mm_run");
}

int
mmb_topic_prep(const bench_args_t *a)
{
    bench_span_t span;
    bench_span_start(&span);
    mm_t *mm = connected(a, "prep");
    check(mm, mm_topic_declare(mm, a->name, NULL), "mm_topic_declare");
    mm_close(mm);
    mm_free(mm);
    bench_ready();
    bench_span_report(&span, 1, "");
    return 0;
}

int
mmb_topic_pub(const bench_args_t *a)
{
    mm_t *mm = connected(a, "publisher");
    bench_span_t span;
    bench_span_start(&span);
    append_all(mm, a);
    bench_span_report(&span, a->warmup + a->n, "");
    check(mm, mm_topic_delete(mm, a->name), "mm_topic_delete");
    mm_close(mm);
    mm_free(mm);
    return 0;
}

int
mmb_topic_fill(const bench_args_t *a)
{
    mm_t *mm = connected(a, "filler");
    check(mm, mm_topic_declare(mm, a->name, NULL), "mm_topic_declare");
    bench_span_t span;
    bench_span_start(&span);
    append_all(mm, a);
    mm_close(mm);
    mm_free(mm);
    bench_ready();
    bench_span_report(&span, a->warmup + a->n, "");
    return 0;
}

/* ---- replaying from the first record ---- */

struct replay {
    mm_t *mm;
    const bench_args_t *a;
    long seen;
    bench_span_t span;
};

static void
on_record(mm_msg_t *msg, void *ud)
{
    struct replay *r = ud;
    size_t len;
    const void *p = mm_msg_body_raw(msg, &len);
    uint64_t seq, t;
    if (p == NULL || bench_body_unpack(p, len, &seq, &t) != 0)
        bench_die("topic-read: a record that is not ours");
    if (r->seen++ == r->a->warmup)
        bench_span_start(&r->span);
    if (r->seen == r->a->warmup + r->a->n)
        mm_stop(r->mm);
}

int
mmb_topic_read(const bench_args_t *a)
{
    struct replay r = {.mm = connected(a, "reader"), .a = a};
    mm_read_opts_t ro = MM_READ_OPTS_INIT;
    ro.prefetch = (uint16_t) a->prefetch;
    mm_from_t first = {MM_FROM_FIRST, 0};
    check(r.mm, mm_topic_read(r.mm, a->name, "bench", first, on_record, &r, &ro, NULL),
          "mm_topic_read");
    check(r.mm, mm_run(r.mm), "mm_run");
    bench_span_report(&r.span, a->n, "");
    check(r.mm, mm_topic_delete(r.mm, a->name), "mm_topic_delete");
    mm_free(r.mm);
    return 0;
}
