/* settings: the one settings vocabulary (environment variable names).
 *
 * settings_load() reads NAME=value lines from a file (the mailserver.env
 * format: '#' comments, blank lines, optional `export `, surrounding single
 * or double quotes removed), then lets the process environment override
 * each known name, then resolves NAME__FILE (the value is the first line of
 * that file, trailing newline removed). Unknown names are ignored (a
 * docker-mailserver env file has many that posthorn does not use).
 * Every known name is validated; an invalid value gives a one-line error
 * that names the variable and the accepted values, e.g.
 *   "TLS_LEVEL: invalid value 'old'; accepted: modern, intermediate"
 * An empty value means "the default". */
#ifndef POSTHORN_SETTINGS_H
#define POSTHORN_SETTINGS_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <sys/types.h>

#include "log.h"

enum ssl_type { SSL_TYPE_SELF_SIGNED, SSL_TYPE_MANUAL, SSL_TYPE_LETSENCRYPT };
enum tls_level { TLS_LEVEL_MODERN, TLS_LEVEL_INTERMEDIATE };
/* SPF_DNS_ERROR: what a DNS failure during the SPF check does. */
enum spf_dns_error { SPF_DNS_ERROR_TEMPFAIL, SPF_DNS_ERROR_SKIP };

struct settings {
    /* Where things live (DESIGN.md, Data). */
    char *mail_dir;            /* MAIL_DIR    /var/mail */
    char *state_dir;           /* STATE_DIR   /var/mail-state */
    char *config_dir;          /* CONFIG_DIR  /tmp/docker-mailserver */
    char *log_dir;             /* LOG_DIR     /var/log/mail */

    /* Listeners: comma-separated "addr:port" lists; "[v6]:port"; ":port"
     * means every address (IPv6 and IPv4). Empty disables. */
    char *smtp_listen;         /* SMTP_LISTEN        0.0.0.0:25,[::]:25 */
    char *submissions_listen;  /* SUBMISSIONS_LISTEN :465 */
    char *submission_listen;   /* SUBMISSION_LISTEN  :587 */
    char *imap_listen;         /* IMAP_LISTEN        :143 */
    char *imaps_listen;        /* IMAPS_LISTEN       :993 */
    char *pop3_listen;         /* POP3_LISTEN        :110 */
    char *pop3s_listen;        /* POP3S_LISTEN       :995 */

    char *dns_resolver;        /* DNS_RESOLVER  "" or IP:PORT */
    char *clamav_db_dir;       /* CLAMAV_DB_DIR /var/lib/clamav */

    char *hostname;            /* OVERRIDE_HOSTNAME, else the machine's FQDN */
    char *postmaster_address;  /* POSTMASTER_ADDRESS, else postmaster@<domain of hostname> */

    enum log_level log_level;  /* LOG_LEVEL info */

    enum ssl_type ssl_type;    /* SSL_TYPE self-signed (empty = self-signed) */
    char *ssl_cert_path;       /* SSL_CERT_PATH (required for manual) */
    char *ssl_key_path;        /* SSL_KEY_PATH  (required for manual) */
    enum tls_level tls_level;  /* TLS_LEVEL modern */

    uint64_t message_size_limit; /* POSTFIX_MESSAGE_SIZE_LIMIT 10240000 bytes; 0 = no limit */
    uint64_t mailbox_size_limit; /* POSTFIX_MAILBOX_SIZE_LIMIT 0 = no limit */
    bool enable_quotas;        /* ENABLE_QUOTAS 1 */
    bool enable_imap;          /* ENABLE_IMAP 1 */
    bool enable_pop3;          /* ENABLE_POP3 1 */
    bool spoof_protection;     /* SPOOF_PROTECTION 0 */

    uid_t vmail_uid;           /* DMS_VMAIL_UID 5000 */
    gid_t vmail_gid;           /* DMS_VMAIL_GID 5000 */

    /* Outbound delivery and relays (docker-mailserver's names). */
    char *default_relay_host;  /* DEFAULT_RELAY_HOST "" or [host]:port: every message goes there */
    char *relay_host;          /* RELAY_HOST "" or host: mail from non-excluded domains */
    unsigned relay_port;       /* RELAY_PORT 25 */
    char *relay_user;          /* RELAY_USER "" */
    char *relay_password;      /* RELAY_PASSWORD "" */
    bool relay_tls_verify;     /* RELAY_TLS_VERIFY 1: verify the relay's certificate */
    char *permit_networks;     /* PERMIT_NETWORKS "": CIDR list whose clients may relay on port 25
                                * without authentication (see netmatch.h) */
    unsigned queue_lifetime;   /* QUEUE_LIFETIME 432000 seconds (5 days), then bounce */
    unsigned queue_delay_warning; /* QUEUE_DELAY_WARNING 14400 seconds (4 hours); 0 = never */
    unsigned outbound_max_connections;     /* OUTBOUND_MAX_CONNECTIONS 100 */
    unsigned outbound_max_per_destination; /* OUTBOUND_MAX_PER_DESTINATION 20 */

    /* posthorn's own limits. */
    unsigned max_connections;        /* MAX_CONNECTIONS 1000 (all listeners together) */
    unsigned max_connections_per_ip; /* MAX_CONNECTIONS_PER_IP 50 */
    unsigned smtp_max_recipients;    /* SMTP_MAX_RECIPIENTS 1000 */
    unsigned smtp_timeout;           /* SMTP_TIMEOUT 300 seconds idle, RFC 5321 4.5.3.2 */
    unsigned worker_threads;         /* WORKER_THREADS 16 */

    /* Inbound filtering (filters/, issue 6). docker-mailserver's names,
     * meanings and defaults unless marked [posthorn]. Port 25 only; PERMIT_
     * NETWORKS clients and authenticated submission get the virus scan only. */
    bool enable_policyd_spf;         /* ENABLE_POLICYD_SPF 1 */
    enum spf_dns_error spf_dns_error; /* SPF_DNS_ERROR tempfail [posthorn]: tempfail | skip */
    bool enable_clamav;              /* ENABLE_CLAMAV 0 */
    uint64_t clamav_message_size_limit; /* CLAMAV_MESSAGE_SIZE_LIMIT 25M (K/M/G/T units) */
    /* Spam scoring (rules, Bayes, GTUBE, the X-Spam headers and the SA_*
     * actions); the name is docker-mailserver's, the engine posthorn's. */
    bool enable_spamassassin;        /* ENABLE_SPAMASSASSIN 0 */
    double sa_tag;                   /* SA_TAG 2.0: X-Spam-Score/-Status/-Level from here */
    double sa_tag2;                  /* SA_TAG2 6.31: spam (X-Spam-Flag: YES, Junk, subject) */
    double sa_kill;                  /* SA_KILL 10.0: refused with 554 5.7.1 */
    char *spam_subject;              /* SPAM_SUBJECT "": Subject prefix for spam */
    bool move_spam_to_junk;          /* MOVE_SPAM_TO_JUNK 1 */
    bool mark_spam_as_read;          /* MARK_SPAM_AS_READ 0 */
    bool enable_dnsbl;               /* ENABLE_DNSBL 0 */
    char *dnsbl_zones;               /* DNSBL_ZONES zone*weight,... (settings_dnsbl_zones) */
    unsigned dnsbl_threshold;        /* DNSBL_THRESHOLD 3: summed weight refused at connect */
    unsigned bayes_min_learned;      /* BAYES_MIN_LEARNED 200: spam and ham each learned
                                      * before the Bayes filter scores */
    bool enable_postgrey;            /* ENABLE_POSTGREY 0 */
    unsigned postgrey_delay;         /* POSTGREY_DELAY 300 seconds */
    unsigned postgrey_max_age;       /* POSTGREY_MAX_AGE 35 days */
    char *postgrey_text;             /* POSTGREY_TEXT "Delayed by Postgrey" */
    unsigned postgrey_auto_whitelist_clients; /* POSTGREY_AUTO_WHITELIST_CLIENTS 5; 0 = never */
};

/* One DNSBL_ZONES entry: "zone" or "zone*weight" (weight a decimal
 * number, negative for allowlists; 1 when omitted, as in Postfix's
 * postscreen_dnsbl_sites). */
#define SETTINGS_DNSBL_ZONES_MAX 32
struct dnsbl_zone {
    char zone[254];
    double weight;
};

/* Parses a DNSBL_ZONES value (comma- or space-separated entries). Returns
 * the number of entries stored in out (at most max), or -1 when the value
 * is invalid (a bad zone name or weight, more than max entries). */
int settings_dnsbl_zones(const char *spec, struct dnsbl_zone *out, size_t max);

/* Loads defaults, then `path` (may be NULL: no file), then the environment.
 * Returns 0, or -1 with a one-line reason in err (the caller prints it and
 * exits 1). On success the caller owns *out and frees it with settings_free. */
int settings_load(const char *path, struct settings *out, char *err, size_t errlen);
void settings_free(struct settings *s);

/* Writes the effective settings as NAME=value lines (for -t and the
 * entrypoint's /etc/posthorn/posthorn.env). */
void settings_dump(const struct settings *s, FILE *out);

#endif
