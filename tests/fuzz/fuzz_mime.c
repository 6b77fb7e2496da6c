/* libFuzzer target: the MIME parser and the IMAP writers. The input is a
 * whole message; the tree must satisfy the structural invariants, and the
 * ENVELOPE/BODYSTRUCTURE writers, header decoding, body decoding and the
 * section locator must all run on it without fault. */
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "buf.h"
#include "imap_bodystructure.h"
#include "mime.h"

static size_t parts;

/* Child spans lie inside the parent's body, in order, without overlap. */
static void check(const struct mime_part *p, size_t lo, size_t hi, unsigned depth)
{
    if (p->depth != depth || depth > MIME_MAX_DEPTH || p->hdr_off < lo ||
        p->body_off != p->hdr_off + p->hdr_size || p->body_off + p->body_size > hi ||
        p->body_lines > p->body_size)
        abort();
    if ((p->kind == MIME_LEAF && p->children) || (p->kind == MIME_MESSAGE && p->nchildren != 1))
        abort();
    parts++;
    size_t n = 0, prev = p->body_off;
    for (const struct mime_part *c = p->children; c; c = c->next, n++) {
        if (c->parent != p || c->hdr_off < prev)
            abort();
        check(c, p->body_off, p->body_off + p->body_size, depth + 1);
        prev = c->body_off + c->body_size;
    }
    if (n != p->nchildren)
        abort();
}

static void exercise(const char *msg, const struct mime_part *p, struct buf *tmp)
{
    buf_reset(tmp);
    if (p->kind == MIME_MESSAGE || !p->parent) {
        const struct mime_part *m = p->kind == MIME_MESSAGE ? p->children : p;
        if (imap_envelope(tmp, m) < 0)
            abort();
        if (m->subject.p && mime_decode_header(m->subject.p, m->subject.len, tmp) < 0)
            abort();
        if (m->from.p && mime_decode_header(m->from.p, m->from.len, tmp) < 0)
            abort();
    }
    if (p->kind == MIME_LEAF) {
        buf_reset(tmp);
        if (mime_decode_body(msg, p, tmp) < 0)
            abort();
    }
    for (const struct mime_part *c = p->children; c; c = c->next)
        exercise(msg, c, tmp);
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    const char *msg = (const char *)data;
    struct mime_part *root = mime_parse(msg, size);
    if (!root)
        return 0;
    parts = 0;
    check(root, 0, size, 0);
    if (parts > MIME_MAX_PARTS)
        abort();
    struct buf out = BUF_INIT;
    if (imap_bodystructure(&out, root, true) < 0 || imap_bodystructure(&out, root, false) < 0)
        abort();
    exercise(msg, root, &out);
    /* Section paths from the first octets of the input. */
    unsigned path[4];
    for (size_t i = 0; i < 4; i++)
        path[i] = size > i ? (unsigned)(data[i] % 4) : 1;
    for (size_t d = 0; d <= 4; d++) {
        const struct mime_part *s = mime_find_section(root, path, d);
        if (s && (s->hdr_off > size || s->body_off + s->body_size > size))
            abort();
    }
    buf_free(&out);
    mime_free(root);
    return 0;
}
