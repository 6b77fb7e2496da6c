/* Unit tests for filters/dnsbl.c: query names (IPv4 reversed, IPv6
 * nibbles, mapped addresses), what an answer means (listed, Spamhaus's
 * 127.255.255.x refusals, answers outside 127/8, failures), parallel
 * lookups through a fake resolver, weight summing and the verdicts. */
#include <arpa/inet.h>
#include <netinet/in.h>
#include <stdlib.h>
#include <string.h>
#include <sys/un.h>
#include <time.h>
#include <unistd.h>

#include "dnsbl.h"
#include "test.h"

static struct sockaddr_storage v4(const char *ip)
{
    struct sockaddr_storage ss;
    memset(&ss, 0, sizeof ss);
    struct sockaddr_in *sin = (struct sockaddr_in *)&ss;
    sin->sin_family = AF_INET;
    inet_pton(AF_INET, ip, &sin->sin_addr);
    return ss;
}

static struct sockaddr_storage v6(const char *ip)
{
    struct sockaddr_storage ss;
    memset(&ss, 0, sizeof ss);
    struct sockaddr_in6 *sin6 = (struct sockaddr_in6 *)&ss;
    sin6->sin6_family = AF_INET6;
    inet_pton(AF_INET6, ip, &sin6->sin6_addr);
    return ss;
}

/* An answer holding the given IPv4 addresses (status DNS_OK). */
static struct dns_answer answer_of(const char *const *ips, size_t n)
{
    struct dns_answer a = { .status = DNS_OK, .n = n };
    a.rec = calloc(n ? n : 1, sizeof *a.rec);
    for (size_t i = 0; i < n; i++) {
        struct sockaddr_storage ss = v4(ips[i]);
        a.rec[i].addr = ss;
        a.rec[i].ttl = 60;
    }
    return a;
}

/* --- query names --------------------------------------------------------------- */

TEST(test_query_name_ipv4)
{
    char name[300];
    struct sockaddr_storage a = v4("192.0.2.10");
    CHECK_INT(dnsbl_query_name((struct sockaddr *)&a, "zen.spamhaus.org", name, sizeof name),
              strlen("10.2.0.192.zen.spamhaus.org"));
    CHECK_STR(name, "10.2.0.192.zen.spamhaus.org");
    a = v4("127.0.0.2");
    dnsbl_query_name((struct sockaddr *)&a, "bl.test", name, sizeof name);
    CHECK_STR(name, "2.0.0.127.bl.test");
}

TEST(test_query_name_ipv6)
{
    char name[300];
    struct sockaddr_storage a = v6("2001:db8:1::abcd");
    CHECK(dnsbl_query_name((struct sockaddr *)&a, "bl.test", name, sizeof name) > 0);
    CHECK_STR(name, "d.c.b.a.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.1.0.0.0.8.b.d.0.1.0.0.2.bl.test");
    /* an IPv4-mapped client is asked as IPv4 */
    a = v6("::ffff:198.51.100.7");
    dnsbl_query_name((struct sockaddr *)&a, "bl.test", name, sizeof name);
    CHECK_STR(name, "7.100.51.198.bl.test");
}

TEST(test_query_name_limits)
{
    char name[20];
    struct sockaddr_storage a = v4("192.0.2.10");
    CHECK_INT(dnsbl_query_name((struct sockaddr *)&a, "zen.spamhaus.org", name, sizeof name), -1);
    struct sockaddr_un un = { .sun_family = AF_UNIX };
    char big[300];
    CHECK_INT(dnsbl_query_name((struct sockaddr *)&un, "bl.test", big, sizeof big), -1);
}

TEST(test_reason_name)
{
    char r[FILTER_REASON_MAX];
    dnsbl_reason_name("zen.spamhaus.org", r, sizeof r);
    CHECK_STR(r, "DNSBL_ZEN_SPAMHAUS_ORG");
    dnsbl_reason_name("b.barracudacentral.org", r, sizeof r);
    CHECK_STR(r, "DNSBL_B_BARRACUDACENTRAL_ORG");
    char small[10];
    dnsbl_reason_name("zen.spamhaus.org", small, sizeof small);
    CHECK_STR(small, "DNSBL_ZEN");
}

/* --- answers -------------------------------------------------------------------- */

TEST(test_classify)
{
    char code[16];
    struct dns_answer a = { .status = DNS_NXDOMAIN };
    CHECK_INT(dnsbl_classify(&a, code, sizeof code), DNSBL_NOT_LISTED);
    a.status = DNS_NODATA;
    CHECK_INT(dnsbl_classify(&a, code, sizeof code), DNSBL_NOT_LISTED);
    a.status = DNS_TEMPFAIL;
    CHECK_INT(dnsbl_classify(&a, code, sizeof code), DNSBL_FAILED);
    a.status = DNS_PERMFAIL;
    CHECK_INT(dnsbl_classify(&a, code, sizeof code), DNSBL_FAILED);

    static const char *const listed[] = { "127.0.0.2" };
    a = answer_of(listed, 1);
    CHECK_INT(dnsbl_classify(&a, code, sizeof code), DNSBL_LISTED);
    CHECK_STR(code, "127.0.0.2");
    dns_answer_free(&a);

    static const char *const refused[] = { "127.255.255.254" };
    a = answer_of(refused, 1);
    CHECK_INT(dnsbl_classify(&a, code, sizeof code), DNSBL_REFUSED);
    CHECK_STR(code, "127.255.255.254");
    dns_answer_free(&a);

    static const char *const limit[] = { "127.255.255.255", "127.0.0.255" };
    a = answer_of(limit, 2);
    CHECK_INT(dnsbl_classify(&a, code, sizeof code), DNSBL_REFUSED);
    dns_answer_free(&a);

    static const char *const bogus[] = { "10.1.2.3" };
    a = answer_of(bogus, 1);
    CHECK_INT(dnsbl_classify(&a, code, sizeof code), DNSBL_BOGUS);
    CHECK_STR(code, "10.1.2.3");
    dns_answer_free(&a);

    /* a real listing code among refusals counts */
    static const char *const mixed[] = { "10.1.2.3", "127.255.255.252", "127.0.0.4" };
    a = answer_of(mixed, 3);
    CHECK_INT(dnsbl_classify(&a, code, sizeof code), DNSBL_LISTED);
    CHECK_STR(code, "127.0.0.4");
    dns_answer_free(&a);

    /* OK without A records (an AAAA only): not listed */
    a = answer_of(NULL, 0);
    CHECK_INT(dnsbl_classify(&a, code, sizeof code), DNSBL_NOT_LISTED);
    dns_answer_free(&a);
}

/* --- lookups through a fake resolver ------------------------------------------- */

/* name -> answer; anything else NXDOMAIN. Each query sleeps, so that a
 * sequential walk would take visibly longer than a parallel one. */
struct fake {
    const char *name;
    enum dns_status status;
    const char *ip;
};

static const struct fake fakes[] = {
    { "2.0.0.127.black.test", DNS_OK, "127.0.0.2" },
    { "2.0.0.127.grey.test", DNS_OK, "127.0.0.3" },
    { "2.0.0.127.white.test", DNS_OK, "127.0.0.2" },
    { "2.0.0.127.refusing.test", DNS_OK, "127.255.255.254" },
    { "2.0.0.127.broken.test", DNS_TEMPFAIL, NULL },
};

#define FAKE_DELAY_MS 200

static enum dns_status fake_query(void *ctx, const char *name, struct dns_answer *out)
{
    (void)ctx;
    struct timespec ts = { 0, FAKE_DELAY_MS * 1000000L };
    nanosleep(&ts, NULL);
    memset(out, 0, sizeof *out);
    out->status = DNS_NXDOMAIN;
    for (size_t i = 0; i < sizeof fakes / sizeof *fakes; i++) {
        if (strcmp(fakes[i].name, name) != 0)
            continue;
        if (fakes[i].ip) {
            *out = answer_of(&fakes[i].ip, 1);
        }
        out->status = fakes[i].status;
    }
    return out->status;
}

static double now_ms(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return ts.tv_sec * 1000.0 + ts.tv_nsec / 1e6;
}

TEST(test_lookup_parallel)
{
    struct dnsbl_zone zones[6];
    int n = settings_dnsbl_zones("black.test*3,grey.test*1,white.test*-2,refusing.test*3,"
                                 "broken.test*3,clean.test*2", zones, 6);
    CHECK_INT(n, 6);
    struct dnsbl_zone_result res[6];
    struct sockaddr_storage a = v4("127.0.0.2");
    double t0 = now_ms();
    dnsbl_lookup((struct sockaddr *)&a, zones, 6, fake_query, NULL, res);
    double took = now_ms() - t0;
    CHECK(took < 3 * FAKE_DELAY_MS);   /* sequential: 6 x 200 ms */
    CHECK_INT(res[0].answer, DNSBL_LISTED);
    CHECK_STR(res[0].code, "127.0.0.2");
    CHECK_INT(res[1].answer, DNSBL_LISTED);
    CHECK_STR(res[1].code, "127.0.0.3");
    CHECK_INT(res[2].answer, DNSBL_LISTED);
    CHECK_INT(res[3].answer, DNSBL_REFUSED);
    CHECK_INT(res[4].answer, DNSBL_FAILED);
    CHECK_INT(res[5].answer, DNSBL_NOT_LISTED);
    /* 3 + 1 - 2; the refusing and failing zones do not count */
    CHECK(dnsbl_sum(zones, 6, res) == 2.0);

    /* another client: listed nowhere */
    a = v4("127.0.0.9");
    dnsbl_lookup((struct sockaddr *)&a, zones, 6, fake_query, NULL, res);
    for (int i = 0; i < 6; i++)
        CHECK_INT(res[i].answer, DNSBL_NOT_LISTED);
    CHECK(dnsbl_sum(zones, 6, res) == 0.0);
}

/* --- verdicts ----------------------------------------------------------------------- */

static void set(struct dnsbl_zone_result *res, size_t n, const enum dnsbl_answer *answers)
{
    for (size_t i = 0; i < n; i++) {
        res[i].answer = answers[i];
        res[i].code[0] = '\0';
    }
}

TEST(test_results_reject)
{
    struct dnsbl_zone zones[3];
    CHECK_INT(settings_dnsbl_zones("psbl.test*1,zen.test*3,cop.test*2", zones, 3), 3);
    struct dnsbl_zone_result res[3];
    static const enum dnsbl_answer a[3] = { DNSBL_LISTED, DNSBL_NOT_LISTED, DNSBL_LISTED };
    set(res, 3, a);
    struct filter_result out[8];
    /* 1 + 2 = 3 >= 3: refused, naming the heaviest listing zone */
    CHECK_INT(dnsbl_results(zones, 3, res, 3.0, "192.0.2.1", out, 8), 1);
    CHECK_INT(out[0].verdict, FILTER_REJECT);
    CHECK_INT(out[0].code, 554);
    CHECK_STR(out[0].enhanced, "5.7.1");
    CHECK_STR(out[0].text, "Service unavailable; client [192.0.2.1] blocked using cop.test");
    CHECK_STR(out[0].reason, "DNSBL_COP_TEST");
    /* below a higher threshold: two scores */
    CHECK_INT(dnsbl_results(zones, 3, res, 4.0, "192.0.2.1", out, 8), 2);
    CHECK_INT(out[0].verdict, FILTER_SCORE);
    CHECK_STR(out[0].reason, "DNSBL_PSBL_TEST");
    CHECK(out[0].score == 1.0);
    CHECK_STR(out[1].reason, "DNSBL_COP_TEST");
    CHECK(out[1].score == 2.0);
}

TEST(test_results_allowlist_offsets)
{
    struct dnsbl_zone zones[2];
    CHECK_INT(settings_dnsbl_zones("zen.test*3,list.dnswl.test*-5", zones, 2), 2);
    struct dnsbl_zone_result res[2];
    static const enum dnsbl_answer both[2] = { DNSBL_LISTED, DNSBL_LISTED };
    set(res, 2, both);
    struct filter_result out[8];
    /* 3 - 5 < 3: not refused; both named */
    CHECK_INT(dnsbl_results(zones, 2, res, 3.0, "192.0.2.1", out, 8), 2);
    CHECK_INT(out[0].verdict, FILTER_SCORE);
    CHECK_STR(out[1].reason, "DNSBL_LIST_DNSWL_TEST");
    CHECK(out[1].score == -5.0);
    /* without the allowlist the same client is refused */
    static const enum dnsbl_answer black[2] = { DNSBL_LISTED, DNSBL_NOT_LISTED };
    set(res, 2, black);
    CHECK_INT(dnsbl_results(zones, 2, res, 3.0, "192.0.2.1", out, 8), 1);
    CHECK_INT(out[0].verdict, FILTER_REJECT);
}

TEST(test_results_refused_not_listed)
{
    struct dnsbl_zone zones[1];
    CHECK_INT(settings_dnsbl_zones("zen.test*5", zones, 1), 1);
    struct dnsbl_zone_result res[1];
    struct filter_result out[8];
    static const enum dnsbl_answer skipped[] = { DNSBL_REFUSED, DNSBL_FAILED, DNSBL_BOGUS,
                                                 DNSBL_NOT_LISTED };
    for (size_t i = 0; i < 4; i++) {
        set(res, 1, &skipped[i]);
        CHECK_INT(dnsbl_results(zones, 1, res, 3.0, "192.0.2.1", out, 8), 0);
    }
}

TEST(test_results_more_than_slots)
{
    struct dnsbl_zone zones[5];
    CHECK_INT(settings_dnsbl_zones("a.test*0.5,b.test*0.5,c.test*0.5,d.test*0.25,e.test",
                                   zones, 5), 5);
    struct dnsbl_zone_result res[5];
    static const enum dnsbl_answer all[5] = { DNSBL_LISTED, DNSBL_LISTED, DNSBL_LISTED,
                                              DNSBL_LISTED, DNSBL_LISTED };
    set(res, 5, all);
    struct filter_result out[3];
    CHECK_INT(dnsbl_results(zones, 5, res, 3.0, "192.0.2.1", out, 3), 3);
    CHECK_STR(out[0].reason, "DNSBL_A_TEST");
    CHECK_STR(out[1].reason, "DNSBL_B_TEST");
    CHECK_STR(out[2].reason, "DNSBL_OTHER");
    CHECK(out[2].score == 0.5 + 0.25 + 1.0);
    double total = out[0].score + out[1].score + out[2].score;
    CHECK(total == dnsbl_sum(zones, 5, res));
}

int main(void)
{
    RUN(test_query_name_ipv4);
    RUN(test_query_name_ipv6);
    RUN(test_query_name_limits);
    RUN(test_reason_name);
    RUN(test_classify);
    RUN(test_lookup_parallel);
    RUN(test_results_reject);
    RUN(test_results_allowlist_offsets);
    RUN(test_results_refused_not_listed);
    RUN(test_results_more_than_slots);
    return test_summary();
}
