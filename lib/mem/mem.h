/*
 * memory://NAME: an in-process broker behind the transport seam
 * (lib/transport.h). The instances of one process that connect to the same
 * NAME share one broker: exchanges (the default one, direct, fanout, topic),
 * queues (classic and stream) with their bindings, consumers with
 * per-consumer prefetch, unacked deliveries per channel, publisher confirms
 * and returns. Everything a broker would send goes into the receiving
 * connection's inbox and is handed to its channels' owners from an event on
 * that instance's loop, never inside the call that caused it.
 *
 * Files: registry.c (brokers by name, queue table, the dispatch run),
 * message.c, exchange.c, queue.c, stream.c, consumer.c (dispatch, acks,
 * basic.get), chan.c (channels and the inbox), inbox.c (upcalls),
 * methods.c (the synchronous methods), conn.c (the transport's entry points).
 *
 * One broker's objects belong to the thread of the instances using it: all
 * instances connected to one NAME must run on one thread. Only the registry
 * (finding a broker by name) is locked, so that different names can live in
 * different threads.
 */
#ifndef MM_MEM_H
#define MM_MEM_H

#include <stdarg.h>

#include "headers.h" /* mmi_field_integer */
#include "transport.h"

struct event;
typedef struct mem_queue mem_queue_t;
typedef struct mem_chan mem_chan_t;
typedef struct mem_consumer mem_consumer_t;
typedef struct mmi_mem_conn mem_conn_t;
typedef struct mmi_mem_broker mem_broker_t;

#define MEM_QUEUE_BUCKETS 256

/* AMQP reply codes the broker closes channels with. */
enum {
    MEM_NO_ROUTE = 312,
    MEM_ACCESS_REFUSED = 403,
    MEM_NOT_FOUND = 404,
    MEM_RESOURCE_LOCKED = 405,
    MEM_PRECONDITION_FAILED = 406,
    MEM_COMMAND_INVALID = 503,
    MEM_NOT_ALLOWED = 530,
    MEM_NOT_IMPLEMENTED = 540,
    MEM_INTERNAL_ERROR = 541,
};

/* Why a method failed: the channel.close the broker sends. */
typedef struct mem_err {
    uint16_t code; /* 0: no error */
    char text[MMI_ERRBUF];
} mem_err_t;

int mem_fail(mem_err_t *e, uint16_t code, const char *fmt, ...)
    __attribute__((format(printf, 3, 4)));

/* ---- messages (message.c): one allocation, shared by every queue it went to ---- */

typedef struct mem_msg {
    int refs;
    amqp_bytes_t exchange, routing_key;
    amqp_bytes_t props; /* encoded as on the wire */
    amqp_bytes_t body;
    int64_t ttl_ms;  /* the expiration property; -1: none */
    int64_t wall_ms; /* when published (stream timestamps) */
    char data[];
} mem_msg_t;

/* Copy of a publish: properties decoded (props) or encoded (encoded). NULL: no memory. */
mem_msg_t *mem_msg_new(amqp_bytes_t exchange, amqp_bytes_t routing_key,
                       const amqp_basic_properties_t *props, const amqp_bytes_t *encoded,
                       amqp_bytes_t body);
mem_msg_t *mem_msg_ref(mem_msg_t *m);
void mem_msg_unref(mem_msg_t *m);

/* ---- a message in a queue (ready) or delivered and not settled (out) ---- */

typedef struct mem_entry mem_entry_t;
struct mem_entry {
    mem_entry_t *next, *prev;   /* ready: the queue's list; out: the channel's */
    mem_entry_t *onext, *oprev; /* out: the queue's list of what it has out */
    mem_msg_t *msg;
    mem_queue_t *q;    /* out: NULL once the queue is deleted */
    mem_consumer_t *c; /* out: NULL for basic.get, or once the consumer is gone */
    uint64_t seq;      /* its place in the queue: a requeue puts it back there */
    uint64_t tag;      /* out: the delivery tag */
    uint64_t expires;  /* monotonic ms; 0: never */
    int64_t offset;    /* a stream record's offset; -1: a classic queue's message */
    bool redelivered;
};

mem_entry_t *mem_entry_new(mem_msg_t *msg); /* takes a reference */
void mem_entry_free(mem_entry_t *e);        /* drops it */

/* ---- queues (queue.c, stream.c) ---- */

typedef struct mem_record {
    mem_msg_t *msg;
    uint64_t segment; /* the segment it was written in (retention drops whole segments) */
} mem_record_t;

struct mem_queue {
    mem_queue_t *hnext; /* the broker's table */
    mem_broker_t *b;
    char *name;
    bool durable, exclusive, auto_delete;
    mem_conn_t *owner;             /* exclusive: the declaring connection */
    amqp_pool_t pool;              /* the declared arguments live here */
    amqp_table_t args;             /* as declared: a re-declare must match */
    int64_t max_length, max_bytes; /* -1: no bound */
    int64_t msg_ttl;               /* x-message-ttl; -1: none */
    int64_t max_age_ms;            /* stream retention (x-max-age); -1: none */
    int64_t segment_bytes;         /* x-stream-max-segment-size-bytes */
    uint64_t seg, seg_fill;        /* stream: the active segment and its bytes */
    bool sac, reject_publish, stream;
    mem_entry_t *head, *tail; /* ready, by seq */
    uint32_t ready;
    uint64_t ready_bytes, next_seq;
    mem_entry_t *out;               /* delivered, not settled */
    mem_consumer_t *consumers, *rr; /* in arrival order (SAC: the first is active);
                                       rr: where round robin resumes */
    bool had_consumer;
    mem_record_t *records; /* stream: the log */
    size_t nrec, rec_cap;
    int64_t first_offset; /* offset of records[0] */
    uint64_t rec_bytes;
    mem_queue_t *pnext; /* the broker's pending list (dispatch, auto-delete) */
    bool pending;
    uint64_t mark; /* routing: already chosen for this publish */
};

/* Settle what its arguments say, or refuse them (406). */
int mem_queue_args(mem_queue_t *q, const amqp_table_t *args, mem_err_t *e);
/* A re-declare's arguments against the first declare's: 406 when they differ. */
int mem_queue_args_match(const mem_queue_t *q, const amqp_table_t *args, mem_err_t *e);
mem_queue_t *mem_queue_new(mem_broker_t *b, const char *name);
/* Remove and free: consumers told (basic.cancel), what is out orphaned. */
void mem_queue_delete(mem_queue_t *q);
/* Append a published message; false: refused (x-overflow reject-publish). */
bool mem_queue_push(mem_queue_t *q, mem_msg_t *msg);
/* A message given back (nack, channel closed: redelivered) to its old place;
 * the caller marks the queue (mem_touch) when it may move again. */
void mem_queue_requeue(mem_queue_t *q, mem_entry_t *e, bool redelivered);
/* The first ready message that has not expired, taken out; NULL: none. */
mem_entry_t *mem_queue_take(mem_queue_t *q);
/* Ready messages (expired ones dropped first). */
uint32_t mem_queue_count(mem_queue_t *q);
void mem_queue_out_add(mem_queue_t *q, mem_entry_t *e);
void mem_queue_out_remove(mem_queue_t *q, mem_entry_t *e);

/* stream.c */
bool mem_stream_append(mem_queue_t *q, mem_msg_t *msg);
/* Where a new consumer starts (x-stream-offset), or 406. */
int mem_stream_start(mem_queue_t *q, const amqp_table_t *args, int64_t *ret, mem_err_t *e);
void mem_stream_dispatch(mem_queue_t *q);
void mem_stream_free(mem_queue_t *q);

/* ---- exchanges (exchange.c) ---- */

typedef struct mem_binding {
    struct mem_binding *next;
    mem_queue_t *q;
    char *key;
} mem_binding_t;

typedef enum { MEM_DIRECT, MEM_FANOUT, MEM_TOPIC } mem_xtype;

typedef struct mem_exchange {
    struct mem_exchange *next;
    char *name;
    mem_xtype type;
    bool durable, auto_delete, internal;
    mem_binding_t *bindings;
} mem_exchange_t;

mem_exchange_t *mem_exchange_find(mem_broker_t *b, amqp_bytes_t name);
int mem_exchange_declare(mem_broker_t *b, const amqp_exchange_declare_t *req, mem_err_t *e);
int mem_exchange_delete(mem_broker_t *b, const amqp_exchange_delete_t *req, mem_err_t *e);
int mem_bind(mem_exchange_t *x, mem_queue_t *q, amqp_bytes_t key);
void mem_unbind(mem_exchange_t *x, mem_queue_t *q, amqp_bytes_t key);
void mem_unbind_queue(mem_broker_t *b, mem_queue_t *q); /* every binding of q */
/* Calls fn for each queue the message goes to (each once); returns how many. */
int mem_route(mem_broker_t *b, mem_exchange_t *x, amqp_bytes_t key,
              void (*fn)(mem_queue_t *q, void *ud), void *ud);
void mem_exchanges_free(mem_broker_t *b);

/* ---- brokers (registry.c) ---- */

struct mmi_mem_broker {
    mem_broker_t *next; /* the registry */
    char *name;
    int refs; /* instances holding it (mm->mem_broker) */
    mem_exchange_t *exchanges;
    mem_queue_t *queues[MEM_QUEUE_BUCKETS];
    mem_conn_t *conns;
    mem_queue_t *pending; /* queues to dispatch or auto-delete (mem_run) */
    uint64_t serial;      /* publishes, for mem_queue_t.mark */
};

mem_queue_t *mem_queue_find(mem_broker_t *b, amqp_bytes_t name);
void mem_queue_link(mem_broker_t *b, mem_queue_t *q);
void mem_queue_unlink(mem_broker_t *b, mem_queue_t *q);
/* q has something to deliver, or lost a consumer: see to it in mem_run. */
void mem_touch(mem_queue_t *q);
/* Deliver what can be delivered, delete auto-delete queues left without consumers. */
void mem_run(mem_broker_t *b);

/* ---- consumers, dispatch and settles (consumer.c) ---- */

struct mem_consumer {
    mem_consumer_t *qnext; /* the queue's list */
    mem_consumer_t *cnext; /* the channel's list */
    mem_queue_t *q;
    mem_chan_t *chan;
    char *tag;
    bool no_ack, exclusive;
    uint16_t prefetch; /* 0: no bound */
    uint32_t out;      /* delivered, not settled */
    int64_t pos;       /* stream: the next offset to deliver */
};

bool mem_consumer_has_room(const mem_consumer_t *k);
mem_consumer_t *mem_consumer_add(mem_chan_t *ch, mem_queue_t *q, const char *tag, bool no_ack,
                                 bool exclusive);
/* Gone from its queue and channel; its deliveries out stay out (settled as usual). */
void mem_consumer_remove(mem_consumer_t *k);
mem_consumer_t *mem_consumer_find(mem_chan_t *ch, amqp_bytes_t tag);
void mem_dispatch(mem_queue_t *q);
/* Hand one message (or stream record) to a consumer: an inbox item, and out unless no-ack. */
bool mem_deliver(mem_consumer_t *k, mem_entry_t *e);
void mem_settle(mem_chan_t *ch, uint64_t tag, bool multiple, bool requeue, bool ack);
void mem_basic_get(mem_chan_t *ch, const amqp_basic_get_t *req);

/* ---- channels and the inbox (chan.c) ---- */

typedef struct mem_in mem_in_t;
struct mem_in {
    mem_in_t *next;
    uint16_t ch;
    amqp_method_number_t method; /* what the broker "sends" */
    mem_msg_t *msg;              /* deliver, return, get-ok */
    uint64_t tag;
    bool redelivered, multiple;
    uint16_t code;  /* return, channel.close */
    int64_t offset; /* a stream record's; -1: none */
    uint32_t count; /* get-ok: messages left */
    char text[];    /* consumer tag (deliver, cancel) or reply text (return, close) */
};

struct mem_chan {
    uint16_t id;
    mem_conn_t *conn;
    bool closing; /* closed by the broker: only close-ok is heard */
    bool confirm;
    uint64_t pub_seq;                 /* confirm mode: the last publish's tag */
    uint64_t next_tag;                /* the last delivery tag */
    uint16_t prefetch;                /* basic.qos: for consumers created after it */
    mem_entry_t *out_head, *out_tail; /* unacked, by tag */
    mem_consumer_t *consumers;
};

mem_chan_t *mem_chan_get(const mem_conn_t *c, uint16_t ch);
int mem_chan_open(mem_conn_t *c, uint16_t ch);
/* The broker's side of a channel's end: consumers gone, what is out requeued. */
void mem_chan_teardown(mem_chan_t *ch);
void mem_chan_free(mem_chan_t *ch);
/* The broker closes the channel now (teardown) and tells its owner from the inbox. */
void mem_chan_fail(mem_chan_t *ch, const mem_err_t *e);
void mem_chan_out_add(mem_chan_t *ch, mem_entry_t *e);
void mem_chan_out_remove(mem_chan_t *ch, mem_entry_t *e);

mem_in_t *mem_in_new(uint16_t ch, amqp_method_number_t method, const char *text, size_t len);
void mem_in_free(mem_in_t *in);
void mem_push(mem_conn_t *c, mem_in_t *in);
/* Take every item of channel ch out of the inbox; the close among them, if any, is returned. */
mem_in_t *mem_purge(mem_conn_t *c, uint16_t ch);
void mem_method(mem_chan_t *ch, amqp_method_number_t method, uint64_t tag, bool multiple);

/* ---- a connection (conn.c, inbox.c) ---- */

struct mmi_mem_conn {
    mm_t *mm;
    mem_broker_t *b;  /* NULL once detached */
    mem_conn_t *next; /* the broker's connections */
    mem_chan_t **chans;
    uint32_t nchans;
    struct event *ev; /* the inbox's, on mm's loop */
    mem_in_t *in_head, *in_tail;
    union {
        amqp_queue_declare_ok_t declare;
        amqp_queue_delete_ok_t del;
        amqp_basic_consume_ok_t consume;
        amqp_basic_cancel_ok_t cancel;
        amqp_queue_purge_ok_t purge;
    } reply; /* the last synchronous method's, valid until the next */
    char reply_str[MMI_QUEUE_MAX + 64];
};

int mem_inbox_start(mem_conn_t *c);
void mem_inbox_stop(mem_conn_t *c);
void mem_inbox_kick(mem_conn_t *c);

/* methods.c */
int mem_rpc(mm_t *mm, uint16_t ch, amqp_method_number_t id, void *req,
            amqp_method_number_t reply_id, void **ret_reply);

mem_broker_t *mem_broker_get(const char *name); /* NULL: no memory */
void mem_broker_put(mem_broker_t *b);

#endif
