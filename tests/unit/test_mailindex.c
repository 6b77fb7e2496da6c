/* Unit tests of the mailbox index over the Maildir store, in a temporary
 * directory under /tmp removed at the end. Each test uses its own address. */
#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <ftw.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

#include "log.h"
#include "mailindex.h"
#include "test.h"

static char root[64];       /* the test's directory */
static char mail_dir[128];  /* MAIL_DIR under it */
static struct mailstore *ms;

static int rm_entry(const char *p, const struct stat *st, int flag, struct FTW *f)
{
    (void)st; (void)flag; (void)f;
    return remove(p);
}

static void rm_rf(const char *p)
{
    nftw(p, rm_entry, 16, FTW_DEPTH | FTW_PHYS);
}

/* Delivers "Subject: <subject>" with CRLF line endings. */
static int deliver(const char *address, const char *folder, const char *subject)
{
    char msg[256], err[256];
    int n = snprintf(msg, sizeof msg, "From: a@example.org\r\nSubject: %s\r\n\r\nbody %s\r\n",
                     subject, subject);
    struct iovec iov = { msg, (size_t)n };
    struct mailstore_target t = { address, folder, NULL };
    int rc = mailstore_deliver(ms, &iov, 1, &t, 1, err, sizeof err);
    if (rc < 0)
        fprintf(stderr, "deliver: %s\n", err);
    return rc;
}

/* MAIL_DIR/<domain>/<local>[/.<folder>] of a "local@example.org" address. */
static void box_path(const char *local, const char *folder, char *out, size_t len)
{
    if (folder)
        snprintf(out, len, "%s/example.org/%s/.%s", mail_dir, local, folder);
    else
        snprintf(out, len, "%s/example.org/%s", mail_dir, local);
}

static void index_path(const char *local, char *out, size_t len)
{
    snprintf(out, len, "%s/example.org/%s/posthorn-index.db", mail_dir, local);
}

/* Finds the file of message `name` in new/ or cur/; writes its path. */
static bool find_file(const char *local, const char *folder, const char *name, char *out,
                      size_t len)
{
    static const char *const subs[] = { "new", "cur" };
    char box[512], dir[600];
    box_path(local, folder, box, sizeof box);
    size_t nlen = strlen(name);
    for (int i = 0; i < 2; i++) {
        snprintf(dir, sizeof dir, "%s/%s", box, subs[i]);
        DIR *d = opendir(dir);
        struct dirent *e;
        while (d && (e = readdir(d)) != NULL) {
            if (strncmp(e->d_name, name, nlen) == 0
                && (e->d_name[nlen] == '\0' || e->d_name[nlen] == ':')) {
                snprintf(out, len, "%s/%s", dir, e->d_name);
                closedir(d);
                return true;
            }
        }
        if (d)
            closedir(d);
    }
    return false;
}

static int write_file(const char *path, const char *data, size_t len)
{
    int fd = open(path, O_WRONLY | O_CREAT | O_TRUNC, 0600);
    if (fd < 0)
        return -1;
    ssize_t w = write(fd, data, len);
    close(fd);
    return w == (ssize_t)len ? 0 : -1;
}

static struct mailindex *open_ix(const char *address)
{
    char err[256] = "";
    struct mailindex *ix = mailindex_open(ms, address, err, sizeof err);
    if (!ix)
        fprintf(stderr, "mailindex_open(%s): %s\n", address, err);
    return ix;
}

static int sync_view(struct mailindex *ix, const char *folder, struct mailindex_view *v)
{
    char err[256] = "";
    int rc = mailindex_sync(ix, folder, v, err, sizeof err);
    if (rc < 0 && errno != ENOENT)
        fprintf(stderr, "mailindex_sync: %s\n", err);
    return rc;
}

/* The message text of a UID, NUL-terminated in a static buffer. */
static const char *read_uid(struct mailindex *ix, const char *folder, uint32_t uid)
{
    static char text[4096];
    struct buf b = BUF_INIT;
    char err[256];
    text[0] = '\0';
    if (mailindex_read(ix, folder, uid, &b, err, sizeof err) == 0)
        snprintf(text, sizeof text, "%.*s", (int)b.len, b.data);
    buf_free(&b);
    return text;
}

static bool contains(const char *hay, const char *needle)
{
    return strstr(hay, needle) != NULL;
}

TEST(uids_follow_arrival_order)
{
    struct mailindex *ix = open_ix("order@example.org");
    struct mailindex_view v;
    CHECK(ix != NULL);
    CHECK_INT(deliver("order@example.org", NULL, "m1"), 0);
    CHECK_INT(deliver("order@example.org", NULL, "m2"), 0);
    CHECK_INT(deliver("order@example.org", NULL, "m3"), 0);
    CHECK_INT(sync_view(ix, NULL, &v), 0);
    CHECK_INT(v.n, 3);
    CHECK_INT(v.uidnext, 4);
    CHECK(v.uidvalidity != 0);
    for (size_t i = 0; i < v.n && i < 3; i++) {
        char want[32];
        snprintf(want, sizeof want, "Subject: m%zu\r\n", i + 1);
        CHECK_INT(v.msgs[i].uid, i + 1);
        CHECK(contains(read_uid(ix, NULL, v.msgs[i].uid), want));
        CHECK_INT(v.msgs[i].size, strlen(read_uid(ix, NULL, v.msgs[i].uid)));
        CHECK_STR(v.msgs[i].flags, "");
        CHECK(v.msgs[i].internaldate > 0);
    }
    uint64_t hm = v.highestmodseq;
    uint32_t uv = v.uidvalidity;
    mailindex_view_free(&v);

    /* A second sync changes nothing. */
    CHECK_INT(sync_view(ix, "INBOX", &v), 0);
    CHECK_INT(v.n, 3);
    CHECK_INT(v.uidnext, 4);
    CHECK_INT(v.highestmodseq, hm);
    CHECK_INT(v.uidvalidity, uv);
    mailindex_view_free(&v);

    /* Later deliveries get the next UIDs. */
    CHECK_INT(deliver("order@example.org", NULL, "m4"), 0);
    CHECK_INT(deliver("order@example.org", NULL, "m5"), 0);
    CHECK_INT(sync_view(ix, NULL, &v), 0);
    CHECK_INT(v.n, 5);
    if (v.n == 5) {
        CHECK_INT(v.msgs[3].uid, 4);
        CHECK_INT(v.msgs[4].uid, 5);
        CHECK(contains(read_uid(ix, NULL, 5), "Subject: m5\r\n"));
        CHECK(v.msgs[4].modseq > hm);
    }
    CHECK_INT(v.uidvalidity, uv);
    mailindex_view_free(&v);

    /* An unknown UID is ENOENT. */
    struct buf b = BUF_INIT;
    char err[256];
    errno = 0;
    CHECK_INT(mailindex_read(ix, NULL, 99, &b, err, sizeof err), -1);
    CHECK_INT(errno, ENOENT);
    buf_free(&b);
    mailindex_close(ix);
}

TEST(changes_behind_its_back)
{
    const char *addr = "behind@example.org";
    struct mailindex *ix = open_ix(addr);
    struct mailindex_view v;
    char path[1200], to[900];
    for (int i = 0; i < 3; i++)
        CHECK_INT(deliver(addr, NULL, "x"), 0);
    CHECK_INT(sync_view(ix, NULL, &v), 0);
    CHECK_INT(v.n, 3);
    if (v.n != 3) {
        mailindex_view_free(&v);
        mailindex_close(ix);
        return;
    }
    char *gone = strdup(v.msgs[1].name), *flagged = strdup(v.msgs[2].name);
    uint64_t hm = v.highestmodseq;
    mailindex_view_free(&v);

    /* Another program removes one and flags another (unsorted flags). */
    CHECK(find_file("behind", NULL, gone, path, sizeof path));
    CHECK_INT(unlink(path), 0);
    CHECK(find_file("behind", NULL, flagged, path, sizeof path));
    char box[512];
    box_path("behind", NULL, box, sizeof box);
    snprintf(to, sizeof to, "%s/cur/%s:2,SR", box, flagged);
    CHECK_INT(rename(path, to), 0);

    CHECK_INT(sync_view(ix, NULL, &v), 0);
    CHECK_INT(v.n, 2);
    if (v.n == 2) {
        CHECK_INT(v.msgs[0].uid, 1);
        CHECK_INT(v.msgs[1].uid, 3);
        CHECK_STR(v.msgs[1].flags, "RS");
        CHECK(v.msgs[1].modseq > hm);
        CHECK_STR(v.msgs[0].flags, "");
    }
    CHECK(v.highestmodseq >= hm + 2);
    CHECK_INT(v.uidnext, 4);
    mailindex_view_free(&v);
    free(gone);
    free(flagged);
    mailindex_close(ix);
}

TEST(set_flags_and_expunge)
{
    const char *addr = "flags@example.org";
    struct mailindex *ix = open_ix(addr);
    struct mailindex_view v;
    char err[256], path[1200];
    for (int i = 0; i < 4; i++)
        CHECK_INT(deliver(addr, NULL, "f"), 0);
    CHECK_INT(sync_view(ix, NULL, &v), 0);
    CHECK_INT(v.n, 4);
    uint64_t hm = v.highestmodseq;
    char *name2 = v.n == 4 ? strdup(v.msgs[1].name) : NULL;
    char *name1 = v.n == 4 ? strdup(v.msgs[0].name) : NULL;
    mailindex_view_free(&v);
    if (!name1 || !name2) {
        mailindex_close(ix);
        return;
    }

    CHECK_INT(mailindex_set_flags(ix, NULL, 2, "SFS", err, sizeof err), 0);
    CHECK(find_file("flags", NULL, name2, path, sizeof path));
    CHECK(contains(path, "/cur/") && contains(path, ":2,FS"));
    CHECK_INT(sync_view(ix, NULL, &v), 0);
    if (v.n == 4) {
        CHECK_STR(v.msgs[1].flags, "FS");
        CHECK(v.msgs[1].modseq > hm);
        CHECK_INT(v.highestmodseq, v.msgs[1].modseq);
    }
    hm = v.highestmodseq;
    mailindex_view_free(&v);

    /* The same flags again change nothing; bad flags and UIDs are refused. */
    CHECK_INT(mailindex_set_flags(ix, NULL, 2, "FS", err, sizeof err), 0);
    errno = 0;
    CHECK_INT(mailindex_set_flags(ix, NULL, 2, "S\\", err, sizeof err), -1);
    CHECK_INT(errno, EINVAL);
    errno = 0;
    CHECK_INT(mailindex_set_flags(ix, NULL, 42, "S", err, sizeof err), -1);
    CHECK_INT(errno, ENOENT);
    CHECK_INT(mailindex_set_flags(ix, NULL, 2, "", err, sizeof err), 0);
    CHECK(find_file("flags", NULL, name2, path, sizeof path));
    CHECK(contains(path, ":2,") && path[strlen(path) - 1] == ',');

    /* Expunge: unknown UIDs are skipped, files and rows go. */
    uint32_t uids[] = { 1, 3, 999 };
    CHECK_INT(mailindex_expunge(ix, NULL, uids, 3, err, sizeof err), 2);
    CHECK(!find_file("flags", NULL, name1, path, sizeof path));
    CHECK(find_file("flags", NULL, name2, path, sizeof path));
    CHECK_INT(sync_view(ix, NULL, &v), 0);
    CHECK_INT(v.n, 2);
    if (v.n == 2) {
        CHECK_INT(v.msgs[0].uid, 2);
        CHECK_INT(v.msgs[1].uid, 4);
        CHECK_STR(v.msgs[0].flags, "");
    }
    CHECK(v.highestmodseq > hm);
    CHECK_INT(v.uidnext, 5);
    mailindex_view_free(&v);
    CHECK_INT(mailindex_expunge(ix, NULL, uids, 3, err, sizeof err), 0);
    free(name1);
    free(name2);
    mailindex_close(ix);
}

/* Close, optionally damage the index file, reopen; returns the new view. */
static void reopen(struct mailindex **ix, const char *addr, struct mailindex_view *v)
{
    mailindex_close(*ix);
    *ix = open_ix(addr);
    memset(v, 0, sizeof *v);
    if (*ix)
        CHECK_INT(sync_view(*ix, NULL, v), 0);
}

TEST(stable_across_reopen_and_rebuilt)
{
    const char *addr = "stable@example.org";
    struct mailindex *ix = open_ix(addr);
    struct mailindex_view v;
    char idx[600];
    index_path("stable", idx, sizeof idx);
    for (int i = 0; i < 3; i++)
        CHECK_INT(deliver(addr, NULL, "s"), 0);
    uint32_t del[] = { 1 };
    CHECK_INT(sync_view(ix, NULL, &v), 0);
    mailindex_view_free(&v);
    CHECK_INT(mailindex_expunge(ix, NULL, del, 1, NULL, 0), 1);
    CHECK_INT(sync_view(ix, NULL, &v), 0);
    uint32_t uv = v.uidvalidity;
    mailindex_view_free(&v);

    reopen(&ix, addr, &v);
    CHECK_INT(v.uidvalidity, uv);
    CHECK_INT(v.n, 2);
    if (v.n == 2) {
        CHECK_INT(v.msgs[0].uid, 2);
        CHECK_INT(v.msgs[1].uid, 3);
    }
    CHECK_INT(v.uidnext, 4);
    mailindex_view_free(&v);

    /* Index deleted: rebuilt, UIDs renumbered under a new UIDVALIDITY. */
    mailindex_close(ix);
    CHECK_INT(unlink(idx), 0);
    ix = NULL;
    reopen(&ix, addr, &v);   /* close(NULL) is a no-op */
    CHECK(v.uidvalidity != uv);
    CHECK_INT(v.n, 2);
    if (v.n == 2) {
        CHECK_INT(v.msgs[0].uid, 1);
        CHECK_INT(v.msgs[1].uid, 2);
    }
    mailindex_view_free(&v);
    mailindex_close(ix);
}

static bool log_contains(const char *needle)
{
    char path[200], text[65536];
    snprintf(path, sizeof path, "%s/log/mail.log", root);
    int fd = open(path, O_RDONLY);
    if (fd < 0)
        return false;
    ssize_t n = read(fd, text, sizeof text - 1);
    close(fd);
    if (n < 0)
        return false;
    text[n] = '\0';
    return strstr(text, needle) != NULL;
}

static int count_corrupt_copies(const char *local)
{
    char box[512];
    box_path(local, NULL, box, sizeof box);
    DIR *d = opendir(box);
    int n = 0;
    struct dirent *e;
    while (d && (e = readdir(d)) != NULL)
        n += strncmp(e->d_name, "posthorn-index.db.corrupt-", 26) == 0;
    if (d)
        closedir(d);
    return n;
}

TEST(garbage_index_rebuilt_with_warning)
{
    const char *addr = "garbage@example.org";
    struct mailindex *ix = open_ix(addr);
    struct mailindex_view v;
    char idx[600], junk[8192];
    index_path("garbage", idx, sizeof idx);
    CHECK_INT(deliver(addr, NULL, "g1"), 0);
    CHECK_INT(deliver(addr, NULL, "g2"), 0);
    CHECK_INT(sync_view(ix, NULL, &v), 0);
    uint32_t uv = v.uidvalidity;
    mailindex_view_free(&v);
    mailindex_close(ix);

    for (size_t i = 0; i < sizeof junk; i++)
        junk[i] = (char)("this is not an SQLite database "[i % 31]);
    CHECK_INT(write_file(idx, junk, sizeof junk), 0);
    CHECK(!log_contains(idx));
    ix = NULL;
    reopen(&ix, addr, &v);
    CHECK(ix != NULL);
    CHECK(v.uidvalidity != uv);
    CHECK_INT(v.n, 2);
    if (v.n == 2) {
        CHECK_INT(v.msgs[0].uid, 1);
        CHECK(contains(read_uid(ix, NULL, 2), "Subject: g2\r\n"));
    }
    mailindex_view_free(&v);
    CHECK(log_contains("damaged"));
    CHECK(log_contains(idx));
    CHECK_INT(count_corrupt_copies("garbage"), 1);
    mailindex_close(ix);
}

TEST(foreign_lf_files_are_crlf)
{
    const char *addr = "foreign@example.org";
    struct mailindex *ix = open_ix(addr);
    struct mailindex_view v;
    char box[512], path[1200];
    CHECK_INT(deliver(addr, NULL, "own"), 0);   /* creates cur/new/tmp */
    box_path("foreign", NULL, box, sizeof box);
    static const char lf[] = "Subject: lf\n\nline one\r\nline two\n";
    snprintf(path, sizeof path, "%s/cur/1000.P1.otherhost,S=31:2,S", box);
    CHECK_INT(write_file(path, lf, sizeof lf - 1), 0);
    /* Dovecot's W= is trusted without reading the file. */
    snprintf(path, sizeof path, "%s/new/1001.P2.otherhost,S=5,W=777", box);
    CHECK_INT(write_file(path, "hello", 5), 0);
    CHECK_INT(sync_view(ix, NULL, &v), 0);
    CHECK_INT(v.n, 3);
    int matched = 0;
    for (size_t i = 0; i < v.n; i++) {
        if (strcmp(v.msgs[i].name, "1000.P1.otherhost,S=31") == 0) {
            matched++;
            CHECK_INT(v.msgs[i].size, sizeof lf - 1 + 3);
            CHECK_STR(v.msgs[i].flags, "S");
            CHECK_STR(read_uid(ix, NULL, v.msgs[i].uid),
                      "Subject: lf\r\n\r\nline one\r\nline two\r\n");
        } else if (strcmp(v.msgs[i].name, "1001.P2.otherhost,S=5,W=777") == 0) {
            matched++;
            CHECK_INT(v.msgs[i].size, 777);
            CHECK_STR(read_uid(ix, NULL, v.msgs[i].uid), "hello");
        }
    }
    CHECK_INT(matched, 2);
    mailindex_view_free(&v);
    mailindex_close(ix);
}

TEST(shared_handle_refcount)
{
    const char *addr = "shared@example.org";
    struct mailindex *a = open_ix(addr), *b = open_ix(addr), *c = open_ix("other@example.org");
    struct mailindex_view v;
    CHECK(a != NULL);
    CHECK(a == b);
    CHECK(c != NULL && c != a);
    mailindex_close(a);
    CHECK_INT(deliver(addr, NULL, "sh"), 0);
    CHECK_INT(sync_view(b, NULL, &v), 0);  /* still open through b */
    CHECK_INT(v.n, 1);
    mailindex_view_free(&v);
    mailindex_close(b);
    mailindex_close(c);
    char err[256] = "";
    CHECK(mailindex_open(ms, "no-at-sign", err, sizeof err) == NULL);
    CHECK(err[0] != '\0');
}

TEST(folders_like_inbox)
{
    const char *addr = "folders@example.org";
    struct mailindex *ix = open_ix(addr);
    struct mailindex_view v, inbox;
    char err[256];

    /* A user without mail has an empty INBOX. */
    CHECK_INT(sync_view(ix, NULL, &inbox), 0);
    CHECK_INT(inbox.n, 0);
    CHECK_INT(inbox.uidnext, 1);
    mailindex_view_free(&inbox);

    errno = 0;
    CHECK_INT(sync_view(ix, "Nope", &v), -1);
    CHECK_INT(errno, ENOENT);
    CHECK_INT(v.n, 0);

    CHECK_INT(deliver(addr, "Junk", "j1"), 0);
    CHECK_INT(deliver(addr, "Junk", "j2"), 0);
    CHECK_INT(deliver(addr, NULL, "i1"), 0);
    CHECK_INT(sync_view(ix, "Junk", &v), 0);
    CHECK_INT(sync_view(ix, NULL, &inbox), 0);
    CHECK_INT(v.n, 2);
    CHECK_INT(inbox.n, 1);
    CHECK(v.uidvalidity != inbox.uidvalidity);
    if (v.n == 2) {
        CHECK_INT(v.msgs[1].uid, 2);
        CHECK(contains(read_uid(ix, "Junk", 2), "Subject: j2\r\n"));
    }
    CHECK(contains(read_uid(ix, NULL, 1), "Subject: i1\r\n"));
    CHECK_INT(mailindex_set_flags(ix, "Junk", 1, "S", err, sizeof err), 0);
    uint32_t one = 1;
    CHECK_INT(mailindex_expunge(ix, "Junk", &one, 1, err, sizeof err), 1);
    uint32_t uv = v.uidvalidity;
    mailindex_view_free(&v);
    mailindex_view_free(&inbox);
    CHECK_INT(sync_view(ix, "Junk", &v), 0);
    CHECK_INT(v.n, 1);
    CHECK_INT(v.uidvalidity, uv);
    mailindex_view_free(&v);

    /* Deleted and recreated: a new UIDVALIDITY. */
    CHECK_INT(mailstore_folder_delete(ms, addr, "Junk"), 0);
    errno = 0;
    CHECK_INT(sync_view(ix, "Junk", &v), -1);
    CHECK_INT(errno, ENOENT);
    CHECK_INT(deliver(addr, "Junk", "j3"), 0);
    CHECK_INT(sync_view(ix, "Junk", &v), 0);
    CHECK(v.uidvalidity != uv);
    CHECK_INT(v.n, 1);
    if (v.n == 1)
        CHECK_INT(v.msgs[0].uid, 1);
    mailindex_view_free(&v);
    mailindex_close(ix);
}

/* --- Concurrency: delivery and syncs at once --------------------------------- */

#define DELIVERERS 2
#define SYNCERS 2
#define PER_DELIVERER 40

static atomic_int deliverers_left;
static atomic_int thread_errors;

static void *deliverer(void *arg)
{
    (void)arg;
    for (int i = 0; i < PER_DELIVERER; i++)
        if (deliver("threads@example.org", NULL, "t") < 0)
            atomic_fetch_add(&thread_errors, 1);
    atomic_fetch_sub(&deliverers_left, 1);
    return NULL;
}

/* Each view must extend the previous one: same UIDs for the same names. */
static bool extends(const struct mailindex_view *prev, const struct mailindex_view *v)
{
    if (v->n < prev->n)
        return false;
    for (size_t i = 0; i < prev->n; i++)
        if (v->msgs[i].uid != prev->msgs[i].uid || strcmp(v->msgs[i].name, prev->msgs[i].name) != 0)
            return false;
    for (size_t i = 1; i < v->n; i++)
        if (v->msgs[i].uid <= v->msgs[i - 1].uid)
            return false;
    return true;
}

static void *syncer(void *arg)
{
    (void)arg;
    struct mailindex *ix = open_ix("threads@example.org");
    struct mailindex_view prev = { 0 }, v;
    char err[256];
    bool last = false;
    while (ix && !last) {
        last = atomic_load(&deliverers_left) == 0;
        if (mailindex_sync(ix, NULL, &v, err, sizeof err) < 0) {
            fprintf(stderr, "sync: %s\n", err);
            atomic_fetch_add(&thread_errors, 1);
            break;
        }
        if (!extends(&prev, &v))
            atomic_fetch_add(&thread_errors, 1);
        if (v.n > 0 && mailindex_set_flags(ix, NULL, v.msgs[v.n / 2].uid, "S", err, sizeof err) < 0)
            atomic_fetch_add(&thread_errors, 1);
        mailindex_view_free(&prev);
        prev = v;
    }
    if (!ix)
        atomic_fetch_add(&thread_errors, 1);
    mailindex_view_free(&prev);
    mailindex_close(ix);
    return NULL;
}

TEST(concurrent_delivery_and_sync)
{
    pthread_t d[DELIVERERS], s[SYNCERS];
    atomic_store(&deliverers_left, DELIVERERS);
    atomic_store(&thread_errors, 0);
    CHECK_INT(deliver("threads@example.org", NULL, "first"), 0);
    for (int i = 0; i < SYNCERS; i++)
        pthread_create(&s[i], NULL, syncer, NULL);
    for (int i = 0; i < DELIVERERS; i++)
        pthread_create(&d[i], NULL, deliverer, NULL);
    for (int i = 0; i < DELIVERERS; i++)
        pthread_join(d[i], NULL);
    for (int i = 0; i < SYNCERS; i++)
        pthread_join(s[i], NULL);
    CHECK_INT(atomic_load(&thread_errors), 0);

    struct mailindex *ix = open_ix("threads@example.org");
    struct mailindex_view v;
    CHECK_INT(sync_view(ix, NULL, &v), 0);
    CHECK_INT(v.n, 1 + DELIVERERS * PER_DELIVERER);
    for (size_t i = 0; i < v.n; i++)
        CHECK_INT(v.msgs[i].uid, i + 1);
    CHECK_INT(v.uidnext, v.n + 1);
    mailindex_view_free(&v);
    mailindex_close(ix);
}

int main(void)
{
    char err[256];
    snprintf(root, sizeof root, "/tmp/test_mailindex.XXXXXX");
    if (!mkdtemp(root)) {
        perror("mkdtemp");
        return 1;
    }
    snprintf(mail_dir, sizeof mail_dir, "%s/mail", root);
    char log_dir[128];
    snprintf(log_dir, sizeof log_dir, "%s/log", root);
    if (log_init(LOG_INFO, log_dir, err, sizeof err) < 0
        || !(ms = mailstore_open(mail_dir, "test.host", err, sizeof err))) {
        fprintf(stderr, "setup: %s\n", err);
        rm_rf(root);
        return 1;
    }
    RUN(uids_follow_arrival_order);
    RUN(changes_behind_its_back);
    RUN(set_flags_and_expunge);
    RUN(stable_across_reopen_and_rebuilt);
    RUN(garbage_index_rebuilt_with_warning);
    RUN(foreign_lf_files_are_crlf);
    RUN(shared_handle_refcount);
    RUN(folders_like_inbox);
    RUN(concurrent_delivery_and_sync);
    mailstore_close(ms);
    log_close();
    rm_rf(root);
    return test_summary();
}
