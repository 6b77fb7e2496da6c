/* log: formats each line on the stack and writes it with one write(2) per
 * destination, so lines from different threads never interleave. */
#include "log.h"
#include "util.h"

#include <errno.h>
#include <fcntl.h>
#include <pthread.h>
#include <stdarg.h>
#include <stdatomic.h>
#include <stdbool.h>
#include <stdio.h>
#include <string.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

#define LOG_LINE_MAX 2048
#define LOG_PROGRAM_MAX 32

static const char *const level_names[] = { "error", "warn", "info", "debug", "trace" };

static atomic_int current_level = LOG_INFO;
/* Guards file_fd and program: log_close or log_set_program may run while
 * another thread logs. */
static pthread_mutex_t log_lock = PTHREAD_MUTEX_INITIALIZER;
static int file_fd = -1;
static char program[LOG_PROGRAM_MAX] = "posthornd";

int log_level_parse(const char *name, enum log_level *out)
{
    if (!name || !*name) {
        *out = LOG_INFO;
        return 0;
    }
    for (size_t i = 0; i < sizeof level_names / sizeof level_names[0]; i++) {
        if (strcmp(name, level_names[i]) == 0) {
            *out = (enum log_level)i;
            return 0;
        }
    }
    return -1;
}

int log_init(enum log_level level, const char *log_dir, char *err, size_t errlen)
{
    log_set_level(level);
    if (!log_dir || !*log_dir)
        return 0;
    if (mkdir_p(log_dir, 0755) < 0) {
        snprintf(err, errlen, "cannot create %s: %s", log_dir, strerror(errno));
        return -1;
    }
    char path[4096];
    int n = snprintf(path, sizeof path, "%s/mail.log", log_dir);
    if (n < 0 || (size_t)n >= sizeof path) {
        snprintf(err, errlen, "path too long: %.64s...", log_dir);
        return -1;
    }
    int fd = open(path, O_WRONLY | O_CREAT | O_APPEND | O_CLOEXEC, 0640);
    if (fd < 0) {
        snprintf(err, errlen, "cannot open %s: %s", path, strerror(errno));
        return -1;
    }
    pthread_mutex_lock(&log_lock);
    int old = file_fd;
    file_fd = fd;
    pthread_mutex_unlock(&log_lock);
    if (old >= 0)
        close(old);
    return 0;
}

void log_set_level(enum log_level level)
{
    atomic_store(&current_level, (int)level);
}

enum log_level log_get_level(void)
{
    return (enum log_level)atomic_load(&current_level);
}

void log_close(void)
{
    pthread_mutex_lock(&log_lock);
    int fd = file_fd;
    file_fd = -1;
    pthread_mutex_unlock(&log_lock);
    if (fd >= 0)
        close(fd);
}

void log_set_program(const char *name)
{
    pthread_mutex_lock(&log_lock);
    snprintf(program, sizeof program, "%s", name ? name : "");
    pthread_mutex_unlock(&log_lock);
}

/* Network input ends up in messages: a CR or LF must not start a forged
 * line, and escape sequences must not reach a terminal. */
static void sanitize(char *s, size_t len)
{
    for (size_t i = 0; i < len; i++) {
        unsigned char c = (unsigned char)s[i];
        if (c < 0x20 || c == 0x7f)
            s[i] = '?';
    }
}

/* Writes all of buf; a short write to a pipe or a full disk is retried,
 * any other failure drops the line (there is nowhere left to report it). */
static void write_all(int fd, const char *buf, size_t len)
{
    while (len > 0) {
        ssize_t w = write(fd, buf, len);
        if (w < 0) {
            if (errno == EINTR)
                continue;
            return;
        }
        buf += w;
        len -= (size_t)w;
    }
}

static size_t format_prefix(char *buf, size_t size, enum log_level level)
{
    struct timespec ts;
    struct tm tm;
    clock_gettime(CLOCK_REALTIME, &ts);
    gmtime_r(&ts.tv_sec, &tm);
    char stamp[32];
    strftime(stamp, sizeof stamp, "%Y-%m-%dT%H:%M:%S", &tm);
    const char *lname = (unsigned)level < sizeof level_names / sizeof level_names[0]
                        ? level_names[level] : "?";
    int n = snprintf(buf, size, "%s.%03ldZ %s[%ld]: %s: ", stamp, ts.tv_nsec / 1000000L,
                     program, (long)getpid(), lname);
    if (n < 0)
        return 0;
    return (size_t)n < size ? (size_t)n : size - 1;
}

void log_msg(enum log_level level, const char *fmt, ...)
{
    if ((int)level > atomic_load(&current_level))
        return;
    int saved_errno = errno;
    char line[LOG_LINE_MAX];
    /* Room for "...\n" at the end whatever happens. */
    const size_t body_max = sizeof line - 4;

    pthread_mutex_lock(&log_lock);
    size_t len = format_prefix(line, body_max, level);
    va_list ap;
    va_start(ap, fmt);
    int n = vsnprintf(line + len, body_max - len, fmt, ap);
    va_end(ap);
    if (n < 0)
        n = 0;
    size_t msg_len = (size_t)n;
    bool truncated = msg_len >= body_max - len;
    if (truncated)
        msg_len = body_max - len - 1;
    sanitize(line + len, msg_len);
    len += msg_len;
    if (truncated) {
        memcpy(line + len, "...", 3);
        len += 3;
    }
    line[len++] = '\n';
    write_all(STDERR_FILENO, line, len);
    if (file_fd >= 0)
        write_all(file_fd, line, len);
    pthread_mutex_unlock(&log_lock);
    errno = saved_errno;
}
