/*
 * micromsg playing the benchmark's roles (roles.h), written the way a user
 * would: default instance options, msgpack bodies, handlers that settle.
 */
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "micromsg.h"
#include "roles.h"

static mm_t *
start(const bench_args_t *a, const char *service)
{
    mm_opts_t o = MM_OPTS_INIT;
    o.flags = a->qos ? MM_OPT_QOS : 0;
    mm_t *mm = mm_new(service, &o);
    if (mm == NULL)
        bench_die("mm_new %s failed", service);
    return mm;
}

static void
check(mm_t *mm, int rc, const char *what)
{
    if (rc != MM_OK)
        bench_die("%s: %s: %s", what, mm_err_name(rc), mm_last_error(mm));
}

static uint64_t
sent_at(mm_msg_t *msg)
{
    size_t len;
    const void *p = mm_msg_body_raw(msg, &len);
    uint64_t seq, t;
    if (p == NULL || bench_body_unpack(p, len, &seq, &t) != 0)
        bench_die("a message with a body that is not ours");
    return t;
}

/* ---- a consumer that counts: rpc-server, ev-listen, task-work ---- */

struct counter {
    mm_t *mm;
    const bench_args_t *a;
    long seen;
    bench_span_t span;
    int end_to_end; /* rate from the send time of message `warmup` */
    int stop_at_end;
};

static void
count(struct counter *c, mm_msg_t *msg)
{
    long i = c->seen++ - c->a->warmup;
    if (i == 0) {
        bench_span_start(&c->span);
        if (c->end_to_end)
            c->span.t0_ns = sent_at(msg);
    }
    if (i + 1 == c->a->n) {
        bench_span_report(&c->span, c->a->n, "");
        if (c->stop_at_end)
            mm_stop(c->mm);
    }
}

static void
on_echo(mm_msg_t *msg, void *ud)
{
    size_t len;
    const void *body = mm_msg_body_raw(msg, &len);
    if (mm_msg_reply(msg, body, len) != MM_OK)
        bench_die("mm_msg_reply: %s", mm_last_error(((struct counter *) ud)->mm));
    count(ud, msg);
}

static void
on_arrival(mm_msg_t *msg, void *ud)
{
    struct counter *c = ud;
    if (mm_msg_kind_of(msg) == MM_MSG_TASK && mm_msg_ack(msg) != MM_OK)
        bench_die("mm_msg_ack: %s", mm_last_error(c->mm));
    count(c, msg);
}

static mm_t *stopping; /* SIGTERM ends a server's mm_run */

static void
on_term(int sig)
{
    (void) sig;
    if (stopping != NULL)
        mm_stop(stopping);
}

static int
consume(const bench_args_t *a, int kind)
{
    struct counter c = {.a = a, .end_to_end = kind != 'r', .stop_at_end = kind != 'r'};
    char service[160];
    snprintf(service, sizeof service, "%s%s", a->name, kind == 'e' ? "-listener" : "");
    c.mm = start(a, service);
    mm_route_opts_t ro = MM_ROUTE_OPTS_INIT;
    ro.prefetch = (uint16_t) a->prefetch;
    if (kind == 'r')
        check(c.mm, mm_handle(c.mm, "echo", on_echo, &c, &ro, NULL), "mm_handle");
    else if (kind == 't')
        check(c.mm, mm_handle(c.mm, "work", on_arrival, &c, &ro, NULL), "mm_handle");
    else
        check(c.mm, mm_listen(c.mm, a->name, "x", on_arrival, &c, &ro, NULL), "mm_listen");
    check(c.mm, mm_connect(c.mm, a->uri), "mm_connect");
    stopping = c.mm;
    signal(SIGTERM, on_term);
    bench_ready();
    int rc = mm_run(c.mm);
    mm_free(c.mm);
    return rc == MM_OK ? 0 : 1;
}

int
mmb_rpc_server(const bench_args_t *a)
{
    return consume(a, 'r');
}

int
mmb_ev_listen(const bench_args_t *a)
{
    return consume(a, 'e');
}

int
mmb_task_work(const bench_args_t *a)
{
    return consume(a, 't');
}

/* ---- rpc-client ---- */

struct rpc {
    mm_t *mm;
    const bench_args_t *a;
    long sent, done;
    bench_span_t span;
    bench_hist_t lat;
};

static void send_request(struct rpc *r);

static void
on_reply(mm_msg_t *msg, void *ud)
{
    struct rpc *r = ud;
    if (mm_msg_status(msg) != MM_OK)
        bench_die("request failed: %s", mm_msg_error_text(msg));
    uint64_t now = bench_now_ns();
    long i = r->done++ - r->a->warmup;
    if (i == 0)
        bench_span_start(&r->span);
    if (i >= 0)
        bench_hist_add(&r->lat, now - sent_at(msg));
    if (r->sent < r->a->warmup + r->a->n)
        send_request(r);
    else if (i + 1 == r->a->n)
        mm_stop(r->mm);
}

static void
send_request(struct rpc *r)
{
    uint8_t body[BENCH_BODY];
    bench_body_pack(body, (uint64_t) r->sent++, bench_now_ns());
    check(r->mm, mm_request(r->mm, r->a->name, "echo", body, sizeof body, NULL, on_reply, r, NULL),
          "mm_request");
}

int
mmb_rpc_client(const bench_args_t *a)
{
    char service[160];
    snprintf(service, sizeof service, "%s-client", a->name);
    static struct rpc r; /* the histogram: not on the stack */
    r = (struct rpc){.mm = start(a, service), .a = a};
    check(r.mm, mm_connect(r.mm, a->uri), "mm_connect");
    for (int i = 0; i < a->window && r.sent < a->warmup + a->n; i++)
        send_request(&r);
    check(r.mm, mm_run(r.mm), "mm_run");
    char extra[64];
    snprintf(extra, sizeof extra, "p50_us=%.1f p99_us=%.1f",
             (double) bench_hist_percentile(&r.lat, 50) / 1e3,
             (double) bench_hist_percentile(&r.lat, 99) / 1e3);
    bench_span_report(&r.span, a->n, extra);
    mm_free(r.mm);
    return 0;
}

/* ---- ev-emit ---- */

int
mmb_ev_emit(const bench_args_t *a)
{
    char service[160];
    snprintf(service, sizeof service, "%s-emitter", a->name);
    mm_t *mm = start(a, service);
    check(mm, mm_connect(mm, a->uri), "mm_connect");
    bench_span_t span;
    bench_span_start(&span);
    long total = a->warmup + a->n;
    for (long i = 0; i < total; i++) {
        uint8_t body[BENCH_BODY];
        bench_body_pack(body, (uint64_t) i, bench_now_ns());
        check(mm, mm_emit(mm, a->name, "x", body, sizeof body, NULL), "mm_emit");
    }
    check(mm, mm_flush(mm, 60000), "mm_flush");
    bench_span_report(&span, total, "");
    mm_close(mm);
    mm_free(mm);
    return 0;
}

/* ---- task-pub: at most `window` unconfirmed, the next sent on each verdict ---- */

struct pub {
    mm_t *mm;
    const bench_args_t *a;
    long sent, confirmed, total;
    mm_send_opts_t so;
};

static void send_task(struct pub *p);

static void
on_sent(mm_t *mm, int status, void *ud)
{
    struct pub *p = ud;
    check(mm, status, "task not confirmed");
    if (++p->confirmed == p->total)
        mm_stop(mm);
    else if (p->sent < p->total)
        send_task(p);
}

static void
send_task(struct pub *p)
{
    uint8_t body[BENCH_BODY];
    bench_body_pack(body, (uint64_t) p->sent++, bench_now_ns());
    check(p->mm, mm_task(p->mm, p->a->name, "work", body, sizeof body, &p->so), "mm_task");
}

int
mmb_task_pub(const bench_args_t *a)
{
    char service[160];
    snprintf(service, sizeof service, "%s-publisher", a->name);
    struct pub p = {.mm = start(a, service), .a = a, .total = a->warmup + a->n};
    p.so = (mm_send_opts_t) MM_SEND_OPTS_INIT;
    p.so.flags = a->persistent ? 0 : MM_SEND_TRANSIENT;
    p.so.on_sent = on_sent;
    p.so.sent_ud = &p;
    check(p.mm, mm_connect(p.mm, a->uri), "mm_connect");
    bench_span_t span;
    bench_span_start(&span);
    for (int i = 0; i < a->window && p.sent < p.total; i++)
        send_task(&p);
    check(p.mm, mm_run(p.mm), "mm_run");
    bench_span_report(&span, p.total, "");
    mm_free(p.mm);
    return 0;
}
