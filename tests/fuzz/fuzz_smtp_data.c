/* libFuzzer target: the DATA decoder. The first two bytes choose chunk
 * sizes; the rest is fed in those chunks and must decode exactly as when
 * fed in one piece. */
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "buf.h"
#include "smtp_parse.h"

struct result {
    struct buf out;
    struct smtp_data_decoder d;
    size_t consumed;
};

/* Feeds in[0..len) in chunks of sizes cycling through a..b (1-based). */
static void run(const char *in, size_t len, size_t a, size_t b, bool keep, struct result *r)
{
    memset(r, 0, sizeof *r);
    smtp_data_init(&r->d);
    size_t chunk = a;
    while (r->consumed < len) {
        size_t n = chunk < len - r->consumed ? chunk : len - r->consumed;
        uint64_t before = r->d.octets;
        size_t out_before = r->out.len;
        bool was_done = r->d.done;
        size_t used = smtp_data_feed(&r->d, in + r->consumed, n, keep ? &r->out : NULL);
        if (used > n || (was_done && used != 0) || (!r->d.done && used != n))
            abort();
        if (keep && r->d.octets - before != r->out.len - out_before)
            abort();
        r->consumed += used;
        if (r->d.done)
            break;
        chunk = chunk >= b ? a : chunk + 1;
    }
    if (r->d.done && smtp_data_feed(&r->d, "x", 1, keep ? &r->out : NULL) != 0)
        abort();
    if (keep && r->d.octets != r->out.len)
        abort();
}

static void same(const struct result *x, const struct result *y, bool compare_out)
{
    if (x->consumed != y->consumed || x->d.done != y->d.done ||
        x->d.bad_line_ending != y->d.bad_line_ending || x->d.octets != y->d.octets ||
        x->d.has_8bit != y->d.has_8bit)
        abort();
    if (compare_out && (x->out.len != y->out.len ||
                        (x->out.len && memcmp(x->out.data, y->out.data, x->out.len) != 0)))
        abort();
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    if (size < 2)
        return 0;
    size_t a = (size_t)(data[0] % 16) + 1;
    size_t b = a + (size_t)(data[1] % 16);
    const char *in = (const char *)data + 2;
    size_t len = size - 2;

    struct result whole, chunked, discarded;
    run(in, len, len ? len : 1, len ? len : 1, true, &whole);
    run(in, len, a, b, true, &chunked);
    run(in, len, a, b, false, &discarded);
    same(&whole, &chunked, true);
    same(&whole, &discarded, false);

    /* Independent checks on the one-shot result. */
    if (whole.d.done) {
        /* The end marker is the CRLF "." CRLF just consumed. */
        if (whole.consumed < 3 || memcmp(in + whole.consumed - 3, ".\r\n", 3) != 0)
            abort();
        if (whole.out.len && (whole.out.len < 2 ||
                              memcmp(whole.out.data + whole.out.len - 2, "\r\n", 2) != 0))
            abort();
    }
    if (whole.out.len > whole.consumed)
        abort();
    bool has8 = false, bare = false;
    for (size_t i = 0; i < whole.out.len; i++) {
        unsigned char c = (unsigned char)whole.out.data[i];
        has8 |= c >= 0x80;
        if (c == '\n' && (i == 0 || whole.out.data[i - 1] != '\r'))
            bare = true;
        if (c == '\r' && i + 1 < whole.out.len && whole.out.data[i + 1] != '\n')
            bare = true;
    }
    if (has8 != whole.d.has_8bit || (bare && !whole.d.bad_line_ending))
        abort();
    buf_free(&whole.out);
    buf_free(&chunked.out);
    return 0;
}
