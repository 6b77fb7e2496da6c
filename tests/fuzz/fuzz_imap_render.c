/* libFuzzer target: FETCH rendering and SEARCH evaluation over any
 * message. The input is a whole message; a fixed set of FETCH items is
 * rendered with and without a parse tree supplied (the results must be
 * equal, every literal must fit, the response must close), a few SEARCH
 * programs are matched, and the case-insensitive matcher must find the
 * input's first octets inside a text that contains them. */
#include <stdbool.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "buf.h"
#include "imap_fetch.h"
#include "imap_parse.h"
#include "imap_search.h"
#include "mime.h"

static const char fetch_cmd[] =
    "f FETCH 1 (BODYSTRUCTURE ENVELOPE BODY[1.2.MIME] BODY[HEADER.FIELDS (FROM SUBJECT)] "
    "BODY[TEXT]<3.50> BODY.PEEK[2.HEADER] BODY[1] BODY[HEADER.FIELDS.NOT (TO)] RFC822.HEADER "
    "BODY FLAGS BODY[HEADER] BODY[]<5.20>)";
static const char *const search_cmds[] = {
    "s SEARCH TEXT \"x\" OR BODY \"y\" HEADER \"Subject\" \"z\"",
    "s SEARCH OR OR BODY y HEADER Subject z OR SENTBEFORE 1-Jan-2000 SENTSINCE 1-Jan-2000",
    "s SEARCH NOT (TEXT \"\xC3\xA9\" FROM \"\") UNSEEN 1:* UID *",
};
#define NSEARCH (sizeof search_cmds / sizeof search_cmds[0])

static unsigned char arena_mem[IMAP_ARENA_DEFAULT];
static struct imap_fetch fetch;
static struct imap_search *programs[NSEARCH];

static void setup(void)
{
    struct imap_arena arena;
    struct imap_command cmd;
    enum imap_charset cs;
    const char *err;
    imap_arena_init(&arena, arena_mem, sizeof arena_mem);
    if (imap_parse_command(fetch_cmd, sizeof fetch_cmd - 1, &cmd, &arena, &err) < 0 ||
        imap_parse_fetch(cmd.args->next, &fetch, &arena, &err) < 0)
        abort();
    struct imap_search_ctx ctx = { 1, 1, &arena };
    for (size_t i = 0; i < NSEARCH; i++) {
        if (imap_parse_command(search_cmds[i], strlen(search_cmds[i]), &cmd, &arena, &err) < 0 ||
            imap_parse_search(cmd.args, &cs, &programs[i], &arena, &err) < 0 ||
            imap_search_prepare(programs[i], &ctx, &err) < 0)
            abort();
    }
}

/* Every literal "{n}" CRLF lies inside the response, which ends with ")". */
static void check_literals(const struct buf *out)
{
    size_t i = 0;
    while (i < out->len) {
        size_t j = i + 1, n = 0;
        if (out->data[i] != '{') {
            i++;
            continue;
        }
        while (j < out->len && out->data[j] >= '0' && out->data[j] <= '9' && n < SIZE_MAX / 20)
            n = n * 10 + (size_t)(out->data[j++] - '0');
        if (j + 3 <= out->len && memcmp(out->data + j, "}\r\n", 3) == 0) {
            if (n > out->len - j - 3)
                abort();
            i = j + 3 + n;
        } else {
            i++;
        }
    }
    if (out->len == 0 || out->data[0] != '(' || out->data[out->len - 1] != ')')
        abort();
}

static void render(const char *msg, size_t size, const struct mime_part *root)
{
    struct imap_fetch_msg m;
    struct buf a = BUF_INIT, b = BUF_INIT;
    memset(&m, 0, sizeof m);
    m.uid = 1;
    m.keywords = "$Forwarded";
    m.msg = msg;
    m.len = size;
    m.size = size;
    m.mime = root;
    if (imap_fetch_render(&a, &fetch, &m, true, false) < 0)
        abort();
    check_literals(&a);
    m.mime = NULL;
    if (imap_fetch_render(&b, &fetch, &m, true, false) < 0)
        abort();
    if (a.len != b.len || memcmp(a.data, b.data, a.len) != 0)
        abort();
    buf_free(&a);
    buf_free(&b);
}

/* Sections without part numbers read the same with the tree and without
 * it (then the header's end is found by scanning). */
static void sections(const char *msg, size_t size, const struct mime_part *root)
{
    struct buf s1 = BUF_INIT, s2 = BUF_INIT;
    for (size_t i = 0; i < fetch.nsections; i++) {
        const struct imap_section *sec = &fetch.sections[i];
        const char *d1, *d2;
        size_t n1, n2;
        if (sec->nparts > 0)
            continue;
        if (imap_fetch_section_text(msg, size, root, sec, &s1, &d1, &n1) < 0 ||
            imap_fetch_section_text(msg, size, NULL, sec, &s2, &d2, &n2) < 0 ||
            n1 != n2 || memcmp(d1, d2, n1) != 0)
            abort();
    }
    buf_free(&s1);
    buf_free(&s2);
}

static void search(const char *msg, size_t size, const struct mime_part *root)
{
    struct imap_search_msg m;
    memset(&m, 0, sizeof m);
    m.seq = m.uid = 1;
    m.size = size;
    m.msg = msg;
    m.len = size;
    m.mime = root;
    for (size_t i = 0; i < NSEARCH; i++) {
        int with_tree = imap_search_match(programs[i], &m);
        m.mime = NULL;
        int without = imap_search_match(programs[i], &m);
        m.mime = root;
        if (with_tree < 0 || with_tree != without)
            abort();
    }
}

/* The first octets, as a needle, are found inside "<" needle ">". */
static void matcher(const char *data, size_t size)
{
    size_t n = size < 64 ? size : 64;
    char hay[66];
    hay[0] = '<';
    memcpy(hay + 1, data, n);
    hay[n + 1] = '>';
    if (!imap_search_text_contains(hay, n + 2, data, n))
        abort();
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    static bool ready;
    if (!ready) {
        setup();
        ready = true;
    }
    const char *msg = (const char *)data;
    struct mime_part *root = mime_parse(msg, size);
    if (!root)
        return 0;
    render(msg, size, root);
    sections(msg, size, root);
    search(msg, size, root);
    matcher(msg, size);
    mime_free(root);
    return 0;
}
