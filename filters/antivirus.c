/* The virus scan with libclamav. See antivirus.h.
 *
 * Threads: the engine pointer is shared under `mu`; scans take a reference
 * (cl_engine_addref) and drop it when done, so a swap never frees an engine
 * under a running scan. Loads are serialized by `load_mu`, which also
 * guards the directory's stat snapshot. The timer, `busy` and `started`
 * belong to the loop thread. */
#include "antivirus.h"

#include <clamav.h>
#include <ev.h>
#include <limits.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "log.h"
#include "server.h"
#include "workers.h"

#define VIRNAME_MAX 128

static pthread_mutex_t mu = PTHREAD_MUTEX_INITIALIZER;
static struct cl_engine *engine;          /* under mu; one reference is ours */
static bool stopped = true;               /* under mu: no engine may be installed */
static struct clamav_load_stats last;     /* under mu */

static pthread_mutex_t load_mu = PTHREAD_MUTEX_INITIALIZER;
static struct cl_stat dbstat;             /* under load_mu */
static bool have_dbstat;                  /* under load_mu */
static bool load_failed_logged;           /* under load_mu: one error line per bad state */
static atomic_bool forget_snapshot;       /* set by stop: the next check loads afresh */

static pthread_once_t init_once = PTHREAD_ONCE_INIT;
static cl_error_t init_rc;

/* Loop thread only. */
static struct {
    struct server *srv;
    ev_timer timer;
    bool started;
    bool busy;                            /* a check job is queued or running */
    bool again;                           /* restarted while busy: check afresh after it */
    char *dir;                            /* CLAMAV_DB_DIR, for the jobs */
} lt;

/* --- libclamav's own messages go to our log --------------------------------- */

/* Errors libclamav reported on this thread since clamav_scan reset it. A
 * scan runs on the calling thread, and libclamav 1.4 answers CL_CLEAN when
 * it cannot even create its temporary directory (TMPDIR missing or full):
 * a clean answer with an error beside it was no scan. The message callback
 * gets no scan context for that error, hence a thread-local count. */
static _Thread_local unsigned scan_errors;

static void on_clamav_msg(enum cl_msg severity, const char *fullmsg, const char *msg, void *ctx)
{
    (void)fullmsg;
    (void)ctx;
    size_t n = strlen(msg);
    while (n && (msg[n - 1] == '\n' || msg[n - 1] == '\r'))
        n--;
    if (severity == CL_MSG_ERROR) {
        scan_errors++;
        log_error("clamav: libclamav: %.*s", (int)n, msg);
    } else if (severity == CL_MSG_WARN) {
        log_warn("clamav: libclamav: %.*s", (int)n, msg);
    } else {
        log_debug("clamav: libclamav: %.*s", (int)n, msg);
    }
}

static void init_library(void)
{
    cl_set_clcb_msg(on_clamav_msg);
    init_rc = cl_init(CL_INIT_DEFAULT);
    if (init_rc != CL_SUCCESS)
        log_error("clamav: cannot initialise libclamav: %s", cl_strerror(init_rc));
}

/* --- engines ------------------------------------------------------------- */

struct cl_engine *clamav_acquire(void)
{
    pthread_mutex_lock(&mu);
    struct cl_engine *e = engine;
    if (e && cl_engine_addref(e) != CL_SUCCESS)
        e = NULL;
    pthread_mutex_unlock(&mu);
    return e;
}

void clamav_release(struct cl_engine *e)
{
    if (e)
        cl_engine_free(e);
}

/* Replaces the current engine with e (NULL: none) and drops our reference
 * to the old one, outside the lock: freeing a large engine takes a while. */
static void swap_engine(struct cl_engine *e)
{
    pthread_mutex_lock(&mu);
    struct cl_engine *old = engine;
    if (stopped) {
        old = e;                           /* stopped meanwhile: keep nothing */
    } else {
        engine = e;
    }
    pthread_mutex_unlock(&mu);
    if (old)
        cl_engine_free(old);
}

/* "VmRSS:" and "VmHWM:" of this process in KiB (-1 when unknown). */
static void read_memory(long *rss, long *hwm)
{
    *rss = *hwm = -1;
    FILE *f = fopen("/proc/self/status", "r");
    if (!f)
        return;
    char line[256];
    while (fgets(line, sizeof line, f)) {
        if (strncmp(line, "VmRSS:", 6) == 0)
            *rss = strtol(line + 6, NULL, 10);
        else if (strncmp(line, "VmHWM:", 6) == 0)
            *hwm = strtol(line + 6, NULL, 10);
    }
    fclose(f);
}

/* Resets VmHWM to the current RSS, so that the next reading is the peak of
 * what follows. Only allowed to the process's owner; harmless if refused. */
static void reset_peak(void)
{
    FILE *f = fopen("/proc/self/clear_refs", "w");
    if (!f)
        return;
    fputs("5", f);
    fclose(f);
}

static double now_seconds(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec + (double)ts.tv_nsec / 1e9;
}

/* Scan limits: libclamav's defaults, raised when CLAMAV_MESSAGE_SIZE_LIMIT
 * is larger, so that a message under the limit is scanned whole. */
static void set_limits(struct cl_engine *e, unsigned long long size_limit)
{
    static const enum cl_engine_field fields[] = { CL_ENGINE_MAX_FILESIZE,
                                                   CL_ENGINE_MAX_SCANSIZE };
    for (size_t i = 0; i < sizeof fields / sizeof *fields; i++) {
        int err = 0;
        long long cur = cl_engine_get_num(e, fields[i], &err);
        if (!err && size_limit > (unsigned long long)cur && size_limit <= (unsigned long long)LLONG_MAX)
            cl_engine_set_num(e, fields[i], (long long)size_limit);
    }
}

static unsigned long long load_size_limit;   /* set at start, read by loads */

/* Builds an engine from dir. Returns it, or NULL with the reason logged
 * (unless quiet). */
static struct cl_engine *build_engine(const char *dir, unsigned *sigs, bool quiet, bool have_old)
{
    struct cl_engine *e = cl_engine_new();
    if (!e) {
        log_error("clamav: cannot create an engine (out of memory)");
        return NULL;
    }
    set_limits(e, load_size_limit);
    *sigs = 0;
    cl_error_t rc = cl_load(dir, e, sigs, CL_DB_STDOPT);
    const char *why = cl_strerror(rc);
    if (rc == CL_SUCCESS && *sigs == 0) {
        rc = CL_EMALFDB;
        why = "no signatures";
    }
    if (rc == CL_SUCCESS) {
        rc = cl_engine_compile(e);
        why = cl_strerror(rc);
    }
    if (rc != CL_SUCCESS) {
        if (!quiet)
            log_error("clamav: cannot load the virus database from %s: %s (%s)", dir, why,
                      have_old ? "the previous database stays in use"
                               : "mail gets 451 4.7.1 until a good database is there");
        cl_engine_free(e);
        return NULL;
    }
    return e;
}

/* Whether the directory changed since the last snapshot (any error counts
 * as a change: the load will say what is wrong). Takes a new snapshot
 * when it did. Under load_mu. */
static bool dir_changed(const char *dir)
{
    if (atomic_exchange(&forget_snapshot, false) && have_dbstat) {
        cl_statfree(&dbstat);
        have_dbstat = false;
    }
    if (have_dbstat) {
        bool same_dir = dbstat.dir && strcmp(dbstat.dir, dir) == 0;
        if (same_dir && cl_statchkdir(&dbstat) == 0)
            return false;
        cl_statfree(&dbstat);
        have_dbstat = false;
    }
    memset(&dbstat, 0, sizeof dbstat);
    /* Taken before loading, so files written during the load count as a
     * change next time. */
    if (cl_statinidir(dir, &dbstat) == CL_SUCCESS)
        have_dbstat = true;
    return true;
}

int clamav_check(const char *dir)
{
    pthread_once(&init_once, init_library);
    if (init_rc != CL_SUCCESS)
        return -1;
    pthread_mutex_lock(&load_mu);
    /* Without a change there is nothing new to load, whether the last
     * load worked or not (a corrupt database is not reloaded every few
     * seconds). */
    if (!dir_changed(dir)) {
        pthread_mutex_unlock(&load_mu);
        return 0;
    }
    struct clamav_load_stats st = { 0 };
    long hwm0;
    read_memory(&st.rss_before_kb, &hwm0);
    reset_peak();
    double t0 = now_seconds();
    /* A bad directory is logged once, not at every check until it is fixed. */
    pthread_mutex_lock(&mu);
    bool have_old = engine != NULL;
    pthread_mutex_unlock(&mu);
    struct cl_engine *e = build_engine(dir, &st.signatures, load_failed_logged, have_old);
    if (!e) {
        load_failed_logged = true;
        pthread_mutex_unlock(&load_mu);
        return -1;
    }
    load_failed_logged = false;
    st.seconds = now_seconds() - t0;
    long rss_loaded;
    read_memory(&rss_loaded, &st.hwm_kb);
    swap_engine(e);
    long hwm_unused;
    read_memory(&st.rss_after_kb, &hwm_unused);
    pthread_mutex_lock(&mu);
    st.generation = last.generation + 1;
    last = st;
    pthread_mutex_unlock(&mu);
    pthread_mutex_unlock(&load_mu);
    log_info("clamav: %s virus database from %s: %u signatures in %.2f s; memory: rss "
             "%ld KiB before, peak %ld KiB, %ld KiB after", have_old ? "reloaded" : "loaded",
             dir, st.signatures, st.seconds, st.rss_before_kb, st.hwm_kb, st.rss_after_kb);
    return 1;
}

void clamav_last_load(struct clamav_load_stats *out)
{
    pthread_mutex_lock(&mu);
    *out = last;
    pthread_mutex_unlock(&mu);
}

/* --- scanning ----------------------------------------------------------- */

static void refuse(struct filter_result *r, enum filter_verdict v, int code, const char *enh,
                   const char *reason, const char *text)
{
    r->verdict = v;
    r->code = code;
    snprintf(r->enhanced, sizeof r->enhanced, "%s", enh);
    snprintf(r->reason, sizeof r->reason, "%s", reason);
    snprintf(r->text, sizeof r->text, "%s", text);
}

/* A signature name for a reply line: printable ASCII without spaces, cut
 * at VIRNAME_MAX. */
static void clean_virname(const char *in, char *out, size_t outlen)
{
    size_t n = 0;
    for (size_t i = 0; in && in[i] && n + 1 < outlen; i++) {
        unsigned char c = (unsigned char)in[i];
        out[n++] = c > 0x20 && c < 0x7f ? (char)c : '_';
    }
    out[n] = '\0';
}

#define LIMITS_PREFIX "Heuristics.Limits.Exceeded."

/* libclamav gave up at one of its limits. Running out of time says nothing
 * about the message (the machine may be busy): try again later. Any other
 * limit is a property of the message (nesting, number of parts, unpacked
 * size) and the same on every attempt: refused, never accepted unscanned. */
static void limits_exceeded(const char *limit, const char *id, struct filter_result *r)
{
    char name[VIRNAME_MAX + 1], text[FILTER_TEXT_MAX];
    clean_virname(limit, name, sizeof name);
    log_warn("clamav: %s scan incomplete: %s exceeded", id, name);
    if (strcmp(name, "MaxScanTime") == 0) {
        refuse(r, FILTER_TEMPFAIL, 451, "4.7.1", "CLAMAV_TIMEOUT",
               "Virus scan took too long, try again later");
        return;
    }
    snprintf(text, sizeof text, "Message cannot be scanned for viruses (%s exceeded)", name);
    refuse(r, FILTER_REJECT, 554, "5.7.1", "CLAMAV_LIMITS", text);
}

void clamav_scan(struct cl_engine *e, const char *msg, size_t len, unsigned long long size_limit,
                 const char *id, struct filter_result *r, struct buf *headers)
{
    id = id ? id : "-";
    if (size_limit && len > size_limit) {
        log_info("clamav: %s not scanned: %zu bytes, over CLAMAV_MESSAGE_SIZE_LIMIT %llu",
                 id, len, size_limit);
        r->verdict = FILTER_ACCEPT;
        if (headers)
            buf_append(headers, CLAMAV_HEADER_SKIPPED "\r\n", sizeof CLAMAV_HEADER_SKIPPED + 1);
        return;
    }
    if (!e) {
        refuse(r, FILTER_TEMPFAIL, 451, "4.7.1", "CLAMAV_NOT_READY", "Virus scanner not ready");
        return;
    }
    cl_fmap_t *map = cl_fmap_open_memory(msg, len);
    if (!map) {
        refuse(r, FILTER_TEMPFAIL, 451, "4.7.1", "CLAMAV_ERROR",
               "Virus scan failed, try again later");
        return;
    }
    struct cl_scan_options opt;
    memset(&opt, 0, sizeof opt);
    /* Every parser, as clamd has by default; heuristic alerts (phishing,
     * broken executables, encrypted archives) stay off: they would refuse
     * legitimate mail with a 5xx. The one exception is EXCEEDS_MAX: without
     * it libclamav stops at a limit (MaxRecursion 17, MaxFiles 10000,
     * MaxScanTime 120 s, ...) and answers clean, so a virus 19 multipart
     * levels deep, or after 10,000 parts, would be accepted as scanned. A
     * real signature match still wins over the limit alert. */
    opt.parse = CL_SCAN_PARSE_ARCHIVE | CL_SCAN_PARSE_ELF | CL_SCAN_PARSE_PDF |
                CL_SCAN_PARSE_SWF | CL_SCAN_PARSE_HWP3 | CL_SCAN_PARSE_XMLDOCS |
                CL_SCAN_PARSE_MAIL | CL_SCAN_PARSE_OLE2 | CL_SCAN_PARSE_HTML |
                CL_SCAN_PARSE_PE | CL_SCAN_PARSE_ONENOTE | CL_SCAN_PARSE_IMAGE |
                CL_SCAN_PARSE_IMAGE_FUZZY_HASH;
    opt.heuristic = CL_SCAN_HEURISTIC_EXCEEDS_MAX;
    const char *virname = NULL;
    unsigned long scanned = 0;
    scan_errors = 0;
    cl_error_t rc = cl_scanmap_callback(map, NULL, &virname, &scanned, e, &opt, NULL);
    cl_fmap_close(map);
    if (rc == CL_CLEAN && scan_errors) {
        log_error("clamav: %s scan failed: libclamav reported an error but no result", id);
        refuse(r, FILTER_TEMPFAIL, 451, "4.7.1", "CLAMAV_ERROR",
               "Virus scan failed, try again later");
        return;
    }
    if (rc == CL_CLEAN) {
        r->verdict = FILTER_ACCEPT;
        if (headers)
            buf_append(headers, CLAMAV_HEADER_CLEAN "\r\n", sizeof CLAMAV_HEADER_CLEAN + 1);
        return;
    }
    if (rc == CL_VIRUS && virname && strncmp(virname, LIMITS_PREFIX, strlen(LIMITS_PREFIX)) == 0) {
        limits_exceeded(virname + strlen(LIMITS_PREFIX), id, r);
        return;
    }
    if (rc == CL_VIRUS) {
        char name[VIRNAME_MAX + 1], text[FILTER_TEXT_MAX];
        clean_virname(virname ? virname : "unknown", name, sizeof name);
        snprintf(text, sizeof text, "Virus found: %s", name);
        log_debug("clamav: %s virus found: %s", id, name);
        refuse(r, FILTER_REJECT, 554, "5.7.1", "CLAMAV_VIRUS", text);
        return;
    }
    log_error("clamav: %s scan failed: %s", id, cl_strerror(rc));
    refuse(r, FILTER_TEMPFAIL, 451, "4.7.1", "CLAMAV_ERROR", "Virus scan failed, try again later");
}

/* --- the filter ----------------------------------------------------------- */

static bool enabled(const struct settings *st)
{
    return st->enable_clamav;
}

static void data_hook(const struct filter_txn *t, struct filter_result *r)
{
    const struct settings *st = t->srv->settings;
    /* Over the limit: no engine needed, so it is not a "not ready". */
    struct cl_engine *e = st->clamav_message_size_limit &&
                          t->len > st->clamav_message_size_limit ? NULL : clamav_acquire();
    clamav_scan(e, t->msg, t->len, st->clamav_message_size_limit, t->id, r, t->add_headers);
    clamav_release(e);
}

static void submit_check(void);

static void check_work(void *arg)
{
    (void)arg;
    clamav_check(lt.dir);
}

static void rearm(void)
{
    pthread_mutex_lock(&mu);
    bool ready = engine != NULL;
    pthread_mutex_unlock(&mu);
    lt.timer.repeat = ready ? CLAMAV_CHECK_INTERVAL : CLAMAV_CHECK_INTERVAL_NOT_READY;
    ev_timer_again(lt.srv->loop, &lt.timer);
}

/* What the jobs use, once none can be running and the filter is stopped. */
static void forget_dir(void)
{
    if (have_dbstat)
        cl_statfree(&dbstat);
    have_dbstat = false;
    load_failed_logged = false;
    free(lt.dir);
    lt.dir = NULL;
}

static void check_done(void *arg)
{
    (void)arg;
    lt.busy = false;
    if (!lt.started) {
        forget_dir();
        return;
    }
    rearm();
    if (lt.again) {
        lt.again = false;
        atomic_store(&forget_snapshot, true);
        submit_check();
    }
}

static void submit_check(void)
{
    if (lt.busy)
        return;
    if (workers_submit(lt.srv->workers, check_work, check_done, NULL) == 0)
        lt.busy = true;
}

static void on_timer(struct ev_loop *loop, ev_timer *w, int revents)
{
    (void)loop;
    (void)w;
    (void)revents;
    submit_check();
}

static int start(struct server *srv)
{
    if (lt.started)
        return 0;
    if (lt.busy && lt.dir && strcmp(lt.dir, srv->settings->clamav_db_dir) != 0)
        return -1;                        /* a job of an earlier run still reads lt.dir */
    char *dir = strdup(srv->settings->clamav_db_dir);
    if (!dir)
        return -1;
    if (!lt.busy) {
        free(lt.dir);
        lt.dir = dir;
    } else {
        free(dir);
        lt.again = true;
    }
    lt.srv = srv;
    load_size_limit = srv->settings->clamav_message_size_limit;
    pthread_mutex_lock(&mu);
    stopped = false;
    pthread_mutex_unlock(&mu);
    lt.started = true;
    log_info("clamav: loading the virus database from %s in the background", lt.dir);
    ev_init(&lt.timer, on_timer);
    lt.timer.repeat = CLAMAV_CHECK_INTERVAL_NOT_READY;
    ev_timer_again(srv->loop, &lt.timer);
    ev_unref(srv->loop);                  /* the timer alone must not keep the loop running */
    submit_check();
    return 0;
}

static void stop(void)
{
    if (!lt.started)
        return;
    lt.started = false;
    ev_ref(lt.srv->loop);
    ev_timer_stop(lt.srv->loop, &lt.timer);
    pthread_mutex_lock(&mu);
    stopped = true;
    struct cl_engine *e = engine;
    engine = NULL;
    pthread_mutex_unlock(&mu);
    if (e)
        cl_engine_free(e);
    if (!lt.busy)
        forget_dir();                     /* else check_done does it */
    else
        atomic_store(&forget_snapshot, true);
}

const struct filter_ops clamav_filter = {
    .name = "clamav",
    .enabled = enabled,
    .start = start,
    .stop = stop,
    .hook = { [FILTER_DATA] = data_hook },
    .for_submission = true,
};
