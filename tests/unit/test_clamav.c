/* Unit tests for filters/antivirus.c: the libclamav engine loaded from a
 * database made here (MD5 signatures of the EICAR string and of Debian's
 * clamav-testfiles clam.exe), scans of raw files, MIME attachments and
 * archives, the not-ready and size-limit answers, the background load at
 * start, and reloads that swap engines while scans run. */
#include <errno.h>
#include <fcntl.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>
#include <utime.h>

#include <openssl/evp.h>

#include "antivirus.h"
#include "buf.h"
#include "log.h"
#include "sasl.h"
#include "server.h"
#include "settings.h"
#include "test.h"
#include "workers.h"

#define EICAR "X5O!P%@AP[4\\PZX54(P^)7CC)7}$EICAR-STANDARD-ANTIVIRUS-TEST-FILE!$H+H*"
#define TESTFILES "/usr/share/clamav-testfiles"

static char tmpdir[] = "/tmp/test_clamav.XXXXXX";
static char dbdir[300], emptydir[300], logdir[300];
static struct buf clam_exe = BUF_INIT;     /* clamav-testfiles' clam.exe */

/* --- helpers ---------------------------------------------------------------- */

static int read_file(const char *path, struct buf *out)
{
    int fd = open(path, O_RDONLY);
    if (fd < 0)
        return -1;
    char chunk[8192];
    ssize_t n;
    while ((n = read(fd, chunk, sizeof chunk)) > 0)
        buf_append(out, chunk, (size_t)n);
    close(fd);
    return n < 0 ? -1 : 0;
}

static int write_file(const char *path, const void *data, size_t len)
{
    FILE *f = fopen(path, "w");
    if (!f)
        return -1;
    size_t w = fwrite(data, 1, len, f);
    return fclose(f) == 0 && w == len ? 0 : -1;
}

/* An .hdb line for data: md5:size:name. */
static void hdb_line(const void *data, size_t len, const char *name, struct buf *out)
{
    unsigned char md[EVP_MAX_MD_SIZE];
    unsigned mdlen = 0;
    EVP_Digest(data, len, md, &mdlen, EVP_md5(), NULL);
    for (unsigned i = 0; i < mdlen; i++)
        buf_printf(out, "%02x", md[i]);
    buf_printf(out, ":%zu:%s\n", len, name);
}

/* Writes dir/name with signatures for EICAR and (with_clam) clam.exe, and
 * gives it a modification time `age` seconds in the past, so that two
 * writes within one second still look different to cl_statchkdir. */
static int write_db(const char *dir, const char *name, bool eicar, bool with_clam, int age)
{
    struct buf db = BUF_INIT;
    if (eicar)
        hdb_line(EICAR, strlen(EICAR), "Eicar-Test-Signature", &db);
    if (with_clam)
        hdb_line(clam_exe.data, clam_exe.len, "ClamAV-Test-File", &db);
    char path[400];
    snprintf(path, sizeof path, "%s/%s", dir, name);
    int rc = write_file(path, db.data, db.len);
    buf_free(&db);
    struct utimbuf t = { .actime = time(NULL) - age, .modtime = time(NULL) - age };
    if (rc == 0)
        rc = utime(path, &t);
    return rc;
}

static uint32_t crc32_of(const unsigned char *p, size_t len)
{
    uint32_t c = 0xffffffffu;
    for (size_t i = 0; i < len; i++) {
        c ^= p[i];
        for (int k = 0; k < 8; k++)
            c = (c >> 1) ^ (0xedb88320u & -(c & 1u));
    }
    return c ^ 0xffffffffu;
}

static void le16(struct buf *b, unsigned v)
{
    unsigned char x[2] = { (unsigned char)v, (unsigned char)(v >> 8) };
    buf_append(b, x, 2);
}

static void le32(struct buf *b, uint32_t v)
{
    unsigned char x[4] = { (unsigned char)v, (unsigned char)(v >> 8), (unsigned char)(v >> 16),
                           (unsigned char)(v >> 24) };
    buf_append(b, x, 4);
}

/* A zip archive holding one stored (uncompressed) file. */
static void make_zip(const char *name, const void *data, size_t len, struct buf *out)
{
    uint32_t crc = crc32_of(data, len);
    size_t nlen = strlen(name);
    le32(out, 0x04034b50);
    le16(out, 20); le16(out, 0); le16(out, 0); le16(out, 0); le16(out, 0x21);
    le32(out, crc); le32(out, (uint32_t)len); le32(out, (uint32_t)len);
    le16(out, (unsigned)nlen); le16(out, 0);
    buf_append(out, name, nlen);
    buf_append(out, data, len);
    size_t cd = out->len;
    le32(out, 0x02014b50);
    le16(out, 20); le16(out, 20); le16(out, 0); le16(out, 0); le16(out, 0); le16(out, 0x21);
    le32(out, crc); le32(out, (uint32_t)len); le32(out, (uint32_t)len);
    le16(out, (unsigned)nlen); le16(out, 0); le16(out, 0); le16(out, 0); le16(out, 0);
    le32(out, 0); le32(out, 0);
    buf_append(out, name, nlen);
    size_t cdlen = out->len - cd;
    le32(out, 0x06054b50);
    le16(out, 0); le16(out, 0); le16(out, 1); le16(out, 1);
    le32(out, (uint32_t)cdlen); le32(out, (uint32_t)cd); le16(out, 0);
}

/* A multipart/mixed message: a text part and `data` as a base64
 * attachment called `filename`. */
static void make_mail(const char *filename, const void *data, size_t len, struct buf *out)
{
    buf_printf(out, "From: <a@example.org>\r\nTo: <u@example.test>\r\nSubject: attachment\r\n"
               "MIME-Version: 1.0\r\nContent-Type: multipart/mixed; boundary=\"BOUNDARY\"\r\n"
               "\r\n--BOUNDARY\r\nContent-Type: text/plain\r\n\r\nSee the attachment.\r\n"
               "--BOUNDARY\r\nContent-Type: application/octet-stream; name=\"%s\"\r\n"
               "Content-Transfer-Encoding: base64\r\n"
               "Content-Disposition: attachment; filename=\"%s\"\r\n\r\n", filename, filename);
    size_t cap = (len + 2) / 3 * 4 + 1;
    char *b64 = malloc(cap);
    long n = b64 ? sasl_base64_encode(data, len, b64, cap) : -1;
    for (long i = 0; i < n; i += 76) {
        long k = n - i < 76 ? n - i : 76;
        buf_append(out, b64 + i, (size_t)k);
        buf_append(out, "\r\n", 2);
    }
    free(b64);
    buf_printf(out, "--BOUNDARY--\r\n");
}

/* Scans msg with the current engine; returns the verdict, the reply text
 * and the headers the filter added. */
struct scan {
    enum filter_verdict verdict;
    int code;
    char enhanced[16];
    char text[FILTER_TEXT_MAX];
    char header[128];
};

static struct scan scan_with(struct cl_engine *e, const void *msg, size_t len,
                             unsigned long long limit)
{
    struct filter_result r;
    memset(&r, 0, sizeof r);
    struct buf hdr = BUF_INIT;
    clamav_scan(e, msg, len, limit, "test", &r, &hdr);
    struct scan s = { .verdict = r.verdict, .code = r.code };
    snprintf(s.enhanced, sizeof s.enhanced, "%s", r.enhanced);
    snprintf(s.text, sizeof s.text, "%s", r.text);
    snprintf(s.header, sizeof s.header, "%.*s", (int)hdr.len, hdr.data ? hdr.data : "");
    buf_free(&hdr);
    return s;
}

static struct scan scan_now(const void *msg, size_t len)
{
    struct cl_engine *e = clamav_acquire();
    struct scan s = scan_with(e, msg, len, 0);
    clamav_release(e);
    return s;
}

static bool found(const struct scan *s, const char *name)
{
    char want[FILTER_TEXT_MAX];
    snprintf(want, sizeof want, "Virus found: %s", name);
    return s->verdict == FILTER_REJECT && s->code == 554 && strcmp(s->enhanced, "5.7.1") == 0 &&
           strncmp(s->text, want, strlen(want)) == 0;
}

static bool clean(const struct scan *s)
{
    return s->verdict == FILTER_ACCEPT && strcmp(s->header, CLAMAV_HEADER_CLEAN "\r\n") == 0;
}

/* --- a daemon-like setting: loop, workers, settings -------------------------- */

static struct settings st;
static struct server srv;

static int load_settings(const char *dir)
{
    char err[512];
    setenv("OVERRIDE_HOSTNAME", "mx.example.test", 1);
    setenv("ENABLE_CLAMAV", "1", 1);
    setenv("CLAMAV_DB_DIR", dir, 1);
    settings_free(&st);
    int rc = settings_load(NULL, &st, err, sizeof err);
    if (rc)
        fprintf(stderr, "settings: %s\n", err);
    srv.settings = &st;
    return rc;
}

static void run_jobs(void)
{
    for (int i = 0; i < 60000 && workers_pending(srv.workers); i++)
        ev_run(srv.loop, EVRUN_ONCE);
}

static bool log_has(const char *needle)
{
    char path[400];
    snprintf(path, sizeof path, "%s/mail.log", logdir);
    struct buf b = BUF_INIT;
    read_file(path, &b);
    const char *s = buf_cstr(&b);
    bool yes = s && strstr(s, needle);
    buf_free(&b);
    return yes;
}

/* The hook as the pipeline calls it. */
static struct scan run_hook(const char *msg, size_t len)
{
    struct filter_result r;
    memset(&r, 0, sizeof r);
    struct buf hdr = BUF_INIT;
    struct filter_txn t;
    memset(&t, 0, sizeof t);
    t.srv = &srv;
    t.id = "hook";
    t.msg = msg;
    t.len = len;
    t.add_headers = &hdr;
    clamav_filter.hook[FILTER_DATA](&t, &r);
    struct scan s = { .verdict = r.verdict, .code = r.code };
    snprintf(s.enhanced, sizeof s.enhanced, "%s", r.enhanced);
    snprintf(s.text, sizeof s.text, "%s", r.text);
    snprintf(s.header, sizeof s.header, "%.*s", (int)hdr.len, hdr.data ? hdr.data : "");
    buf_free(&hdr);
    return s;
}

/* --- tests ------------------------------------------------------------------ */

TEST(test_filter_ops)
{
    CHECK_STR(clamav_filter.name, "clamav");
    CHECK(clamav_filter.for_submission);
    CHECK(clamav_filter.hook[FILTER_DATA] != NULL);
    CHECK(clamav_filter.hook[FILTER_MAIL] == NULL);
    CHECK(clamav_filter.start && clamav_filter.stop);
    CHECK_INT(load_settings(dbdir), 0);
    CHECK(clamav_filter.enabled(&st));
    setenv("ENABLE_CLAMAV", "0", 1);
    char err[256];
    struct settings off;
    CHECK_INT(settings_load(NULL, &off, err, sizeof err), 0);
    CHECK(!clamav_filter.enabled(&off));
    settings_free(&off);
}

TEST(test_not_ready_tempfails)
{
    struct scan s = scan_with(NULL, EICAR, strlen(EICAR), 0);
    CHECK_INT(s.verdict, FILTER_TEMPFAIL);
    CHECK_INT(s.code, 451);
    CHECK_STR(s.enhanced, "4.7.1");
    CHECK_STR(s.text, "Virus scanner not ready");
    CHECK_STR(s.header, "");
    /* Before start the hook has no engine either: never an unscanned accept. */
    CHECK(clamav_acquire() == NULL);
    CHECK_INT(load_settings(dbdir), 0);
    s = run_hook("Subject: x\r\n\r\nclean\r\n", 22);
    CHECK_INT(s.verdict, FILTER_TEMPFAIL);
    CHECK_STR(s.text, "Virus scanner not ready");
}

TEST(test_empty_dir_then_database)
{
    /* Start against an empty directory: the ports would be open at once
     * (start only submits the load), the load fails with a clear error,
     * and mail gets 451 until a database is written. */
    CHECK_INT(load_settings(emptydir), 0);
    CHECK_INT(clamav_filter.start(&srv), 0);
    run_jobs();
    CHECK(clamav_acquire() == NULL);
    CHECK(log_has("cannot load the virus database from"));
    struct scan s = run_hook(EICAR, strlen(EICAR));
    CHECK_INT(s.verdict, FILTER_TEMPFAIL);
    CHECK_INT(s.code, 451);
    /* unchanged: nothing to do, still not ready */
    CHECK_INT(clamav_check(emptydir), 0);
    CHECK(clamav_acquire() == NULL);
    /* a database appears (the timer would find it within 5 s) */
    CHECK_INT(write_db(emptydir, "test.hdb", true, false, 5), 0);
    CHECK_INT(clamav_check(emptydir), 1);
    struct cl_engine *e = clamav_acquire();
    CHECK(e != NULL);
    clamav_release(e);
    s = run_hook(EICAR, strlen(EICAR));
    CHECK(found(&s, "Eicar-Test-Signature"));
    clamav_filter.stop();
    CHECK(clamav_acquire() == NULL);
}

TEST(test_corrupt_database)
{
    char dir[400];
    snprintf(dir, sizeof dir, "%s/corrupt", tmpdir);
    CHECK_INT(mkdir(dir, 0755), 0);
    const char junk[] = "this is not a signature\n";
    char path[450];
    snprintf(path, sizeof path, "%s/bad.hdb", dir);
    CHECK_INT(write_file(path, junk, sizeof junk - 1), 0);
    CHECK_INT(load_settings(dir), 0);
    CHECK_INT(clamav_filter.start(&srv), 0);
    run_jobs();
    CHECK(clamav_acquire() == NULL);
    struct scan s = run_hook(EICAR, strlen(EICAR));
    CHECK_INT(s.verdict, FILTER_TEMPFAIL);
    clamav_filter.stop();
}

/* From here on one engine stays loaded from dbdir (EICAR and clam.exe). */
TEST(test_load_at_start)
{
    CHECK_INT(load_settings(dbdir), 0);
    CHECK_INT(clamav_filter.start(&srv), 0);
    /* The load runs on a worker: start returned before it finished. */
    run_jobs();
    struct cl_engine *e = clamav_acquire();
    CHECK(e != NULL);
    clamav_release(e);
    struct clamav_load_stats ls;
    clamav_last_load(&ls);
    CHECK_INT(ls.signatures, 2);
    CHECK(ls.rss_before_kb > 0 && ls.hwm_kb >= ls.rss_before_kb && ls.rss_after_kb > 0);
    CHECK(log_has("clamav: loaded virus database from"));
    /* unchanged directory: no reload */
    CHECK_INT(clamav_check(dbdir), 0);
}

TEST(test_scan_raw)
{
    struct scan s = scan_now(EICAR, strlen(EICAR));
    CHECK(found(&s, "Eicar-Test-Signature"));
    CHECK_STR(s.header, "");
    s = scan_now(clam_exe.data, clam_exe.len);
    CHECK(found(&s, "ClamAV-Test-File"));
    const char text[] = "Subject: hello\r\n\r\nJust text, nothing to see.\r\n";
    s = scan_now(text, sizeof text - 1);
    CHECK(clean(&s));
    /* EICAR with a byte more is another file: its hash does not match */
    char more[128];
    int n = snprintf(more, sizeof more, "%s!", EICAR);
    s = scan_now(more, (size_t)n);
    CHECK(clean(&s));
}

TEST(test_scan_mail_attachments)
{
    struct buf m = BUF_INIT;
    make_mail("eicar.com", EICAR, strlen(EICAR), &m);
    struct scan s = scan_now(m.data, m.len);
    CHECK(found(&s, "Eicar-Test-Signature"));

    struct buf zip = BUF_INIT;
    make_zip("eicar.com", EICAR, strlen(EICAR), &zip);
    s = scan_now(zip.data, zip.len);
    CHECK(found(&s, "Eicar-Test-Signature"));
    buf_reset(&m);
    make_mail("eicar.zip", zip.data, zip.len, &m);
    s = scan_now(m.data, m.len);
    CHECK(found(&s, "Eicar-Test-Signature"));

    /* the same attachment, harmless */
    buf_reset(&zip);
    make_zip("readme.txt", "hello\n", 6, &zip);
    buf_reset(&m);
    make_mail("readme.zip", zip.data, zip.len, &m);
    s = scan_now(m.data, m.len);
    CHECK(clean(&s));
    buf_free(&zip);
    buf_free(&m);
}

TEST(test_scan_clamav_testfiles)
{
    /* clam.exe archived, compressed, packed and embedded in documents,
     * each sent as an attachment. */
    static const char *const files[] = { "clam.zip", "clam.7z", "clam.tar.gz", "clam.exe.bz2",
                                         "clam.cab", "clam-upx.exe", "clam.ole.doc", "clam.pdf" };
    for (size_t i = 0; i < sizeof files / sizeof *files; i++) {
        char path[256];
        snprintf(path, sizeof path, TESTFILES "/%s", files[i]);
        struct buf f = BUF_INIT, m = BUF_INIT;
        CHECK_INT(read_file(path, &f), 0);
        make_mail(files[i], f.data, f.len, &m);
        struct scan s = scan_now(m.data, m.len);
        if (!found(&s, "ClamAV-Test-File"))
            fprintf(stderr, "  %s: %s\n", files[i], s.text);
        CHECK(found(&s, "ClamAV-Test-File"));
        buf_free(&f);
        buf_free(&m);
    }
    /* a whole mailbox message as shipped (uuencoded) */
    struct buf f = BUF_INIT;
    CHECK_INT(read_file(TESTFILES "/clam.exe.mbox.uu", &f), 0);
    struct scan s = scan_now(f.data, f.len);
    CHECK(found(&s, "ClamAV-Test-File"));
    buf_free(&f);
}

TEST(test_size_limit)
{
    struct buf m = BUF_INIT;
    make_mail("eicar.com", EICAR, strlen(EICAR), &m);
    while (m.len <= 1100)   /* over 1K, for the setting below */
        buf_printf(&m, "An epilogue line after the last part, to make it longer.\r\n");
    struct cl_engine *e = clamav_acquire();
    /* over the limit: accepted unscanned, with a header saying so */
    struct scan s = scan_with(e, m.data, m.len, m.len - 1);
    CHECK_INT(s.verdict, FILTER_ACCEPT);
    CHECK_STR(s.header, CLAMAV_HEADER_SKIPPED "\r\n");
    /* exactly the limit: scanned */
    s = scan_with(e, m.data, m.len, m.len);
    CHECK(found(&s, "Eicar-Test-Signature"));
    clamav_release(e);
    /* over the limit needs no engine: no 451 for it while not ready */
    s = scan_with(NULL, m.data, m.len, 10);
    CHECK_INT(s.verdict, FILTER_ACCEPT);
    /* through the hook with CLAMAV_MESSAGE_SIZE_LIMIT */
    setenv("CLAMAV_MESSAGE_SIZE_LIMIT", "1K", 1);
    CHECK_INT(load_settings(dbdir), 0);
    unsetenv("CLAMAV_MESSAGE_SIZE_LIMIT");
    CHECK(m.len > 1024);
    s = run_hook(m.data, m.len);
    CHECK_INT(s.verdict, FILTER_ACCEPT);
    CHECK_STR(s.header, CLAMAV_HEADER_SKIPPED "\r\n");
    s = run_hook(EICAR, strlen(EICAR));
    CHECK(found(&s, "Eicar-Test-Signature"));
    CHECK_INT(load_settings(dbdir), 0);
    buf_free(&m);
}

TEST(test_virus_name_sanitized)
{
    /* A signature name with odd bytes (it comes from a file) must not
     * reach the reply line as such. */
    char dir[400];
    snprintf(dir, sizeof dir, "%s/odd", tmpdir);
    CHECK_INT(mkdir(dir, 0755), 0);
    struct buf db = BUF_INIT;
    hdb_line(EICAR, strlen(EICAR), "Odd\x01Name\x7f", &db);
    char path[450];
    snprintf(path, sizeof path, "%s/odd.hdb", dir);
    CHECK_INT(write_file(path, db.data, db.len), 0);
    buf_free(&db);
    struct cl_engine *old = clamav_acquire();
    CHECK_INT(clamav_check(dir), 1);
    struct scan s = scan_now(EICAR, strlen(EICAR));
    CHECK_INT(s.verdict, FILTER_REJECT);
    for (const char *p = s.text; *p; p++)
        CHECK((unsigned char)*p >= 0x20 && (unsigned char)*p < 0x7f);
    CHECK(strncmp(s.text, "Virus found: Odd_Name_", 22) == 0);
    /* back to the main database */
    clamav_release(old);
    CHECK_INT(clamav_check(dbdir), 1);
}

/* Threads scanning in a loop while the main thread reloads. */
struct scanner {
    pthread_t th;
    atomic_bool *stop;
    unsigned scans, misses;
};

static void *scanner_main(void *arg)
{
    struct scanner *sc = arg;
    while (!atomic_load(sc->stop)) {
        struct scan s = scan_now(EICAR, strlen(EICAR));
        sc->scans++;
        if (!found(&s, "Eicar-Test-Signature"))
            sc->misses++;
    }
    return NULL;
}

TEST(test_reload_swaps_engines_during_scans)
{
    /* A scan in flight holds the old engine (generation g); a database
     * update brings a new one. Old db: EICAR only; new: also clam.exe. */
    char dir[400];
    snprintf(dir, sizeof dir, "%s/reload", tmpdir);
    CHECK_INT(mkdir(dir, 0755), 0);
    CHECK_INT(write_db(dir, "main.hdb", true, false, 20), 0);
    CHECK_INT(clamav_check(dir), 1);
    struct clamav_load_stats before;
    clamav_last_load(&before);
    struct cl_engine *old = clamav_acquire();
    CHECK(old != NULL);
    struct scan s = scan_with(old, clam_exe.data, clam_exe.len, 0);
    CHECK(clean(&s));

    /* freshclam-like update: a new file appears */
    CHECK_INT(write_db(dir, "daily.hdb", false, true, 10), 0);
    CHECK_INT(clamav_check(dir), 1);
    struct clamav_load_stats after;
    clamav_last_load(&after);
    CHECK_INT(after.generation, before.generation + 1);
    CHECK_INT(after.signatures, 2);
    struct cl_engine *cur = clamav_acquire();
    CHECK(cur != NULL && cur != old);
    /* the old engine still works for the scan that holds it */
    s = scan_with(old, clam_exe.data, clam_exe.len, 0);
    CHECK(clean(&s));
    s = scan_with(old, EICAR, strlen(EICAR), 0);
    CHECK(found(&s, "Eicar-Test-Signature"));
    s = scan_with(cur, clam_exe.data, clam_exe.len, 0);
    CHECK(found(&s, "ClamAV-Test-File"));
    clamav_release(old);      /* the last reference: freed here (ASan checks) */
    clamav_release(cur);

    /* reloads while four threads scan without pause */
    atomic_bool stop = false;
    struct scanner sc[4];
    memset(sc, 0, sizeof sc);
    for (int i = 0; i < 4; i++) {
        sc[i].stop = &stop;
        CHECK_INT(pthread_create(&sc[i].th, NULL, scanner_main, &sc[i]), 0);
    }
    for (int k = 0; k < 3; k++) {
        CHECK_INT(write_db(dir, "daily.hdb", false, true, 9 - k), 0);
        CHECK_INT(clamav_check(dir), 1);
    }
    atomic_store(&stop, true);
    unsigned scans = 0, misses = 0;
    for (int i = 0; i < 4; i++) {
        pthread_join(sc[i].th, NULL);
        scans += sc[i].scans;
        misses += sc[i].misses;
    }
    CHECK(scans > 0);
    CHECK_INT(misses, 0);
    clamav_last_load(&after);
    CHECK_INT(after.generation, before.generation + 4);

    /* a broken update keeps the engine that works */
    char path[450];
    snprintf(path, sizeof path, "%s/broken.hdb", dir);
    CHECK_INT(write_file(path, "garbage\n", 8), 0);
    CHECK_INT(clamav_check(dir), -1);
    s = scan_now(clam_exe.data, clam_exe.len);
    CHECK(found(&s, "ClamAV-Test-File"));
    unlink(path);
    fprintf(stderr, "  reload memory (test database, %u signatures): rss before %ld KiB, "
            "peak %ld KiB, after %ld KiB, %.3f s\n", after.signatures, after.rss_before_kb,
            after.hwm_kb, after.rss_after_kb, after.seconds);
}

TEST(test_stop)
{
    clamav_filter.stop();
    CHECK(clamav_acquire() == NULL);
    struct scan s = scan_now(EICAR, strlen(EICAR));
    CHECK_INT(s.verdict, FILTER_TEMPFAIL);
    /* and again: a new start loads afresh */
    CHECK_INT(load_settings(dbdir), 0);
    CHECK_INT(clamav_filter.start(&srv), 0);
    run_jobs();
    s = run_hook(EICAR, strlen(EICAR));
    CHECK(found(&s, "Eicar-Test-Signature"));
    clamav_filter.stop();
}

int main(void)
{
    if (!mkdtemp(tmpdir)) {
        perror("mkdtemp");
        return 1;
    }
    snprintf(dbdir, sizeof dbdir, "%s/db", tmpdir);
    snprintf(emptydir, sizeof emptydir, "%s/empty", tmpdir);
    snprintf(logdir, sizeof logdir, "%s/log", tmpdir);
    char err[256];
    if (mkdir(dbdir, 0755) || mkdir(emptydir, 0755) || mkdir(logdir, 0755) ||
        log_init(LOG_INFO, logdir, err, sizeof err) < 0) {
        perror("setup");
        return 1;
    }
    if (read_file(TESTFILES "/clam.exe", &clam_exe) < 0)
        fprintf(stderr, "%s/clam.exe: %s (install clamav-testfiles)\n", TESTFILES,
                strerror(errno));
    if (write_db(dbdir, "test.hdb", true, true, 30) < 0) {
        perror("write_db");
        return 1;
    }
    srv.loop = ev_loop_new(EVFLAG_AUTO);
    srv.workers = workers_create(srv.loop, 2);

    RUN(test_filter_ops);
    RUN(test_not_ready_tempfails);
    RUN(test_empty_dir_then_database);
    RUN(test_corrupt_database);
    RUN(test_load_at_start);
    RUN(test_scan_raw);
    RUN(test_scan_mail_attachments);
    RUN(test_scan_clamav_testfiles);
    RUN(test_size_limit);
    RUN(test_virus_name_sanitized);
    RUN(test_reload_swaps_engines_during_scans);
    RUN(test_stop);

    workers_destroy(srv.workers);
    ev_loop_destroy(srv.loop);
    settings_free(&st);
    buf_free(&clam_exe);
    log_close();
    char cmd[400];
    snprintf(cmd, sizeof cmd, "rm -rf '%s'", tmpdir);
    if (system(cmd) != 0)
        fprintf(stderr, "could not remove %s\n", tmpdir);
    return test_summary();
}
