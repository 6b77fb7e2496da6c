/* libFuzzer target: the DNS answer parser on arbitrary messages, for every
 * record type the resolver asks for, and the name decoder at the first
 * offsets. Beyond not crashing: reported names are short enough and
 * printable, rdata lies inside the message with the documented sizes, and
 * accepted TXT rdata joins into a string of the right length. */
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "dns.h"

struct ctx {
    const uint8_t *msg;
    size_t len;
};

static void check_name(const char *name)
{
    size_t n = strnlen(name, DNS_NAME_MAX + 1);
    if (n > 253)
        abort();
    for (size_t i = 0; i < n; i++)
        if ((unsigned char)name[i] <= 0x20 || (unsigned char)name[i] >= 0x7f)
            abort();
}

static int check_rr(void *arg, const struct dns_rr *rr)
{
    const struct ctx *c = arg;
    if (rr->rdata < c->msg || rr->rdata + rr->rdlen > c->msg + c->len)
        abort();
    switch (rr->type) {
    case DNS_TYPE_A:
        if (rr->rdlen != 4)
            abort();
        break;
    case DNS_TYPE_AAAA:
        if (rr->rdlen != 16)
            abort();
        break;
    case DNS_TYPE_TXT: {
        char *out = malloc((size_t)rr->rdlen + 1);
        if (!out)
            return 1;
        long n = dns_txt_join(rr->rdata, rr->rdlen, out, (size_t)rr->rdlen + 1);
        if (n >= 0 && (n >= rr->rdlen || strlen(out) != (size_t)n))
            abort();
        free(out);
        break;
    }
    default:
        check_name(rr->name);
    }
    return 0;
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    /* An exact-size copy so that ASan sees any read past the end. */
    uint8_t *msg = malloc(size ? size : 1);
    if (!msg)
        return 0;
    memcpy(msg, data, size);
    struct ctx c = { msg, size };
    static const uint16_t types[] = { DNS_TYPE_A, DNS_TYPE_AAAA, DNS_TYPE_MX, DNS_TYPE_TXT,
                                      DNS_TYPE_PTR, DNS_TYPE_CNAME };
    for (size_t i = 0; i < sizeof types / sizeof types[0]; i++) {
        int rc = dns_parse_answer(msg, size, types[i], check_rr, &c);
        if (rc < -1 || rc > 15)
            abort();
    }
    for (size_t off = 0; off < size && off < 64; off++) {
        char out[DNS_NAME_MAX + 1];
        size_t next = 0;
        int rc = dns_name_decode(msg, size, off, out, sizeof out, &next);
        if (rc == 0)
            check_name(out);
        if (rc != -1 && (next <= off || next > size))
            abort();
    }
    free(msg);
    return 0;
}
