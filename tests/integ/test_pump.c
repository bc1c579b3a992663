/* Integration: the frame pump under the rabbitmq-c trap (../shared/RABBITMQ-C.md
 * §2): deliveries on one channel interleaved with synchronous methods on other
 * channels (and basic.qos on the consuming one), 50,000 messages from a separate
 * publisher process. None may be lost, duplicated, or left stuck in
 * rabbitmq-c's buffers where the fd would never wake us again. */
#include <check.h>
#include <event2/event.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/wait.h>
#include <unistd.h>

#include <amqp_tcp_socket.h>

#include "internal.h"
#include "mmt.h"

#define N_MESSAGES 50000
#define PREFETCH 500

struct run {
    mm_t *mm;
    char queue[64], queue2[64];
    uint16_t ch_consume, ch_declare, ch_confirm, ch_late;
    unsigned char seen[N_MESSAGES];
    int received, duplicates, bad_bodies;
    int ticks, ticks_mid, rpc_failures;
    bool all_received;
    struct event *tick;
};

/* ---- the publisher: plain rabbitmq-c in a child process ---- */

static void
die_child(const char *what)
{
    fprintf(stderr, "publisher: %s\n", what);
    _exit(2);
}

static void
publish_all(const char *uri, const char *queue)
{
    char buf[512];
    struct amqp_connection_info ci;
    snprintf(buf, sizeof buf, "%s", uri);
    if (amqp_parse_url(buf, &ci) != AMQP_STATUS_OK)
        die_child("bad uri");
    amqp_connection_state_t c = amqp_new_connection();
    amqp_socket_t *s = amqp_tcp_socket_new(c);
    if (amqp_socket_open(s, ci.host, ci.port) != AMQP_STATUS_OK)
        die_child("connect");
    if (amqp_login(c, ci.vhost, 0, 131072, 0, AMQP_SASL_METHOD_PLAIN, ci.user, ci.password)
            .reply_type != AMQP_RESPONSE_NORMAL)
        die_child("login");
    amqp_channel_open(c, 1);
    for (uint32_t i = 0; i < N_MESSAGES; i++) {
        amqp_bytes_t body = {sizeof i, &i};
        if (amqp_basic_publish(c, 1, amqp_empty_bytes, amqp_cstring_bytes(queue), 0, 0, NULL,
                               body) != AMQP_STATUS_OK)
            die_child("publish");
    }
    amqp_connection_close(c, AMQP_REPLY_SUCCESS);
    amqp_destroy_connection(c);
    _exit(0);
}

/* ---- the consumer: mm's pump with the internal API ---- */

static void
on_content(mm_t *mm, const mmi_content_t *c, void *ud)
{
    struct run *r = ud;
    uint32_t seq;
    if (c->body.len != sizeof seq) {
        r->bad_bodies++;
    } else {
        memcpy(&seq, c->body.bytes, sizeof seq);
        if (seq >= N_MESSAGES || r->seen[seq])
            r->duplicates++;
        else
            r->seen[seq] = 1;
    }
    r->received++;
    ck_assert_int_eq(mmi_basic_ack(mm, c->channel, c->delivery_tag, false), MM_OK);
    if (r->received == N_MESSAGES)
        r->all_received = true;
}

static void
open_late_consumer(struct run *r)
{
    const mmi_chan_ops_t ops = {.on_content = on_content};
    if (mmi_chan_open(r->mm, &ops, r, &r->ch_late) != MM_OK ||
        mmi_queue_declare(r->mm, r->ch_late, r->queue2, MMI_Q_AUTO_DELETE, NULL, NULL) != MM_OK ||
        mmi_basic_consume(r->mm, r->ch_late, r->queue2, false, false, NULL, 0) != MM_OK)
        r->rpc_failures++;
}

/* Every 2 ms: synchronous methods while deliveries stream in. */
static void
on_tick(evutil_socket_t fd, short what, void *arg)
{
    struct run *r = arg;
    (void) fd;
    (void) what;
    r->ticks++;
    if (r->received > 0 && r->received < N_MESSAGES)
        r->ticks_mid++;
    if (mmi_queue_declare(r->mm, r->ch_declare, r->queue, MMI_Q_PASSIVE, NULL, NULL) != MM_OK)
        r->rpc_failures++;
    if (r->ticks % 10 == 0 && mmi_basic_qos(r->mm, r->ch_consume, PREFETCH) != MM_OK)
        r->rpc_failures++;
    if (r->ticks == 100 && mmi_chan_open(r->mm, NULL, NULL, &r->ch_confirm) != MM_OK)
        r->rpc_failures++;
    if (r->ticks == 200)
        open_late_consumer(r);
}

static pid_t
start_publisher(const struct run *r)
{
    pid_t pid = fork();
    ck_assert_int_ge(pid, 0);
    if (pid == 0)
        publish_all(mmt_uri(), r->queue);
    return pid;
}

static void
setup_consumer(struct run *r)
{
    /* No heartbeat: its periodic drain would rescue a stalled pump after 15 s
     * and hide the very bug this test exists to catch. */
    char uri[512];
    snprintf(uri, sizeof uri, "%s?heartbeat=0", mmt_uri());
    r->mm = mm_new("t-pump", NULL);
    ck_assert_int_eq(mm_connect(r->mm, uri), MM_OK);
    ck_assert_int_eq(mm_heartbeat(r->mm), 0);
    mmt_unique("pump", r->queue, sizeof r->queue);
    mmt_unique("pump-late", r->queue2, sizeof r->queue2);
    const mmi_chan_ops_t ops = {.on_content = on_content};
    ck_assert_int_eq(mmi_chan_open(r->mm, &ops, r, &r->ch_consume), MM_OK);
    ck_assert_int_eq(mmi_chan_open(r->mm, NULL, NULL, &r->ch_declare), MM_OK);
    ck_assert_int_eq(
        mmi_queue_declare(r->mm, r->ch_consume, r->queue, MMI_Q_AUTO_DELETE, NULL, NULL), MM_OK);
    ck_assert_int_eq(mmi_basic_qos(r->mm, r->ch_consume, PREFETCH), MM_OK);
    ck_assert_int_eq(mmi_basic_consume(r->mm, r->ch_consume, r->queue, false, false, NULL, 0),
                     MM_OK);
    r->tick = event_new(r->mm->base, -1, EV_PERSIST, on_tick, r);
    event_add(r->tick, &(struct timeval){0, 2000});
}

START_TEST(deliveries_interleaved_with_sync_methods_none_lost_none_stuck)
{
    static struct run r; /* 50 KB of flags: not on the stack */
    memset(&r, 0, sizeof r);
    setup_consumer(&r);
    pid_t pub = start_publisher(&r);
    bool ok = mmt_wait(r.mm->base, &r.all_received, mmt_scale(60000));
    int status = 0;
    waitpid(pub, &status, 0);
    ck_assert_msg(WIFEXITED(status) && WEXITSTATUS(status) == 0, "publisher failed");
    ck_assert_msg(ok, "stalled: %d of %d received after %d ticks (frames queued %d, buffered %d)",
                  r.received, N_MESSAGES, r.ticks, amqp_frames_enqueued(r.mm->conn),
                  amqp_data_in_buffer(r.mm->conn));
    event_free(r.tick);
    ck_assert_int_eq(r.duplicates, 0);
    ck_assert_int_eq(r.bad_bodies, 0);
    for (int i = 0; i < N_MESSAGES; i++)
        ck_assert_msg(r.seen[i], "message %d never arrived", i);
    ck_assert_int_eq(r.rpc_failures, 0);
    ck_assert_int_ge(r.ticks_mid, 10); /* the methods really did interleave with deliveries */
    ck_assert(mm_is_connected(r.mm));
    /* Nothing left behind where the fd would not announce it. */
    ck_assert(!amqp_frames_enqueued(r.mm->conn));
    ck_assert_int_eq((int) r.mm->bl_len, 0);
    uint32_t left = 1;
    ck_assert_int_eq(mmi_queue_declare(r.mm, r.ch_declare, r.queue, MMI_Q_PASSIVE, NULL, &left),
                     MM_OK);
    ck_assert_uint_eq(left, 0);
    mm_free(r.mm);
}
END_TEST

int
main(void)
{
    Suite *s = suite_create("pump");
    TCase *tc = tcase_create("pump");
    tcase_set_timeout(tc, 240);
    tcase_add_test(tc, deliveries_interleaved_with_sync_methods_none_lost_none_stuck);
    suite_add_tcase(s, tc);
    return mmt_run(s);
}
