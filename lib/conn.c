/*
 * The connection's life, whatever the transport: URI resolution (the scheme
 * picks the transport, lib/transport.h), mm_connect, clean close, and the
 * death of a connection (detected by the pump or a failed send). A dead
 * connection is destroyed from the deferred event, never under the feet of
 * a callback that may still hold pointers into its buffers. The transports'
 * own parts: lib/amqp_conn.c and lib/mem/conn.c.
 */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include "outbox.h"
#include "transport.h"

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
    if (mm->uri_redacted == NULL)
        return mmi_fail(mm, MM_ENOMEM, "out of memory");
    mm->tp = mm->uri.memory != NULL ? &mmi_mem_transport : &mmi_amqp_transport;
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
    rc = mm->tp->connect(mm);
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
    mm->auto_reconnect = mm->tp->reconnects && !(mm->opts.flags & MM_OPT_NO_RECONNECT);
    mmi_modules_up(mm);
    mmi_event(mm, MM_EV_CONNECTED, MM_OK, 0, "connected to %s (heartbeat %d s)", mm->uri_redacted,
              mm->heartbeat);
    return MM_OK;
}

/* Take the connection out of service; its memory goes at the next reap. */
static void
retire(mm_t *mm, int code)
{
    mm->tp->retire(mm);
    mm->dead = true;
    mm->dead_code = code;
    mm->state = MMI_IDLE;
    mm->blocked = false;
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

/* Clean close (connection.close, bounded by the RPC timeout), then retired. */
void
mmi_conn_close(mm_t *mm)
{
    if (mm->state != MMI_CONNECTED)
        return;
    mm->tp->close(mm);
    if (mm->state == MMI_CONNECTED) /* else lost while closing: retired already */
        retire(mm, MM_ECLOSED);
}

/* Destroy a retired connection and tell the channel owners. */
void
mmi_conn_reap(mm_t *mm)
{
    if (!mm->dead)
        return;
    mm->dead = false;
    mmi_chans_fail_all(mm, mm->dead_code,
                       mm->dead_code == MM_ECLOSED ? "connection closed" : "connection lost");
    mm->tp->reap(mm);
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
