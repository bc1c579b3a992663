/* Unit: AMQP topic matching as the broker does it (lib/group.c), which
 * routes a group's deliveries to the listener whose binding matches: "*"
 * is exactly one word, "#" zero or more, words are literal otherwise. */
#include <check.h>

#include "mmt.h"
#include "route.h"

static const struct {
    const char *pattern, *key;
    bool match;
} cases[] = {
    {"svc.order", "svc.order", true},
    {"svc.order", "svc.orders", false},
    {"svc.order", "svc.order.x", false},
    {"svc.*", "svc.order", true},
    {"svc.*", "svc.order.created", false},
    {"svc.*", "svc", false},
    {"svc.*.created", "svc.order.created", true},
    {"svc.*.created", "svc.order.paid", false},
    {"svc.#", "svc", true},
    {"svc.#", "svc.a.b.c", true},
    {"svc.#", "other.a", false},
    {"#", "anything.at.all", true},
    {"#.c", "c", true},
    {"#.c", "a.b.c", true},
    {"#.c", "a.b", false},
    {"a.#.b.#", "a.b", true},
    {"a.#.b.#", "a.x.b.y", true},
    {"a.#.b.#", "a.x.y", false},
    {"*.#.z", "x.z", true},
    {"*.#.z", "z", false},
    {"*.#.z", "x.y.y.z", true},
    {"a.b", "a.b.", false},
    {"a.*", "a.", true}, /* an empty word is a word */
};

START_TEST(topic_matching_follows_amqp)
{
    ck_assert_msg(mmi_topic_match(cases[_i].pattern, cases[_i].key) == cases[_i].match,
                  "'%s' vs '%s' should %smatch", cases[_i].pattern, cases[_i].key,
                  cases[_i].match ? "" : "not ");
}
END_TEST

int
main(void)
{
    Suite *s = suite_create("match");
    TCase *tc = tcase_create("match");
    tcase_add_loop_test(tc, topic_matching_follows_amqp, 0, (int) (sizeof cases / sizeof cases[0]));
    suite_add_tcase(s, tc);
    return mmt_run(s);
}
