/* netmatch: CIDR list parsing and membership. */
#include "netmatch.h"
#include "test.h"

static bool in(const char *list, const char *addr)
{
    struct netmatch m;
    if (netmatch_parse(list, &m) != 0)
        return false;
    bool r = netmatch_contains(&m, addr);
    netmatch_free(&m);
    return r;
}

TEST(ipv4_prefixes)
{
    CHECK(in("10.0.0.0/8", "10.1.2.3"));
    CHECK(!in("10.0.0.0/8", "11.0.0.1"));
    CHECK(in("198.18.0.0/16", "198.18.255.255"));
    CHECK(!in("198.18.0.0/16", "198.19.0.0"));
    CHECK(in("192.168.1.0/25", "192.168.1.127"));
    CHECK(!in("192.168.1.0/25", "192.168.1.128"));
    /* host bits in the network are ignored */
    CHECK(in("172.17.0.5/16", "172.17.200.1"));
}

TEST(ipv4_exact_and_all)
{
    CHECK(in("127.0.0.1/32", "127.0.0.1"));
    CHECK(!in("127.0.0.1/32", "127.0.0.2"));
    CHECK(in("127.0.0.1", "127.0.0.1"));
    CHECK(!in("127.0.0.1", "127.0.0.2"));
    CHECK(in("0.0.0.0/0", "203.0.113.9"));
    CHECK(!in("0.0.0.0/0", "2001:db8::1"));
}

TEST(ipv6_prefixes)
{
    CHECK(in("2001:db8::/32", "2001:db8:1::1"));
    CHECK(!in("2001:db8::/32", "2001:db9::1"));
    CHECK(in("fd00::/8", "fdff::1"));
    CHECK(!in("fd00::/8", "fe00::1"));
    CHECK(in("::1/128", "::1"));
    CHECK(!in("::1/128", "::2"));
    CHECK(in("::1", "::1"));
    CHECK(in("::/0", "2001:db8::1"));
    CHECK(!in("::/0", "10.0.0.1"));
    CHECK(in("2001:db8::/33", "2001:db8:7fff::1"));
    CHECK(!in("2001:db8::/33", "2001:db8:8000::1"));
}

TEST(mapped_addresses)
{
    CHECK(in("127.0.0.0/8", "::ffff:127.0.0.1"));
    CHECK(in("10.0.0.0/8", "::FFFF:10.9.8.7"));
    CHECK(!in("10.0.0.0/8", "::ffff:11.0.0.1"));
    CHECK(!in("::/0", "::ffff:10.0.0.1"));
}

TEST(lists)
{
    const char *list = "10.0.0.0/8, 192.168.0.0/16 ,fd00::/8";
    CHECK(in(list, "10.2.3.4"));
    CHECK(in(list, "192.168.9.9"));
    CHECK(in(list, "fd12::1"));
    CHECK(!in(list, "172.16.0.1"));
    struct netmatch m;
    CHECK_INT(netmatch_parse(list, &m), 0);
    CHECK_INT(m.n, 3);
    netmatch_free(&m);
}

TEST(empty_matches_nothing)
{
    struct netmatch m;
    CHECK_INT(netmatch_parse("", &m), 0);
    CHECK_INT(m.n, 0);
    CHECK(!netmatch_contains(&m, "127.0.0.1"));
    netmatch_free(&m);
    CHECK_INT(netmatch_parse("  ", &m), 0);
    CHECK_INT(m.n, 0);
    CHECK(!netmatch_contains(NULL, "127.0.0.1"));
    CHECK(netmatch_valid(""));
}

TEST(bad_inputs)
{
    const char *bad[] = {
        "10.0.0.0/33", "::/129", "10.0.0.0/", "10.0.0.0/-1", "10.0.0.0/8a", "10.0.0/8",
        "300.0.0.0/8", "host.example", "10.0.0.0/8,", ",10.0.0.0/8", "10.0.0.0/8,,::1",
        "10.0.0.0/0008", "1.2.3.4 5.6.7.8", "10.0.0.0/ 8", "[::1]/128", "10.0.0.0/8/8",
    };
    for (size_t i = 0; i < sizeof bad / sizeof bad[0]; i++) {
        struct netmatch m;
        if (netmatch_parse(bad[i], &m) != -1)
            fprintf(stderr, "accepted: %s\n", bad[i]);
        CHECK(!netmatch_valid(bad[i]));
    }
    CHECK(netmatch_valid("10.0.0.0/8,::1"));
}

TEST(too_many)
{
    char list[NETMATCH_MAX * 16 + 32];
    size_t n = 0;
    for (int i = 0; i <= NETMATCH_MAX; i++)
        n += (size_t)snprintf(list + n, sizeof list - n, "%s10.0.%d.%d", i ? "," : "",
                              i / 256, i % 256);
    CHECK(!netmatch_valid(list));
}

TEST(bad_addresses_match_nothing)
{
    CHECK(!in("0.0.0.0/0", ""));
    CHECK(!in("0.0.0.0/0", "not-an-address"));
    CHECK(!in("0.0.0.0/0", "10.0.0.1:25"));
}

int main(void)
{
    RUN(ipv4_prefixes);
    RUN(ipv4_exact_and_all);
    RUN(ipv6_prefixes);
    RUN(mapped_addresses);
    RUN(lists);
    RUN(empty_matches_nothing);
    RUN(bad_inputs);
    RUN(too_many);
    RUN(bad_addresses_match_nothing);
    return test_summary();
}
