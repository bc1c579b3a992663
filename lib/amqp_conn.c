/*
 * The AMQP transport's connection (lib/transport.h): one bounded connect +
 * login attempt over rabbitmq-c's TCP or TLS socket, the retry loop driven
 * by the user's strategy, the install of a fresh connection under the pump
 * and the writer, connection.close, and the retired connection kept until
 * the reap (a callback may still hold pointers into its buffers).
 */
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include <amqp_ssl_socket.h>
#include <amqp_tcp_socket.h>

#include "transport.h"

static struct timeval
ms_tv(uint32_t ms)
{
    return (struct timeval){.tv_sec = ms / 1000, .tv_usec = (ms % 1000) * 1000};
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

static int
amqp_connect(mm_t *mm)
{
    amqp_connection_state_t c = NULL;
    int rc = connect_with_retry(mm, &c);
    return rc == MM_OK ? mmi_conn_install(mm, c) : rc;
}

/* Clean close: connection.close and wait for close-ok (bounded by the RPC timeout). */
static void
amqp_close(mm_t *mm)
{
    mmi_writer_flush(mm);
    if (mm->state != MMI_CONNECTED)
        return;
    amqp_rpc_reply_t r = amqp_connection_close(mm->conn, AMQP_REPLY_SUCCESS);
    if (r.reply_type != AMQP_RESPONSE_NORMAL)
        mmi_log(mm, MM_LOG_DEBUG, "connection.close got no clean close-ok");
}

static void
amqp_retire(mm_t *mm)
{
    mmi_pump_stop(mm);
    mmi_writer_stop(mm);
    if (mm->dead_conn != NULL) /* a second death before the first reap */
        amqp_destroy_connection(mm->dead_conn);
    mm->dead_conn = mm->conn;
    mm->conn = NULL;
    mm->bl_head = mm->bl_len = 0; /* those frames point into the dead connection */
}

static void
amqp_reap(mm_t *mm)
{
    amqp_connection_state_t c = mm->dead_conn;
    mm->dead_conn = NULL;
    if (c != NULL)
        amqp_destroy_connection(c);
}

const mmi_transport_t mmi_amqp_transport = {
    .name = "amqp",
    .reconnects = true,
    .connect = amqp_connect,
    .close = amqp_close,
    .retire = amqp_retire,
    .reap = amqp_reap,
    .rpc = mmi_amqp_rpc,
    .send = mmi_amqp_send,
    .publish = mmi_amqp_publish,
};
