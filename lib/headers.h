/*
 * AMQP header tables <-> msgpack, and the protocol's reserved "__mms" table.
 * Incoming tables become msgpack maps in the message's zone (strings
 * copied); outgoing user headers (a msgpack map) become table entries that
 * point into the caller's bytes for the duration of one publish.
 */
#ifndef MM_HEADERS_H
#define MM_HEADERS_H

#include <stdbool.h>
#include <stdint.h>

#include <amqp.h>
#include <msgpack.h>

/* The fields of __mms (PROTOCOL.md section 2); absent booleans are false. */
typedef struct mmi_mms {
    bool is_task, is_error, is_end, is_stream;
    bool has_iat, has_eat, has_seq;
    int64_t iat, eat, sequence;
    amqp_bytes_t route; /* {0, NULL} when absent; points into the table */
} mmi_mms_t;

/*
 * Read __mms from a message's headers. A missing headers table or __mms,
 * or a field of the wrong type, is MM_EDECODE with the reason in err.
 */
int mmi_mms_parse(const amqp_table_t *headers, mmi_mms_t *out, char *err, size_t errlen);

/* An AMQP integer field of any width as int64 (RabbitMQ compares integer
 * types as one class); false for other kinds and u64 beyond int64. */
bool mmi_field_integer(const amqp_field_value_t *v, int64_t *out);

/* A top-level string header (UTF8 or bytes), or {0, NULL}. */
amqp_bytes_t mmi_header_str(const amqp_table_t *headers, const char *key);

#define MMI_H_CAUSATION "x-mm-causation-id"
#define MMI_H_TRACEPARENT "traceparent"
#define MMI_H_ROUTING_KEY "x-mm-routing-key" /* a group event's key on a copy (lib/group.c) */

/* Every top-level header except __mms and the metadata headers as a msgpack map in `z`.
 * MM_OK/MM_ENOMEM. */
int mmi_headers_to_msgpack(const amqp_table_t *headers, msgpack_zone *z, msgpack_object *ret_map);

/* The outgoing header table under construction. */
#define MMI_MMS_MAX 8
typedef struct mmi_hdrs {
    amqp_table_entry_t mms[MMI_MMS_MAX];
    int nmms;
    amqp_table_entry_t *top; /* __mms, idRequest, user headers */
    int ntop;
    amqp_table_t table;
    amqp_pool_t pool; /* nested user values */
    msgpack_zone zone;
    bool pooled;
    amqp_table_entry_t fixed[4];           /* top when there are few user headers */
    const char *meta_key[2], *meta_val[2]; /* causation id, traceparent (lib/meta.c) */
    int nmeta;
} mmi_hdrs_t;

void mmi_hdrs_init(mmi_hdrs_t *h);
void mmi_hdrs_fini(mmi_hdrs_t *h);
void mmi_hdrs_mms_bool(mmi_hdrs_t *h, const char *key, bool v);
void mmi_hdrs_mms_int(mmi_hdrs_t *h, const char *key, int64_t v);
void mmi_hdrs_mms_str(mmi_hdrs_t *h, const char *key, const char *v);
/* A top-level string header of micromsg's own (metadata); a user header of
 * the same name wins. At most two; `key` and `v` must outlive the publish. */
void mmi_hdrs_meta(mmi_hdrs_t *h, const char *key, const char *v);

/*
 * Finish the table: __mms, then idRequest (when `request_id` is not NULL and
 * the user headers have none), then the metadata headers, then the user headers (msgpack map bytes
 * or NULL). The user's bytes must outlive the publish.
 * @return MM_OK; MM_EINVAL (not a map, non-str key or one over 255 bytes,
 *         "__mms" key, ext, integer beyond int64, too deep) with the reason in
 *         err; MM_ENOMEM.
 */
int mmi_hdrs_finish(mmi_hdrs_t *h, const char *request_id, const void *user, size_t user_len,
                    char *err, size_t errlen);

#endif
