/* netmatch: a list of IPv4/IPv6 networks (CIDR) and a membership test.
 *
 * The list comes from a setting such as PERMIT_NETWORKS: comma-separated
 * "a.b.c.d/n" or "x::/n"; a bare address means /32 or /128; blanks around
 * entries are ignored; an empty list matches nothing. It is parsed once;
 * lookups do no allocation. */
#ifndef POSTHORN_NETMATCH_H
#define POSTHORN_NETMATCH_H

#include <stdbool.h>
#include <stddef.h>

#define NETMATCH_MAX 256   /* networks in one list */

struct netmatch_net {
    int family;                /* AF_INET or AF_INET6 */
    unsigned char bytes[16];   /* network address; host bits cleared */
    unsigned prefix;           /* 0..32 or 0..128 */
};

struct netmatch {
    struct netmatch_net *nets;
    size_t n;
};

/* Parses list into *out (zeroed first). Returns 0, or -1 when any entry is
 * invalid or there are more than NETMATCH_MAX (nothing is kept then). */
int netmatch_parse(const char *list, struct netmatch *out);

/* True when list is a valid (possibly empty) network list. */
bool netmatch_valid(const char *list);

/* True when addr_text (an IPv4 or IPv6 address as text; "::ffff:a.b.c.d"
 * is treated as the IPv4 address) lies in one of the networks. An
 * unparsable address or a NULL/empty m matches nothing. */
bool netmatch_contains(const struct netmatch *m, const char *addr_text);

void netmatch_free(struct netmatch *m);

#endif
