/* antivirus: the virus scan (ENABLE_CLAMAV), with libclamav in-process.
 *
 * At start the filter loads the signature database from CLAMAV_DB_DIR on
 * a worker thread, so the listeners open at once; until an engine is
 * ready every message gets 451 4.7.1 "Virus scanner not ready" (never an
 * unscanned accept). An empty, missing or corrupt database directory is
 * logged as an error at start and keeps the answer at 451 until a good
 * database appears there.
 *
 * End of data (port 25 and authenticated submission alike): the whole
 * message is scanned from memory with mail parsing on (MIME parts,
 * base64/uuencode/binhex, archives, office documents, PDF, packed
 * executables); of the heuristics only "a limit was exceeded" is on, since
 * past its limits (nesting, number of files, scan time) libclamav stops
 * looking and would otherwise answer clean.
 *   clean                          X-Virus-Scanned: ClamAV using posthorn
 *   infected                       554 5.7.1 Virus found: <signature name>
 *   a limit exceeded               554 5.7.1 Message cannot be scanned for viruses
 *                                  (<limit> exceeded); the scan time limit
 *                                  gives 451 4.7.1 instead (a busy machine
 *                                  says nothing about the message)
 *   clean, but libclamav logged an error during the scan (it answers clean
 *   when it cannot unpack into TMPDIR)
 *                                  451 4.7.1, reason CLAMAV_ERROR
 *   larger than CLAMAV_MESSAGE_SIZE_LIMIT
 *                                  accepted unscanned, with
 *                                  X-Virus-Scanned: skipped (message too large)
 *   libclamav fails on the message 451 4.7.1 (logged with libclamav's reason)
 * A message of exactly the limit is scanned.
 *
 * Reload: every 60 s (every 5 s while no engine is ready) a worker job
 * checks the directory with cl_statchkdir; when freshclam has written new
 * files a new engine is built on that worker and swapped in. Engines are
 * reference-counted: scans in flight finish on the old one, which is freed
 * by whoever drops the last reference (always a worker thread, except at
 * stop). A reload that fails keeps the previous engine and logs the error.
 * libclamav writes temporary files while unpacking (TMPDIR, else /tmp).
 * Each load logs its signature count, time, and the process's memory
 * (VmRSS before and after, VmHWM: the peak during the load). */
#ifndef POSTHORN_ANTIVIRUS_H
#define POSTHORN_ANTIVIRUS_H

#include <stdbool.h>

#include "filter.h"

extern const struct filter_ops clamav_filter;

#define CLAMAV_CHECK_INTERVAL          60.0  /* seconds, with an engine */
#define CLAMAV_CHECK_INTERVAL_NOT_READY 5.0  /* seconds, without one */

#define CLAMAV_HEADER_CLEAN   "X-Virus-Scanned: ClamAV using posthorn"
#define CLAMAV_HEADER_SKIPPED "X-Virus-Scanned: skipped (message too large)"

/* --- below: for the unit tests (and the filter itself) --------------------- */

struct cl_engine;

/* The current engine with one more reference, or NULL when none is ready.
 * Give it back with clamav_release(). Any thread. */
struct cl_engine *clamav_acquire(void);
void clamav_release(struct cl_engine *e);

/* What the periodic job does: checks dir for changed database files (or
 * any, when no engine is loaded) and, if so, builds a new engine and swaps
 * it in. Loads serialize. Blocking: a worker thread (or a test). Returns 1
 * when a new engine was swapped in, 0 when nothing changed, -1 when
 * loading failed (logged; the previous engine, if any, stays). */
int clamav_check(const char *dir);

/* Scans msg[0..len) with engine e (which may be NULL: not ready) and fills
 * r and, when clean or skipped, the header to add (whole field, CRLF).
 * size_limit 0 means no limit. Blocking. */
void clamav_scan(struct cl_engine *e, const char *msg, size_t len, unsigned long long size_limit,
                 const char *id, struct filter_result *r, struct buf *headers);

/* The last successful load. Memory in KiB from /proc/self/status. */
struct clamav_load_stats {
    unsigned signatures;
    double seconds;
    long rss_before_kb;     /* VmRSS before the load */
    long hwm_kb;            /* VmHWM after it: the peak during the load (the
                             * process's peak so far where /proc/self/clear_refs
                             * may not be written, e.g. after dropping root) */
    long rss_after_kb;      /* VmRSS after the swap (the old engine is freed then
                             * unless scans still hold it) */
    unsigned generation;    /* 1 for the first engine, +1 per swap */
};
void clamav_last_load(struct clamav_load_stats *out);

#endif
