/* settings: table-driven loading, validation and dumping of the settings.
 *
 * The table below is the only place that knows the names, defaults and
 * kinds; adding a setting means adding a field to struct settings and one
 * row here. Loading goes: file -> environment -> NAME__FILE -> parse each
 * row -> derived defaults (hostname, postmaster) -> cross-checks. */
#include "settings.h"
#include "util.h"

#include <arpa/inet.h>
#include <errno.h>
#include <limits.h>
#include <stdarg.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "listener.h"
#include "netmatch.h"

#define LINE_MAX_BYTES 8192
#define NAME_MAX_BYTES 128
#define PATH_MAX_BYTES 4095
#define SIZE_MAX_BYTES (UINT64_C(1) << 40)
#define SHOW_MAX 200

enum kind {
    K_PATH,    /* char *: a file system path; empty = default */
    K_STRING,  /* char *: checked by the row's check function */
    K_LISTEN,  /* char *: listener spec; empty disables */
    K_BOOL,    /* bool: 0 or 1 */
    K_UINT,    /* unsigned integer field (4 or 8 bytes) within [min, max] */
    K_ENUM,    /* int-sized enum: index into names */
    K_SIZE,    /* uint64_t: bytes, 0 .. 2^40; with .units also 25M, 10K, 1G (1024-based) */
    K_DOUBLE,  /* double: a decimal number within [dmin, dmax] */
};

/* Returns true when a (non-empty) string value is acceptable. */
typedef bool (*check_fn)(const char *value);
/* Parses an enum value; returns 0 and the index into names, or -1. */
typedef int (*enum_parse_fn)(const char *value, int *out);

struct setting_def {
    const char *name;
    const char *def;            /* default, in setting form */
    enum kind kind;
    size_t offset;
    size_t size;                /* sizeof the field */
    uint64_t min, max;          /* K_UINT */
    double dmin, dmax;          /* K_DOUBLE */
    bool units;                 /* K_SIZE: K, M, G, T suffixes accepted */
    const char *const *names;   /* K_ENUM: accepted values, index = enum value */
    size_t nnames;
    enum_parse_fn parse;        /* K_ENUM: NULL = match names exactly */
    check_fn check;             /* K_STRING */
    const char *accepted;       /* K_STRING: text after "accepted: " */
};

#define FIELD(f) offsetof(struct settings, f), sizeof(((struct settings *)0)->f)
#define NNAMES(a) (sizeof(a) / sizeof((a)[0]))

_Static_assert(sizeof(enum ssl_type) == sizeof(int), "enum ssl_type is int-sized");
_Static_assert(sizeof(enum tls_level) == sizeof(int), "enum tls_level is int-sized");
_Static_assert(sizeof(enum spf_dns_error) == sizeof(int), "enum spf_dns_error is int-sized");
_Static_assert(sizeof(enum log_level) == sizeof(int), "enum log_level is int-sized");
_Static_assert(sizeof(uid_t) == 4 && sizeof(gid_t) == 4, "32-bit uid_t/gid_t");
_Static_assert(sizeof(unsigned) == 4, "32-bit unsigned");
_Static_assert(LOG_ERROR == 0 && LOG_WARN == 1 && LOG_INFO == 2 && LOG_DEBUG == 3 &&
               LOG_TRACE == 4, "log level names follow the enum");

static const char *const log_level_names[] = { "error", "warn", "info", "debug", "trace" };
static const char *const ssl_type_names[] = { "self-signed", "manual", "letsencrypt" };
static const char *const tls_level_names[] = { "modern", "intermediate" };
static const char *const spf_dns_error_names[] = { "tempfail", "skip" };

static int parse_log_level(const char *value, int *out)
{
    enum log_level l;
    if (log_level_parse(value, &l) != 0 || (int)l < 0 || (size_t)l >= NNAMES(log_level_names))
        return -1;
    *out = (int)l;
    return 0;
}

static bool check_hostname(const char *v);
static bool check_address(const char *v);
static bool check_resolver(const char *v);
static bool check_hostport(const char *v);
static bool check_relay_host(const char *v);
static bool check_secret(const char *v);
static bool check_networks(const char *v);
static bool check_text(const char *v);
static bool check_dnsbl_zones(const char *v);

#define PATH_ROW(n, d, f) { .name = n, .def = d, .kind = K_PATH, FIELD(f) }
#define LISTEN_ROW(n, d, f) { .name = n, .def = d, .kind = K_LISTEN, FIELD(f) }
#define BOOL_ROW(n, d, f) { .name = n, .def = d, .kind = K_BOOL, FIELD(f) }
#define SIZE_ROW(n, d, f) { .name = n, .def = d, .kind = K_SIZE, FIELD(f) }
#define SIZE_UNITS_ROW(n, d, f) { .name = n, .def = d, .kind = K_SIZE, FIELD(f), .units = true }
#define DOUBLE_ROW(n, d, f, lo, hi) \
    { .name = n, .def = d, .kind = K_DOUBLE, FIELD(f), .dmin = lo, .dmax = hi }
#define UINT_ROW(n, d, f, lo, hi) \
    { .name = n, .def = d, .kind = K_UINT, FIELD(f), .min = lo, .max = hi }
#define ENUM_ROW(n, d, f, nm, p) \
    { .name = n, .def = d, .kind = K_ENUM, FIELD(f), .names = nm, .nnames = NNAMES(nm), \
      .parse = p }
#define STRING_ROW(n, d, f, c, acc) \
    { .name = n, .def = d, .kind = K_STRING, FIELD(f), .check = c, .accepted = acc }

/* Order = settings_dump order. OVERRIDE_HOSTNAME and POSTMASTER_ADDRESS
 * default to "" here; their real defaults are derived after loading. */
static const struct setting_def table[] = {
    STRING_ROW("OVERRIDE_HOSTNAME", "", hostname, check_hostname,
               "a host name of letters, digits, '-', '_' and '.'"),
    STRING_ROW("POSTMASTER_ADDRESS", "", postmaster_address, check_address,
               "an address local@domain"),
    ENUM_ROW("LOG_LEVEL", "info", log_level, log_level_names, parse_log_level),

    PATH_ROW("MAIL_DIR", "/var/mail", mail_dir),
    PATH_ROW("STATE_DIR", "/var/mail-state", state_dir),
    PATH_ROW("CONFIG_DIR", "/tmp/docker-mailserver", config_dir),
    PATH_ROW("LOG_DIR", "/var/log/mail", log_dir),

    LISTEN_ROW("SMTP_LISTEN", "0.0.0.0:25,[::]:25", smtp_listen),
    LISTEN_ROW("SUBMISSIONS_LISTEN", ":465", submissions_listen),
    LISTEN_ROW("SUBMISSION_LISTEN", ":587", submission_listen),
    LISTEN_ROW("IMAP_LISTEN", ":143", imap_listen),
    LISTEN_ROW("IMAPS_LISTEN", ":993", imaps_listen),
    LISTEN_ROW("POP3_LISTEN", ":110", pop3_listen),
    LISTEN_ROW("POP3S_LISTEN", ":995", pop3s_listen),

    STRING_ROW("DNS_RESOLVER", "", dns_resolver, check_resolver,
               "empty, IPv4:PORT or [IPv6]:PORT"),
    PATH_ROW("CLAMAV_DB_DIR", "/var/lib/clamav", clamav_db_dir),

    ENUM_ROW("SSL_TYPE", "self-signed", ssl_type, ssl_type_names, NULL),
    PATH_ROW("SSL_CERT_PATH", "", ssl_cert_path),
    PATH_ROW("SSL_KEY_PATH", "", ssl_key_path),
    ENUM_ROW("TLS_LEVEL", "modern", tls_level, tls_level_names, NULL),

    SIZE_ROW("POSTFIX_MESSAGE_SIZE_LIMIT", "10240000", message_size_limit),
    SIZE_ROW("POSTFIX_MAILBOX_SIZE_LIMIT", "0", mailbox_size_limit),
    BOOL_ROW("ENABLE_QUOTAS", "1", enable_quotas),
    BOOL_ROW("ENABLE_IMAP", "1", enable_imap),
    BOOL_ROW("ENABLE_POP3", "1", enable_pop3),
    BOOL_ROW("SPOOF_PROTECTION", "0", spoof_protection),

    STRING_ROW("DEFAULT_RELAY_HOST", "", default_relay_host, check_hostport,
               "empty, [host]:port or host:port"),
    STRING_ROW("RELAY_HOST", "", relay_host, check_relay_host,
               "empty or a host name or IP address"),
    UINT_ROW("RELAY_PORT", "25", relay_port, 1, 65535),
    STRING_ROW("RELAY_USER", "", relay_user, check_secret, "text without control characters"),
    STRING_ROW("RELAY_PASSWORD", "", relay_password, check_secret,
               "text without control characters"),
    BOOL_ROW("RELAY_TLS_VERIFY", "1", relay_tls_verify),
    STRING_ROW("PERMIT_NETWORKS", "", permit_networks, check_networks,
               "empty or a comma-separated list of IPv4/IPv6 networks (CIDR)"),
    UINT_ROW("QUEUE_LIFETIME", "432000", queue_lifetime, 60, 31536000),
    UINT_ROW("QUEUE_DELAY_WARNING", "14400", queue_delay_warning, 0, 31536000),
    UINT_ROW("OUTBOUND_MAX_CONNECTIONS", "100", outbound_max_connections, 1, 10000),
    UINT_ROW("OUTBOUND_MAX_PER_DESTINATION", "20", outbound_max_per_destination, 1, 1000),

    UINT_ROW("DMS_VMAIL_UID", "5000", vmail_uid, 0, 4294967294u),
    UINT_ROW("DMS_VMAIL_GID", "5000", vmail_gid, 0, 4294967294u),

    UINT_ROW("MAX_CONNECTIONS", "1000", max_connections, 1, 1000000),
    UINT_ROW("MAX_CONNECTIONS_PER_IP", "50", max_connections_per_ip, 1, 100000),
    UINT_ROW("SMTP_MAX_RECIPIENTS", "1000", smtp_max_recipients, 1, 100000),
    UINT_ROW("SMTP_TIMEOUT", "300", smtp_timeout, 1, 86400),
    UINT_ROW("WORKER_THREADS", "16", worker_threads, 1, 256),

    BOOL_ROW("ENABLE_POLICYD_SPF", "1", enable_policyd_spf),
    ENUM_ROW("SPF_DNS_ERROR", "tempfail", spf_dns_error, spf_dns_error_names, NULL),
    BOOL_ROW("ENABLE_CLAMAV", "0", enable_clamav),
    SIZE_UNITS_ROW("CLAMAV_MESSAGE_SIZE_LIMIT", "25M", clamav_message_size_limit),
    BOOL_ROW("ENABLE_SPAMASSASSIN", "0", enable_spamassassin),
    DOUBLE_ROW("SA_TAG", "2.0", sa_tag, -1000.0, 10000.0),
    DOUBLE_ROW("SA_TAG2", "6.31", sa_tag2, -1000.0, 10000.0),
    DOUBLE_ROW("SA_KILL", "10.0", sa_kill, -1000.0, 10000.0),
    STRING_ROW("SPAM_SUBJECT", "", spam_subject, check_text,
               "text of at most 200 characters without control characters"),
    BOOL_ROW("MOVE_SPAM_TO_JUNK", "1", move_spam_to_junk),
    BOOL_ROW("MARK_SPAM_AS_READ", "0", mark_spam_as_read),
    BOOL_ROW("ENABLE_DNSBL", "0", enable_dnsbl),
    /* docker-mailserver's postscreen_dnsbl_sites, as zone*weight (its
     * return-code filters dropped; dnsbl.sorbs.net, closed in 2024, left
     * out; list.dnswl.org as one allowlist entry). */
    STRING_ROW("DNSBL_ZONES",
               "zen.spamhaus.org*3,bl.mailspike.net*1,b.barracudacentral.org*2,"
               "bl.spameatingmonkey.net*1,psbl.surriel.com*1,list.dnswl.org*-3",
               dnsbl_zones, check_dnsbl_zones,
               "a comma-separated list of zone or zone*weight entries (at most 32; "
               "weight a number from -100 to 100), e.g. zen.spamhaus.org*3,list.dnswl.org*-5"),
    UINT_ROW("DNSBL_THRESHOLD", "3", dnsbl_threshold, 1, 1000),
    UINT_ROW("BAYES_MIN_LEARNED", "200", bayes_min_learned, 1, 1000000),
    BOOL_ROW("ENABLE_POSTGREY", "0", enable_postgrey),
    UINT_ROW("POSTGREY_DELAY", "300", postgrey_delay, 0, 86400),
    UINT_ROW("POSTGREY_MAX_AGE", "35", postgrey_max_age, 1, 3650),
    STRING_ROW("POSTGREY_TEXT", "Delayed by Postgrey", postgrey_text, check_text,
               "text of at most 200 characters without control characters"),
    UINT_ROW("POSTGREY_AUTO_WHITELIST_CLIENTS", "5", postgrey_auto_whitelist_clients, 0, 100000),
};

#define NSETTINGS NNAMES(table)

static bool is_string_kind(enum kind k)
{
    return k == K_PATH || k == K_STRING || k == K_LISTEN;
}

static void *field(struct settings *s, const struct setting_def *d)
{
    return (char *)s + d->offset;
}

static const void *cfield(const struct settings *s, const struct setting_def *d)
{
    return (const char *)s + d->offset;
}

/* A printable, bounded copy of an untrusted value for an error line. */
static const char *show(const char *v, char *buf, size_t len)
{
    size_t n = 0;
    for (; v[n] && n < SHOW_MAX && n + 4 < len; n++) {
        unsigned char c = (unsigned char)v[n];
        buf[n] = (c < 0x20 || c == 0x7f) ? '?' : (char)c;
    }
    if (v[n] && n + 4 <= len) {
        memcpy(buf + n, "...", 3);
        n += 3;
    }
    buf[n] = '\0';
    return buf;
}

static void invalid(const struct setting_def *d, const char *value, const char *accepted,
                    char *err, size_t errlen)
{
    char shown[SHOW_MAX + 4];
    set_err(err, errlen, "%s: invalid value '%s'; accepted: %s", d->name,
            show(value, shown, sizeof shown), accepted);
}

static bool has_control(const char *v)
{
    for (; *v; v++)
        if ((unsigned char)*v < 0x20 || *v == 0x7f)
            return true;
    return false;
}

/* ---- value checks ---- */

static bool check_hostname(const char *v)
{
    size_t n = strlen(v);
    if (n == 0 || n > 253 || v[0] == '.' || v[0] == '-')
        return false;
    for (size_t i = 0; i < n; i++) {
        char c = v[i];
        /* '_' is not valid DNS, but container host names sometimes carry it */
        bool ok = (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || (c >= '0' && c <= '9') ||
                  c == '-' || c == '.' || c == '_';
        if (!ok || (c == '.' && i > 0 && v[i - 1] == '.'))
            return false;
    }
    return true;
}

static bool check_address(const char *v)
{
    const char *at = strchr(v, '@');
    if (!at || at == v || at[1] == '\0' || strchr(at + 1, '@'))
        return false;
    if (strlen(v) > 254 || has_control(v))
        return false;
    return strpbrk(v, " \t<>,;\"") == NULL;
}

/* A relay host: a host name or an IP address, with or without brackets. */
static bool check_relay_host(const char *v)
{
    size_t n = strlen(v);
    if (n >= 2 && v[0] == '[' && v[n - 1] == ']') {
        char inner[256];
        if (n - 2 >= sizeof inner)
            return false;
        memcpy(inner, v + 1, n - 2);
        inner[n - 2] = '\0';
        unsigned char addr[16];
        return check_hostname(inner) || inet_pton(AF_INET, inner, addr) == 1 ||
               inet_pton(AF_INET6, inner, addr) == 1;
    }
    unsigned char addr[16];
    return check_hostname(v) || inet_pton(AF_INET6, v, addr) == 1;
}

static bool parse_port(const char *p);

/* DEFAULT_RELAY_HOST: "[host]:port", "host:port", "[host]" or "host". */
static bool check_hostport(const char *v)
{
    char host[300];
    const char *colon = v[0] == '[' ? strstr(v, "]:") : strrchr(v, ':');
    if (v[0] == '[' && colon)
        colon++;
    size_t hlen = colon ? (size_t)(colon - v) : strlen(v);
    if (hlen == 0 || hlen >= sizeof host)
        return false;
    memcpy(host, v, hlen);
    host[hlen] = '\0';
    if (colon && !parse_port(colon + 1))
        return false;
    return check_relay_host(host);
}

static bool check_secret(const char *v)
{
    return strlen(v) <= 255 && !has_control(v);
}

/* PERMIT_NETWORKS: parsed by the same code the server will use. */
static bool check_networks(const char *v)
{
    return netmatch_valid(v);
}

/* Text that goes into a header or an SMTP reply. */
static bool check_text(const char *v)
{
    return strlen(v) <= 200 && !has_control(v);
}

/* Strict decimal number: [-+]digits[.digits]; no exponent, hex, inf or nan. */
static int parse_decimal(const char *v, size_t len, double *out)
{
    size_t i = 0, digits = 0;
    if (i < len && (v[i] == '-' || v[i] == '+'))
        i++;
    for (; i < len && v[i] >= '0' && v[i] <= '9'; i++)
        digits++;
    if (i < len && v[i] == '.')
        for (i++; i < len && v[i] >= '0' && v[i] <= '9'; i++)
            digits++;
    if (i != len || digits == 0 || len > 32)
        return -1;
    char tmp[40];
    memcpy(tmp, v, len);
    tmp[len] = '\0';
    *out = strtod(tmp, NULL);
    return 0;
}

static bool dns_label_char(char c)
{
    return (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || (c >= '0' && c <= '9') ||
           c == '-' || c == '_';
}

/* A DNS zone name: labels of 1..63 letters, digits, '-' or '_', at most
 * 253 characters in all (the client address's labels are prefixed). */
static bool zone_valid(const char *z, size_t len)
{
    if (len == 0 || len > 200 || z[0] == '.' || z[len - 1] == '.')
        return false;
    size_t label = 0;
    for (size_t i = 0; i < len; i++) {
        if (z[i] == '.') {
            if (label == 0)
                return false;
            label = 0;
        } else if (!dns_label_char(z[i]) || ++label > 63) {
            return false;
        }
    }
    return true;
}

int settings_dnsbl_zones(const char *spec, struct dnsbl_zone *out, size_t max)
{
    size_t n = 0;
    const char *p = spec;
    for (;;) {
        while (*p == ',' || *p == ' ' || *p == '\t')
            p++;
        if (!*p)
            break;
        size_t len = strcspn(p, ", \t");
        const char *star = memchr(p, '*', len);
        size_t zlen = star ? (size_t)(star - p) : len;
        double weight = 1.0;
        if (star && (parse_decimal(star + 1, len - zlen - 1, &weight) < 0 ||
                     weight < -100.0 || weight > 100.0))
            return -1;
        if (!zone_valid(p, zlen) || n >= max)
            return -1;
        memcpy(out[n].zone, p, zlen);
        out[n].zone[zlen] = '\0';
        out[n].weight = weight;
        n++;
        p += len;
    }
    return (int)n;
}

static bool check_dnsbl_zones(const char *v)
{
    struct dnsbl_zone zones[SETTINGS_DNSBL_ZONES_MAX];
    return strlen(v) <= 4096 && settings_dnsbl_zones(v, zones, SETTINGS_DNSBL_ZONES_MAX) > 0;
}

static bool parse_port(const char *p)
{
    size_t n = strlen(p);
    if (n == 0 || n > 5 || strspn(p, "0123456789") != n)
        return false;
    long port = strtol(p, NULL, 10);
    return port >= 1 && port <= 65535;
}

static bool check_resolver(const char *v)
{
    char host[64];
    const char *colon;
    size_t hlen;
    int af;
    if (v[0] == '[') {
        const char *close = strchr(v, ']');
        if (!close || close[1] != ':')
            return false;
        hlen = (size_t)(close - v - 1);
        colon = close + 1;
        v++;
        af = AF_INET6;
    } else {
        colon = strchr(v, ':');
        if (!colon || strchr(colon + 1, ':'))
            return false;
        hlen = (size_t)(colon - v);
        af = AF_INET;
    }
    if (hlen == 0 || hlen >= sizeof host)
        return false;
    memcpy(host, v, hlen);
    host[hlen] = '\0';
    unsigned char addr[16];
    return inet_pton(af, host, addr) == 1 && parse_port(colon + 1);
}

/* Strict decimal: digits only, no sign or spaces; -1 on overflow. */
static int parse_u64(const char *v, uint64_t *out)
{
    uint64_t x = 0;
    if (!*v)
        return -1;
    for (; *v; v++) {
        if (*v < '0' || *v > '9')
            return -1;
        unsigned d = (unsigned)(*v - '0');
        if (x > (UINT64_MAX - d) / 10)
            return -1;
        x = x * 10 + d;
    }
    *out = x;
    return 0;
}

/* Digits with an optional unit K, M, G, T (and KB, MB, ...), 1024-based
 * as in CLAMAV_MESSAGE_SIZE_LIMIT=25M and `setup quota set`. */
static int parse_size_units(const char *v, uint64_t *out)
{
    size_t n = strspn(v, "0123456789");
    if (n == 0 || n > 19)
        return -1;
    char digits[20];
    memcpy(digits, v, n);
    digits[n] = '\0';
    uint64_t x;
    if (parse_u64(digits, &x) != 0)
        return -1;
    const char *u = v + n;
    static const char units[] = "KMGT";
    int shift = 0;
    if (*u) {
        char c = (char)(*u >= 'a' && *u <= 'z' ? *u - 32 : *u);
        const char *p = strchr(units, c);
        if (!p || !c || !(u[1] == '\0' || ((u[1] == 'B' || u[1] == 'b') && u[2] == '\0')))
            return -1;
        shift = (int)(p - units + 1) * 10;
    }
    if (x > (UINT64_MAX >> shift))
        return -1;
    *out = x << shift;
    return 0;
}

/* The shortest text that reads back as the same double ("6.31", not
 * "6.3099999999999996"), for settings_dump. */
static void format_double(double x, char *out, size_t len)
{
    for (int prec = 1; prec <= 17; prec++) {
        snprintf(out, len, "%.*f", prec, x);
        if (strtod(out, NULL) == x)
            break;
    }
}

/* ---- storing one row ---- */

static void store_uint(struct settings *s, const struct setting_def *d, uint64_t v)
{
    if (d->size == sizeof(uint64_t)) {
        uint64_t x = v;
        memcpy(field(s, d), &x, sizeof x);
    } else {
        uint32_t x = (uint32_t)v;
        memcpy(field(s, d), &x, sizeof x);
    }
}

static uint64_t load_uint(const struct settings *s, const struct setting_def *d)
{
    if (d->size == sizeof(uint64_t)) {
        uint64_t x;
        memcpy(&x, cfield(s, d), sizeof x);
        return x;
    }
    uint32_t x;
    memcpy(&x, cfield(s, d), sizeof x);
    return x;
}

static int set_string(struct settings *s, const struct setting_def *d, const char *v,
                      char *err, size_t errlen)
{
    char **slot = field(s, d);
    char *copy = strdup(v);
    if (!copy) {
        set_err(err, errlen, "%s: out of memory", d->name);
        return -1;
    }
    free(*slot);
    *slot = copy;
    return 0;
}

static int apply_enum(struct settings *s, const struct setting_def *d, const char *v,
                      char *err, size_t errlen)
{
    int idx = -1;
    if (d->parse) {
        if (d->parse(v, &idx) != 0)
            idx = -1;
    } else {
        for (size_t i = 0; i < d->nnames; i++)
            if (strcmp(v, d->names[i]) == 0)
                idx = (int)i;
    }
    if (idx < 0 || (size_t)idx >= d->nnames) {
        char acc[256];
        size_t off = 0;
        acc[0] = '\0';
        for (size_t i = 0; i < d->nnames && off < sizeof acc; i++) {
            int n = snprintf(acc + off, sizeof acc - off, "%s%s", i ? ", " : "", d->names[i]);
            if (n < 0)
                break;
            off += (size_t)n;
        }
        invalid(d, v, acc, err, errlen);
        return -1;
    }
    memcpy(field(s, d), &idx, sizeof idx);
    return 0;
}

static int apply_number(struct settings *s, const struct setting_def *d, const char *v,
                        char *err, size_t errlen)
{
    uint64_t x, lo = d->min, hi = d->max;
    char acc[128];
    if (d->kind == K_BOOL) {
        lo = 0;
        hi = 1;
        snprintf(acc, sizeof acc, "0, 1");
    } else if (d->kind == K_SIZE) {
        lo = 0;
        hi = SIZE_MAX_BYTES;
        snprintf(acc, sizeof acc, "a number of bytes from 0 to %llu (0 = no limit)",
                 (unsigned long long)hi);
    } else {
        snprintf(acc, sizeof acc, "an integer from %llu to %llu", (unsigned long long)lo,
                 (unsigned long long)hi);
    }
    if (d->units)
        snprintf(acc, sizeof acc, "a number of bytes from 0 to %llu, or with a unit K, M, G, T "
                 "(1024-based, e.g. 25M)", (unsigned long long)hi);
    /* bools are exactly "0" or "1": no leading zeros */
    bool bad_bool = d->kind == K_BOOL && strlen(v) != 1;
    int rc = d->units ? parse_size_units(v, &x) : parse_u64(v, &x);
    if (bad_bool || rc != 0 || x < lo || x > hi) {
        invalid(d, v, acc, err, errlen);
        return -1;
    }
    if (d->kind == K_BOOL) {
        bool b = x == 1;
        memcpy(field(s, d), &b, sizeof b);
    } else {
        store_uint(s, d, x);
    }
    return 0;
}

static int apply_double(struct settings *s, const struct setting_def *d, const char *v,
                        char *err, size_t errlen)
{
    double x;
    if (parse_decimal(v, strlen(v), &x) != 0 || x < d->dmin || x > d->dmax) {
        char acc[128];
        snprintf(acc, sizeof acc, "a decimal number from %g to %g, e.g. 6.31", d->dmin, d->dmax);
        invalid(d, v, acc, err, errlen);
        return -1;
    }
    memcpy(field(s, d), &x, sizeof x);
    return 0;
}

static int apply_string(struct settings *s, const struct setting_def *d, const char *v,
                        char *err, size_t errlen)
{
    if (*v) {
        if (d->kind == K_PATH && (strlen(v) > PATH_MAX_BYTES || has_control(v))) {
            invalid(d, v, "a file system path", err, errlen);
            return -1;
        }
        if (d->kind == K_STRING && d->check && !d->check(v)) {
            invalid(d, v, d->accepted, err, errlen);
            return -1;
        }
        if (d->kind == K_LISTEN) {
            char why[256];
            if (has_control(v) || listener_spec_check(d->name, v, why, sizeof why) != 0) {
                invalid(d, v, "a comma-separated list of IPv4:PORT, [IPv6]:PORT or :PORT; "
                        "empty disables", err, errlen);
                return -1;
            }
        }
    }
    return set_string(s, d, v, err, errlen);
}

/* value NULL = not given. Empty = the default, except that an empty
 * listener spec disables the listener. */
static int apply(struct settings *s, const struct setting_def *d, const char *value,
                 char *err, size_t errlen)
{
    const char *v = value;
    if (!v || (!*v && d->kind != K_LISTEN))
        v = d->def;
    switch (d->kind) {
    case K_PATH:
    case K_STRING:
    case K_LISTEN:
        return apply_string(s, d, v, err, errlen);
    case K_ENUM:
        return apply_enum(s, d, v, err, errlen);
    case K_BOOL:
    case K_UINT:
    case K_SIZE:
        return apply_number(s, d, v, err, errlen);
    case K_DOUBLE:
        return apply_double(s, d, v, err, errlen);
    }
    return -1;
}

/* ---- raw values: file, environment, NAME__FILE ---- */

struct raw {
    char *value[NSETTINGS];     /* NAME */
    char *file[NSETTINGS];      /* NAME__FILE */
};

static void raw_free(struct raw *r)
{
    for (size_t i = 0; i < NSETTINGS; i++) {
        free(r->value[i]);
        free(r->file[i]);
    }
}

static int raw_set(char **slot, const char *v, size_t len)
{
    char *copy = strndup(v, len);
    if (!copy)
        return -1;
    free(*slot);
    *slot = copy;
    return 0;
}

/* Finds the row for `name` (len bytes), or for its NAME__FILE form. */
static const struct setting_def *lookup(const char *name, size_t len, bool *is_file)
{
    static const char sfx[] = "__FILE";
    const size_t slen = sizeof sfx - 1;
    *is_file = len > slen && memcmp(name + len - slen, sfx, slen) == 0;
    size_t base = *is_file ? len - slen : len;
    for (size_t i = 0; i < NSETTINGS; i++)
        if (strlen(table[i].name) == base && memcmp(table[i].name, name, base) == 0)
            return &table[i];
    *is_file = false;
    return NULL;
}

static bool is_space(char c)
{
    return c == ' ' || c == '\t';
}

static bool valid_name(const char *n, size_t len)
{
    if (len == 0 || (n[0] >= '0' && n[0] <= '9'))
        return false;
    for (size_t i = 0; i < len; i++) {
        char c = n[i];
        if (!((c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || (c >= '0' && c <= '9') ||
              c == '_'))
            return false;
    }
    return true;
}

/* Cuts the value part of a line (after '=') down to [*start, *end).
 * Returns NULL, or a reason for an error. */
static const char *parse_value(const char *v, const char *end, const char **vs, const char **ve)
{
    const char *raw = v;
    while (v < end && is_space(*v))
        v++;
    if (v < end && (*v == '"' || *v == '\'')) {
        char q = *v;
        const char *close = end;
        while (close > v + 1 && is_space(close[-1]))
            close--;
        if (close - v < 2 || close[-1] != q)
            return "unterminated quote, or text after the closing quote";
        *vs = v + 1;
        *ve = close - 1;
        return NULL;
    }
    /* unquoted: " #" (whitespace then '#') starts a trailing comment */
    const char *e = v;
    for (const char *p = v; p < end; p++) {
        if (*p == '#' && p > raw && is_space(p[-1]))
            break;
        e = p + 1;
    }
    while (e > v && is_space(e[-1]))
        e--;
    *vs = v;
    *ve = e;
    return NULL;
}

/* One line, without its line ending. */
static int parse_line(struct raw *r, const char *line, size_t len, const char *path,
                      unsigned lineno, char *err, size_t errlen)
{
    const char *p = line, *end = line + len;
    while (p < end && is_space(*p))
        p++;
    if (p == end || *p == '#')
        return 0;
    if (end - p > 7 && memcmp(p, "export", 6) == 0 && is_space(p[6])) {
        p += 7;
        while (p < end && is_space(*p))
            p++;
    }
    const char *eq = memchr(p, '=', (size_t)(end - p));
    if (!eq) {
        set_err(err, errlen, "%s:%u: expected NAME=value", path, lineno);
        return -1;
    }
    const char *ne = eq;
    while (ne > p && is_space(ne[-1]))
        ne--;
    if (!valid_name(p, (size_t)(ne - p))) {
        set_err(err, errlen, "%s:%u: invalid setting name", path, lineno);
        return -1;
    }
    const char *vs, *ve;
    const char *why = parse_value(eq + 1, end, &vs, &ve);
    if (why) {
        set_err(err, errlen, "%s:%u: %s", path, lineno, why);
        return -1;
    }
    bool is_file;
    const struct setting_def *d = lookup(p, (size_t)(ne - p), &is_file);
    if (!d)
        return 0; /* a docker-mailserver setting posthorn does not use */
    size_t i = (size_t)(d - table);
    if (raw_set(is_file ? &r->file[i] : &r->value[i], vs, (size_t)(ve - vs)) != 0) {
        set_err(err, errlen, "%s:%u: out of memory", path, lineno);
        return -1;
    }
    return 0;
}

/* Reads one line into buf (at most LINE_MAX_BYTES). Returns the length,
 * -1 at end of file, -2 when too long, -3 on a NUL byte, -4 on a read error. */
static long read_line(FILE *f, char *buf)
{
    size_t n = 0;
    int c;
    bool any = false;
    while ((c = getc(f)) != EOF) {
        any = true;
        if (c == '\n')
            break;
        if (c == '\0')
            return -3;
        if (n == LINE_MAX_BYTES)
            return -2;
        buf[n++] = (char)c;
    }
    if (ferror(f))
        return -4;
    if (!any)
        return -1;
    if (n > 0 && buf[n - 1] == '\r')
        n--;
    return (long)n;
}

static int read_file(struct raw *r, const char *path, char *err, size_t errlen)
{
    FILE *f = fopen(path, "r");
    if (!f) {
        set_err(err, errlen, "%s: cannot read: %s", path, strerror(errno));
        return -1;
    }
    static const char *const why[] = { "", "", "line longer than 8192 bytes",
                                       "NUL byte in line", "read error" };
    char line[LINE_MAX_BYTES];
    unsigned lineno = 0;
    int rc = 0;
    for (;;) {
        long n = read_line(f, line);
        lineno++;
        if (n == -1)
            break;
        if (n < -1) {
            set_err(err, errlen, "%s:%u: %s", path, lineno, why[-n]);
            rc = -1;
            break;
        }
        if (parse_line(r, line, (size_t)n, path, lineno, err, errlen) != 0) {
            rc = -1;
            break;
        }
    }
    fclose(f);
    return rc;
}

static int read_env(struct raw *r, char *err, size_t errlen)
{
    for (size_t i = 0; i < NSETTINGS; i++) {
        char fname[NAME_MAX_BYTES];
        snprintf(fname, sizeof fname, "%s__FILE", table[i].name);
        const char *v = getenv(table[i].name);
        const char *fv = getenv(fname);
        if ((v && raw_set(&r->value[i], v, strlen(v)) != 0) ||
            (fv && raw_set(&r->file[i], fv, strlen(fv)) != 0)) {
            set_err(err, errlen, "%s: out of memory", table[i].name);
            return -1;
        }
    }
    return 0;
}

/* NAME__FILE: the value is the first line of the file; it wins over NAME. */
static int read_secret(struct raw *r, size_t i, char *err, size_t errlen)
{
    const char *path = r->file[i];
    FILE *f = fopen(path, "r");
    if (!f) {
        set_err(err, errlen, "%s__FILE: cannot read '%s': %s", table[i].name, path,
                strerror(errno));
        return -1;
    }
    char line[LINE_MAX_BYTES];
    long n = read_line(f, line);
    fclose(f);
    if (n < -1) {
        set_err(err, errlen, "%s__FILE: cannot read '%s': %s", table[i].name, path,
                n == -2 ? "first line longer than 8192 bytes"
                        : n == -3 ? "NUL byte in first line" : "read error");
        return -1;
    }
    if (raw_set(&r->value[i], line, n < 0 ? 0 : (size_t)n) != 0) {
        set_err(err, errlen, "%s__FILE: out of memory", table[i].name);
        return -1;
    }
    return 0;
}

/* ---- derived defaults and cross-checks ---- */

static int default_hostname(struct settings *s, char *err, size_t errlen)
{
    if (s->hostname && *s->hostname)
        return 0;
    char host[256];
    if (gethostname(host, sizeof host - 1) != 0) {
        set_err(err, errlen, "OVERRIDE_HOSTNAME: not set, and gethostname failed: %s",
                strerror(errno));
        return -1;
    }
    host[sizeof host - 1] = '\0';
    size_t n = strlen(host);
    if (n > 0 && host[n - 1] == '.')
        host[--n] = '\0';
    if (!check_hostname(host)) {
        char shown[SHOW_MAX + 4];
        set_err(err, errlen, "OVERRIDE_HOSTNAME: not set, and the machine's host name '%s' "
                "is not usable", show(host, shown, sizeof shown));
        return -1;
    }
    free(s->hostname);
    s->hostname = strdup(host);
    if (!s->hostname) {
        set_err(err, errlen, "OVERRIDE_HOSTNAME: out of memory");
        return -1;
    }
    return 0;
}

/* postmaster@<domain>: the hostname without its first label when at least
 * two labels follow it (mail.example.com -> example.com). */
static int default_postmaster(struct settings *s, char *err, size_t errlen)
{
    if (s->postmaster_address && *s->postmaster_address)
        return 0;
    const char *h = s->hostname;
    const char *dot1 = strchr(h, '.');
    const char *domain = (dot1 && strchr(dot1 + 1, '.')) ? dot1 + 1 : h;
    size_t len = strlen("postmaster@") + strlen(domain) + 1;
    char *addr = malloc(len);
    if (!addr) {
        set_err(err, errlen, "POSTMASTER_ADDRESS: out of memory");
        return -1;
    }
    snprintf(addr, len, "postmaster@%s", domain);
    free(s->postmaster_address);
    s->postmaster_address = addr;
    return 0;
}

static int cross_check(const struct settings *s, char *err, size_t errlen)
{
    if (s->ssl_type == SSL_TYPE_MANUAL) {
        if (!*s->ssl_cert_path) {
            set_err(err, errlen, "SSL_CERT_PATH: required when SSL_TYPE=manual");
            return -1;
        }
        if (!*s->ssl_key_path) {
            set_err(err, errlen, "SSL_KEY_PATH: required when SSL_TYPE=manual");
            return -1;
        }
    }
    return 0;
}

static int load(const char *path, struct raw *r, struct settings *out, char *err, size_t errlen)
{
    if (path && read_file(r, path, err, errlen) != 0)
        return -1;
    if (read_env(r, err, errlen) != 0)
        return -1;
    for (size_t i = 0; i < NSETTINGS; i++) {
        if (r->file[i] && *r->file[i] && read_secret(r, i, err, errlen) != 0)
            return -1;
        if (apply(out, &table[i], r->value[i], err, errlen) != 0)
            return -1;
    }
    if (default_hostname(out, err, errlen) != 0 || default_postmaster(out, err, errlen) != 0)
        return -1;
    return cross_check(out, err, errlen);
}

int settings_load(const char *path, struct settings *out, char *err, size_t errlen)
{
    struct raw r;
    memset(&r, 0, sizeof r);
    memset(out, 0, sizeof *out);
    if (err && errlen)
        err[0] = '\0';
    int rc = load(path, &r, out, err, errlen);
    raw_free(&r);
    if (rc != 0)
        settings_free(out);
    return rc;
}

void settings_free(struct settings *s)
{
    if (!s)
        return;
    for (size_t i = 0; i < NSETTINGS; i++) {
        if (is_string_kind(table[i].kind)) {
            char **slot = field(s, &table[i]);
            free(*slot);
        }
    }
    memset(s, 0, sizeof *s);
}

/* Quotes a value that would not read back as it is. The parser does no
 * escape processing inside quotes, so double quotes always work. */
static bool needs_quotes(const char *v)
{
    size_t n = strlen(v);
    if (n == 0)
        return false;
    if (is_space(v[0]) || is_space(v[n - 1]) || v[0] == '"' || v[0] == '\'')
        return true;
    for (size_t i = 1; i < n; i++)
        if (v[i] == '#' && is_space(v[i - 1]))
            return true;
    return false;
}

void settings_dump(const struct settings *s, FILE *out)
{
    for (size_t i = 0; i < NSETTINGS; i++) {
        const struct setting_def *d = &table[i];
        switch (d->kind) {
        case K_PATH:
        case K_STRING:
        case K_LISTEN: {
            const char *v = *(char *const *)cfield(s, d);
            if (!v)
                v = "";
            const char *q = needs_quotes(v) ? "\"" : "";
            fprintf(out, "%s=%s%s%s\n", d->name, q, v, q);
            break;
        }
        case K_ENUM: {
            int idx;
            memcpy(&idx, cfield(s, d), sizeof idx);
            bool ok = idx >= 0 && (size_t)idx < d->nnames;
            fprintf(out, "%s=%s\n", d->name, ok ? d->names[idx] : "");
            break;
        }
        case K_BOOL: {
            bool b;
            memcpy(&b, cfield(s, d), sizeof b);
            fprintf(out, "%s=%d\n", d->name, b ? 1 : 0);
            break;
        }
        case K_UINT:
        case K_SIZE:
            fprintf(out, "%s=%llu\n", d->name, (unsigned long long)load_uint(s, d));
            break;
        case K_DOUBLE: {
            double x;
            memcpy(&x, cfield(s, d), sizeof x);
            char text[40];
            format_double(x, text, sizeof text);
            fprintf(out, "%s=%s\n", d->name, text);
            break;
        }
        }
    }
}
