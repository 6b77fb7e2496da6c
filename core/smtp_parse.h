/* smtp_parse: pure parsers for what an SMTP client sends (RFC 5321, 6531,
 * 3030, 1870, 6152, 3461, 4954). No I/O, no allocation beyond the
 * fixed-size structs here; every input is bounded by its length argument
 * and may contain any bytes, NULs included. Failures carry the reply the
 * server should give. */
#ifndef POSTHORN_SMTP_PARSE_H
#define POSTHORN_SMTP_PARSE_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "buf.h"

#define SMTP_PATH_MAX      256   /* RFC 5321 4.5.3.1.3, without the brackets */
#define SMTP_LOCAL_MAX     64
#define SMTP_DOMAIN_MAX    255
#define SMTP_ENVID_MAX     100
#define SMTP_ORCPT_MAX     500
#define SMTP_AUTH_MAX      500

/* A reply for a parse failure, e.g. {501, "5.1.7", "Bad sender address syntax"}. */
struct smtp_error {
    int code;
    const char *enhanced;
    const char *text;
};

enum smtp_verb {
    SMTP_UNKNOWN = 0,
    SMTP_HELO, SMTP_EHLO, SMTP_MAIL, SMTP_RCPT, SMTP_DATA, SMTP_BDAT,
    SMTP_RSET, SMTP_NOOP, SMTP_QUIT, SMTP_VRFY, SMTP_EXPN, SMTP_HELP,
    SMTP_STARTTLS, SMTP_AUTH,
};

struct smtp_command {
    enum smtp_verb verb;
    const char *args;      /* points into the line, after the verb and one space */
    size_t args_len;       /* 0 when there are none; trailing spaces removed */
};

/* Splits a command line (without its CRLF). The verb is case-insensitive
 * and must be followed by a space or the end of the line. "MAIL FROM:" and
 * "RCPT TO:" keep the "FROM:"/"TO:" in args; smtp_parse_mail/rcpt expect
 * that. Returns 0, or -1 (verb SMTP_UNKNOWN) for an unknown verb. */
int smtp_parse_command(const char *line, size_t len, struct smtp_command *cmd);

/* A forward- or reverse-path. */
struct smtp_path {
    bool is_null;                       /* "<>" */
    bool is_postmaster;                 /* RCPT TO:<postmaster> without a domain (RFC 5321 4.5.1) */
    bool has_utf8;                      /* non-ASCII octets present (needs SMTPUTF8) */
    char mailbox[SMTP_PATH_MAX + 1];    /* "local@domain", NUL-terminated; a
                                           quoted local part is unquoted when it
                                           is a valid dot-atom, else kept quoted;
                                           "" for null and bare postmaster */
    size_t local_len;                   /* octets of the local part in mailbox */
};

enum smtp_body { SMTP_BODY_NONE, SMTP_BODY_7BIT, SMTP_BODY_8BITMIME, SMTP_BODY_BINARYMIME };
enum smtp_ret  { SMTP_RET_NONE, SMTP_RET_FULL, SMTP_RET_HDRS };

#define SMTP_NOTIFY_NEVER   1u
#define SMTP_NOTIFY_SUCCESS 2u
#define SMTP_NOTIFY_FAILURE 4u
#define SMTP_NOTIFY_DELAY   8u

struct smtp_mail_args {
    struct smtp_path from;
    bool size_given;
    uint64_t size;                      /* SIZE= */
    enum smtp_body body;                /* BODY= */
    bool smtputf8;                      /* SMTPUTF8 */
    enum smtp_ret ret;                  /* RET= (DSN) */
    char envid[SMTP_ENVID_MAX + 1];     /* ENVID= (xtext, kept encoded) */
    char auth[SMTP_AUTH_MAX + 1];       /* AUTH= (xtext, kept encoded) */
};

struct smtp_rcpt_args {
    struct smtp_path to;
    unsigned notify;                    /* SMTP_NOTIFY_* bits, 0 = not given */
    char orcpt[SMTP_ORCPT_MAX + 1];     /* ORCPT= (kept encoded) */
};

/* Parses the arguments of MAIL ("FROM:<path> [params]"). Tolerates one
 * space after the colon (common clients send it). Path errors give 501
 * 5.1.7; unknown or malformed parameters 555 5.5.4; a missing "FROM:" 501
 * 5.5.4. Non-ASCII in the path is allowed only with SMTPUTF8 among the
 * parameters (else 553 5.6.7). Source routes "<@a,@b:user@d>" are accepted
 * and the route dropped (RFC 5321 C); "<@a>", "<a:@a>", "<a>" and paths
 * over SMTP_PATH_MAX are refused. */
int smtp_parse_mail(const char *args, size_t len, struct smtp_mail_args *out,
                    struct smtp_error *err);

/* Parses the arguments of RCPT ("TO:<path> [params]"). Path errors give
 * 501 5.1.3; "<>" is refused; "<postmaster>" (any case) is allowed without a
 * domain. `smtputf8` is whether the transaction's MAIL had SMTPUTF8. */
int smtp_parse_rcpt(const char *args, size_t len, bool smtputf8, struct smtp_rcpt_args *out,
                    struct smtp_error *err);

/* Parses "BDAT <size> [LAST]" arguments (RFC 3030). */
int smtp_parse_bdat(const char *args, size_t len, uint64_t *chunk_size, bool *last,
                    struct smtp_error *err);

/* Checks an EHLO/HELO argument: a domain or an address literal
 * ("[192.0.2.1]", "[IPv6:2001:db8::1]"). Returns 0, or -1 with 501 5.5.4. */
int smtp_parse_helo(const char *args, size_t len, struct smtp_error *err);

/* DATA phase decoder: takes raw bytes as they arrive and appends the
 * message, dot-unstuffed, with CRLF line endings, to `out` (NULL to
 * discard, e.g. after the size limit). The end is CRLF "." CRLF only
 * (the CRLF before the dot may be the one that ended the DATA command).
 * A bare LF or a bare CR anywhere in the data sets bad_line_ending and is
 * never taken as part of an end-of-data marker (SMTP smuggling); the
 * session rejects such a message once the real end arrives.
 * Returns the number of input bytes consumed (all of them unless the end
 * was reached; bytes after the end belong to the next command). */
struct smtp_data_decoder {
    int state;                 /* internal */
    bool done;                 /* the end-of-data marker was consumed */
    bool bad_line_ending;      /* bare CR or bare LF seen */
    uint64_t octets;           /* message octets produced (appended or discarded) */
    bool has_8bit;             /* an octet >= 0x80 seen */
    bool out_failed;           /* appending to out failed (out of memory):
                                  out is incomplete; octets still counts */
};
void smtp_data_init(struct smtp_data_decoder *d);
size_t smtp_data_feed(struct smtp_data_decoder *d, const char *in, size_t len, struct buf *out);

/* Decodes xtext (RFC 3461 4) into out; returns 0 or -1 for malformed.
 * out is NUL-terminated; -1 also when it is too small, or for "+00"
 * (a NUL would silently truncate the result). */
int smtp_xtext_decode(const char *in, size_t len, char *out, size_t outlen);

#endif
