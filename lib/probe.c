/*
 * Is the broker answering? Checked on the loop before each reconnect
 * attempt, because the attempt itself (rabbitmq-c's connect and login) is
 * blocking: against a broker that is down it fails at once, but against one
 * that is frozen or behind a silent network it would hold the loop for the
 * whole connect timeout, every attempt. The probe is a non-blocking TCP
 * connect and, for plain AMQP, the protocol header answered by the first
 * bytes of connection.start, bounded by the connect timeout. Only a broker
 * that answered gets the blocking attempt. (Name resolution stays blocking:
 * getaddrinfo has no bound we control; it is instant for addresses.)
 */
#include <errno.h>
#include <netdb.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <unistd.h>

#include <event2/event.h>

#include "internal.h"

struct mmi_probe {
    mm_t *mm;
    evutil_socket_t fd;
    struct event *ev;
    bool header_sent;
    uint64_t deadline;
    void (*done)(mm_t *mm, int rc, const char *detail);
};

static void
finish(struct mmi_probe *p, int rc, const char *detail)
{
    mm_t *mm = p->mm;
    void (*done)(mm_t *, int, const char *) = p->done;
    mmi_probe_cancel(mm);
    done(mm, rc, detail);
}

static int64_t
left_ms(const struct mmi_probe *p)
{
    uint64_t now = mmi_now_ms();
    return now >= p->deadline ? 0 : (int64_t) (p->deadline - now);
}

static void on_io(evutil_socket_t fd, short what, void *arg);

static int
wait_for(struct mmi_probe *p, short what)
{
    int64_t ms = left_ms(p);
    struct timeval tv = {.tv_sec = ms / 1000, .tv_usec = (ms % 1000) * 1000};
    if (p->ev != NULL)
        event_free(p->ev);
    p->ev = event_new(p->mm->base, p->fd, what, on_io, p);
    return p->ev != NULL && event_add(p->ev, &tv) == 0 ? MM_OK : MM_ENOMEM;
}

static void
on_connected(struct mmi_probe *p)
{
    int err = 0;
    socklen_t len = sizeof err;
    char detail[MMI_DETAIL];
    if (getsockopt(p->fd, SOL_SOCKET, SO_ERROR, &err, &len) != 0 || err != 0) {
        snprintf(detail, sizeof detail, "connect to %s:%d: %s", p->mm->uri.host, p->mm->uri.port,
                 strerror(err ? err : errno));
        finish(p, MM_EUNREACHABLE, detail);
        return;
    }
    if (p->mm->uri.tls) { /* a TLS listener says nothing before the client hello */
        finish(p, MM_OK, "");
        return;
    }
    static const char header[8] = {'A', 'M', 'Q', 'P', 0, 0, 9, 1};
    p->header_sent = send(p->fd, header, sizeof header, MSG_NOSIGNAL) == (ssize_t) sizeof header;
    if (!p->header_sent || wait_for(p, EV_READ) != MM_OK)
        finish(p, MM_EUNREACHABLE, "cannot send the AMQP protocol header");
}

static void
on_io(evutil_socket_t fd, short what, void *arg)
{
    struct mmi_probe *p = arg;
    char detail[MMI_DETAIL], buf[64];
    (void) fd;
    mmi_enter(p->mm);
    mm_t *mm = p->mm;
    if (what & EV_TIMEOUT) {
        snprintf(detail, sizeof detail, "%s:%d did not answer within %u ms%s", mm->uri.host,
                 mm->uri.port, mm->opts.connect_timeout_ms,
                 p->header_sent ? " (the broker accepted TCP but sent no AMQP)" : "");
        finish(p, MM_ETIMEDOUT, detail);
    } else if (!p->header_sent) {
        on_connected(p);
    } else {
        ssize_t n = recv(p->fd, buf, sizeof buf, 0);
        snprintf(detail, sizeof detail, "%s:%d closed the connection before connection.start",
                 mm->uri.host, mm->uri.port);
        finish(p, n > 0 ? MM_OK : MM_EUNREACHABLE, n > 0 ? "" : detail);
    }
    mmi_leave(mm);
}

static int
open_fd(mm_t *mm, struct mmi_probe *p, char *detail)
{
    char port[16];
    snprintf(port, sizeof port, "%d", mm->uri.port);
    struct addrinfo hints = {.ai_family = AF_UNSPEC, .ai_socktype = SOCK_STREAM}, *ai = NULL;
    int gai = getaddrinfo(mm->uri.host, port, &hints, &ai);
    if (gai != 0) {
        snprintf(detail, MMI_DETAIL, "resolving %s: %s", mm->uri.host, gai_strerror(gai));
        return MM_EUNREACHABLE;
    }
    p->fd = socket(ai->ai_family, ai->ai_socktype, ai->ai_protocol);
    int rc = MM_EUNREACHABLE;
    if (p->fd >= 0 && evutil_make_socket_nonblocking(p->fd) == 0) {
        if (connect(p->fd, ai->ai_addr, ai->ai_addrlen) == 0 || errno == EINPROGRESS)
            rc = MM_OK;
        else
            snprintf(detail, MMI_DETAIL, "connect to %s:%d: %s", mm->uri.host, mm->uri.port,
                     strerror(errno));
    }
    freeaddrinfo(ai);
    return rc;
}

int
mmi_probe_start(mm_t *mm, void (*done)(mm_t *mm, int rc, const char *detail))
{
    char detail[MMI_DETAIL] = "cannot create a socket";
    struct mmi_probe *p = calloc(1, sizeof *p);
    if (p == NULL)
        return MM_ENOMEM;
    *p = (struct mmi_probe){.mm = mm, .fd = -1, .done = done};
    uint32_t timeout = mm->uri.connection_timeout_ms ? (uint32_t) mm->uri.connection_timeout_ms
                                                     : mm->opts.connect_timeout_ms;
    p->deadline = mmi_now_ms() + timeout;
    mm->probe = p;
    int rc = open_fd(mm, p, detail);
    if (rc == MM_OK)
        rc = wait_for(p, EV_WRITE);
    if (rc != MM_OK)
        finish(p, rc, detail);
    return MM_OK;
}

void
mmi_probe_cancel(mm_t *mm)
{
    struct mmi_probe *p = mm->probe;
    if (p == NULL)
        return;
    mm->probe = NULL;
    if (p->ev != NULL)
        event_free(p->ev);
    if (p->fd >= 0)
        evutil_closesocket(p->fd);
    free(p);
}
