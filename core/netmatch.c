/* netmatch: CIDR lists parsed once, matched by prefix comparison. */
#include "netmatch.h"

#include <arpa/inet.h>
#include <stdlib.h>
#include <string.h>

#define ENTRY_MAX 64   /* longest "x:...:x/128" is 43 + 4 characters */

static const unsigned char v4_mapped_prefix[12] = { 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0xff, 0xff };

/* Address text -> family and bytes; IPv4-mapped IPv6 becomes IPv4. */
static int parse_addr(const char *text, int *family, unsigned char bytes[16])
{
    if (inet_pton(AF_INET, text, bytes) == 1) {
        *family = AF_INET;
        return 0;
    }
    if (inet_pton(AF_INET6, text, bytes) != 1)
        return -1;
    if (memcmp(bytes, v4_mapped_prefix, sizeof v4_mapped_prefix) == 0) {
        memmove(bytes, bytes + 12, 4);
        *family = AF_INET;
        return 0;
    }
    *family = AF_INET6;
    return 0;
}

static int parse_prefix(const char *p, unsigned max, unsigned *out)
{
    size_t n = strlen(p);
    if (n == 0 || n > 3 || strspn(p, "0123456789") != n)
        return -1;
    unsigned v = (unsigned)strtoul(p, NULL, 10);
    if (v > max)
        return -1;
    *out = v;
    return 0;
}

static void clear_host_bits(unsigned char bytes[16], unsigned prefix, size_t len)
{
    for (size_t i = 0; i < len; i++) {
        unsigned bit = (unsigned)i * 8;
        if (bit >= prefix)
            bytes[i] = 0;
        else if (prefix - bit < 8)
            bytes[i] &= (unsigned char)(0xff << (8 - (prefix - bit)));
    }
}

/* One entry (already trimmed, NUL-terminated) -> net. Mapped notation is
 * refused in a network so that "::ffff:0:0/96" cannot silently mean v4. */
static int parse_entry(char *e, struct netmatch_net *net)
{
    char *slash = strchr(e, '/');
    if (slash)
        *slash = '\0';
    memset(net, 0, sizeof *net);
    if (inet_pton(AF_INET, e, net->bytes) == 1)
        net->family = AF_INET;
    else if (inet_pton(AF_INET6, e, net->bytes) == 1)
        net->family = AF_INET6;
    else
        return -1;
    unsigned max = net->family == AF_INET ? 32 : 128;
    net->prefix = max;
    if (slash && parse_prefix(slash + 1, max, &net->prefix) != 0)
        return -1;
    clear_host_bits(net->bytes, net->prefix, max / 8);
    return 0;
}

/* Copies the next comma-separated entry, blanks trimmed, into buf.
 * Returns the entry length, or -1 when it does not fit. */
static long next_entry(const char **p, char *buf, size_t len)
{
    const char *s = *p, *comma = strchr(s, ',');
    const char *end = comma ? comma : s + strlen(s);
    *p = comma ? comma + 1 : end;
    while (s < end && (*s == ' ' || *s == '\t'))
        s++;
    while (end > s && (end[-1] == ' ' || end[-1] == '\t'))
        end--;
    size_t n = (size_t)(end - s);
    if (n >= len)
        return -1;
    memcpy(buf, s, n);
    buf[n] = '\0';
    return (long)n;
}

static bool only_blanks(const char *s)
{
    return s[strspn(s, " \t")] == '\0';
}

int netmatch_parse(const char *list, struct netmatch *out)
{
    memset(out, 0, sizeof *out);
    if (!list || only_blanks(list))
        return 0;
    struct netmatch m = { calloc(NETMATCH_MAX, sizeof *m.nets), 0 };
    if (!m.nets)
        return -1;
    const char *p = list;
    bool more = true;
    while (more) {
        more = strchr(p, ',') != NULL;
        char entry[ENTRY_MAX];
        long n = next_entry(&p, entry, sizeof entry);
        if (n <= 0 || m.n >= NETMATCH_MAX || parse_entry(entry, &m.nets[m.n]) != 0) {
            free(m.nets);
            return -1;
        }
        m.n++;
    }
    *out = m;
    return 0;
}

bool netmatch_valid(const char *list)
{
    struct netmatch m;
    if (netmatch_parse(list, &m) != 0)
        return false;
    netmatch_free(&m);
    return true;
}

static bool in_net(const struct netmatch_net *net, const unsigned char a[16])
{
    unsigned full = net->prefix / 8, rest = net->prefix % 8;
    if (memcmp(net->bytes, a, full) != 0)
        return false;
    if (rest == 0)
        return true;
    unsigned char mask = (unsigned char)(0xff << (8 - rest));
    return (a[full] & mask) == net->bytes[full];
}

bool netmatch_contains(const struct netmatch *m, const char *addr_text)
{
    if (!m || m->n == 0 || !addr_text)
        return false;
    int family;
    unsigned char a[16] = { 0 };
    if (parse_addr(addr_text, &family, a) != 0)
        return false;
    for (size_t i = 0; i < m->n; i++)
        if (m->nets[i].family == family && in_net(&m->nets[i], a))
            return true;
    return false;
}

void netmatch_free(struct netmatch *m)
{
    free(m->nets);
    m->nets = NULL;
    m->n = 0;
}
