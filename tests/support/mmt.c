/* Test support: see mmt.h. */
#include "mmt.h"

#include <errno.h>
#include <event2/event.h>
#include <fcntl.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/prctl.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

static void
set_flag(evutil_socket_t fd, short what, void *arg)
{
    (void) fd;
    (void) what;
    *(bool *) arg = true;
}

bool
mmt_wait(struct event_base *base, const bool *done, int timeout_ms)
{
    bool expired = false;
    struct timeval tv = {timeout_ms / 1000, (timeout_ms % 1000) * 1000};
    struct event *t = evtimer_new(base, set_flag, &expired);
    ck_assert_ptr_nonnull(t);
    evtimer_add(t, &tv);
    while (!*done && !expired)
        event_base_loop(base, EVLOOP_ONCE);
    event_free(t);
    return *done;
}

const char *
mmt_uri(void)
{
    const char *u = getenv("MM_TEST_URI");
    ck_assert_msg(
        u != NULL && *u != '\0',
        "MM_TEST_URI is not set: run the integration tests through tests/harness/broker.sh");
    return u;
}

const char *
mmt_unique(const char *prefix, char *buf, size_t len)
{
    static unsigned n;
    snprintf(buf, len, "t-%s-%ld-%u", prefix, (long) getpid(), ++n);
    return buf;
}

int
mmt_ctl(const char *args)
{
    const char *ctl = getenv("MM_TEST_CTL");
    ck_assert_msg(ctl != NULL, "MM_TEST_CTL is not set: run through tests/harness/broker.sh");
    char cmd[1024];
    snprintf(cmd, sizeof cmd, "%s %s >/dev/null 2>&1", ctl, args);
    int st = system(cmd);
    return st == -1 ? -1 : WEXITSTATUS(st);
}

int
mmt_kill_connection(int local_port)
{
    const char *ctl = getenv("MM_TEST_CTL");
    ck_assert_msg(ctl != NULL, "MM_TEST_CTL is not set: run through tests/harness/broker.sh");
    char cmd[1024], line[512], pid[256] = "";
    snprintf(cmd, sizeof cmd, "%s list_connections -s pid peer_port 2>/dev/null", ctl);
    FILE *p = popen(cmd, "r");
    ck_assert_ptr_nonnull(p);
    while (fgets(line, sizeof line, p) != NULL) {
        char id[256];
        int port = 0;
        if (sscanf(line, "%255s %d", id, &port) == 2 && port == local_port)
            snprintf(pid, sizeof pid, "%s", id);
    }
    pclose(p);
    if (pid[0] == '\0')
        return -1;
    snprintf(cmd, sizeof cmd, "close_connection '%s' 'killed by the test'", pid);
    return mmt_ctl(cmd);
}

int
mmt_scale(int ms)
{
    const char *m = getenv("CK_TIMEOUT_MULTIPLIER");
    int k = m ? atoi(m) : 1;
    return ms * (k > 0 ? k : 1);
}

uint64_t
mmt_now_ms(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (uint64_t) ts.tv_sec * 1000u + (uint64_t) ts.tv_nsec / 1000000u;
}

TCase *
mmt_tcase(Suite *s, const char *name, SFun setup, SFun teardown, int timeout_s)
{
    TCase *tc = tcase_create(name);
    if (setup != NULL || teardown != NULL)
        tcase_add_checked_fixture(tc, setup, teardown);
    tcase_set_timeout(tc, timeout_s);
    suite_add_tcase(s, tc);
    return tc;
}

int
mmt_run(Suite *s)
{
    SRunner *sr = srunner_create(s);
    srunner_run_all(sr, CK_NORMAL);
    int failed = srunner_ntests_failed(sr);
    srunner_free(sr);
    return failed == 0 ? EXIT_SUCCESS : EXIT_FAILURE;
}

int
mmt_fork_piped(int *ret_fd, bool survive_parent)
{
    int p[2];
    ck_assert_int_eq(pipe(p), 0);
    pid_t parent = getpid();
    fflush(stdout);
    pid_t pid = fork();
    ck_assert_int_ge(pid, 0);
    if (pid == 0) {
        close(p[0]);
        if (!survive_parent)
            prctl(PR_SET_PDEATHSIG, SIGKILL);
        if (getppid() != parent)
            _exit(5); /* the parent died before the line above */
        *ret_fd = p[1];
        return 0;
    }
    close(p[1]);
    fcntl(p[0], F_SETFL, O_NONBLOCK);
    *ret_fd = p[0];
    return (int) pid;
}

int
mmt_read_records(int fd, size_t size, void (*fn)(const void *rec, void *ud), void *ud)
{
    char rec[64];
    ck_assert_uint_le(size, sizeof rec);
    ssize_t n;
    while ((n = read(fd, rec, size)) == (ssize_t) size)
        fn(rec, ud);
    if (n == 0 || (n < 0 && errno != EAGAIN && errno != EINTR))
        return 1;
    return n > 0 ? -1 : 0;
}
