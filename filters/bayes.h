/* bayes: the Bayesian spam classifier (issue 6, spam score): a tokenizer,
 * a token store in SQLite (STATE_DIR/bayes.db) and Robinson/Fisher
 * chi-square combining, as in SpamBayes and bogofilter.
 *
 * Tokens (bayes_tokenize) come from
 *   - the message header: every field name ("hdr:list-id"), except the
 *     ones a delivery adds or a mail program rewrites (Return-Path, Delivered-To, X-Original-To, Authentication-Results,
 *     Received-SPF, X-Spam-*, X-Virus-*, Status, X-Status, X-Keywords,
 *     X-UID, Content-Length, Lines), so that a message scores the same
 *     before delivery and when it is learned from a mailbox later;
 *     the words of Subject, From, To, Cc, Reply-To and Sender (RFC 2047
 *     decoded, prefixed by the field name: "subject:viagra",
 *     "from:email:example.org"); X-Mailer / User-Agent as one token;
 *     the Message-ID's domain; the words of Received fields (relay names
 *     and addresses, "received:[192.0.2.1]");
 *   - every part's Content-Type ("ct:text/html"), charset, transfer
 *     encoding and attachment file-name extension;
 *   - the text of text/plain and text/html parts (transfer encoding
 *     undone, converted to UTF-8, HTML tags stripped (URLs in their
 *     attributes kept), <style>/<script> contents and comments dropped),
 *     split on white space, outer punctuation trimmed, lowercased.
 * Words of 3 to 12 octets are tokens as they are; longer ones become
 * "skip:<first char> <length rounded down to tens>"; shorter ones are
 * dropped. URLs give "url:<host>" (and "url:<last two labels>"), e-mail
 * addresses "email:<domain>". At most BAYES_MAX_TOKENS tokens are taken
 * per message, and BAYES_TEXT_MAX decoded octets per text part.
 * A token's identity is a 64-bit hash (FNV-1a) of its text; each counts
 * once per message.
 *
 * Scoring: Robinson's f(w) = (s*x + n*p(w)) / (s + n) with s = 1,
 * x = 0.5, n the number of trained messages holding the token and
 * p(w) = (spam/nspam) / (spam/nspam + ham/nham); the tokens with
 * |f - 0.5| > BAYES_MIN_STRENGTH, at most BAYES_MAX_CLUES of the most
 * extreme, are combined with Fisher's method: H = C^-1(-2 sum ln f, 2n),
 * S = C^-1(-2 sum ln(1 - f), 2n), probability = (1 + H - S) / 2, where
 * C^-1 is the chi-square survival function (SpamBayes' chi2Q). 0 is ham,
 * 1 is spam, 0.5 "unsure" (also when no token is significant).
 *
 * Store (bayes.db, WAL): tokens(hash, spam count, ham count, last
 * learned), the totals of learned messages, and the digest of every
 * learned message with its class, so that a message learned twice the
 * same way counts once and one learned the other way moves its tokens.
 * A message's digest is SHA-256 over its Message-ID and its body with CR
 * removed: the headers a delivery adds, a Subject prefix, or CRLF against
 * LF do not change it.
 *
 * Every store call blocks (SQLite): worker threads or the CLI. One
 * handle is shared by every thread: learning is serialised on one
 * connection, classifying uses a pool of reader connections and runs
 * concurrently (WAL readers never wait for the writer). */
#ifndef POSTHORN_BAYES_H
#define POSTHORN_BAYES_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <time.h>

#include "filter.h"
#include "mime.h"

struct server;
struct settings;

#define BAYES_MAX_TOKENS   5000          /* tokens taken from one message */
#define BAYES_TEXT_MAX     (256 * 1024)  /* decoded octets tokenized per text part */
#define BAYES_MAX_CLUES    150           /* most significant tokens combined */
#define BAYES_MIN_STRENGTH 0.1           /* |f - 0.5| a token must exceed to count */
#define BAYES_TOKEN_MAX    80            /* longest token text (prefix + word) */
#define BAYES_DIGEST_LEN   16            /* octets of SHA-256 kept per learned message */
/* Trained messages of each kind needed before the filter scores
 * (SpamAssassin's bayes_min_ham_num / bayes_min_spam_num). */
#define BAYES_MIN_LEARNED_DEFAULT 200

enum bayes_class { BAYES_HAM = 0, BAYES_SPAM = 1 };

/* --- tokenizer --------------------------------------------------------------- */

typedef void (*bayes_token_fn)(const char *tok, size_t len, void *arg);

/* Calls fn for every token of msg[0..len) in order (duplicates
 * included), at most BAYES_MAX_TOKENS times. `mime` is its parse, or
 * NULL to parse here. Returns the number of tokens, or -1 when out of
 * memory. */
long bayes_tokenize(const char *msg, size_t len, const struct mime_part *mime,
                    bayes_token_fn fn, void *arg);

uint64_t bayes_hash(const char *tok, size_t len);

/* A message's distinct token hashes, ascending. */
struct bayes_tokens {
    uint64_t *h;
    size_t n;
};
int bayes_tokens_get(const char *msg, size_t len, const struct mime_part *mime,
                     struct bayes_tokens *out);
void bayes_tokens_free(struct bayes_tokens *t);

/* The digest that identifies a message among the learned ones (see above). */
void bayes_digest(const char *msg, size_t len, const struct mime_part *mime,
                  unsigned char out[BAYES_DIGEST_LEN]);

/* --- combining (pure functions) --------------------------------------------------- */

/* Robinson's f(w) for a token seen in `spam` of nspam spam and `ham` of
 * nham ham messages; 0.5 for an unknown token. */
double bayes_token_prob(uint64_t spam, uint64_t ham, uint64_t nspam, uint64_t nham);
/* The chi-square survival function for x2 with v (even) degrees of
 * freedom. */
double bayes_chi2q(double x2, unsigned v);
/* Keeps the significant probabilities of f[0..n) (|f - 0.5| >
 * BAYES_MIN_STRENGTH), the most extreme first, at most BAYES_MAX_CLUES;
 * reorders f and returns how many were kept. */
size_t bayes_select(double *f, size_t n);
/* Fisher's combination of f[0..n) (all of them): 0.5 when n is 0. */
double bayes_combine(const double *f, size_t n);

/* The SpamAssassin-style band of a probability and its score weight.
 * BAYES_00 .. BAYES_95 have SpamAssassin's weights; BAYES_99 and
 * BAYES_999 weigh more than SpamAssassin's (3.5 and 3.7 there) because
 * posthorn has few other rules to add to them: BAYES_999 alone reaches
 * the default SA_TAG2 (6.31), i.e. marks spam, BAYES_99 does with 1.3
 * points from other rules. tests/bench/README.md has the measurements
 * behind this. */
struct bayes_band {
    const char *name;
    double min;                  /* lowest probability of the band */
    double score;
};
const struct bayes_band *bayes_band_of(double prob);

/* --- the store ------------------------------------------------------------------ */

struct bayes;

/* Opens (creating and migrating) the database at path. NULL with a reason. */
struct bayes *bayes_open(const char *path, char *err, size_t errlen);
void bayes_close(struct bayes *b);

struct bayes_totals {
    uint64_t spam, ham;          /* messages learned */
    uint64_t tokens;             /* distinct tokens stored (bayes_totals_full only) */
};
/* Learned message counts. Returns 0 or -1. */
int bayes_totals(struct bayes *b, struct bayes_totals *out);
/* The same with the number of tokens (a table scan: for `setup spam stats`). */
int bayes_totals_full(struct bayes *b, struct bayes_totals *out);

enum bayes_learn_result {
    BAYES_LEARNED,               /* new: its tokens were added to `cls` */
    BAYES_ALREADY,               /* learned as `cls` before: nothing changed */
    BAYES_RELEARNED,             /* learned as the other class: its tokens moved */
    BAYES_LEARN_ERROR,           /* logged */
};
/* Learns one message as `cls` in one transaction; `now` is the tokens'
 * last-learned time. `mime` as for bayes_tokenize. */
enum bayes_learn_result bayes_learn(struct bayes *b, const char *msg, size_t len,
                                    const struct mime_part *mime, enum bayes_class cls,
                                    time_t now);
/* Unlearns a message. Returns 1 when it had been learned, 0 when not, -1
 * on error. */
int bayes_forget(struct bayes *b, const char *msg, size_t len);
/* The class a message was learned as: 0 ham, 1 spam, -1 not learned, -2
 * error. */
int bayes_learned_class(struct bayes *b, const char *msg, size_t len);

struct bayes_score {
    double prob;                 /* 0 ham .. 1 spam */
    size_t ntokens;              /* distinct tokens of the message */
    size_t nclues;               /* the ones combined */
};
/* Classifies a message against the store. Returns 0 or -1. */
int bayes_classify(struct bayes *b, const char *msg, size_t len, const struct mime_part *mime,
                   struct bayes_score *out);

/* --- the filter and the daemon's learning (bayes_filter.c) ---------------------- */

/* The FILTER_DATA filter: with ENABLE_SPAMASSASSIN=1 and at least
 * BAYES_MIN_LEARNED (default 200) messages of each class learned, adds
 * the band's score with the band's name as reason (BAYES_00..BAYES_999). */
extern const struct filter_ops bayes_filter;

/* BAYES_MIN_LEARNED: the trained messages of each class needed. */
unsigned bayes_min_learned(const struct settings *st);

/* The daemon's shared handle on STATE_DIR/bayes.db, opened on first use
 * (blocking: worker threads). NULL when it cannot be opened (logged once). */
struct bayes *bayes_shared(const struct settings *st);

/* IMAP: messages uids[0..n) now in `folder` (NULL = INBOX) of `address`
 * were moved or copied there out of / into Junk: learns them as `cls` on
 * the worker pool, reading them through the mail index, without making
 * the caller wait. Does nothing unless ENABLE_SPAMASSASSIN=1. Call on the
 * loop thread; uids is copied. */
void bayes_learn_moved(struct server *srv, const char *address, const char *folder,
                       const uint32_t *uids, size_t n, enum bayes_class cls);
/* The same in the shape of server.h's junk_moved hook. */
void bayes_junk_moved(struct server *srv, const char *address, const char *folder,
                      const uint32_t *uids, size_t n, bool spam);

#endif
