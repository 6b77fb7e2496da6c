/* IMAP4rev1 command parsers. See imap_parse.h. */
#include "imap_parse.h"

#include <stdalign.h>
#include <stdlib.h>
#include <string.h>

#include "ascii.h"
#include "imap_utf7.h"

/* ---- arena ---- */

void imap_arena_init(struct imap_arena *a, void *mem, size_t size)
{
    uintptr_t p = (uintptr_t)mem, al = alignof(max_align_t);
    size_t skip = (size_t)((al - p % al) % al);
    a->mem = (unsigned char *)mem + (skip <= size ? skip : size);
    a->size = skip <= size ? size - skip : 0;
    a->used = 0;
}

void imap_arena_reset(struct imap_arena *a)
{
    a->used = 0;
}

void *imap_arena_alloc(struct imap_arena *a, size_t size)
{
    size_t al = alignof(max_align_t);
    size_t need = (size + al - 1) / al * al;
    if (size == 0)
        need = al;
    if (need < size || need > a->size - a->used)
        return NULL;
    void *p = a->mem + a->used;
    a->used += need;
    return p;
}

static char *arena_strdup(struct imap_arena *a, const char *s, size_t len)
{
    if (len == SIZE_MAX)
        return NULL;
    char *p = imap_arena_alloc(a, len + 1);
    if (!p)
        return NULL;
    memcpy(p, s, len);
    p[len] = '\0';
    return p;
}

static const char err_arena[] = "command too complex";

/* ---- characters (RFC 3501 section 9) ---- */

static char upper(char c)
{
    return c >= 'a' && c <= 'z' ? (char)(c - 'a' + 'A') : c;
}

static bool eq_ci(const char *a, size_t alen, const char *b)
{
    size_t blen = strlen(b);
    if (alen != blen)
        return false;
    for (size_t i = 0; i < alen; i++)
        if (upper(a[i]) != upper(b[i]))
            return false;
    return true;
}

static bool prefix_ci(const char *a, size_t alen, const char *b)
{
    size_t blen = strlen(b);
    return alen >= blen && eq_ci(a, blen, b);
}

/* ATOM-CHAR: CHAR except atom-specials "(){ %*\"\\]" and CTL. */
static bool atom_char(char c)
{
    unsigned char u = (unsigned char)c;
    if (u <= 0x1f || u >= 0x7f)
        return false;
    return !strchr("(){ %*\"\\]", c);
}

/* Characters this tokenizer takes into an atom token: ASTRING-CHAR plus
 * the list wildcards (LIST patterns, "*" of sequence sets). */
static bool token_char(char c)
{
    return atom_char(c) || c == ']' || c == '%' || c == '*';
}

/* Parses digits as a number up to max; false on overflow or no digits. */
static bool parse_u64(const char *s, size_t len, uint64_t max, uint64_t *out)
{
    uint64_t v = 0;
    if (len == 0)
        return false;
    for (size_t i = 0; i < len; i++) {
        if (!ascii_is_digit(s[i]))
            return false;
        unsigned d = (unsigned)(s[i] - '0');
        if (v > (max - d) / 10)
            return false;
        v = v * 10 + d;
    }
    *out = v;
    return true;
}

static bool parse_u32(const char *s, size_t len, uint32_t *out)
{
    uint64_t v;
    if (!parse_u64(s, len, UINT32_MAX, &v))
        return false;
    *out = (uint32_t)v;
    return true;
}

/* ---- literals ---- */

int imap_literal_suffix(const char *line, size_t len, uint64_t *n, bool *non_sync)
{
    if (len > 0 && line[len - 1] == '\n')
        len--;
    if (len > 0 && line[len - 1] == '\r')
        len--;
    if (len == 0 || line[len - 1] != '}')
        return 0;
    size_t end = len - 1, open = end;
    while (open > 0 && line[open - 1] != '{' && end - open < 24)
        open--;
    if (open == 0 || line[open - 1] != '{')
        return 0;
    bool plus = end > open && line[end - 1] == '+';
    size_t digits = end - open - (plus ? 1 : 0);
    if (!parse_u64(line + open, digits, UINT32_MAX, n))
        return -1;
    *non_sync = plus;
    return 1;
}

/* ---- command tokenizer ---- */

struct lexer {
    const char *p;
    size_t len, pos;
    struct imap_arena *arena;
    const char *err;
};

static struct imap_arg *new_arg(struct lexer *lx, enum imap_arg_type type)
{
    struct imap_arg *a = imap_arena_alloc(lx->arena, sizeof *a);
    if (!a) {
        lx->err = err_arena;
        return NULL;
    }
    memset(a, 0, sizeof *a);
    a->type = type;
    return a;
}

static struct imap_arg *lex_quoted(struct lexer *lx)
{
    size_t start = ++lx->pos, n = 0;
    /* First pass: find the end and the unescaped length. */
    size_t i = start;
    for (; i < lx->len && lx->p[i] != '"'; i++, n++) {
        char c = lx->p[i];
        if (c == '\r' || c == '\n' || c == '\0') {
            lx->err = "invalid character in quoted string";
            return NULL;
        }
        if (c == '\\') {
            if (i + 1 >= lx->len || (lx->p[i + 1] != '\\' && lx->p[i + 1] != '"')) {
                lx->err = "invalid escape in quoted string";
                return NULL;
            }
            i++;
        }
    }
    if (i >= lx->len) {
        lx->err = "unterminated quoted string";
        return NULL;
    }
    struct imap_arg *a = new_arg(lx, IMAP_ARG_QUOTED);
    char *s = a ? imap_arena_alloc(lx->arena, n + 1) : NULL;
    if (!s) {
        lx->err = err_arena;
        return NULL;
    }
    size_t o = 0;
    for (size_t j = start; j < i; j++) {
        if (lx->p[j] == '\\')
            j++;
        s[o++] = lx->p[j];
    }
    s[o] = '\0';
    a->str = s;
    a->len = o;
    lx->pos = i + 1;
    return a;
}

static struct imap_arg *lex_literal(struct lexer *lx)
{
    size_t start = ++lx->pos, i = start;
    while (i < lx->len && ascii_is_digit(lx->p[i]))
        i++;
    uint64_t n;
    if (!parse_u64(lx->p + start, i - start, UINT32_MAX, &n)) {
        lx->err = "invalid literal length";
        return NULL;
    }
    bool plus = i < lx->len && lx->p[i] == '+';
    if (plus)
        i++;
    if (i >= lx->len || lx->p[i] != '}') {
        lx->err = "invalid literal marker";
        return NULL;
    }
    i++;
    if (i < lx->len && lx->p[i] == '\r')
        i++;
    if (i >= lx->len || lx->p[i] != '\n') {
        lx->err = "literal marker not at the end of a line";
        return NULL;
    }
    i++;
    if (n > lx->len - i) {
        lx->err = "literal shorter than announced";
        return NULL;
    }
    struct imap_arg *a = new_arg(lx, IMAP_ARG_LITERAL);
    if (!a)
        return NULL;
    a->str = lx->p + i;
    a->len = (size_t)n;
    a->non_sync = plus;
    lx->pos = i + (size_t)n;
    return a;
}

/* End of a "[...]" group starting at pos, or 0 when there is none: then
 * "[" is an ordinary atom character. Quoted strings inside are skipped. */
static size_t bracket_end(const struct lexer *lx, size_t pos)
{
    bool quoted = false;
    for (size_t i = pos + 1; i < lx->len; i++) {
        char c = lx->p[i];
        if (c == '\r' || c == '\n' || c == '\0' || c == '{' || (!quoted && c == '['))
            return 0;
        if (quoted && c == '\\')
            i++;
        else if (c == '"')
            quoted = !quoted;
        else if (!quoted && c == ']')
            return i;
    }
    return 0;
}

static struct imap_arg *lex_atom(struct lexer *lx)
{
    size_t start = lx->pos, i = start;
    if (i < lx->len && lx->p[i] == '\\')
        i++;                    /* a flag: "\" atom */
    while (i < lx->len) {
        size_t close;
        if (lx->p[i] == '[' && (close = bracket_end(lx, i)) != 0)
            i = close + 1;
        else if (token_char(lx->p[i]))
            i++;
        else
            break;
    }
    if (i == start || (i == start + 1 && lx->p[start] == '\\')) {
        lx->err = "unexpected character";
        return NULL;
    }
    struct imap_arg *a = new_arg(lx, IMAP_ARG_ATOM);
    char *s = a ? arena_strdup(lx->arena, lx->p + start, i - start) : NULL;
    if (!s) {
        lx->err = err_arena;
        return NULL;
    }
    a->str = s;
    a->len = i - start;
    if (eq_ci(s, a->len, "NIL"))
        a->type = IMAP_ARG_NIL;
    else if (parse_u32(s, a->len, &a->num))
        a->type = IMAP_ARG_NUMBER;
    lx->pos = i;
    return a;
}

static struct imap_arg *lex_token(struct lexer *lx)
{
    char c = lx->p[lx->pos];
    if (c == '"')
        return lex_quoted(lx);
    if (c == '{')
        return lex_literal(lx);
    return lex_atom(lx);
}

/* After a token: a space, a ")" or the end. Several spaces are tolerated. */
static bool lex_separator(struct lexer *lx)
{
    if (lx->pos >= lx->len || lx->p[lx->pos] == ')')
        return true;
    if (lx->p[lx->pos] != ' ') {
        lx->err = "missing space between arguments";
        return false;
    }
    while (lx->pos < lx->len && lx->p[lx->pos] == ' ')
        lx->pos++;
    return true;
}

/* Appends arg to the list whose tail pointer is *tail. */
static void append(struct imap_arg ***tail, struct imap_arg *arg)
{
    **tail = arg;
    *tail = &arg->next;
}

struct frame {
    struct imap_arg *list;
    struct imap_arg **tail;
};

static int lex_args(struct lexer *lx, struct imap_arg **first, size_t *count)
{
    struct frame stack[IMAP_NEST_MAX + 1];
    size_t depth = 0;
    struct imap_arg **tail = first;
    *first = NULL;
    *count = 0;
    while (lx->pos < lx->len) {
        char c = lx->p[lx->pos];
        struct imap_arg *a;
        if (c == ')') {
            if (depth == 0) {
                lx->err = "unbalanced parenthesis";
                return -1;
            }
            tail = stack[--depth].tail;
            lx->pos++;
            if (!lex_separator(lx))
                return -1;
            continue;
        }
        if (c == '(') {
            if (depth >= IMAP_NEST_MAX) {
                lx->err = "lists nested too deeply";
                return -1;
            }
            if (!(a = new_arg(lx, IMAP_ARG_LIST)))
                return -1;
            if (depth > 0)
                stack[depth - 1].list->len++;
            else
                (*count)++;
            append(&tail, a);
            stack[depth].list = a;
            stack[depth++].tail = tail;
            tail = &a->list;
            lx->pos++;
            continue;
        }
        if (!(a = lex_token(lx)))
            return -1;
        if (depth > 0)
            stack[depth - 1].list->len++;
        else
            (*count)++;
        append(&tail, a);
        if (!lex_separator(lx))
            return -1;
    }
    if (depth > 0) {
        lx->err = "unbalanced parenthesis";
        return -1;
    }
    return 0;
}

static int lex_tag(struct lexer *lx, struct imap_command *out)
{
    size_t i = 0;
    while (i < lx->len && i <= IMAP_TAG_MAX && lx->p[i] != '+' &&
           (atom_char(lx->p[i]) || lx->p[i] == ']'))
        i++;
    if (i == 0 || i > IMAP_TAG_MAX || i >= lx->len || lx->p[i] != ' ') {
        lx->err = i == 0 || i >= lx->len ? "missing tag or command" : "invalid tag";
        return -1;
    }
    char *tag = arena_strdup(lx->arena, lx->p, i);
    if (!tag) {
        lx->err = err_arena;
        return -1;
    }
    out->tag = tag;
    out->tag_len = i;
    lx->pos = i + 1;
    return 0;
}

/* Reads a command name into out->name; the name is letters only. */
static int lex_name(struct lexer *lx, struct imap_command *out)
{
    size_t i = lx->pos, n = 0;
    while (i < lx->len && lx->p[i] != ' ') {
        char c = upper(lx->p[i]);
        if (c < 'A' || c > 'Z' || n >= IMAP_NAME_MAX) {
            lx->err = "invalid command name";
            out->name[0] = '\0';
            return -1;
        }
        out->name[n++] = c;
        i++;
    }
    out->name[n] = '\0';
    if (n == 0) {
        lx->err = "missing command name";
        return -1;
    }
    lx->pos = i;
    while (lx->pos < lx->len && lx->p[lx->pos] == ' ')
        lx->pos++;
    return 0;
}

int imap_parse_command(const char *cmd, size_t len, struct imap_command *out,
                       struct imap_arena *arena, const char **err)
{
    struct lexer lx = { cmd, len, 0, arena, NULL };
    memset(out, 0, sizeof *out);
    if (lex_tag(&lx, out) < 0 || lex_name(&lx, out) < 0)
        goto fail;
    if (strcmp(out->name, "UID") == 0) {
        out->uid = true;
        if (lex_name(&lx, out) < 0)
            goto fail;
    }
    if (lex_args(&lx, &out->args, &out->nargs) < 0)
        goto fail;
    return 0;
fail:
    *err = lx.err;
    return -1;
}

size_t imap_arg_count(const struct imap_arg *arg)
{
    size_t n = 0;
    for (; arg; arg = arg->next)
        n++;
    return n;
}

int imap_arg_astring(const struct imap_arg *arg, const char **s, size_t *len, const char **err)
{
    if (!arg || arg->type == IMAP_ARG_LIST) {
        *err = arg ? "string expected, not a list" : "missing argument";
        return -1;
    }
    *s = arg->str;
    *len = arg->len;
    return 0;
}

int imap_arg_string(const struct imap_arg *arg, const char **s, size_t *len, const char **err)
{
    if (!arg || (arg->type != IMAP_ARG_QUOTED && arg->type != IMAP_ARG_LITERAL)) {
        *err = arg ? "quoted string or literal expected" : "missing argument";
        return -1;
    }
    *s = arg->str;
    *len = arg->len;
    return 0;
}

bool imap_arg_is_atom(const struct imap_arg *arg, const char *word)
{
    return arg && (arg->type == IMAP_ARG_ATOM || arg->type == IMAP_ARG_NIL ||
                   arg->type == IMAP_ARG_NUMBER) && eq_ci(arg->str, arg->len, word);
}

/* ---- sequence sets ---- */

/* seq-number: nz-number or "*" (0 here). */
static bool seq_number(const char *s, size_t len, uint32_t *out)
{
    if (len == 1 && s[0] == '*') {
        *out = 0;
        return true;
    }
    if (len == 0 || s[0] == '0')
        return false;
    return parse_u32(s, len, out);
}

static int parse_range(const char *s, size_t len, struct imap_range *r)
{
    const char *colon = memchr(s, ':', len);
    if (!colon)
        return seq_number(s, len, &r->lo) ? (r->hi = r->lo, 0) : -1;
    size_t left = (size_t)(colon - s);
    if (!seq_number(s, left, &r->lo) || !seq_number(colon + 1, len - left - 1, &r->hi))
        return -1;
    return 0;
}

int imap_parse_seqset(const char *s, size_t len, struct imap_seqset *out,
                      struct imap_arena *arena, const char **err)
{
    size_t n = 1;
    for (size_t i = 0; i < len; i++)
        n += s[i] == ',';
    out->count = 0;
    out->has_star = false;
    out->ranges = n <= SIZE_MAX / sizeof *out->ranges
                      ? imap_arena_alloc(arena, n * sizeof *out->ranges) : NULL;
    if (!out->ranges) {
        *err = err_arena;
        return -1;
    }
    size_t start = 0;
    for (size_t i = 0; i <= len; i++) {
        if (i < len && s[i] != ',')
            continue;
        struct imap_range *r = &out->ranges[out->count];
        if (parse_range(s + start, i - start, r) < 0) {
            *err = "invalid sequence set";
            return -1;
        }
        out->has_star |= r->lo == 0 || r->hi == 0;
        out->count++;
        start = i + 1;
    }
    return 0;
}

int imap_arg_seqset(const struct imap_arg *arg, struct imap_seqset *out,
                    struct imap_arena *arena, const char **err)
{
    if (!arg || (arg->type != IMAP_ARG_ATOM && arg->type != IMAP_ARG_NUMBER)) {
        *err = arg ? "invalid sequence set" : "missing sequence set";
        return -1;
    }
    return imap_parse_seqset(arg->str, arg->len, out, arena, err);
}

static int range_cmp(const void *a, const void *b)
{
    const struct imap_range *x = a, *y = b;
    return x->lo < y->lo ? -1 : x->lo > y->lo;
}

int imap_seqset_resolve(const struct imap_seqset *in, uint32_t star, struct imap_seqset *out,
                        struct imap_arena *arena, const char **err)
{
    struct imap_range *r = imap_arena_alloc(arena, (in->count ? in->count : 1) * sizeof *r);
    if (!r) {
        *err = err_arena;
        return -1;
    }
    size_t n = 0;
    for (size_t i = 0; i < in->count; i++) {
        uint32_t lo = in->ranges[i].lo ? in->ranges[i].lo : star;
        uint32_t hi = in->ranges[i].hi ? in->ranges[i].hi : star;
        if (lo > hi) {
            uint32_t t = lo;
            lo = hi;
            hi = t;
        }
        if (hi == 0)
            continue;           /* only "*" in an empty mailbox */
        if (lo == 0)
            lo = 1;
        r[n].lo = lo;
        r[n++].hi = hi;
    }
    qsort(r, n, sizeof *r, range_cmp);
    size_t m = 0;
    for (size_t i = 0; i < n; i++) {
        if (m > 0 && (r[m - 1].hi == UINT32_MAX || r[i].lo <= r[m - 1].hi + 1)) {
            if (r[i].hi > r[m - 1].hi)
                r[m - 1].hi = r[i].hi;
        } else {
            r[m++] = r[i];
        }
    }
    out->ranges = r;
    out->count = m;
    out->has_star = false;
    return 0;
}

bool imap_seqset_contains(const struct imap_seqset *set, uint32_t n)
{
    size_t lo = 0, hi = set->count;
    while (lo < hi) {
        size_t mid = lo + (hi - lo) / 2;
        if (n < set->ranges[mid].lo)
            hi = mid;
        else if (n > set->ranges[mid].hi)
            lo = mid + 1;
        else
            return true;
    }
    return false;
}

/* ---- flags ---- */

static const struct {
    const char *name;
    unsigned bit;
} system_flags[] = {
    { "\\Seen", IMAP_FLAG_SEEN }, { "\\Answered", IMAP_FLAG_ANSWERED },
    { "\\Flagged", IMAP_FLAG_FLAGGED }, { "\\Deleted", IMAP_FLAG_DELETED },
    { "\\Draft", IMAP_FLAG_DRAFT },
};

static bool is_atom(const char *s, size_t len)
{
    if (len == 0)
        return false;
    for (size_t i = 0; i < len; i++)
        if (!atom_char(s[i]))
            return false;
    return true;
}

static int add_flag(const struct imap_arg *a, struct imap_flags *f, const char **err)
{
    if (!a || (a->type != IMAP_ARG_ATOM && a->type != IMAP_ARG_NIL &&
               a->type != IMAP_ARG_NUMBER)) {
        *err = "invalid flag";
        return -1;
    }
    if (a->str[0] == '\\') {
        for (size_t i = 0; i < sizeof system_flags / sizeof system_flags[0]; i++) {
            if (eq_ci(a->str, a->len, system_flags[i].name)) {
                f->system |= system_flags[i].bit;
                return 0;
            }
        }
        *err = eq_ci(a->str, a->len, "\\Recent") ? "\\Recent cannot be set"
                                                 : "unknown system flag";
        return -1;
    }
    if (!is_atom(a->str, a->len)) {
        *err = "invalid keyword";
        return -1;
    }
    for (size_t i = 0; i < f->nkeywords; i++)
        if (eq_ci(f->keywords[i], strlen(f->keywords[i]), a->str) &&
            strlen(f->keywords[i]) == a->len)
            return 0;
    if (f->nkeywords >= IMAP_KEYWORDS_MAX) {
        *err = "too many keywords";
        return -1;
    }
    f->keywords[f->nkeywords++] = a->str;
    return 0;
}

static int flags_from_chain(const struct imap_arg *a, struct imap_flags *out,
                            struct imap_arena *arena, const char **err)
{
    out->system = 0;
    out->nkeywords = 0;
    out->keywords = imap_arena_alloc(arena, IMAP_KEYWORDS_MAX * sizeof *out->keywords);
    if (!out->keywords) {
        *err = err_arena;
        return -1;
    }
    for (; a; a = a->next)
        if (add_flag(a, out, err) < 0)
            return -1;
    return 0;
}

int imap_parse_flag_list(const struct imap_arg *arg, struct imap_flags *out,
                         struct imap_arena *arena, const char **err)
{
    if (!arg || arg->type != IMAP_ARG_LIST) {
        *err = "flag list expected";
        return -1;
    }
    return flags_from_chain(arg->list, out, arena, err);
}

int imap_parse_store(const struct imap_arg *item, struct imap_store *out,
                     struct imap_arena *arena, const char **err)
{
    if (!item || item->type != IMAP_ARG_ATOM) {
        *err = "invalid STORE data item";
        return -1;
    }
    const char *s = item->str;
    size_t len = item->len;
    out->op = IMAP_STORE_SET;
    if (len > 0 && (s[0] == '+' || s[0] == '-')) {
        out->op = s[0] == '+' ? IMAP_STORE_ADD : IMAP_STORE_REMOVE;
        s++;
        len--;
    }
    out->silent = eq_ci(s, len, "FLAGS.SILENT");
    if (!out->silent && !eq_ci(s, len, "FLAGS")) {
        *err = "invalid STORE data item";
        return -1;
    }
    const struct imap_arg *v = item->next;
    if (!v) {
        *err = "missing flags";
        return -1;
    }
    if (v->type == IMAP_ARG_LIST) {
        if (v->next) {
            *err = "unexpected argument after flag list";
            return -1;
        }
        return imap_parse_flag_list(v, &out->flags, arena, err);
    }
    return flags_from_chain(v, &out->flags, arena, err);
}

/* ---- dates ---- */

static const char months[12][4] = {
    "Jan", "Feb", "Mar", "Apr", "May", "Jun", "Jul", "Aug", "Sep", "Oct", "Nov", "Dec",
};

static int days_in_month(int year, int month)
{
    static const int days[12] = { 31, 28, 31, 30, 31, 30, 31, 31, 30, 31, 30, 31 };
    bool leap = (year % 4 == 0 && year % 100 != 0) || year % 400 == 0;
    return month == 2 && leap ? 29 : days[month - 1];
}

/* "d-Mon-yyyy" or "dd-Mon-yyyy" at s; returns the octets used or 0. */
static size_t date_text(const char *s, size_t len, struct imap_date *d)
{
    size_t dd = 0;
    while (dd < len && dd < 2 && ascii_is_digit(s[dd]))
        dd++;
    if (dd == 0 || len < dd + 9 || s[dd] != '-' || s[dd + 4] != '-')
        return 0;
    uint32_t day, year;
    if (!parse_u32(s, dd, &day) || !parse_u32(s + dd + 5, 4, &year))
        return 0;
    int month = 0;
    for (int m = 0; m < 12; m++)
        if (eq_ci(s + dd + 1, 3, months[m]))
            month = m + 1;
    if (month == 0 || year < 1 || day < 1 || (int)day > days_in_month((int)year, month))
        return 0;
    d->year = (int)year;
    d->month = month;
    d->day = (int)day;
    return dd + 9;
}

int imap_parse_date(const char *s, size_t len, struct imap_date *out, const char **err)
{
    if (date_text(s, len, out) != len || len == 0) {
        *err = "invalid date";
        return -1;
    }
    return 0;
}

int imap_arg_date(const struct imap_arg *arg, struct imap_date *out, const char **err)
{
    if (!arg || (arg->type != IMAP_ARG_ATOM && arg->type != IMAP_ARG_QUOTED)) {
        *err = arg ? "invalid date" : "missing date";
        return -1;
    }
    return imap_parse_date(arg->str, arg->len, out, err);
}

/* Howard Hinnant's days_from_civil. */
int64_t imap_date_days(const struct imap_date *d)
{
    int64_t y = d->year - (d->month <= 2);
    int64_t era = (y >= 0 ? y : y - 399) / 400;
    int64_t yoe = y - era * 400;
    int64_t mp = (d->month + 9) % 12;
    int64_t doy = (153 * mp + 2) / 5 + d->day - 1;
    int64_t doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
    return era * 146097 + doe - 719468;
}

static bool two_digits(const char *s, int max, int *out)
{
    if (!ascii_is_digit(s[0]) || !ascii_is_digit(s[1]))
        return false;
    *out = (s[0] - '0') * 10 + (s[1] - '0');
    return *out <= max;
}

int imap_parse_datetime(const char *s, size_t len, time_t *t, int *tz_minutes,
                        const char **err)
{
    struct imap_date d;
    int hh, mm, ss, zh, zm;
    *err = "invalid date-time";
    if (len > 0 && s[0] == ' ') {
        s++;
        len--;
    }
    size_t n = date_text(s, len, &d);
    /* After the date: " hh:mm:ss +zzzz", 15 octets. */
    if (n == 0 || len != n + 15)
        return -1;
    const char *p = s + n;
    if (p[0] != ' ' || p[3] != ':' || p[6] != ':' || p[9] != ' ' ||
        (p[10] != '+' && p[10] != '-'))
        return -1;
    if (!two_digits(p + 1, 23, &hh) || !two_digits(p + 4, 59, &mm) ||
        !two_digits(p + 7, 60, &ss) || !two_digits(p + 11, 99, &zh) ||
        !two_digits(p + 13, 59, &zm))
        return -1;
    int tz = (zh * 60 + zm) * (p[10] == '-' ? -1 : 1);
    int64_t secs = imap_date_days(&d) * 86400 + hh * 3600 + mm * 60 + ss - (int64_t)tz * 60;
    if (sizeof(time_t) < 8 && (secs > INT32_MAX || secs < INT32_MIN))
        return -1;
    *t = (time_t)secs;
    *tz_minutes = tz;
    return 0;
}

/* ---- FETCH ---- */

static const struct {
    const char *name;
    unsigned items;
} fetch_names[] = {
    { "FLAGS", IMAP_FETCH_FLAGS }, { "INTERNALDATE", IMAP_FETCH_INTERNALDATE },
    { "RFC822", IMAP_FETCH_RFC822 }, { "RFC822.HEADER", IMAP_FETCH_RFC822_HEADER },
    { "RFC822.SIZE", IMAP_FETCH_RFC822_SIZE }, { "RFC822.TEXT", IMAP_FETCH_RFC822_TEXT },
    { "ENVELOPE", IMAP_FETCH_ENVELOPE }, { "BODY", IMAP_FETCH_BODY },
    { "BODYSTRUCTURE", IMAP_FETCH_BODYSTRUCTURE }, { "UID", IMAP_FETCH_UID },
};

#define FETCH_FAST (IMAP_FETCH_FLAGS | IMAP_FETCH_INTERNALDATE | IMAP_FETCH_RFC822_SIZE)
#define FETCH_ALL  (FETCH_FAST | IMAP_FETCH_ENVELOPE)
#define FETCH_FULL (FETCH_ALL | IMAP_FETCH_BODY)

static const char err_section[] = "invalid FETCH section";

/* " (A B)" after HEADER.FIELDS: one list of one or more astrings. */
static int section_fields(const char *s, size_t len, struct imap_section *sec,
                          struct imap_arena *arena, const char **err)
{
    struct lexer lx = { s, len, 0, arena, NULL };
    struct imap_arg *args;
    size_t n;
    if (len < 2 || s[0] != ' ' || s[1] != '(') {
        *err = err_section;
        return -1;
    }
    lx.pos = 1;
    if (lex_args(&lx, &args, &n) < 0) {
        *err = lx.err == err_arena ? err_arena : err_section;
        return -1;
    }
    if (n != 1 || args->type != IMAP_ARG_LIST || args->len == 0) {
        *err = err_section;
        return -1;
    }
    sec->fields = imap_arena_alloc(arena, args->len * sizeof *sec->fields);
    if (!sec->fields) {
        *err = err_arena;
        return -1;
    }
    for (const struct imap_arg *a = args->list; a; a = a->next) {
        if (a->type == IMAP_ARG_LIST || a->len == 0 || memchr(a->str, '\0', a->len)) {
            *err = err_section;
            return -1;
        }
        sec->fields[sec->nfields++] = a->str;
    }
    return 0;
}

/* section-text after the part numbers (or alone when there are none). */
static int section_text(const char *s, size_t len, bool parts, struct imap_section *sec,
                        struct imap_arena *arena, const char **err)
{
    if (eq_ci(s, len, "HEADER")) {
        sec->text = IMAP_SECTION_HEADER;
    } else if (eq_ci(s, len, "TEXT")) {
        sec->text = IMAP_SECTION_TEXT;
    } else if (parts && eq_ci(s, len, "MIME")) {
        sec->text = IMAP_SECTION_MIME;
    } else if (prefix_ci(s, len, "HEADER.FIELDS.NOT ")) {
        sec->text = IMAP_SECTION_HEADER_FIELDS_NOT;
        return section_fields(s + 17, len - 17, sec, arena, err);
    } else if (prefix_ci(s, len, "HEADER.FIELDS ")) {
        sec->text = IMAP_SECTION_HEADER_FIELDS;
        return section_fields(s + 13, len - 13, sec, arena, err);
    } else {
        *err = err_section;
        return -1;
    }
    return 0;
}

/* The text between the brackets. */
static int section_spec(const char *s, size_t len, struct imap_section *sec,
                        struct imap_arena *arena, const char **err)
{
    size_t i = 0;
    while (i < len && ascii_is_digit(s[i])) {
        size_t start = i;
        while (i < len && ascii_is_digit(s[i]))
            i++;
        if (sec->nparts >= IMAP_PART_DEPTH_MAX ||
            !seq_number(s + start, i - start, &sec->part[sec->nparts]) ||
            sec->part[sec->nparts] == 0) {
            *err = err_section;
            return -1;
        }
        sec->nparts++;
        if (i == len)
            return 0;
        if (s[i] != '.') {
            *err = err_section;
            return -1;
        }
        i++;
    }
    if (i == len && sec->nparts == 0)
        return 0;
    return section_text(s + i, len - i, sec->nparts > 0, sec, arena, err);
}

/* "<offset.length>" */
static int section_partial(const char *s, size_t len, struct imap_section *sec,
                           const char **err)
{
    const char *dot = len >= 2 ? memchr(s, '.', len) : NULL;
    if (!dot || s[0] != '<' || s[len - 1] != '>') {
        *err = "invalid FETCH partial";
        return -1;
    }
    size_t a = (size_t)(dot - s) - 1, b = len - a - 3;
    if (!parse_u32(s + 1, a, &sec->offset) || !parse_u32(dot + 1, b, &sec->length) ||
        sec->length == 0) {
        *err = "invalid FETCH partial";
        return -1;
    }
    sec->partial = true;
    return 0;
}

static size_t section_close(const char *s, size_t len, size_t open)
{
    bool quoted = false;
    for (size_t i = open + 1; i < len; i++) {
        if (quoted && s[i] == '\\')
            i++;
        else if (s[i] == '"')
            quoted = !quoted;
        else if (!quoted && s[i] == ']')
            return i;
    }
    return 0;
}

static int fetch_section(const struct imap_arg *a, struct imap_fetch *out,
                         struct imap_arena *arena, const char **err)
{
    struct imap_section *sec = &out->sections[out->nsections];
    memset(sec, 0, sizeof *sec);
    size_t open = prefix_ci(a->str, a->len, "BODY.PEEK[") ? 9 : 4;
    sec->peek = open == 9;
    size_t close = section_close(a->str, a->len, open);
    if (close == 0) {
        *err = err_section;
        return -1;
    }
    sec->spec = a->str + open + 1;
    sec->spec_len = close - open - 1;
    if (section_spec(sec->spec, sec->spec_len, sec, arena, err) < 0)
        return -1;
    if (close + 1 < a->len &&
        section_partial(a->str + close + 1, a->len - close - 1, sec, err) < 0)
        return -1;
    out->nsections++;
    return 0;
}

static int fetch_att(const struct imap_arg *a, struct imap_fetch *out,
                     struct imap_arena *arena, const char **err)
{
    if (!a || a->type != IMAP_ARG_ATOM) {
        *err = "invalid FETCH attribute";
        return -1;
    }
    if (prefix_ci(a->str, a->len, "BODY[") || prefix_ci(a->str, a->len, "BODY.PEEK["))
        return fetch_section(a, out, arena, err);
    for (size_t i = 0; i < sizeof fetch_names / sizeof fetch_names[0]; i++) {
        if (eq_ci(a->str, a->len, fetch_names[i].name)) {
            out->items |= fetch_names[i].items;
            return 0;
        }
    }
    *err = "unknown FETCH attribute";
    return -1;
}

int imap_parse_fetch(const struct imap_arg *arg, struct imap_fetch *out,
                     struct imap_arena *arena, const char **err)
{
    out->items = 0;
    out->nsections = 0;
    if (!arg) {
        *err = "missing FETCH attributes";
        return -1;
    }
    size_t n = arg->type == IMAP_ARG_LIST ? arg->len : 1;
    out->sections = imap_arena_alloc(arena, (n ? n : 1) * sizeof *out->sections);
    if (!out->sections) {
        *err = err_arena;
        return -1;
    }
    if (arg->type != IMAP_ARG_LIST) {
        if (imap_arg_is_atom(arg, "ALL"))
            out->items = FETCH_ALL;
        else if (imap_arg_is_atom(arg, "FAST"))
            out->items = FETCH_FAST;
        else if (imap_arg_is_atom(arg, "FULL"))
            out->items = FETCH_FULL;
        else
            return fetch_att(arg, out, arena, err);
        return 0;
    }
    if (n == 0) {
        *err = "empty FETCH attribute list";
        return -1;
    }
    for (const struct imap_arg *a = arg->list; a; a = a->next)
        if (fetch_att(a, out, arena, err) < 0)
            return -1;
    return 0;
}

/* ---- SEARCH ---- */

struct search_ctx {
    struct imap_arena *arena;
    const char **err;
};

static const struct {
    const char *name;
    unsigned flag;
    bool negate;
} search_flags[] = {
    { "ANSWERED", IMAP_FLAG_ANSWERED, false }, { "DELETED", IMAP_FLAG_DELETED, false },
    { "DRAFT", IMAP_FLAG_DRAFT, false },       { "FLAGGED", IMAP_FLAG_FLAGGED, false },
    { "SEEN", IMAP_FLAG_SEEN, false },         { "RECENT", IMAP_SEARCH_RECENT_FLAG, false },
    { "UNANSWERED", IMAP_FLAG_ANSWERED, true }, { "UNDELETED", IMAP_FLAG_DELETED, true },
    { "UNDRAFT", IMAP_FLAG_DRAFT, true },       { "UNFLAGGED", IMAP_FLAG_FLAGGED, true },
    { "UNSEEN", IMAP_FLAG_SEEN, true },
};

static const struct {
    const char *name;
    enum imap_search_op op;
} search_simple[] = {
    { "ALL", IMAP_SEARCH_ALL }, { "NEW", IMAP_SEARCH_NEW }, { "OLD", IMAP_SEARCH_OLD },
};

static const char *const search_headers[] = { "BCC", "CC", "FROM", "SUBJECT", "TO" };

static const struct {
    const char *name;
    enum imap_search_op op;
} search_dates[] = {
    { "BEFORE", IMAP_SEARCH_BEFORE },         { "ON", IMAP_SEARCH_ON },
    { "SINCE", IMAP_SEARCH_SINCE },           { "SENTBEFORE", IMAP_SEARCH_SENTBEFORE },
    { "SENTON", IMAP_SEARCH_SENTON },         { "SENTSINCE", IMAP_SEARCH_SENTSINCE },
};

static struct imap_search *search_node(struct search_ctx *c, enum imap_search_op op)
{
    struct imap_search *n = imap_arena_alloc(c->arena, sizeof *n);
    if (!n) {
        *c->err = err_arena;
        return NULL;
    }
    memset(n, 0, sizeof *n);
    n->op = op;
    return n;
}

/* Takes the next argument as the key's operand. */
static const struct imap_arg *operand(const struct imap_arg **pa, struct search_ctx *c)
{
    const struct imap_arg *a = *pa;
    if (!a) {
        *c->err = "missing SEARCH argument";
        return NULL;
    }
    *pa = a->next;
    return a;
}

static int search_string(const struct imap_arg **pa, struct search_ctx *c, const char **s,
                         size_t *len)
{
    const struct imap_arg *a = operand(pa, c);
    return a ? imap_arg_astring(a, s, len, c->err) : -1;
}

static struct imap_search *search_key(const struct imap_arg **pa, int depth,
                                      struct search_ctx *c);

/* Keys from a chain until its end, under an AND node. */
static struct imap_search *search_group(const struct imap_arg *a, int depth,
                                        struct search_ctx *c)
{
    struct imap_search *and = search_node(c, IMAP_SEARCH_AND), **tail;
    if (!and)
        return NULL;
    if (!a) {
        *c->err = "empty SEARCH group";
        return NULL;
    }
    tail = &and->child;
    while (a) {
        struct imap_search *k = search_key(&a, depth, c);
        if (!k)
            return NULL;
        *tail = k;
        tail = &k->next;
    }
    return and;
}

static struct imap_search *search_operator(const char *name, size_t len,
                                           const struct imap_arg **pa, int depth,
                                           struct search_ctx *c)
{
    bool is_or = eq_ci(name, len, "OR");
    struct imap_search *n = search_node(c, is_or ? IMAP_SEARCH_OR : IMAP_SEARCH_NOT);
    if (!n || !(n->child = search_key(pa, depth + 1, c)))
        return NULL;
    if (is_or && !(n->child->next = search_key(pa, depth + 1, c)))
        return NULL;
    return n;
}

static struct imap_search *search_with_operand(const char *name, size_t len,
                                               const struct imap_arg **pa,
                                               struct search_ctx *c)
{
    struct imap_search *n = NULL;
    const struct imap_arg *a;
    for (size_t i = 0; i < sizeof search_headers / sizeof search_headers[0]; i++) {
        if (!eq_ci(name, len, search_headers[i]))
            continue;
        if (!(n = search_node(c, IMAP_SEARCH_HEADER)))
            return NULL;
        n->field = search_headers[i];
        n->field_len = strlen(n->field);
        return search_string(pa, c, &n->str, &n->len) < 0 ? NULL : n;
    }
    for (size_t i = 0; i < sizeof search_dates / sizeof search_dates[0]; i++) {
        if (!eq_ci(name, len, search_dates[i].name))
            continue;
        if (!(n = search_node(c, search_dates[i].op)) || !(a = operand(pa, c)))
            return NULL;
        return imap_arg_date(a, &n->date, c->err) < 0 ? NULL : n;
    }
    if (eq_ci(name, len, "HEADER")) {
        if (!(n = search_node(c, IMAP_SEARCH_HEADER)) ||
            search_string(pa, c, &n->field, &n->field_len) < 0 ||
            search_string(pa, c, &n->str, &n->len) < 0)
            return NULL;
        if (n->field_len == 0 || memchr(n->field, '\0', n->field_len)) {
            *c->err = "invalid header name";
            return NULL;
        }
        return n;
    }
    if (eq_ci(name, len, "BODY") || eq_ci(name, len, "TEXT")) {
        n = search_node(c, upper(name[0]) == 'B' ? IMAP_SEARCH_BODY : IMAP_SEARCH_TEXT);
        return n && search_string(pa, c, &n->str, &n->len) == 0 ? n : NULL;
    }
    if (eq_ci(name, len, "KEYWORD") || eq_ci(name, len, "UNKEYWORD")) {
        if (!(n = search_node(c, IMAP_SEARCH_KEYWORD)) || !(a = operand(pa, c)))
            return NULL;
        n->negate = upper(name[0]) == 'U';
        if (a->type == IMAP_ARG_LIST || a->type == IMAP_ARG_LITERAL ||
            a->type == IMAP_ARG_QUOTED || !is_atom(a->str, a->len)) {
            *c->err = "invalid keyword";
            return NULL;
        }
        n->str = a->str;
        n->len = a->len;
        return n;
    }
    if (eq_ci(name, len, "LARGER") || eq_ci(name, len, "SMALLER")) {
        n = search_node(c, upper(name[0]) == 'L' ? IMAP_SEARCH_LARGER : IMAP_SEARCH_SMALLER);
        if (!n || !(a = operand(pa, c)))
            return NULL;
        if (a->type != IMAP_ARG_NUMBER) {
            *c->err = "invalid size";
            return NULL;
        }
        n->number = a->num;
        return n;
    }
    if (eq_ci(name, len, "UID")) {
        if (!(n = search_node(c, IMAP_SEARCH_UID)) || !(a = operand(pa, c)))
            return NULL;
        return imap_arg_seqset(a, &n->set, c->arena, c->err) < 0 ? NULL : n;
    }
    *c->err = "unknown SEARCH key";
    return NULL;
}

static struct imap_search *search_atom(const struct imap_arg *a, const struct imap_arg **pa,
                                       int depth, struct search_ctx *c)
{
    struct imap_search *n;
    for (size_t i = 0; i < sizeof search_flags / sizeof search_flags[0]; i++) {
        if (eq_ci(a->str, a->len, search_flags[i].name)) {
            if ((n = search_node(c, IMAP_SEARCH_FLAG))) {
                n->flag = search_flags[i].flag;
                n->negate = search_flags[i].negate;
            }
            return n;
        }
    }
    for (size_t i = 0; i < sizeof search_simple / sizeof search_simple[0]; i++)
        if (eq_ci(a->str, a->len, search_simple[i].name))
            return search_node(c, search_simple[i].op);
    if (eq_ci(a->str, a->len, "NOT") || eq_ci(a->str, a->len, "OR"))
        return search_operator(a->str, a->len, pa, depth, c);
    if (a->len > 0 && (ascii_is_digit(a->str[0]) || a->str[0] == '*')) {
        if (!(n = search_node(c, IMAP_SEARCH_SEQSET)))
            return NULL;
        return imap_arg_seqset(a, &n->set, c->arena, c->err) < 0 ? NULL : n;
    }
    return search_with_operand(a->str, a->len, pa, c);
}

static struct imap_search *search_key(const struct imap_arg **pa, int depth,
                                      struct search_ctx *c)
{
    const struct imap_arg *a = *pa;
    if (depth > IMAP_NEST_MAX) {
        *c->err = "SEARCH nested too deeply";
        return NULL;
    }
    if (!a) {
        *c->err = "missing SEARCH key";
        return NULL;
    }
    *pa = a->next;
    if (a->type == IMAP_ARG_LIST)
        return search_group(a->list, depth + 1, c);
    if (a->type != IMAP_ARG_ATOM && a->type != IMAP_ARG_NUMBER) {
        *c->err = "invalid SEARCH key";
        return NULL;
    }
    return search_atom(a, pa, depth, c);
}

int imap_parse_search(const struct imap_arg *first, enum imap_charset *charset,
                      struct imap_search **root, struct imap_arena *arena, const char **err)
{
    struct search_ctx c = { arena, err };
    *charset = IMAP_CHARSET_DEFAULT;
    *root = NULL;
    if (imap_arg_is_atom(first, "CHARSET")) {
        const char *name;
        size_t len;
        if (imap_arg_astring(first->next, &name, &len, err) < 0)
            return -1;
        if (eq_ci(name, len, "UTF-8")) {
            *charset = IMAP_CHARSET_UTF8;
        } else if (eq_ci(name, len, "US-ASCII")) {
            *charset = IMAP_CHARSET_ASCII;
        } else {
            *err = "unsupported charset";
            return IMAP_ERR_BADCHARSET;
        }
        first = first->next->next;
    }
    if (!first) {
        *err = "missing SEARCH key";
        return -1;
    }
    *root = search_group(first, 0, &c);
    return *root ? 0 : -1;
}

/* ---- mailboxes and LIST ---- */

bool imap_mailbox_is_inbox(const char *name, size_t len)
{
    return eq_ci(name, len, "INBOX");
}

int imap_arg_mailbox(const struct imap_arg *arg, const char **name, size_t *len,
                     struct imap_arena *arena, const char **err)
{
    if (imap_arg_astring(arg, name, len, err) < 0)
        return -1;
    if (*len == 0 || memchr(*name, '\0', *len)) {
        *err = "invalid mailbox name";
        return -1;
    }
    if (imap_mailbox_is_inbox(*name, *len)) {
        *name = "INBOX";
        return 0;
    }
    if (!imap_utf7_valid(*name, *len)) {
        *err = "mailbox name is not valid modified UTF-7";
        return -1;
    }
    if (arg->type == IMAP_ARG_LITERAL) {
        /* Literal contents are not NUL-terminated in the command. */
        char *copy = arena_strdup(arena, *name, *len);
        if (!copy) {
            *err = err_arena;
            return -1;
        }
        *name = copy;
    }
    return 0;
}

static int list_arg(const struct imap_arg *a, const char **s, size_t *len, const char **err)
{
    if (imap_arg_astring(a, s, len, err) < 0)
        return -1;
    if (a->type == IMAP_ARG_LITERAL || memchr(*s, '\0', *len)) {
        *err = "invalid LIST argument";
        return -1;
    }
    return 0;
}

int imap_parse_list(const struct imap_arg *first, const char **ref, size_t *ref_len,
                    const char **pattern, size_t *pattern_len, const char **err)
{
    if (!first || !first->next || first->next->next) {
        *err = "LIST takes a reference and a mailbox pattern";
        return -1;
    }
    if (list_arg(first, ref, ref_len, err) < 0 ||
        list_arg(first->next, pattern, pattern_len, err) < 0)
        return -1;
    return 0;
}

int imap_list_combine(const char *ref, size_t ref_len, const char *pattern, size_t pattern_len,
                      char delim, const char **out, size_t *out_len, struct imap_arena *arena,
                      const char **err)
{
    bool alone = ref_len == 0 || (pattern_len > 0 && pattern[0] == delim);
    size_t n = alone ? pattern_len : ref_len + pattern_len;
    if (n > IMAP_PATTERN_MAX) {
        *err = "LIST pattern too long";
        return -1;
    }
    char *p = imap_arena_alloc(arena, n + 1);
    if (!p) {
        *err = err_arena;
        return -1;
    }
    if (!alone)
        memcpy(p, ref, ref_len);
    memcpy(p + (alone ? 0 : ref_len), pattern, pattern_len);
    p[n] = '\0';
    *out = p;
    *out_len = n;
    return 0;
}

/* Whether pattern position i may match name position j literally. */
static bool pattern_char_eq(char pc, char nc, size_t i, bool inbox_ci)
{
    return pc == nc || (inbox_ci && i < 5 && upper(pc) == nc);
}

static bool wildcard(char c)
{
    return c == '*' || c == '%';
}

/* Wildcards match the empty string: a live state before one makes the
 * state after it live too. One forward pass suffices. */
static void closure(bool *states, const char *pattern, size_t plen)
{
    for (size_t i = 0; i < plen; i++)
        if (states[i] && wildcard(pattern[i]))
            states[i + 1] = true;
}

/* A set-of-states simulation: live[i] says pattern[0..i) matches the name
 * read so far. One pass over the name, O(plen) work per character, so no
 * pattern can make it backtrack. */
bool imap_pattern_match(const char *pattern, size_t plen, const char *name, size_t nlen,
                        char delim)
{
    bool live[IMAP_PATTERN_MAX + 1], next[IMAP_PATTERN_MAX + 1];
    if (plen > IMAP_PATTERN_MAX || nlen > IMAP_PATTERN_MAX)
        return false;
    bool inbox_ci = nlen >= 5 && memcmp(name, "INBOX", 5) == 0 &&
                    (nlen == 5 || name[5] == delim) && prefix_ci(pattern, plen, "INBOX");
    memset(live, 0, (plen + 1) * sizeof live[0]);
    live[0] = true;
    closure(live, pattern, plen);
    for (size_t j = 0; j < nlen; j++) {
        bool any = false;
        memset(next, 0, (plen + 1) * sizeof next[0]);
        for (size_t i = 0; i < plen; i++) {
            if (!live[i])
                continue;
            char pc = pattern[i];
            if (pc == '*' || (pc == '%' && name[j] != delim))
                next[i] = any = true;
            else if (!wildcard(pc) && pattern_char_eq(pc, name[j], i, inbox_ci))
                next[i + 1] = any = true;
        }
        if (!any)
            return false;
        closure(next, pattern, plen);
        memcpy(live, next, (plen + 1) * sizeof live[0]);
    }
    return live[plen];
}
