/*
 * The connection: URI resolution, one bounded connect + login attempt over
 * rabbitmq-c's TCP or TLS socket, the retry loop driven by the user's
 * strategy, clean close, and the death of a connection (detected by the
 * pump or a failed send). A dead connection is destroyed from the deferred
 * event, never under the feet of a callback that may still hold pointers
 * into its buffers.
 */
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include <amqp_ssl_socket.h>
#include <amqp_tcp_socket.h>

#include "internal.h"
#include "outbox.h"

static struct timeval
ms_tv(uint32_t ms)
{
    return (struct timeval){.tv_sec = ms / 1000, .tv_usec = (ms % 1000) * 1000};
}

int64_t
mm_retry_default(int error, unsigned attempts, uint64_t elapsed_ms, void *ud)
{
    uint64_t budget = (uint64_t) (uintptr_t) ud;
    if (budget == 0)
        budget = 30000;
    if ((uintptr_t) ud == UINTPTR_MAX)
        budget = UINT64_MAX; /* reconnects: no end */
    if (error == MM_EURI || error == MM_EAUTH || error == MM_EVHOST || error == MM_ETLS ||
        error == MM_EINVAL || error == MM_ENAME)
        return -1;
    if (elapsed_ms >= budget)
        return -1;
    unsigned doublings = attempts > 1 ? attempts - 1 : 0;
    /* 100, 200, 400, 800: a broker that comes back is found within a second */
    int64_t wait = 100 << (doublings > 3 ? 3 : doublings);
    /* +-20 % jitter so that replicas restarted together do not retry in step */
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    unsigned noise = (unsigned) (ts.tv_nsec / 1000) ^ ((unsigned) getpid() * 2654435761u);
    wait += wait * ((int64_t) (noise % 41) - 20) / 100;
    if ((uint64_t) wait > budget - elapsed_ms)
        wait = (int64_t) (budget - elapsed_ms);
    return wait;
}

const char *
mmi_resolve_uri(const mm_t *mm, const char *uri)
{
    const char *v;
    if (uri != NULL)
        return uri;
    if (mm->opts.uri != NULL)
        return mm->opts.uri;
    if ((v = getenv("MM_URI")) != NULL && *v != '\0')
        return v;
    if ((v = getenv("RABBITMQ_URI")) != NULL && *v != '\0')
        return v;
    return MMI_URI_DEFAULT;
}

static amqp_socket_t *
tls_socket(mm_t *mm, amqp_connection_state_t c, char *detail)
{
    amqp_socket_t *s = amqp_ssl_socket_new(c);
    if (s == NULL) {
        snprintf(detail, MMI_DETAIL, "cannot create a TLS socket");
        return NULL;
    }
    const struct mmi_uri *u = &mm->uri;
    amqp_ssl_socket_set_verify_peer(s, u->verify_peer);
    amqp_ssl_socket_set_verify_hostname(s, u->verify_peer);
    if (u->cacertfile != NULL && amqp_ssl_socket_set_cacert(s, u->cacertfile) != AMQP_STATUS_OK) {
        snprintf(detail, MMI_DETAIL, "cannot load CA file %s", u->cacertfile);
        return NULL;
    }
    if (u->certfile != NULL && u->keyfile != NULL &&
        amqp_ssl_socket_set_key(s, u->certfile, u->keyfile) != AMQP_STATUS_OK) {
        snprintf(detail, MMI_DETAIL, "cannot load certificate %s / key %s", u->certfile,
                 u->keyfile);
        return NULL;
    }
    return s;
}

static int
open_socket(mm_t *mm, amqp_connection_state_t c, uint32_t timeout_ms, char *detail)
{
    amqp_socket_t *s = mm->uri.tls ? tls_socket(mm, c, detail) : amqp_tcp_socket_new(c);
    if (s == NULL)
        return mm->uri.tls ? MM_ETLS : MM_ENOMEM;
    struct timeval tv = ms_tv(timeout_ms);
    errno = 0;
    int st = amqp_socket_open_noblock(s, mm->uri.host, mm->uri.port, &tv);
    if (st == AMQP_STATUS_OK)
        return MM_OK;
    int err = errno;
    /* rabbitmq-c reads the failed non-blocking connect's error with
     * SO_ERROR but leaves errno at EINPROGRESS: that says nothing. */
    const char *why = err == EINPROGRESS ? "refused or unreachable" : err ? strerror(err) : "";
    bool sock = st == AMQP_STATUS_SOCKET_ERROR && *why;
    snprintf(detail, MMI_DETAIL, "connect to %s:%d: %s%s%s", mm->uri.host, mm->uri.port,
             sock && err == EINPROGRESS ? "the TCP connection did not open"
                                        : amqp_error_string2(st),
             sock ? ": " : "", sock ? why : "");
    return mmi_err_from_status(st);
}

static int
login(mm_t *mm, amqp_connection_state_t c, char *detail)
{
    amqp_table_entry_t caps[] = {
        {amqp_cstring_bytes("consumer_cancel_notify"),
         {.kind = AMQP_FIELD_KIND_BOOLEAN, .value.boolean = 1}},
        {amqp_cstring_bytes("connection.blocked"),
         {.kind = AMQP_FIELD_KIND_BOOLEAN, .value.boolean = 1}},
        {amqp_cstring_bytes("publisher_confirms"),
         {.kind = AMQP_FIELD_KIND_BOOLEAN, .value.boolean = 1}},
        {amqp_cstring_bytes("basic.nack"), {.kind = AMQP_FIELD_KIND_BOOLEAN, .value.boolean = 1}},
    };
    char name[200];
    snprintf(name, sizeof name, "%s %s", mm->service, mm->id);
    amqp_table_entry_t props[] = {
        {amqp_cstring_bytes("capabilities"),
         {.kind = AMQP_FIELD_KIND_TABLE, .value.table = {.num_entries = 4, .entries = caps}}},
        {amqp_cstring_bytes("product"),
         {.kind = AMQP_FIELD_KIND_UTF8, .value.bytes = amqp_cstring_bytes("micromsg")}},
        {amqp_cstring_bytes("version"),
         {.kind = AMQP_FIELD_KIND_UTF8, .value.bytes = amqp_cstring_bytes(MM_VERSION_STRING)}},
        {amqp_cstring_bytes("connection_name"),
         {.kind = AMQP_FIELD_KIND_UTF8, .value.bytes = amqp_cstring_bytes(name)}},
    };
    amqp_table_t table = {.num_entries = 4, .entries = props};
    amqp_rpc_reply_t r = amqp_login_with_properties(
        c, mm->uri.vhost, mm->uri.channel_max, mm->uri.frame_max, mm->uri.heartbeat, &table,
        AMQP_SASL_METHOD_PLAIN, mm->uri.user, mm->uri.pass);
    char text[MMI_DETAIL - 64];
    int rc = mmi_err_from_reply(r, text, sizeof text);
    if (rc == MM_OK)
        return MM_OK;
    if (rc == MM_EDISCONNECTED && r.reply_type == AMQP_RESPONSE_LIBRARY_EXCEPTION)
        rc = MM_EUNREACHABLE; /* the broker hung up during the handshake */
    snprintf(detail, MMI_DETAIL, "login as '%s' on vhost '%s': %s", mm->uri.user, mm->uri.vhost,
             text);
    return rc;
}

/* One attempt: TCP (or TLS) connect and AMQP login, each step bounded. */
int
mmi_conn_attempt(mm_t *mm, amqp_connection_state_t *ret, char *detail)
{
    amqp_connection_state_t c = amqp_new_connection();
    if (c == NULL)
        return MM_ENOMEM;
    uint32_t timeout = mm->uri.connection_timeout_ms ? (uint32_t) mm->uri.connection_timeout_ms
                                                     : mm->opts.connect_timeout_ms;
    struct timeval hs = ms_tv(timeout), rpc = ms_tv(mm->opts.rpc_timeout_ms);
    amqp_set_handshake_timeout(c, &hs);
    amqp_set_rpc_timeout(c, &rpc);
    int rc = open_socket(mm, c, timeout, detail);
    if (rc == MM_OK)
        rc = login(mm, c, detail);
    if (rc != MM_OK) {
        amqp_destroy_connection(c);
        return rc;
    }
    *ret = c;
    return MM_OK;
}

static void
wait_ms(int64_t ms)
{
    struct timespec ts = {.tv_sec = ms / 1000, .tv_nsec = (ms % 1000) * 1000000};
    while (nanosleep(&ts, &ts) != 0 && errno == EINTR)
        ;
}

static int
connect_with_retry(mm_t *mm, amqp_connection_state_t *ret)
{
    char detail[MMI_DETAIL] = "";
    uint64_t t0 = mmi_now_ms();
    for (unsigned attempts = 1;; attempts++) {
        int rc = mmi_conn_attempt(mm, ret, detail);
        if (rc == MM_OK)
            return MM_OK;
        uint64_t elapsed = mmi_now_ms() - t0;
        mmi_log(mm, MM_LOG_INFO, "attempt %u failed after %llu ms: %s", attempts,
                (unsigned long long) elapsed, detail);
        int64_t wait = mm->opts.retry(rc, attempts, elapsed, mm->opts.retry_ud);
        if (wait < 0)
            return mmi_fail(mm, rc, "%s (gave up after %u attempt%s in %llu ms)", detail, attempts,
                            attempts == 1 ? "" : "s", (unsigned long long) elapsed);
        wait_ms(wait);
    }
}

static int
prepare_uri(mm_t *mm, const char *uri)
{
    char err[MMI_ERRBUF];
    mmi_uri_free(&mm->uri);
    free(mm->uri_redacted);
    mm->uri_redacted = NULL;
    int rc = mmi_uri_parse(mmi_resolve_uri(mm, uri), &mm->uri, err, sizeof err);
    if (rc != MM_OK)
        return mmi_fail(mm, rc, "%s", rc == MM_ENOMEM ? "out of memory" : err);
    mm->uri_redacted = mmi_uri_redact(&mm->uri);
    return mm->uri_redacted ? MM_OK : mmi_fail(mm, MM_ENOMEM, "out of memory");
}

/* A fresh connection becomes the instance's: watched by the pump. */
int
mmi_conn_install(mm_t *mm, amqp_connection_state_t c)
{
    mm->conn = c;
    mm->state = MMI_CONNECTED;
    mm->heartbeat = amqp_get_heartbeat(c);
    mm->channel_max = (uint16_t) amqp_get_channel_max(c);
    mmi_writer_start(mm);
    int rc = mmi_pump_start(mm);
    if (rc != MM_OK) {
        bool again = mm->auto_reconnect;
        mm->auto_reconnect = false; /* a failure to set up, not a loss */
        mmi_conn_lost(mm, rc, "cannot watch the socket");
        mm->auto_reconnect = again;
        mmi_conn_reap(mm);
        return mmi_fail(mm, rc, "cannot watch the socket");
    }
    return MM_OK;
}

int
mm_connect(mm_t *mm, const char *uri)
{
    if (mm == NULL)
        return MM_EINVAL;
    int rc = mmi_check_usable(mm);
    if (rc != MM_OK)
        return rc;
    if (mm->state != MMI_IDLE)
        return mmi_fail(mm, MM_ESTATE, "already connected to %s%s", mm->uri_redacted,
                        mm->state == MMI_RECONNECTING ? " (reconnecting)" : "");
    mmi_conn_reap(mm);
    rc = prepare_uri(mm, uri);
    if (rc != MM_OK)
        return rc;
    amqp_connection_state_t c = NULL;
    rc = connect_with_retry(mm, &c);
    if (rc != MM_OK)
        return rc;
    rc = mmi_conn_install(mm, c);
    if (rc != MM_OK)
        return rc;
    rc = mmi_routes_declare_all(mm);
    if (rc == MM_OK)
        rc = mmi_pub_prepare(mm);
    if (rc != MM_OK) {
        char why[MMI_ERRBUF];
        snprintf(why, sizeof why, "%s", mm->last_error);
        mmi_conn_close(mm);
        mmi_conn_reap(mm);
        mmi_events_drop(mm);
        return mmi_fail(mm, rc, "%s", why);
    }
    mmi_clear_error(mm);
    mm->auto_reconnect = !(mm->opts.flags & MM_OPT_NO_RECONNECT);
    mmi_modules_up(mm);
    mmi_event(mm, MM_EV_CONNECTED, MM_OK, 0, "connected to %s (heartbeat %d s)", mm->uri_redacted,
              mm->heartbeat);
    return MM_OK;
}

/* Take the connection out of service; its memory goes at the next reap. */
static void
retire(mm_t *mm, int code)
{
    mmi_pump_stop(mm);
    mmi_writer_stop(mm);
    if (mm->dead_conn != NULL) /* a second death before the first reap */
        amqp_destroy_connection(mm->dead_conn);
    mm->dead_conn = mm->conn;
    mm->dead_code = code;
    mm->conn = NULL;
    mm->state = MMI_IDLE;
    mm->blocked = false;
    mm->bl_head = mm->bl_len = 0; /* those frames point into the dead connection */
    mmi_deferred_kick(mm);
}

void
mmi_conn_lost(mm_t *mm, int code, const char *fmt, ...)
{
    if (mm->state != MMI_CONNECTED)
        return;
    char text[MMI_ERRBUF];
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(text, sizeof text, fmt, ap);
    va_end(ap);
    retire(mm, MM_EDISCONNECTED);
    mmi_modules_down(mm);
    bool again = mm->auto_reconnect && mmi_alive(mm);
    mmi_event(mm, MM_EV_DISCONNECTED, code, 0, "%s%s", text, again ? "; reconnecting" : "");
    if (again)
        mmi_reconnect_schedule(mm);
}

/* Clean close: connection.close and wait for close-ok (bounded by the RPC timeout). */
void
mmi_conn_close(mm_t *mm)
{
    if (mm->state != MMI_CONNECTED)
        return;
    mmi_writer_flush(mm);
    if (mm->state != MMI_CONNECTED)
        return;
    amqp_rpc_reply_t r = amqp_connection_close(mm->conn, AMQP_REPLY_SUCCESS);
    if (r.reply_type != AMQP_RESPONSE_NORMAL)
        mmi_log(mm, MM_LOG_DEBUG, "connection.close got no clean close-ok");
    retire(mm, MM_ECLOSED);
}

/* Destroy a retired connection and tell the channel owners. */
void
mmi_conn_reap(mm_t *mm)
{
    if (mm->dead_conn == NULL)
        return;
    amqp_connection_state_t c = mm->dead_conn;
    mm->dead_conn = NULL;
    mmi_chans_fail_all(mm, mm->dead_code,
                       mm->dead_code == MM_ECLOSED ? "connection closed" : "connection lost");
    amqp_destroy_connection(c);
}

int
mm_close(mm_t *mm)
{
    if (mm == NULL)
        return MM_EINVAL;
    if (mm->state == MMI_IDLE)
        return mmi_fail(mm, MM_ENOTCONN, "not connected");
    mm->auto_reconnect = false;
    if (mm->state == MMI_CONNECTED && mm->cb_depth == 0 && !mm->syncing &&
        mmi_drain(mm) == MM_ECLOSED) {
        mmi_instance_destroy(mm); /* mm_free() in a callback while draining */
        return MM_ECLOSED;
    }
    mmi_reconnect_stop(mm);
    mmi_modules_down(mm);
    mmi_conn_close(mm);
    mm->state = MMI_IDLE;
    mmi_outbox_close(mm);
    if (mm->cb_depth == 0)
        mmi_conn_reap(mm);
    mmi_clear_error(mm);
    return MM_OK;
}
