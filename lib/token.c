/*
 * A token line: an auto-delete queue with a single active consumer that
 * holds one token message. The broker delivers the token to the active
 * consumer only, who keeps it unacked; when that consumer's connection
 * dies the broker requeues it to the next consumer at once. The election
 * (election/lock.c) and the topic readers (lib/reader_lock.c) wait in such
 * a line, so that the next in line tries the lock at once instead of
 * polling for it.
 */
#include "internal.h"

int
mmi_token_queue(mm_t *mm, uint16_t ch, const char *name)
{
    amqp_table_entry_t sac = {.key = amqp_cstring_bytes("x-single-active-consumer"),
                              .value = {.kind = AMQP_FIELD_KIND_BOOLEAN, .value.boolean = 1}};
    amqp_table_t args = {1, &sac};
    uint32_t messages = 0, consumers = 0;
    int rc = mmi_queue_declare_full(mm, ch, name, MMI_Q_AUTO_DELETE, &args, &messages, &consumers);
    if (rc != MM_OK || messages > 0 || consumers > 0)
        return rc;
    /* A new line: put the token in. Two instances doing this at once make two
     * tokens, which is harmless: the active consumer holds both. */
    amqp_basic_properties_t props = {._flags = AMQP_BASIC_CONTENT_TYPE_FLAG,
                                     .content_type = amqp_cstring_bytes("text/plain")};
    return mmi_publish(mm, ch, "", name, false, &props, amqp_cstring_bytes("token"));
}
