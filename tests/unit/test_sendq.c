/* Unit: the queues of sends and what publisher confirms remove from them,
 * with the broker's out-of-order confirms (RABBITMQ-C.md 5: ack 2, ack 3,
 * ack 4 multiple covering 1 and 4, ack 6, nack 5 multiple; ack 8 before 7). */
#include <check.h>

#include "mmt.h"
#include "sendq.h"

#define N 10

static mmi_sendq_node_t nodes[N + 1]; /* nodes[i] has tag i */
static mmi_sendq_t q;
static uint64_t taken[N + 1];
static size_t ntaken;

static void
on_taken(mmi_sendq_node_t *n, void *ud)
{
    ck_assert_ptr_eq(ud, &q);
    taken[ntaken++] = n->seq;
}

static void
fill(int upto)
{
    q = (mmi_sendq_t){0};
    ntaken = 0;
    for (int i = 1; i <= upto; i++) {
        nodes[i].seq = (uint64_t) i;
        mmi_sendq_push(&q, &nodes[i]);
    }
}

static size_t
confirm(uint64_t tag, bool multiple)
{
    return mmi_sendq_confirm(&q, tag, multiple, on_taken, &q);
}

/* The tags left in the queue, as a number in base 16 (1..9 fit one digit). */
static uint64_t
left(void)
{
    uint64_t v = 0;
    for (mmi_sendq_node_t *n = q.head; n != NULL; n = n->next)
        v = v * 16 + n->seq;
    return v;
}

START_TEST(out_of_order_confirms_as_the_broker_sends_them)
{
    fill(8);
    ck_assert_uint_eq(confirm(2, false), 1);
    ck_assert_uint_eq(confirm(3, false), 1);
    ck_assert_uint_eq(left(), 0x145678);
    ck_assert_uint_eq(confirm(4, true), 2); /* covers 1 and 4 */
    ck_assert_uint_eq(left(), 0x5678);
    ck_assert_uint_eq(confirm(6, false), 1);
    ck_assert_uint_eq(confirm(5, true), 1);
    ck_assert_uint_eq(confirm(8, false), 1);
    ck_assert_uint_eq(left(), 0x7);
    ck_assert_ptr_eq(q.tail, &nodes[7]); /* the tail follows removals */
    ck_assert_uint_eq(confirm(7, false), 1);
    ck_assert_ptr_null(q.head);
    ck_assert_ptr_null(q.tail);
    uint64_t order[] = {2, 3, 1, 4, 6, 5, 8, 7};
    ck_assert_uint_eq(ntaken, 8);
    for (size_t i = 0; i < ntaken; i++)
        ck_assert_uint_eq(taken[i], order[i]);
}
END_TEST

START_TEST(unknown_and_repeated_tags_are_ignored)
{
    fill(3);
    ck_assert_uint_eq(confirm(9, false), 0);
    ck_assert_uint_eq(confirm(2, false), 1);
    ck_assert_uint_eq(confirm(2, false), 0);
    ck_assert_uint_eq(confirm(0, true), 0);
    ck_assert_uint_eq(left(), 0x13);
    ck_assert_uint_eq(confirm(9, true), 2); /* multiple past the end takes the rest */
    ck_assert_ptr_null(q.head);
}
END_TEST

START_TEST(removing_the_tail_keeps_pushes_working)
{
    fill(3);
    ck_assert_uint_eq(confirm(3, false), 1);
    ck_assert_ptr_eq(q.tail, &nodes[2]);
    nodes[4].seq = 4;
    mmi_sendq_push(&q, &nodes[4]);
    ck_assert_uint_eq(left(), 0x124);
}
END_TEST

START_TEST(prepend_puts_written_sends_back_before_the_waiting_ones)
{
    mmi_sendq_t wait = {0}, sent = {0};
    for (int i = 1; i <= 3; i++) {
        nodes[i].seq = (uint64_t) i;
        mmi_sendq_push(&sent, &nodes[i]);
    }
    for (int i = 4; i <= 5; i++) {
        nodes[i].seq = 0;
        mmi_sendq_push(&wait, &nodes[i]);
    }
    mmi_sendq_prepend(&wait, &sent);
    ck_assert_ptr_null(sent.head);
    ck_assert_ptr_null(sent.tail);
    int want[] = {1, 2, 3, 4, 5}, i = 0;
    for (mmi_sendq_node_t *n = mmi_sendq_pop(&wait); n != NULL; n = mmi_sendq_pop(&wait))
        ck_assert_ptr_eq(n, &nodes[want[i++]]);
    ck_assert_int_eq(i, 5);
    ck_assert_ptr_null(wait.tail);
    mmi_sendq_t empty = {0};
    mmi_sendq_prepend(&empty, &sent); /* both empty: nothing happens */
    ck_assert_ptr_null(empty.head);
}
END_TEST

int
main(void)
{
    Suite *s = suite_create("sendq");
    TCase *tc = mmt_tcase(s, "sendq", NULL, NULL, 10);
    tcase_add_test(tc, out_of_order_confirms_as_the_broker_sends_them);
    tcase_add_test(tc, unknown_and_repeated_tags_are_ignored);
    tcase_add_test(tc, removing_the_tail_keeps_pushes_working);
    tcase_add_test(tc, prepend_puts_written_sends_back_before_the_waiting_ones);
    return mmt_run(s);
}
