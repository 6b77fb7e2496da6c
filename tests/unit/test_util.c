/* Unit tests for util.c. */
#include <errno.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "test.h"
#include "util.h"

TEST(set_err_formats_and_tolerates_null)
{
    char err[16];
    set_err(err, sizeof err, "x=%d %s", 42, "a long tail that is cut");
    CHECK_STR(err, "x=42 a long tai");
    set_err(NULL, 0, "ignored %d", 1);   /* must not crash */
}

TEST(random_hex_is_hex_and_varies)
{
    char a[13], b[13];
    random_hex(a, 12);
    random_hex(b, 12);
    CHECK_INT(strlen(a), 12);
    CHECK(strspn(a, "0123456789ABCDEF") == 12);
    CHECK(strcmp(a, b) != 0);
    char odd[8];
    random_hex(odd, 7);
    CHECK_INT(strlen(odd), 7);
}

TEST(mkdir_p_nested_existing_and_not_a_directory)
{
    char base[] = "/tmp/posthorn-util-XXXXXX";
    CHECK(mkdtemp(base) != NULL);
    char deep[256], file[256], under_file[300];
    snprintf(deep, sizeof deep, "%s/a/b/c", base);
    CHECK_INT(mkdir_p(deep, 0700), 0);
    struct stat st;
    CHECK(stat(deep, &st) == 0 && S_ISDIR(st.st_mode));
    CHECK_INT(mkdir_p(deep, 0700), 0);                  /* already there */
    snprintf(file, sizeof file, "%s/f", base);
    FILE *f = fopen(file, "w");
    CHECK(f != NULL);
    if (f)
        fclose(f);
    CHECK_INT(mkdir_p(file, 0700), -1);
    CHECK_INT(errno, ENOTDIR);
    snprintf(under_file, sizeof under_file, "%s/x", file);
    CHECK_INT(mkdir_p(under_file, 0700), -1);
    CHECK_INT(mkdir_p("", 0700), -1);
    char cmd[300];
    snprintf(cmd, sizeof cmd, "rm -rf '%s'", base);
    CHECK_INT(system(cmd), 0);
}

int main(void)
{
    RUN(set_err_formats_and_tolerates_null);
    RUN(random_hex_is_hex_and_varies);
    RUN(mkdir_p_nested_existing_and_not_a_directory);
    return test_summary();
}
