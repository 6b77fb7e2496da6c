/* The Bayes filter at end of data, and the daemon's learning from IMAP
 * moves into and out of Junk. See bayes.h. */
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "accounts.h"
#include "bayes.h"
#include "log.h"
#include "mailindex.h"
#include "server.h"
#include "util.h"


unsigned bayes_min_learned(const struct settings *st)
{
    return st->bayes_min_learned ? st->bayes_min_learned : BAYES_MIN_LEARNED_DEFAULT;
}

/* --- the shared handle --------------------------------------------------------------- */

/* Opened on first use, on a worker thread (never the loop), and kept. */
static pthread_mutex_t open_lock = PTHREAD_MUTEX_INITIALIZER;
static struct bayes *shared;
static bool open_failed;

struct bayes *bayes_shared(const struct settings *st)
{
    pthread_mutex_lock(&open_lock);
    if (!shared && !open_failed) {
        char path[4096], err[512];
        snprintf(path, sizeof path, "%s/bayes.db", st->state_dir);
        shared = bayes_open(path, err, sizeof err);
        if (!shared) {
            /* Logged once: Bayes is then skipped, not a reason to refuse mail. */
            open_failed = true;
            log_error("bayes: %s; Bayes scoring and learning are off until restart", err);
        }
    }
    struct bayes *b = shared;
    pthread_mutex_unlock(&open_lock);
    return b;
}

static void stop(void)
{
    pthread_mutex_lock(&open_lock);
    bayes_close(shared);
    shared = NULL;
    open_failed = false;
    pthread_mutex_unlock(&open_lock);
}

/* --- the filter ------------------------------------------------------------------------ */

static bool enabled(const struct settings *st)
{
    return st->enable_spamassassin;
}

static void data_hook(const struct filter_txn *t, struct filter_result *r)
{
    const struct settings *st = t->srv->settings;
    r->verdict = FILTER_ACCEPT;
    struct bayes *b = bayes_shared(st);
    if (!b)
        return;
    struct bayes_totals tot;
    if (bayes_totals(b, &tot) < 0) {
        log_warn("bayes: %s: cannot read the totals; not scored", t->id);
        return;
    }
    unsigned min = bayes_min_learned(st);
    if (tot.spam < min || tot.ham < min) {
        log_debug("bayes: %s: not scored: %llu spam and %llu ham learned, %u of each needed",
                  t->id, (unsigned long long)tot.spam, (unsigned long long)tot.ham, min);
        return;
    }
    struct bayes_score sc;
    if (bayes_classify(b, t->msg, t->len, t->mime, &sc) < 0) {
        log_warn("bayes: %s: classification failed; not scored", t->id);
        return;
    }
    const struct bayes_band *band = bayes_band_of(sc.prob);
    log_debug("bayes: %s: p=%.4f from %zu of %zu tokens: %s", t->id, sc.prob, sc.nclues,
              sc.ntokens, band->name);
    r->verdict = FILTER_SCORE;
    r->score = band->score;
    snprintf(r->reason, sizeof r->reason, "%s", band->name);
}

const struct filter_ops bayes_filter = {
    .name = "bayes",
    .enabled = enabled,
    .stop = stop,
    .hook = { [FILTER_DATA] = data_hook },
};

/* --- learning from IMAP ------------------------------------------------------------------ */

struct learn_job {
    struct server *srv;
    char address[ACCOUNTS_ADDR_MAX + 1];
    char *folder;                /* NULL = INBOX */
    uint32_t *uids;
    size_t n;
    enum bayes_class cls;
};

static void learn_job_free(void *arg)
{
    struct learn_job *j = arg;
    free(j->folder);
    free(j->uids);
    free(j);
}

static void learn_work(void *arg)
{
    struct learn_job *j = arg;
    struct bayes *b = bayes_shared(j->srv->settings);
    char err[256];
    struct mailindex *ix = b ? mailindex_open(j->srv->store, j->address, err, sizeof err) : NULL;
    if (!ix) {
        if (b)
            log_warn("bayes: cannot learn from %s: %s", j->address, err);
        return;
    }
    struct buf msg = BUF_INIT;
    size_t learned = 0;
    for (size_t i = 0; i < j->n; i++) {
        if (mailindex_read(ix, j->folder, j->uids[i], &msg, err, sizeof err) < 0) {
            /* Moved on or expunged meanwhile: nothing to learn. */
            log_debug("bayes: %s uid %u: %s", j->address, j->uids[i], err);
            continue;
        }
        enum bayes_learn_result r = bayes_learn(b, msg.data ? msg.data : "", msg.len, NULL,
                                                j->cls, time(NULL));
        if (r == BAYES_LEARNED || r == BAYES_RELEARNED)
            learned++;
    }
    buf_free(&msg);
    mailindex_close(ix);
    log_info("bayes: learned %zu of %zu messages of %s as %s", learned, j->n, j->address,
             j->cls == BAYES_SPAM ? "spam" : "ham");
}

void bayes_learn_moved(struct server *srv, const char *address, const char *folder,
                       const uint32_t *uids, size_t n, enum bayes_class cls)
{
    if (!srv->settings->enable_spamassassin || n == 0)
        return;
    struct learn_job *j = calloc(1, sizeof *j);
    if (!j)
        goto nomem;
    j->srv = srv;
    j->cls = cls;
    snprintf(j->address, sizeof j->address, "%s", address);
    j->folder = folder ? strdup(folder) : NULL;
    j->uids = malloc(n * sizeof *uids);
    if ((folder && !j->folder) || !j->uids)
        goto nomem;
    for (size_t i = 0; i < n; i++)
        if (uids[i])
            j->uids[j->n++] = uids[i];
    if (workers_submit(srv->workers, learn_work, learn_job_free, j) == 0)
        return;
nomem:
    if (j)
        learn_job_free(j);
    log_warn("bayes: out of memory; %zu messages of %s not learned", n, address);
}

void bayes_junk_moved(struct server *srv, const char *address, const char *folder,
                      const uint32_t *uids, size_t n, bool spam)
{
    bayes_learn_moved(srv, address, folder, uids, n, spam ? BAYES_SPAM : BAYES_HAM);
}
