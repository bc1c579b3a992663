/*
 * A foreign peer for integration tests: plain rabbitmq-c, blocking, on its own
 * connection to $MM_TEST_URI. It sends what micromsg would never send itself
 * (malformed or late messages, shuffled stream parts) and checks the broker's
 * side. Calls assert that the broker agreed (Check), so a test reads as a
 * list of steps. Channel 1 is opened by mmt_peer_open and used for
 * everything but mmt_peer_channel's fresh ones.
 */
#ifndef MMT_PEER_H
#define MMT_PEER_H

#include <amqp.h>
#include <stdbool.h>
#include <stdint.h>

/* x-expires of request queues (PROTOCOL.md section 1). */
#define MMT_REQUEST_QUEUE_EXPIRES 86400000

/* An amqp_bytes_t of a string literal, without its terminating NUL. */
#define MMT_BYTES(lit) ((amqp_bytes_t){sizeof(lit) - 1, (void *) (lit)})

struct mmt_peer {
    amqp_connection_state_t c;
    uint16_t next_ch;              /* the next channel mmt_peer_channel opens */
    bool confirms;                 /* publisher confirms on channel 1 */
    uint64_t published, confirmed; /* counted when confirms are on */
    char reply[128];               /* mmt_peer_reply_queue's queue */
    char served[256];              /* mmt_peer_serve's queue, deleted by mmt_peer_close */
};

/* Connect, log in, open channel 1. */
void mmt_peer_open(struct mmt_peer *p);

/* One raw AMQP connection attempt to `uri` (TCP connect, login, channel 1 open, close), each
 * step bounded by timeout_ms: true when the broker accepted it. No Check calls, so forked
 * helper processes may use it. */
bool mmt_broker_accepts(const char *uri, int timeout_ms);

/* Delete the served queue (if any), close the connection. Does nothing when not open. */
void mmt_peer_close(struct mmt_peer *p);

/* Assert that the last synchronous method succeeded; `what` names it in the failure. */
void mmt_peer_ok(const struct mmt_peer *p, const char *what);

/* Open a fresh channel; its number. */
uint16_t mmt_peer_channel(struct mmt_peer *p);

/* Turn on publisher confirms on channel 1: later publishes are mandatory (a message
 * no queue takes fails mmt_peer_confirmed) and counted. */
void mmt_peer_use_confirms(struct mmt_peer *p);

/* Wait (timeout_ms at most per frame) for the confirms of everything published. */
void mmt_peer_confirmed(struct mmt_peer *p, int timeout_ms);

/* "q.requests.<service>.<route>" in buf. */
const char *mmt_request_queue(char *buf, size_t len, const char *service, const char *route);

/* Declare a server-named exclusive queue and consume it (no ack) on channel 1: answers
 * to requests sent with reply_to = p->reply arrive there. */
void mmt_peer_reply_queue(struct mmt_peer *p);

/* Serve `route` of `service`: declare its request queue as PROTOCOL.md section 1 says
 * (durable, x-expires) and consume it (no ack) on channel 1. */
void mmt_peer_serve(struct mmt_peer *p, const char *service, const char *route);

/* The next delivery on any of the peer's consumers within timeout_ms; false if none.
 * On true the caller destroys env (amqp_destroy_envelope). */
bool mmt_peer_read(struct mmt_peer *p, int timeout_ms, amqp_envelope_t *env);

/* What an answer to a request taken by the peer needs. */
struct mmt_peer_req {
    char corr[128], reply_to[256];
};

/* Take the next delivery (within timeout_ms): a request, with a correlation id and reply_to. */
void mmt_peer_take(struct mmt_peer *p, int timeout_ms, struct mmt_peer_req *q);

/* ---- AMQP header tables, built in place ---- */

#define MMT_TABLE_MAX 8

/* Entries point at the caller's strings and tables: keep them alive until published. */
struct mmt_table {
    amqp_table_entry_t e[MMT_TABLE_MAX];
    int n;
};

void mmt_table_str(struct mmt_table *t, const char *key, const char *val);
void mmt_table_i32(struct mmt_table *t, const char *key, int32_t val);
void mmt_table_i64(struct mmt_table *t, const char *key, int64_t val);
void mmt_table_bool(struct mmt_table *t, const char *key, bool val);
void mmt_table_table(struct mmt_table *t, const char *key, const struct mmt_table *val);

/* The table as rabbitmq-c takes it (pointing into t). */
amqp_table_t mmt_table_of(const struct mmt_table *t);

/* ---- publishing ---- */

/* Properties of a published message; a NULL field is left out. */
struct mmt_props {
    const char *content_type, *content_encoding, *correlation_id, *reply_to;
    const struct mmt_table *headers;
};

/* Publish `body` through the default exchange to the queue `routing_key` on channel 1. */
void mmt_peer_publish(struct mmt_peer *p, const char *routing_key, const struct mmt_props *props,
                      amqp_bytes_t body);

/* An answer as the protocol (section 4) frames it: __mms {isError: false, isEnd,
 * isStream (only when stream), sequence}. */
struct mmt_answer {
    const char *to, *correlation_id;
    const char *content_type; /* NULL: application/msgpack */
    bool end, stream;
    int64_t sequence;
    amqp_bytes_t body;
};

void mmt_peer_answer(struct mmt_peer *p, const struct mmt_answer *a);

#endif
