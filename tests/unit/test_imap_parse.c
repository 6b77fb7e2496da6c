/* Unit tests for the IMAP command parsers. */
#include <stdint.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "imap_parse.h"
#include "test.h"

static unsigned char arena_mem[IMAP_ARENA_DEFAULT];
static struct imap_arena arena;
static struct imap_command cmd;
static const char *err;

/* Parses s (length from strlen unless len given) into cmd. */
static int parse_len(const char *s, size_t len)
{
    imap_arena_init(&arena, arena_mem, sizeof arena_mem);
    err = NULL;
    int rc = imap_parse_command(s, len, &cmd, &arena, &err);
    if (rc < 0 && (!err || !err[0]))
        return -99;     /* a failure without a reason is a bug */
    return rc;
}

static int parse(const char *s)
{
    return parse_len(s, strlen(s));
}

/* ---- tokenizer ---- */

TEST(tag_and_name)
{
    CHECK_INT(parse("a001 noop"), 0);
    CHECK_STR(cmd.tag, "a001");
    CHECK_STR(cmd.name, "NOOP");
    CHECK_INT(cmd.nargs, 0);
    CHECK(cmd.args == NULL);
    CHECK(!cmd.uid);

    CHECK_INT(parse("A.1]x CAPABILITY"), 0);
    CHECK_STR(cmd.tag, "A.1]x");

    CHECK_INT(parse("t uid fetch 1:* (FLAGS)"), 0);
    CHECK(cmd.uid);
    CHECK_STR(cmd.name, "FETCH");
    CHECK_INT(cmd.nargs, 2);

    /* Tag failures: no tag is reported. */
    static const char *const bad_tags[] = {
        "", "NOOP", " a NOOP", "a+b NOOP", "a*b NOOP", "a(b NOOP", "a\"b NOOP", "a{b NOOP",
        "a\\b NOOP", "a%b NOOP", "t\x01 NOOP", "\xc3\xa9 NOOP",
        "aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa NOOP",
    };
    for (size_t i = 0; i < sizeof bad_tags / sizeof bad_tags[0]; i++) {
        CHECK_INT(parse(bad_tags[i]), -1);
        CHECK(cmd.tag == NULL);
    }
    /* 64 octets is the longest tag. */
    CHECK_INT(parse("aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa NOOP"), 0);

    /* Name failures keep the tag for "tag BAD". */
    static const char *const bad_names[] = {
        "a ", "a 1", "a NO-OP", "a NOOP1", "a UID", "a UID ",
        "a XXXXXXXXXXXXXXXXXXXXXXXXXXXXXXXXXXXXXXXXX",
    };
    for (size_t i = 0; i < sizeof bad_names / sizeof bad_names[0]; i++) {
        CHECK_INT(parse(bad_names[i]), -1);
        CHECK_STR(cmd.tag, "a");
    }
}

TEST(atoms_numbers_nil_quoted)
{
    CHECK_INT(parse("a LOGIN fred \"pa ss\\\"w\\\\d\""), 0);
    CHECK_INT(cmd.nargs, 2);
    struct imap_arg *u = cmd.args, *p = u->next;
    CHECK_INT(u->type, IMAP_ARG_ATOM);
    CHECK_STR(u->str, "fred");
    CHECK_INT(p->type, IMAP_ARG_QUOTED);
    CHECK_STR(p->str, "pa ss\"w\\d");
    CHECK_INT(p->len, 9);

    CHECK_INT(parse("a X 0 4294967295 4294967296 nil \"\" 12a"), 0);
    struct imap_arg *a = cmd.args;
    CHECK_INT(a->type, IMAP_ARG_NUMBER);
    CHECK_INT(a->num, 0);
    a = a->next;
    CHECK_INT(a->type, IMAP_ARG_NUMBER);
    CHECK_INT(a->num, 4294967295u);
    a = a->next;
    CHECK_INT(a->type, IMAP_ARG_ATOM);       /* too big for a number */
    a = a->next;
    CHECK_INT(a->type, IMAP_ARG_NIL);
    CHECK_STR(a->str, "nil");
    a = a->next;
    CHECK_INT(a->type, IMAP_ARG_QUOTED);
    CHECK_INT(a->len, 0);
    a = a->next;
    CHECK_INT(a->type, IMAP_ARG_ATOM);
    CHECK(a->next == NULL);

    /* Flags are atoms with a backslash; wildcards stay in atoms. */
    CHECK_INT(parse("a LIST \"\" INBOX/%/*"), 0);
    CHECK_STR(cmd.args->next->str, "INBOX/%/*");
    CHECK_INT(parse("a STORE 1 +FLAGS \\Seen"), 0);
    CHECK_STR(cmd.args->next->next->str, "\\Seen");

    static const char *const bad[] = {
        "a LOGIN \"unterminated",
        "a LOGIN \"bad\\escape\"",
        "a LOGIN \"x\"y",               /* no space after a string */
        "a LOGIN \"x\r\"",
        "a LOGIN \\",
        "a LOGIN a\"b",
        "a X )",
        "a X (a",
        "a X (a))",
        "a X a{",
        "a X \x01",
    };
    for (size_t i = 0; i < sizeof bad / sizeof bad[0]; i++) {
        if (parse(bad[i]) != -1)
            fprintf(stderr, "accepted: %s\n", bad[i]);
        CHECK_INT(parse(bad[i]), -1);
    }
    /* A NUL inside a quoted string is refused. */
    CHECK_INT(parse_len("a LOGIN \"a\0b\" c", 15), -1);
    /* Extra spaces between and after arguments are tolerated. */
    CHECK_INT(parse("a LOGIN  x   y "), 0);
    CHECK_INT(cmd.nargs, 2);
}

TEST(lists_and_nesting)
{
    CHECK_INT(parse("a X (a (b c) () \"d\") e"), 0);
    CHECK_INT(cmd.nargs, 2);
    struct imap_arg *l = cmd.args;
    CHECK_INT(l->type, IMAP_ARG_LIST);
    CHECK_INT(l->len, 4);
    CHECK_STR(l->list->str, "a");
    CHECK_INT(l->list->next->type, IMAP_ARG_LIST);
    CHECK_INT(l->list->next->len, 2);
    CHECK_STR(l->list->next->list->next->str, "c");
    CHECK_INT(l->list->next->next->len, 0);
    CHECK(l->list->next->next->list == NULL);
    CHECK_STR(l->list->next->next->next->str, "d");
    CHECK_STR(l->next->str, "e");

    char deep[200];
    size_t n = 0;
    n += (size_t)snprintf(deep, sizeof deep, "a X ");
    for (int i = 0; i < IMAP_NEST_MAX; i++)
        deep[n++] = '(';
    for (int i = 0; i < IMAP_NEST_MAX; i++)
        deep[n++] = ')';
    deep[n] = '\0';
    CHECK_INT(parse(deep), 0);
    memmove(deep + 5, deep + 4, n - 3);
    deep[4] = '(';
    deep[n + 1] = ')';
    deep[n + 2] = '\0';
    CHECK_INT(parse(deep), -1);
    CHECK_STR(err, "lists nested too deeply");
}

TEST(literals)
{
    const char login[] = "a LOGIN {4}\r\nfr d {5+}\r\np\"s w";
    CHECK_INT(parse_len(login, sizeof login - 1), 0);
    CHECK_INT(cmd.nargs, 2);
    CHECK_INT(cmd.args->type, IMAP_ARG_LITERAL);
    CHECK_INT(cmd.args->len, 4);
    CHECK(memcmp(cmd.args->str, "fr d", 4) == 0);
    CHECK(!cmd.args->non_sync);
    CHECK(cmd.args->next->non_sync);
    CHECK(memcmp(cmd.args->next->str, "p\"s w", 5) == 0);

    /* Binary content, CRLFs and NULs included, is carried by length. */
    const char append[] = "A003 APPEND saved-messages (\\Seen) \" 7-Feb-1994 21:52:25 -0800\" "
                          "{13}\r\nab\r\n\0)({3}\r\nx";
    CHECK_INT(parse_len(append, sizeof append - 1), 0);
    CHECK_INT(cmd.nargs, 4);
    struct imap_arg *lit = cmd.args->next->next->next;
    CHECK_INT(lit->type, IMAP_ARG_LITERAL);
    CHECK_INT(lit->len, 13);
    CHECK(memcmp(lit->str, "ab\r\n\0)({3}\r\nx", 13) == 0);

    /* A literal inside a list, and a bare LF after the marker. */
    const char list[] = "a X ({1}\nz y)";
    CHECK_INT(parse_len(list, sizeof list - 1), 0);
    CHECK_INT(cmd.args->len, 2);
    CHECK_INT(cmd.args->list->len, 1);

    /* A zero-length literal at the very end. */
    CHECK_INT(parse("a X {0}\r\n"), 0);
    CHECK_INT(cmd.args->len, 0);

    static const char *const bad[] = {
        "a X {5}\r\nabc",           /* shorter than announced */
        "a X {3}abc",               /* marker not at the end of a line */
        "a X {3}\rabc",
        "a X {}\r\n",
        "a X {-1}\r\n",
        "a X {3x}\r\nabc",
        "a X {4294967296}\r\n",
        "a X {18446744073709551617}\r\n",
        "a X {1}\r\nab",            /* no space after the literal */
    };
    for (size_t i = 0; i < sizeof bad / sizeof bad[0]; i++) {
        if (parse(bad[i]) != -1)
            fprintf(stderr, "accepted: %s\n", bad[i]);
        CHECK_INT(parse(bad[i]), -1);
    }
}

TEST(literal_suffix)
{
    uint64_t n = 0;
    bool ns = true;
    CHECK_INT(imap_literal_suffix("a LOGIN {4}", 11, &n, &ns), 1);
    CHECK_INT(n, 4);
    CHECK(!ns);
    CHECK_INT(imap_literal_suffix("a APPEND x {310+}\r\n", 19, &n, &ns), 1);
    CHECK_INT(n, 310);
    CHECK(ns);
    CHECK_INT(imap_literal_suffix("{0}\n", 4, &n, &ns), 1);
    CHECK_INT(n, 0);
    CHECK_INT(imap_literal_suffix("{4294967295}", 12, &n, &ns), 1);
    CHECK_INT(n, 4294967295u);
    CHECK_INT(imap_literal_suffix("a NOOP", 6, &n, &ns), 0);
    CHECK_INT(imap_literal_suffix("", 0, &n, &ns), 0);
    CHECK_INT(imap_literal_suffix("}", 1, &n, &ns), 0);
    CHECK_INT(imap_literal_suffix("a X {4} y", 9, &n, &ns), 0);
    CHECK_INT(imap_literal_suffix("a X {}", 6, &n, &ns), -1);
    CHECK_INT(imap_literal_suffix("a X {+}", 7, &n, &ns), -1);
    CHECK_INT(imap_literal_suffix("a X {1a}", 8, &n, &ns), -1);
    CHECK_INT(imap_literal_suffix("a X {4294967296}", 16, &n, &ns), -1);
    CHECK_INT(imap_literal_suffix("a X {99999999999999999999999}", 29, &n, &ns), -1);
}

TEST(arena_bounds)
{
    /* A command too big for its arena fails cleanly, for every size. */
    const char *s = "a SEARCH CHARSET UTF-8 OR (FROM \"a b\" TO c) NOT (1:5,7 UID 9:*) BODY x";
    unsigned char small[8192];
    struct imap_arena a;
    int ok = 0;
    for (size_t size = 0; size <= sizeof small; size += 64) {
        struct imap_command c;
        const char *e = NULL;
        imap_arena_init(&a, small, size);
        int rc = imap_parse_command(s, strlen(s), &c, &a, &e);
        if (rc == 0) {
            enum imap_charset cs;
            struct imap_search *root;
            rc = imap_parse_search(c.args, &cs, &root, &a, &e);
        }
        if (rc == 0)
            ok++;
        else
            CHECK(e && (strcmp(e, "command too complex") == 0));
        CHECK(a.used <= a.size);
    }
    CHECK(ok > 0);
    CHECK(imap_arena_alloc(&a, SIZE_MAX) == NULL);
    imap_arena_reset(&a);
    CHECK_INT(a.used, 0);
}

/* ---- sequence sets ---- */

static int seqset(const char *s, uint32_t star, struct imap_seqset *out)
{
    struct imap_seqset raw;
    imap_arena_init(&arena, arena_mem, sizeof arena_mem);
    if (imap_parse_seqset(s, strlen(s), &raw, &arena, &err) < 0)
        return -1;
    return imap_seqset_resolve(&raw, star, out, &arena, &err);
}

/* "lo-hi,lo-hi" for comparison. */
static const char *ranges(const struct imap_seqset *set)
{
    static char out[512];
    size_t n = 0;
    out[0] = '\0';
    for (size_t i = 0; i < set->count && n < sizeof out - 32; i++)
        n += (size_t)snprintf(out + n, sizeof out - n, "%s%u-%u", i ? "," : "",
                              set->ranges[i].lo, set->ranges[i].hi);
    return out;
}

TEST(sequence_sets)
{
    static const struct {
        const char *in;
        uint32_t star;
        const char *out;
    } good[] = {
        { "1", 10, "1-1" },
        { "1:5,7,9:*", 20, "1-5,7-7,9-20" },
        { "9:*", 5, "5-9" },                 /* "*" below the start: reversed */
        { "*", 7, "7-7" },
        { "*", 0, "" },                      /* empty mailbox */
        { "*:*", 0, "" },
        { "5:3", 10, "3-5" },
        { "7,1:3,2:4,5", 10, "1-5,7-7" },    /* sorted and merged */
        { "3,1,2", 10, "1-3" },
        { "4294967295", 1, "4294967295-4294967295" },
        { "1:4294967295,5", 1, "1-4294967295" },
        { "4294967295,1:4294967294", 1, "1-4294967295" },
        { "1:*", 4294967295u, "1-4294967295" },
    };
    struct imap_seqset set;
    for (size_t i = 0; i < sizeof good / sizeof good[0]; i++) {
        CHECK_INT(seqset(good[i].in, good[i].star, &set), 0);
        CHECK_STR(ranges(&set), good[i].out);
    }
    static const char *const bad[] = {
        "", "0", "1:0", "0:5", ",", "1,", ",1", "1,,2", "1:", ":1", "1:2:3", "a", "1a",
        "4294967296", "99999999999999999999", "**", "*:", "-1", "1 2", "+1", "$",
    };
    for (size_t i = 0; i < sizeof bad / sizeof bad[0]; i++) {
        if (seqset(bad[i], 10, &set) != -1)
            fprintf(stderr, "accepted: %s\n", bad[i]);
        CHECK_INT(seqset(bad[i], 10, &set), -1);
        CHECK_STR(err, "invalid sequence set");
    }
    CHECK_INT(seqset("2:4,8,10:12", 50, &set), 0);
    CHECK(!imap_seqset_contains(&set, 1));
    CHECK(imap_seqset_contains(&set, 2));
    CHECK(imap_seqset_contains(&set, 4));
    CHECK(!imap_seqset_contains(&set, 5));
    CHECK(imap_seqset_contains(&set, 8));
    CHECK(!imap_seqset_contains(&set, 9));
    CHECK(imap_seqset_contains(&set, 12));
    CHECK(!imap_seqset_contains(&set, 13));
    CHECK(!imap_seqset_contains(&set, 0));

    /* has_star says whether resolution depends on the mailbox. */
    struct imap_seqset raw;
    CHECK_INT(imap_parse_seqset("1:*", 3, &raw, &arena, &err), 0);
    CHECK(raw.has_star);
    CHECK_INT(imap_parse_seqset("1:3", 3, &raw, &arena, &err), 0);
    CHECK(!raw.has_star);
}

TEST(long_sequence_set)
{
    /* The kind of UID set mbsync sends: thousands of single UIDs. */
    static char buf[60000];
    size_t n = 0;
    for (int uid = 9999; uid >= 1 && n < sizeof buf - 16; uid -= 2)
        n += (size_t)snprintf(buf + n, sizeof buf - n, "%s%d", n ? "," : "", uid);
    struct imap_seqset set;
    CHECK_INT(seqset(buf, 100, &set), 0);
    CHECK_INT(set.count, 5000);
    CHECK_INT(set.ranges[0].lo, 1);
    CHECK_INT(set.ranges[4999].hi, 9999);
    CHECK(imap_seqset_contains(&set, 4001));
    CHECK(!imap_seqset_contains(&set, 4000));
}

/* ---- flags and STORE ---- */

static int store(const char *line, struct imap_store *st)
{
    if (parse(line) < 0)
        return -2;
    return imap_parse_store(cmd.args->next, st, &arena, &err);
}

TEST(store_arguments)
{
    struct imap_store st;
    CHECK_INT(store("a STORE 1 +FLAGS (\\Seen \\deleted $Forwarded)", &st), 0);
    CHECK_INT(st.op, IMAP_STORE_ADD);
    CHECK(!st.silent);
    CHECK_INT(st.flags.system, IMAP_FLAG_SEEN | IMAP_FLAG_DELETED);
    CHECK_INT(st.flags.nkeywords, 1);
    CHECK_STR(st.flags.keywords[0], "$Forwarded");

    CHECK_INT(store("a STORE 1:* -flags.silent \\Flagged \\Answered \\Draft", &st), 0);
    CHECK_INT(st.op, IMAP_STORE_REMOVE);
    CHECK(st.silent);
    CHECK_INT(st.flags.system, IMAP_FLAG_FLAGGED | IMAP_FLAG_ANSWERED | IMAP_FLAG_DRAFT);

    CHECK_INT(store("a STORE 1 FLAGS ()", &st), 0);
    CHECK_INT(st.op, IMAP_STORE_SET);
    CHECK_INT(st.flags.system, 0);
    CHECK_INT(st.flags.nkeywords, 0);

    CHECK_INT(store("a STORE 1 FLAGS (Junk junk NonJunk)", &st), 0);
    CHECK_INT(st.flags.nkeywords, 2);         /* duplicates removed */

    static const char *const bad[] = {
        "a STORE 1 FLAGS (\\Recent)",
        "a STORE 1 FLAGS (\\Foo)",
        "a STORE 1 FLAGS",
        "a STORE 1 +FLAGS.LOUD (\\Seen)",
        "a STORE 1 ++FLAGS (\\Seen)",
        "a STORE 1 FLAGS (\"quoted\")",
        "a STORE 1 FLAGS ((\\Seen))",
        "a STORE 1 FLAGS (\\Seen) extra",
        "a STORE 1 FLAGS (a]b)",
        "a STORE 1 (FLAGS) (\\Seen)",
    };
    for (size_t i = 0; i < sizeof bad / sizeof bad[0]; i++) {
        int rc = store(bad[i], &st);
        if (rc != -1)
            fprintf(stderr, "not rejected: %s (%d)\n", bad[i], rc);
        CHECK_INT(rc, -1);
        CHECK(err && err[0]);
    }
    CHECK_INT(store("a STORE 1 FLAGS (\\Recent)", &st), -1);
    CHECK_STR(err, "\\Recent cannot be set");

    /* Keyword count limit. */
    static char many[8192];
    size_t n = (size_t)snprintf(many, sizeof many, "a STORE 1 FLAGS (");
    for (int i = 0; i <= IMAP_KEYWORDS_MAX; i++)
        n += (size_t)snprintf(many + n, sizeof many - n, "k%d ", i);
    snprintf(many + n, sizeof many - n, ")");
    CHECK_INT(store(many, &st), -1);
    CHECK_STR(err, "too many keywords");
}

TEST(append_flag_list)
{
    struct imap_flags f;
    CHECK_INT(parse("a APPEND INBOX (\\Seen \\Draft) {1}\r\nx"), 0);
    CHECK_INT(imap_parse_flag_list(cmd.args->next, &f, &arena, &err), 0);
    CHECK_INT(f.system, IMAP_FLAG_SEEN | IMAP_FLAG_DRAFT);
    CHECK_INT(imap_parse_flag_list(cmd.args, &f, &arena, &err), -1);
    CHECK_INT(imap_parse_flag_list(NULL, &f, &arena, &err), -1);
}

/* ---- dates ---- */

TEST(dates)
{
    struct imap_date d;
    CHECK_INT(imap_parse_date("1-Feb-1994", 10, &d, &err), 0);
    CHECK_INT(d.year, 1994);
    CHECK_INT(d.month, 2);
    CHECK_INT(d.day, 1);
    CHECK_INT(imap_parse_date("29-feb-2000", 11, &d, &err), 0);
    CHECK_INT(imap_parse_date("31-DEC-1999", 11, &d, &err), 0);
    CHECK_INT(imap_date_days(&d), 10956);
    struct imap_date epoch = { 1970, 1, 1 }, before = { 1969, 12, 31 };
    CHECK_INT(imap_date_days(&epoch), 0);
    CHECK_INT(imap_date_days(&before), -1);

    static const char *const bad[] = {
        "", "1-Feb-94", "1-Feb-19940", "001-Feb-1994", "32-Jan-1994", "0-Jan-1994",
        "29-Feb-1900", "31-Apr-2020", "1-Fev-1994", "1 Feb 1994", "1-Feb-199a",
        "-Feb-1994", "1-Feb-0000", "1-February-1994",
    };
    for (size_t i = 0; i < sizeof bad / sizeof bad[0]; i++) {
        if (imap_parse_date(bad[i], strlen(bad[i]), &d, &err) != -1)
            fprintf(stderr, "accepted: %s\n", bad[i]);
        CHECK_INT(imap_parse_date(bad[i], strlen(bad[i]), &d, &err), -1);
    }

    /* As SEARCH arguments: atom or quoted. */
    CHECK_INT(parse("a SEARCH SINCE \"1-Feb-1994\" BEFORE 2-Feb-1994"), 0);
    CHECK_INT(imap_arg_date(cmd.args->next, &d, &err), 0);
    CHECK_INT(imap_arg_date(cmd.args->next->next->next, &d, &err), 0);
    CHECK_INT(d.day, 2);
}

TEST(date_times)
{
    time_t t;
    int tz;
    CHECK_INT(imap_parse_datetime(" 1-Feb-1994 21:52:25 -0800", 26, &t, &tz, &err), 0);
    CHECK_INT(t, 760168345);            /* 1994-02-02T05:52:25Z */
    CHECK_INT(tz, -480);
    CHECK_INT(imap_parse_datetime("17-Jul-1996 02:44:25 +0200", 26, &t, &tz, &err), 0);
    CHECK_INT(t, 837564265);
    CHECK_INT(tz, 120);
    CHECK_INT(imap_parse_datetime("1-Feb-1994 21:52:25 +0000", 25, &t, &tz, &err), 0);
    CHECK_INT(imap_parse_datetime("01-Jan-1970 00:00:00 +0000", 26, &t, &tz, &err), 0);
    CHECK_INT(t, 0);
    static const char *const bad[] = {
        "", " 1-Feb-1994", " 1-Feb-1994 21:52:25", " 1-Feb-1994 24:00:00 +0000",
        " 1-Feb-1994 21:60:00 +0000", " 1-Feb-1994 21:52:61 +0000",
        " 1-Feb-1994 21:52:25 0800", " 1-Feb-1994 21:52:25 +08000",
        " 1-Feb-1994 21:52:25 +0860", "  1-Feb-1994 21:52:25 +0000",
        " 1-Feb-1994 2:52:25 +0000", " 1-Feb-1994T21:52:25 +0000",
        " 1-Feb-1994 21:52:25 +0000 ",
    };
    for (size_t i = 0; i < sizeof bad / sizeof bad[0]; i++) {
        if (imap_parse_datetime(bad[i], strlen(bad[i]), &t, &tz, &err) != -1)
            fprintf(stderr, "accepted: '%s'\n", bad[i]);
        CHECK_INT(imap_parse_datetime(bad[i], strlen(bad[i]), &t, &tz, &err), -1);
    }
}

/* ---- FETCH ---- */

static int fetch(const char *line, struct imap_fetch *f)
{
    if (parse(line) < 0)
        return -2;
    return imap_parse_fetch(cmd.args->next, f, &arena, &err);
}

TEST(fetch_macros_and_items)
{
    struct imap_fetch f;
    CHECK_INT(fetch("a FETCH 1 ALL", &f), 0);
    CHECK_INT(f.items, IMAP_FETCH_FLAGS | IMAP_FETCH_INTERNALDATE | IMAP_FETCH_RFC822_SIZE |
                           IMAP_FETCH_ENVELOPE);
    CHECK_INT(fetch("a FETCH 1 fast", &f), 0);
    CHECK_INT(f.items, IMAP_FETCH_FLAGS | IMAP_FETCH_INTERNALDATE | IMAP_FETCH_RFC822_SIZE);
    CHECK_INT(fetch("a FETCH 1 FULL", &f), 0);
    CHECK(f.items & IMAP_FETCH_BODY);
    CHECK_INT(fetch("a FETCH 1 UID", &f), 0);
    CHECK_INT(f.items, IMAP_FETCH_UID);
    CHECK_INT(fetch("a FETCH 1:* (FLAGS INTERNALDATE RFC822 RFC822.HEADER RFC822.SIZE "
                    "RFC822.TEXT ENVELOPE BODY BODYSTRUCTURE UID)", &f), 0);
    CHECK_INT(f.items, 0x3ff);
    CHECK_INT(f.nsections, 0);

    static const char *const bad[] = {
        "a FETCH 1 (ALL)",                  /* macros only alone */
        "a FETCH 1 ()",
        "a FETCH 1 (FLAGS (UID))",
        "a FETCH 1 RFC822.PEEK",
        "a FETCH 1 \"FLAGS\"",
        "a FETCH 1 BODY.PEEK",
        "a FETCH 1 BODY[",
        "a FETCH 1 BODY[]]",
        "a FETCH 1 BODY[MIME]",             /* MIME needs a part */
        "a FETCH 1 BODY[0]",
        "a FETCH 1 BODY[1.0]",
        "a FETCH 1 BODY[1.]",
        "a FETCH 1 BODY[.1]",
        "a FETCH 1 BODY[1..2]",
        "a FETCH 1 BODY[HEADER.FIELDS]",
        "a FETCH 1 BODY[HEADER.FIELDS ()]",
        "a FETCH 1 BODY[HEADER.FIELDS (A) B]",
        "a FETCH 1 BODY[HEADER.FIELDS (\"\")]",
        "a FETCH 1 BODY[HEADER.FIELDS ((A))]",
        "a FETCH 1 BODY[HEADER.FIELDSX (A)]",
        "a FETCH 1 BODY[TEXT.HEADER]",
        "a FETCH 1 BODY[1.TEXTX]",
        "a FETCH 1 BODY[]<0>",
        "a FETCH 1 BODY[]<0.0>",
        "a FETCH 1 BODY[]<.5>",
        "a FETCH 1 BODY[]<1.>",
        "a FETCH 1 BODY[]<1.2",
        "a FETCH 1 BODY[]<1.4294967296>",
        "a FETCH 1 BODY[]x",
        "a FETCH 1 BINARY[1]",
        "a FETCH 1 BODY[4294967296]",
    };
    for (size_t i = 0; i < sizeof bad / sizeof bad[0]; i++) {
        int rc = fetch(bad[i], &f);
        if (rc >= 0)
            fprintf(stderr, "accepted: %s\n", bad[i]);
        CHECK(rc < 0);
    }
}

TEST(fetch_sections)
{
    struct imap_fetch f;
    CHECK_INT(fetch("a FETCH 1 (UID BODY.PEEK[HEADER.FIELDS (From To \"Subject\")]<0.100> "
                    "BODY[] body[1.2.3.MIME] BODY[2.TEXT] BODY[HEADER.FIELDS.NOT (X-A)] "
                    "BODY[TEXT]<5.1> BODY[4.HEADER])", &f), 0);
    CHECK_INT(f.items, IMAP_FETCH_UID);
    CHECK_INT(f.nsections, 7);
    struct imap_section *s = f.sections;
    CHECK(s[0].peek);
    CHECK_INT(s[0].text, IMAP_SECTION_HEADER_FIELDS);
    CHECK_INT(s[0].nfields, 3);
    CHECK_STR(s[0].fields[0], "From");
    CHECK_STR(s[0].fields[2], "Subject");
    CHECK(s[0].partial);
    CHECK_INT(s[0].offset, 0);
    CHECK_INT(s[0].length, 100);
    CHECK_INT(s[0].spec_len, strlen("HEADER.FIELDS (From To \"Subject\")"));
    CHECK(memcmp(s[0].spec, "HEADER.FIELDS (From To \"Subject\")", s[0].spec_len) == 0);

    CHECK(!s[1].peek);
    CHECK_INT(s[1].text, IMAP_SECTION_ALL);
    CHECK_INT(s[1].nparts, 0);
    CHECK_INT(s[1].spec_len, 0);
    CHECK(!s[1].partial);

    CHECK_INT(s[2].nparts, 3);
    CHECK_INT(s[2].part[0], 1);
    CHECK_INT(s[2].part[2], 3);
    CHECK_INT(s[2].text, IMAP_SECTION_MIME);

    CHECK_INT(s[3].nparts, 1);
    CHECK_INT(s[3].text, IMAP_SECTION_TEXT);
    CHECK_INT(s[4].text, IMAP_SECTION_HEADER_FIELDS_NOT);
    CHECK_INT(s[4].nfields, 1);
    CHECK_INT(s[5].offset, 5);
    CHECK_INT(s[5].length, 1);
    CHECK_INT(s[6].text, IMAP_SECTION_HEADER);
    CHECK_INT(s[6].part[0], 4);

    /* A single section, not in a list. */
    CHECK_INT(fetch("a FETCH 1 BODY[1]", &f), 0);
    CHECK_INT(f.nsections, 1);
    CHECK_INT(f.sections[0].nparts, 1);
    CHECK_INT(f.sections[0].text, IMAP_SECTION_ALL);

    /* A "]" inside a quoted header name does not end the section. */
    CHECK_INT(fetch("a FETCH 1 BODY[HEADER.FIELDS (\"X]\")]", &f), 0);
    CHECK_STR(f.sections[0].fields[0], "X]");

    /* Part depth limit. */
    char deep[256];
    size_t n = (size_t)snprintf(deep, sizeof deep, "a FETCH 1 BODY[1");
    for (int i = 1; i < IMAP_PART_DEPTH_MAX; i++)
        n += (size_t)snprintf(deep + n, sizeof deep - n, ".1");
    snprintf(deep + n, sizeof deep - n, "]");
    CHECK_INT(fetch(deep, &f), 0);
    CHECK_INT(f.sections[0].nparts, IMAP_PART_DEPTH_MAX);
    snprintf(deep + n, sizeof deep - n, ".1]");
    CHECK_INT(fetch(deep, &f), -1);
}

TEST(brackets_in_other_atoms)
{
    /* Gmail-style names and unbalanced brackets still tokenize. */
    CHECK_INT(parse("a SELECT [Gmail]/Sent"), 0);
    CHECK_STR(cmd.args->str, "[Gmail]/Sent");
    CHECK_INT(parse("a CREATE a[b c"), 0);
    CHECK_INT(cmd.nargs, 2);
    CHECK_STR(cmd.args->str, "a[b");
}

/* ---- SEARCH ---- */

static struct imap_search *search(const char *line, enum imap_charset *cs, int *rc)
{
    struct imap_search *root = NULL;
    if (parse(line) < 0) {
        *rc = -2;
        return NULL;
    }
    *rc = imap_parse_search(cmd.args, cs, &root, &arena, &err);
    return root;
}

TEST(search_every_key)
{
    enum imap_charset cs;
    int rc;
    struct imap_search *r = search(
        "a SEARCH ALL ANSWERED BCC b BEFORE 1-Jan-2000 BODY \"x y\" CC c DELETED DRAFT "
        "FLAGGED FROM f HEADER X-Spam yes KEYWORD $Junk LARGER 100 NEW NOT SEEN OLD "
        "ON 2-Jan-2000 OR SEEN UNSEEN RECENT SEEN SENTBEFORE 3-Jan-2000 SENTON 4-Jan-2000 "
        "SENTSINCE 5-Jan-2000 SINCE 6-Jan-2000 SMALLER 200 SUBJECT s TEXT t TO to "
        "UID 1:* UNANSWERED UNDELETED UNDRAFT UNFLAGGED UNKEYWORD $Junk UNSEEN 1,3:4 "
        "(SEEN FLAGGED)", &cs, &rc);
    CHECK_INT(rc, 0);
    CHECK_INT(cs, IMAP_CHARSET_DEFAULT);
    if (!r)
        return;
    static const enum imap_search_op ops[] = {
        IMAP_SEARCH_ALL, IMAP_SEARCH_FLAG, IMAP_SEARCH_HEADER, IMAP_SEARCH_BEFORE,
        IMAP_SEARCH_BODY, IMAP_SEARCH_HEADER, IMAP_SEARCH_FLAG, IMAP_SEARCH_FLAG,
        IMAP_SEARCH_FLAG, IMAP_SEARCH_HEADER, IMAP_SEARCH_HEADER, IMAP_SEARCH_KEYWORD,
        IMAP_SEARCH_LARGER, IMAP_SEARCH_NEW, IMAP_SEARCH_NOT, IMAP_SEARCH_OLD, IMAP_SEARCH_ON,
        IMAP_SEARCH_OR, IMAP_SEARCH_FLAG, IMAP_SEARCH_FLAG, IMAP_SEARCH_SENTBEFORE,
        IMAP_SEARCH_SENTON, IMAP_SEARCH_SENTSINCE, IMAP_SEARCH_SINCE, IMAP_SEARCH_SMALLER,
        IMAP_SEARCH_HEADER, IMAP_SEARCH_TEXT, IMAP_SEARCH_HEADER, IMAP_SEARCH_UID,
        IMAP_SEARCH_FLAG, IMAP_SEARCH_FLAG, IMAP_SEARCH_FLAG, IMAP_SEARCH_FLAG,
        IMAP_SEARCH_KEYWORD, IMAP_SEARCH_FLAG, IMAP_SEARCH_SEQSET, IMAP_SEARCH_AND,
    };
    CHECK_INT(r->op, IMAP_SEARCH_AND);
    size_t i = 0;
    struct imap_search *k = r->child;
    for (; k && i < sizeof ops / sizeof ops[0]; k = k->next, i++)
        CHECK_INT(k->op, ops[i]);
    CHECK(k == NULL);
    CHECK_INT(i, sizeof ops / sizeof ops[0]);

    k = r->child->next->next;               /* BCC b */
    CHECK_STR(k->field, "BCC");
    CHECK_STR(k->str, "b");
    k = k->next;                            /* BEFORE */
    CHECK_INT(k->date.year, 2000);
    k = k->next;                            /* BODY "x y" */
    CHECK_INT(k->len, 3);
    for (k = r->child; k && k->op != IMAP_SEARCH_KEYWORD; k = k->next)
        ;
    if (!k)
        return;
    CHECK_STR(k->str, "$Junk");
    CHECK(!k->negate);
    CHECK_INT(k->next->number, 100);
    k = k->next->next->next;                /* NOT SEEN */
    CHECK_INT(k->child->op, IMAP_SEARCH_FLAG);
    CHECK_INT(k->child->flag, IMAP_FLAG_SEEN);
    CHECK(!k->child->negate);
    k = k->next->next->next;                /* OR SEEN UNSEEN */
    CHECK_INT(k->op, IMAP_SEARCH_OR);
    CHECK(!k->child->negate);
    CHECK(k->child->next->negate);
    CHECK(k->child->next->next == NULL);
    CHECK_INT(k->next->flag, IMAP_SEARCH_RECENT_FLAG);
}

TEST(search_header_and_charset)
{
    enum imap_charset cs;
    int rc;
    struct imap_search *r = search("a SEARCH CHARSET utf-8 HEADER \"Message-ID\" \"\"", &cs, &rc);
    CHECK_INT(rc, 0);
    CHECK_INT(cs, IMAP_CHARSET_UTF8);
    if (r) {
        CHECK_STR(r->child->field, "Message-ID");
        CHECK_INT(r->child->len, 0);
    }
    search("a SEARCH CHARSET US-ASCII ALL", &cs, &rc);
    CHECK_INT(rc, 0);
    CHECK_INT(cs, IMAP_CHARSET_ASCII);
    search("a SEARCH CHARSET ISO-8859-1 ALL", &cs, &rc);
    CHECK_INT(rc, IMAP_ERR_BADCHARSET);
    search("a SEARCH CHARSET", &cs, &rc);
    CHECK_INT(rc, -1);
    search("a SEARCH CHARSET UTF-8", &cs, &rc);
    CHECK_INT(rc, -1);

    /* A literal search string (Thunderbird sends UTF-8 this way), NUL kept. */
    const char lit[] = "a SEARCH CHARSET UTF-8 SUBJECT {4}\r\n\xc3\xa4\0x";
    parse_len(lit, sizeof lit - 1);
    struct imap_search *root = NULL;
    CHECK_INT(imap_parse_search(cmd.args, &cs, &root, &arena, &err), 0);
    if (root) {
        CHECK_INT(root->child->len, 4);
        CHECK(memcmp(root->child->str, "\xc3\xa4\0x", 4) == 0);
    }
}

TEST(search_invalid)
{
    static const char *const bad[] = {
        "a SEARCH",
        "a SEARCH FOO",
        "a SEARCH FROM",
        "a SEARCH HEADER X",
        "a SEARCH HEADER \"\" x",
        "a SEARCH BEFORE",
        "a SEARCH BEFORE 1-Feb-94",
        "a SEARCH ON 32-Jan-2000",
        "a SEARCH LARGER x",
        "a SEARCH LARGER 4294967296",
        "a SEARCH SMALLER -1",
        "a SEARCH KEYWORD \\Seen",
        "a SEARCH KEYWORD (a)",
        "a SEARCH UNKEYWORD",
        "a SEARCH UID",
        "a SEARCH UID x",
        "a SEARCH UID 0",
        "a SEARCH NOT",
        "a SEARCH OR SEEN",
        "a SEARCH ()",
        "a SEARCH (SEEN) ()",
        "a SEARCH 1:0",
        "a SEARCH \"SEEN\"",
        "a SEARCH NIL",
        "a SEARCH 1,",
    };
    enum imap_charset cs;
    int rc;
    for (size_t i = 0; i < sizeof bad / sizeof bad[0]; i++) {
        search(bad[i], &cs, &rc);
        if (rc != -1)
            fprintf(stderr, "not rejected: %s (%d)\n", bad[i], rc);
        CHECK_INT(rc, -1);
        CHECK(err && err[0]);
    }
}

TEST(search_nesting_limits)
{
    enum imap_charset cs;
    int rc;
    static char line[4096];
    /* NOT chains within the limit parse; beyond it they fail. */
    size_t n = (size_t)snprintf(line, sizeof line, "a SEARCH");
    for (int i = 0; i < IMAP_NEST_MAX; i++)
        n += (size_t)snprintf(line + n, sizeof line - n, " NOT");
    snprintf(line + n, sizeof line - n, " ALL");
    struct imap_search *r = search(line, &cs, &rc);
    CHECK_INT(rc, 0);
    int depth = 0;
    for (struct imap_search *k = r ? r->child : NULL; k && k->op == IMAP_SEARCH_NOT;
         k = k->child)
        depth++;
    CHECK_INT(depth, IMAP_NEST_MAX);

    n = (size_t)snprintf(line, sizeof line, "a SEARCH");
    for (int i = 0; i < 1000; i++)
        n += (size_t)snprintf(line + n, sizeof line - n, " OR");
    snprintf(line + n, sizeof line - n, " ALL");
    search(line, &cs, &rc);
    CHECK_INT(rc, -1);
    CHECK_STR(err, "SEARCH nested too deeply");

    /* Parenthesized groups and NOT together count towards one limit. */
    n = (size_t)snprintf(line, sizeof line, "a SEARCH ");
    for (int i = 0; i < 20; i++)
        n += (size_t)snprintf(line + n, sizeof line - n, "NOT (");
    n += (size_t)snprintf(line + n, sizeof line - n, "ALL");
    for (int i = 0; i < 20; i++)
        n += (size_t)snprintf(line + n, sizeof line - n, ")");
    search(line, &cs, &rc);
    CHECK_INT(rc, -1);

    /* A long flat list of keys is not nesting. */
    n = (size_t)snprintf(line, sizeof line, "a SEARCH");
    for (int i = 0; i < 500; i++)
        n += (size_t)snprintf(line + n, sizeof line - n, " SEEN");
    search(line, &cs, &rc);
    CHECK_INT(rc, 0);
}

/* ---- mailboxes and LIST ---- */

TEST(mailbox_names)
{
    const char *name;
    size_t len;
    CHECK(imap_mailbox_is_inbox("iNbOx", 5));
    CHECK(!imap_mailbox_is_inbox("INBOX/a", 7));
    CHECK(!imap_mailbox_is_inbox("INBO", 4));

    CHECK_INT(parse("a SELECT inbox"), 0);
    CHECK_INT(imap_arg_mailbox(cmd.args, &name, &len, &arena, &err), 0);
    CHECK_STR(name, "INBOX");
    CHECK_INT(len, 5);
    CHECK_INT(parse("a SELECT \"Entw&APw-rfe\""), 0);
    CHECK_INT(imap_arg_mailbox(cmd.args, &name, &len, &arena, &err), 0);
    CHECK_STR(name, "Entw&APw-rfe");
    /* Literals come back NUL-terminated. */
    CHECK_INT(parse("a SELECT {4}\r\nSentxyz"), -1);
    CHECK_INT(parse("a SELECT {4}\r\nSent"), 0);
    CHECK_INT(imap_arg_mailbox(cmd.args, &name, &len, &arena, &err), 0);
    CHECK_STR(name, "Sent");

    static const char *const bad[] = {
        "a SELECT \"\"", "a SELECT \"caf\xc3\xa9\"", "a SELECT &AGE-", "a SELECT (INBOX)",
        "a SELECT a&b",
    };
    for (size_t i = 0; i < sizeof bad / sizeof bad[0]; i++) {
        CHECK_INT(parse(bad[i]), 0);
        CHECK_INT(imap_arg_mailbox(cmd.args, &name, &len, &arena, &err), -1);
    }
    CHECK_INT(parse_len("a SELECT {3}\r\na\0b", 17), 0);
    CHECK_INT(imap_arg_mailbox(cmd.args, &name, &len, &arena, &err), -1);
    CHECK_INT(imap_arg_mailbox(NULL, &name, &len, &arena, &err), -1);
}

TEST(list_arguments)
{
    const char *ref, *pat, *full;
    size_t rl, pl, fl;
    CHECK_INT(parse("a LIST \"\" *"), 0);
    CHECK_INT(imap_parse_list(cmd.args, &ref, &rl, &pat, &pl, &err), 0);
    CHECK_INT(rl, 0);
    CHECK_STR(pat, "*");
    CHECK_INT(parse("a LIST ~/Mail/ %"), 0);
    CHECK_INT(imap_parse_list(cmd.args, &ref, &rl, &pat, &pl, &err), 0);
    CHECK_STR(ref, "~/Mail/");
    CHECK_INT(imap_list_combine(ref, rl, pat, pl, '/', &full, &fl, &arena, &err), 0);
    CHECK_STR(full, "~/Mail/%");
    CHECK_INT(imap_list_combine("Archive/", 8, "/x", 2, '/', &full, &fl, &arena, &err), 0);
    CHECK_STR(full, "/x");
    CHECK_INT(imap_list_combine("", 0, "a.%", 3, '.', &full, &fl, &arena, &err), 0);
    CHECK_STR(full, "a.%");
    CHECK_INT(parse("a LIST \"\" \"\""), 0);
    CHECK_INT(imap_parse_list(cmd.args, &ref, &rl, &pat, &pl, &err), 0);
    CHECK_INT(pl, 0);

    CHECK_INT(parse("a LIST \"\""), 0);
    CHECK_INT(imap_parse_list(cmd.args, &ref, &rl, &pat, &pl, &err), -1);
    CHECK_INT(parse("a LIST a b c"), 0);
    CHECK_INT(imap_parse_list(cmd.args, &ref, &rl, &pat, &pl, &err), -1);
    CHECK_INT(parse("a LIST (a) b"), 0);
    CHECK_INT(imap_parse_list(cmd.args, &ref, &rl, &pat, &pl, &err), -1);
}

TEST(pattern_matcher)
{
    static const struct {
        const char *pattern, *name;
        bool match;
    } cases[] = {
        { "*", "INBOX", true },
        { "*", "a/b/c", true },
        { "%", "a", true },
        { "%", "a/b", false },
        { "%/%", "a/b", true },
        { "%/%", "a/b/c", false },
        { "a/*", "a/b/c", true },
        { "a/*", "a", false },
        { "a*", "a", true },
        { "a%", "a", true },
        { "a%", "ab/c", false },
        { "*c", "a/b/c", true },
        { "%c", "a/bc", false },
        { "Sent", "Sent", true },
        { "Sent", "sent", false },
        { "inbox", "INBOX", true },
        { "InBox/%", "INBOX/x", true },
        { "inbox", "inbox2", false },
        { "in*", "INBOX", false },
        { "", "", true },
        { "", "a", false },
        { "a", "", false },
        { "**", "", true },
        { "%*%", "x/y", true },
        { "a%b%c", "a1b2c", true },
        { "a%b%c", "a1b/2c", false },
        { "*a*a*a*a*b", "aaaaaaaaaaaaaaaaaaaaaab", true },
        { "*a*a*a*a*b", "aaaaaaaaaaaaaaaaaaaaaac", false },
    };
    for (size_t i = 0; i < sizeof cases / sizeof cases[0]; i++) {
        bool m = imap_pattern_match(cases[i].pattern, strlen(cases[i].pattern), cases[i].name,
                                    strlen(cases[i].name), '/');
        if (m != cases[i].match)
            fprintf(stderr, "pattern %s name %s: %d\n", cases[i].pattern, cases[i].name, m);
        CHECK(m == cases[i].match);
    }
    /* Too long: no match rather than unbounded work. */
    static char big[IMAP_PATTERN_MAX + 2];
    memset(big, 'a', sizeof big - 1);
    CHECK(!imap_pattern_match("*", 1, big, sizeof big - 1, '/'));
    CHECK(imap_pattern_match("*", 1, big, IMAP_PATTERN_MAX, '/'));
}

TEST(pattern_matcher_pathological)
{
    /* Patterns that make a backtracking matcher exponential, against the
     * longest names, many times: the whole test finishes in well under a
     * second with a linear-per-state matcher. */
    static char pat[IMAP_PATTERN_MAX + 1], name[IMAP_PATTERN_MAX + 1];
    size_t pl = 0;
    while (pl + 2 <= IMAP_PATTERN_MAX - 2) {
        pat[pl] = pl % 4 ? '*' : '%';
        pat[pl + 1] = 'a';
        pl += 2;
    }
    pat[pl++] = 'b';
    memset(name, 'a', IMAP_PATTERN_MAX);
    clock_t start = clock();
    for (int i = 0; i < 5; i++)
        CHECK(!imap_pattern_match(pat, pl, name, IMAP_PATTERN_MAX, '/'));
    name[IMAP_PATTERN_MAX - 1] = 'b';
    CHECK(imap_pattern_match(pat, pl, name, IMAP_PATTERN_MAX, '/'));
    CHECK(!imap_pattern_match(pat, pl, name, 300, '/'));     /* too few a's */
    const char *p5 = "*a*a*a*a*a*a*a*a*a*a*a*a*b";
    name[IMAP_PATTERN_MAX - 1] = 'a';
    for (int i = 0; i < 1000; i++)
        CHECK(!imap_pattern_match(p5, strlen(p5), name, IMAP_PATTERN_MAX, '/'));
    name[IMAP_PATTERN_MAX - 1] = 'b';
    CHECK(imap_pattern_match(p5, strlen(p5), name, IMAP_PATTERN_MAX, '/'));
    /* Generous bound, only to catch exponential blow-up (minutes). */
    CHECK((double)(clock() - start) / CLOCKS_PER_SEC < 20.0);
}

int main(void)
{
    RUN(tag_and_name);
    RUN(atoms_numbers_nil_quoted);
    RUN(lists_and_nesting);
    RUN(literals);
    RUN(literal_suffix);
    RUN(arena_bounds);
    RUN(sequence_sets);
    RUN(long_sequence_set);
    RUN(store_arguments);
    RUN(append_flag_list);
    RUN(dates);
    RUN(date_times);
    RUN(fetch_macros_and_items);
    RUN(fetch_sections);
    RUN(brackets_in_other_atoms);
    RUN(search_every_key);
    RUN(search_header_and_charset);
    RUN(search_invalid);
    RUN(search_nesting_limits);
    RUN(mailbox_names);
    RUN(list_arguments);
    RUN(pattern_matcher);
    RUN(pattern_matcher_pathological);
    return test_summary();
}
