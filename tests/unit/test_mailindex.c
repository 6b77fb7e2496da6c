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

#include <sqlite3.h>

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

    CHECK_INT(mailindex_set_flags(ix, NULL, 2, "SFS", NULL, err, sizeof err), 0);
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
    CHECK_INT(mailindex_set_flags(ix, NULL, 2, "FS", NULL, err, sizeof err), 0);
    errno = 0;
    CHECK_INT(mailindex_set_flags(ix, NULL, 2, "S\\", NULL, err, sizeof err), -1);
    CHECK_INT(errno, EINVAL);
    errno = 0;
    CHECK_INT(mailindex_set_flags(ix, NULL, 42, "S", NULL, err, sizeof err), -1);
    CHECK_INT(errno, ENOENT);
    CHECK_INT(mailindex_set_flags(ix, NULL, 2, "", NULL, err, sizeof err), 0);
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

    /* Index deleted: rebuilt from the dovecot-uidlist, same UIDs. */
    mailindex_close(ix);
    CHECK_INT(unlink(idx), 0);
    ix = NULL;
    reopen(&ix, addr, &v);   /* close(NULL) is a no-op */
    CHECK_INT(v.uidvalidity, uv);
    CHECK_INT(v.n, 2);
    if (v.n == 2) {
        CHECK_INT(v.msgs[0].uid, 2);
        CHECK_INT(v.msgs[1].uid, 3);
    }
    CHECK_INT(v.uidnext, 4);
    CHECK_INT(v.recent_mark, 4);    /* old mail is not recent again */
    mailindex_view_free(&v);

    /* A new message after the rebuild continues the numbering. */
    CHECK_INT(deliver(addr, NULL, "s4"), 0);
    CHECK_INT(sync_view(ix, NULL, &v), 0);
    CHECK_INT(v.n, 3);
    if (v.n == 3)
        CHECK_INT(v.msgs[2].uid, 4);
    mailindex_view_free(&v);

    /* Index and uidlist deleted: renumbered under a new UIDVALIDITY. */
    char uidlist[600];
    box_path("stable", NULL, uidlist, sizeof uidlist);
    strncat(uidlist, "/dovecot-uidlist", sizeof uidlist - strlen(uidlist) - 1);
    mailindex_close(ix);
    CHECK_INT(unlink(idx), 0);
    CHECK_INT(unlink(uidlist), 0);
    ix = NULL;
    reopen(&ix, addr, &v);
    CHECK(v.uidvalidity != uv);
    CHECK_INT(v.n, 3);
    if (v.n == 3) {
        CHECK_INT(v.msgs[0].uid, 1);
        CHECK_INT(v.msgs[2].uid, 3);
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
    CHECK_INT(v.uidvalidity, uv);   /* from the dovecot-uidlist */
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
    CHECK_INT(mailindex_set_flags(ix, "Junk", 1, "S", NULL, err, sizeof err), 0);
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

/* --- IMAP calls ------------------------------------------------------------------------ */

static const char msg_a[] = "Subject: a\r\n\r\nappended one\r\n";
static const char msg_b[] = "Subject: b\r\n\r\nappended two, longer\r\n";

static int append(struct mailindex *ix, const char *folder, const char *text, const char *flags,
                  const char *keywords, time_t when, uint32_t *uv, uint32_t *uid)
{
    char err[256] = "";
    int rc = mailindex_append(ix, folder, text, strlen(text), flags, keywords, when, uv, uid,
                              err, sizeof err);
    if (rc < 0 && errno != ENOENT && errno != EINVAL)
        fprintf(stderr, "append: %s\n", err);
    return rc;
}

/* The file of a UID, through a sync. */
static bool uid_file(struct mailindex *ix, const char *local, const char *folder, uint32_t uid,
                     char *out, size_t len)
{
    struct mailindex_view v;
    bool found = false;
    if (sync_view(ix, folder, &v) < 0)
        return false;
    for (size_t i = 0; i < v.n && !found; i++)
        if (v.msgs[i].uid == uid)
            found = find_file(local, folder, v.msgs[i].name, out, len);
    mailindex_view_free(&v);
    return found;
}

static const struct mailindex_msg *by_uid(const struct mailindex_view *v, uint32_t uid)
{
    for (size_t i = 0; i < v->n; i++)
        if (v->msgs[i].uid == uid)
            return &v->msgs[i];
    return NULL;
}

TEST(append_messages)
{
    const char *addr = "append@example.org";
    struct mailindex *ix = open_ix(addr);
    struct mailindex_view v;
    uint32_t uv = 0, uid = 0, uv2 = 0, uid2 = 0;
    char path[1200];
    struct stat st;

    /* INBOX does not exist yet: created. */
    CHECK_INT(append(ix, NULL, msg_a, "", NULL, 1000000000, &uv, &uid), 0);
    CHECK_INT(uid, 1);
    CHECK(uv != 0);
    CHECK_INT(deliver(addr, NULL, "delivered"), 0);     /* gets 2 at the sync */
    CHECK_INT(sync_view(ix, NULL, &v), 0);
    mailindex_view_free(&v);
    CHECK_INT(append(ix, "INBOX", msg_b, "SF", "$Forwarded Work", 1100000000, &uv2, &uid2), 0);
    CHECK_INT(uid2, 3);
    CHECK_INT(uv2, uv);

    CHECK_INT(sync_view(ix, NULL, &v), 0);
    CHECK_INT(v.n, 3);
    CHECK_INT(v.uidnext, 4);
    const struct mailindex_msg *a = by_uid(&v, 1), *b = by_uid(&v, 3);
    CHECK(a && b);
    if (a && b) {
        CHECK_INT(a->size, strlen(msg_a));
        CHECK_INT(a->internaldate, 1000000000);
        CHECK_STR(a->flags, "");
        CHECK_STR(a->keywords, "");
        CHECK_INT(b->size, strlen(msg_b));
        CHECK_INT(b->internaldate, 1100000000);
        CHECK_STR(b->flags, "FS");
        CHECK_STR(b->keywords, "$Forwarded Work");
        CHECK(b->modseq > a->modseq);
        /* No flags: new/; flags: cur/ with them in the name; mtime = internal date. */
        CHECK(find_file("append", NULL, a->name, path, sizeof path));
        CHECK(contains(path, "/new/"));
        CHECK(stat(path, &st) == 0 && st.st_mtime == 1000000000);
        CHECK(find_file("append", NULL, b->name, path, sizeof path));
        CHECK(contains(path, "/cur/") && contains(path, ":2,FS"));
        CHECK(stat(path, &st) == 0 && st.st_mtime == 1100000000);
    }
    CHECK_STR(read_uid(ix, NULL, 3), msg_b);
    mailindex_view_free(&v);

    /* Keywords alone put the file in cur/ too. */
    CHECK_INT(append(ix, NULL, msg_a, NULL, "Todo", 0, &uv, &uid), 0);
    CHECK_INT(uid, 4);
    CHECK(uid_file(ix, "append", NULL, 4, path, sizeof path) && contains(path, "/cur/"));

    /* A missing folder, bad flags and keywords are refused, leaving nothing. */
    errno = 0;
    CHECK_INT(append(ix, "Nope", msg_a, "", NULL, 0, &uv, &uid), -1);
    CHECK_INT(errno, ENOENT);
    errno = 0;
    CHECK_INT(append(ix, NULL, msg_a, "S1", NULL, 0, &uv, &uid), -1);
    CHECK_INT(errno, EINVAL);
    errno = 0;
    CHECK_INT(append(ix, NULL, msg_a, "", "bad(keyword", 0, &uv, &uid), -1);
    CHECK_INT(errno, EINVAL);
    CHECK_INT(sync_view(ix, NULL, &v), 0);
    CHECK_INT(v.n, 4);
    CHECK_INT(v.uidnext, 5);
    mailindex_view_free(&v);

    /* Into an existing folder. */
    char err[256];
    CHECK_INT(mailindex_folder_create(ix, "Drafts", err, sizeof err), 0);
    CHECK_INT(append(ix, "Drafts", msg_b, "D", NULL, 0, &uv2, &uid2), 0);
    CHECK_INT(uid2, 1);
    CHECK(uv2 != uv);
    CHECK_STR(read_uid(ix, "Drafts", 1), msg_b);
    mailindex_close(ix);
}

TEST(copy_and_move)
{
    const char *addr = "copy@example.org";
    struct mailindex *ix = open_ix(addr);
    struct mailindex_view v;
    uint32_t uv, uid, duv = 0, dst[4];
    char err[256], path[1200];
    struct stat st;
    CHECK_INT(append(ix, NULL, msg_a, "S", "Alpha", 1200000000, &uv, &uid), 0);
    CHECK_INT(append(ix, NULL, msg_b, "", NULL, 1200000100, &uv, &uid), 0);
    CHECK_INT(append(ix, NULL, msg_a, "F", NULL, 1200000200, &uv, &uid), 0);
    CHECK_INT(mailindex_folder_create(ix, "Archive", err, sizeof err), 0);
    CHECK_INT(append(ix, "Archive", msg_b, "", NULL, 0, &uv, &uid), 0);     /* takes UID 1 */

    /* Copy 1, 3 and a UID that does not exist. */
    uint32_t uids[] = { 1, 3, 77 };
    CHECK_INT(mailindex_copy(ix, NULL, uids, 3, "Archive", &duv, dst, err, sizeof err), 2);
    CHECK_INT(duv, uv);
    CHECK_INT(dst[0], 2);
    CHECK_INT(dst[1], 3);
    CHECK_INT(dst[2], 0);
    CHECK_INT(sync_view(ix, "Archive", &v), 0);
    CHECK_INT(v.n, 3);
    CHECK_INT(v.uidnext, 4);
    const struct mailindex_msg *c1 = by_uid(&v, 2), *c3 = by_uid(&v, 3);
    CHECK(c1 && c3);
    if (c1 && c3) {
        CHECK_STR(c1->flags, "S");
        CHECK_STR(c1->keywords, "Alpha");
        CHECK_INT(c1->internaldate, 1200000000);
        CHECK_INT(c1->size, strlen(msg_a));
        CHECK_STR(c3->flags, "F");
        CHECK_INT(c3->internaldate, 1200000200);
        /* A hard link: the same file, a second name. */
        CHECK(find_file("copy", "Archive", c1->name, path, sizeof path));
        CHECK(contains(path, ":2,S"));
        CHECK(stat(path, &st) == 0 && st.st_nlink == 2 && st.st_mtime == 1200000000);
    }
    mailindex_view_free(&v);
    CHECK_STR(read_uid(ix, "Archive", 3), msg_a);
    CHECK_INT(sync_view(ix, NULL, &v), 0);
    CHECK_INT(v.n, 3);       /* the originals stay */
    mailindex_view_free(&v);

    /* Into a missing folder: ENOENT, nothing done. */
    errno = 0;
    CHECK_INT(mailindex_copy(ix, NULL, uids, 2, "Gone", &duv, dst, err, sizeof err), -1);
    CHECK_INT(errno, ENOENT);

    /* Move everything out of INBOX. */
    uint32_t all[] = { 1, 2, 3 };
    CHECK_INT(mailindex_move(ix, NULL, all, 3, "Archive", &duv, dst, err, sizeof err), 3);
    CHECK_INT(dst[0], 4);
    CHECK_INT(dst[1], 5);
    CHECK_INT(dst[2], 6);
    CHECK_INT(sync_view(ix, NULL, &v), 0);
    CHECK_INT(v.n, 0);
    CHECK_INT(v.uidnext, 4);
    mailindex_view_free(&v);
    CHECK_INT(sync_view(ix, "Archive", &v), 0);
    CHECK_INT(v.n, 6);
    const struct mailindex_msg *m4 = by_uid(&v, 4), *m5 = by_uid(&v, 5);
    CHECK(m4 && m5);
    if (m4 && m5) {
        CHECK_STR(m4->keywords, "Alpha");
        CHECK_STR(m4->flags, "S");
        CHECK_INT(m4->internaldate, 1200000000);
        CHECK_STR(m5->flags, "");
        CHECK_INT(m5->internaldate, 1200000100);
        CHECK(find_file("copy", "Archive", m5->name, path, sizeof path));
        CHECK(contains(path, "/new/"));     /* stays in new/ */
    }
    mailindex_view_free(&v);
    CHECK_STR(read_uid(ix, "Archive", 5), msg_b);
    /* Moving a UID that is gone: 0, not an error. */
    CHECK_INT(mailindex_move(ix, NULL, all, 1, "Archive", &duv, dst, err, sizeof err), 0);
    CHECK_INT(dst[0], 0);
    /* Back into INBOX: new UIDs there. */
    uint32_t back[] = { 4 };
    CHECK_INT(mailindex_move(ix, "Archive", back, 1, NULL, &duv, dst, err, sizeof err), 1);
    CHECK_INT(dst[0], 4);
    CHECK_STR(read_uid(ix, NULL, 4), msg_a);
    mailindex_close(ix);
}

TEST(recent_claims)
{
    const char *addr = "recent@example.org";
    struct mailindex *ix = open_ix(addr);
    struct mailindex_view v;
    uint32_t first = 0;
    char err[256];
    CHECK_INT(deliver(addr, NULL, "r1"), 0);
    CHECK_INT(deliver(addr, NULL, "r2"), 0);
    CHECK_INT(sync_view(ix, NULL, &v), 0);
    CHECK_INT(v.recent_mark, 1);    /* first indexed now: all recent */
    mailindex_view_free(&v);
    CHECK_INT(mailindex_claim_recent(ix, NULL, &first, err, sizeof err), 0);
    CHECK_INT(first, 1);
    /* A second session sees nothing recent. */
    CHECK_INT(mailindex_claim_recent(ix, NULL, &first, err, sizeof err), 0);
    CHECK_INT(first, 3);
    CHECK_INT(deliver(addr, NULL, "r3"), 0);
    CHECK_INT(sync_view(ix, NULL, &v), 0);
    CHECK_INT(v.recent_mark, 3);
    mailindex_view_free(&v);
    CHECK_INT(mailindex_claim_recent(ix, NULL, &first, err, sizeof err), 0);
    CHECK_INT(first, 3);
    CHECK_INT(mailindex_claim_recent(ix, NULL, &first, err, sizeof err), 0);
    CHECK_INT(first, 4);
    errno = 0;
    CHECK_INT(mailindex_claim_recent(ix, "Nope", &first, err, sizeof err), -1);
    CHECK_INT(errno, ENOENT);
    mailindex_close(ix);
}

TEST(cache_roundtrip)
{
    const char *addr = "cache@example.org";
    struct mailindex *ix = open_ix(addr);
    struct buf e = BUF_INIT, b = BUF_INIT, body = BUF_INIT;
    uint32_t uv, uid;
    bool found = true;
    char err[256];
    CHECK_INT(append(ix, NULL, msg_a, "", NULL, 0, &uv, &uid), 0);
    CHECK_INT(mailindex_get_cache(ix, NULL, uid, &e, &b, &body, &found, err, sizeof err), 0);
    CHECK(!found);
    static const char env[] = "(NIL \"a\" NIL NIL NIL NIL NIL NIL NIL NIL)";
    static const char bs[] = "(\"text\" \"plain\" NIL NIL NIL \"7bit\" 14 1)";
    CHECK_INT(mailindex_put_cache(ix, NULL, uid, env, sizeof env - 1, bs, sizeof bs - 1, "", 0,
                                  err, sizeof err), 0);
    buf_append(&body, "old", 3);
    CHECK_INT(mailindex_get_cache(ix, NULL, uid, &e, &b, &body, &found, err, sizeof err), 0);
    CHECK(found);
    CHECK(e.len == sizeof env - 1 && memcmp(e.data, env, e.len) == 0);
    CHECK(b.len == sizeof bs - 1 && memcmp(b.data, bs, b.len) == 0);
    CHECK_INT(body.len, 0);
    errno = 0;
    CHECK_INT(mailindex_get_cache(ix, NULL, 99, &e, &b, &body, &found, err, sizeof err), -1);
    CHECK_INT(errno, ENOENT);
    errno = 0;
    CHECK_INT(mailindex_put_cache(ix, NULL, 99, env, 3, bs, 3, bs, 3, err, sizeof err), -1);
    CHECK_INT(errno, ENOENT);
    /* A copy carries the cache. */
    CHECK_INT(mailindex_folder_create(ix, "C", err, sizeof err), 0);
    uint32_t duv, dst;
    CHECK_INT(mailindex_copy(ix, NULL, &uid, 1, "C", &duv, &dst, err, sizeof err), 1);
    found = false;
    CHECK_INT(mailindex_get_cache(ix, "C", dst, &e, &b, &body, &found, err, sizeof err), 0);
    CHECK(found && e.len == sizeof env - 1);
    buf_free(&e);
    buf_free(&b);
    buf_free(&body);
    mailindex_close(ix);
}

static bool has_name(char **names, size_t n, const char *name)
{
    for (size_t i = 0; i < n; i++)
        if (strcmp(names[i], name) == 0)
            return true;
    return false;
}

TEST(folder_create_delete)
{
    const char *addr = "fold@example.org";
    struct mailindex *ix = open_ix(addr);
    struct mailindex_view v;
    char err[256], **names = NULL;
    size_t n = 0;
    uint32_t uv, uid;

    CHECK_INT(mailindex_folders(ix, &names, &n, err, sizeof err), 0);   /* no mailbox yet */
    CHECK_INT(n, 0);
    mailstore_folders_free(names, n);
    CHECK_INT(mailindex_folder_create(ix, "Work", err, sizeof err), 0);
    CHECK_INT(mailindex_folder_create(ix, "Work.Sub", err, sizeof err), 0);
    CHECK_INT(mailindex_folder_create(ix, "Zeta", err, sizeof err), 0);
    errno = 0;
    CHECK_INT(mailindex_folder_create(ix, "Work", err, sizeof err), -1);
    CHECK_INT(errno, EEXIST);
    errno = 0;
    CHECK_INT(mailindex_folder_create(ix, "inbox", err, sizeof err), -1);
    CHECK_INT(errno, EEXIST);
    char longname[300];
    memset(longname, 'x', sizeof longname - 1);
    longname[sizeof longname - 1] = '\0';
    const char *bad[] = { "", ".a", "a.", "a..b", "a/b", "a\001b", "a\177", longname,
                          "posthorn-del.x", NULL };
    for (int i = 0; bad[i]; i++) {
        errno = 0;
        CHECK_INT(mailindex_folder_create(ix, bad[i], err, sizeof err), -1);
        CHECK_INT(errno, EINVAL);
    }
    CHECK_INT(mailindex_folders(ix, &names, &n, err, sizeof err), 0);
    CHECK_INT(n, 3);
    if (n == 3) {
        CHECK_STR(names[0], "Work");
        CHECK_STR(names[1], "Work.Sub");
        CHECK_STR(names[2], "Zeta");
    }
    mailstore_folders_free(names, n);

    CHECK_INT(append(ix, "Work", msg_a, "", NULL, 0, &uv, &uid), 0);
    CHECK_INT(append(ix, "Work.Sub", msg_a, "", NULL, 0, &uv, &uid), 0);
    CHECK_INT(sync_view(ix, "Work", &v), 0);
    uint32_t work_uv = v.uidvalidity;
    mailindex_view_free(&v);

    /* Delete: its messages go, its subfolder stays, it is not listed. */
    CHECK_INT(mailindex_folder_delete(ix, "Work", err, sizeof err), 0);
    CHECK_INT(mailindex_folders(ix, &names, &n, err, sizeof err), 0);
    CHECK_INT(n, 2);
    CHECK(!has_name(names, n, "Work") && has_name(names, n, "Work.Sub"));
    mailstore_folders_free(names, n);
    errno = 0;
    CHECK_INT(sync_view(ix, "Work", &v), -1);
    CHECK_INT(errno, ENOENT);
    CHECK_INT(sync_view(ix, "Work.Sub", &v), 0);
    CHECK_INT(v.n, 1);
    mailindex_view_free(&v);
    errno = 0;
    CHECK_INT(mailindex_folder_delete(ix, "Work", err, sizeof err), -1);
    CHECK_INT(errno, ENOENT);
    errno = 0;
    CHECK_INT(mailindex_folder_delete(ix, "INBOX", err, sizeof err), -1);
    CHECK_INT(errno, EPERM);
    errno = 0;
    CHECK_INT(mailindex_folder_delete(ix, "a/b", err, sizeof err), -1);
    CHECK_INT(errno, EINVAL);
    /* Nothing of it is left in the mailbox directory, and usage holds the rest. */
    char box[512];
    box_path("fold", NULL, box, sizeof box);
    DIR *d = opendir(box);
    struct dirent *e;
    int leftovers = 0;
    while (d && (e = readdir(d)) != NULL)
        leftovers += strstr(e->d_name, "posthorn-del") != NULL || strcmp(e->d_name, ".Work") == 0;
    if (d)
        closedir(d);
    CHECK_INT(leftovers, 0);
    uint64_t used = 0;
    CHECK_INT(mailstore_usage(ms, addr, &used), 0);
    CHECK_INT(used, strlen(msg_a));

    /* Recreated: empty, a new UIDVALIDITY. */
    CHECK_INT(mailindex_folder_create(ix, "Work", err, sizeof err), 0);
    CHECK_INT(sync_view(ix, "Work", &v), 0);
    CHECK_INT(v.n, 0);
    CHECK_INT(v.uidnext, 1);
    CHECK(v.uidvalidity != work_uv);
    mailindex_view_free(&v);
    mailindex_close(ix);
}

TEST(folder_rename)
{
    const char *addr = "ren@example.org";
    struct mailindex *ix = open_ix(addr);
    struct mailindex_view v;
    char err[256], **names = NULL;
    size_t n = 0;
    uint32_t uv, uid;
    CHECK_INT(mailindex_folder_create(ix, "A", err, sizeof err), 0);
    CHECK_INT(mailindex_folder_create(ix, "A.x", err, sizeof err), 0);
    CHECK_INT(mailindex_folder_create(ix, "Other", err, sizeof err), 0);
    CHECK_INT(append(ix, "A", msg_a, "", NULL, 0, &uv, &uid), 0);
    CHECK_INT(append(ix, "A", msg_b, "S", "K", 0, &uv, &uid), 0);
    CHECK_INT(append(ix, "A.x", msg_b, "", NULL, 0, &uv, &uid), 0);
    CHECK_INT(sync_view(ix, "A", &v), 0);
    uint32_t a_uv = v.uidvalidity;
    mailindex_view_free(&v);
    CHECK_INT(sync_view(ix, "A.x", &v), 0);
    uint32_t ax_uv = v.uidvalidity;
    mailindex_view_free(&v);

    CHECK_INT(mailindex_folder_rename(ix, "A", "B", err, sizeof err), 0);
    CHECK_INT(mailindex_folders(ix, &names, &n, err, sizeof err), 0);
    CHECK(has_name(names, n, "B") && has_name(names, n, "B.x") && !has_name(names, n, "A")
          && !has_name(names, n, "A.x"));
    mailstore_folders_free(names, n);
    CHECK_INT(sync_view(ix, "B", &v), 0);
    CHECK_INT(v.uidvalidity, a_uv);
    CHECK_INT(v.n, 2);
    if (v.n == 2) {
        CHECK_INT(v.msgs[1].uid, 2);
        CHECK_STR(v.msgs[1].keywords, "K");
    }
    mailindex_view_free(&v);
    CHECK_INT(sync_view(ix, "B.x", &v), 0);
    CHECK_INT(v.uidvalidity, ax_uv);
    CHECK_INT(v.n, 1);
    mailindex_view_free(&v);
    errno = 0;
    CHECK_INT(sync_view(ix, "A", &v), -1);
    CHECK_INT(errno, ENOENT);

    /* Refusals. */
    errno = 0;
    CHECK_INT(mailindex_folder_rename(ix, "B", "Other", err, sizeof err), -1);
    CHECK_INT(errno, EEXIST);
    errno = 0;
    CHECK_INT(mailindex_folder_rename(ix, "Nope", "Nope2", err, sizeof err), -1);
    CHECK_INT(errno, ENOENT);
    errno = 0;
    CHECK_INT(mailindex_folder_rename(ix, "Nope", "Other", err, sizeof err), -1);
    CHECK_INT(errno, ENOENT);
    errno = 0;
    CHECK_INT(mailindex_folder_rename(ix, "B", "B.y", err, sizeof err), -1);
    CHECK_INT(errno, EINVAL);
    errno = 0;
    CHECK_INT(mailindex_folder_rename(ix, "B", "INBOX", err, sizeof err), -1);
    CHECK_INT(errno, EEXIST);
    /* A target subfolder that exists refuses the whole rename. */
    CHECK_INT(mailindex_folder_create(ix, "C.x", err, sizeof err), 0);
    errno = 0;
    CHECK_INT(mailindex_folder_rename(ix, "B", "C", err, sizeof err), -1);
    CHECK_INT(errno, EEXIST);
    CHECK_INT(sync_view(ix, "B", &v), 0);
    CHECK_INT(v.n, 2);
    mailindex_view_free(&v);

    /* Renaming INBOX moves its messages into the new folder; INBOX stays. */
    CHECK_INT(deliver(addr, NULL, "i1"), 0);
    CHECK_INT(deliver(addr, NULL, "i2"), 0);
    CHECK_INT(mailindex_folder_rename(ix, "INBOX", "Old", err, sizeof err), 0);
    CHECK_INT(sync_view(ix, NULL, &v), 0);
    CHECK_INT(v.n, 0);
    CHECK_INT(v.uidnext, 3);
    mailindex_view_free(&v);
    CHECK_INT(sync_view(ix, "Old", &v), 0);
    CHECK_INT(v.n, 2);
    if (v.n == 2)
        CHECK(contains(read_uid(ix, "Old", v.msgs[1].uid), "Subject: i2\r\n"));
    mailindex_view_free(&v);
    errno = 0;
    CHECK_INT(mailindex_folder_rename(ix, "INBOX", "Old", err, sizeof err), -1);
    CHECK_INT(errno, EEXIST);
    mailindex_close(ix);
}

TEST(subscriptions)
{
    struct mailindex *ix = open_ix("subs@example.org");
    char err[256], **names = NULL;
    size_t n = 0;
    CHECK_INT(mailindex_subscribe(ix, "b", true, err, sizeof err), 0);
    CHECK_INT(mailindex_subscribe(ix, "a", true, err, sizeof err), 0);
    CHECK_INT(mailindex_subscribe(ix, "a", true, err, sizeof err), 0);
    CHECK_INT(mailindex_subscribe(ix, "Not.There", true, err, sizeof err), 0);
    CHECK_INT(mailindex_subscribe(ix, "c", false, err, sizeof err), 0);
    errno = 0;
    CHECK_INT(mailindex_subscribe(ix, "", true, err, sizeof err), -1);
    CHECK_INT(errno, EINVAL);
    CHECK_INT(mailindex_subscriptions(ix, &names, &n, err, sizeof err), 0);
    CHECK_INT(n, 3);
    if (n == 3) {
        CHECK_STR(names[0], "Not.There");
        CHECK_STR(names[1], "a");
        CHECK_STR(names[2], "b");
    }
    mailstore_folders_free(names, n);
    CHECK_INT(mailindex_subscribe(ix, "a", false, err, sizeof err), 0);
    CHECK_INT(mailindex_subscriptions(ix, &names, &n, err, sizeof err), 0);
    CHECK_INT(n, 2);
    CHECK(!has_name(names, n, "a"));
    mailstore_folders_free(names, n);
    mailindex_close(ix);
}

TEST(keywords_kept)
{
    const char *addr = "kw@example.org";
    struct mailindex *ix = open_ix(addr);
    struct mailindex_view v;
    char err[256], path[1200], to[1300];
    CHECK_INT(deliver(addr, NULL, "k"), 0);
    CHECK_INT(sync_view(ix, NULL, &v), 0);
    uint64_t hm = v.highestmodseq;
    mailindex_view_free(&v);

    CHECK_INT(mailindex_set_flags(ix, NULL, 1, "S", "$Junk Work $junk work  Later", err,
                                  sizeof err), 0);
    CHECK_INT(sync_view(ix, NULL, &v), 0);
    if (v.n == 1) {
        CHECK_STR(v.msgs[0].keywords, "$Junk Work Later");
        CHECK_STR(v.msgs[0].flags, "S");
        CHECK(v.msgs[0].modseq > hm);
        hm = v.msgs[0].modseq;
    }
    mailindex_view_free(&v);

    /* Keywords alone bump the modseq; NULL keeps them. */
    CHECK_INT(mailindex_set_flags(ix, NULL, 1, "S", "Work", err, sizeof err), 0);
    CHECK_INT(mailindex_set_flags(ix, NULL, 1, "SF", NULL, err, sizeof err), 0);
    CHECK_INT(sync_view(ix, NULL, &v), 0);
    if (v.n == 1) {
        CHECK_STR(v.msgs[0].keywords, "Work");
        CHECK_STR(v.msgs[0].flags, "FS");
        CHECK(v.msgs[0].modseq >= hm + 2);
        hm = v.msgs[0].modseq;
    }
    mailindex_view_free(&v);
    CHECK_INT(mailindex_set_flags(ix, NULL, 1, "FS", "Work", err, sizeof err), 0);
    CHECK_INT(sync_view(ix, NULL, &v), 0);
    if (v.n == 1)
        CHECK_INT(v.msgs[0].modseq, hm);    /* nothing changed */
    char *name = v.n == 1 ? strdup(v.msgs[0].name) : NULL;
    mailindex_view_free(&v);

    /* Another program changes the flags in the file name: keywords stay. */
    CHECK(name && find_file("kw", NULL, name, path, sizeof path));
    char box[512];
    box_path("kw", NULL, box, sizeof box);
    snprintf(to, sizeof to, "%s/cur/%s:2,RS", box, name ? name : "");
    CHECK_INT(rename(path, to), 0);
    CHECK_INT(sync_view(ix, NULL, &v), 0);
    if (v.n == 1) {
        CHECK_STR(v.msgs[0].flags, "RS");
        CHECK_STR(v.msgs[0].keywords, "Work");
        CHECK(v.msgs[0].modseq > hm);
    }
    mailindex_view_free(&v);
    free(name);

    errno = 0;
    CHECK_INT(mailindex_set_flags(ix, NULL, 1, "S", "a\\b", err, sizeof err), -1);
    CHECK_INT(errno, EINVAL);
    mailindex_close(ix);
}

/* --- dovecot-uidlist ------------------------------------------------------------------- */

static void mkdirs_box(const char *local, const char *folder)
{
    char box[512], sub[600];
    snprintf(box, sizeof box, "%s/example.org", mail_dir);
    mkdir(box, 0700);
    box_path(local, NULL, box, sizeof box);
    mkdir(box, 0700);
    box_path(local, folder, box, sizeof box);
    mkdir(box, 0700);
    static const char *const subs[] = { "cur", "new", "tmp" };
    for (int i = 0; i < 3; i++) {
        snprintf(sub, sizeof sub, "%s/%s", box, subs[i]);
        mkdir(sub, 0700);
    }
}

/* Writes box/<rel> with mtime t. */
static void put_file(const char *local, const char *folder, const char *rel, const char *text,
                     time_t t)
{
    char box[512], path[1200];
    box_path(local, folder, box, sizeof box);
    snprintf(path, sizeof path, "%s/%s", box, rel);
    CHECK_INT(write_file(path, text, strlen(text)), 0);
    struct timespec ts[2] = { { t, 0 }, { t, 0 } };
    utimensat(AT_FDCWD, path, ts, 0);
}

/* mailindex_update_flags: the callback sees the current flags and
 * keywords (what another session set since), and its result is written. */
struct add_flag {
    const char *letter, *keyword;
    char seen_flags[64], seen_kw[128];
    int fail;
};

static int add_flag_fn(void *arg, const char *flags, const char *keywords, char *new_flags,
                       char **new_keywords)
{
    struct add_flag *a = arg;
    snprintf(a->seen_flags, sizeof a->seen_flags, "%s", flags);
    snprintf(a->seen_kw, sizeof a->seen_kw, "%s", keywords);
    if (a->fail)
        return -1;
    snprintf(new_flags, MAILINDEX_FLAGS_MAX + 1, "%s%s", flags, a->letter);
    *new_keywords = NULL;
    if (a->keyword) {
        size_t n = strlen(keywords) + strlen(a->keyword) + 2;
        *new_keywords = malloc(n);
        if (*new_keywords)
            snprintf(*new_keywords, n, "%s%s%s", keywords, *keywords ? " " : "", a->keyword);
    }
    return 0;
}

TEST(update_flags_from_current)
{
    const char *addr = "upd@example.org";
    struct mailindex *ix = open_ix(addr);
    struct mailindex_view v;
    char err[256];
    CHECK_INT(deliver(addr, NULL, "u"), 0);
    CHECK_INT(sync_view(ix, NULL, &v), 0);
    mailindex_view_free(&v);
    /* Someone else sets \Flagged and a keyword... */
    CHECK_INT(mailindex_set_flags(ix, NULL, 1, "F", "Other", err, sizeof err), 0);
    /* ...and a change computed from the current state keeps both. */
    struct add_flag a = { .letter = "S", .keyword = "Mine" };
    CHECK_INT(mailindex_update_flags(ix, NULL, 1, add_flag_fn, &a, err, sizeof err), 0);
    CHECK_STR(a.seen_flags, "F");
    CHECK_STR(a.seen_kw, "Other");
    CHECK_INT(sync_view(ix, NULL, &v), 0);
    if (v.n == 1) {
        CHECK_STR(v.msgs[0].flags, "FS");
        CHECK_STR(v.msgs[0].keywords, "Other Mine");
    }
    mailindex_view_free(&v);
    /* A callback that gives up changes nothing; an unknown UID is ENOENT. */
    struct add_flag b = { .letter = "T", .fail = 1 };
    CHECK_INT(mailindex_update_flags(ix, NULL, 1, add_flag_fn, &b, err, sizeof err), -1);
    CHECK_INT(sync_view(ix, NULL, &v), 0);
    if (v.n == 1)
        CHECK_STR(v.msgs[0].flags, "FS");
    mailindex_view_free(&v);
    errno = 0;
    CHECK_INT(mailindex_update_flags(ix, NULL, 9, add_flag_fn, &a, err, sizeof err), -1);
    CHECK_INT(errno, ENOENT);
    /* Letters that are not flags are refused. */
    struct add_flag c = { .letter = "\\" };
    CHECK_INT(mailindex_update_flags(ix, NULL, 1, add_flag_fn, &c, err, sizeof err), -1);
    mailindex_close(ix);
}

TEST(dovecot_uidlist_import)
{
    const char *addr = "dove@example.org";
    mkdirs_box("dove", NULL);
    mkdirs_box("dove", "Sent");
    /* As Dovecot leaves them: W= sizes, flags in cur/, extension fields. */
    put_file("dove", NULL, "cur/1600000000.M1P1.mx,S=9,W=10:2,S", "Subject:\n", 1600000000);
    put_file("dove", NULL, "cur/1600000100.M2P2.mx,S=9,W=10:2,RS", "Subject:\n", 1600000100);
    put_file("dove", NULL, "new/1600000200.M3P3.mx,S=9,W=10", "Subject:\n", 1600000200);
    put_file("dove", NULL, "new/1600000300.M4P4.mx", "Subject: new\n", 1600000300);
    put_file("dove", NULL, "dovecot-uidlist",
             "3 V1500000000 N9 G3085f01b7f11094c501100008c4a11c1\n"
             "3 :1600000000.M1P1.mx,S=9,W=10\n"
             "4 :1500000000.M9P9.mx,S=1\n"          /* expunged long ago */
             "5 W10 S9 :1600000100.M2P2.mx,S=9,W=10:2,RS\n"
             "11 :1600000200.M3P3.mx,S=9,W=10\n", 1600000400);
    put_file("dove", "Sent", "cur/1600000500.M5P5.mx,S=9,W=10:2,S", "Subject:\n", 1600000500);
    put_file("dove", "Sent", "dovecot-uidlist", "3 V1500000001 N42\n41 :1600000500.M5P5.mx,S=9,W=10\n",
             1600000500);

    struct mailindex *ix = open_ix(addr);
    struct mailindex_view v;
    CHECK_INT(sync_view(ix, NULL, &v), 0);
    CHECK_INT(v.uidvalidity, 1500000000);
    CHECK_INT(v.n, 4);
    if (v.n == 4) {
        CHECK_INT(v.msgs[0].uid, 3);
        CHECK_INT(v.msgs[1].uid, 5);
        CHECK_STR(v.msgs[1].flags, "RS");
        CHECK_INT(v.msgs[2].uid, 11);
        CHECK_INT(v.msgs[3].uid, 12);       /* not listed: after the listed ones */
        CHECK_STR(v.msgs[3].name, "1600000300.M4P4.mx");
        CHECK_INT(v.msgs[3].size, strlen("Subject: new\r\n"));
    }
    CHECK_INT(v.uidnext, 13);
    CHECK_INT(v.recent_mark, 12);   /* only the one Dovecot never saw is recent */
    mailindex_view_free(&v);
    CHECK_INT(sync_view(ix, "Sent", &v), 0);
    CHECK_INT(v.uidvalidity, 1500000001);
    CHECK_INT(v.n, 1);
    if (v.n == 1)
        CHECK_INT(v.msgs[0].uid, 41);
    CHECK_INT(v.uidnext, 42);
    mailindex_view_free(&v);
    mailindex_close(ix);

    /* Our rewrite keeps Dovecot's format; a rebuild reads it back. */
    char box[512], path[700], idx[600];
    box_path("dove", NULL, box, sizeof box);
    snprintf(path, sizeof path, "%s/dovecot-uidlist", box);
    int fd = open(path, O_RDONLY);
    char text[4096] = "";
    ssize_t got = fd >= 0 ? read(fd, text, sizeof text - 1) : -1;
    if (fd >= 0)
        close(fd);
    text[got > 0 ? got : 0] = '\0';
    CHECK(strncmp(text, "3 V1500000000 N13\n3 :1600000000.M1P1.mx,S=9,W=10\n", 49) == 0);
    CHECK(contains(text, "\n12 :1600000300.M4P4.mx\n"));
    index_path("dove", idx, sizeof idx);
    CHECK_INT(unlink(idx), 0);
    ix = open_ix(addr);
    CHECK_INT(sync_view(ix, NULL, &v), 0);
    CHECK_INT(v.uidvalidity, 1500000000);
    CHECK_INT(v.n, 4);
    if (v.n == 4)
        CHECK_INT(v.msgs[3].uid, 12);
    mailindex_view_free(&v);
    mailindex_close(ix);
}

TEST(dovecot_uidlist_damaged)
{
    const char *addr = "dove2@example.org";
    mkdirs_box("dove2", NULL);
    put_file("dove2", NULL, "cur/1600000000.M1P1.mx:2,S", "Subject:\n", 1600000000);
    put_file("dove2", NULL, "cur/1600000100.M2P2.mx:2,S", "Subject:\n", 1600000100);
    /* UIDs not ascending: not trusted. */
    put_file("dove2", NULL, "dovecot-uidlist",
             "3 V1500000000 N9\n7 :1600000000.M1P1.mx\n5 :1600000100.M2P2.mx\n", 1600000400);
    struct mailindex *ix = open_ix(addr);
    struct mailindex_view v;
    CHECK_INT(sync_view(ix, NULL, &v), 0);
    CHECK(v.uidvalidity != 1500000000);
    CHECK_INT(v.n, 2);
    if (v.n == 2) {
        CHECK_INT(v.msgs[0].uid, 1);
        CHECK_INT(v.msgs[1].uid, 2);
    }
    mailindex_view_free(&v);
    mailindex_close(ix);

    /* Version 1 (Courier's courierimapuiddb layout) and a line cut short. */
    const char *addr3 = "dove3@example.org";
    mkdirs_box("dove3", NULL);
    put_file("dove3", NULL, "cur/1600000000.M1P1.mx:2,S", "Subject:\n", 1600000000);
    put_file("dove3", NULL, "new/1600000100.M2P2.mx", "Subject:\n", 1600000100);
    put_file("dove3", NULL, "dovecot-uidlist",
             "1 1400000000 3\n2 1600000000.M1P1.mx\n17 1600000", 1600000400);
    ix = open_ix(addr3);
    CHECK_INT(sync_view(ix, NULL, &v), 0);
    CHECK_INT(v.uidvalidity, 1400000000);
    CHECK_INT(v.n, 2);
    if (v.n == 2) {
        CHECK_INT(v.msgs[0].uid, 2);
        CHECK_INT(v.msgs[1].uid, 18);   /* the cut line's UID stays used */
    }
    mailindex_view_free(&v);
    mailindex_close(ix);
}

TEST(uidlist_follows_changes)
{
    const char *addr = "ul@example.org";
    struct mailindex *ix = open_ix(addr);
    struct mailindex_view v;
    char err[256], idx[600];
    uint32_t uv, uid, duv, dst[2];
    CHECK_INT(mailindex_folder_create(ix, "F", err, sizeof err), 0);
    for (int i = 0; i < 3; i++)
        CHECK_INT(append(ix, NULL, msg_a, "", NULL, 0, &uv, &uid), 0);
    uint32_t two[] = { 1, 3 };
    CHECK_INT(mailindex_copy(ix, NULL, two, 2, "F", &duv, dst, err, sizeof err), 2);
    CHECK_INT(mailindex_move(ix, NULL, two, 1, "F", &duv, dst, err, sizeof err), 1);
    CHECK_INT(dst[0], 3);
    CHECK_INT(append(ix, "F", msg_b, "", NULL, 0, &duv, &uid), 0);
    CHECK_INT(uid, 4);
    /* Many expunges, then a sync: the file is rewritten, still right. */
    for (int i = 0; i < 80; i++)
        CHECK_INT(append(ix, NULL, msg_a, "", NULL, 0, &uv, &uid), 0);
    CHECK_INT(sync_view(ix, NULL, &v), 0);
    uint32_t *all = malloc(v.n * sizeof *all);
    size_t nall = 0;
    for (size_t i = 0; all && i < v.n; i++)
        if (v.msgs[i].uid != 2)
            all[nall++] = v.msgs[i].uid;
    mailindex_view_free(&v);
    CHECK_INT(mailindex_expunge(ix, NULL, all, nall, err, sizeof err), (long)nall);
    free(all);
    CHECK_INT(deliver(addr, NULL, "late"), 0);
    CHECK_INT(sync_view(ix, NULL, &v), 0);
    CHECK_INT(v.n, 2);
    uint32_t inbox_next = v.uidnext;
    mailindex_view_free(&v);
    char box[512], path[700];
    struct stat st;
    box_path("ul", NULL, box, sizeof box);
    snprintf(path, sizeof path, "%s/dovecot-uidlist", box);
    CHECK(stat(path, &st) == 0 && st.st_size < 400);    /* rewritten: no 80 stale lines */
    mailindex_close(ix);

    index_path("ul", idx, sizeof idx);
    CHECK_INT(unlink(idx), 0);
    ix = open_ix(addr);
    CHECK_INT(sync_view(ix, NULL, &v), 0);
    CHECK_INT(v.uidvalidity, uv);
    CHECK_INT(v.n, 2);
    if (v.n == 2) {
        CHECK_INT(v.msgs[0].uid, 2);
        CHECK_INT(v.msgs[1].uid, inbox_next - 1);
    }
    mailindex_view_free(&v);
    CHECK_INT(sync_view(ix, "F", &v), 0);
    CHECK_INT(v.uidvalidity, duv);
    CHECK_INT(v.n, 4);
    for (size_t i = 0; i < v.n && v.n == 4; i++)
        CHECK_INT(v.msgs[i].uid, i + 1);
    CHECK_INT(v.uidnext, 5);
    mailindex_view_free(&v);
    mailindex_close(ix);
}

/* An index written by the previous schema (version 1) is migrated: old mail
 * is not recent, keywords are empty. */
TEST(schema_1_upgraded)
{
    const char *addr = "old@example.org";
    struct mailindex_view v;
    char idx[600];
    CHECK_INT(deliver(addr, NULL, "o1"), 0);
    struct mailindex *ix = open_ix(addr);
    CHECK_INT(sync_view(ix, NULL, &v), 0);
    char *name = v.n == 1 ? strdup(v.msgs[0].name) : NULL;
    mailindex_view_free(&v);
    mailindex_close(ix);
    index_path("old", idx, sizeof idx);
    CHECK_INT(unlink(idx), 0);
    sqlite3 *db = NULL;
    char sql[1024];
    CHECK_INT(sqlite3_open(idx, &db), SQLITE_OK);
    snprintf(sql, sizeof sql,
             "CREATE TABLE folders(id INTEGER PRIMARY KEY, name TEXT NOT NULL UNIQUE,"
             " uidvalidity INTEGER NOT NULL, uidnext INTEGER NOT NULL,"
             " highestmodseq INTEGER NOT NULL);"
             "CREATE TABLE messages(folder_id INTEGER NOT NULL REFERENCES folders(id),"
             " uid INTEGER NOT NULL, name TEXT NOT NULL, flags TEXT NOT NULL,"
             " size INTEGER NOT NULL, internaldate INTEGER NOT NULL, modseq INTEGER NOT NULL,"
             " envelope BLOB, bodystructure BLOB,"
             " PRIMARY KEY(folder_id, uid), UNIQUE(folder_id, name)) WITHOUT ROWID;"
             "INSERT INTO folders VALUES (1, '', 777, 8, 20);"
             "INSERT INTO messages VALUES (1, 7, '%s', '', 40, 1, 20, NULL, NULL);"
             "PRAGMA user_version = 1;", name ? name : "x");
    CHECK_INT(sqlite3_exec(db, sql, NULL, NULL, NULL), SQLITE_OK);
    sqlite3_close(db);
    free(name);
    ix = open_ix(addr);
    CHECK_INT(sync_view(ix, NULL, &v), 0);
    CHECK_INT(v.uidvalidity, 777);
    CHECK_INT(v.n, 1);
    if (v.n == 1) {
        CHECK_INT(v.msgs[0].uid, 7);
        CHECK_STR(v.msgs[0].keywords, "");
    }
    CHECK_INT(v.recent_mark, 8);
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
        if (v.n > 0 && mailindex_set_flags(ix, NULL, v.msgs[v.n / 2].uid, "S", NULL, err, sizeof err) < 0)
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
    RUN(append_messages);
    RUN(copy_and_move);
    RUN(recent_claims);
    RUN(cache_roundtrip);
    RUN(folder_create_delete);
    RUN(folder_rename);
    RUN(subscriptions);
    RUN(keywords_kept);
    RUN(update_flags_from_current);
    RUN(dovecot_uidlist_import);
    RUN(dovecot_uidlist_damaged);
    RUN(uidlist_follows_changes);
    RUN(schema_1_upgraded);
    RUN(concurrent_delivery_and_sync);
    mailstore_close(ms);
    log_close();
    rm_rf(root);
    return test_summary();
}
