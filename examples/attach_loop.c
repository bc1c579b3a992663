/*
 * attach_loop: micromsg on the application's own event_base, beside the
 * application's other event sources, all served by one
 * event_base_dispatch().
 *
 *   attach_loop [URI]  (argv[1], else $MM_URI, else $MM_TEST_URI, else amqp://localhost)
 *
 * The application has:
 *   - a timer that writes a line into a pipe every 30 ms (think: a user
 *     typing), and closes the pipe after the last line;
 *   - a read event on the other end of the pipe (think: stdin or a socket);
 *   - a micromsg instance "shout" (mm_opts_t.base = our base), handling the
 *     route "upper", to which every line read is sent as a request.
 * micromsg adds its own events (socket, timers) to our base; mm_free()
 * removes them all. Exits 0 when every line came back in upper case and the
 * pipe reached its end.
 */
#include <ctype.h>
#include <event2/event.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include <micromsg.h>

#include "example.h"

static const char *const lines[] = {"hello", "one event loop", "for everything"};
#define N_LINES 3

struct app;

/* One line sent as a request: what its answer must be. */
struct line_req {
    struct app *a;
    char want[64];
};

struct app {
    struct event_base *base;
    mm_t *mm;
    int pipe_rd, pipe_wr;
    struct event *writer, *reader;
    int written, sent, answered, wrong, eof;
    char buf[256]; /* bytes read but not yet a full line */
    size_t used;
    struct line_req req[N_LINES];
};

static void
maybe_done(struct app *a)
{
    if (a->eof && a->answered == N_LINES)
        event_base_loopbreak(a->base);
}

/* ---- micromsg: the service and the client side ---- */

/* Route "upper": answer the string in upper case. */
static void
on_upper(mm_msg_t *msg, void *ud)
{
    (void) ud;
    const msgpack_object *o = mm_msg_body(msg);
    if (o->type != MSGPACK_OBJECT_STR) {
        mm_msg_reject(msg, "badArguments", "upper wants a string");
        return;
    }
    char s[256];
    size_t n = o->via.str.size < sizeof s - 1 ? o->via.str.size : sizeof s - 1;
    for (size_t i = 0; i < n; i++)
        s[i] = (char) toupper((unsigned char) o->via.str.ptr[i]);
    s[n] = '\0';
    mm_body_t *b = mm_body_new();
    mm_body_str(b, s);
    mm_msg_reply(msg, mm_body_data(b), mm_body_len(b));
    mm_body_free(b);
}

/* The answer to one line: exactly one call per request. */
static void
on_answer(mm_msg_t *msg, void *ud)
{
    struct line_req *r = ud;
    const msgpack_object *o = mm_msg_body(msg);
    int ok = mm_msg_status(msg) == MM_OK && o->type == MSGPACK_OBJECT_STR &&
             o->via.str.size == strlen(r->want) &&
             memcmp(o->via.str.ptr, r->want, o->via.str.size) == 0;
    printf("micromsg answer: \"%s\" %s\n", ok ? r->want : mm_msg_error_text(msg),
           ok ? "ok" : "WRONG");
    r->a->wrong += !ok;
    r->a->answered++;
    maybe_done(r->a);
}

/* A full line read from the pipe: send it to "shout"."upper". */
static void
send_line(struct app *a, const char *line)
{
    if (a->sent == N_LINES) {
        a->wrong++; /* more lines than written */
        return;
    }
    struct line_req *r = &a->req[a->sent++];
    r->a = a;
    size_t n = strlen(line) < sizeof r->want - 1 ? strlen(line) : sizeof r->want - 1;
    for (size_t i = 0; i < n; i++)
        r->want[i] = (char) toupper((unsigned char) line[i]);
    r->want[n] = '\0';
    mm_body_t *b = mm_body_new();
    mm_body_str(b, line);
    mm_request_opts_t ro = MM_REQUEST_OPTS_INIT;
    ro.timeout_ms = 5000;
    if (mm_request(a->mm, "shout", "upper", mm_body_data(b), mm_body_len(b), &ro, on_answer, r,
                   NULL) != MM_OK) {
        fprintf(stderr, "mm_request: %s\n", mm_last_error(a->mm));
        a->wrong++;
        a->answered++; /* no callback will come for it */
    }
    mm_body_free(b);
}

/* ---- the application's own event sources ---- */

/* Timer: one more line into the pipe; after the last, close it (EOF). */
static void
on_write_tick(evutil_socket_t fd, short what, void *arg)
{
    struct app *a = arg;
    (void) fd;
    (void) what;
    if (a->written == N_LINES) {
        close(a->pipe_wr); /* the reader sees end of file */
        a->pipe_wr = -1;
        return;
    }
    const char *l = lines[a->written++];
    printf("app timer: typing \"%s\"\n", l);
    if (write(a->pipe_wr, l, strlen(l)) < 0 || write(a->pipe_wr, "\n", 1) < 0)
        perror("write");
    const struct timeval every = {0, 30 * 1000};
    evtimer_add(a->writer, &every);
}

/* Read event: cut what arrived into lines; at end of file, stop reading. */
static void
on_readable(evutil_socket_t fd, short what, void *arg)
{
    struct app *a = arg;
    (void) what;
    ssize_t n = read(fd, a->buf + a->used, sizeof a->buf - 1 - a->used);
    if (n <= 0) { /* 0: the writer closed the pipe */
        printf("app reader: end of input\n");
        event_del(a->reader);
        a->eof = 1;
        maybe_done(a);
        return;
    }
    a->used += (size_t) n;
    a->buf[a->used] = '\0';
    char *start = a->buf, *nl;
    while ((nl = strchr(start, '\n')) != NULL) {
        *nl = '\0';
        printf("app reader: read \"%s\", asking micromsg\n", start);
        send_line(a, start);
        start = nl + 1;
    }
    a->used = strlen(start); /* keep a partial line for the next read */
    memmove(a->buf, start, a->used);
}

/* Our event sources: the pipe, its reader and the typing timer. */
static int
app_events(struct app *a)
{
    int fds[2];
    if (pipe(fds) != 0)
        return -1;
    a->pipe_rd = fds[0];
    a->pipe_wr = fds[1];
    a->reader = event_new(a->base, a->pipe_rd, EV_READ | EV_PERSIST, on_readable, a);
    a->writer = evtimer_new(a->base, on_write_tick, a);
    if (a->reader == NULL || a->writer == NULL)
        return -1;
    event_add(a->reader, NULL);
    const struct timeval soon = {0, 30 * 1000};
    return evtimer_add(a->writer, &soon);
}

/* micromsg on our base: mm_run() is not used, our dispatch serves it. */
static int
mm_start(struct app *a, const char *uri)
{
    mm_opts_t opts = MM_OPTS_INIT;
    opts.base = a->base;
    opts.flags = MM_OPT_NO_PEERS; /* no heartbeats or election: not needed here */
    a->mm = mm_new("shout", &opts);
    if (a->mm == NULL)
        return MM_ENOMEM;
    int rc = mm_last_code(a->mm);
    if (rc == MM_OK)
        rc = mm_handle(a->mm, "upper", on_upper, NULL, NULL, NULL);
    if (rc == MM_OK)
        rc = mm_connect(a->mm, uri); /* blocking; the base runs only after */
    if (rc != MM_OK)
        fprintf(stderr, "attach_loop: %s: %s\n", mm_err_name(rc), mm_last_error(a->mm));
    return rc;
}

int
main(int argc, char **argv)
{
    setvbuf(stdout, NULL, _IOLBF, 0);
    struct app a = {.base = event_base_new(), .pipe_rd = -1, .pipe_wr = -1};
    if (a.base == NULL)
        return 2;
    int rc = mm_start(&a, example_uri(argc, argv));
    if (rc == MM_OK && app_events(&a) != 0) {
        perror("attach_loop: pipe or events");
        rc = MM_ENOMEM;
    }
    if (rc == MM_OK) {
        const struct timeval limit = {10, 0}; /* a lost answer fails the run, not hangs it */
        event_base_loopexit(a.base, &limit);
        event_base_dispatch(a.base); /* serves the pipe, the timer and micromsg */
    }
    mm_free(a.mm); /* removes every event micromsg added to our base */
    if (a.reader != NULL)
        event_free(a.reader);
    if (a.writer != NULL)
        event_free(a.writer);
    if (a.pipe_rd >= 0)
        close(a.pipe_rd);
    if (a.pipe_wr >= 0)
        close(a.pipe_wr);
    event_base_free(a.base);
    int ok = rc == MM_OK && a.eof && a.answered == N_LINES && a.wrong == 0;
    printf("attach_loop: %d lines written, %d answered, %d wrong: %s\n", a.written, a.answered,
           a.wrong, ok ? "ok" : "FAILED");
    return ok ? 0 : 1;
}
