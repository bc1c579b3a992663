/* Unit: the error table is complete and consistent. */
#include <check.h>
#include <stdlib.h>
#include <string.h>

#include "micromsg.h"
#include "mmt.h"

static const int codes[] = {
#define X_(name, value, text) MM_##name,
    MM_ERR_MAP(X_)
#undef X_
};
#define NCODES ((int) (sizeof codes / sizeof codes[0]))

START_TEST(every_code_has_a_distinct_name_and_text)
{
    for (int i = 0; i < NCODES; i++) {
        ck_assert_int_lt(codes[i], 0);
        ck_assert_str_ne(mm_strerror(codes[i]), "unknown error");
        ck_assert_str_ne(mm_err_name(codes[i]), "MM_E?");
        ck_assert_msg(strncmp(mm_err_name(codes[i]), "MM_E", 4) == 0, "%s", mm_err_name(codes[i]));
        for (int j = 0; j < i; j++) {
            ck_assert_int_ne(codes[i], codes[j]);
            ck_assert_str_ne(mm_strerror(codes[i]), mm_strerror(codes[j]));
            ck_assert_str_ne(mm_err_name(codes[i]), mm_err_name(codes[j]));
        }
    }
}
END_TEST

START_TEST(codes_are_contiguous_from_minus_one)
{
    /* Append-only table: a gap would mean a code was removed or renumbered. */
    for (int i = 0; i < NCODES; i++)
        ck_assert_int_eq(codes[i], -(i + 1));
}
END_TEST

START_TEST(unknown_codes_have_placeholders)
{
    ck_assert_str_eq(mm_strerror(MM_OK), "success");
    ck_assert_str_eq(mm_err_name(MM_OK), "MM_OK");
    ck_assert_str_eq(mm_strerror(-NCODES - 1), "unknown error");
    ck_assert_str_eq(mm_err_name(12345), "MM_E?");
    ck_assert_str_eq(mm_err_name(MM_ETIMEDOUT), "MM_ETIMEDOUT");
}
END_TEST

START_TEST(version_matches_header)
{
    ck_assert_int_eq(mm_version(), MM_VERSION_NUMBER);
}
END_TEST

int
main(void)
{
    Suite *s = suite_create("err");
    TCase *tc = tcase_create("table");
    tcase_add_test(tc, every_code_has_a_distinct_name_and_text);
    tcase_add_test(tc, codes_are_contiguous_from_minus_one);
    tcase_add_test(tc, unknown_codes_have_placeholders);
    tcase_add_test(tc, version_matches_header);
    suite_add_tcase(s, tc);
    return mmt_run(s);
}
