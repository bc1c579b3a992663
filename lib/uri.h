/*
 * Broker URIs (RabbitMQ URI spec): amqp[s]://[user[:pass]@]host[:port][/vhost][?query],
 * and memory://NAME for the in-process transport (lib/mem/).
 * Pure parsing, no I/O: unit-tested and fuzzed.
 */
#ifndef MM_URI_H
#define MM_URI_H

#include <stdbool.h>
#include <stddef.h>

#define MMI_URI_DEFAULT "amqp://localhost"
#define MMI_URI_HEARTBEAT_DEFAULT 30
#define MMI_URI_FRAME_MAX_DEFAULT 131072

struct mmi_uri {
    bool tls;
    char *user;
    char *pass;
    char *host;
    int port;
    char *vhost;
    int heartbeat;             /* seconds; 0 disables */
    int frame_max;             /* bytes */
    int channel_max;           /* 0: the broker's */
    int connection_timeout_ms; /* 0: not given */
    char *cacertfile;
    char *certfile;
    char *keyfile;
    bool verify_peer; /* amqps only; default true */
    char *memory;     /* memory://NAME: the in-process broker's name; NULL for amqp[s] */
};

#define MMI_URI_MEMORY_MAX 128 /* the longest broker name, as a service name */

/*
 * Parse `s` into `out` (zeroed first; free with mmi_uri_free even on failure).
 * Returns MM_OK, MM_EURI with a reason in err (never the password), or MM_ENOMEM.
 */
int mmi_uri_parse(const char *s, struct mmi_uri *out, char *err, size_t errlen);
void mmi_uri_free(struct mmi_uri *u);

/* The URI with the password as "***" (malloc'd; NULL when out of memory). */
char *mmi_uri_redact(const struct mmi_uri *u);

#endif
