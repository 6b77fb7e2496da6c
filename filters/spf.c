/* spf: libspf2 evaluates; we fetch, select, check and rewrite the records,
 * answer its DNS queries, count its lookups and decide what its answers
 * mean (see spf.h for the corrections and why).
 *
 * One libspf2 server object per check: it is cheap (two small macro
 * compilations), and libspf2 says nothing about sharing one between
 * threads. Its DNS layer is a struct on the check's stack whose hook is
 * the check's context, so checks share no state at all. */
#include "spf.h"

#include <arpa/inet.h>
#include <netdb.h>
#include <netinet/in.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <time.h>

#include <spf2/spf.h>
#include <spf2/spf_dns.h>

#include "ascii.h"
#include "log.h"
#include "server.h"
#include "spf_record.h"
#include "util.h"

/* The explanation of a fail when the domain gives none (RFC 7208 6.2
 * leaves it to the receiver). */
#define DEFAULT_EXP "%{o} does not designate %{i} as permitted sender"
#define DEFAULT_EXP_MACRO "%{o}%_does%_not%_designate%_%{i}%_as%_permitted%_sender"
#define PTR_NAMES_MAX 10   /* RFC 7208 4.6.4: further names are ignored */
#define MX_NAMES_MAX 10    /* RFC 7208 4.6.4: more is a permerror */

/* ---------------------------------------------------------------------- */
/* Characters                                                             */
/* ---------------------------------------------------------------------- */

/* Copies printable ASCII (anything else becomes '?'), truncating. */
static void copy_printable(char *out, size_t outlen, const char *in)
{
    size_t o = 0;
    for (; in && *in && o + 1 < outlen; in++)
        out[o++] = (*in >= 0x20 && *in < 0x7f) ? *in : '?';
    out[o] = '\0';
}

/* ---------------------------------------------------------------------- */
/* Results                                                                */
/* ---------------------------------------------------------------------- */

const char *spf_result_name(enum spf_result r)
{
    switch (r) {
    case SPF_R_NONE: return "none";
    case SPF_R_NEUTRAL: return "neutral";
    case SPF_R_PASS: return "pass";
    case SPF_R_FAIL: return "fail";
    case SPF_R_SOFTFAIL: return "softfail";
    case SPF_R_TEMPERROR: return "temperror";
    case SPF_R_PERMERROR: return "permerror";
    }
    return "permerror";
}

enum spf_result spf_map_libspf2(int result, int errcode)
{
    switch ((SPF_result_t)result) {
    case SPF_RESULT_PASS: return SPF_R_PASS;
    case SPF_RESULT_FAIL: return SPF_R_FAIL;
    case SPF_RESULT_SOFTFAIL: return SPF_R_SOFTFAIL;
    case SPF_RESULT_NEUTRAL: return SPF_R_NEUTRAL;
    case SPF_RESULT_NONE: return SPF_R_NONE;
    case SPF_RESULT_TEMPERROR: return SPF_R_TEMPERROR;
    case SPF_RESULT_PERMERROR: return SPF_R_PERMERROR;
    case SPF_RESULT_INVALID:
    default:
        /* libspf2's "invalid": a DNS failure is transient, anything else
         * (syntax, limits, internal) is not. */
        if (errcode == SPF_E_DNS_ERROR)
            return SPF_R_TEMPERROR;
        if (errcode == SPF_E_NO_MEMORY)
            return SPF_R_TEMPERROR;
        return SPF_R_PERMERROR;
    }
}

/* ---------------------------------------------------------------------- */
/* The check's context and libspf2's DNS layer                            */
/* ---------------------------------------------------------------------- */

struct spf_ctx {
    SPF_dns_server_t layer;          /* hook points back here */
    const struct spf_resolver *dns;
    SPF_server_t *server;
    SPF_request_t *req;
    int family;
    struct in_addr v4;
    struct in6_addr v6;
    double started;
    int terms, voids;
    bool in_exp;                     /* explanation lookups: not counted */
    bool aborted;                    /* our own verdict overrides libspf2's */
    enum spf_result forced;
    char problem[160];
    /* Names the current mx / ptr term looks up next: those address queries
     * are part of that term, not terms of their own. */
    char *follow[MX_NAMES_MAX + 1];
    size_t nfollow, next_follow;
};

static double now_mono(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec + (double)ts.tv_nsec / 1e9;
}

static void ctx_abort(struct spf_ctx *c, enum spf_result r, const char *fmt, ...)
    __attribute__((format(printf, 3, 4)));

/* Ends the evaluation with r: from here every lookup fails, libspf2 unwinds
 * with an error, and spf_check reports r instead. The first reason wins. */
static void ctx_abort(struct spf_ctx *c, enum spf_result r, const char *fmt, ...)
{
    if (c->aborted)
        return;
    c->aborted = true;
    c->forced = r;
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(c->problem, sizeof c->problem, fmt, ap);
    va_end(ap);
}

static void follow_clear(struct spf_ctx *c)
{
    for (size_t i = 0; i < c->nfollow; i++)
        free(c->follow[i]);
    c->nfollow = c->next_follow = 0;
}

static void follow_set(struct spf_ctx *c, const struct dns_answer *a, size_t max)
{
    follow_clear(c);
    for (size_t i = 0; i < a->n && i < max && c->nfollow < MX_NAMES_MAX; i++) {
        c->follow[c->nfollow] = strdup(a->rec[i].text ? a->rec[i].text : "");
        if (!c->follow[c->nfollow])
            break;
        c->nfollow++;
    }
}

/* Whether an address lookup of name belongs to the current mx / ptr term. */
static bool follow_take(struct spf_ctx *c, const char *name)
{
    if (c->next_follow < c->nfollow && strcasecmp(c->follow[c->next_follow], name) == 0) {
        c->next_follow++;
        return true;
    }
    follow_clear(c);
    return false;
}

/* A name we may ask for (RFC 7208 4.3: anything else does not exist). */
static bool name_ok(const char *name)
{
    size_t len = strlen(name), label = 0;
    if (len > 0 && name[len - 1] == '.')
        len--;
    if (len == 0 || len > 253)
        return false;
    for (size_t i = 0; i < len; i++) {
        unsigned char ch = (unsigned char)name[i];
        if (ch == '.') {
            if (label == 0)
                return false;
            label = 0;
        } else if (ch <= 0x20 || ch >= 0x7f || ch == '\\' || ++label > 63) {
            return false;
        }
    }
    return label > 0;
}

static enum dns_status ctx_query(struct spf_ctx *c, const char *name, int type,
                                 struct dns_answer *a)
{
    memset(a, 0, sizeof *a);
    if (!name_ok(name)) {
        a->status = DNS_NXDOMAIN;
        return a->status;
    }
    if (!c->in_exp && now_mono() - c->started > SPF_TIME_LIMIT) {
        ctx_abort(c, SPF_R_TEMPERROR, "no result within %.0f seconds", SPF_TIME_LIMIT);
        a->status = DNS_TEMPFAIL;
        return a->status;
    }
    return c->dns->query(c->dns->arg, name, type, a);
}

static bool count_term(struct spf_ctx *c)
{
    if (++c->terms > SPF_TERM_LIMIT) {
        ctx_abort(c, SPF_R_PERMERROR, "more than %d DNS-querying terms (RFC 7208 4.6.4)",
                  SPF_TERM_LIMIT);
        return false;
    }
    return true;
}

static bool count_void(struct spf_ctx *c, enum dns_status st)
{
    if ((st == DNS_NXDOMAIN || st == DNS_NODATA) && ++c->voids > SPF_VOID_LIMIT) {
        ctx_abort(c, SPF_R_PERMERROR, "more than %d void lookups (RFC 7208 4.6.4)",
                  SPF_VOID_LIMIT);
        return false;
    }
    return true;
}

static SPF_dns_stat_t herrno_of(enum dns_status st)
{
    switch (st) {
    case DNS_OK: return NETDB_SUCCESS;
    case DNS_NXDOMAIN: return HOST_NOT_FOUND;
    case DNS_NODATA: return NO_DATA;
    case DNS_TEMPFAIL:
    case DNS_PERMFAIL:   /* a malformed answer: a DNS error, not a verdict */
    default: return TRY_AGAIN;
    }
}

static SPF_dns_rr_t *rr_status(SPF_dns_server_t *layer, const char *domain, ns_type type,
                               SPF_dns_stat_t herrno)
{
    SPF_dns_rr_t *rr = SPF_dns_rr_new_init(layer, domain, type, 0, herrno);
    if (!rr)   /* libspf2 cannot take NULL from a layer: it would abort anyway */
        log_error("spf: out of memory in the DNS layer");
    return rr;
}

/* libspf2's form of an answer (at most max records). */
static SPF_dns_rr_t *rr_from(SPF_dns_server_t *layer, const char *domain, ns_type type,
                             const struct dns_answer *a, size_t max)
{
    SPF_dns_rr_t *rr = rr_status(layer, domain, type, herrno_of(a->status));
    if (!rr || a->status != DNS_OK)
        return rr;
    uint32_t ttl = UINT32_MAX;
    for (size_t i = 0; i < a->n && i < max; i++) {
        const struct dns_record *r = &a->rec[i];
        size_t need = r->text ? strlen(r->text) + 1 : sizeof(SPF_dns_rr_data_t);
        if (SPF_dns_rr_buf_realloc(rr, (int)i, need) != SPF_E_SUCCESS) {
            rr->herrno = TRY_AGAIN;
            rr->num_rr = 0;
            return rr;
        }
        if (type == ns_t_a)
            rr->rr[i]->a = ((const struct sockaddr_in *)&r->addr)->sin_addr;
        else if (type == ns_t_aaaa)
            rr->rr[i]->aaaa = ((const struct sockaddr_in6 *)&r->addr)->sin6_addr;
        else
            memcpy(rr->rr[i]->txt, r->text ? r->text : "", need);
        rr->num_rr = (int)i + 1;
        if (r->ttl < ttl)
            ttl = r->ttl;
    }
    rr->ttl = ttl == UINT32_MAX ? 0 : ttl;
    return rr;
}

/* A name made by spf_record_rewrite: "<domain>.<tag>" SPF_CIDR0_SUFFIX. */
static bool magic_parse(const char *name, char *domain, size_t dlen, char *tag, size_t tlen)
{
    size_t n = strlen(name), sl = strlen(SPF_CIDR0_SUFFIX);
    if (n <= sl || strcasecmp(name + n - sl, SPF_CIDR0_SUFFIX) != 0)
        return false;
    n -= sl;
    size_t dot = n;
    while (dot > 0 && name[dot - 1] != '.')
        dot--;
    if (dot < 2 || n - dot >= tlen || dot - 1 >= dlen)
        return false;
    for (size_t i = dot; i < n; i++)
        tag[i - dot] = ascii_lower(name[i]);
    tag[n - dot] = '\0';
    if (strcmp(tag, "a4") && strcmp(tag, "a6") && strcmp(tag, "mx4") && strcmp(tag, "mx6"))
        return false;
    memcpy(domain, name, dot - 1);
    domain[dot - 1] = '\0';
    return true;
}

/* Whether `domain` (or, for mx, any of its MX hosts) has an address of
 * the family: the meaning of a "/0" a or mx term. Returns 1, 0, or -1
 * after a DNS error or a limit (the context says which). */
static int magic_match(struct spf_ctx *c, const char *domain, const char *tag)
{
    int atype = strchr(tag, '6') ? DNS_TYPE_AAAA : DNS_TYPE_A;
    bool mx = tag[0] == 'm';
    struct dns_answer a;
    enum dns_status st = ctx_query(c, domain, mx ? DNS_TYPE_MX : atype, &a);
    int match = 0;
    if (!count_void(c, st)) {
        match = -1;
    } else if (st == DNS_TEMPFAIL || st == DNS_PERMFAIL) {
        match = -1;
        ctx_abort(c, SPF_R_TEMPERROR, "DNS error looking up %s", domain);
    } else if (st == DNS_OK && !mx) {
        match = 1;
    } else if (st == DNS_OK && a.n > MX_NAMES_MAX) {
        match = -1;
        ctx_abort(c, SPF_R_PERMERROR, "more than %d MX records for %s (RFC 7208 4.6.4)",
                  MX_NAMES_MAX, domain);
    } else if (st == DNS_OK) {
        for (size_t i = 0; i < a.n && match == 0; i++) {
            struct dns_answer h;
            enum dns_status hs = ctx_query(c, a.rec[i].text, atype, &h);
            if (hs == DNS_OK)
                match = 1;
            else if (hs == DNS_TEMPFAIL || hs == DNS_PERMFAIL) {
                match = -1;
                ctx_abort(c, SPF_R_TEMPERROR, "DNS error looking up %s", a.rec[i].text);
            }
            dns_answer_free(&h);
        }
    }
    dns_answer_free(&a);
    return match;
}

static SPF_dns_rr_t *magic_lookup(struct spf_ctx *c, SPF_dns_server_t *layer,
                                  const char *domain, ns_type type, const char *real,
                                  const char *tag)
{
    int m = magic_match(c, real, tag);
    if (m < 0)
        return rr_status(layer, domain, type, TRY_AGAIN);
    if (m == 0)
        return rr_status(layer, domain, type, NO_DATA);
    /* One record: libspf2's exists only asks whether there is any. */
    struct dns_answer one = { .status = DNS_OK, .n = 1 };
    struct dns_record rec;
    memset(&rec, 0, sizeof rec);
    rec.addr.ss_family = AF_INET;
    one.rec = &rec;
    return rr_from(layer, domain, type, &one, 1);
}

static int dns_type_of(ns_type type)
{
    switch (type) {
    case ns_t_a: return DNS_TYPE_A;
    case ns_t_aaaa: return DNS_TYPE_AAAA;
    case ns_t_mx: return DNS_TYPE_MX;
    case ns_t_txt: return DNS_TYPE_TXT;
    case ns_t_ptr: return DNS_TYPE_PTR;
    default: return -1;   /* type 99 (SPF): never asked (RFC 7208 3.1) */
    }
}

static SPF_dns_rr_t *layer_lookup(SPF_dns_server_t *layer, const char *domain, ns_type type,
                                  int should_cache)
{
    (void)should_cache;   /* libunbound caches by TTL */
    struct spf_ctx *c = layer->hook;
    int dtype = dns_type_of(type);
    if (!domain)
        domain = "";
    if (c->aborted)
        return rr_status(layer, domain, type, TRY_AGAIN);
    if (dtype < 0)
        return rr_status(layer, domain, type, NO_DATA);

    struct dns_answer a;
    if (c->in_exp || dtype == DNS_TYPE_TXT) {
        ctx_query(c, domain, dtype, &a);
        SPF_dns_rr_t *rr = rr_from(layer, domain, type, &a, (size_t)-1);
        dns_answer_free(&a);
        return rr;
    }
    bool addr = dtype == DNS_TYPE_A || dtype == DNS_TYPE_AAAA;
    bool term = !(addr && follow_take(c, domain));
    if (term && !count_term(c))
        return rr_status(layer, domain, type, TRY_AGAIN);

    char real[DNS_NAME_MAX + 1], tag[8];
    if (addr && magic_parse(domain, real, sizeof real, tag, sizeof tag))
        return magic_lookup(c, layer, domain, type, real, tag);

    enum dns_status st = ctx_query(c, domain, dtype, &a);
    if (term && !count_void(c, st)) {
        dns_answer_free(&a);
        return rr_status(layer, domain, type, TRY_AGAIN);
    }
    size_t max = (size_t)-1;
    if (dtype == DNS_TYPE_PTR)
        max = PTR_NAMES_MAX;   /* the excess is ignored, not a permerror */
    if (st == DNS_OK && (dtype == DNS_TYPE_MX || dtype == DNS_TYPE_PTR))
        follow_set(c, &a, max);
    SPF_dns_rr_t *rr = rr_from(layer, domain, type, &a, max);
    dns_answer_free(&a);
    return rr;
}

/* ---------------------------------------------------------------------- */
/* Records                                                                */
/* ---------------------------------------------------------------------- */

enum fetch { FETCH_OK, FETCH_NONE, FETCH_TEMP, FETCH_PERM };

/* Fetches, selects, checks, rewrites and compiles domain's record. */
static enum fetch fetch_record(struct spf_ctx *c, const char *domain, SPF_record_t **recp,
                               char *why, size_t whylen)
{
    *recp = NULL;
    struct dns_answer a;
    enum dns_status st = ctx_query(c, domain, DNS_TYPE_TXT, &a);
    if (st == DNS_TEMPFAIL || st == DNS_PERMFAIL) {
        set_err(why, whylen, "DNS error looking up TXT %s", domain);
        return FETCH_TEMP;
    }
    const char *rec = NULL;
    size_t found = 0;
    for (size_t i = 0; st == DNS_OK && i < a.n; i++) {
        if (a.rec[i].text && spf_record_is_spf1(a.rec[i].text, strlen(a.rec[i].text))) {
            rec = a.rec[i].text;
            found++;
        }
    }
    enum fetch f = FETCH_OK;
    char *text = NULL;
    size_t cap = 0;
    if (found == 0) {
        set_err(why, whylen, "no SPF record at %s", domain);
        f = FETCH_NONE;
    } else if (found > 1) {
        set_err(why, whylen, "more than one SPF record at %s (RFC 7208 4.5)", domain);
        f = FETCH_PERM;
    } else if (spf_record_check(rec, strlen(rec), why, whylen) < 0) {
        f = FETCH_PERM;
    } else if (!(text = malloc(cap = SPF_REWRITE_MAX(strlen(rec))))) {
        set_err(why, whylen, "out of memory");
        f = FETCH_TEMP;
    } else if (spf_record_rewrite(rec, strlen(rec), c->family, text, cap) < 0) {
        set_err(why, whylen, "record too long");
        f = FETCH_PERM;
    } else {
        SPF_response_t *scratch = SPF_response_new(NULL);
        SPF_errcode_t err = scratch ? SPF_record_compile(c->server, scratch, recp, text)
                                    : SPF_E_NO_MEMORY;
        if (err != SPF_E_SUCCESS) {
            set_err(why, whylen, "record of %s not understood: %s", domain, SPF_strerror(err));
            f = err == SPF_E_NO_MEMORY ? FETCH_TEMP : FETCH_PERM;
            if (*recp)
                SPF_record_free(*recp);
            *recp = NULL;
        }
        if (scratch)
            SPF_response_free(scratch);
    }
    if (f == FETCH_PERM)
        log_debug("spf: %s: %s", domain, why);
    free(text);
    dns_answer_free(&a);
    return f;
}

/* include: and redirect= targets. */
static SPF_errcode_t layer_get_spf(SPF_server_t *server, SPF_request_t *req,
                                   SPF_response_t *resp, SPF_record_t **recp)
{
    (void)resp;
    struct spf_ctx *c = server->resolver->hook;
    char why[160];
    *recp = NULL;
    if (c->aborted || !count_term(c))
        return SPF_E_DNS_ERROR;
    const char *domain = req->cur_dom ? req->cur_dom : "";
    switch (fetch_record(c, domain, recp, why, sizeof why)) {
    case FETCH_OK:
        return SPF_E_SUCCESS;
    case FETCH_NONE:
        /* RFC 7208 5.2 and 6.1: a target without a record is an error of
         * the record that names it. */
        ctx_abort(c, SPF_R_PERMERROR, "%s (include or redirect target)", why);
        break;
    case FETCH_TEMP:
        ctx_abort(c, SPF_R_TEMPERROR, "%s", why);
        break;
    case FETCH_PERM:
        ctx_abort(c, SPF_R_PERMERROR, "%s", why);
        break;
    }
    return SPF_E_DNS_ERROR;
}

/* An explain-string expanded. libspf2's macro compiler stops at a space,
 * so spaces go in as "%_" (which expands to one). */
static SPF_errcode_t expand_macro(struct spf_ctx *c, const char *text, char **bufp,
                                  size_t *buflenp)
{
    SPF_macro_t *m = NULL;
    size_t n = strlen(text);
    char *spaced = malloc(2 * n + 1);
    SPF_response_t *scratch = spaced ? SPF_response_new(c->req) : NULL;
    if (!scratch) {
        free(spaced);
        return SPF_E_NO_MEMORY;
    }
    size_t o = 0;
    for (size_t i = 0; i < n; i++) {
        if (text[i] == ' ')
            spaced[o++] = '%';
        spaced[o++] = text[i] == ' ' ? '_' : text[i];
    }
    spaced[o] = '\0';
    SPF_errcode_t err = SPF_record_compile_macro(c->server, scratch, &m, spaced);
    free(spaced);
    if (err == SPF_E_SUCCESS && m)
        err = SPF_record_expand_data(c->server, c->req, scratch,
                                     (SPF_data_t *)((char *)m + sizeof *m), m->macro_len,
                                     bufp, buflenp);
    if (m)
        SPF_macro_free(m);
    SPF_response_free(scratch);
    return err;
}

/* exp=: used only when the name has exactly one TXT record and it is a
 * valid explain-string (RFC 7208 6.2); otherwise our default. */
static SPF_errcode_t layer_get_exp(SPF_server_t *server, const char *domain, char **bufp,
                                   size_t *buflenp)
{
    struct spf_ctx *c = server->resolver->hook;
    struct dns_answer a;
    c->in_exp = true;
    SPF_errcode_t err = SPF_E_NOT_SPF;
    if (!c->aborted && now_mono() - c->started <= SPF_TIME_LIMIT
        && ctx_query(c, domain ? domain : "", DNS_TYPE_TXT, &a) == DNS_OK) {
        if (a.n == 1 && a.rec[0].text
            && spf_explain_string_ok(a.rec[0].text, strlen(a.rec[0].text)))
            err = expand_macro(c, a.rec[0].text, bufp, buflenp);
        dns_answer_free(&a);
    }
    if (err != SPF_E_SUCCESS)
        err = expand_macro(c, DEFAULT_EXP, bufp, buflenp);
    c->in_exp = false;
    return err;
}

/* ---------------------------------------------------------------------- */
/* check_host                                                             */
/* ---------------------------------------------------------------------- */

/* RFC 7208 4.3: a domain to check has at least two labels. */
static bool identity_domain_ok(const char *d)
{
    return name_ok(d) && strchr(d, '.') && strchr(d, '.')[1] != '\0' && d[0] != '[';
}

static int client_family(const struct sockaddr *sa, struct in_addr *v4, struct in6_addr *v6)
{
    if (!sa)
        return -1;
    if (sa->sa_family == AF_INET) {
        *v4 = ((const struct sockaddr_in *)sa)->sin_addr;
        return AF_INET;
    }
    if (sa->sa_family != AF_INET6)
        return -1;
    const struct in6_addr *a = &((const struct sockaddr_in6 *)sa)->sin6_addr;
    if (IN6_IS_ADDR_V4MAPPED(a)) {
        memcpy(&v4->s_addr, a->s6_addr + 12, 4);
        return AF_INET;
    }
    *v6 = *a;
    return AF_INET6;
}

static void set_comment(struct spf_outcome *out, const char *ip)
{
    const char *d = out->domain[0] ? out->domain : "the sender";
    char *c = out->comment;
    size_t n = sizeof out->comment;
    switch (out->result) {
    case SPF_R_PASS:
        snprintf(c, n, "domain of %s designates %s as permitted sender", d, ip);
        break;
    case SPF_R_FAIL:
        snprintf(c, n, "domain of %s does not designate %s as permitted sender", d, ip);
        break;
    case SPF_R_SOFTFAIL:
        snprintf(c, n, "domain of transitioning %s does not designate %s as permitted sender",
                 d, ip);
        break;
    case SPF_R_NEUTRAL:
        snprintf(c, n, "%s is neither permitted nor denied by domain of %s", ip, d);
        break;
    case SPF_R_NONE:
        if (out->domain[0])
            snprintf(c, n, "domain of %s does not provide an SPF record", d);
        else
            snprintf(c, n, "no domain to check");
        break;
    case SPF_R_TEMPERROR:
    case SPF_R_PERMERROR:
        snprintf(c, n, "error in processing during lookup of %s: %s", d, out->problem);
        break;
    }
}

/* Evaluates rec (compiled) with libspf2 and reads its answer. */
static void evaluate(struct spf_ctx *c, SPF_record_t *rec, struct spf_outcome *out)
{
    SPF_response_t *resp = SPF_response_new(c->req);
    if (!resp) {
        SPF_record_free(rec);
        out->result = SPF_R_TEMPERROR;
        snprintf(out->problem, sizeof out->problem, "out of memory");
        return;
    }
    c->req->cur_dom = c->req->env_from_dp;
    resp->spf_record_exp = rec;
    SPF_record_interpret(rec, c->req, resp, 0);
    SPF_record_free(rec);
    if (c->aborted) {
        out->result = c->forced;
        copy_printable(out->problem, sizeof out->problem, c->problem);
    } else {
        out->result = spf_map_libspf2(resp->result, resp->err);
        if (out->result == SPF_R_TEMPERROR || out->result == SPF_R_PERMERROR)
            copy_printable(out->problem, sizeof out->problem, SPF_strerror(resp->err));
        if (out->result == SPF_R_FAIL)
            copy_printable(out->explanation, sizeof out->explanation,
                           SPF_response_get_explanation(resp));
    }
    SPF_response_free(resp);
}

static void check_with_libspf2(struct spf_ctx *c, const char *sender, const char *helo,
                               const char *receiver, struct spf_outcome *out)
{
    SPF_record_t *rec = NULL;
    SPF_response_t *tmp = NULL;
    char why[160] = "";
    c->server = SPF_server_new_dns(&c->layer, 0);
    if (!c->server || (receiver && receiver[0]
                       && SPF_server_set_rec_dom(c->server, receiver) != SPF_E_SUCCESS)
        || SPF_server_set_explanation(c->server, DEFAULT_EXP_MACRO, &tmp) != SPF_E_SUCCESS
        || !(c->req = SPF_request_new(c->server))
        || SPF_request_set_env_from(c->req, sender) != 0
        || (helo[0] && SPF_request_set_helo_dom(c->req, helo) != SPF_E_SUCCESS)) {
        out->result = SPF_R_TEMPERROR;
        snprintf(out->problem, sizeof out->problem, "out of memory");
        goto done;
    }
    if (c->family == AF_INET)
        SPF_request_set_ipv4(c->req, c->v4);
    else
        SPF_request_set_ipv6(c->req, c->v6);
    switch (fetch_record(c, out->domain, &rec, why, sizeof why)) {
    case FETCH_OK:
        evaluate(c, rec, out);
        break;
    case FETCH_NONE:
        out->result = SPF_R_NONE;
        break;
    case FETCH_TEMP:
        out->result = c->aborted ? c->forced : SPF_R_TEMPERROR;
        copy_printable(out->problem, sizeof out->problem, c->aborted ? c->problem : why);
        break;
    case FETCH_PERM:
        out->result = SPF_R_PERMERROR;
        copy_printable(out->problem, sizeof out->problem, why);
        break;
    }
done:
    if (tmp)
        SPF_response_free(tmp);
    if (c->req)
        SPF_request_free(c->req);
    if (c->server)
        SPF_server_free(c->server);
}

void spf_check(const struct spf_resolver *dns, const struct spf_request *rq,
               struct spf_outcome *out)
{
    memset(out, 0, sizeof *out);
    out->result = SPF_R_NONE;
    const char *helo = rq->helo ? rq->helo : "";
    const char *from = rq->mail_from ? rq->mail_from : "";
    char sender[600];
    const char *domain;
    if (from[0] == '\0') {
        /* RFC 7208 2.4: the null reverse-path is postmaster@<HELO>. */
        out->helo_identity = true;
        domain = helo;
        snprintf(sender, sizeof sender, "postmaster@%s", helo);
    } else {
        const char *at = strrchr(from, '@');
        domain = at ? at + 1 : from;
        snprintf(sender, sizeof sender, "%s%s", at ? "" : "postmaster@", from);
    }
    copy_printable(out->domain, sizeof out->domain, domain);

    struct spf_ctx c;
    memset(&c, 0, sizeof c);
    c.family = client_family(rq->client, &c.v4, &c.v6);
    char ip[INET6_ADDRSTRLEN] = "unknown";
    if (c.family == AF_INET)
        inet_ntop(AF_INET, &c.v4, ip, sizeof ip);
    else if (c.family == AF_INET6)
        inet_ntop(AF_INET6, &c.v6, ip, sizeof ip);

    if (c.family < 0 || !dns || !dns->query) {
        out->result = SPF_R_TEMPERROR;
        snprintf(out->problem, sizeof out->problem, "no client address or resolver");
    } else if (strlen(domain) >= sizeof out->domain || strlen(sender) >= sizeof sender - 1
               || !identity_domain_ok(domain)) {
        out->result = SPF_R_NONE;   /* RFC 7208 4.3 */
        out->domain[0] = '\0';
    } else {
        c.dns = dns;
        c.started = now_mono();
        c.layer.lookup = layer_lookup;
        c.layer.get_spf = layer_get_spf;
        c.layer.get_exp = layer_get_exp;
        c.layer.name = "posthorn";
        c.layer.hook = &c;
        check_with_libspf2(&c, sender, helo, rq->receiver, out);
        follow_clear(&c);
    }
    set_comment(out, ip);
    log_debug("spf: %s from %s: %s%s%s", out->domain[0] ? out->domain : "-", ip,
              spf_result_name(out->result), out->problem[0] ? ": " : "", out->problem);
}

/* ---------------------------------------------------------------------- */
/* The filter                                                             */
/* ---------------------------------------------------------------------- */

/* A string literal, its length taken by the compiler. */
#define buf_lit(b, s) buf_append((b), (s), sizeof(s) - 1)

static enum dns_status server_query(void *arg, const char *name, int type,
                                    struct dns_answer *out)
{
    return dns_sync_query(arg, name, type, out);
}

/* RFC 5322 dot-atom text, which a header value may carry unquoted. */
static bool dot_atom(const char *s)
{
    static const char special[] = "!#$%&'*+-/=?^_`{|}~";
    bool prev_dot = true;
    if (!*s)
        return false;
    for (; *s; s++) {
        if (*s == '.') {
            if (prev_dot)
                return false;
            prev_dot = true;
        } else if (ascii_is_alnum(*s) || strchr(special, *s)) {
            prev_dot = false;
        } else {
            return false;
        }
    }
    return !prev_dot;
}

/* value, or "value" with quoted-pairs, printable ASCII only. */
static int append_value(struct buf *b, const char *v)
{
    if (dot_atom(v))
        return buf_append(b, v, strlen(v));
    int rc = buf_lit(b, "\"");
    for (size_t i = 0; v[i] && i < 512; i++) {
        char ch = (v[i] >= 0x20 && v[i] < 0x7f) ? v[i] : '?';
        if (ch == '"' || ch == '\\')
            rc |= buf_lit(b, "\\");
        rc |= buf_append(b, &ch, 1);
    }
    return rc | buf_lit(b, "\"");
}

/* Comment text: parentheses and backslashes quoted. */
static int append_comment(struct buf *b, const char *s)
{
    int rc = 0;
    for (; *s; s++) {
        if (*s == '(' || *s == ')' || *s == '\\')
            rc |= buf_lit(b, "\\");
        rc |= buf_append(b, s, 1);
    }
    return rc;
}

/* RFC 7208 9.1. */
static void add_received_spf(const struct filter_txn *t, const struct spf_outcome *o,
                             const char *receiver, const char *sender)
{
    struct buf *b = t->add_headers;
    if (!b)
        return;
    int rc = buf_printf(b, "Received-SPF: %s (", spf_result_name(o->result));
    rc |= append_comment(b, receiver);
    rc |= buf_lit(b, ": ");
    rc |= append_comment(b, o->comment);
    rc |= buf_lit(b, ")\r\n\tclient-ip=");
    rc |= append_value(b, t->client_ip ? t->client_ip : "unknown");
    rc |= buf_lit(b, "; envelope-from=");
    rc |= append_value(b, sender);
    rc |= buf_lit(b, "; helo=");
    rc |= append_value(b, t->helo && t->helo[0] ? t->helo : "unknown");
    rc |= buf_lit(b, ";\r\n\treceiver=");
    rc |= append_value(b, receiver);
    rc |= buf_printf(b, "; identity=mailfrom;");
    if (o->problem[0] && (o->result == SPF_R_PERMERROR || o->result == SPF_R_TEMPERROR)) {
        rc |= buf_lit(b, " problem=");
        rc |= append_value(b, o->problem);
        rc |= buf_lit(b, ";");
    }
    rc |= buf_lit(b, "\r\n");
    if (rc)
        log_warn("spf: out of memory building Received-SPF");
}

static void add_auth_result(const struct filter_txn *t, const struct spf_outcome *o)
{
    struct buf *b = t->auth_results;
    if (!b)
        return;
    int rc = buf_printf(b, "spf=%s ", spf_result_name(o->result));
    if (o->helo_identity) {
        rc |= buf_lit(b, "smtp.helo=");
        rc |= append_value(b, t->helo && t->helo[0] ? t->helo : "unknown");
    } else {
        rc |= buf_lit(b, "smtp.mailfrom=");
        rc |= append_value(b, o->domain[0] ? o->domain : "unknown");
    }
    if (rc)
        log_warn("spf: out of memory building Authentication-Results");
}

static void set_reply(struct filter_result *r, enum filter_verdict v, int code,
                      const char *enhanced, const char *fmt, ...)
    __attribute__((format(printf, 5, 6)));

static void set_reply(struct filter_result *r, enum filter_verdict v, int code,
                      const char *enhanced, const char *fmt, ...)
{
    r->verdict = v;
    r->code = code;
    snprintf(r->enhanced, sizeof r->enhanced, "%s", enhanced);
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(r->text, sizeof r->text, fmt, ap);
    va_end(ap);
}

static void set_score(struct filter_result *r, const char *reason, double score)
{
    r->verdict = FILTER_SCORE;
    r->score = score;
    snprintf(r->reason, sizeof r->reason, "%s", reason);
}

void spf_policy(const struct spf_outcome *o, bool skip_dns_errors, struct filter_result *r)
{
    r->verdict = FILTER_ACCEPT;
    switch (o->result) {
    case SPF_R_FAIL:
        snprintf(r->reason, sizeof r->reason, "SPF_FAIL");
        set_reply(r, FILTER_REJECT, 550, "5.7.23", "SPF check failed: %.200s",
                  o->explanation[0] ? o->explanation : o->comment);
        break;
    case SPF_R_TEMPERROR:
        if (skip_dns_errors) {
            snprintf(r->reason, sizeof r->reason, "SPF_SKIPPED");
            break;
        }
        snprintf(r->reason, sizeof r->reason, "SPF_TEMPERROR");
        set_reply(r, FILTER_TEMPFAIL, 451, "4.7.24", "SPF temporary error: %.200s",
                  o->problem[0] ? o->problem : "DNS failure");
        break;
    case SPF_R_PERMERROR:
        set_score(r, "SPF_PERMERROR", 1.0);
        break;
    case SPF_R_SOFTFAIL:
        set_score(r, "SPF_SOFTFAIL", 1.0);
        break;
    case SPF_R_NONE:
    case SPF_R_NEUTRAL:
    case SPF_R_PASS:
        break;
    }
}

static void spf_mail_hook(const struct filter_txn *t, struct filter_result *r)
{
    const struct settings *st = t->srv->settings;
    const char *receiver = st && st->hostname && st->hostname[0] ? st->hostname : "localhost";
    struct spf_resolver res = { .query = server_query, .arg = t->srv->dns };
    struct spf_request rq = {
        .client = (const struct sockaddr *)t->client,
        .helo = t->helo,
        .mail_from = t->mail_from ? t->mail_from : "",
        .receiver = receiver,
    };
    struct spf_outcome o;
    spf_check(&res, &rq, &o);
    char sender[600];
    if (rq.mail_from[0])
        snprintf(sender, sizeof sender, "%s", rq.mail_from);
    else
        snprintf(sender, sizeof sender, "postmaster@%s", t->helo ? t->helo : "");
    add_received_spf(t, &o, receiver, sender);
    add_auth_result(t, &o);
    bool skip = st && st->spf_dns_error == SPF_DNS_ERROR_SKIP;
    spf_policy(&o, skip, r);
    if (o.result == SPF_R_TEMPERROR && skip)
        log_info("spf: %s from %s: temperror (%s), skipped (SPF_DNS_ERROR=skip)",
                 o.domain, t->client_ip ? t->client_ip : "?", o.problem);
}

static bool spf_enabled(const struct settings *st)
{
    return st->enable_policyd_spf;
}

/* libspf2 writes its messages to stdout and stderr; ours go to the log. */
static void spf_log_warning(const char *file, int line, const char *msg)
{
    (void)file;
    (void)line;
    log_debug("spf: libspf2: %s", msg);
}

static void spf_log_debug(const char *file, int line, const char *msg)
{
    (void)file;
    (void)line;
    log_trace("spf: libspf2: %s", msg);
}

void spf_init(void)
{
    SPF_warning_handler = spf_log_warning;
    SPF_info_handler = spf_log_debug;
    SPF_debug_handler = spf_log_debug;
}

static int spf_start(struct server *srv)
{
    (void)srv;
    spf_init();
    return 0;
}

const struct filter_ops spf_filter = {
    .name = "spf",
    .enabled = spf_enabled,
    .start = spf_start,
    .stop = NULL,
    .hook = { [FILTER_MAIL] = spf_mail_hook },
    .for_submission = false,
};
