/* log: one line per event, to stderr and to LOG_DIR/mail.log.
 *
 * Line format (UTC, millisecond precision):
 *   2026-11-27T20:40:01.123Z posthornd[1234]: info: smtp[3f2a9c01]: connect from 127.0.0.1
 * The caller supplies everything after the level ("smtp[id]: ..."), so a
 * session's lines carry its id and client address. Safe to call from any
 * thread; each line is written with a single write(2) per destination. */
#ifndef POSTHORN_LOG_H
#define POSTHORN_LOG_H

#include <stddef.h>

enum log_level {
    LOG_ERROR = 0,
    LOG_WARN,
    LOG_INFO,
    LOG_DEBUG,
    LOG_TRACE,
};

/* Parses docker-mailserver's LOG_LEVEL names: error, warn, info, debug,
 * trace (empty = info). Returns 0, or -1 for an unknown name. */
int log_level_parse(const char *name, enum log_level *out);

/* Opens LOG_DIR/mail.log for appending (creating LOG_DIR if needed) when
 * log_dir is non-NULL and non-empty; stderr is always written. Returns 0, or
 * -1 with a reason in err when the file cannot be opened. */
int log_init(enum log_level level, const char *log_dir, char *err, size_t errlen);
void log_set_level(enum log_level level);
enum log_level log_get_level(void);
void log_close(void);

/* The name at the start of each line ("posthornd" unless set; `setup` sets
 * "setup"). Longer names are truncated to 31 bytes. */
void log_set_program(const char *name);

void log_msg(enum log_level level, const char *fmt, ...) __attribute__((format(printf, 2, 3)));

#define log_error(...) log_msg(LOG_ERROR, __VA_ARGS__)
#define log_warn(...)  log_msg(LOG_WARN, __VA_ARGS__)
#define log_info(...)  log_msg(LOG_INFO, __VA_ARGS__)
#define log_debug(...) do { if (log_get_level() >= LOG_DEBUG) log_msg(LOG_DEBUG, __VA_ARGS__); } while (0)
#define log_trace(...) do { if (log_get_level() >= LOG_TRACE) log_msg(LOG_TRACE, __VA_ARGS__); } while (0)

#endif
