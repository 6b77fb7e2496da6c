/* buf: a growable byte buffer. The length always travels with the data;
 * the contents are not NUL-terminated unless buf_cstr() is called. */
#ifndef POSTHORN_BUF_H
#define POSTHORN_BUF_H

#include <stdarg.h>
#include <stddef.h>

struct buf {
    char *data;
    size_t len;
    size_t cap;
};

#define BUF_INIT { NULL, 0, 0 }

/* Ensures room for `extra` more bytes. Returns 0, or -1 when out of memory
 * (the buffer is then unchanged). */
int buf_reserve(struct buf *b, size_t extra);
int buf_append(struct buf *b, const void *data, size_t len);
int buf_printf(struct buf *b, const char *fmt, ...) __attribute__((format(printf, 2, 3)));
int buf_vprintf(struct buf *b, const char *fmt, va_list ap);
/* Drops the first n bytes. */
void buf_consume(struct buf *b, size_t n);
/* NUL-terminates (not counted in len) and returns data; NULL when out of memory. */
char *buf_cstr(struct buf *b);
void buf_reset(struct buf *b);      /* len = 0, memory kept */
void buf_free(struct buf *b);       /* memory released, back to BUF_INIT */

#endif
