/*
 * Instance lifecycle: mm_new (options copied, name checked, id made),
 * mm_run/mm_stop on an owned loop, mm_free (deferred while a callback runs,
 * the hiredis ENTERED/FREEING pattern), and the deferred event that delivers
 * instance events outside the API calls that caused them.
 */
#include <event2/event.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "election.h"
#include "internal.h"
#include "outbox.h"
#include "peers.h"
#include "qos.h"
#include "transport.h"

struct mmi_pending_event {
    struct mmi_pending_event *next;
    mm_event_type type;
    int code;
    uint16_t channel;
    char *route, *request_id, *leader_id; /* point into text[] after the text, or NULL */
    unsigned pressure;
    int64_t value, threshold;
    char text[];
};

int
mm_version(void)
{
    return MM_VERSION_NUMBER;
}

uint64_t
mmi_now_ms(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (uint64_t) ts.tv_sec * 1000u + (uint64_t) ts.tv_nsec / 1000000u;
}

int64_t
mmi_wall_ms(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_REALTIME, &ts);
    return (int64_t) ts.tv_sec * 1000 + ts.tv_nsec / 1000000;
}

static void
stderr_log(int level, const char *text, void *ud)
{
    static const char *names[] = {[MM_LOG_ERR] = "error",
                                  [MM_LOG_WARN] = "warn",
                                  [MM_LOG_INFO] = "info",
                                  [MM_LOG_DEBUG] = "debug"};
    const char *name = level >= 0 && level <= MM_LOG_DEBUG && names[level] ? names[level] : "log";
    fprintf(stderr, "micromsg[%s] %s: %s\n", (const char *) ud, name, text);
}

/* QoS options: defaults and the checks of their ranges. */
static int
qos_opts(mm_t *mm, const mm_opts_t *o)
{
    double t = o->qos_lag_threshold;
    mm->opts.qos_interval_ms = o->qos_interval_ms ? o->qos_interval_ms : 500;
    mm->opts.qos_lag_threshold = t != 0 ? t : 0.14;
    mm->opts.mem_soft = (uint64_t) o->mem_soft_mb << 20;
    mm->opts.mem_hard = (uint64_t) o->mem_hard_mb << 20;
    if (!(t >= 0 && t <= 1)) /* also NaN */
        return mmi_fail(mm, MM_EINVAL,
                        "qos_lag_threshold %g: a fraction of the sample interval in (0, 1]", t);
    if (o->mem_soft_mb && o->mem_hard_mb && o->mem_soft_mb > o->mem_hard_mb)
        return mmi_fail(mm, MM_EINVAL, "mem_soft_mb %u is above mem_hard_mb %u", o->mem_soft_mb,
                        o->mem_hard_mb);
    return MM_OK;
}

static int
copy_opts(mm_t *mm, const mm_opts_t *src)
{
    mm_opts_t o = MM_OPTS_INIT;
    if (src != NULL) {
        if (src->size < offsetof(mm_opts_t, base) || src->size > sizeof o * 4)
            return mmi_fail(mm, MM_EINVAL, "options not set up with MM_OPTS_INIT (size %zu)",
                            src->size);
        memcpy(&o, src, src->size < sizeof o ? src->size : sizeof o);
    }
    mm->opts = (struct mmi_opts){
        .log = o.log,
        .log_ud = o.log_ud,
        .log_level = o.log_level,
        .on_event = o.on_event,
        .event_ud = o.event_ud,
        .retry = o.retry ? o.retry : mm_retry_default,
        .retry_ud = o.retry ? o.retry_ud : (void *) (uintptr_t) o.retry_budget_ms,
        .retry_budget_ms = o.retry_budget_ms ? o.retry_budget_ms : 30000,
        .connect_timeout_ms = o.connect_timeout_ms ? o.connect_timeout_ms : 5000,
        .rpc_timeout_ms = o.rpc_timeout_ms ? o.rpc_timeout_ms : 10000,
        .codec = o.codec,
        .max_body = o.max_body ? o.max_body : 16u << 20,
        .request_timeout_ms = o.request_timeout_ms ? o.request_timeout_ms : 120000,
        .flags = o.flags,
        .reconnect_budget_ms = o.reconnect_budget_ms,
        .send_buffer = o.send_buffer ? o.send_buffer : 16u << 20,
        .send_timeout_ms = o.send_timeout_ms ? o.send_timeout_ms : 60000,
        .max_redeliveries = o.max_redeliveries ? o.max_redeliveries : 5,
        .close_timeout_ms = o.close_timeout_ms ? o.close_timeout_ms : 5000,
        .heartbeat_ms = o.heartbeat_ms ? o.heartbeat_ms : 10000,
        .election_timeout_ms = o.election_timeout_ms ? o.election_timeout_ms : 15000,
    };
    int rc = qos_opts(mm, &o);
    if (rc != MM_OK)
        return rc;
    if (mm->opts.election_timeout_ms <= mm->opts.heartbeat_ms)
        return mmi_fail(mm, MM_EINVAL,
                        "election_timeout_ms %u must exceed heartbeat_ms %u (a leader would be "
                        "replaced between two of its heartbeats)",
                        mm->opts.election_timeout_ms, mm->opts.heartbeat_ms);
    if (o.send_timeout_ms < 0 && o.send_timeout_ms != MM_NO_TIMEOUT)
        return mmi_fail(mm, MM_EINVAL, "send_timeout_ms %lld (positive, 0 or MM_NO_TIMEOUT)",
                        (long long) o.send_timeout_ms);
    if (o.codec != MM_CODEC_MSGPACK && o.codec != MM_CODEC_JSON)
        return mmi_fail(mm, MM_EINVAL, "unknown codec %d (MM_CODEC_MSGPACK or MM_CODEC_JSON)",
                        o.codec);
    mm->base = o.base;
    if (o.uri != NULL && (mm->opts.uri = strdup(o.uri)) == NULL)
        return MM_ENOMEM;
    return MM_OK;
}

static void
setup_logging(mm_t *mm)
{
    int env = mmi_log_level_from_env();
    if (mm->opts.log_level == 0)
        mm->opts.log_level = env != MM_LOG_NONE ? env : MM_LOG_WARN;
    if (mm->opts.log == NULL && env != MM_LOG_NONE) {
        mm->opts.log = stderr_log;
        mm->opts.log_ud = mm->service ? mm->service : "?";
    }
}

static void on_deferred(evutil_socket_t fd, short what, void *arg);

static int
setup_loop(mm_t *mm)
{
    if (mm->base == NULL) {
        mm->base = event_base_new();
        if (mm->base == NULL)
            return MM_ENOMEM;
        mm->own_base = true;
    }
    mm->wr_fd = -1;
    mm->tp = &mmi_amqp_transport;
    mm->ev_deferred = event_new(mm->base, -1, 0, on_deferred, mm);
    return mm->ev_deferred ? MM_OK : MM_ENOMEM;
}

/* Peers and election run beside the core unless the options say no. */
static int
attach_modules(mm_t *mm)
{
    if ((mm->opts.flags & MM_OPT_QOS) && mmi_qos_attach(mm) != MM_OK)
        return MM_ENOMEM;
    if (mm->opts.flags & MM_OPT_NO_PEERS)
        return MM_OK;
    int rc = mmi_peers_attach(mm);
    if (rc == MM_OK)
        rc = mmi_election_attach(mm, !(mm->opts.flags & MM_OPT_NO_ELECTION));
    return rc;
}

mm_t *
mm_new(const char *service, const mm_opts_t *opts)
{
    mm_t *mm = calloc(1, sizeof *mm);
    if (mm == NULL)
        return NULL;
    int rc = copy_opts(mm, opts);
    if (rc == MM_OK)
        rc = mmi_check_name(mm, "service name", service, 0);
    if (rc == MM_OK && (mm->service = strdup(service)) == NULL)
        rc = MM_ENOMEM;
    setup_logging(mm);
    if (rc != MM_ENOMEM && setup_loop(mm) != MM_OK)
        rc = MM_ENOMEM;
    if (rc == MM_ENOMEM) {
        mmi_instance_destroy(mm);
        return NULL;
    }
    mmi_ids_seed(mm);
    mmi_make_id(mm, mm->id);
    snprintf(mm->app_id, sizeof mm->app_id, "%s@%s", mm->service ? mm->service : "", mm->id);
    mm->started_ms = mmi_now_ms();
    mm->started_wall_ms = mmi_wall_ms();
    if (rc == MM_OK && attach_modules(mm) != MM_OK) {
        mmi_instance_destroy(mm);
        return NULL;
    }
    /* Invalid arguments leave a failed instance whose calls all return rc. */
    mm->init_code = rc;
    mmi_log(mm, MM_LOG_DEBUG, "instance %s of '%s' created", mm->id, mm_service(mm));
    return mm;
}

int
mmi_check_usable(mm_t *mm)
{
    if (mm->init_code != MM_OK)
        return mmi_fail(mm, mm->init_code, "%s",
                        mm->last_error[0] ? mm->last_error : "instance failed at mm_new");
    if (mm->free_pending)
        return mmi_fail(mm, MM_ECLOSED, "instance is being freed");
    return MM_OK;
}

/* ---- reentrancy ---- */

void
mmi_enter(mm_t *mm)
{
    mm->cb_depth++;
}

bool
mmi_leave(mm_t *mm)
{
    if (mm->cb_depth == 1 && mm->wr_len > 0) /* what the callbacks sent, in one write */
        mmi_writer_flush(mm);
    mm->cb_depth--;
    if (mm->cb_depth > 0 || !mm->free_pending)
        return true;
    if (mm->running || mm->syncing)
        event_base_loopbreak(mm->base); /* mm_run frees it once its loop has returned */
    else
        mmi_instance_destroy(mm);
    return false;
}

bool
mmi_alive(const mm_t *mm)
{
    return !mm->free_pending;
}

/* ---- instance events ---- */

static const char *
event_name(mm_event_type t)
{
    static const char *names[] = {
        [MM_EV_CONNECTED] = "connected",
        [MM_EV_DISCONNECTED] = "disconnected",
        [MM_EV_CHANNEL_ERROR] = "channel error",
        [MM_EV_BLOCKED] = "blocked",
        [MM_EV_UNBLOCKED] = "unblocked",
        [MM_EV_ERROR] = "error",
        [MM_EV_EXPIRED] = "expired",
        [MM_EV_UNHANDLED] = "unhandled",
        [MM_EV_UNROUTABLE] = "unroutable",
        [MM_EV_RECONNECTED] = "reconnected",
        [MM_EV_DEADLETTER] = "dead-letter",
        [MM_EV_LEADER] = "leader",
        [MM_EV_STEP_UP] = "stepped up",
        [MM_EV_STEP_DOWN] = "stepped down",
        [MM_EV_PRESSURE] = "pressure",
        [MM_EV_PRESSURE_RELEASED] = "pressure released",
    };
    return t > 0 && t <= MM_EV_PRESSURE_RELEASED ? names[t] : "event";
}

/* Copy `src` (may be NULL) to *at and return where it went. */
static char *
put_opt(char **at, const char *src)
{
    if (src == NULL)
        return NULL;
    size_t n = strlen(src) + 1;
    char *d = memcpy(*at, src, n);
    *at += n;
    return d;
}

static void
event_queue(mm_t *mm, struct mmi_pending_event *proto, const char *text)
{
    const char *route = proto->route, *rid = proto->request_id, *lid = proto->leader_id;
    size_t n = strlen(text) + 1 + (route ? strlen(route) + 1 : 0) + (rid ? strlen(rid) + 1 : 0) +
               (lid ? strlen(lid) + 1 : 0);
    mmi_log(mm, proto->code == MM_OK ? MM_LOG_INFO : MM_LOG_WARN, "%s: %s%s%s",
            event_name(proto->type), proto->code == MM_OK ? "" : mm_err_name(proto->code),
            proto->code == MM_OK ? "" : " ", text);
    struct mmi_pending_event *e = malloc(sizeof *e + n);
    if (e == NULL)
        return; /* logged above; an event is not worth failing the caller for */
    *e = *proto;
    e->next = NULL;
    char *at = e->text;
    put_opt(&at, text);
    e->route = put_opt(&at, route);
    e->request_id = put_opt(&at, rid);
    e->leader_id = put_opt(&at, lid);
    if (mm->ev_tail)
        mm->ev_tail->next = e;
    else
        mm->ev_head = e;
    mm->ev_tail = e;
    mmi_deferred_kick(mm);
}

void
mmi_event(mm_t *mm, mm_event_type type, int code, uint16_t ch, const char *fmt, ...)
{
    char text[MMI_ERRBUF];
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(text, sizeof text, fmt, ap);
    va_end(ap);
    struct mmi_pending_event proto = {.type = type, .code = code, .channel = ch};
    event_queue(mm, &proto, text);
}

void
mmi_msg_event(mm_t *mm, mm_event_type type, int code, const char *route, const char *request_id,
              const char *fmt, ...)
{
    char text[MMI_ERRBUF];
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(text, sizeof text, fmt, ap);
    va_end(ap);
    struct mmi_pending_event proto = {
        .type = type, .code = code, .route = (char *) route, .request_id = (char *) request_id};
    event_queue(mm, &proto, text);
}

void
mmi_leader_event(mm_t *mm, mm_event_type type, int code, const char *leader_id, const char *fmt,
                 ...)
{
    char text[MMI_ERRBUF];
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(text, sizeof text, fmt, ap);
    va_end(ap);
    struct mmi_pending_event proto = {.type = type, .code = code, .leader_id = (char *) leader_id};
    event_queue(mm, &proto, text);
}

void
mmi_pressure_event(mm_t *mm, mm_event_type type, unsigned pressure, int64_t value,
                   int64_t threshold, const char *fmt, ...)
{
    char text[MMI_ERRBUF];
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(text, sizeof text, fmt, ap);
    va_end(ap);
    struct mmi_pending_event proto = {
        .type = type, .pressure = pressure, .value = value, .threshold = threshold};
    event_queue(mm, &proto, text);
}

void
mmi_deferred_kick(mm_t *mm)
{
    if (mm->ev_deferred != NULL)
        event_active(mm->ev_deferred, EV_TIMEOUT, 0);
}

/* Deliver queued events; stops early when a callback frees the instance. */
void
mmi_events_flush(mm_t *mm)
{
    while (mm->ev_head != NULL && mmi_alive(mm)) {
        struct mmi_pending_event *e = mm->ev_head;
        mm->ev_head = e->next;
        if (mm->ev_head == NULL)
            mm->ev_tail = NULL;
        if (mm->opts.on_event != NULL) {
            mm_event_t ev = {.type = e->type,
                             .code = e->code,
                             .text = e->text,
                             .channel = e->channel,
                             .route = e->route,
                             .request_id = e->request_id,
                             .leader_id = e->leader_id,
                             .pressure = e->pressure,
                             .value = e->value,
                             .threshold = e->threshold};
            mm->opts.on_event(mm, &ev, mm->opts.event_ud);
        }
        free(e);
    }
}

void
mmi_events_drop(mm_t *mm)
{
    while (mm->ev_head != NULL) {
        struct mmi_pending_event *e = mm->ev_head;
        mm->ev_head = e->next;
        free(e);
    }
    mm->ev_tail = NULL;
}

static void
on_deferred(evutil_socket_t fd, short what, void *arg)
{
    mm_t *mm = arg;
    (void) fd;
    (void) what;
    mmi_enter(mm);
    mmi_conn_reap(mm);
    mmi_events_flush(mm);
    if (mm->running && mm->state == MMI_IDLE && mmi_alive(mm)) {
        mm->run_result = MM_EDISCONNECTED;
        event_base_loopbreak(mm->base);
    }
    mmi_leave(mm);
}

/* ---- run / stop / free ---- */

int
mm_run(mm_t *mm)
{
    if (mm == NULL)
        return MM_EINVAL;
    int rc = mmi_check_usable(mm);
    if (rc != MM_OK)
        return rc;
    if (!mm->own_base)
        return mmi_fail(mm, MM_ESTATE,
                        "mm_run: the instance is attached to the caller's "
                        "event_base; run that base instead");
    if (mm->state == MMI_IDLE)
        return mmi_fail(mm, MM_ESTATE, "mm_run: not connected (call mm_connect first)");
    if (mm->running)
        return mmi_fail(mm, MM_ESTATE, "mm_run: already running");
    mm->running = true;
    mm->run_result = MM_OK;
    event_base_dispatch(mm->base);
    mm->running = false;
    if (mm->free_pending) {
        mmi_instance_destroy(mm); /* a callback called mm_free() */
        return MM_ECLOSED;
    }
    if (mm->run_result != MM_OK)
        return mmi_fail(mm, mm->run_result, "mm_run: %s", mm_strerror(mm->run_result));
    return MM_OK;
}

void
mm_stop(mm_t *mm)
{
    if (mm != NULL && mm->running && mm->own_base)
        event_base_loopbreak(mm->base);
}

void
mmi_instance_destroy(mm_t *mm)
{
    mmi_requests_fail_all(mm, MM_ECLOSED);
    mmi_msgs_detach(mm);
    mm->auto_reconnect = false;
    mmi_reconnect_stop(mm);
    if (mm->state == MMI_CONNECTED)
        mmi_conn_close(mm);
    mmi_conn_reap(mm);
    mmi_mem_release(mm);
    mmi_modules_destroy(mm);
    mmi_outbox_free(mm);
    mmi_reconnect_free(mm);
    mmi_routes_free(mm);
    mmi_requests_free(mm);
    mmi_publish_forget(mm);
    mmi_chans_free(mm);
    mmi_events_drop(mm);
    mmi_writer_free(mm);
    if (mm->ev_deferred != NULL)
        event_free(mm->ev_deferred);
    if (mm->own_base && mm->base != NULL)
        event_base_free(mm->base);
    mmi_uri_free(&mm->uri);
    free(mm->uri_redacted);
    free(mm->backlog);
    free(mm->opts.uri);
    free(mm->service);
    free(mm);
}

void
mm_free(mm_t *mm)
{
    if (mm == NULL || mm->free_pending)
        return;
    mm->free_pending = true;
    if (mm->cb_depth > 0) {
        /* Inside one of our callbacks: the outermost mmi_leave() frees it. */
        mm_stop(mm);
        return;
    }
    mmi_instance_destroy(mm);
}

/* ---- getters ---- */

const char *
mm_service(const mm_t *mm)
{
    return mm && mm->service ? mm->service : "";
}

const char *
mm_id(const mm_t *mm)
{
    return mm ? mm->id : "";
}

int
mm_is_connected(const mm_t *mm)
{
    return mm != NULL && mm->state == MMI_CONNECTED;
}

const char *
mm_uri(const mm_t *mm)
{
    return mm ? mm->uri_redacted : NULL;
}

int
mm_heartbeat(const mm_t *mm)
{
    return mm && mm->state == MMI_CONNECTED ? mm->heartbeat : 0;
}
