/* Unit tests of dns_cache: hits are copies with lowered TTLs, names match
 * without case, failures and TTL 0 are not kept, a slot is replaced. */
#include <stdlib.h>
#include <string.h>

#include "dns_cache.h"
#include "test.h"

static struct dns_answer txt_answer(const char *text, uint32_t ttl)
{
    struct dns_answer a = { .status = DNS_OK, .n = 1 };
    a.rec = calloc(1, sizeof *a.rec);
    a.rec[0].ttl = ttl;
    a.rec[0].text = strdup(text);
    return a;
}

TEST(hit_is_a_copy_with_remaining_ttl)
{
    struct dns_cache *c = dns_cache_new();
    struct dns_answer a = txt_answer("v=spf1 -all", 300), out;
    dns_cache_put(c, "Example.ORG", DNS_TYPE_TXT, &a);
    dns_answer_free(&a);                       /* the cache kept its own copy */
    CHECK(dns_cache_get(c, "example.org", DNS_TYPE_TXT, &out));
    CHECK_INT(out.status, DNS_OK);
    CHECK_INT(out.n, 1);
    CHECK_STR(out.rec[0].text, "v=spf1 -all");
    CHECK(out.rec[0].ttl <= 300 && out.rec[0].ttl >= 298);
    dns_answer_free(&out);
    CHECK(!dns_cache_get(c, "example.org", DNS_TYPE_A, &out));   /* other type */
    CHECK(!dns_cache_get(c, "example.net", DNS_TYPE_TXT, &out));
    dns_cache_free(c);
}

TEST(negative_kept_failures_not)
{
    struct dns_cache *c = dns_cache_new();
    struct dns_answer nx = { .status = DNS_NXDOMAIN }, temp = { .status = DNS_TEMPFAIL }, out;
    dns_cache_put(c, "2.0.0.127.zen.example", DNS_TYPE_A, &nx);
    dns_cache_put(c, "slow.example", DNS_TYPE_A, &temp);
    CHECK(dns_cache_get(c, "2.0.0.127.zen.example", DNS_TYPE_A, &out));
    CHECK_INT(out.status, DNS_NXDOMAIN);
    CHECK_INT(out.n, 0);
    CHECK(!dns_cache_get(c, "slow.example", DNS_TYPE_A, &out));
    struct dns_answer zero = txt_answer("x", 0);
    dns_cache_put(c, "zero.example", DNS_TYPE_TXT, &zero);
    CHECK(!dns_cache_get(c, "zero.example", DNS_TYPE_TXT, &out));   /* TTL 0: not kept */
    dns_answer_free(&zero);
    dns_cache_free(c);
}

TEST(newer_answer_replaces)
{
    struct dns_cache *c = dns_cache_new();
    struct dns_answer a = txt_answer("old", 60), b = txt_answer("new", 60), out;
    dns_cache_put(c, "x.example", DNS_TYPE_TXT, &a);
    dns_cache_put(c, "x.example", DNS_TYPE_TXT, &b);
    CHECK(dns_cache_get(c, "x.example", DNS_TYPE_TXT, &out));
    CHECK_STR(out.rec[0].text, "new");
    dns_answer_free(&out);
    dns_answer_free(&a);
    dns_answer_free(&b);
    dns_cache_free(c);
}

int main(void)
{
    RUN(hit_is_a_copy_with_remaining_ttl);
    RUN(negative_kept_failures_not);
    RUN(newer_answer_replaces);
    return test_summary();
}
