/* spf: the record parser and rewriter, the result mapping and policy, and
 * check_host through libspf2 against a fake DNS zone. Each correction of
 * libspf2 1.2.10 has a test naming the RFC 7208 section. */
#include <arpa/inet.h>
#include <netinet/in.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>

#include <spf2/spf.h>

#include "buf.h"
#include "dns.h"
#include "log.h"
#include "server.h"
#include "settings.h"
#include "spf.h"
#include "spf_record.h"
#include "test.h"

/* ---------------------------------------------------------------------- */
/* A fake zone                                                            */
/* ---------------------------------------------------------------------- */

/* type 0 with data "TEMPFAIL": every query for the name fails. */
struct zrec {
    const char *name;
    int type;
    const char *data;   /* A/AAAA address, "pref host" for MX, TXT text, PTR name */
};

static const struct zrec *zone;
static int queries, txt_queries, other_type_queries;

static int add_record(struct dns_answer *a, const struct zrec *z)
{
    struct dns_record *r = realloc(a->rec, (a->n + 1) * sizeof *r);
    if (!r)
        abort();
    a->rec = r;
    r = &a->rec[a->n++];
    memset(r, 0, sizeof *r);
    r->ttl = 300;
    if (z->type == DNS_TYPE_A) {
        struct sockaddr_in *s4 = (struct sockaddr_in *)&r->addr;
        s4->sin_family = AF_INET;
        inet_pton(AF_INET, z->data, &s4->sin_addr);
    } else if (z->type == DNS_TYPE_AAAA) {
        struct sockaddr_in6 *s6 = (struct sockaddr_in6 *)&r->addr;
        s6->sin6_family = AF_INET6;
        inet_pton(AF_INET6, z->data, &s6->sin6_addr);
    } else if (z->type == DNS_TYPE_MX) {
        char *sp = strchr(z->data, ' ');
        r->preference = (uint16_t)atoi(z->data);
        r->text = strdup(sp + 1);
    } else {
        r->text = strdup(z->data);
    }
    return 0;
}

static enum dns_status fake_query(void *arg, const char *name, int type, struct dns_answer *out)
{
    (void)arg;
    memset(out, 0, sizeof *out);
    queries++;
    if (type == DNS_TYPE_TXT)
        txt_queries++;
    if (type != DNS_TYPE_TXT && type != DNS_TYPE_A && type != DNS_TYPE_AAAA
        && type != DNS_TYPE_MX && type != DNS_TYPE_PTR)
        other_type_queries++;
    bool exists = false;
    for (const struct zrec *z = zone; z && z->name; z++) {
        if (strcasecmp(z->name, name) != 0)
            continue;
        exists = true;
        if (z->type == 0) {
            out->status = DNS_TEMPFAIL;
            return out->status;
        }
        if (z->type == type)
            add_record(out, z);
    }
    out->status = out->n ? DNS_OK : exists ? DNS_NODATA : DNS_NXDOMAIN;
    return out->status;
}

static const struct spf_resolver fake = { .query = fake_query };

static struct sockaddr_storage client_addr(const char *ip)
{
    struct sockaddr_storage ss;
    memset(&ss, 0, sizeof ss);
    if (strchr(ip, ':')) {
        struct sockaddr_in6 *s6 = (struct sockaddr_in6 *)&ss;
        s6->sin6_family = AF_INET6;
        inet_pton(AF_INET6, ip, &s6->sin6_addr);
    } else {
        struct sockaddr_in *s4 = (struct sockaddr_in *)&ss;
        s4->sin_family = AF_INET;
        inet_pton(AF_INET, ip, &s4->sin_addr);
    }
    return ss;
}

static struct spf_outcome last;

/* check_host for MAIL FROM `from` (HELO "helo.test") from ip. */
static enum spf_result check3(const struct zrec *z, const char *ip, const char *helo,
                              const char *from)
{
    zone = z;
    queries = txt_queries = other_type_queries = 0;
    struct sockaddr_storage ss = client_addr(ip);
    struct spf_request rq = {
        .client = (struct sockaddr *)&ss,
        .helo = helo,
        .mail_from = from,
        .receiver = "mx.posthorn.test",
    };
    spf_check(&fake, &rq, &last);
    return last.result;
}

static enum spf_result check(const struct zrec *z, const char *ip, const char *from)
{
    return check3(z, ip, "helo.test", from);
}

#define CHECK_RESULT(expr, want) do { \
        enum spf_result r_ = (expr); \
        if (r_ != (want)) { \
            fprintf(stderr, "%s:%d: %s: %s gave %s, expected %s (problem: %s)\n", __FILE__, \
                    __LINE__, test_current_name, #expr, spf_result_name(r_), \
                    spf_result_name(want), last.problem); \
            test_current_failed = 1; \
        } } while (0)

/* ---------------------------------------------------------------------- */
/* Results and policy                                                     */
/* ---------------------------------------------------------------------- */

TEST(libspf2_results_mapped_to_rfc_seven)
{
    CHECK_INT(spf_map_libspf2(SPF_RESULT_PASS, SPF_E_SUCCESS), SPF_R_PASS);
    CHECK_INT(spf_map_libspf2(SPF_RESULT_FAIL, SPF_E_SUCCESS), SPF_R_FAIL);
    CHECK_INT(spf_map_libspf2(SPF_RESULT_SOFTFAIL, SPF_E_SUCCESS), SPF_R_SOFTFAIL);
    CHECK_INT(spf_map_libspf2(SPF_RESULT_NEUTRAL, SPF_E_SUCCESS), SPF_R_NEUTRAL);
    CHECK_INT(spf_map_libspf2(SPF_RESULT_NONE, SPF_E_NOT_SPF), SPF_R_NONE);
    CHECK_INT(spf_map_libspf2(SPF_RESULT_TEMPERROR, SPF_E_DNS_ERROR), SPF_R_TEMPERROR);
    CHECK_INT(spf_map_libspf2(SPF_RESULT_PERMERROR, SPF_E_BIG_DNS), SPF_R_PERMERROR);
    /* "invalid" plus an error code. */
    CHECK_INT(spf_map_libspf2(SPF_RESULT_INVALID, SPF_E_DNS_ERROR), SPF_R_TEMPERROR);
    CHECK_INT(spf_map_libspf2(SPF_RESULT_INVALID, SPF_E_SYNTAX), SPF_R_PERMERROR);
    CHECK_INT(spf_map_libspf2(SPF_RESULT_INVALID, SPF_E_INVALID_CIDR), SPF_R_PERMERROR);
    CHECK_INT(spf_map_libspf2(SPF_RESULT_INVALID, SPF_E_RECURSIVE), SPF_R_PERMERROR);
    CHECK_STR(spf_result_name(SPF_R_SOFTFAIL), "softfail");
    CHECK_STR(spf_result_name(SPF_R_TEMPERROR), "temperror");
    CHECK_STR(spf_result_name(SPF_R_PERMERROR), "permerror");
}

TEST(policy)
{
    struct spf_outcome o;
    struct filter_result r;
    memset(&o, 0, sizeof o);
    snprintf(o.comment, sizeof o.comment, "domain of x.test does not designate 192.0.2.9");

    o.result = SPF_R_FAIL;
    memset(&r, 0, sizeof r);
    spf_policy(&o, false, &r);
    CHECK_INT(r.verdict, FILTER_REJECT);
    CHECK_INT(r.code, 550);
    CHECK_STR(r.enhanced, "5.7.23");
    CHECK_STR(r.text, "SPF check failed: domain of x.test does not designate 192.0.2.9");
    snprintf(o.explanation, sizeof o.explanation, "go away");
    spf_policy(&o, false, &r);
    CHECK_STR(r.text, "SPF check failed: go away");

    o.result = SPF_R_TEMPERROR;
    memset(&r, 0, sizeof r);
    spf_policy(&o, false, &r);
    CHECK_INT(r.verdict, FILTER_TEMPFAIL);
    CHECK_INT(r.code, 451);
    CHECK_STR(r.enhanced, "4.7.24");
    memset(&r, 0, sizeof r);
    spf_policy(&o, true, &r);   /* SPF_DNS_ERROR=skip */
    CHECK_INT(r.verdict, FILTER_ACCEPT);
    CHECK_STR(r.reason, "SPF_SKIPPED");

    o.result = SPF_R_PERMERROR;
    memset(&r, 0, sizeof r);
    spf_policy(&o, false, &r);
    CHECK_INT(r.verdict, FILTER_SCORE);
    CHECK(r.score == 1.0);
    CHECK_STR(r.reason, "SPF_PERMERROR");

    o.result = SPF_R_SOFTFAIL;
    memset(&r, 0, sizeof r);
    spf_policy(&o, false, &r);
    CHECK_INT(r.verdict, FILTER_SCORE);
    CHECK(r.score == 1.0);
    CHECK_STR(r.reason, "SPF_SOFTFAIL");

    enum spf_result quiet[] = { SPF_R_PASS, SPF_R_NEUTRAL, SPF_R_NONE };
    for (size_t i = 0; i < 3; i++) {
        o.result = quiet[i];
        memset(&r, 0, sizeof r);
        spf_policy(&o, false, &r);
        CHECK_INT(r.verdict, FILTER_ACCEPT);
        CHECK_STR(r.reason, "");
    }
}

/* ---------------------------------------------------------------------- */
/* The record parser (RFC 7208 4.6.1, 5, 6, 7.1)                          */
/* ---------------------------------------------------------------------- */

static int valid(const char *rec)
{
    char why[160] = "";
    int rc = spf_record_check(rec, strlen(rec), why, sizeof why);
    if (rc < 0)
        fprintf(stderr, "  \"%s\": %s\n", rec, why);
    return rc;
}

TEST(parser_accepts_valid_records)
{
    static const char *const ok[] = {
        "v=spf1",
        "v=spf1 -all",
        "V=SPF1 IP4:192.0.2.1 MX -ALL",
        "v=spf1   a   mx  ",
        "v=spf1 a/0 mx/0 ip4:0.0.0.0/0 ip6:::/0 a//0 mx:%{d}/24//64 -all",
        "v=spf1 ip4:192.0.2.0/24 ip6:2001:db8::/32 ip6:::ffff:192.0.2.1 ~all",
        "v=spf1 include:_spf.example.com exists:%{ir}.%{l1r+-}._spf.%{d} ?all",
        "v=spf1 a:example.com. ptr ptr:example.com -all",
        "v=spf1 a:mail.1-2.test a:x.%{o} redirect=_spf.example.com",
        "v=spf1 exp=explain.%{d} foo=bar empty= x-y_z.q=%{c}%% -all",
        "v=spf1 exists:%{i}._ip.%{d2}",
        "v=spf1 a:%{d}%_%- -all",
    };
    for (size_t i = 0; i < sizeof ok / sizeof ok[0]; i++)
        CHECK_INT(valid(ok[i]), 0);
}

/* RFC 7208 4.6 / 4.6.1: any syntax error is a permerror. libspf2 accepts
 * several of these (empty a:, a single-label or numeric top label,
 * duplicate modifiers, leading zeros). */
TEST(parser_rejects_syntax_errors)
{
    static const char *const bad[] = {
        "v=spf1 a:",                       /* empty domain-spec */
        "v=spf1 a:foo",                    /* no "." toplabel (7.1) */
        "v=spf1 a:192.0.2.1",              /* numeric toplabel */
        "v=spf1 include:-foo.test-",
        "v=spf1 a:foo.-test",
        "v=spf1 exp=a.test exp=b.test",    /* 6: at most once */
        "v=spf1 redirect=a.test redirect=b.test",
        "v=spf1 -redirect=a.test",         /* modifiers have no qualifier */
        "v=spf1 ip4:192.0.2.1/024",        /* leading zero */
        "v=spf1 ip4:192.0.2.1/33",
        "v=spf1 ip6:2001:db8::/129",
        "v=spf1 a/33",
        "v=spf1 a//129",
        "v=spf1 a:x.test/",
        "v=spf1 ip4:192.0.2",
        "v=spf1 ip4:192.0.2.01",
        "v=spf1 ip4",
        "v=spf1 ip6:2001:db8:::1",
        "v=spf1 include",
        "v=spf1 exists",
        "v=spf1 all:x.test",
        "v=spf1 foo",                      /* unknown mechanism */
        "v=spf1 foo:bar.test",
        "v=spf1 a:%{z}.test",              /* unknown macro letter */
        "v=spf1 a:%{c}.test",              /* c only in explanations (7.2) */
        "v=spf1 a:%{d0}.test",             /* zero DIGIT transformer (7.3) */
        "v=spf1 a:%{d.test",
        "v=spf1 a:%x.test",
        "v=spf1 1a=b",
        "v=spf1 a:ex\tample.test",
        "v=spf1 a:\xc3\xa9.test",
        "v=spf1x -all",
        "spf1 -all",
    };
    for (size_t i = 0; i < sizeof bad / sizeof bad[0]; i++) {
        char why[160] = "";
        int rc = spf_record_check(bad[i], strlen(bad[i]), why, sizeof why);
        if (rc != -1)
            fprintf(stderr, "  accepted: \"%s\"\n", bad[i]);
        CHECK_INT(rc, -1);
        CHECK(why[0] != '\0');
    }
    char big[SPF_RECORD_MAX + 16];
    memset(big, 'a', sizeof big);
    memcpy(big, "v=spf1 ", 7);
    for (size_t i = 8; i < sizeof big; i += 2)
        big[i] = ' ';
    CHECK_INT(spf_record_check(big, sizeof big, NULL, 0), -1);
}

static const char *rewrite(const char *rec, int family)
{
    static char out[512];
    if (spf_record_rewrite(rec, strlen(rec), family, out, sizeof out) < 0)
        return "(failed)";
    return out;
}

/* RFC 7208 4.6.1 allows "/0"; libspf2 refuses it. */
TEST(rewrite_zero_prefixes)
{
    CHECK_STR(rewrite("v=spf1 -ip4:192.0.2.1/0", AF_INET),
              "v=spf1 -ip4:0.0.0.0/1 -ip4:128.0.0.0/1");
    CHECK_STR(rewrite("v=spf1 ip6:2001:db8::/0 -all", AF_INET6),
              "v=spf1 +ip6:::/1 +ip6:8000::/1 -all");
    CHECK_STR(rewrite("v=spf1 a/0 -all", AF_INET),
              "v=spf1 +exists:%{d}.a4.posthorn-cidr0.invalid -all");
    CHECK_STR(rewrite("v=spf1 ~mx:example.com./0//0", AF_INET6),
              "v=spf1 ~exists:example.com.mx6.posthorn-cidr0.invalid");
    /* "/0" for the other family only: that part is dropped. */
    CHECK_STR(rewrite("v=spf1 a:x.test/0//64", AF_INET6), "v=spf1 +a:x.test//64");
    CHECK_STR(rewrite("v=spf1 a:x.test/24//0", AF_INET), "v=spf1 +a:x.test/24");
    CHECK_STR(rewrite("v=spf1 mx//0", AF_INET), "v=spf1 +mx");
    /* Everything else verbatim. */
    CHECK_STR(rewrite("v=spf1  a:x.test/24  ?all ", AF_INET), "v=spf1 a:x.test/24 ?all");
    /* RFC 7208 6.1: redirect last, and dropped when there is an all. */
    CHECK_STR(rewrite("v=spf1 redirect=r.test a", AF_INET), "v=spf1 a redirect=r.test");
    CHECK_STR(rewrite("v=spf1 redirect=r.test -all", AF_INET), "v=spf1 -all");
    char small[12];
    CHECK_INT(spf_record_rewrite("v=spf1 a/0", 10, AF_INET, small, sizeof small), -1);
}

/* ---------------------------------------------------------------------- */
/* check_host                                                             */
/* ---------------------------------------------------------------------- */

static const struct zrec basic[] = {
    { "pass.test", DNS_TYPE_TXT, "v=spf1 ip4:192.0.2.0/24 ip6:2001:db8::/32 -all" },
    { "pass.test", DNS_TYPE_TXT, "some verification token" },
    { "soft.test", DNS_TYPE_TXT, "v=spf1 ip4:192.0.2.1 ~all" },
    { "neutral.test", DNS_TYPE_TXT, "v=spf1 ip4:192.0.2.1 ?all" },
    { "default.test", DNS_TYPE_TXT, "v=spf1 ip4:192.0.2.1" },
    { "bare.test", DNS_TYPE_TXT, "v=spf1" },
    { "other.test", DNS_TYPE_TXT, "v=spf10 -all" },
    { "other.test", DNS_TYPE_A, "192.0.2.1" },
    { "two.test", DNS_TYPE_TXT, "v=spf1 -all" },
    { "two.test", DNS_TYPE_TXT, "v=spf1 +all" },
    { "broken.test", DNS_TYPE_TXT, "v=spf1 a: -all" },
    { "temp.test", 0, "TEMPFAIL" },
    { "a.test", DNS_TYPE_TXT, "v=spf1 a -all" },
    { "a.test", DNS_TYPE_A, "198.51.100.7" },
    { "mx.test", DNS_TYPE_TXT, "v=spf1 mx -all" },
    { "mx.test", DNS_TYPE_MX, "10 mail.mx.test" },
    { "mail.mx.test", DNS_TYPE_A, "198.51.100.8" },
    { "mxtemp.test", DNS_TYPE_TXT, "v=spf1 mx:temp.test -all" },
    { "local.test", DNS_TYPE_TXT, "v=spf1 -all" },
    { NULL, 0, NULL },
};

TEST(basic_results)
{
    CHECK_RESULT(check(basic, "192.0.2.9", "u@pass.test"), SPF_R_PASS);
    CHECK_STR(last.domain, "pass.test");
    CHECK_STR(last.comment, "domain of pass.test designates 192.0.2.9 as permitted sender");
    CHECK_RESULT(check(basic, "2001:db8::5", "u@pass.test"), SPF_R_PASS);
    CHECK_RESULT(check(basic, "::ffff:192.0.2.9", "u@pass.test"), SPF_R_PASS);
    CHECK_RESULT(check(basic, "198.51.100.1", "u@pass.test"), SPF_R_FAIL);
    CHECK(strstr(last.explanation, "pass.test does not designate 198.51.100.1") != NULL);
    CHECK_RESULT(check(basic, "198.51.100.1", "u@soft.test"), SPF_R_SOFTFAIL);
    CHECK_RESULT(check(basic, "198.51.100.1", "u@neutral.test"), SPF_R_NEUTRAL);
    CHECK_RESULT(check(basic, "198.51.100.1", "u@default.test"), SPF_R_NEUTRAL);
    CHECK_RESULT(check(basic, "198.51.100.1", "u@nosuch.test"), SPF_R_NONE);
    CHECK_RESULT(check(basic, "198.51.100.7", "u@a.test"), SPF_R_PASS);
    CHECK_RESULT(check(basic, "198.51.100.8", "u@a.test"), SPF_R_FAIL);
    CHECK_RESULT(check(basic, "198.51.100.8", "u@mx.test"), SPF_R_PASS);
    CHECK_RESULT(check(basic, "198.51.100.7", "u@mx.test"), SPF_R_FAIL);
    /* RFC 7208 3.1: only TXT is asked, never type 99. */
    CHECK_INT(other_type_queries, 0);
}

/* RFC 7208 4.5: "v=spf1" alone is a record; "v=spf10" is not. */
TEST(record_selection)
{
    CHECK_RESULT(check(basic, "198.51.100.1", "u@bare.test"), SPF_R_NEUTRAL);
    CHECK_RESULT(check(basic, "192.0.2.1", "u@other.test"), SPF_R_NONE);
    CHECK(strstr(last.comment, "does not provide an SPF record") != NULL);
    /* Several SPF records: permerror. */
    CHECK_RESULT(check(basic, "198.51.100.1", "u@two.test"), SPF_R_PERMERROR);
    CHECK(strstr(last.problem, "more than one") != NULL);
}

/* RFC 7208 4.6: a syntax error is a permerror (libspf2: neutral or none). */
TEST(syntax_error_is_permerror)
{
    CHECK_RESULT(check(basic, "198.51.100.1", "u@broken.test"), SPF_R_PERMERROR);
    CHECK(strstr(last.comment, "error in processing") != NULL);
}

/* RFC 7208 2.6.6 / 4.4: DNS failures are temperror. */
TEST(dns_errors_are_temperror)
{
    CHECK_RESULT(check(basic, "198.51.100.1", "u@temp.test"), SPF_R_TEMPERROR);
    CHECK_RESULT(check(basic, "198.51.100.1", "u@mxtemp.test"), SPF_R_TEMPERROR);
}

/* RFC 7208 4.3: a malformed or single-label domain gives none, no query. */
TEST(malformed_identity_is_none)
{
    CHECK_RESULT(check(basic, "192.0.2.1", "u@localhost"), SPF_R_NONE);
    CHECK_INT(queries, 0);
    CHECK_RESULT(check(basic, "192.0.2.1", "u@a..test"), SPF_R_NONE);
    CHECK_RESULT(check3(basic, "192.0.2.1", "[192.0.2.1]", ""), SPF_R_NONE);
    CHECK_INT(queries, 0);
}

/* RFC 7208 2.4: MAIL FROM <> checks postmaster@<HELO>. */
static const struct zrec helo_zone[] = {
    { "mail.helo.test", DNS_TYPE_TXT, "v=spf1 exists:%{l}.%{d}.e.test -all" },
    { "postmaster.mail.helo.test.e.test", DNS_TYPE_A, "127.0.0.2" },
    { NULL, 0, NULL },
};

TEST(null_sender_uses_helo)
{
    CHECK_RESULT(check3(helo_zone, "198.51.100.1", "mail.helo.test", ""), SPF_R_PASS);
    CHECK(last.helo_identity);
    CHECK_STR(last.domain, "mail.helo.test");
    CHECK_RESULT(check3(helo_zone, "198.51.100.1", "mail.helo.test", "x@mail.helo.test"),
                 SPF_R_FAIL);
    CHECK(!last.helo_identity);
}

/* libspf2 passes 127.0.0.0/8 without looking; RFC 7208 has no such rule. */
TEST(loopback_is_checked)
{
    CHECK_RESULT(check(basic, "127.0.0.1", "u@local.test"), SPF_R_FAIL);
    CHECK_RESULT(check(basic, "::1", "u@local.test"), SPF_R_FAIL);
}

/* RFC 7208 5.3, 5.4, 5.6 with the 4.6.1 ABNF: "/0" prefixes (libspf2
 * refuses the record). */
static const struct zrec zero_zone[] = {
    { "a0.test", DNS_TYPE_TXT, "v=spf1 a/0 -all" },
    { "a0.test", DNS_TYPE_A, "192.0.2.1" },
    { "a0none.test", DNS_TYPE_TXT, "v=spf1 a/0 -all" },
    { "a0none.test", DNS_TYPE_AAAA, "2001:db8::1" },
    { "a6.test", DNS_TYPE_TXT, "v=spf1 a:h6.a6.test//0 -all" },
    { "h6.a6.test", DNS_TYPE_AAAA, "2001:db8::1" },
    { "a4only.test", DNS_TYPE_TXT, "v=spf1 a:h6.a6.test/0 -all" },
    { "mx0.test", DNS_TYPE_TXT, "v=spf1 mx/0 -all" },
    { "mx0.test", DNS_TYPE_MX, "10 nohost.mx0.test" },
    { "mx0.test", DNS_TYPE_MX, "20 host.mx0.test" },
    { "host.mx0.test", DNS_TYPE_A, "192.0.2.3" },
    { "mx0none.test", DNS_TYPE_TXT, "v=spf1 mx/0 -all" },
    { "mx0none.test", DNS_TYPE_MX, "10 nohost.mx0.test" },
    { "ip0.test", DNS_TYPE_TXT, "v=spf1 ?ip4:10.0.0.0/0 ~ip6:::/0 -all" },
    { NULL, 0, NULL },
};

TEST(zero_prefix_lengths)
{
    CHECK_RESULT(check(zero_zone, "203.0.113.50", "u@a0.test"), SPF_R_PASS);
    CHECK_RESULT(check(zero_zone, "203.0.113.50", "u@a0none.test"), SPF_R_FAIL);
    CHECK_RESULT(check(zero_zone, "2001:db8:ffff::9", "u@a6.test"), SPF_R_PASS);
    CHECK_RESULT(check(zero_zone, "203.0.113.50", "u@a6.test"), SPF_R_FAIL);
    /* a/0 only concerns IPv4; an IPv6 client is matched exactly. */
    CHECK_RESULT(check(zero_zone, "2001:db8::1", "u@a4only.test"), SPF_R_PASS);
    CHECK_RESULT(check(zero_zone, "2001:db8::2", "u@a4only.test"), SPF_R_FAIL);
    CHECK_RESULT(check(zero_zone, "203.0.113.50", "u@mx0.test"), SPF_R_PASS);
    CHECK_RESULT(check(zero_zone, "203.0.113.50", "u@mx0none.test"), SPF_R_FAIL);
    CHECK_RESULT(check(zero_zone, "203.0.113.50", "u@ip0.test"), SPF_R_NEUTRAL);
    CHECK_RESULT(check(zero_zone, "2001:db8::7", "u@ip0.test"), SPF_R_SOFTFAIL);
}

/* RFC 7208 4.6.4: more than two void lookups is a permerror (libspf2 has
 * no such limit). */
static const struct zrec void_zone[] = {
    { "void2.test", DNS_TYPE_TXT, "v=spf1 a:nx1.void.test mx:nx2.void.test +all" },
    { "void3.test", DNS_TYPE_TXT,
      "v=spf1 a:nx1.void.test a:empty.void.test exists:nx3.void.test +all" },
    { "empty.void.test", DNS_TYPE_TXT, "not an address" },
    { "voidinc.test", DNS_TYPE_TXT, "v=spf1 a:nx1.void.test include:inc.void.test +all" },
    { "inc.void.test", DNS_TYPE_TXT, "v=spf1 a:nx2.void.test a:nx3.void.test -all" },
    { NULL, 0, NULL },
};

TEST(void_lookup_limit)
{
    CHECK_RESULT(check(void_zone, "192.0.2.1", "u@void2.test"), SPF_R_PASS);
    CHECK_RESULT(check(void_zone, "192.0.2.1", "u@void3.test"), SPF_R_PERMERROR);
    CHECK(strstr(last.problem, "void") != NULL);
    /* Counted across include. */
    CHECK_RESULT(check(void_zone, "192.0.2.1", "u@voidinc.test"), SPF_R_PERMERROR);
}

/* RFC 7208 4.6.4: at most 10 DNS-querying terms in the whole evaluation.
 * libspf2 counts per record, so an include chain escapes its limit (here it
 * would answer pass). */
static const struct zrec limit_zone[] = {
    { "ten.test", DNS_TYPE_TXT, "v=spf1 include:l1.ten.test ip4:192.0.2.1 -all" },
    { "l1.ten.test", DNS_TYPE_TXT,
      "v=spf1 a:h.ten.test a:h.ten.test a:h.ten.test a:h.ten.test a:h.ten.test "
      "include:l2.ten.test -all" },
    { "l2.ten.test", DNS_TYPE_TXT, "v=spf1 a:h.ten.test mx:h.ten.test exists:h.ten.test -all" },
    { "eleven.test", DNS_TYPE_TXT, "v=spf1 include:l1.eleven.test ip4:192.0.2.1 -all" },
    { "l1.eleven.test", DNS_TYPE_TXT,
      "v=spf1 a:h.ten.test a:h.ten.test a:h.ten.test a:h.ten.test a:h.ten.test "
      "a:h.ten.test include:l2.ten.test -all" },
    { "h.ten.test", DNS_TYPE_A, "198.51.100.99" },
    { "h.ten.test", DNS_TYPE_MX, "10 h.ten.test" },
    { "loop1.test", DNS_TYPE_TXT, "v=spf1 include:loop2.test -all" },
    { "loop2.test", DNS_TYPE_TXT, "v=spf1 include:loop1.test -all" },
    { "self.test", DNS_TYPE_TXT, "v=spf1 redirect=self.test" },
    { "mx11.test", DNS_TYPE_TXT, "v=spf1 mx -all" },
    { "mx11.test", DNS_TYPE_MX, "1 h.ten.test" }, { "mx11.test", DNS_TYPE_MX, "2 h.ten.test" },
    { "mx11.test", DNS_TYPE_MX, "3 h.ten.test" }, { "mx11.test", DNS_TYPE_MX, "4 h.ten.test" },
    { "mx11.test", DNS_TYPE_MX, "5 h.ten.test" }, { "mx11.test", DNS_TYPE_MX, "6 h.ten.test" },
    { "mx11.test", DNS_TYPE_MX, "7 h.ten.test" }, { "mx11.test", DNS_TYPE_MX, "8 h.ten.test" },
    { "mx11.test", DNS_TYPE_MX, "9 h.ten.test" }, { "mx11.test", DNS_TYPE_MX, "10 h.ten.test" },
    { "mx11.test", DNS_TYPE_MX, "11 h.ten.test" },
    { NULL, 0, NULL },
};

TEST(dns_term_limit)
{
    /* include, 5 a, include, a, mx (its address lookup is part of it),
     * exists: exactly 10. */
    CHECK_RESULT(check(limit_zone, "192.0.2.1", "u@ten.test"), SPF_R_PASS);
    CHECK_RESULT(check(limit_zone, "192.0.2.1", "u@eleven.test"), SPF_R_PERMERROR);
    CHECK(strstr(last.problem, "DNS-querying terms") != NULL);
    /* Include loops end at the limit. */
    CHECK_RESULT(check(limit_zone, "192.0.2.1", "u@loop1.test"), SPF_R_PERMERROR);
    CHECK_RESULT(check(limit_zone, "192.0.2.1", "u@self.test"), SPF_R_PERMERROR);
    /* More than 10 MX records: permerror. */
    CHECK_RESULT(check(limit_zone, "192.0.2.1", "u@mx11.test"), SPF_R_PERMERROR);
}

/* RFC 7208 5.2 and 6.1: include or redirect to a domain without an SPF
 * record is a permerror; a DNS error there is a temperror. */
static const struct zrec include_zone[] = {
    { "inc.test", DNS_TYPE_TXT, "v=spf1 include:pass.inc.test -all" },
    { "pass.inc.test", DNS_TYPE_TXT, "v=spf1 ip4:192.0.2.0/24 -all" },
    { "incnone.test", DNS_TYPE_TXT, "v=spf1 include:none.inc.test +all" },
    { "none.inc.test", DNS_TYPE_A, "192.0.2.1" },
    { "incnx.test", DNS_TYPE_TXT, "v=spf1 include:nx.inc.test +all" },
    { "redirnone.test", DNS_TYPE_TXT, "v=spf1 redirect=none.inc.test" },
    { "inctemp.test", DNS_TYPE_TXT, "v=spf1 include:temp.inc.test +all" },
    { "temp.inc.test", 0, "TEMPFAIL" },
    { "incbad.test", DNS_TYPE_TXT, "v=spf1 include:bad.inc.test +all" },
    { "bad.inc.test", DNS_TYPE_TXT, "v=spf1 ip4:300.0.0.1 -all" },
    { "redir.test", DNS_TYPE_TXT, "v=spf1 redirect=pass.inc.test ip4:198.51.100.1" },
    { "redirall.test", DNS_TYPE_TXT, "v=spf1 -all redirect=pass.inc.test" },
    { NULL, 0, NULL },
};

TEST(include_and_redirect_targets)
{
    CHECK_RESULT(check(include_zone, "192.0.2.1", "u@inc.test"), SPF_R_PASS);
    CHECK_RESULT(check(include_zone, "198.51.100.1", "u@inc.test"), SPF_R_FAIL);
    CHECK_RESULT(check(include_zone, "192.0.2.1", "u@incnone.test"), SPF_R_PERMERROR);
    CHECK_RESULT(check(include_zone, "192.0.2.1", "u@incnx.test"), SPF_R_PERMERROR);
    CHECK_RESULT(check(include_zone, "192.0.2.1", "u@redirnone.test"), SPF_R_PERMERROR);
    CHECK_RESULT(check(include_zone, "192.0.2.1", "u@inctemp.test"), SPF_R_TEMPERROR);
    CHECK_RESULT(check(include_zone, "192.0.2.1", "u@incbad.test"), SPF_R_PERMERROR);
    /* RFC 7208 6.1: redirect applies after the mechanisms, wherever it is
     * written, and not at all when there is an "all". */
    CHECK_RESULT(check(include_zone, "198.51.100.1", "u@redir.test"), SPF_R_PASS);
    CHECK_RESULT(check(include_zone, "192.0.2.1", "u@redir.test"), SPF_R_PASS);
    CHECK_RESULT(check(include_zone, "203.0.113.1", "u@redir.test"), SPF_R_FAIL);
    CHECK_RESULT(check(include_zone, "192.0.2.1", "u@redirall.test"), SPF_R_FAIL);
}

/* RFC 7208 4.6.4: more than 10 PTR names, the rest are ignored (libspf2
 * gives permerror). */
static const struct zrec ptr_zone[] = {
    { "ptr.test", DNS_TYPE_TXT, "v=spf1 ptr:good.test -all" },
    { "1.100.51.198.in-addr.arpa", DNS_TYPE_PTR, "n1.other.test" },
    { "1.100.51.198.in-addr.arpa", DNS_TYPE_PTR, "n2.other.test" },
    { "1.100.51.198.in-addr.arpa", DNS_TYPE_PTR, "mail.good.test" },
    { "1.100.51.198.in-addr.arpa", DNS_TYPE_PTR, "n4.other.test" },
    { "1.100.51.198.in-addr.arpa", DNS_TYPE_PTR, "n5.other.test" },
    { "1.100.51.198.in-addr.arpa", DNS_TYPE_PTR, "n6.other.test" },
    { "1.100.51.198.in-addr.arpa", DNS_TYPE_PTR, "n7.other.test" },
    { "1.100.51.198.in-addr.arpa", DNS_TYPE_PTR, "n8.other.test" },
    { "1.100.51.198.in-addr.arpa", DNS_TYPE_PTR, "n9.other.test" },
    { "1.100.51.198.in-addr.arpa", DNS_TYPE_PTR, "n10.other.test" },
    { "1.100.51.198.in-addr.arpa", DNS_TYPE_PTR, "n11.good.test" },
    { "1.100.51.198.in-addr.arpa", DNS_TYPE_PTR, "n12.other.test" },
    { "2.100.51.198.in-addr.arpa", DNS_TYPE_PTR, "n1.other.test" },
    { "2.100.51.198.in-addr.arpa", DNS_TYPE_PTR, "n2.other.test" },
    { "2.100.51.198.in-addr.arpa", DNS_TYPE_PTR, "n3.other.test" },
    { "2.100.51.198.in-addr.arpa", DNS_TYPE_PTR, "n4.other.test" },
    { "2.100.51.198.in-addr.arpa", DNS_TYPE_PTR, "n5.other.test" },
    { "2.100.51.198.in-addr.arpa", DNS_TYPE_PTR, "n6.other.test" },
    { "2.100.51.198.in-addr.arpa", DNS_TYPE_PTR, "n7.other.test" },
    { "2.100.51.198.in-addr.arpa", DNS_TYPE_PTR, "n8.other.test" },
    { "2.100.51.198.in-addr.arpa", DNS_TYPE_PTR, "n9.other.test" },
    { "2.100.51.198.in-addr.arpa", DNS_TYPE_PTR, "n10.other.test" },
    { "2.100.51.198.in-addr.arpa", DNS_TYPE_PTR, "n11.good.test" },
    { "mail.good.test", DNS_TYPE_A, "198.51.100.1" },
    { "n11.good.test", DNS_TYPE_A, "198.51.100.2" },
    { NULL, 0, NULL },
};

TEST(ptr_names_beyond_ten_ignored)
{
    CHECK_RESULT(check(ptr_zone, "198.51.100.1", "u@ptr.test"), SPF_R_PASS);
    /* The only validating name is the 11th: ignored, so no match. */
    CHECK_RESULT(check(ptr_zone, "198.51.100.2", "u@ptr.test"), SPF_R_FAIL);
}

/* RFC 7208 6.2: exp= is used only when its name has exactly one TXT
 * record with a valid explain-string. */
static const struct zrec exp_zone[] = {
    { "exp.test", DNS_TYPE_TXT, "v=spf1 exp=why.exp.test -all" },
    { "why.exp.test", DNS_TYPE_TXT, "%{i} is not allowed to send for %{d}" },
    { "exp2.test", DNS_TYPE_TXT, "v=spf1 exp=two.exp.test -all" },
    { "two.exp.test", DNS_TYPE_TXT, "first" },
    { "two.exp.test", DNS_TYPE_TXT, "second" },
    { "expbad.test", DNS_TYPE_TXT, "v=spf1 exp=bad.exp.test -all" },
    { "bad.exp.test", DNS_TYPE_TXT, "broken %{z} macro" },
    { "expnx.test", DNS_TYPE_TXT, "v=spf1 a:nx1.exp.test a:nx2.exp.test exp=nx.exp.test -all" },
    { NULL, 0, NULL },
};

TEST(explanation)
{
    CHECK_RESULT(check(exp_zone, "198.51.100.1", "u@exp.test"), SPF_R_FAIL);
    CHECK_STR(last.explanation, "198.51.100.1 is not allowed to send for exp.test");
    CHECK_RESULT(check(exp_zone, "198.51.100.1", "u@exp2.test"), SPF_R_FAIL);
    CHECK_STR(last.explanation, "exp2.test does not designate 198.51.100.1 as permitted sender");
    CHECK_RESULT(check(exp_zone, "198.51.100.1", "u@expbad.test"), SPF_R_FAIL);
    CHECK_STR(last.explanation, "expbad.test does not designate 198.51.100.1 as permitted sender");
    /* The exp lookup comes after the evaluation: it is neither a term nor
     * a void lookup (two voids before it, the result stays fail). */
    CHECK_RESULT(check(exp_zone, "198.51.100.1", "u@expnx.test"), SPF_R_FAIL);
}

/* The filter hook end to end without a resolver: a DNS failure, so the
 * headers of a temperror, and SPF_DNS_ERROR decides the verdict. */
TEST(hook_headers_and_dns_error_setting)
{
    struct settings st;
    memset(&st, 0, sizeof st);
    st.hostname = "mx.posthorn.test";
    st.enable_policyd_spf = true;
    st.spf_dns_error = SPF_DNS_ERROR_TEMPFAIL;
    struct server srv;
    memset(&srv, 0, sizeof srv);
    srv.settings = &st;
    struct sockaddr_storage ss = client_addr("192.0.2.1");
    struct buf headers = BUF_INIT, ar = BUF_INIT;
    struct filter_txn t = {
        .srv = &srv,
        .client = &ss,
        .client_ip = "192.0.2.1",
        .helo = "client.example",
        .mail_from = "Some.User@example.org",
        .add_headers = &headers,
        .auth_results = &ar,
    };
    struct filter_result r;
    CHECK(spf_filter.enabled(&st));
    CHECK(spf_filter.hook[FILTER_MAIL] != NULL);
    CHECK(spf_filter.hook[FILTER_CONNECT] == NULL);
    CHECK(!spf_filter.for_submission);
    memset(&r, 0, sizeof r);
    spf_filter.hook[FILTER_MAIL](&t, &r);
    CHECK_INT(r.verdict, FILTER_TEMPFAIL);
    CHECK_INT(r.code, 451);
    const char *h = buf_cstr(&headers);
    CHECK(h && strncmp(h, "Received-SPF: temperror (mx.posthorn.test: error in processing "
                          "during lookup of example.org: ", 90) == 0);
    CHECK(h && strstr(h, "\r\n\tclient-ip=192.0.2.1; envelope-from=\"Some.User@example.org\"; "
                         "helo=client.example;\r\n\treceiver=mx.posthorn.test; "
                         "identity=mailfrom; problem=\"") != NULL);
    CHECK(h && strlen(h) > 2 && strcmp(h + strlen(h) - 2, "\r\n") == 0);
    CHECK_STR(buf_cstr(&ar), "spf=temperror smtp.mailfrom=example.org");

    st.spf_dns_error = SPF_DNS_ERROR_SKIP;
    buf_reset(&headers);
    buf_reset(&ar);
    t.mail_from = "";
    memset(&r, 0, sizeof r);
    spf_filter.hook[FILTER_MAIL](&t, &r);
    CHECK_INT(r.verdict, FILTER_ACCEPT);
    CHECK_STR(r.reason, "SPF_SKIPPED");
    CHECK_STR(buf_cstr(&ar), "spf=temperror smtp.helo=client.example");
    CHECK(strstr(buf_cstr(&headers), "envelope-from=\"postmaster@client.example\"") != NULL);
    st.enable_policyd_spf = false;
    CHECK(!spf_filter.enabled(&st));
    buf_free(&headers);
    buf_free(&ar);
}

int main(void)
{
    if (getenv("TEST_SPF_DEBUG"))
        log_set_level(LOG_TRACE);
    spf_init();
    RUN(libspf2_results_mapped_to_rfc_seven);
    RUN(policy);
    RUN(parser_accepts_valid_records);
    RUN(parser_rejects_syntax_errors);
    RUN(rewrite_zero_prefixes);
    RUN(basic_results);
    RUN(record_selection);
    RUN(syntax_error_is_permerror);
    RUN(dns_errors_are_temperror);
    RUN(malformed_identity_is_none);
    RUN(null_sender_uses_helo);
    RUN(loopback_is_checked);
    RUN(zero_prefix_lengths);
    RUN(void_lookup_limit);
    RUN(dns_term_limit);
    RUN(include_and_redirect_targets);
    RUN(ptr_names_beyond_ten_ignored);
    RUN(explanation);
    RUN(hook_headers_and_dns_error_setting);
    return test_summary();
}
