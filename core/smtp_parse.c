/* SMTP protocol parsers. See smtp_parse.h.
 *
 * Every parser works on (pointer, length) and indexes with bounds checks;
 * nothing here depends on NUL termination of its input or on the locale. */
#include "smtp_parse.h"

#include <arpa/inet.h>
#include <string.h>

typedef const unsigned char *uptr;

/* --- character classes (ASCII only, locale-independent) -------------------- */

static bool is_alpha(unsigned c) { return (c | 0x20) >= 'a' && (c | 0x20) <= 'z'; }
static bool is_digit(unsigned c) { return c >= '0' && c <= '9'; }
static bool is_alnum(unsigned c) { return is_alpha(c) || is_digit(c); }
static unsigned lower(unsigned c) { return c >= 'A' && c <= 'Z' ? c | 0x20 : c; }

/* RFC 5322 atext, ASCII part. */
static bool is_atext(unsigned c)
{
    return is_alnum(c) || (c != 0 && strchr("!#$%&'*+-/=?^_`{|}~", (int)c) != NULL);
}

/* qtextSMTP: %d32-33 / %d35-91 / %d93-126 */
static bool is_qtext(unsigned c) { return c >= 32 && c <= 126 && c != '"' && c != '\\'; }

/* esmtp-value characters: %d33-60 / %d62-126 */
static bool is_value_char(unsigned c) { return c >= 33 && c <= 126 && c != '='; }

/* xchar: %d33-42 / %d44-60 / %d62-126 */
static bool is_xchar(unsigned c) { return c >= 33 && c <= 126 && c != '+' && c != '='; }

/* dcontent: %d33-90 / %d94-126 */
static bool is_dcontent(unsigned c) { return c >= 33 && c <= 126 && (c <= 90 || c >= 94); }

static bool ieq(const char *a, size_t alen, const char *lit)
{
    size_t n = strlen(lit);
    if (alen != n)
        return false;
    for (size_t i = 0; i < n; i++)
        if (lower((unsigned char)a[i]) != (unsigned char)lit[i])
            return false;
    return true;
}

static bool iprefix(const char *a, size_t alen, const char *lit)
{
    size_t n = strlen(lit);
    return alen >= n && ieq(a, n, lit);
}

static int fail(struct smtp_error *err, int code, const char *enhanced, const char *text)
{
    if (err) {
        err->code = code;
        err->enhanced = enhanced;
        err->text = text;
    }
    return -1;
}

/* Length of the well-formed UTF-8 sequence at s (RFC 3629: no overlongs,
 * no surrogates, nothing above U+10FFFF), or 0 when malformed. */
static size_t utf8_seq(uptr s, size_t avail)
{
    unsigned c = s[0];
    size_t n;
    unsigned lo = 0x80, hi = 0xBF;
    if (c >= 0xC2 && c <= 0xDF)
        n = 2;
    else if (c >= 0xE0 && c <= 0xEF)
        n = 3;
    else if (c >= 0xF0 && c <= 0xF4)
        n = 4;
    else
        return 0;
    if (c == 0xE0)
        lo = 0xA0;
    else if (c == 0xED)
        hi = 0x9F;
    else if (c == 0xF0)
        lo = 0x90;
    else if (c == 0xF4)
        hi = 0x8F;
    if (avail < n || s[1] < lo || s[1] > hi)
        return 0;
    for (size_t i = 2; i < n; i++)
        if (s[i] < 0x80 || s[i] > 0xBF)
            return 0;
    return n;
}

/* --- commands ------------------------------------------------------------- */

static const struct {
    const char *name;
    enum smtp_verb verb;
} verbs[] = {
    { "helo", SMTP_HELO }, { "ehlo", SMTP_EHLO }, { "mail", SMTP_MAIL },
    { "rcpt", SMTP_RCPT }, { "data", SMTP_DATA }, { "bdat", SMTP_BDAT },
    { "rset", SMTP_RSET }, { "noop", SMTP_NOOP }, { "quit", SMTP_QUIT },
    { "vrfy", SMTP_VRFY }, { "expn", SMTP_EXPN }, { "help", SMTP_HELP },
    { "starttls", SMTP_STARTTLS }, { "auth", SMTP_AUTH },
};

int smtp_parse_command(const char *line, size_t len, struct smtp_command *cmd)
{
    size_t vlen = 0;
    while (vlen < len && line[vlen] != ' ')
        vlen++;
    cmd->verb = SMTP_UNKNOWN;
    cmd->args = line + len;
    cmd->args_len = 0;
    for (size_t i = 0; i < sizeof verbs / sizeof verbs[0]; i++) {
        if (ieq(line, vlen, verbs[i].name)) {
            cmd->verb = verbs[i].verb;
            break;
        }
    }
    if (cmd->verb == SMTP_UNKNOWN)
        return -1;
    if (vlen == len)
        return 0;
    size_t end = len;
    while (end > vlen + 1 && line[end - 1] == ' ')
        end--;
    cmd->args = line + vlen + 1;
    cmd->args_len = end - (vlen + 1);
    return 0;
}

/* --- paths ---------------------------------------------------------------- */

/* Where the parts of a path lie in the input. */
struct path_parts {
    size_t local, local_end;      /* raw local part (quotes included) */
    size_t domain, domain_end;    /* raw domain or address literal */
    bool quoted;
    bool has_utf8, bad_utf8;
};

/* Consumes one non-ASCII character at *pos, recording what it was. */
static void take_utf8(uptr s, size_t len, size_t *pos, struct path_parts *pp)
{
    size_t n = utf8_seq(s + *pos, len - *pos);
    pp->has_utf8 = true;
    if (n == 0) {
        pp->bad_utf8 = true;
        n = 1;
    }
    *pos += n;
}

/* Domain = sub-domain *("." sub-domain); sub-domain = Let-dig [Ldh-str],
 * where non-ASCII (U-labels, RFC 6531) counts as a letter. */
static int parse_domain(uptr s, size_t len, size_t *pos, struct path_parts *pp)
{
    size_t i = *pos;
    for (;;) {
        size_t start = i;
        bool last_hyphen = false;
        while (i < len) {
            if (s[i] >= 0x80) {
                take_utf8(s, len, &i, pp);
                last_hyphen = false;
            } else if (is_alnum(s[i]) || (s[i] == '-' && i > start)) {
                last_hyphen = s[i] == '-';
                i++;
            } else {
                break;
            }
        }
        if (i == start || last_hyphen || i - start > 63)
            return -1;
        if (i >= len || s[i] != '.')
            break;
        i++;
    }
    *pos = i;
    return 0;
}

/* An address literal's contents (between the brackets). */
static bool valid_literal(const char *s, size_t len)
{
    char tmp[SMTP_DOMAIN_MAX + 1];
    if (len == 0 || len > SMTP_DOMAIN_MAX)
        return false;
    for (size_t i = 0; i < len; i++)
        if (!is_dcontent((unsigned char)s[i]))
            return false;
    unsigned char addr[16];
    if (iprefix(s, len, "ipv6:")) {
        memcpy(tmp, s + 5, len - 5);
        tmp[len - 5] = '\0';
        return inet_pton(AF_INET6, tmp, addr) == 1;
    }
    /* A General-address-literal ("tag:content") needs a tag registered
     * with IANA (RFC 5321 4.1.3); IPv6 is the only one, so anything else
     * must be IPv4. */
    memcpy(tmp, s, len);
    tmp[len] = '\0';
    return inet_pton(AF_INET, tmp, addr) == 1;
}

static int parse_literal(uptr s, size_t len, size_t *pos)
{
    size_t i = *pos + 1;
    while (i < len && s[i] != ']')
        i++;
    if (i >= len || !valid_literal((const char *)s + *pos + 1, i - *pos - 1))
        return -1;
    *pos = i + 1;
    return 0;
}

/* Dot-string = Atom *("." Atom) */
static int parse_dot_string(uptr s, size_t len, size_t *pos, struct path_parts *pp)
{
    size_t i = *pos;
    for (;;) {
        size_t start = i;
        while (i < len) {
            if (s[i] >= 0x80)
                take_utf8(s, len, &i, pp);
            else if (is_atext(s[i]))
                i++;
            else
                break;
        }
        if (i == start)
            return -1;
        if (i >= len || s[i] != '.')
            break;
        i++;
    }
    *pos = i;
    return 0;
}

/* Quoted-string = DQUOTE *QcontentSMTP DQUOTE */
static int parse_quoted(uptr s, size_t len, size_t *pos, struct path_parts *pp)
{
    size_t i = *pos + 1;
    while (i < len && s[i] != '"') {
        if (s[i] == '\\') {
            if (i + 1 >= len || s[i + 1] < 32 || s[i + 1] > 126)
                return -1;
            i += 2;
        } else if (s[i] >= 0x80) {
            take_utf8(s, len, &i, pp);
        } else if (is_qtext(s[i])) {
            i++;
        } else {
            return -1;
        }
    }
    if (i >= len)
        return -1;
    *pos = i + 1;
    return 0;
}

/* A-d-l = At-domain *( "," At-domain ) ":" — parsed and dropped. */
static int parse_route(uptr s, size_t len, size_t *pos, struct path_parts *pp)
{
    size_t i = *pos;
    for (;;) {
        if (i >= len || s[i] != '@')
            return -1;
        i++;
        if (parse_domain(s, len, &i, pp) < 0)
            return -1;
        if (i < len && s[i] == ',') {
            i++;
            continue;
        }
        if (i >= len || s[i] != ':')
            return -1;
        *pos = i + 1;
        return 0;
    }
}

/* Mailbox = Local-part "@" ( Domain / address-literal ) */
static int parse_mailbox(uptr s, size_t len, size_t *pos, struct path_parts *pp)
{
    size_t i = *pos;
    pp->local = i;
    pp->quoted = i < len && s[i] == '"';
    int rc = pp->quoted ? parse_quoted(s, len, &i, pp) : parse_dot_string(s, len, &i, pp);
    if (rc < 0)
        return -1;
    pp->local_end = i;
    if (i >= len || s[i] != '@')
        return -1;
    i++;
    pp->domain = i;
    if (i < len && s[i] == '[')
        rc = parse_literal(s, len, &i);
    else
        rc = parse_domain(s, len, &i, pp);
    if (rc < 0)
        return -1;
    pp->domain_end = i;
    *pos = i;
    return 0;
}

/* Whether s is a Dot-string (the non-ASCII octets already validated). */
static bool is_dot_string(const unsigned char *s, size_t len)
{
    if (len == 0 || s[0] == '.' || s[len - 1] == '.')
        return false;
    for (size_t i = 0; i < len; i++) {
        if (s[i] == '.' ? s[i + 1] == '.' : !(s[i] >= 0x80 || is_atext(s[i])))
            return false;
    }
    return true;
}

/* Writes the canonical local part: unquoted when the quoted content is a
 * Dot-string, else quoted with only '"' and '\' escaped. Returns the
 * length written; the caller guarantees room (canonical <= raw). */
static size_t canonical_local(uptr s, const struct path_parts *pp, char *out)
{
    size_t rawlen = pp->local_end - pp->local;
    if (!pp->quoted) {
        memcpy(out, s + pp->local, rawlen);
        return rawlen;
    }
    unsigned char content[SMTP_LOCAL_MAX];
    size_t n = 0;
    for (size_t i = pp->local + 1; i + 1 < pp->local_end; i++) {
        if (s[i] == '\\')
            i++;
        content[n++] = s[i];
    }
    if (is_dot_string(content, n)) {
        memcpy(out, content, n);
        return n;
    }
    size_t o = 0;
    out[o++] = '"';
    for (size_t i = 0; i < n; i++) {
        if (content[i] == '"' || content[i] == '\\')
            out[o++] = '\\';
        out[o++] = (char)content[i];
    }
    out[o++] = '"';
    return o;
}

/* What a path parse needs to know and answer with. */
struct path_ctx {
    bool reverse;              /* MAIL: "<>" allowed, no bare postmaster */
    const char *enhanced;      /* 5.1.7 for senders, 5.1.3 for recipients */
    const char *bad_text;
};

/* Parses "<...>" at *pos into out. Non-ASCII is recorded in out->has_utf8
 * and checked by the caller, who may only know about SMTPUTF8 later;
 * malformed UTF-8 is reported through *bad_utf8. */
static int parse_path(uptr s, size_t len, size_t *pos, const struct path_ctx *ctx,
                      struct smtp_path *out, bool *bad_utf8, struct smtp_error *err)
{
    size_t i = *pos;
    if (i >= len || s[i] != '<')
        return fail(err, 501, ctx->enhanced, ctx->bad_text);
    size_t open = i++;
    if (i < len && s[i] == '>') {
        if (!ctx->reverse)
            return fail(err, 501, ctx->enhanced, ctx->bad_text);
        out->is_null = true;
        *pos = i + 1;
        return 0;
    }
    if (!ctx->reverse && len - i > 10 && ieq((const char *)s + i, 10, "postmaster") &&
        s[i + 10] == '>') {
        out->is_postmaster = true;
        *pos = i + 11;
        return 0;
    }
    struct path_parts pp = { 0 };
    if (i < len && s[i] == '@' && parse_route(s, len, &i, &pp) < 0)
        return fail(err, 501, ctx->enhanced, ctx->bad_text);
    if (parse_mailbox(s, len, &i, &pp) < 0 || i >= len || s[i] != '>')
        return fail(err, 501, ctx->enhanced, ctx->bad_text);
    if (i - open - 1 > SMTP_PATH_MAX || pp.local_end - pp.local > SMTP_LOCAL_MAX ||
        pp.domain_end - pp.domain > SMTP_DOMAIN_MAX)
        return fail(err, 501, ctx->enhanced, "Address too long");
    size_t o = canonical_local(s, &pp, out->mailbox);
    out->local_len = o;
    out->mailbox[o++] = '@';
    memcpy(out->mailbox + o, s + pp.domain, pp.domain_end - pp.domain);
    o += pp.domain_end - pp.domain;
    out->mailbox[o] = '\0';
    out->has_utf8 = pp.has_utf8;
    *bad_utf8 = pp.bad_utf8;
    *pos = i + 1;
    return 0;
}

/* The verdict on non-ASCII once SMTPUTF8 is known. */
static int check_utf8(const struct smtp_path *p, bool bad_utf8, bool smtputf8,
                      const struct path_ctx *ctx, struct smtp_error *err)
{
    if (p->has_utf8 && !smtputf8)
        return fail(err, 553, "5.6.7", "Non-ASCII address requires SMTPUTF8");
    if (bad_utf8)
        return fail(err, 501, ctx->enhanced, ctx->bad_text);
    return 0;
}

/* "FROM:" / "TO:", then at most one space (a common client habit). */
static int parse_prefix(const char *args, size_t len, const char *prefix, size_t *pos)
{
    size_t n = strlen(prefix);
    if (!iprefix(args, len, prefix))
        return -1;
    if (n < len && args[n] == ' ')
        n++;
    *pos = n;
    return 0;
}

/* --- ESMTP parameters ------------------------------------------------------ */

struct param {
    const char *key, *value;
    size_t key_len, value_len;
    bool has_value;
};

/* Takes the next parameter after *pos; returns 1, 0 at the end, -1 when
 * malformed. Parameters are separated by one or more spaces. */
static int next_param(const char *args, size_t len, size_t *pos, struct param *p)
{
    uptr s = (uptr)args;
    size_t i = *pos;
    while (i < len && s[i] == ' ')
        i++;
    if (i == len) {
        *pos = i;
        return 0;
    }
    if (!is_alnum(s[i]))
        return -1;
    p->key = args + i;
    while (i < len && (is_alnum(s[i]) || s[i] == '-'))
        i++;
    p->key_len = (size_t)(args + i - p->key);
    p->has_value = i < len && s[i] == '=';
    p->value = args + i;
    p->value_len = 0;
    if (p->has_value) {
        p->value = args + ++i;
        while (i < len && is_value_char(s[i]))
            i++;
        p->value_len = (size_t)(args + i - p->value);
        if (p->value_len == 0)
            return -1;
    }
    if (i < len && s[i] != ' ')
        return -1;
    *pos = i;
    return 1;
}

static int bad_param(struct smtp_error *err)
{
    return fail(err, 555, "5.5.4", "Invalid parameter syntax");
}

static int unsupported_param(struct smtp_error *err)
{
    return fail(err, 555, "5.5.4", "Unsupported parameter");
}

/* Decimal, 1 to 20 digits, fitting in uint64. */
static int parse_u64(const char *s, size_t len, uint64_t *out)
{
    uint64_t v = 0;
    if (len == 0 || len > 20)
        return -1;
    for (size_t i = 0; i < len; i++) {
        unsigned d = (unsigned char)s[i] - '0';
        if (d > 9 || v > (UINT64_MAX - d) / 10)
            return -1;
        v = v * 10 + d;
    }
    *out = v;
    return 0;
}

static bool valid_xtext(const char *s, size_t len)
{
    char tmp[SMTP_ORCPT_MAX + 1];
    return len < sizeof tmp && smtp_xtext_decode(s, len, tmp, sizeof tmp) == 0;
}

/* Copies an already validated value into a NUL-terminated field. */
static void store(char *field, const struct param *p)
{
    memcpy(field, p->value, p->value_len);
    field[p->value_len] = '\0';
}

enum mail_param { MP_SIZE, MP_BODY, MP_SMTPUTF8, MP_RET, MP_ENVID, MP_AUTH, MP_COUNT };
static const char *const mail_params[MP_COUNT] = {
    "size", "body", "smtputf8", "ret", "envid", "auth",
};

static int mail_param(struct smtp_mail_args *out, int which, const struct param *p)
{
    if ((which == MP_SMTPUTF8) == p->has_value)
        return -1;
    switch (which) {
    case MP_SIZE:
        out->size_given = true;
        return parse_u64(p->value, p->value_len, &out->size);
    case MP_BODY:
        out->body = ieq(p->value, p->value_len, "7bit") ? SMTP_BODY_7BIT
                  : ieq(p->value, p->value_len, "8bitmime") ? SMTP_BODY_8BITMIME
                  : ieq(p->value, p->value_len, "binarymime") ? SMTP_BODY_BINARYMIME
                  : SMTP_BODY_NONE;
        return out->body == SMTP_BODY_NONE ? -1 : 0;
    case MP_SMTPUTF8:
        out->smtputf8 = true;
        return 0;
    case MP_RET:
        out->ret = ieq(p->value, p->value_len, "full") ? SMTP_RET_FULL
                 : ieq(p->value, p->value_len, "hdrs") ? SMTP_RET_HDRS
                 : SMTP_RET_NONE;
        return out->ret == SMTP_RET_NONE ? -1 : 0;
    case MP_ENVID:
        if (p->value_len > SMTP_ENVID_MAX || !valid_xtext(p->value, p->value_len))
            return -1;
        store(out->envid, p);
        return 0;
    default: /* MP_AUTH: xtext, or "<>" (which is also xtext) */
        if (p->value_len > SMTP_AUTH_MAX || !valid_xtext(p->value, p->value_len))
            return -1;
        store(out->auth, p);
        return 0;
    }
}

/* Looks a keyword up; returns its index, or -1 when unknown. */
static int keyword_index(const struct param *p, const char *const *names, int count)
{
    for (int i = 0; i < count; i++)
        if (ieq(p->key, p->key_len, names[i]))
            return i;
    return -1;
}

/* Runs every parameter through `apply`; unknown and repeated keywords and
 * malformed values are refused with 555 5.5.4. */
static int parse_params(const char *args, size_t len, size_t pos, const char *const *names,
                        int count, int (*apply)(void *, int, const struct param *),
                        void *ctx, struct smtp_error *err)
{
    unsigned seen = 0;
    struct param p;
    int rc;
    while ((rc = next_param(args, len, &pos, &p)) > 0) {
        int which = keyword_index(&p, names, count);
        if (which < 0)
            return unsupported_param(err);
        if (seen & (1u << which))
            return fail(err, 555, "5.5.4", "Duplicate parameter");
        seen |= 1u << which;
        if (apply(ctx, which, &p) < 0)
            return bad_param(err);
    }
    return rc < 0 ? bad_param(err) : 0;
}

static int apply_mail(void *ctx, int which, const struct param *p)
{
    return mail_param(ctx, which, p);
}

static const struct path_ctx mail_ctx = { true, "5.1.7", "Bad sender address syntax" };
static const struct path_ctx rcpt_ctx = { false, "5.1.3", "Bad recipient address syntax" };

/* After the path: nothing, or spaces and parameters. */
static bool params_follow(const char *args, size_t len, size_t pos)
{
    return pos == len || args[pos] == ' ';
}

int smtp_parse_mail(const char *args, size_t len, struct smtp_mail_args *out,
                    struct smtp_error *err)
{
    size_t pos;
    bool bad_utf8 = false;
    memset(out, 0, sizeof *out);
    if (parse_prefix(args, len, "from:", &pos) < 0)
        return fail(err, 501, "5.5.4", "Syntax: MAIL FROM:<address>");
    if (parse_path((uptr)args, len, &pos, &mail_ctx, &out->from, &bad_utf8, err) < 0)
        return -1;
    if (!params_follow(args, len, pos))
        return fail(err, 501, mail_ctx.enhanced, mail_ctx.bad_text);
    if (parse_params(args, len, pos, mail_params, MP_COUNT, apply_mail, out, err) < 0)
        return -1;
    return check_utf8(&out->from, bad_utf8, out->smtputf8, &mail_ctx, err);
}

/* NOTIFY = "NEVER" / 1#( "SUCCESS" / "FAILURE" / "DELAY" ) */
static int parse_notify(const char *s, size_t len, unsigned *out)
{
    if (ieq(s, len, "never")) {
        *out = SMTP_NOTIFY_NEVER;
        return 0;
    }
    unsigned bits = 0;
    size_t start = 0;
    for (size_t i = 0; i <= len; i++) {
        if (i < len && s[i] != ',')
            continue;
        const char *w = s + start;
        size_t n = i - start;
        if (ieq(w, n, "success"))
            bits |= SMTP_NOTIFY_SUCCESS;
        else if (ieq(w, n, "failure"))
            bits |= SMTP_NOTIFY_FAILURE;
        else if (ieq(w, n, "delay"))
            bits |= SMTP_NOTIFY_DELAY;
        else
            return -1;
        start = i + 1;
    }
    *out = bits;
    return 0;
}

/* ORCPT = addr-type ";" xtext, addr-type an atom such as "rfc822". */
static int parse_orcpt(const char *s, size_t len)
{
    size_t semi = 0;
    while (semi < len && s[semi] != ';')
        semi++;
    if (semi == 0 || semi + 1 >= len || len > SMTP_ORCPT_MAX)
        return -1;
    for (size_t i = 0; i < semi; i++)
        if (!is_atext((unsigned char)s[i]))
            return -1;
    return valid_xtext(s + semi + 1, len - semi - 1) ? 0 : -1;
}

enum rcpt_param { RP_NOTIFY, RP_ORCPT, RP_COUNT };
static const char *const rcpt_params[RP_COUNT] = { "notify", "orcpt" };

static int apply_rcpt(void *ctx, int which, const struct param *p)
{
    struct smtp_rcpt_args *out = ctx;
    if (!p->has_value)
        return -1;
    if (which == RP_NOTIFY)
        return parse_notify(p->value, p->value_len, &out->notify);
    if (parse_orcpt(p->value, p->value_len) < 0)
        return -1;
    store(out->orcpt, p);
    return 0;
}

int smtp_parse_rcpt(const char *args, size_t len, bool smtputf8, struct smtp_rcpt_args *out,
                    struct smtp_error *err)
{
    size_t pos;
    bool bad_utf8 = false;
    memset(out, 0, sizeof *out);
    if (parse_prefix(args, len, "to:", &pos) < 0)
        return fail(err, 501, "5.5.4", "Syntax: RCPT TO:<address>");
    if (parse_path((uptr)args, len, &pos, &rcpt_ctx, &out->to, &bad_utf8, err) < 0)
        return -1;
    if (!params_follow(args, len, pos))
        return fail(err, 501, rcpt_ctx.enhanced, rcpt_ctx.bad_text);
    if (parse_params(args, len, pos, rcpt_params, RP_COUNT, apply_rcpt, out, err) < 0)
        return -1;
    return check_utf8(&out->to, bad_utf8, smtputf8, &rcpt_ctx, err);
}

/* --- BDAT and HELO ----------------------------------------------------------- */

int smtp_parse_bdat(const char *args, size_t len, uint64_t *chunk_size, bool *last,
                    struct smtp_error *err)
{
    size_t i = 0;
    while (i < len && is_digit((unsigned char)args[i]))
        i++;
    if (parse_u64(args, i, chunk_size) < 0)
        return fail(err, 501, "5.5.4", "Syntax: BDAT size [LAST]");
    *last = false;
    if (i == len)
        return 0;
    if (args[i] != ' ')
        return fail(err, 501, "5.5.4", "Syntax: BDAT size [LAST]");
    while (i < len && args[i] == ' ')
        i++;
    size_t end = len;
    while (end > i && args[end - 1] == ' ')
        end--;
    if (i == end)
        return 0;
    if (!ieq(args + i, end - i, "last"))
        return fail(err, 501, "5.5.4", "Syntax: BDAT size [LAST]");
    *last = true;
    return 0;
}

/* A HELO name: RFC 5321 wants a Domain, but real clients send underscores
 * and a trailing dot, which cost nothing to accept. */
static bool valid_helo_domain(const char *s, size_t len)
{
    if (len > 0 && s[len - 1] == '.')
        len--;
    if (len == 0 || len > SMTP_DOMAIN_MAX)
        return false;
    size_t label = 0;
    for (size_t i = 0; i < len; i++) {
        unsigned c = (unsigned char)s[i];
        if (c == '.') {
            if (label == 0)
                return false;
            label = 0;
        } else if (is_alnum(c) || c == '-' || c == '_') {
            if (++label > 63)
                return false;
        } else {
            return false;
        }
    }
    return label > 0;
}

int smtp_parse_helo(const char *args, size_t len, struct smtp_error *err)
{
    bool ok;
    if (len >= 2 && args[0] == '[' && args[len - 1] == ']')
        ok = valid_literal(args + 1, len - 2);
    else
        ok = valid_helo_domain(args, len);
    return ok ? 0 : fail(err, 501, "5.5.4", "Syntax: EHLO hostname");
}

/* --- xtext -------------------------------------------------------------------- */

static int hexval(unsigned c)
{
    if (is_digit(c))
        return (int)(c - '0');
    if (c >= 'A' && c <= 'F')
        return (int)(c - 'A' + 10);
    return -1;
}

int smtp_xtext_decode(const char *in, size_t len, char *out, size_t outlen)
{
    size_t o = 0;
    for (size_t i = 0; i < len; i++) {
        unsigned c = (unsigned char)in[i];
        if (c == '+') {
            int hi = i + 2 < len ? hexval((unsigned char)in[i + 1]) : -1;
            int lo = hi >= 0 ? hexval((unsigned char)in[i + 2]) : -1;
            /* A decoded NUL would silently truncate the C string. */
            if (lo < 0 || (hi | lo) == 0)
                return -1;
            c = (unsigned)(hi << 4 | lo);
            i += 2;
        } else if (!is_xchar(c)) {
            return -1;
        }
        if (o + 1 >= outlen)
            return -1;
        out[o++] = (char)c;
    }
    if (outlen == 0)
        return -1;
    out[o] = '\0';
    return 0;
}

/* --- DATA decoder ------------------------------------------------------------- */

/* Decoder states. The held-back states keep octets that are not yet
 * output because the next octet decides what they mean; they only exist
 * between calls. */
enum {
    D_LINE_START = 0,   /* after CRLF (initially: DATA's own CRLF) */
    D_IN_LINE,
    D_CR,               /* a CR is held back */
    D_DOT,              /* a '.' at line start is held back */
    D_DOT_CR,           /* '.' CR at line start is held back */
};

static bool any_8bit(const char *p, size_t n)
{
    unsigned char acc = 0;
    for (size_t i = 0; i < n; i++)
        acc |= (unsigned char)p[i];
    return acc & 0x80;
}

static void emit(struct smtp_data_decoder *d, struct buf *out, const char *p, size_t n)
{
    if (n == 0)
        return;
    d->octets += n;
    if (!d->has_8bit && any_8bit(p, n))
        d->has_8bit = true;
    if (out && !d->out_failed && buf_append(out, p, n) < 0)
        d->out_failed = true;
}

void smtp_data_init(struct smtp_data_decoder *d)
{
    memset(d, 0, sizeof *d);
    d->state = D_LINE_START;
}

/* Position of the next CR or LF at or after i (len if none). The caches
 * keep every byte from being scanned more than once per call, even when
 * the data has only one kind of line ending. */
struct eol_cache {
    size_t cr, lf;
    bool cr_known, lf_known;
};

static size_t find_byte(const char *in, size_t i, size_t len, int c, size_t *at, bool *known)
{
    if (!*known || *at < i) {
        const char *p = memchr(in + i, c, len - i);
        *at = p ? (size_t)(p - in) : len;
        *known = true;
    }
    return *at;
}

static size_t next_eol(const char *in, size_t i, size_t len, struct eol_cache *c)
{
    size_t cr = find_byte(in, i, len, '\r', &c->cr, &c->cr_known);
    size_t lf = find_byte(in, i, len, '\n', &c->lf, &c->lf_known);
    return cr < lf ? cr : lf;
}

/* Resolves a state held back from the previous call against the first
 * octet of this one. Returns true when the end-of-data marker completed;
 * *i is advanced past what was decided. */
static bool resolve_held(struct smtp_data_decoder *d, const char *in, size_t len, size_t *i,
                         struct buf *out)
{
    char c = in[*i];
    switch (d->state) {
    case D_CR:
        emit(d, out, "\r", 1);
        if (c == '\n') {
            emit(d, out, "\n", 1);
            (*i)++;
            d->state = D_LINE_START;
        } else {
            d->bad_line_ending = true;
            d->state = D_IN_LINE;
        }
        return false;
    case D_DOT:
        if (c == '\r' && *i + 1 == len) {
            (*i)++;
            d->state = D_DOT_CR;
            return false;
        }
        if (c == '\r' && in[*i + 1] == '\n') {
            *i += 2;
            return true;
        }
        d->state = D_IN_LINE;   /* dot-stuffing: the dot is dropped */
        return false;
    default: /* D_DOT_CR */
        if (c == '\n') {
            (*i)++;
            return true;
        }
        emit(d, out, "\r", 1);  /* the dot is dropped, the CR was bare */
        d->bad_line_ending = true;
        d->state = D_IN_LINE;
        return false;
    }
}

/* At line start with in[i] == '.'. Returns true at the end marker; else
 * sets *i and *run so that the dot is dropped or held back. */
static bool line_start_dot(struct smtp_data_decoder *d, const char *in, size_t len, size_t *i,
                           size_t *run)
{
    size_t j = *i;
    if (j + 1 < len && in[j + 1] == '\r' && j + 2 < len && in[j + 2] == '\n') {
        *i = j + 3;
        return true;
    }
    if (j + 1 == len) {
        d->state = D_DOT;
    } else if (j + 2 == len && in[j + 1] == '\r') {
        d->state = D_DOT_CR;
        j++;
    } else {
        d->state = D_IN_LINE;
    }
    *i = j + 1;
    *run = j + 1;
    return false;
}

size_t smtp_data_feed(struct smtp_data_decoder *d, const char *in, size_t len, struct buf *out)
{
    size_t i = 0, run = 0;
    struct eol_cache cache = { 0, 0, false, false };
    if (d->done)
        return 0;
    if (len > 0 && d->state >= D_CR) {
        d->done = resolve_held(d, in, len, &i, out);
        if (d->done || d->state == D_DOT_CR)
            return i;
        run = i;
    }
    while (i < len) {
        if (d->state == D_LINE_START) {
            if (in[i] == '.') {
                emit(d, out, in + run, i - run);
                if (line_start_dot(d, in, len, &i, &run)) {
                    d->done = true;
                    return i;
                }
                continue;
            }
            d->state = D_IN_LINE;
        }
        i = next_eol(in, i, len, &cache);
        if (i == len)
            break;
        if (in[i] == '\n') {
            d->bad_line_ending = true;
            i++;
        } else if (i + 1 == len) {
            emit(d, out, in + run, i - run);
            d->state = D_CR;
            return len;
        } else if (in[i + 1] == '\n') {
            i += 2;
            d->state = D_LINE_START;
        } else {
            d->bad_line_ending = true;
            i++;
        }
    }
    emit(d, out, in + run, len - run);
    return len;
}
