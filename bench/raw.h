/*
 * The raw rabbitmq-c baseline's shared pieces (bench/raw.c), for the roles
 * written in other files (bench/raw_topic.c): the connection, checked
 * methods, the frame-level reader and publisher-confirm bookkeeping.
 */
#ifndef MM_BENCH_RAW_H
#define MM_BENCH_RAW_H

#include <amqp.h>
#include <stdint.h>
#include <sys/time.h>

#define RAW_CH 1
#define RAW_CTYPE "application/msgpack"
#define RAW_NAME_MAX 256

typedef amqp_connection_state_t conn_t;

/* One method read frame by frame, with its content when it carries one. The
 * pointers stay valid until the next amqp_maybe_release_buffers(). */
typedef struct {
    amqp_method_number_t id;
    void *method;
    amqp_basic_properties_t *props; /* NULL for a method without content */
    amqp_bytes_t body;              /* points into the library's pool */
} rx_t;

/* Publisher confirms: tags count from 1 on the channel; a ring of `window`
 * flags past the lowest unconfirmed tag (low). */
typedef struct {
    uint8_t *done; /* ring indexed by tag % window */
    uint64_t low;  /* lowest unconfirmed tag */
    uint64_t published;
    uint64_t window;
} confirms_t;

conn_t raw_connect(const char *uri); /* channel RAW_CH open; dies on failure */
void raw_close(conn_t c);
void check_reply(amqp_rpc_reply_t r, const char *what);
void check_rpc(conn_t c, const char *what); /* the last synchronous method */
void check_status(int st, const char *what);
/* The next method (AMQP_STATUS_OK), or AMQP_STATUS_TIMEOUT when tv is set. */
int rx_next(conn_t c, rx_t *m, const struct timeval *tv);
void die_unexpected(const rx_t *m, const char *role) __attribute__((noreturn));
/* A basic.ack (single or multiple) from m into cf; dies on a nack. */
void take_confirm(confirms_t *cf, const rx_t *m);

#endif
