/* Unit tests for log: LOG_LEVEL names, the line format, control characters
 * replaced so network input cannot forge lines, truncation of long lines,
 * level filtering and the mail.log file. */
#include <fcntl.h>
#include <regex.h>
#include <stdlib.h>
#include <sys/stat.h>
#include <unistd.h>

#include "log.h"
#include "test.h"

static char tmpdir[] = "/tmp/test_log.XXXXXX";
static char logdir[256];
static char logfile[300];

/* Reads mail.log into buf; returns its length. */
static size_t read_log(char *buf, size_t size)
{
    int fd = open(logfile, O_RDONLY | O_CLOEXEC);
    if (fd < 0)
        return 0;
    size_t len = 0;
    ssize_t n;
    while (len + 1 < size && (n = read(fd, buf + len, size - 1 - len)) > 0)
        len += (size_t)n;
    close(fd);
    buf[len] = '\0';
    return len;
}

static void truncate_log(void)
{
    int fd = open(logfile, O_WRONLY | O_TRUNC | O_CLOEXEC);
    if (fd >= 0)
        close(fd);
}

static int count_lines(const char *s)
{
    int n = 0;
    for (; *s; s++)
        n += *s == '\n';
    return n;
}

TEST(level_parse)
{
    enum log_level l = LOG_ERROR;
    CHECK_INT(log_level_parse("", &l), 0);
    CHECK_INT(l, LOG_INFO);
    CHECK_INT(log_level_parse("error", &l), 0);
    CHECK_INT(l, LOG_ERROR);
    CHECK_INT(log_level_parse("warn", &l), 0);
    CHECK_INT(l, LOG_WARN);
    CHECK_INT(log_level_parse("debug", &l), 0);
    CHECK_INT(l, LOG_DEBUG);
    CHECK_INT(log_level_parse("trace", &l), 0);
    CHECK_INT(l, LOG_TRACE);
    CHECK_INT(log_level_parse("verbose", &l), -1);
    CHECK_INT(log_level_parse("INFO ", &l), -1);
}

TEST(init_creates_dir_and_mode)
{
    char err[256] = "";
    CHECK_INT(log_init(LOG_INFO, logdir, err, sizeof err), 0);
    struct stat st;
    CHECK_INT(stat(logdir, &st), 0);
    CHECK(S_ISDIR(st.st_mode));
    CHECK_INT(stat(logfile, &st), 0);
    CHECK_INT(st.st_mode & 0777, 0640);
}

TEST(line_format)
{
    truncate_log();
    log_info("smtp[%s]: connect from %s", "3f2a9c01", "127.0.0.1");
    char buf[4096];
    read_log(buf, sizeof buf);
    char re_src[256];
    snprintf(re_src, sizeof re_src,
             "^[0-9]{4}-[0-9]{2}-[0-9]{2}T[0-9]{2}:[0-9]{2}:[0-9]{2}\\.[0-9]{3}Z "
             "posthornd\\[%ld\\]: info: smtp\\[3f2a9c01\\]: connect from 127\\.0\\.0\\.1\n$",
             (long)getpid());
    regex_t re;
    CHECK_INT(regcomp(&re, re_src, REG_EXTENDED), 0);
    CHECK_INT(regexec(&re, buf, 0, NULL, 0), 0);
    regfree(&re);
}

TEST(control_chars_sanitised)
{
    truncate_log();
    log_warn("smtp: command %s", "HELO x\r\n2026-01-01T00:00:00.000Z posthornd[1]: info: forged\x1b[31m\x7f");
    char buf[4096];
    read_log(buf, sizeof buf);
    CHECK_INT(count_lines(buf), 1);
    CHECK(strstr(buf, ": warn: smtp: command HELO x??2026-01-01T00:00:00.000Z posthornd[1]: "
                      "info: forged?[31m?\n") != NULL);
    CHECK(strchr(buf, '\r') == NULL);
    CHECK(strchr(buf, '\x1b') == NULL);
}

TEST(level_filter)
{
    truncate_log();
    log_set_level(LOG_WARN);
    CHECK_INT(log_get_level(), LOG_WARN);
    log_info("hidden info");
    log_debug("hidden debug");
    log_error("shown error");
    log_set_level(LOG_TRACE);
    log_trace("shown trace %d", 7);
    log_set_level(LOG_INFO);
    char buf[4096];
    read_log(buf, sizeof buf);
    CHECK(strstr(buf, "hidden") == NULL);
    CHECK(strstr(buf, ": error: shown error\n") != NULL);
    CHECK(strstr(buf, ": trace: shown trace 7\n") != NULL);
    CHECK_INT(count_lines(buf), 2);
}

TEST(long_line_truncated)
{
    truncate_log();
    static char big[5000];
    memset(big, 'a', sizeof big - 1);
    log_info("x=%s", big);
    char buf[8192];
    size_t len = read_log(buf, sizeof buf);
    CHECK(len <= 2048);
    CHECK(len > 1900);
    CHECK_INT(count_lines(buf), 1);
    CHECK(len >= 5 && memcmp(buf + len - 5, "a...\n", 5) == 0);
}

TEST(program_name)
{
    truncate_log();
    log_set_program("setup");
    log_info("email add");
    log_set_program("posthornd");
    char buf[4096];
    read_log(buf, sizeof buf);
    char want[64];
    snprintf(want, sizeof want, "Z setup[%ld]: info: email add\n", (long)getpid());
    CHECK(strstr(buf, want) != NULL);
}

TEST(close_stops_file)
{
    truncate_log();
    log_close();
    log_info("only on stderr");
    char buf[4096];
    CHECK_INT(read_log(buf, sizeof buf), 0);
}

TEST(unwritable_dir_fails)
{
    char err[256] = "";
    CHECK_INT(log_init(LOG_INFO, "/proc/self/nonexistent/log", err, sizeof err), -1);
    CHECK(strstr(err, "cannot create /proc/self/nonexistent") != NULL);
}

int main(void)
{
    if (!mkdtemp(tmpdir)) {
        perror("mkdtemp");
        return 1;
    }
    snprintf(logdir, sizeof logdir, "%s/var/log/mail", tmpdir);
    snprintf(logfile, sizeof logfile, "%s/mail.log", logdir);
    umask(022);
    RUN(level_parse);
    RUN(init_creates_dir_and_mode);
    RUN(line_format);
    RUN(control_chars_sanitised);
    RUN(level_filter);
    RUN(long_line_truncated);
    RUN(program_name);
    RUN(close_stops_file);
    RUN(unwritable_dir_fails);
    log_close();
    unlink(logfile);
    char path[300];
    rmdir(logdir);
    snprintf(path, sizeof path, "%s/var/log", tmpdir);
    rmdir(path);
    snprintf(path, sizeof path, "%s/var", tmpdir);
    rmdir(path);
    rmdir(tmpdir);
    return test_summary();
}
