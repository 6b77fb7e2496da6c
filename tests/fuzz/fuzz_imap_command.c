/* libFuzzer target: the IMAP command tokenizer and every typed parser on
 * every argument position, plus the literal-suffix check, the pattern
 * matcher and modified UTF-7 on the raw input. Beyond not crashing: the
 * arena is never overrun, tokens stay inside the command, failures carry a
 * reason, resolved sequence sets are sorted and disjoint, and modified
 * UTF-7 that decodes encodes back to itself. */
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "imap_parse.h"
#include "imap_utf7.h"

static unsigned char arena_mem[64 * 1024];

static void check_reason(int rc, const char *err)
{
    if (rc < 0 && (!err || !err[0]))
        abort();
}

static void check_seqset(const struct imap_seqset *set)
{
    for (size_t i = 0; i < set->count; i++) {
        if (set->ranges[i].lo == 0 || set->ranges[i].lo > set->ranges[i].hi)
            abort();
        if (i > 0 && set->ranges[i].lo <= set->ranges[i - 1].hi)
            abort();
    }
}

static void check_tree(const struct imap_arg *a, const char *cmd, size_t len)
{
    for (; a; a = a->next) {
        if (a->type == IMAP_ARG_LIST) {
            check_tree(a->list, cmd, len);
        } else if (a->type == IMAP_ARG_LITERAL) {
            if (a->str < cmd || a->str + a->len > cmd + len)
                abort();
        } else if (strlen(a->str) > a->len) {
            abort();
        }
    }
}

static void typed(const struct imap_arg *a, struct imap_arena *arena)
{
    const char *err = NULL, *s, *s2;
    size_t n, n2;
    int rc;
    struct imap_seqset raw, set;
    rc = imap_arg_seqset(a, &raw, arena, &err);
    check_reason(rc, err);
    if (rc == 0) {
        for (uint32_t star = 0; star < 3; star++) {
            if (imap_seqset_resolve(&raw, star ? star * 1000000000u : 0, &set, arena, &err) == 0)
                check_seqset(&set);
        }
    }
    struct imap_fetch f;
    check_reason(imap_parse_fetch(a, &f, arena, &err), err);
    struct imap_store st;
    check_reason(imap_parse_store(a, &st, arena, &err), err);
    struct imap_flags fl;
    check_reason(imap_parse_flag_list(a, &fl, arena, &err), err);
    enum imap_charset cs;
    struct imap_search *root;
    rc = imap_parse_search(a, &cs, &root, arena, &err);
    if (rc < 0 && (!err || !err[0]))
        abort();
    struct imap_date d;
    check_reason(imap_arg_date(a, &d, &err), err);
    rc = imap_arg_mailbox(a, &s, &n, arena, &err);
    check_reason(rc, err);
    if (rc == 0 && strlen(s) != n)
        abort();
    rc = imap_parse_list(a, &s, &n, &s2, &n2, &err);
    check_reason(rc, err);
    if (rc == 0) {
        const char *full;
        size_t fn;
        if (imap_list_combine(s, n, s2, n2, '/', &full, &fn, arena, &err) == 0)
            imap_pattern_match(full, fn, s2, n2, '/');
    }
    if (a && a->type != IMAP_ARG_LIST && a->type != IMAP_ARG_LITERAL) {
        time_t t;
        int tz;
        check_reason(imap_parse_datetime(a->str, a->len, &t, &tz, &err), err);
    }
}

static void utf7(const char *s, size_t len)
{
    char out[512], back[512];
    size_t n, m;
    const char *err = NULL;
    if (imap_utf7_to_utf8(s, len, out, sizeof out, &n, &err) == 0) {
        if (!imap_utf7_valid(s, len))
            abort();
        if (imap_utf8_to_utf7(out, n, back, sizeof back, &m, &err) == 0 &&
            (m != len || memcmp(back, s, len) != 0))
            abort();
    } else {
        check_reason(-1, err);
    }
    if (imap_utf8_to_utf7(s, len, out, sizeof out, &n, &err) == 0) {
        if (imap_utf7_to_utf8(out, n, back, sizeof back, &m, &err) != 0 || m != len ||
            memcmp(back, s, len) != 0)
            abort();
    }
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    /* A private copy so that ASan sees any read past the end. */
    char *cmd = malloc(size ? size : 1);
    if (!cmd)
        return 0;
    memcpy(cmd, data, size);
    uint64_t lit;
    bool ns;
    imap_literal_suffix(cmd, size, &lit, &ns);
    utf7(cmd, size);
    size_t half = size / 2;
    imap_pattern_match(cmd, half, cmd + half, size - half, '/');

    struct imap_arena arena;
    imap_arena_init(&arena, arena_mem, sizeof arena_mem);
    struct imap_command c;
    const char *err = NULL;
    int rc = imap_parse_command(cmd, size, &c, &arena, &err);
    check_reason(rc, err);
    if (arena.used > arena.size)
        abort();
    if (rc == 0) {
        check_tree(c.args, cmd, size);
        size_t mark = arena.used;
        for (const struct imap_arg *a = c.args; a; a = a->next) {
            arena.used = mark;      /* each position gets the same room */
            typed(a, &arena);
            if (a->type == IMAP_ARG_LIST)
                typed(a->list, &arena);
            if (arena.used > arena.size)
                abort();
        }
    }
    free(cmd);
    return 0;
}
