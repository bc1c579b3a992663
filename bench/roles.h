/*
 * The benchmark's roles: one process each, started by the driver
 * (bench/driver.c) as "mm_bench role <impl> <role> [options]". Both
 * implementations play every role with the same queue shapes, the same
 * bodies (bench.h) and the same parameters; each returns the process's exit
 * status. What each role does:
 *
 * rpc-server  consumes q.requests.<name>.echo (durable, x-expires 24 h),
 *             manual ack, prefetch; answers each request with its body to its
 *             reply_to and correlation id, then acks. READY once consuming;
 *             a RESULT for the n requests after the first warmup ones; serves
 *             until SIGTERM.
 * rpc-client  keeps `window` requests in flight to that queue, replies on a
 *             private exclusive reply queue consumed without ack; RESULT over
 *             the n replies after warmup, with p50_us and p99_us of the round
 *             trip (from the send time in the body); exits.
 * ev-listen   an exclusive queue bound to x.pubSub (topic) with "<name>.x",
 *             manual ack, prefetch; READY; RESULT once warmup + n events
 *             arrived, the rate end to end from the send time of event
 *             number warmup to the last arrival; exits.
 * ev-emit     publishes warmup + n events to x.pubSub "<name>.x" as fast as it
 *             can (no confirms); RESULT; exits once all are written.
 * task-work   consumes q.requests.<name>.work (durable, x-expires 24 h),
 *             manual ack, prefetch; READY; RESULT like ev-listen; exits.
 * task-pub    publishes warmup + n tasks to that queue (mandatory, persistent
 *             unless told transient) with publisher confirms, at most
 *             `window` unconfirmed; RESULT (rate: confirmed tasks/s) once all
 *             are confirmed; exits.
 */
#ifndef MM_BENCH_ROLES_H
#define MM_BENCH_ROLES_H

#include "bench.h"

typedef int (*bench_role_fn)(const bench_args_t *a);

/* "<prog> <verb> raw|mm ROLE [options]": parses the options, runs the role;
 * the exit status (role_main.c). */
int bench_role_main(int argc, char **argv);
/* $MM_URI, else amqp://guest:guest@127.0.0.1:5672/ */
const char *bench_default_uri(void);

int raw_rpc_server(const bench_args_t *a);
int raw_rpc_client(const bench_args_t *a);
int raw_ev_listen(const bench_args_t *a);
int raw_ev_emit(const bench_args_t *a);
int raw_task_work(const bench_args_t *a);
int raw_task_pub(const bench_args_t *a);

int raw_topic_prep(const bench_args_t *a); /* bench/raw_topic.c */
int raw_topic_pub(const bench_args_t *a);
int raw_topic_fill(const bench_args_t *a);
int raw_topic_read(const bench_args_t *a);

int mmb_rpc_server(const bench_args_t *a);
int mmb_rpc_client(const bench_args_t *a);
int mmb_ev_listen(const bench_args_t *a);
int mmb_ev_emit(const bench_args_t *a);
int mmb_task_work(const bench_args_t *a);
int mmb_task_pub(const bench_args_t *a);
int mmb_topic_prep(const bench_args_t *a); /* bench/mm_topic.c */
int mmb_topic_pub(const bench_args_t *a);
int mmb_topic_fill(const bench_args_t *a);
int mmb_topic_read(const bench_args_t *a);

#endif
