/*
 * A topic reader in a process of its own, for test_topics (a crash test must
 * kill a whole process). Reads <topic> as <consumer> of <service> from the
 * stored cursor (fallback: the first record), appends the offset of each
 * record it handles to <file> (one line each, flushed before the handler
 * returns, so that a SIGKILL loses nothing handled), and reports on stdout
 * one line per reader event: "ACTIVE <ms>", "STANDBY <ms>" or "ERROR <code>
 * <text>", with the CLOCK_MONOTONIC milliseconds of the event (comparable
 * across processes). SIGTERM stops it cleanly: mm_reader_stop (the cursor
 * is written), mm_close (which waits for its confirm), exit 0.
 *
 * usage: topic_reader_proc URI SERVICE TOPIC CONSUMER FILE CURSOR_EVERY PREFETCH DELAY_US
 */
#include <event2/event.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <time.h>
#include <unistd.h>

#include "micromsg.h"

static FILE *out;
static unsigned delay_us;

static uint64_t
now_ms(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (uint64_t) ts.tv_sec * 1000u + (uint64_t) ts.tv_nsec / 1000000u;
}

static void
on_record(mm_msg_t *msg, void *ud)
{
    (void) ud;
    if (fprintf(out, "%lld\n", (long long) mm_msg_offset(msg)) < 0 || fflush(out) != 0)
        _exit(7);
    if (delay_us > 0)
        usleep(delay_us); /* the handler's work: keeps the reader busy mid-way */
}

static void
on_event(mm_t *mm, const mm_event_t *ev, void *ud)
{
    (void) mm;
    (void) ud;
    if (ev->type == MM_EV_READER_ACTIVE)
        printf("ACTIVE %llu\n", (unsigned long long) now_ms());
    else if (ev->type == MM_EV_READER_STANDBY)
        printf("STANDBY %llu\n", (unsigned long long) now_ms());
    else if (ev->type == MM_EV_ERROR)
        printf("ERROR %d %s\n", ev->code, ev->text);
    fflush(stdout);
}

static void
on_term(evutil_socket_t sig, short what, void *base)
{
    (void) sig;
    (void) what;
    event_base_loopbreak(base);
}

int
main(int argc, char **argv)
{
    if (argc != 9) {
        fprintf(stderr,
                "usage: %s URI SERVICE TOPIC CONSUMER FILE CURSOR_EVERY PREFETCH DELAY_US\n",
                argv[0]);
        return 64;
    }
    alarm(120); /* never outlives a test */
    out = fopen(argv[5], "a");
    delay_us = (unsigned) atoi(argv[8]);
    struct event_base *base = event_base_new();
    if (out == NULL || base == NULL)
        return 2;
    mm_opts_t o = MM_OPTS_INIT;
    o.base = base;
    o.on_event = on_event;
    o.flags = MM_OPT_NO_PEERS;
    mm_t *mm = mm_new(argv[2], &o);
    if (mm == NULL || mm_connect(mm, argv[1]) != MM_OK)
        return 3;
    mm_read_opts_t ro = MM_READ_OPTS_INIT;
    ro.cursor_every = (uint32_t) atoi(argv[6]);
    ro.prefetch = (uint16_t) atoi(argv[7]);
    mm_reader_t *r = NULL;
    mm_from_t from = {MM_FROM_CURSOR, 0};
    if (mm_topic_read(mm, argv[3], argv[4], from, on_record, NULL, &ro, &r) != MM_OK)
        return 4;
    struct event *term = evsignal_new(base, SIGTERM, on_term, base);
    event_add(term, NULL);
    event_base_dispatch(base);
    int rc = mm_reader_stop(r);
    mm_close(mm);
    mm_free(mm);
    event_free(term);
    event_base_free(base);
    fclose(out);
    return rc == MM_OK ? 0 : 5;
}
