/*
 * Looking at a service: `mmctl stat` (a route's request queue), `mmctl
 * status` (its members, as their heartbeats say), `mmctl leader` (waits for
 * a leader, bounded), and `mmctl join` (an instance that takes part in the
 * election and prints every change of leader).
 */
#include <jansson.h>
#include <stdio.h>

#include "mmctl.h"

#define WAIT_TIMEOUT_MS 5000 /* leader's wait without --timeout */

int
mmctl_stat(struct mmctl_args *a)
{
    struct mmctl_session s = {0};
    int rc = mmctl_open(&s, a, NULL, MMCTL_CLIENT);
    if (rc != MMCTL_EXIT_OK)
        return rc;
    mm_stat_t st = {0};
    rc = mm_queue_stat(s.mm, a->args[0], a->args[1], &st);
    if (rc == MM_ENOENT)
        mmctl_err("no queue for %s.%s: nobody ever handled it", a->args[0], a->args[1]);
    else if (rc != MM_OK)
        mmctl_err("stat failed: %s", mm_last_error(s.mm));
    mmctl_close(&s);
    if (rc != MM_OK)
        return mmctl_exit_of(rc);
    if (a->json) {
        json_t *j =
            json_pack("{s:s, s:s, s:I, s:I}", "service", a->args[0], "route", a->args[1],
                      "messages", (json_int_t) st.messages, "consumers", (json_int_t) st.consumers);
        mmctl_print_json(j);
    } else {
        printf("%s.%s: %u message(s) ready, %u consumer(s)\n", a->args[0], a->args[1], st.messages,
               st.consumers);
    }
    return MMCTL_EXIT_OK;
}

struct status_state {
    struct mmctl_session *s;
    int code;
    const char *verb; /* "status" or "leader" */
};

/* A member's QoS state: "-" when it does not run QoS (or is not micromsg),
 * else its level and what presses it ("0 lag": paused by a late loop). */
static const char *
qos_text(const mm_member_t *m, char *buf, size_t cap)
{
    if (!m->qos)
        return "-";
    snprintf(buf, cap, "%u%s%s%s", m->qos_level, (m->qos_pressure & MM_PRESSURE_LAG) ? " lag" : "",
             (m->qos_pressure & MM_PRESSURE_MEM) ? " mem" : "",
             (m->qos_pressure & MM_PRESSURE_HARD) ? " hard" : "");
    return buf;
}

static json_t *
member_json(const char *service, const mm_member_t *m)
{
    json_t *qos = m->qos ? json_pack("{s:I, s:I}", "level", (json_int_t) m->qos_level, "pressure",
                                     (json_int_t) m->qos_pressure)
                         : json_null();
    return json_pack("{s:s, s:s, s:b, s:b, s:s?, s:I, s:I, s:I, s:o}", "service", service, "id",
                     m->id, "ready", m->ready, "leader", m->leader, "leaderId", m->leader_id,
                     "uptimeMs", (json_int_t) m->uptime_ms, "rss", (json_int_t) m->rss,
                     "knownPeers", (json_int_t) m->known_peers, "qos", qos);
}

static void
print_members(const struct mmctl_args *a, const mm_status_t *st)
{
    if (!a->json)
        printf("%-36s  %-5s  %-6s  %10s  %10s  %5s  %s\n", "ID", "READY", "LEADER", "UPTIME",
               "MEMORY", "PEERS", "QOS");
    for (size_t i = 0; i < st->count; i++) {
        const mm_member_t *m = &st->members[i];
        if (a->json) {
            mmctl_print_json(member_json(st->service, m));
            continue;
        }
        char q[48];
        printf("%-36s  %-5s  %-6s  %9.1fs  %8.1fMB  %5u  %s\n", m->id, m->ready ? "yes" : "no",
               m->leader ? "yes" : "no", (double) m->uptime_ms / 1000.0,
               (double) m->rss / (1024.0 * 1024.0), m->known_peers, qos_text(m, q, sizeof q));
    }
    fflush(stdout);
}

static void
print_leader(const struct mmctl_args *a, const mm_status_t *st)
{
    if (a->json)
        mmctl_print_json(
            json_pack("{s:s, s:s}", "service", st->service, "leaderId", st->leader_id));
    else
        printf("%s\n", st->leader_id);
    fflush(stdout);
}

static void
on_status(mm_t *mm, const mm_status_t *st, void *ud)
{
    (void) mm;
    struct status_state *r = ud;
    const char *service = r->s->a->args[0];
    r->code = st->code;
    if (st->code == MM_OK && r->verb[0] == 'l' && st->leader_id != NULL)
        print_leader(r->s->a, st);
    else if (st->code == MM_OK && r->verb[0] == 's')
        print_members(r->s->a, st);
    else if (st->code == MM_ENOENT)
        mmctl_err("no instance of %s answered", service);
    else if (st->code == MM_ETIMEDOUT)
        mmctl_err("no leader for %s within %lld ms", service,
                  (long long) mmctl_timeout(r->s->a, WAIT_TIMEOUT_MS));
    else
        mmctl_err("%s of %s failed: %s", r->verb, service, mm_strerror(st->code));
    mmctl_break(r->s);
}

/* status and leader: one status callback, then the exit code. */
static int
status_verb(struct mmctl_args *a, bool leader)
{
    struct mmctl_session s = {0};
    int rc = mmctl_open(&s, a, NULL, MMCTL_CLIENT);
    if (rc != MMCTL_EXIT_OK)
        return rc;
    struct status_state r = {.s = &s, .code = MM_ECANCELED, .verb = leader ? "leader" : "status"};
    if (leader)
        rc = mm_wait_service(s.mm, a->args[0], MM_WAIT_LEADER, mmctl_timeout(a, WAIT_TIMEOUT_MS),
                             on_status, &r);
    else
        rc = mm_get_status(s.mm, a->args[0], on_status, &r);
    if (rc != MM_OK)
        mmctl_err("%s of %s failed: %s", r.verb, a->args[0], mm_last_error(s.mm));
    else
        mmctl_loop(&s);
    mmctl_close(&s);
    return mmctl_exit_of(rc != MM_OK ? rc : r.code);
}

int
mmctl_status(struct mmctl_args *a)
{
    return status_verb(a, false);
}

int
mmctl_leader(struct mmctl_args *a)
{
    return status_verb(a, true);
}

struct join_state {
    uint64_t changes;
};

static void
print_change(struct mmctl_session *s, const char *what, const char *leader)
{
    if (s->a->json) {
        mmctl_print_json(json_pack("{s:s, s:s, s:s?, s:s}", "event", what, "service",
                                   mm_service(s->mm), "leaderId", leader, "id", mm_id(s->mm)));
        return;
    }
    printf("%s: %s\n", what, leader != NULL ? leader : "none");
    fflush(stdout);
}

static void
on_join_event(struct mmctl_session *s, const mm_event_t *ev)
{
    struct join_state *j = s->ud;
    if (ev->type == MM_EV_STEP_UP)
        print_change(s, "stepUp", ev->leader_id);
    else if (ev->type == MM_EV_STEP_DOWN)
        print_change(s, "stepDown", NULL);
    if (ev->type != MM_EV_LEADER)
        return;
    print_change(s, "leader", ev->leader_id);
    if (s->a->count > 0 && ++j->changes >= s->a->count)
        mmctl_break(s);
}

int
mmctl_join(struct mmctl_args *a)
{
    struct join_state j = {0};
    struct mmctl_session s = {.on_event = on_join_event, .ud = &j};
    int rc = mmctl_open(&s, a, a->args[0], MMCTL_ELECTOR);
    if (rc != MMCTL_EXIT_OK)
        return rc;
    mmctl_ready("joined %s as %s", a->args[0], mm_id(s.mm));
    mmctl_loop(&s);
    mmctl_close(&s);
    return MMCTL_EXIT_OK;
}
