/* rules: header and body rules of the spam score (ENABLE_SPAMASSASSIN), at
 * FILTER_DATA over the parsed message. Each rule is a well-known, cheap
 * signal with SpamAssassin's name where it has one, and a weight close to
 * SpamAssassin's (its score set 3, network tests and Bayes on):
 *
 *   MISSING_FROM       1.0    no From: field
 *   MISSING_DATE       1.36   no Date: field
 *   INVALID_DATE       1.096  a Date: that is not an RFC 5322 date (as
 *                             SpamAssassin's: 4-digit year, zone optional)
 *   MISSING_MID        0.497  no Message-ID: field
 *   INVALID_MSGID      0.568  a Message-ID: not of the form <left@right>
 *   MISSING_SUBJECT    1.799  no Subject: field
 *   SUBJ_ALL_CAPS      0.5    a Subject of several words and 10 characters
 *                             or more (after Re:/Fwd:) whose letters are all
 *                             capitals (ASCII subjects only)
 *   SUBJ_OBFUSCATED    1.0    a Subject word with a digit standing for a
 *                             letter ("V1agra", "c0ck") or G.a.p.p.y text
 *   HTML_ONLY          1.105  text/html body parts and no text/plain one
 *                             (SpamAssassin's MIME_HTML_ONLY, older score)
 *   MISMATCHED_LINK    1.0    an <a href> whose visible text is a URL or
 *                             domain naming another domain than the href
 *   EMPTY_BODY         2.32   no attachment and no text (SpamAssassin's
 *                             EMPTY_MESSAGE)
 *   FROM_LOCAL_UNAUTH  1.5    From: in one of our local domains on an
 *                             unauthenticated message (port 25); senders of
 *                             our domains submit on 465/587
 *
 * Inputs are limited: headers are looked at as the parser found them (first
 * occurrence), HTML is scanned up to RULES_HTML_MAX octets per part and
 * RULES_PARTS_MAX parts per message.
 */
#ifndef POSTHORN_RULES_H
#define POSTHORN_RULES_H

#include <stdbool.h>
#include <stddef.h>

#include "filter.h"
#include "mime.h"

#define RULES_COUNT 12
#define RULES_HTML_MAX (512 * 1024)
#define RULES_PARTS_MAX 200

extern const struct filter_ops rules_filter;

struct rule_hit {
    const char *name;     /* static */
    double score;
};

/* What the rules need besides the message. */
struct rules_env {
    bool authenticated;
    /* Whether a (lowercased) domain is one of ours; NULL: none is. */
    bool (*domain_is_local)(void *arg, const char *domain);
    void *arg;
};

/* Evaluates every rule on msg[0..len) parsed as root; writes the hits in
 * the table's order to hits (at most max) and returns their number, or -1
 * when out of memory. */
int rules_check(const char *msg, size_t len, const struct mime_part *root,
                const struct rules_env *env, struct rule_hit *hits, size_t max);

/* --- the single checks (exposed for the unit tests) ------------------------- */

/* A Date: value (raw, may be folded) that SpamAssassin's INVALID_DATE
 * accepts. */
bool rules_date_valid(const char *v, size_t len);
/* A Message-ID: value of the form <left@right> (a trailing comment
 * allowed). */
bool rules_msgid_valid(const char *v, size_t len);
/* On the decoded (UTF-8) subject. */
bool rules_subject_all_caps(const char *s, size_t len);
bool rules_subject_obfuscated(const char *s, size_t len);
/* Whether decoded HTML has a link whose visible text names another domain
 * than its href. */
bool rules_mismatched_link(const char *html, size_t len);
/* The domain of the (first) address of a From: value, lowercased, into
 * out; false when there is none or it does not fit. */
bool rules_from_domain(const char *v, size_t len, char *out, size_t outlen);

#endif
