/* pop3_parse: pure parsers for what a POP3 client sends (RFC 1939, 2449,
 * 5034 with RFC 4616 SASL PLAIN). No I/O and no allocation; every input is
 * bounded by its length argument and may contain any bytes, NULs included.
 * A failure comes with a short reason for the "-ERR" reply. */
#ifndef POSTHORN_POP3_PARSE_H
#define POSTHORN_POP3_PARSE_H

#include <stdbool.h>
#include <stddef.h>

#include <stdint.h>

#include "sasl.h"

/* RFC 2449 4: a command line is at most 255 octets. Counted here without
 * the CRLF (two octets of leniency for clients that count differently). */
#define POP3_LINE_MAX        255
/* RFC 5034 4: a SASL response line may exceed the command limit. */
#define POP3_SASL_LINE_MAX   2048
#define POP3_USER_MAX        SASL_USER_MAX
#define POP3_PASS_MAX        SASL_PASS_MAX
/* Message numbers beyond this cannot name a message of any maildrop. */
#define POP3_MSGNUM_MAX      2000000000u

enum pop3_verb {
    POP3_UNKNOWN = 0,
    POP3_USER, POP3_PASS, POP3_APOP, POP3_AUTH, POP3_STLS, POP3_CAPA, POP3_QUIT,
    POP3_STAT, POP3_LIST, POP3_RETR, POP3_DELE, POP3_NOOP, POP3_RSET, POP3_TOP, POP3_UIDL,
};

struct pop3_command {
    enum pop3_verb verb;
    const char *args;      /* into the line, after the verb and one space */
    size_t args_len;       /* 0 when there are none; exactly as sent (PASS
                              keeps its spaces) */
};

/* Splits a command line (without CRLF). The keyword is case-insensitive
 * and followed by one space or the end of the line. Returns 0, or -1 (verb
 * POP3_UNKNOWN, args/args_len still set) when the keyword is not known. */
int pop3_parse_command(const char *line, size_t len, struct pop3_command *cmd);

/* The canonical upper-case keyword of a verb ("RETR"; "?" for unknown). */
const char *pop3_verb_name(enum pop3_verb verb);

/* Arguments of commands that take message numbers. Spaces between and
 * after the arguments are tolerated; anything else fails with *reason set.
 *   pop3_parse_msgnum: exactly one number (RETR, DELE), or none when
 *     `optional` (LIST, UIDL): then *given is false.
 *   pop3_parse_top: "msg n" (n may be 0; a huge n is clamped to UINT32_MAX).
 * Message numbers are 1..POP3_MSGNUM_MAX. Returns 0 or -1. */
int pop3_parse_msgnum(const char *args, size_t len, bool optional, bool *given, uint32_t *msg,
                      const char **reason);
int pop3_parse_top(const char *args, size_t len, uint32_t *msg, uint32_t *lines,
                   const char **reason);

/* USER's argument: one word of 1..POP3_USER_MAX printable octets, copied
 * NUL-terminated into out (outlen > POP3_USER_MAX). Returns 0 or -1. */
int pop3_parse_user(const char *args, size_t len, char *out, size_t outlen,
                    const char **reason);

/* PASS's argument: the rest of the line, spaces included, 1..POP3_PASS_MAX
 * octets without NUL, copied NUL-terminated (outlen > POP3_PASS_MAX). */
int pop3_parse_pass(const char *args, size_t len, char *out, size_t outlen,
                    const char **reason);

/* AUTH's arguments: the mechanism and, when given, the initial response.
 * *mech and *mech_len point at the mechanism as sent; *ir is NULL when no
 * initial response was given. Returns 0 or -1 (no mechanism). */
int pop3_parse_auth(const char *args, size_t len, const char **mech, size_t *mech_len,
                    const char **ir, size_t *ir_len, const char **reason);

#endif
