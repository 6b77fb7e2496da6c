/* Minimal unit-test harness. One binary per test file; each TEST() is
 * registered with RUN(); main() ends with test_summary(), which prints
 * "N passed, N failed" and returns the exit status. */
#ifndef POSTHORN_TEST_H
#define POSTHORN_TEST_H

#include <stdio.h>
#include <string.h>

static int test_passed_count, test_failed_count, test_current_failed;
static const char *test_current_name;

#define CHECK(cond) do { \
        if (!(cond)) { \
            fprintf(stderr, "%s:%d: %s: CHECK failed: %s\n", __FILE__, __LINE__, \
                    test_current_name, #cond); \
            test_current_failed = 1; \
        } } while (0)

#define CHECK_INT(a, b) do { \
        long long test_a_ = (long long)(a), test_b_ = (long long)(b); \
        if (test_a_ != test_b_) { \
            fprintf(stderr, "%s:%d: %s: %s == %lld, expected %lld\n", __FILE__, __LINE__, \
                    test_current_name, #a, test_a_, test_b_); \
            test_current_failed = 1; \
        } } while (0)

#define CHECK_STR(a, b) do { \
        const char *test_a_ = (a), *test_b_ = (b); \
        if (!test_a_ || !test_b_ || strcmp(test_a_, test_b_) != 0) { \
            fprintf(stderr, "%s:%d: %s: %s == \"%s\", expected \"%s\"\n", __FILE__, __LINE__, \
                    test_current_name, #a, test_a_ ? test_a_ : "(null)", test_b_ ? test_b_ : "(null)"); \
            test_current_failed = 1; \
        } } while (0)

#define TEST(name) static void name(void)

#define RUN(name) do { \
        test_current_name = #name; test_current_failed = 0; \
        name(); \
        if (test_current_failed) { test_failed_count++; fprintf(stderr, "FAIL %s\n", #name); } \
        else test_passed_count++; \
    } while (0)

static inline int test_summary(void)
{
    printf("%d passed, %d failed\n", test_passed_count, test_failed_count);
    return test_failed_count ? 1 : 0;
}

#endif
