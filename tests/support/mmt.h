/*
 * Test support: bounded waits on a libevent loop, unique names, the harness
 * broker's URI and its control script. Integration tests fail (never skip)
 * when no broker is given: a skipped test cannot fail.
 */
#ifndef MMT_H
#define MMT_H

#include <check.h>
#include <stdbool.h>
#include <stdint.h>

struct event_base;

/* Run the loop until *done or timeout_ms passed; returns *done. */
bool mmt_wait(struct event_base *base, const bool *done, int timeout_ms);
#define MMT_WAIT(base, flag, ms)                                                                   \
    ck_assert_msg(mmt_wait((base), &(flag), (ms)), "no '%s' within %d ms", #flag, (ms))

/* $MM_TEST_URI; fails the test when it is not set. */
const char *mmt_uri(void);

/* A name unique to this process and call: "<prefix>-<pid>-<n>". Static buffer per call site
 * is not needed: the result is strdup'd into `buf`. */
const char *mmt_unique(const char *prefix, char *buf, size_t len);

/* Run "$MM_TEST_CTL ARGS" (rabbitmqctl against the harness node); returns its exit status. */
int mmt_ctl(const char *args);

/* Force-close, from the broker side, the connection whose local TCP port is `port`. */
int mmt_kill_connection(int local_port);

/* Fork a child with a pipe back to the parent (stdout flushed first). In the child:
 * returns 0 and *ret_fd is the write end; the child dies with the parent
 * (PR_SET_PDEATHSIG) unless `survive_parent`. In the parent: returns the child's
 * pid and *ret_fd is the read end, non-blocking. */
int mmt_fork_piped(int *ret_fd, bool survive_parent);

/* Read whole records of `size` bytes (at most 64) from a child's non-blocking pipe,
 * passing each to fn. Returns 1 at the end of the pipe (or an error), -1 after
 * a partial record (they are written whole: a bug), 0 when it may say more. */
int mmt_read_records(int fd, size_t size, void (*fn)(const void *rec, void *ud), void *ud);

/* The timeout multiplier for slow builds (sanitizers): $CK_TIMEOUT_MULTIPLIER, default 1. */
int mmt_scale(int ms);

/* CLOCK_MONOTONIC in milliseconds. */
uint64_t mmt_now_ms(void);

/* A test case named `name` added to s, with a checked fixture (setup and teardown may
 * be NULL) and a timeout of timeout_s seconds (scaled by Check's CK_TIMEOUT_MULTIPLIER). */
TCase *mmt_tcase(Suite *s, const char *name, SFun setup, SFun teardown, int timeout_s);

/* Run a suite; exit status for main(). */
int mmt_run(Suite *s);

#endif
