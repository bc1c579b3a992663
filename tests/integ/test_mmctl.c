/* Integration: the mmctl command line tool (tools/mmctl), run as child
 * processes against the harness broker: request <-> reply (fixed body,
 * echo, JSON output, a body from stdin, the JSON codec), a streamed answer,
 * a remote error, a timeout and no route with their exit codes, emit <->
 * listen, task <-> work, an unroutable task, stat, leader, status and join,
 * topics (declare, publish, read from a point and from the stored cursor,
 * a standby reader taking over, delete, an unknown topic), usage errors, a
 * bad JSON body and an unreachable broker. A serving mmctl
 * prints "mmctl: ready: ..." on stderr once it consumes: the tests wait for
 * that line (bounded), never sleep. Children's pipes are read from the
 * test's event loop, which also runs the in-test micromsg instance that
 * plays the remote side where mmctl cannot (errors, streams, silence). */
#define _GNU_SOURCE /* pipe2 */
#include <check.h>
#include <event2/event.h>
#include <fcntl.h>
#include <jansson.h>
#include <netinet/in.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#include "micromsg.h"
#include "mmt.h"
#include "mmt_fx.h"
#include "mmt_peer.h"

#ifndef MMCTL_PATH
#error "MMCTL_PATH: the mmctl binary under test (tests/meson.build)"
#endif

#define MAX_CHILD 12
#define OUT_MAX 16384
#define MAX_ARGV 16

/* A running mmctl: its stdout and stderr read into buffers by the loop. */
struct child {
    pid_t pid;
    int fd[2];            /* stdout, stderr (read ends); -1 at their end */
    struct event *ev[2];  /* their read events on F.base */
    char buf[2][OUT_MAX]; /* what they said, NUL-terminated */
    size_t len[2];
    bool eof;  /* both pipes ended */
    bool seen; /* set by child_wait_for when its text came */
    const char *want;
    int want_i; /* where: 0 stdout, 1 stderr */
    int status; /* the exit code, or 128 + signal */
};

struct fx {
    struct event_base *base;
    mm_t *mm; /* the in-test service instance, or NULL */
    struct child c[MAX_CHILD];
    int n;
    char service[64], route[32];
    char topic[64], consumer[64]; /* a test's topic and reader: deleted by the teardown */
    mm_msg_t *held;               /* a request kept unanswered (the timeout test) */
};

static struct fx F;

static void
setup(void)
{
    memset(&F, 0, sizeof F);
    F.base = mmt_base_new();
    mmt_unique("mmctl", F.service, sizeof F.service);
    snprintf(F.route, sizeof F.route, "r%d", (int) getpid() % 1000);
    /* every mmctl finds the harness broker as a user would: $MM_URI */
    ck_assert_int_eq(setenv("MM_URI", mmt_uri(), 1), 0);
    unsetenv("MM_LOG");
}

static void
child_release(struct child *c)
{
    for (int i = 0; i < 2; i++) {
        if (c->ev[i] != NULL)
            event_free(c->ev[i]);
        if (c->fd[i] >= 0)
            close(c->fd[i]);
        c->ev[i] = NULL;
        c->fd[i] = -1;
    }
}

/* The topic and the reader's cursor queue (mmctl reads as service "mmctl"), when the
 * test made them (a topic the test deleted itself: deleting a missing queue is no
 * error). Like every teardown, it does not run after a failed assertion. */
static void
delete_topic_queues(void)
{
    if (F.topic[0] == '\0')
        return;
    char q[2][160];
    snprintf(q[0], sizeof q[0], "s.topic.%s", F.topic);
    snprintf(q[1], sizeof q[1], "q.cursor.mmctl.%s", F.consumer);
    struct mmt_peer p;
    mmt_peer_open(&p);
    for (int i = 0; i < 2; i++) {
        amqp_queue_delete(p.c, mmt_peer_channel(&p), amqp_cstring_bytes(q[i]), 0, 0);
        mmt_peer_ok(&p, "queue.delete");
    }
    mmt_peer_close(&p);
}

static void
teardown(void)
{
    for (int i = 0; i < F.n; i++) {
        if (F.c[i].pid > 0) {
            kill(F.c[i].pid, SIGKILL);
            waitpid(F.c[i].pid, NULL, 0);
        }
        child_release(&F.c[i]);
    }
    mm_msg_unref(F.held);
    mm_free(F.mm);
    mmt_base_free(F.base);
    delete_topic_queues();
}

/* ---- children ---- */

static void
on_pipe(evutil_socket_t fd, short what, void *ud)
{
    (void) what;
    struct child *c = ud;
    int i = fd == c->fd[0] ? 0 : 1;
    ssize_t n = read(fd, c->buf[i] + c->len[i], OUT_MAX - 1 - c->len[i]);
    if (n > 0) {
        c->len[i] += (size_t) n;
        c->buf[i][c->len[i]] = '\0';
    } else {
        event_del(c->ev[i]);
        c->eof = c->ev[1 - i] == NULL || !event_pending(c->ev[1 - i], EV_READ, NULL);
    }
    if (c->want != NULL && strstr(c->buf[c->want_i], c->want) != NULL)
        c->seen = true;
}

/* The child's side of the fork: stdin from `in` (NULL: /dev/null), then exec. */
static void
child_exec(char *const argv[], int out[2], int err[2], int in[2])
{
    dup2(out[1], 1);
    dup2(err[1], 2);
    if (in != NULL) {
        dup2(in[0], 0);
    } else {
        int nul = open("/dev/null", O_RDONLY);
        dup2(nul, 0);
    }
    closefrom(3); /* nothing of the test's (pipes, sockets) lives on in mmctl */
    execv(MMCTL_PATH, argv);
    _exit(127);
}

/* Start mmctl with the arguments argv (NULL-terminated, argv[0] not included) and
 * `input` on its stdin (NULL: none). */
static struct child *
spawn_in(const char *input, const char *const *args)
{
    ck_assert_int_lt(F.n, MAX_CHILD);
    struct child *c = &F.c[F.n++];
    memset(c, 0, sizeof *c);
    char *argv[MAX_ARGV] = {"mmctl"};
    for (int i = 0; args[i] != NULL; i++) {
        ck_assert_int_lt(i + 2, MAX_ARGV);
        argv[i + 1] = (char *) args[i];
    }
    int out[2], err[2], in[2];
    ck_assert_int_eq(pipe2(out, O_CLOEXEC), 0);
    ck_assert_int_eq(pipe2(err, O_CLOEXEC), 0);
    ck_assert_int_eq(pipe2(in, O_CLOEXEC), 0);
    fflush(NULL);
    c->pid = fork();
    ck_assert_int_ge(c->pid, 0);
    if (c->pid == 0)
        child_exec(argv, out, err, input != NULL ? in : NULL);
    close(out[1]);
    close(err[1]);
    close(in[0]);
    if (input != NULL)
        ck_assert_int_eq(write(in[1], input, strlen(input)), (ssize_t) strlen(input));
    close(in[1]);
    c->fd[0] = out[0];
    c->fd[1] = err[0];
    for (int i = 0; i < 2; i++) {
        c->ev[i] = event_new(F.base, c->fd[i], EV_READ | EV_PERSIST, on_pipe, c);
        ck_assert_int_eq(event_add(c->ev[i], NULL), 0);
    }
    return c;
}

#define SPAWN(...) spawn_in(NULL, (const char *const[]){__VA_ARGS__, NULL})
#define SPAWN_IN(input, ...) spawn_in((input), (const char *const[]){__VA_ARGS__, NULL})

/* Wait (bounded) until the child's stdout (i 0) or stderr (i 1) holds `text`. */
static void
child_wait_in(struct child *c, int i, const char *text, int ms)
{
    c->want = text;
    c->want_i = i;
    c->seen = strstr(c->buf[i], text) != NULL;
    ck_assert_msg(mmt_wait(F.base, &c->seen, mmt_scale(ms)),
                  "no '%s' from mmctl within %d ms; "
                  "stdout: %s stderr: %s",
                  text, ms, c->buf[0], c->buf[1]);
    c->want = NULL;
}

static void
child_wait_for(struct child *c, const char *text, int ms)
{
    child_wait_in(c, 1, text, ms);
}

/* Wait (bounded) for the child to end; returns its exit code. */
static int
child_end(struct child *c, int ms)
{
    ck_assert_msg(mmt_wait(F.base, &c->eof, mmt_scale(ms)),
                  "mmctl did not end within %d ms; "
                  "stdout: %s stderr: %s",
                  ms, c->buf[0], c->buf[1]);
    int st = 0;
    ck_assert_int_eq(waitpid(c->pid, &st, 0), c->pid);
    c->pid = 0;
    child_release(c);
    c->status = WIFEXITED(st) ? WEXITSTATUS(st) : 128 + WTERMSIG(st);
    return c->status;
}

/* Run mmctl to its end (bounded); returns the child (exit code in ->status). */
#define RUN(...) run_(SPAWN(__VA_ARGS__))
#define RUN_IN(input, ...) run_(SPAWN_IN((input), __VA_ARGS__))
static struct child *
run_(struct child *c)
{
    child_end(c, 20000);
    return c;
}

/* stderr is one line (errors are never a stack of messages). */
static void
assert_one_line(const struct child *c)
{
    const char *nl = strchr(c->buf[1], '\n');
    ck_assert_msg(nl != NULL && nl[1] == '\0', "stderr is not one line: '%s'", c->buf[1]);
    ck_assert_msg(strncmp(c->buf[1], "mmctl: ", 7) == 0, "stderr: '%s'", c->buf[1]);
}

static void
assert_has(const char *text, const char *part)
{
    ck_assert_msg(strstr(text, part) != NULL, "'%s' not in '%s'", part, text);
}

/* ---- the in-test service ---- */

static void
serve(const char *route, mm_msg_fn fn)
{
    if (F.mm == NULL) {
        F.mm = mmt_instance(F.base, F.service, NULL, NULL);
        mmt_connect(F.mm);
    }
    mmt_handle(F.mm, route, fn, NULL, 0);
}

static void
on_reject(mm_msg_t *msg, void *ud)
{
    (void) ud;
    ck_assert_int_eq(mm_msg_reject(msg, "notFound", "no such thing"), MM_OK);
}

static void
on_stream(mm_msg_t *msg, void *ud)
{
    (void) ud;
    mm_body_t *b = mm_body_new();
    for (int i = 1; i <= 3; i++) {
        mm_body_reset(b);
        msgpack_pack_int(mm_body_packer(b), i);
        ck_assert_int_eq(mm_msg_write(msg, mm_body_data(b), mm_body_len(b)), MM_OK);
    }
    mm_body_free(b);
    ck_assert_int_eq(mm_msg_end(msg, NULL, 0), MM_OK);
}

/* Keeps the request unanswered: the requester's timeout runs out. */
static void
on_hold(mm_msg_t *msg, void *ud)
{
    (void) ud;
    if (F.held == NULL)
        F.held = mm_msg_ref(msg);
}

/* ---- request <-> reply ---- */

START_TEST(request_gets_the_fixed_reply)
{
    struct child *srv = SPAWN("reply", F.service, F.route, "{\"a\":[1,2]}", "--count", "1");
    child_wait_for(srv, "mmctl: ready: serving", 10000);
    struct child *c = RUN("request", F.service, F.route, "\"hi\"");
    ck_assert_int_eq(c->status, 0);
    ck_assert_str_eq(c->buf[0], "{\"a\":[1,2]}\n");
    ck_assert_int_eq(child_end(srv, 10000), 0); /* --count 1: done after one */
    char line[128];
    snprintf(line, sizeof line, "[#1] %s \"hi\"\n", F.route);
    ck_assert_str_eq(srv->buf[0], line);
}
END_TEST

/* --echo, --json on both sides, the body read from stdin, the JSON codec on the wire. */
START_TEST(request_echo_json_stdin_codec)
{
    struct child *srv = SPAWN("--json", "reply", F.service, F.route, "--echo", "--count=2");
    child_wait_for(srv, "mmctl: ready:", 10000);
    struct child *c =
        RUN_IN("{\"k\": \"v\", \"n\": -3.5}", "request", F.service, F.route, "-", "--json");
    ck_assert_int_eq(c->status, 0);
    assert_has(c->buf[0], "\"kind\":\"answer\"");
    assert_has(c->buf[0], "\"body\":{\"k\":\"v\",\"n\":-3.5}");
    c = RUN("request", "--codec", "json", F.service, F.route, "[true,null,-7]");
    ck_assert_int_eq(c->status, 0);
    ck_assert_str_eq(c->buf[0], "[true,null,-7]\n");
    ck_assert_int_eq(child_end(srv, 10000), 0);
    assert_has(srv->buf[0], "\"n\":1,\"kind\":\"request\"");
    assert_has(srv->buf[0], "\"n\":2,\"kind\":\"request\"");
    assert_has(srv->buf[0], "\"body\":[true,null,-7]");
}
END_TEST

/* --raw: the argument's bytes travel as a bin and come back marked as such. */
START_TEST(request_raw_body_is_bin)
{
    struct child *srv = SPAWN("reply", F.service, F.route, "--echo", "--count", "1");
    child_wait_for(srv, "mmctl: ready:", 10000);
    struct child *c = RUN("request", F.service, F.route, "--raw", "not json");
    ck_assert_int_eq(c->status, 0);
    ck_assert_str_eq(c->buf[0], "{\"$bin\":\"bm90IGpzb24=\"}\n");
    ck_assert_int_eq(child_end(srv, 10000), 0);
}
END_TEST

START_TEST(request_prints_each_part_of_a_stream)
{
    serve(F.route, on_stream);
    struct child *c = RUN("request", F.service, F.route);
    ck_assert_int_eq(c->status, 0);
    ck_assert_str_eq(c->buf[0], "1\n2\n3\n");
}
END_TEST

START_TEST(remote_error_exits_2)
{
    serve(F.route, on_reject);
    struct child *c = RUN("request", F.service, F.route, "{}");
    ck_assert_int_eq(c->status, 2);
    ck_assert_str_eq(c->buf[0], "");
    assert_one_line(c);
    assert_has(c->buf[1], "remote error: notFound: no such thing");
}
END_TEST

START_TEST(timeout_exits_3)
{
    serve(F.route, on_hold);
    uint64_t t0 = mmt_now_ms();
    struct child *c = RUN("request", F.service, F.route, "--timeout", "300");
    ck_assert_int_eq(c->status, 3);
    ck_assert_uint_ge(mmt_now_ms() - t0, 300);
    assert_one_line(c);
    assert_has(c->buf[1], "timed out");
    ck_assert_ptr_nonnull(F.held); /* it did arrive: the answer, not the request, was missing */
}
END_TEST

START_TEST(no_route_exits_4)
{
    struct child *c = RUN("request", F.service, F.route, "1");
    ck_assert_int_eq(c->status, 4);
    assert_one_line(c);
    assert_has(c->buf[1], "no route");
}
END_TEST

/* ---- events and tasks ---- */

START_TEST(emit_reaches_listen)
{
    struct child *l = SPAWN("listen", F.service, "ev.#", "--count", "2", "--json");
    child_wait_for(l, "mmctl: ready: listening", 10000);
    struct child *e = RUN("emit", F.service, "ev.x", "{\"n\":7}", "--count", "2");
    ck_assert_int_eq(e->status, 0);
    assert_has(e->buf[0], "emitted 2 event(s)");
    ck_assert_int_eq(child_end(l, 10000), 0);
    char route[128];
    snprintf(route, sizeof route, "\"route\":\"%s.ev.x\"", F.service);
    const char *second = strchr(l->buf[0], '\n');
    ck_assert_ptr_nonnull(second);
    assert_has(second + 1, route); /* two lines, each with the route and the body */
    assert_has(second + 1, "\"body\":{\"n\":7}");
    assert_has(l->buf[0], "\"n\":1,\"kind\":\"event\"");
    assert_has(l->buf[0], "\"n\":2,\"kind\":\"event\"");
}
END_TEST

START_TEST(task_reaches_work)
{
    struct child *w = SPAWN("work", F.service, F.route, "--count", "3");
    child_wait_for(w, "mmctl: ready: working", 10000);
    struct child *t = RUN("task", F.service, F.route, "[1]", "--count", "3", "--json");
    ck_assert_int_eq(t->status, 0);
    assert_has(t->buf[0], "\"sent\":3,\"confirmed\":3");
    ck_assert_int_eq(child_end(w, 10000), 0);
    char want[256];
    snprintf(want, sizeof want, "[#1] %s [1]\n[#2] %s [1]\n[#3] %s [1]\n", F.route, F.route,
             F.route);
    ck_assert_str_eq(w->buf[0], want);
}
END_TEST

START_TEST(unroutable_task_exits_4)
{
    struct child *t = RUN("task", F.service, F.route, "{}");
    ck_assert_int_eq(t->status, 4);
    assert_one_line(t);
    assert_has(t->buf[1], "unroutable");
}
END_TEST

/* ---- stat, leader, status, join ---- */

START_TEST(stat_counts_consumers)
{
    struct child *w = SPAWN("work", F.service, F.route);
    child_wait_for(w, "mmctl: ready:", 10000);
    struct child *s = RUN("stat", F.service, F.route, "--json");
    ck_assert_int_eq(s->status, 0);
    assert_has(s->buf[0], "\"messages\":0,\"consumers\":1");
    s = RUN("stat", F.service, F.route);
    ck_assert_int_eq(s->status, 0);
    assert_has(s->buf[0], "0 message(s) ready, 1 consumer(s)");
    s = RUN("stat", F.service, "nobody-handles-this");
    ck_assert_int_eq(s->status, 4);
    assert_one_line(s);
    kill(w->pid, SIGINT); /* a clean stop: exit 0 */
    ck_assert_int_eq(child_end(w, 10000), 0);
}
END_TEST

/* The id in "mmctl: ready: joined SERVICE as ID". */
static void
joined_id(const struct child *c, char *id, size_t len)
{
    const char *p = strstr(c->buf[1], " as ");
    ck_assert_ptr_nonnull(p);
    snprintf(id, len, "%.36s", p + 4);
    ck_assert_uint_eq(strlen(id), 36);
}

START_TEST(join_leader_status)
{
    struct child *j = SPAWN("join", F.service);
    child_wait_for(j, "mmctl: ready: joined", 10000);
    char id[64], line[256];
    joined_id(j, id, sizeof id);
    struct child *c = RUN("leader", F.service, "--timeout", "10000");
    ck_assert_int_eq(c->status, 0);
    snprintf(line, sizeof line, "%s\n", id);
    ck_assert_str_eq(c->buf[0], line);
    c = RUN("status", F.service);
    ck_assert_int_eq(c->status, 0);
    assert_has(c->buf[0], "ID ");
    assert_has(c->buf[0], id);
    c = RUN("--json", "status", F.service);
    ck_assert_int_eq(c->status, 0);
    snprintf(line, sizeof line, "\"id\":\"%s\",\"ready\":true,\"leader\":true", id);
    assert_has(c->buf[0], line);
    assert_has(c->buf[0], "\"qos\":null"); /* join does not run QoS */
    kill(j->pid, SIGTERM);
    ck_assert_int_eq(child_end(j, 10000), 0);
    snprintf(line, sizeof line, "leader: %s\n", id);
    assert_has(j->buf[0], line);
}
END_TEST

/* A member running QoS: its level in the table's QOS column and in --json. */
START_TEST(status_shows_the_qos_of_a_member)
{
    mm_opts_t o = MM_OPTS_INIT;
    o.flags = MM_OPT_QOS;
    F.mm = mmt_instance(F.base, F.service, &o, NULL);
    mmt_connect(F.mm);
    mm_qos_state_t q;
    ck_assert_int_eq(mm_qos_state(F.mm, &q), MM_OK);
    struct child *c = RUN("status", F.service);
    ck_assert_int_eq(c->status, 0);
    assert_has(c->buf[0], "  QOS\n");
    char line[160];
    snprintf(line, sizeof line, "  %u\n", q.level);
    assert_has(c->buf[0], line);
    c = RUN("--json", "status", F.service);
    ck_assert_int_eq(c->status, 0);
    snprintf(line, sizeof line, "\"qos\":{\"level\":%u,\"pressure\":0}", q.level);
    assert_has(c->buf[0], line);
}
END_TEST

/* join --count 1 --json: ends by itself after the first change of leader, itself. */
START_TEST(join_count_ends_after_n_changes)
{
    struct child *j = RUN("join", F.service, "--count", "1", "--json");
    ck_assert_int_eq(j->status, 0);
    char id[64], line[256];
    joined_id(j, id, sizeof id);
    snprintf(line, sizeof line, "{\"event\":\"leader\",\"service\":\"%s\",\"leaderId\":\"%s\"",
             F.service, id);
    assert_has(j->buf[0], line);
}
END_TEST

START_TEST(no_leader_exits_3_no_member_exits_4)
{
    struct child *c = RUN("leader", F.service, "--timeout", "300");
    ck_assert_int_eq(c->status, 3);
    assert_one_line(c);
    assert_has(c->buf[1], "no leader");
    c = RUN("status", F.service);
    ck_assert_int_eq(c->status, 4);
    assert_one_line(c);
    assert_has(c->buf[1], "no instance");
}
END_TEST

/* ---- topics ---- */

/* A fresh topic (and consumer name) for the test, declared with mmctl. */
static void
declare_topic(void)
{
    mmt_unique("mmctl-topic", F.topic, sizeof F.topic);
    mmt_unique("mmctl-reader", F.consumer, sizeof F.consumer);
    struct child *c = RUN("topic-declare", F.topic, "--max-age", "3600");
    ck_assert_msg(c->status == 0, "exit %d, stderr: %s", c->status, c->buf[1]);
    char line[128];
    snprintf(line, sizeof line, "declared %s\n", F.topic);
    ck_assert_str_eq(c->buf[0], line);
}

/* topic-publish TYPE BODY [--count N], asserted. */
static void
publish(const char *type, const char *body, const char *count)
{
    struct child *c = RUN("topic-publish", F.topic, type, body, "--count", count);
    ck_assert_msg(c->status == 0, "exit %d, stderr: %s", c->status, c->buf[1]);
    char line[192];
    snprintf(line, sizeof line, "published %s record(s) of type %s to %s\n", count, type, F.topic);
    ck_assert_str_eq(c->buf[0], line);
}

/* topic-read with `from` (NULL: the stored cursor) and --count, asserted to end well. */
static struct child *
read_topic(const char *from, const char *count)
{
    struct child *c = from != NULL
                          ? RUN("topic-read", F.topic, F.consumer, "--from", from, "--count", count)
                          : RUN("topic-read", F.topic, F.consumer, "--count", count);
    ck_assert_msg(c->status == 0, "exit %d, stderr: %s", c->status, c->buf[1]);
    char ready[192];
    snprintf(ready, sizeof ready, "mmctl: ready: reading %s as %s\n", F.topic, F.consumer);
    assert_has(c->buf[1], ready);
    return c;
}

/* Records in order with their offsets and types; a second read of the same consumer
 * without --from resumes after its stored cursor: exactly the records added since. */
START_TEST(topic_read_in_order_then_resume_after_cursor)
{
    declare_topic();
    struct child *c = RUN("topic-declare", F.topic, "--max-age", "60");
    ck_assert_int_eq(c->status, 1); /* the broker keeps the first retention: it got it */
    assert_one_line(c);
    assert_has(c->buf[1], "x-max-age");
    publish("t.a", "1", "2");
    publish("t.b", "\"x\"", "1");
    c = read_topic("first", "3");
    ck_assert_str_eq(c->buf[0], "[0] t.a 1\n[1] t.a 1\n[2] t.b \"x\"\n");
    publish("t.c", "{\"n\":3}", "1");
    publish("t.d", "[4]", "1");
    c = read_topic(NULL, "2");
    ck_assert_str_eq(c->buf[0], "[3] t.c {\"n\":3}\n[4] t.d [4]\n");
    c = RUN("topic-delete", F.topic);
    ck_assert_int_eq(c->status, 0);
    char line[128];
    snprintf(line, sizeof line, "deleted %s\n", F.topic);
    ck_assert_str_eq(c->buf[0], line);
    c = RUN("topic-delete", F.topic);
    ck_assert_int_eq(c->status, 4); /* it is gone */
    assert_one_line(c);
}
END_TEST

/* --count N ends the read at the Nth record although more were delivered (prefetch):
 * none past it is settled, so the next read starts right after it. A consumer
 * without a cursor starts at the first record; --from an offset and next. */
START_TEST(topic_read_count_leaves_the_rest_for_the_next_read)
{
    declare_topic();
    publish("t.e", "7", "5");
    struct child *c = read_topic(NULL, "2");
    ck_assert_str_eq(c->buf[0], "[0] t.e 7\n[1] t.e 7\n");
    c = read_topic(NULL, "3");
    ck_assert_str_eq(c->buf[0], "[2] t.e 7\n[3] t.e 7\n[4] t.e 7\n");
    c = read_topic("3", "1"); /* an offset: from there, whatever the cursor says */
    ck_assert_str_eq(c->buf[0], "[3] t.e 7\n");
    c = SPAWN("topic-read", F.topic, F.consumer, "--from", "next", "--count", "1");
    child_wait_for(c, "mmctl: ready: reading", 10000);
    publish("t.n", "8", "1");
    ck_assert_int_eq(child_end(c, 10000), 0);
    ck_assert_str_eq(c->buf[0], "[5] t.n 8\n"); /* next: only what came after it started */
}
END_TEST

/* A second reader of the consumer waits ("standby") while the first reads, and takes
 * over when the first stops. */
START_TEST(topic_read_standby_takes_over)
{
    declare_topic();
    struct child *a = SPAWN("topic-read", F.topic, F.consumer);
    child_wait_for(a, "mmctl: ready: reading", 10000);
    struct child *b = SPAWN("topic-read", F.topic, F.consumer);
    child_wait_for(b, "mmctl: standby: ", 10000);
    ck_assert_ptr_null(strstr(b->buf[1], "mmctl: ready:"));
    kill(a->pid, SIGINT);
    ck_assert_int_eq(child_end(a, 10000), 0);
    child_wait_for(b, "mmctl: ready: reading", 10000);
    publish("t.f", "true", "1");
    child_wait_in(b, 0, "[0] t.f true\n", 10000); /* it reads */
    kill(b->pid, SIGTERM);
    ck_assert_int_eq(child_end(b, 10000), 0);
    ck_assert_str_eq(a->buf[0], ""); /* the first read nothing: there was nothing */
    ck_assert_str_eq(b->buf[0], "[0] t.f true\n");
}
END_TEST

/* The one JSON object on stdout, parsed (asserted). */
static json_t *
json_out(const struct child *c)
{
    json_error_t e;
    json_t *j = json_loads(c->buf[0], 0, &e); /* one value and a newline: nothing more */
    ck_assert_msg(json_is_object(j), "not a JSON object: '%s' (%s)", c->buf[0], e.text);
    return j;
}

static void
assert_json_str(json_t *j, const char *key, const char *want)
{
    const char *got = json_string_value(json_object_get(j, key));
    ck_assert_msg(got != NULL && strcmp(got, want) == 0, "%s: '%s', not '%s'", key,
                  got != NULL ? got : "(none)", want);
}

/* --json on every topic verb: objects that parse, with the fields the usage names. */
START_TEST(topic_json_output_parses)
{
    mmt_unique("mmctl-topic", F.topic, sizeof F.topic);
    mmt_unique("mmctl-reader", F.consumer, sizeof F.consumer);
    struct child *c = RUN("--json", "topic-declare", F.topic, "--max-bytes", "1000000");
    ck_assert_int_eq(c->status, 0);
    json_t *j = json_out(c);
    assert_json_str(j, "topic", F.topic);
    ck_assert(json_is_true(json_object_get(j, "declared")));
    ck_assert(json_is_null(json_object_get(j, "maxAgeSeconds")));
    ck_assert_int_eq(json_integer_value(json_object_get(j, "maxBytes")), 1000000);
    json_decref(j);
    c = RUN("topic-declare", F.topic, "--max-bytes", "2000000");
    ck_assert_int_eq(c->status, 1); /* the broker keeps the first retention: it got it */
    assert_has(c->buf[1], "x-max-length-bytes");
    uint64_t t0 = (uint64_t) time(NULL);
    c = RUN("topic-publish", F.topic, "t.j", "{\"k\":[1,\"v\"]}", "--json", "--count", "2");
    ck_assert_int_eq(c->status, 0);
    j = json_out(c);
    assert_json_str(j, "type", "t.j");
    ck_assert_int_eq(json_integer_value(json_object_get(j, "sent")), 2);
    ck_assert_int_eq(json_integer_value(json_object_get(j, "confirmed")), 2);
    json_decref(j);
    c = read_topic("first", "1");
    ck_assert_str_eq(c->buf[0], "[0] t.j {\"k\":[1,\"v\"]}\n");
    c = RUN("topic-read", F.topic, F.consumer, "--json", "--count", "1");
    ck_assert_int_eq(c->status, 0);
    j = json_out(c);
    ck_assert_int_eq(json_integer_value(json_object_get(j, "offset")), 1);
    assert_json_str(j, "type", "t.j");
    ck_assert_uint_eq(strlen(json_string_value(json_object_get(j, "id"))), 36); /* a UUID */
    const char *sender = json_string_value(json_object_get(j, "sender"));
    ck_assert_msg(sender != NULL && strncmp(sender, "mmctl@", 6) == 0 && strlen(sender) == 42,
                  "sender: %s", sender); /* the service and the instance's UUID */
    json_int_t ts = json_integer_value(json_object_get(j, "timestamp"));
    ck_assert_int_ge(ts, (json_int_t) (t0 - 1) * 1000);
    ck_assert_int_le(ts, (json_int_t) (time(NULL) + 1) * 1000);
    ck_assert(json_is_null(json_object_get(j, "causationId"))); /* sent outside a handler */
    ck_assert(json_is_null(json_object_get(j, "traceparent")));
    ck_assert(json_is_object(json_object_get(j, "headers")));
    json_t *want = json_pack("{s:[i,s]}", "k", 1, "v");
    ck_assert(json_equal(json_object_get(j, "body"), want));
    json_decref(want);
    json_decref(j);
    c = RUN("--json", "topic-delete", F.topic);
    ck_assert_int_eq(c->status, 0);
    j = json_out(c);
    assert_json_str(j, "topic", F.topic);
    ck_assert(json_is_true(json_object_get(j, "deleted")));
    json_decref(j);
}
END_TEST

/* A topic nobody declared: publish, read and delete exit 4 with one line. */
START_TEST(topic_unknown_exits_4)
{
    mmt_unique("mmctl-nosuch", F.topic, sizeof F.topic);
    mmt_unique("mmctl-reader", F.consumer, sizeof F.consumer);
    struct child *c = RUN("topic-publish", F.topic, "t.x", "1");
    ck_assert_int_eq(c->status, 4);
    ck_assert_str_eq(c->buf[0], "");
    assert_one_line(c);
    assert_has(c->buf[1], "no topic");
    c = RUN("topic-read", F.topic, F.consumer, "--count", "1");
    ck_assert_int_eq(c->status, 4);
    assert_one_line(c);
    assert_has(c->buf[1], "no topic");
    c = RUN("topic-delete", F.topic);
    ck_assert_int_eq(c->status, 4);
    assert_one_line(c);
}
END_TEST

/* ---- mistakes ---- */

START_TEST(usage_errors_exit_64)
{
    static const char *const cases[][5] = {
        {"bogus", NULL},
        {"request", "svc", NULL},
        {"request", "a", "b", "--bogus", NULL},
        {"listen", "a", "b", "--echo", NULL},
        {"request", "a", "b", "c", "d"},
        {"reply", "a", "b", "--count", "x"},
        {"--codec", "xml", "request", "a", "b"},
        {"topic-read", "t", "c", "--from", "bogus"},
        {"topic-read", "t", "c", "--from", "-1"},
        {"topic-read", "t", "c", "--from=@x"},
        {"topic-declare", "t", "--max-age", "0"},
        {"topic-declare", "t", "--from", "first"},
        {"topic-publish", "t", "x", "--max-bytes", "9"},
        {"topic-delete", "t", "--count", "1"},
    };
    for (size_t i = 0; i < sizeof cases / sizeof cases[0]; i++) {
        const char *args[6] = {0};
        memcpy(args, cases[i], sizeof cases[i]);
        struct child *c = run_(spawn_in(NULL, args));
        ck_assert_msg(c->status == 64, "case %zu: exit %d", i, c->status);
        assert_one_line(c);
        F.n--; /* reuse the slot: the child is over */
    }
    struct child *c = run_(spawn_in(NULL, (const char *const[]){NULL}));
    ck_assert_int_eq(c->status, 64); /* no verb: the usage on stderr */
    assert_has(c->buf[1], "Exit codes");
    c = RUN("--help");
    ck_assert_int_eq(c->status, 0);
    assert_has(c->buf[0], "64 usage");
    c = RUN("work", "--help");
    ck_assert_int_eq(c->status, 0);
    assert_has(c->buf[0], "usage: mmctl work SERVICE ROUTE");
}
END_TEST

/* The benchmark's quick run: both sides of one scenario, then the table. */
START_TEST(bench_runs_a_scenario_and_prints_the_table)
{
    struct child *c = run_(SPAWN("bench", "rpc16", "--count", "1"));
    ck_assert_msg(c->status == 0, "exit %d, stderr: %s", c->status, c->buf[1]);
    assert_has(c->buf[0], "| RPC, 16 in flight | raw rabbitmq-c | micromsg |");
    assert_has(c->buf[0], "largest peak RSS of a micromsg process");
    ck_assert_ptr_null(strstr(c->buf[0], "events end to end")); /* only the one asked for */
    F.n--;
    c = RUN("bench", "nosuch");
    ck_assert_int_eq(c->status, 64);
    assert_one_line(c);
}
END_TEST

START_TEST(bad_json_exits_65)
{
    struct child *c = RUN("request", F.service, F.route, "{bad");
    ck_assert_int_eq(c->status, 65);
    assert_one_line(c);
    assert_has(c->buf[1], "invalid JSON");
    c = RUN_IN("[1,", "emit", F.service, F.route, "-");
    ck_assert_int_eq(c->status, 65);
    assert_one_line(c);
}
END_TEST

/* A loopback port nobody listens on: bound, then closed. */
static int
closed_port(void)
{
    int s = socket(AF_INET, SOCK_STREAM, 0);
    struct sockaddr_in a = {.sin_family = AF_INET, .sin_addr.s_addr = htonl(INADDR_LOOPBACK)};
    socklen_t len = sizeof a;
    ck_assert_int_eq(bind(s, (struct sockaddr *) &a, sizeof a), 0);
    ck_assert_int_eq(getsockname(s, (struct sockaddr *) &a, &len), 0);
    close(s);
    return ntohs(a.sin_port);
}

START_TEST(unreachable_broker_exits_69)
{
    char uri[128];
    snprintf(uri, sizeof uri, "amqp://guest:guest@127.0.0.1:%d/", closed_port());
    struct child *c = RUN("--uri", uri, "request", F.service, F.route);
    ck_assert_int_eq(c->status, 69);
    assert_one_line(c);
    assert_has(c->buf[1], "cannot connect");
    ck_assert_ptr_null(strstr(c->buf[1], "guest:guest")); /* no password in the line */
    c = RUN("listen", F.service, F.route, "--uri", uri);
    ck_assert_int_eq(c->status, 69);
}
END_TEST

static Suite *
suite(void)
{
    Suite *s = suite_create("mmctl");
    TCase *tc = mmt_tcase(s, "rpc", setup, teardown, 60);
    tcase_add_test(tc, request_gets_the_fixed_reply);
    tcase_add_test(tc, request_echo_json_stdin_codec);
    tcase_add_test(tc, request_raw_body_is_bin);
    tcase_add_test(tc, request_prints_each_part_of_a_stream);
    tcase_add_test(tc, remote_error_exits_2);
    tcase_add_test(tc, timeout_exits_3);
    tcase_add_test(tc, no_route_exits_4);
    tc = mmt_tcase(s, "pubsub", setup, teardown, 60);
    tcase_add_test(tc, emit_reaches_listen);
    tcase_add_test(tc, task_reaches_work);
    tcase_add_test(tc, unroutable_task_exits_4);
    tc = mmt_tcase(s, "admin", setup, teardown, 60);
    tcase_add_test(tc, stat_counts_consumers);
    tcase_add_test(tc, join_leader_status);
    tcase_add_test(tc, join_count_ends_after_n_changes);
    tcase_add_test(tc, status_shows_the_qos_of_a_member);
    tcase_add_test(tc, no_leader_exits_3_no_member_exits_4);
    tc = mmt_tcase(s, "topics", setup, teardown, 60);
    tcase_add_test(tc, topic_read_in_order_then_resume_after_cursor);
    tcase_add_test(tc, topic_read_count_leaves_the_rest_for_the_next_read);
    tcase_add_test(tc, topic_read_standby_takes_over);
    tcase_add_test(tc, topic_json_output_parses);
    tcase_add_test(tc, topic_unknown_exits_4);
    tc = mmt_tcase(s, "mistakes", setup, teardown, 60);
    tcase_add_test(tc, usage_errors_exit_64);
    tcase_add_test(tc, bad_json_exits_65);
    tcase_add_test(tc, bench_runs_a_scenario_and_prints_the_table);
    tcase_add_test(tc, unreachable_broker_exits_69);
    return s;
}

int
main(void)
{
    return mmt_run(suite());
}
