/* Integration: topics, RabbitMQ streams with replay (include/micromsg.h,
 * "Topics: persisted events with replay"). Replay: 10,000 confirmed records
 * read from the first (all, in order, with their types and metadata), from
 * an offset (exactly there), from a timestamp (what was published after a
 * point, nothing from before the second before it). Crash: a reader process
 * killed with SIGKILL mid-way and restarted resumes from its cursor with no
 * gap, re-reading at most the batch settled since the last cursor write
 * (counted). Active/standby: two reader processes of one consumer name, one
 * active; the active one killed, the standby takes over within 2 s from the
 * cursor; two instances in this process, the active one's connection closed
 * by the broker, then a clean stop handing over without re-reading. Bad
 * input: an unknown topic (read, publish, delete; a reader registered before
 * connecting waits and starts once the topic is declared), an offset past the
 * end, a corrupted cursor and another topic's cursor, an undecodable record,
 * the type filter, the retention arguments as the broker shows them, and
 * settle calls a record refuses. Each test prints what it measured. */
#include <check.h>
#include <errno.h>
#include <event2/event.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#include "micromsg.h"
#include "mmt.h"
#include "mmt_fx.h"
#include "mmt_peer.h"

#define WAIT_MS 30000
#define FAILOVER_MS 2000 /* the bound: a standby reads within 2 s of the active one's death */
#define MAX_EVENTS 64
#define MAX_NAMES 16
#define MAX_KIDS 3

/* ---- what an instance's events said ---- */

struct evrec {
    int n;
    int type[MAX_EVENTS], code[MAX_EVENTS];
    char text[MAX_EVENTS][320], route[MAX_EVENTS][96];
    bool active, standby, error; /* flags for MMT_WAIT; tests reset them */
    int actives, standbys, errors, reconnects;
    uint64_t active_ms, disconnected_ms; /* the last of each */
};

static void
on_event(mm_t *mm, const mm_event_t *ev, void *ud)
{
    struct evrec *e = ud;
    (void) mm;
    if (ev->type == MM_EV_READER_ACTIVE) {
        e->active = true;
        e->actives++;
        e->active_ms = mmt_now_ms();
    } else if (ev->type == MM_EV_READER_STANDBY) {
        e->standby = true;
        e->standbys++;
    } else if (ev->type == MM_EV_ERROR) {
        e->error = true;
        e->errors++;
    } else if (ev->type == MM_EV_RECONNECTED) {
        e->reconnects++;
    } else if (ev->type == MM_EV_DISCONNECTED) {
        e->disconnected_ms = mmt_now_ms();
    }
    if (e->n == MAX_EVENTS)
        return;
    e->type[e->n] = ev->type;
    e->code[e->n] = ev->code;
    snprintf(e->text[e->n], sizeof e->text[0], "%s", ev->text);
    snprintf(e->route[e->n], sizeof e->route[0], "%s", ev->route ? ev->route : "");
    e->n++;
}

/* The first event of `type` whose text holds `part` (NULL: any); its index or -1. */
static int
find_event(const struct evrec *e, int type, const char *part)
{
    for (int i = 0; i < e->n; i++)
        if (e->type[i] == type && (part == NULL || strstr(e->text[i], part) != NULL))
            return i;
    return -1;
}

static void
dump_events(const struct evrec *e)
{
    for (int i = 0; i < e->n; i++)
        printf("  event %d code %s route '%s': %s\n", e->type[i], mm_err_name(e->code[i]),
               e->route[i], e->text[i]);
}

/* ---- the fixture ---- */

struct fx {
    struct event_base *base;
    mm_t *mm, *mm2; /* publisher and reader; a second reader (own connection) */
    struct evrec ev, ev2;
    char service[64], topic[64];
    char queues[MAX_NAMES][256]; /* durable queues of ours to delete at the end */
    int nqueues;
    char files[MAX_NAMES][128];
    int nfiles;
    int sent_ok, sent_failed; /* publish verdicts */
    bool never;
};

static struct fx F;

static mm_t *
instance(struct evrec *e)
{
    mm_opts_t o = MM_OPTS_INIT;
    o.base = F.base;
    o.on_event = on_event;
    o.event_ud = e;
    o.flags = MM_OPT_NO_PEERS;
    mm_t *mm = mm_new(F.service, &o);
    ck_assert_ptr_nonnull(mm);
    return mm;
}

static void
setup(void)
{
    memset(&F, 0, sizeof F);
    F.base = mmt_base_new();
    mmt_unique("topics", F.service, sizeof F.service);
    mmt_unique("topic", F.topic, sizeof F.topic);
    F.mm = instance(&F.ev);
}

static void
delete_queues(void)
{
    if (F.nqueues == 0)
        return;
    struct mmt_peer p;
    mmt_peer_open(&p);
    for (int i = 0; i < F.nqueues; i++) {
        uint16_t ch = mmt_peer_channel(&p);
        amqp_queue_delete(p.c, ch, amqp_cstring_bytes(F.queues[i]), 0, 0);
        mmt_peer_ok(&p, "queue.delete");
    }
    mmt_peer_close(&p);
}

static void
teardown(void)
{
    if (F.mm != NULL && mm_is_connected(F.mm))
        mm_topic_delete(F.mm, F.topic); /* MM_ENOENT when the test deleted it */
    mm_free(F.mm);
    mm_free(F.mm2);
    delete_queues();
    for (int i = 0; i < F.nfiles; i++)
        unlink(F.files[i]);
    mmt_base_free(F.base);
}

/* A consumer name for this test; its cursor queue is deleted at the end. */
static const char *
consumer(const char *prefix, char *buf, size_t len)
{
    mmt_unique(prefix, buf, len);
    ck_assert_int_lt(F.nqueues, MAX_NAMES);
    snprintf(F.queues[F.nqueues++], sizeof F.queues[0], "q.cursor.%s.%s", F.service, buf);
    return buf;
}

static void
declare(mm_t *mm, const mm_topic_opts_t *o)
{
    ck_assert_msg(mm_topic_declare(mm, F.topic, o) == MM_OK, "%s", mm_last_error(mm));
}

/* Run the loop for ms: an observation period, not a synchronisation. */
static void
observe(int ms)
{
    mmt_wait(F.base, &F.never, ms);
}

/* ---- publishing ---- */

static void
on_sent(mm_t *mm, int status, void *ud)
{
    (void) mm;
    (void) ud;
    if (status == MM_OK)
        F.sent_ok++;
    else
        F.sent_failed++;
}

static void
pack_int(mm_body_t *b, int64_t v)
{
    mm_body_reset(b);
    msgpack_pack_int64(mm_body_packer(b), v);
}

/* n records with bodies first..first+n-1, of `type` (NULL: "even"/"odd" by body),
 * message ids "m-<body>", causation "c-<body>"; confirmed, asserted. */
static void
publish_range(mm_t *mm, int64_t first, int n, const char *type)
{
    mm_body_t *b = mm_body_new();
    ck_assert_ptr_nonnull(b);
    int before = F.sent_ok;
    for (int64_t i = first; i < first + n; i++) {
        char id[32], cause[32];
        snprintf(id, sizeof id, "m-%lld", (long long) i);
        snprintf(cause, sizeof cause, "c-%lld", (long long) i);
        mm_send_opts_t o = MM_SEND_OPTS_INIT;
        o.on_sent = on_sent;
        o.message_id = id;
        o.causation_id = cause;
        pack_int(b, i);
        const char *t = type ? type : (i % 2 ? "odd" : "even");
        int rc = mm_topic_publish(mm, F.topic, t, mm_body_data(b), mm_body_len(b), &o);
        ck_assert_msg(rc == MM_OK, "publish %lld: %s", (long long) i, mm_last_error(mm));
    }
    mm_body_free(b);
    ck_assert_msg(mm_flush(mm, mmt_scale(WAIT_MS)) == MM_OK, "%s", mm_last_error(mm));
    ck_assert_int_eq(F.sent_failed, 0);
    ck_assert_int_eq(F.sent_ok - before, n);
}

/* ---- what a reader handled ---- */

#define MAX_READ 12000

struct reads {
    int64_t offset[MAX_READ], body[MAX_READ], ts[MAX_READ];
    char type[MAX_READ][8];
    size_t n;
    size_t want; /* done once n >= want */
    bool done;
    bool meta_bad;
    char why[256];
    int nack_rc, reply_rc; /* what a record answers to mm_msg_nack and mm_msg_reply */
    mm_reader_t *stop_me;  /* stopped by the handler of record `stop_at` */
    int64_t stop_at;
    int stop_rc;
};

static int64_t
body_int(const mm_msg_t *msg)
{
    const msgpack_object *o = mm_msg_body(msg);
    if (o->type == MSGPACK_OBJECT_POSITIVE_INTEGER)
        return (int64_t) o->via.u64;
    return o->type == MSGPACK_OBJECT_NEGATIVE_INTEGER ? o->via.i64 : -1;
}

/* The metadata every record must carry (publish_range's). */
static void
check_meta(struct reads *rd, mm_msg_t *msg, int64_t body)
{
    char id[32], cause[32], sender[200];
    snprintf(id, sizeof id, "m-%lld", (long long) body);
    snprintf(cause, sizeof cause, "c-%lld", (long long) body);
    snprintf(sender, sizeof sender, "%s@", F.service);
    int64_t age = (int64_t) time(NULL) * 1000 - mm_msg_timestamp(msg);
    if (strcmp(mm_msg_id(msg), id) != 0 || strcmp(mm_msg_causation_id(msg), cause) != 0 ||
        strncmp(mm_msg_sender(msg), sender, strlen(sender)) != 0 || age < 0 || age > 600000 ||
        mm_msg_kind_of(msg) != MM_MSG_RECORD || strcmp(mm_msg_route(msg), F.topic) != 0) {
        if (!rd->meta_bad)
            snprintf(rd->why, sizeof rd->why,
                     "offset %lld: id '%s' causation '%s' sender '%s' age %lld kind %d route '%s'",
                     (long long) mm_msg_offset(msg), mm_msg_id(msg), mm_msg_causation_id(msg),
                     mm_msg_sender(msg), (long long) age, (int) mm_msg_kind_of(msg),
                     mm_msg_route(msg));
        rd->meta_bad = true;
    }
}

static void
on_record(mm_msg_t *msg, void *ud)
{
    struct reads *rd = ud;
    if (rd->n == MAX_READ)
        return;
    size_t i = rd->n++;
    rd->offset[i] = mm_msg_offset(msg);
    rd->body[i] = body_int(msg);
    rd->ts[i] = mm_msg_timestamp(msg);
    snprintf(rd->type[i], sizeof rd->type[i], "%s", mm_msg_type(msg));
    if (rd->body[i] >= 0)
        check_meta(rd, msg, rd->body[i]);
    rd->nack_rc = mm_msg_nack(msg, 1);
    rd->reply_rc = mm_msg_reply(msg, NULL, 0);
    if (rd->stop_me != NULL && rd->offset[i] == rd->stop_at) {
        rd->stop_rc = mm_reader_stop(rd->stop_me);
        rd->stop_me = NULL;
    }
    if (rd->n >= rd->want)
        rd->done = true;
}

static mm_reader_t *
read_topic(mm_t *mm, const char *cons, mm_from_t from, struct reads *rd, const mm_read_opts_t *o)
{
    mm_reader_t *r = NULL;
    int rc = mm_topic_read(mm, F.topic, cons, from, on_record, rd, o, &r);
    ck_assert_msg(rc == MM_OK, "mm_topic_read: %s", mm_last_error(mm));
    ck_assert_ptr_nonnull(r);
    return r;
}

/* ---- polling what only shows elsewhere (a file, a reader's position) ---- */

struct poll {
    bool (*pred)(void *);
    void *ud;
    bool met;
};

static void
on_poll(evutil_socket_t fd, short what, void *arg)
{
    struct poll *p = arg;
    (void) fd;
    (void) what;
    if (p->pred(p->ud))
        p->met = true;
}

/* Run the loop until pred(ud), checked every 5 ms, or timeout_ms. */
static bool
wait_until(bool (*pred)(void *), void *ud, int timeout_ms)
{
    struct poll p = {pred, ud, pred(ud)};
    struct event *t = event_new(F.base, -1, EV_PERSIST, on_poll, &p);
    ck_assert_ptr_nonnull(t);
    struct timeval tv = {0, 5000};
    event_add(t, &tv);
    mmt_wait(F.base, &p.met, timeout_ms);
    event_free(t);
    return p.met;
}

struct position_is {
    mm_reader_t *r;
    int64_t want;
};

static bool
position_reached(void *ud)
{
    struct position_is *p = ud;
    return mm_reader_position(p->r) >= p->want;
}

/* ================================================================ replay */

START_TEST(read_from_first)
{
    enum { N = 10000 };
    mmt_connect(F.mm);
    declare(F.mm, NULL);
    uint64_t t0 = mmt_now_ms();
    publish_range(F.mm, 0, N, NULL);
    uint64_t published = mmt_now_ms() - t0;
    static struct reads rd;
    memset(&rd, 0, sizeof rd);
    rd.want = N;
    char cons[64];
    t0 = mmt_now_ms();
    mm_reader_t *r = read_topic(F.mm, consumer("first", cons, sizeof cons),
                                (mm_from_t){MM_FROM_FIRST, 0}, &rd, NULL);
    MMT_WAIT(F.base, rd.done, mmt_scale(WAIT_MS));
    uint64_t read = mmt_now_ms() - t0;
    ck_assert_uint_eq(rd.n, N);
    for (size_t i = 0; i < N; i++) {
        ck_assert_int_eq(rd.offset[i], (int64_t) i); /* a fresh stream counts from 0, in order */
        ck_assert_int_eq(rd.body[i], (int64_t) i);
        ck_assert_str_eq(rd.type[i], i % 2 ? "odd" : "even");
    }
    ck_assert_msg(!rd.meta_bad, "%s", rd.why);
    ck_assert_int_eq(rd.nack_rc, MM_ESTATE); /* a record is settled when its handler returns */
    ck_assert_int_eq(rd.reply_rc, MM_ESTATE);
    struct position_is p = {r, N - 1};
    ck_assert(wait_until(position_reached, &p, mmt_scale(WAIT_MS)));
    ck_assert_int_eq(mm_reader_active(r), 1);
    ck_assert_int_eq(F.ev.actives, 1);
    ck_assert_int_eq(F.ev.errors, 0);
    printf("topics: %d records published (confirmed) in %llu ms, read from the first in %llu "
           "ms\n",
           N, (unsigned long long) published, (unsigned long long) read);
    ck_assert_int_eq(mm_reader_stop(r), MM_OK);
}
END_TEST

START_TEST(read_from_offset)
{
    enum { N = 1000, FROM = 600 };
    mmt_connect(F.mm);
    declare(F.mm, NULL);
    publish_range(F.mm, 0, N, NULL);
    static struct reads rd;
    memset(&rd, 0, sizeof rd);
    rd.want = N - FROM;
    char cons[64];
    read_topic(F.mm, consumer("offset", cons, sizeof cons), (mm_from_t){MM_FROM_OFFSET, FROM}, &rd,
               NULL);
    MMT_WAIT(F.base, rd.done, mmt_scale(WAIT_MS));
    observe(300); /* nothing more comes */
    ck_assert_uint_eq(rd.n, N - FROM);
    for (size_t i = 0; i < rd.n; i++)
        ck_assert_int_eq(rd.offset[i], FROM + (int64_t) i);
    ck_assert_msg(!rd.meta_bad, "%s", rd.why);
    printf("topics: read from offset %d: first record %lld, %zu records\n", FROM,
           (long long) rd.offset[0], rd.n);
}
END_TEST

/* Run the loop past the next change of the wall clock's second. */
static void
next_second(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_REALTIME, &ts);
    observe((int) (1000 - ts.tv_nsec / 1000000) + 20);
}

START_TEST(read_from_timestamp)
{
    enum { N = 200 };
    mmt_connect(F.mm);
    declare(F.mm, NULL);
    publish_range(F.mm, 0, N, "before");
    next_second();
    struct timespec ts;
    clock_gettime(CLOCK_REALTIME, &ts);
    int64_t point = (int64_t) ts.tv_sec * 1000 + ts.tv_nsec / 1000000;
    publish_range(F.mm, N, N, "after");
    static struct reads rd;
    memset(&rd, 0, sizeof rd);
    rd.want = N;
    char cons[64];
    read_topic(F.mm, consumer("ts", cons, sizeof cons), (mm_from_t){MM_FROM_TIMESTAMP, point}, &rd,
               NULL);
    MMT_WAIT(F.base, rd.done, mmt_scale(WAIT_MS));
    observe(300);
    int after = 0, before = 0;
    int64_t floor_ms = (point / 1000 - 1) * 1000; /* second precision: the second before */
    for (size_t i = 0; i < rd.n; i++) {
        after += strcmp(rd.type[i], "after") == 0;
        before += strcmp(rd.type[i], "before") == 0;
        /* the records' own timestamps (publisher's clock, whole seconds) */
        ck_assert_msg(rd.ts[i] >= floor_ms, "record %lld published at %lld, the point is %lld",
                      (long long) rd.offset[i], (long long) rd.ts[i], (long long) point);
    }
    ck_assert_int_eq(after, N); /* everything published after the point */
    ck_assert_uint_eq(rd.n, (size_t) (after + before));
    printf("topics: read from a timestamp: %d records after the point, %d from before it "
           "(allowed: those of the second before)\n",
           after, before);
}
END_TEST

/* ================================================================ processes */

struct kid {
    pid_t pid;
    int fd;
    struct event *ev;
    char buf[4096];
    size_t len;
    bool active, standby;
    uint64_t active_ms, standby_ms;
    int actives, errors;
    char file[128];
};

static struct kid kids[MAX_KIDS];
static int nkids;

static void
kid_line(struct kid *k, const char *line)
{
    unsigned long long ms = 0;
    if (sscanf(line, "ACTIVE %llu", &ms) == 1) {
        k->active = true;
        k->active_ms = ms;
        k->actives++;
    } else if (sscanf(line, "STANDBY %llu", &ms) == 1) {
        k->standby = true;
        k->standby_ms = ms;
    } else if (strncmp(line, "ERROR", 5) == 0) {
        k->errors++;
        printf("  child %d: %s\n", (int) k->pid, line);
    }
}

static void
on_kid_pipe(evutil_socket_t fd, short what, void *arg)
{
    struct kid *k = arg;
    (void) what;
    ssize_t n = read(fd, k->buf + k->len, sizeof k->buf - 1 - k->len);
    if (n <= 0) {
        if (n == 0 || (errno != EAGAIN && errno != EINTR))
            event_del(k->ev);
        return;
    }
    k->len += (size_t) n;
    k->buf[k->len] = '\0';
    char *nl;
    while ((nl = strchr(k->buf, '\n')) != NULL) {
        *nl = '\0';
        kid_line(k, k->buf);
        k->len -= (size_t) (nl + 1 - k->buf);
        memmove(k->buf, nl + 1, k->len + 1);
    }
}

static const char *
temp_file(const char *what)
{
    ck_assert_int_lt(F.nfiles, MAX_NAMES);
    char *f = F.files[F.nfiles++];
    snprintf(f, sizeof F.files[0], "/tmp/mm-topics-%ld-%s-%d.txt", (long) getpid(), what, F.nfiles);
    unlink(f);
    return f;
}

static struct kid *
spawn(const char *cons, const char *file, int every, int prefetch, int delay_us)
{
    ck_assert_int_lt(nkids, MAX_KIDS);
    const char *uri = mmt_uri();
    char e[16], p[16], d[16];
    snprintf(e, sizeof e, "%d", every);
    snprintf(p, sizeof p, "%d", prefetch);
    snprintf(d, sizeof d, "%d", delay_us);
    int fd = -1;
    pid_t pid = mmt_fork_piped(&fd, false);
    if (pid == 0) {
        dup2(fd, STDOUT_FILENO);
        close(fd);
        execl(TOPIC_READER_PROC, "topic_reader_proc", uri, F.service, F.topic, cons, file, e, p, d,
              (char *) NULL);
        _exit(127);
    }
    struct kid *k = &kids[nkids++];
    *k = (struct kid){.pid = pid, .fd = fd};
    snprintf(k->file, sizeof k->file, "%s", file);
    k->ev = event_new(F.base, fd, EV_READ | EV_PERSIST, on_kid_pipe, k);
    ck_assert_ptr_nonnull(k->ev);
    event_add(k->ev, NULL);
    return k;
}

/* SIGKILL (or SIGTERM: then it must exit 0) and reap; the time of the signal. */
static uint64_t
end_kid(struct kid *k, int sig)
{
    uint64_t t0 = mmt_now_ms();
    ck_assert_int_eq(kill(k->pid, sig), 0);
    int st = 0;
    ck_assert_int_eq(waitpid(k->pid, &st, 0), k->pid);
    if (sig == SIGKILL)
        ck_assert(WIFSIGNALED(st) && WTERMSIG(st) == SIGKILL);
    else
        ck_assert_msg(WIFEXITED(st) && WEXITSTATUS(st) == 0, "child status %d", st);
    k->pid = 0;
    return t0;
}

static void
kids_reap_all(void)
{
    for (int i = 0; i < nkids; i++) {
        struct kid *k = &kids[i];
        if (k->pid > 0) {
            kill(k->pid, SIGKILL);
            waitpid(k->pid, NULL, 0);
        }
        if (k->ev != NULL)
            event_free(k->ev);
        if (k->fd >= 0)
            close(k->fd);
        *k = (struct kid){.fd = -1};
    }
    nkids = 0;
}

static void
proc_setup(void)
{
    setup();
    nkids = 0;
}

static void
proc_teardown(void)
{
    kids_reap_all();
    teardown();
}

/* The offsets in a reader process's file: counts per offset (0..n-1), lines, the last. */
struct tally {
    int count[MAX_READ];
    int lines, beyond;
    int64_t first, last;
};

static void
tally_file(const char *file, int n, struct tally *t)
{
    FILE *f = fopen(file, "r");
    t->first = t->last = -1;
    if (f == NULL)
        return;
    long long v;
    while (fscanf(f, "%lld", &v) == 1) {
        t->lines++;
        if (t->first < 0)
            t->first = v;
        t->last = v;
        if (v >= 0 && v < n)
            t->count[v]++;
        else
            t->beyond++;
    }
    fclose(f);
}

struct file_goal {
    const char *file;
    int lines;     /* at least this many lines, */
    int64_t last;  /* or (>= 0) a line with this offset last */
    int64_t at_ms; /* when it was met */
};

static bool
file_reached(void *ud)
{
    struct file_goal *g = ud;
    static struct tally t;
    memset(&t, 0, sizeof t);
    tally_file(g->file, MAX_READ, &t);
    bool met = g->last >= 0 ? t.last == g->last : t.lines >= g->lines;
    if (met)
        g->at_ms = (int64_t) mmt_now_ms();
    return met;
}

static void
reap_cursor_queues(const char *cons)
{
    ck_assert_int_lt(F.nqueues, MAX_NAMES);
    snprintf(F.queues[F.nqueues++], sizeof F.queues[0], "q.cursor.%s.%s", F.service, cons);
}

START_TEST(sigkill_resumes_from_cursor)
{
    enum { N = 10000, EVERY = 100, PREFETCH = 64, DELAY_US = 100 };
    mmt_connect(F.mm);
    declare(F.mm, NULL);
    publish_range(F.mm, 0, N, NULL);
    char cons[64];
    mmt_unique("crash", cons, sizeof cons);
    reap_cursor_queues(cons);
    const char *file = temp_file("crash");
    struct kid *a = spawn(cons, file, EVERY, PREFETCH, DELAY_US);
    struct file_goal g = {.file = file, .lines = N / 3, .last = -1};
    ck_assert_msg(wait_until(file_reached, &g, mmt_scale(WAIT_MS)), "the reader never got mid-way");
    end_kid(a, SIGKILL);
    static struct tally before;
    memset(&before, 0, sizeof before);
    tally_file(file, N, &before);
    ck_assert_int_lt(before.last, N - 1); /* killed mid-way */
    struct kid *b = spawn(cons, file, EVERY, PREFETCH, 0);
    g = (struct file_goal){.file = file, .last = N - 1};
    ck_assert_msg(wait_until(file_reached, &g, mmt_scale(WAIT_MS)), "the restarted reader never "
                                                                    "got to the end");
    end_kid(b, SIGTERM);
    static struct tally t;
    memset(&t, 0, sizeof t);
    tally_file(file, N, &t);
    for (int i = 0; i < N; i++)
        ck_assert_msg(t.count[i] >= 1, "offset %d never handled (gap)", i);
    ck_assert_int_eq(t.beyond, 0);
    int dups = t.lines - N;
    /* Re-read after the crash: what was settled (or handled) after the stored cursor.
     * The cursor is written every EVERY settled records, so at most EVERY records
     * follow the last write; if that write was still unconfirmed when the process
     * died, the one before counts: at most 2 x EVERY. The prefetch adds nothing:
     * records delivered but not handled were never written to the file. */
    printf("topics: SIGKILL after %d records (last %lld): %d records read again after the "
           "restart (bound %d = 2 x cursor_every)\n",
           before.lines, (long long) before.last, dups, 2 * EVERY);
    ck_assert_int_le(dups, 2 * EVERY);
    ck_assert_int_eq(a->errors + b->errors, 0);
}
END_TEST

START_TEST(standby_takes_over_after_sigkill)
{
    enum { N = 3000, EVERY = 50, PREFETCH = 32, DELAY_US = 300 };
    mmt_connect(F.mm);
    declare(F.mm, NULL);
    publish_range(F.mm, 0, N, NULL);
    char cons[64];
    mmt_unique("standby", cons, sizeof cons);
    reap_cursor_queues(cons);
    const char *fa = temp_file("a"), *fb = temp_file("b");
    struct kid *a = spawn(cons, fa, EVERY, PREFETCH, DELAY_US);
    MMT_WAIT(F.base, a->active, mmt_scale(WAIT_MS));
    struct kid *b = spawn(cons, fb, EVERY, PREFETCH, DELAY_US);
    MMT_WAIT(F.base, b->standby, mmt_scale(WAIT_MS));
    struct file_goal g = {.file = fa, .lines = N / 3, .last = -1};
    ck_assert(wait_until(file_reached, &g, mmt_scale(WAIT_MS)));
    ck_assert(!b->active); /* exactly one active */
    ck_assert_int_eq(a->actives, 1);
    uint64_t killed = end_kid(a, SIGKILL);
    MMT_WAIT(F.base, b->active, mmt_scale(WAIT_MS));
    uint64_t failover = b->active_ms - killed;
    g = (struct file_goal){.file = fb, .last = N - 1};
    ck_assert_msg(wait_until(file_reached, &g, mmt_scale(WAIT_MS)), "the standby never finished");
    end_kid(b, SIGTERM);
    static struct tally ta, tb;
    memset(&ta, 0, sizeof ta);
    memset(&tb, 0, sizeof tb);
    tally_file(fa, N, &ta);
    tally_file(fb, N, &tb);
    for (int i = 0; i < N; i++)
        ck_assert_msg(ta.count[i] + tb.count[i] >= 1, "offset %d never handled (gap)", i);
    ck_assert_int_le(tb.first, ta.last + 1); /* from the cursor: no gap */
    ck_assert_int_le(ta.last + 1 - tb.first, 2 * EVERY);
    printf("topics: active reader SIGKILLed after %d records: the standby read %llu ms later, "
           "from offset %lld (%lld read again)\n",
           ta.lines, (unsigned long long) failover, (long long) tb.first,
           (long long) (ta.last + 1 - tb.first));
    ck_assert_uint_lt(failover, (uint64_t) mmt_scale(FAILOVER_MS));
}
END_TEST

/* ================================================================ in-process standby */

START_TEST(connection_closed_then_clean_handover)
{
    static struct reads r1, r2;
    memset(&r1, 0, sizeof r1);
    memset(&r2, 0, sizeof r2);
    F.mm2 = instance(&F.ev2);
    mmt_connect(F.mm);
    mmt_connect(F.mm2);
    declare(F.mm, NULL);
    publish_range(F.mm, 0, 100, NULL);
    char cons[64];
    consumer("inproc", cons, sizeof cons);
    mm_read_opts_t o = MM_READ_OPTS_INIT;
    o.cursor_every = 10;
    r1.want = 100;
    mm_reader_t *a = read_topic(F.mm, cons, (mm_from_t){MM_FROM_FIRST, 0}, &r1, &o);
    MMT_WAIT(F.base, r1.done, mmt_scale(WAIT_MS));
    mm_reader_t *b = read_topic(F.mm2, cons, (mm_from_t){MM_FROM_FIRST, 0}, &r2, &o);
    MMT_WAIT(F.base, F.ev2.standby, mmt_scale(WAIT_MS));
    ck_assert_int_eq(mm_reader_active(a), 1);
    ck_assert_int_eq(mm_reader_active(b), 0);
    /* The broker closes the active reader's connection: the standby reads. */
    F.ev.standby = false;
    ck_assert_int_eq(mmt_kill_connection(mmt_local_port(F.mm)), 0);
    MMT_WAIT(F.base, F.ev2.active, mmt_scale(WAIT_MS));
    MMT_WAIT(F.base, F.ev.standby, mmt_scale(WAIT_MS)); /* the old one lost its lock */
    /* from the moment the closed connection noticed (rabbitmqctl itself takes ~1 s) */
    ck_assert_uint_gt(F.ev.disconnected_ms, 0);
    uint64_t failover = F.ev2.active_ms > F.ev.disconnected_ms
                            ? F.ev2.active_ms - F.ev.disconnected_ms
                            : 0; /* the other connection may be read first */
    ck_assert_int_eq(mm_reader_active(b), 1);
    observe(300);
    ck_assert_int_eq(mm_reader_active(a), 0); /* back, as a standby */
    r2.want = 55; /* before publishing: records may arrive while it waits for confirms */
    r2.done = false;
    publish_range(F.mm2, 100, 55, NULL);
    MMT_WAIT(F.base, r2.done, mmt_scale(WAIT_MS));
    ck_assert_int_eq(r2.offset[0], 100); /* from the cursor: 0..99 were settled by a */
    ck_assert_int_eq(r2.offset[r2.n - 1], 154);
    /* A clean stop writes the cursor (154: the last periodic write was at 149)
     * and only then releases the lock: a takes over right after b's last
     * record, reading nothing again. */
    int64_t last = mm_reader_position(b);
    F.ev.active = false;
    ck_assert_int_eq(mm_reader_stop(b), MM_OK);
    MMT_WAIT(F.base, F.ev.active, mmt_scale(WAIT_MS));
    size_t seen = r1.n;
    r1.want = seen + 10;
    r1.done = false;
    publish_range(F.mm, 155, 10, NULL);
    MMT_WAIT(F.base, r1.done, mmt_scale(WAIT_MS));
    ck_assert_int_eq(r1.offset[seen], last + 1);
    printf("topics: connection closed by the broker: the standby read %llu ms after the active "
           "one saw its connection closed; after a "
           "clean stop the other went on at %lld (%lld read again)\n",
           (unsigned long long) failover, (long long) r1.offset[seen],
           (long long) (last + 1 - r1.offset[seen]));
    ck_assert_uint_lt(failover, (uint64_t) mmt_scale(FAILOVER_MS));
    ck_assert_int_eq(F.ev.errors + F.ev2.errors, 0);
}
END_TEST

/* mm_close: the reader stops consuming and its cursor is written while the
 * close waits; connected again, it goes on where it was. */
START_TEST(close_and_reconnect)
{
    static struct reads rd;
    memset(&rd, 0, sizeof rd);
    mmt_connect(F.mm);
    declare(F.mm, NULL);
    publish_range(F.mm, 0, 30, NULL);
    char cons[64];
    consumer("close", cons, sizeof cons);
    mm_read_opts_t o = MM_READ_OPTS_INIT;
    o.cursor_every = 1000; /* no cursor write but mm_close's */
    o.cursor_interval_ms = 600000;
    rd.want = 30;
    read_topic(F.mm, cons, (mm_from_t){MM_FROM_CURSOR, 0}, &rd, &o);
    MMT_WAIT(F.base, rd.done, mmt_scale(WAIT_MS));
    ck_assert_int_eq(mm_close(F.mm), MM_OK);
    F.ev.active = false; /* events raised before the close were delivered while it waited */
    mmt_connect(F.mm);
    MMT_WAIT(F.base, F.ev.active, mmt_scale(WAIT_MS));
    rd.want = 35;
    rd.done = false;
    publish_range(F.mm, 30, 5, NULL);
    MMT_WAIT(F.base, rd.done, mmt_scale(WAIT_MS));
    ck_assert_int_eq(rd.offset[30], 30); /* nothing read twice */
    ck_assert_int_eq(mm_close(F.mm), MM_OK);
    /* What mm_close wrote: another instance reading as the consumer goes on at 35. */
    static struct reads rd2;
    memset(&rd2, 0, sizeof rd2);
    F.mm2 = instance(&F.ev2);
    mmt_connect(F.mm2);
    rd2.want = 1;
    read_topic(F.mm2, cons, (mm_from_t){MM_FROM_CURSOR, 0}, &rd2, NULL);
    MMT_WAIT(F.base, F.ev2.active, mmt_scale(WAIT_MS));
    publish_range(F.mm2, 35, 1, NULL);
    MMT_WAIT(F.base, rd2.done, mmt_scale(WAIT_MS));
    ck_assert_int_eq(rd2.offset[0], 35);
    mmt_connect(F.mm); /* for the teardown's topic delete; a standby now */
    ck_assert_int_eq(F.ev.errors + F.ev2.errors, 0);
}
END_TEST

/* ================================================================ bad input */

START_TEST(unknown_topic)
{
    static struct reads rd;
    memset(&rd, 0, sizeof rd);
    char cons[64];
    consumer("unknown", cons, sizeof cons);
    /* Registered before connecting: checked at connect, an error event; it
     * starts once the topic is declared (its retry). */
    mm_reader_t *r = read_topic(F.mm, cons, (mm_from_t){MM_FROM_FIRST, 0}, &rd, NULL);
    mmt_connect(F.mm);
    MMT_WAIT(F.base, F.ev.error, mmt_scale(WAIT_MS));
    int i = find_event(&F.ev, MM_EV_ERROR, "does not exist");
    ck_assert_msg(i >= 0, "no error event saying the topic does not exist");
    ck_assert_int_eq(F.ev.code[i], MM_ENOENT);
    ck_assert_str_eq(F.ev.route[i], cons);
    ck_assert_ptr_nonnull(strstr(F.ev.text[i], F.topic));
    ck_assert_int_eq(mm_reader_active(r), 0);
    /* Connected: at once, with the text the API promises. */
    char other[64], expect[200];
    mmt_unique("nope", other, sizeof other);
    snprintf(expect, sizeof expect, "topic '%s' does not exist: declare it with mm_topic_declare()",
             F.topic);
    ck_assert_int_eq(mm_topic_read(F.mm, F.topic, other, (mm_from_t){MM_FROM_FIRST, 0}, on_record,
                                   &rd, NULL, NULL),
                     MM_ENOENT);
    ck_assert_str_eq(mm_last_error(F.mm), expect);
    ck_assert_int_eq(mm_topic_publish(F.mm, F.topic, "x", NULL, 0, NULL), MM_ENOENT);
    ck_assert_str_eq(mm_last_error(F.mm), expect);
    ck_assert_int_eq(mm_topic_delete(F.mm, F.topic), MM_ENOENT);
    /* Declared now: the waiting reader starts (within its retry period). */
    uint64_t t0 = mmt_now_ms();
    declare(F.mm, NULL);
    MMT_WAIT(F.base, F.ev.active, mmt_scale(WAIT_MS));
    rd.want = 3;
    publish_range(F.mm, 0, 3, NULL);
    MMT_WAIT(F.base, rd.done, mmt_scale(WAIT_MS));
    printf("topics: a reader of a missing topic started %llu ms after it was declared\n",
           (unsigned long long) (mmt_now_ms() - t0));
    /* Names and arguments. */
    ck_assert_int_eq(mm_topic_read(F.mm, F.topic, cons, (mm_from_t){MM_FROM_FIRST, 0}, on_record,
                                   &rd, NULL, NULL),
                     MM_ESTATE);
    ck_assert_int_eq(mm_topic_read(F.mm, "bad name", "c", (mm_from_t){MM_FROM_FIRST, 0}, on_record,
                                   &rd, NULL, NULL),
                     MM_ENAME);
    ck_assert_int_eq(mm_topic_read(F.mm, F.topic, "c2", (mm_from_t){MM_FROM_OFFSET, -1}, on_record,
                                   &rd, NULL, NULL),
                     MM_EINVAL);
    ck_assert_int_eq(mm_topic_publish(F.mm, F.topic, "bad type", NULL, 0, NULL), MM_ENAME);
}
END_TEST

START_TEST(offset_past_the_end)
{
    static struct reads rd;
    memset(&rd, 0, sizeof rd);
    mmt_connect(F.mm);
    declare(F.mm, NULL);
    publish_range(F.mm, 0, 10, NULL);
    char cons[64];
    rd.want = 1;
    mm_reader_t *r = read_topic(F.mm, consumer("past", cons, sizeof cons),
                                (mm_from_t){MM_FROM_OFFSET, 12}, &rd, NULL);
    MMT_WAIT(F.base, F.ev.active, mmt_scale(WAIT_MS));
    observe(200);
    ck_assert_uint_eq(rd.n, 0); /* it waits */
    publish_range(F.mm, 10, 3, NULL);
    MMT_WAIT(F.base, rd.done, mmt_scale(WAIT_MS));
    rd.want = 2;
    rd.done = false;
    publish_range(F.mm, 13, 1, NULL);
    MMT_WAIT(F.base, rd.done, mmt_scale(WAIT_MS));
    ck_assert_int_eq(rd.offset[0], 12); /* 10 and 11 were before the start */
    ck_assert_int_eq(rd.offset[1], 13);
    ck_assert_int_eq(mm_reader_position(r), 13);
    ck_assert_int_eq(F.ev.errors, 0);
}
END_TEST

/* Raw bytes into a queue (the peer waits for the broker's confirm). */
static void
raw_publish(const char *queue, const char *content_type, amqp_bytes_t body)
{
    struct mmt_peer p;
    mmt_peer_open(&p);
    mmt_peer_use_confirms(&p);
    struct mmt_props props = {.content_type = content_type};
    mmt_peer_publish(&p, queue, &props, body);
    mmt_peer_confirmed(&p, 5000);
    mmt_peer_close(&p);
}

/* The first record a reader of `cons` from the cursor (fallback offset 5) handles,
 * and the MM_EV_ERROR it must raise about the cursor (its text holds `why`). */
static void
read_bad_cursor(const char *cons, const char *why)
{
    static struct reads rd;
    memset(&rd, 0, sizeof rd);
    F.ev.error = false;
    F.ev.n = 0;
    mm_read_opts_t o = MM_READ_OPTS_INIT;
    o.fallback = (mm_from_t){MM_FROM_OFFSET, 5};
    rd.want = 1;
    mm_reader_t *r = read_topic(F.mm, cons, (mm_from_t){MM_FROM_CURSOR, 0}, &rd, &o);
    MMT_WAIT(F.base, F.ev.error, mmt_scale(WAIT_MS));
    MMT_WAIT(F.base, rd.done, mmt_scale(WAIT_MS));
    int i = find_event(&F.ev, MM_EV_ERROR, "cannot be decoded");
    if (i < 0)
        dump_events(&F.ev);
    ck_assert_int_ge(i, 0);
    ck_assert_int_eq(F.ev.code[i], MM_EDECODE);
    ck_assert_msg(strstr(F.ev.text[i], why) != NULL, "'%s' does not say '%s'", F.ev.text[i], why);
    ck_assert_msg(strstr(F.ev.text[i], "offset 5") != NULL, "%s", F.ev.text[i]);
    ck_assert_int_eq(rd.offset[0], 5); /* the fallback */
    printf("topics: bad cursor: %s\n", F.ev.text[i]);
    ck_assert_int_eq(mm_reader_stop(r), MM_OK);
    ck_assert_int_eq(mm_flush(F.mm, mmt_scale(WAIT_MS)), MM_OK); /* its cursor is written */
}

START_TEST(corrupted_cursor)
{
    static struct reads rd;
    memset(&rd, 0, sizeof rd);
    mmt_connect(F.mm);
    declare(F.mm, NULL);
    publish_range(F.mm, 0, 20, NULL);
    char cons[64], queue[256];
    consumer("cursor", cons, sizeof cons);
    snprintf(queue, sizeof queue, "q.cursor.%s.%s", F.service, cons);
    /* A good cursor first: read all 20, stop (written, confirmed). */
    rd.want = 20;
    mm_reader_t *r = read_topic(F.mm, cons, (mm_from_t){MM_FROM_CURSOR, 0}, &rd, NULL);
    MMT_WAIT(F.base, rd.done, mmt_scale(WAIT_MS));
    ck_assert_int_eq(mm_reader_stop(r), MM_OK);
    ck_assert_int_eq(mm_flush(F.mm, mmt_scale(WAIT_MS)), MM_OK);
    /* ... read back: the next reader starts right after it. */
    memset(&rd, 0, sizeof rd);
    rd.want = 1;
    r = read_topic(F.mm, cons, (mm_from_t){MM_FROM_CURSOR, 0}, &rd, NULL);
    publish_range(F.mm, 20, 1, NULL);
    MMT_WAIT(F.base, rd.done, mmt_scale(WAIT_MS));
    ck_assert_int_eq(rd.offset[0], 20);
    ck_assert_int_eq(mm_reader_stop(r), MM_OK);
    ck_assert_int_eq(mm_flush(F.mm, mmt_scale(WAIT_MS)), MM_OK);
    /* Garbage in its place (x-max-length 1 drops the good one). */
    raw_publish(queue, "application/msgpack", MMT_BYTES("\xc1garbage"));
    read_bad_cursor(cons, "msgpack");
    /* Another topic's cursor. */
    static const char other[] = "\x83\xa5topic\xa5other\xa6offset\x03\xa2"
                                "at\x00";
    raw_publish(queue, "application/msgpack", (amqp_bytes_t){sizeof other - 1, (void *) other});
    read_bad_cursor(cons, "another topic");
}
END_TEST

START_TEST(undecodable_record)
{
    static struct reads rd;
    memset(&rd, 0, sizeof rd);
    mmt_connect(F.mm);
    declare(F.mm, NULL);
    publish_range(F.mm, 0, 1, NULL);
    char queue[128];
    snprintf(queue, sizeof queue, "s.topic.%s", F.topic);
    raw_publish(queue, "application/msgpack", MMT_BYTES("\xc1\xc1 not msgpack"));
    publish_range(F.mm, 2, 1, NULL);
    char cons[64];
    rd.want = 2;
    mm_reader_t *r = read_topic(F.mm, consumer("undecodable", cons, sizeof cons),
                                (mm_from_t){MM_FROM_FIRST, 0}, &rd, NULL);
    MMT_WAIT(F.base, rd.done, mmt_scale(WAIT_MS));
    ck_assert_int_eq(rd.offset[0], 0);
    ck_assert_int_eq(rd.offset[1], 2); /* the next record is handled */
    int i = find_event(&F.ev, MM_EV_ERROR, "record 1 ");
    if (i < 0)
        dump_events(&F.ev);
    ck_assert_int_ge(i, 0);
    ck_assert_int_eq(F.ev.code[i], MM_EDECODE);
    ck_assert_ptr_nonnull(strstr(F.ev.text[i], F.topic));
    ck_assert_int_eq(mm_reader_position(r), 2);
    printf("topics: undecodable record: %s\n", F.ev.text[i]);
}
END_TEST

START_TEST(type_filter)
{
    static struct reads rd;
    memset(&rd, 0, sizeof rd);
    mmt_connect(F.mm);
    declare(F.mm, NULL);
    static const char *const cycle[] = {"a", "b", "c"};
    for (int i = 0; i < 12; i++) /* a b c a b c ... the last one (11) is a "c" */
        publish_range(F.mm, i, 1, cycle[i % 3]);
    publish_range(F.mm, 12, 2, "b"); /* two more the reader does not want */
    const char *const types[] = {"c", "a"};
    mm_read_opts_t o = MM_READ_OPTS_INIT;
    o.types = types;
    o.ntypes = 2;
    char cons[64];
    rd.want = 8;
    mm_reader_t *r = read_topic(F.mm, consumer("types", cons, sizeof cons),
                                (mm_from_t){MM_FROM_FIRST, 0}, &rd, &o);
    MMT_WAIT(F.base, rd.done, mmt_scale(WAIT_MS));
    struct position_is p = {r, 13}; /* the unwanted records are settled too */
    ck_assert(wait_until(position_reached, &p, mmt_scale(WAIT_MS)));
    observe(200);
    ck_assert_uint_eq(rd.n, 8);
    for (size_t i = 0; i < rd.n; i++) {
        ck_assert_str_ne(rd.type[i], "b");
        ck_assert_int_ne(rd.offset[i] % 3, 1);
    }
    ck_assert_int_eq(F.ev.errors, 0);
}
END_TEST

START_TEST(retention_arguments)
{
    mmt_connect(F.mm);
    mm_topic_opts_t o = MM_TOPIC_OPTS_INIT;
    o.max_age_s = 3600;
    o.max_bytes = 10000000;
    o.segment_bytes = 1000000;
    declare(F.mm, &o);
    declare(F.mm, &o); /* the same again: fine */
    /* The broker's view. */
    const char *ctl = getenv("MM_TEST_CTL");
    ck_assert_ptr_nonnull(ctl);
    char cmd[512], line[2048] = "";
    snprintf(cmd, sizeof cmd, "%s list_queues -q name type durable arguments 2>/dev/null", ctl);
    FILE *pipe = popen(cmd, "r");
    ck_assert_ptr_nonnull(pipe);
    char want[128];
    snprintf(want, sizeof want, "s.topic.%s\t", F.topic);
    bool found = false;
    while (!found && fgets(line, sizeof line, pipe) != NULL)
        found = strncmp(line, want, strlen(want)) == 0;
    pclose(pipe);
    ck_assert_msg(found, "%s not listed", want);
    printf("topics: the broker lists %s", line);
    ck_assert_ptr_nonnull(strstr(line, "stream\ttrue"));
    ck_assert_ptr_nonnull(strstr(line, "{\"x-max-age\",\"3600s\"}"));
    ck_assert_ptr_nonnull(strstr(line, "{\"x-max-length-bytes\",10000000}"));
    ck_assert_ptr_nonnull(strstr(line, "{\"x-stream-max-segment-size-bytes\",1000000}"));
    ck_assert_ptr_nonnull(strstr(line, "{\"x-queue-type\",\"stream\"}"));
    /* Other retention: refused, the broker keeps the first. */
    o.max_age_s = 7200;
    ck_assert_int_eq(mm_topic_declare(F.mm, F.topic, &o), MM_EBROKER);
    printf("topics: redeclared with x-max-age 7200s: %s\n", mm_last_error(F.mm));
    ck_assert_ptr_nonnull(strstr(mm_last_error(F.mm), "x-max-age"));
    ck_assert_int_eq(mm_topic_delete(F.mm, F.topic), MM_OK);
    ck_assert_int_eq(mm_topic_delete(F.mm, F.topic), MM_ENOENT);
}
END_TEST

START_TEST(stop_from_handler)
{
    static struct reads rd;
    memset(&rd, 0, sizeof rd);
    mmt_connect(F.mm);
    declare(F.mm, NULL);
    publish_range(F.mm, 0, 50, NULL);
    char cons[64];
    consumer("stopin", cons, sizeof cons);
    rd.want = 50;
    mm_reader_t *r = read_topic(F.mm, cons, (mm_from_t){MM_FROM_FIRST, 0}, &rd, NULL);
    rd.stop_me = r;
    rd.stop_at = 9;
    observe(500);
    ck_assert_int_eq(rd.stop_rc, MM_OK);
    ck_assert_uint_eq(rd.n, 10); /* nothing after the record whose handler stopped it */
    ck_assert_int_eq(mm_flush(F.mm, mmt_scale(WAIT_MS)), MM_OK);
    /* Its cursor says 9: the next reader goes on at 10. */
    memset(&rd, 0, sizeof rd);
    rd.want = 1;
    read_topic(F.mm, cons, (mm_from_t){MM_FROM_CURSOR, 0}, &rd, NULL);
    MMT_WAIT(F.base, rd.done, mmt_scale(WAIT_MS));
    ck_assert_int_eq(rd.offset[0], 10);
}
END_TEST

static Suite *
topics_suite(void)
{
    Suite *s = suite_create("topics");
    TCase *tc = mmt_tcase(s, "replay", setup, teardown, 120);
    tcase_add_test(tc, read_from_first);
    tcase_add_test(tc, read_from_offset);
    tcase_add_test(tc, read_from_timestamp);
    tc = mmt_tcase(s, "processes", proc_setup, proc_teardown, 120);
    tcase_add_test(tc, sigkill_resumes_from_cursor);
    tcase_add_test(tc, standby_takes_over_after_sigkill);
    tc = mmt_tcase(s, "standby", setup, teardown, 120);
    tcase_add_test(tc, connection_closed_then_clean_handover);
    tcase_add_test(tc, close_and_reconnect);
    tc = mmt_tcase(s, "bad_input", setup, teardown, 120);
    tcase_add_test(tc, unknown_topic);
    tcase_add_test(tc, offset_past_the_end);
    tcase_add_test(tc, corrupted_cursor);
    tcase_add_test(tc, undecodable_record);
    tcase_add_test(tc, type_filter);
    tcase_add_test(tc, retention_arguments);
    tcase_add_test(tc, stop_from_handler);
    return s;
}

int
main(void)
{
    return mmt_run(topics_suite());
}
