/* Integration: connecting, retrying, refusing, closing and losing a connection,
 * against the harness broker ($MM_TEST_URI). */
#include <arpa/inet.h>
#include <check.h>
#include <event2/event.h>
#include <netinet/in.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <unistd.h>

#include "internal.h"
#include "mmt.h"
#include "mmt_fx.h"

/* The harness URI with the user info, vhost or scheme replaced. */
static const char *
uri_with(char *buf, size_t len, const char *scheme, const char *userinfo, const char *vhost)
{
    const char *u = mmt_uri();
    const char *host = strchr(u, '@');
    host = host ? host + 1 : strstr(u, "://") + 3;
    size_t hlen = strcspn(host, "/?");
    snprintf(buf, len, "%s://%s@%.*s/%s", scheme, userinfo, (int) hlen, host, vhost);
    return buf;
}

/* A loopback port with nothing listening (bound, then closed). */
static int
closed_port(void)
{
    int fd = socket(AF_INET, SOCK_STREAM, 0);
    struct sockaddr_in a = {.sin_family = AF_INET, .sin_addr.s_addr = htonl(INADDR_LOOPBACK)};
    socklen_t len = sizeof a;
    ck_assert_int_eq(bind(fd, (struct sockaddr *) &a, sizeof a), 0);
    ck_assert_int_eq(getsockname(fd, (struct sockaddr *) &a, &len), 0);
    close(fd);
    return ntohs(a.sin_port);
}

struct events {
    int connected, disconnected, channel_errors;
    int last_code;
    char last_text[256];
    bool got_disconnected, got_connected, got_channel_error;
    bool free_in_callback;
};

static void
on_event(mm_t *mm, const mm_event_t *ev, void *ud)
{
    struct events *e = ud;
    e->last_code = ev->code;
    snprintf(e->last_text, sizeof e->last_text, "%s", ev->text);
    if (ev->type == MM_EV_CONNECTED) {
        e->connected++;
        e->got_connected = true;
        if (e->free_in_callback)
            mm_free(mm);
    } else if (ev->type == MM_EV_DISCONNECTED) {
        e->disconnected++;
        e->got_disconnected = true;
    } else if (ev->type == MM_EV_CHANNEL_ERROR) {
        e->channel_errors++;
        e->got_channel_error = true;
    }
}

START_TEST(connect_and_close)
{
    mm_t *mm = mm_new("t-connect", NULL);
    ck_assert_int_eq(mm_connect(mm, mmt_uri()), MM_OK);
    ck_assert(mm_is_connected(mm));
    ck_assert_int_eq(mm_heartbeat(mm), 30);
    ck_assert_ptr_nonnull(strstr(mm_uri(mm), ":***@"));
    ck_assert_int_eq(mm_connect(mm, mmt_uri()), MM_ESTATE);
    ck_assert_int_eq(mm_close(mm), MM_OK);
    ck_assert(!mm_is_connected(mm));
    ck_assert_int_eq(mm_close(mm), MM_ENOTCONN);
    ck_assert_int_eq(mm_connect(mm, mmt_uri()), MM_OK); /* again after a close */
    ck_assert(mm_is_connected(mm));
    mm_free(mm);
}
END_TEST

START_TEST(uri_heartbeat_parameter_is_negotiated)
{
    char uri[512];
    snprintf(uri, sizeof uri, "%s?heartbeat=7", mmt_uri());
    mm_t *mm = mm_new("t-connect", NULL);
    ck_assert_int_eq(mm_connect(mm, uri), MM_OK);
    ck_assert_int_eq(mm_heartbeat(mm), 7);
    mm_free(mm);
}
END_TEST

START_TEST(connected_event_arrives_on_the_loop)
{
    struct events e = {0};
    mm_opts_t o = MM_OPTS_INIT;
    o.on_event = on_event;
    o.event_ud = &e;
    o.base = event_base_new();
    mm_t *mm = mm_new("t-connect", &o);
    ck_assert_int_eq(mm_connect(mm, mmt_uri()), MM_OK);
    ck_assert_int_eq(e.connected, 0); /* never from inside the call */
    MMT_WAIT(o.base, e.got_connected, mmt_scale(5000));
    ck_assert_int_eq(e.connected, 1);
    mm_free(mm);
    event_base_free(o.base);
}
END_TEST

struct retry_log {
    unsigned attempts;
    int first_error, last_error;
    uint64_t last_elapsed;
    unsigned stop_at; /* 0: follow the default strategy */
    uint32_t budget;
};

static int64_t
logging_retry(int error, unsigned attempts, uint64_t elapsed_ms, void *ud)
{
    struct retry_log *r = ud;
    if (r->attempts == 0)
        r->first_error = error;
    r->attempts = attempts;
    r->last_error = error;
    r->last_elapsed = elapsed_ms;
    if (r->stop_at != 0 && attempts >= r->stop_at)
        return -1;
    return mm_retry_default(error, attempts, elapsed_ms, (void *) (uintptr_t) r->budget);
}

START_TEST(closed_port_fails_after_the_retry_budget)
{
    struct retry_log r = {.budget = 700};
    mm_opts_t o = MM_OPTS_INIT;
    o.retry = logging_retry;
    o.retry_ud = &r;
    mm_t *mm = mm_new("t-connect", &o);
    char uri[128];
    snprintf(uri, sizeof uri, "amqp://guest:secretpw@127.0.0.1:%d", closed_port());
    uint64_t t0 = mmi_now_ms();
    ck_assert_int_eq(mm_connect(mm, uri), MM_EUNREACHABLE);
    uint64_t took = mmi_now_ms() - t0;
    ck_assert_uint_gt(r.attempts, 1);
    ck_assert_uint_ge(r.last_elapsed, r.budget);
    ck_assert_uint_ge(took, r.budget);
    ck_assert_int_eq(r.first_error, MM_EUNREACHABLE);
    ck_assert_ptr_nonnull(strstr(mm_last_error(mm), "127.0.0.1"));
    ck_assert_ptr_nonnull(strstr(mm_last_error(mm), "attempts"));
    ck_assert_ptr_null(strstr(mm_last_error(mm), "secretpw"));
    mm_free(mm);
}
END_TEST

START_TEST(default_strategy_uses_the_configured_budget)
{
    mm_opts_t o = MM_OPTS_INIT;
    o.retry_budget_ms = 500;
    mm_t *mm = mm_new("t-connect", &o);
    char uri[128];
    snprintf(uri, sizeof uri, "amqp://127.0.0.1:%d", closed_port());
    uint64_t t0 = mmi_now_ms();
    ck_assert_int_eq(mm_connect(mm, uri), MM_EUNREACHABLE);
    uint64_t took = mmi_now_ms() - t0;
    ck_assert_uint_ge(took, 500);
    ck_assert_uint_lt(took, 5000);
    mm_free(mm);
}
END_TEST

START_TEST(custom_strategy_sees_error_and_stops_early)
{
    struct retry_log r = {.stop_at = 2, .budget = 60000};
    mm_opts_t o = MM_OPTS_INIT;
    o.retry = logging_retry;
    o.retry_ud = &r;
    mm_t *mm = mm_new("t-connect", &o);
    char uri[128];
    snprintf(uri, sizeof uri, "amqp://127.0.0.1:%d", closed_port());
    uint64_t t0 = mmi_now_ms();
    ck_assert_int_eq(mm_connect(mm, uri), MM_EUNREACHABLE);
    ck_assert_uint_eq(r.attempts, 2);
    ck_assert_int_eq(r.last_error, MM_EUNREACHABLE);
    ck_assert_uint_lt(mmi_now_ms() - t0, 5000); /* stopped long before the 60 s budget */
    ck_assert_ptr_nonnull(strstr(mm_last_error(mm), "2 attempts"));
    mm_free(mm);
}
END_TEST

START_TEST(wrong_password_gives_EAUTH_without_retry)
{
    struct retry_log r = {.budget = 30000};
    mm_opts_t o = MM_OPTS_INIT;
    o.retry = logging_retry;
    o.retry_ud = &r;
    mm_t *mm = mm_new("t-connect", &o);
    char uri[512];
    ck_assert_int_eq(mm_connect(mm, uri_with(uri, sizeof uri, "amqp", "guest:WrongPass", "%2F")),
                     MM_EAUTH);
    ck_assert_uint_eq(r.attempts, 1);
    ck_assert_int_eq(r.last_error, MM_EAUTH);
    ck_assert_ptr_nonnull(strstr(mm_last_error(mm), "ACCESS_REFUSED"));
    ck_assert_ptr_null(strstr(mm_last_error(mm), "WrongPass"));
    mm_free(mm);
}
END_TEST

START_TEST(unknown_vhost_gives_EVHOST)
{
    mm_t *mm = mm_new("t-connect", NULL);
    char uri[512];
    ck_assert_int_eq(mm_connect(mm, uri_with(uri, sizeof uri, "amqp", "guest:guest", "nope")),
                     MM_EVHOST);
    ck_assert_ptr_nonnull(strstr(mm_last_error(mm), "nope"));
    mm_free(mm);
}
END_TEST

START_TEST(tls_to_a_plain_port_gives_ETLS)
{
    mm_t *mm = mm_new("t-connect", NULL);
    char uri[512];
    ck_assert_int_eq(
        mm_connect(mm, uri_with(uri, sizeof uri, "amqps", "guest:guest", "?verify=verify_none")),
        MM_ETLS);
    mm_free(mm);
}
END_TEST

static const char *
tls_env(const char *name)
{
    const char *v = getenv(name);
    ck_assert_msg(v != NULL, "%s is not set: run through tests/harness/broker.sh", name);
    return v;
}

START_TEST(tls_connects_and_verifies_the_broker)
{
    char uri[1024];
    snprintf(uri, sizeof uri, "%s?cacertfile=%s", tls_env("MM_TEST_TLS_URI"),
             tls_env("MM_TEST_TLS_CA"));
    mm_t *mm = mm_new("t-connect", NULL);
    ck_assert_msg(mm_connect(mm, uri) == MM_OK, "%s", mm_last_error(mm));
    ck_assert_int_eq(strncmp(mm_uri(mm), "amqps://", 8), 0);
    uint16_t ch;
    ck_assert_int_eq(mmi_chan_open(mm, NULL, NULL, &ch), MM_OK); /* frames flow over TLS */
    ck_assert_int_eq(mm_close(mm), MM_OK);
    mm_free(mm);
}
END_TEST

/* Over TLS rabbitmq-c writes (our own writer needs the plain socket), and a
 * confirmed send's properties, kept encoded, are decoded again for it. */
struct tls_seen {
    bool task, event, sent;
    int sent_status;
};

static void
on_tls_route(mm_msg_t *msg, void *ud)
{
    struct tls_seen *s = ud;
    size_t len;
    const void *body = mm_msg_body_raw(msg, &len);
    if (mm_msg_kind_of(msg) == MM_MSG_TASK) {
        s->task = true;
        ck_assert_int_eq(mm_msg_ack(msg), MM_OK);
    } else {
        ck_assert_int_eq(mm_msg_reply(msg, body, len), MM_OK);
    }
}

static void
on_tls_event(mm_msg_t *msg, void *ud)
{
    (void) msg;
    ((struct tls_seen *) ud)->event = true;
}

static void
on_tls_sent(mm_t *mm, int status, void *ud)
{
    (void) mm;
    struct tls_seen *s = ud;
    s->sent_status = status;
    s->sent = true;
}

START_TEST(tls_carries_requests_confirmed_tasks_and_events)
{
    char uri[1024], svc[64];
    snprintf(uri, sizeof uri, "%s?cacertfile=%s", tls_env("MM_TEST_TLS_URI"),
             tls_env("MM_TEST_TLS_CA"));
    struct event_base *base = mmt_base_new();
    mmt_unique("t-tls", svc, sizeof svc);
    mm_t *a = mmt_instance(base, svc, NULL, NULL),
         *b = mmt_instance(base, "t-tls-client", NULL, NULL);
    struct tls_seen seen = {0};
    mmt_handle(a, "echo", on_tls_route, &seen, 0);
    ck_assert_int_eq(mm_listen(a, NULL, "news", on_tls_event, &seen, NULL, NULL), MM_OK);
    ck_assert_msg(mm_connect(a, uri) == MM_OK, "%s", mm_last_error(a));
    ck_assert_msg(mm_connect(b, uri) == MM_OK, "%s", mm_last_error(b));
    ck_assert_int_lt(b->wr_fd, 0); /* rabbitmq-c's TLS path, not our writer */
    struct mmt_probe p = {0};
    static const uint8_t body[] = {0xa2, 'h', 'i'}; /* msgpack "hi" */
    ck_assert_int_eq(mm_request(b, svc, "echo", body, sizeof body, NULL, mmt_on_reply, &p, NULL),
                     MM_OK);
    mm_send_opts_t so = MM_SEND_OPTS_INIT;
    so.on_sent = on_tls_sent;
    so.sent_ud = &seen;
    ck_assert_int_eq(mm_task(b, svc, "echo", body, sizeof body, &so), MM_OK);
    ck_assert_int_eq(mm_emit(b, svc, "news", body, sizeof body, NULL), MM_OK);
    MMT_WAIT(base, p.done, mmt_scale(5000));
    ck_assert_int_eq(p.status, MM_OK);
    ck_assert_str_eq(p.str, "hi");
    MMT_WAIT(base, seen.sent, mmt_scale(5000));
    ck_assert_int_eq(seen.sent_status, MM_OK);
    MMT_WAIT(base, seen.task, mmt_scale(5000));
    MMT_WAIT(base, seen.event, mmt_scale(5000));
    mmt_probe_free(&p);
    mm_free(a);
    mm_free(b);
    mmt_base_free(base);
}
END_TEST

START_TEST(tls_refuses_an_unknown_ca_and_a_wrong_host_name)
{
    mm_t *mm = mm_new("t-connect", NULL);
    /* No CA given: the private CA is unknown, so the peer cannot be verified. */
    ck_assert_int_eq(mm_connect(mm, tls_env("MM_TEST_TLS_URI")), MM_ETLS);
    /* The right CA, but the certificate names localhost, not 127.0.0.1. */
    const char *port = strrchr(tls_env("MM_TEST_TLS_URI"), ':') + 1;
    char uri[1024];
    snprintf(uri, sizeof uri, "amqps://guest:guest@127.0.0.1:%s?cacertfile=%s", port,
             tls_env("MM_TEST_TLS_CA"));
    ck_assert_int_eq(mm_connect(mm, uri), MM_ETLS);
    /* verify_none accepts it (for tests and private networks only). */
    snprintf(uri, sizeof uri, "amqps://guest:guest@127.0.0.1:%s?verify=verify_none", port);
    ck_assert_msg(mm_connect(mm, uri) == MM_OK, "%s", mm_last_error(mm));
    mm_free(mm);
}
END_TEST

START_TEST(free_leaves_no_events_on_the_callers_base)
{
    struct event_base *base = event_base_new();
    int before = event_base_get_num_events(base, EVENT_BASE_COUNT_ADDED);
    mm_opts_t o = MM_OPTS_INIT;
    o.base = base;
    mm_t *mm = mm_new("t-connect", &o);
    ck_assert_int_eq(mm_connect(mm, mmt_uri()), MM_OK);
    ck_assert_int_gt(event_base_get_num_events(base, EVENT_BASE_COUNT_ADDED), before);
    mm_free(mm);
    ck_assert_int_eq(event_base_get_num_events(base, EVENT_BASE_COUNT_ADDED), before);
    ck_assert_int_eq(event_base_get_num_events(base, EVENT_BASE_COUNT_ACTIVE), 0);
    event_base_free(base);
}
END_TEST

START_TEST(free_from_inside_a_callback_is_deferred)
{
    struct events e = {.free_in_callback = true};
    struct event_base *base = event_base_new();
    mm_opts_t o = MM_OPTS_INIT;
    o.base = base;
    o.on_event = on_event;
    o.event_ud = &e;
    mm_t *mm = mm_new("t-connect", &o);
    ck_assert_int_eq(mm_connect(mm, mmt_uri()), MM_OK);
    MMT_WAIT(base, e.got_connected, mmt_scale(5000));
    /* mm is gone now; the base must hold nothing of it. */
    ck_assert_int_eq(event_base_get_num_events(base, EVENT_BASE_COUNT_ADDED), 0);
    event_base_free(base);
}
END_TEST

START_TEST(free_from_a_callback_inside_mm_run_ends_the_run)
{
    struct events e = {.free_in_callback = true};
    mm_opts_t o = MM_OPTS_INIT;
    o.on_event = on_event;
    o.event_ud = &e;
    mm_t *mm = mm_new("t-connect", &o);
    ck_assert_int_eq(mm_connect(mm, mmt_uri()), MM_OK);
    ck_assert_int_eq(mm_run(mm), MM_ECLOSED); /* mm is gone: not touched again */
    ck_assert(e.got_connected);
}
END_TEST

START_TEST(channel_error_leaves_the_connection_up)
{
    struct events e = {0};
    mm_opts_t o = MM_OPTS_INIT;
    o.on_event = on_event;
    o.event_ud = &e;
    mm_t *mm = mm_new("t-connect", &o);
    ck_assert_int_eq(mm_connect(mm, mmt_uri()), MM_OK);
    uint16_t ch, ch2;
    ck_assert_int_eq(mmi_chan_open(mm, NULL, NULL, &ch), MM_OK);
    char q[64];
    mmt_unique("missing", q, sizeof q);
    ck_assert_int_eq(mmi_queue_declare(mm, ch, q, MMI_Q_PASSIVE, NULL, NULL), MM_ECHANNEL);
    ck_assert_ptr_nonnull(strstr(mm_last_error(mm), "NOT_FOUND"));
    ck_assert(!mmi_chan_is_open(mm, ch));
    ck_assert(mm_is_connected(mm));
    ck_assert_int_eq(mmi_chan_open(mm, NULL, NULL, &ch2), MM_OK);
    ck_assert_int_eq(mmi_queue_declare(mm, ch2, q, MMI_Q_AUTO_DELETE, NULL, NULL), MM_OK);
    ck_assert_int_eq(mmi_chan_close(mm, ch2), MM_OK);
    MMT_WAIT(mm->base, e.got_channel_error, mmt_scale(5000));
    ck_assert_int_eq(e.channel_errors, 1);
    ck_assert_int_eq(e.disconnected, 0);
    mm_free(mm);
}
END_TEST

/* The broker drops a client that sends nothing for 2 heartbeats (2 s here); an
 * idle instance must stay up because every read (woken by the broker's own
 * heartbeats, or by our timer) sends ours when due. (That the timer alone
 * notices a silent broker is test_fault's frozen-broker test.) Waiting for
 * something that must not happen can only be a bounded wait. */
START_TEST(idle_connection_survives_a_short_heartbeat)
{
    char uri[512];
    snprintf(uri, sizeof uri, "%s?heartbeat=1", mmt_uri());
    struct events e = {0};
    mm_opts_t o = MM_OPTS_INIT;
    o.on_event = on_event;
    o.event_ud = &e;
    mm_t *mm = mm_new("t-connect", &o);
    ck_assert_int_eq(mm_connect(mm, uri), MM_OK);
    ck_assert_int_eq(mm_heartbeat(mm), 1);
    ck_assert(!mmt_wait(mm->base, &e.got_disconnected, 4500));
    ck_assert(mm_is_connected(mm));
    uint16_t ch;
    ck_assert_int_eq(mmi_chan_open(mm, NULL, NULL, &ch), MM_OK); /* and it still works */
    mm_free(mm);
}
END_TEST

struct cancel_probe {
    bool cancelled;
    amqp_method_number_t method;
};

static void
on_method(mm_t *mm, uint16_t ch, const amqp_method_t *m, void *ud)
{
    struct cancel_probe *p = ud;
    (void) mm;
    (void) ch;
    p->method = m->id;
    p->cancelled = m->id == AMQP_BASIC_CANCEL_METHOD;
}

/* Needs the consumer_cancel_notify capability: without it the broker says nothing. */
START_TEST(deleted_queue_cancels_the_consumer_visibly)
{
    mm_t *mm = mm_new("t-connect", NULL);
    ck_assert_int_eq(mm_connect(mm, mmt_uri()), MM_OK);
    struct cancel_probe p = {0};
    const mmi_chan_ops_t ops = {.on_method = on_method};
    uint16_t ch, admin;
    char q[64];
    mmt_unique("cancel", q, sizeof q);
    ck_assert_int_eq(mmi_chan_open(mm, &ops, &p, &ch), MM_OK);
    ck_assert_int_eq(mmi_chan_open(mm, NULL, NULL, &admin), MM_OK);
    ck_assert_int_eq(mmi_queue_declare(mm, ch, q, 0, NULL, NULL), MM_OK);
    ck_assert_int_eq(mmi_basic_consume(mm, ch, q, false, false, NULL, 0), MM_OK);
    ck_assert_int_eq(mmi_queue_delete(mm, admin, q), MM_OK);
    MMT_WAIT(mm->base, p.cancelled, mmt_scale(5000));
    ck_assert_uint_eq(p.method, AMQP_BASIC_CANCEL_METHOD);
    mm_free(mm);
}
END_TEST

START_TEST(connection_closed_by_the_broker_ends_the_run_without_reconnect)
{
    struct events e = {0};
    mm_opts_t o = MM_OPTS_INIT;
    o.on_event = on_event;
    o.event_ud = &e;
    o.flags = MM_OPT_NO_RECONNECT;
    mm_t *mm = mm_new("t-connect", &o);
    ck_assert_int_eq(mm_connect(mm, mmt_uri()), MM_OK);
    ck_assert_int_eq(mmt_kill_connection(mmt_local_port(mm)), 0);
    ck_assert_int_eq(mm_run(mm), MM_EDISCONNECTED); /* returns by itself: no sleep, no stop */
    ck_assert(e.got_disconnected);
    ck_assert_int_eq(e.disconnected, 1);
    ck_assert_ptr_nonnull(strstr(e.last_text, "CONNECTION_FORCED"));
    ck_assert(!mm_is_connected(mm));
    mm_free(mm);
}
END_TEST

int
main(void)
{
    Suite *s = suite_create("connect");
    TCase *tc = tcase_create("connect");
    tcase_set_timeout(tc, 60);
    tcase_add_test(tc, connect_and_close);
    tcase_add_test(tc, uri_heartbeat_parameter_is_negotiated);
    tcase_add_test(tc, connected_event_arrives_on_the_loop);
    tcase_add_test(tc, closed_port_fails_after_the_retry_budget);
    tcase_add_test(tc, default_strategy_uses_the_configured_budget);
    tcase_add_test(tc, custom_strategy_sees_error_and_stops_early);
    tcase_add_test(tc, wrong_password_gives_EAUTH_without_retry);
    tcase_add_test(tc, unknown_vhost_gives_EVHOST);
    tcase_add_test(tc, tls_to_a_plain_port_gives_ETLS);
    tcase_add_test(tc, tls_connects_and_verifies_the_broker);
    tcase_add_test(tc, tls_refuses_an_unknown_ca_and_a_wrong_host_name);
    tcase_add_test(tc, tls_carries_requests_confirmed_tasks_and_events);
    tcase_add_test(tc, free_leaves_no_events_on_the_callers_base);
    tcase_add_test(tc, free_from_inside_a_callback_is_deferred);
    tcase_add_test(tc, free_from_a_callback_inside_mm_run_ends_the_run);
    tcase_add_test(tc, channel_error_leaves_the_connection_up);
    tcase_add_test(tc, connection_closed_by_the_broker_ends_the_run_without_reconnect);
    tcase_add_test(tc, deleted_queue_cancels_the_consumer_visibly);
    tcase_add_test(tc, idle_connection_survives_a_short_heartbeat);
    suite_add_tcase(s, tc);
    return mmt_run(s);
}
