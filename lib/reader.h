/*
 * Topics and their readers, inside lib/: what topic.c (the topics module,
 * declare, publish, delete), reader.c (the reader's life and its steps),
 * reader_lock.c (the consumer's lock and the token line), reader_cursor.c
 * (the stored cursor) and reader_record.c (deliveries -> records) share.
 *
 * A reader goes through these steps on every connection, each one retried
 * later when it fails: the topic exists; it waits in the consumer's line
 * (the token queue); it holds the lock; it has read the stored cursor; it
 * consumes the stream from the start point. The lock and the token are an
 * allocation of their own (struct mmi_rlock): a stopped reader is freed at
 * once, but its lock is released only once its last cursor write is
 * confirmed, so that the standby taking over reads that cursor.
 */
#ifndef MM_READER_H
#define MM_READER_H

#include "internal.h"

#define MMI_READER_PREFETCH 256     /* records in flight (streams require a prefetch) */
#define MMI_READER_CURSOR_EVERY 100 /* settled records between cursor writes */
#define MMI_READER_CURSOR_MS 1000   /* a settled record waits at most this long */
#define MMI_READER_BACKSTOP_MS 5000 /* a standby tries the lock this often anyway */
#define MMI_AMQP_NAME_MAX 255       /* a queue name is an AMQP short string */
#define MMI_STREAM_PREFIX "s.topic."

struct event;
struct mm_reader;

/* The topics module: its readers, their locks still being released, and the
 * topics this instance saw exist (a publish checks once). */
struct mmi_topics {
    mm_t *mm;
    struct mm_reader *readers;
    struct mmi_rlock *releasing;
    bool closing; /* mm_close drains: no reader starts again until up */
    char **known;
    size_t nknown, capknown;
};

/* The consumer's lock (exclusive queue) and place in line (token queue). */
struct mmi_rlock {
    mm_t *mm;
    struct mm_reader *r;    /* NULL once the reader stopped */
    struct mmi_topics *t;   /* NULL once the module is gone (mm_free) */
    struct mmi_rlock *next; /* in t->releasing */
    char lock_q[MMI_AMQP_NAME_MAX + 1], token_q[MMI_AMQP_NAME_MAX + 1];
    uint16_t lock_ch, token_ch; /* 0, or a live channel of ours (on_closed zeroes them) */
    bool held;                  /* we declared the lock queue: we may read */
    bool token;                 /* the broker gave us the token: we are next in line */
    uint64_t token_ms;
};

struct mm_reader {
    mm_t *mm;
    struct mmi_topics *t;
    struct mm_reader *next;
    char *topic, *consumer;
    char stream_q[MMI_AMQP_NAME_MAX + 1], cursor_q[MMI_AMQP_NAME_MAX + 1];
    mm_from_t from, fallback;
    mm_msg_fn fn;
    void *ud;
    char **types; /* NULL: every type */
    size_t ntypes;
    uint16_t prefetch;
    uint32_t cursor_every, cursor_ms;

    struct mmi_rlock *lock;
    bool topic_ok;     /* the stream exists (checked on this connection) */
    bool missing_told; /* its absence was reported on this connection */
    bool took_over;    /* it waited as a standby first: it starts at the stored cursor */
    int said;          /* the last of MM_EV_READER_ACTIVE / _STANDBY raised, 0: none */
    uint16_t read_ch;  /* the cursor's basic.get and the stream's consumer */
    bool getting;      /* the cursor's basic.get is under way */
    bool reading;      /* consuming the stream */
    bool gap_checked;  /* the first record after consuming was compared with start */
    int64_t start;     /* records below are not handed over (-1: no bound) */
    int64_t position;  /* the last settled offset, -1: none */
    int64_t written;   /* the offset of the last cursor write, -1: none */
    uint32_t unsaved;  /* records settled since that write */
    struct event *retry, *save_timer;
    unsigned retries; /* failed steps in a row (backoff) */
    int in_handler;
    bool stop_pending; /* mm_reader_stop from its own handler */
};

/* topic.c */
struct mmi_topics *mmi_topics_get(mm_t *mm); /* attached on first use; NULL: no memory */
char *mmi_stream_queue(char *out, size_t cap, const char *topic);
int mmi_topic_check(mm_t *mm, const char *topic); /* MM_ENOENT with the text the API promises */

/* reader.c */
void mmi_reader_step(struct mm_reader *r);  /* do the next step now */
void mmi_reader_later(struct mm_reader *r); /* ... or after a backoff */
void mmi_reader_wake(struct mm_reader *r);  /* ... from the loop, at once */
void mmi_reader_say(struct mm_reader *r, int ev, int code, const char *why);
void mmi_reader_lock_lost(struct mm_reader *r, const char *why);
void mmi_reader_unread(struct mm_reader *r);      /* stop consuming (channel closed) */
int mmi_reader_stop_pending(struct mm_reader *r); /* mm_reader_stop from its handler, now */
void mmi_readers_up(struct mmi_topics *t);
void mmi_readers_quiesce(struct mmi_topics *t);
void mmi_readers_down(struct mmi_topics *t);
void mmi_readers_destroy(struct mmi_topics *t);

/* reader_lock.c */
struct mmi_rlock *mmi_rlock_new(struct mm_reader *r);
int mmi_rlock_join(struct mmi_rlock *l); /* wait in line: consume the token queue */
int mmi_rlock_try(struct mmi_rlock *l);  /* MM_OK: held; MM_ESTATE: another reader holds it */
void mmi_rlock_down(struct mmi_rlock *l);
/* The reader stops: release now (MM_OK or the broker's error), or hand the
 * lock to the outbox's verdict on its last cursor write (mmi_rlock_after). */
int mmi_rlock_release(struct mmi_rlock *l);
void mmi_rlock_park(struct mmi_rlock *l);             /* the reader is gone, l waits in t */
void mmi_rlock_after(mm_t *mm, int status, void *ud); /* an mmi_sent_fn, ud: the lock */
void mmi_rlock_orphan(struct mmi_topics *t);          /* mm_free: the module goes first */

/* reader_cursor.c */
int mmi_cursor_ask(struct mm_reader *r); /* declare the cursor queue, send basic.get */
void mmi_cursor_got(struct mm_reader *r, const mmi_content_t *c);
void mmi_cursor_none(struct mm_reader *r); /* basic.get-empty */
/* Holding the lock, connected, with a position not written yet. */
bool mmi_cursor_due(const struct mm_reader *r);
/* Write the position (done: the verdict, may be NULL; it runs when MM_OK). */
int mmi_cursor_write(struct mm_reader *r, void (*done)(mm_t *, int, void *), void *ud);
void mmi_cursor_settled(struct mm_reader *r, int64_t offset); /* count; write when due */

/* reader_record.c */
int mmi_reader_consume(struct mm_reader *r, mm_from_t at); /* qos + consume from `at` */
void mmi_reader_content(mm_t *mm, const mmi_content_t *c, void *ud);

#endif
